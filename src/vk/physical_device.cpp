#include "vk/physical_device.hpp"

#include <algorithm>
#include <charconv>
#include <cctype>
#include <cstdlib>
#include <cstring>
#include <thread>

#include <fmt/format.h>

#include "vk/check.hpp"

namespace vkrnn {

const char* to_string(Vendor vendor) noexcept {
  switch (vendor) {
    case Vendor::amd: return "AMD";
    case Vendor::nvidia: return "NVIDIA";
    case Vendor::intel: return "Intel";
    case Vendor::arm: return "Arm";
    case Vendor::qualcomm: return "Qualcomm";
    case Vendor::apple: return "Apple";
    case Vendor::imagination: return "Imagination";
    case Vendor::mesa: return "Mesa (software)";
    case Vendor::other: return "other";
  }
  return "other";
}

const char* to_string(DeviceType type) noexcept {
  switch (type) {
    case DeviceType::discrete: return "discrete GPU";
    case DeviceType::integrated: return "integrated GPU";
    case DeviceType::virtual_gpu: return "virtual GPU";
    case DeviceType::cpu: return "CPU";
    case DeviceType::other: return "other";
  }
  return "other";
}

Vendor vendor_from_id(std::uint32_t id) noexcept {
  switch (id) {
    case 0x1002: return Vendor::amd;
    case 0x10DE: return Vendor::nvidia;
    case 0x8086: return Vendor::intel;
    case 0x13B5: return Vendor::arm;
    case 0x5143: return Vendor::qualcomm;
    case 0x106B: return Vendor::apple;
    case 0x1010: return Vendor::imagination;
    case 0x10005: return Vendor::mesa;  // VK_VENDOR_ID_MESA: lavapipe and other software devices
    default: return Vendor::other;
  }
}

int device_type_rank(DeviceType type) noexcept {
  switch (type) {
    case DeviceType::discrete: return 4;
    case DeviceType::integrated: return 3;
    case DeviceType::virtual_gpu: return 2;
    case DeviceType::cpu: return 1;
    case DeviceType::other: return 0;
  }
  return 0;
}

namespace {

DeviceType device_type(VkPhysicalDeviceType t) {
  switch (t) {
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: return DeviceType::discrete;
    case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: return DeviceType::integrated;
    case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: return DeviceType::virtual_gpu;
    case VK_PHYSICAL_DEVICE_TYPE_CPU: return DeviceType::cpu;
    default: return DeviceType::other;
  }
}

// Vendors encode driverVersion their own way; decode as vulkaninfo does.
std::string decode_driver_version(std::uint32_t vendor_id, std::uint32_t v) {
  if (vendor_id == 0x10DE) {
    return fmt::format("{}.{}.{}.{}", (v >> 22) & 0x3ff, (v >> 14) & 0xff, (v >> 6) & 0xff, v & 0x3f);
  }
#ifdef _WIN32
  if (vendor_id == 0x8086) return fmt::format("{}.{}", v >> 14, v & 0x3fff);
#endif
  return fmt::format("{}.{}.{}", VK_API_VERSION_MAJOR(v), VK_API_VERSION_MINOR(v),
                     VK_API_VERSION_PATCH(v));
}

// The threads a CPU driver runs workgroups on: llvmpipe's LP_NUM_THREADS when set (0: the
// calling thread alone), else one per hardware thread, as llvmpipe starts by default.
std::uint32_t cpu_driver_threads() {
  if (const char* n = std::getenv("LP_NUM_THREADS"); n && *n) {
    unsigned v = 0;
    const auto [end, ec] = std::from_chars(n, n + std::strlen(n), v);
    if (ec == std::errc{} && *end == '\0') return std::max(1u, v);
  }
  return std::max(1u, std::thread::hardware_concurrency());
}

bool has_ext(const std::vector<VkExtensionProperties>& list, const char* name) {
  return std::any_of(list.begin(), list.end(),
                     [&](const VkExtensionProperties& e) { return std::strcmp(e.extensionName, name) == 0; });
}

}  // namespace

namespace vk {

std::uint32_t pick_compute_queue_family(const Instance& instance, VkPhysicalDevice handle,
                                        bool* compute_only) {
  const auto& f = instance.fns();
  std::uint32_t n = 0;
  f.vkGetPhysicalDeviceQueueFamilyProperties(handle, &n, nullptr);
  std::vector<VkQueueFamilyProperties> families(n);
  f.vkGetPhysicalDeviceQueueFamilyProperties(handle, &n, families.data());
  std::uint32_t universal = UINT32_MAX;
  for (std::uint32_t i = 0; i < n; ++i) {
    const auto flags = families[i].queueFlags;
    if (!(flags & VK_QUEUE_COMPUTE_BIT) || families[i].queueCount == 0) continue;
    if (!(flags & VK_QUEUE_GRAPHICS_BIT)) {
      if (compute_only) *compute_only = true;
      return i;
    }
    if (universal == UINT32_MAX) universal = i;
  }
  if (compute_only) *compute_only = false;
  return universal;
}

PhysicalDevice query_physical_device(const Instance& instance, VkPhysicalDevice handle,
                                     std::uint32_t index) {
  const auto& f = instance.fns();
  PhysicalDevice pd;
  pd.handle = handle;
  DeviceInfo& d = pd.info;
  d.index = index;

  VkPhysicalDeviceProperties base{};
  f.vkGetPhysicalDeviceProperties(handle, &base);
  const std::uint32_t api = std::min(base.apiVersion, instance.api_version());

  std::uint32_t en = 0;
  f.vkEnumerateDeviceExtensionProperties(handle, nullptr, &en, nullptr);
  std::vector<VkExtensionProperties> exts(en);
  f.vkEnumerateDeviceExtensionProperties(handle, nullptr, &en, exts.data());
  auto& s = pd.support;
  s.ext_subgroup_size_control = has_ext(exts, VK_EXT_SUBGROUP_SIZE_CONTROL_EXTENSION_NAME);
  s.ext_float16_int8 = has_ext(exts, VK_KHR_SHADER_FLOAT16_INT8_EXTENSION_NAME);
  s.ext_driver_properties = has_ext(exts, VK_KHR_DRIVER_PROPERTIES_EXTENSION_NAME);
  s.portability_subset = has_ext(exts, "VK_KHR_portability_subset");
  s.ext_timeline_semaphore = has_ext(exts, VK_KHR_TIMELINE_SEMAPHORE_EXTENSION_NAME);
  s.ext_memory_budget = has_ext(exts, VK_EXT_MEMORY_BUDGET_EXTENSION_NAME);
  const bool has_timeline = api >= VK_API_VERSION_1_2 || s.ext_timeline_semaphore;
  const bool has_driver_props = api >= VK_API_VERSION_1_2 || s.ext_driver_properties;
  const bool has_size_control = api >= VK_API_VERSION_1_3 || s.ext_subgroup_size_control;
  const bool has_float16 = api >= VK_API_VERSION_1_2 || s.ext_float16_int8;

  // Properties: chain only structs the device knows, or validation complains.
  VkPhysicalDeviceProperties2 props{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2};
  VkPhysicalDeviceSubgroupProperties subgroup{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES};
  VkPhysicalDeviceMaintenance3Properties maint3{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MAINTENANCE_3_PROPERTIES};
  VkPhysicalDeviceDriverProperties driver{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_DRIVER_PROPERTIES};
  VkPhysicalDeviceSubgroupSizeControlProperties size_control{
      VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_SIZE_CONTROL_PROPERTIES};
  props.pNext = &subgroup;
  subgroup.pNext = &maint3;
  void** tail = &maint3.pNext;
  if (has_driver_props) {
    *tail = &driver;
    tail = &driver.pNext;
  }
  if (has_size_control) {
    *tail = &size_control;
    tail = &size_control.pNext;
  }
  f.vkGetPhysicalDeviceProperties2(handle, &props);

  VkPhysicalDeviceFeatures2 features{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2};
  VkPhysicalDevice16BitStorageFeatures storage16{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_16BIT_STORAGE_FEATURES};
  VkPhysicalDeviceShaderFloat16Int8Features float16{
      VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_FLOAT16_INT8_FEATURES};
  VkPhysicalDeviceSubgroupSizeControlFeatures size_control_features{
      VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_SIZE_CONTROL_FEATURES};
  features.pNext = &storage16;
  tail = &storage16.pNext;
  if (has_float16) {
    *tail = &float16;
    tail = &float16.pNext;
  }
  if (has_size_control) {
    *tail = &size_control_features;
    tail = &size_control_features.pNext;
  }
  VkPhysicalDeviceTimelineSemaphoreFeatures timeline{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_TIMELINE_SEMAPHORE_FEATURES};
  if (has_timeline) {
    *tail = &timeline;
    tail = &timeline.pNext;
  }
  f.vkGetPhysicalDeviceFeatures2(handle, &features);

  d.name = base.deviceName;
  d.vendor_id = base.vendorID;
  d.device_id = base.deviceID;
  d.vendor = vendor_from_id(base.vendorID);
  d.type = device_type(base.deviceType);
  if (has_driver_props) {
    d.driver_name = driver.driverName;
    d.driver_info = driver.driverInfo;
  }
  d.driver_version = base.driverVersion;
  d.driver_version_string = decode_driver_version(base.vendorID, base.driverVersion);
  d.api_version = base.apiVersion;
  std::memcpy(d.pipeline_cache_uuid.data(), base.pipelineCacheUUID, VK_UUID_SIZE);

  d.subgroup_size = subgroup.subgroupSize;
  d.min_subgroup_size = subgroup.subgroupSize;
  d.max_subgroup_size = subgroup.subgroupSize;
  if (has_size_control && size_control_features.subgroupSizeControl &&
      (size_control.requiredSubgroupSizeStages & VK_SHADER_STAGE_COMPUTE_BIT)) {
    d.min_subgroup_size = size_control.minSubgroupSize;
    d.max_subgroup_size = size_control.maxSubgroupSize;
  }
  d.subgroup_in_compute = (subgroup.supportedStages & VK_SHADER_STAGE_COMPUTE_BIT) != 0;
  d.subgroup_operations = subgroup.supportedOperations;
  static const std::pair<VkSubgroupFeatureFlagBits, const char*> ops[] = {
      {VK_SUBGROUP_FEATURE_BASIC_BIT, "basic"},
      {VK_SUBGROUP_FEATURE_VOTE_BIT, "vote"},
      {VK_SUBGROUP_FEATURE_ARITHMETIC_BIT, "arithmetic"},
      {VK_SUBGROUP_FEATURE_BALLOT_BIT, "ballot"},
      {VK_SUBGROUP_FEATURE_SHUFFLE_BIT, "shuffle"},
      {VK_SUBGROUP_FEATURE_SHUFFLE_RELATIVE_BIT, "shuffle_relative"},
      {VK_SUBGROUP_FEATURE_CLUSTERED_BIT, "clustered"},
      {VK_SUBGROUP_FEATURE_QUAD_BIT, "quad"}};
  for (const auto& [bit, name] : ops) {
    if (subgroup.supportedOperations & bit) d.subgroup_operation_names.emplace_back(name);
  }
  d.subgroup_arithmetic = d.subgroup_in_compute &&
                          (subgroup.supportedOperations & VK_SUBGROUP_FEATURE_ARITHMETIC_BIT) &&
                          (subgroup.supportedOperations & VK_SUBGROUP_FEATURE_BASIC_BIT);

  const auto& lim = base.limits;
  for (int i = 0; i < 3; ++i) {
    d.max_workgroup_size[i] = lim.maxComputeWorkGroupSize[i];
    d.max_workgroup_count[i] = lim.maxComputeWorkGroupCount[i];
  }
  d.max_workgroup_invocations = lim.maxComputeWorkGroupInvocations;
  d.max_shared_memory = lim.maxComputeSharedMemorySize;
  d.max_push_constants = lim.maxPushConstantsSize;
  d.max_storage_buffer_range = lim.maxStorageBufferRange;
  d.max_memory_allocation_size = maint3.maxMemoryAllocationSize;
  d.max_memory_allocation_count = lim.maxMemoryAllocationCount;
  d.non_coherent_atom_size = lim.nonCoherentAtomSize;
  d.min_storage_buffer_offset_alignment = lim.minStorageBufferOffsetAlignment;
  d.max_bound_descriptor_sets = lim.maxBoundDescriptorSets;
  d.max_storage_buffers_per_stage = lim.maxPerStageDescriptorStorageBuffers;
  d.max_texel_buffer_elements = lim.maxTexelBufferElements;
  if (d.type == DeviceType::cpu) d.cpu_threads = cpu_driver_threads();
  {
    VkFormatProperties fp{};
    f.vkGetPhysicalDeviceFormatProperties(handle, VK_FORMAT_R32G32B32A32_UINT, &fp);
    d.uniform_texel_u32x4 = (fp.bufferFeatures & VK_FORMAT_FEATURE_UNIFORM_TEXEL_BUFFER_BIT) != 0;
  }

  s.storage_buffer_16bit = storage16.storageBuffer16BitAccess;
  s.shader_float16 = has_float16 && float16.shaderFloat16;
  s.subgroup_size_control = has_size_control && size_control_features.subgroupSizeControl;
  s.compute_full_subgroups = has_size_control && size_control_features.computeFullSubgroups;
  s.timeline_semaphore = has_timeline && timeline.timelineSemaphore;
  d.storage_16bit = s.storage_buffer_16bit;
  d.shader_float16 = s.shader_float16;

  VkPhysicalDeviceMemoryProperties mem{};
  f.vkGetPhysicalDeviceMemoryProperties(handle, &mem);
  bool any_device_local = false;
  bool all_device_local_visible = true;
  for (std::uint32_t i = 0; i < mem.memoryHeapCount; ++i) {
    d.memory_heaps.push_back({mem.memoryHeaps[i].size,
                              (mem.memoryHeaps[i].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT) != 0});
  }
  for (std::uint32_t i = 0; i < mem.memoryTypeCount; ++i) {
    const auto fl = mem.memoryTypes[i].propertyFlags;
    MemoryTypeInfo t;
    t.heap = mem.memoryTypes[i].heapIndex;
    t.device_local = fl & VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT;
    t.host_visible = fl & VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT;
    t.host_coherent = fl & VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
    t.host_cached = fl & VK_MEMORY_PROPERTY_HOST_CACHED_BIT;
    d.memory_types.push_back(t);
  }
  // UMA: every device-local heap is reachable through a host-visible device-local type, so
  // tensors can live there and be written by the CPU directly. (A discrete GPU's small BAR
  // window does not count: its heap is mostly not host-visible.)
  for (std::uint32_t h = 0; h < mem.memoryHeapCount; ++h) {
    if (!(mem.memoryHeaps[h].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT)) continue;
    any_device_local = true;
    bool visible = false;
    for (const auto& t : d.memory_types) visible |= t.heap == h && t.device_local && t.host_visible;
    all_device_local_visible &= visible;
  }
  d.unified_memory = any_device_local && all_device_local_visible &&
                     d.type != DeviceType::discrete;

  bool compute_only = false;
  d.compute_queue_family = pick_compute_queue_family(instance, handle, &compute_only);
  d.has_compute_only_queue = compute_only;
  if (d.compute_queue_family != UINT32_MAX) {
    std::uint32_t n = 0;
    f.vkGetPhysicalDeviceQueueFamilyProperties(handle, &n, nullptr);
    std::vector<VkQueueFamilyProperties> families(n);
    f.vkGetPhysicalDeviceQueueFamilyProperties(handle, &n, families.data());
    d.timestamp_valid_bits = families[d.compute_queue_family].timestampValidBits;
    d.timestamps = d.timestamp_valid_bits > 0 && lim.timestampPeriod > 0.0f;
  }
  d.timestamp_period_ns = lim.timestampPeriod;
  return pd;
}

std::vector<PhysicalDevice> enumerate_physical_devices(const Instance& instance) {
  std::uint32_t n = 0;
  const VkResult r = instance.fns().vkEnumeratePhysicalDevices(instance.handle(), &n, nullptr);
  if (r == VK_ERROR_INITIALIZATION_FAILED || n == 0) {
    throw Error(ErrorCode::no_device,
                "no Vulkan device found: install a Vulkan driver for your GPU, or "
                "mesa-vulkan-drivers for lavapipe, Mesa's CPU device (check with vulkaninfo "
                "--summary)");
  }
  check(r, "vkEnumeratePhysicalDevices", "");
  std::vector<VkPhysicalDevice> handles(n);
  check(instance.fns().vkEnumeratePhysicalDevices(instance.handle(), &n, handles.data()),
        "vkEnumeratePhysicalDevices", "");
  std::vector<PhysicalDevice> out;
  for (std::uint32_t i = 0; i < n; ++i) out.push_back(query_physical_device(instance, handles[i], i));
  return out;
}

}  // namespace vk

std::vector<DeviceInfo> list_devices() {
  auto instance = vk::Instance::create(false, {});
  std::vector<DeviceInfo> out;
  for (auto& pd : vk::enumerate_physical_devices(*instance)) out.push_back(std::move(pd.info));
  return out;
}

std::uint32_t select_device(const std::vector<DeviceInfo>& devices, const std::string& selector) {
  auto listing = [&] {
    std::string s;
    for (const auto& d : devices) s += fmt::format("\n  [{}] {} ({})", d.index, d.name, to_string(d.type));
    return s;
  };
  if (devices.empty()) {
    throw Error(ErrorCode::no_device,
                "no Vulkan device found: install a Vulkan driver, or mesa-vulkan-drivers for a CPU device");
  }
  auto usable = [](const DeviceInfo& d) {
    return d.api_version >= VK_API_VERSION_1_1 && d.compute_queue_family != UINT32_MAX;
  };
  if (selector.empty()) {
    const DeviceInfo* best = nullptr;
    for (const auto& d : devices) {
      if (!usable(d)) continue;
      if (!best || device_type_rank(d.type) > device_type_rank(best->type)) best = &d;
    }
    if (!best) {
      throw Error(ErrorCode::no_device,
                  "no Vulkan device supports Vulkan 1.1 compute, which vkrnn needs; found:" + listing());
    }
    return best->index;
  }
  const bool numeric = std::all_of(selector.begin(), selector.end(),
                                   [](unsigned char c) { return std::isdigit(c); });
  const DeviceInfo* match = nullptr;
  if (numeric) {
    // from_chars, not stoul: a selector of 30 digits (VKRNN_DEVICE is untrusted) is simply no
    // device, not a std::out_of_range.
    std::uint64_t idx = 0;
    const auto [end, ec] = std::from_chars(selector.data(), selector.data() + selector.size(), idx);
    if (ec == std::errc() && end == selector.data() + selector.size())
      for (const auto& d : devices) if (d.index == idx) match = &d;
    if (!match) {
      throw Error(ErrorCode::no_device,
                  fmt::format("device index {} does not exist (VKRNN_DEVICE or ContextOptions::device); "
                              "there are {} device(s):{}",
                              selector, devices.size(), listing()));
    }
  } else {
    auto lower = [](std::string s) {
      for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      return s;
    };
    const std::string needle = lower(selector);
    for (const auto& d : devices) {
      if (lower(d.name).find(needle) != std::string::npos) {
        match = &d;
        break;
      }
    }
    if (!match) {
      throw Error(ErrorCode::no_device,
                  fmt::format("no device name contains '{}' (VKRNN_DEVICE or ContextOptions::device); "
                              "available:{}",
                              selector, listing()));
    }
  }
  if (!usable(*match)) {
    throw Error(ErrorCode::no_device,
                fmt::format("device '{}' does not support Vulkan 1.1 compute, which vkrnn needs", match->name));
  }
  return match->index;
}

}  // namespace vkrnn
