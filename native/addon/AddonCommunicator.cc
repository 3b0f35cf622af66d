#include "AddonCommunicator.h"

#include <cmath>
#include <cstdint>
#include <exception>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "PromiseWorker.h"
#include "convertError.h"
#include "readArguments.h"
#include "mixz/comm/collectives.h"
#include "mixz/comm/quantized_allgather.h"
#include "mixz/comm/self_test.h"
#include "mixz/common/error.h"

namespace mixz::addon {
namespace {

using comm::Communicator;
using tensor::DType;

constexpr std::int64_t kMaxSafeInteger = (std::int64_t{1} << 53) - 1;
constexpr std::int64_t kMaxTimeoutMs = 2'147'483'647;
constexpr std::int64_t kMaxTag = 4'294'967'295;

std::int64_t integerField(const Napi::Object& object, const char* key, const std::string& what, std::int64_t min,
                          std::int64_t max) {
    return integerIn(object.Get(key), what + "." + key, min, max);
}

bool booleanField(const Napi::Object& object, const char* key, const std::string& what) {
    const Napi::Value value = object.Get(key);
    if (!value.IsBoolean()) MIXZ_THROW(InvalidArgument, what, ".", key, " must be a boolean, got ", describe(value));
    return value.As<Napi::Boolean>().Value();
}

std::vector<std::int64_t> integerArrayField(const Napi::Object& object, const char* key, const std::string& what,
                                            std::int64_t min, std::int64_t max) {
    const Napi::Value value = object.Get(key);
    if (!value.IsArray()) MIXZ_THROW(InvalidArgument, what, ".", key, " must be an array, got ", describe(value));
    const Napi::Array array = value.As<Napi::Array>();
    std::vector<std::int64_t> result;
    for (std::uint32_t i = 0; i < array.Length(); ++i) {
        result.push_back(integerIn(array.Get(i), detail::concat(what, ".", key, "[", i, "]"), min, max));
    }
    return result;
}

std::vector<std::string> stringArrayField(const Napi::Object& object, const char* key, const std::string& what) {
    const Napi::Value value = object.Get(key);
    if (!value.IsArray()) MIXZ_THROW(InvalidArgument, what, ".", key, " must be an array, got ", describe(value));
    const Napi::Array array = value.As<Napi::Array>();
    std::vector<std::string> result;
    for (std::uint32_t i = 0; i < array.Length(); ++i) {
        const Napi::Value item = array.Get(i);
        if (!item.IsString()) MIXZ_THROW(InvalidArgument, what, ".", key, "[", i, "] must be a string");
        result.push_back(item.As<Napi::String>().Utf8Value());
    }
    return result;
}

comm::Transport transportField(const Napi::Object& object, const std::string& what) {
    const std::string name = stringField(object, "transport", what);
    const auto transport = comm::parseTransport(name);
    if (!transport) MIXZ_THROW(InvalidArgument, what, ".transport must be auto, shm or gloo, got \"", name, "\"");
    return *transport;
}

DType dtypeOf(const std::string& name, const std::string& what) {
    if (name == "fp32") return DType::kFloat32;
    if (name == "fp16") return DType::kFloat16;
    if (name == "bf16") return DType::kBFloat16;
    MIXZ_THROW(InvalidArgument, what, " must be fp32, fp16 or bf16, got \"", name, "\"");
}

comm::ReduceOp reduceOpOf(const std::string& name, const std::string& what) {
    if (name == "sum") return comm::ReduceOp::kSum;
    if (name == "mean") return comm::ReduceOp::kMean;
    if (name == "max") return comm::ReduceOp::kMax;
    MIXZ_THROW(InvalidArgument, what, " must be sum, mean or max, got \"", name, "\"");
}

struct Bytes {
    std::uint8_t* data = nullptr;
    std::size_t size = 0;
};

// Any typed array, as bytes.
Bytes bytesField(Napi::Env env, const Napi::Object& object, const char* key, const std::string& what,
                 KeepAlive& keep) {
    const Napi::Value value = object.Get(key);
    if (!value.IsTypedArray()) MIXZ_THROW(InvalidArgument, what, ".", key, " must be a typed array, got ", describe(value));
    napi_typedarray_type type;
    std::size_t length = 0;
    void* data = nullptr;
    if (napi_get_typedarray_info(env, value, &type, &length, &data, nullptr, nullptr) != napi_ok) {
        MIXZ_THROW(InvalidArgument, what, ".", key, ": cannot read the typed array");
    }
    std::size_t elementBytes = 1;
    switch (type) {
        case napi_int16_array:
        case napi_uint16_array: elementBytes = 2; break;
        case napi_int32_array:
        case napi_uint32_array:
        case napi_float32_array: elementBytes = 4; break;
        case napi_float64_array:
        case napi_bigint64_array:
        case napi_biguint64_array: elementBytes = 8; break;
        default: elementBytes = 1; break;
    }
    keep.add(value);
    return {static_cast<std::uint8_t*>(data), length * elementBytes};
}

// Promise-returning work on the pool: PromiseWorker.h.
Napi::Value queue(Napi::Env env, const char* name, std::function<void()> work, KeepAlive keep = {},
                  std::function<Napi::Value(Napi::Env)> result = {}) {
    return queuePromise(env, name, std::move(work), std::move(keep), std::move(result));
}

struct CallOptions {
    std::uint32_t tag = 0;
    std::chrono::milliseconds timeout{0};
};

CallOptions callOptions(const Napi::Object& descriptor, const std::string& what) {
    CallOptions options;
    options.tag = static_cast<std::uint32_t>(integerField(descriptor, "tag", what, 0, kMaxTag));
    options.timeout = std::chrono::milliseconds(integerField(descriptor, "timeoutMs", what, 1, kMaxTimeoutMs));
    return options;
}

template <typename Options>
void applyCall(Options& options, const CallOptions& call) {
    options.tag = call.tag;
    options.timeout = call.timeout;
}

// The descriptor of a reduction (reduceScatter, allReduce): buffers, count, dtype, op, tag, timeout.
struct ReduceCall {
    Bytes input;
    Bytes output;
    std::size_t count = 0;
    DType dtype = DType::kFloat32;
    comm::ReduceOp op = comm::ReduceOp::kSum;
    CallOptions call;

