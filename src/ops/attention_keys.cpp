// KeyProjection: K = h W_k^T once per source sequence (shaders/attention_keys.comp).
#include "ops/attention_common.hpp"
#include "plan.hpp"

namespace vkrnn {
using namespace attention_detail;
using ops::expect;
using K = kernels::AttentionKeys;

namespace {
constexpr const char* kOp = "KeyProjection";
}  // namespace

KeyProjection::KeyProjection(Context& ctx, const AttentionConfig& config, const OpOptions& options)
    : AttentionOp(ctx, config, options, kOp) {
  const plan::KeyProjection p = plan::key_projection(ctx.device(), options);
  plan::require(ctx.device(), p.needs, kOp);
  tile_ = p.constants.local_size_x;
  rows_per_invocation_ = p.constants.RM;
  kernel_ = kernels::make<K>(ctx, p.constants, p.variant);
}

void KeyProjection::record(Sequence& seq, const Tensor& memory, const Tensor& w_k,
                           const Tensor& keys) const {
  const Dims d = resolve(config_, kOp);
  const DType st = options_.fp16_storage ? DType::f16 : DType::f32;
  expect(kOp, "memory", memory, {d.B, d.S, d.H}, st);
  expect(kOp, "w_k", w_k, {d.Hk, d.H}, DType::f32);
  expect(kOp, "keys", keys, {d.B, d.S, d.Hk}, st);
  const std::uint32_t N = d.B * d.S;
  const std::uint32_t ta = ops::ceil_div(d.Hk, tile_);
  const std::uint32_t tn = ops::ceil_div(N, std::uint64_t(tile_) * rows_per_invocation_);
  kernels::dispatch<K>(seq, kernel_, {.memory = memory, .w = w_k, .keys = keys},
                       {.N = N, .Hm = d.H, .A = d.Hk, .ntiles_a = ta, .ntiles_n = tn},
                       ops::fold_groups(std::uint64_t(ta) * tn, ctx_->device(), kOp), null_);
}

}  // namespace vkrnn
