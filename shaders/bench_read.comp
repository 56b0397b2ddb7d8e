#version 450
// vkrnn-bench's read-shader ceiling: src summed in vec4s, PER_INVOCATION of them per invocation,
// one vec4 sum written per invocation (1 / PER_INVOCATION of the bytes read). The kernels that
// decode is made of mostly read (a GEMV's weights, attention's keys and values): this is their
// like-for-like bound, beside the copy shader's read + write one. Loads are laid out as
// bench_copy.comp's: lanes stride by the workgroup size, large counts fold into
// gl_NumWorkGroups.y.
layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
layout(constant_id = 3) const uint PER_INVOCATION = 16;  // vec4s each invocation sums
// Read src through srct, a texel view of the same tensor (the kernels' read path on CPU drivers).
layout(constant_id = 4) const bool TEXEL = false;

layout(set = 0, binding = 0) readonly buffer Src { vec4 src[]; };
layout(set = 0, binding = 1) writeonly buffer Dst { vec4 dst[]; };  // one sum per invocation
layout(set = 0, binding = 2) uniform usamplerBuffer srct;  // TEXEL: binding 0 as 16-byte texels

layout(push_constant) uniform Push {
  uint n;  // vec4 count of src
} p;

void main() {
  const uint group = gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x;
  const uint lane = gl_LocalInvocationID.x;
  const uint base = group * gl_WorkGroupSize.x * PER_INVOCATION + lane;
  vec4 sum = vec4(0.0);
  for (uint k = 0; k < PER_INVOCATION; ++k) {
    const uint i = base + k * gl_WorkGroupSize.x;
    if (i < p.n) sum += TEXEL ? uintBitsToFloat(texelFetch(srct, int(i))) : src[i];
  }
  // Sum j of the workgroup-major order the host checks: invocation `lane` of workgroup `group`.
  dst[group * gl_WorkGroupSize.x + lane] = sum;
}
