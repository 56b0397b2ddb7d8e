// Seq2Seq: bahdanau_seq2seq and luong_seq2seq (docs/model-format.md) on the GPU, built from the
// library's ops (Embedding, Rnn, FusedAttention, Linear (the attention keys too), Concat, Activation,
// Argmax). Every decoder step is recorded, never run on the host, so a whole greedy decode is
// one Sequence.
#include "vkrnn/seq2seq.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <mutex>
#include <span>

#include <fmt/format.h>

#include "models/model_common.hpp"
#include "vkrnn/activation.hpp"
#include "vkrnn/argmax.hpp"
#include "vkrnn/attention.hpp"
#include "vkrnn/beam_search.hpp"
#include "vkrnn/concat.hpp"
#include "vkrnn/embedding.hpp"
#include "vkrnn/error.hpp"
#include "vkrnn/linear.hpp"
#include "vkrnn/rnn.hpp"
#include "vkrnn/topk.hpp"

namespace vkrnn {
namespace {

constexpr const char* kOp = "Seq2Seq";
constexpr std::size_t kMaxDecodeSteps = 4096;

// Attention ops are shaped by (batch, source length): one plan per shape, shared by every
// Encoded batch of that shape. The model caches the plans of the kMaxPlans shapes used last (a
// service decoding user-sized batches would otherwise keep one per shape forever); an evicted
// plan lives on while an Encoded still holds it.
constexpr std::size_t kMaxPlans = 16;
struct Plan {
  std::size_t B = 0, S = 0;
  std::unique_ptr<FusedAttention> attention;
};

using model_detail::fp32;
using model_detail::tensor_of;

// Decoder rows whose logits went non-finite, as the GPU flagged them (Argmax / TopK: 0, or the
// first such step + 1 per decoder row): an Error naming the earliest step, its row and the
// layer, instead of tokens chosen from NaN. `beam` decoder rows per source row (1: greedy);
// `first_step` is the decode step of flag value 1.
void check_finite_logits(std::span<const std::uint32_t> flags, const char* call, std::size_t beam,
                         std::size_t first_step) {
  std::size_t worst = flags.size(), rows = 0;
  for (std::size_t r = 0; r < flags.size(); ++r) {
    if (flags[r] == 0) continue;
    ++rows;
    if (worst == flags.size() || flags[r] < flags[worst]) worst = r;
  }
  if (rows == 0) return;
  const std::string where = beam > 1 ? fmt::format("source row {} (beam row {})", worst / beam, worst % beam)
                                     : fmt::format("row {}", worst);
  throw Error(ErrorCode::non_finite,
              fmt::format("{}::{}: the output layer (output.weight, output.bias) gave non-finite logits (NaN or "
                          "infinite) for {} at step {} ({} of {} decoder rows): check the model's weights and inputs",
                          kOp, call, where, first_step + flags[worst] - 1, rows, flags.size()));
}

}  // namespace

struct Seq2Seq::Encoded::Impl {
  std::size_t B = 0, S = 0;
  std::vector<std::int32_t> lengths;
  std::vector<std::int32_t> src;  // [B, S], pad beyond each length
  std::shared_ptr<Plan> plan;
  Tensor src_ids, lengths_t, x, memory, keys, h_n, c_n, s0;
};

struct Seq2Seq::DecoderState::Impl {
  std::shared_ptr<Seq2Seq::Encoded::Impl> enc;
  DecodeOptions options;
  std::size_t t = 0;               // steps recorded so far
  std::size_t cur = 0;             // h[cur] holds the current recurrent state
  bool initialized = false;
  bool input_ready = false;        // x[:, 0:E] already holds the embedding of prev (argmax wrote it)
  Tensor h[2], c, h_tilde, query;  // recurrent state (ping-pong), LSTM cell, Luong h~, L > 1 query
  Tensor prev, finished;           // i32 [B] next input, u32 [B]
  Tensor x, o, context, weights, logits;
  // The last step's results (incremental API): histories of one column, the non-finite flags.
  Tensor step_tokens, step_scores, step_logits, step_attention, step_nonfinite;
  std::size_t last_step = 0;
};

struct Seq2Seq::Impl {
  Context* ctx;
  ModelConfig cfg;
  OpOptions opts;         // every op but the dense layers: fp32 storage
  OpOptions linear_opts;  // dense layers: fp16 weights when the caller asks for fp16_storage
  Tokenizer src_tok, tgt_tok;
  bool bahdanau = true, lstm = false;
  std::size_t E = 0, Vs = 0, Vt = 0;
  std::size_t M = 0;   // memory (encoder output) width: Bahdanau 2 He, Luong H
  std::size_t Hd = 0;  // decoder hidden: Bahdanau Hd, Luong H
  std::size_t Ld = 1;  // decoder layers
  std::size_t Le = 1;  // encoder layers
  std::size_t He = 0;  // encoder hidden per direction
  std::size_t X = 0;   // decoder input width
  Score score = Score::additive;
  Tensor src_emb, tgt_emb, query_w, query_b, v, attn_w;
  std::unique_ptr<Rnn> encoder, decoder;
  std::unique_ptr<Linear> bridge, combine, output, key_proj;
  Embedding embedding;
  Concat concat;
  Activation tanh;
  Argmax argmax;
  mutable std::mutex mutex;
  mutable std::vector<std::shared_ptr<Plan>> plans;  // least recently used first

