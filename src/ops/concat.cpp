// Concat: row-wise concatenation of strided matrices (shaders/concat.comp).
#include "vkrnn/concat.hpp"

#include <algorithm>
#include <bit>
#include <limits>

#include <fmt/format.h>

#include "ops/common.hpp"
#include "ops/kernels/elementwise.hpp"
#include "plan.hpp"
#include "vkrnn/error.hpp"

namespace vkrnn {
namespace {

constexpr const char* kOp = "Concat";

using K = kernels::Concat;

std::size_t check_view(const MatrixView& v, const std::string& arg) { return ops::expect_view(kOp, arg, v); }

}  // namespace

Concat::Concat(Context& ctx, const OpOptions& options) : ctx_(&ctx) {
  workgroup_size_ = std::bit_floor(plan::elementwise_workgroup(ctx.device(), options));
  kernel_ = kernels::make<K>(ctx, {.local_size_x = workgroup_size_});
  null_ = kernels::null_tensor(ctx);
}

void Concat::record(Sequence& seq, std::span<const MatrixView> sources, const MatrixView& out) const {
  if (sources.empty() || sources.size() > 4) {
    throw Error(ErrorCode::invalid_argument, fmt::format("{}: 1 to 4 sources, got {}", kOp, sources.size()));
  }
  K::Push p{};
  const std::size_t rows = sources[0].rows;
  std::size_t width = 0;
  for (std::size_t k = 0; k < sources.size(); ++k) {
    const MatrixView& s = sources[k];
    const std::size_t ld = check_view(s, fmt::format("sources[{}]", k));
    if (s.rows != rows) {
      throw Error(ErrorCode::invalid_argument,
                  fmt::format("{}: sources[{}] has {} rows, sources[0] has {}", kOp, k, s.rows, rows));
    }
    if (s.tensor.storage_ptr() == out.tensor.storage_ptr()) {
      throw Error(ErrorCode::invalid_argument, fmt::format("{}: sources[{}] shares memory with out", kOp, k));
    }
    p.cols[k] = static_cast<std::uint32_t>(s.cols);
    p.offset[k] = static_cast<std::uint32_t>(s.offset);
    p.ld[k] = static_cast<std::uint32_t>(ld);
    width += s.cols;
  }
  const std::size_t out_ld = check_view(out, "out");
  if (out.rows != rows || out.cols != width) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{}: argument 'out': expected {} x {} (the sources' rows x their summed columns), got {} x {}",
                            kOp, rows, width, out.rows, out.cols));
  }
  if (std::uint64_t(rows) * width > std::numeric_limits<std::uint32_t>::max()) {
    throw Error(ErrorCode::out_of_range, fmt::format("{}: {} x {} elements exceed 32-bit indexing", kOp, rows, width));
  }
  p.rows = static_cast<std::uint32_t>(rows);
  p.width = static_cast<std::uint32_t>(width);
  p.out_offset = static_cast<std::uint32_t>(out.offset);
  p.out_ld = static_cast<std::uint32_t>(out_ld);
  auto src = [&](std::size_t k) { return k < sources.size() ? sources[k].tensor : Tensor{}; };
  kernels::dispatch<K>(
      seq, kernel_, {.s0 = src(0), .s1 = src(1), .s2 = src(2), .s3 = src(3), .outs = out.tensor}, p,
      ops::fold_groups(ops::ceil_div(std::uint64_t(rows) * width, workgroup_size_), ctx_->device(), kOp),
      null_);
}

}  // namespace vkrnn
