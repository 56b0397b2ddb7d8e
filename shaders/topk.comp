#version 450
#extension GL_GOOGLE_include_directive : require
// The k largest entries of each row of x [B, N] (k <= K_MAX), in descending order, ties to the
// lower index (a stable sort's order, as torch.topk / argsort of the reference decoder); NaN
// ranks above +inf (as in torch.topk), so every index written is in [0, N) (-1 only pads rows
// with N < k). With LOG_SOFTMAX the values are
// log_softmax(x)[i] = (x[i] - max) - log(sum_j exp(x[j] - max)), the candidates of a beam-search
// step.
//
// One workgroup per row. Each invocation keeps a sorted list of the best k entries of its
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
layout(set = 0, binding = 2) writeonly buffer Indices { int indices[]; };  // [B, k]
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

const uint NONE = 0xffffffffu;

void main() {
  const uint b = gl_WorkGroupID.x + gl_NumWorkGroups.x * gl_WorkGroupID.y;
  if (b >= p.B) return;  // uniform per workgroup
  const uint lane = gl_LocalInvocationIndex;
  const uint row = b * p.N;
  const uint k = min(p.k, K_MAX);

  // This invocation's best k as order keys, sorted: (key[0], idx[0]) first; key 0 = no entry.
  // Slices are visited in increasing index order, so an equal value never displaces an earlier
  // (lower) index.
  uint key[K_MAX];
  uint idx[K_MAX];
  for (uint j = 0; j < K_MAX; ++j) {
    key[j] = 0u;
    idx[j] = NONE;
  }
  for (uint i = lane; i < p.N; i += gl_WorkGroupSize.x) {
    const uint x = float_order_key(xs[row + i]);
    if (!(x > key[k - 1])) continue;
    uint pos = k - 1;
    while (pos > 0 && x > key[pos - 1]) {
      key[pos] = key[pos - 1];
      idx[pos] = idx[pos - 1];
      --pos;
    }
    key[pos] = x;
    idx[pos] = i;
  }

  // The row's max: flags a non-finite row, and the log-softmax's shift.
  const float m = float_from_order_key(workgroup_max_uint(key[0]));
  if (p.mark != 0u && lane == 0 && (isnan(m) || isinf(m)) && nonfinite[b] == 0u) nonfinite[b] = p.mark;

  // Log-softmax: (x - max) - log(sum_j exp(x[j] - max)), torch.log_softmax's order of operations.
  float lse = 0.0;
  if (p.log_softmax != 0) {
    float s = 0.0;
    for (uint i = lane; i < p.N; i += gl_WorkGroupSize.x) s += exp(xs[row + i] - m);
    lse = log(workgroup_sum(s));
    for (uint j = 0; j < K_MAX; ++j)
      if (idx[j] != NONE) key[j] = float_order_key((float_from_order_key(key[j]) - m) - lse);
  }

  // A forced row (uniform per workgroup): its token alone.
  const int f = p.forced != 0u ? forced[b] : -1;
  if (f >= 0) {
    if (lane == 0) {
      const uint i = min(uint(f), p.N - 1u);  // in the row whatever it holds (callers check ids)
      const float x = xs[row + i];
      values[b * p.k] = p.log_softmax != 0 ? (x - m) - lse : x;
      indices[b * p.k] = int(i);
      for (uint r = 1; r < p.k; ++r) {
        values[b * p.k + r] = -1.0 / 0.0;
        indices[b * p.k + r] = -1;
      }
    }
    return;
  }

  // Merge: k rounds, each takes the best head (ties: lowest index) and pops it.
  uint head = 0;
  for (uint r = 0; r < k; ++r) {
    const uint hk = head < k ? key[head] : 0u;  // 0: this invocation's list is spent
    const uint best = workgroup_max_uint(hk);
    const uint win = workgroup_min_uint(hk != 0u && hk == best ? idx[head] : NONE);
    if (hk != 0u && idx[head] == win) ++head;
    if (lane == 0) {
      // The entry itself where it is one (keys drop the sign of zero and NaN payloads).
      values[b * p.k + r] = win == NONE ? -1.0 / 0.0 : p.log_softmax != 0 ? float_from_order_key(best) : xs[row + win];
      indices[b * p.k + r] = win == NONE ? -1 : int(min(win, p.N - 1u));
    }
  }
}
