// One file on purpose (over 600 lines): a layer's forward, its backward and its KV-cache forward
// share the cache's State layout and the private helpers (RMSNorm, rotary tables, LoRA linears
// with dropout masks), and each backward step must be read against the forward step whose saved
// tensors it consumes. Everything is instantiated for float and double at the end.
//
// The LLaMA decoder kernels of mixz/model/llama.h: LlamaDims' validation, the decoder layer
// (forward, backward, KV-cache forward), the embedding, and the head (final norm, LM head, loss,
// logits). Their argument checks are mixz/model/kernel_arguments.h's, shared with the CUDA backend.
//
// Vocabulary: `rows` = batch · seq tokens, token-major; every linear is one GEMM over all rows. A
// layer's forward keeps, in its cache's State, what its backward reads: the input x, the two
// RMSNorm outputs and reciprocal RMS values (rstd), the rotated q and k, v, the attention
// probabilities, the attention output (ctx), the residual stream after attention (h1), the MLP's
// gate, up and act = silu(gate) ⊙ up, each LoRA's hidden x̃·Aᵀ and each LoRA's dropout mask (a
// seed, detail::DropoutMask: the dropped input x̃ is recomputed, not kept). Backward intermediates (the
// gradients flowing between the steps) live in a per-thread scratch that grows and is reused, so
// a steady-state step allocates nothing; a forward without a cache uses a per-thread State the
// same way.
//
// Everything that sums across rows (norm weight gradients, the loss) adds fixed chunks of rows in
// a fixed order, and every parallel loop splits work that is computed the same way wherever it
// runs, so results do not depend on kernelThreads().
#include "mixz/model/llama.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>

#include "attention.h"
#include "kernels.h"
#include "mixz/common/error.h"
#include "mixz/common/thread_pool.h"
#include "mixz/model/elementwise.h"
#include "mixz/model/kernel_arguments.h"

