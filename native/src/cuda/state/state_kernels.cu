// The gradient accumulation of the ZeRO state on the device (state_kernels.h). Not yet run on a
// GPU. The add is __fadd_rn (never contracted with anything), and the 16-bit conversions are the
// integer forms of mixz/tensor/half_bits.h, so results equal the CPU backend's bit for bit.
#include "cuda/state/state_kernels.h"

#include <algorithm>
#include <cstdint>

#include "cuda/device_context.h"
#include "mixz/common/error.h"
#include "mixz/tensor/half_bits.h"

namespace mixz::cuda {
namespace {

constexpr int kThreads = 256;

template <tensor::DType Type>
__global__ void accumulateKernel(void* grad, const float* __restrict__ values, std::size_t n) {
    const std::size_t stride = static_cast<std::size_t>(gridDim.x) * blockDim.x;
    for (std::size_t j = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x; j < n; j += stride) {
        if constexpr (Type == tensor::DType::kFloat32) {
            float* g = static_cast<float*>(grad);
            g[j] = __fadd_rn(g[j], values[j]);
        } else if constexpr (Type == tensor::DType::kFloat16) {
            std::uint16_t* g = static_cast<std::uint16_t*>(grad);
            g[j] = tensor::floatToFp16(__fadd_rn(tensor::fp16ToFloat(g[j]), values[j]));
        } else {
            std::uint16_t* g = static_cast<std::uint16_t*>(grad);
            g[j] = tensor::floatToBf16(__fadd_rn(tensor::bf16ToFloat(g[j]), values[j]));
        }
    }
}

unsigned blocksFor(std::size_t n) {
    // Grid-stride loops: enough blocks to fill any current GPU, never more than the work.
    const std::size_t wanted = (n + kThreads - 1) / kThreads;
    return static_cast<unsigned>(std::max<std::size_t>(1, std::min<std::size_t>(wanted, 132 * 8)));
}

} // namespace

void launchAccumulate(void* grad, tensor::DType gradType, const float* values, std::size_t n, cudaStream_t stream) {
    if (n == 0) return;
    const unsigned blocks = blocksFor(n);
    switch (gradType) {
        case tensor::DType::kFloat32:
            accumulateKernel<tensor::DType::kFloat32><<<blocks, kThreads, 0, stream>>>(grad, values, n);
            break;
        case tensor::DType::kFloat16:
            accumulateKernel<tensor::DType::kFloat16><<<blocks, kThreads, 0, stream>>>(grad, values, n);
            break;
        case tensor::DType::kBFloat16:
            accumulateKernel<tensor::DType::kBFloat16><<<blocks, kThreads, 0, stream>>>(grad, values, n);
            break;
        default:
            MIXZ_THROW(InvalidArgument, "accumulate: gradients are fp32, fp16 or bf16");
    }
    MIXZ_CUDA_LAUNCH_CHECK("accumulateKernel");
}

} // namespace mixz::cuda
