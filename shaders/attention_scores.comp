#version 450
#extension GL_GOOGLE_include_directive : require
// Before any include: shared arrays sized by gl_WorkGroupSize must see the spec-constant size.
layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
// Raw attention scores: scores[r, s] for rows r = b * heads + h and source positions s < S.
// Positions at or beyond the row's length are not scored and are written as -inf.
//
// Layout: keys [B, S, Hk] (head h owns columns [h*dk, (h+1)*dk)), query [B, Qs] (same head
// split), v [dk] (additive), lengths i32 [B], scores f32 [B * heads, S].
// Grid: one workgroup per (row, block of P = WG * R positions), folded over x and y.
#include "attention_common.glsl"

layout(constant_id = 6) const uint R = 1;  // positions per invocation per block

layout(set = 0, binding = 0) readonly buffer Keys { STORE_T keys[]; };
layout(set = 0, binding = 0) readonly buffer Keys4 { STORE_T4 keys4[]; };
layout(set = 0, binding = 1) readonly buffer Qry { float qry[]; };
layout(set = 0, binding = 1) readonly buffer Qry4 { vec4 qry4[]; };
layout(set = 0, binding = 2) readonly buffer VParam { float vparam[]; };
layout(set = 0, binding = 2) readonly buffer VParam4 { vec4 vparam4[]; };
layout(set = 0, binding = 3) readonly buffer Lengths { int lengths[]; };
layout(set = 0, binding = 4) writeonly buffer Scores { float scores[]; };

layout(push_constant) uniform Push {
  uint S;
  uint Hk;       // key row stride
  uint dk;       // dims per head
  uint Qs;       // query row stride
  uint heads;
  uint rows;     // B * heads
  uint nblocks;  // blocks per row
  float scale;
} p;

#include "attention_score.glsl"

void main() {
#if USE_SUBGROUP
  // Dense rank and count of the active lanes: right for partial subgroups too (a workgroup
  // smaller than the subgroup), where gl_SubgroupSize would over-count.
  const uint sg_count = subgroupAdd(1u);
  const uint sg_rank = subgroupExclusiveAdd(1u);
#endif
  const uint WG = gl_WorkGroupSize.x;
  const uint P = WG * R;
  const uint id = linear_workgroup();
  if (id >= p.rows * p.nblocks) return;
  const uint blk = id % p.nblocks;
  const uint r = id / p.nblocks;
  const uint b = r / p.heads, h = r % p.heads;
  const uint len = clamped_length(lengths[b], p.S);
  const uint s0 = blk * P;
  const uint qbase = b * p.Qs + h * p.dk;
  const uint lane = gl_LocalInvocationIndex;

#if USE_SUBGROUP
  if (SG_CLUSTER != 0) load_query(qbase, p.dk, sg_rank, sg_count); else
#endif
  load_query(qbase, p.dk, 0, 1);

#if USE_SUBGROUP
  if (SG_CLUSTER != 0) {
    for (uint i = gl_SubgroupID; i < P; i += gl_NumSubgroups) {
      const uint s = s0 + i;
      if (s >= p.S) break;
      float e = NEG_INF;
      if (s < len) {
        const uint kbase = (b * p.S + s) * p.Hk + h * p.dk;
        e = finish_score(subgroupAdd(score_partial(kbase, qbase, p.dk, sg_rank, sg_count)), p.scale);
      }
      if (sg_rank == 0) scores[r * p.S + s] = e;
    }
    return;
  }
#endif
  for (uint i = 0; i < R; ++i) {
    const uint s = s0 + lane + i * WG;
    if (s >= p.S) break;
    float e = NEG_INF;
    if (s < len) {
      const uint kbase = (b * p.S + s) * p.Hk + h * p.dk;
      e = finish_score(score_partial(kbase, qbase, p.dk, 0, 1), p.scale);
    }
    scores[r * p.S + s] = e;
  }
}
