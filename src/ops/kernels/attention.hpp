#pragma once
// The decoder-attention kernels (shaders/attention_*.comp), declared once: src/ops/
// kernel_interface.hpp checks each against its SPIR-V at compile time.
#include <cstdint>

#include "kernel_flags.h"
#include "ops/kernel_interface.hpp"
#include "reflect/attention_context.hpp"
#include "reflect/attention_fused.hpp"
#include "reflect/attention_fused_combine.hpp"
#include "reflect/attention_keys.hpp"
#include "reflect/attention_query.hpp"
#include "reflect/attention_scores.hpp"
#include "reflect/attention_softmax.hpp"

namespace vkrnn::kernels {

// W q (+ b) for the general and additive scores.
struct AttentionQuery {
  VKRNN_KERNEL(attention_query, "attention_query", .subgroup = true)
  struct Push {
    std::uint32_t A, Q, B, has_bias;
    std::uint32_t q_off, q_ld;  // query row b at q[q_off + b * q_ld]
  };
  VKRNN_PUSH(A, Q, B, has_bias, q_off, q_ld)
  struct Constants {
    VKRNN_LOCAL_SIZE;
    std::uint32_t VEC4 = 0;
    bool ONE_SUBGROUP = false;
  };
  VKRNN_CONSTANTS(VKRNN_LOCAL_SIZE_IDS, (VEC4, 3), (ONE_SUBGROUP, 15))
  struct Bindings {
    Tensor w, q, bias, outp;
  };
  VKRNN_BINDINGS((w, read), (q, read), (bias, read), (outp, write))
};

// Raw scores of one query per row against the keys.
struct AttentionScores {
  VKRNN_KERNEL(attention_scores, "attention_scores", .fp16 = true, .subgroup = true)
  struct Push {
    std::uint32_t S, Hk, dk, Qs, heads, rows, nblocks;
    float scale;
  };
  VKRNN_PUSH(S, Hk, dk, Qs, heads, rows, nblocks, scale)
  struct Constants {
    VKRNN_LOCAL_SIZE;
    std::uint32_t SCORE_MODE = 0, KVEC4 = 0, SG_CLUSTER = 0, R = 1, KU = 1;
  };
  VKRNN_CONSTANTS(VKRNN_LOCAL_SIZE_IDS, (SCORE_MODE, 3), (KVEC4, 4), (SG_CLUSTER, 5), (R, 6),
                  (KU, 7))
  struct Bindings {
    Tensor keys, qry, vparam, lengths, scores;
  };
  VKRNN_BINDINGS((keys, read), (qry, read), (vparam, read), (lengths, read), (scores, write))
};

// Masked softmax over the source axis; Push::mode is one of the SOFTMAX_MODE_* values.
struct AttentionSoftmax {
  VKRNN_KERNEL(attention_softmax, "attention_softmax", .fp16 = true, .subgroup = true)
  struct Push {
    std::uint32_t S, heads, rows, ntiles, mode;
  };
  VKRNN_PUSH(S, heads, rows, ntiles, mode)
  struct Constants {
    VKRNN_LOCAL_SIZE;
    std::uint32_t E = 4;
    bool ONE_SUBGROUP = false;
  };
  VKRNN_CONSTANTS(VKRNN_LOCAL_SIZE_IDS, (E, 3), (ONE_SUBGROUP, 15))
  struct Bindings {
    Tensor scores, lengths, partials, weights;
  };
  VKRNN_BINDINGS((scores, read), (lengths, read), (partials, read_write), (weights, write))
};

// context = sum_s weights[s] values[s]; Push::mode is one of the CONTEXT_MODE_* values.
struct AttentionContext {
  VKRNN_KERNEL(attention_context, "attention_context", .fp16 = true)
  struct Push {
    std::uint32_t S, H, dv, heads, rows, nchunks, chunk, nhtiles, mode;
  };
  VKRNN_PUSH(S, H, dv, heads, rows, nchunks, chunk, nhtiles, mode)
  struct Constants {
    VKRNN_LOCAL_SIZE;
    std::uint32_t VPT = 4, VVEC4 = 0;
  };
  VKRNN_CONSTANTS(VKRNN_LOCAL_SIZE_IDS, (VPT, 3), (VVEC4, 4))
  struct Bindings {
    Tensor weights, values, lengths, partials, context;
  };
  VKRNN_BINDINGS((weights, read), (values, read), (lengths, read), (partials, read_write),
                 (context, write))
};

// Scores -> softmax -> context in one pass (flash decoding); Push::flags: FUSED_*. QP > 0: the
// kernel projects the raw query itself (qw, qbias, and qwt with TEXEL; QP shared floats >= Hk, Qs).
struct AttentionFused {
  VKRNN_KERNEL(attention_fused, "attention_fused", .fp16 = true, .subgroup = true)
  struct Push {
    std::uint32_t S, Hk, dk, Qs, H, dv, heads, rows, nsplit, chunk, nhtiles;
    float scale;
    std::uint32_t flags;
    std::uint32_t ctx_off, ctx_ld;  // context[ctx_off + b * ctx_ld + ...] (direct)
    std::uint32_t q_off, q_ld;      // query row b at qry[q_off + b * q_ld]
  };
  VKRNN_PUSH(S, Hk, dk, Qs, H, dv, heads, rows, nsplit, chunk, nhtiles, scale, flags, ctx_off,
             ctx_ld, q_off, q_ld)
  struct Constants {
    VKRNN_LOCAL_SIZE;
    std::uint32_t SCORE_MODE = 0, KVEC4 = 0, SG_CLUSTER = 0, R = 1, KU = 1, VPT = 4, VVEC4 = 0;
    std::uint32_t QP = 0;
    bool TEXEL = false;  // keys / values through kt / vt, texel views of the same tensors
    std::uint32_t MERGE = 0;  // > 0: the row's last workgroup merges its splits (<= MERGE)
    // > 0 (QP > 0, subgroup variant): a subgroup per projected output, its lanes splitting the
    // raw query's vec4s, at most QPL each.
    std::uint32_t QPL = 0;
    bool ONE_SUBGROUP = false;
    // The streamed walk (subgroup variant): no block of scores; keys that are the values fetched
    // once per key unit, unless STREAM_VALUES fetches the values apart.
    bool STREAM = false;
    std::uint32_t POS_STREAMS = 1;  // STREAM: segments of the split walked in step
    bool STREAM_VALUES = false;
  };
  VKRNN_CONSTANTS(VKRNN_LOCAL_SIZE_IDS, (SCORE_MODE, 3), (KVEC4, 4), (SG_CLUSTER, 5), (R, 6),
                  (KU, 7), (VPT, 8), (VVEC4, 9), (QP, 10), (TEXEL, 11), (MERGE, 12), (QPL, 13),
                  (ONE_SUBGROUP, 15), (STREAM, 16), (POS_STREAMS, 17),
                  (STREAM_VALUES, 18))
  // arrivals: u32 [rows], zero between dispatches (MERGE: each split workgroup counts itself in,
  // the last resets it).
  struct Bindings {
    Tensor keys, values, qry, vparam, lengths, part_ml, part_acc, raw, weights, context, qw, qbias, kt,
        vt, arrivals, qwt;
  };
  VKRNN_BINDINGS((keys, read), (values, read), (qry, read), (vparam, read), (lengths, read),
                 (part_ml, read_write), (part_acc, read_write), (raw, read_write),
                 (weights, write), (context, write), (qw, read), (qbias, read), (kt, read),
                 (vt, read), (arrivals, read_write), (qwt, read))
  VKRNN_TEXEL_VIEWS((kt, keys), (vt, values), (qwt, qw))
};

// Merges the splits of AttentionFused.
struct AttentionFusedCombine {
  VKRNN_KERNEL(attention_fused_combine, "attention_fused_combine", .fp16 = true, .subgroup = true)
  struct Push {
    std::uint32_t S, H, dv, heads, rows, nsplit, nctx, nwt, ctx_off;
  };
  VKRNN_PUSH(S, H, dv, heads, rows, nsplit, nctx, nwt, ctx_off)
  struct Constants {
    VKRNN_LOCAL_SIZE;
    std::uint32_t MAX_SPLIT = 256, E = 4;
    bool ONE_SUBGROUP = false;
  };
  VKRNN_CONSTANTS(VKRNN_LOCAL_SIZE_IDS, (MAX_SPLIT, 3), (E, 4), (ONE_SUBGROUP, 15))
  struct Bindings {
    Tensor lengths, part_ml, part_acc, raw, weights, context;
  };
  VKRNN_BINDINGS((lengths, read), (part_ml, read), (part_acc, read), (raw, read), (weights, write),
                 (context, write))
};

// K = h W_k^T, a T x T workgroup of RM rows per invocation.
struct AttentionKeys {
  VKRNN_KERNEL(attention_keys, "attention_keys", .fp16 = true)
  struct Push {
    std::uint32_t N, Hm, A, ntiles_a, ntiles_n;
  };
  VKRNN_PUSH(N, Hm, A, ntiles_a, ntiles_n)
  struct Constants {
    VKRNN_LOCAL_SIZE;
    std::uint32_t RM = 4;
  };
  VKRNN_CONSTANTS(VKRNN_LOCAL_SIZE_IDS, (RM, 3))
  struct Bindings {
    Tensor memory, w, keys;
  };
  VKRNN_BINDINGS((memory, read), (w, read), (keys, write))
};

}  // namespace vkrnn::kernels
