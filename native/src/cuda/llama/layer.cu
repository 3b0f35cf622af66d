// NOT YET RUN ON A GPU (see llama_device.h).
//
// The decoder layer on the device: forward (training and evaluation), backward, and the
// KV-cache forward of generation, step for step the CPU's layerForward / decoderLayerBackward
// (src/model/llama.cc), which is the reference to read this against.
//
// Attention materializes the scores of one query head at a time for every sequence of the batch
// (cuBLAS strided-batched GEMMs over the batch; the key/value head of query head h is h / group,
// so a head's GEMMs read its group's K and V). The training forward keeps the probabilities
// [batch, heads, seq, seq] for the backward as the CPU does. BOTTLENECK for a 1B model at long
// sequences: O(seq²) memory per layer kept for the backward and the full square computed (the
// causal upper triangle is computed and then zeroed); a fused flash-style kernel replaces this.
#include "llama_device.h"

#include <algorithm>
#include <utility>

#include "mixz/common/error.h"
#include "mixz/model/elementwise.h"
#include "ops.h"

namespace mixz::cuda {

using namespace llamadev;

namespace {

enum Linear : int { kQ, kK, kV, kO, kGate, kUp, kDown };

class LayerCache final : public backend::ActivationCache {
public:
    // The store's buffers remember the context they were allocated on (DeviceBuffer).
    explicit LayerCache(DeviceContext&) {}
    std::size_t bytes() const override { return store.bytes(); }
    void release() override { store.release(); }

    LayerStore store;
};

class DeviceKvCache final : public backend::KvCache {
public:
    DeviceKvCache(DeviceContext& ctx, const model::LlamaDims& dims, int batch) : batch_(batch) {
        model::validate(dims);
        if (batch <= 0) MIXZ_THROW(InvalidArgument, "KvCache: batch must be positive, got ", batch);
        elements_ = static_cast<std::size_t>(batch) * dims.maxSeq * dims.kvDim();
        // Zeroed as the CPU's cache is (never read before written, but deterministic to inspect).
        MIXZ_CUDA_CHECK(cudaMemsetAsync(keys.grow<float>(ctx, elements_), 0, elements_ * sizeof(float), ctx.stream));
        MIXZ_CUDA_CHECK(cudaMemsetAsync(values.grow<float>(ctx, elements_), 0, elements_ * sizeof(float), ctx.stream));
        MIXZ_CUDA_CHECK(cudaStreamSynchronize(ctx.stream));
    }
    int batch() const override { return batch_; }
    int length() const override { return length_; }
    void reset() override { length_ = 0; }
    std::size_t bytes() const override { return keys.bytes() + values.bytes(); }

    std::size_t elements() const { return elements_; }
    void setLength(int length) { length_ = length; }

