// BeamSearch (shaders/beam_search.comp) against a host reference of the candidate merge: the
// straightforward sort-and-walk of Seq2Seq::beam (docs/model-format.md, "Beam search"), driven
// by random TopK-like candidate lists over several steps. Everything the GPU writes (parents,
// next tokens, histories, finished records, counts, done flags) must match EXACTLY, and so must
// the hypotheses reconstruct() rebuilds against the ones the reference carries along.
#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "common/test_env.hpp"
#include "expect_error.hpp"
#include "ops/beam_step.hpp"
#include "vkrnn/beam_search.hpp"
#include "vkrnn/concat.hpp"
#include "vkrnn/embedding.hpp"
#include "vkrnn/linear.hpp"
#include "vkrnn/topk.hpp"

namespace vkrnn {
namespace {

using test::context;
using test::expect_error;

// --- host reference ------------------------------------------------------------------------

struct RefHyp {
  std::vector<std::int32_t> tokens;
  std::vector<std::uint32_t> rows;
  float score = 0.0f;
};

struct Reference {
  std::size_t B, K, kc, T, S, F;  // S: finished hypotheses that stop a row
  std::int32_t eos, pad;
  std::vector<std::vector<RefHyp>> alive;  // per source row
  std::vector<std::uint32_t> alive_count, done, fin_count;
  std::vector<std::uint32_t> fin;                      // [B, F, 4], all ones where unused
  std::vector<std::int32_t> hist_token, hist_parent;   // [T, R], -1 where unused
  std::vector<std::vector<BeamHypothesis>> hyps;       // per source row, arrival order
  std::vector<int> done_step;                          // step a row stopped at, -1 before

  Reference(std::size_t B_, std::size_t K_, std::size_t kc_, std::size_t T_, std::int32_t eos_, std::int32_t pad_,
            std::size_t S_ = 0)
      : B(B_), K(K_), kc(kc_), T(T_), S(S_ ? S_ : K_), F(S + 2 * K_), eos(eos_), pad(pad_), alive(B_, std::vector<RefHyp>(1)),
        alive_count(B_, 1), done(B_, 0), fin_count(B_, 0), fin(B_ * F * 4, 0xffffffffu),
        hist_token(T_ * B_ * K_, -1), hist_parent(T_ * B_ * K_, -1), hyps(B_), done_step(B_, -1) {}

  void finish(std::size_t b, const RefHyp& h, std::uint32_t t, std::uint32_t slot, bool finished) {
    ASSERT_LT(fin_count[b], F) << "reference overflowed its finished capacity";
    std::uint32_t* rec = &fin[(b * F + fin_count[b]) * 4];
    rec[0] = t;
    rec[1] = slot;
    rec[2] = std::bit_cast<std::uint32_t>(h.score);
    rec[3] = finished ? 1 : 0;
    ++fin_count[b];
    hyps[b].push_back({h.tokens, h.rows, h.score, finished});
  }

