#pragma once
// Small model directories written by the tests themselves (no PyTorch): a Bahdanau seq2seq
// model with deterministic random weights, its config as JSON to edit, and a temporary
// directory. Shared by tests/test_models.cpp and tests/test_models_seq2seq.cpp.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "vkrnn/safetensors.hpp"
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

struct TinySpec {
  std::string cell = "gru";
  std::size_t Vs = 7, Vt = 6, E = 3, He = 4, Hd = 5, A = 2, Le = 1, max_len = 9;
  std::uint32_t seed = 1;
  float scale = 0.5f;      // weights ~ U(-scale, scale); embeddings ~ N(0, 1)
  float eos_bias = 0.0f;   // added to output.bias[eos]
};

// A Bahdanau model (docs/model-format.md section 1).
struct TinyModel {
  TinySpec spec;
  nlohmann::json config;
  std::map<std::string, std::pair<Shape, std::vector<float>>> weights;  // name -> (shape, data)
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

  // Deterministic values: N(0, 1) for embeddings, U(-scale, scale) otherwise.
  void add(const std::string& name, Shape shape, bool embedding = false) {
    std::vector<float> v(element_count(shape));
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::uniform_real_distribution<float> uniform(-spec.scale, spec.scale);
    for (auto& x : v) x = embedding ? normal(rng) : uniform(rng);
    weights[name] = {std::move(shape), std::move(v)};
  }

  const std::vector<float>& w(const std::string& name) const { return weights.at(name).second; }

  // Writes model.json and model.safetensors (dtype applies to every tensor).
  void write(const std::filesystem::path& dir, const std::string& dtype = "F32",
             const std::map<std::string, std::string>& metadata = {{"format", "vkrnn-model"},
                                                                    {"version", "1"},
                                                                    {"architecture", "bahdanau_seq2seq"}}) const {
    std::filesystem::create_directories(dir);
    write_config(dir, config.dump(1));
    std::vector<SafetensorsTensorData> tensors;
    for (const auto& [name, sd] : weights) {
      std::vector<std::size_t> shape(sd.first.begin(), sd.first.end());
      if (dtype == "F16") tensors.push_back(f16_tensor(name, shape, sd.second));
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

}  // namespace vkrnn::test