    std::size_t bytes() const { return count * comm::reducibleElementBytes(dtype); }

    // Runs the collective `run` with an options struct filled from this call.
    template <typename Options>
    void runOn(Communicator& comm, void (*run)(const Options&)) const {
        Options options(comm);
        applyCall(options, call);
        options.input = input.data;
        options.output = output.data;
        options.count = count;
        options.dtype = dtype;
        options.op = op;
        run(options);
    }
};

ReduceCall reduceCall(Napi::Env env, const Napi::Object& descriptor, const std::string& what, KeepAlive& keep) {
    ReduceCall call;
    call.input = bytesField(env, descriptor, "input", what, keep);
    call.output = bytesField(env, descriptor, "output", what, keep);
    call.count = static_cast<std::size_t>(integerField(descriptor, "count", what, 0, kMaxSafeInteger));
    call.dtype = dtypeOf(stringField(descriptor, "dtype", what), what + ".dtype");
    call.op = reduceOpOf(stringField(descriptor, "op", what), what + ".op");
    call.call = callOptions(descriptor, what);
    return call;
}

comm::testing::SuiteOptions suiteOptions(const Napi::Object& descriptor, const std::string& what) {
    comm::testing::SuiteOptions options;
    options.ranks = static_cast<int>(integerField(descriptor, "ranks", what, 1, 64));
    options.transport = transportField(descriptor, what);
    options.timeout = std::chrono::milliseconds(integerField(descriptor, "timeoutMs", what, 1, kMaxTimeoutMs));
    options.jobId = stringField(descriptor, "jobId", what);
    return options;
}

} // namespace

Napi::Function AddonCommunicator::define(Napi::Env env) {
    Napi::Function constructor = DefineClass(env, "Communicator",
                       {InstanceMethod<&AddonCommunicator::prepare>("prepare"),
                        InstanceMethod<&AddonCommunicator::connect>("connect"),
                        InstanceMethod<&AddonCommunicator::group>("group"),
                        InstanceMethod<&AddonCommunicator::allGather>("allGather"),
                        InstanceMethod<&AddonCommunicator::allGatherV>("allGatherV"),
                        InstanceMethod<&AddonCommunicator::quantizedAllGather>("quantizedAllGather"),
                        InstanceMethod<&AddonCommunicator::reduceScatter>("reduceScatter"),
                        InstanceMethod<&AddonCommunicator::allReduce>("allReduce"),
                        InstanceMethod<&AddonCommunicator::broadcast>("broadcast"),
                        InstanceMethod<&AddonCommunicator::barrier>("barrier"),
                        InstanceMethod<&AddonCommunicator::info>("info"),
                        InstanceMethod<&AddonCommunicator::abort>("abort"),
                        InstanceMethod<&AddonCommunicator::close>("close")});
    // Kept for communicatorOf's instanceof check; the environment deletes it at teardown.
    env.SetInstanceData<Napi::FunctionReference>(new Napi::FunctionReference(Napi::Persistent(constructor)));
    return constructor;
}

AddonCommunicator::AddonCommunicator(const Napi::CallbackInfo& info) : Napi::ObjectWrap<AddonCommunicator>(info) {
    guard(info.Env(), [&] {
        expectArguments(info, "new Communicator(options)", 1);
        // A group: the native side passes the communicator it built.
        if (info[0].IsExternal()) {
            auto* group = info[0].As<Napi::External<std::shared_ptr<Communicator>>>().Data();
            comm_ = std::move(*group);
            return;
        }
        const std::string what = "new Communicator: options";
        const Napi::Object object = objectArgument(info[0], what);
        options_.rank = static_cast<int>(integerField(object, "rank", what, 0, 1 << 20));
        options_.worldSize = static_cast<int>(integerField(object, "worldSize", what, 1, 1 << 20));
        options_.host = stringField(object, "host", what);
        options_.jobId = stringField(object, "jobId", what);
        for (std::int64_t r : integerArrayField(object, "localRanks", what, 0, 1 << 20)) {
            options_.localRanks.push_back(static_cast<int>(r));
        }
        options_.timeout = std::chrono::milliseconds(integerField(object, "timeoutMs", what, 1, kMaxTimeoutMs));
        options_.transport = transportField(object, what);
        options_.bindAddress = stringField(object, "bindAddress", what);
        comm_ = std::make_shared<Communicator>();
    });
}

std::shared_ptr<Communicator> AddonCommunicator::live(const char* what) const {
    if (!comm_) MIXZ_THROW(InvalidArgument, "Communicator.", what, ": the communicator is closed");
    return comm_;
}

std::shared_ptr<Communicator> AddonCommunicator::shared(const std::string& what) const {
    if (!comm_) MIXZ_THROW(InvalidArgument, what, ": the communicator is closed");
    return comm_;
}

Napi::Value AddonCommunicator::prepare(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&] {
        expectArguments(info, "Communicator.prepare()", 0);
        auto comm = live("prepare");
        auto address = std::make_shared<std::vector<std::uint8_t>>();
        const comm::PrepareOptions options = options_;
        return queue(
            info.Env(), "mixz.comm.prepare", [comm, options, address] { *address = comm->prepare(options); }, {},
            [address](Napi::Env env) -> Napi::Value {
                Napi::Uint8Array array = Napi::Uint8Array::New(env, address->size());
                std::copy(address->begin(), address->end(), array.Data());
                return array;
            });
    });
}

