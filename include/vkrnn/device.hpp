#pragma once
// What vkrnn knows about a Vulkan physical device, and how it picks one.
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "vkrnn/export.h"

namespace vkrnn {

enum class Vendor { amd, nvidia, intel, arm, qualcomm, apple, imagination, mesa, other };
enum class DeviceType { discrete, integrated, virtual_gpu, cpu, other };

VKRNN_API const char* to_string(Vendor vendor) noexcept;
VKRNN_API const char* to_string(DeviceType type) noexcept;
VKRNN_API Vendor vendor_from_id(std::uint32_t vendor_id) noexcept;

struct MemoryHeapInfo {
  std::uint64_t size = 0;
  bool device_local = false;
};

struct MemoryTypeInfo {
  std::uint32_t heap = 0;
  bool device_local = false;
  bool host_visible = false;
  bool host_coherent = false;
  bool host_cached = false;
};

struct DeviceInfo {
  std::uint32_t index = 0;  // position in vkEnumeratePhysicalDevices
  std::string name;
  std::uint32_t vendor_id = 0;
  std::uint32_t device_id = 0;
  Vendor vendor = Vendor::other;
  DeviceType type = DeviceType::other;
  std::string driver_name;  // VkPhysicalDeviceDriverProperties, where available
  std::string driver_info;
  std::uint32_t driver_version = 0;  // raw, vendor-encoded
  std::string driver_version_string; // decoded the vendor's way
  std::uint32_t api_version = 0;
  std::array<std::uint8_t, 16> pipeline_cache_uuid{};

  // Subgroups
  std::uint32_t subgroup_size = 0;
  std::uint32_t min_subgroup_size = 0;  // == subgroup_size without VK_EXT_subgroup_size_control
  std::uint32_t max_subgroup_size = 0;
  bool subgroup_in_compute = false;
  std::uint32_t subgroup_operations = 0;  // VkSubgroupFeatureFlags
  std::vector<std::string> subgroup_operation_names;
  bool subgroup_arithmetic = false;  // arithmetic ops available in compute shaders

  // Compute limits
  std::array<std::uint32_t, 3> max_workgroup_size{};
  std::uint32_t max_workgroup_invocations = 0;
  std::array<std::uint32_t, 3> max_workgroup_count{};
  std::uint32_t max_shared_memory = 0;
  std::uint32_t max_push_constants = 0;
  std::uint64_t max_storage_buffer_range = 0;
  std::uint64_t max_memory_allocation_size = 0;
  std::uint32_t max_memory_allocation_count = 0;
  std::uint64_t non_coherent_atom_size = 0;
  std::uint64_t min_storage_buffer_offset_alignment = 0;
  std::uint32_t max_bound_descriptor_sets = 0;
  std::uint32_t max_storage_buffers_per_stage = 0;
  // Uniform texel buffers of VK_FORMAT_R32G32B32A32_UINT (16-byte texels): whether the format
  // supports them, and how many texels one view may hold.
  bool uniform_texel_u32x4 = false;
  std::uint32_t max_texel_buffer_elements = 0;
  // CPU drivers (type cpu): the host threads that run its workgroups (llvmpipe starts
  // LP_NUM_THREADS, by default one per hardware thread); 0 elsewhere.
  std::uint32_t cpu_threads = 0;

  // 16-bit
  bool storage_16bit = false;   // storageBuffer16BitAccess
  bool shader_float16 = false;  // shaderFloat16 arithmetic

  // Memory
  std::vector<MemoryHeapInfo> memory_heaps;
  std::vector<MemoryTypeInfo> memory_types;
  bool unified_memory = false;  // every device-local heap is host-visible (UMA)

  // Timing
  bool timestamps = false;  // compute queue can write timestamps
  float timestamp_period_ns = 0.0f;
  std::uint32_t timestamp_valid_bits = 0;

  // Queues
  bool has_compute_only_queue = false;
  std::uint32_t compute_queue_family = 0;  // the family vkrnn would use
};

// Higher is better: discrete > integrated > virtual > CPU > other.
VKRNN_API int device_type_rank(DeviceType type) noexcept;

// Lists every physical device through a short-lived instance of vkrnn's own.
// Throws Error(no_loader) when there is no Vulkan loader (libvulkan), Error(no_device) when the
// loader finds no driver or no device, each with advice on what to install.
VKRNN_API std::vector<DeviceInfo> list_devices();

// Picks a device: `selector` is "" (best by type rank, ties to the lowest index), a decimal index,
// or a case-insensitive substring of the device name. Throws Error(no_device) naming what was
// available when nothing matches.
VKRNN_API std::uint32_t select_device(const std::vector<DeviceInfo>& devices, const std::string& selector);

}  // namespace vkrnn
