#version 450
#extension GL_GOOGLE_include_directive : require
// Logits processing of one decoding step, in place on logits [B, V], one workgroup per row
// (the rules and their CTranslate2 counterparts: docs/runtime.md, "Decoding options"):
//
//   phase 1 (each invocation its strided entries v):
//     repetition penalty: v generated before in the row -> x < 0 ? x * penalty : x / penalty
//     temperature:        x / T
//   phase 2 (masks to -inf; after phase 1's writes):
//     suppressed ids, unk (disable_unk), eos while step < min_length, the tokens that would
//     repeat an n-gram of the row (no_repeat_ngram_size), and the last token of every suppressed
//     sequence whose other tokens are the row's last generated tokens (LOGITS_SEQUENCES)
//   phase 3 (LOGITS_SAMPLE): the token to emit, into chosen[b]: top-k and top-p thresholds found
//     by bisection over the float order keys (ties at a threshold are kept), then Gumbel-max
//     over the kept entries with Philox4x32-10 uniforms keyed by the seed, counter (v, step, b):
//     argmax_v (x_v - log(-log u_v)) is a sample of softmax(x) over the kept set, and depends on
//     no sum, so neither the workgroup size nor the batch changes the token.
//
// LOGITS_PREFIX: where prefix[b, step] >= 0 the row emits that token (a target prefix), else
// the sampled token, else chosen[b] = -1 (the argmax).
//
// The row's token history: inputs[b] is this step's input (BOS at step 0, then the previous
// choice or a forced token); LOGITS_NGRAM and LOGITS_SEQUENCES keep every input in hist[b, step]
// (column 0: BOS, never counted), LOGITS_REPEAT marks seen[b, v] = 1 once v was an input after BOS. Both persist across
// the steps' dispatches (the caller zeroes `seen` before the first). Both are f32 (ids exact
// below 2^24) so that beam search gathers them by parent row with the state (Embedding).
layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;

#include "reduce.glsl"

layout(set = 0, binding = 0) buffer Logits { float logits[]; };              // [B, V]
layout(set = 0, binding = 1) readonly buffer Inputs { int inputs[]; };       // [B]
layout(set = 0, binding = 2) buffer History { float hist[]; };               // [B, ld] token ids
layout(set = 0, binding = 3) buffer Seen { float seen[]; };                  // [B, V] 0 / 1
// [n_suppressed] single ids, then per sequence (start, length) into this buffer, then their ids.
layout(set = 0, binding = 4) readonly buffer Suppressed { int suppressed[]; };
layout(set = 0, binding = 5) writeonly buffer Chosen { int chosen[]; };      // [B]
layout(set = 0, binding = 6) readonly buffer Prefix { int prefix[]; };       // [B, prefix_len]

layout(push_constant) uniform Push {
  uint B;
  uint V;
  uint ld;          // history columns per row
  uint step;
  uint flags;
  float inv_temperature;
  float penalty;
  uint ngram;
  uint min_length;
  int eos;
  int unk;
  uint n_suppressed;
  uint top_k;       // 0: no top-k
  float top_p;      // 1: no top-p
  uint seed_lo;
  uint seed_hi;
  uint prefix_len;  // LOGITS_PREFIX: columns of `prefix` (-1: that row's prefix has ended)
  uint n_sequences; // LOGITS_SEQUENCES: suppressed sequences of 2 or more tokens
} p;

const uint NONE = 0xffffffffu;

#include "kernel_flags.h"  // Push::flags: LOGITS_*

#include "float_order.glsl"

// Philox4x32-10 (Salmon et al. 2011, Random123's philox4x32_R(10)).
uvec4 philox(uvec4 c, uvec2 k) {
  for (int r = 0; r < 10; ++r) {
    if (r > 0) k += uvec2(0x9E3779B9u, 0xBB67AE85u);
    uint hi0, lo0, hi1, lo1;
    umulExtended(0xD2511F53u, c.x, hi0, lo0);
    umulExtended(0xCD9E8D57u, c.z, hi1, lo1);
    c = uvec4(hi1 ^ c.y ^ k.x, lo1, hi0 ^ c.w ^ k.y, lo0);
  }
  return c;
}

