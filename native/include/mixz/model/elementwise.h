// The element-wise arithmetic of the LLaMA kernels (mixz/model/llama.h), written once as MIXZ_HD
// functions so that the CPU engine (src/model: kernels.h, llama.cc, attention.cc) and the CUDA
// kernels (src/cuda/llama) compute each element with the same operations in the same order. The
// CPU engine calls exactly these functions, so native/test/model_elementwise_test.cc, which checks
// them on the CPU against independent formulas and the CPU engine's entry points, also checks the
// device's per-element arithmetic (given nvcc's -fmad=false, see mixz/common/host_device.h: a
// contracted a·b + c rounds once instead of twice and would differ in the last bit).
//
// What is *not* here: reductions (sums of squares, row maxima, softmax denominators, dot
// products). Their order of additions is each backend's own (the CPU's kLanes partial sums, a
// device block's tree), so the two backends agree to rounding there, not bit for bit; the
// functions below take a row's reduced values (inverse RMS, max, sum) as arguments.
//
// Every function is templated on the compute type T (float in the engine, double in the
// finite-difference tests) and written for T's own arithmetic: no silent promotion to double,
// except where the CPU computes in double on purpose (rotary frequencies, the loss).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "mixz/common/counter_random.h"
#include "mixz/common/host_device.h"

