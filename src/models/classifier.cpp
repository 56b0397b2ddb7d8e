// Classifier on the graph runtime: the forward graph, one Sequence per classify() call.
#include "vkrnn/classifier.hpp"

#include <algorithm>
#include <cmath>
#include <set>

#include <fmt/format.h>

#include "models/graph.hpp"
#include "models/graph_runtime.hpp"
#include "models/model_common.hpp"
#include "vkrnn/activation.hpp"
#include "vkrnn/attention.hpp"
#include "vkrnn/embedding.hpp"
#include "vkrnn/error.hpp"

namespace vkrnn {
namespace {

constexpr const char* kOp = "Classifier";

using graph::From;
using model_detail::fp32;

}  // namespace

struct Classifier::Impl {
  Context* ctx;
  ModelFile file;
  ModelConfig cfg;
  OpOptions opts;         // every op but the dense layers: fp32 storage
  OpOptions linear_opts;  // dense layers: fp16 weights when the caller asks for fp16_storage
  Tokenizer tok;
  std::unique_ptr<graph::Program> program;
  Activation sigmoid;

  Impl(Context& c, const ModelFile& mf, const OpOptions& o)
      : ctx(&c), file(mf), cfg(mf.config()), opts(fp32(o)), linear_opts(o), sigmoid(c, ActivationFn::sigmoid, fp32(o)) {
    if (cfg.task != ModelTask::classifier) {
      throw Error(ErrorCode::invalid_argument,
                  fmt::format("{}: model '{}' is a {}, not a classifier (it has no forward graph)", kOp,
                              cfg.directory.empty() ? cfg.config_path : cfg.directory,
                              cfg.architecture == Architecture::graph ? to_string(cfg.task) : to_string(cfg.architecture)));
    }
    if (!cfg.vocab.empty()) tok = Tokenizer(cfg.vocab, cfg.tokenizer, cfg.special);
    program = std::make_unique<graph::Program>(c, mf.graphs().forward, file, linear_opts, opts);
  }

  int role(const char* name) const {
    const graph::Graph& g = program->graph();
    const std::string t = g.output(name);
    return t.empty() ? -1 : g.find(t);
  }
};

Classifier Classifier::load(Context& ctx, const std::string& model_dir, const OpOptions& options) {
  return Classifier(ctx, ModelFile::load(model_dir), options);
}

Classifier Classifier::load_from_memory(Context& ctx, std::string_view config_json, std::span<const std::byte> weights,
                                        const OpOptions& options) {
  const ModelFile model = ModelFile::load_from_memory(config_json, weights);
  return io_detail::only_vkrnn_errors("<memory>", [&] { return Classifier(ctx, model, options); });
}

Classifier::Classifier(Context& ctx, const ModelFile& model, const OpOptions& options)
    : impl_(model_detail::build_model<Impl>(ctx, model, options)) {}

WarmUpTask Classifier::warm_up(const WarmUpOptions& options) const {
  return WarmUpTask::start(
      [this, options] {
        const std::int32_t id = model_detail::plain_token(impl_->cfg.special, impl_->cfg.vocab_size);
        // No longer than the model's max_positions (0: no limit).
        const std::size_t most = impl_->cfg.max_positions ? impl_->cfg.max_positions : SIZE_MAX;
        for (const std::size_t B : options.batch_sizes) {
          for (const std::size_t T : options.lengths) {
            classify(std::vector<std::vector<std::int32_t>>(B, std::vector<std::int32_t>(std::clamp<std::size_t>(T, 1, most), id)));
          }
        }
        impl_->ctx->save_pipeline_cache();
      },
      options.background);
}
Classifier::Classifier(Classifier&&) noexcept = default;
Classifier& Classifier::operator=(Classifier&&) noexcept = default;
Classifier::~Classifier() = default;

const ModelConfig& Classifier::config() const { return impl_->cfg; }
const Tokenizer& Classifier::tokenizer() const { return impl_->tok; }
std::vector<std::int32_t> Classifier::encode_text(std::string_view text) const {
  if (impl_->cfg.vocab.empty()) {
    throw Error(ErrorCode::invalid_argument, fmt::format("{}::encode_text: the model has no vocabulary (use token ids)", kOp));
  }
  return impl_->tok.encode(text);
}

namespace {

// One classification of a batch: its checks, its frame and what it reads (the logits and what
// was asked for), its recording and its result (classify() and record_classify()).
struct ClassifyRun {
  const Classifier::Impl& m;
  std::size_t B, T, C;
  std::vector<std::int32_t> ids, lengths;
  std::shared_ptr<const graph::Layout> layout;
  graph::Frame frame;
  int logits_t, probs_t;
  std::vector<std::pair<std::string, int>> reads;  // role (or "@" + tensor name), tensor
  Tensor probs;  // computed here when the graph does not compute them

