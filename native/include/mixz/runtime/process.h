// The process this engine runs in: its process group.
//
// A rank daemon owns its process group (DESIGN.md §1): the launcher starts it as the leader of
// a new group, the user's script and everything it spawns stay in that group, and teardown signals
// the group, never processes by name. The watchdog (mixz/runtime/watchdog.h) kills the whole group
// only when this process leads it.
//
// Core code: knows nothing of Node.
#pragma once

namespace mixz::runtime {

// getpgrp(): the id of this process's process group.
int processGroup();

// Whether this process leads its process group (getpgrp() == getpid()), i.e. whether killing the
// group kills this process and only what it (and its descendants that did not move) started.
bool leadsProcessGroup();

} // namespace mixz::runtime
