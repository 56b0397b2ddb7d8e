// Self-attention (flash style), positional encoding and residual add against double-precision
// CPU references.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <numbers>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <gtest/gtest.h>

#include "common/app_device.hpp"
#include "common/test_env.hpp"
#include "expect_error.hpp"
#include "vk/loader.hpp"
#include "vkrnn/positional_encoding.hpp"
#include "vkrnn/residual_add.hpp"
#include "vkrnn/self_attention.hpp"

namespace vkrnn {
namespace {

using test::all_close;
using test::context;
using test::kAllLimits;
using test::limited_context;
using test::Limits;
using test::expect_error;
using test::random_floats;

// ---------------------------------------------------------------------------------------------
// Reference

struct Problem {
  std::size_t batch = 1, S = 1, heads = 1, head_dim = 1;
  bool causal = false;
  std::vector<std::int32_t> lengths;  // empty: all S
  std::size_t hidden() const { return heads * head_dim; }
  std::string describe() const {
    return fmt::format("B={} S={} heads={} head_dim={} causal={} lengths=[{}]", batch, S, heads,
                       head_dim, causal, fmt::join(lengths, ","));
  }
};

// One output row (all heads) of attention in double precision, straight from the definition:
// scores, max-subtracted softmax over the unmasked keys, weighted sum of values.
void reference_row(const Problem& pr, const std::vector<float>& q, const std::vector<float>& k,
                   const std::vector<float>& v, std::size_t b, std::size_t i, double* out_row) {
  const std::size_t H = pr.hidden(), D = pr.head_dim, S = pr.S;
  const std::size_t len = pr.lengths.empty() ? S : static_cast<std::size_t>(pr.lengths[b]);
  if (i >= len) {
    std::fill(out_row, out_row + H, 0.0);
    return;
  }
  const std::size_t kend = pr.causal ? std::min(len, i + 1) : len;
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  std::vector<double> e(kend);
  for (std::size_t h = 0; h < pr.heads; ++h) {
    const float* qi = &q[(b * S + i) * H + h * D];
    double mx = -INFINITY;
    for (std::size_t j = 0; j < kend; ++j) {
      const float* kj = &k[(b * S + j) * H + h * D];
      double s = 0.0;
      for (std::size_t d = 0; d < D; ++d) s += double(qi[d]) * double(kj[d]);
      e[j] = s * scale;
      mx = std::max(mx, e[j]);
    }
    double sum = 0.0;
    for (std::size_t j = 0; j < kend; ++j) {
      e[j] = std::exp(e[j] - mx);
      sum += e[j];
    }
    for (std::size_t d = 0; d < D; ++d) {
      double acc = 0.0;
      for (std::size_t j = 0; j < kend; ++j) acc += e[j] * double(v[(b * S + j) * H + h * D + d]);
      out_row[h * D + d] = acc / sum;
    }
  }
}

std::vector<double> reference(const Problem& pr, const std::vector<float>& q,
                               const std::vector<float>& k, const std::vector<float>& v) {
  std::vector<double> out(pr.batch * pr.S * pr.hidden());
  for (std::size_t b = 0; b < pr.batch; ++b) {
    for (std::size_t i = 0; i < pr.S; ++i) {
      reference_row(pr, q, k, v, b, i, &out[(b * pr.S + i) * pr.hidden()]);
    }
  }
  return out;
}

// fp32: 1e-5 relative + 1e-6 absolute (outputs are convex combinations of values in [-1, 1]).
constexpr double kRel = 1e-5;
constexpr double kAbs = 1e-6;

struct Inputs {
  std::vector<float> q, k, v;
};

Inputs make_inputs(const Problem& pr, std::uint32_t seed) {
  const std::size_t n = pr.batch * pr.S * pr.hidden();
  return {random_floats(n, seed), random_floats(n, seed + 1), random_floats(n, seed + 2)};
}

SelfAttentionConfig config_for(const Problem& pr, std::size_t max_seq = 0) {
  SelfAttentionConfig c;
  c.batch = pr.batch;
  c.max_seq = max_seq ? max_seq : pr.S;
  c.hidden = pr.hidden();
  c.heads = pr.heads;
  c.causal = pr.causal;
  return c;
}

// Runs the op on the GPU and returns the output.
std::vector<float> run_gpu(Context& ctx, const SelfAttention& op, const Problem& pr,
                           const Inputs& in, bool same_qkv = false) {
  const Shape shape{pr.batch, pr.S, pr.hidden()};
  Tensor q = ctx.tensor(shape, DType::f32, "q");
  ctx.write(q, in.q);
  Tensor k = q, v = q;
  if (!same_qkv) {
    k = ctx.tensor(shape, DType::f32, "k");
    v = ctx.tensor(shape, DType::f32, "v");
    ctx.write(k, in.k);
    ctx.write(v, in.v);
  }
  Tensor out = ctx.tensor(shape, DType::f32, "out");
  Sequence seq = ctx.sequence();
  if (pr.lengths.empty()) {
    op.record(seq, q, k, v, Tensor(), out);
  } else {
    op.record(seq, q, k, v, std::span<const std::int32_t>(pr.lengths), out);
  }
  seq.download(out);
  seq.eval();
  return seq.read<float>(out);
}

// Lengths for a batch: full, empty, ragged (prime-ish offsets), cycling with the case index.
std::vector<std::int32_t> lengths_for(std::size_t batch, std::size_t S, std::size_t salt) {
  std::vector<std::int32_t> l(batch);
  for (std::size_t b = 0; b < batch; ++b) {
    switch ((b + salt) % 4) {
      case 0: l[b] = static_cast<std::int32_t>(S); break;
      case 1: l[b] = 0; break;
      case 2: l[b] = static_cast<std::int32_t>((S * 2 + 2) / 3); break;
      default: l[b] = static_cast<std::int32_t>(std::min<std::size_t>(S, 1 + S / 5)); break;
    }
  }
  if (batch == 1 && salt % 4 == 1) l[0] = static_cast<std::int32_t>(S);  // keep some work
  return l;
}

// ---------------------------------------------------------------------------------------------
// Correctness grid

TEST(SelfAttention, GridSmallSequences) {
  Context& ctx = context();
  std::size_t salt = 0;
  for (std::size_t batch : {1u, 3u}) {
    for (std::size_t S : {1u, 2u, 7u, 64u}) {
      for (std::size_t D : {1u, 3u, 64u, 97u}) {
        for (std::size_t heads : {1u, 2u, 4u}) {
          for (bool causal : {false, true}) {
            Problem pr{batch, S, heads, D, causal, {}};
            if (salt % 3 != 0) pr.lengths = lengths_for(batch, S, salt);
            ++salt;
            const Inputs in = make_inputs(pr, static_cast<std::uint32_t>(salt));
            SelfAttention op(ctx, config_for(pr));
            const auto got = run_gpu(ctx, op, pr, in);
            ASSERT_TRUE(all_close(got, reference(pr, in.q, in.k, in.v), kRel, kAbs)) << pr.describe();
          }
        }
      }
    }
  }
}

TEST(SelfAttention, SequencesUpTo1000) {
  Context& ctx = context();
  const std::vector<Problem> problems = {
      {3, 257, 2, 64, true, {257, 0, 130}},
      {3, 257, 1, 97, false, {100, 257, 1}},
      {1, 257, 4, 1, true, {}},
      {1, 257, 2, 3, false, {200}},
      // One lane per row with 64 / 97 dims in registers over many workgroups: lavapipe 22.3
      // returned partial rows here while those arrays were dynamically indexed.
      {1, 600, 1, 64, false, {}},
      {1, 600, 1, 97, false, {}},
      {1, 1000, 1, 97, false, {}},
      {1, 1000, 4, 64, true, {999}},
      {3, 1000, 4, 3, true, {0, 1000, 517}},
      {3, 1000, 2, 1, false, {1000, 333, 0}},
  };
  std::uint32_t seed = 100;
  for (const auto& pr : problems) {
    const Inputs in = make_inputs(pr, seed += 3);
    SelfAttention op(ctx, config_for(pr, pr.S + 5));  // S below max_seq is allowed
    const auto got = run_gpu(ctx, op, pr, in);
    ASSERT_TRUE(all_close(got, reference(pr, in.q, in.k, in.v), kRel, kAbs)) << pr.describe();
  }
}

TEST(SelfAttention, SameTensorForQueriesKeysValues) {
  Context& ctx = context();
  for (bool causal : {false, true}) {
    Problem pr{2, 77, 2, 32, causal, {77, 40}};
    Inputs in = make_inputs(pr, 7);
    in.k = in.q;
    in.v = in.q;
    SelfAttention op(ctx, config_for(pr));
    const auto got = run_gpu(ctx, op, pr, in, /*same_qkv=*/true);
    EXPECT_TRUE(all_close(got, reference(pr, in.q, in.q, in.q), kRel, kAbs)) << pr.describe();
  }
}

TEST(SelfAttention, NoLengthsTensorMeansFullLength) {
  Context& ctx = context();
  Problem pr{2, 33, 1, 16, true, {}};
  const Inputs in = make_inputs(pr, 9);
  SelfAttention op(ctx, config_for(pr));
  EXPECT_TRUE(all_close(run_gpu(ctx, op, pr, in), reference(pr, in.q, in.k, in.v), kRel, kAbs));
}

// Device-side lengths outside [0, S] are clamped (documented), never read out of bounds.
TEST(SelfAttention, DeviceLengthsAreClamped) {
  Context& ctx = context();
  Problem pr{3, 20, 2, 8, false, {}};
  const Inputs in = make_inputs(pr, 11);
  const Shape shape{pr.batch, pr.S, pr.hidden()};
  Tensor q = ctx.tensor(shape), k = ctx.tensor(shape), v = ctx.tensor(shape), out = ctx.tensor(shape);
  ctx.write(q, in.q);
  ctx.write(k, in.k);
  ctx.write(v, in.v);
  Tensor lengths = ctx.tensor({3}, DType::i32);
  ctx.write(lengths, std::vector<std::int32_t>{-5, 1000, 7});
  SelfAttention op(ctx, config_for(pr));
  op.run(q, k, v, lengths, out);
  pr.lengths = {0, 20, 7};
  EXPECT_TRUE(all_close(ctx.read<float>(out), reference(pr, in.q, in.k, in.v), kRel, kAbs));
}

// Scores of magnitude ~1e4: exp() without the running max would overflow (positive scores) or
// underflow to 0/0 (all negative). Integer inputs in [-200, 200] make every score exact in fp32
// (|q.k| <= 64 * 200^2 < 2^24, scale 1/8 exact for head_dim 64), so the usual fp32 tolerance
// applies.
TEST(SelfAttention, HugeScoresStayFinite) {
  Context& ctx = context();
  for (int mode = 0; mode < 2; ++mode) {
    for (bool causal : {false, true}) {
      Problem pr{2, 150, 2, 64, causal, {150, 77}};
      const std::size_t n = pr.batch * pr.S * pr.hidden();
      Inputs in{std::vector<float>(n), std::vector<float>(n), random_floats(n, 5)};
      std::mt19937 rng(42 + mode);
      std::uniform_int_distribution<int> any(-200, 200), pos(1, 200);
      for (std::size_t i = 0; i < n; ++i) {
        in.q[i] = static_cast<float>(mode == 0 ? any(rng) : pos(rng));
        in.k[i] = static_cast<float>(mode == 0 ? any(rng) : -pos(rng));
      }
      const auto ref = reference(pr, in.q, in.k, in.v);
      double max_score = 0.0;  // confirm the test is what it says
      for (std::size_t j = 0; j < pr.S; ++j) {
        double s = 0.0;
        for (std::size_t d = 0; d < 64; ++d) s += double(in.q[d]) * in.k[j * pr.hidden() + d];
        max_score = std::max(max_score, std::abs(s / 8.0));
      }
      ASSERT_GT(max_score, 1e4);
      SelfAttention op(ctx, config_for(pr));
      EXPECT_TRUE(all_close(run_gpu(ctx, op, pr, in), ref, kRel, kAbs))
          << "mode " << mode << " " << pr.describe();
    }
  }
}

TEST(SelfAttention, BitIdenticalReruns) {
  Context& ctx = context();
  Problem pr{2, 300, 2, 48, true, {300, 211}};
  const Inputs in = make_inputs(pr, 21);
  SelfAttention op(ctx, config_for(pr));
  const auto a = run_gpu(ctx, op, pr, in);
  const auto b = run_gpu(ctx, op, pr, in);
  SelfAttention op2(ctx, config_for(pr));
  const auto c = run_gpu(ctx, op2, pr, in);
  ASSERT_EQ(a.size(), b.size());
  EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float)));
  EXPECT_EQ(0, std::memcmp(a.data(), c.data(), a.size() * sizeof(float)));
}

