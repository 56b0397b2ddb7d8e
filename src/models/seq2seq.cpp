// Seq2Seq on the graph runtime: the encoder graph once per batch of sources, then the decode
// loop around the decoder_step graph (docs/model-format.md, "The decode loop"). Every step is
// recorded, never run on the host, so a whole greedy or beam decode is one Sequence.
#include "vkrnn/seq2seq.hpp"

#include <algorithm>
#include <cmath>
#include <deque>
#include <limits>
#include <numeric>
#include <optional>
#include <span>
#include <string>

#include <fmt/format.h>

#include "models/graph.hpp"
#include "models/graph_runtime.hpp"
#include "models/model_common.hpp"
#include "ops/beam_step.hpp"
#include "vkrnn/argmax.hpp"
#include "vkrnn/beam_search.hpp"
#include "vkrnn/concat.hpp"
#include "vkrnn/embedding.hpp"
#include "vkrnn/error.hpp"
#include "vkrnn/logits_processor.hpp"
#include "vkrnn/topk.hpp"

namespace vkrnn {
namespace {

constexpr const char* kOp = "Seq2Seq";
constexpr std::size_t kMaxDecodeSteps = 4096;

using graph::From;
using model_detail::fp32;

// Decoder rows whose logits went non-finite, as the GPU flagged them (Argmax / TopK: 0, or the
// first such step + 1 per decoder row): an Error naming the earliest step, its row and the
// layer, instead of tokens chosen from NaN. `beam` decoder rows per source row (1: greedy);
// `first_step` is the decode step of flag value 1.
void check_finite_logits(std::span<const std::uint32_t> flags, const std::string& layer, const char* call,
                         std::size_t beam, std::size_t first_step) {
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
              fmt::format("{}::{}: {} gave non-finite logits (NaN or infinite) for {} at step {} ({} of {} decoder "
                          "rows): check the model's weights and inputs",
                          kOp, call, layer, where, first_step + flags[worst] - 1, rows, flags.size()));
}

}  // namespace

struct Seq2Seq::Encoded::Impl {
  std::size_t B = 0, S = 0;
  std::vector<std::int32_t> lengths;
  std::vector<std::int32_t> src;  // [B, S], pad beyond each length
  std::shared_ptr<const graph::Layout> layout;  // of the encoder (empty for beam's expansion)
  graph::Frame frame;
  Tensor lengths_t;
  // What the decoder reads from the encoder, whole: decoder input name -> tensor (a view of the
  // encoder's memory is copied by record_encode).
  std::map<std::string, Tensor> exported;
  std::vector<std::pair<int, Tensor>> copies;  // encoder tensor -> its whole copy
  std::map<std::string, Tensor> roles;         // the encoder's outputs "memory", "keys", ...
  bool own_lengths = false;                    // lengths_t is not an encoder input
};

struct Seq2Seq::DecoderState::Impl {
  std::shared_ptr<Seq2Seq::Encoded::Impl> enc;
  DecodeOptions options;
  std::size_t B = 0;
  std::size_t t = 0;  // steps recorded so far
  std::shared_ptr<const graph::Layout> layout;
  graph::Frame frame;
  graph::Exec exec;
  struct State {
    std::size_t input = 0;   // decoder input index
    int next = -1;           // the tensor that replaces it
    int binding = -1;        // the next tensor's binding (written in place), or -1 (copied)
    // Kept in its concat's columns, where its next value is written (Program::state_in_place):
    // buf[0] only initialises it and, in beam search, takes its rows gathered from the parents.
    bool in_place = false;
    Tensor buf[2];
    std::size_t cur = 0;
  };
  std::vector<State> states;
  std::vector<Tensor> zeros;   // constant zero inputs
  Tensor token, finished;      // i32 [B] next input, u32 [B]
  // u32: the partials of the output projection fused with the greedy step (Argmax::record with
  // the projection); empty where the step cannot take the projection.
  Tensor greedy_scratch;
  Tensor logits, attention;    // whole copies when the graph's tensors are views
  bool initialized = false;
  bool input_ready = false;    // the token's embedding is already in place (the argmax wrote it)
  // The last step's results (incremental API): histories of one column.
  Tensor step_tokens, step_scores, step_logits, step_attention, step_nonfinite;
  std::map<std::string, Tensor> step_outputs;
  std::size_t last_step = 0;
  // DecodeOptions' logits processing, sampling and prefix; absent when they are all off.
  std::optional<LogitsProcessor> processor;
  LogitsProcessor::State processing;
};

struct Seq2Seq::Impl {
  Context* ctx;
  ModelFile file;
  ModelConfig cfg;
  OpOptions opts;         // every op but the dense layers: fp32 storage
  OpOptions linear_opts;  // dense layers: fp16 weights when the caller asks for fp16_storage
  Tokenizer src_tok, tgt_tok;
  std::size_t Vs = 0, Vt = 0;
  std::unique_ptr<graph::Program> encoder, decoder;
  int logits_t = -1, attention_t = -1;  // decoder tensors
  int token_input = -1;                 // decoder input index of 'token'
  int fused_embedding = -1;             // the embedding node the argmax feeds, or -1
  int fused_embedding_out = -1;         // its output tensor
  int projection_node = -1;             // the logits' linear node the greedy step may take in, or -1
  std::string logits_layer;             // what non-finite logits errors name
  Embedding embedding;
  Concat concat;
  Argmax argmax;

  Impl(Context& c, const ModelFile& mf, const OpOptions& o)
      : ctx(&c), file(mf), cfg(mf.config()), opts(fp32(o)), linear_opts(o), embedding(c, fp32(o)), concat(c, fp32(o)), argmax(c, fp32(o)) {
    if (cfg.task != ModelTask::seq2seq) {
      throw Error(ErrorCode::invalid_argument,
                  fmt::format("{}: model '{}' is a {}, not a seq2seq model (it has no encoder and decoder_step graphs)", kOp,
                              cfg.directory.empty() ? cfg.config_path : cfg.directory,
                              cfg.architecture == Architecture::graph ? to_string(cfg.task) : to_string(cfg.architecture)));
    }
    if (!cfg.src_vocab.empty()) src_tok = Tokenizer(cfg.src_vocab, cfg.tokenizer, cfg.special);
    if (!cfg.tgt_vocab.empty()) tgt_tok = Tokenizer(cfg.tgt_vocab, cfg.tokenizer, cfg.special);
    Vs = cfg.src_vocab_size;
    Vt = cfg.tgt_vocab_size;
    const graph::ModelGraphs& g = file.graphs();
    encoder = std::make_unique<graph::Program>(c, g.encoder, file, linear_opts, opts);
    // Recurrent state written in place where its node writes a whole tensor.
    std::vector<std::string> bound;
    for (const graph::Input& in : g.decoder_step.inputs) {
      if (!in.next.empty() && in.next != in.name && graph::Program::bindable_output(g.decoder_step, in.next) &&
          std::find(bound.begin(), bound.end(), in.next) == bound.end()) {
        bound.push_back(in.next);
      }
    }
    decoder = std::make_unique<graph::Program>(c, g.decoder_step, file, linear_opts, opts, bound);
    const graph::Graph& d = g.decoder_step;
    logits_t = d.find(d.output("logits"));
    logits_layer = graph::producer_of(d, logits_t);
    if (!d.output("attention").empty()) attention_t = d.find(d.output("attention"));
    for (std::size_t i = 0; i < d.inputs.size(); ++i)
      if (d.inputs[i].from == From::token) token_input = static_cast<int>(i);
    fused_embedding = decoder->sole_embedding_reader(d.inputs[static_cast<std::size_t>(token_input)].name);
    if (fused_embedding >= 0) fused_embedding_out = d.find(d.nodes[static_cast<std::size_t>(fused_embedding)].outputs.at("out"));
    projection_node = decoder->final_projection(logits_t);
  }

  const graph::Graph& dgraph() const { return decoder->graph(); }

