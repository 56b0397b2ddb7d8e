#pragma once
// A greedy decoding step checked and laid out once, for argmax.comp (Argmax::record) and for
// gemv_argmax.comp (the output projection and the step in one dispatch, Gemm::record_greedy).
#include <cstddef>

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

// Checks the step against logits f32 [B, V] (Error naming the argument) and lays it out.
GreedyDispatch greedy_dispatch(const Tensor& logits, const GreedyStep& step);

}  // namespace vkrnn::ops
