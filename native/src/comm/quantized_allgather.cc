#include "mixz/comm/quantized_allgather.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <functional>
#include <vector>

#include "mixz/comm/copy.h"
#include "mixz/common/error.h"

namespace mixz::comm {

namespace {

using tensor::DType;

constexpr OpKind kKind = OpKind::kQuantizedAllgather;
// Buffered-path buffers larger than this are given back after the call instead of kept for the
// next one: a thread of libuv's pool must not hold hundreds of MiB for a gather that ran once.
constexpr std::size_t kKeepScratchBytes = std::size_t{64} << 20;

// The shape of one gather, the same on every member.
struct Plan {
    std::size_t elements = 0;
    int bits = 8;
    std::size_t blockSize = 0;
    std::size_t padded = 0;
    std::size_t blocks = 0;
    std::size_t blockCodeBytes = 0; // codes of one whole block
    std::size_t codeBytes = 0;      // codes of the padded partition
    std::size_t wireBytes = 0;      // codes then scales

    Plan(std::size_t elements, int bits, std::size_t blockSize)
        : elements(elements), bits(bits), blockSize(blockSize), padded(quant::paddedSize(elements, blockSize)),
          blocks(quant::blockCount(elements, blockSize)), blockCodeBytes(quant::quantizedBytes(blockSize, bits)),
          codeBytes(quant::quantizedBytes(padded, bits)), wireBytes(codeBytes + blocks * sizeof(float)) {}

