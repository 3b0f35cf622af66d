// JS face of mixz::runtime::Watchdog (mixz/runtime/watchdog.h) and of the process-group query.
//
//   new Watchdog({fd, leaseMs, label})   starts the thread; fd -1 watches no descriptor, leaseMs 0 arms no lease
//   watchdog.renew(leaseMs)              deadline = now + leaseMs (0 removes the lease); no-op once stopped
//   watchdog.stop()                      stops and joins the thread; idempotent
//   processGroup()                       {pgid, leader}
//
// Typed in packages/engine/src/binding/AddonTypes.ts; @mixz/engine's startWatchdog validates first.
// The watchdog thread never calls into JS. The native object owns the thread: the finalizer of a
// collected Watchdog (and Node's teardown of an environment) stops and joins it, and at process
// exit the thread touches nothing but its own heap object and descriptors.
#pragma once

#include <napi.h>

#include <memory>

#include "mixz/runtime/watchdog.h"

namespace mixz::addon {

class AddonWatchdog : public Napi::ObjectWrap<AddonWatchdog> {
public:
    // The class, for exports.Watchdog.
    static Napi::Function define(Napi::Env env);

    explicit AddonWatchdog(const Napi::CallbackInfo& info);

private:
    Napi::Value renew(const Napi::CallbackInfo& info);
    Napi::Value stop(const Napi::CallbackInfo& info);

    std::unique_ptr<runtime::Watchdog> watchdog_;
};

// processGroup(): {pgid: number, leader: boolean}. Register through guarded<>.
Napi::Value processGroup(const Napi::CallbackInfo& info);

} // namespace mixz::addon