  // One step over candidates vals/ids [R, kc]; fills parents / next_tokens [R].
  void step(std::size_t t, const std::vector<float>& vals, const std::vector<std::int32_t>& ids,
            std::vector<std::int32_t>& parents, std::vector<std::int32_t>& next_tokens) {
    const std::size_t R = B * K;
    parents.assign(R, -7);
    next_tokens.assign(R, -7);
    for (std::size_t b = 0; b < B; ++b) {
      auto release = [&] {
        for (std::size_t i = 0; i < K; ++i) {
          parents[b * K + i] = static_cast<std::int32_t>(b * K + i);
          next_tokens[b * K + i] = pad;
        }
      };
      if (done[b]) {
        release();
        continue;
      }
      struct Cand {
        float score;
        std::size_t h;
        std::int32_t w;
      };
      std::vector<Cand> cands;
      for (std::size_t h = 0; h < alive[b].size(); ++h) {
        const std::size_t r = b * K + h;
        for (std::size_t j = 0; j < kc; ++j) {
          const std::int32_t w = ids[r * kc + j];
          if (w < 0) continue;
          const float sc = alive[b][h].score + vals[r * kc + j];
          cands.push_back({sc, h, w});
        }
      }
      std::sort(cands.begin(), cands.end(), [](const Cand& x, const Cand& y) {
        if (x.score != y.score) return x.score > y.score;
        if (x.h != y.h) return x.h < y.h;
        return x.w < y.w;
      });
      auto extend = [&](std::size_t h, std::int32_t w, float score) {
        RefHyp n = alive[b][h];
        n.tokens.push_back(w);
        n.rows.push_back(static_cast<std::uint32_t>(b * K + h));
        n.score = score;
        return n;
      };
      std::vector<RefHyp> next;
      std::vector<std::size_t> next_parent;
      for (const Cand& c : cands) {
        if (c.w == eos) {
          finish(b, extend(c.h, c.w, c.score), static_cast<std::uint32_t>(t), static_cast<std::uint32_t>(c.h), true);
          continue;
        }
        hist_token[t * R + b * K + next.size()] = c.w;
        hist_parent[t * R + b * K + next.size()] = static_cast<std::int32_t>(c.h);
        next.push_back(extend(c.h, c.w, c.score));
        next_parent.push_back(c.h);
        if (next.size() == K) break;
      }
      if (fin_count[b] >= S) {
        done[b] = 1;
        release();
      } else if (t + 1 == T) {
        for (std::size_t j = 0; j < next.size(); ++j) finish(b, next[j], static_cast<std::uint32_t>(t), static_cast<std::uint32_t>(j), false);
        done[b] = 1;
        release();
      } else {
        alive[b] = std::move(next);
        alive_count[b] = static_cast<std::uint32_t>(alive[b].size());
        for (std::size_t i = 0; i < K; ++i) {
          const bool live = i < alive[b].size();
          parents[b * K + i] = static_cast<std::int32_t>(b * K + (live ? next_parent[i] : 0));
          next_tokens[b * K + i] = live ? alive[b][i].tokens.back() : pad;
        }
      }
      if (done[b]) done_step[b] = static_cast<int>(t);
    }
  }
};

// --- random TopK-like candidate lists --------------------------------------------------------

enum class Values { coarse, fine, uniform };
enum class Eos { frequent, rare, never };

struct Case {
  std::size_t B, K, kc, T, V;
  Eos eos_mode;
  Values values;
  std::uint32_t seed;
  OpOptions options{};
  std::size_t stop = 0;  // finished_to_stop (0: K)
};

std::string describe(const Case& c) {
  static const char* ev[] = {"frequent", "rare", "never"};
  static const char* vv[] = {"coarse", "fine", "uniform"};
  return fmt::format("B {} K {} kc {} T {} V {} eos {} values {} seed {} wg {} stop {}", c.B, c.K, c.kc, c.T, c.V,
                     ev[int(c.eos_mode)], vv[int(c.values)], c.seed, c.options.workgroup_size, c.stop);
}

// One list per decoder row: min(kc, V) distinct ids with values sorted descending, ties to the
// lower id (TopK's order), -1 / -inf padding. coarse: few distinct values (exact ties and equal
// sums across slots); fine: values a few ulps apart around -1, -2, -5, so that once the alive
// scores grow, different values round to equal sums; uniform: random floats, rarely -inf.
void make_lists(const Case& c, std::int32_t eos, std::mt19937& rng, std::vector<float>& vals,
                std::vector<std::int32_t>& ids) {
  const std::size_t R = c.B * c.K, n = std::min(c.kc, c.V);
  vals.assign(R * c.kc, -std::numeric_limits<float>::infinity());
  ids.assign(R * c.kc, -1);
  std::vector<std::int32_t> pool(c.V);
  std::vector<std::pair<float, std::int32_t>> list(n);
  std::uniform_real_distribution<float> uni(-6.0f, 0.0f);
  for (std::size_t r = 0; r < R; ++r) {
    std::iota(pool.begin(), pool.end(), 0);
    // Partial Fisher-Yates: the first n of pool are a random distinct subset.
    for (std::size_t i = 0; i < n; ++i) std::swap(pool[i], pool[i + rng() % (c.V - i)]);
    const bool eos_in_vocab = eos >= 0 && static_cast<std::size_t>(eos) < c.V;
    if (eos_in_vocab) {
      auto at = std::find(pool.begin(), pool.end(), eos);
      const std::size_t pos = static_cast<std::size_t>(at - pool.begin());
      if (c.eos_mode == Eos::frequent && pos >= n && rng() % 2 == 0) std::swap(pool[rng() % n], *at);
    }
    for (std::size_t i = 0; i < n; ++i) {
      float v = 0.0f;
      switch (c.values) {
        case Values::coarse: {
          static const float set[] = {0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f};
          v = set[rng() % 6];
          break;
        }
        case Values::fine: {
          static const float base[] = {-1.0f, -2.0f, -5.0f};
          v = base[rng() % 3] - static_cast<float>(rng() % 8) * 0x1p-22f;
          break;
        }
        case Values::uniform:
          v = rng() % 97 == 0 ? -std::numeric_limits<float>::infinity() : uni(rng);
          break;
      }
      list[i] = {v, pool[i]};
    }
    std::sort(list.begin(), list.end(), [](const auto& x, const auto& y) {
      if (x.first != y.first) return x.first > y.first;
      return x.second < y.second;
    });
    for (std::size_t i = 0; i < n; ++i) {
      vals[r * c.kc + i] = list[i].first;
      ids[r * c.kc + i] = list[i].second;
    }
  }
}

// --- running both ----------------------------------------------------------------------------

struct Coverage {
  std::size_t early = 0, at_end = 0, eos_records = 0, unfinished_records = 0, empty_slots = 0;
};

void expect_same_hyps(const std::vector<std::vector<BeamHypothesis>>& got, const std::vector<std::vector<BeamHypothesis>>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (std::size_t b = 0; b < want.size(); ++b) {
    ASSERT_EQ(got[b].size(), want[b].size()) << "row " << b;
    for (std::size_t i = 0; i < want[b].size(); ++i) {
      EXPECT_EQ(got[b][i].tokens, want[b][i].tokens) << "row " << b << " hyp " << i;
      EXPECT_EQ(got[b][i].rows, want[b][i].rows) << "row " << b << " hyp " << i;
      EXPECT_EQ(std::bit_cast<std::uint32_t>(got[b][i].score), std::bit_cast<std::uint32_t>(want[b][i].score))
          << "row " << b << " hyp " << i << ": " << got[b][i].score << " vs " << want[b][i].score;
      EXPECT_EQ(got[b][i].finished, want[b][i].finished) << "row " << b << " hyp " << i;
    }
  }
}

// Runs T steps of the op (one submission) and the reference on the same candidate lists.
// Returns the reference for extra checks.
Reference run_case(Context& ctx, const Case& c, std::int32_t eos, std::int32_t pad, Coverage* cov,
                   const std::vector<std::vector<float>>* fixed_vals = nullptr,
                   const std::vector<std::vector<std::int32_t>>* fixed_ids = nullptr) {
  SCOPED_TRACE(describe(c));
  const std::size_t R = c.B * c.K;
  std::mt19937 rng(c.seed);
  BeamSearch op(ctx, c.B, c.K, c.kc, c.T, eos, pad, c.options, c.stop);
  const BeamSearch::State st = op.make_state();
  Reference ref(c.B, c.K, c.kc, c.T, eos, pad, c.stop);
  Sequence seq = ctx.sequence();
  op.record_reset(seq, st);
  std::vector<Tensor> parents(c.T), next(c.T);
  std::vector<std::vector<std::int32_t>> want_parents(c.T), want_next(c.T);
  for (std::size_t t = 0; t < c.T; ++t) {
    std::vector<float> vals;
    std::vector<std::int32_t> ids;
    if (fixed_vals) {
      vals = (*fixed_vals)[t];
      ids = (*fixed_ids)[t];
    } else {
      make_lists(c, eos, rng, vals, ids);
    }
    const Tensor tv = ctx.tensor({R, c.kc}, DType::f32), ti = ctx.tensor({R, c.kc}, DType::i32);
    parents[t] = ctx.tensor({R}, DType::i32);
    next[t] = ctx.tensor({R}, DType::i32);
    seq.upload(tv, vals).upload(ti, ids);
    op.record_step(seq, st, t, tv, ti, parents[t], next[t]);
    seq.download(parents[t]).download(next[t]);
    ref.step(t, vals, ids, want_parents[t], want_next[t]);
  }
  op.record_download(seq, st);
  seq.download(st.alive_count).download(st.done);
  seq.eval();
  for (std::size_t t = 0; t < c.T; ++t) {
    EXPECT_EQ(seq.read<std::int32_t>(parents[t]), want_parents[t]) << "parents at step " << t;
    EXPECT_EQ(seq.read<std::int32_t>(next[t]), want_next[t]) << "next tokens at step " << t;
  }
  EXPECT_EQ(seq.read<std::int32_t>(st.hist_token), ref.hist_token);
  EXPECT_EQ(seq.read<std::int32_t>(st.hist_parent), ref.hist_parent);
  EXPECT_EQ(seq.read<std::uint32_t>(st.fin_count), ref.fin_count);
  EXPECT_EQ(seq.read<std::uint32_t>(st.fin), ref.fin);
  EXPECT_EQ(seq.read<std::uint32_t>(st.alive_count), ref.alive_count);
  EXPECT_EQ(seq.read<std::uint32_t>(st.done), ref.done);
  expect_same_hyps(op.reconstruct(seq, st), ref.hyps);
  if (cov) {
    for (std::size_t b = 0; b < c.B; ++b) {
      (static_cast<std::size_t>(ref.done_step[b]) + 1 < c.T ? cov->early : cov->at_end)++;
      for (const auto& h : ref.hyps[b]) (h.finished ? cov->eos_records : cov->unfinished_records)++;
    }
    for (const auto& v : want_next)
      for (std::size_t r = 0; r < R; ++r) cov->empty_slots += v[r] == pad;
  }
  return ref;
}

// --- tests -----------------------------------------------------------------------------------

TEST(BeamSearch, MatchesHostMergeOverGrid) {
  Coverage cov;
  std::uint32_t seed = 1000, i = 0;
  for (std::size_t B : {1, 2, 7, 65}) {
    for (std::size_t K : {1, 2, 3, 5, 16, 63}) {
      std::vector<std::size_t> kcs{K + 1, 1, 64};
      kcs.erase(std::unique(kcs.begin(), kcs.end()), kcs.end());
      for (std::size_t kc : kcs) {
        // T, EOS frequency, value kind and vocabulary (smaller than kc: padding) rotate.
        const std::size_t T = std::array<std::size_t, 3>{9, 1, 2}[i % 3];
        const Eos e = static_cast<Eos>((i / 3) % 3);
        const Values v = static_cast<Values>((i + i / 9) % 3);
        const std::size_t V = std::array<std::size_t, 4>{kc, std::max<std::size_t>(1, kc / 2), kc + 40, 3}[(i / 2) % 4];
        ++i;
        const std::int32_t eos = e == Eos::never ? static_cast<std::int32_t>(V) : std::min<std::int32_t>(2, static_cast<std::int32_t>(V) - 1);
        run_case(context(), {B, K, kc, T, V, e, v, seed++}, eos, /*pad*/ 0, &cov);
        if (HasFailure()) return;
      }
    }
  }
  // The grid really exercised what it is for.
  EXPECT_GT(cov.early, 0u);
  EXPECT_GT(cov.at_end, 0u);
  EXPECT_GT(cov.eos_records, 0u);
  EXPECT_GT(cov.unfinished_records, 0u);
  EXPECT_GT(cov.empty_slots, 0u);
}

TEST(BeamSearch, EveryEosAndValueModeAtNineSteps) {
  Coverage cov;
  std::uint32_t seed = 2000;
  for (Eos e : {Eos::frequent, Eos::rare, Eos::never}) {
    for (Values v : {Values::coarse, Values::fine, Values::uniform}) {
      for (std::size_t K : {1, 3, 16}) {
        const std::size_t kc = K + 1, V = 30;
        const std::int32_t eos = e == Eos::never ? -1 : 5;
        run_case(context(), {7, K, kc, 9, V, e, v, seed++}, eos, 1, &cov);
        // eos in the vocabulary, but never among the candidates.
        if (e == Eos::never) run_case(context(), {7, K, kc, 9, V, e, v, seed++}, 40, 1, &cov);
        if (HasFailure()) return;
      }
    }
  }
  EXPECT_GT(cov.early, 0u);
  EXPECT_GT(cov.at_end, 0u);
}

// A patience factor: rows stop after S finished hypotheses, fewer (S = 1: the first EOS) or more
// than K (up to the capacity bound S + 2K, which the frequent-EOS lists fill).
TEST(BeamSearch, FinishedToStop) {
  std::uint32_t seed = 2500;
  for (const std::size_t K : {1, 3, 7}) {
    for (const std::size_t S : {std::size_t{1}, 2 * K, 5 * K + 1}) {
      for (const Eos e : {Eos::frequent, Eos::rare}) {
        Coverage cov;
        const Reference ref =
            run_case(context(), {5, K, K + 1, 12, 20, e, Values::coarse, seed++, {}, S}, 2, 0, &cov);
        for (std::size_t b = 0; b < 5; ++b) {
          // A row stopped early has its S finished hypotheses (or up to 2K - 1 more).
          if (ref.done_step[b] >= 0 && static_cast<std::size_t>(ref.done_step[b]) + 1 < 12) {
            EXPECT_GE(ref.fin_count[b], S);
          }
        }
        if (HasFailure()) return;
      }
    }
  }
  EXPECT_EQ(BeamSearch(context(), 2, 3, 4, 5, 1, 0, {}, 10).finished_capacity(), 16u);
  expect_error([&] { BeamSearch(context(), 2, 3, 4, 5, 1, 0, {}, BeamSearch::max_finished_to_stop + 1); },
               ErrorCode::invalid_argument, {"BeamSearch", "finished_to_stop"});
}

TEST(BeamSearch, WorkgroupSizesAndStaging) {
  std::uint32_t seed = 3000;
  for (std::uint32_t wg : {1u, 2u, 8u, 64u, 256u}) {
    OpOptions o;
    o.workgroup_size = wg;
    run_case(context(), {65, 3, 4, 9, 20, Eos::frequent, Values::coarse, seed++, o}, 2, 0, nullptr);
    run_case(context(), {130, 2, 64, 4, 100, Eos::rare, Values::fine, seed++, o}, 2, 0, nullptr);
  }
  run_case(test::staging_context(), {7, 5, 6, 9, 12, Eos::frequent, Values::coarse, seed++}, 3, 0, nullptr);
}

// A GPU's and a mobile GPU's plans run here (tests/common/test_env.hpp); under the Vulkan
// minimum of 4 storage buffers per stage the merge, which binds 13, refuses at construction by
// the limit's name.
TEST(BeamSearch, LimitProfiles) {
  std::uint32_t seed = 3500;
  for (test::Limits limits : test::kAllLimits) {
    Context& ctx = test::limited_context(limits);
    SCOPED_TRACE(fmt::format("limits '{}'", test::to_string(limits)));
    if (limits == test::Limits::minimum) {
      expect_error([&] { BeamSearch(ctx, 2, 3, 4, 9, 1, 0); }, ErrorCode::out_of_range,
                   {"BeamSearch", "13 storage buffers", "maxPerStageDescriptorStorageBuffers"});
      continue;
    }
    run_case(ctx, {65, 3, 4, 9, 20, Eos::frequent, Values::coarse, seed++}, 2, 0, nullptr);
    run_case(ctx, {7, 5, 6, 9, 12, Eos::rare, Values::fine, seed++}, 3, 0, nullptr);
  }
}

// Equal sums from different values: the lower id later in the list wins. Alive scores -16
// (slot 0, token 4) and -20 (slot 1, token 5) after step 0; at step 1 slot 0's list holds
// (-1, id 9) then (-1 - 2^-22, id 3): both sum to -17 in fp32, so id 3 ranks first.
TEST(BeamSearch, EqualSumsTakeTheLowerIdFromLaterInTheList) {
  const float inf = std::numeric_limits<float>::infinity();
  ASSERT_EQ(-16.0f + (-1.0f - 0x1p-22f), -17.0f);
  std::vector<std::vector<float>> vals{{-16.0f, -20.0f, -30.0f, /*row 1*/ -1.0f, -2.0f, -inf},
                                       {-1.0f, -1.0f - 0x1p-22f, -50.0f, /*row 1*/ -0.5f, -0.75f, -inf}};
  std::vector<std::vector<std::int32_t>> ids{{4, 5, 6, 7, 8, -1}, {9, 3, 8, 2, 6, -1}};
  {
    const Reference ref = run_case(context(), {1, 2, 3, 2, 10, Eos::never, Values::fine, 1}, /*eos*/ 1, 0, nullptr,
                                   &vals, &ids);
    ASSERT_EQ(ref.hyps[0].size(), 2u);
    EXPECT_EQ(ref.hyps[0][0].tokens, (std::vector<std::int32_t>{4, 3}));
    EXPECT_EQ(ref.hyps[0][1].tokens, (std::vector<std::int32_t>{4, 9}));
    EXPECT_EQ(ref.hyps[0][0].score, -17.0f);
  }
  // The same with EOS as the later, lower id: it finishes first, then 9 and 8 stay alive.
  ids[1] = {9, 1, 8, 2, 6, -1};
  vals[1][2] = -1.0f - 0x1p-21f;  // also sums to -17
  const Reference ref = run_case(context(), {1, 2, 3, 2, 10, Eos::frequent, Values::fine, 1}, 1, 0, nullptr, &vals, &ids);
  ASSERT_EQ(ref.hyps[0].size(), 3u);
  EXPECT_EQ(ref.hyps[0][0].tokens, (std::vector<std::int32_t>{4, 1}));
  EXPECT_TRUE(ref.hyps[0][0].finished);
  EXPECT_EQ(ref.hyps[0][1].tokens, (std::vector<std::int32_t>{4, 8}));
  EXPECT_EQ(ref.hyps[0][2].tokens, (std::vector<std::int32_t>{4, 9}));
}

// K = 1 is greedy decoding: each step takes the row's best candidate (lowest id among equal
// values; integer values keep the sums exact), stopping at EOS.
TEST(BeamSearch, BeamOfOneIsGreedy) {
  const std::size_t B = 9, kc = 4, T = 7, V = 12;
  const std::int32_t eos = 3;
  std::mt19937 rng(77);
  std::vector<std::vector<float>> vals(T, std::vector<float>(B * kc));
  std::vector<std::vector<std::int32_t>> ids(T, std::vector<std::int32_t>(B * kc));
  for (std::size_t t = 0; t < T; ++t) {
    for (std::size_t b = 0; b < B; ++b) {
      std::vector<std::int32_t> pool(V);
      std::iota(pool.begin(), pool.end(), 0);
      std::shuffle(pool.begin(), pool.end(), rng);
      std::vector<std::pair<float, std::int32_t>> l;
      for (std::size_t j = 0; j < kc; ++j) l.push_back({-static_cast<float>(rng() % 4), pool[j]});
      std::sort(l.begin(), l.end(), [](auto& x, auto& y) { return x.first != y.first ? x.first > y.first : x.second < y.second; });
      for (std::size_t j = 0; j < kc; ++j) {
        vals[t][b * kc + j] = l[j].first;
        ids[t][b * kc + j] = l[j].second;
      }
    }
  }
  const Reference ref = run_case(context(), {B, 1, kc, T, V, Eos::rare, Values::coarse, 5}, eos, 0, nullptr, &vals, &ids);
  for (std::size_t b = 0; b < B; ++b) {
    std::vector<std::int32_t> tokens;
    float score = 0.0f;
    bool finished = false;
    for (std::size_t t = 0; t < T && !finished; ++t) {
      tokens.push_back(ids[t][b * kc]);
      score += vals[t][b * kc];
      finished = tokens.back() == eos;
    }
    ASSERT_EQ(ref.hyps[b].size(), 1u) << b;
    EXPECT_EQ(ref.hyps[b][0].tokens, tokens) << b;
    EXPECT_EQ(ref.hyps[b][0].score, score) << b;
    EXPECT_EQ(ref.hyps[b][0].finished, finished) << b;
    EXPECT_EQ(ref.hyps[b][0].rows, std::vector<std::uint32_t>(tokens.size(), static_cast<std::uint32_t>(b))) << b;
  }
}

// A vocabulary of EOS alone: every step finishes one hypothesis per alive slot and leaves no
// alive one; the rows then idle (no candidates) to max_steps.
TEST(BeamSearch, OnlyEosAndEmptyAliveLists) {
  Coverage cov;
  const Reference ref = run_case(context(), {3, 2, 1, 4, 1, Eos::frequent, Values::uniform, 9}, 0, 0, &cov);
  for (std::size_t b = 0; b < 3; ++b) {
    ASSERT_EQ(ref.hyps[b].size(), 1u);
    EXPECT_EQ(ref.hyps[b][0].tokens, std::vector<std::int32_t>{0});
    EXPECT_EQ(ref.done_step[b], 3);
  }
}

TEST(BeamSearch, Errors) {
  Context& ctx = context();
  expect_error([&] { BeamSearch(ctx, 2, 0, 3, 4, 1, 0); }, ErrorCode::invalid_argument, {"BeamSearch", "beam = 0"});
  expect_error([&] { BeamSearch(ctx, 2, 64, 3, 4, 1, 0); }, ErrorCode::invalid_argument, {"BeamSearch", "beam = 64"});
  expect_error([&] { BeamSearch(ctx, 2, 3, 0, 4, 1, 0); }, ErrorCode::invalid_argument, {"BeamSearch", "candidates = 0"});
  expect_error([&] { BeamSearch(ctx, 2, 3, 65, 4, 1, 0); }, ErrorCode::invalid_argument, {"BeamSearch", "candidates = 65"});
  expect_error([&] { BeamSearch(ctx, 2, 3, 4, 0, 1, 0); }, ErrorCode::invalid_argument, {"BeamSearch", "max_steps = 0"});
  expect_error([&] { BeamSearch(ctx, 0, 3, 4, 5, 1, 0); }, ErrorCode::invalid_argument, {"BeamSearch", "batch = 0"});
  expect_error([&] { BeamSearch(ctx, 1u << 20, 63, 64, 1u << 12, 1, 0); }, ErrorCode::out_of_range, {"BeamSearch", "32-bit"});

  const std::size_t B = 2, K = 3, kc = 4, T = 5, R = B * K;
  BeamSearch op(ctx, B, K, kc, T, 1, 0);
  const auto st = op.make_state();
  const Tensor v = ctx.tensor({R, kc}), ids = ctx.tensor({R, kc}, DType::i32);
  const Tensor par = ctx.tensor({R}, DType::i32), nxt = ctx.tensor({R}, DType::i32);
  Sequence seq = ctx.sequence();
  expect_error([&] { op.record_step(seq, st, T, v, ids, par, nxt); }, ErrorCode::out_of_range, {"BeamSearch", "t = 5"});
  expect_error([&] { op.record_step(seq, st, 0, ctx.tensor({R, kc + 1}), ids, par, nxt); }, ErrorCode::invalid_argument,
               {"BeamSearch", "'cand_values'", "[6, 4]"});
  expect_error([&] { op.record_step(seq, st, 0, v, ctx.tensor({R, kc}), par, nxt); }, ErrorCode::invalid_argument,
               {"BeamSearch", "'cand_ids'"});
  expect_error([&] { op.record_step(seq, st, 0, v, ids, ctx.tensor({R + 1}, DType::i32), nxt); }, ErrorCode::invalid_argument,
               {"BeamSearch", "'parents'"});
  expect_error([&] { op.record_step(seq, st, 0, v, ids, par, ctx.tensor({R}, DType::f32)); }, ErrorCode::invalid_argument,
               {"BeamSearch", "'next_tokens'"});
  // A state made for another shape.
  const auto other = BeamSearch(ctx, B, K, kc, T + 1, 1, 0).make_state();
  expect_error([&] { op.record_step(seq, other, 0, v, ids, par, nxt); }, ErrorCode::invalid_argument,
               {"BeamSearch", "'state.hist_token'"});
  expect_error([&] { op.record_reset(seq, BeamSearch::State{}); }, ErrorCode::invalid_argument,
               {"BeamSearch", "'state.alive_score[0]'", "empty"});

  // reconstruct: wrong sizes, and records that contradict the histories.
  const std::size_t F = op.finished_capacity();
  std::vector<std::uint32_t> fc(B, 0), fin(B * F * 4, 0);
  std::vector<std::int32_t> ht(T * R, -1), hp(T * R, -1);
  const auto none = op.reconstruct(fc, fin, ht, hp);
  ASSERT_EQ(none.size(), B);
  EXPECT_TRUE(none[0].empty() && none[1].empty());
  expect_error([&] { op.reconstruct(std::vector<std::uint32_t>(B + 1), fin, ht, hp); }, ErrorCode::invalid_argument,
               {"BeamSearch::reconstruct", "'fin_count'"});
  expect_error([&] { op.reconstruct(fc, fin, ht, std::vector<std::int32_t>(3)); }, ErrorCode::invalid_argument,
               {"BeamSearch::reconstruct", "'hist_parent'"});
  fc[1] = 1;
  fin[(1 * F) * 4 + 0] = 2;  // unfinished at step 2, slot 0: no history there
  expect_error([&] { op.reconstruct(fc, fin, ht, hp); }, ErrorCode::format, {"BeamSearch::reconstruct", "source row 1", "step 2"});
  fin[(1 * F) * 4 + 0] = static_cast<std::uint32_t>(T);
  expect_error([&] { op.reconstruct(fc, fin, ht, hp); }, ErrorCode::format, {"out of range"});
  fc[1] = static_cast<std::uint32_t>(F + 1);
  expect_error([&] { op.reconstruct(fc, fin, ht, hp); }, ErrorCode::format, {"exceeds the capacity"});
}

// More seeds over the biggest shapes (label "long").
// --- BeamStep: the fused step against the ops it replaces ---------------------------------------
// TopK + BeamSearch::record_step + Embedding gathers (+ Concat back) + close_gate_when_all, over
// T steps of random logits inside a gate, against BeamStep doing all of it in one dispatch per
// step. Everything must match exactly, except what the fused step leaves alone on purpose: the
// candidates of rows that are not alive and the gathers of sources already done (their rows
// are never read again).

// Which gathers a case runs (all into tensors of their own unless said):
//   token  a state ping-ponging over 2 blocks of 5 columns; a token lookup of 6 columns into
//          columns 2..7 of a [R, 9] input
//   back   a state in columns 4..8 of a [R, 13] tensor (copied in place; scratch [R, 5] for
//          the separate kernels; back_cols wide); a state of 3 columns ping-ponging
//   four   the most: a state over 2 blocks of 5 columns, a state of 3 columns, a state in
//          columns 4..8 of a [R, 13] input and a token lookup of 4 columns into columns 0..3 of
//          that same input (an LSTM decoder with input feeding: h, c, h~ and the embedding),
//          6 distinct tensors
enum class Layout { token, back, four };

struct StepCase {
  std::size_t B, K, V, T;
  std::uint32_t seed;
  Layout layout;
  bool forced;        // the first two steps force some rows' tokens (a target prefix)
  bool inf = false;   // row 0's logits hold +inf at step 0 (the non-finite flag)
  float eos_bias = 0.0f;  // added to EOS's logit: searches that end early
  OpOptions options = {};
  std::size_t back_cols = 5;  // the width of the state copied in place
  // > 0: the logits come from a Linear [V, in] (x random per step, EOS's bias raised by
  // eos_bias) with this weight storage, recorded apart or, fused, in BeamStep's dispatch.
  std::size_t in = 0;
  WeightStorage storage = WeightStorage::f32;
  bool coop = false;  // the projection on the cooperative GEMV (GPUs' path: subgroups share a row)
  bool ties = false;  // x = 0 and a bias of 3 values: whole blocks of equal logits
};

// How run_steps records a step: the separate kernels, BeamStep after the logits, or BeamStep
// with the output projection (StepCase::in > 0).
enum class StepMode { apart, fused, projected };

struct StepRun {
  std::vector<std::vector<float>> cand_v;
  std::vector<std::vector<std::int32_t>> cand_i, parents, next;
  std::vector<std::vector<std::uint32_t>> done;
  // [t][gather]: what the gather wrote (its `to`; for a copy in place its `from`), and what it
  // read before the step (its `from`; the table for a token lookup).
  std::vector<std::vector<std::vector<float>>> wrote, read;
  std::vector<std::int32_t> hist_token, hist_parent;
  std::vector<std::uint32_t> fin_count, fin, nonfinite;
  std::vector<float> ran;  // ran[t] = t + 1 where step t's gated work ran (0: the gate was closed)
  std::vector<std::vector<float>> logits;  // each step's, for the host reference
  std::uint32_t open_checks = 0, dispatches = 0;
  std::size_t joined = 0;  // StepMode::projected: the steps whose projection BeamStep took in
};

constexpr std::uint32_t kSentinel = 0x7fc0dead;  // NaN bits no kernel writes

std::vector<BeamStep::Gather> step_gathers(Context& ctx, Layout layout, std::size_t R, std::size_t vocab, std::size_t back_cols) {
  using Kind = BeamStep::Kind;
  auto t = [&](Shape s) { return ctx.tensor(std::move(s), DType::f32); };
  const BeamStep::Gather ping5{.from = t({2, R, 5}), .to = t({2, R, 5}), .cols = 5, .outer = 2, .from_ld = 5, .to_ld = 5};
  const BeamStep::Gather ping3{.from = t({R, 3}), .to = t({R, 3}), .cols = 3, .from_ld = 3, .to_ld = 3};
  const std::size_t ld = back_cols + 8;  // 4 more columns left alone
  const Tensor wide = t({R, ld});
  const BeamStep::Gather back{.from = wide, .to = t({R, back_cols}), .cols = back_cols, .from_offset = 4, .from_ld = ld,
                              .to_ld = back_cols, .kind = Kind::back};
  switch (layout) {
    case Layout::token:
      return {ping5, {.from = t({vocab, 6}), .to = t({R, 9}), .cols = 6, .from_ld = 6, .to_offset = 2, .to_ld = 9,
                      .kind = Kind::token, .vocab = vocab}};
    case Layout::back:
      return {back, ping3};
    case Layout::four:
      return {ping5, ping3, back,
              {.from = t({vocab, 4}), .to = wide, .cols = 4, .from_ld = 4, .to_ld = ld, .kind = Kind::token, .vocab = vocab}};
  }
  return {};
}

StepRun run_steps(Context& ctx, const StepCase& c, StepMode mode) {
  const bool fused = mode != StepMode::apart;
  using Kind = BeamStep::Kind;
  const std::size_t B = c.B, K = c.K, V = c.V, T = c.T, R = B * K, kc = std::min(K + 1, V);
  const std::int32_t eos = 2, pad = 0;
  const BeamSearch op(ctx, B, K, kc, T, eos, pad, c.options);
  const BeamSearch::State st = op.make_state();
  std::mt19937 rng(c.seed);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  auto random = [&](std::size_t n) {
    std::vector<float> v(n);
    for (float& x : v) x = normal(rng);
    return v;
  };
  const std::size_t Vemb = V + 3;  // lookups of ids beyond V are clamped, never out of the table
  std::vector<BeamStep::Gather> gathers = step_gathers(ctx, c.layout, R, Vemb, c.back_cols);
  std::optional<Linear> projection;
  const Tensor x = c.in ? ctx.tensor({R, c.in}, DType::f32) : Tensor{};
  if (c.in) {
    OpOptions o = c.options;
    o.weight_storage = c.storage;
    o.pack_weights = !c.coop;
    projection.emplace(ctx, c.in, V, true, o);
    if (c.coop) projection->gemm().set_path(Gemm::Path::gemv);
    std::vector<float> b = random(V);
    if (c.ties) {
      for (float& v : b) v = std::floor(std::fabs(v)) > 1.0f ? 1.0f : std::floor(std::fabs(v));
    }
    b[eos] += c.eos_bias;
    projection->load(random(V * c.in), {V, c.in}, b);
  }
  std::optional<BeamStep> step;
  if (fused) {
    step = BeamStep::make(ctx, op, V, gathers, c.options, mode == StepMode::projected ? &*projection : nullptr);
    EXPECT_TRUE(step.has_value());
    if (!step) return {};
    EXPECT_EQ(step->takes_projection(), mode == StepMode::projected);
  }
  const TopK topk(ctx, kc, c.options);
  const Embedding embedding(ctx, c.options);
  const Concat concat(ctx, c.options);
  const Tensor logits = ctx.tensor({R, V}, DType::f32), forced = ctx.tensor({R}, DType::i32);
  const Tensor cv = ctx.tensor({R, kc}, DType::f32), ci = ctx.tensor({R, kc}, DType::i32);
  const Tensor parents = ctx.tensor({R}, DType::i32), next = ctx.tensor({R}, DType::i32);
  const Tensor nonfinite = ctx.tensor({R}, DType::u32);
  // A gated copy per step marks the steps that ran: once the gate is closed they stay 0.
  const Tensor step_ids = ctx.tensor({T}, DType::f32), ran = ctx.tensor({T}, DType::f32);
  std::vector<float> ids(T);
  std::iota(ids.begin(), ids.end(), 1.0f);

  StepRun run;
  Sequence seq = ctx.sequence();
  seq.upload(step_ids, ids).fill(ran, 0u);
  op.record_reset(seq, st);
  seq.fill(nonfinite, 0u);
  for (const auto& g : gathers) {
    if (g.kind == Kind::token) seq.fill(g.to, 0u);
    if (g.kind == Kind::back) seq.fill(g.to, 0u);
  }
  std::vector<std::vector<float>> tables(gathers.size());
  for (std::size_t i = 0; i < gathers.size(); ++i) {
    if (gathers[i].kind != Kind::token) continue;
    tables[i] = random(gathers[i].from.size());
    seq.upload(gathers[i].from, tables[i]);
  }
  if (step) step->record_reset(seq);
  struct Snap { Tensor cv, ci, parents, next, done; std::vector<Tensor> wrote; Tensor logits; };
  std::vector<Snap> snaps(T);
  auto snap = [&](const Tensor& from) {
    const Tensor to = ctx.tensor(from.shape(), from.dtype());
    seq.copy(from, to);
    seq.download(to);
    return to;
  };
  seq.begin_gate();
  for (std::size_t t = 0; t < T; ++t) {
    // What a decoder step would have written: logits and new states (every state's tensor once).
    if (c.in) {
      seq.upload(x, c.ties ? std::vector<float>(R * c.in, 0.0f) : random(R * c.in));
    } else {
      std::vector<float> y = random(R * V);
      for (std::size_t r = 0; r < R; ++r) y[r * V + eos] += c.eos_bias;
      if (c.inf && t == 0) y[3 % V] = std::numeric_limits<float>::infinity();
      seq.upload(logits, y);
      run.logits.push_back(y);
    }
    run.read.emplace_back();
    for (std::size_t i = 0; i < gathers.size(); ++i) {
      if (gathers[i].kind == Kind::token) {
        run.read[t].push_back(tables[i]);
        continue;
      }
      std::vector<float> d = random(gathers[i].from.size());
      seq.upload(gathers[i].from, d);
      run.read[t].push_back(std::move(d));
    }
    concat.record(seq, {MatrixView{step_ids, 1, 1, t, 1}}, MatrixView{ran, 1, 1, t, 1});
    const bool force = c.forced && t < 2;
    if (force) {
      std::vector<std::int32_t> f(R);
      for (std::size_t r = 0; r < R; ++r) f[r] = r % 3 == 0 ? -1 : static_cast<std::int32_t>((r * 7 + t) % V);
      seq.upload(forced, f);
    }
    seq.fill(cv, kSentinel).fill(ci, kSentinel);
    const bool last = t + 1 == T;
    const std::span<const BeamStep::Gather> g = last ? std::span<const BeamStep::Gather>{} : std::span(gathers);
    if (c.in && mode != StepMode::projected) projection->record(seq, MatrixView::of(x), MatrixView::of(logits));
    if (mode == StepMode::projected) {
      run.joined += step->record(seq, *projection, MatrixView::of(x), st, t, logits, force ? forced : Tensor{}, nonfinite, cv,
                                 ci, parents, next, g, !last);
    } else if (step) {
      step->record(seq, st, t, logits, force ? forced : Tensor{}, nonfinite, cv, ci, parents, next, g, !last);
    } else {
      topk.record(seq, logits, cv, ci, true, nonfinite, static_cast<std::uint32_t>(t + 1), force ? forced : Tensor{});
      op.record_step(seq, st, t, cv, ci, parents, next);
      for (const auto& e : g) {
        const Tensor& ids = e.kind == Kind::token ? next : parents;
        for (std::size_t o = 0; o < e.outer; ++o) {
          const std::size_t rows = e.kind == Kind::token ? e.vocab : R;
          embedding.record(seq, MatrixView{e.from, rows, e.cols, e.from_offset + o * R * e.cols, e.from_ld}, ids,
                           MatrixView{e.to, R, e.cols, e.to_offset + o * R * e.cols, e.to_ld});
        }
        if (e.kind == Kind::back) {
          concat.record(seq, {MatrixView{e.to, R, e.cols, e.to_offset, e.to_ld}},
                        MatrixView{e.from, R, e.cols, e.from_offset, e.from_ld});
        }
      }
      if (!last) seq.close_gate_when_all(st.done);
    }
    Snap& sn = snaps[t];
    sn = {snap(cv), snap(ci), snap(parents), snap(next), snap(st.done), {}, c.in ? snap(logits) : Tensor{}};
    for (const auto& e : gathers) sn.wrote.push_back(snap(e.kind == Kind::back ? e.from : e.to));
    // The ping-pong states swap buffers, as the decoder's do.
    for (auto& e : gathers) {
      if (e.kind == Kind::parent) std::swap(e.from, e.to);
    }
  }
  seq.end_gate();
  op.record_download(seq, st);
  seq.download(nonfinite).download(ran);
  seq.eval();

  run.ran = seq.read<float>(ran);
  for (const Snap& sn : snaps) {
    run.cand_v.push_back(seq.read<float>(sn.cv));
    run.cand_i.push_back(seq.read<std::int32_t>(sn.ci));
    run.parents.push_back(seq.read<std::int32_t>(sn.parents));
    run.next.push_back(seq.read<std::int32_t>(sn.next));
    run.done.push_back(seq.read<std::uint32_t>(sn.done));
    if (sn.logits.valid()) run.logits.push_back(seq.read<float>(sn.logits));
    run.wrote.emplace_back();
    for (const Tensor& w : sn.wrote) run.wrote.back().push_back(seq.read<float>(w));
  }
  run.hist_token = seq.read<std::int32_t>(st.hist_token);
  run.hist_parent = seq.read<std::int32_t>(st.hist_parent);
  run.fin_count = seq.read<std::uint32_t>(st.fin_count);
  run.fin = seq.read<std::uint32_t>(st.fin);
  run.nonfinite = seq.read<std::uint32_t>(nonfinite);
  run.open_checks = seq.open_gate_checks();
  run.dispatches = seq.stats().dispatches;
  return run;
}

// Sources whose rows step t gathers: those not done before it.
bool gathered(const StepRun& run, std::size_t t, std::size_t b) { return t == 0 || run.done[t - 1][b] == 0; }

// value_tol > 0: the candidates' values within it (a log-softmax summed in another order),
// else bit for bit.
void expect_same_step_runs(const StepCase& c, const StepRun& got, const StepRun& want, const std::vector<BeamStep::Gather>& gathers,
                           float value_tol = 0.0f) {
  const std::size_t K = c.K, R = c.B * c.K, kc = std::min(c.K + 1, c.V);
  EXPECT_EQ(got.hist_token, want.hist_token);
  EXPECT_EQ(got.hist_parent, want.hist_parent);
  EXPECT_EQ(got.fin_count, want.fin_count);
  if (value_tol > 0.0f) {
    // Records of (step, row, score, ...): the scores sum the candidates' values.
    ASSERT_EQ(got.fin.size(), want.fin.size());
    for (std::size_t i = 0; i < got.fin.size(); ++i) {
      if (i % 4 == 2 && got.fin[i] != want.fin[i]) {  // (unused records hold NaN bits)
        EXPECT_NEAR(std::bit_cast<float>(got.fin[i]), std::bit_cast<float>(want.fin[i]), value_tol * c.T) << "fin word " << i;
      } else {
        EXPECT_EQ(got.fin[i], want.fin[i]) << "fin word " << i;
      }
    }
  } else {
    EXPECT_EQ(got.fin, want.fin);
  }
  EXPECT_EQ(got.open_checks, want.open_checks);
  EXPECT_EQ(got.ran, want.ran);
  EXPECT_EQ(got.nonfinite, want.nonfinite);
  std::size_t compared = 0;
  for (std::size_t t = 0; t < c.T; ++t) {
    SCOPED_TRACE(fmt::format("step {}", t));
    EXPECT_EQ(got.parents[t], want.parents[t]);
    EXPECT_EQ(got.next[t], want.next[t]);
    EXPECT_EQ(got.done[t], want.done[t]);
    for (std::size_t r = 0; r < R; ++r) {
      if (std::bit_cast<std::uint32_t>(got.cand_v[t][r * kc]) == kSentinel) continue;  // not alive: not computed
      ++compared;
      for (std::size_t j = 0; j < kc; ++j) {
        if (value_tol > 0.0f && std::isfinite(want.cand_v[t][r * kc + j])) {
          EXPECT_NEAR(got.cand_v[t][r * kc + j], want.cand_v[t][r * kc + j], value_tol) << "row " << r << " candidate " << j;
        } else {
          EXPECT_EQ(std::bit_cast<std::uint32_t>(got.cand_v[t][r * kc + j]), std::bit_cast<std::uint32_t>(want.cand_v[t][r * kc + j]))
              << "row " << r << " candidate " << j;
        }
        EXPECT_EQ(got.cand_i[t][r * kc + j], want.cand_i[t][r * kc + j]) << "row " << r << " candidate " << j;
      }
    }
    if (t + 1 == c.T) continue;  // no gathers on the last step
    // What each gather wrote, whole rows (every column of the tensor), of the sources gathered.
    for (std::size_t i = 0; i < got.wrote[t].size(); ++i) {
      const auto& g = got.wrote[t][i];
      const auto& w = want.wrote[t][i];
      ASSERT_EQ(g.size(), w.size());
      const std::size_t blocks = gathers[i].outer, ld = g.size() / (blocks * R);
      for (std::size_t b = 0; b < c.B; ++b) {
        if (!gathered(got, t, b)) continue;
        for (std::size_t o = 0; o < blocks; ++o) {
          EXPECT_EQ(std::memcmp(g.data() + (o * R + b * K) * ld, w.data() + (o * R + b * K) * ld, K * ld * sizeof(float)), 0)
              << "gather " << i << ", source " << b << ", block " << o;
        }
      }
    }
  }
  EXPECT_GT(compared, 0u);
}

// The fused run against the host in double: each computed row's candidates (the top-kc of the
// log-softmax, ties to the lower id), and each gathered row (from its parent's row of what the
// step read, or the next token's table row).
void expect_host_reference(const StepCase& c, const StepRun& got, const std::vector<BeamStep::Gather>& gathers) {
  using Kind = BeamStep::Kind;
  const std::size_t K = c.K, R = c.B * K, V = c.V, kc = std::min(K + 1, V);
  std::size_t rows = 0, gathered_rows = 0;
  for (std::size_t t = 0; t < c.T; ++t) {
    SCOPED_TRACE(fmt::format("host reference, step {}", t));
    for (std::size_t r = 0; r < R && !(c.forced && t < 2) && !(c.inf && t == 0); ++r) {
      if (std::bit_cast<std::uint32_t>(got.cand_v[t][r * kc]) == kSentinel) continue;
      const float* x = &got.logits[t][r * V];
      const double m = *std::max_element(x, x + V);
      double sum = 0.0;
      for (std::size_t i = 0; i < V; ++i) sum += std::exp(double(x[i]) - m);
      std::vector<std::size_t> order(V);
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return x[a] > x[b]; });
      for (std::size_t j = 0; j < kc; ++j) {
        EXPECT_EQ(got.cand_i[t][r * kc + j], static_cast<std::int32_t>(order[j])) << "row " << r << " candidate " << j;
        EXPECT_NEAR(got.cand_v[t][r * kc + j], double(x[order[j]]) - m - std::log(sum), 1e-4) << "row " << r;
      }
      ++rows;
    }
    if (t + 1 == c.T) continue;
    for (std::size_t b = 0; b < c.B; ++b) {
      if (!gathered(got, t, b)) continue;
      for (std::size_t r = b * K; r < b * K + K; ++r) {
        const std::size_t p = static_cast<std::size_t>(got.parents[t][r]);
        ASSERT_LT(p, R);
        ASSERT_EQ(p / K, b);  // a source's rows take rows of the same source
        for (std::size_t i = 0; i < gathers.size(); ++i) {
          const auto& e = gathers[i];
          const auto& wrote = got.wrote[t][i];
          const auto& read = got.read[t][i];
          const std::size_t row = e.kind == Kind::token ? static_cast<std::size_t>(std::clamp<std::int32_t>(got.next[t][r], 0, std::int32_t(e.vocab) - 1)) : p;
          for (std::size_t o = 0; o < e.outer; ++o) {
            for (std::size_t j = 0; j < e.cols; ++j) {
              const float want = read[e.from_offset + (o * R) * e.cols + row * e.from_ld + j];
              const std::size_t at = e.kind == Kind::back ? e.from_offset + r * e.from_ld + j : e.to_offset + o * R * e.cols + r * e.to_ld + j;
              EXPECT_EQ(wrote[at], want) << "gather " << i << ", row " << r << ", block " << o << ", column " << j;
            }
          }
        }
        ++gathered_rows;
      }
    }
  }
  EXPECT_GT(rows, 0u);
  EXPECT_GT(gathered_rows, 0u);
}

