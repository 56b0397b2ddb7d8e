#pragma once
// Private helpers shared by the decoder-attention ops (attention_*.cpp). Their tuning is in
// src/plan.hpp, the helpers every op uses in src/ops/common.hpp.
#include <cstdint>
#include <memory>
#include <string>

#include "ops/common.hpp"
#include "ops/kernels/attention.hpp"
#include "vkrnn/attention.hpp"
#include "vkrnn/context.hpp"
#include "vkrnn/device.hpp"
#include "vkrnn/linear.hpp"
#include "vkrnn/options.hpp"
#include "vkrnn/sequence.hpp"
#include "vkrnn/tensor.hpp"

namespace vkrnn::attention_detail {

// A config with defaults applied and its derived sizes; validated by resolve().
struct Dims {
  AttentionConfig config;
  std::uint32_t B = 0, S = 0, H = 0, Hk = 0, Hq = 0, heads = 0;
  std::uint32_t dk = 0;    // key dims per head
  std::uint32_t dv = 0;    // value dims per head
  std::uint32_t rows = 0;  // B * heads
};

// Applies defaults and checks the config; throws Error(invalid_argument / out_of_range).
Dims resolve(const AttentionConfig& config, const char* op);

// Checks the score parameters the config's score form needs.
void check_params(const char* op, const Dims& d, const ScoreParams& params);

// Query projection (W q (+ b)) for general and additive scores: attention_query.cpp/.comp.
bool projects_query(Score score);
// The score ops' projection: its kernel (or GEMV) and its scratch ("<op> projected query", f32
// [B, key_dim]) when the score form projects the query; all empty otherwise.
}  // namespace vkrnn::attention_detail
namespace vkrnn::plan {
struct QueryProjection;  // plan.hpp (which includes this header)
}  // namespace vkrnn::plan
namespace vkrnn::attention_detail {
struct QueryProjection {
  Kernel kernel;
  Tensor projected;
  std::shared_ptr<const Gemm> gemm;  // plan::QueryProjection::gemv
};
QueryProjection create_query_projection(Context& ctx, const Dims& d, const plan::QueryProjection& plan,
                                        const OpOptions& options, const char* op);
// Records the projection when the score form has one; returns the query the score kernel reads
// (the projection's scratch, or `query` itself). The projection reads `query` in place, a
// B x Hq view (its offset and row stride multiples of 4 where Hq is).
MatrixView scoring_query(Sequence& seq, const QueryProjection& projection, const DeviceInfo& dev,
                         const Dims& d, const ScoreParams& params, const MatrixView& query,
                         const Tensor& null);

float score_scale(const Dims& d);

// What the scores and fused ops' kernels decide of their public plan (plan::AttentionScores,
// plan::FusedAttention): workgroup, reductions, score split, positions per step.
template <class ScorePlan>
AttentionPlan score_plan(const ScorePlan& p) {
  AttentionPlan a;
  a.workgroup_size = p.constants.local_size_x;
  a.subgroup_reduction = p.variant.subgroup;
  a.score_per_subgroup = p.constants.SG_CLUSTER != 0;
  a.block = p.block;
  return a;
}

}  // namespace vkrnn::attention_detail
