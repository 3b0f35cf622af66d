// Tests, on the CPU and without a GPU, that the MIXZ_HD element-wise functions the CUDA kernels
// run (mixz/tensor/half_bits.h, mixz/quant/block_codes.h, mixz/optim/adam_element.h) give bit for
// bit what the CPU engine's public functions give: tensor::convert, quant::quantize / dequantize
// (through the kernel set the engine dispatches to on this machine, AVX2 where the CPU has it, and
// the scalar set), optim::adamUpdate and optim::sumOfSquares. The references below are assembled
// only from the HD functions, the way the device kernels use them (src/cuda/quant, src/cuda/optim),
// so a pass here means the device's per-element arithmetic is the CPU's, up to nvcc's code
// generation, which the device test (native/test/cuda/quant_device_test.cu) checks on a GPU.
//
// Inputs: every fp16 and bf16 bit pattern; float32 edge values (±0, subnormals, the fp16/bf16
// rounding ties and overflow thresholds, ±inf, quiet and signalling NaNs with payloads) and random
// bit patterns; block sizes 8 to 65536; element counts 0, 1, odd, not a multiple of the block,
// with and without padding; all-zero blocks, blocks with one huge value, blocks of tiny values
// whose scale would overflow, exact rounding ties.
//
// Build and run from the repository root:
//   g++ -std=c++17 -O2 -Wall -Wextra -pthread -Inative/include -o /tmp/mixz-host-device-test
//       native/test/host_device_test.cc native/src/optim/adamw.cc native/src/quant/*.cc
//       native/src/tensor/*.cc native/src/common/error.cc native/src/common/thread_pool.cc
//
// (one command line).
//   /tmp/mixz-host-device-test
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "mixz/common/error.h"
#include "mixz/optim/adam_element.h"
#include "mixz/optim/adamw.h"
#include "mixz/quant/block_codes.h"
#include "mixz/quant/block_quant.h"
#include "mixz/tensor/dtype.h"
#include "mixz/tensor/half_bits.h"

using mixz::tensor::DType;
using mixz::tensor::Simd;
namespace codes = mixz::quant::codes;
namespace tensor = mixz::tensor;

