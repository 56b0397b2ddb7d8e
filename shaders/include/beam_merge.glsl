// One beam-search step's candidate merge for one source row, by one invocation
// (beam_search.comp's header has the rules and the loop budget): beam_search.comp runs one
// source per invocation, beam_step.comp one per workgroup after its top-k. The includer
// declares the buffers values, ids, score_in, score_out, alive_count, done, fin_count, fin,
// hist_token, hist_parent, parents, next_tokens and heads, and the push constants p.B, p.K,
// p.kc, p.T, p.t, p.F, p.eos, p.pad and p.stop.
#ifndef BEAM_MERGE_GLSL
#define BEAM_MERGE_GLSL

const uint MERGE_NONE = 0xffffffffu;

bool is_taken(uint base, uint pos) {
  return ((heads[base + 1u + (pos >> 5)] >> (pos & 31u)) & 1u) != 0u;
}

// Sets list r's head (heads[4r + 3]) to the position of its best untaken candidate,
// MERGE_NONE when none is left. a: the list's alive score.
void find_head(uint r, float a) {
  const uint base = 4u * r;
  const uint row = r * p.kc;
  uint c = heads[base];
  while (c < p.kc && (ids[row + c] < 0 || is_taken(base, c))) ++c;
  heads[base] = c;
  if (c == p.kc) {
    heads[base + 3u] = MERGE_NONE;
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

// Source row b's step: its alive lists merged into the next alive list, finished records, the
// parents and next tokens of its K decoder rows, its done flag.
void beam_merge(uint b) {
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
    uint bh = MERGE_NONE;
    float bs = 0.0;
    for (uint h = 0; h < n_alive; ++h) {
      const uint pos = heads[4u * (r0 + h) + 3u];
      if (pos == MERGE_NONE) continue;
      precise float s = score_in[r0 + h] + values[(r0 + h) * p.kc + pos];
      if (bh == MERGE_NONE || s > bs) {
        bh = h;
        bs = s;
      }
    }
    if (bh == MERGE_NONE) break;
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

#endif  // BEAM_MERGE_GLSL
