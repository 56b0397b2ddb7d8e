#pragma once
// TopK: the k largest entries of each row of x [B, N], descending, ties to the lower index (the
// order of a stable sort), optionally of log_softmax(x) instead of x (beam-search candidates).
// One dispatch; one workgroup per row keeps per-invocation sorted lists and merges them in k
// rounds (subgroup arithmetic, or shared-memory trees with force_shared_memory_reduction).
// k <= TopK::max_k. Rows with fewer than k entries (N < k) are padded with index -1, -inf.
// NaN ranks above +inf (as in torch.topk), so a row of N >= k entries always yields k indices
// in [0, N), whatever it holds. Non-finite rows (a NaN or +inf anywhere, or every entry -inf)
// can be flagged on the GPU in an optional u32 [B] the caller zeroes (see Argmax).
// Rows too long for the loop budget of one invocation get wider workgroups (lavapipe silently
// ends longer loops); Error(out_of_range) past the device's widest.
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

  // x f32 [B, N] -> values f32 [B, k], indices i32 [B, k]. nonfinite: optional u32 [B]; a
  // non-finite row sets it to `mark` (nonzero) where it is 0. forced: optional i32 [B]; a row
  // with forced[b] >= 0 (< N) yields that entry alone (its value or log-softmax, then -inf / -1
  // padding): beam search's target prefix.
  void record(Sequence& seq, const Tensor& x, const Tensor& values, const Tensor& indices,
              bool log_softmax = false, const Tensor& nonfinite = {}, std::uint32_t mark = 1,
              const Tensor& forced = {}) const;

  std::size_t k() const { return k_; }

 private:
  Context* ctx_;
  std::size_t k_;
  // The planned kernel (src/plan.hpp: plan::topk); rows too long for the loop budget get wider.
  std::uint32_t workgroup_size_ = 0;
  bool subgroups_ = false, one_subgroup_ = false;
  Kernel kernel_;
  Tensor null_;  // the Context's buffer for unused bindings
};

}  // namespace vkrnn
