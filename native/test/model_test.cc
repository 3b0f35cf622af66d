// Core tests of mixz/model (the LLaMA decoder kernels), without Node: every gradient of the
// decoder layer, the embedding and the head against central finite differences in double
// precision on small odd shapes (with and without LoRA, grouped key/value heads, several query
// blocks, LoRA dropout with fixed seeds), frozen gradients, the ignore index, the KV-cache forward
// against the full forward, float against double, 1 thread against several (bitwise, with and
// without LoRA dropout), the LoRA dropout masks (statistics, the mask the layer applies, p = 0
// and evaluation unchanged), and the InvalidArgument cases.
//
// Build and run from the repository root (add -fsanitize=address,undefined -g for a sanitizer run):
//
//   g++ -std=c++17 -O1 -Wall -Wextra -pthread -Inative/include -o /tmp/mixz-model-test
//       native/test/model_test.cc native/src/model/*.cc native/src/common/error.cc
//       native/src/common/thread_pool.cc -lopenblas
//
// (one command line).
//   /tmp/mixz-model-test
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#if __has_include(<cblas-openblas.h>)
#include <cblas-openblas.h>
#else
#include <cblas.h>
#endif

#include "../src/model/kernels.h" // detail::DropoutMask, to check the masks the kernels draw
#include "mixz/common/error.h"
#include "mixz/model/llama.h"

using namespace mixz::model;

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

using Vec = std::vector<double>;

std::mt19937_64 rng(20240611);

Vec randomVec(std::size_t n, double lo, double hi) {
    std::uniform_real_distribution<double> dist(lo, hi);
    Vec v(n);
    for (double& x : v) x = dist(rng);
    return v;
}

template <typename T>
std::vector<T> convert(const Vec& v) {
    return std::vector<T>(v.begin(), v.end());
}

// Max |a − b| over max |b|: the error relative to the tensor's scale.
template <typename A, typename B>
double relativeError(const std::vector<A>& a, const std::vector<B>& b) {
    double diff = 0;
    double scale = 0;
    for (std::size_t i = 0; i < a.size(); ++i) {
        diff = std::max(diff, std::abs(static_cast<double>(a[i]) - static_cast<double>(b[i])));
        scale = std::max(scale, std::abs(static_cast<double>(b[i])));
    }
    return diff / std::max(scale, 1e-300);
}

