// The k largest entries of one row of xs (topk.comp's header has the rules: descending, ties to
// the lower index, NaN above +inf, optional log-softmax, a forced entry), for the kernels that
// run it (topk.comp: one row per workgroup; beam_step.comp: a source's alive rows in turn).
// The includer declares K_MAX, the buffers xs, values, ids and nonfinite, and includes
// float_order.glsl and reduce.glsl. Every invocation of the workgroup calls it in uniform control flow.
#ifndef TOPK_ROW_GLSL
#define TOPK_ROW_GLSL

#include "topk_list.glsl"

// Row b of xs ([., N] from element b * N) into values / ids [b * k, b * k + k). mark != 0: a row
// whose max is not finite sets nonfinite[b] = mark unless it is set. forced >= 0: that entry
// alone, then -1 / -inf padding.
void topk_row(uint b, uint N, uint k_out, bool log_softmax, uint mark, int forced) {
  const uint lane = gl_LocalInvocationIndex;
  const uint row = b * N;
  const uint k = min(k_out, K_MAX);

  // This invocation's best k as order keys, sorted: (key[0], idx[0]) first; key 0 = no entry.
  // Slices are visited in increasing index order, so an equal value never displaces an earlier
  // (lower) index.
  uint key[K_MAX];
  uint idx[K_MAX];
  topk_clear(key, idx);
  for (uint i = lane; i < N; i += gl_WorkGroupSize.x) topk_offer(key, idx, k, float_order_key(xs[row + i]), i);

  // The row's max: flags a non-finite row, and the log-softmax's shift.
  const float m = float_from_order_key(workgroup_max_uint(key[0]));
  if (mark != 0u && lane == 0 && (isnan(m) || isinf(m)) && nonfinite[b] == 0u) nonfinite[b] = mark;

  // Log-softmax: (x - max) - log(sum_j exp(x[j] - max)), torch.log_softmax's order of operations.
  float lse = 0.0;
  if (log_softmax) {
    float s = 0.0;
    for (uint i = lane; i < N; i += gl_WorkGroupSize.x) s += exp(xs[row + i] - m);
    lse = log(workgroup_sum(s));
    for (uint j = 0; j < K_MAX; ++j)
      if (idx[j] != TOPK_NONE) key[j] = float_order_key((float_from_order_key(key[j]) - m) - lse);
  }

  // A forced row (uniform per workgroup): its token alone.
  if (forced >= 0) {
    if (lane == 0) {
      const uint i = min(uint(forced), N - 1u);  // in the row whatever it holds (callers check ids)
      const float x = xs[row + i];
      values[b * k_out] = log_softmax ? (x - m) - lse : x;
      ids[b * k_out] = int(i);
      for (uint r = 1; r < k_out; ++r) {
        values[b * k_out + r] = -1.0 / 0.0;
        ids[b * k_out + r] = -1;
      }
    }
    return;
  }

  TOPK_MERGE(key, idx, k, if (lane == 0) {
    // The entry itself where it is one (keys drop the sign of zero and NaN payloads).
    values[b * k_out + r] = win == TOPK_NONE ? -1.0 / 0.0 : log_softmax ? float_from_order_key(best) : xs[row + win];
    ids[b * k_out + r] = win == TOPK_NONE ? -1 : int(min(win, N - 1u));
  })
}

#endif  // TOPK_ROW_GLSL
