// NOT YET RUN ON A GPU: written and compiled (nvcc, sm_80/sm_90) without a device; the device
// test native/test/cuda/quant_device_test.cu has not been run on real hardware yet.
//
// The optimizer step's device kernels on fp32 master partitions (mixz/optim/adamw.h on the CPU):
//
//   launchAdamUpdate     AdamW / Adam on n elements, in place: every element through
//                        mixz/optim/adam_element.h's adamUpdateElement, the function the CPU's
//                        optim::adamUpdate calls, so param, expAvg and expAvgSq are the CPU's bit
//                        for bit (that header says why nvcc's FMA contraction cannot change it).
//   launchSumOfSquares   Σ x² in double (optim::sumOfSquares's terms, mixz/optim/adam_element.h's
//                        squareOf): the partition's share of the squared gradient norm, and so the
//                        loss scaler's overflow check: the sum is non-finite (inf or NaN) when any
//                        input is, and finite otherwise (a float's square cannot overflow a double,
//                        nor can 2^56 of them); optim::gradientScaling then decides on the host from
//                        the all-reduced value. Deterministic: each thread sums a fixed set of
//                        elements in index order, blocks reduce in a fixed tree, a second kernel
//                        adds the per-block sums in a fixed tree; the grid depends on n only (not
//                        on the device), no float atomics. Equal to the CPU's sequential sum within
//                        double rounding (relative ~1e-16 · log n for sums of positive terms).
//
// Pointers are device memory; launchers enqueue on `stream` without synchronizing, and report
// launch errors through MIXZ_CUDA_LAUNCH_CHECK (cuda/device_context.h).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

#include "cuda/device_context.h"
#include "mixz/optim/adam_element.h"

namespace mixz::cuda {

// param, expAvg, expAvgSq updated in place from grad (n elements each, not overlapping). 16-byte
// aligned arrays take a float4 path; any alignment works.
void launchAdamUpdate(const optim::AdamStepCoefficients& coefficients, const float* grad, float* param, float* expAvg,
                      float* expAvgSq, std::size_t n, cudaStream_t stream);

// The scratch launchSumOfSquares needs: this many doubles of device memory.
inline constexpr std::size_t kSumOfSquaresPartials = 1024;

// *result (device memory, one double) = Σ values[i]² over n values (0 for n = 0). `partials` is
// scratch of kSumOfSquaresPartials doubles, in use until the second kernel has run on `stream`.
void launchSumOfSquares(const float* values, std::size_t n, double* partials, double* result, cudaStream_t stream);

} // namespace mixz::cuda
