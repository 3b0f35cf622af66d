// Tests of mixz/model/elementwise.h (the MIXZ_HD element-wise arithmetic shared by the CPU engine
// and the CUDA kernels), without Node and without a GPU, bit for bit:
//   1. each function against an independent scalar formula with the same operation order, on
//      random and edge inputs (zeros, signed zeros, large and tiny magnitudes, infinities, NaN),
//      in float and double — what the device computes is what the formula says;
//   2. the CPU engine's row kernels (src/model/kernels.h: RMSNorm, its backward, rotary, SwiGLU,
//      its backward, the shifted exp, the dropout mask) against loops over these functions, on
//      odd widths (the vectorized main part and the scalar tail) — the CPU computes them too;
//   3. public entry points of the CPU engine against references assembled from these functions
//      on tiny dims whose GEMMs are exact (identity and zero weights): the embedding, the head's
//      loss, dLogits and dx, and a decoder layer forward with LoRA dropout on its MLP.
//
// Build and run from the repository root:
//   g++ -std=c++17 -O2 -Wall -Wextra -pthread -Inative/include -o /tmp/mixz-model-elementwise-test
//       native/test/model_elementwise_test.cc native/src/model/*.cc native/src/common/error.cc
//       native/src/common/thread_pool.cc -lopenblas
//
// (one command line).
//   /tmp/mixz-model-elementwise-test
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "../src/model/kernels.h" // the CPU row kernels and detail::DropoutMask
#include "mixz/common/counter_random.h"
#include "mixz/model/elementwise.h"
#include "mixz/model/llama.h"

using namespace mixz::model;
namespace ew = mixz::model::elementwise;

