// model.json + model.safetensors (docs/model-format.md, versions 1 and 2), validated strictly: the
// files are untrusted input, so every field, role and tensor is checked before anything is
// built from it, and every failure is a vkrnn::Error naming the file and what was expected.
#include "vkrnn/model.hpp"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <set>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "io/json_kind.hpp"
#include "io/untrusted.hpp"
#include "models/config_reader.hpp"
#include "models/graph_file.hpp"
#include "vkrnn/beam_search.hpp"
#include "vkrnn/error.hpp"
#include "vkrnn/linear.hpp"
#include "vkrnn/safetensors.hpp"

namespace vkrnn {

using json = nlohmann::json;

namespace {

using model_detail::json_kind;
using model_detail::kMaxSize;
using model_detail::quote;
using model_detail::Reader;
using model_detail::value_str;

constexpr const char* kFormat = "vkrnn-model";
// An int8 weight "<name>" (I8 [N, K]) has its per-row scales in "<name>_scale" (F32 [N]).
constexpr const char* kScaleSuffix = "_scale";
// model.json nests a few levels (config, tensors, RNN map); deeper input is garbage or hostile.
constexpr std::size_t kMaxJsonDepth = 16;

// What a config implies: every plain role with its shape, every RNN role with its parameters.
struct RnnRole {
  std::string role;
  std::map<std::string, Shape> params;  // torch parameter name -> shape
};
struct Expected {
  std::vector<std::pair<std::string, Shape>> plain;
  std::vector<RnnRole> rnns;
};

RnnRole rnn_role(std::string role, CellType cell, std::size_t input, std::size_t hidden,
                 std::size_t layers, bool bidirectional) {
  RnnRole r{std::move(role), {}};
  const std::size_t G = gate_count(cell), D = bidirectional ? 2 : 1;
  for (std::size_t k = 0; k < layers; ++k) {
    const std::size_t in = k == 0 ? input : D * hidden;
    for (std::size_t d = 0; d < D; ++d) {
      const std::string sfx = std::to_string(k) + (d ? "_reverse" : "");
      r.params["weight_ih_l" + sfx] = {G * hidden, in};
      r.params["weight_hh_l" + sfx] = {G * hidden, hidden};
      r.params["bias_ih_l" + sfx] = {G * hidden};
      r.params["bias_hh_l" + sfx] = {G * hidden};
    }
  }
  return r;
}

void parse_seq2seq_common(const Reader& r, const json& j, ModelConfig& c) {
  c.src_vocab_size = r.size(j, "src_vocab_size", 1, model_limits::max_vocab);
  c.tgt_vocab_size = r.size(j, "tgt_vocab_size", 1, model_limits::max_vocab);
  const json& sp = r.field(j, "special_tokens");
  if (!sp.is_object()) r.fail(fmt::format("field 'special_tokens': expected an object, got {}", json_kind(sp)));
  const std::size_t both = std::min(c.src_vocab_size, c.tgt_vocab_size);  // ids shared by both sides
  c.special.pad = r.special(sp, "pad", both);
  c.special.bos = r.special(sp, "bos", both);
  c.special.eos = r.special(sp, "eos", both);
  c.special.unk = r.special(sp, "unk", both);
  c.src_vocab = r.vocab(j, "src_vocab", c.src_vocab_size);
  c.tgt_vocab = r.vocab(j, "tgt_vocab", c.tgt_vocab_size);
  c.max_decode_length = r.size(j, "max_decode_length", 1, model_limits::max_decode_length);
  const json& beam = r.field(j, "beam");
  if (!beam.is_object()) r.fail(fmt::format("field 'beam': expected an object, got {}", json_kind(beam)));
  c.beam_width = r.size(beam, "width", 1, BeamSearch::max_beam);
  c.length_alpha = r.number(beam, "length_alpha");
  c.input_feeding = r.boolean(j, "input_feeding");
}

void parse_classifier_common(const Reader& r, const json& j, ModelConfig& c) {
  c.vocab_size = r.size(j, "vocab_size", 1, model_limits::max_vocab);
  const json& sp = r.field(j, "special_tokens");
  if (!sp.is_object()) r.fail(fmt::format("field 'special_tokens': expected an object, got {}", json_kind(sp)));
  c.special.pad = r.special(sp, "pad", c.vocab_size);
  c.special.unk = r.special(sp, "unk", c.vocab_size);
  c.vocab = r.vocab(j, "vocab", c.vocab_size);
  c.hidden = r.size(j, "hidden");
  c.layers = r.size(j, "layers", 1, model_limits::max_layers);
  c.bidirectional = r.boolean(j, "bidirectional");
  c.num_classes = r.size(j, "num_classes", 1, model_limits::max_vocab);
  c.labels = r.labels(j, c.num_classes);
  c.output_activation = r.choice<OutputActivation>(
      j, "output_activation", {{"softmax", OutputActivation::softmax}, {"sigmoid", OutputActivation::sigmoid}});
  if (c.output_activation == OutputActivation::softmax && c.num_classes < 2) {
    r.fail("field 'num_classes': softmax needs at least 2 classes, got 1");
  }
}

void parse_pooling(const Reader& r, const json& j, ModelConfig& c, Expected& e) {
  c.pooling_score = r.choice<PoolingScore>(j, "pooling_score",
                                           {{"tanh", PoolingScore::tanh}, {"linear", PoolingScore::linear}});
  const std::size_t DH = (c.bidirectional ? 2 : 1) * c.hidden;
  if (c.pooling_score == PoolingScore::tanh) {
    c.attention_dim = r.size(j, "attention_dim");
    e.plain.push_back({"pooling.weight", {c.attention_dim, DH}});
    e.plain.push_back({"pooling.bias", {c.attention_dim}});
    e.plain.push_back({"pooling.w", {c.attention_dim}});
  } else {
    e.plain.push_back({"pooling.w", {DH}});
  }
}

Expected parse_architecture(const Reader& r, const json& j, ModelConfig& c) {
  Expected e;
  const std::size_t E = c.embedding_dim;
  switch (c.architecture) {
    case Architecture::bahdanau_seq2seq: {
      parse_seq2seq_common(r, j, c);
      c.encoder_hidden = r.size(j, "encoder_hidden");
      c.encoder_layers = r.size(j, "encoder_layers", 1, model_limits::max_layers);
      r.expect_value(j, "encoder_bidirectional", true);
      c.decoder_hidden = r.size(j, "decoder_hidden");
      r.expect_value(j, "decoder_layers", std::size_t{1});
      c.score = r.choice<Score>(j, "score", {{"additive", Score::additive}});
      c.attention_dim = r.size(j, "attention_dim");
      if (c.input_feeding) r.fail("field 'input_feeding': must be false for bahdanau_seq2seq");
      const std::size_t He = c.encoder_hidden, Hd = c.decoder_hidden, A = c.attention_dim, M = 2 * He;
      e.plain = {{"src_embedding", {c.src_vocab_size, E}},
                 {"tgt_embedding", {c.tgt_vocab_size, E}},
                 {"bridge.weight", {Hd, He}},
                 {"bridge.bias", {Hd}},
                 {"attention.key_weight", {A, M}},
                 {"attention.query_weight", {A, Hd}},
                 {"attention.query_bias", {A}},
                 {"attention.v", {A}},
                 {"output.weight", {c.tgt_vocab_size, Hd + M + E}},
                 {"output.bias", {c.tgt_vocab_size}}};
      e.rnns.push_back(rnn_role("encoder", c.cell, E, He, c.encoder_layers, true));
      e.rnns.push_back(rnn_role("decoder", c.cell, E + M, Hd, 1, false));
      break;
    }
    case Architecture::luong_seq2seq: {
      parse_seq2seq_common(r, j, c);
      c.hidden = r.size(j, "hidden");
      c.layers = r.size(j, "layers", 1, model_limits::max_layers);
      c.score = r.choice<Score>(j, "score", {{"dot", Score::dot}, {"general", Score::general}, {"concat", Score::concat}});
      const std::size_t H = c.hidden;
      e.plain = {{"src_embedding", {c.src_vocab_size, E}},
                 {"tgt_embedding", {c.tgt_vocab_size, E}},
                 {"combine.weight", {H, 2 * H}},
                 {"output.weight", {c.tgt_vocab_size, H}},
                 {"output.bias", {c.tgt_vocab_size}}};
      if (c.score == Score::general) e.plain.push_back({"attention.weight", {H, H}});
      if (c.score == Score::concat) {
        c.attention_dim = r.size(j, "attention_dim");
        e.plain.push_back({"attention.key_weight", {c.attention_dim, H}});
        e.plain.push_back({"attention.query_weight", {c.attention_dim, H}});
        e.plain.push_back({"attention.v", {c.attention_dim}});
      }
      e.rnns.push_back(rnn_role("encoder", c.cell, E, H, c.layers, false));
      e.rnns.push_back(rnn_role("decoder", c.cell, E + (c.input_feeding ? H : 0), H, c.layers, false));
      break;
    }
    case Architecture::rnn_attention_classifier: {
      parse_classifier_common(r, j, c);
      c.pooling = Pooling::attention;
      e.plain.push_back({"embedding", {c.vocab_size, E}});
      parse_pooling(r, j, c, e);
      const std::size_t DH = (c.bidirectional ? 2 : 1) * c.hidden;
      e.plain.push_back({"classifier.weight", {c.num_classes, DH}});
      e.plain.push_back({"classifier.bias", {c.num_classes}});
      e.rnns.push_back(rnn_role("rnn", c.cell, E, c.hidden, c.layers, c.bidirectional));
      break;
    }
    case Architecture::self_attention_rnn: {
      parse_classifier_common(r, j, c);
      c.heads = r.size(j, "heads");
      if (E % c.heads) {
        r.fail(fmt::format("field 'heads': {} does not divide embedding_dim {}", c.heads, E));
      }
      c.attention_projections = r.boolean(j, "attention_projections");
      c.positional_encoding = r.boolean(j, "positional_encoding");
      c.residual = r.boolean(j, "residual");
      c.pooling = r.choice<Pooling>(j, "pooling", {{"last", Pooling::last}, {"attention", Pooling::attention}});
      c.max_positions = r.size(j, "max_positions", 1, model_limits::max_positions);
      e.plain.push_back({"embedding", {c.vocab_size, E}});
      if (c.attention_projections) {
        for (const char* p : {"q_proj", "k_proj", "v_proj", "out_proj"}) {
          e.plain.push_back({fmt::format("{}.weight", p), {E, E}});
          e.plain.push_back({fmt::format("{}.bias", p), {E}});
        }
      }
      if (c.pooling == Pooling::attention) parse_pooling(r, j, c, e);
      const std::size_t DH = (c.bidirectional ? 2 : 1) * c.hidden;
      e.plain.push_back({"classifier.weight", {c.num_classes, DH}});
      e.plain.push_back({"classifier.bias", {c.num_classes}});
      e.rnns.push_back(rnn_role("rnn", c.cell, E, c.hidden, c.layers, c.bidirectional));
      break;
    }
    case Architecture::graph: break;  // version 2: not an architecture of this reader
  }
  return e;
}

// Reads the "tensors" map against what the architecture expects: every role present, no other.
void parse_tensor_map(const Reader& r, const json& j, const Expected& e, ModelConfig& c) {
  const json& t = r.field(j, "tensors");
  if (!t.is_object()) r.fail(fmt::format("field 'tensors': expected an object, got {}", json_kind(t)));
  std::set<std::string> known;
  for (const auto& [role, shape] : e.plain) {
    known.insert(role);
    auto it = t.find(role);
    if (it == t.end()) r.fail(fmt::format("field 'tensors': role '{}' is missing (expected the name of a {} tensor)", role, to_string(shape)));
    if (!it->is_string()) r.fail(fmt::format("field 'tensors.{}': expected a tensor name (string), got {}", role, json_kind(*it)));
    c.tensors[role] = it->get<std::string>();
  }
  for (const auto& rr : e.rnns) {
    known.insert(rr.role);
    auto it = t.find(rr.role);
    if (it == t.end()) r.fail(fmt::format("field 'tensors': RNN role '{}' is missing", rr.role));
    if (!it->is_object()) {
      r.fail(fmt::format("field 'tensors.{}': expected an object {{torch parameter name: tensor name}}, got {}",
                         rr.role, json_kind(*it)));
    }
    auto& m = c.rnn_tensors[rr.role];
    for (const auto& [param, shape] : rr.params) {
      auto p = it->find(param);
      if (p == it->end()) r.fail(fmt::format("field 'tensors.{}': parameter '{}' is missing", rr.role, param));
      if (!p->is_string()) r.fail(fmt::format("field 'tensors.{}.{}': expected a tensor name (string), got {}", rr.role, param, json_kind(*p)));
      m[param] = p->get<std::string>();
    }
    for (const auto& [param, value] : it->items()) {
      if (!rr.params.count(param)) {
        std::vector<std::string> names;
        for (const auto& [n, s] : rr.params) names.push_back(n);
        r.fail(fmt::format("field 'tensors.{}': unexpected parameter {} (this {} RNN has {})", rr.role,
                           quote(param), to_string(c.cell), fmt::join(names, ", ")));
      }
    }
  }
  for (const auto& [role, value] : t.items()) {
    if (!known.count(role)) {
      r.fail(fmt::format("field 'tensors': unexpected role {} for {} with this configuration (expected {})",
                         quote(role), to_string(c.architecture), fmt::join(known, ", ")));
    }
  }
  // One tensor per role: a name used twice would silently tie two weights together.
  std::map<std::string, std::string> owner;
  auto claim = [&](const std::string& name, const std::string& role) {
    auto [it, fresh] = owner.emplace(name, role);
    if (!fresh) r.fail(fmt::format("field 'tensors': tensor {} is named by both '{}' and '{}'", quote(name), it->second, role));
  };
  for (const auto& [role, name] : c.tensors) claim(name, role);
  for (const auto& [role, m] : c.rnn_tensors)
    for (const auto& [param, name] : m) claim(name, role + "." + param);
}

// model.json: a regular file only (never a FIFO or a device), read with a hard byte limit
// whatever its size says (SECURITY.md).
std::string read_text(const std::string& path) {
  return io_detail::InputFile::open(path, "model config").read_all(model_limits::max_config_bytes, "model config");
}

// Every parser failure (syntax, numbers beyond a double such as -1e400, invalid UTF-8,
// duplicate keys, nesting, size) is Error(format) naming the byte, line and column.
json parse_json(std::string_view text, const Reader& r) {
  if (text.size() > model_limits::max_config_bytes) {
    r.fail(fmt::format("{} bytes, more than the {} byte limit of a model config (see SECURITY.md)", text.size(),
                       model_limits::max_config_bytes));
  }
  json j;
  const io_detail::JsonLimits limits{.max_depth = kMaxJsonDepth, .max_values = model_limits::max_config_values,
                                     .top_key = "field", .entry = "field"};
  if (std::string e = io_detail::parse_untrusted_json(text, limits, j); !e.empty()) r.fail(e);
  return j;
}

// Each special token its own id: a shared one would make, say, padding end a sentence.
void distinct_specials(const Reader& r, const SpecialTokens& s) {
  const std::pair<const char*, std::int32_t> ids[] = {{"pad", s.pad}, {"bos", s.bos}, {"eos", s.eos}, {"unk", s.unk}};
  for (std::size_t a = 0; a < 4; ++a)
    for (std::size_t b = a + 1; b < 4; ++b)
      if (ids[a].second >= 0 && ids[a].second == ids[b].second) {
        r.fail(fmt::format("field 'special_tokens': '{}' and '{}' are both id {} (each special token needs its own id)",
                           ids[a].first, ids[b].first, ids[a].second));
      }
}

// Metadata the weights file may carry must agree with model.json.
void check_metadata(const SafetensorsFile& st, std::initializer_list<std::pair<const char*, std::string>> want) {
  const auto& meta = st.metadata();
  for (const auto& [key, value] : want) {
    auto it = meta.find(key);
    if (it != meta.end() && it->second != value) {
      throw Error(ErrorCode::format, fmt::format("{}: metadata '{}' is {}, but model.json says '{}'", st.origin(), key, quote(it->second), value));
    }
  }
}

// The tensors a model loads, as f32, within model_limits::max_weight_bytes: decided from the
// header alone, before a byte of data is read or allocated (a sparse file can claim any size).
template <class Names>
void check_weight_bytes(const SafetensorsFile& st, const Names& names) {
  constexpr std::uint64_t cap = model_limits::max_weight_bytes;
  std::uint64_t total = 0;  // saturates just past the cap
  for (const auto& [name, where] : names) {
    std::uint64_t elements = 1;
    for (const std::size_t d : st.entry(name).shape) elements = d != 0 && elements > cap / d ? cap + 1 : elements * d;
    total = std::min(cap + 1, total + std::min(cap + 1, elements * sizeof(float)));
  }
  if (total > cap) {
    throw Error(ErrorCode::format, fmt::format("{}: the weights need more than the {} byte limit of a model as f32 "
                                               "(see SECURITY.md)", st.origin(), cap));
  }
}

std::vector<float> load_tensor(const SafetensorsFile& st, const std::string& name, const std::string& role, const Shape& shape) {
  const SafetensorsEntry& en = st.entry(name);
  auto bad = [&](const std::string& message) { throw Error(ErrorCode::format, fmt::format("{}: {}", st.origin(), message)); };
  if (en.dtype != StDType::F32 && en.dtype != StDType::F16 && en.dtype != StDType::BF16) {
    bad(fmt::format("tensor {} (role '{}'): dtype {}, expected F32, F16 or BF16{}", quote(name), role, to_string(en.dtype),
                    en.dtype == StDType::I8 ? " (a version-1 model's recurrent layers cannot be I8; format version 2's can)" : ""));
  }
  if (Shape(en.shape.begin(), en.shape.end()) != shape) {
    bad(fmt::format("tensor {} (role '{}'): expected shape {}, got {}", quote(name), role, to_string(shape),
                    to_string(Shape(en.shape.begin(), en.shape.end()))));
  }
  return st.to_f32(name);
}

// Int8 dense weights (docs/model-format.md): I8 "<name>" [N, K] with F32 "<name>_scale" [N],
// W = q * scale per row.
bool is_int8(const SafetensorsFile& st, const std::string& name) {
  return st.contains(name) && st.entry(name).dtype == StDType::I8;
}

// Checks an int8 tensor's header and its scale tensor's; returns the scale tensor's name.
std::string check_int8(const SafetensorsFile& st, const std::string& name, const std::string& where) {
  const std::string scale = name + kScaleSuffix;
  auto bad = [&](const std::string& message) {
    throw Error(ErrorCode::format, fmt::format("{}: int8 tensor {} ({}): {}", st.origin(), quote(name), where, message));
  };
  const Shape shape(st.entry(name).shape.begin(), st.entry(name).shape.end());
  if (shape.size() != 2) bad(fmt::format("expected [out_features, in_features], got {}", to_string(shape)));
  if (!st.contains(scale)) bad(fmt::format("its per-row scale tensor {} (F32 [{}]) is missing", quote(scale), shape[0]));
  const SafetensorsEntry& se = st.entry(scale);
  if (se.dtype != StDType::F32) bad(fmt::format("scale tensor {}: dtype {}, expected F32", quote(scale), to_string(se.dtype)));
  const Shape scale_shape(se.shape.begin(), se.shape.end());
  if (scale_shape != Shape{shape[0]}) {
    bad(fmt::format("scale tensor {}: shape {}, expected one per row of the weight {}: [{}]", quote(scale),
                    to_string(scale_shape), to_string(shape), shape[0]));
  }
  return scale;
}

// Reads a checked int8 tensor of the expected shape into `out`; returns it dequantized.
std::vector<float> load_int8(const SafetensorsFile& st, const std::string& name, const std::string& where, const Shape& shape,
                             ModelFile::Quantized& out) {
  const Shape got(st.entry(name).shape.begin(), st.entry(name).shape.end());
  if (got != shape) {
    throw Error(ErrorCode::format, fmt::format("{}: int8 tensor {} ({}): expected shape {}, got {}", st.origin(), quote(name),
                                               where, to_string(shape), to_string(got)));
  }
  const std::vector<std::byte> raw = st.raw(name);
  out.q.resize(raw.size());
  std::memcpy(out.q.data(), raw.data(), raw.size());
  out.scales = st.to_f32(name + kScaleSuffix);
  for (std::size_t i = 0; i < out.scales.size(); ++i) {
    if (!std::isfinite(out.scales[i]) || out.scales[i] < 0.0f) {
      throw Error(ErrorCode::format, fmt::format("{}: scale tensor {}: element {} is {}, expected finite and >= 0",
                                                 st.origin(), quote(name + kScaleSuffix), i, out.scales[i]));
    }
  }
  return dequantize_rows(out.q, out.scales, shape[1]);
}

}  // namespace

const char* to_string(Architecture a) noexcept {
  switch (a) {
    case Architecture::bahdanau_seq2seq: return "bahdanau_seq2seq";
    case Architecture::luong_seq2seq: return "luong_seq2seq";
    case Architecture::rnn_attention_classifier: return "rnn_attention_classifier";
    case Architecture::self_attention_rnn: return "self_attention_rnn";
    case Architecture::graph: return "graph";
  }
  return "?";
}

const char* to_string(ModelTask t) noexcept { return t == ModelTask::seq2seq ? "seq2seq" : "classifier"; }

struct ModelFile::Data {
  ModelConfig config;
  std::map<std::string, std::vector<float>> plain;
  std::map<std::string, Shape> shapes;
  std::map<std::string, std::map<std::string, std::vector<float>>> rnns;
  std::map<std::string, Quantized> quantized;
  graph::ModelGraphs graphs;
};

namespace {

using WeightsSource = std::function<SafetensorsFile(const std::string& weights_path)>;

// Whether a node's weight slot may be int8: a linear layer's weight, an rnn's weight matrices.
bool int8_slot(const graph::Node& n, const std::string& slot) {
  if (n.op == "linear") return slot == "weight";
  return n.op == "rnn" && slot.rfind("weight_", 0) == 0;  // weight_ih / weight_hh / weight_hr
}

// Int8 weights are for dense and recurrent layers' weight matrices: every node reading one must
// read it as such (checked before the int8 tensor's own header, so that an int8 bias is named as
// one rather than as a malformed matrix).
void check_int8_uses(const std::string& origin, const graph::ModelGraphs& graphs,
                     const std::function<bool(const std::string&)>& is_quantized) {
  for (const graph::Graph* g : {&graphs.encoder, &graphs.decoder_step, &graphs.forward}) {
    for (const graph::Node& n : g->nodes) {
      for (const auto& [slot, name] : n.weights) {
        if (is_quantized(name) && !int8_slot(n, slot)) {
          throw Error(ErrorCode::format, fmt::format("{}: int8 tensor '{}': only linear weights and rnn weight matrices may be "
                                                     "int8, but graph '{}', node '{}' (op '{}') reads it as '{}'",
                                                     origin, name, g->name, n.name, n.op, slot));
        }
      }
    }
  }
}

// Version 1: the architecture's fields, the tensor map, exactly the named tensors; then the
// equivalent graphs.
void load_v1(const Reader& r, const json& j, ModelFile::Data& data, const WeightsSource& open_weights) {
  ModelConfig& c = data.config;
  c.architecture = r.choice<Architecture>(j, "architecture",
                                          {{"bahdanau_seq2seq", Architecture::bahdanau_seq2seq},
                                           {"luong_seq2seq", Architecture::luong_seq2seq},
                                           {"rnn_attention_classifier", Architecture::rnn_attention_classifier},
                                           {"self_attention_rnn", Architecture::self_attention_rnn}});
  c.task = c.architecture == Architecture::bahdanau_seq2seq || c.architecture == Architecture::luong_seq2seq
               ? ModelTask::seq2seq
               : ModelTask::classifier;
  c.cell = r.choice<CellType>(j, "cell", {{"gru", CellType::gru}, {"lstm", CellType::lstm}});
  c.embedding_dim = r.size(j, "embedding_dim");

  const json& tok = r.field(j, "tokenizer");
  if (!tok.is_object()) r.fail(fmt::format("field 'tokenizer': expected an object, got {}", json_kind(tok)));
  c.tokenizer.type = r.choice<TokenizerType>(tok, "type", {{"char", TokenizerType::character}, {"word", TokenizerType::word}});
  c.tokenizer.lowercase = r.boolean(tok, "lowercase");
  c.tokenizer.src_append_eos = r.boolean(tok, "src_append_eos");

  const Expected expected = parse_architecture(r, j, c);
  parse_tensor_map(r, j, expected, c);
  c.weights_dtype = r.choice<std::string>(j, "weights_dtype", {{"F32", "F32"}, {"F16", "F16"}, {"BF16", "BF16"}, {"I8", "I8"}});

  const SafetensorsFile st = open_weights(c.weights_path);
  auto bad = [&](const std::string& message) -> void {
    throw Error(ErrorCode::format, fmt::format("{}: {}", st.origin(), message));
  };
  check_metadata(st, {{"format", kFormat}, {"version", "1"}, {"architecture", to_string(c.architecture)}});
  // Exactly the named tensors.
  std::map<std::string, std::string> named;  // tensor name -> role (for messages)
  for (const auto& [role, name] : c.tensors) named[name] = role;
  for (const auto& [role, m] : c.rnn_tensors)
    for (const auto& [param, name] : m) named[name] = role + "." + param;
  std::set<std::string> scales;  // of int8 tensors
  for (const auto& [name, role] : named)
    if (is_int8(st, name)) scales.insert(check_int8(st, name, fmt::format("role '{}'", role)));
  std::vector<std::string> extra;
  for (const auto& name : st.names())
    if (!named.count(name) && !scales.count(name)) extra.push_back(quote(name));
  for (const auto& [name, role] : named) {
    if (!st.contains(name)) {
      bad(fmt::format("tensor {} (role '{}') is missing{}", quote(name), role,
                      extra.empty() ? "" : fmt::format("; the file has other tensors: {}", fmt::join(extra, ", "))));
    }
  }
  if (!extra.empty()) bad(fmt::format("unexpected tensor(s) not named in model.json: {}", fmt::join(extra, ", ")));
  check_weight_bytes(st, named);

  for (const auto& [role, shape] : expected.plain) {
    const std::string& name = c.tensors.at(role);
    data.plain[role] = is_int8(st, name) ? load_int8(st, name, fmt::format("role '{}'", role), shape, data.quantized[role])
                                         : load_tensor(st, name, role, shape);
    data.shapes[role] = shape;
  }
  for (const auto& rr : expected.rnns) {
    auto& out = data.rnns[rr.role];
    for (const auto& [param, shape] : rr.params) {
      out[param] = load_tensor(st, c.rnn_tensors.at(rr.role).at(param), rr.role + "." + param, shape);
      data.shapes[rr.role + "." + param] = shape;
    }
  }
  data.graphs = graph::graphs_from_v1(c, [&](const std::string& name) -> const Shape* {
    auto it = data.shapes.find(name);
    return it == data.shapes.end() ? nullptr : &it->second;
  });
  check_int8_uses(st.origin(), data.graphs, [&](const std::string& name) { return data.quantized.count(name) != 0; });
}

// Version 2: the top-level fields and graphs; the graphs checked against the weights' shapes;
// exactly the tensors the nodes name.
void load_v2(const Reader& r, const json& j, ModelFile::Data& data, const WeightsSource& open_weights) {
  ModelConfig& c = data.config;
  graph::parse_v2(r, j, c, data.graphs);
  const SafetensorsFile st = open_weights(c.weights_path);
  check_metadata(st, {{"format", kFormat}, {"version", "2"}});
  std::map<std::string, Shape> file_shapes;
  for (const auto& name : st.names()) {
    const auto& e = st.entry(name);
    file_shapes[name] = Shape(e.shape.begin(), e.shape.end());
  }
  graph::finish_v2(r, j, c, data.graphs, [&](const std::string& name) -> const Shape* {
    auto it = file_shapes.find(name);
    return it == file_shapes.end() ? nullptr : &it->second;
  });
  // Exactly the tensors some node names (a weight may be shared: tied embeddings), and the
  // scales of the int8 ones.
  std::map<std::string, std::string> named;  // tensor -> "graph/node" (for messages)
  for (const graph::Graph* g : {&data.graphs.encoder, &data.graphs.decoder_step, &data.graphs.forward}) {
    for (const graph::Node& n : g->nodes)
      for (const auto& [slot, name] : n.weights) named.emplace(name, fmt::format("graph '{}', node '{}'", g->name, n.name));
  }
  check_int8_uses(st.origin(), data.graphs, [&](const std::string& name) { return is_int8(st, name); });
  std::set<std::string> scales;
  for (const auto& [name, where] : named)
    if (is_int8(st, name)) scales.insert(check_int8(st, name, where));
  std::vector<std::string> extra;
  for (const auto& name : st.names())
    if (!named.count(name) && !scales.count(name)) extra.push_back(quote(name));
  if (!extra.empty()) {
    throw Error(ErrorCode::format, fmt::format("{}: unexpected tensor(s) that no node of model.json names: {}", st.origin(), fmt::join(extra, ", ")));
  }
  check_weight_bytes(st, named);
  for (const auto& [name, where] : named) {
    const Shape& shape = file_shapes.at(name);
    data.plain[name] = is_int8(st, name) ? load_int8(st, name, where, shape, data.quantized[name]) : load_tensor(st, name, where, shape);
    data.shapes[name] = shape;
  }
}

// directory: "" for a model from memory, whose files are named "<origin> (model.json)" and
// "<origin> (<weights>)".
ModelFile::Data load_any(const std::string& directory, const std::string& origin, const std::string& config_path,
                         const std::string& text, const WeightsSource& open_weights) {
  ModelFile::Data data;
  ModelConfig& c = data.config;
  c.directory = directory;
  c.config_path = config_path;
  const Reader r(c.config_path);
  const json j = parse_json(text, r);
  if (!j.is_object()) r.fail(fmt::format("expected a JSON object at the top level, got {}", json_kind(j)));

  const json& format = r.field(j, "format");
  if (!format.is_string() || format.get<std::string>() != kFormat) {
    r.fail(fmt::format("field 'format': expected '{}', got {} (not a vkrnn model config)", kFormat, value_str(format)));
  }
  const json& version = r.field(j, "version");
  if (!version.is_number_unsigned() || (version.get<std::uint64_t>() != 1 && version.get<std::uint64_t>() != 2)) {
    r.fail(fmt::format("field 'version': this reader knows versions 1 and 2 only, got {}", value_str(version)));
  }
  c.version = static_cast<int>(version.get<std::uint64_t>());

  // The weights file: a name inside the model directory.
  const std::string& weights = r.string(j, "weights");
  const std::filesystem::path wp(weights);
  if (weights.empty() || wp.is_absolute() || wp.has_parent_path() || weights == "." || weights == "..") {
    r.fail(fmt::format("field 'weights': expected a file name inside the model directory, got {}", quote(weights)));
  }
  c.weights_path = directory.empty() ? fmt::format("{} ({})", origin, weights) : (std::filesystem::path(directory) / wp).string();
  if (c.version == 1) load_v1(r, j, data, open_weights);
  else load_v2(r, j, data, open_weights);
  distinct_specials(r, c.special);
  return data;
}

}  // namespace

ModelFile::ModelFile(std::shared_ptr<const Data> data) : data_(std::move(data)) {}

ModelFile ModelFile::load(const std::string& model_dir) {
  const std::string config_path = (std::filesystem::path(model_dir) / "model.json").string();
  return ModelFile(std::make_shared<Data>(load_any(model_dir, model_dir, config_path, read_text(config_path),
                                                   [](const std::string& path) { return SafetensorsFile::open(path); })));
}

ModelFile ModelFile::load_from_memory(std::string_view config_json, std::span<const std::byte> weights, const std::string& origin) {
  const std::string config_path = origin + " (model.json)";
  return ModelFile(std::make_shared<Data>(load_any({}, origin, config_path, std::string(config_json), [&](const std::string& path) {
    return SafetensorsFile::parse(std::vector<std::byte>(weights.begin(), weights.end()), path);
  })));
}

const ModelConfig& ModelFile::config() const { return data_->config; }

bool ModelFile::has(const std::string& role) const { return data_->plain.count(role) != 0; }

const std::vector<float>& ModelFile::tensor(const std::string& role) const {
  auto it = data_->plain.find(role);
  if (it == data_->plain.end()) {
    throw Error(ErrorCode::not_found, fmt::format("model '{}': no tensor role '{}' (it has {})", data_->config.directory,
                                                  role, fmt::join(roles(), ", ")));
  }
  return it->second;
}

const Shape& ModelFile::shape(const std::string& role) const {
  tensor(role);
  return data_->shapes.at(role);
}

const std::map<std::string, std::vector<float>>& ModelFile::rnn(const std::string& role) const {
  auto it = data_->rnns.find(role);
  if (it == data_->rnns.end()) {
    std::vector<std::string> names;
    for (const auto& [n, m] : data_->rnns) names.push_back(n);
    throw Error(ErrorCode::not_found, fmt::format("model '{}': no RNN role '{}' (it has {})", data_->config.directory,
                                                  role, fmt::join(names, ", ")));
  }
  return it->second;
}

const graph::ModelGraphs& ModelFile::graphs() const { return data_->graphs; }

const std::vector<float>* ModelFile::weight(const std::string& name) const {
  if (auto it = data_->plain.find(name); it != data_->plain.end()) return &it->second;
  const auto dot = name.find('.');
  if (dot == std::string::npos) return nullptr;
  auto r = data_->rnns.find(name.substr(0, dot));
  if (r == data_->rnns.end()) return nullptr;
  auto p = r->second.find(name.substr(dot + 1));
  return p == r->second.end() ? nullptr : &p->second;
}

const ModelFile::Quantized* ModelFile::quantized(const std::string& name) const {
  auto it = data_->quantized.find(name);
  return it == data_->quantized.end() ? nullptr : &it->second;
}

std::vector<std::string> ModelFile::roles() const {
  std::vector<std::string> v;
  for (const auto& [n, d] : data_->plain) v.push_back(n);
  return v;
}

}  // namespace vkrnn
