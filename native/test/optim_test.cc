// Tests of mixz/optim/adamw.h and mixz/zero/partition_layout.h without Node: the element-wise
// AdamW/Adam update equals, bit for bit, the reference loop the engine's step ran before it moved
// into mixz::optim (torch.optim.AdamW / Adam with weight_decay as L2); the bias correction and the
// loss-scaler arithmetic (overflow, unscale, clipping factor); the partition layout's arithmetic.
//
// Build and run from the repository root:
//   g++ -std=c++17 -O2 -Wall -Wextra -pthread -Inative/include -o /tmp/mixz-optim-test
//       native/test/optim_test.cc native/src/optim/adamw.cc native/src/zero/partition_layout.cc
//       native/src/quant/*.cc native/src/tensor/*.cc native/src/common/error.cc
//       native/src/common/thread_pool.cc
//
// (one command line).
//   /tmp/mixz-optim-test
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "mixz/optim/adamw.h"
#include "mixz/quant/block_quant.h"
#include "mixz/zero/partition_layout.h"

namespace {

int failures = 0;

#define CHECK(condition, ...)                                                      \
    do {                                                                           \
        if (!(condition)) {                                                        \
            std::fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #condition); \
            std::fprintf(stderr, __VA_ARGS__);                                     \
            std::fprintf(stderr, "\n");                                            \
            ++failures;                                                            \
        }                                                                          \
    } while (false)

bool sameBits(float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; }

// The engine's step loop as it was written inline (the reference).
void referenceStep(const mixz::optim::AdamOptions& o, double lr, std::uint64_t steps, double combined, const float* grad, float* p,
                   float* m, float* v, std::size_t n) {
    const double t = static_cast<double>(steps);
    const float stepSize = static_cast<float>(lr / (1.0 - std::pow(o.beta1, t)));
    const float invSqrtBc2 = static_cast<float>(1.0 / std::sqrt(1.0 - std::pow(o.beta2, t)));
    const float b1 = static_cast<float>(o.beta1), b2 = static_cast<float>(o.beta2);
    const float eps = static_cast<float>(o.eps);
    const float decay = static_cast<float>(1.0 - lr * o.weightDecay);
    const float l2 = static_cast<float>(o.weightDecay);
    const float invCombined = static_cast<float>(1.0 / combined);
    for (std::size_t j = 0; j < n; ++j) {
        float gj = grad[j] * invCombined;
        if (!o.decoupledWeightDecay) gj += l2 * p[j];
        m[j] = b1 * m[j] + (1.0f - b1) * gj;
        v[j] = b2 * v[j] + (1.0f - b2) * gj * gj;
        const float denom = std::sqrt(v[j]) * invSqrtBc2 + eps;
        float pj = p[j];
        if (o.decoupledWeightDecay) pj *= decay;
        p[j] = pj - stepSize * m[j] / denom;
    }
}

void testAdamMatchesReference() {
    std::mt19937 random(7);
    std::normal_distribution<float> normal(0.0f, 0.02f);
    const std::size_t n = 1031;
    for (const bool decoupled : {true, false}) {
        mixz::optim::AdamOptions o;
        o.beta1 = 0.9;
        o.beta2 = 0.999;
        o.eps = 1e-8;
        o.weightDecay = 0.01;
        o.decoupledWeightDecay = decoupled;
        std::vector<float> p(n), m(n, 0.0f), v(n, 0.0f), grad(n);
        for (float& x : p) x = normal(random);
        std::vector<float> rp = p, rm = m, rv = v;
        for (std::uint64_t step = 1; step <= 5; ++step) {
            for (float& g : grad) g = normal(random) * 1024.0f;
            const double combined = 1024.0 * (step == 3 ? 1.7 : 1.0);
            const auto c = mixz::optim::adamCoefficients(o, 0.001 * static_cast<double>(step), step, combined);
            mixz::optim::adamUpdate(c, grad.data(), p.data(), m.data(), v.data(), n);
            referenceStep(o, 0.001 * static_cast<double>(step), step, combined, grad.data(), rp.data(), rm.data(), rv.data(), n);
            for (std::size_t j = 0; j < n; ++j) {
                CHECK(sameBits(p[j], rp[j]) && sameBits(m[j], rm[j]) && sameBits(v[j], rv[j]), "decoupled %d step %llu element %zu",
                      decoupled, static_cast<unsigned long long>(step), j);
            }
        }
    }
}

void testGradientScaling() {
    using mixz::optim::gradientScaling;
    // Squared norm 16 of gradients scaled by 8: norm 4 / 8 = 0.5.
    auto s = gradientScaling(16.0f, 8.0, 0.0);
    CHECK(s.finite && s.gradNorm == 0.5 && s.combined == 8.0, "no clipping: norm %g combined %g", s.gradNorm, s.combined);
    // Clipping at 0.25: factor (0.5 + 1e-6) / 0.25 > 1.
    s = gradientScaling(16.0f, 8.0, 0.25);
    CHECK(s.finite && s.combined == 8.0 * ((0.5 + 1e-6) / 0.25), "clipping: combined %g", s.combined);
    // Clipping above the norm changes nothing.
    s = gradientScaling(16.0f, 8.0, 1.0);
    CHECK(s.combined == 8.0, "clip above the norm: combined %g", s.combined);
    // Overflow: not finite, norm -1, no clipping factor.
    s = gradientScaling(std::numeric_limits<float>::infinity(), 8.0, 0.25);
    CHECK(!s.finite && s.gradNorm == -1 && s.combined == 8.0, "inf: finite %d norm %g", s.finite, s.gradNorm);
    s = gradientScaling(std::numeric_limits<float>::quiet_NaN(), 1.0, 0.0);
    CHECK(!s.finite && s.gradNorm == -1, "nan");
    const float values[3] = {1.0f, -2.0f, 3.0f};
    CHECK(mixz::optim::sumOfSquares(values, 3) == 14.0, "sum of squares");
}

void testBiasCorrection() {
    mixz::optim::AdamOptions o;
    o.beta1 = 0.9;
    o.beta2 = 0.999;
    o.eps = 1e-8;
    const auto c = mixz::optim::adamCoefficients(o, 0.1, 1, 2.0);
    CHECK(c.stepSize == static_cast<float>(0.1 / (1.0 - 0.9)), "step size %g", c.stepSize);
    CHECK(c.invSqrtBias2 == static_cast<float>(1.0 / std::sqrt(1.0 - 0.999)), "bias 2 %g", c.invSqrtBias2);
    CHECK(c.gradScale == 0.5f && c.decay == 1.0f, "grad scale %g decay %g", c.gradScale, c.decay);
}

void testLayout() {
    // Three parameters over 4 members, blocks of 8: parts ceil(n/4).
    const mixz::zero::Layout layout = mixz::zero::makeLayout({10, 3, 33}, 4, 8);
    CHECK(layout.part == (std::vector<std::size_t>{3, 1, 9}), "parts");
    CHECK(layout.off == (std::vector<std::size_t>{0, 3, 4}) && layout.elements == 13, "offsets");
    CHECK(layout.qoff == (std::vector<std::size_t>{0, 3, 4}), "code offsets");
    CHECK(layout.soff == (std::vector<std::size_t>{0, 1, 2}) && layout.scaleCount == 4, "scales: %zu", layout.scaleCount);
    CHECK(layout.scaleBase == 16, "scale base %zu", layout.scaleBase);
    CHECK(layout.bytes(true, 2) == 16 + 4 * sizeof(float) && layout.bytes(false, 2) == 26, "bytes");
    CHECK(mixz::zero::partitionSize(0, 4) == 0 && mixz::zero::partitionSize(9, 4) == 3, "partition size");
}

} // namespace

int main() {
    testAdamMatchesReference();
    testGradientScaling();
    testBiasCorrection();
    testLayout();
    if (failures != 0) {
        std::fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    std::printf("optim_test: all checks passed\n");
    return 0;
}
