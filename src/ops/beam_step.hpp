#pragma once
// BeamStep: a whole beam-search step after the decoder's logits in one dispatch
// (shaders/beam_step.comp): TopK's log-softmax candidates of each alive row, BeamSearch's merge,
// the decoder states' rows gathered from their parents, and the check that
// Sequence::close_gate_when_all(state.done) would record. Separately that is 4 dispatches plus
// one per state (two for a state kept in a wider tensor's columns); Seq2Seq's beam search takes
// this one where make() says it fits.
#include <cstddef>
#include <optional>
#include <span>

#include "vkrnn/beam_search.hpp"
#include "vkrnn/context.hpp"
#include "vkrnn/kernel.hpp"
#include "vkrnn/linear.hpp"
#include "vkrnn/options.hpp"

namespace vkrnn {

class BeamStep {
 public:
  static constexpr std::size_t max_gathers = 4;
  // Distinct tensors the gathers may read and write, together (gathers into one tensor, e.g.
  // a decoder input [embedding; h~] that a token lookup and a state both write, share one).
  static constexpr std::size_t max_tensors = 6;
  // The kernel's bindings: devices that bind fewer per stage run the separate kernels.
  static constexpr std::uint32_t storage_buffers = 24;
  // Rows that follow the hypotheses into the next step: `outer` blocks of [R, cols] 32-bit
  // elements; block o's row r at from_offset + o * R * cols + r * from_ld of `from` and
  // to_offset + o * R * cols + r * to_ld of `to` (outer > 1 only for packed rows).
  enum class Kind : std::uint8_t {
    parent,  // `to` row r = `from` row parents[r] (a state into its other buffer)
    back,    // `from` row r = `from` row parents[r], in place (a state in some columns of a wider
             // tensor; outer 1). BeamStep does it through shared memory; `to` is the scratch
             // the separate kernels go through (gather, then copy back), which BeamStep leaves alone.
    token,   // `to` row r = `from` row next_tokens[r], clamped to [0, vocab) (an embedding lookup)
  };
  struct Gather {
    Tensor from, to;
    std::size_t cols = 0, outer = 1, from_offset = 0, from_ld = 0, to_offset = 0, to_ld = 0;
    Kind kind = Kind::parent;
    std::size_t vocab = 0;  // Kind::token: rows of the table
  };

  // The fused step for `search` over logits [R, V] with these gathers (their sizes; the tensors
  // may change from step to step), or nullopt where it does not fit: more than max_gathers or
  // max_tensors, a parent gather within one tensor, row strides beyond 65535 elements, more
  // storage buffers than the device binds per stage, or no workgroup keeps one invocation
  // within the loop budget (plan::kLoopBudget). The caller then records TopK, BeamSearch's
  // step, the gathers and the gate check apart. options.tile, where set: decoder rows per
  // workgroup (tests force both shapes; by default a source per workgroup on CPU drivers, a
  // row on GPUs).
  // With `projection` (the decoder's output layer, out_features V), the record() that takes it
  // may compute the logits in the same dispatch (gemv_beam.comp): make() sizes its scratch.
  static std::optional<BeamStep> make(Context& ctx, const BeamSearch& search, std::size_t V,
                                      std::span<const Gather> gathers, const OpOptions& options = {},
                                      const Linear* projection = nullptr);

  // Zeroes the kernel's tickets (once per recording, before the first step).
  void record_reset(Sequence& seq) const;
  // Step t: candidates of logits f32 [R, V] (forced i32 [R]: a token per row, or empty) into
  // cand_values / cand_ids [R, kc]; rows whose max is not finite get nonfinite[r] = t + 1 where
  // it is 0; the merge writes parents and next_tokens i32 [R]; the gathers run (for the next
  // step: callers pass none on the last; make()'s sizes or less, a copy in place only if make()
  // had one, any tensors); close_gate:
  // inside the sequence's gate, close it once every done flag is set (and count the check), as
  // close_gate_when_all(state.done).
  void record(Sequence& seq, const BeamSearch::State& state, std::size_t t, const Tensor& logits,
              const Tensor& forced, const Tensor& nonfinite, const Tensor& cand_values, const Tensor& cand_ids,
              const Tensor& parents, const Tensor& next_tokens, std::span<const Gather> gathers,
              bool close_gate) const;

  // logits = x W^T + b through `projection` (as projection.record(seq, x, logits)), then the
  // step as record() above: in one dispatch where make() had this projection and the GEMV the
  // device plans for it can take the step (true: gemv_beam.comp, where the projection's
  // workgroups also merge the sources their rows belong to), else as the two (false).
  bool record(Sequence& seq, const Linear& projection, const MatrixView& x, const BeamSearch::State& state,
              std::size_t t, const Tensor& logits, const Tensor& forced, const Tensor& nonfinite,
              const Tensor& cand_values, const Tensor& cand_ids, const Tensor& parents, const Tensor& next_tokens,
              std::span<const Gather> gathers, bool close_gate) const;

  // Whether make() had a projection the device's GEMV may take the step into.
  bool takes_projection() const { return projection_ != nullptr; }
  std::uint32_t workgroup_size() const { return workgroup_; }
  std::size_t rows_per_workgroup() const { return rows_; }

 private:
  BeamStep(Context& ctx, const BeamSearch& search) : ctx_(&ctx), search_(search) {}
  struct Prepared;  // record()'s checked arguments: the push block and the slot tensors
  Prepared prepare(Sequence& seq, const BeamSearch::State& state, std::size_t t, const Tensor& logits,
                   const Tensor& forced, const Tensor& nonfinite, const Tensor& cand_values, const Tensor& cand_ids,
                   const Tensor& parents, const Tensor& next_tokens, std::span<const Gather> gathers,
                   bool close_gate) const;
  void dispatch(Sequence& seq, const Prepared& p, const Tensor& logits) const;  // beam_step.comp
  Context* ctx_;
  BeamSearch search_;
  std::size_t V_ = 0, rows_ = 1, gather_floats_ = 0;  // per decoder row, the most make() planned for
  std::uint32_t workgroup_ = 1;
  bool back_ = false;  // make()'s gathers had a copy in place (the kernel is built for it)
  std::uint32_t k_max_ = 1;  // the kernels' K_MAX
  Kernel kernel_;
  Tensor ticket_, null_;
  const Linear* projection_ = nullptr;  // make()'s, where gemv_beam.comp may take it
  Tensor scratch_;                      // gemv_beam.comp's partials and ticket
  friend class BeamTail;
};

}  // namespace vkrnn
