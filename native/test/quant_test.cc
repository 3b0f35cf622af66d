// Core tests of mixz/tensor (dtype conversions) and mixz/quant (block quantization), without Node.
// The engine's TypeScript tests (packages/engine/test/quant/quantize.test.ts) cover the same ground
// through the addon; this program adds what is too slow or too low-level there: every fp16 and
// (with --exhaustive) every float32 bit pattern through the scalar conversions against the CPU's
// own F16C instructions, and concurrent calls into the thread pool.
//
// Build and run from the repository root (add -fsanitize=address,undefined -g for a sanitizer run):
//
//   g++ -std=c++17 -O2 -Wall -Wextra -pthread -Inative/include -o /tmp/mixz-quant-test
//       native/test/quant_test.cc native/src/tensor/*.cc native/src/quant/*.cc
//       native/src/common/error.cc native/src/common/thread_pool.cc
//
// (one command line).
//   /tmp/mixz-quant-test [--exhaustive]
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "mixz/common/error.h"
#include "mixz/common/thread_pool.h"
#include "mixz/quant/block_quant.h"
#include "mixz/tensor/dtype.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

using mixz::quant::DequantizeOptions;
using mixz::quant::QuantizeOptions;
using mixz::tensor::DType;
using mixz::tensor::Simd;

