#pragma once
// Recurrent layers with PyTorch's semantics: torch.nn.RNN (tanh / relu), torch.nn.LSTM (with
// optional proj_size) and torch.nn.GRU, multi-layer, bidirectional, batch_first, with
// per-sequence lengths as pack_padded_sequence gives them. A torch state_dict loads unchanged.
//
// Equations (PyTorch's, gate order as PyTorch stores the rows of weight_ih / weight_hh):
//   RNN:  h' = act(W_ih x + b_ih + W_hh h + b_hh)                    act = tanh or relu
//   LSTM: i, f, g, o = sigmoid, sigmoid, tanh, sigmoid of (W_ih x + b_ih + W_hh h + b_hh)
//         c' = f * c + i * g;  h' = o * tanh(c');  with proj_size: h' = W_hr (o * tanh(c'))
//   GRU:  r, z = sigmoid(W_i{r,z} x + b_i{r,z} + W_h{r,z} h + b_h{r,z})
//         n = tanh(W_in x + b_in + r * (W_hn h + b_hn));  h' = (1 - z) * n + z * h
//
// Lengths: row b of the batch is a sequence of lengths[b] steps (0 <= lengths[b] <= T). Outputs
// at t >= lengths[b] are zero; h_n / c_n of row b are the state after its own last step; the
// reverse direction starts at t = lengths[b] - 1. A length of 0 is accepted (PyTorch's
// pack_padded_sequence rejects it): that row's outputs are all zero and its final state is h0
// (c0), i.e. zero steps were taken.
//
// Execution: per layer, one GEMM projects the whole input sequence (both directions at once);
// then either one dispatch per timestep (rnn_step.comp: the recurrent product with the gates
// fused, both directions in the same dispatch; LSTM with proj_size adds rnn_proj.comp), or one
// dispatch for a run of timesteps (rnn_seq.comp: each workgroup loops over time for its batch
// rows with h in shared memory; a layer takes one run unless T exceeds what one dispatch may
// loop over, see steps_per_dispatch), chosen from the device's limits and the layer's size: on lavapipe
// the fused path wins for small layers (H <= 64, or H = 128 at batch 1), where a dispatch
// (~30-50 us) costs more than a step's arithmetic on one core, and at batch 1 up to 262,144
// W_hh weights (GRU H = 256, LSTM H = 256, RNN H = 512), where its lanes share h by shuffles.
//
// Precision: the weight matrices (weight_ih, weight_hh, weight_hr) are stored as
// OpOptions::weight_storage says (automatic: float16 with fp16_storage, else f32); biases, h, c,
// the gate pre-activations and all arithmetic stay fp32 in every case.
//  - f16 (rounded to nearest even when set) halves their memory and the weight bytes each step
//    reads. Needs storageBuffer16BitAccess: Error(missing_feature) otherwise. Measured on
//    lavapipe (GRU, H = 512, T = 64): 0.76x the fp32 time at B = 1, 0.95x at B = 16.
//  - i8: symmetric int8 with one f32 scale per row of each direction's matrix (quantize_rows:
//    W ~ q * scale), a quarter of the bytes, on any device; set_parameter quantizes,
//    set_parameter_quantized takes a file's int8 values as they are.
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "vkrnn/context.hpp"
#include "vkrnn/export.h"
#include "vkrnn/linear.hpp"
#include "vkrnn/options.hpp"
#include "vkrnn/sequence.hpp"
#include "vkrnn/tensor.hpp"

namespace vkrnn {

enum class CellType { rnn_tanh, rnn_relu, lstm, gru };
VKRNN_API const char* to_string(CellType cell) noexcept;
// Rows of weight_ih / weight_hh per hidden unit: 1 (RNN), 4 (LSTM), 3 (GRU).
VKRNN_API std::size_t gate_count(CellType cell) noexcept;

struct RnnConfig {
  CellType cell = CellType::gru;
  std::size_t input_size = 0;
  std::size_t hidden_size = 0;
  std::size_t num_layers = 1;
  bool bidirectional = false;
  bool bias = true;
  std::size_t proj_size = 0;  // LSTM only: h (and the output) has proj_size features
};

// How the recurrent loop is recorded.
enum class RnnPath {
  automatic,  // chosen from the device and the shapes (see Rnn::path_for)
  per_step,   // one dispatch per timestep (two with proj_size)
  fused,      // one dispatch per layer that loops over time (not for proj_size)
};
VKRNN_API const char* to_string(RnnPath path) noexcept;

// The kernel behind the per-step path's recurrent product.
enum class RnnStepKernel {
  automatic,       // invocation_dot on CPU devices, else subgroup_dot where subgroups allow
  subgroup_dot,    // a subgroup per hidden unit splits the dot products (subgroupAdd): GPUs
  invocation_dot,  // an invocation owns whole units: devices without subgroup arithmetic, and
                   // CPU devices (lavapipe), where 2 units x 16 batch rows per invocation make
                   // the fewest (costly) buffer loads per multiply-add (2.3x less CPU time
                   // per step than subgroup_dot, GRU H = 256, B = 16)
};
VKRNN_API const char* to_string(RnnStepKernel kernel) noexcept;

class VKRNN_API Rnn {
 public:
  Rnn(Context& ctx, const RnnConfig& config, const OpOptions& options = {});
  Rnn(Rnn&&) noexcept;
  Rnn& operator=(Rnn&&) noexcept;
  ~Rnn();

  const RnnConfig& config() const;
  std::size_t directions() const;   // 1 or 2
  std::size_t output_size() const;  // features of h: proj_size if set, else hidden_size

