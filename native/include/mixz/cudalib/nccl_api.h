// NCCL loaded at run time (dlopen of libnccl.so.2, found as library_search.h describes), with our
// own declarations of the C functions mixz may call. NCCL's C ABI is stable across 2.x; functions
// added later (ncclCommInitRankConfig in 2.14, ncclCommSplit in 2.18) are optional here, gated on
// ncclGetVersion and on dlsym finding them, so an older library still loads.
//
// Communicators and streams are opaque pointers (ncclComm_t, cudaStream_t): this header compiles
// with g++ without NCCL or CUDA headers. Enumerations are passed as int, as the C ABI does.
#pragma once

#include <climits>
#include <cstddef>
#include <string>

namespace mixz::cudalib {

namespace nccl {
// ncclResult_t
inline constexpr int kSuccess = 0;
inline constexpr int kUnhandledCudaError = 1;
inline constexpr int kSystemError = 2;
inline constexpr int kInternalError = 3;
inline constexpr int kInvalidArgument = 4;
inline constexpr int kInvalidUsage = 5;
inline constexpr int kRemoteError = 6;
inline constexpr int kInProgress = 7;
// ncclDataType_t
inline constexpr int kInt8 = 0, kUint8 = 1, kInt32 = 2, kUint32 = 3, kInt64 = 4, kUint64 = 5;
inline constexpr int kFloat16 = 6, kFloat32 = 7, kFloat64 = 8, kBfloat16 = 9;
// ncclRedOp_t
inline constexpr int kSum = 0, kProd = 1, kMax = 2, kMin = 3, kAvg = 4;
inline constexpr int kSplitNoColor = -1; // NCCL_SPLIT_NOCOLOR: this rank joins no new communicator
inline constexpr int kUniqueIdBytes = 128;
inline constexpr int kConfigUndefInt = INT_MIN;   // NCCL_CONFIG_UNDEF_INT: "NCCL chooses"
inline constexpr unsigned kApiMagic = 0xcafebeefU; // NCCL_API_MAGIC, checked in every config

// NCCL_VERSION(X, Y, Z): the code ncclGetVersion returns (the encoding changed after 2.8).
constexpr int versionCode(int major, int minor, int patch) {
    return (major <= 2 && minor <= 8) ? major * 1000 + minor * 100 + patch : major * 10000 + minor * 100 + patch;
}
// "2.28.3" from a version code.
std::string versionString(int code);
} // namespace nccl

// ncclUniqueId: passed by value to ncclCommInitRank, so it must have NCCL's exact size.
struct NcclUniqueId {
    char internal[nccl::kUniqueIdBytes];
};
static_assert(sizeof(NcclUniqueId) == 128, "ncclUniqueId is 128 bytes");

// The leading fields of ncclConfig_t as NCCL 2.18 defined them. NCCL reads `size` and `version`
// and ignores fields a caller's version did not have, so declaring only these (and saying 2.18)
// is valid for every later library; each field left at kConfigUndefInt (or null) is NCCL's default.
struct NcclConfig {
    std::size_t size = sizeof(NcclConfig);
    unsigned int magic = nccl::kApiMagic;
    unsigned int version = static_cast<unsigned int>(nccl::versionCode(2, 18, 0));
    int blocking = nccl::kConfigUndefInt;
    int cgaClusterSize = nccl::kConfigUndefInt;
    int minCTAs = nccl::kConfigUndefInt;
    int maxCTAs = nccl::kConfigUndefInt;
    const char* netName = nullptr;
    int splitShare = nccl::kConfigUndefInt;
};

// NCCL reads these fields at these offsets (LP64: size_t and pointers of 8 bytes).
static_assert(offsetof(NcclConfig, magic) == 8 && offsetof(NcclConfig, version) == 12 && offsetof(NcclConfig, blocking) == 16 &&
                  offsetof(NcclConfig, maxCTAs) == 28 && offsetof(NcclConfig, netName) == 32 && offsetof(NcclConfig, splitShare) == 40,
              "NcclConfig must lay out as ncclConfig_t's leading fields");

struct NcclApi {
    std::string path;    // the library loaded
    int versionCode = 0; // ncclGetVersion's answer

    int (*getVersion)(int* version) = nullptr;
    int (*getUniqueId)(NcclUniqueId* id) = nullptr;
    int (*commInitRank)(void** comm, int nranks, NcclUniqueId id, int rank) = nullptr;
    // Optional (2.14+): null when the library lacks it.
    int (*commInitRankConfig)(void** comm, int nranks, NcclUniqueId id, int rank, NcclConfig* config) = nullptr;
    // Optional (2.18+): null when the library is older or lacks it.
    int (*commSplit)(void* comm, int color, int key, void** newcomm, NcclConfig* config) = nullptr;
    int (*allGather)(const void* send, void* recv, std::size_t sendcount, int dtype, void* comm, void* stream) = nullptr;
    int (*reduceScatter)(const void* send, void* recv, std::size_t recvcount, int dtype, int op, void* comm, void* stream) = nullptr;
    int (*allReduce)(const void* send, void* recv, std::size_t count, int dtype, int op, void* comm, void* stream) = nullptr;
    int (*broadcast)(const void* send, void* recv, std::size_t count, int dtype, int root, void* comm, void* stream) = nullptr;
    int (*send)(const void* send, std::size_t count, int dtype, int peer, void* comm, void* stream) = nullptr;
    int (*recv)(void* recv, std::size_t count, int dtype, int peer, void* comm, void* stream) = nullptr;
    int (*groupStart)() = nullptr;
    int (*groupEnd)() = nullptr;
    int (*commGetAsyncError)(void* comm, int* asyncError) = nullptr;
    int (*commAbort)(void* comm) = nullptr;
    int (*commDestroy)(void* comm) = nullptr;
    const char* (*errorString)(int result) = nullptr;

    std::string version() const { return nccl::versionString(versionCode); }
    // ncclGetErrorString's text, or the number when the library gave none.
    std::string describe(int result) const;
};

// Loads NCCL once (thread-safe) and returns its table. Throws mixz::IoError naming every place
// searched when libnccl.so.2 is not found, or naming the symbol and the file when one is missing.
const NcclApi& ncclApi();

} // namespace mixz::cudalib
