#version 450
#extension GL_GOOGLE_include_directive : require
// Before any include: shared arrays sized by gl_WorkGroupSize must see the spec-constant size.
layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
// Second pass of the split fused attention (attention_fused.comp): merges the per-split
// (max, sum, acc) partials of each row and normalises the raw scores into attention weights.
//   M = max_c m_c,  L = sum_c l_c exp(m_c - M),  context = sum_c acc_c exp(m_c - M) / L,
//   weights[r, s] = exp(raw[r, s] - M) / L for s < len, else 0 (L == 0, i.e. len == 0: all 0).
// Grid: rows * nctx workgroups for the context (WG columns each), then rows * nwt for the
// weights (WG * E positions each; nwt = 0 when weights are not wanted). Every workgroup
// recomputes (M, L) from the row's nsplit partials: cheap, and no third dispatch.
// Fixed reduction order: bit-identical run to run.
#include "attention_common.glsl"
#include "reduce.glsl"

layout(constant_id = 3) const uint MAX_SPLIT = 256;  // upper bound of nsplit
layout(constant_id = 4) const uint E = 4;            // weight positions per invocation

layout(set = 0, binding = 0) readonly buffer Lengths { int lengths[]; };
layout(set = 0, binding = 1) readonly buffer PartML { vec2 part_ml[]; };
layout(set = 0, binding = 2) readonly buffer PartAcc { float part_acc[]; };
layout(set = 0, binding = 3) readonly buffer Raw { float raw[]; };
layout(set = 0, binding = 4) writeonly buffer Weights { STORE_T weights[]; };
layout(set = 0, binding = 5) writeonly buffer Context { float context[]; };

layout(push_constant) uniform Push {
  uint S;
  uint H;       // context row stride (context[ctx_off + b * H + h * dv + j])
  uint dv;      // value dims per head
  uint heads;
  uint rows;
  uint nsplit;
  uint nctx;    // context workgroups per row
  uint nwt;     // weight workgroups per row (0: weights not wanted)
  uint ctx_off;
} p;

shared float coef[MAX_SPLIT];

void main() {
  const uint WG = gl_WorkGroupSize.x;
  const uint lane = gl_LocalInvocationIndex;
  uint id = linear_workgroup();
  const bool ctx_part = id < p.rows * p.nctx;
  if (!ctx_part) {
    id -= p.rows * p.nctx;
    if (id >= p.rows * p.nwt) return;
  }
  const uint per_row = ctx_part ? p.nctx : p.nwt;
  const uint r = id / per_row;
  const uint g = id % per_row;
  const uint b = r / p.heads, h = r % p.heads;
  const uint base = r * p.nsplit;

  float mp = NEG_INF;
  for (uint c = lane; c < p.nsplit; c += WG) mp = max(mp, part_ml[base + c].x);
  const float M = workgroup_max(mp);
  float lp = 0.0;
  for (uint c = lane; c < p.nsplit; c += WG) {
    const vec2 ml = part_ml[base + c];
    const float f = ml.y > 0.0 ? exp(ml.x - M) : 0.0;  // empty splits (m = -inf) weigh nothing
    if (ctx_part) coef[c] = f;
    lp += ml.y * f;
  }
  const float L = workgroup_sum(lp);

  workgroup_barrier();  // coef (workgroup_sum need not have synchronised: single-subgroup path)
  if (ctx_part) {
    const uint j = g * WG + lane;
    if (j < p.dv) {
      float a = 0.0;
      for (uint c = 0; c < p.nsplit; ++c) a += part_acc[(base + c) * p.dv + j] * coef[c];
      context[p.ctx_off + b * p.H + h * p.dv + j] = L > 0.0 ? a / L : 0.0;
    }
  } else {
    const uint len = clamped_length(lengths[b], p.S);
    for (uint i = 0; i < E; ++i) {
      const uint s = g * WG * E + lane + i * WG;
      if (s >= p.S) break;
      weights[r * p.S + s] = STORE_T(s < len ? exp(raw[r * p.S + s] - M) / L : 0.0);
    }
  }
}
