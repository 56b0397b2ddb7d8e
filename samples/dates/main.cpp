// vkrnn-dates: free-form dates to ISO 8601 (YYYY-MM-DD) with a character-level Bahdanau
// encoder-decoder trained in PyTorch (tools/train_dates.py; model in samples/dates/model).
//
//   vkrnn-dates "21/11/26" "Nov 21st, 2026"          one line per date
//   echo "2026.11.21" | vkrnn-dates                   dates from stdin, one per line
//   vkrnn-dates --heatmap attention.png "21/11/26"    and the attention alignment as a PNG
//   vkrnn-dates --eval samples/dates/heldout.txt      exact-match accuracy on input<TAB>expected
//   vkrnn-dates --sample --temperature 1.5 --seed 7 "21/11/26"   sampled instead of greedy
//
// Exit status: 0 done, 1 error (bad model, bad input, no device), 2 bad command line,
// 3 the validation layer reported something (VKRNN_VALIDATION=1), 4 accuracy below
// --expect-accuracy.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <exception>
#include <iostream>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "common/sample_cli.hpp"
#include "common/sample_support.hpp"
#include "font5x7.hpp"
#include "heatmap.hpp"
#include "vkrnn/seq2seq.hpp"
#include "vkrnn/vkrnn.hpp"

#ifndef VKRNN_DATES_MODEL_DIR
#define VKRNN_DATES_MODEL_DIR "samples/dates/model"
#endif

namespace {

using namespace vkrnn::samples;

constexpr const char* kUsage = R"(usage: vkrnn-dates [options] [DATE ...]

Normalises free-form dates ("Saturday 21 November 2026", "21/11/26", "Nov 21st, 2026",
"2026.11.21") to YYYY-MM-DD with an attention RNN running on a Vulkan device. Without DATE
arguments, reads one date per line from stdin. Numeric dates are day-first unless they start
with a four-digit year; two-digit years mean 1950..2049.

options:
  --heatmap PATH         write the attention alignment as a PNG: one panel per date (the
                         first 16), input characters across, output characters down
  --eval FILE            run FILE's "input<TAB>expected" lines in batches and print the
                         exact-match accuracy
  --limit N              with --eval: only the first N lines
  --expect-accuracy PCT  with --eval: exit 4 when the accuracy is below PCT percent
  --batch N              dates per GPU batch (default 256)
  --sample               sample each character from the model's distribution instead of
                         taking the most likely one (on the GPU: Philox4x32-10, Gumbel-max)
  --temperature T        with --sample: divide the logits by T > 0 (default 1)
  --top-k K              with --sample: from the K most likely characters (default 0: all)
  --top-p P              with --sample: from the smallest set holding P of the mass (0 < P <= 1)
  --seed N               with --sample: the same seed gives the same output (default 0)
  --weights W            store the weight matrices as fp32, fp16 or int8 (per-row scales);
                         default: as the model file stores them
  --device D             Vulkan device: index or name substring (default: the best one;
                         VKRNN_DEVICE works too)
  --model DIR            model directory (default: )" VKRNN_DATES_MODEL_DIR R"()
  -h, --help             this text

Confidence is the geometric mean of the probabilities of the output tokens, end-of-sequence
token included (exp of the mean log-probability); with --sample, of the tempered, truncated
distribution the characters were drawn from. VKRNN_VALIDATION=1 turns on the Vulkan
validation layer; any message it prints makes the exit status 3.
)";

constexpr std::size_t kMaxPanels = 16;

struct Args : CommonArgs {
  std::string heatmap;
  bool sample = false;
  bool sampling_set = false;  // --temperature, --top-k, --top-p or --seed given
  double temperature = 1.0, top_p = 1.0;
  std::size_t top_k = 0;
  std::uint64_t seed = 0;

  // greedy's options: the argmax, or sampling.
  vkrnn::DecodeOptions decode() const {
    vkrnn::DecodeOptions o;
    if (sample) {
      o.sampling_topk = top_k;
      o.sampling_topp = top_p;
      o.sampling_temperature = temperature;
      o.seed = seed;
    }
    return o;
  }
};