Napi::Value AddonCommunicator::connect(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&] {
        expectArguments(info, "Communicator.connect(addresses)", 1);
        auto comm = live("connect");
        if (!info[0].IsArray()) {
            MIXZ_THROW(InvalidArgument, "Communicator.connect: addresses must be an array of Uint8Array, got ",
                       describe(info[0]));
        }
        const Napi::Array array = info[0].As<Napi::Array>();
        std::vector<std::vector<std::uint8_t>> addresses;
        for (std::uint32_t i = 0; i < array.Length(); ++i) {
            const Napi::Value item = array.Get(i);
            if (!item.IsTypedArray() || item.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
                MIXZ_THROW(InvalidArgument, "Communicator.connect: addresses[", i, "] must be a Uint8Array, got ",
                           describe(item));
            }
            const Napi::Uint8Array bytes = item.As<Napi::Uint8Array>();
            addresses.emplace_back(bytes.Data(), bytes.Data() + bytes.ElementLength());
        }
        return queue(info.Env(), "mixz.comm.connect",
                     [comm, addresses = std::move(addresses)] { comm->connect(addresses); });
    });
}

Napi::Value AddonCommunicator::group(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&] {
        expectArguments(info, "Communicator.group(descriptor)", 1);
        auto comm = live("group");
        const std::string what = "Communicator.group: descriptor";
        const Napi::Object descriptor = objectArgument(info[0], what);
        const std::string kindName = stringField(descriptor, "kind", what);
        comm::GroupKind kind;
        if (kindName == "hpz") {
            kind = comm::GroupKind::kHpz;
        } else if (kindName == "cross") {
            kind = comm::GroupKind::kCross;
        } else {
            MIXZ_THROW(InvalidArgument, what, ".kind must be hpz or cross, got \"", kindName, "\"");
        }
        const int h = static_cast<int>(integerField(descriptor, "h", what, 0, 1 << 20));
        const CallOptions call = callOptions(descriptor, what);
        auto group = std::make_shared<std::shared_ptr<Communicator>>();
        // The class itself, to construct the group's JS object once the work is done.
        auto constructor = std::make_shared<Napi::FunctionReference>(
            Napi::Persistent(info.This().As<Napi::Object>().Get("constructor").As<Napi::Function>()));
        return queue(
            info.Env(), "mixz.comm.group",
            [comm, kind, h, call, group] { *group = std::shared_ptr<Communicator>(comm->group(kind, h, call.tag, call.timeout)); },
            {},
            [group, constructor](Napi::Env env) -> Napi::Value {
                return constructor->New({Napi::External<std::shared_ptr<Communicator>>::New(env, group.get())});
            });
    });
}

