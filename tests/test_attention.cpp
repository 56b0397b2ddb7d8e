// Decoder-side attention (scores, masked tiled softmax, context, fused flash-decoding step, key
// projection) against double-precision CPU references.
//
// Tolerances
//  fp32: weights and context within 1e-5 relative + 1e-6 absolute of the double reference.
//        Raw scores: 1e-5 relative + 1e-6 * max(1, sum_j |term_j|) absolute, since an fp32 dot
//        product's rounding error scales with the magnitude of its terms, not of its result.
//        The test data keeps sum_j |term_j| = O(1..10) (realistic, Xavier-like scaling), so
//        score errors stay ~1e-7..1e-6, well inside what the 1e-5 weight tolerance absorbs.
//  fp16 storage (keys, values, weights as float16, fp32 arithmetic):
//   (a) against the reference computed on the fp16-rounded inputs: weights are float16, so
//       each is off by at most half an ulp of binary16 (2^-11 relative; 2^-25 absolute for
//       subnormals) on top of the fp32 tolerance: rel 2^-11 + 1e-5, abs 1e-6. The fused
//       context is accumulated from fp32 weights: fp32 tolerance. The unfused context reads
//       the float16 weights: |err_j| <= 2^-11 * sum_s |w_s v_sj| + fp32 tolerance.
//   (b) against the reference on the unrounded fp32 inputs: rounding keys/queries-side inputs
//       moves each score by at most delta = 2^-11 * sum_j |term_j| (first order; tanh is
//       1-Lipschitz, |d tanh| <= |dK|), which moves each softmax weight by a relative
//       2 * delta at most (d log w_s = de_s - sum_t w_t de_t); rounding the values moves
//       context terms by 2^-11 |w v|. Bound used, with a 1.5x margin for the second-order terms:
//         |w - w_ref|  <= 1.5 * (2 delta_max + 2^-11) * w_ref + 1e-6
//         |c - c_ref|_j <= 1.5 * (2 delta_max + 2 * 2^-11) * sum_s |w_s v_sj| + 1e-6
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <string>
#include <tuple>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <gtest/gtest.h>

#include "common/app_device.hpp"
#include "common/test_env.hpp"
#include "expect_error.hpp"
#include "vk/loader.hpp"
#include "vkrnn/attention.hpp"
#include "vkrnn/linear.hpp"

namespace vkrnn {
namespace {

using test::all_close;
using test::context;
using test::kAllLimits;
using test::limited_context;
using test::Limits;
using test::expect_error;
using test::random_floats;

constexpr double kNegInf = -std::numeric_limits<double>::infinity();
constexpr double kHalfUlp = 1.0 / 2048.0;  // 2^-11: binary16 round-to-nearest, relative

// ---------------------------------------------------------------------------------------------
// Problems and host data

struct Problem {
  Score score = Score::dot;
  std::size_t batch = 1, S = 1, hidden = 1, key_dim = 0, query_dim = 0, heads = 1;
  std::vector<std::int32_t> lengths;  // empty: all S
  bool fp16 = false;
  ScoreSplit split = ScoreSplit::automatic;
  std::uint32_t seed = 1;

