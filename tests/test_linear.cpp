// Gemm / Linear (Y = X W^T + b, W stored [N, K]) against a double-precision CPU reference over
// awkward shapes, on both kernels (gemv, tiled), with and without subgroup arithmetic, fp16
// and int8 weights, strided views, and the errors for bad arguments.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "common/test_env.hpp"
#include "expect_error.hpp"
#include "vkrnn/half.hpp"
#include "vkrnn/linear.hpp"

namespace vkrnn {
namespace {

using test::context;
using test::kAllLimits;
using test::limited_context;
using test::Limits;
using test::expect_error;
using test::random_floats;

// y = x w^T + b in double, plus the magnitude sum |x_k w_k| + |b| that bounds fp32 rounding.
void reference(const std::vector<float>& x, const std::vector<float>& w, const std::vector<float>& b,
               std::size_t M, std::size_t N, std::size_t K, std::vector<double>& y,
               std::vector<double>& scale) {
  y.assign(M * N, 0.0);
  scale.assign(M * N, 0.0);
  for (std::size_t m = 0; m < M; ++m) {
    for (std::size_t n = 0; n < N; ++n) {
      double s = b.empty() ? 0.0 : b[n];
      double a = b.empty() ? 0.0 : std::abs(b[n]);
      for (std::size_t k = 0; k < K; ++k) {
        const double p = double(x[m * K + k]) * double(w[n * K + k]);
        s += p;
        a += std::abs(p);
      }
      y[m * N + n] = s;
      scale[m * N + n] = a;
    }
  }
}

// fp32 sums of K products: |err| <= rel * sum|terms| (1e-5 is ~ 100 ulp of the magnitude).
::testing::AssertionResult close(const std::vector<float>& got, const std::vector<double>& want,
                                 const std::vector<double>& scale, double rel = 1e-5) {
  if (got.size() != want.size()) return ::testing::AssertionFailure() << "size " << got.size() << " != " << want.size();
  std::size_t bad = 0;
  std::string report;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double err = std::abs(double(got[i]) - want[i]);
    if (!std::isfinite(got[i]) || err > rel * scale[i] + 1e-30) {
      if (bad < 6) report += fmt::format("\n  [{}] got {:.9g} want {:.9g} (err {:.3g}, scale {:.3g})", i, got[i], want[i], err, scale[i]);
      ++bad;
    }
  }
  if (!bad) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << bad << " of " << got.size() << " out of tolerance" << report;
}

struct Variant {
  Gemm::Path path;
  bool no_subgroup;
  bool f16;
};

std::string name(const Variant& v) {
  return fmt::format("{}{}{}",
                     v.path == Gemm::Path::gemv              ? "gemv"
                     : v.path == Gemm::Path::gemv_invocation ? "gemv_invocation"
                     : v.path == Gemm::Path::tiled           ? "tiled"
                                                             : "auto",
                     v.no_subgroup ? "/nosubgroup" : "", v.f16 ? "/f16" : "");
}

void run_case(Context& ctx, const Variant& v, std::size_t M, std::size_t N, std::size_t K, bool bias,
              std::uint32_t seed, std::optional<ActivationFn> act = {}) {
  SCOPED_TRACE(fmt::format("{} M={} N={} K={} bias={} activation={}", name(v), M, N, K, bias, act ? int(*act) : -1));
  auto x = random_floats(M * K, seed);
  auto w = random_floats(N * K, seed + 1);
  auto b = bias ? random_floats(N, seed + 2) : std::vector<float>{};
  if (v.f16) {  // the reference sees the weights the device stores
    for (auto& f : w) f = half_to_float(float_to_half(f));
  }
  OpOptions o;
  o.force_shared_memory_reduction = v.no_subgroup;
  o.fp16_storage = v.f16;
  // Packed weights (CPU drivers) serve the per-invocation GEMV only: the other pinned paths
  // read row-major ones.
  o.pack_weights = v.path == Gemm::Path::gemv_invocation || v.path == Gemm::Path::automatic;
  Linear lin(ctx, K, N, bias, o);
  lin.gemm().set_path(v.path);
  lin.load(w, {N, K}, b);
  lin.set_activation(act);
  std::vector<double> want, scale;
  reference(x, w, b, M, N, K, want, scale);
  if (act) {
    // tanh, sigmoid and relu are 1-Lipschitz: the fp32 bound carries over, plus the rounding
    // of f itself (a few ulp of a result below 1).
    for (std::size_t i = 0; i < want.size(); ++i) {
      want[i] = *act == ActivationFn::tanh ? std::tanh(want[i]) : *act == ActivationFn::sigmoid ? 1.0 / (1.0 + std::exp(-want[i])) : std::max(want[i], 0.0);
      scale[i] += 0.1;
    }
  }
  const auto got = lin.forward(x, M);
  EXPECT_TRUE(close(got, want, scale));
}

const std::vector<Variant>& variants() {
  static const std::vector<Variant> v = {
      {Gemm::Path::gemv, false, false},  {Gemm::Path::gemv, true, false},
      {Gemm::Path::gemv_invocation, false, false},
      {Gemm::Path::tiled, false, false}, {Gemm::Path::automatic, false, false},
      {Gemm::Path::gemv, false, true},   {Gemm::Path::gemv, true, true},
      {Gemm::Path::gemv_invocation, false, true},
      {Gemm::Path::tiled, false, true},
  };
  return v;
}

bool supported(Context& ctx, const Variant& v) { return !v.f16 || ctx.features().storage_buffer_16bit; }

TEST(Linear, AwkwardShapesAllKernels) {
  auto& ctx = context();
  // (M, N, K): ones, primes, non-multiples of 4 / of the tiles (64), K = 1, large K.
  const std::vector<std::tuple<std::size_t, std::size_t, std::size_t>> shapes = {
      {1, 1, 1},   {1, 7, 5},    {3, 1, 1},    {2, 5, 3},     {1, 64, 256}, {4, 130, 64},
      {5, 13, 17}, {9, 67, 1},   {17, 3, 31},  {64, 64, 64},  {65, 129, 33}, {1, 31, 4099},
      {3, 8, 1023}, {131, 5, 7}, {16, 256, 300}};
  std::uint32_t seed = 1;
  for (const auto& v : variants()) {
    if (!supported(ctx, v)) continue;
    for (auto [M, N, K] : shapes) {
      run_case(ctx, v, M, N, K, (seed % 3) != 0, seed);
      seed += 7;
    }
  }
}

TEST(Linear, BigRowsTiledAndGemv) {
  auto& ctx = context();
  for (const auto& v : {Variant{Gemm::Path::tiled, false, false}, Variant{Gemm::Path::gemv, false, false},
                        Variant{Gemm::Path::gemv_invocation, false, false}}) {
    run_case(ctx, v, 515, 97, 129, true, 99);
  }
}

TEST(Linear, LargeKAccumulation) {
  auto& ctx = context();
  for (const auto& v : {Variant{Gemm::Path::gemv, false, false}, Variant{Gemm::Path::gemv_invocation, false, false},
                        Variant{Gemm::Path::tiled, false, false}}) {
    run_case(ctx, v, 2, 3, 65537, true, 5);
  }
}

// K past what one invocation may loop over (lavapipe silently ends loops past 65535
// iterations: a per-invocation dot product of K > ~262,000 was cut short): K runs in slices
// that accumulate into y, on every kernel, aligned and not.
TEST(Linear, KPastTheLoopBudget) {
  auto& ctx = context();
  std::uint32_t seed = 300;
  for (const auto& v : variants()) {
    if (!supported(ctx, v) || (v.f16 && v.path != Gemm::Path::gemv_invocation)) continue;
    run_case(ctx, v, 2, 3, v.f16 || v.no_subgroup ? 270001 : 300000, !v.f16, seed++);
  }
  Linear lin(ctx, 300000, 3, true);
  lin.gemm().set_path(Gemm::Path::gemv_invocation);
  lin.load(random_floats(3 * 300000, 1), {3, 300000}, random_floats(3, 2));
  Tensor x = ctx.tensor({1, 300000}), y = ctx.tensor({1, 3});
  Sequence seq = ctx.sequence();
  lin.record(seq, x, y);
  EXPECT_GE(seq.stats().dispatches, 3u) << "one invocation's dot product of 300,000 needs >= 3 slices of the budget";
}

// The activation in the store of every kernel (Gemm::set_activation, what the graph runtime
// fuses a linear + tanh into): awkward shapes, and K in slices past the loop budget, where only
// the last slice may apply it.
TEST(Linear, FusedActivationAllKernels) {
  auto& ctx = context();
  const std::vector<std::tuple<std::size_t, std::size_t, std::size_t>> shapes = {
      {1, 1, 1}, {1, 7, 5}, {3, 13, 17}, {16, 130, 64}, {65, 9, 33}};
  std::uint32_t seed = 900;
  for (const auto& v : variants()) {
    if (!supported(ctx, v)) continue;
    for (auto [M, N, K] : shapes) {
      for (ActivationFn f : {ActivationFn::tanh, ActivationFn::sigmoid, ActivationFn::relu}) {
        run_case(ctx, v, M, N, K, seed % 2 == 0, seed, f);
        seed += 3;
      }
    }
  }
  for (Gemm::Path path : {Gemm::Path::gemv, Gemm::Path::gemv_invocation, Gemm::Path::tiled}) {
    run_case(ctx, {path, false, false}, 2, 3, 300000, true, seed++, ActivationFn::tanh);
  }
}

TEST(LinearLong, FullGrid) {
  auto& ctx = context();
  const std::vector<std::size_t> ms = {1, 2, 3, 4, 5, 8, 9, 33, 128, 257};
  const std::vector<std::size_t> ns = {1, 3, 4, 17, 64, 65, 300};
  const std::vector<std::size_t> ks = {1, 2, 4, 7, 64, 301, 2048};
  std::uint32_t seed = 1000;
  for (const auto& v : variants()) {
    if (!supported(ctx, v)) continue;
    for (auto M : ms)
      for (auto N : ns)
        for (auto K : ks) {
          run_case(ctx, v, M, N, K, seed % 2 == 0, seed);
          ++seed;
        }
  }
}

TEST(Linear, AutomaticPathChoice) {
  auto& ctx = context();
  Gemm g(ctx);
  if (ctx.device().type == DeviceType::cpu) {
    EXPECT_EQ(g.path_for(1), Gemm::Path::gemv_invocation);
    EXPECT_EQ(g.path_for(4096), Gemm::Path::gemv_invocation);
  } else {
    EXPECT_EQ(g.path_for(1), ctx.device().subgroup_arithmetic ? Gemm::Path::gemv : Gemm::Path::gemv_invocation);
    EXPECT_EQ(g.path_for(4096), Gemm::Path::tiled);
  }
}

// Sub-blocks of bigger tensors: offsets and row strides on x, w and y; the parts of y outside the
// view stay untouched.
TEST(Linear, StridedViews) {
  auto& ctx = context();
  const std::size_t M = 5, N = 6, K = 7;
  const std::size_t ldx = 9, ldw = 11, ldy = 8, xo = 3, wo = 2, yo = 4, bo = 1;
  const auto xs = random_floats(xo + M * ldx, 11);
  const auto ws = random_floats(wo + N * ldw, 12);
  const auto bs = random_floats(bo + N, 13);
  for (const auto& v : {Variant{Gemm::Path::gemv, false, false}, Variant{Gemm::Path::gemv, true, false},
                        Variant{Gemm::Path::gemv_invocation, false, false}, Variant{Gemm::Path::tiled, false, false}}) {
    SCOPED_TRACE(name(v));
    OpOptions o;
    o.force_shared_memory_reduction = v.no_subgroup;
    Gemm gemm(ctx, o);
    gemm.set_path(v.path);
    Tensor xt = ctx.tensor({xs.size()}, xs), wt = ctx.tensor({ws.size()}, ws), bt = ctx.tensor({bs.size()}, bs);
    Tensor yt = ctx.tensor({yo + M * ldy + 3});
    std::vector<float> y0(yt.size(), -7.0f);
    ctx.write(yt, y0);
    Sequence seq = ctx.sequence();
    gemm.record(seq, MatrixView{xt, M, K, xo, ldx}, MatrixView{wt, N, K, wo, ldw}, bt, bo, MatrixView{yt, M, N, yo, ldy});
    seq.download(yt);
    seq.eval();
    EXPECT_EQ(seq.stats().dispatches, 1u);
    const auto got = seq.read<float>(yt);
    for (std::size_t i = 0; i < got.size(); ++i) {
      const bool inside = i >= yo && (i - yo) / ldy < M && (i - yo) % ldy < N;
      if (!inside) {
        EXPECT_EQ(got[i], -7.0f) << "element " << i << " outside the view was written";
        continue;
      }
      const std::size_t m = (i - yo) / ldy, n = (i - yo) % ldy;
      double want = bs[bo + n], scale = std::abs(bs[bo + n]);
      for (std::size_t k = 0; k < K; ++k) {
        want += double(xs[xo + m * ldx + k]) * ws[wo + n * ldw + k];
        scale += std::abs(double(xs[xo + m * ldx + k]) * ws[wo + n * ldw + k]);
      }
      EXPECT_NEAR(got[i], want, 1e-5 * scale) << "m " << m << " n " << n;
    }
  }
}

// The kernels other devices get (tests/common/test_env.hpp), chosen automatically: a GPU's
// (subgroup GEMV for a few rows, the tiled GEMM for many), a mobile GPU's (16 KiB of shared
// memory: thinner K slices; 128 invocations: 16 x 8 tiles; no subgroups) and the Vulkan
// minimums (4 storage buffers: exactly what the GEMM binds).
TEST(Linear, LimitProfiles) {
  for (Limits limits : kAllLimits) {
    Context& ctx = limited_context(limits);
    SCOPED_TRACE(fmt::format("limits '{}'", test::to_string(limits)));
    Gemm g(ctx);
    EXPECT_EQ(g.path_for(64), Gemm::Path::tiled);
    EXPECT_EQ(g.path_for(2), ctx.device().subgroup_arithmetic ? Gemm::Path::gemv : Gemm::Path::gemv_invocation);
    std::uint32_t seed = 3000;
    for (auto [M, N, K] : std::vector<std::tuple<std::size_t, std::size_t, std::size_t>>{
             {1, 7, 5}, {3, 67, 129}, {9, 5, 3}, {65, 129, 33}, {131, 64, 300}}) {
      run_case(ctx, {Gemm::Path::automatic, false, false}, M, N, K, seed % 2 == 0, seed);
      seed += 7;
    }
    if (!ctx.features().storage_buffer_16bit) {
      OpOptions fp16;
      fp16.fp16_storage = true;
      expect_error([&] { Linear(ctx, 4, 4, true, fp16); }, ErrorCode::missing_feature,
                   {"storageBuffer16BitAccess"});
    }
  }
}

// The staging (discrete-GPU) memory path gives the same result.
TEST(Linear, StagingContext) {
  run_case(test::staging_context(), {Gemm::Path::automatic, false, false}, 3, 17, 33, true, 77);
}

// CPU drivers read W and x through texel views (plan::texel_loads) up to the device's
// maxTexelBufferElements; past it the storage-buffer loads take over, and a kernel handed a
// tensor bigger than its view refuses, naming the limit.
TEST(Linear, TexelLoadsFollowTheDeviceLimit) {
  auto o = test::validated_options();
  o.limits = DeviceLimits{.max_texel_buffer_elements = 64};  // views of 1 KiB
  Context ctx(o);
  auto gemv_specs = [&](std::uint32_t texel) {
    std::size_t n = 0;
    for (const auto& s : ctx.kernel_specs()) {
      n += s.shader.starts_with("gemv") && s.constants.size() > 9 && s.constants[9] == texel;
    }
    return n;
  };
  const bool cpu = ctx.device().type == DeviceType::cpu;
  run_case(ctx, {Gemm::Path::automatic, false, false}, 1, 8, 32, true, 91);  // W: 1024 bytes
  EXPECT_EQ(gemv_specs(1), cpu ? 1u : 0u);
  EXPECT_EQ(gemv_specs(0), cpu ? 0u : 1u);
  run_case(ctx, {Gemm::Path::automatic, false, false}, 2, 9, 32, true, 92);  // W: 1152 bytes
  EXPECT_EQ(gemv_specs(1), cpu ? 1u : 0u);
  EXPECT_GE(gemv_specs(0), 1u);

  // gemv_nosubgroup with TEXEL (constant 9) bound to a W of 1152 bytes: 72 texels > 64.
  const Kernel k = ctx.kernel({"gemv_nosubgroup", {1, 1, 1, 1, 4, 1, 1, 0, 0, 1}, 6, 12 * 4});
  auto x = ctx.tensor({32}, random_floats(32, 5));
  auto w = ctx.tensor({9, 32}, random_floats(9 * 32, 6));
  auto y = ctx.tensor({9}, DType::f32);
  const std::uint32_t push[12] = {1, 9, 32, 0, 32, 0, 32, 0, 0, 9, 0, 0};
  auto seq = ctx.sequence();
  expect_error([&] { seq.dispatch(k, {in(x), in(w), in(x), inout(y), in(w), in(x)}, std::as_bytes(std::span(push)), {3, 1, 1}); },
               ErrorCode::out_of_range, {"as a texel buffer", "maxTexelBufferElements", "64 texels"});
  expect_error([&] { seq.dispatch(k, {in(x), in(w), in(x), inout(y), inout(x), in(x)}, std::as_bytes(std::span(push)), {3, 1, 1}); },
               ErrorCode::invalid_argument, {"binding 4", "uniform texel buffer: read only"});
}

TEST(Linear, BadArguments) {
  auto& ctx = context();
  Gemm gemm(ctx);
  Tensor x = ctx.tensor({3, 5}), w = ctx.tensor({4, 5}), b = ctx.tensor({4}), y = ctx.tensor({3, 4});
  Sequence seq = ctx.sequence();
  expect_error([&] { gemm.record(seq, ctx.tensor({3, 6}), w, b, y); }, ErrorCode::invalid_argument, {"K = 6"});
  expect_error([&] { gemm.record(seq, x, w, b, ctx.tensor({3, 5})); }, ErrorCode::invalid_argument, {"'y'"});
  expect_error([&] { gemm.record(seq, x, w, ctx.tensor({5}), y); }, ErrorCode::invalid_argument, {"'bias'"});
  expect_error([&] { gemm.record(seq, x, w, b, x.reshaped({5, 3})); }, ErrorCode::invalid_argument, {"'y'"});
  expect_error([&] { gemm.record(seq, x, ctx.tensor({4, 5}, DType::i32), b, y); }, ErrorCode::invalid_argument, {"'w'"});
  expect_error([&] { gemm.record(seq, MatrixView{x, 3, 5, 1, 5}, MatrixView::of(w), b, 0, MatrixView::of(y)); },
               ErrorCode::out_of_range, {"'x'"});
  Tensor xy = ctx.tensor({64});
  expect_error([&] { gemm.record(seq, MatrixView{xy, 2, 5, 0, 5}, MatrixView::of(w), b, 0, MatrixView{xy, 2, 4, 20, 4}); },
               ErrorCode::invalid_argument, {"shares memory"});

  Linear lin(ctx, 5, 4, true);
  expect_error([&] { lin.record(seq, x, y); }, ErrorCode::state, {"before load"});
  expect_error([&] { lin.load(std::vector<float>(19), {4, 5}, std::vector<float>(4)); }, ErrorCode::invalid_argument, {"weight"});
  expect_error([&] { lin.load(std::vector<float>(20), {4, 5}, std::vector<float>(3)); }, ErrorCode::invalid_argument, {"bias"});
  // A transposed weight has the right element count: only its shape tells.
  expect_error([&] { lin.load(std::vector<float>(20), {5, 4}, std::vector<float>(4)); }, ErrorCode::invalid_argument,
               {"Linear(5 -> 4)", "shape [5, 4]", "[4, 5]", "transposed"});
  expect_error([&] { lin.load(std::vector<float>(20), {20}, std::vector<float>(4)); }, ErrorCode::invalid_argument,
               {"shape [20]", "[4, 5]"});
  expect_error([&] { lin.load(std::vector<float>(20), {2, 2, 5}, std::vector<float>(4)); }, ErrorCode::invalid_argument,
               {"shape [2, 2, 5]"});
  Linear nobias(ctx, 5, 4, false);
  expect_error([&] { nobias.load(std::vector<float>(20), {4, 5}, std::vector<float>(4)); }, ErrorCode::invalid_argument, {"without bias"});
  expect_error([&] { Linear(ctx, 0, 4); }, ErrorCode::invalid_argument, {"in_features"});
  EXPECT_EQ(seq.stats().dispatches, 0u);
}


// --- int8 weights ------------------------------------------------------------------------------

OpOptions i8_options(bool no_subgroup = false, bool pack = true) {
  OpOptions o;
  o.weight_storage = WeightStorage::i8;
  o.force_shared_memory_reduction = no_subgroup;
  o.pack_weights = pack;
  return o;
}

// Element (n, k) of an N-row matrix in Linear's packed layout (blocks of R rows, the last one
// short; `unit` elements per 16 bytes; rows of ld elements), independent of ops::pack_row_blocks.
std::size_t packed_index(std::size_t n, std::size_t k, std::size_t N, std::size_t R, std::size_t unit,
                         std::size_t ld) {
  const std::size_t first = n / R * R, rows = std::min(R, N - first);
  return (first * (ld / unit) + k / unit * rows + n - first) * unit + k % unit;
}

// What an i8 Linear stores (read back from the device): the dequantized weights q * scale
// [N, K] and the per-row scales.
struct Stored {
  std::vector<float> w, scales;
};
// Row-major rows padded to whole words, or packed (Linear::pack_rows(): blocks of R rows, 16
// bytes of each row in turn, rows padded to whole 16 bytes).
Stored stored_i8(Context& ctx, const Linear& lin) {
  const std::size_t N = lin.out_features(), K = lin.in_features(), R = lin.pack_rows();
  const std::size_t ld = R ? (K + 15) / 16 * 16 : (K + 3) / 4 * 4;
  EXPECT_EQ(lin.weight().dtype(), DType::i8);
  EXPECT_EQ(lin.scale_offset(), N * ld);
  const auto bytes = ctx.read<std::int8_t>(lin.weight());
  const auto at = [&](std::size_t n, std::size_t k) { return R ? packed_index(n, k, N, R, 16, ld) : n * ld + k; };
  Stored s{std::vector<float>(N * K), std::vector<float>(N)};
  std::memcpy(s.scales.data(), bytes.data() + N * ld, 4 * N);
  for (std::size_t n = 0; n < N; ++n) {
    for (std::size_t k = 0; k < ld; ++k) {
      if (k < K) s.w[n * K + k] = float(bytes[at(n, k)]) * s.scales[n];
      else EXPECT_EQ(bytes[at(n, k)], 0) << "padding of row " << n;
    }
  }
  return s;
}

// An i8 layer against (a) the double reference on the weights it stores (q * scale: only fp32
// rounding, 1e-5 of the magnitude) and (b) the fp32 weights it was given: each weight is off by
// at most scale/2 (round to nearest), so |y - y_f32| <= scale[n]/2 * sum_k |x_k| (+ the fp32
// rounding). Also checks the quantizer: scale = max|w_row| / 127 and |q * scale - w| <= scale/2
// (0.5001: the fp32 rounding of w / scale and of q * scale).
void run_i8_case(Context& ctx, Gemm::Path path, bool no_subgroup, std::size_t M, std::size_t N, std::size_t K,
                 bool bias, std::uint32_t seed) {
  SCOPED_TRACE(fmt::format("i8 {} M={} N={} K={} bias={}", name({path, no_subgroup, false}), M, N, K, bias));
  const auto x = random_floats(M * K, seed);
  auto w = random_floats(N * K, seed + 1);
  if (N > 1) std::fill_n(w.begin() + static_cast<std::ptrdiff_t>(K), K, 0.0f);  // a zero row: scale 0
  const auto b = bias ? random_floats(N, seed + 2) : std::vector<float>{};
  Linear lin(ctx, K, N, bias,
             i8_options(no_subgroup, path == Gemm::Path::gemv_invocation || path == Gemm::Path::automatic));
  ASSERT_EQ(lin.weight_storage(), WeightStorage::i8);
  lin.gemm().set_path(path);
  lin.load(w, {N, K}, b);
  const Stored st = stored_i8(ctx, lin);
  std::size_t bad_q = 0;
  for (std::size_t n = 0; n < N; ++n) {
    float max_abs = 0.0f;
    for (std::size_t k = 0; k < K; ++k) max_abs = std::max(max_abs, std::abs(w[n * K + k]));
    if (st.scales[n] != max_abs / 127.0f) ++bad_q;
    for (std::size_t k = 0; k < K; ++k) {
      if (std::abs(double(st.w[n * K + k]) - w[n * K + k]) > 0.5001 * st.scales[n]) ++bad_q;
    }
  }
  EXPECT_EQ(bad_q, 0u) << "quantized weights off the per-row rule";

  const auto got = lin.forward(x, M);
  std::vector<double> want, scale;
  reference(x, st.w, b, M, N, K, want, scale);
  EXPECT_TRUE(close(got, want, scale)) << "against the dequantized weights";
  // Against fp32 weights: the quantization bound above, as the per-element scale of close().
  std::vector<double> want32, scale32;
  reference(x, w, b, M, N, K, want32, scale32);
  for (std::size_t m = 0; m < M; ++m) {
    double sum_x = 0.0;
    for (std::size_t k = 0; k < K; ++k) sum_x += std::abs(x[m * K + k]);
    for (std::size_t n = 0; n < N; ++n) scale32[m * N + n] = 0.5001 * st.scales[n] * sum_x + 1e-5 * scale32[m * N + n];
  }
  EXPECT_TRUE(close(got, want32, scale32, 1.0)) << "against the fp32 weights";
}

struct I8Path {
  Gemm::Path path;
  bool no_subgroup;
};
const std::vector<I8Path> kI8Paths = {{Gemm::Path::gemv, false},
                                      {Gemm::Path::gemv, true},
                                      {Gemm::Path::gemv_invocation, false},
                                      {Gemm::Path::tiled, false}};

// The grid of the brief: M 1, 3, 16; K 1, 3, 5, 127, 1024, 1025 (K % 4 != 0: padded rows read a
// whole word); N 1, 7 and 8000 (the W3 output projection's vocabulary) on the bigger K.
TEST(LinearI8, AwkwardShapesAllKernels) {
  auto& ctx = context();
  std::uint32_t seed = 5000;
  for (const auto& p : kI8Paths) {
    for (std::size_t M : {1u, 3u, 16u})
      for (std::size_t K : {1u, 3u, 5u, 127u, 1024u, 1025u})
        for (std::size_t N : {1u, 7u}) {
          run_i8_case(ctx, p.path, p.no_subgroup, M, N, K, seed % 2 == 0, seed);
          ++seed;
        }
    run_i8_case(ctx, p.path, p.no_subgroup, 1, 8000, 1024, true, seed++);
    run_i8_case(ctx, p.path, p.no_subgroup, 3, 8000, 127, false, seed++);
  }
  run_i8_case(ctx, Gemm::Path::automatic, false, 16, 8000, 1025, true, seed++);
}

// dequantize_rows is quantize_rows' inverse up to half a step per element, row by row (awkward
// widths, a zero row), and refuses a size that is not rows x cols.
TEST(LinearI8, DequantizeRowsInvertsQuantizeRows) {
  for (auto [rows, cols] : {std::pair<std::size_t, std::size_t>{1, 1}, {3, 5}, {7, 127}}) {
    std::vector<float> w = random_floats(rows * cols, unsigned(rows * 31 + cols), -2.0f, 2.0f);
    std::fill_n(w.begin(), cols, 0.0f);  // row 0: scale 0
    const QuantizedRows q = quantize_rows(w, rows, cols);
    const std::vector<float> back = dequantize_rows(q.q, q.scales, cols);
    ASSERT_EQ(back.size(), w.size());
    for (std::size_t i = 0; i < w.size(); ++i) {
      EXPECT_EQ(back[i], float(q.q[i]) * q.scales[i / cols]) << i;
      EXPECT_LE(std::abs(double(back[i]) - w[i]), 0.5001 * q.scales[i / cols]) << "rows " << rows << " cols " << cols << " element " << i;
    }
  }
  expect_error([] { dequantize_rows(std::vector<std::int8_t>(14), std::vector<float>(3), 5); }, ErrorCode::invalid_argument,
               {"14 int8 values for 3 rows of 5"});
}

TEST(LinearI8Long, FullGrid) {
  auto& ctx = context();
  std::uint32_t seed = 7000;
  for (const auto& p : kI8Paths)
    for (std::size_t M : {1u, 3u, 16u})
      for (std::size_t K : {1u, 3u, 5u, 127u, 1024u, 1025u})
        for (std::size_t N : {1u, 7u, 8000u}) {
          run_i8_case(ctx, p.path, p.no_subgroup, M, N, K, seed % 2 == 0, seed);
          ++seed;
        }
}

// K in slices for the loop budget: every slice scales its partial sum (the scales are per row,
// so the sum of scaled slices is the scaled sum).
TEST(LinearI8, KPastTheLoopBudget) {
  auto& ctx = context();
  run_i8_case(ctx, Gemm::Path::gemv_invocation, false, 2, 3, 270001, true, 900);
  run_i8_case(ctx, Gemm::Path::gemv, false, 1, 3, 300001, false, 901);
}

TEST(LinearI8, LimitProfiles) {
  for (Limits limits : kAllLimits) {
    Context& ctx = limited_context(limits);
    SCOPED_TRACE(fmt::format("limits '{}'", test::to_string(limits)));
    std::uint32_t seed = 6000;
    for (auto [M, N, K] : std::vector<std::tuple<std::size_t, std::size_t, std::size_t>>{
             {1, 7, 5}, {3, 67, 129}, {16, 5, 3}, {65, 129, 33}}) {
      run_i8_case(ctx, Gemm::Path::automatic, false, M, N, K, seed % 2 == 0, seed);
      seed += 7;
    }
  }
}

// Weights quantized elsewhere (the exporter): loaded as given, including -128, into an i8 layer
// (stored as is) and into an f32 one (dequantized): the same products.
TEST(LinearI8, LoadQuantized) {
  auto& ctx = context();
  const std::size_t N = 9, K = 13, M = 3;
  std::vector<std::int8_t> q(N * K);
  for (std::size_t i = 0; i < q.size(); ++i) q[i] = static_cast<std::int8_t>(int((i * 37) % 256) - 128);
  std::vector<float> scales(N);
  for (std::size_t n = 0; n < N; ++n) scales[n] = 0.001f * float(n);  // row 0: scale 0
  const auto b = random_floats(N, 3);
  const auto x = random_floats(M * K, 4);
  std::vector<float> w(N * K);
  for (std::size_t i = 0; i < w.size(); ++i) w[i] = float(q[i]) * scales[i / K];
  std::vector<double> want, scale;
  reference(x, w, b, M, N, K, want, scale);
  for (WeightStorage storage : {WeightStorage::i8, WeightStorage::f32}) {
    SCOPED_TRACE(to_string(storage));
    OpOptions o;
    o.weight_storage = storage;
    Linear lin(ctx, K, N, true, o);
    lin.load_quantized(q, {N, K}, scales, {N}, b);
    if (storage == WeightStorage::i8) {
      const Stored st = stored_i8(ctx, lin);
      EXPECT_EQ(st.scales, scales);
      EXPECT_EQ(st.w, w);
    }
    EXPECT_TRUE(close(lin.forward(x, M), want, scale));
  }
}

// int8 and fp16 weights through strided views on the GEMV kernels (the Linear tests only use
// dense rows; Linear.StridedViews is fp32): offsets and row strides on and off 16 bytes, K % 4
// != 0 (unaligned x) and K of whole 16-byte rows, against the double reference. The bytes between a row's end and the next row hold garbage (int8 99, fp16 +inf)
// that must not be read.
TEST(Linear, StridedLowPrecisionWeights) {
  auto& ctx = context();
  struct Case {
    std::size_t K, ld, w_off;
  };
  // (K, row stride, offset) in weights. Rows on 16 bytes take the kernel's 16-byte loads (the
  // vec4s of K past the last whole 16 bytes in a tail loop): i8 ld and offset multiples of 16,
  // f16 of 8 with K % 4 == 0; the others its 4-byte (i8) and 8-byte (aligned f16) loads.
  const std::vector<Case> i8_cases = {{37, 48, 16}, {32, 48, 0}, {48, 64, 32}, {37, 48, 4}, {37, 40, 0}, {3, 16, 16}};
  const std::vector<Case> f16_cases = {{21, 24, 8}, {20, 24, 16}, {16, 16, 0}, {21, 24, 4},
                                       {21, 25, 0}, {5, 8, 8},   {20, 20, 4}, {36, 44, 8}};
  const std::size_t M = 3, N = 11;
  std::uint32_t seed = 9100;
  for (Gemm::Path path : {Gemm::Path::gemv, Gemm::Path::gemv_invocation}) {
    for (bool no_subgroup : {false, true}) {
      OpOptions o;
      o.force_shared_memory_reduction = no_subgroup;
      Gemm gemm(ctx, o);
      gemm.set_path(path);
      for (bool f16 : {false, true}) {
        if (f16 && !ctx.features().storage_buffer_16bit) continue;
        for (const Case& c : f16 ? f16_cases : i8_cases) {
          SCOPED_TRACE(fmt::format("{} {} K={} ld={} offset={}", name({path, no_subgroup, f16}), f16 ? "f16" : "i8",
                                   c.K, c.ld, c.w_off));
          const auto x = random_floats(M * c.K, seed++);
          const auto b = random_floats(N, seed++);
          const auto r = random_floats(N * c.ld, seed++);
          std::vector<float> w(N * c.K), scales(N);  // the weights the device holds
          const std::size_t used = f16 ? c.K : (c.K + 3) / 4 * 4;  // i8: the last word is read whole
          const std::size_t size = c.w_off + (N - 1) * c.ld + used;
          Tensor wt;
          std::size_t scale_offset = 0;
          if (f16) {
            std::vector<std::uint16_t> h(size, float_to_half(1e30f));  // garbage: +inf as fp16
            for (std::size_t n = 0; n < N; ++n)
              for (std::size_t k = 0; k < c.K; ++k) {
                h[c.w_off + n * c.ld + k] = float_to_half(r[n * c.ld + k]);
                w[n * c.K + k] = half_to_float(h[c.w_off + n * c.ld + k]);
              }
            wt = ctx.tensor({size}, DType::f16);
            ctx.write(wt, h);
          } else {
            scale_offset = (size + 3) / 4 * 4;
            std::vector<std::int8_t> q(scale_offset + 4 * N, 99);  // garbage between rows
            for (std::size_t n = 0; n < N; ++n) {
              scales[n] = 0.01f * float(n + 1);
              for (std::size_t k = 0; k < used; ++k) {  // the read padding of the last word: 0
                const auto v = k < c.K ? static_cast<std::int8_t>(std::lround(r[n * c.ld + k] * 127.0f)) : std::int8_t{0};
                q[c.w_off + n * c.ld + k] = v;
                if (k < c.K) w[n * c.K + k] = float(v) * scales[n];
              }
            }
            std::memcpy(q.data() + scale_offset, scales.data(), 4 * N);
            wt = ctx.tensor({q.size()}, DType::i8);
            ctx.write(wt, q);
          }
          Tensor xt = ctx.tensor({M, c.K}, x), bt = ctx.tensor({N}, b), yt = ctx.tensor({M, N});
          Sequence seq = ctx.sequence();
          const MatrixView wv{wt, N, c.K, c.w_off, c.ld};
          if (f16) gemm.record(seq, MatrixView::of(xt), wv, bt, 0, MatrixView::of(yt));
          else gemm.record_i8(seq, MatrixView::of(xt), wv, scale_offset, bt, 0, MatrixView::of(yt));
          seq.download(yt);
          seq.eval();
          std::vector<double> want, scale;
          reference(x, w, b, M, N, c.K, want, scale);
          EXPECT_TRUE(close(seq.read<float>(yt), want, scale));
        }
      }
    }
  }
}

// Linear's packed layout on CPU drivers (OpOptions::pack_weights, plan::pack_rows): blocks of
// pack_rows() rows, 16 bytes of each row in turn, the last block short (N = 130 is two blocks
// of 64 and one of 2 rows where blocks are 64), rows padded with zeros to whole 16 bytes
// (K = 33: 36 floats, 40 halves). Read back as stored, then used from an x at an unaligned
// offset and stride; a pinned path other than the per-invocation GEMV is refused, and
// pack_weights = false keeps PyTorch's [out, in].
TEST(Linear, PackedRowsLayout) {
  auto& ctx = context();
  const bool cpu = ctx.device().type == DeviceType::cpu;
  const std::size_t M = 3, N = 130, K = 33, ldx = 37, x_off = 1;
  std::uint32_t seed = 9400;
  for (bool f16 : {false, true}) {
    if (f16 && !ctx.features().storage_buffer_16bit) continue;
    SCOPED_TRACE(f16 ? "f16" : "f32");
    OpOptions o;
    o.weight_storage = f16 ? WeightStorage::f16 : WeightStorage::f32;
    Linear lin(ctx, K, N, true, o);
    EXPECT_EQ(lin.pack_rows() > 0, cpu);
    auto w = random_floats(N * K, seed++);
    const auto b = random_floats(N, seed++);
    if (f16) {
      for (auto& f : w) f = half_to_float(float_to_half(f));
    }
    lin.load(w, {N, K}, b);
    if (const std::size_t R = lin.pack_rows()) {
      const std::size_t unit = f16 ? 8 : 4, ld = (K + unit - 1) / unit * unit;
      EXPECT_EQ(lin.weight().size(), N * ld);
      std::vector<float> stored;
      if (f16) {
        for (std::uint16_t h : ctx.read<std::uint16_t>(lin.weight())) stored.push_back(half_to_float(h));
      } else {
        stored = ctx.read<float>(lin.weight());
      }
      std::size_t bad = 0;
      for (std::size_t n = 0; n < N; ++n) {
        for (std::size_t k = 0; k < ld; ++k) {
          const float v = stored[packed_index(n, k, N, R, unit, ld)];
          bad += v != (k < K ? w[n * K + k] : 0.0f);
        }
      }
      EXPECT_EQ(bad, 0u) << "elements off the packed layout";
    }
    const auto xs = random_floats(x_off + M * ldx, seed++);
    std::vector<float> x(M * K);
    for (std::size_t m = 0; m < M; ++m)
      for (std::size_t k = 0; k < K; ++k) x[m * K + k] = xs[x_off + m * ldx + k];
    Tensor xt = ctx.tensor({xs.size()}), y = ctx.tensor({M, N});
    ctx.write(xt, xs);
    Sequence seq = ctx.sequence();
    lin.record(seq, MatrixView{xt, M, K, x_off, ldx}, MatrixView::of(y));
    seq.eval();
    std::vector<double> want, scale;
    reference(x, w, b, M, N, K, want, scale);
    EXPECT_TRUE(close(ctx.read<float>(y), want, scale));
    if (lin.pack_rows()) {
      lin.gemm().set_path(Gemm::Path::tiled);
      Sequence s2 = ctx.sequence();
      expect_error([&] { lin.record(s2, MatrixView{xt, M, K, x_off, ldx}, MatrixView::of(y)); },
                   ErrorCode::invalid_argument, {"packed in blocks of", "pack_weights = false"});
    }
  }
  OpOptions row_major;
  row_major.pack_weights = false;
  Linear plain(ctx, K, N, true, row_major);
  EXPECT_EQ(plain.pack_rows(), 0u);
  EXPECT_EQ(plain.weight().shape(), (Shape{N, K}));
}

TEST(LinearI8, BadArguments) {
  auto& ctx = context();
  Linear lin(ctx, 5, 4, true, i8_options());
  const std::vector<std::int8_t> q(20);
  const std::vector<float> s(4, 0.5f), b(4);
  expect_error([&] { lin.load_quantized(q, {5, 4}, s, {4}, b); }, ErrorCode::invalid_argument,
               {"load_quantized", "shape [5, 4]", "[4, 5]", "transposed"});
  expect_error([&] { lin.load_quantized(std::vector<std::int8_t>(19), {4, 5}, s, {4}, b); }, ErrorCode::invalid_argument,
               {"19 elements", "[4, 5]"});
  expect_error([&] { lin.load_quantized(q, {4, 5}, std::vector<float>(5, 1.0f), {5}, b); }, ErrorCode::invalid_argument,
               {"scales have shape [5]", "[4]", "weight [4, 5]"});
  expect_error([&] { lin.load_quantized(q, {4, 5}, s, {1, 4}, b); }, ErrorCode::invalid_argument, {"shape [1, 4]"});
  expect_error([&] { lin.load_quantized(q, {4, 5}, std::vector<float>{0.5f, -1.0f, 0.5f, 0.5f}, {4}, b); },
               ErrorCode::invalid_argument, {"scale[1] is -1"});
  expect_error([&] { lin.load_quantized(q, {4, 5}, std::vector<float>{0.5f, 0.5f, NAN, 0.5f}, {4}, b); },
               ErrorCode::invalid_argument, {"scale[2] is nan"});
  expect_error([&] { lin.load_quantized(q, {4, 5}, s, {4}, std::vector<float>(3)); }, ErrorCode::invalid_argument, {"bias"});
  std::vector<float> w(20, 0.5f);
  w[13] = INFINITY;
  expect_error([&] { lin.load(w, {4, 5}, b); }, ErrorCode::invalid_argument, {"weight[2][3] is inf", "finite"});

  Gemm gemm(ctx);
  Sequence seq = ctx.sequence();
  Tensor x = ctx.tensor({3, 5}), y = ctx.tensor({3, 4}), wq = ctx.tensor({4 * 8 + 16}, DType::i8);
  expect_error([&] { gemm.record(seq, x, ctx.tensor({4, 5}, DType::i8), Tensor{}, y); }, ErrorCode::invalid_argument,
               {"'w'", "i8", "record_i8"});
  expect_error([&] { gemm.record_i8(seq, MatrixView::of(x), MatrixView{ctx.tensor({4, 5}), 4, 5, 0, 5}, 0, Tensor{}, 0, MatrixView::of(y)); },
               ErrorCode::invalid_argument, {"record_i8", "expected i8"});
  // Rows must start on words: a row stride of 5 (unpadded) is refused.
  expect_error([&] { gemm.record_i8(seq, MatrixView::of(x), MatrixView{wq, 4, 5, 0, 5}, 32, Tensor{}, 0, MatrixView::of(y)); },
               ErrorCode::invalid_argument, {"row stride (5)", "multiples of 4"});
  expect_error([&] { gemm.record_i8(seq, MatrixView::of(x), MatrixView{wq, 4, 5, 0, 8}, 34, Tensor{}, 0, MatrixView::of(y)); },
               ErrorCode::out_of_range, {"scales", "element 34"});
  expect_error([&] { gemm.record_i8(seq, MatrixView::of(x), MatrixView{wq, 4, 5, 0, 8}, 36, Tensor{}, 0, MatrixView::of(y)); },
               ErrorCode::out_of_range, {"scales", "[36, 52)"});
  // The last row's word past K must exist: 4 rows of stride 8 need 32 elements, not 29.
  expect_error([&] { gemm.record_i8(seq, MatrixView::of(x), MatrixView{ctx.tensor({29}, DType::i8), 4, 5, 0, 8}, 0, Tensor{}, 0, MatrixView::of(y)); },
               ErrorCode::out_of_range, {"'w'", "needs 32"});
  EXPECT_EQ(seq.stats().dispatches, 0u);
}

}  // namespace
}  // namespace vkrnn