  ClassifyRun(const Classifier::Impl& model, const std::vector<std::vector<std::int32_t>>& tokens, const ClassifyOptions& options,
              const char* call)
      : m(model), B(tokens.size()), T(0), C(m.cfg.num_classes) {
    if (tokens.empty()) throw Error(ErrorCode::invalid_argument, fmt::format("{}::{}: no inputs (the batch is empty)", kOp, call));
    const std::string input = fmt::format("{}::{}: input", kOp, call);
    for (std::size_t b = 0; b < B; ++b) {
      if (tokens[b].empty()) {
        throw Error(ErrorCode::invalid_argument,
                    fmt::format("{}::{}: input row {} is empty (a sequence needs at least one token)", kOp, call, b));
      }
      check_token_ids(tokens[b], m.cfg.vocab_size, input.c_str(), b);
      T = std::max(T, tokens[b].size());
    }
    if (m.cfg.max_positions && T > m.cfg.max_positions) {
      throw Error(ErrorCode::invalid_argument, fmt::format("{}::{}: a sequence of {} steps exceeds the model's max_positions {}",
                                                           kOp, call, T, m.cfg.max_positions));
    }
    const graph::Program& p = *m.program;
    const graph::Graph& g = p.graph();
    ids.assign(B * T, m.cfg.special.pad >= 0 ? m.cfg.special.pad : 0);
    lengths.resize(B);
    for (std::size_t b = 0; b < B; ++b) {
      std::copy(tokens[b].begin(), tokens[b].end(), ids.begin() + static_cast<std::ptrdiff_t>(b * T));
      lengths[b] = static_cast<std::int32_t>(tokens[b].size());
    }
    // What to compute: the logits and what was asked for.
    logits_t = m.role("logits");
    probs_t = m.role("probs");
    reads = {{"logits", logits_t}};
    if (probs_t >= 0) reads.push_back({"probs", probs_t});
    auto ask = [&](const char* role, bool want) {
      const int t = m.role(role);
      if (want && t >= 0) reads.push_back({role, t});
    };
    ask("pooling", options.return_pooling);
    ask("self_attention", options.return_self_attention);
    ask("rnn_inputs", options.return_rnn);
    ask("rnn_outputs", options.return_rnn);
    for (const auto& name : options.outputs) {
      const int t = g.find(name);
      if (t < 0) throw Error(ErrorCode::not_found, fmt::format("{}::{}: the forward graph has no tensor '{}'", kOp, call, name));
      if (g.tensors[static_cast<std::size_t>(t)].dtype != DType::f32) {
        throw Error(ErrorCode::invalid_argument, fmt::format("{}::{}: tensor '{}' holds integers", kOp, call, name));
      }
      p.require_computed(t, fmt::format("{}::{}", kOp, call));
      reads.push_back({"@" + name, t});
    }
    layout = p.layout(B, T);
    frame = p.allocate(*layout, "Classifier");
  }

  // The inputs' uploads, the forward graph, the probabilities where the graph has none, and the
  // downloads.
  void record(Sequence& seq) {
    Context& c = *m.ctx;
    const graph::Program& p = *m.program;
    const graph::Graph& g = p.graph();
    for (std::size_t i = 0; i < g.inputs.size(); ++i) {
      const bool is_ids = g.inputs[i].from == From::tokens;
      frame.bound[i] = c.tensor(eval(g.inputs[i].shape, B, T), DType::i32, is_ids ? "Classifier ids" : "Classifier lengths");
      seq.upload(frame.bound[i], is_ids ? ids : lengths);
    }
    std::vector<int> wanted;
    for (const auto& [role, t] : reads) wanted.push_back(t);
    graph::Exec exec = p.live(wanted);
    exec.host_lengths = lengths;
    p.record(seq, *layout, frame, exec);

    if (probs_t < 0) {
      probs = c.tensor({B, C}, DType::f32, "Classifier probabilities");
      Tensor logits = p.whole(*layout, frame, logits_t);
      if (!logits.valid()) {
        logits = c.tensor({B, C}, DType::f32, "Classifier logits");
        p.copy(seq, *layout, frame, logits_t, logits);
      }
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
      seq.download(probs);
    }
    std::set<const void*> downloaded;
    for (const auto& [role, t] : reads) {
      const graph::Place& pl = layout->places[static_cast<std::size_t>(t)];
      const Tensor& base = pl.bound ? frame.bound[pl.index] : frame.owned[pl.index];
      if (downloaded.insert(base.storage_ptr().get()).second) seq.download(base);
    }
  }

