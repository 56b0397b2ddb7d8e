// model.json + model.safetensors (docs/model-format.md, version 1), validated strictly: the
// files are untrusted input, so every field, role and tensor is checked before anything is
// built from it, and every failure is a vkrnn::Error naming the file and what was expected.
#include "vkrnn/model.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "io/untrusted.hpp"
#include "vkrnn/beam_search.hpp"
#include "vkrnn/error.hpp"
#include "vkrnn/safetensors.hpp"

namespace vkrnn {

using json = nlohmann::json;

namespace {

constexpr const char* kFormat = "vkrnn-model";
constexpr int kVersion = 1;
// Far beyond any real model, small enough that products of three sizes fit in 64 bits.
constexpr std::uint64_t kMaxSize = model_limits::max_dimension;
// model.json nests a few levels (config, tensors, RNN map); deeper input is garbage or hostile.
constexpr std::size_t kMaxJsonDepth = 16;

// Untrusted strings in messages: control bytes escaped, length capped.
std::string quote(std::string_view s) { return io_detail::quote(s, 120); }

using io_detail::json_kind;

std::string value_str(const json& j) {
  if (j.is_number() || j.is_boolean() || j.is_null()) return j.dump();
  if (j.is_string()) return quote(j.get_ref<const std::string&>());
  return json_kind(j);
}

// Reads and checks model.json fields; every message starts with the file's path.
class Reader {
 public:
  explicit Reader(std::string path) : path_(std::move(path)) {}

  [[noreturn]] void fail(const std::string& message) const {
    throw Error(ErrorCode::format, fmt::format("{}: {}", path_, message));
  }

  const json& field(const json& obj, const std::string& name) const {
    auto it = obj.find(name);
    if (it == obj.end()) fail(fmt::format("missing field '{}'", name));
    return *it;
  }

  std::size_t size(const json& obj, const std::string& name, std::uint64_t min = 1,
                   std::uint64_t max = kMaxSize) const {
    const json& v = field(obj, name);
    if (!v.is_number_unsigned() || v.get<std::uint64_t>() < min || v.get<std::uint64_t>() > max) {
      fail(fmt::format("field '{}': expected an integer in [{}, {}], got {}", name, min, max, value_str(v)));
    }
    return static_cast<std::size_t>(v.get<std::uint64_t>());
  }

  bool boolean(const json& obj, const std::string& name) const {
    const json& v = field(obj, name);
    if (!v.is_boolean()) fail(fmt::format("field '{}': expected true or false, got {}", name, value_str(v)));
    return v.get<bool>();
  }

  double number(const json& obj, const std::string& name) const {
    const json& v = field(obj, name);
    if (!v.is_number() || !std::isfinite(v.get<double>())) {
      fail(fmt::format("field '{}': expected a finite number, got {}", name, value_str(v)));
    }
    return v.get<double>();
  }

  const std::string& string(const json& obj, const std::string& name) const {
    const json& v = field(obj, name);
    if (!v.is_string()) fail(fmt::format("field '{}': expected a string, got {}", name, value_str(v)));
    return v.get_ref<const std::string&>();
  }

  template <class E>
  E choice(const json& obj, const std::string& name,
           std::initializer_list<std::pair<const char*, E>> options) const {
    const std::string& s = string(obj, name);
    std::vector<std::string> names;
    for (const auto& [text, value] : options) {
      if (s == text) return value;
      names.push_back(fmt::format("'{}'", text));
    }
    fail(fmt::format("field '{}': expected one of {}, got {}", name, fmt::join(names, ", "), quote(s)));
  }

  void expect_value(const json& obj, const std::string& name, bool want) const {
    if (boolean(obj, name) != want) {
      fail(fmt::format("field '{}': must be {} for this architecture", name, want ? "true" : "false"));
    }
  }
  void expect_value(const json& obj, const std::string& name, std::size_t want) const {
    if (size(obj, name) != want) {
      fail(fmt::format("field '{}': must be {} for this architecture, got {}", name, want,
                       field(obj, name).dump()));
    }
  }

  std::vector<std::string> vocab(const json& obj, const std::string& name, std::size_t expected) const {
    const json& v = field(obj, name);
    if (!v.is_array()) fail(fmt::format("field '{}': expected a list of strings, got {}", name, json_kind(v)));
    if (v.size() != expected) {
      fail(fmt::format("field '{}': {} entries, but the model's size is {}", name, v.size(), expected));
    }
    std::vector<std::string> out;
    out.reserve(v.size());
    std::set<std::string> seen;
    for (std::size_t i = 0; i < v.size(); ++i) {
      if (!v[i].is_string()) fail(fmt::format("field '{}': entry {} is {}, expected a string", name, i, json_kind(v[i])));
      const std::string& s = v[i].get_ref<const std::string&>();
      if (!seen.insert(s).second) fail(fmt::format("field '{}': entry {} ({}) is a duplicate", name, i, quote(s)));
      out.push_back(s);
    }
    return out;
  }

