// Argmax / greedy-step select over the vocabulary (shaders/argmax.comp).
#include "vkrnn/argmax.hpp"

#include <limits>

#include <fmt/format.h>

#include "ops/common.hpp"
#include "ops/greedy.hpp"
#include "ops/kernels/decode.hpp"
#include "plan.hpp"
#include "vk/sequence_access.hpp"
#include "vkrnn/error.hpp"

namespace vkrnn {
namespace {

constexpr const char* kOp = "Argmax";

using K = kernels::Argmax;

Kernel make_kernel(Context& ctx, const plan::Reduction& p) {
  return kernels::make<K>(ctx, {.local_size_x = p.workgroup, .ONE_SUBGROUP = p.one_subgroup},
                          p.variant);
}

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
  const plan::Reduction p = plan::argmax(ctx.device(), options);
  workgroup_size_ = p.workgroup;
  subgroups_ = p.variant.subgroup;
  one_subgroup_ = p.one_subgroup;
  kernel_ = make_kernel(ctx, p);
  null_ = kernels::null_tensor(ctx);
}

Kernel Argmax::kernel_for(std::size_t V, std::size_t passes, std::size_t S, std::size_t emb) const {
  const plan::Reduction planned{.variant = {.subgroup = subgroups_}, .workgroup = workgroup_size_,
                                .one_subgroup = one_subgroup_};
  const plan::Reduction p =
      plan::argmax_row(ctx_->device(), planned, {.V = V, .passes = passes, .S = S, .emb = emb});
  const bool planned_kernel = p.workgroup == workgroup_size_ && p.variant.subgroup == subgroups_;
  return planned_kernel ? kernel_ : make_kernel(*ctx_, p);
}

namespace {

void check_nonfinite(const Tensor& nonfinite, std::size_t B) {
  if (nonfinite.valid()) expect(kOp, "nonfinite", nonfinite, {B}, DType::u32);
}

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
                    const Tensor& log_probs, const Tensor& nonfinite) const {
  check_logits(logits);
  const std::size_t B = logits.dim(0);
  expect(kOp, "indices", indices, {B}, DType::i32);
  if (max_values.valid()) expect(kOp, "max_values", max_values, {B}, DType::f32);
  if (log_probs.valid()) expect(kOp, "log_probs", log_probs, {B}, DType::f32);
  check_nonfinite(nonfinite, B);
  K::Push push{};
  push.B = static_cast<std::uint32_t>(B);
  push.V = static_cast<std::uint32_t>(logits.dim(1));
  push.ld = 1;
  push.eos = -1;
  push.flags = ARGMAX_INDEX | (max_values.valid() ? ARGMAX_VALUE : 0u) | (log_probs.valid() ? ARGMAX_SCORE : 0u) |
               (nonfinite.valid() ? ARGMAX_NONFINITE : 0u);
  push.mark = 1;
  // Unused bindings: the null buffer (inputs) and the write sink (outputs: validation sees the
  // shader's writable bindings as writes, and the recorder then orders them like any other).
  kernels::dispatch<K>(seq, kernel_for(logits.dim(1), log_probs.valid() ? 2 : 1, 0, 0),
                       {.logits = logits, .index_out = indices, .value_out = max_values,
                        .score_hist = log_probs, .nonfinite = nonfinite},
                       push, ops::fold_groups(B, ctx_->device(), kOp), null_);
}

namespace ops {

GreedyDispatch greedy_dispatch(const Tensor& logits, const GreedyStep& g) {
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
  check_nonfinite(g.nonfinite, B);
  if (g.chosen.valid()) expect(kOp, "chosen", g.chosen, {B}, DType::i32);
  if (g.step >= std::numeric_limits<std::uint32_t>::max()) {
    throw Error(ErrorCode::out_of_range, fmt::format("{}: step {} exceeds 32-bit indexing", kOp, g.step));
  }
  K::Push push{};
  push.B = static_cast<std::uint32_t>(B);
  push.V = static_cast<std::uint32_t>(V);
  push.S = static_cast<std::uint32_t>(S);
  push.ld = static_cast<std::uint32_t>(capacity);
  push.col = static_cast<std::uint32_t>(g.step);
  push.eos = g.eos;
  push.pad = g.pad;
  push.flags = ARGMAX_INDEX | (g.tokens.valid() ? ARGMAX_TOKENS : 0u) | (g.scores.valid() ? ARGMAX_SCORE : 0u) |
               (g.finished.valid() ? ARGMAX_FINISHED : 0u) | (g.logits.valid() ? ARGMAX_LOGITS : 0u) |
               (g.attention.valid() ? ARGMAX_ATTENTION : 0u) | (g.embedding ? ARGMAX_EMBED : 0u) |
               (g.nonfinite.valid() ? ARGMAX_NONFINITE : 0u) | (g.chosen.valid() ? ARGMAX_CHOSEN : 0u);
  if (g.embedding) {
    push.emb_dim = static_cast<std::uint32_t>(g.embedding->cols);
    push.table_offset = static_cast<std::uint32_t>(g.embedding->offset);
    push.table_ld = static_cast<std::uint32_t>(table_ld);
    push.emb_offset = static_cast<std::uint32_t>(g.embedding_out->offset);
    push.emb_ld = static_cast<std::uint32_t>(emb_ld);
  }
  push.mark = static_cast<std::uint32_t>(g.step + 1);
  GreedyDispatch d;
  d.push = push;
  d.passes = 1 + (g.scores.valid() ? 1 : 0) + (g.logits.valid() ? 1 : 0);
  d.S = S;
  d.emb = g.embedding ? g.embedding->cols : 0;
  d.bindings = {.logits = logits,
                .index_out = g.next_tokens,
                .tok_hist = g.tokens,
                .score_hist = g.scores,
                .finished = g.finished,
                .logit_hist = g.logits,
                .weights = g.weights,
                .attn_hist = g.attention,
                .table = g.embedding ? g.embedding->tensor : Tensor{},
                .emb_out = g.embedding ? g.embedding_out->tensor : Tensor{},
                .nonfinite = g.nonfinite,
                .chosen = g.chosen};
  return d;
}

}  // namespace ops

void Argmax::record(Sequence& seq, const Tensor& logits, const GreedyStep& g) const {
  const ops::GreedyDispatch d = ops::greedy_dispatch(logits, g);
  kernels::dispatch<K>(seq, kernel_for(d.push.V, d.passes, d.S, d.emb), d.bindings, d.push,
                       ops::fold_groups(d.push.B, ctx_->device(), kOp), null_);
}

bool Argmax::record(Sequence& seq, const Linear& projection, const MatrixView& x, const Tensor& logits,
                    const GreedyStep& step, const Tensor& scratch) const {
  check_logits(logits);
  if (logits.dim(1) != projection.out_features() || x.rows != logits.dim(0)) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{}: logits {} must be [x rows = {}, the projection's out_features = {}]", kOp,
                            to_string(logits.shape()), x.rows, projection.out_features()));
  }
  if (!projection.loaded_) {
    throw Error(ErrorCode::state, fmt::format("{}: the projection ({} -> {}) is not loaded", kOp,
                                              projection.in_features(), projection.out_features()));
  }
  ops::GreedyDispatch d = ops::greedy_dispatch(logits, step);
  if (step.close_gate) {
    if (!step.finished.valid()) {
      throw Error(ErrorCode::invalid_argument, fmt::format("{}: close_gate needs the step's finished flags", kOp));
    }
    d.gate = detail::SequenceAccess::gate_table(seq);  // Error(state) outside the gate
  }
  const MatrixView y = MatrixView::of(logits);
  const ops::GreedyTail tail(d, scratch);
  if (scratch.valid() && projection.record_any(seq, x, y, &tail)) return true;
  projection.record(seq, x, y);
  kernels::dispatch<K>(seq, kernel_for(d.push.V, d.passes, d.S, d.emb), d.bindings, d.push,
                       ops::fold_groups(d.push.B, ctx_->device(), kOp), null_);
  return false;
}

std::size_t Argmax::fused_scratch_words(const Linear& projection, std::size_t B) const {
  return projection.gemm_.greedy_scratch_words(B, projection.out_features());
}

}  // namespace vkrnn
