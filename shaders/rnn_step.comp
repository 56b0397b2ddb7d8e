#version 450
// One timestep of a recurrent layer, both directions in one dispatch (z = direction), with the
// gate nonlinearities fused into the recurrent product. A coop (gemv_common.glsl) owns UPI
// consecutive hidden units j and BB batch rows: it computes W_hh[g*H + j] . h_prev[b] for every
// gate g of its units, so it holds everything the cell needs and applies it itself (one lane
// per batch row). UPI and BB are register blocking: each loaded W vec4 feeds BB products, each
// loaded h vec4 feeds G*UPI.
//
// Per-sequence lengths (pack_padded_sequence semantics): at step s, row b is live when
// s < len[b]; the forward direction then processes t = s, the reverse one t = len[b] - 1 - s.
// Rows past their length carry h (and c) unchanged and write zeros to out[b, s] (exactly the
// padded positions, each visited once).
//
// RNN_X_INLINE (a single decoder step, Rnn::step): no xp; the coop also computes W_ih x + b_ih
// for its units from x [B][IN] (rows x_ld apart from x_off) and W_ih at binding 10, which saves
// the input GEMM's dispatch.
//
// WIDE / X_WIDE (fp16 or int8 W_hh / W_ih whose rows are whole 16-byte units): each lane loads
// 16 bytes of a weight row at a time (8 halves or 16 int8, gemv_common.glsl), through the texel
// views with TEXEL. One load per 2 or 4 vec4s of K, as in the GEMV's WIDE path.
#extension GL_GOOGLE_include_directive : require
#define RNN_INPUT_WEIGHTS
#define WEIGHT_I8_ID 8
#include "rnn_common.glsl"

layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
layout(constant_id = 3) const uint CELL = 0;
layout(constant_id = 4) const uint UNITS = 1;       // hidden units per workgroup
layout(constant_id = 5) const uint BB = 1;          // batch rows per workgroup
layout(constant_id = 6) const bool ALIGNED = true;  // HO % 4 == 0: vec4 loads of h and W_hh
layout(constant_id = 7) const uint UPI = 1;         // consecutive units per coop
// W_hh's 16-byte loads (fp32 vec4s, or WIDE) and h's vec4s through texel views wt / ht of the
// same tensors (ALIGNED; plan::texel_loads, docs/kernels.md); W_ih and x likewise (wit, xt).
layout(constant_id = 9) const bool TEXEL = false;
// RNN_X_INLINE: IN, x_off and x_ld are multiples of 4 (vec4 loads of x and W_ih). A constant, not
// a test of the push block: lavapipe ran the inline step 2x slower with the test (K.gru, B = 1).
layout(constant_id = 10) const bool X_ALIGNED = true;
layout(constant_id = 11) const bool WIDE = false;    // fp16 / int8 W_hh rows: 16-byte loads
layout(constant_id = 12) const bool X_WIDE = false;  // RNN_X_INLINE: the same for W_ih
#if USE_SHUFFLE
layout(constant_id = 13) const uint V_LANES = 8;  // lanes sharing h's and x's loads (below)
#endif
// W_hh in blocks of PACK_UNITS hidden units (rnn_dots.glsl's w_walk); 0: row-major.
layout(constant_id = 14) const uint PACK_UNITS = 0;
// RNN_X_INLINE: W_ih in the same gate blocks (of X_PACK_UNITS units; D = 1), 0: row-major.
layout(constant_id = 15) const uint X_PACK_UNITS = 0;
// fp32 weights: K walked in this many segments in step (rnn_dots.glsl; plan::rnn: CPU drivers,
// packed W_hh, BB = 1), so that a CPU thread keeps as many runs of loads in flight; 1: in order.
layout(constant_id = 16) const uint K_STREAMS = 1;
const uint G = GATES_OF(CELL);

layout(set = 0, binding = 0) readonly buffer XP { float xp[]; };   // W_ih x + b_ih
// binding 1: W_hh [D][G*H][HO], float, half or int8 (rnn_common.glsl; D = gl_NumWorkGroups.z)
layout(set = 0, binding = 2) readonly buffer BH { float b_hh[]; }; // [D][G*H]
layout(set = 0, binding = 3) readonly buffer HS { float hs[]; };   // h_prev [D][B][HO] at offset
layout(set = 0, binding = 3) readonly buffer HV { vec4 hv[]; };
layout(set = 0, binding = 4) writeonly buffer HN { float h_next[]; };
layout(set = 0, binding = 5) readonly buffer C0 { float c0[]; };
layout(set = 0, binding = 6) buffer CS { float cs[]; };            // c, updated in place
layout(set = 0, binding = 7) writeonly buffer OUT { float outs[]; };
layout(set = 0, binding = 8) readonly buffer LEN { int lengths[]; };
layout(set = 0, binding = 9) readonly buffer XS { float xs[]; };  // x (RNN_X_INLINE)
layout(set = 0, binding = 9) readonly buffer XV { vec4 xv[]; };
// binding 10: W_ih [G*H][IN] (D = 1), float, half or int8 (rnn_common.glsl)
layout(set = 0, binding = 11) readonly buffer BI { float b_ih[]; };  // [D][G*H]
layout(set = 0, binding = 12) uniform usamplerBuffer wt;  // TEXEL: binding 1 as 16-byte texels
layout(set = 0, binding = 13) uniform usamplerBuffer ht;  // TEXEL: binding 3 as 16-byte texels
layout(set = 0, binding = 14) uniform usamplerBuffer wit;  // TEXEL (fp32: and X_ALIGNED): binding 10 as texels
layout(set = 0, binding = 15) uniform usamplerBuffer xt;   // TEXEL and X_ALIGNED: binding 9 as texels

