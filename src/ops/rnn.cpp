#include "vkrnn/rnn.hpp"

#include <algorithm>
#include <bit>
#include <cstdint>
#include <limits>
#include <mutex>
#include <type_traits>

#include <fmt/format.h>

#include "ops/common.hpp"
#include "ops/kernels/rnn.hpp"
#include "plan.hpp"
#include "vkrnn/error.hpp"
#include "vkrnn/half.hpp"
#include "vkrnn/linear.hpp"

namespace vkrnn {
namespace {

constexpr const char* kOp = "Rnn";

using CellPush = kernels::RnnCellPush;
using OutLayout = kernels::RnnOutLayout;

std::uint32_t u32(std::uint64_t v, const char* what) {
  if (v > std::numeric_limits<std::uint32_t>::max()) {
    throw Error(ErrorCode::out_of_range, fmt::format("{}: {} = {} exceeds 32-bit indexing", kOp, what, v));
  }
  return static_cast<std::uint32_t>(v);
}

std::string describe(const Tensor& t) {
  return t.valid() ? fmt::format("{} {}", to_string(t.dtype()), to_string(t.shape()))
                   : std::string("an empty tensor");
}

void expect_tensor(const Tensor& t, const char* name, const Shape& shape, DType dtype) {
  if (!t.valid() || t.dtype() != dtype || t.shape() != shape) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{}: argument '{}': expected {} {}, got {}", kOp, name, to_string(dtype),
                            to_string(shape), describe(t)));
  }
}

using ops::same_memory;

enum class Kind { w_ih, w_hh, b_ih, b_hh, w_hr };

}  // namespace

const char* to_string(CellType cell) noexcept {
  switch (cell) {
    case CellType::rnn_tanh: return "rnn_tanh";
    case CellType::rnn_relu: return "rnn_relu";
    case CellType::lstm: return "lstm";
    case CellType::gru: return "gru";
  }
  return "?";
}

std::size_t gate_count(CellType cell) noexcept {
  switch (cell) {
    case CellType::lstm: return 4;
    case CellType::gru: return 3;
    default: return 1;
  }
}

const char* to_string(RnnStepKernel kernel) noexcept {
  switch (kernel) {
    case RnnStepKernel::automatic: return "automatic";
    case RnnStepKernel::subgroup_dot: return "subgroup_dot";
    case RnnStepKernel::invocation_dot: return "invocation_dot";
  }
  return "?";
}

const char* to_string(RnnPath path) noexcept {
  switch (path) {
    case RnnPath::automatic: return "automatic";
    case RnnPath::per_step: return "per_step";
    case RnnPath::fused: return "fused";
  }
  return "?";
}

struct Rnn::Impl {
  Context* ctx;
  RnnConfig cfg;
  OpOptions opts;
  RnnPath forced = RnnPath::automatic;
  std::size_t D, G, H, HO, P, L;
  std::uint32_t cell_id;
  RnnStepKernel forced_step = RnnStepKernel::automatic;
  std::size_t forced_run = 0;  // set_steps_per_dispatch (0: automatic)
  Gemm gemm;
  Tensor null;  // the Context's buffer for unused bindings

  // A weight matrix, both directions' rows stacked (direction d's block starts at row d * rows
  // / D), stored as `storage` says. set_parameter writes one block, so the host keeps the whole
  // matrix: the floats (f32, f16) or, for int8, q and the per-row scales -- each row quantized
  // on its own (quantize_rows), or a file's int8 block kept as it is (set_quantized).
  struct Matrix {
    std::size_t rows = 0, cols = 0;
    std::vector<float> host;
    QuantizedRows q;
    Tensor dev;
    // W_hh and W_ih on CPU drivers: stored in blocks of this many hidden units of pack_gates
    // gates (ops::pack_gate_blocks; W_hh: G per direction, plan::Rnn::pack_units; W_ih: D x G,
    // both directions in one block, plan::input_pack_units); 0: row-major. Same size either way.
    std::size_t pack_units = 0, pack_gates = 0;
    // The device row stride: int8 rows are whole 32-bit words (the kernels' WEIGHT_I8 layout,
    // Gemm::record_i8's), with the rows' f32 scales after them.
    std::size_t ld() const { return dev.dtype() == DType::i8 ? ops::i8_row_stride(cols) : cols; }
    std::size_t scale_offset() const { return rows * ld(); }
    MatrixView view() const { return {dev, rows, cols, 0, ld()}; }
  };
  // Device layout per layer: both directions stacked, so one GEMM projects the input for both
  // and one dispatch steps both.
  struct Layer {
    std::size_t in = 0;
    Matrix w_ih, w_hh, w_hr;
    std::vector<float> b_ih, b_hh;  // host copies (set_parameter writes a block)
    Tensor tb_ih, tb_hh;
  };
  WeightStorage storage = WeightStorage::f32;  // of the weight matrices (opts resolved)
  std::vector<Layer> layers;

  struct Param {
    std::string name;
    Shape shape;
    std::size_t layer, dir;
    Kind kind;
    bool set = false;
  };
  std::vector<Param> params;

  // Scratch reused between calls (grown on demand). Work on one Context runs in queue order
  // behind each sequence's entry barrier, so sequences recorded from this op may share it.
  struct Scratch {
    std::size_t B = 0, T = 0;
    Tensor xp, layer_out, hbuf[2], hraw, hn, cn, lengths;
    std::size_t step_B = 0;
    Tensor xp_step, hraw_step;
  };
  mutable std::mutex mutex;
  mutable Scratch scratch;

