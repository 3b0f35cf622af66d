// NOT YET RUN ON A GPU (see optim_kernels.h).
//
// AdamW / Adam and the sum of squares on the device. Both are memory-bound streams: float4
// accesses (16 bytes per thread and array) over grid-stride loops sized to the device (AdamW) or
// to n (the sum, whose reduction order must not depend on the device).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "cuda/device_context.h"
#include "cuda/optim/optim_kernels.h"
#include "mixz/common/error.h"
#include "mixz/optim/adam_element.h"

namespace mixz::cuda {
namespace {

constexpr int kThreads = 256;

bool aligned16(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }

int multiprocessors() {
    int device = 0;
    MIXZ_CUDA_CHECK(cudaGetDevice(&device));
    int count = 0;
    MIXZ_CUDA_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device));
    return count > 0 ? count : 1;
}

// The coefficients travel by value in the kernel's parameter space (a few floats).
template <bool Vector>
__global__ void __launch_bounds__(kThreads) adamKernel(optim::AdamStepCoefficients c, const float* __restrict__ grad,
                                                       float* __restrict__ param, float* __restrict__ expAvg,
                                                       float* __restrict__ expAvgSq, std::size_t n) {
    const std::size_t stride = static_cast<std::size_t>(gridDim.x) * kThreads;
    const std::size_t id = static_cast<std::size_t>(blockIdx.x) * kThreads + threadIdx.x;
    std::size_t scalarFrom = 0;
    if constexpr (Vector) {
        const std::size_t units = n / 4;
        for (std::size_t u = id; u < units; u += stride) {
            const float4 g = __ldg(reinterpret_cast<const float4*>(grad) + u);
            float4 p = reinterpret_cast<float4*>(param)[u];
            float4 m = reinterpret_cast<float4*>(expAvg)[u];
            float4 v = reinterpret_cast<float4*>(expAvgSq)[u];
            optim::adamUpdateElement(c, g.x, p.x, m.x, v.x);
            optim::adamUpdateElement(c, g.y, p.y, m.y, v.y);
            optim::adamUpdateElement(c, g.z, p.z, m.z, v.z);
            optim::adamUpdateElement(c, g.w, p.w, m.w, v.w);
            reinterpret_cast<float4*>(param)[u] = p;
            reinterpret_cast<float4*>(expAvg)[u] = m;
            reinterpret_cast<float4*>(expAvgSq)[u] = v;
        }
        scalarFrom = units * 4;
    }
    for (std::size_t i = scalarFrom + id; i < n; i += stride) {
        optim::adamUpdateElement(c, grad[i], param[i], expAvg[i], expAvgSq[i]);
    }
}

// Per-block sums: thread t of the grid adds the squares of the 4-element units t, t + T, t + 2T,
// … (T threads in all) in index order, plus, for t < n % 4, element 4·units + t; then the block
// adds its threads' sums in a fixed tree. The same order whether the loads are vector or scalar.
template <bool Vector>
__global__ void __launch_bounds__(kThreads) sumOfSquaresKernel(const float* __restrict__ values, std::size_t n,
                                                               double* __restrict__ partials) {
    __shared__ double sums[kThreads];
    const std::size_t stride = static_cast<std::size_t>(gridDim.x) * kThreads;
    const std::size_t id = static_cast<std::size_t>(blockIdx.x) * kThreads + threadIdx.x;
    const std::size_t units = n / 4;
    double sum = 0;
    for (std::size_t u = id; u < units; u += stride) {
        float4 x;
        if constexpr (Vector) {
            x = __ldg(reinterpret_cast<const float4*>(values) + u);
        } else {
            x = make_float4(values[4 * u], values[4 * u + 1], values[4 * u + 2], values[4 * u + 3]);
        }
        sum = __dadd_rn(sum, optim::squareOf(x.x));
        sum = __dadd_rn(sum, optim::squareOf(x.y));
        sum = __dadd_rn(sum, optim::squareOf(x.z));
        sum = __dadd_rn(sum, optim::squareOf(x.w));
    }
    if (id < n % 4) sum = __dadd_rn(sum, optim::squareOf(values[units * 4 + id]));
    sums[threadIdx.x] = sum;
    __syncthreads();
    for (int half = kThreads / 2; half > 0; half /= 2) {
        if (threadIdx.x < half) sums[threadIdx.x] = __dadd_rn(sums[threadIdx.x], sums[threadIdx.x + half]);
        __syncthreads();
    }
    if (threadIdx.x == 0) partials[blockIdx.x] = sums[0];
}

