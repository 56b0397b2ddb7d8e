#pragma once
// Concat: row-wise concatenation of up to four matrices into one, out[r, :] = [a[r, :]; b[r, :]
// ...] (torch.cat(..., dim=-1) of 2-D operands), each operand and the output a strided
// MatrixView, so the result can be a block of a larger tensor. One dispatch, a pure copy.
#include <cstdint>
#include <span>

#include "vkrnn/context.hpp"
#include "vkrnn/export.h"
#include "vkrnn/kernel.hpp"
#include "vkrnn/linear.hpp"
#include "vkrnn/options.hpp"
#include "vkrnn/sequence.hpp"
#include "vkrnn/tensor.hpp"

namespace vkrnn {

class VKRNN_API Concat {
 public:
  explicit Concat(Context& ctx, const OpOptions& options = {});

  // sources: 1..4 views with the same row count; out: rows x (sum of their cols). No source may
  // share memory with out.
  void record(Sequence& seq, std::span<const MatrixView> sources, const MatrixView& out) const;
  void record(Sequence& seq, std::initializer_list<MatrixView> sources, const MatrixView& out) const {
    record(seq, std::span<const MatrixView>(sources.begin(), sources.size()), out);
  }

 private:
  Context* ctx_;
  std::uint32_t workgroup_size_;
  Kernel kernel_;
  Tensor null_;  // the Context's buffer for unused bindings
};

}  // namespace vkrnn