    // Input elements (not padding) among blocks [first, first + count).
    std::size_t realElements(std::size_t first, std::size_t count) const {
        const std::size_t start = first * blockSize;
        return start >= elements ? 0 : std::min(elements - start, count * blockSize);
    }
};

// Writes the codes and scales of this member's blocks [first, first + count) to `codes` and
// `scales` (count × blockCodeBytes bytes, count floats).
using BlockSource = std::function<void(std::size_t first, std::size_t count, std::uint8_t* codes, float* scales)>;

struct Target {
    void* output = nullptr;
    DType outputType = DType::kFloat16;
    std::size_t threads = 0;
    // Outputs larger than the cache (the transport's threshold, mixz/comm/copy.h): dequantize with
    // non-temporal stores, as the plain all-gather copies; the output is not read again soon.
    bool streaming = false;
};

Target targetOf(void* output, DType outputType, std::size_t outputElements, std::size_t threads) {
    return Target{output, outputType, threads, tensor::storageBytes(outputType, outputElements) >= streamingThreshold()};
}

bool overlap(const void* a, std::size_t aBytes, const void* b, std::size_t bBytes) {
    const auto x = reinterpret_cast<std::uintptr_t>(a);
    const auto y = reinterpret_cast<std::uintptr_t>(b);
    return a != nullptr && b != nullptr && aBytes > 0 && bBytes > 0 && x < y + bBytes && y < x + aBytes;
}

void checkCommon(const CollectiveOptions& options, std::size_t elements, int bits, std::size_t blockSize,
                 void* output, DType outputType, std::size_t outputElements) {
    const char* what = opKindName(kKind);
    if (options.timeout.count() <= 0) {
        MIXZ_THROW(InvalidArgument, what, ": timeout must be positive, got ", options.timeout.count(), " ms");
    }
    if (!options.comm.connected()) MIXZ_THROW(InvalidArgument, what, ": the communicator is not connected");
    if (!quant::isValidBits(bits)) MIXZ_THROW(InvalidArgument, what, ": bits must be 8 or 4, got ", bits);
    if (!quant::isValidBlockSize(blockSize)) {
        MIXZ_THROW(InvalidArgument, what, ": block size must be a power of two in [", quant::kMinBlockSize, ", ",
                   quant::kMaxBlockSize, "], got ", blockSize);
    }
    if (!tensor::isFloatingPoint(outputType)) {
        MIXZ_THROW(InvalidArgument, what, ": output type must be fp32, fp16 or bf16, got ",
                   tensor::dtypeName(outputType));
    }
    if (elements > (std::size_t{1} << 48)) MIXZ_THROW(InvalidArgument, what, ": ", elements, " elements is too many");
    const std::size_t n = static_cast<std::size_t>(options.comm.size());
    if (outputElements != n * elements) {
        MIXZ_THROW(InvalidArgument, what, ": output must hold ", n, " × ", elements, " = ", n * elements,
                   " values, got ", outputElements);
    }
    if (output == nullptr && outputElements > 0) MIXZ_THROW(InvalidArgument, what, ": output is null");
}

std::uint64_t shapeOf(const Plan& plan) {
    std::uint64_t digest = mixShape(0, static_cast<std::uint64_t>(kKind));
    digest = mixShape(digest, plan.elements);
    digest = mixShape(digest, static_cast<std::uint64_t>(plan.bits));
    return mixShape(digest, plan.blockSize);
}

// Dequantizes `count` blocks of member m, starting at block `first`, from codes and scales.
void dequantizeBlocks(const Plan& plan, const Target& target, int member, std::size_t first, std::size_t count,
                      const std::uint8_t* codes, const float* scales) {
    const std::size_t real = plan.realElements(first, count);
    if (real == 0) return;
    const std::size_t outputOffset = static_cast<std::size_t>(member) * plan.elements + first * plan.blockSize;
    quant::DequantizeOptions options;
    options.input = codes;
    options.inputBytes = count * plan.blockCodeBytes;
    options.bits = plan.bits;
    options.scales = scales;
    options.scaleCount = count;
    options.elements = real;
    options.blockSize = plan.blockSize;
    options.output = static_cast<std::uint8_t*>(target.output) + tensor::storageBytes(target.outputType, outputOffset);
    options.outputType = target.outputType;
    options.outputElements = real;
    options.threads = target.threads;
    options.streamingStores = target.streaming;
    quant::dequantize(options);
}

// Streamed: rounds of whole blocks, each its scales then its codes, produced into and consumed
// from the transport's entries.
void gatherStreamed(Communicator& comm, const Plan& plan, const BlockSource& source, const Target& target,
                    std::size_t blocksPerRound, const OpContext& op) {
    const std::size_t perBlock = plan.blockCodeBytes + sizeof(float);
    const std::size_t roundBytes = blocksPerRound * perBlock;
    const auto blocksAt = [&](std::size_t offset, std::size_t bytes, std::size_t* first) {
        *first = offset / roundBytes * blocksPerRound;
        return bytes / perBlock;
    };
    comm.allgatherStreamed(
        plan.blocks * perBlock, roundBytes,
        [&](std::uint8_t* entry, std::size_t offset, std::size_t bytes) {
            std::size_t first = 0;
            const std::size_t count = blocksAt(offset, bytes, &first);
            source(first, count, entry + count * sizeof(float), reinterpret_cast<float*>(entry));
        },
        [&](int member, const std::uint8_t* entry, std::size_t offset, std::size_t bytes) {
            std::size_t first = 0;
            const std::size_t count = blocksAt(offset, bytes, &first);
            dequantizeBlocks(plan, target, member, first, count, entry + count * sizeof(float),
                             reinterpret_cast<const float*>(entry));
        },
        op);
}

struct Scratch {
    std::vector<std::uint8_t> send;
    std::vector<std::uint8_t> gathered;
};

// Per thread: the AsyncWorkers of the addon run on libuv's few pool threads, and the ZeRO-3
// engine's gathers on its own threads; a call never shares its buffers with another in flight.
thread_local Scratch scratch;

std::uint8_t* ensure(std::vector<std::uint8_t>& buffer, std::size_t bytes) {
    if (buffer.size() < bytes) {
        buffer = std::vector<std::uint8_t>(); // no copy of the old contents
        buffer.resize(bytes);
    }
    return buffer.data();
}

// Buffered: codes then scales of this member into a send buffer, one all-gather, then every
// member's segment dequantized with its own scales, all on the thread pool.
void gatherBuffered(Communicator& comm, const Plan& plan, const BlockSource& source, const Target& target,
                    const OpContext& op) {
    const std::size_t n = static_cast<std::size_t>(comm.size());
    std::uint8_t* send = ensure(scratch.send, std::max<std::size_t>(plan.wireBytes, 1));
    std::uint8_t* gathered = ensure(scratch.gathered, std::max<std::size_t>(plan.wireBytes * n, 1));
    // codeBytes is a multiple of 4 (blocks hold at least 8 values), so the scales stay aligned.
    source(0, plan.blocks, send, reinterpret_cast<float*>(send + plan.codeBytes));
    comm.allgatherv(send, gathered, std::vector<std::size_t>(n, plan.wireBytes), op);
    quant::DequantizeSegmentsOptions options;
    options.input = gathered;
    options.inputBytes = plan.wireBytes * n;
    options.bits = plan.bits;
    options.scales = reinterpret_cast<const float*>(gathered);
    options.scaleCount = plan.wireBytes * n / sizeof(float);
    options.output = target.output;
    options.outputType = target.outputType;
    options.outputElements = plan.elements * n;
    options.threads = target.threads;
    options.streamingStores = target.streaming;
    const std::size_t codesPerByte = plan.bits == 8 ? 1 : 2;
    for (std::size_t m = 0; m < n; ++m) {
        options.segments.push_back({plan.elements, plan.blockSize, m * plan.wireBytes * codesPerByte,
                                    (m * plan.wireBytes + plan.codeBytes) / sizeof(float), m * plan.elements});
    }
    quant::dequantizeSegments(options);
    if (scratch.gathered.size() > kKeepScratchBytes) scratch = Scratch();
}

void gather(Communicator& comm, const Plan& plan, const BlockSource& source, const Target& target,
            const OpContext& op) {
    const std::size_t perBlock = plan.blockCodeBytes + sizeof(float);
    const std::size_t limit = comm.streamRoundLimit();
    if (limit >= perBlock) {
        const std::size_t blocksPerRound = std::max<std::size_t>(1, std::min(plan.blocks, limit / perBlock));
        gatherStreamed(comm, plan, source, target, blocksPerRound, op);
    } else {
        gatherBuffered(comm, plan, source, target, op);
    }
}

} // namespace

std::size_t quantizedWireBytes(std::size_t elements, int bits, std::size_t blockSize) noexcept {
    if (!quant::isValidBits(bits) || !quant::isValidBlockSize(blockSize)) return 0;
    return Plan(elements, bits, blockSize).wireBytes;
}

void quantizedAllgather(const QuantizedAllgatherOptions& options) {
    const char* what = opKindName(kKind);
    checkCommon(options, options.elements, options.bits, options.blockSize, options.output, options.outputType,
                options.outputElements);
    if (!tensor::isFloatingPoint(options.inputType)) {
        MIXZ_THROW(InvalidArgument, what, ": input type must be fp32, fp16 or bf16, got ",
                   tensor::dtypeName(options.inputType));
    }
    if (options.input == nullptr && options.elements > 0) MIXZ_THROW(InvalidArgument, what, ": input is null");
    const std::size_t inputBytes = tensor::storageBytes(options.inputType, options.elements);
    if (overlap(options.input, inputBytes, options.output,
                tensor::storageBytes(options.outputType, options.outputElements))) {
        MIXZ_THROW(InvalidArgument, what, ": input and output must not overlap");
    }
    const Plan plan(options.elements, options.bits, options.blockSize);
    const auto* input = static_cast<const std::uint8_t*>(options.input);
    const BlockSource source = [&](std::size_t first, std::size_t count, std::uint8_t* codes, float* scales) {
        quant::QuantizeOptions quantize;
        const std::size_t start = first * plan.blockSize;
        quantize.input = start < plan.elements ? input + tensor::storageBytes(options.inputType, start) : nullptr;
        quantize.inputType = options.inputType;
        quantize.elements = plan.realElements(first, count);
        quantize.paddedElements = count * plan.blockSize;
        quantize.bits = plan.bits;
        quantize.blockSize = plan.blockSize;
        quantize.output = codes;
        quantize.outputBytes = count * plan.blockCodeBytes;
        quantize.scales = scales;
        quantize.scaleCount = count;
        quantize.threads = options.threads;
        try {
            quant::quantize(quantize);
        } catch (const InvalidArgument& error) {
            // The kernels number blocks from `first`; say which of the partition's it was.
            MIXZ_THROW(InvalidArgument, what, ": this member's blocks ", first, " to ", first + count - 1, " of ",
                       plan.blocks, ": ", error.what());
        }
    };
    const OpContext op(kKind, options.tag, options.timeout, shapeOf(plan));
    gather(options.comm, plan, source, targetOf(options.output, options.outputType, options.outputElements, options.threads),
           op);
}

void prequantizedAllgather(const PrequantizedAllgatherOptions& options) {
    const char* what = opKindName(kKind);
    checkCommon(options, options.elements, options.bits, options.blockSize, options.output, options.outputType,
                options.outputElements);
    const Plan plan(options.elements, options.bits, options.blockSize);
    if (options.codeBytes < plan.codeBytes || options.scaleCount < plan.blocks) {
        MIXZ_THROW(InvalidArgument, what, ": ", plan.elements, " elements in blocks of ", plan.blockSize, " need ",
                   plan.codeBytes, " bytes of int", plan.bits, " codes and ", plan.blocks, " scales, got ",
                   options.codeBytes, " bytes and ", options.scaleCount, " scales");
    }
    if (plan.blocks > 0 && (options.codes == nullptr || options.scales == nullptr)) {
        MIXZ_THROW(InvalidArgument, what, ": codes and scales must not be null");
    }
    const std::size_t outputBytes = tensor::storageBytes(options.outputType, options.outputElements);
    if (overlap(options.codes, plan.codeBytes, options.output, outputBytes) ||
        overlap(options.scales, plan.blocks * sizeof(float), options.output, outputBytes)) {
        MIXZ_THROW(InvalidArgument, what, ": codes and scales must not overlap the output");
    }
    const auto* codes = static_cast<const std::uint8_t*>(options.codes);
    const BlockSource source = [&](std::size_t first, std::size_t count, std::uint8_t* codesOut, float* scalesOut) {
        std::memcpy(codesOut, codes + first * plan.blockCodeBytes, count * plan.blockCodeBytes);
        std::memcpy(scalesOut, options.scales + first, count * sizeof(float));
    };
    const OpContext op(kKind, options.tag, options.timeout, shapeOf(plan));
    gather(options.comm, plan, source, targetOf(options.output, options.outputType, options.outputElements, options.threads),
           op);
}

} // namespace mixz::comm
