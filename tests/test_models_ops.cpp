// The small ops the whole models need (Embedding, Argmax with the greedy step, Concat,
// Activation) against exact / double-precision CPU references over awkward shapes, both
// reduction paths, forced workgroup sizes, the staging path, and their errors.
#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "common/test_env.hpp"
#include "expect_error.hpp"
#include "vkrnn/activation.hpp"
#include "vkrnn/argmax.hpp"
#include "vkrnn/concat.hpp"
#include "vkrnn/embedding.hpp"
#include "vkrnn/half.hpp"
#include "vkrnn/linear.hpp"
#include "vkrnn/topk.hpp"

namespace vkrnn {
namespace {

using test::all_close;
using test::context;
using test::random_floats;

using test::expect_error;

// --- Embedding ---------------------------------------------------------------------------

void check_embedding(Context& ctx, std::size_t vocab, std::size_t dim, std::size_t n, const OpOptions& options,
                     std::uint32_t seed) {
  SCOPED_TRACE(fmt::format("vocab {} dim {} n {} wg {}", vocab, dim, n, options.workgroup_size));
  const auto table = random_floats(vocab * dim, seed);
  std::mt19937 rng(seed);
  std::vector<std::int32_t> ids(n);
  for (auto& id : ids) id = static_cast<std::int32_t>(rng() % vocab);
  // Into columns [2, 2 + dim) of a wider destination, from a table stored inside a bigger
  // tensor (offset 5, row stride dim + 3), and also packed.
  const std::size_t ld = dim + 3, out_ld = dim + 4;
  std::vector<float> big(5 + vocab * ld, -7.0f);
  for (std::size_t v = 0; v < vocab; ++v)
    std::copy_n(table.begin() + static_cast<std::ptrdiff_t>(v * dim), dim, big.begin() + static_cast<std::ptrdiff_t>(5 + v * ld));
  const Tensor t_table = ctx.tensor({vocab, dim}, table);
  const Tensor t_big = ctx.tensor({big.size()}, big);
  const Tensor t_ids = ctx.tensor({n}, DType::i32);
  ctx.write(t_ids, ids);
  const Tensor t_out = ctx.tensor({n, dim});
  const Tensor t_wide = ctx.tensor({n * out_ld + 1});
  ctx.write(t_wide, std::vector<float>(n * out_ld + 1, 9.0f));
  Embedding op(ctx, options);
  Sequence seq = ctx.sequence();
  op.record(seq, t_table, t_ids, t_out);
  op.record(seq, MatrixView{t_big, vocab, dim, 5, ld}, t_ids, MatrixView{t_wide, n, dim, 2, out_ld});
  seq.download(t_out).download(t_wide);
  seq.eval();
  const auto out = seq.read<float>(t_out), wide = seq.read<float>(t_wide);
  std::vector<float> want_wide(n * out_ld + 1, 9.0f);
  for (std::size_t r = 0; r < n; ++r) {
    for (std::size_t j = 0; j < dim; ++j) {
      const float want = table[static_cast<std::size_t>(ids[r]) * dim + j];
      ASSERT_EQ(out[r * dim + j], want) << "row " << r << " col " << j;
      want_wide[2 + r * out_ld + j] = want;
    }
  }
  EXPECT_EQ(wide, want_wide);
}

TEST(Embedding, MatchesGatherOverShapes) {
  std::uint32_t seed = 1;
  for (std::size_t vocab : {1, 7, 1000})
    for (std::size_t dim : {1, 3, 8, 13, 256})
      for (std::size_t n : {1, 5, 31, 257}) check_embedding(context(), vocab, dim, n, {}, seed++);
}

TEST(Embedding, WorkgroupSizesAndStaging) {
  for (std::uint32_t wg : {1u, 4u, 64u, 256u}) {
    OpOptions o;
    o.workgroup_size = wg;
    check_embedding(context(), 11, 37, 9, o, wg);
  }
  check_embedding(test::staging_context(), 13, 17, 19, {}, 3);
}

// Rows wider than one invocation may loop over at the default workgroup (lavapipe silently
// ends loops past 65535 iterations): the beam search gathers whole encoder outputs (S x M
// floats) this way. 600,000 floats per row.
TEST(Embedding, RowsPastTheLoopBudget) {
  check_embedding(context(), 3, 600000, 2, {}, 5);
}

TEST(Embedding, BadIdsOnTheGpuAreClampedAndFlagged) {
  Context& ctx = context();
  const std::size_t vocab = 5, dim = 3;
  const auto table = random_floats(vocab * dim, 11);
  const std::vector<std::int32_t> ids = {2, -1, 4, 5, 1 << 30, 0, std::numeric_limits<std::int32_t>::min()};
  const Tensor t_table = ctx.tensor({vocab, dim}, table);
  const Tensor t_ids = ctx.tensor({ids.size()}, DType::i32);
  ctx.write(t_ids, ids);
  const Tensor t_out = ctx.tensor({ids.size(), dim});
  const Tensor flag = ctx.tensor({2}, DType::u32);
  Embedding op(ctx);
  Sequence seq = ctx.sequence();
  seq.fill(flag, 0);
  op.record(seq, t_table, t_ids, t_out, flag);
  seq.download(t_out).download(flag);
  seq.eval();
  const auto out = seq.read<float>(t_out);
  for (std::size_t r = 0; r < ids.size(); ++r) {
    const std::int64_t clamped = std::clamp<std::int64_t>(ids[r], 0, vocab - 1);
    for (std::size_t j = 0; j < dim; ++j) EXPECT_EQ(out[r * dim + j], table[clamped * dim + j]) << r;
  }
  const auto bad = Embedding::BadIds::from(seq.read<std::uint32_t>(flag));
  EXPECT_EQ(bad.count, 4u);
  EXPECT_EQ(bad.first_row, 1u);

  // Good ids leave a zeroed flag at zero.
  Sequence seq2 = ctx.sequence();
  ctx.write(t_ids, std::vector<std::int32_t>{0, 1, 2, 3, 4, 4, 0});
  seq2.fill(flag, 0);
  op.record(seq2, t_table, t_ids, t_out, flag);
  seq2.download(flag);
  seq2.eval();
  EXPECT_EQ(Embedding::BadIds::from(seq2.read<std::uint32_t>(flag)).count, 0u);
}

TEST(Embedding, HostChecksAndErrors) {
  Context& ctx = context();
  const Tensor table = ctx.tensor({6, 4}, random_floats(24, 2));
  Embedding op(ctx);
  const auto got = op.lookup(table, std::vector<std::int32_t>{5, 0});
  EXPECT_EQ(got.size(), 8u);
  expect_error([&] { op.lookup(table, std::vector<std::int32_t>{1, 6}); }, ErrorCode::invalid_argument,
               {"token id 6", "position 1", "[0, 6)"});
  expect_error([&] { op.lookup(table, std::vector<std::int32_t>{-3}); }, ErrorCode::invalid_argument,
               {"token id -3", "position 0"});
  expect_error([&] { op.lookup(table, std::vector<std::int32_t>{}); }, ErrorCode::invalid_argument, {"no ids"});
  Sequence seq = ctx.sequence();
  const Tensor ids = ctx.tensor({3}, DType::i32);
  expect_error([&] { op.record(seq, table, ids, ctx.tensor({3, 5})); }, ErrorCode::invalid_argument,
               {"argument 'out'", "[..., 4]"});
  expect_error([&] { op.record(seq, table, ctx.tensor({3}), ctx.tensor({3, 4})); }, ErrorCode::invalid_argument,
               {"argument 'ids'", "i32"});
  expect_error([&] { op.record(seq, MatrixView{table, 6, 4, 4, 4}, ids, MatrixView::of(ctx.tensor({3, 4}))); },
               ErrorCode::invalid_argument, {"argument 'table'", "does not fit"});
  expect_error([&] { op.record(seq, table, ids, ctx.tensor({3, 4}), ctx.tensor({3}, DType::u32)); },
               ErrorCode::invalid_argument, {"bad_ids", "u32 [2]"});
  expect_error([&] { op.record(seq, MatrixView::of(table), ids, MatrixView{table, 3, 4, 0, 4}); },
               ErrorCode::invalid_argument, {"share memory"});
}

// --- Argmax --------------------------------------------------------------------------------

struct ArgRef {
  std::int32_t index;
  double max, log_prob;
};

ArgRef argmax_ref(const float* row, std::size_t V) {
  std::size_t best = 0;
  for (std::size_t v = 1; v < V; ++v)
    if (row[v] > row[best]) best = v;
  const double m = row[best];
  double s = 0.0;
  for (std::size_t v = 0; v < V; ++v) s += std::exp(double(row[v]) - m);
  return {static_cast<std::int32_t>(best), m, -std::log(s)};
}

void check_argmax(Context& ctx, std::size_t B, std::size_t V, const OpOptions& options, std::uint32_t seed,
                  bool ties = false) {
  SCOPED_TRACE(fmt::format("B {} V {} wg {} shared {} ties {}", B, V, options.workgroup_size,
                           options.force_shared_memory_reduction, ties));
  auto logits = random_floats(B * V, seed, -4.0f, 4.0f);
  if (ties) {  // coarse values: many equal maxima per row
    for (auto& x : logits) x = std::round(x);
  }
  const Tensor t_logits = ctx.tensor({B, V}, logits);
  const Tensor idx = ctx.tensor({B}, DType::i32), mx = ctx.tensor({B}), lp = ctx.tensor({B}), idx2 = ctx.tensor({B}, DType::i32);
  Argmax op(ctx, options);
  Sequence seq = ctx.sequence();
  op.record(seq, t_logits, idx, mx, lp);
  op.record(seq, t_logits, idx2);
  seq.download(idx).download(mx).download(lp).download(idx2);
  seq.eval();
  const auto gi = seq.read<std::int32_t>(idx), gi2 = seq.read<std::int32_t>(idx2);
  const auto gm = seq.read<float>(mx), gl = seq.read<float>(lp);
  std::vector<double> want_lp(B);
  for (std::size_t b = 0; b < B; ++b) {
    const ArgRef r = argmax_ref(&logits[b * V], V);
    EXPECT_EQ(gi[b], r.index) << "row " << b;
    EXPECT_EQ(gi2[b], r.index) << "row " << b;
    EXPECT_EQ(gm[b], static_cast<float>(r.max)) << "row " << b;
    want_lp[b] = r.log_prob;
  }
  EXPECT_TRUE(all_close(gl, want_lp, 1e-5, 2e-6));
}

TEST(Argmax, MatchesReferenceOverShapesAndPaths) {
  std::uint32_t seed = 100;
  for (bool shared : {false, true}) {
    OpOptions o;
    o.force_shared_memory_reduction = shared;
    for (std::size_t B : {1, 3, 17})
      for (std::size_t V : {1, 2, 7, 8, 9, 100, 8000}) check_argmax(context(), B, V, o, seed++);
    check_argmax(context(), 2, 33333, o, seed++);
    check_argmax(context(), 5, 1000, o, seed++, true);
  }
}

TEST(Argmax, WorkgroupSizes) {
  std::uint32_t seed = 200;
  for (bool shared : {false, true}) {
    for (std::uint32_t wg : {1u, 2u, 8u, 32u, 64u, 256u}) {
      OpOptions o;
      o.workgroup_size = wg;
      o.force_shared_memory_reduction = shared;
      check_argmax(context(), 4, 777, o, seed++);
      check_argmax(context(), 3, 5, o, seed++, true);
    }
  }
  check_argmax(test::staging_context(), 3, 1001, {}, 7);
}

TEST(Argmax, TiesAndInfinities) {
  Context& ctx = context();
  const float inf = std::numeric_limits<float>::infinity();
  // Rows: all equal; max repeated late; all -inf; +inf present; max at the last position.
  const std::size_t V = 19;
  std::vector<float> logits(5 * V, 0.5f);
  for (std::size_t v = 0; v < V; ++v) logits[V + v] = v % 2 ? 3.0f : -1.0f;
  std::fill(logits.begin() + 2 * V, logits.begin() + 3 * V, -inf);
  logits[3 * V + 11] = inf;
  logits[3 * V + 4] = inf;
  logits[4 * V + V - 1] = 9.0f;
  for (bool shared : {false, true}) {
    OpOptions o;
    o.force_shared_memory_reduction = shared;
    Argmax op(ctx, o);
    const Tensor t = ctx.tensor({5, V}, logits), idx = ctx.tensor({5}, DType::i32);
    Sequence seq = ctx.sequence();
    op.record(seq, t, idx);
    seq.download(idx);
    seq.eval();
    EXPECT_EQ(seq.read<std::int32_t>(idx), (std::vector<std::int32_t>{0, 1, 0, 4, static_cast<std::int32_t>(V - 1)}));
  }
}

// Several greedy steps against a CPU simulation of docs/model-format.md's greedy rules.
void check_greedy(bool stop_at_eos, bool shared) {
  SCOPED_TRACE(fmt::format("stop_at_eos {} shared {}", stop_at_eos, shared));
  Context& ctx = context();
  const std::size_t B = 5, V = 13, S = 7, steps = 6, cap = 8;
  const std::int32_t eos = 2, pad = 0;
  OpOptions o;
  o.force_shared_memory_reduction = shared;
  Argmax op(ctx, o);
  const Tensor next = ctx.tensor({B}, DType::i32), finished = ctx.tensor({B}, DType::u32);
  const Tensor tokens = ctx.tensor({B, cap}, DType::i32), scores = ctx.tensor({B, cap});
  const Tensor lh = ctx.tensor({B, cap, V}), ah = ctx.tensor({B, cap, S});
  std::vector<Tensor> logit_t, weight_t;
  std::vector<std::vector<float>> logits(steps), weights(steps);
  for (std::size_t t = 0; t < steps; ++t) {
    logits[t] = random_floats(B * V, 300 + t, -2.0f, 2.0f);
    // Row b emits EOS at step b (row 4 never within the steps).
    for (std::size_t b = 0; b < B; ++b)
      if (b == t) logits[t][b * V + eos] = 5.0f;
    weights[t] = random_floats(B * S, 400 + t, 0.0f, 1.0f);
    logit_t.push_back(ctx.tensor({B, V}, logits[t]));
    weight_t.push_back(ctx.tensor({B, S}, weights[t]));
  }
  // The chosen token's embedding goes to columns [1, 1 + dim) of a wider next-input buffer,
  // from a table stored at offset 2 with row stride dim + 1.
  const std::size_t dim = 5, in_ld = dim + 3;
  const auto table = random_floats(2 + V * (dim + 1), 77);
  const Tensor t_table = ctx.tensor({table.size()}, table);
  const Tensor next_in = ctx.tensor({B * in_ld});
  Sequence seq = ctx.sequence();
  seq.fill(finished, 0).fill(tokens, 0x7fffffff).fill(scores, 0).fill(lh, 0).fill(ah, 0).fill(next_in, 0);
  for (std::size_t t = 0; t < steps; ++t) {
    GreedyStep g;
    g.next_tokens = next;
    if (stop_at_eos) g.finished = finished;
    g.eos = eos;
    g.pad = pad;
    g.step = t;
    g.tokens = tokens;
    g.scores = scores;
    g.logits = lh;
    g.weights = weight_t[t];
    g.attention = ah;
    g.embedding = MatrixView{t_table, V, dim, 2, dim + 1};
    g.embedding_out = MatrixView{next_in, B, dim, 1, in_ld};
    op.record(seq, logit_t[t], g);
  }
  seq.download(next).download(finished).download(tokens).download(scores).download(lh).download(ah).download(next_in);
  seq.eval();
  std::vector<std::int32_t> want_tokens(B * cap, 0x7fffffff), want_next(B);
  std::vector<double> want_scores(B * cap, 0.0), want_lh(B * cap * V, 0.0), want_ah(B * cap * S, 0.0);
  std::vector<std::uint32_t> want_finished(B, 0);
  for (std::size_t t = 0; t < steps; ++t) {
    for (std::size_t b = 0; b < B; ++b) {
      const bool done = stop_at_eos && want_finished[b];
      const ArgRef r = argmax_ref(&logits[t][b * V], V);
      const std::int32_t tok = done ? pad : r.index;
      want_tokens[b * cap + t] = tok;
      want_next[b] = tok;
      want_scores[b * cap + t] = done ? 0.0 : r.log_prob;
      for (std::size_t v = 0; v < V; ++v) want_lh[(b * cap + t) * V + v] = done ? 0.0 : logits[t][b * V + v];
      for (std::size_t s = 0; s < S; ++s) want_ah[(b * cap + t) * S + s] = done ? 0.0 : weights[t][b * S + s];
      if (stop_at_eos && !done && tok == eos) want_finished[b] = 1;
    }
  }
  EXPECT_EQ(seq.read<std::int32_t>(tokens), want_tokens);
  EXPECT_EQ(seq.read<std::int32_t>(next), want_next);
  EXPECT_EQ(seq.read<std::uint32_t>(finished), stop_at_eos ? want_finished : std::vector<std::uint32_t>(B, 0));
  EXPECT_TRUE(all_close(seq.read<float>(scores), want_scores, 1e-5, 2e-6));
  EXPECT_TRUE(all_close(seq.read<float>(lh), want_lh, 0, 0));
  EXPECT_TRUE(all_close(seq.read<float>(ah), want_ah, 0, 0));
  std::vector<double> want_in(B * in_ld, 0.0);
  for (std::size_t b = 0; b < B; ++b)
    for (std::size_t j = 0; j < dim; ++j) want_in[1 + b * in_ld + j] = table[2 + static_cast<std::size_t>(want_next[b]) * (dim + 1) + j];
  EXPECT_TRUE(all_close(seq.read<float>(next_in), want_in, 0, 0));
}

TEST(Argmax, GreedyStepsWithAndWithoutEos) {
  for (bool stop : {true, false})
    for (bool shared : {false, true}) check_greedy(stop, shared);
}

// The output projection and the greedy step in one dispatch (gemv_argmax.comp) where the
// device allows it, against the CPU: logits from the stored weights in double, and every step's
// bookkeeping (tokens, scores, EOS, the non-finite flag, histories, the next embedding) from
// the logits the GPU wrote, as check_greedy; and against the same steps in two dispatches.
void check_fused_greedy(Context& ctx, std::size_t B, std::size_t V, std::size_t K, WeightStorage storage,
                        Gemm::Path path, std::uint32_t seed) {
  SCOPED_TRACE(fmt::format("B {} V {} K {} {} path {}", B, V, K, to_string(storage), int(path)));
  const std::size_t steps = 3, cap = 4, S = 3, dim = 5;
  const std::int32_t eos = V > 1 ? 1 : 0, pad = 0;
  OpOptions o;
  o.weight_storage = storage;
  // Packed weights (CPU drivers) serve the per-invocation GEMV only.
  o.pack_weights = path == Gemm::Path::gemv_invocation || path == Gemm::Path::automatic;
  Linear proj(ctx, K, V, true, o);
  const auto w = random_floats(V * K, seed, -1.0f, 1.0f), bias = random_floats(V, seed + 1, -1.0f, 1.0f);
  proj.load(w, {V, K}, bias);
  proj.gemm().set_path(path);
  // The weights as stored.
  std::vector<double> ws(w.begin(), w.end());
  if (storage == WeightStorage::f16) {
    for (std::size_t i = 0; i < ws.size(); ++i) ws[i] = half_to_float(float_to_half(w[i]));
  } else if (storage == WeightStorage::i8) {
    const QuantizedRows q = quantize_rows(w, V, K);
    const auto d = dequantize_rows(q.q, q.scales, K);
    ws.assign(d.begin(), d.end());
  }
  Argmax op(ctx);
  const std::size_t words = op.fused_scratch_words(proj, B);
  const Tensor scratch = ctx.tensor({std::max<std::size_t>(words, 1)}, DType::u32);
  const auto table = random_floats(V * dim, seed + 2);
  const Tensor t_table = ctx.tensor({V, dim}, table);
  std::vector<std::vector<float>> xs(steps), attn(steps);
  std::vector<Tensor> xt, at;
  for (std::size_t t = 0; t < steps; ++t) {
    xs[t] = random_floats(B * K, seed + 10 + std::uint32_t(t), -1.0f, 1.0f);
    if (t == 1) xs[t][(B - 1) * K] = std::numeric_limits<float>::quiet_NaN();  // the last row's logits: NaN
    attn[t] = random_floats(B * S, seed + 20 + std::uint32_t(t), 0.0f, 1.0f);
    xt.push_back(ctx.tensor({B, K}, xs[t]));
    at.push_back(ctx.tensor({B, S}, attn[t]));
  }
  struct Run {
    Tensor next, finished, tokens, scores, ah, flags, next_in;
    std::vector<Tensor> logits;
  };
  auto make_run = [&] {
    Run r{ctx.tensor({B}, DType::i32), ctx.tensor({B}, DType::u32), ctx.tensor({B, cap}, DType::i32), ctx.tensor({B, cap}),
          ctx.tensor({B, cap, S}), ctx.tensor({B}, DType::u32), ctx.tensor({B, dim}), {}};
    for (std::size_t t = 0; t < steps; ++t) r.logits.push_back(ctx.tensor({B, V}));
    return r;
  };
  Run fused = make_run(), twice = make_run();
  Sequence seq = ctx.sequence();
  seq.fill(scratch, 0);
  for (Run* r : {&fused, &twice}) seq.fill(r->finished, 0).fill(r->tokens, 0x7fffffff).fill(r->scores, 0).fill(r->ah, 0).fill(r->flags, 0);
  for (std::size_t t = 0; t < steps; ++t) {
    for (Run* r : {&fused, &twice}) {
      GreedyStep g;
      g.next_tokens = r->next;
      g.finished = r->finished;
      g.eos = eos;
      g.pad = pad;
      g.step = t;
      g.tokens = r->tokens;
      g.scores = r->scores;
      g.nonfinite = r->flags;
      g.weights = at[t];
      g.attention = r->ah;
      g.embedding = MatrixView::of(t_table);
      g.embedding_out = MatrixView::of(r->next_in);
      const bool one = op.record(seq, proj, MatrixView::of(xt[t]), r->logits[t], g, r == &fused ? scratch : Tensor{});
      // Every device here binds 16 or more storage buffers per stage: every projection on a GEMV
      // fuses, whatever its block of rows (lavapipe's 8- and 16-row blocks too); GPUs take many
      // rows on the tiled GEMM, which does not.
      EXPECT_EQ(one, r == &fused && words > 0);
      if (r == &fused) {
        EXPECT_EQ(words > 0, proj.gemm().path_for(B) != Gemm::Path::tiled);
      }
    }
  }
  for (Run* r : {&fused, &twice}) {
    seq.download(r->next).download(r->finished).download(r->tokens).download(r->scores).download(r->ah).download(r->flags).download(r->next_in);
    for (const Tensor& l : r->logits) seq.download(l);
  }
  seq.download(scratch);
  seq.eval();
  for (Run* r : {&fused, &twice}) {
    SCOPED_TRACE(r == &fused ? "fused" : "two dispatches");
    std::vector<std::int32_t> want_tokens(B * cap, 0x7fffffff), want_next(B);
    std::vector<double> want_scores(B * cap, 0.0), want_ah(B * cap * S, 0.0);
    std::vector<std::uint32_t> want_finished(B, 0), want_flags(B, 0);
    for (std::size_t t = 0; t < steps; ++t) {
      const auto logits = seq.read<float>(r->logits[t]);
      std::vector<double> want_logits(B * V);
      for (std::size_t b = 0; b < B; ++b) {
        for (std::size_t n = 0; n < V; ++n) {
          double y = bias[n];
          for (std::size_t k = 0; k < K; ++k) y += double(xs[t][b * K + k]) * ws[n * K + k];
          want_logits[b * V + n] = y;
        }
      }
      for (std::size_t i = 0; i < logits.size(); ++i) {
        if (std::isnan(want_logits[i])) EXPECT_TRUE(std::isnan(logits[i])) << "step " << t << " logit " << i;
        else EXPECT_NEAR(logits[i], want_logits[i], 1e-4 + 1e-5 * std::fabs(want_logits[i])) << "step " << t << " logit " << i;
      }
      for (std::size_t b = 0; b < B; ++b) {
        const bool done = want_finished[b] != 0;
        const float* row = &logits[b * V];
        const bool nan = std::any_of(row, row + V, [](float v) { return std::isnan(v); });
        const ArgRef a = nan ? ArgRef{static_cast<std::int32_t>(std::find_if(row, row + V, [](float v) { return std::isnan(v); }) - row), 0.0, 0.0}
                             : argmax_ref(row, V);
        const std::int32_t tok = done ? pad : a.index;
        want_tokens[b * cap + t] = tok;
        want_next[b] = tok;
        want_scores[b * cap + t] = done ? 0.0 : nan ? std::numeric_limits<double>::quiet_NaN() : a.log_prob;
        for (std::size_t s = 0; s < S; ++s) want_ah[(b * cap + t) * S + s] = done ? 0.0 : attn[t][b * S + s];
        if (!done && nan && want_flags[b] == 0) want_flags[b] = static_cast<std::uint32_t>(t + 1);
        if (!done && tok == eos) want_finished[b] = 1;
      }
    }
    EXPECT_EQ(seq.read<std::int32_t>(r->tokens), want_tokens);
    EXPECT_EQ(seq.read<std::int32_t>(r->next), want_next);
    EXPECT_EQ(seq.read<std::uint32_t>(r->finished), want_finished);
    EXPECT_EQ(seq.read<std::uint32_t>(r->flags), want_flags);
    const auto scores = seq.read<float>(r->scores);
    for (std::size_t i = 0; i < scores.size(); ++i) {
      if (std::isnan(want_scores[i])) EXPECT_TRUE(std::isnan(scores[i])) << "score " << i << ": " << scores[i];
      else EXPECT_NEAR(scores[i], want_scores[i], 1e-5 + 2e-6 * std::fabs(want_scores[i])) << "score " << i;
    }
    EXPECT_TRUE(all_close(seq.read<float>(r->ah), want_ah, 0, 0));
    const auto next_in = seq.read<float>(r->next_in);
    for (std::size_t b = 0; b < B; ++b)
      for (std::size_t j = 0; j < dim; ++j) EXPECT_EQ(next_in[b * dim + j], table[std::size_t(want_next[b]) * dim + j]);
  }
  EXPECT_EQ(seq.read<std::uint32_t>(scratch)[0], 0u);  // the ticket counter, back at 0
}

TEST(Argmax, FusedWithItsProjection) {
  std::uint32_t seed = 2000;
  const std::vector<std::array<std::size_t, 3>> shapes = {{1, 1, 1},   {1, 7, 5},     {3, 65, 37},      {2, 1000, 64},
                                                          {4, 300, 128}, {7, 500, 40},  {16, 200, 12}, {1, 8000, 1024}};
  for (WeightStorage storage : {WeightStorage::f32, WeightStorage::f16, WeightStorage::i8})
    for (Gemm::Path path : {Gemm::Path::automatic, Gemm::Path::gemv, Gemm::Path::gemv_invocation})
      for (const auto& [B, V, K] : shapes) check_fused_greedy(context(), B, V, K, storage, path, seed += 100);
  // The kernels GPUs get (64-invocation workgroups, subgroup coops) and those of devices without
  // subgroup arithmetic (shared-memory reductions).
  for (test::Limits limits : {test::Limits::gpu, test::Limits::mobile}) {
    SCOPED_TRACE(test::to_string(limits));
    for (const auto& [B, V, K] : {std::array<std::size_t, 3>{1, 300, 64}, {3, 65, 37}, {16, 1000, 20}})
      check_fused_greedy(test::limited_context(limits), B, V, K, WeightStorage::f32, Gemm::Path::automatic, seed += 100);
  }
}

// Where the two cannot share a dispatch, the call records both (and says so): no scratch, a
// logits history, a projection with an activation.
TEST(Argmax, FusedFallsBackToTwoDispatches) {
  Context& ctx = context();
  const std::size_t B = 2, V = 9, K = 4;
  Linear proj(ctx, K, V);
  proj.load(random_floats(V * K, 1), {V, K}, random_floats(V, 2));
  Argmax op(ctx);
  const Tensor x = ctx.tensor({B, K}, random_floats(B * K, 3)), logits = ctx.tensor({B, V});
  const Tensor next = ctx.tensor({B}, DType::i32), lh = ctx.tensor({B, 1, V});
  const Tensor scratch = ctx.tensor({op.fused_scratch_words(proj, B)}, DType::u32);
  GreedyStep g;
  g.next_tokens = next;
  Sequence seq = ctx.sequence();
  seq.fill(scratch, 0);
  EXPECT_TRUE(op.record(seq, proj, MatrixView::of(x), logits, g, scratch));
  EXPECT_FALSE(op.record(seq, proj, MatrixView::of(x), logits, g));
  GreedyStep with_logits = g;
  with_logits.logits = lh;
  EXPECT_FALSE(op.record(seq, proj, MatrixView::of(x), logits, with_logits, scratch));
  proj.set_activation(ActivationFn::tanh);
  EXPECT_FALSE(op.record(seq, proj, MatrixView::of(x), logits, g, scratch));
  seq.download(next).download(lh).download(logits);
  seq.eval();
  const auto l = seq.read<float>(logits), h = seq.read<float>(lh);
  // The last call's logits went through the activation; the history holds the step before.
  for (std::size_t i = 0; i < l.size(); ++i) EXPECT_NEAR(l[i], std::tanh(h[i]), 1e-6) << i;
  expect_error([&] { op.record(seq, proj, MatrixView::of(x), ctx.tensor({B, V + 1}), g, scratch); },
               ErrorCode::invalid_argument, {"Argmax", "out_features"});
}

// GreedyStep::close_gate: the fused step does close_gate_when_all(finished)'s check in its own
// dispatch. Inside a gate of 5 steps, each after a gated copy that marks the step as run:
// rows that all emit EOS at step 0 close the gate (later steps run empty, no check found it
// open), rows that never do leave it open (4 checks counted); both exactly as the check apart.
TEST(Argmax, FusedStepClosesTheGate) {
  Context& ctx = context();
  const std::size_t B = 3, V = 9, K = 6, T = 5;
  const std::int32_t eos = 1;
  Argmax op(ctx);
  Concat concat(ctx);
  const Tensor x = ctx.tensor({B, K}, random_floats(B * K, 7, -1.0f, 1.0f));
  std::vector<float> ids(T);
  std::iota(ids.begin(), ids.end(), 1.0f);
  const Tensor step_ids = ctx.tensor({T}, ids);
  for (float eos_bias : {100.0f, -100.0f}) {
    Linear proj(ctx, K, V);
    auto bias = random_floats(V, 8);
    bias[eos] = eos_bias;
    proj.load(random_floats(V * K, 9), {V, K}, bias);
    std::vector<std::vector<float>> ran;
    std::vector<std::uint32_t> open;
    for (bool in_step : {true, false}) {
      SCOPED_TRACE(fmt::format("EOS bias {}, check {}", eos_bias, in_step ? "in the step" : "apart"));
      const Tensor logits = ctx.tensor({B, V}), next = ctx.tensor({B}, DType::i32), finished = ctx.tensor({B}, DType::u32);
      const Tensor scratch = ctx.tensor({op.fused_scratch_words(proj, B)}, DType::u32), marks = ctx.tensor({T});
      Sequence seq = ctx.sequence();
      seq.fill(scratch, 0).fill(finished, 0).fill(marks, 0);
      seq.begin_gate();
      for (std::size_t t = 0; t < T; ++t) {
        concat.record(seq, {MatrixView{step_ids, 1, 1, t, 1}}, MatrixView{marks, 1, 1, t, 1});
        GreedyStep g;
        g.next_tokens = next;
        g.finished = finished;
        g.eos = eos;
        g.step = t;
        g.close_gate = in_step && t + 1 < T;
        EXPECT_TRUE(op.record(seq, proj, MatrixView::of(x), logits, g, scratch));
        if (!in_step && t + 1 < T) seq.close_gate_when_all(finished);
      }
      seq.end_gate();
      const SequenceStats stats = seq.stats();
      seq.download(marks);
      seq.eval();
      ran.push_back(seq.read<float>(marks));
      open.push_back(seq.open_gate_checks());
      // The fused steps take the check in: T - 1 dispatches fewer.
      if (!in_step) EXPECT_EQ(stats.dispatches, 2 * T + T - 1);
      else EXPECT_EQ(stats.dispatches, 2 * T);
    }
    EXPECT_EQ(ran[0], ran[1]);
    EXPECT_EQ(open[0], open[1]);
    if (eos_bias > 0) {
      EXPECT_EQ(ran[0], (std::vector<float>{1, 0, 0, 0, 0}));
      EXPECT_EQ(open[0], 0u);
    } else {
      EXPECT_EQ(ran[0], ids);
      EXPECT_EQ(open[0], T - 1);
    }
  }
  // Misuse: no finished flags; outside a gate.
  Linear proj(ctx, K, V);
  proj.load(random_floats(V * K, 9), {V, K}, random_floats(V, 8));
  const Tensor logits = ctx.tensor({B, V}), scratch = ctx.tensor({op.fused_scratch_words(proj, B)}, DType::u32);
  GreedyStep g;
  g.next_tokens = ctx.tensor({B}, DType::i32);
  g.eos = eos;
  g.close_gate = true;
  Sequence seq = ctx.sequence();
  seq.begin_gate();
  expect_error([&] { op.record(seq, proj, MatrixView::of(x), logits, g, scratch); }, ErrorCode::invalid_argument,
               {"Argmax", "close_gate", "finished"});
  seq.end_gate();
  g.finished = ctx.tensor({B}, DType::u32);
  expect_error([&] { op.record(seq, proj, MatrixView::of(x), logits, g, scratch); }, ErrorCode::state, {"gate table"});
}

TEST(Argmax, Errors) {
  Context& ctx = context();
  Argmax op(ctx);
  Sequence seq = ctx.sequence();
  const Tensor logits = ctx.tensor({3, 10});
  const Tensor idx = ctx.tensor({3}, DType::i32);
  expect_error([&] { op.record(seq, ctx.tensor({30}), idx); }, ErrorCode::invalid_argument, {"'logits'", "[B, V]"});
  expect_error([&] { op.record(seq, logits, ctx.tensor({4}, DType::i32)); }, ErrorCode::invalid_argument,
               {"'indices'", "[3]"});
  expect_error([&] { op.record(seq, logits, ctx.tensor({3})); }, ErrorCode::invalid_argument, {"'indices'", "i32"});
  GreedyStep g;
  g.next_tokens = idx;
  g.finished = ctx.tensor({3}, DType::u32);
  g.eos = 10;
  expect_error([&] { op.record(seq, logits, g); }, ErrorCode::invalid_argument, {"eos = 10", "[0, 10)"});
  g.eos = 2;
  g.tokens = ctx.tensor({3, 4}, DType::i32);
  g.step = 4;
  expect_error([&] { op.record(seq, logits, g); }, ErrorCode::out_of_range, {"step 4", "4 columns"});
  g.step = 0;
  g.scores = ctx.tensor({3, 5});
  expect_error([&] { op.record(seq, logits, g); }, ErrorCode::invalid_argument, {"'scores'", "[3, 4]"});
  g.scores = {};
  g.weights = ctx.tensor({3, 6});
  expect_error([&] { op.record(seq, logits, g); }, ErrorCode::invalid_argument, {"attention history"});
  g.weights = {};
  g.embedding = MatrixView::of(ctx.tensor({10, 4}));
  expect_error([&] { op.record(seq, logits, g); }, ErrorCode::invalid_argument, {"go together"});
  g.embedding_out = MatrixView::of(ctx.tensor({2, 4}));
  expect_error([&] { op.record(seq, logits, g); }, ErrorCode::invalid_argument, {"'embedding_out'", "3 rows"});
  g.embedding = MatrixView::of(ctx.tensor({9, 4}));
  g.embedding_out = MatrixView::of(ctx.tensor({3, 4}));
  expect_error([&] { op.record(seq, logits, g); }, ErrorCode::invalid_argument, {"V = 10 rows"});
}

// --- TopK ----------------------------------------------------------------------------------

void check_topk(Context& ctx, std::size_t B, std::size_t N, std::size_t k, const OpOptions& options, std::uint32_t seed,
                bool ties) {
  SCOPED_TRACE(fmt::format("B {} N {} k {} wg {} shared {} ties {}", B, N, k, options.workgroup_size,
                           options.force_shared_memory_reduction, ties));
  auto x = random_floats(B * N, seed, -5.0f, 5.0f);
  if (ties) {
    for (auto& v : x) v = std::round(v);
  }
  const Tensor tx = ctx.tensor({B, N}, x);
  const Tensor v1 = ctx.tensor({B, k}), i1 = ctx.tensor({B, k}, DType::i32);
  const Tensor v2 = ctx.tensor({B, k}), i2 = ctx.tensor({B, k}, DType::i32);
  TopK op(ctx, k, options);
  Sequence seq = ctx.sequence();
  op.record(seq, tx, v1, i1);
  op.record(seq, tx, v2, i2, true);
  seq.download(v1).download(i1).download(v2).download(i2);
  seq.eval();
  const auto gv1 = seq.read<float>(v1), gv2 = seq.read<float>(v2);
  const auto gi1 = seq.read<std::int32_t>(i1), gi2 = seq.read<std::int32_t>(i2);
  std::vector<std::int32_t> want_i;
  std::vector<double> want_v1, want_v2;
  for (std::size_t b = 0; b < B; ++b) {
    const float* row = &x[b * N];
    std::vector<std::size_t> order(N);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t c) { return row[a] > row[c]; });
    double m = row[order[0]], sum = 0.0;
    for (std::size_t j = 0; j < N; ++j) sum += std::exp(double(row[j]) - m);
    for (std::size_t j = 0; j < k; ++j) {
      if (j < N) {
        want_i.push_back(static_cast<std::int32_t>(order[j]));
        want_v1.push_back(row[order[j]]);
        want_v2.push_back(double(row[order[j]]) - m - std::log(sum));
      } else {
        want_i.push_back(-1);
        want_v1.push_back(-std::numeric_limits<double>::infinity());
        want_v2.push_back(-std::numeric_limits<double>::infinity());
      }
    }
  }
  EXPECT_EQ(gi1, want_i);
  EXPECT_EQ(gi2, want_i);
  for (std::size_t j = 0; j < gv1.size(); ++j) {
    if (std::isinf(want_v1[j])) {
      EXPECT_TRUE(std::isinf(gv1[j]) && gv1[j] < 0) << j;
      EXPECT_TRUE(std::isinf(gv2[j]) && gv2[j] < 0) << j;
      want_v1[j] = want_v2[j] = 0.0;
    }
  }
  std::vector<float> fv1 = gv1, fv2 = gv2;
  for (std::size_t j = 0; j < fv1.size(); ++j) {
    if (std::isinf(fv1[j])) fv1[j] = 0.0f;
    if (std::isinf(fv2[j])) fv2[j] = 0.0f;
  }
  EXPECT_TRUE(all_close(fv1, want_v1, 0, 0));
  EXPECT_TRUE(all_close(fv2, want_v2, 1e-5, 2e-6));
}

