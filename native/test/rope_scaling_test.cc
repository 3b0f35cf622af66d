// Core tests of the rotary scaling of mixz/model (LlamaDims.ropeScaling: Hugging Face's rope_scaling
// "linear" and "llama3"), without Node: model::ropeInverseFrequency — the one definition the CPU
// tables and the CUDA backend's host-built tables share — equals an independent formulation of each
// kind (the llama3 regions chosen from the frequency itself rather than the wavelength); the llama3
// blend is continuous at both region bounds; validate() refuses unusable scaling numbers; and the
// CPU decoder layer uses the scaled table (linear with factor 1 is plain RoPE bit for bit, another
// factor changes the output, and the per-thread table is rebuilt when the scaling changes).
//
// Build and run from the repository root:
//
//   g++ -std=c++17 -O1 -Wall -Wextra -pthread -Inative/include -o /tmp/mixz-rope-scaling-test
//       native/test/rope_scaling_test.cc native/src/model/*.cc native/src/common/error.cc
//       native/src/common/thread_pool.cc -lopenblas
//
// (one command line).
//   /tmp/mixz-rope-scaling-test
#include <cmath>
#include <cstdio>
#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

#include "mixz/common/error.h"
#include "mixz/model/llama.h"

using namespace mixz::model;

namespace {

int gFailures = 0;

void check(bool ok, const std::string& what) {
    if (!ok) {
        std::fprintf(stderr, "FAIL: %s\n", what.c_str());
        ++gFailures;
    }
}

bool close(double a, double b, double rel) {
    return std::fabs(a - b) <= rel * std::max(std::fabs(a), std::fabs(b));
}

const double kPi = 3.14159265358979323846;

// Plain RoPE written as exp(−(2i/d)·ln θ) rather than a power.
double plain(double theta, int i, int headDim) {
    return std::exp(-(2.0 * i / headDim) * std::log(theta));
}

// llama3 in the frequency domain: a wavelength 2π/f above L/low is a frequency below 2π·low/L, one
// below L/high a frequency above 2π·high/L; between them the blend weight of the unscaled frequency
// is (L·f/2π − low) / (high − low).
double llama3(double f, double factor, double low, double high, double L) {
    const double fLow = 2 * kPi * low / L;
    const double fHigh = 2 * kPi * high / L;
    if (f < fLow) return f / factor;
    if (f > fHigh) return f;
    const double w = (L * f / (2 * kPi) - low) / (high - low);
    return f * (w + (1 - w) / factor);
}

LlamaDims dims(int headDim, double theta) {
    LlamaDims d;
    d.vocab = 11;
    d.hidden = headDim * 2;
    d.layers = 1;
    d.heads = 2;
    d.kvHeads = 1;
    d.intermediate = 10;
    d.maxSeq = 12;
    d.ropeTheta = theta;
    d.rmsEps = 1e-6;
    return d;
}

void testFrequencies() {
    // LLaMA 3.1's numbers with head size 128 (every region occupied), and a small model whose few
    // frequencies fall one in each region (wavelengths ≈ 6, 63, 628, 6283 around 16 and 64).
    struct Case {
        int headDim;
        double theta, factor, low, high, L;
    };
    const Case cases[] = {{128, 500000.0, 8, 1, 4, 8192}, {8, 10000.0, 8, 1, 4, 64}, {16, 1000.0, 2.5, 0.5, 3, 100}};
    for (const Case& c : cases) {
        LlamaDims none = dims(c.headDim, c.theta);
        LlamaDims linear = none;
        linear.ropeScaling = RopeScaling::linear;
        linear.ropeFactor = c.factor;
        LlamaDims l3 = linear;
        l3.ropeScaling = RopeScaling::llama3;
        l3.ropeLowFreqFactor = c.low;
        l3.ropeHighFreqFactor = c.high;
        l3.ropeOriginalMaxSeq = c.L;
        validate(none);
        validate(linear);
        validate(l3);
        int kept = 0, scaled = 0, blended = 0;
        for (int i = 0; i < c.headDim / 2; ++i) {
            const double f = plain(c.theta, i, c.headDim);
            const std::string at = "headDim " + std::to_string(c.headDim) + " pair " + std::to_string(i);
            check(close(ropeInverseFrequency(none, i), f, 1e-13), "none " + at);
            check(close(ropeInverseFrequency(linear, i), f / c.factor, 1e-13), "linear " + at);
            const double expected = llama3(f, c.factor, c.low, c.high, c.L);
            check(close(ropeInverseFrequency(l3, i), expected, 1e-12), "llama3 " + at);
            if (expected == f) ++kept;
            else if (close(expected, f / c.factor, 1e-15)) ++scaled;
            else ++blended;
        }
        check(kept > 0 && scaled > 0 && blended > 0, "every llama3 region is exercised for headDim " + std::to_string(c.headDim));
    }
}

void testContinuity() {
    // At the two bounds the blend meets the neighbouring regions: f / factor at wavelength L/low,
    // f at L/high. Dims whose single frequency is placed just inside and outside each bound.
    const double factor = 8, low = 1, high = 4, L = 64;
    for (double bound : {L / low, L / high}) {
        for (double nudge : {1 - 1e-9, 1 + 1e-9}) {
            LlamaDims d = dims(2, 1.0); // head size 2: one pair, frequency θ^0 = 1 for any θ
            d.ropeScaling = RopeScaling::llama3;
            d.ropeFactor = factor;
            d.ropeLowFreqFactor = low;
            d.ropeHighFreqFactor = high;
            // Scale L instead of the frequency: the wavelength 2π sits at the nudged bound.
            d.ropeOriginalMaxSeq = L * (2 * kPi) / bound * nudge;
            const double got = ropeInverseFrequency(d, 0);
            const double limit = bound == L / low ? 1.0 / factor : 1.0;
            check(close(got, limit, 1e-8), "continuous at wavelength bound " + std::to_string(bound) + " (nudge " +
                                              std::to_string(nudge) + "): " + std::to_string(got));
        }
    }
}

void expectInvalid(const LlamaDims& d, const char* needle) {
    try {
        validate(d);
        check(false, std::string("validate accepted ") + needle);
    } catch (const mixz::InvalidArgument& e) {
        check(std::string(e.what()).find(needle) != std::string::npos, std::string("message names ") + needle + ": " + e.what());
    }
}

void testValidate() {
    LlamaDims d = dims(8, 10000.0);
    d.ropeScaling = RopeScaling::linear;
    d.ropeFactor = 0;
    expectInvalid(d, "ropeFactor");
    d.ropeFactor = NAN;
    expectInvalid(d, "ropeFactor");
    d.ropeFactor = 2;
    d.ropeScaling = RopeScaling::llama3;
    d.ropeLowFreqFactor = 4;
    d.ropeHighFreqFactor = 4;
    expectInvalid(d, "ropeHighFreqFactor");
    d.ropeLowFreqFactor = 0;
    expectInvalid(d, "ropeLowFreqFactor");
    d.ropeLowFreqFactor = 1;
    d.ropeOriginalMaxSeq = 0;
    expectInvalid(d, "ropeOriginalMaxSeq");
    d.ropeScaling = static_cast<RopeScaling>(7);
    expectInvalid(d, "ropeScaling");
    // Unused numbers are not read without scaling.
    LlamaDims plainDims = dims(8, 10000.0);
    plainDims.ropeFactor = -1;
    validate(plainDims);
}

// One decoder layer's evaluation output for deterministic weights and input.
std::vector<float> layerOutput(const LlamaDims& d, int batch, int seq) {
    const int h = d.hidden, kv = d.kvDim(), in = d.intermediate;
    auto fill = [](std::size_t n, double phase) {
        std::vector<float> v(n);
        for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<float>(0.4 * std::sin(phase + 0.71 * static_cast<double>(i)));
        return v;
    };
    const std::vector<float> q = fill(static_cast<std::size_t>(h) * h, 1), k = fill(static_cast<std::size_t>(kv) * h, 2),
                             v = fill(static_cast<std::size_t>(kv) * h, 3), o = fill(static_cast<std::size_t>(h) * h, 4),
                             gate = fill(static_cast<std::size_t>(in) * h, 5), up = fill(static_cast<std::size_t>(in) * h, 6),
                             down = fill(static_cast<std::size_t>(h) * in, 7), norm(static_cast<std::size_t>(h), 1.0f);
    DecoderLayerParams<float> p;
    p.inputNorm = norm.data();
    p.postNorm = norm.data();
    p.q.weight = q.data();
    p.k.weight = k.data();
    p.v.weight = v.data();
    p.o.weight = o.data();
    p.gate.weight = gate.data();
    p.up.weight = up.data();
    p.down.weight = down.data();
    const std::vector<float> x = fill(static_cast<std::size_t>(batch) * seq * h, 8);
    std::vector<float> y(x.size());
    decoderLayerForward(d, batch, seq, p, x.data(), y.data(), static_cast<DecoderLayerCache<float>*>(nullptr));
    return y;
}

void testLayerUsesScaling() {
    const LlamaDims none = dims(8, 10000.0);
    LlamaDims unit = none;
    unit.ropeScaling = RopeScaling::linear;
    unit.ropeFactor = 1;
    LlamaDims scaled = unit;
    scaled.ropeFactor = 4;
    const std::vector<float> a = layerOutput(none, 2, 10);
    check(layerOutput(unit, 2, 10) == a, "linear factor 1 is plain RoPE bit for bit");
    const std::vector<float> b = layerOutput(scaled, 2, 10);
    double diff = 0;
    for (std::size_t i = 0; i < a.size(); ++i) diff = std::max(diff, static_cast<double>(std::fabs(a[i] - b[i])));
    check(diff > 1e-3, "linear factor 4 changes the layer's output (max difference " + std::to_string(diff) + ")");
    // Back to plain RoPE on the same thread: the cached table follows the scaling.
    check(layerOutput(none, 2, 10) == a, "the rotary table is rebuilt when the scaling changes");
}

} // namespace

int main() {
    testFrequencies();
    testContinuity();
    testValidate();
    testLayerUsesScaling();
    if (gFailures > 0) {
        std::fprintf(stderr, "%d failure(s)\n", gFailures);
        return 1;
    }
    std::printf("rope_scaling_test: OK\n");
    return 0;
}
