#include "mixz/zero/secondaries.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "mixz/zero/collective_runner.h"
#include "mixz/zero/element_ops.h"

namespace mixz::zero {

using tensor::DType;

Secondaries::Secondaries(ParameterStore& store, std::shared_ptr<comm::Communicator> group)
    : store_(store), group_(std::move(group)) {
    if (on()) intra_ = sameHostFlags(*group_);
}

void Secondaries::build(Group& g, const float* values) {
    const std::size_t me = static_cast<std::size_t>(group_->rank());
    const std::size_t eb = store_.eb();
    const std::size_t bytes = g.secondary.bytes(g.quantized, eb);
    g.secondaryData.assign(store_.backend(), bytes);
    // Built on the host from the gathered host values, then stored where the state lives.
    std::vector<std::uint8_t> scratch;
    std::uint8_t* blob = store_.hostWrite(g.secondaryData.data(), bytes, scratch, false);
    for (std::size_t k = 0; k < g.params.size(); ++k) {
        const ParamInfo& p = store_.params[g.params[k]];
        const std::size_t part = g.secondary.part[k];
        const std::size_t begin = std::min(p.numel, me * part);
        const std::size_t valid = std::min(part, p.numel - begin);
        const float* from = values + g.foff[k] + begin;
        if (g.quantized) {
            store_.quantizeInto(from, DType::kFloat32, valid, part, blob, g.secondary, k);
        } else {
            convertInto(from, DType::kFloat32, blob + g.secondary.off[k] * eb, store_.dtype(), valid);
        }
    }
    store_.hostCommit(g.secondaryData.data(), bytes, scratch);
    g.secondaryValid = true;
}

} // namespace mixz::zero
