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

shared bool last_row, last_source, any_open;

const uint GATHER_PARENT = 0u;
const uint GATHER_BACK = 1u;
const uint GATHER_TOKEN = 2u;

// Element i of slot s: a float, or with v4 the vec4 i (a float comes back in .x).
vec4 slot_load(uint s, uint i, bool v4) {
  if (v4) {
    switch (s) {
      case 0u: return slot0v[i];
      case 1u: return slot1v[i];
      case 2u: return slot2v[i];
      case 3u: return slot3v[i];
      case 4u: return slot4v[i];
      default: return slot5v[i];
    }
  }
  switch (s) {
    case 0u: return vec4(slot0[i]);
    case 1u: return vec4(slot1[i]);
    case 2u: return vec4(slot2[i]);
    case 3u: return vec4(slot3[i]);
    case 4u: return vec4(slot4[i]);
    default: return vec4(slot5[i]);
  }
}

void slot_store(uint s, uint i, vec4 v, bool v4) {
  if (v4) {
    switch (s) {
      case 0u: slot0v[i] = v; break;
      case 1u: slot1v[i] = v; break;
      case 2u: slot2v[i] = v; break;
      case 3u: slot3v[i] = v; break;
      case 4u: slot4v[i] = v; break;
      default: slot5v[i] = v; break;
    }
    return;
  }
  switch (s) {
    case 0u: slot0[i] = v.x; break;
    case 1u: slot1[i] = v.x; break;
    case 2u: slot2[i] = v.x; break;
    case 3u: slot3[i] = v.x; break;
    case 4u: slot4[i] = v.x; break;
    default: slot5[i] = v.x; break;
  }
}

// Gather e over rows r0 .. r0 + K - 1 (the file's comment), in vec4s where bit 16 + e of flags
// says its columns, offsets and row strides allow.
void gather(uint e, uint r0) {
  const uint R = p.B * p.K, lane = gl_LocalInvocationIndex, WG = gl_WorkGroupSize.x;
  const uvec4 g = e == 0u ? p.g0 : e == 1u ? p.g1 : e == 2u ? p.g2 : p.g3;
  const bool v4 = (p.flags & (65536u << e)) != 0u;
  const uint u = v4 ? 4u : 1u;  // elements per unit
  const uint kind = g.x & 3u, src = (g.x >> 2) & 7u, dst = (g.x >> 5) & 7u, wide = g.x >> 8;
  const uint cols = g.y / u, src_off = g.z / u, dst_off = g.w / u;
  const uint src_ld = (p.lds[e] & 0xffffu) / u, dst_ld = (p.lds[e] >> 16) / u;
  if (BACK && kind == GATHER_BACK) {
    // In place: an invocation reads a column of all K parents' rows before it writes that
    // column of the K rows (K <= K_MAX, beam_step.cpp); no other invocation touches it.
    for (uint j = lane; j < cols; j += WG) {
      vec4 col[K_MAX];
      for (uint k = 0; k < p.K; ++k) col[k] = slot_load(src, src_off + uint(parents[r0 + k]) * src_ld + j, v4);
      for (uint k = 0; k < p.K; ++k) slot_store(src, src_off + (r0 + k) * src_ld + j, col[k], v4);
    }
    return;
  }
  const uint outer = kind == GATHER_TOKEN ? 1u : wide, vocab = wide;
  const uint n = p.K * cols;
  for (uint o = 0; o < outer; ++o) {
    for (uint i = lane; i < n; i += WG) {
      const uint r = r0 + i / cols, j = i % cols;
      const uint from = kind == GATHER_TOKEN ? uint(clamp(next_tokens[r], 0, int(vocab) - 1)) : uint(parents[r]);
      slot_store(dst, dst_off + o * R * cols + r * dst_ld + j, slot_load(src, src_off + o * R * cols + from * src_ld + j, v4), v4);
    }
  }
}

void main() {
  const uint rows = (p.flags >> 8) & 0xffu, gathers = (p.flags >> 1) & 7u;
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
  if (live) {
    // In order; a gather that reads a tensor an earlier one wrote waits for those writes
    // (bit 4 + e of flags, set by the host).
    for (uint e = 0; e < gathers; ++e) {
      if ((p.flags & (16u << e)) != 0u) {
        memoryBarrierBuffer();
        barrier();
      }
      gather(e, r0);
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
