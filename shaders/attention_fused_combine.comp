#version 450
#extension GL_GOOGLE_include_directive : require
// Before any include: shared arrays sized by gl_WorkGroupSize must see the spec-constant size.
layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
// Second pass of the split fused attention (attention_fused.comp), where the fused kernel does not
// merge its splits itself (plan::FusedAttention::merge): merges the per-split (max, sum, acc)
// partials of each row and normalises the raw scores into attention weights
// (attention_merge.glsl). Grid: rows * nctx workgroups for the context (WG columns each), then
// rows * nwt for the weights (WG * E positions each; nwt = 0 when weights are not wanted). Every
// workgroup recomputes (M, L) from the row's nsplit partials: cheap, and no third dispatch.
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
#include "attention_merge.glsl"

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

  const vec2 ML = merge_stats(base, p.nsplit, ctx_part);
  if (ctx_part) {
    const uint j = g * WG + lane;
    if (j < p.dv) {
      context[p.ctx_off + b * p.H + h * p.dv + j] = merged_context(base, p.nsplit, p.dv, j, ML.y);
    }
  } else {
    const uint len = clamped_length(lengths[b], p.S);
    for (uint i = 0; i < E; ++i) {
      const uint s = g * WG * E + lane + i * WG;
      if (s >= p.S) break;
      weights[r * p.S + s] = STORE_T(merged_weight(raw[r * p.S + s], s < len, ML));
    }
  }
}
