#version 450
// A run of timesteps [p.s, p.s_end) of a recurrent layer in ONE dispatch: each workgroup owns
// BB batch rows of one direction (z = direction) and loops over those steps itself, keeping h in
// shared memory (ping-pong, one barrier() per step). Valid because nothing outside the workgroup
// needs those rows' state; it trades parallelism (one workgroup per BB rows) for zero per-step
// dispatch cost, so the host picks it where the per-step work is small next to a dispatch (see
// src/ops/rnn.cpp). The host splits a layer into as many such runs as keep every invocation's
// loop iterations within the loop budget (lavapipe silently ends loops past 65535 iterations);
// h passes from one run to the next through h_prev / h_next, c stays in c_n.
//
// Same equations, gate order, lengths semantics and output layout as rnn_step.comp; no
// projection (proj_size > 0 always takes the per-step path).
#extension GL_GOOGLE_include_directive : require
#define WEIGHT_I8_ID 8
#include "rnn_common.glsl"

layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
layout(constant_id = 3) const uint CELL = 0;
layout(constant_id = 4) const uint BB = 1;          // batch rows per workgroup
layout(constant_id = 5) const uint HOP = 4;         // HO rounded up to a multiple of 4
layout(constant_id = 6) const bool ALIGNED = true;  // HO % 4 == 0: vec4 loads of W_hh
layout(constant_id = 7) const uint UPI = 1;         // consecutive units per coop
// W_hh's 16-byte loads (fp32 vec4s with ALIGNED, or WIDE) through wt, a texel view of the same
// tensor (plan::texel_loads, docs/kernels.md).
layout(constant_id = 9) const bool TEXEL = false;
// fp16 / int8 W_hh rows of whole 16-byte units (plan::wide_rows): 16 bytes a load, unpacked here
// (gemv_common.glsl), as rnn_step's WIDE loads.
layout(constant_id = 10) const bool WIDE = false;
// W_hh in blocks of PACK_UNITS hidden units (rnn_dots.glsl's w_walk); 0: row-major.
layout(constant_id = 11) const uint PACK_UNITS = 0;
// rnn_step's segments of K (rnn_dots.glsl): not taken here (one batch row shares h along K).
const uint K_STREAMS = 1;
#if USE_SHUFFLE
// Lanes sharing h's loads (rnn_dots.glsl: along K with BB = 1, else over the batch slots).
layout(constant_id = 12) const uint V_LANES = 8;
#endif
const uint G = GATES_OF(CELL);
const uint THREADS = gl_WorkGroupSize.x * gl_WorkGroupSize.y * gl_WorkGroupSize.z;

layout(set = 0, binding = 0) readonly buffer XP { float xp[]; };
// binding 1: W_hh [D][G*H][HO], float, half or int8 (rnn_common.glsl; D = gl_NumWorkGroups.z)
layout(set = 0, binding = 2) readonly buffer BH { float b_hh[]; };
layout(set = 0, binding = 3) readonly buffer HS { float h0[]; };     // h before step p.s
layout(set = 0, binding = 4) writeonly buffer HN { float h_n[]; };   // h after the run
layout(set = 0, binding = 5) readonly buffer C0 { float c0[]; };
layout(set = 0, binding = 6) buffer CS { float cs[]; };  // c_n: the running c, in place
layout(set = 0, binding = 7) writeonly buffer OUT { float outs[]; };
layout(set = 0, binding = 8) readonly buffer LEN { int lengths[]; };
layout(set = 0, binding = 9) uniform usamplerBuffer wt;  // TEXEL: binding 1 as 16-byte texels

// Push::flags: RNN_H_ZERO (h before the run is zero: the first run without h0), RNN_C_FROM_C0 /
// RNN_C_ZERO (the first run: c starts from c0 / at zero; neither: c continues in c_n),
// RNN_NO_LENGTHS.
#include "kernel_flags.h"

layout(push_constant) uniform Push {
  uint s;  // first step of this run (rnn_step's layout: one host struct for both)
  uint B, T, H, HO;
  uint xp_ldb, xp_ldt;
  uint h_prev_off, h_next_off;  // h0 / h_n: h[off + (d * B + b) * HO + k]
  uint c0_off, c_off;   // c[off + (d * B + b) * H + j]
  uint out_off, out_ldd, out_ldb, out_ldt;
  uint flags;
  uint s_end;  // one past the last step of this run (rnn_step ignores it)
  uint x_off, x_ld, IN;  // rnn_step's inline input projection; unused here
} p;

// [ping-pong][row][k], padding kept at zero; as vec4s, each step reads h a vec4 at a time.
shared vec4 hsh4[2 * BB * HOP / 4];
float h_at(uint i) { return hsh4[i / 4][i % 4]; }
void set_h(uint i, float v) { hsh4[i / 4][i % 4] = v; }

#include "rnn_dots.glsl"

