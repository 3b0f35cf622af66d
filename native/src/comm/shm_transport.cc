// One file on purpose (over 600 lines): the shared-memory transport is one wire protocol. The
// segment layout, the ring entries and their sequence counters, the futex waits and wakes, the
// liveness watcher and the collectives that use them share invariants (who may write an entry
// when, who unlinks the segment, what a dead member's robust futex means) that must be read together.
#include "mixz/comm/shm_transport.h"

#include <fcntl.h>
#include <linux/futex.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <new>
#include <random>

#include "mixz/comm/copy.h"
#include "mixz/common/error.h"

namespace mixz::comm {

namespace {

constexpr std::uint64_t kMagic = 0x315a58494d4d4853ull; // "SHMMIXZ1"
constexpr std::uint32_t kVersion = 2; // 2: the single-copy (CMA) fields of Control
constexpr std::size_t kCacheLine = 64;
constexpr std::size_t kPage = 4096;
constexpr std::size_t kEntryHeaderBytes = 64;
constexpr std::size_t kReasonBytes = 256;
// How long one futex sleep lasts at most: the waiter then rechecks the deadline and its blocker.
constexpr auto kSleepSlice = std::chrono::milliseconds(100);
// What a member's probe word holds; peers read it with process_vm_readv at connect to learn
// whether the kernel lets them read this process's memory (CMA).
constexpr std::uint64_t kProbeMagic = 0x45424f52504d4d43ull; // "CMMPROBE"
const volatile std::uint64_t probeWord = kProbeMagic;
// The most bytes one process_vm_readv moves: between calls the reader checks the deadline and
// whether the writer still lives, so a slow gather of a huge buffer stays abortable.
constexpr std::size_t kCmaSliceBytes = std::size_t{8} << 20;

enum CmaState : std::uint32_t { kCmaUnknown = 0, kCmaReadable = 1, kCmaRefused = 2 };

enum MemberState : std::uint32_t { kAbsent = 0, kAttached = 1, kLeft = 2, kAborted = 3 };

std::size_t roundUp(std::size_t value, std::size_t to) { return (value + to - 1) / to * to; }

std::string errnoText(int error) { return std::strerror(error); }

void futexWait(std::atomic<std::uint32_t>* word, std::uint32_t expected, std::chrono::nanoseconds timeout) {
    struct timespec ts;
    ts.tv_sec = static_cast<time_t>(timeout.count() / 1000000000);
    ts.tv_nsec = static_cast<long>(timeout.count() % 1000000000);
    // Not FUTEX_PRIVATE: the word lives in a mapping shared between processes. EAGAIN (the value
    // changed), EINTR and ETIMEDOUT all just mean "look again".
    syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(word), FUTEX_WAIT, expected, &ts, nullptr, 0);
}

void futexWake(std::atomic<std::uint32_t>* word) {
    syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(word), FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
}

void futexWakeAll(std::atomic<std::uint32_t>* word) { futexWake(word); }

inline void cpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

std::size_t envSize(const char* name, std::size_t fallback, std::size_t min, std::size_t max) {
    const char* text = std::getenv(name);
    if (text == nullptr || *text == '\0') return fallback;
    char* end = nullptr;
    const unsigned long long value = std::strtoull(text, &end, 10);
    if (end == text || *end != '\0' || value < min || value > max) {
        MIXZ_THROW(InvalidArgument, name, " must be an integer in [", min, ", ", max, "], got '", text, "'");
    }
    return static_cast<std::size_t>(value);
}

int onlineCpus() {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) return CPU_COUNT(&set);
    const long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? static_cast<int>(n) : 1;
}

} // namespace

// The segment, in order: header (one page), one Control per member, the consumed counters (one
// row of n counters per reader), then each member's ring of entries.
struct ShmDomain::Control {
    // Identity and state: written at attach, abort and exit.
    std::atomic<std::uint32_t> pid;
    std::atomic<std::uint32_t> state;
    char reason[kReasonBytes];
    // Progress, written by the owner on every collective and round.
    alignas(kCacheLine) std::atomic<std::uint64_t> opSeq;
    std::atomic<std::uint64_t> written;
    // The futex the owner sleeps on, and whether it does. Others increment the doorbell.
    alignas(kCacheLine) std::atomic<std::uint32_t> doorbell;
    std::atomic<std::uint32_t> sleeping;
    // Liveness: a robust futex word holding the TID of the owner's watcher thread (see watch()),
    // and the owner's robust-list entry for it.
    alignas(kCacheLine) struct robust_list robustEntry;
    std::atomic<std::uint32_t> alive;
    // Single copy (CMA, see allgatherDirect()). Set at attach: where this member's probe word is,
    // and after probing every peer whether it could read them all (CmaState).
    alignas(kCacheLine) std::atomic<std::uint64_t> probeAddress;
    std::atomic<std::uint32_t> cmaState;
    // Per direct all-gather: the owner's source buffer, published for collective `cmaSeq`,
    // with the call's kind and tag (tag << 8 | kind) and shape for the mismatch check; `cmaDone`
    // is the last collective whose peers' buffers the owner has finished reading.
    alignas(kCacheLine) std::atomic<std::uint64_t> cmaSeq;
    std::atomic<std::uint64_t> cmaAddress;
    std::atomic<std::uint64_t> cmaBytes;
    std::atomic<std::uint64_t> cmaTagKind;
    std::atomic<std::uint64_t> cmaShape;
    alignas(kCacheLine) std::atomic<std::uint64_t> cmaDone;
};

namespace {

struct SegmentHeader {
    std::atomic<std::uint64_t> magic; // stored last by the creator
    std::uint32_t version;
    std::uint32_t members;
    std::uint64_t entryBytes;
    std::uint32_t entries;
    std::uint32_t reserved;
    std::uint64_t totalBytes;
    alignas(kCacheLine) std::atomic<std::uint32_t> attached;
};

struct EntryHeader {
    std::uint64_t opSeq;
    std::uint64_t shape;
    std::uint64_t round;
    std::uint32_t tag;
    std::uint32_t kind;
};
static_assert(sizeof(EntryHeader) <= kEntryHeaderBytes, "entry header must fit its cache line");
static_assert(sizeof(SegmentHeader) <= kPage, "segment header must fit its page");

} // namespace

struct ShmDomain::Layout {
    std::size_t members = 0;
    std::size_t entryBytes = 0;
    std::size_t entries = 0;
    std::size_t controlOffset = kPage;
    std::size_t controlStride = roundUp(sizeof(Control), kCacheLine);
    std::size_t consumedOffset = 0;
    std::size_t consumedRowBytes = 0;
    std::size_t dataOffset = 0;
    std::size_t entryStride = 0;
    std::size_t memberStride = 0;
    std::size_t totalBytes = 0;