namespace {

int failures = 0;
long long checks = 0;

#define CHECK(condition, ...)                                                                   \
    do {                                                                                        \
        ++checks;                                                                               \
        if (!(condition)) {                                                                     \
            ++failures;                                                                         \
            if (failures <= 50) {                                                               \
                std::fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #condition); \
                std::fprintf(stderr, __VA_ARGS__);                                              \
                std::fprintf(stderr, "\n");                                                     \
            }                                                                                   \
        }                                                                                       \
    } while (false)

std::mt19937_64 rng(20261207);

// The kernel sets the engine can use here: the one it dispatches to (kAuto) and, where that is
// AVX2, the scalar set as well.
std::vector<Simd> simdPaths() {
    std::vector<Simd> paths{Simd::kAuto};
    if (tensor::resolveSimd(Simd::kAuto) != Simd::kScalar) paths.push_back(Simd::kScalar);
    return paths;
}

const char* simdLabel(Simd simd) { return simd == Simd::kAuto ? "dispatched" : tensor::simdName(simd); }

std::size_t elementSize(DType type) { return type == DType::kFloat32 ? 4 : 2; }

// ---------------------------------------------------------------------------------------------
// Conversions

// The float32 patterns every conversion is tried on: edges first, then random patterns.
std::vector<std::uint32_t> floatPatterns(std::size_t randomCount) {
    std::vector<std::uint32_t> patterns;
    for (const std::uint32_t sign : {0u, 0x80000000u}) {
        const std::uint32_t edges[] = {
            0x00000000u, 0x00000001u, 0x00000002u, 0x007FFFFFu, 0x00400000u, 0x00800000u, // zero, subnormals, min normal
            0x3F800000u, 0x3F800001u, 0x7F7FFFFFu, 0x7F800000u,                         // 1, max finite, inf
            0x7F800001u, 0x7FBFFFFFu, 0x7FC00000u, 0x7FC00001u, 0x7FFFFFFFu, 0x7FA00000u, // NaNs (signalling, quiet)
            0x7F802000u, 0x7F801FFFu,                                                   // NaN payload at fp16's cut
            0x477FE000u, 0x477FEFFFu, 0x477FF000u, 0x477FF001u, 0x47800000u,             // 65504 .. 65520 .. 65536
            0x38800000u, 0x387FFFFFu, 0x387FF000u, 0x33000000u, 0x33000001u, 0x32FFFFFFu, // fp16 normal/subnormal/zero cuts
            0x33800000u, 0x33C00000u, 0x34000000u, 0x34400000u,                         // fp16 subnormal ties (1.5, 2.5 ulp)
            0x3F801000u, 0x3F803000u, 0x3F800FFFu, 0x3F801001u,                         // fp16 normal ties and near
            0x3F808000u, 0x3F818000u, 0x3F807FFFu, 0x3F808001u,                         // bf16 ties and near
            0x7F7F8000u, 0x7F7F7FFFu, 0x7F7FC000u,                                      // bf16 overflow to inf
            0x00008000u, 0x00018000u, 0x00007FFFu,                                      // bf16 ties among subnormals
        };
        for (const std::uint32_t e : edges) patterns.push_back(sign | e);
    }
    for (std::size_t i = 0; i < randomCount; ++i) patterns.push_back(static_cast<std::uint32_t>(rng()));
    // Ties of every fp16 exponent and of many bf16 ones: the halfway point between two
    // representable values, and one ulp either side.
    for (std::uint32_t e = 103; e < 143; ++e) {
        for (std::uint32_t k = 0; k < 4; ++k) {
            const std::uint32_t base = (e << 23) | (static_cast<std::uint32_t>(rng()) & 0x7FC000u);
            for (const std::uint32_t tie : {0x1000u, 0x3000u, 0x8000u, 0x18000u}) {
                patterns.push_back(base | tie);
                patterns.push_back((base | tie) - 1);
                patterns.push_back((base | tie) + 1);
            }
        }
    }
    return patterns;
}

bool sameBits16(std::uint16_t a, std::uint16_t b) { return a == b; }
bool sameBits32(float a, float b) { return tensor::floatBits(a) == tensor::floatBits(b); }

void convertWith(Simd simd, const void* in, DType inType, void* out, DType outType, std::size_t n) {
    tensor::ConvertOptions options;
    options.input = in;
    options.inputType = inType;
    options.output = out;
    options.outputType = outType;
    options.elements = n;
    options.simd = simd;
    tensor::convert(options);
}

void testHalfToFloat() {
    std::vector<std::uint16_t> all(65536);
    for (std::size_t i = 0; i < all.size(); ++i) all[i] = static_cast<std::uint16_t>(i);
    for (const Simd simd : simdPaths()) {
        for (const DType type : {DType::kFloat16, DType::kBFloat16}) {
            std::vector<float> out(all.size(), std::numeric_limits<float>::quiet_NaN());
            convertWith(simd, all.data(), type, out.data(), DType::kFloat32, all.size());
            int bad = 0;
            for (std::size_t i = 0; i < all.size(); ++i) {
                const float hd = type == DType::kFloat16 ? tensor::fp16ToFloat(all[i]) : tensor::bf16ToFloat(all[i]);
                if (!sameBits32(hd, out[i]) && bad++ < 3) {
                    std::fprintf(stderr, "  %s 0x%04zx: HD 0x%08x, convert 0x%08x\n", tensor::dtypeName(type), i,
                                 tensor::floatBits(hd), tensor::floatBits(out[i]));
                }
            }
            CHECK(bad == 0, "%s: every %s pattern → fp32, %d differ", simdLabel(simd), tensor::dtypeName(type), bad);
        }
    }
}

void testFloatToHalf() {
    const std::vector<std::uint32_t> patterns = floatPatterns(1u << 20);
    std::vector<float> in(patterns.size());
    for (std::size_t i = 0; i < patterns.size(); ++i) in[i] = tensor::bitsToFloat(patterns[i]);
    for (const Simd simd : simdPaths()) {
        for (const DType type : {DType::kFloat16, DType::kBFloat16}) {
            std::vector<std::uint16_t> out(in.size(), 0xFFFFu);
            convertWith(simd, in.data(), DType::kFloat32, out.data(), type, in.size());
            int bad = 0;
            for (std::size_t i = 0; i < in.size(); ++i) {
                const std::uint16_t hd = type == DType::kFloat16 ? tensor::floatToFp16(in[i]) : tensor::floatToBf16(in[i]);
                if (!sameBits16(hd, out[i]) && bad++ < 3) {
                    std::fprintf(stderr, "  0x%08x → %s: HD 0x%04x, convert 0x%04x\n", patterns[i],
                                 tensor::dtypeName(type), hd, out[i]);
                }
            }
            CHECK(bad == 0, "%s: fp32 → %s on %zu patterns, %d differ", simdLabel(simd), tensor::dtypeName(type),
                  in.size(), bad);
        }
    }
    // Documented values (dtype.h): a few spot checks that the functions do what it says.
    CHECK(tensor::floatToFp16(65519.0f) == 0x7BFFu && tensor::floatToFp16(65520.0f) == 0x7C00u, "fp16 overflow cut");
    CHECK(tensor::floatToFp16(tensor::bitsToFloat(0x33000000u)) == 0 &&
              tensor::floatToFp16(tensor::bitsToFloat(0x33000001u)) == 1,
          "2^-25 ties to 0, just above rounds to the smallest subnormal");
    CHECK(tensor::floatToBf16(tensor::bitsToFloat(0x3F808000u)) == 0x3F80u &&
              tensor::floatToBf16(tensor::bitsToFloat(0x3F818000u)) == 0x3F82u,
          "bf16 ties to even");
    CHECK(tensor::floatToFp16(tensor::bitsToFloat(0xFF800001u)) == 0xFE00u &&
              tensor::floatToBf16(tensor::bitsToFloat(0x7F800001u)) == 0x7FC0u,
          "signalling NaNs come out quiet");
}

// fp16 ↔ bf16 goes through float32: convert must equal the HD composition, every pattern.
void testHalfToHalf() {
    std::vector<std::uint16_t> all(65536);
    for (std::size_t i = 0; i < all.size(); ++i) all[i] = static_cast<std::uint16_t>(i);
    for (const Simd simd : simdPaths()) {
        for (const DType from : {DType::kFloat16, DType::kBFloat16}) {
            const DType to = from == DType::kFloat16 ? DType::kBFloat16 : DType::kFloat16;
            std::vector<std::uint16_t> out(all.size(), 0xFFFFu);
            convertWith(simd, all.data(), from, out.data(), to, all.size());
            int bad = 0;
            for (std::size_t i = 0; i < all.size(); ++i) {
                const std::uint16_t hd = from == DType::kFloat16 ? tensor::floatToBf16(tensor::fp16ToFloat(all[i]))
                                                                 : tensor::floatToFp16(tensor::bf16ToFloat(all[i]));
                bad += hd != out[i];
            }
            CHECK(bad == 0, "%s: every %s pattern → %s, %d differ", simdLabel(simd), tensor::dtypeName(from),
                  tensor::dtypeName(to), bad);
        }
    }
    // Counts 0, 1 and odd through convert (the vector main part and the scalar tail).
    for (const std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{7}, std::size_t{9}, std::size_t{1023},
                                std::size_t{65537}}) {
        std::vector<float> in(n);
        for (float& x : in) x = tensor::bitsToFloat(static_cast<std::uint32_t>(rng()));
        std::vector<std::uint16_t> out(n + 1, 0xABCDu);
        convertWith(Simd::kAuto, in.data(), DType::kFloat32, out.data(), DType::kBFloat16, n);
        int bad = 0;
        for (std::size_t i = 0; i < n; ++i) bad += out[i] != tensor::floatToBf16(in[i]);
        CHECK(bad == 0 && out[n] == 0xABCDu, "fp32 → bf16 of %zu elements: %d differ, guard %04x", n, bad, out[n]);
    }
}

