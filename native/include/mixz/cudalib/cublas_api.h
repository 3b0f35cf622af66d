// cuBLAS loaded at run time (dlopen), with our own declarations of the few C functions mixz calls.
// No cuBLAS header or library is needed to build mixz; libcublas.so.<CUDA major> is found at run
// time (library_search.h: already loaded, LD_LIBRARY_PATH / soname, Python's nvidia-* wheels under
// site-packages, CUDA_HOME and /usr/local/cuda). cuBLAS's C ABI is stable within a CUDA major
// version, and the soname carries the major, so a mismatched library is never loaded.
//
// Handles and streams are opaque pointers here (cublasHandle_t, cudaStream_t), so this header
// compiles with g++ without CUDA headers; CUDA code passes its cudaStream_t as void*.
#pragma once

#include <cstddef>
#include <string>

namespace mixz::cudalib {

// cuBLAS's enum values (cublas_api.h, library_types.h of CUDA 12/13).
namespace cublas {
inline constexpr int kStatusSuccess = 0;
inline constexpr int kOpN = 0;
inline constexpr int kOpT = 1;
inline constexpr int kR32F = 0;  // CUDA_R_32F
inline constexpr int kR16F = 2;  // CUDA_R_16F
inline constexpr int kR16BF = 14; // CUDA_R_16BF
inline constexpr int kCompute32F = 68;          // CUBLAS_COMPUTE_32F
inline constexpr int kCompute32FFast16F = 74;   // fp32 in memory, fp16 tensor-core products, fp32 accumulation
inline constexpr int kCompute32FFast16BF = 75;  // the same with bf16 products
inline constexpr int kCompute32FFastTF32 = 77;
inline constexpr int kGemmDefault = -1;         // CUBLAS_GEMM_DEFAULT
inline constexpr int kDefaultMath = 0;          // CUBLAS_DEFAULT_MATH
inline constexpr int kPedanticMath = 2;         // CUBLAS_PEDANTIC_MATH (no TF32 or reduced-precision shortcuts)
inline constexpr int kPropertyMajor = 0, kPropertyMinor = 1, kPropertyPatch = 2;
} // namespace cublas

struct CublasApi {
    std::string path; // the library loaded

    int (*create)(void** handle) = nullptr;                                  // cublasCreate_v2
    int (*destroy)(void* handle) = nullptr;                                  // cublasDestroy_v2
    int (*setStream)(void* handle, void* stream) = nullptr;                  // cublasSetStream_v2
    int (*setWorkspace)(void* handle, void* workspace, std::size_t bytes) = nullptr; // cublasSetWorkspace_v2
    int (*setMathMode)(void* handle, int mode) = nullptr;                    // cublasSetMathMode
    int (*getProperty)(int type, int* value) = nullptr;                      // cublasGetProperty
    const char* (*statusString)(int status) = nullptr;                       // cublasGetStatusString
    // cublasGemmEx: C = alpha·op(A)·op(B) + beta·C, column-major, alpha/beta in the compute type's
    // scalar type (float for every compute type mixz uses).
    int (*gemmEx)(void* handle, int transa, int transb, int m, int n, int k, const void* alpha, const void* A, int aType, int lda,
                  const void* B, int bType, int ldb, const void* beta, void* C, int cType, int ldc, int computeType, int algo) = nullptr;
    // cublasGemmStridedBatchedEx.
    int (*gemmStridedBatchedEx)(void* handle, int transa, int transb, int m, int n, int k, const void* alpha, const void* A, int aType,
                                int lda, long long strideA, const void* B, int bType, int ldb, long long strideB, const void* beta, void* C,
                                int cType, int ldc, long long strideC, int batchCount, int computeType, int algo) = nullptr;

    // "12.4.5"-style version from getProperty.
    std::string version() const;
};

// Loads cuBLAS once (thread-safe) and returns its table. Throws mixz::IoError, naming every place
// searched, when no libcublas.so.<major> with these symbols is found.
const CublasApi& cublasApi();

} // namespace mixz::cudalib
