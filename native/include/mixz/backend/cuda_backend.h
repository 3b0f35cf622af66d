// The CUDA compute backend (native/src/cuda, compiled by nvcc when the build finds it): device
// buffers from a caching allocator over cudaMalloc, the model's kernels on a compute stream with
// cuBLAS GEMMs (bf16/fp16 tensor-core products with fp32 accumulation for 16-bit models, fp32
// GEMMs for fp32 models), and a communication thread with its own stream for the copies the ZeRO
// logic makes to and from host memory (collectives stay on the host transports, staged through
// pinned memory).
//
// EXPERIMENTAL: written and compiled without a GPU; the device checks (scripts/device-check)
// have not yet passed on real hardware.
#pragma once

#include <memory>

#include "mixz/backend/compute_backend.h"
#include "mixz/tensor/dtype.h"

namespace mixz::backend {

struct CudaBackendOptions {
    int deviceOrdinal = 0;                       // among the visible devices
    tensor::DType dtype = tensor::DType::kFloat32; // the model dtype: picks the GEMM precision
};

// Throws IoError when the device cannot be used (no driver, no such device, cuBLAS not found:
// the message names what was searched).
std::unique_ptr<ComputeBackend> makeCudaBackend(const CudaBackendOptions& options);

} // namespace mixz::backend
