// vkrnn-sentiment: the sentiment of short English review sentences with an RNN + attention-
// pooling classifier (bi-LSTM, tanh pooling score, softmax) trained in PyTorch
// (tools/train_sentiment.py; model in samples/sentiment/model). Prints the label, its
// probability, and the words the pooling attended to most.
//
//   vkrnn-sentiment "the plot was dull but the acting was great"
//   vkrnn-sentiment --eval samples/sentiment/heldout.txt      accuracy on text<TAB>label lines
//
// Exit status: 0 done, 1 error, 2 bad command line, 3 the validation layer reported something
// (VKRNN_VALIDATION=1), 4 accuracy below --expect-accuracy.
#include <algorithm>
#include <cstdlib>
#include <iostream>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "common/sample_cli.hpp"
#include "common/sample_support.hpp"
#include "vkrnn/classifier.hpp"
#include "vkrnn/vkrnn.hpp"

#ifndef VKRNN_SENTIMENT_MODEL_DIR
#define VKRNN_SENTIMENT_MODEL_DIR "samples/sentiment/model"
#endif

namespace {

using namespace vkrnn::samples;

constexpr const char* kUsage = R"(usage: vkrnn-sentiment [options] [TEXT ...]

Classifies short English review sentences as negative or positive with an RNN and attention
pooling on a Vulkan device, and shows which words the pooling attended to most (highlighted
in colour on a terminal, [in brackets] otherwise; NO_COLOR=1 turns colour off). Without TEXT
arguments, reads one text per line from stdin.

options:
  --top N                highlight the N most attended words (default 3; words with less
                         than 5% of the attention are left out)
  --eval FILE            run FILE's "text<TAB>label" lines and print the accuracy
  --limit N              with --eval: only the first N lines
  --expect-accuracy PCT  with --eval: exit 4 when the accuracy is below PCT percent
  --batch N              texts per GPU batch (default 256)
  --weights W            store the weight matrices as fp32, fp16 or int8 (per-row scales);
                         default: as the model file stores them
  --device D             Vulkan device: index or name substring (default: the best one)
  --model DIR            model directory (default: )" VKRNN_SENTIMENT_MODEL_DIR R"()
  -h, --help             this text
)";

struct Args : CommonArgs {
  std::size_t top = 3;
};

Args parse(int argc, char** argv) {
  Args a;
  a.model = VKRNN_SENTIMENT_MODEL_DIR;
  parse_common_args(argc, argv, a, "TEXT", [&](const std::string& option, const auto& value) {
    if (option != "--top") return false;
    a.top = parse_count(option, value());
    return true;
  });
  return a;
}

// The words of a text as the word tokenizer splits it (runs of non-whitespace), for display.
std::vector<std::string> words(const std::string& text) {
  std::istringstream in(text);
  std::vector<std::string> out;
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

std::vector<std::int32_t> token_ids(const vkrnn::Classifier& model, const std::string& text, const std::string& where) {
  std::vector<std::int32_t> ids;
  try {
    ids = model.encode_text(text);
  } catch (const vkrnn::Error& e) {  // invalid UTF-8
    throw InputError(fmt::format("{}: {}", where, e.what()));
  }
  if (ids.empty()) throw InputError(where + ": no words");
  return ids;
}

std::vector<vkrnn::ClassifyResult> classify(const vkrnn::Classifier& model,
                                            const std::vector<std::vector<std::int32_t>>& tokens,
                                            std::size_t batch, bool pooling, double& ms) {
  std::vector<vkrnn::ClassifyResult> results;
  Stopwatch watch;
  for (std::size_t first = 0; first < tokens.size(); first += batch) {
    const std::size_t n = std::min(batch, tokens.size() - first);
    const std::vector<std::vector<std::int32_t>> chunk(tokens.begin() + first, tokens.begin() + first + n);
    results.push_back(model.classify(chunk, {.return_pooling = pooling}));
  }
  ms = watch.ms();
  return results;
}

int explain(vkrnn::Context& ctx, const vkrnn::Classifier& model, const Args& args) {
  const auto texts = inputs_or_stdin(args.inputs);
  if (texts.empty()) throw UsageError("no texts given (arguments or stdin lines)");
  std::vector<std::vector<std::int32_t>> tokens;
  for (std::size_t i = 0; i < texts.size(); ++i) tokens.push_back(token_ids(model, texts[i], fmt::format("text {}", i + 1)));
  const bool colour = stdout_is_tty() && std::getenv("NO_COLOR") == nullptr;
  const auto& labels = model.config().labels;
  const std::int32_t unk = model.config().special.unk;

  std::cout << "device: " << describe_device(ctx.device()) << "\n";
  double ms = 0.0;
  const auto results = classify(model, tokens, args.batch, true, ms);
  for (std::size_t i = 0; i < texts.size(); ++i) {
    const auto& r = results[i / args.batch];
    const std::size_t b = i % args.batch;
    const auto w = words(texts[i]);
    const std::size_t n = tokens[i].size();
    std::vector<float> weight(r.pooling.begin() + b * r.steps, r.pooling.begin() + b * r.steps + n);
    std::vector<std::size_t> order(n);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](auto x, auto y) { return weight[x] > weight[y]; });
    // The most attended words, leaving out those with a negligible share (the first always shows).
    order.resize(std::min(args.top, n));
    order.erase(std::remove_if(order.begin() + 1, order.end(), [&](auto t) { return weight[t] < 0.05f; }),
                order.end());
    const auto predicted = static_cast<std::size_t>(r.predicted[b]);
    std::string line;
    for (std::size_t t = 0; t < n; ++t) {
      const auto rank = std::find(order.begin(), order.end(), t) - order.begin();
      const std::string& word = t < w.size() ? w[t] : "?";
      std::string shown = word;
      if (rank < static_cast<std::ptrdiff_t>(order.size())) {
        // Bold yellow for the most attended word, plain yellow for the next ones.
        shown = colour ? (rank == 0 ? "\x1b[1;33m" : "\x1b[33m") + word + "\x1b[0m" : "[" + word + "]";
      }
      line += (t ? " " : "") + shown;
    }
    std::cout << fmt::format("{:<8} p={:.3f}  {}\n", labels[predicted], r.probs[b * r.classes + predicted], line);
    std::string attended;
    for (auto t : order) attended += fmt::format("{}{} {:.2f}", attended.empty() ? "" : ", ", w[t], weight[t]);
    std::cout << "         attended: " << attended << "\n";
    std::string unknown;
    for (std::size_t t = 0; t < n; ++t) {
      if (tokens[i][t] == unk) unknown += (unknown.empty() ? "" : ", ") + w[t];
    }
    if (!unknown.empty()) std::cout << "         not in the vocabulary (read as <unk>): " << unknown << "\n";
  }
  if (results.size() == 1) {
    // The first call also created the compute pipelines; a second one shows the steady state.
    double again = 0.0;
    classify(model, tokens, args.batch, true, again);
    std::cout << fmt::format("time: {} text{} in {:.1f} ms on first use (creates the pipelines), then {:.1f} ms "
                             "(one submission, {} dispatches)\n",
                             texts.size(), texts.size() == 1 ? "" : "s", ms, again, results[0].stats.dispatches);
  } else {
    std::cout << fmt::format("time: {} texts in {:.1f} ms in {} batches (the first also creates the pipelines)\n",
                             texts.size(), ms, results.size());
  }
  return 0;
}

