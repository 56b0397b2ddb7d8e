#pragma once
// An application's own Vulkan instance, device and compute queue, made the way a game makes
// them (no vkrnn involved), for tests that hand such handles to Context::adopt. Features are
// left off unless asked for, which also stands in for devices that lack them.
#include <string>
#include <vector>

#include "vk/loader.hpp"
#include "vkrnn/context.hpp"

namespace vkrnn::test {

struct AppDeviceOptions {
  bool validation = false;         // the Khronos layer + the app's messenger (messages())
  bool sync_validation = false;    // ... with synchronization validation
  bool timeline_semaphore = false; // enable timelineSemaphore (Vulkan 1.2 instance and device)
};

class AppDevice {
 public:
  // With `validation`, the app enables the Khronos layer and its own debug messenger, whose
  // warnings and errors land in messages() (leaked child objects are reported at destruction).
  explicit AppDevice(bool validation = false) : AppDevice(AppDeviceOptions{.validation = validation}) {}
  explicit AppDevice(const AppDeviceOptions& options);
  ~AppDevice();
  AppDevice(const AppDevice&) = delete;
  AppDevice& operator=(const AppDevice&) = delete;

  // The handles as Context::adopt takes them; features as enabled (timeline, debug utils).
  ExternalDevice external() const;
  const vk::DeviceFns& fns() const { return dfn_; }
  const vk::InstanceFns& instance_fns() const { return ifn_; }
  VkDevice device() const { return device_; }
  VkQueue queue() const { return queue_; }
  std::uint32_t queue_family() const { return family_; }
  std::uint32_t queue_family_count() const { return family_count_; }
  // Destroys the device and instance now (the destructor does it otherwise) so a test can
  // check what validation said about it.
  void destroy();
  const std::vector<std::string>& messages() const { return messages_; }

 private:
  VkInstance instance_ = VK_NULL_HANDLE;
  VkPhysicalDevice physical_ = VK_NULL_HANDLE;
  VkDevice device_ = VK_NULL_HANDLE;
  VkDebugUtilsMessengerEXT messenger_ = VK_NULL_HANDLE;
  VkQueue queue_ = VK_NULL_HANDLE;
  std::uint32_t family_ = 0;
  std::uint32_t family_count_ = 0;
  AppDeviceOptions options_;
  vk::InstanceFns ifn_{};
  vk::DeviceFns dfn_{};
  std::vector<std::string> messages_;
};

}  // namespace vkrnn::test