namespace {

int failures = 0;

#define CHECK(condition, ...)                                                      \
    do {                                                                           \
        if (!(condition)) {                                                        \
            ++failures;                                                            \
            std::fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #condition); \
            std::fprintf(stderr, __VA_ARGS__);                                     \
            std::fprintf(stderr, "\n");                                            \
        }                                                                          \
    } while (false)

std::vector<Simd> paths() {
    std::vector<Simd> result{Simd::kScalar};
    if (mixz::tensor::cpuHasAvx2Kernels()) result.push_back(Simd::kAvx2);
    return result;
}

struct Quantized {
    std::vector<std::uint8_t> codes;
    std::vector<float> scales;
};

Quantized quantize(const void* input, DType type, std::size_t n, std::size_t padded, int bits, std::size_t block,
                   Simd simd, std::size_t threads = 1) {
    Quantized result;
    result.codes.assign(mixz::quant::quantizedBytes(padded, bits), 0xAB);
    result.scales.assign(mixz::quant::blockCount(padded, block), -1.0f);
    QuantizeOptions options;
    options.input = input;
    options.inputType = type;
    options.elements = n;
    options.paddedElements = padded;
    options.bits = bits;
    options.blockSize = block;
    options.output = result.codes.data();
    options.outputBytes = result.codes.size();
    options.scales = result.scales.data();
    options.scaleCount = result.scales.size();
    options.simd = simd;
    options.threads = threads;
    mixz::quant::quantize(options);
    return result;
}

std::vector<std::uint8_t> dequantize(const Quantized& q, std::size_t n, int bits, std::size_t block, DType out,
                                     Simd simd, std::size_t threads = 1) {
    std::vector<std::uint8_t> result(mixz::tensor::storageBytes(out, n) + 1, 0xCD);
    DequantizeOptions options;
    options.input = q.codes.data();
    options.inputBytes = q.codes.size();
    options.bits = bits;
    options.scales = q.scales.data();
    options.scaleCount = q.scales.size();
    options.elements = n;
    options.blockSize = block;
    options.output = result.data();
    options.outputType = out;
    options.outputElements = n;
    options.simd = simd;
    options.threads = threads;
    mixz::quant::dequantize(options);
    CHECK(result.back() == 0xCD, "dequantize wrote past its output");
    result.pop_back();
    return result;
}

void testWorkedExample() {
    // reference/zeropp.md §1.6, fp16 input, two blocks of 8.
    const std::vector<std::uint16_t> x = {0x3800, 0xB400, 0x3000, 0xBC00, 0x3A00, 0x0000, 0xB4CD, 0x3B33,
                                          0x211F, 0xA51F, 0x27CF, 0x9C19, 0x0000, 0x23AE, 0xA7F0, 0x191F};
    const std::vector<int> expected = {64, -32, 16, -128, 96, 0, -38, 115, 41, -83, 126, -17, 0, 62, -128, 10};
    for (const Simd simd : paths()) {
        const Quantized q = quantize(x.data(), DType::kFloat16, 16, 16, 8, 8, simd);
        for (std::size_t i = 0; i < 16; ++i) {
            CHECK(static_cast<std::int8_t>(q.codes[i]) == expected[i], "%s: q[%zu] = %d, expected %d",
                  mixz::tensor::simdName(simd), i, static_cast<std::int8_t>(q.codes[i]), expected[i]);
        }
        CHECK(q.scales[0] == 0.0078125f, "scale 0 = %.17g", q.scales[0]);
        CHECK(q.scales[1] == 0.0002422332763671875f, "scale 1 = %.17g", q.scales[1]);
    }
}

void testDequantizeMatchesScalar() {
    std::mt19937 random(7);
    std::normal_distribution<float> gaussian(0.0f, 0.02f);
    const std::size_t sizes[] = {0, 1, 7, 8, 9, 31, 33, 64, 100, 4095, 4096, 4097, 12345, 70001};
    const std::size_t blocks[] = {8, 64, 4096, 65536};
    for (const DType type : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
        for (const int bits : {8, 4}) {
            for (const std::size_t block : blocks) {
                for (const std::size_t n : sizes) {
                    std::vector<float> values(n);
                    for (float& v : values) v = gaussian(random) * (random() % 4 == 0 ? 100.0f : 1.0f);
                    std::vector<std::uint8_t> input(mixz::tensor::storageBytes(type, n) + 2);
                    mixz::tensor::ConvertOptions convert;
                    convert.input = values.data();
                    convert.output = input.data();
                    convert.outputType = type;
                    convert.elements = n;
                    convert.simd = Simd::kScalar;
                    mixz::tensor::convert(convert);
                    const std::size_t padded = mixz::quant::paddedSize(n, block);
                    const Quantized reference = quantize(input.data(), type, n, padded, bits, block, Simd::kScalar);
                    for (const Simd simd : paths()) {
                        for (const std::size_t threads : {std::size_t{1}, std::size_t{3}}) {
                            const Quantized q = quantize(input.data(), type, n, padded, bits, block, simd, threads);
                            CHECK(q.codes == reference.codes, "codes differ: %s bits %d block %zu n %zu",
                                  mixz::tensor::dtypeName(type), bits, block, n);
                            const bool sameScales =
                                q.scales.empty() ||
                                std::memcmp(q.scales.data(), reference.scales.data(), q.scales.size() * 4) == 0;
                            CHECK(sameScales,
                                  "scales differ: %s bits %d block %zu n %zu", mixz::tensor::dtypeName(type), bits,
                                  block, n);
                            for (const DType out : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
                                const auto expected = dequantize(reference, padded, bits, block, out, Simd::kScalar);
                                const auto actual = dequantize(q, padded, bits, block, out, simd, threads);
                                CHECK(expected == actual, "dequantized values differ: %s → %s bits %d block %zu n %zu",
                                      mixz::tensor::dtypeName(type), mixz::tensor::dtypeName(out), bits, block, n);
                            }
                        }
                    }
                    // Padding codes are zero and every scale is positive and finite.
                    for (std::size_t i = n; i < padded; ++i) {
                        const std::uint8_t byte = reference.codes[bits == 8 ? i : i / 2];
                        const int code = bits == 8 ? static_cast<std::int8_t>(byte)
                                                   : (i % 2 == 0 ? (byte >> 4) : (byte & 0xF));
                        CHECK(code == 0, "padding code %zu is %d", i, code);
                    }
                    for (const float s : reference.scales) CHECK(std::isfinite(s) && s > 0, "scale %g", s);
                }
            }
        }
    }
}

#if defined(__x86_64__) || defined(__i386__)
__attribute__((target("f16c"))) std::uint16_t hardwareToFp16(float value) {
    return static_cast<std::uint16_t>(
        _mm_extract_epi16(_mm_cvtps_ph(_mm_set_ss(value), _MM_FROUND_TO_NEAREST_INT), 0));
}

__attribute__((target("f16c"))) std::uint32_t hardwareFromFp16(std::uint16_t half) {
    return mixz::tensor::floatBits(_mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(half))));
}
#endif

