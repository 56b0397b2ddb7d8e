// Argmax / greedy-step select over the vocabulary (shaders/argmax.comp).
#include "vkrnn/argmax.hpp"

#include <limits>

#include <fmt/format.h>

#include "ops/common.hpp"
#include "plan.hpp"
#include "vkrnn/error.hpp"

namespace vkrnn {
namespace {

constexpr const char* kOp = "Argmax";

// Must match the FLAG_* constants of argmax.comp.
constexpr std::uint32_t kIndex = 1, kValue = 2, kTokens = 4, kScore = 8, kFinished = 16, kLogits = 32,
                        kAttention = 64, kEmbed = 128;

struct Push {
  std::uint32_t B, V, S, ld, col;
  std::int32_t eos, pad;
  std::uint32_t flags;
  std::uint32_t emb_dim, table_offset, table_ld, emb_offset, emb_ld;
};

// A view's last element must lie inside its f32 tensor; returns its row stride.
std::size_t view_ld(const MatrixView& v, const char* arg) {
  const std::size_t ld = v.ld ? v.ld : v.cols;
  if (!v.tensor.valid() || v.tensor.dtype() != DType::f32 || v.rows == 0 || v.cols == 0 || ld < v.cols ||
      v.offset + (v.rows - 1) * ld + v.cols > v.tensor.size() || v.tensor.size() > std::numeric_limits<std::uint32_t>::max()) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{}: argument '{}': a {} x {} f32 view at offset {} with row stride {} does not fit its tensor",
                            kOp, arg, v.rows, v.cols, v.offset, ld));
  }
  return ld;
}

using ops::expect;

}  // namespace

Argmax::Argmax(Context& ctx, const OpOptions& options) : ctx_(&ctx) {
  const DeviceInfo& dev = ctx.device();
  const plan::Reduction p = plan::argmax(dev, options);
  subgroups_ = p.variant.subgroup;
  workgroup_size_ = p.workgroup;
  kernel_ = ctx.kernel({subgroups_ ? "argmax" : "argmax_nosubgroup", {workgroup_size_, 1, 1}, 11, sizeof(Push)});
  dummy_ = ctx.tensor({4}, DType::f32, "Argmax unused input");
  ctx.write(dummy_, std::vector<float>(4, 0.0f));
  sink_ = ctx.tensor({4}, DType::f32, "Argmax unused output");
}

namespace {

void check_logits(const Tensor& logits) {
  if (!logits.valid() || logits.dtype() != DType::f32 || logits.rank() != 2 || logits.dim(0) == 0 || logits.dim(1) == 0) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{}: argument 'logits': expected f32 [B, V] with B, V >= 1, got {}", kOp,
                            logits.valid() ? fmt::format("{} {}", to_string(logits.dtype()), to_string(logits.shape()))
                                           : std::string("an empty tensor")));
  }
  if (logits.size() > std::numeric_limits<std::uint32_t>::max() / 2) {
    throw Error(ErrorCode::out_of_range, fmt::format("{}: logits {} exceed 32-bit indexing", kOp, to_string(logits.shape())));
  }
}

}  // namespace

void Argmax::record(Sequence& seq, const Tensor& logits, const Tensor& indices, const Tensor& max_values,
                    const Tensor& log_probs) const {
  check_logits(logits);
  const std::size_t B = logits.dim(0);
  expect(kOp, "indices", indices, {B}, DType::i32);
  if (max_values.valid()) expect(kOp, "max_values", max_values, {B}, DType::f32);
  if (log_probs.valid()) expect(kOp, "log_probs", log_probs, {B}, DType::f32);
  const Push push{static_cast<std::uint32_t>(B), static_cast<std::uint32_t>(logits.dim(1)), 0, 1, 0, -1, 0,
                  kIndex | (max_values.valid() ? kValue : 0u) | (log_probs.valid() ? kScore : 0u), 0, 0, 0, 0, 0};
  // Unused outputs go to a sink declared as written: validation sees the shader's writable
  // bindings as writes, and the recorder then orders them like any other.
  const Arg sink = inout(sink_);
  seq.dispatch(kernel_,
               {in(logits), out(indices), max_values.valid() ? out(max_values) : sink, sink,
                log_probs.valid() ? out(log_probs) : sink, sink, sink, in(dummy_), sink, in(dummy_), sink},
               push, ops::fold_groups(B, ctx_->device(), kOp));
}

