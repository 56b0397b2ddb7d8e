# The variant axes of each shader (cmake/shaders.cmake compiles every combination and names it
# <name>[_shuffle][_f16][_nosubgroup][_inplace]):
#   shuffle   USE_SHUFFLE=1   subgroup shuffles share loads (self-attention K/V, the GEMV's and
#                             gemv_argmax's X,
#                             the recurrent step's h and x, the fused layer's h)
#   fp16      FP16_STORAGE=1  float16 storage of the big tensors, fp32 arithmetic
#   subgroup  USE_SUBGROUP=0  a build for devices without subgroup arithmetic
#   in_place  IN_PLACE=1      the output overwrites the first input
# A shader not listed has no variants. The ops name the same axes in their C++ declaration of
# the kernel (src/ops/kernels/), checked against these builds at compile time.
set(VKRNN_SHADER_AXES_activation in_place)
set(VKRNN_SHADER_AXES_argmax subgroup)
set(VKRNN_SHADER_AXES_attention_context fp16)
set(VKRNN_SHADER_AXES_attention_fused fp16 subgroup)
set(VKRNN_SHADER_AXES_attention_fused_combine fp16 subgroup)
set(VKRNN_SHADER_AXES_attention_keys fp16)
set(VKRNN_SHADER_AXES_attention_query subgroup)
set(VKRNN_SHADER_AXES_attention_scores fp16 subgroup)
set(VKRNN_SHADER_AXES_attention_softmax fp16 subgroup)
set(VKRNN_SHADER_AXES_beam_step subgroup)
set(VKRNN_SHADER_AXES_gemm fp16)
set(VKRNN_SHADER_AXES_gemv shuffle fp16 subgroup)
set(VKRNN_SHADER_AXES_gemv_argmax shuffle fp16 subgroup)
set(VKRNN_SHADER_AXES_gemv_beam shuffle fp16 subgroup)
set(VKRNN_SHADER_AXES_logits_processor subgroup)
set(VKRNN_SHADER_AXES_positional_encoding in_place)
set(VKRNN_SHADER_AXES_residual_add in_place)
set(VKRNN_SHADER_AXES_rnn_proj fp16 subgroup)
set(VKRNN_SHADER_AXES_rnn_seq shuffle fp16 subgroup)
set(VKRNN_SHADER_AXES_rnn_step shuffle fp16 subgroup)
set(VKRNN_SHADER_AXES_self_attention shuffle fp16)
set(VKRNN_SHADER_AXES_self_attention_weights fp16)
set(VKRNN_SHADER_AXES_sequence_mask in_place)
set(VKRNN_SHADER_AXES_topk subgroup)
