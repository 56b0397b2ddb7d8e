#version 450
#extension GL_GOOGLE_include_directive : require
// The k largest entries of each row of x [B, N] (k <= K_MAX), in descending order, ties to the
// lower index (a stable sort's order, as torch.topk / argsort of the reference decoder).
// With LOG_SOFTMAX the values are log_softmax(x)[i] = (x[i] - max) - log(sum_j exp(x[j] - max)),
// the candidates of a beam-search step.
//
// One workgroup per row. Each invocation keeps a sorted list of the best k entries of its
// strided slice (in registers), then k merge rounds pick the best head among the invocations
// (a max, then the lowest index holding it) and pop it. Reductions: subgroup arithmetic or,
// with USE_SUBGROUP=0, shared-memory trees (reduce.glsl). Deterministic.
layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
layout(constant_id = 3) const uint K_MAX = 8;

#include "reduce.glsl"

layout(set = 0, binding = 0) readonly buffer X { float xs[]; };
layout(set = 0, binding = 1) writeonly buffer Values { float values[]; };  // [B, k]
layout(set = 0, binding = 2) writeonly buffer Indices { int indices[]; };  // [B, k]

layout(push_constant) uniform Push {
  uint B;
  uint N;
  uint k;
  uint log_softmax;
} p;

shared uint topk_scratch[gl_WorkGroupSize.x];

uint workgroup_min_uint(uint x) {
#if USE_SUBGROUP
  const uint s = subgroupMin(x);
  if (gl_NumSubgroups == 1) return s;
  barrier();
  if (subgroupElect()) topk_scratch[gl_SubgroupID] = s;
  barrier();
  uint r = topk_scratch[0];
  for (uint i = 1; i < gl_NumSubgroups; ++i) r = min(r, topk_scratch[i]);
  return r;
#else
  const uint i = gl_LocalInvocationIndex;
  barrier();
  topk_scratch[i] = x;
  barrier();
  for (uint s = gl_WorkGroupSize.x / 2; s > 0; s >>= 1) {
    if (i < s) topk_scratch[i] = min(topk_scratch[i], topk_scratch[i + s]);
    barrier();
  }
  return topk_scratch[0];
#endif
}

const uint NONE = 0xffffffffu;

void main() {
  const uint b = gl_WorkGroupID.x + gl_NumWorkGroups.x * gl_WorkGroupID.y;
  if (b >= p.B) return;  // uniform per workgroup
  const uint lane = gl_LocalInvocationIndex;
  const uint row = b * p.N;
  const uint k = min(p.k, K_MAX);

  // This invocation's best k, sorted: (val[0], idx[0]) first. Slices are visited in increasing
  // index order, so an equal value never displaces an earlier (lower) index.
  float val[K_MAX];
  uint idx[K_MAX];
  for (uint j = 0; j < K_MAX; ++j) {
    val[j] = -1.0 / 0.0;
    idx[j] = NONE;
  }
  for (uint i = lane; i < p.N; i += gl_WorkGroupSize.x) {
    const float x = xs[row + i];
    if (idx[k - 1] != NONE && !(x > val[k - 1])) continue;
    uint pos = k - 1;
    while (pos > 0 && (idx[pos - 1] == NONE || x > val[pos - 1])) {
      val[pos] = val[pos - 1];
      idx[pos] = idx[pos - 1];
      --pos;
    }
    val[pos] = x;
    idx[pos] = i;
  }

  // Log-softmax: (x - max) - log(sum_j exp(x[j] - max)), torch.log_softmax's order of operations.
  if (p.log_softmax != 0) {
    const float m = workgroup_max(idx[0] == NONE ? -1.0 / 0.0 : val[0]);
    float s = 0.0;
    for (uint i = lane; i < p.N; i += gl_WorkGroupSize.x) s += exp(xs[row + i] - m);
    const float lse = log(workgroup_sum(s));
    for (uint j = 0; j < K_MAX; ++j) val[j] = (val[j] - m) - lse;
  }

  // Merge: k rounds, each takes the best head (ties: lowest index) and pops it.
  uint head = 0;
  for (uint r = 0; r < k; ++r) {
    const bool has = head < k && idx[head] != NONE;
    const float hv = has ? val[head] : -1.0 / 0.0;
    const float best = workgroup_max(has ? hv : -1.0 / 0.0);
    const uint win = workgroup_min_uint(has && hv == best ? idx[head] : NONE);
    if (has && idx[head] == win) ++head;
    if (lane == 0) {
      values[b * p.k + r] = win == NONE ? -1.0 / 0.0 : best;
      indices[b * p.k + r] = win == NONE ? -1 : int(win);
    }
  }
}