    Layout(std::size_t n, std::size_t entryBytes, std::size_t entries)
        : members(n), entryBytes(entryBytes), entries(entries) {
        consumedOffset = roundUp(controlOffset + n * controlStride, kCacheLine);
        consumedRowBytes = roundUp(n * sizeof(std::uint64_t), kCacheLine);
        dataOffset = roundUp(consumedOffset + n * consumedRowBytes, kPage);
        entryStride = kEntryHeaderBytes + entryBytes;
        memberStride = roundUp(entries * entryStride, kPage);
        totalBytes = dataOffset + n * memberStride;
    }
};

namespace {

SegmentHeader& header(std::uint8_t* base) { return *reinterpret_cast<SegmentHeader*>(base); }

} // namespace

#define MIXZ_SHM_CONTROL(m) (*reinterpret_cast<Control*>(base_ + layout_->controlOffset + (m) * layout_->controlStride))
#define MIXZ_SHM_CONSUMED(reader, writer)                                                                   \
    (*reinterpret_cast<std::atomic<std::uint64_t>*>(base_ + layout_->consumedOffset +                       \
                                                    (reader) * layout_->consumedRowBytes +                   \
                                                    (writer) * sizeof(std::uint64_t)))

ShmConfig ShmConfig::fromEnvironment(std::size_t members) {
    ShmConfig config;
    const bool oversubscribed = static_cast<int>(members) > onlineCpus();
    // More members than CPUs: every wait is a sleep and a wake-up, so fewer, larger rounds win
    // (measured with 4 ranks on 2 CPUs: 1 MiB rounds gave 10-20 % more bus bandwidth).
    if (oversubscribed) config.entryBytes = 1024 * 1024;
    config.entryBytes = envSize("MIXZ_SHM_ENTRY_KIB", config.entryBytes / 1024, 4, 64 * 1024) * 1024;
    config.entries = static_cast<std::uint32_t>(envSize("MIXZ_SHM_ENTRIES", config.entries, 2, 1024));
    config.spin = std::chrono::microseconds(
        envSize("MIXZ_SHM_SPIN_US", oversubscribed ? 0 : static_cast<std::size_t>(config.spin.count()), 0, 1000000));
    return config;
}

std::string ShmDomain::makeName(const std::string& jobId, int leaderRank) {
    std::string job = jobId.substr(0, 64);
    for (char& c : job) {
        const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
                        c == '.' || c == '-';
        if (!ok) c = '_';
    }
    std::random_device device;
    const std::uint64_t random = (static_cast<std::uint64_t>(device()) << 32) ^ device();
    char hex[17];
    std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(random));
    return detail::concat("/mixz-", job, "-", leaderRank, "-", getpid(), "-", hex);
}

ShmDomain::ShmDomain(std::string name, std::vector<Peer> members, int me)
    : name_(std::move(name)), members_(std::move(members)), me_(me), consumed_(members_.size(), 0),
      dead_(new std::atomic<bool>[members_.size()]) {
    for (std::size_t m = 0; m < members_.size(); ++m) dead_[m].store(false);
}

std::unique_ptr<ShmDomain> ShmDomain::create(const std::string& name, std::vector<Peer> members, int me,
                                             const ShmConfig& config) {
    MIXZ_ENFORCE(members.size() >= 2, "a shared-memory domain needs at least two members");
    MIXZ_ENFORCE(config.entryBytes % kPage == 0 && config.entryBytes > 0, "entryBytes ", config.entryBytes);
    MIXZ_ENFORCE(config.entries >= 2, "entries ", config.entries);
    std::unique_ptr<ShmDomain> domain(new ShmDomain(name, std::move(members), me));
    domain->creator_ = true;
    domain->config_ = config;
    const Layout layout(domain->members_.size(), config.entryBytes, config.entries);

    const int fd = shm_open(name.c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd < 0) MIXZ_THROW(IoError, "cannot create shared-memory segment ", name, ": ", errnoText(errno));
    // From here on, a failure must not leave the name behind.
    try {
        // Reserve the pages now: on a full /dev/shm, ftruncate alone succeeds and the first touch
        // of a missing page would kill the process with SIGBUS.
        const int rv = posix_fallocate(fd, 0, static_cast<off_t>(layout.totalBytes));
        if (rv != 0) {
            MIXZ_THROW(IoError, "cannot allocate ", layout.totalBytes, " bytes for shared-memory segment ", name,
                       " in /dev/shm: ", errnoText(rv));
        }
        domain->layout_ = std::make_unique<Layout>(layout);
        domain->map(fd, layout.totalBytes);
    } catch (...) {
        ::close(fd);
        shm_unlink(name.c_str());
        domain->unlinked_ = true;
        throw;
    }
    ::close(fd);

    std::uint8_t* base = domain->base_;
    SegmentHeader& head = *new (base) SegmentHeader();
    head.version = kVersion;
    head.members = static_cast<std::uint32_t>(layout.members);
    head.entryBytes = layout.entryBytes;
    head.entries = static_cast<std::uint32_t>(layout.entries);
    head.totalBytes = layout.totalBytes;
    head.attached.store(0, std::memory_order_relaxed);
    for (std::size_t m = 0; m < layout.members; ++m) {
        new (base + layout.controlOffset + m * layout.controlStride) Control();
        for (std::size_t w = 0; w < layout.members; ++w) {
            new (base + layout.consumedOffset + m * layout.consumedRowBytes + w * sizeof(std::uint64_t))
                std::atomic<std::uint64_t>(0);
        }
    }
    head.magic.store(kMagic, std::memory_order_release);
    domain->attach();
    return domain;
}

