// model.json version 2 (docs/model-format.md): the top-level fields and the graphs, read
// strictly; then, once the weights' shapes are known, the graphs are checked and the sizes they
// imply (vocabularies, classes) are filled into the config and checked against what it says.
#include "models/graph_file.hpp"

#include <algorithm>
#include <set>

#include <fmt/format.h>

#include "models/config_reader.hpp"
#include "vkrnn/beam_search.hpp"
#include "vkrnn/error.hpp"

namespace vkrnn::graph {
namespace {

using model_detail::json;
using model_detail::json_kind;
using model_detail::quote;
using model_detail::Reader;
using model_detail::value_str;

// Keys of `obj` must be among `allowed`.
void only_keys(const Reader& r, const json& obj, std::initializer_list<const char*> allowed, const std::string& where) {
  for (const auto& [key, value] : obj.items()) {
    if (!model_detail::listed(allowed, key)) {
      r.fail(fmt::format("{}: unknown field {} (expected '{}')", where, quote(key), fmt::join(allowed, "', '")));
    }
  }
}

const json& object(const Reader& r, const json& obj, const char* name, const std::string& where) {
  const json& v = r.field(obj, name);
  if (!v.is_object()) r.fail(fmt::format("{}: field '{}': expected an object, got {}", where, name, json_kind(v)));
  return v;
}

std::string name_of(const Reader& r, const json& v, const std::string& where) {
  if (!v.is_string() || v.get_ref<const std::string&>().empty()) {
    r.fail(fmt::format("{}: expected a tensor name (a non-empty string), got {}", where, value_str(v)));
  }
  return v.get<std::string>();
}

SymShape parse_shape(const Reader& r, const json& v, const std::string& where) {
  if (!v.is_array() || v.empty() || v.size() > 6) r.fail(fmt::format("{}: expected a list of 1 to 6 sizes, got {}", where, value_str(v)));
  SymShape s;
  for (const auto& d : v) {
    if (d.is_string() && d.get<std::string>() == "B") s.push_back(Dim::batch());
    else if (d.is_string() && d.get<std::string>() == "S") s.push_back(Dim::source());
    else if (d.is_number_integer() && d.get<std::int64_t>() >= 1 && d.get<std::uint64_t>() <= model_detail::kMaxSize)
      s.push_back(Dim::of(d.get<std::size_t>()));
    else r.fail(fmt::format("{}: {} is not a size (an integer >= 1, \"B\" or \"S\")", where, value_str(d)));
  }
  return s;
}

Graph parse_graph(const Reader& r, const json& j, const std::string& name) {
  const std::string where = fmt::format("graph '{}'", name);
  if (!j.is_object()) r.fail(fmt::format("{}: expected an object, got {}", where, json_kind(j)));
  only_keys(r, j, {"inputs", "nodes", "outputs"}, where);
  Graph g;
  g.name = name;
  const bool decoder = name == "decoder_step";
  for (const auto& [in_name, spec] : object(r, j, "inputs", where).items()) {
    const std::string iw = fmt::format("{}: input {}", where, quote(in_name));
    if (!spec.is_object()) r.fail(fmt::format("{}: expected an object, got {}", iw, json_kind(spec)));
    only_keys(r, spec, {"from", "shape", "dtype", "next"}, iw);
    Input in;
    in.name = in_name;
    const std::string from = r.string(spec, "from");
    const bool in_encoder_graph = !decoder;
    if (from == "tokens" && in_encoder_graph) in.from = From::tokens;
    else if (from == "lengths") in.from = From::lengths;
    else if (from == "token" && decoder) in.from = From::token;
    else if (from == "zeros" && decoder) in.from = From::zeros;
    else if (from.rfind("encoder:", 0) == 0 && decoder && from.size() > 8) {
      in.from = From::encoder;
      in.source = from.substr(8);
    } else {
      r.fail(fmt::format("{}: 'from' is {}; graph '{}' takes {}", iw, quote(from), name,
                         decoder ? "'token', 'lengths', 'zeros' or 'encoder:NAME'" : "'tokens' or 'lengths'"));
    }
    if (spec.contains("shape")) in.shape = parse_shape(r, spec["shape"], iw + ": field 'shape'");
    if (spec.contains("dtype")) {
      in.dtype = r.choice<DType>(spec, "dtype", {{"f32", DType::f32}, {"i32", DType::i32}});
      in.dtype_given = true;
    }
    if (spec.contains("next")) {
      if (!decoder) r.fail(fmt::format("{}: 'next' (recurrent state) is for decoder_step inputs", iw));
      in.next = name_of(r, spec["next"], iw + ": field 'next'");
    }
    g.inputs.push_back(std::move(in));
  }
  const json& nodes = r.field(j, "nodes");
  if (!nodes.is_array()) r.fail(fmt::format("{}: field 'nodes': expected a list, got {}", where, json_kind(nodes)));
  for (std::size_t i = 0; i < nodes.size(); ++i) {
    const json& nj = nodes[i];
    std::string nw = fmt::format("{}: node {}", where, i);
    if (!nj.is_object()) r.fail(fmt::format("{}: expected an object, got {}", nw, json_kind(nj)));
    Node n;
    n.name = r.string(nj, "name");
    nw = fmt::format("{}: node {}", where, quote(n.name));
    only_keys(r, nj, {"name", "op", "inputs", "outputs", "options", "weights"}, nw);
    n.op = r.string(nj, "op");
    for (const auto& [slot, v] : object(r, nj, "inputs", nw).items()) {
      const std::string sw = fmt::format("{}: input '{}'", nw, slot);
      if (v.is_array()) {
        if (v.empty()) r.fail(fmt::format("{}: an empty list", sw));
        for (const auto& x : v) n.inputs[slot].push_back(name_of(r, x, sw));
      } else {
        n.inputs[slot].push_back(name_of(r, v, sw));
      }
    }
    for (const auto& [slot, v] : object(r, nj, "outputs", nw).items()) n.outputs[slot] = name_of(r, v, fmt::format("{}: output '{}'", nw, slot));
    if (nj.contains("options")) n.options = object(r, nj, "options", nw);
    if (nj.contains("weights")) {
      for (const auto& [slot, v] : object(r, nj, "weights", nw).items()) n.weights[slot] = name_of(r, v, fmt::format("{}: weight '{}'", nw, slot));
    }
    g.nodes.push_back(std::move(n));
  }
  for (const auto& [role, v] : object(r, j, "outputs", where).items()) g.outputs[role] = name_of(r, v, fmt::format("{}: output '{}'", where, role));
  return g;
}

std::int32_t special(const Reader& r, const json& sp, const char* name, bool required, std::int32_t fallback) {
  if (!sp.contains(name)) {
    if (required) r.fail(fmt::format("field 'special_tokens': missing field '{}'", name));
    return fallback;
  }
  const json& v = sp[name];
  if (!v.is_number_unsigned() || v.get<std::uint64_t>() > model_detail::kMaxSize) {
    r.fail(fmt::format("field 'special_tokens.{}': expected a token id, got {}", name, value_str(v)));
  }
  return static_cast<std::int32_t>(v.get<std::uint64_t>());
}

// An optional string list of `expected` entries (0: any) without duplicates (for vocabularies).
std::vector<std::string> strings(const Reader& r, const json& j, const char* name, bool unique) {
  const json& v = r.field(j, name);
  if (!v.is_array()) r.fail(fmt::format("field '{}': expected a list of strings, got {}", name, json_kind(v)));
  std::vector<std::string> out;
  std::set<std::string> seen;
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (!v[i].is_string()) r.fail(fmt::format("field '{}': entry {} is {}, expected a string", name, i, json_kind(v[i])));
    const std::string& s = v[i].get_ref<const std::string&>();
    if (unique && !seen.insert(s).second) r.fail(fmt::format("field '{}': entry {} ({}) is a duplicate", name, i, quote(s)));
    out.push_back(s);
  }
  return out;
}

// Rows of the embedding tables that read graph input `input` (0 when something else reads it
// too, or nothing reads it).
std::size_t id_range(const Graph& g, const std::string& input, const WeightShapes& weights, bool& other_readers) {
  std::size_t rows = 0;
  other_readers = false;
  for (const Node& n : g.nodes) {
    for (const auto& [slot, names] : n.inputs) {
      if (std::find(names.begin(), names.end(), input) == names.end()) continue;
      if (n.op == "embedding" && slot == "ids") {
        const std::size_t v = weights(n.weights.at("weight"))->at(0);
        rows = rows ? std::min(rows, v) : v;
      } else if (n.op == "reshape") {
        // Ids reshaped (e.g. [B] -> [B, 1]) keep their range: follow them.
        bool other = false;
        const std::size_t v = id_range(g, n.outputs.begin()->second, weights, other);
        other_readers = other_readers || other;
        if (v) rows = rows ? std::min(rows, v) : v;
      } else {
        other_readers = true;
      }
    }
  }
  return rows;
}

std::string input_named(const Graph& g, From from) {
  for (const Input& in : g.inputs)
    if (in.from == from) return in.name;
  return {};
}

}  // namespace

