#include "ops/attention_common.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>

#include <fmt/format.h>

#include "vkrnn/error.hpp"

namespace vkrnn {

const char* to_string(Score score) noexcept {
  switch (score) {
    case Score::dot: return "dot";
    case Score::general: return "general";
    case Score::additive: return "additive";
    case Score::scaled_dot: return "scaled_dot";
  }
  return "?";
}

Shape attention_scores_shape(const AttentionConfig& config) {
  const auto d = attention_detail::resolve(config, "attention_scores_shape");
  if (d.heads == 1) return {d.B, d.S};
  return {d.B, d.heads, d.S};
}

void check_lengths(std::span<const std::int32_t> lengths, const AttentionConfig& config,
                   const char* op) {
  if (lengths.size() != config.batch) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{}: argument 'lengths': expected {} values (one per batch row), got {}",
                            op, config.batch, lengths.size()));
  }
  for (std::size_t b = 0; b < lengths.size(); ++b) {
    if (lengths[b] < 0 || std::size_t(lengths[b]) > config.max_source) {
      throw Error(ErrorCode::invalid_argument,
                  fmt::format("{}: argument 'lengths': lengths[{}] = {} is outside [0, {}] "
                              "(max_source)",
                              op, b, lengths[b], config.max_source));
    }
  }
}

void upload_lengths(Sequence& seq, const Tensor& lengths, std::span<const std::int32_t> values,
                    const AttentionConfig& config) {
  check_lengths(values, config, "upload_lengths");
  attention_detail::expect("upload_lengths", "lengths", lengths, {config.batch}, DType::i32);
  seq.upload(lengths, values);
}

namespace detail {
AttentionOp::AttentionOp(Context& ctx, const AttentionConfig& config, const OpOptions& options,
                         const char* op)
    : ctx_(&ctx), config_(attention_detail::resolve(config, op).config), options_(options) {
  attention_detail::require_fp16(ctx, options, op);
}
}  // namespace detail

