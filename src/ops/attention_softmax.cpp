// MaskedSoftmax: masked, stable, tiled softmax over the source axis
// (shaders/attention_softmax.comp).
#include "ops/attention_common.hpp"
#include "plan.hpp"

namespace vkrnn {
using namespace attention_detail;
using ops::expect;
using K = kernels::AttentionSoftmax;

namespace {
constexpr const char* kOp = "MaskedSoftmax";
}  // namespace

MaskedSoftmax::MaskedSoftmax(Context& ctx, const AttentionConfig& config, const OpOptions& options)
    : PlannedAttentionOp(ctx, config, options, kOp) {
  const Dims d = resolve(config_, kOp);
  const plan::MaskedSoftmax p = plan::masked_softmax(ctx.device(), d, options);
  plan::require(ctx.device(), p.needs, kOp);
  plan_.workgroup_size = p.constants.local_size_x;
  plan_.subgroup_reduction = p.variant.subgroup;
  plan_.tile = p.tile;
  plan_.tiles = p.tiles;
  kernel_ = kernels::make<K>(ctx, p.constants, p.variant);
  if (plan_.tiles > 1) {
    partials_ = ctx.tensor({d.rows, plan_.tiles, 2}, DType::f32, "MaskedSoftmax partials");
  }
}

void MaskedSoftmax::record(Sequence& seq, const Tensor& scores, const Tensor& lengths,
                           const Tensor& weights) const {
  const Dims d = resolve(config_, kOp);
  const Shape shape = attention_scores_shape(config_);
  expect(kOp, "scores", scores, shape, DType::f32);
  expect(kOp, "lengths", lengths, {d.B}, DType::i32);
  expect(kOp, "weights", weights, shape, options_.fp16_storage ? DType::f16 : DType::f32);
  const Groups groups = ops::fold_groups(std::uint64_t(d.rows) * plan_.tiles, ctx_->device(), kOp);
  K::Push push{.S = d.S, .heads = d.heads, .rows = d.rows, .ntiles = plan_.tiles};
  if (plan_.tiles == 1) {
    push.mode = TWO_PASS_SINGLE;
    kernels::dispatch<K>(seq, kernel_, {.scores = scores, .lengths = lengths, .weights = weights},
                         push, groups, null_);
    return;
  }
  push.mode = TWO_PASS_PARTIAL;
  kernels::dispatch<K>(seq, kernel_, {.scores = scores, .lengths = lengths, .partials = partials_},
                       push, groups, null_);
  push.mode = TWO_PASS_COMBINE;
  kernels::dispatch<K>(
      seq, kernel_,
      {.scores = scores, .lengths = lengths, .partials = partials_, .weights = weights}, push,
      groups, null_);
}

}  // namespace vkrnn
