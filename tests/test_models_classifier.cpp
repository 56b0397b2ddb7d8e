// Classifier (rnn_attention_classifier) without PyTorch: models written by the test against a
// double-precision CPU reference of docs/model-format.md section 3 (RNN with lengths, tanh /
// linear attention pooling, dense head, softmax / sigmoid), over GRU / LSTM, 1-2 layers, 1-2
// directions, ragged batches; text helpers; input errors.
// (tests/test_models_torch.cpp checks both classifier architectures against PyTorch itself.)
#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "common/test_env.hpp"
#include "expect_error.hpp"
#include "test_models_tiny.hpp"
#include "vkrnn/classifier.hpp"
#include "vkrnn/seq2seq.hpp"

namespace vkrnn {
namespace {

using test::all_close;
using test::context;
using test::RefVec;
using test::TempDir;
using test::TinyClassifier;
using test::TinyClassifierSpec;

struct RefResult {
  std::vector<double> logits, probs, pooling;
};

RefResult reference_classify(const TinyClassifier& m, const std::vector<std::vector<std::int32_t>>& tokens) {
  const TinyClassifierSpec& s = m.spec;
  const std::size_t D = s.bidirectional ? 2 : 1, DH = D * s.H;
  std::size_t T = 0;
  for (const auto& r : tokens) T = std::max(T, r.size());
  RefResult out;
  const auto& emb = m.w("embedding.weight");
  for (const auto& row : tokens) {
    std::vector<RefVec> x;
    for (auto id : row) {
      const auto i = static_cast<std::size_t>(id);
      x.emplace_back(emb.begin() + static_cast<std::ptrdiff_t>(i * s.E), emb.begin() + static_cast<std::ptrdiff_t>((i + 1) * s.E));
    }
    std::vector<RefVec> h, h_n;
    test::ref_rnn(m, "rnn", s.cell == "lstm", s.L, s.bidirectional, s.H, x, h, h_n);
    RefVec u(row.size());
    for (std::size_t t = 0; t < row.size(); ++t) {
      if (s.pooling_score == "tanh") {
        const RefVec p = test::ref_affine(m.w("pooling.proj.weight"), &m.w("pooling.proj.bias"), h[t], s.A);
        double acc = 0.0;
        for (std::size_t a = 0; a < s.A; ++a) acc += double(m.w("pooling.w")[a]) * std::tanh(p[a]);
        u[t] = acc;
      } else {
        double acc = 0.0;
        for (std::size_t j = 0; j < DH; ++j) acc += double(m.w("pooling.w")[j]) * h[t][j];
        u[t] = acc;
      }
    }
    const double mx = *std::max_element(u.begin(), u.end());
    double z = 0.0;
    for (double v : u) z += std::exp(v - mx);
    RefVec pooled(DH, 0.0);
    for (std::size_t t = 0; t < T; ++t) {
      const double a = t < row.size() ? std::exp(u[t] - mx) / z : 0.0;
      out.pooling.push_back(a);
      if (t < row.size())
        for (std::size_t j = 0; j < DH; ++j) pooled[j] += a * h[t][j];
    }
    const RefVec logits = test::ref_affine(m.w("classifier.weight"), &m.w("classifier.bias"), pooled, s.C);
    out.logits.insert(out.logits.end(), logits.begin(), logits.end());
    if (s.activation == "sigmoid") {
      for (double l : logits) out.probs.push_back(test::ref_sigmoid(l));
    } else {
      const double lm = *std::max_element(logits.begin(), logits.end());
      double zz = 0.0;
      for (double l : logits) zz += std::exp(l - lm);
      for (double l : logits) out.probs.push_back(std::exp(l - lm) / zz);
    }
  }
  return out;
}

void check(const TinyClassifierSpec& spec, const std::vector<std::size_t>& lengths, std::uint32_t seed) {
  SCOPED_TRACE(fmt::format("{} L={} bi={} pooling={} {} C={} lengths [{}]", spec.cell, spec.L, spec.bidirectional,
                           spec.pooling_score, spec.activation, spec.C, fmt::join(lengths, ", ")));
  TempDir dir;
  const TinyClassifier tc(spec);
  tc.write(dir.path());
  const Classifier model = Classifier::load(context(), dir.str());
  const auto inputs = test::random_token_rows(lengths, 1, spec.V, seed);  // no <pad>
  const ClassifyResult r = model.classify(inputs, {.return_pooling = true});
  const RefResult want = reference_classify(tc, inputs);
  EXPECT_TRUE(all_close(r.logits, want.logits, 1e-5, 1e-6)) << "logits";
  EXPECT_TRUE(all_close(r.probs, want.probs, 1e-5, 1e-6)) << "probabilities";
  EXPECT_TRUE(all_close(r.pooling, want.pooling, 1e-5, 1e-6)) << "pooling weights";
  EXPECT_EQ(r.stats.submissions, 1u);
  for (std::size_t b = 0; b < inputs.size(); ++b) {
    const double* p = &want.probs[b * spec.C];
    const std::int32_t pred = spec.C == 1 ? (p[0] >= 0.5) : static_cast<std::int32_t>(std::max_element(p, p + spec.C) - p);
    EXPECT_EQ(r.predicted[b], pred) << "row " << b;
  }
}

TEST(Classifier, MatchesDoubleReference) {
  std::uint32_t seed = 1;
  for (const std::string cell : {"gru", "lstm"}) {
    for (bool bi : {false, true}) {
      for (std::size_t L : {1, 2}) {
        TinyClassifierSpec s;
        s.cell = cell;
        s.bidirectional = bi;
        s.L = L;
        s.seed = seed;
        s.pooling_score = seed % 2 ? "tanh" : "linear";
        s.activation = seed % 3 ? "softmax" : "sigmoid";
        s.C = s.activation == "sigmoid" ? 1 + seed % 2 : 3;
        check(s, {1, 5, 3, 8}, seed++);
      }
    }
  }
  TinyClassifierSpec big;
  big.V = 300;
  big.E = 24;
  big.H = 32;
  big.A = 16;
  big.C = 4;
  check(big, {40, 1, 17}, 99);
}

// Weights in int8 (weight_storage i8: the classifier layer, the tanh pooling's projection and
// the RNN's matrices quantized at load): random weights give logits within 0.05 + 2% of fp32's
// (and not the same); weights that are already q * scale (quantize_rows) quantize exactly, so
// the result is the double reference's up to fp32 rounding.
TEST(Classifier, Int8DenseWeights) {
  TinyClassifierSpec spec;
  spec.pooling_score = "tanh";
  TinyClassifier tc(spec);
  OpOptions i8;
  i8.weight_storage = WeightStorage::i8;
  const auto inputs = test::random_token_rows({1, 5, 3, 8}, 1, spec.V, 7);
  {  // the random weights: int8 changes the logits, a little
    TempDir dir;
    tc.write(dir.path());
    const ClassifyResult a = Classifier::load(context(), dir.str()).classify(inputs);
    const ClassifyResult b = Classifier::load(context(), dir.str(), i8).classify(inputs);
    const std::vector<double> want(a.logits.begin(), a.logits.end());
    EXPECT_TRUE(all_close(b.logits, want, 0.05, 0.02));
    EXPECT_FALSE(all_close(b.logits, want, 0, 0)) << "int8 weights had no effect";
  }
  for (auto& [name, tensor] : tc.weights) {
    // The dense layers' and the recurrent layers' weight matrices (int8 too since Rnn has it).
    const bool dense = name == "classifier.weight" || name == "pooling.proj.weight";
    if (!dense && name.find(".weight_") == std::string::npos) continue;
    auto& [shape, w] = tensor;
    const QuantizedRows q = quantize_rows(w, shape[0], shape[1]);
    for (std::size_t i = 0; i < w.size(); ++i) w[i] = float(q.q[i]) * q.scales[i / shape[1]];
  }
  TempDir dir;
  tc.write(dir.path());
  const Classifier model = Classifier::load(context(), dir.str(), i8);
  const ClassifyResult r = model.classify(inputs, {.return_pooling = true});
  const RefResult want = reference_classify(tc, inputs);
  EXPECT_TRUE(all_close(r.logits, want.logits, 1e-5, 1e-5)) << "logits";
  EXPECT_TRUE(all_close(r.pooling, want.pooling, 1e-5, 1e-5)) << "pooling weights";
}

// An input past what one fused RNN dispatch could loop over on lavapipe (a GRU with H = 64
// broke at ~3,121 steps before the split into runs; the sentiment sample's class flipped at
// T = 30,000), next to a short row.
TEST(Classifier, LongInputPastTheLoopLimit) {
  for (const std::string cell : {"gru", "lstm"}) {
    TinyClassifierSpec s;
    s.cell = cell;
    s.E = 8;
    s.H = 64;
    s.A = 8;
    s.seed = 21;
    s.scale = 0.2f;
    check(s, {4000, 9}, 22);
  }
}

// NaN in the classifier layer: an error naming the layer and the row, not a class.
TEST(Classifier, NonFiniteLogitsAreAnError) {
  TempDir dir;
  TinyClassifier tc{TinyClassifierSpec{}};
  tc.weights.at("classifier.bias").second[1] = std::numeric_limits<float>::quiet_NaN();
  tc.write(dir.path());
  const Classifier model = Classifier::load(context(), dir.str());
  test::expect_error([&] { model.classify({{2, 3}, {4}}); }, ErrorCode::non_finite,
                     {"Classifier::classify", "classifier.weight", "classifier.bias", "row 0, class 1"});
}

// record_classify / read_classify: classifications recorded into the caller's sequence (two
// batches in one recording) are classify()'s, bit for bit; replaying the sequence gives them
// again; bad inputs are refused before anything is recorded; misuse is an error.
TEST(Classifier, RecordClassifyEqualsClassify) {
  TempDir dir;
  TinyClassifierSpec spec;
  spec.bidirectional = true;
  spec.C = 3;
  TinyClassifier(spec).write(dir.path());
  const Classifier model = Classifier::load(context(), dir.str());
  const auto first = test::random_token_rows({1, 5, 3, 8}, 1, spec.V, 7);
  const auto second = test::random_token_rows({9, 2}, 1, spec.V, 8);
  const ClassifyOptions o{.return_pooling = true, .return_rnn = true};
  const ClassifyResult want1 = model.classify(first, o), want2 = model.classify(second);
  auto same = [](const ClassifyResult& got, const ClassifyResult& want) {
    EXPECT_EQ(got.batch, want.batch);
    EXPECT_EQ(got.steps, want.steps);
    EXPECT_EQ(got.logits, want.logits);
    EXPECT_EQ(got.probs, want.probs);
    EXPECT_EQ(got.predicted, want.predicted);
    EXPECT_EQ(got.pooling, want.pooling);
    EXPECT_EQ(got.rnn_inputs, want.rnn_inputs);
    EXPECT_EQ(got.rnn_outputs, want.rnn_outputs);
  };
  Sequence seq = context().sequence({.label = "app"});
  const auto c1 = model.record_classify(seq, first, o);
  const auto c2 = model.record_classify(seq, second);
  EXPECT_EQ(c1.batch(), 4u);
  EXPECT_EQ(c2.batch(), 2u);
  test::expect_error([&] { model.read_classify(seq, c1); }, ErrorCode::state, {"Classifier::read_classify", "before the sequence finished"});
  // Bad inputs: refused before anything is recorded.
  const SequenceStats before = seq.stats();
  test::expect_error([&] { model.record_classify(seq, {{2}, {}}); }, ErrorCode::invalid_argument,
                     {"Classifier::record_classify", "input row 1 is empty"});
  test::expect_error([&] { model.record_classify(seq, {{2, 99}}); }, ErrorCode::invalid_argument,
                     {"Classifier::record_classify", "token id 99"});
  test::expect_error([&] { model.record_classify(seq, first, {.outputs = {"nope"}}); }, ErrorCode::not_found, {"'nope'"});
  EXPECT_EQ(seq.stats().dispatches, before.dispatches);
  EXPECT_EQ(seq.stats().copies, before.copies);
  seq.submit();
  ASSERT_TRUE(seq.wait());
  same(model.read_classify(seq, c1), want1);
  same(model.read_classify(seq, c2), want2);
  EXPECT_EQ(model.read_classify(seq, c1).stats.submissions, 1u);
  // Submitted again without re-recording: the same results.
  seq.submit();
  ASSERT_TRUE(seq.wait());
  same(model.read_classify(seq, c2), want2);
  // Misuse.
  test::expect_error([&] { model.read_classify(seq, Classifier::Classification{}); }, ErrorCode::invalid_argument,
                     {"read_classify", "empty Classification"});
  const Classifier other = Classifier::load(context(), dir.str());
  test::expect_error([&] { other.read_classify(seq, c1); }, ErrorCode::invalid_argument, {"read_classify", "another model"});
  Sequence unrelated = context().sequence();
  unrelated.eval();
  test::expect_error([&] { model.read_classify(unrelated, c1); }, ErrorCode::state, {"read_classify", "not download()ed in this sequence"});
}

TEST(Classifier, TextHelpers) {
  TempDir dir;
  TinyClassifierSpec s;
  s.C = 1;
  s.activation = "sigmoid";
  TinyClassifier(s).write(dir.path());
  const Classifier model = Classifier::load(context(), dir.str());
  EXPECT_EQ(model.encode_text("W2  w3\tnope"), (std::vector<std::int32_t>{2, 3, 1}));  // lowercase, unk
  const auto labels = model.classify_text({"w2 w3", "w5"});
  const ClassifyResult r = model.classify({{2, 3}, {5}});
  for (std::size_t b = 0; b < 2; ++b) EXPECT_EQ(labels[b], r.predicted[b] ? "class0" : "not class0");
}

using test::expect_error;

TEST(Classifier, InputErrors) {
  TempDir dir;
  TinyClassifier(TinyClassifierSpec{}).write(dir.path());
  const Classifier model = Classifier::load(context(), dir.str());
  expect_error([&] { model.classify({}); }, ErrorCode::invalid_argument, {"no inputs"});
  expect_error([&] { model.classify({{2}, {}}); }, ErrorCode::invalid_argument, {"input row 1 is empty"});
  expect_error([&] { model.classify({{2, 11}}); }, ErrorCode::invalid_argument, {"token id 11", "row 0, position 1", "[0, 11)"});
  expect_error([&] { model.classify({{2}, {-5}}); }, ErrorCode::invalid_argument, {"token id -5", "row 1, position 0"});
  expect_error([&] { model.classify_text({""}); }, ErrorCode::invalid_argument, {"input row 0 is empty"});
  // The wrong kind of model, both ways.
  expect_error([&] { Seq2Seq::load(context(), dir.str()); }, ErrorCode::invalid_argument,
               {"rnn_attention_classifier", "not a seq2seq model"});
  TempDir s2s;
  test::TinyModel().write(s2s.path());
  expect_error([&] { Classifier::load(context(), s2s.str()); }, ErrorCode::invalid_argument,
               {"bahdanau_seq2seq", "not a classifier"});
}

}  // namespace
}  // namespace vkrnn