// ---------------------------------------------------------------------------------------------
// Block quantization

// The quantizer assembled from the HD functions as the CUDA kernel does it: per block, the integer
// maximum of the magnitude patterns, the scale, the stored multiplier, then each code (padding
// codes are those of 0). Returns the first non-finite block, or SIZE_MAX.
std::size_t referenceQuantize(const void* input, DType type, std::size_t elements, std::size_t padded, int bits,
                              std::size_t blockSize, std::vector<std::uint8_t>& out, std::vector<float>& scales) {
    const std::size_t blocks = mixz::quant::blockCount(padded, blockSize);
    out.assign(mixz::quant::quantizedBytes(padded, bits), 0);
    scales.assign(blocks, 0.0f);
    std::size_t firstBad = SIZE_MAX;
    auto load = [&](std::size_t i) -> float {
        if (i >= elements) return 0.0f;
        switch (type) {
            case DType::kFloat16:
                return codes::loadAsFloat<DType::kFloat16>(input, i);
            case DType::kBFloat16:
                return codes::loadAsFloat<DType::kBFloat16>(input, i);
            default:
                return codes::loadAsFloat<DType::kFloat32>(input, i);
        }
    };
    auto magnitude = [&](std::size_t i) -> std::uint32_t {
        if (type == DType::kFloat32) return codes::magnitudeBits(static_cast<const float*>(input)[i]);
        return codes::magnitudeBits(static_cast<const std::uint16_t*>(input)[i]);
    };
    for (std::size_t block = 0; block < blocks; ++block) {
        const std::size_t start = block * blockSize;
        const std::size_t end = std::min(padded, start + blockSize);
        std::uint32_t largest = 0;
        for (std::size_t i = start; i < std::min(end, elements); ++i) largest = std::max(largest, magnitude(i));
        if (largest >= codes::infinityMagnitude(type) && firstBad == SIZE_MAX) firstBad = block;
        const float scale = codes::blockScale(codes::magnitudeToFloat(largest, type), bits);
        scales[block] = codes::dequantMultiplier(scale);
        if (bits == 8) {
            for (std::size_t i = start; i < end; ++i) out[i] = codes::int8Byte(codes::quantizeValue(load(i), scale, 8));
        } else {
            for (std::size_t i = start; i < end; i += 2) {
                const int even = codes::quantizeValue(load(i), scale, 4);
                const int odd = i + 1 < end ? codes::quantizeValue(load(i + 1), scale, 4) : 0;
                out[i / 2] = codes::packInt4(even, odd);
            }
        }
    }
    return firstBad;
}

