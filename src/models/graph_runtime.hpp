#pragma once
// Private: the runtime of every graph (docs/model-format.md, version 2).
//
//   Program  one checked Graph with its ops built and weights on the GPU (once per model)
//   Layout   where every tensor lives for one (batch B, sequence length S): owned buffers,
//            external bindings (graph inputs, recurrent state), views (offset + row stride),
//            concat inputs written in place, views copied whole for ops that need it, and the
//            shape-dependent op objects (attention, self-attention, softmax). Cached per shape.
//   Frame    one execution's memory: the owned buffers and the bound tensors
//
// Program::record() records the live nodes of a graph into the caller's Sequence; the caller
// (Seq2Seq, Classifier) binds inputs and recurrent state and runs the decode loop around it.
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "models/graph.hpp"
#include "vkrnn/concat.hpp"
#include "vkrnn/context.hpp"
#include "vkrnn/linear.hpp"
#include "vkrnn/model.hpp"
#include "vkrnn/options.hpp"
#include "vkrnn/sequence.hpp"

namespace vkrnn::graph {

// Where a tensor lives in one execution: a base tensor (owned buffer or binding), an element
// offset, its shape, and the stride between rows (of the last dimension).
struct Place {
  bool bound = false;     // base is a binding (else an owned buffer)
  std::size_t index = 0;  // which one
  std::size_t offset = 0;
  Shape shape;
  std::size_t ld = 0;  // 0: rows are packed
  DType dtype = DType::f32;

  std::size_t cols() const { return shape.empty() ? 1 : shape.back(); }
  std::size_t rows() const { return element_count(shape) / cols(); }
  std::size_t stride() const { return ld ? ld : cols(); }
  bool packed() const { return rows() <= 1 || stride() == cols(); }
};

class NodePlan {
 public:
  virtual ~NodePlan() = default;
};

struct Layout {
  std::size_t B = 0, S = 0;
  std::vector<Place> places;                     // per tensor
  std::vector<std::pair<Shape, DType>> buffers;  // owned buffers
  std::vector<std::size_t> binding_sizes;        // elements of each binding
  // Per node: views of its inputs copied whole before it runs (tensor -> owned buffer).
  std::vector<std::map<int, std::size_t>> whole_copies;
  // A step-mode rnn's output written into a concat's columns is also the top layer of its h_n:
  // ops that need a whole tensor read it there (tensor -> that place) when that one is whole.
  std::map<int, Place> homes;
  std::vector<std::unique_ptr<NodePlan>> plans;  // per node, may be null
};

struct Frame {
  std::vector<Tensor> owned;
  std::vector<Tensor> bound;
};

// What one record() call computes.
struct Exec {
  // Per node: record it (empty: every node). Optional outputs (attention weights, h_n) are
  // computed when their tensor is live.
  std::vector<char> live_nodes, live_tensors;
  std::span<const std::int32_t> host_lengths;  // the batch's lengths (the 'lengths' input)
  int skip_node = -1;                          // a node whose output is already in place
  int defer_node = -1;                         // a node the caller records itself, after record()
};

class NodeExec;

class Program {
 public:
  // dense: the options of linear layers (fp16 storage allowed); other: every other op (fp32).
  // bound_outputs: tensors the caller binds like inputs (recurrent state written in place).
  Program(Context& ctx, const Graph& graph, const ModelFile& model, const OpOptions& dense, const OpOptions& other,
          std::vector<std::string> bound_outputs = {});
  Program(const Program&) = delete;
  Program& operator=(const Program&) = delete;
  ~Program();

  const Graph& graph() const { return *graph_; }
  Context& context() const { return *ctx_; }
  // Bindings: the graph's inputs, then the bound outputs, in order.
  std::size_t bindings() const { return graph_->inputs.size() + bound_outputs_.size(); }
  int binding_of(int tensor) const;  // -1 when the tensor is not bound
  // Whether the planner has a concat input written straight into the concat's output.
  bool in_place(int tensor, std::size_t concat_node) const;
  // Whether a tensor is written straight into a concat's output (by whichever concat).
  bool redirected(int tensor) const { return redirect_.count(tensor) != 0; }
  // Whether a concat node records nothing: its output is a view of another concat's output.
  bool aliased(std::size_t concat_node) const;
  // Whether recurrent state input `input` (graph input index) lives in its concat's columns,
  // where the node producing its next value writes that value in place: nothing is bound or
  // copied for it per step; its caller initialises (and reorders) it through matrix().
  bool state_in_place(std::size_t input) const;
  // Callers asking for tensor `name` (index `tensor`) by name: Error(invalid_argument) when the
  // planner does not compute it -- an activation's input that its linear applies in its store,
  // a query projection its attention folds in -- naming what to ask for instead; `where`
  // prefixes the message ("Seq2Seq::start").
  void require_computed(int tensor, const std::string& where) const;
  // Whether a tensor can be bound as an output (written whole by its node, not a view).
  static bool bindable_output(const Graph& g, const std::string& tensor);

