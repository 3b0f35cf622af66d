#include "mixz/tensor/dtype.h"

#include <algorithm>
#include <cstring>
#include <functional>

#include "mixz/common/error.h"
#include "mixz/common/thread_pool.h"

#if defined(__x86_64__) || defined(__i386__)
#include "mixz/tensor/detail/avx2.h"
#define MIXZ_HAVE_AVX2_KERNELS 1
#endif

namespace mixz::tensor {

const char* dtypeName(DType dtype) noexcept {
    switch (dtype) {
        case DType::kFloat32:
            return "fp32";
        case DType::kFloat16:
            return "fp16";
        case DType::kBFloat16:
            return "bf16";
        case DType::kInt8:
            return "int8";
        case DType::kInt4:
            return "int4";
    }
    return "unknown";
}

std::optional<DType> parseDType(std::string_view name) noexcept {
    if (name == "fp32") return DType::kFloat32;
    if (name == "fp16") return DType::kFloat16;
    if (name == "bf16") return DType::kBFloat16;
    if (name == "int8") return DType::kInt8;
    if (name == "int4") return DType::kInt4;
    return std::nullopt;
}

int bitsPerElement(DType dtype) noexcept {
    switch (dtype) {
        case DType::kFloat32:
            return 32;
        case DType::kFloat16:
        case DType::kBFloat16:
            return 16;
        case DType::kInt8:
            return 8;
        case DType::kInt4:
            return 4;
    }
    return 0;
}

bool isFloatingPoint(DType dtype) noexcept {
    return dtype == DType::kFloat32 || dtype == DType::kFloat16 || dtype == DType::kBFloat16;
}

std::size_t storageBytes(DType dtype, std::size_t elements) noexcept {
    if (dtype == DType::kInt4) return elements / 2 + elements % 2;
    return elements * static_cast<std::size_t>(bitsPerElement(dtype) / 8);
}

namespace {

// Values per chunk of a conversion that goes through float32 (fp16 ↔ bf16), and per task.
constexpr std::size_t kStagingElements = 1024;
constexpr std::size_t kTaskElements = std::size_t{1} << 16;

void toFloatScalar(const void* input, DType type, float* output, std::size_t n) {
    switch (type) {
        case DType::kFloat32:
            std::copy_n(static_cast<const float*>(input), n, output);
            return;
        case DType::kFloat16: {
            const auto* in = static_cast<const std::uint16_t*>(input);
            for (std::size_t i = 0; i < n; ++i) output[i] = fp16ToFloat(in[i]);
            return;
        }
        case DType::kBFloat16: {
            const auto* in = static_cast<const std::uint16_t*>(input);
            for (std::size_t i = 0; i < n; ++i) output[i] = bf16ToFloat(in[i]);
            return;
        }
        default:
            MIXZ_ENFORCE(false, "not a floating-point type: ", dtypeName(type));
    }
}

void fromFloatScalar(const float* input, void* output, DType type, std::size_t n) {
    switch (type) {
        case DType::kFloat32:
            std::copy_n(input, n, static_cast<float*>(output));
            return;
        case DType::kFloat16: {
            auto* out = static_cast<std::uint16_t*>(output);
            for (std::size_t i = 0; i < n; ++i) out[i] = floatToFp16(input[i]);
            return;
        }
        case DType::kBFloat16: {
            auto* out = static_cast<std::uint16_t*>(output);
            for (std::size_t i = 0; i < n; ++i) out[i] = floatToBf16(input[i]);
            return;
        }
        default:
            MIXZ_ENFORCE(false, "not a floating-point type: ", dtypeName(type));
    }
}

#if MIXZ_HAVE_AVX2_KERNELS
MIXZ_AVX2 void toFloatAvx2(const void* input, DType type, float* output, std::size_t n) {
    std::size_t i = 0;
    const auto* in = static_cast<const std::uint16_t*>(input);
    if (type == DType::kFloat16) {
        for (; i + 8 <= n; i += 8) avx2::store8(output + i, avx2::load8Fp16(in + i));
    } else if (type == DType::kBFloat16) {
        for (; i + 8 <= n; i += 8) avx2::store8(output + i, avx2::load8Bf16(in + i));
    } else if (type != DType::kFloat32) {
        MIXZ_ENFORCE(false, "not a floating-point type: ", dtypeName(type));
    }
    if (type == DType::kFloat32) {
        toFloatScalar(input, type, output, n);
    } else {
        toFloatScalar(in + i, type, output + i, n - i);
    }
}

MIXZ_AVX2 void fromFloatAvx2(const float* input, void* output, DType type, std::size_t n) {
    std::size_t i = 0;
    auto* out = static_cast<std::uint16_t*>(output);
    if (type == DType::kFloat16) {
        for (; i + 8 <= n; i += 8) avx2::store8Fp16(out + i, avx2::load8(input + i));
    } else if (type == DType::kBFloat16) {
        for (; i + 8 <= n; i += 8) avx2::store8Bf16(out + i, avx2::load8(input + i));
    } else if (type != DType::kFloat32) {
        MIXZ_ENFORCE(false, "not a floating-point type: ", dtypeName(type));
    }
    if (type == DType::kFloat32) {
        fromFloatScalar(input, output, type, n);
    } else {
        fromFloatScalar(input + i, out + i, type, n - i);
    }
}
#endif

void convertRange(const ConvertOptions& options, bool avx2, std::size_t begin, std::size_t end) {
    const std::size_t inSize = static_cast<std::size_t>(bitsPerElement(options.inputType) / 8);
    const std::size_t outSize = static_cast<std::size_t>(bitsPerElement(options.outputType) / 8);
    const auto* in = static_cast<const unsigned char*>(options.input) + begin * inSize;
    auto* out = static_cast<unsigned char*>(options.output) + begin * outSize;
    const std::size_t n = end - begin;
    auto toFloat = [&](const void* src, float* dst, std::size_t count) {
#if MIXZ_HAVE_AVX2_KERNELS
        if (avx2) return toFloatAvx2(src, options.inputType, dst, count);
#endif
        toFloatScalar(src, options.inputType, dst, count);
    };
    auto fromFloat = [&](const float* src, void* dst, std::size_t count) {
#if MIXZ_HAVE_AVX2_KERNELS
        if (avx2) return fromFloatAvx2(src, dst, options.outputType, count);
#endif
        fromFloatScalar(src, dst, options.outputType, count);
    };
    if (options.outputType == DType::kFloat32) {
        toFloat(in, reinterpret_cast<float*>(out), n);
    } else if (options.inputType == DType::kFloat32) {
        fromFloat(reinterpret_cast<const float*>(in), out, n);
    } else {
        float staging[kStagingElements];
        for (std::size_t i = 0; i < n; i += kStagingElements) {
            const std::size_t count = std::min(kStagingElements, n - i);
            toFloat(in + i * inSize, staging, count);
            fromFloat(staging, out + i * outSize, count);
        }
    }
}

bool overlaps(const void* a, std::size_t aBytes, const void* b, std::size_t bBytes) {
    if (aBytes == 0 || bBytes == 0) return false;
    const auto x = reinterpret_cast<std::uintptr_t>(a);
    const auto y = reinterpret_cast<std::uintptr_t>(b);
    return x < y + bBytes && y < x + aBytes;
}

} // namespace

void convert(const ConvertOptions& options) {
    if (!isFloatingPoint(options.inputType) || !isFloatingPoint(options.outputType)) {
        MIXZ_THROW(InvalidArgument, "convert: types must be fp32, fp16 or bf16, got ", dtypeName(options.inputType),
                   " → ", dtypeName(options.outputType));
    }
    const Simd simd = resolveSimd(options.simd);
    const std::size_t n = options.elements;
    if (n == 0) return;
    if (options.input == nullptr || options.output == nullptr) {
        MIXZ_THROW(InvalidArgument, "convert: input and output must not be null for ", n, " elements");
    }
    if (n > (std::size_t{1} << 60)) MIXZ_THROW(InvalidArgument, "convert: ", n, " elements is too many");
    const std::size_t inBytes = storageBytes(options.inputType, n);
    const std::size_t outBytes = storageBytes(options.outputType, n);
    if (options.input == options.output && options.inputType == options.outputType) return;
    if (overlaps(options.input, inBytes, options.output, outBytes)) {
        MIXZ_THROW(InvalidArgument, "convert: input and output overlap");
    }
    const bool avx2 = simd == Simd::kAvx2;
    const std::size_t tasks = (n + kTaskElements - 1) / kTaskElements;
    const std::size_t threads = std::max<std::size_t>(options.threads, 1);
    ThreadPool::shared().parallelFor(tasks, threads, [&](std::size_t task) {
        const std::size_t begin = task * kTaskElements;
        convertRange(options, avx2, begin, std::min(n, begin + kTaskElements));
    });
}

void convertElements(const void* input, DType inputType, void* output, DType outputType, std::size_t elements) {
    if (elements == 0) return;
    if (inputType == outputType) {
        std::memmove(output, input, elements * (inputType == DType::kFloat32 ? 4 : 2));
        return;
    }
    ConvertOptions options;
    options.input = input;
    options.inputType = inputType;
    options.output = output;
    options.outputType = outputType;
    options.elements = elements;
    convert(options);
}

} // namespace mixz::tensor