  std::vector<std::string> labels(const json& obj, std::size_t expected) const {
    const json& v = field(obj, "labels");
    if (!v.is_array() || v.size() != expected) {
      fail(fmt::format("field 'labels': expected a list of {} strings, got {}", expected,
                       v.is_array() ? fmt::format("{} entries", v.size()) : std::string(json_kind(v))));
    }
    std::vector<std::string> out;
    for (std::size_t i = 0; i < v.size(); ++i) {
      if (!v[i].is_string()) fail(fmt::format("field 'labels': entry {} is {}, expected a string", i, json_kind(v[i])));
      out.push_back(v[i].get<std::string>());
    }
    return out;
  }

  // Each special token its own id: a shared one would make, say, padding end a sentence.
  void distinct_specials(const SpecialTokens& s) const {
    const std::pair<const char*, std::int32_t> ids[] = {{"pad", s.pad}, {"bos", s.bos}, {"eos", s.eos}, {"unk", s.unk}};
    for (std::size_t a = 0; a < 4; ++a)
      for (std::size_t b = a + 1; b < 4; ++b)
        if (ids[a].second >= 0 && ids[a].second == ids[b].second) {
          fail(fmt::format("field 'special_tokens': '{}' and '{}' are both id {} (each special token needs its own id)",
                           ids[a].first, ids[b].first, ids[a].second));
        }
  }

