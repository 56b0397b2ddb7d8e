#include "vkrnn/sequence_mask.hpp"

#include <algorithm>
#include <string>
#include <utility>

#include <fmt/format.h>

#include "ops/common.hpp"
#include "ops/kernels/elementwise.hpp"
#include "plan.hpp"
#include "vkrnn/error.hpp"

namespace vkrnn {
namespace {

constexpr const char* kOp = "SequenceMask";

using K = kernels::SequenceMask;
using KInPlace = kernels::SequenceMaskInPlace;

std::string describe(const Tensor& t) {
  return t.valid() ? fmt::format("{} {}", to_string(t.dtype()), to_string(t.shape()))
                   : std::string("an empty tensor");
}

// The [B, T, W] reading of x: B and T its first two dims, W the product of the rest.
MaskShape shape_of(const Tensor& x) {
  if (!x.valid() || x.rank() < 2) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{}: argument 'x': expected f32 [B, T, ...] (rank >= 2), got {}", kOp, describe(x)));
  }
  std::size_t width = 1;
  for (std::size_t d = 2; d < x.rank(); ++d) width *= x.dim(d);
  return {x.dim(0), x.dim(1), width};
}

// Checks the shape, x and out; returns B * T * W.
std::uint64_t check_x_out(const MaskShape& shape, const Tensor& x, const Tensor& out) {
  const auto [B, T, W] = shape;
  if (B == 0 || T == 0 || W == 0) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{}: shape [B = {}, T = {}, W = {}]: every dimension must be >= 1", kOp, B, T, W));
  }
  const std::uint64_t n = std::uint64_t(B) * T * W;
  for (auto [t, name] : {std::pair{&x, "x"}, std::pair{&out, "out"}}) {
    if (!t->valid() || t->dtype() != DType::f32 || t->size() != n) {
      throw Error(ErrorCode::invalid_argument,
                  fmt::format("{}: argument '{}': expected f32 with {} elements ([B, T, W] = [{}, {}, {}]), got {}",
                              kOp, name, n, B, T, W, describe(*t)));
    }
  }
  if (n >= (std::uint64_t(1) << 32)) {
    throw Error(ErrorCode::out_of_range, fmt::format("{}: {} elements exceed 32-bit indexing", kOp, n));
  }
  return n;
}

}  // namespace

SequenceMask::SequenceMask(Context& ctx, const OpOptions& options)
    : ctx_(&ctx) {
  workgroup_size_ = plan::elementwise_workgroup(ctx.device(), options);
  kernel_ = kernels::make<K>(ctx, {.local_size_x = workgroup_size_});
  kernel_inplace_ = kernels::make<KInPlace>(ctx, {.local_size_x = workgroup_size_});
}

void SequenceMask::record(Sequence& seq, const MaskShape& shape, const Tensor& x,
                          const Tensor& lengths, const Tensor& out) const {
  const std::uint64_t n = check_x_out(shape, x, out);
  const auto [B, T, W] = shape;
  if (!lengths.valid() || lengths.dtype() != DType::i32 || lengths.size() != B) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{}: argument 'lengths': expected i32 with {} elements (one per batch row), got {}",
                            kOp, B, describe(lengths)));
  }
  const K::Push push{static_cast<std::uint32_t>(n), static_cast<std::uint32_t>(W), static_cast<std::uint32_t>(T)};
  const Groups grid = ops::fold_groups(ops::ceil_div(n, workgroup_size_), ctx_->device(), kOp);
  if (out.storage_ptr() == x.storage_ptr()) {
    // Valid elements are left alone: read-write, as the untouched ones must survive.
    kernels::dispatch<KInPlace>(seq, kernel_inplace_, {.xs = out, .lens = lengths}, push, grid);
  } else {
    kernels::dispatch<K>(seq, kernel_, {.xs = x, .lens = lengths, .outs = out}, push, grid);
  }
}

void SequenceMask::record(Sequence& seq, const MaskShape& shape, const Tensor& x,
                          std::span<const std::int32_t> lengths, const Tensor& out) const {
  check_x_out(shape, x, out);
  if (lengths.size() != shape.batch) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{}: argument 'lengths': expected {} values (one per batch row), got {}",
                            kOp, shape.batch, lengths.size()));
  }
  bool ragged = false;
  for (std::size_t b = 0; b < lengths.size(); ++b) {
    if (lengths[b] < 0 || static_cast<std::size_t>(lengths[b]) > shape.steps) {
      throw Error(ErrorCode::invalid_argument,
                  fmt::format("{}: argument 'lengths': lengths[{}] = {} is outside [0, T = {}]", kOp, b,
                              lengths[b], shape.steps));
    }
    ragged = ragged || static_cast<std::size_t>(lengths[b]) < shape.steps;
  }
  if (!ragged && out.storage_ptr() == x.storage_ptr()) return;  // in place, nothing to zero
  const Tensor device_lengths = ctx_->tensor({shape.batch}, DType::i32, "sequence_mask.lengths");
  seq.upload(device_lengths, lengths);
  record(seq, shape, x, device_lengths, out);
}

void SequenceMask::record(Sequence& seq, const Tensor& x, const Tensor& lengths, const Tensor& out) const {
  record(seq, shape_of(x), x, lengths, out);
}

void SequenceMask::record(Sequence& seq, const Tensor& x, std::span<const std::int32_t> lengths,
                          const Tensor& out) const {
  record(seq, shape_of(x), x, lengths, out);
}

}  // namespace vkrnn
