// Tests of mixz/comm/quantized_allgather.h without Node: the qwZ all-gather over shared memory
// (streamed path), Gloo and the hierarchical path (buffered), with 1 to 4 ranks as threads, for
// sizes 0, 1, odd, not a block multiple and several ring rounds, int8 and int4, fp32/fp16/bf16
// inputs; the pre-quantized variant into fp32; bad arguments. Every result must equal, bit for
// bit, dequantize(quantize(x_m)) of every member's partition computed locally.
//
// Build and run from the repository root (one command line; add -fsanitize=address,undefined -g
// for a sanitizer run):
//
//   g++ -std=c++17 -O2 -Wall -Wextra -pthread -Inative/include -o /tmp/mixz-qag-test
//       native/test/quantized_allgather_test.cc native/src/comm/*.cc native/src/common/error.cc
//       native/src/common/thread_pool.cc native/src/quant/*.cc native/src/tensor/*.cc -lgloo
//
//   /tmp/mixz-qag-test                                 the tests
//   /tmp/mixz-qag-test bench RANKS TRANSPORT MiB…      fp16 → int8 gather: ms per call at these
//                                                      total (fp16) sizes
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "mixz/comm/quantized_allgather.h"
#include "mixz/comm/self_test.h"
#include "mixz/common/error.h"
#include "mixz/quant/block_quant.h"
#include "mixz/tensor/dtype.h"

using namespace mixz;
using namespace mixz::comm;
using tensor::DType;

