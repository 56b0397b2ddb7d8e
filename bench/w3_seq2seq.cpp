// W3 — seq2seq decode (greedy; beam search below), the end-to-end job (workloads.md): a
// bahdanau_seq2seq model (docs/model-format.md; tools/vkrnn_models.py BahdanauSeq2Seq, which
// torch_baseline.py runs) with vocab 8000, E = 256, bi-GRU encoder He = 256, GRU decoder
// Hd = 256, attention A = 256, over B random sources of S = 32 tokens, 32 decode steps with no
// early stop.
//
// The model has random weights (fixed seeds, PyTorch's default init ranges) and goes through
// the real loading path: setup writes model.json + model.safetensors to a temporary directory,
// Seq2Seq::load reads it (then the directory is removed). One repetition records the whole
// decode into the harness's Sequence: record_encode (source upload, embedding, bi-GRU, key
// projection, bridge) then record_greedy (max_len 32, stop_at_eos = false: every row feeds
// back its own argmax for exactly 32 steps; the tokens' and scores' downloads at the end).
// That is Seq2Seq::greedy()'s submission, in a Sequence the harness times and profiles. Rate:
// tokens/s = B * 32 / wall median (bench/SCHEMA.md).
//
// Each B also runs with the dense and recurrent layers' weight matrices in fp16 and in int8
// (OpOptions::weight_storage, quantized at load: per-row scales), params weight_bits = 16 / 8
// and precision fp16 / int8; the fp32 rows keep their names. weight_bytes_per_token: the
// decoder step's weights (output projection and GRU in the row's storage, the attention query
// in fp32) / B, plus the token's embedding row.
//
// Each B and storage also runs as a beam search (param beam = 4: BeamOptions::beam_width, the
// model's length_alpha): record_encode then record_beam (max_len 32), B * 4 decoder rows a step,
// Seq2Seq::beam()'s submission. EOS keeps its meaning there (a hypothesis that ends leaves the
// beam); setup checks that no source row's search ended early with these weights and sources,
// so every repetition runs the 32 steps. Rate: tokens/s = B * 32 / wall (one output hypothesis
// per source row, as greedy).
//
// W3.b1 also runs streamed (param stream_steps = 1 and 8, fp32): Seq2Seq::greedy() with
// DecodeOptions::on_step, which submits the decode in pieces of stream_steps steps, two in
// flight, and hands each step's token to the host as soon as its piece is done -- what an app
// that shows the words as they come does. These rows submit their own work (bench/workload.hpp,
// Runner) and add first_token_us: from the call to greedy() to its first on_step call.
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>

#include <fmt/format.h>

#include "vkrnn/options.hpp"
#include "vkrnn/safetensors.hpp"
#include "vkrnn/seq2seq.hpp"
#include "workload.hpp"

