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
// The scalar conversions (mixz/tensor/half_bits.h, shared with the CUDA kernels) are integer bit
// manipulation only: they do not depend on the floating-point rounding mode, nor on the FTZ/DAZ
// flags.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>

#include "mixz/tensor/half_bits.h"
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

// floatBits / bitsToFloat (bit casts) and the scalar conversions fp16ToFloat, floatToFp16,
// bf16ToFloat, floatToBf16 are defined in mixz/tensor/half_bits.h (included above) as MIXZ_HD
// functions, so that the CUDA kernels run the same code as the CPU's scalar paths.

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

// `elements` values between the float types (fp32, fp16, bf16) on this thread: a copy (memmove,
// so the same buffer is fine) when the types are equal, else convert(). The one shorthand the
// engine's storage (mixz::zero) and the CPU backend's arithmetic both use.
void convertElements(const void* input, DType inputType, void* output, DType outputType, std::size_t elements);

} // namespace mixz::tensor
