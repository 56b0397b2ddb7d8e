// A beam-search step after the logits in one dispatch (shaders/beam_step.comp).
#include "ops/beam_step.hpp"

#include <algorithm>
#include <bit>
#include <limits>

#include <fmt/format.h>

#include "ops/common.hpp"
#include "ops/kernels/decode.hpp"
#include "plan.hpp"
#include "vk/sequence_access.hpp"
#include "vkrnn/error.hpp"

namespace vkrnn {
namespace {

constexpr const char* kOp = "BeamStep";
using K = kernels::BeamStep;

// One invocation's loop iterations (invocation 0 of a source's merging workgroup, the busiest),
// estimated from above: its rows' top-k, the merge (beam_search.comp's bound), each gather's
// share of the source's K rows (twice for a state copied back), the gate check over B flags
// and the table.
std::uint64_t step_loops(const DeviceInfo& dev, bool subgroups, std::uint64_t wg, const BeamSearch& s, std::uint64_t V,
                         std::uint64_t rows, std::span<const BeamStep::Gather> gathers) {
  const std::uint64_t K = s.beam(), kc = s.candidates();
  std::uint64_t n = rows * plan::topk_loops(dev, subgroups, wg, V, kc);
  n += K * kc + 2 * K * (K + 2 * kc) + 3 * K;
  for (const auto& g : gathers) n += g.outer * ops::ceil_div(K * g.cols, wg) * (g.kind == BeamStep::Kind::back ? 2 : 1);
  n += ops::ceil_div(s.batch(), wg) + ops::ceil_div(detail::SequenceAccess::gate_words(), wg) + 8;
  return n;
}

// A gather's elements per decoder row (a copy back counts twice).
std::size_t floats(std::span<const BeamStep::Gather> gathers) {
  std::size_t n = 0;
  for (const auto& g : gathers) n += g.outer * g.cols * (g.kind == BeamStep::Kind::back ? 2 : 1);
  return n;
}

// Whether a gather's rows lie inside its tensors (sizes only: make() checks shapes before the
// tensors exist in their final form), with 32-bit indexing.
bool fits(const BeamStep::Gather& g, std::size_t R) {
  using Kind = BeamStep::Kind;
  const std::size_t rows_from = g.kind == Kind::token ? g.vocab : g.outer * R;
  const std::uint64_t limit = std::numeric_limits<std::uint32_t>::max() / 2;
  if (!g.from.valid() || !g.to.valid() || dtype_size(g.from.dtype()) != 4 || dtype_size(g.to.dtype()) != 4 ||
      g.cols == 0 || g.outer == 0 || rows_from == 0 || g.from_ld < g.cols || g.to_ld < g.cols ||
      (g.outer > 1 && (g.from_ld != g.cols || g.to_ld != g.cols || g.kind != Kind::parent))) {
    return false;
  }
  const std::uint64_t from_end = g.from_offset + std::uint64_t(rows_from - 1) * g.from_ld + g.cols;
  const std::uint64_t to_end = g.to_offset + std::uint64_t(g.outer * R - 1) * g.to_ld + g.cols;
  return from_end <= g.from.size() && to_end <= g.to.size() && from_end < limit && to_end < limit;
}

}  // namespace

std::optional<BeamStep> BeamStep::make(Context& ctx, const BeamSearch& search, std::size_t V,
                                       std::span<const Gather> gathers, const OpOptions& options) {
  const DeviceInfo& dev = ctx.device();
  if (gathers.size() > max_gathers || dev.max_storage_buffers_per_stage < K::storage_buffer_count) return std::nullopt;
  // 32-bit indexing of the logits and of every gathered block.
  const std::uint64_t R = search.rows();
  if (V == 0 || R * V > std::numeric_limits<std::uint32_t>::max() / 2) return std::nullopt;
  for (const auto& g : gathers) {
    if (!fits(g, R)) return std::nullopt;
  }
  // Rows per workgroup: options.tile where set; else a whole source on CPU drivers (lavapipe
  // pays ~10 us per workgroup, more than a small row's top-k), one row on GPUs (the rows' top-k
  // in parallel). Fewer where TopK's planned workgroup, widened, cannot keep one invocation
  // within the loop budget.
  const plan::Reduction base = plan::topk(dev, options);
  const bool sg = base.variant.subgroup;
  const std::size_t beam = search.beam();
  std::size_t rows = options.tile ? std::min<std::size_t>(options.tile, beam) : dev.type == DeviceType::cpu ? beam : 1;
  std::uint32_t wg = 0;
  for (;;) {
    wg = plan::workgroup_within_budget(
        dev, base.workgroup, sg, [&](std::uint64_t w) { return step_loops(dev, sg, w, search, V, rows, gathers); });
    if (wg != 0 || rows == 1) break;
    rows = (rows + 1) / 2;
  }
  if (wg == 0) return std::nullopt;
  BeamStep step(ctx, search);
  step.V_ = V;
  step.rows_ = rows;
  step.workgroup_ = wg;
  step.gather_floats_ = floats(gathers);
  step.kernel_ = kernels::make<K>(ctx,
                                  {.local_size_x = wg,
                                   .K_MAX = std::bit_ceil(static_cast<std::uint32_t>(search.candidates())),
                                   .ONE_SUBGROUP = plan::one_subgroup(dev, wg, sg)},
                                  base.variant);
  step.ticket_ = ctx.tensor({1 + search.batch()}, DType::u32, "BeamStep tickets");
  step.null_ = kernels::null_tensor(ctx);
  return step;
}

void BeamStep::record_reset(Sequence& seq) const { seq.fill(ticket_, 0u); }

void BeamStep::record(Sequence& seq, const BeamSearch::State& state, std::size_t t, const Tensor& logits,
                      const Tensor& forced, const Tensor& nonfinite, const Tensor& cand_values,
                      const Tensor& cand_ids, const Tensor& parents, const Tensor& next_tokens,
                      std::span<const Gather> gathers, bool close_gate) const {
  const BeamSearch& s = search_;
  if (t >= s.max_steps()) {
    throw Error(ErrorCode::out_of_range, fmt::format("{}: step t = {} is outside [0, max_steps = {})", kOp, t, s.max_steps()));
  }
  const std::size_t R = s.rows(), kc = s.candidates();
  ops::expect(kOp, "logits", logits, {R, V_}, DType::f32);
  if (forced.valid()) ops::expect(kOp, "forced", forced, {R}, DType::i32);
  ops::expect(kOp, "nonfinite", nonfinite, {R}, DType::u32);
  ops::expect(kOp, "cand_values", cand_values, {R, kc}, DType::f32);
  ops::expect(kOp, "cand_ids", cand_ids, {R, kc}, DType::i32);
  ops::expect(kOp, "parents", parents, {R}, DType::i32);
  ops::expect(kOp, "next_tokens", next_tokens, {R}, DType::i32);
  if (gathers.size() > max_gathers || floats(gathers) > gather_floats_) {
    throw Error(ErrorCode::invalid_argument, fmt::format("{}: {} gathers of {} floats per row, beyond the {} of its plan",
                                                         kOp, gathers.size(), floats(gathers), gather_floats_));
  }
  Gather g[max_gathers];
  for (std::size_t i = 0; i < gathers.size(); ++i) {
    g[i] = gathers[i];
    if (!fits(g[i], R)) throw Error(ErrorCode::invalid_argument, fmt::format("{}: gather {} does not fit its tensors", kOp, i));
  }
  const auto u32 = [](std::size_t v) { return static_cast<std::uint32_t>(v); };
  const K::Push push{u32(s.batch()), u32(s.beam()), u32(kc), u32(s.max_steps()), u32(t), u32(s.finished_capacity()),
                     s.eos(), s.pad(), u32(s.finished_to_stop()), u32(V_), forced.valid() ? 1u : 0u,
                     close_gate ? detail::SequenceAccess::gate_words() : 0u, u32(gathers.size()), u32(rows_),
                     u32(g[0].cols), u32(g[0].outer), u32(g[0].from_offset), u32(g[0].from_ld), u32(g[0].to_offset),
                     u32(g[0].to_ld), u32(static_cast<std::size_t>(g[0].kind)), u32(g[0].vocab),
                     u32(g[1].cols), u32(g[1].outer), u32(g[1].from_offset), u32(g[1].from_ld), u32(g[1].to_offset),
                     u32(g[1].to_ld), u32(static_cast<std::size_t>(g[1].kind)), u32(g[1].vocab)};
  // fin and the histories keep what earlier steps wrote: read_write keeps them ordered after
  // those writes (as BeamSearch::record_step).
  kernels::dispatch<K>(seq, kernel_,
                       {.xs = logits, .forced = forced, .nonfinite = nonfinite, .values = cand_values, .ids = cand_ids,
                        .score_in = state.alive_score[t % 2], .score_out = state.alive_score[(t + 1) % 2],
                        .alive_count = state.alive_count, .done = state.done, .fin_count = state.fin_count,
                        .fin = state.fin, .hist_token = state.hist_token, .hist_parent = state.hist_parent,
                        .parents = parents, .next_tokens = next_tokens, .heads = state.heads, .src0 = g[0].from,
                        .dst0 = g[0].to, .src1 = g[1].from, .dst1 = g[1].to,
                        .gate = close_gate ? detail::SequenceAccess::gate_table(seq) : Tensor{}, .ticket = ticket_},
                       push, ops::fold_groups(s.batch() * ops::ceil_div(s.beam(), rows_), ctx_->device(), kOp), null_);
}

}  // namespace vkrnn