  Impl(Context& c, const RnnConfig& config, const OpOptions& o)
      : ctx(&c), cfg(config), opts(o), gemm(c, o) {
    if (cfg.input_size == 0 || cfg.hidden_size == 0 || cfg.num_layers == 0) {
      throw Error(ErrorCode::invalid_argument,
                  fmt::format("{}: input_size ({}), hidden_size ({}) and num_layers ({}) must be positive",
                              kOp, cfg.input_size, cfg.hidden_size, cfg.num_layers));
    }
    if (cfg.proj_size && cfg.cell != CellType::lstm) {
      throw Error(ErrorCode::invalid_argument,
                  fmt::format("{}: proj_size = {} is only supported for LSTM (cell is {}), as in PyTorch",
                              kOp, cfg.proj_size, to_string(cfg.cell)));
    }
    if (cfg.proj_size >= cfg.hidden_size && cfg.proj_size) {
      throw Error(ErrorCode::invalid_argument,
                  fmt::format("{}: proj_size ({}) must be smaller than hidden_size ({}), as in PyTorch",
                              kOp, cfg.proj_size, cfg.hidden_size));
    }
    storage = plan::weight_storage(opts);
    if (storage == WeightStorage::f16 && !c.features().storage_buffer_16bit) {
      throw Error(ErrorCode::missing_feature,
                  fmt::format("{}: f16 weights (fp16_storage or weight_storage f16) need storageBuffer16BitAccess, "
                              "which '{}' lacks (or the adopted VkDevice did not enable)", kOp, c.device().name));
    }
    D = cfg.bidirectional ? 2 : 1;
    G = gate_count(cfg.cell);
    H = cfg.hidden_size;
    P = cfg.proj_size;
    HO = P ? P : H;
    L = cfg.num_layers;
    cell_id = static_cast<std::uint32_t>(cfg.cell);  // rnn_tanh 0, rnn_relu 1, lstm 2, gru 3
    // Devices whose limits the kernels exceed (storage buffers per stage) refuse here.
    const plan::Rnn layout = plan_for(1);  // its packing (below) is the same for every B
    plan::require(c.device(), layout.needs, kOp);
    null = kernels::null_tensor(c);

    // The weight matrices (W_ih through the Gemm, W_hh, W_hr) are f32, half or int8 on the
    // device; biases, states and all arithmetic stay fp32.
    layers.resize(L);
    for (std::size_t l = 0; l < L; ++l) {
      Layer& ly = layers[l];
      ly.in = l == 0 ? cfg.input_size : D * HO;
      ly.b_ih.assign(D * G * H, 0.0f);
      ly.b_hh.assign(D * G * H, 0.0f);
      const std::string sl = std::to_string(l);
      ly.w_ih = matrix(D * G * H, ly.in, "Rnn.weight_ih_l" + sl);
      ly.w_hh = matrix(D * G * H, HO, "Rnn.weight_hh_l" + sl);
      ly.w_ih.pack_units = plan::input_pack_units(layout, storage, ly.in);
      ly.w_ih.pack_gates = D * G;
      ly.w_hh.pack_units = layout.pack_units;
      ly.w_hh.pack_gates = G;
      ly.tb_ih = c.tensor({D * G * H}, DType::f32, "Rnn.bias_ih_l" + sl);
      ly.tb_hh = c.tensor({D * G * H}, DType::f32, "Rnn.bias_hh_l" + sl);
      c.write(ly.tb_ih, ly.b_ih);  // zeros stay when bias = false
      c.write(ly.tb_hh, ly.b_hh);
      if (P) ly.w_hr = matrix(D * P, H, "Rnn.weight_hr_l" + sl);
      for (std::size_t d = 0; d < D; ++d) {
        const std::string sfx = sl + (d ? "_reverse" : "");
        params.push_back({"weight_ih_l" + sfx, {G * H, ly.in}, l, d, Kind::w_ih});
        params.push_back({"weight_hh_l" + sfx, {G * H, HO}, l, d, Kind::w_hh});
        if (cfg.bias) {
          params.push_back({"bias_ih_l" + sfx, {G * H}, l, d, Kind::b_ih});
          params.push_back({"bias_hh_l" + sfx, {G * H}, l, d, Kind::b_hh});
        }
        if (P) params.push_back({"weight_hr_l" + sfx, {P, H}, l, d, Kind::w_hr});
      }
    }
  }

  Matrix matrix(std::size_t rows, std::size_t cols, const std::string& name) const {
    Matrix m;
    m.rows = rows;
    m.cols = cols;
    if (storage == WeightStorage::i8) {
      m.q = {std::vector<std::int8_t>(rows * cols, 0), std::vector<float>(rows, 0.0f)};
      m.dev = ctx->tensor({rows * ops::i8_row_stride(cols) + 4 * rows}, DType::i8, name + " (int8 rows, f32 scales)");
    } else {
      m.host.assign(rows * cols, 0.0f);
      m.dev = ctx->tensor({rows, cols}, storage == WeightStorage::f16 ? DType::f16 : DType::f32, name);
    }
    return m;
  }

  // Rearranges a matrix's device rows (m.rows of `ld` elements, whole 16-byte units: plan::rnn)
  // into its layout, Matrix::pack_units; row-major ones stay.
  template <class T>
  void arrange(const Matrix& m, std::span<T> rows, std::size_t ld) const {
    if (!m.pack_units) return;
    const std::vector<T> packed =
        ops::pack_gate_blocks<T>(rows, m.rows / (m.pack_gates * H), m.pack_gates, H, ld, 16 / sizeof(T), m.pack_units);
    std::copy(packed.begin(), packed.end(), rows.begin());
  }

  // Writes the whole matrix to the device in its storage and layout.
  void upload(const Matrix& m) const {
    if (storage == WeightStorage::i8) {
      std::vector<std::int8_t> bytes = ops::pack_i8(m.q.q, m.q.scales, m.cols, m.ld());
      arrange(m, std::span(bytes).first(m.rows * m.ld()), m.ld());  // the rows, not the scales after them
      ctx->write(m.dev, bytes);
    } else if (storage == WeightStorage::f16) {
      std::vector<std::uint16_t> half(m.host.size());
      std::transform(m.host.begin(), m.host.end(), half.begin(), float_to_half);
      arrange(m, std::span(half), m.cols);
      ctx->write(m.dev, half);
    } else if (m.pack_units) {
      std::vector<float> floats = m.host;
      arrange(m, std::span(floats), m.cols);
      ctx->write(m.dev, floats);
    } else {
      ctx->write(m.dev, m.host);
    }
  }