namespace vkrnn::bench {
namespace {

constexpr std::size_t kVocab = 8000, kE = 256, kH = 256, kA = 256, kS = 32, kSteps = 32;

// Writes the W3 model into `dir` (model.json + model.safetensors).
void write_model(const std::filesystem::path& dir) {
  const std::size_t M = 2 * kH;
  std::vector<SafetensorsTensorData> tensors;
  std::uint32_t seed = 300;
  // Uniform(-bound, bound); bound = 1/sqrt(fan_in) for layers (PyTorch's default), 1 for the
  // embeddings, so activations stay O(1) and the argmax is not degenerate.
  auto add = [&](const std::string& name, std::vector<std::size_t> shape, float bound) {
    std::size_t n = 1;
    for (std::size_t d : shape) n *= d;
    const auto values = random_floats(n, seed++, -bound, bound);
    tensors.push_back(f32_tensor(name, std::move(shape), values));
  };
  const float inv_h = 1.0f / std::sqrt(float(kH));
  add("src_embedding.weight", {kVocab, kE}, 1.0f);
  add("tgt_embedding.weight", {kVocab, kE}, 1.0f);
  for (const char* dir_suffix : {"", "_reverse"}) {
    add(fmt::format("encoder.weight_ih_l0{}", dir_suffix), {3 * kH, kE}, inv_h);
    add(fmt::format("encoder.weight_hh_l0{}", dir_suffix), {3 * kH, kH}, inv_h);
    add(fmt::format("encoder.bias_ih_l0{}", dir_suffix), {3 * kH}, inv_h);
    add(fmt::format("encoder.bias_hh_l0{}", dir_suffix), {3 * kH}, inv_h);
  }
  add("bridge.weight", {kH, kH}, inv_h);
  add("bridge.bias", {kH}, inv_h);
  add("attention.key_proj.weight", {kA, M}, 1.0f / std::sqrt(float(M)));
  add("attention.query_proj.weight", {kA, kH}, inv_h);
  add("attention.query_proj.bias", {kA}, inv_h);
  add("attention.v", {kA}, 0.1f);  // the reference module's init
  add("decoder.weight_ih_l0", {3 * kH, kE + M}, inv_h);
  add("decoder.weight_hh_l0", {3 * kH, kH}, inv_h);
  add("decoder.bias_ih_l0", {3 * kH}, inv_h);
  add("decoder.bias_hh_l0", {3 * kH}, inv_h);
  const std::size_t out_in = kH + M + kE;
  add("output.weight", {kVocab, out_in}, 1.0f / std::sqrt(float(out_in)));
  add("output.bias", {kVocab}, 1.0f / std::sqrt(float(out_in)));
  write_safetensors((dir / "model.safetensors").string(), tensors);

  auto vocab = [](const char* prefix) {
    std::vector<std::string> v{"<pad>", "<s>", "</s>", "<unk>"};
    for (std::size_t i = v.size(); i < kVocab; ++i) v.push_back(fmt::format("{}{}", prefix, i));
    return v;
  };
  auto rnn_map = [](const std::string& role, bool reverse) {
    nlohmann::ordered_json m;
    for (const char* suffix : {"", "_reverse"}) {
      if (*suffix && !reverse) continue;
      for (const char* p : {"weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"}) {
        const std::string param = std::string(p) + suffix;
        m[param] = role + "." + param;
      }
    }
    return m;
  };
  nlohmann::ordered_json config = {
      {"format", "vkrnn-model"}, {"version", 1}, {"architecture", "bahdanau_seq2seq"},
      {"cell", "gru"}, {"src_vocab_size", kVocab}, {"tgt_vocab_size", kVocab},
      {"embedding_dim", kE}, {"encoder_hidden", kH}, {"encoder_layers", 1},
      {"encoder_bidirectional", true}, {"decoder_hidden", kH}, {"decoder_layers", 1},
      {"score", "additive"}, {"attention_dim", kA}, {"input_feeding", false},
      {"special_tokens", {{"pad", 0}, {"bos", 1}, {"eos", 2}, {"unk", 3}}},
      {"max_decode_length", kSteps}, {"beam", {{"width", 3}, {"length_alpha", 0.6}}},
      {"src_vocab", vocab("s")}, {"tgt_vocab", vocab("t")},
      {"tokenizer", {{"type", "word"}, {"lowercase", false}, {"src_append_eos", false}}},
      {"weights", "model.safetensors"}, {"weights_dtype", "F32"},
      {"extra", {{"task", "vkrnn-bench W3 (random weights)"}}},
      {"tensors",
       {{"src_embedding", "src_embedding.weight"},
        {"tgt_embedding", "tgt_embedding.weight"},
        {"encoder", rnn_map("encoder", true)},
        {"bridge.weight", "bridge.weight"},
        {"bridge.bias", "bridge.bias"},
        {"attention.key_weight", "attention.key_proj.weight"},
        {"attention.query_weight", "attention.query_proj.weight"},
        {"attention.query_bias", "attention.query_proj.bias"},
        {"attention.v", "attention.v"},
        {"decoder", rnn_map("decoder", false)},
        {"output.weight", "output.weight"},
        {"output.bias", "output.bias"}}}};
  std::ofstream f(dir / "model.json");
  f << config.dump(1) << "\n";
  if (!f) throw Error(ErrorCode::io, fmt::format("vkrnn-bench W3: cannot write {}", (dir / "model.json").string()));
}

// Writes the model to a fresh temporary directory, loads it, removes the directory.
std::shared_ptr<Seq2Seq> load_model(Context& ctx, const OpOptions& options) {
  std::string pattern = (std::filesystem::temp_directory_path() / "vkrnn-bench-w3-XXXXXX").string();
  if (!mkdtemp(pattern.data())) {
    throw Error(ErrorCode::io, fmt::format("vkrnn-bench W3: mkdtemp({}) failed", pattern));
  }
  const std::filesystem::path dir(pattern);
  struct Cleanup {
    std::filesystem::path dir;
    ~Cleanup() {
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
    }
  } cleanup{dir};
  write_model(dir);
  return std::make_shared<Seq2Seq>(Seq2Seq::load(ctx, dir.string(), options));
}

// Bytes of weights one decoded token reads (bench/SCHEMA.md): per step the output projection
// ([vocab, H + 2H + E]) and the decoder GRU's W_ih and W_hh in `matrix_bytes` each (int8 adds a
// f32 scale per row), their biases, and the attention query projection and v (fp32), shared by
// the B rows; plus the token's own embedding row (beam search: its K hypotheses' rows).
double weight_bytes_per_token(std::size_t b, std::size_t beam, double matrix_bytes, bool scales) {
  const double M = 2.0 * kH, out_in = kH + M + kE;
  const double output = kVocab * out_in * matrix_bytes + kVocab * 4.0 + (scales ? kVocab * 4.0 : 0.0);
  const double gru = (3.0 * kH * (kE + M) + 3.0 * kH * kH) * matrix_bytes + 6.0 * kH * 4.0 + (scales ? 6.0 * kH * 4.0 : 0.0);
  const double query = (double(kA) * kH + 2.0 * kA) * 4.0;
  return (output + gru + query) / double(b) + double(beam) * kE * 4.0;
}

// B random non-special source ids, every row of length S.
std::vector<std::vector<std::int32_t>> random_sources(std::size_t b) {
  const auto r = random_floats(b * kS, 31, 4.0f, float(kVocab));
  std::vector<std::vector<std::int32_t>> sources(b);
  for (std::size_t i = 0; i < b; ++i) {
    for (std::size_t s = 0; s < kS; ++s) {
      sources[i].push_back(std::min(std::int32_t(r[i * kS + s]), std::int32_t(kVocab - 1)));
    }
  }
  return sources;
}

// Throws Error(state) naming the row unless every token is a valid id and every score a finite
// log-probability.
void check_tokens(const std::string& row, const std::vector<std::int32_t>& tokens, const std::vector<float>& scores) {
  if (tokens.size() != scores.size()) {
    throw Error(ErrorCode::state, fmt::format("vkrnn-bench {}: {} tokens, {} scores", row, tokens.size(), scores.size()));
  }
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || tokens[i] >= std::int32_t(kVocab) || !std::isfinite(scores[i]) || scores[i] > 0.0f) {
      throw Error(ErrorCode::state, fmt::format("vkrnn-bench {}: token {} of {}: id {}, score {}", row, i,
                                                tokens.size(), tokens[i], scores[i]));
    }
  }
}

