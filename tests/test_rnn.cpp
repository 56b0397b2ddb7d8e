// Recurrent layers (RNN tanh/relu, LSTM incl. proj_size, GRU) against a double-precision CPU
// reference written from PyTorch's equations: layers, directions, batch, hidden and input sizes,
// ragged lengths (incl. 0), h0/c0, both execution paths (per-step and fused), the no-subgroup
// variants, the single-step decoder API, dispatch counts and argument errors; and the same with
// the weights stored as float16 (OpOptions::fp16_storage).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <gtest/gtest.h>

#include "common/app_device.hpp"
#include "common/test_env.hpp"
#include "expect_error.hpp"
#include "vkrnn/half.hpp"
#include "vkrnn/rnn.hpp"

namespace vkrnn {
namespace {

using test::all_close;
using test::context;
using test::kAllLimits;
using test::limited_context;
using test::Limits;
using test::expect_error;
using test::random_floats;
using WS = WeightStorage;

// ---------------------------------------------------------------------------------------------
// Reference

}  // namespace
namespace test {

struct RnnReferenceResult {
  std::vector<double> output;  // [B, T, D*H_out]
  std::vector<double> h_n;     // [L*D, B, H_out]
  std::vector<double> c_n;     // [L*D, B, H]
};

inline std::size_t ref_gates(CellType c) { return c == CellType::lstm ? 4 : c == CellType::gru ? 3 : 1; }

// A state_dict with torch's names and shapes, values uniform in [-1/sqrt(H), 1/sqrt(H)] like
// torch's reset_parameters.
inline std::map<std::string, std::vector<float>> make_state_dict(const RnnConfig& c, std::uint32_t seed) {
  std::mt19937 rng(seed);
  const double k = 1.0 / std::sqrt(double(c.hidden_size));
  std::uniform_real_distribution<float> dist(float(-k), float(k));
  auto fill = [&](std::size_t n) {
    std::vector<float> v(n);
    for (auto& x : v) x = dist(rng);
    return v;
  };
  const std::size_t D = c.bidirectional ? 2 : 1, G = ref_gates(c.cell), H = c.hidden_size;
  const std::size_t HO = c.proj_size ? c.proj_size : H;
  std::map<std::string, std::vector<float>> sd;
  for (std::size_t l = 0; l < c.num_layers; ++l) {
    const std::size_t in = l == 0 ? c.input_size : D * HO;
    for (std::size_t d = 0; d < D; ++d) {
      const std::string sfx = fmt::format("l{}{}", l, d ? "_reverse" : "");
      sd["weight_ih_" + sfx] = fill(G * H * in);
      sd["weight_hh_" + sfx] = fill(G * H * HO);
      if (c.bias) {
        sd["bias_ih_" + sfx] = fill(G * H);
        sd["bias_hh_" + sfx] = fill(G * H);
      }
      if (c.proj_size) sd["weight_hr_" + sfx] = fill(HO * H);
    }
  }
  return sd;
}

// lengths empty = all T; h0 / c0 empty = zeros.
inline RnnReferenceResult rnn_reference(const RnnConfig& c, const std::map<std::string, std::vector<float>>& sd,
                                        const std::vector<float>& x, std::size_t B, std::size_t T,
                                        const std::vector<std::int32_t>& lengths,
                                        const std::vector<float>& h0, const std::vector<float>& c0) {
  const std::size_t D = c.bidirectional ? 2 : 1, G = ref_gates(c.cell), H = c.hidden_size;
  const std::size_t HO = c.proj_size ? c.proj_size : H, L = c.num_layers;
  const bool lstm = c.cell == CellType::lstm;
  auto sig = [](double v) { return 1.0 / (1.0 + std::exp(-v)); };

  RnnReferenceResult r;
  r.h_n.assign(L * D * B * HO, 0.0);
  if (lstm) r.c_n.assign(L * D * B * H, 0.0);
  std::vector<double> input(x.begin(), x.end());  // [B, T, in]
  std::size_t in = c.input_size;
  for (std::size_t l = 0; l < L; ++l) {
    std::vector<double> output(B * T * D * HO, 0.0);
    for (std::size_t d = 0; d < D; ++d) {
      const std::string sfx = fmt::format("l{}{}", l, d ? "_reverse" : "");
      const auto& w_ih = sd.at("weight_ih_" + sfx);
      const auto& w_hh = sd.at("weight_hh_" + sfx);
      const std::vector<float> zeros(G * H, 0.0f);
      const auto& b_ih = c.bias ? sd.at("bias_ih_" + sfx) : zeros;
      const auto& b_hh = c.bias ? sd.at("bias_hh_" + sfx) : zeros;
      const std::vector<float>* w_hr = c.proj_size ? &sd.at("weight_hr_" + sfx) : nullptr;
      const std::size_t slot = l * D + d;
      for (std::size_t b = 0; b < B; ++b) {
        std::vector<double> h(HO, 0.0), cs(H, 0.0);
        if (!h0.empty())
          for (std::size_t k = 0; k < HO; ++k) h[k] = h0[(slot * B + b) * HO + k];
        if (!c0.empty())
          for (std::size_t k = 0; k < H; ++k) cs[k] = c0[(slot * B + b) * H + k];
        const std::size_t len = lengths.empty() ? T : std::size_t(lengths[b]);
        std::vector<double> gx(G * H), gh(G * H), hraw(H);
        for (std::size_t s = 0; s < len; ++s) {
          const std::size_t t = d == 0 ? s : len - 1 - s;
          const double* xt = &input[(b * T + t) * in];
          for (std::size_t r = 0; r < G * H; ++r) {
            double a = b_ih[r], e = b_hh[r];
            const float* wi = &w_ih[r * in];
            for (std::size_t k = 0; k < in; ++k) a += double(wi[k]) * xt[k];
            const float* wh = &w_hh[r * HO];
            for (std::size_t k = 0; k < HO; ++k) e += double(wh[k]) * h[k];
            gx[r] = a;
            gh[r] = e;
          }
          std::vector<double> hn(HO);
          for (std::size_t j = 0; j < H; ++j) {
            switch (c.cell) {
              case CellType::rnn_tanh: hn[j] = std::tanh(gx[j] + gh[j]); break;
              case CellType::rnn_relu: hn[j] = std::max(0.0, gx[j] + gh[j]); break;
              case CellType::gru: {
                const double rg = sig(gx[j] + gh[j]);
                const double z = sig(gx[H + j] + gh[H + j]);
                const double n = std::tanh(gx[2 * H + j] + rg * gh[2 * H + j]);
                hn[j] = (1.0 - z) * n + z * h[j];
                break;
              }
              case CellType::lstm: {
                const double i = sig(gx[j] + gh[j]);
                const double f = sig(gx[H + j] + gh[H + j]);
                const double g = std::tanh(gx[2 * H + j] + gh[2 * H + j]);
                const double o = sig(gx[3 * H + j] + gh[3 * H + j]);
                cs[j] = f * cs[j] + i * g;
                hraw[j] = o * std::tanh(cs[j]);
                if (!w_hr) hn[j] = hraw[j];
                break;
              }
            }
          }
          if (w_hr) {
            for (std::size_t p = 0; p < HO; ++p) {
              double a = 0.0;
              for (std::size_t k = 0; k < H; ++k) a += double((*w_hr)[p * H + k]) * hraw[k];
              hn[p] = a;
            }
          }
          h = hn;
          for (std::size_t k = 0; k < HO; ++k) output[(b * T + t) * D * HO + d * HO + k] = h[k];
        }
        for (std::size_t k = 0; k < HO; ++k) r.h_n[(slot * B + b) * HO + k] = h[k];
        if (lstm)
          for (std::size_t k = 0; k < H; ++k) r.c_n[(slot * B + b) * H + k] = cs[k];
      }
    }
    input = std::move(output);
    in = D * HO;
  }
  r.output = std::move(input);
  return r;
}

}  // namespace test
namespace {

// ---------------------------------------------------------------------------------------------
// Cases

struct Case {
  CellType cell = CellType::gru;
  std::size_t layers = 1;
  bool bidirectional = false;
  std::size_t B = 1, H = 7, I = 5, T = 5;
  bool ragged = false;    // ragged lengths (incl. 0 and T) instead of all T
  bool initial = true;    // h0 (and c0) given
  std::size_t proj = 0;
  bool bias = true;
  RnnPath path = RnnPath::automatic;
  bool no_subgroup = false;  // OpOptions::force_shared_memory_reduction
  RnnStepKernel kernel = RnnStepKernel::automatic;
  bool device_lengths_only = false;  // lengths as a device tensor without host copies
  WS storage = WS::f32;              // f16: OpOptions::fp16_storage; i8: weight_storage i8
  bool staging = false;              // test::staging_context() (the discrete-GPU memory path)
  Context* context = nullptr;        // another context (test::limited_context)
  std::size_t run = 0;               // Rnn::set_steps_per_dispatch (0: automatic)
  bool multi_run = false;            // expect the fused path to split each layer into several runs
  bool pack = true;                  // OpOptions::pack_weights (W_hh's blocks on CPU drivers)
  double tol = 1e-5;

