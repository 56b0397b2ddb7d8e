#version 450
#extension GL_GOOGLE_include_directive : require
// Elementwise activation: out = f(x), f = tanh (0), sigmoid (1) or relu (2) (spec constant 3).
// IN_PLACE: x = f(x).
layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
layout(constant_id = 3) const uint FUNC = 0;

// tanh_accurate / sigmoid_accurate (GLSL's tanh loses digits near 0 on some drivers); no
// subgroup operations are used here.
#define USE_SUBGROUP 0
#include "gemv_common.glsl"

#if IN_PLACE
layout(set = 0, binding = 0) buffer X { float xs[]; };
#define OUT xs
#else
layout(set = 0, binding = 0) readonly buffer X { float xs[]; };
layout(set = 0, binding = 1) writeonly buffer Out { float outs[]; };
#define OUT outs
#endif

layout(push_constant) uniform Push {
  uint n;
} p;

void main() {
  const uint i = gl_GlobalInvocationID.x + gl_NumWorkGroups.x * gl_WorkGroupSize.x * gl_GlobalInvocationID.y;
  if (i >= p.n) return;
  const float x = xs[i];
  float y;
  if (FUNC == 0) {
    y = tanh_accurate(x);
  } else if (FUNC == 1) {
    y = sigmoid_accurate(x);
  } else {
    y = max(x, 0.0);
  }
  OUT[i] = y;
}
