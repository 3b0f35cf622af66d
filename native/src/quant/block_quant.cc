#include "mixz/quant/block_quant.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <numeric>
#include <string>
#include <thread>

#include "kernels.h"
#include "mixz/common/error.h"
#include "mixz/common/thread_pool.h"

namespace mixz::quant {

using tensor::DType;
using tensor::Simd;

namespace {

// Work is cut into tasks of about this many elements (whole blocks, at least one), handed out to
// the threads dynamically.
constexpr std::size_t kTaskElements = std::size_t{1} << 16;
// A call uses one more thread per this many elements: below it, waking a worker costs more than
// it saves.
constexpr std::size_t kElementsPerThread = std::size_t{1} << 18;
// No buffer may be larger than this many elements (keeps every size computation far from overflow).
constexpr std::size_t kMaxElements = std::size_t{1} << 56;

std::atomic<std::size_t> defaultThreadsOverride{0};

std::size_t threadsFromEnvironment() {
    static const std::size_t threads = [] {
        const std::size_t hardware = std::max<std::size_t>(1, std::thread::hardware_concurrency());
        const char* env = std::getenv("MIXZ_QUANT_THREADS");
        if (env == nullptr || *env == '\0') return std::min(hardware, maxThreads());
        char* end = nullptr;
        const unsigned long long value = std::strtoull(env, &end, 10);
        // Not a positive integer: ignored (the hardware count applies).
        if (end == env || *end != '\0' || value == 0) return std::min(hardware, maxThreads());
        return std::min<std::size_t>({hardware, static_cast<std::size_t>(value), maxThreads()});
    }();
    return threads;
}

std::size_t threadsFor(std::size_t requested, std::size_t elements) {
    const std::size_t threads = requested == 0 ? defaultThreads() : std::min(requested, maxThreads());
    const std::size_t useful = std::max<std::size_t>(1, elements / kElementsPerThread);
    return std::min(threads, useful);
}

bool overlaps(const void* a, std::size_t aBytes, const void* b, std::size_t bBytes) {
    if (a == nullptr || b == nullptr || aBytes == 0 || bBytes == 0) return false;
    const auto x = reinterpret_cast<std::uintptr_t>(a);
    const auto y = reinterpret_cast<std::uintptr_t>(b);
    return x < y + bBytes && y < x + aBytes;
}

void checkBits(const char* what, int bits) {
    if (!isValidBits(bits)) MIXZ_THROW(InvalidArgument, what, ": bits must be 8 or 4, got ", bits);
}

void checkBlockSize(const char* what, std::size_t blockSize) {
    if (!isValidBlockSize(blockSize)) {
        MIXZ_THROW(InvalidArgument, what, ": block size must be a power of two in [", kMinBlockSize, ", ",
                   kMaxBlockSize, "], got ", blockSize);
    }
}

void checkFloatType(const char* what, const char* role, DType type) {
    if (!tensor::isFloatingPoint(type)) {
        MIXZ_THROW(InvalidArgument, what, ": ", role, " type must be fp32, fp16 or bf16, got ",
                   tensor::dtypeName(type));
    }
}

void checkElements(const char* what, const char* role, std::size_t elements) {
    if (elements > kMaxElements) {
        MIXZ_THROW(InvalidArgument, what, ": ", role, " of ", elements, " elements is too large");
    }
}

// Work item of dequantizeSegments: blocks [firstBlock, lastBlock) of one segment.
struct DequantizeTask {
    std::size_t segment;
    std::size_t firstBlock;
    std::size_t lastBlock;
};

} // namespace

bool isValidBlockSize(std::size_t blockSize) noexcept {
    return blockSize >= kMinBlockSize && blockSize <= kMaxBlockSize && (blockSize & (blockSize - 1)) == 0;
}

bool isValidBits(int bits) noexcept { return bits == 8 || bits == 4; }

std::size_t paddedSize(std::size_t elements, std::size_t blockSize) noexcept {
    return blockCount(elements, blockSize) * blockSize;
}

std::size_t blockCount(std::size_t elements, std::size_t blockSize) noexcept {
    return blockSize == 0 ? 0 : elements / blockSize + (elements % blockSize != 0 ? 1 : 0);
}

std::size_t quantizedBytes(std::size_t elements, int bits) noexcept {
    return bits == 4 ? elements / 2 + elements % 2 : elements;
}

std::size_t maxThreads() noexcept { return ThreadPool::shared().maxThreads(); }

std::size_t defaultThreads() {
    const std::size_t override = defaultThreadsOverride.load(std::memory_order_relaxed);
    return override != 0 ? override : threadsFromEnvironment();
}

void setDefaultThreads(std::size_t threads) {
    defaultThreadsOverride.store(threads == 0 ? 0 : std::min(threads, maxThreads()), std::memory_order_relaxed);
}

void quantize(const QuantizeOptions& options) {
    constexpr const char* what = "quantize";
    checkFloatType(what, "input", options.inputType);
    checkBits(what, options.bits);
    checkBlockSize(what, options.blockSize);
    checkElements(what, "input", options.elements);
    const std::size_t padded = options.paddedElements == kNoPadding ? options.elements : options.paddedElements;
    checkElements(what, "padded output", padded);
    if (padded < options.elements) {
        MIXZ_THROW(InvalidArgument, what, ": padded size ", padded, " is smaller than the ", options.elements,
                   " input elements");
    }
    const Simd simd = tensor::resolveSimd(options.simd);
    if (padded == 0) return;

    const std::size_t inputBytes = tensor::storageBytes(options.inputType, options.elements);
    const std::size_t outputBytes = quantizedBytes(padded, options.bits);
    const std::size_t blocks = blockCount(padded, options.blockSize);
    if (options.elements > 0 && options.input == nullptr) MIXZ_THROW(InvalidArgument, what, ": input is null");
    if (options.output == nullptr || options.scales == nullptr) {
        MIXZ_THROW(InvalidArgument, what, ": output and scales must not be null");
    }
    if (options.outputBytes < outputBytes) {
        MIXZ_THROW(InvalidArgument, what, ": output holds ", options.outputBytes, " bytes, ", padded, " int",
                   options.bits, " values need ", outputBytes);
    }
    if (options.scaleCount < blocks) {
        MIXZ_THROW(InvalidArgument, what, ": scales hold ", options.scaleCount, " floats, ", padded,
                   " elements in blocks of ", options.blockSize, " need ", blocks);
    }
    const std::size_t scaleBytes = blocks * sizeof(float);
    if (overlaps(options.input, inputBytes, options.output, outputBytes) ||
        overlaps(options.input, inputBytes, options.scales, scaleBytes) ||
        overlaps(options.output, outputBytes, options.scales, scaleBytes)) {
        MIXZ_THROW(InvalidArgument, what, ": input, output and scales must not overlap");
    }

    const detail::QuantizeJob job{options.input,  options.inputType,
                                  options.elements, padded,
                                  options.bits,   options.blockSize,
                                  static_cast<std::uint8_t*>(options.output), options.scales};
    const std::size_t blocksPerTask = std::max<std::size_t>(1, kTaskElements / options.blockSize);
    const std::size_t tasks = blockCount(blocks, blocksPerTask);
    std::atomic<std::size_t> firstBad{detail::kNoBadBlock};
    ThreadPool::shared().parallelFor(tasks, threadsFor(options.threads, padded), [&](std::size_t task) {
        const std::size_t first = task * blocksPerTask;
        const std::size_t last = std::min(blocks, first + blocksPerTask);
        const std::size_t bad = simd == Simd::kAvx2 ? detail::quantizeBlocksAvx2(job, first, last)
                                                    : detail::quantizeBlocksScalar(job, first, last);
        if (bad != detail::kNoBadBlock) {
            std::size_t seen = firstBad.load(std::memory_order_relaxed);
            while (bad < seen && !firstBad.compare_exchange_weak(seen, bad, std::memory_order_relaxed)) {
            }
        }
    });
    const std::size_t bad = firstBad.load();
    if (bad != detail::kNoBadBlock) {
        MIXZ_THROW(InvalidArgument, what, ": block ", bad, " (elements ", bad * options.blockSize, " to ",
                   std::min(options.elements, (bad + 1) * options.blockSize) - 1,
                   ") holds NaN or infinity; only finite values can be quantized");
    }
}

void quantizePartition(QuantizeOptions options) {
    options.paddedElements = isValidBlockSize(options.blockSize) ? paddedSize(options.elements, options.blockSize)
                                                                 : options.elements;
    quantize(options);
}

void dequantize(const DequantizeOptions& options) {
    constexpr const char* what = "dequantize";
    checkBits(what, options.bits);
    checkBlockSize(what, options.blockSize);
    checkFloatType(what, "output", options.outputType);
    checkElements(what, "input", options.elements);
    const std::size_t needBytes = quantizedBytes(options.elements, options.bits);
    const std::size_t needScales = blockCount(options.elements, options.blockSize);
    if (options.inputBytes < needBytes) {
        MIXZ_THROW(InvalidArgument, what, ": input holds ", options.inputBytes, " bytes, ", options.elements, " int",
                   options.bits, " values need ", needBytes);
    }
    if (options.scaleCount < needScales) {
        MIXZ_THROW(InvalidArgument, what, ": scales hold ", options.scaleCount, " floats, ", options.elements,
                   " elements in blocks of ", options.blockSize, " need ", needScales);
    }
    if (options.outputElements < options.elements) {
        MIXZ_THROW(InvalidArgument, what, ": output holds ", options.outputElements, " values, ", options.elements,
                   " needed");
    }
    DequantizeSegmentsOptions segments;
    segments.input = options.input;
    segments.inputBytes = options.inputBytes;
    segments.bits = options.bits;
    segments.scales = options.scales;
    segments.scaleCount = options.scaleCount;
    segments.output = options.output;
    segments.outputType = options.outputType;
    segments.outputElements = options.outputElements;
    segments.simd = options.simd;
    segments.threads = options.threads;
    segments.streamingStores = options.streamingStores;
    segments.segments.push_back({options.elements, options.blockSize, 0, 0, 0});
    dequantizeSegments(segments);
}

void validateSegments(const DequantizeSegmentsOptions& options) {
    constexpr const char* what = "dequantizeSegments";
    checkBits(what, options.bits);
    checkFloatType(what, "output", options.outputType);
    checkElements(what, "output", options.outputElements);
    if (options.scaleCount > kMaxElements) MIXZ_THROW(InvalidArgument, what, ": too many scales");
    if (options.inputBytes > kMaxElements) MIXZ_THROW(InvalidArgument, what, ": input too large");
    const std::size_t inputCodes = options.bits == 8 ? options.inputBytes : options.inputBytes * 2;

    std::size_t totalElements = 0;
    for (std::size_t i = 0; i < options.segments.size(); ++i) {
        const DequantizeSegment& segment = options.segments[i];
        if (!isValidBlockSize(segment.blockSize)) {
            MIXZ_THROW(InvalidArgument, what, ": segment ", i, ": block size must be a power of two in [",
                       kMinBlockSize, ", ", kMaxBlockSize, "], got ", segment.blockSize);
        }
        if (segment.elements > inputCodes || segment.inputOffset > inputCodes - segment.elements) {
            MIXZ_THROW(InvalidArgument, what, ": segment ", i, ": input elements [", segment.inputOffset, ", +",
                       segment.elements, ") lie outside the ", inputCodes, " quantized values");
        }
        if (options.bits == 4 && segment.inputOffset % 2 != 0) {
            MIXZ_THROW(InvalidArgument, what, ": segment ", i, ": an int4 segment must start at an even element, got ",
                       segment.inputOffset);
        }
        const std::size_t blocks = blockCount(segment.elements, segment.blockSize);
        if (blocks > options.scaleCount || segment.scaleOffset > options.scaleCount - blocks) {
            MIXZ_THROW(InvalidArgument, what, ": segment ", i, ": scales [", segment.scaleOffset, ", +", blocks,
                       ") lie outside the ", options.scaleCount, " scales");
        }
        if (segment.elements > options.outputElements ||
            segment.outputOffset > options.outputElements - segment.elements) {
            MIXZ_THROW(InvalidArgument, what, ": segment ", i, ": output elements [", segment.outputOffset, ", +",
                       segment.elements, ") lie outside the ", options.outputElements, " output values");
        }
        totalElements += segment.elements;
    }
    // Output ranges must be disjoint: segments are written concurrently.
    std::vector<std::size_t> order(options.segments.size());
    std::iota(order.begin(), order.end(), std::size_t{0});
    std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
        return options.segments[a].outputOffset < options.segments[b].outputOffset;
    });
    std::size_t previous = options.segments.size();
    for (const std::size_t index : order) {
        const DequantizeSegment& segment = options.segments[index];
        if (segment.elements == 0) continue;
        if (previous != options.segments.size()) {
            const DequantizeSegment& before = options.segments[previous];
            if (before.outputOffset + before.elements > segment.outputOffset) {
                MIXZ_THROW(InvalidArgument, what, ": segments ", previous, " and ", index, " overlap in the output");
            }
        }
        previous = index;
    }
    if (totalElements == 0) return;
    if (options.input == nullptr || options.scales == nullptr || options.output == nullptr) {
        MIXZ_THROW(InvalidArgument, what, ": input, scales and output must not be null");
    }
    const std::size_t outputBytes = tensor::storageBytes(options.outputType, options.outputElements);
    if (overlaps(options.output, outputBytes, options.input, options.inputBytes) ||
        overlaps(options.output, outputBytes, options.scales, options.scaleCount * sizeof(float))) {
        MIXZ_THROW(InvalidArgument, what, ": the output must not overlap the input or the scales");
    }
}