  // A decode is recorded whole into one command buffer: keep it to a sane size.
  static void check_max_len(std::size_t max_len, const char* what) {
    if (max_len > kMaxDecodeSteps) {
      throw Error(ErrorCode::out_of_range,
                  fmt::format("{}::{}: max_len = {} is beyond the {} steps one decode may record", kOp, what, max_len,
                              kMaxDecodeSteps));
    }
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
    if (cfg.max_positions && S > cfg.max_positions) {
      throw Error(ErrorCode::invalid_argument,
                  fmt::format("{}::{}: a source of {} tokens exceeds the model's max_positions {}", kOp, what, S, cfg.max_positions));
    }
    auto e = std::make_shared<Encoded::Impl>();
    const std::size_t B = sources.size();
    e->B = B;
    e->S = S;
    e->src.assign(B * S, cfg.special.pad >= 0 ? cfg.special.pad : 0);
    for (std::size_t b = 0; b < B; ++b) {
      std::copy(sources[b].begin(), sources[b].end(), e->src.begin() + static_cast<std::ptrdiff_t>(b * S));
      e->lengths.push_back(static_cast<std::int32_t>(sources[b].size()));
    }
    e->layout = encoder->layout(B, S);
    e->frame = encoder->allocate(*e->layout, "Seq2Seq encoder");
    const graph::Graph& eg = encoder->graph();
    for (std::size_t i = 0; i < eg.inputs.size(); ++i) {
      const graph::Input& in = eg.inputs[i];
      const bool ids = in.from == From::tokens;
      e->frame.bound[i] = ctx->tensor(eval(in.shape, B, S), DType::i32, ids ? "Seq2Seq source ids" : "Seq2Seq source lengths");
      if (!ids) e->lengths_t = e->frame.bound[i];
    }
    if (!e->lengths_t.valid()) {
      e->lengths_t = ctx->tensor({B}, DType::i32, "Seq2Seq source lengths");
      e->own_lengths = true;
    }
    // The encoder tensors the decoder reads, whole.
    for (const graph::Input& in : dgraph().inputs) {
      if (in.from != From::encoder) continue;
      const int t = eg.find(in.source);
      Tensor w = encoder->whole(*e->layout, e->frame, t);
      if (!w.valid()) {
        w = ctx->tensor(e->layout->places[static_cast<std::size_t>(t)].shape, DType::f32, "Seq2Seq encoder " + in.source);
        e->copies.push_back({t, w});
      }
      e->exported[in.name] = w;
    }
    return e;
  }

  void record_encode(Sequence& seq, const Encoded::Impl& e) const {
    seq.begin_label("Seq2Seq encoder");
    record_encode_ops(seq, e);
    seq.end_label();
  }

  void record_encode_ops(Sequence& seq, const Encoded::Impl& e) const {
    const graph::Graph& eg = encoder->graph();
    for (std::size_t i = 0; i < eg.inputs.size(); ++i) {
      if (eg.inputs[i].from == From::tokens) seq.upload(e.frame.bound[i], e.src);
      else seq.upload(e.frame.bound[i], e.lengths);
    }
    if (e.own_lengths) seq.upload(e.lengths_t, e.lengths);
    graph::Exec exec;  // every node: any encoder tensor can be read afterwards
    exec.host_lengths = e.lengths;
    encoder->record(seq, *e.layout, e.frame, exec);
    for (const auto& [t, dst] : e.copies) encoder->copy(seq, *e.layout, e.frame, t, dst);
  }

  // --- decoder ----------------------------------------------------------------------------
  std::shared_ptr<DecoderState::Impl> start(const std::shared_ptr<Encoded::Impl>& e, const DecodeOptions& o) const {
    if (!e) throw Error(ErrorCode::invalid_argument, fmt::format("{}::start: an empty Encoded", kOp));
    auto st = std::make_shared<DecoderState::Impl>();
    st->enc = e;
    st->options = o;
    if (st->options.max_len == 0) st->options.max_len = cfg.max_decode_length;
    check_max_len(st->options.max_len, "start");
    if (cfg.special.eos < 0) st->options.stop_at_eos = false;  // no EOS: every row runs max_len
    const graph::Graph& d = dgraph();
    const std::size_t B = e->B;
    st->B = B;
    st->layout = decoder->layout(B, e->S);
    st->frame = decoder->allocate(*st->layout, "Seq2Seq decoder");
    st->token = ctx->tensor({B}, DType::i32, "Seq2Seq previous tokens");
    st->finished = ctx->tensor({B}, DType::u32, "Seq2Seq finished flags");
    // What this state computes: the logits, the state's next values, what was asked for.
    std::vector<int> wanted = {logits_t};
    if (attention_t >= 0 && o.return_attention) wanted.push_back(attention_t);
    for (const auto& name : o.outputs) {
      const int t = d.find(name);
      if (t < 0) {
        throw Error(ErrorCode::not_found, fmt::format("{}::start: the decoder_step graph has no tensor '{}'", kOp, name));
      }
      if (d.tensors[static_cast<std::size_t>(t)].dtype != DType::f32) {
        throw Error(ErrorCode::invalid_argument, fmt::format("{}::start: tensor '{}' holds integers", kOp, name));
      }
      decoder->require_computed(t, fmt::format("{}::start", kOp));
      wanted.push_back(t);
    }
    for (std::size_t i = 0; i < d.inputs.size(); ++i) {
      const graph::Input& in = d.inputs[i];
      const Shape shape = eval(in.shape, B, e->S);
      if (!in.next.empty() && in.next != in.name) {
        DecoderState::Impl::State s;
        s.input = i;
        s.next = d.find(in.next);
        s.binding = decoder->binding_of(s.next);
        s.in_place = decoder->state_in_place(i);
        s.buf[0] = ctx->tensor(shape, DType::f32, fmt::format("Seq2Seq state {} (ping)", in.name));
        s.buf[1] = ctx->tensor(shape, DType::f32, fmt::format("Seq2Seq state {} (pong)", in.name));
        st->states.push_back(s);
        wanted.push_back(s.next);
      } else if (in.from == From::zeros) {
        st->frame.bound[i] = ctx->tensor(shape, DType::f32, fmt::format("Seq2Seq zeros {}", in.name));
        st->zeros.push_back(st->frame.bound[i]);
      } else if (in.from == From::encoder) {
        st->frame.bound[i] = e->exported.at(in.name);
      } else if (in.from == From::lengths) {
        st->frame.bound[i] = e->lengths_t;
      } else {
        st->frame.bound[i] = st->token;
      }
    }
    st->exec = decoder->live(wanted);
    st->exec.host_lengths = e->lengths;
    const LogitsProcessing lp = processing_of(st->options, B);
    if (lp.active()) {
      st->processor.emplace(*ctx, Vt, lp, opts);
      st->processing = st->processor->make_state(B, st->options.max_len);
    }
    // The token choice reads whole logits / attention tensors.
    if (!decoder->whole(*st->layout, st->frame, logits_t).valid()) {
      st->logits = ctx->tensor({B, Vt}, DType::f32, "Seq2Seq logits");
    }
    if (attention_t >= 0 && !decoder->whole(*st->layout, st->frame, attention_t).valid()) {
      st->attention = ctx->tensor({B, e->S}, DType::f32, "Seq2Seq attention");
    }
    // The output projection and the greedy step in one dispatch where both allow it.
    if (projection_node >= 0 && !st->logits.valid() && !st->processor &&
        st->layout->whole_copies[static_cast<std::size_t>(projection_node)].empty()) {
      if (const std::size_t words = argmax.fused_scratch_words(decoder->projection(projection_node), B)) {
        st->greedy_scratch = ctx->tensor({words}, DType::u32, "Seq2Seq greedy step partials");
      }
    }
    return st;
  }

  // DecodeOptions -> the processor's settings (checked by LogitsProcessor).
  // The rules DecodeOptions and BeamOptions share.
  template <class Options>
  LogitsProcessing rules_of(const Options& o) const {
    LogitsProcessing p;
    p.repetition_penalty = o.repetition_penalty;
    p.no_repeat_ngram_size = o.no_repeat_ngram_size;
    p.min_length = o.min_length;
    p.eos = cfg.special.eos;
    if (o.disable_unk) {
      if (cfg.special.unk < 0) {
        throw Error(ErrorCode::invalid_argument, fmt::format("{}: disable_unk, but the model has no unk token", kOp));
      }
      p.unk = cfg.special.unk;
    }
    p.suppressed = o.suppress_tokens;
    p.suppressed_sequences = o.suppress_sequences;
    return p;
  }

  LogitsProcessing processing_of(const DecodeOptions& o, std::size_t B) const {
    LogitsProcessing p = rules_of(o);
    p.sample = o.sampling_topk != 1;
    if (p.sample) {
      p.temperature = o.sampling_temperature;
      p.top_k = o.sampling_topk;
      p.top_p = o.sampling_topp;
      p.seed = o.seed;
    }
    check_prefix(o.target_prefix, B, o.max_len);
    p.prefix = o.target_prefix;
    return p;
  }

  // Target prefixes (DecodeOptions', BeamOptions'): none, or one per source row, each at most
  // max_len tokens of the target vocabulary.
  void check_prefix(const std::vector<std::vector<std::int32_t>>& prefix, std::size_t B, std::size_t max_len) const {
    if (prefix.empty()) return;
    if (prefix.size() != B) {
      throw Error(ErrorCode::invalid_argument,
                  fmt::format("{}: {} target prefixes for {} source rows (one per row, empty for none)", kOp, prefix.size(), B));
    }
    for (std::size_t b = 0; b < B; ++b) {
      if (prefix[b].size() > max_len) {
        throw Error(ErrorCode::out_of_range, fmt::format("{}: the target prefix of row {} has {} tokens, longer than max_len = {}",
                                                         kOp, b, prefix[b].size(), max_len));
      }
      check_token_ids(prefix[b], Vt, "Seq2Seq: target prefix", b);
    }
  }

