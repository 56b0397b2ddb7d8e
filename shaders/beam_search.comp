#version 450
// One beam-search step's candidate merge (docs/model-format.md, "Beam search"), exactly as the
// host's sort-based walk: candidates score(h) + value in fp32, ranked by score descending, then
// alive slot h, then token id; EOS candidates become finished records, the others fill the next
// alive list until it holds K; then the row stops (>= `stop` finished -- K, or more with a
// patience factor -- or the last step) or goes on.
//
// One invocation owns one source row (no barriers, no shared memory). Each alive slot's list
// (TopK's output: values descending, ids ascending among equal values, -1 padding) is a sorted
// stream, so the walk is a K-way merge of the lists' heads. A list's head is NOT simply its
// first untaken entry: after adding score(h), entries with different values can round to the
// same sum, and then the lower id wins even from later in the list. Sums never increase along a
// list (fp addition is monotone), so equal sums form one run from the first untaken entry; the
// head is the lowest id among that run's untaken entries ("taken": a 64-bit mask per list).
//
// Per-list temporaries live in `heads` (a buffer): lavapipe gave partial results for
// dynamically indexed private arrays of >= 64 elements.
//
// Loop budget (lavapipe silently ends loops after ~65535 iterations per invocation in total):
// find_head visits each position at most twice (cursor advance + run scan) -> <= 2 kc. The
// initial heads cost <= K kc (nothing taken yet, one pass). Picks: <= K that join the alive
// list + <= K EOS ones (one EOS per list: TopK's ids are distinct), each a K-head scan plus a
// find_head: 2K (K + 2 kc). The closing loops: <= 2K. K = 63, kc = 64: 4032 + 24066 + 126 =
// 28224 < 32768 (attention_detail::kLoopBudget; src/ops/beam_search.cpp asserts the bound).
layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;

layout(set = 0, binding = 0) readonly buffer Values { float values[]; };        // [R, kc]
layout(set = 0, binding = 1) readonly buffer Ids { int ids[]; };                // [R, kc]
layout(set = 0, binding = 2) readonly buffer ScoreIn { float score_in[]; };     // [R] alive scores, step t
layout(set = 0, binding = 3) buffer ScoreOut { float score_out[]; };            // [R] alive scores, step t + 1
layout(set = 0, binding = 4) buffer AliveCount { uint alive_count[]; };         // [B]
layout(set = 0, binding = 5) buffer Done { uint done[]; };                      // [B]
layout(set = 0, binding = 6) buffer FinCount { uint fin_count[]; };             // [B]
layout(set = 0, binding = 7) writeonly buffer Fin { uvec4 fin[]; };             // [B, F]: step, slot, score bits, finished
layout(set = 0, binding = 8) writeonly buffer HistToken { int hist_token[]; };  // [T, R]
layout(set = 0, binding = 9) writeonly buffer HistParent { int hist_parent[]; };// [T, R]
layout(set = 0, binding = 10) writeonly buffer Parents { int parents[]; };      // [R]
layout(set = 0, binding = 11) writeonly buffer NextTokens { int next_tokens[]; };// [R]
layout(set = 0, binding = 12) buffer Heads { uint heads[]; };                   // [R, 4]: cursor, taken lo, taken hi, head

layout(push_constant) uniform Push {
  uint B;
  uint K;
  uint kc;
  uint T;
  uint t;
  uint F;
  int eos;
  int pad;
  uint stop;  // finished hypotheses that end the row's search
} p;

const uint NONE = 0xffffffffu;

bool is_taken(uint base, uint pos) {
  return ((heads[base + 1u + (pos >> 5)] >> (pos & 31u)) & 1u) != 0u;
}

