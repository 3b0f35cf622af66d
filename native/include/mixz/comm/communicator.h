// mixz::comm::Communicator: the members of a collective and the transports that connect them.
//
// Built in two phases, with no callback into JS (DESIGN.md §2):
//
//   Communicator world;
//   std::vector<uint8_t> mine = world.prepare(options);   // opens the transports
//   ... JS exchanges every rank's bytes through the coordinator's store ...
//   world.connect(allAddresses);                          // pairs connect, segments are mapped
//
// Transports (PrepareOptions::transport):
//   auto  shared memory (mixz/comm/shm_transport.h) among the ranks of one plan host, Gloo TCP
//         (mixz/comm/gloo_transport.h) between hosts. On a world spanning several hosts the
//         all-gather is hierarchical: Gloo among the ranks of equal local index (one per node),
//         then shared memory inside each node; the other collectives run over Gloo among all
//         ranks (a full mesh).
//   shm   shared memory only; every rank must be on one host.
//   gloo  Gloo only, also between ranks of one host (for tests and benchmarks).
//
// Groups (group()) are sub-communicators derived from a connected world, with no second exchange
// through JS: every world rank calls group() with the same arguments (a collective of the
// world). A group reuses the world's Gloo connections under its own slot namespace; when its
// members share a host it gets its own shared-memory segment, whose name the group's leader
// publishes through an all-gather over the world.
//   hpz h   consecutive blocks of h ranks: ranks [b·h, (b+1)·h). h must divide the world size and
//           every node's rank count, so that each block lies on one node.
//   cross   the ranks with this rank's local rank, one per node, in rank order.
//
// Collectives are in mixz/comm/collectives.h (options + one free function each). A communicator
// runs one collective at a time; members must call collectives in the same order (shared memory
// detects a mismatch and says so). A communicator whose collective failed with IoError is broken:
// every later call fails at once; rebuild it (a new world, new groups).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "mixz/comm/peer.h"
#include "mixz/comm/reduce.h"
#include "mixz/tensor/dtype.h"

namespace mixz::comm {

class ShmDomain;
class GlooDomain;
class GlooMesh;

enum class Transport : std::uint8_t { kAuto = 0, kShm = 1, kGloo = 2 };

// "auto", "shm", "gloo".
const char* transportName(Transport transport) noexcept;
std::optional<Transport> parseTransport(std::string_view name) noexcept;

enum class GroupKind : std::uint8_t { kWorld = 0, kHpz = 1, kCross = 2 };

// "world", "hpz", "cross".
const char* groupKindName(GroupKind kind) noexcept;

struct PrepareOptions {
    int rank = 0;
    int worldSize = 1;
    // The plan's name of this rank's host; ranks with equal names share memory.
    std::string host;
    // Names this job's shared-memory segments (mixz-<jobId>-…).
    std::string jobId;
    // The ranks on this host, in local-rank order; includes `rank`.
    std::vector<int> localRanks;
    // Bounds connect() and is the default timeout of every collective.
    std::chrono::milliseconds timeout{30000};
    Transport transport = Transport::kAuto;
    // Where this rank's Gloo pairs listen: a name or address of this machine. Empty: `host`.
    std::string bindAddress;
};

class Communicator {
public:
    Communicator();
    ~Communicator();

    Communicator(const Communicator&) = delete;
    Communicator& operator=(const Communicator&) = delete;

    // Phase 1: checks the options, opens this rank's transports and returns its address bytes.
    // Throws InvalidArgument for inconsistent options, IoError when a transport cannot open.
    std::vector<std::uint8_t> prepare(const PrepareOptions& options);

    // Phase 2: `addresses[r]` is what rank r's prepare() returned. Connects the Gloo pairs and maps
    // the shared-memory segment, within the prepare timeout. Throws InvalidArgument when the
    // addresses disagree (other job, world size, transport, host facts) and IoError naming the
    // peer that did not connect.
    void connect(const std::vector<std::vector<std::uint8_t>>& addresses);

    // A sub-communicator of a connected world; every world rank must call it with the same
    // arguments (`h` for kHpz only). Throws InvalidArgument for an impossible group.
    std::unique_ptr<Communicator> group(GroupKind kind, int h, std::uint32_t tag, std::chrono::milliseconds timeout);

