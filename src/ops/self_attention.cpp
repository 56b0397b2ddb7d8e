#include "vkrnn/self_attention.hpp"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <vulkan/vulkan.h>

#include "ops/common.hpp"
#include "ops/kernels/self_attention.hpp"
#include "plan.hpp"
#include "vkrnn/error.hpp"

namespace vkrnn {
namespace {

constexpr const char* kOp = "SelfAttention";

using K = kernels::SelfAttention;
using KWeights = kernels::SelfAttentionWeights;

using ops::same_memory;

}  // namespace

SelfAttention::SelfAttention(Context& ctx, const SelfAttentionConfig& config,
                             const OpOptions& options)
    : ctx_(&ctx), config_(config), options_(options) {
  auto bad = [](const std::string& what) {
    throw Error(ErrorCode::invalid_argument, fmt::format("{}: config: {}", kOp, what));
  };
  if (config.batch == 0) bad("batch must be >= 1, got 0");
  if (config.max_seq == 0) bad("max_seq must be >= 1, got 0");
  if (config.hidden == 0) bad("hidden must be >= 1, got 0");
  if (config.heads == 0) bad("heads must be >= 1, got 0");
  if (config.hidden % config.heads != 0) {
    bad(fmt::format("hidden ({}) must be a multiple of heads ({})", config.hidden, config.heads));
  }
  const std::uint64_t elements =
      std::uint64_t(config.batch) * config.max_seq * config.hidden;
  if (elements >= (std::uint64_t(1) << 32)) {
    throw Error(ErrorCode::out_of_range,
                fmt::format("{}: batch * max_seq * hidden = {} elements; at most 2^32 - 1 are "
                            "addressable",
                            kOp, elements));
  }
  if (options.fp16_storage && !ctx.features().storage_buffer_16bit) {
    throw Error(ErrorCode::missing_feature,
                fmt::format("{}: fp16_storage needs storageBuffer16BitAccess, which device '{}' "
                            "does not offer (or the adopted VkDevice did not enable)",
                            kOp, ctx.device().name));
  }
  head_dim_ = config.hidden / config.heads;
  const DeviceInfo& dev = ctx.device();
  plan_ = plan::self_attention(dev, head_dim_, options, config);
  plan::Needs needs;
  needs.add(plan_.shared_bytes, K::storage_buffer_count);
  needs.fp16_storage = options.fp16_storage;
  plan::require(dev, needs, kOp);
  kernel_ = kernels::make<K>(ctx, plan::self_attention_constants(plan_, head_dim_),
                             plan::self_attention_variant(plan_, options));
  weights_workgroup_ = plan::self_attention_weights_workgroup(dev);
  weights_kernel_ = kernels::make<KWeights>(
      ctx, {.local_size_x = weights_workgroup_, .D = static_cast<std::uint32_t>(head_dim_)},
      {.fp16 = options.fp16_storage});
  null_ = kernels::null_tensor(ctx);
}

SelfAttentionPlan SelfAttention::plan_for(const DeviceInfo& device,
                                          const SelfAttentionConfig& config,
                                          const OpOptions& options) {
  if (config.heads == 0 || config.hidden == 0 || config.hidden % config.heads != 0) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{}: config: hidden ({}) must be a positive multiple of heads ({})", kOp,
                            config.hidden, config.heads));
  }
  return plan::self_attention(device, config.hidden / config.heads, options, config);
}

