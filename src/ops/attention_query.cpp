// Query projection for the general and additive scores (shaders/attention_query.comp).
#include <fmt/format.h>

#include "ops/attention_common.hpp"

namespace vkrnn::attention_detail {

bool projects_query(Score score) { return score == Score::general || score == Score::additive; }

QueryProjection create_query_projection(Context& ctx, const Dims& d, const kernels::Variant& variant,
                                        const kernels::AttentionQuery::Constants& constants,
                                        const char* op) {
  if (!projects_query(d.config.score)) return {};
  return {kernels::make<kernels::AttentionQuery>(ctx, constants, variant),
          ctx.tensor({d.B, d.Hk}, DType::f32, fmt::format("{} projected query", op))};
}

Tensor scoring_query(Sequence& seq, const QueryProjection& projection, const DeviceInfo& dev,
                     const Dims& d, const ScoreParams& params, const Tensor& query,
                     const Tensor& null) {
  if (!projects_query(d.config.score)) return query;
  using K = kernels::AttentionQuery;
  kernels::dispatch<K>(seq, projection.kernel,
                       {.w = params.w, .q = query, .bias = params.bias, .outp = projection.projected},
                       {.A = d.Hk, .Q = d.Hq, .B = d.B, .has_bias = params.bias.valid() ? 1u : 0u},
                       ops::fold_groups(std::uint64_t(d.Hk) * d.B, dev, "attention query projection"),
                       null);
  return projection.projected;
}

}  // namespace vkrnn::attention_detail