TEST(TopK, MatchesStableSortOverShapesAndPaths) {
  std::uint32_t seed = 600;
  for (bool shared : {false, true}) {
    OpOptions o;
    o.force_shared_memory_reduction = shared;
    for (std::size_t N : {1, 2, 5, 8, 9, 100, 8000})
      for (std::size_t k : {1, 2, 3, 4, 7, 16}) check_topk(context(), 3, N, k, o, seed++, false);
    check_topk(context(), 1, 33333, 64, o, seed++, false);
    check_topk(context(), 17, 300, 5, o, seed++, true);
    check_topk(context(), 2, 40, 33, o, seed++, true);
  }
}

TEST(TopK, WorkgroupSizesAndErrors) {
  std::uint32_t seed = 700;
  for (bool shared : {false, true}) {
    for (std::uint32_t wg : {1u, 2u, 8u, 64u, 256u}) {
      OpOptions o;
      o.workgroup_size = wg;
      o.force_shared_memory_reduction = shared;
      check_topk(context(), 4, 513, 6, o, seed++, false);
      check_topk(context(), 2, 20, 4, o, seed++, true);
    }
  }
  check_topk(test::staging_context(), 3, 77, 4, {}, 9, false);
  expect_error([&] { TopK(context(), 0); }, ErrorCode::invalid_argument, {"k = 0"});
  expect_error([&] { TopK(context(), 65); }, ErrorCode::invalid_argument, {"k = 65"});
  TopK op(context(), 3);
  Sequence seq = context().sequence();
  expect_error([&] { op.record(seq, context().tensor({2, 5}), context().tensor({2, 4}), context().tensor({2, 3}, DType::i32)); },
               ErrorCode::invalid_argument, {"'values'", "[2, 3]"});
  expect_error([&] { op.record(seq, context().tensor({10}), context().tensor({2, 3}), context().tensor({2, 3}, DType::i32)); },
               ErrorCode::invalid_argument, {"'x'", "[B, N]"});
}