// One block: the per-block sums in a fixed tree.
__global__ void __launch_bounds__(kThreads) sumPartialsKernel(const double* __restrict__ partials, std::size_t count,
                                                              double* __restrict__ result) {
    __shared__ double sums[kThreads];
    double sum = 0;
    for (std::size_t i = threadIdx.x; i < count; i += kThreads) sum = __dadd_rn(sum, partials[i]);
    sums[threadIdx.x] = sum;
    __syncthreads();
    for (int half = kThreads / 2; half > 0; half /= 2) {
        if (threadIdx.x < half) sums[threadIdx.x] = __dadd_rn(sums[threadIdx.x], sums[threadIdx.x + half]);
        __syncthreads();
    }
    if (threadIdx.x == 0) *result = sums[0];
}

} // namespace

void launchAdamUpdate(const optim::AdamStepCoefficients& coefficients, const float* grad, float* param, float* expAvg,
                      float* expAvgSq, std::size_t n, cudaStream_t stream) {
    if (n == 0) return;
    if (grad == nullptr || param == nullptr || expAvg == nullptr || expAvgSq == nullptr) {
        MIXZ_THROW(InvalidArgument, "cuda adamUpdate: null array for ", n, " elements");
    }
    const bool vector = aligned16(grad) && aligned16(param) && aligned16(expAvg) && aligned16(expAvgSq);
    const std::size_t work = vector ? std::max<std::size_t>(n / 4, 1) : n;
    const std::size_t fullGrid = static_cast<std::size_t>(multiprocessors()) * (2048 / kThreads);
    const auto grid = static_cast<unsigned>(std::min((work + kThreads - 1) / kThreads, fullGrid));
    if (vector) {
        adamKernel<true><<<grid, kThreads, 0, stream>>>(coefficients, grad, param, expAvg, expAvgSq, n);
    } else {
        adamKernel<false><<<grid, kThreads, 0, stream>>>(coefficients, grad, param, expAvg, expAvgSq, n);
    }
    MIXZ_CUDA_LAUNCH_CHECK("adamKernel");
}

void launchSumOfSquares(const float* values, std::size_t n, double* partials, double* result, cudaStream_t stream) {
    if (result == nullptr || partials == nullptr || (n > 0 && values == nullptr)) {
        MIXZ_THROW(InvalidArgument, "cuda sumOfSquares: null pointer (values, partials or result)");
    }
    // The grid from n alone (so the order of additions is the same on every device): about 16
    // elements per thread, at most kSumOfSquaresPartials blocks.
    constexpr std::size_t perBlock = static_cast<std::size_t>(kThreads) * 16;
    const std::size_t blocks = n == 0 ? 0 : std::min(kSumOfSquaresPartials, (n + perBlock - 1) / perBlock);
    if (blocks > 0) {
        const auto grid = static_cast<unsigned>(blocks);
        if (aligned16(values)) {
            sumOfSquaresKernel<true><<<grid, kThreads, 0, stream>>>(values, n, partials);
        } else {
            sumOfSquaresKernel<false><<<grid, kThreads, 0, stream>>>(values, n, partials);
        }
        MIXZ_CUDA_LAUNCH_CHECK("sumOfSquaresKernel");
    }
    sumPartialsKernel<<<1, kThreads, 0, stream>>>(partials, blocks, result);
    MIXZ_CUDA_LAUNCH_CHECK("sumPartialsKernel");
}

} // namespace mixz::cuda