namespace {

int failures = 0;
int checks = 0;

#define CHECK(condition, ...)                                                                   \
    do {                                                                                        \
        ++checks;                                                                               \
        if (!(condition)) {                                                                     \
            ++failures;                                                                         \
            std::fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #condition); \
            std::fprintf(stderr, __VA_ARGS__);                                                  \
            std::fprintf(stderr, "\n");                                                         \
        }                                                                                       \
    } while (false)

// Same bits, or both NaN (NaN payloads are not part of the contract).
template <typename T>
bool same(T a, T b) {
    if (std::isnan(a) && std::isnan(b)) return true;
    return std::memcmp(&a, &b, sizeof a) == 0;
}

// Counts the elements of two arrays that differ (same() false); prints the first.
template <typename T>
int mismatches(const char* what, const T* a, const T* b, std::size_t n) {
    int bad = 0;
    for (std::size_t i = 0; i < n; ++i) {
        if (!same(a[i], b[i])) {
            if (bad == 0) {
                std::fprintf(stderr, "%s: element %zu: %.9g vs %.9g\n", what, i, static_cast<double>(a[i]),
                             static_cast<double>(b[i]));
            }
            ++bad;
        }
    }
    return bad;
}

std::mt19937_64 rng(20261207);

template <typename T>
std::vector<T> randomValues(std::size_t n, double lo, double hi) {
    std::uniform_real_distribution<double> dist(lo, hi);
    std::vector<T> v(n);
    for (T& x : v) x = static_cast<T>(dist(rng));
    return v;
}

// Random values of assorted magnitudes plus the edge cases.
template <typename T>
std::vector<T> mixedInputs() {
    std::vector<T> v = randomValues<T>(2000, -4, 4);
    const std::vector<T> wide = randomValues<T>(500, -120, 120);
    v.insert(v.end(), wide.begin(), wide.end());
    const T edges[] = {T(0),
                       -T(0),
                       T(1),
                       T(-1),
                       T(1e-30),
                       T(-1e-30),
                       std::numeric_limits<T>::denorm_min(),
                       std::numeric_limits<T>::min(),
                       T(86.9),
                       T(-86.9),
                       T(87.5),
                       T(-87.5),
                       T(88.7),
                       T(-103),
                       T(1e30),
                       T(-1e30),
                       std::numeric_limits<T>::max(),
                       std::numeric_limits<T>::lowest(),
                       std::numeric_limits<T>::infinity(),
                       -std::numeric_limits<T>::infinity(),
                       std::numeric_limits<T>::quiet_NaN()};
    v.insert(v.end(), std::begin(edges), std::end(edges));
    return v;
}

// ---------------------------------------------------------------------------------------------
// 1. The functions against independent formulas

// The float exp polynomial restated step by step (the same operations in the same order), and
// its accuracy against std::exp where it is meant to be accurate.
float expReference(float x) {
    if (x < -87.0f) x = -87.0f;
    if (x > 88.0f) x = 88.0f;
    const float shifted = x * 1.44269504088896341f + 12582912.0f;
    const float n = shifted - 12582912.0f;
    const float hiPart = x - n * 0.693359375f;
    const float r = hiPart + n * 2.12194440e-4f;
    const float c[] = {1.9875691500e-4f, 1.3981999507e-3f, 8.3334519073e-3f, 4.1665795894e-2f, 1.6666665459e-1f,
                       5.0000001201e-1f};
    float p = c[0];
    for (int i = 1; i < 6; ++i) p = p * r + c[i];
    const float r2 = r * r;
    p = p * r2 + r + 1.0f;
    // 2^n by its exponent field.
    const auto integer = static_cast<std::int32_t>(n);
    std::uint32_t bits = static_cast<std::uint32_t>(integer + 127) << 23;
    float scale;
    std::memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

void testExp() {
    int bad = 0;
    double worst = 0;
    for (float x : mixedInputs<float>()) {
        const float got = ew::expOf(x);
        if (!std::isnan(x) && !same(got, expReference(x))) {
            if (bad++ == 0) std::fprintf(stderr, "expOf(%.9g) = %.9g, reference %.9g\n", x, got, expReference(x));
        }
        if (std::isnan(x)) CHECK(std::isnan(got), "expOf(NaN) = %g", got);
        if (x > -87 && x < 88) {
            const double exact = std::exp(static_cast<double>(x));
            worst = std::max(worst, std::abs(got - exact) / exact);
        }
    }
    CHECK(bad == 0, "%d expOf values differ from the restated polynomial", bad);
    CHECK(worst < 5e-7, "expOf's relative error %.3g", worst);
    for (double x : mixedInputs<double>()) CHECK(same(ew::expOf(x), std::exp(x)), "expOf(double %g)", x);
    std::printf("expOf: float polynomial restated bit for bit (relative error %.2g), double = std::exp\n", worst);
}

template <typename T>
void testSwiglu() {
    const std::vector<T> inputs = mixedInputs<T>();
    int bad = 0;
    for (std::size_t i = 0; i < inputs.size(); ++i) {
        const T g = inputs[i];
        const T u = inputs[(i * 7 + 3) % inputs.size()];
        const T d = inputs[(i * 13 + 5) % inputs.size()];
        const T sigmoid = T(1) / (T(1) + ew::expOf(T(-g)));
        bad += !same(ew::sigmoidOf(g), sigmoid);
        bad += !same(ew::silu(g), T(g * sigmoid));
        bad += !same(ew::siluDerivative(g, sigmoid), T(sigmoid * (T(1) + g * (T(1) - sigmoid))));
        const T act = g * sigmoid;
        bad += !same(ew::swiglu(g, u), T(act * u));
        const ew::SwigluGrad<T> grad = ew::swigluBackward(g, u, d);
        const T dUp = (d * g) * sigmoid;
        const T dGate = ((d * u) * sigmoid) * (T(1) + g * (T(1) - sigmoid));
        bad += !same(grad.up, dUp);
        bad += !same(grad.gate, dGate);
    }
    CHECK(bad == 0, "%d SwiGLU values (%s) differ from the formulas", bad, sizeof(T) == 4 ? "float" : "double");
}

template <typename T>
void testRopeAndNorm() {
    const std::vector<T> inputs = mixedInputs<T>();
    const std::size_t n = inputs.size();
    int bad = 0;
    for (std::size_t i = 0; i < n; ++i) {
        const T a = inputs[i], b = inputs[(i * 3 + 1) % n], c = inputs[(i * 5 + 2) % n], s = inputs[(i * 11 + 7) % n];
        const ew::RopePair<T> f = ew::ropeRotate(a, b, c, s, false);
        const ew::RopePair<T> r = ew::ropeRotate(a, b, c, s, true);
        bad += !same(f.lo, T(a * c - b * s)) + !same(f.hi, T(b * c + a * s));
        bad += !same(r.lo, T(a * c + b * s)) + !same(r.hi, T(b * c - a * s));
        // RMSNorm pieces (rstd, the coefficient and eps from the same pool, widths varied).
        const int width = 1 + static_cast<int>(i % 97);
        const T sum = std::abs(c) * T(width);
        const T eps = T(1e-6);
        bad += !same(ew::rmsInverse(sum, width, eps), T(T(1) / std::sqrt(sum / T(width) + eps)));
        bad += !same(ew::rmsNormScale(a, b, c), T(b * (a * c)));
        bad += !same(ew::rmsNormBackwardTerm(a, b, c), T((a * b) * c));
        bad += !same(ew::rmsNormBackwardCoefficient(a, b, width), T(((a * b) * b) / T(width)));
        bad += !same(ew::rmsNormInputGrad(a, b, c, s, T(0.25)), T(s * (a * b - c * T(0.25))));
        bad += !same(ew::rmsNormInputGrad(a, b, c, s, T(0.25), T(1.5)), T(T(1.5) + s * (a * b - c * T(0.25))));
        bad += !same(ew::rmsNormWeightGradTerm(a, b, c), T(a * (b * c)));
        // Softmax and cross-entropy pieces.
        bad += !same(ew::expShifted(a, b), ew::expOf(T(a - b)));
        bad += !same(ew::softmaxBackward(a, b, c, s), T((a * (b - c)) * s));
        bad += !same(ew::softmaxInverseSum(a), T(T(1) / a));
        bad += !same(ew::softmaxNormalize(a, b), T(a * b));
        bad += !same(ew::crossEntropyGradFactor(a, b), T(a / b));
        bad += !same(ew::crossEntropyGrad(a, b), T(a * b));
        bad += !same(ew::crossEntropyLabelGrad(a, b), T(a - b));
        const double loss = static_cast<double>(a) + std::log(static_cast<double>(std::abs(b))) - static_cast<double>(c);
        bad += !same(ew::crossEntropyRowLoss(a, std::abs(b), c), loss);
    }
    for (int d = 2; d <= 256; d += 2) bad += !same(ew::attentionScale<T>(d), T(T(1) / std::sqrt(T(d))));
    CHECK(bad == 0, "%d rotary/RMSNorm/softmax values (%s) differ from the formulas", bad,
          sizeof(T) == 4 ? "float" : "double");
}

// The rotary frequencies: θ^(−2i/d) and position · that, in double, as the CPU's tables are built.
void testRopeFrequencies() {
    int bad = 0;
    for (double theta : {10000.0, 500000.0, 1e6, 3.5}) {
        for (int headDim : {2, 8, 64, 128}) {
            for (int i = 0; i < headDim / 2; ++i) {
                const double f = ew::ropeInverseFrequency(theta, i, headDim);
                bad += !same(f, std::pow(theta, (-2.0 * i) / headDim));
                for (int p : {0, 1, 7, 4095, 131071}) bad += !same(ew::ropeAngle(p, f), static_cast<double>(p) * f);
            }
        }
    }
    CHECK(bad == 0, "%d rotary frequencies or angles differ", bad);
}

// The dropout hash restated from splitmix64's definition, and the mask's statistics.
std::uint64_t splitmixReference(std::uint64_t z) {
    z ^= z >> 30;
    z *= 0xBF58476D1CE4E5B9ull;
    z ^= z >> 27;
    z *= 0x94D049BB133111EBull;
    z ^= z >> 31;
    return z;
}

void testDropout() {
    int bad = 0;
    for (std::uint64_t seed : {0ull, 1ull, 12345ull, 0xFFFFFFFFFFFFFFFFull}) {
        bad += ew::dropoutKey(seed) != splitmixReference(seed);
        bad += mixz::mix(seed) != splitmixReference(seed + 0x9E3779B97F4A7C15ull);
    }
    for (double p : {1e-12, 0.1, 0.25, 0.5, 0.999999, 0.9999999999}) {
        const double t = std::ceil(p * 4294967296.0);
        const std::uint32_t expected = t >= 4294967295.0 ? 0xFFFFFFFFu : static_cast<std::uint32_t>(t);
        bad += ew::dropoutThreshold(p) != expected;
        bad += !same(ew::dropoutScale<float>(p), static_cast<float>(1.0 / (1.0 - p)));
        bad += !same(ew::dropoutScale<double>(p), 1.0 / (1.0 - p));
        const detail::DropoutMask mask = detail::DropoutMask::of(p, 77);
        bad += mask.key != ew::dropoutKey(77) || mask.threshold != expected;
        for (std::uint64_t i : {0ull, 1ull, 1000ull, 123456789ull, 0xFFFFFFFFull, 0x100000000ull}) {
            const std::uint64_t bits = splitmixReference(mask.key + (i + 1) * 0x9E3779B97F4A7C15ull);
            const bool keeps = static_cast<std::uint32_t>(bits >> 32) >= expected;
            bad += ew::dropoutKeeps(mask.key, mask.threshold, i) != keeps;
            bad += mask.keeps(i) != keeps;
        }
    }
    bad += !same(ew::dropoutApply(true, 3.0f, 1.25f), 3.75f) + !same(ew::dropoutApply(false, 3.0f, 1.25f), 0.0f);
    CHECK(bad == 0, "%d dropout hash/threshold/scale values differ", bad);
}

// ---------------------------------------------------------------------------------------------
// 2. The CPU row kernels against loops over the functions

template <typename T>
void testRowKernels() {
    const char* type = sizeof(T) == 4 ? "float" : "double";
    int bad = 0;
    for (int width : {1, 7, 8, 9, 31, 64, 133}) {
        const std::vector<T> x = randomValues<T>(width, -3, 3), w = randomValues<T>(width, -2, 2),
                             dy = randomValues<T>(width, -1, 1), residual = randomValues<T>(width, -1, 1);
        const T eps = T(1e-5);
        // RMSNorm forward.
        std::vector<T> y(width), yRef(width);
        const T rstd = detail::rmsNormRow(x.data(), w.data(), width, eps, y.data());
        const T rstdRef = ew::rmsInverse(detail::sumOfSquares(x.data(), width), width, eps);
        bad += !same(rstd, rstdRef);
        for (int i = 0; i < width; ++i) yRef[i] = ew::rmsNormScale(x[i], w[i], rstdRef);
        bad += mismatches("rmsNormRow", y.data(), yRef.data(), width);
        // Its backward, with and without the residual; the row sum restated with the kernels'
        // kLanes partial sums (the reduction order is the CPU's, not under test here).
        T partial[detail::kLanes] = {};
        int i = 0;
        for (; i + detail::kLanes <= width; i += detail::kLanes) {
            for (int j = 0; j < detail::kLanes; ++j) partial[j] += ew::rmsNormBackwardTerm(dy[i + j], w[i + j], x[i + j]);
        }
        T sum = 0;
        for (int j = 0; j < detail::kLanes; ++j) sum += partial[j];
        for (; i < width; ++i) sum += ew::rmsNormBackwardTerm(dy[i], w[i], x[i]);
        const T coefficient = ew::rmsNormBackwardCoefficient(sum, rstd, width);
        std::vector<T> dx(width), dxRef(width);
        detail::rmsNormBackwardRow(x.data(), w.data(), rstd, dy.data(), static_cast<const T*>(nullptr), width,
                                   dx.data());
        for (int k = 0; k < width; ++k) dxRef[k] = ew::rmsNormInputGrad(dy[k], w[k], x[k], rstd, coefficient);
        bad += mismatches("rmsNormBackwardRow", dx.data(), dxRef.data(), width);
        detail::rmsNormBackwardRow(x.data(), w.data(), rstd, dy.data(), residual.data(), width, dx.data());
        for (int k = 0; k < width; ++k) {
            dxRef[k] = ew::rmsNormInputGrad(dy[k], w[k], x[k], rstd, coefficient, residual[k]);
        }
        bad += mismatches("rmsNormBackwardRow+residual", dx.data(), dxRef.data(), width);
        // SwiGLU and its backward (dGate aliasing dAct, as the layer calls it).
        std::vector<T> act(width), actRef(width), dGate = dy, dUp(width);
        detail::swigluRow(x.data(), w.data(), width, act.data());
        for (int k = 0; k < width; ++k) actRef[k] = ew::swiglu(x[k], w[k]);
        bad += mismatches("swigluRow", act.data(), actRef.data(), width);
        detail::swigluBackwardRow(x.data(), w.data(), dGate.data(), width, dGate.data(), dUp.data());
        for (int k = 0; k < width; ++k) {
            const ew::SwigluGrad<T> g = ew::swigluBackward(x[k], w[k], dy[k]);
            bad += !same(dGate[k], g.gate) + !same(dUp[k], g.up);
        }
        // Rotary (half = width), forward then inverse.
        std::vector<T> pair(2 * width), pairRef(2 * width);
        for (int k = 0; k < 2 * width; ++k) pair[k] = pairRef[k] = static_cast<T>(0.1 * k - 1);
        const std::vector<T> cosines = randomValues<T>(width, -1, 1), sines = randomValues<T>(width, -1, 1);
        for (bool inverse : {false, true}) {
            detail::ropeRow(pair.data(), cosines.data(), sines.data(), width, inverse);
            for (int k = 0; k < width; ++k) {
                const ew::RopePair<T> r = ew::ropeRotate(pairRef[k], pairRef[k + width], cosines[k], sines[k], inverse);
                pairRef[k] = r.lo;
                pairRef[k + width] = r.hi;
            }
            bad += mismatches("ropeRow", pair.data(), pairRef.data(), 2 * width);
        }
        // The shifted exp of a softmax row.
        std::vector<T> row = x, rowRef(width);
        detail::expShiftedInPlace(row.data(), width, T(0.5));
        for (int k = 0; k < width; ++k) rowRef[k] = ew::expShifted(x[k], T(0.5));
        bad += mismatches("expShiftedInPlace", row.data(), rowRef.data(), width);
        // Dropout's apply over a range that does not start at 0.
        const detail::DropoutMask mask = detail::DropoutMask::of(0.3, 4242);
        std::vector<T> dropped(width), droppedRef(width);
        mask.apply(0, width, x.data(), dropped.data(), false);
        for (int k = 0; k < width; ++k) {
            droppedRef[k] = ew::dropoutApply(ew::dropoutKeeps(mask.key, mask.threshold, k), x[k],
                                             ew::dropoutScale<T>(0.3));
        }
        bad += mismatches("DropoutMask::apply", dropped.data(), droppedRef.data(), width);
    }
    CHECK(bad == 0, "%d %s row-kernel values differ from loops over elementwise.h", bad, type);
}

// ---------------------------------------------------------------------------------------------
// 3. Entry points of the CPU engine on dims whose GEMMs are exact

// The identity [n, n].
template <typename T>
std::vector<T> identity(int n) {
    std::vector<T> m(static_cast<std::size_t>(n) * n, T(0));
    for (int i = 0; i < n; ++i) m[static_cast<std::size_t>(i) * n + i] = T(1);
    return m;
}

// Reference RMSNorm of a row: the CPU's sum of squares (reduction), then the functions.
template <typename T>
T referenceNorm(const T* x, const T* w, int width, T eps, T* y) {
    const T rstd = ew::rmsInverse(detail::sumOfSquares(x, width), width, eps);
    for (int i = 0; i < width; ++i) y[i] = ew::rmsNormScale(x[i], w[i], rstd);
    return rstd;
}

void testEmbedding() {
    LlamaDims dims;
    dims.vocab = 11;
    dims.hidden = 6;
    dims.layers = 1;
    dims.heads = 1;
    dims.kvHeads = 1;
    dims.intermediate = 4;
    dims.maxSeq = 16;
    const std::vector<std::int32_t> ids = {3, 0, 3, 10, 7, 3, 0};
    const std::size_t tokens = ids.size();
    const std::vector<float> table = randomValues<float>(dims.vocab * dims.hidden, -1, 1);
    const std::vector<float> dOut = randomValues<float>(tokens * dims.hidden, -1, 1);
    std::vector<float> out(tokens * dims.hidden), dTable(table.size(), 99.0f);
    embeddingForward(dims, ids.data(), tokens, table.data(), out.data());
    embeddingBackward(dims, ids.data(), tokens, dOut.data(), dTable.data());
    // The reference the CUDA kernel computes: per vocabulary row, 0 plus its tokens' rows in token order.
    std::vector<float> dRef(table.size(), 0.0f);
    int bad = 0;
    for (std::size_t t = 0; t < tokens; ++t) {
        for (int j = 0; j < dims.hidden; ++j) {
            bad += !same(out[t * dims.hidden + j], table[ids[t] * dims.hidden + j]);
            dRef[ids[t] * dims.hidden + j] += dOut[t * dims.hidden + j];
        }
    }
    bad += mismatches("embeddingBackward", dTable.data(), dRef.data(), dTable.size());
    CHECK(bad == 0, "%d embedding values differ", bad);
}

// headForward/headBackward with hidden = vocab (14: 8 lanes and a tail) and lm_head = I (no LoRA): logits = norm(x)
// exactly, so the loss, dLogits (through dx = dLogits·I) and dx follow from the functions.
void testHead() {
    LlamaDims dims;
    dims.vocab = 14;
    dims.hidden = 14;
    dims.layers = 1;
    dims.heads = 1;
    dims.kvHeads = 1;
    dims.intermediate = 4;
    dims.maxSeq = 8;
    dims.rmsEps = 1e-5;
    const int batch = 2, seq = 6, rows = batch * seq, width = dims.hidden, vocab = dims.vocab;
    const std::int32_t ignore = -100;
    const std::vector<std::int32_t> labels = {1, 5, ignore, 12, 0, 7, 3, 3, 9, ignore, 2, 11};
    const std::vector<float> x = randomValues<float>(rows * width, -3, 3);
    const std::vector<float> norm = randomValues<float>(width, 0.5, 2);
    const std::vector<float> lm = identity<float>(vocab);
    HeadParams<float> params;
    params.norm = norm.data();
    params.lmHead.weight = lm.data();
    HeadCache<float> cache;
    const LossResult result = headForward(dims, batch, seq, params, x.data(), labels.data(), ignore, &cache);
    std::vector<float> dx(rows * width), dNorm(width);
    HeadGrads<float> grads;
    grads.norm = dNorm.data();
    const float lossGrad = 0.75f;
    headBackward(dims, batch, seq, params, cache, lossGrad, dx.data(), grads);

    // The reference: counted rows, then each row's loss and dLogits from the functions with the
    // CPU's reductions (maxOf, the kLanes sum of expShifted).
    std::size_t counted = 0;
    for (int r = 0; r < rows; ++r) counted += (r % seq != 0 && labels[r] != ignore);
    const float share = 1.0f / static_cast<float>(counted);
    const float eps = static_cast<float>(dims.rmsEps);
    double total = 0;
    std::vector<float> xn(rows * width), rstd(rows), dLogits(rows * vocab, 0.0f);
    for (int r = 0; r < rows; ++r) {
        rstd[r] = referenceNorm(x.data() + r * width, norm.data(), width, eps, xn.data() + r * width);
        const std::int32_t label = r % seq == seq - 1 ? ignore : labels[r + 1];
        if (label == ignore) continue;
        float* row = dLogits.data() + r * vocab;
        std::copy(xn.begin() + r * width, xn.begin() + (r + 1) * width, row);
        const float target = row[label];
        const float largest = detail::maxOf(row, vocab);
        for (int j = 0; j < vocab; ++j) row[j] = ew::expShifted(row[j], largest);
        float partial[detail::kLanes] = {};
        int j = 0;
        for (; j + detail::kLanes <= vocab; j += detail::kLanes) {
            for (int l = 0; l < detail::kLanes; ++l) partial[l] += row[j + l];
        }
        float sum = 0;
        for (int l = 0; l < detail::kLanes; ++l) sum += partial[l];
        for (; j < vocab; ++j) sum += row[j];
        total += ew::crossEntropyRowLoss(largest, sum, target);
        const float factor = ew::crossEntropyGradFactor(share, sum);
        for (int k = 0; k < vocab; ++k) row[k] = ew::crossEntropyGrad(row[k], factor);
        row[label] = ew::crossEntropyLabelGrad(row[label], share);
    }
    CHECK(result.counted == counted, "counted %zu, expected %zu", result.counted, counted);
    CHECK(same(result.loss, total / static_cast<double>(counted)), "loss %.17g, reference %.17g", result.loss,
          total / static_cast<double>(counted));
    // dx: dXn = lossGrad · dLogits · I (exact), then the RMSNorm backward from the functions.
    std::vector<float> dxRef(rows * width);
    for (int r = 0; r < rows; ++r) {
        std::vector<float> dXn(width);
        for (int k = 0; k < width; ++k) dXn[k] = lossGrad * dLogits[r * vocab + k];
        float partial[detail::kLanes] = {};
        int i = 0;
        for (; i + detail::kLanes <= width; i += detail::kLanes) {
            for (int l = 0; l < detail::kLanes; ++l) {
                partial[l] += ew::rmsNormBackwardTerm(dXn[i + l], norm[i + l], x[r * width + i + l]);
            }
        }
        float sum = 0;
        for (int l = 0; l < detail::kLanes; ++l) sum += partial[l];
        for (; i < width; ++i) sum += ew::rmsNormBackwardTerm(dXn[i], norm[i], x[r * width + i]);
        const float coefficient = ew::rmsNormBackwardCoefficient(sum, rstd[r], width);
        for (int k = 0; k < width; ++k) {
            dxRef[r * width + k] = ew::rmsNormInputGrad(dXn[k], norm[k], x[r * width + k], rstd[r], coefficient);
        }
    }
    CHECK(mismatches("headBackward dx", dx.data(), dxRef.data(), dx.size()) == 0, "head dx differs");
}

// A decoder layer whose attention projections are zero (attention adds nothing: h1 = x) and
// whose MLP has gate = up = down = I with a LoRA of A = B = I (scale 1) and dropout p on gate:
// y = x + swiglu(xn2 + dropout(xn2), xn2), every GEMM exact.
void testLayerForward() {
    LlamaDims dims;
    dims.vocab = 5;
    dims.hidden = 12;
    dims.layers = 1;
    dims.heads = 2;
    dims.kvHeads = 1;
    dims.intermediate = 12;
    dims.maxSeq = 9;
    dims.rmsEps = 1e-6;
    const int batch = 2, seq = 9, rows = batch * seq, width = dims.hidden, kvDim = dims.kvDim();
    const std::vector<float> zeros(static_cast<std::size_t>(width) * width, 0.0f);
    const std::vector<float> eye = identity<float>(width);
    const std::vector<float> norm1 = randomValues<float>(width, 0.5, 2), norm2 = randomValues<float>(width, 0.5, 2);
    DecoderLayerParams<float> params;
    params.inputNorm = norm1.data();
    params.postNorm = norm2.data();
    for (LinearParams<float>* p : {&params.q, &params.k, &params.v, &params.o}) p->weight = zeros.data();
    (void)kvDim;
    for (LinearParams<float>* p : {&params.gate, &params.up, &params.down}) p->weight = eye.data();
    const double probability = 0.3;
    params.gate.loraA = eye.data();
    params.gate.loraB = eye.data();
    params.gate.rank = width;
    params.gate.loraScale = 1.0f;
    params.gate.loraDropout = probability;
    params.gate.loraDropoutSeed = 2026;
    const std::vector<float> x = randomValues<float>(rows * width, -2, 2);
    std::vector<float> y(rows * width);
    DecoderLayerCache<float> cache;
    decoderLayerForward(dims, batch, seq, params, x.data(), y.data(), &cache);

    const detail::DropoutMask mask = detail::DropoutMask::of(probability, params.gate.loraDropoutSeed);
    const float scale = ew::dropoutScale<float>(probability);
    std::vector<float> yRef(rows * width), xn2(width);
    for (int r = 0; r < rows; ++r) {
        // h1 = x + o(ctx) with o = 0: x + 0.
        const float* h1 = x.data() + r * width;
        referenceNorm(h1, norm2.data(), width, static_cast<float>(dims.rmsEps), xn2.data());
        for (int k = 0; k < width; ++k) {
            const std::size_t index = static_cast<std::size_t>(r) * width + k;
            const float dropped = ew::dropoutApply(ew::dropoutKeeps(mask.key, mask.threshold, index), xn2[k], scale);
            const float gate = xn2[k] + dropped;
            yRef[index] = h1[k] + ew::swiglu(gate, xn2[k]);
        }
    }
    CHECK(mismatches("decoderLayerForward", y.data(), yRef.data(), y.size()) == 0, "layer forward differs");
}

} // namespace

int main() {
    testExp();
    testSwiglu<float>();
    testSwiglu<double>();
    testRopeAndNorm<float>();
    testRopeAndNorm<double>();
    testRopeFrequencies();
    testDropout();
    std::printf("elementwise.h against independent formulas (float, double; random and edge inputs): done\n");
    testRowKernels<float>();
    testRowKernels<double>();
    std::printf("the CPU row kernels against loops over elementwise.h: done\n");
    testEmbedding();
    testHead();
    testLayerForward();
    std::printf("embedding, head (loss, dx) and a layer forward with LoRA dropout against elementwise.h: done\n");
    if (failures != 0) {
        std::fprintf(stderr, "FAILED: %d of %d checks\n", failures, checks);
        return 1;
    }
    std::printf("OK: %d checks\n", checks);
    return 0;
}