// Sets list r's head (heads[4r + 3]) to the position of its best untaken candidate, NONE when
// none is left. a: the list's alive score.
void find_head(uint r, float a) {
  const uint base = 4u * r;
  const uint row = r * p.kc;
  uint c = heads[base];
  while (c < p.kc && (ids[row + c] < 0 || is_taken(base, c))) ++c;
  heads[base] = c;
  if (c == p.kc) {
    heads[base + 3u] = NONE;
    return;
  }
  precise float s = a + values[row + c];
  uint best = c;
  int best_id = ids[row + c];
  for (uint q = c + 1u; q < p.kc; ++q) {
    const int id = ids[row + q];
    if (id < 0) continue;
    precise float sq = a + values[row + q];
    if (sq != s) break;
    if (id < best_id && !is_taken(base, q)) {
      best = q;
      best_id = id;
    }
  }
  heads[base + 3u] = best;
}

void release_row(uint r0) {
  // A finished row feeds its own rows with pad: its decoder results are no longer read.
  for (uint i = 0; i < p.K; ++i) {
    parents[r0 + i] = int(r0 + i);
    next_tokens[r0 + i] = p.pad;
  }
}

void main() {
  const uint b = (gl_WorkGroupID.x + gl_NumWorkGroups.x * gl_WorkGroupID.y) * gl_WorkGroupSize.x +
                 gl_LocalInvocationIndex;
  if (b >= p.B) return;
  const uint R = p.B * p.K;
  const uint r0 = b * p.K;
  if (done[b] != 0u) {
    release_row(r0);
    return;
  }
  const uint n_alive = min(alive_count[b], p.K);
  for (uint h = 0; h < n_alive; ++h) {
    const uint base = 4u * (r0 + h);
    heads[base] = 0u;
    heads[base + 1u] = 0u;
    heads[base + 2u] = 0u;
    find_head(r0 + h, score_in[r0 + h]);
  }

  uint n_next = 0u;
  uint n_fin = fin_count[b];
  const uint hist = p.t * R + r0;
  // n_alive * kc bounds the candidates; TopK's lists end the walk within 2K picks.
  for (uint pick = 0u; pick < n_alive * p.kc && n_next < p.K; ++pick) {
    // The best head: highest sum, ties to the lower slot (strict > in slot order); within a list
    // the head already is the lowest id among equal sums.
    uint bh = NONE;
    float bs = 0.0;
    for (uint h = 0; h < n_alive; ++h) {
      const uint pos = heads[4u * (r0 + h) + 3u];
      if (pos == NONE) continue;
      precise float s = score_in[r0 + h] + values[(r0 + h) * p.kc + pos];
      if (bh == NONE || s > bs) {
        bh = h;
        bs = s;
      }
    }
    if (bh == NONE) break;
    const uint r = r0 + bh;
    const uint pos = heads[4u * r + 3u];
    const int w = ids[r * p.kc + pos];
    heads[4u * r + 1u + (pos >> 5)] |= 1u << (pos & 31u);
    find_head(r, score_in[r]);
    if (w == p.eos) {
      if (n_fin < p.F) fin[b * p.F + n_fin] = uvec4(p.t, bh, floatBitsToUint(bs), 1u);
      ++n_fin;
    } else {
      hist_token[hist + n_next] = w;
      hist_parent[hist + n_next] = int(bh);
      score_out[r0 + n_next] = bs;
      parents[r0 + n_next] = int(r);
      next_tokens[r0 + n_next] = w;
      ++n_next;
    }
  }

  if (n_fin >= p.stop) {
    done[b] = 1u;
    release_row(r0);
  } else if (p.t + 1u == p.T) {
    // Out of steps: the next alive list joins the finished ones as unfinished, in alive order.
    for (uint j = 0; j < n_next; ++j) {
      if (n_fin < p.F) fin[b * p.F + n_fin] = uvec4(p.t, j, floatBitsToUint(score_out[r0 + j]), 0u);
      ++n_fin;
    }
    done[b] = 1u;
    release_row(r0);
  } else {
    alive_count[b] = n_next;
    // Empty slots copy slot 0's state (any valid row) and read pad.
    for (uint i = n_next; i < p.K; ++i) {
      parents[r0 + i] = int(r0);
      next_tokens[r0 + i] = p.pad;
    }
  }
  fin_count[b] = min(n_fin, p.F);
}
