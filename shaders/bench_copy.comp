#version 450
// vkrnn-bench's copy-shader ceiling: dst = src in vec4s. Each workgroup copies a contiguous
// block of local_size_x * PER_INVOCATION vec4s; lanes stride by the workgroup size so every
// load and store is coalesced. Large counts fold into gl_NumWorkGroups.y.
layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
layout(constant_id = 3) const uint PER_INVOCATION = 1;  // vec4s each invocation copies
// Read src through srct, a texel view of the same tensor: the read path the kernels take on CPU
// drivers (docs/kernels.md), so that their fraction of this ceiling compares like with like.
layout(constant_id = 4) const bool TEXEL = false;

layout(set = 0, binding = 0) readonly buffer Src { vec4 src[]; };
layout(set = 0, binding = 1) writeonly buffer Dst { vec4 dst[]; };
layout(set = 0, binding = 2) uniform usamplerBuffer srct;  // TEXEL: binding 0 as 16-byte texels

layout(push_constant) uniform Push {
  uint n;  // vec4 count
} p;

void main() {
  const uint group = gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x;
  const uint base = group * gl_WorkGroupSize.x * PER_INVOCATION + gl_LocalInvocationID.x;
  for (uint k = 0; k < PER_INVOCATION; ++k) {
    const uint i = base + k * gl_WorkGroupSize.x;
    if (i < p.n) dst[i] = TEXEL ? uintBitsToFloat(texelFetch(srct, int(i))) : src[i];
  }
}
