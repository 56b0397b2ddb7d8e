// Cooperative dot products for gemv.comp and the recurrent kernels.
//
// A "coop" is the group of invocations that computes one dot product together: each lane takes
// every LANES-th vec4 of K, then the partial sums are reduced.
//  - USE_SUBGROUP=1: a coop is one subgroup (the real one, whatever size the driver picked), the
//    reduction is subgroupAdd. The workgroup's subgroups work on different outputs.
//  - USE_SUBGROUP=0 (devices without subgroup arithmetic): a coop is a single invocation that
//    computes whole dot products itself, so there is nothing to reduce and no barrier at all
//    (a shared-memory tree is 3-7x slower than this on lavapipe and only helps on GPUs that also
//    have subgroups).
#ifndef USE_SUBGROUP
#define USE_SUBGROUP 1
#endif

#if USE_SUBGROUP
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#define COOP_ID gl_SubgroupID
#define COOP_COUNT gl_NumSubgroups
#define LANE gl_SubgroupInvocationID
#define LANES gl_SubgroupSize
#define COOP_SUM(v) subgroupAdd(v)
#else
#define COOP_ID gl_LocalInvocationIndex
#define COOP_COUNT (gl_WorkGroupSize.x * gl_WorkGroupSize.y * gl_WorkGroupSize.z)
#define LANE 0u
#define LANES 1u
#define COOP_SUM(v) (v)
#endif

// tanh with full fp32 relative accuracy near 0 and no inf/inf for large |x| (GLSL's tanh is
// often (e^2x - 1)/(e^2x + 1), which loses digits near 0 and gives NaN past ~44).
float tanh_accurate(float x) {
  const float a = abs(x);
  if (a < 0.25) {
    // Taylor series to x^9: the first dropped term is < 2e-8 relative at 0.25.
    const float x2 = x * x;
    return x * (1.0 + x2 * (-1.0 / 3.0 + x2 * (2.0 / 15.0 + x2 * (-17.0 / 315.0 + x2 * (62.0 / 2835.0)))));
  }
  const float e = exp(-2.0 * min(a, 20.0));
  return sign(x) * ((1.0 - e) / (1.0 + e));
}

float sigmoid_accurate(float x) {
  return 1.0 / (1.0 + exp(-x));
}
