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
// Weights may be stored as float16 (OpOptions::fp16_storage; arithmetic stays fp32).
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

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

  // Which kernel record() uses for M rows (automatic: from M and the device).
  Path path_for(std::size_t m) const;
  // Tests and benchmarks pin a path; automatic restores the device's choice.
  void set_path(Path path) { forced_ = path; }

 private:
  Context* ctx_;
  OpOptions options_;
  Path forced_ = Path::automatic;
  std::shared_ptr<const plan::Gemm> plan_;  // from the device (src/plan.hpp)
  Tensor null_;                             // the Context's buffer for unused bindings
};

class VKRNN_API Linear {
 public:
  Linear(Context& ctx, std::size_t in_features, std::size_t out_features, bool bias = true,
         const OpOptions& options = {});

  // weight [out_features, in_features] row-major (PyTorch's nn.Linear.weight) with its shape
  // as the source has it, bias [out_features] (must be empty when the layer has no bias, and
  // given when it has one). A weight_shape other than {out_features, in_features} -- e.g. a
  // transposed weight, which has the right element count -- is Error(invalid_argument) naming
  // both shapes, as is a data size that does not match weight_shape.
  void load(std::span<const float> weight, const Shape& weight_shape, std::span<const float> bias = {});

  // y [..., out_features] = x [..., in_features] W^T + b.
  void record(Sequence& seq, const Tensor& x, const Tensor& y) const;
  void record(Sequence& seq, const MatrixView& x, const MatrixView& y) const;
  // Blocking convenience: rows x in_features floats in, rows x out_features out.
  std::vector<float> forward(std::span<const float> x, std::size_t rows) const;

  std::size_t in_features() const { return in_; }
  std::size_t out_features() const { return out_; }
  bool has_bias() const { return has_bias_; }
  const Tensor& weight() const { return weight_; }
  const Tensor& bias() const { return bias_; }
  Gemm& gemm() { return gemm_; }

 private:
  Context* ctx_;
  std::size_t in_, out_;
  bool has_bias_;
  bool loaded_ = false;
  Gemm gemm_;
  Tensor weight_, bias_;
};

}  // namespace vkrnn
