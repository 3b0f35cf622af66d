#include "mixz/comm/self_test.h"

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <random>
#include <thread>

#include "mixz/comm/collectives.h"
#include "mixz/common/error.h"

namespace mixz::comm::testing {

namespace {

using tensor::DType;
using Bytes = std::vector<std::uint8_t>;

// The in-memory store of the threads: every rank deposits its address and waits for all.
class Exchange {
public:
    explicit Exchange(int n) : addresses_(static_cast<std::size_t>(n)) {}

    std::vector<Bytes> trade(int rank, Bytes mine, std::chrono::milliseconds timeout) {
        std::unique_lock<std::mutex> lock(mutex_);
        addresses_[rank] = std::move(mine);
        ++arrived_;
        cv_.notify_all();
        if (!cv_.wait_for(lock, timeout, [&] { return failed_ || arrived_ == addresses_.size(); })) {
            MIXZ_THROW(IoError, "address exchange: timed out");
        }
        if (failed_) MIXZ_THROW(IoError, "address exchange: another rank failed before it");
        return addresses_;
    }

    void fail() {
        std::lock_guard<std::mutex> lock(mutex_);
        failed_ = true;
        cv_.notify_all();
    }

private:
    std::mutex mutex_;
    std::condition_variable cv_;
    std::vector<Bytes> addresses_;
    std::size_t arrived_ = 0;
    bool failed_ = false;
};

std::vector<std::string> hostsOf(const SuiteOptions& options) {
    if (!options.hosts.empty()) {
        MIXZ_ENFORCE_EQ(options.hosts.size(), static_cast<std::size_t>(options.ranks), "one host per rank");
        return options.hosts;
    }
    return std::vector<std::string>(static_cast<std::size_t>(options.ranks), "localhost");
}

std::unique_ptr<Communicator> connectRank(const SuiteOptions& options, int rank, Exchange& exchange) {
    const std::vector<std::string> hosts = hostsOf(options);
    PrepareOptions prepare;
    prepare.rank = rank;
    prepare.worldSize = options.ranks;
    prepare.host = hosts[rank];
    prepare.jobId = options.jobId;
    for (int r = 0; r < options.ranks; ++r) {
        if (hosts[r] == hosts[rank]) prepare.localRanks.push_back(r);
    }
    prepare.timeout = options.timeout;
    prepare.transport = options.transport;
    prepare.bindAddress = options.bindAddress;
    auto comm = std::make_unique<Communicator>();
    try {
        Bytes mine = comm->prepare(prepare);
        comm->connect(exchange.trade(rank, std::move(mine), options.timeout));
    } catch (...) {
        exchange.fail();
        throw;
    }
    return comm;
}

// Runs fn(rank) on one thread per rank; rethrows the exception of the lowest failing rank.
template <typename Fn>
void runRanks(int n, Fn fn) {
    std::vector<std::exception_ptr> errors(static_cast<std::size_t>(n));
    std::vector<std::thread> threads;
    for (int rank = 0; rank < n; ++rank) {
        threads.emplace_back([&, rank] {
            try {
                fn(rank);
            } catch (...) {
                errors[rank] = std::current_exception();
            }
        });
    }
    for (std::thread& thread : threads) thread.join();
    for (const auto& error : errors) {
        if (error) std::rethrow_exception(error);
    }
}

// Small integers in [-8, 8]: exact in fp16 and bf16, and so are their sums over a few ranks.
float valueOf(int rank, std::size_t index) {
    return static_cast<float>(static_cast<int>((index * 7 + static_cast<std::size_t>(rank) * 3 + 1) % 17) - 8);
}

std::uint8_t byteOf(int rank, std::size_t index) {
    return static_cast<std::uint8_t>(rank * 131 + index * 7 + 3);
}

std::size_t elementBytes(DType dtype) { return dtype == DType::kFloat32 ? 4 : 2; }

void store(DType dtype, std::uint8_t* buffer, std::size_t index, float value) {
    if (dtype == DType::kFloat32) {
        std::memcpy(buffer + index * 4, &value, 4);
    } else {
        const std::uint16_t bits = dtype == DType::kFloat16 ? tensor::floatToFp16(value) : tensor::floatToBf16(value);
        std::memcpy(buffer + index * 2, &bits, 2);
    }
}

std::uint32_t bitsAt(DType dtype, const std::uint8_t* buffer, std::size_t index) {
    if (dtype == DType::kFloat32) {
        std::uint32_t bits;
        std::memcpy(&bits, buffer + index * 4, 4);
        return bits;
    }
    std::uint16_t bits;
    std::memcpy(&bits, buffer + index * 2, 2);
    return bits;
}

std::uint32_t expectedBits(DType dtype, float value) {
    if (dtype == DType::kFloat32) return tensor::floatBits(value);
    return dtype == DType::kFloat16 ? tensor::floatToFp16(value) : tensor::floatToBf16(value);
}

// The reference: sources in rank order, accumulated in fp32, as every transport does.
float referenceReduce(ReduceOp op, int n, const std::function<float(int)>& value) {
    float acc = value(0);
    for (int m = 1; m < n; ++m) {
        const float x = value(m);
        acc = op == ReduceOp::kMax ? (acc > x ? acc : x) : acc + x;
    }
    return op == ReduceOp::kMean ? acc / static_cast<float>(n) : acc;
}

struct Checker {
    int rank;
    std::mutex* mutex;
    SuiteReport* report;
    std::size_t checks = 0;
    std::vector<std::string> failures;

