// Symmetric block quantization, bit-compatible with DeepSpeed's qwZ kernels
// (reference/zeropp.md §1.3-1.4), for int8 and packed int4.
//
// A buffer is cut into blocks of a fixed number of elements (a power of two in [8, 65536]; the
// run's `mixz.quant_block_size`, whose default lives in TypeScript's config schema); a buffer shorter than a block, or a last partial
// block, is one block. For every block:
//
//   absmax = max |x_i| over the block, in float32 (x converted from its dtype exactly)
//   scale  = Q / absmax  in float32, Q = 2^bits / 2: 128 for int8, 8 for int4
//            (scale = 1 when absmax == 0, and also when Q / absmax overflows float32, i.e. absmax
//            < Q / FLT_MAX ≈ 3.8e-37; those blocks quantize to all zeros)
//   q_i    = clamp(round_half_even(float(x_i) * scale), -Q, Q - 1)
//   s      = 1 / scale  (float32), stored per block: the dequantization multiplier
//
// and dequantization is y_i = float(q_i) * s[block(i)] in float32, converted to the output dtype
// with round to nearest even. So +absmax quantizes to Q - 1 (127 for int8) and -absmax to -Q.
//
// DeepSpeed takes the absmax of fp16 input in half precision; here it is taken on the values
// converted to float32. The two are identical: fp16 → fp32 is exact and monotonic, so the largest
// magnitude is the same value either way (the kernels actually compare magnitudes as integers on
// the raw fp16/bf16/fp32 bit patterns, which orders them exactly as the float values).
//
// Inputs must be finite: a block holding NaN or ±infinity makes quantize throw InvalidArgument
// naming the first such block (the outputs are then unspecified).
//
// Padding (pitfall P4 of zeropp.md): quantize covers `paddedElements` ≥ `elements` outputs; the
// elements past `elements` are zeros in input semantics: they quantize to 0 and never enter a
// block's absmax, and a block made only of padding gets s = 1. paddedSize(n, block) rounds n up to
// whole blocks, which is how partitions are stored and communicated.
//
// Mixed block sizes (pitfall P2): dequantizeSegments dequantizes a coalesced buffer of several
// parameters, each with its own element count, block size and scale offset, so a gather of
// params quantized with different blocks is never dequantized with one uniform block size.
//
// Work is split by blocks over the shared thread pool (mixz/common/thread_pool.h) for buffers of
// more than a few hundred thousand elements; results do not depend on the thread count nor on the
// kernel (AVX2 or scalar, see mixz/tensor/simd.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

#include "mixz/tensor/dtype.h"
#include "mixz/tensor/simd.h"