// --- Non-finite rows: torch's NaN rule, in-range ids, the GPU flag -----------------------------

// torch's order for max / argmax / topk: NaN above +inf (every NaN equal), -0 == +0.
bool torch_greater(float a, float b) {
  if (std::isnan(a)) return !std::isnan(b);
  if (std::isnan(b)) return false;
  return a > b;
}

// The first index of the row's maximum in torch's order, and whether that max is non-finite.
std::pair<std::int32_t, bool> torch_argmax(const float* row, std::size_t V) {
  std::size_t best = 0;
  for (std::size_t v = 1; v < V; ++v)
    if (torch_greater(row[v], row[best])) best = v;
  return {static_cast<std::int32_t>(best), !std::isfinite(row[best])};
}

// Rows of V values holding NaN / +inf / -inf at the first, last and several positions, all of
// them, or next to finite values; signed zeros.
std::vector<std::pair<std::string, std::vector<float>>> nonfinite_rows(std::size_t V, std::uint32_t seed) {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  const auto base = random_floats(V, seed, -3.0f, 3.0f);
  std::vector<std::pair<std::string, std::vector<float>>> rows;
  auto add = [&](const std::string& name, auto&& edit) {
    std::vector<float> r = base;
    edit(r);
    rows.emplace_back(name, std::move(r));
  };
  add("finite", [](auto&) {});
  add("NaN first", [&](auto& r) { r[0] = nan; });
  add("NaN last", [&](auto& r) { r[V - 1] = nan; });
  add("NaN at several", [&](auto& r) { r[V / 3] = nan, r[V / 2] = -nan, r[V - 1] = nan; });
  add("all NaN", [&](auto& r) { std::fill(r.begin(), r.end(), nan); });
  add("+inf twice", [&](auto& r) { r[V / 2] = inf, r[V - 1] = inf; });
  add("+inf then NaN", [&](auto& r) { r[0] = inf, r[V - 1] = nan; });
  add("all -inf", [&](auto& r) { std::fill(r.begin(), r.end(), -inf); });
  add("-inf but one", [&](auto& r) { std::fill(r.begin(), r.end(), -inf), r[V / 2] = -7.0f; });
  add("-inf at half", [&](auto& r) { for (std::size_t v = 0; v < V; v += 2) r[v] = -inf; });
  add("signed zeros", [&](auto& r) {
    std::fill(r.begin(), r.end(), -1.0f);
    r[V - 1] = 0.0f;
    r[V / 2] = -0.0f;
  });
  return rows;
}

