#pragma once
// BeamSearch: the candidate merge of beam search (docs/model-format.md, "Beam search") on the
// GPU, one dispatch per decoding step (shaders/beam_search.comp), so that a whole beam decode
// can be one submission. The host only rebuilds the hypotheses from the histories afterwards
// (reconstruct()).
//
// Layout: B source rows, beam width K, R = B * K decoder rows; row b*K + i is alive slot i of
// source b. Each step reads TopK's candidates of every decoder row (values f32 [R, kc], sorted
// descending, ties to the lower id; ids i32 [R, kc], -1 padding; TopK with log_softmax gives
// exactly that) and, per source row b not yet done, merges them like the host walk:
//   candidate (h, w) of alive slot h < alive_count[b]: score = alive_score[b*K + h] + value
//   (fp32), ranked by score descending, then h, then w; ids < 0 skipped. Walking down: w == eos
//   -> finished record (t, h, score, 1); else -> next alive slot j (history[t][b*K + j] = (w, h)),
//   until the next alive list holds K. Then: >= S finished (S = finished_to_stop: K unless a
//   patience factor asks for more) -> done; else on the last step
//   (t + 1 == T) every next alive hypothesis becomes an unfinished record (t, j, score, 0), in
//   alive order, -> done; else the next alive list replaces the alive one.
// Preconditions the GPU cannot check (TopK's output meets them): each row's valid entries are
// sorted by value descending and its ids are distinct. NaN values order as the host's sort
// would not (it is undefined there too).
//
// Outputs of a step, for the decoder's next step:
//   parents[b*K + i]     = b*K + (parent slot of new alive slot i)   for i < alive count,
//                          b*K                                       for empty slots (slot 0's state),
//                          b*K + i (its own row)                     for rows done at or before t;
//   next_tokens[b*K + i] = the new slot's last token, or `pad` for empty slots and done rows.
// The whole decode is over when every done[b] != 0.
#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "vkrnn/context.hpp"
#include "vkrnn/export.h"
#include "vkrnn/kernel.hpp"
#include "vkrnn/options.hpp"
#include "vkrnn/sequence.hpp"
#include "vkrnn/tensor.hpp"

namespace vkrnn {

// One hypothesis rebuilt from the histories.
struct BeamHypothesis {
  std::vector<std::int32_t> tokens;  // generated ids, EOS included when finished
  // rows[i]: the decoder row (b*K + slot) whose step-i output produced tokens[i]; pick the
  // step's logits / attention of that row from per-step histories [T, R, ...].
  std::vector<std::uint32_t> rows;
  float score = 0.0f;     // sum of the candidates' values along the hypothesis (fp32)
  bool finished = false;  // ended with EOS (else it ran into max_steps)
};

class VKRNN_API BeamSearch {
 public:
  static constexpr std::size_t max_beam = 63;
  static constexpr std::size_t max_candidates = 64;
  static constexpr std::size_t max_finished_to_stop = 16 * max_beam;

  // The decode's GPU state (make_state() allocates it; record_reset() initialises it).
  struct State {
    // f32 [R] each, ping-pong by step parity: step t reads alive_score[t % 2] and writes
    // alive_score[(t + 1) % 2] (record_reset zeroes alive_score[0]).
    std::array<Tensor, 2> alive_score;
    Tensor alive_count;  // u32 [B]: alive hypotheses (1 after reset)
    Tensor done;         // u32 [B]: 1 once the row stopped
    Tensor fin_count;    // u32 [B]: finished records so far (<= F)
    // u32 [B, F, 4], F = S + 2K: records in arrival order {step t, slot, score as float bits,
    // finished}. finished = 1 (EOS at step t): slot = the parent alive slot h before step t.
    // finished = 0 (ran into max_steps, last step): slot = the new alive slot j at step t.
    Tensor fin;
    // i32 [T, R]: for step t and new alive slot j of source b, [t][b*K + j] holds the token and
    // the parent slot h; -1 where no hypothesis was made (reset fills -1).
    Tensor hist_token, hist_parent;
    Tensor heads;        // u32 [R, 4]: the kernel's per-list merge scratch
  };

  // batch: B; beam: K (1 .. max_beam); candidates: kc per decoder row (1 .. max_candidates);
  // max_steps: T >= 1. A negative eos never matches (no hypothesis finishes). finished_to_stop:
  // S, the finished hypotheses after which a row stops (0: K; at most max_finished_to_stop).
  BeamSearch(Context& ctx, std::size_t batch, std::size_t beam, std::size_t candidates, std::size_t max_steps,
             std::int32_t eos, std::int32_t pad, const OpOptions& options = {}, std::size_t finished_to_stop = 0);

  State make_state() const;
  // alive_count 1, alive_score[0] 0, done 0, fin_count 0, histories -1, records all ones.
  void record_reset(Sequence& seq, const State& state) const;
  // Step t (0 .. T-1) from cand_values f32 [R, kc] and cand_ids i32 [R, kc]; writes
  // parents i32 [R] and next_tokens i32 [R].
  void record_step(Sequence& seq, const State& state, std::size_t t, const Tensor& cand_values,
                   const Tensor& cand_ids, const Tensor& parents, const Tensor& next_tokens) const;

  // Downloads fin_count, fin, hist_token and hist_parent; after seq.wait(), reconstruct(seq, state).
  void record_download(Sequence& seq, const State& state) const;
  std::vector<std::vector<BeamHypothesis>> reconstruct(const Sequence& seq, const State& state) const;
  // Per source row, its finished records' hypotheses in arrival order (not ranked: ranking by
  // norm_score with ties by arrival is the caller's). Throws Error(format) on histories that
  // contradict the records.
  std::vector<std::vector<BeamHypothesis>> reconstruct(std::span<const std::uint32_t> fin_count,
                                                       std::span<const std::uint32_t> fin,
                                                       std::span<const std::int32_t> hist_token,
                                                       std::span<const std::int32_t> hist_parent) const;

  std::size_t batch() const { return B_; }
  std::size_t beam() const { return K_; }
  std::size_t candidates() const { return kc_; }
  std::size_t max_steps() const { return T_; }
  std::size_t rows() const { return B_ * K_; }
  std::size_t finished_to_stop() const { return S_; }
  // F: up to S - 1 records before the last step, then K EOS records or K unfinished ones, and
  // K more EOS records on the way (one per alive list).
  std::size_t finished_capacity() const { return S_ + 2 * K_; }
  std::int32_t eos() const { return eos_; }
  std::int32_t pad() const { return pad_; }

 private:
  Context* ctx_;
  std::size_t B_, K_, kc_, T_, S_;
  std::int32_t eos_, pad_;
  Kernel kernel_;
};

}  // namespace vkrnn
