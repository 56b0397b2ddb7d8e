#pragma once
// vkrnn::Error: the one exception type the library throws. Its message always says what
// failed and where (the Vulkan call, the VkResult name, the device, the file or tensor).
#include <cstdint>
#include <stdexcept>
#include <string>

#include "vkrnn/export.h"

namespace vkrnn {

enum class ErrorCode {
  vulkan,            // a Vulkan call returned an error VkResult
  no_loader,         // libvulkan (the Vulkan loader) could not be loaded, or is too old
  no_device,         // no Vulkan driver or device, or none matched the selection
  missing_feature,   // the device (or an adopted VkDevice) lacks a feature vkrnn needs
  out_of_range,      // a size or index beyond a device limit or a tensor's extent; host memory exhausted
  invalid_argument,  // wrong shapes, dtypes, lengths, token ids ...
  not_found,         // a shader, tensor or file that does not exist
  format,            // a malformed file (safetensors header, model config ...)
  io,                // the filesystem refused
  state,             // an object used in the wrong state (e.g. reading before wait())
  non_finite,        // NaN or infinity where a result must be finite (a model's logits)
};

VKRNN_API const char* to_string(ErrorCode code) noexcept;

class VKRNN_API Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message, std::int32_t vk_result = 0)
      : std::runtime_error(message), code_(code), vk_result_(vk_result) {}

  ErrorCode code() const noexcept { return code_; }
  // The VkResult value for ErrorCode::vulkan, 0 otherwise.
  std::int32_t vk_result() const noexcept { return vk_result_; }

 private:
  ErrorCode code_;
  std::int32_t vk_result_;
};

}  // namespace vkrnn
