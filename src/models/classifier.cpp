// Classifier: rnn_attention_classifier and self_attention_rnn (docs/model-format.md, sections 3
// and 4) built from the library's ops; one Sequence per classify() call.
#include "vkrnn/classifier.hpp"

#include <algorithm>
#include <cmath>
#include <mutex>

#include <fmt/format.h>

#include "models/model_common.hpp"
#include "vkrnn/activation.hpp"
#include "vkrnn/attention.hpp"
#include "vkrnn/concat.hpp"
#include "vkrnn/embedding.hpp"
#include "vkrnn/error.hpp"
#include "vkrnn/linear.hpp"
#include "vkrnn/positional_encoding.hpp"
#include "vkrnn/residual_add.hpp"
#include "vkrnn/rnn.hpp"
#include "vkrnn/self_attention.hpp"
#include "vkrnn/sequence_mask.hpp"

namespace vkrnn {
namespace {

constexpr const char* kOp = "Classifier";

using model_detail::fp32;
using model_detail::tensor_of;

}  // namespace

struct Classifier::Impl {
  Context* ctx;
  ModelConfig cfg;
  OpOptions opts;         // every op but the dense layers: fp32 storage
  OpOptions linear_opts;  // dense layers: fp16 weights when the caller asks for fp16_storage
  Tokenizer tok;
  bool self_attn = false, lstm = false;
  std::size_t V = 0, E = 0, H = 0, L = 0, D = 1, DH = 0, C = 0, A = 0, heads = 1;
  bool attention_pooling = true;
  Tensor emb, pool_b, pool_v, zero_wq;
  std::vector<float> pool_v_host;  // the linear pooling's query, replicated per batch row
  std::unique_ptr<Rnn> rnn;
  std::unique_ptr<Linear> pool_proj, classifier, q_proj, k_proj, v_proj, out_proj;
  std::unique_ptr<PositionalEncoding> pe;
  Embedding embedding;
  Concat concat;
  Activation sigmoid;
  ResidualAdd residual;
  SequenceMask mask;

  Impl(Context& c, const ModelFile& mf, const OpOptions& o)
      : ctx(&c), cfg(mf.config()), opts(fp32(o)), linear_opts(o), embedding(c, fp32(o)), concat(c, fp32(o)), sigmoid(c, ActivationFn::sigmoid, fp32(o)), residual(c, fp32(o)), mask(c, fp32(o)) {
    if (cfg.architecture != Architecture::rnn_attention_classifier && cfg.architecture != Architecture::self_attention_rnn) {
      throw Error(ErrorCode::invalid_argument,
                  fmt::format("{}: model '{}' is a {}, not a classifier (rnn_attention_classifier or self_attention_rnn)",
                              kOp, cfg.directory, to_string(cfg.architecture)));
    }
    tok = Tokenizer(cfg.vocab, cfg.tokenizer, cfg.special);
    self_attn = cfg.architecture == Architecture::self_attention_rnn;
    lstm = cfg.cell == CellType::lstm;
    V = cfg.vocab_size;
    E = cfg.embedding_dim;
    H = cfg.hidden;
    L = cfg.layers;
    D = cfg.bidirectional ? 2 : 1;
    DH = D * H;
    C = cfg.num_classes;
    heads = self_attn ? cfg.heads : 1;
    attention_pooling = cfg.pooling == Pooling::attention;
    emb = tensor_of(c, {V, E}, mf.tensor("embedding"), "embedding");
    RnnConfig rc;
    rc.cell = cfg.cell;
    rc.input_size = E;
    rc.hidden_size = H;
    rc.num_layers = L;
    rc.bidirectional = cfg.bidirectional;
    rnn = std::make_unique<Rnn>(c, rc, opts);
    rnn->load(mf.rnn("rnn"));
    if (attention_pooling) {
      if (cfg.pooling_score == PoolingScore::tanh) {
        // u_t = w . tanh(W_p h_t + b_p) is the additive score with keys W_p h and a zero query.
        A = cfg.attention_dim;
        pool_proj = std::make_unique<Linear>(c, DH, A, false, opts);  // the keys; b_p goes with the score
        pool_proj->load(mf.tensor("pooling.weight"));
        pool_b = tensor_of(c, {A}, mf.tensor("pooling.bias"), "pooling.bias");
        pool_v = tensor_of(c, {A}, mf.tensor("pooling.w"), "pooling.w");
        zero_wq = tensor_of(c, {A, 1}, std::vector<float>(A, 0.0f), "pooling zero query weight");
      } else {
        // u_t = w . h_t is the dot score with the query w.
        pool_v_host = mf.tensor("pooling.w");
      }
    }
    classifier = std::make_unique<Linear>(c, DH, C, true, linear_opts);
    classifier->load(mf.tensor("classifier.weight"), mf.tensor("classifier.bias"));
    if (self_attn) {
      if (cfg.attention_projections) {
        auto lin = [&](const char* name) {
          auto l = std::make_unique<Linear>(c, E, E, true, linear_opts);
          l->load(mf.tensor(fmt::format("{}.weight", name)), mf.tensor(fmt::format("{}.bias", name)));
          return l;
        };
        q_proj = lin("q_proj");
        k_proj = lin("k_proj");
        v_proj = lin("v_proj");
        out_proj = lin("out_proj");
      }
      if (cfg.positional_encoding) pe = std::make_unique<PositionalEncoding>(c, E, opts);
    }
  }