std::string float_bits(float x) { return std::isnan(x) ? std::string("nan") : fmt::format("{}", x); }

void check_nonfinite_argmax(std::size_t V, const OpOptions& o, std::uint32_t seed) {
  Context& ctx = context();
  const auto rows = nonfinite_rows(V, seed);
  const std::size_t B = rows.size();
  std::vector<float> logits;
  for (const auto& r : rows) logits.insert(logits.end(), r.second.begin(), r.second.end());
  const Tensor t = ctx.tensor({B, V}, logits), idx = ctx.tensor({B}, DType::i32), mx = ctx.tensor({B});
  const Tensor flags = ctx.tensor({B}, DType::u32);
  std::vector<std::uint32_t> flags0(B, 0);
  flags0[1] = 7;  // already set: stays
  ctx.write(flags, flags0);
  Argmax op(ctx, o);
  Sequence seq = ctx.sequence();
  op.record(seq, t, idx, mx, {}, flags);
  seq.download(idx).download(mx).download(flags);
  seq.eval();
  const auto gi = seq.read<std::int32_t>(idx);
  const auto gm = seq.read<float>(mx);
  const auto gf = seq.read<std::uint32_t>(flags);
  for (std::size_t b = 0; b < B; ++b) {
    SCOPED_TRACE(fmt::format("V {} wg {} shared {}: row '{}'", V, o.workgroup_size, o.force_shared_memory_reduction,
                             rows[b].first));
    const auto [want, bad] = torch_argmax(rows[b].second.data(), V);
    EXPECT_EQ(gi[b], want);
    EXPECT_EQ(float_bits(gm[b]), float_bits(rows[b].second[static_cast<std::size_t>(want)]));
    EXPECT_EQ(gf[b], b == 1 ? 7u : bad ? 1u : 0u);
  }
}

