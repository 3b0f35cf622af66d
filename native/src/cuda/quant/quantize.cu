// NOT YET RUN ON A GPU (see quant_kernels.h).
//
// Block quantization on the device (launchBlockQuantize). One CTA of 256 threads handles
// 256 / G quantization blocks with G = min(256, blockSize / 8) threads each (G is a power of two,
// so a group never straddles a warp unless it spans whole warps): the group takes the integer
// maximum of its block's magnitude patterns (exact and order-free, so no reduction-order
// question), computes the scale with the CPU's own function, writes the multiplier, then writes
// the codes. The input is read twice (magnitudes, then values); the second read mostly hits the
// cache. That is acceptable here: quantization is off the hot path that dequantization is on (it
// runs once per frozen partition, or once per qwZ gather on the sender), so plain per-element
// loads and byte stores are kept for simplicity over vectorized ones.
#include <cuda_runtime.h>

#include <algorithm>

#include "cuda/device_context.h"
#include "cuda/quant/quant_kernels.h"
#include "mixz/common/error.h"
#include "mixz/quant/block_codes.h"
#include "mixz/quant/block_quant.h"

namespace mixz::cuda {
namespace {

using tensor::DType;
namespace codes = quant::codes;

constexpr int kThreads = 256;

template <DType Type>
__device__ __forceinline__ std::uint32_t magnitudeAt(const void* input, std::size_t i) {
    if constexpr (Type == DType::kFloat32) {
        return codes::magnitudeBits(__ldg(static_cast<const float*>(input) + i));
    } else {
        return codes::magnitudeBits(static_cast<std::uint16_t>(__ldg(static_cast<const unsigned short*>(input) + i)));
    }
}

// The value of element i, 0 for padding (i ≥ elements): padding quantizes as zeros.
template <DType Type>
__device__ __forceinline__ float valueAt(const void* input, std::size_t i, std::size_t elements) {
    return i < elements ? codes::loadAsFloat<Type>(input, i) : 0.0f;
}

template <DType Type, int Bits>
__global__ void __launch_bounds__(kThreads) quantizeKernel(const void* __restrict__ input, std::size_t elements,
                                                           std::size_t padded, std::size_t blockSize, unsigned group,
                                                           std::size_t blocks, std::uint8_t* __restrict__ out,
                                                           float* __restrict__ scales,
                                                           unsigned long long* __restrict__ firstBad) {
    __shared__ std::uint32_t warpMax[kThreads / 32];
    const unsigned groupsPerCta = kThreads / group;
    const unsigned groupId = threadIdx.x / group;
    const unsigned lane = threadIdx.x % group;
    const std::size_t ctaCount = (blocks + groupsPerCta - 1) / groupsPerCta;
    for (std::size_t cta = blockIdx.x; cta < ctaCount; cta += gridDim.x) {
        const std::size_t block = cta * groupsPerCta + groupId;
        const bool active = block < blocks;
        const std::size_t start = block * blockSize;
        const std::size_t end = active ? (padded - start < blockSize ? padded : start + blockSize) : start;
        const std::size_t realEnd = end < elements ? end : (start < elements ? elements : start);

        std::uint32_t largest = 0;
        for (std::size_t i = start + lane; i < realEnd; i += group) largest = max(largest, magnitudeAt<Type>(input, i));
        // The group's maximum: shuffles within a warp, then across the group's warps.
        const unsigned width = group < 32 ? group : 32;
        for (unsigned offset = width / 2; offset > 0; offset /= 2) {
            largest = max(largest, __shfl_xor_sync(0xFFFFFFFFu, largest, offset));
        }
        if (group > 32) {
            const unsigned warp = threadIdx.x / 32;
            if (threadIdx.x % 32 == 0) warpMax[warp] = largest;
            __syncthreads();
            const unsigned firstWarp = groupId * (group / 32);
            largest = 0;
            for (unsigned w = 0; w < group / 32; ++w) largest = max(largest, warpMax[firstWarp + w]);
            __syncthreads(); // warpMax is rewritten by the next iteration
        }
        if (!active) continue;

        const float scale = codes::blockScale(codes::magnitudeToFloat(largest, Type), Bits);
        if (lane == 0) {
            scales[block] = codes::dequantMultiplier(scale);
            if (firstBad != nullptr && largest >= codes::infinityMagnitude(Type)) {
                atomicMin(firstBad, static_cast<unsigned long long>(block));
            }
        }
        if constexpr (Bits == 8) {
            for (std::size_t i = start + lane; i < end; i += group) {
                out[i] = codes::int8Byte(codes::quantizeValue(valueAt<Type>(input, i, elements), scale, 8));
            }
        } else {
            // Byte j holds elements 2j and 2j + 1. Blocks start at even elements, so a byte never
            // straddles two blocks; an odd `padded` leaves the last low nibble 0 (the value 0's code).
            for (std::size_t j = start / 2 + lane; j < (end + 1) / 2; j += group) {
                const int even = codes::quantizeValue(valueAt<Type>(input, 2 * j, elements), scale, 4);
                const int odd = codes::quantizeValue(valueAt<Type>(input, 2 * j + 1, elements), scale, 4);
                out[j] = codes::packInt4(even, odd);
            }
        }
    }
}

int multiprocessors() {
    int device = 0;
    MIXZ_CUDA_CHECK(cudaGetDevice(&device));
    int count = 0;
    MIXZ_CUDA_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device));
    return count > 0 ? count : 1;
}