// Correctness must not depend on the workgroup size, key tile, lanes per row (1: solo path,
// rows in registers; more: shared-memory path with barriers), rows per lane, or whether the solo
// path shares loads through subgroup shuffles.
TEST(SelfAttention, ForcedWorkgroupAndTileSizes) {
  Context& ctx = context();
  const auto& dev = ctx.device();
  struct Case {
    std::uint32_t wg, tile, lanes, rows;
    bool no_subgroup;
    std::size_t D;
  };
  // Each case names its head_dim: 3, 64 (vec4 chunks), 97 (float chunks), > 128 (solo path with
  // outputs accumulated in memory).
  const std::vector<Case> cases = {
      // solo, q/o in registers
      {8, 0, 1, 1, false, 64},   {8, 5, 1, 3, false, 97},  {16, 7, 1, 2, false, 3},
      {8, 16, 1, 4, true, 64},   {7, 3, 1, 2, false, 97},  {1, 1, 1, 1, false, 3},
      {8, 0, 0, 0, false, 1},
      // solo, outputs accumulated in `out`
      {8, 0, 1, 0, false, 132},  {8, 3, 1, 3, false, 130}, {8, 5, 1, 2, true, 132},
      {16, 2, 1, 1, false, 257},
      // shared-memory (team) path
      {8, 16, 2, 0, false, 64},  {8, 8, 8, 0, false, 97},  {16, 3, 4, 0, false, 3},
      {64, 32, 4, 0, false, 64}, {64, 7, 16, 0, false, 97}, {256, 64, 32, 0, false, 3},
      {32, 0, 2, 0, false, 130},
  };
  std::size_t salt = 0;
  bool saw_shuffle = false, saw_plain_solo = false, saw_team = false, saw_memory = false;
  for (const auto& cs : cases) {
    {
      const std::size_t D = cs.D;
      for (bool causal : {false, true}) {
        Problem pr{2, 65 + 31 * (salt % 3), 2, D, causal, {}};
        pr.lengths = lengths_for(2, pr.S, salt);
        ++salt;
        const Inputs in = make_inputs(pr, static_cast<std::uint32_t>(300 + salt));
        OpOptions opt;
        opt.workgroup_size = cs.wg;
        opt.tile = cs.tile;
        opt.force_shared_memory_reduction = cs.no_subgroup;
        auto cfg = config_for(pr);
        cfg.lanes_per_row = cs.lanes;
        cfg.rows_per_lane = cs.rows;
        SelfAttention op(ctx, cfg, opt);
        const auto& plan = op.plan();
        EXPECT_EQ(plan.workgroup_size,
                  std::min({cs.wg, dev.max_workgroup_invocations, dev.max_workgroup_size[0]}));
        EXPECT_EQ(plan.query_rows, plan.lanes_per_row == 1
                                       ? plan.workgroup_size * plan.rows_per_lane
                                       : plan.workgroup_size / plan.lanes_per_row);
        EXPECT_LE(plan.shared_bytes, dev.max_shared_memory);
        if (cs.no_subgroup) {
          EXPECT_FALSE(plan.subgroup_shuffle);
        }
        saw_shuffle |= plan.subgroup_shuffle;
        saw_plain_solo |= plan.lanes_per_row == 1 && !plan.subgroup_shuffle;
        saw_team |= plan.lanes_per_row > 1;
        saw_memory |= plan.lanes_per_row == 1 && !plan.accumulate_in_registers;
        const auto got = run_gpu(ctx, op, pr, in);
        ASSERT_TRUE(all_close(got, reference(pr, in.q, in.k, in.v), kRel, kAbs))
            << pr.describe() << " wg " << cs.wg << " tile " << cs.tile << " lanes " << cs.lanes
            << " -> plan wg " << plan.workgroup_size << " rows " << plan.query_rows << " lanes "
            << plan.lanes_per_row << " rows/lane " << plan.rows_per_lane << " tile "
            << plan.key_tile << " shuffle " << plan.subgroup_shuffle << " registers "
            << plan.accumulate_in_registers;
      }
    }
  }
  EXPECT_TRUE(saw_plain_solo);
  EXPECT_TRUE(saw_team);
  EXPECT_TRUE(saw_memory);
  const std::uint32_t shuffle_ops = VK_SUBGROUP_FEATURE_BASIC_BIT | VK_SUBGROUP_FEATURE_SHUFFLE_BIT;
  if (dev.subgroup_in_compute && (dev.subgroup_operations & shuffle_ops) == shuffle_ops) {
    EXPECT_TRUE(saw_shuffle);
  }
}

