#include "mixz/comm/collectives.h"

#include <cstdint>

#include "mixz/common/error.h"

namespace mixz::comm {

namespace {

void checkCommon(const CollectiveOptions& options, OpKind kind) {
    if (options.timeout.count() <= 0) {
        MIXZ_THROW(InvalidArgument, opKindName(kind), ": timeout must be positive, got ", options.timeout.count(), " ms");
    }
    if (!options.comm.connected()) MIXZ_THROW(InvalidArgument, opKindName(kind), ": the communicator is not connected");
}

void checkBuffer(const void* pointer, std::size_t bytes, OpKind kind, const char* name) {
    if (pointer == nullptr && bytes > 0) MIXZ_THROW(InvalidArgument, opKindName(kind), ": ", name, " is null");
}

bool overlap(const void* a, std::size_t aBytes, const void* b, std::size_t bBytes) {
    const auto x = reinterpret_cast<std::uintptr_t>(a);
    const auto y = reinterpret_cast<std::uintptr_t>(b);
    return aBytes > 0 && bBytes > 0 && x < y + bBytes && y < x + aBytes;
}

// The input may be exactly `inPlace`, or anywhere outside the output.
void checkAliasing(const void* input, std::size_t inputBytes, const void* output, std::size_t outputBytes,
                   const void* inPlace, OpKind kind) {
    if (input == inPlace || inputBytes == 0) return;
    if (overlap(input, inputBytes, output, outputBytes)) {
        MIXZ_THROW(InvalidArgument, opKindName(kind),
                   ": input and output overlap; they must be disjoint, or the input must be this member's part of "
                   "the output (in place)");
    }
}

std::uint64_t shapeOf(std::initializer_list<std::uint64_t> values) {
    std::uint64_t digest = 0;
    for (std::uint64_t value : values) digest = mixShape(digest, value);
    return digest;
}

} // namespace

void allgather(const AllgatherOptions& options) {
    const OpKind kind = OpKind::kAllgather;
    checkCommon(options, kind);
    const std::size_t n = static_cast<std::size_t>(options.comm.size());
    if (options.outputBytes != n * options.inputBytes) {
        MIXZ_THROW(InvalidArgument, "allGather: output must hold ", n, " × ", options.inputBytes, " = ",
                   n * options.inputBytes, " bytes, got ", options.outputBytes);
    }
    checkBuffer(options.input, options.inputBytes, kind, "input");
    checkBuffer(options.output, options.outputBytes, kind, "output");
    auto* output = static_cast<std::uint8_t*>(options.output);
    checkAliasing(options.input, options.inputBytes, output, options.outputBytes,
                  output + options.inputBytes * static_cast<std::size_t>(options.comm.rank()), kind);
    const OpContext op(kind, options.tag, options.timeout, shapeOf({static_cast<std::uint64_t>(kind), options.inputBytes}));
    options.comm.allgatherv(static_cast<const std::uint8_t*>(options.input), output,
                            std::vector<std::size_t>(n, options.inputBytes), op);
}

void allgatherv(const AllgathervOptions& options) {
    const OpKind kind = OpKind::kAllgatherv;
    checkCommon(options, kind);
    const std::size_t n = static_cast<std::size_t>(options.comm.size());
    if (options.bytes.size() != n) {
        MIXZ_THROW(InvalidArgument, "allGatherV: needs one byte count per member (", n, "), got ",
                   options.bytes.size());
    }
    std::size_t total = 0;
    std::size_t before = 0;
    std::uint64_t shape = shapeOf({static_cast<std::uint64_t>(kind), n});
    for (std::size_t m = 0; m < n; ++m) {
        if (m == static_cast<std::size_t>(options.comm.rank())) before = total;
        total += options.bytes[m];
        shape = mixShape(shape, options.bytes[m]);
    }
    if (options.outputBytes != total) {
        MIXZ_THROW(InvalidArgument, "allGatherV: output must hold the sum of the counts, ", total, " bytes, got ",
                   options.outputBytes);
    }
    const std::size_t mine = options.bytes[static_cast<std::size_t>(options.comm.rank())];
    checkBuffer(options.input, mine, kind, "input");
    checkBuffer(options.output, total, kind, "output");
    auto* output = static_cast<std::uint8_t*>(options.output);
    checkAliasing(options.input, mine, output, total, output + before, kind);
    const OpContext op(kind, options.tag, options.timeout, shape);
    options.comm.allgatherv(static_cast<const std::uint8_t*>(options.input), output, options.bytes, op);
}

void reduceScatter(const ReduceScatterOptions& options) {
    const OpKind kind = OpKind::kReduceScatter;
    checkCommon(options, kind);
    if (options.op != ReduceOp::kSum && options.op != ReduceOp::kMean) {
        MIXZ_THROW(InvalidArgument, "reduceScatter: op must be sum or mean, got ", reduceOpName(options.op));
    }
    const std::size_t elementBytes = reducibleElementBytes(options.dtype);
    const std::size_t n = static_cast<std::size_t>(options.comm.size());
    const std::size_t outputBytes = options.count * elementBytes;
    const std::size_t inputBytes = outputBytes * n;
    checkBuffer(options.input, inputBytes, kind, "input");
    checkBuffer(options.output, outputBytes, kind, "output");
    const auto* input = static_cast<const std::uint8_t*>(options.input);
    // Here the output may be the input's chunk of this member.
    const std::uint8_t* ownChunk = input + outputBytes * static_cast<std::size_t>(options.comm.rank());
    if (options.output != ownChunk && overlap(input, inputBytes, options.output, outputBytes)) {
        MIXZ_THROW(InvalidArgument,
                   "reduceScatter: input and output overlap; they must be disjoint, or the output must be this "
                   "member's chunk of the input (in place)");
    }
    const OpContext op(kind, options.tag, options.timeout,
                       shapeOf({static_cast<std::uint64_t>(kind), options.count, static_cast<std::uint64_t>(options.dtype),
                                static_cast<std::uint64_t>(options.op)}));
    options.comm.reduceScatter(input, static_cast<std::uint8_t*>(options.output), options.count, options.dtype,
                               options.op, op);
}

void allreduce(const AllreduceOptions& options) {
    const OpKind kind = OpKind::kAllreduce;
    checkCommon(options, kind);
    const std::size_t elementBytes = reducibleElementBytes(options.dtype);
    const std::size_t bytes = options.count * elementBytes;
    checkBuffer(options.input, bytes, kind, "input");
    checkBuffer(options.output, bytes, kind, "output");
    checkAliasing(options.input, bytes, options.output, bytes, options.output, kind);
    const OpContext op(kind, options.tag, options.timeout,
                       shapeOf({static_cast<std::uint64_t>(kind), options.count, static_cast<std::uint64_t>(options.dtype),
                                static_cast<std::uint64_t>(options.op)}));
    options.comm.allreduce(static_cast<const std::uint8_t*>(options.input), static_cast<std::uint8_t*>(options.output),
                           options.count, options.dtype, options.op, op);
}

void broadcast(const BroadcastOptions& options) {
    const OpKind kind = OpKind::kBroadcast;
    checkCommon(options, kind);
    if (options.root < 0 || options.root >= options.comm.size()) {
        MIXZ_THROW(InvalidArgument, "broadcast: root ", options.root, " is not a member (0..", options.comm.size() - 1,
                   ")");
    }
    checkBuffer(options.buffer, options.bytes, kind, "buffer");
    const OpContext op(kind, options.tag, options.timeout,
                       shapeOf({static_cast<std::uint64_t>(kind), options.bytes, static_cast<std::uint64_t>(options.root)}));
    options.comm.broadcast(static_cast<std::uint8_t*>(options.buffer), options.bytes, options.root, op);
}

void barrier(const BarrierOptions& options) {
    checkCommon(options, OpKind::kBarrier);
    const OpContext op(OpKind::kBarrier, options.tag, options.timeout);
    options.comm.barrier(op);
}

} // namespace mixz::comm
