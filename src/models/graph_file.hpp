#pragma once
// Private: reading model.json version 2 (docs/model-format.md) into a ModelConfig and graphs.
#include "models/config_reader.hpp"
#include "models/graph.hpp"
#include "vkrnn/model.hpp"

namespace vkrnn::graph {

// The top-level fields and the graphs, as written (nothing checked against the weights yet).
void parse_v2(const model_detail::Reader& r, const nlohmann::json& j, ModelConfig& config, ModelGraphs& graphs);
// Once the weights' shapes are known: checks the graphs, fills the sizes they imply (source and
// target vocabularies, classes, labels, max_positions) and checks the config against them.
void finish_v2(const model_detail::Reader& r, const nlohmann::json& j, ModelConfig& config, ModelGraphs& graphs,
               const WeightShapes& weights);

// A version-1 config (already validated against its architecture) as the equivalent graphs,
// naming plain roles and "ROLE.PARAM" of RNN roles as weights (graph_v1.cpp); checked.
ModelGraphs graphs_from_v1(const ModelConfig& config, const WeightShapes& weights);

}  // namespace vkrnn::graph