void main() {
  const uint b = gl_WorkGroupID.x + gl_NumWorkGroups.x * gl_WorkGroupID.y;
  if (b >= p.B) return;  // uniform per workgroup
  const uint lane = gl_LocalInvocationIndex;
  const uint WG = gl_WorkGroupSize.x;
  const uint row = b * p.V;
  const int tok = inputs[b];
  const bool generated = p.step > 0u;  // this step's input was chosen (or forced), not BOS
  const float NEG_INF = -1.0 / 0.0;

  // Phase 1.
  if ((p.flags & (LOGITS_REPEAT | LOGITS_TEMPERATURE)) != 0u) {
    for (uint v = lane; v < p.V; v += WG) {
      float x = logits[row + v];
      if ((p.flags & LOGITS_REPEAT) != 0u) {
        const bool now = generated && int(v) == tok;
        if (now || seen[row + v] != 0.0) x = x < 0.0 ? x * p.penalty : x / p.penalty;
        if (now) seen[row + v] = 1.0;
      }
      if ((p.flags & LOGITS_TEMPERATURE) != 0u) x *= p.inv_temperature;
      logits[row + v] = x;
    }
  }
  // Phase 1's writes before phase 2's (which may hit any entry of the row).
  memoryBarrierBuffer();
  barrier();

  // Phase 2.
  if ((p.flags & LOGITS_SUPPRESS) != 0u) {
    for (uint i = lane; i < p.n_suppressed; i += WG) logits[row + uint(suppressed[i])] = NEG_INF;
  }
  if (lane == 0u) {
    if ((p.flags & LOGITS_UNK) != 0u) logits[row + uint(p.unk)] = NEG_INF;
    if ((p.flags & LOGITS_MIN_LENGTH) != 0u && p.step < p.min_length) logits[row + uint(p.eos)] = NEG_INF;
  }
  if ((p.flags & LOGITS_NGRAM) != 0u) {
    // Generated tokens g_1 .. g_t are the inputs of steps 1 .. t (t = step): hist columns
    // 1 .. t-1 from earlier dispatches, and column t, this step's input, from inputs[b].
    const uint t = p.step, n = p.ngram, h = b * p.ld;
    if (t >= n) {
      // The next token x would complete (g_{t-n+2} .. g_t, x): ban g_{i+n-1} for every i in
      // [1, t-n+1] where g_i .. g_{i+n-2} equals that prefix.
      for (uint i = 1u + lane; i + n - 1u <= t; i += WG) {
        bool same = true;
        for (uint j = 0u; j + 1u < n && same; ++j) {
          const uint a = i + j, c = t - n + 2u + j;
          same = (a == t ? tok : int(hist[h + a])) == (c == t ? tok : int(hist[h + c]));
        }
        if (same) {
          const uint e = i + n - 1u;
          const int ban = e == t ? tok : int(hist[h + e]);
          if (ban >= 0 && uint(ban) < p.V) logits[row + uint(ban)] = NEG_INF;
        }
      }
    }
  }

  if ((p.flags & LOGITS_SEQUENCES) != 0u) {
    // A sequence s_0 .. s_{L-1} bans s_{L-1} when g_{t-L+2} .. g_t equal s_0 .. s_{L-2}.
    const uint t = p.step, h = b * p.ld;
    for (uint s = lane; s < p.n_sequences; s += WG) {
      const uint at = uint(suppressed[p.n_suppressed + 2u * s]);
      const uint L = uint(suppressed[p.n_suppressed + 2u * s + 1u]);
      if (t + 1u < L) continue;  // fewer than L - 1 generated tokens
      bool same = true;
      for (uint j = 0u; j + 1u < L && same; ++j) {
        const uint c = t + 2u + j - L;
        same = (c == t ? tok : int(hist[h + c])) == suppressed[at + j];
      }
      if (same) logits[row + uint(suppressed[at + L - 1u])] = NEG_INF;
    }
  }

  int pick = -1;  // chosen[b]: -1 lets the argmax choose
  if ((p.flags & LOGITS_SAMPLE) != 0u) {
    memoryBarrierBuffer();
    barrier();
    // Phase 3. The largest key kk with count(key >= kk) >= top_k: the top-k entries and ties.
    uint lo = 1u;
    if (p.top_k > 0u && p.top_k < p.V) {
      uint hi = NONE;
      while (lo < hi) {
        const uint mid = lo + (hi - lo + 1u) / 2u;
        float c = 0.0;
        for (uint v = lane; v < p.V; v += WG) c += float_order_key(logits[row + v]) >= mid ? 1.0 : 0.0;
        if (workgroup_sum(c) >= float(p.top_k)) lo = mid;
        else hi = mid - 1u;
      }
    }
    float mx = NEG_INF;
    for (uint v = lane; v < p.V; v += WG) mx = max(mx, logits[row + v]);
    mx = workgroup_max(mx);
    if (p.top_p < 1.0 && !isinf(mx)) {
      // The largest key with mass(key >= it) >= top_p * mass(kept): the nucleus and ties.
      float z = 0.0;
      for (uint v = lane; v < p.V; v += WG) {
        const float x = logits[row + v];
        if (float_order_key(x) >= lo) z += exp(x - mx);
      }
      const float target = p.top_p * workgroup_sum(z);
      uint hi = NONE;
      while (lo < hi) {
        const uint mid = lo + (hi - lo + 1u) / 2u;
        float s = 0.0;
        for (uint v = lane; v < p.V; v += WG) {
          const float x = logits[row + v];
          if (float_order_key(x) >= mid) s += exp(x - mx);
        }
        if (workgroup_sum(s) >= target) lo = mid;
        else hi = mid - 1u;
      }
    }
    // Gumbel-max over the kept entries; -inf entries have no probability.
    uint best = 0u, best_i = NONE;
    for (uint v = lane; v < p.V; v += WG) {
      const float x = logits[row + v];
      if (float_order_key(x) < lo || isinf(x) || isnan(x)) continue;
      const uvec4 r = philox(uvec4(v, p.step, b, 0u), uvec2(p.seed_lo, p.seed_hi));
      const float u = (float(r.x >> 8) + 0.5) * (1.0 / 16777216.0);  // (0, 1)
      const uint key = float_order_key(x - log(-log(u)));
      if (key > best) {
        best = key;
        best_i = v;
      }
    }
    const uint best_key = workgroup_max_uint(best);
    const uint arg = workgroup_min_uint(best == best_key ? best_i : NONE);
    // No finite entry: token 0 (the choice flags the row as non-finite).
    pick = arg == NONE ? 0 : int(arg);
  }
  if ((p.flags & LOGITS_PREFIX) != 0u && p.step < p.prefix_len) {
    const int forced = prefix[b * p.prefix_len + p.step];
    if (forced >= 0) pick = forced;
  }
  if ((p.flags & (LOGITS_SAMPLE | LOGITS_PREFIX)) != 0u && lane == 0u) chosen[b] = pick;
  if ((p.flags & (LOGITS_NGRAM | LOGITS_SEQUENCES)) != 0u && lane == 0u) hist[b * p.ld + p.step] = float(tok);
}