namespace mixz::model {

using detail::DropoutMask;
using detail::forChunks;
using detail::forTasks;
using detail::gemm;
using detail::gemmSliced;
using detail::grow;

namespace {

std::atomic<int> gKernelThreads{1};

// Rows per task of the element-wise loops: enough work per task to amortize the hand-off.
constexpr std::size_t kRowGrain = 16;
// Rows of C per slice of a linear's GEMMs when the kernels divide them among their threads
// (detail::gemmSliced): token rows for the forward and dx, output features for dW.
constexpr int kTokenSlice = 128;
constexpr int kFeatureSlice = 64;
// Rows per partial sum of the norm weight gradients (fixed: the order of additions must not
// depend on the thread count).
constexpr std::size_t kNormChunkRows = 32;

} // namespace

namespace detail {

void forChunks(std::size_t items, std::size_t grain, const std::function<void(std::size_t, std::size_t)>& fn) {
    if (items == 0) return;
    const auto threads = static_cast<std::size_t>(kernelThreads());
    grain = std::max<std::size_t>(grain, 1);
    std::size_t chunks = std::min((items + grain - 1) / grain, threads * 4);
    if (threads <= 1 || chunks <= 1) {
        fn(0, items);
        return;
    }
    const std::size_t per = (items + chunks - 1) / chunks;
    chunks = (items + per - 1) / per;
    ThreadPool::shared().parallelFor(chunks, threads,
                                     [&](std::size_t c) { fn(c * per, std::min(items, (c + 1) * per)); });
}

void forTasks(std::size_t tasks, const std::function<void(std::size_t)>& task) {
    const auto threads = static_cast<std::size_t>(kernelThreads());
    if (threads <= 1 || tasks <= 1) {
        for (std::size_t i = 0; i < tasks; ++i) task(i);
        return;
    }
    ThreadPool::shared().parallelFor(tasks, threads, task);
}

void forBlasTasks(std::size_t tasks, const std::function<void(std::size_t)>& task) {
    if (openblas_get_num_threads() > 1) {
        for (std::size_t i = 0; i < tasks; ++i) task(i);
        return;
    }
    forTasks(tasks, task);
}

} // namespace detail

void setKernelThreads(int threads) {
    if (threads < 1) MIXZ_THROW(InvalidArgument, "kernel threads must be at least 1, got ", threads);
    gKernelThreads.store(threads, std::memory_order_relaxed);
}

int kernelThreads() {
    return gKernelThreads.load(std::memory_order_relaxed);
}

void validate(const LlamaDims& dims) {
    const std::pair<const char*, int> sizes[] = {
        {"vocab", dims.vocab},     {"hidden", dims.hidden},   {"layers", dims.layers},
        {"heads", dims.heads},     {"kvHeads", dims.kvHeads}, {"intermediate", dims.intermediate},
        {"maxSeq", dims.maxSeq}};
    for (const auto& [name, value] : sizes) {
        if (value <= 0) MIXZ_THROW(InvalidArgument, "LlamaDims.", name, " must be positive, got ", value);
    }
    if (dims.hidden % dims.heads != 0) {
        MIXZ_THROW(InvalidArgument, "LlamaDims.heads (", dims.heads, ") must divide hidden (", dims.hidden, ")");
    }
    if (dims.heads % dims.kvHeads != 0) {
        MIXZ_THROW(InvalidArgument, "LlamaDims.kvHeads (", dims.kvHeads, ") must divide heads (", dims.heads, ")");
    }
    if (dims.headDim() % 2 != 0) {
        MIXZ_THROW(InvalidArgument, "LlamaDims head size hidden / heads = ", dims.headDim(),
                   " must be even (rotary embedding pairs)");
    }
    if (!(std::isfinite(dims.ropeTheta) && dims.ropeTheta > 0)) {
        MIXZ_THROW(InvalidArgument, "LlamaDims.ropeTheta must be positive and finite, got ", dims.ropeTheta);
    }
    if (!(std::isfinite(dims.rmsEps) && dims.rmsEps >= 0)) {
        MIXZ_THROW(InvalidArgument, "LlamaDims.rmsEps must be non-negative and finite, got ", dims.rmsEps);
    }
    switch (dims.ropeScaling) {
    case RopeScaling::none:
        break;
    case RopeScaling::llama3:
        if (!(std::isfinite(dims.ropeLowFreqFactor) && dims.ropeLowFreqFactor > 0)) {
            MIXZ_THROW(InvalidArgument, "LlamaDims.ropeLowFreqFactor must be positive and finite, got ", dims.ropeLowFreqFactor);
        }
        // The blend divides by their difference.
        if (!(std::isfinite(dims.ropeHighFreqFactor) && dims.ropeHighFreqFactor > dims.ropeLowFreqFactor)) {
            MIXZ_THROW(InvalidArgument, "LlamaDims.ropeHighFreqFactor must be finite and above ropeLowFreqFactor (",
                       dims.ropeLowFreqFactor, "), got ", dims.ropeHighFreqFactor);
        }
        if (!(std::isfinite(dims.ropeOriginalMaxSeq) && dims.ropeOriginalMaxSeq > 0)) {
            MIXZ_THROW(InvalidArgument, "LlamaDims.ropeOriginalMaxSeq must be positive and finite, got ", dims.ropeOriginalMaxSeq);
        }
        [[fallthrough]];
    case RopeScaling::linear:
        if (!(std::isfinite(dims.ropeFactor) && dims.ropeFactor > 0)) {
            MIXZ_THROW(InvalidArgument, "LlamaDims.ropeFactor must be positive and finite, got ", dims.ropeFactor);
        }
        break;
    default:
        MIXZ_THROW(InvalidArgument, "LlamaDims.ropeScaling must be none (0), linear (1) or llama3 (2), got ",
                   static_cast<int>(dims.ropeScaling));
    }
}

double ropeInverseFrequency(const LlamaDims& dims, int i) {
    const double base = elementwise::ropeInverseFrequency(dims.ropeTheta, i, dims.headDim());
    switch (dims.ropeScaling) {
    case RopeScaling::linear:
        return elementwise::ropeLinearFrequency(base, dims.ropeFactor);
    case RopeScaling::llama3:
        return elementwise::ropeLlama3Frequency(base, dims.ropeFactor, dims.ropeLowFreqFactor, dims.ropeHighFreqFactor,
                                                dims.ropeOriginalMaxSeq);
    case RopeScaling::none:
    default:
        return base;
    }
}

bool sameRotary(const LlamaDims& a, const LlamaDims& b) {
    if (a.ropeTheta != b.ropeTheta || a.headDim() != b.headDim() || a.ropeScaling != b.ropeScaling) return false;
    switch (a.ropeScaling) {
    case RopeScaling::llama3:
        if (a.ropeLowFreqFactor != b.ropeLowFreqFactor || a.ropeHighFreqFactor != b.ropeHighFreqFactor ||
            a.ropeOriginalMaxSeq != b.ropeOriginalMaxSeq) {
            return false;
        }
        [[fallthrough]];
    case RopeScaling::linear:
        return a.ropeFactor == b.ropeFactor;
    case RopeScaling::none:
    default:
        return true;
    }
}

namespace {

// The mask a training forward draws for a linear's LoRA input (inactive without LoRA or dropout).
template <typename T>
DropoutMask dropoutMask(const LinearParams<T>& p) {
    return hasLora(p) ? DropoutMask::of(p.loraDropout, p.loraDropoutSeed) : DropoutMask{};
}

// The LoRA dropout's buffers, per thread: the dropped input x̃ = mask ⊙ x / (1 − p), and in the
// backward the input gradient of the LoRA branch before its mask.
template <typename T>
struct DropoutScratch {
    std::vector<T> input, gradient;
};

template <typename T>
DropoutScratch<T>& dropoutScratch() {
    thread_local DropoutScratch<T> scratch;
    return scratch;
}

// x̃ = mask ⊙ x / (1 − p) over the n elements of a linear's input, into the per-thread scratch.
template <typename T>
const T* droppedInput(const DropoutMask& mask, std::size_t n, const T* x) {
    T* dropped = grow(dropoutScratch<T>().input, n);
    forChunks(n, 4096, [&](std::size_t begin, std::size_t end) { mask.apply(begin, end, x, dropped, false); });
    return dropped;
}

// ---------------------------------------------------------------------------------------------
// Linear layers with optional LoRA

// y[rows, out] = x·Wᵀ + b + scale·(x̃·Aᵀ)·Bᵀ (b when p.bias is set) with x̃ = x, or its dropout when `mask` is active; the
// LoRA hidden x̃·Aᵀ goes to `hidden` [rows, rank].
template <typename T>
void linearForward(int rows, int in, int out, const LinearParams<T>& p, const T* x, T* y, T* hidden,
                   const DropoutMask& mask = DropoutMask{}) {
    gemmSliced(false, true, rows, out, in, T(1), x, in, p.weight, in, T(0), y, out, kTokenSlice);
    if (p.bias != nullptr) {
        // y = x·Wᵀ + b first; the LoRA branch is added onto that below.
        const T* b = p.bias;
        forChunks(static_cast<std::size_t>(rows), kRowGrain, [&](std::size_t begin, std::size_t end) {
            for (std::size_t r = begin; r < end; ++r) {
                T* yr = y + r * out;
                for (int j = 0; j < out; ++j) yr[j] += b[j];
            }
        });
    }
    if (hasLora(p)) {
        const T* loraInput = mask.active() ? droppedInput(mask, static_cast<std::size_t>(rows) * in, x) : x;
        gemm(false, true, rows, p.rank, in, T(1), loraInput, in, p.loraA, in, T(0), hidden, p.rank);
        gemmSliced(false, true, rows, out, p.rank, p.loraScale, hidden, p.rank, p.loraB, p.rank, T(1), y, out,
                   kTokenSlice);
    }
}

// From dy = gradScale · dy0 (dy0 as given): dx (overwritten, or added to when accumulate; null: not
// wanted) and the non-null parameter gradients (overwritten). `dHidden` is scratch [rows, rank].
// `mask`: the LoRA dropout mask the forward drew (recomputed here from its seed).
template <typename T>
void linearBackward(int rows, int in, int out, const LinearParams<T>& p, const T* x, const T* hidden, const T* dy,
                    T gradScale, T* dx, bool accumulate, const LinearGrads<T>& g, T* dHidden,
                    const DropoutMask& mask = DropoutMask{}) {
    if (g.weight != nullptr) {
        gemmSliced(true, false, out, in, rows, gradScale, dy, out, x, in, T(0), g.weight, in, kFeatureSlice);
    }
    if (g.bias != nullptr) {
        // db = gradScale · Σ rows dy, in row order per feature (independent of the thread count).
        forChunks(static_cast<std::size_t>(out), 64, [&](std::size_t begin, std::size_t end) {
            for (std::size_t j = begin; j < end; ++j) {
                T sum = T(0);
                for (int r = 0; r < rows; ++r) sum += dy[static_cast<std::size_t>(r) * out + j];
                g.bias[j] = gradScale * sum;
            }
        });
    }
    if (dx != nullptr) {
        gemmSliced(false, false, rows, in, out, gradScale, dy, out, p.weight, in, accumulate ? T(1) : T(0), dx, in,
                   kTokenSlice);
    }
    if (!hasLora(p)) return;
    const int rank = p.rank;
    if (g.loraB != nullptr) {
        gemm(true, false, out, rank, rows, gradScale * p.loraScale, dy, out, hidden, rank, T(0), g.loraB, rank);
    }
    if (g.loraA == nullptr && dx == nullptr) return;
    gemm(false, false, rows, rank, out, gradScale * p.loraScale, dy, out, p.loraB, rank, T(0), dHidden, rank);
    const std::size_t n = static_cast<std::size_t>(rows) * in;
    if (g.loraA != nullptr) {
        const T* loraInput = mask.active() ? droppedInput(mask, n, x) : x;
        gemm(true, false, rank, in, rows, T(1), dHidden, rank, loraInput, in, T(0), g.loraA, in);
    }
    if (dx == nullptr) return;
    if (!mask.active()) {
        gemmSliced(false, false, rows, in, rank, T(1), dHidden, rank, p.loraA, in, T(1), dx, in, kTokenSlice);
        return;
    }
    // dx += mask ⊙ (dHidden·A) / (1 − p)
    T* dDropped = grow(dropoutScratch<T>().gradient, n);
    gemmSliced(false, false, rows, in, rank, T(1), dHidden, rank, p.loraA, in, T(0), dDropped, in, kTokenSlice);
    forChunks(n, 4096, [&](std::size_t begin, std::size_t end) { mask.apply(begin, end, dDropped, dx, true); });
}

// ---------------------------------------------------------------------------------------------
// Row kernels over all rows

template <typename T>
void rmsNormForward(std::size_t rows, int width, const T* x, const T* w, T eps, T* y, T* rstd) {
    forChunks(rows, kRowGrain, [&](std::size_t begin, std::size_t end) {
        for (std::size_t r = begin; r < end; ++r) {
            rstd[r] = detail::rmsNormRow(x + r * width, w, width, eps, y + r * width);
        }
    });
}

// dx = RMSNorm backward of dy (+ residual when not null); dw (when not null) = Σ rows dy ⊙ x̂.
template <typename T>
void rmsNormBackward(std::size_t rows, int width, const T* x, const T* w, const T* rstd, const T* dy,
                     const T* residual, T* dx, T* dw, std::vector<T>& partials) {
    if (dx != nullptr) {
        forChunks(rows, kRowGrain, [&](std::size_t begin, std::size_t end) {
            for (std::size_t r = begin; r < end; ++r) {
                detail::rmsNormBackwardRow(x + r * width, w, rstd[r], dy + r * width,
                                           residual != nullptr ? residual + r * width : nullptr, width, dx + r * width);
            }
        });
    }
    if (dw == nullptr) return;
    const std::size_t chunks = (rows + kNormChunkRows - 1) / kNormChunkRows;
    T* partial = grow(partials, chunks * width);
    forTasks(chunks, [&](std::size_t c) {
        T* sum = partial + c * width;
        std::fill(sum, sum + width, T(0));
        for (std::size_t r = c * kNormChunkRows; r < std::min(rows, (c + 1) * kNormChunkRows); ++r) {
            const T s = rstd[r];
            const T* xr = x + r * width;
            const T* dyr = dy + r * width;
            for (int i = 0; i < width; ++i) sum[i] += elementwise::rmsNormWeightGradTerm(dyr[i], xr[i], s);
        }
    });
    std::copy(partial, partial + width, dw);
    for (std::size_t c = 1; c < chunks; ++c) {
        const T* sum = partial + c * width;
        for (int i = 0; i < width; ++i) dw[i] += sum[i];
    }
}

// cos and sin of position · ropeInverseFrequency(dims, i) for i < headDim/2, positions [0, maxSeq),
// computed in double. One table per thread, rebuilt when the rotary dimensions change.
template <typename T>
struct RopeTable {
    bool built = false;
    LlamaDims rotary; // what the table was built for (sameRotary)
    int positions = 0;
    std::vector<T> cosines;
    std::vector<T> sines;

