// The W_hh dot products of the recurrent kernels (rnn_step.comp, rnn_seq.comp): W_hh's loads
// (through the texel view wt with TEXEL: fp32 vec4s, or WIDE 16-byte units) and the loop that
// accumulates a coop's rows against its vectors. The including shader declares, before it
// includes this, the constants ALIGNED, TEXEL, UPI, BB, PACK_UNITS, K_STREAMS (segments of K the
// fp32 loop walks in step, 1 for the plain walk: plan::Rnn) (and V_LANES in a _shuffle build),
// G, the texel view wt of binding 1 and the push block p (H, HO).
#ifndef VKRNN_RNN_DOTS_GLSL
#define VKRNN_RNN_DOTS_GLSL

const uint WIDE_K4 = WIDE_K4_OF(WEIGHT_I8);
const bool F32_WEIGHTS = FP16_STORAGE == 0 && !WEIGHT_I8;

#include "gate_blocks.glsl"

// Where W_hh's rows of 16-byte units (fp32 vec4s with ALIGNED, or WIDE) keep their units: unit
// u of row `row`, `count` units a row, is unit walk.x + u * walk.y of the buffer. Row-major, or
// with PACK_UNITS (CPU drivers: plan::Rnn::pack_units) in gate blocks of PACK_UNITS hidden
// units per direction (gate_blocks.glsl).
uvec2 row_major_walk(uint row, uint count) { return uvec2(row * count, 1u); }
uvec2 w_walk(uint row, uint count) {
  return PACK_UNITS == 0 ? row_major_walk(row, count) : gate_block_walk(row, count, G, p.H, PACK_UNITS);
}

// Elements 4*k4 .. 4*k4+3 of W_hh's row `row`; `at`: their vec4's unit (w_walk) where ALIGNED.
vec4 load_w(uint row, uint k4, uint at) {
  if (F32_WEIGHTS && ALIGNED) return TEXEL ? uintBitsToFloat(texelFetch(wt, int(at))) : ALIGNED_WEIGHT4(wv, at);
  return load_weight4(row, k4, p.HO, ALIGNED);
}

// WIDE: W_hh's 16-byte unit `at` (w_walk).
uvec4 load_wq(uint at) { return TEXEL ? texelFetch(wt, int(at)) : ww[at]; }

// LANES_SHARE_LOADS (gemv_common.glsl; V_LANES = the subgroup size): the BB vectors of a step
// of K are the same in every lane, so lane l loads slots l, l + V_LANES, ... and each reaches
// every lane by shuffle. Units past H are then clamped, never skipped.
#if LANES_SHARE_LOADS
#define LOAD_VECTORS(v, LOAD_V, k4)                          \
  LOAD_OWN_SHARE(v_own, BB, V_LANES, LOAD_V, k4);            \
  for (uint b = 0; b < BB; ++b) v[b] = SHARED_SLOT(v_own, b, V_LANES)
#else
#define LOAD_VECTORS(v, LOAD_V, k4) for (uint b = 0; b < BB; ++b) v[b] = LOAD_V(b, k4)
#endif

// One step of K of ACCUMULATE_DOTS_ROWS's fp32 loop: the BB vectors' vec4 k4 against the coop's rows.
#define ACCUMULATE_ROWS_K4(acc, k4, LOAD_W, LOAD_V)                                        \
  {                                                                                        \
    vec4 v[BB];                                                                            \
    LOAD_VECTORS(v, LOAD_V, k4);                                                           \
    for (uint ui = 0; ui < UPI; ++ui)                                                      \
      for (uint g = 0; g < G; ++g) {                                                       \
        const vec4 w = LOAD_W(wrow[ui][g], k4, walk[ui][g].x + k4 * walk[ui][g].y);        \
        for (uint b = 0; b < BB; ++b) acc[ui][g][b] += dot(w, v[b]);                       \
      }                                                                                    \
  }

// The products of ACCUMULATE_DOTS (below) over k4_count vec4s of K split over the coop's lanes,
// each loaded vector serving the BB batch slots.
#define ACCUMULATE_DOTS_ROWS(acc, k4_count, WIDE_, LOAD_Q, LOAD_W, LOAD_V)                 \
  if (WIDE_) {                                                                             \
    const uint q_count = (k4_count) / WIDE_K4;                                             \
    for (uint kw = LANE; kw < q_count; kw += LANES) {                                      \
      uvec4 q[UPI][4];                                                                     \
      for (uint ui = 0; ui < UPI; ++ui)                                                    \
        for (uint g = 0; g < G; ++g) q[ui][g] = LOAD_Q(walk[ui][g].x + kw * walk[ui][g].y); \
      for (uint part = 0; part < WIDE_K4; ++part) {                                        \
        vec4 v[BB];                                                                        \
        LOAD_VECTORS(v, LOAD_V, kw * WIDE_K4 + part);                                      \
        for (uint ui = 0; ui < UPI; ++ui)                                                  \
          for (uint g = 0; g < G; ++g) {                                                   \
            const vec4 w = unpack_wide(q[ui][g], part, WEIGHT_I8);                         \
            for (uint b = 0; b < BB; ++b) acc[ui][g][b] += dot(w, v[b]);                   \
          }                                                                                \
      }                                                                                    \
    }                                                                                      \
  } else {                                                                                 \
    FOR_LANE_K4(0u, k4_count, K_STREAMS, ACCUMULATE_ROWS_K4(acc, k4, LOAD_W, LOAD_V))     \
  }