Napi::Value AddonCommunicator::allGather(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&] {
        expectArguments(info, "Communicator.allGather(descriptor)", 1);
        auto comm = live("allGather");
        const std::string what = "Communicator.allGather: descriptor";
        const Napi::Object descriptor = objectArgument(info[0], what);
        KeepAlive keep;
        const Bytes input = bytesField(info.Env(), descriptor, "input", what, keep);
        const Bytes output = bytesField(info.Env(), descriptor, "output", what, keep);
        const CallOptions call = callOptions(descriptor, what);
        return queue(
            info.Env(), "mixz.comm.allGather",
            [comm, input, output, call] {
                comm::AllgatherOptions options(*comm);
                applyCall(options, call);
                options.input = input.data;
                options.inputBytes = input.size;
                options.output = output.data;
                options.outputBytes = output.size;
                comm::allgather(options);
            },
            std::move(keep));
    });
}

Napi::Value AddonCommunicator::allGatherV(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&] {
        expectArguments(info, "Communicator.allGatherV(descriptor)", 1);
        auto comm = live("allGatherV");
        const std::string what = "Communicator.allGatherV: descriptor";
        const Napi::Object descriptor = objectArgument(info[0], what);
        KeepAlive keep;
        const Bytes input = bytesField(info.Env(), descriptor, "input", what, keep);
        const Bytes output = bytesField(info.Env(), descriptor, "output", what, keep);
        std::vector<std::size_t> bytes;
        for (std::int64_t count : integerArrayField(descriptor, "bytes", what, 0, kMaxSafeInteger)) {
            bytes.push_back(static_cast<std::size_t>(count));
        }
        const CallOptions call = callOptions(descriptor, what);
        const int rank = comm->rank();
        if (static_cast<std::size_t>(rank) < bytes.size() && bytes[rank] != input.size) {
            MIXZ_THROW(InvalidArgument, what, ".input has ", input.size, " bytes, bytes[", rank, "] says ", bytes[rank]);
        }
        return queue(
            info.Env(), "mixz.comm.allGatherV",
            [comm, input, output, bytes = std::move(bytes), call] {
                comm::AllgathervOptions options(*comm);
                applyCall(options, call);
                options.input = input.data;
                options.output = output.data;
                options.outputBytes = output.size;
                options.bytes = bytes;
                comm::allgatherv(options);
            },
            std::move(keep));
    });
}

