// The planners (src/plan.hpp) on device profiles written from vendors' published limits
// (tests/common/device_profiles.hpp): no device is used. For every profile, op, config and
// options, each plan must respect the profile's limits -- workgroup sizes, shared memory (from
// the kernels' own SPIR-V), storage buffers per stage, 16-bit storage, subgroup operations --
// or the op must refuse at construction with an Error naming the limit; and the subgroup
// kernels must be shaped so that they are right for any subgroup size the device may run.
#include <algorithm>
#include <array>
#include <bit>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "common/device_profiles.hpp"
#include "expect_error.hpp"
#include "ops/common.hpp"
#include "plan.hpp"

namespace vkrnn::test {
namespace {

using kernels::Variant;

const std::vector<DeviceInfo>& profiles() {
  static const std::vector<DeviceInfo> p = vendor_profiles();
  return p;
}

TEST(Plan, ProfilesCoverTheRange) {
  // The spread the planners are checked over (what the issue asks for, and more).
  std::vector<std::uint32_t> sizes;
  bool varying = false, no_arithmetic = false, no_shuffle = false, no_fp16 = false, cpu = false;
  std::uint32_t min_shared = ~0u, max_shared = 0, min_wg = ~0u, max_wg = 0, min_buffers = ~0u;
  for (const auto& d : profiles()) {
    sizes.push_back(d.subgroup_size);
    varying = varying || d.min_subgroup_size != d.max_subgroup_size;
    no_arithmetic = no_arithmetic || !d.subgroup_arithmetic;
    no_shuffle = no_shuffle || (d.subgroup_operations & VK_SUBGROUP_FEATURE_SHUFFLE_BIT) == 0;
    no_fp16 = no_fp16 || !d.storage_16bit;
    cpu = cpu || d.type == DeviceType::cpu;
    min_shared = std::min(min_shared, d.max_shared_memory);
    max_shared = std::max(max_shared, d.max_shared_memory);
    min_wg = std::min(min_wg, d.max_workgroup_invocations);
    max_wg = std::max(max_wg, d.max_workgroup_invocations);
    min_buffers = std::min(min_buffers, d.max_storage_buffers_per_stage);
  }
  EXPECT_GE(profiles().size(), 12u);
  for (std::uint32_t s : {4u, 8u, 16u, 32u, 64u, 128u}) {
    EXPECT_NE(std::find(sizes.begin(), sizes.end(), s), sizes.end()) << "subgroup size " << s;
  }
  EXPECT_TRUE(varying && no_arithmetic && no_shuffle && no_fp16 && cpu);
  EXPECT_EQ(min_shared, 16384u);
  EXPECT_EQ(max_shared, 65536u);
  EXPECT_EQ(min_wg, 128u);
  EXPECT_EQ(max_wg, 1024u);
  EXPECT_EQ(min_buffers, 4u);
}

// --- what every kernel must satisfy ----------------------------------------------------------

// A kernel as a plan builds it: its workgroup within the device's limits; a subgroup build only
// where subgroup arithmetic exists, shaped so that it is right on every subgroup size the
// device may run (a power of two, one subgroup or whole subgroups of the largest size, and
// ONE_SUBGROUP only within the smallest); and its shared memory, from the SPIR-V.
struct Built {
  std::uint64_t shared = 0;
  std::uint32_t bindings = 0;
};

void check_workgroup(const DeviceInfo& dev, std::uint32_t x, std::uint32_t y, std::uint32_t z,
                     const std::string& what) {
  SCOPED_TRACE(what);
  EXPECT_GE(x, 1u);
  EXPECT_GE(y, 1u);
  EXPECT_GE(z, 1u);
  EXPECT_LE(x, dev.max_workgroup_size[0]);
  EXPECT_LE(y, dev.max_workgroup_size[1]);
  EXPECT_LE(z, dev.max_workgroup_size[2]);
  EXPECT_LE(std::uint64_t(x) * y * z, dev.max_workgroup_invocations);
}

void check_subgroup_shape(const DeviceInfo& dev, std::uint32_t wg, bool one_subgroup,
                          const std::string& what) {
  SCOPED_TRACE(what);
  EXPECT_TRUE(dev.subgroup_arithmetic) << "a subgroup build on a device without arithmetic";
  EXPECT_TRUE(std::has_single_bit(wg)) << wg;
  const std::uint32_t lo = plan::min_lanes(dev), hi = plan::max_lanes(dev);
  EXPECT_TRUE(wg <= lo || wg % hi == 0) << "workgroup " << wg << " with subgroups of " << lo
                                        << ".." << hi << " lanes: a partial subgroup";
  if (one_subgroup) {
    EXPECT_LE(wg, lo);
  }
}

template <class K>
Built build(const DeviceInfo& dev, const typename K::Constants& c, const Variant& v,
            const std::string& what) {
  check_workgroup(dev, c.local_size_x, c.local_size_y, c.local_size_z, what + " " + std::string(K::name));
  if constexpr (requires { c.ONE_SUBGROUP; }) {
    if (v.subgroup) {
      check_subgroup_shape(dev, c.local_size_x, c.ONE_SUBGROUP, what);
    } else {
      EXPECT_FALSE(c.ONE_SUBGROUP) << what;
    }
  }
  if (v.subgroup && K::axes.subgroup) {
    EXPECT_TRUE(dev.subgroup_arithmetic) << what << ": a subgroup build without arithmetic";
  }
  return {kernels::shared_bytes<K>(c, v), K::storage_buffer_count};
}

// The plan fits the device's limits -- or require() refuses it, naming the limit.
void check_needs(const DeviceInfo& dev, const plan::Needs& needs, const std::vector<Built>& built,
                 const std::string& what) {
  SCOPED_TRACE(what);
  std::uint64_t shared = 0;
  std::uint32_t buffers = 0;
  for (const auto& b : built) {
    shared = std::max(shared, b.shared);
    buffers = std::max(buffers, b.bindings);
  }
  EXPECT_EQ(needs.shared_bytes, shared) << "the plan's needs are not its kernels'";
  EXPECT_EQ(needs.storage_buffers, buffers);
  if (needs.fp16_storage && !dev.storage_16bit) {
    expect_error([&] { plan::require(dev, needs, what); }, ErrorCode::missing_feature, {"storageBuffer16BitAccess"});
  } else if (buffers > dev.max_storage_buffers_per_stage) {
    expect_error([&] { plan::require(dev, needs, what); }, ErrorCode::out_of_range, {"maxPerStageDescriptorStorageBuffers"});
  } else if (shared > dev.max_shared_memory) {
    expect_error([&] { plan::require(dev, needs, what); }, ErrorCode::out_of_range, {"maxComputeSharedMemorySize"});
  } else {
    EXPECT_NO_THROW(plan::require(dev, needs, what));
  }
}

std::vector<OpOptions> option_grid() {
  std::vector<OpOptions> out;
  out.push_back({});
  out.push_back({.fp16_storage = true});
  out.push_back({.force_shared_memory_reduction = true});
  for (std::uint32_t wg : {1u, 4u, 48u, 64u, 1024u, 4096u}) out.push_back({.workgroup_size = wg});
  out.push_back({.tile = 37});
  return out;
}

std::string describe(const OpOptions& o) {
  return fmt::format("fp16 {} shared-memory {} workgroup {} tile {}", o.fp16_storage,
                     o.force_shared_memory_reduction, o.workgroup_size, o.tile);
}

// check(dev, options, what) for every profile and every option set of the grid.
template <class F>
void for_each_profile(const F& check) {
  for (const auto& dev : profiles()) {
    for (const auto& o : option_grid()) {
      const std::string what = fmt::format("'{}', {}", dev.name, describe(o));
      SCOPED_TRACE(what);
      check(dev, o, what);
    }
  }
}

// Every kernel uses subgroup arithmetic exactly where the device and the options allow it.
void check_subgroup_choice(const DeviceInfo& dev, const OpOptions& o, const Variant& v,
                           const std::string& what) {
  EXPECT_EQ(v.subgroup, dev.subgroup_arithmetic && !o.force_shared_memory_reduction) << what;
}

// --- decoder attention ---------------------------------------------------------------------

struct AttentionCase {
  Score score;
  std::size_t batch, S, hidden, key_dim, heads;
  ScoreSplit split = ScoreSplit::automatic;
};

std::vector<AttentionCase> attention_cases() {
  std::vector<AttentionCase> out;
  for (Score s : {Score::dot, Score::general, Score::additive}) {
    out.push_back({s, 1, 1, 1, 1, 1});
    out.push_back({s, 3, 300, 40, 40, 1});
    out.push_back({s, 2, 5000, 256, 128, 1, ScoreSplit::per_subgroup});
    out.push_back({s, 8, 97, 512, 512, 1, ScoreSplit::per_invocation});
  }
  out.push_back({Score::scaled_dot, 4, 1000, 256, 256, 4});
  out.push_back({Score::scaled_dot, 1, 200000, 64, 64, 1});
  out.push_back({Score::scaled_dot, 2, 33, 1024, 1024, 2});
  // Memories past kStreamValuesBytes (streamed on CPU drivers).
  out.push_back({Score::additive, 16, 4096, 256, 256, 1});
  out.push_back({Score::dot, 8, 8192, 512, 512, 1});
  return out;
}

attention_detail::Dims dims(const AttentionCase& c) {
  AttentionConfig cfg;
  cfg.score = c.score;
  cfg.batch = c.batch;
  cfg.max_source = c.S;
  cfg.hidden = c.hidden;
  cfg.key_dim = c.key_dim;
  cfg.query_dim = c.score == Score::additive || c.score == Score::general ? c.hidden : c.key_dim;
  cfg.heads = c.heads;
  cfg.score_split = c.split;
  return attention_detail::resolve(cfg, "test");
}

// Loops over a key's dims with the stride of the real subgroup (at least the smallest) cover
// every dim; a split of S covers S within lavapipe's loop budget.
template <class C>
void check_score(const DeviceInfo& dev, const attention_detail::Dims& d, const C& c,
                 const std::string& what) {
  SCOPED_TRACE(what);
  const std::uint32_t units = c.KVEC4 ? d.dk / 4 : d.dk;
  if (c.KVEC4) {
    EXPECT_TRUE(d.dk % 4 == 0 && d.Hk % 4 == 0);
  }
  const std::uint32_t stride =
      c.SG_CLUSTER ? std::min(plan::min_lanes(dev), c.local_size_x) : 1u;
  EXPECT_GE(std::uint64_t(c.KU) * stride, units) << "the dims loop stops short";
  EXPECT_GE(c.R, 1u);
}

// in_kernel: the fused kernel projects the query itself (no projection dispatch). CPU drivers
// project through the dense layers' GEMV (plan::gemv's own checks), GPUs with attention_query.
void check_query(const DeviceInfo& dev, const OpOptions& o, const plan::QueryProjection& q,
                 const attention_detail::Dims& d, const std::string& what,
                 std::vector<Built>& built, bool in_kernel = false) {
  EXPECT_EQ(q.used, attention_detail::projects_query(d.config.score) && !in_kernel) << what;
  EXPECT_EQ(q.gemv, dev.type == DeviceType::cpu) << what;
  if (!q.used || q.gemv) return;
  check_subgroup_choice(dev, o, q.variant, what + " query");
  built.push_back(build<kernels::AttentionQuery>(dev, q.constants, q.variant, what + " query"));
}

TEST(Plan, DecoderAttentionRespectsEveryProfile) {
  int plans = 0, merged_plans = 0, combined_plans = 0, stream_plans = 0, values_plans = 0;
  for (const auto& dev : profiles()) {
    for (const auto& c : attention_cases()) {
      const auto d = dims(c);
      for (const auto& o : option_grid()) {
        const std::string what =
            fmt::format("'{}', score {} B {} S {} H {} A {} heads {}, {}", dev.name,
                        to_string(c.score), c.batch, c.S, c.hidden, c.key_dim, c.heads, describe(o));
        SCOPED_TRACE(what);
        {
          const auto p = plan::attention_scores(dev, d, o);
          check_subgroup_choice(dev, o, p.variant, what);
          std::vector<Built> built{build<kernels::AttentionScores>(dev, p.constants, p.variant, what)};
          check_query(dev, o, p.query, d, what, built);
          check_score(dev, d, p.constants, what);
          EXPECT_GE(std::uint64_t(p.block) * p.tiles, d.S);
          check_needs(dev, p.needs, built, what + " scores");
        }
        {
          const auto p = plan::masked_softmax(dev, d, o);
          check_subgroup_choice(dev, o, p.variant, what);
          std::vector<Built> built{build<kernels::AttentionSoftmax>(dev, p.constants, p.variant, what)};
          EXPECT_EQ(p.tile, p.constants.local_size_x * p.constants.E);
          EXPECT_GE(std::uint64_t(p.tile) * p.tiles, d.S);
          check_needs(dev, p.needs, built, what + " softmax");
        }
        {
          const auto p = plan::attention_context(dev, d, o);
          std::vector<Built> built{build<kernels::AttentionContext>(dev, p.constants, p.variant, what)};
          EXPECT_GE(std::uint64_t(p.column_tile) * p.column_tiles, d.dv);
          EXPECT_GE(std::uint64_t(p.chunk) * p.chunks, d.S);
          // An invocation's loop iterations over its chunk stay within lavapipe's budget.
          EXPECT_LE(std::uint64_t(p.chunk) * (1 + p.constants.VPT), plan::kLoopBudget);
          check_needs(dev, p.needs, built, what + " context");
        }
        {
          const auto p = plan::fused_attention(dev, d, o);
          check_subgroup_choice(dev, o, p.variant, what);
          std::vector<Built> built{build<kernels::AttentionFused>(dev, p.constants, p.variant, what)};
          // Split rows: merged by the row's last workgroup while that merge is short (its loop,
          // beside the workgroup's own split, within the budget), else by the combine dispatch.
          EXPECT_EQ(p.merge, p.constants.MERGE > 0);
          if (p.splits > 1 && p.merge) {
            const std::uint64_t wg = p.constants.local_size_x;
            const std::uint64_t merge_loop = 2 * ((p.splits + wg - 1) / wg) +
                                             p.splits * ((d.dv + wg - 1) / wg) + (d.S + wg - 1) / wg;
            EXPECT_GE(p.constants.MERGE, p.splits);
            EXPECT_LE(merge_loop, plan::is_cpu(dev) ? plan::kMergeLoopCpu : plan::kMergeLoopGpu);
            ++merged_plans;
          } else if (p.splits > 1) {
            built.push_back(build<kernels::AttentionFusedCombine>(dev, p.combine, p.variant, what));
            EXPECT_LE(p.splits, p.combine.MAX_SPLIT);
            ++combined_plans;
          } else {
            EXPECT_FALSE(p.merge);
          }
          // The query projected in the kernel into a shared array that holds it (and the raw
          // query), its loop within half the loop budget: ceil(Hk / WG) x Hq/4 or Hq with an
          // invocation per output, or with QPL (CPU drivers' subgroup builds, vec4 queries) a
          // subgroup per output whose fewest lanes (the smallest subgroup, or a smaller
          // workgroup) hold every vec4 of the query, QPL each; W_q read as texels only within
          // the texel limit; where a row has several workgroups, each one's repeat of it is a
          // small share of its own keys and values.
          const bool in_kernel = p.constants.QP > 0;
          if (!in_kernel) {
            EXPECT_EQ(p.constants.QPL, 0u);
          }
          if (in_kernel) {
            EXPECT_TRUE(attention_detail::projects_query(d.config.score));
            EXPECT_GE(p.constants.QP, d.Hk);
            EXPECT_GE(p.constants.QP, d.Hq) << "the raw query is staged in QP shared floats too";
            if (p.constants.TEXEL) {
              EXPECT_TRUE(plan::texel_loads(dev, std::uint64_t(d.Hk) * d.Hq * 4)) << "W_q read as texels";
            }
            const std::uint64_t wg = p.constants.local_size_x;
            const bool split_query = plan::is_cpu(dev) && p.variant.subgroup && d.Hq % 4 == 0;
            EXPECT_EQ(p.constants.QPL > 0, split_query);
            if (split_query) {
              const std::uint64_t lanes = std::clamp<std::uint64_t>(plan::min_lanes(dev), 1, wg);
              EXPECT_GE(p.constants.QPL * lanes, d.Hq / 4) << "every vec4 of the query has a lane";
              const std::uint64_t subgroups = std::max<std::uint64_t>(1, wg / plan::max_lanes(dev));
              EXPECT_LE((d.Hk + subgroups - 1) / subgroups * p.constants.QPL + p.constants.QPL, plan::kLoopBudget / 2);
            } else {
              const std::uint64_t q_units = d.Hq % 4 == 0 ? d.Hq / 4 : d.Hq;
              EXPECT_LE((d.Hk + wg - 1) / wg * (1 + q_units), plan::kLoopBudget / 2);
            }
            if (p.splits * p.column_tiles > 1) {
              // CPU drivers whose threads the rows leave idle may repeat a larger share.
              const bool few_rows = dev.type == DeviceType::cpu && dev.cpu_threads > 0 &&
                                    std::uint64_t(d.rows) * p.column_tiles < 2ull * dev.cpu_threads;
              EXPECT_LE(std::uint64_t(d.Hk) * d.Hq * (few_rows ? plan::kFoldedRepeatShareCpu : plan::kFoldedRepeatShare),
                        std::uint64_t(p.chunk) * (d.dk + std::min(p.column_tile, d.dv)));
            }
          } else if (attention_detail::projects_query(d.config.score) && p.splits * p.column_tiles == 1 &&
                     std::uint64_t(d.Hk) * d.Hq <= 4096) {
            ADD_FAILURE() << "a small projection of an unsplit row was not folded";
          }
          // Streamed, kCpuLoadStreams segments of the split in step: only on CPU drivers with
          // one subgroup, a subgroup per score, one column tile and the query's units in
          // registers; its loop within the budget too (steps: the rescale, and per segment the
          // score's and the context's loops, and the values' loads).
          const auto check_streamed = [&](const kernels::AttentionFused::Constants& s) {
            EXPECT_TRUE(plan::is_cpu(dev) && p.variant.subgroup && s.ONE_SUBGROUP && s.SG_CLUSTER) << what;
            EXPECT_TRUE(s.STREAM && s.TEXEL && s.KVEC4 && s.VVEC4 && p.column_tiles == 1) << what;
            EXPECT_EQ(s.POS_STREAMS, plan::kCpuLoadStreams) << what;
            EXPECT_LE(s.KU, 64u);
            EXPECT_LE(s.VPT, 64u);
            const std::uint64_t steps = (p.chunk + s.POS_STREAMS - 1) / s.POS_STREAMS;
            const std::uint64_t per_segment = s.STREAM_VALUES ? 3 + s.KU + 2 * s.VPT : 2 + s.KU + s.VPT;
            EXPECT_LE(steps * (1 + s.VPT + s.POS_STREAMS * per_segment), plan::kLoopBudget) << what;
          };
          // Keys apart from the values: streamed from kStreamValuesBytes of them on.
          const auto& k = p.constants;
          const bool large = std::uint64_t(d.B) * d.S * (d.Hk + d.H) * 4 >= plan::kStreamValuesBytes;
          EXPECT_EQ(k.STREAM, k.STREAM_VALUES) << what;
          if (k.STREAM) {
            check_streamed(k);
            EXPECT_TRUE(large) << what;
            ++values_plans;
          } else {
            EXPECT_EQ(k.POS_STREAMS, 1u) << what;
            // Every large memory the walk can serve takes it.
            const bool walkable = plan::is_cpu(dev) && p.variant.subgroup && k.ONE_SUBGROUP && k.SG_CLUSTER &&
                                  k.TEXEL && p.column_tiles == 1 && k.KU <= 64 && k.VPT <= 64;
            EXPECT_FALSE(large && walkable) << what << ": a large memory kept blocked";
          }
          // Keys that are the values: only where a lane's key units are its value units (VPT =
          // KU), dot-like scores; the same kernel as the plain one with STREAM otherwise.
          if (p.streamed.STREAM) {
            const auto& s = p.streamed;
            check_streamed(s);
            EXPECT_FALSE(s.STREAM_VALUES) << what;
            EXPECT_TRUE(s.SCORE_MODE == 0 && d.Hk == d.H && d.dk == d.dv) << what;
            EXPECT_EQ(s.VPT, s.KU);
            EXPECT_TRUE(s.local_size_x == k.local_size_x && s.KU == k.KU && s.VPT == k.VPT &&
                        s.TEXEL == k.TEXEL && s.MERGE == k.MERGE && s.QP == k.QP && s.QPL == k.QPL &&
                        s.R == k.R && s.SG_CLUSTER == k.SG_CLUSTER)
                << what << ": the streamed kernel is the plain one with STREAM";
            built.push_back(build<kernels::AttentionFused>(dev, p.streamed, p.variant, what));
            ++stream_plans;
          }
          check_query(dev, o, p.query, d, what, built, in_kernel);
          check_score(dev, d, p.constants, what);
          EXPECT_GE(std::uint64_t(p.chunk) * p.splits, d.S);
          EXPECT_GE(std::uint64_t(p.column_tile) * p.column_tiles, d.dv);
          check_needs(dev, p.needs, built, what + " fused");
        }
        ++plans;
      }
    }
    {
      for (const auto& o : option_grid()) {
        const auto p = plan::key_projection(dev, o);
        const std::string what = fmt::format("'{}' key projection, {}", dev.name, describe(o));
        EXPECT_EQ(p.constants.local_size_x, p.constants.local_size_y) << what;
        const Built b = build<kernels::AttentionKeys>(dev, p.constants, p.variant, what);
        // T and RM shrink until the tiles fit (a 1 x 1 workgroup of one row always does).
        EXPECT_LE(b.shared, dev.max_shared_memory) << what;
        check_needs(dev, p.needs, {b}, what);
      }
    }
  }
  EXPECT_GT(plans, 1000);
  EXPECT_GT(merged_plans, 0);    // split rows merged in the fused kernel ...
  EXPECT_GT(combined_plans, 0);  // ... and by the combine dispatch, both occur
  EXPECT_GT(stream_plans, 0);
  EXPECT_GT(values_plans, 0);
}

// A W3 decoder step's attention (additive, S = 32, 512-wide memory, 256-wide keys and query;
// B = 1 and 16) is one dispatch on every device that can run it: one workgroup holds S (no
// combine pass) and projects the query itself (no attention_query dispatch).
TEST(Plan, ShortAdditiveSourceIsOneDispatchEverywhere) {
  for (const auto& dev : profiles()) {
    for (std::size_t B : {1u, 16u}) {
      const auto d = dims({Score::additive, B, 32, 512, 256, 1});
      for (const OpOptions& o : {OpOptions{}, OpOptions{.fp16_storage = true}, OpOptions{.force_shared_memory_reduction = true}}) {
        SCOPED_TRACE(fmt::format("'{}' B {} {}", dev.name, B, describe(o)));
        const auto p = plan::fused_attention(dev, d, o);
        if (p.needs.storage_buffers > dev.max_storage_buffers_per_stage) continue;  // refused
        EXPECT_EQ(p.splits, 1u);
        EXPECT_GT(p.constants.QP, 0u);
        EXPECT_FALSE(p.query.used);
      }
    }
  }
}

// W1.general / W1.additive B = 1 at S = 4096 (H = 256): on lavapipe (2 threads) the one row is
// split in two runs per thread and each projects the query itself, one dispatch in all; with
// rows enough to fill the threads (B = 16), or a projection too big beside a split's own work
// (H = 512), the projection keeps its dispatch; a driver with more threads splits as before.
TEST(Plan, CpuDecodeStepFoldsTheQueryIntoFewSplits) {
  const auto all = profiles();
  const auto& cpu = all[18];  // lavapipe, 8 lanes, 2 threads
  ASSERT_EQ(cpu.type, DeviceType::cpu);
  ASSERT_EQ(cpu.cpu_threads, 2u);
  for (Score score : {Score::general, Score::additive}) {
    SCOPED_TRACE(score == Score::general ? "general" : "additive");
    const auto one = plan::fused_attention(cpu, dims({score, 1, 4096, 256, 256, 1}), {});
    EXPECT_EQ(one.splits, 4u);
    EXPECT_GT(one.constants.QP, 0u);
    EXPECT_FALSE(one.query.used);
    EXPECT_TRUE(one.merge);  // no combine dispatch either
    const auto batch = plan::fused_attention(cpu, dims({score, 16, 4096, 256, 256, 1}), {});
    EXPECT_EQ(batch.constants.QP, 0u);
    EXPECT_TRUE(batch.query.used);
    const auto wide = plan::fused_attention(cpu, dims({score, 1, 4096, 512, 512, 1}), {});
    EXPECT_EQ(wide.constants.QP, 0u);
    EXPECT_TRUE(wide.query.used);
    EXPECT_EQ(wide.splits, 8u);
    DeviceInfo many = cpu;
    many.cpu_threads = 16;
    const auto spread = plan::fused_attention(many, dims({score, 1, 4096, 256, 256, 1}), {});
    EXPECT_EQ(spread.splits, 8u);
    EXPECT_TRUE(spread.query.used);
    // GPUs: as many splits as fill the device, the projection a dispatch of its own.
    const auto gpu = plan::fused_attention(all[0], dims({score, 1, 4096, 256, 256, 1}), {});
    EXPECT_GT(gpu.splits, 8u);
    EXPECT_TRUE(gpu.query.used);
  }
}

// The automatic choices differ between CPU drivers and GPUs (tested on lavapipe only so far):
// GPUs get 64+ invocations, one position per invocation and splits that fill the device.
TEST(Plan, GpuAndCpuChoicesDiffer) {
  const auto all = profiles();
  const auto& gpu = all[0];   // NVIDIA
  const auto& cpu = all[18];  // lavapipe, 8 lanes
  ASSERT_EQ(cpu.type, DeviceType::cpu);
  const auto d = dims({Score::additive, 4, 2000, 256, 128, 1});
  const auto g = plan::fused_attention(gpu, d, {});
  const auto c = plan::fused_attention(cpu, d, {});
  EXPECT_EQ(g.constants.local_size_x, 64u);
  EXPECT_EQ(g.constants.R, 1u);
  EXPECT_EQ(c.constants.local_size_x, 8u);
  EXPECT_EQ(c.constants.R, 4u);
  EXPECT_GT(g.splits, c.splits);
  // Keys that are the values (W1.dot's shape) streamed on lavapipe only; additive never.
  const auto dot = dims({Score::dot, 1, 4096, 256, 0, 1});
  EXPECT_TRUE(plan::fused_attention(cpu, dot, {}).streamed.STREAM);
  EXPECT_FALSE(plan::fused_attention(gpu, dot, {}).streamed.STREAM);
  EXPECT_FALSE(c.streamed.STREAM);
  // Keys and values apart streamed on lavapipe from kStreamValuesBytes on (W1.additive B = 16
  // S = 4096: 128 MiB), not below (B = 4: 32 MiB).
  const auto large = dims({Score::additive, 16, 4096, 256, 256, 1});
  EXPECT_TRUE(plan::fused_attention(cpu, large, {}).constants.STREAM_VALUES);
  EXPECT_FALSE(plan::fused_attention(gpu, large, {}).constants.STREAM_VALUES);
  EXPECT_FALSE(plan::fused_attention(cpu, dims({Score::additive, 4, 4096, 256, 256, 1}), {}).constants.STREAM_VALUES);
  // Self-attention's query blocks: longest and shortest in turn on CPU drivers, longest first
  // on GPUs.
  EXPECT_TRUE(plan::paired_query_blocks(cpu));
  EXPECT_FALSE(plan::paired_query_blocks(gpu));
  EXPECT_EQ(plan::gemm_path(gpu, plan::gemm(gpu, {}), 1), plan::GemmPath::gemv);
  EXPECT_EQ(plan::gemm_path(gpu, plan::gemm(gpu, {}), 100), plan::GemmPath::tiled);
  EXPECT_EQ(plan::gemm_path(cpu, plan::gemm(cpu, {}), 100), plan::GemmPath::gemv_invocation);
  // Texel loads on CPU drivers only, for tensors of one texel up to maxTexelBufferElements.
  EXPECT_FALSE(plan::texel_loads(gpu, 1 << 20));
  EXPECT_TRUE(plan::texel_loads(cpu, 16));
  EXPECT_TRUE(plan::texel_loads(cpu, 16 * std::uint64_t(cpu.max_texel_buffer_elements)));
  EXPECT_FALSE(plan::texel_loads(cpu, 16 * std::uint64_t(cpu.max_texel_buffer_elements) + 1));
  EXPECT_FALSE(plan::texel_loads(cpu, 15));
  auto no_format = cpu;
  no_format.uniform_texel_u32x4 = false;
  EXPECT_FALSE(plan::texel_loads(no_format, 1 << 20));
  // K walked in segments on CPU drivers only, for packed fp32 W and one row of X.
  kernels::Gemv::Constants packed;
  packed.TM = 1;
  packed.PACK_ROWS = 64;
  EXPECT_EQ(plan::gemv_k_streams(cpu, packed), plan::kCpuLoadStreams);
  EXPECT_EQ(plan::gemv_k_streams(gpu, packed), 1u);
  for (auto change : {+[](kernels::Gemv::Constants& c) { c.TM = 16; }, +[](kernels::Gemv::Constants& c) { c.WIDE = true; },
                      +[](kernels::Gemv::Constants& c) { c.PACK_ROWS = 0; }}) {
    auto other = packed;
    change(other);
    EXPECT_EQ(plan::gemv_k_streams(cpu, other), 1u);
  }
}

// --- dense layers --------------------------------------------------------------------------

TEST(Plan, GemmRespectsEveryProfile) {
  int shuffled = 0;
  for_each_profile([&shuffled](const DeviceInfo& dev, const OpOptions& o, const std::string& what) {
    const auto g = plan::gemm(dev, o);
    EXPECT_EQ(g.subgroups, dev.subgroup_arithmetic && !o.force_shared_memory_reduction);
    std::vector<Built> built{build<kernels::Gemm>(dev, g.tiled, {.fp16 = o.fp16_storage}, what + " tiled")};
    EXPECT_LE(built[0].shared, dev.max_shared_memory) << "BK halves until the tiles fit";
    for (std::size_t m : {1u, 3u, 8u, 9u, 64u, 1000u}) {
      for (bool aligned : {true, false}) {
        const auto path = plan::gemm_path(dev, g, m);
        if (path == plan::GemmPath::tiled) continue;
        const auto v = plan::gemv(dev, g, o, m, path, aligned);
        const std::string w = fmt::format("{} gemv M {} aligned {}", what, m, aligned);
        const Built b = build<kernels::Gemv>(dev, v.constants, v.variant, w);
        EXPECT_EQ(b.shared, 0u);
        if (v.variant.subgroup) {
          // A coop is a whole subgroup of any size the device may run.
          EXPECT_EQ(v.constants.local_size_x % plan::max_lanes(dev), 0u) << w;
          EXPECT_EQ(v.constants.BLOCKS, v.constants.local_size_x / g.coop_lanes) << w;
        } else {
          EXPECT_EQ(v.constants.BLOCKS, v.constants.local_size_x) << w;
        }
        EXPECT_EQ(v.constants.ALIGNED, aligned);
        EXPECT_GE(v.constants.TM, 1u);
        // X shared by shuffles: per-invocation coops on a CPU driver, several rows of X, a
        // subgroup size the device never varies, shuffles in compute, whole subgroups.
        if (v.variant.shuffle) {
          constexpr std::uint32_t kShuffle = VK_SUBGROUP_FEATURE_BASIC_BIT | VK_SUBGROUP_FEATURE_SHUFFLE_BIT;
          EXPECT_TRUE(plan::is_cpu(dev) && !v.variant.subgroup && v.constants.TM > 1) << w;
          EXPECT_TRUE(dev.subgroup_in_compute && (dev.subgroup_operations & kShuffle) == kShuffle) << w;
          EXPECT_EQ(v.constants.X_LANES, dev.subgroup_size) << w;
          EXPECT_EQ(dev.min_subgroup_size, dev.max_subgroup_size) << w;
          EXPECT_EQ(v.constants.local_size_x % v.constants.X_LANES, 0u) << w;
          ++shuffled;
        } else if (plan::is_cpu(dev) && !v.variant.subgroup && m > 1 && o.workgroup_size == 0 &&
                   (dev.subgroup_operations & VK_SUBGROUP_FEATURE_SHUFFLE_BIT) != 0 && dev.subgroup_in_compute &&
                   v.constants.local_size_x % dev.subgroup_size == 0) {
          ADD_FAILURE() << w << ": several rows of X on a CPU driver with shuffles, not shared";
        }
      }
    }
    check_needs(dev, g.needs, {built[0], {0, kernels::Gemv::storage_buffer_count}}, what);
  });
  EXPECT_GT(shuffled, 0);  // the lavapipe profiles take it
}

// Dense weights' storage: automatic follows fp16_storage, an explicit choice wins over it, and
// only f16 needs storageBuffer16BitAccess (int8 is read as 32-bit words); the WEIGHT_I8
// builds of both kernels bind no more buffers and use no more shared memory than the f32 ones.
TEST(Plan, DenseWeightStorage) {
  using WS = WeightStorage;
  for (const bool fp16 : {false, true}) {
    for (const WS ws : {WS::automatic, WS::f32, WS::f16, WS::i8}) {
      OpOptions o;
      o.fp16_storage = fp16;
      o.weight_storage = ws;
      const WS want = ws != WS::automatic ? ws : fp16 ? WS::f16 : WS::f32;
      EXPECT_EQ(plan::weight_storage(o), want) << fp16 << " " << to_string(ws);
      for (const auto& dev : profiles()) {
        const auto g = plan::gemm(dev, o);
        EXPECT_EQ(g.needs.fp16_storage, want == WS::f16) << dev.name;
      }
    }
  }
  const auto dev = profiles()[0];
  const auto g = plan::gemm(dev, {});
  auto tiled = g.tiled;
  tiled.WEIGHT_I8 = true;
  const Built t32 = build<kernels::Gemm>(dev, g.tiled, {}, "tiled"), t8 = build<kernels::Gemm>(dev, tiled, {}, "tiled i8");
  EXPECT_EQ(t8.shared, t32.shared);
  auto v = plan::gemv(dev, g, {}, 1, plan::GemmPath::gemv, false);
  v.constants.WEIGHT_I8 = true;
  EXPECT_EQ(build<kernels::Gemv>(dev, v.constants, v.variant, "gemv i8").shared, 0u);
  check_needs(dev, g.needs, {t8, {0, kernels::Gemv::storage_buffer_count}}, "i8");
}

// Recurrent weights follow the same rule: f16 takes the _f16 builds, i8 the f32 builds with
// WEIGHT_I8 on every recurrent kernel (no 16-bit storage needed), f32 neither.
TEST(Plan, RecurrentWeightStorage) {
  using WS = WeightStorage;
  for (const auto& dev : profiles()) {
    for (const WS ws : {WS::f32, WS::f16, WS::i8}) {
      OpOptions o;
      o.weight_storage = ws;
      for (const std::size_t P : {0u, 4u}) {
        const auto r = plan::rnn(dev, {CellType::lstm, 64, P}, o, 3);
        SCOPED_TRACE(fmt::format("{} {} P={}", dev.name, to_string(ws), P));
        EXPECT_EQ(r.steps.variant.fp16, ws == WS::f16);
        EXPECT_EQ(r.steps.proj_variant.fp16, ws == WS::f16);
        EXPECT_EQ(r.fused.variant.fp16, ws == WS::f16);
        EXPECT_EQ(r.steps.constants.WEIGHT_I8, ws == WS::i8);
        EXPECT_EQ(r.steps.proj.WEIGHT_I8, ws == WS::i8);
        EXPECT_EQ(r.fused.constants.WEIGHT_I8, ws == WS::i8);
        EXPECT_EQ(r.needs.fp16_storage, ws == WS::f16);
      }
    }
  }
}

// --- self-attention --------------------------------------------------------------------------

TEST(Plan, SelfAttentionRespectsEveryProfile) {
  for (const auto& dev : profiles()) {
    for (std::size_t D : {1u, 8u, 30u, 64u, 100u, 128u, 256u}) {
      for (std::uint32_t lanes : {0u, 4u}) {
        for (const auto& o : option_grid()) {
          const std::string what =
              fmt::format("'{}', head_dim {} lanes_per_row {}, {}", dev.name, D, lanes, describe(o));
          SCOPED_TRACE(what);
          SelfAttentionConfig cfg;
          cfg.batch = 2;
          cfg.max_seq = 100;
          cfg.hidden = D;
          cfg.lanes_per_row = lanes;
          SelfAttentionPlan p;
          try {
            p = plan::self_attention(dev, D, o, cfg);
          } catch (const Error& e) {
            // Only a head too wide for the device's shared memory, named as such.
            EXPECT_EQ(e.code(), ErrorCode::out_of_range);
            EXPECT_NE(std::string(e.what()).find("maxComputeSharedMemorySize"), std::string::npos);
            continue;
          }
          const auto c = plan::self_attention_constants(p, D);
          const auto v = plan::self_attention_variant(p, o);
          const Built b = build<kernels::SelfAttention>(dev, c, v, what);
          EXPECT_EQ(b.shared, p.shared_bytes);
          EXPECT_LE(b.shared, dev.max_shared_memory);
          EXPECT_EQ(p.workgroup_size % p.lanes_per_row, 0u);
          if (p.subgroup_shuffle) {
            EXPECT_EQ(p.lanes_per_row, 1u);
            EXPECT_NE(dev.subgroup_operations & VK_SUBGROUP_FEATURE_SHUFFLE_BIT, 0u);
            EXPECT_EQ(p.workgroup_size % dev.subgroup_size, 0u);
            EXPECT_FALSE(o.force_shared_memory_reduction);
          }
          const std::uint32_t wwg = plan::self_attention_weights_workgroup(dev);
          build<kernels::SelfAttentionWeights>(dev, {.local_size_x = wwg, .D = std::uint32_t(D)},
                                               {.fp16 = o.fp16_storage}, what + " weights");
        }
      }
    }
  }
}

// --- decoding, elementwise, memory ---------------------------------------------------------

TEST(Plan, DecodingAndElementwiseRespectEveryProfile) {
  for (const auto& dev : profiles()) {
    for (const auto& o : option_grid()) {
      const std::string what = fmt::format("'{}', {}", dev.name, describe(o));
      SCOPED_TRACE(what);
      const auto a = plan::argmax(dev, o);
      check_subgroup_choice(dev, o, a.variant, what);
      build<kernels::Argmax>(dev, {.local_size_x = a.workgroup, .ONE_SUBGROUP = a.one_subgroup},
                             a.variant, what + " argmax");
      const auto t = plan::topk(dev, o);
      check_subgroup_choice(dev, o, t.variant, what);
      build<kernels::TopK>(dev, {.local_size_x = t.workgroup, .K_MAX = 64, .ONE_SUBGROUP = t.one_subgroup},
                           t.variant, what + " topk");
      const auto lp = plan::logits_processor(dev, o);
      check_subgroup_choice(dev, o, lp.variant, what);
      build<kernels::LogitsProcessor>(dev, {.local_size_x = lp.workgroup, .ONE_SUBGROUP = lp.one_subgroup},
                                      lp.variant, what + " logits processor");
      check_workgroup(dev, plan::beam_search_workgroup(dev, o), 1, 1, what + " beam search");
      check_workgroup(dev, plan::embedding_workgroup(dev, o), 1, 1, what + " embedding");
      check_workgroup(dev, plan::elementwise_workgroup(dev, o), 1, 1, what + " elementwise");
      // Beam search binds 13 storage buffers: refused by name below that.
      plan::Needs beam;
      beam.add(0, kernels::BeamSearch::storage_buffer_count);
      check_needs(dev, beam, {{0, kernels::BeamSearch::storage_buffer_count}}, what + " beam search");
    }
    for (bool force : {false, true}) {
      EXPECT_EQ(plan::host_mapped_tensors(dev, force), dev.unified_memory && !force) << dev.name;
    }
  }
}

// Rows of data-dependent length: the narrowest workgroup (the planned one, doubled) that keeps
// one invocation within the loop budget, re-planned for the subgroup shape; or Error naming the
// loop budget when even the device's widest does not.
template <class Loops>
void check_row(const DeviceInfo& dev, std::uint32_t base, bool subgroups, std::uint32_t got,
               const Loops& loops, const std::string& what) {
  SCOPED_TRACE(what);
  check_workgroup(dev, got, 1, 1, what);
  EXPECT_LE(loops(got), plan::kLoopBudget);
  // Reached from the planned workgroup through narrower candidates that all broke the budget.
  std::uint32_t wg = base;
  for (; wg < got; wg = plan::next_row_workgroup(dev, wg, subgroups)) {
    EXPECT_GT(loops(wg), plan::kLoopBudget) << "not the narrowest: " << wg << " fits";
  }
  EXPECT_EQ(wg, got) << "not a candidate from " << base;
}

// One row planner's answer for a row: `plan()` gives the workgroup (check_row), never narrower
// than for a shorter row (`last`), or throws -- exactly when the widest candidate breaks the
// budget -- Error(out_of_range) naming the loop budget. Returns the workgroup, 0 if refused.
template <class Plan, class Loops>
std::uint32_t check_row_plan(const DeviceInfo& dev, std::uint32_t base, bool subgroups, const Plan& plan,
                             const Loops& loops, std::uint32_t& last, const std::string& what) {
  SCOPED_TRACE(what);
  try {
    const std::uint32_t got = plan();
    check_row(dev, base, subgroups, got, loops, what);
    EXPECT_GE(got, last);
    last = got;
    return got;
  } catch (const Error& err) {
    EXPECT_EQ(err.code(), ErrorCode::out_of_range);
    EXPECT_NE(std::string(err.what()).find("loop budget"), std::string::npos) << err.what();
    EXPECT_GT(loops(plan::widest_workgroup(dev, base, subgroups)), plan::kLoopBudget) << err.what();
    last = ~0u;
    return 0;
  }
}

// A reduction row planner (argmax_row, topk_row): the planned variant widened (check_row); the
// shared-memory tree only where the subgroup build fits at no width; Error naming the loop budget
// where neither does. Longer rows never get a narrower workgroup of the same variant.
template <class Plan, class Loops>
void check_reduction_row(const DeviceInfo& dev, const plan::Reduction& base, const Plan& plan,
                         const Loops& loops, plan::Reduction& last, const std::string& what) {
  SCOPED_TRACE(what);
  auto widest_loops = [&](bool sg) { return loops(sg, plan::widest_workgroup(dev, base.workgroup, sg)); };
  try {
    const plan::Reduction r = plan();
    if (r.variant.subgroup != base.variant.subgroup) {
      EXPECT_TRUE(base.variant.subgroup) << "a tree build widened into a subgroup one";
      EXPECT_GT(widest_loops(true), plan::kLoopBudget) << "the subgroup build fits";
    }
    check_row(dev, base.workgroup, r.variant.subgroup, r.workgroup,
              [&](std::uint64_t wg) { return loops(r.variant.subgroup, wg); }, what);
    EXPECT_EQ(r.one_subgroup, plan::one_subgroup(dev, r.workgroup, r.variant.subgroup));
    if (r.variant.subgroup == last.variant.subgroup) {
      EXPECT_GE(r.workgroup, last.workgroup);
    }
    last = r;
  } catch (const Error& err) {
    EXPECT_EQ(err.code(), ErrorCode::out_of_range);
    EXPECT_NE(std::string(err.what()).find("loop budget"), std::string::npos) << err.what();
    EXPECT_GT(widest_loops(false), plan::kLoopBudget) << err.what();
    if (base.variant.subgroup) {
      EXPECT_GT(widest_loops(true), plan::kLoopBudget) << err.what();
    }
    last.workgroup = ~0u;
  }
}

TEST(Plan, LongRowsStayWithinTheLoopBudget) {
  for_each_profile([](const DeviceInfo& dev, const OpOptions& o, const std::string& what) {
    const auto a = plan::argmax(dev, o);
    const auto t = plan::topk(dev, o);
    const std::uint32_t e = plan::embedding_workgroup(dev, o);
    const std::uint32_t w = plan::self_attention_weights_workgroup(dev);
    const auto lp = plan::logits_processor(dev, o);
    plan::Reduction last_a = a, last_t[3] = {t, t, t}, last_lp = lp;  // per planner and k
    std::uint32_t last_e = 0, last_w = 0;
    for (std::uint64_t n : {1ull, 1000ull, 32768ull, 200000ull, 300000ull, 4000000ull, 1ull << 31}) {
      const std::string row = fmt::format("{} row {}", what, n);
      const plan::ArgmaxRow ar{.V = n, .passes = 3, .S = n / 100, .emb = 512};
      check_reduction_row(
          dev, a, [&] { return plan::argmax_row(dev, a, ar); },
          [&](bool sg, std::uint64_t wg) { return plan::argmax_loops(dev, sg, wg, ar); }, last_a,
          row + " argmax");
      if (last_a.workgroup != ~0u) {
        build<kernels::Argmax>(dev, {.local_size_x = last_a.workgroup, .ONE_SUBGROUP = last_a.one_subgroup},
                               last_a.variant, row + " argmax");
      }
      const plan::LogitsRow lr{.V = n, .suppressed = 3, .capacity = 200, .ngram = 3, .sample = true};
      check_reduction_row(
          dev, lp, [&] { return plan::logits_processor_row(dev, lp, lr); },
          [&](bool sg, std::uint64_t wg) { return plan::logits_processor_loops(dev, sg, wg, lr); }, last_lp,
          row + " logits processor");
      for (int ki = 0; ki < 3; ++ki) {
        const std::uint64_t k = std::array{1, 5, 64}[ki];
        check_reduction_row(
            dev, t, [&] { return plan::topk_row(dev, t, n, k); },
            [&](bool sg, std::uint64_t wg) { return plan::topk_loops(dev, sg, wg, n, k); }, last_t[ki],
            fmt::format("{} topk k {}", row, k));
        if (last_t[ki].workgroup != ~0u) {
          build<kernels::TopK>(dev,
                               {.local_size_x = last_t[ki].workgroup, .K_MAX = 64,
                                .ONE_SUBGROUP = last_t[ki].one_subgroup},
                               last_t[ki].variant, row + " topk");
        }
      }
      check_row_plan(
          dev, e, false, [&] { return plan::embedding_row(dev, e, n); },
          [&](std::uint64_t wg) { return plan::embedding_loops(wg, n); }, last_e, row + " embedding");
      if (const std::uint32_t wg = check_row_plan(
              dev, w, false, [&] { return plan::self_attention_weights_row(dev, w, n, 64); },
              [&](std::uint64_t x) { return plan::self_attention_weights_loops(dev, x, n, 64); }, last_w,
              row + " self-attention weights")) {
        build<kernels::SelfAttentionWeights>(dev, {.local_size_x = wg, .D = 64}, {}, row);
      }
    }
    // K of a GEMM / GEMV in slices: whole K, or multiples of 64 (vec4 alignment, whole tiles);
    // longer K never takes longer slices than the budget allowed a shorter one.
    const auto g = plan::gemm(dev, o);
    for (std::uint64_t K : {1ull, 64ull, 4096ull, 270001ull, 300000ull, 10000000ull}) {
      const std::uint64_t tiled = plan::gemm_k_slice(g.tiled, K);
      EXPECT_LE(tiled, K);
      EXPECT_TRUE(tiled == K || tiled % 64 == 0) << tiled;
      if (K >= 300000) {
        EXPECT_LT(tiled, K) << "K = " << K << " in one tiled dispatch";
      }
      for (std::size_t m : {1u, 9u}) {
        const auto path = plan::gemm_path(dev, g, m);
        if (path == plan::GemmPath::tiled) continue;
        const auto v = plan::gemv(dev, g, o, m, path, true);
        const std::uint64_t slice = plan::gemv_k_slice(dev, g, v, K);
        EXPECT_LE(slice, K);
        EXPECT_TRUE(slice == K || slice % 64 == 0) << slice;
        EXPECT_GE(slice, std::min<std::uint64_t>(K, 64));
      }
    }
  });
}

// --- recurrent layers ----------------------------------------------------------------------

TEST(Plan, RnnRespectsEveryProfile) {
  int shuffled = 0, filled = 0, fused_shuffled = 0, shared_k_fused = 0;
  const plan::RnnLayer layers[] = {{CellType::gru, 1, 0},      {CellType::gru, 64, 0},
                                   {CellType::rnn_tanh, 7, 0}, {CellType::lstm, 300, 100},
                                   {CellType::gru, 1024, 0},   {CellType::lstm, 4000, 0},
                                   {CellType::gru, 256, 0, 2}, {CellType::gru, 256, 0, 1}};
  for_each_profile([&](const DeviceInfo& dev, const OpOptions& o, const std::string& profile) {
    for (const auto& layer : layers) {
      for (std::uint64_t B : {1u, 3u, 16u, 100u}) {
        const std::string what =
            fmt::format("{}, {} H {} P {} B {}", profile, to_string(layer.cell), layer.H, layer.P, B);
        SCOPED_TRACE(what);
        const plan::Rnn p = plan::rnn(dev, layer, o, B);
        const bool sg = dev.subgroup_arithmetic && !o.force_shared_memory_reduction;
        EXPECT_EQ(p.step_kernel, sg && dev.type != DeviceType::cpu ? RnnStepKernel::subgroup_dot
                                                                    : RnnStepKernel::invocation_dot);
        // Per step: whole coops of the largest subgroup, the batch block a power of two.
        const auto& st = p.steps;
        std::vector<Built> built{build<kernels::RnnStep>(dev, st.constants, st.variant, what + " step")};
        EXPECT_EQ(st.variant.subgroup, p.step_kernel == RnnStepKernel::subgroup_dot);
        if (st.variant.subgroup) {
          EXPECT_EQ(st.constants.local_size_x % plan::max_lanes(dev), 0u);
          EXPECT_EQ(st.constants.UNITS, st.constants.local_size_x / plan::max_lanes(dev));
        } else {
          EXPECT_EQ(st.constants.UNITS, st.constants.local_size_x * st.constants.UPI);
        }
        EXPECT_TRUE(std::has_single_bit(st.constants.BB));
        EXPECT_LE(st.constants.BB, std::bit_ceil(B));
        // h and x shared by shuffles exactly where the GEMV shares X: per-invocation coops,
        // several batch rows, plan::shuffle_lanes.
        const std::uint32_t lanes = plan::shuffle_lanes(dev, st.constants.local_size_x);
        EXPECT_EQ(st.variant.shuffle, !st.variant.subgroup && st.constants.BB > 1 && lanes > 0);
        if (st.variant.shuffle) {
          EXPECT_EQ(st.constants.V_LANES, lanes);
          ++shuffled;
        }
        if (layer.P) {
          built.push_back(build<kernels::RnnProj>(dev, st.proj, st.proj_variant, what + " proj"));
          check_subgroup_choice(dev, o, st.proj_variant, what);
        }
        // Fused: h fits in shared memory, and each dispatch's steps fit the loop budget (as
        // many as fit).
        const auto& f = p.fused;
        if (f.constants.BB > 0) {
          EXPECT_LE(kernels::shared_bytes<kernels::RnnSeq>(f.constants, f.variant), dev.max_shared_memory);
          // One row per workgroup: h shared along K by shuffles, where the subgroup size is fixed
          // and a multiple of 4 (a group of its vec4s holds whole int8 units).
          const std::uint32_t f_lanes = plan::shuffle_lanes(dev, f.constants.local_size_x);
          EXPECT_EQ(f.variant.shuffle,
                    !f.variant.subgroup && f.constants.BB == 1 && f_lanes > 0 && f_lanes % 4 == 0);
          if (f.variant.shuffle) {
            EXPECT_EQ(f.constants.V_LANES, f_lanes);
            ++fused_shuffled;
          }
          check_workgroup(dev, f.constants.local_size_x, 1, 1, what + " fused");
          if (f.run > 0) {
            EXPECT_LE(plan::fused_loops(dev, f, layer, f.run), plan::kLoopBudget);
            EXPECT_GT(plan::fused_loops(dev, f, layer, f.run + 1), plan::kLoopBudget);
          }
        } else {
          EXPECT_EQ(f.run, 0u);
        }
        // W_hh as texels in the fused kernel on CPU drivers, fp32 or fp16 rows of whole 16-byte
        // units (WIDE), as in the step.
        const std::uint64_t G = layer.cell == CellType::gru ? 3 : layer.cell == CellType::lstm ? 4 : 1;
        const std::uint64_t HO = layer.P ? layer.P : layer.H;
        EXPECT_EQ(f.constants.WIDE, o.fp16_storage && HO % 8 == 0);
        EXPECT_EQ(f.constants.TEXEL, dev.type == DeviceType::cpu && (o.fp16_storage ? HO % 8 == 0 : HO % 4 == 0) &&
                                         plan::texel_loads(dev, 2 * G * layer.H * HO * 4));
        // W_hh packed on CPU drivers in blocks of the automatic per-step workgroup's units, where
        // its rows are whole 16-byte units (fp32 vec4s, fp16 WIDE): one layout for every B and
        // every forced kernel, read by both kernels.
        const bool whole_units = o.fp16_storage ? HO % 8 == 0 : HO % 4 == 0;
        const bool packs = dev.type == DeviceType::cpu && o.pack_weights && whole_units;
        EXPECT_EQ(p.pack_units, packs ? st.constants.UNITS : 0u);
        EXPECT_EQ(st.constants.PACK_UNITS, p.pack_units);
        EXPECT_EQ(f.constants.PACK_UNITS, p.pack_units);
        EXPECT_EQ(plan::rnn(dev, layer, o, 1).pack_units, p.pack_units);
        if (sg) {
          EXPECT_EQ(plan::rnn(dev, layer, o, B, {.step = RnnStepKernel::subgroup_dot}).steps.constants.PACK_UNITS,
                    p.pack_units);
        }
        OpOptions row_major = o;
        row_major.pack_weights = false;
        EXPECT_EQ(plan::rnn(dev, layer, row_major, B).pack_units, 0u);
        // K in segments walked in step where packed fp32 W_hh meets one batch row per workgroup.
        const bool f32 = plan::weight_storage(o) == WeightStorage::f32;
        EXPECT_EQ(st.constants.K_STREAMS, p.pack_units != 0 && f32 && st.constants.BB == 1 ? plan::kCpuLoadStreams : 1u)
            << "B = " << B;
        EXPECT_EQ(plan::rnn(dev, layer, row_major, B).steps.constants.K_STREAMS, 1u);
        // W_ih in the same blocks wherever its rows are whole 16-byte units, whatever HO.
        EXPECT_EQ(p.pack_block, dev.type == DeviceType::cpu && o.pack_weights ? st.constants.UNITS : 0u);
        const WeightStorage storage = plan::weight_storage(o);
        for (std::uint64_t in : {1, 12, 13, 16, 24, 30}) {
          const bool whole = storage == WeightStorage::i8    ? (in + 3) / 4 % 4 == 0
                             : storage == WeightStorage::f16 ? in % 8 == 0
                                                             : in % 4 == 0;
          EXPECT_EQ(plan::input_pack_units(p, storage, in), whole ? p.pack_block : 0u) << "in = " << in;
          EXPECT_EQ(plan::input_pack_units(plan::rnn(dev, layer, row_major, B), storage, in), 0u);
        }
        // A bidirectional GRU of H = 256 at B = 1 on 2 driver threads: its two fused workgroups
        // fill them, so it runs fused (W_hh as texels, fp16 too); one direction at B = 1 too
        // where the fused kernel shares h along K (the _shuffle build); 16 rows per step.
        if (dev.type == DeviceType::cpu && layer.cell == CellType::gru && layer.H == 256 && o.workgroup_size == 0 &&
            !o.force_shared_memory_reduction && o.tile == 0) {
          const bool expect_fused = B == 1 && (layer.D == 2 || f.variant.shuffle);
          EXPECT_EQ(p.path == RnnPath::fused, expect_fused);
          filled += layer.D == 2 && expect_fused;
          shared_k_fused += layer.D == 1 && expect_fused;
        }
        // Big layers (GRU H = 1024: 3 M weights) run per step at B = 1 on CPU drivers, the
        // _shuffle build or not.
        if (dev.type == DeviceType::cpu && layer.cell == CellType::gru && layer.H == 1024 && B == 1) {
          EXPECT_EQ(p.path, RnnPath::per_step);
        }
        if (p.path == RnnPath::fused) {
          EXPECT_EQ(layer.P, 0u) << "projections never run fused";
          EXPECT_GT(f.run, 0u);
          built.push_back(build<kernels::RnnSeq>(dev, f.constants, f.variant, what + " fused"));
        }
        check_needs(dev, p.needs, built, what);
        if (st.loops > plan::kLoopBudget || (layer.P && st.proj_loops > plan::kLoopBudget)) {
          expect_error([&] { plan::require_step_budget(p, layer); }, ErrorCode::out_of_range,
                       {"loop budget"});
        } else {
          EXPECT_NO_THROW(plan::require_step_budget(p, layer));
        }
        // What tests pin: fewer steps per dispatch; a fused path it cannot take is an error.
        if (p.fused.run > 2) {
          EXPECT_EQ(plan::rnn(dev, layer, o, B, {.run = 2}).fused.run, 2u);
        }
        if (layer.P) {
          expect_error([&] { plan::rnn(dev, layer, o, B, {.path = RnnPath::fused}); },
                       ErrorCode::invalid_argument, {"proj_size"});
        }
        if (!sg) {
          expect_error([&] { plan::rnn(dev, layer, o, B, {.step = RnnStepKernel::subgroup_dot}); },
                       ErrorCode::missing_feature, {"subgroup"});
        }
      }
    }
  });
  EXPECT_GT(shuffled, 0);  // the lavapipe profiles take it at B > 1
  EXPECT_GT(fused_shuffled, 0);  // ... and the fused layer at B = 1
  EXPECT_GT(filled, 0);
  EXPECT_GT(shared_k_fused, 0);
}

// A plan is a pure function: the same inputs give the same kernels.
TEST(Plan, PlansAreDeterministic) {
  for (const auto& dev : profiles()) {
    const auto d = dims({Score::general, 3, 777, 96, 64, 1});
    const auto a = plan::fused_attention(dev, d, {});
    const auto b = plan::fused_attention(dev, d, {});
    EXPECT_EQ(kernels::AttentionFused::words(a.constants), kernels::AttentionFused::words(b.constants));
    EXPECT_EQ(a.splits, b.splits);
    EXPECT_EQ(a.chunk, b.chunk);
  }
}

// Workgroup counts past a dimension's limit fold into the next ones (the shaders unfold
// gl_WorkGroupID): the grid holds them all and wastes less than a row of the last dimension used;
// past the whole grid the op refuses, naming the limit.
TEST(Plan, WorkgroupCountsFoldIntoTheGrid) {
  for (const auto& dev : profiles()) {
    const std::uint64_t mx = dev.max_workgroup_count[0], my = dev.max_workgroup_count[1], mz = dev.max_workgroup_count[2];
    for (std::uint32_t dims : {2u, 3u}) {
      for (std::uint64_t total : {std::uint64_t(0), std::uint64_t(1), mx - 1, mx, mx + 1, 7 * mx + 3, mx * my,
                                  mx * my + 1, mx * my * 2 + 5, mx * my * mz, mx * my * mz + 1}) {
        const bool fits = total <= mx * my * (dims == 3 ? mz : 1);
        if (!fits) {
          expect_error([&] { (void)ops::fold_groups(total, dev, "Op", dims); }, ErrorCode::out_of_range,
                       {"Op: ", "workgroups exceed maxComputeWorkGroupCount", dev.name});
          continue;
        }
        const Groups g = ops::fold_groups(total, dev, "Op", dims);
        SCOPED_TRACE(fmt::format("{}: {} workgroups in {} dims -> {} x {} x {}", dev.name, total, dims, g[0], g[1], g[2]));
        EXPECT_TRUE(g[0] >= 1 && g[0] <= mx && g[1] >= 1 && g[1] <= my && g[2] >= 1 && g[2] <= mz);
        if (dims == 2) {
          EXPECT_EQ(g[2], 1u);
        }
        const std::uint64_t grid = std::uint64_t(g[0]) * g[1] * g[2];
        EXPECT_GE(grid, std::max<std::uint64_t>(total, 1));
        EXPECT_LT(grid - std::max<std::uint64_t>(total, 1), g[2] > 1 ? std::uint64_t(g[0]) * g[1] : g[0]);
      }
    }
  }
}

}  // namespace
}  // namespace vkrnn::test