TEST(BeamStep, EqualsTheOpsItFuses) {
  std::uint32_t seed = 3000;
  std::size_t closed_early = 0;
  for (const StepCase& c : std::vector<StepCase>{
           {1, 4, 37, 8, seed++, Layout::token, false, false, 4.0f},
           {3, 3, 300, 10, seed++, Layout::back, true},
           {5, 5, 7, 9, seed++, Layout::token, true, false, 1.0f},
           {2, 1, 11, 6, seed++, Layout::back, false, false, 3.0f},
           {4, 16, 64, 7, seed++, Layout::four, false, false, 5.0f},
           {2, 3, 23, 5, seed++, Layout::back, false, true},
           {3, 2, 40, 6, seed++, Layout::four, true, false, 3.0f, {.force_shared_memory_reduction = true}},
           {2, 7, 19, 8, seed++, Layout::four, false, false, 2.0f},
           // Rows per workgroup: one (GPUs' default), two (a source over several workgroups).
           {3, 5, 50, 8, seed++, Layout::back, false, false, 3.0f, {.tile = 1}},
           {2, 5, 30, 7, seed++, Layout::token, true, false, 2.0f, {.tile = 2}},
           {3, 4, 30, 7, seed++, Layout::four, false, false, 2.0f, {.tile = 1}},
           // Wide states; the gathers in vec4s (every row on a multiple of 4: back_cols = 8).
           {2, 8, 40, 6, seed++, Layout::four, false, false, 2.0f, {}, 300},
           {3, 5, 33, 7, seed++, Layout::four, true, false, 2.0f, {}, 8},
           {2, 4, 25, 6, seed++, Layout::back, false, false, 2.0f, {.tile = 1}, 8},
       }) {
    SCOPED_TRACE(fmt::format("B {} K {} V {} T {} layout {} forced {} inf {}", c.B, c.K, c.V, c.T, static_cast<int>(c.layout),
                             c.forced, c.inf));
    const StepRun got = run_steps(context(), c, StepMode::fused);
    const StepRun want = run_steps(context(), c, StepMode::apart);
    const auto gathers = step_gathers(context(), c.layout, c.B * c.K, c.V + 3, c.back_cols);
    expect_same_step_runs(c, got, want, gathers);
    expect_host_reference(c, got, gathers);
    // One dispatch per step instead of top-k, merge, the gathers (an Embedding per block, a
    // Concat more for a copy back) and the gate check.
    std::uint32_t apart = 3;  // top-k, merge, gate check
    for (const auto& g : gathers) apart += static_cast<std::uint32_t>(g.outer) + (g.kind == BeamStep::Kind::back);
    EXPECT_EQ(got.dispatches + (apart - 1) * (c.T - 1) + 1, want.dispatches);
    closed_early += std::count(got.ran.begin(), got.ran.end(), 0.0f) > 0;
    if (HasFailure()) return;
  }
  EXPECT_GT(closed_early, 0u);  // the gate closing is covered
}

