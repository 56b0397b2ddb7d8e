#pragma once
// Private helpers shared by the decoder-attention ops (attention_*.cpp).
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "vkrnn/attention.hpp"
#include "vkrnn/context.hpp"
#include "vkrnn/device.hpp"
#include "vkrnn/options.hpp"
#include "vkrnn/sequence.hpp"
#include "vkrnn/tensor.hpp"

namespace vkrnn::attention_detail {

// lavapipe (Mesa's gallivm, 22.x) silently ends every loop of a shader invocation once that
// invocation has run ~65535 loop iterations in total (LP_MAX_TGSI_LOOP_ITERATIONS): results are
// then just wrong. The ops size each workgroup's share of S so that an invocation's loop
// iterations (estimated pessimistically) stay under this budget, on every device.
constexpr std::uint32_t kLoopBudget = 32768;

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

// Throws Error(missing_feature) when fp16 storage is asked for but not enabled.
void require_fp16(const Context& ctx, const OpOptions& options, const char* op);

// What the tuned ops' constructors start from: the config's sizes and the choices every op
// makes alike from the device and the options.
struct Tuning {
  Dims d;
  const DeviceInfo& dev;
  bool cpu;                 // is_cpu()
  bool subgroups;           // use_subgroups()
  std::uint32_t workgroup;  // pick_workgroup()
};
// `config` as detail::AttentionOp holds it (already resolved and checked).
Tuning tuning(const Context& ctx, const AttentionConfig& config, const OpOptions& options,
              const char* op);

// Source positions per workgroup (the S chunk) of the context and fused ops: options.tile when
// forced, else enough chunks that the device is filled (16 workgroups on CPU drivers, 256 on
// GPUs, `per_chunk` workgroups per chunk) but no chunk is shorter than `min_chunk`; then
// clamped to [1, min(S, max_chunk)] (max_chunk keeps an invocation within kLoopBudget).
// Never aims at more than kMaxTargetChunks chunks per row.
constexpr std::uint32_t kMaxTargetChunks = 256;
std::uint32_t source_chunk(const DeviceInfo& dev, const OpOptions& options, std::uint32_t S,
                           std::uint64_t per_chunk, std::uint32_t min_chunk,
                           std::uint32_t max_chunk);

// Loop iterations per invocation of one workgroup-wide reduction (reduce.glsl,
// float_order.glsl) in a 1-D workgroup of `workgroup` invocations: the subgroup variant walks
// the subgroups' partial results (as many as the smallest subgroups make), the tree variant
// halves log2(workgroup) times.
std::uint64_t reduction_loops(const DeviceInfo& dev, bool subgroups, std::uint64_t workgroup);

// The narrowest of workgroup, 2 workgroup, 4 workgroup ... (up to the device's widest 1-D
// workgroup) for which loops(width) stays within kLoopBudget; 0 when none does. For row-per-
// workgroup kernels whose invocations stride over a row of data-dependent length.
std::uint32_t workgroup_within_budget(const DeviceInfo& dev, std::uint32_t workgroup,
                                      const std::function<std::uint64_t(std::uint64_t)>& loops);

// Whether reductions use subgroup arithmetic on this device with these options.
bool use_subgroups(const DeviceInfo& dev, const OpOptions& options);

// The 1-D workgroup size: forced (rounded down to a power of two) or chosen from the device;
// clamped to its limits.
std::uint32_t pick_workgroup(const DeviceInfo& dev, const OpOptions& options);

// Specialization constant 15 (ONE_SUBGROUP, shaders/include/reduce.glsl): appends it to
// `constants` (padding ids in between with 0), true when the subgroup variant runs with
// workgroups no larger than the smallest subgroup the device may use.
std::vector<std::uint32_t> with_one_subgroup(std::vector<std::uint32_t> constants,
                                             const DeviceInfo& dev, std::uint32_t workgroup,
                                             bool subgroups);

// "attention_fused" + "_f16" + "_nosubgroup" as shaders/variants.cmake names them.
std::string kernel_name(const char* base, bool fp16, bool subgroup_variant, bool subgroups);

// Elementwise ops (no reduction tree): 64 invocations unless options force a size, clamped to
// the device's limits.
std::uint32_t elementwise_workgroup(const DeviceInfo& dev, const OpOptions& options);

// Spreads `total` workgroups over x and y (the shaders unfold gl_WorkGroupID).
Groups fold_groups(std::uint64_t total, const DeviceInfo& dev, const char* op);

// Throws Error(invalid_argument): "<op>: argument '<arg>': expected [..] f32, got [..] f16".
void expect(const char* op, const char* arg, const Tensor& t, const Shape& shape, DType dtype);

// Checks the score parameters the config's score form needs.
void check_params(const char* op, const Dims& d, const ScoreParams& params);

std::uint32_t ceil_div(std::uint64_t a, std::uint64_t b);
std::uint32_t round_up(std::uint32_t a, std::uint32_t b);
bool is_cpu(const DeviceInfo& dev);

// Query projection (W q (+ b)) for general and additive scores: attention_query.cpp/.comp.
bool projects_query(Score score);
Kernel query_projection_kernel(Context& ctx, const Dims& d, const OpOptions& options);
// projected: f32 [B, key_dim] (op-owned scratch).
void record_query_projection(Sequence& seq, const Kernel& kernel, const DeviceInfo& dev,
                             const Dims& d, const ScoreParams& params, const Tensor& query,
                             const Tensor& projected, const Tensor& dummy);
// For the score ops (AttentionScores, FusedAttention): creates the projection kernel and its
// scratch ("<op> projected query") when the score form projects the query; leaves both empty
// otherwise.
void create_query_projection(Context& ctx, const Dims& d, const OpOptions& options, const char* op,
                             Kernel& kernel, Tensor& projected);
// Records the projection when the score form has one; returns the query the score kernel reads
// (`projected`, or `query` itself).
Tensor scoring_query(Sequence& seq, const Kernel& kernel, const DeviceInfo& dev, const Dims& d,
                     const ScoreParams& params, const Tensor& query, const Tensor& projected,
                     const Tensor& dummy);

// Specialization constants 3..7 shared by attention_scores.comp and attention_fused.comp
// (shaders/include/attention_score.glsl; 6 is declared by each of the two).
struct ScoreConstants {
  std::uint32_t mode = 0;        // 3: 0 dot-like, 1 additive
  std::uint32_t key_vec4 = 0;    // 4
  std::uint32_t per_subgroup = 0;  // 5: a subgroup computes each score
  std::uint32_t positions = 1;   // 6 (R): positions per invocation per workgroup step
  std::uint32_t key_loop = 0;    // 7 (KU): trip count bound of the dims loop per invocation
};
ScoreConstants score_constants(const Dims& d, const DeviceInfo& dev, bool subgroups,
                               std::uint32_t workgroup);
float score_scale(const Dims& d);

}  // namespace vkrnn::attention_detail
