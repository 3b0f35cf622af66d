#include "mixz/cudalib/cublas_api.h"

#include <string>

#include "mixz/common/error.h"
#include "mixz/cudalib/library_search.h"

// The CUDA major version mixz's CUDA code is built for: cuBLAS's soname carries it, and a
// library of another major has another ABI. The build compiles with CUDA 13.
#ifndef MIXZ_CUDA_MAJOR
#define MIXZ_CUDA_MAJOR 13
#endif
#define MIXZ_STRINGIFY_(x) #x
#define MIXZ_STRINGIFY(x) MIXZ_STRINGIFY_(x)

namespace mixz::cudalib {
namespace {

const char* const kSoname = "libcublas.so." MIXZ_STRINGIFY(MIXZ_CUDA_MAJOR);
const char* const kLtSoname = "libcublasLt.so." MIXZ_STRINGIFY(MIXZ_CUDA_MAJOR);

template <typename Function>
void bind(void* handle, const std::string& path, Function*& slot, const char* name) {
    slot = reinterpret_cast<Function*>(findSymbol(handle, name));
    if (slot == nullptr) MIXZ_THROW(IoError, path, " does not export ", name, ": not a usable cuBLAS ", MIXZ_CUDA_MAJOR, " library");
}

CublasApi load() {
    const LoadedLibrary library = openLibrary(kSoname, {kLtSoname});
    if (library.handle == nullptr) {
        // No [file:line] prefix: this message is for the user (mixz doctor prints it).
        throw IoError(notFoundMessage(kSoname, library,
                                            "install the nvidia-cublas wheel (pip install nvidia-cublas) or the CUDA "
                                            "toolkit, or put it on LD_LIBRARY_PATH"));
    }
    CublasApi api;
    api.path = library.path;
    // The exported names: cuBLAS's header maps the unsuffixed names of the v2 API to *_v2.
    bind(library.handle, api.path, api.create, "cublasCreate_v2");
    bind(library.handle, api.path, api.destroy, "cublasDestroy_v2");
    bind(library.handle, api.path, api.setStream, "cublasSetStream_v2");
    bind(library.handle, api.path, api.setWorkspace, "cublasSetWorkspace_v2");
    bind(library.handle, api.path, api.setMathMode, "cublasSetMathMode");
    bind(library.handle, api.path, api.getProperty, "cublasGetProperty");
    bind(library.handle, api.path, api.statusString, "cublasGetStatusString");
    bind(library.handle, api.path, api.gemmEx, "cublasGemmEx");
    bind(library.handle, api.path, api.gemmStridedBatchedEx, "cublasGemmStridedBatchedEx");
    return api;
}

} // namespace

std::string CublasApi::version() const {
    int major = 0, minor = 0, patch = 0;
    if (getProperty == nullptr || getProperty(cublas::kPropertyMajor, &major) != cublas::kStatusSuccess ||
        getProperty(cublas::kPropertyMinor, &minor) != cublas::kStatusSuccess ||
        getProperty(cublas::kPropertyPatch, &patch) != cublas::kStatusSuccess) {
        return "unknown";
    }
    return std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(patch);
}

const CublasApi& cublasApi() { return loadedOnce<CublasApi, load>(); }

} // namespace mixz::cudalib