  std::shared_ptr<const Layout> layout(std::size_t B, std::size_t S) const;
  Frame allocate(const Layout& layout, const std::string& label) const;

  // Liveness: the nodes and tensors needed for `wanted` tensors.
  Exec live(const std::vector<int>& wanted) const;
  void record(Sequence& seq, const Layout& layout, const Frame& frame, const Exec& exec) const;

  // A tensor of a frame: the whole base tensor reshaped when the place is all of it, else empty.
  Tensor whole(const Layout& layout, const Frame& frame, int tensor) const;
  Tensor whole(const Frame& frame, const Place& p, int tensor) const;
  MatrixView matrix(const Layout& layout, const Frame& frame, int tensor) const;
  // Records a copy of a tensor (any place) into the f32 tensor dst (same element count).
  void copy(Sequence& seq, const Layout& layout, const Frame& frame, int tensor, const Tensor& dst) const;
  // After the sequence is done: a tensor's values (the place's elements, row by row).
  std::vector<float> read(const Sequence& seq, const Layout& layout, const Frame& frame, int tensor) const;

  // The embedding node that alone reads graph input `input` (decode loops write its output for
  // the next step themselves), or -1; and its table.
  int sole_embedding_reader(const std::string& input) const;
  const Tensor& embedding_table(int node) const;
  // The linear node that makes `tensor` when a caller may record it after everything else,
  // fused with what reads its output (Argmax::record with a projection): it applies no
  // activation, it is the last node, no node reads its output, and its input needs no whole
  // copy in any layout. -1 otherwise.
  int final_projection(int tensor) const;
  const Linear& projection(int node) const;
  // A node's input `slot` as the node reads it.
  MatrixView input_matrix(const Layout& layout, const Frame& frame, int node, const char* slot) const;

 private:
  Context* ctx_;
  const Graph* graph_;
  std::vector<std::string> bound_outputs_;
  std::map<int, std::size_t> bound_index_;            // tensor -> binding
  std::map<int, std::pair<int, std::size_t>> redirect_;  // tensor -> (concat node, its index there)
  // A concat whose inputs all sit, in some order and side by side, in another concat's output:
  // its output is those columns (tensor -> (the other concat node, its first input there)), and
  // the step-mode rnn nodes reading it take their input weights' columns in that order.
  std::map<int, std::pair<int, std::size_t>> alias_;
  std::map<std::size_t, std::vector<std::size_t>> x_columns_;  // rnn node -> old column of each new one
  // Recurrent state kept in a concat's columns: input tensor -> its next tensor (placed there too).
  std::map<int, int> state_next_;
  std::set<std::size_t> fused_activations_;  // activation nodes their linear producer applies
  std::map<std::size_t, std::size_t> query_folds_;  // attention node -> the linear it folds
  void plan_fusions(std::map<int, std::vector<const Node*>>& readers);
  void plan_query_folds(std::map<int, std::vector<const Node*>>& readers, const ModelFile& model);
  void plan_in_place(std::map<int, std::vector<const Node*>>& readers);  // readers: per tensor
  void plan_states(std::map<int, std::vector<const Node*>>& readers);
  std::vector<std::unique_ptr<NodeExec>> execs_;
  // Per node: its slots' tensor indices (looked up per record without allocating).
  struct NodeSlots {
    std::vector<std::pair<std::string, std::vector<int>>> inputs, outputs;
    const std::vector<int>* find(const char* slot, bool output) const {
      for (const auto& [name, ts] : output ? outputs : inputs)
        if (name == slot) return &ts;
      return nullptr;
    }
  };
  std::vector<NodeSlots> slots_;
  Concat concat_;
  mutable std::mutex mutex_;
  mutable std::vector<std::pair<std::pair<std::size_t, std::size_t>, std::shared_ptr<const Layout>>> layouts_;  // recent first

  std::shared_ptr<const Layout> build_layout(std::size_t B, std::size_t S) const;
  friend class Run;
};

}  // namespace vkrnn::graph
