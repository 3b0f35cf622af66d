#include "mixz/common/error.h"

#include <cstring>

namespace mixz {
namespace detail {

std::string sourceLocation(const char* file, int line) {
    // node-gyp compiles from native/build, so __FILE__ reads "../src/common/probe.cc".
    while (std::strncmp(file, "../", 3) == 0) file += 3;
    return concat("[", file, ":", line, "] ");
}

void throwEnforceFailure(const char* file, int line, const char* condition, const std::string& message) {
    std::string text = sourceLocation(file, line) + "enforce failed: " + condition;
    if (!message.empty()) text += ": " + message;
    throw InvariantError(text);
}

} // namespace detail
} // namespace mixz
