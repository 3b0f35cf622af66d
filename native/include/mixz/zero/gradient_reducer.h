// Gradient reduction (zeropp.md §2.3): backward hands each unit's full fp32 gradients (backend
// buffers) to the communication queue, which reduce-scatters them (mean over ranks, in chunks of
// at most reduce_bucket_size elements; fp32 or 16-bit on the wire, summed in fp32) and adds this
// rank's slice into the gradient partition (model dtype, accumulated in fp32 and rounded once).
// With qgZ the reduction has two levels: fp32 inside the node, int4 blocks across nodes, and the
// result is the true mean over all ranks (zeropp.md §1.8).
#pragma once

#include <cstddef>
#include <cstdint>
#include <future>
#include <memory>
#include <vector>

#include "mixz/backend/compute_backend.h"
#include "mixz/comm/communicator.h"
#include "mixz/zero/collective_runner.h"
#include "mixz/zero/engine.h"
#include "mixz/zero/parameter_store.h"

namespace mixz::zero {

// Gradient buffers of one backward: [unit][group], null where none (frozen, or handed on).
using GradBuffers = std::vector<std::vector<float*>>;

class GradientReducer {
public:
    // `cross` non-null: qgZ (with `node` the node's ranks, null for one rank per node). Every
    // reference must outlive the reducer.
    GradientReducer(const EngineOptions& options, ParameterStore& store, backend::ComputeBackend& backend, CollectiveRunner& runner,
                    MetricsRecorder& metrics, comm::Communicator& world, comm::Communicator* node, comm::Communicator* cross);

    // Backend buffers for unit u's trainable groups (null for frozen ones).
    void takeGrads(std::size_t u, GradBuffers& grads);
    // Queues the reduction of every buffer of unit u and clears it from `grads` (the buffers go
    // back to the backend when their reductions end).
    void submitReduces(std::size_t u, GradBuffers& grads);
    // One group's reduction; `pooled`: give `grads` back to the backend afterwards.
    void submitReduce(std::size_t u, std::size_t gi, float* grads, bool pooled);
    bool pending() const { return !pending_.empty(); }
    // Waits for every queued reduction; rethrows the first failure.
    void waitReduces();
    // Waits for every queued reduction, ignoring failures (after a failure elsewhere).
    void settle();

    // Bytes of the reduction buffers.
    std::size_t bufferBytes() const;
    // Gives the backend buffers back (before the backend goes; no reduction may be pending).
    void releaseBuffers() { upload_.release(); }
    std::size_t uploadBytes() const { return upload_.bytes(); }

private:
    void reduceInto(std::size_t u, std::size_t gi, const float* grads);
    void quantizedReduce(std::size_t width);
    void accumulateGrad(Group& g, std::size_t offset, const float* values, std::size_t count);

    const EngineOptions& options_;
    ParameterStore& store_;
    backend::ComputeBackend& backend_;
    CollectiveRunner& runner_;
    MetricsRecorder& metrics_;
    comm::Communicator& world_;
    comm::Communicator* node_;  // qgZ: this node's ranks (null: one rank per node)
    comm::Communicator* cross_; // qgZ: this local rank of every node (null: no qgZ)
    std::vector<bool> worldIntra_;
    std::vector<std::shared_future<void>> pending_;
    // The communication queue's buffers, grown to the largest and reused.
    std::vector<float> packed_;  // reduce-scatter input
    std::vector<float> reduced_;
    std::vector<float> nodeReduced_; // qgZ: the node's partial sums for this local rank
    std::vector<std::uint8_t> qgzGathered_;
    std::vector<float> reorder_, dequantized_;
    std::vector<std::uint8_t> gradWire_, gradWireOut_; // 16-bit gradient reduce-scatter
    std::vector<float> hostGrads_; // a device backend's gradients, downloaded for the host transports
    backend::Buffer upload_;       // a device backend: the reduced chunk, uploaded for accumulate
};

} // namespace mixz::zero
