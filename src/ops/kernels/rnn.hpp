#pragma once
// The recurrent kernels (shaders/rnn_step.comp, rnn_seq.comp, rnn_proj.comp): one step of a
// layer with the gates fused, a run of steps in one dispatch, and the LSTM projection.
#include <cstdint>

#include "kernel_flags.h"
#include "ops/kernel_interface.hpp"
#include "reflect/rnn_proj.hpp"
#include "reflect/rnn_seq.hpp"
#include "reflect/rnn_step.hpp"

namespace vkrnn::kernels {

// out[off + d * ldd + b * ldb + t * ldt + j] in every recurrent kernel.
struct RnnOutLayout {
  std::uint32_t off, ldd, ldb, ldt;
};

// rnn_step (step s) and rnn_seq (steps [s, s_end); rnn_step ignores s_end) take the same push
// constants and bindings. Push::flags: RNN_* (kernel_flags.h).
struct RnnCellPush {
  std::uint32_t s, B, T, H, HO;
  std::uint32_t xp_ldb, xp_ldt;          // xp[b * ldb + t * ldt + (d * G + g) * H + j]
  std::uint32_t h_prev_off, h_next_off;  // h[off + (d * B + b) * HO + k]
  std::uint32_t c0_off, c_off;           // c[off + (d * B + b) * H + j]
  RnnOutLayout out;
  std::uint32_t flags;
  std::uint32_t s_end;
  std::uint32_t x_off, x_ld, IN;  // rnn_step, RNN_X_INLINE: x[x_off + b * x_ld + k], k < IN
};
struct RnnCellBindings {
  // W_ih x + b_ih, W_hh, b_hh, h before the step / run, h after it, c0, the running c (in
  // place), the layer's output, the lengths.
  Tensor xp, ws, b_hh, hs, hn, c0, cs, outs, lengths;
};
#define VKRNN_RNN_CELL_PUSH                                                                    \
  VKRNN_PUSH(s, B, T, H, HO, xp_ldb, xp_ldt, h_prev_off, h_next_off, c0_off, c_off, out.off,   \
             out.ldd, out.ldb, out.ldt, flags, s_end, x_off, x_ld, IN)
#define VKRNN_RNN_CELL_BINDINGS                                                                \
  VKRNN_BINDINGS((xp, read), (ws, read), (b_hh, read), (hs, read), (hn, write), (c0, read),     \
                 (cs, read_write), (outs, write), (lengths, read))

// One step, both directions (z = direction); a coop per UPI units and BB batch rows.
struct RnnStep {
  VKRNN_KERNEL(rnn_step, "rnn_step", .shuffle = true, .fp16 = true, .subgroup = true)
  using Push = RnnCellPush;
  VKRNN_RNN_CELL_PUSH
  struct Constants {
    VKRNN_LOCAL_SIZE;
    std::uint32_t CELL = 0, UNITS = 1, BB = 1;
    bool ALIGNED = true;
    std::uint32_t UPI = 1;
    bool WEIGHT_I8 = false;  // W_hh and W_ih int8 with per-row scales (the f32 build)
    bool TEXEL = false;      // W_hh (fp32 or WIDE) and h through wt / ht, texel views of ws / hs
    bool X_ALIGNED = true;   // RNN_X_INLINE: IN, x_off and x_ld multiples of 4 (W_ih, x as vec4s)
    bool WIDE = false;       // fp16 / int8 W_hh rows of whole 16-byte units, read 16 bytes at a time
    bool X_WIDE = false;     // RNN_X_INLINE: the same for W_ih
    std::uint32_t V_LANES = 8;  // _shuffle: lanes sharing h's and x's loads (the fixed subgroup size)
    std::uint32_t PACK_UNITS = 0;  // W_hh in blocks of this many hidden units (plan::Rnn::pack_units)
    std::uint32_t X_PACK_UNITS = 0;  // RNN_X_INLINE: W_ih likewise (plan::Rnn::input_pack_units)
    std::uint32_t K_STREAMS = 1;  // fp32 weights: K walked in this many segments in step (plan::rnn)
  };
  VKRNN_CONSTANTS(VKRNN_LOCAL_SIZE_IDS, (CELL, 3), (UNITS, 4), (BB, 5), (ALIGNED, 6), (UPI, 7),
                  (WEIGHT_I8, 8), (TEXEL, 9), (X_ALIGNED, 10), (WIDE, 11), (X_WIDE, 12), (V_LANES, 13),
                  (PACK_UNITS, 14), (X_PACK_UNITS, 15), (K_STREAMS, 16))
  // RnnCellBindings, then for RNN_X_INLINE: x, W_ih (like W_hh), b_ih; with TEXEL, ws, hs, wis
  // and xs again as texel views (bound by kernels::dispatch).
  struct Bindings {
    Tensor xp, ws, b_hh, hs, hn, c0, cs, outs, lengths, xs, wis, b_ih, wt, ht, wit, xt;
  };
  VKRNN_BINDINGS((xp, read), (ws, read), (b_hh, read), (hs, read), (hn, write), (c0, read),
                 (cs, read_write), (outs, write), (lengths, read), (xs, read), (wis, read),
                 (b_ih, read), (wt, read), (ht, read), (wit, read), (xt, read))
  VKRNN_TEXEL_VIEWS((wt, ws), (ht, hs), (wit, wis), (xt, xs))
};

// A run of steps in one dispatch, h in shared memory (HOP floats per row, ping-pong).
struct RnnSeq {
  VKRNN_KERNEL(rnn_seq, "rnn_seq", .shuffle = true, .fp16 = true, .subgroup = true)
  using Push = RnnCellPush;
  VKRNN_RNN_CELL_PUSH
  struct Constants {
    VKRNN_LOCAL_SIZE;
    std::uint32_t CELL = 0, BB = 1, HOP = 4;
    bool ALIGNED = true;
    std::uint32_t UPI = 1;
    bool WEIGHT_I8 = false;  // W_hh int8 with per-row scales (the f32 build)
    bool TEXEL = false;      // W_hh (fp32 or WIDE) through wt, a texel view of ws
    bool WIDE = false;       // fp16 / int8 W_hh rows of whole 16-byte units, read 16 bytes at a time
    std::uint32_t PACK_UNITS = 0;  // as RnnStep's
    // The _shuffle build: the subgroup size (fixed), lanes that share h's loads (along K with
    // BB = 1, rnn_dots.glsl).
    std::uint32_t V_LANES = 8;
  };
  VKRNN_CONSTANTS(VKRNN_LOCAL_SIZE_IDS, (CELL, 3), (BB, 4), (HOP, 5), (ALIGNED, 6), (UPI, 7),
                  (WEIGHT_I8, 8), (TEXEL, 9), (WIDE, 10), (PACK_UNITS, 11), (V_LANES, 12))
  // RnnCellBindings, then with TEXEL ws again as a texel view (bound by kernels::dispatch).
  struct Bindings {
    Tensor xp, ws, b_hh, hs, hn, c0, cs, outs, lengths, wt;
  };
  VKRNN_BINDINGS((xp, read), (ws, read), (b_hh, read), (hs, read), (hn, write), (c0, read),
                 (cs, read_write), (outs, write), (lengths, read), (wt, read))
  VKRNN_TEXEL_VIEWS((wt, ws))
};

// LSTM with proj_size: h_next = W_hr h_raw, masked by the lengths like rnn_step.
struct RnnProj {
  VKRNN_KERNEL(rnn_proj, "rnn_proj", .fp16 = true, .subgroup = true)
  struct Push {
    std::uint32_t s, B, T, H, P;
    std::uint32_t h_prev_off, h_next_off;  // h[off + (d * B + b) * P + k]
    RnnOutLayout out;
    std::uint32_t flags;
  };
  VKRNN_PUSH(s, B, T, H, P, h_prev_off, h_next_off, out.off, out.ldd, out.ldb, out.ldt, flags)
  struct Constants {
    VKRNN_LOCAL_SIZE;
    std::uint32_t UNITS = 1, BB = 1;
    bool ALIGNED = true;
    bool WEIGHT_I8 = false;  // W_hr int8 with per-row scales (the f32 build)
  };
  VKRNN_CONSTANTS(VKRNN_LOCAL_SIZE_IDS, (UNITS, 3), (BB, 4), (ALIGNED, 5), (WEIGHT_I8, 6))
  struct Bindings {
    Tensor raws, ws, h_prev, h_next, outs, lengths;
  };
  VKRNN_BINDINGS((raws, read), (ws, read), (h_prev, read), (h_next, write), (outs, write),
                 (lengths, read))
};

}  // namespace vkrnn::kernels