template <DType Out>
void referenceDequantizeAs(const std::uint8_t* in, int bits, const float* scales, std::size_t elements,
                           std::size_t blockSize, void* output) {
    for (std::size_t i = 0; i < elements; ++i) {
        const int q = bits == 8 ? codes::int8Code(in[i]) : (i % 2 == 0 ? codes::int4High(in[i / 2]) : codes::int4Low(in[i / 2]));
        codes::storeFromFloat<Out>(output, i, codes::dequantizeValue(q, scales[i / blockSize]));
    }
}

void referenceDequantize(const std::uint8_t* in, int bits, const float* scales, std::size_t elements,
                         std::size_t blockSize, void* output, DType type) {
    switch (type) {
        case DType::kFloat16:
            return referenceDequantizeAs<DType::kFloat16>(in, bits, scales, elements, blockSize, output);
        case DType::kBFloat16:
            return referenceDequantizeAs<DType::kBFloat16>(in, bits, scales, elements, blockSize, output);
        default:
            return referenceDequantizeAs<DType::kFloat32>(in, bits, scales, elements, blockSize, output);
    }
}

// Input values of `type` (as raw bytes) of a few kinds.
enum class Fill { kNormal, kZeroBlocks, kHugeOne, kTiny, kTies, kWide };

std::vector<unsigned char> makeInput(DType type, std::size_t n, std::size_t blockSize, Fill fill) {
    std::normal_distribution<float> normal(0.0f, 0.02f);
    std::vector<float> values(n);
    for (std::size_t i = 0; i < n; ++i) {
        const std::size_t block = i / blockSize;
        float x = normal(rng);
        switch (fill) {
            case Fill::kNormal:
                break;
            case Fill::kZeroBlocks:
                if (block % 2 == 0) x = (rng() % 2 == 0) ? 0.0f : -0.0f; // ±0 all over even blocks
                break;
            case Fill::kHugeOne:
                // One huge value per block, the rest far below it (most codes round to 0 or ±1).
                if (i % blockSize == (block * 7) % blockSize) x = type == DType::kFloat16 ? -65504.0f : 3.0e37f;
                break;
            case Fill::kTiny:
                // fp32 magnitudes below Q / FLT_MAX (the scale would overflow: s = 1, codes 0) and
                // subnormals; fp16/bf16 subnormals.
                x = type == DType::kFloat32 ? x * 1e-37f : type == DType::kFloat16 ? x * 1e-5f : x * 1e-37f;
                break;
            case Fill::kTies: {
                // absmax 128 (int8) so that scale = 1 and k + 0.5 values are exact ties; for int4
                // the same values give scale 1/16 and ties of their own.
                const int k = static_cast<int>(rng() % 256) - 128;
                x = static_cast<float>(k) + 0.5f;
                if (i % blockSize == 0) x = 128.0f;
                break;
            }
            case Fill::kWide:
                x = std::ldexp(normal(rng), static_cast<int>(rng() % 40) - 20);
                break;
        }
        values[i] = x;
    }
    std::vector<unsigned char> bytes(n * elementSize(type) + 1);
    if (type == DType::kFloat32) {
        std::memcpy(bytes.data(), values.data(), n * 4);
    } else {
        convertWith(Simd::kScalar, values.data(), DType::kFloat32, bytes.data(), type, n);
    }
    return bytes;
}