// A large head_dim: the solo path keeps 700 dims per lane; the shared-memory path shrinks its
// tiles to the shared-memory limit.
TEST(SelfAttention, LargeHeadDim) {
  Context& ctx = context();
  Problem pr{1, 40, 1, 700, true, {33}};
  const Inputs in = make_inputs(pr, 31);
  for (std::uint32_t lanes : {0u, 8u}) {
    auto cfg = config_for(pr);
    cfg.lanes_per_row = lanes;
    OpOptions opt;
    opt.workgroup_size = lanes ? 16 : 0;
    SelfAttention op(ctx, cfg, opt);
    EXPECT_LE(op.plan().shared_bytes, ctx.device().max_shared_memory);
    EXPECT_TRUE(all_close(run_gpu(ctx, op, pr, in), reference(pr, in.q, in.k, in.v), kRel, kAbs))
        << "lanes " << lanes;
  }
}

// Plans for devices unlike this one: every limit respected, GPUs get the shared-memory path.
DeviceInfo fake_device(DeviceType type, std::uint32_t subgroup, std::uint32_t invocations,
                       std::uint32_t shared) {
  DeviceInfo d;
  d.name = "fake";
  d.type = type;
  d.subgroup_size = d.min_subgroup_size = d.max_subgroup_size = subgroup;
  d.subgroup_in_compute = true;
  d.subgroup_operations = VK_SUBGROUP_FEATURE_BASIC_BIT | VK_SUBGROUP_FEATURE_SHUFFLE_BIT;
  d.max_workgroup_size = {invocations, invocations, 64};
  d.max_workgroup_invocations = invocations;
  d.max_workgroup_count = {65535, 65535, 65535};
  d.max_shared_memory = shared;
  return d;
}

std::vector<DeviceInfo> fake_devices() {
  return {
      fake_device(DeviceType::integrated, 16, 256, 16384),   // mobile-class
      fake_device(DeviceType::integrated, 4, 128, 16384),    // tiny subgroups
      fake_device(DeviceType::discrete, 32, 1024, 49152),    // NVIDIA-like
      fake_device(DeviceType::discrete, 64, 1024, 65536),    // AMD-like
      fake_device(DeviceType::discrete, 128, 1024, 32768),   // very wide subgroups
      fake_device(DeviceType::cpu, 8, 1024, 32768),          // lavapipe-like
  };
}

