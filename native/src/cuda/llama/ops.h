// NOT YET RUN ON A GPU (see llama_device.h).
//
// Internal to src/cuda/llama: device buffers, the per-context workspace, the row-major GEMM
// mapping onto cuBLAS, and the launchers of the element-wise and row kernels (ops.cu). Launchers
// enqueue on ctx.stream and do not synchronize; the public entry points synchronize once at their
// end. The kernels' argument checks are the CPU's own (mixz/model/kernel_arguments.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>

#include "cuda/device_context.h"
#include "mixz/model/kernel_arguments.h"
#include "mixz/model/llama.h"

namespace mixz::cuda::llamadev {

// Device memory owned by one object, growing only (contents are not kept across a growth).
// Growing or freeing first synchronizes the stream: the allocator caches freed blocks and could
// hand this one to the next allocation while kernels queued earlier still read it.
class DeviceBuffer {
public:
    DeviceBuffer() = default;
    DeviceBuffer(const DeviceBuffer&) = delete;
    DeviceBuffer& operator=(const DeviceBuffer&) = delete;
    ~DeviceBuffer() { release(); }

    // At least `count` elements of T (a request of 0 still gives a valid pointer).
    template <typename T>
    T* grow(DeviceContext& ctx, std::size_t count) {
        return static_cast<T*>(growBytes(ctx, count * sizeof(T)));
    }
    template <typename T>
    T* as() const {
        return static_cast<T*>(data_);
    }
    std::size_t bytes() const { return bytes_; }
    void release() noexcept;

private:
    void* growBytes(DeviceContext& ctx, std::size_t bytes);

    DeviceContext* ctx_ = nullptr;
    void* data_ = nullptr;
    std::size_t bytes_ = 0;
};

// The LoRA dropout mask of one linear in a training forward (elementwise.h's arithmetic).
struct Dropout {
    bool active = false;
    std::uint64_t key = 0;
    std::uint32_t threshold = 0;
    float scale = 1;

    static Dropout of(double probability, std::uint64_t seed);
};

// What a decoder layer's forward keeps (the CPU's DecoderLayerCache::State, on the device).
struct LayerStore : model::LayerCallShape { // the forward that filled it (batch 0: nothing kept)
    DeviceBuffer x, rstd1, xn1, q, k, v, probs, ctx, h1, rstd2, xn2, gate, up, act;
    DeviceBuffer lora[7]; // q, k, v, o, gate, up, down
    Dropout masks[7];

    std::size_t bytes() const;
    void release() noexcept;
};

// What the head's forward keeps (the CPU's HeadCache::State).
struct HeadStore {
    int batch = 0;
    int seq = 0;
    int hidden = 0;
    int vocab = 0;
    DeviceBuffer x, rstd, xn, lora, dLogits;
    Dropout mask;

    std::size_t bytes() const;
    void release() noexcept;
};

enum Slot : int {
    kDropped,     // a LoRA branch's dropped input x̃
    kDroppedGrad, // its gradient before the mask
    kDHidden,
    kDAct,
    kDUp,
    kDXn,
    kDH1,
    kDCtx,
    kDq,
    kDk,
    kDv,
    kNormPartials,
    kScores,  // attention scores of one head without probs kept; dP/dS of one head in the backward
    kIds,     // token ids on the device
    kGroups,  // the embedding backward's grouping of positions by id
    kLabels,  // the head's shifted label per row (-1: not counted)
    kRowLoss, // double per row
    kLogits,  // headLogits' device logits
    kSlotCount
};

// Per-context scratch (see llama_device.h).
struct Workspace {
    std::mutex mutex;
    DeviceAllocator* allocator = nullptr;
    DeviceBuffer slots[kSlotCount];
    LayerStore layer; // a forward without a cache
    HeadStore head;
    // Rotary tables cos/sin [positions, headDim/2], built on the host exactly as the CPU builds
    // them (double, then rounded to float) and uploaded: the device's double cos/sin could differ
    // from glibc's in the last bit.
    bool ropeBuilt = false;
    model::LlamaDims ropeDims; // what the tables were built for (model::sameRotary)
    int ropePositions = 0;
    DeviceBuffer ropeCos, ropeSin;
    std::vector<double> hostRowLoss;
    std::vector<std::int32_t> hostInts;

