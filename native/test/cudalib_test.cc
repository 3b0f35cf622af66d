// Tests of mixz/cudalib without a GPU, a driver, cuBLAS or NCCL (CI and developer machines): the
// library search order and its messages, the NCCL version encoding, and that the probe reports
// what is missing instead of throwing.
//
// Build and run from the repository root:
//   g++ -std=c++17 -O2 -Wall -Wextra -pthread -Inative/include -o /tmp/mixz-cudalib-test
//       native/test/cudalib_test.cc native/src/cudalib/library_search.cc native/src/cudalib/cublas_api.cc
//       native/src/cudalib/nccl_api.cc native/src/cudalib/driver_api.cc native/src/common/error.cc -ldl
//
// (one command line).
//   /tmp/mixz-cudalib-test
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <sys/stat.h>
#include <unistd.h>

#include "mixz/backend/compute_backend.h"
#include "mixz/common/error.h"
#include "mixz/cudalib/cublas_api.h"
#include "mixz/cudalib/driver_api.h"
#include "mixz/cudalib/library_search.h"
#include "mixz/cudalib/nccl_api.h"

// driver_api.cc reports backend::cudaCompiled(); make_backend.cc (which defines it) would pull in
// the whole CPU backend, so this program answers for it.
namespace mixz::backend {
bool cudaCompiled() { return false; }
} // namespace mixz::backend

namespace {

int failures = 0;

void check(bool condition, const std::string& what) {
    if (!condition) {
        std::fprintf(stderr, "FAIL: %s\n", what.c_str());
        ++failures;
    }
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

void testSearchOrderAndMessages() {
    using namespace mixz::cudalib;
    char pattern[] = "/tmp/mixz-cudalib-XXXXXX";
    const std::string site = ::mkdtemp(pattern);
    const std::string wheel = site + "/nvidia/cu13/lib";
    ::mkdir((site + "/nvidia").c_str(), 0700);
    ::mkdir((site + "/nvidia/cu13").c_str(), 0700);
    ::mkdir(wheel.c_str(), 0700);
    const std::string fake = wheel + "/libmixz-absent-for-test.so.1";
    std::ofstream(fake) << "not an ELF file\n";
    ::setenv("PYTHONPATH", site.c_str(), 1);
    ::setenv("CUDA_HOME", "/opt/mixz-cuda-home-for-test", 1);

    const std::vector<std::string> dirs = librarySearchDirectories();
    std::size_t wheelAt = dirs.size(), homeAt = dirs.size(), usrAt = dirs.size();
    for (std::size_t i = 0; i < dirs.size(); ++i) {
        if (dirs[i] == wheel) wheelAt = i;
        if (dirs[i] == "/opt/mixz-cuda-home-for-test/lib64") homeAt = i;
        if (dirs[i] == "/usr/local/cuda/lib64") usrAt = i;
    }
    check(wheelAt < homeAt && homeAt < usrAt && usrAt + 1 < dirs.size() && dirs[usrAt + 1] == "/usr/local/cuda/targets/x86_64-linux/lib",
          "wheel directories, then $CUDA_HOME/lib64, then /usr/local/cuda");

    const LoadedLibrary missing = openLibrary("libmixz-absent-for-test.so.1");
    check(missing.handle == nullptr, "an absent library is not found");
    check(!missing.searched.empty() && missing.searched[0] == "the libraries already loaded", "already loaded is tried first");
    const std::string message = notFoundMessage("libmixz-absent-for-test.so.1", missing, "the hint");
    check(message.rfind("libmixz-absent-for-test.so.1 not found; searched: the libraries already loaded, dlopen(libmixz-absent-for-test.so.1)", 0) == 0,
          "message starts with the soname and the first places: " + message);
    check(contains(message, fake + ": "), "a file that exists but does not load is quoted with dlopen's reason: " + message);
    check(contains(message, "/opt/mixz-cuda-home-for-test/lib64/libmixz-absent-for-test.so.1"), "CUDA_HOME is searched: " + message);
    check(message.size() > 10 && message.substr(message.size() - 10) == "; the hint", "the hint ends the message");

    // Something certainly loaded: libc, found by step 1 with the path the dynamic linker knows.
    const LoadedLibrary libc = openLibrary("libc.so.6");
    check(libc.handle != nullptr && libc.searched.empty() && contains(libc.path, "libc.so.6"), "an already loaded library is found first: " + libc.path);

    ::unlink(fake.c_str());
    ::rmdir(wheel.c_str());
    ::rmdir((site + "/nvidia/cu13").c_str());
    ::rmdir((site + "/nvidia").c_str());
    ::rmdir(site.c_str());
    ::unsetenv("PYTHONPATH");
    ::unsetenv("CUDA_HOME");
}

void testNcclVersions() {
    using namespace mixz::cudalib::nccl;
    check(versionCode(2, 28, 3) == 22803, "2.28.3 is 22803");
    check(versionCode(2, 8, 4) == 2804, "2.8.4 uses the old encoding");
    check(versionString(22803) == "2.28.3", "22803 reads 2.28.3");
    check(versionString(2804) == "2.8.4", "2804 reads 2.8.4");
    check(versionString(0) == "unknown", "0 is unknown");
    mixz::cudalib::NcclConfig config;
    check(config.size == sizeof(config) && config.magic == 0xcafebeefU && config.version == 21800 && config.blocking == kConfigUndefInt,
          "the config initializer matches NCCL_CONFIG_INITIALIZER for 2.18");
}

void testProbeWithoutLibraries() {
    const mixz::cudalib::CudaProbe probe = mixz::cudalib::probeCuda(); // must not throw, whatever is installed
    check(!probe.cudaCompiled, "the stub says not compiled");
    if (!probe.driver.found) {
        check(probe.devices.empty() && probe.driverVersion == 0, "no driver: no devices");
        check(contains(probe.driver.error, "libcuda.so.1 not found; searched: "), probe.driver.error);
        check(probe.driver.error[0] != '[', "no [file:line] in the probe's messages");
    }
    if (!probe.cublas.found) {
        check(contains(probe.cublas.error, "libcublas.so.13 not found; searched: ") && contains(probe.cublas.error, "pip install nvidia-cublas"),
              probe.cublas.error);
        // The table rethrows the remembered failure as the same IoError.
        try {
            (void)mixz::cudalib::cublasApi();
            check(false, "cublasApi() throws when cuBLAS is missing");
        } catch (const mixz::IoError& error) {
            check(std::strcmp(error.code(), mixz::codes::kIo) == 0 && contains(error.what(), "libcublas.so.13 not found"), error.what());
        }
    }
    if (!probe.nccl.found) check(contains(probe.nccl.error, "libnccl.so.2 not found; searched: "), probe.nccl.error);
}

} // namespace

int main() {
    testSearchOrderAndMessages();
    testNcclVersions();
    testProbeWithoutLibraries();
    if (failures > 0) {
        std::fprintf(stderr, "cudalib_test: %d failure(s)\n", failures);
        return 1;
    }
    std::printf("cudalib_test: ok\n");
    return 0;
}
