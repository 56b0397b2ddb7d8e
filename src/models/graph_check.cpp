// Checking a graph (docs/model-format.md, "Validation"): structure, order, shapes, views and
// weights, with every error naming the graph and the node. Each op's rules live in one infer
// function below; the runtime (graph_runtime.cpp) relies on what they establish and on the
// defaults they write into the nodes' options.
#include <algorithm>
#include <cmath>
#include <functional>
#include <optional>
#include <set>
#include <tuple>

#include <fmt/format.h>

#include "io/json_kind.hpp"
#include "models/config_reader.hpp"
#include "models/graph.hpp"
#include "vkrnn/error.hpp"
#include "vkrnn/model.hpp"

namespace vkrnn::graph {

std::string to_string(const Dim& d) {
  return d.sym == Sym::batch ? "B" : d.sym == Sym::source ? "S" : std::to_string(d.value);
}

std::string to_string(const SymShape& s) {
  std::vector<std::string> parts;
  for (const Dim& d : s) parts.push_back(to_string(d));
  return fmt::format("[{}]", fmt::join(parts, ", "));
}

Shape eval(const SymShape& s, std::size_t B, std::size_t S) {
  Shape out;
  for (const Dim& d : s) out.push_back(d.eval(B, S));
  return out;
}

const char* to_string(From f) {
  switch (f) {
    case From::tokens: return "tokens";
    case From::lengths: return "lengths";
    case From::token: return "token";
    case From::encoder: return "encoder";
    case From::zeros: return "zeros";
  }
  return "?";
}

int Graph::input_index(const std::string& name) const {
  for (std::size_t i = 0; i < inputs.size(); ++i)
    if (inputs[i].name == name) return static_cast<int>(i);
  return -1;
}

namespace {

using io_detail::json_kind;

// Far beyond any real model; keeps products of sizes inside 64 bits.
constexpr std::uint64_t kMaxSize = model_limits::max_dimension;

struct SlotSpec {
  const char* name;
  bool required;
};

class Infer;
using InferFn = void (*)(Infer&);

struct OpSpec {
  std::vector<SlotSpec> inputs, outputs;
  std::vector<const char*> options;
  InferFn infer;
  bool list_input = false;  // concat: its one input slot takes a list
};

bool has_slot(const std::vector<SlotSpec>& slots, std::string_view name) {
  return std::any_of(slots.begin(), slots.end(), [name](const SlotSpec& s) { return name == s.name; });
}

// One node being checked: its inputs' tensors, options and weights, and what it declares.
class Infer {
 public:
  Infer(Graph& g, Node& n, const std::string& origin, const WeightShapes& weights)
      : g_(g), n_(n), origin_(origin), weights_(weights) {}

  [[noreturn]] void fail(const std::string& message) const {
    throw Error(ErrorCode::format,
                fmt::format("{}: graph '{}', node '{}' ({}): {}", origin_, g_.name, n_.name, n_.op, message));
  }

  const Node& node() const { return n_; }

  // --- inputs -------------------------------------------------------------------------
  bool has(const char* slot) const { return n_.inputs.count(slot) != 0; }
  const TensorInfo& in(const char* slot) const {
    auto it = n_.inputs.find(slot);
    if (it == n_.inputs.end()) fail(fmt::format("input '{}' is missing", slot));
    return g_.tensor(it->second.at(0));
  }
  const TensorInfo* opt(const char* slot) const { return has(slot) ? &in(slot) : nullptr; }
  std::vector<const TensorInfo*> list(const char* slot) const {
    std::vector<const TensorInfo*> out;
    for (const auto& name : n_.inputs.at(slot)) out.push_back(&g_.tensor(name));
    return out;
  }

  // An input of dtype `dtype` and rank in [lo, hi].
  const TensorInfo& tensor(const char* slot, DType dtype, std::size_t lo, std::size_t hi) const {
    const TensorInfo& t = in(slot);
    check_tensor(t, slot, dtype, lo, hi);
    return t;
  }
  void check_tensor(const TensorInfo& t, const std::string& slot, DType dtype, std::size_t lo, std::size_t hi) const {
    if (t.dtype != dtype) {
      fail(fmt::format("input '{}' ('{}'): expected {}, got {} {}", slot, t.name, vkrnn::to_string(dtype),
                       vkrnn::to_string(t.dtype), to_string(t.shape)));
    }
    if (t.shape.size() < lo || t.shape.size() > hi) {
      const std::string want = lo == hi ? fmt::format("rank {}", lo) : fmt::format("rank {} to {}", lo, hi);
      fail(fmt::format("input '{}' ('{}'): expected {}, got {}", slot, t.name, want, to_string(t.shape)));
    }
  }
  // `what` must have dimension `axis` equal to `want`.
  void same(const TensorInfo& t, const char* slot, std::size_t axis, const Dim& want, const char* meaning) const {
    if (t.shape.at(axis) != want) {
      fail(fmt::format("input '{}' ('{}' {}): dimension {} ({}) is {}, expected {}", slot, t.name, to_string(t.shape),
                       axis, meaning, to_string(t.shape[axis]), to_string(want)));
    }
  }
  void fixed(const TensorInfo& t, const char* slot, std::size_t axis) const {
    if (!t.shape.at(axis).fixed()) {
      fail(fmt::format("input '{}' ('{}' {}): dimension {} must be a fixed size, not {}", slot, t.name,
                       to_string(t.shape), axis, to_string(t.shape[axis])));
    }
  }
  // An optional i32 [B] lengths input.
  void lengths(const char* slot, const Dim& batch) const {
    if (!has(slot)) return;
    const TensorInfo& t = tensor(slot, DType::i32, 1, 1);
    same(t, slot, 0, batch, "batch");
  }

