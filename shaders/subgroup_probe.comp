#version 450
// What a shader really sees of subgroups, for tests and vkrnn-info to compare with what the
// device reports (every op plans with the reported size: dims-loop bounds, single-subgroup
// workgroups without barriers, lanes per row). A binary that runs with another size would give
// wrong numbers somewhere far away; this names it.
//   MODE 0: every invocation writes (gl_SubgroupSize, gl_NumSubgroups, gl_SubgroupID,
//           gl_SubgroupInvocationID).
//   MODE 1: every invocation writes the number of active lanes of its subgroup (subgroupAdd of
//           1) in .x. After specialization this code never names the subgroup size, so the
//           driver cannot fold the size into the shader before looking its binary up in a
//           cache. Mesa 22.3's disk cache key leaves LP_NATIVE_VECTOR_WIDTH out: it hands a
//           binary built for 8 lanes to a 16-lane lavapipe. Mode 1 catches that; mode 0
//           (gl_SubgroupSize is folded in, so the key differs) does not.
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint MODE = 0;

layout(set = 0, binding = 0) writeonly buffer Seen { uvec4 seen[]; };

void main() {
  if (MODE == 0) {
    seen[gl_LocalInvocationIndex] =
        uvec4(gl_SubgroupSize, gl_NumSubgroups, gl_SubgroupID, gl_SubgroupInvocationID);
  } else {
    seen[gl_LocalInvocationIndex] = uvec4(subgroupAdd(1u), 0, 0, 0);
  }
}
