#pragma once
// Dense layers: Y[M,N] = X[M,K] W^T + b with W stored [N,K] (torch.nn.Linear's layout).
//
// Gemm is the stateless op on tensors the caller owns (any M from 1 up, sub-blocks through
// MatrixView); Linear owns its weights and loads them from PyTorch's layout. Kernels:
//  - gemv.comp, subgroup variant: a subgroup per block of TM rows of X x TN rows of W splits K
//    and reduces with subgroupAdd: small M (batch-1 matrix-vector products) on GPUs.
//  - gemv.comp, per-invocation variant (gemv_nosubgroup): each invocation computes a whole
//    TM x TN block alone. Devices without subgroup arithmetic use it; so do CPU devices such as
//    lavapipe, with 16 x 16 blocks, because there every buffer load costs far more than the
//    arithmetic and only big register blocks amortise them (measured: 2x over 4 x 4 blocks,
//    4x over the subgroup variant).
//  - gemm.comp: shared-memory tiled GEMM, for many rows on GPUs (on lavapipe its barriers make
//    it the slowest of the three).
// Weights may be stored as float16 (OpOptions::fp16_storage or weight_storage f16) or as int8
// with a per-row f32 scale (weight_storage i8: W[n][k] ~ q[n][k] * scale[n], a quarter of the
// f32 bytes; the same kernels with the WEIGHT_I8 specialization constant, reading four int8 per
// 32-bit word). Arithmetic and accumulation stay fp32.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "vkrnn/activation.hpp"
#include "vkrnn/context.hpp"
#include "vkrnn/export.h"
#include "vkrnn/kernel.hpp"
#include "vkrnn/options.hpp"
#include "vkrnn/sequence.hpp"
#include "vkrnn/tensor.hpp"

namespace vkrnn {

namespace plan {
struct Gemm;
}
namespace ops {
class GemvTail;
}
class Argmax;

// A row-major matrix inside a tensor: element (r, c) is tensor element offset + r * ld + c.
struct VKRNN_API MatrixView {
  Tensor tensor;
  std::size_t rows = 0;
  std::size_t cols = 0;
  std::size_t offset = 0;  // elements
  std::size_t ld = 0;      // elements between rows; 0 means cols (packed)

  // The whole tensor as a matrix: its last dimension is cols, the rest are rows.
  static MatrixView of(const Tensor& t);
};

class VKRNN_API Gemm {
 public:
  // gemv: the subgroup variant (the per-invocation one where subgroups are missing or
  // force_shared_memory_reduction is set); gemv_invocation: the per-invocation variant.
  enum class Path { automatic, gemv, gemv_invocation, tiled };

  explicit Gemm(Context& ctx, const OpOptions& options = {});

  // y = x w^T + bias. x [..., K] f32 (M = product of the leading dims, 1 for a vector),
  // w [N, K] f32 (or f16), bias [N] f32 or an empty Tensor, y [..., N] f32 with M rows.
  void record(Sequence& seq, const Tensor& x, const Tensor& w, const Tensor& bias,
              const Tensor& y) const;
  // The same on sub-blocks: x is M x K, w is N x K, y is M x N; bias[bias_offset + n].
  void record(Sequence& seq, const MatrixView& x, const MatrixView& w, const Tensor& bias,
              std::size_t bias_offset, const MatrixView& y) const;
  // int8 weights: w is an i8 view, W[n][k] = w(n, k) * scale[n], whose tensor also holds the
  // per-row f32 scales: N floats from element (byte) scale_offset on, a multiple of 4. One buffer
  // for both because the kernels already bind four, the Vulkan minimum per stage. The view's
  // row stride and offset are multiples of 4 (the kernels read four int8 at a time; the last
  // row's word past K must exist, its padding values do not matter). Linear builds this layout.
  void record_i8(Sequence& seq, const MatrixView& x, const MatrixView& w, std::size_t scale_offset,
                 const Tensor& bias, std::size_t bias_offset, const MatrixView& y) const;

