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
#include "subgroup.glsl"
#if USE_SHUFFLE != 0 && USE_SUBGROUP == 0  // LANES_SHARE_LOADS, below
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_shuffle : require
#endif

#if USE_SUBGROUP
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

#include "math.glsl"

// The vec4s k4 of [first, count) this lane takes (first + LANE, then every LANES-th), each
// through STEP (which reads k4): in order, or with streams > 1 as that many segments of the
// range walked in step, so that a CPU thread keeps as many runs of loads in flight (plan's
// kCpuLoadStreams: the GEMV's and the recurrent kernels' packed fp32 weights).
#define FOR_LANE_K4(first, count, streams, STEP)                                  \
  if ((streams) > 1) {                                                            \
    const uint seg_ = ((count) - (first) + (streams) - 1) / (streams);            \
    for (uint s4_ = LANE; s4_ < seg_; s4_ += LANES) {                             \
      for (uint g_ = 0; g_ < (streams); ++g_) {                                   \
        const uint k4 = (first) + g_ * seg_ + s4_;                                \
        if (k4 >= (count)) break;                                                 \
        STEP                                                                      \
      }                                                                           \
    }                                                                             \
  } else {                                                                        \
    for (uint k4 = (first) + LANE; k4 < (count); k4 += LANES) STEP               \
  }

// The _shuffle builds with per-invocation coops (USE_SUBGROUP=0; plan::shuffle_lanes): vectors
// every lane of a subgroup needs are loaded once per subgroup and handed round by
// subgroupShuffle, as on lavapipe a load costs as much for one address as for eight and a
// shuffle next to nothing (docs/kernels.md). Every lane of the subgroup must run every step.
// (The subgroup builds' coops walk different columns of K: they share nothing.)
#define LANES_SHARE_LOADS (USE_SHUFFLE != 0 && USE_SUBGROUP == 0)
#if LANES_SHARE_LOADS
// own[c] = LOAD(c * lanes + this lane, k4): this lane's share of n slots (LOAD clamps the slot).
#define LOAD_OWN_SHARE(own, n, lanes, LOAD, k4)                                  \
  vec4 own[((n) + (lanes) - 1) / (lanes)];                                       \
  for (uint c_ = 0; c_ < ((n) + (lanes) - 1) / (lanes); ++c_)                    \
    own[c_] = LOAD(c_ * (lanes) + gl_SubgroupInvocationID, k4)
// Slot i of the shares, in every lane.
#define SHARED_SLOT(own, i, lanes) subgroupShuffle(own[(i) / (lanes)], (i) % (lanes))
#endif

// Four int8 packed in a 32-bit word (byte i = element i), sign-extended, as floats.
vec4 unpack_i8x4(uint w) {
  const int q = int(w);
  return vec4(bitfieldExtract(q, 0, 8), bitfieldExtract(q, 8, 8), bitfieldExtract(q, 16, 8), bitfieldExtract(q, 24, 8));
}

// WIDE loads: 16 bytes of an fp16 or int8 weight row at a time, as a uvec4. It holds
// WIDE_K4_OF(i8) vec4s of K; unpack_wide returns vec4 `part` of them (int8 unscaled). On
// lavapipe the load count, not the unpacking, bounds these kernels (gemv.comp).
#define WIDE_K4_OF(i8) ((i8) ? 4u : 2u)
vec4 unpack_wide(uvec4 q, uint part, bool i8) {
  if (i8) return unpack_i8x4(q[part]);
  return part == 0 ? vec4(unpackHalf2x16(q.x), unpackHalf2x16(q.y)) : vec4(unpackHalf2x16(q.z), unpackHalf2x16(q.w));
}
