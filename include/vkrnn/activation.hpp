#pragma once
// Activation: elementwise tanh / sigmoid / relu over an f32 tensor, in place or into another
// tensor of the same element count. One dispatch.
#include <cstdint>

#include "vkrnn/context.hpp"
#include "vkrnn/export.h"
#include "vkrnn/kernel.hpp"
#include "vkrnn/options.hpp"
#include "vkrnn/sequence.hpp"
#include "vkrnn/tensor.hpp"

namespace vkrnn {

enum class ActivationFn : std::uint32_t { tanh = 0, sigmoid = 1, relu = 2 };

class VKRNN_API Activation {
 public:
  Activation(Context& ctx, ActivationFn fn, const OpOptions& options = {});

  // out = f(x); x and out f32 with the same element count; out may be x (in place).
  void record(Sequence& seq, const Tensor& x, const Tensor& out) const;

 private:
  Context* ctx_;
  ActivationFn fn_;
  std::uint32_t workgroup_size_;
  Kernel kernel_, kernel_inplace_;
};

}  // namespace vkrnn
