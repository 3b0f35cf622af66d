// The block kernels behind mixz/quant/block_quant.h: a scalar set (kernels_scalar.cc) and an
// AVX2 set (kernels_avx2.cc) with identical results. Validation, threading and dispatch live in
// block_quant.cc; the kernels trust their arguments.
//
// The per-block arithmetic that both sets share is defined once, in mixz/quant/block_codes.h (as
// MIXZ_HD functions, so the CUDA kernels share it too), so the sets cannot drift: the scale from
// the absmax, s = 1 / scale, the rounding of one value, the int4 nibbles.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "mixz/quant/block_codes.h"
#include "mixz/tensor/dtype.h"

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

// The per-block and per-element arithmetic (scale, multiplier, rounding, clamp, int4 nibbles) is
// mixz/quant/block_codes.h's, shared with the CUDA kernels; both kernel sets use it through these
// names.
using codes::blockScale;
using codes::dequantMultiplier;
using codes::infinityMagnitude;
using codes::int4High;
using codes::int4Low;
using codes::magnitudeToFloat;
using codes::packInt4;
using codes::quantizeValue;
using codes::roundToInt;

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