    float* slot(DeviceContext& ctx, Slot s, std::size_t count) { return slots[s].grow<float>(ctx, count); }
};

// The context's workspace (created on first use). Callers lock its mutex for the whole call.
Workspace& workspaceOf(DeviceContext& ctx);
void dropWorkspace(DeviceContext& ctx);

// The rotary tables for dims (rebuilt when theta or headDim change or maxSeq grows).
void ensureRope(DeviceContext& ctx, Workspace& ws, const model::LlamaDims& dims);

// C[m, n] = alpha · op(A) · op(B) + beta · C, all row-major fp32 (the CPU's detail::gemm): cuBLAS is
// column-major, so it computes Cᵀ = op(B)ᵀ · op(A)ᵀ with the operands swapped.
void gemm(DeviceContext& ctx, bool transA, bool transB, int m, int n, int k, float alpha, const float* a, int lda,
          const float* b, int ldb, float beta, float* c, int ldc);
// `count` such products, the i-th at a + i·strideA, b + i·strideB, c + i·strideC (elements).
void gemmStridedBatched(DeviceContext& ctx, bool transA, bool transB, int m, int n, int k, float alpha,
                        const float* a, int lda, long long strideA, const float* b, int ldb, long long strideB,
                        float beta, float* c, int ldc, long long strideC, int count);

// --- launchers (ops.cu)
// y = RMSNorm(x)·w per row, rstd[r] = 1 / sqrt(mean(x²) + eps).
void rmsNormForward(DeviceContext& ctx, std::size_t rows, int width, const float* x, const float* w, float eps,
                    float* y, float* rstd);
// dx = RMSNorm backward of dy (+ residual when not null); dw (when not null) = Σ rows dy ⊙ x̂ in the
// CPU's order (chunks of kNormChunkRows rows, then the chunks in order) with `partials` as scratch.
void rmsNormBackward(DeviceContext& ctx, Workspace& ws, std::size_t rows, int width, const float* x, const float* w,
                     const float* rstd, const float* dy, const float* residual, float* dx, float* dw);
// Rotates (inverse: un-rotates) the `heads` heads of each row of x [batch·seq, heads·headDim];
// row r is at position past + r % seq.
void rope(DeviceContext& ctx, const Workspace& ws, std::size_t rows, int seq, int past, int heads, int headDim,
          float* x, bool inverse);
void swigluForward(DeviceContext& ctx, std::size_t n, const float* gate, const float* up, float* act);
// dGate may alias dAct.
void swigluBackward(DeviceContext& ctx, std::size_t n, const float* gate, const float* up, const float* dAct,
                    float* dGate, float* dUp);
// out[i] = mask_i · x[i] · scale (accumulate: out[i] += that), i the element index from 0.
void dropoutApply(DeviceContext& ctx, std::size_t n, const Dropout& mask, const float* x, float* out,
                  bool accumulate);
void addInPlace(DeviceContext& ctx, std::size_t n, float* a, const float* b);
// Causal softmax in place over `batch` blocks of `queries` rows of `keys` scores (block b at
// scores + b·batchStride); row t sees keys [0, past + t + 1), the rest become 0.
void causalSoftmax(DeviceContext& ctx, int batch, int queries, int keys, int past, float* scores,
                   long long batchStride);
// dS = P ⊙ (dP − rowsum(P ⊙ dP)) · scale in place of dP [batch, seq, seq] (stride seq²); P of
// block b at probs + b·probsStride; entries a query cannot see become 0.
void softmaxBackward(DeviceContext& ctx, int batch, int seq, const float* probs, long long probsStride, float* dS,
                     float scale);
// Per row: counted rows (labels[r] ≥ 0) become (softmax − one-hot)·share with rowLoss[r] the
// row's cross-entropy (double); other rows become 0 with rowLoss 0.
void crossEntropy(DeviceContext& ctx, std::size_t rows, int vocab, float* logits, const std::int32_t* labels,
                  float share, double* rowLoss);
void embeddingGather(DeviceContext& ctx, std::size_t tokens, int hidden, const std::int32_t* ids, const float* table,
                     float* out);
// groups: [unique ids (count), offsets (count + 1), positions (tokens)] on the device; each
// unique id's row of dTable = 0 + its positions' dOut rows in token order. Rows of ids that do not
// occur must be zeroed by the caller.
void embeddingScatter(DeviceContext& ctx, int uniqueCount, int hidden, const std::int32_t* groups,
                      std::size_t tokens, const float* dOut, float* dTable);

using model::hasLora;
using model::loraRank;
// The mask a training forward draws (inactive without LoRA or dropout).
inline Dropout dropoutOf(const model::LinearParams<float>& p) {
    return hasLora(p) ? Dropout::of(p.loraDropout, p.loraDropoutSeed) : Dropout{};
}

// y = x·Wᵀ + scale·(x̃·Aᵀ)·Bᵀ (the CPU's linearForward); `hidden` [rows, rank].
void linearForward(DeviceContext& ctx, Workspace& ws, int rows, int in, int out, const model::LinearParams<float>& p,
                   const float* x, float* y, float* hidden, const Dropout& mask);
// The CPU's linearBackward: dx (overwritten or accumulated; null: not wanted) and the non-null
// parameter gradients from gradScale · dy.
void linearBackward(DeviceContext& ctx, Workspace& ws, int rows, int in, int out, const model::LinearParams<float>& p,
                    const float* x, const float* hidden, const float* dy, float gradScale, float* dx, bool accumulate,
                    const model::LinearGrads<float>& g, float* dHidden, const Dropout& mask);

} // namespace mixz::cuda::llamadev