Napi::Value AddonCommunicator::quantizedAllGather(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&] {
        expectArguments(info, "Communicator.quantizedAllGather(descriptor)", 1);
        auto comm = live("quantizedAllGather");
        const std::string what = "Communicator.quantizedAllGather: descriptor";
        const Napi::Object descriptor = objectArgument(info[0], what);
        KeepAlive keep;
        const Bytes input = bytesField(info.Env(), descriptor, "input", what, keep);
        const Bytes output = bytesField(info.Env(), descriptor, "output", what, keep);
        const DType inputType = dtypeOf(stringField(descriptor, "dtype", what), what + ".dtype");
        const DType outputType = dtypeOf(stringField(descriptor, "outDtype", what), what + ".outDtype");
        const int bits = static_cast<int>(integerField(descriptor, "bits", what, 4, 8));
        const std::size_t blockSize = static_cast<std::size_t>(integerField(descriptor, "blockSize", what, 1, 1 << 30));
        const std::size_t threads = static_cast<std::size_t>(integerField(descriptor, "threads", what, 0, 1024));
        const std::size_t elements = static_cast<std::size_t>(integerField(descriptor, "elements", what, 0, kMaxSafeInteger));
        const std::size_t n = static_cast<std::size_t>(comm->size());
        if (input.size != tensor::storageBytes(inputType, elements) ||
            output.size != tensor::storageBytes(outputType, elements * n)) {
            MIXZ_THROW(InvalidArgument, what, ": input (", input.size, " bytes) must hold ", elements, " and output (",
                       output.size, " bytes) ", n, " × ", elements, " values");
        }
        const CallOptions call = callOptions(descriptor, what);
        const std::size_t wireBytes = comm::quantizedWireBytes(elements, bits, blockSize);
        return queue(
            info.Env(), "mixz.comm.quantizedAllGather",
            [comm, input, output, inputType, outputType, bits, blockSize, threads, elements, call] {
                comm::QuantizedAllgatherOptions options(*comm);
                applyCall(options, call);
                options.input = input.data;
                options.inputType = inputType;
                options.elements = elements;
                options.bits = bits;
                options.blockSize = blockSize;
                options.output = output.data;
                options.outputType = outputType;
                options.outputElements = elements * comm->size();
                options.threads = threads;
                comm::quantizedAllgather(options);
            },
            std::move(keep),
            [wireBytes](Napi::Env env) -> Napi::Value { return Napi::Number::New(env, static_cast<double>(wireBytes)); });
    });
}

Napi::Value AddonCommunicator::reduceScatter(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&] {
        expectArguments(info, "Communicator.reduceScatter(descriptor)", 1);
        auto comm = live("reduceScatter");
        const std::string what = "Communicator.reduceScatter: descriptor";
        const Napi::Object descriptor = objectArgument(info[0], what);
        KeepAlive keep;
        const ReduceCall call = reduceCall(info.Env(), descriptor, what, keep);
        if (call.output.size != call.bytes() || call.input.size != call.bytes() * comm->size()) {
            MIXZ_THROW(InvalidArgument, what, ": input (", call.input.size, " bytes) must hold ", comm->size(), " × ", call.count,
                       " and output (", call.output.size, " bytes) ", call.count, " elements of ", comm::dtypeLabel(call.dtype));
        }
        return queue(
            info.Env(), "mixz.comm.reduceScatter", [comm, call] { call.runOn<comm::ReduceScatterOptions>(*comm, comm::reduceScatter); },
            std::move(keep));
    });
}

Napi::Value AddonCommunicator::allReduce(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&] {
        expectArguments(info, "Communicator.allReduce(descriptor)", 1);
        auto comm = live("allReduce");
        const std::string what = "Communicator.allReduce: descriptor";
        const Napi::Object descriptor = objectArgument(info[0], what);
        KeepAlive keep;
        const ReduceCall call = reduceCall(info.Env(), descriptor, what, keep);
        if (call.input.size != call.bytes() || call.output.size != call.bytes()) {
            MIXZ_THROW(InvalidArgument, what, ": input (", call.input.size, " bytes) and output (", call.output.size,
                       " bytes) must hold ", call.count, " elements of ", comm::dtypeLabel(call.dtype));
        }
        return queue(
            info.Env(), "mixz.comm.allReduce", [comm, call] { call.runOn<comm::AllreduceOptions>(*comm, comm::allreduce); },
            std::move(keep));
    });
}

