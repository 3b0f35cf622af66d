// NOT YET RUN ON A GPU: written and compiled (nvcc, sm_80/sm_90) without a device; the device
// checks have not passed on real hardware yet.
//
// The LLaMA kernels of mixz/model/llama.h on a CUDA device: the same contracts, signatures and
// validation as the CPU engine (src/model/llama.cc), each with a leading DeviceContext. The CUDA
// backend (src/cuda, CudaBackend) forwards its ComputeBackend kernel methods and make*Cache to
// these. Pointers are device memory except ids, labels and headLogits' logits (host memory, as
// compute_backend.h says). Every function runs its work on ctx.stream and synchronizes that stream
// before returning, so its results are complete when it returns.
//
// Memory. Caches (makeLayerCache, makeHeadCache, makeKvCache) hold device memory from
// ctx.allocator, growing only, freed by release() or their destructor. The gradients flowing
// inside a backward, the dropped LoRA inputs, attention scores of evaluation and generation, and
// the whole state of a forward without a cache live in a per-context workspace: one per
// DeviceContext (a process-wide map keyed by its address), grow-only, so steady state allocates
// nothing. Calls on one context are serialized by the workspace's mutex (they share one stream
// anyway). The context must outlive its caches; releaseWorkspace(ctx) frees the workspace and
// must be called before ctx.allocator is destroyed (the backend's destructor).
//
// Arithmetic. Element-wise math is mixz/model/elementwise.h's (the CPU's own functions); GEMMs go
// through cuBLAS with ctx.gemmCompute (bf16/fp16 tensor-core products with fp32 accumulation for
// 16-bit models); reductions are block trees in a fixed order. Results are deterministic (no
// atomics; the same inputs give the same bits run to run) and equal the CPU's to rounding, not bit
// for bit (GEMM and reduction orders differ). Exceptions: the embedding (both directions) and the
// norm weight gradients' row order are the CPU's exactly.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "cuda/device_context.h"
#include "mixz/backend/compute_backend.h"
#include "mixz/model/llama.h"

namespace mixz::cuda {

void embeddingForward(DeviceContext& ctx, const model::LlamaDims& dims, const std::int32_t* ids, std::size_t tokens,
                      const float* table, float* out);
void embeddingBackward(DeviceContext& ctx, const model::LlamaDims& dims, const std::int32_t* ids, std::size_t tokens,
                       const float* dOut, float* dTable);
void decoderLayerForward(DeviceContext& ctx, const model::LlamaDims& dims, int batch, int seq,
                         const model::DecoderLayerParams<float>& params, const float* x, float* y,
                         backend::ActivationCache* cache);
void decoderLayerForwardCached(DeviceContext& ctx, const model::LlamaDims& dims, int seq,
                               const model::DecoderLayerParams<float>& params, const float* x, float* y,
                               backend::KvCache& kv);
void decoderLayerBackward(DeviceContext& ctx, const model::LlamaDims& dims, int batch, int seq,
                          const model::DecoderLayerParams<float>& params, const backend::ActivationCache& cache,
                          const float* dy, float* dx, const model::DecoderLayerGrads<float>& grads);
model::LossResult headForward(DeviceContext& ctx, const model::LlamaDims& dims, int batch, int seq,
                              const model::HeadParams<float>& params, const float* x, const std::int32_t* labels,
                              std::int32_t ignoreIndex, backend::ActivationCache* cache);
void headBackward(DeviceContext& ctx, const model::LlamaDims& dims, int batch, int seq,
                  const model::HeadParams<float>& params, const backend::ActivationCache& cache, float lossGrad,
                  float* dx, const model::HeadGrads<float>& grads);
void headLogits(DeviceContext& ctx, const model::LlamaDims& dims, std::size_t rows,
                const model::HeadParams<float>& params, const float* x, float* logits);

std::unique_ptr<backend::ActivationCache> makeLayerCache(DeviceContext& ctx);
std::unique_ptr<backend::ActivationCache> makeHeadCache(DeviceContext& ctx);
std::unique_ptr<backend::KvCache> makeKvCache(DeviceContext& ctx, const model::LlamaDims& dims, int batch);

// Frees the context's workspace (scratch and the rotary tables); nothing may run on ctx then.
void releaseWorkspace(DeviceContext& ctx);

} // namespace mixz::cuda
