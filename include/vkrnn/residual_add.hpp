#pragma once
// ResidualAdd: out = a + b elementwise over two f32 tensors of the same element count (residual
// connections around attention / RNN layers). out may be a or b (then it runs in place).
#include <array>
#include <cstdint>

#include "vkrnn/context.hpp"
#include "vkrnn/export.h"
#include "vkrnn/kernel.hpp"
#include "vkrnn/options.hpp"
#include "vkrnn/sequence.hpp"
#include "vkrnn/tensor.hpp"

namespace vkrnn {

class VKRNN_API ResidualAdd {
 public:
  explicit ResidualAdd(Context& ctx, const OpOptions& options = {});

  void record(Sequence& seq, const Tensor& a, const Tensor& b, const Tensor& out) const;

 private:
  Context* ctx_;
  std::uint32_t workgroup_size_;
  Kernel kernel_, kernel_inplace_;
};

}  // namespace vkrnn
