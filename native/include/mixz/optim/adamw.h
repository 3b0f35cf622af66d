// mixz::optim: the optimizer arithmetic of a step, on plain arrays: no engine, partition or
// communicator types, so the same functions can run over any partition layout. The per-element
// update is a MIXZ_HD function (mixz/optim/adam_element.h) that the CUDA kernel
// (src/cuda/optim/optim_kernels.h) runs too.
//
//   gradientScaling   the loss-scaler arithmetic: the overflow check (a non-finite global norm)
//                     and the one factor that unscales and clips the gradients. The loss-scale
//                     *policy* (when to grow or shrink the scale) stays in TypeScript.
//   adamCoefficients  one step's AdamW/Adam constants with bias correction (torch.optim.AdamW
//                     and torch.optim.Adam with weight_decay as L2), computed once per step.
//   adamUpdate        the element-wise update of parameters and moments.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "mixz/optim/adam_element.h"

namespace mixz::optim {

// Hyperparameters of the optimizer section. No defaults here: the descriptor from TypeScript
// (whose JSON schema owns DeepSpeed's defaults) fills every field.
struct AdamOptions {
    double beta1 = 0;
    double beta2 = 0;
    double eps = 0;
    double weightDecay = 0;
    bool decoupledWeightDecay = false; // true: AdamW; false: Adam with L2 added to the gradient
};

// Squares of n values summed in double (the partition's share of the squared gradient norm).
double sumOfSquares(const float* values, std::size_t n);

struct GradientScaling {
    bool finite = true;      // the global squared norm is finite (false: overflow)
    double gradNorm = 0;     // of the unscaled gradients; -1 when not finite
    double combined = 1;     // the gradients are divided by this: loss scale × clipping factor
};

// From the all-reduced squared norm of the scaled gradients (the gradients hold loss·lossScale):
// the norm of the unscaled gradients and the factor that unscales them and, with clipping > 0,
// clips them to that norm as DeepSpeed does ((norm + 1e-6) / clipping when above 1).
GradientScaling gradientScaling(float totalSquares, double lossScale, double clipping);

// AdamStepCoefficients (one step's constants, rounded to float once) and adamUpdateElement (the
// per-element update, MIXZ_HD so the CUDA kernel runs the same code) are in
// mixz/optim/adam_element.h, included above.

// `step` counts from 1 (the step being applied).
AdamStepCoefficients adamCoefficients(const AdamOptions& options, double lr, std::uint64_t step, double combined);

// n elements (vectorizable): param, expAvg and expAvgSq updated in place from grad.
void adamUpdate(const AdamStepCoefficients& c, const float* grad, float* param, float* expAvg, float* expAvgSq,
                std::size_t n);

} // namespace mixz::optim