// torch.argmax's NaN rule ([1, NaN, 3, 2] -> 1, the first NaN wins) over awkward vocabularies,
// both reduction paths and forced workgroup sizes; the flag marks exactly the rows whose max is
// not finite, once.
TEST(Argmax, NonFiniteRowsFollowTorch) {
  {
    Context& ctx = context();
    const float nan = std::numeric_limits<float>::quiet_NaN();
    const Tensor t = ctx.tensor({1, 4}, std::vector<float>{1.0f, nan, 3.0f, 2.0f}), idx = ctx.tensor({1}, DType::i32);
    Argmax op(ctx);
    Sequence seq = ctx.sequence();
    op.record(seq, t, idx);
    seq.download(idx);
    seq.eval();
    EXPECT_EQ(seq.read<std::int32_t>(idx), std::vector<std::int32_t>{1});
  }
  std::uint32_t seed = 1200;
  for (bool shared : {false, true}) {
    for (std::uint32_t wg : {0u, 1u, 64u}) {
      OpOptions o;
      o.force_shared_memory_reduction = shared;
      o.workgroup_size = wg;
      for (std::size_t V : {1, 7, 13, 31, 8000}) check_nonfinite_argmax(V, o, seed++);
    }
  }
}

// A greedy step never emits or dereferences an id outside the vocabulary: an all-NaN row
// chooses token 0 (torch's first NaN) and copies embedding row 0; the flag holds the first
// non-finite step (counted from 1) of each live row, finished rows are not checked.
TEST(Argmax, GreedyStepFlagsTheFirstNonFiniteStep) {
  Context& ctx = context();
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  const std::size_t B = 4, V = 7, dim = 3, steps = 3;
  const std::int32_t eos = 2, pad = 0;
  std::vector<std::vector<float>> logits(steps, random_floats(B * V, 5, -1.0f, 1.0f));
  logits[0][3 * V + eos] = 5.0f;                                                // row 3 finishes at step 0
  std::fill_n(logits[1].begin() + 1 * V, V, nan);                               // row 1: all NaN at step 1
  std::fill_n(logits[1].begin() + 3 * V, V, nan);                               // finished row: not flagged
  logits[2][1 * V + 4] = nan;                                                   // row 1 again: stays 2
  logits[2][2 * V + 6] = inf;                                                   // row 2: +inf at step 2
  const auto table = random_floats(V * dim, 9);
  const Tensor t_table = ctx.tensor({V, dim}, table), next_in = ctx.tensor({B, dim});
  const Tensor next = ctx.tensor({B}, DType::i32), finished = ctx.tensor({B}, DType::u32);
  const Tensor tokens = ctx.tensor({B, steps}, DType::i32), flags = ctx.tensor({B}, DType::u32);
  Argmax op(ctx);
  std::vector<Tensor> lt;
  Sequence seq = ctx.sequence();
  seq.fill(finished, 0).fill(flags, 0);
  for (std::size_t t = 0; t < steps; ++t) {
    lt.push_back(ctx.tensor({B, V}, logits[t]));
    GreedyStep g;
    g.next_tokens = next;
    g.finished = finished;
    g.eos = eos;
    g.pad = pad;
    g.step = t;
    g.tokens = tokens;
    g.nonfinite = flags;
    g.embedding = MatrixView::of(t_table);
    g.embedding_out = MatrixView::of(next_in);
    op.record(seq, lt.back(), g);
  }
  seq.download(tokens).download(flags).download(next_in).download(next);
  seq.eval();
  const auto tok = seq.read<std::int32_t>(tokens);
  for (std::int32_t id : tok) EXPECT_TRUE(id >= 0 && id < std::int32_t(V)) << id;
  EXPECT_EQ(tok[1 * steps + 1], 0);  // all NaN: the first NaN
  EXPECT_EQ(tok[1 * steps + 2], 4);  // the NaN
  EXPECT_EQ(tok[2 * steps + 2], 6);  // the +inf
  EXPECT_EQ(seq.read<std::uint32_t>(flags), (std::vector<std::uint32_t>{0, 2, 3, 0}));
  const auto got_in = seq.read<float>(next_in);
  const auto last = seq.read<std::int32_t>(next);
  for (std::size_t b = 0; b < B; ++b)
    for (std::size_t j = 0; j < dim; ++j) EXPECT_EQ(got_in[b * dim + j], table[std::size_t(last[b]) * dim + j]);
}

