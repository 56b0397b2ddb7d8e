// The output activation of a dense layer (gemm.comp, gemv.comp): GEMM_TANH, GEMM_SIGMOID or
// GEMM_RELU in the push flags (set on the last slice of K only), else y unchanged. Flags, not
// spec constants: one pipeline serves every layer, and the test is uniform.
#ifndef VKRNN_GEMM_EPILOGUE_GLSL
#define VKRNN_GEMM_EPILOGUE_GLSL
#include "kernel_flags.h"
#include "math.glsl"

float gemm_epilogue(float y, uint flags) {
  if ((flags & GEMM_TANH) != 0) return tanh_accurate(y);
  if ((flags & GEMM_SIGMOID) != 0) return sigmoid_accurate(y);
  if ((flags & GEMM_RELU) != 0) return max(y, 0.0);
  return y;
}

#endif  // VKRNN_GEMM_EPILOGUE_GLSL
