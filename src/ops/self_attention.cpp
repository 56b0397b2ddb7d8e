#include "vkrnn/self_attention.hpp"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <vulkan/vulkan.h>

#include "ops/attention_common.hpp"
#include "vkrnn/error.hpp"

namespace vkrnn {
namespace {

constexpr const char* kOp = "SelfAttention";

struct WeightsPush {
  std::uint32_t S;
  std::uint32_t H;
  std::uint32_t heads;
  std::uint32_t rows;
  float scale;
  std::uint32_t causal;
  std::uint32_t has_lengths;
};

struct Push {
  std::uint32_t S;
  std::uint32_t H;
  std::uint32_t heads;
  std::uint32_t qblocks;
  std::uint32_t total;
  float scale;
  std::uint32_t causal;
  std::uint32_t has_lengths;
};

// Mirrors the shared arrays of shaders/self_attention.comp (one float each on the solo path).
std::uint64_t shared_bytes(std::uint64_t D, std::uint64_t BQ, std::uint64_t BK, std::uint64_t T) {
  if (T == 1) return 4 * 4;
  const std::uint64_t DP = D | 1u;
  return 4 * (BQ * DP + BK * DP + BK * D + T + BQ * BK);
}

// Solo path budgets (CPU drivers compile with LLVM at the first dispatch: these set that time).
// solo_registers keeps R * D q and o values per lane and unrolls R * BK * D multiply-adds per
// tile; measured on lavapipe (2 busy cores, D = 64): R=2, BK=4 compiles in ~1 s of CPU and runs
// at ~90% of the speed of R=4 (~2.7 s); D = 256 in registers takes ~4.4 s, hence the D limit.
constexpr std::uint64_t kRegisterMaxD = 128;
constexpr std::uint64_t kRegisterUnroll = 512;   // R * BK * D
// solo_memory unrolls GS * BK * R chunk products per step (GS = subgroup size with shuffles).
constexpr std::uint64_t kMemoryUnroll = 512;

std::uint32_t pow2_at_least(std::uint64_t x) {
  std::uint32_t p = 1;
  while (p < x) p *= 2;
  return p;
}

SelfAttentionPlan make_plan(const DeviceInfo& dev, std::size_t D, const OpOptions& opt,
                            const SelfAttentionConfig& cfg) {
  const std::uint32_t forced_lanes_per_row = cfg.lanes_per_row;
  const std::uint32_t sg = std::max<std::uint32_t>(1, dev.subgroup_size);
  const std::uint32_t max_wg =
      std::max<std::uint32_t>(1, std::min(dev.max_workgroup_invocations, dev.max_workgroup_size[0]));
  const bool cpu = dev.type == DeviceType::cpu;

  // CPU drivers (lavapipe) run one subgroup per workgroup best; GPUs want 64+ lanes.
  std::uint32_t wg = opt.workgroup_size != 0 ? opt.workgroup_size
                                             : (cpu ? sg : std::max<std::uint32_t>(64, sg));
  wg = std::clamp<std::uint32_t>(wg, 1, max_wg);

  // Lanes per query row. GPUs: enough that each lane keeps at most 16 output dims in registers.
  // CPU drivers: always one (the shared-memory path runs ~50x slower on lavapipe: every
  // shared-memory read inside a loop is a per-lane gather there).
  std::uint32_t T = forced_lanes_per_row != 0 ? pow2_at_least(forced_lanes_per_row)
                    : cpu                     ? 1
                                              : pow2_at_least((D + 15) / 16);
  T = std::min(T, wg);
  while (wg % T != 0) T /= 2;
  std::uint32_t BK = opt.tile != 0 ? opt.tile : (T == 1 ? 16 : 32);
  BK = std::max<std::uint32_t>(1, BK);
  // The solo path shares K/V loads across the subgroup with shuffles where it can.
  constexpr std::uint32_t kNeeded = VK_SUBGROUP_FEATURE_BASIC_BIT | VK_SUBGROUP_FEATURE_SHUFFLE_BIT;
  const bool shuffle = T == 1 && !opt.force_shared_memory_reduction && dev.subgroup_in_compute &&
                       (dev.subgroup_operations & kNeeded) == kNeeded && wg % sg == 0;
  // Each loaded K/V chunk feeds R rows of a lane: 2-4 rows run 2x faster than 1 on lavapipe.
  std::uint64_t R = 1;
  const bool registers = D <= kRegisterMaxD;
  if (T == 1 && registers) {
    R = cfg.rows_per_lane != 0 ? cfg.rows_per_lane : cpu ? (D <= 32 ? 4 : 2) : 1;
    R = std::clamp<std::uint64_t>(R, 1, std::max<std::uint64_t>(1, kRegisterUnroll / D));
    BK = static_cast<std::uint32_t>(
        std::clamp<std::uint64_t>(BK, 1, std::max<std::uint64_t>(1, kRegisterUnroll / (R * D))));
  } else if (T == 1) {
    const std::uint64_t gs = shuffle ? sg : 1;
    R = cfg.rows_per_lane != 0 ? cfg.rows_per_lane : (cpu ? 4 : 1);
    R = std::clamp<std::uint64_t>(R, 1, std::max<std::uint64_t>(1, kMemoryUnroll / gs));
    BK = static_cast<std::uint32_t>(
        std::clamp<std::uint64_t>(BK, 1, std::max<std::uint64_t>(1, kMemoryUnroll / (gs * R))));
  }

  const std::uint64_t limit = dev.max_shared_memory;
  while (shared_bytes(D, wg / T, BK, T) > limit) {
    if (BK > std::max<std::uint32_t>(T, 8)) {
      BK = std::max<std::uint32_t>(1, BK / 2);
    } else if (2 * T <= wg && wg % (2 * T) == 0) {
      T *= 2;
    } else if (BK > 1) {
      BK = std::max<std::uint32_t>(1, BK / 2);
    } else {
      throw Error(ErrorCode::out_of_range,
                  fmt::format("{}: head_dim {} needs {} bytes of shared memory even with one query "
                              "row and one key per tile; the device allows {}",
                              kOp, D, shared_bytes(D, wg / T, 1, T), limit));
    }
  }
  SelfAttentionPlan plan;
  plan.workgroup_size = wg;
  plan.lanes_per_row = T;
  plan.rows_per_lane = static_cast<std::uint32_t>(R);
  plan.accumulate_in_registers = T == 1 && registers;
  plan.subgroup_shuffle = shuffle;
  plan.subgroup_size = sg;
  plan.query_rows = static_cast<std::uint32_t>(T == 1 ? wg * R : wg / T);
  plan.key_tile = BK;
  plan.shared_bytes = static_cast<std::uint32_t>(shared_bytes(D, wg / T, BK, T));
  return plan;
}

// Folds a 1-D workgroup count into the device's per-dimension limits.
Groups fold_groups(std::uint64_t total, const DeviceInfo& dev) {
  const std::uint64_t mx = std::max<std::uint32_t>(1, dev.max_workgroup_count[0]);
  const std::uint64_t my = std::max<std::uint32_t>(1, dev.max_workgroup_count[1]);
  const std::uint64_t mz = std::max<std::uint32_t>(1, dev.max_workgroup_count[2]);
  const std::uint64_t x = std::min(std::max<std::uint64_t>(total, 1), mx);
  const std::uint64_t rest = (total + x - 1) / x;
  const std::uint64_t y = std::min(std::max<std::uint64_t>(rest, 1), my);
  const std::uint64_t z = (rest + y - 1) / y;
  if (z > mz) {
    throw Error(ErrorCode::out_of_range,
                fmt::format("{}: {} workgroups exceed the device's maximum grid {}x{}x{}", kOp,
                            total, mx, my, mz));
  }
  return {static_cast<std::uint32_t>(x), static_cast<std::uint32_t>(y),
          static_cast<std::uint32_t>(std::max<std::uint64_t>(z, 1))};
}

bool same_memory(const Tensor& a, const Tensor& b) {
  return a.valid() && b.valid() && a.storage_ptr() == b.storage_ptr();
}

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
  plan_ = make_plan(ctx.device(), head_dim_, options, config);
  std::string name = plan_.subgroup_shuffle ? "self_attention_shuffle" : "self_attention";
  if (options.fp16_storage) name += "_f16";
  kernel_ = ctx.kernel({name,
                        {plan_.workgroup_size, 1, 1, static_cast<std::uint32_t>(head_dim_),
                         plan_.lanes_per_row, plan_.key_tile, plan_.rows_per_lane,
                         plan_.subgroup_size, plan_.accumulate_in_registers ? 1u : 0u},
                        5,
                        sizeof(Push)});
  const auto& dev = ctx.device();
  weights_workgroup_ = std::min<std::uint32_t>(
      dev.type == DeviceType::cpu ? std::max<std::uint32_t>(1, dev.subgroup_size) : 64,
      std::max<std::uint32_t>(1, std::min(dev.max_workgroup_invocations, dev.max_workgroup_size[0])));
  weights_kernel_ = ctx.kernel({options.fp16_storage ? "self_attention_weights_f16"
                                                     : "self_attention_weights",
                                {weights_workgroup_, 1, 1, static_cast<std::uint32_t>(head_dim_)},
                                4,
                                sizeof(WeightsPush)});
}

SelfAttentionPlan SelfAttention::plan_for(const DeviceInfo& device,
                                          const SelfAttentionConfig& config,
                                          const OpOptions& options) {
  if (config.heads == 0 || config.hidden == 0 || config.hidden % config.heads != 0) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{}: config: hidden ({}) must be a positive multiple of heads ({})", kOp,
                            config.hidden, config.heads));
  }
  return make_plan(device, config.hidden / config.heads, options, config);
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
  Push push{};
  push.S = static_cast<std::uint32_t>(S);
  push.H = static_cast<std::uint32_t>(config_.hidden);
  push.heads = static_cast<std::uint32_t>(config_.heads);
  push.qblocks = static_cast<std::uint32_t>(qblocks);
  push.total = static_cast<std::uint32_t>(total);
  push.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(head_dim_)));
  push.causal = config_.causal ? 1u : 0u;
  push.has_lengths = lengths.valid() ? 1u : 0u;
  // `out` is declared write-only: the solo_memory path re-reads only values it wrote itself in
  // the same invocation, so no hazard reaches outside the dispatch.
  // Without lengths the binding still needs a buffer: q is read anyway and the shader never
  // touches binding 3 then.
  const Tensor& len_arg = lengths.valid() ? lengths : q;
  seq.dispatch(kernel_, {in(q), in(k), in(v), in(len_arg), vkrnn::out(out)}, push,
               fold_groups(total, ctx_->device()));
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
  WeightsPush push{};
  push.S = static_cast<std::uint32_t>(S);
  push.H = static_cast<std::uint32_t>(config_.hidden);
  push.heads = static_cast<std::uint32_t>(config_.heads);
  push.rows = static_cast<std::uint32_t>(rows);
  push.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(head_dim_)));
  push.causal = config_.causal ? 1u : 0u;
  push.has_lengths = lengths.valid() ? 1u : 0u;
  const Groups grid = fold_groups(rows, dev);  // one workgroup per row
  if (grid[2] != 1) {
    throw Error(ErrorCode::out_of_range,
                fmt::format("{}: record_weights: {} rows exceed the device grid", kOp, rows));
  }
  // Each invocation scores S / workgroup keys twice (head_dim + 1 iterations each), then two
  // tree reductions: a workgroup wide enough to keep that within the loop budget.
  auto loops = [&](std::uint64_t wg) {
    return 2 * ((S + wg - 1) / wg) * (head_dim_ + 1) + 2 * attention_detail::reduction_loops(dev, false, wg) + 8;
  };
  const std::uint32_t wg = attention_detail::workgroup_within_budget(dev, weights_workgroup_, loops);
  if (wg == 0) {
    throw Error(ErrorCode::out_of_range,
                fmt::format("{}: record_weights: rows of S = {} keys (head_dim {}) need more loop iterations "
                            "per invocation than the loop budget of {} even with the widest workgroup of '{}'",
                            kOp, S, head_dim_, attention_detail::kLoopBudget, dev.name));
  }
  const Kernel kernel = wg == weights_workgroup_ ? weights_kernel_ : ctx_->kernel({
      options_.fp16_storage ? "self_attention_weights_f16" : "self_attention_weights",
      {wg, 1, 1, static_cast<std::uint32_t>(head_dim_)}, 4, sizeof(WeightsPush)});
  const Tensor& len_arg = lengths.valid() ? lengths : q;
  seq.dispatch(kernel, {in(q), in(k), in(len_arg), vkrnn::out(weights)}, push, grid);
}

void SelfAttention::run(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& lengths,
                        const Tensor& out) const {
  Sequence seq = ctx_->sequence({.label = "self_attention"});
  record(seq, q, k, v, lengths, out);
  seq.eval();
}

}  // namespace vkrnn
