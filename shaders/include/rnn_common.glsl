// Shared by the recurrent kernels (rnn_step.comp, rnn_seq.comp): cell types and the gate
// nonlinearities, with PyTorch's equations and gate order.
#include "gemv_common.glsl"

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
