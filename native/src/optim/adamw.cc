#include "mixz/optim/adamw.h"

#include <cmath>

namespace mixz::optim {

double sumOfSquares(const float* values, std::size_t n) {
    double local = 0;
    for (std::size_t j = 0; j < n; ++j) local += squareOf(values[j]);
    return local;
}

GradientScaling gradientScaling(float totalSquares, double lossScale, double clipping) {
    GradientScaling scaling;
    scaling.finite = std::isfinite(totalSquares);
    const double scaledNorm = scaling.finite ? std::sqrt(static_cast<double>(totalSquares)) : -1;
    scaling.gradNorm = scaling.finite ? scaledNorm / lossScale : -1;
    scaling.combined = lossScale;
    if (clipping > 0 && scaling.finite) {
        const double clip = ((scaledNorm / lossScale) + 1e-6) / clipping;
        if (clip > 1) scaling.combined = lossScale * clip;
    }
    return scaling;
}

AdamStepCoefficients adamCoefficients(const AdamOptions& o, double lr, std::uint64_t step, double combined) {
    const double t = static_cast<double>(step);
    AdamStepCoefficients c;
    c.stepSize = static_cast<float>(lr / (1.0 - std::pow(o.beta1, t)));
    c.invSqrtBias2 = static_cast<float>(1.0 / std::sqrt(1.0 - std::pow(o.beta2, t)));
    c.beta1 = static_cast<float>(o.beta1);
    c.beta2 = static_cast<float>(o.beta2);
    c.eps = static_cast<float>(o.eps);
    c.decay = static_cast<float>(1.0 - lr * o.weightDecay);
    c.l2 = static_cast<float>(o.weightDecay);
    c.gradScale = static_cast<float>(1.0 / combined);
    c.decoupled = o.decoupledWeightDecay;
    return c;
}

// Every element through the shared MIXZ_HD function (mixz/optim/adam_element.h).
void adamUpdate(const AdamStepCoefficients& c, const float* grad, float* param, float* expAvg, float* expAvgSq,
                std::size_t n) {
    for (std::size_t j = 0; j < n; ++j) adamUpdateElement(c, grad[j], param[j], expAvg[j], expAvgSq[j]);
}

} // namespace mixz::optim