// A number of an option (the whole value must parse), else a UsageError naming the option.
double parse_real(const std::string& option, const std::string& value, double lo, double hi, bool lo_open) {
  std::size_t used = 0;
  double x = 0.0;
  try {
    x = std::stod(value, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != value.size() || value.empty() || !(lo_open ? x > lo : x >= lo) || !(x <= hi)) {
    throw UsageError(fmt::format("{} needs a number in {}{}, {}], got '{}'", option, lo_open ? "(" : "[", lo, hi, value));
  }
  return x;
}

Args parse(int argc, char** argv) {
  Args a;
  a.model = VKRNN_DATES_MODEL_DIR;
  parse_common_args(argc, argv, a, "DATE", [&](const std::string& option, const auto& value) {
    if (option == "--heatmap") {
      a.heatmap = value();
    } else if (option == "--sample") {
      a.sample = true;
    } else if (option == "--temperature") {
      a.temperature = parse_real(option, value(), 0.0, 1e6, true);
      a.sampling_set = true;
    } else if (option == "--top-p") {
      a.top_p = parse_real(option, value(), 0.0, 1.0, true);
      a.sampling_set = true;
    } else if (option == "--top-k") {
      a.top_k = static_cast<std::size_t>(parse_real(option, value(), 0.0, 1e9, false));
      a.sampling_set = true;
    } else if (option == "--seed") {
      a.seed = static_cast<std::uint64_t>(parse_real(option, value(), 0.0, 9007199254740992.0, false));
      a.sampling_set = true;
    } else {
      return false;
    }
    return true;
  });
  if (!a.eval.empty() && !a.heatmap.empty()) throw UsageError("--heatmap does not combine with --eval");
  if (a.sampling_set && !a.sample) throw UsageError("--temperature, --top-k, --top-p and --seed need --sample");
  if (a.sample && a.top_k == 1) throw UsageError("--top-k 1 is greedy decoding: leave out --sample");
  return a;
}

// Source ids of one date, refusing what the model cannot read (it would guess): empty text and
// characters outside its vocabulary, named with their position.
std::vector<std::int32_t> source_ids(const vkrnn::Seq2Seq& model, const std::string& text,
                                     const std::string& where) {
  if (text.empty()) throw InputError(where + ": an empty date");
  std::vector<std::int32_t> ids;
  try {
    ids = model.encode_text(text);
  } catch (const vkrnn::Error& e) {  // invalid UTF-8
    throw InputError(fmt::format("{}: {}", where, e.what()));
  }
  const auto chars = utf8_characters(text);
  const std::int32_t unk = model.config().special.unk;
  for (std::size_t i = 0; i < chars.size() && i < ids.size(); ++i) {
    if (ids[i] != unk) continue;
    std::string known;
    for (const auto& t : model.source_tokenizer().vocab()) {
      if (t.size() == 1) known += t;  // the special tokens are longer
    }
    throw InputError(fmt::format("{}: character '{}' ({}) at position {} of \"{}\" is not in the "
                                 "model's vocabulary; it knows \"{}\"",
                                 where, chars[i], code_point_name(chars[i]), i + 1, text, known));
  }
  return ids;
}

double confidence(const vkrnn::DecodeResult& r, std::size_t b) {
  const std::size_t n = static_cast<std::size_t>(r.lengths[b]);
  if (n == 0) return 0.0;
  double sum = 0.0;
  for (std::size_t t = 0; t < n; ++t) sum += r.scores[b * r.steps + t];
  return std::exp(sum / static_cast<double>(n));
}

char label_char(const std::string& token, std::int32_t id, const vkrnn::SpecialTokens& special) {
  if (id == special.eos) return kEndOfSequence;
  if (token == " ") return kVisibleSpace;
  if (token.size() == 1 && token[0] >= 0x20 && token[0] < 0x7F) return token[0];
  return '?';
}

AttentionPanel panel(const vkrnn::Seq2Seq& model, const vkrnn::DecodeResult& r, std::size_t b,
                     const std::string& input, const std::vector<std::int32_t>& src,
                     const std::string& output) {
  AttentionPanel p;
  p.title = fmt::format("{}  ->  {}   (confidence {:.4f})", input, output, confidence(r, b));
  const auto& special = model.config().special;
  for (auto id : src) p.columns += label_char(model.source_tokenizer().vocab()[id], id, special);
  const auto row = r.row(b);
  for (auto id : row) p.rows += label_char(model.target_tokenizer().vocab()[id], id, special);
  for (std::size_t t = 0; t < row.size(); ++t) {
    for (std::size_t s = 0; s < src.size(); ++s) {
      p.weights.push_back(r.attention[(b * r.steps + t) * r.source_length + s]);
    }
  }
  return p;
}

int normalise(vkrnn::Context& ctx, const vkrnn::Seq2Seq& model, const Args& args, double load_ms) {
  const auto dates = inputs_or_stdin(args.inputs);
  if (dates.empty()) throw UsageError("no dates given (arguments or stdin lines)");
  std::vector<std::vector<std::int32_t>> sources;
  for (std::size_t i = 0; i < dates.size(); ++i) {
    sources.push_back(source_ids(model, dates[i], fmt::format("date {}", i + 1)));
  }
  std::size_t width = 0;
  for (const auto& d : dates) width = std::max(width, utf8_characters(d).size());

  std::cout << "device: " << describe_device(ctx.device()) << "\n";
  std::vector<AttentionPanel> panels;
  double decode_ms = 0.0;
  std::size_t batches = 0, dispatches = 0, steps_run = 0;
  for (std::size_t first = 0; first < dates.size(); first += args.batch) {
    const std::size_t n = std::min(args.batch, dates.size() - first);
    const std::vector<std::vector<std::int32_t>> chunk(sources.begin() + first, sources.begin() + first + n);
    const bool want_attention = !args.heatmap.empty() && first < kMaxPanels;
    Stopwatch watch;
    vkrnn::DecodeOptions o = args.decode();
    o.return_attention = want_attention;
    const vkrnn::DecodeResult r = model.greedy(chunk, o);
    decode_ms += watch.ms();
    ++batches;
    dispatches += r.stats.dispatches;
    steps_run = std::max(steps_run, r.steps_run);
    for (std::size_t b = 0; b < n; ++b) {
      const std::string& input = dates[first + b];
      const std::string output = model.decode_text(r.row(b));
      const std::size_t pad = width - utf8_characters(input).size();
      std::cout << fmt::format("  {}{}  ->  {:<10}  confidence {:.4f}\n", input, std::string(pad, ' '),
                               output, confidence(r, b));
      if (want_attention && panels.size() < kMaxPanels) {
        panels.push_back(panel(model, r, b, input, chunk[b], output));
      }
    }
  }
  if (batches == 1) {
    // The first decode also created the compute pipelines; a second one shows the steady state.
    Stopwatch watch;
    model.greedy(sources, args.decode());
    std::cout << fmt::format("time: model load {:.0f} ms; decode of {} date{} {:.1f} ms on first use (creates "
                             "the pipelines), then {:.1f} ms (one submission, {} dispatches; the GPU stopped "
                             "after {} of {} steps)\n",
                             load_ms, dates.size(), dates.size() == 1 ? "" : "s", decode_ms, watch.ms(),
                             dispatches, steps_run, model.config().max_decode_length);
  } else {
    std::cout << fmt::format("time: model load {:.0f} ms; decode of {} dates {:.1f} ms in {} batches (one "
                             "submission each, {} dispatches in all; the first also creates the pipelines)\n",
                             load_ms, dates.size(), decode_ms, batches, dispatches);
  }
  std::cout << "confidence: geometric mean of the output tokens' probabilities (end token included)\n";
  if (!args.heatmap.empty()) {
    write_attention_png(args.heatmap,
                        {"vkrnn-dates: attention of each output character (rows)",
                         "over the input characters (columns); end token = arrow"},
                        panels);
    std::cout << fmt::format("heatmap: {} ({} panel{}{})\n", args.heatmap, panels.size(),
                             panels.size() == 1 ? "" : "s",
                             dates.size() > panels.size() ? fmt::format(", the first {} dates", panels.size()) : "");
  }
  return 0;
}

int evaluate(vkrnn::Context& ctx, const vkrnn::Seq2Seq& model, const Args& args) {
  std::vector<std::string> inputs, expected;
  std::vector<std::vector<std::int32_t>> sources;
  for_each_tab_line(args.eval, args.limit, "input<TAB>expected",
                    [&](const std::string& where, const std::string& input, const std::string& want) {
                      inputs.push_back(input);
                      expected.push_back(want);
                      sources.push_back(source_ids(model, input, where));
                    });

  std::cout << "device: " << describe_device(ctx.device()) << "\n";
  std::size_t correct = 0, shown = 0;
  double decode_ms = 0.0;
  for (std::size_t first = 0; first < inputs.size(); first += args.batch) {
    const std::size_t n = std::min(args.batch, inputs.size() - first);
    const std::vector<std::vector<std::int32_t>> chunk(sources.begin() + first, sources.begin() + first + n);
    Stopwatch watch;
    const vkrnn::DecodeResult r = model.greedy(chunk, args.decode());
    decode_ms += watch.ms();
    for (std::size_t b = 0; b < n; ++b) {
      const std::string got = model.decode_text(r.row(b));
      if (got == expected[first + b]) {
        ++correct;
      } else if (shown++ < 10) {
        std::cout << fmt::format("  wrong: \"{}\" -> {} (expected {})\n", inputs[first + b], got, expected[first + b]);
      }
    }
  }
  const double accuracy = 100.0 * double(correct) / double(inputs.size());
  std::cout << fmt::format("exact match: {}/{} = {:.2f}% ({}, batches of {}) in {:.0f} ms, {:.0f} dates/s\n",
                           correct, inputs.size(), accuracy,
                           args.sample ? fmt::format("sampled: temperature {}, top-k {}, top-p {}, seed {}", args.temperature,
                                                     args.top_k, args.top_p, args.seed)
                                       : std::string("greedy"),
                           args.batch, decode_ms,
                           1000.0 * double(inputs.size()) / decode_ms);
  return accuracy_status("vkrnn-dates", accuracy, args.expect_accuracy);
}

}  // namespace

int main(int argc, char** argv) {
  return run_sample("vkrnn-dates", [&](const vkrnn::ValidationSink& validation_sink) {
    const Args args = parse(argc, argv);
    if (args.help) {
      std::cout << kUsage;
      return 0;
    }
    Stopwatch load;
    vkrnn::ContextOptions options;
    options.device = args.device;
    options.validation_sink = validation_sink;
    vkrnn::Context ctx(options);
    const auto model = vkrnn::Seq2Seq::load(ctx, args.model, vkrnn::samples::model_options(args));
    const double load_ms = load.ms();
    return args.eval.empty() ? normalise(ctx, model, args, load_ms) : evaluate(ctx, model, args);
  });
}
