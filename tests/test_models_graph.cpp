// Models users write themselves: tools/make_graph_fixtures.py (ctest fixture "graph_fixtures")
// builds six attention RNNs in plain torch.nn code -- a GRU encoder seeding its decoder, a
// bi-LSTM bridged into a 2-layer LSTM decoder with input feeding and general attention, additive
// attention with biases on every Linear and a GRUCell decoder, PyTorch's seq2seq tutorial
// decoder, bias-free self-attention into a 3-layer bias-free bi-GRU, attention pooling over a
// bi-LSTM with proj_size and a sigmoid head -- exports each with one export_module() call (format version 2) and runs it in float64.
// vkrnn must match on a ragged batch within 1e-5 on every output: the encoder's outputs, greedy
// decoding (tokens and lengths identical; logits and attention at every step), fixed-length
// decoding, beam search (identical hypotheses, scores), the classifiers' logits, probabilities
// and extra outputs (at valid positions), each decode in one submission.
//
// Missing fixtures: the test skips, unless VKRNN_REQUIRE_TORCH=1 (CI), where it fails.
#include <algorithm>
#include <fstream>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "common/test_env.hpp"
#include "expect_error.hpp"
#include "model_fixtures.hpp"
#include "vkrnn/classifier.hpp"
#include "vkrnn/model.hpp"
#include "vkrnn/safetensors.hpp"
#include "vkrnn/seq2seq.hpp"

