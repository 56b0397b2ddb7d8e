// AttentionContext: context = sum_s weights[s] values[s], tiled over S and the value columns
// (shaders/attention_context.comp).
#include <algorithm>

#include "ops/attention_common.hpp"

namespace vkrnn {
using namespace attention_detail;

namespace {
constexpr const char* kOp = "AttentionContext";

struct Push {
  std::uint32_t S, H, dv, heads, rows, nchunks, chunk, nhtiles, mode;
};
}  // namespace

AttentionContext::AttentionContext(Context& ctx, const AttentionConfig& config,
                                   const OpOptions& options)
    : ctx_(&ctx), options_(options) {
  const Dims d = resolve(config, kOp);
  config_ = d.config;
  require_fp16(ctx, options, kOp);
  const DeviceInfo& dev = ctx.device();
  const bool cpu = is_cpu(dev);
  const std::uint32_t wg = pick_workgroup(dev, options);
  vec4_ = d.H % 4 == 0 && d.dv % 4 == 0;
  const std::uint32_t units = vec4_ ? d.dv / 4 : d.dv;
  // Columns (vec4s) per invocation, in registers: one column tile covers dv when that takes
  // at most `cap` per invocation.
  const std::uint32_t cap = cpu ? 16 : 8;
  per_invocation_ = std::clamp<std::uint32_t>(ceil_div(units, wg), 1, cap);
  const std::uint32_t tile_units = wg * per_invocation_;
  plan_.workgroup_size = wg;
  plan_.column_tile = tile_units * (vec4_ ? 4 : 1);
  plan_.column_tiles = ceil_div(units, tile_units);
  // S chunks: enough workgroups to fill the device, but long enough chunks that the partials
  // stay small.
  std::uint32_t chunk;
  if (options.tile != 0) {
    chunk = options.tile;
  } else {
    const std::uint64_t target = cpu ? 16 : 256;
    const std::uint32_t min_chunk = cpu ? 512 : 128;
    const std::uint64_t have = std::uint64_t(d.rows) * plan_.column_tiles;
    const std::uint32_t want = static_cast<std::uint32_t>(
        std::clamp<std::uint64_t>((target + have - 1) / have, 1, ceil_div(d.S, min_chunk)));
    chunk = ceil_div(d.S, want);
  }
  // Loop budget: an invocation runs 1 + VPT iterations per position (pessimistically).
  const std::uint32_t max_chunk = std::max<std::uint32_t>(1, kLoopBudget / (1 + per_invocation_));
  chunk = std::clamp<std::uint32_t>(chunk, 1, std::min(d.S, max_chunk));
  plan_.tile = chunk;
  plan_.tiles = ceil_div(d.S, chunk);
  kernel_ = ctx.kernel({kernel_name("attention_context", options.fp16_storage, false, false),
                        {wg, 1, 1, per_invocation_, vec4_ ? 1u : 0u}, 5, sizeof(Push)});
  partials_ = plan_.tiles > 1
                  ? ctx.tensor({d.rows, plan_.tiles, d.dv}, DType::f32, "AttentionContext partials")
                  : ctx.tensor({4}, DType::f32, "AttentionContext unused binding");
}

void AttentionContext::record(Sequence& seq, const Tensor& weights, const Tensor& values,
                              const Tensor& lengths, const Tensor& context) const {
  const Dims d = resolve(config_, kOp);
  const DType st = options_.fp16_storage ? DType::f16 : DType::f32;
  expect(kOp, "weights", weights, attention_scores_shape(config_), st);
  expect(kOp, "values", values, {d.B, d.S, d.H}, st);
  expect(kOp, "lengths", lengths, {d.B}, DType::i32);
  expect(kOp, "context", context, {d.B, d.H}, DType::f32);
  const DeviceInfo& dev = ctx_->device();
  const std::uint64_t per_chunk = std::uint64_t(d.rows) * plan_.column_tiles;
  Push push{d.S, d.H, d.dv, d.heads, d.rows, plan_.tiles, plan_.tile, plan_.column_tiles, 0};
  if (plan_.tiles == 1) {
    seq.dispatch(kernel_, {in(weights), in(values), in(lengths), in(partials_), out(context)}, push,
                 fold_groups(per_chunk, dev, kOp));
    return;
  }
  push.mode = 1;
  seq.dispatch(kernel_, {in(weights), in(values), in(lengths), out(partials_), in(context)}, push,
               fold_groups(per_chunk * plan_.tiles, dev, kOp));
  push.mode = 2;
  seq.dispatch(kernel_, {in(weights), in(values), in(lengths), in(partials_), out(context)}, push,
               fold_groups(per_chunk, dev, kOp));
}

}  // namespace vkrnn
