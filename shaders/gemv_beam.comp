#version 450
// A beam-search step's output projection and the whole step after it in one dispatch: logits
// Y = X W^T + b as gemv.comp computes them (gemv_block.glsl: the same blocks, spec constants and
// bindings 0-3), then beam_step.comp's work (its header has the rules): each alive row's
// top-kc log-softmax candidates, each source's merge, the gathers, the gate check.
//
// Each workgroup reduces the block of each row it computed (BLOCKS * TN columns) to a softmax
// partial, its max and sum exp(y - max) (softmax_partial.glsl), published in `scratch`. Then it
// takes the ticket of each source its rows belong to (an atomic each, the threadfence-reduction
// pattern), all in one go: a workgroup that merges none leaves there (a barrier per source in
// a loop cost lavapipe ~8% of W3.b1's beam GEMV). The last of a source's workgroups to take
// its ticket takes each alive row's max and log-softmax denominator from the partials, and its
// top kc from the kc blocks with the largest maxima (ties: the lower block): tau, the kc-th of
// those maxima, is at most the row's kc-th largest entry, so the entries above tau all lie in
// those blocks, and so do at least as many entries at tau with lower ids than any other block
// holds. kc blocks are read instead of the row. Then it merges the source and gathers its rows
// as beam_step.comp's merging workgroups do, and the last workgroup to merge (a count of the
// sources merged) checks the gate. Sources merge in parallel, each once its rows' logits are
// in, and a workgroup's loops cover only the sources its rows touch (at most 32). Against gemv
// + beam_step that is a dispatch and a barrier fewer per step, and a scan of kc blocks per row
// instead of V entries.
// The log-softmax's denominator sums the blocks' sums rescaled to the row's max, so it differs
// from topk_row.glsl's in rounding only; an entry outside those blocks whose log-softmax rounds
// to a chosen one's value (not its logit) could break that tie otherwise than TopK.
// Only for a single K slice (no GEMM_ACCUMULATE), no activation, the M = B * K rows in one z
// layer, W's rows from element 0 and logits [M, N] whole (src/ops/beam_step.cpp).
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
layout(constant_id = 12) const uint K_MAX = 8;         // >= kc (and >= K with BACK)
const uint SPAN = BLOCKS * TN;                          // columns per x-workgroup
layout(constant_id = 13) const bool BACK = false;      // as in beam_step.comp

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
// Coherent: the last workgroup reads a forced row's entry that another one wrote.
layout(set = 0, binding = 3) coherent buffer YS { float ys[]; };                 // the logits [M, N]
layout(set = 0, binding = 4) readonly buffer Forced { int forced[]; };            // [R]
layout(set = 0, binding = 5) buffer NonFinite { uint nonfinite[]; };              // [R]
layout(set = 0, binding = 6) coherent buffer Values { float values[]; };          // [R, kc]
layout(set = 0, binding = 7) coherent buffer Ids { int ids[]; };                  // [R, kc]
layout(set = 0, binding = 8) readonly buffer ScoreIn { float score_in[]; };       // [R]
layout(set = 0, binding = 9) buffer ScoreOut { float score_out[]; };              // [R]
layout(set = 0, binding = 10) buffer AliveCount { uint alive_count[]; };          // [B]
layout(set = 0, binding = 11) coherent buffer Done { uint done[]; };              // [B]
layout(set = 0, binding = 12) buffer FinCount { uint fin_count[]; };              // [B]
layout(set = 0, binding = 13) buffer Fin { uvec4 fin[]; };                        // [B, F]
layout(set = 0, binding = 14) buffer HistToken { int hist_token[]; };             // [T, R]
layout(set = 0, binding = 15) buffer HistParent { int hist_parent[]; };           // [T, R]
layout(set = 0, binding = 16) coherent buffer Parents { int parents[]; };         // [R]
layout(set = 0, binding = 17) coherent buffer NextTokens { int next_tokens[]; };  // [R]
layout(set = 0, binding = 18) buffer Heads { uint heads[]; };                     // [R, 4]
layout(set = 0, binding = 19) coherent buffer Slot0 { float slot0[]; };
layout(set = 0, binding = 20) coherent buffer Slot1 { float slot1[]; };
layout(set = 0, binding = 21) coherent buffer Slot2 { float slot2[]; };
layout(set = 0, binding = 22) coherent buffer Slot3 { float slot3[]; };
layout(set = 0, binding = 23) coherent buffer Slot4 { float slot4[]; };
layout(set = 0, binding = 24) coherent buffer Slot5 { float slot5[]; };
layout(set = 0, binding = 19) coherent buffer Slot0v { vec4 slot0v[]; };
layout(set = 0, binding = 20) coherent buffer Slot1v { vec4 slot1v[]; };
layout(set = 0, binding = 21) coherent buffer Slot2v { vec4 slot2v[]; };
layout(set = 0, binding = 22) coherent buffer Slot3v { vec4 slot3v[]; };
layout(set = 0, binding = 23) coherent buffer Slot4v { vec4 slot4v[]; };
layout(set = 0, binding = 24) coherent buffer Slot5v { vec4 slot5v[]; };
layout(set = 0, binding = 25) buffer Gate { uint gate[]; };                       // the sequence's gate table
// Word 0: the sources merged so far; from word 4, row m's partial from x-workgroup g at
// 4 + 2 * (m * gl_NumWorkGroups.x + g): its max and sum; after the partials, source b's ticket
// at 4 + 2 * M * gl_NumWorkGroups.x + b: the workgroups done with its rows. Tickets and word 0
// are 0 before and after the dispatch.
layout(set = 0, binding = 26) coherent buffer Scratch { uint scratch[]; };
layout(set = 0, binding = 27) uniform usamplerBuffer wt;  // TEXEL: binding 1 as 16-byte texels
layout(set = 0, binding = 28) uniform usamplerBuffer xt;  // TEXEL and ALIGNED: binding 0 as texels

