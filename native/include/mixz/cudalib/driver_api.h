// The CUDA driver (libcuda.so.1) loaded at run time, for what the runtime API does not say before
// a context exists (driver version, device names, PCI ids), and the probe behind `mixz doctor`
// and the addon's cudaProbe(). Nothing here needs a GPU, a driver or a CUDA header: on a machine
// without them every answer is a clean "not found" with the places searched.
//
// CUDA_VISIBLE_DEVICES applies as everywhere: the driver itself hides the devices it excludes,
// so ordinals here are the same the CUDA runtime (and the backend's deviceOrdinal) uses.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace mixz::cudalib {

namespace driver {
inline constexpr int kSuccess = 0;                           // CUDA_SUCCESS
inline constexpr int kErrorNoDevice = 100;                   // CUDA_ERROR_NO_DEVICE
inline constexpr int kAttributeMultiprocessorCount = 16;     // CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT
inline constexpr int kAttributeComputeCapabilityMajor = 75;  // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
inline constexpr int kAttributeComputeCapabilityMinor = 76;  // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR
} // namespace driver

// CUresult is an int, CUdevice an int.
struct DriverApi {
    std::string path;
    int (*init)(unsigned int flags) = nullptr;                              // cuInit
    int (*driverGetVersion)(int* version) = nullptr;                        // cuDriverGetVersion
    int (*deviceGetCount)(int* count) = nullptr;                            // cuDeviceGetCount
    int (*deviceGet)(int* device, int ordinal) = nullptr;                   // cuDeviceGet
    int (*deviceGetName)(char* name, int length, int device) = nullptr;     // cuDeviceGetName
    int (*deviceGetAttribute)(int* value, int attribute, int device) = nullptr; // cuDeviceGetAttribute
    int (*deviceTotalMem)(std::size_t* bytes, int device) = nullptr;        // cuDeviceTotalMem_v2
    int (*deviceGetPciBusId)(char* id, int length, int device) = nullptr;   // cuDeviceGetPCIBusId
    int (*getErrorString)(int result, const char** text) = nullptr;         // cuGetErrorString

    // "CUDA_ERROR_NO_DEVICE"-style text from cuGetErrorString, with the number.
    std::string describe(int result) const;
};

// Loads libcuda.so.1 once (thread-safe). Throws mixz::IoError naming the places searched when no
// driver is installed.
const DriverApi& driverApi();

struct CudaDeviceInfo {
    int ordinal = 0;
    std::string name;
    int major = 0, minor = 0; // compute capability
    std::size_t totalBytes = 0;
    int multiprocessors = 0;
    std::string pciBusId; // "0000:3b:00.0"
};

// A library the probe looked for. found false: `error` says why and lists every place searched.
struct LibraryProbe {
    bool found = false;
    std::string path;
    std::string version; // "13.0.2.14" for cuBLAS, "2.28.3" for NCCL; empty when not found
    std::string error;
};

struct CudaProbe {
    LibraryProbe driver;        // libcuda.so.1; version: the CUDA version the driver supports ("13.0")
    int driverVersion = 0;      // cuDriverGetVersion's code (13000); 0 without a driver
    std::string deviceError;    // why devices is empty when a driver is there (cuInit's error)
    std::vector<CudaDeviceInfo> devices;
    LibraryProbe cublas;
    LibraryProbe nccl;
    bool cudaCompiled = false;  // this build links the CUDA backend (backend::cudaCompiled())
};

// Asks the driver and loads cuBLAS and NCCL (each once per process). Never throws for what a
// machine lacks; quick (no context is created, no kernel runs).
CudaProbe probeCuda();

} // namespace mixz::cudalib
