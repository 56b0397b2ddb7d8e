#pragma once
// The dense-layer kernels (shaders/gemv.comp, shaders/gemm.comp): Y = X W^T + b.
#include <cstdint>

#include "kernel_flags.h"
#include "ops/kernel_interface.hpp"
#include "reflect/gemm.hpp"
#include "reflect/gemv.hpp"

namespace vkrnn::kernels {

// Both kernels take the same push constants and bindings. Push::flags: GEMM_BIAS, and
// GEMM_ACCUMULATE for the later slices of a K split for the loop budget (ys is then read too).
struct GemmPush {
  std::uint32_t M, N, K;
  std::uint32_t x_off, ldx;
  std::uint32_t w_off, ldw;
  std::uint32_t b_off;
  std::uint32_t y_off, ldy;
  std::uint32_t flags;
};
struct GemmBindings {
  Tensor xs, ws, bias, ys;
};

// A coop (a subgroup, or one invocation in the _nosubgroup build) per TM x TN block.
struct Gemv {
  VKRNN_KERNEL(gemv, "gemv", .fp16 = true, .subgroup = true)
  using Push = GemmPush;
  VKRNN_PUSH(M, N, K, x_off, ldx, w_off, ldw, b_off, y_off, ldy, flags)
  struct Constants {
    VKRNN_LOCAL_SIZE;
    std::uint32_t TM = 1, TN = 4, BLOCKS = 1;
    bool ALIGNED = true;
  };
  VKRNN_CONSTANTS(VKRNN_LOCAL_SIZE_IDS, (TM, 3), (TN, 4), (BLOCKS, 5), (ALIGNED, 6))
  using Bindings = GemmBindings;
  VKRNN_BINDINGS((xs, read), (ws, read), (bias, read), (ys, read_write))
};

// Shared-memory tiled GEMM: a WX x WY workgroup of TM x TN register tiles, BK-wide K slices.
struct Gemm {
  VKRNN_KERNEL(gemm, "gemm", .fp16 = true)
  using Push = GemmPush;
  VKRNN_PUSH(M, N, K, x_off, ldx, w_off, ldw, b_off, y_off, ldy, flags)
  struct Constants {
    VKRNN_LOCAL_SIZE;
    std::uint32_t TM = 4, TN = 4, BK = 16;
  };
  VKRNN_CONSTANTS(VKRNN_LOCAL_SIZE_IDS, (TM, 3), (TN, 4), (BK, 5))
  using Bindings = GemmBindings;
  VKRNN_BINDINGS((xs, read), (ws, read), (bias, read), (ys, read_write))
};

}  // namespace vkrnn::kernels
