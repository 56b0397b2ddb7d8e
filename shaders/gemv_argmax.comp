#version 450
// A greedy decoding step's output projection and its argmax in one dispatch: Y = X W^T + b as
// gemv.comp computes it (the same blocks, spec constants and bindings 0-3), then per row of Y
// the argmax, the log-softmax denominator and argmax.comp's bookkeeping (greedy_step.glsl).
//
// Each workgroup reduces the part of each row it computed to a partial (the max's order key,
// the lowest index holding it, the max, and sum exp(y - max)) and publishes it in `scratch`.
// The last workgroup to finish (an atomic ticket) merges each row's partials and records the
// step: one dispatch and one barrier fewer per token than gemv + argmax. Merging in a fixed
// order keeps the result deterministic; the sums differ from argmax.comp's only in rounding.
// Only for a single K slice (no GEMM_ACCUMULATE), no activation, and the M rows in one z layer.
#extension GL_GOOGLE_include_directive : require
#include "variants.glsl"
#if FP16_STORAGE
#extension GL_EXT_shader_16bit_storage : require
#endif
#include "gemv_common.glsl"

layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
layout(constant_id = 3) const uint TM = 1;
layout(constant_id = 4) const uint TN = 4;
layout(constant_id = 5) const uint BLOCKS = 1;
layout(constant_id = 6) const bool ALIGNED = true;
layout(constant_id = 7) const bool WEIGHT_I8 = false;
layout(constant_id = 8) const bool WIDE = false;
layout(constant_id = 9) const bool TEXEL = false;      // as in gemv.comp
layout(constant_id = 10) const uint PACK_ROWS = 0;     // as in gemv.comp
layout(constant_id = 14) const uint K_STREAMS = 1;     // as in gemv.comp
const uint PACK_UNITS = 0, PACK_H = 1;  // gemv.comp's recurrent-layer layout: never an output projection
#if USE_SHUFFLE
layout(constant_id = 11) const uint X_LANES = 8;       // as in gemv.comp
#endif

layout(set = 0, binding = 0) readonly buffer XS { float xs[]; };
layout(set = 0, binding = 0) readonly buffer XV { vec4 xv[]; };
#if FP16_STORAGE
layout(set = 0, binding = 1) readonly buffer WS { float16_t ws[]; };
layout(set = 0, binding = 1) readonly buffer WH { uvec2 wh[]; };
#else
layout(set = 0, binding = 1) readonly buffer WS { float ws[]; };
layout(set = 0, binding = 1) readonly buffer WV { vec4 wv[]; };
#endif
layout(set = 0, binding = 1) readonly buffer WQ { uint wq[]; };
layout(set = 0, binding = 1) readonly buffer WW { uvec4 ww[]; };
layout(set = 0, binding = 2) readonly buffer BS { float bias[]; };
layout(set = 0, binding = 3) writeonly buffer YS { float ys[]; };  // the logits [M, ldy]
layout(set = 0, binding = 4) writeonly buffer Index { int index_out[]; };     // [M]
layout(set = 0, binding = 5) writeonly buffer TokHist { int tok_hist[]; };    // [M, ld]
layout(set = 0, binding = 6) writeonly buffer Score { float score_hist[]; };  // [M, ld]
layout(set = 0, binding = 7) coherent buffer Finished { uint finished[]; };   // [M]
layout(set = 0, binding = 8) readonly buffer Weights { float weights[]; };    // [M, S]
layout(set = 0, binding = 9) writeonly buffer AttnHist { float attn_hist[]; };  // [M, ld, S]
layout(set = 0, binding = 10) readonly buffer Table { float table[]; };       // embedding rows
layout(set = 0, binding = 11) writeonly buffer EmbOut { float emb_out[]; };   // next input
layout(set = 0, binding = 12) buffer NonFinite { uint nonfinite[]; };         // [M]
// Word 0: the workgroups done so far (0 before and after the dispatch); from word 4, row m's
// partial from x-workgroup g at 4 + 4 * (m * gl_NumWorkGroups.x + g): key, index, max, sum.
layout(set = 0, binding = 13) coherent buffer Scratch { uint scratch[]; };
layout(set = 0, binding = 14) uniform usamplerBuffer wt;  // TEXEL: binding 1 as 16-byte texels
layout(set = 0, binding = 15) uniform usamplerBuffer xt;  // TEXEL and ALIGNED: binding 0 as texels
// With gate_words: the sequence's gate table (beam_step.comp's gate check, for greedy decoding).
layout(set = 0, binding = 16) buffer Gate { uint gate[]; };

