#include "common/app_device.hpp"

#include <stdexcept>

namespace vkrnn::test {
namespace {

VKAPI_ATTR VkBool32 VKAPI_CALL collect(VkDebugUtilsMessageSeverityFlagBitsEXT,
                                       VkDebugUtilsMessageTypeFlagsEXT,
                                       const VkDebugUtilsMessengerCallbackDataEXT* data, void* user) {
  static_cast<std::vector<std::string>*>(user)->emplace_back(data->pMessage);
  return VK_FALSE;
}

void require(VkResult r, const char* what) {
  if (r != VK_SUCCESS) throw std::runtime_error(std::string("AppDevice: ") + what + " failed");
}

}  // namespace

AppDevice::AppDevice(const AppDeviceOptions& options) : options_(options) {
  const bool validation = options.validation;
  const auto& g = vk::global_fns();
  VkApplicationInfo app{VK_STRUCTURE_TYPE_APPLICATION_INFO};
  app.apiVersion = options.timeline_semaphore ? VK_API_VERSION_1_2 : VK_API_VERSION_1_1;
  const char* layer = "VK_LAYER_KHRONOS_validation";
  const char* ext = VK_EXT_DEBUG_UTILS_EXTENSION_NAME;
  VkDebugUtilsMessengerCreateInfoEXT dbg{VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT};
  dbg.messageSeverity =
      VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT | VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT;
  dbg.messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT | VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT;
  dbg.pfnUserCallback = collect;
  dbg.pUserData = &messages_;
  const VkValidationFeatureEnableEXT sync = VK_VALIDATION_FEATURE_ENABLE_SYNCHRONIZATION_VALIDATION_EXT;
  VkValidationFeaturesEXT features{VK_STRUCTURE_TYPE_VALIDATION_FEATURES_EXT};
  features.pNext = &dbg;
  features.enabledValidationFeatureCount = 1;
  features.pEnabledValidationFeatures = &sync;
  VkInstanceCreateInfo ici{VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO};
  ici.pApplicationInfo = &app;
  if (validation) {
    ici.pNext = options.sync_validation ? static_cast<const void*>(&features) : &dbg;
    ici.enabledLayerCount = 1;
    ici.ppEnabledLayerNames = &layer;
    ici.enabledExtensionCount = 1;
    ici.ppEnabledExtensionNames = &ext;
  }
  require(g.vkCreateInstance(&ici, nullptr, &instance_), "vkCreateInstance");
  ifn_ = vk::load_instance_fns(instance_);
  if (validation) ifn_.vkCreateDebugUtilsMessengerEXT(instance_, &dbg, nullptr, &messenger_);
  std::uint32_t n = 1;
  ifn_.vkEnumeratePhysicalDevices(instance_, &n, &physical_);
  if (physical_ == VK_NULL_HANDLE) throw std::runtime_error("AppDevice: no physical device");
  ifn_.vkGetPhysicalDeviceQueueFamilyProperties(physical_, &family_count_, nullptr);
  std::vector<VkQueueFamilyProperties> families(family_count_);
  ifn_.vkGetPhysicalDeviceQueueFamilyProperties(physical_, &family_count_, families.data());
  while (!(families[family_].queueFlags & VK_QUEUE_COMPUTE_BIT)) ++family_;
  const float priority = 1.0f;
  VkDeviceQueueCreateInfo qci{VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO};
  qci.queueFamilyIndex = family_;
  qci.queueCount = 1;
  qci.pQueuePriorities = &priority;
  VkPhysicalDeviceTimelineSemaphoreFeatures timeline{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_TIMELINE_SEMAPHORE_FEATURES};
  timeline.timelineSemaphore = VK_TRUE;
  VkDeviceCreateInfo dci{VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO};
  dci.pNext = options.timeline_semaphore ? &timeline : nullptr;
  dci.queueCreateInfoCount = 1;
  dci.pQueueCreateInfos = &qci;
  require(ifn_.vkCreateDevice(physical_, &dci, nullptr, &device_), "vkCreateDevice");
  dfn_ = vk::load_device_fns(ifn_, device_);
  dfn_.vkGetDeviceQueue(device_, family_, 0, &queue_);
}

AppDevice::~AppDevice() { destroy(); }

void AppDevice::destroy() {
  if (device_ != VK_NULL_HANDLE) {
    dfn_.vkDeviceWaitIdle(device_);
    dfn_.vkDestroyDevice(device_, nullptr);
    device_ = VK_NULL_HANDLE;
  }
  if (messenger_ != VK_NULL_HANDLE) {
    ifn_.vkDestroyDebugUtilsMessengerEXT(instance_, messenger_, nullptr);
    messenger_ = VK_NULL_HANDLE;
  }
  if (instance_ != VK_NULL_HANDLE) {
    ifn_.vkDestroyInstance(instance_, nullptr);
    instance_ = VK_NULL_HANDLE;
  }
}

ExternalDevice AppDevice::external() const {
  ExternalDevice e;
  e.instance = instance_;
  e.physical_device = physical_;
  e.device = device_;
  e.queue_family = family_;
  e.api_version = options_.timeline_semaphore ? VK_API_VERSION_1_2 : VK_API_VERSION_1_1;
  e.features.timeline_semaphore = options_.timeline_semaphore;
  e.features.debug_utils = options_.validation;  // the app enabled VK_EXT_debug_utils for its messenger
  return e;
}

}  // namespace vkrnn::test
