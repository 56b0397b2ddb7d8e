#version 450
#extension GL_GOOGLE_include_directive : require
// Before any include: shared arrays sized by gl_WorkGroupSize must see the spec-constant size.
layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
// Context accumulation: context[b, h*dv + j] = sum_{s < len[b]} weights[r, s] * values[b, s, h*dv + j]
// for rows r = b * heads + h, tiled over S (chunks) and over the value columns (tiles of HT).
// Layout: weights STORE_T [rows, S]; values STORE_T [B, S, H]; context f32 [B, H];
// partials f32 [rows, nchunks, dv].
// Modes (push constant, TWO_PASS_* of kernel_flags.h):
//   0  one chunk per row: accumulate and write the context directly
//   1  pass 1: accumulate one chunk of S into partials
//   2  pass 2: sum the row's partials in chunk order into the context
// Each invocation owns VPT columns (VPT vec4s with VVEC4), lane-interleaved so that a workgroup
// reads contiguous memory. Fixed summation order and no atomics: bit-identical run to run.
#include "attention_common.glsl"

layout(constant_id = 3) const uint VPT = 4;    // columns (or vec4s) per invocation
layout(constant_id = 4) const uint VVEC4 = 0;  // H % 4 == 0 and dv % 4 == 0: vec4 loads

layout(set = 0, binding = 0) readonly buffer Weights { STORE_T weights[]; };
layout(set = 0, binding = 1) readonly buffer Values { STORE_T values[]; };
layout(set = 0, binding = 1) readonly buffer Values4 { STORE_T4 values4[]; };
layout(set = 0, binding = 2) readonly buffer Lengths { int lengths[]; };
layout(set = 0, binding = 3) buffer Partials { float partials[]; };
layout(set = 0, binding = 3) buffer Partials4 { vec4 partials4[]; };
layout(set = 0, binding = 4) writeonly buffer Context { float context[]; };
layout(set = 0, binding = 4) writeonly buffer Context4 { vec4 context4[]; };

layout(push_constant) uniform Push {
  uint S;
  uint H;        // value row stride and context row stride
  uint dv;       // value columns per head
  uint heads;
  uint rows;     // B * heads
  uint nchunks;  // chunks of S per row
  uint chunk;    // positions per chunk
  uint nhtiles;  // column tiles per row
  uint mode;
} p;

void main() {
  const uint WG = gl_WorkGroupSize.x;
  const uint lane = gl_LocalInvocationIndex;
  const uint nchunks = p.mode == TWO_PASS_COMBINE ? 1 : p.nchunks;
  const uint id = linear_workgroup();
  if (id >= p.rows * p.nhtiles * nchunks) return;
  const uint c = id % nchunks;
  const uint t = (id / nchunks) % p.nhtiles;
  const uint r = id / (nchunks * p.nhtiles);
  const uint b = r / p.heads, h = r % p.heads;
  const uint len = clamped_length(lengths[b], p.S);
  const uint s_begin = c * p.chunk;
  const uint s_end = p.mode == TWO_PASS_COMBINE ? 0 : min(s_begin + p.chunk, len);

  if (VVEC4 != 0) {
    const uint H4 = p.H / 4, dv4 = p.dv / 4;
    const uint col0 = t * WG * VPT + lane;  // in vec4 units within the head
    vec4 acc[VPT];
    for (uint k = 0; k < VPT; ++k) acc[k] = vec4(0.0);
    if (p.mode == TWO_PASS_COMBINE) {
      for (uint cc = 0; cc < p.nchunks; ++cc) {
        const uint base = (r * p.nchunks + cc) * dv4;
        for (uint k = 0; k < VPT; ++k) {
          const uint j = col0 + k * WG;
          if (j < dv4) acc[k] += partials4[base + j];
        }
      }
    } else {
      for (uint s = s_begin; s < s_end; ++s) {
        const float w = float(weights[r * p.S + s]);
        const uint base = (b * p.S + s) * H4 + h * dv4;
        for (uint k = 0; k < VPT; ++k) {
          const uint j = col0 + k * WG;
          if (j < dv4) acc[k] += w * vec4(values4[base + j]);
        }
      }
    }
    for (uint k = 0; k < VPT; ++k) {
      const uint j = col0 + k * WG;
      if (j >= dv4) break;
      if (p.mode == TWO_PASS_PARTIAL) {
        partials4[(r * p.nchunks + c) * dv4 + j] = acc[k];
      } else {
        context4[b * H4 + h * dv4 + j] = acc[k];
      }
    }
  } else {
    const uint col0 = t * WG * VPT + lane;
    float acc[VPT];
    for (uint k = 0; k < VPT; ++k) acc[k] = 0.0;
    if (p.mode == TWO_PASS_COMBINE) {
      for (uint cc = 0; cc < p.nchunks; ++cc) {
        const uint base = (r * p.nchunks + cc) * p.dv;
        for (uint k = 0; k < VPT; ++k) {
          const uint j = col0 + k * WG;
          if (j < p.dv) acc[k] += partials[base + j];
        }
      }
    } else {
      for (uint s = s_begin; s < s_end; ++s) {
        const float w = float(weights[r * p.S + s]);
        const uint base = (b * p.S + s) * p.H + h * p.dv;
        for (uint k = 0; k < VPT; ++k) {
          const uint j = col0 + k * WG;
          if (j < p.dv) acc[k] += w * float(values[base + j]);
        }
      }
    }
    for (uint k = 0; k < VPT; ++k) {
      const uint j = col0 + k * WG;
      if (j >= p.dv) break;
      if (p.mode == TWO_PASS_PARTIAL) {
        partials[(r * p.nchunks + c) * p.dv + j] = acc[k];
      } else {
        context[b * p.H + h * p.dv + j] = acc[k];
      }
    }
  }
}