    void fail(const std::string& what) {
        if (failures.size() < 10) failures.push_back(detail::concat("rank ", rank, ": ", what));
    }

    void flush() {
        std::lock_guard<std::mutex> lock(*mutex);
        report->checks += checks;
        for (auto& failure : failures) {
            if (report->failures.size() < 50) report->failures.push_back(std::move(failure));
        }
    }
};

// The collectives of the suite on one communicator. `worldRanks[m]` is member m's world rank,
// which seeds its data, so a group's results are checked against the right members.
void runCollectives(Communicator& comm, const SuiteOptions& options, Checker& check, std::uint32_t& tag,
                    const std::string& label) {
    const int n = comm.size();
    const int me = comm.rank();
    std::vector<int> seeds;
    for (const Peer& peer : comm.members()) seeds.push_back(peer.rank);
    const auto timeout = options.timeout;

    for (DType dtype : options.dtypes) {
        const std::size_t esize = elementBytes(dtype);
        for (std::size_t count : options.counts) {
            const std::string what = detail::concat(label, " ", dtypeLabel(dtype), " count ", count);
            const std::size_t bytes = count * esize;

            // all-gather, out of place and in place
            for (int inPlace = 0; inPlace < 2; ++inPlace) {
                Bytes input(bytes);
                for (std::size_t i = 0; i < bytes; ++i) input[i] = byteOf(seeds[me], i);
                Bytes output(bytes * n, 0xEE);
                AllgatherOptions o(comm);
                o.tag = ++tag;
                o.timeout = timeout;
                o.inputBytes = bytes;
                o.output = output.data();
                o.outputBytes = output.size();
                if (inPlace) {
                    if (bytes > 0) std::memcpy(output.data() + bytes * me, input.data(), bytes);
                    o.input = output.data() + bytes * me;
                } else {
                    o.input = input.data();
                }
                allgather(o);
                bool ok = true;
                for (int m = 0; m < n && ok; ++m) {
                    for (std::size_t i = 0; i < bytes; ++i) {
                        if (output[bytes * m + i] != byteOf(seeds[m], i)) {
                            check.fail(detail::concat(what, ": allGather", inPlace ? " in place" : "", ": member ",
                                                      m, " byte ", i, " is ", int(output[bytes * m + i]),
                                                      ", expected ", int(byteOf(seeds[m], i))));
                            ok = false;
                            break;
                        }
                    }
                }
                ++check.checks;
            }

            // all-gather with varying sizes (some members contribute nothing when count is 0)
            {
                std::vector<std::size_t> counts(n);
                std::size_t total = 0;
                for (int m = 0; m < n; ++m) {
                    counts[m] = (m % 2 == 0 ? count : count / 2 + static_cast<std::size_t>(m)) * esize;
                    total += counts[m];
                }
                Bytes input(counts[me]);
                for (std::size_t i = 0; i < input.size(); ++i) input[i] = byteOf(seeds[me], i);
                Bytes output(total, 0xEE);
                AllgathervOptions o(comm);
                o.tag = ++tag;
                o.timeout = timeout;
                o.input = input.data();
                o.output = output.data();
                o.outputBytes = total;
                o.bytes = counts;
                allgatherv(o);
                std::size_t offset = 0;
                bool ok = true;
                for (int m = 0; m < n && ok; ++m) {
                    for (std::size_t i = 0; i < counts[m]; ++i) {
                        if (output[offset + i] != byteOf(seeds[m], i)) {
                            check.fail(detail::concat(what, ": allGatherV: member ", m, " byte ", i, " wrong"));
                            ok = false;
                            break;
                        }
                    }
                    offset += counts[m];
                }
                ++check.checks;
            }

            // reduce-scatter, sum and mean (mean in place)
            for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kMean}) {
                Bytes input(bytes * n);
                for (std::size_t i = 0; i < count * n; ++i) store(dtype, input.data(), i, valueOf(seeds[me], i));
                Bytes separate(bytes, 0xEE);
                const bool inPlace = op == ReduceOp::kMean;
                std::uint8_t* output = inPlace ? input.data() + bytes * me : separate.data();
                ReduceScatterOptions o(comm);
                o.tag = ++tag;
                o.timeout = timeout;
                o.input = input.data();
                o.output = output;
                o.count = count;
                o.dtype = dtype;
                o.op = op;
                reduceScatter(o);
                for (std::size_t j = 0; j < count; ++j) {
                    const std::size_t index = count * me + j;
                    const float value = referenceReduce(op, n, [&](int m) { return valueOf(seeds[m], index); });
                    if (bitsAt(dtype, output, j) != expectedBits(dtype, value)) {
                        check.fail(detail::concat(what, ": reduceScatter ", reduceOpName(op), ": element ", j,
                                                  " bits ", bitsAt(dtype, output, j), ", expected ", value));
                        break;
                    }
                }
                ++check.checks;
            }

            // all-reduce, sum (in place), mean and max
            for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kMean, ReduceOp::kMax}) {
                Bytes input(bytes);
                for (std::size_t i = 0; i < count; ++i) store(dtype, input.data(), i, valueOf(seeds[me], i));
                Bytes separate(bytes, 0xEE);
                std::uint8_t* output = op == ReduceOp::kSum ? input.data() : separate.data();
                AllreduceOptions o(comm);
                o.tag = ++tag;
                o.timeout = timeout;
                o.input = input.data();
                o.output = output;
                o.count = count;
                o.dtype = dtype;
                o.op = op;
                allreduce(o);
                for (std::size_t j = 0; j < count; ++j) {
                    const float value = referenceReduce(op, n, [&](int m) { return valueOf(seeds[m], j); });
                    if (bitsAt(dtype, output, j) != expectedBits(dtype, value)) {
                        check.fail(detail::concat(what, ": allReduce ", reduceOpName(op), ": element ", j, " wrong"));
                        break;
                    }
                }
                ++check.checks;
            }

