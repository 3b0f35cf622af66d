// NOT YET RUN ON A GPU (see quant_kernels.h).
//
// Dequantization on the device (launchBlockDequantize): y = float(q) · s[block], stored as
// fp32/fp16/bf16, with mixz/quant/block_codes.h's product and mixz/tensor/half_bits.h's rounding
// (the CPU's scalar code), so the bytes are the CPU's.
//
// It is memory-bound (int8 → bf16 moves 3 bytes per element, int8 → fp32 5), so it is written for
// bandwidth: every thread turns a unit of 16 codes (16 bytes of int8, 8 of int4) into 16 values
// with one read-only 16- or 8-byte load and 16-byte stores (2 for 16-bit outputs, 4 for fp32), and
// two units per loop iteration so that two loads are in flight before the first use; a
// grid-stride loop over a grid of 8 CTAs of 256 threads per SM (the 2048 resident threads of an
// sm_80/sm_90 SM). The output is written with streaming stores (st.global.cs): it is far larger
// than L2 in the cases that matter and is read by the next kernel, not by this one. A unit's 16
// elements share one scale when blocks hold ≥ 16 elements; blocks of 8 take two.
//
// Buffers not aligned for the vector accesses (codes to 16 bytes for int8 / 8 for int4, output to
// 16 bytes) take a per-element path: the same values, slower.
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
constexpr int kUnit = 16; // elements per thread and unit

template <DType Out>
__device__ __forceinline__ std::uint32_t halfOf(float y) {
    if constexpr (Out == DType::kFloat16) {
        return tensor::floatToFp16(y);
    } else {
        return tensor::floatToBf16(y);
    }
}

// The 16 values of one unit, codes q[0..16) (already decoded) and the scales of its two halves.
template <DType Out>
__device__ __forceinline__ void storeUnit(void* output, std::size_t unit, const int (&q)[kUnit], float sLow,
                                          float sHigh) {
    if constexpr (Out == DType::kFloat32) {
        float4* out = static_cast<float4*>(output) + unit * 4;
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            const float s = k < 2 ? sLow : sHigh;
            __stcs(out + k, make_float4(codes::dequantizeValue(q[4 * k], s), codes::dequantizeValue(q[4 * k + 1], s),
                                        codes::dequantizeValue(q[4 * k + 2], s), codes::dequantizeValue(q[4 * k + 3], s)));
        }
    } else {
        uint4* out = static_cast<uint4*>(output) + unit * 2;
#pragma unroll
        for (int k = 0; k < 2; ++k) {
            const float s = k == 0 ? sLow : sHigh;
            std::uint32_t w[4];
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                // Little-endian: the lower 16 bits hold the earlier element.
                w[j] = halfOf<Out>(codes::dequantizeValue(q[8 * k + 2 * j], s)) |
                       (halfOf<Out>(codes::dequantizeValue(q[8 * k + 2 * j + 1], s)) << 16);
            }
            __stcs(out + k, make_uint4(w[0], w[1], w[2], w[3]));
        }
    }
}