TEST(SelfAttention, PlansFitDeviceLimits) {
  for (const DeviceInfo& dev : fake_devices()) {
    for (std::size_t D : {1u, 3u, 64u, 97u, 128u, 256u, 1000u}) {
      SelfAttentionConfig cfg{2, 100, D * 2, 2, false};
      const SelfAttentionPlan plan = SelfAttention::plan_for(dev, cfg);
      const auto where = fmt::format("subgroup {} shared {} D {}", dev.subgroup_size,
                                     dev.max_shared_memory, D);
      EXPECT_GE(plan.workgroup_size, 1u) << where;
      EXPECT_LE(plan.workgroup_size, dev.max_workgroup_invocations) << where;
      EXPECT_EQ(plan.workgroup_size % plan.lanes_per_row, 0u) << where;
      EXPECT_LE(plan.shared_bytes, dev.max_shared_memory) << where;
      EXPECT_GE(plan.key_tile, 1u) << where;
      EXPECT_GE(plan.query_rows, 1u) << where;
      if (dev.type == DeviceType::cpu) {
        EXPECT_EQ(plan.lanes_per_row, 1u) << where;
        EXPECT_TRUE(plan.subgroup_shuffle) << where;
      } else {
        EXPECT_GE(plan.workgroup_size, std::min(64u, dev.max_workgroup_invocations)) << where;
        EXPECT_LE((D + plan.lanes_per_row - 1) / plan.lanes_per_row, 16u) << where;
      }
    }
  }
  // A head too wide for 16 KiB of shared memory on the shared-memory path: a clear error.
  SelfAttentionConfig cfg{1, 10, 4096, 1, false};
  expect_error([&] { SelfAttention::plan_for(fake_devices()[0], cfg); }, ErrorCode::out_of_range,
               {"SelfAttention", "head_dim 4096", "shared memory", "16384"});
}

// The plans GPUs would run, forced here: the same workgroup shape, tile and lanes per row.
TEST(SelfAttention, GpuPlansComputeCorrectlyHere) {
  Context& ctx = context();
  std::size_t salt = 0;
  for (const DeviceInfo& dev : fake_devices()) {
    if (dev.type == DeviceType::cpu) continue;
    for (std::size_t D : {64u, 97u}) {
      Problem pr{2, 45, 2, D, salt % 2 == 0, {}};
      pr.lengths = lengths_for(2, pr.S, salt++);
      const SelfAttentionPlan gpu = SelfAttention::plan_for(dev, config_for(pr));
      if (gpu.workgroup_size > ctx.device().max_workgroup_invocations ||
          gpu.shared_bytes > ctx.device().max_shared_memory) {
        continue;
      }
      auto cfg = config_for(pr);
      cfg.lanes_per_row = gpu.lanes_per_row;
      OpOptions opt;
      opt.workgroup_size = gpu.workgroup_size;
      opt.tile = gpu.key_tile;
      SelfAttention op(ctx, cfg, opt);
      ASSERT_EQ(op.plan().query_rows, gpu.query_rows);
      ASSERT_EQ(op.plan().key_tile, gpu.key_tile);
      const Inputs in = make_inputs(pr, static_cast<std::uint32_t>(700 + salt));
      EXPECT_TRUE(all_close(run_gpu(ctx, op, pr, in), reference(pr, in.q, in.k, in.v), kRel, kAbs))
          << pr.describe() << " plan of subgroup-" << dev.subgroup_size << " device";
    }
  }
}

// The kernels other devices get (tests/common/test_env.hpp), chosen by the op itself: a GPU's
// plan (64+ lanes, teams of lanes per row for wide heads), a mobile GPU's (16 KiB of shared
// memory, 128 invocations, no subgroup shuffles) and the Vulkan minimums (4 storage buffers:
// the op binds 5 and refuses by the limit's name).
TEST(SelfAttention, LimitProfiles) {
  std::size_t salt = 0;
  for (Limits limits : kAllLimits) {
    Context& ctx = limited_context(limits);
    SCOPED_TRACE(fmt::format("limits '{}'", test::to_string(limits)));
    for (std::size_t D : {16u, 64u, 97u}) {
      Problem pr{2, 45, 2, D, salt % 2 == 0, {}};
      pr.lengths = lengths_for(2, pr.S, salt++);
      if (limits == Limits::minimum) {
        expect_error([&] { SelfAttention(ctx, config_for(pr)); }, ErrorCode::out_of_range,
                     {"maxPerStageDescriptorStorageBuffers"});
        continue;
      }
      SelfAttention op(ctx, config_for(pr));
      EXPECT_LE(op.plan().shared_bytes, ctx.device().max_shared_memory);
      EXPECT_LE(op.plan().workgroup_size, ctx.device().max_workgroup_invocations);
      const Inputs in = make_inputs(pr, static_cast<std::uint32_t>(900 + salt));
      EXPECT_TRUE(all_close(run_gpu(ctx, op, pr, in), reference(pr, in.q, in.k, in.v), kRel, kAbs))
          << pr.describe() << " lanes per row " << op.plan().lanes_per_row;
    }
  }
}

TEST(SelfAttention, StagingContext) {
  Context& ctx = test::staging_context();
  Problem pr{2, 50, 2, 8, true, {50, 13}};
  const Inputs in = make_inputs(pr, 41);
  SelfAttention op(ctx, config_for(pr));
  EXPECT_TRUE(all_close(run_gpu(ctx, op, pr, in), reference(pr, in.q, in.k, in.v), kRel, kAbs));
}

// ---------------------------------------------------------------------------------------------
// Long sequences: reference for a sample of query rows only.

