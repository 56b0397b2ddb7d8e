#pragma once
// Whole models trained in PyTorch (docs/model-format.md): a directory holding model.json (the
// config) and model.safetensors (the weights), or the same two byte buffers in memory.
//
// Version 2 describes the model as graphs of op nodes over named tensors (an encoder and a
// decoder step, or a classifier's forward pass); version 1 names one of four fixed
// architectures and is converted to the equivalent graphs on load. Seq2Seq and Classifier run
// either.
//
// ModelFile::load() reads and validates both files strictly before anything runs: the format
// string and version, every field, the vocabularies and special tokens, the graphs (every op,
// option and slot known; every tensor produced before it is read, no cycle; every node's
// shapes, views and weights consistent) or the version-1 tensor map, and the weights (exactly
// the tensors the model names, each with the shape its node or role implies; F32, F16 and BF16
// are converted to f32). Any violation throws vkrnn::Error naming the file, the field, graph,
// node or tensor, and what was expected: ErrorCode::io (missing / unreadable file),
// ErrorCode::format (everything else).
//
// Tokenizer turns text into token ids and back with a model's vocabulary (docs/model-format.md,
// "Tokenisation").
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "vkrnn/attention.hpp"
#include "vkrnn/embedding.hpp"
#include "vkrnn/export.h"
#include "vkrnn/linear.hpp"
#include "vkrnn/rnn.hpp"
#include "vkrnn/safetensors.hpp"
#include "vkrnn/tensor.hpp"

namespace vkrnn {

// The most ModelFile::load accepts (SECURITY.md): far beyond any attention-RNN model vkrnn
// runs, and small enough that a hostile directory costs little before it is refused. Beyond a
// limit: Error(format) naming the file, the field and the limit.
namespace model_limits {
inline constexpr std::size_t max_config_bytes = 16u << 20;     // model.json (a 1M-word vocabulary fits)
inline constexpr std::size_t max_config_values = 2u << 20;     // JSON values in model.json
inline constexpr std::uint64_t max_dimension = 1ull << 26;     // embedding_dim, hidden, attention_dim, heads
inline constexpr std::size_t max_vocab = 1u << 20;             // vocabulary sizes, num_classes
inline constexpr std::size_t max_layers = 64;                  // RNN layers
inline constexpr std::size_t max_decode_length = 4096;         // max_decode_length (steps)
inline constexpr std::size_t max_positions = 1u << 20;         // max_positions (self_attention_rnn)
inline constexpr std::uint64_t max_weight_bytes = 4ull << 30;  // every weight, as f32
}  // namespace model_limits

// graph: a version-2 model that names no known architecture (a user's own module).
enum class Architecture { bahdanau_seq2seq, luong_seq2seq, rnn_attention_classifier, self_attention_rnn, graph };
VKRNN_API const char* to_string(Architecture architecture) noexcept;  // the model.json spelling

// What a model does: an encoder and a decoder step (Seq2Seq), or one forward pass (Classifier).
enum class ModelTask { seq2seq, classifier };
VKRNN_API const char* to_string(ModelTask task) noexcept;

enum class TokenizerType { character, word };
enum class OutputActivation { softmax, sigmoid };
enum class PoolingScore { tanh, linear };
enum class Pooling { last, attention };

struct SpecialTokens {
  std::int32_t pad = -1, bos = -1, eos = -1, unk = -1;  // -1: the model has none
};

struct TokenizerConfig {
  TokenizerType type = TokenizerType::word;
  bool lowercase = false;
  bool src_append_eos = false;
};

// A tensor's values on the host, row-major, with its shape (named outputs of a model's graphs).
struct HostTensor {
  Shape shape;
  std::vector<float> values;
};

// model.json, validated. Fields a model does not use are left at their defaults. Version 2
// fills the task, the sizes (given or implied by the graphs), the special tokens, the decode
// settings and whatever optional vocabularies, labels and tokenizer the file has; the
// architecture-specific sizes (cell, hidden, ...) are version 1's.
struct ModelConfig {
  std::string directory;     // the model directory as given to load() ("" from memory)
  std::string config_path;   // directory/model.json (or the origin given to load_from_memory)
  std::string weights_path;  // directory/<weights>
  int version = 0;
  ModelTask task = ModelTask::seq2seq;
  Architecture architecture = Architecture::bahdanau_seq2seq;
  CellType cell = CellType::gru;
  std::size_t embedding_dim = 0;
  SpecialTokens special;
  TokenizerConfig tokenizer;
  std::string weights_dtype;  // what the exporter wrote ("F32", "F16", "BF16"; "I8": int8 dense)

  // Seq2seq (bahdanau_seq2seq, luong_seq2seq)
  std::size_t src_vocab_size = 0, tgt_vocab_size = 0;
  std::vector<std::string> src_vocab, tgt_vocab;  // version 2: may be empty (ids in, ids out)
  Score score = Score::additive;  // additive (Bahdanau), dot / general / concat (Luong)
  std::size_t attention_dim = 0;  // additive / concat / tanh pooling; 0 when absent
  bool input_feeding = false;
  std::size_t max_decode_length = 0;
  std::size_t beam_width = 0;
  double length_alpha = 0.0;
  // Bahdanau
  std::size_t encoder_hidden = 0, encoder_layers = 0, decoder_hidden = 0;
  // Luong (encoder and decoder) and classifiers (the RNN)
  std::size_t hidden = 0, layers = 0;

