#version 450
#extension GL_GOOGLE_include_directive : require
// Before any include: shared arrays sized by gl_WorkGroupSize must see the spec-constant size.
layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
// Masked, numerically stable softmax over the source axis, tiled so any S works:
//   weights[r, s] = exp(x_s - M) / L for s < len[b], exactly 0 for s >= len[b] (and for every s
//   when len[b] == 0), with M the row's max and L = sum exp(x_s - M) over the valid positions.
// Rows r = b * heads + h; scores f32 [rows, S]; weights STORE_T [rows, S].
// Each workgroup owns a tile of TILE = WG * E positions of one row (invocation t takes
// positions t, t + WG, ...). Modes (push constant, TWO_PASS_* of kernel_flags.h):
//   0  the row is one tile: reduce and normalise in one dispatch
//   1  pass 1 of a multi-tile row: write the tile's (max, sum of exp(x - max)) to partials
//   2  pass 2: combine the row's partials into (M, L) and normalise this tile
// Reductions run in a fixed order (reduce.glsl), so results are bit-identical run to run.
#include "attention_common.glsl"
#include "reduce.glsl"

layout(constant_id = 3) const uint E = 4;  // positions per invocation

layout(set = 0, binding = 0) readonly buffer Scores { float scores[]; };
layout(set = 0, binding = 1) readonly buffer Lengths { int lengths[]; };
layout(set = 0, binding = 2) buffer Partials { vec2 partials[]; };  // (max, sum) per (row, tile)
layout(set = 0, binding = 3) writeonly buffer Weights { STORE_T weights[]; };

layout(push_constant) uniform Push {
  uint S;
  uint heads;
  uint rows;
  uint ntiles;  // tiles per row
  uint mode;
} p;

void main() {
  const uint WG = gl_WorkGroupSize.x;
  const uint TILE = WG * E;
  const uint id = linear_workgroup();
  if (id >= p.rows * p.ntiles) return;
  const uint tile = id % p.ntiles;
  const uint r = id / p.ntiles;
  const uint len = clamped_length(lengths[r / p.heads], p.S);
  const uint s0 = tile * TILE + gl_LocalInvocationIndex;
  const uint row = r * p.S;

  float x[E];
  float m_local = NEG_INF;
  for (uint i = 0; i < E; ++i) {
    const uint s = s0 + i * WG;
    x[i] = s < len ? scores[row + s] : NEG_INF;
    m_local = max(m_local, x[i]);
  }

  float M, L;
  if (p.mode == TWO_PASS_COMBINE) {
    float mp = NEG_INF;
    for (uint t = gl_LocalInvocationIndex; t < p.ntiles; t += WG) {
      mp = max(mp, partials[r * p.ntiles + t].x);
    }
    M = workgroup_max(mp);
    float lp = 0.0;
    for (uint t = gl_LocalInvocationIndex; t < p.ntiles; t += WG) {
      const vec2 part = partials[r * p.ntiles + t];
      if (part.y > 0.0) lp += part.y * exp(part.x - M);
    }
    L = workgroup_sum(lp);
  } else {
    M = workgroup_max(m_local);
    float l_local = 0.0;
    for (uint i = 0; i < E; ++i) {
      if (s0 + i * WG < len) l_local += exp(x[i] - M);
    }
    L = workgroup_sum(l_local);
    if (p.mode == TWO_PASS_PARTIAL) {
      if (gl_LocalInvocationIndex == 0) partials[r * p.ntiles + tile] = vec2(M, L);
      return;
    }
  }
  for (uint i = 0; i < E; ++i) {
    const uint s = s0 + i * WG;
    if (s >= p.S) break;
    weights[row + s] = STORE_T(s < len ? exp(x[i] - M) / L : 0.0);
  }
}
