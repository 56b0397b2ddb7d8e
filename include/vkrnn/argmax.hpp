#pragma once
// Argmax over the last axis (the vocabulary) per batch row, and the bookkeeping of one greedy
// decoding step, in one dispatch (shaders/argmax.comp).
//
//   index[b]    = argmax_v logits[b, v]   (the lowest v among equal maxima, as torch.argmax;
//                                           NaN counts as the largest value, as there:
//                                           [1, NaN, 3, NaN] -> 1)
//   max[b]      = logits[b, index[b]]
//   log_prob[b] = log_softmax(logits[b])[index[b]] = -log(sum_v exp(logits[b, v] - max[b]))
//
// The index is always in [0, V). Non-finite rows (a NaN or +inf anywhere, or every entry -inf:
// the max is not finite, nor is the log-softmax) can be flagged on the GPU: `nonfinite`, an
// optional u32 [B] the caller zeroes, gets a nonzero mark in row b (the first time only), so a
// decoder learns from B words read back with its results which row went wrong and when.
// -inf entries next to finite ones are fine (masked tokens).
//
// Each invocation loops over V / workgroup entries: rows too long for the loop budget
// (plan::kLoopBudget, docs/runtime.md; lavapipe silently ends longer loops) get wider workgroups,
// and Error(out_of_range) past the device's widest.
//
// One workgroup per row scans the row in strides and reduces with subgroup arithmetic (or
// shared-memory trees: OpOptions::force_shared_memory_reduction, or devices without subgroup
// arithmetic). Deterministic: fixed reduction order, no atomics.
#include <cstddef>
#include <cstdint>
#include <optional>

#include "vkrnn/context.hpp"
#include "vkrnn/export.h"
#include "vkrnn/kernel.hpp"
#include "vkrnn/linear.hpp"
#include "vkrnn/options.hpp"
#include "vkrnn/sequence.hpp"
#include "vkrnn/tensor.hpp"

namespace vkrnn {

// What one greedy step writes besides the argmax (docs/model-format.md, "Decoding").
// History tensors hold `capacity` columns per row ([B, capacity] or [B, capacity, X]); the
// step writes column `step`. Every tensor except next_tokens is optional (empty = not written).
struct GreedyStep {
  Tensor next_tokens;  // i32 [B]: the chosen token, fed back as the next input
  // u32 [B], read and written: with it, a row that emits `eos` is finished from then on and
  // emits `pad` with score 0 and zero logits / attention rows. Without it (fixed-length
  // decoding) every row keeps its own argmax, EOS included.
  Tensor finished;
  std::int32_t eos = -1;
  std::int32_t pad = 0;
  std::size_t step = 0;
  // u32 [B], optional, read and written: a live row whose logits are non-finite while
  // nonfinite[b] == 0 gets nonfinite[b] = step + 1 (the first such step, counted from 1).
  Tensor nonfinite;
  // i32 [B], optional: where chosen[b] >= 0, the token live row b emits instead of its argmax
  // (sampled or forced: LogitsProcessor); its score is then its log_softmax.
  Tensor chosen;
  Tensor tokens;     // i32 [B, capacity]
  Tensor scores;     // f32 [B, capacity]: log_softmax of the chosen token
  Tensor logits;     // f32 [B, capacity, V]: a copy of the step's logits
  Tensor weights;    // f32 [B, S]: the step's attention weights, copied into `attention`
  Tensor attention;  // f32 [B, capacity, S]
  // Optional: the chosen token's row of `embedding` (vocab x dim, vocab >= V) is copied into
  // row b of `embedding_out` (B x dim): the next decoder step's input, without a dispatch.
  std::optional<MatrixView> embedding, embedding_out;
  // Inside the sequence's gate (Sequence::begin_gate), with `finished`: close it once every row
  // has finished, as close_gate_when_all(finished) after the step would, in the step's own
  // dispatch. Only Argmax::record with the projection does, and only where it fuses (it returns
  // true); else the caller records close_gate_when_all.
  bool close_gate = false;
};

class VKRNN_API Argmax {
 public:
  explicit Argmax(Context& ctx, const OpOptions& options = {});

  // logits f32 [B, V] -> indices i32 [B]; max_values f32 [B] and log_probs f32 [B] optional.
  // nonfinite: optional u32 [B]; a non-finite row sets it to 1 where it is 0.
  void record(Sequence& seq, const Tensor& logits, const Tensor& indices, const Tensor& max_values = {},
              const Tensor& log_probs = {}, const Tensor& nonfinite = {}) const;
  // One greedy decoding step over logits f32 [B, V].
  void record(Sequence& seq, const Tensor& logits, const GreedyStep& step) const;
  // The output projection and the greedy step after it: logits [B, V] = x W^T + b through
  // `projection` (V = its out_features, no activation), then record(seq, logits, step). Where
  // it can, one dispatch does both (gemv_argmax.comp: every workgroup of the projection reduces
  // the logits it computed to a partial max and log-softmax sum, and the last one to finish
  // merges them and records the step), which saves a dispatch and a barrier per token. The
  // partials go to `scratch`, u32 with at least fused_scratch_words(projection, B) elements,
  // zero before its first use (each dispatch leaves it zero again): one scratch per decode in
  // flight. Two dispatches instead without a scratch, with a logits history or chosen tokens in
  // the step, or where the device or the shape does not allow it (the projection on the tiled
  // GEMM, its K split for the loop budget, fewer than 15 storage buffers per stage). Returns
  // whether it fused (and then closed the gate where step.close_gate asked).
  bool record(Sequence& seq, const Linear& projection, const MatrixView& x, const Tensor& logits,
              const GreedyStep& step, const Tensor& scratch = {}) const;
  // The scratch elements the fused step needs for B rows of `projection` (0: it never fuses).
  std::size_t fused_scratch_words(const Linear& projection, std::size_t B) const;

  std::uint32_t workgroup_size() const { return workgroup_size_; }
  bool subgroup_reduction() const { return subgroups_; }

 private:
  // The kernel whose workgroup keeps a row within the loop budget: V entries read in `passes`
  // passes, S attention weights and `emb` embedding floats copied.
  Kernel kernel_for(std::size_t V, std::size_t passes, std::size_t S, std::size_t emb) const;

  Context* ctx_;
  // The planned kernel (src/plan.hpp: plan::argmax); rows too long for the loop budget get wider.
  std::uint32_t workgroup_size_;
  bool subgroups_, one_subgroup_;
  Kernel kernel_;
  Tensor null_;  // the Context's buffer for unused bindings
};

}  // namespace vkrnn
