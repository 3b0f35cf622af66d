// Gathering parameters for compute (zeropp.md §2.2): a group's partitions all-gathered (over the
// hpZ group from the secondaries when they are valid, else over the world, quantized on the fly
// with qwZ) and unpacked into a full fp32 buffer from the compute backend; the fetch / prefetch /
// release lifecycle of units in the order compute walks them, within the prefetch bucket and the
// live-parameter limit; and the persistent unit 0, gathered once and kept.
#pragma once

#include <cstddef>
#include <cstdint>
#include <future>
#include <string>
#include <vector>

#include "mixz/backend/compute_backend.h"
#include "mixz/comm/communicator.h"
#include "mixz/zero/collective_runner.h"
#include "mixz/zero/engine.h"
#include "mixz/zero/parameter_store.h"
#include "mixz/zero/secondaries.h"

namespace mixz::zero {

class Fetcher {
public:
    // Every reference must outlive the fetcher.
    Fetcher(const EngineOptions& options, ParameterStore& store, Secondaries& secondaries, backend::ComputeBackend& backend,
            CollectiveRunner& runner, MetricsRecorder& metrics, comm::Communicator& world);

    // Runs on the communication queue: fills host memory `values` (F elements) with group gi of
    // unit u, from the hpZ secondaries when they are valid, else from the primaries over the
    // world (building the secondaries from the result when hpZ is on). `exact`: never quantize on
    // the fly (quantizing frozen weights needs their real values).
    void gatherToHost(std::size_t u, std::size_t gi, float* values, bool exact = false);
    // The same into a backend buffer: directly when the backend's buffers are host memory, else
    // gathered into host staging and uploaded.
    void gatherInto(std::size_t u, std::size_t gi, float* buffer);

    // Starts the gathers of unit u's groups not gathered or in flight yet.
    void fetch(std::size_t u);
    // Unit u gathered (waiting for it), after starting the prefetch of the units that follow
    // `position` in `order`.
    void ensure(std::size_t u, const std::vector<std::size_t>& order, std::size_t position);
    void prefetchAfter(const std::vector<std::size_t>& order, std::size_t position);
    // Hands unit u's buffers back (never unit 0), waiting for a gather still in flight.
    void release(std::size_t u);
    void releaseAll();
    // Gathers the persistent groups that changed (all at construction; trainable ones after a
    // step; written ones): frozen persistent parameters are gathered once, not after every step.
    void gatherPersistent();

    // Param i's gathered values, a backend buffer (its unit must be available).
    const float* valueOf(std::size_t i) const;
    const float* valueOf(const std::string& name) const { return valueOf(store_.indexOf(name)); }

    // Bytes of the gather buffers (staging, qwZ wire, host staging of a device backend).
    std::size_t bufferBytes() const { return staging_.size() + wire_.size() + localHost_.size() + hostValues_.size() * sizeof(float); }
    // Bytes of the persistent unit's gathered values (backend buffers kept for the engine's life).
    std::size_t persistentBytes() const;
    // Gives the persistent unit's buffers back (before the backend goes).
    void releasePersistent();

private:
    // A device backend with one member: the partitions unpacked into `buffer` where they live.
    void gatherLocal(Group& g, float* buffer);
    std::shared_future<void> submitGather(std::size_t u, std::size_t gi, float* values);
    std::size_t fullOf(std::size_t u) const;
    bool anyFetched(std::size_t u) const;
    std::size_t liveElements() const;

    const EngineOptions& options_;
    ParameterStore& store_;
    Secondaries& secondaries_;
    backend::ComputeBackend& backend_;
    CollectiveRunner& runner_;
    MetricsRecorder& metrics_;
    comm::Communicator& world_;
    std::vector<bool> worldIntra_;     // per world member: on this rank's host
    std::vector<std::uint8_t> staging_; // gathers, grown to the largest
    std::vector<std::uint8_t> wire_;    // zero_quantized_weights: this rank's int8 partitions
    std::vector<float> hostValues_;     // a device backend's gathers, before the upload
    std::vector<std::uint8_t> localHost_; // a device backend's partitions, downloaded for a host gather
    std::vector<backend::Buffer> persistent_; // unit 0's gathered values, per group
};

} // namespace mixz::zero
