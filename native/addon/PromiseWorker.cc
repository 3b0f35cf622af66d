#include "PromiseWorker.h"

#include <exception>
#include <utility>

#include "convertError.h"

namespace mixz::addon {
namespace {

class PromiseWorker : public Napi::AsyncWorker {
public:
    PromiseWorker(Napi::Env env, const char* name, std::function<void()> work, KeepAlive keep,
                  std::function<Napi::Value(Napi::Env)> result, std::function<void()> settled)
        : Napi::AsyncWorker(env, name),
          deferred_(Napi::Promise::Deferred::New(env)),
          work_(std::move(work)),
          keep_(std::move(keep)),
          result_(std::move(result)),
          settled_(std::move(settled)) {}

    Napi::Promise promise() const { return deferred_.Promise(); }

protected:
    void Execute() override {
        try {
            work_();
        } catch (...) {
            error_ = std::current_exception();
            SetError("failed"); // routes completion to OnError, which reports error_
        }
    }

    void OnOK() override {
        Napi::Env env = Env();
        if (settled_) settled_();
        try {
            deferred_.Resolve(result_ ? result_(env) : env.Undefined());
        } catch (...) {
            deferred_.Reject(convertError(env, std::current_exception()).Value());
        }
    }

    void OnError(const Napi::Error& /*unused: error_ holds the real exception*/) override {
        if (settled_) settled_();
        deferred_.Reject(convertError(Env(), error_).Value());
    }

private:
    Napi::Promise::Deferred deferred_;
    std::function<void()> work_;
    KeepAlive keep_;
    std::function<Napi::Value(Napi::Env)> result_;
    std::function<void()> settled_;
    std::exception_ptr error_;
};

} // namespace

Napi::Promise queuePromise(Napi::Env env, const char* name, std::function<void()> work, KeepAlive keep,
                           std::function<Napi::Value(Napi::Env)> result, std::function<void()> settled) {
    auto* worker = new PromiseWorker(env, name, std::move(work), std::move(keep), std::move(result), std::move(settled));
    const Napi::Promise promise = worker->promise();
    worker->Queue(); // deleted by node-addon-api after OnOK/OnError
    return promise;
}

} // namespace mixz::addon
