// Core tests of mixz/comm without Node: the collective suite over each transport with 1 to 4
// ranks as threads, the fault scenarios, and a quick all-gather timing. The engine's TypeScript
// tests run the same suite through the addon (commSelfTest); this program is for quick iteration
// and sanitizer runs.
//
// Build and run from the repository root (add -fsanitize=address,undefined -g for a sanitizer run,
// or -fsanitize=thread -g for ThreadSanitizer):
//
//   g++ -std=c++17 -O2 -Wall -Wextra -pthread -Inative/include -o /tmp/mixz-comm-test
//       native/test/comm_test.cc native/src/comm/*.cc native/src/common/error.cc
//       native/src/common/thread_pool.cc native/src/quant/*.cc native/src/tensor/*.cc -lgloo
//
// (one command line).
//   /tmp/mixz-comm-test                        the suite and the fault scenarios
//   /tmp/mixz-comm-test bench RANKS TRANSPORT [inplace] [MiB…]   all-gather busbw at these sizes of total
//                                                      output (default 8, 64 and 256 MiB)
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "mixz/comm/self_test.h"
#include "mixz/common/error.h"

using namespace mixz::comm;
using namespace mixz::comm::testing;

namespace {

int failures = 0;

void expect(bool condition, const std::string& what) {
    if (!condition) {
        ++failures;
        std::printf("  FAIL %s\n", what.c_str());
    }
}

void suite(int ranks, Transport transport, const std::vector<std::string>& hosts, std::vector<std::size_t> counts) {
    SuiteOptions options;
    options.ranks = ranks;
    options.transport = transport;
    options.hosts = hosts;
    options.counts = std::move(counts);
    options.jobId = "commtest";
    std::string where = hosts.empty() ? "one host" : "hosts";
    for (const auto& host : hosts) where += " " + host;
    try {
        const SuiteReport report = runCollectiveSuite(options);
        std::printf("suite %d rank(s) %s (%s, %s): %zu checks, %zu failures, %.2f s\n", ranks,
                    transportName(transport), report.transport.c_str(), where.c_str(), report.checks,
                    report.failures.size(), report.seconds);
        for (const auto& failure : report.failures) std::printf("  FAIL %s\n", failure.c_str());
        failures += static_cast<int>(report.failures.size());
    } catch (const std::exception& error) {
        ++failures;
        std::printf("suite %d rank(s) %s (%s): ERROR %s\n", ranks, transportName(transport), where.c_str(),
                    error.what());
    }
}

void fault(int ranks, Transport transport, Fault kind, const char* name, std::size_t bytes) {
    SuiteOptions options;
    options.ranks = ranks;
    options.transport = transport;
    options.timeout = std::chrono::milliseconds(1500);
    options.jobId = "commfault";
    const int victim = ranks - 1;
    const FaultReport report = runFaultScenario(options, kind, victim, bytes);
    std::printf("fault %s, %d ranks, %s, %zu bytes:\n", name, ranks, transportName(transport), bytes);
    const std::string victimName = "rank " + std::to_string(victim) + " (host localhost)";
    for (int r = 0; r < ranks; ++r) {
        std::printf("  rank %d: %.3f s %s %s\n", r, report.seconds[r], report.codes[r].c_str(),
                    report.messages[r].c_str());
        if (r == victim) continue;
        if (kind == Fault::kMismatch && transport != Transport::kShm) continue;
        expect(!report.codes[r].empty(), "rank " + std::to_string(r) + " got an error");
        expect(report.messages[r].find(victimName) != std::string::npos ||
                   report.messages[r].find("gave up") != std::string::npos,
               "rank " + std::to_string(r) + "'s error names the victim");
        expect(report.seconds[r] < 1.5 + 1.0, "rank " + std::to_string(r) + " returned within the timeout");
    }
}

void bench(int ranks, Transport transport, bool inPlace, const std::vector<std::size_t>& mebibytes) {
    SuiteOptions options;
    options.ranks = ranks;
    options.transport = transport;
    options.jobId = "commbench";
    for (std::size_t mib : mebibytes) {
        const std::size_t total = mib << 20;
        const std::size_t perRank = total / ranks;
        const int iterations = total >= (256u << 20) ? 5 : 20;
        const double seconds = benchmarkAllgather(options, perRank, iterations, 2, inPlace);
        const double algbw = static_cast<double>(total) / seconds / 1e9;
        const double busbw = algbw * (ranks - 1) / ranks;
        std::printf("allgather %d ranks %s%s %4zu MiB: %9.1f us  algbw %6.2f GB/s  busbw %6.2f GB/s\n", ranks,
                    transportName(transport), inPlace ? " in place" : "", total >> 20, seconds * 1e6, algbw, busbw);
    }
}

} // namespace

int main(int argc, char** argv) {
    // Gloo writes to sockets without MSG_NOSIGNAL; a peer that went away must be an error, not a
    // SIGPIPE that kills the test (Node ignores SIGPIPE for the same reason).
    std::signal(SIGPIPE, SIG_IGN);
    if (argc >= 4 && std::strcmp(argv[1], "bench") == 0) {
        const bool inPlace = argc >= 5 && std::strcmp(argv[4], "inplace") == 0;
        std::vector<std::size_t> sizes;
        for (int i = inPlace ? 5 : 4; i < argc; ++i) sizes.push_back(std::strtoull(argv[i], nullptr, 10));
        if (sizes.empty()) sizes = {8, 64, 256};
        bench(std::atoi(argv[2]), *parseTransport(argv[3]), inPlace, sizes);
        return 0;
    }
    const std::vector<std::size_t> counts = {0, 1, 13, 1001, std::size_t{1} << 21};
    for (int ranks = 1; ranks <= 4; ++ranks) {
        suite(ranks, Transport::kShm, {}, counts);
        suite(ranks, Transport::kGloo, {}, counts);
    }
    suite(4, Transport::kAuto, {"a", "a", "b", "b"}, counts);
    suite(3, Transport::kAuto, {"a", "a", "b"}, {0, 1, 1001});
    suite(2, Transport::kAuto, {"a", "b"}, {0, 1, 1001});
    for (Transport transport : {Transport::kShm, Transport::kGloo}) {
        fault(3, transport, Fault::kStuckPeer, "stuck peer", 1 << 20);
        fault(3, transport, Fault::kClosedPeer, "closed peer", 1 << 20);
        fault(2, transport, Fault::kMismatch, "mismatch", 4096);
    }
    // Two ranks, 2 MiB in all: the single-copy path where the kernel allows it.
    fault(2, Transport::kShm, Fault::kStuckPeer, "stuck peer", 1 << 20);
    fault(2, Transport::kShm, Fault::kClosedPeer, "closed peer", 1 << 20);
    fault(2, Transport::kShm, Fault::kMismatch, "mismatch", 1 << 20);
    std::printf(failures == 0 ? "OK\n" : "%d FAILURE(S)\n", failures);
    return failures == 0 ? 0 : 1;
}