  Impl(Context& c, const ModelFile& mf, const OpOptions& o)
      : ctx(&c), cfg(mf.config()), opts(fp32(o)), linear_opts(o), embedding(c, fp32(o)), concat(c, fp32(o)), tanh(c, ActivationFn::tanh, fp32(o)), argmax(c, fp32(o)) {
    if (cfg.architecture != Architecture::bahdanau_seq2seq && cfg.architecture != Architecture::luong_seq2seq) {
      throw Error(ErrorCode::invalid_argument,
                  fmt::format("{}: model '{}' is a {}, not a seq2seq model (bahdanau_seq2seq or luong_seq2seq)", kOp,
                              cfg.directory, to_string(cfg.architecture)));
    }
    src_tok = Tokenizer(cfg.src_vocab, cfg.tokenizer, cfg.special);
    tgt_tok = Tokenizer(cfg.tgt_vocab, cfg.tokenizer, cfg.special);
    bahdanau = cfg.architecture == Architecture::bahdanau_seq2seq;
    lstm = cfg.cell == CellType::lstm;
    E = cfg.embedding_dim;
    Vs = cfg.src_vocab_size;
    Vt = cfg.tgt_vocab_size;
    score = cfg.score;
    src_emb = tensor_of(c, {Vs, E}, mf.tensor("src_embedding"), "src_embedding");
    tgt_emb = tensor_of(c, {Vt, E}, mf.tensor("tgt_embedding"), "tgt_embedding");
    RnnConfig ec, dc;
    ec.cell = dc.cell = cfg.cell;
    ec.input_size = E;
    if (bahdanau) {
      He = cfg.encoder_hidden;
      Le = cfg.encoder_layers;
      M = 2 * He;
      Hd = cfg.decoder_hidden;
      Ld = 1;
      X = E + M;
      ec.bidirectional = true;
    } else {
      He = M = Hd = cfg.hidden;
      Le = Ld = cfg.layers;
      X = E + (cfg.input_feeding ? Hd : 0);
    }
    ec.hidden_size = He;
    ec.num_layers = Le;
    dc.input_size = X;
    dc.hidden_size = Hd;
    dc.num_layers = Ld;
    encoder = std::make_unique<Rnn>(c, ec, opts);
    encoder->load(mf.rnn("encoder"));
    decoder = std::make_unique<Rnn>(c, dc, opts);
    decoder->load(mf.rnn("decoder"));
    if (bahdanau) {
      bridge = std::make_unique<Linear>(c, He, Hd, true, linear_opts);
      bridge->load(mf.tensor("bridge.weight"), mf.tensor("bridge.bias"));
      // The output layer reads [s; c; emb]; the decoder builds [emb; c] for the RNN first, so
      // the columns are permuted once here to read [emb; c; s] (one contiguous buffer).
      const auto& w = mf.tensor("output.weight");
      const std::size_t K = Hd + M + E;
      std::vector<float> wp(w.size());
      for (std::size_t r = 0; r < Vt; ++r) {
        const float* src = &w[r * K];
        float* dst = &wp[r * K];
        std::copy_n(src + Hd + M, E, dst);
        std::copy_n(src + Hd, M, dst + E);
        std::copy_n(src, Hd, dst + E + M);
      }
      output = std::make_unique<Linear>(c, K, Vt, true, linear_opts);
      output->load(wp, mf.tensor("output.bias"));
    } else {
      combine = std::make_unique<Linear>(c, 2 * Hd, Hd, false, linear_opts);
      combine->load(mf.tensor("combine.weight"));
      output = std::make_unique<Linear>(c, Hd, Vt, true, linear_opts);
      output->load(mf.tensor("output.weight"), mf.tensor("output.bias"));
    }
    if (score == Score::additive) {
      const std::size_t A = cfg.attention_dim;
      key_proj = std::make_unique<Linear>(c, M, A, false, opts);
      key_proj->load(mf.tensor("attention.key_weight"));
      query_w = tensor_of(c, {A, Hd}, mf.tensor("attention.query_weight"), "attention.query_weight");
      v = tensor_of(c, {A}, mf.tensor("attention.v"), "attention.v");
      if (mf.has("attention.query_bias")) {
        query_b = tensor_of(c, {A}, mf.tensor("attention.query_bias"), "attention.query_bias");
      }
    } else if (score == Score::general) {
      attn_w = tensor_of(c, {Hd, Hd}, mf.tensor("attention.weight"), "attention.weight");
    }
  }

  // A decode is recorded whole into one command buffer: keep it to a sane size.
  static void check_max_len(std::size_t max_len, const char* what) {
    if (max_len > kMaxDecodeSteps) {
      throw Error(ErrorCode::out_of_range,
                  fmt::format("{}::{}: max_len = {} is beyond the {} steps one decode may record", kOp, what, max_len,
                              kMaxDecodeSteps));
    }
  }

  AttentionConfig attention_config(std::size_t B, std::size_t S) const {
    AttentionConfig a;
    a.score = score;
    a.batch = B;
    a.max_source = S;
    a.hidden = M;
    a.key_dim = score == Score::additive ? cfg.attention_dim : M;
    a.query_dim = Hd;
    return a;
  }

