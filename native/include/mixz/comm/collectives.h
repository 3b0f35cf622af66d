// The collectives of mixz::comm::Communicator: one options struct and one free function each, in
// the manner of Gloo (gloo/allgather.h: AllgatherOptions + allgather()).
//
// Every options struct is built from the communicator it runs on and carries a tag and a timeout;
// the timeout starts as the communicator's default (PrepareOptions::timeout) and is never
// ignored: the call returns or throws IoError within it (plus the time of the copies under way).
// The tag names the operation in errors and keeps apart operations of different communicators
// (a world and its groups may run collectives at the same time on different threads); members of
// one collective must pass the same tag.
//
// Validation happens here, before anything is sent: wrong sizes, null buffers and overlapping
// buffers throw InvalidArgument and leave the communicator usable. Failures while communicating
// throw IoError (a dead or stuck peer, named with its rank and host) and break the communicator.
//
// Buffers: `input` and `output` may be the same memory only in the ways noted ("in place");
// otherwise they must not overlap.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "mixz/comm/communicator.h"
#include "mixz/comm/reduce.h"
#include "mixz/tensor/dtype.h"

namespace mixz::comm {

struct CollectiveOptions {
    explicit CollectiveOptions(Communicator& comm) : comm(comm), timeout(comm.defaultTimeout()) {}
    Communicator& comm;
    // Identifies the operation; members of one collective pass the same tag.
    std::uint32_t tag = 0;
    // End-to-end limit of the call; must be positive.
    std::chrono::milliseconds timeout;
};

// Every member contributes `inputBytes`; output (size() × inputBytes) receives member m's bytes at
// m × inputBytes. In place: input == output + rank() × inputBytes.
struct AllgatherOptions : CollectiveOptions {
    using CollectiveOptions::CollectiveOptions;
    const void* input = nullptr;
    std::size_t inputBytes = 0;
    void* output = nullptr;
    std::size_t outputBytes = 0;
};
void allgather(const AllgatherOptions& options);

// Member m contributes bytes[m] (this member's input is bytes[rank()] long); output (sum of bytes)
// receives them in member order. In place: input == output + sum(bytes[0 .. rank()-1]).
struct AllgathervOptions : CollectiveOptions {
    using CollectiveOptions::CollectiveOptions;
    const void* input = nullptr;
    void* output = nullptr;
    std::size_t outputBytes = 0;
    std::vector<std::size_t> bytes;
};
void allgatherv(const AllgathervOptions& options);

// input holds size() × count elements; output (count elements) receives the sum (or mean) over
// members of their chunk rank(). In place: output == input + rank() × count elements.
struct ReduceScatterOptions : CollectiveOptions {
    using CollectiveOptions::CollectiveOptions;
    const void* input = nullptr;
    void* output = nullptr;
    std::size_t count = 0;
    tensor::DType dtype = tensor::DType::kFloat32;
    ReduceOp op = ReduceOp::kSum; // kSum or kMean
};
void reduceScatter(const ReduceScatterOptions& options);

// output (count elements) receives the element-wise sum, mean or max over members of input. Every
// member gets the same bits. In place: output == input.
struct AllreduceOptions : CollectiveOptions {
    using CollectiveOptions::CollectiveOptions;
    const void* input = nullptr;
    void* output = nullptr;
    std::size_t count = 0;
    tensor::DType dtype = tensor::DType::kFloat32;
    ReduceOp op = ReduceOp::kSum;
};
void allreduce(const AllreduceOptions& options);

// Copies member root's buffer into every member's.
struct BroadcastOptions : CollectiveOptions {
    using CollectiveOptions::CollectiveOptions;
    void* buffer = nullptr;
    std::size_t bytes = 0;
    int root = 0;
};
void broadcast(const BroadcastOptions& options);

// Returns once every member has called it.
struct BarrierOptions : CollectiveOptions {
    using CollectiveOptions::CollectiveOptions;
};
void barrier(const BarrierOptions& options);

} // namespace mixz::comm