// BeamStep with the output projection (gemv_beam.comp: each GEMV workgroup's softmax partials of
// its block, each source merged by the last workgroup with its rows) against the projection
// apart and BeamStep after it: the logits bit for bit, the candidates' values within rounding
// (the log-softmax's sum goes by blocks), everything else exactly; and against the host in
// double. A dispatch fewer per step.
TEST(BeamStep, TakesTheOutputProjection) {
  std::uint32_t seed = 5000;
  std::size_t closed_early = 0;
  const WeightStorage f32 = WeightStorage::f32, f16 = WeightStorage::f16, i8 = WeightStorage::i8;
  for (const StepCase& c : std::vector<StepCase>{
           {1, 4, 37, 8, seed++, Layout::token, false, false, 4.0f, {}, 5, 16, f32},
           {3, 3, 300, 8, seed++, Layout::back, true, false, 0.0f, {}, 5, 13, f32},  // x rows not on vec4s
           {2, 5, 1009, 6, seed++, Layout::four, false, false, 2.0f, {}, 8, 64, f16},
           {2, 4, 97, 7, seed++, Layout::token, true, false, 3.0f, {}, 5, 32, i8},
           {3, 2, 40, 6, seed++, Layout::four, true, false, 3.0f, {.force_shared_memory_reduction = true}, 5, 20, f32},
           {2, 1, 11, 6, seed++, Layout::back, false, false, 3.0f, {}, 5, 8, f32},
           {4, 16, 64, 5, seed++, Layout::four, false, false, 5.0f, {}, 5, 12, f32},
           // 64 rows: the sources merge in their own workgroups, within the loop budget.
           {16, 4, 1009, 4, seed++, Layout::back, false, false, 2.0f, {}, 5, 16, f32},
           {13, 3, 257, 5, seed++, Layout::token, true, false, 3.0f, {}, 5, 9, i8},
           {2, 3, 5, 5, seed++, Layout::token, false, false, 1.0f, {}, 5, 7, f32},  // V < 2K: fewer candidates
           {1, 4, 8000, 3, seed++, Layout::token, false, false, 0.0f, {}, 5, 64, f32},
           {3, 5, 50, 8, seed++, Layout::back, false, false, 3.0f, {.tile = 1}, 5, 24, f32},
           // Blocks of equal logits: tau ties, the first blocks at it hold the lowest ids.
           {2, 4, 700, 4, seed++, Layout::token, false, false, 0.0f, {}, 5, 16, f32, false, true},
           {1, 3, 90, 4, seed++, Layout::back, false, false, 0.0f, {}, 5, 8, f32, true, true},
           // The cooperative GEMV (subgroups on GPUs) and its coops' partials.
           {2, 4, 300, 6, seed++, Layout::four, true, false, 2.0f, {}, 8, 40, f32, true},
           {3, 3, 131, 6, seed++, Layout::token, false, false, 3.0f, {}, 5, 13, f16, true},
           {1, 4, 2000, 3, seed++, Layout::back, false, false, 0.0f, {}, 5, 64, i8, true},
       }) {
    SCOPED_TRACE(fmt::format("B {} K {} V {} T {} layout {} forced {} in {} storage {} coop {} ties {}", c.B, c.K, c.V, c.T,
                             static_cast<int>(c.layout), c.forced, c.in, to_string(c.storage), c.coop, c.ties));
    const StepRun got = run_steps(context(), c, StepMode::projected);
    const StepRun want = run_steps(context(), c, StepMode::fused);

    ASSERT_EQ(got.logits.size(), want.logits.size());
    for (std::size_t t = 0; t < got.logits.size(); ++t) EXPECT_EQ(got.logits[t], want.logits[t]) << "step " << t;
    const auto gathers = step_gathers(context(), c.layout, c.B * c.K, c.V + 3, c.back_cols);
    expect_same_step_runs(c, got, want, gathers, 1e-5f);
    expect_host_reference(c, got, gathers);
    // K = 16: one source's merge of 16 rows exceeds the loop budget; the projection goes apart
    // (record() returns false), as it does on devices that cannot join them.
    const bool joins = c.K < 16;
    EXPECT_EQ(got.joined, joins ? c.T : 0);
    EXPECT_EQ(got.dispatches + (joins ? c.T : 0), want.dispatches);
    closed_early += std::count(got.ran.begin(), got.ran.end(), 0.0f) > 0;
    if (HasFailure()) return;
  }
  EXPECT_GT(closed_early, 0u);  // the gate closing is covered
}