  struct History {
    Tensor tokens, scores, logits, attention;  // [B, capacity(, X)]
    std::map<std::string, Tensor> outputs;     // [capacity, shape...]
    std::size_t column = 0;
    Tensor nonfinite;    // u32 [B]: the first step + 1 whose logits were not finite (Argmax)
    bool select = true;  // run the argmax (greedy); beam search selects on the GPU otherwise
    // Inside the gate: close it once every row has finished (GreedyStep::close_gate); the step
    // says whether its own dispatch did, else the caller records close_gate_when_all.
    bool close_gate = false;
    bool defer_projection = false;  // the caller records the logits' projection (BeamStep takes it)
  };

  // The state at BOS: recorded before the first step.
  void record_init(Sequence& seq, DecoderState::Impl& st) const {
    if (st.initialized) return;
    const graph::Graph& d = dgraph();
    for (auto& s : st.states) {
      const graph::Input& in = d.inputs[s.input];
      s.cur = 0;
      if (in.from == From::encoder) seq.copy(st.enc->exported.at(in.name), s.buf[0]);
      else seq.fill(s.buf[0], 0);
      if (s.in_place) concat.record(seq, {MatrixView::of(s.buf[0])}, state_view(st, s));
    }
    for (const Tensor& z : st.zeros) seq.fill(z, 0);
    if (st.greedy_scratch.valid()) seq.fill(st.greedy_scratch, 0);  // each fused step leaves it 0
    seq.fill(st.token, static_cast<std::uint32_t>(cfg.special.bos));
    seq.fill(st.finished, 0);
    if (st.processor) st.processor->record_reset(seq, st.processing);
    st.initialized = true;
    st.input_ready = false;
  }

  Tensor logits_of(const DecoderState::Impl& st) const {
    return st.logits.valid() ? st.logits : decoder->whole(*st.layout, st.frame, logits_t);
  }
  Tensor attention_of(const DecoderState::Impl& st) const {
    if (attention_t < 0) return {};
    return st.attention.valid() ? st.attention : decoder->whole(*st.layout, st.frame, attention_t);
  }

  // One run of the decoder_step graph, then the state's swap.
  void record_graph(Sequence& seq, DecoderState::Impl& st) const {
    record_init(seq, st);
    for (auto& s : st.states) {
      if (s.in_place) continue;
      st.frame.bound[s.input] = s.buf[s.cur];
      if (s.binding >= 0) st.frame.bound[static_cast<std::size_t>(s.binding)] = s.buf[s.cur ^ 1];
    }
    st.exec.skip_node = st.input_ready ? fused_embedding : -1;
    decoder->record(seq, *st.layout, st.frame, st.exec);
    for (auto& s : st.states) {
      if (s.binding < 0 && !s.in_place) decoder->copy(seq, *st.layout, st.frame, s.next, s.buf[s.cur ^ 1]);
    }
    if (st.logits.valid()) decoder->copy(seq, *st.layout, st.frame, logits_t, st.logits);
    if (st.attention.valid() && st.exec.live_tensors[static_cast<std::size_t>(attention_t)]) {
      decoder->copy(seq, *st.layout, st.frame, attention_t, st.attention);
    }
  }

  // A state kept in its concat's columns (State::in_place).
  MatrixView state_view(const DecoderState::Impl& st, const DecoderState::Impl::State& s) const {
    return decoder->matrix(*st.layout, st.frame, dgraph().find(dgraph().inputs[s.input].name));
  }

  void finish_step(DecoderState::Impl& st) const {
    for (auto& s : st.states) s.cur ^= 1;
    ++st.t;
    st.input_ready = false;
  }

  void record_outputs(Sequence& seq, const DecoderState::Impl& st, const History& hist) const {
    for (const auto& [name, dst] : hist.outputs) {
      const int t = dgraph().find(name);
      const graph::Place& p = st.layout->places[static_cast<std::size_t>(t)];
      const std::size_t n = element_count(p.shape);
      concat.record(seq, {decoder->matrix(*st.layout, st.frame, t)}, MatrixView{dst, p.rows(), p.cols(), hist.column * n, p.cols()});
    }
  }

  // Returns whether the step closed the gate itself (hist.close_gate, where the argmax fused).
  bool record_step(Sequence& seq, DecoderState::Impl& st, const History& hist) const {
    seq.begin_label(fmt::format("Seq2Seq decoder step {}", st.t));
    const bool closed = record_step_ops(seq, st, hist);
    seq.end_label();
    return closed;
  }

  bool record_step_ops(Sequence& seq, DecoderState::Impl& st, const History& hist) const {
    // The logits' projection joins the greedy step's dispatch: unless something reads the logits
    // between them (a logits history or output, the processor) or beam search selects.
    const bool take_projection = st.greedy_scratch.valid() && hist.select && !hist.logits.valid() &&
                                 !hist.outputs.count(dgraph().tensors[static_cast<std::size_t>(logits_t)].name);
    st.exec.defer_node = take_projection || hist.defer_projection ? projection_node : -1;
    record_graph(seq, st);
    st.exec.defer_node = -1;
    record_outputs(seq, st, hist);
    // Logits processing (and sampling, prefixes): in place, between the logits and the choice.
    if (st.processor) st.processor->record(seq, st.processing, logits_of(st), st.token, st.t);
    if (!hist.select) {
      finish_step(st);
      return false;
    }
    GreedyStep g;
    g.next_tokens = st.token;
    if (st.options.stop_at_eos) g.finished = st.finished;
    g.eos = cfg.special.eos;
    g.pad = cfg.special.pad >= 0 ? cfg.special.pad : 0;
    g.step = hist.column;
    g.tokens = hist.tokens;
    g.scores = hist.scores;
    g.logits = hist.logits;
    g.nonfinite = hist.nonfinite;
    g.chosen = st.processing.chosen;
    if (hist.attention.valid()) {
      g.weights = attention_of(st);
      g.attention = hist.attention;
    }
    const bool fuse = fused_embedding >= 0;
    if (fuse) {
      // The argmax also writes the chosen token's embedding into the next step's input.
      g.embedding = MatrixView::of(decoder->embedding_table(fused_embedding));
      g.embedding_out = decoder->matrix(*st.layout, st.frame, fused_embedding_out);
    }
    g.close_gate = hist.close_gate && take_projection && g.finished.valid();
    bool closed = false;
    if (take_projection) {
      closed = argmax.record(seq, decoder->projection(projection_node), decoder->input_matrix(*st.layout, st.frame, projection_node, "x"),
                             logits_of(st), g, st.greedy_scratch) && g.close_gate;
    } else {
      argmax.record(seq, logits_of(st), g);
    }
    finish_step(st);
    st.input_ready = fuse;
    return closed;
  }

  // Histories of requested decoder tensors: [capacity, shape...].
  std::map<std::string, Tensor> output_histories(const DecoderState::Impl& st, std::size_t capacity, const char* label) const {
    std::map<std::string, Tensor> out;
    for (const auto& name : st.options.outputs) {
      Shape s = st.layout->places[static_cast<std::size_t>(dgraph().find(name))].shape;
      s.insert(s.begin(), capacity);
      out[name] = ctx->tensor(s, DType::f32, fmt::format("{} {}", label, name));
    }
    return out;
  }

  // A tensor of the encoder, for B rows, expanded to K rows per source (beam search): along
  // its batch axis, every row repeated K times.
  Tensor expand(Sequence& seq, const Tensor& from, const graph::SymShape& shape, std::size_t B, std::size_t S, std::size_t K,
                const Tensor& rows, const std::string& name) const {
    std::size_t axis = shape.size();
    for (std::size_t i = 0; i < shape.size(); ++i) {
      if (shape[i].sym != graph::Sym::batch) continue;
      if (axis != shape.size()) throw Error(ErrorCode::invalid_argument, fmt::format("{}::beam: encoder tensor '{}' has two batch axes", kOp, name));
      axis = i;
    }
    if (axis == shape.size()) return from;  // the same for every row
    Shape out = graph::eval(shape, B, S);
    out[axis] = B * K;
    const Tensor to = ctx->tensor(out, from.dtype(), "Seq2Seq beam " + name);
    std::size_t P = 1, Q = 1;
    for (std::size_t i = 0; i < axis; ++i) P *= out[i];
    for (std::size_t i = axis + 1; i < out.size(); ++i) Q *= out[i];
    const std::size_t R = B * K;
    for (std::size_t p = 0; p < P; ++p) {
      embedding.record(seq, MatrixView{from, B, Q, p * B * Q, Q}, rows, MatrixView{to, R, Q, p * R * Q, Q});
    }
    return to;
  }

  HostTensor read_decoder(const Sequence& seq, const Tensor& hist, std::size_t steps, std::size_t capacity) const {
    HostTensor h;
    h.shape = hist.shape();
    const std::size_t per = element_count(h.shape) / capacity;
    auto all = seq.read<float>(hist);
    all.resize(steps * per);
    h.shape[0] = steps;
    h.values = std::move(all);
    return h;
  }
};