  AttentionConfig pooling_config(std::size_t B, std::size_t T) const {
    AttentionConfig a;
    a.batch = B;
    a.max_source = T;
    a.hidden = DH;
    if (cfg.pooling_score == PoolingScore::tanh) {
      a.score = Score::additive;
      a.key_dim = A;
      a.query_dim = 1;
    } else {
      a.score = Score::dot;
      a.key_dim = DH;
      a.query_dim = DH;
    }
    return a;
  }
};

Classifier Classifier::load(Context& ctx, const std::string& model_dir, const OpOptions& options) {
  return Classifier(ctx, ModelFile::load(model_dir), options);
}

Classifier::Classifier(Context& ctx, const ModelFile& model, const OpOptions& options)
    : impl_(std::make_unique<Impl>(ctx, model, options)) {}
Classifier::Classifier(Classifier&&) noexcept = default;
Classifier& Classifier::operator=(Classifier&&) noexcept = default;
Classifier::~Classifier() = default;

const ModelConfig& Classifier::config() const { return impl_->cfg; }
const Tokenizer& Classifier::tokenizer() const { return impl_->tok; }
std::vector<std::int32_t> Classifier::encode_text(std::string_view text) const { return impl_->tok.encode(text); }

ClassifyResult Classifier::classify(const std::vector<std::vector<std::int32_t>>& tokens, const ClassifyOptions& options) const {
  const Impl& m = *impl_;
  if (tokens.empty()) throw Error(ErrorCode::invalid_argument, fmt::format("{}::classify: no inputs (the batch is empty)", kOp));
  std::size_t T = 0;
  for (std::size_t b = 0; b < tokens.size(); ++b) {
    if (tokens[b].empty()) {
      throw Error(ErrorCode::invalid_argument,
                  fmt::format("{}::classify: input row {} is empty (a sequence needs at least one token)", kOp, b));
    }
    check_token_ids(tokens[b], m.V, "Classifier::classify: input", b);
    T = std::max(T, tokens[b].size());
  }
  if (m.pe && T > m.cfg.max_positions) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{}::classify: a sequence of {} steps exceeds the model's max_positions {}", kOp, T,
                            m.cfg.max_positions));
  }
  Context& c = *m.ctx;
  const std::size_t B = tokens.size(), E = m.E, DH = m.DH, C = m.C;
  std::vector<std::int32_t> ids(B * T, m.cfg.special.pad), lengths(B);
  bool ragged = false;  // some row shorter than T: the RNN's input has padded rows
  for (std::size_t b = 0; b < B; ++b) {
    std::copy(tokens[b].begin(), tokens[b].end(), ids.begin() + static_cast<std::ptrdiff_t>(b * T));
    lengths[b] = static_cast<std::int32_t>(tokens[b].size());
    ragged = ragged || tokens[b].size() < T;
  }
  const Tensor t_ids = c.tensor({B, T}, DType::i32, "Classifier ids");
  const Tensor t_len = c.tensor({B}, DType::i32, "Classifier lengths");
  const Tensor x = c.tensor({B, T, E}, DType::f32, "Classifier embeddings");
  const Tensor h = c.tensor({B, T, DH}, DType::f32, "Classifier RNN outputs");
  const Tensor h_n = c.tensor({m.L * m.D, B, m.H}, DType::f32, "Classifier RNN h_n");
  const Tensor pooled = c.tensor({B, DH}, DType::f32, "Classifier pooled");
  const Tensor logits = c.tensor({B, C}, DType::f32, "Classifier logits");
  const Tensor probs = c.tensor({B, C}, DType::f32, "Classifier probabilities");
  Tensor weights, q_expanded;
  Sequence seq = c.sequence({.label = "Classifier::classify"});
  seq.upload(t_ids, ids);
  seq.upload(t_len, lengths);
  m.embedding.record(seq, m.emb, t_ids, x);

  // The RNN's input.
  Tensor y = x, q, k, v;
  if (m.self_attn) {
    if (m.pe) m.pe->record(seq, x, x);
    q = k = v = x;
    if (m.q_proj) {
      q = c.tensor({B, T, E}, DType::f32, "Classifier q");
      k = c.tensor({B, T, E}, DType::f32, "Classifier k");
      v = c.tensor({B, T, E}, DType::f32, "Classifier v");
      m.q_proj->record(seq, x, q);
      m.k_proj->record(seq, x, k);
      m.v_proj->record(seq, x, v);
    }
    SelfAttentionConfig sc;
    sc.batch = B;
    sc.max_seq = T;
    sc.hidden = E;
    sc.heads = m.heads;
    const SelfAttention sa(c, sc, m.opts);
    const Tensor o = c.tensor({B, T, E}, DType::f32, "Classifier self-attention output");
    sa.record(seq, q, k, v, t_len, o);
    Tensor attn = o;
    if (m.out_proj) {
      attn = c.tensor({B, T, E}, DType::f32, "Classifier attention projection");
      m.out_proj->record(seq, o, attn);
    }
    if (m.cfg.residual) {
      y = c.tensor({B, T, E}, DType::f32, "Classifier residual");
      m.residual.record(seq, x, attn, y);
    } else {
      y = attn;
    }
    // y is zero past a length (docs/model-format.md). y is never x here (it is the residual sum,
    // out_proj's output or the attention output o, which out_proj has already read), so q, k, v
    // stay as they were. The RNN never reads padded rows: a full batch needs no dispatch, nor
    // y = o (SelfAttention writes padded query rows as zeros).
    if (ragged && y.storage_ptr() != o.storage_ptr()) m.mask.record(seq, y, t_len, y);
    if (options.return_self_attention) {
      // The weights themselves (the fused op never stores them): every query row i of batch
      // row b attends over row b's keys, as a batch of B*T single queries.
      std::vector<std::int32_t> row_of(B * T), len_of(B * T);
      for (std::size_t r = 0; r < B * T; ++r) {
        row_of[r] = static_cast<std::int32_t>(r / T);
        len_of[r] = lengths[r / T];
      }
      const Tensor t_rows = c.tensor({B * T}, DType::i32, "Classifier query rows");
      const Tensor t_qlen = c.tensor({B * T}, DType::i32, "Classifier query lengths");
      const Tensor keys = c.tensor({B * T, T, E}, DType::f32, "Classifier expanded keys");
      seq.upload(t_rows, row_of);
      seq.upload(t_qlen, len_of);
      m.embedding.record(seq, MatrixView{k, B, T * E, 0, T * E}, t_rows, MatrixView{keys, B * T, T * E, 0, T * E});
      AttentionConfig ac;
      ac.score = Score::scaled_dot;
      ac.batch = B * T;
      ac.max_source = T;
      ac.hidden = E;
      ac.key_dim = E;
      ac.query_dim = E;
      ac.heads = m.heads;
      const AttentionScores scores_op(c, ac, m.opts);
      const MaskedSoftmax softmax_op(c, ac, m.opts);
      const Tensor scores = c.tensor(attention_scores_shape(ac), DType::f32, "Classifier self-attention scores");
      q_expanded = c.tensor(attention_scores_shape(ac), DType::f32, "Classifier self-attention weights");
      scores_op.record(seq, keys, q.reshaped({B * T, E}), t_qlen, scores);
      softmax_op.record(seq, scores, t_qlen, q_expanded);
      seq.download(q_expanded);
    }
  }

  // rnn_attention_classifier: y is x, which only the RNN reads; zeroed for the caller only.
  if (!m.self_attn && ragged && options.return_rnn) m.mask.record(seq, y, t_len, y);

  m.rnn->record(seq, y, t_len, {}, {}, h, h_n, {}, lengths);

  // Pooling.
  if (m.attention_pooling) {
    const AttentionConfig pc = m.pooling_config(B, T);
    const FusedAttention pool(c, pc, m.opts);
    if (options.return_pooling) weights = c.tensor({B, T}, DType::f32, "Classifier pooling weights");
    if (m.cfg.pooling_score == PoolingScore::tanh) {
      const Tensor keys = c.tensor({B, T, m.A}, DType::f32, "Classifier pooling keys");
      const Tensor zero_q = c.tensor({B, 1}, DType::f32, "Classifier zero query");
      seq.fill(zero_q, 0);
      m.pool_proj->record(seq, h, keys);
      pool.record(seq, keys, h, zero_q, t_len, pooled, {m.zero_wq, m.pool_b, m.pool_v}, weights);
    } else {
      const Tensor query = c.tensor({B, DH}, DType::f32, "Classifier pooling query");
      std::vector<float> w_rep;
      for (std::size_t b = 0; b < B; ++b) w_rep.insert(w_rep.end(), m.pool_v_host.begin(), m.pool_v_host.end());
      seq.upload(query, w_rep);
      pool.record(seq, h, h, query, t_len, pooled, {}, weights);
    }
    m.classifier->record(seq, pooled, logits);
  } else {
    // The top layer's final state(s): [fwd; bwd] (D = 2) or fwd.
    const std::size_t H = m.H, top = (m.L - 1) * m.D;
    if (m.D == 2) {
      m.concat.record(seq, {MatrixView{h_n, B, H, top * B * H, H}, MatrixView{h_n, B, H, (top + 1) * B * H, H}},
                      MatrixView::of(pooled));
      m.classifier->record(seq, pooled, logits);
    } else {
      m.classifier->record(seq, MatrixView{h_n, B, H, top * B * H, H}, MatrixView::of(logits));
    }
  }

  // Probabilities.
  if (m.cfg.output_activation == OutputActivation::sigmoid) {
    m.sigmoid.record(seq, logits, probs);
  } else {
    AttentionConfig sc;
    sc.batch = B;
    sc.max_source = C;
    sc.hidden = 1;
    const MaskedSoftmax softmax(c, sc, m.opts);
    const Tensor classes = c.tensor({B}, DType::i32, "Classifier class counts");
    seq.fill(classes, static_cast<std::uint32_t>(C));
    softmax.record(seq, logits, classes, probs);
  }
  seq.download(logits).download(probs);
  if (weights.valid()) seq.download(weights);
  if (options.return_rnn) seq.download(y).download(h);
  seq.eval();

  ClassifyResult r;
  r.batch = B;
  r.classes = C;
  r.steps = T;
  r.logits = seq.read<float>(logits);
  r.probs = seq.read<float>(probs);
  // NaN / infinite logits would still yield a class: name the row and the layer instead.
  for (std::size_t i = 0; i < r.logits.size(); ++i) {
    if (!std::isfinite(r.logits[i])) {
      throw Error(ErrorCode::non_finite,
                  fmt::format("{}::classify: the classifier layer (classifier.weight, classifier.bias) gave a "
                              "non-finite logit ({}) for row {}, class {}: check the model's weights and inputs",
                              kOp, r.logits[i], i / C, i % C));
    }
  }
  for (std::size_t b = 0; b < B; ++b) {
    const float* p = &r.probs[b * C];
    if (C == 1) {
      r.predicted.push_back(p[0] >= 0.5f ? 1 : 0);
    } else {
      r.predicted.push_back(static_cast<std::int32_t>(std::max_element(p, p + C) - p));
    }
  }
  if (weights.valid()) r.pooling = seq.read<float>(weights);
  if (options.return_rnn) {
    r.rnn_inputs = seq.read<float>(y);
    r.rnn_outputs = seq.read<float>(h);
  }
  if (q_expanded.valid()) {
    // [B*T (query i), heads, T (key j)] -> [B, heads, T, T], query rows past a length zeroed.
    const auto w = seq.read<float>(q_expanded);
    const std::size_t nh = m.heads;
    r.self_attention.assign(B * nh * T * T, 0.0f);
    for (std::size_t b = 0; b < B; ++b)
      for (std::size_t i = 0; i < static_cast<std::size_t>(lengths[b]); ++i)
        for (std::size_t hh = 0; hh < nh; ++hh)
          for (std::size_t j = 0; j < T; ++j)
            r.self_attention[((b * nh + hh) * T + i) * T + j] = w[((b * T + i) * nh + hh) * T + j];
  }
  r.stats = seq.stats();
  return r;
}

std::vector<std::string> Classifier::classify_text(const std::vector<std::string>& texts) const {
  std::vector<std::vector<std::int32_t>> tokens;
  for (const auto& t : texts) tokens.push_back(encode_text(t));
  const ClassifyResult r = classify(tokens);
  std::vector<std::string> out;
  for (auto p : r.predicted) {
    out.push_back(impl_->cfg.num_classes == 1 ? (p ? impl_->cfg.labels.at(0) : "not " + impl_->cfg.labels.at(0))
                                              : impl_->cfg.labels.at(static_cast<std::size_t>(p)));
  }
  return out;
}

}  // namespace vkrnn
