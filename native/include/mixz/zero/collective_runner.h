// How mixz::zero issues collectives: every one runs as a task on the backend's ordered
// communication queue, with the engine's timeout and a tag from collective_tags.h; the first task
// that fails is remembered (its message becomes the engine's "broken" reason), because a failed
// task leaves this rank's collectives out of step with its peers whatever the exception.
// MetricsRecorder is the engine's EngineMetrics under a mutex (the queue's thread adds to it).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <future>
#include <mutex>
#include <string>
#include <vector>

#include "mixz/backend/compute_backend.h"
#include "mixz/comm/communicator.h"
#include "mixz/comm/reduce.h"
#include "mixz/tensor/dtype.h"
#include "mixz/zero/engine.h"

namespace mixz::zero {

using Clock = std::chrono::steady_clock;

inline double secondsSince(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

class MetricsRecorder {
public:
    template <typename Field>
    void add(Field EngineMetrics::*field, Field amount) {
        std::lock_guard<std::mutex> lock(mutex_);
        metrics_.*field += amount;
    }
    double gatherWaitSeconds() const {
        std::lock_guard<std::mutex> lock(mutex_);
        return metrics_.gatherWaitSeconds;
    }
    // Compute time of a call that began at `start`: the time since, less the gather waits since
    // (`waitedBefore`: gatherWaitSeconds() at `start`).
    void addCompute(Clock::time_point start, double waitedBefore) {
        std::lock_guard<std::mutex> lock(mutex_);
        metrics_.computeSeconds += secondsSince(start) - (metrics_.gatherWaitSeconds - waitedBefore);
    }
    EngineMetrics take() {
        std::lock_guard<std::mutex> lock(mutex_);
        EngineMetrics metrics = metrics_;
        metrics_ = EngineMetrics{};
        return metrics;
    }

private:
    mutable std::mutex mutex_;
    EngineMetrics metrics_;
};

// Per member of `c`: whether it is on this rank's host (for the intra/cross byte counts).
std::vector<bool> sameHostFlags(const comm::Communicator& c);

class CollectiveRunner {
public:
    CollectiveRunner(backend::Queue& queue, std::chrono::milliseconds timeout) : queue_(queue), timeout_(timeout) {}

    // Runs `work` on the communication queue; a failure is recorded, then rethrown by the future.
    std::shared_future<void> submit(std::function<void()> work);
    // The first failure's message ("" while none).
    std::string failure() const;

    // The collectives, called from tasks on the queue. In place: this member's bytesPerMember
    // already sit at output + rank · bytesPerMember.
    void allgatherInPlace(comm::Communicator& c, std::uint32_t tag, std::uint8_t* output, std::size_t bytesPerMember) const;
    void reduceScatter(comm::Communicator& c, std::uint32_t tag, const void* input, void* output, std::size_t count,
                       tensor::DType dtype, comm::ReduceOp op) const;
    // Submits a one-float all-reduce and waits for it (the caller's thread). One member: `value`.
    float allreduce(comm::Communicator& c, std::uint32_t tag, float value, comm::ReduceOp op);

private:
    backend::Queue& queue_;
    std::chrono::milliseconds timeout_;
    mutable std::mutex mutex_;
    std::string failure_;
};

} // namespace mixz::zero
