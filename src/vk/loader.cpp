#include "vk/loader.hpp"

#if defined(_WIN32)
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#ifndef NOMINMAX
#define NOMINMAX
#endif
#include <windows.h>
#else
#include <dlfcn.h>
#endif

#include <cstdlib>
#include <mutex>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "vkrnn/error.hpp"

namespace vkrnn::vk {
namespace {

// The Vulkan loader's file names on this platform, in the order tried, and what to install when
// none loads. macOS: the LunarG loader, else MoltenVK itself (it exports vkGetInstanceProcAddr).
#if defined(_WIN32)
const char* const kLoaderNames[] = {"vulkan-1.dll"};
constexpr const char* kInstallAdvice =
    "Install a GPU driver with Vulkan support (it ships vulkan-1.dll) or the Vulkan SDK";
#elif defined(__APPLE__)
const char* const kLoaderNames[] = {"libvulkan.1.dylib", "libvulkan.dylib", "libMoltenVK.dylib"};
constexpr const char* kInstallAdvice =
    "Install the Vulkan SDK (LunarG) or MoltenVK (Homebrew: molten-vk), or ship libMoltenVK.dylib "
    "with the app";
#else
const char* const kLoaderNames[] = {"libvulkan.so.1", "libvulkan.so"};
constexpr const char* kInstallAdvice =
    "Install the Vulkan loader (Debian: libvulkan1) and a driver; for a CPU device without a GPU "
    "install mesa-vulkan-drivers (lavapipe)";
#endif

// Loads a shared library for the life of the process (function pointers outlive us); null and
// the system's reason when it cannot.
void* open_library(const std::string& name, std::string& why) {
#if defined(_WIN32)
  HMODULE lib = LoadLibraryA(name.c_str());
  if (!lib) why = fmt::format("LoadLibrary error {}", static_cast<unsigned long>(GetLastError()));
  return reinterpret_cast<void*>(lib);
#else
  void* lib = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    const char* e = dlerror();
    why = e ? e : "unknown reason";
  }
  return lib;
#endif
}

PFN_vkGetInstanceProcAddr find_get_instance_proc_addr(void* lib) {
#if defined(_WIN32)
  return reinterpret_cast<PFN_vkGetInstanceProcAddr>(
      reinterpret_cast<void (*)()>(GetProcAddress(static_cast<HMODULE>(lib), "vkGetInstanceProcAddr")));
#else
  return reinterpret_cast<PFN_vkGetInstanceProcAddr>(dlsym(lib, "vkGetInstanceProcAddr"));
#endif
}

}  // namespace

const GlobalFns& global_fns() {
  static GlobalFns fns;
  static std::once_flag once;
  static std::string failure;
  std::call_once(once, [] {
    std::vector<std::string> names(std::begin(kLoaderNames), std::end(kLoaderNames));
    if (const char* o = std::getenv("VKRNN_VULKAN_LIBRARY"); o && *o) names = {o};
    void* lib = nullptr;
    std::string name, why;
    for (const auto& n : names) {
      std::string reason;
      if ((lib = open_library(n, reason))) {
        name = n;
        break;
      }
      if (why.empty()) why = fmt::format("could not load '{}' ({})", n, reason);  // the main name's
    }
    if (!lib) {
      failure = fmt::format("no Vulkan loader: {}. {}", why, kInstallAdvice);
      return;
    }
    fns.vkGetInstanceProcAddr = find_get_instance_proc_addr(lib);
    if (!fns.vkGetInstanceProcAddr) {
      failure = fmt::format("'{}' is not a Vulkan loader: it has no vkGetInstanceProcAddr", name);
      return;
    }
#define VKRNN_LOAD_GLOBAL(fn) \
  fns.fn = reinterpret_cast<PFN_##fn>(fns.vkGetInstanceProcAddr(VK_NULL_HANDLE, #fn));
    VKRNN_GLOBAL_FNS(VKRNN_LOAD_GLOBAL)
#undef VKRNN_LOAD_GLOBAL
    if (!fns.vkCreateInstance) failure = fmt::format("'{}' exposes no vkCreateInstance", name);
  });
  if (!failure.empty()) throw Error(ErrorCode::no_loader, failure);
  return fns;
}

InstanceFns load_instance_fns(VkInstance instance, PFN_vkGetInstanceProcAddr get_instance_proc_addr) {
  if (!get_instance_proc_addr) get_instance_proc_addr = global_fns().vkGetInstanceProcAddr;
  InstanceFns fns;
#define VKRNN_LOAD_INSTANCE(fn) \
  fns.fn = reinterpret_cast<PFN_##fn>(get_instance_proc_addr(instance, #fn));
  VKRNN_INSTANCE_FNS(VKRNN_LOAD_INSTANCE)
#undef VKRNN_LOAD_INSTANCE
  // vkGetPhysicalDeviceProperties2/Features2 are core in 1.1, which vkrnn requires.
  if (!fns.vkEnumeratePhysicalDevices || !fns.vkGetPhysicalDeviceProperties2 ||
      !fns.vkCreateDevice) {
    throw Error(ErrorCode::missing_feature,
                "the Vulkan instance does not expose Vulkan 1.1 entry points "
                "(vkGetPhysicalDeviceProperties2): vkrnn needs an instance created with "
                "apiVersion >= VK_API_VERSION_1_1");
  }
  return fns;
}

DeviceFns load_device_fns(const InstanceFns& instance_fns, VkDevice device) {
  DeviceFns fns;
#define VKRNN_LOAD_DEVICE(fn)                                                              \
  fns.fn = reinterpret_cast<PFN_##fn>(instance_fns.vkGetDeviceProcAddr(device, #fn));     \
  if (!fns.fn) {                                                                           \
    throw Error(ErrorCode::missing_feature,                                                \
                fmt::format("the Vulkan device does not expose {}", #fn));                 \
  }
  VKRNN_DEVICE_FNS(VKRNN_LOAD_DEVICE)
#undef VKRNN_LOAD_DEVICE
#define VKRNN_LOAD_OPTIONAL(fn)                                                            \
  fns.fn = reinterpret_cast<PFN_##fn>(instance_fns.vkGetDeviceProcAddr(device, #fn));     \
  if (!fns.fn) fns.fn = reinterpret_cast<PFN_##fn>(instance_fns.vkGetDeviceProcAddr(device, #fn "KHR"));
  VKRNN_OPTIONAL_DEVICE_FNS(VKRNN_LOAD_OPTIONAL)
#undef VKRNN_LOAD_OPTIONAL
  return fns;
}

}  // namespace vkrnn::vk
