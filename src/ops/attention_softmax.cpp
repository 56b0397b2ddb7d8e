// MaskedSoftmax: masked, stable, tiled softmax over the source axis
// (shaders/attention_softmax.comp).
#include <algorithm>

#include "ops/attention_common.hpp"

namespace vkrnn {
using namespace attention_detail;

namespace {
constexpr const char* kOp = "MaskedSoftmax";

struct Push {
  std::uint32_t S, heads, rows, ntiles, mode;
};
}  // namespace

MaskedSoftmax::MaskedSoftmax(Context& ctx, const AttentionConfig& config, const OpOptions& options)
    : PlannedAttentionOp(ctx, config, options, kOp) {
  const auto [d, dev, cpu, sg, wg] = tuning(ctx, config_, options, kOp);
  // Positions per invocation (kept in registers between the max, sum and normalise steps):
  // a row of up to 32 per invocation takes one dispatch; longer rows are tiled.
  constexpr std::uint32_t kMaxPerInvocation = 64;
  std::uint32_t E;
  if (options.tile != 0) {
    E = std::clamp<std::uint32_t>(ceil_div(options.tile, wg), 1, kMaxPerInvocation);
  } else if (d.S <= 32ull * wg) {
    E = ceil_div(d.S, wg);
  } else {
    E = cpu ? 16 : 8;
  }
  plan_.workgroup_size = wg;
  plan_.subgroup_reduction = sg;
  plan_.tile = wg * E;
  plan_.tiles = ceil_div(d.S, plan_.tile);
  kernel_ = ctx.kernel({kernel_name("attention_softmax", options.fp16_storage, true, sg),
                        with_one_subgroup({wg, 1, 1, E}, dev, wg, sg), 4, sizeof(Push)});
  partials_ = ctx.tensor({d.rows, plan_.tiles, 2}, DType::f32, "MaskedSoftmax partials");
}

void MaskedSoftmax::record(Sequence& seq, const Tensor& scores, const Tensor& lengths,
                           const Tensor& weights) const {
  const Dims d = resolve(config_, kOp);
  const Shape shape = attention_scores_shape(config_);
  expect(kOp, "scores", scores, shape, DType::f32);
  expect(kOp, "lengths", lengths, {d.B}, DType::i32);
  expect(kOp, "weights", weights, shape, options_.fp16_storage ? DType::f16 : DType::f32);
  const DeviceInfo& dev = ctx_->device();
  const Groups groups = fold_groups(std::uint64_t(d.rows) * plan_.tiles, dev, kOp);
  if (plan_.tiles == 1) {
    const Push push{d.S, d.heads, d.rows, 1, 0};
    seq.dispatch(kernel_, {in(scores), in(lengths), in(partials_), out(weights)}, push, groups);
    return;
  }
  const Push pass1{d.S, d.heads, d.rows, plan_.tiles, 1};
  seq.dispatch(kernel_, {in(scores), in(lengths), out(partials_), in(weights)}, pass1, groups);
  const Push pass2{d.S, d.heads, d.rows, plan_.tiles, 2};
  seq.dispatch(kernel_, {in(scores), in(lengths), in(partials_), out(weights)}, pass2, groups);
}

}  // namespace vkrnn
