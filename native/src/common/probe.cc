#include "mixz/common/probe.h"

#include <dlfcn.h>

#include <array>
#include <climits>
#include <cstdlib>
#include <exception>
#include <memory>

// Debian's cblas-openblas.h is always OpenBLAS's header, whichever BLAS the cblas.h alternative
// currently points to; fall back to cblas.h where the distribution has no such name.
#if __has_include(<cblas-openblas.h>)
#include <cblas-openblas.h>
#else
#include <cblas.h>
#endif

#include <gloo/config.h>
#include <gloo/transport/device.h>
#include <gloo/transport/tcp/attr.h>
#include <gloo/transport/tcp/device.h>

#include "mixz/common/error.h"
#include "mixz/common/version.h"

// OpenBLAS's own introspection functions. Declared here as well because a plain cblas.h from
// another BLAS does not declare them; the declarations match OpenBLAS's exactly, so repeating them
// is harmless when cblas-openblas.h already did.
extern "C" {
char* openblas_get_config(void);
char* openblas_get_corename(void);
int openblas_get_num_threads(void);
int openblas_get_parallel(void);
}

namespace mixz {
namespace {

std::string compilerId() {
#if defined(__clang__)
    return std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
    return std::string("gcc ") + __VERSION__;
#else
    return "unknown";
#endif
}

std::vector<std::string> sanitizers() {
    std::vector<std::string> out;
#if defined(__SANITIZE_ADDRESS__)
    out.emplace_back("address");
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
    out.emplace_back("address");
#endif
#endif
    // GCC has no predefined macro for UBSan; binding.gyp defines this one with -fsanitize=undefined.
#if defined(MIXZ_SANITIZE_UNDEFINED)
    out.emplace_back("undefined");
#endif
    return out;
}

GlooProbe probeGloo() {
    GlooProbe gloo;
    gloo.version = detail::concat(GLOO_VERSION_MAJOR, ".", GLOO_VERSION_MINOR, ".", GLOO_VERSION_PATCH);
#if GLOO_HAVE_TRANSPORT_TCP
    gloo.transports.emplace_back("tcp");
#endif
#if GLOO_HAVE_TRANSPORT_TCP_TLS
    gloo.transports.emplace_back("tcp_tls");
#endif
#if GLOO_HAVE_TRANSPORT_IBVERBS
    gloo.transports.emplace_back("ibverbs");
#endif
#if GLOO_HAVE_TRANSPORT_UV
    gloo.transports.emplace_back("uv");
#endif

    // Creating a device resolves the address and starts the device's event loop thread: it proves
    // that libgloo is linked, loads, and can use the network stack. Loopback keeps it independent
    // of the machine's interfaces.
    try {
        gloo::transport::tcp::attr attr;
        attr.hostname = "127.0.0.1";
        const std::shared_ptr<gloo::transport::Device> device = gloo::transport::tcp::CreateDevice(attr);
        gloo.tcpDevice = device->str();
    } catch (const std::exception& error) {
        // Reported, not thrown: the probe exists to diagnose exactly this.
        gloo.tcpDeviceError = error.what();
    }
    return gloo;
}

// 2x3 times 3x2, row-major, with integer values so the product is exact in fp32:
// [1 2 3; 4 5 6] * [7 8; 9 10; 11 12] = [58 64; 139 154].
bool sgemmWorks() {
    const std::array<float, 6> a = {1, 2, 3, 4, 5, 6};
    const std::array<float, 6> b = {7, 8, 9, 10, 11, 12};
    const std::array<float, 4> expected = {58, 64, 139, 154};
    std::array<float, 4> c = {0, 0, 0, 0};
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, 2, 2, 3, 1.0f, a.data(), 3, b.data(), 2, 0.0f, c.data(),
                2);
    return c == expected;
}

// The shared object that defines cblas_sgemm in this process. Which one that is depends on the
// dynamic linker (LD_LIBRARY_PATH, LD_PRELOAD, alternatives), not on what we linked against.
std::string blasLibraryPath() {
    Dl_info info{};
    if (dladdr(reinterpret_cast<void*>(&cblas_sgemm), &info) == 0 || info.dli_fname == nullptr) return "";
    // Resolve symlinks (libopenblas.so.0 -> openblas-pthread/libopenblas.so.0) so the answer names
    // the actual variant.
    std::unique_ptr<char, decltype(&std::free)> resolved(realpath(info.dli_fname, nullptr), &std::free);
    return resolved ? std::string(resolved.get()) : std::string(info.dli_fname);
}

std::string parallelism(int mode) {
    // Values documented in OpenBLAS's cblas.h (OPENBLAS_SEQUENTIAL, _THREAD, _OPENMP).
    switch (mode) {
        case 0:
            return "sequential";
        case 1:
            return "pthreads";
        case 2:
            return "openmp";
        default:
            return "unknown";
    }
}

BlasProbe probeBlas() {
    BlasProbe blas;
    const char* config = openblas_get_config();
    const char* corename = openblas_get_corename();
    blas.config = config != nullptr ? config : "";
    blas.corename = corename != nullptr ? corename : "";
    blas.name = blas.config.substr(0, blas.config.find(' '));
    blas.threads = openblas_get_num_threads();
    blas.parallel = parallelism(openblas_get_parallel());
    blas.library = blasLibraryPath();
    blas.sgemmOk = sgemmWorks();
    return blas;
}

CpuProbe probeCpu() {
    CpuProbe cpu;
#if defined(__x86_64__) || defined(__i386__)
    // Needed only before static constructors run, but cheap and harmless anywhere.
    __builtin_cpu_init();
    cpu.avx2 = __builtin_cpu_supports("avx2") != 0;
    cpu.fma = __builtin_cpu_supports("fma") != 0;
#endif
    return cpu;
}

} // namespace

BuildProbe probe() {
    BuildProbe result;
    result.version = kVersion;
    result.compiler = compilerId();
#if defined(NDEBUG)
    result.buildType = "Release";
#else
    result.buildType = "Debug";
#endif
    result.sanitizers = sanitizers();
    result.gloo = probeGloo();
    result.blas = probeBlas();
    result.cpu = probeCpu();
    return result;
}

} // namespace mixz
