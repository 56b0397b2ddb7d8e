#version 450
#extension GL_GOOGLE_include_directive : require
#include "variants.glsl"
// Adds the sinusoidal positional encoding of "Attention is all you need" (PyTorch tutorial
// definition) to x [rows = B * S, d]:
//   out[b, s, 2i]   = x[b, s, 2i]   + sin(pos * w_i)
//   out[b, s, 2i+1] = x[b, s, 2i+1] + cos(pos * w_i),   pos = s + offset, w_i = 10000^(-2i/d)
// One invocation per (row, i) column pair. pos * w_i reaches ~1e4 rad and beyond, where fp32
// products and GPU sin/cos lose digits: the host passes w_i / 2pi as a 64-bit fixed-point
// fraction of a turn, pos * w_i mod one turn is then exact integer arithmetic, and sin/cos run
// on a reduced argument |y| <= pi/4 with polynomials of ~1 ulp (Cephes sinf/cosf), so the result
// is good to ~1e-7 absolute for any position below 2^32 on any device.
#if IN_PLACE
layout(set = 0, binding = 0) buffer X { float xs[]; };
layout(set = 0, binding = 1) readonly buffer Turns { uvec2 turns[]; };  // (lo, hi) words
#define OUT xs
#else
layout(set = 0, binding = 0) readonly buffer X { float xs[]; };
layout(set = 0, binding = 1) readonly buffer Turns { uvec2 turns[]; };
layout(set = 0, binding = 2) writeonly buffer Out { float outs[]; };
#define OUT outs
#endif

layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;

layout(push_constant) uniform Push {
  uint rows;    // B * S
  uint S;       // positions restart every S rows
  uint d;       // model dimension (row length)
  uint pairs;   // ceil(d / 2)
  uint offset;  // position of row 0 (for incremental decoding)
} p;

float sin_reduced(float x) {  // |x| <= pi/4
  const float z = x * x;
  return ((-1.9515295891e-4 * z + 8.3321608736e-3) * z - 1.6666654611e-1) * z * x + x;
}

float cos_reduced(float x) {  // |x| <= pi/4
  const float z = x * x;
  return ((2.443315711809948e-5 * z - 1.388731625493765e-3) * z + 4.166664568298827e-2) * z * z -
         0.5 * z + 1.0;
}

void main() {
  const uint id = gl_GlobalInvocationID.x + gl_NumWorkGroups.x * gl_WorkGroupSize.x * gl_GlobalInvocationID.y;
  const uint row = id / p.pairs;
  const uint i = id % p.pairs;
  if (row >= p.rows) return;
  const uint pos = row % p.S + p.offset;

  // Top 32 bits of the fraction of a turn, (pos * F) mod 2^64 >> 32 with F = turns[i].
  uint carry, low;
  umulExtended(pos, turns[i].x, carry, low);
  const uint frac = pos * turns[i].y + carry;
  // Nearest quarter turn k (0..3) and the remainder in [-1/8, 1/8) turn, as a signed integer.
  const uint k = (frac + 0x20000000u) >> 30;
  const int rem = int(frac - (k << 30));
  const float y = float(rem) * 1.4629180792671596e-9;  // 2 pi / 2^32
  const float sy = sin_reduced(y), cy = cos_reduced(y);
  float s, c;
  if (k == 0u) { s = sy; c = cy; }
  else if (k == 1u) { s = cy; c = -sy; }
  else if (k == 2u) { s = -sy; c = -cy; }
  else { s = -cy; c = sy; }

  const uint at = row * p.d + 2u * i;
  OUT[at] = xs[at] + s;
  if (2u * i + 1u < p.d) OUT[at + 1u] = xs[at + 1u] + c;
}
