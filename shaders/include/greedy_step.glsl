// The greedy decoder's bookkeeping for one row once its token is chosen (argmax.comp, and
// gemv_argmax.comp's last workgroup): the token and score into their outputs and histories, the
// non-finite mark, the attention weights into their history, the token's embedding row into the
// next step's input, and the row's finished flag. The including shader declares the bindings
// index_out, tok_hist, score_hist, finished, weights, attn_hist, table, emb_out, nonfinite, the
// push block p (S, ld, col, eos, flags, emb_dim, table_offset, table_ld, emb_offset, emb_ld,
// mark) and GREEDY_V (the vocabulary size). Every invocation of the workgroup calls it for the
// same row in uniform control flow (it may barrier()).
#ifndef VKRNN_GREEDY_STEP_GLSL
#define VKRNN_GREEDY_STEP_GLSL

#include "kernel_flags.h"

// token: the emitted token (pad for a finished row); m: the row's max logit; score: the
// log-softmax of the token; done: the row had finished before this step.
void greedy_record(uint b, uint lane, uint lanes, int token, bool done, float m, float score) {
  const uint h = b * p.ld + p.col;
  if (lane == 0) {
    if ((p.flags & ARGMAX_INDEX) != 0) index_out[b] = token;
    if ((p.flags & ARGMAX_TOKENS) != 0) tok_hist[h] = token;
    if ((p.flags & ARGMAX_SCORE) != 0) score_hist[h] = done ? 0.0 : score;
    if ((p.flags & ARGMAX_NONFINITE) != 0 && !done && (isnan(m) || isinf(m)) && nonfinite[b] == 0u)
      nonfinite[b] = p.mark;
  }
  if ((p.flags & ARGMAX_ATTENTION) != 0) {
    for (uint s = lane; s < p.S; s += lanes) attn_hist[h * p.S + s] = done ? 0.0 : weights[b * p.S + s];
  }
  if ((p.flags & ARGMAX_EMBED) != 0) {
    // The next step's input embedding, fused here to save the decoder a dispatch per token.
    // token < V <= the table's rows: the argmax is clamped, pad is checked by the host.
    const uint src = p.table_offset + min(uint(token), GREEDY_V - 1u) * p.table_ld, dst = p.emb_offset + b * p.emb_ld;
    for (uint j = lane; j < p.emb_dim; j += lanes) emb_out[dst + j] = table[src + j];
  }
  if ((p.flags & ARGMAX_FINISHED) != 0) {
    // Every invocation has read finished[b] (the caller's `done`) before it changes.
    barrier();
    if (lane == 0 && !done && token == p.eos) finished[b] = 1u;
  }
}

#endif  // VKRNN_GREEDY_STEP_GLSL