// W3.b1 streamed (the file's comment): greedy() with on_step, pieces of `stream_steps` steps.
Workload streaming_row(std::size_t stream_steps) {
  Workload w;
  w.id = "W3.b1";
  w.params = {{"B", 1}, {"S", kS}, {"steps", kSteps}, {"E", kE}, {"H", kH}, {"vocab", kVocab},
              {"stream_steps", stream_steps}};
  w.work.tokens = double(kSteps);
  w.work.steps = double(kSteps);
  w.work.weight_bytes_per_token = weight_bytes_per_token(1, 1, 4.0, false);
  w.setup = [stream_steps, name = w.name()](Context& ctx) -> Prepared {
    auto model = load_model(ctx, OpOptions{});
    Prepared p;
    p.run = [model, stream_steps, name, sources = random_sources(1)] {
      using Clock = std::chrono::steady_clock;
      std::size_t steps = 0;
      Clock::time_point first{};
      DecodeOptions options;
      options.max_len = kSteps;
      options.stop_at_eos = false;  // workloads.md: no early stop
      options.stream_steps = stream_steps;
      options.on_step = [&](const StepResult& step) {
        if (steps == 0) first = Clock::now();
        if (step.step != steps) {
          throw Error(ErrorCode::state, fmt::format("vkrnn-bench {}: step {} after {}", name, step.step, steps));
        }
        check_tokens(name, step.tokens, step.scores);
        ++steps;
        return true;
      };
      const auto t0 = Clock::now();
      const DecodeResult r = model->greedy(sources, options);
      if (steps != kSteps || r.steps != kSteps) {
        throw Error(ErrorCode::state, fmt::format("vkrnn-bench {}: {} steps streamed, {} returned", name, steps, r.steps));
      }
      check_tokens(name, r.tokens, r.scores);
      return SelfRun{std::chrono::duration<double, std::micro>(first - t0).count(), r.stats};
    };
    return p;
  };
  return w;
}

