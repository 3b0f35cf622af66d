#include "AddonEngine.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "AddonCommunicator.h"
#include "PromiseWorker.h"
#include "convertError.h"
#include "readArguments.h"
#include "mixz/common/error.h"

namespace mixz::addon {
namespace {

constexpr std::int64_t kMaxSafeInteger = (std::int64_t{1} << 53) - 1;

std::int64_t integerField(const Napi::Object& object, const char* key, const std::string& what, std::int64_t min,
                          std::int64_t max) {
    return integerIn(object.Get(key), what + "." + key, min, max);
}

double numberField(const Napi::Object& object, const char* key, const std::string& what) {
    const Napi::Value value = object.Get(key);
    if (!value.IsNumber() || !std::isfinite(value.As<Napi::Number>().DoubleValue())) {
        MIXZ_THROW(InvalidArgument, what, ".", key, " must be a finite number, got ", describe(value));
    }
    return value.As<Napi::Number>().DoubleValue();
}

bool booleanField(const Napi::Object& object, const char* key, const std::string& what) {
    const Napi::Value value = object.Get(key);
    if (!value.IsBoolean()) MIXZ_THROW(InvalidArgument, what, ".", key, " must be a boolean, got ", describe(value));
    return value.As<Napi::Boolean>().Value();
}

Napi::Object objectField(const Napi::Object& object, const char* key, const std::string& what) {
    return objectArgument(object.Get(key), what + "." + key);
}

std::size_t sizeField(const Napi::Object& object, const char* key, const std::string& what) {
    return static_cast<std::size_t>(integerField(object, key, what, 0, kMaxSafeInteger));
}

zero::EngineOptions engineOptions(const Napi::Object& descriptor) {
    const std::string what = "createEngine: descriptor";
    zero::EngineOptions options;
    const Napi::Object dims = objectField(descriptor, "dims", what);
    const std::string d = what + ".dims";
    options.dims.vocab = static_cast<int>(integerField(dims, "vocab", d, 1, 1 << 30));
    options.dims.hidden = static_cast<int>(integerField(dims, "hidden", d, 1, 1 << 20));
    options.dims.layers = static_cast<int>(integerField(dims, "layers", d, 1, 1 << 16));
    options.dims.heads = static_cast<int>(integerField(dims, "heads", d, 1, 1 << 16));
    options.dims.kvHeads = static_cast<int>(integerField(dims, "kvHeads", d, 1, 1 << 16));
    options.dims.intermediate = static_cast<int>(integerField(dims, "intermediate", d, 1, 1 << 24));
    options.dims.maxSeq = static_cast<int>(integerField(dims, "maxSeq", d, 1, 1 << 24));
    options.dims.ropeTheta = numberField(dims, "ropeTheta", d);
    options.dims.rmsEps = numberField(dims, "rmsEps", d);
    const std::string scaling = stringField(dims, "ropeScaling", d);
    if (scaling == "none") {
        options.dims.ropeScaling = model::RopeScaling::none;
    } else if (scaling == "linear") {
        options.dims.ropeScaling = model::RopeScaling::linear;
    } else if (scaling == "llama3") {
        options.dims.ropeScaling = model::RopeScaling::llama3;
    } else {
        MIXZ_THROW(InvalidArgument, d, ".ropeScaling must be none, linear or llama3, got \"", scaling, "\"");
    }
    // Every field is sent (descriptors are complete); validate(dims) checks them for the scaling.
    options.dims.ropeFactor = numberField(dims, "ropeFactor", d);
    options.dims.ropeLowFreqFactor = numberField(dims, "ropeLowFreqFactor", d);
    options.dims.ropeHighFreqFactor = numberField(dims, "ropeHighFreqFactor", d);
    options.dims.ropeOriginalMaxSeq = numberField(dims, "ropeOriginalMaxSeq", d);
    options.dims.attentionBias = booleanField(dims, "attentionBias", d);
    const std::string dtype = stringField(descriptor, "dtype", what);
    if (dtype == "fp32") {
        options.dtype = tensor::DType::kFloat32;
    } else if (dtype == "fp16") {
        options.dtype = tensor::DType::kFloat16;
    } else if (dtype == "bf16") {
        options.dtype = tensor::DType::kBFloat16;
    } else {
        MIXZ_THROW(InvalidArgument, what, ".dtype must be fp32, fp16 or bf16, got \"", dtype, "\"");
    }
    options.seed = static_cast<std::uint64_t>(integerField(descriptor, "seed", what, 0, kMaxSafeInteger));
    options.initStd = numberField(descriptor, "initStd", what);
    const Napi::Object zero = objectField(descriptor, "zero", what);
    const std::string z = what + ".zero";
    options.zero.prefetchBucketSize = sizeField(zero, "prefetchBucketSize", z);
    options.zero.maxLiveParameters = sizeField(zero, "maxLiveParameters", z);
    options.zero.persistenceThreshold = sizeField(zero, "persistenceThreshold", z);
    options.zero.reduceBucketSize = sizeField(zero, "reduceBucketSize", z);
    options.zero.overlapComm = booleanField(zero, "overlapComm", z);
    options.hasOptimizer = booleanField(descriptor, "hasOptimizer", what);
    const Napi::Object optimizer = objectField(descriptor, "optimizer", what);
    const std::string o = what + ".optimizer";
    options.optimizer.beta1 = numberField(optimizer, "beta1", o);
    options.optimizer.beta2 = numberField(optimizer, "beta2", o);
    options.optimizer.eps = numberField(optimizer, "eps", o);
    options.optimizer.weightDecay = numberField(optimizer, "weightDecay", o);
    options.optimizer.decoupledWeightDecay = booleanField(optimizer, "decoupledWeightDecay", o);
    options.backend.kernelThreads = static_cast<int>(integerField(descriptor, "kernelThreads", what, 1, 1024));
    {
        // TypeScript resolved "auto" and MIXZ_DEVICE; the native side only sees a concrete device.
        const std::string device = stringField(descriptor, "device", what);
        if (device == "cpu") {
            options.backend.device = backend::Device::kCpu;
        } else if (device == "cuda") {
            options.backend.device = backend::Device::kCuda;
        } else if (device == "cpu-staged") {
            options.backend.device = backend::Device::kCpuStaged;
        } else {
            MIXZ_THROW(InvalidArgument, what, ".device must be cpu, cuda or cpu-staged, got \"", device, "\"");
        }
        options.backend.deviceOrdinal = static_cast<int>(integerField(descriptor, "deviceOrdinal", what, 0, 1 << 16));
    }
    options.quantBlockSize = static_cast<std::size_t>(integerField(descriptor, "quantBlockSize", what, 8, 65536));
    options.quantizeWeights = booleanField(descriptor, "quantizeWeights", what);
    options.quantizeGradients = booleanField(descriptor, "quantizeGradients", what);
    {
        const std::string comm = stringField(descriptor, "gradientCommDType", what);
        if (comm == "fp32") {
            options.gradientCommDType = tensor::DType::kFloat32;
        } else if (comm == "fp16") {
            options.gradientCommDType = tensor::DType::kFloat16;
        } else if (comm == "bf16") {
            options.gradientCommDType = tensor::DType::kBFloat16;
        } else {
            MIXZ_THROW(InvalidArgument, what, ".gradientCommDType must be fp32, fp16 or bf16, got \"", comm, "\"");
        }
    }
    // The collective tags are fixed on the native side (mixz/zero/collective_tags.h); a tagBase the
    // descriptor may still carry is ignored, as is every field not read here.
    // TypeScript's ZeRO++ decisions (the engine checks them against the groups): hpZ over groups of
    // hpzSize ranks (1: no hpZ); quantizeGradients above means qgZ runs.
    options.hpzSize = static_cast<int>(integerField(descriptor, "hpzSize", what, 1, 1 << 20));
    options.timeout = std::chrono::milliseconds(integerField(descriptor, "timeoutMs", what, 1, 2'147'483'647));
    return options;
}

Napi::Int32Array int32Field(const Napi::Object& object, const char* key, const std::string& what) {
    const Napi::Value value = object.Get(key);
    if (!value.IsTypedArray() || value.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) {
        MIXZ_THROW(InvalidArgument, what, ".", key, " must be an Int32Array, got ", describe(value));
    }
    return value.As<Napi::Int32Array>();
}

Napi::Float32Array float32Argument(const Napi::Value& value, const std::string& what) {
    if (!value.IsTypedArray() || value.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array) {
        MIXZ_THROW(InvalidArgument, what, " must be a Float32Array, got ", describe(value));
    }
    return value.As<Napi::Float32Array>();
}

Napi::Object memoryObject(Napi::Env env, const zero::MemoryReport& m) {
    Napi::Object object = Napi::Object::New(env);
    auto set = [&](const char* key, std::size_t bytes) { object.Set(key, static_cast<double>(bytes)); };
    set("parameterPartitions", m.parameterPartitions);
    set("quantizedPartitions", m.quantizedPartitions);
    set("secondaryPartitions", m.secondaryPartitions);
    set("quantScales", m.quantScales);
    set("persistentParameters", m.persistentParameters);
    set("gatheredParameters", m.gatheredParameters);
    set("gatheredParametersPeak", m.gatheredParametersPeak);
    set("gradientPartitions", m.gradientPartitions);
    set("masterWeights", m.masterWeights);
    set("optimizerStates", m.optimizerStates);
    set("activations", m.activations);
    set("activationsPeak", m.activationsPeak);
    set("communicationBuffers", m.communicationBuffers);
    return object;
}

// The engine and the JS objects it needs during construction.
struct Building {
    zero::EngineOptions options;
    std::shared_ptr<comm::Communicator> world;
    zero::Engine::Groups groups;
    std::shared_ptr<zero::Engine> engine;
};


} // namespace

Napi::Function AddonEngine::define(Napi::Env env) {
    return DefineClass(env, "Engine",
                       {InstanceMethod<&AddonEngine::params>("params"),
                        InstanceMethod<&AddonEngine::forward>("forward"),
                        InstanceMethod<&AddonEngine::backward>("backward"),
                        InstanceMethod<&AddonEngine::step>("step"),
                        InstanceMethod<&AddonEngine::zeroGradients>("zeroGradients"),
                        InstanceMethod<&AddonEngine::readSlice>("readSlice"),
                        InstanceMethod<&AddonEngine::writeSlice>("writeSlice"),
                        InstanceMethod<&AddonEngine::optimizerSteps>("optimizerSteps"),
                        InstanceMethod<&AddonEngine::setOptimizerSteps>("setOptimizerSteps"),
                        InstanceMethod<&AddonEngine::trainingForwards>("trainingForwards"),
                        InstanceMethod<&AddonEngine::setTrainingForwards>("setTrainingForwards"),
                        InstanceMethod<&AddonEngine::memory>("memory"),
                        InstanceMethod<&AddonEngine::takeMetrics>("takeMetrics"),
                        InstanceMethod<&AddonEngine::applyLora>("applyLora"),
                        InstanceMethod<&AddonEngine::quantizeNontrainable>("quantizeNontrainable"),
                        InstanceMethod<&AddonEngine::generate>("generate"),
                        InstanceMethod<&AddonEngine::gatherParameter>("gatherParameter"),
                        InstanceMethod<&AddonEngine::abort>("abort"),
                        InstanceMethod<&AddonEngine::dispose>("dispose")});
}

AddonEngine::AddonEngine(const Napi::CallbackInfo& info) : Napi::ObjectWrap<AddonEngine>(info) {
    guard(info.Env(), [&] {
        // Only createEngine constructs engines: it passes the one it built.
        if (info.Length() != 1 || !info[0].IsExternal()) {
            MIXZ_THROW(InvalidArgument, "Engine objects come from createEngine(descriptor, communicator)");
        }
        engine_ = *info[0].As<Napi::External<std::shared_ptr<zero::Engine>>>().Data();
    });
}

std::shared_ptr<zero::Engine> AddonEngine::idle(const char* what) const {
    if (!engine_) MIXZ_THROW(InvalidArgument, "Engine.", what, ": the engine was disposed");
    if (*busy_) MIXZ_THROW(InvalidArgument, "Engine.", what, ": busy with another call; await it first");
    return engine_;
}

Napi::Value AddonEngine::params(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
        expectArguments(info, "Engine.params()", 0);
        auto engine = idle("params");
        Napi::Env env = info.Env();
        const auto& params = engine->params();
        Napi::Array array = Napi::Array::New(env, params.size());
        for (std::size_t i = 0; i < params.size(); ++i) {
            const zero::ParamInfo& p = params[i];
            Napi::Object object = Napi::Object::New(env);
            object.Set("name", p.name);
            Napi::Array shape = Napi::Array::New(env, p.shape.size());
            for (std::size_t k = 0; k < p.shape.size(); ++k) shape.Set(static_cast<std::uint32_t>(k), static_cast<double>(p.shape[k]));
            object.Set("shape", shape);
            object.Set("numel", static_cast<double>(p.numel));
            object.Set("partition", static_cast<double>(p.partition));
            object.Set("unit", p.unit);
            object.Set("trainable", p.trainable);
            object.Set("persistent", p.persistent);
            object.Set("quantized", p.quantized);
            object.Set("hasSecondary", p.hasSecondary);
            object.Set("sliceBegin", static_cast<double>(engine->sliceBegin(i)));
            object.Set("sliceLength", static_cast<double>(engine->sliceLength(i)));
            array.Set(static_cast<std::uint32_t>(i), object);
        }
        return array;
    });
}

Napi::Value AddonEngine::forward(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
        expectArguments(info, "Engine.forward(batch)", 1);
        auto engine = idle("forward");
        const std::string what = "Engine.forward: batch";
        const Napi::Object descriptor = objectArgument(info[0], what);
        const Napi::Int32Array inputIds = int32Field(descriptor, "inputIds", what);
        const bool hasLabels = !descriptor.Get("labels").IsNull();
        zero::Batch batch;
        batch.micro = static_cast<int>(integerField(descriptor, "micro", what, 1, 1 << 24));
        batch.seq = static_cast<int>(integerField(descriptor, "seq", what, 1, 1 << 24));
        const bool train = booleanField(descriptor, "train", what);
        const std::size_t tokens = static_cast<std::size_t>(batch.micro) * static_cast<std::size_t>(batch.seq);
        if (inputIds.ElementLength() != tokens) {
            MIXZ_THROW(InvalidArgument, what, ".inputIds has ", inputIds.ElementLength(), " ids, the shape [", batch.micro, ", ", batch.seq, "] needs ", tokens);
        }
        KeepAlive keep;
        keep.add(inputIds);
        batch.inputIds = inputIds.Data();
        if (hasLabels) {
            const Napi::Int32Array labels = int32Field(descriptor, "labels", what);
            if (labels.ElementLength() != tokens) {
                MIXZ_THROW(InvalidArgument, what, ".labels has ", labels.ElementLength(), " labels, the shape needs ", tokens);
            }
            keep.add(labels);
            batch.labels = labels.Data();
        }
        // Optional (TypeScript passes null when absent; older callers may leave it out).
        const Napi::Value positionsValue = descriptor.Get("positionIds");
        if (!positionsValue.IsNull() && !positionsValue.IsUndefined()) {
            const Napi::Int32Array positions = int32Field(descriptor, "positionIds", what);
            if (positions.ElementLength() != tokens) {
                MIXZ_THROW(InvalidArgument, what, ".positionIds has ", positions.ElementLength(), " entries, the shape needs ", tokens);
            }
            keep.add(positions);
            batch.positions = positions.Data();
        }
        auto result = std::make_shared<zero::ForwardResult>();
        *busy_ = true;
        auto busy = busy_;
        return queuePromise(
            info.Env(), "mixz.engine.forward", [engine, batch, train, result] { *result = engine->forward(batch, train); },
            std::move(keep),
            [result](Napi::Env env) -> Napi::Value {
                Napi::Object object = Napi::Object::New(env);
                object.Set("loss", result->loss);
                object.Set("counted", static_cast<double>(result->counted));
                return object;
            },
            [busy] { *busy = false; });
    });
}

