// Every kernel declaration is checked against its SPIR-V where it is included; this file
// includes them all, so the checks run in every build, and checks that every kernel the build
// embeds has one.
#include <string_view>

#include "ops/kernels/attention.hpp"
#include "ops/kernels/decode.hpp"
#include "ops/kernels/elementwise.hpp"
#include "ops/kernels/linear.hpp"
#include "ops/kernels/rnn.hpp"
#include "ops/kernels/runtime.hpp"
#include "ops/kernels/self_attention.hpp"
#include "reflect/all_kernels.hpp"

namespace vkrnn::kernels {
namespace {

template <class... K>
constexpr bool declared(std::string_view name) {
  auto in = [name](const Selection& s) {
    for (const auto* k : s) {
      if (k->name == name) return true;
    }
    return false;
  };
  return (in(K::reflected) || ...);
}

constexpr bool every_kernel_declared() {
  for (std::string_view name : reflect::all_kernels) {
    if (!declared<AttentionQuery, AttentionScores, AttentionSoftmax, AttentionContext,
                  AttentionFused, AttentionFusedCombine, AttentionKeys, Gemv, GemvArgmax, Gemm, RnnStep, RnnSeq,
                  RnnProj, SelfAttention, SelfAttentionWeights, Activation, ActivationInPlace,
                  ResidualAdd, ResidualAddInPlace, PositionalEncoding, PositionalEncodingInPlace, SequenceMask,
                  SequenceMaskInPlace, Concat, Embedding, Argmax, TopK, LogitsProcessor, BeamSearch, BeamStep, GemvBeam, SequenceGate,
                  Saxpy, BenchCopy, BenchRead, BenchEmpty, SubgroupProbe>(name)) {
      return false;
    }
  }
  return true;
}
static_assert(every_kernel_declared(),
              "a kernel the build embeds (reflect/all_kernels.hpp) has no declaration in "
              "src/ops/kernels/");

}  // namespace
}  // namespace vkrnn::kernels
