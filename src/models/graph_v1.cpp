// Version-1 models (docs/model-format.md, "Version 1") as the equivalent graphs: the same
// equations, node by node, naming the version-1 roles as weights ("ROLE.PARAM" for the
// parameters of an RNN role). What tools/export_torch.py writes for the reference modules is
// the same graphs (the node names aside).
#include <fmt/format.h>

#include "models/graph_file.hpp"
#include "vkrnn/error.hpp"

namespace vkrnn::graph {
namespace {

using json = nlohmann::json;
using Slots = std::map<std::string, std::vector<std::string>>;

struct Builder {
  Graph g;

  explicit Builder(std::string name) { g.name = std::move(name); }

  void input(const std::string& name, From from, const std::string& source = {}, const std::string& next = {},
             SymShape shape = {}) {
    Input in;
    in.name = name;
    in.from = from;
    in.source = source;
    in.next = next;
    in.shape = std::move(shape);
    g.inputs.push_back(std::move(in));
  }

  void node(const std::string& name, const std::string& op, Slots inputs, std::map<std::string, std::string> outputs,
            json options = json::object(), std::map<std::string, std::string> weights = {}) {
    Node n;
    n.name = name;
    n.op = op;
    n.inputs = std::move(inputs);
    n.outputs = std::move(outputs);
    n.options = std::move(options);
    n.weights = std::move(weights);
    g.nodes.push_back(std::move(n));
  }