  AttentionConfig config() const {
    AttentionConfig c;
    c.score = score;
    c.batch = batch;
    c.max_source = S;
    c.hidden = hidden;
    c.key_dim = key_dim;
    c.query_dim = query_dim;
    c.heads = heads;
    c.score_split = split;
    return c;
  }
  std::size_t Hk() const { return key_dim ? key_dim : hidden; }
  std::size_t Hq() const { return query_dim ? query_dim : Hk(); }
  // Keys are the values (encoder outputs) for every form except additive.
  bool same_kv() const { return score != Score::additive; }
  std::string describe() const {
    return fmt::format("score={} B={} S={} H={} Hk={} Hq={} heads={} fp16={} split={} lengths=[{}]",
                       to_string(score), batch, S, hidden, Hk(), Hq(), heads, fp16, int(split),
                       lengths.size() <= 16 ? fmt::format("{}", fmt::join(lengths, ",")) : "...");
  }
};

float round_half(float x) { return half_to_float(float_to_half(x)); }

struct Data {
  std::vector<float> keys, values, query, w, bias, v;
  std::vector<std::int32_t> lengths;
};

// Lengths: the given ones, else ragged ones that include 0 and S when the batch allows.
std::vector<std::int32_t> make_lengths(const Problem& p) {
  if (!p.lengths.empty()) return p.lengths;
  std::vector<std::int32_t> len(p.batch);
  std::mt19937 rng(p.seed * 7919u + 13u);
  for (std::size_t b = 0; b < p.batch; ++b) {
    if (b == 0) {
      len[b] = std::int32_t(p.S);
    } else if (b == 1) {
      len[b] = 0;
    } else if (b == 2) {
      len[b] = std::int32_t(std::max<std::size_t>(1, p.S / 2 + 1));
    } else {
      len[b] = std::int32_t(rng() % (p.S + 1));
    }
  }
  return len;
}

// Inputs scaled so that scores are O(1) (sum_j |term_j| = O(1..10)): keys/values U(-1, 1),
// queries U(-1, 1) * 3 / sqrt(width), W as below, v U(-1, 1) * 2 / sqrt(A).
Data make_data(const Problem& p) {
  Data d;
  const std::size_t B = p.batch, S = p.S, H = p.hidden, Hk = p.Hk(), Hq = p.Hq();
  const std::size_t dk = Hk / p.heads;
  d.values = random_floats(B * S * H, p.seed, -1.0f, 1.0f);
  if (p.same_kv()) {
    d.keys = d.values;
  } else {
    d.keys = random_floats(B * S * Hk, p.seed + 1, -1.0f, 1.0f);
  }
  const float qs = 3.0f / std::sqrt(float(p.score == Score::dot || p.score == Score::scaled_dot ? dk : Hq));
  d.query = random_floats(B * Hq, p.seed + 2, -qs, qs);
  if (p.score == Score::general || p.score == Score::additive) {
    // std(W q) = ws / sqrt(3) * sqrt(Hq) * std(q) = ws: general gets the dot query's scale
    // (sqrt(3 / dk)); additive an O(0.5) offset inside tanh.
    const float ws = p.score == Score::general ? std::sqrt(3.0f / float(Hk)) : 0.5f;
    d.w = random_floats(Hk * Hq, p.seed + 3, -ws, ws);
  }
  if (p.score == Score::additive) {
    d.bias = random_floats(Hk, p.seed + 4, -0.5f, 0.5f);
    const float vs = 2.0f / std::sqrt(float(Hk));
    d.v = random_floats(Hk, p.seed + 5, -vs, vs);
  }
  d.lengths = make_lengths(p);
  if (p.fp16) {  // the GPU sees these rounded: round on the host too
    for (auto& x : d.keys) x = round_half(x);
    for (auto& x : d.values) x = round_half(x);
  }
  return d;
}

// ---------------------------------------------------------------------------------------------
// Double-precision reference

struct Reference {
  std::vector<double> scores;     // [rows, S], -inf at masked positions
  std::vector<double> magnitude;  // [rows, S], sum_j |term_j| of each score
  std::vector<double> weights;    // [rows, S]
  std::vector<double> context;    // [B, H]
  std::vector<double> abs_context;  // [B, H], sum_s |w_s v_sj|
};

Reference reference(const Problem& p, const Data& d) {
  const std::size_t B = p.batch, S = p.S, H = p.hidden, Hk = p.Hk(), Hq = p.Hq(), heads = p.heads;
  const std::size_t dk = Hk / heads, dv = H / heads, rows = B * heads;
  Reference r;
  r.scores.assign(rows * S, kNegInf);
  r.magnitude.assign(rows * S, 0.0);
  r.weights.assign(rows * S, 0.0);
  r.context.assign(B * H, 0.0);
  r.abs_context.assign(B * H, 0.0);
  const double scale = p.score == Score::scaled_dot ? 1.0 / std::sqrt(double(dk)) : 1.0;
  for (std::size_t b = 0; b < B; ++b) {
    // projected query
    std::vector<double> q(Hk);
    for (std::size_t a = 0; a < Hk; ++a) {
      if (p.score == Score::general || p.score == Score::additive) {
        double s = p.score == Score::additive ? double(d.bias[a]) : 0.0;
        for (std::size_t k = 0; k < Hq; ++k) s += double(d.w[a * Hq + k]) * double(d.query[b * Hq + k]);
        q[a] = s;
      } else {
        q[a] = d.query[b * Hq + a];
      }
    }
    const std::size_t len = std::size_t(std::clamp<std::int32_t>(d.lengths[b], 0, std::int32_t(S)));
    for (std::size_t h = 0; h < heads; ++h) {
      const std::size_t row = b * heads + h;
      double mx = kNegInf;
      for (std::size_t s = 0; s < len; ++s) {
        const float* k = &d.keys[(b * S + s) * Hk + h * dk];
        double e = 0.0, mag = 0.0;
        for (std::size_t j = 0; j < dk; ++j) {
          double term;
          if (p.score == Score::additive) {
            term = double(d.v[j]) * std::tanh(double(k[j]) + q[j]);
          } else {
            term = double(k[j]) * q[h * dk + j] * scale;
          }
          e += term;
          mag += std::abs(term);
        }
        r.scores[row * S + s] = e;
        r.magnitude[row * S + s] = mag;
        mx = std::max(mx, e);
      }
      double sum = 0.0;
      for (std::size_t s = 0; s < len; ++s) sum += std::exp(r.scores[row * S + s] - mx);
      for (std::size_t s = 0; s < len; ++s) {
        const double w = std::exp(r.scores[row * S + s] - mx) / sum;
        r.weights[row * S + s] = w;
        for (std::size_t j = 0; j < dv; ++j) {
          const double v = d.values[(b * S + s) * H + h * dv + j];
          r.context[b * H + h * dv + j] += w * v;
          r.abs_context[b * H + h * dv + j] += std::abs(w * v);
        }
      }
    }
  }
  return r;
}

// ---------------------------------------------------------------------------------------------
// GPU runs

Tensor upload_storage(Context& ctx, const Shape& shape, const std::vector<float>& x, bool fp16,
                      const char* name) {
  Tensor t = ctx.tensor(shape, fp16 ? DType::f16 : DType::f32, name);
  if (fp16) {
    std::vector<std::uint16_t> h(x.size());
    std::transform(x.begin(), x.end(), h.begin(), float_to_half);
    ctx.write(t, h);
  } else {
    ctx.write(t, x);
  }
  return t;
}

std::vector<float> read_storage(const Sequence& seq, const Tensor& t) {
  if (t.dtype() == DType::f16) {
    const auto h = seq.read<std::uint16_t>(t);
    std::vector<float> f(h.size());
    std::transform(h.begin(), h.end(), f.begin(), half_to_float);
    return f;
  }
  return seq.read<float>(t);
}

struct Inputs {
  Tensor keys, values, query, lengths;
  ScoreParams params;
};

Inputs upload(Context& ctx, const Problem& p, const Data& d) {
  Inputs in;
  const std::size_t B = p.batch, S = p.S;
  in.values = upload_storage(ctx, {B, S, p.hidden}, d.values, p.fp16, "values");
  in.keys = p.same_kv() ? in.values : upload_storage(ctx, {B, S, p.Hk()}, d.keys, p.fp16, "keys");
  in.query = ctx.tensor({B, p.Hq()}, d.query, "query");
  in.lengths = ctx.tensor({B}, DType::i32, "lengths");
  if (!d.w.empty()) in.params.w = ctx.tensor({p.Hk(), p.Hq()}, d.w, "w");
  if (!d.bias.empty()) in.params.bias = ctx.tensor({p.Hk()}, d.bias, "bias");
  if (!d.v.empty()) in.params.v = ctx.tensor({p.Hk()}, d.v, "v");
  return in;
}

struct Outputs {
  std::vector<float> scores, weights, context;
  std::uint32_t dispatches = 0;
};

Outputs run_unfused(Context& ctx, const Problem& p, const Data& d, const Inputs& in,
                    const OpOptions& opt) {
  const AttentionConfig cfg = p.config();
  AttentionScores scores_op(ctx, cfg, opt);
  MaskedSoftmax softmax_op(ctx, cfg, opt);
  AttentionContext context_op(ctx, cfg, opt);
  const Shape sshape = attention_scores_shape(cfg);
  Tensor scores = ctx.tensor(sshape, DType::f32, "scores");
  Tensor weights = ctx.tensor(sshape, p.fp16 ? DType::f16 : DType::f32, "weights");
  Tensor out = ctx.tensor({p.batch, p.hidden}, DType::f32, "context");
  Sequence seq = ctx.sequence();
  upload_lengths(seq, in.lengths, d.lengths, cfg);
  scores_op.record(seq, in.keys, in.query, in.lengths, scores, in.params);
  softmax_op.record(seq, scores, in.lengths, weights);
  context_op.record(seq, weights, in.values, in.lengths, out);
  seq.download(scores).download(weights).download(out);
  seq.eval();
  Outputs o;
  o.scores = seq.read<float>(scores);
  o.weights = read_storage(seq, weights);
  o.context = seq.read<float>(out);
  o.dispatches = seq.stats().dispatches;
  EXPECT_EQ(o.dispatches, scores_op.dispatches() + softmax_op.dispatches() + context_op.dispatches());
  return o;
}

Outputs run_fused(Context& ctx, const Problem& p, const Data& d, const Inputs& in,
                  const OpOptions& opt, bool want_weights = true) {
  const AttentionConfig cfg = p.config();
  FusedAttention op(ctx, cfg, opt);
  Tensor weights;
  if (want_weights) {
    weights = ctx.tensor(attention_scores_shape(cfg), p.fp16 ? DType::f16 : DType::f32, "weights");
  }
  Tensor out = ctx.tensor({p.batch, p.hidden}, DType::f32, "context");
  Sequence seq = ctx.sequence();
  upload_lengths(seq, in.lengths, d.lengths, cfg);
  op.record(seq, in.keys, in.values, in.query, in.lengths, out, in.params, weights);
  if (want_weights) seq.download(weights);
  seq.download(out);
  seq.eval();
  Outputs o;
  if (want_weights) o.weights = read_storage(seq, weights);
  o.context = seq.read<float>(out);
  o.dispatches = seq.stats().dispatches;
  EXPECT_EQ(o.dispatches, op.dispatches());
  return o;
}

// ---------------------------------------------------------------------------------------------
// Checks

::testing::AssertionResult scores_close(const Problem& p, const std::vector<float>& got,
                                        const Reference& r) {
  std::size_t bad = 0;
  std::string report;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double e = r.scores[i];
    bool ok;
    if (std::isinf(e)) {
      ok = std::isinf(got[i]) && got[i] < 0;
    } else {
      ok = std::isfinite(got[i]) &&
           std::abs(got[i] - e) <= 1e-5 * std::abs(e) + 1e-6 * std::max(1.0, r.magnitude[i]);
    }
    if (!ok && bad++ < 6) report += fmt::format("\n  [{}] got {:.9g} expected {:.9g}", i, got[i], e);
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << bad << " scores out of tolerance (" << p.describe() << ")"
                                       << report;
}

// Every non-empty row of weights sums to 1 (in double) within `tol`; empty rows are all 0.
::testing::AssertionResult rows_sum_to_one(const Problem& p, const Data& d,
                                           const std::vector<float>& w, double tol) {
  const std::size_t S = p.S;
  for (std::size_t row = 0; row < p.batch * p.heads; ++row) {
    const std::int32_t len = d.lengths[row / p.heads];
    double sum = 0.0;
    for (std::size_t s = 0; s < S; ++s) sum += w[row * S + s];
    const double want = len > 0 ? 1.0 : 0.0;
    if (!(std::abs(sum - want) <= tol)) {
      return ::testing::AssertionFailure()
             << "row " << row << " (length " << len << ") weights sum to " << fmt::format("{:.12g}", sum)
             << ", expected " << want << " within " << tol << " (" << p.describe() << ")";
    }
  }
  return ::testing::AssertionSuccess();
}

// Elementwise |got - want| <= tol_i.
::testing::AssertionResult within(const std::vector<float>& got, const std::vector<double>& want,
                                  const std::vector<double>& tol, const std::string& what) {
  std::size_t bad = 0;
  std::string report;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double err = std::abs(double(got[i]) - want[i]);
    if (!std::isfinite(got[i]) || !(err <= tol[i])) {
      if (bad++ < 6) report += fmt::format("\n  [{}] got {:.9g} expected {:.9g} (err {:.3g}, tol {:.3g})",
                                           i, got[i], want[i], err, tol[i]);
    }
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << bad << " of " << got.size() << " " << what
                                       << " out of tolerance" << report;
}

// fp32 check of everything the fused and unfused pipelines produce.
void check_fp32(const Problem& p, const Data& d, const Reference& r, const Outputs& unfused,
                const Outputs& fused) {
  SCOPED_TRACE(p.describe());
  EXPECT_TRUE(scores_close(p, unfused.scores, r));
  EXPECT_TRUE(all_close(unfused.weights, r.weights, 1e-5, 1e-6)) << "unfused weights";
  EXPECT_TRUE(all_close(unfused.context, r.context, 1e-5, 1e-6)) << "unfused context";
  EXPECT_TRUE(all_close(fused.weights, r.weights, 1e-5, 1e-6)) << "fused weights";
  EXPECT_TRUE(all_close(fused.context, r.context, 1e-5, 1e-6)) << "fused context";
  EXPECT_TRUE(rows_sum_to_one(p, d, unfused.weights, 1e-6));
  EXPECT_TRUE(rows_sum_to_one(p, d, fused.weights, 1e-6));
  // The two pipelines agree with each other.
  std::vector<double> fw(fused.weights.begin(), fused.weights.end());
  std::vector<double> fc(fused.context.begin(), fused.context.end());
  EXPECT_TRUE(all_close(unfused.weights, fw, 1e-5, 1e-6)) << "unfused vs fused weights";
  EXPECT_TRUE(all_close(unfused.context, fc, 1e-5, 1e-6)) << "unfused vs fused context";
}

// Largest first-order score perturbation from rounding the inputs to float16 (see the top).
double fp16_score_delta(const Reference& unrounded) {
  double m = 0.0;
  for (double x : unrounded.magnitude) m = std::max(m, x);
  return kHalfUlp * m;
}

void check_fp16(const Problem& p, const Data& d_rounded, const Reference& r_rounded,
                const Reference& r_exact, const Outputs& unfused, const Outputs& fused) {
  SCOPED_TRACE(p.describe());
  // (a) against the reference on the rounded inputs
  EXPECT_TRUE(scores_close(p, unfused.scores, r_rounded));
  EXPECT_TRUE(all_close(unfused.weights, r_rounded.weights, kHalfUlp + 1e-5, 1e-6)) << "unfused weights";
  EXPECT_TRUE(all_close(fused.weights, r_rounded.weights, kHalfUlp + 1e-5, 1e-6)) << "fused weights";
  EXPECT_TRUE(all_close(fused.context, r_rounded.context, 1e-5, 1e-6)) << "fused context";
  std::vector<double> tol(r_rounded.context.size());
  for (std::size_t i = 0; i < tol.size(); ++i) {
    tol[i] = kHalfUlp * r_rounded.abs_context[i] + 1e-5 * std::abs(r_rounded.context[i]) + 1e-6;
  }
  EXPECT_TRUE(within(unfused.context, r_rounded.context, tol, "unfused context (fp16 weights)"));
  EXPECT_TRUE(rows_sum_to_one(p, d_rounded, fused.weights, kHalfUlp + 1e-6));
  EXPECT_TRUE(rows_sum_to_one(p, d_rounded, unfused.weights, kHalfUlp + 1e-6));
  // (b) bound against the unrounded inputs
  const double delta = fp16_score_delta(r_exact);
  std::vector<double> wtol(r_exact.weights.size()), ctol(r_exact.context.size());
  for (std::size_t i = 0; i < wtol.size(); ++i) {
    wtol[i] = 1.5 * (2 * delta + kHalfUlp) * r_exact.weights[i] + 1e-6;
  }
  for (std::size_t i = 0; i < ctol.size(); ++i) {
    ctol[i] = 1.5 * (2 * delta + 2 * kHalfUlp) * r_exact.abs_context[i] + 1e-6;
  }
  EXPECT_TRUE(within(fused.weights, r_exact.weights, wtol, "fused weights vs unrounded"));
  EXPECT_TRUE(within(unfused.weights, r_exact.weights, wtol, "unfused weights vs unrounded"));
  EXPECT_TRUE(within(fused.context, r_exact.context, ctol, "fused context vs unrounded"));
  EXPECT_TRUE(within(unfused.context, r_exact.context, ctol, "unfused context vs unrounded"));
}

// Runs both pipelines on one problem and checks them against the reference.
void run_problem(const Problem& p, const OpOptions& base = {}, Context& ctx = context()) {
  OpOptions opt = base;
  opt.fp16_storage = p.fp16;
  if (!p.fp16) {
    const Data d = make_data(p);
    const Reference r = reference(p, d);
    const Inputs in = upload(ctx, p, d);
    const Outputs unfused = run_unfused(ctx, p, d, in, opt);
    const Outputs fused = run_fused(ctx, p, d, in, opt);
    check_fp32(p, d, r, unfused, fused);
    return;
  }
  Problem exact = p;
  exact.fp16 = false;
  const Data d_exact = make_data(exact);
  const Data d = make_data(p);
  const Reference r_exact = reference(exact, d_exact);
  const Reference r = reference(p, d);
  const Inputs in = upload(ctx, p, d);
  const Outputs unfused = run_unfused(ctx, p, d, in, opt);
  const Outputs fused = run_fused(ctx, p, d, in, opt);
  check_fp16(p, d, r, r_exact, unfused, fused);
}

Problem make_problem(Score score, std::size_t B, std::size_t S, std::size_t dim, std::uint32_t seed) {
  Problem p;
  p.score = score;
  p.batch = B;
  p.S = S;
  p.seed = seed;
  switch (score) {
    case Score::dot:
      p.hidden = dim;
      break;
    case Score::general:  // query width differs from the key width
      p.hidden = dim;
      p.query_dim = dim == 1 ? 2 : dim - 1;
      break;
    case Score::additive:  // attention width differs from the memory width
      p.hidden = dim;
      p.key_dim = dim / 2 + 1;
      p.query_dim = dim == 1 ? 3 : dim;
      break;
    case Score::scaled_dot:  // `dim` is the head size
      p.heads = dim >= 256 ? 2 : (dim == 97 ? 1 : 4);
      p.hidden = p.heads * dim;
      break;
  }
  return p;
}

constexpr Score kScores[] = {Score::dot, Score::general, Score::additive, Score::scaled_dot};

// The grid of the issue: batch x S x hidden (or head size).
constexpr std::size_t kBatches[] = {1, 3, 16};
constexpr std::size_t kSources[] = {1, 2, 7, 64, 1000, 65537};
constexpr std::size_t kDims[] = {1, 3, 64, 97, 256, 1024};

// Keeps the Long grid within lavapipe's 128 MiB maxStorageBufferRange (fp32 tensors).
bool fits(const Problem& p) {
  const std::size_t elems = p.batch * p.S * std::max(p.hidden, p.Hk());
  return elems <= (std::size_t(32) << 20);
}

// ---------------------------------------------------------------------------------------------
// Tests: reference sanity

TEST(AttentionReference, HandComputedDot) {
  // Two keys e1, e2 and q = (ln 3, 0): scores (ln 3, 0) -> weights (3/4, 1/4).
  Problem p;
  p.S = 2;
  p.hidden = 2;
  Data d;
  d.keys = d.values = {1, 0, 0, 1};
  d.query = {float(std::log(3.0)), 0};
  d.lengths = {2};
  const Reference r = reference(p, d);
  EXPECT_NEAR(r.weights[0], 0.75, 1e-7);
  EXPECT_NEAR(r.weights[1], 0.25, 1e-7);
  EXPECT_NEAR(r.context[0], 0.75, 1e-7);
  EXPECT_NEAR(r.context[1], 0.25, 1e-7);
  d.lengths = {1};
  const Reference r1 = reference(p, d);
  EXPECT_EQ(r1.weights[1], 0.0);
  EXPECT_NEAR(r1.context[0], 1.0, 1e-12);
}

// ---------------------------------------------------------------------------------------------
// Tests: sampled grid (default) and full grid (Long)

struct GridPoint {
  std::size_t B, S, dim;
};

// Every value of each axis appears, with the expensive corners sampled once.
constexpr GridPoint kSampled[] = {
    {1, 1, 1},      {3, 2, 3},     {16, 7, 64},    {3, 64, 97},   {1, 1000, 256}, {3, 7, 1024},
    {16, 1000, 3},  {1, 65537, 3}, {16, 64, 1024}, {3, 1000, 64}, {1, 2, 97},     {16, 2, 256},
};

TEST(Attention, SampledGridSubgroupAndSharedPaths) {
  std::uint32_t seed = 100;
  for (const GridPoint& g : kSampled) {
    for (Score s : kScores) {
      Problem p = make_problem(s, g.B, g.S, g.dim, ++seed);
      OpOptions opt;
      opt.force_shared_memory_reduction = (seed % 2) == 0;  // alternate the reduction path
      SCOPED_TRACE(fmt::format("shared-memory path: {}", opt.force_shared_memory_reduction));
      run_problem(p, opt);
      if (HasFailure()) return;
    }
  }
}

// Every point of kBatches x kSources x kDims x kScores that fits, seeded first_seed + 1, + 2, ...
// in that order (points that do not fit use up their seed too).
std::vector<Problem> full_grid(std::uint32_t first_seed) {
  std::vector<Problem> out;
  std::uint32_t seed = first_seed;
  for (std::size_t B : kBatches) {
    for (std::size_t S : kSources) {
      for (std::size_t dim : kDims) {
        for (Score s : kScores) {
          Problem p = make_problem(s, B, S, dim, ++seed);
          if (fits(p)) out.push_back(std::move(p));
        }
      }
    }
  }
  return out;
}

TEST(AttentionLong, FullGridBothPaths) {
  for (const Problem& p : full_grid(1000)) {
    for (bool shared : {false, true}) {
      OpOptions opt;
      opt.force_shared_memory_reduction = shared;
      SCOPED_TRACE(fmt::format("shared-memory path: {}", shared));
      run_problem(p, opt);
      if (HasFailure()) return;
    }
  }
}

TEST(Attention, Fp16StorageSampled) {
  ASSERT_TRUE(context().features().storage_buffer_16bit) << "lavapipe has 16-bit storage";
  const GridPoint points[] = {{1, 1, 1}, {3, 7, 64}, {16, 64, 97}, {3, 1000, 256}, {1, 65537, 3}, {3, 7, 1024}};
  std::uint32_t seed = 300;
  for (const GridPoint& g : points) {
    for (Score s : kScores) {
      Problem p = make_problem(s, g.B, g.S, g.dim, ++seed);
      p.fp16 = true;
      OpOptions opt;
      opt.force_shared_memory_reduction = (seed % 2) == 1;
      run_problem(p, opt);
      if (HasFailure()) return;
    }
  }
}

TEST(AttentionLong, Fp16StorageGrid) {
  for (Problem p : full_grid(5000)) {
    p.fp16 = true;
    run_problem(p);
    if (HasFailure()) return;
  }
}

// The kernels other devices get, run here (tests/common/test_env.hpp): a GPU's plans, a mobile
// GPU's (16 KiB shared memory, 128 invocations, shared-memory reductions, no 16-bit storage),
// and Vulkan's minimum of 4 storage buffers per stage, where the ops binding more refuse at
// construction by the limit's name and the rest run.
TEST(Attention, LimitProfiles) {
  const GridPoint points[] = {{1, 1, 1}, {3, 300, 40}, {2, 1100, 64}, {3, 7, 256}};
  std::uint32_t seed = 1500;
  for (Limits limits : kAllLimits) {
    Context& ctx = limited_context(limits);
    SCOPED_TRACE(fmt::format("limits '{}' on '{}'", test::to_string(limits), ctx.device().name));
    const bool narrow = limits == Limits::minimum;
    for (const GridPoint& g : points) {
      for (Score s : kScores) {
        Problem p = make_problem(s, g.B, g.S, g.dim, ++seed);
        const AttentionConfig cfg = p.config();
        if (narrow) {
          // 5 and 10 storage buffers; the softmax binds 4, the key projection 3.
          for (auto make : {+[](Context& c, const AttentionConfig& k) { AttentionScores op(c, k); },
                            +[](Context& c, const AttentionConfig& k) { AttentionContext op(c, k); },
                            +[](Context& c, const AttentionConfig& k) { FusedAttention op(c, k); }}) {
            expect_error([&] { make(ctx, cfg); }, ErrorCode::out_of_range,
                         {"maxPerStageDescriptorStorageBuffers"});
          }
          EXPECT_NO_THROW(MaskedSoftmax(ctx, cfg));
          EXPECT_NO_THROW(KeyProjection(ctx, cfg));
          continue;
        }
        run_problem(p, {}, ctx);
        if (HasFailure()) return;
      }
    }
    if (limits == Limits::mobile) {
      Problem p = make_problem(Score::dot, 2, 5, 8, 1);
      OpOptions fp16;
      fp16.fp16_storage = true;
      expect_error([&] { FusedAttention(ctx, p.config(), fp16); }, ErrorCode::missing_feature,
                   {"storageBuffer16BitAccess"});
    }
  }
}

// Both ways of spreading a score's dot product, on both reduction paths, for forced workgroup
// sizes and S tiles small enough to split every row into several workgroups.
TEST(Attention, WorkgroupSizesScoreSplitsAndTiles) {
  const auto& dev = context().device();
  std::uint32_t seed = 700;
  for (std::uint32_t wg : {4u, 8u, 32u, 64u, 256u}) {
    if (wg > dev.max_workgroup_invocations) continue;
    for (bool shared : {false, true}) {
      for (ScoreSplit split : {ScoreSplit::per_invocation, ScoreSplit::per_subgroup}) {
        for (Score s : kScores) {
          Problem p = make_problem(s, 3, 300, s == Score::scaled_dot ? 16 : 40, ++seed);
          p.split = split;
          OpOptions opt;
          opt.workgroup_size = wg;
          opt.force_shared_memory_reduction = shared;
          opt.tile = (seed % 3 == 0) ? 0 : 37 + seed % 50;  // odd tiles: ragged splits
          SCOPED_TRACE(fmt::format("wg {} shared {} tile {}", wg, shared, opt.tile));
          run_problem(p, opt);
          if (HasFailure()) return;
        }
      }
    }
  }
}

// The query projection of general / additive scores on every path of the fused op -- in the
// kernel for one workgroup per row, repeated by every workgroup of a split row, or its own
// dispatch before a split row -- against the double-precision reference over awkward shapes (S
// of 1, a prime, ragged forced splits, a long split source; widths not multiples of 4, and all
// multiples of 4 with a query wider than the keys, where CPU drivers read keys, values and W_q
// through texel views; B 1, 3, 16). The dispatch count says which path ran; each must occur.
TEST(Attention, FoldedQueryProjection) {
  std::uint32_t seed = 2100;
  std::size_t folded_split = 0, separate_split = 0;
  for (Score s : {Score::additive, Score::general}) {
    for (std::size_t S : {1, 61, 300, 2500}) {
      for (std::size_t dim : {6, 37, 40}) {
        for (std::size_t B : {1, 3, 16}) {
          Problem p = make_problem(s, B, S, dim, ++seed);
          if (dim == 40) {
            p.key_dim = s == Score::additive ? 24 : 0;
            p.query_dim = 52;
          }
          OpOptions opt;
          opt.tile = S == 300 ? 97 : 0;  // ragged splits
          SCOPED_TRACE(fmt::format("{} tile {}", p.describe(), opt.tile));
          const FusedAttention op(context(), p.config(), opt);
          const bool split = op.plan().tiles > 1;
          if (S == 300 || (S == 2500 && B == 1)) {
            EXPECT_TRUE(split) << "meant to split";
          }
          const std::uint32_t combine = split && !op.plan().merge_in_kernel ? 1 : 0;
          const bool folded = op.dispatches() == 1 + combine;
          EXPECT_TRUE(folded || (split && op.dispatches() == 2 + combine)) << op.dispatches() << " dispatches";
          if (split) {
            ++(folded ? folded_split : separate_split);
          } else {
            EXPECT_TRUE(folded) << "one workgroup per row projects its query itself";
          }
          run_problem(p, opt);
          if (HasFailure()) return;
        }
      }
    }
  }
  EXPECT_GT(folded_split, 0u);
  EXPECT_GT(separate_split, 0u);
}

// W1's B = 1 decoder step at S = 4096, H = 256 (on a 2-thread lavapipe: four split workgroups
// each projecting the query, merged by the last; plan::fused_attention) and at a ragged
// length (4001: splits of 1001 positions), against the reference.
TEST(Attention, LongSourceSingleRowProjectsInSplits) {
  std::uint32_t seed = 2300;
  for (Score s : {Score::general, Score::additive}) {
    for (std::size_t S : {4096, 4001}) {
      const Problem p = make_problem(s, 1, S, 256, ++seed);
      SCOPED_TRACE(p.describe());
      run_problem(p);
      if (HasFailure()) return;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Edge cases

TEST(Attention, ZeroLengthRowsGiveZeroContextAndWeights) {
  for (Score s : kScores) {
    for (std::size_t S : {std::size_t(1), std::size_t(5000)}) {
      Problem p = make_problem(s, 4, S, 8, 900 + unsigned(S));
      p.lengths = {0, 0, std::int32_t(S), 0};
      OpOptions opt;
      opt.tile = 97;  // split rows too
      run_problem(p, opt);
      // run_problem checked against the reference, whose zero rows are exact zeros; make the
      // "exactly zero, no NaN" part explicit on the fused output as well.
      Context& ctx = context();
      const Data d = make_data(p);
      const Inputs in = upload(ctx, p, d);
      const Outputs f = run_fused(ctx, p, d, in, opt);
      for (std::size_t b : {0u, 1u, 3u}) {
        for (std::size_t j = 0; j < p.hidden; ++j) ASSERT_EQ(f.context[b * p.hidden + j], 0.0f);
        for (std::size_t r = b * p.heads; r < (b + 1) * p.heads; ++r) {
          for (std::size_t i = 0; i < S; ++i) ASSERT_EQ(f.weights[r * S + i], 0.0f);
        }
      }
    }
  }
}

// The additive score's tanh (a rational fit, math.glsl's tanh_rational): infinite and huge keys
// saturate to +-1 as in the double reference, and a NaN key element makes that position's score
// NaN rather than a number (tanh_accurate, used before, lost it). Keys of 4 dims (vec4 loads)
// and of 5 (scalar ones).
TEST(Attention, AdditiveTanhSaturatesAndKeepsNaN) {
  for (std::size_t dim : {std::size_t(6), std::size_t(8)}) {
    SCOPED_TRACE(fmt::format("dim {}", dim));
    Problem p = make_problem(Score::additive, 1, 6, dim, 950 + unsigned(dim));
    p.lengths = {6};
    Data d = make_data(p);
    const std::size_t Hk = p.Hk();
    ASSERT_GE(Hk, 3u);
    d.keys[1 * Hk + 0] = std::numeric_limits<float>::infinity();
    d.keys[2 * Hk + 1] = -1e30f;
    d.keys[3 * Hk + 2] = std::numeric_limits<float>::quiet_NaN();
    d.keys[4 * Hk + 0] = 9.5f;  // just past the fit's clamp
    Context& ctx = context();
    const Inputs in = upload(ctx, p, d);
    const Reference r = reference(p, d);
    const Outputs u = run_unfused(ctx, p, d, in, {});
    for (std::size_t s = 0; s < p.S; ++s) {
      if (s == 3) {
        EXPECT_TRUE(std::isnan(u.scores[s])) << "position 3 (a NaN key): " << u.scores[s];
        continue;
      }
      const double e = r.scores[s];
      EXPECT_NEAR(u.scores[s], e, 1e-5 * std::abs(e) + 1e-6 * std::max(1.0, r.magnitude[s])) << "position " << s;
    }
  }
}

// Scores of magnitude 1e4 must not overflow exp(): inputs are small integers so that every
// score is an exact fp32 integer (~1e4) whatever the summation order, and the reference is exact.
TEST(Attention, LargeMagnitudeScores) {
  for (std::size_t S : {std::size_t(7), std::size_t(3000)}) {
    for (bool shared : {false, true}) {
      Problem p;
      p.batch = 3;
      p.S = S;
      p.hidden = 3;
      p.seed = 77;
      Data d;
      std::mt19937 rng(5);
      d.keys.resize(p.batch * S * 3);
      for (auto& x : d.keys) x = float(int(rng() % 2001) - 1000);
      d.values = d.keys;
      for (auto& x : d.values) x /= 1000.0f;  // values need not be the keys here
      d.query.resize(p.batch * 3);
      for (auto& x : d.query) x = float(int(rng() % 9) - 4);
      d.lengths = {std::int32_t(S), std::int32_t(S / 2 + 1), 1};
      // Position 0 of each row aligned with its query: a score of 1000 * sum_j |q_j| >= 9000.
      for (std::size_t b = 0; b < p.batch; ++b) {
        for (std::size_t j = 0; j < 3; ++j) {
          float& q = d.query[b * 3 + j];
          if (q == 0.0f) q = 3.0f;
          if (std::abs(q) < 3.0f) q *= 3.0f / std::abs(q);
          d.keys[b * S * 3 + j] = q > 0 ? 1000.0f : -1000.0f;
        }
      }
      // keys are not values in this test: use the additive-free dot path with separate values.
      Context& ctx = context();
      Inputs in;
      in.keys = ctx.tensor({p.batch, S, 3}, d.keys, "keys");
      in.values = ctx.tensor({p.batch, S, 3}, d.values, "values");  // keys / 1000 (pre-alignment)
      in.query = ctx.tensor({p.batch, 3}, d.query, "query");
      in.lengths = ctx.tensor({p.batch}, DType::i32, "lengths");
      OpOptions opt;
      opt.force_shared_memory_reduction = shared;
      const Reference r = reference(p, d);
      double mx = 0;
      for (double e : r.scores) {
        if (std::isfinite(e)) mx = std::max(mx, std::abs(e));
      }
      EXPECT_GE(mx, 9e3);
      const Outputs unfused = run_unfused(ctx, p, d, in, opt);
      const Outputs fused = run_fused(ctx, p, d, in, opt);
      check_fp32(p, d, r, unfused, fused);
    }
  }
}

TEST(Attention, SoftmaxOfHugeScores) {
  // Direct MaskedSoftmax test: rows of 1e4 +- 10, one row mixing -1e4 and +1e4.
  Context& ctx = context();
  for (std::size_t S : {std::size_t(5), std::size_t(4099)}) {
    AttentionConfig cfg;
    cfg.batch = 3;
    cfg.max_source = S;
    cfg.hidden = 1;
    std::vector<float> scores = random_floats(3 * S, 11, -10.0f, 10.0f);
    for (std::size_t s = 0; s < S; ++s) {
      scores[s] += 1e4f;
      scores[S + s] -= 1e4f;
      scores[2 * S + s] = (s % 2 ? 1e4f : -1e4f) + scores[2 * S + s];
    }
    const std::vector<std::int32_t> lengths = {std::int32_t(S), std::int32_t(S), std::int32_t(S)};
    for (bool shared : {false, true}) {
      OpOptions opt;
      opt.force_shared_memory_reduction = shared;
      MaskedSoftmax op(ctx, cfg, opt);
      Tensor ts = ctx.tensor({3, S}, scores, "scores");
      Tensor tl = ctx.tensor({3}, DType::i32, "lengths");
      Tensor tw = ctx.tensor({3, S}, DType::f32, "weights");
      Sequence seq = ctx.sequence();
      upload_lengths(seq, tl, lengths, cfg);
      op.record(seq, ts, tl, tw);
      seq.download(tw);
      seq.eval();
      const auto w = seq.read<float>(tw);
      std::vector<double> ref(3 * S);
      for (std::size_t r = 0; r < 3; ++r) {
        double mx = kNegInf, sum = 0;
        for (std::size_t s = 0; s < S; ++s) mx = std::max(mx, double(scores[r * S + s]));
        for (std::size_t s = 0; s < S; ++s) sum += std::exp(double(scores[r * S + s]) - mx);
        for (std::size_t s = 0; s < S; ++s) ref[r * S + s] = std::exp(double(scores[r * S + s]) - mx) / sum;
      }
      EXPECT_TRUE(all_close(w, ref, 1e-5, 1e-6)) << "S " << S << " shared " << shared;
    }
  }
}

// Lengths written straight into the device tensor (as a GPU-resident decoder would) are clamped
// to [0, S]: > S acts as S, negative as 0.
TEST(Attention, DeviceLengthsAreClamped) {
  Context& ctx = context();
  Problem p = make_problem(Score::dot, 3, 50, 8, 4242);
  p.lengths = {50, 0, 50};
  const Data d = make_data(p);
  const Reference r = reference(p, d);
  const Inputs in = upload(ctx, p, d);
  const AttentionConfig cfg = p.config();
  FusedAttention op(ctx, cfg);
  Tensor out = ctx.tensor({3, 8}, DType::f32, "context");
  Tensor w = ctx.tensor({3, 50}, DType::f32, "weights");
  ctx.write(in.lengths, std::vector<std::int32_t>{1000, -5, 50});
  Sequence seq = ctx.sequence();
  op.record(seq, in.keys, in.values, in.query, in.lengths, out, {}, w);
  seq.download(out).download(w);
  seq.eval();
  EXPECT_TRUE(all_close(seq.read<float>(out), r.context, 1e-5, 1e-6));
  EXPECT_TRUE(all_close(seq.read<float>(w), r.weights, 1e-5, 1e-6));
}

// A single source row of a million positions, small H: fused and unfused.
TEST(Attention, MillionPositionSource) {
  for (Score s : {Score::dot, Score::additive}) {
    Problem p = make_problem(s, 1, 1'000'003, 4, 31337);
    run_problem(p);
  }
}

// lavapipe ends all loops of an invocation after ~65535 iterations in total: a forced S tile as
// long as the whole row must be cut down by the ops so each invocation stays within budget.
TEST(Attention, WholeRowTileIsCutToLoopBudget) {
  for (ScoreSplit split : {ScoreSplit::per_subgroup, ScoreSplit::per_invocation}) {
    Problem p = make_problem(Score::dot, 1, 150'001, 97, 2024);
    p.split = split;
    OpOptions opt;
    opt.tile = 150'001;
    run_problem(p, opt);
  }
}

TEST(AttentionLong, MillionPositionSourceAllForms) {
  for (Score s : kScores) {
    for (bool shared : {false, true}) {
      Problem p = make_problem(s, 2, 1'048'583, 3, 4711);
      p.lengths = {1'048'583, 999'999};
      OpOptions opt;
      opt.force_shared_memory_reduction = shared;
      run_problem(p, opt);
    }
  }
}

// Fused without weights: the context alone, same result.
TEST(Attention, FusedWithoutWeights) {
  Context& ctx = context();
  for (std::size_t S : {std::size_t(20), std::size_t(20000)}) {
    Problem p = make_problem(Score::scaled_dot, 3, S, 64, 555);
    const Data d = make_data(p);
    const Reference r = reference(p, d);
    const Inputs in = upload(ctx, p, d);
    const Outputs f = run_fused(ctx, p, d, in, {}, /*want_weights=*/false);
    EXPECT_TRUE(all_close(f.context, r.context, 1e-5, 1e-6)) << p.describe();
  }
}

// The context written into a view of a wider matrix (its columns of a concatenation): the same
// values as into a whole tensor, the columns around it untouched; direct and split rows, every
// score form (the query projected in the kernel or by its own dispatch).
TEST(Attention, FusedContextIntoAView) {
  Context& ctx = context();
  for (Score s : kScores) {
    for (std::uint32_t tile : {0u, 16u}) {
      Problem p = make_problem(s, 3, 45, 12, 77);
      const Data d = make_data(p);
      const Inputs in = upload(ctx, p, d);
      OpOptions opt;
      opt.tile = tile;
      const Outputs whole = run_fused(ctx, p, d, in, opt);
      const std::size_t before = 5, W = before + p.hidden + 2;
      const float sentinel = -7.5f;
      const Tensor wide = ctx.tensor({p.batch + 1, W}, std::vector<float>((p.batch + 1) * W, sentinel), "wide");
      const FusedAttention op(ctx, p.config(), opt);
      Sequence seq = ctx.sequence();
      upload_lengths(seq, in.lengths, d.lengths, p.config());
      op.record(seq, in.keys, in.values, in.query, in.lengths, MatrixView{wide, p.batch, p.hidden, W + before, W}, in.params);
      seq.download(wide);
      seq.eval();
      EXPECT_EQ(seq.stats().dispatches, op.dispatches());
      const auto got = seq.read<float>(wide);
      for (std::size_t r = 0; r <= p.batch; ++r) {
        for (std::size_t c = 0; c < W; ++c) {
          const bool inside = r >= 1 && c >= before && c < before + p.hidden;
          const float want = inside ? whole.context[(r - 1) * p.hidden + c - before] : sentinel;
          ASSERT_EQ(got[r * W + c], want) << p.describe() << " tile " << tile << " at (" << r << ", " << c << ")";
        }
      }
      // A view that does not fit, or of the wrong size, is refused.
      expect_error([&] { op.record(seq, in.keys, in.values, in.query, in.lengths, MatrixView{wide, p.batch, p.hidden, 2 * W, W}, in.params); },
                   ErrorCode::invalid_argument, {"argument 'context'", "does not fit"});
      expect_error([&] { op.record(seq, in.keys, in.values, in.query, in.lengths, MatrixView{wide, p.batch, p.hidden + 1, 0, W}, in.params); },
                   ErrorCode::invalid_argument, {"argument 'context'", "view"});
    }
  }
}

// The query read from a view of a wider matrix (a multi-layer decoder's top layer, its columns
// of a concatenation): the same context bits as from a whole tensor, read in place where the
// view keeps rows on vec4s (or the width is not a multiple of 4), else copied first (one
// dispatch more); the context may go to other columns of the same tensor; every score form,
// direct and split rows, the query projected in the kernel or by its own dispatch.
TEST(Attention, FusedQueryFromAView) {
  Context& ctx = context();
  std::size_t in_place = 0, copied = 0, separate = 0;
  for (Score s : kScores) {
    for (const auto& [S, tile] : {std::pair<std::size_t, std::uint32_t>{45, 0}, {45, 16}, {2500, 0}}) {
      for (std::size_t dim : {12, 13}) {
        for (std::size_t before : {4, 5}) {
          Problem p = make_problem(s, S == 2500 ? 1 : 3, S, dim, 91);
          // Query widths 12 (vec4 reads where the view allows them) and 13 (scalar ones); the
          // heads of scaled_dot make them 48 and 52.
          if (s == Score::general || s == Score::additive) p.query_dim = dim;
          const std::size_t Hq = p.Hq();
          const Data d = make_data(p);
          const Inputs in = upload(ctx, p, d);
          OpOptions opt;
          opt.tile = tile;
          const Outputs whole = run_fused(ctx, p, d, in, opt, false);
          EXPECT_TRUE(all_close(whole.context, reference(p, d).context, 1e-5, 1e-6)) << "against the double reference";
          // [B, before | query | context | 3]: rows W apart.
          const std::size_t W = before + Hq + p.hidden + 3;
          std::vector<float> host(p.batch * W, -3.0f);
          for (std::size_t b = 0; b < p.batch; ++b)
            std::copy_n(d.query.begin() + b * Hq, Hq, host.begin() + b * W + before);
          const Tensor wide = ctx.tensor({p.batch, W}, host, "wide");
          const FusedAttention op(ctx, p.config(), opt);
          SCOPED_TRACE(fmt::format("{} tile {} query at column {} of {}", p.describe(), tile, before, W));
          Sequence seq = ctx.sequence();
          upload_lengths(seq, in.lengths, d.lengths, p.config());
          const std::uint32_t before_dispatches = seq.stats().dispatches;
          op.record(seq, in.keys, in.values, MatrixView{wide, p.batch, Hq, before, W}, in.lengths,
                    MatrixView{wide, p.batch, p.hidden, before + Hq, W}, in.params);
          seq.download(wide);
          seq.eval();
          const bool copy = Hq % 4 == 0 && (before % 4 != 0 || W % 4 != 0);
          EXPECT_EQ(seq.stats().dispatches - before_dispatches, op.dispatches() + (copy ? 1 : 0));
          ++(copy ? copied : in_place);
          separate += op.dispatches() > 1;
          const auto got = seq.read<float>(wide);
          for (std::size_t b = 0; b < p.batch; ++b) {
            for (std::size_t c = 0; c < W; ++c) {
              const bool ctx_col = c >= before + Hq && c < before + Hq + p.hidden;
              const float want = ctx_col ? whole.context[b * p.hidden + c - before - Hq] : host[b * W + c];
              ASSERT_EQ(got[b * W + c], want) << "row " << b << " column " << c;
            }
          }
          // Overlapping the context, or not fitting its tensor: refused, nothing recorded.
          const std::uint32_t recorded = seq.stats().dispatches;
          expect_error([&] { op.record(seq, in.keys, in.values, MatrixView{wide, p.batch, Hq, before, W}, in.lengths,
                                       MatrixView{wide, p.batch, p.hidden, before + 1, W}, in.params); },
                       ErrorCode::invalid_argument, {"overlaps 'query'"});
          expect_error([&] { op.record(seq, in.keys, in.values, MatrixView{wide, p.batch, Hq, W, W}, in.lengths,
                                       MatrixView{wide, p.batch, p.hidden, before + Hq, W}, in.params); },
                       ErrorCode::invalid_argument, {"argument 'query'", "does not fit"});
          EXPECT_EQ(seq.stats().dispatches, recorded);
          if (HasFailure()) return;
        }
      }
    }
  }
  EXPECT_GT(in_place, 0u);
  EXPECT_GT(copied, 0u);
  EXPECT_GT(separate, 0u);  // the query projection in a dispatch of its own read the view too
}

// ---------------------------------------------------------------------------------------------
// Split rows merged by their last workgroup (one dispatch): the per-row arrival counts must be
// back at 0 after every dispatch, so the same op recorded twice into one sequence, then again
// in a second submission, merges every time; and a source too long for that merge takes the
// combine dispatch. Each against the double reference, weights included.

TEST(Attention, SplitRowsMergedInKernelAndByCombine) {
  Context& ctx = context();
  std::uint32_t seed = 3100;
  struct Case {
    std::size_t B, S, dim, tile;
    bool merge;
  };
  for (const Case c : {Case{3, 3001, 40, 97, true}, Case{1, 300, 13, 7, true},
                       Case{1, 40000, 4, 0, false}}) {
    for (Score s : kScores) {
      Problem p = make_problem(s, c.B, c.S, c.dim, ++seed);
      if (c.B == 3) p.lengths = {3001, 0, 1234};  // a full row, an empty one, a ragged one
      OpOptions opt;
      opt.tile = static_cast<std::uint32_t>(c.tile);
      const AttentionConfig cfg = p.config();
      const FusedAttention op(ctx, cfg, opt);
      SCOPED_TRACE(fmt::format("{} tile {} splits {}", p.describe(), c.tile, op.plan().tiles));
      ASSERT_GT(op.plan().tiles, 1u);
      ASSERT_EQ(op.plan().merge_in_kernel, c.merge);
      // Two queries over the same memory.
      const Data d1 = make_data(p);
      Data d2 = d1;
      d2.query = random_floats(d1.query.size(), seed + 7, -1.0f, 1.0f);
      const Inputs in = upload(ctx, p, d1);
      const Tensor query2 = ctx.tensor({p.batch, p.Hq()}, d2.query, "query 2");
      const Reference r1 = reference(p, d1), r2 = reference(p, d2);
      auto make_out = [&] {
        return std::pair{ctx.tensor({p.batch, p.hidden}, DType::f32, "context"),
                         ctx.tensor(attention_scores_shape(cfg), DType::f32, "weights")};
      };
      const auto [c1, w1] = make_out();
      const auto [c2, w2] = make_out();
      auto check = [&](Sequence& seq, const Tensor& cx, const Tensor& wt, const Reference& r,
                       const char* what) {
        EXPECT_TRUE(all_close(seq.read<float>(cx), r.context, 1e-5, 1e-6)) << what << " context";
        EXPECT_TRUE(all_close(seq.read<float>(wt), r.weights, 1e-5, 1e-6)) << what << " weights";
      };
      Sequence seq = ctx.sequence();
      upload_lengths(seq, in.lengths, d1.lengths, cfg);
      op.record(seq, in.keys, in.values, in.query, in.lengths, c1, in.params, w1);
      op.record(seq, in.keys, in.values, query2, in.lengths, c2, in.params, w2);
      for (const Tensor& t : {c1, w1, c2, w2}) seq.download(t);
      seq.eval();
      EXPECT_EQ(seq.stats().dispatches, 2 * op.dispatches());
      check(seq, c1, w1, r1, "first record");
      check(seq, c2, w2, r2, "second record");
      Sequence again = ctx.sequence();
      op.record(again, in.keys, in.values, query2, in.lengths, c1, in.params, w1);
      again.download(c1);
      again.download(w1);
      again.eval();
      check(again, c1, w1, r2, "second submission");
      if (HasFailure()) return;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Determinism: same input, bit-identical output, run after run (split rows, several tiles).

// Keys that are the values (Luong dot / general, scaled-dot self-attention over one memory): on
// CPU drivers the fused kernel streams them a position at a time, each key vec4 fetched once
// for its score and its context term. The same data as two tensors takes the blocked path;
// both match the reference, split rows (merged in the kernel) and ragged lengths included.
TEST(Attention, KeysThatAreTheValuesStreamed) {
  Context& ctx = context();
  const bool cpu = ctx.device().type == DeviceType::cpu && ctx.device().subgroup_arithmetic;
  std::uint32_t seed = 3100;
  int streamed = 0;
  for (auto [score, B, S, H, heads] : {std::tuple{Score::dot, 1, 4096, 256, 1},
                                       std::tuple{Score::general, 3, 300, 64, 1},
                                       std::tuple{Score::scaled_dot, 2, 1000, 128, 2},
                                       std::tuple{Score::dot, 16, 7, 1024, 1},
                                       std::tuple{Score::general, 5, 2500, 32, 1}}) {
    Problem p = make_problem(score, B, S, H, ++seed);
    p.heads = heads;
    SCOPED_TRACE(p.describe());
    const FusedAttention op(ctx, p.config());
    streamed += op.plan().streams_shared_keys ? 1 : 0;
    run_problem(p);  // keys and values one tensor, against the reference
    if (HasFailure()) return;
    const Data d = make_data(p);
    const Inputs shared = upload(ctx, p, d);
    Inputs apart = shared;
    apart.keys = upload_storage(ctx, {p.batch, p.S, p.Hk()}, d.keys, false, "keys (a copy)");
    const Outputs one = run_fused(ctx, p, d, shared, {});
    const Outputs two = run_fused(ctx, p, d, apart, {});
    const auto wide = [](const std::vector<float>& v) { return std::vector<double>(v.begin(), v.end()); };
    EXPECT_TRUE(all_close(one.context, wide(two.context), 1e-5, 1e-6)) << "context, one tensor against two";
    EXPECT_TRUE(all_close(one.weights, wide(two.weights), 1e-5, 1e-7)) << "weights, one tensor against two";
  }
  if (cpu) {
    // All five with 8 or 16 lanes; with 4, H = 1024 needs two column tiles and is blocked.
    EXPECT_GE(streamed, 4) << "CPU drivers with subgroups stream shared keys";
  } else {
    EXPECT_EQ(streamed, 0) << "GPUs keep the blocked path";
  }
}

// Memories of at least plan::kStreamValuesBytes of keys and values apart: on CPU drivers walked
// in several segments at once, each lane fetching its value units apart from its key units
// (additive; dot over a copy of the keys). Long rows with ragged lengths (S, 0, S / 2 + 1, ...).
TEST(Attention, LargeMemoriesStreamed) {
  Context& ctx = context();
  const bool cpu = ctx.device().type == DeviceType::cpu && ctx.device().subgroup_arithmetic;
  std::uint32_t seed = 3200;
  for (auto [score, B, S] : {std::tuple{Score::additive, 8, 4096}, std::tuple{Score::dot, 3, 11000}}) {
    Problem p = make_problem(score, B, S, 256, ++seed);
    if (score == Score::additive) p.key_dim = 256;  // vec4 keys
    SCOPED_TRACE(p.describe());
    ASSERT_GE(p.batch * p.S * (p.Hk() + p.hidden) * 4, 64u << 20);
    const FusedAttention op(ctx, p.config());
    EXPECT_EQ(op.plan().streams_values, cpu) << "CPU drivers stream large memories, GPUs keep the blocked path";
    if (score == Score::additive) {
      run_problem(p);  // keys and values apart, against the reference
      continue;
    }
    const Data d = make_data(p);
    const Reference r = reference(p, d);
    Inputs apart = upload(ctx, p, d);
    apart.keys = upload_storage(ctx, {p.batch, p.S, p.Hk()}, d.keys, false, "keys (a copy)");
    const Outputs unfused = run_unfused(ctx, p, d, apart, {});
    const Outputs fused = run_fused(ctx, p, d, apart, {});
    check_fp32(p, d, r, unfused, fused);
  }
}

TEST(Attention, DeterministicRunToRun) {
  Context& ctx = context();
  for (Score s : kScores) {
    for (bool shared : {false, true}) {
      Problem p = make_problem(s, 3, 7000, 64, 8080);
      const Data d = make_data(p);
      const Inputs in = upload(ctx, p, d);
      OpOptions opt;
      opt.force_shared_memory_reduction = shared;
      opt.tile = 500;
      ASSERT_GT(FusedAttention(ctx, p.config(), opt).plan().tiles, 1u) << "rows must be split for this test";
      const Outputs f1 = run_fused(ctx, p, d, in, opt), f2 = run_fused(ctx, p, d, in, opt);
      const Outputs u1 = run_unfused(ctx, p, d, in, opt), u2 = run_unfused(ctx, p, d, in, opt);
      auto same = [](const std::vector<float>& a, const std::vector<float>& b) {
        return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
      };
      EXPECT_TRUE(same(f1.context, f2.context)) << p.describe();
      EXPECT_TRUE(same(f1.weights, f2.weights)) << p.describe();
      EXPECT_TRUE(same(u1.scores, u2.scores)) << p.describe();
      EXPECT_TRUE(same(u1.weights, u2.weights)) << p.describe();
      EXPECT_TRUE(same(u1.context, u2.context)) << p.describe();
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Key projection (additive keys, once per source)

TEST(Attention, KeyProjectionThenFusedAdditive) {
  Context& ctx = context();
  for (bool fp16 : {false, true}) {
    for (std::uint32_t wg : {0u, 4u, 64u}) {
      for (auto [B, S, H, A] : {std::array<std::size_t, 4>{1, 1, 1, 1}, {3, 33, 97, 31},
                                {2, 130, 64, 256}, {1, 1000, 256, 128}}) {
        // The problem of the fused step below; the projection has the same config.
        Problem p;
        p.score = Score::additive;
        p.batch = B;
        p.S = S;
        p.hidden = H;
        p.key_dim = A;
        p.query_dim = H;
        p.fp16 = fp16;
        p.seed = 99;
        const AttentionConfig cfg = p.config();
        OpOptions opt;
        opt.fp16_storage = fp16;
        opt.workgroup_size = wg;
        std::vector<float> mem = random_floats(B * S * H, unsigned(S + H), -1, 1);
        if (fp16) for (auto& x : mem) x = round_half(x);
        const float ws = 1.0f / std::sqrt(float(H));
        const std::vector<float> wk = random_floats(A * H, unsigned(A), -ws, ws);
        Tensor tm = upload_storage(ctx, {B, S, H}, mem, fp16, "memory");
        Tensor tw = ctx.tensor({A, H}, wk, "w_k");
        Tensor tk = ctx.tensor({B, S, A}, fp16 ? DType::f16 : DType::f32, "keys");
        KeyProjection proj(ctx, cfg, opt);
        Sequence seq = ctx.sequence();
        proj.record(seq, tm, tw, tk);
        seq.download(tk);
        seq.eval();
        const std::vector<float> keys = read_storage(seq, tk);
        std::vector<double> ref(B * S * A), tol(B * S * A);
        for (std::size_t n = 0; n < B * S; ++n) {
          for (std::size_t a = 0; a < A; ++a) {
            double s = 0, mag = 0;
            for (std::size_t k = 0; k < H; ++k) {
              s += double(mem[n * H + k]) * wk[a * H + k];
              mag += std::abs(double(mem[n * H + k]) * wk[a * H + k]);
            }
            ref[n * A + a] = s;
            // fp32 dot: 1e-6 * magnitude of terms; fp16 keys: + half an ulp of the result.
            tol[n * A + a] = 1e-6 * std::max(1.0, mag) + 1e-5 * std::abs(s) +
                             (fp16 ? kHalfUlp * std::abs(s) + 3e-8 : 0.0);
          }
        }
        SCOPED_TRACE(fmt::format("fp16 {} wg {} B {} S {} H {} A {}", fp16, wg, B, S, H, A));
        EXPECT_TRUE(within(keys, ref, tol, "projected keys"));

        // Then a fused additive step over those keys, against the reference on them.
        Data d = make_data(p);
        d.keys = keys;
        d.values = mem;
        const Reference r = reference(p, d);
        Inputs in = upload(ctx, p, d);
        in.keys = tk;
        in.values = tm;
        const Outputs f = run_fused(ctx, p, d, in, opt);
        EXPECT_TRUE(all_close(f.context, r.context, 1e-5, 1e-6)) << "fused context";
        EXPECT_TRUE(all_close(f.weights, r.weights, (fp16 ? kHalfUlp : 0) + 1e-5, 1e-6)) << "fused weights";
      }
    }
  }
}

// The staging path (device-local memory + copies, as on discrete GPUs).
TEST(Attention, StagingContext) {
  Context& ctx = test::staging_context();
  Problem p = make_problem(Score::general, 3, 700, 64, 1234);
  const Data d = make_data(p);
  const Reference r = reference(p, d);
  const Inputs in = upload(ctx, p, d);
  OpOptions opt;
  opt.tile = 128;
  const Outputs u = run_unfused(ctx, p, d, in, opt);
  const Outputs f = run_fused(ctx, p, d, in, opt);
  check_fp32(p, d, r, u, f);
}

// ---------------------------------------------------------------------------------------------
// Dispatch counts: what one decoder step costs

TEST(Attention, DispatchCounts) {
  Context& ctx = context();
  AttentionConfig cfg;
  cfg.batch = 1;
  cfg.max_source = 64;
  cfg.hidden = 32;
  EXPECT_EQ(FusedAttention(ctx, cfg).dispatches(), 1u);  // short source: one dispatch
  cfg.score = Score::additive;
  // One workgroup per row projects its own query: still one dispatch.
  EXPECT_EQ(FusedAttention(ctx, cfg).dispatches(), 1u);
  cfg.score = Score::general;
  cfg.query_dim = 7;
  EXPECT_EQ(FusedAttention(ctx, cfg).dispatches(), 1u);
  cfg.score = Score::additive;
  cfg.query_dim = 0;
  OpOptions opt;
  opt.tile = 16;
  // Split rows of 16 positions: a 32 x 32 projection, big beside each workgroup's share,
  // keeps its own dispatch (the split rows merged in the kernel) ...
  EXPECT_TRUE(FusedAttention(ctx, cfg, opt).plan().merge_in_kernel);
  EXPECT_EQ(FusedAttention(ctx, cfg, opt).dispatches(), 2u);
  // ... a 4 x 4 one is repeated by each workgroup of a row.
  AttentionConfig narrow = cfg;
  narrow.key_dim = 4;
  narrow.query_dim = 4;
  EXPECT_EQ(FusedAttention(ctx, narrow, opt).dispatches(), 1u);
  // A merge too long for one workgroup (weights of a million positions) takes a combine dispatch.
  AttentionConfig million = cfg;
  million.score = Score::dot;
  million.max_source = 1u << 20;
  million.hidden = 4;
  EXPECT_FALSE(FusedAttention(ctx, million).plan().merge_in_kernel);
  EXPECT_EQ(FusedAttention(ctx, million).dispatches(), 2u);
  EXPECT_EQ(MaskedSoftmax(ctx, cfg, opt).dispatches(), 2u);
  EXPECT_EQ(AttentionContext(ctx, cfg, opt).dispatches(), 2u);
  EXPECT_EQ(AttentionScores(ctx, cfg, opt).dispatches(), 2u);
}

// ---------------------------------------------------------------------------------------------
// Bad input

TEST(Attention, ShapeAndDtypeMismatchesAreClearErrors) {
  Context& ctx = context();
  Problem p = make_problem(Score::dot, 3, 7, 64, 1);
  const Data d = make_data(p);
  const Inputs in = upload(ctx, p, d);
  const AttentionConfig cfg = p.config();
  Tensor out = ctx.tensor({3, 64}, DType::f32);
  Tensor bad_keys = ctx.tensor({3, 7, 63}, DType::f32, "bad");
  Tensor f16_keys = ctx.tensor({3, 7, 64}, DType::f16);
  Tensor bad_out = ctx.tensor({3, 65}, DType::f32);
  Tensor bad_len = ctx.tensor({3}, DType::f32);
  Tensor scores = ctx.tensor({3, 7}, DType::f32);
  Tensor bad_scores = ctx.tensor({3, 8}, DType::f32);
  FusedAttention fused(ctx, cfg);
  Sequence seq = ctx.sequence();
  expect_error([&] { fused.record(seq, bad_keys, in.values, in.query, in.lengths, out); },
               ErrorCode::invalid_argument, {"FusedAttention", "'keys'", "[3, 7, 64]", "[3, 7, 63]"});
  expect_error([&] { fused.record(seq, f16_keys, in.values, in.query, in.lengths, out); },
               ErrorCode::invalid_argument, {"FusedAttention", "'keys'", "f32", "f16"});
  expect_error([&] { fused.record(seq, in.keys, in.values, in.query, in.lengths, bad_out); },
               ErrorCode::invalid_argument, {"'context'", "[3, 64]", "[3, 65]"});
  expect_error([&] { fused.record(seq, in.keys, in.values, in.query, bad_len, out); },
               ErrorCode::invalid_argument, {"'lengths'", "i32"});
  expect_error([&] { fused.record(seq, in.keys, in.values, in.query, in.lengths, out, {}, bad_scores); },
               ErrorCode::invalid_argument, {"'weights'", "[3, 7]", "[3, 8]"});
  AttentionScores sc(ctx, cfg);
  expect_error([&] { sc.record(seq, in.keys, in.query, in.lengths, bad_scores); },
               ErrorCode::invalid_argument, {"AttentionScores", "'scores'"});
  MaskedSoftmax sm(ctx, cfg);
  expect_error([&] { sm.record(seq, bad_scores, in.lengths, scores); },
               ErrorCode::invalid_argument, {"MaskedSoftmax", "'scores'"});
  AttentionContext cx(ctx, cfg);
  expect_error([&] { cx.record(seq, scores, bad_keys, in.lengths, out); },
               ErrorCode::invalid_argument, {"AttentionContext", "'values'"});
  expect_error([&] { cx.record(seq, scores, in.values, in.lengths, Tensor()); },
               ErrorCode::invalid_argument, {"AttentionContext", "'context'", "empty"});
  // Missing score parameters.
  AttentionConfig gcfg = cfg;
  gcfg.score = Score::general;
  FusedAttention general(ctx, gcfg);
  expect_error([&] { general.record(seq, in.keys, in.values, in.query, in.lengths, out); },
               ErrorCode::invalid_argument, {"FusedAttention", "W_a", "empty"});
  AttentionConfig acfg = cfg;
  acfg.score = Score::additive;
  acfg.key_dim = 16;
  acfg.query_dim = 64;
  AttentionScores additive(ctx, acfg);
  Tensor wq = ctx.tensor({16, 64}, DType::f32);
  Tensor keys16 = ctx.tensor({3, 7, 16}, DType::f32);
  expect_error([&] { additive.record(seq, keys16, in.query, in.lengths, scores, {wq, {}, {}}); },
               ErrorCode::invalid_argument, {"'params.v'", "[16]"});
  KeyProjection kp(ctx, acfg);
  expect_error([&] { kp.record(seq, in.values, wq, bad_keys); },
               ErrorCode::invalid_argument, {"KeyProjection", "'keys'", "[3, 7, 16]"});
  EXPECT_EQ(seq.stats().dispatches, 0u);
}

TEST(Attention, BadLengthsAndConfigsAreClearErrors) {
  Context& ctx = context();
  AttentionConfig cfg;
  cfg.batch = 2;
  cfg.max_source = 10;
  cfg.hidden = 4;
  Tensor len = ctx.tensor({2}, DType::i32);
  Sequence seq = ctx.sequence();
  const std::vector<std::int32_t> too_long = {3, 11}, negative = {-1, 2}, too_few = {3};
  expect_error([&] { upload_lengths(seq, len, too_long, cfg); }, ErrorCode::invalid_argument,
               {"lengths[1] = 11", "[0, 10]"});
  expect_error([&] { upload_lengths(seq, len, negative, cfg); }, ErrorCode::invalid_argument,
               {"lengths[0] = -1"});
  expect_error([&] { upload_lengths(seq, len, too_few, cfg); }, ErrorCode::invalid_argument,
               {"expected 2 values", "got 1"});
  const std::vector<std::int32_t> ok = {10, 0};
  EXPECT_NO_THROW(check_lengths(ok, cfg));

  AttentionConfig bad = cfg;
  bad.heads = 2;  // heads only with scaled_dot
  expect_error([&] { FusedAttention(ctx, bad); }, ErrorCode::invalid_argument, {"heads", "scaled_dot"});
  bad.score = Score::scaled_dot;
  bad.heads = 3;  // does not divide 4
  expect_error([&] { FusedAttention(ctx, bad); }, ErrorCode::invalid_argument, {"divide"});
  bad = cfg;
  bad.query_dim = 5;  // dot needs query_dim == key_dim
  expect_error([&] { AttentionScores(ctx, bad); }, ErrorCode::invalid_argument, {"query_dim"});
  bad = cfg;
  bad.max_source = 0;
  expect_error([&] { MaskedSoftmax(ctx, bad); }, ErrorCode::invalid_argument, {"max_source"});
}


// fp16 storage on a device that did not enable 16-bit storage: every op says so. An adopted
// VkDevice created without the feature stands in for a device that lacks it.
TEST(Attention, Fp16WithoutStorage16IsMissingFeature) {
  test::AppDevice app;
  {
    Context ctx = Context::adopt(app.external(), {.disable_pipeline_cache = true});
    ASSERT_FALSE(ctx.features().storage_buffer_16bit);
    AttentionConfig cfg;
    cfg.max_source = 8;
    cfg.hidden = 4;
    OpOptions opt;
    opt.fp16_storage = true;
    const std::vector<std::string> frags = {"fp16_storage", "storageBuffer16BitAccess"};
    expect_error([&] { FusedAttention(ctx, cfg, opt); }, ErrorCode::missing_feature, frags);
    expect_error([&] { AttentionScores(ctx, cfg, opt); }, ErrorCode::missing_feature, frags);
    expect_error([&] { MaskedSoftmax(ctx, cfg, opt); }, ErrorCode::missing_feature, frags);
    expect_error([&] { AttentionContext(ctx, cfg, opt); }, ErrorCode::missing_feature, frags);
    expect_error([&] { KeyProjection(ctx, cfg, opt); }, ErrorCode::missing_feature, frags);
    EXPECT_NO_THROW(FusedAttention(ctx, cfg));  // fp32 is fine
  }
}

}  // namespace
}  // namespace vkrnn
