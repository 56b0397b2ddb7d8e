#pragma once
// The device's own ceilings, measured in the same run as the rows (workloads.md, "Reference
// points"): copy-shader and vkCmdCopyBuffer bandwidth, the marginal cost of an empty dispatch
// and the cost of submit + wait.
#include <nlohmann/json.hpp>

#include "vkrnn/vkrnn.hpp"

namespace vkrnn::bench {

struct CeilingOptions {
  int warmup = 2;
  int repetitions = 20;
};

// The copy shader alone: the best GB/s (read + write) over its configurations, and which.
struct CopyCeiling {
  double gbps = 0.0;
  nlohmann::ordered_json config;
};
CopyCeiling measure_copy_shader(Context& ctx, const CeilingOptions& options);

// The "ceilings" object of bench/schema.json. copy_shader_gbps is the best of a few workgroup
// shapes (the chosen one is in "copy_shader_config").
nlohmann::ordered_json measure_ceilings(Context& ctx, const CeilingOptions& options);

}  // namespace vkrnn::bench
