// The body of the GEMV kernels (gemv.comp, gemv_argmax.comp): the loads of X and W and the
// loop over a workgroup's TM x TN blocks. The including shader declares the X / W bindings
// (xs, xv, ws, wh / wv, wq, ww), the push block p (M, N, K, x_off, ldx, w_off, ldw, s_off), the
// constants TM, TN, BLOCKS, ALIGNED, WEIGHT_I8, WIDE, TEXEL, PACK_ROWS, PACK_UNITS, PACK_H,
// K_STREAMS (> 1 only with PACK_ROWS, for the vec4 loop: K_STREAMS segments of K walked in step), the
// texel view wt of W and its uvec4 view ww, and defines
//   void gemv_emit(uint i, uint m, uint n, float v, bool store_lane)
// which gets every dot product v = X[m] . W[n] (scaled for int8; m = m0 + i may be past M and
// n past N: rows clamped so that control stays uniform). Every lane of the coop gets every v;
// store_lane spreads the stores over the lanes.
#ifndef VKRNN_GEMV_BLOCK_GLSL
#define VKRNN_GEMV_BLOCK_GLSL
//
// PACK_ROWS (Linear's weights on CPU drivers, plan::pack_rows): W is stored in blocks of
// PACK_ROWS rows (a workgroup's; the last block holds the r rows left), each block 16-byte unit
// by unit: unit u of row n is unit first * units_per_row + u * r + n - first (first = the
// block's first row), from element 0 of the buffer; w_off is then the K slice's first column.
// Rows are padded with zeros to whole units (fp32 4 elements, fp16 8, int8 16), so every unit
// is whole (ops::pack_row_blocks). At each step of K the workgroup's lanes then read one
// contiguous run of memory, as a copy does, instead of a unit from each of TN * BLOCKS rows K
// elements apart: 1.5x the GEMV's speed on lavapipe (K.gemv B = 1 fp32, 8000 x 1024), whose
// gathers over that many rows and pages stall.
//
// PACK_UNITS (a recurrent layer's W_ih on CPU drivers, plan::Rnn): W is in the recurrent
// kernels' gate blocks (gate_blocks.glsl; gates = N / PACK_H, PACK_H units a gate), which are
// Linear's blocks of PACK_ROWS = gates * PACK_UNITS rows in the order block, gate, unit. The
// GEMV walks W's rows in that stored order and gives each product its own row (PyTorch's
// order: output_row), so the input GEMM and rnn_step's inline W_ih x read one layout.
const uint ELEMENTS_PER_UNIT = WEIGHT_I8 ? 16 : (FP16_STORAGE != 0 ? 8 : 4);
// PACK_ROWS: unit u of stored row `row`'s K slice (from column w_off) is unit walk.x + u * walk.y.
uvec2 packed_walk(uint row) {
  const uint first = row / PACK_ROWS * PACK_ROWS, r = min(PACK_ROWS, p.N - first);
  return uvec2(first * (p.ldw / ELEMENTS_PER_UNIT) + row - first + p.w_off / ELEMENTS_PER_UNIT * r, r);
}
// The row of W (y's column, the bias's and scale's index) stored as row n (n < N).
uint output_row(uint n) {
  if (PACK_UNITS == 0) return n;
  const uint first = n / PACK_ROWS * PACK_ROWS, gates = p.N / PACK_H;
  const uint units = min(PACK_ROWS, p.N - first) / gates, g = (n - first) / units;
  return g * PACK_H + first / gates + n - first - g * units;
}

void gemv_emit(uint i, uint m, uint n, float v, bool store_lane);

// LANES_SHARE_LOADS (gemv_common.glsl; X_LANES = the subgroup size): the block's TM rows of X
// are the same in every lane, so lane l loads rows l, l + X_LANES, ... and each row reaches every
// lane by shuffle: ceil(TM / X_LANES) loads of X per step of K instead of TM. Blocks never end
// early there (rows past N are clamped and not stored, as rows past M are).
#if LANES_SHARE_LOADS
#define X_SLOT(s, k4) load_x(min(m0 + (s), p.M - 1), k4)
#define LOAD_X_ROWS(k4) LOAD_OWN_SHARE(x_own, TM, X_LANES, X_SLOT, k4)
#define X_ROW(i, k4) SHARED_SLOT(x_own, i, X_LANES)
#else
#define LOAD_X_ROWS(k4)
#define X_ROW(i, k4) load_x(xrow[i], k4)
#endif

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