void dequantizeSegments(const DequantizeSegmentsOptions& options) {
    validateSegments(options);
    const Simd simd = tensor::resolveSimd(options.simd);
    std::size_t totalElements = 0;
    for (const DequantizeSegment& segment : options.segments) totalElements += segment.elements;
    if (totalElements == 0) return;

    std::vector<DequantizeTask> tasks;
    for (std::size_t i = 0; i < options.segments.size(); ++i) {
        const DequantizeSegment& segment = options.segments[i];
        const std::size_t blocks = blockCount(segment.elements, segment.blockSize);
        const std::size_t blocksPerTask = std::max<std::size_t>(1, kTaskElements / segment.blockSize);
        for (std::size_t first = 0; first < blocks; first += blocksPerTask) {
            tasks.push_back({i, first, std::min(blocks, first + blocksPerTask)});
        }
    }
    const std::size_t outputSize = static_cast<std::size_t>(tensor::bitsPerElement(options.outputType) / 8);
    const auto* input = static_cast<const std::uint8_t*>(options.input);
    auto* output = static_cast<unsigned char*>(options.output);
    ThreadPool::shared().parallelFor(
        tasks.size(), threadsFor(options.threads, totalElements), [&](std::size_t index) {
            const DequantizeTask& task = tasks[index];
            const DequantizeSegment& segment = options.segments[task.segment];
            const std::size_t start = task.firstBlock * segment.blockSize;
            const std::size_t end = std::min(segment.elements, task.lastBlock * segment.blockSize);
            const std::size_t codeOffset = segment.inputOffset + start; // even for int4
            const detail::DequantizeRun run{
                input + (options.bits == 8 ? codeOffset : codeOffset / 2),
                options.scales + segment.scaleOffset + task.firstBlock,
                output + (segment.outputOffset + start) * outputSize,
                options.outputType,
                options.bits,
                end - start,
                segment.blockSize,
                options.streamingStores};
            if (simd == Simd::kAvx2) {
                detail::dequantizeAvx2(run);
            } else {
                detail::dequantizeScalar(run);
            }
        });
}

void dequantizeInt8(const std::uint8_t* codes, const float* scales, std::size_t elements, std::size_t blockSize, float* output) {
    if (elements == 0) return;
    DequantizeOptions q;
    q.input = codes;
    q.inputBytes = quantizedBytes(elements, 8);
    q.bits = 8;
    q.scales = scales;
    q.scaleCount = blockCount(elements, blockSize);
    q.elements = elements;
    q.blockSize = blockSize;
    q.output = output;
    q.outputType = tensor::DType::kFloat32;
    q.outputElements = elements;
    q.threads = 1;
    dequantize(q);
}

} // namespace mixz::quant
