// FusedAttention: scores -> masked softmax -> context in one pass over keys and values
// (flash-decoding: shaders/attention_fused.comp + attention_fused_combine.comp).
#include <fmt/format.h>

#include "ops/attention_common.hpp"
#include "ops/common.hpp"
#include "plan.hpp"
#include "vkrnn/concat.hpp"
#include "vkrnn/error.hpp"
#include "vkrnn/linear.hpp"

namespace vkrnn {
using namespace attention_detail;
using ops::expect;
using K = kernels::AttentionFused;
using Combine = kernels::AttentionFusedCombine;

namespace {
constexpr const char* kOp = "FusedAttention";
}  // namespace

FusedAttention::FusedAttention(Context& ctx, const AttentionConfig& config,
                               const OpOptions& options)
    : PlannedAttentionOp(ctx, config, options, kOp) {
  const Dims d = resolve(config_, kOp);
  const plan::FusedAttention p = plan::fused_attention(ctx.device(), d, options);
  plan::require(ctx.device(), p.needs, kOp);
  plan_ = score_plan(p);
  plan_.tile = p.chunk;
  plan_.tiles = p.splits;
  plan_.column_tile = p.column_tile;
  plan_.column_tiles = p.column_tiles;
  plan_.merge_in_kernel = p.merge;
  combine_per_invocation_ = p.combine.E;
  kernel_ = kernels::make<K>(ctx, p.constants, p.variant);
  plan_.streams_shared_keys = p.streamed.STREAM;
  plan_.streams_values = p.constants.STREAM_VALUES;
  if (p.streamed.STREAM) stream_kernel_ = kernels::make<K>(ctx, p.streamed, p.variant);
  if (plan_.tiles > 1) {
    part_ml_ = ctx.tensor({d.rows, plan_.tiles, 2}, DType::f32, "FusedAttention partial max/sum");
    part_acc_ = ctx.tensor({d.rows, plan_.tiles, d.dv}, DType::f32, "FusedAttention partial context");
    if (plan_.merge_in_kernel) {
      // Counted up by each dispatch's workgroups and reset to 0 by the last of each row.
      arrivals_ = ctx.tensor({d.rows}, DType::u32, "FusedAttention split arrivals");
      ctx.write(arrivals_, std::vector<std::uint32_t>(d.rows, 0u));
    } else {
      combine_kernel_ = kernels::make<Combine>(ctx, p.combine, p.variant);
    }
  }
  // The kernel projects the query itself (p.query.used is false then).
  if (p.query.used) {
    auto q = create_query_projection(ctx, d, p.query, options, kOp);
    query_kernel_ = q.kernel;
    projected_query_ = q.projected;
    query_gemm_ = q.gemm;
  }
}

std::uint32_t FusedAttention::dispatches() const {
  return (projected_query_.valid() ? 1 : 0) + 1 + (plan_.tiles > 1 && !plan_.merge_in_kernel ? 1 : 0);
}

void FusedAttention::record(Sequence& seq, const Tensor& keys, const Tensor& values,
                            const Tensor& query, const Tensor& lengths, const Tensor& context,
                            const ScoreParams& params, const Tensor& weights) const {
  const Dims d = resolve(config_, kOp);
  expect(kOp, "context", context, {d.B, d.H}, DType::f32);
  record(seq, keys, values, query, lengths, MatrixView::of(context), params, weights);
}

void FusedAttention::record(Sequence& seq, const Tensor& keys, const Tensor& values,
                            const Tensor& query, const Tensor& lengths, const MatrixView& context,
                            const ScoreParams& params, const Tensor& weights) const {
  const Dims d = resolve(config_, kOp);
  expect(kOp, "query", query, {d.B, d.Hq}, DType::f32);
  record(seq, keys, values, MatrixView::of(query), lengths, context, params, weights);
}

void FusedAttention::record(Sequence& seq, const Tensor& keys, const Tensor& values,
                            const MatrixView& query_view, const Tensor& lengths, const MatrixView& context,
                            const ScoreParams& params, const Tensor& weights) const {
  const Dims d = resolve(config_, kOp);
  const DType st = options_.fp16_storage ? DType::f16 : DType::f32;
  expect(kOp, "keys", keys, {d.B, d.S, d.Hk}, st);
  expect(kOp, "values", values, {d.B, d.S, d.H}, st);
  expect(kOp, "lengths", lengths, {d.B}, DType::i32);
  const std::size_t ctx_ld = ops::expect_view(kOp, "context", context);
  if (context.rows != d.B || context.cols != d.H) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{}: argument 'context': expected a {} x {} view, got {} x {}", kOp, d.B,
                            d.H, context.rows, context.cols));
  }
  const std::size_t q_ld = ops::expect_view(kOp, "query", query_view);
  if (query_view.rows != d.B || query_view.cols != d.Hq) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{}: argument 'query': expected a {} x {} view, got {} x {}", kOp, d.B,
                            d.Hq, query_view.rows, query_view.cols));
  }
  if (ops::same_memory(query_view.tensor, context.tensor) && ops::views_overlap(query_view, context)) {
    throw Error(ErrorCode::invalid_argument, fmt::format("{}: 'context' overlaps 'query' in the same tensor", kOp));
  }
  const bool want_weights = weights.valid();
  if (want_weights) expect(kOp, "weights", weights, attention_scores_shape(config_), st);
  check_params(kOp, d, params);
  // The kernels read the query as vec4s where its width is a multiple of 4: a view read in place
  // must then keep each row's start on a vec4.
  MatrixView query = query_view;
  if (d.Hq % 4 == 0 && (query.offset % 4 != 0 || q_ld % 4 != 0)) {
    if (!query_copy_.valid()) query_copy_ = ctx_->tensor({d.B, d.Hq}, DType::f32, "FusedAttention query copy");
    if (!copy_) copy_ = std::make_shared<const Concat>(*ctx_, options_);
    copy_->record(seq, {query_view}, MatrixView::of(query_copy_));
    query = MatrixView::of(query_copy_);
  }

  const DeviceInfo& dev = ctx_->device();
  // Projected here (into projected_query_, by either path), or by the kernel (which then reads
  // the raw query and W_q, b).
  const bool in_kernel = projects_query(d.config.score) && !projected_query_.valid();
  const MatrixView q = in_kernel ? query : scoring_query(seq, {query_kernel_, projected_query_, query_gemm_}, dev, d, params, query, null_);
  if (want_weights && !raw_.valid()) {
    raw_ = ctx_->tensor({d.rows, d.S}, DType::f32, "FusedAttention raw scores");
  }
  const Tensor raw = want_weights ? raw_ : Tensor{};
  const bool direct = plan_.tiles == 1;
  std::uint32_t flags = (want_weights ? FUSED_WANT_WEIGHTS : 0u) | (direct ? FUSED_DIRECT : 0u);
  if (in_kernel && params.bias.valid()) flags |= FUSED_QUERY_BIAS;
  const K::Push push{.S = d.S, .Hk = d.Hk, .dk = d.dk, .Qs = in_kernel ? d.Hq : d.Hk, .H = d.H,
                     .dv = d.dv, .heads = d.heads, .rows = d.rows, .nsplit = plan_.tiles,
                     .chunk = plan_.tile, .nhtiles = plan_.column_tiles, .scale = score_scale(d),
                     .flags = flags, .ctx_off = static_cast<std::uint32_t>(context.offset),
                     .ctx_ld = static_cast<std::uint32_t>(ctx_ld), .q_off = static_cast<std::uint32_t>(q.offset),
                     .q_ld = static_cast<std::uint32_t>(q.ld ? q.ld : q.cols)};
  K::Bindings b{.keys = keys, .values = values, .qry = q.tensor,
                .vparam = d.config.score == Score::additive ? params.v : Tensor{},
                .lengths = lengths, .raw = raw};
  if (in_kernel) {
    b.qw = params.w;
    b.qbias = params.bias;
  }
  const Groups groups =
      ops::fold_groups(std::uint64_t(d.rows) * plan_.column_tiles * plan_.tiles, dev, kOp);
  if (!direct) {
    b.part_ml = part_ml_;
    b.part_acc = part_acc_;
    b.arrivals = arrivals_;
  }
  // One tensor as keys and values: each key vec4 fetched once (plan::FusedAttention::stream).
  const Kernel& kernel =
      stream_kernel_.valid() && &keys.storage() == &values.storage() ? stream_kernel_ : kernel_;
  if (direct || plan_.merge_in_kernel) {
    b.weights = weights;
    b.context = context.tensor;
    kernels::dispatch<K>(seq, kernel, b, push, groups, null_);
    return;
  }
  kernels::dispatch<K>(seq, kernel, b, push, groups, null_);
  const std::uint32_t wg = plan_.workgroup_size;
  const Combine::Push cpush{
      .S = d.S, .H = static_cast<std::uint32_t>(ctx_ld), .dv = d.dv, .heads = d.heads, .rows = d.rows,
      .nsplit = plan_.tiles,
      .nctx = ops::ceil_div(d.dv, wg),
      .nwt = want_weights ? ops::ceil_div(d.S, std::uint64_t(wg) * combine_per_invocation_) : 0u,
      .ctx_off = static_cast<std::uint32_t>(context.offset)};
  kernels::dispatch<Combine>(
      seq, combine_kernel_,
      {.lengths = lengths, .part_ml = part_ml_, .part_acc = part_acc_, .raw = raw,
       .weights = weights, .context = context.tensor},
      cpush, ops::fold_groups(std::uint64_t(d.rows) * (cpush.nctx + cpush.nwt), dev, kOp), null_);
}

}  // namespace vkrnn
