#version 450
// Second half of an LSTM step with proj_size P: h_t = W_hr h_raw (h_raw = o * tanh(c) written by
// rnn_step in RNN_RAW_H mode), with the same length masking as rnn_step: rows past their length
// carry h_prev and write zeros to out[b, s]. Both directions in one dispatch (z = direction).
#extension GL_GOOGLE_include_directive : require
#define WEIGHT_I8_ID 6
#include "rnn_common.glsl"

layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
layout(constant_id = 3) const uint UNITS = 1;       // projected units per workgroup
layout(constant_id = 4) const uint BB = 1;          // batch rows per workgroup
layout(constant_id = 5) const bool ALIGNED = true;  // H % 4 == 0

layout(set = 0, binding = 0) readonly buffer RS { float raws[]; };  // h_raw [D][B][H]
layout(set = 0, binding = 0) readonly buffer RV { vec4 rawv[]; };
// binding 1: W_hr [D][P][H], float, half or int8 (rnn_common.glsl; D = gl_NumWorkGroups.z)
layout(set = 0, binding = 2) readonly buffer HP { float h_prev[]; };
layout(set = 0, binding = 3) writeonly buffer HN { float h_next[]; };
layout(set = 0, binding = 4) writeonly buffer OUT { float outs[]; };
layout(set = 0, binding = 5) readonly buffer LEN { int lengths[]; };

// Push::flags: RNN_H_ZERO, RNN_NO_LENGTHS, RNN_NO_OUT.
#include "kernel_flags.h"

layout(push_constant) uniform Push {
  uint s, B, T, H, P;
  uint h_prev_off, h_next_off;  // h[off + (d * B + b) * P + k]
  uint out_off, out_ldd, out_ldb, out_ldt;
  uint flags;
} p;

vec4 load_raw(uint row, uint k4) {
  if (ALIGNED) return rawv[row * (p.H / 4) + k4];
  const uint base = row * p.H, k = k4 * 4;
  return vec4(k < p.H ? raws[base + k] : 0.0, k + 1 < p.H ? raws[base + k + 1] : 0.0,
              k + 2 < p.H ? raws[base + k + 2] : 0.0, k + 3 < p.H ? raws[base + k + 3] : 0.0);
}

void main() {
  const uint d = gl_WorkGroupID.z;
  const bool reverse = d == 1;
  const uint b0 = gl_WorkGroupID.y * BB;
  const uint k4_count = (p.H + 3) / 4;

  for (uint u = COOP_ID; u < UNITS; u += COOP_COUNT) {
    const uint j = gl_WorkGroupID.x * UNITS + u;
    if (j >= p.P) break;  // coop-uniform

    float acc[BB];
    for (uint b = 0; b < BB; ++b) acc[b] = 0.0;
    for (uint k4 = LANE; k4 < k4_count; k4 += LANES) {
      const vec4 w = load_weight4(d * p.P + j, k4, p.H, ALIGNED);
      for (uint b = 0; b < BB; ++b) acc[b] += dot(w, load_raw(d * p.B + min(b0 + b, p.B - 1), k4));
    }
    const float scale = weight_scale(gl_NumWorkGroups.z * p.P, d * p.P + j, p.H);
    for (uint b = 0; b < BB; ++b) acc[b] = COOP_SUM(acc[b]) * scale;

    for (uint b = 0; b < BB; ++b) {
      const uint row = b0 + b;
      if ((b % LANES) != LANE || row >= p.B) continue;
      const uint len = (p.flags & RNN_NO_LENGTHS) != 0 ? p.T : uint(clamp(lengths[row], 0, int(p.T)));
      const bool live = p.s < len;
      const uint t = reverse ? len - 1 - p.s : p.s;
      const uint state = d * p.B + row;
      const float carried = (p.flags & RNN_H_ZERO) != 0 ? 0.0 : h_prev[p.h_prev_off + state * p.P + j];
      const float h = live ? acc[b] : carried;
      h_next[p.h_next_off + state * p.P + j] = h;
      if ((p.flags & RNN_NO_OUT) == 0)
        outs[p.out_off + d * p.out_ldd + row * p.out_ldb + (live ? t : p.s) * p.out_ldt + j] =
          live ? h : 0.0;
    }
  }
}