  // Sets block `dir` (rows / D rows) of a matrix from floats, quantizing them for int8.
  void set_block(Matrix& m, std::size_t dir, std::span<const float> data) const {
    const std::size_t rows = data.size() / m.cols;
    if (storage == WeightStorage::i8) {
      const QuantizedRows q = quantize_rows(data, rows, m.cols);
      set_block_i8(m, dir, q.q, q.scales);
      return;
    }
    std::copy(data.begin(), data.end(), m.host.begin() + static_cast<std::ptrdiff_t>(dir * rows * m.cols));
    upload(m);
  }
  // The same from int8 values and their row scales (an i8 matrix).
  void set_block_i8(Matrix& m, std::size_t dir, std::span<const std::int8_t> q, std::span<const float> scales) const {
    const std::size_t r0 = dir * scales.size();
    std::copy(q.begin(), q.end(), m.q.q.begin() + static_cast<std::ptrdiff_t>(r0 * m.cols));
    std::copy(scales.begin(), scales.end(), m.q.scales.begin() + static_cast<std::ptrdiff_t>(r0));
    upload(m);
  }

  // The parameter called `name`: Error(not_found) listing the expected names otherwise.
  Param& param(const std::string& name) {
    auto it = std::find_if(params.begin(), params.end(), [&](const Param& p) { return p.name == name; });
    if (it == params.end()) {
      std::vector<std::string> names;
      for (const auto& p : params) names.push_back(p.name);
      throw Error(ErrorCode::not_found,
                  fmt::format("{}({}): no parameter '{}'; expected {}", kOp, to_string(cfg.cell), name,
                              fmt::join(names, ", ")));
    }
    return *it;
  }
  Matrix* matrix_of(const Param& p) {
    Layer& ly = layers[p.layer];
    switch (p.kind) {
      case Kind::w_ih: return &ly.w_ih;
      case Kind::w_hh: return &ly.w_hh;
      case Kind::w_hr: return &ly.w_hr;
      default: return nullptr;
    }
  }

  bool loaded() const {
    return std::all_of(params.begin(), params.end(), [](const Param& p) { return p.set; });
  }

  void set(const std::string& name, std::span<const float> data, const Shape& shape) {
    Param& p = param(name);
    if ((!shape.empty() && shape != p.shape) || data.size() != element_count(p.shape)) {
      throw Error(ErrorCode::invalid_argument,
                  fmt::format("{}({}): parameter '{}': expected shape {} ({} values), got {}", kOp,
                              to_string(cfg.cell), name, to_string(p.shape), element_count(p.shape),
                              shape.empty() ? fmt::format("{} values", data.size())
                                            : fmt::format("{} ({} values)", to_string(shape), data.size())));
    }
    if (Matrix* m = matrix_of(p)) {
      set_block(*m, p.dir, data);
    } else {
      Layer& ly = layers[p.layer];
      std::vector<float>& host = p.kind == Kind::b_ih ? ly.b_ih : ly.b_hh;
      std::copy(data.begin(), data.end(), host.begin() + static_cast<std::ptrdiff_t>(p.dir * data.size()));
      ctx->write(p.kind == Kind::b_ih ? ly.tb_ih : ly.tb_hh, host);
    }
    p.set = true;
  }

  void set_quantized(const std::string& name, std::span<const std::int8_t> q, const Shape& q_shape,
                     std::span<const float> scales) {
    Param& p = param(name);
    Matrix* m = matrix_of(p);
    if (!m) {
      throw Error(ErrorCode::invalid_argument,
                  fmt::format("{}({}): parameter '{}' is a bias: only the weight matrices take int8 values", kOp,
                              to_string(cfg.cell), name));
    }
    const std::size_t rows = p.shape[0];
    if (q_shape != p.shape || q.size() != element_count(p.shape) || scales.size() != rows) {
      throw Error(ErrorCode::invalid_argument,
                  fmt::format("{}({}): int8 parameter '{}': expected q {} ({} values) and {} scales, got q {} ({} "
                              "values) and {} scales", kOp, to_string(cfg.cell), name, to_string(p.shape),
                              element_count(p.shape), rows, to_string(q_shape), q.size(), scales.size()));
    }
    if (const std::size_t r = ops::first_bad_scale(scales); r < rows) {
      throw Error(ErrorCode::invalid_argument,
                  fmt::format("{}({}): int8 parameter '{}': scale of row {} is {}; scales must be finite and >= 0",
                              kOp, to_string(cfg.cell), name, r, scales[r]));
    }
    if (storage == WeightStorage::i8) {
      set_block_i8(*m, p.dir, q, scales);
    } else {
      set_block(*m, p.dir, dequantize_rows(q, scales, p.shape[1]));
    }
    p.set = true;
  }

  void require_loaded() const {
    if (loaded()) return;
    std::vector<std::string> missing;
    for (const auto& p : params)
      if (!p.set) missing.push_back(p.name);
    throw Error(ErrorCode::state,
                fmt::format("{}({}): used before every parameter was loaded; missing {}", kOp,
                            to_string(cfg.cell), fmt::join(missing, ", ")));
  }

  // --- kernel choices (src/plan.hpp) ---------------------------------------------------
  plan::RnnLayer layer() const { return {cfg.cell, H, P, D}; }
  plan::Rnn plan_for(std::size_t B) const {
    return plan::rnn(ctx->device(), layer(), opts, B, {forced, forced_step, forced_run});
  }

