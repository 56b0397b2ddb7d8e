#pragma once
// Small model directories written by the tests themselves (no PyTorch): a Bahdanau seq2seq
// model and a classifier with deterministic random weights, their configs as JSON to edit, a
// temporary directory, random token inputs and double-precision cell references. Shared by
// tests/test_models.cpp, test_models_seq2seq.cpp and test_models_classifier.cpp.
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "vkrnn/linear.hpp"
#include "vkrnn/safetensors.hpp"
#include "vkrnn/seq2seq.hpp"
#include "vkrnn/tensor.hpp"

namespace vkrnn::test {

class TempDir {
 public:
  TempDir() {
    std::random_device rd;
    path_ = std::filesystem::temp_directory_path() / fmt::format("vkrnn-models-{}-{}", ::getpid(), rd());
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string str() const { return path_.string(); }
  std::filesystem::path path() const { return path_; }

 private:
  std::filesystem::path path_;
};

inline nlohmann::json rnn_map(const std::string& prefix, std::size_t layers, bool bidirectional) {
  nlohmann::json m = nlohmann::json::object();
  for (std::size_t k = 0; k < layers; ++k) {
    for (int d = 0; d < (bidirectional ? 2 : 1); ++d) {
      const std::string sfx = std::to_string(k) + (d ? "_reverse" : "");
      for (const char* p : {"weight_ih_l", "weight_hh_l", "bias_ih_l", "bias_hh_l"}) m[std::string(p) + sfx] = prefix + "." + p + sfx;
    }
  }
  return m;
}

// Deterministic weight values: N(0, 1) for embeddings, U(-scale, scale) otherwise.
inline std::vector<float> random_weights(std::mt19937& rng, std::size_t count, float scale, bool embedding) {
  std::vector<float> v(count);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> uniform(-scale, scale);
  for (auto& x : v) x = embedding ? normal(rng) : uniform(rng);
  return v;
}

// Rows of the given lengths of token ids drawn uniformly from [first_id, vocab).
inline std::vector<std::vector<std::int32_t>> random_token_rows(const std::vector<std::size_t>& lengths,
                                                                std::size_t first_id, std::size_t vocab,
                                                                std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<std::vector<std::int32_t>> rows;
  for (std::size_t L : lengths) {
    std::vector<std::int32_t> row(L);
    for (auto& id : row) id = static_cast<std::int32_t>(first_id + rng() % (vocab - first_id));
    rows.push_back(row);
  }
  return rows;
}

struct TinySpec {
  std::string cell = "gru";
  std::size_t Vs = 7, Vt = 6, E = 3, He = 4, Hd = 5, A = 2, Le = 1, max_len = 9;
  std::uint32_t seed = 1;
  float scale = 0.5f;      // weights ~ U(-scale, scale); embeddings ~ N(0, 1)
  float eos_bias = 0.0f;   // added to output.bias[eos]
};

// A Bahdanau model (docs/model-format.md section 1).
// A tensor quantized as a model file stores int8 weights: I8 `name` and F32 `name`_scale.
inline std::vector<SafetensorsTensorData> int8_tensors(const std::string& name, const Shape& shape, const std::vector<float>& w) {
  const QuantizedRows q = quantize_rows(w, shape.at(0), shape.at(1));
  SafetensorsTensorData t{name, StDType::I8, {shape[0], shape[1]}, std::vector<std::byte>(q.q.size())};
  std::memcpy(t.data.data(), q.q.data(), q.q.size());
  return {t, f32_tensor(name + "_scale", {shape[0]}, q.scales)};
}

struct TinyModel {
  TinySpec spec;
  nlohmann::json config;
  std::map<std::string, std::pair<Shape, std::vector<float>>> weights;  // name -> (shape, data)
  std::set<std::string> int8;  // tensors write() stores as int8 (int8_tensors)
  std::mt19937 rng;