Napi::Value AddonEngine::backward(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
        expectArguments(info, "Engine.backward(options)", 1);
        auto engine = idle("backward");
        const std::string what = "Engine.backward: options";
        const double lossGrad = numberField(objectArgument(info[0], what), "lossGrad", what);
        *busy_ = true;
        auto busy = busy_;
        return queuePromise(
            info.Env(), "mixz.engine.backward", [engine, lossGrad] { engine->backward(lossGrad); }, {}, {},
            [busy] { *busy = false; });
    });
}

Napi::Value AddonEngine::step(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
        expectArguments(info, "Engine.step(options)", 1);
        auto engine = idle("step");
        const std::string what = "Engine.step: options";
        const Napi::Object object = objectArgument(info[0], what);
        zero::StepOptions options;
        options.lr = numberField(object, "lr", what);
        options.lossScale = numberField(object, "lossScale", what);
        if (options.lossScale <= 0) MIXZ_THROW(InvalidArgument, what, ".lossScale must be positive");
        options.gradientClipping = numberField(object, "gradientClipping", what);
        options.checkOverflow = booleanField(object, "checkOverflow", what);
        auto result = std::make_shared<zero::StepResult>();
        *busy_ = true;
        auto busy = busy_;
        return queuePromise(
            info.Env(), "mixz.engine.step", [engine, options, result] { *result = engine->step(options); }, {},
            [result](Napi::Env env) -> Napi::Value {
                Napi::Object out = Napi::Object::New(env);
                out.Set("overflow", result->overflow);
                out.Set("gradNorm", result->gradNorm);
                return out;
            },
            [busy] { *busy = false; });
    });
}

