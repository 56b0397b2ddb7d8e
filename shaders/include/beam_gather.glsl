// The gathers of a beam-search step (beam_step.comp, gemv_beam.comp; beam_step.comp's header
// has the kinds and the push words) and the gate check after the merges. The includer declares
// K_MAX, BACK, the buffers parents, next_tokens, done, gate and slot0 .. slot5 (with their vec4
// views slot0v .. slot5v), and the push block p (B, K, flags, g0 .. g3, lds, gate_words).
#ifndef VKRNN_BEAM_GATHER_GLSL
#define VKRNN_BEAM_GATHER_GLSL

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

// Every gather (p.flags bits 1-3: how many) of the source whose K rows start at r0, in order; a
// gather that reads a tensor an earlier one wrote waits for those writes (bit 4 + e of flags,
// set by the host). The source's workgroup calls it in uniform control flow.
void gather_rows(uint r0) {
  const uint gathers = (p.flags >> 1) & 7u;
  for (uint e = 0; e < gathers; ++e) {
    if ((p.flags & (16u << e)) != 0u) {
      memoryBarrierBuffer();
      barrier();
    }
    gather(e, r0);
  }
}

// Sequence::close_gate_when_all(done) once every source's merge is in (p.gate_words != 0):
// zero the gate table's first gate_words words, or count the open check in the next word.
// Every invocation of the (one) workgroup that runs it calls it in uniform control flow.
shared bool any_open;
void gate_check(uint lane) {
  if (lane == 0) any_open = false;
  memoryBarrierBuffer();
  barrier();
  for (uint i = lane; i < p.B; i += gl_WorkGroupSize.x)
    if (done[i] == 0u) any_open = true;
  barrier();
  if (any_open) {
    if (lane == 0) gate[p.gate_words] += 1u;  // Sequence::open_gate_checks
  } else {
    for (uint i = lane; i < p.gate_words; i += gl_WorkGroupSize.x) gate[i] = 0u;
  }
}

#endif  // VKRNN_BEAM_GATHER_GLSL
