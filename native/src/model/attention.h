// Causal multi-head attention with grouped key/value heads, on projected (and rotated) q, k, v.
// Internal to src/model (llama.cc calls it).
//
// Vocabulary: a call covers `batch` sequences; each has `queries` new positions at
// [past, past + queries) that attend to the `keys` = past + queries positions [0, keys) (query at
// position p sees keys 0..p). Query head h reads key/value head h / (heads / kvHeads). Queries are
// processed in query blocks of kQueryBlock rows: a block's scores only span the keys its last row
// can see, so the causal upper triangle costs at most one block's width of extra work.
#pragma once

#include <cstddef>

namespace mixz::model::detail {

inline constexpr int kQueryBlock = 64;

template <typename T>
struct AttentionForwardArgs {
    int batch = 0;
    int heads = 0;
    int kvHeads = 0;
    int headDim = 0;
    int queries = 0;
    int past = 0;
    const T* q = nullptr; // [batch, queries, heads · headDim]
    const T* k = nullptr; // rows of kvHeads · headDim; sequence b starts at k + b · kvBatchStride
    const T* v = nullptr; // as k
    std::size_t kvBatchStride = 0;
    // [batch, queries]: the first key each query sees, for packed sequences (several examples in
    // one row: a query sees the keys of its own example only). Null: key 0 for every query.
    const int* keyFrom = nullptr;
    T* out = nullptr;     // [batch, queries, heads · headDim]
    // [batch, heads, queries, keys]: the softmax probabilities, kept for the backward (entries a
    // query cannot see inside its block's span are 0; those past the span are not written).
    // Null: not kept.
    T* probs = nullptr;
};

template <typename T>
void attentionForward(const AttentionForwardArgs<T>& args);

// The backward of a full-sequence forward (past = 0, keys = queries = seq) that kept probs. The
// keys a query did not see have probability 0, so packed sequences need nothing more here.
template <typename T>
struct AttentionBackwardArgs {
    int batch = 0;
    int heads = 0;
    int kvHeads = 0;
    int headDim = 0;
    int seq = 0;
    const T* q = nullptr;     // [batch, seq, heads · headDim]
    const T* k = nullptr;     // [batch, seq, kvHeads · headDim]
    const T* v = nullptr;
    const T* probs = nullptr; // as the forward kept them
    const T* dOut = nullptr;  // [batch, seq, heads · headDim]
    T* dq = nullptr;          // overwritten, like q
    T* dk = nullptr;          // overwritten, like k
    T* dv = nullptr;
};

template <typename T>
void attentionBackward(const AttentionBackwardArgs<T>& args);

} // namespace mixz::model::detail