// 128 bytes, the least every device offers: pairs of 16-bit fields share a word.
layout(push_constant) uniform Push {
  uint N;      // W's rows, the logits' columns (the vocabulary)
  uint dk;     // X's and W's columns (the GEMV's K)
  uint x_off;  // X's row m at x_off + m * ldx
  uint ld;     // ldx | ldw << 16 (W's row stride, elements)
  uint s_off;  // int8: W's scales from element s_off of its tensor (as gemv.comp)
  uint bk;     // B | K << 16 (sources, beam width: M = B * K)
  uint kcf;    // kc | F << 16
  uint tt;     // T | t << 16
  int eos;
  int pad;
  uint stop;   // finished_to_stop | the bias (bit 31)
  uint flags;  // beam_step.comp's flags (bits 0-19) | gate_words << 20
  uvec4 g0, g1, g2, g3;
  uvec4 lds;
} pc;

// The fields the included code reads as p.*, unpacked once (main): gemv_block.glsl's and
// beam_merge.glsl / beam_gather.glsl's (they see `p` as one or the other below).
struct GemvParams {
  uint M, N, K, x_off, ldx, w_off, ldw, s_off;
};
struct BeamParams {
  uint B, K, kc, T, t, F;
  int eos, pad;
  uint stop, flags, gate_words;
  uvec4 g0, g1, g2, g3, lds;
};
GemvParams gp;
BeamParams bp;
const uint STOP_BIAS = 1u << 31;

#include "float_order.glsl"
#include "reduce.glsl"
#include "softmax_partial.glsl"
#include "topk_list.glsl"
#define p gp
#include "gemv_block.glsl"
#undef p
#define p bp
#include "beam_merge.glsl"
#include "beam_gather.glsl"
#undef p

// This invocation's softmax partial of each of its TM rows (every lane of a coop keeps the same).
Partial row_part[TM];

