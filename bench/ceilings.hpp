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

// A bandwidth shader alone: the best GB/s over its configurations, and which.
struct CopyCeiling {
  double gbps = 0.0;
  nlohmann::ordered_json config;
};
// The copy shader (bench_copy.comp): read + write GB/s.
CopyCeiling measure_copy_shader(Context& ctx, const CeilingOptions& options);
// The read shader (bench_read.comp, one vec4 sum written per 16 or 64 read): GB/s read, the
// bound of the kernels that mostly read (a GEMV's weights, attention's keys and values).
CopyCeiling measure_read_shader(Context& ctx, const CeilingOptions& options);

// The copy shader in one configuration (a CopyCeiling's), measured again and again during a
// run: between rows, so each row's fractions can use the copy bandwidth of the moment it ran
// (a shared VM's memory bandwidth, a laptop GPU's clocks, drift within minutes). Owns its two
// 64 MiB tensors.
// The copy shader's 64 MiB source and destination, and the 16-byte tensor bound to the texel
// binding where storage loads run.
struct CopyTensors {
  Tensor src, dst, texel_dummy;
  std::uint32_t vec4s = 0;
};

class CopyProbe {
 public:
  CopyProbe(Context& ctx, const nlohmann::ordered_json& config);
  double gbps(int warmup, int repetitions);  // read + write GB/s, on the config's time basis

 private:
  Context* ctx_;
  CopyTensors tensors_;
  Kernel kernel_;
  std::uint32_t per_group_ = 1;
  bool texel_ = false, gpu_time_ = false;
};

// The "ceilings" object of bench/schema.json. copy_shader_gbps and read_shader_gbps are each the
// best of a few workgroup shapes (the chosen ones are in "copy_shader_config" and
// "read_shader_config").
nlohmann::ordered_json measure_ceilings(Context& ctx, const CeilingOptions& options);

}  // namespace vkrnn::bench
