// NOT YET RUN ON A GPU (see quant_kernels.h).
//
// fp32 ↔ fp16 / bf16 conversions on the device (launchConvert), with mixz/tensor/half_bits.h's
// integer conversions, the CPU's scalar code, so the bits (NaN payloads included) are the CPU's.
// Memory-bound: a thread converts units of 8 values (a 16-byte access on the 16-bit side, two on
// the fp32 side) over a grid-stride loop; unaligned buffers and the last values go one by one.
#include <cuda_runtime.h>

#include <algorithm>

#include "cuda/device_context.h"
#include "cuda/quant/quant_kernels.h"
#include "mixz/common/error.h"
#include "mixz/quant/block_codes.h"

namespace mixz::cuda {
namespace {

using tensor::DType;
namespace codes = quant::codes;

constexpr int kThreads = 256;
constexpr int kUnit = 8;

// 8 values of `Type` at unit u, as float32, and back.
template <DType Type>
__device__ __forceinline__ void loadUnit(const void* __restrict__ input, std::size_t u, float (&v)[kUnit]) {
    if constexpr (Type == DType::kFloat32) {
        const float4* in = static_cast<const float4*>(input) + 2 * u;
        const float4 a = __ldg(in);
        const float4 b = __ldg(in + 1);
        v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
    } else {
        const uint4 raw = __ldg(static_cast<const uint4*>(input) + u);
        const std::uint32_t w[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
        for (int k = 0; k < kUnit; ++k) {
            const auto h = static_cast<std::uint16_t>(w[k / 2] >> (16 * (k % 2)));
            v[k] = Type == DType::kFloat16 ? tensor::fp16ToFloat(h) : tensor::bf16ToFloat(h);
        }
    }
}

template <DType Type>
__device__ __forceinline__ void storeUnit(void* __restrict__ output, std::size_t u, const float (&v)[kUnit]) {
    if constexpr (Type == DType::kFloat32) {
        float4* out = static_cast<float4*>(output) + 2 * u;
        __stcs(out, make_float4(v[0], v[1], v[2], v[3]));
        __stcs(out + 1, make_float4(v[4], v[5], v[6], v[7]));
    } else {
        std::uint32_t w[4];
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            const std::uint32_t lo = Type == DType::kFloat16 ? tensor::floatToFp16(v[2 * k]) : tensor::floatToBf16(v[2 * k]);
            const std::uint32_t hi =
                Type == DType::kFloat16 ? tensor::floatToFp16(v[2 * k + 1]) : tensor::floatToBf16(v[2 * k + 1]);
            w[k] = lo | (hi << 16);
        }
        __stcs(static_cast<uint4*>(output) + u, make_uint4(w[0], w[1], w[2], w[3]));
    }
}

template <DType In, DType Out>
__device__ __forceinline__ void convertElement(const void* __restrict__ input, void* __restrict__ output, std::size_t i) {
    codes::storeFromFloat<Out>(output, i, codes::loadAsFloat<In>(input, i));
}

template <DType In, DType Out>
__global__ void __launch_bounds__(kThreads) convertVectorKernel(const void* __restrict__ input,
                                                                void* __restrict__ output, std::size_t elements) {
    const std::size_t units = elements / kUnit;
    const std::size_t stride = static_cast<std::size_t>(gridDim.x) * kThreads;
    const std::size_t id = static_cast<std::size_t>(blockIdx.x) * kThreads + threadIdx.x;
    for (std::size_t u = id; u < units; u += stride) {
        float v[kUnit];
        loadUnit<In>(input, u, v);
        storeUnit<Out>(output, u, v);
    }
    const std::size_t tail = units * kUnit + id;
    if (tail < elements) convertElement<In, Out>(input, output, tail);
}

template <DType In, DType Out>
__global__ void __launch_bounds__(kThreads) convertElementKernel(const void* __restrict__ input,
                                                                 void* __restrict__ output, std::size_t elements) {
    const std::size_t stride = static_cast<std::size_t>(gridDim.x) * kThreads;
    for (std::size_t i = static_cast<std::size_t>(blockIdx.x) * kThreads + threadIdx.x; i < elements; i += stride) {
        convertElement<In, Out>(input, output, i);
    }
}

int multiprocessors() {
    int device = 0;
    MIXZ_CUDA_CHECK(cudaGetDevice(&device));
    int count = 0;
    MIXZ_CUDA_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device));
    return count > 0 ? count : 1;
}

template <DType In, DType Out>
void launchPair(const void* input, void* output, std::size_t elements, cudaStream_t stream) {
    const std::size_t fullGrid = static_cast<std::size_t>(multiprocessors()) * (2048 / kThreads);
    const bool vector = reinterpret_cast<std::uintptr_t>(input) % 16 == 0 && reinterpret_cast<std::uintptr_t>(output) % 16 == 0;
    const std::size_t work = vector ? std::max<std::size_t>(elements / kUnit, 1) : elements;
    const auto grid = static_cast<unsigned>(std::min((work + kThreads - 1) / kThreads, fullGrid));
    if (vector) {
        convertVectorKernel<In, Out><<<grid, kThreads, 0, stream>>>(input, output, elements);
    } else {
        convertElementKernel<In, Out><<<grid, kThreads, 0, stream>>>(input, output, elements);
    }
    MIXZ_CUDA_LAUNCH_CHECK("convertKernel");
}

template <DType In>
void launchFrom(const void* input, void* output, DType outputType, std::size_t elements, cudaStream_t stream) {
    switch (outputType) {
        case DType::kFloat32:
            return launchPair<In, DType::kFloat32>(input, output, elements, stream);
        case DType::kFloat16:
            return launchPair<In, DType::kFloat16>(input, output, elements, stream);
        default:
            return launchPair<In, DType::kBFloat16>(input, output, elements, stream);
    }
}

} // namespace

void launchConvert(const void* input, DType inputType, void* output, DType outputType, std::size_t elements,
                   cudaStream_t stream) {
    if (!tensor::isFloatingPoint(inputType) || !tensor::isFloatingPoint(outputType)) {
        MIXZ_THROW(InvalidArgument, "cuda convert: types must be fp32, fp16 or bf16, got ", tensor::dtypeName(inputType),
                   " → ", tensor::dtypeName(outputType));
    }
    if (elements == 0) return;
    if (input == nullptr || output == nullptr) {
        MIXZ_THROW(InvalidArgument, "cuda convert: input and output must not be null for ", elements, " elements");
    }
    if (inputType == outputType && input == output) return; // tensor::convert: a no-op
    if (inputType == DType::kFloat32 && outputType == DType::kFloat32) {
        MIXZ_CUDA_CHECK(cudaMemcpyAsync(output, input, elements * sizeof(float), cudaMemcpyDeviceToDevice, stream));
        return;
    }
    // fp16 → fp16 and bf16 → bf16 go through float32 like the CPU's (which quiets signalling NaNs
    // on the way back), so they are not plain copies.
    switch (inputType) {
        case DType::kFloat32:
            return launchFrom<DType::kFloat32>(input, output, outputType, elements, stream);
        case DType::kFloat16:
            return launchFrom<DType::kFloat16>(input, output, outputType, elements, stream);
        default:
            return launchFrom<DType::kBFloat16>(input, output, outputType, elements, stream);
    }
}

} // namespace mixz::cuda