  // Classifiers (rnn_attention_classifier, self_attention_rnn)
  std::size_t vocab_size = 0;
  std::vector<std::string> vocab;
  bool bidirectional = false;
  std::size_t num_classes = 0;
  std::vector<std::string> labels;
  OutputActivation output_activation = OutputActivation::softmax;
  PoolingScore pooling_score = PoolingScore::tanh;
  // self_attention_rnn
  std::size_t heads = 0;
  bool attention_projections = false, positional_encoding = false, residual = false;
  Pooling pooling = Pooling::attention;  // the classifier always pools with attention
  std::size_t max_positions = 0;  // 0: no limit (version 2 without one)

  // "tensors": role -> tensor name; RNN roles -> {torch parameter name: tensor name}.
  std::map<std::string, std::string> tensors;
  std::map<std::string, std::map<std::string, std::string>> rnn_tensors;
};

namespace graph {
struct ModelGraphs;
}

// A loaded, validated model: the config, the graphs and every weight as f32.
class VKRNN_API ModelFile {
 public:
  // Reads model_dir/model.json and the weights file it names.
  static ModelFile load(const std::string& model_dir);
  // The same from memory: model.json's text and the safetensors file's bytes (the "weights"
  // field is still checked, but not opened). `origin` names the model in error messages.
  static ModelFile load_from_memory(std::string_view config_json, std::span<const std::byte> weights,
                                    const std::string& origin = "<memory>");

  const ModelConfig& config() const;
  // The weights of a plain role (version 1, e.g. "bridge.weight") or a tensor of the weights
  // file (version 2, by its name), row-major, and its shape. Error(not_found) naming the role
  // and the roles the model has.
  const std::vector<float>& tensor(const std::string& role) const;
  const Shape& shape(const std::string& role) const;
  bool has(const std::string& role) const;
  // An RNN role ("encoder", "decoder", "rnn"): {torch parameter name: data}, as Rnn::load takes.
  const std::map<std::string, std::vector<float>>& rnn(const std::string& role) const;
  std::vector<std::string> roles() const;  // plain roles (version 2: tensor names), sorted

  // The model as checked graphs (private to vkrnn's model runtime; an opaque type here).
  const graph::ModelGraphs& graphs() const;
  // A weight a graph names: a plain role, a tensor (version 2) or "ROLE.PARAM" of a version-1
  // RNN role; nullptr when there is none.
  const std::vector<float>* weight(const std::string& name) const;
  // A dense weight the file stores as int8 (version 2: safetensors I8 "<name>" [N, K] with F32
  // "<name>_scale" [N], W = q * scale per row); nullptr for every other weight. weight() gives
  // the same weight dequantized.
  using Quantized = QuantizedRows;  // q [N, K] row-major, scales [N]
  const Quantized* quantized(const std::string& name) const;

  struct Data;

 private:
  explicit ModelFile(std::shared_ptr<const Data> data);
  std::shared_ptr<const Data> data_;
};

// What text -> ids does with a character (char tokenizer) or word (word tokenizer) that is not
// in the vocabulary.
enum class UnknownTokens {
  error,       // Error(invalid_argument) naming the character or word and its position
  map_to_unk,  // it becomes the unk token, as in the PyTorch reference
};

// Options of the text-in, text-out calls (Seq2Seq::translate).
struct TextOptions {
  // error by default: a model reading a character it never saw gives a confident guess, which a
  // caller would take for an answer.
  UnknownTokens unknown = UnknownTokens::error;
};

// Text <-> token ids with one vocabulary (docs/model-format.md, "Tokenisation").
//  - character: every Unicode code point of the (UTF-8) text is one token.
//  - word: tokens are the runs of non-whitespace (Python's str.split()).
// With lowercase, the text is lowercased first: ASCII, Latin-1, Latin Extended-A, Greek and
// Cyrillic capitals are mapped (other scripts are left as they are; Python's str.lower() covers
// all of Unicode). A token missing from the vocabulary becomes unk (see encode()). Invalid UTF-8:
// Error(invalid_argument) naming the byte offset.
class VKRNN_API Tokenizer {
 public:
  Tokenizer() = default;
  Tokenizer(std::vector<std::string> vocab, const TokenizerConfig& config, const SpecialTokens& special);

  // Ids of text; with append_eos (seq2seq sources: config.src_append_eos) EOS is appended.
  // A token missing from the vocabulary becomes unk, or with UnknownTokens::error -- or when
  // the model has no unk token -- is Error(invalid_argument) naming it (escaped), its code point
  // (char) and its 1-based character position in the text.
  std::vector<std::int32_t> encode(std::string_view text, bool append_eos = false,
                                   UnknownTokens unknown = UnknownTokens::map_to_unk) const;
  // Text of ids: characters concatenated (character) or tokens joined by single spaces (word),
  // stopping at the first EOS; special tokens (pad, bos, eos, unk) are not printed. An id
  // outside [0, vocab) is Error(invalid_argument) naming it and its position.
  std::string decode(std::span<const std::int32_t> ids) const;

  std::size_t size() const { return vocab_.size(); }
  const std::vector<std::string>& vocab() const { return vocab_; }
  const SpecialTokens& special() const { return special_; }
  std::int32_t id(std::string_view token) const;  // unk (or -1 without unk) when absent

 private:
  std::vector<std::string> vocab_;
  std::unordered_map<std::string, std::int32_t> index_;
  TokenizerConfig config_;
  SpecialTokens special_;
};

}  // namespace vkrnn