void check_sampled_rows(std::size_t S, std::size_t D, bool causal, std::size_t len) {
  Context& ctx = context();
  Problem pr{1, S, 1, D, causal, {static_cast<std::int32_t>(len)}};
  const Inputs in = make_inputs(pr, static_cast<std::uint32_t>(S + D));
  SelfAttention op(ctx, config_for(pr));
  const auto t0 = std::chrono::steady_clock::now();
  const auto got = run_gpu(ctx, op, pr, in);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::vector<std::size_t> rows = {0, 1, len > 0 ? len - 1 : 0, len, S - 1, S / 2, S / 3 + 1};
  for (std::size_t r = 0; rows.size() < 16; ++r) rows.push_back((r * 7919 + 13) % S);
  std::vector<float> got_rows;
  std::vector<double> want_rows;
  std::vector<double> row(D);
  for (std::size_t i : rows) {
    if (i >= S) continue;
    reference_row(pr, in.q, in.k, in.v, 0, i, row.data());
    want_rows.insert(want_rows.end(), row.begin(), row.end());
    got_rows.insert(got_rows.end(), got.begin() + i * D, got.begin() + (i + 1) * D);
  }
  EXPECT_TRUE(all_close(got_rows, want_rows, kRel, kAbs)) << pr.describe();
  std::printf("[ info ] S=%zu d=%zu causal=%d: %.2f s incl. upload/download\n", S, D, causal, secs);
}

TEST(SelfAttention, SampledRowsS4096) {
  check_sampled_rows(4096, 64, false, 4096);
  check_sampled_rows(4096, 64, true, 4000);
}

// ~7 s on lavapipe with validation (2 cores): part of the default suite.
TEST(SelfAttention, SampledRowsS16384) {
  check_sampled_rows(16384, 64, false, 16384);
  check_sampled_rows(16384, 64, true, 16000);
}

// ---------------------------------------------------------------------------------------------
// fp16 storage

std::vector<std::uint16_t> to_half(const std::vector<float>& v) {
  std::vector<std::uint16_t> h(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) h[i] = float_to_half(v[i]);
  return h;
}

std::vector<float> half_rounded(const std::vector<float>& v) {
  std::vector<float> r(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) r[i] = half_to_float(float_to_half(v[i]));
  return r;
}

TEST(SelfAttention, Fp16Storage) {
  Context& ctx = context();
  OpOptions opt;
  opt.fp16_storage = true;
  if (!ctx.features().storage_buffer_16bit) {
    expect_error([&] { SelfAttention op(ctx, {2, 8, 64, 2, false}, opt); },
                 ErrorCode::missing_feature, {"SelfAttention", "fp16_storage"});
    GTEST_SKIP() << "device has no storageBuffer16BitAccess";
  }
  // Every path: solo with shuffles, solo without, solo accumulating in memory, shared-memory team.
  struct Case {
    std::size_t D;
    std::uint32_t lanes;
    bool no_subgroup;
  };
  std::uint32_t seed = 50;
  for (const Case cs : {Case{64, 0, false}, Case{64, 0, true}, Case{97, 0, false},
                        Case{132, 0, false}, Case{64, 4, false}}) {
    for (bool causal : {false, true}) {
      Problem pr{2, 129, 2, cs.D, causal, {129, 60}};
      const Inputs in = make_inputs(pr, ++seed);
      const Shape shape{pr.batch, pr.S, pr.hidden()};
      Tensor q = ctx.tensor(shape, DType::f16), k = ctx.tensor(shape, DType::f16),
             v = ctx.tensor(shape, DType::f16), out = ctx.tensor(shape);
      ctx.write(q, to_half(in.q));
      ctx.write(k, to_half(in.k));
      ctx.write(v, to_half(in.v));
      auto cfg = config_for(pr);
      cfg.lanes_per_row = cs.lanes;
      OpOptions o = opt;
      o.force_shared_memory_reduction = cs.no_subgroup;
      SelfAttention op(ctx, cfg, o);
      Sequence seq = ctx.sequence();
      op.record(seq, q, k, v, std::span<const std::int32_t>(pr.lengths), out);
      seq.download(out);
      seq.eval();
      const auto got = seq.read<float>(out);
      const auto what = fmt::format("{} lanes {} no_subgroup {}", pr.describe(), cs.lanes,
                                    cs.no_subgroup);
      // (a) f16 widens to f32 exactly and the arithmetic is fp32: against the reference on the
      // half-rounded inputs, the fp32 tolerance holds.
      const auto qh = half_rounded(in.q), kh = half_rounded(in.k), vh = half_rounded(in.v);
      EXPECT_TRUE(all_close(got, reference(pr, qh, kh, vh), kRel, kAbs)) << what;
      // (b) Against the fp32 inputs (uniform in [-1, 1]): rounding to half moves each input by
      // <= u = 2^-11 relative. Values then move the output by <= u (4.9e-4); a score
      // e = q.k / sqrt(d) moves by <= 2u * sum|q_d k_d| / sqrt(d), ~2u * (d/4) / sqrt(d) = 2e-3
      // for d = 64 (larger d: more terms, but /sqrt(d) and random signs keep it near), and
      // softmax turns score errors into weight errors of <= 2 * max|de| relative, i.e. <= 4e-3
      // of output. 5e-3 absolute holds with margin; the errors seen are ~1e-4.
      EXPECT_TRUE(all_close(got, reference(pr, in.q, in.k, in.v), 0.0, 5e-3)) << what;
    }
  }
}

// fp16 storage where 16-bit storage is not enabled: an adopted VkDevice created without the
// feature stands in for a device that lacks it.
TEST(SelfAttention, Fp16WithoutStorage16IsMissingFeature) {
  test::AppDevice app;
  {
    Context ctx = Context::adopt(app.external(), {.disable_pipeline_cache = true});
    ASSERT_FALSE(ctx.features().storage_buffer_16bit);
    OpOptions opt;
    opt.fp16_storage = true;
    expect_error([&] { SelfAttention op(ctx, {1, 8, 16, 2, false}, opt); },
                 ErrorCode::missing_feature,
                 {"SelfAttention", "fp16_storage", "storageBuffer16BitAccess"});
    EXPECT_NO_THROW(SelfAttention(ctx, {1, 8, 16, 2, false}));  // fp32 is fine
  }
}

// ---------------------------------------------------------------------------------------------
// Errors

TEST(SelfAttention, BadConfigs) {
  Context& ctx = context();
  auto make = [&](SelfAttentionConfig c) { return [&ctx, c] { SelfAttention op(ctx, c); }; };
  expect_error(make({0, 8, 16, 1, false}), ErrorCode::invalid_argument, {"SelfAttention", "batch"});
  expect_error(make({1, 0, 16, 1, false}), ErrorCode::invalid_argument, {"SelfAttention", "max_seq"});
  expect_error(make({1, 8, 0, 1, false}), ErrorCode::invalid_argument, {"SelfAttention", "hidden"});
  expect_error(make({1, 8, 16, 0, false}), ErrorCode::invalid_argument, {"SelfAttention", "heads"});
  expect_error(make({1, 8, 10, 4, false}), ErrorCode::invalid_argument,
               {"SelfAttention", "hidden (10)", "heads (4)"});
  // Too large for 32-bit indexing.
  expect_error(make({1024, 65536, 1024, 1, false}), ErrorCode::out_of_range, {"SelfAttention"});
}