  std::shared_ptr<Plan> plan(std::size_t B, std::size_t S) const {
    std::lock_guard lock(mutex);
    auto it = std::find_if(plans.begin(), plans.end(), [&](const auto& p) { return p->B == B && p->S == S; });
    std::shared_ptr<Plan> p;
    if (it != plans.end()) {
      p = *it;
      plans.erase(it);
    } else {
      p = std::make_shared<Plan>();
      p->B = B;
      p->S = S;
      p->attention = std::make_unique<FusedAttention>(*ctx, attention_config(B, S), opts);
      if (plans.size() == kMaxPlans) plans.erase(plans.begin());
    }
    plans.push_back(p);
    return p;
  }

  ScoreParams score_params() const {
    ScoreParams p;
    if (score == Score::additive) {
      p.w = query_w;
      p.bias = query_b;
      p.v = v;
    } else if (score == Score::general) {
      p.w = attn_w;
    }
    return p;
  }

  // --- encoder ----------------------------------------------------------------------------
  std::shared_ptr<Encoded::Impl> prepare(const std::vector<std::vector<std::int32_t>>& sources, const char* what) const {
    if (sources.empty()) {
      throw Error(ErrorCode::invalid_argument, fmt::format("{}::{}: no sources (the batch is empty)", kOp, what));
    }
    std::size_t S = 0;
    for (std::size_t b = 0; b < sources.size(); ++b) {
      if (sources[b].empty()) {
        throw Error(ErrorCode::invalid_argument,
                    fmt::format("{}::{}: source row {} is empty (a source needs at least one token)", kOp, what, b));
      }
      check_token_ids(sources[b], Vs, fmt::format("{}::{}: source", kOp, what).c_str(), b);
      S = std::max(S, sources[b].size());
    }
    auto e = std::make_shared<Encoded::Impl>();
    const std::size_t B = sources.size();
    e->B = B;
    e->S = S;
    e->src.assign(B * S, cfg.special.pad);
    for (std::size_t b = 0; b < B; ++b) {
      std::copy(sources[b].begin(), sources[b].end(), e->src.begin() + static_cast<std::ptrdiff_t>(b * S));
      e->lengths.push_back(static_cast<std::int32_t>(sources[b].size()));
    }
    e->plan = plan(B, S);
    Context& c = *ctx;
    e->src_ids = c.tensor({B, S}, DType::i32, "Seq2Seq source ids");
    e->lengths_t = c.tensor({B}, DType::i32, "Seq2Seq source lengths");
    e->x = c.tensor({B, S, E}, DType::f32, "Seq2Seq source embeddings");
    e->memory = c.tensor({B, S, M}, DType::f32, "Seq2Seq encoder outputs");
    e->h_n = c.tensor({Le * (bahdanau ? 2 : 1), B, He}, DType::f32, "Seq2Seq encoder h_n");
    if (lstm && !bahdanau) e->c_n = c.tensor({Le, B, He}, DType::f32, "Seq2Seq encoder c_n");
    if (score == Score::additive) e->keys = c.tensor({B, S, cfg.attention_dim}, DType::f32, "Seq2Seq keys");
    if (bahdanau) e->s0 = c.tensor({1, B, Hd}, DType::f32, "Seq2Seq decoder s0");
    return e;
  }

  void record_encode(Sequence& seq, const Encoded::Impl& e) const {
    seq.upload(e.src_ids, e.src);
    seq.upload(e.lengths_t, e.lengths);
    embedding.record(seq, src_emb, e.src_ids, e.x);
    encoder->record(seq, e.x, e.lengths_t, {}, {}, e.memory, e.h_n, e.c_n, e.lengths);
    // K = memory W_k^T once per source. Through Gemm rather than KeyProjection: 8-11x faster
    // on lavapipe for these shapes (measured: W3 encode 0.85 vs 9.7 ms at B = 1).
    if (key_proj) key_proj->record(seq, e.memory, e.keys);
    if (bahdanau) {
      // s0 = tanh(W_b bwd_0 + b): the top layer's backward final state, h_n[2 Le - 1].
      bridge->record(seq, MatrixView{e.h_n, e.B, He, (2 * Le - 1) * e.B * He, He}, MatrixView{e.s0, e.B, Hd, 0, Hd});
      tanh.record(seq, e.s0, e.s0);
    }
  }

  // --- decoder ----------------------------------------------------------------------------
  std::shared_ptr<DecoderState::Impl> start(const std::shared_ptr<Encoded::Impl>& e, const DecodeOptions& o) const {
    if (!e) throw Error(ErrorCode::invalid_argument, fmt::format("{}::start: an empty Encoded", kOp));
    auto st = std::make_shared<DecoderState::Impl>();
    st->enc = e;
    st->options = o;
    if (st->options.max_len == 0) st->options.max_len = cfg.max_decode_length;
    check_max_len(st->options.max_len, "start");
    Context& c = *ctx;
    const std::size_t B = e->B;
    st->h[0] = c.tensor({Ld, B, Hd}, DType::f32, "Seq2Seq decoder h (ping)");
    st->h[1] = c.tensor({Ld, B, Hd}, DType::f32, "Seq2Seq decoder h (pong)");
    if (lstm) st->c = c.tensor({Ld, B, Hd}, DType::f32, "Seq2Seq decoder c");
    if (!bahdanau) {
      st->h_tilde = c.tensor({B, Hd}, DType::f32, "Seq2Seq decoder h~");
      if (Ld > 1) st->query = c.tensor({B, Hd}, DType::f32, "Seq2Seq attention query");
    }
    st->prev = c.tensor({B}, DType::i32, "Seq2Seq previous tokens");
    st->finished = c.tensor({B}, DType::u32, "Seq2Seq finished flags");
    st->x = c.tensor({B, X}, DType::f32, "Seq2Seq decoder input");
    st->o = c.tensor({B, bahdanau ? X + Hd : 2 * Hd}, DType::f32, "Seq2Seq output-layer input");
    st->context = c.tensor({B, M}, DType::f32, "Seq2Seq context");
    st->weights = c.tensor({B, e->S}, DType::f32, "Seq2Seq attention weights");
    st->logits = c.tensor({B, Vt}, DType::f32, "Seq2Seq logits");
    return st;
  }

