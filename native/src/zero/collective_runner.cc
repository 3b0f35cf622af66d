#include "mixz/zero/collective_runner.h"

#include <exception>
#include <utility>

#include "mixz/comm/collectives.h"

namespace mixz::zero {

std::vector<bool> sameHostFlags(const comm::Communicator& c) {
    const std::string& me = c.members()[static_cast<std::size_t>(c.rank())].host;
    std::vector<bool> flags;
    for (const comm::Peer& peer : c.members()) flags.push_back(peer.host == me);
    return flags;
}

std::shared_future<void> CollectiveRunner::submit(std::function<void()> work) {
    return queue_.submit([this, work = std::move(work)] {
        try {
            work();
        } catch (const std::exception& error) {
            std::lock_guard<std::mutex> lock(mutex_);
            if (failure_.empty()) failure_ = error.what();
            throw;
        }
    });
}

std::string CollectiveRunner::failure() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return failure_;
}

void CollectiveRunner::allgatherInPlace(comm::Communicator& c, std::uint32_t tag, std::uint8_t* output,
                                        std::size_t bytesPerMember) const {
    comm::AllgatherOptions op(c);
    op.tag = tag;
    op.timeout = timeout_;
    op.input = output + static_cast<std::size_t>(c.rank()) * bytesPerMember;
    op.inputBytes = bytesPerMember;
    op.output = output;
    op.outputBytes = static_cast<std::size_t>(c.size()) * bytesPerMember;
    comm::allgather(op);
}

void CollectiveRunner::reduceScatter(comm::Communicator& c, std::uint32_t tag, const void* input, void* output,
                                     std::size_t count, tensor::DType dtype, comm::ReduceOp reduceOp) const {
    comm::ReduceScatterOptions op(c);
    op.tag = tag;
    op.timeout = timeout_;
    op.input = input;
    op.output = output;
    op.count = count;
    op.dtype = dtype;
    op.op = reduceOp;
    comm::reduceScatter(op);
}

float CollectiveRunner::allreduce(comm::Communicator& c, std::uint32_t tag, float value, comm::ReduceOp op) {
    float out = value;
    if (c.size() == 1) return out;
    submit([&] {
        comm::AllreduceOptions o(c);
        o.tag = tag;
        o.timeout = timeout_;
        o.input = &value;
        o.output = &out;
        o.count = 1;
        o.dtype = tensor::DType::kFloat32;
        o.op = op;
        comm::allreduce(o);
    }).get();
    return out;
}

} // namespace mixz::zero