    DeviceBuffer keys, values; // [batch, maxSeq, kvDim]

private:
    int batch_ = 0;
    int length_ = 0;
    std::size_t elements_ = 0;
};

const model::LinearParams<float>& linearOf(const model::DecoderLayerParams<float>& p, int which) {
    const model::LinearParams<float>* all[7] = {&p.q, &p.k, &p.v, &p.o, &p.gate, &p.up, &p.down};
    return *all[which];
}

// Attention forward over `batch` sequences of `queries` new positions at [past, past + queries)
// attending to keys [0, past + queries); k and v of sequence b at k + b·kvBatchStride. probs null:
// not kept (the scores of one head live in the workspace).
void attentionForward(DeviceContext& ctx, Workspace& ws, const model::LlamaDims& dims, int batch, int queries, int past,
                      const float* q, const float* k, const float* v, long long kvBatchStride, float* out, float* probs) {
    const int heads = dims.heads;
    const int headDim = dims.headDim();
    const int width = heads * headDim;
    const int kvWidth = dims.kvHeads * headDim;
    const int group = heads / dims.kvHeads;
    const int keys = past + queries;
    const float scale = model::elementwise::attentionScale<float>(headDim);
    const long long square = static_cast<long long>(queries) * keys;
    float* scratch = probs == nullptr ? ws.slot(ctx, kScores, static_cast<std::size_t>(batch) * square) : nullptr;
    const long long scoreStride = probs != nullptr ? heads * square : square;
    for (int h = 0; h < heads; ++h) {
        const int kvHead = h / group;
        float* scores = probs != nullptr ? probs + h * square : scratch;
        // scores[b] = scale · Q[b, :, h] · K[b, :, kvHead]ᵀ   [queries, keys]
        gemmStridedBatched(ctx, false, true, queries, keys, headDim, scale, q + h * headDim, width,
                           static_cast<long long>(queries) * width, k + kvHead * headDim, kvWidth, kvBatchStride, 0.0f,
                           scores, keys, scoreStride, batch);
        causalSoftmax(ctx, batch, queries, keys, past, scores, scoreStride);
        // out[b, :, h] = P[b] · V[b, :, kvHead]
        gemmStridedBatched(ctx, false, false, queries, headDim, keys, 1.0f, scores, keys, scoreStride,
                           v + kvHead * headDim, kvWidth, kvBatchStride, 0.0f, out + h * headDim, width,
                           static_cast<long long>(queries) * width, batch);
    }
}

// The backward of a full-sequence forward that kept probs: dq, dk, dv overwritten. Query heads are
// taken in order, so the heads of a group add their dk, dv in a fixed order (the first overwrites).
void attentionBackward(DeviceContext& ctx, Workspace& ws, const model::LlamaDims& dims, int batch, int seq,
                       const float* q, const float* k, const float* v, const float* probs, const float* dOut, float* dq,
                       float* dk, float* dv) {
    const int heads = dims.heads;
    const int headDim = dims.headDim();
    const int width = heads * headDim;
    const int kvWidth = dims.kvHeads * headDim;
    const int group = heads / dims.kvHeads;
    const float scale = model::elementwise::attentionScale<float>(headDim);
    const long long square = static_cast<long long>(seq) * seq;
    const long long rowsStride = static_cast<long long>(seq) * width;
    const long long kvStride = static_cast<long long>(seq) * kvWidth;
    float* dS = ws.slot(ctx, kScores, static_cast<std::size_t>(batch) * square);
    for (int h = 0; h < heads; ++h) {
        const int kvHead = h / group;
        const float* p = probs + h * square;
        const long long pStride = heads * square;
        const float beta = h % group == 0 ? 0.0f : 1.0f;
        // dP[b] = dOut[b, :, h] · V[b, :, kvHead]ᵀ, then dS in place.
        gemmStridedBatched(ctx, false, true, seq, seq, headDim, 1.0f, dOut + h * headDim, width, rowsStride,
                           v + kvHead * headDim, kvWidth, kvStride, 0.0f, dS, seq, square, batch);
        softmaxBackward(ctx, batch, seq, p, pStride, dS, scale);
        // dQ[b, :, h] = dS[b] · K[b, :, kvHead]
        gemmStridedBatched(ctx, false, false, seq, headDim, seq, 1.0f, dS, seq, square, k + kvHead * headDim, kvWidth,
                           kvStride, 0.0f, dq + h * headDim, width, rowsStride, batch);
        // dK[b, :, kvHead] (+)= dS[b]ᵀ · Q[b, :, h];  dV[b, :, kvHead] (+)= P[b]ᵀ · dOut[b, :, h]
        gemmStridedBatched(ctx, true, false, seq, headDim, seq, 1.0f, dS, seq, square, q + h * headDim, width,
                           rowsStride, beta, dk + kvHead * headDim, kvWidth, kvStride, batch);
        gemmStridedBatched(ctx, true, false, seq, headDim, seq, 1.0f, p, seq, pStride, dOut + h * headDim, width,
                           rowsStride, beta, dv + kvHead * headDim, kvWidth, kvStride, batch);
    }
}

// The CPU's layerForward: `batch` sequences of `seq` new tokens at positions [past, past + seq).
// train: keep the input and the probabilities, draw the LoRA dropout masks. kv: append the new keys
// and values and attend over the cache.
void layerForward(DeviceContext& ctx, Workspace& ws, const model::LlamaDims& dims, int batch, int seq, int past,
                  const model::DecoderLayerParams<float>& p, const float* x, float* y, LayerStore& s, bool train,
                  DeviceKvCache* kv) {
    const int hidden = dims.hidden;
    const int kvDim = dims.kvDim();
    const int inter = dims.intermediate;
    const int rows = batch * seq;
    const std::size_t n = static_cast<std::size_t>(rows);
    const float eps = static_cast<float>(dims.rmsEps);

    s.record(dims, batch, seq);
    if (train) {
        MIXZ_CUDA_CHECK(cudaMemcpyAsync(s.x.grow<float>(ctx, n * hidden), x, n * hidden * sizeof(float),
                                        cudaMemcpyDeviceToDevice, ctx.stream));
    }
    for (int i = 0; i < 7; ++i) s.masks[i] = train ? dropoutOf(linearOf(p, i)) : Dropout{};
    auto loraHidden = [&](int i) { return s.lora[i].grow<float>(ctx, n * loraRank(linearOf(p, i))); };
    ensureRope(ctx, ws, dims);

    // Attention block: xn1 = norm(x); q, k, v; rotary; attention; h1 = x + o(ctx).
    float* rstd1 = s.rstd1.grow<float>(ctx, n);
    float* xn1 = s.xn1.grow<float>(ctx, n * hidden);
    rmsNormForward(ctx, n, hidden, x, p.inputNorm, eps, xn1, rstd1);
    float* q = s.q.grow<float>(ctx, n * hidden);
    float* k = s.k.grow<float>(ctx, n * kvDim);
    float* v = s.v.grow<float>(ctx, n * kvDim);
    linearForward(ctx, ws, rows, hidden, hidden, p.q, xn1, q, loraHidden(kQ), s.masks[kQ]);
    linearForward(ctx, ws, rows, hidden, kvDim, p.k, xn1, k, loraHidden(kK), s.masks[kK]);
    linearForward(ctx, ws, rows, hidden, kvDim, p.v, xn1, v, loraHidden(kV), s.masks[kV]);
    rope(ctx, ws, n, seq, past, dims.heads, dims.headDim(), q, false);
    rope(ctx, ws, n, seq, past, dims.kvHeads, dims.headDim(), k, false);

    const float* keys = k;
    const float* values = v;
    long long kvBatchStride = static_cast<long long>(seq) * kvDim;
    if (kv != nullptr) {
        kvBatchStride = static_cast<long long>(dims.maxSeq) * kvDim;
        float* cachedKeys = kv->keys.as<float>();
        float* cachedValues = kv->values.as<float>();
        const std::size_t bytes = static_cast<std::size_t>(seq) * kvDim * sizeof(float);
        for (int b = 0; b < batch; ++b) {
            const std::size_t slot = static_cast<std::size_t>(b) * kvBatchStride + static_cast<std::size_t>(past) * kvDim;
            const std::size_t from = static_cast<std::size_t>(b) * seq * kvDim;
            MIXZ_CUDA_CHECK(cudaMemcpyAsync(cachedKeys + slot, k + from, bytes, cudaMemcpyDeviceToDevice, ctx.stream));
            MIXZ_CUDA_CHECK(cudaMemcpyAsync(cachedValues + slot, v + from, bytes, cudaMemcpyDeviceToDevice, ctx.stream));
        }
        keys = cachedKeys;
        values = cachedValues;
    }
    float* attended = s.ctx.grow<float>(ctx, n * hidden);
    float* probs = train ? s.probs.grow<float>(ctx, static_cast<std::size_t>(batch) * dims.heads * seq * seq) : nullptr;
    attentionForward(ctx, ws, dims, batch, seq, past, q, keys, values, kvBatchStride, attended, probs);

    float* h1 = s.h1.grow<float>(ctx, n * hidden);
    linearForward(ctx, ws, rows, hidden, hidden, p.o, attended, h1, loraHidden(kO), s.masks[kO]);
    addInPlace(ctx, n * hidden, h1, x);

    // MLP block: xn2 = norm(h1); act = silu(gate(xn2)) ⊙ up(xn2); y = h1 + down(act).
    float* rstd2 = s.rstd2.grow<float>(ctx, n);
    float* xn2 = s.xn2.grow<float>(ctx, n * hidden);
    rmsNormForward(ctx, n, hidden, h1, p.postNorm, eps, xn2, rstd2);
    float* gate = s.gate.grow<float>(ctx, n * inter);
    float* up = s.up.grow<float>(ctx, n * inter);
    float* act = s.act.grow<float>(ctx, n * inter);
    linearForward(ctx, ws, rows, hidden, inter, p.gate, xn2, gate, loraHidden(kGate), s.masks[kGate]);
    linearForward(ctx, ws, rows, hidden, inter, p.up, xn2, up, loraHidden(kUp), s.masks[kUp]);
    swigluForward(ctx, n * inter, gate, up, act);
    linearForward(ctx, ws, rows, inter, hidden, p.down, act, y, loraHidden(kDown), s.masks[kDown]);
    addInPlace(ctx, n * hidden, y, h1);
}

// Linear biases (Qwen2's q/k/v) are computed by the CPU kernels only so far.
void refuseBiases(const model::DecoderLayerParams<float>& p, const char* what) {
    const std::pair<const char*, const model::LinearParams<float>*> linears[] = {
        {"q", &p.q}, {"k", &p.k}, {"v", &p.v}, {"o", &p.o}, {"gate", &p.gate}, {"up", &p.up}, {"down", &p.down}};
    for (const auto& [name, linear] : linears) {
        if (linear->bias != nullptr) {
            MIXZ_THROW(InvalidArgument, what, ": ", name,
                       " has a bias; linear biases are not supported by the CUDA backend yet");
        }
    }
}

} // namespace

std::unique_ptr<backend::ActivationCache> makeLayerCache(DeviceContext& ctx) {
    return std::make_unique<LayerCache>(ctx);
}

std::unique_ptr<backend::KvCache> makeKvCache(DeviceContext& ctx, const model::LlamaDims& dims, int batch) {
    return std::make_unique<DeviceKvCache>(ctx, dims, batch);
}

void decoderLayerForward(DeviceContext& ctx, const model::LlamaDims& dims, int batch, int seq,
                         const model::DecoderLayerParams<float>& params, const float* x, float* y,
                         backend::ActivationCache* cache) {
    constexpr const char* what = "decoderLayerForward";
    refuseBiases(params, what);
    model::checkLayerForward(dims, batch, seq, params, x, y, what);
    LayerCache* own = nullptr;
    if (cache != nullptr) {
        own = dynamic_cast<LayerCache*>(cache);
        MIXZ_ENFORCE(own != nullptr, what, ": the cache was not made by this backend's makeLayerCache");
    }
    Workspace& ws = workspaceOf(ctx);
    std::lock_guard<std::mutex> lock(ws.mutex);
    if (own == nullptr) {
        layerForward(ctx, ws, dims, batch, seq, 0, params, x, y, ws.layer, false, nullptr);
    } else {
        layerForward(ctx, ws, dims, batch, seq, 0, params, x, y, own->store, true, nullptr);
    }
    MIXZ_CUDA_CHECK(cudaStreamSynchronize(ctx.stream));
}

void decoderLayerForwardCached(DeviceContext& ctx, const model::LlamaDims& dims, int seq,
                               const model::DecoderLayerParams<float>& params, const float* x, float* y,
                               backend::KvCache& kvCache) {
    constexpr const char* what = "decoderLayerForwardCached";
    refuseBiases(params, what);
    auto* kv = dynamic_cast<DeviceKvCache*>(&kvCache);
    MIXZ_ENFORCE(kv != nullptr, what, ": the KV cache was not made by this backend's makeKvCache");
    const int past = kv->length();
    model::checkLayerForwardCached(dims, kv->batch(), seq, past, kv->elements(), kv->elements(), params, x, y, what);
    Workspace& ws = workspaceOf(ctx);
    std::lock_guard<std::mutex> lock(ws.mutex);
    layerForward(ctx, ws, dims, kv->batch(), seq, past, params, x, y, ws.layer, false, kv);
    MIXZ_CUDA_CHECK(cudaStreamSynchronize(ctx.stream));
    kv->setLength(past + seq);
}

void decoderLayerBackward(DeviceContext& ctx, const model::LlamaDims& dims, int batch, int seq,
                          const model::DecoderLayerParams<float>& params, const backend::ActivationCache& cache,
                          const float* dy, float* dx, const model::DecoderLayerGrads<float>& grads) {
    constexpr const char* what = "decoderLayerBackward";
    refuseBiases(params, what);
    model::checkLayerBackward(dims, batch, seq, params, dy, grads, what);
    const auto* own = dynamic_cast<const LayerCache*>(&cache);
    MIXZ_ENFORCE(own != nullptr, what, ": the cache was not made by this backend's makeLayerCache");
    const LayerStore& s = own->store;
    MIXZ_ENFORCE(s.batch != 0, "decoderLayerBackward: the cache holds no forward");
    MIXZ_ENFORCE(s.batch == batch && s.seq == seq && s.hidden == dims.hidden && s.kvDim == dims.kvDim() &&
                     s.intermediate == dims.intermediate && s.heads == dims.heads,
                 "decoderLayerBackward: the cache holds a forward of batch ", s.batch, " seq ", s.seq, ", not batch ",
                 batch, " seq ", seq, " of these dims");

    Workspace& ws = workspaceOf(ctx);
    std::lock_guard<std::mutex> lock(ws.mutex);
    ensureRope(ctx, ws, dims);
    const int hidden = dims.hidden;
    const int kvDim = dims.kvDim();
    const int inter = dims.intermediate;
    const int rows = batch * seq;
    const std::size_t n = static_cast<std::size_t>(rows);
    const int maxRank = std::max({loraRank(params.q), loraRank(params.k), loraRank(params.v), loraRank(params.o),
                                  loraRank(params.gate), loraRank(params.up), loraRank(params.down)});
    float* dHidden = ws.slot(ctx, kDHidden, n * maxRank);
    auto lora = [&](int i) { return s.lora[i].as<float>(); };

    // MLP block.
    float* dAct = ws.slot(ctx, kDAct, n * inter);
    float* dUp = ws.slot(ctx, kDUp, n * inter);
    linearBackward(ctx, ws, rows, inter, hidden, params.down, s.act.as<float>(), lora(kDown), dy, 1.0f, dAct, false,
                   grads.down, dHidden, s.masks[kDown]);
    swigluBackward(ctx, n * inter, s.gate.as<float>(), s.up.as<float>(), dAct, dAct, dUp);
    float* dXn = ws.slot(ctx, kDXn, n * hidden);
    const float* xn2 = s.xn2.as<float>();
    linearBackward(ctx, ws, rows, hidden, inter, params.gate, xn2, lora(kGate), dAct, 1.0f, dXn, false, grads.gate,
                   dHidden, s.masks[kGate]);
    linearBackward(ctx, ws, rows, hidden, inter, params.up, xn2, lora(kUp), dUp, 1.0f, dXn, true, grads.up, dHidden,
                   s.masks[kUp]);
    float* dH1 = ws.slot(ctx, kDH1, n * hidden);
    rmsNormBackward(ctx, ws, n, hidden, s.h1.as<float>(), params.postNorm, s.rstd2.as<float>(), dXn, dy, dH1,
                    grads.postNorm);

    // Attention block.
    float* dCtx = ws.slot(ctx, kDCtx, n * hidden);
    linearBackward(ctx, ws, rows, hidden, hidden, params.o, s.ctx.as<float>(), lora(kO), dH1, 1.0f, dCtx, false,
                   grads.o, dHidden, s.masks[kO]);
    float* dq = ws.slot(ctx, kDq, n * hidden);
    float* dk = ws.slot(ctx, kDk, n * kvDim);
    float* dv = ws.slot(ctx, kDv, n * kvDim);
    attentionBackward(ctx, ws, dims, batch, seq, s.q.as<float>(), s.k.as<float>(), s.v.as<float>(),
                      s.probs.as<float>(), dCtx, dq, dk, dv);
    rope(ctx, ws, n, seq, 0, dims.heads, dims.headDim(), dq, true);
    rope(ctx, ws, n, seq, 0, dims.kvHeads, dims.headDim(), dk, true);

    // dxn1 is needed for dx and for the input norm's gradient; without either, only the
    // projections' parameter gradients remain.
    const bool needInput = dx != nullptr || grads.inputNorm != nullptr;
    float* dXn1 = needInput ? dXn : nullptr;
    const float* xn1 = s.xn1.as<float>();
    linearBackward(ctx, ws, rows, hidden, hidden, params.q, xn1, lora(kQ), dq, 1.0f, dXn1, false, grads.q, dHidden,
                   s.masks[kQ]);
    linearBackward(ctx, ws, rows, hidden, kvDim, params.k, xn1, lora(kK), dk, 1.0f, dXn1, true, grads.k, dHidden,
                   s.masks[kK]);
    linearBackward(ctx, ws, rows, hidden, kvDim, params.v, xn1, lora(kV), dv, 1.0f, dXn1, true, grads.v, dHidden,
                   s.masks[kV]);
    if (needInput) {
        rmsNormBackward(ctx, ws, n, hidden, s.x.as<float>(), params.inputNorm, s.rstd1.as<float>(), dXn, dH1, dx,
                        grads.inputNorm);
    }
    MIXZ_CUDA_CHECK(cudaStreamSynchronize(ctx.stream));
}

} // namespace mixz::cuda