void gemv_emit(uint i, uint m, uint n, float v, bool store_lane) {
  if (m >= gp.M || n >= gp.N) return;
  const float y = v + ((pc.stop & STOP_BIAS) != 0u ? bias[n] : 0.0);
  if (store_lane) ys[m * gp.N + n] = y;
  // Blocks go up in n: a later equal key keeps the earlier index.
  row_part[i] = merge_partial(row_part[i], Partial(float_order_key(y), n, y, 1.0));
}

shared uint top_blocks[K_MAX];

// Row `row`'s candidates from its G blocks (topk_row.glsl's results with log-softmax, its
// forced entry and non-finite mark), into values / ids [row * kc, row * kc + kc).
void merge_row(uint row, uint G, int forced_token) {
  const uint lane = gl_LocalInvocationIndex, lanes = gl_WorkGroupSize.x;
  const uint kc = bp.kc, k = min(kc, K_MAX), base = 4u + 2u * row * G;
  uint mk = 0u;
  for (uint g = lane; g < G; g += lanes) mk = max(mk, float_order_key(uintBitsToFloat(scratch[base + 2u * g])));
  const float m = float_from_order_key(workgroup_max_uint(mk));
  if (lane == 0 && (isnan(m) || isinf(m)) && nonfinite[row] == 0u) nonfinite[row] = bp.t + 1u;
  float s = 0.0;
  for (uint g = lane; g < G; g += lanes) s += rescale(uintBitsToFloat(scratch[base + 2u * g + 1u]), uintBitsToFloat(scratch[base + 2u * g]), m);
  const float lse = log(workgroup_sum(s));

  if (forced_token >= 0) {  // uniform: the row's forced token alone
    if (lane == 0) {
      const uint i = min(uint(forced_token), gp.N - 1u);
      values[row * kc] = (ys[row * gp.N + i] - m) - lse;
      ids[row * kc] = int(i);
      for (uint r = 1; r < kc; ++r) {
        values[row * kc + r] = -1.0 / 0.0;
        ids[row * kc + r] = -1;
      }
    }
    return;
  }

  // The blocks that can hold the row's top k (the file's comment), in shared memory.
  uint key[K_MAX];
  uint idx[K_MAX];
  topk_clear(key, idx);
  for (uint g = lane; g < G; g += lanes) topk_offer(key, idx, k, float_order_key(uintBitsToFloat(scratch[base + 2u * g])), g);
  TOPK_MERGE(key, idx, k, if (lane == 0) top_blocks[r] = win;)
  barrier();

  // Their entries as log-softmax keys (as topk_row.glsl orders them), each invocation's best
  // k, then merged.
  topk_clear(key, idx);
  for (uint c = 0; c < k; ++c) {
    const uint g = top_blocks[c];  // uniform
    if (g == TOPK_NONE) break;  // fewer than k blocks
    for (uint j = lane; j < SPAN && g * SPAN + j < gp.N; j += lanes) {
      const uint n = g * SPAN + j;
      topk_offer(key, idx, k, float_order_key((ys[row * gp.N + n] - m) - lse), n);
    }
  }
  TOPK_MERGE(key, idx, k, if (lane == 0) {
    // The entry itself where it is one (keys drop the sign of zero and NaN payloads).
    values[row * kc + r] = win == TOPK_NONE ? -1.0 / 0.0 : float_from_order_key(best);
    ids[row * kc + r] = win == TOPK_NONE ? -1 : int(min(win, gp.N - 1u));
  })
}

shared Partial coop_part[BLOCKS * TM];
shared uint merges;  // bit i: this workgroup merges source m0 / K + i
shared bool last_source;