// --- public API ----------------------------------------------------------------------------

namespace {
Tensor role_tensor(const Seq2Seq::Impl& m, const std::shared_ptr<Seq2Seq::Encoded::Impl>& e, const char* role) {
  if (!e || !e->layout) return {};
  const graph::Graph& g = m.encoder->graph();
  const std::string name = g.output(role);
  if (name.empty()) return {};
  const int t = g.find(name);
  for (const auto& [tt, copy] : e->copies)
    if (tt == t) return copy;
  return m.encoder->whole(*e->layout, e->frame, t);
}
}  // namespace

std::size_t Seq2Seq::Encoded::batch() const { return impl ? impl->B : 0; }
std::size_t Seq2Seq::Encoded::source_length() const { return impl ? impl->S : 0; }
const std::vector<std::int32_t>& Seq2Seq::Encoded::lengths() const {
  static const std::vector<std::int32_t> none;
  return impl ? impl->lengths : none;
}
std::size_t Seq2Seq::DecoderState::steps_taken() const { return impl ? impl->t : 0; }

std::vector<std::int32_t> DecodeResult::row(std::size_t b) const {
  if (b >= batch) throw Error(ErrorCode::out_of_range, fmt::format("DecodeResult::row({}): batch is {}", b, batch));
  const auto first = tokens.begin() + static_cast<std::ptrdiff_t>(b * steps);
  return {first, first + lengths[b]};
}

Seq2Seq Seq2Seq::load(Context& ctx, const std::string& model_dir, const OpOptions& options) {
  return Seq2Seq(ctx, ModelFile::load(model_dir), options);
}

Seq2Seq Seq2Seq::load_from_memory(Context& ctx, std::string_view config_json, std::span<const std::byte> weights,
                                  const OpOptions& options) {
  const ModelFile model = ModelFile::load_from_memory(config_json, weights);
  return io_detail::only_vkrnn_errors("<memory>", [&] { return Seq2Seq(ctx, model, options); });
}

Seq2Seq::Seq2Seq(Context& ctx, const ModelFile& model, const OpOptions& options)
    : impl_(model_detail::build_model<Impl>(ctx, model, options)) {}
Seq2Seq::Seq2Seq(Seq2Seq&&) noexcept = default;
Seq2Seq& Seq2Seq::operator=(Seq2Seq&&) noexcept = default;
Seq2Seq::~Seq2Seq() = default;

// The encoder's named outputs, resolved at prepare() (Encoded holds no reference to the model).
namespace {
Tensor role(const std::shared_ptr<Seq2Seq::Encoded::Impl>& e, const char* name) {
  if (!e) return {};
  auto it = e->roles.find(name);
  return it == e->roles.end() ? Tensor{} : it->second;
}
}  // namespace
Tensor Seq2Seq::Encoded::encoder_outputs() const { return role(impl, "memory"); }
Tensor Seq2Seq::Encoded::keys() const { return role(impl, "keys"); }
Tensor Seq2Seq::Encoded::initial_state() const { return role(impl, "initial_state"); }
Tensor Seq2Seq::Encoded::initial_cell() const { return role(impl, "initial_cell"); }

const ModelConfig& Seq2Seq::config() const { return impl_->cfg; }
const Tokenizer& Seq2Seq::source_tokenizer() const { return impl_->src_tok; }
const Tokenizer& Seq2Seq::target_tokenizer() const { return impl_->tgt_tok; }

std::vector<std::int32_t> Seq2Seq::encode_text(std::string_view text) const {
  if (impl_->cfg.src_vocab.empty()) {
    throw Error(ErrorCode::invalid_argument, fmt::format("{}::encode_text: the model has no source vocabulary (use token ids)", kOp));
  }
  return impl_->src_tok.encode(text, impl_->cfg.tokenizer.src_append_eos);
}

std::string Seq2Seq::decode_text(std::span<const std::int32_t> ids) const {
  if (impl_->cfg.tgt_vocab.empty()) {
    throw Error(ErrorCode::invalid_argument, fmt::format("{}::decode_text: the model has no target vocabulary (use token ids)", kOp));
  }
  return impl_->tgt_tok.decode(ids);
}

namespace {
// The encoder's named outputs, for Encoded's accessors.
void export_roles(const Seq2Seq::Impl& m, const std::shared_ptr<Seq2Seq::Encoded::Impl>& e) {
  for (const char* role : {"memory", "keys", "initial_state", "initial_cell"}) {
    const Tensor t = role_tensor(m, e, role);
    if (t.valid()) e->roles[role] = t;
  }
}
}  // namespace

Seq2Seq::Encoded Seq2Seq::prepare(const std::vector<std::vector<std::int32_t>>& sources) const {
  Encoded e;
  e.impl = impl_->prepare(sources, "prepare");
  export_roles(*impl_, e.impl);
  return e;
}

void Seq2Seq::record_encode(Sequence& seq, const Encoded& encoded) const {
  if (!encoded.impl) throw Error(ErrorCode::invalid_argument, fmt::format("{}::record_encode: an empty Encoded", kOp));
  impl_->record_encode(seq, *encoded.impl);
}

Seq2Seq::Encoded Seq2Seq::encode(const std::vector<std::vector<std::int32_t>>& sources) const {
  Encoded e;
  e.impl = impl_->prepare(sources, "encode");
  export_roles(*impl_, e.impl);
  Sequence seq = impl_->ctx->sequence({.label = "Seq2Seq::encode"});
  impl_->record_encode(seq, *e.impl);
  seq.eval();
  return e;
}

HostTensor Seq2Seq::read_encoder(const Encoded& encoded, const std::string& tensor) const {
  const auto& e = encoded.impl;
  if (!e || !e->layout) throw Error(ErrorCode::invalid_argument, fmt::format("{}::read_encoder: an empty Encoded", kOp));
  const graph::Graph& g = impl_->encoder->graph();
  const int t = g.find(tensor);
  if (t < 0) throw Error(ErrorCode::not_found, fmt::format("{}::read_encoder: the encoder graph has no tensor '{}'", kOp, tensor));
  // Through a one-download sequence: the tensor's base buffer, then its place's elements.
  Sequence seq = impl_->ctx->sequence({.label = "Seq2Seq::read_encoder"});
  const graph::Place& p = e->layout->places[static_cast<std::size_t>(t)];
  const Tensor& base = p.bound ? e->frame.bound.at(p.index) : e->frame.owned.at(p.index);
  seq.download(base);
  seq.eval();
  return {p.shape, impl_->encoder->read(seq, *e->layout, e->frame, t)};
}

Seq2Seq::DecoderState Seq2Seq::start(const Encoded& encoded, const DecodeOptions& options) const {
  DecoderState s;
  s.impl = impl_->start(encoded.impl, options);
  return s;
}

void Seq2Seq::record_step(Sequence& seq, DecoderState& state, std::span<const std::int32_t> forced_inputs) const {
  if (!state.impl) throw Error(ErrorCode::invalid_argument, fmt::format("{}::record_step: an empty DecoderState", kOp));
  auto& st = *state.impl;
  const std::size_t B = st.B;
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
    if (st.options.return_attention && impl_->attention_t >= 0) {
      st.step_attention = c.tensor({B, 1, st.enc->S}, DType::f32, "Seq2Seq step attention");
    }
    st.step_outputs = impl_->output_histories(st, 1, "Seq2Seq step");
    st.step_nonfinite = c.tensor({B}, DType::u32, "Seq2Seq step non-finite flags");
  }
  Impl::History h{st.step_tokens, st.step_scores, st.step_logits, st.step_attention, st.step_outputs, 0, st.step_nonfinite};
  seq.fill(st.step_nonfinite, 0);
  if (!forced_inputs.empty()) {
    impl_->record_init(seq, st);  // fills the inputs with BOS: replace them after
    seq.upload(st.token, std::vector<std::int32_t>(forced_inputs.begin(), forced_inputs.end()));
    st.input_ready = false;
  }
  st.last_step = st.t;
  impl_->record_step(seq, st, h);
  seq.download(st.step_tokens).download(st.step_scores).download(st.step_nonfinite);
  if (st.options.stop_at_eos) seq.download(st.finished);
  if (st.step_logits.valid()) seq.download(st.step_logits);
  if (st.step_attention.valid()) seq.download(st.step_attention);
  for (const auto& [name, t] : st.step_outputs) seq.download(t);
}