  struct History {
    Tensor tokens, scores, logits, attention;  // [B, capacity(, X)]
    std::size_t column = 0;
    Tensor nonfinite;      // u32 [B]: the first step + 1 whose logits were not finite (Argmax)
    bool weights = false;  // compute the attention weights (st.weights) even without `attention`
    bool select = true;    // run the argmax (greedy); beam search selects on the host
  };

  // The state at BOS: recorded before the first step.
  void record_init(Sequence& seq, DecoderState::Impl& st) const {
    const Encoded::Impl& e = *st.enc;
    if (!st.initialized) {
      if (bahdanau) {
        seq.copy(e.s0, st.h[0]);
        if (lstm) seq.fill(st.c, 0);
      } else {
        seq.copy(e.h_n, st.h[0]);
        if (lstm) seq.copy(e.c_n, st.c);
        seq.fill(st.h_tilde, 0);
      }
      seq.fill(st.prev, static_cast<std::uint32_t>(cfg.special.bos));
      seq.fill(st.finished, 0);
      st.initialized = true;
      st.input_ready = false;
    }
  }

  void record_step(Sequence& seq, DecoderState::Impl& st, const History& hist) const {
    const Encoded::Impl& e = *st.enc;
    const std::size_t B = e.B;
    record_init(seq, st);
    const Tensor& h_prev = st.h[st.cur];
    const Tensor& h_next = st.h[st.cur ^ 1];
    const Tensor weights = hist.attention.valid() || hist.weights ? st.weights : Tensor{};
    const FusedAttention& attention = *e.plan->attention;
    const Tensor& keys = e.keys.valid() ? e.keys : e.memory;
    if (bahdanau) {
      // Attention from s_{t-1}; x = [emb(y_{t-1}); c_t]; s_t = RNN(x, s_{t-1});
      // logits = W [emb; c; s_t] + b (columns permuted at load).
      attention.record(seq, keys, e.memory, h_prev.reshaped({B, Hd}), e.lengths_t, st.context, score_params(), weights);
      if (!st.input_ready) embedding.record(seq, MatrixView::of(tgt_emb), st.prev, MatrixView{st.x, B, E, 0, X});
      concat.record(seq, {MatrixView::of(st.context)}, MatrixView{st.x, B, M, E, X});
      decoder->step(seq, st.x, h_prev, h_next, st.c, st.c);
      concat.record(seq, {MatrixView::of(st.x), MatrixView{h_next, B, Hd, 0, Hd}}, MatrixView::of(st.o));
      output->record(seq, st.o, st.logits);
    } else {
      // x = [emb(y_{t-1}); h~_{t-1}] (input feeding) or emb; h_t = RNN_L(x); attention from
      // h_t; h~_t = tanh(W_c [c_t; h_t]); logits = W_s h~_t + b_s.
      if (!st.input_ready) embedding.record(seq, MatrixView::of(tgt_emb), st.prev, MatrixView{st.x, B, E, 0, X});
      if (cfg.input_feeding) concat.record(seq, {MatrixView::of(st.h_tilde)}, MatrixView{st.x, B, Hd, E, X});
      decoder->step(seq, st.x, h_prev, h_next, st.c, st.c);
      const MatrixView top{h_next, B, Hd, (Ld - 1) * B * Hd, Hd};
      Tensor query = h_next.reshaped({Ld * B, Hd});
      if (Ld > 1) {
        concat.record(seq, {top}, MatrixView::of(st.query));
        query = st.query;
      }
      attention.record(seq, keys, e.memory, query, e.lengths_t, st.context, score_params(), weights);
      concat.record(seq, {MatrixView::of(st.context), top}, MatrixView::of(st.o));
      combine->record(seq, st.o, st.h_tilde);
      tanh.record(seq, st.h_tilde, st.h_tilde);
      output->record(seq, st.h_tilde, st.logits);
    }
    st.cur ^= 1;
    ++st.t;
    st.input_ready = false;
    if (!hist.select) return;
    GreedyStep g;
    g.next_tokens = st.prev;
    if (st.options.stop_at_eos) g.finished = st.finished;
    g.eos = cfg.special.eos;
    g.pad = cfg.special.pad;
    g.step = hist.column;
    g.tokens = hist.tokens;
    g.scores = hist.scores;
    g.logits = hist.logits;
    g.weights = weights;
    g.attention = hist.attention;
    g.nonfinite = hist.nonfinite;
    // The argmax also writes the chosen token's embedding into the next step's input.
    g.embedding = MatrixView::of(tgt_emb);
    g.embedding_out = MatrixView{st.x, B, E, 0, X};
    argmax.record(seq, st.logits, g);
    st.input_ready = true;
  }
};

// --- public API ----------------------------------------------------------------------------

std::size_t Seq2Seq::Encoded::batch() const { return impl ? impl->B : 0; }
std::size_t Seq2Seq::Encoded::source_length() const { return impl ? impl->S : 0; }
const std::vector<std::int32_t>& Seq2Seq::Encoded::lengths() const {
  static const std::vector<std::int32_t> none;
  return impl ? impl->lengths : none;
}
Tensor Seq2Seq::Encoded::encoder_outputs() const { return impl ? impl->memory : Tensor{}; }
Tensor Seq2Seq::Encoded::keys() const { return impl ? impl->keys : Tensor{}; }
Tensor Seq2Seq::Encoded::initial_state() const { return impl ? (impl->s0.valid() ? impl->s0 : impl->h_n) : Tensor{}; }
Tensor Seq2Seq::Encoded::initial_cell() const { return impl ? impl->c_n : Tensor{}; }
std::size_t Seq2Seq::DecoderState::steps_taken() const { return impl ? impl->t : 0; }

std::vector<std::int32_t> DecodeResult::row(std::size_t b) const {
  if (b >= batch) throw Error(ErrorCode::out_of_range, fmt::format("DecodeResult::row({}): batch is {}", b, batch));
  const auto first = tokens.begin() + static_cast<std::ptrdiff_t>(b * steps);
  return {first, first + lengths[b]};
}

Seq2Seq Seq2Seq::load(Context& ctx, const std::string& model_dir, const OpOptions& options) {
  return Seq2Seq(ctx, ModelFile::load(model_dir), options);
}

Seq2Seq::Seq2Seq(Context& ctx, const ModelFile& model, const OpOptions& options)
    : impl_(std::make_unique<Impl>(ctx, model, options)) {}
Seq2Seq::Seq2Seq(Seq2Seq&&) noexcept = default;
Seq2Seq& Seq2Seq::operator=(Seq2Seq&&) noexcept = default;
Seq2Seq::~Seq2Seq() = default;

const ModelConfig& Seq2Seq::config() const { return impl_->cfg; }
const Tokenizer& Seq2Seq::source_tokenizer() const { return impl_->src_tok; }
const Tokenizer& Seq2Seq::target_tokenizer() const { return impl_->tgt_tok; }

std::vector<std::int32_t> Seq2Seq::encode_text(std::string_view text) const {
  return impl_->src_tok.encode(text, impl_->cfg.tokenizer.src_append_eos);
}

std::string Seq2Seq::decode_text(std::span<const std::int32_t> ids) const { return impl_->tgt_tok.decode(ids); }

Seq2Seq::Encoded Seq2Seq::prepare(const std::vector<std::vector<std::int32_t>>& sources) const {
  Encoded e;
  e.impl = impl_->prepare(sources, "prepare");
  return e;
}

void Seq2Seq::record_encode(Sequence& seq, const Encoded& encoded) const {
  if (!encoded.impl) throw Error(ErrorCode::invalid_argument, fmt::format("{}::record_encode: an empty Encoded", kOp));
  impl_->record_encode(seq, *encoded.impl);
}

Seq2Seq::Encoded Seq2Seq::encode(const std::vector<std::vector<std::int32_t>>& sources) const {
  Encoded e;
  e.impl = impl_->prepare(sources, "encode");
  Sequence seq = impl_->ctx->sequence({.label = "Seq2Seq::encode"});
  impl_->record_encode(seq, *e.impl);
  seq.eval();
  return e;
}

Seq2Seq::DecoderState Seq2Seq::start(const Encoded& encoded, const DecodeOptions& options) const {
  DecoderState s;
  s.impl = impl_->start(encoded.impl, options);
  return s;
}

void Seq2Seq::record_step(Sequence& seq, DecoderState& state, std::span<const std::int32_t> forced_inputs) const {
  if (!state.impl) throw Error(ErrorCode::invalid_argument, fmt::format("{}::record_step: an empty DecoderState", kOp));
  auto& st = *state.impl;
  const std::size_t B = st.enc->B;
  Context& c = *impl_->ctx;
  if (st.t >= st.options.max_len) {
    throw Error(ErrorCode::out_of_range,
                fmt::format("{}::record_step: the state has taken its max_len = {} steps", kOp, st.options.max_len));
  }
  if (!forced_inputs.empty()) {
    if (forced_inputs.size() != B) {
      throw Error(ErrorCode::invalid_argument,
                  fmt::format("{}::record_step: {} forced inputs for a batch of {}", kOp, forced_inputs.size(), B));
    }
    check_token_ids(forced_inputs, impl_->Vt, "Seq2Seq::record_step: forced input");
  }
  if (!st.step_tokens.valid()) {
    st.step_tokens = c.tensor({B, 1}, DType::i32, "Seq2Seq step tokens");
    st.step_scores = c.tensor({B, 1}, DType::f32, "Seq2Seq step scores");
    if (st.options.return_logits) st.step_logits = c.tensor({B, 1, impl_->Vt}, DType::f32, "Seq2Seq step logits");
    if (st.options.return_attention) st.step_attention = c.tensor({B, 1, st.enc->S}, DType::f32, "Seq2Seq step attention");
    st.step_nonfinite = c.tensor({B}, DType::u32, "Seq2Seq step non-finite flags");
  }
  Impl::History h{st.step_tokens, st.step_scores, st.step_logits, st.step_attention, 0, st.step_nonfinite};
  seq.fill(st.step_nonfinite, 0);
  if (!forced_inputs.empty()) {
    impl_->record_init(seq, st);  // fills the inputs with BOS: replace them after
    seq.upload(st.prev, std::vector<std::int32_t>(forced_inputs.begin(), forced_inputs.end()));
    st.input_ready = false;
  }
  st.last_step = st.t;
  impl_->record_step(seq, st, h);
  seq.download(st.step_tokens).download(st.step_scores).download(st.step_nonfinite);
  if (st.options.stop_at_eos) seq.download(st.finished);
  if (st.step_logits.valid()) seq.download(st.step_logits);
  if (st.step_attention.valid()) seq.download(st.step_attention);
}

StepResult Seq2Seq::read_step(const Sequence& seq, const DecoderState& state) const {
  if (!state.impl || !state.impl->step_tokens.valid()) {
    throw Error(ErrorCode::state, fmt::format("{}::read_step: no step was recorded for this state", kOp));
  }
  const auto& st = *state.impl;
  check_finite_logits(seq.read<std::uint32_t>(st.step_nonfinite), "read_step", 1, st.last_step);
  StepResult r;
  r.step = st.last_step;
  r.tokens = seq.read<std::int32_t>(st.step_tokens);
  r.scores = seq.read<float>(st.step_scores);
  r.finished.assign(st.enc->B, 0);
  if (st.options.stop_at_eos) {
    const auto f = seq.read<std::uint32_t>(st.finished);
    for (std::size_t b = 0; b < f.size(); ++b) r.finished[b] = f[b] != 0;
    r.all_finished = std::all_of(r.finished.begin(), r.finished.end(), [](std::uint8_t x) { return x != 0; });
  }
  if (st.step_logits.valid()) r.logits = seq.read<float>(st.step_logits);
  if (st.step_attention.valid()) r.attention = seq.read<float>(st.step_attention);
  return r;
}

StepResult Seq2Seq::step(DecoderState& state, std::span<const std::int32_t> forced_inputs) const {
  Sequence seq = impl_->ctx->sequence({.label = "Seq2Seq::step"});
  record_step(seq, state, forced_inputs);
  seq.eval();
  return read_step(seq, state);
}

DecodeResult Seq2Seq::greedy(const std::vector<std::vector<std::int32_t>>& sources, const DecodeOptions& options) const {
  const Impl& m = *impl_;
  auto e = m.prepare(sources, "greedy");
  auto st = m.start(e, options);
  const std::size_t B = e->B, S = e->S, T = st->options.max_len, V = m.Vt;
  Context& c = *m.ctx;
  Impl::History h;
  h.tokens = c.tensor({B, T}, DType::i32, "Seq2Seq greedy tokens");
  h.scores = c.tensor({B, T}, DType::f32, "Seq2Seq greedy scores");
  if (options.return_logits) h.logits = c.tensor({B, T, V}, DType::f32, "Seq2Seq greedy logits");
  if (options.return_attention) h.attention = c.tensor({B, T, S}, DType::f32, "Seq2Seq greedy attention");
  h.nonfinite = c.tensor({B}, DType::u32, "Seq2Seq greedy non-finite flags");

  Sequence seq = c.sequence({.label = "Seq2Seq::greedy"});
  seq.fill(h.nonfinite, 0);
  m.record_encode(seq, *e);
  const bool early_stop = st->options.stop_at_eos;
  if (early_stop) {
    // Once every row has finished, the gate turns the remaining steps' dispatches into empty
    // ones: the columns they would have written keep these values (what finished rows emit).
    seq.fill(h.tokens, static_cast<std::uint32_t>(m.cfg.special.pad)).fill(h.scores, 0);
    if (h.logits.valid()) seq.fill(h.logits, 0);
    if (h.attention.valid()) seq.fill(h.attention, 0);
    seq.begin_gate();
  }
  for (std::size_t t = 0; t < T; ++t) {
    h.column = t;
    m.record_step(seq, *st, h);
    if (early_stop && t + 1 < T) seq.close_gate_when_all(st->finished);
  }
  if (early_stop) seq.end_gate();
  seq.download(h.tokens).download(h.scores).download(h.nonfinite);
  if (h.logits.valid()) seq.download(h.logits);
  if (h.attention.valid()) seq.download(h.attention);
  seq.eval();
  check_finite_logits(seq.read<std::uint32_t>(h.nonfinite), "greedy", 1, 0);

  const auto tokens = seq.read<std::int32_t>(h.tokens);
  const auto scores = seq.read<float>(h.scores);
  DecodeResult r;
  r.batch = B;
  r.source_length = S;
  r.vocab = V;
  r.lengths.assign(B, static_cast<std::int32_t>(T));
  if (st->options.stop_at_eos) {
    for (std::size_t b = 0; b < B; ++b) {
      for (std::size_t t = 0; t < T; ++t) {
        if (tokens[b * T + t] == m.cfg.special.eos) {
          r.lengths[b] = static_cast<std::int32_t>(t + 1);
          break;
        }
      }
    }
    r.steps = static_cast<std::size_t>(*std::max_element(r.lengths.begin(), r.lengths.end()));
    r.steps_run = std::min<std::size_t>(T, 1 + seq.open_gate_checks());
  } else {
    r.steps = r.steps_run = T;
  }
  // Keep the first `steps` columns of every history.
  auto cut = [&](const auto& full, std::size_t inner) {
    std::remove_cvref_t<decltype(full)> out(B * r.steps * inner);
    for (std::size_t b = 0; b < B; ++b) {
      std::copy_n(full.begin() + static_cast<std::ptrdiff_t>(b * T * inner), r.steps * inner,
                  out.begin() + static_cast<std::ptrdiff_t>(b * r.steps * inner));
    }
    return out;
  };
  r.tokens = cut(tokens, 1);
  r.scores = cut(scores, 1);
  if (h.logits.valid()) r.logits = cut(seq.read<float>(h.logits), V);
  if (h.attention.valid()) r.attention = cut(seq.read<float>(h.attention), S);
  r.stats = seq.stats();
  return r;
}

std::vector<std::vector<Hypothesis>> Seq2Seq::beam(const std::vector<std::vector<std::int32_t>>& sources,
                                                   const BeamOptions& options) const {
  const Impl& m = *impl_;
  const std::size_t K = options.beam_width ? options.beam_width : m.cfg.beam_width;
  const double alpha = options.length_alpha >= 0.0 ? options.length_alpha : m.cfg.length_alpha;
  const std::size_t T = options.max_len ? options.max_len : m.cfg.max_decode_length;
  static_assert(BeamSearch::max_beam + 1 <= TopK::max_k, "K + 1 candidates per hypothesis");
  if (K == 0 || K > BeamSearch::max_beam) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{}::beam: beam_width = {} is outside [1, {}]", kOp, K, BeamSearch::max_beam));
  }
  Impl::check_max_len(T, "beam");
  auto e = m.prepare(sources, "beam");
  Context& c = *m.ctx;
  const std::size_t B = e->B, S = e->S, R = B * K, V = m.Vt;

