// W2 — recurrent layer over a sequence (workloads.md): torch.nn.GRU / LSTM / RNN (tanh)
// semantics, 1 layer, unidirectional, input size = H, zero initial state, T = 64.
// vkrnn's Rnn records the input projection GEMM and the recurrence (per-step or fused path,
// chosen automatically from the device). Rates: ms per sequence, µs per timestep, and
// GFLOP/s at 4 * B * T * G * H^2 (input and recurrent products; bench/SCHEMA.md).
// Each shape also runs with the weight matrices in fp16 and in int8 (OpOptions::weight_storage,
// int8 quantized per row at load), params weight_bits = 16 / 8 and precision fp16 / int8, as W3
// does; the fp32 rows keep their names.
#include <cmath>
#include <memory>

#include "vkrnn/rnn.hpp"
#include "workload.hpp"

namespace vkrnn::bench {
namespace {

std::vector<Workload> rows() {
  std::vector<Workload> out;
  for (CellType cell : {CellType::gru, CellType::lstm, CellType::rnn_tanh}) {
    for (std::size_t b : {1, 16}) {
      for (std::size_t h : {256, 512, 1024}) {
        for (const RowStorage& st : kRowStorages) {
        constexpr std::size_t t = 64;
        Workload w;
        w.id = std::string("W2.") + (cell == CellType::gru    ? "gru"
                                     : cell == CellType::lstm ? "lstm"
                                                              : "rnn");
        w.params = {{"B", b}, {"T", t}, {"H", h}};
        if (st.bits != 32) w.params["weight_bits"] = st.bits;
        w.precision = st.precision;
        w.work.flops = 4.0 * double(b) * double(t) * double(gate_count(cell)) * double(h) * double(h);
        w.work.steps = double(t);
        w.setup = [cell, b, h, st](Context& ctx) -> Prepared {
          RnnConfig config;
          config.cell = cell;
          config.input_size = h;
          config.hidden_size = h;
          OpOptions options;
          options.weight_storage = st.storage;
          auto rnn = std::make_shared<Rnn>(ctx, config, options);
          // torch.nn's initialisation range, U(-1/sqrt(H), 1/sqrt(H)).
          const float k = 1.0f / std::sqrt(float(h));
          std::uint32_t seed = 21;
          for (const auto& [name, shape] : rnn->parameter_shapes()) {
            rnn->set_parameter(name, random_floats(element_count(shape), seed++, -k, k), shape);
          }
          Tensor x = random_tensor(ctx, {b, t, h}, 31, 1.0f, "W2.x");
          Tensor y = ctx.tensor({b, t, h}, DType::f32, "W2.out");
          return {[rnn, x, y](Sequence& seq) {
                    rnn->record(seq, x, Tensor(), Tensor(), Tensor(), y, Tensor(), Tensor());
                  },
                  y};
        };
        out.push_back(std::move(w));
        }
      }
    }
  }
  return out;
}

const Registrar registrar("W2", rows);

}  // namespace
}  // namespace vkrnn::bench
