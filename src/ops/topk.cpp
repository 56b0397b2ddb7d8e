// TopK over the last axis (shaders/topk.comp).
#include "vkrnn/topk.hpp"

#include <bit>
#include <limits>

#include <fmt/format.h>

#include "ops/common.hpp"
#include "ops/kernels/decode.hpp"
#include "plan.hpp"
#include "vkrnn/error.hpp"

namespace vkrnn {
namespace {
constexpr const char* kOp = "TopK";
using K = kernels::TopK;

Kernel make_kernel(Context& ctx, std::size_t k, const plan::Reduction& p) {
  // K_MAX: the register list length, a power of two >= k (few distinct pipelines).
  return kernels::make<K>(ctx,
                          {.local_size_x = p.workgroup,
                           .K_MAX = std::bit_ceil(static_cast<std::uint32_t>(k)),
                           .ONE_SUBGROUP = p.one_subgroup},
                          p.variant);
}

}  // namespace

TopK::TopK(Context& ctx, std::size_t k, const OpOptions& options) : ctx_(&ctx), k_(k) {
  if (k == 0 || k > max_k) {
    throw Error(ErrorCode::invalid_argument, fmt::format("{}: k = {} is outside [1, {}]", kOp, k, max_k));
  }
  const plan::Reduction p = plan::topk(ctx.device(), options);
  workgroup_size_ = p.workgroup;
  subgroups_ = p.variant.subgroup;
  one_subgroup_ = p.one_subgroup;
  kernel_ = make_kernel(ctx, k, p);
  null_ = kernels::null_tensor(ctx);
}

void TopK::record(Sequence& seq, const Tensor& x, const Tensor& values, const Tensor& indices, bool log_softmax,
                  const Tensor& nonfinite, std::uint32_t mark, const Tensor& forced) const {
  if (!x.valid() || x.dtype() != DType::f32 || x.rank() != 2 || x.dim(0) == 0 || x.dim(1) == 0) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{}: argument 'x': expected f32 [B, N] with B, N >= 1, got {}", kOp,
                            x.valid() ? fmt::format("{} {}", to_string(x.dtype()), to_string(x.shape())) : std::string("an empty tensor")));
  }
  if (x.size() > std::numeric_limits<std::uint32_t>::max() / 2) {
    throw Error(ErrorCode::out_of_range, fmt::format("{}: x {} exceeds 32-bit indexing", kOp, to_string(x.shape())));
  }
  const std::size_t B = x.dim(0);
  ops::expect(kOp, "values", values, {B, k_}, DType::f32);
  ops::expect(kOp, "indices", indices, {B, k_}, DType::i32);
  if (nonfinite.valid()) {
    ops::expect(kOp, "nonfinite", nonfinite, {B}, DType::u32);
    if (mark == 0) throw Error(ErrorCode::invalid_argument, fmt::format("{}: the nonfinite mark must not be 0", kOp));
  }
  if (forced.valid()) ops::expect(kOp, "forced", forced, {B}, DType::i32);
  const K::Push push{static_cast<std::uint32_t>(B), static_cast<std::uint32_t>(x.dim(1)),
                     static_cast<std::uint32_t>(k_), log_softmax ? 1u : 0u, nonfinite.valid() ? mark : 0u,
                     forced.valid() ? 1u : 0u};
  // Rows too long for one invocation's loop budget get a wider workgroup.
  const plan::Reduction planned{.variant = {.subgroup = subgroups_}, .workgroup = workgroup_size_,
                                .one_subgroup = one_subgroup_};
  const plan::Reduction row = plan::topk_row(ctx_->device(), planned, x.dim(1), k_);
  const bool planned_kernel = row.workgroup == workgroup_size_ && row.variant.subgroup == subgroups_;
  const Kernel k = planned_kernel ? kernel_ : make_kernel(*ctx_, k_, row);
  // Without a flag tensor (mark 0) the shader never touches binding 3, nor binding 4 without
  // forced tokens (the write sink stands in).
  kernels::dispatch<K>(seq, k, {.xs = x, .values = values, .ids = indices, .nonfinite = nonfinite, .forced = forced}, push,
                       ops::fold_groups(B, ctx_->device(), kOp), null_);
}

}  // namespace vkrnn
