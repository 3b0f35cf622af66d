// Which instruction set the tensor and quantization kernels use, chosen at run time.
//
// The binary is built for baseline x86-64 (no -march). Kernels that use AVX2, FMA and F16C are
// compiled with __attribute__((target(...))) on those functions only and are called only when
// the CPU has all three (__builtin_cpu_supports). Every kernel has a scalar twin that gives
// bit-identical results: the operations are the same IEEE-754 single-precision multiplications
// and conversions, and both round to nearest even: float → int rounding is VCVTPS2DQ in the AVX2
// kernels and its scalar form CVTSS2SI (std::nearbyint off x86), both under the default MXCSR
// rounding mode, nearest even, which neither Node nor mixz changes; float → fp16/bf16 rounding is
// explicit (an immediate, or integer arithmetic) and independent of the mode.
#pragma once

#include <optional>
#include <string_view>

namespace mixz::tensor {

enum class Simd {
    // AVX2 when the CPU has it, unless the environment variable MIXZ_SIMD says "scalar".
    kAuto,
    // The portable scalar kernels.
    kScalar,
    // The AVX2 + FMA + F16C kernels; requesting them on a CPU without them is InvalidArgument.
    kAvx2,
};

// "auto", "scalar", "avx2".
const char* simdName(Simd simd) noexcept;

// The inverse of simdName; nullopt for anything else.
std::optional<Simd> parseSimd(std::string_view name) noexcept;

// Whether this CPU can run the AVX2 kernels (AVX2, FMA and F16C all present).
bool cpuHasAvx2Kernels() noexcept;

// Resolves kAuto to kAvx2 or kScalar: MIXZ_SIMD=scalar (read now) forces the scalar kernels,
// MIXZ_SIMD=avx2 requests AVX2, empty or unset or "auto" picks AVX2 when the CPU has it.
// Throws InvalidArgument for kAvx2 (requested or from MIXZ_SIMD) on a CPU without AVX2, and for
// an unknown MIXZ_SIMD value. Reads the environment, so call it where no other thread modifies it
// (in the addon: on the JS thread, before work is queued).
Simd resolveSimd(Simd requested);

} // namespace mixz::tensor
