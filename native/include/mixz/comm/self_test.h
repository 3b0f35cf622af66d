// Test support: N ranks as N threads of this process, connected through an in-memory address
// exchange (the way gloo/test/base_test.h runs ranks), running the collective suite or a fault
// scenario over a chosen transport. Used by native/test/comm_test.cc and, through the addon's
// test-only export `commSelfTest`, by packages/engine/test/comm/communicator.test.ts.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "mixz/comm/communicator.h"
#include "mixz/tensor/dtype.h"

namespace mixz::comm::testing {

struct SuiteOptions {
    int ranks = 2;
    Transport transport = Transport::kAuto;
    // Plan host of each rank; empty: every rank on "localhost". Distinct names make distinct nodes
    // (Gloo between them), as 127.0.0.1 and 127.0.0.2 do in the launcher's plans.
    std::vector<std::string> hosts;
    // Where the Gloo pairs listen (the hosts above need not resolve).
    std::string bindAddress = "127.0.0.1";
    // Element counts per member chunk.
    std::vector<std::size_t> counts = {0, 1, 13, 1001};
    std::vector<tensor::DType> dtypes = {tensor::DType::kFloat32, tensor::DType::kFloat16, tensor::DType::kBFloat16};
    std::chrono::milliseconds timeout{30000};
    // Also build the hpZ (h = 2 where possible) and cross groups and run collectives on them,
    // one of them concurrently with a world collective.
    bool groups = true;
    std::string jobId = "selftest";
};

struct SuiteReport {
    std::size_t checks = 0;
    std::vector<std::string> failures; // at most 50, then a count
    double seconds = 0;
    std::string transport; // the world's transportDescription() on rank 0
};

// Throws the first rank's exception when a rank fails outside the checks (connect, a collective).
SuiteReport runCollectiveSuite(const SuiteOptions& options);

enum class Fault {
    kStuckPeer,   // the victim never calls the collective: the others time out naming it
    kClosedPeer,  // the victim closes its communicator while the others wait for it
    kMismatch,    // the victim calls broadcast while the others call allGather
};

struct FaultReport {
    // Per rank: the error's code and message ("" when the rank returned normally).
    std::vector<std::string> codes;
    std::vector<std::string> messages;
    std::vector<double> seconds; // per rank, from the collective's start to its end
};

FaultReport runFaultScenario(const SuiteOptions& options, Fault fault, int victim, std::size_t bytes);

// Times `iterations` all-gathers of `bytesPerRank` (after `warmup` untimed ones) on N threads;
// returns the mean seconds per all-gather (the slowest rank's).
// In place: each rank's input is its part of the output.
double benchmarkAllgather(const SuiteOptions& options, std::size_t bytesPerRank, int iterations, int warmup,
                          bool inPlace = false);

// Connects options.ranks ranks as threads (options.transport, hosts, timeout, jobId) and runs
// body(world, rank) on each; rethrows the exception of the lowest failing rank. A rank whose body
// throws aborts its communicator first, so the others fail at once.
void runWorld(const SuiteOptions& options, const std::function<void(Communicator& comm, int rank)>& body);

} // namespace mixz::comm::testing
