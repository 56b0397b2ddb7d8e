// The graph runtime (graph_runtime.hpp): every op of docs/model-format.md version 2 recorded
// through the library's op classes, tensors placed once per shape, views resolved to offsets.
#include "models/graph_runtime.hpp"

#include <algorithm>
#include <functional>
#include <optional>
#include <set>

#include <fmt/format.h>

#include "models/model_common.hpp"
#include "vkrnn/activation.hpp"
#include "vkrnn/attention.hpp"
#include "vkrnn/embedding.hpp"
#include "vkrnn/error.hpp"
#include "vkrnn/positional_encoding.hpp"
#include "vkrnn/residual_add.hpp"
#include "vkrnn/rnn.hpp"
#include "vkrnn/self_attention.hpp"
#include "vkrnn/sequence_mask.hpp"

namespace vkrnn::graph {

using model_detail::tensor_of;

// Shape-dependent layouts kept per Program (recent shapes; older ones are rebuilt on demand).
constexpr std::size_t kLayoutCache = 8;

// One node being recorded: its tensors as whole tensors or matrix views of this frame.
class Run {
 public:
  Run(Sequence* s, const Program& p, const Layout& l, const Frame& f, std::size_t i, const Exec& e)
      : seq(s), prog(p), layout(l), frame(f), graph(p.graph()), node(p.graph().nodes[i]), index(i), exec(e) {}

  Sequence* seq;  // null while planning
  const Program& prog;
  const Layout& layout;
  const Frame& frame;
  const Graph& graph;
  const Node& node;
  std::size_t index;
  const Exec& exec;

  int input(const char* slot, std::size_t k = 0) const {
    const auto* t = prog.slots_[index].find(slot, false);
    return t && k < t->size() ? (*t)[k] : -1;
  }
  std::size_t count(const char* slot) const {
    const auto* t = prog.slots_[index].find(slot, false);
    return t ? t->size() : 0;
  }
  int output(const char* slot) const {
    const auto* t = prog.slots_[index].find(slot, true);
    return t ? t->front() : -1;
  }
  bool wanted(const char* slot) const {
    const int t = output(slot);
    return t >= 0 && (exec.live_tensors.empty() || exec.live_tensors[static_cast<std::size_t>(t)]);
  }
  const Place& place(int t) const { return layout.places[static_cast<std::size_t>(t)]; }
  // Tensor t whole: its copy when it is a view copied whole, itself, or its home; else empty.
  Tensor whole(int t) const {
    auto it = layout.whole_copies[index].find(t);
    if (it != layout.whole_copies[index].end()) return frame.owned[it->second].reshaped(place(t).shape);
    Tensor w = prog.whole(layout, frame, t);
    if (auto h = layout.homes.find(t); !w.valid() && h != layout.homes.end()) w = prog.whole(frame, h->second, t);
    return w;
  }
  // An input as one whole tensor (its copy when it is a view); empty when the slot is unused.
  Tensor in(const char* slot, std::size_t k = 0) const {
    const int t = input(slot, k);
    if (t < 0) return {};
    const Tensor w = whole(t);
    if (!w.valid()) {
      throw Error(ErrorCode::invalid_argument,
                  fmt::format("graph '{}', node '{}': input '{}' ('{}') is a view that was not copied whole", graph.name, node.name, slot,
                              graph.tensors[static_cast<std::size_t>(t)].name));
    }
    return w;
  }
  MatrixView in_view(const char* slot, std::size_t k = 0) const { return prog.matrix(layout, frame, input(slot, k)); }
  // An input as a matrix: whole where it can be (whole(t)), else its view.
  MatrixView in_matrix(const char* slot) const {
    const Tensor w = whole(input(slot));
    return w.valid() ? MatrixView::of(w) : in_view(slot);
  }
  Tensor out(const char* slot) const {
    const int t = output(slot);
    return t < 0 ? Tensor{} : prog.whole(layout, frame, t);
  }
  MatrixView out_view(const char* slot) const { return prog.matrix(layout, frame, output(slot)); }
  template <class P>
  P& plan() const {
    return static_cast<P&>(*layout.plans[index]);
  }
  // The caller's host lengths when `slot` reads the graph's 'lengths' input.
  std::span<const std::int32_t> host_lengths(const char* slot) const {
    const int t = input(slot);
    if (t < 0) return {};
    const TensorInfo& ti = graph.tensors[static_cast<std::size_t>(t)];
    if (ti.input >= 0 && graph.inputs[static_cast<std::size_t>(ti.input)].from == From::lengths) return exec.host_lengths;
    return {};
  }
};

class NodeExec {
 public:
  virtual ~NodeExec() = default;
  // Shape-dependent objects for one layout.
  virtual std::unique_ptr<NodePlan> plan(Context&, const Run&) const { return nullptr; }
  virtual void record(const Run& r) const = 0;
};

namespace {

// --- helpers -----------------------------------------------------------------------------

const std::vector<float>& weight_data(const ModelFile& m, const Node& n, const std::string& slot) {
  const std::vector<float>* w = m.weight(n.weights.at(slot));
  if (!w) throw Error(ErrorCode::not_found, fmt::format("node '{}': weight '{}' ('{}') is not loaded", n.name, slot, n.weights.at(slot)));
  return *w;
}

Tensor upload(Context& ctx, const ModelFile& m, const Node& n, const std::string& slot) {
  if (!n.weights.count(slot)) return {};
  return tensor_of(ctx, n.weight_shapes.at(slot), weight_data(m, n, slot), n.weights.at(slot));
}

std::size_t option(const Node& n, const char* name) { return n.options.at(name).get<std::size_t>(); }

// An i32 [B] tensor filled with `value` (lengths of ops whose graph gives none).
struct FullLengths {
  Tensor t;
  std::uint32_t value = 0;
  void make(Context& ctx, std::size_t B, std::size_t v) {
    t = ctx.tensor({B}, DType::i32, "graph full lengths");
    value = static_cast<std::uint32_t>(v);
  }
  Tensor get(const Run& r, const char* slot) const {
    if (r.input(slot) >= 0) return r.in(slot);
    r.seq->fill(t, value);
    return t;
  }
};

// --- ops -------------------------------------------------------------------------------------

class EmbeddingExec : public NodeExec {
 public:
  EmbeddingExec(Context& ctx, const Node& n, const ModelFile& m, const OpOptions& o) : op_(ctx, o), table_(upload(ctx, m, n, "weight")) {}
  void record(const Run& r) const override { op_.record(*r.seq, MatrixView::of(table_), r.in("ids"), r.out_view("out")); }
  const Tensor& table() const { return table_; }

 private:
  Embedding op_;
  Tensor table_;
};

// A file's int8 weights stay int8 unless the options ask for another storage.
OpOptions storage_for(const ModelFile::Quantized* q, OpOptions o) {
  if (q && o.weight_storage == WeightStorage::automatic) o.weight_storage = WeightStorage::i8;
  return o;
}

class LinearExec : public NodeExec {
 public:
  LinearExec(Context& ctx, const Node& n, const ModelFile& m, const OpOptions& o)
      : op_(ctx, n.weight_shapes.at("weight")[1], n.weight_shapes.at("weight")[0], n.weights.count("bias") != 0,
            storage_for(m.quantized(n.weights.at("weight")), o)) {
    const Shape& shape = n.weight_shapes.at("weight");
    const std::span<const float> bias = n.weights.count("bias") ? std::span<const float>(weight_data(m, n, "bias")) : std::span<const float>();
    if (const ModelFile::Quantized* q = m.quantized(n.weights.at("weight"))) {
      op_.load_quantized(q->q, shape, q->scales, {shape[0]}, bias);
    } else {
      op_.load(weight_data(m, n, "weight"), shape, bias);
    }
  }
  void record(const Run& r) const override {
    const MatrixView y = fused_out_ >= 0 ? r.prog.matrix(r.layout, r.frame, fused_out_) : r.out_view("y");
    op_.record(*r.seq, r.in_view("x"), y);
  }
  // The activation node that alone reads y, applied in this layer's store: y goes straight
  // into that node's output tensor `out`.
  void fuse(ActivationFn fn, int out) {
    op_.set_activation(fn);
    fused_out_ = out;
  }
  bool fused() const { return fused_out_ >= 0; }
  const Linear& op() const { return op_; }