Napi::Value AddonEngine::zeroGradients(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
        expectArguments(info, "Engine.zeroGradients()", 0);
        idle("zeroGradients")->zeroGradients();
        return info.Env().Undefined();
    });
}

Napi::Value AddonEngine::readSlice(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
        expectArguments(info, "Engine.readSlice(index, kind)", 2);
        auto engine = idle("readSlice");
        const auto index = static_cast<std::size_t>(integerIn(info[0], "Engine.readSlice: index", 0, kMaxSafeInteger));
        if (!info[1].IsString()) MIXZ_THROW(InvalidArgument, "Engine.readSlice: kind must be a string");
        if (index >= engine->params().size()) MIXZ_THROW(InvalidArgument, "Engine.readSlice: no parameter with index ", index);
        Napi::Float32Array out = Napi::Float32Array::New(info.Env(), engine->sliceLength(index));
        engine->readSlice(index, info[1].As<Napi::String>().Utf8Value(), out.Data());
        return out;
    });
}

Napi::Value AddonEngine::writeSlice(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
        expectArguments(info, "Engine.writeSlice(index, kind, values)", 3);
        auto engine = idle("writeSlice");
        const auto index = static_cast<std::size_t>(integerIn(info[0], "Engine.writeSlice: index", 0, kMaxSafeInteger));
        if (!info[1].IsString()) MIXZ_THROW(InvalidArgument, "Engine.writeSlice: kind must be a string");
        if (index >= engine->params().size()) MIXZ_THROW(InvalidArgument, "Engine.writeSlice: no parameter with index ", index);
        const Napi::Float32Array values = float32Argument(info[2], "Engine.writeSlice: values");
        if (values.ElementLength() != engine->sliceLength(index)) {
            MIXZ_THROW(InvalidArgument, "Engine.writeSlice: ", engine->params()[index].name, " needs ", engine->sliceLength(index),
                       " values on this rank, got ", values.ElementLength());
        }
        engine->writeSlice(index, info[1].As<Napi::String>().Utf8Value(), values.Data());
        return info.Env().Undefined();
    });
}

