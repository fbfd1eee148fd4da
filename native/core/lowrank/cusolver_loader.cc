// The cuSOLVER loader (see cusolver_loader.h).
#include "cusolver_loader.h"

#include <cstdlib>
#include <mutex>
#include <vector>

#if defined(_WIN32)
#include <windows.h>
#else
#include <dlfcn.h>
#endif

namespace st {
namespace cusolver {

namespace {

struct Loaded {
  Api api{};
  bool ok = false;
  std::string why, library;
};

#if defined(_WIN32)
void* open_lib(const std::string& name, std::string* err) {
  HMODULE h = LoadLibraryA(name.c_str());
  if (!h) *err = name + ": LoadLibrary error " + std::to_string(GetLastError());
  return reinterpret_cast<void*>(h);
}
void* symbol(void* lib, const char* name) { return reinterpret_cast<void*>(GetProcAddress(static_cast<HMODULE>(lib), name)); }
void close_lib(void* lib) { FreeLibrary(static_cast<HMODULE>(lib)); }
#else
void* open_lib(const std::string& name, std::string* err) {
  void* h = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    const char* e = dlerror();
    *err = e ? e : (name + ": not found");
  }
  return h;
}
void* symbol(void* lib, const char* name) { return dlsym(lib, name); }
void close_lib(void* lib) { dlclose(lib); }
#endif

template <class F>
bool bind(void* lib, const char* name, F* out, std::string* missing) {
  void* p = symbol(lib, name);
  if (!p) {
    if (!missing->empty()) *missing += ", ";
    *missing += name;
    return false;
  }
  *out = reinterpret_cast<F>(p);
  return true;
}

Loaded load() {
  Loaded r;
  std::vector<std::string> names;
  if (const char* env = std::getenv("SLIMTENSOR_CUSOLVER")) {
    if (*env) names.emplace_back(env);
  }
#if defined(_WIN32)
  for (const char* n : {"cusolver64_12.dll", "cusolver64_11.dll"}) names.emplace_back(n);
#else
  for (const char* n : {"libcusolver.so.12", "libcusolver.so.11", "libcusolver.so"}) names.emplace_back(n);
#endif
  std::string errors;
  for (const std::string& name : names) {
    std::string err;
    void* lib = open_lib(name, &err);
    if (!lib) {
      errors += (errors.empty() ? "" : "; ") + err;
      continue;
    }
    std::string missing;
    Api& a = r.api;
    bool ok = true;
    ok &= bind(lib, "cusolverDnCreate", &a.create, &missing);
    ok &= bind(lib, "cusolverDnDestroy", &a.destroy, &missing);
    ok &= bind(lib, "cusolverDnSetStream", &a.set_stream, &missing);
    ok &= bind(lib, "cusolverDnCreateGesvdjInfo", &a.create_gesvdj_info, &missing);
    ok &= bind(lib, "cusolverDnDestroyGesvdjInfo", &a.destroy_gesvdj_info, &missing);
    ok &= bind(lib, "cusolverDnXgesvdjSetTolerance", &a.gesvdj_set_tolerance, &missing);
    ok &= bind(lib, "cusolverDnXgesvdjSetMaxSweeps", &a.gesvdj_set_max_sweeps, &missing);
    ok &= bind(lib, "cusolverDnSgesvdj_bufferSize", &a.sgesvdj_buffer_size, &missing);
    ok &= bind(lib, "cusolverDnSgesvdj", &a.sgesvdj, &missing);
    ok &= bind(lib, "cusolverDnSgesvd_bufferSize", &a.sgesvd_buffer_size, &missing);
    ok &= bind(lib, "cusolverDnSgesvd", &a.sgesvd, &missing);
    ok &= bind(lib, "cusolverDnCreateParams", &a.create_params, &missing);
    ok &= bind(lib, "cusolverDnDestroyParams", &a.destroy_params, &missing);
    ok &= bind(lib, "cusolverDnXgesvdr_bufferSize", &a.xgesvdr_buffer_size, &missing);
    ok &= bind(lib, "cusolverDnXgesvdr", &a.xgesvdr, &missing);
    if (!ok) {
      errors += (errors.empty() ? "" : "; ") + name + " lacks " + missing;
      close_lib(lib);
      r.api = Api{};
      continue;
    }
    // Kept open for the life of the process.
    r.ok = true;
    r.library = name;
    return r;
  }
  r.why = "libcusolver could not be loaded (" + errors +
          "); install the CUDA toolkit's cuSOLVER or set SLIMTENSOR_CUSOLVER to its path";
  return r;
}

}  // namespace

const Api* api(std::string* why, std::string* library) {
  static std::once_flag once;
  static Loaded* loaded = nullptr;
  std::call_once(once, [] { loaded = new Loaded(load()); });
  if (!loaded->ok) {
    if (why) *why = loaded->why;
    return nullptr;
  }
  if (library) *library = loaded->library;
  return &loaded->api;
}

}  // namespace cusolver
}  // namespace st