    const RopeTable& ensure(const LlamaDims& dims) {
        if (built && sameRotary(rotary, dims) && positions >= dims.maxSeq) return *this;
        rotary = dims;
        positions = dims.maxSeq;
        const int half = dims.headDim() / 2;
        cosines.assign(static_cast<std::size_t>(positions) * half, T(0));
        sines.assign(cosines.size(), T(0));
        for (int i = 0; i < half; ++i) {
            const double inverseFrequency = ropeInverseFrequency(dims, i);
            for (int p = 0; p < positions; ++p) {
                const double angle = elementwise::ropeAngle(p, inverseFrequency);
                cosines[static_cast<std::size_t>(p) * half + i] = static_cast<T>(std::cos(angle));
                sines[static_cast<std::size_t>(p) * half + i] = static_cast<T>(std::sin(angle));
            }
        }
        built = true;
        return *this;
    }
};

template <typename T>
const RopeTable<T>& ropeTable(const LlamaDims& dims) {
    thread_local RopeTable<T> table;
    return table.ensure(dims);
}

// Rotates (or, inverse, un-rotates) the `heads` heads of each row of x [batch·seq, heads·headDim];
// row (b, t) is at position past + t.
template <typename T>
void rope(const LlamaDims& dims, int batch, int seq, int past, int heads, T* x, bool inverse, const std::int32_t* positions = nullptr) {
    const RopeTable<T>& table = ropeTable<T>(dims);
    const int headDim = dims.headDim();
    const int half = headDim / 2;
    const std::size_t width = static_cast<std::size_t>(heads) * headDim;
    forChunks(static_cast<std::size_t>(batch) * seq, kRowGrain, [&](std::size_t begin, std::size_t end) {
        for (std::size_t r = begin; r < end; ++r) {
            // Packed rows: the token's position in its own example.
            const std::size_t position = positions != nullptr ? static_cast<std::size_t>(positions[r]) : past + r % seq;
            const T* cosines = table.cosines.data() + position * half;
            const T* sines = table.sines.data() + position * half;
            for (int h = 0; h < heads; ++h) detail::ropeRow(x + r * width + h * headDim, cosines, sines, half, inverse);
        }
    });
}

// a[i] += b[i] over n elements, in parallel.
template <typename T>
void addInPlace(std::size_t n, T* a, const T* b) {
    forChunks(n, 4096, [&](std::size_t begin, std::size_t end) {
        for (std::size_t i = begin; i < end; ++i) a[i] += b[i];
    });
}

template <typename T>
void copyParallel(std::size_t n, const T* from, T* to) {
    forChunks(n, 16384, [&](std::size_t begin, std::size_t end) {
        std::memcpy(to + begin, from + begin, (end - begin) * sizeof(T));
    });
}

} // namespace

// -------------------------------------------------------------------------------------------------
// Decoder layer

template <typename T>
struct DecoderLayerCache<T>::State : LayerCallShape { // the forward that filled it (batch 0: nothing kept)
    std::vector<T> x, rstd1, xn1, q, k, v, probs, ctx, h1, rstd2, xn2, gate, up, act;
    std::vector<T> loraQ, loraK, loraV, loraO, loraGate, loraUp, loraDown;
    // Packed rows: the positions (for the backward's inverse rotation) and each query's first key.
    std::vector<std::int32_t> positions;
    std::vector<int> keyFrom;
    // The LoRA dropout masks the training forward drew (inactive otherwise), for the backward.
    DropoutMask maskQ, maskK, maskV, maskO, maskGate, maskUp, maskDown;

