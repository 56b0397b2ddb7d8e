#pragma once
// LogitsProcessor: the logits processing of one decoding step, in place on logits f32 [B, V]
// between a decoder's output projection and its choice of token (shaders/logits_processor.comp),
// and optionally that choice by sampling. One dispatch per step, one workgroup per row; the
// row's token history stays on the GPU. The rules follow CTranslate2 (docs/runtime.md,
// "Decoding options"):
//
//   repetition_penalty  tokens that were an input of an earlier step (after BOS) of the row:
//                       x < 0 ? x * penalty : x / penalty (once per token, however often seen)
//   temperature         x / T
//   suppressed, unk     -> -inf
//   min_length          eos -> -inf while step < min_length (step 0: the first token)
//   no_repeat_ngram     -> -inf for every token that would repeat an n-gram of the row's tokens
//   suppressed sequence -> -inf for its last token when its other tokens are the row's last
//                       generated tokens (one token: always)
//   sample              the token to emit: top-k, then top-p of what is left (ties at either
//                       threshold are kept), then a draw from the softmax of the kept entries
//                       by Gumbel-max with Philox4x32-10 (key = seed, counter = (v, step, row)):
//                       the same seed gives the same tokens on every device and batch size.
//
// Error(invalid_argument) for out-of-range settings (T <= 0, penalty <= 0, top_p outside (0, 1],
// ids outside [0, V)), Error(out_of_range) past the loop budget.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "vkrnn/context.hpp"
#include "vkrnn/export.h"
#include "vkrnn/kernel.hpp"
#include "vkrnn/options.hpp"
#include "vkrnn/sequence.hpp"
#include "vkrnn/tensor.hpp"

namespace vkrnn {

struct LogitsProcessing {
  double temperature = 1.0;          // > 0
  double repetition_penalty = 1.0;   // > 0; 1: off
  std::size_t no_repeat_ngram_size = 0;  // 0: off
  std::size_t min_length = 0;        // needs eos
  std::int32_t eos = -1;
  std::int32_t unk = -1;             // >= 0: masked (disable_unk)
  std::vector<std::int32_t> suppressed;  // ids masked at every step
  // Sequences never generated (CTranslate2's suppress_sequences); one-token ones act as
  // `suppressed`, an empty one is Error(invalid_argument).
  std::vector<std::vector<std::int32_t>> suppressed_sequences;
  bool sample = false;               // write the sampled token to `chosen`
  std::size_t top_k = 0;             // sample: 0 = the whole vocabulary
  double top_p = 1.0;                // sample: (0, 1]
  std::uint64_t seed = 0;
  // Target prefix: row b emits prefix[b][t] at step t < prefix[b].size() (one vector per row,
  // or none); `chosen` holds -1 where neither a prefix nor sampling picks the token.
  std::vector<std::vector<std::int32_t>> prefix;

  // Whether any rule changes the logits or a token is sampled (else nothing is recorded).
  bool active() const {
    return temperature != 1.0 || repetition_penalty != 1.0 || no_repeat_ngram_size > 0 || (min_length > 0 && eos >= 0) ||
           unk >= 0 || !suppressed.empty() || !suppressed_sequences.empty() || sample || !prefix.empty();
  }
};

class VKRNN_API LogitsProcessor {
 public:
  // What persists across one decode's steps, for B rows and up to `capacity` steps.
  struct State {
    std::size_t B = 0, capacity = 0;
    // f32, so that beam search can gather their rows by parent (ids are exact below 2^24):
    Tensor history;  // f32 [B, capacity] (no_repeat_ngram_size, sequences): every step's input id
    Tensor seen;     // f32 [B, V] (repetition_penalty): 1 once a token was an input after BOS
    Tensor chosen;   // i32 [B] (sample, prefix): the sampled or forced tokens, -1: the argmax's
    Tensor prefix;   // i32 [B, P] (prefix), -1 past a row's prefix
    std::vector<std::int32_t> prefix_host;
  };

  LogitsProcessor(Context& ctx, std::size_t vocab, const LogitsProcessing& processing, const OpOptions& options = {});

  bool active() const { return processing_.active(); }
  const LogitsProcessing& processing() const { return processing_; }

  State make_state(std::size_t B, std::size_t capacity) const;
  // Before the first step of a decode: zeroes `seen`, uploads the suppressed ids and prefixes.
  void record_reset(Sequence& seq, const State& state) const;
  // Step `step` (< capacity) over logits f32 [B, V] (changed in place); inputs i32 [B]: the
  // step's input tokens (BOS at step 0). Records nothing when !active().
  void record(Sequence& seq, const State& state, const Tensor& logits, const Tensor& inputs, std::size_t step) const;

  std::uint32_t workgroup_size() const { return workgroup_size_; }

 private:
  Kernel kernel_for(std::size_t capacity) const;

  Context* ctx_;
  std::size_t V_;
  LogitsProcessing processing_;
  // The planned kernel (src/plan.hpp: plan::logits_processor); long rows get wider ones.
  std::uint32_t workgroup_size_ = 0;
  bool subgroups_ = false, one_subgroup_ = false;
  Kernel kernel_;
  Tensor suppressed_, null_;  // null_: the Context's buffer for unused bindings
  // The single ids, then (start, length) per sequence of 2 or more tokens, then their ids.
  std::vector<std::int32_t> suppressed_host_;
  std::uint32_t singles_ = 0, sequences_ = 0, longest_sequence_ = 0;
};

}  // namespace vkrnn