std::unique_ptr<ShmDomain> ShmDomain::open(const std::string& name, std::vector<Peer> members, int me,
                                           const ShmConfig& config) {
    std::unique_ptr<ShmDomain> domain(new ShmDomain(name, std::move(members), me));
    domain->config_ = config;
    const int fd = shm_open(name.c_str(), O_RDWR, 0600);
    if (fd < 0) {
        MIXZ_THROW(IoError, "cannot open shared-memory segment ", name, " of ", describePeer(domain->members_[0]),
                   ": ", errnoText(errno),
                   errno == ENOENT ? " (it is gone: that rank exited, or runs on another machine under the same host name)"
                                   : "");
    }
    try {
        struct stat info;
        if (fstat(fd, &info) != 0) MIXZ_THROW(IoError, "fstat ", name, ": ", errnoText(errno));
        if (static_cast<std::size_t>(info.st_size) < kPage) {
            MIXZ_THROW(IoError, "shared-memory segment ", name, " is too small (", info.st_size, " bytes)");
        }
        // Map the header first to learn the layout the creator chose.
        void* probe = mmap(nullptr, kPage, PROT_READ, MAP_SHARED, fd, 0);
        if (probe == MAP_FAILED) MIXZ_THROW(IoError, "mmap ", name, ": ", errnoText(errno));
        const SegmentHeader& head = *static_cast<const SegmentHeader*>(probe);
        const bool valid = head.magic.load(std::memory_order_acquire) == kMagic && head.version == kVersion;
        const std::size_t n = head.members;
        const std::size_t entryBytes = head.entryBytes;
        const std::size_t entries = head.entries;
        const std::size_t total = head.totalBytes;
        munmap(probe, kPage);
        if (!valid) MIXZ_THROW(IoError, "shared-memory segment ", name, " is not a mixz segment of this version");
        if (n != domain->members_.size()) {
            MIXZ_THROW(InvalidArgument, "shared-memory segment ", name, " has ", n, " members, this communicator ",
                       domain->members_.size());
        }
        domain->layout_ = std::make_unique<Layout>(n, entryBytes, entries);
        MIXZ_ENFORCE_EQ(domain->layout_->totalBytes, total, "segment layout of ", name);
        if (static_cast<std::size_t>(info.st_size) < total) {
            MIXZ_THROW(IoError, "shared-memory segment ", name, " is truncated");
        }
        domain->config_.entryBytes = entryBytes;
        domain->config_.entries = static_cast<std::uint32_t>(entries);
        domain->map(fd, total);
    } catch (...) {
        ::close(fd);
        // This member may be the one that would have been last to attach: leave no name behind.
        shm_unlink(name.c_str());
        domain->unlinked_ = true;
        throw;
    }
    ::close(fd);
    domain->attach();
    return domain;
}

void ShmDomain::map(int fd, std::size_t bytes) {
    void* address = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (address == MAP_FAILED) MIXZ_THROW(IoError, "mmap of ", bytes, " bytes of ", name_, ": ", errnoText(errno));
    base_ = static_cast<std::uint8_t*>(address);
    mappedBytes_ = bytes;
}

void ShmDomain::attach() {
    Control& self = MIXZ_SHM_CONTROL(me_);
    self.pid.store(static_cast<std::uint32_t>(getpid()), std::memory_order_relaxed);
    self.probeAddress.store(reinterpret_cast<std::uintptr_t>(&probeWord), std::memory_order_relaxed);
    self.state.store(kAttached, std::memory_order_release);
    SegmentHeader& head = header(base_);
    const std::uint32_t count = head.attached.fetch_add(1, std::memory_order_acq_rel) + 1;
    if (count == members_.size()) {
        // Everyone has it mapped: the name is no longer needed, and without it nothing can be
        // left in /dev/shm whatever happens to the processes.
        shm_unlink(name_.c_str());
        unlinked_ = true;
    }
    futexWake(&head.attached);
}

void ShmDomain::waitAttached(const OpContext& op) {
    SegmentHeader& head = header(base_);
    const std::uint32_t n = static_cast<std::uint32_t>(members_.size());
    for (;;) {
        const std::uint32_t seen = head.attached.load(std::memory_order_acquire);
        if (seen >= n) break;
        const auto now = Clock::now();
        if (now >= op.deadline) {
            shm_unlink(name_.c_str());
            unlinked_ = true;
            for (std::size_t m = 0; m < members_.size(); ++m) {
                if (MIXZ_SHM_CONTROL(m).state.load(std::memory_order_acquire) == kAbsent) {
                    throwTimeout(op, members_[m], "it did not map the shared-memory segment " + name_);
                }
            }
            throwTimeout(op, members_[0], "attaching to " + name_);
        }
        futexWait(&head.attached, seen, std::min<Clock::duration>(op.deadline - now, kSleepSlice));
    }
    for (std::size_t m = 0; m < members_.size(); ++m) {
        members_[m].pid = static_cast<std::int32_t>(MIXZ_SHM_CONTROL(m).pid.load(std::memory_order_acquire));
    }
    startWatcher();
    probeCma(op);
}

// Whether every member may read every other member's memory with process_vm_readv: the kernel
// refuses (EPERM) under Yama's ptrace_scope ≥ 1 between unrelated processes, in containers
// without CAP_SYS_PTRACE, and where seccomp filters the call. Each member reads every peer's probe
// word, publishes the outcome and waits for everyone's: the path must be the same on all
// members. A member with more members than CPUs declines too: then a reader mostly waits for a
// descheduled writer to publish, where the rings let whoever runs make progress (measured with 4
// ranks on 2 CPUs: single copy 10-30 % slower at 8-16 MiB). MIXZ_SHM_CMA=0 makes this member
// decline always, MIXZ_SHM_CMA=1 never for lack of CPUs (tests).
void ShmDomain::probeCma(const OpContext& op) {
    const char* setting = std::getenv("MIXZ_SHM_CMA");
    const bool never = setting != nullptr && std::strcmp(setting, "0") == 0;
    const bool always = setting != nullptr && std::strcmp(setting, "1") == 0;
    bool readable = !never && (always || size() <= onlineCpus());
    for (int m = 0; m < size() && readable; ++m) {
        if (m == me_) continue;
        std::uint64_t value = 0;
        struct iovec local {&value, sizeof value};
        struct iovec remote {reinterpret_cast<void*>(MIXZ_SHM_CONTROL(m).probeAddress.load(std::memory_order_acquire)),
                             sizeof value};
        const ssize_t got = process_vm_readv(members_[m].pid, &local, 1, &remote, 1, 0);
        readable = got == static_cast<ssize_t>(sizeof value) && value == kProbeMagic;
    }
    MIXZ_SHM_CONTROL(me_).cmaState.store(readable ? kCmaReadable : kCmaRefused, std::memory_order_release);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    for (int m = 0; m < size(); ++m) {
        if (m != me_) wake(m);
    }
    waitFor(
        op,
        [&]() -> int {
            for (int m = 0; m < size(); ++m) {
                if (MIXZ_SHM_CONTROL(m).cmaState.load(std::memory_order_acquire) == kCmaUnknown) return m;
            }
            return -1;
        },
        [&](int m) { return MIXZ_SHM_CONTROL(m).cmaState.load(std::memory_order_acquire) == kCmaUnknown; },
        "it did not finish connecting");
    cma_ = true;
    for (int m = 0; m < size(); ++m) {
        cma_ = cma_ && MIXZ_SHM_CONTROL(m).cmaState.load(std::memory_order_acquire) == kCmaReadable;
    }
}

ShmDomain::~ShmDomain() {
    if (base_ != nullptr) {
        if (!aborted_.load()) {
            MIXZ_SHM_CONTROL(me_).state.store(kLeft, std::memory_order_release);
            std::atomic_thread_fence(std::memory_order_seq_cst);
            wakeAll();
        }
        stopWatcher();
        munmap(base_, mappedBytes_);
        base_ = nullptr;
    }
    if (!unlinked_) shm_unlink(name_.c_str());
}

