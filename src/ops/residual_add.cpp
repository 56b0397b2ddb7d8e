#include "vkrnn/residual_add.hpp"

#include <algorithm>

#include <fmt/format.h>

#include "vkrnn/error.hpp"

namespace vkrnn {
namespace {

constexpr const char* kOp = "ResidualAdd";

struct Push {
  std::uint32_t n;
};

}  // namespace

ResidualAdd::ResidualAdd(Context& ctx, const OpOptions& options)
    : max_groups_(ctx.device().max_workgroup_count) {
  const auto& dev = ctx.device();
  const std::uint32_t max_wg = std::max<std::uint32_t>(
      1, std::min(dev.max_workgroup_invocations, dev.max_workgroup_size[0]));
  workgroup_size_ = std::clamp<std::uint32_t>(options.workgroup_size ? options.workgroup_size : 64,
                                              1, max_wg);
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
  const std::uint64_t groups = (n + workgroup_size_ - 1) / workgroup_size_;
  const std::uint64_t gx = std::min<std::uint64_t>(groups, std::max<std::uint32_t>(1, max_groups_[0]));
  const std::uint64_t gy = (groups + gx - 1) / gx;
  if (gy > max_groups_[1]) {
    throw Error(ErrorCode::out_of_range, fmt::format("{}: {} workgroups exceed the device grid", kOp, groups));
  }
  const Groups grid{static_cast<std::uint32_t>(gx), static_cast<std::uint32_t>(gy), 1};
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