  // The encoder runs once per source; its results are expanded to K decoder rows per source.
  auto ek = std::make_shared<Encoded::Impl>();
  ek->B = R;
  ek->S = S;
  for (std::size_t r = 0; r < R; ++r) ek->lengths.push_back(e->lengths[r / K]);
  ek->plan = m.plan(R, S);
  ek->lengths_t = c.tensor({R}, DType::i32, "Seq2Seq beam lengths");
  ek->memory = c.tensor({R, S, m.M}, DType::f32, "Seq2Seq beam encoder outputs");
  if (e->keys.valid()) ek->keys = c.tensor({R, S, m.cfg.attention_dim}, DType::f32, "Seq2Seq beam keys");
  if (e->s0.valid()) ek->s0 = c.tensor({1, R, m.Hd}, DType::f32, "Seq2Seq beam s0");
  if (!m.bahdanau) ek->h_n = c.tensor({m.Ld, R, m.Hd}, DType::f32, "Seq2Seq beam h0");
  if (e->c_n.valid()) ek->c_n = c.tensor({m.Ld, R, m.Hd}, DType::f32, "Seq2Seq beam c0");
  std::vector<std::int32_t> source_of(R);
  for (std::size_t r = 0; r < R; ++r) source_of[r] = static_cast<std::int32_t>(r / K);
  const Tensor rows = c.tensor({R}, DType::i32, "Seq2Seq beam row sources");