// ---- the watcher: liveness of the members -------------------------------------------------------
//
// Each member's watcher thread owns that member's `alive` word as a robust futex: the word holds
// the thread's TID and is on the thread's robust list (set_robust_list), so when the process dies,
// however it dies, the kernel marks the word FUTEX_OWNER_DIED and wakes a waiter on it. It does
// so while tearing the dying thread down, before the process's memory is released (which takes
// milliseconds for a large process) and before its parent learns of the death: a peer fails its
// collective before the launcher has even seen the process go. The kernel wakes only one waiter
// and only if FUTEX_WAITERS is set, so watchers set that bit before they sleep and the one that
// wakes wakes the others. The watcher sleeps on every peer's word at once with futex_waitv
// (Linux 5.16); without it, it polls pidfds of the peers' processes instead (Linux 5.3), which
// report the death only once the process has fully exited.

void ShmDomain::startWatcher() {
    if (watcher_.joinable()) return;
    stopWord_.store(0);
    watcher_ = std::thread([this] { watch(); });
}

void ShmDomain::stopWatcher() {
    if (!watcher_.joinable()) return;
    stopWord_.store(1);
    syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&stopWord_), FUTEX_WAKE_PRIVATE, INT_MAX, nullptr, nullptr, 0);
    if (stopFd_ >= 0) {
        const std::uint64_t one = 1;
        [[maybe_unused]] const ssize_t written = ::write(stopFd_, &one, sizeof one);
    }
    watcher_.join();
    if (stopFd_ >= 0) ::close(stopFd_);
    stopFd_ = -1;
}

void ShmDomain::markDead(int member) {
    if (!dead_[member].exchange(true, std::memory_order_acq_rel)) wake(me_, true);
}

void ShmDomain::watch() {
    Control& self = MIXZ_SHM_CONTROL(me_);
    // Own this member's liveness word. The list entry lives next to the word in the segment (the
    // kernel reads it from this process's memory when the thread dies); the head lives here.
    robustHead_.list.next = reinterpret_cast<robust_list*>(&self.robustEntry);
    self.robustEntry.next = &robustHead_.list;
    robustHead_.futex_offset =
        reinterpret_cast<std::uint8_t*>(&self.alive) - reinterpret_cast<std::uint8_t*>(&self.robustEntry);
    robustHead_.list_op_pending = nullptr;
    const bool robust = syscall(SYS_set_robust_list, &robustHead_, sizeof robustHead_) == 0;
    if (robust) {
        self.alive.store(static_cast<std::uint32_t>(syscall(SYS_gettid)) & FUTEX_TID_MASK, std::memory_order_seq_cst);
        futexWakeAll(&self.alive); // watchers that found the word still 0
    }

    if (!watchRobust()) watchPidfds();

    // Leaving normally: clear the word before this thread exits, so the kernel does not report
    // this member dead, and wake the peers that sleep on it.
    if (robust) {
        self.alive.store(0, std::memory_order_seq_cst);
        futexWakeAll(&self.alive);
    }
}

bool ShmDomain::watchRobust() {
    const std::size_t n = members_.size();
    if (n > FUTEX_WAITV_MAX) return false;
    std::vector<bool> done(n, false);
    done[me_] = true;
    std::vector<struct futex_waitv> waits;
    for (;;) {
        if (stopWord_.load() != 0) return true;
        waits.clear();
        waits.push_back({0, reinterpret_cast<std::uint64_t>(&stopWord_), FUTEX_32 | FUTEX_PRIVATE_FLAG, 0});
        for (std::size_t m = 0; m < n; ++m) {
            if (done[m]) continue;
            Control& peer = MIXZ_SHM_CONTROL(m);
            std::uint32_t word = peer.alive.load(std::memory_order_acquire);
            if ((word & FUTEX_OWNER_DIED) != 0) {
                done[m] = true;
                futexWakeAll(&peer.alive); // the kernel woke one watcher: this one wakes the rest
                markDead(static_cast<int>(m));
                continue;
            }
            if (word == 0) {
                const std::uint32_t state = peer.state.load(std::memory_order_acquire);
                if (state == kLeft || state == kAborted) {
                    done[m] = true;
                    continue;
                }
                // Its watcher has not started yet: sleep until it stores its TID.
            } else if ((word & FUTEX_WAITERS) == 0) {
                if (!peer.alive.compare_exchange_strong(word, word | FUTEX_WAITERS)) continue; // look again next loop
                word |= FUTEX_WAITERS;
            }
            waits.push_back({word, reinterpret_cast<std::uint64_t>(&peer.alive), FUTEX_32, 0});
        }
        const long rv = syscall(__NR_futex_waitv, waits.data(), static_cast<unsigned>(waits.size()), 0, nullptr,
                                CLOCK_MONOTONIC);
        if (rv < 0 && (errno == ENOSYS || errno == EINVAL)) return false;
        // Woken, a value changed (EAGAIN) or a signal (EINTR): look at every word again.
    }
}

