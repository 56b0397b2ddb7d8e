#version 450
#extension GL_GOOGLE_include_directive : require
#include "variants.glsl"
// out = a + b elementwise (residual connections). IN_PLACE: a += b.
#if IN_PLACE
layout(set = 0, binding = 0) buffer A { float as[]; };
layout(set = 0, binding = 1) readonly buffer B { float bs[]; };
#define OUT as
#else
layout(set = 0, binding = 0) readonly buffer A { float as[]; };
layout(set = 0, binding = 1) readonly buffer B { float bs[]; };
layout(set = 0, binding = 2) writeonly buffer Out { float outs[]; };
#define OUT outs
#endif

layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;

layout(push_constant) uniform Push {
  uint n;
} p;

void main() {
  const uint i = gl_GlobalInvocationID.x + gl_NumWorkGroups.x * gl_WorkGroupSize.x * gl_GlobalInvocationID.y;
  if (i < p.n) OUT[i] = as[i] + bs[i];
}