  std::int32_t special(const json& sp, const char* name, std::size_t vocab) const {
    const json& v = field(sp, name);
    if (!v.is_number_unsigned() || v.get<std::uint64_t>() >= vocab) {
      fail(fmt::format("field 'special_tokens.{}': expected an id in [0, {}), got {}", name, vocab, value_str(v)));
    }
    return static_cast<std::int32_t>(v.get<std::uint64_t>());
  }

  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

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
  r.distinct_specials(c.special);
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
  r.distinct_specials(c.special);
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

json parse_config(const Reader& r, std::string_view text) {
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

}  // namespace

const char* to_string(Architecture a) noexcept {
  switch (a) {
    case Architecture::bahdanau_seq2seq: return "bahdanau_seq2seq";
    case Architecture::luong_seq2seq: return "luong_seq2seq";
    case Architecture::rnn_attention_classifier: return "rnn_attention_classifier";
    case Architecture::self_attention_rnn: return "self_attention_rnn";
  }
  return "?";
}

struct ModelFile::Data {
  ModelConfig config;
  std::map<std::string, std::vector<float>> plain;
  std::map<std::string, Shape> shapes;
  std::map<std::string, std::map<std::string, std::vector<float>>> rnns;
};

ModelFile::ModelFile(std::shared_ptr<const Data> data) : data_(std::move(data)) {}

ModelFile ModelFile::build(const std::string& model_dir, std::string_view config_json, const SafetensorsFile* weights_file) {
  auto data = std::make_shared<Data>();
  ModelConfig& c = data->config;
  c.directory = model_dir;
  c.config_path = (std::filesystem::path(model_dir) / "model.json").string();
  const Reader r(c.config_path);
  const json j = parse_config(r, config_json);
  if (!j.is_object()) r.fail(fmt::format("expected a JSON object at the top level, got {}", json_kind(j)));

  const json& format = r.field(j, "format");
  if (!format.is_string() || format.get<std::string>() != kFormat) {
    r.fail(fmt::format("field 'format': expected '{}', got {} (not a vkrnn model config)", kFormat, value_str(format)));
  }
  const json& version = r.field(j, "version");
  if (!version.is_number_unsigned() || version.get<std::uint64_t>() != kVersion) {
    r.fail(fmt::format("field 'version': this reader knows version {} only, got {}", kVersion, value_str(version)));
  }
  c.version = kVersion;
  c.architecture = r.choice<Architecture>(j, "architecture",
                                          {{"bahdanau_seq2seq", Architecture::bahdanau_seq2seq},
                                           {"luong_seq2seq", Architecture::luong_seq2seq},
                                           {"rnn_attention_classifier", Architecture::rnn_attention_classifier},
                                           {"self_attention_rnn", Architecture::self_attention_rnn}});
  c.cell = r.choice<CellType>(j, "cell", {{"gru", CellType::gru}, {"lstm", CellType::lstm}});
  c.embedding_dim = r.size(j, "embedding_dim");

  const json& tok = r.field(j, "tokenizer");
  if (!tok.is_object()) r.fail(fmt::format("field 'tokenizer': expected an object, got {}", json_kind(tok)));
  c.tokenizer.type = r.choice<TokenizerType>(tok, "type", {{"char", TokenizerType::character}, {"word", TokenizerType::word}});
  c.tokenizer.lowercase = r.boolean(tok, "lowercase");
  c.tokenizer.src_append_eos = r.boolean(tok, "src_append_eos");

  const Expected expected = parse_architecture(r, j, c);
  parse_tensor_map(r, j, expected, c);

  // The weights file: a name inside the model directory.
  const std::string& weights = r.string(j, "weights");
  const std::filesystem::path wp(weights);
  if (weights.empty() || wp.is_absolute() || wp.has_parent_path() || weights == "." || weights == "..") {
    r.fail(fmt::format("field 'weights': expected a file name inside the model directory, got {}", quote(weights)));
  }
  c.weights_dtype = r.choice<std::string>(j, "weights_dtype", {{"F32", "F32"}, {"F16", "F16"}, {"BF16", "BF16"}});
  c.weights_path = (std::filesystem::path(model_dir) / wp).string();

  if (weights_file) c.weights_path = weights_file->origin();
  const SafetensorsFile st = weights_file ? *weights_file : SafetensorsFile::open(c.weights_path);
  auto bad = [&](const std::string& message) -> void {
    throw Error(ErrorCode::format, fmt::format("{}: {}", c.weights_path, message));
  };
  const auto& meta = st.metadata();
  for (const auto& [key, want] : {std::pair<std::string, std::string>{"format", kFormat},
                                  {"version", std::to_string(kVersion)},
                                  {"architecture", to_string(c.architecture)}}) {
    auto it = meta.find(key);
    if (it != meta.end() && it->second != want) {
      bad(fmt::format("metadata '{}' is {}, but model.json says '{}'", key, quote(it->second), want));
    }
  }
  // Exactly the named tensors.
  std::map<std::string, std::string> named;  // tensor name -> role (for messages)
  for (const auto& [role, name] : c.tensors) named[name] = role;
  for (const auto& [role, m] : c.rnn_tensors)
    for (const auto& [param, name] : m) named[name] = role + "." + param;
  std::vector<std::string> extra;
  for (const auto& name : st.names())
    if (!named.count(name)) extra.push_back(quote(name));
  for (const auto& [name, role] : named) {
    if (!st.contains(name)) {
      bad(fmt::format("tensor {} (role '{}') is missing{}", quote(name), role,
                      extra.empty() ? "" : fmt::format("; the file has other tensors: {}", fmt::join(extra, ", "))));
    }
  }
  if (!extra.empty()) bad(fmt::format("unexpected tensor(s) not named in model.json: {}", fmt::join(extra, ", ")));

  // Every tensor's dtype and shape first, and the total the weights will take as f32, before
  // anything is read: a model whose weights would not fit the limit (or this machine) is
  // refused by its header alone.
  std::uint64_t total_bytes = 0;
  auto check_tensor = [&](const std::string& name, const std::string& role, const Shape& shape) {
    const SafetensorsEntry& en = st.entry(name);
    if (en.dtype != StDType::F32 && en.dtype != StDType::F16 && en.dtype != StDType::BF16) {
      bad(fmt::format("tensor {} (role '{}'): dtype {}, expected F32, F16 or BF16", quote(name), role, to_string(en.dtype)));
    }
    if (Shape(en.shape.begin(), en.shape.end()) != shape) {
      bad(fmt::format("tensor {} (role '{}'): expected shape {}, got {}", quote(name), role, to_string(shape),
                      to_string(Shape(en.shape.begin(), en.shape.end()))));
    }
    total_bytes += std::uint64_t(en.bytes / dtype_size(en.dtype)) * sizeof(float);  // each below 2^62: checked by the reader
  };
  for (const auto& [role, shape] : expected.plain) check_tensor(c.tensors.at(role), role, shape);
  for (const auto& rr : expected.rnns)
    for (const auto& [param, shape] : rr.params) check_tensor(c.rnn_tensors.at(rr.role).at(param), rr.role + "." + param, shape);
  if (total_bytes > model_limits::max_weight_bytes) {
    bad(fmt::format("the weights take {} bytes as f32, more than the {} byte limit of a model (see SECURITY.md)",
                    total_bytes, model_limits::max_weight_bytes));
  }
  for (const auto& [role, shape] : expected.plain) {
    data->plain[role] = st.to_f32(c.tensors.at(role));
    data->shapes[role] = shape;
  }
  for (const auto& rr : expected.rnns) {
    auto& out = data->rnns[rr.role];
    for (const auto& [param, shape] : rr.params) out[param] = st.to_f32(c.rnn_tensors.at(rr.role).at(param));
  }
  return ModelFile(std::move(data));
}

ModelFile ModelFile::load(const std::string& model_dir) {
  return io_detail::only_vkrnn_errors(model_dir, [&] {
    const std::string path = (std::filesystem::path(model_dir) / "model.json").string();
    const std::string text = io_detail::InputFile::open(path, "model config")
                                 .read_all(model_limits::max_config_bytes, "model config");
    return build(model_dir, text, nullptr);
  });
}

ModelFile ModelFile::parse(std::string_view config_json, const SafetensorsFile& weights, const std::string& origin) {
  return io_detail::only_vkrnn_errors(origin, [&] { return build(origin, config_json, &weights); });
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

std::vector<std::string> ModelFile::roles() const {
  std::vector<std::string> v;
  for (const auto& [n, d] : data_->plain) v.push_back(n);
  return v;
}

}  // namespace vkrnn
