#pragma once
// The dense-layer kernels (shaders/gemv.comp, shaders/gemm.comp): Y = X W^T + b.
#include <cstdint>

#include "kernel_flags.h"
#include "ops/kernel_interface.hpp"
#include "reflect/gemm.hpp"
#include "reflect/gemv.hpp"
#include "reflect/gemv_argmax.hpp"

namespace vkrnn::kernels {

// Both kernels take the same push constants and bindings. Push::flags: GEMM_BIAS, and
// GEMM_ACCUMULATE for the later slices of a K split for the loop budget (ys is then read too).
// WEIGHT_I8 (a specialization constant of both): ws holds int8 four per word and, from byte
// s_off on, the per-row f32 scales (one binding for both: the Vulkan minimum is 4 per stage).
struct GemmPush {
  std::uint32_t M, N, K;
  std::uint32_t x_off, ldx;
  std::uint32_t w_off, ldw;
  std::uint32_t b_off;
  std::uint32_t y_off, ldy;
  std::uint32_t flags;
  std::uint32_t s_off;
};
struct GemmBindings {
  Tensor xs, ws, bias, ys;
};

// A coop (a subgroup, or one invocation in the _nosubgroup build) per TM x TN block.
struct Gemv {
  VKRNN_KERNEL(gemv, "gemv", .shuffle = true, .fp16 = true, .subgroup = true)
  using Push = GemmPush;
  VKRNN_PUSH(M, N, K, x_off, ldx, w_off, ldw, b_off, y_off, ldy, flags, s_off)
  struct Constants {
    VKRNN_LOCAL_SIZE;
    std::uint32_t TM = 1, TN = 4, BLOCKS = 1;
    bool ALIGNED = true;
    bool WEIGHT_I8 = false;
    bool WIDE = false;  // f16 / i8 W rows read 16 bytes at a time: w_off and ldw 16-byte multiples
    bool TEXEL = false;  // those 16-byte loads (and f32 W's vec4s) through wt, a texel view of ws
    std::uint32_t PACK_ROWS = 0;  // W in blocks of this many rows, unit by unit (plan::pack_rows)
    std::uint32_t X_LANES = 8;    // _shuffle: lanes sharing X's loads (the fixed subgroup size)
    // W in a recurrent layer's gate blocks of PACK_UNITS units, PACK_H units a gate (plan::Rnn)
    std::uint32_t PACK_UNITS = 0, PACK_H = 1;
    std::uint32_t K_STREAMS = 1;  // segments of K walked in step (plan::gemv_k_streams)
  };
  VKRNN_CONSTANTS(VKRNN_LOCAL_SIZE_IDS, (TM, 3), (TN, 4), (BLOCKS, 5), (ALIGNED, 6), (WEIGHT_I8, 7), (WIDE, 8),
                  (TEXEL, 9), (PACK_ROWS, 10), (X_LANES, 11), (PACK_UNITS, 12), (PACK_H, 13), (K_STREAMS, 14))
  // GemmBindings, then texel views of ws and xs (TEXEL).
  struct Bindings {
    Tensor xs, ws, bias, ys, wt, xt;
  };
  VKRNN_BINDINGS((xs, read), (ws, read), (bias, read), (ys, read_write), (wt, read), (xt, read))
  VKRNN_TEXEL_VIEWS((wt, ws), (xt, xs))
};

// gemv.comp's projection and a greedy step's argmax (argmax.comp's bookkeeping but the value,
// logits history and chosen tokens) in one dispatch: the last workgroup to finish merges the
// rows' partials from `scratch` (Gemm::record_any with an ops::GreedyDispatch).
struct GemvArgmax {
  VKRNN_KERNEL(gemv_argmax, "gemv_argmax", .shuffle = true, .fp16 = true, .subgroup = true)
  struct Push {
    std::uint32_t M, N, K;
    std::uint32_t x_off, ldx;
    std::uint32_t w_off, ldw;
    std::uint32_t b_off;
    std::uint32_t y_off, ldy;
    std::uint32_t gemm_flags;
    std::uint32_t s_off;
    std::uint32_t S, ld, col;
    std::int32_t eos, pad;
    std::uint32_t flags;
    std::uint32_t emb_dim, table_offset, table_ld, emb_offset, emb_ld;
    std::uint32_t mark;
    std::uint32_t gate_words;  // nonzero: close the sequence's gate once every row has finished
  };
  VKRNN_PUSH(M, N, K, x_off, ldx, w_off, ldw, b_off, y_off, ldy, gemm_flags, s_off, S, ld, col, eos, pad, flags,
             emb_dim, table_offset, table_ld, emb_offset, emb_ld, mark, gate_words)
  struct Constants {
    VKRNN_LOCAL_SIZE;
    std::uint32_t TM = 1, TN = 4, BLOCKS = 1;
    bool ALIGNED = true;
    bool WEIGHT_I8 = false;
    bool WIDE = false;
    bool TEXEL = false;
    std::uint32_t PACK_ROWS = 0;
    std::uint32_t X_LANES = 8;  // _shuffle: as in Gemv
    std::uint32_t K_STREAMS = 1;  // as in Gemv
    bool ONE_SUBGROUP = false;
  };
  VKRNN_CONSTANTS(VKRNN_LOCAL_SIZE_IDS, (TM, 3), (TN, 4), (BLOCKS, 5), (ALIGNED, 6), (WEIGHT_I8, 7), (WIDE, 8),
                  (TEXEL, 9), (PACK_ROWS, 10), (X_LANES, 11), (K_STREAMS, 14), (ONE_SUBGROUP, 15))
  struct Bindings {
    Tensor xs, ws, bias, ys, index_out, tok_hist, score_hist, finished, weights, attn_hist, table, emb_out,
        nonfinite, scratch, wt, xt, gate;
  };
  VKRNN_BINDINGS((xs, read), (ws, read), (bias, read), (ys, write), (index_out, write), (tok_hist, write),
                 (score_hist, write), (finished, read_write), (weights, read), (attn_hist, write), (table, read),
                 (emb_out, write), (nonfinite, read_write), (scratch, read_write), (wt, read), (xt, read),
                 (gate, read_write))
  VKRNN_TEXEL_VIEWS((wt, ws), (xt, xs))
};

// Shared-memory tiled GEMM: a WX x WY workgroup of TM x TN register tiles, BK-wide K slices.
struct Gemm {
  VKRNN_KERNEL(gemm, "gemm", .fp16 = true)
  using Push = GemmPush;
  VKRNN_PUSH(M, N, K, x_off, ldx, w_off, ldw, b_off, y_off, ldy, flags, s_off)
  struct Constants {
    VKRNN_LOCAL_SIZE;
    std::uint32_t TM = 4, TN = 4, BK = 16;
    bool WEIGHT_I8 = false;
  };
  VKRNN_CONSTANTS(VKRNN_LOCAL_SIZE_IDS, (TM, 3), (TN, 4), (BK, 5), (WEIGHT_I8, 6))
  using Bindings = GemmBindings;
  VKRNN_BINDINGS((xs, read), (ws, read), (bias, read), (ys, read_write))
};

}  // namespace vkrnn::kernels