 private:
  Linear op_;
  int fused_out_ = -1;
};

RnnConfig rnn_config(const Node& n, std::size_t input_size) {
  RnnConfig c;
  const std::string cell = n.options.at("cell").get<std::string>();
  c.cell = cell == "gru" ? CellType::gru : cell == "lstm" ? CellType::lstm : cell == "rnn_tanh" ? CellType::rnn_tanh : CellType::rnn_relu;
  c.input_size = input_size;
  c.hidden_size = option(n, "hidden_size");
  c.num_layers = option(n, "num_layers");
  c.bidirectional = n.options.at("bidirectional").get<bool>();
  c.bias = n.options.at("bias").get<bool>();
  c.proj_size = option(n, "proj_size");
  return c;
}

// The first of a node's weights the file stores as int8, or null.
const ModelFile::Quantized* any_quantized(const ModelFile& m, const Node& n) {
  for (const auto& [slot, name] : n.weights)
    if (const ModelFile::Quantized* q = m.quantized(name)) return q;
  return nullptr;
}

// A row-major matrix of cols = columns.size() with column c taken from column columns[c].
template <class T>
std::vector<T> permute_columns(std::span<const T> w, const std::vector<std::size_t>& columns) {
  const std::size_t cols = columns.size(), rows = w.size() / cols;
  std::vector<T> out(w.size());
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t c = 0; c < cols; ++c) out[r * cols + c] = w[r * cols + columns[c]];
  return out;
}

class RnnExec : public NodeExec {
  struct Plan : NodePlan {
    Tensor output, h_n, c_n;  // scratch for outputs the graph does not name
  };

 public:
  // x_columns: the planner reads x from another concat's columns in another order (column c
  // of that view is column x_columns[c] of the graph's x), so weight_ih_l0's columns follow.
  // A file's int8 weight matrices stay int8 (exactly as stored) unless the options ask for
  // another storage; with weight_storage i8 the float ones are quantized at load.
  RnnExec(Context& ctx, const Node& n, const Graph& g, const ModelFile& m, const OpOptions& o,
          const std::vector<std::size_t>* x_columns)
      : rnn_(ctx, rnn_config(n, g.tensor(n.inputs.at("x").at(0)).shape.back().value), storage_for(any_quantized(m, n), o)) {
    for (const auto& [slot, name] : n.weights) {
      const Shape& shape = n.weight_shapes.at(slot);
      const bool permute = x_columns && slot == "weight_ih_l0";
      if (const ModelFile::Quantized* q = m.quantized(name)) {
        rnn_.set_parameter_quantized(slot, permute ? permute_columns<std::int8_t>(q->q, *x_columns) : q->q, shape, q->scales);
      } else {
        const std::vector<float>& w = weight_data(m, n, slot);
        rnn_.set_parameter(slot, permute ? permute_columns<float>(w, *x_columns) : w, shape);
      }
    }
    lstm_ = rnn_.config().cell == CellType::lstm;
    step_ = g.tensor(n.inputs.at("x").at(0)).shape.size() == 2;
  }
  std::unique_ptr<NodePlan> plan(Context& ctx, const Run& r) const override {
    auto p = std::make_unique<Plan>();
    const Shape x = r.place(r.input("x")).shape;
    const std::size_t B = x[0], L = rnn_.config().num_layers, D = rnn_.directions(), H = rnn_.config().hidden_size;
    const std::size_t HO = rnn_.output_size();
    if (!step_ && r.output("output") < 0) p->output = ctx.tensor({B, x[1], D * HO}, DType::f32, "graph rnn output (unused)");
    if (step_ && r.output("h_n") < 0) p->h_n = ctx.tensor({L, B, HO}, DType::f32, "graph rnn h (unused)");
    if (step_ && lstm_ && r.output("c_n") < 0) p->c_n = ctx.tensor({L, B, H}, DType::f32, "graph rnn c (unused)");
    return p;
  }
  void record(const Run& r) const override {
    const Plan& p = r.plan<Plan>();
    if (step_) {
      const Tensor h_out = r.output("h_n") >= 0 ? r.out("h_n") : p.h_n;
      const Tensor c_out = lstm_ ? (r.output("c_n") >= 0 ? r.out("c_n") : p.c_n) : Tensor{};
      // The top layer's h also goes straight into its columns of a concat when the planner says.
      const int o = r.output("output");
      rnn_.step(*r.seq, r.in_view("x"), r.in("h0"), h_out, r.in("c0"), c_out,
                o >= 0 && r.prog.redirected(o) ? r.out_view("output") : MatrixView{});
    } else {
      const Tensor out = r.output("output") >= 0 ? r.out("output") : p.output;
      rnn_.record(*r.seq, r.in("x"), r.in("lengths"), r.in("h0"), r.in("c0"), out, r.wanted("h_n") ? r.out("h_n") : Tensor{},
                  lstm_ && r.wanted("c_n") ? r.out("c_n") : Tensor{}, r.host_lengths("lengths"));
    }
  }

 private:
  Rnn rnn_;
  bool lstm_ = false, step_ = false;
};

Score score_of(const Node& n) {
  const std::string s = n.options.at("score").get<std::string>();
  return s == "dot" ? Score::dot : s == "general" ? Score::general : s == "scaled_dot" ? Score::scaled_dot : Score::additive;
}

// attention and attention_scores: the score's parameters.
class ScoreExec : public NodeExec {
 public:
  ScoreExec(Context& ctx, const Node& n, const ModelFile& m, const OpOptions& o) : ctx_(&ctx), opts_(o), score_(score_of(n)) {
    params_.w = upload(ctx, m, n, "w");
    params_.bias = upload(ctx, m, n, "bias");
    params_.v = upload(ctx, m, n, "v");
    if (n.weights.count("v_bias")) v_bias_ = weight_data(m, n, "v_bias").at(0);
  }

 protected:
  AttentionConfig config(const Run& r, std::size_t hidden) const {
    const Shape& k = r.place(r.input("keys")).shape;
    AttentionConfig a;
    a.score = score_;
    a.batch = k[0];
    a.max_source = k[1];
    a.hidden = hidden;
    a.key_dim = k[2];
    a.query_dim = r.place(r.input("query")).shape[1];
    a.heads = option(r.node, "heads");
    return a;
  }

  Context* ctx_;
  OpOptions opts_;
  Score score_;
  ScoreParams params_;
  std::optional<float> v_bias_;
};

class AttentionExec : public ScoreExec {
  struct Plan : NodePlan {
    std::unique_ptr<FusedAttention> op;
    FullLengths lengths;
  };

 public:
  using ScoreExec::ScoreExec;
  // A dot score whose query is a bias-free linear layer's output, W x: the general score with
  // W_a = W reading x (the planner passes x as the query), the projection in the attention.
  void fold_query(Context& ctx, const Node& linear, const ModelFile& m) {
    score_ = Score::general;
    params_.w = upload(ctx, m, linear, "weight");
  }
  std::unique_ptr<NodePlan> plan(Context& ctx, const Run& r) const override {
    auto p = std::make_unique<Plan>();
    const AttentionConfig a = config(r, r.place(r.input("values")).shape[2]);
    p->op = std::make_unique<FusedAttention>(ctx, a, opts_);
    p->lengths.make(ctx, a.batch, a.max_source);
    return p;
  }
  // v_bias moves every score alike: the weights and the context do not change.
  void record(const Run& r) const override {
    const Plan& p = r.plan<Plan>();
    // The context may be written in place: its columns of a concat the planner chose.
    // The query too may be a view (a multi-layer rnn's top layer, a concat's columns).
    p.op->record(*r.seq, r.in("keys"), r.in("values"), r.in_matrix("query"), p.lengths.get(r, "lengths"), r.out_view("context"),
                 params_, r.wanted("weights") ? r.out("weights") : Tensor{});
  }
};

class ScoresExec : public ScoreExec {
  struct Plan : NodePlan {
    std::unique_ptr<AttentionScores> op;
    FullLengths lengths;
    Tensor raw;  // before v_bias
  };

