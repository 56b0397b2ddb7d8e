#version 450
#extension GL_GOOGLE_include_directive : require
// A whole beam-search step after the decoder's logits, in one dispatch: each workgroup takes the
// top-kc log-softmax candidates of its `rows` decoder rows that are alive (topk_row.glsl, as
// topk.comp; one row per workgroup on GPUs, a whole source on CPU drivers, which pay per
// workgroup); the last of a source's workgroups to finish (an atomic ticket per source) merges
// the source's candidates (beam_merge.glsl, as beam_search.comp, by invocation 0) and gathers
// the rows the next step reads; the last merge to finish (a ticket over the sources) does the
// gate check of Sequence::close_gate_when_all(done). Separately these are TopK, BeamSearch, an
// Embedding gather per state and the gate check: 4 + states dispatches per step, now 1
// (src/ops/beam_step.cpp says when it applies).
//
// Rows of a source only ever take states from rows of the same source, so the merging
// workgroup gathers the source's K rows alone: no other workgroup reads or writes them.
//
// Gathers (up to 2), each `outer` blocks of R rows of `cols` 32-bit elements; block o's row r at
// src_off + o * R * cols + r * src_ld of src_e and dst_off + o * R * cols + r * dst_ld of dst_e
// (outer > 1 only for packed rows). By kind:
//   GATHER_PARENT  dst row r = src row parents[r] (a state into its other buffer);
//   GATHER_BACK    the same, then dst row r back into src row r (a state kept in the columns of a
//                  wider tensor: dst is scratch);
//   GATHER_TOKEN   dst row r = src row next_tokens[r] clamped to [0, vocab) (the embedding of
//                  the token each row reads next, as gemv_argmax.comp writes it in greedy decoding).
layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
layout(constant_id = 3) const uint K_MAX = 8;

#include "reduce.glsl"

layout(set = 0, binding = 0) readonly buffer X { float xs[]; };                  // [R, V] logits
layout(set = 0, binding = 1) readonly buffer Forced { int forced[]; };            // [R]
layout(set = 0, binding = 2) buffer NonFinite { uint nonfinite[]; };              // [R]
layout(set = 0, binding = 3) coherent buffer Values { float values[]; };          // [R, kc]
layout(set = 0, binding = 4) coherent buffer Ids { int ids[]; };                  // [R, kc]
layout(set = 0, binding = 5) readonly buffer ScoreIn { float score_in[]; };       // [R]
layout(set = 0, binding = 6) buffer ScoreOut { float score_out[]; };              // [R]
layout(set = 0, binding = 7) buffer AliveCount { uint alive_count[]; };           // [B]
layout(set = 0, binding = 8) coherent buffer Done { uint done[]; };               // [B]
layout(set = 0, binding = 9) buffer FinCount { uint fin_count[]; };               // [B]
layout(set = 0, binding = 10) buffer Fin { uvec4 fin[]; };                        // [B, F]
layout(set = 0, binding = 11) buffer HistToken { int hist_token[]; };             // [T, R]
layout(set = 0, binding = 12) buffer HistParent { int hist_parent[]; };           // [T, R]
layout(set = 0, binding = 13) coherent buffer Parents { int parents[]; };         // [R]
layout(set = 0, binding = 14) coherent buffer NextTokens { int next_tokens[]; };  // [R]
layout(set = 0, binding = 15) buffer Heads { uint heads[]; };                     // [R, 4]
layout(set = 0, binding = 16) coherent buffer Src0 { float src0[]; };
layout(set = 0, binding = 17) coherent buffer Dst0 { float dst0[]; };
layout(set = 0, binding = 18) coherent buffer Src1 { float src1[]; };
layout(set = 0, binding = 19) coherent buffer Dst1 { float dst1[]; };
layout(set = 0, binding = 20) buffer Gate { uint gate[]; };                       // the sequence's gate table
layout(set = 0, binding = 21) coherent buffer Ticket { uint ticket[]; };          // [1 + B], 0 between dispatches

layout(push_constant) uniform Push {
  uint B;
  uint K;
  uint kc;
  uint T;
  uint t;
  uint F;
  int eos;
  int pad;
  uint stop;
  uint V;
  uint forced;       // nonzero: read `forced` (a target prefix's token per row)
  uint gate_words;   // nonzero: close the gate (its first gate_words words; the next counts open checks)
  uint gathers;      // 0 .. 2
  uint rows;         // decoder rows per workgroup (1 .. K), all of one source
  uint g0_cols, g0_outer, g0_src_off, g0_src_ld, g0_dst_off, g0_dst_ld, g0_kind, g0_vocab;
  uint g1_cols, g1_outer, g1_src_off, g1_src_ld, g1_dst_off, g1_dst_ld, g1_kind, g1_vocab;
} p;

