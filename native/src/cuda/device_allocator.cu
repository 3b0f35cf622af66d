// DeviceAllocator (device_context.h): a caching allocator over cudaMalloc.
//
// Blocks are rounded up to size classes (multiples of a quarter of the request's power of two, at
// least 512 bytes: under 25% waste, and the many slightly different sizes of a model's layers
// share blocks) and a freed block is kept in its class's free list for the next request of that
// class. No block is split, no stream is tracked: every call of the CUDA backend synchronizes its
// stream before returning (compute_backend.h, "Ordering"), so a block given back is never still
// in use by queued GPU work, and reusing it on any stream is safe.
//
// cudaMalloc/cudaFree run with the allocator's device current (the communication thread takes
// and gives buffers too, and a thread's current device defaults to 0).
#include "cuda/device_context.h"

#include <map>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace mixz::cuda {
namespace {

constexpr std::size_t kMinimumBlock = 512;

std::size_t sizeClass(std::size_t bytes) {
    if (bytes <= kMinimumBlock) return kMinimumBlock;
    std::size_t power = 1;
    while (power <= bytes / 2) power <<= 1; // the largest power of two ≤ bytes
    const std::size_t step = power / 4 > kMinimumBlock ? power / 4 : kMinimumBlock;
    return (bytes + step - 1) / step * step;
}

// Makes `device` current for the scope, restoring the caller's device after.
class CurrentDevice {
public:
    explicit CurrentDevice(int device) {
        MIXZ_CUDA_CHECK(cudaGetDevice(&previous_));
        if (previous_ != device) MIXZ_CUDA_CHECK(cudaSetDevice(device));
        changed_ = previous_ != device;
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

} // namespace

struct DeviceAllocator::Impl {
    int device = 0;
    mutable std::mutex mutex;
    std::map<std::size_t, std::vector<void*>> cached; // class → free blocks
    std::unordered_map<void*, std::size_t> live;      // block in use → its class
    std::size_t held = 0;  // every block obtained from cudaMalloc and not yet freed
    std::size_t inUse = 0;
    std::size_t peak = 0;

    // Under `mutex`.
    void releaseCached() {
        for (auto& [bytes, blocks] : cached) {
            for (void* block : blocks) {
                (void)cudaFree(block);
                held -= bytes;
            }
        }
        cached.clear();
    }
};

DeviceAllocator::DeviceAllocator(int device) : impl_(new Impl) { impl_->device = device; }

DeviceAllocator::~DeviceAllocator() {
    // Errors are ignored: at process exit the runtime may already be unloading
    // (cudaErrorCudartUnloading), and the memory goes with the context then anyway.
    {
        std::lock_guard<std::mutex> lock(impl_->mutex);
        int previous = 0;
        const bool switched = cudaGetDevice(&previous) == cudaSuccess && previous != impl_->device &&
                              cudaSetDevice(impl_->device) == cudaSuccess;
        impl_->releaseCached();
        for (auto& [block, bytes] : impl_->live) (void)cudaFree(block);
        impl_->live.clear();
        if (switched) (void)cudaSetDevice(previous);
    }
    delete impl_;
}

void* DeviceAllocator::allocate(std::size_t bytes) {
    const std::size_t size = sizeClass(bytes);
    std::lock_guard<std::mutex> lock(impl_->mutex);
    void* block = nullptr;
    auto slot = impl_->cached.find(size);
    if (slot != impl_->cached.end() && !slot->second.empty()) {
        block = slot->second.back();
        slot->second.pop_back();
    } else {
        CurrentDevice current(impl_->device);
        cudaError_t status = cudaMalloc(&block, size);
        if (status == cudaErrorMemoryAllocation) {
            // Cached blocks of other classes may add up to what is needed: give them back and try
            // once more before failing.
            (void)cudaGetLastError();
            impl_->releaseCached();
            status = cudaMalloc(&block, size);
        }
        if (status == cudaErrorMemoryAllocation) {
            (void)cudaGetLastError();
            std::size_t freeBytes = 0, totalBytes = 0;
            (void)cudaMemGetInfo(&freeBytes, &totalBytes);
            MIXZ_THROW(IoError, "cuda:", impl_->device, " out of memory: ", size, " bytes requested, ", impl_->held,
                       " held by mixz, ", freeBytes, " free of ", totalBytes);
        }
        if (status != cudaSuccess) throwCudaError(status, "cudaMalloc", __FILE__, __LINE__);
        impl_->held += size;
    }
    impl_->live.emplace(block, size);
    impl_->inUse += size;
    if (impl_->inUse > impl_->peak) impl_->peak = impl_->inUse;
    return block;
}

void DeviceAllocator::free(void* block) {
    if (block == nullptr) return;
    std::lock_guard<std::mutex> lock(impl_->mutex);
    auto it = impl_->live.find(block);
    MIXZ_ENFORCE(it != impl_->live.end(), "cuda:", impl_->device, ": a block not allocated here (or freed twice) was freed");
    const std::size_t size = it->second;
    impl_->live.erase(it);
    impl_->inUse -= size;
    impl_->cached[size].push_back(block);
}

std::size_t DeviceAllocator::bytesHeld() const {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    return impl_->held;
}

std::size_t DeviceAllocator::bytesInUse() const {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    return impl_->inUse;
}

std::size_t DeviceAllocator::bytesPeak() const {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    return impl_->peak;
}

void DeviceAllocator::trim() {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    CurrentDevice current(impl_->device);
    impl_->releaseCached();
}

} // namespace mixz::cuda