Napi::Value AddonCommunicator::broadcast(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&] {
        expectArguments(info, "Communicator.broadcast(descriptor)", 1);
        auto comm = live("broadcast");
        const std::string what = "Communicator.broadcast: descriptor";
        const Napi::Object descriptor = objectArgument(info[0], what);
        KeepAlive keep;
        const Bytes buffer = bytesField(info.Env(), descriptor, "buffer", what, keep);
        const int root = static_cast<int>(integerField(descriptor, "root", what, 0, comm->size() - 1));
        const CallOptions call = callOptions(descriptor, what);
        return queue(
            info.Env(), "mixz.comm.broadcast",
            [comm, buffer, root, call] {
                comm::BroadcastOptions options(*comm);
                applyCall(options, call);
                options.buffer = buffer.data;
                options.bytes = buffer.size;
                options.root = root;
                comm::broadcast(options);
            },
            std::move(keep));
    });
}

Napi::Value AddonCommunicator::barrier(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&] {
        expectArguments(info, "Communicator.barrier(descriptor)", 1);
        auto comm = live("barrier");
        const std::string what = "Communicator.barrier: descriptor";
        const CallOptions call = callOptions(objectArgument(info[0], what), what);
        return queue(info.Env(), "mixz.comm.barrier", [comm, call] {
            comm::BarrierOptions options(*comm);
            applyCall(options, call);
            comm::barrier(options);
        });
    });
}

Napi::Value AddonCommunicator::info(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&] {
        expectArguments(info, "Communicator.info()", 0);
        auto comm = live("info");
        Napi::Env env = info.Env();
        Napi::Object result = Napi::Object::New(env);
        result.Set("rank", comm->rank());
        result.Set("size", comm->size());
        result.Set("kind", comm::groupKindName(comm->kind()));
        result.Set("transport", comm->connected() ? comm->transportDescription() : std::string("unconnected"));
        Napi::Array members = Napi::Array::New(env, comm->members().size());
        for (std::size_t m = 0; m < comm->members().size(); ++m) {
            const comm::Peer& peer = comm->members()[m];
            Napi::Object member = Napi::Object::New(env);
            member.Set("rank", peer.rank);
            member.Set("host", peer.host);
            member.Set("pid", peer.pid);
            members.Set(static_cast<std::uint32_t>(m), member);
        }
        result.Set("members", members);
        return Napi::Value(result);
    });
}

Napi::Value AddonCommunicator::abort(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&] {
        expectArguments(info, "Communicator.abort(reason)", 1);
        if (!info[0].IsString()) MIXZ_THROW(InvalidArgument, "Communicator.abort: reason must be a string");
        if (comm_) comm_->abort(info[0].As<Napi::String>().Utf8Value());
        return info.Env().Undefined();
    });
}

Napi::Value AddonCommunicator::close(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&] {
        expectArguments(info, "Communicator.close()", 0);
        // Work in flight holds its own reference; the communicator goes when the last one does.
        comm_.reset();
        return info.Env().Undefined();
    });
}

Napi::Value commSelfTest(const Napi::CallbackInfo& info) {
    expectArguments(info, "commSelfTest(descriptor)", 1);
    const std::string what = "commSelfTest: descriptor";
    const Napi::Object descriptor = objectArgument(info[0], what);
    comm::testing::SuiteOptions options = suiteOptions(descriptor, what);
    options.hosts = stringArrayField(descriptor, "hosts", what);
    options.bindAddress = stringField(descriptor, "bindAddress", what);
    options.counts.clear();
    for (std::int64_t count : integerArrayField(descriptor, "counts", what, 0, std::int64_t{1} << 28)) {
        options.counts.push_back(static_cast<std::size_t>(count));
    }
    options.dtypes.clear();
    for (const std::string& name : stringArrayField(descriptor, "dtypes", what)) {
        options.dtypes.push_back(dtypeOf(name, what + ".dtypes[]"));
    }
    options.groups = booleanField(descriptor, "groups", what);
    if (!options.hosts.empty() && options.hosts.size() != static_cast<std::size_t>(options.ranks)) {
        MIXZ_THROW(InvalidArgument, what, ".hosts must be empty or name one host per rank");
    }
    auto report = std::make_shared<comm::testing::SuiteReport>();
    return queue(
        info.Env(), "mixz.comm.selfTest", [options, report] { *report = comm::testing::runCollectiveSuite(options); }, {},
        [report](Napi::Env env) -> Napi::Value {
            Napi::Object result = Napi::Object::New(env);
            result.Set("checks", static_cast<double>(report->checks));
            Napi::Array failures = Napi::Array::New(env, report->failures.size());
            for (std::size_t i = 0; i < report->failures.size(); ++i) {
                failures.Set(static_cast<std::uint32_t>(i), report->failures[i]);
            }
            result.Set("failures", failures);
            result.Set("seconds", report->seconds);
            result.Set("transport", report->transport);
            return result;
        });
}