// walk: packed_walk(row) where PACK_ROWS.
vec4 load_w(uint row, uvec2 walk, uint k4) {
  if (PACK_ROWS != 0) {  // whole units always (zero padding): no bounds tests
    const uint per_unit = ELEMENTS_PER_UNIT / 4;  // vec4s of K
    const uint at = walk.x + k4 / per_unit * walk.y;
    const uvec4 q = TEXEL ? texelFetch(wt, int(at)) : ww[at];
    return per_unit == 1 ? uintBitsToFloat(q) : unpack_wide(q, k4 % per_unit, WEIGHT_I8);
  }
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
    if (!LANES_SHARE_LOADS && n0 >= p.N) break;  // coop-uniform
    // Rows past the end are clamped (computed twice, never stored): keeps control uniform.
    uint xrow[TM];
    uint wrow[TN];
    for (uint i = 0; i < TM; ++i) xrow[i] = min(m0 + i, p.M - 1);
    for (uint j = 0; j < TN; ++j) wrow[j] = min(n0 + j, p.N - 1);
    uvec2 walk[TN];
    for (uint j = 0; j < TN; ++j) walk[j] = PACK_ROWS != 0 ? packed_walk(wrow[j]) : uvec2(0);

    float acc[TM][TN];
    for (uint i = 0; i < TM; ++i)
      for (uint j = 0; j < TN; ++j) acc[i][j] = 0.0;

    // WIDE: whole uvec4s of W first, then the vec4s left over (none where K fills the rows).
    const uint kw_count = WIDE ? k4_count / WIDE_K4 : 0;
    for (uint kw = LANE; kw < kw_count; kw += LANES) {
      uvec4 q[TN];
      for (uint j = 0; j < TN; ++j) {
        const uint at = PACK_ROWS != 0 ? walk[j].x + kw * walk[j].y : (p.w_off + wrow[j] * p.ldw) / (4 * WIDE_K4) + kw;
        q[j] = TEXEL ? texelFetch(wt, int(at)) : ww[at];
      }
      for (uint part = 0; part < WIDE_K4; ++part) {
        LOAD_X_ROWS(kw * WIDE_K4 + part);
        for (uint i = 0; i < TM; ++i) {
          const vec4 x = X_ROW(i, kw * WIDE_K4 + part);
          for (uint j = 0; j < TN; ++j) acc[i][j] += dot(x, unpack_wide(q[j], part, WEIGHT_I8));
        }
      }
    }
#define ACCUMULATE_K4(k4)                                                  \
  {                                                                        \
    vec4 w[TN];                                                            \
    for (uint j = 0; j < TN; ++j) w[j] = load_w(wrow[j], walk[j], k4);     \
    LOAD_X_ROWS(k4);                                                       \
    for (uint i = 0; i < TM; ++i) {                                        \
      const vec4 x = X_ROW(i, k4);                                         \
      for (uint j = 0; j < TN; ++j) acc[i][j] += dot(x, w[j]);             \
    }                                                                      \
  }
    const uint k4_first = kw_count * WIDE_K4;
    FOR_LANE_K4(k4_first, k4_count, K_STREAMS, ACCUMULATE_K4(k4))
#undef ACCUMULATE_K4

    for (uint i = 0; i < TM; ++i) {
      for (uint j = 0; j < TN; ++j) {
        const uint n = n0 + j < p.N ? output_row(n0 + j) : n0 + j;
        const float v = COOP_SUM(acc[i][j]) * (WEIGHT_I8 ? uintBitsToFloat(wq[p.s_off / 4 + min(n, p.N - 1)]) : 1.0);
        // Spread the stores over the lanes (every lane holds every sum).
        gemv_emit(i, m0 + i, n, v, ((i * TN + j) % LANES) == LANE);
      }
    }
  }
}

#endif  // VKRNN_GEMV_BLOCK_GLSL
