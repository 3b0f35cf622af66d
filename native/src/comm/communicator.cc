// One file on purpose (just over 600 lines): the communicator's two-phase construction (prepare
// → connect), its groups and its collectives all decide, in one place, which transport (shm inside
// a host, Gloo across, CMA or not) carries each member pair; splitting it would scatter that choice.
#include "mixz/comm/communicator.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>

#include "mixz/comm/address.h"
#include "mixz/comm/gloo_transport.h"
#include "mixz/comm/shm_transport.h"
#include "mixz/common/error.h"

namespace mixz::comm {

namespace {
// The tag of the barrier that ends connect(): outside the range JS hands out (tags are 32-bit, the
// engine's and the benchmarks' are small).
constexpr std::uint32_t kConnectBarrierTag = 0xFFFFFFF0u;
} // namespace

// What the world communicator and every group derived from it share.
struct Communicator::World {
    PrepareOptions options;
    std::vector<Peer> peers;                 // by world rank
    std::vector<int> localIndex;             // by world rank: position among the ranks of its host
    std::vector<int> node;                   // by world rank: index of its host, in order of first rank
    std::vector<std::vector<int>> nodeRanks; // world ranks of each node, in order
    std::shared_ptr<GlooMesh> mesh;          // null when no rank pair talks over Gloo
    ShmConfig shmConfig;
    std::uint16_t nextCommId = 1;
};

namespace {

std::string readBootId() {
    std::ifstream in("/proc/sys/kernel/random/boot_id");
    std::string id;
    std::getline(in, id);
    return id;
}

std::string listRanks(const std::vector<int>& ranks) {
    std::string text = "[";
    for (std::size_t i = 0; i < ranks.size(); ++i) text += (i == 0 ? "" : ", ") + std::to_string(ranks[i]);
    return text + "]";
}

// The name length /dev/shm allows leaves room for a job id of 64 characters.
constexpr std::size_t kGroupRecordBytes = 192;

} // namespace

const char* transportName(Transport transport) noexcept {
    switch (transport) {
        case Transport::kAuto: return "auto";
        case Transport::kShm: return "shm";
        case Transport::kGloo: return "gloo";
    }
    return "?";
}

std::optional<Transport> parseTransport(std::string_view name) noexcept {
    if (name == "auto") return Transport::kAuto;
    if (name == "shm") return Transport::kShm;
    if (name == "gloo") return Transport::kGloo;
    return std::nullopt;
}

const char* groupKindName(GroupKind kind) noexcept {
    switch (kind) {
        case GroupKind::kWorld: return "world";
        case GroupKind::kHpz: return "hpz";
        case GroupKind::kCross: return "cross";
    }
    return "?";
}

Communicator::Communicator() = default;

// Members are destroyed in reverse order: domains (marking this rank as gone in shared memory and
// closing nothing of the mesh) before the World, whose mesh closes the pairs last.
Communicator::~Communicator() = default;

std::string Communicator::transportDescription() const {
    const std::string shm = shm_ && shm_->cma() ? "shm (cma)" : "shm (two-copy)";
    switch (path_) {
        case Path::kLocal: return "local";
        case Path::kShm: return shm;
        case Path::kGloo: return "gloo";
        // Hierarchical when this node has several ranks (shared memory) and nodes are equal.
        case Path::kMixed: return cross_ && shm_ ? shm + "+gloo" : "gloo";
    }
    return "?";
}

namespace {

// The all-gather outputs (total bytes) that shared memory copies once, through the kernel, when
// it may: [MIXZ_SHM_CMA_BYTES, MIXZ_SHM_CMA_MAX_BYTES), by default [2 MiB, 32 MiB). Below, the
// rings win: pinning the peer's pages and a system call per peer cost more than a second copy of
// data that stays in cache. Above, the rings win again (measured on the 2-core development VM,
// N = 2: single copy +15-25 % at 2-16 MiB, even at 32 MiB, 25 % slower at 64-256 MiB): the ring
// entries stay in cache, so their second copy is nearly free, while the kernel's copy writes the
// output with ordinary stores and pins every page. Every member decides alike (the total is the
// same on all of them).
std::size_t envBytes(const char* name, std::size_t fallback) {
    if (const char* text = std::getenv(name); text != nullptr && *text != '\0') {
        return static_cast<std::size_t>(std::strtoull(text, nullptr, 10));
    }
    return fallback;
}

bool useCma(std::size_t totalBytes) {
    static const std::size_t low = envBytes("MIXZ_SHM_CMA_BYTES", std::size_t{2} << 20);
    static const std::size_t high = envBytes("MIXZ_SHM_CMA_MAX_BYTES", std::size_t{32} << 20);
    return totalBytes >= low && totalBytes < high;
}

// The round of allgatherStreamed on a one-member communicator: large enough to amortize the
// calls, small enough that produce's output is still in L2 when consume reads it.
constexpr std::size_t kLocalRoundBytes = 256 * 1024;

} // namespace

void Communicator::requireConnected(const char* what) const {
    if (!connected_) MIXZ_THROW(InvalidArgument, what, ": the communicator is not connected (call connect() first)");
}

std::vector<std::uint8_t> Communicator::prepare(const PrepareOptions& options) {
    if (prepared_) MIXZ_THROW(InvalidArgument, "prepare() was already called on this communicator");
    if (options.worldSize < 1) MIXZ_THROW(InvalidArgument, "worldSize must be at least 1, got ", options.worldSize);
    if (options.rank < 0 || options.rank >= options.worldSize) {
        MIXZ_THROW(InvalidArgument, "rank ", options.rank, " is outside the world of ", options.worldSize);
    }
    if (options.host.empty()) MIXZ_THROW(InvalidArgument, "host must not be empty");
    if (options.jobId.empty()) MIXZ_THROW(InvalidArgument, "jobId must not be empty");
    if (options.timeout.count() <= 0) MIXZ_THROW(InvalidArgument, "timeout must be positive");
    const std::vector<int>& local = options.localRanks;
    if (std::find(local.begin(), local.end(), options.rank) == local.end()) {
        MIXZ_THROW(InvalidArgument, "localRanks ", listRanks(local), " must include this rank ", options.rank);
    }
    for (std::size_t i = 0; i < local.size(); ++i) {
        if (local[i] < 0 || local[i] >= options.worldSize || (i > 0 && local[i] <= local[i - 1])) {
            MIXZ_THROW(InvalidArgument, "localRanks ", listRanks(local),
                       " must be distinct ranks of the world in increasing order");
        }
    }
    const bool singleHost = static_cast<int>(local.size()) == options.worldSize;
    if (options.transport == Transport::kShm && !singleHost) {
        MIXZ_THROW(InvalidArgument, "transport 'shm' needs every rank on one host, but host ", options.host, " has ",
                   local.size(), " of ", options.worldSize, " ranks; use 'auto' or 'gloo'");
    }

    world_ = std::make_shared<World>();
    world_->options = options;
    world_->shmConfig = ShmConfig::fromEnvironment(local.size());
    kind_ = GroupKind::kWorld;
    timeout_ = options.timeout;
    commId_ = 0;
    if (options.worldSize == 1) {
        path_ = Path::kLocal;
    } else if (options.transport == Transport::kGloo) {
        path_ = Path::kGloo;
    } else if (singleHost) {
        path_ = Path::kShm;
    } else {
        path_ = Path::kMixed;
    }

    RankAddress address;
    address.rank = options.rank;
    address.worldSize = options.worldSize;
    address.pid = getpid();
    address.transport = static_cast<std::uint32_t>(options.transport);
    address.host = options.host;
    address.jobId = options.jobId;
    address.bootId = readBootId();
    address.pairs.resize(static_cast<std::size_t>(options.worldSize));

    if (path_ == Path::kGloo || path_ == Path::kMixed) {
        world_->mesh = std::make_shared<GlooMesh>(options.rank, options.worldSize,
                                                  options.bindAddress.empty() ? options.host : options.bindAddress,
                                                  options.timeout);
        for (int peer = 0; peer < options.worldSize; ++peer) {
            if (peer != options.rank) address.pairs[peer] = world_->mesh->preparePair(peer);
        }
    }
    const bool needsShm = (path_ == Path::kShm || path_ == Path::kMixed) && local.size() > 1;
    if (needsShm && local.front() == options.rank) {
        std::vector<Peer> members;
        for (int r : local) members.push_back(Peer{r, options.host, 0});
        shm_ = ShmDomain::create(ShmDomain::makeName(options.jobId, options.rank), std::move(members), 0,
                                 world_->shmConfig);
        address.shmName = shm_->name();
    }
    prepared_ = true;
    return encodeAddress(address);
}

void Communicator::connect(const std::vector<std::vector<std::uint8_t>>& addresses) {
    if (!prepared_ || kind_ != GroupKind::kWorld) MIXZ_THROW(InvalidArgument, "connect() needs prepare() first");
    if (connected_) MIXZ_THROW(InvalidArgument, "connect() was already called on this communicator");
    if (const std::string broken = brokenReason(); !broken.empty()) {
        MIXZ_THROW(IoError, "connect: this communicator failed earlier (", broken, ")");
    }
    const PrepareOptions& options = world_->options;
    const int n = options.worldSize;
    if (static_cast<int>(addresses.size()) != n) {
        MIXZ_THROW(InvalidArgument, "connect() needs one address per rank of the world (", n, "), got ",
                   addresses.size());
    }
    std::vector<RankAddress> decoded;
    decoded.reserve(addresses.size());
    for (int r = 0; r < n; ++r) {
        RankAddress address = decodeAddress(addresses[r], detail::concat("address of rank ", r));
        if (address.rank != r) {
            MIXZ_THROW(InvalidArgument, "addresses[", r, "] is the address of rank ", address.rank,
                       ": the exchange must return the addresses in rank order");
        }
        if (address.worldSize != n) {
            MIXZ_THROW(InvalidArgument, "rank ", r, " (host ", address.host, ") has a world of ", address.worldSize,
                       " ranks, this rank ", n);
        }
        if (address.jobId != options.jobId) {
            MIXZ_THROW(InvalidArgument, "rank ", r, " (host ", address.host, ") belongs to job '", address.jobId,
                       "', this rank to '", options.jobId, "'");
        }
        if (address.transport != static_cast<std::uint32_t>(options.transport)) {
            MIXZ_THROW(InvalidArgument, "rank ", r, " (host ", address.host, ") asked for transport '",
                       transportName(static_cast<Transport>(address.transport)), "', this rank for '",
                       transportName(options.transport), "'");
        }
        decoded.push_back(std::move(address));
    }

    World& world = *world_;
    world.peers.resize(n);
    world.localIndex.assign(n, 0);
    world.node.assign(n, 0);
    world.nodeRanks.clear();
    std::vector<std::string> hosts;
    for (int r = 0; r < n; ++r) {
        world.peers[r] = Peer{r, decoded[r].host, decoded[r].pid};
        auto it = std::find(hosts.begin(), hosts.end(), decoded[r].host);
        if (it == hosts.end()) {
            hosts.push_back(decoded[r].host);
            world.nodeRanks.emplace_back();
            it = hosts.end() - 1;
        }
        const int node = static_cast<int>(it - hosts.begin());
        world.node[r] = node;
        world.localIndex[r] = static_cast<int>(world.nodeRanks[node].size());
        world.nodeRanks[node].push_back(r);
    }
    const std::vector<int>& sameHost = world.nodeRanks[world.node[options.rank]];
    if (sameHost != options.localRanks) {
        MIXZ_THROW(InvalidArgument, "localRanks ", listRanks(options.localRanks), " disagree with the addresses: ranks ",
                   listRanks(sameHost), " say they run on host ", options.host);
    }
    const std::string& bootId = decoded[options.rank].bootId;
    for (int r : sameHost) {
        if (!bootId.empty() && !decoded[r].bootId.empty() && decoded[r].bootId != bootId) {
            MIXZ_THROW(InvalidArgument, "rank ", r, " claims host ", options.host,
                       " but runs on another machine (its boot id differs): ranks of one plan host must share "
                       "a machine");
        }
    }

    members_ = world.peers;
    me_ = options.rank;
    const OpContext op(OpKind::kConnect, 0, options.timeout);
    try {
        const bool needsShm = (path_ == Path::kShm || path_ == Path::kMixed) && sameHost.size() > 1;
        if (needsShm) {
            std::vector<Peer> members;
            int mine = 0;
            for (std::size_t i = 0; i < sameHost.size(); ++i) {
                members.push_back(world.peers[sameHost[i]]);
                if (sameHost[i] == options.rank) mine = static_cast<int>(i);
            }
            if (!shm_) {
                const std::string& name = decoded[sameHost.front()].shmName;
                if (name.empty()) {
                    MIXZ_THROW(InvalidArgument, "rank ", sameHost.front(), " (host ", options.host,
                               ") created no shared-memory segment although it leads that host");
                }
                shm_ = ShmDomain::open(name, std::move(members), mine, world.shmConfig);
            }
            shm_->waitAttached(op);
        }
        if (world.mesh) {
            for (int r = 0; r < n; ++r) {
                if (r == options.rank) continue;
                const std::vector<std::uint8_t>& theirs = decoded[r].pairs[options.rank];
                if (theirs.empty()) {
                    MIXZ_THROW(InvalidArgument, "rank ", r, " (host ", decoded[r].host,
                               ") prepared no Gloo connection for this rank");
                }
                world.mesh->connectPair(world.peers[r], theirs, op);
            }
        }
    } catch (const std::exception& error) {
        markBroken(error.what());
        if (shm_) shm_->abort(error.what());
        throw;
    }

    if (path_ == Path::kGloo || path_ == Path::kMixed) {
        gloo_ = std::make_unique<GlooDomain>(world.mesh, members_, me_, commId_);
    }
    if (path_ == Path::kMixed) {
        nodeMembers_ = sameHost;
        bool equalNodes = true;
        for (const auto& ranks : world.nodeRanks) equalNodes = equalNodes && ranks.size() == sameHost.size();
        if (equalNodes) {
            crossMembers_.assign(sameHost.size(), {});
            for (const auto& ranks : world.nodeRanks) {
                for (std::size_t l = 0; l < ranks.size(); ++l) crossMembers_[l].push_back(ranks[l]);
            }
            const std::vector<int>& mine = crossMembers_[world.localIndex[me_]];
            std::vector<Peer> crossPeers;
            int myIndex = 0;
            for (std::size_t i = 0; i < mine.size(); ++i) {
                crossPeers.push_back(world.peers[mine[i]]);
                if (mine[i] == me_) myIndex = static_cast<int>(i);
            }
            cross_ = std::make_unique<GlooDomain>(world.mesh, std::move(crossPeers), myIndex, commId_);
        }
    }
    // A member returns from connect() only once every member has connected all of its Gloo pairs.
    // Without this, a member whose pairs are done can be torn down at once (a collective that
    // moves nothing, a crash) and close sockets a peer is still handshaking on: that peer's connect
    // then fails with "connection reset by peer" (measured: 2 of 12 runs of
    // native/test/quantized_allgather_test.cc; Debian's Gloo 0.5 has no connect retry). Shared
    // memory needs none (waitAttached already waits for every member), and the barrier goes
    // straight to Gloo so it is not counted among the collectives the user's calls are numbered by.
    if (gloo_ && n > 1) {
        try {
            gloo_->barrier(OpContext(OpKind::kConnect, kConnectBarrierTag, options.timeout));
        } catch (const std::exception& error) {
            markBroken(error.what());
            if (shm_) shm_->abort(error.what());
            throw;
        }
    }
    connected_ = true;
}

std::unique_ptr<Communicator> Communicator::group(GroupKind kind, int h, std::uint32_t tag,
                                                  std::chrono::milliseconds timeout) {
    requireConnected("group");
    if (kind_ != GroupKind::kWorld) MIXZ_THROW(InvalidArgument, "groups are made from the world communicator");
    if (timeout.count() <= 0) MIXZ_THROW(InvalidArgument, "group: timeout must be positive");
    const World& world = *world_;
    const int n = size();
    std::vector<int> ranks;
    if (kind == GroupKind::kHpz) {
        if (h < 1 || n % h != 0) MIXZ_THROW(InvalidArgument, "hpZ group size ", h, " does not divide world size ", n);
        for (std::size_t node = 0; node < world.nodeRanks.size(); ++node) {
            const std::size_t count = world.nodeRanks[node].size();
            if (count % static_cast<std::size_t>(h) != 0) {
                MIXZ_THROW(InvalidArgument, "hpZ group size ", h, " does not divide the ", count, " rank(s) of host ",
                           world.peers[world.nodeRanks[node].front()].host,
                           ": an hpZ group must lie within one node");
            }
        }
        const int first = me_ / h * h;
        for (int r = first; r < first + h; ++r) {
            if (world.node[r] != world.node[first]) {
                MIXZ_THROW(InvalidArgument, "hpZ group of ranks ", first, "..", first + h - 1, " spans hosts ",
                           world.peers[first].host, " and ", world.peers[r].host,
                           ": ranks must be numbered node by node");
            }
            ranks.push_back(r);
        }
    } else if (kind == GroupKind::kCross) {
        for (int r = 0; r < n; ++r) {
            if (world.localIndex[r] == world.localIndex[me_]) ranks.push_back(r);
        }
    } else {
        MIXZ_THROW(InvalidArgument, "group kind must be hpz or cross");
    }

    std::unique_ptr<Communicator> group(new Communicator());
    group->world_ = world_;
    group->kind_ = kind;
    group->timeout_ = timeout_;
    group->commId_ = world_->nextCommId++;
    group->prepared_ = true;
    bool sameHost = true;
    for (int r : ranks) {
        group->members_.push_back(world.peers[r]);
        if (r == me_) group->me_ = static_cast<int>(group->members_.size() - 1);
        sameHost = sameHost && world.node[r] == world.node[me_];
    }
    if (ranks.size() == 1) {
        group->path_ = Path::kLocal;
    } else if (world.options.transport == Transport::kGloo || !sameHost) {
        MIXZ_ENFORCE(world.mesh != nullptr, "a group across hosts needs the world's Gloo connections");
        group->path_ = Path::kGloo;
    } else {
        group->path_ = Path::kShm;
    }

    // Every world rank takes part in one all-gather of fixed-size records: the leaders of
    // shared-memory groups publish their segment's name in theirs.
    const OpContext op(OpKind::kGroup, tag, timeout);
    std::exception_ptr createFailed;
    if (group->path_ == Path::kShm && group->me_ == 0) {
        try {
            group->shm_ = ShmDomain::create(ShmDomain::makeName(world.options.jobId, me_), group->members_, 0,
                                            ShmConfig::fromEnvironment(ranks.size()));
        } catch (...) {
            // Still take part in the exchange (with an empty record), so that the other members
            // fail at once instead of waiting for this rank until the timeout.
            createFailed = std::current_exception();
        }
    }
    std::vector<std::uint8_t> records(kGroupRecordBytes * static_cast<std::size_t>(n), 0);
    std::vector<std::uint8_t> mine(kGroupRecordBytes, 0);
    if (group->shm_) {
        const std::string& name = group->shm_->name();
        MIXZ_ENFORCE(name.size() < kGroupRecordBytes, "segment name too long: ", name);
        std::memcpy(mine.data(), name.data(), name.size());
    }
    allgatherv(mine.data(), records.data(), std::vector<std::size_t>(n, kGroupRecordBytes), op);
    if (createFailed) std::rethrow_exception(createFailed);

    if (group->path_ == Path::kShm) {
        if (!group->shm_) {
            const char* record = reinterpret_cast<const char*>(records.data() + kGroupRecordBytes * ranks.front());
            const std::string name(record, strnlen(record, kGroupRecordBytes));
            if (name.empty()) {
                MIXZ_THROW(InvalidArgument, "group: rank ", ranks.front(),
                           " published no shared-memory segment for its group; every rank must create the same "
                           "groups in the same order");
            }
            group->shm_ = ShmDomain::open(name, group->members_, group->me_, ShmConfig::fromEnvironment(ranks.size()));
        }
        group->shm_->waitAttached(op);
    } else if (group->path_ == Path::kGloo) {
        group->gloo_ = std::make_unique<GlooDomain>(world.mesh, group->members_, group->me_, group->commId_);
    }
    group->connected_ = true;
    return group;
}

template <typename Body>
void Communicator::run(const OpContext& op, Body&& body) {
    std::lock_guard<std::mutex> lock(mutex_);
    requireConnected(opKindName(op.kind));
    if (const std::string broken = brokenReason(); !broken.empty()) {
        throw IoError(detail::concat(op.label(), ": this communicator failed earlier and must be rebuilt (", broken,
                                     ")"));
    }
    try {
        body();
    } catch (const std::exception& error) {
        markBroken(error.what());
        if (shm_) shm_->abort(error.what());
        throw;
    }
}

void Communicator::abort(const std::string& reason) {
    // Not under the collective lock: a collective in flight is what an abort may have to end.
    markBroken(reason);
    if (shm_) shm_->abort(reason);
}

void Communicator::markBroken(const std::string& reason) {
    std::lock_guard<std::mutex> lock(brokenMutex_);
    if (broken_.empty()) broken_ = reason;
}

std::string Communicator::brokenReason() const {
    std::lock_guard<std::mutex> lock(brokenMutex_);
    return broken_;
}

void Communicator::allgatherv(const std::uint8_t* input, std::uint8_t* output, const std::vector<std::size_t>& bytes,
                              const OpContext& op) {
    MIXZ_ENFORCE_EQ(bytes.size(), members_.size(), "one byte count per member");
    std::vector<std::size_t> offsets(bytes.size());
    std::size_t offset = 0;
    for (std::size_t m = 0; m < bytes.size(); ++m) {
        offsets[m] = offset;
        offset += bytes[m];
    }
    run(op, [&] {
        switch (path_) {
            case Path::kLocal:
                if (output + offsets[me_] != input && bytes[me_] > 0) std::memcpy(output + offsets[me_], input, bytes[me_]);
                break;
            case Path::kShm: {
                if (shm_->cma() && useCma(offset)) {
                    std::vector<ShmRange> direct(bytes.size());
                    for (std::size_t m = 0; m < bytes.size(); ++m) direct[m] = {offsets[m], bytes[m]};
                    shm_->allgatherDirect(output, direct, input, op);
                    break;
                }
                std::vector<std::vector<ShmRange>> ranges(bytes.size());
                for (std::size_t m = 0; m < bytes.size(); ++m) ranges[m].push_back({offsets[m], bytes[m]});
                shm_->allgather(output, ranges, {input}, op);
                break;
            }
            case Path::kGloo: gloo_->allgatherv(output, offsets, bytes, input, op); break;
            case Path::kMixed: {
                if (!cross_) {
                    gloo_->allgatherv(output, offsets, bytes, input, op);
                    break;
                }
                // Hierarchical: first among the ranks of this local index, one per node (Gloo)...
                const World& world = *world_;
                const int local = world.localIndex[me_];
                std::vector<std::size_t> crossOffsets, crossBytes;
                for (int r : crossMembers_[local]) {
                    crossOffsets.push_back(offsets[r]);
                    crossBytes.push_back(bytes[r]);
                }
                cross_->allgatherv(output, crossOffsets, crossBytes, input, op, 3);
                // ...then inside the node (shared memory): local rank l passes on what its cross
                // group gathered, straight from the output, to every other rank of the node.
                if (shm_) {
                    std::vector<std::vector<ShmRange>> ranges(crossMembers_.size());
                    for (std::size_t l = 0; l < crossMembers_.size(); ++l) {
                        for (int r : crossMembers_[l]) ranges[l].push_back({offsets[r], bytes[r]});
                    }
                    std::vector<const std::uint8_t*> sources;
                    for (int r : crossMembers_[local]) sources.push_back(output + offsets[r]);
                    shm_->allgather(output, ranges, sources, op);
                }
                break;
            }
        }
    });
}

std::size_t Communicator::streamRoundLimit() const {
    if (path_ == Path::kLocal) return kLocalRoundBytes;
    if (path_ == Path::kShm) return shm_->entryBytes();
    return 0;
}

void Communicator::allgatherStreamed(std::size_t streamBytes, std::size_t roundBytes, const StreamProducer& produce,
                                     const StreamConsumer& consume, const OpContext& op) {
    const std::size_t limit = streamRoundLimit();
    MIXZ_ENFORCE(roundBytes > 0 && roundBytes <= limit, "allgatherStreamed: round of ", roundBytes,
                 " bytes, limit ", limit);
    run(op, [&] {
        if (path_ == Path::kShm) {
            shm_->allgatherStreamed(streamBytes, roundBytes, produce, consume, op);
            return;
        }
        if (localRound_.size() < roundBytes) localRound_.resize(roundBytes);
        for (std::size_t offset = 0; offset < streamBytes; offset += roundBytes) {
            const std::size_t bytes = std::min(roundBytes, streamBytes - offset);
            produce(localRound_.data(), offset, bytes);
            consume(0, localRound_.data(), offset, bytes);
        }
    });
}

void Communicator::reduceScatter(const std::uint8_t* input, std::uint8_t* output, std::size_t count,
                                 tensor::DType dtype, ReduceOp reduceOp, const OpContext& op) {
    const int n = size();
    run(op, [&] {
        if (path_ == Path::kLocal) {
            const void* sources[1] = {input};
            reduce(dtype, reduceOp, output, sources, 1, count, 1);
            return;
        }
        std::vector<std::size_t> counts(n, count), displs(n);
        for (int m = 0; m < n; ++m) displs[m] = count * static_cast<std::size_t>(m);
        if (path_ == Path::kShm) {
            shm_->reduceScatter(input, output, counts, displs, dtype, reduceOp, op);
        } else {
            gloo_->reduceScatter(input, output, counts, displs, dtype, reduceOp, op);
        }
    });
}

void Communicator::allreduce(const std::uint8_t* input, std::uint8_t* output, std::size_t count, tensor::DType dtype,
                             ReduceOp reduceOp, const OpContext& op) {
    run(op, [&] {
        if (path_ == Path::kLocal) {
            const void* sources[1] = {input};
            reduce(dtype, reduceOp, output, sources, 1, count, 1);
        } else if (path_ == Path::kShm) {
            shm_->allreduce(input, output, count, dtype, reduceOp, op);
        } else {
            gloo_->allreduce(input, output, count, dtype, reduceOp, op);
        }
    });
}

void Communicator::broadcast(std::uint8_t* buffer, std::size_t bytes, int root, const OpContext& op) {
    run(op, [&] {
        if (path_ == Path::kShm) {
            shm_->broadcast(buffer, bytes, root, op);
        } else if (path_ == Path::kGloo || path_ == Path::kMixed) {
            gloo_->broadcast(buffer, bytes, root, op);
        }
    });
}

void Communicator::barrier(const OpContext& op) {
    run(op, [&] {
        if (path_ == Path::kShm) {
            shm_->barrier(op);
        } else if (path_ == Path::kGloo || path_ == Path::kMixed) {
            gloo_->barrier(op);
        }
    });
}

} // namespace mixz::comm
