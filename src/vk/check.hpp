#pragma once
#include <string>
#include <string_view>

#include <vulkan/vulkan.h>

namespace vkrnn::vk {

const char* result_name(VkResult result) noexcept;

// Throws Error(vulkan) "<call> failed: <VkResult name> on '<device>'" unless result is
// VK_SUCCESS (or another non-error code).
void check(VkResult result, std::string_view call, std::string_view device);

}  // namespace vkrnn::vk
