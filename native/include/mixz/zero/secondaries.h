// hpZ (zeropp.md §2.4): secondary partitions over the intra-node hpZ group. After a world gather
// of a group, each rank keeps its 1/h share of the full values (in the model dtype, or int8 for
// quantized frozen groups); backward gathers, generation and every gather of frozen weights then
// read the secondaries over the hpZ group instead of the world. A write into a primary (a step, a
// writeSlice) drops the group's secondary (Group::secondaryValid).
#pragma once

#include <memory>
#include <vector>

#include "mixz/comm/communicator.h"
#include "mixz/zero/parameter_store.h"

namespace mixz::zero {

class Secondaries {
public:
    // `group`: the hpZ group when store.hpzOn(), else null (the engine's constructor checks both).
    Secondaries(ParameterStore& store, std::shared_ptr<comm::Communicator> group);

    bool on() const { return store_.hpzOn(); }
    comm::Communicator& group() const { return *group_; }
    // Per hpZ member: on this rank's host.
    const std::vector<bool>& intra() const { return intra_; }
    // Whether a gather of g reads the secondaries.
    bool usable(const Group& g) const { return on() && g.secondaryValid; }

    // This rank's hpZ secondary partitions of g, cut from its full fp32 values (zero padding).
    void build(Group& g, const float* values);

private:
    ParameterStore& store_;
    std::shared_ptr<comm::Communicator> group_;
    std::vector<bool> intra_;
};

} // namespace mixz::zero
