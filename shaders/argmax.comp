#version 450
#extension GL_GOOGLE_include_directive : require
// Argmax over the vocabulary per batch row, with greedy-decoding bookkeeping.
//
//   index[b]   = argmax_v logits[b, v]            (the lowest v among equal maxima; NaN is the
//                                                  largest value, as in torch.argmax)
//   value[b]   = logits[b, index]                 (the max)
//   logprob[b] = log_softmax(logits[b])[index] = -log(sum_v exp(logits[b, v] - max))
//
// One workgroup per row: each invocation scans a strided slice of the row (a tiled reduction
// that reads the row once per pass), then the workgroup reduces (max order key, then the lowest
// index holding it; a sum for the log-softmax) with subgroup arithmetic or, with
// USE_SUBGROUP=0, shared-memory trees. Fixed order: deterministic. The index is always in
// [0, V), whatever the logits hold.
//
// ARGMAX_NONFINITE: a row whose max is NaN or infinite (a NaN or +inf anywhere, or every entry
// -inf: no finite distribution) sets nonfinite[b] = mark unless it is already set, so the host
// learns the first step a row went wrong from one u32 (finished rows are not checked).
//
// Greedy step (ARGMAX_FINISHED: stop at EOS): a row already finished emits `pad` with score 0 and
// zero logits / attention in the histories; a live row that emits `eos` becomes finished.
// History buffers hold `ld` columns per row; this dispatch writes column `col`. With ARGMAX_EMBED
// the chosen token's embedding row is also copied out (the next step's input).
layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;

#include "reduce.glsl"

layout(set = 0, binding = 0) readonly buffer Logits { float logits[]; };
layout(set = 0, binding = 1) writeonly buffer Index { int index_out[]; };     // [B]
layout(set = 0, binding = 2) writeonly buffer Value { float value_out[]; };   // [B]
layout(set = 0, binding = 3) writeonly buffer TokHist { int tok_hist[]; };    // [B, ld]
layout(set = 0, binding = 4) writeonly buffer Score { float score_hist[]; };  // [B, ld]
layout(set = 0, binding = 5) buffer Finished { uint finished[]; };            // [B]
layout(set = 0, binding = 6) writeonly buffer LogitHist { float logit_hist[]; };  // [B, ld, V]
layout(set = 0, binding = 7) readonly buffer Weights { float weights[]; };   // [B, S]
layout(set = 0, binding = 8) writeonly buffer AttnHist { float attn_hist[]; };  // [B, ld, S]
layout(set = 0, binding = 9) readonly buffer Table { float table[]; };        // embedding rows
layout(set = 0, binding = 10) writeonly buffer EmbOut { float emb_out[]; };   // next input
layout(set = 0, binding = 11) buffer NonFinite { uint nonfinite[]; };         // [B]
layout(set = 0, binding = 12) readonly buffer Chosen { int chosen[]; };      // [B]

layout(push_constant) uniform Push {
  uint B;
  uint V;
  uint S;
  uint ld;
  uint col;
  int eos;
  int pad;
  uint flags;         // ARGMAX_* (kernel_flags.h)
  uint emb_dim;       // ARGMAX_EMBED: copy table row `token` into emb_out row b
  uint table_offset;
  uint table_ld;
  uint emb_offset;
  uint emb_ld;
  uint mark;          // ARGMAX_NONFINITE: the value written to nonfinite[b]
} p;

const uint NONE = 0xffffffffu;

#include "float_order.glsl"
#include "kernel_flags.h"
#define GREEDY_V p.V
#include "greedy_step.glsl"

void main() {
  const uint b = gl_WorkGroupID.x + gl_NumWorkGroups.x * gl_WorkGroupID.y;
  if (b >= p.B) return;  // uniform per workgroup
  const uint lane = gl_LocalInvocationIndex;
  const uint row = b * p.V;
  const bool track = (p.flags & ARGMAX_FINISHED) != 0;
  const bool done = track && finished[b] != 0u;

  // Pass 1: per-invocation max key and its lowest index (keys: NaN largest; 0 = no entry),
  // then the workgroup's.
  uint best = 0u, best_i = NONE;
  for (uint v = lane; v < p.V; v += gl_WorkGroupSize.x) {
    const uint key = float_order_key(logits[row + v]);
    if (key > best) {
      best = key;
      best_i = v;
    }
  }
  const uint best_key = workgroup_max_uint(best);
  const uint top = min(workgroup_min_uint(best == best_key ? best_i : NONE), p.V - 1u);
  const int pick = (p.flags & ARGMAX_CHOSEN) != 0u ? chosen[b] : -1;  // -1: the argmax
  const uint arg = pick >= 0 ? min(uint(pick), p.V - 1u) : top;
  const float m = logits[row + top];  // the max

  // Pass 2: the log-softmax denominator.
  float score = 0.0;
  if ((p.flags & (ARGMAX_SCORE)) != 0) {
    float s = 0.0;
    for (uint v = lane; v < p.V; v += gl_WorkGroupSize.x) s += exp(logits[row + v] - m);
    score = (logits[row + arg] - m) - log(workgroup_sum(s));  // log_softmax at arg
  }

  const int token = done ? p.pad : int(arg);
  if (lane == 0 && (p.flags & ARGMAX_VALUE) != 0) value_out[b] = m;
  if ((p.flags & ARGMAX_LOGITS) != 0) {
    const uint h = b * p.ld + p.col;
    for (uint v = lane; v < p.V; v += gl_WorkGroupSize.x) logit_hist[h * p.V + v] = done ? 0.0 : logits[row + v];
  }
  greedy_record(b, lane, gl_WorkGroupSize.x, token, done, m, score);
}