template <DType Type>
void launchTyped(const void* input, std::size_t elements, std::size_t padded, int bits, std::size_t blockSize,
                 std::uint8_t* out, float* scales, unsigned long long* firstBad, cudaStream_t stream) {
    const unsigned group = static_cast<unsigned>(std::min<std::size_t>(kThreads, blockSize / 8));
    const std::size_t blocks = quant::blockCount(padded, blockSize);
    const std::size_t ctas = (blocks + kThreads / group - 1) / (kThreads / group);
    // A grid-stride loop over CTAs: 8 resident CTAs of 256 threads fill an SM's 2048 threads.
    const unsigned grid = static_cast<unsigned>(std::min<std::size_t>(ctas, static_cast<std::size_t>(multiprocessors()) * 8));
    if (bits == 8) {
        quantizeKernel<Type, 8><<<grid, kThreads, 0, stream>>>(input, elements, padded, blockSize, group, blocks, out,
                                                               scales, firstBad);
    } else {
        quantizeKernel<Type, 4><<<grid, kThreads, 0, stream>>>(input, elements, padded, blockSize, group, blocks, out,
                                                               scales, firstBad);
    }
    MIXZ_CUDA_LAUNCH_CHECK("quantizeKernel");
}

} // namespace

void launchBlockQuantize(const void* input, DType inputType, std::size_t elements, std::size_t paddedElements,
                         int bits, std::size_t blockSize, std::uint8_t* codes, float* scales,
                         unsigned long long* firstBadBlock, cudaStream_t stream) {
    constexpr const char* what = "cuda quantize";
    if (!tensor::isFloatingPoint(inputType)) {
        MIXZ_THROW(InvalidArgument, what, ": input type must be fp32, fp16 or bf16, got ", tensor::dtypeName(inputType));
    }
    if (!quant::isValidBits(bits)) MIXZ_THROW(InvalidArgument, what, ": bits must be 8 or 4, got ", bits);
    if (!quant::isValidBlockSize(blockSize)) {
        MIXZ_THROW(InvalidArgument, what, ": block size must be a power of two in [", quant::kMinBlockSize, ", ",
                   quant::kMaxBlockSize, "], got ", blockSize);
    }
    if (paddedElements < elements) {
        MIXZ_THROW(InvalidArgument, what, ": padded size ", paddedElements, " is smaller than the ", elements,
                   " input elements");
    }
    if (firstBadBlock != nullptr) {
        MIXZ_CUDA_CHECK(cudaMemsetAsync(firstBadBlock, 0xFF, sizeof(unsigned long long), stream));
    }
    if (paddedElements == 0) return;
    if ((elements > 0 && input == nullptr) || codes == nullptr || scales == nullptr) {
        MIXZ_THROW(InvalidArgument, what, ": input, codes and scales must not be null");
    }
    switch (inputType) {
        case DType::kFloat32:
            return launchTyped<DType::kFloat32>(input, elements, paddedElements, bits, blockSize, codes, scales,
                                                firstBadBlock, stream);
        case DType::kFloat16:
            return launchTyped<DType::kFloat16>(input, elements, paddedElements, bits, blockSize, codes, scales,
                                                firstBadBlock, stream);
        default:
            return launchTyped<DType::kBFloat16>(input, elements, paddedElements, bits, blockSize, codes, scales,
                                                 firstBadBlock, stream);
    }
}

} // namespace mixz::cuda
