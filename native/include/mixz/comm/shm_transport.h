// The shared-memory transport: collectives among the members of a communicator that run on one
// host, through one segment under /dev/shm that every member maps.
//
// Vocabulary (used in names throughout shm_transport.cc):
//
//   segment   /dev/shm/mixz-<jobId>-<leader rank>-<pid>-<random>: created by the leader (member 0),
//             mapped by every member, and unlinked by whichever member maps it last, so that once
//             a communicator is connected nothing is left in /dev/shm even if every process is
//             SIGKILLed. Error paths (a member that never attaches, a failed connect) unlink it too.
//   member    one rank of the communicator on this host, index 0..n-1 in rank order.
//   stream    the bytes one member sends in one collective. Streams are cut into rounds.
//   round     up to `entryBytes` of one stream, staged in one entry of the writer's ring. Rounds
//             are numbered per writer for the life of the segment (never reset), so two members
//             always agree on which round is which: after every collective each member has read
//             every round every other member wrote.
//   ring      each member's `entries` entries; round r lives in entry r % entries. A writer reuses
//             an entry only after every reader has consumed the round in it (a `consumed` counter
//             per reader and writer), so a writer runs at most `entries` rounds ahead.
//
// Single copy per direction: a writer copies its data once into its ring and every reader copies
// it out once, directly into its output (an all-gather's own chunk is copied to the output from
// the entry just written, while it is still in cache). Rounds pipeline the two: readers copy round
// r while the writer fills round r+1.
//
// Single copy (CMA): at connect every member checks that it may read every other member's memory
// with process_vm_readv (the kernel refuses under Yama ptrace_scope, in many containers; members
// decline when they outnumber the CPUs, and when MIXZ_SHM_CMA=0), and the members agree. Where all may, large all-gathers skip the rings: each
// member publishes the address of its input and every other member copies it straight into its
// output (allgatherDirect), one copy per byte instead of two.
//
// Waiting: spin briefly (when there are no more members than CPUs), then sleep on a futex word
// in the waiter's control block (`doorbell`); publishers wake only members that announced they
// sleep. Counters use release stores and acquire loads; the sleep handshake uses seq_cst fences.
// Waits never pass the collective's deadline. A member that fails marks itself aborted (with its
// reason) and wakes everyone, so the others fail at once instead of timing out; a member whose
// process dies is seen at once by a watcher thread, through a robust futex (see watch()).
#pragma once

#include <linux/futex.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "mixz/comm/peer.h"
#include "mixz/comm/reduce.h"
#include "mixz/tensor/dtype.h"

namespace mixz::comm {

struct ShmConfig {
    // Bytes of data one round carries (a multiple of 4096); 1 MiB when members outnumber CPUs.
    std::size_t entryBytes = 256 * 1024;
    // Ring depth per member (at least 2).
    std::uint32_t entries = 4;
    // Busy-wait before sleeping on the futex.
    std::chrono::microseconds spin{50};

    // Defaults, overridden by MIXZ_SHM_ENTRY_KIB, MIXZ_SHM_ENTRIES and MIXZ_SHM_SPIN_US; the spin is
    // 0 when the host has fewer CPUs than `members` (spinning would steal the CPU a peer needs).
    // The leader's values count: they are stored in the segment.
    static ShmConfig fromEnvironment(std::size_t members);
};

// A byte range of an all-gather's output.
struct ShmRange {
    std::size_t offset = 0;
    std::size_t bytes = 0;
};

// Streamed all-gather callbacks (ShmDomain::allgatherStreamed): produce writes `bytes` bytes of
// this member's stream, starting at stream offset `offset`, into `entry`; consume reads `bytes`
// bytes of `member`'s stream at `offset` from `entry` (valid only during the call).
using ShmProducer = std::function<void(std::uint8_t* entry, std::size_t offset, std::size_t bytes)>;
using ShmConsumer = std::function<void(int member, const std::uint8_t* entry, std::size_t offset, std::size_t bytes)>;

class ShmDomain {
public:
    // The leader (member 0) creates the segment. `members` lists every member (pid may be 0 until
    // attach); `me` is this member's index. Throws IoError when /dev/shm refuses.
    static std::unique_ptr<ShmDomain> create(const std::string& name, std::vector<Peer> members, int me,
                                             const ShmConfig& config);
    // The other members open the leader's segment by name.
    static std::unique_ptr<ShmDomain> open(const std::string& name, std::vector<Peer> members, int me,
                                           const ShmConfig& config);

    // Marks this member as having left (peers blocked on it fail at once), stops the watcher,
    // unmaps, and unlinks the name if it is still there.
    ~ShmDomain();

    ShmDomain(const ShmDomain&) = delete;
    ShmDomain& operator=(const ShmDomain&) = delete;

    // A segment name for this job and leader: "/mixz-<jobId>-<leaderRank>-<pid>-<16 hex digits>",
    // with characters of jobId other than [A-Za-z0-9_.-] replaced by '_' and jobId cut to 64.
    static std::string makeName(const std::string& jobId, int leaderRank);

    // Waits until every member has mapped the segment (the last one unlinks its name) and starts
    // the watcher. On timeout names the members that did not attach and unlinks the name.
    void waitAttached(const OpContext& op);

    const std::string& name() const { return name_; }
    int size() const { return static_cast<int>(members_.size()); }
    int me() const { return me_; }
    const std::vector<Peer>& members() const { return members_; }

    // All-gather of byte ranges: member m streams the bytes of ranges[m] (offsets into `output`);
    // every member copies every other member's ranges into its own output at the same offsets.
    // This member's bytes are read from sources[i] for ranges[me][i] and also copied to the
    // output, unless sources[i] already is output + offset (in place).
    void allgather(std::uint8_t* output, const std::vector<std::vector<ShmRange>>& ranges,
                   const std::vector<const std::uint8_t*>& sources, const OpContext& op);

