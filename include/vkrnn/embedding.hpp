#pragma once
// Embedding: row gather by token id, out[r, :] = table[ids[r], :] (torch.nn.Embedding's lookup).
//
// The table is any row-major f32 matrix (a MatrixView: [vocab, dim], possibly a block of a
// larger tensor); out is a MatrixView too, so a lookup can write the leading columns of a
// concatenated input in place. The same op reorders rows of a state by index.
//
// Token ids: given by the caller on the host, check them with check_token_ids() (the blocking
// lookup() does). On the GPU an id outside [0, vocab) is clamped to the nearest valid row
// (never an out-of-bounds read) and, when a `bad_ids` tensor (u32 [2], zero-filled by the
// caller before its first use) is bound, counted there: read it back with BadIds::from().
// One dispatch; one workgroup per row.
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "vkrnn/context.hpp"
#include "vkrnn/export.h"
#include "vkrnn/kernel.hpp"
#include "vkrnn/linear.hpp"
#include "vkrnn/options.hpp"
#include "vkrnn/sequence.hpp"
#include "vkrnn/tensor.hpp"

namespace vkrnn {

// Checks host token ids: every id in [0, vocab). Error(invalid_argument) naming `what`, the
// first bad id, its position (row, column) and the vocabulary size.
VKRNN_API void check_token_ids(std::span<const std::int32_t> ids, std::size_t vocab, const char* what,
                               std::size_t row = 0);

class VKRNN_API Embedding {
 public:
  explicit Embedding(Context& ctx, const OpOptions& options = {});

  // ids: i32 tensor of N elements (any shape); table: vocab x dim; out: N x dim.
  void record(Sequence& seq, const MatrixView& table, const Tensor& ids, const MatrixView& out,
              const Tensor& bad_ids = {}) const;
  // table [vocab, dim] f32, out [..., dim] f32 with N rows.
  void record(Sequence& seq, const Tensor& table, const Tensor& ids, const Tensor& out,
              const Tensor& bad_ids = {}) const;

  // Blocking convenience: checks the ids on the host (Error(invalid_argument) naming the id,
  // its position and the vocabulary size), then returns ids.size() x dim floats.
  std::vector<float> lookup(const Tensor& table, std::span<const std::int32_t> ids) const;

  struct VKRNN_API BadIds {
    std::uint32_t count = 0;      // ids clamped
    std::uint32_t first_row = 0;  // the lowest row with a bad id (valid when count > 0)
    static BadIds from(std::span<const std::uint32_t> flag);
  };

  std::uint32_t workgroup_size() const { return workgroup_size_; }

 private:
  Context* ctx_;
  std::uint32_t workgroup_size_;
  Kernel kernel_;
  Tensor null_;  // the Context's buffer for unused bindings
};

}  // namespace vkrnn
