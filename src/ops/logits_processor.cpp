// Logits processing and sampling of one decoding step (shaders/logits_processor.comp).
#include "vkrnn/logits_processor.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

#include <fmt/format.h>

#include "ops/common.hpp"
#include "ops/kernels/decode.hpp"
#include "plan.hpp"
#include "vkrnn/error.hpp"

namespace vkrnn {
namespace {

constexpr const char* kOp = "LogitsProcessor";

using K = kernels::LogitsProcessor;
using ops::expect;

Kernel make_kernel(Context& ctx, const plan::Reduction& p) {
  return kernels::make<K>(ctx, {.local_size_x = p.workgroup, .ONE_SUBGROUP = p.one_subgroup}, p.variant);
}

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
  for (std::size_t i = 0; i < p.suppressed_sequences.size(); ++i) {
    const auto& s = p.suppressed_sequences[i];
    if (s.empty()) {
      throw Error(ErrorCode::invalid_argument, fmt::format("{}: suppressed sequence {} is empty", kOp, i));
    }
    for (std::size_t j = 0; j < s.size(); ++j) check_id(s[j], V_, fmt::format("suppressed sequence {}[{}]", i, j).c_str());
  }
  const plan::Reduction planned = plan::logits_processor(ctx.device(), options);
  workgroup_size_ = planned.workgroup;
  subgroups_ = planned.variant.subgroup;
  one_subgroup_ = planned.one_subgroup;
  kernel_ = make_kernel(ctx, planned);
  for (std::size_t b = 0; b < p.prefix.size(); ++b) {
    for (std::size_t t = 0; t < p.prefix[b].size(); ++t) check_id(p.prefix[b][t], V_, fmt::format("prefix[{}][{}]", b, t).c_str());
  }
  // Single ids (one-token sequences too), then the longer sequences' (start, length) pairs and ids.
  suppressed_host_ = p.suppressed;
  std::vector<const std::vector<std::int32_t>*> longer;
  for (const auto& s : p.suppressed_sequences) {
    if (s.size() == 1) suppressed_host_.push_back(s[0]);
    else longer.push_back(&s);
  }
  singles_ = static_cast<std::uint32_t>(suppressed_host_.size());
  sequences_ = static_cast<std::uint32_t>(longer.size());
  std::size_t at = suppressed_host_.size() + 2 * longer.size();
  for (const auto* s : longer) {
    suppressed_host_.push_back(static_cast<std::int32_t>(at));
    suppressed_host_.push_back(static_cast<std::int32_t>(s->size()));
    at += s->size();
    longest_sequence_ = std::max(longest_sequence_, static_cast<std::uint32_t>(s->size()));
  }
  for (const auto* s : longer) suppressed_host_.insert(suppressed_host_.end(), s->begin(), s->end());
  if (suppressed_host_.empty()) suppressed_host_.push_back(0);
  suppressed_ = ctx.tensor({suppressed_host_.size()}, DType::i32, "LogitsProcessor suppressed ids");
  null_ = kernels::null_tensor(ctx);
}

// The kernel whose workgroup keeps a row within the loop budget (plan::logits_processor_row).
Kernel LogitsProcessor::kernel_for(std::size_t capacity) const {
  const LogitsProcessing& p = processing_;
  const plan::Reduction planned{.variant = {.subgroup = subgroups_}, .workgroup = workgroup_size_,
                                .one_subgroup = one_subgroup_};
  const plan::Reduction r = plan::logits_processor_row(
      ctx_->device(), planned,
      {.V = V_, .suppressed = singles_, .capacity = capacity, .ngram = p.no_repeat_ngram_size, .sequences = sequences_,
       .sequence_length = longest_sequence_, .sample = p.sample});
  const bool planned_kernel = r.workgroup == workgroup_size_ && r.variant.subgroup == subgroups_;
  return planned_kernel ? kernel_ : make_kernel(*ctx_, r);
}

LogitsProcessor::State LogitsProcessor::make_state(std::size_t B, std::size_t capacity) const {
  State s;
  s.B = B;
  s.capacity = capacity;
  if (processing_.no_repeat_ngram_size > 0 || sequences_ > 0) s.history = ctx_->tensor({B, capacity}, DType::f32, "LogitsProcessor history");
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
  if (singles_ + sequences_ > 0) seq.upload(suppressed_, suppressed_host_);
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
  if (p.repetition_penalty != 1.0) flags |= LOGITS_REPEAT;
  if (p.temperature != 1.0) flags |= LOGITS_TEMPERATURE;
  if (p.no_repeat_ngram_size > 0) flags |= LOGITS_NGRAM;
  if (p.min_length > 0) flags |= LOGITS_MIN_LENGTH;
  if (p.unk >= 0) flags |= LOGITS_UNK;
  if (singles_ > 0) flags |= LOGITS_SUPPRESS;
  if (sequences_ > 0) flags |= LOGITS_SEQUENCES;
  if (p.sample) flags |= LOGITS_SAMPLE;
  if (state.prefix.valid()) flags |= LOGITS_PREFIX;
  const K::Push push{static_cast<std::uint32_t>(B), static_cast<std::uint32_t>(V_), static_cast<std::uint32_t>(state.capacity),
                  static_cast<std::uint32_t>(step), flags, static_cast<float>(1.0 / p.temperature),
                  static_cast<float>(p.repetition_penalty), static_cast<std::uint32_t>(p.no_repeat_ngram_size),
                  static_cast<std::uint32_t>(std::min<std::size_t>(p.min_length, std::numeric_limits<std::uint32_t>::max())),
                  p.eos, p.unk, singles_,
                  static_cast<std::uint32_t>(std::min<std::size_t>(p.top_k, std::numeric_limits<std::uint32_t>::max())),
                  static_cast<float>(p.top_p), static_cast<std::uint32_t>(p.seed), static_cast<std::uint32_t>(p.seed >> 32),
                  state.prefix.valid() ? static_cast<std::uint32_t>(state.prefix.dim(1)) : 0u, sequences_};
  // Unused bindings (no history, seen, chosen or prefix): the null buffer and the write sink.
  kernels::dispatch<K>(seq, kernel_for(state.capacity),
                       {.logits = logits, .inputs = inputs, .hist = state.history, .seen = state.seen,
                        .suppressed = suppressed_, .chosen = state.chosen, .prefix = state.prefix},
                       push, ops::fold_groups(B, ctx_->device(), kOp), null_);
}

}  // namespace vkrnn