    // This rank's index among the members, and the member count.
    int rank() const { return me_; }
    int size() const { return static_cast<int>(members_.size()); }
    // The members, in order, with their world rank, host and pid.
    const std::vector<Peer>& members() const { return members_; }
    GroupKind kind() const { return kind_; }
    // The default timeout of collectives (PrepareOptions::timeout).
    std::chrono::milliseconds defaultTimeout() const { return timeout_; }
    // How collectives travel: "local" (one member), "shm", "gloo", or "shm+gloo" (hierarchical),
    // with shared memory followed by its copy path: " (cma)" when large all-gathers copy once,
    // through the kernel (process_vm_readv), " (two-copy)" when the kernel refused that at connect
    // and every byte goes through the segment. E.g. "shm (cma)", "shm (two-copy)+gloo".
    std::string transportDescription() const;
    bool connected() const { return connected_; }

    // The collectives, as called by the free functions of collectives.h after they validated
    // their options. Byte counts and offsets are per member.
    void allgatherv(const std::uint8_t* input, std::uint8_t* output, const std::vector<std::size_t>& bytes,
                    const OpContext& op);
    void reduceScatter(const std::uint8_t* input, std::uint8_t* output, std::size_t count, tensor::DType dtype,
                       ReduceOp reduceOp, const OpContext& op);
    void allreduce(const std::uint8_t* input, std::uint8_t* output, std::size_t count, tensor::DType dtype,
                   ReduceOp reduceOp, const OpContext& op);
    void broadcast(std::uint8_t* buffer, std::size_t bytes, int root, const OpContext& op);
    void barrier(const OpContext& op);

    // Streamed all-gather, for collectives that transform data on the way without staging it in
    // buffers of their own (mixz/comm/quantized_allgather.h): every member's stream is
    // `streamBytes` long and travels in rounds of `roundBytes`; produce(entry, offset, bytes) writes
    // this member's stream bytes [offset, offset + bytes) into `entry`, consume(member, entry,
    // offset, bytes) reads member's (this member's own included) from `entry`, which is valid only
    // during the call. Over shared memory the entries are the segment's ring entries; with one
    // member, a buffer of this communicator. Rounds of one member come in order.
    using StreamProducer = std::function<void(std::uint8_t* entry, std::size_t offset, std::size_t bytes)>;
    using StreamConsumer =
        std::function<void(int member, const std::uint8_t* entry, std::size_t offset, std::size_t bytes)>;
    // The largest round allgatherStreamed takes; 0 when this communicator cannot stream (Gloo and
    // hierarchical paths): callers then gather a buffer with allgatherv.
    std::size_t streamRoundLimit() const;
    void allgatherStreamed(std::size_t streamBytes, std::size_t roundBytes, const StreamProducer& produce,
                           const StreamConsumer& consume, const OpContext& op);

    // Fails this communicator: peers blocked on this rank in shared memory fail at once with
    // `reason`, and so does this rank's own shared-memory collective in flight; every later call
    // here fails. A Gloo wait in flight ends at its timeout. Idempotent; callable from any thread.
    void abort(const std::string& reason);

    struct World;

private:
    enum class Path { kLocal, kShm, kGloo, kMixed };

    // Runs `body` under the collective lock; on any exception marks the communicator broken
    // (after telling shared-memory peers) and rethrows.
    template <typename Body>
    void run(const OpContext& op, Body&& body);
    void requireConnected(const char* what) const;
    void markBroken(const std::string& reason);
    std::string brokenReason() const;

    std::shared_ptr<World> world_;
    GroupKind kind_ = GroupKind::kWorld;
    std::vector<Peer> members_;
    int me_ = 0;
    std::uint16_t commId_ = 0;
    std::chrono::milliseconds timeout_{30000};
    Path path_ = Path::kLocal;
    bool prepared_ = false;
    bool connected_ = false;

    std::unique_ptr<ShmDomain> shm_;   // kShm: every member; kMixed: this node's members
    std::unique_ptr<GlooDomain> gloo_; // kGloo, kMixed: every member
    std::unique_ptr<GlooDomain> cross_; // kMixed with equal nodes: the members of equal local index
    // kMixed: the world ranks of each local index (the cross groups), for the hierarchical all-gather.
    std::vector<std::vector<int>> crossMembers_;
    std::vector<int> nodeMembers_; // kMixed: member indices on this node, in order
    std::vector<std::uint8_t> localRound_; // kLocal: the entry of allgatherStreamed

    std::mutex mutex_; // one collective at a time
    mutable std::mutex brokenMutex_;
    std::string broken_; // why this communicator failed; empty while it works
};

} // namespace mixz::comm
