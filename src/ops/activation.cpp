// Activation: elementwise tanh / sigmoid / relu (shaders/activation.comp).
#include "vkrnn/activation.hpp"

#include <bit>
#include <limits>

#include <fmt/format.h>

#include "ops/common.hpp"
#include "ops/kernels/elementwise.hpp"
#include "plan.hpp"
#include "vkrnn/error.hpp"

namespace vkrnn {
namespace {
constexpr const char* kOp = "Activation";
using K = kernels::Activation;
using KInPlace = kernels::ActivationInPlace;
}  // namespace

Activation::Activation(Context& ctx, ActivationFn fn, const OpOptions& options) : ctx_(&ctx), fn_(fn) {
  workgroup_size_ = std::bit_floor(plan::elementwise_workgroup(ctx.device(), options));
  const auto f = static_cast<std::uint32_t>(fn);
  if (f > 2) throw Error(ErrorCode::invalid_argument, fmt::format("{}: unknown function {}", kOp, f));
  kernel_ = kernels::make<K>(ctx, {.local_size_x = workgroup_size_, .FUNC = f});
  kernel_inplace_ = kernels::make<KInPlace>(ctx, {.local_size_x = workgroup_size_, .FUNC = f});
}

void Activation::record(Sequence& seq, const Tensor& x, const Tensor& y) const {
  for (auto [t, name] : {std::pair{&x, "x"}, std::pair{&y, "out"}}) {
    if (!t->valid() || t->dtype() != DType::f32 || t->size() == 0) {
      throw Error(ErrorCode::invalid_argument,
                  fmt::format("{}: argument '{}': expected a non-empty f32 tensor, got {}", kOp, name,
                              t->valid() ? fmt::format("{} {}", to_string(t->dtype()), to_string(t->shape()))
                                         : std::string("an empty tensor")));
    }
  }
  if (x.size() != y.size()) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{}: 'x' has {} elements, 'out' {}", kOp, x.size(), y.size()));
  }
  if (x.size() > std::numeric_limits<std::uint32_t>::max()) {
    throw Error(ErrorCode::out_of_range, fmt::format("{}: {} elements exceed 32-bit indexing", kOp, x.size()));
  }
  const K::Push push{static_cast<std::uint32_t>(x.size())};
  const Groups g = ops::fold_groups(ops::ceil_div(x.size(), workgroup_size_), ctx_->device(), kOp);
  if (x.storage_ptr() == y.storage_ptr()) {
    kernels::dispatch<KInPlace>(seq, kernel_inplace_, {.xs = y}, push, g);
  } else {
    kernels::dispatch<K>(seq, kernel_, {.xs = x, .outs = y}, push, g);
  }
}

}  // namespace vkrnn
