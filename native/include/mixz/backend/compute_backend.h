// mixz::backend: the compute-backend seam (DESIGN.md §2 "Compute backends"). Everything the ZeRO
// logic (mixz::zero) needs from the hardware sits behind ComputeBackend:
//
//   kernels   the model's layer kernels, forward and backward, on full fp32 parameters
//   memory    the pool of compute buffers: gathered parameters and full gradients, kept for reuse
//   queues    the ordered communication queue on which every collective of the engine runs (the
//             kernels run on the caller's thread, which is the compute queue of the CPU backend)
//
// The CPU backend (cpu_backend.h: OpenBLAS and mixz::model's kernels over a thread pool) is the
// first implementation and the oracle later ones are tested against. A CUDA backend implements the
// same interface — device buffers from its caching allocator, kernels on a compute stream, the
// communication queue driving NCCL or staging through pinned memory — without any change to
// mixz::zero. The interface therefore names no CUDA (or BLAS) type: only pointers, sizes and the
// model's parameter/cache views. Calls are coarse (one per layer kernel, one per buffer), so the
// virtual dispatch never sits in an inner loop.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <future>

#include "mixz/model/llama.h"

namespace mixz::backend {

// Work run one item at a time in submission order on its own thread (or stream). Every rank must
// issue its collectives in the same order; one ordered queue makes that order the program order.
class Queue {
public:
    virtual ~Queue() = default;
    // The future becomes ready when `work` has run; it rethrows what `work` threw.
    virtual std::shared_future<void> submit(std::function<void()> work) = 0;
};

class ComputeBackend {
public:
    virtual ~ComputeBackend() = default;

    // "cpu", later "cuda".
    virtual const char* name() const = 0;

    // --- memory: compute buffers of fp32 elements (thread-safe: the communication queue gives
    // gradient buffers back). take() never returns null (0 elements: a buffer of one).
    virtual float* takeBuffer(std::size_t elements) = 0;
    // Null: nothing. The buffer must come from takeBuffer and must not be used afterwards.
    virtual void giveBuffer(float* buffer) = 0;
    // Bytes of every buffer allocated (in use or kept for reuse), and the most in use at once.
    virtual std::size_t bufferBytesHeld() const = 0;
    virtual std::size_t bufferBytesPeak() const = 0;

    // --- queues
    virtual Queue& communicationQueue() = 0;

    // --- kernels (mixz/model/llama.h documents each one's contract)
    // Threads the kernels may use (≥ 1).
    virtual void setKernelThreads(int threads) = 0;
    virtual void embeddingForward(const model::LlamaDims& dims, const std::int32_t* ids, std::size_t tokens, const float* table,
                                  float* out) = 0;
    virtual void embeddingBackward(const model::LlamaDims& dims, const std::int32_t* ids, std::size_t tokens, const float* dOut,
                                   float* dTable) = 0;
    virtual void decoderLayerForward(const model::LlamaDims& dims, int batch, int seq, const model::DecoderLayerParams<float>& params,
                                     const float* x, float* y, model::DecoderLayerCache<float>* cache) = 0;
    virtual void decoderLayerForwardCached(const model::LlamaDims& dims, int seq, const model::DecoderLayerParams<float>& params,
                                           const float* x, float* y, model::KvCache<float>& kv) = 0;
    virtual void decoderLayerBackward(const model::LlamaDims& dims, int batch, int seq, const model::DecoderLayerParams<float>& params,
                                      const model::DecoderLayerCache<float>& cache, const float* dy, float* dx,
                                      const model::DecoderLayerGrads<float>& grads) = 0;
    virtual model::LossResult headForward(const model::LlamaDims& dims, int batch, int seq, const model::HeadParams<float>& params,
                                          const float* x, const std::int32_t* labels, std::int32_t ignoreIndex,
                                          model::HeadCache<float>* cache) = 0;
    virtual void headBackward(const model::LlamaDims& dims, int batch, int seq, const model::HeadParams<float>& params,
                              const model::HeadCache<float>& cache, float lossGrad, float* dx, const model::HeadGrads<float>& grads) = 0;
    virtual void headLogits(const model::LlamaDims& dims, std::size_t rows, const model::HeadParams<float>& params, const float* x,
                            float* logits) = 0;
};

} // namespace mixz::backend
