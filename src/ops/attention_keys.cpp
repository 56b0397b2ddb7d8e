// KeyProjection: K = h W_k^T once per source sequence (shaders/attention_keys.comp).
#include <algorithm>
#include <bit>
#include <span>

#include <fmt/format.h>

#include "ops/attention_common.hpp"
#include "vkrnn/error.hpp"

namespace vkrnn {
using namespace attention_detail;

namespace {
constexpr const char* kOp = "KeyProjection";

struct Push {
  std::uint32_t N, Hm, A, ntiles_a, ntiles_n;
};

std::uint64_t keys_shared_bytes(std::uint32_t T, std::uint32_t RM) {
  return 4ull * (std::uint64_t(T) * RM * (T + 1) + std::uint64_t(T) * (T + 1));
}
}  // namespace

KeyProjection::KeyProjection(Context& ctx, const AttentionConfig& config, const OpOptions& options)
    : AttentionOp(ctx, config, options, kOp) {
  const DeviceInfo& dev = ctx.device();
  // A T x T workgroup: 64 invocations on CPU drivers, 256 on GPUs, or the forced size.
  std::uint32_t wg = options.workgroup_size != 0 ? options.workgroup_size : (is_cpu(dev) ? 64 : 256);
  wg = std::clamp<std::uint32_t>(wg, 1, std::max<std::uint32_t>(1, dev.max_workgroup_invocations));
  std::uint32_t T = 1;
  while ((2 * T) * (2 * T) <= wg && 2 * T <= dev.max_workgroup_size[0] &&
         2 * T <= dev.max_workgroup_size[1]) {
    T *= 2;
  }
  std::uint32_t RM = 4;
  while (keys_shared_bytes(T, RM) > dev.max_shared_memory && (RM > 1 || T > 1)) {
    if (RM > 1) RM /= 2; else T /= 2;
  }
  tile_ = T;
  rows_per_invocation_ = RM;
  kernel_ = ctx.kernel({kernel_name("attention_keys", options.fp16_storage, false, false),
                        {T, T, 1, RM}, 3, sizeof(Push)});
}

void KeyProjection::record(Sequence& seq, const Tensor& memory, const Tensor& w_k,
                           const Tensor& keys) const {
  const Dims d = resolve(config_, kOp);
  const DType st = options_.fp16_storage ? DType::f16 : DType::f32;
  expect(kOp, "memory", memory, {d.B, d.S, d.H}, st);
  expect(kOp, "w_k", w_k, {d.Hk, d.H}, DType::f32);
  expect(kOp, "keys", keys, {d.B, d.S, d.Hk}, st);
  const std::uint32_t N = d.B * d.S;
  const std::uint32_t ta = ceil_div(d.Hk, tile_);
  const std::uint32_t tn = ceil_div(N, std::uint64_t(tile_) * rows_per_invocation_);
  const Push push{N, d.H, d.Hk, ta, tn};
  seq.dispatch(kernel_, {in(memory), in(w_k), out(keys)}, push,
               fold_groups(std::uint64_t(ta) * tn, ctx_->device(), kOp));
}

}  // namespace vkrnn
