// Shared by the recurrent kernels (rnn_step.comp, rnn_seq.comp, rnn_proj.comp): the recurrent
// weight matrix at binding 1 (float, float16_t with FP16_STORAGE=1, or int8 with WEIGHT_I8),
// cell types and the gate nonlinearities, with PyTorch's equations and gate order.
// The including shader defines WEIGHT_I8_ID, the constant_id of WEIGHT_I8.
#include "variants.glsl"
#if FP16_STORAGE
#extension GL_EXT_shader_16bit_storage : require
#endif
#include "gemv_common.glsl"

// W_hh (rnn_step, rnn_seq) or W_hr (rnn_proj), row-major [rows][n]. FP16_STORAGE: stored as half
// (OpOptions::fp16_storage), widened exactly to float on load; the arithmetic stays fp32.
// RNN_INPUT_WEIGHTS (rnn_step): W_ih at binding 10 likewise, read by load_input_weight4().
// WEIGHT_I8 (weight_storage i8, the f32 build): int8, four per 32-bit word, each row padded with
// zeros to whole words, then one f32 scale per row (W ~ q * scale, Gemm::record_i8's layout);
// a finished dot product is multiplied by its row's scale.
//
// The uvec4 views (ww, wiw) serve rnn_step's WIDE loads: 16 bytes of fp16 or int8 rows whose
// length is a multiple of 16 bytes (plan::wide_rows).
//
// FN(row, k4, n, aligned): elements 4*k4 .. 4*k4+3 of weight row `row` (zeros past n; unscaled
// for int8). aligned (a specialization constant at most calls): n % 4 == 0, so the row is whole
// vec4s. SCALE_FN(rows, row, n): row `row`'s scale in a matrix of `rows` rows of n (1 unless int8).
layout(constant_id = WEIGHT_I8_ID) const bool WEIGHT_I8 = false;
#if FP16_STORAGE
// Four halves as two uints and unpackHalf2x16: on lavapipe 1.2x faster per step than f16vec4
// loads (GRU H = 512, B = 1), which gain next to nothing over fp32 there.
#define WEIGHT_BUFFERS(BINDING, S, V, Q, W, SNAME, VNAME, QNAME, WNAME)                   \
  layout(set = 0, binding = BINDING) readonly buffer SNAME { float16_t S[]; };           \
  layout(set = 0, binding = BINDING) readonly buffer VNAME { uvec2 V[]; };  /* 4 halves */ \
  layout(set = 0, binding = BINDING) readonly buffer QNAME { uint Q[]; };                \
  layout(set = 0, binding = BINDING) readonly buffer WNAME { uvec4 W[]; };  /* WIDE */
#define ALIGNED_WEIGHT4(V, i) vec4(unpackHalf2x16(V[i].x), unpackHalf2x16(V[i].y))
#else
#define WEIGHT_BUFFERS(BINDING, S, V, Q, W, SNAME, VNAME, QNAME, WNAME)         \
  layout(set = 0, binding = BINDING) readonly buffer SNAME { float S[]; };     \
  layout(set = 0, binding = BINDING) readonly buffer VNAME { vec4 V[]; };      \
  layout(set = 0, binding = BINDING) readonly buffer QNAME { uint Q[]; }; /* WEIGHT_I8 */ \
  layout(set = 0, binding = BINDING) readonly buffer WNAME { uvec4 W[]; };  /* WIDE, int8 */
#define ALIGNED_WEIGHT4(V, i) V[i]
#endif
#define WEIGHT_LOADER(FN, SCALE_FN, S, V, Q)                                                      \
  vec4 FN(uint row, uint k4, uint n, bool aligned) {                                              \
    if (WEIGHT_I8) return unpack_i8x4(Q[row * ((n + 3) / 4) + k4]); /* padding is 0 */            \
    if (aligned) return ALIGNED_WEIGHT4(V, row * (n / 4) + k4);                                   \
    const uint base = row * n, k = k4 * 4;                                                        \
    return vec4(k < n ? float(S[base + k]) : 0.0, k + 1 < n ? float(S[base + k + 1]) : 0.0,       \
                k + 2 < n ? float(S[base + k + 2]) : 0.0, k + 3 < n ? float(S[base + k + 3]) : 0.0); \
  }                                                                                               \
  float SCALE_FN(uint rows, uint row, uint n) {                                                   \
    return WEIGHT_I8 ? uintBitsToFloat(Q[rows * ((n + 3) / 4) + row]) : 1.0;                      \
  }

WEIGHT_BUFFERS(1, ws, wv, wq, ww, WS, WV, WQ, WW)
WEIGHT_LOADER(load_weight4, weight_scale, ws, wv, wq)
#ifdef RNN_INPUT_WEIGHTS
WEIGHT_BUFFERS(10, wis, wiv, wiq, wiw, WIS, WIV, WIQ, WIW)
WEIGHT_LOADER(load_input_weight4, input_weight_scale, wis, wiv, wiq)
#endif

#define CELL_RNN_TANH 0u
#define CELL_RNN_RELU 1u
#define CELL_LSTM 2u
#define CELL_GRU 3u

// Number of gates (rows of W_hh per hidden unit) for a cell type.
#define GATES_OF(cell) ((cell) == CELL_LSTM ? 4u : ((cell) == CELL_GRU ? 3u : 1u))

// One cell update for one hidden unit of one batch row.
//   xg[g] = (W_ih x + b_ih) for gate g, hg[g] = (W_hh h + b_hh) for gate g,
//   h_prev = this unit's previous h (GRU), c = this unit's cell state (LSTM, updated in place).
// Gate order as PyTorch: LSTM (i, f, g, o), GRU (r, z, n).
float cell_update(uint cell, vec4 xg, vec4 hg, float h_prev, inout float c) {
  if (cell == CELL_RNN_TANH) return tanh_accurate(xg.x + hg.x);
  if (cell == CELL_RNN_RELU) return max(xg.x + hg.x, 0.0);
  if (cell == CELL_LSTM) {
    const float i = sigmoid_accurate(xg.x + hg.x);
    const float f = sigmoid_accurate(xg.y + hg.y);
    const float g = tanh_accurate(xg.z + hg.z);
    const float o = sigmoid_accurate(xg.w + hg.w);
    c = f * c + i * g;
    return o * tanh_accurate(c);
  }
  // GRU: n = tanh(W_in x + b_in + r * (W_hn h + b_hn)); h' = (1 - z) * n + z * h
  const float r = sigmoid_accurate(xg.x + hg.x);
  const float z = sigmoid_accurate(xg.y + hg.y);
  const float n = tanh_accurate(xg.z + r * hg.z);
  return (1.0 - z) * n + z * h_prev;
}