 public:
  ScoresExec(Context& ctx, const Node& n, const ModelFile& m, const OpOptions& o) : ScoreExec(ctx, n, m, o), gemm_(ctx, o) {
    if (v_bias_) {
      one_ = ctx.tensor({1, 1}, std::vector<float>{1.0f}, "graph v_bias unit weight");
      bias_ = ctx.tensor({1}, std::vector<float>{*v_bias_}, "graph v_bias");
    }
  }
  std::unique_ptr<NodePlan> plan(Context& ctx, const Run& r) const override {
    auto p = std::make_unique<Plan>();
    const AttentionConfig a = config(r, r.place(r.input("keys")).shape[2]);
    p->op = std::make_unique<AttentionScores>(ctx, a, opts_);
    p->lengths.make(ctx, a.batch, a.max_source);
    if (v_bias_) p->raw = ctx.tensor(attention_scores_shape(a), DType::f32, "graph raw scores");
    return p;
  }
  void record(const Run& r) const override {
    const Plan& p = r.plan<Plan>();
    const Tensor out = r.out("scores");
    p.op->record(*r.seq, r.in("keys"), r.in("query"), p.lengths.get(r, "lengths"), v_bias_ ? p.raw : out, params_);
    if (v_bias_) {
      // scores + v_bias as a 1 x 1 linear layer over every score (-inf stays -inf).
      const std::size_t n = out.size();
      gemm_.record(*r.seq, MatrixView{p.raw, n, 1, 0, 1}, MatrixView{one_, 1, 1, 0, 1}, bias_, 0, MatrixView{out, n, 1, 0, 1});
    }
  }

 private:
  Gemm gemm_;
  Tensor one_, bias_;
};

// Softmax over the last axis of [rows, (heads,) n]: masked by lengths, or over all n.
class SoftmaxExec : public NodeExec {
  struct Plan : NodePlan {
    std::unique_ptr<MaskedSoftmax> op;
    FullLengths lengths;
  };

 public:
  SoftmaxExec(const char* in, const char* out, const OpOptions& o) : in_(in), out_(out), opts_(o) {}
  std::unique_ptr<NodePlan> plan(Context& ctx, const Run& r) const override {
    auto p = std::make_unique<Plan>();
    const Shape& s = r.place(r.input(in_)).shape;
    const bool masked = r.node.op == "masked_softmax";
    AttentionConfig a;
    a.max_source = s.back();
    // masked_softmax: [B, S] or [B, heads, S]; activation softmax: every leading row alone.
    a.heads = masked && s.size() == 3 ? s[1] : 1;
    a.batch = masked ? s[0] : element_count(s) / s.back();
    a.score = a.heads > 1 ? Score::scaled_dot : Score::dot;
    a.hidden = a.heads;
    p->op = std::make_unique<MaskedSoftmax>(ctx, a, opts_);
    p->lengths.make(ctx, a.batch, a.max_source);
    return p;
  }
  void record(const Run& r) const override {
    const Plan& p = r.plan<Plan>();
    const Tensor x = r.in(in_);
    const auto& cfg = p.op->config();
    const Shape shape = cfg.heads > 1 ? Shape{cfg.batch, cfg.heads, cfg.max_source} : Shape{cfg.batch, cfg.max_source};
    p.op->record(*r.seq, x.reshaped(shape), p.lengths.get(r, "lengths"), r.out(out_).reshaped(shape));
  }

 private:
  const char *in_, *out_;
  OpOptions opts_;
};

class ContextExec : public NodeExec {
  struct Plan : NodePlan {
    std::unique_ptr<AttentionContext> op;
    FullLengths lengths;
  };

 public:
  explicit ContextExec(const OpOptions& o) : opts_(o) {}
  std::unique_ptr<NodePlan> plan(Context& ctx, const Run& r) const override {
    auto p = std::make_unique<Plan>();
    const Shape& w = r.place(r.input("weights")).shape;
    const Shape& v = r.place(r.input("values")).shape;
    AttentionConfig a;
    a.batch = v[0];
    a.max_source = v[1];
    a.hidden = v[2];
    a.heads = w.size() == 3 ? w[1] : 1;
    a.score = a.heads > 1 ? Score::scaled_dot : Score::dot;
    p->op = std::make_unique<AttentionContext>(ctx, a, opts_);
    p->lengths.make(ctx, a.batch, a.max_source);
    return p;
  }
  void record(const Run& r) const override {
    const Plan& p = r.plan<Plan>();
    p.op->record(*r.seq, r.in("weights"), r.in("values"), p.lengths.get(r, "lengths"), r.out("context"));
  }

 private:
  OpOptions opts_;
};

class SelfAttentionExec : public NodeExec {
  struct Plan : NodePlan {
    std::unique_ptr<SelfAttention> op;
  };

 public:
  explicit SelfAttentionExec(const OpOptions& o) : opts_(o) {}
  std::unique_ptr<NodePlan> plan(Context& ctx, const Run& r) const override {
    auto p = std::make_unique<Plan>();
    const Shape& q = r.place(r.input("q")).shape;
    SelfAttentionConfig c;
    c.batch = q[0];
    c.max_seq = q[1];
    c.hidden = q[2];
    c.heads = option(r.node, "heads");
    c.causal = r.node.options.at("causal").get<bool>();
    p->op = std::make_unique<SelfAttention>(ctx, c, opts_);
    return p;
  }
  void record(const Run& r) const override {
    const Plan& p = r.plan<Plan>();
    const Tensor q = r.in("q"), k = r.in("k"), lengths = r.in("lengths");
    p.op->record(*r.seq, q, k, r.in("v"), lengths, r.out("out"));
    if (r.wanted("weights")) p.op->record_weights(*r.seq, q, k, lengths, r.out("weights"));
  }

 private:
  OpOptions opts_;
};

class PositionalEncodingExec : public NodeExec {
 public:
  PositionalEncodingExec(Context& ctx, const Node& n, const Graph& g, const OpOptions& o)
      : op_(ctx, g.tensor(n.inputs.at("x").at(0)).shape.back().value, o) {}
  void record(const Run& r) const override { op_.record(*r.seq, r.in("x"), r.out("out")); }

 private:
  PositionalEncoding op_;
};

class AddExec : public NodeExec {
 public:
  AddExec(Context& ctx, const OpOptions& o) : op_(ctx, o) {}
  void record(const Run& r) const override { op_.record(*r.seq, r.in("a"), r.in("b"), r.out("out")); }

 private:
  ResidualAdd op_;
};

class ActivationExec : public NodeExec {
 public:
  ActivationExec(Context& ctx, ActivationFn fn, const OpOptions& o) : op_(ctx, fn, o), fn_(fn) {}
  void record(const Run& r) const override {
    if (!fused_) op_.record(*r.seq, r.in("x"), r.out("out"));
  }
  ActivationFn fn() const { return fn_; }
  void set_fused() { fused_ = true; }  // its linear producer applies it (LinearExec::fuse)

 private:
  Activation op_;
  ActivationFn fn_;
  bool fused_ = false;
};

class SequenceMaskExec : public NodeExec {
 public:
  SequenceMaskExec(Context& ctx, const OpOptions& o) : op_(ctx, o) {}
  void record(const Run& r) const override {
    const Shape& s = r.place(r.input("x")).shape;
    op_.record(*r.seq, MaskShape{s[0], s[1], element_count(s) / (s[0] * s[1])}, r.in("x"), r.in("lengths"), r.out("out"));
  }