  // --- options ------------------------------------------------------------------------
  const nlohmann::json* option(const char* name) const {
    auto it = n_.options.find(name);
    return it == n_.options.end() ? nullptr : &*it;
  }
  std::size_t size(const char* name, std::optional<std::size_t> fallback = {}, std::uint64_t min = 1) {
    const nlohmann::json* v = option(name);
    if (!v) {
      if (!fallback) fail(fmt::format("option '{}' is missing", name));
      n_.options[name] = *fallback;
      return *fallback;
    }
    if (!v->is_number_integer() || v->get<std::int64_t>() < 0 || v->get<std::uint64_t>() < min || v->get<std::uint64_t>() > kMaxSize) {
      fail(fmt::format("option '{}': expected an integer in [{}, {}], got {}", name, min, kMaxSize, v->dump()));
    }
    return static_cast<std::size_t>(v->get<std::uint64_t>());
  }
  std::int64_t integer(const char* name, std::optional<std::int64_t> fallback = {}) {
    const nlohmann::json* v = option(name);
    if (!v) {
      if (!fallback) fail(fmt::format("option '{}' is missing", name));
      n_.options[name] = *fallback;
      return *fallback;
    }
    if (!v->is_number_integer() || std::llabs(v->get<std::int64_t>()) > static_cast<std::int64_t>(kMaxSize)) {
      fail(fmt::format("option '{}': expected an integer, got {}", name, v->dump()));
    }
    return v->get<std::int64_t>();
  }
  bool flag(const char* name, bool fallback) {
    const nlohmann::json* v = option(name);
    if (!v) {
      n_.options[name] = fallback;
      return fallback;
    }
    if (!v->is_boolean()) fail(fmt::format("option '{}': expected true or false, got {}", name, v->dump()));
    return v->get<bool>();
  }
  std::string choice(const char* name, std::initializer_list<const char*> allowed, const char* fallback = nullptr) {
    const nlohmann::json* v = option(name);
    if (!v) {
      if (!fallback) fail(fmt::format("option '{}' is missing (one of '{}')", name, fmt::join(allowed, "', '")));
      n_.options[name] = fallback;
      return fallback;
    }
    if (v->is_string()) {
      for (const char* a : allowed)
        if (v->get<std::string>() == a) return a;
    }
    fail(fmt::format("option '{}': expected one of '{}', got {}", name, fmt::join(allowed, "', '"), v->dump()));
  }

  // --- weights ------------------------------------------------------------------------
  // The file's shape of weight slot `slot` (required unless `optional`); nullptr when absent.
  const Shape* weight(const char* slot, bool optional = false) {
    auto it = n_.weights.find(slot);
    if (it == n_.weights.end()) {
      if (!optional) fail(fmt::format("weight '{}' is missing", slot));
      return nullptr;
    }
    declared_.insert(slot);
    const Shape* s = weights_(it->second);
    if (!s) fail(fmt::format("weight '{}': tensor '{}' is not in the weights file", slot, it->second));
    return s;
  }
  // A weight that must have exactly `want`.
  const Shape* weight(const char* slot, const Shape& want, bool optional = false) {
    const Shape* s = weight(slot, optional);
    if (s) expect_weight(slot, *s, want);
    return s;
  }
  void expect_weight(const std::string& slot, const Shape& got, const Shape& want) {
    if (got != want) {
      fail(fmt::format("weight '{}' (tensor '{}'): expected shape {}, got {}", slot, n_.weights.at(slot),
                       vkrnn::to_string(want), vkrnn::to_string(got)));
    }
    n_.weight_shapes[slot] = want;
  }
  void weight_slot(const std::string& slot) { declared_.insert(slot); }
  // Every named weight must be one the op used.
  void no_other_weights() const {
    for (const auto& [slot, name] : n_.weights) {
      if (!declared_.count(slot)) {
        fail(fmt::format("unexpected weight '{}' (this {} takes {})", slot, n_.op,
                         declared_.empty() ? std::string("none") : fmt::format("'{}'", fmt::join(declared_, "', '"))));
      }
    }
  }

  // --- outputs ------------------------------------------------------------------------
  bool wants(const char* slot) const { return n_.outputs.count(slot) != 0; }
  void out(const char* slot, DType dtype, SymShape shape, bool view = false, bool strided = false) {
    auto it = n_.outputs.find(slot);
    if (it == n_.outputs.end()) return;  // an optional output nobody named
    for (const Dim& d : shape) {
      if (d.fixed() && (d.value == 0 || d.value > kMaxSize)) fail(fmt::format("output '{}': dimension {} out of range", slot, d.value));
    }
    TensorInfo& t = g_.tensors.at(static_cast<std::size_t>(g_.index.at(it->second)));
    t.dtype = dtype;
    t.shape = std::move(shape);
    t.view = view;
    strided_[it->second] = strided;
  }
  // Whether a tensor may be a strided view (rows not contiguous): slices of the last axis.
  bool strided(const TensorInfo& t) const {
    auto it = strided_.find(t.name);
    return it != strided_.end() && it->second;
  }