  // --- scratch --------------------------------------------------------------------------
  Scratch& scratch_for(std::size_t B, std::size_t T) const {
    Scratch& s = scratch;
    if (s.B != B || s.T != T) {
      s.xp = ctx->tensor({B * T, D * G * H}, DType::f32, "Rnn scratch xp");
      s.layer_out = L > 1 ? ctx->tensor({B, T, D * HO}, DType::f32, "Rnn scratch layer output") : Tensor{};
      s.hbuf[0] = ctx->tensor({D * B * HO}, DType::f32, "Rnn scratch h ping");
      s.hbuf[1] = ctx->tensor({D * B * HO}, DType::f32, "Rnn scratch h pong");
      s.hraw = P ? ctx->tensor({D * B * H}, DType::f32, "Rnn scratch h_raw") : Tensor{};
      s.hn = ctx->tensor({L * D, B, HO}, DType::f32, "Rnn scratch h_n");
      s.cn = cfg.cell == CellType::lstm ? ctx->tensor({L * D, B, H}, DType::f32, "Rnn scratch c_n") : Tensor{};
      s.lengths = ctx->tensor({B}, DType::i32, "Rnn scratch lengths");
      s.B = B;
      s.T = T;
    }
    return s;
  }

  Groups grid(std::uint64_t x, std::uint64_t y, std::uint64_t z) const {
    const auto& m = ctx->device().max_workgroup_count;
    if (x > m[0] || y > m[1] || z > m[2]) {
      throw Error(ErrorCode::out_of_range,
                  fmt::format("{}: {} x {} x {} workgroups exceed the device grid {} x {} x {}", kOp, x,
                              y, z, m[0], m[1], m[2]));
    }
    return {static_cast<std::uint32_t>(x), static_cast<std::uint32_t>(y), static_cast<std::uint32_t>(z)};
  }

  // --- recording ------------------------------------------------------------------------
  // A layer's output [B, T, D * HO].
  OutLayout output_layout(std::size_t T) const {
    return {0, u32(HO, "H_out"), u32(T * D * HO, "out row"), u32(D * HO, "out step")};
  }
  // The sizes and strides of a [B, T] batch with xp [B, T, D*G*H]; the caller sets the step
  // and the state offsets.
  CellPush cell_push(std::size_t B, std::size_t T, std::uint32_t flags) const {
    CellPush p{};
    p.B = u32(B, "B");
    p.T = u32(T, "T");
    p.H = u32(H, "H");
    p.HO = u32(HO, "H_out");
    p.xp_ldb = u32(T * D * G * H, "xp row");
    p.xp_ldt = u32(D * G * H, "xp step");
    p.out = output_layout(T);
    p.flags = flags;
    return p;
  }
  // The same step with a projection (RNN_RAW_H): the cell writes o * tanh(c) to h_raw
  // [D][B][H] and rnn_proj makes h from it.
  CellPush raw_push(CellPush p, std::size_t B) const {
    p.out = {0, u32(B * H, "h_raw block"), u32(H, "H"), 0};
    p.flags |= RNN_RAW_H;
    return p;
  }

  // xp = x W_ih^T + b_ih (the GEMM before the recurrent kernels), int8 weights included, in
  // W_ih's layout (xp keeps PyTorch's row order either way).
  void input_gemm(Sequence& seq, const Layer& ly, const MatrixView& x, const MatrixView& xp) const {
    const bool i8 = storage == WeightStorage::i8;
    const Gemm::Packing packing{.gate_units = u32(ly.w_ih.pack_units, "W_ih blocks"), .gate_h = u32(H, "H")};
    gemm.record_any(seq, x, ly.w_ih.view(), i8, i8 ? ly.w_ih.scale_offset() : 0, packing, ly.tb_ih, 0, xp);
  }

  // rnn_step / rnn_seq: c is the running cell state (LSTM), updated in place. Empty tensors
  // bind the null buffer or the write sink: the flags keep the kernels from touching them.
  // x: rnn_step's input when the push has RNN_X_INLINE (W_ih and b_ih come from the layer).
  template <class K>
  void dispatch_cell(Sequence& seq, const Kernel& k, const Tensor& xp, const Layer& ly, const Tensor& h_prev,
                     const Tensor& h_next, const Tensor& c0, const Tensor& c, const Tensor& output,
                     const Tensor& lengths, const CellPush& p, Groups g,
                     const Tensor& x = {}) const {
    typename K::Bindings b{.xp = xp, .ws = ly.w_hh.dev, .b_hh = ly.tb_hh, .hs = h_prev, .hn = h_next, .c0 = c0,
                           .cs = c, .outs = output, .lengths = lengths};
    if constexpr (std::is_same_v<K, kernels::RnnStep>) {
      if ((p.flags & RNN_X_INLINE) != 0) {
        b.xs = x;
        b.wis = ly.w_ih.dev;
        b.b_ih = ly.tb_ih;
      }
    }
    kernels::dispatch<K>(seq, k, b, p, g, null);
  }

  // Dispatch i of a layer, steps [s0, s1) (one step on the per-step path, a run on the fused
  // path): h comes from h0 (or zero) into the first dispatch and leaves through h_n from the
  // last, through the ping-pong scratch between them; c starts from c0 (or zero) in the first
  // and continues in c (c_n) after it.
  struct Dispatch {
    Tensor h_prev, h_next, c0;
    CellPush push;
  };
  Dispatch layer_dispatch(std::size_t B, std::size_t T, std::size_t i, std::size_t s0, std::size_t s1, bool last,
                          std::uint32_t len_flag, const Tensor& h0, const Tensor& c0, const Tensor& h_n,
                          std::uint32_t state_off, std::uint32_t cell_off) const {
    const bool first = i == 0;
    Dispatch d{first ? h0 : scratch.hbuf[(i - 1) & 1], last ? h_n : scratch.hbuf[i & 1], first ? c0 : Tensor{}, {}};
    const std::uint32_t h_zero = first && !h0.valid() ? RNN_H_ZERO : 0;
    d.push = cell_push(B, T, len_flag | h_zero | (first ? (c0.valid() ? RNN_C_FROM_C0 : RNN_C_ZERO) : 0));
    d.push.s = u32(s0, "step");
    d.push.s_end = u32(s1, "step");
    d.push.h_prev_off = first && h0.valid() ? state_off : 0;
    d.push.h_next_off = last ? state_off : 0;
    d.push.c0_off = d.push.c_off = cell_off;
    return d;
  }

