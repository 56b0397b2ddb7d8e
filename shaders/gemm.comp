#version 450
// Y[M,N] = X[M,K] W[N,K]^T + b for many rows (the input projection of a whole sequence, output
// projections of a batch): the classic shared-memory tiled GEMM. A WX x WY workgroup computes a
// BM x BN block of Y (BM = WY*TM, BN = WX*TN), staging BK-wide slices of X and W in shared memory;
// each invocation keeps a TM x TN register tile whose rows/columns are strided by WY/WX so that
// neighbouring invocations read neighbouring shared words. WEIGHT_I8: W is int8, four per uint32
// (byte e of the row-major W in byte e % 4 of word e / 4), times a per-row fp32 scale (stored in
// the same buffer: 4 bindings, the Vulkan minimum) applied to each finished dot product.
#extension GL_GOOGLE_include_directive : require
#include "variants.glsl"
#if FP16_STORAGE
#extension GL_EXT_shader_16bit_storage : require
#endif

layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
layout(constant_id = 3) const uint TM = 4;
layout(constant_id = 4) const uint TN = 4;
layout(constant_id = 5) const uint BK = 16;
layout(constant_id = 6) const bool WEIGHT_I8 = false;

const uint WX = gl_WorkGroupSize.x;
const uint WY = gl_WorkGroupSize.y;
const uint BM = WY * TM;
const uint BN = WX * TN;
const uint THREADS = WX * WY;

layout(set = 0, binding = 0) readonly buffer XS { float xs[]; };
#if FP16_STORAGE
layout(set = 0, binding = 1) readonly buffer WS { float16_t ws[]; };
#else
layout(set = 0, binding = 1) readonly buffer WS { float ws[]; };
#endif
layout(set = 0, binding = 1) readonly buffer WQ { uint wq[]; };  // WEIGHT_I8: 4 x int8 a word
layout(set = 0, binding = 2) readonly buffer BS { float bias[]; };
layout(set = 0, binding = 3) buffer YS { float ys[]; };  // read back only with GEMM_ACCUMULATE

layout(push_constant) uniform Push {
  uint M, N, K;
  uint x_off, ldx;
  uint w_off, ldw;
  uint b_off;
  uint y_off, ldy;
  uint flags;  // GEMM_BIAS, GEMM_ACCUMULATE (kernel_flags.h)
  uint s_off;  // WEIGHT_I8: W row n's f32 scale is word s_off / 4 + n of the weight buffer
} p;

#include "kernel_flags.h"
#include "gemm_epilogue.glsl"

float load_w(uint n, uint k) {
  const uint e = p.w_off + n * p.ldw + k;
  if (WEIGHT_I8) return float(bitfieldExtract(int(wq[e / 4]), int(e % 4) * 8, 8));
  return float(ws[e]);
}

// Transposed tiles: [k][row], +1 column of padding against bank conflicts on the stores.
shared float x_tile[BK * (BM + 1)];
shared float w_tile[BK * (BN + 1)];

void main() {
  const uint tx = gl_LocalInvocationID.x;
  const uint ty = gl_LocalInvocationID.y;
  const uint tid = ty * WX + tx;
  const uint m0 = (gl_WorkGroupID.y + gl_NumWorkGroups.y * gl_WorkGroupID.z) * BM;
  const uint n0 = gl_WorkGroupID.x * BN;
  if (m0 >= p.M) return;  // whole workgroup leaves together, before any barrier

  float acc[TM][TN];
  for (uint i = 0; i < TM; ++i)
    for (uint j = 0; j < TN; ++j) acc[i][j] = 0.0;

  for (uint k0 = 0; k0 < p.K; k0 += BK) {
    // Consecutive invocations load consecutive k of one row: contiguous global reads.
    for (uint e = tid; e < BM * BK; e += THREADS) {
      const uint r = e / BK, c = e % BK;
      const uint m = m0 + r, k = k0 + c;
      x_tile[c * (BM + 1) + r] = (m < p.M && k < p.K) ? xs[p.x_off + m * p.ldx + k] : 0.0;
    }
    for (uint e = tid; e < BN * BK; e += THREADS) {
      const uint r = e / BK, c = e % BK;
      const uint n = n0 + r, k = k0 + c;
      w_tile[c * (BN + 1) + r] = (n < p.N && k < p.K) ? load_w(n, k) : 0.0;
    }
    barrier();
    for (uint c = 0; c < BK; ++c) {
      float a[TM];
      float b[TN];
      for (uint i = 0; i < TM; ++i) a[i] = x_tile[c * (BM + 1) + ty + i * WY];
      for (uint j = 0; j < TN; ++j) b[j] = w_tile[c * (BN + 1) + tx + j * WX];
      for (uint i = 0; i < TM; ++i)
        for (uint j = 0; j < TN; ++j) acc[i][j] = fma(a[i], b[j], acc[i][j]);
    }
    barrier();
  }

  for (uint i = 0; i < TM; ++i) {
    const uint m = m0 + ty + i * WY;
    if (m >= p.M) continue;
    for (uint j = 0; j < TN; ++j) {
      const uint n = n0 + tx + j * WX;
      if (n >= p.N) continue;
      const float b = (p.flags & GEMM_BIAS) != 0 ? bias[p.b_off + n] : 0.0;
      const uint y = p.y_off + m * p.ldy + n;
      const float s = WEIGHT_I8 ? uintBitsToFloat(wq[p.s_off / 4 + n]) : 1.0;
      ys[y] = gemm_epilogue(((p.flags & GEMM_ACCUMULATE) != 0 ? ys[y] : 0.0) + acc[i][j] * s + b, p.flags);
    }
  }
}
