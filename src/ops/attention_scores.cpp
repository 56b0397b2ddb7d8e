// AttentionScores: raw scores of a batch of queries against the source memory
// (shaders/attention_scores.comp, after attention_query.comp for general / additive).
#include <algorithm>
#include <span>

#include "ops/attention_common.hpp"

namespace vkrnn {
using namespace attention_detail;

namespace {
constexpr const char* kOp = "AttentionScores";

struct Push {
  std::uint32_t S, Hk, dk, Qs, heads, rows, nblocks;
  float scale;
};
}  // namespace

AttentionScores::AttentionScores(Context& ctx, const AttentionConfig& config,
                                 const OpOptions& options)
    : PlannedAttentionOp(ctx, config, options, kOp) {
  const auto [d, dev, cpu, sg, wg] = tuning(ctx, config_, options, kOp);
  const ScoreConstants sc = score_constants(d, dev, sg, wg);
  plan_.workgroup_size = wg;
  plan_.subgroup_reduction = sg;
  plan_.score_per_subgroup = sc.per_subgroup != 0;
  plan_.block = wg * sc.positions;
  plan_.tile = plan_.block;
  plan_.tiles = ceil_div(d.S, plan_.block);
  kernel_ = ctx.kernel({kernel_name("attention_scores", options.fp16_storage, true, sg),
                        {wg, 1, 1, sc.mode, sc.key_vec4, sc.per_subgroup, sc.positions, sc.key_loop},
                        5, sizeof(Push)});
  create_query_projection(ctx, d, options, kOp, query_kernel_, projected_query_);
  dummy_ = ctx.tensor({4}, DType::f32, "AttentionScores unused binding");
}

std::uint32_t AttentionScores::dispatches() const {
  return projects_query(config_.score) ? 2 : 1;
}

void AttentionScores::record(Sequence& seq, const Tensor& keys, const Tensor& query,
                             const Tensor& lengths, const Tensor& scores,
                             const ScoreParams& params) const {
  const Dims d = resolve(config_, kOp);
  const DType st = options_.fp16_storage ? DType::f16 : DType::f32;
  expect(kOp, "keys", keys, {d.B, d.S, d.Hk}, st);
  expect(kOp, "query", query, {d.B, d.Hq}, DType::f32);
  expect(kOp, "lengths", lengths, {d.B}, DType::i32);
  expect(kOp, "scores", scores, attention_scores_shape(config_), DType::f32);
  check_params(kOp, d, params);
  const DeviceInfo& dev = ctx_->device();
  const Tensor q = scoring_query(seq, query_kernel_, dev, d, params, query, projected_query_, dummy_);
  const Tensor& v = d.config.score == Score::additive ? params.v : dummy_;
  const Push push{d.S, d.Hk, d.dk, d.Hk, d.heads, d.rows, plan_.tiles, score_scale(d)};
  seq.dispatch(kernel_, {in(keys), in(q), in(v), in(lengths), out(scores)}, push,
               fold_groups(std::uint64_t(d.rows) * plan_.tiles, dev, kOp));
}

}  // namespace vkrnn
