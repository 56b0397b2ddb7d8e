#include "vk/check.hpp"

#include <fmt/format.h>

#include "vkrnn/error.hpp"

namespace vkrnn {

const char* to_string(ErrorCode code) noexcept {
  switch (code) {
    case ErrorCode::vulkan: return "vulkan";
    case ErrorCode::no_loader: return "no_loader";
    case ErrorCode::no_device: return "no_device";
    case ErrorCode::missing_feature: return "missing_feature";
    case ErrorCode::out_of_range: return "out_of_range";
    case ErrorCode::invalid_argument: return "invalid_argument";
    case ErrorCode::not_found: return "not_found";
    case ErrorCode::format: return "format";
    case ErrorCode::io: return "io";
    case ErrorCode::state: return "state";
    case ErrorCode::non_finite: return "non_finite";
  }
  return "unknown";
}

namespace vk {

const char* result_name(VkResult result) noexcept {
  switch (result) {
#define VKRNN_CASE(r) case r: return #r;
    VKRNN_CASE(VK_SUCCESS)
    VKRNN_CASE(VK_NOT_READY)
    VKRNN_CASE(VK_TIMEOUT)
    VKRNN_CASE(VK_EVENT_SET)
    VKRNN_CASE(VK_EVENT_RESET)
    VKRNN_CASE(VK_INCOMPLETE)
    VKRNN_CASE(VK_ERROR_OUT_OF_HOST_MEMORY)
    VKRNN_CASE(VK_ERROR_OUT_OF_DEVICE_MEMORY)
    VKRNN_CASE(VK_ERROR_INITIALIZATION_FAILED)
    VKRNN_CASE(VK_ERROR_DEVICE_LOST)
    VKRNN_CASE(VK_ERROR_MEMORY_MAP_FAILED)
    VKRNN_CASE(VK_ERROR_LAYER_NOT_PRESENT)
    VKRNN_CASE(VK_ERROR_EXTENSION_NOT_PRESENT)
    VKRNN_CASE(VK_ERROR_FEATURE_NOT_PRESENT)
    VKRNN_CASE(VK_ERROR_INCOMPATIBLE_DRIVER)
    VKRNN_CASE(VK_ERROR_TOO_MANY_OBJECTS)
    VKRNN_CASE(VK_ERROR_FORMAT_NOT_SUPPORTED)
    VKRNN_CASE(VK_ERROR_FRAGMENTED_POOL)
    VKRNN_CASE(VK_ERROR_UNKNOWN)
    VKRNN_CASE(VK_ERROR_OUT_OF_POOL_MEMORY)
    VKRNN_CASE(VK_ERROR_INVALID_EXTERNAL_HANDLE)
    VKRNN_CASE(VK_ERROR_FRAGMENTATION)
    VKRNN_CASE(VK_ERROR_INVALID_OPAQUE_CAPTURE_ADDRESS)
    VKRNN_CASE(VK_PIPELINE_COMPILE_REQUIRED)
    VKRNN_CASE(VK_ERROR_VALIDATION_FAILED_EXT)
#undef VKRNN_CASE
    default: return "VK_RESULT_UNKNOWN";
  }
}

void check(VkResult result, std::string_view call, std::string_view device) {
  if (result >= 0) return;
  std::string msg = device.empty()
                        ? fmt::format("{} failed: {}", call, result_name(result))
                        : fmt::format("{} failed: {} on '{}'", call, result_name(result), device);
  if (result == VK_ERROR_INCOMPATIBLE_DRIVER) {
    msg += " (no Vulkan driver was found: install one; for a CPU device install mesa-vulkan-drivers)";
  }
  throw Error(ErrorCode::vulkan, msg, static_cast<std::int32_t>(result));
}

}  // namespace vk
}  // namespace vkrnn