  // rnn_seq: steps [0, steps) of one layer, in runs of plan.run steps. h passes between runs
  // through the h ping-pong scratch, c stays in `c`.
  void record_fused_layer(Sequence& seq, const plan::RnnFused& plan, const Layer& ly, std::size_t B,
                          std::size_t T, std::size_t steps, std::uint32_t len_flag, const Tensor& h0,
                          const Tensor& c0, const Tensor& h_n, const Tensor& c, const Tensor& output,
                          const Tensor& lengths, std::uint32_t state_off, std::uint32_t cell_off) const {
    using K = kernels::RnnSeq;
    const Kernel k = kernels::make<K>(*ctx, plan.constants, plan.variant);
    const Groups g = grid((B + plan.constants.BB - 1) / plan.constants.BB, 1, D);
    const std::size_t run = plan.run;  // >= 1 on the fused path
    for (std::size_t s0 = 0, i = 0; s0 < steps; s0 += run, ++i) {
      const std::size_t s1 = std::min(steps, s0 + run);
      const Dispatch d = layer_dispatch(B, T, i, s0, s1, s1 == steps, len_flag, h0, c0, h_n, state_off, cell_off);
      dispatch_cell<K>(seq, k, scratch.xp, ly, d.h_prev, d.h_next, d.c0, c, output, lengths, d.push, g);
    }
  }

  // rnn_proj: h_next = W_hr h_raw for this step (cell.s, cell.h_prev_off / h_next_off).
  void dispatch_proj(Sequence& seq, const plan::RnnSteps& plan, const Tensor& h_raw, const Layer& ly,
                     const Tensor& h_prev, const Tensor& h_next, const Tensor& output, const Tensor& lengths,
                     const CellPush& cell, std::uint32_t flags, std::size_t B,
                     const OutLayout* out_layout = nullptr) const {
    using K = kernels::RnnProj;
    const Kernel k = kernels::make<K>(*ctx, plan.proj, plan.proj_variant);
    K::Push q{};
    q.s = cell.s;
    q.B = cell.B;
    q.T = cell.T;
    q.H = cell.H;
    q.P = u32(P, "proj_size");
    q.h_prev_off = cell.h_prev_off;
    q.h_next_off = cell.h_next_off;
    q.out = out_layout ? *out_layout : output_layout(cell.T);
    q.flags = flags;
    kernels::dispatch<K>(seq, k,
                         {.raws = h_raw, .ws = ly.w_hr.dev, .h_prev = h_prev, .h_next = h_next, .outs = output,
                          .lengths = lengths},
                         q, grid((P + plan.proj.UNITS - 1) / plan.proj.UNITS, (B + plan.proj.BB - 1) / plan.proj.BB, D),
                         null);
  }
};

Rnn::Rnn(Context& ctx, const RnnConfig& config, const OpOptions& options)
    : impl_(std::make_unique<Impl>(ctx, config, options)) {}
Rnn::Rnn(Rnn&&) noexcept = default;
Rnn& Rnn::operator=(Rnn&&) noexcept = default;
Rnn::~Rnn() = default;

const RnnConfig& Rnn::config() const { return impl_->cfg; }
std::size_t Rnn::directions() const { return impl_->D; }
std::size_t Rnn::output_size() const { return impl_->HO; }
bool Rnn::loaded() const { return impl_->loaded(); }
RnnPath Rnn::path_for(std::size_t batch) const { return impl_->plan_for(batch).path; }
void Rnn::set_path(RnnPath path) { impl_->forced = path; }
void Rnn::set_step_kernel(RnnStepKernel kernel) { impl_->forced_step = kernel; }
std::size_t Rnn::steps_per_dispatch(std::size_t batch) const {
  const plan::Rnn p = impl_->plan_for(batch);
  return p.path == RnnPath::fused ? static_cast<std::size_t>(p.fused.run) : 1;
}
void Rnn::set_steps_per_dispatch(std::size_t steps) { impl_->forced_run = steps; }
RnnStepKernel Rnn::step_kernel() const {
  const Impl& m = *impl_;  // whatever path is pinned
  return plan::rnn(m.ctx->device(), m.layer(), m.opts, 1, {RnnPath::automatic, m.forced_step, 0}).step_kernel;
}

std::vector<std::pair<std::string, Shape>> Rnn::parameter_shapes() const {
  std::vector<std::pair<std::string, Shape>> v;
  for (const auto& p : impl_->params) v.emplace_back(p.name, p.shape);
  return v;
}

void Rnn::set_parameter(const std::string& name, std::span<const float> data, const Shape& shape) {
  impl_->set(name, data, shape);
}

void Rnn::set_parameter_quantized(const std::string& name, std::span<const std::int8_t> q, const Shape& q_shape,
                                  std::span<const float> scales) {
  impl_->set_quantized(name, q, q_shape, scales);
}

WeightStorage Rnn::weight_storage() const { return impl_->storage; }

void Rnn::load(const std::map<std::string, std::span<const float>>& state_dict) {
  std::vector<std::string> unexpected, missing;
  for (const auto& entry : state_dict) {
    // Not a structured binding: clang before 16 cannot capture one in a lambda.
    const std::string& name = entry.first;
    if (std::none_of(impl_->params.begin(), impl_->params.end(),
                     [&](const Impl::Param& p) { return p.name == name; }))
      unexpected.push_back(name);
  }
  for (const auto& p : impl_->params)
    if (!state_dict.count(p.name)) missing.push_back(p.name);
  if (!unexpected.empty() || !missing.empty()) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{}({}).load: state_dict does not match: missing [{}], unexpected [{}]", kOp,
                            to_string(impl_->cfg.cell), fmt::join(missing, ", "), fmt::join(unexpected, ", ")));
  }
  for (const auto& [name, data] : state_dict) impl_->set(name, data, {});
}

