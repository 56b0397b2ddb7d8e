// Beam-search candidate merge on the GPU (shaders/beam_search.comp) and the host-side rebuild
// of the hypotheses from its histories.
#include "vkrnn/beam_search.hpp"

#include <algorithm>
#include <bit>
#include <limits>

#include <fmt/format.h>

#include "ops/common.hpp"
#include "ops/kernels/decode.hpp"
#include "plan.hpp"
#include "vkrnn/error.hpp"

namespace vkrnn {
namespace {

constexpr const char* kOp = "BeamSearch";

using K = kernels::BeamSearch;

// Worst-case loop iterations of one invocation (shaders/beam_search.comp's header): initial
// heads, 2K picks of a K-head scan plus a find_head, the closing loops.
constexpr std::size_t loop_bound(std::size_t K, std::size_t kc) { return K * kc + 2 * K * (K + 2 * kc) + 2 * K; }
static_assert(loop_bound(BeamSearch::max_beam, BeamSearch::max_candidates) < plan::kLoopBudget,
              "beam_search.comp would outrun lavapipe's loop limit");
// The kernel's taken masks are two 32-bit words.
static_assert(BeamSearch::max_candidates <= 64);

using ops::expect;

}  // namespace

BeamSearch::BeamSearch(Context& ctx, std::size_t batch, std::size_t beam, std::size_t candidates, std::size_t max_steps,
                       std::int32_t eos, std::int32_t pad, const OpOptions& options, std::size_t finished_to_stop)
    : ctx_(&ctx), B_(batch), K_(beam), kc_(candidates), T_(max_steps), S_(finished_to_stop ? finished_to_stop : beam),
      eos_(eos), pad_(pad) {
  if (batch == 0) throw Error(ErrorCode::invalid_argument, fmt::format("{}: batch = 0, expected >= 1", kOp));
  if (beam == 0 || beam > max_beam) {
    throw Error(ErrorCode::invalid_argument, fmt::format("{}: beam = {} is outside [1, {}]", kOp, beam, max_beam));
  }
  if (candidates == 0 || candidates > max_candidates) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{}: candidates = {} is outside [1, {}]", kOp, candidates, max_candidates));
  }
  if (max_steps == 0) throw Error(ErrorCode::invalid_argument, fmt::format("{}: max_steps = 0, expected >= 1", kOp));
  if (S_ > max_finished_to_stop) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{}: finished_to_stop = {} is beyond {}", kOp, S_, max_finished_to_stop));
  }
  // 32-bit indexing of [T, R] histories and [R, kc] candidates.
  const std::uint64_t R = std::uint64_t(batch) * beam;
  if (R * std::max<std::uint64_t>(max_steps, candidates) > std::numeric_limits<std::uint32_t>::max() / 4) {
    throw Error(ErrorCode::out_of_range,
                fmt::format("{}: batch {} x beam {} x max(max_steps {}, candidates {}) exceeds 32-bit indexing", kOp,
                            batch, beam, max_steps, candidates));
  }
  // The merge binds 13 storage buffers (more than the Vulkan minimum of 4 per stage): a device
  // below that is told so here, naming the limit.
  plan::Needs needs;
  needs.add(0, K::storage_buffer_count);
  plan::require(ctx.device(), needs, kOp);
  kernel_ = kernels::make<K>(ctx, {.local_size_x = plan::beam_search_workgroup(ctx.device(), options)});
}

BeamSearch::State BeamSearch::make_state() const {
  Context& c = *ctx_;
  const std::size_t R = rows(), F = finished_capacity();
  State s;
  s.alive_score[0] = c.tensor({R}, DType::f32, "BeamSearch alive scores (even steps)");
  s.alive_score[1] = c.tensor({R}, DType::f32, "BeamSearch alive scores (odd steps)");
  s.alive_count = c.tensor({B_}, DType::u32, "BeamSearch alive count");
  s.done = c.tensor({B_}, DType::u32, "BeamSearch done");
  s.fin_count = c.tensor({B_}, DType::u32, "BeamSearch finished count");
  s.fin = c.tensor({B_, F, 4}, DType::u32, "BeamSearch finished records");
  s.hist_token = c.tensor({T_, R}, DType::i32, "BeamSearch token history");
  s.hist_parent = c.tensor({T_, R}, DType::i32, "BeamSearch parent history");
  s.heads = c.tensor({R, 4}, DType::u32, "BeamSearch merge scratch");
  return s;
}