Napi::Value commFaultTest(const Napi::CallbackInfo& info) {
    expectArguments(info, "commFaultTest(descriptor)", 1);
    const std::string what = "commFaultTest: descriptor";
    const Napi::Object descriptor = objectArgument(info[0], what);
    const comm::testing::SuiteOptions options = suiteOptions(descriptor, what);
    const std::string faultName = stringField(descriptor, "fault", what);
    comm::testing::Fault fault;
    if (faultName == "stuck") {
        fault = comm::testing::Fault::kStuckPeer;
    } else if (faultName == "closed") {
        fault = comm::testing::Fault::kClosedPeer;
    } else if (faultName == "mismatch") {
        fault = comm::testing::Fault::kMismatch;
    } else {
        MIXZ_THROW(InvalidArgument, what, ".fault must be stuck, closed or mismatch, got \"", faultName, "\"");
    }
    if (options.ranks < 2) MIXZ_THROW(InvalidArgument, what, ".ranks must be at least 2");
    const int victim = static_cast<int>(integerField(descriptor, "victim", what, 0, options.ranks - 1));
    const std::size_t bytes = static_cast<std::size_t>(integerField(descriptor, "bytes", what, 0, std::int64_t{1} << 30));
    auto report = std::make_shared<comm::testing::FaultReport>();
    return queue(
        info.Env(), "mixz.comm.faultTest",
        [options, fault, victim, bytes, report] {
            *report = comm::testing::runFaultScenario(options, fault, victim, bytes);
        },
        {},
        [report](Napi::Env env) -> Napi::Value {
            Napi::Object result = Napi::Object::New(env);
            Napi::Array codes = Napi::Array::New(env, report->codes.size());
            Napi::Array messages = Napi::Array::New(env, report->messages.size());
            Napi::Array seconds = Napi::Array::New(env, report->seconds.size());
            for (std::size_t r = 0; r < report->codes.size(); ++r) {
                codes.Set(static_cast<std::uint32_t>(r), report->codes[r]);
                messages.Set(static_cast<std::uint32_t>(r), report->messages[r]);
                seconds.Set(static_cast<std::uint32_t>(r), report->seconds[r]);
            }
            result.Set("codes", codes);
            result.Set("messages", messages);
            result.Set("seconds", seconds);
            return result;
        });
}

Napi::Value commBenchmark(const Napi::CallbackInfo& info) {
    expectArguments(info, "commBenchmark(descriptor)", 1);
    const std::string what = "commBenchmark: descriptor";
    const Napi::Object descriptor = objectArgument(info[0], what);
    const comm::testing::SuiteOptions options = suiteOptions(descriptor, what);
    const std::size_t bytes =
        static_cast<std::size_t>(integerField(descriptor, "bytesPerRank", what, 0, std::int64_t{1} << 32));
    const int iterations = static_cast<int>(integerField(descriptor, "iterations", what, 1, 1000000));
    const int warmup = static_cast<int>(integerField(descriptor, "warmup", what, 0, 1000000));
    auto seconds = std::make_shared<double>(0);
    return queue(
        info.Env(), "mixz.comm.benchmark",
        [options, bytes, iterations, warmup, seconds] {
            *seconds = comm::testing::benchmarkAllgather(options, bytes, iterations, warmup);
        },
        {}, [seconds](Napi::Env env) -> Napi::Value { return Napi::Number::New(env, *seconds); });
}

} // namespace mixz::addon

namespace mixz::addon {

std::shared_ptr<comm::Communicator> communicatorOf(const Napi::Value& value, const std::string& what) {
    // instanceof against the class this environment defined: unwrapping an object of another
    // wrapped class would reinterpret its native pointer.
    auto* constructor = value.Env().GetInstanceData<Napi::FunctionReference>();
    if (constructor == nullptr || !value.IsObject() || !value.As<Napi::Object>().InstanceOf(constructor->Value())) {
        MIXZ_THROW(InvalidArgument, what, " must be a Communicator of @mixz/engine, got ", describe(value));
    }
    return AddonCommunicator::Unwrap(value.As<Napi::Object>())->shared(what);
}

} // namespace mixz::addon
