#include "mixz/cudalib/driver_api.h"

#include <string>

#include "mixz/backend/compute_backend.h"
#include "mixz/common/error.h"
#include "mixz/cudalib/cublas_api.h"
#include "mixz/cudalib/library_search.h"
#include "mixz/cudalib/nccl_api.h"

namespace mixz::cudalib {
namespace {

const char* const kSoname = "libcuda.so.1";

template <typename Function>
void bind(void* handle, const std::string& path, Function*& slot, const char* name) {
    slot = reinterpret_cast<Function*>(findSymbol(handle, name));
    if (slot == nullptr) MIXZ_THROW(IoError, path, " does not export ", name, ": not a usable CUDA driver");
}

DriverApi load() {
    const LoadedLibrary library = openLibrary(kSoname);
    if (library.handle == nullptr) {
        // The driver comes with the GPU's kernel module, never from a wheel: say so.
        throw IoError(notFoundMessage(kSoname, library, "no NVIDIA driver is installed (it comes with the GPU's kernel driver)"));
    }
    DriverApi api;
    api.path = library.path;
    void* const h = library.handle;
    bind(h, api.path, api.init, "cuInit");
    bind(h, api.path, api.driverGetVersion, "cuDriverGetVersion");
    bind(h, api.path, api.deviceGetCount, "cuDeviceGetCount");
    bind(h, api.path, api.deviceGet, "cuDeviceGet");
    bind(h, api.path, api.deviceGetName, "cuDeviceGetName");
    bind(h, api.path, api.deviceGetAttribute, "cuDeviceGetAttribute");
    bind(h, api.path, api.deviceTotalMem, "cuDeviceTotalMem_v2");
    bind(h, api.path, api.deviceGetPciBusId, "cuDeviceGetPCIBusId");
    bind(h, api.path, api.getErrorString, "cuGetErrorString");
    return api;
}

// What a rethrown load error says, without the [file:line] prefix MIXZ_THROW adds (the probe's
// text is for people; the location is in the exception where it matters).
std::string withoutLocation(const std::string& message) {
    if (!message.empty() && message[0] == '[') {
        const std::size_t end = message.find("] ");
        if (end != std::string::npos) return message.substr(end + 2);
    }
    return message;
}

std::string cudaVersionString(int code) {
    return std::to_string(code / 1000) + "." + std::to_string((code % 1000) / 10);
}

} // namespace

std::string DriverApi::describe(int result) const {
    const char* text = nullptr;
    if (getErrorString != nullptr && getErrorString(result, &text) == driver::kSuccess && text != nullptr) {
        return std::string(text) + " (" + std::to_string(result) + ")";
    }
    return "CUDA driver error " + std::to_string(result);
}

const DriverApi& driverApi() { return loadedOnce<DriverApi, load>(); }

CudaProbe probeCuda() {
    CudaProbe probe;
    probe.cudaCompiled = backend::cudaCompiled();

    try {
        const DriverApi& api = driverApi();
        probe.driver.found = true;
        probe.driver.path = api.path;
        if (api.driverGetVersion(&probe.driverVersion) == driver::kSuccess) {
            probe.driver.version = cudaVersionString(probe.driverVersion);
        }
        const int init = api.init(0);
        int count = 0;
        int status = init;
        if (init == driver::kSuccess) status = api.deviceGetCount(&count);
        if (status != driver::kSuccess) {
            probe.deviceError = (init != driver::kSuccess ? "cuInit: " : "cuDeviceGetCount: ") + api.describe(status);
        }
        for (int ordinal = 0; ordinal < count; ++ordinal) {
            CudaDeviceInfo info;
            info.ordinal = ordinal;
            int device = 0;
            if (api.deviceGet(&device, ordinal) != driver::kSuccess) continue;
            char name[256] = {};
            if (api.deviceGetName(name, sizeof(name) - 1, device) == driver::kSuccess) info.name = name;
            api.deviceGetAttribute(&info.major, driver::kAttributeComputeCapabilityMajor, device);
            api.deviceGetAttribute(&info.minor, driver::kAttributeComputeCapabilityMinor, device);
            api.deviceGetAttribute(&info.multiprocessors, driver::kAttributeMultiprocessorCount, device);
            api.deviceTotalMem(&info.totalBytes, device);
            char bus[64] = {};
            if (api.deviceGetPciBusId(bus, sizeof(bus) - 1, device) == driver::kSuccess) info.pciBusId = bus;
            probe.devices.push_back(std::move(info));
        }
    } catch (const Exception& failure) {
        probe.driver.error = withoutLocation(failure.what());
    }

    try {
        const CublasApi& api = cublasApi();
        probe.cublas.found = true;
        probe.cublas.path = api.path;
        probe.cublas.version = api.version();
    } catch (const Exception& failure) {
        probe.cublas.error = withoutLocation(failure.what());
    }

    try {
        const NcclApi& api = ncclApi();
        probe.nccl.found = true;
        probe.nccl.path = api.path;
        probe.nccl.version = api.version();
    } catch (const Exception& failure) {
        probe.nccl.error = withoutLocation(failure.what());
    }
    return probe;
}

} // namespace mixz::cudalib
