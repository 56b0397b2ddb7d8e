#pragma once
// The decoding kernels: greedy selection (shaders/argmax.comp), top-k (topk.comp) and the
// beam-search merge (beam_search.comp), and the whole beam step after the logits (beam_step.comp).
#include <array>
#include <cstddef>
#include <cstdint>

#include "kernel_flags.h"
#include "ops/kernel_interface.hpp"
#include "reflect/argmax.hpp"
#include "reflect/beam_search.hpp"
#include "reflect/beam_step.hpp"
#include "reflect/gemv_beam.hpp"
#include "reflect/logits_processor.hpp"
#include "reflect/topk.hpp"

namespace vkrnn::kernels {

// Row-wise argmax with the greedy decoder's bookkeeping; Push::flags: ARGMAX_*. With
// ARGMAX_NONFINITE a row whose max is not finite gets nonfinite[b] = mark where it is 0; with
// ARGMAX_CHOSEN a row emits chosen[b] where it is >= 0 (sampled or forced) instead.
struct Argmax {
  VKRNN_KERNEL(argmax, "argmax", .subgroup = true)
  struct Push {
    std::uint32_t B, V, S, ld, col;
    std::int32_t eos, pad;
    std::uint32_t flags;
    std::uint32_t emb_dim, table_offset, table_ld, emb_offset, emb_ld;
    std::uint32_t mark;
  };
  VKRNN_PUSH(B, V, S, ld, col, eos, pad, flags, emb_dim, table_offset, table_ld, emb_offset, emb_ld,
             mark)
  struct Constants {
    VKRNN_LOCAL_SIZE;
    bool ONE_SUBGROUP = false;
  };
  VKRNN_CONSTANTS(VKRNN_LOCAL_SIZE_IDS, (ONE_SUBGROUP, 15))
  struct Bindings {
    Tensor logits, index_out, value_out, tok_hist, score_hist, finished, logit_hist, weights,
        attn_hist, table, emb_out, nonfinite, chosen;
  };
  VKRNN_BINDINGS((logits, read), (index_out, write), (value_out, write), (tok_hist, write),
                 (score_hist, write), (finished, read_write), (logit_hist, write),
                 (weights, read), (attn_hist, write), (table, read), (emb_out, write),
                 (nonfinite, read_write), (chosen, read))
};

// The k largest of each row (optionally as log-softmax values); with mark != 0 a row whose max
// is not finite gets nonfinite[b] = mark where it is 0.
struct TopK {
  VKRNN_KERNEL(topk, "topk", .subgroup = true)
  struct Push {
    std::uint32_t B, N, k, log_softmax, mark, forced;
  };
  VKRNN_PUSH(B, N, k, log_softmax, mark, forced)
  struct Constants {
    VKRNN_LOCAL_SIZE;
    std::uint32_t K_MAX = 1;
    bool ONE_SUBGROUP = false;
  };
  VKRNN_CONSTANTS(VKRNN_LOCAL_SIZE_IDS, (K_MAX, 3), (ONE_SUBGROUP, 15))
  struct Bindings {
    Tensor xs, values, ids, nonfinite, forced;
  };
  VKRNN_BINDINGS((xs, read), (values, write), (ids, write), (nonfinite, read_write), (forced, read))
};

// The logits rules and sampling of one decoding step, in place on the logits; Push::flags:
// LOGITS_*. The sampled or forced token goes to chosen[b] (-1: the argmax's).
struct LogitsProcessor {
  VKRNN_KERNEL(logits_processor, "logits_processor", .subgroup = true)
  struct Push {
    std::uint32_t B, V, ld, step, flags;
    float inv_temperature, penalty;
    std::uint32_t ngram, min_length;
    std::int32_t eos, unk;
    std::uint32_t n_suppressed, top_k;
    float top_p;
    std::uint32_t seed_lo, seed_hi, prefix_len, n_sequences;
  };
  VKRNN_PUSH(B, V, ld, step, flags, inv_temperature, penalty, ngram, min_length, eos, unk,
             n_suppressed, top_k, top_p, seed_lo, seed_hi, prefix_len, n_sequences)
  struct Constants {
    VKRNN_LOCAL_SIZE;
    bool ONE_SUBGROUP = false;
  };
  VKRNN_CONSTANTS(VKRNN_LOCAL_SIZE_IDS, (ONE_SUBGROUP, 15))
  struct Bindings {
    Tensor logits, inputs, hist, seen, suppressed, chosen, prefix;
  };
  VKRNN_BINDINGS((logits, read_write), (inputs, read), (hist, read_write), (seen, read_write),
                 (suppressed, read), (chosen, write), (prefix, read))
};

// One beam-search step: merges each row's candidates into its beams, on the GPU.
struct BeamSearch {
  VKRNN_KERNEL(beam_search, "beam_search")
  struct Push {
    std::uint32_t B, K, kc, T, t, F;
    std::int32_t eos, pad;
    std::uint32_t stop;
  };
  VKRNN_PUSH(B, K, kc, T, t, F, eos, pad, stop)
  using Constants = Workgroup;
  VKRNN_CONSTANTS(VKRNN_LOCAL_SIZE_IDS)
  struct Bindings {
    Tensor values, ids, score_in, score_out, alive_count, done, fin_count, fin, hist_token,
        hist_parent, parents, next_tokens, heads;
  };
  VKRNN_BINDINGS((values, read), (ids, read), (score_in, read), (score_out, read_write),
                 (alive_count, read_write), (done, read_write), (fin_count, read_write),
                 (fin, read_write), (hist_token, read_write), (hist_parent, read_write),
                 (parents, write), (next_tokens, write), (heads, read_write))
};

// A whole beam-search step after the logits: top-k of each alive row, the merge, up to 4
// gathers of the rows the next step reads (states from their parents, the next tokens'
// embeddings) through up to 6 slot tensors, the gate check (src/ops/beam_step.hpp).
struct BeamStep {
  VKRNN_KERNEL(beam_step, "beam_step", .subgroup = true)
  static constexpr std::size_t slots = 6;
  struct Push {
    std::uint32_t B, K, kc, T, t, F;
    std::int32_t eos, pad;
    std::uint32_t stop, V, gate_words, flags;
    std::array<std::uint32_t, 4> g0, g1, g2, g3, lds;
  };
  VKRNN_PUSH(B, K, kc, T, t, F, eos, pad, stop, V, gate_words, flags, g0, g1, g2, g3, lds)
  struct Constants {
    VKRNN_LOCAL_SIZE;
    std::uint32_t K_MAX = 1;  // its rows' top-k is TopK's (topk_row.glsl)
    bool ONE_SUBGROUP = false;
    bool BACK = false;  // a gather copies in place (compiled out where none does)
  };
  VKRNN_CONSTANTS(VKRNN_LOCAL_SIZE_IDS, (K_MAX, 3), (BACK, 4), (ONE_SUBGROUP, 15))
  struct Bindings {
    Tensor xs, forced, nonfinite, values, ids, score_in, score_out, alive_count, done, fin_count, fin,
        hist_token, hist_parent, parents, next_tokens, heads, slot0, slot1, slot2, slot3, slot4, slot5, gate, ticket;
  };
  VKRNN_BINDINGS((xs, read), (forced, read), (nonfinite, read_write), (values, read_write), (ids, read_write),
                 (score_in, read), (score_out, read_write), (alive_count, read_write), (done, read_write),
                 (fin_count, read_write), (fin, read_write), (hist_token, read_write), (hist_parent, read_write),
                 (parents, read_write), (next_tokens, read_write), (heads, read_write), (slot0, read_write),
                 (slot1, read_write), (slot2, read_write), (slot3, read_write), (slot4, read_write),
                 (slot5, read_write), (gate, read_write), (ticket, read_write))
};

// The output projection (gemv.comp's) and BeamStep's whole step after it in one dispatch: each
// workgroup publishes its block's softmax partial of each row in `scratch`; the last one to
// finish with a source's rows (a ticket per source) merges that source and gathers its rows,
// the last merge checks the gate (src/ops/beam_step.hpp). Push: 128 bytes, 16-bit fields
// paired (shaders/gemv_beam.comp).
struct GemvBeam {
  VKRNN_KERNEL(gemv_beam, "gemv_beam", .shuffle = true, .fp16 = true, .subgroup = true)
  struct Push {
    std::uint32_t N, dk, x_off, ld, s_off, bk, kcf, tt;
    std::int32_t eos, pad;
    std::uint32_t stop, flags;
    std::array<std::uint32_t, 4> g0, g1, g2, g3, lds;
  };
  VKRNN_PUSH(N, dk, x_off, ld, s_off, bk, kcf, tt, eos, pad, stop, flags, g0, g1, g2, g3, lds)
  static constexpr std::uint32_t stop_bias = 1u << 31;     // in `stop`
  static constexpr std::uint32_t gate_words_shift = 20;    // in `flags`, 12 bits
  struct Constants {
    VKRNN_LOCAL_SIZE;
    std::uint32_t TM = 1, TN = 4, BLOCKS = 1;
    bool ALIGNED = true;
    bool WEIGHT_I8 = false;
    bool WIDE = false;
    bool TEXEL = false;
    std::uint32_t PACK_ROWS = 0;
    std::uint32_t X_LANES = 8;    // _shuffle: as in Gemv
    std::uint32_t K_MAX = 1;      // as in BeamStep
    bool BACK = false;            // as in BeamStep
    std::uint32_t K_STREAMS = 1;  // as in Gemv
    bool ONE_SUBGROUP = false;
  };
  VKRNN_CONSTANTS(VKRNN_LOCAL_SIZE_IDS, (TM, 3), (TN, 4), (BLOCKS, 5), (ALIGNED, 6), (WEIGHT_I8, 7), (WIDE, 8),
                  (TEXEL, 9), (PACK_ROWS, 10), (X_LANES, 11), (K_MAX, 12), (BACK, 13), (K_STREAMS, 14),
                  (ONE_SUBGROUP, 15))
  struct Bindings {
    Tensor xs, ws, bias, ys, forced, nonfinite, values, ids, score_in, score_out, alive_count, done, fin_count, fin,
        hist_token, hist_parent, parents, next_tokens, heads, slot0, slot1, slot2, slot3, slot4, slot5, gate,
        scratch, wt, xt;
  };
  VKRNN_BINDINGS((xs, read), (ws, read), (bias, read), (ys, read_write), (forced, read), (nonfinite, read_write),
                 (values, read_write), (ids, read_write), (score_in, read), (score_out, read_write),
                 (alive_count, read_write), (done, read_write), (fin_count, read_write), (fin, read_write),
                 (hist_token, read_write), (hist_parent, read_write), (parents, read_write),
                 (next_tokens, read_write), (heads, read_write), (slot0, read_write), (slot1, read_write),
                 (slot2, read_write), (slot3, read_write), (slot4, read_write), (slot5, read_write),
                 (gate, read_write), (scratch, read_write), (wt, read), (xt, read))
  VKRNN_TEXEL_VIEWS((wt, ws), (xt, xs))
};

}  // namespace vkrnn::kernels
