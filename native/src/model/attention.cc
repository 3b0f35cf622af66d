// Causal GQA attention (see attention.h for the vocabulary). One task per (sequence, query head)
// in the forward and per (sequence, key/value head) in the backward, so the query heads sharing a
// key/value head add their dk and dv contributions in a fixed order on one thread: results do not
// depend on the thread count. The GEMMs inside a task are BLAS calls on that task's thread; when
// OpenBLAS is threaded itself, the tasks run one after the other instead (detail::forBlasTasks).
//
// Forward of one (sequence, head), one query block at a time (rows r of the block, span = the keys
// its last row sees):
//   scores[r, :span] = scale · Q[r] · K[:span]ᵀ      scale = 1 / sqrt(headDim)
//   P[r, :]          = softmax over the keys row r sees (0 for the rest of the span)
//   out[r]           = P[r, :span] · V[:span]
// Backward, with dS = P ⊙ (dP − rowsum(P ⊙ dP)) · scale and dP = dOut · Vᵀ:
//   dQ[r] = dS[r, :span] · K[:span]
//   dK[j] = Σ over queries i ≥ j of dS[i, j] · Q[i],  dV[j] = Σ over i ≥ j of P[i, j] · dOut[i]
// (taken per key block, whose queries start at the block: no work above the diagonal block).
#include "attention.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels.h"

