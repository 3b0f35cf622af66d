// A small fixed pool of worker threads for data-parallel loops over independent work items
// (quantization blocks, dtype conversion chunks).
//
// Threads are started lazily, the first time a loop asks for them, and then live as long as the
// pool: no thread is created per call. parallelFor may be called from several threads at once
// (Node's libuv pool runs several AsyncWorkers concurrently); each call runs its own tasks on the
// calling thread and on as many idle workers as it asked for, so a call never waits for another
// call's work and never deadlocks when every worker is busy: the caller then does all of it.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace mixz {

class ThreadPool {
public:
    // A pool that may start up to `maxWorkers` threads (the caller of parallelFor is one more).
    explicit ThreadPool(std::size_t maxWorkers);
    // Stops and joins the workers. Must not run while a parallelFor is in flight.
    ~ThreadPool();

    ThreadPool(const ThreadPool&) = delete;
    ThreadPool& operator=(const ThreadPool&) = delete;

    // Runs task(i) for every i in [0, tasks), on the calling thread and on up to `threads - 1`
    // workers, and returns when all have run. Tasks are handed out one at a time in increasing
    // order (dynamic scheduling), so they should be of similar size and coarse (tens of
    // microseconds or more). `threads` is clamped to [1, maxThreads()]. If tasks throw, the first
    // exception is rethrown here after every task has finished.
    void parallelFor(std::size_t tasks, std::size_t threads, const std::function<void(std::size_t)>& task);

    // Workers plus the calling thread: the most threads one parallelFor can use.
    std::size_t maxThreads() const noexcept { return maxWorkers_ + 1; }

    // The process-wide pool (64 workers at most, started on demand). Deliberately never destroyed:
    // its threads must not be joined by static destructors racing exit() in a Node process.
    static ThreadPool& shared();

private:
    struct Job;

    void ensureWorkers(std::size_t count);
    void workerLoop();

    const std::size_t maxWorkers_;
    std::mutex mutex_;
    std::condition_variable wake_;
    std::deque<std::shared_ptr<Job>> queue_;
    std::vector<std::thread> workers_;
    bool stopping_ = false;
};

} // namespace mixz
