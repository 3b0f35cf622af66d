// The CUDA backend (mixz/backend/cuda_backend.h): the device, its streams, the allocator, cuBLAS
// and the copies between host and device memory. The kernels live beside it: the layers in
// cuda/llama/ (llama_device.h, given the backend's DeviceContext), the partition arithmetic in
// cuda/quant, cuda/optim and cuda/state; each method here makes the device current and forwards.
//
// Streams. One compute stream (layer kernels and GEMMs of the caller's thread) and one transfer
// stream (upload/download/copy/zero and the partition arithmetic, from any thread, serialized by a
// mutex around it and the pinned staging buffers), both non-blocking so that neither waits for the legacy default stream. Every call
// synchronizes the stream it used before returning (compute_backend.h, "Ordering").
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <unordered_map>
#include <string>

#include "cuda/device_context.h"
#include "mixz/backend/cuda_backend.h"
#include "mixz/backend/ordered_queue.h"
#include "mixz/common/error.h"
#include "mixz/cudalib/cublas_api.h"
#include "mixz/cudalib/driver_api.h"

#include "cuda/llama/llama_device.h"
#include "cuda/optim/optim_kernels.h"
#include "cuda/quant/quant_kernels.h"
#include "cuda/state/state_kernels.h"

namespace mixz::backend {
namespace {

using cuda::DeviceAllocator;
using cuda::DeviceContext;

// cuBLAS's workspace (cublasSetWorkspace): 32 MiB, what NVIDIA recommends for Hopper, taken from
// our allocator so it counts against mixz's memory and graph capture never allocates.
constexpr std::size_t kCublasWorkspaceBytes = std::size_t{32} << 20;
// Each of the two pinned staging buffers: large enough that a chunk's DMA amortizes its launch,
// small enough to hold permanently. Pageable host memory goes through them chunk by chunk, the
// host's memcpy of one chunk overlapping the DMA of the other.
constexpr std::size_t kStagingBytes = std::size_t{8} << 20;

class CurrentDevice {
public:
    explicit CurrentDevice(int device) {
        MIXZ_CUDA_CHECK(cudaGetDevice(&previous_));
        changed_ = previous_ != device;
        if (changed_) MIXZ_CUDA_CHECK(cudaSetDevice(device));
    }
    ~CurrentDevice() {
        if (changed_) (void)cudaSetDevice(previous_);
    }
    CurrentDevice(const CurrentDevice&) = delete;
    CurrentDevice& operator=(const CurrentDevice&) = delete;

private:
    int previous_ = 0;
    bool changed_ = false;
};

std::string visibleDevices() {
    const char* value = std::getenv("CUDA_VISIBLE_DEVICES");
    return value == nullptr ? std::string("(unset)") : std::string("\"") + value + "\"";
}

// Whether host memory is page-locked (cudaHostAlloc'd or registered): such memory is copied
// directly, anything else is staged.
bool pinned(const void* host) {
    cudaPointerAttributes attributes{};
    if (cudaPointerGetAttributes(&attributes, host) != cudaSuccess) {
        (void)cudaGetLastError();
        return false;
    }
    return attributes.type == cudaMemoryTypeHost;
}

class CudaBackend final : public ComputeBackend {
public:
    explicit CudaBackend(const CudaBackendOptions& options) : device_(options.deviceOrdinal), allocator_(options.deviceOrdinal) {
        // cuBLAS first: the likeliest failure on a new machine, and nothing is allocated yet.
        ctx_.api = &cudalib::cublasApi(); // IoError naming the places searched when not found
        MIXZ_CUDA_CHECK(cudaSetDevice(device_));
        cudaDeviceProp properties{};
        MIXZ_CUDA_CHECK(cudaGetDeviceProperties(&properties, device_));
        name_ = properties.name;
        major_ = properties.major;
        minor_ = properties.minor;
        totalBytes_ = properties.totalGlobalMem;

        MIXZ_CUDA_CHECK(cudaStreamCreateWithFlags(&compute_, cudaStreamNonBlocking));
        MIXZ_CUDA_CHECK(cudaStreamCreateWithFlags(&transfer_, cudaStreamNonBlocking));
        for (int slot = 0; slot < 2; ++slot) {
            MIXZ_CUDA_CHECK(cudaHostAlloc(&staging_[slot], kStagingBytes, cudaHostAllocPortable));
            MIXZ_CUDA_CHECK(cudaEventCreateWithFlags(&staged_[slot], cudaEventDisableTiming));
        }

        ctx_.device = device_;
        ctx_.stream = compute_;
        ctx_.allocator = &allocator_;
        ctx_.multiprocessors = properties.multiProcessorCount;
        ctx_.gemmCompute = options.dtype == tensor::DType::kBFloat16  ? cudalib::cublas::kCompute32FFast16BF
                           : options.dtype == tensor::DType::kFloat16 ? cudalib::cublas::kCompute32FFast16F
                                                                      : cudalib::cublas::kCompute32F;
        MIXZ_CUBLAS_CHECK(ctx_, ctx_.api->create(&ctx_.blas));
        MIXZ_CUBLAS_CHECK(ctx_, ctx_.api->setStream(ctx_.blas, compute_));
        workspace_ = allocator_.allocate(kCublasWorkspaceBytes);
        sumScratch_ = static_cast<double*>(allocator_.allocate((cuda::kSumOfSquaresPartials + 1) * sizeof(double)));
        MIXZ_CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&sumHost_), sizeof(double), cudaHostAllocPortable));
        MIXZ_CUBLAS_CHECK(ctx_, ctx_.api->setWorkspace(ctx_.blas, workspace_, kCublasWorkspaceBytes));
        MIXZ_CUBLAS_CHECK(ctx_, ctx_.api->setMathMode(ctx_.blas, cudalib::cublas::kDefaultMath));
    }

    ~CudaBackend() override {
        // The communication queue is a member declared last, so it is joined before this runs.
        // Teardown errors are ignored: nothing useful can be done with them in a destructor.
        (void)cudaSetDevice(device_);
        (void)cudaStreamSynchronize(compute_);
        (void)cudaStreamSynchronize(transfer_);
        // The kernels' per-context scratch goes back to the allocator before it is destroyed.
        try {
            cuda::releaseWorkspace(ctx_);
        } catch (...) {
        }
        if (ctx_.blas != nullptr) (void)ctx_.api->destroy(ctx_.blas);
        allocator_.free(workspace_);
        allocator_.free(sumScratch_);
        if (sumHost_ != nullptr) (void)cudaFreeHost(sumHost_);
        for (int slot = 0; slot < 2; ++slot) {
            if (staged_[slot] != nullptr) (void)cudaEventDestroy(staged_[slot]);
            if (staging_[slot] != nullptr) (void)cudaFreeHost(staging_[slot]);
        }
        if (transfer_ != nullptr) (void)cudaStreamDestroy(transfer_);
        if (compute_ != nullptr) (void)cudaStreamDestroy(compute_);
    }

    const char* name() const override { return "cuda"; }
    std::string describe() const override {
        const double gib = static_cast<double>(totalBytes_) / static_cast<double>(std::size_t{1} << 30);
        return "cuda:" + std::to_string(device_) + " " + name_ + " (sm_" + std::to_string(major_) + std::to_string(minor_) + ", " +
               std::to_string(static_cast<long long>(gib + 0.5)) + " GiB)";
    }

    // --- memory. Buffers go straight to the allocator (shared with caches and scratch); the
    // backend counts what is in use as buffers: held = in use, since a given-back block sits in
    // the allocator's shared cache, not in a buffer pool.
    float* takeBuffer(std::size_t elements) override {
        const std::size_t bytes = std::max<std::size_t>(elements, 1) * sizeof(float);
        auto* buffer = static_cast<float*>(allocator_.allocate(bytes));
        std::lock_guard<std::mutex> lock(bufferMutex_);
        bufferSizes_[buffer] = bytes;
        bufferBytes_ += bytes;
        bufferPeak_ = std::max(bufferPeak_, bufferBytes_);
        return buffer;
    }
    void giveBuffer(float* buffer) override {
        if (buffer == nullptr) return;
        {
            std::lock_guard<std::mutex> lock(bufferMutex_);
            auto it = bufferSizes_.find(buffer);
            MIXZ_ENFORCE(it != bufferSizes_.end(), "cuda:", device_, ": giveBuffer of a pointer that is not a taken buffer");
            bufferBytes_ -= it->second;
            bufferSizes_.erase(it);
        }
        allocator_.free(buffer);
    }
    std::size_t bufferBytesHeld() const override {
        std::lock_guard<std::mutex> lock(bufferMutex_);
        return bufferBytes_;
    }
    std::size_t bufferBytesPeak() const override {
        std::lock_guard<std::mutex> lock(bufferMutex_);
        return bufferPeak_;
    }
    bool hostAddressable() const override { return false; }

    void upload(float* buffer, const float* host, std::size_t n) override { uploadBytes(buffer, host, n * sizeof(float)); }
    void download(float* host, const float* buffer, std::size_t n) override { downloadBytes(host, buffer, n * sizeof(float)); }
    void copy(float* to, const float* from, std::size_t n) override {
        if (n == 0 || to == from) return;
        std::lock_guard<std::mutex> lock(transferMutex_);
        CurrentDevice current(device_);
        MIXZ_CUDA_CHECK(cudaMemcpyAsync(to, from, n * sizeof(float), cudaMemcpyDeviceToDevice, transfer_));
        MIXZ_CUDA_CHECK(cudaStreamSynchronize(transfer_));
    }
    void zero(float* buffer, std::size_t n) override { zeroBytes(buffer, n * sizeof(float)); }

    // --- state memory: blocks from the same allocator, zero-filled as the contract says.
    std::uint8_t* takeBytes(std::size_t bytes) override {
        const std::size_t size = std::max<std::size_t>(bytes, 1);
        auto* block = static_cast<std::uint8_t*>(allocator_.allocate(size));
        try {
            zeroBytes(block, size);
        } catch (...) {
            allocator_.free(block);
            throw;
        }
        std::lock_guard<std::mutex> lock(bufferMutex_);
        stateSizes_[block] = size;
        stateBytes_ += size;
        return block;
    }
    void giveBytes(std::uint8_t* block) override {
        if (block == nullptr) return;
        {
            std::lock_guard<std::mutex> lock(bufferMutex_);
            auto it = stateSizes_.find(block);
            MIXZ_ENFORCE(it != stateSizes_.end(), "cuda:", device_, ": giveBytes of a pointer that is not a taken block");
            stateBytes_ -= it->second;
            stateSizes_.erase(it);
        }
        allocator_.free(block);
    }
    std::size_t stateBytesHeld() const override {
        std::lock_guard<std::mutex> lock(bufferMutex_);
        return stateBytes_;
    }

    void uploadBytes(void* to, const void* host, std::size_t bytes) override {
        if (bytes == 0) return;
        std::lock_guard<std::mutex> lock(transferMutex_);
        CurrentDevice current(device_);
        if (pinned(host)) {
            MIXZ_CUDA_CHECK(cudaMemcpyAsync(to, host, bytes, cudaMemcpyHostToDevice, transfer_));
        } else {
            auto* device = static_cast<char*>(to);
            const auto* from = static_cast<const char*>(host);
            bool inFlight[2] = {false, false};
            for (std::size_t offset = 0, chunk = 0; offset < bytes; offset += kStagingBytes, ++chunk) {
                const int slot = static_cast<int>(chunk % 2);
                const std::size_t size = std::min(kStagingBytes, bytes - offset);
                // The slot's previous DMA must be done before the host overwrites it.
                if (inFlight[slot]) MIXZ_CUDA_CHECK(cudaEventSynchronize(staged_[slot]));
                std::memcpy(staging_[slot], from + offset, size);
                MIXZ_CUDA_CHECK(cudaMemcpyAsync(device + offset, staging_[slot], size, cudaMemcpyHostToDevice, transfer_));
                MIXZ_CUDA_CHECK(cudaEventRecord(staged_[slot], transfer_));
                inFlight[slot] = true;
            }
        }
        MIXZ_CUDA_CHECK(cudaStreamSynchronize(transfer_));
    }

    // Kernel calls synchronize the compute stream before returning, so memory's contents are
    // final when a download is called: a copy on the transfer stream sees them.
    void downloadBytes(void* host, const void* from, std::size_t bytes) override {
        if (bytes == 0) return;
        std::lock_guard<std::mutex> lock(transferMutex_);
        CurrentDevice current(device_);
        if (pinned(host)) {
            MIXZ_CUDA_CHECK(cudaMemcpyAsync(host, from, bytes, cudaMemcpyDeviceToHost, transfer_));
            MIXZ_CUDA_CHECK(cudaStreamSynchronize(transfer_));
            return;
        }
        auto* to = static_cast<char*>(host);
        const auto* device = static_cast<const char*>(from);
        const std::size_t chunks = (bytes + kStagingBytes - 1) / kStagingBytes;
        auto issue = [&](std::size_t chunk) {
            const int slot = static_cast<int>(chunk % 2);
            const std::size_t offset = chunk * kStagingBytes;
            MIXZ_CUDA_CHECK(cudaMemcpyAsync(staging_[slot], device + offset, std::min(kStagingBytes, bytes - offset),
                                            cudaMemcpyDeviceToHost, transfer_));
            MIXZ_CUDA_CHECK(cudaEventRecord(staged_[slot], transfer_));
        };
        issue(0);
        for (std::size_t chunk = 0; chunk < chunks; ++chunk) {
            // The next chunk's DMA runs while the host copies this one out.
            if (chunk + 1 < chunks) issue(chunk + 1);
            const int slot = static_cast<int>(chunk % 2);
            MIXZ_CUDA_CHECK(cudaEventSynchronize(staged_[slot]));
            const std::size_t offset = chunk * kStagingBytes;
            std::memcpy(to + offset, staging_[slot], std::min(kStagingBytes, bytes - offset));
        }
        MIXZ_CUDA_CHECK(cudaStreamSynchronize(transfer_));
    }

    void zeroBytes(void* to, std::size_t bytes) override {
        if (bytes == 0) return;
        std::lock_guard<std::mutex> lock(transferMutex_);
        CurrentDevice current(device_);
        MIXZ_CUDA_CHECK(cudaMemsetAsync(to, 0, bytes, transfer_));
        MIXZ_CUDA_CHECK(cudaStreamSynchronize(transfer_));
    }

    // --- partition arithmetic (cuda/quant, cuda/optim, cuda/state: the CPU's element functions,
    // so results are the CPU's bits). It runs on the transfer stream under its mutex: the
    // communication thread calls it between downloads and uploads of the same reduction, and it
    // must neither wait behind nor hold up the layer kernels on the compute stream.
    void convert(const void* in, tensor::DType inType, void* out, tensor::DType outType, std::size_t n) override {
        if (n == 0) return;
        std::lock_guard<std::mutex> lock(transferMutex_);
        CurrentDevice current(device_);
        cuda::launchConvert(in, inType, out, outType, n, transfer_);
        MIXZ_CUDA_CHECK(cudaStreamSynchronize(transfer_));
    }
    void dequantize8(const std::uint8_t* codes, const float* scales, std::size_t n, std::size_t blockSize, float* out) override {
        if (n == 0) return;
        std::lock_guard<std::mutex> lock(transferMutex_);
        CurrentDevice current(device_);
        cuda::launchBlockDequantize(codes, 8, scales, n, blockSize, out, tensor::DType::kFloat32, transfer_);
        MIXZ_CUDA_CHECK(cudaStreamSynchronize(transfer_));
    }
    void accumulate(void* grad, tensor::DType gradType, const float* values, std::size_t n) override {
        if (n == 0) return;
        std::lock_guard<std::mutex> lock(transferMutex_);
        CurrentDevice current(device_);
        cuda::launchAccumulate(grad, gradType, values, n, transfer_);
        MIXZ_CUDA_CHECK(cudaStreamSynchronize(transfer_));
    }
    double sumOfSquares(const float* values, std::size_t n) override {
        if (n == 0) return 0.0;
        std::lock_guard<std::mutex> lock(transferMutex_);
        CurrentDevice current(device_);
        // sumScratch_: kSumOfSquaresPartials partial sums, then the result; sumHost_ is pinned so
        // the one double comes back with a plain async copy.
        double* result = sumScratch_ + cuda::kSumOfSquaresPartials;
        cuda::launchSumOfSquares(values, n, sumScratch_, result, transfer_);
        MIXZ_CUDA_CHECK(cudaMemcpyAsync(sumHost_, result, sizeof(double), cudaMemcpyDeviceToHost, transfer_));
        MIXZ_CUDA_CHECK(cudaStreamSynchronize(transfer_));
        return *sumHost_;
    }
    void adamUpdate(const optim::AdamStepCoefficients& c, const float* grad, float* param, float* expAvg, float* expAvgSq,
                    std::size_t n) override {
        if (n == 0) return;
        std::lock_guard<std::mutex> lock(transferMutex_);
        CurrentDevice current(device_);
        cuda::launchAdamUpdate(c, grad, param, expAvg, expAvgSq, n, transfer_);
        MIXZ_CUDA_CHECK(cudaStreamSynchronize(transfer_));
    }

    // --- caches and kernels: cuda/llama (llama_device.h), with the device made current for
    // callers whose thread has another one.
    std::unique_ptr<ActivationCache> makeLayerCache() override {
        CurrentDevice current(device_);
        return cuda::makeLayerCache(ctx_);
    }
    std::unique_ptr<ActivationCache> makeHeadCache() override {
        CurrentDevice current(device_);
        return cuda::makeHeadCache(ctx_);
    }
    std::unique_ptr<KvCache> makeKvCache(const model::LlamaDims& dims, int batch) override {
        CurrentDevice current(device_);
        return cuda::makeKvCache(ctx_, dims, batch);
    }

    Queue& communicationQueue() override { return comm_; }

    // The CUDA backend's host-side work is small (launch and synchronize); the count is kept for
    // describe-like reports only.
    void setKernelThreads(int threads) override { kernelThreads_ = std::max(1, threads); }

    void embeddingForward(const model::LlamaDims& dims, const std::int32_t* ids, std::size_t tokens, const float* table,
                          float* out) override {
        CurrentDevice current(device_);
        cuda::embeddingForward(ctx_, dims, ids, tokens, table, out);
    }
    void embeddingBackward(const model::LlamaDims& dims, const std::int32_t* ids, std::size_t tokens, const float* dOut,
                           float* dTable) override {
        CurrentDevice current(device_);
        cuda::embeddingBackward(ctx_, dims, ids, tokens, dOut, dTable);
    }
    void decoderLayerForward(const model::LlamaDims& dims, int batch, int seq, const model::DecoderLayerParams<float>& params,
                             const float* x, float* y, ActivationCache* cache, const std::int32_t* positions) override {
        if (positions != nullptr) {
            MIXZ_THROW(InvalidArgument, "packed rows (positionIds) are not supported by the CUDA backend yet: its attention has no per-example mask; pass one example per row");
        }
        CurrentDevice current(device_);
        cuda::decoderLayerForward(ctx_, dims, batch, seq, params, x, y, cache);
    }
    void decoderLayerForwardCached(const model::LlamaDims& dims, int seq, const model::DecoderLayerParams<float>& params,
                                   const float* x, float* y, KvCache& kv) override {
        CurrentDevice current(device_);
        cuda::decoderLayerForwardCached(ctx_, dims, seq, params, x, y, kv);
    }
    void decoderLayerBackward(const model::LlamaDims& dims, int batch, int seq, const model::DecoderLayerParams<float>& params,
                              const ActivationCache& cache, const float* dy, float* dx,
                              const model::DecoderLayerGrads<float>& grads) override {
        CurrentDevice current(device_);
        cuda::decoderLayerBackward(ctx_, dims, batch, seq, params, cache, dy, dx, grads);
    }
    model::LossResult headForward(const model::LlamaDims& dims, int batch, int seq, const model::HeadParams<float>& params,
                                  const float* x, const std::int32_t* labels, std::int32_t ignoreIndex,
                                  ActivationCache* cache) override {
        CurrentDevice current(device_);
        return cuda::headForward(ctx_, dims, batch, seq, params, x, labels, ignoreIndex, cache);
    }
    void headBackward(const model::LlamaDims& dims, int batch, int seq, const model::HeadParams<float>& params,
                      const ActivationCache& cache, float lossGrad, float* dx, const model::HeadGrads<float>& grads) override {
        CurrentDevice current(device_);
        cuda::headBackward(ctx_, dims, batch, seq, params, cache, lossGrad, dx, grads);
    }
    void headLogits(const model::LlamaDims& dims, std::size_t rows, const model::HeadParams<float>& params, const float* x,
                    float* logits) override {
        CurrentDevice current(device_);
        cuda::headLogits(ctx_, dims, rows, params, x, logits);
    }