Napi::Value AddonEngine::optimizerSteps(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
        expectArguments(info, "Engine.optimizerSteps()", 0);
        return Napi::Number::New(info.Env(), static_cast<double>(idle("optimizerSteps")->optimizerSteps()));
    });
}

Napi::Value AddonEngine::setOptimizerSteps(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
        expectArguments(info, "Engine.setOptimizerSteps(steps)", 1);
        auto engine = idle("setOptimizerSteps");
        engine->setOptimizerSteps(static_cast<std::uint64_t>(integerIn(info[0], "Engine.setOptimizerSteps: steps", 0, kMaxSafeInteger)));
        return info.Env().Undefined();
    });
}

Napi::Value AddonEngine::trainingForwards(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
        expectArguments(info, "Engine.trainingForwards()", 0);
        return Napi::Number::New(info.Env(), static_cast<double>(idle("trainingForwards")->trainingForwards()));
    });
}

Napi::Value AddonEngine::setTrainingForwards(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
        expectArguments(info, "Engine.setTrainingForwards(forwards)", 1);
        auto engine = idle("setTrainingForwards");
        engine->setTrainingForwards(static_cast<std::uint64_t>(integerIn(info[0], "Engine.setTrainingForwards: forwards", 0, kMaxSafeInteger)));
        return info.Env().Undefined();
    });
}