TEST(SelfAttention, BadArguments) {
  Context& ctx = context();
  SelfAttention op(ctx, {2, 16, 8, 2, false});
  Tensor good = ctx.tensor({2, 16, 8});
  Tensor good2 = ctx.tensor({2, 16, 8});
  Tensor good3 = ctx.tensor({2, 16, 8});
  Tensor out = ctx.tensor({2, 16, 8});
  Tensor shorter = ctx.tensor({2, 10, 8});
  Tensor lengths = ctx.tensor({2}, DType::i32);
  Sequence seq = ctx.sequence();
  auto rec = [&](const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& l, const Tensor& o) {
    return [&, q, k, v, l, o] { op.record(seq, q, k, v, l, o); };
  };
  expect_error(rec(ctx.tensor({2, 16, 9}), good, good2, lengths, out), ErrorCode::invalid_argument,
               {"SelfAttention", "'q'", "[2, S, 8]", "[2, 16, 9]"});
  expect_error(rec(ctx.tensor({16, 8}), good, good2, lengths, out), ErrorCode::invalid_argument,
               {"'q'", "[16, 8]"});
  expect_error(rec(ctx.tensor({3, 16, 8}), good, good2, lengths, out), ErrorCode::invalid_argument,
               {"'q'", "[3, 16, 8]"});
  expect_error(rec(ctx.tensor({2, 17, 8}), good, good2, lengths, out), ErrorCode::invalid_argument,
               {"'q'", "S <= 16", "[2, 17, 8]"});
  expect_error(rec(ctx.tensor({2, 16, 8}, DType::f16), good, good2, lengths, out),
               ErrorCode::invalid_argument, {"'q'", "f32", "f16"});
  expect_error(rec(good, shorter, good2, lengths, out), ErrorCode::invalid_argument,
               {"'k'", "[2, 16, 8]", "[2, 10, 8]"});
  expect_error(rec(good, good2, shorter, lengths, out), ErrorCode::invalid_argument,
               {"'v'", "[2, 10, 8]"});
  expect_error(rec(good, good2, good3, lengths, shorter), ErrorCode::invalid_argument,
               {"'out'", "[2, 10, 8]"});
  expect_error(rec(good, good2, good3, lengths, ctx.tensor({2, 16, 8}, DType::i32)),
               ErrorCode::invalid_argument, {"'out'", "i32"});
  expect_error(rec(good, good2, good3, lengths, good2), ErrorCode::invalid_argument,
               {"'out'", "shares memory"});
  expect_error(rec(good, good2, good3, lengths, good.reshaped({2, 16, 8})),
               ErrorCode::invalid_argument, {"'out'", "shares memory"});
  expect_error(rec(good, good2, good3, ctx.tensor({3}, DType::i32), out),
               ErrorCode::invalid_argument, {"'lengths'", "i32 [2]", "[3]"});
  expect_error(rec(good, good2, good3, ctx.tensor({2}, DType::f32), out),
               ErrorCode::invalid_argument, {"'lengths'", "f32"});
  expect_error(rec(Tensor(), good2, good3, lengths, out), ErrorCode::invalid_argument,
               {"'q'", "empty"});

  auto rec_host = [&](std::vector<std::int32_t> l) {
    return [&, l] { op.record(seq, good, good2, good3, std::span<const std::int32_t>(l), out); };
  };
  expect_error(rec_host({16, -1}), ErrorCode::invalid_argument, {"'lengths'", "lengths[1] = -1", "S = 16"});
  expect_error(rec_host({17, 3}), ErrorCode::invalid_argument, {"lengths[0] = 17"});
  expect_error(rec_host({16}), ErrorCode::invalid_argument, {"'lengths'", "expected 2 values", "got 1"});
  EXPECT_EQ(seq.stats().dispatches, 0u);  // nothing was recorded by the failed calls
}

// ---------------------------------------------------------------------------------------------
// Full attention weights (optional output)

// Weights [B, heads, S, S] in double, from the definition.
std::vector<double> reference_weights(const Problem& pr, const std::vector<float>& q,
                                      const std::vector<float>& k) {
  const std::size_t S = pr.S, D = pr.head_dim, H = pr.hidden();
  std::vector<double> w(pr.batch * pr.heads * S * S, 0.0);
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  for (std::size_t b = 0; b < pr.batch; ++b) {
    const std::size_t len = pr.lengths.empty() ? S : static_cast<std::size_t>(pr.lengths[b]);
    for (std::size_t h = 0; h < pr.heads; ++h) {
      for (std::size_t i = 0; i < len; ++i) {
        const std::size_t kend = pr.causal ? std::min(len, i + 1) : len;
        double* row = &w[((b * pr.heads + h) * S + i) * S];
        double mx = -INFINITY, sum = 0.0;
        for (std::size_t j = 0; j < kend; ++j) {
          double e = 0.0;
          for (std::size_t d = 0; d < D; ++d) {
            e += double(q[(b * S + i) * H + h * D + d]) * double(k[(b * S + j) * H + h * D + d]);
          }
          row[j] = e * scale;
          mx = std::max(mx, row[j]);
        }
        for (std::size_t j = 0; j < kend; ++j) sum += (row[j] = std::exp(row[j] - mx));
        for (std::size_t j = 0; j < kend; ++j) row[j] /= sum;
      }
    }
  }
  return w;
}

// record_weights (f32) against the definition; lengths from the problem (none when empty).
void check_weights(Context& ctx, const Problem& pr, std::uint32_t seed) {
  const Inputs in = make_inputs(pr, seed);
  const Shape shape{pr.batch, pr.S, pr.hidden()};
  Tensor q = ctx.tensor(shape), k = ctx.tensor(shape);
  ctx.write(q, in.q);
  ctx.write(k, in.k);
  Tensor lengths;
  if (!pr.lengths.empty()) {
    lengths = ctx.tensor({pr.batch}, DType::i32);
    ctx.write(lengths, pr.lengths);
  }
  Tensor w = ctx.tensor({pr.batch, pr.heads, pr.S, pr.S});
  SelfAttention op(ctx, config_for(pr));
  Sequence seq = ctx.sequence();
  op.record_weights(seq, q, k, lengths, w);
  seq.download(w);
  seq.eval();
  EXPECT_TRUE(all_close(seq.read<float>(w), reference_weights(pr, in.q, in.k), kRel, kAbs)) << pr.describe();
}

