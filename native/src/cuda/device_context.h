// What the CUDA backend's kernels get from the backend (nvcc-compiled code only): the compute
// stream, cuBLAS bound to it, the GEMM precision, and the device allocator for caches and
// scratch. Errors from the CUDA runtime and cuBLAS become mixz exceptions here, in one place:
// an out-of-memory or a launch failure is an IoError (the rank stops, the launcher reports it),
// while a misuse of the API by mixz (invalid value, invalid handle) is an InvariantError.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

#include "mixz/common/error.h"
#include "mixz/cudalib/cublas_api.h"

namespace mixz::cuda {

// A caching allocator over cudaMalloc (no managed memory): freed blocks are kept by size and
// reused, so steady-state steps never call cudaMalloc/cudaFree (which synchronize the device).
// Thread-safe. allocate(0) returns a block of one byte class; free(nullptr) does nothing.
class DeviceAllocator {
public:
    explicit DeviceAllocator(int device);
    ~DeviceAllocator(); // frees every block (cudaFree); nothing may be in use any more
    DeviceAllocator(const DeviceAllocator&) = delete;
    DeviceAllocator& operator=(const DeviceAllocator&) = delete;

    // Throws IoError("cuda:<device> out of memory: … bytes requested, … held by mixz, … free")
    // after releasing the cached blocks once and retrying.
    void* allocate(std::size_t bytes);
    void free(void* block);
    // Bytes obtained from cudaMalloc and still held (in use or cached), and the most in use at once.
    std::size_t bytesHeld() const;
    std::size_t bytesInUse() const;
    std::size_t bytesPeak() const;
    // Returns the cached (unused) blocks to the driver.
    void trim();

private:
    struct Impl;
    Impl* impl_;
};

struct DeviceContext {
    int device = 0;
    cudaStream_t stream = nullptr;           // the compute stream: every kernel and GEMM of a call runs here
    void* blas = nullptr;                    // cublasHandle_t bound to `stream`, with its workspace set
    const cudalib::CublasApi* api = nullptr; // cuBLAS's functions
    int gemmCompute = cudalib::cublas::kCompute32F; // kCompute32F, kCompute32FFast16BF or kCompute32FFast16F
    DeviceAllocator* allocator = nullptr;
    int multiprocessors = 0;
};

// Throws for a CUDA runtime error (see above); `what` names the call.
void throwCudaError(cudaError_t status, const char* what, const char* file, int line);
void throwCublasError(const cudalib::CublasApi& api, int status, const char* what, const char* file, int line);

} // namespace mixz::cuda

#define MIXZ_CUDA_CHECK(expr)                                                             \
    do {                                                                                  \
        const cudaError_t mixzCudaStatus_ = (expr);                                       \
        if (mixzCudaStatus_ != cudaSuccess) ::mixz::cuda::throwCudaError(mixzCudaStatus_, #expr, __FILE__, __LINE__); \
    } while (false)

// After a kernel launch: the launch's own error (bad configuration), not the kernel's result.
#define MIXZ_CUDA_LAUNCH_CHECK(name) MIXZ_CUDA_CHECK(cudaGetLastError())

#define MIXZ_CUBLAS_CHECK(ctx, expr)                                                       \
    do {                                                                                  \
        const int mixzCublasStatus_ = (expr);                                             \
        if (mixzCublasStatus_ != ::mixz::cudalib::cublas::kStatusSuccess)                  \
            ::mixz::cuda::throwCublasError(*(ctx).api, mixzCublasStatus_, #expr, __FILE__, __LINE__); \
    } while (false)
