#include "mixz/backend/ordered_queue.h"

#include <memory>
#include <utility>

namespace mixz::backend {

OrderedQueue::OrderedQueue() : thread_([this] { loop(); }) {}

OrderedQueue::~OrderedQueue() {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        stopping_ = true;
    }
    wake_.notify_all();
    thread_.join();
}

std::shared_future<void> OrderedQueue::submit(std::function<void()> work) {
    // packaged_task carries work's exception into the future; the loop itself never sees it.
    auto task = std::make_shared<std::packaged_task<void()>>(std::move(work));
    std::shared_future<void> future = task->get_future().share();
    {
        std::lock_guard<std::mutex> lock(mutex_);
        queue_.push_back([task] { (*task)(); });
    }
    wake_.notify_one();
    return future;
}

void OrderedQueue::loop() {
    for (;;) {
        std::function<void()> job;
        {
            std::unique_lock<std::mutex> lock(mutex_);
            wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
            if (queue_.empty()) return; // stopping and drained
            job = std::move(queue_.front());
            queue_.pop_front();
        }
        job();
    }
}

} // namespace mixz::backend
