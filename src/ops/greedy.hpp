#pragma once
// A greedy decoding step checked and laid out once, for argmax.comp (Argmax::record) and for
// gemv_argmax.comp (the output projection and the step in one dispatch, Gemm::record_greedy).
#include <cstddef>

#include "ops/gemv_tail.hpp"
#include "ops/kernels/decode.hpp"
#include "vkrnn/argmax.hpp"

namespace vkrnn::ops {

struct GreedyDispatch {
  kernels::Argmax::Push push;          // B, V and every field of the step
  kernels::Argmax::Bindings bindings;  // the step's tensors (logits included)
  std::size_t passes = 1;              // passes over a row: the max, the log-softmax, the copy
  std::size_t S = 0, emb = 0;          // attention weights and embedding floats copied per row
  Tensor gate;                         // GreedyStep::close_gate: the sequence's gate table
};

// The step as the tail of the output projection's GEMV (gemv_argmax.comp); its partials go to
// `scratch` (Gemm::greedy_scratch_words).
class GreedyTail final : public GemvTail {
 public:
  GreedyTail(const GreedyDispatch& greedy, const Tensor& scratch) : greedy(greedy), scratch(scratch) {}
  bool record(Context& ctx, Sequence& seq, const PlannedGemv& gemv) const override;  // gemm.cpp

 private:
  const GreedyDispatch& greedy;
  const Tensor& scratch;
};

// Checks the step against logits f32 [B, V] (Error naming the argument) and lays it out.
GreedyDispatch greedy_dispatch(const Tensor& logits, const GreedyStep& step);

}  // namespace vkrnn::ops
