// Kernels of the ZeRO state arithmetic that the quant/ and optim/ kernels do not cover
// (not yet run on a GPU). Each launches on `stream` and returns without waiting; the backend
// synchronizes.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

#include "mixz/tensor/dtype.h"

namespace mixz::cuda {

// grad[j] += values[j] for n elements of gradType (fp32, fp16, bf16): 16-bit gradients are
// widened, added in fp32 and rounded once to nearest even, exactly as the CPU backend does.
void launchAccumulate(void* grad, tensor::DType gradType, const float* values, std::size_t n, cudaStream_t stream);

} // namespace mixz::cuda
