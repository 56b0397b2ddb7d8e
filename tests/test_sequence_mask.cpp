// SequenceMask against an exact CPU reference (a select: results must match bit for bit):
// a grid of [B, T, W] shapes with lengths of 0, T, beyond T and negative (clamped on the GPU),
// in place and out of place; a grid folded into two dimensions; the staging context; host
// lengths; ordering inside a chain of dispatches; errors.
#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstring>
#include <limits>
#include <span>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "common/test_env.hpp"
#include "expect_error.hpp"
#include "vkrnn/residual_add.hpp"
#include "vkrnn/sequence_mask.hpp"

namespace vkrnn {
namespace {

using test::context;
using test::expect_error;
using test::random_floats;

// Random values with NaN, infinities and -0 sprinkled in: padding must become +0 whatever it
// held, and valid elements must come through untouched.
std::vector<float> make_x(std::size_t n, std::uint32_t seed) {
  auto x = random_floats(n, seed, -10.0f, 10.0f);
  for (std::size_t i = 0; i < n; ++i) {
    if (i % 7 == 3) x[i] = std::numeric_limits<float>::quiet_NaN();
    if (i % 11 == 5) x[i] = -std::numeric_limits<float>::infinity();
    if (i % 13 == 6) x[i] = -0.0f;
  }
  return x;
}

std::vector<float> reference(const std::vector<float>& x, const MaskShape& s, const std::vector<std::int32_t>& lengths) {
  std::vector<float> out(x.size());
  for (std::size_t b = 0; b < s.batch; ++b) {
    // Clamped to [0, T] in 64 bits (INT_MIN and INT_MAX included).
    const std::int64_t len = std::clamp<std::int64_t>(lengths[b], 0, static_cast<std::int64_t>(s.steps));
    for (std::size_t t = 0; t < s.steps; ++t)
      for (std::size_t w = 0; w < s.width; ++w) {
        const std::size_t i = (b * s.steps + t) * s.width + w;
        out[i] = static_cast<std::int64_t>(t) < len ? x[i] : 0.0f;
      }
  }
  return out;
}

// The index of the first element whose bits differ, or -1.
std::ptrdiff_t first_difference(const std::vector<float>& got, const std::vector<float>& want) {
  if (got.size() != want.size()) return 0;
  for (std::size_t i = 0; i < got.size(); ++i)
    if (std::memcmp(&got[i], &want[i], sizeof(float)) != 0) return static_cast<std::ptrdiff_t>(i);
  return -1;
}

// Runs the op once (device lengths) and compares bit for bit with the reference.
void check(Context& ctx, const SequenceMask& op, const MaskShape& s, const std::vector<std::int32_t>& lengths,
           bool in_place, std::uint32_t seed) {
  const std::size_t n = s.batch * s.steps * s.width;
  SCOPED_TRACE(fmt::format("B={} T={} W={} lengths=[{}] {}", s.batch, s.steps, s.width, fmt::join(lengths, ", "),
                           in_place ? "in place" : "out of place"));
  const auto x = make_x(n, seed);
  const Tensor tx = ctx.tensor({s.batch, s.steps, s.width}, DType::f32, "x");
  const Tensor tl = ctx.tensor({s.batch}, DType::i32, "lengths");
  ctx.write(tx, x);
  ctx.write(tl, lengths);
  Tensor out = tx;
  if (!in_place) {
    out = ctx.tensor({s.batch, s.steps, s.width}, DType::f32, "out");
    ctx.write(out, std::vector<float>(n, 12345.0f));  // every element must be written
  }
  Sequence seq = ctx.sequence();
  op.record(seq, tx, tl, out);
  seq.download(out);
  if (!in_place) seq.download(tx);
  seq.eval();
  EXPECT_EQ(seq.stats().dispatches, 1u);
  const auto got = seq.read<float>(out);
  const auto want = reference(x, s, lengths);
  const auto bad = first_difference(got, want);
  EXPECT_EQ(bad, -1) << "element " << bad << ": got " << got[static_cast<std::size_t>(std::max<std::ptrdiff_t>(bad, 0))]
                     << ", want " << want[static_cast<std::size_t>(std::max<std::ptrdiff_t>(bad, 0))];
  if (!in_place) {
    EXPECT_EQ(first_difference(seq.read<float>(tx), x), -1) << "x changed";
  }
}

// Lengths for batch row b of grid case `c`: every kind appears for every T, also with B = 1.
std::int32_t length_for(std::size_t b, std::size_t c, std::size_t T) {
  const std::int64_t t = static_cast<std::int64_t>(T);
  const std::int64_t kinds[] = {0, t, t + 1, -1, t / 2, 1, t - 1, INT_MAX, INT_MIN, (3 * t) / 4, -t};
  return static_cast<std::int32_t>(kinds[(b * 5 + c) % std::size(kinds)]);
}

TEST(SequenceMask, MatchesReferenceOverShapes) {
  Context& ctx = context();
  const SequenceMask op(ctx);
  std::size_t c = 0;
  for (std::size_t B : {1u, 3u, 7u})
    for (std::size_t T : {1u, 2u, 13u, 1000u})
      for (std::size_t W : {1u, 5u, 64u, 129u}) {
        std::vector<std::int32_t> lengths(B);
        for (std::size_t b = 0; b < B; ++b) lengths[b] = length_for(b, c, T);
        for (bool in_place : {false, true}) check(ctx, op, {B, T, W}, lengths, in_place, static_cast<std::uint32_t>(c));
        ++c;
      }
}

TEST(SequenceMask, LongSequencesAndEveryLengthKind) {
  Context& ctx = context();
  const SequenceMask op(ctx);
  // One very long sequence of scalars, and a batch holding every kind of length at once.
  check(ctx, op, {1, 100003, 1}, {77777}, true, 1);
  check(ctx, op, {1, 100003, 1}, {77777}, false, 2);
  const std::vector<std::int32_t> kinds{0, 17, 18, 40, -1, INT_MAX, INT_MIN, 1, 9};
  for (bool in_place : {false, true}) check(ctx, op, {kinds.size(), 17, 3}, kinds, in_place, 3);
}

TEST(SequenceMask, WorkgroupSizes) {
  Context& ctx = context();
  for (std::uint32_t wg : {1u, 7u, 32u, 256u, 100000u}) {
    const SequenceMask op(ctx, {.workgroup_size = wg});
    EXPECT_GE(op.workgroup_size(), 1u);
    EXPECT_LE(op.workgroup_size(), ctx.device().max_workgroup_invocations);
    for (bool in_place : {false, true}) check(ctx, op, {3, 29, 7}, {29, 0, 11}, in_place, wg);
  }
}

// On the limit profiles (tests/common/test_env.hpp): 3 bindings and no shared memory, so it runs
// under every one, with workgroups within 128 invocations.
TEST(SequenceMask, LimitProfiles) {
  for (test::Limits limits : test::kAllLimits) {
    Context& ctx = test::limited_context(limits);
    SCOPED_TRACE(fmt::format("limits '{}'", test::to_string(limits)));
    const SequenceMask op(ctx);
    EXPECT_LE(op.workgroup_size(), ctx.device().max_workgroup_invocations);
    for (bool in_place : {false, true}) check(ctx, op, {3, 29, 7}, {29, 0, 11}, in_place, 5);
  }
}

// More workgroups than the device's x limit: the grid folds into y.
TEST(SequenceMask, FoldedGrid) {
  Context& ctx = context();
  const std::uint64_t max_x = ctx.device().max_workgroup_count[0];
  // One lane per workgroup: n > max_x needs the fold at any size the device allows.
  {
    const SequenceMask op(ctx, {.workgroup_size = 1});
    ASSERT_EQ(op.workgroup_size(), 1u);
    if (max_x >= (std::uint64_t(1) << 24)) GTEST_SKIP() << "x grid limit " << max_x << ": no fold at test sizes";
    const std::size_t T = 1000, W = 3, B = static_cast<std::size_t>(max_x / (T * W) + 2);
    ASSERT_GT(std::uint64_t(B) * T * W, max_x);
    std::vector<std::int32_t> lengths(B);
    for (std::size_t b = 0; b < B; ++b) lengths[b] = length_for(b, 3, T);
    for (bool in_place : {false, true}) check(ctx, op, {B, T, W}, lengths, in_place, 11);
  }
  // The device's workgroup size: B*T*W > max_x * wg (~4.2M elements with lavapipe's 65535 x 64).
  const SequenceMask op(ctx);
  const std::uint64_t lanes = max_x * op.workgroup_size();
  if (lanes >= (std::uint64_t(1) << 24)) GTEST_SKIP() << lanes << " lanes in x: no fold at test sizes";
  const std::size_t T = 1024, W = 1021, B = static_cast<std::size_t>(lanes / (T * W) + 1);
  ASSERT_GT(std::uint64_t(B) * T * W, lanes);
  std::vector<std::int32_t> lengths(B);
  for (std::size_t b = 0; b < B; ++b) lengths[b] = length_for(b, 0, T);
  lengths[0] = 1000;
  for (bool in_place : {false, true}) check(ctx, op, {B, T, W}, lengths, in_place, 12);
}

TEST(SequenceMask, StagingContext) {
  Context& ctx = test::staging_context();
  const SequenceMask op(ctx);
  for (bool in_place : {false, true}) {
    check(ctx, op, {3, 13, 129}, {13, 0, 5}, in_place, 21);
    check(ctx, op, {7, 1000, 5}, {1000, 999, 0, -4, 1001, 1, 500}, in_place, 22);
  }
}

// Any shape of B*T*W elements through MaskShape (here a flat tensor and a reshaped handle).
TEST(SequenceMask, ExplicitShapeAndViews) {
  Context& ctx = context();
  const SequenceMask op(ctx);
  const MaskShape s{4, 6, 10};
  const std::vector<std::int32_t> lengths{6, 2, 0, 5};
  const auto x = make_x(240, 31);
  const Tensor flat = ctx.tensor({240});
  const Tensor tl = ctx.tensor({4}, DType::i32);
  const Tensor out = ctx.tensor({24, 10});
  ctx.write(flat, x);
  ctx.write(tl, lengths);
  Sequence seq = ctx.sequence();
  op.record(seq, s, flat, tl, out);                                 // out of place, other shapes
  op.record(seq, flat.reshaped({4, 6, 10}), tl, flat.reshaped({4, 60}).reshaped({4, 6, 10}));  // in place via views
  seq.download(out).download(flat);
  seq.eval();
  const auto want = reference(x, s, lengths);
  EXPECT_EQ(first_difference(seq.read<float>(out), want), -1);
  EXPECT_EQ(first_difference(seq.read<float>(flat), want), -1);
  // Rank 2 is [B, T] with W = 1; rank 4 folds the trailing dims into W.
  const Tensor r2 = ctx.tensor({4, 60}), r4 = ctx.tensor({4, 6, 2, 5});
  ctx.write(r2, x);
  ctx.write(r4, x);
  Sequence seq2 = ctx.sequence();
  op.record(seq2, r2, std::vector<std::int32_t>{60, 20, 0, 59}, r2);
  op.record(seq2, r4, tl, r4);
  seq2.download(r2).download(r4);
  seq2.eval();
  EXPECT_EQ(first_difference(seq2.read<float>(r2), reference(x, {4, 60, 1}, {60, 20, 0, 59})), -1);
  EXPECT_EQ(first_difference(seq2.read<float>(r4), want), -1);
}

TEST(SequenceMask, HostLengths) {
  Context& ctx = context();
  const SequenceMask op(ctx);
  const MaskShape s{3, 9, 4};
  const auto x = make_x(108, 41);
  const std::vector<std::int32_t> ragged{9, 0, 4}, full{9, 9, 9};
  for (bool in_place : {false, true}) {
    for (const auto* lengths : {&ragged, &full}) {
      const Tensor tx = ctx.tensor({3, 9, 4});
      ctx.write(tx, x);
      const Tensor out = in_place ? tx : ctx.tensor({3, 9, 4});
      Sequence seq = ctx.sequence();
      op.record(seq, tx, std::span<const std::int32_t>(*lengths), out);
      seq.download(out);
      seq.eval();
      // In place with nothing to zero records nothing.
      EXPECT_EQ(seq.stats().dispatches, (in_place && lengths == &full) ? 0u : 1u);
      EXPECT_EQ(first_difference(seq.read<float>(out), reference(x, s, *lengths)), -1)
          << (in_place ? "in place" : "out of place") << (lengths == &full ? ", full" : ", ragged");
    }
  }
}

// The recorder orders the in-place mask between the dispatch writing y and the one reading it.
TEST(SequenceMask, OrderedInAChain) {
  Context& ctx = context();
  const SequenceMask mask(ctx);
  const ResidualAdd add(ctx);
  const MaskShape s{5, 31, 16};
  const std::size_t n = 5 * 31 * 16;
  const auto a = random_floats(n, 51), b = random_floats(n, 52), c = random_floats(n, 53);
  const std::vector<std::int32_t> lengths{31, 3, 0, 30, 17};
  const Tensor ta = ctx.tensor({5, 31, 16}), tb = ctx.tensor({5, 31, 16}), tc = ctx.tensor({5, 31, 16});
  const Tensor y = ctx.tensor({5, 31, 16}), z = ctx.tensor({5, 31, 16}), tl = ctx.tensor({5}, DType::i32);
  ctx.write(ta, a);
  ctx.write(tb, b);
  ctx.write(tc, c);
  ctx.write(tl, lengths);
  Sequence seq = ctx.sequence();
  add.record(seq, ta, tb, y);  // y = a + b
  mask.record(seq, y, tl, y);  // padded rows of y = 0
  add.record(seq, y, tc, z);   // z = y + c
  seq.download(z);
  seq.eval();
  EXPECT_GE(seq.stats().barriers, 2u);
  std::vector<float> sum(n);
  for (std::size_t i = 0; i < n; ++i) sum[i] = a[i] + b[i];
  auto want = reference(sum, s, lengths);
  for (std::size_t i = 0; i < n; ++i) want[i] += c[i];
  EXPECT_EQ(first_difference(seq.read<float>(z), want), -1);
}

TEST(SequenceMask, Errors) {
  Context& ctx = context();
  const SequenceMask op(ctx);
  Sequence seq = ctx.sequence();
  const Tensor x = ctx.tensor({2, 3, 4}), tl = ctx.tensor({2}, DType::i32);
  const auto inv = ErrorCode::invalid_argument;
  expect_error([&] { op.record(seq, ctx.tensor({24}), tl, ctx.tensor({24})); }, inv,
               {"SequenceMask", "'x'", "rank >= 2", "[24]"});
  expect_error([&] { op.record(seq, Tensor(), tl, x); }, inv, {"SequenceMask", "'x'", "empty"});
  expect_error([&] { op.record(seq, ctx.tensor({2, 3, 4}, DType::i32), tl, x); }, inv,
               {"SequenceMask", "'x'", "f32", "24 elements", "i32 [2, 3, 4]"});
  expect_error([&] { op.record(seq, x, tl, ctx.tensor({2, 3, 5})); }, inv,
               {"SequenceMask", "'out'", "24 elements", "[2, 3, 5]"});
  expect_error([&] { op.record(seq, x, tl, ctx.tensor({2, 3, 4}, DType::f16)); }, inv,
               {"SequenceMask", "'out'", "f16"});
  expect_error([&] { op.record(seq, x, ctx.tensor({3}, DType::i32), x); }, inv,
               {"SequenceMask", "'lengths'", "2 elements", "i32 [3]"});
  expect_error([&] { op.record(seq, x, ctx.tensor({2}), x); }, inv, {"SequenceMask", "'lengths'", "i32", "f32 [2]"});
  expect_error([&] { op.record(seq, x, Tensor(), x); }, inv, {"SequenceMask", "'lengths'", "empty"});
  expect_error([&] { op.record(seq, {2, 3, 5}, x, tl, x); }, inv, {"SequenceMask", "'x'", "30 elements", "[2, 3, 4]"});
  expect_error([&] { op.record(seq, {2, 0, 4}, x, tl, x); }, inv, {"SequenceMask", "T = 0", ">= 1"});
  // Host lengths: count and range.
  expect_error([&] { op.record(seq, x, std::vector<std::int32_t>{3}, x); }, inv,
               {"SequenceMask", "'lengths'", "2 values", "got 1"});
  expect_error([&] { op.record(seq, x, std::vector<std::int32_t>{3, 4}, x); }, inv,
               {"SequenceMask", "lengths[1] = 4", "[0, T = 3]"});
  expect_error([&] { op.record(seq, x, std::vector<std::int32_t>{-1, 2}, x); }, inv,
               {"SequenceMask", "lengths[0] = -1"});
  EXPECT_EQ(seq.stats().dispatches, 0u);
  EXPECT_EQ(seq.stats().copies, 0u);
}

}  // namespace
}  // namespace vkrnn