layout(push_constant) uniform Push {
  uint M, N, K;
  uint x_off, ldx;
  uint w_off, ldw;
  uint b_off;
  uint y_off, ldy;
  uint gemm_flags;  // GEMM_BIAS only
  uint s_off;
  // The greedy step (argmax.comp's fields; B = M and V = N).
  uint S, ld, col;
  int eos, pad;
  uint flags;  // ARGMAX_* but ARGMAX_VALUE, ARGMAX_LOGITS and ARGMAX_CHOSEN
  uint emb_dim, table_offset, table_ld, emb_offset, emb_ld;
  uint mark;
  // Nonzero: Sequence::close_gate_when_all(finished) folded in: once every row has finished,
  // zero the gate table's first gate_words words; else count the open check in the next word.
  uint gate_words;
} p;

#include "kernel_flags.h"
#include "float_order.glsl"
#define GREEDY_V p.N
#include "greedy_step.glsl"
#include "gemv_block.glsl"

#include "softmax_partial.glsl"

// This invocation's partial of each of its TM rows (every lane of a coop keeps the same).
Partial row_part[TM];

void gemv_emit(uint i, uint m, uint n, float v, bool store_lane) {
  if (m >= p.M || n >= p.N) return;
  const float y = v + ((p.gemm_flags & GEMM_BIAS) != 0 ? bias[p.b_off + n] : 0.0);
  if (store_lane) ys[p.y_off + m * p.ldy + n] = y;
  // Blocks go up in n: a later equal key keeps the earlier index.
  row_part[i] = merge_partial(row_part[i], Partial(float_order_key(y), n, y, 1.0));
}

shared Partial coop_part[BLOCKS * TM];
shared bool is_last;

void main() {
  for (uint i = 0; i < TM; ++i) row_part[i] = PARTIAL_EMPTY;
  gemv_blocks();

  // The workgroup's partial of each row: its coops' merged in coop order, by invocation 0,
  // which publishes them and then takes the ticket (stores, memory barrier, atomic: in order).
  const uint coops = min(COOP_COUNT, BLOCKS);
  if (COOP_ID < coops && LANE == 0)
    for (uint i = 0; i < TM; ++i) coop_part[COOP_ID * TM + i] = row_part[i];
  barrier();
  const uint lane = gl_LocalInvocationIndex;
  const uint m0 = gl_WorkGroupID.y * TM;  // the host keeps M in one z layer
  const uint groups = gl_NumWorkGroups.x * gl_NumWorkGroups.y;
  if (lane == 0) {
    for (uint i = 0; i < TM && m0 + i < p.M; ++i) {
      Partial r = coop_part[i];
      for (uint c = 1; c < coops; ++c) r = merge_partial(r, coop_part[c * TM + i]);
      const uint at = 4 + 4 * ((m0 + i) * gl_NumWorkGroups.x + gl_WorkGroupID.x);
      scratch[at] = r.key;
      scratch[at + 1] = r.index;
      scratch[at + 2] = floatBitsToUint(r.m);
      scratch[at + 3] = floatBitsToUint(r.sum);
    }
    memoryBarrierBuffer();
    is_last = atomicAdd(scratch[0], 1u) == groups - 1u;
  }
  barrier();
  if (!is_last) return;  // uniform: a shared value after a barrier
  memoryBarrierBuffer();

  // The last workgroup: every row's partials, merged as invocation strides then across the
  // workgroup (max key, lowest index holding it, the sums re-expressed against the max).
  const uint lanes = gl_WorkGroupSize.x * gl_WorkGroupSize.y * gl_WorkGroupSize.z;
  const bool track = (p.flags & ARGMAX_FINISHED) != 0;
  for (uint b = 0; b < p.M; ++b) {
    Partial r = PARTIAL_EMPTY;
    for (uint g = lane; g < gl_NumWorkGroups.x; g += lanes) {
      const uint at = 4 + 4 * (b * gl_NumWorkGroups.x + g);
      r = merge_partial(r, Partial(scratch[at], scratch[at + 1], uintBitsToFloat(scratch[at + 2]), uintBitsToFloat(scratch[at + 3])));
    }
    const uint best_key = workgroup_max_uint(r.key);
    const uint top = min(workgroup_min_uint(r.key == best_key ? r.index : PARTIAL_NONE), p.N - 1u);
    const float m = float_from_order_key(best_key);
    const float sum = workgroup_sum(r.key == 0u ? 0.0 : rescale(r.sum, r.m, m));
    const bool done = track && finished[b] != 0u;
    greedy_record(b, lane, lanes, done ? p.pad : int(top), done, m, -log(sum));
  }
  if (p.gate_words != 0u) {  // uniform: a push constant
    // Invocation 0 set the finished flags above: every invocation reads them all after this.
    memoryBarrierBuffer();
    barrier();
    bool open = false;
    for (uint b = 0; b < p.M; ++b) open = open || finished[b] == 0u;
    if (open) {
      if (lane == 0) gate[p.gate_words] += 1u;  // Sequence::open_gate_checks
    } else {
      for (uint i = lane; i < p.gate_words; i += lanes) gate[i] = 0u;
    }
  }
  if (lane == 0) scratch[0] = 0u;  // every workgroup has taken its ticket
}