StepResult Seq2Seq::read_step(const Sequence& seq, const DecoderState& state) const {
  if (!state.impl || !state.impl->step_tokens.valid()) {
    throw Error(ErrorCode::state, fmt::format("{}::read_step: no step was recorded for this state", kOp));
  }
  const auto& st = *state.impl;
  check_finite_logits(seq.read<std::uint32_t>(st.step_nonfinite), impl_->logits_layer, "read_step", 1, st.last_step);
  StepResult r;
  r.step = st.last_step;
  r.tokens = seq.read<std::int32_t>(st.step_tokens);
  r.scores = seq.read<float>(st.step_scores);
  r.finished.assign(st.B, 0);
  if (st.options.stop_at_eos) {
    const auto f = seq.read<std::uint32_t>(st.finished);
    for (std::size_t b = 0; b < f.size(); ++b) r.finished[b] = f[b] != 0;
    r.all_finished = std::all_of(r.finished.begin(), r.finished.end(), [](std::uint8_t x) { return x != 0; });
  }
  if (st.step_logits.valid()) r.logits = seq.read<float>(st.step_logits);
  if (st.step_attention.valid()) r.attention = seq.read<float>(st.step_attention);
  for (const auto& [name, t] : st.step_outputs) r.outputs[name] = impl_->read_decoder(seq, t, 1, 1);
  return r;
}

StepResult Seq2Seq::step(DecoderState& state, std::span<const std::int32_t> forced_inputs) const {
  Sequence seq = impl_->ctx->sequence({.label = "Seq2Seq::step"});
  record_step(seq, state, forced_inputs);
  seq.eval();
  return read_step(seq, state);
}

namespace {

// SequenceStats of several sequences together.
void add_stats(SequenceStats& to, const SequenceStats& s) {
  to.dispatches += s.dispatches;
  to.barriers += s.barriers;
  to.copies += s.copies;
  to.submissions += s.submissions;
  to.gated_dispatches += s.gated_dispatches;
  to.recordings += s.recordings;
  to.debug_labels += s.debug_labels;
}

}  // namespace

namespace {

// A whole decode recorded into a caller's sequence takes its one gate region: refused before
// anything is recorded when the sequence already has one.
void require_free_gate(const Sequence& seq, const char* call) {
  if (seq.has_gate()) {
    throw Error(ErrorCode::state, fmt::format("{}::{}: the sequence already has a gate region, and the decode needs one (one gate "
                                              "region per recording: record it into a sequence of its own)",
                                              kOp, call));
  }
}

// A greedy decode's histories, their initial values and their downloads, and the result read
// back from them (greedy(), its streaming form and record_greedy()).
struct GreedyRun {
  const Seq2Seq::Impl& m;
  std::shared_ptr<Seq2Seq::Encoded::Impl> e;
  std::shared_ptr<Seq2Seq::DecoderState::Impl> st;
  std::size_t B, S, T, V;
  bool early_stop;
  Seq2Seq::Impl::History h;

  GreedyRun(const Seq2Seq::Impl& model, std::shared_ptr<Seq2Seq::Encoded::Impl> encoded, const DecodeOptions& options)
      : m(model), e(std::move(encoded)), st(m.start(e, options)), B(e->B), S(e->S), T(st->options.max_len), V(m.Vt),
        early_stop(st->options.stop_at_eos) {
    Context& c = *m.ctx;
    h.tokens = c.tensor({B, T}, DType::i32, "Seq2Seq greedy tokens");
    h.scores = c.tensor({B, T}, DType::f32, "Seq2Seq greedy scores");
    if (options.return_logits) h.logits = c.tensor({B, T, V}, DType::f32, "Seq2Seq greedy logits");
    if (options.return_attention && m.attention_t >= 0) h.attention = c.tensor({B, T, S}, DType::f32, "Seq2Seq greedy attention");
    h.outputs = m.output_histories(*st, T, "Seq2Seq greedy");
    h.nonfinite = c.tensor({B}, DType::u32, "Seq2Seq greedy non-finite flags");
  }

  // The encoder and the histories' initial values.
  void record_start(Sequence& seq) const {
    m.record_encode(seq, *e);
    record_histories(seq);
  }

  // Every step in one recording, after the encoder (greedy() in one piece, record_greedy()).
  void record_whole(Sequence& seq) {
    record_histories(seq);
    record_steps(seq, 0, T);
    record_downloads(seq);
  }

  void record_histories(Sequence& seq) const {
    seq.fill(h.nonfinite, 0);
    if (early_stop) {
      // Once every row has finished, the gate turns the remaining steps' dispatches into empty
      // ones: the columns they would have written keep these values (what finished rows emit).
      seq.fill(h.tokens, static_cast<std::uint32_t>(m.cfg.special.pad >= 0 ? m.cfg.special.pad : 0)).fill(h.scores, 0);
      if (h.logits.valid()) seq.fill(h.logits, 0);
      if (h.attention.valid()) seq.fill(h.attention, 0);
      for (const auto& [name, t] : h.outputs) seq.fill(t, 0);
    }
  }

  // Steps [first, first + n) inside the early-stop gate (entered closed when every row had
  // finished in an earlier submission).
  void record_steps(Sequence& seq, std::size_t first, std::size_t n) {
    if (early_stop) {
      seq.begin_gate();
      if (first > 0) seq.close_gate_when_all(st->finished);
    }
    for (std::size_t t = first; t < first + n; ++t) {
      h.column = t;
      h.close_gate = early_stop && t + 1 < first + n;
      if (!m.record_step(seq, *st, h) && h.close_gate) seq.close_gate_when_all(st->finished);
    }
    if (early_stop) seq.end_gate();
  }

  void record_downloads(Sequence& seq) const {
    seq.download(h.tokens).download(h.scores).download(h.nonfinite);
    if (h.logits.valid()) seq.download(h.logits);
    if (h.attention.valid()) seq.download(h.attention);
    for (const auto& [name, t] : h.outputs) seq.download(t);
  }

  // The result of the first `done` steps (rows without EOS among them have `done` tokens).
  DecodeResult result(const Sequence& seq, std::size_t done, const char* call = "greedy") const {
    check_finite_logits(seq.read<std::uint32_t>(h.nonfinite), m.logits_layer, call, 1, 0);
    const auto tokens = seq.read<std::int32_t>(h.tokens);
    const auto scores = seq.read<float>(h.scores);
    DecodeResult r;
    r.batch = B;
    r.source_length = S;
    r.vocab = V;
    r.lengths.assign(B, static_cast<std::int32_t>(done));
    if (early_stop) {
      for (std::size_t b = 0; b < B; ++b) {
        for (std::size_t t = 0; t < done; ++t) {
          if (tokens[b * T + t] == m.cfg.special.eos) {
            r.lengths[b] = static_cast<std::int32_t>(t + 1);
            break;
          }
        }
      }
      r.steps = static_cast<std::size_t>(*std::max_element(r.lengths.begin(), r.lengths.end()));
    } else {
      r.steps = done;
    }
    r.steps_run = r.steps;
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
    for (const auto& [name, t] : h.outputs) r.outputs[name] = m.read_decoder(seq, t, r.steps, T);
    return r;
  }

  // Streaming (DecodeOptions::on_step): submissions of `chunk` steps, kStreamDepth in flight;
  // the oldest one's steps go to the callback once it is done, while the GPU runs the next.
  DecodeResult stream(const DecodeOptions& options) {
    constexpr std::size_t kStreamDepth = 2;
    const std::size_t chunk = std::max<std::size_t>(options.stream_steps, 1);
    Context& c = *m.ctx;
    struct InFlight {
      Sequence seq;
      std::size_t first, n;
    };
    std::deque<InFlight> flight;
    auto drain = [&] {
      for (InFlight& f : flight) f.seq.wait();
    };
    SequenceStats stats;
    std::size_t recorded = 0, delivered = 0;
    std::vector<std::uint8_t> finished(B, 0);
    bool stop = false;
    try {
      while (!stop && (recorded < T || !flight.empty())) {
        if (recorded < T && flight.size() < kStreamDepth) {
          const std::size_t n = std::min(chunk, T - recorded);
          Sequence seq = c.sequence({.label = fmt::format("Seq2Seq::greedy steps {}..{}", recorded, recorded + n - 1)});
          if (recorded == 0) record_start(seq);
          record_steps(seq, recorded, n);
          seq.download(h.tokens).download(h.scores).download(h.nonfinite);
          seq.submit();
          flight.push_back({std::move(seq), recorded, n});
          recorded += n;
          continue;
        }
        InFlight& f = flight.front();
        f.seq.wait();
        add_stats(stats, f.seq.stats());
        check_finite_logits(f.seq.read<std::uint32_t>(h.nonfinite), m.logits_layer, "greedy", 1, 0);
        const auto tokens = f.seq.read<std::int32_t>(h.tokens);
        const auto scores = f.seq.read<float>(h.scores);
        for (std::size_t t = f.first; t < f.first + f.n && !stop; ++t) {
          StepResult step;
          step.step = t;
          step.tokens.resize(B);
          step.scores.resize(B);
          step.all_finished = early_stop;
          for (std::size_t b = 0; b < B; ++b) {
            step.tokens[b] = tokens[b * T + t];
            step.scores[b] = scores[b * T + t];
            if (early_stop && !finished[b] && step.tokens[b] == m.cfg.special.eos) finished[b] = 1;
            step.all_finished = step.all_finished && finished[b];
          }
          step.finished = finished;
          delivered = t + 1;
          stop = !options.on_step(step) || step.all_finished;
        }
        flight.pop_front();
      }
    } catch (...) {
      drain();
      throw;
    }
    drain();
    for (const InFlight& f : flight) add_stats(stats, f.seq.stats());
    flight.clear();
    Sequence seq = c.sequence({.label = "Seq2Seq::greedy results"});
    record_downloads(seq);
    seq.eval();
    add_stats(stats, seq.stats());
    DecodeResult r = result(seq, delivered);
    r.stats = stats;
    return r;
  }

