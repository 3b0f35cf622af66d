#include "mixz/runtime/watchdog.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <string_view>

#include "mixz/common/error.h"

namespace mixz::runtime {
namespace {

std::int64_t nowNs() noexcept {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

void validateLease(std::int64_t leaseMs, const char* what) {
    if (leaseMs < 0 || leaseMs > Watchdog::kMaxLeaseMs) {
        MIXZ_THROW(InvalidArgument, what, " must be a whole number of milliseconds in [0, ", Watchdog::kMaxLeaseMs,
                   "], got ", leaseMs);
    }
}

// A close-on-exec duplicate numbered 3 or above, so that 0, 1 and 2 stay free for stdio even in a
// process started with some of them closed. -1 with errno on failure.
int duplicateAbove2(int fd) noexcept {
    return ::fcntl(fd, F_DUPFD_CLOEXEC, 3);
}

// Moves a descriptor this object created to 3 or above (see duplicateAbove2).
int moveAbove2(int fd) noexcept {
    if (fd > 2) return fd;
    const int moved = duplicateAbove2(fd);
    const int savedErrno = errno;
    ::close(fd);
    errno = savedErrno;
    return moved;
}

// One line for stderr built in a fixed buffer: nothing is allocated once the watchdog has decided
// to kill (the heap may be locked by the very thread that is stuck). Text that does not fit is cut.
class Line {
public:
    void append(std::string_view text) noexcept {
        const std::size_t room = kCapacity - 1 - size_;  // one byte stays free for the newline
        const std::size_t count = text.size() < room ? text.size() : room;
        std::memcpy(data_ + size_, text.data(), count);
        size_ += count;
    }

    void appendNumber(long long value) noexcept {
        char reversed[24];
        std::size_t count = 0;
        unsigned long long magnitude =
            value < 0 ? 0ULL - static_cast<unsigned long long>(value) : static_cast<unsigned long long>(value);
        do {
            reversed[count++] = static_cast<char>('0' + magnitude % 10);
            magnitude /= 10;
        } while (magnitude != 0);
        if (value < 0) reversed[count++] = '-';
        char text[24];
        for (std::size_t i = 0; i < count; ++i) text[i] = reversed[count - 1 - i];
        append(std::string_view(text, count));
    }

    // Ends the line and writes it to stderr in one write(2) when possible. Waits at most a second
    // for room: a stderr pipe that nobody drains must not keep the watchdog from killing.
    void writeToStderr() noexcept {
        data_[size_++] = '\n';
        std::size_t written = 0;
        while (written < size_) {
            pollfd out{STDERR_FILENO, POLLOUT, 0};
            const int ready = ::poll(&out, 1, 1000);
            if (ready < 0 && errno == EINTR) continue;
            if (ready <= 0 || (out.revents & POLLOUT) == 0) return;
            const ssize_t count = ::write(STDERR_FILENO, data_ + written, size_ - written);
            if (count > 0) {
                written += static_cast<std::size_t>(count);
            } else if (count < 0 && errno != EINTR && errno != EAGAIN) {
                return;  // stderr is closed or broken: kill anyway
            }
        }
    }

private:
    static constexpr std::size_t kCapacity = 1024;
    char data_[kCapacity];
    std::size_t size_ = 0;
};

// Finishes `line` with what is about to be killed, writes it, and sends SIGKILL: to the process
// group when this process leads it (the rank daemon does: everything the script spawned goes
// too), else to this process only, so a watchdog in a process that does not own its group never
// kills its parent's shell job.
[[noreturn]] void killAfterWriting(Line& line) noexcept {
    const pid_t pid = ::getpid();
    const pid_t group = ::getpgrp();
    if (group == pid) {
        line.append("; killing process group ");
        line.appendNumber(group);
    } else {
        line.append("; killing process ");
        line.appendNumber(pid);
        line.append(" (it does not lead its process group ");
        line.appendNumber(group);
        line.append(")");
    }
    line.writeToStderr();
    if (group == pid) ::kill(-group, SIGKILL);
    ::kill(pid, SIGKILL);
    // SIGKILL to oneself takes effect before kill() returns to user space; this is never reached.
    ::_exit(128 + SIGKILL);
}

} // namespace

Watchdog::Watchdog(const WatchdogOptions& options) {
    if (options.watchFd < -1) {
        MIXZ_THROW(InvalidArgument, "watchdog: watchFd must be a file descriptor or -1, got ", options.watchFd);
    }
    validateLease(options.leaseMs, "watchdog: leaseMs");
    if (options.label.empty()) MIXZ_THROW(InvalidArgument, "watchdog: label must not be empty");
    if (options.label.size() > kMaxLabelBytes) {
        MIXZ_THROW(InvalidArgument, "watchdog: label must be at most ", kMaxLabelBytes, " bytes, got ",
                   options.label.size());
    }
    for (const char c : options.label) {
        const auto byte = static_cast<unsigned char>(c);
        if (byte < 0x20 || byte == 0x7f) {
            MIXZ_THROW(InvalidArgument,
                       "watchdog: label must not contain control characters (it is printed on one line)");
        }
    }

    prefix_ = "mixz: " + options.label + ": watchdog: ";
    if (options.watchFd == 0) {
        closedSubject_ = "stdin";
        closedMeaning_ = "the launcher or its SSH channel is gone";
    } else {
        closedSubject_ = detail::concat("fd ", options.watchFd);
        closedMeaning_ = "whatever held its other end is gone";
    }

    try {
        if (options.watchFd >= 0) {
            watchFd_ = duplicateAbove2(options.watchFd);
            if (watchFd_ < 0) {
                const int error = errno;
                if (error == EBADF) {
                    MIXZ_THROW(InvalidArgument, "watchdog: watchFd ", options.watchFd,
                               " is not an open file descriptor");
                }
                MIXZ_THROW(IoError, "watchdog: cannot duplicate fd ", options.watchFd, ": ", std::strerror(error));
            }
            struct stat status {};
            watchFifo_ = ::fstat(watchFd_, &status) == 0 && S_ISFIFO(status.st_mode);
        }

        int wake[2];
        if (::pipe2(wake, O_CLOEXEC | O_NONBLOCK) != 0) {
            MIXZ_THROW(IoError, "watchdog: cannot create its wake-up pipe: ", std::strerror(errno));
        }
        wakeRead_ = moveAbove2(wake[0]);
        wakeWrite_ = moveAbove2(wake[1]);
        if (wakeRead_ < 0 || wakeWrite_ < 0) {
            MIXZ_THROW(IoError, "watchdog: cannot move its wake-up pipe above fd 2: ", std::strerror(errno));
        }

        readBuffer_ = std::make_unique<char[]>(kReadChunkBytes);
        if (options.leaseMs > 0) {
            leaseMs_.store(options.leaseMs, std::memory_order_relaxed);
            deadlineNs_.store(nowNs() + options.leaseMs * 1'000'000, std::memory_order_release);
        }
        // The thread starts with every signal blocked, so that signals meant for the process (SIGTERM,
        // SIGCHLD, SIGWINCH) reach Node's own threads and never interrupt or run handlers on this
        // one. It inherits the mask of the thread creating it; ours is restored right after.
        sigset_t all;
        sigset_t previous;
        sigfillset(&all);
        const int masked = ::pthread_sigmask(SIG_SETMASK, &all, &previous);
        try {
            thread_ = std::thread([this] { run(); });
        } catch (...) {
            if (masked == 0) ::pthread_sigmask(SIG_SETMASK, &previous, nullptr);
            throw;
        }
        if (masked == 0) ::pthread_sigmask(SIG_SETMASK, &previous, nullptr);
    } catch (...) {
        stopping_.store(true, std::memory_order_release);
        closeDescriptors();
        throw;
    }
}

Watchdog::~Watchdog() {
    try {
        stop();
    } catch (...) {
        // Only a broken invariant (stop() from the watchdog's own thread) or a failed join gets
        // here; a destructor cannot report either.
    }
}

void Watchdog::renew(std::int64_t leaseMs) {
    validateLease(leaseMs, "watchdog: renew: leaseMs");
    leaseMs_.store(leaseMs, std::memory_order_relaxed);
    deadlineNs_.store(leaseMs == 0 ? kNoDeadline : nowNs() + leaseMs * 1'000'000, std::memory_order_release);
}

void Watchdog::stop() {
    std::lock_guard<std::mutex> lock(stopMutex_);
    stopping_.store(true, std::memory_order_release);
    if (thread_.joinable()) {
        MIXZ_ENFORCE(thread_.get_id() != std::this_thread::get_id(), "watchdog: stop() called from its own thread");
        const char byte = 1;
        // Non-blocking; a full pipe already wakes the thread.
        [[maybe_unused]] const ssize_t ignored = ::write(wakeWrite_, &byte, 1);
        thread_.join();
    }
    closeDescriptors();
}

void Watchdog::run() noexcept {
    while (!stopping_.load(std::memory_order_acquire)) {
        int timeoutMs = kPollIntervalMs;
        const std::int64_t deadline = deadlineNs_.load(std::memory_order_acquire);
        if (deadline != kNoDeadline) {
            const std::int64_t now = nowNs();
            if (now >= deadline) {
                triggerLease(leaseMs_.load(std::memory_order_relaxed));
                return;
            }
            const std::int64_t remainingMs = (deadline - now + 999'999) / 1'000'000;
            if (remainingMs < timeoutMs) timeoutMs = static_cast<int>(remainingMs);
        }

        pollfd fds[2] = {{wakeRead_, POLLIN, 0}, {watchFd_, POLLIN, 0}};
        const nfds_t count = watchFd_ >= 0 ? 2 : 1;
        const int ready = ::poll(fds, count, timeoutMs);
        if (stopping_.load(std::memory_order_acquire)) return;
        if (ready < 0) {
            // EINTR: look again. Anything else (ENOMEM) must not turn into a busy loop.
            if (errno != EINTR) ::poll(nullptr, 0, timeoutMs);
            continue;
        }
        if (count == 2 && fds[1].revents != 0) {
            const int outcome = drain(fds[1].revents);
            if (outcome != 0) {
                triggerClosed(outcome > 0 ? outcome : 0);
                return;
            }
        }
    }
}

int Watchdog::drain(short revents) noexcept {
    if ((revents & POLLIN) == 0) {
        // A hang-up or an error with nothing left to read.
        return (revents & (POLLHUP | POLLERR | POLLNVAL)) != 0 ? -1 : 0;
    }
    std::size_t want = kReadChunkBytes;
    if (watchFifo_) {
        // On a pipe, read no more than is there. If something else read the data since poll()
        // (the watchdog should be the only reader, but JS may touch process.stdin), a blocking
        // read would hang this thread, and stop() with it.
        int available = 0;
        if (::ioctl(watchFd_, FIONREAD, &available) == 0) {
            if (available <= 0) return (revents & (POLLHUP | POLLERR)) != 0 ? -1 : 0;
            if (static_cast<std::size_t>(available) < want) want = static_cast<std::size_t>(available);
        }
    }
    const ssize_t got = ::read(watchFd_, readBuffer_.get(), want);
    if (got > 0) return 0;  // data, thrown away: the lifeline holds
    if (got == 0) return -1;  // end of file
    const int error = errno;
    if (error == EAGAIN || error == EWOULDBLOCK || error == EINTR) return 0;
    return error;
}

void Watchdog::triggerClosed(int readErrno) noexcept {
    if (stopping_.load(std::memory_order_acquire)) return;
    Line line;
    line.append(prefix_);
    line.append(closedSubject_);
    line.append(" closed");
    if (readErrno != 0) {
        line.append(" (read failed with errno ");
        line.appendNumber(readErrno);
        line.append(")");
    }
    line.append(": ");
    line.append(closedMeaning_);
    killAfterWriting(line);
}

void Watchdog::triggerLease(std::int64_t leaseMs) noexcept {
    if (stopping_.load(std::memory_order_acquire)) return;
    Line line;
    line.append(prefix_);
    line.append("no coordinator heartbeat acknowledgement for ");
    line.appendNumber(leaseMs);
    line.append(" ms: the coordinator is unreachable or this rank's JavaScript thread is stuck");
    killAfterWriting(line);
}

void Watchdog::closeDescriptors() noexcept {
    for (int* fd : {&watchFd_, &wakeRead_, &wakeWrite_}) {
        if (*fd >= 0) ::close(*fd);
        *fd = -1;
    }
}

} // namespace mixz::runtime
