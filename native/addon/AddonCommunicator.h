// JS face of mixz::comm::Communicator (mixz/comm/communicator.h, mixz/comm/collectives.h).
//
//   new Communicator({rank, worldSize, host, jobId, localRanks, timeoutMs, transport, bindAddress})
//   communicator.prepare()                                        → Promise<Uint8Array>   this rank's address
//   communicator.connect(addresses)                               → Promise<void>         addresses[r]: rank r's
//   communicator.group({kind, h, tag, timeoutMs})                 → Promise<Communicator> collective of the world
//   communicator.allGather({input, output, tag, timeoutMs})       → Promise<void>
//   communicator.allGatherV({input, output, bytes, tag, timeoutMs})
//   communicator.quantizedAllGather({input, output, dtype, outDtype, elements, bits, blockSize, threads, tag, timeoutMs})
//                                                                 → Promise<number>       qwZ all-gather
//                                                                   (mixz/comm/quantized_allgather.h); resolves
//                                                                   with the bytes each rank sent
//   communicator.reduceScatter({input, output, count, dtype, op, tag, timeoutMs})
//   communicator.allReduce({input, output, count, dtype, op, tag, timeoutMs})
//   communicator.broadcast({buffer, root, tag, timeoutMs})
//   communicator.barrier({tag, timeoutMs})
//   communicator.info()                                           → {rank, size, kind, transport, members}
//   communicator.abort(reason)                                    fails it here and for shared-memory peers
//   communicator.close()                                          releases it once no call is in flight
//
//   commSelfTest({ranks, transport, hosts, bindAddress, counts, dtypes, timeoutMs, groups, jobId})
//                                                                 → Promise<{checks, failures, seconds, transport}>
//   commFaultTest({ranks, transport, timeoutMs, jobId, fault, victim, bytes})
//                                                                 → Promise<{codes, messages, seconds}>
//   commBenchmark({ranks, transport, jobId, bytesPerRank, iterations, warmup}) → Promise<number> (s per all-gather)
//
// The comm* functions are test support: N ranks as threads of this process (mixz/comm/self_test.h).
// Typed in packages/engine/src/binding/AddonTypes.ts; @mixz/engine's Communicator validates first and
// passes complete descriptors; this layer checks them again (MIXZ_ERR_INVALID_ARGUMENT). Buffers
// are any typed arrays, taken as bytes; reductions interpret them by `dtype`. Every call that
// waits runs on libuv's pool (an AsyncWorker), never on the JS thread; its typed arrays are kept
// referenced until the promise settles and must not be detached meanwhile.
#pragma once

#include <napi.h>

#include <memory>
#include <string>

#include "mixz/comm/communicator.h"

namespace mixz::addon {

class AddonCommunicator : public Napi::ObjectWrap<AddonCommunicator> {
public:
    static Napi::Function define(Napi::Env env);

    explicit AddonCommunicator(const Napi::CallbackInfo& info);

    // The communicator, or InvalidArgument naming `what` once closed (see communicatorOf).
    std::shared_ptr<comm::Communicator> shared(const std::string& what) const;

private:
    Napi::Value prepare(const Napi::CallbackInfo& info);
    Napi::Value connect(const Napi::CallbackInfo& info);
    Napi::Value group(const Napi::CallbackInfo& info);
    Napi::Value allGather(const Napi::CallbackInfo& info);
    Napi::Value allGatherV(const Napi::CallbackInfo& info);
    Napi::Value quantizedAllGather(const Napi::CallbackInfo& info);
    Napi::Value reduceScatter(const Napi::CallbackInfo& info);
    Napi::Value allReduce(const Napi::CallbackInfo& info);
    Napi::Value broadcast(const Napi::CallbackInfo& info);
    Napi::Value barrier(const Napi::CallbackInfo& info);
    Napi::Value info(const Napi::CallbackInfo& info);
    Napi::Value abort(const Napi::CallbackInfo& info);
    Napi::Value close(const Napi::CallbackInfo& info);

    // The communicator, or InvalidArgument once closed.
    std::shared_ptr<comm::Communicator> live(const char* what) const;

    std::shared_ptr<comm::Communicator> comm_;
    comm::PrepareOptions options_;
};

// Register each through guarded<>.
Napi::Value commSelfTest(const Napi::CallbackInfo& info);
Napi::Value commFaultTest(const Napi::CallbackInfo& info);
Napi::Value commBenchmark(const Napi::CallbackInfo& info);

} // namespace mixz::addon

namespace mixz::addon {

// The native communicator behind a JS Communicator object, for other native objects that run
// collectives on it (the ZeRO engine). InvalidArgument naming `what` when it is not one, or closed.
std::shared_ptr<comm::Communicator> communicatorOf(const Napi::Value& value, const std::string& what);

} // namespace mixz::addon