  // Which kernel record() uses for M rows (automatic: from M and the device).
  Path path_for(std::size_t m) const;
  // Tests and benchmarks pin a path; automatic restores the device's choice.
  void set_path(Path path) { forced_ = path; }
  // y = f(x w^T + bias) from now on: the activation in the kernels' store (no dispatch of its
  // own); nullopt (the default) for none.
  void set_activation(std::optional<ActivationFn> fn) { activation_ = fn; }
  std::optional<ActivationFn> activation() const { return activation_; }

 private:
  Context* ctx_;
  OpOptions options_;
  Path forced_ = Path::automatic;
  std::optional<ActivationFn> activation_;
  std::shared_ptr<const plan::Gemm> plan_;  // from the device (src/plan.hpp)
  Tensor null_;                             // the Context's buffer for unused bindings

  // tail: y and the step after it in one dispatch (ops::GemvTail: gemv_argmax.comp for
  // Argmax::record with a projection, gemv_beam.comp for BeamStep's); false, nothing recorded,
  // where they cannot share one.
  // w's layout: row-major (all zero); Linear's blocks of `rows` rows (plan::pack_rows; w.ld its
  // padded row length); or a recurrent layer's W_ih in gate blocks of `gate_units` hidden units,
  // `gate_h` units a gate (plan::Rnn, ops::pack_gate_blocks). Only the GEMV paths read the
  // packed layouts (Linear's: the per-invocation one); the others are an error.
  struct Packing {
    std::uint32_t rows = 0, gate_units = 0, gate_h = 0;
  };
  bool record_any(Sequence& seq, const MatrixView& x, const MatrixView& w, bool i8, std::size_t scale_offset,
                  const Packing& packing, const Tensor& bias, std::size_t bias_offset, const MatrixView& y,
                  const ops::GemvTail* tail = nullptr) const;
  // The scratch words gemv_argmax.comp needs for M x N (0: never fused here).
  std::size_t greedy_scratch_words(std::size_t M, std::size_t N) const;
  // The blocks of N (x-workgroups) a GEMV that a tail joins takes for M x N (0: M takes the
  // tiled path, which none joins): each publishes a partial per row.
  std::size_t tail_row_groups(std::size_t M, std::size_t N) const;
  friend class Argmax;
  friend class BeamStep;
  friend class Linear;
  friend class Rnn;
};

// Symmetric per-row int8 quantization of a [rows, cols] row-major matrix, as Linear stores it
// and tools/export_torch.py exports it: scale = max|row| / 127 (0 for a row of zeros),
// q = round(w / scale) half to even, W ~ q * scale. A non-finite weight is
// Error(invalid_argument) naming its row and column.
struct QuantizedRows {
  std::vector<std::int8_t> q;  // [rows, cols]
  std::vector<float> scales;   // [rows]
};
VKRNN_API QuantizedRows quantize_rows(std::span<const float> w, std::size_t rows, std::size_t cols);
// Its inverse: W[r][c] = q[r * cols + c] * scales[r], rows = scales.size() (q.size() must be
// rows * cols: Error(invalid_argument) otherwise).
VKRNN_API std::vector<float> dequantize_rows(std::span<const std::int8_t> q, std::span<const float> scales,
                                             std::size_t cols);

class VKRNN_API Linear {
 public:
  Linear(Context& ctx, std::size_t in_features, std::size_t out_features, bool bias = true,
         const OpOptions& options = {});

