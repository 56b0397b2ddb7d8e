// Shared pieces of the decoder-attention kernels (attention_*.comp).
#ifndef ATTENTION_COMMON_GLSL
#define ATTENTION_COMMON_GLSL

// FP16_STORAGE=1: keys, values (memory) and the normalised attention weights are stored as
// float16 (needs storageBuffer16BitAccess); arithmetic stays fp32. Raw scores and partials stay
// fp32.
#include "kernel_flags.h"
#include "subgroup.glsl"
#if FP16_STORAGE
#extension GL_EXT_shader_16bit_storage : require
#define STORE_T float16_t
#define STORE_T4 f16vec4
#else
#define STORE_T float
#define STORE_T4 vec4
#endif

#define NEG_INF uintBitsToFloat(0xff800000u)

// The workgroup's index in a grid folded over x and y (large grids exceed maxComputeWorkGroupCount).
uint linear_workgroup() {
  return gl_WorkGroupID.x + gl_WorkGroupID.y * gl_NumWorkGroups.x;
}

#include "math.glsl"

// Valid length of batch row b: device lengths are clamped to [0, S] (a GPU-resident decoder
// cannot be checked on the host; the host-side upload helper rejects bad values).
uint clamped_length(int len, uint S) {
  return uint(clamp(len, 0, int(S)));
}

#endif  // ATTENTION_COMMON_GLSL