    template <typename Fn>
    void forEachBuffer(Fn&& fn) {
        for (std::vector<T>* buffer : {&x, &rstd1, &xn1, &q, &k, &v, &probs, &ctx, &h1, &rstd2, &xn2, &gate, &up,
                                       &act, &loraQ, &loraK, &loraV, &loraO, &loraGate, &loraUp, &loraDown}) {
            fn(*buffer);
        }
    }
};

template <typename T>
DecoderLayerCache<T>::DecoderLayerCache() : state(std::make_unique<State>()) {}
template <typename T>
DecoderLayerCache<T>::~DecoderLayerCache() = default;
template <typename T>
DecoderLayerCache<T>::DecoderLayerCache(DecoderLayerCache&&) noexcept = default;
template <typename T>
DecoderLayerCache<T>& DecoderLayerCache<T>::operator=(DecoderLayerCache&&) noexcept = default;

template <typename T>
std::size_t DecoderLayerCache<T>::bytes() const {
    if (!state) return 0;
    std::size_t total = 0;
    state->forEachBuffer([&](std::vector<T>& buffer) { total += detail::capacityBytes(buffer); });
    return total;
}

template <typename T>
void DecoderLayerCache<T>::release() {
    if (!state) return;
    state->forEachBuffer([](std::vector<T>& buffer) { detail::freeBuffer(buffer); });
    state->batch = 0;
}

template <typename T>
KvCache<T>::KvCache(const LlamaDims& dims, int batch) : batch_(batch) {
    validate(dims);
    if (batch <= 0) MIXZ_THROW(InvalidArgument, "KvCache: batch must be positive, got ", batch);
    const std::size_t elements = static_cast<std::size_t>(batch) * dims.maxSeq * dims.kvDim();
    keys_.assign(elements, T(0));
    values_.assign(elements, T(0));
}

namespace {

template <typename T>
using LayerState = typename DecoderLayerCache<T>::State;

// The layer forward for `batch` sequences of `seq` new tokens at positions [past, past + seq).
// train: a backward follows: keep the input and the attention probabilities, and draw the LoRA
// dropout masks. kv: take keys and values from (and append the new ones to) a KV cache instead of
// the new tokens alone.
template <typename T>
void layerForward(const LlamaDims& dims, int batch, int seq, int past, const DecoderLayerParams<T>& p, const T* x,
                  T* y, LayerState<T>& s, bool train, KvCache<T>* kv, const std::int32_t* positions = nullptr) {
    const int hidden = dims.hidden;
    const int kvDim = dims.kvDim();
    const int inter = dims.intermediate;
    const int rows = batch * seq;
    const std::size_t n = static_cast<std::size_t>(rows);
    const T eps = static_cast<T>(dims.rmsEps);

    s.record(dims, batch, seq);
    if (train) copyParallel(n * hidden, x, grow(s.x, n * hidden));
    s.maskQ = train ? dropoutMask(p.q) : DropoutMask{};
    s.maskK = train ? dropoutMask(p.k) : DropoutMask{};
    s.maskV = train ? dropoutMask(p.v) : DropoutMask{};
    s.maskO = train ? dropoutMask(p.o) : DropoutMask{};
    s.maskGate = train ? dropoutMask(p.gate) : DropoutMask{};
    s.maskUp = train ? dropoutMask(p.up) : DropoutMask{};
    s.maskDown = train ? dropoutMask(p.down) : DropoutMask{};

    // Attention block: xn1 = norm(x); q, k, v; rotary; attention; h1 = x + o(ctx).
    T* rstd1 = grow(s.rstd1, n);
    T* xn1 = grow(s.xn1, n * hidden);
    rmsNormForward(n, hidden, x, p.inputNorm, eps, xn1, rstd1);
    T* q = grow(s.q, n * hidden);
    T* k = grow(s.k, n * kvDim);
    T* v = grow(s.v, n * kvDim);
    linearForward(rows, hidden, hidden, p.q, xn1, q, grow(s.loraQ, n * loraRank(p.q)), s.maskQ);
    linearForward(rows, hidden, kvDim, p.k, xn1, k, grow(s.loraK, n * loraRank(p.k)), s.maskK);
    linearForward(rows, hidden, kvDim, p.v, xn1, v, grow(s.loraV, n * loraRank(p.v)), s.maskV);
    // Packed rows (positions given): each query sees its own example's keys, from where it starts.
    if (positions != nullptr) {
        s.positions.assign(positions, positions + n);
        s.keyFrom.resize(n);
        for (std::size_t r = 0; r < n; ++r) s.keyFrom[r] = static_cast<int>(r % seq) - positions[r];
    } else {
        s.positions.clear();
        s.keyFrom.clear();
    }
    rope(dims, batch, seq, past, dims.heads, q, false, positions);
    rope(dims, batch, seq, past, dims.kvHeads, k, false, positions);

    detail::AttentionForwardArgs<T> attention;
    attention.keyFrom = positions != nullptr ? s.keyFrom.data() : nullptr;
    attention.batch = batch;
    attention.heads = dims.heads;
    attention.kvHeads = dims.kvHeads;
    attention.headDim = dims.headDim();
    attention.queries = seq;
    attention.past = past;
    attention.q = q;
    if (kv != nullptr) {
        const std::size_t batchStride = static_cast<std::size_t>(dims.maxSeq) * kvDim;
        T* keys = kv->keys().data();
        T* values = kv->values().data();
        forChunks(n, kRowGrain, [&](std::size_t begin, std::size_t end) {
            for (std::size_t r = begin; r < end; ++r) {
                const std::size_t slot = (r / seq) * batchStride + (past + r % seq) * kvDim;
                std::memcpy(keys + slot, k + r * kvDim, kvDim * sizeof(T));
                std::memcpy(values + slot, v + r * kvDim, kvDim * sizeof(T));
            }
        });
        attention.k = keys;
        attention.v = values;
        attention.kvBatchStride = batchStride;
    } else {
        attention.k = k;
        attention.v = v;
        attention.kvBatchStride = static_cast<std::size_t>(seq) * kvDim;
    }
    T* ctx = grow(s.ctx, n * hidden);
    attention.out = ctx;
    attention.probs = train ? grow(s.probs, static_cast<std::size_t>(batch) * dims.heads * seq * seq) : nullptr;
    detail::attentionForward(attention);

    T* h1 = grow(s.h1, n * hidden);
    linearForward(rows, hidden, hidden, p.o, ctx, h1, grow(s.loraO, n * loraRank(p.o)), s.maskO);
    addInPlace(n * hidden, h1, x);

    // MLP block: xn2 = norm(h1); act = silu(gate(xn2)) ⊙ up(xn2); y = h1 + down(act).
    T* rstd2 = grow(s.rstd2, n);
    T* xn2 = grow(s.xn2, n * hidden);
    rmsNormForward(n, hidden, h1, p.postNorm, eps, xn2, rstd2);
    T* gate = grow(s.gate, n * inter);
    T* up = grow(s.up, n * inter);
    T* act = grow(s.act, n * inter);
    linearForward(rows, hidden, inter, p.gate, xn2, gate, grow(s.loraGate, n * loraRank(p.gate)), s.maskGate);
    linearForward(rows, hidden, inter, p.up, xn2, up, grow(s.loraUp, n * loraRank(p.up)), s.maskUp);
    forChunks(n, kRowGrain, [&](std::size_t begin, std::size_t end) {
        detail::swigluRow(gate + begin * inter, up + begin * inter, static_cast<int>((end - begin) * inter),
                          act + begin * inter);
    });
    linearForward(rows, inter, hidden, p.down, act, y, grow(s.loraDown, n * loraRank(p.down)), s.maskDown);
    addInPlace(n * hidden, y, h1);
}

template <typename T>
LayerState<T>& scratchLayerState() {
    thread_local LayerState<T> state;
    return state;
}

// The gradients flowing between the steps of a layer's backward, per thread.
template <typename T>
struct LayerBackwardScratch {
    std::vector<T> dAct, dUp, dXn, dH1, dCtx, dq, dk, dv, dHidden, normPartials;
};

template <typename T>
LayerBackwardScratch<T>& layerBackwardScratch() {
    thread_local LayerBackwardScratch<T> scratch;
    return scratch;
}

} // namespace

template <typename T>
void decoderLayerForward(const LlamaDims& dims, int batch, int seq, const DecoderLayerParams<T>& params, const T* x,
                         T* y, DecoderLayerCache<T>* cache, const std::int32_t* positions) {
    checkLayerForward(dims, batch, seq, params, x, y, "decoderLayerForward");
    validatePositions(positions, batch, seq);
    if (cache == nullptr) {
        layerForward(dims, batch, seq, 0, params, x, y, scratchLayerState<T>(), false,
                     static_cast<KvCache<T>*>(nullptr), positions);
        return;
    }
    if (!cache->state) cache->state = std::make_unique<LayerState<T>>();
    layerForward(dims, batch, seq, 0, params, x, y, *cache->state, true, static_cast<KvCache<T>*>(nullptr), positions);
}

void validatePositions(const std::int32_t* positions, int batch, int seq) {
    if (positions == nullptr) return;
    const std::size_t n = static_cast<std::size_t>(batch) * static_cast<std::size_t>(seq);
    for (std::size_t r = 0; r < n; ++r) {
        const bool start = r % static_cast<std::size_t>(seq) == 0;
        const std::int32_t p = positions[r];
        if (start ? p != 0 : (p != 0 && p != positions[r - 1] + 1)) {
            MIXZ_THROW(InvalidArgument, "positions[", r, "] = ", p, ": a row starts at 0, and each position is 0 (a new example) or the previous one + 1");
        }
    }
}

template <typename T>
void decoderLayerBackward(const LlamaDims& dims, int batch, int seq, const DecoderLayerParams<T>& params,
                          const DecoderLayerCache<T>& cache, const T* dy, T* dx, const DecoderLayerGrads<T>& grads) {
    checkLayerBackward(dims, batch, seq, params, dy, grads, "decoderLayerBackward");
    MIXZ_ENFORCE(cache.state && cache.state->batch != 0, "decoderLayerBackward: the cache holds no forward");
    const LayerState<T>& s = *cache.state;
    MIXZ_ENFORCE(s.batch == batch && s.seq == seq && s.hidden == dims.hidden && s.kvDim == dims.kvDim() &&
                     s.intermediate == dims.intermediate && s.heads == dims.heads,
                 "decoderLayerBackward: the cache holds a forward of batch ", s.batch, " seq ", s.seq,
                 ", not batch ", batch, " seq ", seq, " of these dims");

    const int hidden = dims.hidden;
    const int kvDim = dims.kvDim();
    const int inter = dims.intermediate;
    const int rows = batch * seq;
    const std::size_t n = static_cast<std::size_t>(rows);
    LayerBackwardScratch<T>& w = layerBackwardScratch<T>();
    const int maxRank = std::max({loraRank(params.q), loraRank(params.k), loraRank(params.v), loraRank(params.o),
                                  loraRank(params.gate), loraRank(params.up), loraRank(params.down)});
    T* dHidden = grow(w.dHidden, n * maxRank);

    // MLP block.
    T* dAct = grow(w.dAct, n * inter);
    T* dUp = grow(w.dUp, n * inter);
    linearBackward(rows, inter, hidden, params.down, s.act.data(), s.loraDown.data(), dy, T(1), dAct, false,
                   grads.down, dHidden, s.maskDown);
    const T* gate = s.gate.data();
    const T* up = s.up.data();
    forChunks(n, kRowGrain, [&](std::size_t begin, std::size_t end) {
        const std::size_t offset = begin * inter;
        detail::swigluBackwardRow(gate + offset, up + offset, dAct + offset, static_cast<int>((end - begin) * inter),
                                  dAct + offset, dUp + offset);
    });
    T* dXn = grow(w.dXn, n * hidden);
    const T* xn2 = s.xn2.data();
    linearBackward(rows, hidden, inter, params.gate, xn2, s.loraGate.data(), dAct, T(1), dXn, false, grads.gate,
                   dHidden, s.maskGate);
    linearBackward(rows, hidden, inter, params.up, xn2, s.loraUp.data(), dUp, T(1), dXn, true, grads.up, dHidden,
                   s.maskUp);
    T* dH1 = grow(w.dH1, n * hidden);
    rmsNormBackward(n, hidden, s.h1.data(), params.postNorm, s.rstd2.data(), dXn, dy, dH1, grads.postNorm,
                    w.normPartials);

    // Attention block.
    T* dCtx = grow(w.dCtx, n * hidden);
    linearBackward(rows, hidden, hidden, params.o, s.ctx.data(), s.loraO.data(), dH1, T(1), dCtx, false, grads.o,
                   dHidden, s.maskO);
    detail::AttentionBackwardArgs<T> attention;
    attention.batch = batch;
    attention.heads = dims.heads;
    attention.kvHeads = dims.kvHeads;
    attention.headDim = dims.headDim();
    attention.seq = seq;
    attention.q = s.q.data();
    attention.k = s.k.data();
    attention.v = s.v.data();
    attention.probs = s.probs.data();
    attention.dOut = dCtx;
    attention.dq = grow(w.dq, n * hidden);
    attention.dk = grow(w.dk, n * kvDim);
    attention.dv = grow(w.dv, n * kvDim);
    detail::attentionBackward(attention);
    const std::int32_t* positions = s.positions.empty() ? nullptr : s.positions.data();
    rope(dims, batch, seq, 0, dims.heads, attention.dq, true, positions);
    rope(dims, batch, seq, 0, dims.kvHeads, attention.dk, true, positions);

    // dxn1 is needed for dx and for the input norm's gradient; without either, only the
    // projections' parameter gradients remain.
    const bool needInput = dx != nullptr || grads.inputNorm != nullptr;
    T* dXn1 = needInput ? dXn : nullptr;
    const T* xn1 = s.xn1.data();
    linearBackward(rows, hidden, hidden, params.q, xn1, s.loraQ.data(), attention.dq, T(1), dXn1, false, grads.q,
                   dHidden, s.maskQ);
    linearBackward(rows, hidden, kvDim, params.k, xn1, s.loraK.data(), attention.dk, T(1), dXn1, true, grads.k,
                   dHidden, s.maskK);
    linearBackward(rows, hidden, kvDim, params.v, xn1, s.loraV.data(), attention.dv, T(1), dXn1, true, grads.v,
                   dHidden, s.maskV);
    if (needInput) {
        rmsNormBackward(n, hidden, s.x.data(), params.inputNorm, s.rstd1.data(), dXn, dH1, dx, grads.inputNorm,
                        w.normPartials);
    }
}

template <typename T>
void decoderLayerForwardCached(const LlamaDims& dims, int seq, const DecoderLayerParams<T>& params, const T* x, T* y,
                               KvCache<T>& kv) {
    const int past = kv.length();
    checkLayerForwardCached(dims, kv.batch(), seq, past, kv.keys().size(), kv.values().size(), params, x, y,
                            "decoderLayerForwardCached");
    layerForward(dims, kv.batch(), seq, past, params, x, y, scratchLayerState<T>(), false, &kv);
    kv.setLength(past + seq);
}

// -------------------------------------------------------------------------------------------------
// Embedding

template <typename T>
void embeddingForward(const LlamaDims& dims, const std::int32_t* ids, std::size_t tokens, const T* table, T* out) {
    checkEmbeddingForward(dims, ids, tokens, table, out, "embeddingForward");
    if (tokens == 0) return;
    const std::size_t hidden = dims.hidden;
    forChunks(tokens, 64, [&](std::size_t begin, std::size_t end) {
        for (std::size_t i = begin; i < end; ++i) {
            std::memcpy(out + i * hidden, table + static_cast<std::size_t>(ids[i]) * hidden, hidden * sizeof(T));
        }
    });
}

template <typename T>
void embeddingBackward(const LlamaDims& dims, const std::int32_t* ids, std::size_t tokens, const T* dOut, T* dTable) {
    checkEmbeddingBackward(dims, ids, tokens, dOut, dTable, "embeddingBackward");
    const std::size_t hidden = dims.hidden;
    forChunks(static_cast<std::size_t>(dims.vocab), 256, [&](std::size_t begin, std::size_t end) {
        std::fill(dTable + begin * hidden, dTable + end * hidden, T(0));
    });
    // In token order, so repeated ids add up in the same order on any thread count.
    for (std::size_t i = 0; i < tokens; ++i) {
        T* row = dTable + static_cast<std::size_t>(ids[i]) * hidden;
        const T* g = dOut + i * hidden;
        for (std::size_t j = 0; j < hidden; ++j) row[j] += g[j];
    }
}

// -------------------------------------------------------------------------------------------------
// Head

template <typename T>
struct HeadCache<T>::State {
    int batch = 0; // 0: nothing kept
    int seq = 0;
    int hidden = 0;
    int vocab = 0;
    std::vector<T> x, rstd, xn, lora;
    DropoutMask mask; // the LM head's LoRA dropout mask of the training forward
    // d(loss)/d(logits) for a loss gradient of 1: (softmax − one-hot) / counted on counted rows, 0
    // elsewhere. The backward scales it by lossGrad inside its GEMMs.
    std::vector<T> dLogits;
    std::vector<double> rowLoss;