 private:
  SequenceMask op_;
};

// Copies views into one matrix, up to four per dispatch; `sources` skips inputs already in place.
void concat_into(const Concat& op, Sequence& seq, const std::vector<MatrixView>& sources, const std::vector<bool>& skip,
                 const MatrixView& out) {
  std::size_t col = 0;
  std::vector<MatrixView> run;
  std::size_t run_col = 0, run_cols = 0;
  auto flush = [&] {
    if (run.empty()) return;
    MatrixView o = out;
    o.offset += run_col;
    o.cols = run_cols;
    o.ld = out.ld ? out.ld : out.cols;
    op.record(seq, std::span<const MatrixView>(run), o);
    run.clear();
    run_cols = 0;
  };
  for (std::size_t k = 0; k < sources.size(); ++k) {
    if (skip[k] || run.size() == 4) flush();
    if (!skip[k]) {
      if (run.empty()) run_col = col;
      run.push_back(sources[k]);
      run_cols += sources[k].cols;
    }
    col += sources[k].cols;
  }
  flush();
}

// The rows of out where input k of an axis-0 concat goes.
MatrixView concat_rows(const Run& r, const MatrixView& out, std::size_t k) {
  std::size_t row = 0;
  for (std::size_t i = 0; i < k; ++i) row += r.place(r.input("x", i)).rows();
  MatrixView v = out;
  v.rows = r.place(r.input("x", k)).rows();
  v.ld = out.ld ? out.ld : out.cols;
  v.offset += row * v.ld;
  return v;
}

class ConcatExec : public NodeExec {
 public:
  ConcatExec(const Concat& op, const Node& n) : op_(&op), rows_(n.options.at("axis").get<std::int64_t>() == 0) {}
  void record(const Run& r) const override {
    if (r.prog.aliased(r.index)) return;  // a view of another concat, its inputs written there
    const MatrixView out = r.out_view("out");
    if (rows_ && r.place(r.output("out")).shape.size() > 1) {
      // Along the first axis: each input is a block of rows of the output.
      for (std::size_t k = 0; k < r.count("x"); ++k) {
        if (!r.prog.in_place(r.input("x", k), r.index)) op_->record(*r.seq, {r.in_view("x", k)}, concat_rows(r, out, k));
      }
      return;
    }
    std::vector<MatrixView> sources;
    std::vector<bool> skip;
    for (std::size_t k = 0; k < r.count("x"); ++k) {
      const MatrixView v = r.in_view("x", k);
      sources.push_back(v);
      // Written in place by its producer: it already sits in its columns of the output.
      skip.push_back(r.prog.in_place(r.input("x", k), r.index));
    }
    concat_into(*op_, *r.seq, sources, skip, out);
  }

 private:
  const Concat* op_;
  bool rows_;  // along axis 0
};

class FinalStateExec : public NodeExec {
 public:
  explicit FinalStateExec(const Concat& op) : op_(&op) {}
  void record(const Run& r) const override {
    if (!r.node.options.at("bidirectional").get<bool>()) return;  // one direction: a view
    const Place& h = r.place(r.input("h_n"));
    const std::size_t L = option(r.node, "num_layers"), B = h.shape[1], H = h.shape[2], ld = h.stride();
    const MatrixView all = r.in_view("h_n");
    MatrixView fwd{all.tensor, B, H, all.offset + (L - 1) * 2 * B * ld, ld}, bwd = fwd;
    bwd.offset += B * ld;
    op_->record(*r.seq, {fwd, bwd}, r.out_view("out"));
  }

 private:
  const Concat* op_;
};

class ViewExec : public NodeExec {
 public:
  void record(const Run&) const override {}
};

// u_t = w . tanh(W x_t + b) or w . x_t; softmax over t < length; pooled = sum_t alpha_t x_t --
// FusedAttention with keys W x (additive score, zero query) or with the query w (dot score).
class PoolingExec : public NodeExec {
  struct Plan : NodePlan {
    std::unique_ptr<FusedAttention> op;
    FullLengths lengths;
    Tensor keys, query;
  };

 public:
  PoolingExec(Context& ctx, const Node& n, const ModelFile& m, const OpOptions& o) : opts_(o), tanh_(n.options.at("score") == "tanh") {
    if (tanh_) {
      const Shape& w = n.weight_shapes.at("weight");
      proj_ = std::make_unique<Linear>(ctx, w[1], w[0], false, o);
      proj_->load(weight_data(m, n, "weight"), w);
      params_.w = tensor_of(ctx, {w[0], 1}, std::vector<float>(w[0], 0.0f), "graph pooling zero query weight");
      params_.bias = upload(ctx, m, n, "bias");
      params_.v = upload(ctx, m, n, "w");
    } else {
      w_ = weight_data(m, n, "w");
    }
  }
  std::unique_ptr<NodePlan> plan(Context& ctx, const Run& r) const override {
    auto p = std::make_unique<Plan>();
    const Shape& x = r.place(r.input("x")).shape;
    AttentionConfig a;
    a.batch = x[0];
    a.max_source = x[1];
    a.hidden = x[2];
    if (tanh_) {
      a.score = Score::additive;
      a.key_dim = proj_->out_features();
      a.query_dim = 1;
      p->keys = ctx.tensor({x[0], x[1], a.key_dim}, DType::f32, "graph pooling keys");
      p->query = tensor_of(ctx, {x[0], 1}, std::vector<float>(x[0], 0.0f), "graph pooling zero query");
    } else {
      a.score = Score::dot;
      std::vector<float> rep;
      for (std::size_t b = 0; b < x[0]; ++b) rep.insert(rep.end(), w_.begin(), w_.end());
      p->query = tensor_of(ctx, {x[0], x[2]}, rep, "graph pooling query");
    }
    p->op = std::make_unique<FusedAttention>(ctx, a, opts_);
    p->lengths.make(ctx, a.batch, a.max_source);
    return p;
  }
  void record(const Run& r) const override {
    const Plan& p = r.plan<Plan>();
    const Tensor x = r.in("x");
    if (tanh_) proj_->record(*r.seq, x, p.keys);
    p.op->record(*r.seq, tanh_ ? p.keys : x, x, p.query, p.lengths.get(r, "lengths"), r.out("pooled"), params_,
                 r.wanted("weights") ? r.out("weights") : Tensor{});
  }

