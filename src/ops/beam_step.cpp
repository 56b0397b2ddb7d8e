// A beam-search step after the logits in one dispatch (shaders/beam_step.comp).
#include "ops/beam_step.hpp"

#include <algorithm>
#include <array>
#include <bit>
#include <limits>
#include <vector>

#include <fmt/format.h>

#include "ops/common.hpp"
#include "ops/gemv_tail.hpp"
#include "ops/kernels/decode.hpp"
#include "plan.hpp"
#include "vk/sequence_access.hpp"
#include "vkrnn/error.hpp"

namespace vkrnn {
namespace {

constexpr const char* kOp = "BeamStep";
using K = kernels::BeamStep;
static_assert(K::slots == BeamStep::max_tensors && K::storage_buffer_count == BeamStep::storage_buffers);
static_assert(kernels::GemvBeam::storage_buffer_count == 27, "docs/model-format.md names the count");
constexpr std::size_t kMaxLd = 0xffff;       // row strides: 16 bits each in the push block
constexpr std::size_t kMaxWide = 1u << 24;   // outer, or a token lookup's vocab: 24 bits

// One invocation's loop iterations after the rows' top-k (invocation 0 of a source's merging
// workgroup, the busiest), estimated from above: the merge (beam_search.comp's bound), each
// gather's share of the source's K rows (twice for a state copied back), the gate check over B
// flags and the table.
std::uint64_t merge_loops(std::uint64_t wg, const BeamSearch& s, std::span<const BeamStep::Gather> gathers) {
  const std::uint64_t K = s.beam(), kc = s.candidates();
  std::uint64_t n = K * kc + 2 * K * (K + 2 * kc) + 3 * K;
  for (const auto& g : gathers) {
    // A copy in place: each invocation's columns, twice over the K rows.
    if (g.kind == BeamStep::Kind::back) n += ops::ceil_div(g.cols, wg) * (2 * K + 1);
    else n += g.outer * ops::ceil_div(K * g.cols, wg);
  }
  n += ops::ceil_div(s.batch(), wg) + ops::ceil_div(detail::SequenceAccess::gate_words(), wg) + 8;
  return n;
}

// beam_step.comp's: its rows' top-k, then the source's merge.
std::uint64_t step_loops(const DeviceInfo& dev, bool subgroups, std::uint64_t wg, const BeamSearch& s, std::uint64_t V,
                         std::uint64_t rows, std::span<const BeamStep::Gather> gathers) {
  return rows * plan::topk_loops(dev, subgroups, wg, V, s.candidates()) + merge_loops(wg, s, gathers);
}

// The most sources a gemv_beam.comp workgroup of TM rows merges: those its rows touch.
std::uint64_t merged_sources(std::uint64_t TM, const BeamSearch& s) {
  return std::min<std::uint64_t>(s.batch(), ops::ceil_div(std::max<std::uint64_t>(TM, 1) - 1, s.beam()) + 1);
}

// gemv_beam.comp's merging workgroup, for G blocks of `span` columns: each row's max and sum
// over the G partials, its share of them into the best kc (each insertion up to kc moves) and
// two merges of kc rounds, its share of the kc blocks read; then the source's merge. A
// workgroup of TM rows merges at most the sources those rows touch.
std::uint64_t fused_loops(std::uint64_t wg, std::uint64_t G, std::uint64_t span, std::uint64_t TM, const BeamSearch& s,
                          std::span<const BeamStep::Gather> gathers) {
  const std::uint64_t kc = s.candidates(), K = s.beam();
  const std::uint64_t row = 2 * ops::ceil_div(G, wg) + ops::ceil_div(G, wg) * (kc + 1) + 2 * kc +
                            kc * ops::ceil_div(span, wg) * (kc + 1) + 8;
  return merged_sources(TM, s) * (K * row + merge_loops(wg, s, gathers) + 2);
}

// A gather's elements per decoder row (a copy back counts twice).
std::size_t floats(std::span<const BeamStep::Gather> gathers) {
  std::size_t n = 0;
  for (const auto& g : gathers) n += g.outer * g.cols * (g.kind == BeamStep::Kind::back ? 2 : 1);
  return n;
}

// Whether a gather's rows lie inside its tensors (sizes only: make() checks shapes before the
// tensors exist in their final form), with 32-bit indexing and the push block's field widths.
bool fits(const BeamStep::Gather& g, std::size_t R) {
  using Kind = BeamStep::Kind;
  const bool back = g.kind == Kind::back;  // in place: `to` is not BeamStep's
  const std::size_t rows_from = g.kind == Kind::token ? g.vocab : g.outer * R;
  const std::uint64_t limit = std::numeric_limits<std::uint32_t>::max() / 2;
  if (!g.from.valid() || dtype_size(g.from.dtype()) != 4 || (!back && (!g.to.valid() || dtype_size(g.to.dtype()) != 4)) ||
      g.cols == 0 || g.outer == 0 || rows_from == 0 || g.from_ld < g.cols || (!back && g.to_ld < g.cols) ||
      g.from_ld > kMaxLd || (!back && g.to_ld > kMaxLd) || g.outer >= kMaxWide || (g.kind == Kind::token && g.vocab >= kMaxWide) ||
      (g.outer > 1 && (g.from_ld != g.cols || g.to_ld != g.cols || g.kind != Kind::parent)) ||
      (g.kind == Kind::parent && ops::same_memory(g.from, g.to))) {
    return false;
  }
  const std::uint64_t from_end = g.from_offset + std::uint64_t(rows_from - 1) * g.from_ld + g.cols;
  const std::uint64_t to_end = back ? 0 : g.to_offset + std::uint64_t(g.outer * R - 1) * g.to_ld + g.cols;
  return from_end <= g.from.size() && to_end <= g.to.size() && from_end < limit && to_end < limit;
}

// The distinct tensors the gathers read and write (a copy in place: its `from` alone), each
// gather's source and destination slot in `slot_of` (two per gather); nullopt beyond
// max_tensors.
std::optional<std::vector<Tensor>> gather_slots(std::span<const BeamStep::Gather> gathers, std::vector<std::uint32_t>* slot_of) {
  std::vector<Tensor> slots;
  auto slot = [&](const Tensor& t) {
    for (std::size_t i = 0; i < slots.size(); ++i) {
      if (ops::same_memory(slots[i], t)) return static_cast<std::uint32_t>(i);
    }
    slots.push_back(t);
    return static_cast<std::uint32_t>(slots.size() - 1);
  };
  for (const auto& g : gathers) {
    const std::uint32_t from = slot(g.from);
    const std::uint32_t to = g.kind == BeamStep::Kind::back ? from : slot(g.to);
    if (slot_of) slot_of->insert(slot_of->end(), {from, to});
  }
  if (slots.size() > BeamStep::max_tensors) return std::nullopt;
  return slots;
}

}  // namespace

std::optional<BeamStep> BeamStep::make(Context& ctx, const BeamSearch& search, std::size_t V,
                                       std::span<const Gather> gathers, const OpOptions& options,
                                       const Linear* projection) {
  const DeviceInfo& dev = ctx.device();
  if (gathers.size() > max_gathers || dev.max_storage_buffers_per_stage < K::storage_buffer_count) return std::nullopt;
  // 32-bit indexing of the logits and of every gathered block.
  const std::uint64_t R = search.rows();
  if (V == 0 || R * V > std::numeric_limits<std::uint32_t>::max() / 2) return std::nullopt;
  for (const auto& g : gathers) {
    if (!fits(g, R)) return std::nullopt;
  }
  if (!gather_slots(gathers, nullptr)) return std::nullopt;
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
  step.back_ = std::any_of(gathers.begin(), gathers.end(), [](const Gather& g) { return g.kind == Kind::back; });
  // (a copy in place holds a column of the K rows)
  step.k_max_ = std::bit_ceil(static_cast<std::uint32_t>(step.back_ ? std::max(search.candidates(), beam) : search.candidates()));
  step.kernel_ = kernels::make<K>(ctx,
                                  {.local_size_x = wg,
                                   .K_MAX = step.k_max_,
                                   .ONE_SUBGROUP = plan::one_subgroup(dev, wg, sg),
                                   .BACK = step.back_},
                                  base.variant);
  step.ticket_ = ctx.tensor({1 + search.batch()}, DType::u32, "BeamStep tickets");
  step.null_ = kernels::null_tensor(ctx);
  // gemv_beam.comp: its push block packs B, K, kc, F and T in 16 bits each.
  const std::size_t groups = projection && projection->out_features() == V ? projection->gemm_.tail_row_groups(R, V) : 0;
  if (groups && dev.max_storage_buffers_per_stage >= kernels::GemvBeam::storage_buffer_count &&
      std::max({search.batch(), beam, search.candidates(), search.finished_capacity(), search.max_steps()}) <= 0xffff &&
      search.finished_to_stop() < (1u << 31) && detail::SequenceAccess::gate_words() < (1u << (32 - kernels::GemvBeam::gate_words_shift))) {
    step.projection_ = projection;
    step.scratch_ = ctx.tensor({4 + 2 * R * groups + search.batch()}, DType::u32, "BeamStep projection partials");
  }
  return step;
}

void BeamStep::record_reset(Sequence& seq) const {
  seq.fill(ticket_, 0u);
  if (scratch_.valid()) seq.fill(scratch_, 0u);
}

struct BeamStep::Prepared {
  K::Push push;
  std::vector<Tensor> slots;
  const BeamSearch::State* state;
  Tensor forced, nonfinite, values, ids, parents, next_tokens, gate;
  Tensor slot(std::size_t i) const { return i < slots.size() ? slots[i] : Tensor{}; }
  // The step's bindings but the logits' (beam_step.comp's and gemv_beam.comp's, named alike).
  // fin and the histories keep what earlier steps wrote: read_write keeps them ordered after
  // those writes (as BeamSearch::record_step).
  template <class Bindings>
  Bindings bindings() const {
    const BeamSearch::State& st = *state;
    Bindings b{};
    b.forced = forced;
    b.nonfinite = nonfinite;
    b.values = values;
    b.ids = ids;
    b.score_in = st.alive_score[push.t % 2];
    b.score_out = st.alive_score[(push.t + 1) % 2];
    b.alive_count = st.alive_count;
    b.done = st.done;
    b.fin_count = st.fin_count;
    b.fin = st.fin;
    b.hist_token = st.hist_token;
    b.hist_parent = st.hist_parent;
    b.parents = parents;
    b.next_tokens = next_tokens;
    b.heads = st.heads;
    b.slot0 = slot(0);
    b.slot1 = slot(1);
    b.slot2 = slot(2);
    b.slot3 = slot(3);
    b.slot4 = slot(4);
    b.slot5 = slot(5);
    b.gate = gate;
    return b;
  }
};

BeamStep::Prepared BeamStep::prepare(Sequence& seq, const BeamSearch::State& state, std::size_t t, const Tensor& logits,
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
  for (std::size_t i = 0; i < gathers.size(); ++i) {
    if (gathers[i].kind == Kind::back && !back_) {
      throw Error(ErrorCode::invalid_argument, fmt::format("{}: gather {} copies in place, which no gather of its plan does", kOp, i));
    }
  }
  if (gathers.size() > max_gathers || floats(gathers) > gather_floats_) {
    throw Error(ErrorCode::invalid_argument, fmt::format("{}: {} gathers of {} floats per row, beyond the {} of its plan",
                                                         kOp, gathers.size(), floats(gathers), gather_floats_));
  }
  for (std::size_t i = 0; i < gathers.size(); ++i) {
    if (!fits(gathers[i], R)) throw Error(ErrorCode::invalid_argument, fmt::format("{}: gather {} does not fit its tensors", kOp, i));
  }
  std::vector<std::uint32_t> slot_of;
  const auto slots = gather_slots(gathers, &slot_of);
  if (!slots) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{}: the gathers read and write more than {} distinct tensors", kOp, max_tensors));
  }
  const auto u32 = [](std::size_t v) { return static_cast<std::uint32_t>(v); };
  K::Push push{u32(s.batch()), u32(s.beam()), u32(kc), u32(s.max_steps()), u32(t), u32(s.finished_capacity()),
               s.eos(), s.pad(), u32(s.finished_to_stop()), u32(V_),
               close_gate ? detail::SequenceAccess::gate_words() : 0u,
               (forced.valid() ? 1u : 0u) | u32(gathers.size()) << 1 | u32(rows_) << 8, {}, {}, {}, {}, {}};
  std::array<std::uint32_t, 4>* words[max_gathers] = {&push.g0, &push.g1, &push.g2, &push.g3};
  std::uint32_t read = 0, written = 0;  // slots the gathers so far read, wrote
  for (std::size_t i = 0; i < gathers.size(); ++i) {
    const Gather& g = gathers[i];
    // A gather waits for the earlier ones where it reads what they wrote or writes what they
    // touched (a decoder input's columns: a state in place, then the token's embedding).
    const std::uint32_t from = 1u << slot_of[2 * i], to = 1u << slot_of[2 * i + 1];
    if ((from & written) || (to & (read | written))) push.flags |= 16u << i;
    read |= from;
    written |= to;
    // In vec4s where every row of it starts on one.
    const bool back = g.kind == Kind::back;
    if (g.cols % 4 == 0 && g.from_offset % 4 == 0 && g.from_ld % 4 == 0 && (back || (g.to_offset % 4 == 0 && g.to_ld % 4 == 0))) {
      push.flags |= 65536u << i;
    }
    const std::size_t wide = g.kind == Kind::token ? g.vocab : g.outer;
    *words[i] = {u32(static_cast<std::size_t>(g.kind)) | slot_of[2 * i] << 2 | slot_of[2 * i + 1] << 5 | u32(wide) << 8,
                 u32(g.cols), u32(g.from_offset), u32(g.kind == Kind::back ? 0 : g.to_offset)};
    push.lds[i] = u32(g.from_ld) | u32(g.kind == Kind::back ? 0 : g.to_ld) << 16;
  }
  return {push, *slots, &state, forced, nonfinite, cand_values, cand_ids, parents, next_tokens,
          close_gate ? detail::SequenceAccess::gate_table(seq) : Tensor{}};
}

