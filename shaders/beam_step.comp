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
// Gathers (up to 4), each `outer` blocks of R rows of `cols` 32-bit elements in slot buffers
// (up to 6 distinct tensors, so gathers into one tensor share a binding); block o's row r at
// src_off + o * R * cols + r * src_ld of the source slot and dst_off + o * R * cols + r * dst_ld
// of the destination slot (outer > 1 only for packed rows). By kind:
//   GATHER_PARENT  dst row r = src row parents[r] (a state into its other buffer);
//   GATHER_BACK    src row r = src row parents[r], in place (a state kept in the columns of a
//                  wider tensor): each invocation holds a column of the source's K rows in
//                  registers, so no scratch buffer is read or written;
//   GATHER_TOKEN   dst row r = src row next_tokens[r] clamped to [0, vocab) (the embedding of
//                  the token each row reads next, as gemv_argmax.comp writes it in greedy decoding).
// Gather e's words in the push block: g<e> = (kind | src slot << 2 | dst slot << 5 | (vocab for
// a token lookup, else outer) << 8, cols, src_off, dst_off), lds[e] = src_ld | dst_ld << 16.
layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
layout(constant_id = 3) const uint K_MAX = 8;
// Whether a gather copies in place: lavapipe runs the whole step ~20 us slower per dispatch
// with that path compiled in, so it is only where the plan has one.
layout(constant_id = 4) const bool BACK = false;

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
layout(set = 0, binding = 16) coherent buffer Slot0 { float slot0[]; };
layout(set = 0, binding = 17) coherent buffer Slot1 { float slot1[]; };
layout(set = 0, binding = 18) coherent buffer Slot2 { float slot2[]; };
layout(set = 0, binding = 19) coherent buffer Slot3 { float slot3[]; };
layout(set = 0, binding = 20) coherent buffer Slot4 { float slot4[]; };
layout(set = 0, binding = 21) coherent buffer Slot5 { float slot5[]; };
// The same slots as vec4s: a gather whose columns, offsets and row strides are multiples of 4.
layout(set = 0, binding = 16) coherent buffer Slot0v { vec4 slot0v[]; };
layout(set = 0, binding = 17) coherent buffer Slot1v { vec4 slot1v[]; };
layout(set = 0, binding = 18) coherent buffer Slot2v { vec4 slot2v[]; };
layout(set = 0, binding = 19) coherent buffer Slot3v { vec4 slot3v[]; };
layout(set = 0, binding = 20) coherent buffer Slot4v { vec4 slot4v[]; };
layout(set = 0, binding = 21) coherent buffer Slot5v { vec4 slot5v[]; };
layout(set = 0, binding = 22) buffer Gate { uint gate[]; };                       // the sequence's gate table
layout(set = 0, binding = 23) coherent buffer Ticket { uint ticket[]; };          // [1 + B], 0 between dispatches

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
  uint gate_words;   // nonzero: close the gate (its first gate_words words; the next counts open checks)
  uint flags;        // forced (bit 0: read `forced`, a target prefix's token per row) | gathers
                     // (0 .. 4) << 1 | wait before gather e (bits 4 .. 7) | decoder rows per
                     // workgroup (1 .. K, all of one source) << 8 | gather e in vec4s (bits 16 .. 19)
  uvec4 g0, g1, g2, g3;
  uvec4 lds;
} p;

#include "float_order.glsl"
#include "topk_row.glsl"
#include "beam_merge.glsl"

shared bool last_row, last_source;

#include "beam_gather.glsl"

void main() {
  const uint rows = (p.flags >> 8) & 0xffu;
  const uint groups = (p.K + rows - 1u) / rows;  // per source
  const uint g = gl_WorkGroupID.x + gl_NumWorkGroups.x * gl_WorkGroupID.y;
  if (g >= p.B * groups) return;  // uniform per workgroup; takes no ticket
  const uint lane = gl_LocalInvocationIndex;
  const uint b = g / groups, r0 = b * p.K;
  // Read before this step's merge of source b writes them: the merge waits for every ticket.
  const bool live = done[b] == 0u;
  const uint n_alive = live ? min(alive_count[b], p.K) : 0u;
  const uint first = (g % groups) * rows;
  for (uint h = first; h < min(n_alive, first + rows); ++h)
    topk_row(r0 + h, p.V, p.kc, true, p.t + 1u, (p.flags & 1u) != 0u ? forced[r0 + h] : -1);

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
  if (live) gather_rows(r0);
  if (p.gate_words == 0u) return;  // uniform: a push constant

  // The gate check, once every source's done flag is in: the last merge to take a ticket.
  if (lane == 0) {
    memoryBarrierBuffer();
    last_source = atomicAdd(ticket[0], 1u) == p.B - 1u;
  }
  barrier();
  if (!last_source) return;  // uniform: a shared value after a barrier
  gate_check(lane);
  if (lane == 0) ticket[0] = 0u;  // every source has taken its ticket
}
