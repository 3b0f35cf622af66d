// Element types of the engine and exact conversions between the floating-point ones.
//
// fp16 is IEEE-754 binary16, bf16 is the upper half of an IEEE-754 binary32; both are stored as
// their 16-bit patterns (uint16_t). Conversions to float32 are exact. Conversions from float32
// round to nearest, ties to even, and handle every class of value:
//
//   - fp16: results below the smallest normal (2^-14) become subnormals, correctly rounded; values
//     of magnitude 65520 and above (and infinities) become ±infinity; 2^-25 and below become ±0.
//   - bf16: same exponent range as float32, so only the mantissa is rounded; values that round
//     past the largest finite bf16 become ±infinity.
//   - NaN stays NaN with its sign, and comes out quiet, with the payload's leading bits kept
//     (exactly what x86 F16C's VCVTPH2PS / VCVTPS2PH do, so the scalar and AVX2 paths agree bit
//     for bit, NaN payloads included).
//
// The scalar functions below are integer bit manipulation only: they do not depend on the
// floating-point rounding mode, nor on the FTZ/DAZ flags.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>

#include "mixz/tensor/simd.h"

namespace mixz::tensor {

enum class DType : std::uint8_t {
    kFloat32,
    kFloat16,
    kBFloat16,
    kInt8,
    // Signed 4-bit integers in [-8, 7], two per byte: element 2i in the high nibble (bits 4-7),
    // element 2i+1 in the low nibble (bits 0-3). An odd count leaves the last low nibble 0.
    kInt4,
};

// "fp32", "fp16", "bf16", "int8", "int4".
const char* dtypeName(DType dtype) noexcept;

// The inverse of dtypeName; nullopt for anything else.
std::optional<DType> parseDType(std::string_view name) noexcept;

// Bits per element: 32, 16, 16, 8, 4.
int bitsPerElement(DType dtype) noexcept;

// fp32, fp16, bf16.
bool isFloatingPoint(DType dtype) noexcept;

// Bytes that `elements` values occupy: elements * size, and ceil(elements / 2) for int4.
std::size_t storageBytes(DType dtype, std::size_t elements) noexcept;

inline std::uint32_t floatBits(float value) noexcept {
    std::uint32_t bits;
    std::memcpy(&bits, &value, sizeof bits);
    return bits;
}

inline float bitsToFloat(std::uint32_t bits) noexcept {
    float value;
    std::memcpy(&value, &bits, sizeof value);
    return value;
}

// binary16 → binary32, exact.
inline float fp16ToFloat(std::uint16_t half) noexcept {
    const std::uint32_t sign = static_cast<std::uint32_t>(half & 0x8000u) << 16;
    const std::uint32_t exponent = (half >> 10) & 0x1Fu;
    const std::uint32_t mantissa = half & 0x3FFu;
    if (exponent == 0x1Fu) {
        // Infinity, or NaN made quiet (bit 22) with its payload in the leading mantissa bits.
        return bitsToFloat(sign | 0x7F800000u | (mantissa << 13) | (mantissa != 0 ? 0x00400000u : 0u));
    }
    if (exponent != 0) return bitsToFloat(sign | ((exponent + 112u) << 23) | (mantissa << 13));
    if (mantissa == 0) return bitsToFloat(sign);
    // Subnormal: mantissa · 2^-24. Normalize so the leading one becomes the implicit bit.
    std::uint32_t shift = 0;
    std::uint32_t m = mantissa;
    while ((m & 0x400u) == 0) {
        m <<= 1;
        ++shift;
    }
    // mantissa · 2^-24 = (m / 2^10) · 2^(-14 - shift), so the biased exponent is 127 - 14 - shift.
    return bitsToFloat(sign | ((113u - shift) << 23) | ((m & 0x3FFu) << 13));
}

// binary32 → binary16, round to nearest even.
inline std::uint16_t floatToFp16(float value) noexcept {
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
inline float bf16ToFloat(std::uint16_t value) noexcept {
    return bitsToFloat(static_cast<std::uint32_t>(value) << 16);
}

// binary32 → bfloat16, round to nearest even; NaN stays NaN, made quiet.
inline std::uint16_t floatToBf16(float value) noexcept {
    const std::uint32_t bits = floatBits(value);
    if ((bits & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<std::uint16_t>((bits >> 16) | 0x0040u);
    const std::uint32_t odd = (bits >> 16) & 1u;
    return static_cast<std::uint16_t>((bits + 0x7FFFu + odd) >> 16);
}

// Converts `elements` values between floating-point types (any of fp32, fp16, bf16 to any).
struct ConvertOptions {
    const void* input = nullptr;
    DType inputType = DType::kFloat32;
    void* output = nullptr;
    DType outputType = DType::kFloat32;
    std::size_t elements = 0;
    Simd simd = Simd::kAuto;
    // Threads for large buffers (the shared pool, mixz/common/thread_pool.h); 0 and 1: this thread only.
    std::size_t threads = 0;
};

// Throws InvalidArgument for non-floating-point types, null buffers with elements > 0, and input
// and output ranges that overlap (unless they are the same buffer of the same type, a no-op).
void convert(const ConvertOptions& options);

} // namespace mixz::tensor
