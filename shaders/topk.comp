#version 450
#extension GL_GOOGLE_include_directive : require
// The k largest entries of each row of x [B, N] (k <= K_MAX), in descending order, ties to the
// lower index (a stable sort's order, as torch.topk / argsort of the reference decoder); NaN
// ranks above +inf (as in torch.topk), so every index written is in [0, N) (-1 only pads rows
// with N < k). With LOG_SOFTMAX the values are
// log_softmax(x)[i] = (x[i] - max) - log(sum_j exp(x[j] - max)), the candidates of a beam-search
// step.
//
// One workgroup per row (topk_row.glsl). Each invocation keeps a sorted list of the best k entries of its
// strided slice (in registers, as order keys: float_order.glsl), then k merge rounds pick the
// best head among the invocations (a max key, then the lowest index holding it) and pop it.
// Reductions: subgroup arithmetic or, with USE_SUBGROUP=0, shared-memory trees. Deterministic.
//
// nonfinite (when p.mark != 0): a row whose max is NaN or infinite (a NaN or +inf anywhere, or
// every entry -inf) sets nonfinite[b] = mark unless it is already set.
// forced (when p.forced != 0): a row with forced[b] >= 0 yields that one entry (its value, or
// its log-softmax over the whole row) and -1 / -inf padding: a beam search's target prefix,
// whose forced token keeps its log-probability.
layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
layout(constant_id = 3) const uint K_MAX = 8;

#include "reduce.glsl"

layout(set = 0, binding = 0) readonly buffer X { float xs[]; };
layout(set = 0, binding = 1) writeonly buffer Values { float values[]; };  // [B, k]
layout(set = 0, binding = 2) writeonly buffer Ids { int ids[]; };          // [B, k]
layout(set = 0, binding = 3) buffer NonFinite { uint nonfinite[]; };       // [B]
layout(set = 0, binding = 4) readonly buffer Forced { int forced[]; };     // [B]

layout(push_constant) uniform Push {
  uint B;
  uint N;
  uint k;
  uint log_softmax;
  uint mark;  // nonzero: flag non-finite rows in `nonfinite`
  uint forced;  // nonzero: read `forced`
} p;

#include "float_order.glsl"

#include "topk_row.glsl"

void main() {
  const uint b = gl_WorkGroupID.x + gl_NumWorkGroups.x * gl_WorkGroupID.y;
  if (b >= p.B) return;  // uniform per workgroup
  topk_row(b, p.N, p.k, p.log_softmax != 0u, p.mark, p.forced != 0u ? forced[b] : -1);
}
