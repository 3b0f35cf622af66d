// The engine's parameters as partitions (internal to mixz::zero; the addon never sees it): which
// parameters exist (ParamInfo), how they are grouped for gathers (Unit, Group), the partitions,
// gradients, fp32 masters and optimizer moments each rank owns, and the slice arithmetic and
// conversions between a partition and fp32 values (writePartition, readSlice/writeSlice, int8
// blocks through quantizeInto/dequantizeFrom).
//
//   unit 0          persistent: every parameter with numel ≤ the persistence threshold
//   unit 1          the token embedding
//   units 2..L+1    decoder layer i's remaining parameters
//   unit L+2        the final norm (unless persistent) and the LM head
//
// A unit holds one or two groups (its base parameters; after LoRA, its adapters). A group's
// partitions are one flat buffer, so one all-gather fetches a whole group.
#pragma once

#include <cstddef>
#include <cstdint>
#include <future>
#include <string>
#include <unordered_map>
#include <vector>

#include "mixz/backend/compute_backend.h"
#include "mixz/tensor/dtype.h"
#include "mixz/zero/engine.h"
#include "mixz/zero/partition_layout.h"

namespace mixz::zero {

enum class Availability { kNotAvailable, kInflight, kAvailable };

// Parameters gathered together: one unit's base parameters, or its LoRA adapters.
struct Group {
    std::vector<std::size_t> params;
    std::vector<std::size_t> foff; // each param's offset in the full buffer
    std::size_t full = 0;          // F: elements of the full (unpadded) parameters
    bool frozen = false;           // no gradient, no optimizer state
    bool quantized = false;        // partitions are int8 blocks (frozen only)
    // The partitions and their state are backend state memory (device memory on a device
    // backend: mixz/backend/compute_backend.h); host code touches them only through the store's
    // host views or the backend's arithmetic.
    Layout primary;                // over the world
    backend::Block data;
    backend::Block grad;           // primary.elements, model dtype (trainable)
    backend::Block master;         // primary.elements fp32, when the model dtype is not fp32 (trainable)
    backend::Block expAvg;         // fp32
    backend::Block expAvgSq;       // fp32
    Layout secondary;              // over the hpZ group
    backend::Block secondaryData;
    bool secondaryValid = false;
    Availability status = Availability::kNotAvailable;
    std::shared_future<void> fetched;
    float* values = nullptr;             // the gathered fp32 values (a backend buffer; unit 0: the fetcher's, kept)
    bool stale = true;                   // unit 0: the values must be gathered again
};

struct Unit {
    std::vector<Group> groups;
};

struct ParamLocation {
    std::size_t unit = 0;
    std::size_t group = 0;
    std::size_t index = 0; // within the group
};

class ParameterStore {
public:
    // `options` and `backend` must outlive the store. `hpzMembers`: the hpZ group's size (1: no hpZ).
    ParameterStore(const EngineOptions& options, backend::ComputeBackend& backend, int rank, int size, int hpzMembers);

    backend::ComputeBackend& backend() const { return backend_; }
    // Host access to state memory. hostRead: `bytes` at `at` readable on the host (the memory
    // itself on a host-addressable backend, else a copy in `scratch`). hostWrite: a host range to
    // fill (the memory itself, or `scratch` holding a copy of the current contents), and
    // hostCommit puts what was written back (nothing to do on a host-addressable backend).
    const std::uint8_t* hostRead(const std::uint8_t* at, std::size_t bytes, std::vector<std::uint8_t>& scratch) const;
    std::uint8_t* hostWrite(std::uint8_t* at, std::size_t bytes, std::vector<std::uint8_t>& scratch, bool keep) const;
    void hostCommit(std::uint8_t* at, std::size_t bytes, const std::vector<std::uint8_t>& scratch) const;

    int rank() const { return rank_; }
    int size() const { return size_; }
    // hpZ secondaries are kept: the one place that decides it (the descriptor's hpzSize > 1).
    bool hpzOn() const { return hpzMembers_ > 1; }
    tensor::DType dtype() const { return options_.dtype; } // the model dtype (partitions, gradients)
    std::size_t eb() const; // bytes per element of the model dtype
    std::size_t layerUnit(int layer) const { return 2 + static_cast<std::size_t>(layer); }
    std::size_t headUnit() const { return 2 + static_cast<std::size_t>(options_.dims.layers); }

    // The base model's parameters, allocated and initialized from the seed.
    void build();
    // Adds a parameter to group `group` of unit `unit` (or of the persistent unit 0 when small).
    void addParam(const std::string& name, std::vector<std::int64_t> shape, std::size_t unit, std::size_t group, bool trainable);
    // Allocates a new group's partitions (zeros) and, for trainable groups, its gradient and
    // optimizer state.
    void allocate(Group& g);

    Group& groupOf(std::size_t i) { return units[where[i].unit].groups[where[i].group]; }
    const Group& groupOf(std::size_t i) const { return units[where[i].unit].groups[where[i].group]; }
    bool has(const std::string& name) const { return byName.count(name) != 0; }
    std::size_t indexOf(const std::string& name) const;

    // This rank's slice of param i: [sliceBegin, sliceBegin + sliceLength) of the flattened tensor.
    std::size_t sliceBegin(std::size_t i) const;
    std::size_t sliceLength(std::size_t i) const;

    // Stores param i's whole partition (padding included) from fp32 values; the master copy is the
    // rounded value, as DeepSpeed builds its fp32 master from the 16-bit parameters. Drops the
    // group's secondary; marks the persistent unit stale.
    void writePartition(std::size_t i, const float* values, bool setMaster);

    // Quantizes `valid` values (then zeros up to the partition's blocks) into slot k of a
    // quantized blob laid out by `layout`.
    void quantizeInto(const void* input, tensor::DType inputType, std::size_t valid, std::size_t part, std::uint8_t* blob,
                      const Layout& layout, std::size_t k) const;
    void dequantizeFrom(const std::uint8_t* blob, const Layout& layout, std::size_t k, std::size_t valid, float* out) const;

    // Engine::readSlice/writeSlice on this rank's partitions. writesParameter(): the write changes
    // the parameter itself (the caller drops gathered copies first).
    void readSlice(std::size_t i, const std::string& kind, float* out) const;
    bool writesParameter(std::size_t i, const std::string& kind) const;
    void writeSlice(std::size_t i, const std::string& kind, const float* data);

    // Adds the partitions' bytes (primary, secondary, scales, gradients, masters, moments).
    void addPartitionBytes(MemoryReport& report) const;

    std::vector<ParamInfo> params;
    std::vector<ParamLocation> where;
    std::unordered_map<std::string, std::size_t> byName;
    std::vector<Unit> units;
    bool persistentDirty = false; // a persistent group changed since it was last gathered

private:
    std::vector<std::size_t> numelsOf(const Group& g) const;

    const EngineOptions& options_;
    backend::ComputeBackend& backend_;
    int rank_ = 0;
    int size_ = 1;
    int hpzMembers_ = 1;
};

} // namespace mixz::zero