void ShmDomain::watchPidfds() {
    stopFd_ = eventfd(0, EFD_CLOEXEC);
    if (stopFd_ < 0) return; // checkMember falls back to kill(pid, 0)
    pidfdWatch_.store(true);
    std::vector<pollfd> fds;
    std::vector<int> memberOf;
    fds.push_back({stopFd_, POLLIN, 0});
    memberOf.push_back(-1);
    const std::int32_t self = getpid();
    for (std::size_t m = 0; m < members_.size(); ++m) {
        const std::int32_t pid = members_[m].pid;
        if (static_cast<int>(m) == me_ || pid <= 0 || pid == self) continue;
        const int fd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
        if (fd < 0) {
            if (errno == ESRCH) markDead(static_cast<int>(m));
            continue;
        }
        fds.push_back({fd, POLLIN, 0});
        memberOf.push_back(static_cast<int>(m));
    }
    for (;;) {
        if (stopWord_.load() != 0) break;
        const int ready = ::poll(fds.data(), fds.size(), -1);
        if (ready < 0 && errno == EINTR) continue;
        if (ready < 0 || (fds[0].revents & POLLIN) != 0) break;
        for (std::size_t i = 1; i < fds.size(); ++i) {
            if (fds[i].fd >= 0 && (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
                ::close(fds[i].fd);
                fds[i].fd = -1; // poll ignores negative descriptors
                markDead(memberOf[i]);
            }
        }
    }
    for (std::size_t i = 1; i < fds.size(); ++i) {
        if (fds[i].fd >= 0) ::close(fds[i].fd);
    }
}

// ---- waiting and waking -------------------------------------------------------------------------

void ShmDomain::wake(int member, bool always) {
    Control& control = MIXZ_SHM_CONTROL(member);
    if (always || control.sleeping.load(std::memory_order_relaxed) != 0) {
        control.doorbell.fetch_add(1, std::memory_order_release);
        futexWake(&control.doorbell);
    }
}

void ShmDomain::wakeAll() {
    for (int m = 0; m < size(); ++m) {
        if (m != me_) wake(m, true);
    }
}

void ShmDomain::checkMember(const OpContext& op, int member, bool deathOnly) const {
    const Control& control = MIXZ_SHM_CONTROL(member);
    const std::uint32_t state = control.state.load(std::memory_order_acquire);
    const Peer& peer = members_[member];
    if (deathOnly) {
        checkDeath(op, member);
        return;
    }
    if (state == kAborted) {
        std::string reason(control.reason, strnlen(control.reason, kReasonBytes));
        throwPeerError(op, peer, "gave up on the collective: " + reason);
    }
    if (state == kLeft) throwPeerError(op, peer, "closed its communicator (or its process exited)");
    checkDeath(op, member);
}

void ShmDomain::checkDeath(const OpContext& op, int member) const {
    const Control& control = MIXZ_SHM_CONTROL(member);
    const Peer& peer = members_[member];
    bool dead = dead_[member].load(std::memory_order_acquire) ||
                (control.alive.load(std::memory_order_acquire) & FUTEX_OWNER_DIED) != 0;
    // Without a watcher, or before the peer's watcher owns its word: ask the kernel directly.
    const bool unwatched = !watcher_.joinable() || (control.alive.load(std::memory_order_acquire) == 0 &&
                                                     !pidfdWatch_.load(std::memory_order_acquire));
    if (!dead && unwatched && peer.pid > 0 && peer.pid != getpid()) {
        dead = ::kill(peer.pid, 0) != 0 && errno == ESRCH;
    }
    if (dead) throwPeerError(op, peer, detail::concat("process ", peer.pid, " exited"));
}

template <typename Blocker, typename Pending>
void ShmDomain::waitFor(const OpContext& op, Blocker blocker, Pending pending, const char* what) {
    int blocked = blocker();
    if (blocked < 0) return;
    if (config_.spin.count() > 0) {
        const auto spinEnd = Clock::now() + config_.spin;
        do {
            for (int i = 0; i < 16; ++i) cpuRelax();
            if ((blocked = blocker()) < 0) return;
        } while (Clock::now() < spinEnd);
    }
    Control& self = MIXZ_SHM_CONTROL(me_);
    for (;;) {
        const std::uint32_t bell = self.doorbell.load(std::memory_order_acquire);
        self.sleeping.store(1, std::memory_order_relaxed);
        // Pairs with the fence in every publisher: either it sees sleeping == 1 and rings, or this
        // thread sees its progress below.
        std::atomic_thread_fence(std::memory_order_seq_cst);
        blocked = blocker();
        if (blocked < 0) break;
        try {
            if (aborted_.load(std::memory_order_acquire)) {
                const std::string reason(self.reason, strnlen(self.reason, kReasonBytes));
                throw IoError(detail::concat(op.label(), ": aborted on this rank: ", reason));
            }
            // Any member this collective still needs may be the one that failed, not only the
            // one this rank happens to wait for: waits can form a cycle among healthy members
            // that all wait, through the ring, for one dead reader.
            // Deaths first: a peer that gave up because of a death is the less direct report.
            for (int pass = 0; pass < 2; ++pass) {
                for (int m = 0; m < size(); ++m) {
                    if (m != me_ && pending(m)) checkMember(op, m, pass == 0);
                }
            }
            const auto now = Clock::now();
            if (now >= op.deadline) {
                // Blame a member that has not even entered this collective, if there is one.
                int culprit = blocked;
                for (int m = 0; m < size(); ++m) {
                    if (m != me_ && pending(m) &&
                        MIXZ_SHM_CONTROL(m).opSeq.load(std::memory_order_acquire) < opSeq_) {
                        culprit = m;
                        break;
                    }
                }
                throwTimeout(op, members_[culprit], what);
            }
            futexWait(&self.doorbell, bell, std::min<Clock::duration>(op.deadline - now, kSleepSlice));
        } catch (...) {
            self.sleeping.store(0, std::memory_order_relaxed);
            throw;
        }
    }
    self.sleeping.store(0, std::memory_order_relaxed);
}

void ShmDomain::abort(const std::string& reason) {
    std::lock_guard<std::mutex> lock(abortMutex_);
    if (aborted_.load() || base_ == nullptr) return;
    Control& self = MIXZ_SHM_CONTROL(me_);
    const std::size_t length = std::min(reason.size(), kReasonBytes - 1);
    std::memcpy(self.reason, reason.data(), length);
    self.reason[length] = '\0';
    self.state.store(kAborted, std::memory_order_release);
    aborted_.store(true, std::memory_order_release);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    wakeAll();
    wake(me_, true); // a collective of this rank in flight fails too
}

// ---- rings --------------------------------------------------------------------------------------

std::uint64_t ShmDomain::beginOp(const OpContext& op) {
    (void)op;
    ++opSeq_;
    MIXZ_SHM_CONTROL(me_).opSeq.store(opSeq_, std::memory_order_release);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    for (int m = 0; m < size(); ++m) {
        if (m != me_) wake(m);
    }
    return opSeq_;
}

bool ShmDomain::ringHasSpace() const {
    for (int m = 0; m < size(); ++m) {
        if (m == me_) continue;
        if (MIXZ_SHM_CONSUMED(m, me_).load(std::memory_order_acquire) + layout_->entries <= written_) return false;
    }
    return true;
}

int ShmDomain::slowestReader() const {
    int slowest = -1;
    std::uint64_t least = UINT64_MAX;
    for (int m = 0; m < size(); ++m) {
        if (m == me_) continue;
        const std::uint64_t consumed = MIXZ_SHM_CONSUMED(m, me_).load(std::memory_order_acquire);
        if (consumed < least) {
            least = consumed;
            slowest = m;
        }
    }
    return slowest;
}

std::uint8_t* ShmDomain::writeEntry(const OpContext& op) {
    std::uint8_t* entry =
        base_ + layout_->dataOffset + me_ * layout_->memberStride + (written_ % layout_->entries) * layout_->entryStride;
    EntryHeader& head = *reinterpret_cast<EntryHeader*>(entry);
    head.opSeq = opSeq_;
    head.shape = op.shape;
    head.round = written_;
    head.tag = op.tag;
    head.kind = static_cast<std::uint32_t>(op.kind);
    return entry + kEntryHeaderBytes;
}

void ShmDomain::publishWrite() {
    ++written_;
    MIXZ_SHM_CONTROL(me_).written.store(written_, std::memory_order_release);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    for (int m = 0; m < size(); ++m) {
        if (m != me_) wake(m);
    }
}

bool ShmDomain::roundAvailable(int writer, std::uint64_t round) const {
    return MIXZ_SHM_CONTROL(writer).written.load(std::memory_order_acquire) > round;
}

const std::uint8_t* ShmDomain::readEntry(int writer, std::uint64_t round, const OpContext& op) const {
    const std::uint8_t* entry = base_ + layout_->dataOffset + writer * layout_->memberStride +
                                (round % layout_->entries) * layout_->entryStride;
    const EntryHeader& head = *reinterpret_cast<const EntryHeader*>(entry);
    if (head.opSeq != opSeq_ || head.kind != static_cast<std::uint32_t>(op.kind) || head.tag != op.tag ||
        head.shape != op.shape || head.round != round) {
        MIXZ_THROW(InvalidArgument, op.label(), " is collective #", opSeq_, " on this rank, but ",
                   describePeer(members_[writer]), " sent data of its collective #", head.opSeq, ", ",
                   opKindName(static_cast<OpKind>(head.kind)), " (tag ", head.tag, ")",
                   head.shape != op.shape ? " with other sizes" : "",
                   ": every member must call the same collectives, in the same order, with the same sizes");
    }
    return entry + kEntryHeaderBytes;
}

void ShmDomain::publishConsumed(int writer) {
    ++consumed_[writer];
    MIXZ_SHM_CONSUMED(me_, writer).store(consumed_[writer], std::memory_order_release);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    wake(writer);
}

// ---- collectives --------------------------------------------------------------------------------

namespace {

// Walks a list of ranges as one stream: calls fn(rangeIndex, offsetInRange, bytes) for the next
// `bytes` bytes.
struct RangeCursor {
    const std::vector<ShmRange>* ranges = nullptr;
    std::size_t index = 0;
    std::size_t within = 0;

    template <typename Fn>
    void advance(std::size_t bytes, Fn fn) {
        while (bytes > 0) {
            const ShmRange& range = (*ranges)[index];
            const std::size_t take = std::min(bytes, range.bytes - within);
            if (take > 0) fn(index, within, take);
            within += take;
            bytes -= take;
            if (within == range.bytes) {
                ++index;
                within = 0;
            }
        }
    }
};

std::size_t streamBytes(const std::vector<ShmRange>& ranges) {
    std::size_t total = 0;
    for (const ShmRange& range : ranges) total += range.bytes;
    return total;
}

} // namespace

// The round engine of every all-gather over the rings: member m streams total[m] bytes in rounds
// of at most `roundBytes`. produce(entry, bytes) fills this member's next round in its ring entry;
// consume(member, entry, bytes) takes member's next round, this member's own included (right after
// it was produced, while the entry is in cache). Rounds of each member arrive in order.
template <typename Produce, typename Consume>
void ShmDomain::streamRounds(const std::vector<std::size_t>& total, std::size_t roundBytes, Produce produce,
                             Consume consume, const OpContext& op) {
    const int n = size();
    std::vector<std::size_t> done(n, 0);
    for (;;) {
        bool progress = false;
        bool finished = true;
        // Write this member's next round while its ring has room.
        if (done[me_] < total[me_]) {
            finished = false;
            if (ringHasSpace()) {
                const std::size_t bytes = std::min(roundBytes, total[me_] - done[me_]);
                std::uint8_t* entry = writeEntry(op);
                produce(entry, bytes);
                done[me_] += bytes;
                publishWrite();
                consume(me_, static_cast<const std::uint8_t*>(entry), bytes);
                progress = true;
            }
        }
        // Take every round the others have published.
        for (int step = 1; step < n; ++step) {
            const int w = (me_ + step) % n;
            while (done[w] < total[w]) {
                finished = false;
                if (!roundAvailable(w, consumed_[w])) {
                    if (MIXZ_SHM_CONTROL(w).cmaSeq.load(std::memory_order_acquire) == opSeq_) throwCmaMismatch(op, w);
                    break;
                }
                const std::size_t bytes = std::min(roundBytes, total[w] - done[w]);
                consume(w, readEntry(w, consumed_[w], op), bytes);
                done[w] += bytes;
                publishConsumed(w);
                progress = true;
            }
        }
        if (finished) return;
        if (progress) continue;
        waitFor(
            op,
            [&]() -> int {
                int blocker = -1;
                for (int step = 1; step < n; ++step) {
                    const int w = (me_ + step) % n;
                    if (done[w] < total[w]) {
                        // Also wake for a writer in a single-copy gather: the loop reports the mismatch.
                        if (roundAvailable(w, consumed_[w]) ||
                            MIXZ_SHM_CONTROL(w).cmaSeq.load(std::memory_order_acquire) == opSeq_) {
                            return -1;
                        }
                        if (blocker < 0) blocker = w;
                    }
                }
                if (done[me_] < total[me_]) {
                    if (ringHasSpace()) return -1;
                    if (blocker < 0) blocker = slowestReader();
                }
                return blocker;
            },
            [&](int m) { return done[me_] < total[me_] || done[m] < total[m]; }, "");
    }
}

void ShmDomain::allgather(std::uint8_t* output, const std::vector<std::vector<ShmRange>>& ranges,
                          const std::vector<const std::uint8_t*>& sources, const OpContext& op) {
    MIXZ_ENFORCE_EQ(ranges.size(), members_.size(), "one range list per member");
    MIXZ_ENFORCE_EQ(sources.size(), ranges[me_].size(), "one source per range of this member");
    beginOp(op);
    const int n = size();
    std::vector<std::size_t> total(n);
    std::vector<RangeCursor> cursor(n);
    for (int m = 0; m < n; ++m) {
        total[m] = streamBytes(ranges[m]);
        cursor[m].ranges = &ranges[m];
    }
    const std::vector<ShmRange>& mine = ranges[me_];
    std::size_t outputBytes = 0;
    for (int m = 0; m < n; ++m) outputBytes += total[m];
    // Outputs larger than the cache: streaming stores (no read-for-ownership, no cache pollution).
    const bool streaming = outputBytes >= streamingThreshold();

    streamRounds(
        total, layout_->entryBytes,
        [&](std::uint8_t* entry, std::size_t bytes) {
            std::size_t position = 0;
            cursor[me_].advance(bytes, [&](std::size_t index, std::size_t within, std::size_t take) {
                const std::uint8_t* source = sources[index] + within;
                std::uint8_t* target = output + mine[index].offset + within;
                // The own chunk goes to the entry and to the output in one pass over the input.
                if (source != target) {
                    copyBytesTwice(entry + position, target, source, take, streaming);
                } else {
                    std::memcpy(entry + position, source, take);
                }
                position += take;
            });
        },
        [&](int w, const std::uint8_t* entry, std::size_t bytes) {
            if (w == me_) return; // produce already put it in the output
            std::size_t position = 0;
            cursor[w].advance(bytes, [&](std::size_t index, std::size_t within, std::size_t take) {
                copyBytes(output + ranges[w][index].offset + within, entry + position, take, streaming);
                position += take;
            });
        },
        op);
    if (streaming) streamingFence();
}

void ShmDomain::allgatherStreamed(std::size_t streamBytes, std::size_t roundBytes, const ShmProducer& produce,
                                  const ShmConsumer& consume, const OpContext& op) {
    MIXZ_ENFORCE(roundBytes > 0 && roundBytes <= layout_->entryBytes, "round of ", roundBytes,
                 " bytes for entries of ", layout_->entryBytes);
    beginOp(op);
    std::vector<std::size_t> total(members_.size(), streamBytes);
    std::vector<std::size_t> offset(members_.size(), 0);
    streamRounds(
        total, roundBytes,
        [&](std::uint8_t* entry, std::size_t bytes) { produce(entry, offset[me_], bytes); },
        [&](int w, const std::uint8_t* entry, std::size_t bytes) {
            consume(w, entry, offset[w], bytes);
            offset[w] += bytes;
        },
        op);
}

// Single copy through the kernel (CMA): every member publishes where its input is, copies its own
// part to its output, and reads every peer's input straight into its output with
// process_vm_readv; it returns once every peer has also finished reading its input (the caller
// may then reuse it). One copy per byte instead of two, and no ring rounds to pipeline.
void ShmDomain::allgatherDirect(std::uint8_t* output, const std::vector<ShmRange>& ranges, const std::uint8_t* source,
                                const OpContext& op) {
    MIXZ_ENFORCE(cma_, "allgatherDirect without CMA");
    MIXZ_ENFORCE_EQ(ranges.size(), members_.size(), "one range per member");
    const std::uint64_t seq = beginOp(op);
    const int n = size();
    Control& self = MIXZ_SHM_CONTROL(me_);
    const std::uint64_t tagKind = (static_cast<std::uint64_t>(op.tag) << 8) | static_cast<std::uint64_t>(op.kind);
    self.cmaAddress.store(reinterpret_cast<std::uintptr_t>(source), std::memory_order_relaxed);
    self.cmaBytes.store(ranges[me_].bytes, std::memory_order_relaxed);
    self.cmaTagKind.store(tagKind, std::memory_order_relaxed);
    self.cmaShape.store(op.shape, std::memory_order_relaxed);
    self.cmaSeq.store(seq, std::memory_order_release);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    for (int m = 0; m < n; ++m) {
        if (m != me_) wake(m);
    }

    std::uint8_t* own = output + ranges[me_].offset;
    if (own != source && ranges[me_].bytes > 0) {
        copyBytes(own, source, ranges[me_].bytes, ranges[me_].bytes >= streamingThreshold());
        streamingFence();
    }

    std::vector<bool> read(n, false);
    read[me_] = true;
    for (int left = n - 1; left > 0;) {
        bool progress = false;
        for (int step = 1; step < n; ++step) {
            const int w = (me_ + step) % n;
            if (read[w]) continue;
            const Control& writer = MIXZ_SHM_CONTROL(w);
            if (writer.cmaSeq.load(std::memory_order_acquire) != seq) {
                // A round in its ring means it runs a ring collective as this one: readEntry names it.
                if (roundAvailable(w, consumed_[w])) readEntry(w, consumed_[w], op);
                continue;
            }
            if (writer.cmaTagKind.load(std::memory_order_relaxed) != tagKind ||
                writer.cmaShape.load(std::memory_order_relaxed) != op.shape ||
                writer.cmaBytes.load(std::memory_order_relaxed) != ranges[w].bytes) {
                const std::uint64_t theirs = writer.cmaTagKind.load(std::memory_order_relaxed);
                MIXZ_THROW(InvalidArgument, op.label(), " is collective #", seq, " on this rank, but ",
                           describePeer(members_[w]), " called ", opKindName(static_cast<OpKind>(theirs & 0xff)),
                           " (tag ", theirs >> 8, ") with other sizes",
                           ": every member must call the same collectives, in the same order, with the same sizes");
            }
            readPeer(op, w, output + ranges[w].offset, writer.cmaAddress.load(std::memory_order_relaxed),
                     ranges[w].bytes);
            read[w] = true;
            --left;
            progress = true;
        }
        if (progress || left == 0) continue;
        waitFor(
            op,
            [&]() -> int {
                for (int step = 1; step < n; ++step) {
                    const int w = (me_ + step) % n;
                    if (!read[w]) {
                        const bool ready = MIXZ_SHM_CONTROL(w).cmaSeq.load(std::memory_order_acquire) == seq ||
                                           roundAvailable(w, consumed_[w]); // a ring round: a mismatch
                        return ready ? -1 : w;
                    }
                }
                return -1;
            },
            [&](int m) { return !read[m]; }, "");
    }

    // A writer that gave up while this member read its input may have reused that memory already
    // (the last slice may hold anything): fail rather than return what was read. No writer can have
    // left normally yet: each waits for this member's cmaDone below.
    for (int m = 0; m < n; ++m) {
        if (m != me_) checkMember(op, m);
    }
    // Done reading: peers may let their inputs go. Then wait until they have read this one's.
    self.cmaDone.store(seq, std::memory_order_release);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    for (int m = 0; m < n; ++m) {
        if (m != me_) wake(m);
    }
    const auto unread = [&](int m) { return MIXZ_SHM_CONTROL(m).cmaDone.load(std::memory_order_acquire) < seq; };
    waitFor(
        op,
        [&]() -> int {
            for (int m = 0; m < n; ++m) {
                if (m != me_ && unread(m)) return m;
            }
            return -1;
        },
        [&](int m) { return unread(m); }, "");
}

void ShmDomain::throwCmaMismatch(const OpContext& op, int writer) const {
    const Control& control = MIXZ_SHM_CONTROL(writer);
    const std::uint64_t theirs = control.cmaTagKind.load(std::memory_order_relaxed);
    MIXZ_THROW(InvalidArgument, op.label(), " is collective #", opSeq_, " on this rank, but ",
               describePeer(members_[writer]), " called ", opKindName(static_cast<OpKind>(theirs & 0xff)), " (tag ",
               theirs >> 8, ") of another size",
               ": every member must call the same collectives, in the same order, with the same sizes");
}

void ShmDomain::readPeer(const OpContext& op, int writer, std::uint8_t* target, std::uint64_t address,
                         std::size_t bytes) {
    std::size_t done = 0;
    while (done < bytes) {
        if (aborted_.load(std::memory_order_acquire)) {
            const Control& self = MIXZ_SHM_CONTROL(me_);
            throw IoError(detail::concat(op.label(), ": aborted on this rank: ",
                                         std::string(self.reason, strnlen(self.reason, kReasonBytes))));
        }
        checkMember(op, writer);
        if (Clock::now() >= op.deadline) throwTimeout(op, members_[writer], "reading its buffer");
        const std::size_t take = std::min(kCmaSliceBytes, bytes - done);
        struct iovec local {target + done, take};
        struct iovec remote {reinterpret_cast<void*>(address + done), take};
        const ssize_t got = process_vm_readv(members_[writer].pid, &local, 1, &remote, 1, 0);
        if (got < 0) {
            if (errno == EINTR) continue;
            const int error = errno;
            checkMember(op, writer);
            throwPeerError(op, members_[writer], "cannot read its buffer (process_vm_readv): " + errnoText(error));
        }
        if (got == 0) throwPeerError(op, members_[writer], "reading its buffer made no progress");
        done += static_cast<std::size_t>(got);
    }
}

void ShmDomain::reduceScatter(const std::uint8_t* input, std::uint8_t* output, const std::vector<std::size_t>& counts,
                              const std::vector<std::size_t>& displs, tensor::DType dtype, ReduceOp reduceOp,
                              const OpContext& op) {
    MIXZ_ENFORCE_EQ(counts.size(), members_.size(), "one count per member");
    beginOp(op);
    const int n = size();
    const std::size_t elementBytes = reducibleElementBytes(dtype);
    // Each round carries, for every other member d, the next piece of chunk d, in a fixed slot.
    std::size_t pieceElements = layout_->entryBytes / static_cast<std::size_t>(n - 1) / elementBytes;
    if (pieceElements >= 64) pieceElements -= pieceElements % 64;
    MIXZ_ENFORCE(pieceElements > 0, "entry of ", layout_->entryBytes, " bytes too small for ", n, " members");
    const std::size_t pieceBytes = pieceElements * elementBytes;
    const std::size_t maxCount = *std::max_element(counts.begin(), counts.end());
    const std::uint64_t rounds = (maxCount + pieceElements - 1) / pieceElements;
    const auto slotOf = [&](int writer, int destination) {
        return static_cast<std::size_t>(destination < writer ? destination : destination - 1);
    };
    const auto pieceOf = [&](int chunk, std::uint64_t round, std::size_t* begin) -> std::size_t {
        const std::size_t first = static_cast<std::size_t>(round) * pieceElements;
        *begin = first;
        return first >= counts[chunk] ? 0 : std::min(pieceElements, counts[chunk] - first);
    };

    std::uint64_t wrote = 0;
    std::uint64_t reduced = 0;
    std::vector<const void*> sources(n);
    while (wrote < rounds || reduced < rounds) {
        bool progress = false;
        if (wrote < rounds && ringHasSpace()) {
            std::uint8_t* entry = writeEntry(op);
            for (int d = 0; d < n; ++d) {
                if (d == me_) continue;
                std::size_t begin = 0;
                const std::size_t elements = pieceOf(d, wrote, &begin);
                if (elements > 0) {
                    std::memcpy(entry + slotOf(me_, d) * pieceBytes, input + (displs[d] + begin) * elementBytes,
                                elements * elementBytes);
                }
            }
            publishWrite();
            ++wrote;
            progress = true;
        }
        if (reduced < rounds) {
            bool ready = true;
            for (int w = 0; w < n && ready; ++w) {
                if (w != me_ && !roundAvailable(w, consumed_[w])) ready = false;
            }
            if (ready) {
                std::size_t begin = 0;
                const std::size_t elements = pieceOf(me_, reduced, &begin);
                for (int w = 0; w < n; ++w) {
                    if (w == me_) {
                        sources[w] = input + (displs[me_] + begin) * elementBytes;
                    } else {
                        sources[w] = readEntry(w, consumed_[w], op) + slotOf(w, me_) * pieceBytes;
                    }
                }
                if (elements > 0) {
                    reduce(dtype, reduceOp, output + begin * elementBytes, sources.data(), static_cast<std::size_t>(n),
                           elements, n);
                }
                for (int w = 0; w < n; ++w) {
                    if (w != me_) publishConsumed(w);
                }
                ++reduced;
                progress = true;
            }
        }
        if (progress) continue;
        waitFor(
            op,
            [&]() -> int {
                int blocker = -1;
                if (reduced < rounds) {
                    bool ready = true;
                    for (int w = 0; w < n; ++w) {
                        if (w != me_ && !roundAvailable(w, consumed_[w])) {
                            ready = false;
                            if (blocker < 0) blocker = w;
                        }
                    }
                    if (ready) return -1;
                }
                if (wrote < rounds) {
                    if (ringHasSpace()) return -1;
                    if (blocker < 0) blocker = slowestReader();
                }
                return blocker;
            },
            [&](int) { return true; }, "");
    }
}

void ShmDomain::allreduce(const std::uint8_t* input, std::uint8_t* output, std::size_t count, tensor::DType dtype,
                          ReduceOp reduceOp, const OpContext& op) {
    const int n = size();
    const std::size_t elementBytes = reducibleElementBytes(dtype);
    // Chunks as even as possible: the first count % n members get one element more.
    std::vector<std::size_t> counts(n), displs(n);
    std::size_t offset = 0;
    for (int m = 0; m < n; ++m) {
        counts[m] = count / n + (static_cast<std::size_t>(m) < count % n ? 1 : 0);
        displs[m] = offset;
        offset += counts[m];
    }
    reduceScatter(input, output + displs[me_] * elementBytes, counts, displs, dtype, reduceOp, op);
    std::vector<std::vector<ShmRange>> ranges(n);
    for (int m = 0; m < n; ++m) ranges[m].push_back({displs[m] * elementBytes, counts[m] * elementBytes});
    allgather(output, ranges, {output + displs[me_] * elementBytes}, op);
}

void ShmDomain::broadcast(std::uint8_t* buffer, std::size_t bytes, int root, const OpContext& op) {
    std::vector<std::vector<ShmRange>> ranges(members_.size());
    ranges[root].push_back({0, bytes});
    std::vector<const std::uint8_t*> sources;
    if (root == me_) sources.push_back(buffer);
    allgather(buffer, ranges, sources, op);
}

void ShmDomain::barrier(const OpContext& op) {
    const std::uint64_t seq = beginOp(op);
    waitFor(
        op,
        [&]() -> int {
            for (int m = 0; m < size(); ++m) {
                if (m != me_ && MIXZ_SHM_CONTROL(m).opSeq.load(std::memory_order_acquire) < seq) return m;
            }
            return -1;
        },
        [&](int m) { return MIXZ_SHM_CONTROL(m).opSeq.load(std::memory_order_acquire) < seq; }, "");
}

#undef MIXZ_SHM_CONTROL
#undef MIXZ_SHM_CONSUMED

} // namespace mixz::comm