Napi::Value AddonEngine::memory(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
        expectArguments(info, "Engine.memory()", 0);
        // Not while a call runs: the buffers it measures are being resized on other threads.
        return memoryObject(info.Env(), idle("memory")->memory());
    });
}

Napi::Value AddonEngine::takeMetrics(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
        expectArguments(info, "Engine.takeMetrics()", 0);
        if (!engine_) MIXZ_THROW(InvalidArgument, "Engine.takeMetrics: the engine was disposed");
        const zero::EngineMetrics m = engine_->takeMetrics();
        Napi::Object object = Napi::Object::New(info.Env());
        object.Set("computeSeconds", m.computeSeconds);
        object.Set("gatherWaitSeconds", m.gatherWaitSeconds);
        object.Set("reduceWaitSeconds", m.reduceWaitSeconds);
        object.Set("gatherSeconds", m.gatherSeconds);
        object.Set("reduceSeconds", m.reduceSeconds);
        object.Set("optimizerSeconds", m.optimizerSeconds);
        object.Set("gatheredBytes", static_cast<double>(m.gatheredBytes));
        object.Set("reducedBytes", static_cast<double>(m.reducedBytes));
        object.Set("frozenGatherIntraBytes", static_cast<double>(m.frozenGatherIntraBytes));
        object.Set("frozenGatherCrossBytes", static_cast<double>(m.frozenGatherCrossBytes));
        object.Set("trainableGatherIntraBytes", static_cast<double>(m.trainableGatherIntraBytes));
        object.Set("trainableGatherCrossBytes", static_cast<double>(m.trainableGatherCrossBytes));
        object.Set("reduceIntraBytes", static_cast<double>(m.reduceIntraBytes));
        object.Set("reduceCrossBytes", static_cast<double>(m.reduceCrossBytes));
        return object;
    });
}