  // The whole decode's result once `seq`, which recorded every step, has finished.
  DecodeResult whole_result(const Sequence& seq, const char* call) const {
    DecodeResult r = result(seq, T, call);
    if (early_stop) r.steps_run = std::min<std::size_t>(T, 1 + seq.open_gate_checks());
    r.stats = seq.stats();
    return r;
  }
};

}  // namespace

struct Seq2Seq::GreedyDecode::Impl {
  GreedyRun run;
};

std::size_t Seq2Seq::GreedyDecode::batch() const { return impl ? impl->run.B : 0; }
std::size_t Seq2Seq::GreedyDecode::max_len() const { return impl ? impl->run.T : 0; }

DecodeResult Seq2Seq::greedy(const std::vector<std::vector<std::int32_t>>& sources, const DecodeOptions& options) const {
  GreedyRun run(*impl_, impl_->prepare(sources, "greedy"), options);
  if (options.on_step) return run.stream(options);
  Sequence seq = impl_->ctx->sequence({.label = "Seq2Seq::greedy"});
  impl_->record_encode(seq, *run.e);
  run.record_whole(seq);
  seq.eval();
  return run.whole_result(seq, "greedy");
}

Seq2Seq::GreedyDecode Seq2Seq::record_greedy(Sequence& seq, const Encoded& encoded, const DecodeOptions& options) const {
  if (!encoded.impl) throw Error(ErrorCode::invalid_argument, fmt::format("{}::record_greedy: an empty Encoded", kOp));
  if (options.on_step) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{}::record_greedy: on_step streams through submissions of its own; use greedy()", kOp));
  }
  GreedyDecode d;
  d.impl = std::make_shared<GreedyDecode::Impl>(GreedyDecode::Impl{GreedyRun(*impl_, encoded.impl, options)});
  if (d.impl->run.early_stop) require_free_gate(seq, "record_greedy");
  seq.begin_label("Seq2Seq::record_greedy");
  d.impl->run.record_whole(seq);
  seq.end_label();
  return d;
}

DecodeResult Seq2Seq::read_greedy(const Sequence& seq, const GreedyDecode& decode) const {
  return model_detail::read_recorded(impl_.get(), decode, kOp, "read_greedy", "GreedyDecode",
                       [&](const GreedyRun& run) { return run.whole_result(seq, "read_greedy"); });
}

namespace {

// A beam search over one Encoded batch: its checks, its buffers, its recording (expansion to
// K rows per source, max_len steps inside the gate, the downloads) and the hypotheses read back
// (beam() and record_beam()).
struct BeamRun {
  const Seq2Seq::Impl& m;
  std::shared_ptr<Seq2Seq::Encoded::Impl> e;
  BeamOptions o;
  std::size_t K, T, B, S, R, V, kc, stop;
  double alpha, beta;
  bool attention;
  // Made by record().
  std::shared_ptr<Seq2Seq::DecoderState::Impl> st;
  std::optional<BeamSearch> search;
  BeamSearch::State state;
  Tensor nonfinite, hist_logits, hist_attention;
  std::vector<Tensor> step_v, step_i;  // every step's candidates, for per-token scores

  BeamRun(const Seq2Seq::Impl& model, std::shared_ptr<Seq2Seq::Encoded::Impl> encoded, const BeamOptions& options,
          const char* call)
      : m(model), e(std::move(encoded)), o(options), K(o.beam_width ? o.beam_width : m.cfg.beam_width),
        T(o.max_len ? o.max_len : m.cfg.max_decode_length), B(e->B), S(e->S), R(B * K), V(m.Vt), kc(std::min(K + 1, V)),
        stop(0), alpha(o.length_alpha >= 0.0 ? o.length_alpha : m.cfg.length_alpha), beta(o.coverage_penalty),
        attention(o.return_attention || beta != 0.0) {
    static_assert(BeamSearch::max_beam + 1 <= TopK::max_k, "K + 1 candidates per hypothesis");
    if (K == 0 || K > BeamSearch::max_beam) {
      throw Error(ErrorCode::invalid_argument,
                  fmt::format("{}::{}: beam_width = {} is outside [1, {}]", kOp, call, K, BeamSearch::max_beam));
    }
    Seq2Seq::Impl::check_max_len(T, call);
    if (!(o.patience > 0.0) || !std::isfinite(o.patience)) {
      throw Error(ErrorCode::invalid_argument, fmt::format("{}::{}: patience = {} must be finite and > 0", kOp, call, o.patience));
    }
    const double finished_to_stop = std::max(1.0, std::round(double(K) * o.patience));
    if (finished_to_stop > double(BeamSearch::max_finished_to_stop)) {
      throw Error(ErrorCode::invalid_argument, fmt::format("{}::{}: patience = {} asks for {} finished hypotheses, beyond {}", kOp,
                                                           call, o.patience, finished_to_stop, BeamSearch::max_finished_to_stop));
    }
    stop = static_cast<std::size_t>(finished_to_stop);
    if (!std::isfinite(beta)) {
      throw Error(ErrorCode::invalid_argument, fmt::format("{}::{}: coverage_penalty = {} is not finite", kOp, call, beta));
    }
    if (beta != 0.0 && m.attention_t < 0) {
      throw Error(ErrorCode::invalid_argument,
                  fmt::format("{}::{}: coverage_penalty needs the decoder's attention, and the model has no 'attention' output", kOp,
                              call));
    }
    m.check_prefix(o.target_prefix, B, T);
  }

  // The state's batch axis in its input's shape (the shape's size: none, one state for every row).
  std::size_t batch_axis(const Seq2Seq::DecoderState::Impl::State& s) const {
    const graph::SymShape& sym = m.dgraph().inputs[s.input].shape;
    std::size_t axis = 0;
    while (axis < sym.size() && sym[axis].sym != graph::Sym::batch) ++axis;
    return axis;
  }

  // What follows the hypotheses from one step to the next: every state with a batch axis (read
  // from its current buffer into the other, or out of its columns and back), the embedding of
  // each row's next token where the decoder has one lookup of it (only BeamStep writes it: else
  // the decoder's embedding node does), then the logits processor's histories (into the spare
  // set). BeamStep takes the first few (up to BeamStep::max_gathers, as many as fit).
  std::vector<BeamStep::Gather> state_gathers(const Seq2Seq::DecoderState::Impl& st, const LogitsProcessor::State& processing,
                                              const LogitsProcessor::State& spare) const {
    using Kind = BeamStep::Kind;
    std::vector<BeamStep::Gather> out;
    for (const auto& s : st.states) {
      const std::size_t axis = batch_axis(s);
      if (axis == m.dgraph().inputs[s.input].shape.size()) continue;
      const Shape& shape = s.buf[0].shape();
      if (s.in_place) {
        const MatrixView v = m.state_view(st, s);
        out.push_back({.from = v.tensor, .to = s.buf[0], .cols = v.cols, .outer = 1, .from_offset = v.offset,
                       .from_ld = v.ld ? v.ld : v.cols, .to_offset = 0, .to_ld = v.cols, .kind = Kind::back});
        continue;
      }
      std::size_t outer = 1, Q = 1;
      for (std::size_t i = 0; i < axis; ++i) outer *= shape[i];
      for (std::size_t i = axis + 1; i < shape.size(); ++i) Q *= shape[i];
      out.push_back({.from = s.buf[s.cur], .to = s.buf[s.cur ^ 1], .cols = Q, .outer = outer, .from_ld = Q, .to_ld = Q});
    }
    if (m.fused_embedding >= 0) {
      const MatrixView table = MatrixView::of(m.decoder->embedding_table(m.fused_embedding));
      const MatrixView to = m.decoder->matrix(*st.layout, st.frame, m.fused_embedding_out);
      if (table.tensor.dtype() == DType::f32 && to.rows == R && to.cols == table.cols) {
        out.push_back({.from = table.tensor, .to = to.tensor, .cols = table.cols, .outer = 1, .from_offset = table.offset,
                       .from_ld = table.ld ? table.ld : table.cols, .to_offset = to.offset, .to_ld = to.ld ? to.ld : to.cols,
                       .kind = Kind::token, .vocab = table.rows});
      }
    }
    for (const auto& [from, to] : {std::pair{&processing.history, &spare.history}, std::pair{&processing.seen, &spare.seen}}) {
      if (!from->valid()) continue;
      const MatrixView v = MatrixView::of(*from);
      out.push_back({.from = *from, .to = *to, .cols = v.cols, .outer = 1, .from_ld = v.cols, .to_ld = v.cols});
    }
    return out;
  }

