#include "mixz/quant/benchmark.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "mixz/common/error.h"
#include "mixz/quant/block_quant.h"

namespace mixz::quant {

using tensor::DType;

namespace {

constexpr std::size_t kMaxIterations = 10000;
// Random values generated; a larger tensor repeats them (throughput does not depend on values).
constexpr std::size_t kDistinctValues = std::size_t{1} << 20;

template <typename Fn>
double medianSeconds(std::size_t iterations, Fn&& fn) {
    fn(); // warm-up: page faults, caches, the pool's threads
    std::vector<double> seconds;
    seconds.reserve(iterations);
    for (std::size_t i = 0; i < iterations; ++i) {
        const auto start = std::chrono::steady_clock::now();
        fn();
        seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
    std::sort(seconds.begin(), seconds.end());
    const std::size_t middle = seconds.size() / 2;
    return seconds.size() % 2 == 1 ? seconds[middle] : (seconds[middle - 1] + seconds[middle]) / 2;
}

// A buffer whose pages are touched before timing starts.
std::unique_ptr<unsigned char[]> touchedBuffer(std::size_t bytes) {
    std::unique_ptr<unsigned char[]> buffer(new unsigned char[std::max<std::size_t>(bytes, 1)]);
    std::memset(buffer.get(), 0, bytes);
    return buffer;
}

} // namespace

BenchmarkResult benchmark(const BenchmarkOptions& options) {
    constexpr const char* what = "quantBenchmark";
    if (!tensor::isFloatingPoint(options.inputType)) {
        MIXZ_THROW(InvalidArgument, what, ": dtype must be fp32, fp16 or bf16, got ",
                   tensor::dtypeName(options.inputType));
    }
    if (!isValidBits(options.bits)) MIXZ_THROW(InvalidArgument, what, ": bits must be 8 or 4, got ", options.bits);
    if (!isValidBlockSize(options.blockSize)) {
        MIXZ_THROW(InvalidArgument, what, ": block size must be a power of two in [", kMinBlockSize, ", ",
                   kMaxBlockSize, "], got ", options.blockSize);
    }
    if (options.elements == 0 || options.elements > (std::size_t{1} << 32)) {
        MIXZ_THROW(InvalidArgument, what, ": elements must be in [1, 2^32], got ", options.elements);
    }
    if (options.iterations == 0 || options.iterations > kMaxIterations) {
        MIXZ_THROW(InvalidArgument, what, ": iterations must be in [1, ", kMaxIterations, "], got ", options.iterations);
    }
    if (options.threads > maxThreads()) {
        MIXZ_THROW(InvalidArgument, what, ": threads must be in [0, ", maxThreads(), "], got ", options.threads);
    }

    BenchmarkResult result;
    result.simd = tensor::resolveSimd(options.simd);
    result.threads = options.threads == 0 ? defaultThreads() : options.threads;
    const std::size_t n = options.elements;
    const std::size_t blocks = blockCount(n, options.blockSize);
    result.inputBytes = tensor::storageBytes(options.inputType, n);
    const std::size_t codeBytes = quantizedBytes(paddedSize(n, options.blockSize), options.bits);
    result.quantizedBytes = codeBytes + blocks * sizeof(float);

    auto input = touchedBuffer(result.inputBytes);
    auto copy = touchedBuffer(result.inputBytes);
    auto output = touchedBuffer(result.inputBytes);
    auto codes = touchedBuffer(codeBytes);
    std::vector<float> scales(blocks);

    {
        std::mt19937 random(12345);
        std::normal_distribution<float> gaussian(0.0f, 0.02f);
        std::vector<float> values(std::min(n, kDistinctValues));
        for (float& value : values) value = gaussian(random);
        const std::size_t size = result.inputBytes / n;
        for (std::size_t i = 0; i < n; i += values.size()) {
            const std::size_t count = std::min(values.size(), n - i);
            tensor::ConvertOptions convert;
            convert.input = values.data();
            convert.inputType = DType::kFloat32;
            convert.output = input.get() + i * size;
            convert.outputType = options.inputType;
            convert.elements = count;
            convert.simd = result.simd;
            tensor::convert(convert);
        }
    }

    QuantizeOptions quantizeOptions;
    quantizeOptions.input = input.get();
    quantizeOptions.inputType = options.inputType;
    quantizeOptions.elements = n;
    quantizeOptions.paddedElements = paddedSize(n, options.blockSize);
    quantizeOptions.bits = options.bits;
    quantizeOptions.blockSize = options.blockSize;
    quantizeOptions.output = codes.get();
    quantizeOptions.outputBytes = codeBytes;
    quantizeOptions.scales = scales.data();
    quantizeOptions.scaleCount = scales.size();
    quantizeOptions.simd = result.simd;
    quantizeOptions.threads = result.threads;

    DequantizeOptions dequantizeOptions;
    dequantizeOptions.input = codes.get();
    dequantizeOptions.inputBytes = codeBytes;
    dequantizeOptions.bits = options.bits;
    dequantizeOptions.scales = scales.data();
    dequantizeOptions.scaleCount = scales.size();
    dequantizeOptions.elements = n;
    dequantizeOptions.blockSize = options.blockSize;
    dequantizeOptions.output = output.get();
    dequantizeOptions.outputType = options.inputType;
    dequantizeOptions.outputElements = n;
    dequantizeOptions.simd = result.simd;
    dequantizeOptions.threads = result.threads;

    result.quantizeSeconds = medianSeconds(options.iterations, [&] { quantize(quantizeOptions); });
    result.dequantizeSeconds = medianSeconds(options.iterations, [&] { dequantize(dequantizeOptions); });
    result.memcpySeconds =
        medianSeconds(options.iterations, [&] {
            std::memcpy(copy.get(), input.get(), result.inputBytes);
            // The copy is never read: keep the compiler from dropping it.
            asm volatile("" : : "r"(copy.get()) : "memory");
        });

    const double tensorBytes = static_cast<double>(result.inputBytes);
    result.quantizeGBps = tensorBytes / result.quantizeSeconds / 1e9;
    result.dequantizeGBps = static_cast<double>(result.quantizedBytes) / result.dequantizeSeconds / 1e9;
    result.dequantizeOutputGBps = tensorBytes / result.dequantizeSeconds / 1e9;
    result.memcpyGBps = tensorBytes / result.memcpySeconds / 1e9;
    return result;
}

} // namespace mixz::quant
