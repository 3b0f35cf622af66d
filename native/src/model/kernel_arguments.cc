// The argument checks of the LLaMA kernels, shared by the CPU kernels (llama.cc) and the CUDA
// backend (src/cuda/llama): see mixz/model/kernel_arguments.h.
#include "mixz/model/kernel_arguments.h"

#include <limits>

#include "mixz/common/error.h"

namespace mixz::model {

// ---------------------------------------------------------------------------------------------
// Building blocks

void checkShape(const LlamaDims& dims, int batch, int seq, const char* what) {
    validate(dims);
    if (batch <= 0) MIXZ_THROW(InvalidArgument, what, ": batch must be positive, got ", batch);
    if (seq <= 0) MIXZ_THROW(InvalidArgument, what, ": seq must be positive, got ", seq);
    if (seq > dims.maxSeq) {
        MIXZ_THROW(InvalidArgument, what, ": seq ", seq, " is longer than LlamaDims.maxSeq ", dims.maxSeq);
    }
    const auto rows = static_cast<std::size_t>(batch) * static_cast<std::size_t>(seq);
    if (rows > static_cast<std::size_t>(std::numeric_limits<int>::max())) {
        MIXZ_THROW(InvalidArgument, what, ": batch · seq = ", rows, " tokens is more than one call can take");
    }
}

void checkPointer(const void* pointer, const char* what, const char* name) {
    if (pointer == nullptr) MIXZ_THROW(InvalidArgument, what, ": ", name, " is null");
}

template <typename T>
void checkLinear(const LinearParams<T>& p, const char* what, const char* name) {
    if (p.weight == nullptr) MIXZ_THROW(InvalidArgument, what, ": ", name, ".weight is null");
    if ((p.loraA == nullptr) != (p.loraB == nullptr)) {
        MIXZ_THROW(InvalidArgument, what, ": ", name, ".loraA and ", name, ".loraB must both be set or both be null");
    }
    if (p.loraA != nullptr && p.rank <= 0) {
        MIXZ_THROW(InvalidArgument, what, ": ", name, ".rank must be positive with LoRA, got ", p.rank);
    }
    if (!(p.loraDropout >= 0 && p.loraDropout < 1)) {
        MIXZ_THROW(InvalidArgument, what, ": ", name, ".loraDropout must be in [0, 1), got ", p.loraDropout);
    }
}

template <typename T>
void checkLinearGrads(const LinearParams<T>& p, const LinearGrads<T>& g, const char* what, const char* name) {
    if (!hasLora(p) && (g.loraA != nullptr || g.loraB != nullptr)) {
        MIXZ_THROW(InvalidArgument, what, ": LoRA gradients of ", name, " requested, but ", name, " has no LoRA");
    }
    if (p.bias == nullptr && g.bias != nullptr) {
        MIXZ_THROW(InvalidArgument, what, ": a bias gradient of ", name, " requested, but ", name, " has no bias");
    }
}

template <typename T>
void checkLayerParams(const DecoderLayerParams<T>& p, const char* what) {
    checkPointer(p.inputNorm, what, "inputNorm");
    checkPointer(p.postNorm, what, "postNorm");
    checkLinear(p.q, what, "q");
    checkLinear(p.k, what, "k");
    checkLinear(p.v, what, "v");
    checkLinear(p.o, what, "o");
    checkLinear(p.gate, what, "gate");
    checkLinear(p.up, what, "up");
    checkLinear(p.down, what, "down");
}

template <typename T>
void checkHeadParams(const HeadParams<T>& p, const char* what) {
    checkPointer(p.norm, what, "norm");
    checkLinear(p.lmHead, what, "lmHead");
}

void checkIds(const LlamaDims& dims, const std::int32_t* ids, std::size_t tokens, const char* what) {
    validate(dims);
    if (tokens > 0) checkPointer(ids, what, "ids");
    for (std::size_t i = 0; i < tokens; ++i) {
        if (ids[i] < 0 || ids[i] >= dims.vocab) {
            MIXZ_THROW(InvalidArgument, what, ": token id ", ids[i], " at position ", i,
                       " is outside the vocabulary [0, ", dims.vocab, ")");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Each kernel's arguments

template <typename T>
void checkLayerForward(const LlamaDims& dims, int batch, int seq, const DecoderLayerParams<T>& params, const T* x,
                       const T* y, const char* what) {
    checkShape(dims, batch, seq, what);
    checkLayerParams(params, what);
    checkPointer(x, what, "x");
    checkPointer(y, what, "y");
}

template <typename T>
void checkLayerBackward(const LlamaDims& dims, int batch, int seq, const DecoderLayerParams<T>& params, const T* dy,
                        const DecoderLayerGrads<T>& grads, const char* what) {
    checkShape(dims, batch, seq, what);
    checkLayerParams(params, what);
    checkPointer(dy, what, "dy");
    checkLinearGrads(params.q, grads.q, what, "q");
    checkLinearGrads(params.k, grads.k, what, "k");
    checkLinearGrads(params.v, grads.v, what, "v");
    checkLinearGrads(params.o, grads.o, what, "o");
    checkLinearGrads(params.gate, grads.gate, what, "gate");
    checkLinearGrads(params.up, grads.up, what, "up");
    checkLinearGrads(params.down, grads.down, what, "down");
}

template <typename T>
void checkLayerForwardCached(const LlamaDims& dims, int batch, int seq, int past, std::size_t keys,
                             std::size_t values, const DecoderLayerParams<T>& params, const T* x, const T* y,
                             const char* what) {
    checkLayerForward(dims, batch, seq, params, x, y, what);
    const std::size_t expected = static_cast<std::size_t>(batch) * dims.maxSeq * dims.kvDim();
    if (keys != expected || values != expected) {
        MIXZ_THROW(InvalidArgument, what, ": the KV cache holds ", keys, " keys, not the ", expected, " of batch ",
                   batch, " with these dims (made for other dims?)");
    }
    if (past < 0 || past + seq > dims.maxSeq) {
        MIXZ_THROW(InvalidArgument, what, ": positions [", past, ", ", past + seq, ") pass LlamaDims.maxSeq ",
                   dims.maxSeq);
    }
}

template <typename T>
void checkEmbeddingForward(const LlamaDims& dims, const std::int32_t* ids, std::size_t tokens, const T* table,
                           const T* out, const char* what) {
    checkIds(dims, ids, tokens, what);
    if (tokens == 0) return;
    checkPointer(table, what, "table");
    checkPointer(out, what, "out");
}

template <typename T>
void checkEmbeddingBackward(const LlamaDims& dims, const std::int32_t* ids, std::size_t tokens, const T* dOut,
                            const T* dTable, const char* what) {
    checkIds(dims, ids, tokens, what);
    checkPointer(dTable, what, "dTable");
    if (tokens > 0) checkPointer(dOut, what, "dOut");
}

template <typename T>
std::size_t checkHeadForward(const LlamaDims& dims, int batch, int seq, const HeadParams<T>& params, const T* x,
                             const std::int32_t* labels, std::int32_t ignoreIndex, const char* what) {
    checkShape(dims, batch, seq, what);
    checkHeadParams(params, what);
    checkPointer(x, what, "x");
    checkPointer(labels, what, "labels");
    const int vocab = dims.vocab;
    const std::size_t n = static_cast<std::size_t>(batch) * static_cast<std::size_t>(seq);
    std::size_t counted = 0;
    for (std::size_t i = 0; i < n; ++i) {
        const std::int32_t label = labels[i];
        if (label == ignoreIndex) continue;
        if (label < 0 || label >= vocab) {
            MIXZ_THROW(InvalidArgument, what, ": label ", label, " at position ", i, " (sequence ", i / seq, ", token ",
                       i % seq, ") is outside the vocabulary [0, ", vocab, ") and is not the ignore index ",
                       ignoreIndex);
        }
        if (i % seq != 0) ++counted; // the label of token 0 is never predicted
    }
    return counted;
}

template <typename T>
void checkHeadBackward(const LlamaDims& dims, int batch, int seq, const HeadParams<T>& params,
                       const HeadGrads<T>& grads, const char* what) {
    checkShape(dims, batch, seq, what);
    checkHeadParams(params, what);
    checkLinearGrads(params.lmHead, grads.lmHead, what, "lmHead");
}

template <typename T>
void checkHeadLogits(const LlamaDims& dims, std::size_t rows, const HeadParams<T>& params, const T* x,
                     const T* logits, const char* what) {
    validate(dims);
    checkHeadParams(params, what);
    if (rows == 0) return;
    checkPointer(x, what, "x");
    checkPointer(logits, what, "logits");
    if (rows > static_cast<std::size_t>(std::numeric_limits<int>::max())) {
        MIXZ_THROW(InvalidArgument, what, ": ", rows, " rows are more than one call can take");
    }
}

// ---------------------------------------------------------------------------------------------
// Explicit instantiations

#define MIXZ_KERNEL_ARGUMENTS_INSTANTIATE(T)                                                                          \
    template void checkLinear<T>(const LinearParams<T>&, const char*, const char*);                                   \
    template void checkLinearGrads<T>(const LinearParams<T>&, const LinearGrads<T>&, const char*, const char*);       \
    template void checkLayerParams<T>(const DecoderLayerParams<T>&, const char*);                                     \
    template void checkHeadParams<T>(const HeadParams<T>&, const char*);                                              \
    template void checkLayerForward<T>(const LlamaDims&, int, int, const DecoderLayerParams<T>&, const T*, const T*, \
                                       const char*);                                                                  \
    template void checkLayerBackward<T>(const LlamaDims&, int, int, const DecoderLayerParams<T>&, const T*,          \
                                        const DecoderLayerGrads<T>&, const char*);                                    \
    template void checkLayerForwardCached<T>(const LlamaDims&, int, int, int, std::size_t, std::size_t,              \
                                             const DecoderLayerParams<T>&, const T*, const T*, const char*);          \
    template void checkEmbeddingForward<T>(const LlamaDims&, const std::int32_t*, std::size_t, const T*, const T*,   \
                                           const char*);                                                              \
    template void checkEmbeddingBackward<T>(const LlamaDims&, const std::int32_t*, std::size_t, const T*, const T*,  \
                                            const char*);                                                             \
    template std::size_t checkHeadForward<T>(const LlamaDims&, int, int, const HeadParams<T>&, const T*,             \
                                             const std::int32_t*, std::int32_t, const char*);                         \
    template void checkHeadBackward<T>(const LlamaDims&, int, int, const HeadParams<T>&, const HeadGrads<T>&,        \
                                       const char*);                                                                  \
    template void checkHeadLogits<T>(const LlamaDims&, std::size_t, const HeadParams<T>&, const T*, const T*,        \
                                     const char*);

MIXZ_KERNEL_ARGUMENTS_INSTANTIATE(float)
MIXZ_KERNEL_ARGUMENTS_INSTANTIATE(double)

#undef MIXZ_KERNEL_ARGUMENTS_INSTANTIATE

} // namespace mixz::model