void check_nonfinite_topk(std::size_t N, std::size_t k, const OpOptions& o, std::uint32_t seed) {
  Context& ctx = context();
  const auto rows = nonfinite_rows(N, seed);
  const std::size_t B = rows.size();
  std::vector<float> x;
  for (const auto& r : rows) x.insert(x.end(), r.second.begin(), r.second.end());
  const Tensor t = ctx.tensor({B, N}, x), vals = ctx.tensor({B, k}), idx = ctx.tensor({B, k}, DType::i32);
  const Tensor lvals = ctx.tensor({B, k}), lidx = ctx.tensor({B, k}, DType::i32), flags = ctx.tensor({B}, DType::u32);
  TopK op(ctx, k, o);
  Sequence seq = ctx.sequence();
  seq.fill(flags, 0);
  op.record(seq, t, vals, idx, false, flags, 3);
  op.record(seq, t, lvals, lidx, true);
  seq.download(vals).download(idx).download(lvals).download(lidx).download(flags);
  seq.eval();
  const auto gv = seq.read<float>(vals), glv = seq.read<float>(lvals);
  const auto gi = seq.read<std::int32_t>(idx), gli = seq.read<std::int32_t>(lidx);
  const auto gf = seq.read<std::uint32_t>(flags);
  for (std::size_t b = 0; b < B; ++b) {
    SCOPED_TRACE(fmt::format("N {} k {} wg {} shared {}: row '{}'", N, k, o.workgroup_size,
                             o.force_shared_memory_reduction, rows[b].first));
    const auto& row = rows[b].second;
    std::vector<std::size_t> order(N);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t c) { return torch_greater(row[a], row[c]); });
    for (std::size_t j = 0; j < k; ++j) {
      const std::int32_t want = j < N ? static_cast<std::int32_t>(order[j]) : -1;
      EXPECT_EQ(gi[b * k + j], want) << "rank " << j;
      EXPECT_GE(gli[b * k + j], j < N ? 0 : -1) << "rank " << j;
      EXPECT_LT(gli[b * k + j], std::int32_t(N)) << "rank " << j;
      if (j < N) {
        EXPECT_EQ(float_bits(gv[b * k + j]), float_bits(row[order[j]])) << "rank " << j;
      }
    }
    const bool bad = !std::isfinite(row[order[0]]);
    EXPECT_EQ(gf[b], bad ? 3u : 0u);
    // log_softmax of a row with a NaN or +inf is NaN throughout (torch's too).
    if (bad && !std::isinf(row[order[0]])) {
      EXPECT_TRUE(std::isnan(glv[b * k])) << glv[b * k];
    }
  }
}

