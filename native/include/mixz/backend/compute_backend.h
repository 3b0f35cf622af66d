// mixz::backend: the compute-backend seam (DESIGN.md §2 "Compute backends"). Everything the ZeRO
// logic (mixz::zero) needs from the hardware sits behind ComputeBackend:
//
//   kernels   the model's layer kernels, forward and backward, on full fp32 parameters
//   memory    compute buffers (gathered parameters, full gradients, activations), kept for reuse,
//             and the copies between them and host memory
//   caches    what a forward keeps for its backward, and generation's keys and values: opaque
//             objects the backend makes, so their memory lives where its kernels run
//   queues    the ordered communication queue on which every collective of the engine runs
//
// The CPU backend (cpu_backend.h: OpenBLAS and mixz::model's kernels over a thread pool) is the
// first implementation and the oracle later ones are tested against. The CUDA backend
// (cuda_backend.h) implements the same interface with device buffers from its caching allocator
// and kernels on a compute stream. The interface names no CUDA (or BLAS) type: only pointers,
// sizes and the model's views. Calls are coarse (one per layer kernel, one per buffer), so the
// virtual dispatch never sits in an inner loop.
//
// Where memory lives. A *buffer* is memory from takeBuffer: host memory on the CPU backend,
// device memory on the CUDA backend (hostAddressable() says which). Parameters, activations
// (x, y, dx, dy) and gradients passed to the kernels are buffers. Token ids, labels and the
// logits headLogits writes are host memory on every backend (they are small, and sampling runs
// on the host). mixz::zero never reads or writes a buffer with host code unless
// hostAddressable(); otherwise it goes through upload/download.
//
// The ZeRO state (parameter partitions in the model dtype or int8 blocks, hpZ secondaries,
// gradient partitions, fp32 masters and Adam moments) is *state memory* from takeBytes: device
// memory on the CUDA backend, so partitions, gradients and optimizer states live on the GPU and a
// one-rank step moves no parameter over PCIe. The partition arithmetic (convert, dequantize8,
// accumulate, sumOfSquares, adamUpdate) runs where that memory is, with exactly the CPU engine's
// semantics (mixz/tensor, mixz/quant, mixz/optim). What feeds a host collective is downloaded,
// and what a host collective returns is uploaded (the host transports are staged).
//
// Ordering. Every call returns when its results are complete: a kernel's outputs may be read (by
// download, or by a collective on the communication queue) as soon as it returns. This is the
// CPU's natural contract; the CUDA backend synchronizes its compute stream at the end of each
// kernel call (one synchronization per layer), which keeps the ZeRO logic free of streams and
// events while the gathers and reductions of the communication queue still overlap compute.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <string>
#include <utility>

#include "mixz/model/llama.h"
#include "mixz/optim/adamw.h"
#include "mixz/tensor/dtype.h"

namespace mixz::backend {

// Work run one item at a time in submission order on its own thread (or stream). Every rank must
// issue its collectives in the same order; one ordered queue makes that order the program order.
class Queue {
public:
    virtual ~Queue() = default;
    // The future becomes ready when `work` has run; it rethrows what `work` threw.
    virtual std::shared_future<void> submit(std::function<void()> work) = 0;
};

// What a training forward keeps for its backward (one per decoder layer, one for the head).
// Reused across steps: memory grows to the largest shape seen and is kept until release().
class ActivationCache {
public:
    virtual ~ActivationCache() = default;
    virtual std::size_t bytes() const = 0; // held now (activations in memoryReport())
    virtual void release() = 0;            // frees what is held
};

// Keys and values of earlier positions of one decoder layer, for generation: room for `batch`
// sequences of up to dims.maxSeq positions.
class KvCache {
public:
    virtual ~KvCache() = default;
    virtual int batch() const = 0;
    virtual int length() const = 0; // positions filled so far
    virtual void reset() = 0;
    virtual std::size_t bytes() const = 0;
};

// kCpuStaged: the CPU backend behind the device contract (hostAddressable() false), so tests on
// machines without a GPU run every staging path of mixz::zero that the CUDA backend takes.
enum class Device { kCpu, kCuda, kCpuStaged };

// What a backend is made for; the engine's descriptor carries it (TypeScript resolved "auto").
struct BackendOptions {
    Device device = Device::kCpu;
    int deviceOrdinal = 0;  // CUDA: the index among the visible devices (the rank's LOCAL_RANK)
    int kernelThreads = 1;  // CPU kernel threads (< 1 counts as 1); the CUDA backend's host-side work
    tensor::DType dtype = tensor::DType::kFloat32; // the model dtype (CUDA: picks the GEMM precision)
};

class ComputeBackend {
public:
    virtual ~ComputeBackend() = default;

