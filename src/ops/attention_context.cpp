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
    : PlannedAttentionOp(ctx, config, options, kOp) {
  const auto [d, dev, cpu, sg, wg] = tuning(ctx, config_, options, kOp);
  const bool vec4 = d.H % 4 == 0 && d.dv % 4 == 0;
  const std::uint32_t units = vec4 ? d.dv / 4 : d.dv;
  // Columns (vec4s) per invocation, in registers: one column tile covers dv when that takes
  // at most `cap` per invocation.
  const std::uint32_t cap = cpu ? 16 : 8;
  const std::uint32_t vpt = std::clamp<std::uint32_t>(ceil_div(units, wg), 1, cap);
  const std::uint32_t tile_units = wg * vpt;
  plan_.workgroup_size = wg;
  plan_.column_tile = tile_units * (vec4 ? 4 : 1);
  plan_.column_tiles = ceil_div(units, tile_units);
  // Loop budget: an invocation runs 1 + VPT iterations per position (pessimistically).
  const std::uint32_t max_chunk = std::max<std::uint32_t>(1, kLoopBudget / (1 + vpt));
  plan_.tile = source_chunk(dev, options, d.S, std::uint64_t(d.rows) * plan_.column_tiles,
                            cpu ? 512 : 128, max_chunk);
  plan_.tiles = ceil_div(d.S, plan_.tile);
  kernel_ = ctx.kernel({kernel_name("attention_context", options.fp16_storage, false, false),
                        {wg, 1, 1, vpt, vec4 ? 1u : 0u}, 5, sizeof(Push)});
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
