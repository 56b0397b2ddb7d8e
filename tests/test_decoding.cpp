// Decoding options (issue 16): LogitsProcessor against a double-precision host reference of
// every rule and their combination over awkward shapes (V = 1, 7, 8000; B = 1, 3, 16), its
// sampling against a host Philox4x32-10 + Gumbel-max reference and, as a distribution, by a
// chi-square test of 10^5 samples (fixed seed: deterministic); then Seq2Seq's greedy with the
// options: processed logits against the host rules applied to teacher-forced raw logits,
// nothing recorded when every option is off, sampling reproducible across runs and batch sizes,
// target prefixes, and the errors.
#include <algorithm>
#include <array>
#include <cstdio>
#include <tuple>
#include <cmath>
#include <limits>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "common/test_env.hpp"
#include "expect_error.hpp"
#include "models/model_common.hpp"
#include "ops/beam_step.hpp"
#include "test_models_tiny.hpp"
#include "vkrnn/logits_processor.hpp"
#include "vkrnn/seq2seq.hpp"
#include "vkrnn/topk.hpp"

namespace vkrnn {
namespace {

using test::context;
using test::expect_error;
using test::random_floats;
using test::TempDir;
using test::TinyModel;
using test::TinySpec;

constexpr double kInf = std::numeric_limits<double>::infinity();

// --- host references ---------------------------------------------------------------------

// The rules of docs/runtime.md, "Decoding options", on one row at step t; inputs[0..t] are the
// row's inputs (inputs[0]: BOS, not a generated token).
void ref_process(std::vector<double>& x, const std::vector<std::int32_t>& inputs, std::size_t t, const LogitsProcessing& p) {
  const std::size_t V = x.size();
  std::vector<std::int32_t> g(inputs.begin() + 1, inputs.begin() + static_cast<std::ptrdiff_t>(t + 1));  // g[0] = g_1
  if (p.repetition_penalty != 1.0) {
    const std::set<std::int32_t> seen(g.begin(), g.end());
    for (std::int32_t v : seen) x[static_cast<std::size_t>(v)] = x[static_cast<std::size_t>(v)] < 0 ? x[static_cast<std::size_t>(v)] * p.repetition_penalty : x[static_cast<std::size_t>(v)] / p.repetition_penalty;
  }
  for (double& v : x) v /= p.temperature;
  for (std::int32_t id : p.suppressed) x[static_cast<std::size_t>(id)] = -kInf;
  for (const auto& s : p.suppressed_sequences) {
    // The last token, where the others are the last generated tokens (all of them: one token).
    const std::size_t L = s.size();
    if (g.size() + 1 >= L && std::equal(s.begin(), s.end() - 1, g.end() - static_cast<std::ptrdiff_t>(L - 1))) {
      x[static_cast<std::size_t>(s.back())] = -kInf;
    }
  }
  if (p.unk >= 0) x[static_cast<std::size_t>(p.unk)] = -kInf;
  if (p.min_length > 0 && t < p.min_length) x[static_cast<std::size_t>(p.eos)] = -kInf;
  const std::size_t n = p.no_repeat_ngram_size;
  if (n > 0 && g.size() >= n) {
    const std::size_t L = g.size();
    for (std::size_t i = 0; i + n <= L; ++i) {  // n-gram g[i .. i+n-1]
      if (std::equal(g.begin() + static_cast<std::ptrdiff_t>(i), g.begin() + static_cast<std::ptrdiff_t>(i + n - 1),
                     g.begin() + static_cast<std::ptrdiff_t>(L - n + 1))) {
        x[static_cast<std::size_t>(g[i + n - 1])] = -kInf;
      }
    }
  }
  (void)V;
}

std::uint32_t mulhilo(std::uint32_t a, std::uint32_t b, std::uint32_t& hi) {
  const std::uint64_t p = std::uint64_t(a) * b;
  hi = static_cast<std::uint32_t>(p >> 32);
  return static_cast<std::uint32_t>(p);
}

// Philox4x32-10 (Random123).
std::array<std::uint32_t, 4> philox(std::array<std::uint32_t, 4> c, std::array<std::uint32_t, 2> k) {
  for (int r = 0; r < 10; ++r) {
    if (r > 0) {
      k[0] += 0x9E3779B9u;
      k[1] += 0xBB67AE85u;
    }
    std::uint32_t hi0, hi1;
    const std::uint32_t lo0 = mulhilo(0xD2511F53u, c[0], hi0), lo1 = mulhilo(0xCD9E8D57u, c[2], hi1);
    c = {hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0};
  }
  return c;
}

TEST(LogitsProcessor, PhiloxKnownAnswers) {
  // Random123's kat_vectors for philox4x32_10: the host reference the GPU is checked against.
  EXPECT_EQ(philox({0, 0, 0, 0}, {0, 0}), (std::array<std::uint32_t, 4>{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}));
  EXPECT_EQ(philox({0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu}, {0xffffffffu, 0xffffffffu}),
            (std::array<std::uint32_t, 4>{0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}));
  EXPECT_EQ(philox({0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}, {0xa4093822u, 0x299f31d0u}),
            (std::array<std::uint32_t, 4>{0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}));
}

// Kept entries of a processed row for top-k / top-p (ties at a threshold kept).
std::vector<bool> ref_kept(const std::vector<double>& x, std::size_t top_k, double top_p) {
  const std::size_t V = x.size();
  std::vector<bool> keep(V, true);
  std::vector<double> sorted(x);
  std::sort(sorted.begin(), sorted.end(), std::greater<>());
  if (top_k > 0 && top_k < V) {
    const double kth = sorted[top_k - 1];
    for (std::size_t v = 0; v < V; ++v) keep[v] = x[v] >= kth;
  }
  const double m = sorted[0];
  if (top_p < 1.0 && std::isfinite(m)) {
    double z = 0.0;
    for (std::size_t v = 0; v < V; ++v)
      if (keep[v]) z += std::exp(x[v] - m);
    // The smallest threshold value whose kept mass (ties included) reaches top_p.
    double thr = -kInf;
    for (std::size_t i = 0; i < V; ++i) {
      double s = 0.0;
      for (std::size_t v = 0; v < V; ++v)
        if (keep[v] && x[v] >= sorted[i]) s += std::exp(x[v] - m);
      thr = sorted[i];
      if (s >= top_p * z) break;
    }
    for (std::size_t v = 0; v < V; ++v) keep[v] = keep[v] && x[v] >= thr;
  }
  return keep;
}

// Gumbel-max over the kept entries with the GPU's uniforms.
std::int32_t ref_sample(const std::vector<double>& x, const std::vector<bool>& keep, std::uint64_t seed, std::uint32_t step,
                        std::uint32_t row) {
  double best = -kInf;
  std::int32_t arg = -1;
  for (std::uint32_t v = 0; v < x.size(); ++v) {
    if (!keep[v] || !std::isfinite(x[v])) continue;
    const auto r = philox({v, step, row, 0}, {static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32)});
    const double u = (double(r[0] >> 8) + 0.5) / 16777216.0;
    const double s = x[v] - std::log(-std::log(u));
    if (s > best) {
      best = s;
      arg = static_cast<std::int32_t>(v);
    }
  }
  return arg < 0 ? 0 : arg;
}

// --- the op ------------------------------------------------------------------------------

// T steps of B rows: inputs drawn from a few ids (so n-grams and repetitions happen), fresh
// logits per step; every step's processed logits (and samples) against the host.
void check_processor(std::size_t B, std::size_t V, std::size_t T, const LogitsProcessing& p, std::uint32_t seed,
                     const OpOptions& options = {}, Context& ctx = context()) {
  SCOPED_TRACE(fmt::format("B {} V {} T {} T {} pen {} ngram {} min {} unk {} supp {} sample {} k {} p {} wg {}", B, V, T,
                           p.temperature, p.repetition_penalty, p.no_repeat_ngram_size, p.min_length, p.unk,
                           p.suppressed.size(), p.sample, p.top_k, p.top_p, options.workgroup_size));
  std::mt19937 rng(seed);
  const std::size_t few = std::min<std::size_t>(V, 3);
  std::vector<std::vector<std::int32_t>> inputs(B, std::vector<std::int32_t>(T));
  for (auto& row : inputs) {
    row[0] = 0;
    for (std::size_t t = 1; t < T; ++t) row[t] = static_cast<std::int32_t>(rng() % few);
  }
  const LogitsProcessor op(ctx, V, p, options);
  const LogitsProcessor::State st = op.make_state(B, T);
  std::vector<Tensor> logits, ins, chosen;
  std::vector<std::vector<float>> raw;
  Sequence seq = ctx.sequence();
  op.record_reset(seq, st);
  for (std::size_t t = 0; t < T; ++t) {
    raw.push_back(random_floats(B * V, seed + static_cast<std::uint32_t>(t), -3.0f, 3.0f));
    logits.push_back(ctx.tensor({B, V}, raw.back()));
    std::vector<std::int32_t> in(B);
    for (std::size_t b = 0; b < B; ++b) in[b] = inputs[b][t];
    ins.push_back(ctx.tensor({B}, DType::i32));
    seq.upload(ins.back(), in);
    op.record(seq, st, logits.back(), ins.back(), t);
    seq.download(logits.back());
    if (st.chosen.valid()) {
      chosen.push_back(ctx.tensor({B}, DType::i32));
      seq.copy(st.chosen, chosen.back());
      seq.download(chosen.back());
    }
  }
  seq.eval();
  for (std::size_t t = 0; t < T; ++t) {
    const auto got = seq.read<float>(logits[t]);
    const auto picks = st.chosen.valid() ? seq.read<std::int32_t>(chosen[t]) : std::vector<std::int32_t>{};
    for (std::size_t b = 0; b < B; ++b) {
      std::vector<double> x(raw[t].begin() + static_cast<std::ptrdiff_t>(b * V), raw[t].begin() + static_cast<std::ptrdiff_t>((b + 1) * V));
      ref_process(x, inputs[b], t, p);
      for (std::size_t v = 0; v < V; ++v) {
        const double g = got[b * V + v];
        if (std::isinf(x[v])) ASSERT_EQ(g, x[v]) << "step " << t << " row " << b << " v " << v;
        else ASSERT_NEAR(g, x[v], 1e-5 * (1.0 + std::abs(x[v]))) << "step " << t << " row " << b << " v " << v;
      }
      if (p.sample) {
        // From the GPU's own processed row, so the reference sees the same floats.
        std::vector<double> xg(got.begin() + static_cast<std::ptrdiff_t>(b * V), got.begin() + static_cast<std::ptrdiff_t>((b + 1) * V));
        const auto keep = ref_kept(xg, p.top_k, p.top_p);
        EXPECT_EQ(picks[b], ref_sample(xg, keep, p.seed, static_cast<std::uint32_t>(t), static_cast<std::uint32_t>(b)))
            << "step " << t << " row " << b;
      }
    }
  }
}

TEST(LogitsProcessor, EachRuleAndAllTogetherMatchTheHost) {
  for (const auto& [B, V, T] : {std::tuple<std::size_t, std::size_t, std::size_t>{1, 1, 4}, {3, 7, 8}, {16, 8000, 4}}) {
    const std::int32_t last = static_cast<std::int32_t>(V - 1);
    std::vector<LogitsProcessing> cases(9);
    cases[0].repetition_penalty = 1.7;
    cases[1].temperature = 0.6;
    cases[2].no_repeat_ngram_size = 2;
    cases[3].min_length = 3, cases[3].eos = last;
    cases[4].unk = last;
    cases[5].suppressed = {0, last, 0};
    cases[6].no_repeat_ngram_size = 1;
    // Sequences over the few ids the inputs are drawn from (so they occur), of 1 to 5 tokens.
    const std::int32_t a = 0, b = std::min<std::int32_t>(1, last), c = std::min<std::int32_t>(2, last);
    cases[7].suppressed_sequences = {{a, b}, {c}, {b, b, a}, {a, c, b, a, c}, {last, a}};
    cases[8].suppressed_sequences = {{b, c}};
    cases[8].no_repeat_ngram_size = 2;
    LogitsProcessing all;
    all.repetition_penalty = 0.8;  // < 1 rewards repetition: the rule still holds
    all.temperature = 1.3;
    all.no_repeat_ngram_size = 3;
    all.min_length = 2, all.eos = std::min<std::int32_t>(1, last);
    all.unk = std::min<std::int32_t>(2, last);
    all.suppressed = {last};
    all.suppressed_sequences = {{a, a}, {c, b, a}};
    cases.push_back(all);
    std::uint32_t seed = 10;
    for (const auto& p : cases) check_processor(B, V, T, p, ++seed);
  }
}

TEST(LogitsProcessor, WorkgroupSizesAndReductionPaths) {
  LogitsProcessing p;
  p.repetition_penalty = 1.2, p.no_repeat_ngram_size = 2, p.sample = true, p.top_k = 5, p.top_p = 0.9, p.seed = 42;
  p.suppressed_sequences = {{0, 1}, {2, 2, 1}, {1, 0}, {0, 0}, {2, 1}, {1, 1, 1}};
  for (const std::uint32_t wg : {1u, 4u, 32u}) {
    for (const bool shared : {false, true}) {
      OpOptions o;
      o.workgroup_size = wg;
      o.force_shared_memory_reduction = shared;
      check_processor(3, 37, 6, p, 5, o);
    }
  }
}

// The kernels other devices get (tests/common/test_env.hpp), chosen automatically: a GPU's (256
// lanes per row) and a mobile GPU's (128 invocations, shared-memory trees), every rule and
// sampling at once against the host; under the Vulkan minimum of 4 storage buffers per stage the
// kernel's 7 are refused at construction, naming the limit.
TEST(LogitsProcessor, LimitProfiles) {
  LogitsProcessing all;
  all.repetition_penalty = 1.2, all.temperature = 0.9, all.no_repeat_ngram_size = 2;
  all.min_length = 2, all.eos = 1, all.unk = 2, all.suppressed = {3};
  all.suppressed_sequences = {{0, 1}, {2, 0, 1}};
  all.sample = true, all.top_k = 5, all.top_p = 0.9, all.seed = 7;
  for (test::Limits limits : test::kAllLimits) {
    Context& ctx = test::limited_context(limits);
    SCOPED_TRACE(fmt::format("limits '{}'", test::to_string(limits)));
    if (ctx.device().max_storage_buffers_per_stage < 7) {
      expect_error([&] { LogitsProcessor(ctx, 37, all); }, ErrorCode::out_of_range,
                   {"logits_processor", "maxPerStageDescriptorStorageBuffers"});
      continue;
    }
    std::uint32_t seed = 900;
    for (const auto& [B, V, T] : {std::tuple<std::size_t, std::size_t, std::size_t>{3, 37, 6}, {2, 8000, 3}}) {
      check_processor(B, V, T, all, ++seed, {}, ctx);
    }
  }
}

TEST(LogitsProcessor, SamplingMatchesHostPhiloxGumbel) {
  for (const auto& [B, V] : {std::pair<std::size_t, std::size_t>{1, 1}, {3, 7}, {16, 8000}}) {
    for (const auto& [k, topp] : {std::pair<std::size_t, double>{0, 1.0}, {5, 1.0}, {0, 0.7}, {3, 0.5}}) {
      LogitsProcessing p;
      p.sample = true, p.top_k = k, p.top_p = topp, p.temperature = 0.8, p.seed = 0x1234567890ull;
      check_processor(B, V, 3, p, 77, {});
    }
  }
}

// 10^5 draws (one per row, the same logits in every row) against the softmax of the processed
// logits over the kept entries: Pearson's chi-square below the 0.999 quantile of its
// distribution (fixed seed, so the test is deterministic).
double chi_square(std::size_t V, std::size_t top_k, double top_p, double temperature, std::size_t& df, double& limit) {
  Context& ctx = context();
  const std::size_t N = 100000;
  const std::vector<float> row = {1.5f, 0.2f, -0.7f, 2.0f, 0.9f, -1.5f, 0.0f, 1.1f, -0.3f, 0.6f, -2.0f, 0.4f};
  std::vector<float> logits(N * V);
  for (std::size_t b = 0; b < N; ++b) std::copy_n(row.begin(), V, logits.begin() + static_cast<std::ptrdiff_t>(b * V));
  LogitsProcessing p;
  p.sample = true, p.top_k = top_k, p.top_p = top_p, p.temperature = temperature, p.seed = 2026;
  const LogitsProcessor op(ctx, V, p);
  const auto st = op.make_state(N, 1);
  const Tensor t = ctx.tensor({N, V}, logits), in = ctx.tensor({N}, DType::i32);
  Sequence seq = ctx.sequence();
  seq.fill(in, 0);
  op.record_reset(seq, st);
  op.record(seq, st, t, in, 0);
  seq.download(st.chosen);
  seq.eval();
  const auto picks = seq.read<std::int32_t>(st.chosen);
  std::vector<double> x(row.begin(), row.begin() + static_cast<std::ptrdiff_t>(V));
  for (double& v : x) v = double(float(v * float(1.0 / temperature)));
  const auto keep = ref_kept(x, top_k, top_p);
  double z = 0.0;
  for (std::size_t v = 0; v < V; ++v)
    if (keep[v]) z += std::exp(x[v]);
  std::vector<std::size_t> counts(V, 0);
  for (auto k : picks) {
    EXPECT_TRUE(k >= 0 && std::size_t(k) < V && keep[std::size_t(k)]) << k;
    if (k >= 0 && std::size_t(k) < V) ++counts[std::size_t(k)];
  }
  double chi = 0.0;
  df = 0;
  for (std::size_t v = 0; v < V; ++v) {
    if (!keep[v]) continue;
    const double e = double(N) * std::exp(x[v]) / z;
    chi += (double(counts[v]) - e) * (double(counts[v]) - e) / e;
    ++df;
  }
  df -= 1;
  // 0.999 quantiles of chi-square with df = 1 .. 11.
  static const double q999[] = {0, 10.83, 13.82, 16.27, 18.47, 20.52, 22.46, 24.32, 26.12, 27.88, 29.59, 31.26};
  limit = q999[df];
  return chi;
}

TEST(LogitsProcessor, SampleDistributionChiSquare) {
  for (const auto& [V, k, topp, temp] : {std::tuple<std::size_t, std::size_t, double, double>{7, 0, 1.0, 1.0},
                                         {7, 0, 1.0, 0.5},
                                         {12, 0, 1.0, 2.0},
                                         {12, 5, 1.0, 1.0},
                                         {12, 0, 0.8, 1.0},
                                         {12, 6, 0.9, 0.7}}) {
    std::size_t df = 0;
    double limit = 0.0;
    const double chi = chi_square(V, k, topp, temp, df, limit);
    std::printf("chi-square V %zu top_k %zu top_p %.2f T %.2f: %.2f (df %zu, 0.999 quantile %.2f)\n", V, k, topp, temp, chi, df, limit);
    EXPECT_LT(chi, limit) << "V " << V << " top_k " << k << " top_p " << topp << " T " << temp;
  }
}

TEST(LogitsProcessor, Errors) {
  Context& ctx = context();
  auto make = [&](auto edit) {
    LogitsProcessing p;
    edit(p);
    return [p, &ctx] { LogitsProcessor op(ctx, 7, p); };
  };
  expect_error(make([](LogitsProcessing& p) { p.temperature = 0.0; }), ErrorCode::invalid_argument, {"temperature = 0"});
  expect_error(make([](LogitsProcessing& p) { p.repetition_penalty = -1.0; }), ErrorCode::invalid_argument, {"repetition_penalty"});
  expect_error(make([](LogitsProcessing& p) { p.top_p = 0.0; }), ErrorCode::invalid_argument, {"top_p"});
  expect_error(make([](LogitsProcessing& p) { p.min_length = 2; }), ErrorCode::invalid_argument, {"min_length", "eos"});
  expect_error(make([](LogitsProcessing& p) { p.suppressed = {3, 7}; }), ErrorCode::invalid_argument, {"suppressed[1] = 7", "[0, 7)"});
  expect_error(make([](LogitsProcessing& p) { p.unk = 9; }), ErrorCode::invalid_argument, {"unk = 9"});
  expect_error(make([](LogitsProcessing& p) { p.suppressed_sequences = {{1, 2}, {}}; }), ErrorCode::invalid_argument,
               {"suppressed sequence 1 is empty"});
  expect_error(make([](LogitsProcessing& p) { p.suppressed_sequences = {{1, 2}, {3, -1}}; }), ErrorCode::invalid_argument,
               {"suppressed sequence 1[1] = -1"});
  LogitsProcessing p;
  p.prefix = {{1, 2, 3}};
  const LogitsProcessor op(ctx, 7, p);
  expect_error([&] { (void)op.make_state(1, 2); }, ErrorCode::out_of_range, {"3 tokens", "max_len = 2"});
  expect_error([&] { (void)op.make_state(2, 4); }, ErrorCode::invalid_argument, {"1 prefixes", "2 rows"});
  // Off: nothing is recorded.
  const LogitsProcessor off(ctx, 7, LogitsProcessing{});
  EXPECT_FALSE(off.active());
  const auto st = off.make_state(2, 3);
  Sequence seq = ctx.sequence();
  const Tensor l = ctx.tensor({2, 7}), in = ctx.tensor({2}, DType::i32);
  off.record_reset(seq, st);
  off.record(seq, st, l, in, 0);
  EXPECT_EQ(seq.stats().dispatches, 0u);
  EXPECT_EQ(seq.stats().copies, 0u);
}

double log_softmax_at(const std::vector<double>& x, std::size_t k) {
  double m = -kInf;
  for (double v : x) m = std::max(m, v);
  double z = 0.0;
  for (double v : x) z += std::exp(v - m);
  return x[k] - m - std::log(z);
}

// TopK's forced rows (beam search's target prefix): the forced entry alone, as its value or
// its log-softmax over the whole row, then -inf / -1; other rows as without.
TEST(TopK, ForcedRows) {
  Context& ctx = context();
  const std::size_t B = 4, N = 9, k = 4;
  const std::vector<float> x = random_floats(B * N, 21, -3.0f, 3.0f);
  const std::vector<std::int32_t> forced = {-1, 5, 0, 8};
  for (const bool lsm : {false, true}) {
    const Tensor xs = ctx.tensor({B, N}), f = ctx.tensor({B}, DType::i32);
    const Tensor v0 = ctx.tensor({B, k}), i0 = ctx.tensor({B, k}, DType::i32), v1 = ctx.tensor({B, k}), i1 = ctx.tensor({B, k}, DType::i32);
    const TopK topk(ctx, k);
    Sequence seq = ctx.sequence();
    seq.upload(xs, x).upload(f, forced);
    topk.record(seq, xs, v0, i0, lsm);
    topk.record(seq, xs, v1, i1, lsm, {}, 1, f);
    seq.download(v0).download(i0).download(v1).download(i1);
    seq.eval();
    const auto pv = seq.read<float>(v0), fv = seq.read<float>(v1);
    const auto pi = seq.read<std::int32_t>(i0), fi = seq.read<std::int32_t>(i1);
    for (std::size_t b = 0; b < B; ++b) {
      SCOPED_TRACE(fmt::format("log_softmax {} row {}", lsm, b));
      if (forced[b] < 0) {
        for (std::size_t j = 0; j < k; ++j) {
          EXPECT_EQ(fi[b * k + j], pi[b * k + j]);
          EXPECT_EQ(fv[b * k + j], pv[b * k + j]);
        }
        continue;
      }
      std::vector<double> row(x.begin() + static_cast<std::ptrdiff_t>(b * N), x.begin() + static_cast<std::ptrdiff_t>((b + 1) * N));
      const auto at = static_cast<std::size_t>(forced[b]);
      EXPECT_EQ(fi[b * k], forced[b]);
      EXPECT_NEAR(fv[b * k], lsm ? log_softmax_at(row, at) : row[at], 1e-5);
      for (std::size_t j = 1; j < k; ++j) {
        EXPECT_EQ(fi[b * k + j], -1);
        EXPECT_EQ(fv[b * k + j], -std::numeric_limits<float>::infinity());
      }
    }
  }
}

// --- Seq2Seq ------------------------------------------------------------------------------

// A tiny model written into `dir` and loaded.
Seq2Seq tiny_model(const TempDir& dir, const TinySpec& spec) {
  TinyModel(spec).write(dir.path());
  return Seq2Seq::load(context(), dir.str());
}

std::vector<std::vector<std::int32_t>> sources(std::size_t B, std::size_t Vs, std::uint32_t seed) {
  std::vector<std::size_t> lengths;
  for (std::size_t b = 0; b < B; ++b) lengths.push_back(1 + (b * 5 + seed) % 7);
  return test::random_token_rows(lengths, 3, Vs, seed);
}

// Greedy with the options: at every step of every row, the processed logits equal the host
// rules applied to the raw logits of the same inputs (the incremental API, teacher-forced with
// greedy's own tokens, the same batch: the same kernels), the token is their argmax and the
// score its log-softmax.
void check_greedy_rules(const TinySpec& spec, std::size_t B, const DecodeOptions& o, std::uint32_t seed) {
  SCOPED_TRACE(fmt::format("Vt {} B {} penalty {} ngram {} min_length {} unk {} suppressed {} sequences {}", spec.Vt, B,
                           o.repetition_penalty, o.no_repeat_ngram_size, o.min_length, o.disable_unk, o.suppress_tokens.size(),
                           o.suppress_sequences.size()));
  TempDir dir;
  const Seq2Seq model = tiny_model(dir, spec);
  const auto src = sources(B, spec.Vs, seed);
  DecodeOptions with = o;
  with.return_logits = true;
  const DecodeResult g = model.greedy(src, with);
  const std::size_t V = spec.Vt, T = g.steps;
  LogitsProcessing p;
  p.repetition_penalty = o.repetition_penalty;
  p.no_repeat_ngram_size = o.no_repeat_ngram_size;
  p.min_length = o.min_length;
  p.eos = 2;
  p.unk = o.disable_unk ? 3 : -1;
  p.suppressed = o.suppress_tokens;
  p.suppressed_sequences = o.suppress_sequences;
  auto st = model.start(model.encode(src), {.max_len = o.max_len, .return_logits = true});
  std::vector<std::vector<std::int32_t>> inputs(B, std::vector<std::int32_t>{1});  // BOS
  std::size_t checked = 0;
  for (std::size_t t = 0; t < T; ++t) {
    std::vector<std::int32_t> forced(B);
    for (std::size_t b = 0; b < B; ++b) forced[b] = inputs[b].back();
    const StepResult r = model.step(st, forced);
    for (std::size_t b = 0; b < B; ++b) {
      const std::int32_t tok = g.tokens[b * T + t];
      inputs[b].push_back(tok);
      if (t >= static_cast<std::size_t>(g.lengths[b])) continue;
      std::vector<double> x(r.logits.begin() + static_cast<std::ptrdiff_t>(b * V), r.logits.begin() + static_cast<std::ptrdiff_t>((b + 1) * V));
      ref_process(x, inputs[b], t, p);
      std::size_t best = 0;
      for (std::size_t v = 0; v < V; ++v) {
        const double got = g.logits[(b * T + t) * V + v];
        if (std::isinf(x[v])) ASSERT_EQ(got, x[v]) << "row " << b << " step " << t << " v " << v;
        else ASSERT_NEAR(got, x[v], 1e-5 * (1.0 + std::abs(x[v]))) << "row " << b << " step " << t << " v " << v;
        if (x[v] > x[best]) best = v;
      }
      EXPECT_EQ(static_cast<std::size_t>(tok), best) << "row " << b << " step " << t;
      EXPECT_NEAR(g.scores[b * T + t], log_softmax_at(x, best), 1e-4) << "row " << b << " step " << t;
      ++checked;
    }
  }
  EXPECT_GT(checked, B);
}

TEST(DecodeOptions, GreedyRulesMatchTheHostOnTeacherForcedLogits) {
  TinySpec small;
  small.scale = 1.5f;  // peaked rows: repetitions happen
  TinySpec wide = small;
  wide.Vt = 40;
  check_greedy_rules(small, 3, {.repetition_penalty = 2.5}, 1);
  check_greedy_rules(small, 3, {.no_repeat_ngram_size = 1}, 2);
  check_greedy_rules(small, 16, {.min_length = 4}, 3);
  check_greedy_rules(small, 1, {.disable_unk = true, .suppress_tokens = {4}}, 4);
  check_greedy_rules(wide, 16,
                     {.max_len = 12, .repetition_penalty = 1.3, .no_repeat_ngram_size = 2, .min_length = 3, .disable_unk = true,
                      .suppress_tokens = {5, 39}, .suppress_sequences = {{6, 7}, {8}, {4, 4, 4}}},
                     5);
}

// Whether `seq` occurs in `tokens`.
bool contains(const std::vector<std::int32_t>& tokens, const std::vector<std::int32_t>& seq) {
  return std::search(tokens.begin(), tokens.end(), seq.begin(), seq.end()) != tokens.end();
}

// Suppressed sequences taken from what plain greedy and beam produce: with them, greedy follows
// the host rules, and no greedy row or beam hypothesis contains one.
TEST(DecodeOptions, SuppressSequencesOfWhatWouldBeGenerated) {
  TinySpec spec;
  spec.Vt = 40;
  spec.scale = 1.5f;
  TempDir dir;
  const Seq2Seq model = tiny_model(dir, spec);
  const std::size_t B = 3;
  const auto src = sources(B, spec.Vs, 7);
  const DecodeResult plain = model.greedy(src, {.max_len = 10, .stop_at_eos = false});
  // A bigram, a trigram and a 4-gram of the plain rows (rows 0, 1, 2).
  std::vector<std::vector<std::int32_t>> banned;
  for (std::size_t b = 0; b < B; ++b) {
    const auto first = plain.tokens.begin() + static_cast<std::ptrdiff_t>(b * 10 + 1);
    banned.emplace_back(first, first + static_cast<std::ptrdiff_t>(2 + b));
  }
  check_greedy_rules(spec, B, {.max_len = 10, .suppress_sequences = banned}, 7);
  const DecodeResult g = model.greedy(src, {.max_len = 10, .stop_at_eos = false, .suppress_sequences = banned});
  EXPECT_NE(g.tokens, plain.tokens);
  for (std::size_t b = 0; b < B; ++b) {
    for (const auto& s : banned) EXPECT_FALSE(contains(g.row(b), s)) << "row " << b;
  }
  const auto plain_beams = model.beam(src, {.beam_width = 4, .max_len = 10});
  std::vector<std::vector<std::int32_t>> from_beams;
  for (const auto& row : plain_beams) from_beams.emplace_back(row.at(0).tokens.begin(), row.at(0).tokens.begin() + 2);
  const auto beams = model.beam(src, {.beam_width = 4, .max_len = 10, .suppress_sequences = from_beams});
  for (const auto& row : beams) {
    for (const Hypothesis& h : row) {
      for (const auto& s : from_beams) EXPECT_FALSE(contains(h.tokens, s));
    }
  }
}

// Off, the options record nothing; on, one dispatch per step (two where the argmax would take the
// projection in) and still one submission.
TEST(DecodeOptions, OffCostsNothing) {
  TempDir dir;
  const Seq2Seq model = tiny_model(dir, TinySpec{});
  const auto src = sources(3, 7, 1);
  const DecodeResult plain = model.greedy(src, {.max_len = 6, .stop_at_eos = false});
  // Neutral settings: a temperature without sampling, penalty 1, a seed.
  const DecodeResult neutral = model.greedy(
      src, {.max_len = 6, .stop_at_eos = false, .repetition_penalty = 1.0, .sampling_temperature = 0.5, .seed = 9});
  EXPECT_EQ(neutral.stats.dispatches, plain.stats.dispatches);
  EXPECT_EQ(neutral.stats.copies, plain.stats.copies);
  EXPECT_EQ(neutral.stats.barriers, plain.stats.barriers);
  EXPECT_EQ(neutral.stats.submissions, 1u);
  EXPECT_EQ(neutral.tokens, plain.tokens);
  EXPECT_EQ(neutral.scores, plain.scores);
  const DecodeResult on = model.greedy(src, {.max_len = 6, .stop_at_eos = false, .repetition_penalty = 1.2,
                                             .no_repeat_ngram_size = 2, .sampling_topk = 0, .seed = 3});
  // The processor's dispatch, and the projection the argmax can no longer take in.
  const std::uint32_t extra = test::greedy_takes_projection(test::context(), 3) ? 2 : 1;
  EXPECT_EQ(on.stats.dispatches, plain.stats.dispatches + 6 * extra);
  EXPECT_EQ(on.stats.submissions, 1u);
  std::printf("greedy B 3, 6 steps: %u dispatches, %u barriers, %u submission(s) with the options off; %u, %u, %u with "
              "repetition penalty + n-gram blocking + sampling\n",
              plain.stats.dispatches, plain.stats.barriers, plain.stats.submissions, on.stats.dispatches, on.stats.barriers,
              on.stats.submissions);
  // Early stop still works with the options on.
  const DecodeResult stop = model.greedy(src, {.repetition_penalty = 1.2, .sampling_topk = 0, .seed = 3});
  EXPECT_EQ(stop.stats.submissions, 1u);
  EXPECT_LE(stop.steps_run, stop.steps + 1);
}

TEST(DecodeOptions, SamplingIsReproducibleAcrossRunsAndBatchSizes) {
  TempDir dir;
  TinySpec spec;
  spec.Vt = 40;
  const Seq2Seq model = tiny_model(dir, spec);
  const auto src16 = sources(16, spec.Vs, 4);
  const decltype(src16) src3(src16.begin(), src16.begin() + 3), src1(src16.begin(), src16.begin() + 1);
  const DecodeOptions o{.max_len = 8, .stop_at_eos = false, .sampling_topk = 0, .sampling_topp = 0.95, .sampling_temperature = 1.5, .seed = 7};
  const DecodeResult r16 = model.greedy(src16, o), r3 = model.greedy(src3, o), r3again = model.greedy(src3, o), r1 = model.greedy(src1, o);
  EXPECT_EQ(r3.tokens, r3again.tokens);
  EXPECT_EQ(r3.scores, r3again.scores);
  for (std::size_t b = 0; b < 3; ++b) EXPECT_EQ(r3.row(b), r16.row(b)) << "row " << b;
  EXPECT_EQ(r1.row(0), r16.row(0));
  // A sample, not the argmax; another seed, other tokens.
  const DecodeResult greedy16 = model.greedy(src16, {.max_len = 8, .stop_at_eos = false});
  EXPECT_NE(r16.tokens, greedy16.tokens);
  DecodeOptions o2 = o;
  o2.seed = 8;
  EXPECT_NE(model.greedy(src16, o2).tokens, r16.tokens);
  // top-k 1 is greedy whatever the other sampling settings.
  DecodeOptions k1 = o;
  k1.sampling_topk = 1;
  EXPECT_EQ(model.greedy(src16, k1).tokens, greedy16.tokens);
  // Scores are the log-softmax of the processed (tempered) logits at the sampled token.
  DecodeOptions lg = o;
  lg.return_logits = true;
  const DecodeResult withl = model.greedy(src3, lg);
  EXPECT_EQ(withl.tokens, r3.tokens);
  for (std::size_t i = 0; i < 3 * 8; ++i) {
    std::vector<double> x(withl.logits.begin() + static_cast<std::ptrdiff_t>(i * 40), withl.logits.begin() + static_cast<std::ptrdiff_t>((i + 1) * 40));
    EXPECT_NEAR(withl.scores[i], log_softmax_at(x, static_cast<std::size_t>(withl.tokens[i])), 1e-4) << i;
  }
}

TEST(DecodeOptions, TargetPrefix) {
  TempDir dir;
  TinySpec spec;
  spec.Vt = 40;
  const Seq2Seq model = tiny_model(dir, spec);
  const auto src = sources(3, spec.Vs, 6);
  const DecodeResult plain = model.greedy(src, {.max_len = 9, .stop_at_eos = false, .return_logits = true});
  // The rows' own first tokens as the prefix: the same decode.
  std::vector<std::vector<std::int32_t>> own;
  for (std::size_t b = 0; b < 3; ++b) own.push_back({plain.tokens[b * 9], plain.tokens[b * 9 + 1]});
  const DecodeResult same = model.greedy(src, {.max_len = 9, .stop_at_eos = false, .target_prefix = own});
  EXPECT_EQ(same.tokens, plain.tokens);
  EXPECT_EQ(same.scores, plain.scores);
  // Forced tokens, one row without a prefix; the forced steps score their own token.
  const std::vector<std::vector<std::int32_t>> forced = {{7, 7, 9}, {}, {2}};
  const DecodeResult f = model.greedy(src, {.max_len = 9, .stop_at_eos = false, .return_logits = true, .target_prefix = forced});
  EXPECT_EQ(std::vector<std::int32_t>(f.tokens.begin(), f.tokens.begin() + 3), forced[0]);
  EXPECT_EQ(f.tokens[2 * 9], 2);
  EXPECT_EQ(std::vector<std::int32_t>(f.tokens.begin() + 9, f.tokens.begin() + 18), std::vector<std::int32_t>(plain.tokens.begin() + 9, plain.tokens.begin() + 18));
  for (std::size_t t = 0; t < 3; ++t) {
    std::vector<double> x(f.logits.begin() + static_cast<std::ptrdiff_t>(t * 40), f.logits.begin() + static_cast<std::ptrdiff_t>((t + 1) * 40));
    EXPECT_NEAR(f.scores[t], log_softmax_at(x, static_cast<std::size_t>(forced[0][t])), 1e-4);
  }
  // A forced EOS ends the row when decoding stops at EOS.
  const DecodeResult e = model.greedy(src, {.max_len = 9, .target_prefix = {{4, 2}, {}, {}}});
  EXPECT_EQ(e.row(0), (std::vector<std::int32_t>{4, 2}));
}

// Beam search with a target prefix: every hypothesis starts with its row's prefix and its score
// is the teacher-forced log-probability of all its tokens, prefix included (the incremental API
// fed the hypothesis); a row without a prefix is the unprefixed search's; K = 1 is greedy with
// the same prefix (tokens and scores); a forced EOS ends the row's one hypothesis; one
// submission, one processor dispatch per step more.
TEST(DecodeOptions, BeamTargetPrefix) {
  TempDir dir;
  TinySpec spec;
  spec.Vt = 40;
  spec.eos_bias = 0.5f;
  const Seq2Seq model = tiny_model(dir, spec);
  const auto src = sources(3, spec.Vs, 13);
  const std::vector<std::vector<std::int32_t>> prefix = {{7, 7, 9}, {}, {4}};
  const std::size_t K = 4, T = 10, V = 40;
  DecodeStats with, without;
  const auto plain = model.beam(src, {.beam_width = K, .max_len = T, .return_logits = true, .stats = &without, .return_token_scores = true});
  const auto hyps = model.beam(src, {.beam_width = K, .max_len = T, .return_logits = true, .stats = &with,
                                     .return_token_scores = true, .target_prefix = prefix});
  EXPECT_EQ(with.sequence.submissions, 1u);
  EXPECT_EQ(with.sequence.dispatches, without.sequence.dispatches + T);
  for (std::size_t b = 0; b < 3; ++b) {
    ASSERT_EQ(hyps[b].size(), K) << "row " << b;
    std::set<std::vector<std::int32_t>> distinct;
    // The hypotheses, teacher-forced through the incremental API: K copies of the source.
    const std::vector<std::vector<std::int32_t>> copies(K, src[b]);
    auto st = model.start(model.encode(copies), {.max_len = T, .stop_at_eos = false, .return_logits = true});
    std::vector<double> forced_score(K, 0.0);
    for (std::size_t t = 0; t < T; ++t) {
      std::vector<std::int32_t> in(K, 1);  // BOS
      for (std::size_t k = 0; t > 0 && k < K; ++k) {
        const auto& tok = hyps[b][k].tokens;
        in[k] = t - 1 < tok.size() ? tok[t - 1] : 0;
      }
      const StepResult r = model.step(st, in);
      for (std::size_t k = 0; k < K; ++k) {
        const auto& tok = hyps[b][k].tokens;
        if (t >= tok.size()) continue;
        std::vector<double> x(r.logits.begin() + static_cast<std::ptrdiff_t>(k * V), r.logits.begin() + static_cast<std::ptrdiff_t>((k + 1) * V));
        const double lp = log_softmax_at(x, static_cast<std::size_t>(tok[t]));
        EXPECT_NEAR(hyps[b][k].token_scores[t], lp, 1e-4) << "row " << b << " hyp " << k << " step " << t;
        forced_score[k] += lp;
      }
    }
    for (std::size_t k = 0; k < K; ++k) {
      const Hypothesis& h = hyps[b][k];
      ASSERT_GE(h.tokens.size(), prefix[b].size());
      EXPECT_EQ(std::vector<std::int32_t>(h.tokens.begin(), h.tokens.begin() + static_cast<std::ptrdiff_t>(prefix[b].size())), prefix[b])
          << "row " << b << " hyp " << k;
      EXPECT_NEAR(h.score, forced_score[k], 1e-4) << "row " << b << " hyp " << k;
      EXPECT_TRUE(distinct.insert(h.tokens).second) << "row " << b << " hyp " << k;
      if (k > 0) {
        EXPECT_GE(hyps[b][k - 1].norm_score, h.norm_score);
      }
    }
  }
  for (std::size_t k = 0; k < K; ++k) {
    EXPECT_EQ(hyps[1][k].tokens, plain[1][k].tokens);
    EXPECT_FLOAT_EQ(hyps[1][k].score, plain[1][k].score);
  }
  // K = 1 is greedy with the prefix.
  const DecodeResult g = model.greedy(src, {.max_len = T, .target_prefix = prefix});
  const auto b1 = model.beam(src, {.beam_width = 1, .max_len = T, .return_token_scores = true, .target_prefix = prefix});
  for (std::size_t b = 0; b < 3; ++b) {
    const Hypothesis& h = b1[b].at(0);
    ASSERT_EQ(h.tokens, g.row(b)) << "row " << b;
    double sum = 0.0;
    for (std::size_t t = 0; t < h.tokens.size(); ++t) {
      EXPECT_NEAR(h.token_scores[t], g.scores[b * g.steps + t], 1e-5) << "row " << b << " step " << t;
      sum += g.scores[b * g.steps + t];
    }
    EXPECT_NEAR(h.score, sum, 1e-4) << "row " << b;
  }
  // A forced EOS: the row's only hypothesis is the prefix, finished; the others decode on.
  const auto eos = model.beam(src, {.beam_width = 3, .max_len = T, .target_prefix = {{4, 2, 5}, {}, {6}}});
  ASSERT_EQ(eos[0].size(), 1u);
  EXPECT_EQ(eos[0][0].tokens, (std::vector<std::int32_t>{4, 2}));
  EXPECT_TRUE(eos[0][0].finished);
  EXPECT_EQ(eos[1].size(), 3u);
  for (const Hypothesis& h : eos[2]) EXPECT_EQ(h.tokens.at(0), 6);
  // A prefix as long as max_len: the hypothesis is the prefix, unfinished.
  const auto full = model.beam(src, {.beam_width = 2, .max_len = 3, .target_prefix = {{5, 6, 7}, {}, {}}});
  ASSERT_GE(full[0].size(), 1u);
  EXPECT_EQ(full[0][0].tokens, (std::vector<std::int32_t>{5, 6, 7}));
  std::printf("beam K %zu, B 3, %zu steps: %u dispatches, %u with a target prefix\n", K, T, without.sequence.dispatches,
              with.sequence.dispatches);
}

// Beam search with the rules: K = 1 is greedy with the same rules; with K = 4 every hypothesis
// keeps them (its histories follow it from row to row), and the rules off record nothing.
TEST(DecodeOptions, BeamWithTheRules) {
  TempDir dir;
  TinySpec spec;
  spec.Vt = 40;
  spec.scale = 1.5f;
  const Seq2Seq model = tiny_model(dir, spec);
  const auto src = sources(3, spec.Vs, 9);
  const DecodeResult g = model.greedy(src, {.max_len = 10, .repetition_penalty = 1.4, .no_repeat_ngram_size = 2, .min_length = 3,
                                            .disable_unk = true, .suppress_tokens = {5}});
  const auto b1 = model.beam(src, {.beam_width = 1, .max_len = 10, .repetition_penalty = 1.4, .no_repeat_ngram_size = 2,
                                   .min_length = 3, .disable_unk = true, .suppress_tokens = {5}});
  for (std::size_t b = 0; b < 3; ++b) EXPECT_EQ(b1[b].at(0).tokens, g.row(b)) << "row " << b;
  DecodeStats on, off, neutral;
  const auto b4 = model.beam(src, {.beam_width = 4, .max_len = 10, .return_logits = true, .stats = &on, .no_repeat_ngram_size = 2,
                                   .min_length = 3, .disable_unk = true, .suppress_tokens = {5}});
  std::size_t hyps = 0;
  for (const auto& row : b4) {
    for (const Hypothesis& h : row) {
      ++hyps;
      std::set<std::pair<std::int32_t, std::int32_t>> bigrams;
      for (std::size_t i = 0; i < h.tokens.size(); ++i) {
        EXPECT_NE(h.tokens[i], 3);
        EXPECT_NE(h.tokens[i], 5);
        if (i < 3) {
          EXPECT_NE(h.tokens[i], 2) << "EOS before min_length";
        }
        if (i > 0) {
          EXPECT_TRUE(bigrams.insert({h.tokens[i - 1], h.tokens[i]}).second) << "repeated bigram at " << i;
        }
        // The returned (processed) logits mask what the rules mask.
        EXPECT_TRUE(std::isinf(h.logits[i * 40 + 3]) && std::isinf(h.logits[i * 40 + 5]));
        if (i < 3) {
          EXPECT_TRUE(std::isinf(h.logits[i * 40 + 2]));
        }
        if (i > 1) {
          for (std::size_t j = 1; j < i; ++j) {
            if (h.tokens[j - 1] == h.tokens[i - 1]) {
              EXPECT_TRUE(std::isinf(h.logits[i * 40 + static_cast<std::size_t>(h.tokens[j])])) << "step " << i;
            }
          }
        }
      }
    }
  }
  EXPECT_EQ(hyps, 12u);
  EXPECT_EQ(on.sequence.submissions, 1u);
  model.beam(src, {.beam_width = 4, .max_len = 10, .stats = &off});
  model.beam(src, {.beam_width = 4, .max_len = 10, .stats = &neutral, .repetition_penalty = 1.0});
  EXPECT_EQ(neutral.sequence.dispatches, off.sequence.dispatches);
  EXPECT_EQ(neutral.sequence.barriers, off.sequence.barriers);
  DecodeStats rules;
  model.beam(src, {.beam_width = 4, .max_len = 10, .stats = &rules, .no_repeat_ngram_size = 2, .min_length = 3});
  // One processor dispatch per step; the history's gather (every step after the first) is
  // BeamStep's third where the device binds its buffers, else a dispatch of its own; the
  // output projection apart from BeamStep (the processor reads the logits between them).
  const bool fused = context().device().max_storage_buffers_per_stage >= BeamStep::storage_buffers;
  const bool projection = test::beam_takes_projection(context(), 3, 4);
  EXPECT_EQ(rules.sequence.dispatches, off.sequence.dispatches + 10 + (fused ? 0 : 9) + (projection ? 10 : 0));
  std::printf("beam K 4, B 3, 10 steps: %u dispatches with the rules off, %u with n-gram blocking + min_length\n",
              off.sequence.dispatches, rules.sequence.dispatches);
  // The repetition penalty's seen-token rows are gathered too (K = 1 against greedy).
  const auto p1 = model.beam(src, {.beam_width = 1, .max_len = 10, .repetition_penalty = 3.0});
  const DecodeResult gp = model.greedy(src, {.max_len = 10, .repetition_penalty = 3.0});
  for (std::size_t b = 0; b < 3; ++b) EXPECT_EQ(p1[b].at(0).tokens, gp.row(b)) << "row " << b;
}

// The rules and a prefix at the widest beam (BeamSearch::max_beam): every hypothesis of every
// row keeps them, the search is one submission, and one more than the limit is refused.
TEST(DecodeOptions, BeamAtTheWidthLimitWithTheRules) {
  TempDir dir;
  TinySpec spec;
  spec.Vt = 100;
  spec.scale = 1.5f;
  const Seq2Seq model = tiny_model(dir, spec);
  const auto src = sources(2, spec.Vs, 5);
  const std::size_t K = BeamSearch::max_beam, T = 8, V = spec.Vt;
  DecodeStats stats;
  const auto rows = model.beam(src, {.beam_width = K, .max_len = T, .return_logits = true, .stats = &stats,
                                     .no_repeat_ngram_size = 2, .min_length = 3, .disable_unk = true,
                                     .suppress_tokens = {5}, .target_prefix = {{7}, {}}});
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(stats.sequence.submissions, 1u);
  for (std::size_t b = 0; b < rows.size(); ++b) {
    EXPECT_GE(rows[b].size(), 1u);
    EXPECT_LE(rows[b].size(), K);
    for (const Hypothesis& h : rows[b]) {
      ASSERT_FALSE(h.tokens.empty());
      if (b == 0) {
        EXPECT_EQ(h.tokens[0], 7) << "the prefix";
      }
      std::set<std::pair<std::int32_t, std::int32_t>> bigrams;
      for (std::size_t i = 0; i < h.tokens.size(); ++i) {
        ASSERT_GE(h.tokens[i], 0);
        ASSERT_LT(static_cast<std::size_t>(h.tokens[i]), V);
        EXPECT_NE(h.tokens[i], 3) << "unk";
        EXPECT_NE(h.tokens[i], 5) << "suppressed";
        if (i < 3) {
          EXPECT_NE(h.tokens[i], 2) << "EOS before min_length";
        }
        if (i > 0) {
          EXPECT_TRUE(bigrams.insert({h.tokens[i - 1], h.tokens[i]}).second) << "repeated bigram at " << i;
        }
      }
    }
    for (std::size_t i = 1; i < rows[b].size(); ++i) {
      EXPECT_GE(rows[b][i - 1].norm_score, rows[b][i].norm_score);
    }
  }
  expect_error([&] { model.beam(src, {.beam_width = K + 1, .max_len = T}); }, ErrorCode::invalid_argument,
               {"beam_width = 64 is outside [1, 63]"});
}

// W3's shapes (workloads.md: vocab 8000, H = 256, S = 32, 32 steps without early stop): the
// options off record exactly plain greedy's dispatches, barriers and submissions; on, one
// processor dispatch per step (and the projection the argmax no longer takes in).
TEST(DecodeOptions, W3ShapesCountsOffAndOn) {
  TempDir dir;
  TinySpec spec;
  spec.Vs = spec.Vt = 8000;
  spec.E = spec.He = spec.Hd = spec.A = 256;
  spec.max_len = 32;
  spec.scale = 0.06f;
  const Seq2Seq model = tiny_model(dir, spec);
  for (const std::size_t B : {1u, 16u}) {
    const auto src = test::random_token_rows(std::vector<std::size_t>(B, 32), 3, spec.Vs, 11);
    const DecodeOptions base{.max_len = 32, .stop_at_eos = false};
    DecodeOptions neutral = base, rules = base, sampling = base;
    neutral.repetition_penalty = 1.0, neutral.sampling_temperature = 0.7;
    rules.repetition_penalty = 1.2, rules.no_repeat_ngram_size = 3, rules.min_length = 5, rules.disable_unk = true;
    sampling.sampling_topk = 40, sampling.sampling_topp = 0.9, sampling.seed = 1;
    const DecodeResult p = model.greedy(src, base), n = model.greedy(src, neutral), r = model.greedy(src, rules),
                       s = model.greedy(src, sampling);
    EXPECT_EQ(n.stats.dispatches, p.stats.dispatches);
    EXPECT_EQ(n.stats.barriers, p.stats.barriers);
    EXPECT_EQ(n.stats.copies, p.stats.copies);
    EXPECT_EQ(n.stats.submissions, 1u);
    EXPECT_EQ(n.tokens, p.tokens);
    const std::uint32_t extra = test::greedy_takes_projection(test::context(), B) ? 2 : 1;  // as OffCostsNothing
    EXPECT_EQ(r.stats.dispatches, p.stats.dispatches + 32 * extra);
    EXPECT_EQ(s.stats.dispatches, p.stats.dispatches + 32 * extra);
    EXPECT_EQ(r.stats.submissions, 1u);
    EXPECT_EQ(s.stats.submissions, 1u);
    std::printf("W3 shapes B %zu: dispatches / barriers / copies / submissions: off %u / %u / %u / %u, neutral options %u / %u / %u / %u, "
                "penalty + 3-gram + min_length + disable_unk %u / %u / %u / %u, top-k 40 + top-p 0.9 sampling %u / %u / %u / %u\n",
                B, p.stats.dispatches, p.stats.barriers, p.stats.copies, p.stats.submissions, n.stats.dispatches, n.stats.barriers,
                n.stats.copies, n.stats.submissions, r.stats.dispatches, r.stats.barriers, r.stats.copies, r.stats.submissions,
                s.stats.dispatches, s.stats.barriers, s.stats.copies, s.stats.submissions);
  }
}

// Batching by length: any max_batch_size gives the same texts in input order as one batch
// (greedy rows do not depend on their batch), and prefixes follow their texts.
TEST(DecodeOptions, TranslateInBatchesKeepsInputOrder) {
  TempDir dir;
  TinySpec spec;
  spec.eos_bias = 0.5f;
  const Seq2Seq model = tiny_model(dir, spec);
  const std::vector<std::string> texts = {"ab", "babaéa", "é", "abab", "b", "ééé", "aaaaaaa"};
  const auto one = model.translate(texts);
  std::vector<std::string> each;
  for (const auto& t : texts) each.push_back(model.translate({t}).at(0));
  EXPECT_EQ(one, each);
  for (const std::size_t n : {1u, 2u, 3u, 7u, 100u}) EXPECT_EQ(model.translate(texts, {}, n), one) << "max_batch_size " << n;
  std::vector<std::vector<std::int32_t>> prefixes(texts.size());
  prefixes[1] = {4, 5, 4};
  prefixes[4] = {5};
  const auto pre = model.translate(texts, {.target_prefix = prefixes}, 2);
  EXPECT_EQ(pre[1].substr(0, 3), "xyx");
  EXPECT_EQ(pre[4].substr(0, 1), "y");
  EXPECT_EQ(pre[0], one[0]);
  expect_error([&] { model.translate(texts, {.target_prefix = {{4}}}, 2); }, ErrorCode::invalid_argument, {"1 target prefixes", "7 texts"});
  expect_error([&] { model.translate({}, {}, 2); }, ErrorCode::invalid_argument, {"no sources"});
  // By token count (alone, and with max_batch_size): the same texts; 1 token puts every text in
  // a batch of its own, a budget under the longest text leaves it alone in its batch.
  for (const std::size_t tokens : {1u, 5u, 8u, 12u, 16u, 1000u}) {
    EXPECT_EQ(model.translate(texts, {}, 0, tokens), one) << "max_batch_tokens " << tokens;
    EXPECT_EQ(model.translate(texts, {}, 2, tokens), one) << "max_batch_size 2, max_batch_tokens " << tokens;
  }
  const auto pre_tokens = model.translate(texts, {.target_prefix = prefixes}, 0, 8);
  EXPECT_EQ(pre_tokens, pre);
}

// translate()'s batches: sorted by length when a limit splits them, each within both limits
// (size x longest <= max_batch_tokens unless the text alone exceeds it), every text once.
TEST(DecodeOptions, TranslateBatchesByTokenCount) {
  using model_detail::text_batches;
  using Batches = std::vector<std::vector<std::size_t>>;
  const std::vector<std::size_t> lengths = {3, 8, 2, 5, 2, 4, 9};
  // No limit, or limits that hold the whole input: one batch in input order (0: off).
  EXPECT_EQ(text_batches(lengths, 0, 0), (Batches{{0, 1, 2, 3, 4, 5, 6}}));
  EXPECT_EQ(text_batches(lengths, 7, 63), (Batches{{0, 1, 2, 3, 4, 5, 6}}));
  EXPECT_EQ(text_batches({}, 2, 2), Batches{});
  // By tokens: sorted 9, 8, 5, 4, 3, 2, 2 (ties in input order).
  EXPECT_EQ(text_batches(lengths, 0, 62), (Batches{{6, 1, 3, 5, 0, 2}, {4}}));
  EXPECT_EQ(text_batches(lengths, 0, 16), (Batches{{6}, {1, 3}, {5, 0, 2, 4}}));
  EXPECT_EQ(text_batches(lengths, 0, 10), (Batches{{6}, {1}, {3, 5}, {0, 2, 4}}));
  // Texts longer than the budget: a batch each.
  EXPECT_EQ(text_batches(lengths, 0, 4), (Batches{{6}, {1}, {3}, {5}, {0}, {2, 4}}));
  EXPECT_EQ(text_batches(lengths, 0, 1), (Batches{{6}, {1}, {3}, {5}, {0}, {2}, {4}}));
  // Both limits: whichever cuts first.
  EXPECT_EQ(text_batches(lengths, 3, 16), (Batches{{6}, {1, 3}, {5, 0, 2}, {4}}));
  EXPECT_EQ(text_batches(lengths, 2, 0), (Batches{{6, 1}, {3, 5}, {0, 2}, {4}}));
  // Every text exactly once, every batch within the limits, over a grid.
  const std::vector<std::size_t> many = {1, 17, 4, 4, 9, 1, 30, 2, 8, 8, 5, 12, 3};
  for (const std::size_t size : {0u, 1u, 2u, 5u, 13u}) {
    for (const std::size_t tokens : {0u, 1u, 7u, 16u, 29u, 60u, 1000u}) {
      std::vector<int> seen(many.size(), 0);
      const auto batches = text_batches(many, size, tokens);
      for (const auto& batch : batches) {
        ASSERT_FALSE(batch.empty());
        std::size_t longest = 0;
        for (const std::size_t i : batch) {
          ++seen.at(i);
          longest = std::max(longest, many[i]);
        }
        if (batches.size() > 1) {
          EXPECT_EQ(many[batch.front()], longest);  // sorted
        }
        if (size > 0) {
          EXPECT_LE(batch.size(), size);
        }
        if (tokens > 0 && batch.size() > 1) {
          EXPECT_LE(batch.size() * longest, tokens) << "size " << size << " tokens " << tokens;
        }
      }
      EXPECT_EQ(seen, std::vector<int>(many.size(), 1)) << "size " << size << " tokens " << tokens;
    }
  }
}

// Beam's per-token scores: the log-softmax of each token under its step's logits, summing to
// the hypothesis score; asked for, they cost copies only.
TEST(DecodeOptions, BeamTokenScores) {
  TempDir dir;
  TinySpec spec;
  spec.Vt = 9;
  spec.eos_bias = 0.8f;
  const Seq2Seq model = tiny_model(dir, spec);
  const auto src = sources(3, spec.Vs, 12);
  DecodeStats with, without;
  const auto hyps = model.beam(src, {.beam_width = 3, .max_len = 8, .return_logits = true, .stats = &with, .return_token_scores = true,
                                     .repetition_penalty = 1.3});
  const auto plain = model.beam(src, {.beam_width = 3, .max_len = 8, .return_logits = true, .stats = &without, .repetition_penalty = 1.3});
  EXPECT_EQ(with.sequence.dispatches, without.sequence.dispatches);
  EXPECT_EQ(with.sequence.submissions, 1u);
  for (std::size_t b = 0; b < 3; ++b) {
    ASSERT_EQ(hyps[b].size(), plain[b].size());
    for (std::size_t k = 0; k < hyps[b].size(); ++k) {
      const Hypothesis& h = hyps[b][k];
      EXPECT_EQ(h.tokens, plain[b][k].tokens);
      EXPECT_TRUE(plain[b][k].token_scores.empty());
      ASSERT_EQ(h.token_scores.size(), h.tokens.size());
      double sum = 0.0;
      for (std::size_t i = 0; i < h.tokens.size(); ++i) {
        std::vector<double> x(h.logits.begin() + static_cast<std::ptrdiff_t>(i * 9), h.logits.begin() + static_cast<std::ptrdiff_t>((i + 1) * 9));
        EXPECT_NEAR(h.token_scores[i], log_softmax_at(x, static_cast<std::size_t>(h.tokens[i])), 1e-4) << "row " << b << " hyp " << k << " token " << i;
        sum += h.token_scores[i];
      }
      EXPECT_NEAR(sum, h.score, 1e-4);
    }
  }
}

// The coverage penalty against the host formula on the returned attention (every hypothesis,
// ranked by it); patience: more finished hypotheses before a row stops, the K best returned,
// and patience 1 is the plain search.
TEST(DecodeOptions, BeamPatienceAndCoveragePenalty) {
  TempDir dir;
  TinySpec spec;
  spec.Vt = 12;
  spec.eos_bias = 1.5f;  // short hypotheses over long sources: coverage below 1
  const Seq2Seq model = tiny_model(dir, spec);
  const auto src = test::random_token_rows({7, 6, 7, 3}, 3, spec.Vs, 21);
  const double alpha = 0.6, beta = 0.7;
  const auto plain = model.beam(src, {.beam_width = 3, .length_alpha = alpha, .max_len = 9});
  const auto same = model.beam(src, {.beam_width = 3, .length_alpha = alpha, .max_len = 9, .patience = 1.0});
  DecodeStats one, three;
  const auto cov = model.beam(src, {.beam_width = 3, .length_alpha = alpha, .max_len = 9, .return_attention = true, .stats = &one,
                                    .coverage_penalty = beta});
  std::size_t penalised = 0;
  for (std::size_t b = 0; b < src.size(); ++b) {
    ASSERT_EQ(same[b].size(), plain[b].size());
    for (std::size_t k = 0; k < plain[b].size(); ++k) EXPECT_EQ(same[b][k].tokens, plain[b][k].tokens);
    const std::size_t S = cov[b].at(0).attention.size() / cov[b].at(0).tokens.size();
    for (std::size_t k = 0; k < cov[b].size(); ++k) {
      const Hypothesis& h = cov[b][k];
      std::vector<double> c(S, 0.0);
      for (std::size_t t = 0; t < h.tokens.size(); ++t)
        for (std::size_t j = 0; j < S; ++j) c[j] += h.attention[t * S + j];
      double pen = 0.0;
      for (double cj : c)
        if (cj > 0.0) pen += std::log(std::min(cj, 1.0));
      penalised += pen < -1e-3;
      EXPECT_NEAR(h.norm_score, h.score / std::pow(double(h.tokens.size()), alpha) + beta * pen, 1e-5) << "row " << b << " hyp " << k;
      if (k > 0) {
        EXPECT_GE(cov[b][k - 1].norm_score, h.norm_score);
      }
    }
  }
  EXPECT_GT(penalised, 0u);
  // Patience 2: rows stop after 6 finished hypotheses (so they run at least as long), 3 returned.
  const auto patient = model.beam(src, {.beam_width = 3, .length_alpha = alpha, .max_len = 9, .stats = &three, .patience = 2.0});
  for (std::size_t b = 0; b < src.size(); ++b) {
    EXPECT_LE(patient[b].size(), 3u);
    EXPECT_GE(patient[b].at(0).norm_score, plain[b].at(0).norm_score - 1e-6) << "row " << b;
  }
  EXPECT_GE(three.steps_run, one.steps_run);
  std::printf("beam K 3, B 4, 9 steps: %zu steps run with patience 1, %zu with patience 2\n", one.steps_run, three.steps_run);
  const auto small = model.beam(src, {.beam_width = 3, .length_alpha = alpha, .max_len = 9, .patience = 0.1});  // stop after 1
  for (const auto& row : small) EXPECT_GE(row.size(), 1u);
  expect_error([&] { model.beam(src, {.beam_width = 3, .patience = 0.0}); }, ErrorCode::invalid_argument, {"patience = 0"});
  expect_error([&] { model.beam(src, {.beam_width = 3, .patience = 1e9}); }, ErrorCode::invalid_argument, {"patience", "beyond"});
  expect_error([&] { model.beam(src, {.beam_width = 3, .coverage_penalty = std::nan("")}); }, ErrorCode::invalid_argument,
               {"coverage_penalty"});
}

// Streaming: the callback sees every step in order, with the tokens, scores and finished flags
// of the one-submission decode (greedy, fixed length, sampling; pieces of 1, 3 and all steps),
// the returned result equals greedy()'s, and returning false ends the decode there.
TEST(DecodeOptions, StreamingCallback) {
  TempDir dir;
  TinySpec spec;
  spec.Vt = 20;
  spec.eos_bias = 0.4f;
  const Seq2Seq model = tiny_model(dir, spec);
  const auto src = sources(5, spec.Vs, 31);
  const DecodeOptions cases[] = {
      {.max_len = 12, .return_logits = true},
      {.max_len = 7, .stop_at_eos = false, .return_attention = true},
      {.max_len = 12, .sampling_topk = 0, .sampling_temperature = 1.3, .seed = 5},
  };
  for (const DecodeOptions& base : cases) {
    const DecodeResult whole = model.greedy(src, base);
    for (const std::size_t piece : {1u, 3u, 100u}) {
      SCOPED_TRACE(fmt::format("max_len {} stop_at_eos {} sampling {} piece {}", base.max_len, base.stop_at_eos, base.sampling_topk != 1, piece));
      std::vector<StepResult> seen;
      DecodeOptions o = base;
      o.stream_steps = piece;
      o.on_step = [&](const StepResult& s) {
        seen.push_back(s);
        return true;
      };
      const DecodeResult r = model.greedy(src, o);
      test::expect_same_decode(r, whole);
      ASSERT_EQ(seen.size(), whole.steps);
      std::vector<std::uint8_t> done(src.size(), 0);
      for (std::size_t t = 0; t < seen.size(); ++t) {
        EXPECT_EQ(seen[t].step, t);
        for (std::size_t b = 0; b < src.size(); ++b) {
          EXPECT_EQ(seen[t].tokens[b], whole.tokens[b * whole.steps + t]) << "step " << t << " row " << b;
          EXPECT_EQ(seen[t].scores[b], whole.scores[b * whole.steps + t]) << "step " << t << " row " << b;
          if (base.stop_at_eos && t + 1 == static_cast<std::size_t>(whole.lengths[b]) && whole.tokens[b * whole.steps + t] == 2) done[b] = 1;
          EXPECT_EQ(seen[t].finished[b], done[b]) << "step " << t << " row " << b;
        }
      }
      EXPECT_EQ(seen.back().all_finished, base.stop_at_eos && whole.steps < base.max_len);
      // One submission per piece (at most the steps' pieces), and one for the results.
      const std::size_t pieces = (base.max_len + piece - 1) / piece;
      EXPECT_GE(r.stats.submissions, (seen.size() + piece - 1) / piece + 1);
      EXPECT_LE(r.stats.submissions, pieces + 1);
    }
  }
  // Stopping after step 2: three steps, the first three of the whole decode.
  const DecodeOptions fixed{.max_len = 9, .stop_at_eos = false};
  const DecodeResult whole = model.greedy(src, fixed);
  DecodeOptions o = fixed;
  std::size_t calls = 0;
  o.on_step = [&](const StepResult& s) {
    ++calls;
    return s.step < 2;
  };
  const DecodeResult r = model.greedy(src, o);
  EXPECT_EQ(calls, 3u);
  ASSERT_EQ(r.steps, 3u);
  for (std::size_t b = 0; b < src.size(); ++b) {
    EXPECT_EQ(r.row(b), std::vector<std::int32_t>(whole.tokens.begin() + static_cast<std::ptrdiff_t>(b * 9),
                                                  whole.tokens.begin() + static_cast<std::ptrdiff_t>(b * 9 + 3)));
  }
  // An exception from the callback leaves through greedy() once the GPU work is done.
  o.on_step = [](const StepResult&) -> bool { throw Error(ErrorCode::state, "from the callback"); };
  expect_error([&] { model.greedy(src, o); }, ErrorCode::state, {"from the callback"});
}

TEST(DecodeOptions, Errors) {
  TempDir dir;
  const Seq2Seq model = tiny_model(dir, TinySpec{});
  const auto src = sources(2, 7, 1);
  expect_error([&] { model.greedy(src, {.max_len = 3, .target_prefix = {{4, 4, 4, 4}, {}}}); }, ErrorCode::out_of_range,
               {"target prefix of row 0", "4 tokens", "max_len = 3"});
  expect_error([&] { model.greedy(src, {.target_prefix = {{4}}}); }, ErrorCode::invalid_argument, {"1 target prefixes", "2 source rows"});
  expect_error([&] { model.greedy(src, {.target_prefix = {{4}, {6}}}); }, ErrorCode::invalid_argument, {"target prefix", "6"});
  expect_error([&] { model.beam(src, {.max_len = 3, .target_prefix = {{4, 4, 4, 4}, {}}}); }, ErrorCode::out_of_range,
               {"target prefix of row 0", "4 tokens", "max_len = 3"});
  expect_error([&] { model.beam(src, {.target_prefix = {{4}}}); }, ErrorCode::invalid_argument, {"1 target prefixes", "2 source rows"});
  expect_error([&] { model.beam(src, {.target_prefix = {{4}, {6}}}); }, ErrorCode::invalid_argument, {"target prefix", "6"});
  expect_error([&] { model.greedy(src, {.suppress_tokens = {6}}); }, ErrorCode::invalid_argument, {"suppressed[0] = 6"});
  expect_error([&] { model.greedy(src, {.sampling_topk = 0, .sampling_topp = 1.5}); }, ErrorCode::invalid_argument, {"top_p = 1.5"});
  expect_error([&] { model.greedy(src, {.sampling_topk = 0, .sampling_temperature = -1.0}); }, ErrorCode::invalid_argument, {"temperature"});
  expect_error([&] { model.greedy(src, {.repetition_penalty = 0.0}); }, ErrorCode::invalid_argument, {"repetition_penalty"});
}

}  // namespace
}  // namespace vkrnn
