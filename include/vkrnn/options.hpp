#pragma once
// Per-op precision and tuning flags (ncnn style): carried by each op, never global.
#include <cstdint>

namespace vkrnn {

struct OpOptions {
  // Store keys, values and weights as float16 (fp32 arithmetic). Needs storageBuffer16BitAccess;
  // ops throw Error(missing_feature) when the device or the adopted VkDevice lacks it.
  bool fp16_storage = false;
  // Use the shared-memory tree for reductions even where subgroup arithmetic exists (tests use
  // this to cover the path taken by devices without subgroup support).
  bool force_shared_memory_reduction = false;
  // 0 = chosen from the device's limits. Otherwise the op uses these (clamped to the limits).
  std::uint32_t workgroup_size = 0;
  std::uint32_t tile = 0;
};

}  // namespace vkrnn
