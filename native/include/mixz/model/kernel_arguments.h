// mixz::model: the argument checks of the LLaMA kernels of mixz/model/llama.h, in one place for
// every backend that implements them: the CPU kernels (src/model/llama.cc) and the CUDA backend
// (src/cuda/llama) call these, so both refuse the same arguments, in the same order, with the same
// messages (InvalidArgument, "<kernel>: <what is wrong>"). Plain host code; `what` is the kernel's
// name as the messages give it ("decoderLayerForward", ...).
//
// The per-kernel checks (checkLayerForward, ...) are what each kernel checks before it computes;
// a backend may add its own refusals after them (a cache made by another backend, sizes it cannot
// take). The templates are instantiated for float and double (kernel_arguments.cc).
#pragma once

#include <cstddef>
#include <cstdint>

#include "mixz/model/llama.h"

namespace mixz::model {

template <typename T>
bool hasLora(const LinearParams<T>& p) {
    return p.loraA != nullptr;
}

// The LoRA rank of a linear, 0 without LoRA.
template <typename T>
int loraRank(const LinearParams<T>& p) {
    return hasLora(p) ? p.rank : 0;
}

// The call a decoder layer's forward keeps in its cache (the CPU's DecoderLayerCache::State and
// the CUDA backend's LayerStore derive from it): what the backward checks its own batch, seq and
// dims against.
struct LayerCallShape {
    int batch = 0; // 0: nothing kept
    int seq = 0;
    int hidden = 0;
    int kvDim = 0;
    int intermediate = 0;
    int heads = 0;

    void record(const LlamaDims& dims, int batchSize, int seqLength) {
        batch = batchSize;
        seq = seqLength;
        hidden = dims.hidden;
        kvDim = dims.kvDim();
        intermediate = dims.intermediate;
        heads = dims.heads;
    }
};

// ---------------------------------------------------------------------------------------------
// Building blocks

// validate(dims), batch and seq positive, seq within dims.maxSeq, batch · seq within int.
void checkShape(const LlamaDims& dims, int batch, int seq, const char* what);
void checkPointer(const void* pointer, const char* what, const char* name);
// A linear's weight set, LoRA A and B both set or both null, a positive rank with LoRA, the LoRA
// dropout in [0, 1).
template <typename T>
void checkLinear(const LinearParams<T>& p, const char* what, const char* name);
// No LoRA gradients asked of a linear without LoRA, no bias gradient of a linear without bias.
template <typename T>
void checkLinearGrads(const LinearParams<T>& p, const LinearGrads<T>& g, const char* what, const char* name);
template <typename T>
void checkLayerParams(const DecoderLayerParams<T>& p, const char* what);
template <typename T>
void checkHeadParams(const HeadParams<T>& p, const char* what);
// validate(dims), ids set when there are tokens, every id in [0, vocab) (the first bad one named).
void checkIds(const LlamaDims& dims, const std::int32_t* ids, std::size_t tokens, const char* what);

// ---------------------------------------------------------------------------------------------
// Each kernel's arguments

template <typename T>
void checkLayerForward(const LlamaDims& dims, int batch, int seq, const DecoderLayerParams<T>& params, const T* x,
                       const T* y, const char* what);
template <typename T>
void checkLayerBackward(const LlamaDims& dims, int batch, int seq, const DecoderLayerParams<T>& params, const T* dy,
                        const DecoderLayerGrads<T>& grads, const char* what);
// A cached forward of `seq` tokens on a KV cache of `batch` sequences that holds `keys` and
// `values` elements and `past` positions: those of checkLayerForward, then the cache's size for
// these dims and the positions [past, past + seq) within dims.maxSeq.
template <typename T>
void checkLayerForwardCached(const LlamaDims& dims, int batch, int seq, int past, std::size_t keys,
                             std::size_t values, const DecoderLayerParams<T>& params, const T* x, const T* y,
                             const char* what);
// The table and the output are checked only when there are tokens.
template <typename T>
void checkEmbeddingForward(const LlamaDims& dims, const std::int32_t* ids, std::size_t tokens, const T* table,
                           const T* out, const char* what);
template <typename T>
void checkEmbeddingBackward(const LlamaDims& dims, const std::int32_t* ids, std::size_t tokens, const T* dOut,
                            const T* dTable, const char* what);
// Also every label is ignoreIndex or in [0, vocab) (the first bad one named). Returns the labels
// the loss counts: those not ignored, less each sequence's first (never predicted).
template <typename T>
std::size_t checkHeadForward(const LlamaDims& dims, int batch, int seq, const HeadParams<T>& params, const T* x,
                             const std::int32_t* labels, std::int32_t ignoreIndex, const char* what);
template <typename T>
void checkHeadBackward(const LlamaDims& dims, int batch, int seq, const HeadParams<T>& params,
                       const HeadGrads<T>& grads, const char* what);
// x, logits and the row count are checked only when there are rows.
template <typename T>
void checkHeadLogits(const LlamaDims& dims, std::size_t rows, const HeadParams<T>& params, const T* x,
                     const T* logits, const char* what);

} // namespace mixz::model
