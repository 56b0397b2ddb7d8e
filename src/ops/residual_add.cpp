#include "vkrnn/residual_add.hpp"

#include <algorithm>

#include <fmt/format.h>

#include "ops/attention_common.hpp"
#include "vkrnn/error.hpp"

namespace vkrnn {
namespace {

constexpr const char* kOp = "ResidualAdd";

struct Push {
  std::uint32_t n;
};

}  // namespace

ResidualAdd::ResidualAdd(Context& ctx, const OpOptions& options)
    : ctx_(&ctx) {
  workgroup_size_ = attention_detail::elementwise_workgroup(ctx.device(), options);
  kernel_ = ctx.kernel({"residual_add", {workgroup_size_, 1, 1}, 3, sizeof(Push)});
  kernel_inplace_ = ctx.kernel({"residual_add_inplace", {workgroup_size_, 1, 1}, 2, sizeof(Push)});
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
  const Push push{static_cast<std::uint32_t>(n)};
  const Groups grid = attention_detail::fold_groups(attention_detail::ceil_div(n, workgroup_size_), ctx_->device(), kOp);
  const bool out_is_a = out.storage_ptr() == a.storage_ptr();
  const bool out_is_b = out.storage_ptr() == b.storage_ptr();
  if (out_is_a && out_is_b) {  // a + a in place
    seq.dispatch(kernel_inplace_, {inout(out), in(out)}, push, grid);
  } else if (out_is_a || out_is_b) {  // addition commutes: add the other one into out
    seq.dispatch(kernel_inplace_, {inout(out), in(out_is_a ? b : a)}, push, grid);
  } else {
    seq.dispatch(kernel_, {in(a), in(b), vkrnn::out(out)}, push, grid);
  }
}

}  // namespace vkrnn
