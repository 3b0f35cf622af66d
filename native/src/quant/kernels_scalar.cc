// Portable block kernels: the reference the AVX2 kernels must match bit for bit.
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
        for (std::size_t i = 0; i < n; ++i) largest = std::max(largest, tensor::floatBits(in[i]) & 0x7FFFFFFFu);
    } else {
        const auto* in = static_cast<const std::uint16_t*>(input);
        for (std::size_t i = 0; i < n; ++i) largest = std::max<std::uint32_t>(largest, in[i] & 0x7FFFu);
    }
    return largest;
}

template <DType Type>
float valueOf(const void* input, std::size_t i) {
    if constexpr (Type == DType::kFloat16) {
        return tensor::fp16ToFloat(static_cast<const std::uint16_t*>(input)[i]);
    } else if constexpr (Type == DType::kBFloat16) {
        return tensor::bf16ToFloat(static_cast<const std::uint16_t*>(input)[i]);
    } else {
        return static_cast<const float*>(input)[i];
    }
}

template <DType Type>
void quantizeValues(const void* input, std::size_t n, float scale, int bits, std::uint8_t* out) {
    if (bits == 8) {
        for (std::size_t i = 0; i < n; ++i) {
            const int q = quantizeValue(valueOf<Type>(input, i), scale, 8);
            out[i] = static_cast<std::uint8_t>(static_cast<std::int8_t>(q));
        }
        return;
    }
    std::size_t i = 0;
    for (; i + 2 <= n; i += 2) {
        const int even = quantizeValue(valueOf<Type>(input, i), scale, 4);
        const int odd = quantizeValue(valueOf<Type>(input, i + 1), scale, 4);
        out[i / 2] = packInt4(even, odd);
    }
    if (i < n) out[i / 2] = packInt4(quantizeValue(valueOf<Type>(input, i), scale, 4), 0);
}

template <DType Type>
void storeValue(void* output, std::size_t i, float value) {
    if constexpr (Type == DType::kFloat16) {
        static_cast<std::uint16_t*>(output)[i] = tensor::floatToFp16(value);
    } else if constexpr (Type == DType::kBFloat16) {
        static_cast<std::uint16_t*>(output)[i] = tensor::floatToBf16(value);
    } else {
        static_cast<float*>(output)[i] = value;
    }
}

template <DType Type>
void dequantizeValues(const std::uint8_t* input, int bits, std::size_t first, std::size_t n, float s, void* output) {
    if (bits == 8) {
        for (std::size_t i = first; i < first + n; ++i) {
            storeValue<Type>(output, i, static_cast<float>(static_cast<std::int8_t>(input[i])) * s);
        }
        return;
    }
    for (std::size_t i = first; i < first + n; ++i) {
        const int q = (i % 2 == 0) ? int4High(input[i / 2]) : int4Low(input[i / 2]);
        storeValue<Type>(output, i, static_cast<float>(q) * s);
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
        job.scales[block] = 1.0f / scale;
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