  std::map<std::string, bool>& strided_map() { return strided_; }

 private:
  Graph& g_;
  Node& n_;
  const std::string& origin_;
  const WeightShapes& weights_;
  std::set<std::string> declared_;
  std::map<std::string, bool> strided_;
};

// --- the ops ---------------------------------------------------------------------------

void infer_embedding(Infer& c) {
  const TensorInfo& ids = c.tensor("ids", DType::i32, 1, 4);
  const Shape* w = c.weight("weight");
  if (w->size() != 2) c.fail(fmt::format("weight 'weight': expected [vocab, dim], got {}", vkrnn::to_string(*w)));
  c.expect_weight("weight", *w, *w);
  SymShape s = ids.shape;
  s.push_back(Dim::of((*w)[1]));
  c.out("out", DType::f32, s);
}

void infer_linear(Infer& c) {
  const TensorInfo& x = c.tensor("x", DType::f32, 1, 4);
  c.fixed(x, "x", x.shape.size() - 1);
  const std::size_t K = x.shape.back().value;
  const Shape* w = c.weight("weight");
  if (w->size() != 2 || (*w)[1] != K) {
    c.fail(fmt::format("weight 'weight' (tensor '{}'): expected [out_features, {}] for input '{}' {}, got {}",
                       c.node().weights.at("weight"), K, x.name, to_string(x.shape), vkrnn::to_string(*w)));
  }
  c.expect_weight("weight", *w, *w);
  const std::size_t N = (*w)[0];
  c.weight("bias", Shape{N}, true);
  SymShape s = x.shape;
  s.back() = Dim::of(N);
  c.out("y", DType::f32, s);
}

void infer_rnn(Infer& c) {
  const std::string cell = c.choice("cell", {"gru", "lstm", "rnn_tanh", "rnn_relu"});
  const std::size_t H = c.size("hidden_size");
  const std::size_t L = c.size("num_layers", 1);
  const bool bidi = c.flag("bidirectional", false);
  const bool bias = c.flag("bias", true);
  const std::size_t P = c.size("proj_size", 0, 0);
  const bool lstm = cell == "lstm";
  if (P && !lstm) c.fail("option 'proj_size': only an LSTM has a projection");
  if (P && P >= H) c.fail(fmt::format("option 'proj_size': {} must be smaller than hidden_size {}", P, H));
  const std::size_t D = bidi ? 2 : 1, HO = P ? P : H;
  const std::size_t G = cell == "gru" ? 3 : lstm ? 4 : 1;
  const TensorInfo& x = c.tensor("x", DType::f32, 2, 3);
  const bool step = x.shape.size() == 2;
  c.fixed(x, "x", x.shape.size() - 1);
  const std::size_t I = x.shape.back().value;
  const Dim B = x.shape[0];
  if (step && bidi) c.fail("a bidirectional rnn cannot run one step at a time (input 'x' is [B, I]: step mode)");
  if (step && c.has("lengths")) c.fail("input 'lengths': step mode (input 'x' [B, I]) takes no lengths");
  c.lengths("lengths", B);
  const SymShape state = {Dim::of(L * D), B, Dim::of(HO)};
  if (const TensorInfo* h0 = c.opt("h0")) {
    c.check_tensor(*h0, "h0", DType::f32, 3, 3);
    if (h0->shape != state) c.fail(fmt::format("input 'h0' ('{}'): expected {}, got {}", h0->name, to_string(state), to_string(h0->shape)));
  }
  const SymShape cstate = {Dim::of(L * D), B, Dim::of(H)};
  if (const TensorInfo* c0 = c.opt("c0")) {
    if (!lstm) c.fail("input 'c0': only an LSTM has a cell state");
    c.check_tensor(*c0, "c0", DType::f32, 3, 3);
    if (c0->shape != cstate) c.fail(fmt::format("input 'c0' ('{}'): expected {}, got {}", c0->name, to_string(cstate), to_string(c0->shape)));
  }
  if (!lstm && c.wants("c_n")) c.fail("output 'c_n': only an LSTM has a cell state");
  for (std::size_t k = 0; k < L; ++k) {
    const std::size_t in = k == 0 ? I : D * HO;
    for (std::size_t d = 0; d < D; ++d) {
      const std::string sfx = std::to_string(k) + (d ? "_reverse" : "");
      auto need = [&](const std::string& slot, const Shape& shape) {
        auto it = c.node().weights.find(slot);
        if (it == c.node().weights.end()) {
          c.fail(fmt::format("weight '{}' is missing (a {} with {} layer(s){}{} has {})", slot, cell, L,
                             bidi ? ", bidirectional" : "", bias ? "" : ", no bias", vkrnn::to_string(shape)));
        }
        c.weight_slot(slot);
        c.expect_weight(slot, *c.weight(slot.c_str()), shape);
      };
      need("weight_ih_l" + sfx, {G * H, in});
      need("weight_hh_l" + sfx, {G * H, HO});
      if (bias) {
        need("bias_ih_l" + sfx, {G * H});
        need("bias_hh_l" + sfx, {G * H});
      }
      if (P) need("weight_hr_l" + sfx, {P, H});
    }
  }
  if (step) {
    c.out("output", DType::f32, {B, Dim::of(HO)}, true);
  } else {
    c.out("output", DType::f32, {B, x.shape[1], Dim::of(D * HO)});
  }
  c.out("h_n", DType::f32, state);
  c.out("c_n", DType::f32, cstate);
  if (step && c.wants("output") && !c.wants("h_n")) {
    // The step's output is a view of h_n: h_n needs a name to live somewhere.
    c.fail("step mode: output 'output' is a view of 'h_n', which needs a name too");
  }
}

// Score options and weights shared by attention and attention_scores; returns the heads.
std::size_t infer_score(Infer& c, const TensorInfo& keys, const TensorInfo& query) {
  const std::string score = c.choice("score", {"dot", "general", "additive", "concat", "scaled_dot"});
  const std::size_t heads = c.size("heads", 1);
  const std::size_t Kd = keys.shape[2].value, Q = query.shape[1].value;
  if (heads > 1 && score != "scaled_dot") c.fail("option 'heads': only the scaled_dot score has heads");
  if (score == "dot" || score == "scaled_dot") {
    if (Q != Kd) c.fail(fmt::format("input 'query' ('{}'): a {} score needs the query width ({}) to equal the key width ({})", query.name, score, Q, Kd));
    if (Kd % heads) c.fail(fmt::format("option 'heads': {} does not divide the key width {}", heads, Kd));
  } else if (score == "general") {
    c.weight("w", Shape{Kd, Q});
  } else {
    c.weight("w", Shape{Kd, Q});
    c.weight("bias", Shape{Kd}, true);
    c.weight("v", Shape{Kd});
    if (const Shape* vb = c.weight("v_bias", true)) {
      if (element_count(*vb) != 1) c.fail(fmt::format("weight 'v_bias': expected one value ([1] or []), got {}", vkrnn::to_string(*vb)));
      c.expect_weight("v_bias", *vb, *vb);
    }
  }
  return heads;
}

void infer_attention_common(Infer& c, bool fused) {
  const TensorInfo& keys = c.tensor("keys", DType::f32, 3, 3);
  const TensorInfo& query = c.tensor("query", DType::f32, 2, 2);
  c.fixed(keys, "keys", 2);
  c.fixed(query, "query", 1);
  const Dim B = keys.shape[0], S = keys.shape[1];
  c.same(query, "query", 0, B, "batch");
  c.lengths("lengths", B);
  const std::size_t heads = infer_score(c, keys, query);
  SymShape w = heads > 1 ? SymShape{B, Dim::of(heads), S} : SymShape{B, S};
  if (fused) {
    const TensorInfo& values = c.tensor("values", DType::f32, 3, 3);
    c.fixed(values, "values", 2);
    c.same(values, "values", 0, B, "batch");
    c.same(values, "values", 1, S, "source");
    const std::size_t Hv = values.shape[2].value;
    if (Hv % heads) c.fail(fmt::format("option 'heads': {} does not divide the value width {}", heads, Hv));
    c.out("context", DType::f32, {B, Dim::of(Hv)});
    c.out("weights", DType::f32, w);
  } else {
    c.out("scores", DType::f32, w);
  }
}
void infer_attention(Infer& c) { infer_attention_common(c, true); }
void infer_attention_scores(Infer& c) { infer_attention_common(c, false); }

void infer_masked_softmax(Infer& c) {
  const TensorInfo& s = c.tensor("scores", DType::f32, 2, 3);
  c.lengths("lengths", s.shape[0]);
  c.out("weights", DType::f32, s.shape);
}

void infer_attention_context(Infer& c) {
  const TensorInfo& w = c.tensor("weights", DType::f32, 2, 3);
  const TensorInfo& v = c.tensor("values", DType::f32, 3, 3);
  c.fixed(v, "values", 2);
  c.same(v, "values", 0, w.shape[0], "batch");
  c.same(v, "values", 1, w.shape.back(), "source");
  if (w.shape.size() == 3) {
    c.fixed(w, "weights", 1);
    if (v.shape[2].value % w.shape[1].value) c.fail(fmt::format("input 'values': width {} is not a multiple of the {} heads", v.shape[2].value, w.shape[1].value));
  }
  c.lengths("lengths", w.shape[0]);
  c.out("context", DType::f32, {w.shape[0], v.shape[2]});
}

void infer_self_attention(Infer& c) {
  const TensorInfo& q = c.tensor("q", DType::f32, 3, 3);
  c.fixed(q, "q", 2);
  for (const char* slot : {"k", "v"}) {
    const TensorInfo& t = c.tensor(slot, DType::f32, 3, 3);
    if (t.shape != q.shape) c.fail(fmt::format("input '{}' ('{}'): expected {} like 'q', got {}", slot, t.name, to_string(q.shape), to_string(t.shape)));
  }
  const std::size_t heads = c.size("heads", 1);
  c.flag("causal", false);
  if (q.shape[2].value % heads) c.fail(fmt::format("option 'heads': {} does not divide the width {}", heads, q.shape[2].value));
  c.lengths("lengths", q.shape[0]);
  c.out("out", DType::f32, q.shape);
  c.out("weights", DType::f32, {q.shape[0], Dim::of(heads), q.shape[1], q.shape[1]});
}

void infer_positional_encoding(Infer& c) {
  const TensorInfo& x = c.tensor("x", DType::f32, 2, 3);
  c.fixed(x, "x", x.shape.size() - 1);
  if (c.option("max_positions")) {
    const std::size_t m = c.size("max_positions");
    const Dim& T = x.shape[x.shape.size() - 2];
    if (T.fixed() && T.value > m) c.fail(fmt::format("input 'x' has {} positions, more than max_positions {}", T.value, m));
  }
  c.out("out", DType::f32, x.shape);
}

void infer_add(Infer& c) {
  const TensorInfo& a = c.tensor("a", DType::f32, 1, 4);
  const TensorInfo& b = c.tensor("b", DType::f32, 1, 4);
  if (a.shape != b.shape) c.fail(fmt::format("inputs 'a' {} and 'b' {} differ in shape", to_string(a.shape), to_string(b.shape)));
  c.out("out", DType::f32, a.shape);
}

void infer_activation(Infer& c) {
  const TensorInfo& x = c.tensor("x", DType::f32, 1, 4);
  const std::string fn = c.choice("fn", {"tanh", "sigmoid", "relu", "softmax"});
  if (fn == "softmax") c.fixed(x, "x", x.shape.size() - 1);
  c.out("out", DType::f32, x.shape);
}

void infer_sequence_mask(Infer& c) {
  const TensorInfo& x = c.tensor("x", DType::f32, 2, 4);
  const TensorInfo& len = c.tensor("lengths", DType::i32, 1, 1);
  c.same(len, "lengths", 0, x.shape[0], "batch");
  c.out("out", DType::f32, x.shape);
}

void infer_concat(Infer& c) {
  const auto xs = c.list("x");
  if (xs.empty()) c.fail("input 'x': an empty list");
  const std::int64_t axis = c.integer("axis", -1);
  const std::size_t rank = xs[0]->shape.size();
  const bool last = axis == -1 || axis == static_cast<std::int64_t>(rank) - 1;
  if (!last && axis != 0) c.fail(fmt::format("option 'axis': the last axis (-1) or the first (0), got {}", axis));
  if (!last && rank < 2) c.fail("option 'axis': 0 needs inputs of rank 2 or more");
  const std::size_t a = last ? rank - 1 : 0;
  std::size_t total = 0;
  for (std::size_t i = 0; i < xs.size(); ++i) {
    const TensorInfo& t = *xs[i];
    const std::string slot = fmt::format("x[{}]", i);
    c.check_tensor(t, slot, DType::f32, 1, 4);
    bool same = t.shape.size() == rank;
    for (std::size_t d = 0; same && d < rank; ++d) same = d == a || t.shape[d] == xs[0]->shape[d];
    if (!same) {
      c.fail(fmt::format("input {} ('{}' {}): its dimensions other than axis {} differ from x[0] ('{}' {})", slot, t.name,
                         to_string(t.shape), a, xs[0]->name, to_string(xs[0]->shape)));
    }
    if (!t.shape[a].fixed()) c.fail(fmt::format("input {} ('{}'): the concatenated dimension must be a fixed size", slot, t.name));
    total += t.shape[a].value;
  }
  SymShape s = xs[0]->shape;
  s[a] = Dim::of(total);
  c.out("out", DType::f32, s);
}

std::size_t axis_of(Infer& c, const TensorInfo& x, bool allow_last) {
  const std::int64_t a = c.integer("axis", 0);
  const auto r = static_cast<std::int64_t>(x.shape.size());
  if (a == 0) return 0;
  if (allow_last && (a == -1 || a == r - 1)) return x.shape.size() - 1;
  c.fail(fmt::format("option 'axis': {} is not supported (axis 0{})", a, allow_last ? " or the last, -1" : ""));
}

void infer_slice(Infer& c) {
  const TensorInfo& x = c.in("x");
  if (x.shape.empty()) c.fail("input 'x' is a scalar");
  const std::size_t axis = axis_of(c, x, true);
  c.fixed(x, "x", axis);
  const std::size_t n = x.shape[axis].value;
  const std::int64_t start = c.integer("start");
  const std::size_t length = c.size("length");
  if (start < 0 || static_cast<std::size_t>(start) + length > n) {
    c.fail(fmt::format("slice [{}, {}) of axis {} is out of bounds for input '{}' {}", start, start + static_cast<std::int64_t>(length),
                       axis, x.name, to_string(x.shape)));
  }
  SymShape s = x.shape;
  s[axis] = Dim::of(length);
  const bool strided = c.strided(x) || (axis == x.shape.size() - 1 && length < n);
  c.out("out", x.dtype, s, true, strided);
}

void infer_select(Infer& c) {
  const TensorInfo& x = c.in("x");
  if (x.shape.size() < 2) c.fail(fmt::format("input 'x' ('{}' {}): select needs rank 2 or more", x.name, to_string(x.shape)));
  axis_of(c, x, false);
  c.fixed(x, "x", 0);
  const auto n = static_cast<std::int64_t>(x.shape[0].value);
  const std::int64_t index = c.integer("index");
  if (index < -n || index >= n) c.fail(fmt::format("index {} is out of bounds for axis 0 of input '{}' {}", index, x.name, to_string(x.shape)));
  c.out("out", x.dtype, SymShape(x.shape.begin() + 1, x.shape.end()), true, c.strided(x));
}

void infer_reshape(Infer& c) {
  const TensorInfo& x = c.in("x");
  const nlohmann::json* js = c.option("shape");
  if (!js || !js->is_array() || js->empty() || js->size() > 6) c.fail("option 'shape': expected a list of 1 to 6 sizes (integers, \"B\", \"S\")");
  SymShape s;
  for (const auto& d : *js) {
    if (d.is_string() && d.get<std::string>() == "B") s.push_back(Dim::batch());
    else if (d.is_string() && d.get<std::string>() == "S") s.push_back(Dim::source());
    else if (d.is_number_integer() && d.get<std::int64_t>() >= 1 && d.get<std::uint64_t>() <= kMaxSize) s.push_back(Dim::of(d.get<std::size_t>()));
    else c.fail(fmt::format("option 'shape': {} is not a size (an integer >= 1, \"B\" or \"S\")", d.dump()));
  }
  // Same element count: the same fixed product and the same number of B and S factors.
  auto signature = [](const SymShape& sh) {
    std::size_t fixed = 1, b = 0, src = 0;
    for (const Dim& d : sh) {
      if (d.sym == Sym::batch) ++b;
      else if (d.sym == Sym::source) ++src;
      else fixed *= d.value;
    }
    return std::tuple(fixed, b, src);
  };
  if (signature(s) != signature(x.shape)) {
    c.fail(fmt::format("cannot reshape input '{}' {} to {}: the element counts differ", x.name, to_string(x.shape), to_string(s)));
  }
  if (c.strided(x) && s.back() != x.shape.back()) {
    c.fail(fmt::format("input '{}' {} is a strided view (a slice of its last axis): a reshape may only change its leading dimensions",
                       x.name, to_string(x.shape)));
  }
  c.out("out", x.dtype, s, true, c.strided(x));
}

void infer_attention_pooling(Infer& c) {
  const TensorInfo& x = c.tensor("x", DType::f32, 3, 3);
  c.fixed(x, "x", 2);
  const std::size_t F = x.shape[2].value;
  const std::string score = c.choice("score", {"tanh", "linear"});
  c.lengths("lengths", x.shape[0]);
  if (score == "tanh") {
    const Shape* w = c.weight("weight");
    if (w->size() != 2 || (*w)[1] != F) c.fail(fmt::format("weight 'weight': expected [attention_dim, {}], got {}", F, vkrnn::to_string(*w)));
    c.expect_weight("weight", *w, *w);
    const std::size_t A = (*w)[0];
    c.weight("bias", Shape{A}, true);
    c.weight("w", Shape{A});
  } else {
    c.weight("w", Shape{F});
  }
  c.out("pooled", DType::f32, {x.shape[0], Dim::of(F)});
  c.out("weights", DType::f32, {x.shape[0], x.shape[1]});
}

void infer_final_state(Infer& c) {
  const TensorInfo& h = c.tensor("h_n", DType::f32, 3, 3);
  const std::size_t L = c.size("num_layers");
  const bool bidi = c.flag("bidirectional", false);
  const std::size_t D = bidi ? 2 : 1;
  c.same(h, "h_n", 0, Dim::of(L * D), "layers x directions");
  c.fixed(h, "h_n", 2);
  c.out("out", DType::f32, {h.shape[1], Dim::of(D * h.shape[2].value)}, D == 1);
}

const std::map<std::string, OpSpec>& ops() {
  static const std::map<std::string, OpSpec> table = {
      {"embedding", {{{"ids", true}}, {{"out", true}}, {}, infer_embedding}},
      {"linear", {{{"x", true}}, {{"y", true}}, {}, infer_linear}},
      {"rnn",
       {{{"x", true}, {"h0", false}, {"c0", false}, {"lengths", false}},
        {{"output", false}, {"h_n", false}, {"c_n", false}},
        {"cell", "hidden_size", "num_layers", "bidirectional", "bias", "proj_size"},
        infer_rnn}},
      {"attention",
       {{{"keys", true}, {"values", true}, {"query", true}, {"lengths", false}},
        {{"context", true}, {"weights", false}},
        {"score", "heads"},
        infer_attention}},
      {"attention_scores",
       {{{"keys", true}, {"query", true}, {"lengths", false}}, {{"scores", true}}, {"score", "heads"}, infer_attention_scores}},
      {"masked_softmax", {{{"scores", true}, {"lengths", false}}, {{"weights", true}}, {}, infer_masked_softmax}},
      {"attention_context",
       {{{"weights", true}, {"values", true}, {"lengths", false}}, {{"context", true}}, {}, infer_attention_context}},
      {"self_attention",
       {{{"q", true}, {"k", true}, {"v", true}, {"lengths", false}},
        {{"out", true}, {"weights", false}},
        {"heads", "causal"},
        infer_self_attention}},
      {"positional_encoding", {{{"x", true}}, {{"out", true}}, {"max_positions"}, infer_positional_encoding}},
      {"add", {{{"a", true}, {"b", true}}, {{"out", true}}, {}, infer_add}},
      {"activation", {{{"x", true}}, {{"out", true}}, {"fn"}, infer_activation}},
      {"sequence_mask", {{{"x", true}, {"lengths", true}}, {{"out", true}}, {}, infer_sequence_mask}},
      {"concat", {{{"x", true}}, {{"out", true}}, {"axis"}, infer_concat, true}},
      {"slice", {{{"x", true}}, {{"out", true}}, {"axis", "start", "length"}, infer_slice}},
      {"select", {{{"x", true}}, {{"out", true}}, {"axis", "index"}, infer_select}},
      {"reshape", {{{"x", true}}, {{"out", true}}, {"shape"}, infer_reshape}},
      {"attention_pooling",
       {{{"x", true}, {"lengths", false}}, {{"pooled", true}, {"weights", false}}, {"score"}, infer_attention_pooling}},
      {"final_state", {{{"h_n", true}}, {{"out", true}}, {"num_layers", "bidirectional"}, infer_final_state}},
  };
  return table;
}

[[noreturn]] void fail(const std::string& origin, const Graph& g, const std::string& message) {
  throw Error(ErrorCode::format, fmt::format("{}: graph '{}': {}", origin, g.name, message));
}

// Orders the nodes so that every tensor is produced before it is read, keeping the listed order
// where it can; a cycle is an error naming the nodes on it.
void order_nodes(Graph& g, const std::string& origin, const std::map<std::string, std::size_t>& producer) {
  const std::size_t n = g.nodes.size();
  std::vector<std::vector<std::size_t>> deps(n);
  for (std::size_t i = 0; i < n; ++i) {
    for (const auto& [slot, names] : g.nodes[i].inputs) {
      for (const auto& name : names) {
        auto it = producer.find(name);
        if (it != producer.end()) deps[i].push_back(it->second);
      }
    }
  }
  std::vector<int> state(n, 0);  // 0 new, 1 on the stack, 2 done
  std::vector<std::size_t> order, stack;
  std::function<void(std::size_t)> visit = [&](std::size_t i) {
    if (state[i] == 2) return;
    if (state[i] == 1) {
      const auto first = std::find(stack.begin(), stack.end(), i);
      std::vector<std::string> names;
      for (auto it = first; it != stack.end(); ++it) names.push_back("'" + g.nodes[*it].name + "'");
      names.push_back("'" + g.nodes[i].name + "'");
      fail(origin, g, fmt::format("the nodes form a cycle: {}", fmt::join(names, " -> ")));
    }
    state[i] = 1;
    stack.push_back(i);
    for (std::size_t d : deps[i]) visit(d);
    stack.pop_back();
    state[i] = 2;
    order.push_back(i);
  };
  for (std::size_t i = 0; i < n; ++i) visit(i);
  std::vector<Node> sorted;
  for (std::size_t i : order) sorted.push_back(std::move(g.nodes[i]));
  g.nodes = std::move(sorted);
}

}  // namespace

bool known_op(const std::string& op) { return ops().count(op) != 0; }

std::vector<std::string> known_ops() {
  std::vector<std::string> out;
  for (const auto& [name, spec] : ops()) out.push_back(name);
  return out;
}

bool writes_views(const std::string& op, const std::string& slot) {
  return op == "embedding" || op == "linear" || op == "concat" || (op == "attention" && slot == "context");
}

bool needs_whole(const std::string& op, const std::string& slot) {
  if (op == "attention" && slot == "query") return false;
  return !(op == "linear" || op == "concat" || op == "slice" || op == "select" || op == "reshape" || op == "final_state");
}

void check(Graph& g, const std::string& origin, const Graph* encoder, const WeightShapes& weights) {
  g.tensors.clear();
  g.index.clear();
  auto add_tensor = [&](const std::string& name, const std::string& where) {
    if (name.empty()) fail(origin, g, fmt::format("{}: an empty tensor name", where));
    if (g.index.count(name)) fail(origin, g, fmt::format("{}: tensor '{}' is produced twice", where, name));
    g.index[name] = static_cast<int>(g.tensors.size());
    TensorInfo t;
    t.name = name;
    g.tensors.push_back(t);
    return static_cast<int>(g.tensors.size()) - 1;
  };
  // Graph inputs.
  for (std::size_t i = 0; i < g.inputs.size(); ++i) {
    Input& in = g.inputs[i];
    const int t = add_tensor(in.name, fmt::format("input '{}'", in.name));
    TensorInfo& ti = g.tensors[static_cast<std::size_t>(t)];
    ti.input = static_cast<int>(i);
    SymShape implied;
    DType dtype = DType::f32;
    switch (in.from) {
      case From::tokens: implied = {Dim::batch(), Dim::source()}; dtype = DType::i32; break;
      case From::lengths: implied = {Dim::batch()}; dtype = DType::i32; break;
      case From::token: implied = {Dim::batch()}; dtype = DType::i32; break;
      case From::encoder: {
        if (!encoder || encoder->find(in.source) < 0) {
          fail(origin, g, fmt::format("input '{}': 'encoder:{}' is not a tensor of the encoder graph", in.name, in.source));
        }
        const TensorInfo& src = encoder->tensor(in.source);
        implied = src.shape;
        dtype = src.dtype;
        break;
      }
      case From::zeros:
        if (in.shape.empty()) fail(origin, g, fmt::format("input '{}': 'zeros' needs a shape", in.name));
        implied = in.shape;
        dtype = in.dtype;
        break;
    }
    if (!in.shape.empty() && in.shape != implied) {
      fail(origin, g, fmt::format("input '{}': declared shape {}, but '{}' gives {}", in.name, to_string(in.shape),
                                  in.from == From::encoder ? "encoder:" + in.source : to_string(in.from), to_string(implied)));
    }
    if (in.dtype_given && in.dtype != dtype) {
      fail(origin, g, fmt::format("input '{}': declared {}, but '{}' gives {}", in.name, vkrnn::to_string(in.dtype),
                                  in.from == From::encoder ? "encoder:" + in.source : to_string(in.from), vkrnn::to_string(dtype)));
    }
    in.shape = implied;
    in.dtype = dtype;
    ti.shape = implied;
    ti.dtype = dtype;
  }
  // Node structure: op, slots, unique names.
  std::set<std::string> node_names;
  std::map<std::string, std::size_t> producer;
  for (std::size_t i = 0; i < g.nodes.size(); ++i) {
    Node& n = g.nodes[i];
    if (n.name.empty()) fail(origin, g, fmt::format("node {} has no name", i));
    if (!node_names.insert(n.name).second) fail(origin, g, fmt::format("two nodes are named '{}'", n.name));
    auto where = [&] { return fmt::format("node '{}' ({})", n.name, n.op); };
    auto it = ops().find(n.op);
    if (it == ops().end()) {
      fail(origin, g, fmt::format("node '{}': unknown op '{}' (known: {})", n.name, n.op, fmt::join(known_ops(), ", ")));
    }
    const OpSpec& spec = it->second;
    for (const auto& [slot, names] : n.inputs) {
      if (!has_slot(spec.inputs, slot)) {
        std::vector<std::string> slots;
        for (const auto& s : spec.inputs) slots.push_back(s.name);
        fail(origin, g, fmt::format("{}: unknown input '{}' (it takes '{}')", where(), slot, fmt::join(slots, "', '")));
      }
      if (names.size() != 1 && !spec.list_input) fail(origin, g, fmt::format("{}: input '{}' takes one tensor", where(), slot));
    }
    for (const auto& s : spec.inputs) {
      if (s.required && !n.inputs.count(s.name)) fail(origin, g, fmt::format("{}: input '{}' is missing", where(), s.name));
    }
    for (const auto& [slot, name] : n.outputs) {
      if (!has_slot(spec.outputs, slot)) {
        std::vector<std::string> slots;
        for (const auto& s : spec.outputs) slots.push_back(s.name);
        fail(origin, g, fmt::format("{}: unknown output '{}' (it has '{}')", where(), slot, fmt::join(slots, "', '")));
      }
    }
    for (const auto& s : spec.outputs) {
      if (s.required && !n.outputs.count(s.name)) fail(origin, g, fmt::format("{}: output '{}' is missing", where(), s.name));
    }
    if (n.outputs.empty()) fail(origin, g, fmt::format("{}: no outputs", where()));
    for (const auto& [key, value] : n.options.items()) {
      if (!model_detail::listed(spec.options, key)) {
        fail(origin, g, fmt::format("{}: unknown option '{}'{}", where(), key,
                                    spec.options.empty() ? std::string(" (it takes none)") : fmt::format(" (it takes '{}')", fmt::join(spec.options, "', '"))));
      }
    }
    for (const auto& [slot, name] : n.outputs) {
      const int t = add_tensor(name, fmt::format("node '{}' output '{}'", n.name, slot));
      producer[name] = i;
      g.tensors[static_cast<std::size_t>(t)].producer = static_cast<int>(i);
      g.tensors[static_cast<std::size_t>(t)].slot = slot;
    }
  }
  // Every input read exists.
  for (const Node& n : g.nodes) {
    for (const auto& [slot, names] : n.inputs) {
      for (const auto& name : names) {
        if (!g.index.count(name)) {
          fail(origin, g, fmt::format("node '{}' ({}): input '{}' reads tensor '{}', which no node produces and is not a graph input",
                                      n.name, n.op, slot, name));
        }
      }
    }
  }
  order_nodes(g, origin, producer);
  // Producers' indices after ordering.
  for (std::size_t i = 0; i < g.nodes.size(); ++i)
    for (const auto& [slot, name] : g.nodes[i].outputs) g.tensors[static_cast<std::size_t>(g.index.at(name))].producer = static_cast<int>(i);
  // Shapes, options and weights, node by node.
  std::map<std::string, bool> strided;
  for (Node& n : g.nodes) {
    Infer c(g, n, origin, weights);
    c.strided_map() = strided;
    ops().at(n.op).infer(c);
    c.no_other_weights();
    strided = c.strided_map();
  }
  // Graph outputs and recurrent state.
  for (const auto& [role, name] : g.outputs) {
    if (!g.index.count(name)) fail(origin, g, fmt::format("output '{}' names tensor '{}', which the graph does not have", role, name));
  }
  for (const Input& in : g.inputs) {
    if (in.next.empty()) continue;
    if (!g.index.count(in.next)) fail(origin, g, fmt::format("input '{}': 'next' names tensor '{}', which the graph does not have", in.name, in.next));
    const TensorInfo& nt = g.tensor(in.next);
    if (nt.shape != in.shape || nt.dtype != in.dtype) {
      fail(origin, g, fmt::format("input '{}' {}: its 'next' tensor '{}' is {} {}", in.name, to_string(in.shape), in.next,
                                  vkrnn::to_string(nt.dtype), to_string(nt.shape)));
    }
  }
}

std::string producer_of(const Graph& g, int tensor) {
  const TensorInfo& t = g.tensors.at(static_cast<std::size_t>(tensor));
  if (t.producer < 0) return fmt::format("the {} graph's input '{}'", g.name, t.name);
  const Node& n = g.nodes.at(static_cast<std::size_t>(t.producer));
  std::string weights;
  for (const auto& [slot, name] : n.weights) weights += (weights.empty() ? "" : ", ") + name;
  return weights.empty() ? fmt::format("the {} graph's node '{}' ({})", g.name, n.name, n.op)
                         : fmt::format("the {} graph's node '{}' ({}; weights {})", g.name, n.name, n.op, weights);
}

}  // namespace vkrnn::graph