// Codes of a unit from its raw bytes: int8, byte k is element k; int4, byte k holds elements 2k
// (high nibble) and 2k + 1 (low nibble).
__device__ __forceinline__ void decodeInt8(const uint4& raw, int (&q)[kUnit]) {
    const std::uint32_t words[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
    for (int k = 0; k < kUnit; ++k) q[k] = codes::int8Code(static_cast<std::uint8_t>(words[k / 4] >> (8 * (k % 4))));
}

__device__ __forceinline__ void decodeInt4(const uint2& raw, int (&q)[kUnit]) {
    const std::uint32_t words[2] = {raw.x, raw.y};
#pragma unroll
    for (int k = 0; k < kUnit / 2; ++k) {
        const auto byte = static_cast<std::uint8_t>(words[k / 4] >> (8 * (k % 4)));
        q[2 * k] = codes::int4High(byte);
        q[2 * k + 1] = codes::int4Low(byte);
    }
}

template <int Bits>
struct UnitLoad;
template <>
struct UnitLoad<8> {
    using Raw = uint4;
    static __device__ __forceinline__ Raw load(const std::uint8_t* codes, std::size_t unit) {
        return __ldg(reinterpret_cast<const uint4*>(codes) + unit);
    }
    static __device__ __forceinline__ void decode(const Raw& raw, int (&q)[kUnit]) { decodeInt8(raw, q); }
};
template <>
struct UnitLoad<4> {
    using Raw = uint2;
    static __device__ __forceinline__ Raw load(const std::uint8_t* codes, std::size_t unit) {
        return __ldg(reinterpret_cast<const uint2*>(codes) + unit);
    }
    static __device__ __forceinline__ void decode(const Raw& raw, int (&q)[kUnit]) { decodeInt4(raw, q); }
};

template <DType Out, int Bits>
__device__ __forceinline__ void unitValues(const typename UnitLoad<Bits>::Raw& raw, const float* __restrict__ scales,
                                           unsigned shift, std::size_t unit, void* __restrict__ output) {
    int q[kUnit];
    UnitLoad<Bits>::decode(raw, q);
    const std::size_t first = unit * kUnit;
    const float sLow = __ldg(scales + (first >> shift));
    // Blocks of 8 (shift 3): the unit's second half is the next block. Otherwise the same scale.
    const float sHigh = shift == 3 ? __ldg(scales + ((first + 8) >> shift)) : sLow;
    storeUnit<Out>(output, unit, q, sLow, sHigh);
}

// One element (the tail, and unaligned buffers).
template <DType Out, int Bits>
__device__ __forceinline__ void elementValue(const std::uint8_t* __restrict__ codesIn, const float* __restrict__ scales,
                                             unsigned shift, std::size_t i, void* __restrict__ output) {
    int q;
    if constexpr (Bits == 8) {
        q = codes::int8Code(codesIn[i]);
    } else {
        const std::uint8_t byte = codesIn[i / 2];
        q = i % 2 == 0 ? codes::int4High(byte) : codes::int4Low(byte);
    }
    codes::storeFromFloat<Out>(output, i, codes::dequantizeValue(q, scales[i >> shift]));
}

template <DType Out, int Bits>
__global__ void __launch_bounds__(kThreads) dequantizeVectorKernel(const std::uint8_t* __restrict__ codesIn,
                                                                   const float* __restrict__ scales,
                                                                   std::size_t elements, unsigned shift,
                                                                   void* __restrict__ output) {
    const std::size_t units = elements / kUnit;
    const std::size_t stride = static_cast<std::size_t>(gridDim.x) * kThreads;
    std::size_t unit = static_cast<std::size_t>(blockIdx.x) * kThreads + threadIdx.x;
    // Two units per iteration, both loads issued before either is used.
    for (; unit + stride < units; unit += 2 * stride) {
        const auto a = UnitLoad<Bits>::load(codesIn, unit);
        const auto b = UnitLoad<Bits>::load(codesIn, unit + stride);
        unitValues<Out, Bits>(a, scales, shift, unit, output);
        unitValues<Out, Bits>(b, scales, shift, unit + stride, output);
    }
    if (unit < units) unitValues<Out, Bits>(UnitLoad<Bits>::load(codesIn, unit), scales, shift, unit, output);
    // The last elements % 16 values: one thread each.
    const std::size_t tail = units * kUnit + static_cast<std::size_t>(blockIdx.x) * kThreads + threadIdx.x;
    if (tail < elements) elementValue<Out, Bits>(codesIn, scales, shift, tail, output);
}

template <DType Out, int Bits>
__global__ void __launch_bounds__(kThreads) dequantizeElementKernel(const std::uint8_t* __restrict__ codesIn,
                                                                    const float* __restrict__ scales,
                                                                    std::size_t elements, unsigned shift,
                                                                    void* __restrict__ output) {
    const std::size_t stride = static_cast<std::size_t>(gridDim.x) * kThreads;
    for (std::size_t i = static_cast<std::size_t>(blockIdx.x) * kThreads + threadIdx.x; i < elements; i += stride) {
        elementValue<Out, Bits>(codesIn, scales, shift, i, output);
    }
}

int multiprocessors() {
    int device = 0;
    MIXZ_CUDA_CHECK(cudaGetDevice(&device));
    int count = 0;
    MIXZ_CUDA_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device));
    return count > 0 ? count : 1;
}

