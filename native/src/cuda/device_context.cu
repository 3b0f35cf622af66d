// throwCudaError / throwCublasError (device_context.h): the one place CUDA and cuBLAS statuses
// become mixz exceptions. The split follows error.h: what a machine or a run can cause (out of
// memory, a kernel that faulted, a lost device, a library that failed) is an IoError, which stops
// the rank with a message the launcher shows; a call mixz made wrongly (an invalid value or handle)
// is an InvariantError, a bug to fix.
#include "cuda/device_context.h"

#include <string>

namespace mixz::cuda {
namespace {

bool isMisuse(cudaError_t status) {
    switch (status) {
        case cudaErrorInvalidValue:
        case cudaErrorInvalidDevicePointer:
        case cudaErrorInvalidResourceHandle:
        case cudaErrorInvalidConfiguration:
        case cudaErrorInvalidMemcpyDirection:
        case cudaErrorInvalidDeviceFunction:
        case cudaErrorInvalidPitchValue:
        case cudaErrorInvalidSymbol:
        case cudaErrorInvalidDevice:
            return true;
        default:
            return false;
    }
}

// cuBLAS statuses that mean mixz passed something wrong (CUBLAS_STATUS_INVALID_VALUE,
// CUBLAS_STATUS_NOT_SUPPORTED); the rest (not initialized, alloc failed, arch mismatch, execution
// failed, internal error) are the machine's.
bool isCublasMisuse(int status) { return status == 7 || status == 15; }

} // namespace

void throwCudaError(cudaError_t status, const char* what, const char* file, int line) {
    // Clears the error the runtime recorded for cudaGetLastError (a sticky error stays anyway).
    (void)cudaGetLastError();
    int device = -1;
    (void)cudaGetDevice(&device);
    const std::string message = detail::sourceLocation(file, line) + "cuda:" + std::to_string(device) + ": " + what + " failed: " +
                                cudaGetErrorName(status) + " (" + cudaGetErrorString(status) + ")";
    if (isMisuse(status)) throw InvariantError(message);
    throw IoError(message);
}

void throwCublasError(const cudalib::CublasApi& api, int status, const char* what, const char* file, int line) {
    const char* text = api.statusString != nullptr ? api.statusString(status) : nullptr;
    const std::string message = detail::sourceLocation(file, line) + what + " failed: " +
                                (text != nullptr ? std::string(text) : std::string("cuBLAS status")) + " (" + std::to_string(status) + ")";
    if (isCublasMisuse(status)) throw InvariantError(message);
    throw IoError(message);
}

} // namespace mixz::cuda
