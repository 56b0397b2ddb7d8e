#pragma once
// Multi-head scaled dot-product self-attention over whole sequences (encoder style):
//
//   e_ij = q_i . k_j / sqrt(head_dim),  a_ij = softmax_j(e_ij),  o_i = sum_j a_ij v_j
//
// per batch row and head, computed flash-attention style (key/value tiles streamed past each
// block of queries with an online softmax), so memory stays O(S * hidden) for any S. One
// dispatch per call. GPUs stage the tiles through shared memory; CPU drivers (lavapipe) keep
// query rows in registers and share K/V loads across a subgroup with shuffles (see
// shaders/self_attention.comp).
//
// Tensors: q, k, v, out are [batch, S, hidden] row-major with 1 <= S <= max_seq and
// hidden = heads * head_dim; head h owns columns [h * head_dim, (h + 1) * head_dim). q, k and v
// may be the same tensor (plain self-attention over h); out must be a different tensor.
// lengths: i32 [batch], the valid length of each batch row. Keys j >= length get weight 0 and
// query rows i >= length are written as zeros. Values outside [0, S] are clamped on the GPU;
// the std::span overload checks them on the host instead. With causal = true, query i also
// ignores keys j > i.
//
// Precision: fp32 in, fp32 out, fp32 arithmetic. With OpOptions::fp16_storage, q/k/v are f16
// tensors (fp32 arithmetic, fp32 out); it needs ctx.features().storage_buffer_16bit and throws
// Error(missing_feature) otherwise.
//
// Tuning: OpOptions::workgroup_size (lanes per workgroup) and OpOptions::tile (keys per tile)
// override the choice made from the device's limits; both are clamped to what the device
// allows (shared memory included) and to the unrolling budget of the CPU path.
// OpOptions::force_shared_memory_reduction turns the subgroup shuffles off (the path of devices
// without subgroup shuffle support). Pipelines compile per head_dim; on lavapipe the first
// dispatch of a new one costs ~1-3 s of LLVM compile (Mesa's disk cache keeps it afterwards).
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

struct SelfAttentionConfig {
  std::size_t batch = 1;
  std::size_t max_seq = 0;
  std::size_t hidden = 0;
  std::size_t heads = 1;
  bool causal = false;
  // Tuning overrides (0 = chosen from the device); tests use them to cover every code path.
  // lanes_per_row: lanes that share one query row (a power of two dividing the workgroup size).
  // 1 on CPU drivers for head_dim <= 128 ("solo" path: rows in registers, no shared memory);
  // more on GPUs so each lane keeps <= 16 output dims in registers (shared-memory path).
  std::uint32_t lanes_per_row = 0;
  // rows_per_lane: query rows each lane owns on the solo path (CPU drivers: 4 for
  // head_dim <= 32, 2 up to 128, 4 above, where outputs accumulate in memory; GPUs: 1).
  std::uint32_t rows_per_lane = 0;
};

// What the op runs with (chosen from the device, or forced through OpOptions and clamped).
struct SelfAttentionPlan {
  std::uint32_t workgroup_size = 0;  // lanes per workgroup
  std::uint32_t query_rows = 0;      // query rows per workgroup
  std::uint32_t lanes_per_row = 0;   // 1: solo path; > 1: shared-memory path
  std::uint32_t rows_per_lane = 0;   // solo path: query_rows = workgroup_size * rows_per_lane
  // Solo path: q / o rows in registers (head_dim <= 128), else outputs accumulated in `out`.
  bool accumulate_in_registers = false;
  std::uint32_t key_tile = 0;        // keys per tile
  // Solo path: K/V loads shared across the subgroup with subgroupShuffle (off with
  // OpOptions::force_shared_memory_reduction or without shuffle support).
  bool subgroup_shuffle = false;
  std::uint32_t subgroup_size = 0;
  std::uint32_t shared_bytes = 0;    // shared memory per workgroup
};

class VKRNN_API SelfAttention {
 public:
  SelfAttention(Context& ctx, const SelfAttentionConfig& config, const OpOptions& options = {});

  // Records one dispatch. `lengths` may be an empty Tensor(): every length is then S.
  void record(Sequence& seq, const Tensor& q, const Tensor& k, const Tensor& v,
              const Tensor& lengths, const Tensor& out) const;
  // Same, with host lengths (checked: batch values in [0, S]) uploaded through the sequence.
  void record(Sequence& seq, const Tensor& q, const Tensor& k, const Tensor& v,
              std::span<const std::int32_t> lengths, const Tensor& out) const;

  // Optional, for inspection / visualisation of small S: writes the full attention weights
  // a[b, h, i, j] (f32 [batch, heads, S, S], S from q) with the same masks (masked keys and
  // padded rows are 0; every valid row sums to 1). A separate kernel recomputes the scores
  // (two passes over the keys per row): O(S^2 * head_dim) work and O(S^2) memory, so it throws
  // Error(out_of_range) when the weights exceed the device's maxStorageBufferRange.
  void record_weights(Sequence& seq, const Tensor& q, const Tensor& k, const Tensor& lengths,
                      const Tensor& weights) const;

  // Blocking convenience: records into a fresh sequence, submits and waits.
  void run(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& lengths,
           const Tensor& out) const;

  const SelfAttentionConfig& config() const { return config_; }
  std::size_t head_dim() const { return head_dim_; }
  const SelfAttentionPlan& plan() const { return plan_; }
  // The plan the op would choose on `device` (what the constructor does, without a device).
  static SelfAttentionPlan plan_for(const DeviceInfo& device, const SelfAttentionConfig& config,
                                    const OpOptions& options = {});

 private:
  void check(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor* lengths,
             const Tensor* out) const;

  Context* ctx_;
  SelfAttentionConfig config_;
  OpOptions options_;
  std::size_t head_dim_ = 0;
  SelfAttentionPlan plan_;
  Kernel kernel_;
  Kernel weights_kernel_;
  Tensor null_;  // the Context's buffer for unused bindings
  std::uint32_t weights_workgroup_ = 0;
};

}  // namespace vkrnn
