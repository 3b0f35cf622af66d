// mixz::model: the kernels of a LLaMA-family decoder, forward and backward, on gathered
// (full, unpartitioned) parameters in the compute precision T (float in the engine, double in the
// finite-difference tests). The ZeRO-3 engine (mixz/zero) owns partitions, gathers and releases;
// these functions only compute, and never allocate parameters.
//
// Layouts follow Hugging Face LLaMA so pretrained checkpoints and PEFT adapters line up:
//   activations      [batch, seq, hidden] row-major, token-major
//   linear weight    [out, in]   y = x·Wᵀ
//   linear bias      [out]       y = x·Wᵀ + b (optional: Qwen2's q/k/v), added before the LoRA branch
//   LoRA A           [r, in]     y += scale·(x·Aᵀ)·Bᵀ, scale = alpha / r (x through LoRA dropout
//                                when training with LinearParams::loraDropout > 0)
//   LoRA B           [out, r]
//   q/k/v            heads are contiguous blocks of headDim columns; rotary embedding uses
//                    rotate_half (pairs (i, i + headDim/2)), as HF's LlamaRotaryEmbedding.
//   RMSNorm          y = x / sqrt(mean(x²) + eps) · w
//   MLP              down(silu(gate(x)) ⊙ up(x))
//   head             logits = norm(x)·lm_headᵀ; the loss at position t predicts labels[t + 1]
//                    (labels are shifted inside, as HF causal LMs do); label == ignoreIndex is skipped.
//
// Gradient pointers are outputs that are overwritten (not accumulated). A null gradient pointer
// means "frozen": that gradient is not computed (LoRA training skips every dW of the base).
//
// Memory: caches own what a forward keeps for its backward. The gradients flowing inside a
// backward, and everything a forward without a cache (evaluation, generation) computes, live in
// per-thread scratch buffers that grow to the largest shape seen and are then reused, so steady
// state allocates nothing; they are not counted by the caches' bytes().
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

namespace mixz::model {

// How the rotary inverse frequencies are rescaled (Hugging Face's config.json rope_scaling, whose
// attention scaling is 1 for both kinds, so only the frequencies change): none; linear (every
// frequency divided by ropeFactor: positions interpolated); llama3 (LLaMA 3.1/3.2: long wavelengths
// divided by ropeFactor, short ones kept, a smooth blend between; see ropeInverseFrequency).
enum class RopeScaling : int { none = 0, linear = 1, llama3 = 2 };

struct LlamaDims {
    int vocab = 0;
    int hidden = 0;
    int layers = 0;
    int heads = 0;
    int kvHeads = 0;
    int intermediate = 0;
    int maxSeq = 0;
    double ropeTheta = 10000.0;
    double rmsEps = 1e-6;
    RopeScaling ropeScaling = RopeScaling::none;
    // rope_scaling's numbers: factor (linear, llama3); low_freq_factor, high_freq_factor and
    // original_max_position_embeddings (llama3 only). Not read under RopeScaling::none.
    double ropeFactor = 1.0;
    double ropeLowFreqFactor = 1.0;
    double ropeHighFreqFactor = 4.0;
    double ropeOriginalMaxSeq = 8192.0;
    // Biases on q, k and v (Qwen2): the parameter set has model.layers.{i}.self_attn.{q,k,v}_proj.bias.
    // The kernels read the biases from LinearParams::bias; this flag is what the parameter store
    // builds the set from.
    bool attentionBias = false;