  explicit TinyModel(const TinySpec& s = {}) : spec(s), rng(s.seed) {
    const std::size_t Vs = s.Vs, Vt = s.Vt, E = s.E, He = s.He, Hd = s.Hd, A = s.A, M = 2 * He;
    const std::size_t G = s.cell == "lstm" ? 4 : 3;
    std::vector<std::string> src_vocab = {"<pad>", "<s>", "</s>", "<unk>", "a", "b", "é"};
    std::vector<std::string> tgt_vocab = {"<pad>", "<s>", "</s>", "<unk>", "x", "y"};
    src_vocab.resize(std::max<std::size_t>(Vs, 7));
    tgt_vocab.resize(std::max<std::size_t>(Vt, 6));
    for (std::size_t i = 7; i < Vs; ++i) src_vocab[i] = fmt::format("s{}", i);
    for (std::size_t i = 6; i < Vt; ++i) tgt_vocab[i] = fmt::format("t{}", i);
    src_vocab.resize(Vs);
    tgt_vocab.resize(Vt);
    config = {{"format", "vkrnn-model"},
              {"version", 1},
              {"architecture", "bahdanau_seq2seq"},
              {"cell", s.cell},
              {"src_vocab_size", Vs},
              {"tgt_vocab_size", Vt},
              {"embedding_dim", E},
              {"encoder_hidden", He},
              {"encoder_layers", s.Le},
              {"encoder_bidirectional", true},
              {"decoder_hidden", Hd},
              {"decoder_layers", 1},
              {"score", "additive"},
              {"attention_dim", A},
              {"input_feeding", false},
              {"special_tokens", {{"pad", 0}, {"bos", 1}, {"eos", 2}, {"unk", 3}}},
              {"max_decode_length", s.max_len},
              {"beam", {{"width", 3}, {"length_alpha", 0.6}}},
              {"src_vocab", src_vocab},
              {"tgt_vocab", tgt_vocab},
              {"tokenizer", {{"type", "char"}, {"lowercase", false}, {"src_append_eos", true}}},
              {"weights", "model.safetensors"},
              {"weights_dtype", "F32"},
              {"extra", {{"task", "unit test"}}}};
    nlohmann::json t = {{"src_embedding", "src_embedding.weight"},
                        {"tgt_embedding", "tgt_embedding.weight"},
                        {"bridge.weight", "bridge.weight"},
                        {"bridge.bias", "bridge.bias"},
                        {"attention.key_weight", "attention.key_proj.weight"},
                        {"attention.query_weight", "attention.query_proj.weight"},
                        {"attention.query_bias", "attention.query_proj.bias"},
                        {"attention.v", "attention.v"},
                        {"output.weight", "output.weight"},
                        {"output.bias", "output.bias"}};
    t["encoder"] = rnn_map("encoder", s.Le, true);
    t["decoder"] = rnn_map("decoder", 1, false);
    config["tensors"] = t;
    add("src_embedding.weight", {Vs, E}, true);
    add("tgt_embedding.weight", {Vt, E}, true);
    add("bridge.weight", {Hd, He});
    add("bridge.bias", {Hd});
    add("attention.key_proj.weight", {A, M});
    add("attention.query_proj.weight", {A, Hd});
    add("attention.query_proj.bias", {A});
    add("attention.v", {A});
    add("output.weight", {Vt, Hd + M + E});
    add("output.bias", {Vt});
    weights["output.bias"].second[2] += s.eos_bias;
    for (std::size_t k = 0; k < s.Le; ++k) {
      for (const char* dir : {"", "_reverse"}) {
        const std::string sfx = fmt::format("l{}{}", k, dir);
        add("encoder.weight_ih_" + sfx, {G * He, k == 0 ? E : M});
        add("encoder.weight_hh_" + sfx, {G * He, He});
        add("encoder.bias_ih_" + sfx, {G * He});
        add("encoder.bias_hh_" + sfx, {G * He});
      }
    }
    add("decoder.weight_ih_l0", {G * Hd, E + M});
    add("decoder.weight_hh_l0", {G * Hd, Hd});
    add("decoder.bias_ih_l0", {G * Hd});
    add("decoder.bias_hh_l0", {G * Hd});
  }

  void add(const std::string& name, Shape shape, bool embedding = false) {
    std::vector<float> v = random_weights(rng, element_count(shape), spec.scale, embedding);
    weights[name] = {std::move(shape), std::move(v)};
  }

  const std::vector<float>& w(const std::string& name) const { return weights.at(name).second; }

  // Writes model.json and model.safetensors (dtype applies to every tensor but those in int8).
  void write(const std::filesystem::path& dir, const std::string& dtype = "F32",
             const std::map<std::string, std::string>& metadata = {{"format", "vkrnn-model"},
                                                                    {"version", "1"},
                                                                    {"architecture", "bahdanau_seq2seq"}}) const {
    std::filesystem::create_directories(dir);
    write_config(dir, config.dump(1));
    std::vector<SafetensorsTensorData> tensors;
    for (const auto& [name, sd] : weights) {
      std::vector<std::size_t> shape(sd.first.begin(), sd.first.end());
      if (int8.count(name)) {
        for (auto& t : int8_tensors(name, sd.first, sd.second)) tensors.push_back(std::move(t));
      } else if (dtype == "F16") tensors.push_back(f16_tensor(name, shape, sd.second));
      else if (dtype == "BF16") tensors.push_back(bf16_tensor(name, shape, sd.second));
      else tensors.push_back(f32_tensor(name, shape, sd.second));
    }
    write_safetensors((dir / "model.safetensors").string(), tensors, metadata);
  }

