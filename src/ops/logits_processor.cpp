// Logits processing and sampling of one decoding step (shaders/logits_processor.comp).
#include "vkrnn/logits_processor.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

#include <fmt/format.h>

#include "ops/attention_common.hpp"
#include "vkrnn/error.hpp"

namespace vkrnn {
namespace {

constexpr const char* kOp = "LogitsProcessor";

// Must match the FLAG_* constants of logits_processor.comp.
constexpr std::uint32_t kRepeat = 1, kTemperature = 2, kNgram = 4, kMinLength = 8, kUnk = 16, kSuppress = 32,
                        kSample = 64, kPrefix = 128;
constexpr std::uint32_t kBindings = 7;
constexpr std::uint32_t kBisections = 32;  // passes over the row per threshold (32-bit keys)

struct Push {
  std::uint32_t B, V, ld, step, flags;
  float inv_temperature, penalty;
  std::uint32_t ngram, min_length;
  std::int32_t eos, unk;
  std::uint32_t n_suppressed, top_k;
  float top_p;
  std::uint32_t seed_lo, seed_hi, prefix_len;
};

using attention_detail::expect;

void check_id(std::int32_t id, std::size_t V, const char* what) {
  if (id < 0 || static_cast<std::size_t>(id) >= V) {
    throw Error(ErrorCode::invalid_argument, fmt::format("{}: {} = {} is outside the vocabulary [0, {})", kOp, what, id, V));
  }
}

}  // namespace

LogitsProcessor::LogitsProcessor(Context& ctx, std::size_t vocab, const LogitsProcessing& processing, const OpOptions& options)
    : ctx_(&ctx), V_(vocab), processing_(processing) {
  const LogitsProcessing& p = processing_;
  if (V_ == 0 || V_ > (std::size_t{1} << 24)) {
    // The history holds ids as f32 (exact up to 2^24).
    throw Error(ErrorCode::invalid_argument, fmt::format("{}: vocabulary size {} is not in [1, 2^24]", kOp, V_));
  }
  if (!(p.temperature > 0.0) || !std::isfinite(p.temperature)) {
    throw Error(ErrorCode::invalid_argument, fmt::format("{}: temperature = {} must be finite and > 0", kOp, p.temperature));
  }
  if (!(p.repetition_penalty > 0.0) || !std::isfinite(p.repetition_penalty)) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{}: repetition_penalty = {} must be finite and > 0 (1: off)", kOp, p.repetition_penalty));
  }
  if (!(p.top_p > 0.0 && p.top_p <= 1.0)) {
    throw Error(ErrorCode::invalid_argument, fmt::format("{}: top_p = {} is outside (0, 1]", kOp, p.top_p));
  }
  if (p.min_length > 0) {
    if (p.eos < 0) {
      throw Error(ErrorCode::invalid_argument, fmt::format("{}: min_length = {} needs an eos token (the model has none)", kOp, p.min_length));
    }
    check_id(p.eos, V_, "eos");
  }
  if (p.unk >= 0) check_id(p.unk, V_, "unk");
  for (std::size_t i = 0; i < p.suppressed.size(); ++i) check_id(p.suppressed[i], V_, fmt::format("suppressed[{}]", i).c_str());
  const DeviceInfo& dev = ctx.device();
  subgroups_ = attention_detail::use_subgroups(dev, options);
  OpOptions o = options;
  if (o.workgroup_size == 0) o.workgroup_size = dev.type == DeviceType::cpu ? std::max<std::uint32_t>(1, dev.subgroup_size) : 256;
  workgroup_size_ = attention_detail::pick_workgroup(dev, o);
  for (std::size_t b = 0; b < p.prefix.size(); ++b) {
    for (std::size_t t = 0; t < p.prefix[b].size(); ++t) check_id(p.prefix[b][t], V_, fmt::format("prefix[{}][{}]", b, t).c_str());
  }
  suppressed_host_ = p.suppressed.empty() ? std::vector<std::int32_t>{0} : p.suppressed;
  suppressed_ = ctx.tensor({suppressed_host_.size()}, DType::i32, "LogitsProcessor suppressed ids");
  sink_i32_ = ctx.tensor({4}, DType::i32, "LogitsProcessor unused i32");
  sink_f32_ = ctx.tensor({4}, DType::f32, "LogitsProcessor unused f32");
}

// Loop iterations of one invocation with `wg` invocations per row: phase 1, the suppressed ids,
// the n-gram scan (up to `capacity` starts of n - 1 comparisons), and sampling's bisections.
Kernel LogitsProcessor::kernel_for(std::size_t capacity) const {
  const DeviceInfo& dev = ctx_->device();
  const LogitsProcessing& p = processing_;
  auto loops = [&](std::uint64_t wg) {
    const auto per = [&](std::uint64_t n) { return (n + wg - 1) / wg; };
    const std::uint64_t red = attention_detail::reduction_loops(dev, subgroups_, wg);
    std::uint64_t n = per(V_) + per(p.suppressed.size()) + per(capacity) * std::max<std::size_t>(p.no_repeat_ngram_size, 1) + 8;
    if (p.sample) n += (2 * kBisections + 4) * (per(V_) + red);
    return n;
  };
  const std::uint32_t wg = attention_detail::workgroup_within_budget(dev, workgroup_size_, loops);
  if (wg == 0) {
    throw Error(ErrorCode::out_of_range,
                fmt::format("{}: rows of V = {} ({} steps, n-gram {}) need more loop iterations per invocation than "
                            "the loop budget of {} (which drivers such as lavapipe enforce silently) even with the "
                            "widest workgroup of '{}'", kOp, V_, capacity, p.no_repeat_ngram_size,
                            attention_detail::kLoopBudget, dev.name));
  }
  return ctx_->kernel({subgroups_ ? "logits_processor" : "logits_processor_nosubgroup", {wg, 1, 1}, kBindings, sizeof(Push)});
}

