// Model directories (docs/model-format.md): ModelFile::load accepts a well-formed model and
// rejects every kind of malformed one with an Error naming the file and what was expected; the
// Tokenizer. Models are made here, small, without PyTorch (tests/test_models_torch.cpp checks
// the exporter's real files).
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "common/test_env.hpp"
#include "expect_error.hpp"
#include "vkrnn/model.hpp"
#include "vkrnn/safetensors.hpp"
#include "test_models_tiny.hpp"

namespace vkrnn {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

using test::TempDir;
using test::TinyModel;

// Loads dir and expects Error(code) whose message contains every fragment.
void expect_error(const std::string& dir, ErrorCode code, const std::vector<std::string>& fragments) {
  SCOPED_TRACE("loading " + dir);
  test::expect_error([&] { ModelFile::load(dir); }, code, fragments);
}

// Writes a TinyModel changed by `edit` and expects load to fail with the fragments (and the
// name model.json).
void expect_config_error(const std::function<void(json&)>& edit, std::initializer_list<std::string> fragments,
                         ErrorCode code = ErrorCode::format) {
  TempDir dir;
  TinyModel m;
  edit(m.config);
  m.write(dir.path());
  std::vector<std::string> all(fragments);
  all.push_back("model.json");
  expect_error(dir.str(), code, all);
}

TEST(ModelFile, LoadsAWellFormedModel) {
  TempDir dir;
  TinyModel m;
  m.write(dir.path());
  const ModelFile f = ModelFile::load(dir.str());
  const ModelConfig& c = f.config();
  EXPECT_EQ(c.architecture, Architecture::bahdanau_seq2seq);
  EXPECT_EQ(c.cell, CellType::gru);
  EXPECT_EQ(c.src_vocab_size, 7u);
  EXPECT_EQ(c.tgt_vocab_size, 6u);
  EXPECT_EQ(c.embedding_dim, 3u);
  EXPECT_EQ(c.encoder_hidden, 4u);
  EXPECT_EQ(c.decoder_hidden, 5u);
  EXPECT_EQ(c.attention_dim, 2u);
  EXPECT_EQ(c.score, Score::additive);
  EXPECT_EQ(c.max_decode_length, 9u);
  EXPECT_EQ(c.beam_width, 3u);
  EXPECT_DOUBLE_EQ(c.length_alpha, 0.6);
  EXPECT_EQ(c.special.eos, 2);
  EXPECT_EQ(c.tokenizer.type, TokenizerType::character);
  EXPECT_TRUE(c.tokenizer.src_append_eos);
  EXPECT_EQ(c.src_vocab.at(6), "é");
  EXPECT_EQ(f.tensor("bridge.weight"), m.weights.at("bridge.weight").second);
  EXPECT_EQ(f.shape("output.weight"), (Shape{6, 5 + 8 + 3}));
  EXPECT_EQ(f.tensor("attention.key_weight"), m.weights.at("attention.key_proj.weight").second);
  const auto& enc = f.rnn("encoder");
  EXPECT_EQ(enc.size(), 8u);
  EXPECT_EQ(enc.at("weight_hh_l0_reverse"), m.weights.at("encoder.weight_hh_l0_reverse").second);
  EXPECT_EQ(f.rnn("decoder").size(), 4u);
  EXPECT_TRUE(f.has("output.bias"));
  EXPECT_FALSE(f.has("encoder"));
  EXPECT_THROW(f.tensor("nope"), Error);
  EXPECT_THROW(f.rnn("nope"), Error);
}

TEST(ModelFile, ConvertsF16AndBf16Weights) {
  for (const std::string dtype : {"F16", "BF16"}) {
    TempDir dir;
    TinyModel m;
    m.config["weights_dtype"] = dtype;
    m.write(dir.path(), dtype);
    const ModelFile f = ModelFile::load(dir.str());
    const auto& want = m.weights.at("output.weight").second;
    const auto& got = f.tensor("output.weight");
    ASSERT_EQ(got.size(), want.size());
    for (std::size_t i = 0; i < got.size(); ++i) {
      const float rounded = dtype == "F16" ? half_to_float(float_to_half(want[i])) : bf16_to_float(float_to_bf16(want[i]));
      EXPECT_EQ(got[i], rounded) << dtype << " element " << i;
    }
  }
}

// Malformed int8 weights (docs/model-format.md): each refused naming the tensor and the file.
TEST(ModelFile, Int8WeightsAreChecked) {
  // The tensors of a TinyModel with output.weight int8, edited by `edit`.
  auto write = [](const TempDir& dir, const std::set<std::string>& int8,
                  const std::function<void(std::vector<SafetensorsTensorData>&)>& edit) {
    TinyModel m;
    m.int8 = int8;
    m.write(dir.path());
    std::vector<SafetensorsTensorData> tensors;
    for (const auto& [name, sd] : m.weights) {
      if (int8.count(name)) {
        for (auto& t : test::int8_tensors(name, sd.first, sd.second)) tensors.push_back(std::move(t));
      } else {
        tensors.push_back(f32_tensor(name, std::vector<std::size_t>(sd.first.begin(), sd.first.end()), sd.second));
      }
    }
    edit(tensors);
    write_safetensors((dir.path() / "model.safetensors").string(), tensors);
  };
  auto drop = [](std::vector<SafetensorsTensorData>& ts, const std::string& name) {
    std::erase_if(ts, [&](const SafetensorsTensorData& t) { return t.name == name; });
  };
  auto find = [](std::vector<SafetensorsTensorData>& ts, const std::string& name) -> SafetensorsTensorData& {
    return *std::find_if(ts.begin(), ts.end(), [&](const SafetensorsTensorData& t) { return t.name == name; });
  };
  {
    TempDir dir;
    write(dir, {"output.weight"}, [&](auto& ts) { drop(ts, "output.weight_scale"); });
    expect_error(dir.str(), ErrorCode::format, {"model.safetensors", "int8 tensor 'output.weight'", "role 'output.weight'",
                                                "'output.weight_scale'", "is missing"});
  }
  {
    TempDir dir;
    write(dir, {"output.weight"}, [&](auto& ts) {
      auto& t = find(ts, "output.weight_scale");
      std::vector<float> v(t.shape[0], 0.01f);
      t = f16_tensor(t.name, t.shape, v);
    });
    expect_error(dir.str(), ErrorCode::format, {"model.safetensors", "'output.weight_scale'", "dtype F16, expected F32"});
  }
  {
    TempDir dir;
    write(dir, {"output.weight"}, [&](auto& ts) {
      auto& t = find(ts, "output.weight_scale");
      t = f32_tensor(t.name, {t.shape[0] + 1}, std::vector<float>(t.shape[0] + 1, 0.01f));
    });
    expect_error(dir.str(), ErrorCode::format, {"model.safetensors", "'output.weight_scale'", "shape [7]", "[6, ", "[6]"});
  }
  {
    TempDir dir;
    write(dir, {"output.weight"}, [&](auto& ts) {
      auto& t = find(ts, "output.weight_scale");
      std::vector<float> v(t.shape[0], 0.01f);
      v[4] = -0.5f;
      t = f32_tensor(t.name, t.shape, v);
    });
    expect_error(dir.str(), ErrorCode::format, {"model.safetensors", "'output.weight_scale'", "element 4 is -0.5", ">= 0"});
  }
  {  // the weight's shape is checked like an f32 one's
    TempDir dir;
    write(dir, {"output.weight"}, [&](auto& ts) {
      auto& t = find(ts, "output.weight");
      t.shape = {t.shape[1], t.shape[0]};
      find(ts, "output.weight_scale") = f32_tensor("output.weight_scale", {t.shape[0]}, std::vector<float>(t.shape[0], 0.01f));
    });
    expect_error(dir.str(), ErrorCode::format, {"model.safetensors", "int8 tensor 'output.weight'", "expected shape [6, "});
  }
  {  // an embedding table is no dense layer
    TempDir dir;
    write(dir, {"tgt_embedding.weight"}, [](auto&) {});
    expect_error(dir.str(), ErrorCode::format, {"model.safetensors", "'tgt_embedding'", "only linear weights and rnn weight matrices may be int8", "op 'embedding'"});
  }
  {  // nor are a version-1 model's recurrent layers (version 2's may be: test_models_quantized)
    TempDir dir;
    write(dir, {"decoder.weight_hh_l0"}, [](auto&) {});
    expect_error(dir.str(), ErrorCode::format, {"model.safetensors", "'decoder.weight_hh_l0'", "dtype I8",
                                                "version-1 model's recurrent layers cannot be I8"});
  }
  {  // a scale tensor with no int8 weight is a stray tensor
    TempDir dir;
    write(dir, {}, [](auto& ts) { ts.push_back(f32_tensor("output.weight_scale", {6}, std::vector<float>(6, 0.01f))); });
    expect_error(dir.str(), ErrorCode::format, {"model.safetensors", "unexpected tensor", "'output.weight_scale'"});
  }
}

TEST(ModelFile, MissingFiles) {
  TempDir dir;
  expect_error(dir.str(), ErrorCode::io, {"model.json", "No such file"});
  expect_error((dir.path() / "nonexistent").string(), ErrorCode::io, {"model.json"});
  TinyModel m;
  m.write(dir.path());
  fs::remove(dir.path() / "model.safetensors");
  expect_error(dir.str(), ErrorCode::io, {"model.safetensors"});
}

std::vector<std::byte> file_bytes(const fs::path& path) {
  std::ifstream f(path, std::ios::binary);
  const std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  std::vector<std::byte> out(s.size());
  std::memcpy(out.data(), s.data(), s.size());
  return out;
}

// ModelFile::load_from_memory: model.json's text and the safetensors bytes from memory, validated
// as load() validates a directory; `origin` names both in the config and the messages.
TEST(ModelFile, ParsesFromMemory) {
  TempDir dir;
  TinyModel m;
  m.write(dir.path());
  const std::string config = m.config.dump();
  const ModelFile disk = ModelFile::load(dir.str());
  const ModelFile mem = ModelFile::load_from_memory(config, file_bytes(dir.path() / "model.safetensors"));
  EXPECT_EQ(mem.config().directory, "");
  EXPECT_EQ(mem.config().config_path, "<memory> (model.json)");
  EXPECT_EQ(mem.config().weights_path, "<memory> (model.safetensors)");
  EXPECT_EQ(mem.config().src_vocab, disk.config().src_vocab);
  EXPECT_EQ(mem.roles(), disk.roles());
  for (const auto& role : disk.roles()) EXPECT_EQ(mem.tensor(role), disk.tensor(role)) << role;
  EXPECT_EQ(mem.rnn("encoder"), disk.rnn("encoder"));

  auto parse_error = [&](std::string_view json_text, std::vector<std::byte> weights, ErrorCode code,
                         const std::vector<std::string>& fragments) {
    test::expect_error([&] { ModelFile::load_from_memory(json_text, weights, "bundle:dates"); }, code, fragments);
  };
  const auto weights = file_bytes(dir.path() / "model.safetensors");
  parse_error("{", weights, ErrorCode::format, {"bundle:dates", "model.json", "invalid JSON"});
  parse_error("", weights, ErrorCode::format, {"bundle:dates", "model.json", "invalid JSON"});
  parse_error(config, {}, ErrorCode::format, {"bundle:dates", "model.safetensors"});
  auto cut = weights;
  cut.resize(cut.size() - 1);
  parse_error(config, cut, ErrorCode::format, {"bundle:dates", "model.safetensors"});
  TinyModel other;
  other.config["tensors"]["bridge.weight"] = "bridge.w";
  parse_error(other.config.dump(), weights, ErrorCode::format, {"bundle:dates", "'bridge.w'", "missing"});
}

TEST(ModelFile, MalformedJson) {
  TempDir dir;
  TinyModel m;
  m.write(dir.path());
  for (const std::string text : {"", "{", "{\"format\": \"vkrnn-model\",}", "not json", "\xff\xfe{}"}) {
    TinyModel::write_config(dir.path(), text);
    expect_error(dir.str(), ErrorCode::format, {"model.json", "invalid JSON at byte"});
  }
  TinyModel::write_config(dir.path(), "[1, 2]");
  expect_error(dir.str(), ErrorCode::format, {"model.json", "top level"});
  TinyModel::write_config(dir.path(), std::string(100000, '[') + std::string(100000, ']'));
  expect_error(dir.str(), ErrorCode::format, {"model.json", "nested deeper"});
  // A config cut short anywhere is rejected, never a crash.
  const std::string full = m.config.dump();
  for (std::size_t cut = 0; cut < full.size(); cut += 37) {
    TinyModel::write_config(dir.path(), full.substr(0, cut));
    EXPECT_THROW(ModelFile::load(dir.str()), Error) << "cut at " << cut;
  }
}

TEST(ModelFile, FormatVersionArchitecture) {
  expect_config_error([](json& c) { c["format"] = "onnx"; }, {"field 'format'", "vkrnn-model", "'onnx'"});
  expect_config_error([](json& c) { c.erase("format"); }, {"missing field 'format'"});
  expect_config_error([](json& c) { c["version"] = 3; }, {"field 'version'", "versions 1 and 2", "got 3"});
  expect_config_error([](json& c) { c["version"] = "1"; }, {"field 'version'", "'1'"});
  expect_config_error([](json& c) { c["version"] = 1.5; }, {"field 'version'", "1.5"});
  expect_config_error([](json& c) { c["architecture"] = "transformer"; },
                      {"field 'architecture'", "'transformer'", "bahdanau_seq2seq", "luong_seq2seq"});
  expect_config_error([](json& c) { c["cell"] = "rnn_tanh"; }, {"field 'cell'", "'gru'", "'lstm'"});
}

TEST(ModelFile, FieldsAreChecked) {
  expect_config_error([](json& c) { c.erase("encoder_hidden"); }, {"missing field 'encoder_hidden'"});
  expect_config_error([](json& c) { c["encoder_hidden"] = 0; }, {"field 'encoder_hidden'", "got 0"});
  expect_config_error([](json& c) { c["encoder_hidden"] = -4; }, {"field 'encoder_hidden'", "got -4"});
  expect_config_error([](json& c) { c["encoder_hidden"] = 4.0; }, {"field 'encoder_hidden'", "4.0"});
  expect_config_error([](json& c) { c["encoder_hidden"] = "4"; }, {"field 'encoder_hidden'", "'4'"});
  expect_config_error([](json& c) { c["embedding_dim"] = 1ull << 40; }, {"field 'embedding_dim'"});
  expect_config_error([](json& c) { c["encoder_bidirectional"] = false; }, {"encoder_bidirectional", "true"});
  expect_config_error([](json& c) { c["decoder_layers"] = 2; }, {"decoder_layers", "must be 1"});
  expect_config_error([](json& c) { c["input_feeding"] = true; }, {"input_feeding"});
  expect_config_error([](json& c) { c["input_feeding"] = 1; }, {"field 'input_feeding'", "true or false"});
  expect_config_error([](json& c) { c["score"] = "dot"; }, {"field 'score'", "'additive'"});
  expect_config_error([](json& c) { c["beam"] = 3; }, {"field 'beam'"});
  expect_config_error([](json& c) { c["beam"]["length_alpha"] = "x"; }, {"length_alpha"});
  expect_config_error([](json& c) { c["tokenizer"]["type"] = "bpe"; }, {"field 'type'", "'char'", "'word'"});
  expect_config_error([](json& c) { c.erase("tokenizer"); }, {"missing field 'tokenizer'"});
  expect_config_error([](json& c) { c["weights_dtype"] = "F64"; }, {"weights_dtype"});
}

TEST(ModelFile, VocabulariesAndSpecialTokens) {
  expect_config_error([](json& c) { c["src_vocab"].erase(c["src_vocab"].size() - 1); },
                      {"field 'src_vocab'", "6 entries", "size is 7"});
  expect_config_error([](json& c) { c["tgt_vocab"][5] = "x"; }, {"field 'tgt_vocab'", "entry 5", "duplicate"});
  expect_config_error([](json& c) { c["tgt_vocab"][4] = 4; }, {"field 'tgt_vocab'", "entry 4", "string"});
  expect_config_error([](json& c) { c["src_vocab"] = "abc"; }, {"field 'src_vocab'", "list"});
  expect_config_error([](json& c) { c["special_tokens"]["eos"] = 6; }, {"special_tokens.eos", "[0, 6)", "got 6"});
  expect_config_error([](json& c) { c["special_tokens"]["pad"] = -1; }, {"special_tokens.pad"});
  expect_config_error([](json& c) { c["special_tokens"].erase("bos"); }, {"missing field 'bos'"});
}

TEST(ModelFile, TensorMapIsStrict) {
  expect_config_error([](json& c) { c["tensors"].erase("bridge.bias"); }, {"role 'bridge.bias' is missing", "[5]"});
  expect_config_error([](json& c) { c["tensors"]["bridge.scale"] = "bridge.weight"; },
                      {"unexpected role 'bridge.scale'"});
  expect_config_error([](json& c) { c["tensors"]["bridge.bias"] = 3; }, {"tensors.bridge.bias", "string"});
  expect_config_error([](json& c) { c["tensors"]["encoder"].erase("weight_hh_l0_reverse"); },
                      {"tensors.encoder", "'weight_hh_l0_reverse' is missing"});
  expect_config_error([](json& c) { c["tensors"]["decoder"]["weight_hr_l0"] = "x"; },
                      {"tensors.decoder", "unexpected parameter 'weight_hr_l0'"});
  expect_config_error([](json& c) { c["tensors"]["decoder"] = "decoder"; }, {"tensors.decoder", "expected an object"});
  expect_config_error([](json& c) { c["tensors"]["bridge.bias"] = "output.bias"; }, {"'output.bias'", "named by both"});
  expect_config_error([](json& c) { c["tensors"] = json::array(); }, {"field 'tensors'", "object"});
  // Two encoder layers in the config, one in the map.
  expect_config_error([](json& c) { c["encoder_layers"] = 2; }, {"tensors.encoder", "_l1' is missing"});
}

TEST(ModelFile, WeightsMustMatchTheConfig) {
  {  // missing tensor
    TempDir dir;
    TinyModel m;
    m.weights.erase("attention.v");
    m.write(dir.path());
    expect_error(dir.str(), ErrorCode::format, {"model.safetensors", "'attention.v'", "role 'attention.v'", "missing"});
  }
  {  // extra tensor
    TempDir dir;
    TinyModel m;
    m.add("surprise", {2});
    m.write(dir.path());
    expect_error(dir.str(), ErrorCode::format, {"model.safetensors", "unexpected tensor", "'surprise'"});
  }
  {  // renamed tensor: missing and extra at once
    TempDir dir;
    TinyModel m;
    m.weights["bridge.w"] = m.weights.at("bridge.weight");
    m.weights.erase("bridge.weight");
    m.write(dir.path());
    expect_error(dir.str(), ErrorCode::format, {"'bridge.weight'", "missing", "'bridge.w'"});
  }
  {  // mis-shaped tensors: transposed, wrong length, wrong rank
    for (const auto& [name, shape] : std::vector<std::pair<std::string, Shape>>{
             {"bridge.weight", {4, 5}}, {"output.bias", {7}}, {"attention.v", {1, 2}},
             {"decoder.weight_ih_l0", {15, 12}}}) {
      TempDir dir;
      TinyModel m;
      m.add(name, shape);
      m.write(dir.path());
      const Shape want = TinyModel().weights.at(name).first;
      expect_error(dir.str(), ErrorCode::format,
                   {"model.safetensors", "'" + name + "'", fmt::format("expected shape [{}]", fmt::join(want, ", ")),
                    fmt::format("got [{}]", fmt::join(shape, ", "))});
    }
  }
  {  // integer tensor
    TempDir dir;
    TinyModel m;
    m.write(dir.path());
    std::vector<SafetensorsTensorData> tensors;
    for (const auto& [name, sd] : m.weights) {
      std::vector<std::size_t> shape(sd.first.begin(), sd.first.end());
      if (name == "output.bias") {
        std::vector<std::int32_t> v(6, 1);
        tensors.push_back(i32_tensor(name, shape, v));
      } else {
        tensors.push_back(f32_tensor(name, shape, sd.second));
      }
    }
    write_safetensors((dir.path() / "model.safetensors").string(), tensors);
    expect_error(dir.str(), ErrorCode::format, {"'output.bias'", "dtype I32", "F32, F16 or BF16"});
  }
  {  // metadata of another architecture
    TempDir dir;
    TinyModel m;
    m.write(dir.path(), "F32", {{"format", "vkrnn-model"}, {"version", "1"}, {"architecture", "luong_seq2seq"}});
    expect_error(dir.str(), ErrorCode::format, {"metadata 'architecture'", "'luong_seq2seq'"});
  }
  {  // no metadata at all is accepted
    TempDir dir;
    TinyModel m;
    m.write(dir.path(), "F32", {});
    EXPECT_NO_THROW(ModelFile::load(dir.str()));
  }
}

TEST(ModelFile, WeightsFileNameStaysInTheDirectory) {
  for (const std::string name : {"../model.safetensors", "/etc/passwd", "sub/model.safetensors", "", ".."}) {
    expect_config_error([&](json& c) { c["weights"] = name; }, {"field 'weights'"});
  }
  {  // another name inside the directory is fine
    TempDir dir;
    TinyModel m;
    m.write(dir.path());
    fs::rename(dir.path() / "model.safetensors", dir.path() / "w.safetensors");
    m.config["weights"] = "w.safetensors";
    TinyModel::write_config(dir.path(), m.config.dump());
    EXPECT_NO_THROW(ModelFile::load(dir.str()));
  }
}

TEST(ModelFile, CorruptWeightsFile) {
  TempDir dir;
  TinyModel m;
  m.write(dir.path());
  const fs::path wp = dir.path() / "model.safetensors";
  std::vector<char> bytes(fs::file_size(wp));
  {
    std::ifstream f(wp, std::ios::binary);
    f.read(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }
  auto write_bytes = [&](const std::vector<char>& b) {
    std::ofstream f(wp, std::ios::binary | std::ios::trunc);
    f.write(b.data(), static_cast<std::streamsize>(b.size()));
  };
  // Truncated anywhere (header or data): a format error naming the file, never a crash.
  for (std::size_t cut : {std::size_t(0), std::size_t(5), std::size_t(8), std::size_t(40), bytes.size() / 2, bytes.size() - 1}) {
    write_bytes(std::vector<char>(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(cut)));
    expect_error(dir.str(), ErrorCode::format, {"model.safetensors"});
  }
  // Header length pointing beyond the file.
  auto big = bytes;
  big[5] = 0x7f;
  write_bytes(big);
  expect_error(dir.str(), ErrorCode::format, {"model.safetensors"});
  // Trailing garbage after the data.
  auto longer = bytes;
  longer.insert(longer.end(), 16, 'x');
  write_bytes(longer);
  expect_error(dir.str(), ErrorCode::format, {"model.safetensors"});
  // Random single-byte corruption of the header: either still valid or a clean Error.
  std::mt19937 rng(7);
  const std::size_t header = 8 + static_cast<std::size_t>(static_cast<unsigned char>(bytes[0])) +
                             256 * static_cast<std::size_t>(static_cast<unsigned char>(bytes[1]));
  for (int i = 0; i < 200; ++i) {
    auto b = bytes;
    b[8 + rng() % (header - 8)] = static_cast<char>(rng() % 256);
    write_bytes(b);
    try {
      ModelFile::load(dir.str());
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::format) << e.what();
    }
  }
}

// The other architectures' fields, with configs made by editing the tiny Bahdanau one.
TEST(ModelFile, OtherArchitecturesCheckTheirFields) {
  // A luong config without its fields.
  expect_config_error([](json& c) { c["architecture"] = "luong_seq2seq"; }, {"missing field 'hidden'"});
  // Luong's fields with this score.
  auto luong = [](const char* score) {
    return [score](json& c) {
      c["architecture"] = "luong_seq2seq";
      c["hidden"] = 4;
      c["layers"] = 1;
      c["score"] = score;
    };
  };
  expect_config_error(luong("additive"), {"field 'score'", "'dot'", "'general'", "'concat'"});
  expect_config_error(luong("dot"), {"role 'combine.weight' is missing", "[4, 8]"});
  expect_config_error([](json& c) { c["architecture"] = "rnn_attention_classifier"; }, {"missing field 'vocab_size'"});
  // The classifier fields over the tiny model's source vocabulary, softmax output.
  auto classifier = [](json& c, const char* architecture, const std::vector<std::string>& labels) {
    c["architecture"] = architecture;
    c["vocab_size"] = 7;
    c["vocab"] = c["src_vocab"];
    c["hidden"] = 4;
    c["layers"] = 1;
    c["bidirectional"] = false;
    c["num_classes"] = labels.size();
    c["labels"] = labels;
    c["output_activation"] = "softmax";
  };
  expect_config_error(
      [&](json& c) {
        classifier(c, "self_attention_rnn", {"a", "b"});
        c["heads"] = 2;  // does not divide embedding_dim 3
      },
      {"field 'heads'", "does not divide embedding_dim 3"});
  expect_config_error([&](json& c) { classifier(c, "rnn_attention_classifier", {"a"}); },
                      {"softmax needs at least 2 classes"});
}

// --- tokenizer ----------------------------------------------------------------------------

TEST(Tokenizer, CharacterLevel) {
  const SpecialTokens sp{0, 1, 2, 3};
  const Tokenizer t({"<pad>", "<s>", "</s>", "<unk>", "a", "b", "é", " ", "ж", "😀"}, {TokenizerType::character, false, true}, sp);
  EXPECT_EQ(t.encode("ab é"), (std::vector<std::int32_t>{4, 5, 7, 6}));
  EXPECT_EQ(t.encode("abc", true), (std::vector<std::int32_t>{4, 5, 3, 2}));
  EXPECT_EQ(t.encode("ж😀A"), (std::vector<std::int32_t>{8, 9, 3}));
  EXPECT_EQ(t.encode(""), (std::vector<std::int32_t>{}));
  EXPECT_EQ(t.decode(std::vector<std::int32_t>{4, 6, 7, 3, 8, 2, 5}), "aé ж");
  EXPECT_EQ(t.decode(std::vector<std::int32_t>{1, 9, 0, 5}), "😀b");
  for (const std::string bad : {"\xff", "a\xc3", "\xc0\x80", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\x80"}) {
    test::expect_error([&] { t.encode(bad); }, ErrorCode::invalid_argument, {"UTF-8"});
  }
  test::expect_error([&] { t.decode(std::vector<std::int32_t>{4, 10}); }, ErrorCode::invalid_argument,
                     {"id 10 at position 1"});
  EXPECT_THROW(t.decode(std::vector<std::int32_t>{-1}), Error);
}

TEST(Tokenizer, WordLevelLowercase) {
  const SpecialTokens sp{0, -1, -1, 1};
  const Tokenizer t({"<pad>", "<unk>", "great", "film", "élan", "привет"}, {TokenizerType::word, true, false}, sp);
  EXPECT_EQ(t.encode("  Great\tFILM\n\u00a0ÉLAN  boring ПРИВЕТ "), (std::vector<std::int32_t>{2, 3, 4, 1, 5}));
  EXPECT_EQ(t.decode(std::vector<std::int32_t>{2, 1, 3, 0, 4}), "great film élan");
  EXPECT_THROW(t.encode("x", true), Error);  // no EOS in a classifier vocabulary
  const Tokenizer cased({"<pad>", "<unk>", "Great"}, {TokenizerType::word, false, false}, sp);
  EXPECT_EQ(cased.encode("Great great"), (std::vector<std::int32_t>{2, 1}));
}

// UnknownTokens::error names the token as the text has it (escaped), and its 1-based character
// position; map_to_unk (the default of encode) gives unk.
TEST(Tokenizer, UnknownTokensPolicy) {
  const SpecialTokens sp{0, 1, 2, 3};
  const Tokenizer chars({"<pad>", "<s>", "</s>", "<unk>", "a", "b", "é"}, {TokenizerType::character, false, true}, sp);
  EXPECT_EQ(chars.encode("aßb", false, UnknownTokens::map_to_unk), (std::vector<std::int32_t>{4, 3, 5}));
  test::expect_error([&] { chars.encode("aéßb", true, UnknownTokens::error); }, ErrorCode::invalid_argument,
                     {"character 'ß' (U+00DF) at position 3", "not in the vocabulary"});
  test::expect_error([&] { chars.encode("ab\x1b", false, UnknownTokens::error); }, ErrorCode::invalid_argument,
                     {"character '\\x1b' (U+001B) at position 3"});
  test::expect_error([&] { chars.encode("a\\", false, UnknownTokens::error); }, ErrorCode::invalid_argument,
                     {"character '\\\\' (U+005C) at position 2"});
  test::expect_error([&] { chars.encode("a\x01", false, UnknownTokens::error); }, ErrorCode::invalid_argument,
                     {"character '\\x01' (U+0001) at position 2"});
  EXPECT_EQ(chars.encode("abé", true, UnknownTokens::error), (std::vector<std::int32_t>{4, 5, 6, 2}));

  const Tokenizer words({"<pad>", "<unk>", "great", "film"}, {TokenizerType::word, true, false}, SpecialTokens{0, -1, -1, 1});
  EXPECT_EQ(words.encode("GREAT boring film"), (std::vector<std::int32_t>{2, 1, 3}));
  test::expect_error([&] { words.encode(" GREAT\tBoring film", false, UnknownTokens::error); }, ErrorCode::invalid_argument,
                     {"word 'Boring' at position 8"});

  // Without an unk token (a version-2 model may have none) an unknown token is an error under
  // either policy, never id -1.
  const Tokenizer no_unk({"<pad>", "<s>", "</s>", "a"}, {TokenizerType::character, false, false}, SpecialTokens{0, 1, 2, -1});
  EXPECT_EQ(no_unk.encode("aa", true, UnknownTokens::map_to_unk), (std::vector<std::int32_t>{3, 3, 2}));
  for (auto policy : {UnknownTokens::map_to_unk, UnknownTokens::error}) {
    test::expect_error([&] { no_unk.encode("ab", false, policy); }, ErrorCode::invalid_argument,
                       {"character 'b' (U+0062) at position 2", "no unk token"});
  }
}

TEST(Tokenizer, CheckTokenIds) {
  EXPECT_NO_THROW(check_token_ids(std::vector<std::int32_t>{0, 5, 6}, 7, "src"));
  test::expect_error([&] { check_token_ids(std::vector<std::int32_t>{0, 7}, 7, "sources", 3); },
                     ErrorCode::invalid_argument, {"token id 7 at row 3, position 1", "[0, 7)"});
  EXPECT_THROW(check_token_ids(std::vector<std::int32_t>{-2}, 7, "src"), Error);
}

}  // namespace
}  // namespace vkrnn