            // broadcast from a root that moves with the count
            {
                const int root = static_cast<int>(count % static_cast<std::size_t>(n));
                Bytes buffer(bytes, 0);
                if (me == root) {
                    for (std::size_t i = 0; i < bytes; ++i) buffer[i] = byteOf(seeds[root], i);
                }
                BroadcastOptions o(comm);
                o.tag = ++tag;
                o.timeout = timeout;
                o.buffer = buffer.data();
                o.bytes = bytes;
                o.root = root;
                broadcast(o);
                for (std::size_t i = 0; i < bytes; ++i) {
                    if (buffer[i] != byteOf(seeds[root], i)) {
                        check.fail(detail::concat(what, ": broadcast from ", root, ": byte ", i, " wrong"));
                        break;
                    }
                }
                ++check.checks;
            }

            BarrierOptions b(comm);
            b.tag = ++tag;
            b.timeout = timeout;
            barrier(b);
        }
    }

    // fp32 all-reduce of arbitrary floats: every member must get the same bits, those of the sum
    // in rank order.
    {
        const std::size_t count = 4099;
        std::vector<std::vector<float>> all(n, std::vector<float>(count));
        for (int m = 0; m < n; ++m) {
            std::mt19937 random(static_cast<std::uint32_t>(seeds[m]) * 7919u + 17u);
            std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
            for (float& x : all[m]) x = uniform(random);
        }
        std::vector<float> output(count);
        AllreduceOptions o(comm);
        o.tag = ++tag;
        o.timeout = timeout;
        o.input = all[me].data();
        o.output = output.data();
        o.count = count;
        allreduce(o);
        for (std::size_t j = 0; j < count; ++j) {
            const float value = referenceReduce(ReduceOp::kSum, n, [&](int m) { return all[m][j]; });
            if (tensor::floatBits(output[j]) != tensor::floatBits(value)) {
                check.fail(detail::concat(label, ": allReduce of random fp32: element ", j, " is ", output[j],
                                          ", expected ", value));
                break;
            }
        }
        ++check.checks;
    }
}