namespace mixz::model::elementwise {

// ---------------------------------------------------------------------------------------------
// e^x

// The bits of a float, and back (memcpy on the host, where it compiles to a register move; the
// intrinsics on the device, where memcpy of a local would go through local memory unoptimized).
MIXZ_HD std::uint32_t floatBits(float x) {
#if defined(__CUDA_ARCH__)
    return __float_as_uint(x);
#else
    std::uint32_t bits;
    std::memcpy(&bits, &x, sizeof bits);
    return bits;
#endif
}

MIXZ_HD float floatOfBits(std::uint32_t bits) {
#if defined(__CUDA_ARCH__)
    return __uint_as_float(bits);
#else
    float x;
    std::memcpy(&x, &bits, sizeof x);
    return x;
#endif
}

// e^x in float: a Cephes-style polynomial (relative error about 2e-7 on [-87, 88], inputs clamped
// there) without calls or branches, so that the CPU's loops over it vectorize and the device
// computes the very same value (its own expf differs in the last bit).
MIXZ_HD float expOf(float x) {
    x = x < -87.0f ? -87.0f : x; // NaN passes through both and stays NaN
    x = x > 88.0f ? 88.0f : x;
    // Round x·log2(e) to the nearest integer n with the 1.5·2²³ trick (exact under the default
    // rounding mode); its low mantissa bits then hold n.
    const float shifted = x * 1.44269504088896341f + 12582912.0f;
    const float n = shifted - 12582912.0f;
    const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    const std::uint32_t scaleBits = (floatBits(shifted) - 0x4B400000u + 127u) << 23;
    return p * floatOfBits(scaleBits);
}

// double: the library's exp (the double path is the finite-difference tests' reference, not a
// fast path; the device's exp(double) may differ from glibc's in the last bit).
MIXZ_HD double expOf(double x) {
    return std::exp(x);
}

// ---------------------------------------------------------------------------------------------
// SiLU and SwiGLU: act = silu(gate) ⊙ up, silu(g) = g · σ(g)

template <typename T>
MIXZ_HD T sigmoidOf(T g) {
    return T(1) / (T(1) + expOf(-g));
}

template <typename T>
MIXZ_HD T silu(T g) {
    return g * sigmoidOf(g);
}

// d silu / dg = σ(g)(1 + g(1 − σ(g))), given σ(g).
template <typename T>
MIXZ_HD T siluDerivative(T g, T sigmoid) {
    return sigmoid * (T(1) + g * (T(1) - sigmoid));
}

// One element of act: (g · σ(g)) · up.
template <typename T>
MIXZ_HD T swiglu(T gate, T up) {
    const T sigmoid = sigmoidOf(gate);
    return gate * sigmoid * up;
}

template <typename T>
struct SwigluGrad {
    T gate;
    T up;
};

// The backward of one element from dAct: dUp = dAct · g · σ(g), dGate = dAct · up · σ(g) · (1 +
// g(1 − σ(g))), each multiplied left to right.
template <typename T>
MIXZ_HD SwigluGrad<T> swigluBackward(T gate, T up, T dAct) {
    const T sigmoid = sigmoidOf(gate);
    SwigluGrad<T> grad;
    grad.up = dAct * gate * sigmoid;
    grad.gate = dAct * up * sigmoid * (T(1) + gate * (T(1) - sigmoid));
    return grad;
}

// ---------------------------------------------------------------------------------------------
// Rotary embedding (rotate_half: pairs (i, i + headDim/2))

// θ^(−2i/headDim), in double as the CPU's tables are built (then each cos/sin is rounded to T).
MIXZ_HD double ropeInverseFrequency(double theta, int i, int headDim) {
    return std::pow(theta, -2.0 * i / headDim);
}

// rope_scaling "linear": positions interpolated by `factor`, i.e. every frequency divided by it.
MIXZ_HD double ropeLinearFrequency(double inverseFrequency, double factor) {
    return inverseFrequency / factor;
}

// rope_scaling "llama3" applied to one unscaled inverse frequency, in double. With wavelength
// 2π / f and L = originalMaxPositions: wavelengths longer than L / lowFreqFactor (the frequencies
// the original context never saw a full turn of) are divided by `factor`; those shorter than
// L / highFreqFactor are kept; in between, s = (L / wavelength − lowFreqFactor) / (highFreqFactor −
// lowFreqFactor) blends the two, (1 − s) · f / factor + s · f, which is continuous at both ends.
MIXZ_HD double ropeLlama3Frequency(double inverseFrequency, double factor, double lowFreqFactor, double highFreqFactor,
                                   double originalMaxPositions) {
    const double kTwoPi = 6.283185307179586476925286766559;
    const double wavelength = kTwoPi / inverseFrequency;
    const double longest = originalMaxPositions / lowFreqFactor;
    const double shortest = originalMaxPositions / highFreqFactor;
    if (wavelength > longest) return inverseFrequency / factor;
    if (wavelength < shortest) return inverseFrequency;
    const double s = (originalMaxPositions / wavelength - lowFreqFactor) / (highFreqFactor - lowFreqFactor);
    return (1.0 - s) * inverseFrequency / factor + s * inverseFrequency;
}

// The angle of pair i at `position`: position · θ^(−2i/headDim), in double.
MIXZ_HD double ropeAngle(int position, double inverseFrequency) {
    return position * inverseFrequency;
}

template <typename T>
struct RopePair {
    T lo;
    T hi;
};

// The rotation of one pair (lo, hi) = (x[i], x[i + half]) by the angle whose cos and sin are
// given; inverse: the transposed rotation (the backward of the forward rotation).
template <typename T>
MIXZ_HD RopePair<T> ropeRotate(T lo, T hi, T cosine, T sine, bool inverse) {
    RopePair<T> out;
    if (!inverse) {
        out.lo = lo * cosine - hi * sine;
        out.hi = hi * cosine + lo * sine;
    } else {
        out.lo = lo * cosine + hi * sine;
        out.hi = hi * cosine - lo * sine;
    }
    return out;
}

// ---------------------------------------------------------------------------------------------
// RMSNorm, given a row's reductions: rstd = 1 / sqrt(mean(x²) + eps), y = w · (x · rstd)

template <typename T>
MIXZ_HD T rmsInverse(T sumOfSquares, int width, T eps) {
    return T(1) / std::sqrt(sumOfSquares / T(width) + eps);
}

template <typename T>
MIXZ_HD T rmsNormScale(T x, T w, T rstd) {
    return w * (x * rstd);
}

// The backward of one row: with g = dy ⊙ w, dx = rstd · (g − x · coefficient) where
// coefficient = Σ(dy ⊙ w ⊙ x) · rstd² / width. The term of the row's sum:
template <typename T>
MIXZ_HD T rmsNormBackwardTerm(T dy, T w, T x) {
    return dy * w * x;
}

template <typename T>
MIXZ_HD T rmsNormBackwardCoefficient(T sum, T rstd, int width) {
    return sum * rstd * rstd / T(width);
}

template <typename T>
MIXZ_HD T rmsNormInputGrad(T dy, T w, T x, T rstd, T coefficient) {
    return rstd * (dy * w - x * coefficient);
}

// With the residual stream's gradient added (the layer's h1 and x take both paths).
template <typename T>
MIXZ_HD T rmsNormInputGrad(T dy, T w, T x, T rstd, T coefficient, T residual) {
    return residual + rstd * (dy * w - x * coefficient);
}

// One row's term of the weight gradient Σ rows dy ⊙ x̂.
template <typename T>
MIXZ_HD T rmsNormWeightGradTerm(T dy, T x, T rstd) {
    return dy * (x * rstd);
}

// ---------------------------------------------------------------------------------------------
// LoRA dropout: element i of a linear's input [rows, in] (i = row · in + column) is kept when the
// high 32 bits of splitmix64(key + (i + 1) · golden), key = splitmix64(seed), reach the
// threshold p · 2³² (rounded up), and a kept element is scaled by 1 / (1 − p).

inline constexpr std::uint64_t kGolden = 0x9E3779B97F4A7C15ull;

MIXZ_HD std::uint64_t dropoutKey(std::uint64_t seed) {
    return splitmix64Finalize(seed);
}

// p · 2³² rounded up, saturated; for p > 0 (the host decides whether dropout is active).
MIXZ_HD std::uint32_t dropoutThreshold(double probability) {
    const double threshold = std::ceil(probability * 4294967296.0);
    return threshold >= 4294967295.0 ? 0xFFFFFFFFu : static_cast<std::uint32_t>(threshold);
}

MIXZ_HD bool dropoutKeeps(std::uint64_t key, std::uint32_t threshold, std::uint64_t index) {
    const std::uint64_t bits = splitmix64Finalize(key + (index + 1) * kGolden);
    return static_cast<std::uint32_t>(bits >> 32) >= threshold;
}

// 1 / (1 − p) in double, rounded to T once (the CPU's DropoutMask::apply).
template <typename T>
MIXZ_HD T dropoutScale(double probability) {
    return static_cast<T>(1.0 / (1.0 - probability));
}

template <typename T>
MIXZ_HD T dropoutApply(bool keep, T x, T scale) {
    return keep ? x * scale : T(0);
}

// ---------------------------------------------------------------------------------------------
// Softmax (attention rows and the head's cross-entropy), given a row's max and sum of exps

// e^(x − shift): the unnormalized probability.
template <typename T>
MIXZ_HD T expShifted(T x, T shift) {
    return expOf(x - shift);
}

// 1 / sum: the factor that normalizes a row of e^(x − max) (the CPU multiplies by it).
template <typename T>
MIXZ_HD T softmaxInverseSum(T sum) {
    return T(1) / sum;
}

template <typename T>
MIXZ_HD T softmaxNormalize(T expShiftedScore, T inverseSum) {
    return expShiftedScore * inverseSum;
}

// The attention softmax's backward of one element, with weighted = Σ P ⊙ dP over the row:
// dS = (P · (dP − weighted)) · scale, scale = 1 / sqrt(headDim).
template <typename T>
MIXZ_HD T softmaxBackward(T p, T dp, T weighted, T scale) {
    return p * (dp - weighted) * scale;
}

// 1 / sqrt(headDim): the attention's score scale.
template <typename T>
MIXZ_HD T attentionScale(int headDim) {
    return T(1) / std::sqrt(T(headDim));
}

// Cross-entropy of one row predicting `target` (its logit), given the row's largest logit and the
// sum of e^(logit − largest): largest + log(sum) − target, in double.
template <typename T>
MIXZ_HD double crossEntropyRowLoss(T largest, T sum, T target) {
    return static_cast<double>(largest) + std::log(static_cast<double>(sum)) - static_cast<double>(target);
}

// d(mean loss)/d(logit) of a counted row is (softmax − one-hot) / counted: each e^(logit −
// largest) times factor = share / sum (share = 1 / counted), and share subtracted at the label.
template <typename T>
MIXZ_HD T crossEntropyGradFactor(T share, T sum) {
    return share / sum;
}

template <typename T>
MIXZ_HD T crossEntropyGrad(T expShiftedLogit, T factor) {
    return expShiftedLogit * factor;
}

template <typename T>
MIXZ_HD T crossEntropyLabelGrad(T grad, T share) {
    return grad - share;
}

} // namespace mixz::model::elementwise
