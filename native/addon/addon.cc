// Module entry of the native addon: the only translation units that include napi.h live in this
// directory. Functions here convert between JS values and the core's C++ types and nothing more;
// the work happens in native/src.
#include <napi.h>

#include <optional>
#include <string>
#include <vector>

#include "AddonCommunicator.h"
#include "AddonCuda.h"
#include "AddonEngine.h"
#include "AddonQuant.h"
#include "AddonWatchdog.h"
#include "convertError.h"
#include "mixz/common/error.h"
#include "mixz/common/probe.h"

namespace {

Napi::Array toArray(Napi::Env env, const std::vector<std::string>& values) {
    Napi::Array array = Napi::Array::New(env, values.size());
    for (uint32_t i = 0; i < values.size(); ++i) array.Set(i, Napi::String::New(env, values[i]));
    return array;
}

Napi::Value toStringOrNull(Napi::Env env, const std::optional<std::string>& value) {
    return value ? Napi::Value(Napi::String::New(env, *value)) : env.Null();
}

// version(): NativeBuildInfo (packages/engine/src/binding/AddonTypes.ts). Keys are camelCase and every
// key is always present, so the TS type needs no optional fields.
Napi::Value version(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    // Extra arguments mean the TS side and the binary disagree about the API: say so instead of
    // ignoring them.
    if (info.Length() != 0) MIXZ_THROW(mixz::InvalidArgument, "version() takes no arguments, got ", info.Length());

    const mixz::BuildProbe probe = mixz::probe();

    Napi::Object gloo = Napi::Object::New(env);
    gloo.Set("version", probe.gloo.version);
    gloo.Set("transports", toArray(env, probe.gloo.transports));
    gloo.Set("tcpDevice", toStringOrNull(env, probe.gloo.tcpDevice));
    gloo.Set("tcpDeviceError", toStringOrNull(env, probe.gloo.tcpDeviceError));

    Napi::Object blas = Napi::Object::New(env);
    blas.Set("name", probe.blas.name);
    blas.Set("config", probe.blas.config);
    blas.Set("corename", probe.blas.corename);
    blas.Set("threads", static_cast<double>(probe.blas.threads));
    blas.Set("parallel", probe.blas.parallel);
    blas.Set("library", probe.blas.library);
    blas.Set("sgemmOk", probe.blas.sgemmOk);

    Napi::Object cpu = Napi::Object::New(env);
    cpu.Set("avx2", probe.cpu.avx2);
    cpu.Set("fma", probe.cpu.fma);

    Napi::Object result = Napi::Object::New(env);
    result.Set("version", probe.version);
    result.Set("compiler", probe.compiler);
    result.Set("buildType", probe.buildType);
    result.Set("sanitizers", toArray(env, probe.sanitizers));
    result.Set("gloo", gloo);
    result.Set("blas", blas);
    result.Set("cpu", cpu);
    return result;
}

Napi::Object init(Napi::Env env, Napi::Object exports) {
    exports.Set("version", Napi::Function::New(env, mixz::addon::guarded<version>, "version"));
    exports.Set("processGroup",
                Napi::Function::New(env, mixz::addon::guarded<mixz::addon::processGroup>, "processGroup"));
    exports.Set("Watchdog", mixz::addon::AddonWatchdog::define(env));
    // Block quantization (AddonQuant.h).
    exports.Set("quantize", Napi::Function::New(env, mixz::addon::guarded<mixz::addon::quantize>, "quantize"));
    exports.Set("dequantize", Napi::Function::New(env, mixz::addon::guarded<mixz::addon::dequantize>, "dequantize"));
    exports.Set("dequantizeSegments", Napi::Function::New(env, mixz::addon::guarded<mixz::addon::dequantizeSegments>,
                                                          "dequantizeSegments"));
    exports.Set("convertFloats",
                Napi::Function::New(env, mixz::addon::guarded<mixz::addon::convertFloats>, "convertFloats"));
    exports.Set("quantBenchmark",
                Napi::Function::New(env, mixz::addon::guarded<mixz::addon::quantBenchmark>, "quantBenchmark"));
    exports.Set("quantInfo", Napi::Function::New(env, mixz::addon::guarded<mixz::addon::quantInfo>, "quantInfo"));
    // Collective communication (AddonCommunicator.h); the comm* functions are test support.
    exports.Set("Communicator", mixz::addon::AddonCommunicator::define(env));
    exports.Set("commSelfTest", Napi::Function::New(env, mixz::addon::guarded<mixz::addon::commSelfTest>, "commSelfTest"));
    exports.Set("commFaultTest",
                Napi::Function::New(env, mixz::addon::guarded<mixz::addon::commFaultTest>, "commFaultTest"));
    exports.Set("commBenchmark",
                Napi::Function::New(env, mixz::addon::guarded<mixz::addon::commBenchmark>, "commBenchmark"));
    // What this machine has for the CUDA backend (AddonCuda.h).
    exports.Set("cudaProbe", Napi::Function::New(env, mixz::addon::guarded<mixz::addon::cudaProbe>, "cudaProbe"));
    // ZeRO-3 training (AddonEngine.h).
    exports.Set("createEngine", Napi::Function::New(env, mixz::addon::guarded<mixz::addon::createEngine>, "createEngine"));
    return exports;
}

} // namespace

NODE_API_MODULE(mixz, init)
