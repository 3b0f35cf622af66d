// Portable block kernels: the reference the AVX2 kernels must match bit for bit. Their element
// arithmetic, loads and stores are mixz/quant/block_codes.h's MIXZ_HD functions, the same code the
// CUDA kernels run.
#include <algorithm>

#include "kernels.h"
#include "mixz/common/error.h"

namespace mixz::quant::detail {
namespace {

using tensor::DType;

std::uint32_t magnitudeScalar(const void* input, DType type, std::size_t n) {
    std::uint32_t largest = 0;
    if (type == DType::kFloat32) {
        const auto* in = static_cast<const float*>(input);
        for (std::size_t i = 0; i < n; ++i) largest = std::max(largest, codes::magnitudeBits(in[i]));
    } else {
        const auto* in = static_cast<const std::uint16_t*>(input);
        for (std::size_t i = 0; i < n; ++i) largest = std::max(largest, codes::magnitudeBits(in[i]));
    }
    return largest;
}

template <DType Type>
void quantizeValues(const void* input, std::size_t n, float scale, int bits, std::uint8_t* out) {
    if (bits == 8) {
        for (std::size_t i = 0; i < n; ++i) {
            const int q = quantizeValue(codes::loadAsFloat<Type>(input, i), scale, 8);
            out[i] = codes::int8Byte(q);
        }
        return;
    }
    std::size_t i = 0;
    for (; i + 2 <= n; i += 2) {
        const int even = quantizeValue(codes::loadAsFloat<Type>(input, i), scale, 4);
        const int odd = quantizeValue(codes::loadAsFloat<Type>(input, i + 1), scale, 4);
        out[i / 2] = packInt4(even, odd);
    }
    if (i < n) out[i / 2] = packInt4(quantizeValue(codes::loadAsFloat<Type>(input, i), scale, 4), 0);
}

template <DType Type>
void dequantizeValues(const std::uint8_t* input, int bits, std::size_t first, std::size_t n, float s, void* output) {
    if (bits == 8) {
        for (std::size_t i = first; i < first + n; ++i) {
            codes::storeFromFloat<Type>(output, i, codes::dequantizeValue(codes::int8Code(input[i]), s));
        }
        return;
    }
    for (std::size_t i = first; i < first + n; ++i) {
        const int q = (i % 2 == 0) ? int4High(input[i / 2]) : int4Low(input[i / 2]);
        codes::storeFromFloat<Type>(output, i, codes::dequantizeValue(q, s));
    }
}

} // namespace

void quantizeValuesScalar(const void* input, DType type, std::size_t n, float scale, int bits, std::uint8_t* out) {
    switch (type) {
        case DType::kFloat16:
            return quantizeValues<DType::kFloat16>(input, n, scale, bits, out);
        case DType::kBFloat16:
            return quantizeValues<DType::kBFloat16>(input, n, scale, bits, out);
        default:
            return quantizeValues<DType::kFloat32>(input, n, scale, bits, out);
    }
}

void dequantizeValuesScalar(const std::uint8_t* input, int bits, std::size_t first, std::size_t n, float s,
                            void* output, DType outputType) {
    switch (outputType) {
        case DType::kFloat16:
            return dequantizeValues<DType::kFloat16>(input, bits, first, n, s, output);
        case DType::kBFloat16:
            return dequantizeValues<DType::kBFloat16>(input, bits, first, n, s, output);
        default:
            return dequantizeValues<DType::kFloat32>(input, bits, first, n, s, output);
    }
}

std::size_t quantizeBlocksScalar(const QuantizeJob& job, std::size_t first, std::size_t last) {
    const std::size_t elementSize = static_cast<std::size_t>(tensor::bitsPerElement(job.inputType) / 8);
    const std::uint32_t infinity = infinityMagnitude(job.inputType);
    for (std::size_t block = first; block < last; ++block) {
        const BlockExtent extent = blockExtent(job, block);
        const void* in = static_cast<const unsigned char*>(job.input) + extent.start * elementSize;
        const std::uint32_t magnitude = magnitudeScalar(in, job.inputType, extent.real);
        if (magnitude >= infinity) return block;
        const float scale = blockScale(magnitudeToFloat(magnitude, job.inputType), job.bits);
        job.scales[block] = dequantMultiplier(scale);
        std::uint8_t* out = job.output + (job.bits == 8 ? extent.start : extent.start / 2);
        quantizeValuesScalar(in, job.inputType, extent.real, scale, job.bits, out);
        zeroPadding(job, extent);
    }
    return kNoBadBlock;
}

void dequantizeScalar(const DequantizeRun& run) {
    for (std::size_t start = 0, block = 0; start < run.elements; start += run.blockSize, ++block) {
        const std::size_t n = std::min(run.blockSize, run.elements - start);
        dequantizeValuesScalar(run.input, run.bits, start, n, run.scales[block], run.output, run.outputType);
    }
}

} // namespace mixz::quant::detail
