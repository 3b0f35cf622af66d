// The AdamW / Adam per-element update as a MIXZ_HD function: optim::adamUpdate (the CPU engine's
// step, src/optim/adamw.cc) calls it for every element, and so does the CUDA kernel on the fp32
// master partitions (src/cuda/optim), so both update with the same operations in the same order.
// native/test/host_device_test.cc checks it against optim::adamUpdate on the CPU; the device test
// (native/test/cuda/quant_device_test.cu) checks the kernel against the CPU at 0 ulp.
//
// Exactness on the device: each operation is an explicit round-to-nearest intrinsic under
// __CUDA_ARCH__ (__fmul_rn, __fadd_rn, __fsub_rn, __fdiv_rn, __fsqrt_rn). nvcc never contracts
// those into FMAs, and they stay correctly rounded whatever -fmad / -prec-div / -prec-sqrt the
// build uses (the build script leaves -fmad at its default, contraction on, so plain `a * b + c`
// could become one FMA and differ from the CPU in the last bit). This is chosen over -fmad=false
// for the file because it holds in any translation unit that includes the header, whatever its
// flags. Subnormals must not be flushed: no -ftz=true / --use_fast_math (nvcc's default is off).
// The host keeps plain C++ operators: g++ in ISO mode (-std=c++17) does not contract, and the
// expressions are exactly those of the loop this replaced (optim_test.cc's reference), so the CPU's code and results are unchanged.
#pragma once

#include "mixz/common/host_device.h"

#if !defined(__CUDA_ARCH__)
#include <cmath>
#endif

namespace mixz::optim {

// One step's constants, rounded to float once (optim::adamCoefficients computes them).
struct AdamStepCoefficients {
    float stepSize = 0;          // lr / (1 − β1^t)
    float invSqrtBias2 = 0;      // 1 / sqrt(1 − β2^t)
    float beta1 = 0;
    float beta2 = 0;
    float eps = 0;
    float decay = 1;             // 1 − lr·weightDecay (AdamW)
    float l2 = 0;                // weightDecay (Adam's L2)
    float gradScale = 1;         // 1 / GradientScaling::combined
    bool decoupled = true;
};

namespace element {

// IEEE single-precision operations, each rounded once to nearest even, on host and device alike.
MIXZ_HD float mul(float a, float b) {
#if defined(__CUDA_ARCH__)
    return __fmul_rn(a, b);
#else
    return a * b;
#endif
}
MIXZ_HD float add(float a, float b) {
#if defined(__CUDA_ARCH__)
    return __fadd_rn(a, b);
#else
    return a + b;
#endif
}
MIXZ_HD float sub(float a, float b) {
#if defined(__CUDA_ARCH__)
    return __fsub_rn(a, b);
#else
    return a - b;
#endif
}
MIXZ_HD float div(float a, float b) {
#if defined(__CUDA_ARCH__)
    return __fdiv_rn(a, b);
#else
    return a / b;
#endif
}
MIXZ_HD float sqrt(float a) {
#if defined(__CUDA_ARCH__)
    return __fsqrt_rn(a);
#else
    return std::sqrt(a);
#endif
}

} // namespace element

// One element: g is the raw (scaled) gradient; p, m, v are updated in place. The order of
// operations is the C++ evaluation order of
//   gj = g·gradScale (+ l2·p for Adam);  m = β1·m + (1 − β1)·gj;  v = β2·v + ((1 − β2)·gj)·gj;
//   denom = sqrt(v)·invSqrtBias2 + eps;  p = p·decay (AdamW) − (stepSize·m) / denom.
MIXZ_HD void adamUpdateElement(const AdamStepCoefficients& c, float g, float& p, float& m, float& v) {
    using namespace element;
    float gj = mul(g, c.gradScale);
    if (!c.decoupled) gj = add(gj, mul(c.l2, p));
    m = add(mul(c.beta1, m), mul(sub(1.0f, c.beta1), gj));
    v = add(mul(c.beta2, v), mul(mul(sub(1.0f, c.beta2), gj), gj));
    const float denom = add(mul(element::sqrt(v), c.invSqrtBias2), c.eps);
    float pj = p;
    if (c.decoupled) pj = mul(pj, c.decay);
    p = sub(pj, div(mul(c.stepSize, m), denom));
}

// One value's term of the squared gradient norm, in double (exact: a float's square fits a
// double's 53-bit significand). optim::sumOfSquares adds these in index order; the device's
// reduction adds the same terms in a fixed tree order, so the two agree to double rounding.
MIXZ_HD double squareOf(float x) {
    const double d = static_cast<double>(x);
#if defined(__CUDA_ARCH__)
    return __dmul_rn(d, d);
#else
    return d * d;
#endif
}

} // namespace mixz::optim