Napi::Value AddonEngine::applyLora(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
        expectArguments(info, "Engine.applyLora(options)", 1);
        auto engine = idle("applyLora");
        const std::string what = "Engine.applyLora: options";
        const Napi::Object object = objectArgument(info[0], what);
        zero::LoraOptions options;
        options.rank = static_cast<int>(integerField(object, "r", what, 1, 1 << 16));
        options.alpha = numberField(object, "alpha", what);
        options.seed = static_cast<std::uint64_t>(integerField(object, "seed", what, 0, kMaxSafeInteger));
        options.dropout = numberField(object, "dropout", what);
        if (!(options.dropout >= 0 && options.dropout < 1)) {
            MIXZ_THROW(InvalidArgument, what, ".dropout must be in [0, 1), got ", options.dropout);
        }
        const Napi::Value targets = object.Get("targets");
        if (!targets.IsArray()) MIXZ_THROW(InvalidArgument, what, ".targets must be an array of strings");
        const Napi::Array array = targets.As<Napi::Array>();
        for (std::uint32_t i = 0; i < array.Length(); ++i) {
            if (!array.Get(i).IsString()) MIXZ_THROW(InvalidArgument, what, ".targets[", i, "] must be a string");
            options.targets.push_back(array.Get(i).As<Napi::String>().Utf8Value());
        }
        engine->applyLora(options);
        return info.Env().Undefined();
    });
}

