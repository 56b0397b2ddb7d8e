// AttentionContext: context = sum_s weights[s] values[s], tiled over S and the value columns
// (shaders/attention_context.comp).
#include "ops/attention_common.hpp"
#include "plan.hpp"

namespace vkrnn {
using namespace attention_detail;
using ops::expect;
using K = kernels::AttentionContext;

namespace {
constexpr const char* kOp = "AttentionContext";
}  // namespace

AttentionContext::AttentionContext(Context& ctx, const AttentionConfig& config,
                                   const OpOptions& options)
    : PlannedAttentionOp(ctx, config, options, kOp) {
  const Dims d = resolve(config_, kOp);
  const plan::AttentionContext p = plan::attention_context(ctx.device(), d, options);
  plan::require(ctx.device(), p.needs, kOp);
  plan_.workgroup_size = p.constants.local_size_x;
  plan_.column_tile = p.column_tile;
  plan_.column_tiles = p.column_tiles;
  plan_.tile = p.chunk;
  plan_.tiles = p.chunks;
  kernel_ = kernels::make<K>(ctx, p.constants, p.variant);
  if (plan_.tiles > 1) {
    partials_ = ctx.tensor({d.rows, plan_.tiles, d.dv}, DType::f32, "AttentionContext partials");
  }
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
  K::Push push{.S = d.S, .H = d.H, .dv = d.dv, .heads = d.heads, .rows = d.rows,
               .nchunks = plan_.tiles, .chunk = plan_.tile, .nhtiles = plan_.column_tiles};
  const K::Bindings both{.weights = weights, .values = values, .lengths = lengths,
                         .partials = partials_, .context = context};
  if (plan_.tiles == 1) {
    push.mode = TWO_PASS_SINGLE;
    kernels::dispatch<K>(seq, kernel_, both, push, ops::fold_groups(per_chunk, dev, kOp), null_);
    return;
  }
  push.mode = TWO_PASS_PARTIAL;
  K::Bindings partial = both;
  partial.context = {};
  kernels::dispatch<K>(seq, kernel_, partial, push,
                       ops::fold_groups(per_chunk * plan_.tiles, dev, kOp), null_);
  push.mode = TWO_PASS_COMBINE;
  kernels::dispatch<K>(seq, kernel_, both, push, ops::fold_groups(per_chunk, dev, kOp), null_);
}

}  // namespace vkrnn