void main() {
  const uint B = pc.bk & 0xffffu, K = pc.bk >> 16;
  gp = GemvParams(B * K, pc.N, pc.dk, pc.x_off, pc.ld & 0xffffu, 0u, pc.ld >> 16, pc.s_off);
  bp = BeamParams(B, K, pc.kcf & 0xffffu, pc.tt & 0xffffu, pc.tt >> 16, pc.kcf >> 16, pc.eos, pc.pad, pc.stop & ~STOP_BIAS,
                  pc.flags & 0xfffffu, pc.flags >> 20, pc.g0, pc.g1, pc.g2, pc.g3, pc.lds);
  for (uint i = 0; i < TM; ++i) row_part[i] = PARTIAL_EMPTY;
  gemv_blocks();
  memoryBarrierBuffer();  // this invocation's logits, before the tickets below (a merge reads them)

  // The workgroup's partial of each row: its coops' merged in coop order, by invocation i for
  // row m0 + i.
  const uint coops = min(COOP_COUNT, BLOCKS);
  if (COOP_ID < coops && LANE == 0)
    for (uint i = 0; i < TM; ++i) coop_part[COOP_ID * TM + i] = row_part[i];
  barrier();
  const uint lane = gl_LocalInvocationIndex;
  const uint m0 = gl_WorkGroupID.y * TM;  // the host keeps M in one z layer
  const uint G = gl_NumWorkGroups.x;
  for (uint i = lane; i < TM && m0 + i < gp.M; i += gl_WorkGroupSize.x) {
    Partial r = coop_part[i];
    for (uint c = 1; c < coops; ++c) r = merge_partial(r, coop_part[c * TM + i]);
    const uint at = 4u + 2u * ((m0 + i) * G + gl_WorkGroupID.x);
    scratch[at] = floatBitsToUint(r.m);
    scratch[at + 1u] = floatBitsToUint(r.sum);
  }
  memoryBarrierBuffer();
  barrier();
  if (m0 >= gp.M) return;  // uniform: no rows, no tickets

  // The sources this workgroup's rows belong to (at most 32, src/ops/beam_step.cpp): it takes
  // each one's ticket, and the last of a source's workgroups to do so merges it, as
  // beam_step.comp's merging workgroup does. Source b's rows lie in y-workgroups b K / TM to
  // (b K + K - 1) / TM, each of G x-workgroups.
  const uint tickets = 4u + 2u * gp.M * G;
  const uint b0 = m0 / K, b1 = (min(m0 + TM, gp.M) - 1u) / K;
  if (lane == 0) {
    memoryBarrierBuffer();  // the partials and logits before the tickets (in order)
    uint mine = 0u;
    for (uint b = b0; b <= b1; ++b) {
      const uint count = G * ((b * K + K - 1u) / TM - b * K / TM + 1u);
      if (atomicAdd(scratch[tickets + b], 1u) == count - 1u) mine |= 1u << (b - b0);
    }
    merges = mine;
  }
  barrier();
  const uint mine = merges;  // uniform: a shared value after a barrier
  if (mine == 0u) return;
  memoryBarrierBuffer();

  for (uint b = b0; b <= b1; ++b) {
    if ((mine & (1u << (b - b0))) == 0u) continue;  // uniform
    const uint r0 = b * K;
    // Read before this step's merge of source b writes them.
    const bool live = done[b] == 0u;
    const uint n_alive = live ? min(alive_count[b], K) : 0u;
    for (uint h = 0; h < n_alive; ++h) merge_row(r0 + h, G, (bp.flags & 1u) != 0u ? forced[r0 + h] : -1);
    // Invocation 0 wrote the candidates and merges them.
    if (lane == 0) {
      beam_merge(b);
      scratch[tickets + b] = 0u;  // every workgroup with rows of the source has taken its ticket
      memoryBarrierBuffer();
    }
    barrier();
    if (live) gather_rows(r0);  // source b's rows alone: no other workgroup reads or writes them now
  }
  if (bp.gate_words == 0u) return;  // uniform: a push constant

  // The gate check, once every source's done flag is in: the last workgroup to merge.
  if (lane == 0) {
    memoryBarrierBuffer();
    last_source = atomicAdd(scratch[0], uint(bitCount(mine))) + uint(bitCount(mine)) == B;
  }
  barrier();
  if (!last_source) return;  // uniform: a shared value after a barrier
  gate_check(lane);
  if (lane == 0) scratch[0] = 0u;  // every source's merge has counted
}