    // All-gather without an output buffer of bytes: every member's stream is `streamBytes` long
    // and travels in rounds of `roundBytes` (≤ entryBytes()); produce fills this member's rounds
    // straight in its ring entries and consume reads every member's rounds (its own too) straight
    // from them. For callers that transform the data on the way (the qwZ all-gather quantizes
    // into the entries and dequantizes out of them).
    void allgatherStreamed(std::size_t streamBytes, std::size_t roundBytes, const ShmProducer& produce,
                           const ShmConsumer& consume, const OpContext& op);

    // Whether every member may read every other member's memory (decided at connect).
    bool cma() const { return cma_; }

    // All-gather of one range per member by single copy; needs cma(). Member m's bytes go to
    // output + ranges[m].offset; this member's come from `source` (may be in place).
    void allgatherDirect(std::uint8_t* output, const std::vector<ShmRange>& ranges, const std::uint8_t* source,
                         const OpContext& op);

    // Bytes one ring entry holds: the largest round of allgatherStreamed.
    std::size_t entryBytes() const { return config_.entryBytes; }

    // Reduce-scatter: input holds sum(counts) elements, chunk d at element displs[d]; this member
    // receives the reduction of every member's chunk me into output (counts[me] elements). output
    // may be input's chunk me (in place).
    void reduceScatter(const std::uint8_t* input, std::uint8_t* output, const std::vector<std::size_t>& counts,
                       const std::vector<std::size_t>& displs, tensor::DType dtype, ReduceOp reduceOp,
                       const OpContext& op);

    // All-reduce of `count` elements: reduce-scatter into output's chunks, then all-gather of them.
    // output may be input.
    void allreduce(const std::uint8_t* input, std::uint8_t* output, std::size_t count, tensor::DType dtype,
                   ReduceOp reduceOp, const OpContext& op);

    // Copies member `root`'s buffer into everyone's.
    void broadcast(std::uint8_t* buffer, std::size_t bytes, int root, const OpContext& op);

    // Returns once every member has entered this barrier.
    void barrier(const OpContext& op);

    // Marks this member as aborted with `reason` and wakes every member: peers blocked on this one
    // fail with "<rank> gave up: <reason>", and a collective of this member in flight fails too.
    // Idempotent; may be called from another thread than the one running a collective.
    void abort(const std::string& reason);

    struct Layout;
    struct Control;

private:
    ShmDomain(std::string name, std::vector<Peer> members, int me);

    void map(int fd, std::size_t bytes);
    void attach();
    std::uint64_t beginOp(const OpContext& op);
    void probeCma(const OpContext& op);
    // process_vm_readv of `bytes` at `address` of member `writer` into target, in slices, checking
    // the writer's health, this rank's abort and the deadline between slices.
    void readPeer(const OpContext& op, int writer, std::uint8_t* target, std::uint64_t address, std::size_t bytes);
    // InvalidArgument: `writer` runs a single-copy gather where this member runs a ring collective.
    [[noreturn]] void throwCmaMismatch(const OpContext& op, int writer) const;
    template <typename Produce, typename Consume>
    void streamRounds(const std::vector<std::size_t>& total, std::size_t roundBytes, Produce produce, Consume consume,
                      const OpContext& op);

    // Ring bookkeeping.
    bool ringHasSpace() const;
    int slowestReader() const;
    std::uint8_t* writeEntry(const OpContext& op);
    void publishWrite();
    bool roundAvailable(int writer, std::uint64_t round) const;
    const std::uint8_t* readEntry(int writer, std::uint64_t round, const OpContext& op) const;
    void publishConsumed(int writer);

    // Waits until blocker() returns -1 (something can progress); blocker() otherwise returns the
    // member this one waits for. pending(m) says whether this collective still needs anything
    // from member m: those are checked for failure, and the timeout names one of them.
    template <typename Blocker, typename Pending>
    void waitFor(const OpContext& op, Blocker blocker, Pending pending, const char* what);
    // Throws IoError naming `member` when it died (deathOnly) or also when it aborted or left.
    void checkMember(const OpContext& op, int member, bool deathOnly = false) const;
    void checkDeath(const OpContext& op, int member) const;
    void wake(int member, bool always = false);
    void wakeAll();

    void startWatcher();
    void stopWatcher();
    void watch();
    bool watchRobust();
    void watchPidfds();
    void markDead(int member);

    std::string name_;
    std::vector<Peer> members_;
    int me_ = 0;
    bool creator_ = false;
    ShmConfig config_;

    std::uint8_t* base_ = nullptr;
    std::size_t mappedBytes_ = 0;
    std::unique_ptr<Layout> layout_;

    // Local mirrors of this member's counters in the segment.
    std::uint64_t opSeq_ = 0;
    std::uint64_t written_ = 0;
    std::vector<std::uint64_t> consumed_;

    bool unlinked_ = false;
    bool cma_ = false;
    std::atomic<bool> aborted_{false};
    std::mutex abortMutex_;

    // Members whose process died, as seen by the watcher. Index = member.
    std::unique_ptr<std::atomic<bool>[]> dead_;
    std::thread watcher_;
    std::atomic<std::uint32_t> stopWord_{0};
    int stopFd_ = -1;
    std::atomic<bool> pidfdWatch_{false};
    // The watcher thread's robust-futex list head (see watch() in shm_transport.cc).
    struct robust_list_head robustHead_ {};
};

} // namespace mixz::comm
