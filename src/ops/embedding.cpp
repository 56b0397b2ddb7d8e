// Embedding: row gather by token id (shaders/embedding.comp).
#include "vkrnn/embedding.hpp"

#include <algorithm>
#include <limits>

#include <fmt/format.h>

#include "ops/common.hpp"
#include "ops/kernels/elementwise.hpp"
#include "plan.hpp"
#include "vkrnn/error.hpp"

namespace vkrnn {
namespace {

constexpr const char* kOp = "Embedding";

using K = kernels::Embedding;

std::string describe(const Tensor& t) {
  return t.valid() ? fmt::format("{} {}{}", to_string(t.dtype()), to_string(t.shape()),
                                 t.name().empty() ? std::string() : fmt::format(" ('{}')", t.name()))
                   : std::string("an empty tensor");
}

std::size_t check_view(const MatrixView& v, const std::string& arg) { return ops::expect_view(kOp, arg, v); }

}  // namespace

void check_token_ids(std::span<const std::int32_t> ids, std::size_t vocab, const char* what, std::size_t row) {
  for (std::size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || static_cast<std::size_t>(ids[i]) >= vocab) {
      throw Error(ErrorCode::invalid_argument,
                  fmt::format("{}: token id {} at row {}, position {} is outside the vocabulary [0, {})", what, ids[i],
                              row, i, vocab));
    }
  }
}

Embedding::Embedding(Context& ctx, const OpOptions& options) : ctx_(&ctx) {
  workgroup_size_ = plan::embedding_workgroup(ctx.device(), options);
  kernel_ = kernels::make<K>(ctx, {.local_size_x = workgroup_size_});
  null_ = kernels::null_tensor(ctx);
}

void Embedding::record(Sequence& seq, const MatrixView& table, const Tensor& ids, const MatrixView& out,
                       const Tensor& bad_ids) const {
  if (!ids.valid() || ids.dtype() != DType::i32 || ids.size() == 0) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{}: argument 'ids': expected a non-empty i32 tensor, got {}", kOp, describe(ids)));
  }
  const std::size_t table_ld = check_view(table, "table");
  const std::size_t out_ld = check_view(out, "out");
  if (out.rows != ids.size() || out.cols != table.cols) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{}: argument 'out': expected {} x {} (one row of {} per id), got {} x {}", kOp, ids.size(),
                            table.cols, table.cols, out.rows, out.cols));
  }
  if (out.tensor.storage_ptr() == table.tensor.storage_ptr() || out.tensor.storage_ptr() == ids.storage_ptr()) {
    throw Error(ErrorCode::invalid_argument, fmt::format("{}: 'out' must not share memory with 'table' or 'ids'", kOp));
  }
  if (bad_ids.valid() && (bad_ids.dtype() != DType::u32 || bad_ids.size() != 2)) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{}: argument 'bad_ids': expected u32 [2], got {}", kOp, describe(bad_ids)));
  }
  if (table.rows > std::numeric_limits<std::int32_t>::max()) {
    throw Error(ErrorCode::out_of_range, fmt::format("{}: {} table rows exceed i32 token ids", kOp, table.rows));
  }
  const K::Push push{static_cast<std::uint32_t>(ids.size()), static_cast<std::uint32_t>(table.cols),
                     static_cast<std::uint32_t>(table.rows), static_cast<std::uint32_t>(table.offset),
                     static_cast<std::uint32_t>(table_ld), static_cast<std::uint32_t>(out.offset),
                     static_cast<std::uint32_t>(out_ld), bad_ids.valid() ? EMBEDDING_REPORT : 0u};
  // Each invocation copies dim / workgroup floats of its row: rows wide enough to break the
  // loop budget (the beam search gathers whole encoder outputs, S x M floats, per row) get a
  // wider workgroup; lavapipe would silently stop copying.
  const std::uint32_t wg = plan::embedding_row(ctx_->device(), workgroup_size_, table.cols);
  const Kernel kernel = wg == workgroup_size_ ? kernel_ : kernels::make<K>(*ctx_, {.local_size_x = wg});
  kernels::dispatch<K>(seq, kernel, {.ids = ids, .table = table.tensor, .outs = out.tensor, .flag = bad_ids},
                       push, ops::fold_groups(ids.size(), ctx_->device(), kOp), null_);
}

void Embedding::record(Sequence& seq, const Tensor& table, const Tensor& ids, const Tensor& out,
                       const Tensor& bad_ids) const {
  if (!table.valid() || table.rank() != 2) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{}: argument 'table': expected f32 [vocab, dim], got {}", kOp, describe(table)));
  }
  const std::size_t dim = table.dim(1);
  if (!out.valid() || out.rank() == 0 || out.shape().back() != dim || out.size() != ids.size() * dim) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{}: argument 'out': expected f32 [..., {}] with {} rows (one per id), got {}", kOp, dim,
                            ids.valid() ? ids.size() : 0, describe(out)));
  }
  record(seq, MatrixView::of(table), ids, MatrixView{out, ids.size(), dim, 0, dim}, bad_ids);
}

std::vector<float> Embedding::lookup(const Tensor& table, std::span<const std::int32_t> ids) const {
  if (!table.valid() || table.rank() != 2) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{}: argument 'table': expected f32 [vocab, dim], got {}", kOp, describe(table)));
  }
  if (ids.empty()) throw Error(ErrorCode::invalid_argument, fmt::format("{}::lookup: no ids", kOp));
  check_token_ids(ids, table.dim(0), "Embedding::lookup");
  const Tensor t_ids = ctx_->tensor({ids.size()}, DType::i32, "Embedding.lookup ids");
  const Tensor t_out = ctx_->tensor({ids.size(), table.dim(1)}, DType::f32, "Embedding.lookup out");
  Sequence seq = ctx_->sequence({.label = "Embedding::lookup"});
  seq.upload(t_ids, ids);
  record(seq, table, t_ids, t_out);
  seq.download(t_out);
  seq.eval();
  return seq.read<float>(t_out);
}

Embedding::BadIds Embedding::BadIds::from(std::span<const std::uint32_t> flag) {
  if (flag.size() != 2) {
    throw Error(ErrorCode::invalid_argument, fmt::format("{}::BadIds: expected 2 words, got {}", kOp, flag.size()));
  }
  return {flag[0], flag[0] ? ~flag[1] : 0u};
}

}  // namespace vkrnn