LogitsProcessor::State LogitsProcessor::make_state(std::size_t B, std::size_t capacity) const {
  State s;
  s.B = B;
  s.capacity = capacity;
  if (processing_.no_repeat_ngram_size > 0) s.history = ctx_->tensor({B, capacity}, DType::f32, "LogitsProcessor history");
  if (processing_.repetition_penalty != 1.0) s.seen = ctx_->tensor({B, V_}, DType::f32, "LogitsProcessor seen tokens");
  if (processing_.sample || !processing_.prefix.empty()) s.chosen = ctx_->tensor({B}, DType::i32, "LogitsProcessor chosen tokens");
  if (!processing_.prefix.empty()) {
    if (processing_.prefix.size() != B) {
      throw Error(ErrorCode::invalid_argument,
                  fmt::format("{}: {} prefixes for a batch of {} rows (one per row, empty for none)", kOp, processing_.prefix.size(), B));
    }
    std::size_t P = 1;
    for (const auto& row : processing_.prefix) P = std::max(P, row.size());
    if (P > capacity) {
      throw Error(ErrorCode::out_of_range,
                  fmt::format("{}: a target prefix of {} tokens is longer than the decode's max_len = {}", kOp, P, capacity));
    }
    s.prefix_host.assign(B * P, -1);
    for (std::size_t b = 0; b < B; ++b) std::copy(processing_.prefix[b].begin(), processing_.prefix[b].end(), s.prefix_host.begin() + static_cast<std::ptrdiff_t>(b * P));
    s.prefix = ctx_->tensor({B, P}, DType::i32, "LogitsProcessor target prefix");
  }
  return s;
}

void LogitsProcessor::record_reset(Sequence& seq, const State& state) const {
  if (state.seen.valid()) seq.fill(state.seen, 0);
  if (!processing_.suppressed.empty()) seq.upload(suppressed_, suppressed_host_);
  if (state.prefix.valid()) seq.upload(state.prefix, state.prefix_host);
}

void LogitsProcessor::record(Sequence& seq, const State& state, const Tensor& logits, const Tensor& inputs,
                             std::size_t step) const {
  if (!active()) return;
  const std::size_t B = state.B;
  expect(kOp, "logits", logits, {B, V_}, DType::f32);
  expect(kOp, "inputs", inputs, {B}, DType::i32);
  if (step >= state.capacity) {
    throw Error(ErrorCode::out_of_range, fmt::format("{}: step {} is beyond the state's {} steps", kOp, step, state.capacity));
  }
  const LogitsProcessing& p = processing_;
  std::uint32_t flags = 0;
  if (p.repetition_penalty != 1.0) flags |= kRepeat;
  if (p.temperature != 1.0) flags |= kTemperature;
  if (p.no_repeat_ngram_size > 0) flags |= kNgram;
  if (p.min_length > 0) flags |= kMinLength;
  if (p.unk >= 0) flags |= kUnk;
  if (!p.suppressed.empty()) flags |= kSuppress;
  if (p.sample) flags |= kSample;
  if (state.prefix.valid()) flags |= kPrefix;
  const Push push{static_cast<std::uint32_t>(B), static_cast<std::uint32_t>(V_), static_cast<std::uint32_t>(state.capacity),
                  static_cast<std::uint32_t>(step), flags, static_cast<float>(1.0 / p.temperature),
                  static_cast<float>(p.repetition_penalty), static_cast<std::uint32_t>(p.no_repeat_ngram_size),
                  static_cast<std::uint32_t>(std::min<std::size_t>(p.min_length, std::numeric_limits<std::uint32_t>::max())),
                  p.eos, p.unk, static_cast<std::uint32_t>(p.suppressed.size()),
                  static_cast<std::uint32_t>(std::min<std::size_t>(p.top_k, std::numeric_limits<std::uint32_t>::max())),
                  static_cast<float>(p.top_p), static_cast<std::uint32_t>(p.seed), static_cast<std::uint32_t>(p.seed >> 32),
                  state.prefix.valid() ? static_cast<std::uint32_t>(state.prefix.dim(1)) : 0u};
  seq.dispatch(kernel_for(state.capacity),
               {inout(logits), in(inputs), state.history.valid() ? inout(state.history) : inout(sink_f32_),
                state.seen.valid() ? inout(state.seen) : inout(sink_f32_), in(suppressed_),
                state.chosen.valid() ? out(state.chosen) : inout(sink_i32_),
                state.prefix.valid() ? in(state.prefix) : in(suppressed_)},
               push, attention_detail::fold_groups(B, ctx_->device(), kOp));
}

}  // namespace vkrnn