void main() {
  const uint d = gl_WorkGroupID.z;
  const bool reverse = d == 1;
  const uint b0 = gl_WorkGroupID.x * BB;
  const uint nb = min(BB, p.B - b0);
  const uint tid = gl_LocalInvocationIndex;
  const uint gate_base = d * G * p.H;

  // Every invocation computes the same lengths, so `steps` is uniform over the workgroup.
  uint lens[BB];
  uint steps = 0;
  for (uint b = 0; b < BB; ++b) {
    lens[b] = b >= nb ? 0u
              : (p.flags & RNN_NO_LENGTHS) != 0 ? p.T
              : uint(clamp(lengths[b0 + b], 0, int(p.T)));
    steps = max(steps, lens[b]);
  }

  for (uint e = tid; e < BB * HOP; e += THREADS) {
    const uint b = e / HOP, k = e % HOP;
    const bool have = (p.flags & RNN_H_ZERO) == 0 && b < nb && k < p.HO;
    set_h(e, have ? h0[p.h_prev_off + (d * p.B + b0 + b) * p.HO + k] : 0.0);
    set_h(BB * HOP + e, 0.0);
  }
  // c lives in c_n, read and written only by the invocation that owns (unit, row): the same
  // (coop, lane) mapping as in the loop below.
  if (CELL == CELL_LSTM && (p.flags & (RNN_C_ZERO | RNN_C_FROM_C0)) != 0) {
    for (uint j0 = COOP_ID * UPI; j0 < p.H; j0 += COOP_COUNT * UPI) {
      for (uint j = j0; j < min(j0 + UPI, p.H); ++j) {
        for (uint b = 0; b < BB; ++b) {
          if ((b % LANES) != LANE || b >= nb) continue;
          const uint state = d * p.B + b0 + b;
          cs[p.c_off + state * p.H + j] = (p.flags & RNN_C_ZERO) != 0 ? 0.0 : c0[p.c0_off + state * p.H + j];
        }
      }
    }
  }
  barrier();

  // This run's steps that some row of the block is live in; the rest are padding.
  const uint s_live = min(p.s_end, steps);
  for (uint s = p.s; s < s_live; ++s) {
    const uint cur = ((s - p.s) & 1) * BB * HOP;
    const uint nxt = BB * HOP - cur;
    for (uint r0 = 0; r0 < p.H; r0 += COOP_COUNT * UPI) {
      const uint j0 = r0 + COOP_ID * UPI;
      // With LANES_SHARE_LOADS every lane of a subgroup runs every round: units past H are
      // clamped (computed twice, never stored).
      if (!LANES_SHARE_LOADS && j0 >= p.H) break;  // coop-uniform
      uint wrow[UPI][4];
      for (uint ui = 0; ui < UPI; ++ui)
        for (uint g = 0; g < G; ++g) wrow[ui][g] = gate_base + g * p.H + min(j0 + ui, p.H - 1);
      float acc[UPI][4][BB];
      for (uint ui = 0; ui < UPI; ++ui)
        for (uint g = 0; g < 4; ++g)
          for (uint b = 0; b < BB; ++b) acc[ui][g][b] = 0.0;
      // HOP / 4 vec4s of K: with WIDE whole units (the rows' padding is zero, and so is h's).
#define H_SHARED(b, k4) hsh4[(cur + min(b, BB - 1) * HOP) / 4 + (k4)]
      ACCUMULATE_DOTS(acc, HOP / 4, WIDE, load_wq, load_w, H_SHARED, w_walk)
      for (uint ui = 0; ui < UPI; ++ui)
        for (uint g = 0; g < G; ++g) {
          const float scale = weight_scale(gl_NumWorkGroups.z * G * p.H, wrow[ui][g], p.HO);
          for (uint b = 0; b < BB; ++b) acc[ui][g][b] = COOP_SUM(acc[ui][g][b]) * scale;
        }

      for (uint ui = 0; ui < UPI; ++ui) {
        const uint j = j0 + ui;
        if (j >= p.H) break;
        vec4 hb = vec4(0.0);
        for (uint g = 0; g < G; ++g) hb[g] = b_hh[wrow[ui][g]];

        for (uint b = 0; b < BB; ++b) {
          if ((b % LANES) != LANE || b >= nb) continue;
          const uint row = b0 + b;
          const bool live = s < lens[b];
          const uint t = reverse ? lens[b] - 1 - s : s;
          const uint state = d * p.B + row;
          const float h_prev = h_at(cur + b * HOP + j);
          float c = CELL == CELL_LSTM ? cs[p.c_off + state * p.H + j] : 0.0;
          float h = h_prev;
          if (live) {
            vec4 xg = vec4(0.0), hg = vec4(0.0);
            const uint xb = row * p.xp_ldb + t * p.xp_ldt + gate_base + j;
            for (uint g = 0; g < G; ++g) {
              xg[g] = xp[xb + g * p.H];
              hg[g] = acc[ui][g][b] + hb[g];
            }
            h = cell_update(CELL, xg, hg, h_prev, c);
            if (CELL == CELL_LSTM) cs[p.c_off + state * p.H + j] = c;
          }
          set_h(nxt + b * HOP + j, h);
          outs[p.out_off + d * p.out_ldd + row * p.out_ldb + (live ? t : s) * p.out_ldt + j] =
              live ? h : 0.0;
        }
      }
    }
    barrier();
  }

  const uint fin = ((s_live > p.s ? s_live - p.s : 0u) & 1) * BB * HOP;
  for (uint e = tid; e < nb * p.HO; e += THREADS) {
    const uint b = e / p.HO, k = e % p.HO;
    h_n[p.h_next_off + (d * p.B + b0 + b) * p.HO + k] = h_at(fin + b * HOP + k);
  }
  // This run's positions that no row of the block is live in (s >= steps): padding.
  const uint pad0 = max(p.s, steps);
  const uint tail = p.s_end > pad0 ? p.s_end - pad0 : 0u;
  for (uint e = tid; e < nb * tail * p.HO; e += THREADS) {
    const uint k = e % p.HO, rest = e / p.HO;
    const uint s = pad0 + rest % tail, b = rest / tail;
    outs[p.out_off + d * p.out_ldd + (b0 + b) * p.out_ldb + s * p.out_ldt + k] = 0.0;
  }
}