    // "cpu" or "cuda".
    virtual const char* name() const = 0;
    // One line naming the hardware, e.g. "cpu (2 kernel threads)" or "cuda:0 NVIDIA H100 80GB HBM3 (sm_90)".
    virtual std::string describe() const = 0;

    // --- memory: compute buffers of fp32 elements (thread-safe: the communication queue gives
    // gradient buffers back). take() never returns null (0 elements: a buffer of one).
    virtual float* takeBuffer(std::size_t elements) = 0;
    // Null: nothing. The buffer must come from takeBuffer and must not be used afterwards.
    virtual void giveBuffer(float* buffer) = 0;
    // Bytes of every buffer allocated (in use or kept for reuse), and the most in use at once.
    virtual std::size_t bufferBytesHeld() const = 0;
    virtual std::size_t bufferBytesPeak() const = 0;
    // True: buffers are host memory that host code may read and write directly.
    virtual bool hostAddressable() const = 0;
    // Copies between a buffer and host memory, and within buffers (n elements; offsets are the
    // caller's pointer arithmetic). Thread-safe; each returns when the copy is complete. The
    // communication queue calls upload/download for gathers and reductions.
    virtual void upload(float* buffer, const float* host, std::size_t n) = 0;
    virtual void download(float* host, const float* buffer, std::size_t n) = 0;
    virtual void copy(float* to, const float* from, std::size_t n) = 0;
    virtual void zero(float* buffer, std::size_t n) = 0;

    // --- state memory: bytes for the ZeRO state, zero-filled; thread-safe like buffers.
    // takeBytes never returns null (0 bytes: a block of one).
    virtual std::uint8_t* takeBytes(std::size_t bytes) = 0;
    virtual void giveBytes(std::uint8_t* block) = 0;
    virtual std::size_t stateBytesHeld() const = 0;
    // Copies between state memory (or buffers) and host memory, and zero-filling; each returns
    // when complete. Pointers may point inside a block or buffer.
    virtual void uploadBytes(void* to, const void* host, std::size_t bytes) = 0;
    virtual void downloadBytes(void* host, const void* from, std::size_t bytes) = 0;
    virtual void zeroBytes(void* to, std::size_t bytes) = 0;

    // --- partition arithmetic on state memory and buffers (never host memory on a device backend);
    // thread-safe: the communication queue and the engine's thread both call it.
    // `n` values from inType to outType (fp32, fp16, bf16; a copy when equal): tensor::convert.
    virtual void convert(const void* in, tensor::DType inType, void* out, tensor::DType outType, std::size_t n) = 0;
    // `n` fp32 values from int8 codes and float32 scales in blocks of `blockSize`:
    // quant::dequantize (bits 8, fp32 output).
    virtual void dequantize8(const std::uint8_t* codes, const float* scales, std::size_t n, std::size_t blockSize, float* out) = 0;
    // grad[j] += values[j] for n elements of gradType: fp32 added in place; fp16/bf16 converted
    // to fp32, added, and rounded once (DeepSpeed's fp32 gradient accumulation).
    virtual void accumulate(void* grad, tensor::DType gradType, const float* values, std::size_t n) = 0;
    // optim::sumOfSquares: squares summed in double, non-finite when any value is.
    virtual double sumOfSquares(const float* values, std::size_t n) = 0;
    // optim::adamUpdate: param, expAvg and expAvgSq updated in place from grad.
    virtual void adamUpdate(const optim::AdamStepCoefficients& c, const float* grad, float* param, float* expAvg, float* expAvgSq,
                            std::size_t n) = 0;

    // --- caches
    virtual std::unique_ptr<ActivationCache> makeLayerCache() = 0;
    virtual std::unique_ptr<ActivationCache> makeHeadCache() = 0;
    virtual std::unique_ptr<KvCache> makeKvCache(const model::LlamaDims& dims, int batch) = 0;

    // --- queues
    virtual Queue& communicationQueue() = 0;

