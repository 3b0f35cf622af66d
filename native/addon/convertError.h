// The one place where C++ exceptions become JS errors.
//
// Every exported function is registered through `guarded<fn>`, ObjectWrap constructors and
// methods run their bodies inside `guard`, and every future AsyncWorker stores the exception of its
// Execute() as a std::exception_ptr and passes it to convertError in OnError. So the mapping below
// is the only one, and a JS caller always sees an Error whose `code` is a stable MIXZ_ERR_* string:
//
//   mixz::Exception (IoError, InvalidArgument, InvariantError) -> its own code
//   any other std::exception (bad_alloc, gloo::Exception, ...) -> MIXZ_ERR_INTERNAL
//   anything else thrown                                       -> MIXZ_ERR_INTERNAL
//   Napi::Error (a JS exception already pending)               -> passed through unchanged
#pragma once

#include <napi.h>

#include <exception>

namespace mixz::addon {

// Builds the JS error for a captured exception. `error` must not be null.
Napi::Error convertError(Napi::Env env, std::exception_ptr error);

// Adapts a native callback so that whatever it throws reaches JS through convertError. With
// NAPI_CPP_EXCEPTIONS, node-addon-api turns the thrown Napi::Error into a JS exception.
template <Napi::Value (*Fn)(const Napi::CallbackInfo&)>
Napi::Value guarded(const Napi::CallbackInfo& info) {
    try {
        return Fn(info);
    } catch (...) {
        throw convertError(info.Env(), std::current_exception());
    }
}

// The same for bodies that cannot be registered as a plain function: the constructor and the
// instance methods of a Napi::ObjectWrap class run their work as `guard(info.Env(), [&] { ... })`.
template <typename Body>
decltype(auto) guard(Napi::Env env, Body&& body) {
    try {
        return body();
    } catch (...) {
        throw convertError(env, std::current_exception());
    }
}

} // namespace mixz::addon