#include "float_order.glsl"
#include "topk_row.glsl"
#include "beam_merge.glsl"

shared bool last_row, last_source, any_open;

const uint GATHER_PARENT = 0u;
const uint GATHER_BACK = 1u;
const uint GATHER_TOKEN = 2u;

// One pass of gather e over rows r0 .. r0 + K - 1: rows in (from their parents or tokens), or
// with `back` the scratch rows back into the state's columns.
void gather(uint e, uint r0, bool back) {
  const uint R = p.B * p.K;
  const uint cols = e == 0u ? p.g0_cols : p.g1_cols;
  const uint outer = e == 0u ? p.g0_outer : p.g1_outer;
  const uint src_off = e == 0u ? p.g0_src_off : p.g1_src_off;
  const uint src_ld = e == 0u ? p.g0_src_ld : p.g1_src_ld;
  const uint dst_off = e == 0u ? p.g0_dst_off : p.g1_dst_off;
  const uint dst_ld = e == 0u ? p.g0_dst_ld : p.g1_dst_ld;
  const uint kind = e == 0u ? p.g0_kind : p.g1_kind;
  const uint vocab = e == 0u ? p.g0_vocab : p.g1_vocab;
  const uint n = p.K * cols;
  for (uint o = 0; o < outer; ++o) {
    for (uint i = gl_LocalInvocationIndex; i < n; i += gl_WorkGroupSize.x) {
      const uint r = r0 + i / cols, j = i % cols;
      const uint d = dst_off + o * R * cols + r * dst_ld + j;
      if (back) {
        const uint s = src_off + r * src_ld + j;
        if (e == 0u) src0[s] = dst0[d];
        else src1[s] = dst1[d];
        continue;
      }
      const int w = kind == GATHER_TOKEN ? next_tokens[r] : parents[r];
      const uint from = kind == GATHER_TOKEN ? uint(clamp(w, 0, int(vocab) - 1)) : uint(w);
      const uint s = src_off + o * R * cols + from * src_ld + j;
      if (e == 0u) dst0[d] = src0[s];
      else dst1[d] = src1[s];
    }
  }
}

void main() {
  const uint groups = (p.K + p.rows - 1u) / p.rows;  // per source
  const uint g = gl_WorkGroupID.x + gl_NumWorkGroups.x * gl_WorkGroupID.y;
  if (g >= p.B * groups) return;  // uniform per workgroup; takes no ticket
  const uint lane = gl_LocalInvocationIndex;
  const uint b = g / groups, r0 = b * p.K;
  // Read before this step's merge of source b writes them: the merge waits for every ticket.
  const bool live = done[b] == 0u;
  const uint n_alive = live ? min(alive_count[b], p.K) : 0u;
  const uint first = (g % groups) * p.rows;
  for (uint h = first; h < min(n_alive, first + p.rows); ++h)
    topk_row(r0 + h, p.V, p.kc, true, p.t + 1u, p.forced != 0u ? forced[r0 + h] : -1);

  // The source's last workgroup to finish merges it. Invocation 0 wrote the rows' candidates;
  // it publishes them and then takes the ticket (stores, memory barrier, atomic: in order).
  if (lane == 0) {
    memoryBarrierBuffer();
    last_row = atomicAdd(ticket[1u + b], 1u) == groups - 1u;
  }
  barrier();
  if (!last_row) return;  // uniform: a shared value after a barrier
  memoryBarrierBuffer();
  if (lane == 0) {
    beam_merge(b);
    ticket[1u + b] = 0u;  // every workgroup of the source has taken its ticket
    memoryBarrierBuffer();
  }
  barrier();
  if (live) {
    for (uint e = 0; e < p.gathers; ++e) {
      gather(e, r0, false);
      if ((e == 0u ? p.g0_kind : p.g1_kind) == GATHER_BACK) {
        memoryBarrierBuffer();
        barrier();
        gather(e, r0, true);
      }
    }
  }
  if (p.gate_words == 0u) return;  // uniform: a push constant

  // The gate check, once every source's done flag is in: the last merge to take a ticket.
  if (lane == 0) {
    memoryBarrierBuffer();
    last_source = atomicAdd(ticket[0], 1u) == p.B - 1u;
    any_open = false;
  }
  barrier();
  if (!last_source) return;  // uniform: a shared value after a barrier
  memoryBarrierBuffer();
  for (uint i = lane; i < p.B; i += gl_WorkGroupSize.x)
    if (done[i] == 0u) any_open = true;
  barrier();
  if (any_open) {
    if (lane == 0) gate[p.gate_words] += 1u;  // Sequence::open_gate_checks
  } else {
    for (uint i = lane; i < p.gate_words; i += gl_WorkGroupSize.x) gate[i] = 0u;
  }
  if (lane == 0) ticket[0] = 0u;  // every source has taken its ticket
}
