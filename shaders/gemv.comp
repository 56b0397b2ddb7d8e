#version 450
// Y[M,N] = X[M,K] W[N,K]^T + b for small M (batch 1 .. a few rows), and on CPU-like devices
// for any M: every coop (see gemv_common.glsl) computes a TM x TN block of Y, its lanes split K
// in vec4 steps and reduce at the end. Both X and W rows are contiguous in K, so each lane
// streams consecutive vec4s and every loaded vec4 feeds TM (or TN) dot products.
// WEIGHT_I8: W is int8, four per uint32 (rows padded to a multiple of 4 columns, pad bytes 0),
// with a per-row fp32 scale applied once to each finished dot product (W ~ q * scale[n]): a
// quarter of the f32 bytes, on any Vulkan 1.1 device (no 8-bit storage feature needed). The
// scales live in the weight buffer too: the kernel binds 4 buffers, the Vulkan minimum.
// WIDE (fp16 and int8 weights whose rows start on 16 bytes): each lane loads 16 bytes of a W row
// at a time as a uvec4 (8 halves or 16 int8) and unpacks them itself. On lavapipe the load count,
// not the unpacking, bounds these kernels: 1.5x the f16vec4 / one-word loads at 8000 x 1024
// (K.gemv); on GPUs a lane's 16 bytes beside its neighbours' are the widest coalesced load.
#extension GL_GOOGLE_include_directive : require
#include "variants.glsl"
#if FP16_STORAGE
#extension GL_EXT_shader_16bit_storage : require
#endif
#include "gemv_common.glsl"

layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
layout(constant_id = 3) const uint TM = 1;          // rows of X per block
layout(constant_id = 4) const uint TN = 4;          // rows of W per block
layout(constant_id = 5) const uint BLOCKS = 1;      // N-blocks per workgroup
layout(constant_id = 6) const bool ALIGNED = true;  // K, ldx, ldw, offsets all % 4 == 0
layout(constant_id = 7) const bool WEIGHT_I8 = false;  // W int8 (w_off, ldw % 4 == 0 always)
layout(constant_id = 8) const bool WIDE = false;  // f16 / i8 W: w_off and ldw are 16-byte multiples

// Each buffer is declared twice (scalar and vec4 view of the same binding); the ALIGNED
// specialisation decides which one the pipeline keeps.
layout(set = 0, binding = 0) readonly buffer XS { float xs[]; };
layout(set = 0, binding = 0) readonly buffer XV { vec4 xv[]; };
#if FP16_STORAGE
layout(set = 0, binding = 1) readonly buffer WS { float16_t ws[]; };
layout(set = 0, binding = 1) readonly buffer WH { uvec2 wh[]; };  // 4 halves, as 2 words
#else
layout(set = 0, binding = 1) readonly buffer WS { float ws[]; };
layout(set = 0, binding = 1) readonly buffer WV { vec4 wv[]; };
#endif
layout(set = 0, binding = 1) readonly buffer WQ { uint wq[]; };  // WEIGHT_I8: 4 x int8 a word
layout(set = 0, binding = 1) readonly buffer WW { uvec4 ww[]; };  // WIDE: 16 bytes
layout(set = 0, binding = 2) readonly buffer BS { float bias[]; };
layout(set = 0, binding = 3) buffer YS { float ys[]; };  // read back only with GEMM_ACCUMULATE

layout(push_constant) uniform Push {
  uint M, N, K;
  uint x_off, ldx;  // X[m][k] = xs[x_off + m * ldx + k]
  uint w_off, ldw;  // W[n][k] = ws[w_off + n * ldw + k]
  uint b_off;       // b[n] = bias[b_off + n]
  uint y_off, ldy;  // Y[m][n] = ys[y_off + m * ldy + n]
  uint flags;  // GEMM_BIAS, GEMM_ACCUMULATE (kernel_flags.h)
  uint s_off;  // WEIGHT_I8: W row n's f32 scale is word s_off / 4 + n of the weight buffer
} p;

#include "kernel_flags.h"
#include "gemm_epilogue.glsl"

vec4 load_x(uint row, uint k4) {
  if (ALIGNED) return xv[(p.x_off + row * p.ldx) / 4 + k4];
  const uint base = p.x_off + row * p.ldx;
  const uint k = k4 * 4;
  return vec4(k < p.K ? xs[base + k] : 0.0, k + 1 < p.K ? xs[base + k + 1] : 0.0,
              k + 2 < p.K ? xs[base + k + 2] : 0.0, k + 3 < p.K ? xs[base + k + 3] : 0.0);
}

