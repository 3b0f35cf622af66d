// The rank daemon's last line of defence: a native thread that kills the process (and its process
// group) when the daemon's lifeline breaks, even while the JavaScript thread is blocked.
//
// DESIGN.md §1: a rank daemon "exits by itself when its lifeline breaks (stdin EOF on SSH,
// coordinator socket lost, parent gone), even if the script's JS thread is blocked". The JS side
// notices most of these itself; this thread covers the case where JS cannot run at all (a busy
// loop in the user's script, a deadlocked synchronous call). It watches two things:
//
//  - a file descriptor (the daemon passes 0, its stdin): the launcher, or the SSH channel it runs
//    over, holds the write end. End of file, a hang-up or an error on it means the launcher or the
//    channel is gone. Data that arrives is read and thrown away, so the watchdog must be the only
//    reader of that descriptor (it polls its own duplicate, so JS closing or reusing the number
//    does not matter).
//  - a lease: JS renews it whenever the coordinator acknowledges a heartbeat. When it runs out,
//    either the coordinator is unreachable or the JS thread is stuck, and the rank is useless.
//
// When either fires, the thread writes one line to stderr (write(2), preformatted, no allocation)
//
//   mixz: rank 3: watchdog: stdin closed: the launcher or its SSH channel is gone; killing process group 1234
//
// and sends SIGKILL to the process group if this process leads it (the daemon does), else to this
// process alone. Nothing is cleaned up: this is what runs when cleaning up is no longer possible.
//
// The thread never calls into JavaScript. Core code: knows nothing of Node.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

namespace mixz::runtime {

struct WatchdogOptions {
    // Descriptor whose end of file breaks the lifeline; -1 watches none. The watchdog polls a
    // close-on-exec duplicate of it, so the caller may close its own copy.
    int watchFd = -1;
    // Lease in milliseconds, armed at construction; 0 starts without a lease (renew() arms one).
    std::int64_t leaseMs = 0;
    // Who is watched, for the message ("rank 3"): 1 to kMaxLabelBytes bytes, no control characters.
    std::string label;
};

class Watchdog {
public:
    // Longest lease, as for setTimeout: 2^31 - 1 ms, about 24.8 days.
    static constexpr std::int64_t kMaxLeaseMs = 2147483647;
    static constexpr std::size_t kMaxLabelBytes = 256;
    // Longest sleep of the thread between two looks at the clock and the stop flag.
    static constexpr int kPollIntervalMs = 100;
    // Most data read (and discarded) from the watched descriptor per wake-up.
    static constexpr std::size_t kReadChunkBytes = 64 * 1024;

    // Validates the options (mixz::InvalidArgument: watchFd < -1 or not open, leaseMs out of
    // [0, kMaxLeaseMs], bad label) and starts the thread. IoError when the descriptors it needs
    // cannot be made (EMFILE).
    explicit Watchdog(const WatchdogOptions& options);

    // Stops the thread (see stop()).
    ~Watchdog();

    Watchdog(const Watchdog&) = delete;
    Watchdog& operator=(const Watchdog&) = delete;
    Watchdog(Watchdog&&) = delete;
    Watchdog& operator=(Watchdog&&) = delete;

    // Sets the lease deadline to now + leaseMs on the steady clock; 0 removes the lease. Safe from
    // any thread; does nothing after stop(). InvalidArgument outside [0, kMaxLeaseMs]. The thread
    // fires at most kPollIntervalMs after the deadline (exactly at it unless a renewal moved the
    // deadline earlier while the thread slept).
    void renew(std::int64_t leaseMs);

    // Stops and joins the thread: wakes it at once, so this returns within microseconds unless
    // the thread is writing its line. Idempotent and safe from any thread but the watchdog's own.
    void stop();

    // Whether the thread is running (started and not stopped).
    bool running() const noexcept { return !stopping_.load(std::memory_order_acquire); }

private:
    void run() noexcept;
    // Reads what the watched descriptor has after poll() reported `revents`. Returns 0 while the
    // lifeline holds, -1 at end of file or hang-up, and an errno when reading failed.
    int drain(short revents) noexcept;
    // Writes the line and kills; returns only if stop() was requested meanwhile.
    void triggerClosed(int readErrno) noexcept;
    void triggerLease(std::int64_t leaseMs) noexcept;
    void closeDescriptors() noexcept;

    // "mixz: <label>: watchdog: "
    std::string prefix_;
    // "stdin" for descriptor 0, "fd <n>" otherwise, and what its end of file means.
    std::string closedSubject_;
    std::string closedMeaning_;

    int watchFd_ = -1;  // our duplicate, or -1
    bool watchFifo_ = false;
    int wakeRead_ = -1;
    int wakeWrite_ = -1;
    std::unique_ptr<char[]> readBuffer_;  // kReadChunkBytes, allocated before the thread starts

    // Steady-clock nanoseconds of the lease deadline; kNoDeadline when no lease is armed.
    static constexpr std::int64_t kNoDeadline = std::numeric_limits<std::int64_t>::max();
    std::atomic<std::int64_t> deadlineNs_{kNoDeadline};
    std::atomic<std::int64_t> leaseMs_{0};
    std::atomic<bool> stopping_{false};

    std::mutex stopMutex_;
    std::thread thread_;
};

} // namespace mixz::runtime