void Rnn::load(const std::map<std::string, std::vector<float>>& state_dict) {
  std::map<std::string, std::span<const float>> spans;
  for (const auto& [name, data] : state_dict) spans.emplace(name, std::span<const float>(data));
  load(spans);
}

void Rnn::record(Sequence& seq, const Tensor& x, const Tensor& lengths, const Tensor& h0,
                 const Tensor& c0, const Tensor& output, const Tensor& h_n, const Tensor& c_n,
                 std::span<const std::int32_t> host_lengths) const {
  const Impl& m = *impl_;
  m.require_loaded();
  const bool lstm = m.cfg.cell == CellType::lstm;
  if (!x.valid() || x.dtype() != DType::f32 || x.rank() != 3 || x.dim(2) != m.cfg.input_size ||
      x.dim(0) == 0 || x.dim(1) == 0) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{}: argument 'x': expected f32 [B, T, {}] with B, T >= 1, got {}", kOp,
                            m.cfg.input_size, describe(x)));
  }
  const std::size_t B = x.dim(0), T = x.dim(1);
  const std::size_t L = m.L, D = m.D, H = m.H, HO = m.HO, G = m.G;
  if (lengths.valid()) expect_tensor(lengths, "lengths", {B}, DType::i32);
  if (h0.valid()) expect_tensor(h0, "h0", {L * D, B, HO}, DType::f32);
  if (c0.valid()) {
    if (!lstm) throw Error(ErrorCode::invalid_argument, fmt::format("{}: c0 given for a {} layer", kOp, to_string(m.cfg.cell)));
    expect_tensor(c0, "c0", {L * D, B, H}, DType::f32);
  }
  expect_tensor(output, "out", {B, T, D * HO}, DType::f32);
  if (h_n.valid()) expect_tensor(h_n, "h_n", {L * D, B, HO}, DType::f32);
  if (c_n.valid()) {
    if (!lstm) throw Error(ErrorCode::invalid_argument, fmt::format("{}: c_n given for a {} layer", kOp, to_string(m.cfg.cell)));
    expect_tensor(c_n, "c_n", {L * D, B, H}, DType::f32);
  }
  // Outputs are written while other workgroups still read the inputs.
  for (auto [o, oname] : {std::pair{&output, "out"}, std::pair{&h_n, "h_n"}, std::pair{&c_n, "c_n"}}) {
    for (auto [i, iname] : {std::pair{&x, "x"}, std::pair{&lengths, "lengths"}, std::pair{&h0, "h0"}, std::pair{&c0, "c0"}}) {
      if (same_memory(*o, *i)) {
        throw Error(ErrorCode::invalid_argument,
                    fmt::format("{}: '{}' and '{}' share memory; use distinct tensors", kOp, oname, iname));
      }
    }
  }
  if (same_memory(output, h_n) || same_memory(output, c_n) || same_memory(h_n, c_n)) {
    throw Error(ErrorCode::invalid_argument, fmt::format("{}: out, h_n and c_n must be distinct tensors", kOp));
  }
  std::size_t steps = T;
  if (!host_lengths.empty()) {
    if (host_lengths.size() != B) {
      throw Error(ErrorCode::invalid_argument,
                  fmt::format("{}: {} host lengths for a batch of {}", kOp, host_lengths.size(), B));
    }
    std::int32_t longest = 0;
    for (std::size_t b = 0; b < B; ++b) {
      if (host_lengths[b] < 0 || static_cast<std::size_t>(host_lengths[b]) > T) {
        throw Error(ErrorCode::invalid_argument,
                    fmt::format("{}: lengths[{}] = {} is outside [0, T = {}]", kOp, b, host_lengths[b], T));
      }
      longest = std::max(longest, host_lengths[b]);
    }
    steps = std::max<std::size_t>(1, static_cast<std::size_t>(longest));  // >= 1: h_n is written by a step
  }

  std::lock_guard lock(m.mutex);
  Impl::Scratch& s = m.scratch_for(B, T);
  Tensor len_t = lengths;
  std::uint32_t len_flag = 0;
  if (!len_t.valid()) {
    if (!host_lengths.empty()) {
      seq.upload(s.lengths, host_lengths);
      len_t = s.lengths;
    } else {
      len_flag = RNN_NO_LENGTHS;
    }
  }
  const Tensor hn_t = h_n.valid() ? h_n : s.hn;
  const Tensor cn_t = lstm ? (c_n.valid() ? c_n : s.cn) : Tensor{};
  const plan::Rnn plan = m.plan_for(B);
  const RnnPath path = plan.path;
  if (path == RnnPath::per_step) plan::require_step_budget(plan, m.layer());  // before recording

  for (std::size_t l = 0; l < L; ++l) {
    const Impl::Layer& ly = m.layers[l];
    const Tensor& src = l == 0 ? x : s.layer_out;
    const Tensor& dst = l + 1 == L ? output : s.layer_out;
    m.input_gemm(seq, ly, MatrixView{src, B * T, ly.in, 0, ly.in}, MatrixView{s.xp, B * T, D * G * H, 0, D * G * H});
    const std::uint32_t state_off = u32(l * D * B * HO, "state offset");
    const std::uint32_t cell_off = u32(l * D * B * H, "cell offset");

    if (steps < T) seq.fill(dst, 0);  // positions past the longest sequence: no step visits them
    if (path == RnnPath::fused) {
      m.record_fused_layer(seq, plan.fused, ly, B, T, steps, len_flag, h0, c0, hn_t, cn_t, dst, len_t, state_off,
                           cell_off);
      continue;
    }
    const auto& c = plan.steps.constants;
    const Kernel k = kernels::make<kernels::RnnStep>(*m.ctx, c, plan.steps.variant);
    const Groups g = m.grid((H + c.UNITS - 1) / c.UNITS, (B + c.BB - 1) / c.BB, D);
    for (std::size_t st = 0; st < steps; ++st) {
      const Impl::Dispatch d =
          m.layer_dispatch(B, T, st, st, st + 1, st + 1 == steps, len_flag, h0, c0, hn_t, state_off, cell_off);
      if (!m.P) {
        m.dispatch_cell<kernels::RnnStep>(seq, k, s.xp, ly, d.h_prev, d.h_next, d.c0, cn_t, dst, len_t, d.push, g);
        continue;
      }
      // LSTM with projection: cell -> h_raw, then h = W_hr h_raw with the masking.
      m.dispatch_cell<kernels::RnnStep>(seq, k, s.xp, ly, d.h_prev, {}, d.c0, cn_t, s.hraw, len_t,
                                        m.raw_push(d.push, B), g);
      m.dispatch_proj(seq, plan.steps, s.hraw, ly, d.h_prev, d.h_next, dst, len_t, d.push,
                      len_flag | (d.push.flags & RNN_H_ZERO), B);
    }
  }
}

