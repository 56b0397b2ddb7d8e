// TopK over the last axis (shaders/topk.comp).
#include "vkrnn/topk.hpp"

#include <bit>
#include <limits>

#include <fmt/format.h>

#include "ops/attention_common.hpp"
#include "vkrnn/error.hpp"

namespace vkrnn {
namespace {
constexpr const char* kOp = "TopK";
struct Push {
  std::uint32_t B, N, k, log_softmax, mark;
};
}  // namespace

TopK::TopK(Context& ctx, std::size_t k, const OpOptions& options) : ctx_(&ctx), k_(k) {
  if (k == 0 || k > max_k) {
    throw Error(ErrorCode::invalid_argument, fmt::format("{}: k = {} is outside [1, {}]", kOp, k, max_k));
  }
  const DeviceInfo& dev = ctx.device();
  const bool sg = attention_detail::use_subgroups(dev, options);
  OpOptions o = options;
  // Each invocation holds k entries in registers: fewer, wider lists on GPUs.
  if (o.workgroup_size == 0) o.workgroup_size = dev.type == DeviceType::cpu ? std::max<std::uint32_t>(1, dev.subgroup_size) : 128;
  subgroups_ = sg;
  workgroup_size_ = attention_detail::pick_workgroup(dev, o);
  // K_MAX: the register list length, a power of two >= k (few distinct pipelines).
  kmax_ = std::bit_ceil(static_cast<std::uint32_t>(k));
  kernel_ = kernel(workgroup_size_);
  sink_ = ctx.tensor({1}, DType::u32, "TopK unused flags");
}

Kernel TopK::kernel(std::uint32_t workgroup) const {
  return ctx_->kernel({subgroups_ ? "topk" : "topk_nosubgroup", {workgroup, 1, 1, kmax_}, 4, sizeof(Push)});
}

// Loop iterations of one invocation of topk.comp: per entry of its slice an insertion into the
// sorted list (<= K_MAX shifts), the log-softmax pass, the list's setup and rescaling, and 2k + 2
// reductions (the max, then 2 per merge round).
Kernel TopK::kernel_for(std::size_t N) const {
  const DeviceInfo& dev = ctx_->device();
  auto loops = [&](std::uint64_t wg) {
    return (N + wg - 1) / wg * (kmax_ + 2) + 2 * kmax_ +
           (2 * k_ + 2) * attention_detail::reduction_loops(dev, subgroups_, wg) + 8;
  };
  const std::uint32_t wg = attention_detail::workgroup_within_budget(dev, workgroup_size_, loops);
  if (wg == 0) {
    throw Error(ErrorCode::out_of_range,
                fmt::format("{}: rows of N = {} with k = {} need more loop iterations per invocation than the "
                            "loop budget of {} (which drivers such as lavapipe enforce silently) even with the "
                            "widest workgroup of '{}'", kOp, N, k_, attention_detail::kLoopBudget, dev.name));
  }
  return wg == workgroup_size_ ? kernel_ : kernel(wg);
}

void TopK::record(Sequence& seq, const Tensor& x, const Tensor& values, const Tensor& indices, bool log_softmax,
                  const Tensor& nonfinite, std::uint32_t mark) const {
  if (!x.valid() || x.dtype() != DType::f32 || x.rank() != 2 || x.dim(0) == 0 || x.dim(1) == 0) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{}: argument 'x': expected f32 [B, N] with B, N >= 1, got {}", kOp,
                            x.valid() ? fmt::format("{} {}", to_string(x.dtype()), to_string(x.shape())) : std::string("an empty tensor")));
  }
  if (x.size() > std::numeric_limits<std::uint32_t>::max() / 2) {
    throw Error(ErrorCode::out_of_range, fmt::format("{}: x {} exceeds 32-bit indexing", kOp, to_string(x.shape())));
  }
  const std::size_t B = x.dim(0);
  attention_detail::expect(kOp, "values", values, {B, k_}, DType::f32);
  attention_detail::expect(kOp, "indices", indices, {B, k_}, DType::i32);
  if (nonfinite.valid()) {
    attention_detail::expect(kOp, "nonfinite", nonfinite, {B}, DType::u32);
    if (mark == 0) throw Error(ErrorCode::invalid_argument, fmt::format("{}: the nonfinite mark must not be 0", kOp));
  }
  const Push push{static_cast<std::uint32_t>(B), static_cast<std::uint32_t>(x.dim(1)), static_cast<std::uint32_t>(k_),
                  log_softmax ? 1u : 0u, nonfinite.valid() ? mark : 0u};
  // Without a flag tensor the shader never touches binding 3; a sink declared as written stands
  // in (validation sees the binding as writable).
  seq.dispatch(kernel_for(x.dim(1)), {in(x), out(values), out(indices), inout(nonfinite.valid() ? nonfinite : sink_)},
               push, attention_detail::fold_groups(B, ctx_->device(), kOp));
}

}  // namespace vkrnn
