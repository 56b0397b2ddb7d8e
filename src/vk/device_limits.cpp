#include "vk/device_limits.hpp"

#include <algorithm>

namespace vkrnn::vk {

void apply_limits(const DeviceLimits& limits, DeviceInfo& info, EnabledFeatures& features) {
  auto lower = [](std::uint32_t& value, std::uint32_t limit) {
    if (limit != 0) value = std::min(value, limit);
  };
  lower(info.max_shared_memory, limits.max_shared_memory);
  lower(info.max_workgroup_invocations, limits.max_workgroup_invocations);
  for (auto& size : info.max_workgroup_size) lower(size, info.max_workgroup_invocations);
  lower(info.max_storage_buffers_per_stage, limits.max_storage_buffers_per_stage);
  lower(info.max_texel_buffer_elements, limits.max_texel_buffer_elements);
  if (limits.no_subgroup_operations) {
    info.subgroup_operations &= VK_SUBGROUP_FEATURE_BASIC_BIT;
    info.subgroup_operation_names = {"basic"};
    info.subgroup_arithmetic = false;
  }
  if (limits.no_storage_16bit) {
    info.storage_16bit = false;
    features.storage_buffer_16bit = false;
  }
  if (limits.gpu && info.type == DeviceType::cpu) info.type = DeviceType::integrated;
}

}  // namespace vkrnn::vk
