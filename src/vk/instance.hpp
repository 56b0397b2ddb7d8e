#pragma once
#include <memory>

#include "vk/loader.hpp"
#include "vkrnn/context.hpp"

namespace vkrnn::vk {

// A VkInstance, owned or adopted, with its function table and (when validation is on) the
// debug-utils messenger that forwards layer messages to a ValidationSink.
class Instance {
 public:
  // Creates vkrnn's own instance (Vulkan 1.1 or newer, as the loader allows), with
  // VK_EXT_debug_utils whenever the loader offers it (object names and labels for debug tools).
  static std::shared_ptr<Instance> create(bool validation, ValidationSink sink,
                                          const VkAllocationCallbacks* host_alloc = nullptr);
  // Wraps an app's instance: nothing is created or destroyed. get_instance_proc_addr: the app's
  // (null: the loader vkrnn loads).
  static std::shared_ptr<Instance> adopt(VkInstance instance, std::uint32_t api_version,
                                         PFN_vkGetInstanceProcAddr get_instance_proc_addr = nullptr);
  ~Instance();
  Instance(const Instance&) = delete;
  Instance& operator=(const Instance&) = delete;

  VkInstance handle() const { return instance_; }
  const InstanceFns& fns() const { return fns_; }
  std::uint32_t api_version() const { return api_version_; }
  bool owned() const { return owned_; }
  bool validation() const { return validation_; }
  bool portability_enumeration() const { return portability_; }
  bool debug_utils() const { return debug_utils_; }  // VK_EXT_debug_utils enabled (own instance)

 private:
  Instance() = default;
  VkInstance instance_ = VK_NULL_HANDLE;
  InstanceFns fns_{};
  std::uint32_t api_version_ = VK_API_VERSION_1_1;
  bool owned_ = false;
  bool validation_ = false;
  bool portability_ = false;
  bool debug_utils_ = false;
  const VkAllocationCallbacks* host_alloc_ = nullptr;
  VkDebugUtilsMessengerEXT messenger_ = VK_NULL_HANDLE;
  std::unique_ptr<ValidationSink> sink_;
};

// Reads the VKRNN_VALIDATION environment variable ("1", "true", "on").
bool validation_requested_by_env();

}  // namespace vkrnn::vk
