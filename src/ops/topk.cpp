// TopK over the last axis (shaders/topk.comp).
#include "vkrnn/topk.hpp"

#include <bit>
#include <limits>

#include <fmt/format.h>

#include "ops/common.hpp"
#include "plan.hpp"
#include "vkrnn/error.hpp"

namespace vkrnn {
namespace {
constexpr const char* kOp = "TopK";
struct Push {
  std::uint32_t B, N, k, log_softmax;
};
}  // namespace

TopK::TopK(Context& ctx, std::size_t k, const OpOptions& options) : ctx_(&ctx), k_(k) {
  if (k == 0 || k > max_k) {
    throw Error(ErrorCode::invalid_argument, fmt::format("{}: k = {} is outside [1, {}]", kOp, k, max_k));
  }
  const DeviceInfo& dev = ctx.device();
  const plan::Reduction p = plan::topk(dev, options);
  const bool sg = p.variant.subgroup;
  const std::uint32_t wg = p.workgroup;
  // K_MAX: the register list length, a power of two >= k (few distinct pipelines).
  const std::uint32_t kmax = std::bit_ceil(static_cast<std::uint32_t>(k));
  kernel_ = ctx.kernel({sg ? "topk" : "topk_nosubgroup", {wg, 1, 1, kmax}, 3, sizeof(Push)});
}

void TopK::record(Sequence& seq, const Tensor& x, const Tensor& values, const Tensor& indices, bool log_softmax) const {
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
  const Push push{static_cast<std::uint32_t>(B), static_cast<std::uint32_t>(x.dim(1)), static_cast<std::uint32_t>(k_),
                  log_softmax ? 1u : 0u};
  seq.dispatch(kernel_, {in(x), out(values), out(indices)}, push, ops::fold_groups(B, ctx_->device(), kOp));
}

}  // namespace vkrnn
