// Floats as order keys (torch's ordering for max / argmax / topk, where NaN is the largest
// value) and workgroup-wide min / max over uints. Every invocation of the workgroup must call
// the reductions in uniform control flow (as reduce.glsl's, which this includes: include it
// after `layout(local_size_x_id = ...) in;`).
#ifndef FLOAT_ORDER_GLSL
#define FLOAT_ORDER_GLSL

#include "reduce.glsl"

// key(a) > key(b) iff a > b, with every NaN above +inf and equal to the others, and -0 == +0.
// No float maps to 0, so 0 serves as "no entry" (below -inf).
uint float_order_key(float x) {
  if (isnan(x)) return 0xffffffffu;
  const uint bits = x == 0.0 ? 0u : floatBitsToUint(x);
  return (bits & 0x80000000u) != 0u ? ~bits : bits | 0x80000000u;
}

// The float a key came from (NaN: the canonical quiet NaN; 0: -inf).
float float_from_order_key(uint key) {
  if (key == 0xffffffffu) return uintBitsToFloat(0x7fc00000u);
  if (key == 0u) return -1.0 / 0.0;
  return uintBitsToFloat((key & 0x80000000u) != 0u ? key & 0x7fffffffu : ~key);
}

shared uint order_scratch[gl_WorkGroupSize.x];

uint workgroup_min_uint(uint x) {
#if USE_SUBGROUP
  const uint s = subgroupMin(x);
  if (ONE_SUBGROUP || gl_NumSubgroups == 1) return s;
  barrier();
  if (subgroupElect()) order_scratch[gl_SubgroupID] = s;
  barrier();
  uint r = order_scratch[0];
  for (uint i = 1; i < gl_NumSubgroups; ++i) r = min(r, order_scratch[i]);
  return r;
#else
  const uint i = gl_LocalInvocationIndex;
  barrier();
  order_scratch[i] = x;
  barrier();
  for (uint s = gl_WorkGroupSize.x / 2; s > 0; s >>= 1) {
    if (i < s) order_scratch[i] = min(order_scratch[i], order_scratch[i + s]);
    barrier();
  }
  return order_scratch[0];
#endif
}

uint workgroup_max_uint(uint x) { return ~workgroup_min_uint(~x); }

#endif  // FLOAT_ORDER_GLSL
