#pragma once
// Private: models as graphs of op nodes over named tensors (docs/model-format.md, version 2).
//
// A Graph is what model.json's "graphs" entries say, checked: every node's op exists, every
// input is produced before it is read (nodes are put into a dependency order), shapes agree
// (with the symbolic batch B and sequence length S), views stay in bounds, and every weight has
// the shape its node implies. Version-1 files are converted into the same structures
// (graph_v1.cpp). The runtime (graph_runtime.hpp) plans and records a checked Graph.
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "vkrnn/tensor.hpp"

namespace vkrnn::graph {

// One dimension of a tensor: a fixed size, or the batch B or the sequence length S of a run.
enum class Sym : std::uint8_t { none, batch, source };
struct Dim {
  std::size_t value = 0;  // the size when sym == none
  Sym sym = Sym::none;

  static Dim of(std::size_t v) { return {v, Sym::none}; }
  static Dim batch() { return {0, Sym::batch}; }
  static Dim source() { return {0, Sym::source}; }
  bool fixed() const { return sym == Sym::none; }
  std::size_t eval(std::size_t B, std::size_t S) const { return sym == Sym::batch ? B : sym == Sym::source ? S : value; }
  friend bool operator==(const Dim&, const Dim&) = default;
};
using SymShape = std::vector<Dim>;
std::string to_string(const Dim& d);
std::string to_string(const SymShape& s);
Shape eval(const SymShape& s, std::size_t B, std::size_t S);

// Where a graph input's value comes from (docs/model-format.md, "Graphs").
enum class From : std::uint8_t { tokens, lengths, token, encoder, zeros };
const char* to_string(From f);

struct Input {
  std::string name;
  From from = From::zeros;
  std::string source;  // From::encoder: the encoder tensor
  std::string next;    // decoder_step: the tensor that replaces this input after each step
  DType dtype = DType::f32;
  bool dtype_given = false;  // model.json declared the dtype (checked against the source)
  SymShape shape;
};

struct Node {
  std::string name, op;
  std::map<std::string, std::vector<std::string>> inputs;  // slot -> tensor names
  std::map<std::string, std::string> outputs;              // slot -> tensor name
  nlohmann::json options = nlohmann::json::object();
  std::map<std::string, std::string> weights;  // slot -> weight name
  // Filled when the graph is checked: each weight slot's expected shape.
  std::map<std::string, Shape> weight_shapes;
};

struct TensorInfo {
  std::string name;
  DType dtype = DType::f32;
  SymShape shape;
  int producer = -1;  // node index; -1 for a graph input
  int input = -1;     // graph input index, or -1
  std::string slot;   // the producer's output slot
  bool view = false;  // shares the memory of one of the producer's inputs
};

struct Graph {
  std::string name;
  std::vector<Input> inputs;
  std::vector<Node> nodes;  // in execution order once checked
  std::map<std::string, std::string> outputs;  // role -> tensor
  // Filled when checked:
  std::vector<TensorInfo> tensors;
  std::map<std::string, int> index;

  int find(const std::string& tensor) const {
    auto it = index.find(tensor);
    return it == index.end() ? -1 : it->second;
  }
  const TensorInfo& tensor(const std::string& name) const { return tensors.at(static_cast<std::size_t>(index.at(name))); }
  // The tensor playing `role`, or "" when the graph has no such output.
  std::string output(const std::string& role) const {
    auto it = outputs.find(role);
    return it == outputs.end() ? std::string{} : it->second;
  }
  int input_index(const std::string& name) const;
  bool empty() const { return nodes.empty() && inputs.empty(); }
};

// A model's graphs: encoder + decoder_step (seq2seq) or forward (classifier); the others empty.
struct ModelGraphs {
  Graph encoder, decoder_step, forward;
};

// A weight a graph may read: its shape (the data stays with the model file).
using WeightShapes = std::function<const Shape*(const std::string& name)>;

// Checks a graph and fills its tensor table, the nodes' expected weight shapes and their
// order. `encoder`: the checked encoder graph (decoder_step inputs may read its tensors).
// Errors: Error(format) "<origin>: graph 'NAME', node 'NODE' (OP): what".
void check(Graph& g, const std::string& origin, const Graph* encoder, const WeightShapes& weights);

// Where a checked graph's tensor comes from, for error messages: "the decoder_step graph's node
// 'out' (linear; weights output.weight, output.bias)", or the graph input that holds it.
std::string producer_of(const Graph& g, int tensor);

// Every op the format knows.
bool known_op(const std::string& op);
std::vector<std::string> known_ops();
// Whether an op writes an output slot into a strided matrix in place (embedding, linear,
// concat, an attention's context).
bool writes_views(const std::string& op, const std::string& slot);
// Whether an op's input slot must be a whole tensor (every op but linear, concat and the views,
// and an attention's query; an embedding's table is a weight).
bool needs_whole(const std::string& op, const std::string& slot);

}  // namespace vkrnn::graph
