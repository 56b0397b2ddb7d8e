#version 450
#extension GL_GOOGLE_include_directive : require
// Before any include: shared arrays sized by gl_WorkGroupSize must see the spec-constant size.
layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
// Key precompute for additive (Bahdanau / concat) attention, once per source sequence:
//   keys[n, a] = sum_k memory[n, k] * W[a, k]     (K = h W_k^T; n runs over B * S rows)
// memory STORE_T [N, Hm], W f32 [A, Hm], keys STORE_T [N, A].
// A plain shared-memory tiled GEMM: a T x T workgroup computes a (T * RM) x T tile of keys, each
// invocation RM rows of one column, stepping over k in slices of T.
#include "attention_common.glsl"

layout(constant_id = 3) const uint RM = 4;  // rows per invocation

layout(set = 0, binding = 0) readonly buffer Memory { STORE_T memory[]; };
layout(set = 0, binding = 1) readonly buffer Weight { float w[]; };
layout(set = 0, binding = 2) writeonly buffer Keys { STORE_T keys[]; };

layout(push_constant) uniform Push {
  uint N;   // rows (B * S)
  uint Hm;  // memory width
  uint A;   // key width
  uint ntiles_a;
  uint ntiles_n;
} p;

const uint T = gl_WorkGroupSize.x;  // == gl_WorkGroupSize.y
shared float xs[gl_WorkGroupSize.x * RM][gl_WorkGroupSize.x + 1];
shared float ws[gl_WorkGroupSize.x][gl_WorkGroupSize.x + 1];

void main() {
  const uint id = linear_workgroup();
  if (id >= p.ntiles_a * p.ntiles_n) return;
  const uint a0 = (id % p.ntiles_a) * T;
  const uint n0 = (id / p.ntiles_a) * (T * RM);
  const uint tx = gl_LocalInvocationID.x, ty = gl_LocalInvocationID.y;

  float acc[RM];
  for (uint i = 0; i < RM; ++i) acc[i] = 0.0;
  for (uint k0 = 0; k0 < p.Hm; k0 += T) {
    const uint k = k0 + tx;
    for (uint i = 0; i < RM; ++i) {
      const uint n = n0 + ty + i * T;
      xs[ty + i * T][tx] = (n < p.N && k < p.Hm) ? float(memory[n * p.Hm + k]) : 0.0;
    }
    const uint a = a0 + ty;
    ws[ty][tx] = (a < p.A && k < p.Hm) ? w[a * p.Hm + k] : 0.0;
    barrier();
    for (uint kk = 0; kk < T; ++kk) {
      const float wv = ws[tx][kk];
      for (uint i = 0; i < RM; ++i) acc[i] += xs[ty + i * T][kk] * wv;
    }
    barrier();
  }
  const uint a = a0 + tx;
  if (a >= p.A) return;
  for (uint i = 0; i < RM; ++i) {
    const uint n = n0 + ty + i * T;
    if (n < p.N) keys[n * p.A + a] = STORE_T(acc[i]);
  }
}
