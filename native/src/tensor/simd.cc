#include "mixz/tensor/simd.h"

#include <cstdlib>
#include <string>

#include "mixz/common/error.h"

namespace mixz::tensor {

const char* simdName(Simd simd) noexcept {
    switch (simd) {
        case Simd::kAuto:
            return "auto";
        case Simd::kScalar:
            return "scalar";
        case Simd::kAvx2:
            return "avx2";
    }
    return "unknown";
}

std::optional<Simd> parseSimd(std::string_view name) noexcept {
    if (name == "auto") return Simd::kAuto;
    if (name == "scalar") return Simd::kScalar;
    if (name == "avx2") return Simd::kAvx2;
    return std::nullopt;
}

bool cpuHasAvx2Kernels() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    static const bool supported = [] {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") != 0 && __builtin_cpu_supports("fma") != 0 &&
               __builtin_cpu_supports("f16c") != 0;
    }();
    return supported;
#else
    return false;
#endif
}

Simd resolveSimd(Simd requested) {
    Simd simd = requested;
    const char* source = "the simd option";
    if (simd == Simd::kAuto) {
        const char* env = std::getenv("MIXZ_SIMD");
        if (env != nullptr && *env != '\0') {
            const std::optional<Simd> fromEnv = parseSimd(env);
            if (!fromEnv) {
                MIXZ_THROW(InvalidArgument, "MIXZ_SIMD must be auto, scalar or avx2, got \"", std::string(env), "\"");
            }
            simd = *fromEnv;
            source = "MIXZ_SIMD";
        }
    }
    if (simd == Simd::kAuto) return cpuHasAvx2Kernels() ? Simd::kAvx2 : Simd::kScalar;
    if (simd == Simd::kAvx2 && !cpuHasAvx2Kernels()) {
        MIXZ_THROW(InvalidArgument, source, " asks for the AVX2 kernels, but this CPU lacks AVX2, FMA or F16C");
    }
    return simd;
}

} // namespace mixz::tensor
