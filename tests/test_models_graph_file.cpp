// Model format version 2 written by hand (no PyTorch): a small graph classifier and a small
// graph seq2seq model load from a directory and from memory and run (the classifier against a
// double-precision reference); every kind of bad graph is rejected at load with an error naming
// the graph and the node: unknown op, option or slot, a tensor read before (or never) produced,
// produced twice, a cycle, mismatched shapes, missing / mis-shaped / extra weights, views out of
// bounds, recurrent state of another shape, missing task graphs and outputs.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "common/test_env.hpp"
#include "expect_error.hpp"
#include "test_models_tiny.hpp"
#include "vkrnn/classifier.hpp"
#include "vkrnn/linear.hpp"
#include "vkrnn/model.hpp"
#include "vkrnn/safetensors.hpp"
#include "vkrnn/seq2seq.hpp"

namespace vkrnn {
namespace {

using json = nlohmann::json;
using test::context;
using test::TempDir;

// A version-2 model being written: config and weights.
struct GraphModel {
  json config;
  std::map<std::string, std::pair<Shape, std::vector<float>>> weights;
  std::set<std::string> int8;  // written as I8 + F32 "<name>_scale" (one scale per row; 1-D: per element)
  std::mt19937 rng{5};

  void add(const std::string& name, Shape shape, bool embedding = false) {
    std::vector<float> v = test::random_weights(rng, element_count(shape), 0.5f, embedding);
    weights[name] = {std::move(shape), std::move(v)};
  }
  const std::vector<float>& w(const std::string& name) const { return weights.at(name).second; }
  json& node(const std::string& graph, const std::string& name) {
    for (json& n : config["graphs"][graph]["nodes"])
      if (n["name"] == name) return n;
    throw std::runtime_error("no node " + name);
  }

