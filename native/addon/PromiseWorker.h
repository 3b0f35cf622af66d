// Promise-returning work on libuv's pool, shared by the addon's classes: the work runs off the JS
// thread (DESIGN.md §2: native work never blocks the event loop), its exception reaches JS through
// convertError, and the JS values it reads (typed arrays) stay referenced until it settles.
#pragma once

#include <napi.h>

#include <functional>
#include <vector>

namespace mixz::addon {

// Keeps JS objects (typed arrays and what holds them) alive while work runs on the pool.
class KeepAlive {
public:
    void add(const Napi::Value& value) { references_.push_back(Napi::Persistent(value.As<Napi::Object>())); }

private:
    std::vector<Napi::ObjectReference> references_;
};

// Runs `work` on the pool and returns a promise: resolved with result(env) (undefined without
// one) on the JS thread, or rejected with the converted exception of work or result. `settled`,
// when given, runs on the JS thread after either outcome (to clear a busy flag).
Napi::Promise queuePromise(Napi::Env env, const char* name, std::function<void()> work, KeepAlive keep = {},
                           std::function<Napi::Value(Napi::Env)> result = {}, std::function<void()> settled = {});

} // namespace mixz::addon
