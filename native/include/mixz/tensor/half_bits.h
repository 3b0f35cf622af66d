// The fp32 ↔ fp16 / bf16 conversions of mixz/tensor/dtype.h as MIXZ_HD functions: the CPU engine's
// scalar conversions (tensor::convert's scalar path, the quantizer's loads and stores) and the CUDA
// kernels (src/cuda/quant) run this one code, so native/test/host_device_test.cc checking it on the
// CPU against the engine's public functions (whose AVX2 path uses F16C) checks the device's
// conversions too. dtype.h documents the rounding (nearest even) and the NaN rules.
//
// Everything here is integer bit manipulation: nothing depends on the rounding mode, FTZ/DAZ or
// nvcc's -fmad / -ftz flags, so host and device agree bit for bit by construction. The device
// deliberately does not use its hardware conversions (cvt.rn.f16.f32 and friends) for the same
// reason: they turn NaNs into a canonical NaN where the CPU keeps the payload, and any other
// difference could only be found on a GPU. The integer forms cost a few ALU operations per value,
// which the memory-bound kernels that use them can spare.
#pragma once

#include <cstdint>
#include <cstring>

#include "mixz/common/host_device.h"

namespace mixz::tensor {

// The bit cast of a float and back: memcpy on the host (a register move once optimized), the
// intrinsics on the device (a memcpy of a local can go through local memory there).
MIXZ_HD std::uint32_t floatBits(float value) noexcept {
#if defined(__CUDA_ARCH__)
    return __float_as_uint(value);
#else
    std::uint32_t bits;
    std::memcpy(&bits, &value, sizeof bits);
    return bits;
#endif
}

MIXZ_HD float bitsToFloat(std::uint32_t bits) noexcept {
#if defined(__CUDA_ARCH__)
    return __uint_as_float(bits);
#else
    float value;
    std::memcpy(&value, &bits, sizeof value);
    return value;
#endif
}

// binary16 → binary32, exact.
MIXZ_HD float fp16ToFloat(std::uint16_t half) noexcept {
    const std::uint32_t sign = static_cast<std::uint32_t>(half & 0x8000u) << 16;
    const std::uint32_t exponent = (half >> 10) & 0x1Fu;
    const std::uint32_t mantissa = half & 0x3FFu;
    if (exponent == 0x1Fu) {
        // Infinity, or NaN made quiet (bit 22) with its payload in the leading mantissa bits.
        return bitsToFloat(sign | 0x7F800000u | (mantissa << 13) | (mantissa != 0 ? 0x00400000u : 0u));
    }
    if (exponent != 0) return bitsToFloat(sign | ((exponent + 112u) << 23) | (mantissa << 13));
    if (mantissa == 0) return bitsToFloat(sign);
    // Subnormal: mantissa · 2^-24. Normalize so the leading one becomes the implicit bit (bit 10):
    // shift = 10 − (position of the leading one).
#if defined(__CUDA_ARCH__)
    // One count-leading-zeros instead of a data-dependent loop (divergent within a warp).
    const std::uint32_t shift = static_cast<std::uint32_t>(__clz(static_cast<int>(mantissa))) - 21u;
    const std::uint32_t m = mantissa << shift;
#else
    std::uint32_t shift = 0;
    std::uint32_t m = mantissa;
    while ((m & 0x400u) == 0) {
        m <<= 1;
        ++shift;
    }
#endif
    // mantissa · 2^-24 = (m / 2^10) · 2^(-14 - shift), so the biased exponent is 127 - 14 - shift.
    return bitsToFloat(sign | ((113u - shift) << 23) | ((m & 0x3FFu) << 13));
}

// binary32 → binary16, round to nearest even.
MIXZ_HD std::uint16_t floatToFp16(float value) noexcept {
    const std::uint32_t bits = floatBits(value);
    const std::uint32_t sign = (bits >> 16) & 0x8000u;
    const std::uint32_t magnitude = bits & 0x7FFFFFFFu;
    if (magnitude > 0x7F800000u) {
        // NaN: quiet, keeping the payload's leading 9 bits.
        return static_cast<std::uint16_t>(sign | 0x7E00u | ((magnitude >> 13) & 0x3FFu));
    }
    if (magnitude >= 0x477FF000u) return static_cast<std::uint16_t>(sign | 0x7C00u); // ≥ 65520: ±inf
    if (magnitude >= 0x38800000u) {
        // Normal result (≥ 2^-14): rebias the exponent by 127 - 15 = 112 and round at bit 13;
        // a carry out of the mantissa correctly bumps the exponent.
        const std::uint32_t odd = (magnitude >> 13) & 1u;
        const std::uint32_t rounded = magnitude - (112u << 23) + 0xFFFu + odd;
        return static_cast<std::uint16_t>(sign | (rounded >> 13));
    }
    if (magnitude <= 0x33000000u) return static_cast<std::uint16_t>(sign); // ≤ 2^-25: ±0 (the tie goes to even 0)
    // Subnormal result: significand (with its implicit bit) · 2^(e - 150) in units of 2^-24.
    const std::uint32_t exponent = magnitude >> 23; // 102..112
    const std::uint32_t significand = (magnitude & 0x7FFFFFu) | 0x800000u;
    const std::uint32_t shift = 126u - exponent; // 14..24
    std::uint32_t result = significand >> shift;
    const std::uint32_t remainder = significand & ((1u << shift) - 1u);
    const std::uint32_t half = 1u << (shift - 1u);
    if (remainder > half || (remainder == half && (result & 1u) != 0)) ++result;
    return static_cast<std::uint16_t>(sign | result);
}

// bfloat16 → binary32, exact (NaN payloads kept as they are).
MIXZ_HD float bf16ToFloat(std::uint16_t value) noexcept {
    return bitsToFloat(static_cast<std::uint32_t>(value) << 16);
}

// binary32 → bfloat16, round to nearest even; NaN stays NaN, made quiet.
MIXZ_HD std::uint16_t floatToBf16(float value) noexcept {
    const std::uint32_t bits = floatBits(value);
    if ((bits & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<std::uint16_t>((bits >> 16) | 0x0040u);
    const std::uint32_t odd = (bits >> 16) & 1u;
    return static_cast<std::uint16_t>((bits + 0x7FFFu + odd) >> 16);
}

} // namespace mixz::tensor