void BeamStep::dispatch(Sequence& seq, const Prepared& p, const Tensor& logits) const {
  const BeamSearch& s = search_;
  K::Bindings b = p.bindings<K::Bindings>();
  b.xs = logits;
  b.ticket = ticket_;
  kernels::dispatch<K>(seq, kernel_, b, p.push, ops::fold_groups(s.batch() * ops::ceil_div(s.beam(), rows_), ctx_->device(), kOp),
                       null_);
}

void BeamStep::record(Sequence& seq, const BeamSearch::State& state, std::size_t t, const Tensor& logits,
                      const Tensor& forced, const Tensor& nonfinite, const Tensor& cand_values,
                      const Tensor& cand_ids, const Tensor& parents, const Tensor& next_tokens,
                      std::span<const Gather> gathers, bool close_gate) const {
  dispatch(seq, prepare(seq, state, t, logits, forced, nonfinite, cand_values, cand_ids, parents, next_tokens, gathers, close_gate),
           logits);
}

// gemv_beam.comp: the projection's planned GEMV with the step as its tail.
class BeamTail final : public ops::GemvTail {
 public:
  BeamTail(const BeamStep& step, const BeamStep::Prepared& prepared, const kernels::GemvBeam::Bindings& step_bindings,
           std::span<const BeamStep::Gather> gathers)
      : step_(step), prepared_(prepared), b_(step_bindings), gathers_(gathers) {}

