#pragma once
// Decoder-side attention: one query per batch row against a memory of S source vectors.
//
//   scores   e_s = score(k_s, q)                           s < S
//   weights  a_s = exp(e_s - max) / sum exp(e_s - max)     over s < length[b]; exactly 0 beyond
//   context  c   = sum_s a_s v_s
//
// Score forms (Score):
//   dot         e_s = k_s . q                                   (Luong dot)
//   general     e_s = k_s . (W_a q)                             (Luong general)
//   additive    e_s = v . tanh(K_s + W_q q + b), K = keys       (Bahdanau; = Luong concat)
//   scaled_dot  e_s = k_s . q / sqrt(head_dim) per head         (multi-head, heads x head_dim)
// For additive attention the keys K = h W_k^T are computed once per source sequence by
// KeyProjection and reused at every decoder step. (For general, W_a can also be folded into
// the keys once per source -- keys = h W_a -- and the step run as Score::dot.)
//
// Tensor layout (row-major; B = batch, S = max_source, rows = B * heads):
//   keys     [B, S, key_dim]         f32 (f16 with fp16_storage); head h owns key columns
//                                    [h * key_dim/heads, (h+1) * key_dim/heads)
//   values   [B, S, hidden]          f32 (f16); head h owns value columns likewise.
//                                    Keys and values may be the same tensor (encoder outputs).
//   query    [B, query_dim]          f32
//   lengths  [B]                     i32, valid source length of each batch row. On the GPU
//                                    values are clamped to [0, S]; upload_lengths() checks them.
//                                    A length of 0 gives all-zero weights and a zero context.
//   scores   [B, S] (heads == 1) or [B, heads, S]   f32; positions >= length hold -inf
//   weights  same shape as scores    f32 (f16 with fp16_storage)
//   context  [B, hidden]             f32
//   ScoreParams: general: w = W_a [key_dim, query_dim];
//                additive: w = W_q [key_dim, query_dim], bias = b [key_dim] (optional), v [key_dim]
//                all f32.
//
// Precision: fp32 arithmetic throughout. With OpOptions::fp16_storage keys, values and the
// attention weights are float16 tensors (queries, parameters, scores, context stay f32); it
// needs ctx.features().storage_buffer_16bit and ops throw Error(missing_feature) without it.
//
// Every op records into the caller's Sequence; record() checks every tensor's shape and dtype
// against the config and throws Error(invalid_argument) naming the op, the argument, the
// expected and the actual shape. Results are deterministic: fixed reduction order, no atomics.
// Ops own small scratch buffers: recording one op twice in a sequence is fine (the recorder
// orders the reuse), but two threads must not record the same op object at once.
//
// Tuning comes from the device's limits; OpOptions::workgroup_size (rounded down to a power of
// two, clamped to the device) and OpOptions::tile (source positions per workgroup, i.e. the S
// tiling of the softmax, context and fused ops) override it. Whatever the tile, the context
// and fused ops cap each workgroup's share of S so that no invocation runs more than ~32k loop
// iterations: lavapipe silently ends all loops of an invocation after 65535 iterations.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "vkrnn/context.hpp"
#include "vkrnn/export.h"
#include "vkrnn/kernel.hpp"
#include "vkrnn/options.hpp"
#include "vkrnn/sequence.hpp"
#include "vkrnn/tensor.hpp"