vec4 load_w(uint row, uint k4) {
  if (WEIGHT_I8) {
    // Past K the padding is 0 (and so is x): no bounds test even when K % 4 != 0.
    return unpack_i8x4(wq[(p.w_off + row * p.ldw) / 4 + k4]);
  }
#if FP16_STORAGE
  // Two words and unpackHalf2x16, not an f16vec4: 1.3x faster on lavapipe (K.gemv); on a GPU
  // both are one 8-byte load and four conversions (not measured here: no GPU).
  if (ALIGNED) {
    const uvec2 h = wh[(p.w_off + row * p.ldw) / 4 + k4];
    return vec4(unpackHalf2x16(h.x), unpackHalf2x16(h.y));
  }
#else
  if (ALIGNED) return wv[(p.w_off + row * p.ldw) / 4 + k4];
#endif
  const uint base = p.w_off + row * p.ldw;
  const uint k = k4 * 4;
  return vec4(k < p.K ? float(ws[base + k]) : 0.0, k + 1 < p.K ? float(ws[base + k + 1]) : 0.0,
              k + 2 < p.K ? float(ws[base + k + 2]) : 0.0, k + 3 < p.K ? float(ws[base + k + 3]) : 0.0);
}

// WIDE: vec4s of K in one uvec4 of W, and part `i` of them.
const uint WIDE_K4 = WEIGHT_I8 ? 4 : 2;
vec4 wide_part(uvec4 q, uint i) {
  if (WEIGHT_I8) return unpack_i8x4(q[i]);
  return i == 0 ? vec4(unpackHalf2x16(q.x), unpackHalf2x16(q.y)) : vec4(unpackHalf2x16(q.z), unpackHalf2x16(q.w));
}

void main() {
  // Large M is folded over y and z (65535 is the guaranteed limit for both).
  const uint m0 = (gl_WorkGroupID.y + gl_NumWorkGroups.y * gl_WorkGroupID.z) * TM;
  if (m0 >= p.M) return;  // whole workgroup leaves together
  const uint k4_count = (p.K + 3) / 4;

  for (uint blk = COOP_ID; blk < BLOCKS; blk += COOP_COUNT) {
    const uint n0 = (gl_WorkGroupID.x * BLOCKS + blk) * TN;
    if (n0 >= p.N) break;  // coop-uniform
    // Rows past the end are clamped (computed twice, never stored): keeps control uniform.
    uint xrow[TM];
    uint wrow[TN];
    for (uint i = 0; i < TM; ++i) xrow[i] = min(m0 + i, p.M - 1);
    for (uint j = 0; j < TN; ++j) wrow[j] = min(n0 + j, p.N - 1);

    float acc[TM][TN];
    for (uint i = 0; i < TM; ++i)
      for (uint j = 0; j < TN; ++j) acc[i][j] = 0.0;

    // WIDE: whole uvec4s of W first, then the vec4s left over (none where K fills the rows).
    const uint kw_count = WIDE ? k4_count / WIDE_K4 : 0;
    for (uint kw = LANE; kw < kw_count; kw += LANES) {
      uvec4 q[TN];
      for (uint j = 0; j < TN; ++j) q[j] = ww[(p.w_off + wrow[j] * p.ldw) / (4 * WIDE_K4) + kw];
      for (uint part = 0; part < WIDE_K4; ++part) {
        for (uint i = 0; i < TM; ++i) {
          const vec4 x = load_x(xrow[i], kw * WIDE_K4 + part);
          for (uint j = 0; j < TN; ++j) acc[i][j] += dot(x, wide_part(q[j], part));
        }
      }
    }
    for (uint k4 = kw_count * WIDE_K4 + LANE; k4 < k4_count; k4 += LANES) {
      vec4 w[TN];
      for (uint j = 0; j < TN; ++j) w[j] = load_w(wrow[j], k4);
      for (uint i = 0; i < TM; ++i) {
        const vec4 x = load_x(xrow[i], k4);
        for (uint j = 0; j < TN; ++j) acc[i][j] += dot(x, w[j]);
      }
    }

    for (uint i = 0; i < TM; ++i) {
      for (uint j = 0; j < TN; ++j) {
        const float v = COOP_SUM(acc[i][j]) * (WEIGHT_I8 ? uintBitsToFloat(wq[p.s_off / 4 + wrow[j]]) : 1.0);
        // Spread the stores over the lanes (every lane holds every sum).
        if (((i * TN + j) % LANES) == LANE && m0 + i < p.M && n0 + j < p.N) {
          const float b = (p.flags & GEMM_BIAS) != 0 ? bias[p.b_off + n0 + j] : 0.0;
          const uint y = p.y_off + (m0 + i) * p.ldy + n0 + j;
          ys[y] = gemm_epilogue(((p.flags & GEMM_ACCUMULATE) != 0 ? ys[y] : 0.0) + v + b, p.flags);
        }
      }
    }
  }
}
