// Activation: elementwise tanh / sigmoid / relu (shaders/activation.comp).
#include "vkrnn/activation.hpp"

#include <limits>

#include <fmt/format.h>

#include "ops/attention_common.hpp"
#include "vkrnn/error.hpp"

namespace vkrnn {
namespace {
constexpr const char* kOp = "Activation";
struct Push {
  std::uint32_t n;
};
}  // namespace

Activation::Activation(Context& ctx, ActivationFn fn, const OpOptions& options) : ctx_(&ctx), fn_(fn) {
  OpOptions o = options;
  if (o.workgroup_size == 0) o.workgroup_size = 64;
  workgroup_size_ = attention_detail::pick_workgroup(ctx.device(), o);
  const auto f = static_cast<std::uint32_t>(fn);
  if (f > 2) throw Error(ErrorCode::invalid_argument, fmt::format("{}: unknown function {}", kOp, f));
  kernel_ = ctx.kernel({"activation", {workgroup_size_, 1, 1, f}, 2, sizeof(Push)});
  kernel_inplace_ = ctx.kernel({"activation_inplace", {workgroup_size_, 1, 1, f}, 1, sizeof(Push)});
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
  const Push push{static_cast<std::uint32_t>(x.size())};
  const Groups g = attention_detail::fold_groups((x.size() + workgroup_size_ - 1) / workgroup_size_, ctx_->device(), kOp);
  if (x.storage_ptr() == y.storage_ptr()) {
    seq.dispatch(kernel_inplace_, {inout(y)}, push, g);
  } else {
    seq.dispatch(kernel_, {in(x), out(y)}, push, g);
  }
}

}  // namespace vkrnn