void SelfAttention::check(const Tensor& q, const Tensor& k, const Tensor& v,
                          const Tensor* lengths, const Tensor* out_ptr) const {
  const DType in_type = options_.fp16_storage ? DType::f16 : DType::f32;
  const auto expect = fmt::format("{} [{}, S, {}] with 1 <= S <= {}", to_string(in_type),
                                  config_.batch, config_.hidden, config_.max_seq);
  auto check_input = [&](const Tensor& t, const char* name, DType dtype, const std::string& want) {
    if (!t.valid()) {
      throw Error(ErrorCode::invalid_argument,
                  fmt::format("{}: argument '{}': expected {}, got an empty tensor", kOp, name, want));
    }
    const Shape& s = t.shape();
    const bool ok = t.dtype() == dtype && s.size() == 3 && s[0] == config_.batch && s[1] >= 1 &&
                    s[1] <= config_.max_seq && s[2] == config_.hidden;
    if (!ok) {
      throw Error(ErrorCode::invalid_argument,
                  fmt::format("{}: argument '{}'{}: expected {}, got {} {}", kOp, name,
                              t.name().empty() ? "" : " (" + t.name() + ")", want,
                              to_string(t.dtype()), to_string(s)));
    }
  };
  check_input(q, "q", in_type, expect);
  const std::size_t S = q.dim(1);
  const auto same_s = fmt::format("{} [{}, {}, {}] (the shape of q)", to_string(in_type),
                                  config_.batch, S, config_.hidden);
  check_input(k, "k", in_type, same_s);
  if (k.dim(1) != S) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{}: argument 'k': expected {}, got {}", kOp, same_s, to_string(k.shape())));
  }
  check_input(v, "v", in_type, same_s);
  if (v.dim(1) != S) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{}: argument 'v': expected {}, got {}", kOp, same_s, to_string(v.shape())));
  }
  if (out_ptr != nullptr) {
    const Tensor& out = *out_ptr;
    const auto out_want = fmt::format("f32 [{}, {}, {}]", config_.batch, S, config_.hidden);
    check_input(out, "out", DType::f32, out_want);
    if (out.dim(1) != S) {
      throw Error(ErrorCode::invalid_argument,
                  fmt::format("{}: argument 'out': expected {}, got {}", kOp, out_want,
                              to_string(out.shape())));
    }
    if (same_memory(out, q) || same_memory(out, k) || same_memory(out, v)) {
      throw Error(ErrorCode::invalid_argument,
                  fmt::format("{}: argument 'out' shares memory with q, k or v; attention reads "
                              "every row while writing, so it needs its own tensor",
                              kOp));
    }
    if (lengths != nullptr && same_memory(out, *lengths)) {
      throw Error(ErrorCode::invalid_argument,
                  fmt::format("{}: argument 'out' shares memory with 'lengths'", kOp));
    }
  }
  if (lengths != nullptr && lengths->valid()) {
    const Tensor& l = *lengths;
    if (l.dtype() != DType::i32 || l.size() != config_.batch || l.rank() != 1) {
      throw Error(ErrorCode::invalid_argument,
                  fmt::format("{}: argument 'lengths': expected i32 [{}], got {} {}", kOp,
                              config_.batch, to_string(l.dtype()), to_string(l.shape())));
    }
  }
}

void SelfAttention::record(Sequence& seq, const Tensor& q, const Tensor& k, const Tensor& v,
                           const Tensor& lengths, const Tensor& out) const {
  check(q, k, v, &lengths, &out);
  const std::size_t S = q.dim(1);
  const std::uint64_t qblocks = (S + plan_.query_rows - 1) / plan_.query_rows;
  const std::uint64_t total = qblocks * config_.heads * config_.batch;
  if (total >= (std::uint64_t(1) << 32)) {
    throw Error(ErrorCode::out_of_range,
                fmt::format("{}: {} workgroups do not fit a 32-bit grid", kOp, total));
  }
  K::Push push{};
  push.S = static_cast<std::uint32_t>(S);
  push.H = static_cast<std::uint32_t>(config_.hidden);
  push.heads = static_cast<std::uint32_t>(config_.heads);
  push.qblocks = static_cast<std::uint32_t>(qblocks);
  push.total = static_cast<std::uint32_t>(total);
  push.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(head_dim_)));
  push.causal = config_.causal ? 1u : 0u;
  push.paired = plan::paired_query_blocks(ctx_->device()) ? 1u : 0u;
  push.has_lengths = lengths.valid() ? 1u : 0u;
  // `out` is declared write-only: the solo_memory path re-reads only values it wrote itself in
  // the same invocation, so no hazard reaches outside the dispatch.
  kernels::dispatch<K>(seq, kernel_, {.qs = q, .ks = k, .vs = v, .lengths = lengths, .outs = out},
                       push, ops::fold_groups(total, ctx_->device(), kOp, 3), null_);
}

