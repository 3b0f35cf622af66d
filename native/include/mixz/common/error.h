// The error model of the native engine.
//
// It follows Gloo's split (gloo/common/error.h, docs/errors.md) between faults a caller can handle
// and bugs it cannot:
//
//  - IoError: a transport or file operation failed. The operation may be retried, but the caller
//    must assume the communicator it used is in an unknown state and rebuild it first.
//  - InvalidArgument: input that should have been rejected by the TypeScript layer reached native
//    code. Nothing is corrupted; the caller's request is wrong.
//  - InvariantError (thrown by MIXZ_ENFORCE*): a broken invariant, i.e. a bug in mixz. The caller
//    is not expected to handle it; the rank should fail loudly.
//
// Every exception carries a stable code (MIXZ_ERR_*). The addon turns exceptions into JS errors in
// one place (native/addon/convertError.cc) and copies the code onto `error.code`, so TypeScript and
// tests match on the code, never on the prose.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace mixz {

// Stable error codes. Add, never rename: JS code and tools match on these strings.
namespace codes {
inline constexpr const char* kIo = "MIXZ_ERR_IO";
inline constexpr const char* kInvalidArgument = "MIXZ_ERR_INVALID_ARGUMENT";
inline constexpr const char* kInternal = "MIXZ_ERR_INTERNAL";
} // namespace codes

// Base of every exception mixz throws on purpose.
//
// The code is kept as a `const char*` to a string with static storage duration (one of
// mixz::codes) rather than a std::string: copying an exception must not throw, and
// std::runtime_error already stores the message in a way that copies without allocating.
class Exception : public std::runtime_error {
public:
    Exception(const char* code, const std::string& message) : std::runtime_error(message), code_(code) {}

    // The stable code, e.g. "MIXZ_ERR_IO".
    const char* code() const noexcept { return code_; }

private:
    const char* code_;
};

// A recoverable I/O or transport fault: connection refused or reset, timeout, short read.
// After catching it, rebuild the transport (communicator, pairs) before retrying.
class IoError : public Exception {
public:
    explicit IoError(const std::string& message) : Exception(codes::kIo, message) {}
};

// Bad input that reached native code. TypeScript validates first, so seeing this means a
// validation gap in the TS layer, but the native state is intact.
class InvalidArgument : public Exception {
public:
    explicit InvalidArgument(const std::string& message) : Exception(codes::kInvalidArgument, message) {}
};

// A broken invariant, i.e. a bug. Thrown by MIXZ_ENFORCE and friends, not meant to be caught
// except by the addon's conversion to a JS error.
class InvariantError : public Exception {
public:
    explicit InvariantError(const std::string& message) : Exception(codes::kInternal, message) {}
};

namespace detail {

// Joins the arguments with operator<<, so messages can mix strings and numbers:
// concat("rank ", 3, " of ", 8) == "rank 3 of 8".
template <typename... Args>
std::string concat(const Args&... args) {
    std::ostringstream out;
    ((out << args), ...);
    return out.str();
}

// "[src/common/probe.cc:42] ": where the error was raised. Paths are shortened to what follows
// the build directory's "../" so messages do not depend on where node-gyp ran the compiler.
std::string sourceLocation(const char* file, int line);

// Out of line and never inlined: the failure path of every MIXZ_ENFORCE stays out of the caller's
// hot code.
[[noreturn]] void throwEnforceFailure(const char* file, int line, const char* condition, const std::string& message);

} // namespace detail
} // namespace mixz

// Throws ExceptionType (a mixz::Exception subclass taking one message) with the message prefixed by
// [file:line], e.g. MIXZ_THROW(mixz::IoError, "connect to ", host, " timed out after ", ms, " ms").
#define MIXZ_THROW(ExceptionType, ...) \
    throw ExceptionType(::mixz::detail::sourceLocation(__FILE__, __LINE__) + ::mixz::detail::concat(__VA_ARGS__))

// Checks an invariant; on failure throws mixz::InvariantError (code MIXZ_ERR_INTERNAL) with
// "[file:line] enforce failed: <condition>: <message>". The message is only built on failure.
// Messages should carry the distributed context ("rank 3 (this process) and rank 4").
#define MIXZ_ENFORCE(condition, ...)                                                                       \
    do {                                                                                                    \
        if (!(condition)) {                                                                                 \
            ::mixz::detail::throwEnforceFailure(__FILE__, __LINE__, #condition,                             \
                                                ::mixz::detail::concat(__VA_ARGS__));                       \
        }                                                                                                   \
    } while (false)

// MIXZ_ENFORCE(a == b) that also prints both values: "enforce failed: a == b (3 vs 4): message".
// Each operand is evaluated exactly once.
#define MIXZ_ENFORCE_EQ(a, b, ...)                                                                         \
    do {                                                                                                    \
        const auto& mixzEnforceLeft_ = (a);                                                                 \
        const auto& mixzEnforceRight_ = (b);                                                                \
        if (!(mixzEnforceLeft_ == mixzEnforceRight_)) {                                                     \
            ::mixz::detail::throwEnforceFailure(                                                            \
                __FILE__, __LINE__,                                                                         \
                (::mixz::detail::concat(#a " == " #b " (", mixzEnforceLeft_, " vs ", mixzEnforceRight_, ")"))  \
                    .c_str(),                                                                               \
                ::mixz::detail::concat(__VA_ARGS__));                                                       \
        }                                                                                                   \
    } while (false)
