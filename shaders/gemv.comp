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
layout(constant_id = 9) const bool TEXEL = false;  // W's 16-byte loads come from wt (gemv_block.glsl)
// W stored in blocks of PACK_ROWS rows, 16-byte unit by unit (gemv_block.glsl); 0: row-major.
layout(constant_id = 10) const uint PACK_ROWS = 0;
// W in a recurrent layer's gate blocks of PACK_UNITS hidden units, PACK_H units a gate, with
// PACK_ROWS the rows of a block (gemv_block.glsl); 0: Linear's layout or row-major.
layout(constant_id = 12) const uint PACK_UNITS = 0;
layout(constant_id = 13) const uint PACK_H = 1;
// Segments of K each lane walks in step (gemv_block.glsl; plan::gemv_k_streams): 1, or more
// with PACK_ROWS.
layout(constant_id = 14) const uint K_STREAMS = 1;
#if USE_SHUFFLE
// Lanes that share X's loads: the subgroup size, fixed on the device (gemv_block.glsl).
layout(constant_id = 11) const uint X_LANES = 8;
#endif

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
layout(set = 0, binding = 4) uniform usamplerBuffer wt;  // TEXEL: binding 1 as 16-byte texels
layout(set = 0, binding = 5) uniform usamplerBuffer xt;  // TEXEL and ALIGNED: binding 0 as texels

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

#include "gemv_block.glsl"

void gemv_emit(uint i, uint m, uint n, float v, bool store_lane) {
  if (!store_lane || m >= p.M || n >= p.N) return;
  const float b = (p.flags & GEMM_BIAS) != 0 ? bias[p.b_off + n] : 0.0;
  const uint y = p.y_off + m * p.ldy + n;
  ys[y] = gemm_epilogue(((p.flags & GEMM_ACCUMULATE) != 0 ? ys[y] : 0.0) + v + b, p.flags);
}

void main() { gemv_blocks(); }