void Argmax::record(Sequence& seq, const Tensor& logits, const GreedyStep& g) const {
  check_logits(logits);
  const std::size_t B = logits.dim(0), V = logits.dim(1);
  expect(kOp, "next_tokens", g.next_tokens, {B}, DType::i32);
  if (g.finished.valid()) {
    expect(kOp, "finished", g.finished, {B}, DType::u32);
    if (g.eos < 0 || static_cast<std::size_t>(g.eos) >= V) {
      throw Error(ErrorCode::invalid_argument,
                  fmt::format("{}: eos = {} is outside the vocabulary [0, {})", kOp, g.eos, V));
    }
  }
  if (g.pad < 0 || static_cast<std::size_t>(g.pad) >= V) {
    throw Error(ErrorCode::invalid_argument, fmt::format("{}: pad = {} is outside the vocabulary [0, {})", kOp, g.pad, V));
  }
  // Every history tensor agrees on the capacity (columns per row).
  std::size_t capacity = 0;
  for (const Tensor* t : {&g.tokens, &g.scores, &g.logits, &g.attention}) {
    if (t->valid() && t->rank() >= 2) {
      capacity = t->dim(1);
      break;
    }
  }
  if (g.tokens.valid()) expect(kOp, "tokens", g.tokens, {B, capacity}, DType::i32);
  if (g.scores.valid()) expect(kOp, "scores", g.scores, {B, capacity}, DType::f32);
  if (g.logits.valid()) expect(kOp, "logits history", g.logits, {B, capacity, V}, DType::f32);
  std::size_t S = 0;
  if (g.weights.valid() || g.attention.valid()) {
    if (!g.weights.valid() || !g.attention.valid() || g.weights.rank() != 2 || g.weights.dim(0) != B) {
      throw Error(ErrorCode::invalid_argument,
                  fmt::format("{}: attention history needs both 'weights' f32 [{}, S] and 'attention' f32 [{}, capacity, S]",
                              kOp, B, B));
    }
    S = g.weights.dim(1);
    expect(kOp, "weights", g.weights, {B, S}, DType::f32);
    expect(kOp, "attention", g.attention, {B, capacity, S}, DType::f32);
  }
  if ((g.tokens.valid() || g.scores.valid() || g.logits.valid() || g.attention.valid()) && g.step >= capacity) {
    throw Error(ErrorCode::out_of_range,
                fmt::format("{}: step {} is beyond the history's {} columns", kOp, g.step, capacity));
  }
  if (g.embedding.has_value() != g.embedding_out.has_value()) {
    throw Error(ErrorCode::invalid_argument, fmt::format("{}: 'embedding' and 'embedding_out' go together", kOp));
  }
  std::size_t table_ld = 0, emb_ld = 0;
  if (g.embedding) {
    table_ld = view_ld(*g.embedding, "embedding");
    emb_ld = view_ld(*g.embedding_out, "embedding_out");
    if (g.embedding->rows < V || g.embedding_out->rows != B || g.embedding_out->cols != g.embedding->cols) {
      throw Error(ErrorCode::invalid_argument,
                  fmt::format("{}: 'embedding' ({} x {}) needs at least V = {} rows and 'embedding_out' ({} x {}) "
                              "{} rows of its width", kOp, g.embedding->rows, g.embedding->cols, V,
                              g.embedding_out->rows, g.embedding_out->cols, B));
    }
    if (g.embedding_out->tensor.storage_ptr() == g.embedding->tensor.storage_ptr() ||
        g.embedding_out->tensor.storage_ptr() == logits.storage_ptr()) {
      throw Error(ErrorCode::invalid_argument, fmt::format("{}: 'embedding_out' must not share memory with its inputs", kOp));
    }
  }
  const std::uint32_t flags = kIndex | (g.tokens.valid() ? kTokens : 0u) | (g.scores.valid() ? kScore : 0u) |
                              (g.finished.valid() ? kFinished : 0u) | (g.logits.valid() ? kLogits : 0u) |
                              (g.attention.valid() ? kAttention : 0u) | (g.embedding ? kEmbed : 0u);
  const Push push{static_cast<std::uint32_t>(B), static_cast<std::uint32_t>(V), static_cast<std::uint32_t>(S),
                  static_cast<std::uint32_t>(capacity), static_cast<std::uint32_t>(g.step), g.eos, g.pad, flags,
                  g.embedding ? static_cast<std::uint32_t>(g.embedding->cols) : 0u,
                  g.embedding ? static_cast<std::uint32_t>(g.embedding->offset) : 0u, static_cast<std::uint32_t>(table_ld),
                  g.embedding ? static_cast<std::uint32_t>(g.embedding_out->offset) : 0u, static_cast<std::uint32_t>(emb_ld)};
  const Arg sink = inout(sink_);
  seq.dispatch(kernel_,
               {in(logits), out(g.next_tokens), sink, g.tokens.valid() ? out(g.tokens) : sink,
                g.scores.valid() ? out(g.scores) : sink, g.finished.valid() ? inout(g.finished) : sink,
                g.logits.valid() ? out(g.logits) : sink, g.weights.valid() ? in(g.weights) : in(dummy_),
                g.attention.valid() ? out(g.attention) : sink, g.embedding ? in(g.embedding->tensor) : in(dummy_),
                g.embedding ? out(g.embedding_out->tensor) : sink},
               push, ops::fold_groups(B, ctx_->device(), kOp));
}

}  // namespace vkrnn
