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
  ops::expect("upload_lengths", "lengths", lengths, {config.batch}, DType::i32);
  seq.upload(lengths, values);
}

namespace detail {
AttentionOp::AttentionOp(Context& ctx, const AttentionConfig& config, const OpOptions& options,
                         const char* op)
    : ctx_(&ctx),
      config_(attention_detail::resolve(config, op).config),
      options_(options),
      null_(kernels::null_tensor(ctx)) {
  ops::require_fp16(ctx, options, op);
}
}  // namespace detail

namespace attention_detail {

using ops::expect;

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

float score_scale(const Dims& d) {
  return d.config.score == Score::scaled_dot ? float(1.0 / std::sqrt(double(d.dk))) : 1.0f;
}

}  // namespace attention_detail
}  // namespace vkrnn
