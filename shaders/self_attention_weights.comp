#version 450
#extension GL_GOOGLE_include_directive : require
// Shared-memory reductions (reduce.glsl): no subgroup requirement for this inspection kernel,
// and no subgroup axis (shaders/variants.cmake).
#define USE_SUBGROUP 0
#include "variants.glsl"
// Full attention weights a[b, h, i, j] = softmax_j(q_i . k_j * scale) for inspection and
// visualisation (small S): the same masks as self_attention.comp (keys j >= length[b] and, with
// p.causal, j > i get 0; rows i >= length[b] are all zeros). One workgroup per (b, h, i) row:
// its invocations stride over the keys; a first pass finds each one's max and sum (online),
// the workgroup combines them, a second pass writes the weights. The host widens the workgroup
// until each invocation's share of a row stays within the loop budget (lavapipe silently ends
// loops past 65535 iterations per invocation; a row of S keys costs ~2 S (head_dim + 1)).
#if FP16_STORAGE
#extension GL_EXT_shader_16bit_storage : require
#define STORE_T float16_t
#else
#define STORE_T float
#endif

layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
layout(constant_id = 3) const uint D = 64;  // head_dim

#include "reduce.glsl"

layout(set = 0, binding = 0) readonly buffer Queries { STORE_T qs[]; };
layout(set = 0, binding = 1) readonly buffer Keys { STORE_T ks[]; };
layout(set = 0, binding = 2) readonly buffer Lengths { int lengths[]; };
layout(set = 0, binding = 3) writeonly buffer Weights { float ws[]; };  // [B, heads, S, S]

layout(push_constant) uniform Push {
  uint S;
  uint H;
  uint heads;
  uint rows;         // B * heads * S
  float scale;
  uint causal;
  uint has_lengths;
} p;

float score(uint qrow, uint krow, uint col0) {
  float s = 0.0;
  for (uint d = 0u; d < D; ++d) s += float(qs[qrow * p.H + col0 + d]) * float(ks[krow * p.H + col0 + d]);
  return s * p.scale;
}

void main() {
  const uint id = gl_WorkGroupID.x + gl_NumWorkGroups.x * gl_WorkGroupID.y;
  if (id >= p.rows) return;  // uniform per workgroup
  const uint lane = gl_LocalInvocationIndex, WG = gl_WorkGroupSize.x;
  const uint i = id % p.S;
  const uint bh = id / p.S;  // b * heads + h
  const uint h = bh % p.heads;
  const uint b = bh / p.heads;
  const int raw_len = p.has_lengths != 0u ? lengths[b] : int(p.S);
  const uint len = uint(clamp(raw_len, 0, int(p.S)));
  const uint kend = i >= len ? 0u : (p.causal != 0u ? min(len, i + 1u) : len);
  const uint col0 = h * D;
  const uint qrow = b * p.S + i;
  const uint out0 = id * p.S;  // row i of [b, h]

  const float lowest = -3.402823466e38;
  float m = lowest;
  float l = 0.0;
  for (uint j = lane; j < kend; j += WG) {
    const float e = score(qrow, b * p.S + j, col0);
    const float m_new = max(m, e);
    l = l * exp(m - m_new) + exp(e - m_new);
    m = m_new;
  }
  const float M = workgroup_max(m);
  const float L = workgroup_sum(l > 0.0 ? l * exp(m - M) : 0.0);
  const float inv_l = kend > 0u ? 1.0 / L : 0.0;
  for (uint j = lane; j < p.S; j += WG) {
    ws[out0 + j] = j < kend ? exp(score(qrow, b * p.S + j, col0) - M) * inv_l : 0.0;
  }
}