  static void write_config(const std::filesystem::path& dir, const std::string& text) {
    std::ofstream f(dir / "model.json", std::ios::binary | std::ios::trunc);
    f << text;
  }
};

// A small rnn_attention_classifier (docs/model-format.md section 3).
struct TinyClassifierSpec {
  std::string cell = "gru";
  std::size_t V = 11, E = 4, H = 5, L = 1, A = 3, C = 3;
  bool bidirectional = true;
  std::string pooling_score = "tanh";
  std::string activation = "softmax";
  std::uint32_t seed = 1;
  float scale = 0.5f;
};

struct TinyClassifier {
  TinyClassifierSpec spec;
  nlohmann::json config;
  std::map<std::string, std::pair<Shape, std::vector<float>>> weights;
  std::mt19937 rng;

  explicit TinyClassifier(const TinyClassifierSpec& s = {}) : spec(s), rng(s.seed) {
    const std::size_t D = s.bidirectional ? 2 : 1, DH = D * s.H, G = s.cell == "lstm" ? 4 : 3;
    std::vector<std::string> vocab = {"<pad>", "<unk>"};
    for (std::size_t i = 2; i < s.V; ++i) vocab.push_back(fmt::format("w{}", i));
    std::vector<std::string> labels;
    for (std::size_t i = 0; i < s.C; ++i) labels.push_back(fmt::format("class{}", i));
    config = {{"format", "vkrnn-model"},     {"version", 1},
              {"architecture", "rnn_attention_classifier"},
              {"cell", s.cell},              {"vocab_size", s.V},
              {"embedding_dim", s.E},        {"hidden", s.H},
              {"layers", s.L},               {"bidirectional", s.bidirectional},
              {"pooling_score", s.pooling_score},
              {"num_classes", s.C},          {"output_activation", s.activation},
              {"special_tokens", {{"pad", 0}, {"unk", 1}}},
              {"vocab", vocab},              {"labels", labels},
              {"tokenizer", {{"type", "word"}, {"lowercase", true}, {"src_append_eos", false}}},
              {"weights", "model.safetensors"}, {"weights_dtype", "F32"}};
    nlohmann::json t = {{"embedding", "embedding.weight"}, {"classifier.weight", "classifier.weight"},
                        {"classifier.bias", "classifier.bias"}, {"pooling.w", "pooling.w"}};
    t["rnn"] = rnn_map("rnn", s.L, s.bidirectional);
    add("embedding.weight", {s.V, s.E}, true);
    if (s.pooling_score == "tanh") {
      config["attention_dim"] = s.A;
      t["pooling.weight"] = "pooling.proj.weight";
      t["pooling.bias"] = "pooling.proj.bias";
      add("pooling.proj.weight", {s.A, DH});
      add("pooling.proj.bias", {s.A});
      add("pooling.w", {s.A});
    } else {
      add("pooling.w", {DH});
    }
    config["tensors"] = t;
    add("classifier.weight", {s.C, DH});
    add("classifier.bias", {s.C});
    for (std::size_t k = 0; k < s.L; ++k) {
      for (std::size_t d = 0; d < D; ++d) {
        const std::string sfx = fmt::format("l{}{}", k, d ? "_reverse" : "");
        add("rnn.weight_ih_" + sfx, {G * s.H, k == 0 ? s.E : DH});
        add("rnn.weight_hh_" + sfx, {G * s.H, s.H});
        add("rnn.bias_ih_" + sfx, {G * s.H});
        add("rnn.bias_hh_" + sfx, {G * s.H});
      }
    }
  }

  void add(const std::string& name, Shape shape, bool embedding = false) {
    std::vector<float> v = random_weights(rng, element_count(shape), spec.scale, embedding);
    weights[name] = {std::move(shape), std::move(v)};
  }
  const std::vector<float>& w(const std::string& name) const { return weights.at(name).second; }

