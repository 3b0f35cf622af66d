#include "mixz/backend/cpu_backend.h"
#include "mixz/backend/ordered_queue.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "mixz/common/error.h"
#include "mixz/quant/block_quant.h"

namespace mixz::backend {
namespace {

// Full fp32 buffers for gathered parameters, their gradients and activations, kept for reuse by
// size: freeing and re-faulting tens of megabytes per layer per step costs more than the copies
// (measured in issue 4's all-gather). What is kept idle is bounded by the most ever in use at once:
// batches of many shapes (forward takes any) would otherwise leave a buffer of every size behind.
class BufferPool {
public:
    float* take(std::size_t elements) {
        elements = std::max<std::size_t>(elements, 1);
        std::lock_guard<std::mutex> lock(mutex_);
        inUse_ += elements;
        peakInUse_ = std::max(peakInUse_, inUse_);
        auto& free = free_[elements];
        if (!free.empty()) {
            float* buffer = free.back();
            free.pop_back();
            return buffer;
        }
        auto owned = std::make_unique<float[]>(elements);
        float* buffer = owned.get();
        owned_.emplace(buffer, std::make_pair(std::move(owned), elements));
        held_ += elements;
        return buffer;
    }

    void give(float* buffer) {
        if (buffer == nullptr) return;
        std::lock_guard<std::mutex> lock(mutex_);
        auto it = owned_.find(buffer);
        MIXZ_ENFORCE(it != owned_.end(), "a buffer not taken from this pool was given back");
        const std::size_t elements = it->second.second;
        inUse_ -= elements;
        if (held_ - inUse_ > peakInUse_) {
            // More idle than was ever in use at once: this one goes back to the system.
            held_ -= elements;
            owned_.erase(it);
            return;
        }
        free_[elements].push_back(buffer);
    }

    std::size_t bytesHeld() const {
        std::lock_guard<std::mutex> lock(mutex_);
        return held_ * sizeof(float);
    }
    std::size_t peakBytes() const {
        std::lock_guard<std::mutex> lock(mutex_);
        return peakInUse_ * sizeof(float);
    }

private:
    mutable std::mutex mutex_;
    std::map<float*, std::pair<std::unique_ptr<float[]>, std::size_t>> owned_;
    std::map<std::size_t, std::vector<float*>> free_;
    std::size_t held_ = 0;
    std::size_t inUse_ = 0;
    std::size_t peakInUse_ = 0;
};

// The model's caches behind the backend's opaque cache types.
class CpuLayerCache final : public ActivationCache {
public:
    std::size_t bytes() const override { return cache.bytes(); }
    void release() override { cache.release(); }
    model::DecoderLayerCache<float> cache;
};

class CpuHeadCache final : public ActivationCache {
public:
    std::size_t bytes() const override { return cache.bytes(); }
    void release() override { cache.release(); }
    model::HeadCache<float> cache;
};

class CpuKvCache final : public KvCache {
public:
    CpuKvCache(const model::LlamaDims& dims, int batch) : kv(dims, batch) {}
    int batch() const override { return kv.batch(); }
    int length() const override { return kv.length(); }
    void reset() override { kv.reset(); }
    std::size_t bytes() const override { return kv.bytes(); }
    model::KvCache<float> kv;
};

// A cache handed to this backend must be one it made: anything else is a bug in mixz::zero.
template <typename Concrete, typename Base>
Concrete& ours(Base& cache) {
    auto* concrete = dynamic_cast<Concrete*>(&cache);
    MIXZ_ENFORCE(concrete != nullptr, "a cache from another backend was passed to the CPU backend");
    return *concrete;
}

// State memory: zero-filled host blocks, counted.
class StateBlocks {
public:
    std::uint8_t* take(std::size_t bytes) {
        bytes = std::max<std::size_t>(bytes, 1);
        auto block = std::make_unique<std::uint8_t[]>(bytes); // value-initialized: zeros
        std::uint8_t* data = block.get();
        std::lock_guard<std::mutex> lock(mutex_);
        blocks_.emplace(data, std::make_pair(std::move(block), bytes));
        held_ += bytes;
        return data;
    }
    void give(std::uint8_t* data) {
        if (data == nullptr) return;
        std::lock_guard<std::mutex> lock(mutex_);
        auto it = blocks_.find(data);
        MIXZ_ENFORCE(it != blocks_.end(), "a block not taken from this backend was given back");
        held_ -= it->second.second;
        blocks_.erase(it);
    }
    std::size_t held() const {
        std::lock_guard<std::mutex> lock(mutex_);
        return held_;
    }

private:
    mutable std::mutex mutex_;
    std::map<std::uint8_t*, std::pair<std::unique_ptr<std::uint8_t[]>, std::size_t>> blocks_;
    std::size_t held_ = 0;
};

class CpuBackend final : public ComputeBackend {
public:
    // `staged`: claim device memory (hostAddressable() false) while computing on the host, so
    // mixz::zero takes every path a device backend makes it take (Device::kCpuStaged).
    CpuBackend(int kernelThreads, bool staged) : staged_(staged) { setKernelThreads(kernelThreads); }