// Push::flags: RNN_*.
#include "kernel_flags.h"

layout(push_constant) uniform Push {
  uint s, B, T, H, HO;
  uint xp_ldb, xp_ldt;  // xp[b * ldb + t * ldt + (d * G + g) * H + j]
  uint h_prev_off, h_next_off;  // h[off + (d * B + b) * HO + k]
  uint c0_off, c_off;           // c[off + (d * B + b) * H + j]
  uint out_off, out_ldd, out_ldb, out_ldt;  // out[off + d * ldd + b * ldb + t * ldt + j]
  uint flags;
  uint s_end;  // rnn_seq's end of a run (one host struct for both); unused here
  uint x_off, x_ld, IN;  // RNN_X_INLINE: x[x_off + b * x_ld + k], k < IN
} p;

#include "rnn_dots.glsl"

// Where W_ih's rows keep their 16-byte units (RNN_X_INLINE), as w_walk for W_hh.
uvec2 wi_walk(uint row, uint count) {
  return X_PACK_UNITS == 0 ? row_major_walk(row, count) : gate_block_walk(row, count, G, p.H, X_PACK_UNITS);
}

// Elements 4*k4 .. 4*k4+3 of W_ih's row `row` (RNN_X_INLINE; `at` its vec4's unit, wi_walk,
// where X_ALIGNED or packed: packed rows are whole vec4s whatever x's alignment).
vec4 load_wi(uint row, uint k4, uint at) {
  if (F32_WEIGHTS && (X_ALIGNED || X_PACK_UNITS != 0)) return TEXEL ? uintBitsToFloat(texelFetch(wit, int(at))) : ALIGNED_WEIGHT4(wiv, at);
  return load_input_weight4(row, k4, p.IN, X_ALIGNED);
}

// X_WIDE: W_ih's 16-byte unit `at` (wi_walk).
uvec4 load_wiq(uint at) { return TEXEL ? texelFetch(wit, int(at)) : wiw[at]; }

vec4 load_h(uint row, uint k4) {
  if (ALIGNED) {
    const uint at = (p.h_prev_off + row * p.HO) / 4 + k4;
    return TEXEL ? uintBitsToFloat(texelFetch(ht, int(at))) : hv[at];
  }
  const uint base = p.h_prev_off + row * p.HO, k = k4 * 4;
  return vec4(k < p.HO ? hs[base + k] : 0.0, k + 1 < p.HO ? hs[base + k + 1] : 0.0,
              k + 2 < p.HO ? hs[base + k + 2] : 0.0, k + 3 < p.HO ? hs[base + k + 3] : 0.0);
}

// Elements 4*k4 .. 4*k4+3 of x's row b (zeros past IN).
vec4 load_x(uint b, uint k4) {
  const uint base = p.x_off + b * p.x_ld, k = k4 * 4;
  if (X_ALIGNED) return TEXEL ? uintBitsToFloat(texelFetch(xt, int(base / 4 + k4))) : xv[base / 4 + k4];
  return vec4(k < p.IN ? xs[base + k] : 0.0, k + 1 < p.IN ? xs[base + k + 1] : 0.0,
              k + 2 < p.IN ? xs[base + k + 2] : 0.0, k + 3 < p.IN ? xs[base + k + 3] : 0.0);
}

