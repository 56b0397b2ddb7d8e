// Workgroup-wide max / sum reductions for 1-D workgroups (gl_WorkGroupSize.x a power of two).
//
//  - USE_SUBGROUP=1: subgroup arithmetic inside each subgroup (whatever size the driver picked,
//    full or partial), then one shared slot per subgroup, combined by every invocation in
//    subgroup-id order. A single-subgroup workgroup needs no shared memory and no barrier.
//  - USE_SUBGROUP=0: a shared-memory tree (log2(WG) barriers).
// Both give every invocation the same result and always combine in the same order, so results
// are bit-identical run after run.
//
// Every invocation of the workgroup must call these in uniform control flow. A call begins with
// a barrier() that guards the reuse of the scratch, so calls may follow each other directly;
// callers must not rely on a call acting as a barrier for their own shared data.
// Include this AFTER `layout(local_size_x_id = ...) in;`: the scratch is sized by
// gl_WorkGroupSize, which is the literal (1, 1, 1) until that declaration is seen.
#ifndef REDUCE_GLSL
#define REDUCE_GLSL

#include "subgroup.glsl"

shared float reduce_scratch[gl_WorkGroupSize.x];

// Specialization constant 15, ONE_SUBGROUP: set it (subgroup variants only) when the workgroup
// is known to be a single subgroup (size <= the device's minimum subgroup size). The barriers
// below and in workgroup_barrier() then vanish at specialization: lavapipe turns every barrier()
// in a shader into a coroutine suspend point, which keeps live values in memory.
#if USE_SUBGROUP
layout(constant_id = 15) const bool ONE_SUBGROUP = false;
#else
const bool ONE_SUBGROUP = false;
#endif

// barrier() for shared-memory hand-offs, or its single-subgroup equivalent.
void workgroup_barrier() {
#if USE_SUBGROUP
  if (ONE_SUBGROUP) {
    subgroupMemoryBarrierShared();
    subgroupBarrier();
    return;
  }
#endif
  barrier();
}

#if USE_SUBGROUP
#define REDUCE_DEFINE(NAME, SUBGROUP_OP, OP)                                  \
  float NAME(float x) {                                                       \
    const float s = SUBGROUP_OP(x);                                           \
    if (ONE_SUBGROUP || gl_NumSubgroups == 1) return s;                       \
    barrier();                                                                \
    if (subgroupElect()) reduce_scratch[gl_SubgroupID] = s;                   \
    barrier();                                                                \
    float r = reduce_scratch[0];                                              \
    for (uint i = 1; i < gl_NumSubgroups; ++i) r = OP(r, reduce_scratch[i]);  \
    return r;                                                                 \
  }
#else
#define REDUCE_DEFINE(NAME, SUBGROUP_OP, OP)                                  \
  float NAME(float x) {                                                       \
    const uint i = gl_LocalInvocationIndex;                                   \
    barrier();                                                                \
    reduce_scratch[i] = x;                                                    \
    barrier();                                                                \
    for (uint s = gl_WorkGroupSize.x / 2; s > 0; s >>= 1) {                   \
      if (i < s) reduce_scratch[i] = OP(reduce_scratch[i], reduce_scratch[i + s]); \
      barrier();                                                              \
    }                                                                         \
    return reduce_scratch[0];                                                 \
  }
#endif

float reduce_op_add(float a, float b) { return a + b; }

REDUCE_DEFINE(workgroup_max, subgroupMax, max)
REDUCE_DEFINE(workgroup_sum, subgroupAdd, reduce_op_add)

#endif  // REDUCE_GLSL
