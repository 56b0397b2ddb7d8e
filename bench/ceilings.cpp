#include "ceilings.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <vector>

#include <fmt/format.h>

#include "timing.hpp"
#include "workload.hpp"

namespace vkrnn::bench {

namespace {

constexpr std::uint64_t kCopyBytes = 64ull << 20;  // 64 MiB source (+ 64 MiB written)

struct CopyPush {
  std::uint32_t n;
};

// Folds `total` workgroups into x * y with x within the device limit, wasting fewer than y.
Groups fold(std::uint64_t total, const DeviceInfo& dev) {
  const std::uint64_t max_x = std::max<std::uint32_t>(1, dev.max_workgroup_count[0]);
  const std::uint64_t y = (total + max_x - 1) / max_x;
  const std::uint64_t x = (total + y - 1) / y;
  return {static_cast<std::uint32_t>(x), static_cast<std::uint32_t>(y), 1};
}

// Workgroup sizes worth trying: the subgroup size (what lavapipe likes), 64 and 256 (what GPUs
// like), within the device's limits.
std::vector<std::uint32_t> workgroup_sizes(const DeviceInfo& dev) {
  const std::uint32_t limit = std::min(dev.max_workgroup_invocations, dev.max_workgroup_size[0]);
  std::vector<std::uint32_t> sizes;
  for (std::uint32_t s : {std::max<std::uint32_t>(dev.subgroup_size, 1), 64u, 256u}) {
    s = std::min(s, limit);
    if (std::find(sizes.begin(), sizes.end(), s) == sizes.end()) sizes.push_back(s);
  }
  return sizes;
}

CopyTensors copy_tensors(Context& ctx) {
  const std::size_t floats = kCopyBytes / sizeof(float);
  return {ctx.tensor({floats}, random_floats(floats, 7), "bench_copy.src"),
          ctx.tensor({floats}, DType::f32, "bench_copy.dst"),
          // A 16-byte tensor on the texel binding where the storage loads run: any device can view it.
          ctx.tensor({4}, DType::f32, "bench_copy.texel_dummy"),
          static_cast<std::uint32_t>(floats / 4)};
}

Kernel copy_kernel(Context& ctx, std::uint32_t wg, std::uint32_t per, bool texel) {
  return ctx.kernel({"bench_copy", {wg, 1, 1, per, texel ? 1u : 0u}, 3, sizeof(CopyPush)});
}

// One configuration's read + write GB/s (median), the copy checked: a broken shader cannot
// pass as a fast one.
double time_copy(Context& ctx, const CopyTensors& t, const Kernel& k, std::uint32_t per_group,
                 bool texel, const TimingOptions& timing, const std::string& what) {
  const Groups groups = fold((t.vec4s + per_group - 1) / per_group, ctx.device());
  ctx.sequence().fill(t.dst, 0).eval();
  const Samples s = run_timed(ctx, [&](Sequence& seq) {
    seq.dispatch(k, {in(t.src), out(t.dst), in(texel ? t.src : t.texel_dummy)}, CopyPush{t.vec4s}, groups);
  }, timing);
  if (ctx.read<float>(t.src) != ctx.read<float>(t.dst)) {
    throw Error(ErrorCode::state, fmt::format("vkrnn-bench: bench_copy ({}) produced a wrong copy", what));
  }
  const double us = median(timing.profile ? s.gpu_us : s.wall_us);
  return 2.0 * double(kCopyBytes) / (us * 1e3);  // read + write bytes
}

std::string describe(std::uint32_t wg, std::uint32_t per, bool texel) {
  return fmt::format("workgroup {}, {} vec4s, {}", wg, per, texel ? "texel" : "storage");
}

// The best of a bandwidth shader's configurations: workgroup sizes x vec4s per invocation x
// storage or texel reads (where the device can view the 64 MiB source as texels).
template <class TimeOne>
CopyCeiling best_configuration(Context& ctx, std::initializer_list<std::uint32_t> per_invocation,
                               TimeOne time_one) {
  const DeviceInfo& dev = ctx.device();
  const bool texel_possible =
      dev.uniform_texel_u32x4 && kCopyBytes / 16 <= dev.max_texel_buffer_elements;
  CopyCeiling best;
  for (bool texel : {false, true}) {
    if (texel && !texel_possible) continue;
    for (std::uint32_t wg : workgroup_sizes(dev)) {
      for (std::uint32_t per : per_invocation) {
        const double gbps = time_one(wg, per, texel);
        if (gbps > best.gbps) {
          best.gbps = gbps;
          best.config = {{"workgroup_size", wg}, {"vec4_per_invocation", per},
                         {"basis", dev.timestamps ? "gpu" : "wall"}, {"reads", texel ? "texel" : "storage"}};
        }
      }
    }
  }
  return best;
}

// bench_read: src summed PER vec4s an invocation; GB/s read (the sums written, 1 / PER of it,
// not counted), the sums checked against the host's from `src`, t.src read back once.
double time_read(Context& ctx, const CopyTensors& t, const std::vector<float>& src, std::uint32_t wg,
                 std::uint32_t per, bool texel, const TimingOptions& timing) {
  const Kernel k = ctx.kernel({"bench_read", {wg, 1, 1, per, texel ? 1u : 0u}, 3, sizeof(CopyPush)});
  const std::uint64_t per_group = std::uint64_t(wg) * per;
  const Groups groups = fold((t.vec4s + per_group - 1) / per_group, ctx.device());
  // One vec4 per invocation of every workgroup launched (folding may launch a few past the end).
  const std::uint64_t sums_vec4s = std::uint64_t(groups[0]) * groups[1] * wg;
  Tensor sums = ctx.tensor({sums_vec4s * 4}, DType::f32, "bench_read.sums");
  const Samples s = run_timed(ctx, [&](Sequence& seq) {
    seq.dispatch(k, {in(t.src), out(sums), in(texel ? t.src : t.texel_dummy)}, CopyPush{t.vec4s}, groups);
  }, timing);
  const std::vector<float> got = ctx.read<float>(sums);
  for (std::uint64_t inv = 0; inv < sums_vec4s; ++inv) {
    const std::uint64_t group = inv / wg, lane = inv % wg;
    for (int c = 0; c < 4; ++c) {
      double want = 0.0, magnitude = 0.0;
      for (std::uint32_t j = 0; j < per; ++j) {
        const std::uint64_t i = group * per_group + lane + std::uint64_t(j) * wg;
        if (i >= t.vec4s) break;
        want += src[i * 4 + c];
        magnitude += std::abs(src[i * 4 + c]);
      }
      if (std::abs(got[inv * 4 + c] - want) > 1e-5 * magnitude + 1e-30) {
        throw Error(ErrorCode::state, fmt::format("vkrnn-bench: bench_read ({}) summed wrong: invocation {} "
                                                  "component {} is {}, not {}",
                                                  describe(wg, per, texel), inv, c, got[inv * 4 + c], want));
      }
    }
  }
  return double(kCopyBytes) / (median(timing.profile ? s.gpu_us : s.wall_us) * 1e3);
}

}  // namespace

CopyCeiling measure_copy_shader(Context& ctx, const CeilingOptions& options) {
  const TimingOptions timing{options.warmup, options.repetitions, ctx.device().timestamps, "ceiling"};
  const CopyTensors t = copy_tensors(ctx);
  return best_configuration(ctx, {1u, 4u}, [&](std::uint32_t wg, std::uint32_t per, bool texel) {
    return time_copy(ctx, t, copy_kernel(ctx, wg, per, texel), wg * per, texel, timing, describe(wg, per, texel));
  });
}

CopyCeiling measure_read_shader(Context& ctx, const CeilingOptions& options) {
  const TimingOptions timing{options.warmup, options.repetitions, ctx.device().timestamps, "ceiling"};
  const CopyTensors t = copy_tensors(ctx);
  const std::vector<float> src = ctx.read<float>(t.src);
  return best_configuration(ctx, {16u, 64u}, [&](std::uint32_t wg, std::uint32_t per, bool texel) {
    return time_read(ctx, t, src, wg, per, texel, timing);
  });
}

CopyProbe::CopyProbe(Context& ctx, const nlohmann::ordered_json& config)
    : ctx_(&ctx), tensors_(copy_tensors(ctx)) {
  const auto wg = config.at("workgroup_size").get<std::uint32_t>();
  const auto per = config.at("vec4_per_invocation").get<std::uint32_t>();
  texel_ = config.value("reads", "storage") == "texel";
  gpu_time_ = config.value("basis", "wall") == "gpu";
  per_group_ = wg * per;
  kernel_ = copy_kernel(ctx, wg, per, texel_);
}

double CopyProbe::gbps(int warmup, int repetitions) {
  const TimingOptions timing{warmup, repetitions, gpu_time_, "copy probe"};
  return time_copy(*ctx_, tensors_, kernel_, per_group_, texel_, timing, "the copy probe");
}

nlohmann::ordered_json measure_ceilings(Context& ctx, const CeilingOptions& options) {
  const DeviceInfo& dev = ctx.device();
  TimingOptions timing{options.warmup, options.repetitions, dev.timestamps, "ceiling"};
  nlohmann::ordered_json result;
  const CopyCeiling copy = measure_copy_shader(ctx, options);
  result["copy_shader_gbps"] = copy.gbps;
  const CopyCeiling read = measure_read_shader(ctx, options);
  result["read_shader_gbps"] = read.gbps;
  const std::size_t floats = kCopyBytes / sizeof(float);
  Tensor src = ctx.tensor({floats}, DType::f32, "bench_copy_buffer.src");
  Tensor dst = ctx.tensor({floats}, DType::f32, "bench_copy_buffer.dst");

  // --- vkCmdCopyBuffer (Sequence::copy): wall time, as timestamps only surround dispatches.
  // Four copies back and forth per submission dilute the submit cost.
  {
    constexpr int copies = 4;
    TimingOptions wall = timing;
    wall.profile = false;
    const Samples s = run_timed(ctx, [&](Sequence& seq) {
      for (int i = 0; i < copies; ++i) {
        if (i % 2 == 0) seq.copy(src, dst); else seq.copy(dst, src);
      }
    }, wall);
    result["copy_buffer_gbps"] = 2.0 * double(kCopyBytes) * copies / (median(s.wall_us) * 1e3);
  }

  // --- empty dispatch and empty submit -------------------------------------------------
  {
    constexpr int many = 64;
    TimingOptions wall = timing;
    wall.profile = false;
    Tensor unused = ctx.tensor({4}, DType::u32, "bench_empty.unused");
    Kernel k = ctx.kernel({"bench_empty", {std::max<std::uint32_t>(dev.subgroup_size, 1), 1, 1}, 1, 0});
    auto empties = [&](int n) {
      return run_timed(ctx, [&, n](Sequence& seq) {
        for (int i = 0; i < n; ++i) seq.dispatch(k, {in(unused)}, std::span<const std::byte>{}, {1, 1, 1});
      }, wall);
    };
    const double one = median(empties(1).wall_us);
    const double n = median(empties(many).wall_us);
    result["empty_dispatch_us"] = std::max(0.0, (n - one) / (many - 1));
    result["empty_submit_us"] = one;  // submit + wait of one command buffer with one empty dispatch
  }
  result["copy_shader_config"] = copy.config;
  result["read_shader_config"] = read.config;
  return result;
}

}  // namespace vkrnn::bench