Napi::Value AddonEngine::quantizeNontrainable(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
        expectArguments(info, "Engine.quantizeNontrainable()", 0);
        auto engine = idle("quantizeNontrainable");
        auto report = std::make_shared<zero::QuantizeReport>();
        *busy_ = true;
        auto busy = busy_;
        return queuePromise(
            info.Env(), "mixz.engine.quantize", [engine, report] { *report = engine->quantizeNontrainable(); }, {},
            [report](Napi::Env env) -> Napi::Value {
                Napi::Object out = Napi::Object::New(env);
                out.Set("parameters", static_cast<double>(report->parameters));
                out.Set("bytesBefore", static_cast<double>(report->bytesBefore));
                out.Set("bytesAfter", static_cast<double>(report->bytesAfter));
                return out;
            },
            [busy] { *busy = false; });
    });
}

Napi::Value AddonEngine::generate(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
        expectArguments(info, "Engine.generate(options)", 1);
        auto engine = idle("generate");
        const std::string what = "Engine.generate: options";
        const Napi::Object object = objectArgument(info[0], what);
        const Napi::Int32Array prompt = int32Field(object, "promptIds", what);
        zero::GenerateOptions options;
        options.batch = static_cast<int>(integerField(object, "batch", what, 1, 1 << 20));
        options.promptLength = static_cast<int>(integerField(object, "promptLength", what, 1, 1 << 24));
        options.maxNewTokens = static_cast<int>(integerField(object, "maxNewTokens", what, 1, 1 << 24));
        options.temperature = numberField(object, "temperature", what);
        options.topK = static_cast<int>(integerField(object, "topK", what, 0, 1 << 30));
        options.topP = numberField(object, "topP", what);
        options.seed = static_cast<std::uint64_t>(integerField(object, "seed", what, 0, kMaxSafeInteger));
        {
            const Napi::Int32Array stops = int32Field(object, "stopIds", what);
            options.stopIds.assign(stops.Data(), stops.Data() + stops.ElementLength());
            options.padId = static_cast<std::int32_t>(integerField(object, "padId", what, 0, 1 << 30));
        }
        if (prompt.ElementLength() != static_cast<std::size_t>(options.batch) * static_cast<std::size_t>(options.promptLength)) {
            MIXZ_THROW(InvalidArgument, what, ".promptIds has ", prompt.ElementLength(), " ids, [", options.batch, ", ", options.promptLength, "] needs ",
                       static_cast<std::size_t>(options.batch) * static_cast<std::size_t>(options.promptLength));
        }
        KeepAlive keep;
        keep.add(prompt);
        const std::int32_t* ids = prompt.Data();
        auto result = std::make_shared<std::vector<std::int32_t>>();
        *busy_ = true;
        auto busy = busy_;
        return queuePromise(
            info.Env(), "mixz.engine.generate", [engine, ids, options, result] { *result = engine->generate(ids, options); }, std::move(keep),
            [result](Napi::Env env) -> Napi::Value {
                Napi::Int32Array out = Napi::Int32Array::New(env, result->size());
                std::copy(result->begin(), result->end(), out.Data());
                return out;
            },
            [busy] { *busy = false; });
    });
}