void parse_v2(const Reader& r, const json& j, ModelConfig& c, ModelGraphs& graphs) {
  only_keys(r, j,
            {"format", "version", "task", "graphs", "weights", "weights_dtype", "special_tokens", "decode", "src_vocab_size",
             "tgt_vocab_size", "vocab_size", "num_classes", "src_vocab", "tgt_vocab", "vocab", "labels", "tokenizer",
             "output_activation", "max_positions", "architecture", "extra"},
            "top level");
  c.task = r.choice<ModelTask>(j, "task", {{"seq2seq", ModelTask::seq2seq}, {"classifier", ModelTask::classifier}});
  const bool seq2seq = c.task == ModelTask::seq2seq;
  c.architecture = Architecture::graph;
  if (j.contains("architecture")) {
    const std::string& a = r.string(j, "architecture");
    for (Architecture known : {Architecture::bahdanau_seq2seq, Architecture::luong_seq2seq, Architecture::rnn_attention_classifier,
                               Architecture::self_attention_rnn}) {
      if (a == to_string(known)) c.architecture = known;
    }
  }
  const json& gj = object(r, j, "graphs", "top level");
  const std::vector<const char*> names = seq2seq ? std::vector<const char*>{"encoder", "decoder_step"} : std::vector<const char*>{"forward"};
  for (const char* name : names) {
    if (!gj.contains(name)) r.fail(fmt::format("field 'graphs': graph '{}' is missing (a {} model has '{}')", name, to_string(c.task), fmt::join(names, "', '")));
  }
  for (const auto& [key, value] : gj.items()) {
    if (!model_detail::listed(names, key)) {
      r.fail(fmt::format("field 'graphs': unexpected graph {} for a {} model (it has '{}')", quote(key), to_string(c.task), fmt::join(names, "', '")));
    }
  }
  if (seq2seq) {
    graphs.encoder = parse_graph(r, gj["encoder"], "encoder");
    graphs.decoder_step = parse_graph(r, gj["decoder_step"], "decoder_step");
  } else {
    graphs.forward = parse_graph(r, gj["forward"], "forward");
  }

  // Special tokens.
  const json empty = json::object();
  const json& sp = j.contains("special_tokens") ? object(r, j, "special_tokens", "top level") : empty;
  only_keys(r, sp, {"pad", "bos", "eos", "unk"}, "field 'special_tokens'");
  c.special.pad = special(r, sp, "pad", false, 0);
  c.special.bos = special(r, sp, "bos", seq2seq, -1);
  c.special.eos = special(r, sp, "eos", false, -1);
  c.special.unk = special(r, sp, "unk", false, -1);
  if (!seq2seq && (sp.contains("bos") || sp.contains("eos"))) r.fail("field 'special_tokens': a classifier has no 'bos' or 'eos'");

  if (seq2seq) {
    const json& d = object(r, j, "decode", "top level");
    only_keys(r, d, {"max_length", "beam_width", "length_alpha"}, "field 'decode'");
    c.max_decode_length = r.size(d, "max_length", 1, model_limits::max_decode_length);
    c.beam_width = d.contains("beam_width") ? r.size(d, "beam_width", 1, BeamSearch::max_beam) : 1;
    if (c.beam_width > 63) r.fail(fmt::format("field 'decode.beam_width': {} is beyond 63", c.beam_width));
    c.length_alpha = d.contains("length_alpha") ? r.number(d, "length_alpha") : 0.6;
    if (j.contains("src_vocab_size")) c.src_vocab_size = r.size(j, "src_vocab_size", 1, model_limits::max_vocab);
    if (j.contains("tgt_vocab_size")) c.tgt_vocab_size = r.size(j, "tgt_vocab_size", 1, model_limits::max_vocab);
    if (j.contains("src_vocab")) c.src_vocab = strings(r, j, "src_vocab", true);
    if (j.contains("tgt_vocab")) c.tgt_vocab = strings(r, j, "tgt_vocab", true);
  } else {
    if (j.contains("decode")) r.fail("field 'decode': a classifier does not decode");
    if (j.contains("vocab_size")) c.vocab_size = r.size(j, "vocab_size", 1, model_limits::max_vocab);
    if (j.contains("num_classes")) c.num_classes = r.size(j, "num_classes", 1, model_limits::max_vocab);
    if (j.contains("vocab")) c.vocab = strings(r, j, "vocab", true);
    if (j.contains("labels")) c.labels = strings(r, j, "labels", false);
    if (j.contains("output_activation")) {
      c.output_activation = r.choice<OutputActivation>(j, "output_activation", {{"softmax", OutputActivation::softmax}, {"sigmoid", OutputActivation::sigmoid}});
    }
  }
  for (const char* f : {"src_vocab_size", "tgt_vocab_size", "src_vocab", "tgt_vocab"}) {
    if (!seq2seq && j.contains(f)) r.fail(fmt::format("field '{}': a classifier has 'vocab_size' / 'vocab'", f));
  }
  for (const char* f : {"vocab_size", "num_classes", "vocab", "labels", "output_activation"}) {
    if (seq2seq && j.contains(f)) r.fail(fmt::format("field '{}': only a classifier has it", f));
  }
  c.tokenizer = {};
  if (j.contains("tokenizer")) {
    const json& tok = object(r, j, "tokenizer", "top level");
    only_keys(r, tok, {"type", "lowercase", "src_append_eos"}, "field 'tokenizer'");
    if (tok.contains("type")) c.tokenizer.type = r.choice<TokenizerType>(tok, "type", {{"char", TokenizerType::character}, {"word", TokenizerType::word}});
    if (tok.contains("lowercase")) c.tokenizer.lowercase = r.boolean(tok, "lowercase");
    if (tok.contains("src_append_eos")) c.tokenizer.src_append_eos = r.boolean(tok, "src_append_eos");
  }
  if (j.contains("max_positions")) c.max_positions = r.size(j, "max_positions", 1, model_limits::max_positions);
  if (j.contains("weights_dtype")) c.weights_dtype = r.choice<std::string>(j, "weights_dtype", {{"F32", "F32"}, {"F16", "F16"}, {"BF16", "BF16"}, {"I8", "I8"}});
}