  void write(const std::filesystem::path& dir) const {
    std::filesystem::create_directories(dir);
    TinyModel::write_config(dir, config.dump(1));
    std::vector<SafetensorsTensorData> tensors;
    for (const auto& [name, sd] : weights) {
      tensors.push_back(f32_tensor(name, std::vector<std::size_t>(sd.first.begin(), sd.first.end()), sd.second));
    }
    write_safetensors((dir / "model.safetensors").string(), tensors);
  }
};

// --- double-precision reference pieces -------------------------------------------------------

using RefVec = std::vector<double>;

// y = W x + b, W [rows, x.size()] row-major.
inline RefVec ref_affine(const std::vector<float>& W, const std::vector<float>* b, const RefVec& x, std::size_t rows) {
  const std::size_t cols = x.size();
  RefVec y(rows);
  for (std::size_t r = 0; r < rows; ++r) {
    double s = b ? (*b)[r] : 0.0;
    for (std::size_t k = 0; k < cols; ++k) s += double(W[r * cols + k]) * x[k];
    y[r] = s;
  }
  return y;
}

inline double ref_sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

struct RefCell {
  const std::vector<float>*w_ih, *w_hh, *b_ih, *b_hh;
};

// One PyTorch GRU / LSTM cell step; c is used (and updated) for LSTM only.
inline void ref_cell_step(bool lstm, const RefCell& cw, const RefVec& x, RefVec& h, RefVec& c) {
  const std::size_t H = h.size(), G = lstm ? 4 : 3;
  const RefVec gi = ref_affine(*cw.w_ih, cw.b_ih, x, G * H);
  const RefVec gh = ref_affine(*cw.w_hh, cw.b_hh, h, G * H);
  RefVec out(H);
  for (std::size_t j = 0; j < H; ++j) {
    if (lstm) {
      const double i = ref_sigmoid(gi[j] + gh[j]), f = ref_sigmoid(gi[H + j] + gh[H + j]);
      const double g = std::tanh(gi[2 * H + j] + gh[2 * H + j]), o = ref_sigmoid(gi[3 * H + j] + gh[3 * H + j]);
      c[j] = f * c[j] + i * g;
      out[j] = o * std::tanh(c[j]);
    } else {
      const double r = ref_sigmoid(gi[j] + gh[j]), z = ref_sigmoid(gi[H + j] + gh[H + j]);
      const double n = std::tanh(gi[2 * H + j] + r * gh[2 * H + j]);
      out[j] = (1.0 - z) * n + z * h[j];
    }
  }
  h = out;
}

// A multi-layer (bi)directional RNN over one sequence `x` (its own length): the top layer's
// outputs [T][D*H] and the final states h_n[layer * D + d].
template <class Weights>
void ref_rnn(const Weights& m, const std::string& prefix, bool lstm, std::size_t layers, bool bidirectional,
             std::size_t H, std::vector<RefVec> x, std::vector<RefVec>& out, std::vector<RefVec>& h_n) {
  const std::size_t T = x.size(), D = bidirectional ? 2 : 1;
  h_n.clear();
  for (std::size_t k = 0; k < layers; ++k) {
    std::vector<RefVec> o(T, RefVec(D * H, 0.0));
    for (std::size_t d = 0; d < D; ++d) {
      const std::string sfx = fmt::format("l{}{}", k, d ? "_reverse" : "");
      const RefCell cw{&m.w(prefix + ".weight_ih_" + sfx), &m.w(prefix + ".weight_hh_" + sfx),
                       &m.w(prefix + ".bias_ih_" + sfx), &m.w(prefix + ".bias_hh_" + sfx)};
      RefVec h(H, 0.0), c(H, 0.0);
      for (std::size_t i = 0; i < T; ++i) {
        const std::size_t t = d ? T - 1 - i : i;
        ref_cell_step(lstm, cw, x[t], h, c);
        std::copy(h.begin(), h.end(), o[t].begin() + static_cast<std::ptrdiff_t>(d * H));
      }
      h_n.push_back(h);
    }
    x = o;
  }
  out = x;
}

// Two decodes of the same sources that must agree bit for bit (one submission, streamed,
// recorded into the caller's sequence).
inline void expect_same_decode(const DecodeResult& got, const DecodeResult& want) {
  EXPECT_EQ(got.batch, want.batch);
  EXPECT_EQ(got.steps, want.steps);
  EXPECT_EQ(got.steps_run, want.steps_run);
  EXPECT_EQ(got.lengths, want.lengths);
  EXPECT_EQ(got.tokens, want.tokens);
  EXPECT_EQ(got.scores, want.scores);
  EXPECT_EQ(got.logits, want.logits);
  EXPECT_EQ(got.attention, want.attention);
}

// Two beam searches of the same sources that must agree bit for bit (memory paths, beam() and
// record_beam()).
inline void expect_same_beams(const std::vector<std::vector<Hypothesis>>& got, const std::vector<std::vector<Hypothesis>>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (std::size_t r = 0; r < got.size(); ++r) {
    ASSERT_EQ(got[r].size(), want[r].size()) << "source row " << r;
    for (std::size_t j = 0; j < got[r].size(); ++j) {
      SCOPED_TRACE(testing::Message() << "source row " << r << ", hypothesis " << j);
      const Hypothesis &a = got[r][j], &b = want[r][j];
      EXPECT_EQ(a.tokens, b.tokens);
      EXPECT_EQ(a.score, b.score);
      EXPECT_EQ(a.norm_score, b.norm_score);
      EXPECT_EQ(a.finished, b.finished);
      EXPECT_EQ(a.logits, b.logits);
      EXPECT_EQ(a.attention, b.attention);
      EXPECT_EQ(a.token_scores, b.token_scores);
    }
  }
}

}  // namespace vkrnn::test