void quantizeWith(Simd simd, const void* input, DType type, std::size_t n, std::size_t padded, int bits,
                  std::size_t blockSize, std::vector<std::uint8_t>& out, std::vector<float>& scales) {
    // Poisoned outputs: every byte and scale must be written.
    out.assign(mixz::quant::quantizedBytes(padded, bits), 0xA5);
    scales.assign(mixz::quant::blockCount(padded, blockSize), std::numeric_limits<float>::quiet_NaN());
    mixz::quant::QuantizeOptions options;
    options.input = input;
    options.inputType = type;
    options.elements = n;
    options.paddedElements = padded;
    options.bits = bits;
    options.blockSize = blockSize;
    options.output = out.data();
    options.outputBytes = out.size();
    options.scales = scales.data();
    options.scaleCount = scales.size();
    options.simd = simd;
    mixz::quant::quantize(options);
}

void dequantizeWith(Simd simd, const std::uint8_t* in, std::size_t inBytes, int bits, const float* scales,
                    std::size_t scaleCount, std::size_t n, std::size_t blockSize, void* out, DType type) {
    mixz::quant::DequantizeOptions options;
    options.input = in;
    options.inputBytes = inBytes;
    options.bits = bits;
    options.scales = scales;
    options.scaleCount = scaleCount;
    options.elements = n;
    options.blockSize = blockSize;
    options.output = out;
    options.outputType = type;
    options.outputElements = n;
    options.simd = simd;
    mixz::quant::dequantize(options);
}

bool sameFloats(const std::vector<float>& a, const std::vector<float>& b) {
    return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * 4) == 0);
}

// The counts tried with block size b: 0, 1, odd, a multiple, not a multiple.
std::vector<std::size_t> countsFor(std::size_t b) {
    std::vector<std::size_t> counts{0, 1, 3, b - 1, b, b + 1, 3 * b + 5};
    if (b <= 1024) {
        counts.push_back(37 * b);
        counts.push_back(37 * b + b / 2 + 1);
    }
    return counts;
}

