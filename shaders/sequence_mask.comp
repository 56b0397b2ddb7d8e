#version 450
#extension GL_GOOGLE_include_directive : require
#include "variants.glsl"
// Zeroes the padded steps of [B, T, W]: out[b, t, :] = t < lengths[b] ? x[b, t, :] : 0 (a
// select, so NaN / inf in padding become 0 too). IN_PLACE: only padded elements are written.
#if IN_PLACE
layout(set = 0, binding = 0) buffer X { float xs[]; };
layout(set = 0, binding = 1) readonly buffer Lengths { int lens[]; };
#else
layout(set = 0, binding = 0) readonly buffer X { float xs[]; };
layout(set = 0, binding = 1) readonly buffer Lengths { int lens[]; };
layout(set = 0, binding = 2) writeonly buffer Out { float outs[]; };
#endif

layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;

layout(push_constant) uniform Push {
  uint n;      // B * T * W
  uint width;  // W
  uint steps;  // T
} p;

void main() {
  const uint i = gl_GlobalInvocationID.x + gl_NumWorkGroups.x * gl_WorkGroupSize.x * gl_GlobalInvocationID.y;
  if (i >= p.n) return;
  const uint row = i / p.width;
  const uint b = row / p.steps, t = row - b * p.steps;
  const int len = lens[b];
  // Compared unsigned so that T >= 2^31 cannot overflow; len <= 0 pads every step.
  const bool pad = len <= 0 || t >= uint(len);
#if IN_PLACE
  if (pad) xs[i] = 0.0;
#else
  outs[i] = pad ? 0.0 : xs[i];
#endif
}