// torch.topk's NaN rule (NaN ranks highest; ties to the lower index as the stable sort), so
// beam search always gets k real candidates; the flag marks the non-finite rows.
TEST(TopK, NonFiniteRowsFollowTorch) {
  std::uint32_t seed = 1300;
  for (bool shared : {false, true}) {
    OpOptions o;
    o.force_shared_memory_reduction = shared;
    for (std::size_t N : {1, 7, 13, 31, 8000})
      for (std::size_t k : {1, 4, 13}) check_nonfinite_topk(N, k, o, seed++);
  }
}

// Rows longer than one invocation may loop over at the default workgroup (lavapipe silently
// ends loops past 65535 iterations): a wider workgroup takes them; past the widest, an error.
TEST(Argmax, RowsPastTheLoopBudget) {
  std::uint32_t seed = 1400;
  for (bool shared : {false, true}) {
    OpOptions o;
    o.force_shared_memory_reduction = shared;
    check_argmax(context(), 2, 300000, o, seed++);
    check_topk(context(), 1, 200000, 64, o, seed++, false);
  }
  TopK op(context(), 64);
  Sequence seq = context().sequence();
  const std::size_t N = 64 * std::size_t(context().device().max_workgroup_invocations) * 16;
  expect_error([&] { op.record(seq, context().tensor({1, N}), context().tensor({1, 64}), context().tensor({1, 64}, DType::i32)); },
               ErrorCode::out_of_range, {"TopK", "loop budget"});
}