void testQuantize() {
    const Fill fills[] = {Fill::kNormal, Fill::kZeroBlocks, Fill::kHugeOne, Fill::kTiny, Fill::kTies, Fill::kWide};
    int cases = 0;
    for (std::size_t blockSize = 8; blockSize <= 65536; blockSize *= 2) {
        for (const std::size_t n : countsFor(blockSize)) {
            for (const DType type : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
                // Large blocks: fewer fills (the same code paths, much more time).
                for (std::size_t f = 0; f < (blockSize >= 8192 ? 2 : 6); ++f) {
                    const Fill fill = fills[(f + blockSize / 8192) % 6];
                    const std::vector<unsigned char> input = makeInput(type, n, blockSize, fill);
                    for (const int bits : {8, 4}) {
                        for (const bool pad : {false, true}) {
                            const std::size_t padded = pad ? mixz::quant::paddedSize(n, blockSize) + (n % 2) : n;
                            std::vector<std::uint8_t> refCodes;
                            std::vector<float> refScales;
                            const std::size_t bad =
                                referenceQuantize(input.data(), type, n, padded, bits, blockSize, refCodes, refScales);
                            CHECK(bad == SIZE_MAX, "finite input reported bad");
                            for (const Simd simd : simdPaths()) {
                                std::vector<std::uint8_t> outCodes;
                                std::vector<float> outScales;
                                quantizeWith(simd, input.data(), type, n, padded, bits, blockSize, outCodes, outScales);
                                ++cases;
                                CHECK(outCodes == refCodes && sameFloats(outScales, refScales),
                                      "%s: quantize %s int%d block %zu n %zu padded %zu fill %d: codes %s, scales %s",
                                      simdLabel(simd), tensor::dtypeName(type), bits, blockSize, n, padded,
                                      static_cast<int>(fill), outCodes == refCodes ? "equal" : "DIFFER",
                                      sameFloats(outScales, refScales) ? "equal" : "DIFFER");
                            }
                            // Round trip through dequantize: the reference from the HD codes and
                            // scales equals the engine's, every output type.
                            for (const DType outType : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
                                const std::size_t outBytes = padded * elementSize(outType);
                                std::vector<unsigned char> ref(outBytes + 1, 0x5A);
                                referenceDequantize(refCodes.data(), bits, refScales.data(), padded, blockSize,
                                                    ref.data(), outType);
                                for (const Simd simd : simdPaths()) {
                                    std::vector<unsigned char> got(outBytes + 1, 0x5A);
                                    dequantizeWith(simd, refCodes.data(), refCodes.size(), bits, refScales.data(),
                                                   refScales.size(), padded, blockSize, got.data(), outType);
                                    CHECK(got == ref, "%s: dequantize int%d → %s block %zu n %zu", simdLabel(simd),
                                          bits, tensor::dtypeName(outType), blockSize, padded);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    std::printf("  quantize/dequantize: %d quantize cases bit for bit\n", cases);

    // The documented oracle (zeropp.md §1.6 group 0, fp16): codes and the stored multiplier.
    const float group0[8] = {0.5f, -0.25f, 0.125f, -1.0f, 0.75f, 0.0f, -0.300049f, 0.899902f};
    std::vector<std::uint16_t> half(8);
    for (int i = 0; i < 8; ++i) half[i] = tensor::floatToFp16(group0[i]);
    std::vector<std::uint8_t> q;
    std::vector<float> s;
    referenceQuantize(half.data(), DType::kFloat16, 8, 8, 8, 8, q, s);
    const int expected[8] = {64, -32, 16, -128, 96, 0, -38, 115};
    bool same = s[0] == 0.0078125f;
    for (int i = 0; i < 8; ++i) same = same && codes::int8Code(q[i]) == expected[i];
    CHECK(same, "zeropp.md §1.6 group 0");
    // +absmax clamps to Q - 1, -absmax is -Q, a 0.5 tie goes to 0.
    CHECK(codes::quantizeValue(1.0f, codes::blockScale(1.0f, 8), 8) == 127 &&
              codes::quantizeValue(-1.0f, codes::blockScale(1.0f, 8), 8) == -128 &&
              codes::quantizeValue(0.5f, 1.0f, 8) == 0 && codes::quantizeValue(1.5f, 1.0f, 8) == 2 &&
              codes::quantizeValue(-2.5f, 1.0f, 4) == -2,
          "clamp and ties");
}

// Dequantize on arbitrary codes (every byte value) and arbitrary scales, including scales whose
// products overflow, subnormal, zero, infinite and NaN scales: dequantize does not check them, so
// the HD arithmetic must match on all of them.
void testDequantizeAnyCodes() {
    for (const std::size_t blockSize : {std::size_t{8}, std::size_t{16}, std::size_t{64}, std::size_t{4096}}) {
        for (const std::size_t n : {std::size_t{1}, std::size_t{15}, std::size_t{17}, blockSize * 9 + 3}) {
            const std::size_t blocks = mixz::quant::blockCount(n, blockSize);
            std::vector<float> scales(blocks);
            const float special[] = {0.0f, -0.0f, 1e-45f, 3e36f, -3e38f, std::numeric_limits<float>::infinity(),
                                     std::numeric_limits<float>::quiet_NaN(), tensor::bitsToFloat(0x7FA12345u)};
            for (std::size_t b = 0; b < blocks; ++b) {
                scales[b] = b % 3 == 1 ? special[rng() % 8] : tensor::bitsToFloat(static_cast<std::uint32_t>(rng()));
            }
            for (const int bits : {8, 4}) {
                std::vector<std::uint8_t> in(mixz::quant::quantizedBytes(n, bits));
                for (auto& byte : in) byte = static_cast<std::uint8_t>(rng());
                for (const DType outType : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
                    const std::size_t outBytes = n * elementSize(outType);
                    std::vector<unsigned char> ref(outBytes, 0x5A);
                    referenceDequantize(in.data(), bits, scales.data(), n, blockSize, ref.data(), outType);
                    for (const Simd simd : simdPaths()) {
                        std::vector<unsigned char> got(outBytes, 0x33);
                        dequantizeWith(simd, in.data(), in.size(), bits, scales.data(), scales.size(), n, blockSize,
                                       got.data(), outType);
                        CHECK(got == ref, "%s: dequantize any codes int%d → %s block %zu n %zu", simdLabel(simd), bits,
                              tensor::dtypeName(outType), blockSize, n);
                    }
                }
            }
        }
    }
}

// Non-finite input: quantize throws, and the HD magnitude test finds the same block non-finite.
void testNonFinite() {
    const std::size_t blockSize = 16, n = 100;
    for (const DType type : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
        for (const float bad : {std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                                std::numeric_limits<float>::quiet_NaN()}) {
            std::vector<unsigned char> input = makeInput(type, n, blockSize, Fill::kNormal);
            const std::size_t where = 53; // block 3
            if (type == DType::kFloat32) {
                std::memcpy(input.data() + where * 4, &bad, 4);
            } else {
                const std::uint16_t h = type == DType::kFloat16 ? tensor::floatToFp16(bad) : tensor::floatToBf16(bad);
                std::memcpy(input.data() + where * 2, &h, 2);
            }
            std::vector<std::uint8_t> codesOut;
            std::vector<float> scalesOut;
            const std::size_t refBad = referenceQuantize(input.data(), type, n, n, 8, blockSize, codesOut, scalesOut);
            bool threw = false;
            std::string message;
            try {
                quantizeWith(Simd::kAuto, input.data(), type, n, n, 8, blockSize, codesOut, scalesOut);
            } catch (const mixz::Exception& error) {
                threw = true;
                message = error.what();
            }
            CHECK(threw && refBad == 3 && message.find("block 3 ") != std::string::npos,
                  "%s non-finite: threw %d, HD block %zu, message %s", tensor::dtypeName(type), threw, refBad,
                  message.c_str());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// AdamW / Adam

bool sameOrBothNaN(float a, float b) { return sameBits32(a, b) || (std::isnan(a) && std::isnan(b)); }

float randomEdge(std::mt19937_64& r, float scale) {
    const float edges[] = {0.0f, -0.0f, 1e-45f, -1e-40f, 1e-30f, 3e38f, -3e38f, 1.0f, -1.0f, 65504.0f};
    switch (r() % 8) {
        case 0:
            return edges[r() % 10];
        case 1:
            return std::ldexp(static_cast<float>(static_cast<std::int32_t>(r() % 2000001) - 1000000) * 1e-6f,
                              static_cast<int>(r() % 60) - 30);
        default: {
            std::normal_distribution<float> normal(0.0f, scale);
            return normal(r);
        }
    }
}

void testAdam() {
    int steps = 0;
    for (int trial = 0; trial < 400; ++trial) {
        mixz::optim::AdamOptions o;
        o.beta1 = trial % 5 == 0 ? 0.0 : 0.8 + 0.19 * static_cast<double>(rng() % 1000) / 1000.0;
        o.beta2 = trial % 7 == 0 ? 0.5 : 0.99 + 0.0099 * static_cast<double>(rng() % 1000) / 1000.0;
        o.eps = trial % 3 == 0 ? 1e-8 : trial % 3 == 1 ? 1e-6 : 0.0;
        o.weightDecay = trial % 4 == 0 ? 0.0 : 0.01 * static_cast<double>(1 + rng() % 10);
        o.decoupledWeightDecay = trial % 2 == 0;
        const double lr = 1e-5 * static_cast<double>(1 + rng() % 1000);
        const std::uint64_t step = 1 + rng() % 2000;
        const double combined = std::ldexp(1.0, static_cast<int>(rng() % 33)) * (trial % 6 == 0 ? 1.37 : 1.0);
        const auto c = mixz::optim::adamCoefficients(o, lr, step, combined);
        const std::size_t n = 1 + rng() % 777;
        std::vector<float> g(n), p(n), m(n), v(n);
        for (std::size_t j = 0; j < n; ++j) {
            g[j] = randomEdge(rng, static_cast<float>(combined) * 0.02f);
            if (trial % 50 == 3 && j % 97 == 5) {
                g[j] = j % 2 == 0 ? std::numeric_limits<float>::infinity() : std::numeric_limits<float>::quiet_NaN();
            }
            p[j] = randomEdge(rng, 0.05f);
            m[j] = randomEdge(rng, 1e-3f);
            v[j] = std::fabs(randomEdge(rng, 1e-6f));
        }
        std::vector<float> hp = p, hm = m, hv = v;
        mixz::optim::adamUpdate(c, g.data(), p.data(), m.data(), v.data(), n);
        int bad = 0;
        for (std::size_t j = 0; j < n; ++j) {
            mixz::optim::adamUpdateElement(c, g[j], hp[j], hm[j], hv[j]);
            bad += !(sameOrBothNaN(hp[j], p[j]) && sameOrBothNaN(hm[j], m[j]) && sameOrBothNaN(hv[j], v[j]));
        }
        ++steps;
        CHECK(bad == 0, "trial %d (decoupled %d, n %zu): %d elements differ", trial, o.decoupledWeightDecay, n, bad);
    }
    std::printf("  adam: %d steps bit for bit\n", steps);
}

void testSumOfSquares() {
    for (const std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{5}, std::size_t{1000}, std::size_t{100003}}) {
        std::vector<float> x(n);
        for (float& value : x) value = randomEdge(rng, 3.0f);
        double hd = 0;
        for (const float value : x) hd += mixz::optim::squareOf(value);
        const double cpu = mixz::optim::sumOfSquares(x.data(), n);
        CHECK(std::memcmp(&hd, &cpu, sizeof hd) == 0, "sum of squares n %zu: %.17g vs %.17g", n, hd, cpu);
        if (n > 0) {
            x[n / 2] = std::numeric_limits<float>::infinity();
            CHECK(!std::isfinite(mixz::optim::sumOfSquares(x.data(), n)), "inf makes the sum non-finite");
            x[n / 2] = std::numeric_limits<float>::quiet_NaN();
            CHECK(std::isnan(mixz::optim::sumOfSquares(x.data(), n)), "NaN makes the sum NaN");
        }
    }
    CHECK(std::isfinite(mixz::optim::squareOf(3e38f)) && mixz::optim::squareOf(-3.0f) == 9.0,
          "a float's square is exact and finite in double");
}

} // namespace

int main() {
    std::printf("host_device_test: CPU kernels dispatched: %s\n", tensor::simdName(tensor::resolveSimd(Simd::kAuto)));
    testHalfToFloat();
    testFloatToHalf();
    testHalfToHalf();
    testQuantize();
    testDequantizeAnyCodes();
    testNonFinite();
    testAdam();
    testSumOfSquares();
    if (failures != 0) {
        std::fprintf(stderr, "host_device_test: %d of %lld checks failed\n", failures, checks);
        return 1;
    }
    std::printf("host_device_test: all %lld checks passed\n", checks);
    return 0;
}