  auto st = m.start(ek, {.max_len = T, .stop_at_eos = false});
  const std::size_t kc = std::min(K + 1, V);  // candidates kept per decoder row
  const TopK topk(c, kc, m.opts);
  const BeamSearch search(c, B, K, kc, T, m.cfg.special.eos, m.cfg.special.pad, m.opts);
  const BeamSearch::State state = search.make_state();
  const Tensor cand_v = c.tensor({R, kc}, DType::f32, "Seq2Seq beam candidate scores");
  const Tensor cand_i = c.tensor({R, kc}, DType::i32, "Seq2Seq beam candidate tokens");
  const Tensor parents = c.tensor({R}, DType::i32, "Seq2Seq beam parents");
  const Tensor nonfinite = c.tensor({R}, DType::u32, "Seq2Seq beam non-finite flags");
  // Reordered copies of the cell state and h~ (swapped with the state's at record time).
  Tensor c_tmp = m.lstm ? c.tensor({m.Ld, R, m.Hd}, DType::f32, "Seq2Seq beam c reorder") : Tensor{};
  Tensor ht_tmp = m.bahdanau ? Tensor{} : c.tensor({R, m.Hd}, DType::f32, "Seq2Seq beam h~ reorder");
  // Per-step histories of every decoder row; hypotheses pick their rows afterwards.
  const Tensor hist_logits = options.return_logits ? c.tensor({T, R, V}, DType::f32, "Seq2Seq beam logits") : Tensor{};
  const Tensor hist_attention =
      options.return_attention ? c.tensor({T, R, S}, DType::f32, "Seq2Seq beam attention") : Tensor{};

