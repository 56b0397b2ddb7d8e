// K — single kernels of the W3 decode step (issue 14: "bytes moved per token and the fraction of
// the copy-shader bandwidth each kernel reaches"). Each row is one op the decoder records per
// step, on its own, with the exact shapes of W3 (bench/w3_seq2seq.cpp):
//   K.gemv: the output projection, Linear(Hd + 2 He + E = 1024 -> vocab 8000) with bias, at
//           B = 1 and 16, weights fp32, fp16 and int8 (OpOptions::weight_storage; the same
//           Gemm path the decoder takes).
//   K.gru:  the decoder GRU step, Rnn::step with input E + 2 He = 768, H = 256, weights fp32,
//           fp16 and int8 (as the W3 rows of each precision store them).
// The third bandwidth-bound kernel of the step, the fused attention at S = 4096, is W1 (W1.dot
// and W1.additive at S = 4096, H = 256): its rows carry the same gbps / gpu_copy_fraction.
//
// Method: the op owns C copies of its weights (distinct buffers, the same values), C chosen so
// that one repetition touches at least the copy ceiling's 64 MiB source; a repetition records
// the op once per copy, in one submission. So each dispatch reads its weights from wherever the
// ceiling's copy reads its source (not from a cache a smaller footprint would fit in), and the
// submit is shared by C dispatches. bytes = C x (weights + biases (+ int8 scales) + inputs read
// + outputs written), the least traffic the op needs; gbps is over the wall median (as every row),
// gpu_gbps over the summed per-dispatch timestamps (the kernels alone), both against the same
// run's copy shader in copy_fraction / gpu_copy_fraction.
#include <algorithm>
#include <cmath>
#include <memory>

#include "vkrnn/linear.hpp"
#include "vkrnn/rnn.hpp"
#include "workload.hpp"

namespace vkrnn::bench {
namespace {

constexpr std::size_t kVocab = 8000, kOutIn = 1024, kH = 256, kGruIn = 768;
constexpr double kF32 = 4.0;
constexpr double kFootprint = double(64ull << 20);  // the copy ceiling's source (ceilings.cpp)

// Copies of a `bytes`-sized working set that one repetition runs over.
std::size_t copies_for(double bytes) { return std::max<std::size_t>(1, std::size_t(std::ceil(kFootprint / bytes))); }

Workload gemv_row(std::size_t b, const RowStorage& st) {
  Workload w;
  w.id = "K.gemv";
  w.params = {{"B", b}, {"N", kVocab}, {"K", kOutIn}};
  if (st.bits != 32) w.params["weight_bits"] = st.bits;
  w.precision = st.precision;
  // Weights at their storage size (int8 rows are padded to whole words: 1024 needs none), the
  // fp32 bias, int8's per-row fp32 scale; x read, y written.
  const double weights = double(kVocab) * kOutIn * double(st.bits) / 8.0 + kVocab * kF32 +
                         (st.bits == 8 ? kVocab * kF32 : 0.0);
  const double once = weights + double(b) * kOutIn * kF32 + double(b) * kVocab * kF32;
  const std::size_t copies = copies_for(once);
  w.work.bytes_read = copies * (weights + double(b) * kOutIn * kF32);
  w.work.bytes_written = copies * double(b) * kVocab * kF32;
  w.work.flops = copies * 2.0 * double(b) * kVocab * kOutIn;
  w.setup = [b, st, copies](Context& ctx) -> Prepared {
    OpOptions options;
    options.weight_storage = st.storage;
    const float bound = 1.0f / std::sqrt(float(kOutIn));  // PyTorch's default init range
    const auto weight = random_floats(kVocab * kOutIn, 400, -bound, bound);
    const auto bias = random_floats(kVocab, 401, -bound, bound);
    std::vector<std::shared_ptr<Linear>> layers;
    for (std::size_t c = 0; c < copies; ++c) {
      layers.push_back(std::make_shared<Linear>(ctx, kOutIn, kVocab, true, options));
      layers.back()->load(weight, {kVocab, kOutIn}, bias);
    }
    Tensor x = random_tensor(ctx, {b, kOutIn}, 402, 1.0f, "K.gemv.x");
    Tensor y = ctx.tensor({b, kVocab}, DType::f32, "K.gemv.y");
    return {[layers, x, y](Sequence& seq) {
              for (const auto& l : layers) l->record(seq, x, y);
            },
            y};
  };
  return w;
}

Workload gru_row(std::size_t b, const RowStorage& st) {
  Workload w;
  w.id = "K.gru";
  w.params = {{"B", b}, {"I", kGruIn}, {"H", kH}};
  if (st.bits != 32) w.params["weight_bits"] = st.bits;
  w.precision = st.precision;
  // W_ih [3H, I] and W_hh [3H, H] at their storage size (int8: rows of 768 and 256 need no
  // padding) and int8's per-row fp32 scales (3H each), fp32 b_ih and b_hh; x and h read, h'
  // written (the input projection's intermediate, where the step takes two dispatches, is not
  // counted: the least traffic).
  const double weights = 3.0 * kH * (kGruIn + kH) * double(st.bits) / 8.0 + 6.0 * kH * kF32 +
                         (st.bits == 8 ? 6.0 * kH * kF32 : 0.0);
  const double once = weights + double(b) * (kGruIn + kH) * kF32 + double(b) * kH * kF32;
  const std::size_t copies = copies_for(once);
  w.work.bytes_read = copies * (weights + double(b) * (kGruIn + kH) * kF32);
  w.work.bytes_written = copies * double(b) * kH * kF32;
  w.work.flops = copies * 2.0 * double(b) * 3.0 * kH * (kGruIn + kH);
  w.setup = [b, st, copies](Context& ctx) -> Prepared {
    RnnConfig config;
    config.cell = CellType::gru;
    config.input_size = kGruIn;
    config.hidden_size = kH;
    OpOptions options;
    options.weight_storage = st.storage;
    const float bound = 1.0f / std::sqrt(float(kH));
    std::vector<std::shared_ptr<Rnn>> layers;
    for (std::size_t c = 0; c < copies; ++c) {
      layers.push_back(std::make_shared<Rnn>(ctx, config, options));
      std::uint32_t seed = 410;
      for (const auto& [name, shape] : layers.back()->parameter_shapes()) {
        layers.back()->set_parameter(name, random_floats(element_count(shape), seed++, -bound, bound), shape);
      }
    }
    Tensor x = random_tensor(ctx, {b, kGruIn}, 420, 1.0f, "K.gru.x");
    Tensor h = random_tensor(ctx, {1, b, kH}, 421, 1.0f, "K.gru.h");
    Tensor h_out = ctx.tensor({1, b, kH}, DType::f32, "K.gru.h_out");
    return {[layers, x, h, h_out](Sequence& seq) {
              for (const auto& l : layers) l->step(seq, x, h, h_out);
            },
            h_out};
  };
  return w;
}

std::vector<Workload> rows() {
  std::vector<Workload> out;
  for (std::size_t b : {1, 16}) {
    for (const RowStorage& st : kRowStorages) out.push_back(gemv_row(b, st));
  }
  for (std::size_t b : {1, 16}) {
    for (const RowStorage& st : kRowStorages) out.push_back(gru_row(b, st));
  }
  return out;
}

const Registrar registrar("K", rows);

}  // namespace
}  // namespace vkrnn::bench
