#include "mixz/cudalib/nccl_api.h"

#include <string>

#include "mixz/common/error.h"
#include "mixz/cudalib/library_search.h"

namespace mixz::cudalib {
namespace {

const char* const kSoname = "libnccl.so.2";

template <typename Function>
void bind(void* handle, const std::string& path, Function*& slot, const char* name) {
    slot = reinterpret_cast<Function*>(findSymbol(handle, name));
    if (slot == nullptr) MIXZ_THROW(IoError, path, " does not export ", name, ": not a usable NCCL 2 library");
}

template <typename Function>
void bindOptional(void* handle, Function*& slot, const char* name) {
    slot = reinterpret_cast<Function*>(findSymbol(handle, name));
}

NcclApi load() {
    const LoadedLibrary library = openLibrary(kSoname);
    if (library.handle == nullptr) {
        // No [file:line] prefix: this message is for the user (mixz doctor prints it).
        throw IoError(notFoundMessage(kSoname, library,
                                            "install the nvidia-nccl wheel (pip install nvidia-nccl-cu13) or NCCL "
                                            "itself, or put it on LD_LIBRARY_PATH"));
    }
    NcclApi api;
    api.path = library.path;
    void* const h = library.handle;
    bind(h, api.path, api.getVersion, "ncclGetVersion");
    const int status = api.getVersion(&api.versionCode);
    if (status != nccl::kSuccess) MIXZ_THROW(IoError, api.path, ": ncclGetVersion failed (", status, ")");
    bind(h, api.path, api.getUniqueId, "ncclGetUniqueId");
    bind(h, api.path, api.commInitRank, "ncclCommInitRank");
    bindOptional(h, api.commInitRankConfig, "ncclCommInitRankConfig");
    // ncclCommSplit's symbol is only trusted from 2.18 on, where its signature is the one above.
    if (api.versionCode >= nccl::versionCode(2, 18, 0)) bindOptional(h, api.commSplit, "ncclCommSplit");
    bind(h, api.path, api.allGather, "ncclAllGather");
    bind(h, api.path, api.reduceScatter, "ncclReduceScatter");
    bind(h, api.path, api.allReduce, "ncclAllReduce");
    bind(h, api.path, api.broadcast, "ncclBroadcast");
    bind(h, api.path, api.send, "ncclSend");
    bind(h, api.path, api.recv, "ncclRecv");
    bind(h, api.path, api.groupStart, "ncclGroupStart");
    bind(h, api.path, api.groupEnd, "ncclGroupEnd");
    bind(h, api.path, api.commGetAsyncError, "ncclCommGetAsyncError");
    bind(h, api.path, api.commAbort, "ncclCommAbort");
    bind(h, api.path, api.commDestroy, "ncclCommDestroy");
    bind(h, api.path, api.errorString, "ncclGetErrorString");
    return api;
}

} // namespace

namespace nccl {
std::string versionString(int code) {
    if (code <= 0) return "unknown";
    // Codes below 10000 are the pre-2.9 encoding (X*1000 + Y*100 + Z).
    const int major = code >= 10000 ? code / 10000 : code / 1000;
    const int minor = code >= 10000 ? (code % 10000) / 100 : (code % 1000) / 100;
    const int patch = code % 100;
    return std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(patch);
}
} // namespace nccl

std::string NcclApi::describe(int result) const {
    const char* text = errorString != nullptr ? errorString(result) : nullptr;
    return text != nullptr ? std::string(text) + " (" + std::to_string(result) + ")" : "NCCL error " + std::to_string(result);
}

const NcclApi& ncclApi() { return loadedOnce<NcclApi, load>(); }

} // namespace mixz::cudalib