template <typename T>
bool bitwiseEqual(const std::vector<T>& a, const std::vector<T>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

// -------------------------------------------------------------------------------------------------
// Parameters held in double, viewed in T

struct Linear {
    int in = 0;
    int out = 0;
    int rank = 0;
    double scale = 0;
    double dropout = 0; // LoRA dropout p, with its mask's seed
    std::uint64_t dropoutSeed = 0;
    Vec weight, loraA, loraB;
    Vec bias; // empty: no bias

    Linear() = default;
    Linear(int inSize, int outSize, int loraRank) : in(inSize), out(outSize), rank(loraRank) {
        weight = randomVec(static_cast<std::size_t>(out) * in, -0.5, 0.5);
        if (rank > 0) {
            scale = 1.5 / rank;
            loraA = randomVec(static_cast<std::size_t>(rank) * in, -0.5, 0.5);
            loraB = randomVec(static_cast<std::size_t>(out) * rank, -0.5, 0.5); // nonzero: B's path is tested
        }
    }
};

template <typename T>
struct LinearView {
    std::vector<T> weight, loraA, loraB, bias;
    LinearParams<T> params;

    LinearView(const Linear& l)
        : weight(convert<T>(l.weight)), loraA(convert<T>(l.loraA)), loraB(convert<T>(l.loraB)), bias(convert<T>(l.bias)) {
        params.weight = weight.data();
        if (!l.bias.empty()) params.bias = bias.data();
        if (l.rank > 0) {
            params.loraA = loraA.data();
            params.loraB = loraB.data();
            params.rank = l.rank;
            params.loraScale = static_cast<T>(l.scale);
        }
        params.loraDropout = l.dropout;
        params.loraDropoutSeed = l.dropoutSeed;
    }
};

struct LinearGradBuffers {
    Vec weight, loraA, loraB, bias;
    LinearGrads<double> grads;

    LinearGradBuffers(const Linear& l, bool base, bool lora) {
        if (base) {
            weight.assign(l.weight.size(), std::nan(""));
            grads.weight = weight.data();
        }
        if (base && !l.bias.empty()) {
            bias.assign(l.bias.size(), std::nan(""));
            grads.bias = bias.data();
        }
        if (lora && l.rank > 0) {
            loraA.assign(l.loraA.size(), std::nan(""));
            loraB.assign(l.loraB.size(), std::nan(""));
            grads.loraA = loraA.data();
            grads.loraB = loraB.data();
        }
    }
};

struct Layer {
    Vec inputNorm, postNorm;
    Linear q, k, v, o, gate, up, down;

    Layer(const LlamaDims& d, int rank) {
        inputNorm = randomVec(d.hidden, 0.7, 1.3);
        postNorm = randomVec(d.hidden, 0.7, 1.3);
        q = Linear(d.hidden, d.hidden, rank);
        k = Linear(d.hidden, d.kvDim(), rank);
        v = Linear(d.hidden, d.kvDim(), rank);
        o = Linear(d.hidden, d.hidden, rank);
        gate = Linear(d.hidden, d.intermediate, rank);
        up = Linear(d.hidden, d.intermediate, rank);
        down = Linear(d.intermediate, d.hidden, rank);
    }

    std::vector<Linear*> linears() { return {&q, &k, &v, &o, &gate, &up, &down}; }

    // Qwen2: biases on q, k and v.
    void addAttentionBias() {
        for (Linear* linear : {&q, &k, &v}) linear->bias = randomVec(static_cast<std::size_t>(linear->out), -0.5, 0.5);
    }

    // LoRA dropout p on every linear, each with its own seed.
    void setDropout(double p, std::uint64_t seed) {
        for (Linear* linear : linears()) {
            linear->dropout = p;
            linear->dropoutSeed = seed++;
        }
    }
};

const char* const kLinearNames[] = {"q", "k", "v", "o", "gate", "up", "down"};

template <typename T>
struct LayerView {
    std::vector<T> inputNorm, postNorm;
    LinearView<T> q, k, v, o, gate, up, down;
    DecoderLayerParams<T> params;

    explicit LayerView(const Layer& l)
        : inputNorm(convert<T>(l.inputNorm)), postNorm(convert<T>(l.postNorm)), q(l.q), k(l.k), v(l.v), o(l.o),
          gate(l.gate), up(l.up), down(l.down) {
        params.inputNorm = inputNorm.data();
        params.postNorm = postNorm.data();
        params.q = q.params;
        params.k = k.params;
        params.v = v.params;
        params.o = o.params;
        params.gate = gate.params;
        params.up = up.params;
        params.down = down.params;
    }
};

struct LayerGradBuffers {
    Vec inputNorm, postNorm;
    std::vector<LinearGradBuffers> linears;
    DecoderLayerGrads<double> grads;

    LayerGradBuffers(Layer& l, bool base, bool lora) {
        if (base) {
            inputNorm.assign(l.inputNorm.size(), std::nan(""));
            postNorm.assign(l.postNorm.size(), std::nan(""));
            grads.inputNorm = inputNorm.data();
            grads.postNorm = postNorm.data();
        }
        for (Linear* linear : l.linears()) linears.emplace_back(*linear, base, lora);
        LinearGrads<double>* slots[] = {&grads.q, &grads.k, &grads.v, &grads.o, &grads.gate, &grads.up, &grads.down};
        for (int i = 0; i < 7; ++i) *slots[i] = linears[i].grads;
    }
};

// Σ y ⊙ weights: the scalar the finite differences differentiate.
double weightedSum(const Vec& y, const Vec& weights) {
    double sum = 0;
    for (std::size_t i = 0; i < y.size(); ++i) sum += y[i] * weights[i];
    return sum;
}

// Central differences of f over the coordinates `which` of `values`, against `analytic`.
double finiteDifferenceError(Vec& values, const Vec& analytic, const std::vector<std::size_t>& which,
                             const std::function<double()>& f) {
    Vec numeric(which.size());
    Vec expected(which.size());
    for (std::size_t n = 0; n < which.size(); ++n) {
        const std::size_t i = which[n];
        const double saved = values[i];
        const double h = 1e-5 * std::max(1.0, std::abs(saved));
        values[i] = saved + h;
        const double plus = f();
        values[i] = saved - h;
        const double minus = f();
        values[i] = saved;
        numeric[n] = (plus - minus) / (2 * h);
        expected[n] = analytic[i];
    }
    return relativeError(numeric, expected);
}

// All coordinates, or `limit` of them chosen at random (fixed seed).
std::vector<std::size_t> coordinates(std::size_t size, std::size_t limit) {
    std::vector<std::size_t> all(size);
    for (std::size_t i = 0; i < size; ++i) all[i] = i;
    if (size <= limit) return all;
    std::shuffle(all.begin(), all.end(), rng);
    all.resize(limit);
    return all;
}

constexpr double kTolerance = 1e-6;

template <typename Fn>
bool throwsInvalid(Fn&& fn, const char* fragment) {
    try {
        fn();
    } catch (const mixz::InvalidArgument& e) {
        if (std::string(e.what()).find(fragment) != std::string::npos) return true;
        std::fprintf(stderr, "  message '%s' lacks '%s'\n", e.what(), fragment);
        return false;
    }
    return false;
}

// -------------------------------------------------------------------------------------------------
// Decoder layer

LlamaDims tinyDims() {
    LlamaDims d;
    d.vocab = 11;
    d.hidden = 12;
    d.layers = 1;
    d.heads = 3;
    d.kvHeads = 1;
    d.intermediate = 10;
    d.maxSeq = 8;
    d.ropeTheta = 10000.0;
    d.rmsEps = 1e-6;
    return d;
}

// Several query blocks (seq > 64) and two query heads per key/value head.
LlamaDims blockedDims() {
    LlamaDims d;
    d.vocab = 37;
    d.hidden = 24;
    d.layers = 1;
    d.heads = 4;
    d.kvHeads = 2;
    d.intermediate = 20;
    d.maxSeq = 160;
    d.ropeTheta = 500.0;
    d.rmsEps = 1e-5;
    return d;
}

// The layer's output: of an evaluation forward (no cache), or of a training forward (a cache: LoRA
// dropout applies).
Vec layerForwardValue(const LlamaDims& d, int batch, int seq, const Layer& layer, const Vec& x, bool train = false) {
    LayerView<double> view(layer);
    Vec y(x.size());
    DecoderLayerCache<double> cache;
    decoderLayerForward(d, batch, seq, view.params, x.data(), y.data(), train ? &cache : nullptr);
    return y;
}

// dropout > 0: LoRA dropout on every linear with fixed seeds, so every forward of the finite
// differences (training forwards) draws the masks the analytic backward used.
void testLayerGradients(const char* name, const LlamaDims& d, int batch, int seq, int rank, bool base, bool lora,
                        std::size_t limit, double dropout = 0, bool attentionBias = false) {
    Layer layer(d, rank);
    layer.setDropout(dropout, 1000);
    if (attentionBias) layer.addAttentionBias();
    const bool train = dropout > 0;
    const std::size_t tokens = static_cast<std::size_t>(batch) * seq;
    Vec x = randomVec(tokens * d.hidden, -1.0, 1.0);
    const Vec weights = randomVec(tokens * d.hidden, -1.0, 1.0);

    LayerView<double> view(layer);
    DecoderLayerCache<double> cache;
    Vec y(x.size());
    decoderLayerForward(d, batch, seq, view.params, x.data(), y.data(), &cache);
    CHECK(bitwiseEqual(y, layerForwardValue(d, batch, seq, layer, x, train)), "%s: forward with a cache differs", name);
    if (train) {
        CHECK(relativeError(y, layerForwardValue(d, batch, seq, layer, x)) > 1e-6,
              "%s: LoRA dropout changes nothing in a training forward", name);
    }
    Vec dx(x.size(), std::nan(""));
    LayerGradBuffers g(layer, base, lora);
    decoderLayerBackward(d, batch, seq, view.params, cache, weights.data(), dx.data(), g.grads);

    auto loss = [&] { return weightedSum(layerForwardValue(d, batch, seq, layer, x, train), weights); };
    double worst = 0;
    auto check = [&](const std::string& what, Vec& values, const Vec& analytic) {
        const double error = finiteDifferenceError(values, analytic, coordinates(values.size(), limit), loss);
        worst = std::max(worst, error);
        CHECK(error <= kTolerance, "%s: d%s relative error %.3g", name, what.c_str(), error);
    };
    check("x", x, dx);
    if (base) {
        check("inputNorm", layer.inputNorm, g.inputNorm);
        check("postNorm", layer.postNorm, g.postNorm);
    }
    std::vector<Linear*> linears = layer.linears();
    for (int i = 0; i < 7; ++i) {
        if (base) check(std::string(kLinearNames[i]) + ".weight", linears[i]->weight, g.linears[i].weight);
        if (base && !linears[i]->bias.empty()) check(std::string(kLinearNames[i]) + ".bias", linears[i]->bias, g.linears[i].bias);
        if (lora && rank > 0) {
            check(std::string(kLinearNames[i]) + ".loraA", linears[i]->loraA, g.linears[i].loraA);
            check(std::string(kLinearNames[i]) + ".loraB", linears[i]->loraB, g.linears[i].loraB);
        }
    }
    std::printf("layer gradients %-34s worst relative error %.2e\n", name, worst);
}

// LoRA training: base gradients null. The adapters' gradients and dx must equal those of a
// backward that also computes every base gradient; dx null (first layer) leaves the projections'
// gradients unchanged too.
void testFrozenGradients() {
    const LlamaDims d = tinyDims();
    const int batch = 2;
    const int seq = 5;
    Layer layer(d, 2);
    LayerView<double> view(layer);
    const std::size_t n = static_cast<std::size_t>(batch) * seq * d.hidden;
    const Vec x = randomVec(n, -1, 1);
    const Vec dy = randomVec(n, -1, 1);
    DecoderLayerCache<double> cache;
    Vec y(n);
    decoderLayerForward(d, batch, seq, view.params, x.data(), y.data(), &cache);

    LayerGradBuffers full(layer, true, true);
    Vec dxFull(n);
    decoderLayerBackward(d, batch, seq, view.params, cache, dy.data(), dxFull.data(), full.grads);
    LayerGradBuffers loraOnly(layer, false, true);
    Vec dxLora(n);
    decoderLayerBackward(d, batch, seq, view.params, cache, dy.data(), dxLora.data(), loraOnly.grads);
    CHECK(bitwiseEqual(dxFull, dxLora), "frozen base: dx differs");
    LayerGradBuffers noInput(layer, false, true);
    decoderLayerBackward(d, batch, seq, view.params, cache, dy.data(), static_cast<double*>(nullptr), noInput.grads);
    for (int i = 0; i < 7; ++i) {
        CHECK(bitwiseEqual(full.linears[i].loraA, loraOnly.linears[i].loraA) &&
                  bitwiseEqual(full.linears[i].loraB, loraOnly.linears[i].loraB),
              "frozen base: %s LoRA gradients differ", kLinearNames[i]);
        CHECK(bitwiseEqual(full.linears[i].loraA, noInput.linears[i].loraA) &&
                  bitwiseEqual(full.linears[i].loraB, noInput.linears[i].loraB),
              "dx null: %s LoRA gradients differ", kLinearNames[i]);
        CHECK(loraOnly.linears[i].weight.empty(), "frozen base: %s weight gradient allocated", kLinearNames[i]);
    }
    // Frozen adapters, trainable base: nothing but the requested buffers is touched (the NaN fill of
    // the unrequested ones would show otherwise), and the base gradients match.
    LayerGradBuffers baseOnly(layer, true, false);
    Vec dxBase(n);
    decoderLayerBackward(d, batch, seq, view.params, cache, dy.data(), dxBase.data(), baseOnly.grads);
    CHECK(bitwiseEqual(dxFull, dxBase), "frozen adapters: dx differs");
    for (int i = 0; i < 7; ++i) {
        CHECK(bitwiseEqual(full.linears[i].weight, baseOnly.linears[i].weight), "frozen adapters: %s weight differs",
              kLinearNames[i]);
    }
    CHECK(bitwiseEqual(full.inputNorm, baseOnly.inputNorm) && bitwiseEqual(full.postNorm, baseOnly.postNorm),
          "frozen adapters: norm gradients differ");

    // A LoRA gradient requested for a linear without LoRA is refused.
    Layer plain(d, 0);
    LayerView<double> plainView(plain);
    DecoderLayerCache<double> plainCache;
    decoderLayerForward(d, batch, seq, plainView.params, x.data(), y.data(), &plainCache);
    DecoderLayerGrads<double> wrong;
    Vec sink(100);
    wrong.q.loraA = sink.data();
    bool threw = false;
    try {
        decoderLayerBackward(d, batch, seq, plainView.params, plainCache, dy.data(), dxBase.data(), wrong);
    } catch (const mixz::InvalidArgument&) {
        threw = true;
    }
    CHECK(threw, "a LoRA gradient of a linear without LoRA is accepted");
    std::printf("frozen gradients: ok\n");
}

// -------------------------------------------------------------------------------------------------
// KV cache

void testCachedForward(const char* name, const LlamaDims& d, int batch, int seq, const std::vector<int>& steps,
                       int rank, bool attentionBias = false) {
    Layer layer(d, rank);
    if (attentionBias) layer.addAttentionBias();
    LayerView<double> view(layer);
    const Vec x = randomVec(static_cast<std::size_t>(batch) * seq * d.hidden, -1, 1);
    const Vec full = layerForwardValue(d, batch, seq, layer, x);

    KvCache<double> kv(d, batch);
    Vec cached(full.size());
    int position = 0;
    for (int step : steps) {
        // x rows of positions [position, position + step) of every sequence, as [batch, step, hidden].
        Vec xs(static_cast<std::size_t>(batch) * step * d.hidden);
        for (int b = 0; b < batch; ++b) {
            std::copy_n(x.begin() + (static_cast<std::size_t>(b) * seq + position) * d.hidden,
                        static_cast<std::size_t>(step) * d.hidden, xs.begin() + static_cast<std::size_t>(b) * step * d.hidden);
        }
        Vec ys(xs.size());
        decoderLayerForwardCached(d, step, view.params, xs.data(), ys.data(), kv);
        for (int b = 0; b < batch; ++b) {
            std::copy_n(ys.begin() + static_cast<std::size_t>(b) * step * d.hidden, static_cast<std::size_t>(step) * d.hidden,
                        cached.begin() + (static_cast<std::size_t>(b) * seq + position) * d.hidden);
        }
        position += step;
    }
    CHECK(kv.length() == seq, "%s: KV length %d after %d positions", name, kv.length(), seq);
    const double error = relativeError(cached, full);
    CHECK(error <= 1e-13, "%s: cached forward differs from the full forward by %.3g", name, error);

    // Past maxSeq: refused, the cache unchanged.
    kv.setLength(d.maxSeq);
    Vec one(static_cast<std::size_t>(batch) * d.hidden);
    Vec out(one.size());
    bool threw = false;
    try {
        decoderLayerForwardCached(d, 1, view.params, one.data(), out.data(), kv);
    } catch (const mixz::InvalidArgument& e) {
        threw = std::string(e.what()).find("maxSeq") != std::string::npos;
    }
    CHECK(threw && kv.length() == d.maxSeq, "%s: a position past maxSeq is accepted", name);
    std::printf("cached forward %-35s relative difference %.2e\n", name, error);
}

// -------------------------------------------------------------------------------------------------
// Embedding and head

void testEmbedding() {
    const LlamaDims d = tinyDims();
    const std::vector<std::int32_t> ids = {3, 0, 10, 3, 7, 3, 1};
    Vec table = randomVec(static_cast<std::size_t>(d.vocab) * d.hidden, -1, 1);
    const Vec weights = randomVec(ids.size() * d.hidden, -1, 1);
    Vec out(ids.size() * d.hidden);
    embeddingForward(d, ids.data(), ids.size(), table.data(), out.data());
    bool rowsMatch = true;
    for (std::size_t i = 0; i < ids.size(); ++i) {
        rowsMatch &= std::equal(out.begin() + i * d.hidden, out.begin() + (i + 1) * d.hidden,
                                table.begin() + static_cast<std::size_t>(ids[i]) * d.hidden);
    }
    CHECK(rowsMatch, "embedding rows differ from the table");
    Vec dTable(table.size(), std::nan(""));
    embeddingBackward(d, ids.data(), ids.size(), weights.data(), dTable.data());
    auto loss = [&] {
        embeddingForward(d, ids.data(), ids.size(), table.data(), out.data());
        return weightedSum(out, weights);
    };
    const double error = finiteDifferenceError(table, dTable, coordinates(table.size(), 1000), loss);
    CHECK(error <= kTolerance, "embedding: dTable relative error %.3g", error);

    const std::vector<std::int32_t> bad = {1, 2, 11, -1};
    try {
        embeddingForward(d, bad.data(), bad.size(), table.data(), out.data());
        CHECK(false, "embedding: id 11 accepted");
    } catch (const mixz::InvalidArgument& e) {
        CHECK(std::string(e.what()).find("token id 11 at position 2 is outside the vocabulary [0, 11)") !=
                  std::string::npos,
              "embedding: message '%s'", e.what());
    }
    try {
        embeddingBackward(d, bad.data() + 3, 1, weights.data(), dTable.data());
        CHECK(false, "embedding backward: id -1 accepted");
    } catch (const mixz::InvalidArgument& e) {
        CHECK(std::string(e.what()).find("token id -1 at position 0") != std::string::npos, "message '%s'", e.what());
    }
    std::printf("embedding: dTable relative error %.2e\n", error);
}

struct Head {
    Vec norm;
    Linear lmHead;

    Head(const LlamaDims& d, int rank) : norm(randomVec(d.hidden, 0.7, 1.3)), lmHead(d.hidden, d.vocab, rank) {}
};

template <typename T>
struct HeadView {
    std::vector<T> norm;
    LinearView<T> lmHead;
    HeadParams<T> params;

    explicit HeadView(const Head& h) : norm(convert<T>(h.norm)), lmHead(h.lmHead) {
        params.norm = norm.data();
        params.lmHead = lmHead.params;
    }
};

// train: a training forward (a cache: LoRA dropout applies).
LossResult headLoss(const LlamaDims& d, int batch, int seq, const Head& head, const Vec& x,
                    const std::vector<std::int32_t>& labels, bool train = false) {
    HeadView<double> view(head);
    HeadCache<double> cache;
    return headForward(d, batch, seq, view.params, x.data(), labels.data(), -100, train ? &cache : nullptr);
}

// Cross-entropy computed the plain way, for the loss value itself.
double referenceLoss(const LlamaDims& d, int batch, int seq, const Head& head, const Vec& x,
                     const std::vector<std::int32_t>& labels) {
    HeadView<double> view(head);
    Vec logits(static_cast<std::size_t>(batch) * seq * d.vocab);
    headLogits(d, static_cast<std::size_t>(batch) * seq, view.params, x.data(), logits.data());
    double total = 0;
    int counted = 0;
    for (int b = 0; b < batch; ++b) {
        for (int t = 0; t + 1 < seq; ++t) {
            const std::int32_t label = labels[b * seq + t + 1];
            if (label == -100) continue;
            const double* row = logits.data() + (static_cast<std::size_t>(b) * seq + t) * d.vocab;
            double sum = 0;
            for (int j = 0; j < d.vocab; ++j) sum += std::exp(row[j]);
            total += std::log(sum) - row[label];
            ++counted;
        }
    }
    return counted > 0 ? total / counted : 0;
}

void testHead(const char* name, int rank, bool base, double dropout = 0) {
    const LlamaDims d = tinyDims();
    const int batch = 2;
    const int seq = 5;
    Head head(d, rank);
    head.lmHead.dropout = dropout;
    head.lmHead.dropoutSeed = 77;
    const bool train = dropout > 0;
    Vec x = randomVec(static_cast<std::size_t>(batch) * seq * d.hidden, -2, 2);
    // Ignored labels inside, at the end and at token 0 (which is never predicted anyway).
    const std::vector<std::int32_t> labels = {-100, 4, 10, -100, 0, 7, 7, 2, 9, -100};
    const double lossGrad = 0.75;

    HeadView<double> view(head);
    HeadCache<double> cache;
    const LossResult result = headForward(d, batch, seq, view.params, x.data(), labels.data(), -100, &cache);
    CHECK(result.counted == 6, "%s: counted %zu positions, expected 6", name, result.counted);
    const double reference = referenceLoss(d, batch, seq, head, x, labels);
    if (train) {
        // The reference is an evaluation (headLogits: no dropout), so it must differ.
        CHECK(std::abs(result.loss - reference) > 1e-9 * std::abs(reference), "%s: dropout changes nothing", name);
        CHECK(std::abs(headLoss(d, batch, seq, head, x, labels).loss - reference) <= 1e-13 * std::abs(reference),
              "%s: the evaluation loss has dropout", name);
    } else {
        CHECK(std::abs(result.loss - reference) <= 1e-13 * std::abs(reference), "%s: loss %.17g, reference %.17g",
              name, result.loss, reference);
    }

    Vec dx(x.size(), std::nan(""));
    HeadGrads<double> grads;
    Vec dNorm(d.hidden, std::nan(""));
    LinearGradBuffers lm(head.lmHead, base, true);
    if (base) grads.norm = dNorm.data();
    grads.lmHead = lm.grads;
    headBackward(d, batch, seq, view.params, cache, lossGrad, dx.data(), grads);

    auto loss = [&] { return lossGrad * headLoss(d, batch, seq, head, x, labels, train).loss; };
    double worst = 0;
    auto check = [&](const char* what, Vec& values, const Vec& analytic) {
        const double error = finiteDifferenceError(values, analytic, coordinates(values.size(), 1000), loss);
        worst = std::max(worst, error);
        CHECK(error <= kTolerance, "%s: d%s relative error %.3g", name, what, error);
    };
    check("x", x, dx);
    if (base) {
        check("norm", head.norm, dNorm);
        check("lmHead.weight", head.lmHead.weight, lm.weight);
    }
    if (rank > 0) {
        check("lmHead.loraA", head.lmHead.loraA, lm.loraA);
        check("lmHead.loraB", head.lmHead.loraB, lm.loraB);
    }
    std::printf("head gradients %-35s worst relative error %.2e\n", name, worst);
}

void testHeadIgnored() {
    const LlamaDims d = tinyDims();
    const int batch = 2;
    const int seq = 5;
    Head head(d, 2);
    HeadView<double> view(head);
    const Vec x = randomVec(static_cast<std::size_t>(batch) * seq * d.hidden, -2, 2);
    // Only token 0 of each sequence carries a label: nothing is predicted.
    const std::vector<std::int32_t> labels = {3, -100, -100, -100, -100, 5, -100, -100, -100, -100};
    HeadCache<double> cache;
    const LossResult result = headForward(d, batch, seq, view.params, x.data(), labels.data(), -100, &cache);
    CHECK(result.loss == 0 && result.counted == 0, "all ignored: loss %g counted %zu", result.loss, result.counted);
    Vec dx(x.size(), std::nan(""));
    Vec dNorm(d.hidden, std::nan(""));
    LinearGradBuffers lm(head.lmHead, true, true);
    HeadGrads<double> grads;
    grads.norm = dNorm.data();
    grads.lmHead = lm.grads;
    headBackward(d, batch, seq, view.params, cache, 1.0, dx.data(), grads);
    auto allZero = [](const Vec& v) { return std::all_of(v.begin(), v.end(), [](double g) { return g == 0; }); };
    CHECK(allZero(dx) && allZero(dNorm) && allZero(lm.weight) && allZero(lm.loraA) && allZero(lm.loraB),
          "all ignored: gradients are not all zero");

    // A label outside the vocabulary that is not the ignore index is refused, naming it.
    std::vector<std::int32_t> bad = labels;
    bad[7] = 11;
    try {
        headForward(d, batch, seq, view.params, x.data(), bad.data(), -100, &cache);
        CHECK(false, "label 11 accepted");
    } catch (const mixz::InvalidArgument& e) {
        CHECK(std::string(e.what()).find("label 11 at position 7 (sequence 1, token 2)") != std::string::npos,
              "message '%s'", e.what());
    }
    bad[7] = -1;
    try {
        headForward(d, batch, seq, view.params, x.data(), bad.data(), -100, static_cast<HeadCache<double>*>(nullptr));
        CHECK(false, "label -1 accepted");
    } catch (const mixz::InvalidArgument&) {
    }
    // Another ignore index: -1 is then skipped, and -100 is an ordinary (bad) label.
    CHECK(throwsInvalid([&] { headForward(d, batch, seq, view.params, x.data(), bad.data(), -1,
                                          static_cast<HeadCache<double>*>(nullptr)); },
                        "label -100 at position 1"),
          "ignore index -1: label -100 accepted");
    std::printf("head ignore index: ok\n");
}

// -------------------------------------------------------------------------------------------------
// Precision and threads

void testFloatAgainstDouble() {
    const LlamaDims d = blockedDims();
    const int batch = 2;
    const int seq = 70;
    Layer layer(d, 3);
    Head head(d, 0);
    const Vec x = randomVec(static_cast<std::size_t>(batch) * seq * d.hidden, -1, 1);
    std::vector<std::int32_t> labels(static_cast<std::size_t>(batch) * seq);
    for (std::size_t i = 0; i < labels.size(); ++i) labels[i] = static_cast<std::int32_t>((i * 7) % d.vocab);
    const Vec dy = randomVec(x.size(), -1, 1);

    LayerView<double> viewD(layer);
    LayerView<float> viewF(layer);
    DecoderLayerCache<double> cacheD;
    DecoderLayerCache<float> cacheF;
    Vec yD(x.size());
    std::vector<float> xF = convert<float>(x);
    std::vector<float> yF(x.size());
    decoderLayerForward(d, batch, seq, viewD.params, x.data(), yD.data(), &cacheD);
    decoderLayerForward(d, batch, seq, viewF.params, xF.data(), yF.data(), &cacheF);
    const double forwardError = relativeError(yF, yD);
    CHECK(forwardError <= 1e-5, "float layer forward differs from double by %.3g", forwardError);

    Vec dxD(x.size());
    std::vector<float> dxF(x.size());
    std::vector<float> dyF = convert<float>(dy);
    Vec dQ(layer.q.weight.size());
    std::vector<float> dQF(dQ.size());
    DecoderLayerGrads<double> gradsD;
    DecoderLayerGrads<float> gradsF;
    gradsD.q.weight = dQ.data();
    gradsF.q.weight = dQF.data();
    decoderLayerBackward(d, batch, seq, viewD.params, cacheD, dy.data(), dxD.data(), gradsD);
    decoderLayerBackward(d, batch, seq, viewF.params, cacheF, dyF.data(), dxF.data(), gradsF);
    const double backwardError = std::max(relativeError(dxF, dxD), relativeError(dQF, dQ));
    CHECK(backwardError <= 1e-4, "float layer backward differs from double by %.3g", backwardError);

    HeadView<double> headD(head);
    HeadView<float> headF(head);
    const double lossD = headForward(d, batch, seq, headD.params, x.data(), labels.data(), -100,
                                     static_cast<HeadCache<double>*>(nullptr))
                             .loss;
    const double lossF = headForward(d, batch, seq, headF.params, xF.data(), labels.data(), -100,
                                     static_cast<HeadCache<float>*>(nullptr))
                             .loss;
    CHECK(std::abs(lossF - lossD) <= 1e-5 * std::abs(lossD), "float loss %.9g, double %.9g", lossF, lossD);
    std::printf("float vs double: layer forward %.2e, backward %.2e, loss %.2e\n", forwardError, backwardError,
                std::abs(lossF - lossD) / std::abs(lossD));
}

// One training step of layer + head, everything it produces concatenated.
template <typename T>
std::vector<T> stepOutputs(const LlamaDims& d, int batch, int seq, const Layer& layer, const Head& head, const Vec& x,
                           const std::vector<std::int32_t>& labels) {
    LayerView<T> view(layer);
    HeadView<T> headView(head);
    const std::size_t n = static_cast<std::size_t>(batch) * seq * d.hidden;
    std::vector<T> xs = convert<T>(x);
    std::vector<T> y(n);
    DecoderLayerCache<T> cache;
    decoderLayerForward(d, batch, seq, view.params, xs.data(), y.data(), &cache);
    HeadCache<T> headCache;
    const LossResult loss = headForward(d, batch, seq, headView.params, y.data(), labels.data(), -100, &headCache);
    std::vector<T> dy(n);
    std::vector<T> dHeadNorm(d.hidden);
    std::vector<T> dLm(head.lmHead.weight.size());
    HeadGrads<T> headGrads;
    headGrads.norm = dHeadNorm.data();
    headGrads.lmHead.weight = dLm.data();
    headBackward(d, batch, seq, headView.params, headCache, T(1), dy.data(), headGrads);
    std::vector<T> dx(n);
    std::vector<std::vector<T>> grads;
    DecoderLayerGrads<T> g;
    grads.emplace_back(d.hidden);
    g.inputNorm = grads.back().data();
    grads.emplace_back(d.hidden);
    g.postNorm = grads.back().data();
    std::vector<T> loraGrads[14];
    LinearGrads<T>* slots[] = {&g.q, &g.k, &g.v, &g.o, &g.gate, &g.up, &g.down};
    std::vector<Linear*> linears = const_cast<Layer&>(layer).linears();
    grads.reserve(16);
    for (int i = 0; i < 7; ++i) {
        grads.emplace_back(linears[i]->weight.size());
        slots[i]->weight = grads.back().data();
        loraGrads[2 * i].resize(linears[i]->loraA.size());
        loraGrads[2 * i + 1].resize(linears[i]->loraB.size());
        if (linears[i]->rank > 0) {
            slots[i]->loraA = loraGrads[2 * i].data();
            slots[i]->loraB = loraGrads[2 * i + 1].data();
        }
    }
    decoderLayerBackward(d, batch, seq, view.params, cache, dy.data(), dx.data(), g);
    std::vector<T> all = y;
    all.push_back(static_cast<T>(loss.loss));
    for (const auto* part : {&dy, &dHeadNorm, &dLm, &dx}) all.insert(all.end(), part->begin(), part->end());
    for (const auto& part : grads) all.insert(all.end(), part.begin(), part.end());
    for (const auto& part : loraGrads) all.insert(all.end(), part.begin(), part.end());
    return all;
}

// Both ways of combining the settings (llama.h, setKernelThreads): OpenBLAS threaded, and OpenBLAS
// single-threaded with the linears' GEMMs sliced over the kernel threads.
void testThreads() {
    const LlamaDims d = blockedDims();
    const int batch = 3;
    const int seq = 70;
    Layer layer(d, 2);
    Layer dropped = layer; // the same layer with LoRA dropout 0.3
    dropped.setDropout(0.3, 4242);
    Head head(d, 0);
    const Vec x = randomVec(static_cast<std::size_t>(batch) * seq * d.hidden, -1, 1);
    std::vector<std::int32_t> labels(static_cast<std::size_t>(batch) * seq);
    for (std::size_t i = 0; i < labels.size(); ++i) labels[i] = i % 5 == 0 ? -100 : static_cast<std::int32_t>((i * 13) % d.vocab);
    const int blasThreads = openblas_get_num_threads();
    for (int blas : {std::max(blasThreads, 2), 1}) {
        openblas_set_num_threads(blas);
        for (const Layer* l : {&layer, &dropped}) {
            const char* kind = l == &layer ? "" : " (LoRA dropout)";
            setKernelThreads(1);
            const std::vector<double> oneD = stepOutputs<double>(d, batch, seq, *l, head, x, labels);
            const std::vector<float> oneF = stepOutputs<float>(d, batch, seq, *l, head, x, labels);
            for (int threads : {2, 3, 8}) {
                setKernelThreads(threads);
                CHECK(bitwiseEqual(stepOutputs<double>(d, batch, seq, *l, head, x, labels), oneD),
                      "double%s, %d BLAS threads: %d kernel threads differ from 1", kind, blas, threads);
                CHECK(bitwiseEqual(stepOutputs<float>(d, batch, seq, *l, head, x, labels), oneF),
                      "float%s, %d BLAS threads: %d kernel threads differ from 1", kind, blas, threads);
            }
        }
    }
    openblas_set_num_threads(blasThreads);
    setKernelThreads(1);
    try {
        setKernelThreads(0);
        CHECK(false, "0 kernel threads accepted");
    } catch (const mixz::InvalidArgument&) {
    }
    std::printf("threads: 1, 2, 3 and 8 kernel threads give identical results (OpenBLAS threaded and not, with and "
                "without LoRA dropout)\n");
}

// -------------------------------------------------------------------------------------------------
// LoRA dropout

// The mask itself: over a million elements the kept fraction is 1 − p within 5 standard
// deviations, kept values are scaled by exactly 1 / (1 − p), the same (seed, index) always gives
// the same answer, and another seed gives another mask.
void testDropoutMaskStatistics() {
    const std::size_t n = 1 << 20;
    std::vector<float> ones(n, 1.0f);
    std::vector<float> out(n);
    for (double p : {0.05, 0.1, 0.5, 0.9}) {
        const detail::DropoutMask mask = detail::DropoutMask::of(p, 12345);
        mask.apply(0, n, ones.data(), out.data(), false);
        const float scale = static_cast<float>(1.0 / (1.0 - p));
        std::size_t kept = 0;
        bool valuesRight = true;
        for (std::size_t i = 0; i < n; ++i) {
            kept += out[i] != 0.0f;
            valuesRight &= out[i] == 0.0f || out[i] == scale;
            valuesRight &= (out[i] != 0.0f) == mask.keeps(i);
        }
        const double fraction = static_cast<double>(kept) / n;
        const double sigma = std::sqrt(p * (1 - p) / n);
        CHECK(std::abs(fraction - (1 - p)) <= 5 * sigma, "p %.2f: kept fraction %.5f, expected %.5f", p, fraction, 1 - p);
        CHECK(valuesRight, "p %.2f: kept values are not 1/(1-p) = %.9g", p, scale);
        std::size_t differ = 0;
        const detail::DropoutMask other = detail::DropoutMask::of(p, 12346);
        for (std::size_t i = 0; i < n; ++i) differ += other.keeps(i) != mask.keeps(i);
        const double expected = 2 * p * (1 - p);
        CHECK(std::abs(static_cast<double>(differ) / n - expected) <= 0.01, "p %.2f: seeds 12345 and 12346 disagree on"
              " %.4f of the elements, independent masks on %.4f", p, static_cast<double>(differ) / n, expected);
        std::printf("dropout mask p %.2f: kept %.5f (expected %.5f)\n", p, fraction, 1 - p);
    }
    CHECK(!detail::DropoutMask::of(0.0, 1).active(), "p 0 makes an active mask");
    // Element-wise accumulate: out += mask ⊙ x / (1 − p).
    const detail::DropoutMask mask = detail::DropoutMask::of(0.25, 9);
    std::vector<double> x = {1, 2, 3, 4, 5, 6, 7, 8};
    std::vector<double> acc(x.size(), 10.0);
    mask.apply(0, x.size(), x.data(), acc.data(), true);
    bool accumulated = true;
    for (std::size_t i = 0; i < x.size(); ++i) accumulated &= acc[i] == 10.0 + (mask.keeps(i) ? x[i] * (1.0 / 0.75) : 0.0);
    CHECK(accumulated, "accumulating apply");
}

// In the layer: with hidden = intermediate, W_down = 0, LoRA on down only with A = B = I and scale
// 1, the layer's output is h1 + (the LoRA input of down), so a training forward shows exactly
// which elements of act the kernel dropped: mask_i · act_i / (1 − p) with mask_i the DropoutMask of
// (down.loraDropoutSeed, i), and an evaluation forward shows act_i itself.
void testDropoutInLayer() {
    LlamaDims d = tinyDims();
    d.intermediate = d.hidden;
    const int batch = 2;
    const int seq = 7;
    const double p = 0.4;
    const std::uint64_t seed = 31337;
    Layer layer(d, 0);
    const int width = d.hidden;
    Linear& down = layer.down;
    down.rank = width;
    down.scale = 1;
    std::fill(down.weight.begin(), down.weight.end(), 0.0);
    down.loraA.assign(static_cast<std::size_t>(width) * width, 0.0);
    for (int i = 0; i < width; ++i) down.loraA[static_cast<std::size_t>(i) * width + i] = 1;
    down.loraB = down.loraA;
    const Vec x = randomVec(static_cast<std::size_t>(batch) * seq * width, -1, 1);

    // h1: down's LoRA branch off (B = 0); act: the evaluation output minus h1.
    Layer withoutBranch = layer;
    std::fill(withoutBranch.down.loraB.begin(), withoutBranch.down.loraB.end(), 0.0);
    const Vec h1 = layerForwardValue(d, batch, seq, withoutBranch, x);
    const Vec evaluation = layerForwardValue(d, batch, seq, layer, x);
    layer.down.dropout = p;
    layer.down.dropoutSeed = seed;
    CHECK(bitwiseEqual(layerForwardValue(d, batch, seq, layer, x), evaluation), "evaluation forward has dropout");
    const Vec training = layerForwardValue(d, batch, seq, layer, x, true);
    const detail::DropoutMask mask = detail::DropoutMask::of(p, seed);
    double worst = 0;
    std::size_t kept = 0;
    for (std::size_t i = 0; i < x.size(); ++i) {
        const double act = evaluation[i] - h1[i];
        const double expected = mask.keeps(i) ? act / (1 - p) : 0.0;
        worst = std::max(worst, std::abs((training[i] - h1[i]) - expected));
        kept += mask.keeps(i);
    }
    CHECK(worst <= 1e-12, "the layer's dropout differs from DropoutMask(seed, index) by %.3g", worst);
    CHECK(kept > 0 && kept < x.size(), "kept %zu of %zu", kept, x.size());

    // p = 0 with a seed is a linear without dropout, bit for bit (training forward and backward).
    Layer base(d, 2);
    Layer zero = base;
    zero.setDropout(0.0, 99);
    const Head head(d, 2);
    std::vector<std::int32_t> labels(static_cast<std::size_t>(batch) * seq);
    for (std::size_t i = 0; i < labels.size(); ++i) labels[i] = static_cast<std::int32_t>((i * 5) % d.vocab);
    CHECK(bitwiseEqual(stepOutputs<double>(d, batch, seq, zero, head, x, labels),
                       stepOutputs<double>(d, batch, seq, base, head, x, labels)),
          "p 0 changes a training step");
    CHECK(bitwiseEqual(stepOutputs<float>(d, batch, seq, zero, head, x, labels),
                       stepOutputs<float>(d, batch, seq, base, head, x, labels)),
          "p 0 changes a training step (float)");

    // Evaluation paths ignore p: the forward without a cache, the KV-cache forward and the head's
    // loss and logits.
    Layer dropped = base;
    dropped.setDropout(0.5, 7);
    CHECK(bitwiseEqual(layerForwardValue(d, batch, seq, dropped, x), layerForwardValue(d, batch, seq, base, x)),
          "evaluation forward has dropout");
    CHECK(!bitwiseEqual(layerForwardValue(d, batch, seq, dropped, x, true), layerForwardValue(d, batch, seq, base, x, true)),
          "training forward has no dropout");
    {
        LayerView<double> a(dropped);
        LayerView<double> b(base);
        KvCache<double> kvA(d, batch);
        KvCache<double> kvB(d, batch);
        Vec ya(x.size());
        Vec yb(x.size());
        decoderLayerForwardCached(d, seq, a.params, x.data(), ya.data(), kvA);
        decoderLayerForwardCached(d, seq, b.params, x.data(), yb.data(), kvB);
        CHECK(bitwiseEqual(ya, yb), "KV-cache forward has dropout");
    }
    Head headDropped = head;
    headDropped.lmHead.dropout = 0.5;
    headDropped.lmHead.dropoutSeed = 3;
    CHECK(headLoss(d, batch, seq, headDropped, x, labels).loss == headLoss(d, batch, seq, head, x, labels).loss,
          "evaluation loss has dropout");
    CHECK(headLoss(d, batch, seq, headDropped, x, labels, true).loss != headLoss(d, batch, seq, head, x, labels, true).loss,
          "training loss has no dropout");
    {
        HeadView<double> a(headDropped);
        HeadView<double> b(head);
        Vec la(static_cast<std::size_t>(batch) * seq * d.vocab);
        Vec lb(la.size());
        headLogits(d, static_cast<std::size_t>(batch) * seq, a.params, x.data(), la.data());
        headLogits(d, static_cast<std::size_t>(batch) * seq, b.params, x.data(), lb.data());
        CHECK(bitwiseEqual(la, lb), "headLogits has dropout");
    }

    // The backward uses the masks its forward drew (kept in the cache), not the params it is given.
    {
        LayerView<double> view(dropped);
        DecoderLayerCache<double> cache;
        Vec y(x.size());
        decoderLayerForward(d, batch, seq, view.params, x.data(), y.data(), &cache);
        const Vec dy = randomVec(x.size(), -1, 1);
        Vec dx1(x.size());
        Vec dx2(x.size());
        LayerGradBuffers g1(dropped, false, true);
        LayerGradBuffers g2(dropped, false, true);
        decoderLayerBackward(d, batch, seq, view.params, cache, dy.data(), dx1.data(), g1.grads);
        DecoderLayerParams<double> reseeded = view.params;
        reseeded.q.loraDropoutSeed += 1000;
        reseeded.down.loraDropout = 0;
        decoderLayerBackward(d, batch, seq, reseeded, cache, dy.data(), dx2.data(), g2.grads);
        CHECK(bitwiseEqual(dx1, dx2), "the backward reads the params' dropout, not the forward's");
    }
    std::printf("dropout in the layer: the kernel's mask is DropoutMask(seed, index) (error %.1e); p 0 and "
                "evaluation unchanged\n", worst);
}

// -------------------------------------------------------------------------------------------------
// Argument checks

void testInvalidArguments() {
    LlamaDims d = tinyDims();
    CHECK(throwsInvalid([&] { d.kvHeads = 2; validate(d); }, "kvHeads (2) must divide heads (3)"), "kvHeads");
    d = tinyDims();
    CHECK(throwsInvalid([&] { d.heads = 5; validate(d); }, "heads (5) must divide hidden (12)"), "heads");
    d = tinyDims();
    CHECK(throwsInvalid([&] { d.hidden = 6; d.heads = 2; d.kvHeads = 1; validate(d); }, "must be even"), "odd headDim");
    d = tinyDims();
    CHECK(throwsInvalid([&] { d.vocab = 0; validate(d); }, "LlamaDims.vocab must be positive, got 0"), "vocab");
    d = tinyDims();
    Layer layer(d, 0);
    LayerView<double> view(layer);
    Vec x(10 * d.hidden);
    Vec y(x.size());
    CHECK(throwsInvalid([&] { decoderLayerForward(d, 1, 10, view.params, x.data(), y.data(),
                                                  static_cast<DecoderLayerCache<double>*>(nullptr)); },
                        "seq 10 is longer than LlamaDims.maxSeq 8"),
          "seq > maxSeq");
    DecoderLayerParams<double> missing = view.params;
    missing.down.weight = nullptr;
    CHECK(throwsInvalid([&] { decoderLayerForward(d, 1, 5, missing, x.data(), y.data(),
                                                  static_cast<DecoderLayerCache<double>*>(nullptr)); },
                        "down.weight is null"),
          "null weight");
    missing = view.params;
    missing.k.loraA = x.data();
    missing.k.rank = 1;
    CHECK(throwsInvalid([&] { decoderLayerForward(d, 1, 5, missing, x.data(), y.data(),
                                                  static_cast<DecoderLayerCache<double>*>(nullptr)); },
                        "k.loraA and k.loraB must both be set"),
          "half a LoRA");
    CHECK(throwsInvalid([&] { KvCache<double> kv(d, 0); }, "batch must be positive"), "KV batch 0");
    {
        // A bias gradient of a linear without bias.
        DecoderLayerCache<double> cache;
        decoderLayerForward(d, 1, 5, view.params, x.data(), y.data(), &cache);
        DecoderLayerGrads<double> grads;
        Vec dBias(d.hidden);
        grads.o.bias = dBias.data();
        CHECK(throwsInvalid([&] { decoderLayerBackward(d, 1, 5, view.params, cache, y.data(), x.data(), grads); },
                            "a bias gradient of o requested, but o has no bias"),
              "bias gradient without bias");
    }
    for (double p : {1.0, -0.1, std::nan(""), 1.5}) {
        missing = view.params;
        missing.up.loraDropout = p;
        CHECK(throwsInvalid([&] { decoderLayerForward(d, 1, 5, missing, x.data(), y.data(),
                                                      static_cast<DecoderLayerCache<double>*>(nullptr)); },
                            "up.loraDropout must be in [0, 1)"),
              "LoRA dropout %g", p);
    }
    std::printf("invalid arguments: ok\n");
}

} // namespace

