// AttentionScores: raw scores of a batch of queries against the source memory
// (shaders/attention_scores.comp, after attention_query.comp for general / additive).
#include "ops/attention_common.hpp"
#include "plan.hpp"

namespace vkrnn {
using namespace attention_detail;
using ops::expect;
using K = kernels::AttentionScores;

namespace {
constexpr const char* kOp = "AttentionScores";
}  // namespace

AttentionScores::AttentionScores(Context& ctx, const AttentionConfig& config,
                                 const OpOptions& options)
    : PlannedAttentionOp(ctx, config, options, kOp) {
  const Dims d = resolve(config_, kOp);
  const plan::AttentionScores p = plan::attention_scores(ctx.device(), d, options);
  plan::require(ctx.device(), p.needs, kOp);
  plan_ = score_plan(p);
  plan_.tile = p.block;
  plan_.tiles = p.tiles;
  kernel_ = kernels::make<K>(ctx, p.constants, p.variant);
  auto q = create_query_projection(ctx, d, p.query, options, kOp);
  query_kernel_ = q.kernel;
  projected_query_ = q.projected;
  query_gemm_ = q.gemm;
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
  const Tensor q = scoring_query(seq, {query_kernel_, projected_query_, query_gemm_}, dev, d, params, MatrixView::of(query), null_).tensor;
  kernels::dispatch<K>(
      seq, kernel_,
      {.keys = keys, .qry = q, .vparam = d.config.score == Score::additive ? params.v : Tensor{},
       .lengths = lengths, .scores = scores},
      {.S = d.S, .Hk = d.Hk, .dk = d.dk, .Qs = d.Hk, .heads = d.heads, .rows = d.rows,
       .nblocks = plan_.tiles, .scale = score_scale(d)},
      ops::fold_groups(std::uint64_t(d.rows) * plan_.tiles, dev, kOp), null_);
}

}  // namespace vkrnn