namespace {

void check_state(const BeamSearch& op, const BeamSearch::State& s) {
  const std::size_t B = op.batch(), R = op.rows(), T = op.max_steps(), F = op.finished_capacity();
  expect(kOp, "state.alive_score[0]", s.alive_score[0], {R}, DType::f32);
  expect(kOp, "state.alive_score[1]", s.alive_score[1], {R}, DType::f32);
  expect(kOp, "state.alive_count", s.alive_count, {B}, DType::u32);
  expect(kOp, "state.done", s.done, {B}, DType::u32);
  expect(kOp, "state.fin_count", s.fin_count, {B}, DType::u32);
  expect(kOp, "state.fin", s.fin, {B, F, 4}, DType::u32);
  expect(kOp, "state.hist_token", s.hist_token, {T, R}, DType::i32);
  expect(kOp, "state.hist_parent", s.hist_parent, {T, R}, DType::i32);
  expect(kOp, "state.heads", s.heads, {R, 4}, DType::u32);
}

}  // namespace

void BeamSearch::record_reset(Sequence& seq, const State& state) const {
  check_state(*this, state);
  seq.fill(state.alive_score[0], 0u);  // 0.0f
  seq.fill(state.alive_count, 1u);
  seq.fill(state.done, 0u);
  seq.fill(state.fin_count, 0u);
  seq.fill(state.fin, 0xffffffffu);
  seq.fill(state.hist_token, 0xffffffffu);  // -1
  seq.fill(state.hist_parent, 0xffffffffu);
}

void BeamSearch::record_step(Sequence& seq, const State& state, std::size_t t, const Tensor& cand_values,
                             const Tensor& cand_ids, const Tensor& parents, const Tensor& next_tokens) const {
  if (t >= T_) {
    throw Error(ErrorCode::out_of_range, fmt::format("{}: step t = {} is outside [0, max_steps = {})", kOp, t, T_));
  }
  check_state(*this, state);
  const std::size_t R = rows();
  expect(kOp, "cand_values", cand_values, {R, kc_}, DType::f32);
  expect(kOp, "cand_ids", cand_ids, {R, kc_}, DType::i32);
  expect(kOp, "parents", parents, {R}, DType::i32);
  expect(kOp, "next_tokens", next_tokens, {R}, DType::i32);
  const K::Push push{static_cast<std::uint32_t>(B_), static_cast<std::uint32_t>(K_),
                     static_cast<std::uint32_t>(kc_), static_cast<std::uint32_t>(T_),
                     static_cast<std::uint32_t>(t), static_cast<std::uint32_t>(finished_capacity()),
                     eos_, pad_, static_cast<std::uint32_t>(S_)};
  const std::uint32_t wg = kernel_.spec().constants[0];
  // fin and the histories keep what earlier steps wrote: read_write (kernels::BeamSearch)
  // keeps them ordered after those writes. The next alive scores are read back on the last
  // step: read_write too.
  kernels::dispatch<K>(seq, kernel_,
                       {.values = cand_values, .ids = cand_ids, .score_in = state.alive_score[t % 2],
                        .score_out = state.alive_score[(t + 1) % 2], .alive_count = state.alive_count,
                        .done = state.done, .fin_count = state.fin_count, .fin = state.fin,
                        .hist_token = state.hist_token, .hist_parent = state.hist_parent,
                        .parents = parents, .next_tokens = next_tokens, .heads = state.heads},
                       push, ops::fold_groups(ops::ceil_div(B_, wg), ctx_->device(), kOp));
}