int main() {
    setKernelThreads(1);
    try {
        testLayerGradients("tiny, full training", tinyDims(), 2, 5, 0, true, false, 100000);
        testLayerGradients("tiny, LoRA rank 2 + base", tinyDims(), 2, 5, 2, true, true, 100000);
        testLayerGradients("tiny, LoRA rank 2 only", tinyDims(), 2, 5, 2, false, true, 100000);
        testLayerGradients("blocked (seq 70, GQA 4/2), LoRA + base", blockedDims(), 2, 70, 3, true, true, 40);
        testLayerGradients("tiny, LoRA rank 2 + dropout 0.3", tinyDims(), 2, 5, 2, false, true, 100000, 0.3);
        testLayerGradients("tiny, LoRA + base + dropout 0.6", tinyDims(), 2, 5, 2, true, true, 100000, 0.6);
        testLayerGradients("blocked, LoRA + dropout 0.1", blockedDims(), 2, 70, 3, false, true, 40, 0.1);
        testLayerGradients("tiny, q/k/v biases, full training", tinyDims(), 2, 5, 0, true, false, 100000, 0, true);
        testLayerGradients("tiny, q/k/v biases, LoRA + base + dropout", tinyDims(), 2, 5, 2, true, true, 100000, 0.3, true);
        testLayerGradients("blocked, q/k/v biases, LoRA + base", blockedDims(), 2, 70, 3, true, true, 40, 0, true);
        setKernelThreads(3);
        testLayerGradients("blocked, 3 threads", blockedDims(), 1, 67, 0, true, false, 25);
        setKernelThreads(1);
        testFrozenGradients();
        testCachedForward("tiny (steps 2, 1, 2)", tinyDims(), 2, 5, {2, 1, 2}, 2);
        testCachedForward("tiny (one token at a time)", tinyDims(), 2, 8, {1, 1, 1, 1, 1, 1, 1, 1}, 0);
        testCachedForward("tiny, q/k/v biases (steps 3, 1, 4)", tinyDims(), 2, 8, {3, 1, 4}, 2, true);
        testCachedForward("blocked (steps 30, 70, 1, 59)", blockedDims(), 2, 160, {30, 70, 1, 59}, 1);
        testEmbedding();
        testHead("LM head, full training", 0, true);
        testHead("LM head, LoRA rank 2 + base", 2, true);
        testHead("LM head, LoRA rank 2 only", 2, false);
        testHead("LM head, LoRA rank 2 + dropout 0.4", 2, true, 0.4);
        testHeadIgnored();
        testFloatAgainstDouble();
        testThreads();
        testDropoutMaskStatistics();
        testDropoutInLayer();
        testInvalidArguments();
    } catch (const std::exception& e) {
        ++failures;
        std::fprintf(stderr, "unexpected exception: %s\n", e.what());
    }
    std::printf(failures == 0 ? "OK: %d checks\n" : "%d FAILURE(S) of %d checks\n", failures == 0 ? checks : failures,
                checks);
    return failures == 0 ? 0 : 1;
}