// The hpZ size the suite uses: 2 where it divides every node's rank count, else 1.
int hpzSize(const SuiteOptions& options) {
    const std::vector<std::string> hosts = hostsOf(options);
    if (options.ranks % 2 != 0) return 1;
    for (const std::string& host : hosts) {
        if (std::count(hosts.begin(), hosts.end(), host) % 2 != 0) return 1;
    }
    return 2;
}

} // namespace

SuiteReport runCollectiveSuite(const SuiteOptions& options) {
    MIXZ_ENFORCE(options.ranks >= 1, "ranks ", options.ranks);
    SuiteReport report;
    std::mutex mutex;
    Exchange exchange(options.ranks);
    const auto start = Clock::now();
    runRanks(options.ranks, [&](int rank) {
        std::unique_ptr<Communicator> world = connectRank(options, rank, exchange);
        if (rank == 0) report.transport = world->transportDescription();
        Checker check{rank, &mutex, &report, 0, {}};
        std::uint32_t tag = 0;
        runCollectives(*world, options, check, tag, "world");
        if (options.groups && options.ranks > 1) {
            std::unique_ptr<Communicator> hpz = world->group(GroupKind::kHpz, hpzSize(options), ++tag, options.timeout);
            std::unique_ptr<Communicator> cross = world->group(GroupKind::kCross, 0, ++tag, options.timeout);
            SuiteOptions small = options;
            small.counts = {0, 1001};
            small.dtypes = {DType::kFloat32};
            // A world collective on another thread while the hpZ group runs its own.
            std::exception_ptr worldError;
            Checker concurrentCheck{rank, &mutex, &report, 0, {}};
            std::thread concurrent([&] {
                try {
                    std::uint32_t worldTag = 1000000;
                    SuiteOptions tiny = small;
                    tiny.counts = {257};
                    runCollectives(*world, tiny, concurrentCheck, worldTag, "world (concurrent)");
                } catch (...) {
                    worldError = std::current_exception();
                }
            });
            std::uint32_t groupTag = 0;
            try {
                runCollectives(*hpz, small, check, groupTag, "hpz");
            } catch (...) {
                concurrent.join();
                throw;
            }
            concurrent.join();
            concurrentCheck.flush();
            if (worldError) std::rethrow_exception(worldError);
            runCollectives(*cross, small, check, groupTag, "cross");
        }
        check.flush();
    });
    report.seconds = std::chrono::duration<double>(Clock::now() - start).count();
    return report;
}