  // One of those gathers as Embedding lookups of the parent rows (and a copy back); a token
  // lookup is left to the decoder's own embedding node.
  void record_gather(Sequence& seq, const BeamStep::Gather& g, const Tensor& parents) const {
    if (g.kind == BeamStep::Kind::token) return;
    for (std::size_t o = 0; o < g.outer; ++o) {
      m.embedding.record(seq, MatrixView{g.from, R, g.cols, g.from_offset + o * R * g.cols, g.from_ld}, parents,
                         MatrixView{g.to, R, g.cols, g.to_offset + o * R * g.cols, g.to_ld});
    }
    if (g.kind == BeamStep::Kind::back) {
      m.concat.record(seq, {MatrixView{g.to, R, g.cols, g.to_offset, g.to_ld}}, MatrixView{g.from, R, g.cols, g.from_offset, g.from_ld});
    }
  }

  // Everything after the encoder, once: a run records one search.
  void record(Sequence& seq) {
    Context& c = *m.ctx;
    // The encoder runs once per source; what the decoder reads of it is expanded to K decoder
    // rows per source.
    std::vector<std::int32_t> source_of(R);
    for (std::size_t r = 0; r < R; ++r) source_of[r] = static_cast<std::int32_t>(r / K);
    const Tensor rows = c.tensor({R}, DType::i32, "Seq2Seq beam row sources");
    seq.upload(rows, source_of);
    auto ek = std::make_shared<Seq2Seq::Encoded::Impl>();
    ek->B = R;
    ek->S = S;
    for (std::size_t r = 0; r < R; ++r) ek->lengths.push_back(e->lengths[r / K]);
    ek->lengths_t = c.tensor({R}, DType::i32, "Seq2Seq beam lengths");
    seq.upload(ek->lengths_t, ek->lengths);
    for (const graph::Input& in : m.dgraph().inputs) {
      if (in.from == From::encoder) ek->exported[in.name] = m.expand(seq, e->exported.at(in.name), in.shape, B, S, K, rows, in.source);
    }

    st = m.start(ek, {.max_len = T, .stop_at_eos = false, .return_attention = attention});
    // Logits processing per hypothesis: its histories (f32 rows) are gathered from the parent
    // row with the recurrent state, into the spare set, every step.
    LogitsProcessing rules = m.rules_of(o);
    // A target prefix: every decoder row of source b is forced through target_prefix[b]; TopK
    // then offers that token alone (with its log-probability), so each source keeps one alive
    // hypothesis through its prefix and the beam opens after it, as from BOS.
    std::size_t P = 0;  // the longest prefix: steps that read the forced tokens
    for (const auto& p : o.target_prefix) P = std::max(P, p.size());
    if (P > 0) {
      for (std::size_t r = 0; r < R; ++r) rules.prefix.push_back(o.target_prefix[r / K]);
    }
    std::optional<LogitsProcessor> processor;
    LogitsProcessor::State processing, spare;
    if (rules.active()) {
      processor.emplace(c, V, rules, m.opts);
      processing = processor->make_state(R, T);
      spare = processor->make_state(R, T);
    }
    const TopK topk(c, kc, m.opts);
    search.emplace(c, B, K, kc, T, m.cfg.special.eos, m.cfg.special.pad >= 0 ? m.cfg.special.pad : 0, m.opts, stop);
    state = search->make_state();
    const Tensor cand_v = c.tensor({R, kc}, DType::f32, "Seq2Seq beam candidate scores");
    const Tensor cand_i = c.tensor({R, kc}, DType::i32, "Seq2Seq beam candidate tokens");
    const Tensor parents = c.tensor({R}, DType::i32, "Seq2Seq beam parents");
    nonfinite = c.tensor({R}, DType::u32, "Seq2Seq beam non-finite flags");
    // Per-step histories of every decoder row; hypotheses pick their rows afterwards.
    if (o.return_logits) hist_logits = c.tensor({T, R, V}, DType::f32, "Seq2Seq beam logits");
    if (attention && m.attention_t >= 0) hist_attention = c.tensor({T, R, S}, DType::f32, "Seq2Seq beam attention");
    // Copies: no dispatch, no shader.
    for (std::size_t t = 0; o.return_token_scores && t < T; ++t) {
      step_v.push_back(c.tensor({R, kc}, DType::f32, fmt::format("Seq2Seq beam candidate scores {}", t)));
      step_i.push_back(c.tensor({R, kc}, DType::i32, fmt::format("Seq2Seq beam candidate tokens {}", t)));
    }

    // max_len steps of (decoder step, top-k, merge, reorder the states to the surviving
    // hypotheses) inside a gate the merge's done flags close, so the host never waits per step.
    // Where it fits, top-k, merge, the first reorders (up to BeamStep::max_gathers) and the gate
    // check are one dispatch (BeamStep); the rest of the reorders are gathers of their own.
    // The output projection too where nothing reads the logits before the step (BeamStep's
    // record with the projection: one dispatch where the device's GEMV can take the step).
    std::optional<BeamStep> fused;
    std::size_t fused_gathers = 0;  // the first gathers, as many as BeamStep takes
    const Linear* projection = nullptr;
    if (m.logits_of(*st).shape() == Shape{R, V}) {
      if (m.projection_node >= 0 && !st->logits.valid() && !processor && !hist_logits.valid() &&
          st->layout->whole_copies[static_cast<std::size_t>(m.projection_node)].empty()) {
        projection = &m.decoder->projection(m.projection_node);
      }
      const auto gathers = state_gathers(*st, processing, spare);
      for (std::size_t n = std::min(gathers.size(), BeamStep::max_gathers) + 1; n-- > 0 && !fused;) {
        fused = BeamStep::make(c, *search, V, std::span(gathers).first(n), m.opts, projection);
        fused_gathers = n;
      }
    }
    if (!fused) projection = nullptr;
    search->record_reset(seq, state);
    seq.fill(nonfinite, 0);
    if (fused) fused->record_reset(seq);
    m.record_init(seq, *st);
    if (processor) processor->record_reset(seq, processing);
    seq.begin_gate();
    for (std::size_t t = 0; t < T; ++t) {
      Seq2Seq::Impl::History h;
      h.select = false;
      h.defer_projection = projection != nullptr;
      m.record_step(seq, *st, h);
      const Tensor logits = m.logits_of(*st);
      if (processor) processor->record(seq, processing, logits, st->token, t);
      if (hist_logits.valid()) m.concat.record(seq, {MatrixView::of(logits)}, MatrixView{hist_logits, R, V, t * R * V, V});
      if (hist_attention.valid()) {
        m.concat.record(seq, {MatrixView::of(m.attention_of(*st))}, MatrixView{hist_attention, R, S, t * R * S, S});
      }
      const Tensor forced = t < P ? processing.chosen : Tensor{};
      // The last step's merge ends every search: nothing reads the states after it.
      const auto gathers = t + 1 < T ? state_gathers(*st, processing, spare) : std::vector<BeamStep::Gather>{};
      std::size_t apart = 0;  // gathers left to Embedding
      bool token_written = false;
      if (fused) {
        const std::size_t n = std::min(gathers.size(), fused_gathers);
        if (projection) {
          fused->record(seq, *projection, m.decoder->input_matrix(*st->layout, st->frame, m.projection_node, "x"), state, t,
                        logits, forced, nonfinite, cand_v, cand_i, parents, st->token, std::span(gathers).first(n), t + 1 < T);
        } else {
          fused->record(seq, state, t, logits, forced, nonfinite, cand_v, cand_i, parents, st->token,
                        std::span(gathers).first(n), t + 1 < T);
        }
        apart = n;
        for (std::size_t i = 0; i < n; ++i) token_written |= gathers[i].kind == BeamStep::Kind::token;
      } else {
        topk.record(seq, logits, cand_v, cand_i, true, nonfinite, static_cast<std::uint32_t>(t + 1), forced);
        search->record_step(seq, state, t, cand_v, cand_i, parents, st->token);
      }
      for (std::size_t i = apart; i < gathers.size(); ++i) record_gather(seq, gathers[i], parents);
      if (!fused && t + 1 < T) seq.close_gate_when_all(state.done);
      if (!step_v.empty()) seq.copy(cand_v, step_v[t]).copy(cand_i, step_i[t]);
      if (!gathers.empty()) {
        for (auto& st_s : st->states) {
          if (!st_s.in_place && batch_axis(st_s) < m.dgraph().inputs[st_s.input].shape.size()) st_s.cur ^= 1;
        }
        for (const auto& [from, to] : {std::pair{&processing.history, &spare.history}, std::pair{&processing.seen, &spare.seen}}) {
          if (from->valid()) std::swap(*from, *to);
        }
      }
      // st->token holds the merge's next tokens; their embeddings are in place where BeamStep wrote them.
      st->input_ready = token_written;
    }
    seq.end_gate();
    search->record_download(seq, state);
    seq.download(nonfinite);
    if (hist_logits.valid()) seq.download(hist_logits);
    if (hist_attention.valid()) seq.download(hist_attention);
    for (std::size_t t = 0; t < step_v.size(); ++t) seq.download(step_v[t]).download(step_i[t]);
  }