namespace attention_detail {

std::uint32_t ceil_div(std::uint64_t a, std::uint64_t b) {
  return static_cast<std::uint32_t>((a + b - 1) / b);
}
std::uint32_t round_up(std::uint32_t a, std::uint32_t b) { return ceil_div(a, b) * b; }
bool is_cpu(const DeviceInfo& dev) { return dev.type == DeviceType::cpu; }

Dims resolve(const AttentionConfig& config, const char* op) {
  Dims d;
  d.config = config;
  AttentionConfig& c = d.config;
  if (c.key_dim == 0) c.key_dim = c.hidden;
  if (c.query_dim == 0) c.query_dim = c.key_dim;
  auto bad = [&](const std::string& what) {
    throw Error(ErrorCode::invalid_argument, fmt::format("{}: config: {}", op, what));
  };
  if (c.batch == 0) bad("batch must be at least 1");
  if (c.max_source == 0) bad("max_source (S) must be at least 1");
  if (c.hidden == 0) bad("hidden must be at least 1");
  if (c.heads == 0) bad("heads must be at least 1");
  if (c.heads > 1 && c.score != Score::scaled_dot) {
    bad(fmt::format("heads = {} needs Score::scaled_dot (score is {})", c.heads, to_string(c.score)));
  }
  if (c.key_dim % c.heads != 0 || c.hidden % c.heads != 0) {
    bad(fmt::format("heads = {} must divide key_dim = {} and hidden = {}", c.heads, c.key_dim,
                    c.hidden));
  }
  if ((c.score == Score::dot || c.score == Score::scaled_dot) && c.query_dim != c.key_dim) {
    bad(fmt::format("score {} needs query_dim == key_dim (got {} and {})", to_string(c.score),
                    c.query_dim, c.key_dim));
  }
  // Shaders index with 32-bit unsigned integers.
  const std::uint64_t limit = std::numeric_limits<std::uint32_t>::max() / 2;
  const std::uint64_t widest = std::max({c.hidden, c.key_dim, c.query_dim, c.max_source});
  if (std::uint64_t(c.batch) * c.max_source * std::max(c.hidden, c.key_dim) > limit ||
      std::uint64_t(c.batch) * c.heads * c.max_source > limit || widest > limit) {
    throw Error(ErrorCode::out_of_range,
                fmt::format("{}: config: batch {} x max_source {} x width {} is beyond 2^31 elements",
                            op, c.batch, c.max_source, std::max(c.hidden, c.key_dim)));
  }
  d.B = static_cast<std::uint32_t>(c.batch);
  d.S = static_cast<std::uint32_t>(c.max_source);
  d.H = static_cast<std::uint32_t>(c.hidden);
  d.Hk = static_cast<std::uint32_t>(c.key_dim);
  d.Hq = static_cast<std::uint32_t>(c.query_dim);
  d.heads = static_cast<std::uint32_t>(c.heads);
  d.dk = d.Hk / d.heads;
  d.dv = d.H / d.heads;
  d.rows = d.B * d.heads;
  return d;
}

void require_fp16(const Context& ctx, const OpOptions& options, const char* op) {
  if (options.fp16_storage && !ctx.features().storage_buffer_16bit) {
    throw Error(ErrorCode::missing_feature,
                fmt::format("{}: OpOptions::fp16_storage needs storageBuffer16BitAccess "
                            "(VK_KHR_16bit_storage), which is not enabled on '{}'",
                            op, ctx.device().name));
  }
}

Tuning tuning(const Context& ctx, const AttentionConfig& config, const OpOptions& options,
              const char* op) {
  const DeviceInfo& dev = ctx.device();
  return {resolve(config, op), dev, is_cpu(dev), use_subgroups(dev, options),
          pick_workgroup(dev, options)};
}

std::uint32_t source_chunk(const DeviceInfo& dev, const OpOptions& options, std::uint32_t S,
                           std::uint64_t per_chunk, std::uint32_t min_chunk,
                           std::uint32_t max_chunk) {
  std::uint32_t chunk;
  if (options.tile != 0) {
    chunk = options.tile;
  } else {
    // Chunks long enough that the partials stay small and their combine is cheap.
    const std::uint64_t target = is_cpu(dev) ? 16 : kMaxTargetChunks;
    const std::uint32_t want = static_cast<std::uint32_t>(std::clamp<std::uint64_t>(
        (target + per_chunk - 1) / per_chunk, 1, ceil_div(S, min_chunk)));
    chunk = ceil_div(S, want);
  }
  return std::clamp<std::uint32_t>(chunk, 1, std::min(S, max_chunk));
}

std::uint64_t reduction_loops(const DeviceInfo& dev, bool subgroups, std::uint64_t workgroup) {
  if (!subgroups) return std::bit_width(workgroup);
  const std::uint64_t smallest = std::max(dev.min_subgroup_size ? dev.min_subgroup_size : dev.subgroup_size, 1u);
  return (workgroup + smallest - 1) / smallest;
}

std::uint32_t workgroup_within_budget(const DeviceInfo& dev, std::uint32_t workgroup,
                                      const std::function<std::uint64_t(std::uint64_t)>& loops) {
  const std::uint64_t widest = std::min(dev.max_workgroup_invocations, dev.max_workgroup_size[0]);
  for (std::uint64_t wg = std::max(workgroup, 1u); wg <= widest; wg *= 2) {
    if (loops(wg) <= kLoopBudget) return static_cast<std::uint32_t>(wg);
  }
  return 0;
}

bool use_subgroups(const DeviceInfo& dev, const OpOptions& options) {
  return dev.subgroup_arithmetic && dev.subgroup_in_compute && !options.force_shared_memory_reduction;
}

std::uint32_t pick_workgroup(const DeviceInfo& dev, const OpOptions& options) {
  const std::uint32_t sg = std::max<std::uint32_t>(1, dev.subgroup_size);
  const std::uint32_t max_wg = std::max<std::uint32_t>(
      1, std::min(dev.max_workgroup_invocations, dev.max_workgroup_size[0]));
  // CPU drivers (lavapipe) run one-subgroup workgroups fastest; GPUs want 64+ invocations.
  std::uint32_t wg = options.workgroup_size != 0
                         ? options.workgroup_size
                         : (is_cpu(dev) ? sg : std::clamp<std::uint32_t>(sg, 64, 256));
  wg = std::clamp<std::uint32_t>(wg, 1, max_wg);
  return std::bit_floor(wg);  // the reduction trees assume a power of two
}

std::uint32_t elementwise_workgroup(const DeviceInfo& dev, const OpOptions& options) {
  const std::uint32_t max_wg = std::max<std::uint32_t>(
      1, std::min(dev.max_workgroup_invocations, dev.max_workgroup_size[0]));
  return std::clamp<std::uint32_t>(options.workgroup_size ? options.workgroup_size : 64, 1, max_wg);
}

std::vector<std::uint32_t> with_one_subgroup(std::vector<std::uint32_t> constants,
                                             const DeviceInfo& dev, std::uint32_t workgroup,
                                             bool subgroups) {
  const std::uint32_t smallest = dev.min_subgroup_size ? dev.min_subgroup_size : dev.subgroup_size;
  constants.resize(16, 0);
  constants[15] = subgroups && smallest > 0 && workgroup <= smallest ? 1 : 0;
  return constants;
}

std::string kernel_name(const char* base, bool fp16, bool subgroup_variant, bool subgroups) {
  std::string name = base;
  if (fp16) name += "_f16";
  if (subgroup_variant && !subgroups) name += "_nosubgroup";
  return name;
}

Groups fold_groups(std::uint64_t total, const DeviceInfo& dev, const char* op) {
  const std::uint64_t max_x = std::max<std::uint32_t>(1, dev.max_workgroup_count[0]);
  const std::uint64_t x = std::clamp<std::uint64_t>(total, 1, max_x);
  const std::uint64_t y = (total + x - 1) / x;
  if (y > dev.max_workgroup_count[1]) {
    throw Error(ErrorCode::out_of_range,
                fmt::format("{}: {} workgroups exceed maxComputeWorkGroupCount {} x {} of '{}'", op,
                            total, dev.max_workgroup_count[0], dev.max_workgroup_count[1], dev.name));
  }
  return {static_cast<std::uint32_t>(x), static_cast<std::uint32_t>(std::max<std::uint64_t>(y, 1)), 1};
}

void expect(const char* op, const char* arg, const Tensor& t, const Shape& shape, DType dtype) {
  if (!t.valid()) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{}: argument '{}': expected {} {}, got an empty tensor", op, arg,
                            to_string(shape), to_string(dtype)));
  }
  if (t.shape() != shape || t.dtype() != dtype) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{}: argument '{}': expected {} {}, got {} {}{}", op, arg,
                            to_string(shape), to_string(dtype), to_string(t.shape()),
                            to_string(t.dtype()),
                            t.name().empty() ? std::string() : fmt::format(" ('{}')", t.name())));
  }
}