namespace {

int failures = 0;
int checks = 0;

void expect(bool condition, const std::string& what) {
    ++checks;
    if (!condition) {
        ++failures;
        std::printf("  FAIL %s\n", what.c_str());
    }
}

// Member m's partition: varied magnitudes per block, so every block has its own scale.
std::vector<std::uint8_t> partition(DType dtype, int member, std::size_t count) {
    std::vector<std::uint8_t> bytes(tensor::storageBytes(dtype, count));
    for (std::size_t i = 0; i < count; ++i) {
        const float x = 0.02f * std::sin(1.0f + member * 7919.0f + i * 0.37f) * (1 + (i % 13)) * (1 + (i / 700) % 5);
        if (dtype == DType::kFloat32) {
            std::memcpy(bytes.data() + 4 * i, &x, 4);
        } else {
            const std::uint16_t h = dtype == DType::kFloat16 ? tensor::floatToFp16(x) : tensor::floatToBf16(x);
            std::memcpy(bytes.data() + 2 * i, &h, 2);
        }
    }
    return bytes;
}

struct Quantized {
    std::vector<std::uint8_t> codes;
    std::vector<float> scales;
};

Quantized quantizeLocally(const std::vector<std::uint8_t>& input, DType dtype, std::size_t count, int bits,
                          std::size_t blockSize) {
    const std::size_t padded = quant::paddedSize(count, blockSize);
    Quantized q;
    q.codes.assign(std::max<std::size_t>(1, quant::quantizedBytes(padded, bits)), 0);
    q.scales.assign(std::max<std::size_t>(1, quant::blockCount(padded, blockSize)), 0.0f);
    quant::QuantizeOptions options;
    options.input = input.data();
    options.inputType = dtype;
    options.elements = count;
    options.bits = bits;
    options.blockSize = blockSize;
    options.output = q.codes.data();
    options.outputBytes = q.codes.size();
    options.scales = q.scales.data();
    options.scaleCount = q.scales.size();
    quant::quantizePartition(options);
    return q;
}

// dequantize(quantize(x_m)) of every member, concatenated.
std::vector<std::uint8_t> expected(int ranks, DType inputType, DType outputType, std::size_t count, int bits,
                                   std::size_t blockSize) {
    std::vector<std::uint8_t> all(tensor::storageBytes(outputType, count * ranks) + 1);
    for (int m = 0; m < ranks; ++m) {
        const Quantized q = quantizeLocally(partition(inputType, m, count), inputType, count, bits, blockSize);
        quant::DequantizeOptions options;
        options.input = q.codes.data();
        options.inputBytes = q.codes.size();
        options.bits = bits;
        options.scales = q.scales.data();
        options.scaleCount = q.scales.size();
        options.elements = count;
        options.blockSize = blockSize;
        options.output = all.data() + tensor::storageBytes(outputType, count * m);
        options.outputType = outputType;
        options.outputElements = count;
        quant::dequantize(options);
    }
    all.pop_back();
    return all;
}

struct Case {
    int ranks;
    Transport transport;
    std::vector<std::string> hosts;
    DType inputType;
    DType outputType;
    int bits;
    std::size_t blockSize;
    std::size_t count;
    bool prequantized;
};

std::string describe(const Case& c) {
    std::string hosts;
    for (const auto& host : c.hosts) hosts += " " + host;
    return detail::concat(c.ranks, " rank(s) ", transportName(c.transport), hosts.empty() ? "" : " hosts", hosts, ", ",
                          tensor::dtypeName(c.inputType), " → int", c.bits, " → ", tensor::dtypeName(c.outputType),
                          ", block ", c.blockSize, ", ", c.count, " elements", c.prequantized ? ", pre-quantized" : "");
}

void run(const Case& c) {
    testing::SuiteOptions options;
    options.ranks = c.ranks;
    options.transport = c.transport;
    options.hosts = c.hosts;
    options.jobId = "qagtest";
    options.timeout = std::chrono::milliseconds(20000);
    const std::vector<std::uint8_t> want = expected(c.ranks, c.inputType, c.outputType, c.count, c.bits, c.blockSize);
    std::vector<std::vector<std::uint8_t>> got(c.ranks);
    std::string transport;
    try {
        testing::runWorld(options, [&](Communicator& comm, int rank) {
            if (rank == 0) transport = comm.transportDescription();
            const std::vector<std::uint8_t> input = partition(c.inputType, rank, c.count);
            // Two calls on one communicator: buffers and ring rounds carry over correctly.
            for (int call = 0; call < 2; ++call) {
                std::vector<std::uint8_t> output(want.size() + 1, 0xAB);
                if (c.prequantized) {
                    const Quantized q = quantizeLocally(input, c.inputType, c.count, c.bits, c.blockSize);
                    PrequantizedAllgatherOptions o(comm);
                    o.tag = 5;
                    o.codes = q.codes.data();
                    o.codeBytes = q.codes.size();
                    o.scales = q.scales.data();
                    o.scaleCount = q.scales.size();
                    o.elements = c.count;
                    o.bits = c.bits;
                    o.blockSize = c.blockSize;
                    o.output = output.data();
                    o.outputType = c.outputType;
                    o.outputElements = c.count * c.ranks;
                    prequantizedAllgather(o);
                } else {
                    QuantizedAllgatherOptions o(comm);
                    o.tag = 5;
                    o.input = c.count == 0 ? nullptr : input.data();
                    o.inputType = c.inputType;
                    o.elements = c.count;
                    o.bits = c.bits;
                    o.blockSize = c.blockSize;
                    o.output = output.data();
                    o.outputType = c.outputType;
                    o.outputElements = c.count * c.ranks;
                    quantizedAllgather(o);
                }
                // Nothing past the output was written.
                if (output.back() != 0xAB) MIXZ_THROW(InvariantError, "rank ", rank, " wrote past its output");
                output.pop_back();
                got[rank] = std::move(output);
            }
        });
    } catch (const std::exception& error) {
        expect(false, describe(c) + ": " + error.what());
        return;
    }
    for (int r = 0; r < c.ranks; ++r) {
        expect(got[r] == want, describe(c) + " (" + transport + "): rank " + std::to_string(r) + "'s output");
    }
}

void badArguments() {
    testing::SuiteOptions options;
    options.ranks = 2;
    options.transport = Transport::kShm;
    options.jobId = "qagbad";
    std::vector<std::string> messages(2);
    testing::runWorld(options, [&](Communicator& comm, int rank) {
        std::vector<std::uint16_t> input(100, 0x3C00), output(200);
        const auto attempt = [&](auto mutate) {
            QuantizedAllgatherOptions o(comm);
            o.input = input.data();
            o.elements = input.size();
            o.blockSize = 64;
            o.output = output.data();
            o.outputElements = output.size();
            mutate(o);
            try {
                quantizedAllgather(o);
            } catch (const InvalidArgument& error) {
                return std::string(error.what());
            }
            return std::string();
        };
        const bool mine = rank == 0;
        const std::string bits = attempt([](QuantizedAllgatherOptions& o) { o.bits = 3; });
        const std::string block = attempt([](QuantizedAllgatherOptions& o) { o.blockSize = 100; });
        const std::string size = attempt([](QuantizedAllgatherOptions& o) { o.outputElements = 199; });
        const std::string overlapping = attempt([&](QuantizedAllgatherOptions& o) {
            o.output = input.data();
            o.outputElements = 200;
        });
        if (mine) {
            expect(bits.find("bits must be 8 or 4") != std::string::npos, "bits 3 rejected: " + bits);
            expect(block.find("block size") != std::string::npos, "block 100 rejected: " + block);
            expect(size.find("output must hold 2 × 100") != std::string::npos, "short output rejected: " + size);
            expect(overlapping.find("overlap") != std::string::npos, "overlap rejected: " + overlapping);
        }
        // The communicator is still usable: a good call works on both ranks.
        expect(attempt([](QuantizedAllgatherOptions&) {}).empty(), "a good call after bad ones");
    });
    // A partition holding NaN fails its member with InvalidArgument and its peer at once.
    testing::SuiteOptions nanOptions = options;
    nanOptions.jobId = "qagnan";
    std::vector<std::string> outcome(2);
    try {
        testing::runWorld(nanOptions, [&](Communicator& comm, int rank) {
            std::vector<std::uint16_t> input(5000, 0x3C00), output(10000);
            if (rank == 1) input[4500] = 0x7E00; // NaN
            QuantizedAllgatherOptions o(comm);
            o.input = input.data();
            o.elements = input.size();
            o.blockSize = 256;
            o.output = output.data();
            o.outputElements = output.size();
            try {
                quantizedAllgather(o);
            } catch (const Exception& error) {
                outcome[rank] = error.code();
            }
        });
    } catch (const std::exception& error) {
        expect(false, std::string("NaN scenario: ") + error.what());
    }
    expect(outcome[1] == codes::kInvalidArgument, "NaN input: InvalidArgument on its member, got " + outcome[1]);
    expect(outcome[0] == codes::kIo, "NaN input: IoError on the peer, got " + outcome[0]);
}

void bench(int ranks, Transport transport, const std::vector<std::size_t>& mebibytes) {
    testing::SuiteOptions options;
    options.ranks = ranks;
    options.transport = transport;
    options.jobId = "qagbench";
    for (std::size_t mib : mebibytes) {
        const std::size_t count = (mib << 20) / 2 / ranks;
        double seconds = 0;
        testing::runWorld(options, [&](Communicator& comm, int rank) {
            const std::vector<std::uint8_t> input = partition(DType::kFloat16, rank, count);
            std::vector<std::uint16_t> output(count * ranks);
            QuantizedAllgatherOptions o(comm);
            o.input = input.data();
            o.elements = count;
            o.blockSize = 4096; // DeepSpeed's (and mixz.quant_block_size's) default
            o.output = output.data();
            o.outputElements = output.size();
            const int iterations = mib >= 128 ? 5 : 20;
            for (int i = 0; i < 2; ++i) quantizedAllgather(o);
            BarrierOptions b(comm);
            barrier(b);
            const auto start = Clock::now();
            for (int i = 0; i < iterations; ++i) quantizedAllgather(o);
            const double mine = std::chrono::duration<double>(Clock::now() - start).count() / iterations;
            if (rank == 0) seconds = mine;
            barrier(b);
        });
        const double busbw = static_cast<double>(mib << 20) / seconds / 1e9 * (ranks - 1) / std::max(1, ranks);
        std::printf("qwZ all-gather fp16→int8 %d ranks %s %4zu MiB: %8.2f ms  effective busbw %6.2f GB/s\n", ranks,
                    transportName(transport), mib, seconds * 1e3, busbw);
    }
}

} // namespace