  // The hypotheses once `seq`, which recorded the search, has finished; options.stats written.
  std::vector<std::vector<Hypothesis>> hypotheses(const Sequence& seq, const char* call) const {
    check_finite_logits(seq.read<std::uint32_t>(nonfinite), m.logits_layer, call, K, 0);
    if (o.stats) *o.stats = {seq.stats(), std::min<std::size_t>(T, 1 + seq.open_gate_checks())};
    const auto found = search->reconstruct(seq, state);
    std::vector<float> logits, weights;
    if (hist_logits.valid()) logits = seq.read<float>(hist_logits);
    if (hist_attention.valid()) weights = seq.read<float>(hist_attention);
    std::vector<std::vector<float>> cand_scores;
    std::vector<std::vector<std::int32_t>> cand_tokens;
    for (std::size_t t = 0; t < step_v.size(); ++t) {
      cand_scores.push_back(seq.read<float>(step_v[t]));
      cand_tokens.push_back(seq.read<std::int32_t>(step_i[t]));
    }
    std::vector<std::vector<Hypothesis>> out(B);
    for (std::size_t b = 0; b < B; ++b) {
      auto& f = out[b];
      for (const BeamHypothesis& bh : found[b]) {
        Hypothesis hyp;
        hyp.tokens = bh.tokens;
        hyp.score = bh.score;
        hyp.norm_score = double(bh.score) / std::pow(double(bh.tokens.size()), alpha);
        hyp.finished = bh.finished;
        std::vector<double> coverage(beta != 0.0 ? S : 0, 0.0);
        for (std::size_t i = 0; i < bh.rows.size(); ++i) {
          const std::size_t at = i * R + bh.rows[i];
          if (!step_v.empty()) {
            // The token among its row's candidates at step i.
            const auto& vals = cand_scores[i];
            const auto& ids = cand_tokens[i];
            float lp = -std::numeric_limits<float>::infinity();
            for (std::size_t j = 0; j < kc; ++j) {
              if (ids[bh.rows[i] * kc + j] == bh.tokens[i]) {
                lp = vals[bh.rows[i] * kc + j];
                break;
              }
            }
            hyp.token_scores.push_back(lp);
          }
          if (!logits.empty()) {
            hyp.logits.insert(hyp.logits.end(), logits.begin() + static_cast<std::ptrdiff_t>(at * V),
                              logits.begin() + static_cast<std::ptrdiff_t>((at + 1) * V));
          }
          for (std::size_t j = 0; j < coverage.size(); ++j) coverage[j] += weights[at * S + j];
          if (o.return_attention && !weights.empty()) {
            hyp.attention.insert(hyp.attention.end(), weights.begin() + static_cast<std::ptrdiff_t>(at * S),
                                 weights.begin() + static_cast<std::ptrdiff_t>((at + 1) * S));
          }
        }
        for (const double cj : coverage)
          if (cj > 0.0) hyp.norm_score += beta * std::log(std::min(cj, 1.0));
        f.push_back(std::move(hyp));
      }
      // Rank by norm_score, ties by arrival (docs/model-format.md, "Beam search", rule 5).
      std::stable_sort(f.begin(), f.end(), [](const Hypothesis& x, const Hypothesis& y) { return x.norm_score > y.norm_score; });
      if (f.size() > K) f.resize(K);
    }
    return out;
  }
};

}  // namespace

struct Seq2Seq::BeamDecode::Impl {
  BeamRun run;
};

std::size_t Seq2Seq::BeamDecode::batch() const { return impl ? impl->run.B : 0; }
std::size_t Seq2Seq::BeamDecode::beam_width() const { return impl ? impl->run.K : 0; }
std::size_t Seq2Seq::BeamDecode::source_length() const { return impl ? impl->run.S : 0; }
std::size_t Seq2Seq::BeamDecode::max_len() const { return impl ? impl->run.T : 0; }

std::vector<std::vector<Hypothesis>> Seq2Seq::beam(const std::vector<std::vector<std::int32_t>>& sources,
                                                   const BeamOptions& options) const {
  const Impl& m = *impl_;
  BeamRun run(m, m.prepare(sources, "beam"), options, "beam");
  // The whole search is one submission: the encoder, then the run.
  Sequence seq = m.ctx->sequence({.label = "Seq2Seq::beam"});
  m.record_encode(seq, *run.e);
  run.record(seq);
  seq.eval();
  return run.hypotheses(seq, "beam");
}

Seq2Seq::BeamDecode Seq2Seq::record_beam(Sequence& seq, const Encoded& encoded, const BeamOptions& options) const {
  if (!encoded.impl) throw Error(ErrorCode::invalid_argument, fmt::format("{}::record_beam: an empty Encoded", kOp));
  BeamDecode d;
  d.impl = std::make_shared<BeamDecode::Impl>(BeamDecode::Impl{BeamRun(*impl_, encoded.impl, options, "record_beam")});
  require_free_gate(seq, "record_beam");
  seq.begin_label("Seq2Seq::record_beam");
  d.impl->run.record(seq);
  seq.end_label();
  return d;
}

std::vector<std::vector<Hypothesis>> Seq2Seq::read_beam(const Sequence& seq, const BeamDecode& decode) const {
  return model_detail::read_recorded(impl_.get(), decode, kOp, "read_beam", "BeamDecode",
                       [&](const BeamRun& run) { return run.hypotheses(seq, "read_beam"); });
}

WarmUpTask Seq2Seq::warm_up(const WarmUpOptions& options) const {
  return WarmUpTask::start(
      [this, options] {
        const std::int32_t id = model_detail::plain_token(impl_->cfg.special, impl_->Vs);
        for (const std::size_t B : options.batch_sizes) {
          for (const std::size_t S : options.lengths) {
            const std::vector<std::vector<std::int32_t>> sources(B, std::vector<std::int32_t>(std::max<std::size_t>(S, 1), id));
            if (options.greedy) greedy(sources, {.max_len = 2});
            if (options.beam) beam(sources, {.beam_width = options.beam_width, .max_len = 2});
          }
        }
        impl_->ctx->save_pipeline_cache();
      },
      options.background);
}

std::vector<std::string> Seq2Seq::translate(const std::vector<std::string>& texts, const TextOptions& options) const {
  return translate(texts, DecodeOptions{}, 0, 0, options);
}

std::vector<std::string> Seq2Seq::translate(const std::vector<std::string>& texts, const DecodeOptions& options,
                                            std::size_t max_batch_size, std::size_t max_batch_tokens,
                                            const TextOptions& text_options) const {
  if (!options.target_prefix.empty() && options.target_prefix.size() != texts.size()) {
    throw Error(ErrorCode::invalid_argument, fmt::format("{}::translate: {} target prefixes for {} texts (one per text, empty for none)",
                                                         kOp, options.target_prefix.size(), texts.size()));
  }
  if (impl_->cfg.src_vocab.empty()) {
    throw Error(ErrorCode::invalid_argument, fmt::format("{}::translate: the model has no source vocabulary (use token ids)", kOp));
  }
  std::vector<std::vector<std::int32_t>> sources;
  for (std::size_t i = 0; i < texts.size(); ++i) {
    if (texts[i].empty()) {
      throw Error(ErrorCode::invalid_argument,
                  fmt::format("{}::translate: text {} is empty (there is nothing to translate)", kOp, i));
    }
    try {
      sources.push_back(impl_->src_tok.encode(texts[i], impl_->cfg.tokenizer.src_append_eos, text_options.unknown));
    } catch (const Error& e) {
      throw Error(e.code(), fmt::format("{}::translate: text {}: {}", kOp, i, e.what()));
    }
  }
  if (sources.empty()) greedy(sources, options);  // its error: no sources
  std::vector<std::size_t> lengths;
  for (const auto& s : sources) lengths.push_back(s.size());
  std::vector<std::string> out(texts.size());
  for (const std::vector<std::size_t>& rows : model_detail::text_batches(lengths, max_batch_size, max_batch_tokens)) {
    std::vector<std::vector<std::int32_t>> batch;
    DecodeOptions o = options;
    o.target_prefix.clear();
    for (const std::size_t i : rows) {
      batch.push_back(std::move(sources[i]));
      if (!options.target_prefix.empty()) o.target_prefix.push_back(options.target_prefix[i]);
    }
    const DecodeResult r = greedy(batch, o);
    for (std::size_t b = 0; b < rows.size(); ++b) out[rows[b]] = decode_text(r.row(b));
  }
  return out;
}

}  // namespace vkrnn