  // The whole search is one submission: encoder, expansion, then max_len steps of (reorder the
  // state to the surviving hypotheses, decoder step, top-k, merge on the GPU) inside a gate the
  // merge's done flags close, so the host never waits per step.
  Sequence seq = c.sequence({.label = "Seq2Seq::beam"});
  seq.fill(nonfinite, 0);
  m.record_encode(seq, *e);
  seq.upload(rows, source_of);
  seq.upload(ek->lengths_t, ek->lengths);
  auto expand = [&](const Tensor& from, const Tensor& to, std::size_t layers, std::size_t width) {
    for (std::size_t l = 0; l < layers; ++l) {
      m.embedding.record(seq, MatrixView{from, B, width, l * B * width, width}, rows,
                         MatrixView{to, R, width, l * R * width, width});
    }
  };
  expand(e->memory, ek->memory, 1, S * m.M);
  if (e->keys.valid()) expand(e->keys, ek->keys, 1, S * m.cfg.attention_dim);
  if (e->s0.valid()) expand(e->s0, ek->s0, 1, m.Hd);
  if (!m.bahdanau) expand(e->h_n, ek->h_n, m.Ld, m.Hd);
  if (e->c_n.valid()) expand(e->c_n, ek->c_n, m.Ld, m.Hd);
  search.record_reset(seq, state);
  m.record_init(seq, *st);
  seq.begin_gate();
  for (std::size_t t = 0; t < T; ++t) {
    if (t > 0) {
      // Gather every row's state from its parent row (a row that is done gathers itself).
      for (std::size_t l = 0; l < m.Ld; ++l) {
        m.embedding.record(seq, MatrixView{st->h[st->cur], R, m.Hd, l * R * m.Hd, m.Hd}, parents,
                           MatrixView{st->h[st->cur ^ 1], R, m.Hd, l * R * m.Hd, m.Hd});
        if (m.lstm) {
          m.embedding.record(seq, MatrixView{st->c, R, m.Hd, l * R * m.Hd, m.Hd}, parents,
                             MatrixView{c_tmp, R, m.Hd, l * R * m.Hd, m.Hd});
        }
      }
      st->cur ^= 1;
      if (m.lstm) std::swap(st->c, c_tmp);
      if (!m.bahdanau) {
        m.embedding.record(seq, MatrixView::of(st->h_tilde), parents, MatrixView::of(ht_tmp));
        std::swap(st->h_tilde, ht_tmp);
      }
      st->input_ready = false;  // st->prev holds the merge's next tokens
    }
    Impl::History h;
    h.weights = options.return_attention;
    h.select = false;
    m.record_step(seq, *st, h);
    topk.record(seq, st->logits, cand_v, cand_i, true, nonfinite, static_cast<std::uint32_t>(t + 1));
    if (hist_logits.valid()) {
      m.concat.record(seq, {MatrixView::of(st->logits)}, MatrixView{hist_logits, R, V, t * R * V, V});
    }
    if (hist_attention.valid()) {
      m.concat.record(seq, {MatrixView::of(st->weights)}, MatrixView{hist_attention, R, S, t * R * S, S});
    }
    search.record_step(seq, state, t, cand_v, cand_i, parents, st->prev);
    if (t + 1 < T) seq.close_gate_when_all(state.done);
  }
  seq.end_gate();
  search.record_download(seq, state);
  seq.download(nonfinite);
  if (hist_logits.valid()) seq.download(hist_logits);
  if (hist_attention.valid()) seq.download(hist_attention);
  seq.eval();
  check_finite_logits(seq.read<std::uint32_t>(nonfinite), "beam", K, 0);
  if (options.stats) *options.stats = {seq.stats(), std::min<std::size_t>(T, 1 + seq.open_gate_checks())};