int main(int argc, char** argv) {
    std::signal(SIGPIPE, SIG_IGN);
    if (argc >= 4 && std::strcmp(argv[1], "bench") == 0) {
        std::vector<std::size_t> sizes;
        for (int i = 4; i < argc; ++i) sizes.push_back(std::strtoull(argv[i], nullptr, 10));
        bench(std::atoi(argv[2]), *parseTransport(argv[3]), sizes);
        return 0;
    }
    const DType f32 = DType::kFloat32, f16 = DType::kFloat16, b16 = DType::kBFloat16;
    // Several ring rounds: 300 000 fp16 values in blocks of 4096 are 74 blocks, 63 to a round.
    const std::vector<std::size_t> counts = {0, 1, 1001, 5000, 300000};
    for (int ranks = 1; ranks <= 4; ++ranks) {
        for (Transport transport : {Transport::kShm, Transport::kGloo}) {
            for (std::size_t count : counts) {
                run({ranks, transport, {}, f16, f16, 8, 4096, count, false});
            }
            run({ranks, transport, {}, b16, b16, 4, 256, 1001, false});
            run({ranks, transport, {}, f32, f32, 8, 64, 4999, false});
            run({ranks, transport, {}, f16, f16, 4, 4096, 300000, false});
            run({ranks, transport, {}, f32, f16, 8, 512, 7777, false});
            run({ranks, transport, {}, f16, f32, 8, 4096, 300000, true});
            run({ranks, transport, {}, b16, f32, 4, 128, 999, true});
            run({ranks, transport, {}, f16, f32, 8, 4096, 0, true});
        }
    }
    // Outputs past the streaming threshold (4 MiB): dequantization with non-temporal stores, where
    // a member's output is aligned (an odd count leaves member 1's unaligned: ordinary stores).
    run({2, Transport::kShm, {}, f16, f16, 8, 4096, 1500000, false});
    run({2, Transport::kShm, {}, b16, b16, 4, 1024, 1500001, false});
    run({2, Transport::kGloo, {}, f16, f32, 8, 4096, 700000, true});
    run({1, Transport::kShm, {}, f32, f32, 8, 2048, 1200000, false});
    // Hierarchical (shared memory inside a node, Gloo across): the buffered path.
    run({4, Transport::kAuto, {"a", "a", "b", "b"}, f16, f16, 8, 1024, 5000, false});
    run({4, Transport::kAuto, {"a", "a", "b", "b"}, f16, f32, 4, 1024, 5001, true});
    // Blocks larger than a ring entry hold (65536 int8 codes + scale > 64 KiB entries).
    setenv("MIXZ_SHM_ENTRY_KIB", "64", 1);
    run({2, Transport::kShm, {}, f16, f16, 8, 65536, 70000, false});
    unsetenv("MIXZ_SHM_ENTRY_KIB");
    badArguments();
    std::printf("%d checks, ", checks);
    std::printf(failures == 0 ? "OK\n" : "%d FAILURE(S)\n", failures);
    return failures == 0 ? 0 : 1;
}