// --- Concat --------------------------------------------------------------------------------

TEST(Concat, MatchesReference) {
  Context& ctx = context();
  Concat op(ctx);
  std::uint32_t seed = 500;
  for (std::size_t rows : {1, 3, 64, 129}) {
    for (std::size_t nsrc = 1; nsrc <= 4; ++nsrc) {
      SCOPED_TRACE(fmt::format("rows {} sources {}", rows, nsrc));
      std::vector<MatrixView> views;
      std::vector<std::vector<float>> data;
      std::size_t width = 0;
      for (std::size_t k = 0; k < nsrc; ++k) {
        const std::size_t cols = 1 + (seed * 7 + k * 13) % 19, off = k * 3, ld = cols + k;
        data.push_back(random_floats(off + rows * ld, seed++));
        views.push_back({ctx.tensor({data.back().size()}, data.back()), rows, cols, off, ld});
        width += cols;
      }
      const std::size_t out_off = 4, out_ld = width + 2;
      const Tensor out = ctx.tensor({out_off + rows * out_ld});
      ctx.write(out, std::vector<float>(out.size(), -1.0f));
      Sequence seq = ctx.sequence();
      op.record(seq, std::span<const MatrixView>(views), MatrixView{out, rows, width, out_off, out_ld});
      seq.download(out);
      seq.eval();
      std::vector<double> want(out.size(), -1.0);
      for (std::size_t r = 0; r < rows; ++r) {
        std::size_t c0 = 0;
        for (std::size_t k = 0; k < nsrc; ++k) {
          for (std::size_t j = 0; j < views[k].cols; ++j)
            want[out_off + r * out_ld + c0 + j] = data[k][views[k].offset + r * views[k].ld + j];
          c0 += views[k].cols;
        }
      }
      EXPECT_TRUE(all_close(seq.read<float>(out), want, 0, 0));
    }
  }
}

TEST(Concat, Errors) {
  Context& ctx = context();
  Concat op(ctx);
  Sequence seq = ctx.sequence();
  const Tensor a = ctx.tensor({2, 3}), b = ctx.tensor({3, 4}), out = ctx.tensor({2, 7});
  expect_error([&] { op.record(seq, {MatrixView::of(a), MatrixView::of(b)}, MatrixView::of(out)); },
               ErrorCode::invalid_argument, {"sources[1] has 3 rows"});
  expect_error([&] { op.record(seq, {MatrixView::of(a)}, MatrixView::of(out)); }, ErrorCode::invalid_argument,
               {"'out'", "2 x 3"});
  expect_error([&] { op.record(seq, {MatrixView{out, 2, 3, 0, 7}}, MatrixView{out, 2, 3, 3, 7}); },
               ErrorCode::invalid_argument, {"shares memory"});
  expect_error([&] { op.record(seq, std::span<const MatrixView>(), MatrixView::of(out)); }, ErrorCode::invalid_argument,
               {"1 to 4 sources"});
  expect_error([&] { op.record(seq, {MatrixView{a, 2, 3, 1, 3}}, MatrixView{out, 2, 3, 0, 7}); },
               ErrorCode::invalid_argument, {"does not fit"});
}

// --- Activation ------------------------------------------------------------------------------

TEST(Activation, MatchesReference) {
  Context& ctx = context();
  for (ActivationFn fn : {ActivationFn::tanh, ActivationFn::sigmoid, ActivationFn::relu}) {
    Activation op(ctx, fn);
    for (std::size_t n : {1, 63, 64, 65, 100003}) {
      SCOPED_TRACE(fmt::format("fn {} n {}", static_cast<int>(fn), n));
      auto x = random_floats(n, static_cast<std::uint32_t>(n), -6.0f, 6.0f);
      if (n > 10) {  // near zero (relative accuracy) and far out (no NaN)
        x[0] = 1e-7f;
        x[1] = -3e-5f;
        x[2] = 0.2f;
        x[3] = 60.0f;
        x[4] = -95.0f;
      }
      std::vector<double> want(n);
      for (std::size_t i = 0; i < n; ++i) {
        const double v = x[i];
        want[i] = fn == ActivationFn::tanh ? std::tanh(v) : fn == ActivationFn::sigmoid ? 1.0 / (1.0 + std::exp(-v)) : std::max(v, 0.0);
      }
      const Tensor tx = ctx.tensor({n}, x), ty = ctx.tensor({n}), tz = ctx.tensor({n}, x);
      Sequence seq = ctx.sequence();
      op.record(seq, tx, ty);
      op.record(seq, tz, tz);
      seq.download(ty).download(tz);
      seq.eval();
      EXPECT_TRUE(all_close(seq.read<float>(ty), want, 1e-6, 1e-30));
      EXPECT_TRUE(all_close(seq.read<float>(tz), want, 1e-6, 1e-30));
    }
  }
  Activation op(ctx, ActivationFn::tanh);
  Sequence seq = ctx.sequence();
  expect_error([&] { op.record(seq, ctx.tensor({3}), ctx.tensor({4})); }, ErrorCode::invalid_argument, {"3 elements"});
  expect_error([&] { op.record(seq, ctx.tensor({3}, DType::i32), ctx.tensor({3})); }, ErrorCode::invalid_argument,
               {"'x'", "f32"});
}

// --- Other devices' kernels ------------------------------------------------------------------

// What a GPU, a mobile GPU (16 KiB shared memory, 128 invocations, shared-memory reductions) and
// the Vulkan minimums (4 storage buffers per stage) get (tests/common/test_env.hpp), run here:
// argmax binds 11 buffers, concat and top-k 5 (top-k's forced tokens of beam search's target
// prefixes), so they refuse under the minimums, by the limit's name; embedding (4) runs
// everywhere. (No decoder runs there anyway: greedy needs argmax, beam search's merge binds 13.)
TEST(DecodingOps, LimitProfiles) {
  std::uint32_t seed = 4000;
  for (test::Limits limits : test::kAllLimits) {
    Context& ctx = test::limited_context(limits);
    SCOPED_TRACE(fmt::format("limits '{}'", test::to_string(limits)));
    check_embedding(ctx, 7, 13, 31, {}, seed++);
    if (limits == test::Limits::minimum) {
      expect_error([&] { Argmax(ctx, {}); }, ErrorCode::out_of_range, {"maxPerStageDescriptorStorageBuffers"});
      expect_error([&] { Concat(ctx, {}); }, ErrorCode::out_of_range, {"maxPerStageDescriptorStorageBuffers"});
      expect_error([&] { check_topk(ctx, 3, 513, 6, {}, seed, false); }, ErrorCode::out_of_range,
                   {"topk", "binds 5 storage buffers", "maxPerStageDescriptorStorageBuffers"});
      continue;
    }
    check_topk(ctx, 3, 513, 6, {}, seed++, false);
    check_topk(ctx, 2, 20, 4, {}, seed++, true);
    check_argmax(ctx, 3, 777, {}, seed++);
    check_argmax(ctx, 2, 33333, {}, seed++, true);
    Activation act(ctx, ActivationFn::sigmoid);
    const auto x = random_floats(1000, seed++, -6.0f, 6.0f);
    std::vector<double> want(x.size());
    for (std::size_t i = 0; i < x.size(); ++i) want[i] = 1.0 / (1.0 + std::exp(-double(x[i])));
    const Tensor tx = ctx.tensor({x.size()}, x), ty = ctx.tensor({x.size()});
    Sequence seq = ctx.sequence();
    act.record(seq, tx, ty);
    seq.download(ty).eval();
    EXPECT_TRUE(all_close(seq.read<float>(ty), want, 1e-6, 1e-30));
  }
}

}  // namespace
}  // namespace vkrnn