private:

    int device_ = 0;
    std::string name_;
    int major_ = 0, minor_ = 0;
    std::size_t totalBytes_ = 0;
    int kernelThreads_ = 1;

    DeviceAllocator allocator_; // before everything that holds its blocks
    cudaStream_t compute_ = nullptr;
    cudaStream_t transfer_ = nullptr;
    void* workspace_ = nullptr;
    DeviceContext ctx_;

    std::mutex transferMutex_; // the transfer stream, the staging buffers, the sum scratch
    double* sumScratch_ = nullptr; // device: kSumOfSquaresPartials + 1 doubles
    double* sumHost_ = nullptr;    // pinned: one double
    void* staging_[2] = {nullptr, nullptr};
    cudaEvent_t staged_[2] = {nullptr, nullptr};

    mutable std::mutex bufferMutex_;
    std::unordered_map<float*, std::size_t> bufferSizes_;
    std::size_t bufferBytes_ = 0;
    std::size_t bufferPeak_ = 0;
    std::unordered_map<std::uint8_t*, std::size_t> stateSizes_;
    std::size_t stateBytes_ = 0;

    // Last: its thread runs queued work (which takes and gives buffers and copies) until it is
    // joined, first thing in destruction.
    OrderedQueue comm_;
};

} // namespace

std::unique_ptr<ComputeBackend> makeCudaBackend(const CudaBackendOptions& options) {
    int count = 0;
    const cudaError_t status = cudaGetDeviceCount(&count);
    if (status != cudaSuccess) {
        (void)cudaGetLastError();
        // Without a driver the runtime only says "driver version is insufficient"; the driver's own
        // search says what is missing and where it looked.
        std::string driver;
        try {
            (void)cudalib::driverApi();
        } catch (const Exception& missing) {
            driver = std::string("; ") + missing.what();
        }
        MIXZ_THROW(IoError, "cuda:", options.deviceOrdinal, ": no usable CUDA device: ", cudaGetErrorString(status),
                   " (CUDA_VISIBLE_DEVICES=", visibleDevices(), ")", driver);
    }
    if (options.deviceOrdinal < 0 || options.deviceOrdinal >= count) {
        MIXZ_THROW(IoError, "cuda:", options.deviceOrdinal, ": only ", count, count == 1 ? " device" : " devices",
                   " visible (CUDA_VISIBLE_DEVICES=", visibleDevices(), ")");
    }
    return std::make_unique<CudaBackend>(options);
}

} // namespace mixz::backend
