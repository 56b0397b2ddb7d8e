#pragma once
// TopK: the k largest entries of each row of x [B, N], descending, ties to the lower index (the
// order of a stable sort), optionally of log_softmax(x) instead of x (beam-search candidates).
// One dispatch; one workgroup per row keeps per-invocation sorted lists and merges them in k
// rounds (subgroup arithmetic, or shared-memory trees with force_shared_memory_reduction).
// k <= TopK::max_k. Rows with fewer than k entries (N < k) are padded with index -1, -inf.
#include <cstddef>
#include <cstdint>

#include "vkrnn/context.hpp"
#include "vkrnn/export.h"
#include "vkrnn/kernel.hpp"
#include "vkrnn/options.hpp"
#include "vkrnn/sequence.hpp"
#include "vkrnn/tensor.hpp"

namespace vkrnn {

class VKRNN_API TopK {
 public:
  static constexpr std::size_t max_k = 64;

  // k: entries kept per row (1 .. max_k).
  TopK(Context& ctx, std::size_t k, const OpOptions& options = {});

  // x f32 [B, N] -> values f32 [B, k], indices i32 [B, k].
  void record(Sequence& seq, const Tensor& x, const Tensor& values, const Tensor& indices,
              bool log_softmax = false) const;

  std::size_t k() const { return k_; }

 private:
  Context* ctx_;
  std::size_t k_;
  Kernel kernel_;
};

}  // namespace vkrnn
