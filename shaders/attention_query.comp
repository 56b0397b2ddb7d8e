#version 450
#extension GL_GOOGLE_include_directive : require
// Before any include: shared arrays sized by gl_WorkGroupSize must see the spec-constant size.
layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
// Query projection for the general and additive scores: out[b, a] = sum_k W[a, k] q[b, k] (+ bias[a]).
// One workgroup per (a, b), its invocations splitting k: per-invocation work stays at Q / WG
// (lavapipe silently ends loops after 65535 iterations per invocation).
#include "reduce.glsl"
#include "attention_common.glsl"

layout(constant_id = 3) const uint VEC4 = 0;  // Q % 4 == 0: vec4 loads

layout(set = 0, binding = 0) readonly buffer Weight { float w[]; };
layout(set = 0, binding = 0) readonly buffer Weight4 { vec4 w4[]; };
layout(set = 0, binding = 1) readonly buffer Query { float q[]; };
layout(set = 0, binding = 1) readonly buffer Query4 { vec4 q4[]; };
layout(set = 0, binding = 2) readonly buffer Bias { float bias[]; };
layout(set = 0, binding = 3) writeonly buffer Out { float outp[]; };

layout(push_constant) uniform Push {
  uint A;         // output features
  uint Q;         // query width
  uint B;         // batch
  uint has_bias;
  uint q_off;     // query row b at q[q_off + b * q_ld] (multiples of 4 with VEC4)
  uint q_ld;
} p;

void main() {
  const uint id = linear_workgroup();
  if (id >= p.A * p.B) return;
  const uint a = id % p.A, b = id / p.A;
  const uint lane = gl_LocalInvocationIndex;
  const uint WG = gl_WorkGroupSize.x;
  float part = 0.0;
  if (VEC4 != 0) {
    const uint n4 = p.Q / 4;
    const uint wb = a * n4, qb = (p.q_off + b * p.q_ld) / 4;
    for (uint k = lane; k < n4; k += WG) part += dot(w4[wb + k], q4[qb + k]);
  } else {
    const uint wb = a * p.Q, qb = p.q_off + b * p.q_ld;
    for (uint k = lane; k < p.Q; k += WG) part += w[wb + k] * q[qb + k];
  }
  const float sum = workgroup_sum(part);
  if (lane == 0) outp[b * p.A + a] = sum + (p.has_bias != 0 ? bias[a] : 0.0);
}