TEST(SelfAttention, AttentionWeights) {
  Context& ctx = context();
  const std::vector<Problem> problems = {
      {2, 7, 2, 3, true, {7, 4}},
      {1, 33, 4, 16, false, {20}},
      {3, 64, 1, 64, true, {64, 0, 17}},
      {2, 10, 1, 97, false, {}},
  };
  std::uint32_t seed = 900;
  for (const auto& pr : problems) check_weights(ctx, pr, seed += 3);
  if (ctx.features().storage_buffer_16bit) {  // f16 q/k: exact widening, fp32 arithmetic
    const Problem pr{2, 20, 2, 8, true, {20, 9}};
    const Inputs in = make_inputs(pr, 999);
    const Shape shape{pr.batch, pr.S, pr.hidden()};
    Tensor q = ctx.tensor(shape, DType::f16), k = ctx.tensor(shape, DType::f16);
    ctx.write(q, to_half(in.q));
    ctx.write(k, to_half(in.k));
    Tensor w = ctx.tensor({pr.batch, pr.heads, pr.S, pr.S});
    OpOptions opt;
    opt.fp16_storage = true;
    SelfAttention op(ctx, config_for(pr), opt);
    Sequence seq = ctx.sequence();
    op.record_weights(seq, q, k, Tensor(), w);
    seq.download(w);
    seq.eval();
    Problem full = pr;
    full.lengths.clear();
    EXPECT_TRUE(all_close(seq.read<float>(w),
                          reference_weights(full, half_rounded(in.q), half_rounded(in.k)), kRel,
                          kAbs));
  }
}

// Rows longer than one invocation may loop over (lavapipe silently ends loops past 65535
// iterations; a row cost one invocation about S (head_dim + 1) of them): S = 1200 and 1100,
// head_dim 64, with lengths and a causal mask.
TEST(SelfAttention, AttentionWeightsPastTheLoopBudget) {
  Context& ctx = context();
  for (const Problem& pr : {Problem{1, 1200, 1, 64, false, {1200}}, Problem{1, 1100, 1, 64, true, {1037}}}) {
    check_weights(ctx, pr, 4242);
  }
}

TEST(SelfAttention, AttentionWeightsErrors) {
  Context& ctx = context();
  SelfAttention op(ctx, {2, 16, 8, 2, false});
  Tensor q = ctx.tensor({2, 16, 8}), k = ctx.tensor({2, 16, 8});
  Sequence seq = ctx.sequence();
  expect_error([&] { op.record_weights(seq, q, k, Tensor(), ctx.tensor({2, 2, 16, 15})); },
               ErrorCode::invalid_argument, {"SelfAttention", "'weights'", "[2, 2, 16, 16]", "[2, 2, 16, 15]"});
  expect_error([&] { op.record_weights(seq, q, ctx.tensor({2, 15, 8}), Tensor(), ctx.tensor({2, 2, 16, 16})); },
               ErrorCode::invalid_argument, {"'k'", "[2, 15, 8]"});
  // Weights too large for one storage buffer: refused before any tensor that size exists.
  const std::uint64_t range = ctx.device().max_storage_buffer_range;
  const std::size_t S = static_cast<std::size_t>(std::sqrt(double(range) / 4.0 / 8.0)) + 2;
  SelfAttention big(ctx, {2, S, 16, 4, false});
  Tensor bq = ctx.tensor({2, S, 16});
  expect_error([&] { big.record_weights(seq, bq, bq, Tensor(), Tensor()); }, ErrorCode::out_of_range,
               {"SelfAttention", "record_weights", "maxStorageBufferRange"});
  EXPECT_EQ(seq.stats().dispatches, 0u);
}

// ---------------------------------------------------------------------------------------------
// Positional encoding

double pe_reference(std::size_t pos, std::size_t col, std::size_t d) {
  const std::size_t i2 = col - col % 2;
  const long double angle =
      static_cast<long double>(pos) /
      std::pow(10000.0L, static_cast<long double>(i2) / static_cast<long double>(d));
  return static_cast<double>(col % 2 == 0 ? std::sin(angle) : std::cos(angle));
}

TEST(PositionalEncoding, MatchesDefinition) {
  Context& ctx = context();
  for (std::size_t d : {1u, 2u, 7u, 64u, 97u}) {
    for (std::uint32_t offset : {0u, 5000u, 1000000u}) {
      for (bool in_place : {false, true}) {
        for (bool batched : {false, true}) {
          const std::size_t B = batched ? 3 : 1, S = 37;
          const Shape shape = batched ? Shape{B, S, d} : Shape{S, d};
          const auto x = random_floats(B * S * d, static_cast<std::uint32_t>(d + offset));
          Tensor tx = ctx.tensor(shape);
          ctx.write(tx, x);
          Tensor tout = in_place ? tx : ctx.tensor(shape);
          PositionalEncoding pe(ctx, d);
          Sequence seq = ctx.sequence();
          pe.record(seq, tx, tout, offset);
          seq.download(tout);
          seq.eval();
          std::vector<double> want(x.size());
          for (std::size_t r = 0; r < B * S; ++r) {
            for (std::size_t c = 0; c < d; ++c) {
              want[r * d + c] = double(x[r * d + c]) + pe_reference(r % S + offset, c, d);
            }
          }
          // Exact angle reduction + ~1 ulp polynomials: ~1e-7, plus the fp32 rounding of the sum.
          EXPECT_TRUE(all_close(seq.read<float>(tout), want, 0.0, 4e-7))
              << "d=" << d << " offset=" << offset << " in_place=" << in_place;
        }
      }
    }
  }
}

TEST(PositionalEncoding, BadArguments) {
  Context& ctx = context();
  expect_error([&] { PositionalEncoding pe(ctx, 0); }, ErrorCode::invalid_argument,
               {"PositionalEncoding", "d_model"});
  PositionalEncoding pe(ctx, 8);
  Sequence seq = ctx.sequence();
  Tensor x = ctx.tensor({2, 5, 8});
  expect_error([&] { pe.record(seq, ctx.tensor({2, 5, 7}), ctx.tensor({2, 5, 7})); },
               ErrorCode::invalid_argument, {"PositionalEncoding", "'x'", "[2, 5, 7]"});
  expect_error([&] { pe.record(seq, x, ctx.tensor({2, 6, 8})); }, ErrorCode::invalid_argument,
               {"'out'", "[2, 6, 8]"});
  expect_error([&] { pe.record(seq, x, ctx.tensor({2, 5, 8}, DType::f16)); },
               ErrorCode::invalid_argument, {"'out'", "f16"});
  expect_error([&] { pe.record(seq, ctx.tensor({40}), ctx.tensor({40})); },
               ErrorCode::invalid_argument, {"'x'", "[40]"});
}