Napi::Value AddonEngine::gatherParameter(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
        expectArguments(info, "Engine.gatherParameter(index)", 1);
        auto engine = idle("gatherParameter");
        const auto index = static_cast<std::size_t>(integerIn(info[0], "Engine.gatherParameter: index", 0, kMaxSafeInteger));
        if (index >= engine->params().size()) MIXZ_THROW(InvalidArgument, "Engine.gatherParameter: no parameter with index ", index);
        auto result = std::make_shared<std::vector<float>>();
        *busy_ = true;
        auto busy = busy_;
        return queuePromise(
            info.Env(), "mixz.engine.gatherParameter", [engine, index, result] { *result = engine->gatherParameter(index); }, {},
            [result](Napi::Env env) -> Napi::Value {
                Napi::Float32Array out = Napi::Float32Array::New(env, result->size());
                std::copy(result->begin(), result->end(), out.Data());
                return out;
            },
            [busy] { *busy = false; });
    });
}

Napi::Value AddonEngine::abort(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
        expectArguments(info, "Engine.abort(reason)", 1);
        if (!info[0].IsString()) MIXZ_THROW(InvalidArgument, "Engine.abort: reason must be a string");
        if (engine_) engine_->abort(info[0].As<Napi::String>().Utf8Value());
        return info.Env().Undefined();
    });
}

Napi::Value AddonEngine::dispose(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
        expectArguments(info, "Engine.dispose()", 0);
        if (engine_ && *busy_) MIXZ_THROW(InvalidArgument, "Engine.dispose: a call is still running; await it first");
        engine_.reset(); // the last reference: joins the communication thread and frees the partitions
        return info.Env().Undefined();
    });
}

Napi::Value createEngine(const Napi::CallbackInfo& info) {
    expectArguments(info, "createEngine(descriptor, communicator, groups)", 3);
    auto building = std::make_shared<Building>();
    building->options = engineOptions(objectArgument(info[0], "createEngine: descriptor"));
    building->world = communicatorOf(info[1], "createEngine: communicator");
    const Napi::Object groups = objectArgument(info[2], "createEngine: groups");
    KeepAlive keep;
    keep.add(info[1]);
    for (const char* key : {"hpz", "node", "cross"}) {
        const Napi::Value value = groups.Get(key);
        if (value.IsNull()) continue;
        auto comm = communicatorOf(value, std::string("createEngine: groups.") + key);
        keep.add(value);
        (std::string(key) == "hpz" ? building->groups.hpz : std::string(key) == "node" ? building->groups.node : building->groups.cross) = comm;
    }
    auto constructor = std::make_shared<Napi::FunctionReference>(Napi::Persistent(AddonEngine::define(info.Env())));
    return queuePromise(
        info.Env(), "mixz.engine.create",
        [building] { building->engine = std::make_shared<zero::Engine>(building->options, building->world, building->groups); },
        std::move(keep),
        [building, constructor](Napi::Env env) -> Napi::Value {
            return constructor->New({Napi::External<std::shared_ptr<zero::Engine>>::New(env, &building->engine)});
        });
}

} // namespace mixz::addon