  RnnConfig config() const {
    RnnConfig c;
    c.cell = cell;
    c.input_size = I;
    c.hidden_size = H;
    c.num_layers = layers;
    c.bidirectional = bidirectional;
    c.bias = bias;
    c.proj_size = proj;
    return c;
  }
  std::string describe() const {
    return fmt::format("{} L={} bidir={} B={} H={} I={} T={} ragged={} h0={} proj={} bias={} path={} kernel={}{}{}{}{}",
                       to_string(cell), layers, bidirectional, B, H, I, T, ragged, initial, proj, bias,
                       to_string(path), to_string(kernel), no_subgroup ? " nosubgroup" : "",
                       device_lengths_only ? " device-lengths" : "", storage != WS::f32 ? fmt::format(" {}", to_string(storage)) : "",
                       staging ? " staging" : "") +
           (run ? fmt::format(" run={}", run) : std::string()) + (pack ? "" : " row-major");
  }
};

std::vector<std::int32_t> make_lengths(std::size_t B, std::size_t T, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<std::int32_t> dist(0, static_cast<std::int32_t>(T));
  std::vector<std::int32_t> v(B);
  for (auto& l : v) l = dist(rng);
  v[0] = static_cast<std::int32_t>(T);            // the longest row reaches T
  if (B > 2) v[B - 1] = 0;                         // and a row of length 0
  if (B > 3) v[1] = 1;
  return v;
}

// The weight matrices as a device with this storage holds them (biases stay fp32): rounded to
// half, or quantized per row (each direction's matrix on its own, as Rnn does) and dequantized.
std::map<std::string, std::vector<float>> stored_weights(const RnnConfig& c, std::map<std::string, std::vector<float>> sd,
                                                         WS storage) {
  for (auto& [name, v] : sd) {
    if (name.rfind("weight_", 0) != 0 || storage == WS::f32) continue;
    if (storage == WS::f16) {
      for (auto& f : v) f = half_to_float(float_to_half(f));
      continue;
    }
    const std::size_t rows = name.rfind("weight_hr", 0) == 0 ? c.proj_size : gate_count(c.cell) * c.hidden_size;
    const QuantizedRows q = quantize_rows(v, rows, v.size() / rows);
    v = dequantize_rows(q.q, q.scales, v.size() / rows);
  }
  return sd;
}

// What run_case and the step checks give Rnn for a weight storage.
OpOptions storage_options(WS storage, bool no_subgroup = false, bool pack = true) {
  OpOptions o;
  o.pack_weights = pack;
  o.force_shared_memory_reduction = no_subgroup;
  o.fp16_storage = storage == WS::f16;
  if (storage == WS::i8) o.weight_storage = WS::i8;
  return o;
}

bool has_fp16_storage() { return context().features().storage_buffer_16bit; }

void run_case(const Case& k, std::uint32_t seed = 1) {
  SCOPED_TRACE(k.describe());
  auto& ctx = k.context ? *k.context : k.staging ? test::staging_context() : context();
  const RnnConfig cfg = k.config();
  const std::size_t D = k.bidirectional ? 2 : 1, HO = k.proj ? k.proj : k.H;
  const auto sd = test::make_state_dict(cfg, seed);
  const auto x = random_floats(k.B * k.T * k.I, seed + 1);
  const auto lengths = k.ragged ? make_lengths(k.B, k.T, seed + 2) : std::vector<std::int32_t>{};
  const bool lstm = k.cell == CellType::lstm;
  const auto h0 = k.initial ? random_floats(k.layers * D * k.B * HO, seed + 3) : std::vector<float>{};
  const auto c0 = k.initial && lstm ? random_floats(k.layers * D * k.B * k.H, seed + 4) : std::vector<float>{};

  Rnn rnn(ctx, cfg, storage_options(k.storage, k.no_subgroup, k.pack));
  ASSERT_EQ(rnn.weight_storage(), k.storage);
  rnn.set_path(k.path);
  rnn.set_step_kernel(k.kernel);
  rnn.set_steps_per_dispatch(k.run);
  rnn.load(sd);
  if (k.multi_run) {
    ASSERT_EQ(rnn.path_for(k.B), RnnPath::fused);
    ASSERT_LT(rnn.steps_per_dispatch(k.B), k.T) << "one dispatch would run every step";
  }
  // fp16 / int8: half and int8 widen to float exactly and every sum and nonlinearity is fp32 (an
  // int8 row's scale multiplies its finished sum), so against the double reference on the same
  // stored weights the fp32 tolerance applies unchanged.
  const auto want = test::rnn_reference(cfg, stored_weights(cfg, sd, k.storage), x, k.B, k.T, lengths, h0, c0);

  Rnn::Result got;
  if (k.device_lengths_only) {
    // Device lengths, no host copy: every step is recorded and the kernels mask.
    Tensor xt = ctx.tensor({k.B, k.T, k.I}), lt = ctx.tensor({k.B}, DType::i32);
    Tensor out = ctx.tensor({k.B, k.T, D * HO}), hn = ctx.tensor({k.layers * D, k.B, HO});
    Tensor cn = lstm ? ctx.tensor({k.layers * D, k.B, k.H}) : Tensor{};
    Tensor h0t = k.initial ? ctx.tensor({k.layers * D, k.B, HO}) : Tensor{};
    Tensor c0t = k.initial && lstm ? ctx.tensor({k.layers * D, k.B, k.H}) : Tensor{};
    ctx.write(xt, x);
    ctx.write(lt, lengths.empty() ? std::vector<std::int32_t>(k.B, std::int32_t(k.T)) : lengths);
    if (h0t.valid()) ctx.write(h0t, h0);
    if (c0t.valid()) ctx.write(c0t, c0);
    // NaN in every output first: a position no kernel writes fails the comparison.
    const float nan = std::numeric_limits<float>::quiet_NaN();
    ctx.write(out, std::vector<float>(out.size(), nan));
    ctx.write(hn, std::vector<float>(hn.size(), nan));
    if (lstm) ctx.write(cn, std::vector<float>(cn.size(), nan));
    Sequence seq = ctx.sequence();
    rnn.record(seq, xt, lt, h0t, c0t, out, hn, cn);
    seq.download(out).download(hn);
    if (lstm) seq.download(cn);
    seq.eval();
    got.output = seq.read<float>(out);
    got.h_n = seq.read<float>(hn);
    if (lstm) got.c_n = seq.read<float>(cn);
  } else {
    got = rnn.forward(x, k.B, k.T, lengths, h0, c0);
  }
  EXPECT_TRUE(all_close(got.output, want.output, k.tol, k.tol)) << "output";
  EXPECT_TRUE(all_close(got.h_n, want.h_n, k.tol, k.tol)) << "h_n";
  if (lstm) {
    EXPECT_TRUE(all_close(got.c_n, want.c_n, k.tol, k.tol)) << "c_n";
  }
}

const CellType kCells[] = {CellType::rnn_tanh, CellType::rnn_relu, CellType::lstm, CellType::gru};

// The kernel variants to cover on this device: the device's choice, the subgroup one (forced,
// where subgroup arithmetic exists) and the one devices without subgroups get.
std::vector<std::pair<RnnStepKernel, bool>> kernel_variants() {
  std::vector<std::pair<RnnStepKernel, bool>> v = {{RnnStepKernel::automatic, false},
                                                   {RnnStepKernel::automatic, true}};
  if (context().device().subgroup_arithmetic) v.emplace_back(RnnStepKernel::subgroup_dot, false);
  if (context().device().type == DeviceType::cpu || !context().device().subgroup_arithmetic) return v;
  v.emplace_back(RnnStepKernel::invocation_dot, false);
  return v;
}

// Small shapes over every feature, on both paths and every kernel variant.
void check_features_both_paths(WS storage, std::uint32_t seed) {
  for (CellType cell : kCells) {
    for (RnnPath path : {RnnPath::per_step, RnnPath::fused}) {
      for (auto [kernel, nosg] : kernel_variants()) {
        Case k;
        k.storage = storage, k.cell = cell, k.path = path, k.kernel = kernel, k.no_subgroup = nosg;
        // 2 layers, bidirectional, ragged incl. 0, h0/c0, awkward sizes.
        k.layers = 2, k.bidirectional = true, k.B = 5, k.H = 7, k.I = 5, k.T = 6, k.ragged = true;
        run_case(k, seed++);
        // Single layer, no h0, equal lengths, batch 1, H = 1.
        k.layers = 1, k.bidirectional = false, k.B = 1, k.H = 1, k.I = 1, k.T = 4, k.ragged = false, k.initial = false;
        run_case(k, seed++);
        // No bias, 3 layers, unidirectional, ragged.
        k.layers = 3, k.B = 3, k.H = 8, k.I = 3, k.T = 5, k.ragged = true, k.initial = true, k.bias = false;
        run_case(k, seed++);
      }
    }
  }
}

TEST(Rnn, FeaturesBothPaths) { check_features_both_paths(WS::f32, 10); }

// W_hh and W_ih in blocks of hidden units on CPU drivers (plan::Rnn::pack_units,
// plan::input_pack_units, ops::pack_gate_blocks, gate_blocks.glsl), against the double
// reference: several blocks and a partial last one per direction (H = 36 / 40: 16 + 16 + 4 / 8
// units on lavapipe; int8 rows need 16 bytes, so its partial block comes with a projection),
// both directions, every gate count, 2 layers (the second's input is 2 * HO), on both paths and
// every kernel variant; and the same with pack_weights = false (row-major, read through the
// same views). Elsewhere the small shapes pack in one block.
void check_packed_recurrent_weights(WS storage, std::uint32_t seed) {
  const std::size_t H = storage == WS::f32 ? 36 : storage == WS::f16 ? 40 : 48;
  // W_ih packs too where its rows are whole 16-byte units: layer 0's I (int8: 13 padded to 16
  // bytes) and layer 1's 2 * HO, read by the input GEMM.
  const std::size_t I = storage == WS::f32 ? 12 : storage == WS::f16 ? 24 : 13;
  for (CellType cell : {CellType::rnn_tanh, CellType::lstm, CellType::gru}) {
    for (RnnPath path : {RnnPath::per_step, RnnPath::fused}) {
      for (auto [kernel, nosg] : kernel_variants()) {
        for (bool pack : {true, false}) {
          Case k;
          k.storage = storage, k.cell = cell, k.path = path, k.kernel = kernel, k.no_subgroup = nosg, k.pack = pack;
          k.layers = 2, k.bidirectional = true, k.B = 3, k.H = H, k.I = I, k.T = 4, k.ragged = true;
          run_case(k, seed++);
          if (cell == CellType::lstm && path == RnnPath::per_step) {
            k.H = 40, k.proj = 16;  // int8's partial block: W_hh's rows are the projection's 16
            run_case(k, seed++);
          }
        }
      }
    }
  }
}

TEST(Rnn, PackedRecurrentWeights) { check_packed_recurrent_weights(WS::f32, 40); }

// A sample of the grid (cell x layers x direction x batch x hidden x input x lengths), sized for
// the default suite; RnnLong.FullGrid runs the whole cross product.
TEST(Rnn, GridSample) {
  struct S { CellType cell; std::size_t L; bool bi; std::size_t B, H, I, T; bool ragged; };
  const S sample[] = {
      {CellType::gru, 1, false, 16, 64, 300, 12, true},
      {CellType::lstm, 2, true, 3, 64, 5, 9, true},
      {CellType::rnn_tanh, 3, true, 16, 7, 1, 10, false},
      {CellType::rnn_relu, 1, true, 3, 256, 300, 6, true},
      {CellType::gru, 2, false, 1, 256, 5, 8, false},
      {CellType::lstm, 1, false, 16, 256, 1, 5, true},
      {CellType::gru, 1, true, 3, 1024, 300, 3, true},
      {CellType::lstm, 1, false, 1, 1024, 5, 3, false},
      {CellType::rnn_tanh, 2, false, 16, 1, 300, 7, true},
      {CellType::rnn_relu, 3, false, 1, 64, 1, 9, false},
  };
  std::uint32_t seed = 100;
  for (const S& s : sample) {
    for (RnnPath path : {RnnPath::automatic, RnnPath::per_step}) {
      Case k;
      k.cell = s.cell, k.layers = s.L, k.bidirectional = s.bi, k.B = s.B, k.H = s.H, k.I = s.I, k.T = s.T;
      k.ragged = s.ragged, k.path = path;
      if (path == RnnPath::per_step && context().device().type != DeviceType::cpu) continue;
      run_case(k, seed++);
    }
  }
}

// W_hr rows of 9 (scalar loads) and of 64 (vec4 loads).
void check_lstm_projection(WS storage, std::uint32_t seed) {
  for (auto [kernel, nosg] : kernel_variants()) {
    Case k;
    k.storage = storage, k.cell = CellType::lstm, k.no_subgroup = nosg, k.kernel = kernel;
    k.layers = 2, k.bidirectional = true, k.B = 4, k.H = 9, k.proj = 5, k.I = 3, k.T = 7, k.ragged = true;
    run_case(k, seed++);
    k.layers = 1, k.bidirectional = false, k.B = 3, k.H = 64, k.proj = 16, k.I = 300, k.T = 6, k.initial = false;
    run_case(k, seed++);
  }
}

TEST(Rnn, LstmProjection) { check_lstm_projection(WS::f32, 200); }

// Device lengths without a host copy: all T steps recorded, the kernels clamp and mask.
TEST(Rnn, DeviceLengthsOnly) {
  std::uint32_t seed = 300;
  for (CellType cell : {CellType::gru, CellType::lstm}) {
    for (RnnPath path : {RnnPath::per_step, RnnPath::fused}) {
      Case k;
      k.cell = cell, k.path = path, k.device_lengths_only = true;
      k.layers = 2, k.bidirectional = true, k.B = 6, k.H = 12, k.I = 4, k.T = 5, k.ragged = true;
      run_case(k, seed++);
    }
  }
  Case k;
  k.cell = CellType::lstm, k.proj = 3, k.device_lengths_only = true, k.B = 4, k.H = 6, k.T = 4, k.ragged = true;
  run_case(k, seed++);
}

// T = 512: fp32 must not drift from the double reference beyond 1e-4.
TEST(Rnn, T512NoDrift) {
  std::uint32_t seed = 400;
  for (CellType cell : kCells) {
    Case k;
    k.cell = cell, k.B = 3, k.H = 64, k.I = 5, k.T = 512, k.ragged = true, k.bidirectional = cell == CellType::gru;
    k.tol = 1e-4;
    k.path = cell == CellType::lstm ? RnnPath::per_step : RnnPath::automatic;
    run_case(k, seed++);
  }
}

TEST(Rnn, StagingContext) {
  auto& ctx = test::staging_context();
  RnnConfig c;
  c.cell = CellType::lstm, c.input_size = 3, c.hidden_size = 5, c.num_layers = 2, c.bidirectional = true;
  const auto sd = test::make_state_dict(c, 7);
  Rnn rnn(ctx, c);
  rnn.load(sd);
  const std::size_t B = 3, T = 4;
  const auto x = random_floats(B * T * 3, 8);
  const std::vector<std::int32_t> lengths = {4, 2, 0};
  const auto got = rnn.forward(x, B, T, lengths);
  const auto want = test::rnn_reference(c, sd, x, B, T, lengths, {}, {});
  EXPECT_TRUE(all_close(got.output, want.output, 1e-5, 1e-5));
  EXPECT_TRUE(all_close(got.h_n, want.h_n, 1e-5, 1e-5));
  EXPECT_TRUE(all_close(got.c_n, want.c_n, 1e-5, 1e-5));
}

// The automatic choices: small layers run fused, big ones per step; on CPU devices the
// per-invocation kernel.
TEST(Rnn, AutomaticChoices) {
  auto& ctx = context();
  RnnConfig c;
  c.cell = CellType::gru, c.input_size = 8, c.hidden_size = 32;
  EXPECT_EQ(Rnn(ctx, c).path_for(1), RnnPath::fused);
  c.hidden_size = 1024;
  EXPECT_EQ(Rnn(ctx, c).path_for(1), RnnPath::per_step);
  c.cell = CellType::lstm, c.hidden_size = 32, c.proj_size = 8;
  EXPECT_EQ(Rnn(ctx, c).path_for(1), RnnPath::per_step);  // projections never run fused
  if (ctx.device().type == DeviceType::cpu) {
    EXPECT_EQ(Rnn(ctx, c).step_kernel(), RnnStepKernel::invocation_dot);
    // W3's encoder, a bidirectional GRU of H = 256: fused at B = 1 (its two workgroups fill
    // lavapipe's threads here, and each shares h along K by subgroup shuffles: plan::rnn), one
    // direction too (the shuffles); 16 rows per step.
    RnnConfig e;
    e.cell = CellType::gru, e.input_size = 256, e.hidden_size = 256, e.bidirectional = true;
    EXPECT_EQ(Rnn(ctx, e).path_for(1), RnnPath::fused);
    EXPECT_EQ(Rnn(ctx, e).path_for(16), RnnPath::per_step);
    e.bidirectional = false;
    EXPECT_EQ(Rnn(ctx, e).path_for(1), RnnPath::fused);
    EXPECT_EQ(Rnn(ctx, e).path_for(16), RnnPath::per_step);
  }
  OpOptions o;
  o.force_shared_memory_reduction = true;
  Rnn nosg(ctx, c, o);
  EXPECT_EQ(nosg.step_kernel(), RnnStepKernel::invocation_dot);
  nosg.set_step_kernel(RnnStepKernel::subgroup_dot);
  expect_error([&] { (void)nosg.step_kernel(); }, ErrorCode::missing_feature, {"subgroup"});
}

// The kernels other devices get (tests/common/test_env.hpp), chosen automatically (src/plan.hpp:
// plan::rnn): a GPU's (subgroup_dot per step, the fused path for small layers) and a mobile
// GPU's (16 KiB of shared memory: fewer rows per fused workgroup; 128 invocations; no subgroup
// arithmetic: invocation_dot and the shared-memory projection), each against the double
// reference; under the Vulkan minimum of 4 storage buffers per stage the recurrent kernels (9)
// refuse at construction, naming the limit.
TEST(Rnn, LimitProfiles) {
  for (Limits limits : kAllLimits) {
    Context& ctx = limited_context(limits);
    SCOPED_TRACE(fmt::format("limits '{}'", test::to_string(limits)));
    const DeviceInfo& dev = ctx.device();
    RnnConfig small;
    small.cell = CellType::gru, small.input_size = 5, small.hidden_size = 64;
    if (dev.max_storage_buffers_per_stage < 9) {
      expect_error([&] { Rnn(ctx, small); }, ErrorCode::out_of_range, {"Rnn", "maxPerStageDescriptorStorageBuffers"});
      continue;
    }
    EXPECT_EQ(Rnn(ctx, small).step_kernel(),
              dev.subgroup_arithmetic ? RnnStepKernel::subgroup_dot : RnnStepKernel::invocation_dot);
    EXPECT_EQ(Rnn(ctx, small).path_for(3), RnnPath::fused);
    std::uint32_t seed = 7000;
    for (Case k : {Case{.cell = CellType::gru, .B = 3, .H = 64, .T = 9, .ragged = true},
                   Case{.cell = CellType::lstm, .layers = 2, .bidirectional = true, .B = 5, .H = 33, .I = 4,
                        .T = 6, .ragged = true},
                   Case{.cell = CellType::lstm, .B = 2, .H = 20, .I = 3, .T = 4, .proj = 7},
                   Case{.cell = CellType::rnn_relu, .B = 17, .H = 300, .I = 6, .T = 3, .initial = false},
                   Case{.cell = CellType::gru, .B = 9, .H = 65, .T = 7, .ragged = true, .path = RnnPath::per_step},
                   Case{.cell = CellType::rnn_tanh, .B = 33, .H = 130, .I = 2, .T = 5, .path = RnnPath::fused,
                        .run = 2}}) {
      k.context = &ctx;
      run_case(k, seed);
      seed += 10;
    }
  }
}

// Dispatches of one record() of a [B, T, input] batch (host lengths when given), in one
// submission.
std::uint32_t record_dispatches(Context& ctx, const Rnn& rnn, std::size_t B, std::size_t T,
                                const std::vector<std::int32_t>& lengths) {
  const RnnConfig& c = rnn.config();
  Tensor x = ctx.tensor({B, T, c.input_size}), out = ctx.tensor({B, T, rnn.directions() * rnn.output_size()});
  ctx.write(x, random_floats(B * T * c.input_size, 2));
  Tensor lt;
  if (!lengths.empty()) {
    lt = ctx.tensor({B}, DType::i32);
    ctx.write(lt, lengths);
  }
  Sequence seq = ctx.sequence();
  rnn.record(seq, x, lt, {}, {}, out, {}, {}, lengths);
  seq.eval();
  EXPECT_EQ(seq.stats().submissions, 1u);
  return seq.stats().dispatches;
}

// One submission per sequence; per-step path: 1 GEMM + 1 dispatch per step per layer (both
// directions share it; 2 with a projection); fused path: 2 dispatches per layer. Host lengths
// stop the recording at the longest sequence.
TEST(Rnn, DispatchCounts) {
  auto& ctx = context();
  for (auto [cell, proj, path, lengths, expected] :
       {std::tuple{CellType::gru, std::size_t(0), RnnPath::per_step, std::vector<std::int32_t>{}, 2u * (1 + 6)},
        std::tuple{CellType::gru, std::size_t(0), RnnPath::per_step, std::vector<std::int32_t>{4, 2}, 2u * (1 + 4)},
        std::tuple{CellType::lstm, std::size_t(2), RnnPath::per_step, std::vector<std::int32_t>{}, 2u * (1 + 2 * 6)},
        std::tuple{CellType::rnn_tanh, std::size_t(0), RnnPath::fused, std::vector<std::int32_t>{}, 2u * 2}}) {
    RnnConfig c;
    c.cell = cell, c.input_size = 3, c.hidden_size = 4, c.num_layers = 2, c.bidirectional = true, c.proj_size = proj;
    Rnn rnn(ctx, c);
    rnn.set_path(path);
    rnn.load(test::make_state_dict(c, 1));
    EXPECT_EQ(record_dispatches(ctx, rnn, 2, 6, lengths), expected) << to_string(cell) << " " << to_string(path);
  }
}

// ---------------------------------------------------------------------------------------------
// Fused runs: a layer split into several rnn_seq dispatches (lavapipe's loop limit, GPU
// watchdogs). h crosses each run boundary through scratch, c through c_n; ragged lengths,
// the reverse direction and padding must not notice.

// Runs pinned short so every boundary case shows at small T: every cell, 2 layers
// bidirectional, ragged lengths incl. 0 and 1, h0/c0 and none, host and device-only lengths
// (outputs poisoned with NaN first), every kernel variant; H 7, and 16 (fp16 and int8 rows of
// whole 16-byte units: the WIDE loads, through texels on CPU drivers).
void check_fused_runs(WS storage, std::uint32_t seed) {
  for (CellType cell : kCells) {
    for (auto [kernel, nosg] : kernel_variants()) {
      for (std::size_t run : {1, 2, 3}) {
        Case k;
        k.storage = storage, k.cell = cell, k.path = RnnPath::fused, k.kernel = kernel, k.no_subgroup = nosg, k.run = run;
        k.layers = 2, k.bidirectional = true, k.B = 5, k.H = 7, k.I = 5, k.T = 7, k.ragged = true;
        run_case(k, seed++);
        k.device_lengths_only = true, k.initial = false, k.B = 4, k.H = 16;  // fp16 / int8: WIDE rows
        run_case(k, seed++);
        // One row per workgroup: on CPU drivers the lanes share h's loads along K (the _shuffle
        // build): 11 vec4s of h (a partial group of the subgroup's), or 12 with WIDE fp16 /
        // int8 rows (16-byte units split over groups); units past H in the last round.
        k.B = 1, k.H = run == 2 ? 48 : 44, k.layers = 1;
        run_case(k, seed++);
      }
    }
  }
}

TEST(Rnn, FusedRuns) { check_fused_runs(WS::f32, 1500); }

TEST(Rnn, Fp16FusedRuns) {
  if (!has_fp16_storage()) GTEST_SKIP() << "no storageBuffer16BitAccess";
  check_fused_runs(WS::f16, 1600);
}

// One dispatch per run: ceil(steps / run) per layer, after the layer's GEMM; host lengths stop
// at the longest row. The automatic run fits T = 100 whole for a small layer.
TEST(Rnn, FusedRunDispatchCounts) {
  auto& ctx = context();
  RnnConfig c;
  c.cell = CellType::lstm, c.input_size = 3, c.hidden_size = 4, c.num_layers = 2, c.bidirectional = true;
  Rnn rnn(ctx, c);
  rnn.set_path(RnnPath::fused);
  rnn.load(test::make_state_dict(c, 1));
  const std::size_t B = 2, T = 100;
  EXPECT_GE(rnn.steps_per_dispatch(B), T);
  for (auto [run, lengths, expected] :
       {std::tuple{std::size_t(0), std::vector<std::int32_t>{}, 2u * (1 + 1)},
        std::tuple{std::size_t(30), std::vector<std::int32_t>{}, 2u * (1 + 4)},
        std::tuple{std::size_t(30), std::vector<std::int32_t>{60, 7}, 2u * (1 + 2)},
        std::tuple{std::size_t(1), std::vector<std::int32_t>{3, 2}, 2u * (1 + 3)}}) {
    rnn.set_steps_per_dispatch(run);
    if (run) { EXPECT_EQ(rnn.steps_per_dispatch(B), run); }
    EXPECT_EQ(record_dispatches(ctx, rnn, B, T, lengths), expected) << "run " << run << " lengths " << fmt::format("{}", lengths);
  }
  // Never more than the budget allows, and 1 on the per-step path.
  rnn.set_steps_per_dispatch(std::size_t(1) << 40);
  EXPECT_LT(rnn.steps_per_dispatch(B), std::size_t(1) << 20);
  rnn.set_path(RnnPath::per_step);
  EXPECT_EQ(rnn.steps_per_dispatch(B), 1u);
}

// Past the loop limit: T beyond what one rnn_seq dispatch could loop over on lavapipe
// (measured before the split: a GRU with H = 128, B = 1 broke at T ~ 1,772, H = 64 at ~3,121),
// on both paths, against the double reference; a second call after a different one gives the
// same result (nothing stale in the scratch). RnnLong.PastLoopBudget runs the whole grid.
TEST(Rnn, PastLoopBudget) {
  std::uint32_t seed = 1700;
  for (RnnPath path : {RnnPath::fused, RnnPath::per_step}) {
    Case k;
    k.cell = CellType::gru, k.path = path, k.B = 1, k.H = 128, k.I = 3, k.T = 2000, k.tol = 1e-4;
    k.multi_run = path == RnnPath::fused;
    run_case(k, seed++);
  }
  Case k;
  k.cell = CellType::lstm, k.path = RnnPath::fused, k.bidirectional = true, k.B = 3, k.H = 64, k.I = 5;
  k.T = 3300, k.ragged = true, k.device_lengths_only = true, k.multi_run = true, k.tol = 1e-4;
  k.storage = has_fp16_storage() ? WS::f16 : WS::f32;
  run_case(k, seed++);

  auto& ctx = context();
  RnnConfig c = k.config();
  Rnn rnn(ctx, c);
  rnn.load(test::make_state_dict(c, seed));
  const auto x = random_floats(k.B * k.T * k.I, seed + 1);
  const auto lengths = make_lengths(k.B, k.T, seed + 2);
  const auto first = rnn.forward(x, k.B, k.T, lengths);
  (void)rnn.forward(random_floats(2 * 9 * k.I, seed + 3), 2, 9);
  const auto again = rnn.forward(x, k.B, k.T, lengths);
  EXPECT_EQ(first.output, again.output);
  EXPECT_EQ(first.h_n, again.h_n);
  EXPECT_EQ(first.c_n, again.c_n);
}

// The decoder API: step() T times (ping-pong state) equals forward() over the sequence, with
// 1 dispatch per layer on the subgroup_dot kernel (rnn_step computes W_ih x itself), 2 on
// invocation_dot (the input GEMM first), one more with a projection. views: x is read from
// columns of a wider tensor and the top layer's h also written into other columns of the same
// tensor (Rnn::step's view overload, as a decoder reads [emb; context] from o = [s; context;
// emb] and writes s there); the columns around them keep their values.
// I inputs, H hidden units: with both multiples of 4, CPU drivers read fp32 W_hh, h, W_ih and x
// through texel views and take W_ih x inline in rnn_step (X_ALIGNED: aligned x rows only). fp16
// and int8 weights whose rows are whole 16-byte units (plan::wide_rows) are read 16 bytes at a
// time (WIDE, X_WIDE), through texel views where h's rows are vec4s, and inline there too.
void check_single_steps(WS storage, std::uint32_t seed, bool views = false, std::size_t I = 6, std::size_t H = 9) {
  auto& ctx = context();
  for (auto [cell, proj, layers, nosg, kernel] :
       {std::tuple{CellType::gru, 0, 2, false, RnnStepKernel::subgroup_dot},
        std::tuple{CellType::gru, 0, 2, false, RnnStepKernel::invocation_dot},
        std::tuple{CellType::lstm, 0, 1, false, RnnStepKernel::subgroup_dot},
        std::tuple{CellType::lstm, 3, 2, false, RnnStepKernel::subgroup_dot},
        std::tuple{CellType::lstm, 3, 2, false, RnnStepKernel::invocation_dot},
        std::tuple{CellType::rnn_relu, 0, 3, true, RnnStepKernel::automatic},
        std::tuple{CellType::gru, 0, 1, true, RnnStepKernel::automatic}}) {
    RnnConfig c;
    c.cell = cell, c.input_size = I, c.hidden_size = H, c.num_layers = std::size_t(layers), c.proj_size = std::size_t(proj);
    SCOPED_TRACE(fmt::format("{} proj={} layers={} nosubgroup={} storage={} kernel={}", to_string(cell), proj, layers, nosg, to_string(storage),
                             to_string(kernel)));
    Rnn rnn(ctx, c, storage_options(storage, nosg));
    if (kernel == RnnStepKernel::subgroup_dot && !context().device().subgroup_arithmetic) continue;
    rnn.set_step_kernel(kernel);
    // W_ih x inline (one dispatch, not a GEMM and the step): subgroup_dot, or invocation_dot
    // with texel loads (on CPU drivers, h rows of whole vec4s; fp32, or 16-byte weight rows).
    const std::size_t HO = proj ? std::size_t(proj) : H;
    const auto wide_rows = [&](std::size_t n) {
      return storage == WS::f16 ? n % 8 == 0 : storage == WS::i8 ? (n + 3) / 4 % 4 == 0 : true;
    };
    const bool texel = ctx.device().type == DeviceType::cpu && HO % 4 == 0 && wide_rows(HO);
    std::uint64_t want_dispatches = 0;
    for (std::size_t l = 0; l < std::size_t(layers); ++l) {
      const bool x_inline = rnn.step_kernel() == RnnStepKernel::subgroup_dot || (texel && wide_rows(l == 0 ? I : HO));
      want_dispatches += (x_inline ? 1u : 2u) + (proj ? 1u : 0u);
    }
    const auto sd = test::make_state_dict(c, seed++);
    rnn.load(sd);
    const bool lstm = cell == CellType::lstm;
    const std::size_t B = 3, T = 5, L = c.num_layers;
    const auto x = random_floats(B * T * I, seed++);
    const auto h0 = random_floats(L * B * HO, seed++);
    const auto c0 = lstm ? random_floats(L * B * H, seed++) : std::vector<float>{};
    // fp16 / int8: the reference on the stored weights, fp32 tolerance (see run_case).
    const auto want = test::rnn_reference(c, stored_weights(c, sd, storage), x, B, T, {}, h0, c0);

    Tensor h[2] = {ctx.tensor({L, B, HO}), ctx.tensor({L, B, HO})};
    Tensor cs[2];
    ctx.write(h[0], h0);
    if (lstm) {
      cs[0] = ctx.tensor({L, B, H});
      cs[1] = ctx.tensor({L, B, H});
      ctx.write(cs[0], c0);
    }
    Tensor xt = ctx.tensor({B, I});
    // views: [2 pad | out HO | 1 pad | x I | 3 pad] per row (unaligned offsets and stride).
    const std::size_t ld = 2 + HO + 1 + I + 3, out_col = 2, x_col = 2 + HO + 1;
    const float pad = -7.25f;
    Tensor wide = ctx.tensor({B, ld});
    std::vector<double> outputs(B * T * HO);
    for (std::size_t t = 0; t < T; ++t) {
      std::vector<float> xs(B * I), ws(B * ld, pad);
      for (std::size_t b = 0; b < B; ++b) {
        for (std::size_t i = 0; i < I; ++i) {
          xs[b * I + i] = x[(b * T + t) * I + i];
          ws[b * ld + x_col + i] = xs[b * I + i];
        }
      }
      Sequence seq = ctx.sequence();
      // c may be updated in place (c_out == c); h must ping-pong.
      if (views) {
        seq.upload(wide, ws);
        rnn.step(seq, MatrixView{wide, B, I, x_col, ld}, h[t & 1], h[(t + 1) & 1], lstm ? cs[0] : Tensor{},
                 lstm ? cs[0] : Tensor{}, MatrixView{wide, B, HO, out_col, ld});
        seq.download(wide);
      } else {
        seq.upload(xt, xs);
        rnn.step(seq, xt, h[t & 1], h[(t + 1) & 1], lstm ? cs[0] : Tensor{}, lstm ? cs[0] : Tensor{});
      }
      seq.download(h[(t + 1) & 1]);
      seq.eval();
      EXPECT_EQ(seq.stats().dispatches, want_dispatches);
      const auto hs = seq.read<float>(h[(t + 1) & 1]);
      for (std::size_t b = 0; b < B; ++b)
        for (std::size_t k = 0; k < HO; ++k) outputs[(b * T + t) * HO + k] = hs[((L - 1) * B + b) * HO + k];
      if (views) {
        // out holds the top layer's h exactly; x and the padding are untouched.
        const auto got = seq.read<float>(wide);
        for (std::size_t b = 0; b < B; ++b) {
          for (std::size_t k = 0; k < ld; ++k) {
            const bool in_out = k >= out_col && k < out_col + HO;
            const float want_v = in_out ? hs[((L - 1) * B + b) * HO + k - out_col] : ws[b * ld + k];
            ASSERT_EQ(got[b * ld + k], want_v) << "step " << t << " row " << b << " column " << k;
          }
        }
      }
    }
    std::vector<float> got_out(outputs.begin(), outputs.end());
    EXPECT_TRUE(all_close(got_out, want.output, 1e-5, 1e-5)) << "outputs";
    EXPECT_TRUE(all_close(ctx.read<float>(h[T & 1]), want.h_n, 1e-5, 1e-5)) << "h_n";
    if (lstm) {
      EXPECT_TRUE(all_close(ctx.read<float>(cs[0]), want.c_n, 1e-5, 1e-5)) << "c_n";
    }
  }
}

TEST(Rnn, SingleStepMatchesSequence) { check_single_steps(WS::f32, 500); }
TEST(Rnn, SingleStepOnViews) { check_single_steps(WS::f32, 520, true); }
// Whole vec4s: x inline through texel views on CPU drivers (aligned x, then x at an unaligned
// offset and stride).
TEST(Rnn, SingleStepVec4Rows) {
  check_single_steps(WS::f32, 540, false, 8, 12);
  check_single_steps(WS::f32, 560, true, 8, 12);
}

// step() with W_ih packed in several blocks and a partial one (H = 36 / 40 / 48), read inline
// (or by the GEMM where the kernel cannot inline it): x aligned, and at an unaligned offset and
// stride (views), which packed fp32 rows do not depend on; int8 rows of 13 padded to 16 bytes.
TEST(Rnn, SingleStepPackedInputWeights) {
  check_single_steps(WS::f32, 1600, false, 20, 36);
  check_single_steps(WS::f32, 1610, true, 20, 36);
  if (has_fp16_storage()) check_single_steps(WS::f16, 1620, true, 24, 40);
  check_single_steps(WS::i8, 1630, true, 13, 48);
}

// W_ih x inline on CPU drivers reads W_ih through a texel view: where W_ih is past the device's
// maxTexelBufferElements the step falls back to the input GEMM (2 dispatches), with W_hh still
// read through texels, and the result stays the reference's.
TEST(Rnn, SingleStepInlineFollowsTheTexelLimit) {
  auto o = test::validated_options();
  o.limits = DeviceLimits{.max_texel_buffer_elements = 128};  // views of 2 KiB
  Context ctx(o);
  if (ctx.device().type != DeviceType::cpu) GTEST_SKIP() << "texel loads are for CPU drivers";
  RnnConfig c;
  c.cell = CellType::gru, c.input_size = 64, c.hidden_size = 8;  // W_ih 6 KiB, W_hh 768 bytes
  for (std::size_t in : {std::size_t(64), std::size_t(8)}) {
    SCOPED_TRACE(fmt::format("input size {}", in));
    c.input_size = in;
    Rnn rnn(ctx, c);
    const auto sd = test::make_state_dict(c, 3100 + std::uint32_t(in));
    rnn.load(sd);
    const std::size_t B = 3;
    const auto x = random_floats(B * in, 3200 + std::uint32_t(in));
    const auto h0 = random_floats(B * 8, 3300);
    const auto want = test::rnn_reference(c, sd, x, B, 1, {}, h0, {});
    Tensor xt = ctx.tensor({B, in}), h = ctx.tensor({1, B, 8}), ho = ctx.tensor({1, B, 8});
    ctx.write(xt, x);
    ctx.write(h, h0);
    Sequence seq = ctx.sequence();
    rnn.step(seq, xt, h, ho);
    seq.eval();
    EXPECT_EQ(seq.stats().dispatches, in == 64 ? 2u : 1u);
    EXPECT_TRUE(all_close(ctx.read<float>(ho), want.h_n, 1e-5, 1e-5));
  }
}

// The first step without any state (h / c empty = zeros).
TEST(Rnn, SingleStepFromZeroState) {
  auto& ctx = context();
  RnnConfig c;
  c.cell = CellType::lstm, c.input_size = 4, c.hidden_size = 8;
  Rnn rnn(ctx, c);
  const auto sd = test::make_state_dict(c, 3);
  rnn.load(sd);
  const auto x = random_floats(2 * 4, 4);
  const auto want = test::rnn_reference(c, sd, x, 2, 1, {}, {}, {});
  Tensor xt = ctx.tensor({2, 4}), ho = ctx.tensor({1, 2, 8}), co = ctx.tensor({1, 2, 8});
  ctx.write(xt, x);
  Sequence seq = ctx.sequence();
  rnn.step(seq, xt, {}, ho, {}, co);
  seq.eval();
  EXPECT_TRUE(all_close(ctx.read<float>(ho), want.h_n, 1e-5, 1e-5));
  EXPECT_TRUE(all_close(ctx.read<float>(co), want.c_n, 1e-5, 1e-5));
}


TEST(Rnn, LoadErrorsNameTheTensor) {
  auto& ctx = context();
  RnnConfig c;
  c.cell = CellType::lstm, c.input_size = 3, c.hidden_size = 4, c.num_layers = 2, c.bidirectional = true;
  Rnn rnn(ctx, c);
  auto sd = test::make_state_dict(c, 1);
  // Names and shapes are exactly torch's.
  const auto shapes = rnn.parameter_shapes();
  ASSERT_EQ(shapes.size(), sd.size());
  EXPECT_EQ(shapes[0].first, "weight_ih_l0");
  EXPECT_EQ(shapes[0].second, (Shape{16, 3}));
  EXPECT_EQ(shapes[4].first, "weight_ih_l0_reverse");
  EXPECT_EQ(shapes[8].first, "weight_ih_l1");
  EXPECT_EQ(shapes[8].second, (Shape{16, 8}));

  auto missing = sd;
  missing.erase("bias_hh_l1_reverse");
  expect_error([&] { rnn.load(missing); }, ErrorCode::invalid_argument, {"bias_hh_l1_reverse"});
  auto extra = sd;
  extra["weight_hr_l0"] = std::vector<float>(4);
  expect_error([&] { rnn.load(extra); }, ErrorCode::invalid_argument, {"weight_hr_l0"});
  auto wrong = sd;
  wrong["weight_hh_l1"].pop_back();
  expect_error([&] { rnn.load(wrong); }, ErrorCode::invalid_argument, {"weight_hh_l1"});
  expect_error([&] { rnn.set_parameter("weight_ih_l0", sd["weight_ih_l0"], {3, 16}); }, ErrorCode::invalid_argument,
               {"expected shape [16, 3]"});
  expect_error([&] { rnn.set_parameter("weight_ih_l2", sd["weight_ih_l0"], {16, 3}); }, ErrorCode::not_found, {"weight_ih_l2"});
  EXPECT_FALSE(rnn.loaded());
  Tensor x = ctx.tensor({1, 2, 3}), out = ctx.tensor({1, 2, 8});
  Sequence seq = ctx.sequence();
  expect_error([&] { rnn.record(seq, x, {}, {}, {}, out, {}, {}); }, ErrorCode::state, {"weight_ih_l0"});
  rnn.load(sd);
  EXPECT_TRUE(rnn.loaded());
}

TEST(Rnn, BadArguments) {
  auto& ctx = context();
  RnnConfig c;
  c.cell = CellType::gru, c.input_size = 3, c.hidden_size = 4, c.num_layers = 2, c.bidirectional = true;
  Rnn rnn(ctx, c);
  rnn.load(test::make_state_dict(c, 1));
  const std::size_t B = 2, T = 5;
  Tensor x = ctx.tensor({B, T, 3}), out = ctx.tensor({B, T, 8}), lt = ctx.tensor({B}, DType::i32);
  Sequence seq = ctx.sequence();
  expect_error([&] { rnn.record(seq, ctx.tensor({B, T, 4}), {}, {}, {}, out, {}, {}); }, ErrorCode::invalid_argument, {"'x'"});
  expect_error([&] { rnn.record(seq, x, {}, {}, {}, ctx.tensor({B, T, 4}), {}, {}); }, ErrorCode::invalid_argument,
               {"'out': expected f32 [2, 5, 8]"});
  expect_error([&] { rnn.record(seq, x, {}, ctx.tensor({2, B, 4}), {}, out, {}, {}); }, ErrorCode::invalid_argument, {"'h0'"});
  expect_error([&] { rnn.record(seq, x, ctx.tensor({B}), {}, {}, out, {}, {}); }, ErrorCode::invalid_argument, {"'lengths'"});
  expect_error([&] { rnn.record(seq, x, {}, {}, ctx.tensor({4, B, 4}), out, {}, {}); }, ErrorCode::invalid_argument, {"c0"});
  const std::vector<std::int32_t> too_long = {5, 6}, negative = {-1, 2}, wrong_count = {1, 2, 3};
  expect_error([&] { rnn.record(seq, x, lt, {}, {}, out, {}, {}, too_long); }, ErrorCode::invalid_argument,
               {"lengths[1] = 6 is outside [0, T = 5]"});
  expect_error([&] { rnn.record(seq, x, lt, {}, {}, out, {}, {}, negative); }, ErrorCode::invalid_argument, {"lengths[0] = -1"});
  expect_error([&] { rnn.record(seq, x, lt, {}, {}, out, {}, {}, wrong_count); }, ErrorCode::invalid_argument, {"3 host lengths"});
  expect_error([&] { (void)rnn.forward(random_floats(B * T * 3, 1), B, T, too_long); }, ErrorCode::invalid_argument,
               {"lengths[1] = 6"});
  Tensor hn = ctx.tensor({4, B, 4});
  expect_error([&] { rnn.record(seq, x, {}, hn, {}, out, hn, {}); }, ErrorCode::invalid_argument, {"share memory"});
  expect_error([&] { rnn.step(seq, ctx.tensor({B, 3}), {}, ctx.tensor({2, B, 4})); }, ErrorCode::invalid_argument,
               {"bidirectional"});
  EXPECT_EQ(seq.stats().dispatches, 0u);

  RnnConfig g = c;
  g.bidirectional = false;
  Rnn uni(ctx, g);
  uni.load(test::make_state_dict(g, 2));
  Tensor h = ctx.tensor({2, B, 4});
  expect_error([&] { uni.step(seq, ctx.tensor({B, 3}), h, h); }, ErrorCode::invalid_argument, {"ping-pong"});
  expect_error([&] { uni.step(seq, ctx.tensor({B, 2}), h, ctx.tensor({2, B, 4})); }, ErrorCode::invalid_argument, {"'x'"});
  // Views: x past its tensor's end, an out view of the wrong width or overlapping x.
  Tensor wide = ctx.tensor({B, 8}), h2 = ctx.tensor({2, B, 4});
  expect_error([&] { uni.step(seq, MatrixView{wide, B, 3, 6, 8}, h, h2); }, ErrorCode::invalid_argument,
               {"argument 'x'", "offset 6"});
  expect_error([&] { uni.step(seq, MatrixView{wide, B, 3, 0, 8}, h, h2, {}, {}, MatrixView{wide, B, 3, 4, 8}); },
               ErrorCode::invalid_argument, {"argument 'out': expected an f32 view of [2, 4]"});
  expect_error([&] { uni.step(seq, MatrixView{wide, B, 3, 0, 8}, h, h2, {}, {}, MatrixView{wide, B, 4, 2, 8}); },
               ErrorCode::invalid_argument, {"'out' overlaps 'x'"});
  expect_error([&] { uni.step(seq, MatrixView{wide, B, 3, 4, 4}, h, h2, {}, {}, MatrixView{wide, B, 4, 0, 4}); },
               ErrorCode::invalid_argument, {"'out' overlaps 'x'"});

  RnnConfig p = c;
  p.proj_size = 2;
  expect_error([&] { Rnn bad(ctx, p); }, ErrorCode::invalid_argument, {"proj_size"});
  p.cell = CellType::lstm;
  p.proj_size = 4;
  expect_error([&] { Rnn bad(ctx, p); }, ErrorCode::invalid_argument, {"smaller than hidden_size"});
  p.proj_size = 2;
  Rnn proj(ctx, p);
  proj.set_path(RnnPath::fused);
  expect_error([&] { (void)proj.path_for(1); }, ErrorCode::invalid_argument, {"fused"});
  RnnConfig z = c;
  z.hidden_size = 0;
  expect_error([&] { Rnn bad(ctx, z); }, ErrorCode::invalid_argument, {"hidden_size"});
}

// A projection's dot products over H = 140,000 features: 35,000 iterations per invocation of
// rnn_proj without subgroups, past the loop budget: an error before anything is recorded
// rather than a loop the driver may end early.
TEST(Rnn, StepPastLoopBudgetIsAnError) {
  auto& ctx = context();
  RnnConfig c;
  c.cell = CellType::lstm, c.input_size = 1, c.hidden_size = 140000, c.proj_size = 1;
  OpOptions o;
  o.force_shared_memory_reduction = true;
  Rnn rnn(ctx, c, o);
  rnn.load(test::make_state_dict(c, 1));
  EXPECT_EQ(rnn.path_for(1), RnnPath::per_step);
  Tensor x = ctx.tensor({1, 2, 1}), out = ctx.tensor({1, 2, 1});
  Sequence seq = ctx.sequence();
  expect_error([&] { rnn.record(seq, x, {}, {}, {}, out, {}, {}); }, ErrorCode::out_of_range,
               {"rnn_proj", "140000 features", "loop budget"});
  EXPECT_EQ(seq.stats().dispatches, 0u);
}

// ---------------------------------------------------------------------------------------------
// fp16 weight storage

// Every cell on both paths and every kernel variant (subgroup, per-invocation, no-subgroup),
// 2 layers bidirectional with ragged lengths incl. 0, H = 1 without h0, and no bias.
TEST(Rnn, Fp16PackedRecurrentWeights) {
  if (!has_fp16_storage()) GTEST_SKIP() << "no storageBuffer16BitAccess";
  check_packed_recurrent_weights(WS::f16, 940);
}

TEST(Rnn, Fp16FeaturesBothPaths) {
  if (!has_fp16_storage()) GTEST_SKIP() << "no storageBuffer16BitAccess";
  check_features_both_paths(WS::f16, 600);
}

// Aligned (H % 4 == 0: f16vec4 loads) and unaligned (scalar half loads) rows, bigger layers,
// batch blocks, on both paths.
TEST(Rnn, Fp16Shapes) {
  if (!has_fp16_storage()) GTEST_SKIP() << "no storageBuffer16BitAccess";
  struct S { CellType cell; bool bi; std::size_t B, H, I, T; };
  const S sample[] = {
      {CellType::gru, true, 3, 64, 300, 6},   {CellType::lstm, false, 16, 64, 5, 5},
      {CellType::gru, false, 1, 257, 5, 4},   {CellType::rnn_tanh, true, 3, 257, 1, 3},
      {CellType::rnn_relu, false, 16, 7, 5, 9}, {CellType::lstm, true, 1, 257, 5, 3},
  };
  std::uint32_t seed = 700;
  for (const S& s : sample) {
    for (RnnPath path : {RnnPath::per_step, RnnPath::fused}) {
      for (bool nosg : {false, true}) {
        Case k;
        k.storage = WS::f16, k.cell = s.cell, k.bidirectional = s.bi, k.B = s.B, k.H = s.H, k.I = s.I, k.T = s.T;
        k.ragged = true, k.path = path, k.no_subgroup = nosg;
        run_case(k, seed++);
      }
    }
  }
}

TEST(Rnn, Fp16LstmProjection) {
  if (!has_fp16_storage()) GTEST_SKIP() << "no storageBuffer16BitAccess";
  check_lstm_projection(WS::f16, 800);
}

TEST(Rnn, Fp16StagingContextAndDeviceLengths) {
  if (!has_fp16_storage()) GTEST_SKIP() << "no storageBuffer16BitAccess";
  std::uint32_t seed = 900;
  for (RnnPath path : {RnnPath::per_step, RnnPath::fused}) {
    Case k;
    k.storage = WS::f16, k.staging = true, k.cell = CellType::lstm, k.path = path;
    k.layers = 2, k.bidirectional = true, k.B = 3, k.H = 5, k.I = 3, k.T = 4, k.ragged = true;
    run_case(k, seed++);
    k.staging = false, k.device_lengths_only = true, k.cell = CellType::gru, k.B = 6, k.H = 12;
    run_case(k, seed++);
  }
  Case k;
  k.storage = WS::f16, k.staging = true, k.cell = CellType::lstm, k.proj = 3, k.B = 4, k.H = 6, k.T = 4, k.ragged = true;
  run_case(k, seed++);
}

// step() with fp16 weights (T single steps against the sequence reference).
TEST(Rnn, Fp16SingleStep) {
  if (!has_fp16_storage()) GTEST_SKIP() << "no storageBuffer16BitAccess";
  check_single_steps(WS::f16, 950);
}

// Rows of whole 16-byte units: W_hh (H = 8, 16) and W_ih (I = 16, 8) read as uvec4s, inline on
// CPU drivers; x at an unaligned offset and stride (views); W_ih too short (I = 12) with a wide
// W_hh.
TEST(Rnn, Fp16SingleStepWideRows) {
  if (!has_fp16_storage()) GTEST_SKIP() << "no storageBuffer16BitAccess";
  check_single_steps(WS::f16, 970, false, 16, 8);
  check_single_steps(WS::f16, 975, true, 8, 16);
  check_single_steps(WS::f16, 980, false, 12, 16);
}

// A layer with `storage` against an fp32 one on the same (unrounded) parameters, every cell on
// both paths: within `tol` (absolute) of it, and at least `min_diff` away somewhere (the storage
// really took effect). Returns the largest difference seen.
double check_agrees_with_fp32(WS storage, std::uint32_t seed, double tol, double min_diff) {
  auto& ctx = context();
  double worst = 0.0;
  for (CellType cell : kCells) {
    for (RnnPath path : {RnnPath::per_step, RnnPath::fused}) {
      RnnConfig c;
      c.cell = cell, c.input_size = 16, c.hidden_size = 64, c.num_layers = 2, c.bidirectional = true;
      SCOPED_TRACE(fmt::format("{} {} {}", to_string(storage), to_string(cell), to_string(path)));
      const auto sd = test::make_state_dict(c, seed++);
      Rnn r32(ctx, c), other(ctx, c, storage_options(storage));
      r32.load(sd);
      other.load(sd);
      r32.set_path(path);
      other.set_path(path);
      const std::size_t B = 3, T = 12;
      const auto x = random_floats(B * T * c.input_size, seed++);
      const std::vector<std::int32_t> lengths = {12, 7, 0};
      const auto a = r32.forward(x, B, T, lengths), b = other.forward(x, B, T, lengths);
      std::vector<double> a_out(a.output.begin(), a.output.end()), a_hn(a.h_n.begin(), a.h_n.end());
      EXPECT_TRUE(all_close(b.output, a_out, 0.0, tol)) << "output";
      EXPECT_TRUE(all_close(b.h_n, a_hn, 0.0, tol)) << "h_n";
      double diff = 0.0;
      for (std::size_t i = 0; i < a.output.size(); ++i) diff = std::max(diff, double(std::abs(a.output[i] - b.output[i])));
      EXPECT_GT(diff, min_diff) << "the layer agrees with fp32 too well: are its weights really " << to_string(storage) << "?";
      worst = std::max(worst, diff);
    }
  }
  return worst;
}

// fp16 against fp32 on the same (unrounded) parameters: the difference is what rounding the
// weights to half does, and it must be there (the fp16 layer really stores half) and be small.
// Bound: rounding moves each weight by <= 2^-11 relative (4.9e-4). Weights are uniform in
// [-1/sqrt(H), 1/sqrt(H)] and |x|, |h| <= 1, so a pre-activation sum over n = I + H_out terms
// moves by <= 4.9e-4 * n / sqrt(H) in the worst case, ~4.9e-4 * sqrt(n / (3H)) (~3e-4 here) with
// independent rounding errors; gates have slope <= 1, and the error carried through h shrinks
// by the recurrent gain (< 1 for these weights) each step. 2e-3 over T = 12 steps and 2 layers
// leaves margin over the 2e-5 .. 2.5e-4 seen; fp32 noise alone is ~1e-6, hence the floor.
TEST(Rnn, Fp16AgreesWithFp32) {
  if (!has_fp16_storage()) GTEST_SKIP() << "no storageBuffer16BitAccess";
  check_agrees_with_fp32(WS::f16, 980, 2e-3, 1e-5);
}

// fp16 storage where 16-bit storage is not enabled: an adopted VkDevice created without the
// feature stands in for a device that lacks it.
TEST(Rnn, Fp16WithoutStorage16IsMissingFeature) {
  test::AppDevice app;
  {
    Context ctx = Context::adopt(app.external(), {.disable_pipeline_cache = true});
    ASSERT_FALSE(ctx.features().storage_buffer_16bit);
    RnnConfig c;
    c.cell = CellType::lstm, c.input_size = 3, c.hidden_size = 4;
    OpOptions o;
    o.fp16_storage = true;
    expect_error([&] { Rnn bad(ctx, c, o); }, ErrorCode::missing_feature,
                 {"Rnn: f16 weights (fp16_storage or weight_storage f16) need storageBuffer16BitAccess"});
    EXPECT_NO_THROW(Rnn(ctx, c));  // fp32 is fine
  }
}

// ---------------------------------------------------------------------------------------------
// int8 weight storage (OpOptions::weight_storage i8): q and one f32 scale per row, the scale
// applied to each finished dot product. Checked against the double reference on the
// dequantized weights (stored_weights) at the fp32 tolerance, so a wrong row, scale or padding
// word shows as an fp32-sized error.

// Every cell on both paths and every kernel variant; rows of 1, 3, 5, 7 and 8 (padded words).
TEST(Rnn, I8FeaturesBothPaths) { check_features_both_paths(WS::i8, 1100); }
TEST(Rnn, I8PackedRecurrentWeights) { check_packed_recurrent_weights(WS::i8, 1140); }

TEST(Rnn, I8LstmProjection) { check_lstm_projection(WS::i8, 1200); }

TEST(Rnn, I8FusedRuns) { check_fused_runs(WS::i8, 1300); }

// step(): W_ih inline in rnn_step (subgroup_dot) or through the int8 GEMM (invocation_dot).
TEST(Rnn, I8SingleStep) {
  check_single_steps(WS::i8, 1400);
  check_single_steps(WS::i8, 1420, true);
}

// int8 rows of whole 16-byte units (4 words, the last one padded where n = 13): W_hh through
// texel views (H = 16) or storage (H = 13: h rows are not vec4s), W_ih inline (I = 16, 13) or
// through the GEMM (I = 12: 3 words).
TEST(Rnn, I8SingleStepWideRows) {
  check_single_steps(WS::i8, 1440, false, 16, 16);
  check_single_steps(WS::i8, 1450, true, 13, 16);
  check_single_steps(WS::i8, 1460, false, 12, 13);
}

// Bigger layers, rows that are whole words (64) and not (257, I = 5 / 1 / 300), batch blocks.
TEST(Rnn, I8Shapes) {
  struct S { CellType cell; bool bi; std::size_t B, H, I, T; };
  const S sample[] = {
      {CellType::gru, true, 3, 64, 300, 6},    {CellType::lstm, false, 16, 64, 5, 5},
      {CellType::gru, false, 1, 257, 5, 4},    {CellType::rnn_tanh, true, 3, 257, 1, 3},
      {CellType::rnn_relu, false, 16, 7, 5, 9}, {CellType::lstm, true, 1, 257, 5, 3},
  };
  std::uint32_t seed = 1500;
  for (const S& s : sample) {
    for (RnnPath path : {RnnPath::per_step, RnnPath::fused}) {
      Case k;
      k.storage = WS::i8, k.cell = s.cell, k.bidirectional = s.bi, k.B = s.B, k.H = s.H, k.I = s.I, k.T = s.T;
      k.ragged = true, k.path = path;
      run_case(k, seed++);
    }
  }
}

// int8 against fp32 on the same (unquantized) parameters: the difference is what quantizing
// does, and it must be there (the layer really computes with int8) and stay small.
// Bound: a weight moves by <= scale / 2 = max|row| / 254, i.e. <= 1 / (254 sqrt(H)) for the
// test weights (uniform in +-1/sqrt(H)); with |x|, |h| <= 1 and n = in + H_out terms per
// pre-activation, independent rounding gives ~sqrt(n / 3) / (254 sqrt(H)) (~1.8e-3 for layer 1
// here, n = 192), the worst case n / (254 sqrt(H)) = 9.4e-3. Gates have slope <= 1 and errors
// carried through h shrink each step for these weights, so 2e-2 over 12 steps and 2 layers
// leaves room; the error must exceed 1e-4 (fp32 noise alone is ~1e-6).
TEST(Rnn, I8AgreesWithFp32) {
  RecordProperty("max_abs_diff", fmt::format("{:.3g}", check_agrees_with_fp32(WS::i8, 1600, 2e-2, 1e-4)));
}

// set_parameter_quantized keeps a file's int8 values and scales as they are -- here ones
// quantize_rows would never make (max|q| < 127, arbitrary scales, a zero row, -128), so
// re-quantizing would change them -- on an i8 layer, and dequantizes them on an f32 one; both
// match the double reference on q * scale. Then its errors.
TEST(Rnn, I8QuantizedParameters) {
  auto& ctx = context();
  RnnConfig c;
  c.cell = CellType::lstm, c.input_size = 5, c.hidden_size = 6, c.num_layers = 2, c.proj_size = 3;
  auto sd = test::make_state_dict(c, 1700);
  std::map<std::string, QuantizedRows> quantized;
  std::mt19937 rng(1701);
  for (auto& [name, v] : sd) {
    if (name.rfind("weight_", 0) != 0) continue;
    const std::size_t rows = name.rfind("weight_hr", 0) == 0 ? c.proj_size : 4 * c.hidden_size, cols = v.size() / rows;
    QuantizedRows q{std::vector<std::int8_t>(v.size()), std::vector<float>(rows)};
    std::uniform_int_distribution<int> qd(-100, 100);
    std::uniform_real_distribution<float> sdist(1e-3f, 2e-2f);
    for (auto& e : q.q) e = static_cast<std::int8_t>(qd(rng));
    for (auto& e : q.scales) e = sdist(rng);
    q.q[0] = -128;
    std::fill_n(q.q.begin() + static_cast<std::ptrdiff_t>(cols), cols, std::int8_t{0});  // row 1 all zero
    v = dequantize_rows(q.q, q.scales, cols);
    quantized[name] = std::move(q);
  }
  const std::size_t B = 2, T = 4;
  const auto x = random_floats(B * T * c.input_size, 1702);
  const auto want = test::rnn_reference(c, sd, x, B, T, {}, {}, {});
  for (WS storage : {WS::i8, WS::f32}) {
    SCOPED_TRACE(to_string(storage));
    Rnn rnn(ctx, c, storage_options(storage));
    for (const auto& [name, shape] : rnn.parameter_shapes()) {
      if (quantized.count(name)) {
        rnn.set_parameter_quantized(name, quantized[name].q, shape, quantized[name].scales);
      } else {
        rnn.set_parameter(name, sd.at(name), shape);
      }
    }
    const auto got = rnn.forward(x, B, T);
    EXPECT_TRUE(all_close(got.output, want.output, 1e-5, 1e-5)) << "output";
    EXPECT_TRUE(all_close(got.h_n, want.h_n, 1e-5, 1e-5)) << "h_n";
  }

  Rnn rnn(ctx, c, storage_options(WS::i8));
  const Shape ih{24, 5};
  const std::vector<std::int8_t> q(24 * 5, 1);
  const std::vector<float> scales(24, 0.5f);
  expect_error([&] { rnn.set_parameter_quantized("bias_ih_l0", q, {24}, scales); }, ErrorCode::invalid_argument,
               {"'bias_ih_l0' is a bias"});
  expect_error([&] { rnn.set_parameter_quantized("weight_ih_l0", q, {5, 24}, scales); }, ErrorCode::invalid_argument,
               {"int8 parameter 'weight_ih_l0'", "expected q [24, 5]", "got q [5, 24]"});
  expect_error([&] { rnn.set_parameter_quantized("weight_ih_l0", q, ih, std::vector<float>(23, 0.5f)); },
               ErrorCode::invalid_argument, {"24 scales", "23 scales"});
  std::vector<float> bad = scales;
  bad[7] = -1.0f;
  expect_error([&] { rnn.set_parameter_quantized("weight_ih_l0", q, ih, bad); }, ErrorCode::invalid_argument,
               {"scale of row 7 is -1"});
  bad[7] = std::numeric_limits<float>::quiet_NaN();
  expect_error([&] { rnn.set_parameter_quantized("weight_ih_l0", q, ih, bad); }, ErrorCode::invalid_argument,
               {"scale of row 7 is nan"});
  expect_error([&] { rnn.set_parameter_quantized("weight_ih_l9", q, ih, scales); }, ErrorCode::not_found,
               {"no parameter 'weight_ih_l9'"});
  EXPECT_FALSE(rnn.loaded());
}

// The full cross product of the grid: cell x layers {1,2,3} x bidirectional x batch
// {1,3,16} x hidden {1,7,64,256,1024} x input {1,5,300} x lengths {ragged, equal}. T shrinks with
// the work per step so the double reference stays affordable; T = 512 runs where H <= 64.
TEST(RnnLong, FullGrid) {
  std::uint32_t seed = 1000;
  for (CellType cell : kCells)
    for (std::size_t L : {1, 2, 3})
      for (bool bi : {false, true})
        for (std::size_t B : {1, 3, 16})
          for (std::size_t H : {1, 7, 64, 256, 1024})
            for (std::size_t I : {1, 5, 300})
              for (bool ragged : {true, false}) {
                Case k;
                k.cell = cell, k.layers = L, k.bidirectional = bi, k.B = B, k.H = H, k.I = I, k.ragged = ragged;
                k.T = H <= 7 ? 512 : H == 64 ? (B == 1 ? 512 : 64) : H == 256 ? 8 : 3;
                k.tol = k.T >= 512 ? 1e-4 : 1e-5;
                run_case(k, seed++);
              }
}

// Both paths and the no-subgroup variants over a mid-size grid; with_proj: LSTM on the per-step
// path also projects (proj_size = H / 2).
void check_paths_and_variants(WS storage, std::initializer_list<std::size_t> hidden, bool with_proj,
                              std::uint32_t seed) {
  for (CellType cell : kCells)
    for (RnnPath path : {RnnPath::per_step, RnnPath::fused})
      for (bool nosg : {false, true})
        for (std::size_t B : {1, 3, 16})
          for (std::size_t H : hidden) {
            Case k;
            k.storage = storage, k.cell = cell, k.path = path, k.no_subgroup = nosg, k.B = B, k.H = H, k.I = 5, k.T = 16;
            k.layers = 2, k.bidirectional = true, k.ragged = true;
            k.proj = with_proj && cell == CellType::lstm && path == RnnPath::per_step && H > 1 ? H / 2 : 0;
            run_case(k, seed++);
          }
}

TEST(RnnLong, PathsAndVariants) { check_paths_and_variants(WS::f32, {1, 7, 64, 256}, false, 5000); }

// fp16 weights over cells x paths x subgroup / no-subgroup x batch x hidden (aligned and not).
TEST(RnnLong, Fp16PathsAndVariants) {
  if (!has_fp16_storage()) GTEST_SKIP() << "no storageBuffer16BitAccess";
  check_paths_and_variants(WS::f16, {1, 7, 64, 257}, true, 9000);
}

// int8 weights likewise (rows of 1, 7, 64 and 257: padded words and whole ones).
TEST(RnnLong, I8PathsAndVariants) { check_paths_and_variants(WS::i8, {1, 7, 64, 257}, true, 9500); }

// Every cell on both paths, fp32 and fp16 weights, one and two directions, at T past the loop
// limit of a single rnn_seq dispatch on lavapipe (measured before the split, fused against
// per-step: H = 8, B = 2 broke at T = 21,843..21,847; H = 64, B = 3 at 3,120..3,124, and with the
// subgroup kernel at 5,955..5,959); LSTM with a projection (the per-step path only). The fused
// runs must really be several.
TEST(RnnLong, PastLoopBudget) {
  std::uint32_t seed = 12000;
  struct S { std::size_t H, B, T; bool ragged; };
  for (const S sz : {S{8, 2, 22000, false}, S{64, 3, 3500, true}}) {
    for (CellType cell : kCells)
      for (RnnPath path : {RnnPath::fused, RnnPath::per_step})
        for (bool f16 : {false, true})
          for (bool bi : {false, true})
            for (auto [kernel, nosg] : kernel_variants()) {
              // Every kernel variant at H = 64; the device's choice at T = 22,000.
              if ((f16 && !has_fp16_storage()) || (sz.H == 8 && (nosg || kernel != RnnStepKernel::automatic))) continue;
              Case k;
              k.cell = cell, k.path = path, k.storage = f16 ? WS::f16 : WS::f32, k.bidirectional = bi, k.kernel = kernel, k.no_subgroup = nosg;
              k.H = sz.H, k.B = sz.B, k.T = sz.T, k.I = 5, k.ragged = sz.ragged, k.tol = 1e-4;
              if (kernel == RnnStepKernel::subgroup_dot && path == RnnPath::fused) k.T = 6500;
              k.multi_run = path == RnnPath::fused;
              run_case(k, seed++);
            }
  }
  for (bool f16 : {false, true})
    for (bool bi : {false, true}) {
      if (f16 && !has_fp16_storage()) continue;
      Case k;
      k.cell = CellType::lstm, k.proj = 16, k.path = RnnPath::per_step, k.storage = f16 ? WS::f16 : WS::f32, k.bidirectional = bi;
      k.layers = 2, k.H = 64, k.B = 3, k.T = 3500, k.I = 5, k.ragged = true, k.tol = 1e-4;
      run_case(k, seed++);
    }
}

}  // namespace
}  // namespace vkrnn
