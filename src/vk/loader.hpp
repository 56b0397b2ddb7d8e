#pragma once
// vkrnn loads the Vulkan loader at run time (as volk does) instead of linking it, so a machine without
// a Vulkan loader gets a vkrnn::Error that says what to install rather than a dynamic-linker
// failure before main(). Function tables are per instance / per device, which is also what an
// app's adopted handles need.
#include <vulkan/vulkan.h>

namespace vkrnn::vk {

#define VKRNN_GLOBAL_FNS(X)                \
  X(vkCreateInstance)                      \
  X(vkEnumerateInstanceExtensionProperties) \
  X(vkEnumerateInstanceLayerProperties)    \
  X(vkEnumerateInstanceVersion)

#define VKRNN_INSTANCE_FNS(X)                  \
  X(vkDestroyInstance)                         \
  X(vkEnumeratePhysicalDevices)                \
  X(vkGetPhysicalDeviceProperties)             \
  X(vkGetPhysicalDeviceProperties2)            \
  X(vkGetPhysicalDeviceFeatures2)              \
  X(vkGetPhysicalDeviceMemoryProperties)       \
  X(vkGetPhysicalDeviceFormatProperties)       \
  X(vkGetPhysicalDeviceQueueFamilyProperties)  \
  X(vkEnumerateDeviceExtensionProperties)      \
  X(vkCreateDevice)                            \
  X(vkGetDeviceProcAddr)                       \
  X(vkCreateDebugUtilsMessengerEXT)            \
  X(vkDestroyDebugUtilsMessengerEXT)           \
  X(vkGetPhysicalDeviceMemoryProperties2)      \
  X(vkSetDebugUtilsObjectNameEXT)              \
  X(vkCmdBeginDebugUtilsLabelEXT)              \
  X(vkCmdEndDebugUtilsLabelEXT)

#define VKRNN_DEVICE_FNS(X)            \
  X(vkDestroyDevice)                   \
  X(vkGetDeviceQueue)                  \
  X(vkCreateBuffer)                    \
  X(vkDestroyBuffer)                   \
  X(vkCreateBufferView)                \
  X(vkDestroyBufferView)               \
  X(vkGetBufferMemoryRequirements)     \
  X(vkAllocateMemory)                  \
  X(vkFreeMemory)                      \
  X(vkBindBufferMemory)                \
  X(vkMapMemory)                       \
  X(vkUnmapMemory)                     \
  X(vkFlushMappedMemoryRanges)         \
  X(vkInvalidateMappedMemoryRanges)    \
  X(vkCreateShaderModule)              \
  X(vkDestroyShaderModule)             \
  X(vkCreateDescriptorSetLayout)       \
  X(vkDestroyDescriptorSetLayout)      \
  X(vkCreatePipelineLayout)            \
  X(vkDestroyPipelineLayout)           \
  X(vkCreateComputePipelines)          \
  X(vkDestroyPipeline)                 \
  X(vkCreatePipelineCache)             \
  X(vkDestroyPipelineCache)            \
  X(vkGetPipelineCacheData)            \
  X(vkMergePipelineCaches)             \
  X(vkCreateDescriptorPool)            \
  X(vkDestroyDescriptorPool)           \
  X(vkResetDescriptorPool)             \
  X(vkAllocateDescriptorSets)          \
  X(vkUpdateDescriptorSets)            \
  X(vkCreateCommandPool)               \
  X(vkDestroyCommandPool)              \
  X(vkAllocateCommandBuffers)          \
  X(vkFreeCommandBuffers)              \
  X(vkBeginCommandBuffer)              \
  X(vkEndCommandBuffer)                \
  X(vkResetCommandBuffer)              \
  X(vkCmdBindPipeline)                 \
  X(vkCmdBindDescriptorSets)           \
  X(vkCmdPushConstants)                \
  X(vkCmdDispatch)                     \
  X(vkCmdDispatchIndirect)             \
  X(vkCmdPipelineBarrier)              \
  X(vkCmdCopyBuffer)                   \
  X(vkCmdFillBuffer)                   \
  X(vkCmdWriteTimestamp)               \
  X(vkCmdResetQueryPool)               \
  X(vkCreateQueryPool)                 \
  X(vkDestroyQueryPool)                \
  X(vkGetQueryPoolResults)             \
  X(vkCreateFence)                     \
  X(vkDestroyFence)                    \
  X(vkWaitForFences)                   \
  X(vkResetFences)                     \
  X(vkGetFenceStatus)                  \
  X(vkQueueSubmit)                     \
  X(vkDeviceWaitIdle)

// Device functions vkrnn uses only when the device has them (null otherwise): timeline
// semaphores (core in 1.2; the KHR names are tried for 1.1 devices with the extension).
#define VKRNN_OPTIONAL_DEVICE_FNS(X) \
  X(vkGetSemaphoreCounterValue)      \
  X(vkWaitSemaphores)

#define VKRNN_DECLARE_FN(name) PFN_##name name = nullptr;

struct GlobalFns {
  PFN_vkGetInstanceProcAddr vkGetInstanceProcAddr = nullptr;
  VKRNN_GLOBAL_FNS(VKRNN_DECLARE_FN)
};
struct InstanceFns {
  VKRNN_INSTANCE_FNS(VKRNN_DECLARE_FN)
};
struct DeviceFns {
  VKRNN_DEVICE_FNS(VKRNN_DECLARE_FN)
  VKRNN_OPTIONAL_DEVICE_FNS(VKRNN_DECLARE_FN)
};

// Loads the Vulkan loader once per process (libvulkan.so.1, vulkan-1.dll, libvulkan.1.dylib or
// libMoltenVK.dylib; VKRNN_VULKAN_LIBRARY overrides the file name). Throws Error(no_loader)
// with install advice when it cannot.
const GlobalFns& global_fns();
// Through the app's vkGetInstanceProcAddr (ExternalDevice::get_instance_proc_addr) when given:
// then vkrnn never loads a Vulkan loader of its own.
InstanceFns load_instance_fns(VkInstance instance, PFN_vkGetInstanceProcAddr get_instance_proc_addr = nullptr);
// Throws Error(missing_feature) naming the first core function the device does not expose.
DeviceFns load_device_fns(const InstanceFns& instance_fns, VkDevice device);

}  // namespace vkrnn::vk