void check_params(const char* op, const Dims& d, const ScoreParams& params) {
  const Score s = d.config.score;
  if (projects_query(s)) {
    expect(op, s == Score::general ? "params.w (W_a)" : "params.w (W_q)", params.w,
           {d.Hk, d.Hq}, DType::f32);
  }
  if (s == Score::additive) {
    expect(op, "params.v", params.v, {d.Hk}, DType::f32);
    if (params.bias.valid()) expect(op, "params.bias", params.bias, {d.Hk}, DType::f32);
  }
}

ScoreConstants score_constants(const Dims& d, const DeviceInfo& dev, bool subgroups,
                               std::uint32_t workgroup) {
  ScoreConstants c;
  c.mode = d.config.score == Score::additive ? 1 : 0;
  c.key_vec4 = (d.Hk % 4 == 0 && d.dk % 4 == 0) ? 1 : 0;
  switch (d.config.score_split) {
    case ScoreSplit::automatic: c.per_subgroup = subgroups && d.dk >= 32; break;
    case ScoreSplit::per_invocation: c.per_subgroup = 0; break;
    case ScoreSplit::per_subgroup: c.per_subgroup = subgroups; break;
  }
  // About 32 positions per workgroup step on CPU drivers (fewer, fatter workgroups), one per
  // invocation on GPUs.
  c.positions = is_cpu(dev) ? std::max<std::uint32_t>(1, 32 / workgroup) : 1;
  // Pessimistic for a subgroup per score: the smallest subgroup the device may pick.
  const std::uint32_t key_units = c.key_vec4 ? d.dk / 4 : d.dk;
  const std::uint32_t lanes = std::clamp<std::uint32_t>(
      dev.min_subgroup_size ? dev.min_subgroup_size : dev.subgroup_size, 1, workgroup);
  c.key_loop = c.per_subgroup ? ceil_div(key_units, lanes) : key_units;
  return c;
}

float score_scale(const Dims& d) {
  return d.config.score == Score::scaled_dot ? float(1.0 / std::sqrt(double(d.dk))) : 1.0f;
}

}  // namespace attention_detail
}  // namespace vkrnn
