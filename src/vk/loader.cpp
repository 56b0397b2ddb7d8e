#include "vk/loader.hpp"

#include <dlfcn.h>

#include <cstdlib>
#include <mutex>
#include <string>

#include <fmt/format.h>

#include "vkrnn/error.hpp"

namespace vkrnn::vk {

const GlobalFns& global_fns() {
  static GlobalFns fns;
  static std::once_flag once;
  static std::string failure;
  std::call_once(once, [] {
    const char* override_name = std::getenv("VKRNN_VULKAN_LIBRARY");
    const std::string name = override_name && *override_name ? override_name : "libvulkan.so.1";
    void* lib = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!lib && !override_name) lib = dlopen("libvulkan.so", RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
      const char* why = dlerror();
      failure = fmt::format(
          "no Vulkan loader: could not load '{}' ({}). Install the Vulkan loader (Debian: "
          "libvulkan1) and a driver; for a CPU device without a GPU install mesa-vulkan-drivers "
          "(lavapipe)",
          name, why ? why : "unknown reason");
      return;
    }
    fns.vkGetInstanceProcAddr =
        reinterpret_cast<PFN_vkGetInstanceProcAddr>(dlsym(lib, "vkGetInstanceProcAddr"));
    if (!fns.vkGetInstanceProcAddr) {
      failure = fmt::format("'{}' is not a Vulkan loader: it has no vkGetInstanceProcAddr", name);
      return;
    }
#define VKRNN_LOAD_GLOBAL(fn) \
  fns.fn = reinterpret_cast<PFN_##fn>(fns.vkGetInstanceProcAddr(VK_NULL_HANDLE, #fn));
    VKRNN_GLOBAL_FNS(VKRNN_LOAD_GLOBAL)
#undef VKRNN_LOAD_GLOBAL
    if (!fns.vkCreateInstance) failure = fmt::format("'{}' exposes no vkCreateInstance", name);
    // The library stays loaded for the life of the process: function pointers outlive us.
  });
  if (!failure.empty()) throw Error(ErrorCode::no_loader, failure);
  return fns;
}

InstanceFns load_instance_fns(VkInstance instance) {
  const auto& g = global_fns();
  InstanceFns fns;
#define VKRNN_LOAD_INSTANCE(fn) \
  fns.fn = reinterpret_cast<PFN_##fn>(g.vkGetInstanceProcAddr(instance, #fn));
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