namespace vkrnn {

class Gemm;  // vkrnn/linear.hpp: the query projection on CPU drivers

struct MatrixView;  // vkrnn/linear.hpp
class Concat;       // vkrnn/concat.hpp

enum class Score : std::uint8_t { dot, general, additive, scaled_dot, concat = additive };
VKRNN_API const char* to_string(Score score) noexcept;

// How a score's dot product is spread over invocations (tuning; tests force both).
enum class ScoreSplit : std::uint8_t {
  automatic,       // one subgroup for long keys (>= 32 dims per head) when subgroups are used
  per_invocation,  // each invocation computes whole scores
  per_subgroup,    // a subgroup splits each score's dims (subgroup path only, else per_invocation)
};

struct AttentionConfig {
  Score score = Score::dot;
  std::size_t batch = 1;
  std::size_t max_source = 0;  // S: the source axis of keys, values, scores and weights
  std::size_t hidden = 0;      // value width = context width (KeyProjection: memory width)
  std::size_t key_dim = 0;     // key width (additive: attention width); 0 -> hidden
  std::size_t query_dim = 0;   // query width; 0 -> key_dim. dot / scaled_dot need == key_dim
  std::size_t heads = 1;       // scaled_dot only: key_dim and hidden split into heads
  ScoreSplit score_split = ScoreSplit::automatic;
};

struct ScoreParams {
  Tensor w;     // general: W_a; additive: W_q -- both [key_dim, query_dim]
  Tensor bias;  // additive, optional: [key_dim]
  Tensor v;     // additive: [key_dim]
};

// Shapes implied by a config (after defaults are applied).
VKRNN_API Shape attention_scores_shape(const AttentionConfig& config);  // also the weights' shape

// Checks host lengths (count == batch, each in [0, max_source]) and throws
// Error(invalid_argument) naming the first bad entry.
VKRNN_API void check_lengths(std::span<const std::int32_t> lengths, const AttentionConfig& config,
                             const char* op = "attention");
// check_lengths(), then uploads them into `lengths` (i32 [batch]) through the sequence.
VKRNN_API void upload_lengths(Sequence& seq, const Tensor& lengths, std::span<const std::int32_t> values,
                              const AttentionConfig& config);

// What an op runs with (chosen from the device, or forced through OpOptions and clamped).
struct AttentionPlan {
  std::uint32_t workgroup_size = 0;
  bool subgroup_reduction = false;  // subgroup arithmetic (else shared-memory trees)
  bool score_per_subgroup = false;  // a subgroup computes each score
  std::uint32_t block = 0;          // positions per workgroup step (scores, fused)
  std::uint32_t tile = 0;           // source positions per workgroup (S tiling)
  std::uint32_t tiles = 0;          // workgroups along S per row (fused: splits)
  std::uint32_t column_tile = 0;    // value columns per workgroup, in registers (context, fused)
  std::uint32_t column_tiles = 0;
  bool merge_in_kernel = false;     // fused, split rows: merged by each row's last workgroup
  // fused: records whose keys are their values (one tensor) read each key vector once, a
  // position of each of several segments of a split at a time (CPU drivers, where a lane's key
  // units are its value units)
  bool streams_shared_keys = false;
  // fused: keys and values apart streamed likewise, for memories too large for a CPU's caches
  // (CPU drivers)
  bool streams_values = false;
};

namespace detail {
// What every decoder-attention op holds: its context, the config with defaults applied, the
// options it was created with and its main kernel. The constructor applies the config's
// defaults, checks it and checks that fp16 storage is available when asked for (Error naming
// `op`).
class AttentionOp {
 public:
  const AttentionConfig& config() const { return config_; }

 protected:
  AttentionOp(Context& ctx, const AttentionConfig& config, const OpOptions& options,
              const char* op);

  Context* ctx_;
  AttentionConfig config_;
  OpOptions options_;
  Kernel kernel_;
  Tensor null_;  // the Context's buffer for unused bindings
};

// An attention op tuned from the device's limits: also the plan it runs with.
class PlannedAttentionOp : public AttentionOp {
 public:
  const AttentionPlan& plan() const { return plan_; }

 protected:
  using AttentionOp::AttentionOp;

  AttentionPlan plan_;
};
}  // namespace detail

// K = h W_k^T once per source sequence: memory [B, S, hidden] (f16 with fp16_storage),
// w_k [key_dim, hidden] f32 -> keys [B, S, key_dim] (f16 with fp16_storage).
class VKRNN_API KeyProjection : public detail::AttentionOp {
 public:
  KeyProjection(Context& ctx, const AttentionConfig& config, const OpOptions& options = {});
  void record(Sequence& seq, const Tensor& memory, const Tensor& w_k, const Tensor& keys) const;
  std::uint32_t dispatches() const { return 1; }

 private:
  std::uint32_t tile_ = 0, rows_per_invocation_ = 0;
};

// Raw scores [B, (heads,) S] (f32; -inf at positions >= length). general / additive first run
// a small query-projection dispatch (W q (+ b)) into op-owned scratch.
class VKRNN_API AttentionScores : public detail::PlannedAttentionOp {
 public:
  AttentionScores(Context& ctx, const AttentionConfig& config, const OpOptions& options = {});
  void record(Sequence& seq, const Tensor& keys, const Tensor& query, const Tensor& lengths,
              const Tensor& scores, const ScoreParams& params = {}) const;
  std::uint32_t dispatches() const;