  // The result once `seq`, which recorded the run, has finished.
  ClassifyResult result(const Sequence& seq, const char* call) const {
    const graph::Program& p = *m.program;
    ClassifyResult r;
    r.batch = B;
    r.classes = C;
    r.steps = T;
    for (const auto& [role, t] : reads) {
      std::vector<float> v = p.read(seq, *layout, frame, t);
      if (role == "logits") r.logits = std::move(v);
      else if (role == "probs") r.probs = std::move(v);
      else if (role == "pooling") r.pooling = std::move(v);
      else if (role == "self_attention") r.self_attention = std::move(v);
      else if (role == "rnn_inputs") r.rnn_inputs = std::move(v);
      else if (role == "rnn_outputs") r.rnn_outputs = std::move(v);
      else r.outputs[role.substr(1)] = {layout->places[static_cast<std::size_t>(t)].shape, std::move(v)};
    }
    // NaN / infinite logits would still yield a class: name the row and the layer instead.
    for (std::size_t i = 0; i < r.logits.size(); ++i) {
      if (!std::isfinite(r.logits[i])) {
        throw Error(ErrorCode::non_finite,
                    fmt::format("{}::{}: {} gave a non-finite logit ({}) for row {}, class {}: check the model's "
                                "weights and inputs",
                                kOp, call, graph::producer_of(p.graph(), logits_t), r.logits[i], i / C, i % C));
      }
    }
    if (probs.valid()) r.probs = seq.read<float>(probs);
    for (std::size_t b = 0; b < B; ++b) {
      const float* pr = &r.probs[b * C];
      if (C == 1) {
        r.predicted.push_back(pr[0] >= 0.5f ? 1 : 0);
      } else {
        r.predicted.push_back(static_cast<std::int32_t>(std::max_element(pr, pr + C) - pr));
      }
    }
    r.stats = seq.stats();
    return r;
  }
};

}  // namespace

struct Classifier::Classification::Impl {
  ClassifyRun run;
};

std::size_t Classifier::Classification::batch() const { return impl ? impl->run.B : 0; }

ClassifyResult Classifier::classify(const std::vector<std::vector<std::int32_t>>& tokens, const ClassifyOptions& options) const {
  ClassifyRun run(*impl_, tokens, options, "classify");
  Sequence seq = impl_->ctx->sequence({.label = "Classifier::classify"});
  run.record(seq);
  seq.eval();
  return run.result(seq, "classify");
}

Classifier::Classification Classifier::record_classify(Sequence& seq, const std::vector<std::vector<std::int32_t>>& tokens,
                                                       const ClassifyOptions& options) const {
  Classification c;
  c.impl = std::make_shared<Classification::Impl>(Classification::Impl{ClassifyRun(*impl_, tokens, options, "record_classify")});
  seq.begin_label("Classifier::record_classify");
  c.impl->run.record(seq);
  seq.end_label();
  return c;
}

ClassifyResult Classifier::read_classify(const Sequence& seq, const Classification& classification) const {
  return model_detail::read_recorded(impl_.get(), classification, kOp, "read_classify", "Classification",
                                     [&](const ClassifyRun& run) { return run.result(seq, "read_classify"); });
}

std::vector<std::string> Classifier::classify_text(const std::vector<std::string>& texts) const {
  std::vector<std::vector<std::int32_t>> tokens;
  for (const auto& t : texts) tokens.push_back(encode_text(t));
  const ClassifyResult r = classify(tokens);
  std::vector<std::string> out;
  for (auto p : r.predicted) out.push_back(label(p));
  return out;
}

std::string Classifier::label(std::int32_t predicted) const {
  return impl_->cfg.num_classes == 1 ? (predicted ? impl_->cfg.labels.at(0) : "not " + impl_->cfg.labels.at(0))
                                     : impl_->cfg.labels.at(static_cast<std::size_t>(predicted));
}

}  // namespace vkrnn