  // An RNN role's parameters as the node's weights: {param: "ROLE.param"}.
  static std::map<std::string, std::string> rnn_weights(const ModelConfig& c, const std::string& role) {
    std::map<std::string, std::string> w;
    for (const auto& [param, name] : c.rnn_tensors.at(role)) w[param] = role + "." + param;
    return w;
  }
};

std::string cell_name(CellType c) { return to_string(c); }

json rnn_options(const ModelConfig& c, std::size_t hidden, std::size_t layers, bool bidirectional) {
  return {{"cell", cell_name(c.cell)}, {"hidden_size", hidden}, {"num_layers", layers}, {"bidirectional", bidirectional}};
}

void bahdanau(const ModelConfig& c, ModelGraphs& out) {
  const bool lstm = c.cell == CellType::lstm;
  const std::size_t He = c.encoder_hidden, Hd = c.decoder_hidden, Le = c.encoder_layers;
  Builder e("encoder");
  e.input("tokens", From::tokens);
  e.input("lengths", From::lengths);
  e.node("src_embedding", "embedding", {{"ids", {"tokens"}}}, {{"out", "x"}}, json::object(), {{"weight", "src_embedding"}});
  e.node("encoder", "rnn", {{"x", {"x"}}, {"lengths", {"lengths"}}}, {{"output", "memory"}, {"h_n", "h_n"}},
         rnn_options(c, He, Le, true), Builder::rnn_weights(c, "encoder"));
  e.node("key_proj", "linear", {{"x", {"memory"}}}, {{"y", "keys"}}, json::object(), {{"weight", "attention.key_weight"}});
  // s0 = tanh(W_b bwd_0 + b): the top layer's backward final state, h_n[2 Le - 1].
  e.node("backward_state", "select", {{"x", {"h_n"}}}, {{"out", "backward_state"}}, {{"index", 2 * Le - 1}});
  e.node("bridge", "linear", {{"x", {"backward_state"}}}, {{"y", "bridge"}}, json::object(),
         {{"weight", "bridge.weight"}, {"bias", "bridge.bias"}});
  e.node("bridge_tanh", "activation", {{"x", {"bridge"}}}, {{"out", "s0"}}, {{"fn", "tanh"}});
  e.node("initial_state", "reshape", {{"x", {"s0"}}}, {{"out", "initial_state"}}, {{"shape", {1, "B", Hd}}});
  e.g.outputs = {{"memory", "memory"}, {"keys", "keys"}, {"initial_state", "initial_state"}};

  Builder d("decoder_step");
  d.input("token", From::token);
  d.input("lengths", From::lengths);
  d.input("memory", From::encoder, "memory");
  d.input("keys", From::encoder, "keys");
  d.input("h", From::encoder, "initial_state", "h_new");
  if (lstm) d.input("c", From::zeros, {}, "c_new", {Dim::of(1), Dim::batch(), Dim::of(Hd)});
  // Attention from s_{t-1}; x = [emb(y_{t-1}); c_t]; s_t = RNN(x, s_{t-1}); logits = W [s_t; c_t; emb] + b.
  d.node("query", "reshape", {{"x", {"h"}}}, {{"out", "query"}}, {{"shape", {"B", Hd}}});
  d.node("attention", "attention", {{"keys", {"keys"}}, {"values", {"memory"}}, {"query", {"query"}}, {"lengths", {"lengths"}}},
         {{"context", "context"}, {"weights", "attention"}}, {{"score", "additive"}},
         {{"w", "attention.query_weight"}, {"bias", "attention.query_bias"}, {"v", "attention.v"}});
  d.node("tgt_embedding", "embedding", {{"ids", {"token"}}}, {{"out", "emb"}}, json::object(), {{"weight", "tgt_embedding"}});
  d.node("decoder_input", "concat", {{"x", {"emb", "context"}}}, {{"out", "x"}});
  Slots cell_in = {{"x", {"x"}}, {"h0", {"h"}}};
  std::map<std::string, std::string> cell_out = {{"output", "s"}, {"h_n", "h_new"}};
  if (lstm) {
    cell_in["c0"] = {"c"};
    cell_out["c_n"] = "c_new";
  }
  d.node("decoder", "rnn", cell_in, cell_out, rnn_options(c, Hd, 1, false), Builder::rnn_weights(c, "decoder"));
  d.node("output_input", "concat", {{"x", {"s", "context", "emb"}}}, {{"out", "o"}});
  d.node("output", "linear", {{"x", {"o"}}}, {{"y", "logits"}}, json::object(), {{"weight", "output.weight"}, {"bias", "output.bias"}});
  d.g.outputs = {{"logits", "logits"}, {"attention", "attention"}};
  out.encoder = std::move(e.g);
  out.decoder_step = std::move(d.g);
}

void luong(const ModelConfig& c, ModelGraphs& out) {
  const bool lstm = c.cell == CellType::lstm;
  const std::size_t H = c.hidden, L = c.layers;
  Builder e("encoder");
  e.input("tokens", From::tokens);
  e.input("lengths", From::lengths);
  e.node("src_embedding", "embedding", {{"ids", {"tokens"}}}, {{"out", "x"}}, json::object(), {{"weight", "src_embedding"}});
  std::map<std::string, std::string> enc_out = {{"output", "memory"}, {"h_n", "h_n"}};
  if (lstm) enc_out["c_n"] = "c_n";
  e.node("encoder", "rnn", {{"x", {"x"}}, {"lengths", {"lengths"}}}, enc_out, rnn_options(c, H, L, false), Builder::rnn_weights(c, "encoder"));
  e.g.outputs = {{"memory", "memory"}, {"initial_state", "h_n"}};
  if (lstm) e.g.outputs["initial_cell"] = "c_n";
  if (c.score == Score::concat) {
    e.node("key_proj", "linear", {{"x", {"memory"}}}, {{"y", "keys"}}, json::object(), {{"weight", "attention.key_weight"}});
    e.g.outputs["keys"] = "keys";
  }

  Builder d("decoder_step");
  d.input("token", From::token);
  d.input("lengths", From::lengths);
  d.input("memory", From::encoder, "memory");
  if (c.score == Score::concat) d.input("keys", From::encoder, "keys");
  d.input("h", From::encoder, "h_n", "h_new");
  if (lstm) d.input("c", From::encoder, "c_n", "c_new");
  d.input("h_tilde", From::zeros, {}, "h_tilde_new", {Dim::batch(), Dim::of(H)});
  // x = [emb(y_{t-1}); h~_{t-1}] (input feeding) or emb; h_t = RNN_L(x); attention from h_t;
  // h~_t = tanh(W_c [c_t; h_t]); logits = W_s h~_t + b_s.
  d.node("tgt_embedding", "embedding", {{"ids", {"token"}}}, {{"out", "emb"}}, json::object(), {{"weight", "tgt_embedding"}});
  std::string x = "emb";
  if (c.input_feeding) {
    d.node("input_feeding", "concat", {{"x", {"emb", "h_tilde"}}}, {{"out", "x"}});
    x = "x";
  }
  Slots cell_in = {{"x", {x}}, {"h0", {"h"}}};
  std::map<std::string, std::string> cell_out = {{"output", "top"}, {"h_n", "h_new"}};
  if (lstm) {
    cell_in["c0"] = {"c"};
    cell_out["c_n"] = "c_new";
  }
  d.node("decoder", "rnn", cell_in, cell_out, rnn_options(c, H, L, false), Builder::rnn_weights(c, "decoder"));
  json score;
  std::map<std::string, std::string> aw;
  std::string keys = "memory";
  switch (c.score) {
    case Score::dot: score = "dot"; break;
    case Score::general:
      score = "general";
      aw = {{"w", "attention.weight"}};
      break;
    default:
      score = "additive";
      aw = {{"w", "attention.query_weight"}, {"v", "attention.v"}};
      keys = "keys";
      break;
  }
  d.node("attention", "attention", {{"keys", {keys}}, {"values", {"memory"}}, {"query", {"top"}}, {"lengths", {"lengths"}}},
         {{"context", "context"}, {"weights", "attention"}}, {{"score", score}}, aw);
  d.node("combine_input", "concat", {{"x", {"context", "top"}}}, {{"out", "ct"}});
  d.node("combine", "linear", {{"x", {"ct"}}}, {{"y", "combined"}}, json::object(), {{"weight", "combine.weight"}});
  d.node("combine_tanh", "activation", {{"x", {"combined"}}}, {{"out", "h_tilde_new"}}, {{"fn", "tanh"}});
  d.node("output", "linear", {{"x", {"h_tilde_new"}}}, {{"y", "logits"}}, json::object(), {{"weight", "output.weight"}, {"bias", "output.bias"}});
  d.g.outputs = {{"logits", "logits"}, {"attention", "attention"}};
  out.encoder = std::move(e.g);
  out.decoder_step = std::move(d.g);
}

// Attention pooling over h (rnn_attention_classifier, and self_attention_rnn's "attention").
void pooling(const ModelConfig& c, Builder& f) {
  if (c.pooling_score == PoolingScore::tanh) {
    f.node("pooling", "attention_pooling", {{"x", {"h"}}, {"lengths", {"lengths"}}}, {{"pooled", "pooled"}, {"weights", "pooling"}},
           {{"score", "tanh"}}, {{"weight", "pooling.weight"}, {"bias", "pooling.bias"}, {"w", "pooling.w"}});
  } else {
    f.node("pooling", "attention_pooling", {{"x", {"h"}}, {"lengths", {"lengths"}}}, {{"pooled", "pooled"}, {"weights", "pooling"}},
           {{"score", "linear"}}, {{"w", "pooling.w"}});
  }
  f.g.outputs["pooling"] = "pooling";
}

void head(const ModelConfig& c, Builder& f) {
  f.node("classifier", "linear", {{"x", {"pooled"}}}, {{"y", "logits"}}, json::object(),
         {{"weight", "classifier.weight"}, {"bias", "classifier.bias"}});
  f.node("probs", "activation", {{"x", {"logits"}}}, {{"out", "probs"}},
         {{"fn", c.output_activation == OutputActivation::sigmoid ? "sigmoid" : "softmax"}});
  f.g.outputs["logits"] = "logits";
  f.g.outputs["probs"] = "probs";
  f.g.outputs["rnn_outputs"] = "h";
}

void classifier(const ModelConfig& c, ModelGraphs& out) {
  Builder f("forward");
  f.input("tokens", From::tokens);
  f.input("lengths", From::lengths);
  f.node("embedding", "embedding", {{"ids", {"tokens"}}}, {{"out", "x"}}, json::object(), {{"weight", "embedding"}});
  f.node("rnn", "rnn", {{"x", {"x"}}, {"lengths", {"lengths"}}}, {{"output", "h"}}, rnn_options(c, c.hidden, c.layers, c.bidirectional),
         Builder::rnn_weights(c, "rnn"));
  pooling(c, f);
  head(c, f);
  // The RNN's input with its padding zeroed (what the reference reports; only when asked for).
  f.node("rnn_inputs", "sequence_mask", {{"x", {"x"}}, {"lengths", {"lengths"}}}, {{"out", "rnn_inputs"}});
  f.g.outputs["rnn_inputs"] = "rnn_inputs";
  out.forward = std::move(f.g);
}

void self_attention(const ModelConfig& c, ModelGraphs& out) {
  Builder f("forward");
  f.input("tokens", From::tokens);
  f.input("lengths", From::lengths);
  f.node("embedding", "embedding", {{"ids", {"tokens"}}}, {{"out", "emb"}}, json::object(), {{"weight", "embedding"}});
  std::string x = "emb";
  if (c.positional_encoding) {
    f.node("positional_encoding", "positional_encoding", {{"x", {"emb"}}}, {{"out", "x"}}, {{"max_positions", c.max_positions}});
    x = "x";
  }
  std::string q = x, k = x, v = x;
  if (c.attention_projections) {
    for (const char* p : {"q", "k", "v"}) {
      f.node(fmt::format("{}_proj", p), "linear", {{"x", {x}}}, {{"y", p}}, json::object(),
             {{"weight", fmt::format("{}_proj.weight", p)}, {"bias", fmt::format("{}_proj.bias", p)}});
    }
    q = "q";
    k = "k";
    v = "v";
  }
  f.node("self_attention", "self_attention", {{"q", {q}}, {"k", {k}}, {"v", {v}}, {"lengths", {"lengths"}}},
         {{"out", "o"}, {"weights", "self_attention"}}, {{"heads", c.heads}});
  std::string attn = "o";
  if (c.attention_projections) {
    f.node("out_proj", "linear", {{"x", {"o"}}}, {{"y", "attn"}}, json::object(), {{"weight", "out_proj.weight"}, {"bias", "out_proj.bias"}});
    attn = "attn";
  }
  std::string y = attn;
  if (c.residual) {
    f.node("residual", "add", {{"a", {x}}, {"b", {attn}}}, {{"out", "y"}});
    y = "y";
  }
  // The RNN never reads padded steps; y with its padding zeroed is what the reference reports.
  f.node("rnn_inputs", "sequence_mask", {{"x", {y}}, {"lengths", {"lengths"}}}, {{"out", "rnn_inputs"}});
  f.node("rnn", "rnn", {{"x", {y}}, {"lengths", {"lengths"}}}, {{"output", "h"}, {"h_n", "h_n"}},
         rnn_options(c, c.hidden, c.layers, c.bidirectional), Builder::rnn_weights(c, "rnn"));
  if (c.pooling == Pooling::last) {
    f.node("last", "final_state", {{"h_n", {"h_n"}}}, {{"out", "pooled"}}, {{"num_layers", c.layers}, {"bidirectional", c.bidirectional}});
  } else {
    pooling(c, f);
  }
  head(c, f);
  f.g.outputs["self_attention"] = "self_attention";
  f.g.outputs["rnn_inputs"] = "rnn_inputs";
  out.forward = std::move(f.g);
}

}  // namespace

ModelGraphs graphs_from_v1(const ModelConfig& config, const WeightShapes& weights) {
  ModelGraphs out;
  switch (config.architecture) {
    case Architecture::bahdanau_seq2seq: bahdanau(config, out); break;
    case Architecture::luong_seq2seq: luong(config, out); break;
    case Architecture::rnn_attention_classifier: classifier(config, out); break;
    case Architecture::self_attention_rnn: self_attention(config, out); break;
    case Architecture::graph: throw Error(ErrorCode::format, "graphs_from_v1: not a version-1 architecture");
  }
  const std::string origin = config.config_path + " (version 1, as graphs)";
  if (config.task == ModelTask::seq2seq) {
    check(out.encoder, origin, nullptr, weights);
    check(out.decoder_step, origin, &out.encoder, weights);
  } else {
    check(out.forward, origin, nullptr, weights);
  }
  return out;
}

}  // namespace vkrnn::graph