 private:
  Kernel query_kernel_;
  Tensor projected_query_;
  std::shared_ptr<const Gemm> query_gemm_;  // instead of query_kernel_ (CPU drivers)
};

// Masked softmax over the source axis: scores [B, (heads,) S] f32 -> weights (same shape;
// f16 with fp16_storage). One dispatch when a row fits one workgroup tile, else two (partial
// (max, sum) per tile, then combine + normalise).
class VKRNN_API MaskedSoftmax : public detail::PlannedAttentionOp {
 public:
  MaskedSoftmax(Context& ctx, const AttentionConfig& config, const OpOptions& options = {});
  void record(Sequence& seq, const Tensor& scores, const Tensor& lengths,
              const Tensor& weights) const;
  std::uint32_t dispatches() const { return plan_.tiles == 1 ? 1 : 2; }

 private:
  Tensor partials_;
};

// context = sum_s weights[s] values[s] over s < length: weights [B, (heads,) S] (f16 with
// fp16_storage), values [B, S, hidden] (f16) -> context [B, hidden] f32. Tiled over S and the
// columns; one dispatch when a row is one S tile, else two (partials, then an ordered sum).
class VKRNN_API AttentionContext : public detail::PlannedAttentionOp {
 public:
  AttentionContext(Context& ctx, const AttentionConfig& config, const OpOptions& options = {});
  void record(Sequence& seq, const Tensor& weights, const Tensor& values, const Tensor& lengths,
              const Tensor& context) const;
  std::uint32_t dispatches() const { return plan_.tiles == 1 ? 1 : 2; }

 private:
  Tensor partials_;
};

// Scores -> masked softmax -> context in one pass over keys and values per query (online
// softmax, flash-decoding): long sources are split over workgroups whose (max, sum, partial
// context) the row's last workgroup to finish merges, or, where that merge would be long, a
// small combine dispatch; short sources take one workgroup per row. `weights` (optional; an
// empty Tensor() skips them) receives the normalised attention weights.
// On CPU drivers a record whose keys and values are one tensor (Luong dot / general over the
// encoder outputs) reads each key vector once (plan().streams_shared_keys), and large memories
// of keys and values apart are walked in several runs at once (plan().streams_values).
// Dispatches per step: 1, +1 combine when split with a long merge. The query projection of general / additive
// scores runs inside that dispatch (every workgroup of a row projects the query itself) where
// it fits the device's shared memory and the loop budget and, for split rows, adds each
// workgroup little beside its own keys and values; else in one more dispatch before it.
class VKRNN_API FusedAttention : public detail::PlannedAttentionOp {
 public:
  FusedAttention(Context& ctx, const AttentionConfig& config, const OpOptions& options = {});
  void record(Sequence& seq, const Tensor& keys, const Tensor& values, const Tensor& query,
              const Tensor& lengths, const Tensor& context, const ScoreParams& params = {},
              const Tensor& weights = {}) const;
  // The same with the context written into a B x hidden view of a wider f32 matrix (e.g. its
  // columns of the next layer's concatenated input), saving the copy there.
  void record(Sequence& seq, const Tensor& keys, const Tensor& values, const Tensor& query,
              const Tensor& lengths, const MatrixView& context, const ScoreParams& params = {},
              const Tensor& weights = {}) const;
  // ... and the query read from a B x query_size view of a wider f32 matrix (e.g. the top layer
  // of a multi-layer decoder's h_n, or its columns of a concatenated input), in place unless
  // query_size is a multiple of 4 and the view's offset or row stride is not (the kernels read
  // such queries as vec4s): then through a copy, one dispatch more. It may share a tensor with
  // the context where their columns differ.
  void record(Sequence& seq, const Tensor& keys, const Tensor& values, const MatrixView& query,
              const Tensor& lengths, const MatrixView& context, const ScoreParams& params = {},
              const Tensor& weights = {}) const;
  std::uint32_t dispatches() const;

 private:
  Kernel query_kernel_, combine_kernel_;
  Kernel stream_kernel_;  // for keys that are the values, where the plan has one
  Tensor projected_query_, part_ml_, part_acc_;
  Tensor arrivals_;  // u32 per row, zero between dispatches: the in-kernel merge's counts
  std::shared_ptr<const Gemm> query_gemm_;  // instead of query_kernel_ (CPU drivers)
  std::uint32_t combine_per_invocation_ = 0;  // weight positions per combine invocation
  mutable Tensor raw_;  // raw scores, allocated on the first record() that wants weights
  mutable Tensor query_copy_;  // a query view that cannot be read in place, allocated on first use
  mutable std::shared_ptr<const Concat> copy_;
};

}  // namespace vkrnn
