#include "AddonWatchdog.h"

#include <cmath>
#include <cstdint>
#include <string>

#include "convertError.h"
#include "mixz/common/error.h"
#include "mixz/runtime/process.h"

namespace mixz::addon {
namespace {

// What a wrong value was, for messages: numbers by value, everything else by type.
std::string describe(const Napi::Value& value) {
    if (value.IsNumber()) {
        const double number = value.As<Napi::Number>().DoubleValue();
        // Whole numbers in full (2147483648, not 2.14748e+09); others as the stream prints them.
        if (std::trunc(number) == number && std::fabs(number) < 1e15) {
            return detail::concat(static_cast<long long>(number));
        }
        return detail::concat(number);
    }
    if (value.IsString()) return "a string";
    if (value.IsUndefined()) return "undefined";
    if (value.IsNull()) return "null";
    if (value.IsBoolean()) return "a boolean";
    if (value.IsBigInt()) return "a bigint";
    if (value.IsFunction()) return "a function";
    if (value.IsArray()) return "an array";
    if (value.IsObject()) return "an object";
    return "a symbol";
}

// A JS number that is an integer in [min, max]; InvalidArgument naming `what` otherwise.
std::int64_t integerIn(const Napi::Value& value, const char* what, std::int64_t min, std::int64_t max) {
    if (value.IsNumber()) {
        const double number = value.As<Napi::Number>().DoubleValue();
        if (std::isfinite(number) && std::trunc(number) == number && number >= static_cast<double>(min) &&
            number <= static_cast<double>(max)) {
            return static_cast<std::int64_t>(number);
        }
    }
    MIXZ_THROW(InvalidArgument, what, " must be an integer in [", min, ", ", max, "], got ", describe(value));
}

void expectArguments(const Napi::CallbackInfo& info, const char* signature, std::size_t count) {
    if (info.Length() != count) {
        MIXZ_THROW(InvalidArgument, signature, " takes ", count, count == 1 ? " argument" : " arguments", ", got ",
                   info.Length());
    }
}

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