  bool record(Context& ctx, Sequence& seq, const ops::PlannedGemv& gemv) const override {
    const DeviceInfo& dev = ctx.device();
    const BeamSearch& s = step_.search_;
    const kernels::GemmPush& g = gemv.push;
    const plan::Gemv& v = gemv.v;
    const std::uint32_t wg = v.constants.local_size_x;
    const std::uint64_t G = gemv.groups[0];
    // The logits whole ([R, V] from element 0), W's rows from element 0 and the bias's, the row
    // strides in 16 bits, at most 32 sources a workgroup (the shader's bit mask), and the merges
    // within the loop budget beside the products.
    if (!gemv.joinable(dev) || g.M != s.rows() || g.N != step_.V_ || g.y_off != 0 || g.ldy != g.N || g.w_off != 0 ||
        g.b_off != 0 || g.ldx > 0xffff || g.ldw > 0xffff ||
        step_.scratch_.size() < 4 + 2 * std::uint64_t(g.M) * G + s.batch() || merged_sources(v.constants.TM, s) > 32 ||
        fused_loops(wg, G, std::uint64_t(v.constants.BLOCKS) * v.constants.TN, v.constants.TM, s, gathers_) >
            plan::kLoopBudget / 2) {
      return false;
    }
    const kernels::GemvBeam::Constants c{.local_size_x = wg, .TM = v.constants.TM, .TN = v.constants.TN,
                                         .BLOCKS = v.constants.BLOCKS, .ALIGNED = v.constants.ALIGNED,
                                         .WEIGHT_I8 = v.constants.WEIGHT_I8, .WIDE = v.constants.WIDE,
                                         .TEXEL = v.constants.TEXEL, .PACK_ROWS = v.constants.PACK_ROWS,
                                         .X_LANES = v.constants.X_LANES, .K_MAX = step_.k_max_,
                                         .BACK = step_.back_, .K_STREAMS = v.constants.K_STREAMS,
                                         .ONE_SUBGROUP = plan::one_subgroup(dev, wg, v.variant.subgroup)};
    const K::Push& q = prepared_.push;
    const kernels::GemvBeam::Push p{g.N, g.K, g.x_off, g.ldx | g.ldw << 16, g.s_off, q.B | q.K << 16, q.kc | q.F << 16,
                                    q.T | q.t << 16, q.eos, q.pad,
                                    q.stop | ((g.flags & GEMM_BIAS) != 0 ? kernels::GemvBeam::stop_bias : 0u),
                                    q.flags | q.gate_words << kernels::GemvBeam::gate_words_shift,
                                    q.g0, q.g1, q.g2, q.g3, q.lds};
    kernels::GemvBeam::Bindings b = b_;
    b.xs = gemv.bindings.xs;
    b.ws = gemv.bindings.ws;
    b.bias = gemv.bindings.bias;
    b.ys = gemv.bindings.ys;
    b.wt = gemv.bindings.wt;
    b.xt = gemv.bindings.xt;
    b.scratch = step_.scratch_;
    kernels::dispatch<kernels::GemvBeam>(seq, kernels::make<kernels::GemvBeam>(ctx, c, v.variant), b, p, gemv.groups,
                                         gemv.null);
    return true;
  }