 private:
  OpOptions opts_;
  bool tanh_;
  std::unique_ptr<Linear> proj_;
  ScoreParams params_;
  std::vector<float> w_;
};

std::unique_ptr<NodeExec> make_exec(Context& ctx, const Graph& g, const Node& n, const ModelFile& m, const OpOptions& dense,
                                    const OpOptions& other, const Concat& concat, const std::vector<std::size_t>* x_columns) {
  const std::string& op = n.op;
  if (op == "embedding") return std::make_unique<EmbeddingExec>(ctx, n, m, other);
  if (op == "linear") return std::make_unique<LinearExec>(ctx, n, m, dense);
  if (op == "rnn") return std::make_unique<RnnExec>(ctx, n, g, m, other, x_columns);
  if (op == "attention") return std::make_unique<AttentionExec>(ctx, n, m, other);
  if (op == "attention_scores") return std::make_unique<ScoresExec>(ctx, n, m, other);
  if (op == "masked_softmax") return std::make_unique<SoftmaxExec>("scores", "weights", other);
  if (op == "attention_context") return std::make_unique<ContextExec>(other);
  if (op == "self_attention") return std::make_unique<SelfAttentionExec>(other);
  if (op == "positional_encoding") return std::make_unique<PositionalEncodingExec>(ctx, n, g, other);
  if (op == "add") return std::make_unique<AddExec>(ctx, other);
  if (op == "activation") {
    const std::string fn = n.options.at("fn").get<std::string>();
    if (fn == "softmax") return std::make_unique<SoftmaxExec>("x", "out", other);
    return std::make_unique<ActivationExec>(ctx, fn == "tanh" ? ActivationFn::tanh : fn == "sigmoid" ? ActivationFn::sigmoid : ActivationFn::relu, other);
  }
  if (op == "sequence_mask") return std::make_unique<SequenceMaskExec>(ctx, other);
  if (op == "concat") return std::make_unique<ConcatExec>(concat, n);
  if (op == "final_state") return std::make_unique<FinalStateExec>(concat);
  if (op == "attention_pooling") return std::make_unique<PoolingExec>(ctx, n, m, other);
  if (op == "slice" || op == "select" || op == "reshape") return std::make_unique<ViewExec>();
  throw Error(ErrorCode::invalid_argument, fmt::format("graph '{}', node '{}': no runtime for op '{}'", g.name, n.name, op));
}

// The place of a view node's output, from the place of its input.
Place view_place(const Node& n, const Place& in, const Shape& out_shape) {
  Place p = in;
  p.shape = out_shape;
  const std::size_t rank = in.shape.size();
  // Rows (of the last dimension) per index of axis 0.
  const std::size_t per0 = rank >= 2 ? element_count(Shape(in.shape.begin() + 1, in.shape.end() - 1)) : 0;
  auto row0 = [&](std::int64_t index) {
    if (index < 0) index += static_cast<std::int64_t>(in.shape[0]);
    return static_cast<std::size_t>(index) * per0 * in.stride();
  };
  if (n.op == "select") {
    p.offset += row0(n.options.at("index").get<std::int64_t>());
    if (p.shape.size() == 1) p.ld = 0;  // one row
  } else if (n.op == "slice") {
    const auto start = n.options.at("start").get<std::int64_t>();
    const std::int64_t axis = n.options.at("axis").get<std::int64_t>();
    if ((axis == -1 || axis == static_cast<std::int64_t>(rank) - 1) || rank == 1) {
      p.offset += static_cast<std::size_t>(start);
      p.ld = in.stride();
    } else {
      p.offset += row0(start);
    }
  } else if (n.op == "rnn") {  // step mode: the top layer of h_n
    p.offset += (in.shape[0] - 1) * per0 * in.stride();
  } else if (n.op == "final_state") {  // one direction: h_n[L - 1]
    p.offset += (in.shape[0] - 1) * per0 * in.stride();
  }
  // reshape: same offset and row stride (a strided view keeps its last dimension).
  if (p.packed()) p.ld = 0;
  return p;
}

}  // namespace

namespace {

// Whether the graph returns this tensor (one of its outputs).
bool graph_output(const Graph& g, const std::string& tensor) {
  for (const auto& [role, name] : g.outputs)
    if (name == tensor) return true;
  return false;
}

// A step-mode rnn (x [B, I]): one timestep, its 'output' the top layer's new h.
bool step_rnn(const Graph& g, const Node& n) {
  return n.op == "rnn" && g.tensor(n.inputs.at("x").at(0)).shape.size() == 2;
}

// Whether `reader` reads tensor `name` in a slot that needs a whole tensor (a folded
// attention reads its linear's input as the query: a view is fine).
bool reads_whole(const Node& reader, const std::string& name) {
  for (const auto& [slot, names] : reader.inputs)
    if (std::find(names.begin(), names.end(), name) != names.end() && needs_whole(reader.op, slot)) return true;
  return false;
}

// Along the last axis of 2-D tensors (a decoder step's [B, F] pieces).
bool column_concat(const Graph& g, const Node& n) {
  if (n.op != "concat" || g.tensor(n.outputs.at("out")).shape.size() != 2) return false;
  const auto axis = n.options.at("axis").get<std::int64_t>();
  if (axis != -1 && axis != 1) return false;
  for (const auto& name : n.inputs.at("x"))
    if (g.tensor(name).shape.size() != 2 || !g.tensor(name).shape.back().fixed()) return false;
  return true;
}

}  // namespace

// --- Program -----------------------------------------------------------------------------------

bool Program::bindable_output(const Graph& g, const std::string& tensor) {
  const int t = g.find(tensor);
  if (t < 0) return false;
  const TensorInfo& ti = g.tensors[static_cast<std::size_t>(t)];
  return ti.producer >= 0 && !ti.view;
}

Program::Program(Context& ctx, const Graph& graph, const ModelFile& model, const OpOptions& dense, const OpOptions& other,
                 std::vector<std::string> bound_outputs)
    : ctx_(&ctx), graph_(&graph), bound_outputs_(std::move(bound_outputs)), concat_(ctx, other) {
  const Graph& g = graph;
  for (std::size_t i = 0; i < g.inputs.size(); ++i) bound_index_[g.find(g.inputs[i].name)] = i;
  for (std::size_t k = 0; k < bound_outputs_.size(); ++k) {
    if (!bindable_output(g, bound_outputs_[k])) {
      throw Error(ErrorCode::invalid_argument, fmt::format("graph '{}': tensor '{}' cannot be bound as an output", g.name, bound_outputs_[k]));
    }
    bound_index_[g.find(bound_outputs_[k])] = g.inputs.size() + k;
  }
  std::map<int, std::vector<const Node*>> readers;
  for (const Node& n : g.nodes)
    for (const auto& [slot, names] : n.inputs)
      for (const auto& name : names) readers[g.find(name)].push_back(&n);
  plan_fusions(readers);
  plan_query_folds(readers, model);
  plan_in_place(readers);
  std::set<std::size_t> folded;
  for (const auto& [attention, linear] : query_folds_) folded.insert(linear);
  for (std::size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& n = g.nodes[i];
    auto cols = x_columns_.find(i);
    auto fold = query_folds_.find(i);
    if (folded.count(i)) {
      execs_.push_back(std::make_unique<ViewExec>());  // its attention projects the query itself
    } else {
      execs_.push_back(make_exec(ctx, g, n, model, dense, other, concat_, cols == x_columns_.end() ? nullptr : &cols->second));
    }
    if (fold != query_folds_.end()) static_cast<AttentionExec&>(*execs_.back()).fold_query(ctx, g.nodes[fold->second], model);
    NodeSlots ns;
    for (const auto& [slot, names] : n.inputs) {
      std::vector<int> ts;
      for (const auto& name : names) ts.push_back(g.find(name));
      if (fold != query_folds_.end() && slot == "query") ts = {g.find(g.nodes[fold->second].inputs.at("x").at(0))};
      ns.inputs.push_back({slot, ts});
    }
    for (const auto& [slot, name] : n.outputs) ns.outputs.push_back({slot, {g.find(name)}});
    slots_.push_back(std::move(ns));
  }

  for (const std::size_t i : fused_activations_) {
    auto& act = static_cast<ActivationExec&>(*execs_[i]);
    const int producer = g.tensor(g.nodes[i].inputs.at("x").at(0)).producer;
    static_cast<LinearExec&>(*execs_[static_cast<std::size_t>(producer)]).fuse(act.fn(), g.find(g.nodes[i].outputs.at("out")));
    act.set_fused();
  }
}

void Program::require_computed(int tensor, const std::string& where) const {
  const Graph& g = *graph_;
  const std::string& name = g.tensors[static_cast<std::size_t>(tensor)].name;
  for (const std::size_t i : fused_activations_) {
    const Node& act = g.nodes[i];
    if (act.inputs.at("x").at(0) != name) continue;
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{}: tensor '{}' of graph '{}' is not computed: its linear layer applies activation node '{}' "
                            "as it stores, so only '{}' exists", where, name, g.name, act.name, act.outputs.at("out")));
  }
  for (const auto& [attention, linear] : query_folds_) {
    const Node& lin = g.nodes[linear];
    if (lin.outputs.at("y") != name) continue;
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{}: tensor '{}' of graph '{}' is not computed: attention node '{}' projects its query itself "
                            "(linear node '{}' is folded into it)", where, name, g.name, g.nodes[attention].name, lin.name));
  }
}