bool aligned(const void* p, std::size_t alignment) { return reinterpret_cast<std::uintptr_t>(p) % alignment == 0; }

template <DType Out, int Bits>
void launchTyped(const std::uint8_t* codesIn, const float* scales, std::size_t elements, unsigned shift, void* output,
                 cudaStream_t stream) {
    const std::size_t fullGrid = static_cast<std::size_t>(multiprocessors()) * (2048 / kThreads);
    const bool vector = aligned(codesIn, Bits == 8 ? 16 : 8) && aligned(output, 16);
    if (vector) {
        // Enough threads for every unit once (and, with the grid-stride loop, never more CTAs than
        // the device holds at once); at least one thread per tail element.
        const std::size_t units = elements / kUnit;
        const std::size_t needed = std::max<std::size_t>((units + kThreads - 1) / kThreads, 1);
        const auto grid = static_cast<unsigned>(std::min(needed, fullGrid));
        dequantizeVectorKernel<Out, Bits><<<grid, kThreads, 0, stream>>>(codesIn, scales, elements, shift, output);
    } else {
        const std::size_t needed = (elements + kThreads - 1) / kThreads;
        const auto grid = static_cast<unsigned>(std::min(needed, fullGrid));
        dequantizeElementKernel<Out, Bits><<<grid, kThreads, 0, stream>>>(codesIn, scales, elements, shift, output);
    }
    MIXZ_CUDA_LAUNCH_CHECK("dequantizeKernel");
}

template <DType Out>
void launchBits(const std::uint8_t* codesIn, int bits, const float* scales, std::size_t elements, unsigned shift,
                void* output, cudaStream_t stream) {
    if (bits == 8) {
        launchTyped<Out, 8>(codesIn, scales, elements, shift, output, stream);
    } else {
        launchTyped<Out, 4>(codesIn, scales, elements, shift, output, stream);
    }
}

} // namespace

void launchBlockDequantize(const std::uint8_t* codesIn, int bits, const float* scales, std::size_t elements,
                           std::size_t blockSize, void* output, DType outputType, cudaStream_t stream) {
    constexpr const char* what = "cuda dequantize";
    if (!quant::isValidBits(bits)) MIXZ_THROW(InvalidArgument, what, ": bits must be 8 or 4, got ", bits);
    if (!quant::isValidBlockSize(blockSize)) {
        MIXZ_THROW(InvalidArgument, what, ": block size must be a power of two in [", quant::kMinBlockSize, ", ",
                   quant::kMaxBlockSize, "], got ", blockSize);
    }
    if (!tensor::isFloatingPoint(outputType)) {
        MIXZ_THROW(InvalidArgument, what, ": output type must be fp32, fp16 or bf16, got ",
                   tensor::dtypeName(outputType));
    }
    if (elements == 0) return;
    if (codesIn == nullptr || scales == nullptr || output == nullptr) {
        MIXZ_THROW(InvalidArgument, what, ": codes, scales and output must not be null");
    }
    unsigned shift = 0;
    while ((std::size_t{1} << shift) < blockSize) ++shift;
    switch (outputType) {
        case DType::kFloat32:
            return launchBits<DType::kFloat32>(codesIn, bits, scales, elements, shift, output, stream);
        case DType::kFloat16:
            return launchBits<DType::kFloat16>(codesIn, bits, scales, elements, shift, output, stream);
        default:
            return launchBits<DType::kBFloat16>(codesIn, bits, scales, elements, shift, output, stream);
    }
}

} // namespace mixz::cuda