namespace mixz::model::detail {
namespace {

// Softmax of one score row over its entries [from, visible), in place; entries [0, from) and
// [visible, span) are set to 0 (from > 0: a packed sequence's earlier examples).
template <typename T>
void causalSoftmaxRow(T* row, int from, int visible, int span) {
    const T largest = maxOf(row + from, visible - from);
    const T sum = expShiftedInPlace(row + from, visible - from, largest);
    scaleInPlace(row + from, visible - from, elementwise::softmaxInverseSum(sum));
    std::fill(row, row + from, T(0));
    std::fill(row + visible, row + span, T(0));
}

template <typename T>
std::vector<T>& taskScratch() {
    thread_local std::vector<T> scratch;
    return scratch;
}

} // namespace

template <typename T>
void attentionForward(const AttentionForwardArgs<T>& args) {
    const int heads = args.heads;
    const int headDim = args.headDim;
    const int width = heads * headDim;
    const int kvWidth = args.kvHeads * headDim;
    const int group = heads / args.kvHeads;
    const int queries = args.queries;
    const int keys = args.past + queries;
    const T scale = elementwise::attentionScale<T>(headDim);

    forBlasTasks(static_cast<std::size_t>(args.batch) * heads, [&](std::size_t task) {
        const int b = static_cast<int>(task / heads);
        const int h = static_cast<int>(task % heads);
        const int kvHead = h / group;
        const T* q = args.q + static_cast<std::size_t>(b) * queries * width + h * headDim;
        const T* k = args.k + b * args.kvBatchStride + kvHead * headDim;
        const T* v = args.v + b * args.kvBatchStride + kvHead * headDim;
        T* out = args.out + static_cast<std::size_t>(b) * queries * width + h * headDim;
        T* probs = args.probs != nullptr ? args.probs + (static_cast<std::size_t>(b) * heads + h) * queries * keys
                                         : nullptr;
        T* scratch = probs == nullptr
                         ? grow(taskScratch<T>(), static_cast<std::size_t>(std::min(queries, kQueryBlock)) * keys)
                         : nullptr;
        for (int first = 0; first < queries; first += kQueryBlock) {
            const int rows = std::min(kQueryBlock, queries - first);
            const int span = args.past + first + rows;
            T* scores = probs != nullptr ? probs + static_cast<std::size_t>(first) * keys : scratch;
            gemm(false, true, rows, span, headDim, scale, q + static_cast<std::size_t>(first) * width, width, k,
                 kvWidth, T(0), scores, keys);
            for (int r = 0; r < rows; ++r) {
                const int from = args.keyFrom != nullptr ? args.keyFrom[static_cast<std::size_t>(b) * queries + first + r] : 0;
                causalSoftmaxRow(scores + static_cast<std::size_t>(r) * keys, from, args.past + first + r + 1, span);
            }
            gemm(false, false, rows, headDim, span, T(1), scores, keys, v, kvWidth, T(0),
                 out + static_cast<std::size_t>(first) * width, width);
        }
    });
}

template <typename T>
void attentionBackward(const AttentionBackwardArgs<T>& args) {
    const int heads = args.heads;
    const int headDim = args.headDim;
    const int width = heads * headDim;
    const int kvWidth = args.kvHeads * headDim;
    const int group = heads / args.kvHeads;
    const int seq = args.seq;
    const T scale = elementwise::attentionScale<T>(headDim);
    const std::size_t square = static_cast<std::size_t>(seq) * seq;

    forBlasTasks(static_cast<std::size_t>(args.batch) * args.kvHeads, [&](std::size_t task) {
        const int b = static_cast<int>(task / args.kvHeads);
        const int kvHead = static_cast<int>(task % args.kvHeads);
        const std::size_t kvOffset = static_cast<std::size_t>(b) * seq * kvWidth + kvHead * headDim;
        const T* k = args.k + kvOffset;
        const T* v = args.v + kvOffset;
        T* dk = args.dk + kvOffset;
        T* dv = args.dv + kvOffset;
        T* dScores = grow(taskScratch<T>(), square);
        for (int member = 0; member < group; ++member) {
            const int h = kvHead * group + member;
            const std::size_t offset = static_cast<std::size_t>(b) * seq * width + h * headDim;
            const T* q = args.q + offset;
            const T* dOut = args.dOut + offset;
            T* dq = args.dq + offset;
            const T* probs = args.probs + (static_cast<std::size_t>(b) * heads + h) * square;
            for (int first = 0; first < seq; first += kQueryBlock) {
                const int rows = std::min(kQueryBlock, seq - first);
                const int span = first + rows;
                T* dBlock = dScores + static_cast<std::size_t>(first) * seq;
                gemm(false, true, rows, span, headDim, T(1), dOut + static_cast<std::size_t>(first) * width, width,
                     v, kvWidth, T(0), dBlock, seq);
                for (int r = 0; r < rows; ++r) {
                    const int visible = first + r + 1;
                    const T* p = probs + static_cast<std::size_t>(first + r) * seq;
                    T* d = dBlock + static_cast<std::size_t>(r) * seq;
                    const T weighted = dot(p, d, visible);
                    for (int j = 0; j < visible; ++j) d[j] = elementwise::softmaxBackward(p[j], d[j], weighted, scale);
                    std::fill(d + visible, d + span, T(0));
                }
                gemm(false, false, rows, headDim, span, T(1), dBlock, seq, k, kvWidth, T(0),
                     dq + static_cast<std::size_t>(first) * width, width);
            }
            // The first query head of the group overwrites dk and dv, the others add to them.
            const T beta = member == 0 ? T(0) : T(1);
            for (int first = 0; first < seq; first += kQueryBlock) {
                const int rows = std::min(kQueryBlock, seq - first);
                const int below = seq - first; // queries that see this key block
                const std::size_t corner = static_cast<std::size_t>(first) * seq + first;
                gemm(true, false, rows, headDim, below, T(1), dScores + corner, seq,
                     q + static_cast<std::size_t>(first) * width, width, beta,
                     dk + static_cast<std::size_t>(first) * kvWidth, kvWidth);
                gemm(true, false, rows, headDim, below, T(1), probs + corner, seq,
                     dOut + static_cast<std::size_t>(first) * width, width, beta,
                     dv + static_cast<std::size_t>(first) * kvWidth, kvWidth);
            }
        }
    });
}

template void attentionForward<float>(const AttentionForwardArgs<float>&);
template void attentionForward<double>(const AttentionForwardArgs<double>&);
template void attentionBackward<float>(const AttentionBackwardArgs<float>&);
template void attentionBackward<double>(const AttentionBackwardArgs<double>&);

} // namespace mixz::model::detail
