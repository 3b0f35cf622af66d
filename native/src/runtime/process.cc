#include "mixz/runtime/process.h"

#include <unistd.h>

namespace mixz::runtime {

int processGroup() {
    return static_cast<int>(getpgrp());
}

bool leadsProcessGroup() {
    return getpgrp() == getpid();
}

} // namespace mixz::runtime
