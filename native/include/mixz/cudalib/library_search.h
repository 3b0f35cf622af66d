// Finding NVIDIA's shared libraries at run time (libcuda.so.1, libcublas.so.<major>, libnccl.so.2).
// mixz links none of them: the addon must load on machines without a GPU, and the libraries a
// machine has are often those of Python's nvidia-* wheels (PyTorch's), not a system install. The
// search order is the one PyTorch's preloading and NVIDIA's cuda-pathfinder use:
//
//   1. already loaded into this process (dlopen with RTLD_NOLOAD): whatever PyTorch or an
//      earlier call loaded wins, so one process never holds two copies;
//   2. dlopen(soname): LD_LIBRARY_PATH, the executable's RUNPATH, the ldconfig cache;
//   3. Python's wheels: for each site-packages/dist-packages directory (pythonSitePackages()),
//      nvidia/cu13/lib, nvidia/cublas/lib, nvidia/nccl/lib, nvidia/cuda_runtime/lib;
//   4. $CUDA_HOME/lib64, /usr/local/cuda/lib64, /usr/local/cuda/targets/x86_64-linux/lib.
//
// No CUDA header is needed: this is plain dlopen/dlsym, compiled by g++ into every build.
#pragma once

#include <mutex>
#include <string>
#include <vector>

#include "mixz/common/error.h"

namespace mixz::cudalib {

struct LoadedLibrary {
    void* handle = nullptr;            // dlopen's handle; null when nothing was found
    std::string path;                  // the file loaded (as the dynamic linker names it)
    std::vector<std::string> searched; // every place tried, in order, with why it failed where known
};

// Searches for `soname` in the order above. Never throws: a library that is not found is a
// normal answer on a machine without a GPU. `companions` are sonames loaded first from the
// same directory when the library is found in one (libcublasLt.so.13 beside libcublas.so.13), so
// a wheel's library finds its siblings without LD_LIBRARY_PATH. Handles are never closed.
LoadedLibrary openLibrary(const std::string& soname, const std::vector<std::string>& companions = {});

// "libcublas.so.13 not found; searched: …; <hint>".
std::string notFoundMessage(const std::string& soname, const LoadedLibrary& result, const std::string& hint);

// The site-packages and dist-packages directories that exist: /usr/lib/python3*/dist-packages,
// /usr/local/lib/python3*/{dist,site}-packages, ~/.local/lib/python3*/site-packages,
// $VIRTUAL_ENV/lib/python3*/site-packages, then each entry of PYTHONPATH (first ones first).
std::vector<std::string> pythonSitePackages();

// The directories of steps 3 and 4, in order (existing or not: the error lists what was tried).
std::vector<std::string> librarySearchDirectories();

// dlsym or null; the shared definition so every table reports missing symbols the same way.
void* findSymbol(void* handle, const char* name);

// The table `load` builds, loaded once per process (thread-safe). A failure is remembered too —
// the files on disk do not change under a running rank — and rethrown as the same IoError on
// every call. One instantiation per table type (cuBLAS, NCCL, the driver).
template <typename Api, Api (*load)()>
const Api& loadedOnce() {
    static std::once_flag once;
    static Api api;
    static std::string error;
    std::call_once(once, [] {
        try {
            api = load();
        } catch (const Exception& failure) {
            error = failure.what();
        }
    });
    if (!error.empty()) throw IoError(error);
    return api;
}

} // namespace mixz::cudalib