  // --- weights ------------------------------------------------------------------------
  // Every parameter torch's state_dict has for this configuration, in its order, with shapes:
  // weight_ih_l{k}[_reverse] [G*H, in], weight_hh_l{k}[_reverse] [G*H, H_out],
  // bias_ih_l{k}[_reverse] [G*H], bias_hh_l{k}[_reverse] [G*H], weight_hr_l{k}[_reverse] [P, H].
  std::vector<std::pair<std::string, Shape>> parameter_shapes() const;
  // Sets one parameter from data of the given shape (as the source has it). Error(not_found)
  // for an unknown name (listing the expected ones), Error(invalid_argument) when the shape
  // differs from parameter_shapes()' (a transposed weight included) or the data does not fill it.
  void set_parameter(const std::string& name, std::span<const float> data, const Shape& shape);
  // Sets a weight matrix from int8 values as exported (tools/export_torch.py --quantize int8):
  // q with the parameter's shape, one scale per row (finite, >= 0), W = q * scale per row. An
  // i8 layer keeps them exactly; an f32 / f16 one stores the dequantized values. A bias, a wrong
  // shape or count, or a bad scale is Error(invalid_argument) naming the parameter.
  void set_parameter_quantized(const std::string& name, std::span<const std::int8_t> q, const Shape& q_shape,
                               std::span<const float> scales);
  WeightStorage weight_storage() const;  // of the weight matrices: f32, f16 or i8 (resolved)
  // Loads a whole state_dict strictly: every parameter must be present and nothing else
  // (like load_state_dict(strict=True)); errors name the tensor. The values carry no shape:
  // each must have its parameter's element count and PyTorch's layout (parameter_shapes());
  // set_parameter() also checks the source's shape.
  void load(const std::map<std::string, std::vector<float>>& state_dict);
  void load(const std::map<std::string, std::span<const float>>& state_dict);
  bool loaded() const;  // every parameter has been set

  // --- running a sequence -------------------------------------------------------------
  // x [B, T, input_size] f32 (batch_first); lengths i32 [B] or an empty Tensor (all T);
  // h0 [L*D, B, H_out] or empty (zeros); c0 [L*D, B, H] (LSTM) or empty (zeros);
  // out [B, T, D*H_out]; h_n [L*D, B, H_out] and c_n [L*D, B, H] (LSTM), either may be empty.
  // host_lengths, when given, must equal the device lengths: they are validated (0..T) and let
  // the op stop recording at the longest sequence. Device lengths are clamped to [0, T].
  void record(Sequence& seq, const Tensor& x, const Tensor& lengths, const Tensor& h0,
              const Tensor& c0, const Tensor& output, const Tensor& h_n, const Tensor& c_n,
              std::span<const std::int32_t> host_lengths = {}) const;

  struct Result {
    std::vector<float> output;  // [B, T, D*H_out]
    std::vector<float> h_n;     // [L*D, B, H_out]
    std::vector<float> c_n;     // [L*D, B, H] (LSTM), else empty
  };
  // Blocking convenience for tests and tools: lengths empty = all T; h0 / c0 empty = zeros.
  Result forward(std::span<const float> x, std::size_t batch, std::size_t steps,
                 std::span<const std::int32_t> lengths = {}, std::span<const float> h0 = {},
                 std::span<const float> c0 = {}) const;

  // --- one timestep (decoders) ---------------------------------------------------------
  // All layers advance one step (unidirectional only): x [B, input_size], h [L, B, H_out] ->
  // h_out [L, B, H_out]; LSTM: c [L, B, H] -> c_out. h / c may be empty (zeros); h_out must not
  // share memory with h (ping-pong two tensors). One dispatch per layer with the subgroup_dot
  // step kernel (the input projection, the recurrent product and the cell together), else two
  // (the input projection's GEMM first); one more with proj_size.
  void step(Sequence& seq, const Tensor& x, const Tensor& h, const Tensor& h_out,
            const Tensor& c = {}, const Tensor& c_out = {}) const;
  // The same step reading x from a view (B rows of input_size columns, e.g. columns of a wider
  // tensor that other ops wrote in place) and, when `out` is valid, also writing the top layer's
  // new h to the view `out` (B rows of H_out columns; it must not overlap x): a decoder's
  // [s; context; ...] concat input then needs no copy dispatch.
  void step(Sequence& seq, const MatrixView& x, const Tensor& h, const Tensor& h_out,
            const Tensor& c = {}, const Tensor& c_out = {}, const MatrixView& out = {}) const;

  // --- execution choices ----------------------------------------------------------------
  RnnPath path_for(std::size_t batch) const;  // what record() uses for this batch size
  void set_path(RnnPath path);               // tests and benchmarks pin a path
  RnnStepKernel step_kernel() const;          // what the per-step path uses
  void set_step_kernel(RnnStepKernel kernel); // tests and benchmarks pin one
  // Timesteps one dispatch runs for this batch size: 1 on the per-step path; on the fused path
  // as many as keep each invocation within the loop budget (lavapipe silently ends shader loops
  // past 65535 iterations; on GPUs this also bounds one dispatch's time), so a layer of T steps
  // takes ceil(T / steps) dispatches.
  std::size_t steps_per_dispatch(std::size_t batch) const;
  // Tests and benchmarks pin fewer steps per fused dispatch (0: automatic); never more than
  // the budget allows.
  void set_steps_per_dispatch(std::size_t steps);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace vkrnn