 private:
  const BeamStep& step_;
  const BeamStep::Prepared& prepared_;
  const kernels::GemvBeam::Bindings& b_;
  std::span<const BeamStep::Gather> gathers_;
};

bool BeamStep::record(Sequence& seq, const Linear& projection, const MatrixView& x, const BeamSearch::State& state,
                      std::size_t t, const Tensor& logits, const Tensor& forced, const Tensor& nonfinite,
                      const Tensor& cand_values, const Tensor& cand_ids, const Tensor& parents,
                      const Tensor& next_tokens, std::span<const Gather> gathers, bool close_gate) const {
  const Prepared p = prepare(seq, state, t, logits, forced, nonfinite, cand_values, cand_ids, parents, next_tokens, gathers, close_gate);
  if (projection.out_features() != V_ || x.rows != search_.rows()) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{}: the projection ({} -> {}) and x ({} rows) must give the logits [{}, {}]", kOp,
                            projection.in_features(), projection.out_features(), x.rows, search_.rows(), V_));
  }
  const MatrixView y = MatrixView::of(logits);
  if (&projection == projection_) {
    const kernels::GemvBeam::Bindings b = p.bindings<kernels::GemvBeam::Bindings>();
    const BeamTail tail(*this, p, b, gathers);
    if (projection.record_any(seq, x, y, &tail)) return true;
  }
  projection.record(seq, x, y);
  dispatch(seq, p, logits);
  return false;
}

}  // namespace vkrnn
