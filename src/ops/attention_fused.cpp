// FusedAttention: scores -> masked softmax -> context in one pass over keys and values
// (flash-decoding: shaders/attention_fused.comp + attention_fused_combine.comp).
#include <algorithm>

#include <fmt/format.h>

#include "ops/attention_common.hpp"
#include "vkrnn/error.hpp"

namespace vkrnn {
using namespace attention_detail;

namespace {
constexpr const char* kOp = "FusedAttention";
// Splits the combine is built for at least: as many as source_chunk() aims at.
constexpr std::uint32_t kDefaultMaxSplit = kMaxTargetChunks;

struct Push {
  std::uint32_t S, Hk, dk, Qs, H, dv, heads, rows, nsplit, chunk, nhtiles;
  float scale;
  std::uint32_t flags;
};

struct CombinePush {
  std::uint32_t S, H, dv, heads, rows, nsplit, nctx, nwt;
};
}  // namespace

FusedAttention::FusedAttention(Context& ctx, const AttentionConfig& config,
                               const OpOptions& options)
    : PlannedAttentionOp(ctx, config, options, kOp) {
  const auto [d, dev, cpu, sg, wg] = tuning(ctx, config_, options, kOp);
  const ScoreConstants sc = score_constants(d, dev, sg, wg);
  const bool value_vec4 = d.H % 4 == 0 && d.dv % 4 == 0;
  // Block: positions per workgroup step.
  const std::uint32_t R = sc.positions;
  const std::uint32_t P = wg * R;

  // Column tile: each invocation keeps VPT columns (vec4s) of the context in registers; one
  // tile covers dv when that needs at most `cap` per invocation, else balanced tiles (each
  // re-reads the keys of its split).
  const std::uint32_t value_units = value_vec4 ? d.dv / 4 : d.dv;
  const std::uint32_t cap = cpu ? 32 : 8;
  const std::uint32_t nht = ceil_div(value_units, std::uint64_t(wg) * cap);
  const std::uint32_t vpt = std::max<std::uint32_t>(1, ceil_div(value_units, std::uint64_t(nht) * wg));
  if (4ull * (P + wg) > dev.max_shared_memory) {
    throw Error(ErrorCode::out_of_range,
                fmt::format("{}: workgroup size {} needs {} bytes of shared memory; '{}' has {}",
                            kOp, wg, 4ull * (P + wg), dev.name, dev.max_shared_memory));
  }

  // Loop iterations one invocation runs per block (pessimistic: no unrolling, the smallest
  // subgroup the device may pick), so a split can be kept under kLoopBudget.
  std::uint64_t per_block = std::uint64_t(sc.per_subgroup ? P : R) * (1 + sc.key_loop);
  per_block += 3 * R + std::uint64_t(P) * (1 + vpt);
  const std::uint32_t max_chunk = static_cast<std::uint32_t>(
      std::max<std::uint64_t>(1, kLoopBudget / per_block) * P);

  // Splits of S: enough workgroups to fill the device, chunks long enough to amortise the
  // partials, within the loop budget.
  const std::uint32_t chunk =
      source_chunk(dev, options, d.S, std::uint64_t(d.rows) * nht, cpu ? 512 : 256, max_chunk);
  const std::uint32_t nsplit = ceil_div(d.S, chunk);
  // The combine keeps one coefficient per split in shared memory.
  const std::uint32_t max_split = std::max(kDefaultMaxSplit, round_up(nsplit, 64));
  if (4ull * (max_split + wg) > dev.max_shared_memory) {
    throw Error(ErrorCode::out_of_range,
                fmt::format("{}: max_source {} needs {} splits of at most {} positions (loop budget), "
                            "more than the {} bytes of shared memory of '{}' can combine",
                            kOp, d.S, nsplit, max_chunk, dev.max_shared_memory, dev.name));
  }

  plan_.workgroup_size = wg;
  plan_.subgroup_reduction = sg;
  plan_.score_per_subgroup = sc.per_subgroup != 0;
  plan_.block = P;
  plan_.tile = chunk;
  plan_.tiles = ceil_div(d.S, chunk);
  plan_.column_tile = wg * vpt * (value_vec4 ? 4 : 1);
  plan_.column_tiles = nht;

  kernel_ = ctx.kernel({kernel_name("attention_fused", options.fp16_storage, true, sg),
                        with_one_subgroup({wg, 1, 1, sc.mode, sc.key_vec4, sc.per_subgroup,
                                           sc.positions, sc.key_loop, vpt, value_vec4 ? 1u : 0u},
                                          dev, wg, sg),
                        10, sizeof(Push)});
  if (plan_.tiles > 1) {
    combine_kernel_ =
        ctx.kernel({kernel_name("attention_fused_combine", options.fp16_storage, true, sg),
                    with_one_subgroup({wg, 1, 1, max_split, cpu ? 8u : 4u}, dev, wg, sg), 6,
                    sizeof(CombinePush)});
    part_ml_ = ctx.tensor({d.rows, plan_.tiles, 2}, DType::f32, "FusedAttention partial max/sum");
    part_acc_ = ctx.tensor({d.rows, plan_.tiles, d.dv}, DType::f32, "FusedAttention partial context");
  }
  create_query_projection(ctx, d, options, kOp, query_kernel_, projected_query_);
  dummy_ = ctx.tensor({4}, DType::f32, "FusedAttention unused binding");
}

std::uint32_t FusedAttention::dispatches() const {
  return (projects_query(config_.score) ? 1 : 0) + 1 + (plan_.tiles > 1 ? 1 : 0);
}

void FusedAttention::record(Sequence& seq, const Tensor& keys, const Tensor& values,
                            const Tensor& query, const Tensor& lengths, const Tensor& context,
                            const ScoreParams& params, const Tensor& weights) const {
  const Dims d = resolve(config_, kOp);
  const DType st = options_.fp16_storage ? DType::f16 : DType::f32;
  expect(kOp, "keys", keys, {d.B, d.S, d.Hk}, st);
  expect(kOp, "values", values, {d.B, d.S, d.H}, st);
  expect(kOp, "query", query, {d.B, d.Hq}, DType::f32);
  expect(kOp, "lengths", lengths, {d.B}, DType::i32);
  expect(kOp, "context", context, {d.B, d.H}, DType::f32);
  const bool want_weights = weights.valid();
  if (want_weights) expect(kOp, "weights", weights, attention_scores_shape(config_), st);
  check_params(kOp, d, params);

  const DeviceInfo& dev = ctx_->device();
  const Tensor q = scoring_query(seq, query_kernel_, dev, d, params, query, projected_query_, dummy_);
  const Tensor& v = d.config.score == Score::additive ? params.v : dummy_;
  if (want_weights && !raw_.valid()) {
    raw_ = ctx_->tensor({d.rows, d.S}, DType::f32, "FusedAttention raw scores");
  }
  const bool direct = plan_.tiles == 1;
  const Push push{d.S, d.Hk, d.dk, d.Hk, d.H, d.dv, d.heads, d.rows, plan_.tiles, plan_.tile,
                  plan_.column_tiles, score_scale(d),
                  (want_weights ? 1u : 0u) | (direct ? 2u : 0u)};
  const Groups groups =
      fold_groups(std::uint64_t(d.rows) * plan_.column_tiles * plan_.tiles, dev, kOp);
  if (direct) {
    seq.dispatch(kernel_,
                 {in(keys), in(values), in(q), in(v), in(lengths), in(dummy_), in(dummy_),
                  want_weights ? inout(raw_) : in(dummy_), want_weights ? out(weights) : in(dummy_),
                  out(context)},
                 push, groups);
    return;
  }
  seq.dispatch(kernel_,
               {in(keys), in(values), in(q), in(v), in(lengths), out(part_ml_), out(part_acc_),
                want_weights ? out(raw_) : in(dummy_), in(dummy_), in(dummy_)},
               push, groups);
  const std::uint32_t wg = plan_.workgroup_size;
  const std::uint32_t E = is_cpu(dev) ? 8 : 4;
  const CombinePush cpush{d.S, d.H, d.dv, d.heads, d.rows, plan_.tiles, ceil_div(d.dv, wg),
                          want_weights ? ceil_div(d.S, std::uint64_t(wg) * E) : 0u};
  seq.dispatch(combine_kernel_,
               {in(lengths), in(part_ml_), in(part_acc_), want_weights ? in(raw_) : in(dummy_),
                want_weights ? out(weights) : in(dummy_), out(context)},
               cpush, fold_groups(std::uint64_t(d.rows) * (cpush.nctx + cpush.nwt), dev, kOp));
}

}  // namespace vkrnn