TEST(BeamStep, DeclinesWhatDoesNotFit) {
  Context& ctx = context();
  const BeamSearch op(ctx, 2, 3, 4, 5, 2, 0);
  const Tensor a = ctx.tensor({6, 4}, DType::f32), b = ctx.tensor({6, 4}, DType::f32), h = ctx.tensor({6, 4}, DType::f16);
  const BeamStep::Gather g{.from = a, .to = b, .cols = 4, .from_ld = 4, .to_ld = 4};
  EXPECT_TRUE(BeamStep::make(ctx, op, 50, std::vector{g, g, g, g}).has_value());
  EXPECT_FALSE(BeamStep::make(ctx, op, 50, std::vector{g, g, g, g, g}).has_value());  // beyond max_gathers
  // Beyond max_tensors: 4 states ping-ponging between tensors of their own.
  std::vector<BeamStep::Gather> own;
  for (int i = 0; i < 4; ++i) own.push_back({.from = ctx.tensor({6, 4}), .to = ctx.tensor({6, 4}), .cols = 4, .from_ld = 4, .to_ld = 4});
  EXPECT_TRUE(BeamStep::make(ctx, op, 50, std::span(own).first(3)).has_value());
  EXPECT_FALSE(BeamStep::make(ctx, op, 50, own).has_value());
  BeamStep::Gather same = g;
  same.to = a;  // a state into its own rows needs Kind::back
  EXPECT_FALSE(BeamStep::make(ctx, op, 50, std::vector{same}).has_value());
  same.kind = BeamStep::Kind::back;
  EXPECT_TRUE(BeamStep::make(ctx, op, 50, std::vector{same}).has_value());
  const Tensor long_rows = ctx.tensor({6, 70000});
  const BeamStep::Gather strided{.from = long_rows, .to = b, .cols = 4, .from_ld = 70000, .to_ld = 4};
  EXPECT_FALSE(BeamStep::make(ctx, op, 50, std::vector{strided}).has_value());  // a row stride beyond 16 bits
  BeamStep::Gather wide = g;
  wide.cols = 5;  // rows beyond the tensors
  EXPECT_FALSE(BeamStep::make(ctx, op, 50, std::vector{wide}).has_value());
  BeamStep::Gather half = g;
  half.to = h;  // 16-bit elements
  EXPECT_FALSE(BeamStep::make(ctx, op, 50, std::vector{half}).has_value());
  // A vocabulary no workgroup can take within the loop budget.
  EXPECT_FALSE(BeamStep::make(ctx, BeamSearch(ctx, 1, 63, 64, 5, 2, 0), 1u << 24, {}).has_value());
}

