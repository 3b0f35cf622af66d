// The block kernels behind mixz/quant/block_quant.h: a scalar set (kernels_scalar.cc) and an
// AVX2 set (kernels_avx2.cc) with identical results. Validation, threading and dispatch live in
// block_quant.cc; the kernels trust their arguments.
//
// The per-block arithmetic that both sets share is defined once, here, so the two cannot drift:
// the scale from the absmax, s = 1 / scale, and the rounding of one value.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "mixz/tensor/dtype.h"

#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#endif

namespace mixz::quant::detail {

// "No block failed": the kernels return the first block holding NaN or ±inf, or this.
inline constexpr std::size_t kNoBadBlock = static_cast<std::size_t>(-1);

struct QuantizeJob {
    const void* input;
    tensor::DType inputType;
    std::size_t elements;
    std::size_t paddedElements;
    int bits;
    std::size_t blockSize;
    std::uint8_t* output;
    float* scales;
};

// One contiguous run of blocks of a dequantization: `elements` values starting at `input` (byte
// aligned) with scales from `scales`, written to `output` (already offset, of type outputType).
struct DequantizeRun {
    const std::uint8_t* input;
    const float* scales;
    void* output;
    tensor::DType outputType;
    int bits;
    std::size_t elements;
    std::size_t blockSize;
    // Non-temporal stores where the output allows (AVX2 only; the values are the same).
    bool streaming;
};

// The magnitude bit pattern of the largest |x| (sign cleared) as a float32 value. Integer order of
// magnitude patterns is the order of the values, so the kernels take integer maxima.
inline float magnitudeToFloat(std::uint32_t magnitude, tensor::DType type) {
    switch (type) {
        case tensor::DType::kFloat16:
            return tensor::fp16ToFloat(static_cast<std::uint16_t>(magnitude));
        case tensor::DType::kBFloat16:
            return tensor::bf16ToFloat(static_cast<std::uint16_t>(magnitude));
        default:
            return tensor::bitsToFloat(magnitude);
    }
}

// The magnitude pattern of +infinity; patterns at or above it are ±inf or NaN.
inline std::uint32_t infinityMagnitude(tensor::DType type) {
    return type == tensor::DType::kFloat32 ? 0x7F800000u : type == tensor::DType::kFloat16 ? 0x7C00u : 0x7F80u;
}

// Q / absmax with Q = 2^bits / 2 (128 for int8, 8 for int4); 1 for an all-zero block and for a
// block so small that Q / absmax overflows float32 (it then quantizes to zeros).
inline float blockScale(float absmax, int bits) {
    if (absmax == 0.0f) return 1.0f;
    const float scale = (bits == 8 ? 128.0f : 8.0f) / absmax;
    return std::isfinite(scale) ? scale : 1.0f;
}

// round_half_even(v) for |v| < 2^31 under the default rounding mode. On x86 this is CVTSS2SI, the
// scalar form of the VCVTPS2DQ the AVX2 kernels use (SSE, so part of baseline x86-64): the same
// instruction semantics, and much faster than a call to nearbyintf. Elsewhere std::nearbyint.
inline int roundToInt(float v) {
#if defined(__x86_64__) || defined(__i386__)
    return _mm_cvtss_si32(_mm_set_ss(v));
#else
    return static_cast<int>(std::nearbyint(v));
#endif
}

// clamp(round_half_even(x * scale), -Q, Q - 1). |x * scale| ≤ Q (1 + 2^-23) for x in the block,
// so the rounded value fits an int.
inline int quantizeValue(float x, float scale, int bits) {
    const int q = roundToInt(x * scale);
    const int low = bits == 8 ? -128 : -8;
    const int high = bits == 8 ? 127 : 7;
    return q < low ? low : (q > high ? high : q);
}

// High nibble for element 2i, low nibble for element 2i+1.
inline std::uint8_t packInt4(int even, int odd) {
    return static_cast<std::uint8_t>(((static_cast<unsigned>(even) & 0xFu) << 4) | (static_cast<unsigned>(odd) & 0xFu));
}

inline int int4High(std::uint8_t byte) { return static_cast<std::int8_t>(byte) >> 4; }
inline int int4Low(std::uint8_t byte) { return static_cast<std::int8_t>(static_cast<std::uint8_t>(byte << 4)) >> 4; }

// Where block `block` of a job starts and how many of its elements are input (the rest, up to
// `length`, is zero padding).
struct BlockExtent {
    std::size_t start;
    std::size_t length;
    std::size_t real;
};

inline BlockExtent blockExtent(const QuantizeJob& job, std::size_t block) {
    const std::size_t start = block * job.blockSize;
    const std::size_t length = job.paddedElements - start < job.blockSize ? job.paddedElements - start : job.blockSize;
    std::size_t real = 0;
    if (start < job.elements) real = job.elements - start < length ? job.elements - start : length;
    return {start, length, real};
}

// Writes the zero codes of a block's padding (after its `real` values; the kernels wrote those).
inline void zeroPadding(const QuantizeJob& job, const BlockExtent& extent) {
    if (extent.real == extent.length) return;
    if (job.bits == 8) {
        std::memset(job.output + extent.start + extent.real, 0, extent.length - extent.real);
    } else {
        // Blocks start at even elements; an odd `real` already left its last low nibble 0.
        const std::size_t from = (extent.start + extent.real + 1) / 2;
        const std::size_t to = (extent.start + extent.length + 1) / 2;
        std::memset(job.output + from, 0, to - from);
    }
}

// Quantizes blocks [first, last) of the job; returns the first block with a non-finite value, or
// kNoBadBlock.
std::size_t quantizeBlocksScalar(const QuantizeJob& job, std::size_t first, std::size_t last);
std::size_t quantizeBlocksAvx2(const QuantizeJob& job, std::size_t first, std::size_t last);

void dequantizeScalar(const DequantizeRun& run);
void dequantizeAvx2(const DequantizeRun& run);

// The scalar quantization of `n` values of one block (used by both sets for tails): int8 into
// out[0..n), or int4 into ceil(n/2) bytes (an odd n leaves the last low nibble 0).
void quantizeValuesScalar(const void* input, tensor::DType type, std::size_t n, float scale, int bits,
                          std::uint8_t* out);

// The scalar dequantization of `n` values with one multiplier, starting at element `first` of
// the quantized input and output (first is even for int4).
void dequantizeValuesScalar(const std::uint8_t* input, int bits, std::size_t first, std::size_t n, float s,
                            void* output, tensor::DType outputType);

} // namespace mixz::quant::detail
