// backend::OrderedQueue: a Queue whose work runs one item at a time, in submission order, on one
// thread of its own. Both backends' communication queues are one (DeepSpeed's all-gather and
// reduce streams collapsed into one ordered queue: every rank must issue its collectives in the
// same order, and one queue makes that order the program order).
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <mutex>
#include <thread>

#include "mixz/backend/compute_backend.h"

namespace mixz::backend {

class OrderedQueue final : public Queue {
public:
    // The thread starts now.
    OrderedQueue();
    // Runs everything already submitted, then joins the thread.
    ~OrderedQueue() override;
    OrderedQueue(const OrderedQueue&) = delete;
    OrderedQueue& operator=(const OrderedQueue&) = delete;

    std::shared_future<void> submit(std::function<void()> work) override;

private:
    void loop();

    std::mutex mutex_;
    std::condition_variable wake_;
    std::deque<std::function<void()>> queue_;
    bool stopping_ = false;
    std::thread thread_; // last: started once the members above exist
};

} // namespace mixz::backend