FaultReport runFaultScenario(const SuiteOptions& options, Fault fault, int victim, std::size_t bytes) {
    const int n = options.ranks;
    MIXZ_ENFORCE(n >= 2 && victim >= 0 && victim < n, "fault scenarios need 2+ ranks and a victim among them");
    FaultReport report;
    report.codes.assign(n, "");
    report.messages.assign(n, "");
    report.seconds.assign(n, 0);
    Exchange exchange(n);
    std::mutex mutex;
    std::condition_variable cv;
    int finished = 0;
    runRanks(n, [&](int rank) {
        std::unique_ptr<Communicator> comm = connectRank(options, rank, exchange);
        BarrierOptions ready(*comm);
        ready.tag = 1;
        barrier(ready);
        const auto start = Clock::now();
        Bytes input(bytes, static_cast<std::uint8_t>(rank));
        Bytes output(bytes * n);
        if (rank == victim && fault != Fault::kMismatch) {
            if (fault == Fault::kClosedPeer) {
                // Let the others block on this rank first.
                std::this_thread::sleep_for(std::chrono::milliseconds(200));
                comm.reset();
            }
            std::unique_lock<std::mutex> lock(mutex);
            cv.wait_for(lock, options.timeout * 3, [&] { return finished == n - 1; });
            return;
        }
        try {
            if (rank == victim) {
                BroadcastOptions o(*comm);
                o.tag = 2;
                o.buffer = output.data();
                o.bytes = bytes;
                o.root = 0;
                broadcast(o);
            } else {
                AllgatherOptions o(*comm);
                o.tag = 2;
                o.input = input.data();
                o.inputBytes = bytes;
                o.output = output.data();
                o.outputBytes = output.size();
                allgather(o);
            }
        } catch (const Exception& error) {
            report.codes[rank] = error.code();
            report.messages[rank] = error.what();
        } catch (const std::exception& error) {
            report.codes[rank] = "std::exception";
            report.messages[rank] = error.what();
        }
        report.seconds[rank] = std::chrono::duration<double>(Clock::now() - start).count();
        std::lock_guard<std::mutex> lock(mutex);
        ++finished;
        cv.notify_all();
    });
    return report;
}

double benchmarkAllgather(const SuiteOptions& options, std::size_t bytesPerRank, int iterations, int warmup,
                          bool inPlace) {
    const int n = options.ranks;
    Exchange exchange(n);
    std::vector<double> seconds(n, 0);
    runRanks(n, [&](int rank) {
        std::unique_ptr<Communicator> comm = connectRank(options, rank, exchange);
        Bytes input(bytesPerRank, static_cast<std::uint8_t>(rank));
        Bytes output(bytesPerRank * n);
        AllgatherOptions o(*comm);
        o.input = inPlace ? output.data() + bytesPerRank * rank : input.data();
        o.inputBytes = bytesPerRank;
        o.output = output.data();
        o.outputBytes = output.size();
        BarrierOptions b(*comm);
        for (int i = 0; i < warmup; ++i) allgather(o);
        barrier(b);
        const auto start = Clock::now();
        for (int i = 0; i < iterations; ++i) allgather(o);
        seconds[rank] = std::chrono::duration<double>(Clock::now() - start).count() / iterations;
        barrier(b);
    });
    return *std::max_element(seconds.begin(), seconds.end());
}

void runWorld(const SuiteOptions& options, const std::function<void(Communicator& comm, int rank)>& body) {
    Exchange exchange(options.ranks);
    runRanks(options.ranks, [&](int rank) {
        std::unique_ptr<Communicator> comm = connectRank(options, rank, exchange);
        try {
            body(*comm, rank);
        } catch (const std::exception& error) {
            // Peers blocked on this rank fail at once instead of waiting for their timeout.
            comm->abort(error.what());
            throw;
        }
    });
}

} // namespace mixz::comm::testing