    int headDim() const { return hidden / heads; }
    int kvDim() const { return headDim() * kvHeads; }
};

// Throws InvalidArgument unless every size is positive, heads divides hidden, kvHeads divides
// heads and headDim is even, and the rotary scaling's numbers are usable (factor > 0; llama3:
// 0 < low_freq_factor < high_freq_factor, original_max_position_embeddings > 0).
void validate(const LlamaDims& dims);

// The inverse frequency of rotary pair i (0 ≤ i < headDim/2) under dims' theta and scaling, in
// double. The one definition of the frequencies: the CPU kernels' tables and the CUDA backend's
// host-built tables both call it, so the backends rotate by the same angles.
double ropeInverseFrequency(const LlamaDims& dims, int i);

// Whether a and b give the same rotary tables (theta, head size, scaling): what a cached table is
// keyed on.
bool sameRotary(const LlamaDims& a, const LlamaDims& b);

// LoRA dropout (PEFT's lora_dropout): y = x·Wᵀ + scale·(dropout(x)·Aᵀ)·Bᵀ, where dropout is
// inverted dropout of probability p on the LoRA branch's input only. It applies only in a
// training forward (one given a cache); a forward without a cache (evaluation) and the KV-cache
// forward (generation) use x itself. The mask is a pure function of (loraDropoutSeed, element
// index) — a counter-based hash, no RNG state — so it does not depend on the thread count, and the
// backward applies the mask its forward drew (the cache keeps p and the seed; the backward's own
// params' dropout fields are not read). Distinct linears and steps need distinct seeds (the caller
// picks them). p = 0 computes exactly what a linear without dropout computes.
template <typename T>
struct LinearParams {
    const T* weight = nullptr; // [out, in]
    // [out], null without bias. y = x·Wᵀ + b + scale·(dropout(x)·Aᵀ)·Bᵀ, added in that order
    // (the bias onto the base GEMM's output, then the LoRA branch onto that).
    const T* bias = nullptr;
    const T* loraA = nullptr;  // [rank, in], null without LoRA
    const T* loraB = nullptr;  // [out, rank]
    int rank = 0;
    T loraScale = 0;
    double loraDropout = 0;             // p in [0, 1); InvalidArgument outside
    std::uint64_t loraDropoutSeed = 0;  // selects the mask
};

template <typename T>
struct LinearGrads {
    T* weight = nullptr; // null: frozen
    T* bias = nullptr;   // [out] = Σ over rows of dy; null: frozen (InvalidArgument without a bias)
    T* loraA = nullptr;
    T* loraB = nullptr;
};

template <typename T>
struct DecoderLayerParams {
    const T* inputNorm = nullptr; // [hidden]
    LinearParams<T> q, k, v, o;   // q [hidden, hidden], k/v [kvDim, hidden], o [hidden, hidden]
    const T* postNorm = nullptr;  // [hidden]
    LinearParams<T> gate, up, down; // gate/up [intermediate, hidden], down [hidden, intermediate]
};

template <typename T>
struct DecoderLayerGrads {
    T* inputNorm = nullptr;
    LinearGrads<T> q, k, v, o;
    T* postNorm = nullptr;
    LinearGrads<T> gate, up, down;
};

// What a layer's forward keeps for its backward. Owns its memory; reused across steps (buffers
// grow, never shrink, so steady-state steps do not allocate).
template <typename T>
class DecoderLayerCache {
public:
    DecoderLayerCache();
    ~DecoderLayerCache();
    DecoderLayerCache(DecoderLayerCache&&) noexcept;
    DecoderLayerCache& operator=(DecoderLayerCache&&) noexcept;

    // Bytes held now (activations in memoryReport()).
    std::size_t bytes() const;
    // Frees the buffers (after the backward that used them, when memory matters).
    void release();

    struct State;
    std::unique_ptr<State> state;
};

// y = layer(x) for `batch` sequences of `seq` tokens at positions [0, seq). `cache` null: no
// backward will follow (evaluation), nothing is kept. x and y must not alias.
// `positions` (packed rows, [batch, seq]; null: 0, 1, … per row): several examples share a row;
// each token's position in its own example is 0 where the example starts, else the previous
// token's + 1, and every row starts at 0 (validatePositions). A token attends only to the earlier
// tokens of its own example, and the rotary embedding uses these positions; the cache keeps them
// for the backward.
template <typename T>
void decoderLayerForward(const LlamaDims& dims, int batch, int seq, const DecoderLayerParams<T>& params, const T* x,
                         T* y, DecoderLayerCache<T>* cache, const std::int32_t* positions = nullptr);

// Throws InvalidArgument naming the first position that breaks the rule above (null: nothing to check).
void validatePositions(const std::int32_t* positions, int batch, int seq);

// dx and the parameter gradients from dy and what the forward kept. dx and dy must not alias.
// dx null: not wanted (the first layer under a frozen embedding), which saves the q/k/v input
// GEMMs unless grads.inputNorm is wanted. A LoRA gradient for a linear without LoRA, or a bias
// gradient for a linear without bias, is an InvalidArgument.
template <typename T>
void decoderLayerBackward(const LlamaDims& dims, int batch, int seq, const DecoderLayerParams<T>& params,
                          const DecoderLayerCache<T>& cache, const T* dy, T* dx, const DecoderLayerGrads<T>& grads);

// Keys and values of earlier positions, for generation. One per layer.
template <typename T>
class KvCache {
public:
    // Room for `batch` sequences of up to dims.maxSeq positions.
    KvCache(const LlamaDims& dims, int batch);
    int batch() const { return batch_; }
    int length() const { return length_; } // positions filled so far
    void reset() { length_ = 0; }
    std::size_t bytes() const { return keys_.size() * sizeof(T) * 2; }