// Bad arguments to a step are refused with what and where, before anything is recorded.
TEST(BeamStep, RecordErrors) {
  Context& ctx = context();
  const std::size_t B = 2, K = 3, R = B * K, kc = 4, V = 50, T = 5;
  const BeamSearch op(ctx, B, K, kc, T, 2, 0);
  const BeamSearch::State st = op.make_state();
  const Tensor a = ctx.tensor({R, 4}, DType::f32), b = ctx.tensor({R, 4}, DType::f32);
  const BeamStep::Gather g{.from = a, .to = b, .cols = 4, .from_ld = 4, .to_ld = 4};
  const auto step = BeamStep::make(ctx, op, V, std::vector{g});
  ASSERT_TRUE(step.has_value());
  const Tensor logits = ctx.tensor({R, V}), nonfinite = ctx.tensor({R}, DType::u32);
  const Tensor cv = ctx.tensor({R, kc}), ci = ctx.tensor({R, kc}, DType::i32);
  const Tensor parents = ctx.tensor({R}, DType::i32), next = ctx.tensor({R}, DType::i32);
  Sequence seq = ctx.sequence();
  const std::uint32_t before = seq.stats().dispatches;
  auto record = [&](std::size_t t, const Tensor& l, std::vector<BeamStep::Gather> gs, bool close) {
    step->record(seq, st, t, l, {}, nonfinite, cv, ci, parents, next, gs, close);
  };
  expect_error([&] { record(T, logits, {g}, false); }, ErrorCode::out_of_range, {"BeamStep", "t = 5"});
  expect_error([&] { record(0, ctx.tensor({R, V + 1}), {g}, false); }, ErrorCode::invalid_argument, {"BeamStep", "logits"});
  expect_error([&] { record(0, logits, {g, g}, false); }, ErrorCode::invalid_argument, {"BeamStep", "beyond"});
  BeamStep::Gather wide = g;
  wide.from_offset = 1;  // its last row runs past `from`
  expect_error([&] { record(0, logits, {wide}, false); }, ErrorCode::invalid_argument, {"BeamStep", "gather 0"});
  BeamStep::Gather in_place = g;
  in_place.kind = BeamStep::Kind::back;  // the kernel was built without that path
  expect_error([&] { record(0, logits, {in_place}, false); }, ErrorCode::invalid_argument, {"BeamStep", "gather 0", "in place"});
  expect_error([&] { record(0, logits, {g}, true); }, ErrorCode::state, {"gate table"});  // no gate open
  // With the output projection: the same checks, and the projection's shape against the logits.
  Linear projection(ctx, 8, V), other(ctx, 8, V + 1);
  projection.load(std::vector<float>(V * 8, 0.5f), {V, 8}, std::vector<float>(V, 0.0f));
  const auto with = BeamStep::make(ctx, op, V, std::vector{g}, {}, &projection);
  ASSERT_TRUE(with.has_value());
  const Tensor x = ctx.tensor({R, 8});
  auto record_projected = [&](const Linear& p, const MatrixView& xv, std::size_t t) {
    with->record(seq, p, xv, st, t, logits, {}, nonfinite, cv, ci, parents, next, std::vector{g}, false);
  };
  expect_error([&] { record_projected(projection, MatrixView::of(x), T); }, ErrorCode::out_of_range, {"BeamStep", "t = 5"});
  expect_error([&] { record_projected(other, MatrixView::of(x), 0); }, ErrorCode::invalid_argument, {"BeamStep", "projection", "8 -> 51"});
  expect_error([&] { record_projected(projection, MatrixView{x, R - 1, 8, 0, 8}, 0); }, ErrorCode::invalid_argument,
               {"BeamStep", "5 rows"});
  EXPECT_EQ(seq.stats().dispatches, before);
}

TEST(BeamSearchLong, ManySeeds) {
  std::uint32_t seed = 5000;
  for (int rep = 0; rep < 4; ++rep) {
    for (std::size_t K : {2, 5, 16, 63}) {
      for (Values v : {Values::coarse, Values::fine, Values::uniform}) {
        for (Eos e : {Eos::frequent, Eos::rare}) {
          run_case(context(), {65, K, 64, 12, 70, e, v, seed++}, 2, 0, nullptr);
          run_case(context(), {33, K, K + 1, 12, 200, e, v, seed++}, 2, 0, nullptr);
          if (HasFailure()) return;
        }
      }
    }
  }
}

}  // namespace
}  // namespace vkrnn