// Activations fused into the linear layer before them (its kernels' store applies f and
// writes the activation's output, which may then be a view: one dispatch less): where the
// linear writes its output whole (not a view, not bound) and the activation alone reads it.
void Program::plan_fusions(std::map<int, std::vector<const Node*>>& readers) {
  const Graph& g = *graph_;
  for (std::size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& n = g.nodes[i];
    if (n.op != "activation" || n.options.at("fn").get<std::string>() == "softmax") continue;
    const int t = g.find(n.inputs.at("x").at(0));
    const TensorInfo& ti = g.tensors[static_cast<std::size_t>(t)];
    if (ti.producer < 0 || ti.view || g.nodes[static_cast<std::size_t>(ti.producer)].op != "linear") continue;
    if (bound_index_.count(t) || readers[t].size() != 1 || graph_output(g, ti.name)) continue;
    fused_activations_.insert(i);
  }
}

// Query projections folded into the attention (Luong's general score as exported: a
// bias-free linear W_a h read only by a dot-score attention): the attention runs the general
// score on h, and the linear records nothing; h may be a view (FusedAttention reads the query
// in place: a multi-layer step rnn's top layer, a concat's columns). The attention becomes h's
// reader in `readers`.
void Program::plan_query_folds(std::map<int, std::vector<const Node*>>& readers, const ModelFile& model) {
  const Graph& g = *graph_;
  for (std::size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& n = g.nodes[i];
    if (n.op != "attention" || n.options.at("score").get<std::string>() != "dot" || option(n, "heads") != 1) continue;
    const int q = g.find(n.inputs.at("query").at(0));
    const TensorInfo& qi = g.tensors[static_cast<std::size_t>(q)];
    if (qi.producer < 0 || qi.view || bound_index_.count(q) || readers[q].size() != 1 || graph_output(g, qi.name)) continue;
    const Node& lin = g.nodes[static_cast<std::size_t>(qi.producer)];
    if (lin.op != "linear" || lin.weights.count("bias") || model.quantized(lin.weights.at("weight"))) continue;
    const int x = g.find(lin.inputs.at("x").at(0));
    query_folds_[i] = static_cast<std::size_t>(qi.producer);
    std::replace(readers[x].begin(), readers[x].end(), &lin, &n);
    readers[q].clear();
  }
}

// Recurrent state a concat reads, kept in that concat's columns (Luong's input feeding:
// x = [emb; h~_{t-1}], h~_t = tanh(W_c [c; h]) the next value): the state is not bound, the
// concat claims it, and its next value is placed in the same columns -- its producer (a node
// that writes views, or a linear whose activation is fused) writes it there in place. Sound
// when the concat alone reads the state and every reader of the concat's output runs before
// that producer (then no reader sees the new value early), and no concat claims the next value.
void Program::plan_states(std::map<int, std::vector<const Node*>>& readers) {
  const Graph& g = *graph_;
  auto index_of = [&](const Node* n) { return static_cast<std::size_t>(n - g.nodes.data()); };
  for (const Input& in : g.inputs) {
    if (in.next.empty() || in.next == in.name) continue;
    const int t_in = g.find(in.name), t_next = g.find(in.next);
    if (readers[t_in].size() != 1 || !column_concat(g, *readers[t_in][0])) continue;
    const Node& cat = *readers[t_in][0];
    const auto& names = cat.inputs.at("x");
    const int out = g.find(cat.outputs.at("out"));
    if (std::count(names.begin(), names.end(), in.name) != 1 || alias_.count(out) || bound_index_.count(out) ||
        graph_output(g, cat.outputs.at("out"))) {
      continue;
    }
    const TensorInfo& next = g.tensors[static_cast<std::size_t>(t_next)];
    if (next.producer < 0 || next.view) continue;
    const auto producer = static_cast<std::size_t>(next.producer);
    if (!writes_views(g.nodes[producer].op, next.slot) && !fused_activations_.count(producer)) continue;
    // Every node reading the concat's memory: its readers, and those of concats aliased to it.
    std::vector<const Node*> users = readers[out];
    for (const auto& [t, target] : alias_)
      if (target.first == static_cast<int>(index_of(&cat))) users.insert(users.end(), readers[t].begin(), readers[t].end());
    bool ok = producer > index_of(&cat);
    for (const Node* u : users) ok = ok && index_of(u) < producer && u->op != "slice" && u->op != "select" && u->op != "reshape";
    for (const Node* u : readers[t_next]) ok = ok && u->op != "concat";
    for (const auto& [a, b] : state_next_) ok = ok && b != t_next;
    if (!ok) continue;
    state_next_[t_in] = t_next;
    bound_index_.erase(t_in);
    bound_index_.erase(t_next);
  }
}


// Concat inputs their producers can write in place: written whole by an embedding, linear or
// concat node, as an attention's context or as a step-mode rnn's output, or recurrent state
// (plan_states), not bound, read by no reshape and by no op that needs a whole tensor (but a
// step-mode rnn's output, whole in its h_n: Layout::homes), claimed by the first concat that
// reads it once.
// Before that, concats whose inputs all sit side by side in another concat (a decoder's
// x = [emb; context] beside o = [s; context; emb]) become views of it: they claim nothing, the
// other concat claims their inputs, and the rnn steps reading them get W_ih's columns in the
// other concat's order. An alias whose inputs the other concat cannot all claim is dropped.
void Program::plan_in_place(std::map<int, std::vector<const Node*>>& readers) {
  const Graph& g = *graph_;

  for (std::size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& a = g.nodes[i];
    if (!column_concat(g, a)) continue;
    const std::string& out = a.outputs.at("out");
    const int at = g.find(out);
    if (bound_index_.count(at) || graph_output(g, out) || readers[at].empty()) continue;
    bool ok = true;
    for (const Node* reader : readers[at]) {
      ok = ok && step_rnn(g, *reader) && reader->inputs.at("x").at(0) == out;
      for (const auto& [slot, names] : reader->inputs)
        if (slot != "x") ok = ok && std::find(names.begin(), names.end(), out) == names.end();
    }
    const auto& names = a.inputs.at("x");
    for (const auto& name : names) ok = ok && std::count(names.begin(), names.end(), name) == 1;
    if (!ok) continue;
    for (std::size_t j = 0; j < g.nodes.size(); ++j) {
      const Node& b = g.nodes[j];
      if (j == i || !column_concat(g, b)) continue;
      const auto& bn = b.inputs.at("x");
      std::vector<std::size_t> pos;
      for (const auto& name : names) {
        if (std::count(bn.begin(), bn.end(), name) != 1) break;
        pos.push_back(static_cast<std::size_t>(std::find(bn.begin(), bn.end(), name) - bn.begin()));
      }
      if (pos.size() != names.size()) continue;
      const std::size_t first = *std::min_element(pos.begin(), pos.end());
      if (*std::max_element(pos.begin(), pos.end()) - first + 1 != names.size()) continue;
      alias_[at] = {static_cast<int>(j), first};
      break;
    }
  }
  plan_states(readers);

  for (;;) {
    std::set<std::size_t> aliased_nodes;
    for (const auto& [t, target] : alias_) aliased_nodes.insert(static_cast<std::size_t>(g.tensors[static_cast<std::size_t>(t)].producer));
    redirect_.clear();
    for (std::size_t i = 0; i < g.nodes.size(); ++i) {
      const Node& n = g.nodes[i];
      if (n.op != "concat" || aliased_nodes.count(i)) continue;
      const auto& names = n.inputs.at("x");
      for (std::size_t k = 0; k < names.size(); ++k) {
        const std::string& name = names[k];
        const int t = g.find(name);
        const TensorInfo& ti = g.tensors[static_cast<std::size_t>(t)];
        const Node* producer = ti.producer >= 0 ? &g.nodes[static_cast<std::size_t>(ti.producer)] : nullptr;
        const bool rnn_output = producer && step_rnn(g, *producer) && ti.slot == "output";
        const bool writes = state_next_.count(t) || rnn_output || (producer && !ti.view && writes_views(producer->op, ti.slot));
        bool ok = writes && !bound_index_.count(t) && !redirect_.count(t) && !alias_.count(t) &&
                  std::count(names.begin(), names.end(), name) == 1;
        for (const Node* reader : readers[t]) {
          if (reader == &n) continue;
          // (A step-mode rnn's output stays whole in its h_n too: see Layout::homes.)
          if (reader->op == "reshape" || (reader->op != "concat" && reads_whole(*reader, name) && !rnn_output)) ok = false;
        }
        if (ok) redirect_[t] = {static_cast<int>(i), k};
      }
    }
    // An alias stands only if the other concat holds all of its inputs in place.
    bool dropped = false;
    for (auto it = alias_.begin(); it != alias_.end();) {
      const Node& a = g.nodes[static_cast<std::size_t>(g.tensors[static_cast<std::size_t>(it->first)].producer)];
      bool held = true;
      for (const auto& name : a.inputs.at("x")) {
        auto r = redirect_.find(g.find(name));
        held = held && r != redirect_.end() && r->second.first == it->second.first;
      }
      if (held) {
        ++it;
      } else {
        it = alias_.erase(it);
        dropped = true;
      }
    }
    if (!dropped) break;
  }
  // A state its concat does not hold after all stays bound.
  for (auto it = state_next_.begin(); it != state_next_.end();) {
    if (redirect_.count(it->first)) {
      ++it;
      continue;
    }
    bound_index_[it->first] = static_cast<std::size_t>(graph_->tensors[static_cast<std::size_t>(it->first)].input);
    for (std::size_t k = 0; k < bound_outputs_.size(); ++k)
      if (g.find(bound_outputs_[k]) == it->second) bound_index_[it->second] = g.inputs.size() + k;
    it = state_next_.erase(it);
  }

  // The rnn readers' input columns: new column c (the other concat's order) is old column
  // x_columns[c] (the alias's own order).
  for (const auto& [t, target] : alias_) {
    const Node& a = g.nodes[static_cast<std::size_t>(g.tensors[static_cast<std::size_t>(t)].producer)];
    const Node& b = g.nodes[static_cast<std::size_t>(target.first)];
    const auto& names = a.inputs.at("x");
    std::vector<std::size_t> cols;
    for (std::size_t k = 0; k < names.size(); ++k) {
      const std::string& name = b.inputs.at("x")[target.second + k];
      std::size_t start = 0;
      for (const auto& n : names) {
        if (n == name) break;
        start += g.tensor(n).shape.back().value;
      }
      for (std::size_t c = 0; c < g.tensor(name).shape.back().value; ++c) cols.push_back(start + c);
    }
    for (const Node* reader : readers[t]) x_columns_[static_cast<std::size_t>(reader - g.nodes.data())] = cols;
  }
}

