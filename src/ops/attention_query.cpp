// Query projection for the general and additive scores (shaders/attention_query.comp).
#include <span>

#include <fmt/format.h>

#include "ops/attention_common.hpp"

namespace vkrnn::attention_detail {

bool projects_query(Score score) { return score == Score::general || score == Score::additive; }

Kernel query_projection_kernel(Context& ctx, const Dims& d, const OpOptions& options) {
  const DeviceInfo& dev = ctx.device();
  const bool sg = use_subgroups(dev, options);
  const std::uint32_t wg = pick_workgroup(dev, options);
  const std::uint32_t vec4 = d.Hq % 4 == 0 ? 1 : 0;
  return ctx.kernel({kernel_name("attention_query", false, true, sg),
                     with_one_subgroup({wg, 1, 1, vec4}, dev, wg, sg), 4,
                     4 * sizeof(std::uint32_t)});  // push: A, Q, B, has_bias
}

void record_query_projection(Sequence& seq, const Kernel& kernel, const DeviceInfo& dev,
                             const Dims& d, const ScoreParams& params, const Tensor& query,
                             const Tensor& projected, const Tensor& dummy) {
  const bool has_bias = params.bias.valid();
  struct {
    std::uint32_t A, Q, B, has_bias;
  } const push{d.Hk, d.Hq, d.B, has_bias ? 1u : 0u};
  seq.dispatch(kernel,
               {in(params.w), in(query), in(has_bias ? params.bias : dummy), out(projected)},
               push, fold_groups(std::uint64_t(d.Hk) * d.B, dev, "attention query projection"));
}

void create_query_projection(Context& ctx, const Dims& d, const OpOptions& options, const char* op,
                             Kernel& kernel, Tensor& projected) {
  if (!projects_query(d.config.score)) return;
  kernel = query_projection_kernel(ctx, d, options);
  projected = ctx.tensor({d.B, d.Hk}, DType::f32, fmt::format("{} projected query", op));
}

Tensor scoring_query(Sequence& seq, const Kernel& kernel, const DeviceInfo& dev, const Dims& d,
                     const ScoreParams& params, const Tensor& query, const Tensor& projected,
                     const Tensor& dummy) {
  if (!projects_query(d.config.score)) return query;
  record_query_projection(seq, kernel, dev, d, params, query, projected, dummy);
  return projected;
}

}  // namespace vkrnn::attention_detail
