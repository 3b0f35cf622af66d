// The Gloo TCP transport: collectives between hosts over Gloo's transport layer (Debian's
// libgloo-dev), one TCP connection ("pair") per pair of ranks.
//
// mixz uses Gloo's transport API (device, context, pair, unbound buffer) rather than its
// collective functions, for two reasons: every wait then belongs to one known peer, so a timeout or
// a closed connection is reported as "rank 3 (host node-b): ...", and a sub-communicator can use
// the world's connections (its operations get their own slots) instead of opening new ones.
//
// Vocabulary:
//   mesh    the world's TCP device and transport context, with a pair to every peer this rank
//           talks to over Gloo. Shared by the world communicator and its groups.
//   domain  the members of one communicator that talk over Gloo, as world ranks, plus the slot
//           namespace of that communicator.
//   slot    Gloo's message tag: communicator id (16 bits) | collective kind (8) | tag (32) |
//           phase (8). Operations of different communicators never match each other, so a world
//           collective and a group collective may run at the same time on different threads.
//
// The collectives are direct (every member sends to every other member at once): the traffic per
// member is the same as a ring's for all-gather and reduce-scatter, and the latency is one step.
// Suits the small groups Gloo serves here (the cross-node group, a few hosts); a ring would be the
// choice for many hosts.
//
// Errors: Gloo's IoException becomes mixz::IoError naming the peer; after one, the mesh is in an
// unknown state (Gloo closes every pair of the context when a wait times out), so the communicator
// refuses further work and must be rebuilt.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "mixz/comm/peer.h"
#include "mixz/comm/reduce.h"
#include "mixz/tensor/dtype.h"

namespace gloo::transport {
class Context;
class Device;
} // namespace gloo::transport

namespace mixz::comm {

class GlooMesh {
public:
    // Creates the TCP device bound to `bindAddress` (a host name or IP address of this machine) and
    // the transport context of the world. connectTimeout bounds each pair's connect().
    GlooMesh(int rank, int size, const std::string& bindAddress, std::chrono::milliseconds connectTimeout);
    ~GlooMesh();

    GlooMesh(const GlooMesh&) = delete;
    GlooMesh& operator=(const GlooMesh&) = delete;

    // Creates the pair to `peer` and returns its address bytes (what `peer` passes to connect).
    std::vector<std::uint8_t> preparePair(int peer);

    // Connects the pair to `peer` with the address bytes that peer prepared for this rank.
    void connectPair(const Peer& peer, const std::vector<std::uint8_t>& address, const OpContext& op);

    gloo::transport::Context& context() { return *context_; }

    // "tcp, ..., addr=[127.0.0.1]".
    std::string deviceDescription() const;

    int rank() const { return rank_; }

private:
    int rank_;
    std::shared_ptr<gloo::transport::Device> device_;
    std::shared_ptr<gloo::transport::Context> context_;
};

class GlooDomain {
public:
    // `members` are the communicator's members that this domain spans, in member order, as world
    // ranks (Peer::rank); `me` indexes this rank in it. `commId` names the slot namespace.
    GlooDomain(std::shared_ptr<GlooMesh> mesh, std::vector<Peer> members, int me, std::uint16_t commId);

    int size() const { return static_cast<int>(members_.size()); }
    int me() const { return me_; }
    const std::vector<Peer>& members() const { return members_; }

    // All-gather with varying sizes: member m's bytes go to output + offsets[m] (bytes[m] long);
    // this member's are read from `source` (and copied to its place unless already there).
    void allgatherv(std::uint8_t* output, const std::vector<std::size_t>& offsets,
                    const std::vector<std::size_t>& bytes, const std::uint8_t* source, const OpContext& op,
                    std::uint8_t phase = 0);

    // As ShmDomain::reduceScatter.
    void reduceScatter(const std::uint8_t* input, std::uint8_t* output, const std::vector<std::size_t>& counts,
                       const std::vector<std::size_t>& displs, tensor::DType dtype, ReduceOp reduceOp,
                       const OpContext& op, std::uint8_t phase = 0);

    // As ShmDomain::allreduce: reduce-scatter, then all-gather.
    void allreduce(const std::uint8_t* input, std::uint8_t* output, std::size_t count, tensor::DType dtype,
                   ReduceOp reduceOp, const OpContext& op);

    void broadcast(std::uint8_t* buffer, std::size_t bytes, int root, const OpContext& op);

    void barrier(const OpContext& op);

private:
    std::uint64_t slot(const OpContext& op, std::uint8_t phase) const;

    std::shared_ptr<GlooMesh> mesh_;
    std::vector<Peer> members_;
    int me_;
    std::uint16_t commId_;
    std::vector<std::uint8_t> scratch_;
};

} // namespace mixz::comm