    // [batch, maxSeq, kvDim]
    std::vector<T>& keys() { return keys_; }
    std::vector<T>& values() { return values_; }
    void setLength(int length) { length_ = length; }

private:
    int batch_ = 0;
    int length_ = 0;
    std::vector<T> keys_;
    std::vector<T> values_;
};

// Inference forward of `seq` new tokens per sequence at positions [kv.length(), kv.length() + seq):
// appends their keys and values to `kv` and attends over everything cached (causal). Throws
// InvalidArgument when the positions would pass dims.maxSeq.
template <typename T>
void decoderLayerForwardCached(const LlamaDims& dims, int seq, const DecoderLayerParams<T>& params, const T* x, T* y,
                               KvCache<T>& kv);

// out[i, :] = table[ids[i], :] for `tokens` ids. Throws InvalidArgument naming the first id
// outside [0, vocab).
template <typename T>
void embeddingForward(const LlamaDims& dims, const std::int32_t* ids, std::size_t tokens, const T* table, T* out);

// dTable (overwritten, [vocab, hidden]) = Σ over tokens of dOut rows scattered to their ids.
template <typename T>
void embeddingBackward(const LlamaDims& dims, const std::int32_t* ids, std::size_t tokens, const T* dOut, T* dTable);

template <typename T>
struct HeadParams {
    const T* norm = nullptr; // final RMSNorm [hidden]
    LinearParams<T> lmHead;  // [vocab, hidden]
};

template <typename T>
struct HeadGrads {
    T* norm = nullptr;
    LinearGrads<T> lmHead;
};

template <typename T>
class HeadCache {
public:
    HeadCache();
    ~HeadCache();
    HeadCache(HeadCache&&) noexcept;
    HeadCache& operator=(HeadCache&&) noexcept;
    std::size_t bytes() const;
    void release();

    struct State;
    std::unique_ptr<State> state;
};

struct LossResult {
    double loss = 0;          // mean cross-entropy over counted positions (0 when none)
    std::size_t counted = 0;  // positions whose shifted label was not ignoreIndex
};

// Final norm, LM head and shifted mean cross-entropy. labels [batch, seq]; a label outside
// [0, vocab) other than ignoreIndex throws InvalidArgument naming it. `cache` null: no backward.
template <typename T>
LossResult headForward(const LlamaDims& dims, int batch, int seq, const HeadParams<T>& params, const T* x,
                       const std::int32_t* labels, std::int32_t ignoreIndex, HeadCache<T>* cache);

// dx from d(loss)/d(loss) = lossGrad (the engine passes loss scale / accumulation steps), and
// the head's parameter gradients. dx null: not wanted.
template <typename T>
void headBackward(const LlamaDims& dims, int batch, int seq, const HeadParams<T>& params, const HeadCache<T>& cache,
                  T lossGrad, T* dx, const HeadGrads<T>& grads);

// logits [rows, vocab] of the last norm + LM head for `rows` hidden vectors (generation).
template <typename T>
void headLogits(const LlamaDims& dims, std::size_t rows, const HeadParams<T>& params, const T* x, T* logits);

// Threads the kernels may use (the element-wise and attention loops; BLAS has its own setting).
// Default: 1. Ranks sharing a host divide the cores among themselves. Throws InvalidArgument below 1.
// How the two settings combine: with OpenBLAS single-threaded (OPENBLAS_NUM_THREADS=1) the kernels
// also divide each linear's GEMM among these threads in fixed slices, so one pool does all the
// work; with OpenBLAS threaded, its GEMMs are its own and the attention's per-head GEMMs run one
// after another (never several threaded GEMMs at once). Results never depend on kernelThreads().
void setKernelThreads(int threads);
int kernelThreads();

} // namespace mixz::model