// ---------------------------------------------------------------------------------------------
// Residual add

TEST(ResidualAdd, OutOfPlaceAndInPlace) {
  Context& ctx = context();
  ResidualAdd add(ctx);
  for (std::size_t n : {1u, 7u, 1000u, 65537u}) {
    const auto a = random_floats(n, 1), b = random_floats(n, 2, -100.0f, 100.0f);
    std::vector<float> sum(n), twice(n);
    for (std::size_t i = 0; i < n; ++i) {
      sum[i] = a[i] + b[i];  // fp32 addition is correctly rounded on host and device alike
      twice[i] = a[i] + a[i];
    }
    for (int mode = 0; mode < 4; ++mode) {
      Tensor ta = ctx.tensor({n}), tb = ctx.tensor({n});
      ctx.write(ta, a);
      ctx.write(tb, b);
      Tensor out = mode == 0 ? ctx.tensor({n}) : mode == 1 ? ta : mode == 2 ? tb : ta;
      Sequence seq = ctx.sequence();
      if (mode == 3) {
        add.record(seq, ta, ta, ta);
      } else {
        add.record(seq, ta, tb, out);
      }
      seq.download(out);
      seq.eval();
      const auto got = seq.read<float>(out);
      EXPECT_EQ(0, std::memcmp(got.data(), (mode == 3 ? twice : sum).data(), n * sizeof(float)))
          << "n=" << n << " mode=" << mode;
    }
  }
}

TEST(ResidualAdd, BadArguments) {
  Context& ctx = context();
  ResidualAdd add(ctx);
  Sequence seq = ctx.sequence();
  Tensor a = ctx.tensor({4, 5});
  expect_error([&] { add.record(seq, a, ctx.tensor({4, 6}), ctx.tensor({4, 5})); },
               ErrorCode::invalid_argument, {"ResidualAdd", "'b'", "20 elements", "[4, 6]"});
  expect_error([&] { add.record(seq, a, ctx.tensor({20}), ctx.tensor({4, 5}, DType::i32)); },
               ErrorCode::invalid_argument, {"ResidualAdd", "'out'", "i32"});
  expect_error([&] { add.record(seq, Tensor(), a, a); }, ErrorCode::invalid_argument,
               {"ResidualAdd", "'a'", "empty"});
}

// ---------------------------------------------------------------------------------------------
// The chain the "self-attention + RNN" model runs, in one sequence: x += PE; o = attn(x, x, x);
// y = o + x. The recorder must order the three dispatches (read-after-write on x, then o).

TEST(SelfAttention, PositionalEncodingAttentionResidualChain) {
  Context& ctx = context();
  Problem pr{2, 45, 2, 12, true, {45, 30}};
  const std::size_t H = pr.hidden(), n = pr.batch * pr.S * H;
  const auto x = random_floats(n, 77);
  Tensor tx = ctx.tensor({pr.batch, pr.S, H}), to = ctx.tensor({pr.batch, pr.S, H});
  ctx.write(tx, x);
  PositionalEncoding pe(ctx, H);
  SelfAttention attn(ctx, config_for(pr));
  ResidualAdd add(ctx);
  Sequence seq = ctx.sequence();
  pe.record(seq, tx, tx);
  attn.record(seq, tx, tx, tx, std::span<const std::int32_t>(pr.lengths), to);
  add.record(seq, to, tx, to);
  seq.download(to);
  seq.eval();
  EXPECT_GE(seq.stats().barriers, 2u);

  std::vector<float> xp(n);  // x + PE rounded to fp32 like the device does
  for (std::size_t r = 0; r < pr.batch * pr.S; ++r) {
    for (std::size_t c = 0; c < H; ++c) {
      xp[r * H + c] = static_cast<float>(double(x[r * H + c]) + pe_reference(r % pr.S, c, H));
    }
  }
  auto want = reference(pr, xp, xp, xp);
  for (std::size_t i = 0; i < n; ++i) want[i] += xp[i];
  // x + PE carries ~4e-7 of PE error into q/k/v, scores move by ~d * 4e-7 * |x| ~ 1e-5.
  EXPECT_TRUE(all_close(seq.read<float>(to), want, 1e-5, 2e-5));
}

// ---------------------------------------------------------------------------------------------
// W4 figures (no thresholds): GPU time per dispatch from timestamps.

TEST(SelfAttentionLong, W4Timings) {
  Context& ctx = context();
  for (std::size_t S : {256u, 1024u, 4096u, 16384u}) {
    for (bool causal : {false, true}) {
      Problem pr{1, S, 1, 64, causal, {}};
      const Inputs in = make_inputs(pr, 3);
      const Shape shape{1, S, 64};
      Tensor h = ctx.tensor(shape), out = ctx.tensor(shape);
      ctx.write(h, in.q);
      SelfAttention op(ctx, config_for(pr));
      const int timed = S <= 4096 ? 20 : 5;
      std::vector<double> ms;
      for (int rep = 0; rep <= timed; ++rep) {  // rep 0 warms up (compile, first touch)
        Sequence seq = ctx.sequence({.profile = true});
        op.record(seq, h, h, h, Tensor(), out);
        seq.eval();
        const auto t = seq.timings();
        if (rep > 0 && !t.empty()) ms.push_back(t[0].gpu_ns * 1e-6);
      }
      ASSERT_FALSE(ms.empty()) << "no timestamps (device without compute timestamps?)";
      std::sort(ms.begin(), ms.end());
      const double med = ms[ms.size() / 2];
      const double flops = 4.0 * double(S) * double(S) * 64.0;
      std::printf("[ W4 ] %s S=%zu d=64 causal=%d: median %.3f ms (min %.3f max %.3f, %zu runs), "
                  "%.2f GFLOP/s by 4*S*S*d%s\n",
                  ctx.device().name.c_str(), S, causal, med, ms.front(), ms.back(), ms.size(),
                  flops / (med * 1e6),
                  causal ? fmt::format(" ({:.2f} on the ~half that causal computes)",
                                       flops / 2 / (med * 1e6)).c_str()
                         : "");
    }
  }
}

}  // namespace
}  // namespace vkrnn