void testConversions(bool exhaustive) {
#if defined(__x86_64__) || defined(__i386__)
    if (!mixz::tensor::cpuHasAvx2Kernels()) return;
    for (std::uint32_t h = 0; h < 65536; ++h) {
        const auto half = static_cast<std::uint16_t>(h);
        CHECK(mixz::tensor::floatBits(mixz::tensor::fp16ToFloat(half)) == hardwareFromFp16(half), "fp16 %04x", h);
    }
    // Every float32 pattern takes ~30 s; by default a stride that still visits every exponent.
    const std::uint64_t step = exhaustive ? 1 : 997;
    for (std::uint64_t b = 0; b <= 0xFFFFFFFFull; b += step) {
        const float value = mixz::tensor::bitsToFloat(static_cast<std::uint32_t>(b));
        CHECK(mixz::tensor::floatToFp16(value) == hardwareToFp16(value), "fp32 %08llx",
              static_cast<unsigned long long>(b));
    }
    // Bulk conversions: AVX2 equals scalar on random bit patterns (NaNs, subnormals included).
    std::mt19937 random(11);
    std::vector<std::uint32_t> bits(100003);
    for (auto& b : bits) b = static_cast<std::uint32_t>(random());
    for (const DType from : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
        for (const DType to : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
            std::vector<std::uint32_t> scalar(bits.size()), avx2(bits.size());
            for (const Simd simd : {Simd::kScalar, Simd::kAvx2}) {
                mixz::tensor::ConvertOptions options;
                options.input = bits.data();
                options.inputType = from;
                options.output = (simd == Simd::kScalar ? scalar : avx2).data();
                options.outputType = to;
                options.elements = bits.size();
                options.simd = simd;
                options.threads = 2;
                mixz::tensor::convert(options);
            }
            CHECK(scalar == avx2, "convert %s → %s differs between paths", mixz::tensor::dtypeName(from),
                  mixz::tensor::dtypeName(to));
        }
    }
#else
    (void)exhaustive;
#endif
}

void testThreadPool() {
    mixz::ThreadPool pool(4);
    std::vector<std::thread> callers;
    std::atomic<int> wrong{0};
    for (int c = 0; c < 6; ++c) {
        callers.emplace_back([&, c] {
            for (int round = 0; round < 200; ++round) {
                std::vector<int> hits(97, 0);
                pool.parallelFor(hits.size(), 1 + (c + round) % 5, [&](std::size_t i) { hits[i] += 1; });
                for (const int h : hits) {
                    if (h != 1) ++wrong;
                }
            }
        });
    }
    for (auto& t : callers) t.join();
    CHECK(wrong == 0, "%d tasks ran a wrong number of times", wrong.load());
    bool threw = false;
    try {
        pool.parallelFor(10, 3, [](std::size_t i) {
            if (i == 5) throw std::runtime_error("task 5");
        });
    } catch (const std::runtime_error& error) {
        threw = std::string(error.what()) == "task 5";
    }
    CHECK(threw, "the task's exception did not reach the caller");
}

void testInvalid() {
    const std::uint16_t x[4] = {0x3C00, 0x7C00, 0, 0};
    std::uint8_t codes[8];
    float scales[1];
    auto rejects = [&](const std::function<void(QuantizeOptions&)>& tweak) {
        QuantizeOptions options;
        options.input = x;
        options.inputType = DType::kFloat16;
        options.elements = 1;
        options.bits = 8;
        options.blockSize = 8;
        options.output = codes;
        options.outputBytes = sizeof codes;
        options.scales = scales;
        options.scaleCount = 1;
        tweak(options);
        try {
            mixz::quant::quantize(options);
        } catch (const mixz::InvalidArgument&) {
            return true;
        }
        return false;
    };
    CHECK(rejects([](QuantizeOptions& o) { o.bits = 2; }), "bits 2");
    CHECK(rejects([](QuantizeOptions& o) { o.blockSize = 12; }), "block 12");
    CHECK(rejects([](QuantizeOptions& o) { o.blockSize = 4; }), "block 4");
    CHECK(rejects([](QuantizeOptions& o) { o.inputType = DType::kInt8; }), "int8 input");
    CHECK(rejects([](QuantizeOptions& o) { o.elements = 2; }), "infinity in the block");
    CHECK(rejects([](QuantizeOptions& o) { o.scaleCount = 0; }), "no room for scales");
    CHECK(rejects([](QuantizeOptions& o) { o.paddedElements = 9; }), "2 blocks, 1 scale");
    CHECK(rejects([&](QuantizeOptions& o) { o.output = const_cast<std::uint16_t*>(x); }), "overlap");
    CHECK(!rejects([](QuantizeOptions&) {}), "valid options were rejected");
}

} // namespace

int main(int argc, char** argv) {
    const bool exhaustive = argc > 1 && std::string(argv[1]) == "--exhaustive";
    testWorkedExample();
    testDequantizeMatchesScalar();
    testConversions(exhaustive);
    testThreadPool();
    testInvalid();
    if (failures != 0) {
        std::fprintf(stderr, "%d checks failed\n", failures);
        return 1;
    }
    std::printf("quant_test: all checks passed (paths: scalar%s)\n",
                mixz::tensor::cpuHasAvx2Kernels() ? ", avx2" : "");
    return 0;
}
