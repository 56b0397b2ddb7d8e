#pragma once
// The self-attention kernels (shaders/self_attention.comp, self_attention_weights.comp).
#include <cstdint>

#include "ops/kernel_interface.hpp"
#include "reflect/self_attention.hpp"
#include "reflect/self_attention_weights.hpp"

namespace vkrnn::kernels {

// Flash-attention over a whole sequence: solo lanes (T = 1) or teams of T lanes per query row.
struct SelfAttention {
  VKRNN_KERNEL(self_attention, "self_attention", .shuffle = true, .fp16 = true)
  struct Push {
    std::uint32_t S, H, heads, qblocks, total;
    float scale;
    std::uint32_t causal, has_lengths;
    std::uint32_t paired;  // query blocks handed out longest and shortest in turn (plan::paired_query_blocks)
  };
  VKRNN_PUSH(S, H, heads, qblocks, total, scale, causal, has_lengths, paired)
  struct Constants {
    VKRNN_LOCAL_SIZE;
    std::uint32_t D = 64, T = 1, BK = 32, R = 1, SG = 8;
    bool ACC_IN_REGISTERS = true;
  };
  VKRNN_CONSTANTS(VKRNN_LOCAL_SIZE_IDS, (D, 3), (T, 4), (BK, 5),
                  (R, 6), (SG, 7), (ACC_IN_REGISTERS, 8))
  struct Bindings {
    Tensor qs, ks, vs, lengths, outs;
  };
  VKRNN_BINDINGS((qs, read), (ks, read), (vs, read), (lengths, read), (outs, write))
};

// The full attention weights, for inspection.
struct SelfAttentionWeights {
  VKRNN_KERNEL(self_attention_weights, "self_attention_weights", .fp16 = true)
  struct Push {
    std::uint32_t S, H, heads, rows;
    float scale;
    std::uint32_t causal, has_lengths;
  };
  VKRNN_PUSH(S, H, heads, rows, scale, causal, has_lengths)
  struct Constants {
    VKRNN_LOCAL_SIZE;
    std::uint32_t D = 64;
  };
  VKRNN_CONSTANTS(VKRNN_LOCAL_SIZE_IDS, (D, 3))
  struct Bindings {
    Tensor qs, ks, lengths, ws;
  };
  VKRNN_BINDINGS((qs, read), (ks, read), (lengths, read), (ws, write))
};

}  // namespace vkrnn::kernels
