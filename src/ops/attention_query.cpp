// Query projection for the general and additive scores (shaders/attention_query.comp).
#include <fmt/format.h>

#include "ops/attention_common.hpp"
#include "plan.hpp"

namespace vkrnn::attention_detail {

bool projects_query(Score score) { return score == Score::general || score == Score::additive; }

QueryProjection create_query_projection(Context& ctx, const Dims& d, const plan::QueryProjection& plan,
                                        const OpOptions& options, const char* op) {
  if (!projects_query(d.config.score)) return {};
  Tensor projected = ctx.tensor({d.B, d.Hk}, DType::f32, fmt::format("{} projected query", op));
  if (plan.gemv) {
    OpOptions gemm_options;  // the op's tile and workgroup size are its own
    gemm_options.force_shared_memory_reduction = options.force_shared_memory_reduction;
    return {{}, projected, std::make_shared<const Gemm>(ctx, gemm_options)};
  }
  return {kernels::make<kernels::AttentionQuery>(ctx, plan.constants, plan.variant), projected, nullptr};
}

MatrixView scoring_query(Sequence& seq, const QueryProjection& projection, const DeviceInfo& dev,
                         const Dims& d, const ScoreParams& params, const MatrixView& query,
                         const Tensor& null) {
  if (!projects_query(d.config.score)) return query;
  const MatrixView out = MatrixView::of(projection.projected);
  if (projection.gemm) {
    projection.gemm->record(seq, query, MatrixView::of(params.w), params.bias, 0, out);
    return out;
  }
  using K = kernels::AttentionQuery;
  const auto u32 = [](std::size_t v) { return static_cast<std::uint32_t>(v); };
  kernels::dispatch<K>(seq, projection.kernel,
                       {.w = params.w, .q = query.tensor, .bias = params.bias, .outp = projection.projected},
                       {.A = d.Hk, .Q = d.Hq, .B = d.B, .has_bias = params.bias.valid() ? 1u : 0u,
                        .q_off = u32(query.offset), .q_ld = u32(query.ld ? query.ld : query.cols)},
                       ops::fold_groups(std::uint64_t(d.Hk) * d.B, dev, "attention query projection"),
                       null);
  return out;
}

}  // namespace vkrnn::attention_detail