    const char* name() const override { return staged_ ? "cpu-staged" : "cpu"; }
    std::string describe() const override {
        const int threads = model::kernelThreads();
        return std::string(name()) + " (" + std::to_string(threads) + (threads == 1 ? " kernel thread)" : " kernel threads)");
    }

    float* takeBuffer(std::size_t elements) override { return pool_.take(elements); }
    void giveBuffer(float* buffer) override { pool_.give(buffer); }
    std::size_t bufferBytesHeld() const override { return pool_.bytesHeld(); }
    std::size_t bufferBytesPeak() const override { return pool_.peakBytes(); }
    bool hostAddressable() const override { return !staged_; }
    void upload(float* buffer, const float* host, std::size_t n) override { copy(buffer, host, n); }
    void download(float* host, const float* buffer, std::size_t n) override { copy(host, buffer, n); }
    void copy(float* to, const float* from, std::size_t n) override {
        if (n > 0 && to != from) std::memmove(to, from, n * sizeof(float));
    }
    void zero(float* buffer, std::size_t n) override {
        if (n > 0) std::memset(buffer, 0, n * sizeof(float));
    }

    std::uint8_t* takeBytes(std::size_t bytes) override { return state_.take(bytes); }
    void giveBytes(std::uint8_t* block) override { state_.give(block); }
    std::size_t stateBytesHeld() const override { return state_.held(); }
    void uploadBytes(void* to, const void* host, std::size_t bytes) override {
        if (bytes > 0 && to != host) std::memmove(to, host, bytes);
    }
    void downloadBytes(void* host, const void* from, std::size_t bytes) override { uploadBytes(host, from, bytes); }
    void zeroBytes(void* to, std::size_t bytes) override {
        if (bytes > 0) std::memset(to, 0, bytes);
    }

    void convert(const void* in, tensor::DType inType, void* out, tensor::DType outType, std::size_t n) override {
        tensor::convertElements(in, inType, out, outType, n);
    }
    void dequantize8(const std::uint8_t* codes, const float* scales, std::size_t n, std::size_t blockSize, float* out) override {
        quant::dequantizeInt8(codes, scales, n, blockSize, out);
    }
    void accumulate(void* grad, tensor::DType gradType, const float* values, std::size_t n) override {
        if (gradType == tensor::DType::kFloat32) {
            float* g = static_cast<float*>(grad);
            for (std::size_t j = 0; j < n; ++j) g[j] += values[j];
            return;
        }
        // The caller's thread's scratch (the communication queue's, reused: no allocation per chunk).
        thread_local std::vector<float> sum;
        sum.resize(n);
        tensor::convertElements(grad, gradType, sum.data(), tensor::DType::kFloat32, n);
        for (std::size_t j = 0; j < n; ++j) sum[j] += values[j];
        tensor::convertElements(sum.data(), tensor::DType::kFloat32, grad, gradType, n);
    }
    double sumOfSquares(const float* values, std::size_t n) override { return optim::sumOfSquares(values, n); }
    void adamUpdate(const optim::AdamStepCoefficients& c, const float* grad, float* param, float* expAvg, float* expAvgSq,
                    std::size_t n) override {
        optim::adamUpdate(c, grad, param, expAvg, expAvgSq, n);
    }

