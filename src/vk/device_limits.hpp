#pragma once
// ContextOptions::limits (test-only): the smaller device a context makes vkrnn believe in.
#include "vkrnn/context.hpp"
#include "vkrnn/device.hpp"

namespace vkrnn::vk {

// Lowers `info` and `features` to `limits` (never raises them).
void apply_limits(const DeviceLimits& limits, DeviceInfo& info, EnabledFeatures& features);

}  // namespace vkrnn::vk