  // weight [out_features, in_features] row-major (PyTorch's nn.Linear.weight) with its shape
  // as the source has it, bias [out_features] (must be empty when the layer has no bias, and
  // given when it has one). A weight_shape other than {out_features, in_features} -- e.g. a
  // transposed weight, which has the right element count -- is Error(invalid_argument) naming
  // both shapes, as is a data size that does not match weight_shape.
  // With weight_storage i8 the layer quantizes the weights itself (quantize_rows).
  void load(std::span<const float> weight, const Shape& weight_shape, std::span<const float> bias = {});
  // Already-quantized weights as exported (safetensors I8 + F32 per-row scales): q [out, in]
  // int8, scales [out] finite and >= 0, W = q * scale per row. An f32/f16 layer stores the
  // dequantized values. Wrong shapes or sizes are Error(invalid_argument) naming both shapes.
  void load_quantized(std::span<const std::int8_t> q, const Shape& q_shape, std::span<const float> scales,
                      const Shape& scales_shape, std::span<const float> bias = {});

  // y [..., out_features] = x [..., in_features] W^T + b (then f(y) with set_activation).
  void record(Sequence& seq, const Tensor& x, const Tensor& y) const;
  void record(Sequence& seq, const MatrixView& x, const MatrixView& y) const;
  // Blocking convenience: rows x in_features floats in, rows x out_features out.
  std::vector<float> forward(std::span<const float> x, std::size_t rows) const;

  std::size_t in_features() const { return in_; }
  std::size_t out_features() const { return out_; }
  bool has_bias() const { return has_bias_; }
  WeightStorage weight_storage() const { return storage_; }  // f32, f16 or i8 (resolved)
  // f32/f16 [out, in]. i8: one flat tensor, the rows padded to a multiple of 4 columns (with 0)
  // and then, from element scale_offset() on, the out f32 scales (Gemm::record_i8's layout).
  // With pack_rows() > 0 (CPU drivers, OpOptions::pack_weights) the matrix is stored flat in
  // blocks of pack_rows() rows (the last block holds the rest), 16 bytes of each row in turn
  // (4 f32, 8 f16 or 16 int8 values), rows padded with zeros to whole 16-byte units: the GEMV
  // then reads contiguous memory at every step of K. i8 scales follow from scale_offset().
  const Tensor& weight() const { return weight_; }
  std::uint32_t pack_rows() const { return pack_rows_; }
  std::size_t scale_offset() const { return scale_offset_; }
  const Tensor& bias() const { return bias_; }
  Gemm& gemm() { return gemm_; }
  const Gemm& gemm() const { return gemm_; }
  // y = f(x W^T + b): the activation fused into the layer's kernels (Gemm::set_activation).
  void set_activation(std::optional<ActivationFn> fn) { gemm_.set_activation(fn); }

 private:
  Context* ctx_;
  std::size_t in_, out_;
  bool has_bias_;
  bool loaded_ = false;
  WeightStorage storage_;
  Gemm gemm_;
  Tensor weight_, bias_;
  std::size_t scale_offset_ = 0;
  std::uint32_t pack_rows_ = 0;  // plan::pack_rows, 0: row-major
  std::size_t ld_ = 0;           // the stored row length (padded columns)

  std::size_t padded_in() const { return (in_ + 3) / 4 * 4; }
  // Elements in 16 bytes of a stored row (the packed layout's unit).
  std::size_t unit() const { return storage_ == WeightStorage::i8 ? 16 : storage_ == WeightStorage::f16 ? 8 : 4; }
  // The stored int8 tensor: q [out, in] and its scales in this layer's layout.
  std::vector<std::int8_t> stored_i8(std::span<const std::int8_t> q, std::span<const float> scales) const;
  void check_bias(std::span<const float> bias) const;
  void check_shape(const Shape& shape, const char* what, const char* method) const;
  void store(std::span<const float> weight, std::span<const float> bias);
  // record(), or with `tail` the step after it in the same dispatch (Gemm::record_any); false:
  // nothing recorded.
  bool record_any(Sequence& seq, const MatrixView& x, const MatrixView& y, const ops::GemvTail* tail) const;
  friend class Argmax;
  friend class BeamStep;
};

}  // namespace vkrnn