// Greedy (beam = 0) or beam-search (beam = K) decode of B sources, weights in `st`.
Workload decode_row(std::size_t b, std::size_t beam, const RowStorage& st) {
  Workload w;
  w.id = fmt::format("W3.b{}", b);
  w.params = {{"B", b}, {"S", kS}, {"steps", kSteps}, {"E", kE}, {"H", kH}, {"vocab", kVocab}};
  if (beam) w.params["beam"] = beam;
  if (st.bits != 32) w.params["weight_bits"] = st.bits;
  w.precision = st.precision;
  w.work.tokens = double(b * kSteps);
  w.work.steps = double(kSteps);
  w.work.weight_bytes_per_token = weight_bytes_per_token(b, std::max<std::size_t>(beam, 1), double(st.bits) / 8.0, st.bits == 8);
  w.setup = [b, beam, st, name = w.name()](Context& ctx) -> Prepared {
    OpOptions op_options;
    op_options.weight_storage = st.storage;
    auto model = load_model(ctx, op_options);
    const Seq2Seq::Encoded encoded = model->prepare(random_sources(b));
    DecodeOptions options;
    options.max_len = kSteps;
    options.stop_at_eos = false;  // workloads.md: no early stop
    BeamOptions beam_options;
    beam_options.beam_width = beam;
    beam_options.max_len = kSteps;
    // The decode of the repetition being recorded. A fresh one per repetition; the previous
    // one is dropped only when the next is recorded, after the harness has waited for (and
    // reset) the sequence that used it.
    auto greedy = std::make_shared<Seq2Seq::GreedyDecode>();
    auto search = std::make_shared<Seq2Seq::BeamDecode>();
    auto record = [model, encoded, options, beam_options, greedy, search, beam](Sequence& seq) {
      model->record_encode(seq, encoded);
      if (beam) {
        *search = model->record_beam(seq, encoded, beam_options);
      } else {
        *greedy = model->record_greedy(seq, encoded, options);
      }
    };
    // One decode here, so the decode's own results are checked (not only the encoder's):
    // every step's tokens are valid ids and their log-probabilities finite; beam search ran
    // all its steps (no source row's K hypotheses all ended at EOS: the rows' cost is that of
    // 32 steps, as the PyTorch baseline's).
    Sequence seq = ctx.sequence({.label = "W3 setup check"});
    if (beam) {
      DecodeStats stats;
      BeamOptions checked = beam_options;
      checked.stats = &stats;
      checked.return_token_scores = true;  // each token's log-probability, for check_tokens
      model->record_encode(seq, encoded);
      const Seq2Seq::BeamDecode decode = model->record_beam(seq, encoded, checked);
      seq.eval();
      const auto hyps = model->read_beam(seq, decode);
      if (stats.steps_run != kSteps || hyps.size() != b) {
        throw Error(ErrorCode::state, fmt::format("vkrnn-bench {}: {} steps run, {} rows", name, stats.steps_run, hyps.size()));
      }
      for (const auto& row : hyps) {
        if (row.empty()) throw Error(ErrorCode::state, fmt::format("vkrnn-bench {}: a row without hypotheses", name));
        for (const Hypothesis& h : row) check_tokens(name, h.tokens, h.token_scores);
      }
    } else {
      record(seq);
      seq.eval();
      const DecodeResult r = model->read_greedy(seq, *greedy);
      if (r.steps != kSteps || r.tokens.size() != b * kSteps) {
        throw Error(ErrorCode::state, fmt::format("vkrnn-bench {}: {} steps, {} tokens", name, r.steps, r.tokens.size()));
      }
      check_tokens(name, r.tokens, r.scores);
    }
    return {record, encoded.encoder_outputs()};
  };
  return w;
}

std::vector<Workload> rows() {
  std::vector<Workload> out;
  for (std::size_t beam : {0, 4}) {
    for (std::size_t b : {1, 16}) {
      for (const RowStorage& st : kRowStorages) out.push_back(decode_row(b, beam, st));
    }
  }
  for (std::size_t stream_steps : {1, 8}) out.push_back(streaming_row(stream_steps));
  return out;
}

const Registrar registrar("W3", rows);

}  // namespace
}  // namespace vkrnn::bench