bool Program::state_in_place(std::size_t input) const {
  return state_next_.count(graph_->find(graph_->inputs.at(input).name)) != 0;
}

bool Program::aliased(std::size_t concat_node) const {
  const Node& n = graph_->nodes[concat_node];
  return n.op == "concat" && alias_.count(graph_->find(n.outputs.at("out")));
}

Program::~Program() = default;

bool Program::in_place(int tensor, std::size_t concat_node) const {
  auto it = redirect_.find(tensor);
  return it != redirect_.end() && it->second.first == static_cast<int>(concat_node);
}

int Program::binding_of(int tensor) const {
  auto it = bound_index_.find(tensor);
  return it == bound_index_.end() ? -1 : static_cast<int>(it->second);
}

std::shared_ptr<const Layout> Program::layout(std::size_t B, std::size_t S) const {
  std::lock_guard lock(mutex_);
  for (std::size_t i = 0; i < layouts_.size(); ++i) {
    if (layouts_[i].first == std::pair(B, S)) {
      auto hit = layouts_[i];
      layouts_.erase(layouts_.begin() + static_cast<std::ptrdiff_t>(i));
      layouts_.insert(layouts_.begin(), hit);
      return hit.second;
    }
  }
  auto l = build_layout(B, S);
  layouts_.insert(layouts_.begin(), {{B, S}, l});
  if (layouts_.size() > kLayoutCache) layouts_.pop_back();
  return l;
}

std::shared_ptr<const Layout> Program::build_layout(std::size_t B, std::size_t S) const {
  const Graph& g = *graph_;
  auto l = std::make_shared<Layout>();
  l->B = B;
  l->S = S;
  const std::size_t T = g.tensors.size();
  for (const Input& in : g.inputs) l->binding_sizes.push_back(element_count(eval(in.shape, B, S)));
  for (const auto& name : bound_outputs_) l->binding_sizes.push_back(element_count(eval(g.tensor(name).shape, B, S)));
  l->places.resize(T);
  std::vector<char> done(T, 0);
  std::function<const Place&(int)> resolve = [&](int t) -> const Place& {
    Place& p = l->places[static_cast<std::size_t>(t)];
    if (done[static_cast<std::size_t>(t)]) return p;
    const TensorInfo& ti = g.tensors[static_cast<std::size_t>(t)];
    const Shape shape = eval(ti.shape, B, S);
    if (const int b = binding_of(t); b >= 0) {
      p = Place{true, static_cast<std::size_t>(b), 0, shape, 0, ti.dtype};
    } else if (auto s = std::find_if(state_next_.begin(), state_next_.end(), [&](const auto& e) { return e.second == t; });
               s != state_next_.end()) {
      p = resolve(s->first);  // a state's next value: in the state's columns
      p.shape = shape;
    } else if (auto a = alias_.find(t); a != alias_.end()) {
      // The other concat's columns from the first of its inputs that this one holds (all of
      // them written there in place) on.
      const Node& cat = g.nodes[static_cast<std::size_t>(a->second.first)];
      p = resolve(g.find(cat.inputs.at("x")[a->second.second]));
      p.shape = shape;
      if (p.packed()) p.ld = 0;
    } else if (auto r = redirect_.find(t); r != redirect_.end()) {
      // Written in place: its columns (or rows, along axis 0) of the concat's output.
      const Node& cat = g.nodes[static_cast<std::size_t>(r->second.first)];
      const Place out = resolve(g.find(cat.outputs.at("out")));
      const bool rows = cat.options.at("axis").get<std::int64_t>() == 0 && out.shape.size() > 1;
      std::size_t before = 0;
      for (std::size_t k = 0; k < r->second.second; ++k) {
        const TensorInfo& prev = g.tensor(cat.inputs.at("x")[k]);
        const Shape ps = eval(prev.shape, B, S);
        before += rows ? element_count(ps) / ps.back() : ps.back();
      }
      p = out;
      p.offset += rows ? before * out.stride() : before;
      p.shape = shape;
      p.ld = out.stride();
      if (p.packed()) p.ld = 0;
    } else if (ti.view) {
      const Node& n = g.nodes[static_cast<std::size_t>(ti.producer)];
      const std::string& src = n.op == "rnn" ? n.outputs.at("h_n") : n.inputs.begin()->second.at(0);
      p = view_place(n, resolve(g.find(src)), shape);
    } else {
      p = Place{false, l->buffers.size(), 0, shape, 0, ti.dtype};
      l->buffers.push_back({shape, ti.dtype});
    }
    done[static_cast<std::size_t>(t)] = 1;
    return p;
  };
  for (std::size_t t = 0; t < T; ++t) resolve(static_cast<int>(t));
  const auto is_whole = [&](const Place& p) {
    const std::size_t base = p.bound ? l->binding_sizes[p.index] : element_count(l->buffers[p.index].first);
    return p.offset == 0 && p.packed() && element_count(p.shape) == base;
  };
  for (const auto& [t, target] : redirect_) {
    const TensorInfo& ti = g.tensors[static_cast<std::size_t>(t)];
    if (ti.producer < 0) continue;
    const Node& n = g.nodes[static_cast<std::size_t>(ti.producer)];
    if (!step_rnn(g, n) || ti.slot != "output" || !n.outputs.count("h_n")) continue;
    const Place home = view_place(n, l->places[static_cast<std::size_t>(g.find(n.outputs.at("h_n")))], l->places[static_cast<std::size_t>(t)].shape);
    if (is_whole(home)) l->homes[t] = home;
  }

  // Views copied whole for the ops that need whole tensors; the nodes' shape-dependent ops.
  Frame none;
  Exec exec;
  l->whole_copies.resize(g.nodes.size());
  l->plans.resize(g.nodes.size());
  for (std::size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& n = g.nodes[i];
    for (const auto& [slot, ts] : slots_[i].inputs) {  // (a folded attention's query: the linear's x)
      if (!needs_whole(n.op, slot)) continue;
      if (slot == "x" && step_rnn(g, n)) continue;  // Rnn::step reads x from a view
      for (const int t : ts) {
        const std::string& name = g.tensors[static_cast<std::size_t>(t)].name;
        const Place& p = l->places[static_cast<std::size_t>(t)];
        if (is_whole(p) || l->homes.count(t)) continue;
        if (p.dtype != DType::f32) {
          throw Error(ErrorCode::invalid_argument,
                      fmt::format("graph '{}', node '{}': input '{}' ('{}') is a view of integers; this op needs a whole tensor", g.name, n.name, slot, name));
        }
        l->whole_copies[i][t] = l->buffers.size();
        l->buffers.push_back({p.shape, p.dtype});
      }
    }
  }
  // Plans see the places (their shapes), nothing of a frame.
  for (std::size_t i = 0; i < g.nodes.size(); ++i) {
    const Run r(nullptr, *this, *l, none, i, exec);
    l->plans[i] = execs_[i]->plan(*ctx_, r);
  }
  return l;
}

