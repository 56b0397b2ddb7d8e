// W4 — self-attention over a sequence (workloads.md): e_ij = h_i . h_j / sqrt(d), softmax over
// j, o_i = sum_j a_ij h_j; B = 1, d = 64, one head, with and without a causal mask.
// Rate: GFLOP/s at 4 * S * S * d flops per head (the causal rows are counted the same).
#include <memory>

#include "vkrnn/self_attention.hpp"
#include "workload.hpp"

namespace vkrnn::bench {
namespace {

std::vector<Workload> rows() {
  std::vector<Workload> out;
  for (std::size_t s : {256, 1024, 4096, 16384}) {
    for (bool causal : {false, true}) {
      Workload w;
      w.id = "W4";
      w.params = {{"B", 1}, {"S", s}, {"d", 64}, {"causal", causal}};
      w.work.flops = 4.0 * double(s) * double(s) * 64.0;
      w.setup = [s, causal](Context& ctx) -> Prepared {
        constexpr std::size_t d = 64;
        SelfAttentionConfig config;
        config.batch = 1;
        config.max_seq = s;
        config.hidden = d;
        config.heads = 1;
        config.causal = causal;
        auto op = std::make_shared<SelfAttention>(ctx, config);
        Tensor h = random_tensor(ctx, {1, s, d}, 4, 1.0f, "W4.h");  // q = k = v = h
        Tensor o = ctx.tensor({1, s, d}, DType::f32, "W4.out");
        return {[op, h, o](Sequence& seq) { op->record(seq, h, h, h, Tensor(), o); }, o};
      };
      out.push_back(std::move(w));
    }
  }
  return out;
}

const Registrar registrar("W4", rows);

}  // namespace
}  // namespace vkrnn::bench
