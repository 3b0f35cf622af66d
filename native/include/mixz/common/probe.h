// What this build of the native engine is made of, and whether its dependencies work.
//
// `mixz doctor`, the engine's load check and bug reports all start here: the probe answers "which
// compiler, which build type, which Gloo, which BLAS library actually got loaded, which CPU
// features" by asking the loaded libraries, not by trusting the build configuration. Debian's
// alternatives system can swap libblas.so.3 under a binary, so the BLAS library is located from
// the address of cblas_sgemm at run time.
//
// Core code: knows nothing of Node. The addon (native/addon/addon.cc) turns it into a JS object.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace mixz {

struct GlooProbe {
    // "0.5.0", from gloo/config.h at compile time.
    std::string version;
    // Transports compiled into libgloo ("tcp", "tcp_tls", "ibverbs", "uv").
    std::vector<std::string> transports;
    // device->str() of a TCP device created on 127.0.0.1; empty when creating it failed.
    std::optional<std::string> tcpDevice;
    // Why creating the TCP device failed; empty when it succeeded.
    std::optional<std::string> tcpDeviceError;
};

struct BlasProbe {
    // First word of openblas_get_config(), i.e. "OpenBLAS".
    std::string name;
    // openblas_get_config(): version and build options ("OpenBLAS 0.3.21 DYNAMIC_ARCH ...").
    std::string config;
    // openblas_get_corename(): the kernel set chosen for this CPU ("Haswell").
    std::string corename;
    // openblas_get_num_threads().
    int threads = 0;
    // openblas_get_parallel() as a word: "sequential", "pthreads", "openmp" or "unknown".
    std::string parallel;
    // Canonical path of the shared library that defines cblas_sgemm in this process; empty if
    // dladdr cannot tell.
    std::string library;
    // Whether a 2x3 by 3x2 cblas_sgemm gave the exact known product.
    bool sgemmOk = false;
};

struct CpuProbe {
    // Run-time CPU features (__builtin_cpu_supports). Binaries are built for baseline x86-64 and
    // dispatch to AVX2/FMA kernels only when these are true.
    bool avx2 = false;
    bool fma = false;
};

struct BuildProbe {
    // mixz::kVersion.
    std::string version;
    // Compiler and version ("gcc 12.2.0").
    std::string compiler;
    // "Release" (NDEBUG defined) or "Debug".
    std::string buildType;
    // Sanitizers compiled in ("address", "undefined"); empty when none.
    std::vector<std::string> sanitizers;
    GlooProbe gloo;
    BlasProbe blas;
    CpuProbe cpu;
};

// Probes the build and its libraries. Creates (and destroys) one Gloo TCP device on 127.0.0.1 and
// runs one tiny sgemm, so it takes milliseconds, not microseconds. Never throws for a failing
// dependency: failures are reported in the result, because the probe is how they get diagnosed.
BuildProbe probe();

} // namespace mixz
