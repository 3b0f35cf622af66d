#include "AddonCuda.h"

#include <string>

#include "mixz/common/error.h"
#include "mixz/cudalib/driver_api.h"

namespace mixz::addon {
namespace {

// Strings that may be absent are null rather than "" so TypeScript can tell "none" from empty.
Napi::Value stringOrNull(Napi::Env env, const std::string& value) {
    return value.empty() ? env.Null() : Napi::Value(Napi::String::New(env, value));
}

Napi::Object library(Napi::Env env, const cudalib::LibraryProbe& probe) {
    Napi::Object object = Napi::Object::New(env);
    object.Set("found", probe.found);
    object.Set("path", stringOrNull(env, probe.path));
    object.Set("version", stringOrNull(env, probe.version));
    object.Set("error", stringOrNull(env, probe.error));
    return object;
}

} // namespace

Napi::Value cudaProbe(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() != 0) MIXZ_THROW(InvalidArgument, "cudaProbe() takes no arguments, got ", info.Length());

    const cudalib::CudaProbe probe = cudalib::probeCuda();

    Napi::Array devices = Napi::Array::New(env, probe.devices.size());
    for (std::uint32_t i = 0; i < probe.devices.size(); ++i) {
        const cudalib::CudaDeviceInfo& device = probe.devices[i];
        Napi::Object object = Napi::Object::New(env);
        object.Set("ordinal", device.ordinal);
        object.Set("name", device.name);
        object.Set("major", device.major);
        object.Set("minor", device.minor);
        // A double holds byte counts exactly up to 2^53 (8 PiB).
        object.Set("totalBytes", static_cast<double>(device.totalBytes));
        object.Set("multiprocessors", device.multiprocessors);
        object.Set("pciBusId", device.pciBusId);
        devices.Set(i, object);
    }

    Napi::Object result = Napi::Object::New(env);
    result.Set("cudaCompiled", probe.cudaCompiled);
    result.Set("driver", library(env, probe.driver));
    result.Set("driverVersion", probe.driverVersion);
    result.Set("deviceError", stringOrNull(env, probe.deviceError));
    result.Set("devices", devices);
    result.Set("cublas", library(env, probe.cublas));
    result.Set("nccl", library(env, probe.nccl));
    return result;
}

} // namespace mixz::addon