namespace vkrnn {
namespace {

using test::all_close;
using test::as_double;
using test::context;
using test::ints;

// PyTorch float64 against vkrnn's fp32 (absolute and relative).
constexpr double kTol = 1e-5;

std::string fixture_dir() { return test::binary_path("fixtures/graphs"); }

#define REQUIRE_GRAPH_FIXTURES(var)                                                          \
  const std::vector<test::FixtureCase> var = test::fixture_cases(fixture_dir(), "task"); \
  VKRNN_REQUIRE_FIXTURES(var, fixture_dir(), "tools/make_graph_fixtures.py")

nlohmann::json model_json(const std::string& dir) {
  std::ifstream f(dir + "/model.json");
  return nlohmann::json::parse(f);
}

std::vector<double> f64(const SafetensorsFile& f, const std::string& name) { return as_double(f.to_f32(name)); }

void check_seq2seq(const test::FixtureCase& c) {
  SCOPED_TRACE(c.name);
  const Seq2Seq model = Seq2Seq::load(context(), c.dir);
  EXPECT_EQ(model.config().version, 2);
  EXPECT_EQ(model.config().architecture, Architecture::graph);
  // No vocabularies: ids in, ids out.
  test::expect_error([&] { model.encode_text("a"); }, ErrorCode::invalid_argument, {"no source vocabulary"});
  const SafetensorsFile f = SafetensorsFile::open(c.dir + "/expected.safetensors");
  const auto src = ints(f, "src"), src_lengths = ints(f, "src_lengths");
  const auto sources = test::rows_of(src, src_lengths);
  const std::size_t B = src_lengths.size();
  const std::size_t N = std::stoul(f.metadata().at("max_len")), K = std::stoul(f.metadata().at("beam_width"));

  // Every encoder output the reference has, by the role the exporter gave it.
  const Seq2Seq::Encoded enc = model.encode(sources);
  std::size_t compared = 0;
  const nlohmann::json config = model_json(c.dir);
  for (const auto& [role, tensor] : config["graphs"]["encoder"]["outputs"].items()) {
    if (!f.contains("encoder." + role)) continue;
    const HostTensor t = model.read_encoder(enc, tensor.get<std::string>());
    EXPECT_TRUE(all_close(t.values, f64(f, "encoder." + role), kTol, kTol)) << "encoder output " << role;
    ++compared;
  }
  EXPECT_GE(compared, 1u);

  // Greedy, stop at EOS.
  const DecodeResult g = model.greedy(sources, {.return_logits = true, .return_attention = true});
  const auto want_tokens = ints(f, "greedy_tokens");
  ASSERT_EQ(g.steps, want_tokens.size() / B);
  EXPECT_EQ(g.tokens, want_tokens) << "greedy tokens";
  EXPECT_EQ(g.lengths, ints(f, "greedy_lengths")) << "greedy lengths";
  EXPECT_TRUE(all_close(g.logits, f64(f, "greedy_logits"), kTol, kTol)) << "greedy logits";
  EXPECT_TRUE(all_close(g.attention, f64(f, "greedy_attention"), kTol, kTol)) << "greedy attention";
  EXPECT_EQ(g.stats.submissions, 1u);

  // Fixed length.
  const DecodeResult fx = model.greedy(sources, {.max_len = N, .stop_at_eos = false, .return_logits = true, .return_attention = true});
  EXPECT_EQ(fx.tokens, ints(f, "fixed_tokens")) << "fixed-length tokens";
  EXPECT_TRUE(all_close(fx.logits, f64(f, "fixed_logits"), kTol, kTol)) << "fixed-length logits";
  EXPECT_TRUE(all_close(fx.attention, f64(f, "fixed_attention"), kTol, kTol)) << "fixed-length attention";

  // Beam search.
  DecodeStats stats;
  const auto beams = model.beam(sources, {.beam_width = K, .length_alpha = 0.6, .max_len = N, .stats = &stats});
  EXPECT_EQ(stats.sequence.submissions, 1u);
  const auto count = ints(f, "beam_count"), tokens = ints(f, "beam_tokens"), lengths = ints(f, "beam_lengths");
  const auto finished = ints(f, "beam_finished");
  const auto scores = f.to_f32("beam_scores"), norm = f.to_f32("beam_norm_scores");
  ASSERT_EQ(beams.size(), B);
  for (std::size_t b = 0; b < B; ++b) {
    SCOPED_TRACE(fmt::format("source row {}", b));
    ASSERT_EQ(beams[b].size(), static_cast<std::size_t>(count[b]));
    for (std::size_t j = 0; j < beams[b].size(); ++j) {
      const Hypothesis& h = beams[b][j];
      const auto first = tokens.begin() + static_cast<std::ptrdiff_t>((b * K + j) * N);
      EXPECT_EQ(h.tokens, std::vector<std::int32_t>(first, first + lengths[b * K + j])) << "hypothesis " << j;
      EXPECT_EQ(h.finished, finished[b * K + j] != 0) << "hypothesis " << j;
      EXPECT_NEAR(h.score, scores[b * K + j], kTol * (1 + std::abs(scores[b * K + j]))) << "hypothesis " << j;
      EXPECT_NEAR(h.norm_score, norm[b * K + j], kTol * (1 + std::abs(norm[b * K + j]))) << "hypothesis " << j;
    }
  }
}

// Values of a [B, S, ...] tensor at valid positions only (t < length), or all of another shape.
std::vector<std::size_t> valid_positions(const Shape& shape, const std::vector<std::int32_t>& lengths, std::size_t S) {
  std::vector<std::size_t> at;
  const std::size_t n = element_count(shape);
  const bool per_step = shape.size() >= 2 && shape[0] == lengths.size() && shape[1] == S;
  const std::size_t inner = per_step ? n / (shape[0] * shape[1]) : 1;
  for (std::size_t i = 0; i < n; ++i) {
    if (per_step) {
      const std::size_t b = i / (S * inner), t = (i / inner) % S;
      if (t >= static_cast<std::size_t>(lengths[b])) continue;
    }
    at.push_back(i);
  }
  return at;
}

void check_classifier(const test::FixtureCase& c) {
  SCOPED_TRACE(c.name);
  const Classifier model = Classifier::load(context(), c.dir);
  const SafetensorsFile f = SafetensorsFile::open(c.dir + "/expected.safetensors");
  const auto tok = ints(f, "tokens"), lengths = ints(f, "lengths");
  const std::size_t B = lengths.size(), S = tok.size() / B;
  const nlohmann::json config = model_json(c.dir);
  const nlohmann::json& roles = config["graphs"]["forward"]["outputs"];
  ClassifyOptions options;
  for (const auto& [role, tensor] : roles.items()) {
    if (role != "logits" && role != "probs") options.outputs.push_back(tensor.get<std::string>());
  }
  const ClassifyResult r = model.classify(test::rows_of(tok, lengths), options);
  EXPECT_TRUE(all_close(r.logits, f64(f, "logits"), kTol, kTol)) << "logits";
  EXPECT_TRUE(all_close(r.probs, f64(f, "probs"), kTol, kTol)) << "probs";
  EXPECT_EQ(r.stats.submissions, 1u);
  for (const auto& [role, tensor] : roles.items()) {
    if (role == "logits" || role == "probs") continue;
    ASSERT_TRUE(f.contains(role)) << role;
    const HostTensor& got = r.outputs.at(tensor.get<std::string>());
    const auto want = f64(f, role);
    ASSERT_EQ(got.values.size(), want.size()) << role;
    std::vector<float> g;
    std::vector<double> w;
    for (std::size_t i : valid_positions(got.shape, lengths, S)) {
      g.push_back(got.values[i]);
      w.push_back(want[i]);
    }
    EXPECT_TRUE(all_close(g, w, kTol, kTol)) << role << " at valid positions";
  }
  const std::size_t C = model.config().num_classes;
  for (std::size_t b = 0; b < B; ++b) {
    const float* p = &r.probs[b * C];
    EXPECT_EQ(r.predicted[b], C == 1 ? (p[0] >= 0.5f) : static_cast<std::int32_t>(std::max_element(p, p + C) - p));
  }
}

TEST(ModelsGraph, UsersSeq2SeqModulesMatchPyTorch) {
  REQUIRE_GRAPH_FIXTURES(all);
  std::size_t n = 0;
  for (const auto& c : all) {
    if (c.kind != "seq2seq") continue;
    check_seq2seq(c);
    ++n;
  }
  EXPECT_GE(n, 4u);
}

TEST(ModelsGraph, UsersClassifiersMatchPyTorch) {
  REQUIRE_GRAPH_FIXTURES(all);
  std::size_t n = 0;
  for (const auto& c : all) {
    if (c.kind != "classifier") continue;
    check_classifier(c);
    ++n;
  }
  EXPECT_GE(n, 2u);
}

}  // namespace
}  // namespace vkrnn
