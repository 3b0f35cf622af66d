// Throughput of block quantization on this machine, measured in native code (for `mixz bench
// quantize` and docs/BENCHMARKS.md).
#pragma once

#include <cstddef>

#include "mixz/tensor/dtype.h"
#include "mixz/tensor/simd.h"

namespace mixz::quant {

struct BenchmarkOptions {
    // Elements of the tensor (random Gaussian data, σ = 0.02, in inputType).
    std::size_t elements = std::size_t{32} << 20;
    tensor::DType inputType = tensor::DType::kFloat16;
    int bits = 8;
    // Required (the addon passes the caller's; mixz.quant_block_size's default lives in TypeScript).
    std::size_t blockSize = 0;
    // Timed repetitions of each operation (after one untimed warm-up); the median is reported.
    std::size_t iterations = 10;
    // Threads of quantize and dequantize (0: defaultThreads()). memcpy always runs on one thread.
    std::size_t threads = 0;
    tensor::Simd simd = tensor::Simd::kAuto;
};

struct BenchmarkResult {
    // The tensor's size in its dtype (elements × 2 for fp16): what quantize consumes.
    std::size_t inputBytes = 0;
    // int8/int4 bytes plus float32 scales: what dequantize consumes.
    std::size_t quantizedBytes = 0;
    // Median seconds of one call.
    double quantizeSeconds = 0;
    double dequantizeSeconds = 0;
    double memcpySeconds = 0;
    // inputBytes / quantizeSeconds, in GB/s (10^9 bytes per second).
    double quantizeGBps = 0;
    // quantizedBytes / dequantizeSeconds: the input dequantize consumes.
    double dequantizeGBps = 0;
    // inputBytes / dequantizeSeconds: the tensor bytes dequantize produces (the output dtype is the
    // input dtype), comparable with quantizeGBps and memcpyGBps.
    double dequantizeOutputGBps = 0;
    // inputBytes / memcpySeconds of a single-threaded std::memcpy of inputBytes.
    double memcpyGBps = 0;
    // What actually ran.
    tensor::Simd simd = tensor::Simd::kScalar;
    std::size_t threads = 1;
};

// Allocates the buffers (page-faulted before timing), runs and times. Throws InvalidArgument for
// bad options (iterations must be in [1, 10000]).
BenchmarkResult benchmark(const BenchmarkOptions& options);

} // namespace mixz::quant