namespace mixz::quant {

inline constexpr std::size_t kMinBlockSize = 8;
inline constexpr std::size_t kMaxBlockSize = 65536;

// A power of two in [kMinBlockSize, kMaxBlockSize].
bool isValidBlockSize(std::size_t blockSize) noexcept;

// 8 or 4.
bool isValidBits(int bits) noexcept;

// `elements` rounded up to a whole number of blocks (0 stays 0).
std::size_t paddedSize(std::size_t elements, std::size_t blockSize) noexcept;

// Blocks (and so scales) that cover `elements`: ceil(elements / blockSize).
std::size_t blockCount(std::size_t elements, std::size_t blockSize) noexcept;

// Bytes of quantized data for `elements` values: elements (int8), ceil(elements / 2) (int4).
std::size_t quantizedBytes(std::size_t elements, int bits) noexcept;

// The default thread count of quantization and conversion calls that pass threads = 0:
// min(hardware threads, $MIXZ_QUANT_THREADS) when that variable holds a positive integer (read
// once, at the first call), else the hardware threads; setDefaultThreads overrides both.
std::size_t defaultThreads();

// Sets the default thread count (clamped to [1, maxThreads()]); 0 restores the one from the
// environment and the hardware.
void setDefaultThreads(std::size_t threads);

// The most threads one call can use (the shared pool's size plus the calling thread).
std::size_t maxThreads() noexcept;

// Marks QuantizeOptions::paddedElements as "no padding": the output covers `elements`.
inline constexpr std::size_t kNoPadding = std::numeric_limits<std::size_t>::max();

struct QuantizeOptions {
    // `elements` values of type inputType (fp32, fp16 or bf16).
    const void* input = nullptr;
    tensor::DType inputType = tensor::DType::kFloat16;
    std::size_t elements = 0;
    // Elements the outputs cover (≥ elements); the rest is zero padding. kNoPadding: = elements.
    std::size_t paddedElements = kNoPadding;
    // 8 (int8 output, one byte per value) or 4 (packed int4, see tensor::DType::kInt4).
    int bits = 8;
    std::size_t blockSize = 0; // required (no default here: callers pass mixz.quant_block_size)
    // At least quantizedBytes(padded, bits) bytes.
    void* output = nullptr;
    std::size_t outputBytes = 0;
    // At least blockCount(padded, blockSize) floats: s = 1/scale per block.
    float* scales = nullptr;
    std::size_t scaleCount = 0;
    tensor::Simd simd = tensor::Simd::kAuto;
    // 0: defaultThreads().
    std::size_t threads = 0;
};

// Quantizes. Throws InvalidArgument for bad options (dtype, bits, block size, buffers missing,
// too small or overlapping) and for non-finite input values.
void quantize(const QuantizeOptions& options);

// quantize() with paddedElements = paddedSize(elements, blockSize): the form partitions are
// stored and sent in.
void quantizePartition(QuantizeOptions options);

struct DequantizeOptions {
    // At least quantizedBytes(elements, bits) bytes of int8 or packed int4.
    const void* input = nullptr;
    std::size_t inputBytes = 0;
    int bits = 8;
    // At least blockCount(elements, blockSize) floats.
    const float* scales = nullptr;
    std::size_t scaleCount = 0;
    std::size_t elements = 0;
    std::size_t blockSize = 0; // required (no default here: callers pass mixz.quant_block_size)
    // At least `elements` values of outputType (fp32, fp16 or bf16).
    void* output = nullptr;
    tensor::DType outputType = tensor::DType::kFloat16;
    std::size_t outputElements = 0;
    tensor::Simd simd = tensor::Simd::kAuto;
    std::size_t threads = 0;
    // Non-temporal ("streaming") stores, for outputs too large to stay in cache and not read again
    // soon: they skip the read-for-ownership of every output line. Same values either way.
    bool streamingStores = false;
};

void dequantize(const DequantizeOptions& options);

// The engine's common case on this thread: `elements` fp32 values from int8 codes and their
// float32 scales in blocks of `blockSize` (dequantize() with bits 8, one thread). 0 elements: nothing.
void dequantizeInt8(const std::uint8_t* codes, const float* scales, std::size_t elements, std::size_t blockSize, float* output);

// One parameter's slice of a coalesced quantized buffer.
struct DequantizeSegment {
    std::size_t elements = 0;
    std::size_t blockSize = 0; // required (no default here: callers pass mixz.quant_block_size)
    // Where the segment starts in the quantized input, in elements (even for int4: byte aligned).
    std::size_t inputOffset = 0;
    // Index of its first block's scale in `scales`; it uses blockCount(elements, blockSize).
    std::size_t scaleOffset = 0;
    // Where its values go in the output, in elements. Output ranges must not overlap.
    std::size_t outputOffset = 0;
};

struct DequantizeSegmentsOptions {
    const void* input = nullptr;
    std::size_t inputBytes = 0;
    int bits = 8;
    const float* scales = nullptr;
    std::size_t scaleCount = 0;
    void* output = nullptr;
    tensor::DType outputType = tensor::DType::kFloat16;
    std::size_t outputElements = 0;
    std::vector<DequantizeSegment> segments;
    tensor::Simd simd = tensor::Simd::kAuto;
    std::size_t threads = 0;
    bool streamingStores = false; // as in DequantizeOptions
};

// Dequantizes every segment with its own block size and scales. Output elements no segment covers
// are left as they are. Throws InvalidArgument for segments outside the buffers, overlapping
// output ranges, odd int4 input offsets and the other bad options dequantize rejects.
void dequantizeSegments(const DequantizeSegmentsOptions& options);

// The checks dequantizeSegments makes before any work (all but the CPU support of options.simd),
// for callers that want bad arguments reported before they queue the work.
void validateSegments(const DequantizeSegmentsOptions& options);

} // namespace mixz::quant