Rnn::Result Rnn::forward(std::span<const float> x, std::size_t batch, std::size_t steps,
                         std::span<const std::int32_t> lengths, std::span<const float> h0,
                         std::span<const float> c0) const {
  const Impl& m = *impl_;
  const bool lstm = m.cfg.cell == CellType::lstm;
  if (batch == 0 || steps == 0 || x.size() != batch * steps * m.cfg.input_size) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{}::forward: {} values for x [B = {}, T = {}, {}]", kOp, x.size(), batch,
                            steps, m.cfg.input_size));
  }
  const std::size_t LD = m.L * m.D;
  if (!h0.empty() && h0.size() != LD * batch * m.HO) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{}::forward: {} values for h0 [{}, {}, {}]", kOp, h0.size(), LD, batch, m.HO));
  }
  if (!c0.empty() && (!lstm || c0.size() != LD * batch * m.H)) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{}::forward: {} values for c0 [{}, {}, {}]{}", kOp, c0.size(), LD, batch, m.H,
                            lstm ? "" : " (only LSTM has c0)"));
  }
  Context& ctx = *m.ctx;
  const Tensor xt = ctx.tensor({batch, steps, m.cfg.input_size}, DType::f32, "Rnn.forward x");
  const Tensor out = ctx.tensor({batch, steps, m.D * m.HO}, DType::f32, "Rnn.forward out");
  const Tensor hn = ctx.tensor({LD, batch, m.HO}, DType::f32, "Rnn.forward h_n");
  const Tensor cn = lstm ? ctx.tensor({LD, batch, m.H}, DType::f32, "Rnn.forward c_n") : Tensor{};
  Tensor lt, h0t, c0t;
  Sequence seq = ctx.sequence({.label = "Rnn::forward"});
  seq.upload(xt, x);
  if (!lengths.empty()) {
    lt = ctx.tensor({batch}, DType::i32, "Rnn.forward lengths");
    if (lengths.size() == batch) seq.upload(lt, lengths);  // a wrong count is reported by record()
  }
  if (!h0.empty()) {
    h0t = ctx.tensor({LD, batch, m.HO}, DType::f32, "Rnn.forward h0");
    seq.upload(h0t, h0);
  }
  if (!c0.empty()) {
    c0t = ctx.tensor({LD, batch, m.H}, DType::f32, "Rnn.forward c0");
    seq.upload(c0t, c0);
  }
  record(seq, xt, lt, h0t, c0t, out, hn, cn, lengths);
  seq.download(out).download(hn);
  if (lstm) seq.download(cn);
  seq.eval();
  Result r;
  r.output = seq.read<float>(out);
  r.h_n = seq.read<float>(hn);
  if (lstm) r.c_n = seq.read<float>(cn);
  return r;
}

namespace {

std::size_t row_stride(const MatrixView& v) { return v.ld ? v.ld : v.cols; }

// Whether a view is an f32 matrix lying inside its tensor.
bool f32_view_fits(const MatrixView& v) {
  return v.tensor.valid() && v.tensor.dtype() == DType::f32 && row_stride(v) >= v.cols &&
         (v.rows == 0 || v.offset + (v.rows - 1) * row_stride(v) + v.cols <= v.tensor.size());
}

using ops::views_overlap;

}  // namespace

void Rnn::step(Sequence& seq, const Tensor& x, const Tensor& h, const Tensor& h_out, const Tensor& c,
               const Tensor& c_out) const {
  if (x.valid() && x.rank() != 2) {  // the view overload checks the rest
    throw Error(ErrorCode::invalid_argument, fmt::format("{}::step: argument 'x': expected f32 [B, {}], got {}", kOp,
                                                         impl_->cfg.input_size, describe(x)));
  }
  step(seq, x.valid() ? MatrixView::of(x) : MatrixView{}, h, h_out, c, c_out);
}