Frame Program::allocate(const Layout& layout, const std::string& label) const {
  Frame f;
  for (std::size_t i = 0; i < layout.buffers.size(); ++i) {
    f.owned.push_back(ctx_->tensor(layout.buffers[i].first, layout.buffers[i].second, fmt::format("{} {} #{}", label, graph_->name, i)));
  }
  f.bound.resize(bindings());
  return f;
}

Exec Program::live(const std::vector<int>& wanted) const {
  const Graph& g = *graph_;
  Exec e;
  e.live_tensors.assign(g.tensors.size(), 0);
  e.live_nodes.assign(g.nodes.size(), 0);
  for (int t : wanted)
    if (t >= 0) e.live_tensors[static_cast<std::size_t>(t)] = 1;
  for (std::size_t i = g.nodes.size(); i-- > 0;) {
    const Node& n = g.nodes[i];
    bool live = false;
    for (const auto& [slot, name] : n.outputs) live = live || e.live_tensors[static_cast<std::size_t>(g.find(name))];
    if (!live) continue;
    e.live_nodes[i] = 1;
    for (const auto& [slot, names] : n.inputs)
      for (const auto& name : names) e.live_tensors[static_cast<std::size_t>(g.find(name))] = 1;
  }
  return e;
}

void Program::record(Sequence& seq, const Layout& layout, const Frame& frame, const Exec& exec) const {
  for (std::size_t i = 0; i < graph_->nodes.size(); ++i) {
    if (!exec.live_nodes.empty() && !exec.live_nodes[i]) continue;
    if (static_cast<int>(i) == exec.skip_node || static_cast<int>(i) == exec.defer_node) continue;
    for (const auto& [t, buffer] : layout.whole_copies[i]) copy(seq, layout, frame, t, frame.owned[buffer]);
    const Run r(&seq, *this, layout, frame, i, exec);
    execs_[i]->record(r);
  }
}

Tensor Program::whole(const Layout& layout, const Frame& frame, int tensor) const {
  return whole(frame, layout.places[static_cast<std::size_t>(tensor)], tensor);
}

Tensor Program::whole(const Frame& frame, const Place& p, int tensor) const {
  const Tensor& base = p.bound ? frame.bound.at(p.index) : frame.owned.at(p.index);
  if (!base.valid()) {
    throw Error(ErrorCode::state, fmt::format("graph '{}': tensor '{}' is not bound", graph_->name, graph_->tensors[static_cast<std::size_t>(tensor)].name));
  }
  if (p.offset != 0 || !p.packed() || element_count(p.shape) != base.size()) return {};
  return base.shape() == p.shape ? base : base.reshaped(p.shape);
}

MatrixView Program::matrix(const Layout& layout, const Frame& frame, int tensor) const {
  const Place& p = layout.places[static_cast<std::size_t>(tensor)];
  const Tensor& base = p.bound ? frame.bound.at(p.index) : frame.owned.at(p.index);
  return MatrixView{base, p.rows(), p.cols(), p.offset, p.ld};
}

void Program::copy(Sequence& seq, const Layout& layout, const Frame& frame, int tensor, const Tensor& dst) const {
  const Place& p = layout.places[static_cast<std::size_t>(tensor)];
  if (const Tensor w = whole(layout, frame, tensor); w.valid() && w.bytes() == dst.bytes()) {
    seq.copy(w, dst);
    return;
  }
  concat_.record(seq, {matrix(layout, frame, tensor)}, MatrixView{dst, p.rows(), p.cols(), 0, p.cols()});
}

std::vector<float> Program::read(const Sequence& seq, const Layout& layout, const Frame& frame, int tensor) const {
  const Place& p = layout.places[static_cast<std::size_t>(tensor)];
  const Tensor& base = p.bound ? frame.bound.at(p.index) : frame.owned.at(p.index);
  if (p.dtype != DType::f32) {
    throw Error(ErrorCode::invalid_argument, fmt::format("graph '{}': tensor '{}' holds integers", graph_->name, graph_->tensors[static_cast<std::size_t>(tensor)].name));
  }
  const auto all = seq.read<float>(base);
  std::vector<float> out;
  out.reserve(element_count(p.shape));
  for (std::size_t r = 0; r < p.rows(); ++r) {
    const auto first = all.begin() + static_cast<std::ptrdiff_t>(p.offset + r * p.stride());
    out.insert(out.end(), first, first + static_cast<std::ptrdiff_t>(p.cols()));
  }
  return out;
}

int Program::sole_embedding_reader(const std::string& input) const {
  int found = -1;
  for (std::size_t i = 0; i < graph_->nodes.size(); ++i) {
    for (const auto& [slot, names] : graph_->nodes[i].inputs) {
      for (const auto& name : names) {
        if (name != input) continue;
        if (graph_->nodes[i].op != "embedding" || found >= 0) return -1;
        found = static_cast<int>(i);
      }
    }
  }
  return found;
}

int Program::final_projection(int tensor) const {
  if (tensor < 0 || graph_->nodes.empty()) return -1;
  const std::size_t last = graph_->nodes.size() - 1;
  const Node& n = graph_->nodes[last];
  const std::string& name = graph_->tensors[static_cast<std::size_t>(tensor)].name;
  if (n.op != "linear" || n.outputs.at("y") != name) return -1;
  const auto* linear = dynamic_cast<const LinearExec*>(execs_[last].get());
  if (!linear || linear->fused() || linear->op().gemm().activation() || redirected(tensor)) return -1;
  for (const Node& other : graph_->nodes)
    for (const auto& [slot, names] : other.inputs)
      if (std::find(names.begin(), names.end(), name) != names.end()) return -1;
  return static_cast<int>(last);
}

const Linear& Program::projection(int node) const {
  return static_cast<const LinearExec&>(*execs_.at(static_cast<std::size_t>(node))).op();
}

MatrixView Program::input_matrix(const Layout& layout, const Frame& frame, int node, const char* slot) const {
  const Exec none;
  const Run r(nullptr, *this, layout, frame, static_cast<std::size_t>(node), none);
  return r.in_view(slot);
}

const Tensor& Program::embedding_table(int node) const {
  return static_cast<const EmbeddingExec&>(*execs_.at(static_cast<std::size_t>(node))).table();
}

}  // namespace vkrnn::graph
