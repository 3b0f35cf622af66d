// The version of the native engine. Kept equal to the root package.json's version; the engine's
// tests check that the two agree, so a stale binary is noticed.
#pragma once

namespace mixz {

inline constexpr const char* kVersion = "0.1.0";

} // namespace mixz
