#include "vkrnn/residual_add.hpp"

#include <algorithm>

#include <fmt/format.h>

#include "ops/common.hpp"
#include "ops/kernels/elementwise.hpp"
#include "plan.hpp"
#include "vkrnn/error.hpp"

namespace vkrnn {
namespace {

constexpr const char* kOp = "ResidualAdd";
using K = kernels::ResidualAdd;
using KInPlace = kernels::ResidualAddInPlace;

}  // namespace

ResidualAdd::ResidualAdd(Context& ctx, const OpOptions& options)
    : ctx_(&ctx) {
  workgroup_size_ = plan::elementwise_workgroup(ctx.device(), options);
  kernel_ = kernels::make<K>(ctx, {.local_size_x = workgroup_size_});
  kernel_inplace_ = kernels::make<KInPlace>(ctx, {.local_size_x = workgroup_size_});
}

void ResidualAdd::record(Sequence& seq, const Tensor& a, const Tensor& b, const Tensor& out) const {
  auto describe = [](const Tensor& t) {
    return t.valid() ? fmt::format("{} {}", to_string(t.dtype()), to_string(t.shape()))
                     : std::string("an empty tensor");
  };
  if (!a.valid() || a.dtype() != DType::f32 || a.size() == 0) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{}: argument 'a': expected a non-empty f32 tensor, got {}", kOp, describe(a)));
  }
  for (auto [t, name] : {std::pair{&b, "b"}, std::pair{&out, "out"}}) {
    if (!t->valid() || t->dtype() != DType::f32 || t->size() != a.size()) {
      throw Error(ErrorCode::invalid_argument,
                  fmt::format("{}: argument '{}': expected f32 with {} elements (like a {}), got {}",
                              kOp, name, a.size(), to_string(a.shape()), describe(*t)));
    }
  }
  const std::uint64_t n = a.size();
  if (n >= (std::uint64_t(1) << 32)) {
    throw Error(ErrorCode::out_of_range, fmt::format("{}: {} elements exceed 32-bit indexing", kOp, n));
  }
  const K::Push push{static_cast<std::uint32_t>(n)};
  const Groups grid = ops::fold_groups(ops::ceil_div(n, workgroup_size_), ctx_->device(), kOp);
  const bool out_is_a = out.storage_ptr() == a.storage_ptr();
  const bool out_is_b = out.storage_ptr() == b.storage_ptr();
  if (out_is_a || out_is_b) {  // addition commutes: add the other one (or a + a) into out
    kernels::dispatch<KInPlace>(seq, kernel_inplace_, {.as = out, .bs = out_is_a ? b : a}, push, grid);
  } else {
    kernels::dispatch<K>(seq, kernel_, {.as = a, .bs = b, .outs = out}, push, grid);
  }
}

}  // namespace vkrnn