  const auto found = search.reconstruct(seq, state);
  std::vector<float> logits, weights;
  if (hist_logits.valid()) logits = seq.read<float>(hist_logits);
  if (hist_attention.valid()) weights = seq.read<float>(hist_attention);
  std::vector<std::vector<Hypothesis>> out(B);
  for (std::size_t b = 0; b < B; ++b) {
    auto& f = out[b];
    for (const BeamHypothesis& bh : found[b]) {
      Hypothesis hyp;
      hyp.tokens = bh.tokens;
      hyp.score = bh.score;
      hyp.norm_score = double(bh.score) / std::pow(double(bh.tokens.size()), alpha);
      hyp.finished = bh.finished;
      for (std::size_t i = 0; i < bh.rows.size(); ++i) {
        const std::size_t at = i * R + bh.rows[i];
        if (!logits.empty()) {
          hyp.logits.insert(hyp.logits.end(), logits.begin() + static_cast<std::ptrdiff_t>(at * V),
                            logits.begin() + static_cast<std::ptrdiff_t>((at + 1) * V));
        }
        if (!weights.empty()) {
          hyp.attention.insert(hyp.attention.end(), weights.begin() + static_cast<std::ptrdiff_t>(at * S),
                               weights.begin() + static_cast<std::ptrdiff_t>((at + 1) * S));
        }
      }
      f.push_back(std::move(hyp));
    }
    // Rank by norm_score, ties by arrival (docs/model-format.md, "Beam search", rule 5).
    std::stable_sort(f.begin(), f.end(), [](const Hypothesis& x, const Hypothesis& y) { return x.norm_score > y.norm_score; });
    if (f.size() > K) f.resize(K);
  }
  return out;
}

std::vector<std::string> Seq2Seq::translate(const std::vector<std::string>& texts) const {
  std::vector<std::vector<std::int32_t>> sources;
  for (const auto& t : texts) sources.push_back(encode_text(t));
  const DecodeResult r = greedy(sources);
  std::vector<std::string> out;
  for (std::size_t b = 0; b < r.batch; ++b) out.push_back(decode_text(r.row(b)));
  return out;
}

}  // namespace vkrnn
