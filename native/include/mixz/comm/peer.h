// The vocabulary shared by the communicator and its transports: who a peer is, what one collective
// operation is (its OpContext: name, tag, deadline), and the errors that name a peer.
//
// Every transport fault is reported as mixz::IoError with the peer's global rank and plan host,
// so a user reading one line knows which machine to look at:
//
//   allGather (tag 3): rank 3 (host node-b): connection closed
//   allGather (tag 3): timed out after 30 s waiting for rank 2 (host node-a)
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace mixz::comm {

using Clock = std::chrono::steady_clock;

// One member of a communicator, as every other member knows it after connect().
struct Peer {
    int rank = -1;        // global rank in the world
    std::string host;     // the plan's host name
    std::int32_t pid = 0; // process id on that host
};

// "rank 3 (host node-b)".
std::string describePeer(const Peer& peer);

// "30 s", "1.5 s", "250 ms".
std::string formatDuration(std::chrono::milliseconds duration);

// The collectives, for messages and for matching operations between members.
enum class OpKind : std::uint8_t {
    kAllgather = 1,
    kAllgatherv = 2,
    kReduceScatter = 3,
    kAllreduce = 4,
    kBroadcast = 5,
    kBarrier = 6,
    kGroup = 7, // building a sub-communicator
    kConnect = 9, // connect(): attaching to segments, connecting pairs
    kQuantizedAllgather = 10, // mixz/comm/quantized_allgather.h
};

// "allGather", "allGatherV", "reduceScatter", "allReduce", "broadcast", "barrier", "group", "connect",
// "quantizedAllGather".
const char* opKindName(OpKind kind) noexcept;

// One collective call on one member: what it is and until when it may wait.
struct OpContext {
    OpKind kind = OpKind::kBarrier;
    std::uint32_t tag = 0;
    std::chrono::milliseconds timeout{0};
    Clock::time_point deadline;
    // A digest of the call's shape (sizes, dtype, op, root) that every member computes alike;
    // transports that can compare it (shared memory) report a mismatch instead of corrupting data.
    std::uint64_t shape = 0;

    OpContext(OpKind kind, std::uint32_t tag, std::chrono::milliseconds timeout, std::uint64_t shape = 0)
        : kind(kind), tag(tag), timeout(timeout), deadline(Clock::now() + timeout), shape(shape) {}

    // "allGather (tag 3)".
    std::string label() const;

    // Milliseconds left until the deadline, at least 0.
    std::chrono::milliseconds remaining() const;
};

// Mixes `value` into a running 64-bit digest (FNV-1a over the value's bytes).
std::uint64_t mixShape(std::uint64_t digest, std::uint64_t value) noexcept;

// Throws IoError "<op>: timed out after <timeout> waiting for <peer>[: what]".
[[noreturn]] void throwTimeout(const OpContext& op, const Peer& peer, const std::string& what = "");

// Throws IoError "<op>: <peer>: <problem>".
[[noreturn]] void throwPeerError(const OpContext& op, const Peer& peer, const std::string& problem);

} // namespace mixz::comm