// BB = 1 in a _shuffle build: the one vector of a step of K is the same in every lane, so the
// lanes share it along K instead: each loads one vec4 of every V_LANES (lane l: k4 = kg + l) and
// the group's vec4s reach every lane by shuffle, one load per V_LANES vec4s of K instead of one
// per vec4 (rnn_seq reads h from shared memory, which lavapipe loads lane by lane). V_LANES is
// a multiple of WIDE_K4 (plan::rnn), so a group holds whole 16-byte weight units.
#define ACCUMULATE_DOTS_K_SHARED(acc, k4_count, WIDE_, LOAD_Q, LOAD_W, LOAD_V)                     \
  for (uint kg = 0; kg < (k4_count); kg += V_LANES) {                                            \
    const vec4 own = LOAD_V(0, min(kg + gl_SubgroupInvocationID, (k4_count) - 1));               \
    if (WIDE_) {                                                                                 \
      for (uint kk = 0; kk < V_LANES / WIDE_K4; ++kk) {                                          \
        const uint kw = kg / WIDE_K4 + kk;                                                       \
        if (kw >= (k4_count) / WIDE_K4) break;                                                   \
        uvec4 q[UPI][4];                                                                         \
        for (uint ui = 0; ui < UPI; ++ui)                                                        \
          for (uint g = 0; g < G; ++g) q[ui][g] = LOAD_Q(walk[ui][g].x + kw * walk[ui][g].y);     \
        for (uint part = 0; part < WIDE_K4; ++part) {                                            \
          const vec4 v = subgroupShuffle(own, kk * WIDE_K4 + part);                              \
          for (uint ui = 0; ui < UPI; ++ui)                                                      \
            for (uint g = 0; g < G; ++g) acc[ui][g][0] += dot(unpack_wide(q[ui][g], part, WEIGHT_I8), v); \
        }                                                                                        \
      }                                                                                          \
    } else {                                                                                     \
      for (uint kk = 0; kk < V_LANES; ++kk) {                                                    \
        const uint k4 = kg + kk;                                                                 \
        if (k4 >= (k4_count)) break;                                                             \
        const vec4 v = subgroupShuffle(own, kk);                                                 \
        for (uint ui = 0; ui < UPI; ++ui)                                                        \
          for (uint g = 0; g < G; ++g)                                                           \
            acc[ui][g][0] += dot(LOAD_W(wrow[ui][g], k4, walk[ui][g].x + k4 * walk[ui][g].y), v); \
      }                                                                                          \
    }                                                                                            \
  }

// acc[ui][g][b] += (weight row wrow[ui][g]) . (vector of batch slot b), over k4_count vec4s of K.
// LOAD_V(b, k4) loads a vector's vec4; LOAD_W(row, k4, at) a weight vec4, or where WIDE_ is set,
// LOAD_Q(at) 16 bytes of a row (WIDE_K4 vec4s of K each; no vec4s are left over:
// plan::wide_rows); WALK(row, count) places a row's 16-byte units (w_walk), once for both forms.
#if LANES_SHARE_LOADS
#define ACCUMULATE_DOTS_PRODUCTS(acc, k4_count, WIDE_, LOAD_Q, LOAD_W, LOAD_V)               \
  if (BB == 1) {                                                                           \
    ACCUMULATE_DOTS_K_SHARED(acc, k4_count, WIDE_, LOAD_Q, LOAD_W, LOAD_V)                 \
  } else {                                                                                 \
    ACCUMULATE_DOTS_ROWS(acc, k4_count, WIDE_, LOAD_Q, LOAD_W, LOAD_V)                     \
  }
#else
#define ACCUMULATE_DOTS_PRODUCTS(acc, k4_count, WIDE_, LOAD_Q, LOAD_W, LOAD_V) \
  ACCUMULATE_DOTS_ROWS(acc, k4_count, WIDE_, LOAD_Q, LOAD_W, LOAD_V)
#endif
#define ACCUMULATE_DOTS(acc, k4_count, WIDE_, LOAD_Q, LOAD_W, LOAD_V, WALK)                  \
  {                                                                                        \
    uvec2 walk[UPI][4];                                                                    \
    for (uint ui = 0; ui < UPI; ++ui)                                                      \
      for (uint g = 0; g < G; ++g) walk[ui][g] = WALK(wrow[ui][g], WIDE_ ? (k4_count) / WIDE_K4 : (k4_count)); \
    ACCUMULATE_DOTS_PRODUCTS(acc, k4_count, WIDE_, LOAD_Q, LOAD_W, LOAD_V)                 \
  }

#endif  // VKRNN_RNN_DOTS_GLSL
