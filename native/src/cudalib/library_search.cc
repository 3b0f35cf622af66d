#include "mixz/cudalib/library_search.h"

#include <dlfcn.h>
#include <link.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdlib>
#include <dirent.h>
#include <string>
#include <vector>

namespace mixz::cudalib {
namespace {

bool isDirectory(const std::string& path) {
    struct stat info {};
    return ::stat(path.c_str(), &info) == 0 && S_ISDIR(info.st_mode);
}

bool isFile(const std::string& path) {
    struct stat info {};
    return ::stat(path.c_str(), &info) == 0 && S_ISREG(info.st_mode);
}

std::string environment(const char* name) {
    const char* value = std::getenv(name);
    return value == nullptr ? std::string() : std::string(value);
}

// Entries of `parent` whose name starts with "python3" ("python3", "python3.12"), sorted newest
// last by name so the order is stable across runs.
std::vector<std::string> pythonDirs(const std::string& parent) {
    std::vector<std::string> dirs;
    DIR* dir = ::opendir(parent.c_str());
    if (dir == nullptr) return dirs;
    while (const dirent* entry = ::readdir(dir)) {
        const std::string name = entry->d_name;
        if (name.rfind("python3", 0) == 0) dirs.push_back(parent + "/" + name);
    }
    ::closedir(dir);
    std::sort(dirs.begin(), dirs.end());
    return dirs;
}

void addIfDirectory(std::vector<std::string>& out, const std::string& path) {
    if (isDirectory(path) && std::find(out.begin(), out.end(), path) == out.end()) out.push_back(path);
}

// What the dynamic linker calls the object behind `handle` (an absolute path for anything found
// through a search).
std::string pathOf(void* handle, const std::string& fallback) {
    link_map* map = nullptr;
    if (::dlinfo(handle, RTLD_DI_LINKMAP, &map) == 0 && map != nullptr && map->l_name != nullptr && map->l_name[0] != '\0') {
        return map->l_name;
    }
    return fallback;
}

std::string lastDlError() {
    const char* error = ::dlerror();
    return error == nullptr ? std::string("unknown dlopen error") : std::string(error);
}

} // namespace

std::vector<std::string> pythonSitePackages() {
    std::vector<std::string> out;
    for (const std::string& dir : pythonDirs("/usr/lib")) addIfDirectory(out, dir + "/dist-packages");
    for (const std::string& dir : pythonDirs("/usr/local/lib")) {
        addIfDirectory(out, dir + "/dist-packages");
        addIfDirectory(out, dir + "/site-packages");
    }
    const std::string home = environment("HOME");
    if (!home.empty()) {
        for (const std::string& dir : pythonDirs(home + "/.local/lib")) addIfDirectory(out, dir + "/site-packages");
    }
    const std::string venv = environment("VIRTUAL_ENV");
    if (!venv.empty()) {
        for (const std::string& dir : pythonDirs(venv + "/lib")) addIfDirectory(out, dir + "/site-packages");
    }
    const std::string pythonPath = environment("PYTHONPATH");
    std::size_t start = 0;
    while (start <= pythonPath.size() && !pythonPath.empty()) {
        const std::size_t end = std::min(pythonPath.find(':', start), pythonPath.size());
        if (end > start) addIfDirectory(out, pythonPath.substr(start, end - start));
        start = end + 1;
    }
    return out;
}

std::vector<std::string> librarySearchDirectories() {
    // cu13 is the CUDA 13 wheels' shared directory (nvidia-cublas, nvidia-cuda-runtime for cu13);
    // the others are the per-library layout of the CUDA 12 era wheels.
    static const char* const kWheelDirs[] = {"nvidia/cu13/lib", "nvidia/cublas/lib", "nvidia/nccl/lib", "nvidia/cuda_runtime/lib"};
    std::vector<std::string> dirs;
    for (const std::string& site : pythonSitePackages()) {
        for (const char* sub : kWheelDirs) dirs.push_back(site + "/" + sub);
    }
    const std::string cudaHome = environment("CUDA_HOME");
    if (!cudaHome.empty()) dirs.push_back(cudaHome + "/lib64");
    dirs.push_back("/usr/local/cuda/lib64");
    dirs.push_back("/usr/local/cuda/targets/x86_64-linux/lib");
    return dirs;
}

LoadedLibrary openLibrary(const std::string& soname, const std::vector<std::string>& companions) {
    LoadedLibrary result;

    if (void* handle = ::dlopen(soname.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_NOLOAD)) {
        result.handle = handle;
        result.path = pathOf(handle, soname);
        return result;
    }
    result.searched.push_back("the libraries already loaded");

    const std::string ldPath = environment("LD_LIBRARY_PATH");
    if (void* handle = ::dlopen(soname.c_str(), RTLD_NOW | RTLD_LOCAL)) {
        result.handle = handle;
        result.path = pathOf(handle, soname);
        return result;
    }
    // dlerror's text for "not found" is long and says nothing new; a library that exists but
    // fails to load (a missing dependency) is worth quoting.
    const std::string soError = lastDlError();
    const bool notFound = soError.find("No such file") != std::string::npos;
    result.searched.push_back("dlopen(" + soname + ") (LD_LIBRARY_PATH=" + (ldPath.empty() ? "(unset)" : ldPath) +
                              ", ldconfig cache)" + (notFound ? "" : ": " + soError));

    for (const std::string& dir : librarySearchDirectories()) {
        const std::string path = dir + "/" + soname;
        if (!isFile(path)) {
            result.searched.push_back(path);
            continue;
        }
        for (const std::string& companion : companions) {
            const std::string sibling = dir + "/" + companion;
            if (isFile(sibling)) ::dlopen(sibling.c_str(), RTLD_NOW | RTLD_LOCAL); // best effort: the load below says if it mattered
        }
        if (void* handle = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL)) {
            result.handle = handle;
            result.path = pathOf(handle, path);
            return result;
        }
        result.searched.push_back(path + ": " + lastDlError());
    }
    return result;
}

std::string notFoundMessage(const std::string& soname, const LoadedLibrary& result, const std::string& hint) {
    std::string message = soname + " not found; searched: ";
    for (std::size_t i = 0; i < result.searched.size(); ++i) {
        if (i > 0) message += ", ";
        message += result.searched[i];
    }
    if (!hint.empty()) message += "; " + hint;
    return message;
}

void* findSymbol(void* handle, const char* name) {
    ::dlerror();
    return handle == nullptr ? nullptr : ::dlsym(handle, name);
}

} // namespace mixz::cudalib