    template <typename Fn>
    void forEachBuffer(Fn&& fn) {
        for (std::vector<T>* buffer : {&x, &rstd, &xn, &lora, &dLogits}) fn(*buffer);
    }
};

template <typename T>
HeadCache<T>::HeadCache() : state(std::make_unique<State>()) {}
template <typename T>
HeadCache<T>::~HeadCache() = default;
template <typename T>
HeadCache<T>::HeadCache(HeadCache&&) noexcept = default;
template <typename T>
HeadCache<T>& HeadCache<T>::operator=(HeadCache&&) noexcept = default;

template <typename T>
std::size_t HeadCache<T>::bytes() const {
    if (!state) return 0;
    std::size_t total = detail::capacityBytes(state->rowLoss);
    state->forEachBuffer([&](std::vector<T>& buffer) { total += detail::capacityBytes(buffer); });
    return total;
}

template <typename T>
void HeadCache<T>::release() {
    if (!state) return;
    state->forEachBuffer([](std::vector<T>& buffer) { detail::freeBuffer(buffer); });
    detail::freeBuffer(state->rowLoss);
    state->batch = 0;
}

namespace {

template <typename T>
typename HeadCache<T>::State& scratchHeadState() {
    thread_local typename HeadCache<T>::State state;
    return state;
}

template <typename T>
struct HeadScratch {
    std::vector<T> dXn, dHidden, normPartials;
};

template <typename T>
HeadScratch<T>& headScratch() {
    thread_local HeadScratch<T> scratch;
    return scratch;
}

} // namespace

template <typename T>
LossResult headForward(const LlamaDims& dims, int batch, int seq, const HeadParams<T>& params, const T* x,
                       const std::int32_t* labels, std::int32_t ignoreIndex, HeadCache<T>* cache) {
    const std::size_t counted = checkHeadForward(dims, batch, seq, params, x, labels, ignoreIndex, "headForward");
    const int hidden = dims.hidden;
    const int vocab = dims.vocab;
    const int rows = batch * seq;
    const std::size_t n = static_cast<std::size_t>(rows);

    if (cache != nullptr && !cache->state) cache->state = std::make_unique<typename HeadCache<T>::State>();
    typename HeadCache<T>::State& s = cache != nullptr ? *cache->state : scratchHeadState<T>();
    s.batch = batch;
    s.seq = seq;
    s.hidden = hidden;
    s.vocab = vocab;
    if (cache != nullptr) copyParallel(n * hidden, x, grow(s.x, n * hidden));
    T* rstd = grow(s.rstd, n);
    T* xn = grow(s.xn, n * hidden);
    rmsNormForward(n, hidden, x, params.norm, static_cast<T>(dims.rmsEps), xn, rstd);
    T* logits = grow(s.dLogits, n * vocab);
    s.mask = cache != nullptr ? dropoutMask(params.lmHead) : DropoutMask{};
    linearForward(rows, hidden, vocab, params.lmHead, xn, logits, grow(s.lora, n * loraRank(params.lmHead)), s.mask);

    // Row (b, t) predicts labels[b, t + 1]. Rows become (softmax − one-hot) / counted in place.
    double* rowLoss = grow(s.rowLoss, n);
    const T share = counted > 0 ? T(1) / static_cast<T>(counted) : T(0);
    forChunks(n, 4, [&](std::size_t begin, std::size_t end) {
        for (std::size_t r = begin; r < end; ++r) {
            T* row = logits + r * vocab;
            const bool last = r % seq == static_cast<std::size_t>(seq - 1);
            const std::int32_t label = last ? ignoreIndex : labels[r + 1];
            if (label == ignoreIndex) {
                rowLoss[r] = 0;
                std::fill(row, row + vocab, T(0));
                continue;
            }
            const T target = row[label];
            const T largest = detail::maxOf(row, vocab);
            const T sum = detail::expShiftedInPlace(row, vocab, largest);
            rowLoss[r] = elementwise::crossEntropyRowLoss(largest, sum, target);
            detail::scaleInPlace(row, vocab, elementwise::crossEntropyGradFactor(share, sum));
            row[label] = elementwise::crossEntropyLabelGrad(row[label], share);
        }
    });
    double total = 0;
    for (std::size_t r = 0; r < n; ++r) total += rowLoss[r];

    LossResult result;
    result.counted = counted;
    result.loss = counted > 0 ? total / static_cast<double>(counted) : 0.0;
    return result;
}

template <typename T>
void headBackward(const LlamaDims& dims, int batch, int seq, const HeadParams<T>& params, const HeadCache<T>& cache,
                  T lossGrad, T* dx, const HeadGrads<T>& grads) {
    checkHeadBackward(dims, batch, seq, params, grads, "headBackward");
    MIXZ_ENFORCE(cache.state && cache.state->batch != 0, "headBackward: the cache holds no forward");
    const typename HeadCache<T>::State& s = *cache.state;
    MIXZ_ENFORCE(s.batch == batch && s.seq == seq && s.hidden == dims.hidden && s.vocab == dims.vocab,
                 "headBackward: the cache holds a forward of batch ", s.batch, " seq ", s.seq, ", not batch ", batch,
                 " seq ", seq, " of these dims");
    const int hidden = dims.hidden;
    const int rows = batch * seq;
    const std::size_t n = static_cast<std::size_t>(rows);
    HeadScratch<T>& w = headScratch<T>();
    const bool needInput = dx != nullptr || grads.norm != nullptr;
    T* dXn = needInput ? grow(w.dXn, n * hidden) : nullptr;
    linearBackward(rows, hidden, dims.vocab, params.lmHead, s.xn.data(), s.lora.data(), s.dLogits.data(), lossGrad,
                   dXn, false, grads.lmHead, grow(w.dHidden, n * loraRank(params.lmHead)), s.mask);
    if (needInput) {
        rmsNormBackward(n, hidden, s.x.data(), params.norm, s.rstd.data(), dXn, static_cast<const T*>(nullptr), dx,
                        grads.norm, w.normPartials);
    }
}

template <typename T>
void headLogits(const LlamaDims& dims, std::size_t rows, const HeadParams<T>& params, const T* x, T* logits) {
    checkHeadLogits(dims, rows, params, x, logits, "headLogits");
    if (rows == 0) return;
    typename HeadCache<T>::State& s = scratchHeadState<T>();
    T* rstd = grow(s.rstd, rows);
    T* xn = grow(s.xn, rows * dims.hidden);
    rmsNormForward(rows, dims.hidden, x, params.norm, static_cast<T>(dims.rmsEps), xn, rstd);
    linearForward(static_cast<int>(rows), dims.hidden, dims.vocab, params.lmHead, xn, logits,
                  grow(s.lora, rows * loraRank(params.lmHead)));
}

// -------------------------------------------------------------------------------------------------
// Explicit instantiations

#define MIXZ_MODEL_INSTANTIATE(T)                                                                                     \
    template class DecoderLayerCache<T>;                                                                              \
    template class KvCache<T>;                                                                                        \
    template class HeadCache<T>;                                                                                      \
    template void decoderLayerForward<T>(const LlamaDims&, int, int, const DecoderLayerParams<T>&, const T*, T*,     \
                                         DecoderLayerCache<T>*, const std::int32_t*);                                 \
    template void decoderLayerBackward<T>(const LlamaDims&, int, int, const DecoderLayerParams<T>&,                  \
                                          const DecoderLayerCache<T>&, const T*, T*, const DecoderLayerGrads<T>&);    \
    template void decoderLayerForwardCached<T>(const LlamaDims&, int, const DecoderLayerParams<T>&, const T*, T*,    \
                                               KvCache<T>&);                                                          \
    template void embeddingForward<T>(const LlamaDims&, const std::int32_t*, std::size_t, const T*, T*);             \
    template void embeddingBackward<T>(const LlamaDims&, const std::int32_t*, std::size_t, const T*, T*);            \
    template LossResult headForward<T>(const LlamaDims&, int, int, const HeadParams<T>&, const T*,                   \
                                       const std::int32_t*, std::int32_t, HeadCache<T>*);                             \
    template void headBackward<T>(const LlamaDims&, int, int, const HeadParams<T>&, const HeadCache<T>&, T, T*,      \
                                  const HeadGrads<T>&);                                                               \
    template void headLogits<T>(const LlamaDims&, std::size_t, const HeadParams<T>&, const T*, T*);

MIXZ_MODEL_INSTANTIATE(float)
MIXZ_MODEL_INSTANTIATE(double)

#undef MIXZ_MODEL_INSTANTIATE

} // namespace mixz::model