void Rnn::step(Sequence& seq, const MatrixView& xv, const Tensor& h, const Tensor& h_out, const Tensor& c,
               const Tensor& c_out, const MatrixView& out) const {
  const Impl& m = *impl_;
  m.require_loaded();
  const bool lstm = m.cfg.cell == CellType::lstm;
  if (m.D != 1) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{}::step: a bidirectional layer cannot run one step at a time", kOp));
  }
  const Tensor& x = xv.tensor;
  const std::size_t x_ld = row_stride(xv);
  if (xv.cols != m.cfg.input_size || xv.rows == 0 || !f32_view_fits(xv)) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{}::step: argument 'x': expected an f32 view of [B, {}] inside its tensor, got {} rows x "
                            "{} columns at offset {} (row stride {}) of {}",
                            kOp, m.cfg.input_size, xv.rows, xv.cols, xv.offset, x_ld, describe(x)));
  }
  const std::size_t B = xv.rows, L = m.L, H = m.H, HO = m.HO, G = m.G;
  const std::size_t out_ld = row_stride(out);
  if (out.tensor.valid()) {
    if (out.rows != B || out.cols != HO || !f32_view_fits(out)) {
      throw Error(ErrorCode::invalid_argument,
                  fmt::format("{}::step: argument 'out': expected an f32 view of [{}, {}] inside its tensor, got {} rows x "
                              "{} columns at offset {} (row stride {}) of {}",
                              kOp, B, HO, out.rows, out.cols, out.offset, out_ld, describe(out.tensor)));
    }
    // Disjoint columns of the same tensor are fine (one dispatch reads x and writes out).
    if (same_memory(out.tensor, x) && views_overlap(xv, out)) {
      throw Error(ErrorCode::invalid_argument, fmt::format("{}::step: 'out' overlaps 'x' in the same tensor", kOp));
    }
  }
  if (h.valid()) expect_tensor(h, "h", {L, B, HO}, DType::f32);
  expect_tensor(h_out, "h_out", {L, B, HO}, DType::f32);
  if (lstm) {
    if (c.valid()) expect_tensor(c, "c", {L, B, H}, DType::f32);
    expect_tensor(c_out, "c_out", {L, B, H}, DType::f32);
  } else if (c.valid() || c_out.valid()) {
    throw Error(ErrorCode::invalid_argument, fmt::format("{}::step: c / c_out given for a {} layer", kOp, to_string(m.cfg.cell)));
  }
  if (same_memory(h, h_out) || same_memory(x, h_out) || same_memory(x, c_out) || same_memory(h, c_out) ||
      same_memory(h_out, c_out)) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{}::step: h_out / c_out must not share memory with x or h (ping-pong two "
                            "state tensors); only c and c_out may be the same tensor", kOp));
  }

  std::lock_guard lock(m.mutex);
  Impl::Scratch& s = m.scratch;
  if (s.step_B != B) {
    s.xp_step = m.ctx->tensor({B, G * H}, DType::f32, "Rnn scratch step xp");
    s.hraw_step = m.P ? m.ctx->tensor({B * H}, DType::f32, "Rnn scratch step h_raw") : Tensor{};
    s.step_B = B;
  }
  const plan::Rnn plan = m.plan_for(B);
  plan::require_step_budget(plan, m.layer());
  const auto& kc = plan.steps.constants;
  const Kernel k = kernels::make<kernels::RnnStep>(*m.ctx, kc, plan.steps.variant);
  const Groups g = m.grid((H + kc.UNITS - 1) / kc.UNITS, (B + kc.BB - 1) / kc.BB, 1);
  const auto& dev = m.ctx->device();
  const std::uint32_t h_zero = h.valid() ? 0 : RNN_H_ZERO;
  for (std::size_t l = 0; l < L; ++l) {
    const Impl::Layer& ly = m.layers[l];
    const MatrixView src = l == 0 ? MatrixView{x, B, ly.in, xv.offset, x_ld} : MatrixView{h_out, B, HO, (l - 1) * B * HO, HO};
    // W_ih x + b_ih inside the step kernel (one dispatch, not a GEMM before it) where the planner
    // says so; the GEMM into xp otherwise.
    // With TEXEL, W_ih and x are read through texel views too: within the device's limit.
    const bool x_wide = plan::wide_rows(plan.steps.variant.fp16, kc.WEIGHT_I8, ly.in);
    const bool x_inline = plan::step_input_inline(dev, plan.steps, ly.in, x_wide) &&
                          (!kc.TEXEL || (plan::texel_loads(dev, ly.w_ih.dev.bytes()) &&
                                         plan::texel_loads(dev, src.tensor.bytes())));
    if (!x_inline) {
      m.input_gemm(seq, ly, src, MatrixView{s.xp_step, B, G * H, 0, G * H});
    }
    Kernel k_layer = k;
    if (x_inline) {
      kernels::RnnStep::Constants xc = kc;
      xc.X_ALIGNED = ly.in % 4 == 0 && src.offset % 4 == 0 && src.ld % 4 == 0;
      xc.X_WIDE = x_wide;
      xc.X_PACK_UNITS = u32(ly.w_ih.pack_units, "W_ih blocks");
      k_layer = kernels::make<kernels::RnnStep>(*m.ctx, xc, plan.steps.variant);  // the Context's cache
    }
    // One step of a [B, 1] batch (D = 1), writing only the state.
    CellPush p = m.cell_push(B, 1, RNN_NO_LENGTHS | RNN_NO_OUT | h_zero | (c.valid() ? RNN_C_FROM_C0 : RNN_C_ZERO) |
                                       (x_inline ? RNN_X_INLINE : 0u));
    p.h_prev_off = h.valid() ? u32(l * B * HO, "h offset") : 0;
    p.h_next_off = u32(l * B * HO, "h offset");
    p.c0_off = c.valid() ? u32(l * B * H, "c offset") : 0;
    p.c_off = u32(l * B * H, "c offset");
    p.x_off = u32(src.offset, "x offset");
    p.x_ld = u32(src.ld, "x row");
    p.IN = u32(ly.in, "input size");
    const Tensor& c_state = lstm ? c_out : Tensor{};
    // The top layer also writes h to `out` (the step's t = 0: out[offset + b * ld + j]).
    const bool to_out = out.tensor.valid() && l + 1 == L;
    const OutLayout out_layout{to_out ? u32(out.offset, "out offset") : 0u, 0u, to_out ? u32(out_ld, "out row") : 0u, 0u};
    if (!m.P) {
      if (to_out) {
        p.flags &= ~RNN_NO_OUT;
        p.out = out_layout;
      }
      m.dispatch_cell<kernels::RnnStep>(seq, k_layer, s.xp_step, ly, h, h_out, c, c_state, to_out ? out.tensor : Tensor{}, {}, p,
                                        g, src.tensor);
      continue;
    }
    m.dispatch_cell<kernels::RnnStep>(seq, k_layer, s.xp_step, ly, h, {}, c, c_state, s.hraw_step, {}, m.raw_push(p, B), g,
                                      src.tensor);
    m.dispatch_proj(seq, plan.steps, s.hraw_step, ly, h, h_out, to_out ? out.tensor : Tensor{}, {}, p,
                    RNN_NO_LENGTHS | (to_out ? 0u : RNN_NO_OUT) | h_zero, B, to_out ? &out_layout : nullptr);
  }
}

}  // namespace vkrnn
