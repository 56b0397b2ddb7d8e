#include "vk/instance.hpp"

#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "vk/check.hpp"

namespace vkrnn::vk {
namespace {

constexpr const char* kValidationLayer = "VK_LAYER_KHRONOS_validation";

VKAPI_ATTR VkBool32 VKAPI_CALL debug_callback(VkDebugUtilsMessageSeverityFlagBitsEXT severity,
                                              VkDebugUtilsMessageTypeFlagsEXT,
                                              const VkDebugUtilsMessengerCallbackDataEXT* data,
                                              void* user) {
  const auto* sink = static_cast<const ValidationSink*>(user);
  MessageSeverity s = MessageSeverity::verbose;
  if (severity & VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT) {
    s = MessageSeverity::error;
  } else if (severity & VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT) {
    s = MessageSeverity::warning;
  } else if (severity & VK_DEBUG_UTILS_MESSAGE_SEVERITY_INFO_BIT_EXT) {
    s = MessageSeverity::info;
  }
  const char* msg = data && data->pMessage ? data->pMessage : "(no message)";
  if (sink && *sink) {
    (*sink)(s, msg);
  } else if (s == MessageSeverity::warning || s == MessageSeverity::error) {
    std::cerr << "[vkrnn validation] " << msg << "\n";
  }
  return VK_FALSE;  // never abort the call: the sink decides what a message means
}

bool has_extension(const std::vector<VkExtensionProperties>& list, const char* name) {
  for (const auto& e : list) {
    if (std::strcmp(e.extensionName, name) == 0) return true;
  }
  return false;
}

}  // namespace

bool validation_requested_by_env() {
  const char* v = std::getenv("VKRNN_VALIDATION");
  if (!v) return false;
  const std::string s(v);
  return s == "1" || s == "true" || s == "on" || s == "yes";
}

std::shared_ptr<Instance> Instance::create(bool validation, ValidationSink sink,
                                           const VkAllocationCallbacks* host_alloc) {
  const auto& g = global_fns();
  std::shared_ptr<Instance> self(new Instance());
  self->owned_ = true;
  self->host_alloc_ = host_alloc;
  self->validation_ = validation;
  self->sink_ = std::make_unique<ValidationSink>(std::move(sink));

  std::uint32_t loader_version = VK_API_VERSION_1_0;
  if (g.vkEnumerateInstanceVersion) g.vkEnumerateInstanceVersion(&loader_version);
  if (loader_version < VK_API_VERSION_1_1) {
    throw Error(ErrorCode::no_loader,
                fmt::format("the Vulkan loader supports only Vulkan {}.{}: vkrnn needs 1.1 or "
                            "newer (Debian: libvulkan1)",
                            VK_API_VERSION_MAJOR(loader_version), VK_API_VERSION_MINOR(loader_version)));
  }
  // Ask for the newest version we know; devices still report their own.
  self->api_version_ = loader_version >= VK_API_VERSION_1_3 ? VK_API_VERSION_1_3 : loader_version;

  std::uint32_t n = 0;
  check(g.vkEnumerateInstanceExtensionProperties(nullptr, &n, nullptr),
        "vkEnumerateInstanceExtensionProperties", "");
  std::vector<VkExtensionProperties> available(n);
  check(g.vkEnumerateInstanceExtensionProperties(nullptr, &n, available.data()),
        "vkEnumerateInstanceExtensionProperties", "");

  std::vector<const char*> extensions;
  std::vector<const char*> layers;
  VkInstanceCreateFlags flags = 0;
  // MoltenVK (Apple) devices are listed only with portability enumeration.
  if (has_extension(available, VK_KHR_PORTABILITY_ENUMERATION_EXTENSION_NAME)) {
    extensions.push_back(VK_KHR_PORTABILITY_ENUMERATION_EXTENSION_NAME);
    flags |= VK_INSTANCE_CREATE_ENUMERATE_PORTABILITY_BIT_KHR;
    self->portability_ = true;
  }

  VkValidationFeaturesEXT features{VK_STRUCTURE_TYPE_VALIDATION_FEATURES_EXT};
  const VkValidationFeatureEnableEXT enables[] = {
      VK_VALIDATION_FEATURE_ENABLE_SYNCHRONIZATION_VALIDATION_EXT};
  VkDebugUtilsMessengerCreateInfoEXT messenger_info{
      VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT};
  messenger_info.messageSeverity = VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT |
                                   VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT;
  messenger_info.messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT |
                               VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT |
                               VK_DEBUG_UTILS_MESSAGE_TYPE_PERFORMANCE_BIT_EXT;
  messenger_info.pfnUserCallback = debug_callback;
  messenger_info.pUserData = self->sink_.get();

  // Debug tools (RenderDoc, Nsight, the validation layer) show names and labels through it.
  if (has_extension(available, VK_EXT_DEBUG_UTILS_EXTENSION_NAME)) {
    extensions.push_back(VK_EXT_DEBUG_UTILS_EXTENSION_NAME);
    self->debug_utils_ = true;
  }
  const void* next = nullptr;
  if (validation) {
    std::uint32_t ln = 0;
    g.vkEnumerateInstanceLayerProperties(&ln, nullptr);
    std::vector<VkLayerProperties> layer_list(ln);
    g.vkEnumerateInstanceLayerProperties(&ln, layer_list.data());
    bool found = false;
    for (const auto& l : layer_list) found |= std::strcmp(l.layerName, kValidationLayer) == 0;
    if (!found) {
      throw Error(ErrorCode::missing_feature,
                  fmt::format("validation was requested (VKRNN_VALIDATION=1 or "
                              "ContextOptions::validation) but {} is not installed (Debian: "
                              "vulkan-validationlayers)",
                              kValidationLayer));
    }
    layers.push_back(kValidationLayer);
    std::uint32_t en = 0;
    g.vkEnumerateInstanceExtensionProperties(kValidationLayer, &en, nullptr);
    std::vector<VkExtensionProperties> layer_ext(en);
    g.vkEnumerateInstanceExtensionProperties(kValidationLayer, &en, layer_ext.data());
    if (!has_extension(available, VK_EXT_DEBUG_UTILS_EXTENSION_NAME) &&
        !has_extension(layer_ext, VK_EXT_DEBUG_UTILS_EXTENSION_NAME)) {
      throw Error(ErrorCode::missing_feature,
                  "validation needs VK_EXT_debug_utils, which neither the loader nor the layer offers");
    }
    if (!self->debug_utils_) extensions.push_back(VK_EXT_DEBUG_UTILS_EXTENSION_NAME);
    self->debug_utils_ = true;
    messenger_info.pNext = nullptr;
    next = &messenger_info;
    if (has_extension(layer_ext, VK_EXT_VALIDATION_FEATURES_EXTENSION_NAME)) {
      extensions.push_back(VK_EXT_VALIDATION_FEATURES_EXTENSION_NAME);
      features.enabledValidationFeatureCount = 1;
      features.pEnabledValidationFeatures = enables;
      features.pNext = &messenger_info;
      next = &features;
    }
  }

  VkApplicationInfo app{VK_STRUCTURE_TYPE_APPLICATION_INFO};
  app.pApplicationName = "vkrnn";
  app.pEngineName = "vkrnn";
  app.engineVersion = VK_MAKE_API_VERSION(0, 0, 1, 0);
  app.apiVersion = self->api_version_;

  VkInstanceCreateInfo info{VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO};
  info.pNext = next;
  info.flags = flags;
  info.pApplicationInfo = &app;
  info.enabledLayerCount = static_cast<std::uint32_t>(layers.size());
  info.ppEnabledLayerNames = layers.data();
  info.enabledExtensionCount = static_cast<std::uint32_t>(extensions.size());
  info.ppEnabledExtensionNames = extensions.data();
  const VkResult created = g.vkCreateInstance(&info, host_alloc, &self->instance_);
  if (created == VK_ERROR_INCOMPATIBLE_DRIVER) {
    // The loader is there but found no driver (ICD): no device, as docs/runtime.md says.
    throw Error(ErrorCode::no_device,
                "no Vulkan driver found (vkCreateInstance: VK_ERROR_INCOMPATIBLE_DRIVER): install a Vulkan "
                "driver for your GPU, or mesa-vulkan-drivers for lavapipe, Mesa's CPU device (check with "
                "vulkaninfo --summary)",
                static_cast<std::int32_t>(created));
  }
  check(created, "vkCreateInstance", "");
  self->fns_ = load_instance_fns(self->instance_);

  if (validation && self->fns_.vkCreateDebugUtilsMessengerEXT) {
    check(self->fns_.vkCreateDebugUtilsMessengerEXT(self->instance_, &messenger_info, host_alloc,
                                                    &self->messenger_),
          "vkCreateDebugUtilsMessengerEXT", "");
  }
  return self;
}

std::shared_ptr<Instance> Instance::adopt(VkInstance instance, std::uint32_t api_version,
                                          PFN_vkGetInstanceProcAddr get_instance_proc_addr) {
  if (instance == VK_NULL_HANDLE) {
    throw Error(ErrorCode::invalid_argument, "ExternalDevice::instance is VK_NULL_HANDLE");
  }
  std::shared_ptr<Instance> self(new Instance());
  self->instance_ = instance;
  self->owned_ = false;
  self->api_version_ = api_version;
  if (api_version < VK_API_VERSION_1_1) {
    throw Error(ErrorCode::missing_feature,
                "the adopted VkInstance was created with apiVersion < 1.1: vkrnn needs Vulkan 1.1");
  }
  self->fns_ = load_instance_fns(instance, get_instance_proc_addr);
  return self;
}

Instance::~Instance() {
  if (!owned_) return;
  if (messenger_ != VK_NULL_HANDLE && fns_.vkDestroyDebugUtilsMessengerEXT) {
    fns_.vkDestroyDebugUtilsMessengerEXT(instance_, messenger_, host_alloc_);
  }
  if (instance_ != VK_NULL_HANDLE && fns_.vkDestroyInstance) {
    fns_.vkDestroyInstance(instance_, host_alloc_);
  }
}

}  // namespace vkrnn::vk
