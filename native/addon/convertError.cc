#include "convertError.h"

#include <string>

#include "mixz/common/error.h"

namespace mixz::addon {
namespace {

Napi::Error withCode(Napi::Env env, const std::string& message, const char* code) {
    Napi::Error error = Napi::Error::New(env, message);
    error.Set("code", Napi::String::New(env, code));
    return error;
}

} // namespace

Napi::Error convertError(Napi::Env env, std::exception_ptr error) {
    try {
        std::rethrow_exception(error);
    } catch (const Napi::Error& jsError) {
        // Already a JS value (a failed N-API call or a JS callback that threw): keep it intact.
        return jsError;
    } catch (const Exception& mixzError) {
        return withCode(env, mixzError.what(), mixzError.code());
    } catch (const std::exception& otherError) {
        // Not ours (the standard library, Gloo, OpenBLAS wrappers): by definition unexpected.
        return withCode(env, std::string("internal error: ") + otherError.what(), codes::kInternal);
    } catch (...) {
        return withCode(env, "internal error: a non-standard C++ exception was thrown", codes::kInternal);
    }
}

} // namespace mixz::addon
