// The one place a backend is chosen: the CPU backend always; the CUDA backend when this build
// compiled it (MIXZ_WITH_CUDA: scripts/build-native.mjs found nvcc).
#include "mixz/backend/compute_backend.h"

#include "mixz/backend/cpu_backend.h"
#include "mixz/common/error.h"
#if defined(MIXZ_WITH_CUDA)
#include "mixz/backend/cuda_backend.h"
#endif

namespace mixz::backend {

std::unique_ptr<ComputeBackend> makeBackend(const BackendOptions& options) {
    switch (options.device) {
        case Device::kCpu:
            return makeCpuBackend(options.kernelThreads);
        case Device::kCpuStaged:
            return makeCpuBackend(options.kernelThreads, /*staged=*/true);
        case Device::kCuda:
#if defined(MIXZ_WITH_CUDA)
            return makeCudaBackend(CudaBackendOptions{options.deviceOrdinal, options.dtype});
#else
            MIXZ_THROW(InvalidArgument,
                       "this build of mixz has no CUDA backend: nvcc was not found when the native addon was built; install the CUDA "
                       "toolkit (nvcc) and run `node scripts/build-native.mjs`");
#endif
    }
    MIXZ_THROW(InvalidArgument, "unknown compute device ", static_cast<int>(options.device));
}

bool cudaCompiled() {
#if defined(MIXZ_WITH_CUDA)
    return true;
#else
    return false;
#endif
}

} // namespace mixz::backend