    // --- kernels (mixz/model/llama.h documents each one's contract). Caches passed in must come
    // from this backend's make*Cache.
    // Threads the kernels may use (≥ 1).
    virtual void setKernelThreads(int threads) = 0;
    virtual void embeddingForward(const model::LlamaDims& dims, const std::int32_t* ids, std::size_t tokens, const float* table,
                                  float* out) = 0;
    virtual void embeddingBackward(const model::LlamaDims& dims, const std::int32_t* ids, std::size_t tokens, const float* dOut,
                                   float* dTable) = 0;
    // positions: packed rows (host memory, [batch, seq]; null: one sequence per row), as
    // model::decoderLayerForward takes them.
    virtual void decoderLayerForward(const model::LlamaDims& dims, int batch, int seq, const model::DecoderLayerParams<float>& params,
                                     const float* x, float* y, ActivationCache* cache, const std::int32_t* positions) = 0;
    virtual void decoderLayerForwardCached(const model::LlamaDims& dims, int seq, const model::DecoderLayerParams<float>& params,
                                           const float* x, float* y, KvCache& kv) = 0;
    virtual void decoderLayerBackward(const model::LlamaDims& dims, int batch, int seq, const model::DecoderLayerParams<float>& params,
                                      const ActivationCache& cache, const float* dy, float* dx,
                                      const model::DecoderLayerGrads<float>& grads) = 0;
    virtual model::LossResult headForward(const model::LlamaDims& dims, int batch, int seq, const model::HeadParams<float>& params,
                                          const float* x, const std::int32_t* labels, std::int32_t ignoreIndex,
                                          ActivationCache* cache) = 0;
    virtual void headBackward(const model::LlamaDims& dims, int batch, int seq, const model::HeadParams<float>& params,
                              const ActivationCache& cache, float lossGrad, float* dx, const model::HeadGrads<float>& grads) = 0;
    // logits: host memory [rows, vocab].
    virtual void headLogits(const model::LlamaDims& dims, std::size_t rows, const model::HeadParams<float>& params, const float* x,
                            float* logits) = 0;
};

// A buffer owned by one object: taken on resize (growing only; contents are not kept across a
// resize), given back when destroyed or released.
class Buffer {
public:
    Buffer() = default;
    explicit Buffer(ComputeBackend& backend) : backend_(&backend) {}
    Buffer(const Buffer&) = delete;
    Buffer& operator=(const Buffer&) = delete;
    Buffer(Buffer&& other) noexcept { *this = std::move(other); }
    Buffer& operator=(Buffer&& other) noexcept {
        if (this != &other) {
            release();
            backend_ = other.backend_;
            data_ = other.data_;
            capacity_ = other.capacity_;
            other.data_ = nullptr;
            other.capacity_ = 0;
        }
        return *this;
    }
    ~Buffer() { release(); }

    // At least `elements` (≥ 1) elements; a larger request replaces the buffer.
    float* reserve(std::size_t elements) {
        if (elements > capacity_ || data_ == nullptr) {
            release();
            data_ = backend_->takeBuffer(elements);
            capacity_ = elements > 0 ? elements : 1;
        }
        return data_;
    }
    void release() {
        if (data_ != nullptr) backend_->giveBuffer(data_);
        data_ = nullptr;
        capacity_ = 0;
    }
    float* data() const { return data_; }
    std::size_t capacity() const { return capacity_; }
    std::size_t bytes() const { return capacity_ * sizeof(float); }

private:
    ComputeBackend* backend_ = nullptr;
    float* data_ = nullptr;
    std::size_t capacity_ = 0;
};

// A block of state memory owned by one object (zero-filled when assigned; the contents go with
// a move; given back when destroyed or reassigned). Default-constructed: empty, no backend.
class Block {
public:
    Block() = default;
    Block(const Block&) = delete;
    Block& operator=(const Block&) = delete;
    Block(Block&& other) noexcept { *this = std::move(other); }
    Block& operator=(Block&& other) noexcept {
        if (this != &other) {
            reset();
            backend_ = other.backend_;
            data_ = other.data_;
            size_ = other.size_;
            other.data_ = nullptr;
            other.size_ = 0;
        }
        return *this;
    }
    ~Block() { reset(); }

    // `bytes` zero bytes from `backend` (replacing what was held).
    void assign(ComputeBackend& backend, std::size_t bytes) {
        reset();
        backend_ = &backend;
        data_ = backend.takeBytes(bytes);
        size_ = bytes;
    }
    void reset() {
        if (data_ != nullptr) backend_->giveBytes(data_);
        data_ = nullptr;
        size_ = 0;
    }
    void swap(Block& other) noexcept {
        std::swap(backend_, other.backend_);
        std::swap(data_, other.data_);
        std::swap(size_, other.size_);
    }
    std::uint8_t* data() const { return data_; }
    float* floats() const { return reinterpret_cast<float*>(data_); }
    std::size_t size() const { return size_; } // bytes
    bool empty() const { return size_ == 0; }

private:
    ComputeBackend* backend_ = nullptr;
    std::uint8_t* data_ = nullptr;
    std::size_t size_ = 0;
};

// The backend `options` ask for: the CPU backend, or the CUDA backend when this build has one
// (InvalidArgument naming how to get one when it does not; IoError when no usable device or
// library is found, naming what was searched).
std::unique_ptr<ComputeBackend> makeBackend(const BackendOptions& options);

// Whether this build compiled the CUDA backend (nvcc was found at build time).
bool cudaCompiled();

} // namespace mixz::backend
