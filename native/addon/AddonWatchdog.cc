#include "AddonWatchdog.h"

#include <cmath>
#include <cstdint>
#include <string>

#include "convertError.h"
#include "readArguments.h"
#include "mixz/common/error.h"
#include "mixz/runtime/process.h"

namespace mixz::addon {
namespace {

runtime::WatchdogOptions parseOptions(const Napi::CallbackInfo& info) {
    expectArguments(info, "new Watchdog({fd, leaseMs, label})", 1);
    if (!info[0].IsObject() || info[0].IsArray() || info[0].IsFunction()) {
        MIXZ_THROW(InvalidArgument, "new Watchdog: options must be an object {fd, leaseMs, label}, got ",
                   describe(info[0]));
    }
    const Napi::Object object = info[0].As<Napi::Object>();
    runtime::WatchdogOptions options;
    options.watchFd = static_cast<int>(integerIn(object.Get("fd"), "new Watchdog: options.fd", -1, INT32_MAX));
    options.leaseMs =
        integerIn(object.Get("leaseMs"), "new Watchdog: options.leaseMs", 0, runtime::Watchdog::kMaxLeaseMs);
    const Napi::Value label = object.Get("label");
    if (!label.IsString()) {
        MIXZ_THROW(InvalidArgument, "new Watchdog: options.label must be a string, got ", describe(label));
    }
    options.label = label.As<Napi::String>().Utf8Value();
    return options;
}

} // namespace

Napi::Function AddonWatchdog::define(Napi::Env env) {
    return DefineClass(env, "Watchdog",
                       {InstanceMethod<&AddonWatchdog::renew>("renew"), InstanceMethod<&AddonWatchdog::stop>("stop")});
}

AddonWatchdog::AddonWatchdog(const Napi::CallbackInfo& info) : Napi::ObjectWrap<AddonWatchdog>(info) {
    // Thrown here, the Napi::Error makes node-addon-api undo the wrap and throw it to the caller.
    guard(info.Env(), [&] { watchdog_ = std::make_unique<runtime::Watchdog>(parseOptions(info)); });
}

Napi::Value AddonWatchdog::renew(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&] {
        expectArguments(info, "Watchdog.renew(leaseMs)", 1);
        watchdog_->renew(integerIn(info[0], "Watchdog.renew: leaseMs", 0, runtime::Watchdog::kMaxLeaseMs));
        return info.Env().Undefined();
    });
}

Napi::Value AddonWatchdog::stop(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&] {
        expectArguments(info, "Watchdog.stop()", 0);
        watchdog_->stop();
        return info.Env().Undefined();
    });
}

Napi::Value processGroup(const Napi::CallbackInfo& info) {
    expectArguments(info, "processGroup()", 0);
    Napi::Object result = Napi::Object::New(info.Env());
    result.Set("pgid", static_cast<double>(runtime::processGroup()));
    result.Set("leader", runtime::leadsProcessGroup());
    return result;
}

} // namespace mixz::addon
