#pragma once
// Classifier: sequence classifiers trained in PyTorch (docs/model-format.md: any version-2
// model with a forward graph -- e.g. a user's own module exported by tools/export_torch.py --
// and the version-1 "rnn_attention_classifier" and "self_attention_rnn"), run on the GPU in one
// submission. The version-1 architectures:
//
//   rnn_attention_classifier: embedding -> RNN (L layers, 1 or 2 directions) -> attention
//                             pooling over the valid steps -> dense -> softmax | sigmoid
//   self_attention_rnn:       embedding (+ positional encoding) -> multi-head self-attention
//                             (+ projections, + residual) -> RNN -> last state | attention
//                             pooling -> dense -> softmax | sigmoid
//
//   Classifier model = Classifier::load(ctx, "samples/sentiment/model");
//   ClassifyResult r = model.classify({model.encode_text("a great film")});
//   std::string label = model.config().labels[r.predicted[0]];
//
// Inputs are checked on the host (every sequence non-empty, ids in [0, V), at most
// max_positions steps when the model has a limit): Error(invalid_argument) naming the row, the
// position, the id and the vocabulary size.
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "vkrnn/context.hpp"
#include "vkrnn/export.h"
#include "vkrnn/model.hpp"
#include "vkrnn/options.hpp"
#include "vkrnn/sequence.hpp"

namespace vkrnn {

struct ClassifyOptions {
  bool return_pooling = false;         // ClassifyResult::pooling (attention pooling only)
  bool return_self_attention = false;  // ClassifyResult::self_attention (self_attention_rnn only)
  bool return_rnn = false;             // ClassifyResult::rnn_inputs / rnn_outputs
  // Tensors of the forward graph to return, by name (ClassifyResult::outputs).
  std::vector<std::string> outputs;
};

struct ClassifyResult {
  std::size_t batch = 0, classes = 0;
  std::size_t steps = 0;                // T: the longest input of the batch
  std::vector<float> logits;            // [batch, classes]
  std::vector<float> probs;             // [batch, classes]: softmax, or sigmoid per class
  // softmax: the most probable class; sigmoid: with one class, 1 when p >= 0.5 else 0; with
  // several (multi-label), the most probable one.
  std::vector<std::int32_t> predicted;  // [batch]
  std::vector<float> pooling;           // [batch, T] attention-pooling weights (0 past a length)
  std::vector<float> self_attention;    // [batch, heads, T, T] (rows and columns past a length: 0)
  // The RNN's input ([batch, T, E]: the embeddings, or self_attention_rnn's y = x + attention)
  // and output ([batch, T, D*H]), both zero past a length.
  std::vector<float> rnn_inputs, rnn_outputs;
  std::map<std::string, HostTensor> outputs;  // ClassifyOptions::outputs
  SequenceStats stats;
};

class VKRNN_API Classifier {
 public:
  // OpOptions::fp16_storage stores the dense layers' weights as float16, weight_storage the
  // dense and recurrent layers' (see Seq2Seq::load, also for how the weights are uploaded).
  static Classifier load(Context& ctx, const std::string& model_dir, const OpOptions& options = {});
  // From memory: model.json's text and the safetensors bytes (ModelFile::load_from_memory).
  static Classifier load_from_memory(Context& ctx, std::string_view config_json, std::span<const std::byte> weights,
                                     const OpOptions& options = {});
  Classifier(Context& ctx, const ModelFile& model, const OpOptions& options = {});
  Classifier(Classifier&&) noexcept;
  Classifier& operator=(Classifier&&) noexcept;
  ~Classifier();

  const ModelConfig& config() const;
  const Tokenizer& tokenizer() const;
  // Without a vocabulary (a version-2 model used ids in) encode_text and classify_text throw
  // Error(invalid_argument).
  std::vector<std::int32_t> encode_text(std::string_view text) const;

  ClassifyResult classify(const std::vector<std::vector<std::int32_t>>& tokens,
                          const ClassifyOptions& options = {}) const;
  // Text in, labels out: the predicted class's label per text (a one-class sigmoid model gives
  // its label, or "not <label>" when p < 0.5).
  std::vector<std::string> classify_text(const std::vector<std::string>& texts) const;
  // The label classify_text gives for a ClassifyResult::predicted value.
  std::string label(std::int32_t predicted) const;

  // classify() without the wait, for an app that owns the submission (Sequence::submit, or
  // record_into its frame's command buffer): record_classify records the inputs' uploads, the
  // forward graph and the results' downloads into seq (several classifications may share one
  // recording); read_classify returns what classify() would have, once seq is done. Inputs are
  // checked as classify() checks them, before anything is recorded.
  class VKRNN_API Classification {
   public:
    Classification() = default;
    std::size_t batch() const;
    struct Impl;
    std::shared_ptr<Impl> impl;
  };
  Classification record_classify(Sequence& seq, const std::vector<std::vector<std::int32_t>>& tokens,
                                 const ClassifyOptions& options = {}) const;
  // Error(state) before seq has finished; Error(non_finite) as classify()'s.
  ClassifyResult read_classify(const Sequence& seq, const Classification& classification) const;

  // Classifies a dummy batch of every batch size x length in options (greedy / beam ignored),
  // so the first real classify() of those shapes does not build pipelines.
  WarmUpTask warm_up(const WarmUpOptions& options = {}) const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace vkrnn
