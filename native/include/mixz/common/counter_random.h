// Counter-based random numbers: a value is a pure function of (seed, counters), so element j of a
// parameter gets the same value whatever the world size and whichever rank draws it, and a run
// repeats exactly. Used by parameter initialization, LoRA init and dropout seeds, and sampling.
#pragma once

#include <cmath>
#include <cstdint>

#include "mixz/common/host_device.h"

namespace mixz {

// splitmix64's finalizer alone: a bijection of 64-bit words whose outputs look independent.
// MIXZ_HD (pure integer arithmetic): the LoRA dropout masks are drawn with it on both backends.
MIXZ_HD std::uint64_t splitmix64Finalize(std::uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// splitmix64's step and finalizer.
MIXZ_HD std::uint64_t mix(std::uint64_t x) {
    return splitmix64Finalize(x + 0x9E3779B97F4A7C15ull);
}

// normal(0, std) for element `index` of parameter `param`.
inline float normalAt(std::uint64_t seed, std::uint64_t param, std::uint64_t index, double std) {
    const std::uint64_t a = mix(seed ^ mix(param * 0x100000001B3ull + 1) ^ mix(index * 2 + 0));
    const std::uint64_t b = mix(a ^ mix(index * 2 + 1));
    // Box–Muller on two uniforms in (0, 1].
    const double u1 = (static_cast<double>(a >> 11) + 1.0) / 9007199254740992.0;
    const double u2 = static_cast<double>(b >> 11) / 9007199254740992.0;
    return static_cast<float>(std * std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2));
}

} // namespace mixz
