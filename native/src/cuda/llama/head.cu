// NOT YET RUN ON A GPU (see llama_device.h).
//
// The embedding and the head (final norm, LM head, shifted cross-entropy, logits) on the device,
// the CPU's embeddingForward / embeddingBackward / headForward / headBackward / headLogits
// (src/model/llama.cc) step for step. Token ids and labels are host memory: they are checked
// there by the CPU's own checks (mixz/model/kernel_arguments.h, naming the first bad one) and
// uploaded.
//
// Determinism without atomics: the embedding backward groups token positions by id on the host
// (a stable counting sort) and uploads the grouping with the ids; one thread per (id, column)
// adds its positions' rows in token order, which is the CPU's order of additions. The loss sums
// the per-row losses (double) on the host in row order, as the CPU does.
#include "llama_device.h"

#include <limits>

#include "mixz/common/error.h"
#include "ops.h"

namespace mixz::cuda {

using namespace llamadev;

namespace {

class HeadCache final : public backend::ActivationCache {
public:
    explicit HeadCache(DeviceContext&) {}
    std::size_t bytes() const override { return store.bytes(); }
    void release() override { store.release(); }

    HeadStore store;
};

// Uploads n host ints into a workspace slot.
std::int32_t* uploadInts(DeviceContext& ctx, Workspace& ws, Slot slot, const std::int32_t* host, std::size_t n) {
    std::int32_t* device = ws.slots[slot].grow<std::int32_t>(ctx, n);
    if (n > 0) {
        MIXZ_CUDA_CHECK(cudaMemcpyAsync(device, host, n * sizeof(std::int32_t), cudaMemcpyHostToDevice, ctx.stream));
    }
    return device;
}

} // namespace

std::unique_ptr<backend::ActivationCache> makeHeadCache(DeviceContext& ctx) {
    return std::make_unique<HeadCache>(ctx);
}

void releaseWorkspace(DeviceContext& ctx) {
    dropWorkspace(ctx);
}

// -------------------------------------------------------------------------------------------------
// Embedding

void embeddingForward(DeviceContext& ctx, const model::LlamaDims& dims, const std::int32_t* ids, std::size_t tokens,
                      const float* table, float* out) {
    constexpr const char* what = "embeddingForward";
    model::checkEmbeddingForward(dims, ids, tokens, table, out, what);
    if (tokens == 0) return;
    MIXZ_ENFORCE(tokens <= static_cast<std::size_t>(std::numeric_limits<int>::max()), what, ": ", tokens,
                 " tokens are more than one call can take");
    Workspace& ws = workspaceOf(ctx);
    std::lock_guard<std::mutex> lock(ws.mutex);
    const std::int32_t* deviceIds = uploadInts(ctx, ws, kIds, ids, tokens);
    embeddingGather(ctx, tokens, dims.hidden, deviceIds, table, out);
    MIXZ_CUDA_CHECK(cudaStreamSynchronize(ctx.stream));
}

void embeddingBackward(DeviceContext& ctx, const model::LlamaDims& dims, const std::int32_t* ids, std::size_t tokens,
                       const float* dOut, float* dTable) {
    constexpr const char* what = "embeddingBackward";
    model::checkEmbeddingBackward(dims, ids, tokens, dOut, dTable, what);
    MIXZ_ENFORCE(tokens <= static_cast<std::size_t>(std::numeric_limits<int>::max()), what, ": ", tokens,
                 " tokens are more than one call can take");
    Workspace& ws = workspaceOf(ctx);
    std::lock_guard<std::mutex> lock(ws.mutex);
    const std::size_t hidden = dims.hidden;
    // Rows of ids that occur are overwritten by the scatter; zeroing all first is simpler than
    // zeroing the others and costs one memset of the table.
    MIXZ_CUDA_CHECK(cudaMemsetAsync(dTable, 0, static_cast<std::size_t>(dims.vocab) * hidden * sizeof(float), ctx.stream));
    if (tokens > 0) {
        // groups = [unique ids in ascending order (U), offsets (U + 1), positions by id, each id's
        // in token order (tokens)]: a stable counting sort over the vocabulary.
        std::vector<std::int32_t> counts(static_cast<std::size_t>(dims.vocab), 0);
        for (std::size_t i = 0; i < tokens; ++i) ++counts[ids[i]];
        std::int32_t unique = 0;
        for (std::int32_t c : counts) unique += c > 0;
        std::vector<std::int32_t>& groups = ws.hostInts;
        groups.assign(static_cast<std::size_t>(unique) * 2 + 1 + tokens, 0);
        std::int32_t* uniqueIds = groups.data();
        std::int32_t* offsets = uniqueIds + unique;
        std::int32_t* positions = offsets + unique + 1;
        // counts becomes each id's next write position in `positions`.
        std::int32_t u = 0;
        std::int32_t next = 0;
        for (std::int32_t id = 0; id < dims.vocab; ++id) {
            const std::int32_t c = counts[id];
            if (c == 0) continue;
            uniqueIds[u] = id;
            offsets[u] = next;
            counts[id] = next;
            next += c;
            ++u;
        }
        offsets[unique] = next;
        for (std::size_t i = 0; i < tokens; ++i) positions[counts[ids[i]]++] = static_cast<std::int32_t>(i);
        const std::int32_t* deviceGroups = uploadInts(ctx, ws, kGroups, groups.data(), groups.size());
        embeddingScatter(ctx, unique, dims.hidden, deviceGroups, tokens, dOut, dTable);
    }
    MIXZ_CUDA_CHECK(cudaStreamSynchronize(ctx.stream));
}

// -------------------------------------------------------------------------------------------------
// Head

model::LossResult headForward(DeviceContext& ctx, const model::LlamaDims& dims, int batch, int seq,
                              const model::HeadParams<float>& params, const float* x, const std::int32_t* labels,
                              std::int32_t ignoreIndex, backend::ActivationCache* cache) {
    constexpr const char* what = "headForward";
    if (params.lmHead.bias != nullptr) {
        MIXZ_THROW(InvalidArgument, what, ": lmHead has a bias; linear biases are not supported by the CUDA backend yet");
    }
    const std::size_t counted = model::checkHeadForward(dims, batch, seq, params, x, labels, ignoreIndex, what);
    const int hidden = dims.hidden;
    const int vocab = dims.vocab;
    const int rows = batch * seq;
    const std::size_t n = static_cast<std::size_t>(rows);
    HeadCache* own = nullptr;
    if (cache != nullptr) {
        own = dynamic_cast<HeadCache*>(cache);
        MIXZ_ENFORCE(own != nullptr, what, ": the cache was not made by this backend's makeHeadCache");
    }

    Workspace& ws = workspaceOf(ctx);
    std::lock_guard<std::mutex> lock(ws.mutex);
    HeadStore& s = own != nullptr ? own->store : ws.head;
    s.batch = batch;
    s.seq = seq;
    s.hidden = hidden;
    s.vocab = vocab;
    if (own != nullptr) {
        MIXZ_CUDA_CHECK(cudaMemcpyAsync(s.x.grow<float>(ctx, n * hidden), x, n * hidden * sizeof(float),
                                        cudaMemcpyDeviceToDevice, ctx.stream));
    }
    float* rstd = s.rstd.grow<float>(ctx, n);
    float* xn = s.xn.grow<float>(ctx, n * hidden);
    rmsNormForward(ctx, n, hidden, x, params.norm, static_cast<float>(dims.rmsEps), xn, rstd);
    float* logits = s.dLogits.grow<float>(ctx, n * vocab);
    s.mask = own != nullptr ? dropoutOf(params.lmHead) : Dropout{};
    linearForward(ctx, ws, rows, hidden, vocab, params.lmHead, xn, logits,
                  s.lora.grow<float>(ctx, n * loraRank(params.lmHead)), s.mask);

    // Row (b, t) predicts labels[b, t + 1]; -1 marks a row that is not counted.
    std::vector<std::int32_t>& rowLabels = ws.hostInts;
    rowLabels.resize(n);
    for (std::size_t r = 0; r < n; ++r) {
        const bool last = r % seq == static_cast<std::size_t>(seq - 1);
        const std::int32_t label = last ? ignoreIndex : labels[r + 1];
        rowLabels[r] = label == ignoreIndex ? -1 : label;
    }
    const std::int32_t* deviceLabels = uploadInts(ctx, ws, kLabels, rowLabels.data(), n);
    double* rowLoss = ws.slots[kRowLoss].grow<double>(ctx, n);
    const float share = counted > 0 ? 1.0f / static_cast<float>(counted) : 0.0f;
    crossEntropy(ctx, n, vocab, logits, deviceLabels, share, rowLoss);
    ws.hostRowLoss.resize(n);
    MIXZ_CUDA_CHECK(cudaMemcpyAsync(ws.hostRowLoss.data(), rowLoss, n * sizeof(double), cudaMemcpyDeviceToHost,
                                    ctx.stream));
    MIXZ_CUDA_CHECK(cudaStreamSynchronize(ctx.stream));
    double total = 0;
    for (std::size_t r = 0; r < n; ++r) total += ws.hostRowLoss[r];

    model::LossResult result;
    result.counted = counted;
    result.loss = counted > 0 ? total / static_cast<double>(counted) : 0.0;
    return result;
}

void headBackward(DeviceContext& ctx, const model::LlamaDims& dims, int batch, int seq,
                  const model::HeadParams<float>& params, const backend::ActivationCache& cache, float lossGrad,
                  float* dx, const model::HeadGrads<float>& grads) {
    constexpr const char* what = "headBackward";
    if (params.lmHead.bias != nullptr) {
        MIXZ_THROW(InvalidArgument, what, ": lmHead has a bias; linear biases are not supported by the CUDA backend yet");
    }
    model::checkHeadBackward(dims, batch, seq, params, grads, what);
    const auto* own = dynamic_cast<const HeadCache*>(&cache);
    MIXZ_ENFORCE(own != nullptr, what, ": the cache was not made by this backend's makeHeadCache");
    const HeadStore& s = own->store;
    MIXZ_ENFORCE(s.batch != 0, "headBackward: the cache holds no forward");
    MIXZ_ENFORCE(s.batch == batch && s.seq == seq && s.hidden == dims.hidden && s.vocab == dims.vocab,
                 "headBackward: the cache holds a forward of batch ", s.batch, " seq ", s.seq, ", not batch ", batch,
                 " seq ", seq, " of these dims");
    Workspace& ws = workspaceOf(ctx);
    std::lock_guard<std::mutex> lock(ws.mutex);
    const int hidden = dims.hidden;
    const int rows = batch * seq;
    const std::size_t n = static_cast<std::size_t>(rows);
    const bool needInput = dx != nullptr || grads.norm != nullptr;
    float* dXn = needInput ? ws.slot(ctx, kDXn, n * hidden) : nullptr;
    float* dHidden = ws.slot(ctx, kDHidden, n * loraRank(params.lmHead));
    linearBackward(ctx, ws, rows, hidden, dims.vocab, params.lmHead, s.xn.as<float>(), s.lora.as<float>(),
                   s.dLogits.as<float>(), lossGrad, dXn, false, grads.lmHead, dHidden, s.mask);
    if (needInput) {
        rmsNormBackward(ctx, ws, n, hidden, s.x.as<float>(), params.norm, s.rstd.as<float>(), dXn, nullptr, dx,
                        grads.norm);
    }
    MIXZ_CUDA_CHECK(cudaStreamSynchronize(ctx.stream));
}

void headLogits(DeviceContext& ctx, const model::LlamaDims& dims, std::size_t rows,
                const model::HeadParams<float>& params, const float* x, float* logits) {
    model::checkHeadLogits(dims, rows, params, x, logits, "headLogits");
    if (rows == 0) return;
    Workspace& ws = workspaceOf(ctx);
    std::lock_guard<std::mutex> lock(ws.mutex);
    HeadStore& s = ws.head;
    float* rstd = s.rstd.grow<float>(ctx, rows);
    float* xn = s.xn.grow<float>(ctx, rows * dims.hidden);
    rmsNormForward(ctx, rows, dims.hidden, x, params.norm, static_cast<float>(dims.rmsEps), xn, rstd);
    const std::size_t elements = rows * static_cast<std::size_t>(dims.vocab);
    float* deviceLogits = ws.slot(ctx, kLogits, elements);
    linearForward(ctx, ws, static_cast<int>(rows), dims.hidden, dims.vocab, params.lmHead, xn, deviceLogits,
                  s.lora.grow<float>(ctx, rows * loraRank(params.lmHead)), Dropout{});
    MIXZ_CUDA_CHECK(
        cudaMemcpyAsync(logits, deviceLogits, elements * sizeof(float), cudaMemcpyDeviceToHost, ctx.stream));
    MIXZ_CUDA_CHECK(cudaStreamSynchronize(ctx.stream));
}

} // namespace mixz::cuda
