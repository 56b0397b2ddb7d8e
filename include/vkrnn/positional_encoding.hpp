#pragma once
// Sinusoidal positional encoding, used in front of self-attention.
//
// PositionalEncoding adds the sinusoidal encoding of "Attention is all you need" (the PyTorch
// tutorial definition) to x [batch, S, d] (or [S, d]), f32:
//   out[b, s, 2i]   = x[b, s, 2i]   + sin(pos / 10000^(2i/d))
//   out[b, s, 2i+1] = x[b, s, 2i+1] + cos(pos / 10000^(2i/d)),   pos = s + position_offset
// d may be odd (the last column then gets only the sine). The angle is reduced exactly on the
// GPU, so the result is within ~1e-7 of the exact encoding at any position (PyTorch's own fp32
// table is off by up to ~pos * 6e-8 at large positions). out may be x itself (in place).
#include <array>
#include <cstddef>
#include <cstdint>

#include "vkrnn/context.hpp"
#include "vkrnn/export.h"
#include "vkrnn/kernel.hpp"
#include "vkrnn/options.hpp"
#include "vkrnn/sequence.hpp"
#include "vkrnn/tensor.hpp"

namespace vkrnn {

class VKRNN_API PositionalEncoding {
 public:
  PositionalEncoding(Context& ctx, std::size_t d_model, const OpOptions& options = {});

  void record(Sequence& seq, const Tensor& x, const Tensor& out,
              std::uint32_t position_offset = 0) const;

  std::size_t d_model() const { return d_model_; }

 private:
  Context* ctx_;
  std::size_t d_model_;
  std::uint32_t workgroup_size_;
  Tensor turns_;  // per column pair: w_i / 2pi as a 64-bit fixed-point fraction (lo, hi words)
  Kernel kernel_, kernel_inplace_;
};

}  // namespace vkrnn
