#pragma once
#include <vector>

#include "vk/instance.hpp"
#include "vkrnn/device.hpp"

namespace vkrnn::vk {

// What a physical device offers beyond DeviceInfo, needed to create a VkDevice on it.
struct DeviceSupport {
  bool ext_subgroup_size_control = false;  // as an extension (core in 1.3)
  bool ext_float16_int8 = false;           // VK_KHR_shader_float16_int8 (core in 1.2)
  bool ext_driver_properties = false;      // VK_KHR_driver_properties (core in 1.2)
  bool portability_subset = false;         // must be enabled when listed (MoltenVK)
  bool storage_buffer_16bit = false;
  bool shader_float16 = false;
  bool subgroup_size_control = false;
  bool compute_full_subgroups = false;
  bool ext_timeline_semaphore = false;     // VK_KHR_timeline_semaphore (core in 1.2)
  bool timeline_semaphore = false;         // the timelineSemaphore feature
  bool ext_memory_budget = false;          // VK_EXT_memory_budget
};

struct PhysicalDevice {
  VkPhysicalDevice handle = VK_NULL_HANDLE;
  DeviceInfo info;
  DeviceSupport support;
};

PhysicalDevice query_physical_device(const Instance& instance, VkPhysicalDevice handle,
                                     std::uint32_t index);
std::vector<PhysicalDevice> enumerate_physical_devices(const Instance& instance);

// The queue family vkrnn uses: a compute-only family where one exists (async compute that does
// not compete with a game's graphics queue), else the first family with compute.
std::uint32_t pick_compute_queue_family(const Instance& instance, VkPhysicalDevice handle,
                                        bool* compute_only);

}  // namespace vkrnn::vk