void BeamSearch::record_download(Sequence& seq, const State& state) const {
  check_state(*this, state);
  seq.download(state.fin_count).download(state.fin).download(state.hist_token).download(state.hist_parent);
}

std::vector<std::vector<BeamHypothesis>> BeamSearch::reconstruct(const Sequence& seq, const State& state) const {
  check_state(*this, state);
  const auto fin_count = seq.read<std::uint32_t>(state.fin_count);
  const auto fin = seq.read<std::uint32_t>(state.fin);
  const auto hist_token = seq.read<std::int32_t>(state.hist_token);
  const auto hist_parent = seq.read<std::int32_t>(state.hist_parent);
  return reconstruct(fin_count, fin, hist_token, hist_parent);
}

std::vector<std::vector<BeamHypothesis>> BeamSearch::reconstruct(std::span<const std::uint32_t> fin_count,
                                                                 std::span<const std::uint32_t> fin,
                                                                 std::span<const std::int32_t> hist_token,
                                                                 std::span<const std::int32_t> hist_parent) const {
  const std::size_t B = B_, K = K_, R = rows(), T = T_, F = finished_capacity();
  auto size_check = [&](const char* arg, std::size_t got, std::size_t want) {
    if (got != want) {
      throw Error(ErrorCode::invalid_argument,
                  fmt::format("{}::reconstruct: argument '{}': expected {} elements, got {}", kOp, arg, want, got));
    }
  };
  size_check("fin_count", fin_count.size(), B);
  size_check("fin", fin.size(), B * F * 4);
  size_check("hist_token", hist_token.size(), T * R);
  size_check("hist_parent", hist_parent.size(), T * R);
  auto bad = [&](std::size_t b, std::size_t i, const std::string& what) {
    return Error(ErrorCode::format, fmt::format("{}::reconstruct: source row {}, record {}: {}", kOp, b, i, what));
  };

  std::vector<std::vector<BeamHypothesis>> out(B);
  for (std::size_t b = 0; b < B; ++b) {
    if (fin_count[b] > F) throw bad(b, 0, fmt::format("fin_count {} exceeds the capacity {}", fin_count[b], F));
    for (std::size_t i = 0; i < fin_count[b]; ++i) {
      const std::uint32_t* rec = &fin[(b * F + i) * 4];
      const std::size_t t = rec[0], slot = rec[1];
      const bool finished = rec[3] != 0;
      if (t >= T || slot >= K || rec[3] > 1) {
        throw bad(b, i, fmt::format("step {} / slot {} / finished {} out of range (T {}, K {})", t, slot, rec[3], T, K));
      }
      BeamHypothesis hyp;
      hyp.score = std::bit_cast<float>(rec[2]);
      hyp.finished = finished;
      const std::size_t len = t + 1;
      hyp.tokens.resize(len);
      hyp.rows.resize(len);
      // EOS record: the token at step t is EOS from parent slot `slot`, the chain continues from
      // that slot at step t-1. Unfinished: the chain starts at slot `slot` of step t.
      std::size_t s = len, j = slot;
      if (finished) {
        if (t == 0 && slot != 0) throw bad(b, i, "an EOS record at step 0 from a slot other than 0");
        --s;
        hyp.tokens[s] = eos_;
        hyp.rows[s] = static_cast<std::uint32_t>(b * K + slot);
      }
      while (s > 0) {
        --s;
        const std::int32_t w = hist_token[s * R + b * K + j];
        const std::int32_t h = hist_parent[s * R + b * K + j];
        if (w < 0 || h < 0 || static_cast<std::size_t>(h) >= K || (s == 0 && h != 0)) {
          throw bad(b, i, fmt::format("no hypothesis at step {} slot {} (token {}, parent {})", s, j, w, h));
        }
        hyp.tokens[s] = w;
        hyp.rows[s] = static_cast<std::uint32_t>(b * K + static_cast<std::size_t>(h));
        j = static_cast<std::size_t>(h);
      }
      out[b].push_back(std::move(hyp));
    }
  }
  return out;
}

}  // namespace vkrnn
