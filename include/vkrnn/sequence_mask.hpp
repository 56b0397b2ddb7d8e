#pragma once
// SequenceMask: zeroes the padded steps of a batch of sequences, x f32 read as [B, T, W]:
//   out[b, t, :] = t < lengths[b] ? x[b, t, :] : 0
// lengths: i32 [B]. On the GPU a length is clamped to [0, T] (negative: the whole row is
// zeroed; above T: nothing is); the std::span overloads check them on the host instead. Padded
// elements become +0 whatever x held there (NaN and infinities included: a select, not a
// product). out may be x itself (in place: only padded elements are written). One dispatch.
#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

#include "vkrnn/context.hpp"
#include "vkrnn/export.h"
#include "vkrnn/kernel.hpp"
#include "vkrnn/options.hpp"
#include "vkrnn/sequence.hpp"
#include "vkrnn/tensor.hpp"

namespace vkrnn {

// How x and out are read: batch rows of `steps` steps of `width` elements each.
struct MaskShape {
  std::size_t batch = 0, steps = 0, width = 0;
};

class VKRNN_API SequenceMask {
 public:
  explicit SequenceMask(Context& ctx, const OpOptions& options = {});

  // x and out: f32 tensors of batch * steps * width elements (any shape, e.g. a reshaped view),
  // lengths: i32 with `batch` elements.
  void record(Sequence& seq, const MaskShape& shape, const Tensor& x, const Tensor& lengths,
              const Tensor& out) const;
  // Host lengths (checked: `batch` values in [0, steps]) uploaded through the sequence. In place
  // with every length = steps there is nothing to zero: nothing is recorded.
  void record(Sequence& seq, const MaskShape& shape, const Tensor& x,
              std::span<const std::int32_t> lengths, const Tensor& out) const;
  // The shape from x [B, T, ...] (rank >= 2; W = the product of the trailing dims, 1 at rank 2).
  void record(Sequence& seq, const Tensor& x, const Tensor& lengths, const Tensor& out) const;
  void record(Sequence& seq, const Tensor& x, std::span<const std::int32_t> lengths,
              const Tensor& out) const;

  std::uint32_t workgroup_size() const { return workgroup_size_; }

 private:
  Context* ctx_;
  std::uint32_t workgroup_size_;
  Kernel kernel_, kernel_inplace_;
};

}  // namespace vkrnn
