// The qwZ all-gather (ZeRO++ quantized weight gather, reference/zeropp.md §1): every member
// contributes its partition quantized to int8 or int4 (mixz/quant/block_quant.h) and receives
// every member's partition dequantized into the output dtype, in one collective.
//
// Vocabulary:
//   partition  the `elements` values a member contributes (every member the same count),
//              zero-padded to whole blocks of `blockSize` before quantization (pitfall P4).
//   codes      quantizedBytes(padded, bits) bytes of int8 or packed int4; scales: one float32
//              multiplier s per block, kept per member (each member's own absmaxes).
//   wire       what a member sends: its codes then its scales, wireBytes() in all.
//   round      on the streamed paths, a run of whole blocks: its scales then its codes, so the
//              reader can dequantize a round as soon as it arrives.
//
// The result equals, bit for bit, dequantize(quantize(x_m)) of every member m's partition x_m,
// whatever the path:
//   streamed   shared memory and a single member: the partition is quantized round by round
//              straight into the segment's ring entries, and every member (this one included)
//              dequantizes every round straight out of them into the output; no staging buffer,
//              quantization of round r+1 overlaps the peers' dequantization of round r.
//   buffered   Gloo, hierarchical, and blocks larger than a ring entry: quantize the whole
//              partition into a send buffer (codes then scales), all-gather it, dequantize every
//              member's segment with its own scales. Quantization and dequantization run on the
//              shared thread pool; the buffers are kept per calling thread between calls (fresh
//              ones cost a page fault per 4 KiB, more than the quantization itself).
//
// Validation as in collectives.h: InvalidArgument before anything is sent; IoError naming the
// peer when communicating fails. A partition holding NaN or infinity throws InvalidArgument; on
// the streamed paths that can happen mid-collective, which then also breaks the communicator
// (the peers fail at once with this member's reason instead of timing out).
#pragma once

#include <cstddef>

#include "mixz/comm/collectives.h"
#include "mixz/quant/block_quant.h"
#include "mixz/tensor/dtype.h"

namespace mixz::comm {

// Bytes one member sends: codes of the padded partition, then its float32 scales.
std::size_t quantizedWireBytes(std::size_t elements, int bits, std::size_t blockSize) noexcept;

// Quantizes this member's partition and gathers everyone's, dequantized.
struct QuantizedAllgatherOptions : CollectiveOptions {
    using CollectiveOptions::CollectiveOptions;
    // `elements` values of inputType (fp32, fp16 or bf16); every member passes the same count.
    const void* input = nullptr;
    tensor::DType inputType = tensor::DType::kFloat16;
    std::size_t elements = 0;
    int bits = 8; // 8 or 4
    std::size_t blockSize = 0; // required: a valid quant block size
    // size() × elements values of outputType (fp32, fp16 or bf16): member m's at m × elements.
    // Must not overlap the input.
    void* output = nullptr;
    tensor::DType outputType = tensor::DType::kFloat16;
    std::size_t outputElements = 0;
    // Threads of the buffered path's quantization and dequantization (0: quant::defaultThreads()).
    std::size_t threads = 0;
};
void quantizedAllgather(const QuantizedAllgatherOptions& options);

// The same gather for partitions that are already quantized (ZeRO-3's frozen int8 weights): this
// member passes its codes and scales, as quant::quantizePartition wrote them, and no quantization
// happens. The output may be of any float dtype (e.g. fp32 for compute).
struct PrequantizedAllgatherOptions : CollectiveOptions {
    using CollectiveOptions::CollectiveOptions;
    // quantizedBytes(paddedSize(elements, blockSize), bits) bytes, and blockCount(elements,
    // blockSize) scales; padding codes must be zero.
    const void* codes = nullptr;
    std::size_t codeBytes = 0;
    const float* scales = nullptr;
    std::size_t scaleCount = 0;
    std::size_t elements = 0;
    int bits = 8;
    std::size_t blockSize = 0; // required: a valid quant block size
    void* output = nullptr;
    tensor::DType outputType = tensor::DType::kFloat32;
    std::size_t outputElements = 0;
    std::size_t threads = 0;
};
void prequantizedAllgather(const PrequantizedAllgatherOptions& options);

} // namespace mixz::comm
