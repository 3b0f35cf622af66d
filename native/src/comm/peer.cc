#include "mixz/comm/peer.h"

#include <algorithm>
#include <cstring>

#include "mixz/common/error.h"

namespace mixz::comm {

std::string describePeer(const Peer& peer) {
    return detail::concat("rank ", peer.rank, " (host ", peer.host.empty() ? std::string("?") : peer.host, ")");
}

std::string formatDuration(std::chrono::milliseconds duration) {
    const auto ms = duration.count();
    if (ms < 1000) return detail::concat(ms, " ms");
    if (ms % 1000 == 0) return detail::concat(ms / 1000, " s");
    // One decimal is enough for a timeout: "1.5 s", "2.3 s".
    return detail::concat(ms / 1000, ".", (ms % 1000) / 100, " s");
}

const char* opKindName(OpKind kind) noexcept {
    switch (kind) {
        case OpKind::kAllgather: return "allGather";
        case OpKind::kAllgatherv: return "allGatherV";
        case OpKind::kReduceScatter: return "reduceScatter";
        case OpKind::kAllreduce: return "allReduce";
        case OpKind::kBroadcast: return "broadcast";
        case OpKind::kBarrier: return "barrier";
        case OpKind::kGroup: return "group";
        case OpKind::kConnect: return "connect";
        case OpKind::kQuantizedAllgather: return "quantizedAllGather";
    }
    return "collective";
}

std::string OpContext::label() const { return detail::concat(opKindName(kind), " (tag ", tag, ")"); }

std::chrono::milliseconds OpContext::remaining() const {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    return std::max(left, std::chrono::milliseconds(0));
}

std::uint64_t mixShape(std::uint64_t digest, std::uint64_t value) noexcept {
    if (digest == 0) digest = 0xcbf29ce484222325ull;
    for (int i = 0; i < 8; ++i) {
        digest ^= (value >> (8 * i)) & 0xFFu;
        digest *= 0x100000001b3ull;
    }
    return digest;
}

void throwTimeout(const OpContext& op, const Peer& peer, const std::string& what) {
    throw IoError(detail::concat(op.label(), ": timed out after ", formatDuration(op.timeout), " waiting for ",
                                 describePeer(peer), what.empty() ? "" : ": ", what));
}

void throwPeerError(const OpContext& op, const Peer& peer, const std::string& problem) {
    throw IoError(detail::concat(op.label(), ": ", describePeer(peer), ": ", problem));
}

} // namespace mixz::comm