void finish_v2(const Reader& r, const json& j, ModelConfig& c, ModelGraphs& graphs, const WeightShapes& weights) {
  const std::string& origin = r.path();
  const bool seq2seq = c.task == ModelTask::seq2seq;
  auto size_check = [&](std::size_t& field, const char* name, std::size_t implied, const char* what) {
    if (!field) field = implied;
    else if (implied && field != implied) r.fail(fmt::format("field '{}' is {}, but {} gives {}", name, field, what, implied));
  };
  auto id_size = [&](const Graph& g, const char* field, std::size_t& size) {
    const std::string in = input_named(g, From::tokens);
    if (in.empty()) r.fail(fmt::format("graph '{}': no input from 'tokens'", g.name));
    if (input_named(g, From::lengths).empty()) r.fail(fmt::format("graph '{}': no input from 'lengths'", g.name));
    bool other = false;
    const std::size_t rows = id_range(g, in, weights, other);
    if (!size) {
      if (other || !rows) r.fail(fmt::format("field '{}' is required: the token ids of graph '{}' are not only read by embedding tables", field, g.name));
      size = rows;
    } else if (rows && size > rows) {
      r.fail(fmt::format("field '{}' is {}, but the embedding table reading the ids of graph '{}' has only {} rows", field, size, g.name, rows));
    }
  };
  if (seq2seq) {
    check(graphs.encoder, origin, nullptr, weights);
    check(graphs.decoder_step, origin, &graphs.encoder, weights);
    const Graph& d = graphs.decoder_step;
    const std::string logits = d.output("logits");
    if (logits.empty()) r.fail("graph 'decoder_step': output 'logits' is missing");
    const TensorInfo& lt = d.tensor(logits);
    if (lt.shape.size() != 2 || lt.shape[0] != Dim::batch() || lt.dtype != DType::f32) {
      r.fail(fmt::format("graph 'decoder_step': output 'logits' ('{}') must be f32 [B, vocab], got {}", logits, to_string(lt.shape)));
    }
    const std::string attn = d.output("attention");
    if (!attn.empty()) {
      const TensorInfo& at = d.tensor(attn);
      if (at.shape != SymShape{Dim::batch(), Dim::source()}) {
        r.fail(fmt::format("graph 'decoder_step': output 'attention' ('{}') must be [B, S], got {}", attn, to_string(at.shape)));
      }
    }
    if (input_named(d, From::token).empty()) r.fail("graph 'decoder_step': no input from 'token' (the previous token)");
    size_check(c.tgt_vocab_size, "tgt_vocab_size", lt.shape[1].value, "the width of 'logits'");
    id_size(graphs.encoder, "src_vocab_size", c.src_vocab_size);
    // Chosen tokens are fed back: every table reading 'token' must hold the whole target vocabulary.
    bool other = false;
    const std::size_t rows = id_range(d, input_named(d, From::token), weights, other);
    if (rows && rows < c.tgt_vocab_size) {
      r.fail(fmt::format("graph 'decoder_step': the embedding table reading 'token' has {} rows, fewer than the {} target tokens the logits choose from", rows, c.tgt_vocab_size));
    }
    for (const Input& in : d.inputs) {
      if (in.from == From::zeros && in.dtype != DType::f32) r.fail(fmt::format("graph 'decoder_step': input '{}': zeros are f32", in.name));
    }
    const std::size_t both = std::min(c.src_vocab_size, c.tgt_vocab_size);
    auto in_range = [&](std::int32_t id, const char* name, std::size_t range) {
      if (id >= 0 && static_cast<std::size_t>(id) >= range) {
        r.fail(fmt::format("field 'special_tokens.{}': expected an id in [0, {}), got {}", name, range, id));
      }
    };
    in_range(c.special.bos, "bos", c.tgt_vocab_size);
    in_range(c.special.eos, "eos", c.tgt_vocab_size);
    in_range(c.special.pad, "pad", both);
    in_range(c.special.unk, "unk", c.src_vocab_size);
    if (!c.src_vocab.empty() && c.src_vocab.size() != c.src_vocab_size) {
      r.fail(fmt::format("field 'src_vocab': {} entries, but the model's size is {}", c.src_vocab.size(), c.src_vocab_size));
    }
    if (!c.tgt_vocab.empty() && c.tgt_vocab.size() != c.tgt_vocab_size) {
      r.fail(fmt::format("field 'tgt_vocab': {} entries, but the model's size is {}", c.tgt_vocab.size(), c.tgt_vocab_size));
    }
  } else {
    check(graphs.forward, origin, nullptr, weights);
    const Graph& f = graphs.forward;
    const std::string logits = f.output("logits");
    if (logits.empty()) r.fail("graph 'forward': output 'logits' is missing");
    const TensorInfo& lt = f.tensor(logits);
    if (lt.shape.size() != 2 || lt.shape[0] != Dim::batch() || lt.dtype != DType::f32) {
      r.fail(fmt::format("graph 'forward': output 'logits' ('{}') must be f32 [B, classes], got {}", logits, to_string(lt.shape)));
    }
    size_check(c.num_classes, "num_classes", lt.shape[1].value, "the width of 'logits'");
    const std::string probs = f.output("probs");
    if (!probs.empty() && f.tensor(probs).shape != lt.shape) r.fail(fmt::format("graph 'forward': output 'probs' must have the shape of 'logits', {}", to_string(lt.shape)));
    id_size(f, "vocab_size", c.vocab_size);
    for (const auto& [id, name] : {std::pair{c.special.pad, "pad"}, std::pair{c.special.unk, "unk"}}) {
      if (id >= 0 && static_cast<std::size_t>(id) >= c.vocab_size) {
        r.fail(fmt::format("field 'special_tokens.{}': expected an id in [0, {}), got {}", name, c.vocab_size, id));
      }
    }
    if (!c.vocab.empty() && c.vocab.size() != c.vocab_size) {
      r.fail(fmt::format("field 'vocab': {} entries, but the model's size is {}", c.vocab.size(), c.vocab_size));
    }
    if (c.labels.empty()) {
      for (std::size_t i = 0; i < c.num_classes; ++i) c.labels.push_back(std::to_string(i));
    } else if (c.labels.size() != c.num_classes) {
      r.fail(fmt::format("field 'labels': {} entries for {} classes", c.labels.size(), c.num_classes));
    }
    if (!j.contains("output_activation")) c.output_activation = c.num_classes >= 2 ? OutputActivation::softmax : OutputActivation::sigmoid;
    if (c.output_activation == OutputActivation::softmax && c.num_classes < 2) r.fail("field 'num_classes': softmax needs at least 2 classes, got 1");
  }
  // The longest input: the config's limit and every positional encoding's.
  for (const Graph* g : {&graphs.encoder, &graphs.forward}) {
    for (const Node& n : g->nodes) {
      if (n.op == "positional_encoding" && n.options.contains("max_positions")) {
        const std::size_t m = n.options["max_positions"].get<std::size_t>();
        c.max_positions = c.max_positions ? std::min(c.max_positions, m) : m;
      }
    }
  }
}

}  // namespace vkrnn::graph