  std::vector<std::byte> safetensors() const {
    std::vector<SafetensorsTensorData> tensors;
    for (const auto& [name, sd] : weights) {
      if (!int8.count(name)) {
        tensors.push_back(f32_tensor(name, std::vector<std::size_t>(sd.first.begin(), sd.first.end()), sd.second));
        continue;
      }
      const Shape rows = sd.first.size() == 1 ? Shape{sd.first[0], 1} : sd.first;
      auto q = test::int8_tensors(name, rows, sd.second);
      q[0].shape = std::vector<std::size_t>(sd.first.begin(), sd.first.end());
      for (auto& t : q) tensors.push_back(std::move(t));
    }
    return serialize_safetensors(tensors, {{"format", "vkrnn-model"}, {"version", "2"}});
  }
  void write(const std::filesystem::path& dir) const {
    std::filesystem::create_directories(dir);
    test::TinyModel::write_config(dir, config.dump(1));
    const auto bytes = safetensors();
    std::ofstream f(dir / "model.safetensors", std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  }
};

json rnn_weights(const std::string& prefix, std::size_t layers, bool bidirectional) {
  json m = json::object();
  for (std::size_t k = 0; k < layers; ++k)
    for (int d = 0; d < (bidirectional ? 2 : 1); ++d)
      for (const char* p : {"weight_ih_l", "weight_hh_l", "bias_ih_l", "bias_hh_l"}) {
        const std::string param = std::string(p) + std::to_string(k) + (d ? "_reverse" : "");
        m[param] = prefix + "." + param;
      }
  return m;
}

constexpr std::size_t kV = 7, kE = 3, kH = 4, kC = 2;

// embedding -> 2-layer bi-GRU (lengths) -> [top forward; top backward] -> linear: logits.
GraphModel classifier() {
  GraphModel m;
  m.config = {{"format", "vkrnn-model"}, {"version", 2}, {"task", "classifier"}, {"weights", "model.safetensors"}};
  json nodes = json::array();
  nodes.push_back({{"name", "embed"}, {"op", "embedding"}, {"inputs", {{"ids", "tokens"}}}, {"outputs", {{"out", "x"}}},
                   {"weights", {{"weight", "emb"}}}});
  nodes.push_back({{"name", "rnn"}, {"op", "rnn"}, {"inputs", {{"x", "x"}, {"lengths", "lengths"}}},
                   {"outputs", {{"output", "h"}, {"h_n", "h_n"}}},
                   {"options", {{"cell", "gru"}, {"hidden_size", kH}, {"num_layers", 2}, {"bidirectional", true}}},
                   {"weights", rnn_weights("rnn", 2, true)}});
  nodes.push_back({{"name", "fwd"}, {"op", "select"}, {"inputs", {{"x", "h_n"}}}, {"outputs", {{"out", "top_fwd"}}}, {"options", {{"index", -2}}}});
  nodes.push_back({{"name", "bwd"}, {"op", "select"}, {"inputs", {{"x", "h_n"}}}, {"outputs", {{"out", "top_bwd"}}}, {"options", {{"index", 3}}}});
  nodes.push_back({{"name", "cat"}, {"op", "concat"}, {"inputs", {{"x", {"top_fwd", "top_bwd"}}}}, {"outputs", {{"out", "pooled"}}}});
  nodes.push_back({{"name", "head"}, {"op", "linear"}, {"inputs", {{"x", "pooled"}}}, {"outputs", {{"y", "logits"}}},
                   {"weights", {{"weight", "head.weight"}, {"bias", "head.bias"}}}});
  m.config["graphs"] = {{"forward", {{"inputs", {{"tokens", {{"from", "tokens"}}}, {"lengths", {{"from", "lengths"}}}}},
                                     {"nodes", nodes},
                                     {"outputs", {{"logits", "logits"}, {"rnn_outputs", "h"}}}}}};
  m.add("emb", {kV, kE}, true);
  for (std::size_t k = 0; k < 2; ++k)
    for (const char* d : {"", "_reverse"}) {
      const std::string sfx = fmt::format("l{}{}", k, d);
      m.add("rnn.weight_ih_" + sfx, {3 * kH, k ? 2 * kH : kE});
      m.add("rnn.weight_hh_" + sfx, {3 * kH, kH});
      m.add("rnn.bias_ih_" + sfx, {3 * kH});
      m.add("rnn.bias_hh_" + sfx, {3 * kH});
    }
  m.add("head.weight", {kC, 2 * kH});
  m.add("head.bias", {kC});
  return m;
}

// A GRU encoder whose final state seeds a GRU decoder; dot attention; logits from [out; ctx];
// one piece of state from zeros (a running context fed back).
GraphModel seq2seq() {
  GraphModel m;
  m.config = {{"format", "vkrnn-model"}, {"version", 2}, {"task", "seq2seq"}, {"weights", "model.safetensors"},
              {"special_tokens", {{"bos", 1}, {"eos", 2}}}, {"decode", {{"max_length", 6}}}};
  json enc = {{"inputs", {{"tokens", {{"from", "tokens"}}}, {"lengths", {{"from", "lengths"}}}}},
              {"nodes",
               {{{"name", "embed"}, {"op", "embedding"}, {"inputs", {{"ids", "tokens"}}}, {"outputs", {{"out", "x"}}}, {"weights", {{"weight", "src"}}}},
                {{"name", "rnn"}, {"op", "rnn"}, {"inputs", {{"x", "x"}, {"lengths", "lengths"}}}, {"outputs", {{"output", "memory"}, {"h_n", "h_n"}}},
                 {"options", {{"cell", "gru"}, {"hidden_size", kH}}}, {"weights", rnn_weights("enc", 1, false)}}}},
              {"outputs", {{"memory", "memory"}, {"initial_state", "h_n"}}}};
  json dec = {{"inputs",
               {{"token", {{"from", "token"}}},
                {"lengths", {{"from", "lengths"}}},
                {"memory", {{"from", "encoder:memory"}}},
                {"h", {{"from", "encoder:h_n"}, {"next", "h_new"}}},
                {"feed", {{"from", "zeros"}, {"shape", {"B", kH}}, {"next", "ctx"}}}}},
              {"nodes",
               {{{"name", "embed"}, {"op", "embedding"}, {"inputs", {{"ids", "token"}}}, {"outputs", {{"out", "e"}}}, {"weights", {{"weight", "tgt"}}}},
                {{"name", "in"}, {"op", "concat"}, {"inputs", {{"x", {"e", "feed"}}}}, {"outputs", {{"out", "xin"}}}},
                {{"name", "cell"}, {"op", "rnn"}, {"inputs", {{"x", "xin"}, {"h0", "h"}}}, {"outputs", {{"output", "out"}, {"h_n", "h_new"}}},
                 {"options", {{"cell", "gru"}, {"hidden_size", kH}}}, {"weights", rnn_weights("dec", 1, false)}},
                {{"name", "attn"}, {"op", "attention"}, {"inputs", {{"keys", "memory"}, {"values", "memory"}, {"query", "out"}, {"lengths", "lengths"}}},
                 {"outputs", {{"context", "ctx"}, {"weights", "a"}}}, {"options", {{"score", "dot"}}}},
                {{"name", "cat"}, {"op", "concat"}, {"inputs", {{"x", {"out", "ctx"}}}}, {"outputs", {{"out", "oc"}}}},
                {{"name", "proj"}, {"op", "linear"}, {"inputs", {{"x", "oc"}}}, {"outputs", {{"y", "logits"}}},
                 {"weights", {{"weight", "out.weight"}, {"bias", "out.bias"}}}}}},
              {"outputs", {{"logits", "logits"}, {"attention", "a"}}}};
  m.config["graphs"] = {{"encoder", enc}, {"decoder_step", dec}};
  m.add("src", {9, kE}, true);
  m.add("tgt", {kV, kE}, true);
  for (const char* p : {"enc", "dec"}) {
    m.add(fmt::format("{}.weight_ih_l0", p), {3 * kH, std::string(p) == "enc" ? kE : kE + kH});
    m.add(fmt::format("{}.weight_hh_l0", p), {3 * kH, kH});
    m.add(fmt::format("{}.bias_ih_l0", p), {3 * kH});
    m.add(fmt::format("{}.bias_hh_l0", p), {3 * kH});
  }
  m.add("out.weight", {kV, 2 * kH});
  m.add("out.bias", {kV});
  return m;
}

// Writes m (changed by `edit`) and expects Error(format) naming every fragment.
void expect_load_error(GraphModel m, const std::function<void(GraphModel&)>& edit, std::vector<std::string> fragments) {
  edit(m);
  TempDir dir;
  m.write(dir.path());
  SCOPED_TRACE(fmt::format("expecting: {}", fmt::join(fragments, " / ")));
  test::expect_error([&] { ModelFile::load(dir.str()); }, ErrorCode::format, fragments);
}

TEST(GraphFile, ClassifierLoadsAndMatchesTheReference) {
  const GraphModel m = classifier();
  TempDir dir;
  m.write(dir.path());
  const ModelFile f = ModelFile::load(dir.str());
  EXPECT_EQ(f.config().version, 2);
  EXPECT_EQ(f.config().task, ModelTask::classifier);
  EXPECT_EQ(f.config().architecture, Architecture::graph);
  EXPECT_EQ(f.config().vocab_size, kV);       // from the embedding table
  EXPECT_EQ(f.config().num_classes, kC);      // from the logits
  EXPECT_EQ(f.config().labels, (std::vector<std::string>{"0", "1"}));
  EXPECT_EQ(f.tensor("head.bias"), m.w("head.bias"));

  const Classifier model(context(), f);
  const auto inputs = test::random_token_rows({5, 1, 3}, 0, kV, 11);
  const ClassifyResult r = model.classify(inputs, {.return_rnn = true, .outputs = {"pooled", "top_bwd"}});
  ASSERT_EQ(r.logits.size(), inputs.size() * kC);
  EXPECT_EQ(r.stats.submissions, 1u);
  EXPECT_EQ(r.outputs.at("pooled").shape, (Shape{3, 2 * kH}));
  EXPECT_EQ(r.outputs.at("top_bwd").shape, (Shape{3, kH}));
  for (std::size_t b = 0; b < inputs.size(); ++b) {
    std::vector<test::RefVec> x;
    for (auto id : inputs[b]) {
      const auto first = m.w("emb").begin() + static_cast<std::ptrdiff_t>(static_cast<std::size_t>(id) * kE);
      x.emplace_back(first, first + kE);
    }
    std::vector<test::RefVec> h, h_n;
    test::ref_rnn(m, "rnn", false, 2, true, kH, x, h, h_n);
    test::RefVec pooled = h_n[2];
    pooled.insert(pooled.end(), h_n[3].begin(), h_n[3].end());
    const test::RefVec logits = test::ref_affine(m.w("head.weight"), &m.w("head.bias"), pooled, kC);
    double mx = std::max(logits[0], logits[1]), sum = std::exp(logits[0] - mx) + std::exp(logits[1] - mx);
    for (std::size_t c = 0; c < kC; ++c) {
      EXPECT_NEAR(r.logits[b * kC + c], logits[c], 1e-5) << "row " << b;
      EXPECT_NEAR(r.probs[b * kC + c], std::exp(logits[c] - mx) / sum, 1e-5) << "row " << b;
    }
    for (std::size_t j = 0; j < 2 * kH; ++j) EXPECT_NEAR(r.outputs.at("pooled").values[b * 2 * kH + j], pooled[j], 1e-5);
  }
  // No vocabulary: ids only.
  test::expect_error([&] { model.classify_text({"a b"}); }, ErrorCode::invalid_argument, {"no vocabulary"});
  test::expect_error([&] { model.classify(inputs, {.outputs = {"nope"}}); }, ErrorCode::not_found, {"no tensor 'nope'"});
}

TEST(GraphFile, LoadsFromMemory) {
  const GraphModel m = classifier();
  TempDir dir;
  m.write(dir.path());
  const auto inputs = test::random_token_rows({4, 2}, 0, kV, 3);
  const Classifier from_dir = Classifier::load(context(), dir.str());
  const auto bytes = m.safetensors();
  const std::string text = m.config.dump();
  const Classifier from_memory = Classifier::load_from_memory(context(), text, bytes);
  EXPECT_EQ(from_dir.classify(inputs).logits, from_memory.classify(inputs).logits);
  EXPECT_EQ(from_memory.config().directory, "");
  // A bad buffer names where it came from.
  test::expect_error([&] { ModelFile::load_from_memory(text, std::span(bytes).first(20), "my buffers"); }, ErrorCode::format,
                     {"my buffers"});
  test::expect_error([&] { ModelFile::load_from_memory("{", bytes, "my buffers"); }, ErrorCode::format,
                     {"my buffers", "invalid JSON"});
}

TEST(GraphFile, Seq2SeqRunsWithZeroAndEncoderState) {
  const GraphModel m = seq2seq();
  const Seq2Seq model = Seq2Seq::load_from_memory(context(), m.config.dump(), m.safetensors());
  EXPECT_EQ(model.config().src_vocab_size, 9u);
  EXPECT_EQ(model.config().tgt_vocab_size, kV);
  EXPECT_EQ(model.config().special.pad, 0);  // the default
  const auto sources = test::random_token_rows({4, 1, 3}, 3, 9, 8);
  const DecodeResult g = model.greedy(sources, {.return_logits = true, .return_attention = true, .outputs = {"h_new", "ctx"}});
  EXPECT_EQ(g.stats.submissions, 1u);
  EXPECT_EQ(g.outputs.at("h_new").shape, (Shape{g.steps, 1, 3, kH}));
  EXPECT_EQ(g.outputs.at("ctx").shape, (Shape{g.steps, 3, kH}));
  // The incremental API gives the same (the fed-back context is recurrent state from zeros).
  const auto enc = model.encode(sources);
  EXPECT_EQ(model.read_encoder(enc, "h_n").shape, (Shape{1, 3, kH}));
  EXPECT_EQ(model.read_encoder(enc, "memory").values, context().read<float>(enc.encoder_outputs()));
  auto st = model.start(enc, {.return_logits = true, .outputs = {"ctx"}});
  for (std::size_t t = 0; t < g.steps; ++t) {
    const StepResult r = model.step(st);
    for (std::size_t b = 0; b < 3; ++b) {
      if (t >= static_cast<std::size_t>(g.lengths[b])) continue;
      EXPECT_EQ(r.tokens[b], g.tokens[b * g.steps + t]) << "row " << b << " step " << t;
      for (std::size_t j = 0; j < kH; ++j) {
        EXPECT_EQ(r.outputs.at("ctx").values[b * kH + j], g.outputs.at("ctx").values[(t * 3 + b) * kH + j]);
      }
    }
  }
  const auto beams = model.beam(sources, {.beam_width = 2});
  ASSERT_EQ(beams.size(), 3u);
  const auto one = model.beam(sources, {.beam_width = 1});
  for (std::size_t b = 0; b < 3; ++b) EXPECT_EQ(one[b].at(0).tokens, g.row(b)) << "row " << b;
  test::expect_error([&] { model.translate({"x"}); }, ErrorCode::invalid_argument, {"no source vocabulary"});
  test::expect_error([&] { model.greedy(sources, {.outputs = {"nope"}}); }, ErrorCode::not_found, {"no tensor 'nope'"});
  test::expect_error([&] { model.greedy({{9}}); }, ErrorCode::invalid_argument, {"token id 9", "[0, 9)"});
}

// Version 2 files may hold a recurrent layer's weight matrices in int8 (per-row scales): the
// model keeps them int8 (weight_storage i8 for that layer) and decodes as the same model with
// the dequantized weights in f32 does. Its biases are no weight matrices: an I8 bias is refused
// at load, naming the node and the slot.
TEST(GraphFile, Int8RecurrentWeights) {
  GraphModel q = seq2seq();
  q.int8 = {"enc.weight_ih_l0", "enc.weight_hh_l0", "dec.weight_ih_l0", "dec.weight_hh_l0"};
  GraphModel f = q;  // the same values as f32: q's after the round trip through int8
  f.int8.clear();
  for (const std::string& name : q.int8) {
    auto& [shape, w] = f.weights.at(name);
    const QuantizedRows r = quantize_rows(w, shape[0], shape[1]);
    w = dequantize_rows(r.q, r.scales, shape[1]);
  }
  const Seq2Seq qm = Seq2Seq::load_from_memory(context(), q.config.dump(), q.safetensors());
  const Seq2Seq fm = Seq2Seq::load_from_memory(context(), f.config.dump(), f.safetensors());
  const auto sources = test::random_token_rows({4, 1, 3}, 3, 9, 21);
  const DecodeResult a = qm.greedy(sources, {.return_logits = true});
  const DecodeResult b = fm.greedy(sources, {.return_logits = true});
  EXPECT_EQ(a.tokens, b.tokens);
  ASSERT_EQ(a.logits.size(), b.logits.size());
  for (std::size_t i = 0; i < a.logits.size(); ++i) EXPECT_NEAR(a.logits[i], b.logits[i], 1e-4) << i;

  GraphModel bad = seq2seq();
  bad.int8 = {"dec.bias_ih_l0"};
  TempDir dir;
  bad.write(dir.path());
  test::expect_error([&] { ModelFile::load(dir.str()); }, ErrorCode::format,
                     {"int8 tensor 'dec.bias_ih_l0'", "node 'cell'", "'bias_ih_l0'"});
}

TEST(GraphFile, BadGraphsNameTheNode) {
  const GraphModel c = classifier();
  auto nodes = [](GraphModel& m) -> json& { return m.config["graphs"]["forward"]["nodes"]; };
  expect_load_error(c, [&](GraphModel& m) { m.node("forward", "head")["op"] = "conv"; },
                    {"model.json", "graph 'forward'", "node 'head'", "unknown op 'conv'", "linear"});
  expect_load_error(c, [&](GraphModel& m) { m.node("forward", "head")["inputs"]["x"] = "nope"; },
                    {"node 'head'", "input 'x' reads tensor 'nope'", "no node produces"});
  expect_load_error(c, [&](GraphModel& m) { m.node("forward", "cat")["outputs"]["out"] = "top_fwd"; },
                    {"node 'cat'", "tensor 'top_fwd' is produced twice"});
  // A cycle: cat reads head's output, head reads cat's.
  expect_load_error(c, [&](GraphModel& m) { m.node("forward", "cat")["inputs"]["x"] = {"top_fwd", "logits"}; },
                    {"the nodes form a cycle", "'cat'", "'head'"});
  expect_load_error(c, [&](GraphModel& m) { m.node("forward", "head")["inputs"]["x"] = "top_fwd"; },
                    {"node 'head' (linear)", "expected [out_features, 4]", "got [2, 8]"});
  expect_load_error(c, [&](GraphModel& m) { m.node("forward", "rnn")["options"]["hidden_size"] = 5; },
                    {"node 'rnn' (rnn)", "weight 'weight_ih_l0'", "expected shape [15, 3]", "got [12, 3]"});
  expect_load_error(c, [&](GraphModel& m) { m.node("forward", "rnn")["weights"].erase("bias_hh_l1_reverse"); },
                    {"node 'rnn' (rnn)", "weight 'bias_hh_l1_reverse' is missing"});
  expect_load_error(c, [&](GraphModel& m) { m.weights.erase("head.bias"); },
                    {"node 'head' (linear)", "weight 'bias'", "'head.bias' is not in the weights file"});
  expect_load_error(c, [&](GraphModel& m) { m.add("surplus", {2}); }, {"model.safetensors", "unexpected tensor", "'surplus'"});
  expect_load_error(c, [&](GraphModel& m) { m.add("head.weight", {2 * kH, kC}); },  // transposed
                    {"node 'head' (linear)", "expected [out_features, 8]", "got [8, 2]"});
  expect_load_error(c, [&](GraphModel& m) { m.node("forward", "bwd")["options"]["index"] = 4; },
                    {"node 'bwd' (select)", "index 4 is out of bounds", "'h_n' [4, B, 4]"});
  expect_load_error(c, [&](GraphModel& m) {
    nodes(m).push_back({{"name", "part"}, {"op", "slice"}, {"inputs", {{"x", "pooled"}}}, {"outputs", {{"out", "p2"}}},
                        {"options", {{"axis", -1}, {"start", 6}, {"length", 3}}}});
  }, {"node 'part' (slice)", "slice [6, 9) of axis 1 is out of bounds", "'pooled' [B, 8]"});
  expect_load_error(c, [&](GraphModel& m) {
    nodes(m).push_back({{"name", "r"}, {"op", "reshape"}, {"inputs", {{"x", "pooled"}}}, {"outputs", {{"out", "r2"}}}, {"options", {{"shape", {"B", 3, 3}}}}});
  }, {"node 'r' (reshape)", "element counts differ"});
  expect_load_error(c, [&](GraphModel& m) { m.node("forward", "rnn")["options"]["dropout"] = 0.1; },
                    {"node 'rnn' (rnn)", "unknown option 'dropout'"});
  expect_load_error(c, [&](GraphModel& m) { m.node("forward", "head")["inputs"]["bias"] = "h"; },
                    {"node 'head' (linear)", "unknown input 'bias'"});
  expect_load_error(c, [&](GraphModel& m) { m.node("forward", "rnn")["inputs"].erase("x"); }, {"node 'rnn' (rnn)", "input 'x' is missing"});
  expect_load_error(c, [&](GraphModel& m) { m.node("forward", "rnn")["inputs"]["lengths"] = "tokens"; },
                    {"node 'rnn' (rnn)", "input 'lengths' ('tokens')", "rank 1"});
  expect_load_error(c, [&](GraphModel& m) { m.config["graphs"]["forward"]["outputs"]["logits"] = "nope"; },
                    {"graph 'forward'", "output 'logits' names tensor 'nope'"});
  expect_load_error(c, [&](GraphModel& m) { m.config["graphs"]["forward"]["outputs"].erase("logits"); },
                    {"graph 'forward': output 'logits' is missing"});
  expect_load_error(c, [&](GraphModel& m) { m.config["graphs"]["encoder"] = json::object(); }, {"unexpected graph 'encoder'"});
  expect_load_error(c, [&](GraphModel& m) { m.config["task"] = "seq2seq"; }, {"graph 'encoder' is missing"});
  expect_load_error(c, [&](GraphModel& m) { m.config["num_classes"] = 3; }, {"field 'num_classes' is 3", "gives 2"});
  expect_load_error(c, [&](GraphModel& m) { m.config["vocab"] = {"a", "b"}; }, {"field 'vocab'", "2 entries", "size is 7"});
  expect_load_error(c, [&](GraphModel& m) { m.config["typo"] = 1; }, {"unknown field 'typo'"});
  expect_load_error(c, [&](GraphModel& m) { m.config["graphs"]["forward"]["inputs"]["tokens"]["dtype"] = "f32"; },
                    {"graph 'forward'", "input 'tokens': declared f32", "gives i32"});
  expect_load_error(c, [&](GraphModel& m) { m.config["graphs"]["forward"]["inputs"]["lengths"]["shape"] = {"B", 2}; },
                    {"graph 'forward'", "input 'lengths': declared shape [B, 2]", "[B]"});

  const GraphModel s = seq2seq();
  expect_load_error(s, [&](GraphModel& m) { m.config["graphs"]["decoder_step"]["inputs"]["feed"]["next"] = "oc"; },
                    {"graph 'decoder_step'", "input 'feed' [B, 4]", "'next' tensor 'oc'", "[B, 8]"});
  expect_load_error(s, [&](GraphModel& m) { m.config["graphs"]["decoder_step"]["inputs"]["memory"]["from"] = "encoder:nope"; },
                    {"graph 'decoder_step'", "input 'memory'", "'encoder:nope' is not a tensor of the encoder graph"});
  expect_load_error(s, [&](GraphModel& m) { m.config["graphs"]["decoder_step"]["inputs"].erase("token"); },
                    {"graph 'decoder_step'", "node 'embed'", "reads tensor 'token'"});
  expect_load_error(s, [&](GraphModel& m) { m.config["special_tokens"].erase("bos"); }, {"field 'special_tokens'", "missing field 'bos'"});
  expect_load_error(s, [&](GraphModel& m) { m.config["special_tokens"]["eos"] = 7; }, {"special_tokens.eos", "[0, 7)", "got 7"});
  expect_load_error(s, [&](GraphModel& m) { m.add("tgt", {5, kE}, true); },
                    {"embedding table reading 'token' has 5 rows", "7 target tokens"});
  expect_load_error(s, [&](GraphModel& m) { m.node("decoder_step", "attn")["options"]["score"] = "general"; },
                    {"node 'attn' (attention)", "weight 'w' is missing"});
}

}  // namespace
}  // namespace vkrnn