void main() {
  const uint d = gl_WorkGroupID.z;
  const bool reverse = d == 1;
  const uint b0 = gl_WorkGroupID.y * BB;
  const uint k4_count = (p.HO + 3) / 4;
  const uint gate_base = d * G * p.H;  // first row of this direction's W_hh / b_hh / xp block
  const bool x_inline = (p.flags & RNN_X_INLINE) != 0;

  for (uint u0 = COOP_ID * UPI; u0 < UNITS; u0 += COOP_COUNT * UPI) {
    const uint j0 = gl_WorkGroupID.x * UNITS + u0;
    if (!LANES_SHARE_LOADS && j0 >= p.H) break;  // coop-uniform
    // Units past H are clamped (computed twice, never stored).
    uint wrow[UPI][4];
    for (uint ui = 0; ui < UPI; ++ui)
      for (uint g = 0; g < G; ++g) wrow[ui][g] = gate_base + g * p.H + min(j0 + ui, p.H - 1);

    float acc[UPI][4][BB];
    for (uint ui = 0; ui < UPI; ++ui)
      for (uint g = 0; g < 4; ++g)
        for (uint b = 0; b < BB; ++b) acc[ui][g][b] = 0.0;
#define H_OF(b, k4) load_h(d * p.B + min(b0 + (b), p.B - 1), k4)
    if ((p.flags & RNN_H_ZERO) == 0) { ACCUMULATE_DOTS(acc, k4_count, WIDE, load_wq, load_w, H_OF, w_walk) }
    const uint hh_rows = gl_NumWorkGroups.z * G * p.H;
    for (uint ui = 0; ui < UPI; ++ui)
      for (uint g = 0; g < G; ++g) {
        const float scale = weight_scale(hh_rows, wrow[ui][g], p.HO);
        for (uint b = 0; b < BB; ++b) acc[ui][g][b] = COOP_SUM(acc[ui][g][b]) * scale;
      }
    // W_ih x for the same rows, when no GEMM computed xp before this dispatch.
    float accx[UPI][4][BB];
    for (uint ui = 0; ui < UPI; ++ui)
      for (uint g = 0; g < 4; ++g)
        for (uint b = 0; b < BB; ++b) accx[ui][g][b] = 0.0;
#define X_OF(b, k4) load_x(min(b0 + (b), p.B - 1), k4)
    if (x_inline) {
      ACCUMULATE_DOTS(accx, (p.IN + 3) / 4, X_WIDE, load_wiq, load_wi, X_OF, wi_walk)
      for (uint ui = 0; ui < UPI; ++ui)
        for (uint g = 0; g < G; ++g) {
          const float scale = input_weight_scale(G * p.H, wrow[ui][g], p.IN);
          for (uint b = 0; b < BB; ++b) accx[ui][g][b] = COOP_SUM(accx[ui][g][b]) * scale;
        }
    }

    for (uint ui = 0; ui < UPI; ++ui) {
      const uint j = j0 + ui;
      if (j >= p.H) break;
      vec4 hb = vec4(0.0);
      for (uint g = 0; g < G; ++g) hb[g] = b_hh[wrow[ui][g]];

      for (uint b = 0; b < BB; ++b) {
        const uint row = b0 + b;
        if ((b % LANES) != LANE || row >= p.B) continue;
        const uint len = (p.flags & RNN_NO_LENGTHS) != 0 ? p.T : uint(clamp(lengths[row], 0, int(p.T)));
        const bool live = p.s < len;
        const uint t = reverse ? len - 1 - p.s : p.s;  // only used when live
        const uint state = d * p.B + row;

        // This unit's own h_prev: GRU needs it, and rows past their length carry it (with a
        // projection h has P < H features: rnn_proj does the carrying then).
        const bool need_prev = (p.flags & RNN_H_ZERO) == 0 &&
                               (CELL == CELL_GRU || (!live && (p.flags & RNN_RAW_H) == 0));
        const float h_prev = need_prev ? hs[p.h_prev_off + state * p.HO + j] : 0.0;
        float c = 0.0;
        if (CELL == CELL_LSTM && (p.flags & RNN_C_ZERO) == 0)
          c = (p.flags & RNN_C_FROM_C0) != 0 ? c0[p.c0_off + state * p.H + j] : cs[p.c_off + state * p.H + j];

        float h = h_prev;
        if (live) {
          vec4 xg = vec4(0.0), hg = vec4(0.0);
          const uint xb = row * p.xp_ldb + t * p.xp_ldt + gate_base + j;
          for (uint g = 0; g < G; ++g) {
            xg[g] = x_inline ? accx[ui][g][b] + b_ih[wrow[ui][g]] : xp[xb + g * p.H];
            hg[g] = acc[ui][g][b] + hb[g];
          }
          h = cell_update(CELL, xg, hg, h_prev, c);
        }
        if (CELL == CELL_LSTM) cs[p.c_off + state * p.H + j] = c;
        if ((p.flags & RNN_RAW_H) != 0) {
          outs[p.out_off + d * p.out_ldd + row * p.out_ldb + j] = h;
        } else {
          h_next[p.h_next_off + state * p.HO + j] = h;
          if ((p.flags & RNN_NO_OUT) == 0)
            outs[p.out_off + d * p.out_ldd + row * p.out_ldb + (live ? t : p.s) * p.out_ldt + j] =
                live ? h : 0.0;
        }
      }
    }
  }
}