int evaluate(vkrnn::Context& ctx, const vkrnn::Classifier& model, const Args& args) {
  const auto& labels = model.config().labels;
  std::vector<std::string> texts;
  std::vector<std::size_t> expected;
  std::vector<std::vector<std::int32_t>> tokens;
  for_each_tab_line(args.eval, args.limit, "text<TAB>label",
                    [&](const std::string& where, const std::string& text, const std::string& name) {
                      const auto label = std::find(labels.begin(), labels.end(), name);
                      if (label == labels.end()) {
                        throw InputError(fmt::format("{}: unknown label '{}' (the model's: {})", where, name,
                                                     fmt::join(labels, ", ")));
                      }
                      texts.push_back(text);
                      expected.push_back(static_cast<std::size_t>(label - labels.begin()));
                      tokens.push_back(token_ids(model, text, where));
                    });

  std::cout << "device: " << describe_device(ctx.device()) << "\n";
  double ms = 0.0;
  const auto results = classify(model, tokens, args.batch, false, ms);
  std::size_t correct = 0, shown = 0;
  for (std::size_t i = 0; i < texts.size(); ++i) {
    const auto got = static_cast<std::size_t>(results[i / args.batch].predicted[i % args.batch]);
    if (got == expected[i]) {
      ++correct;
    } else if (shown++ < 10) {
      std::cout << fmt::format("  wrong: \"{}\" -> {} (expected {})\n", texts[i], labels[got], labels[expected[i]]);
    }
  }
  const double accuracy = 100.0 * double(correct) / double(texts.size());
  std::cout << fmt::format("accuracy: {}/{} = {:.2f}% (batches of {}) in {:.0f} ms\n", correct, texts.size(),
                           accuracy, args.batch, ms);
  return accuracy_status("vkrnn-sentiment", accuracy, args.expect_accuracy);
}

}  // namespace

int main(int argc, char** argv) {
  return run_sample("vkrnn-sentiment", [&](const vkrnn::ValidationSink& validation_sink) {
    const Args args = parse(argc, argv);
    if (args.help) {
      std::cout << kUsage;
      return 0;
    }
    vkrnn::ContextOptions options;
    options.device = args.device;
    options.validation_sink = validation_sink;
    vkrnn::Context ctx(options);
    const auto model = vkrnn::Classifier::load(ctx, args.model, vkrnn::samples::model_options(args));
    if (model.config().tokenizer.type != vkrnn::TokenizerType::word) {
      throw InputError(fmt::format("'{}' is a character-level model; this sample shows words", args.model));
    }
    return args.eval.empty() ? explain(ctx, model, args) : evaluate(ctx, model, args);
  });
}
