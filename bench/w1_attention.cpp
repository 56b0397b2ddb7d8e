// W1 — decoder attention step (workloads.md): one query per batch row against the encoder
// memory h (keys = values = h), scores -> masked stable softmax over S -> context.
// vkrnn runs it as FusedAttention (flash-decoding: one pass over keys and values, plus the
// query projection for general / additive and a combine when S is split), the path a decoder
// uses. W1.additive's keys K = W_k h are per-source work, made once at setup (random, as every
// weight here), outside the timed step; so is the lengths upload (all lengths = S).
// Rate: GB/s of distinct bytes read (bench/SCHEMA.md).
#include <cmath>
#include <memory>

#include "vkrnn/attention.hpp"
#include "workload.hpp"

namespace vkrnn::bench {
namespace {

constexpr double kF32 = 4.0;

std::vector<Workload> rows() {
  std::vector<Workload> out;
  for (Score score : {Score::dot, Score::general, Score::additive}) {
    for (std::size_t b : {1, 16}) {
      for (std::size_t s : {64, 512, 4096}) {
        for (std::size_t h : {256, 512}) {
          Workload w;
          w.id = std::string("W1.") + (score == Score::dot       ? "dot"
                                       : score == Score::general ? "general"
                                                                 : "additive");
          w.params = {{"B", b}, {"S", s}, {"H", h}};
          const double bsh = double(b) * double(s) * double(h), hh = double(h) * double(h);
          const double bh = double(b) * double(h);
          switch (score) {
            case Score::dot:
              w.work.bytes_read = kF32 * (bsh + bh);
              w.work.flops = 4.0 * bsh;
              break;
            case Score::general:
              w.work.bytes_read = kF32 * (bsh + hh + bh);
              w.work.flops = 2.0 * b * hh + 4.0 * bsh;
              break;
            default:
              w.work.bytes_read = kF32 * (2.0 * bsh + hh + double(h) + bh);
              w.work.flops = 2.0 * b * hh + 5.0 * bsh;
              break;
          }
          w.setup = [score, b, s, h](Context& ctx) -> Prepared {
            AttentionConfig config;
            config.score = score;
            config.batch = b;
            config.max_source = s;
            config.hidden = h;
            config.key_dim = h;
            config.query_dim = h;
            auto op = std::make_shared<FusedAttention>(ctx, config);
            const float unit = 1.0f / std::sqrt(float(h));  // keeps the scores O(1)
            Tensor memory = random_tensor(ctx, {b, s, h}, 11, 1.0f, "W1.h");
            Tensor keys = score == Score::additive ? random_tensor(ctx, {b, s, h}, 12, 1.0f, "W1.K")
                                                   : memory;
            Tensor query = random_tensor(ctx, {b, h}, 13, unit, "W1.q");
            Tensor lengths = ctx.tensor({b}, DType::i32, "W1.lengths");
            ctx.write(lengths, std::vector<std::int32_t>(b, std::int32_t(s)));
            ScoreParams params;
            if (score != Score::dot) params.w = random_tensor(ctx, {h, h}, 14, unit, "W1.W");
            if (score == Score::additive) params.v = random_tensor(ctx, {h}, 15, unit, "W1.v");
            Tensor context = ctx.tensor({b, h}, DType::f32, "W1.context");
            return {[=](Sequence& seq) {
                      op->record(seq, keys, memory, query, lengths, context, params);
                    },
                    context};
          };
          out.push_back(std::move(w));
        }
      }
    }
  }
  return out;
}

const Registrar registrar("W1", rows);

}  // namespace
}  // namespace vkrnn::bench