void SelfAttention::record(Sequence& seq, const Tensor& q, const Tensor& k, const Tensor& v,
                           std::span<const std::int32_t> lengths, const Tensor& out) const {
  check(q, k, v, nullptr, &out);
  const std::size_t S = q.dim(1);
  if (lengths.size() != config_.batch) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{}: argument 'lengths': expected {} values (one per batch row), got {}",
                            kOp, config_.batch, lengths.size()));
  }
  for (std::size_t b = 0; b < lengths.size(); ++b) {
    if (lengths[b] < 0 || static_cast<std::size_t>(lengths[b]) > S) {
      throw Error(ErrorCode::invalid_argument,
                  fmt::format("{}: argument 'lengths': lengths[{}] = {} is outside [0, S = {}]",
                              kOp, b, lengths[b], S));
    }
  }
  Tensor device_lengths = ctx_->tensor({config_.batch}, DType::i32, "self_attention.lengths");
  seq.upload(device_lengths, lengths);
  record(seq, q, k, v, device_lengths, out);
}

void SelfAttention::record_weights(Sequence& seq, const Tensor& q, const Tensor& k,
                                   const Tensor& lengths, const Tensor& weights) const {
  check(q, k, q, &lengths, nullptr);  // q stands in for v; `weights` is checked below
  const std::size_t S = q.dim(1);
  // Checked before the weights tensor: its size is what the caller cannot have.
  const std::uint64_t count = std::uint64_t(config_.batch) * config_.heads * S * S;
  const auto& dev = ctx_->device();
  if (count >= (std::uint64_t(1) << 32) || count * 4 > dev.max_storage_buffer_range) {
    throw Error(ErrorCode::out_of_range,
                fmt::format("{}: record_weights: {} weights ({} bytes) for S = {} exceed the "
                            "device's maxStorageBufferRange ({} bytes); use a shorter sequence",
                            kOp, count, count * 4, S, dev.max_storage_buffer_range));
  }
  const Shape want{config_.batch, config_.heads, S, S};
  if (!weights.valid() || weights.dtype() != DType::f32 || weights.shape() != want) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{}: record_weights: argument 'weights': expected f32 {}, got {}", kOp,
                            to_string(want),
                            weights.valid() ? fmt::format("{} {}", to_string(weights.dtype()),
                                                          to_string(weights.shape()))
                                            : std::string("an empty tensor")));
  }
  if (same_memory(weights, q) || same_memory(weights, k) || same_memory(weights, lengths)) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{}: record_weights: 'weights' shares memory with an input", kOp));
  }
  const std::uint64_t rows = std::uint64_t(config_.batch) * config_.heads * S;
  KWeights::Push push{};
  push.S = static_cast<std::uint32_t>(S);
  push.H = static_cast<std::uint32_t>(config_.hidden);
  push.heads = static_cast<std::uint32_t>(config_.heads);
  push.rows = static_cast<std::uint32_t>(rows);
  push.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(head_dim_)));
  push.causal = config_.causal ? 1u : 0u;
  push.has_lengths = lengths.valid() ? 1u : 0u;
  const Groups grid = ops::fold_groups(rows, dev, kOp);  // one workgroup per row (x and y: the shader unfolds two)
  // Each invocation scores S / workgroup keys twice: a workgroup wide enough to keep a row
  // within the loop budget.
  const std::uint32_t wg = plan::self_attention_weights_row(dev, weights_workgroup_, S, head_dim_);
  const Kernel kernel =
      wg == weights_workgroup_
          ? weights_kernel_
          : kernels::make<KWeights>(*ctx_, {.local_size_x = wg, .D = static_cast<std::uint32_t>(head_dim_)},
                                    {.fp16 = options_.fp16_storage});
  kernels::dispatch<KWeights>(seq, kernel, {.qs = q, .ks = k, .lengths = lengths, .ws = weights}, push,
                              grid, null_);
}

void SelfAttention::run(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& lengths,
                        const Tensor& out) const {
  Sequence seq = ctx_->sequence({.label = "self_attention"});
  record(seq, q, k, v, lengths, out);
  seq.eval();
}

}  // namespace vkrnn
