#include "mixz/common/thread_pool.h"

#include <algorithm>
#include <atomic>
#include <exception>

namespace mixz {

// One parallelFor call. Shared with the workers that picked it up, so a worker that dequeues it
// after the caller returned still holds a valid object (it then finds no task left and lets go).
struct ThreadPool::Job {
    Job(std::size_t taskCount, const std::function<void(std::size_t)>& taskFn) : tasks(taskCount), task(taskFn) {}

    // Runs tasks until none is left. `task` is only called for indices below `tasks`, and the
    // caller waits for all of them, so the reference to its std::function stays valid.
    void run() {
        for (;;) {
            const std::size_t index = next.fetch_add(1, std::memory_order_relaxed);
            if (index >= tasks) return;
            try {
                task(index);
            } catch (...) {
                std::lock_guard<std::mutex> lock(mutex);
                if (!error) error = std::current_exception();
            }
            if (done.fetch_add(1, std::memory_order_acq_rel) + 1 == tasks) {
                // Taking the lock orders this notify after the caller's predicate check.
                { std::lock_guard<std::mutex> lock(mutex); }
                finished.notify_all();
            }
        }
    }

    const std::size_t tasks;
    const std::function<void(std::size_t)>& task;
    std::atomic<std::size_t> next{0};
    std::atomic<std::size_t> done{0};
    std::mutex mutex;
    std::condition_variable finished;
    std::exception_ptr error;
};

ThreadPool::ThreadPool(std::size_t maxWorkers) : maxWorkers_(maxWorkers) {}

ThreadPool::~ThreadPool() {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        stopping_ = true;
    }
    wake_.notify_all();
    for (std::thread& worker : workers_) worker.join();
}

ThreadPool& ThreadPool::shared() {
    static ThreadPool* const pool = new ThreadPool(64);
    return *pool;
}

void ThreadPool::ensureWorkers(std::size_t count) {
    // Called with mutex_ held.
    count = std::min(count, maxWorkers_);
    while (workers_.size() < count) workers_.emplace_back([this] { workerLoop(); });
}

void ThreadPool::workerLoop() {
    for (;;) {
        std::shared_ptr<Job> job;
        {
            std::unique_lock<std::mutex> lock(mutex_);
            wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
            if (queue_.empty()) return; // stopping
            job = std::move(queue_.front());
            queue_.pop_front();
        }
        job->run();
    }
}

void ThreadPool::parallelFor(std::size_t tasks, std::size_t threads,
                             const std::function<void(std::size_t)>& task) {
    if (tasks == 0) return;
    threads = std::clamp<std::size_t>(threads, 1, maxThreads());
    const std::size_t helpers = std::min(threads, tasks) - 1;
    if (helpers == 0) {
        for (std::size_t i = 0; i < tasks; ++i) task(i);
        return;
    }

    auto job = std::make_shared<Job>(tasks, task);
    {
        std::lock_guard<std::mutex> lock(mutex_);
        ensureWorkers(helpers);
        for (std::size_t i = 0; i < helpers; ++i) queue_.push_back(job);
    }
    if (helpers == 1) {
        wake_.notify_one();
    } else {
        wake_.notify_all();
    }
    job->run();
    {
        // Entries no worker took yet are dropped: all tasks are handed out already.
        std::lock_guard<std::mutex> lock(mutex_);
        queue_.erase(std::remove(queue_.begin(), queue_.end(), job), queue_.end());
    }
    {
        std::unique_lock<std::mutex> lock(job->mutex);
        job->finished.wait(lock, [&] { return job->done.load(std::memory_order_acquire) == tasks; });
    }
    if (job->error) std::rethrow_exception(job->error);
}

} // namespace mixz
