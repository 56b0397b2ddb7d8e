// The body of the GEMV kernels (gemv.comp, gemv_argmax.comp): the loads of X and W and the
// loop over a workgroup's TM x TN blocks. The including shader declares the X / W bindings
// (xs, xv, ws, wh / wv, wq, ww), the push block p (M, N, K, x_off, ldx, w_off, ldw, s_off), the
// constants TM, TN, BLOCKS, ALIGNED, WEIGHT_I8, WIDE, TEXEL, the texel view wt of W, and defines
//   void gemv_emit(uint i, uint m, uint n, float v, bool store_lane)
// which gets every dot product v = X[m] . W[n] (scaled for int8; m = m0 + i may be past M and
// n past N: rows clamped so that control stays uniform). Every lane of the coop gets every v;
// store_lane spreads the stores over the lanes.
#ifndef VKRNN_GEMV_BLOCK_GLSL
#define VKRNN_GEMV_BLOCK_GLSL

void gemv_emit(uint i, uint m, uint n, float v, bool store_lane);

vec4 load_x(uint row, uint k4) {
  if (ALIGNED) {
    const uint at = (p.x_off + row * p.ldx) / 4 + k4;
    return TEXEL ? uintBitsToFloat(texelFetch(xt, int(at))) : xv[at];
  }
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
  if (ALIGNED) {
    const uint at = (p.w_off + row * p.ldw) / 4 + k4;
    return TEXEL ? uintBitsToFloat(texelFetch(wt, int(at))) : wv[at];
  }
#endif
  const uint base = p.w_off + row * p.ldw;
  const uint k = k4 * 4;
  return vec4(k < p.K ? float(ws[base + k]) : 0.0, k + 1 < p.K ? float(ws[base + k + 1]) : 0.0,
              k + 2 < p.K ? float(ws[base + k + 2]) : 0.0, k + 3 < p.K ? float(ws[base + k + 3]) : 0.0);
}

// WIDE: vec4s of K in one uvec4 of W (gemv_common.glsl).
const uint WIDE_K4 = WIDE_K4_OF(WEIGHT_I8);

void gemv_blocks() {
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
      for (uint j = 0; j < TN; ++j) {
        const uint at = (p.w_off + wrow[j] * p.ldw) / (4 * WIDE_K4) + kw;
        q[j] = TEXEL ? texelFetch(wt, int(at)) : ww[at];
      }
      for (uint part = 0; part < WIDE_K4; ++part) {
        for (uint i = 0; i < TM; ++i) {
          const vec4 x = load_x(xrow[i], kw * WIDE_K4 + part);
          for (uint j = 0; j < TN; ++j) acc[i][j] += dot(x, unpack_wide(q[j], part, WEIGHT_I8));
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
        gemv_emit(i, m0 + i, n0 + j, v, ((i * TN + j) % LANES) == LANE);
      }
    }
  }
}

#endif  // VKRNN_GEMV_BLOCK_GLSL