    std::unique_ptr<ActivationCache> makeLayerCache() override { return std::make_unique<CpuLayerCache>(); }
    std::unique_ptr<ActivationCache> makeHeadCache() override { return std::make_unique<CpuHeadCache>(); }
    std::unique_ptr<KvCache> makeKvCache(const model::LlamaDims& dims, int batch) override {
        return std::make_unique<CpuKvCache>(dims, batch);
    }

    Queue& communicationQueue() override { return comm_; }

    void setKernelThreads(int threads) override { model::setKernelThreads(std::max(1, threads)); }
    void embeddingForward(const model::LlamaDims& dims, const std::int32_t* ids, std::size_t tokens, const float* table,
                          float* out) override {
        model::embeddingForward<float>(dims, ids, tokens, table, out);
    }
    void embeddingBackward(const model::LlamaDims& dims, const std::int32_t* ids, std::size_t tokens, const float* dOut,
                           float* dTable) override {
        model::embeddingBackward<float>(dims, ids, tokens, dOut, dTable);
    }
    void decoderLayerForward(const model::LlamaDims& dims, int batch, int seq, const model::DecoderLayerParams<float>& params,
                             const float* x, float* y, ActivationCache* cache, const std::int32_t* positions) override {
        model::decoderLayerForward<float>(dims, batch, seq, params, x, y, cache ? &ours<CpuLayerCache>(*cache).cache : nullptr, positions);
    }
    void decoderLayerForwardCached(const model::LlamaDims& dims, int seq, const model::DecoderLayerParams<float>& params,
                                   const float* x, float* y, KvCache& kv) override {
        model::decoderLayerForwardCached<float>(dims, seq, params, x, y, ours<CpuKvCache>(kv).kv);
    }
    void decoderLayerBackward(const model::LlamaDims& dims, int batch, int seq, const model::DecoderLayerParams<float>& params,
                              const ActivationCache& cache, const float* dy, float* dx,
                              const model::DecoderLayerGrads<float>& grads) override {
        model::decoderLayerBackward<float>(dims, batch, seq, params, ours<const CpuLayerCache>(cache).cache, dy, dx, grads);
    }
    model::LossResult headForward(const model::LlamaDims& dims, int batch, int seq, const model::HeadParams<float>& params,
                                  const float* x, const std::int32_t* labels, std::int32_t ignoreIndex,
                                  ActivationCache* cache) override {
        return model::headForward<float>(dims, batch, seq, params, x, labels, ignoreIndex, cache ? &ours<CpuHeadCache>(*cache).cache : nullptr);
    }
    void headBackward(const model::LlamaDims& dims, int batch, int seq, const model::HeadParams<float>& params,
                      const ActivationCache& cache, float lossGrad, float* dx, const model::HeadGrads<float>& grads) override {
        model::headBackward<float>(dims, batch, seq, params, ours<const CpuHeadCache>(cache).cache, lossGrad, dx, grads);
    }
    void headLogits(const model::LlamaDims& dims, std::size_t rows, const model::HeadParams<float>& params, const float* x,
                    float* logits) override {
        model::headLogits<float>(dims, rows, params, x, logits);
    }

private:
    const bool staged_;
    // Declared before the queue: queued work gives buffers back, so the thread is joined first.
    BufferPool pool_;
    StateBlocks state_;
    OrderedQueue comm_; // the communication thread (ordered_queue.h)
};

} // namespace

std::unique_ptr<ComputeBackend> makeCpuBackend(int kernelThreads, bool staged) {
    return std::make_unique<CpuBackend>(kernelThreads, staged);
}

} // namespace mixz::backend
