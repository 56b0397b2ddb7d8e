#pragma once
// Seq2Seq: attention encoder-decoder models trained in PyTorch (docs/model-format.md: any
// version-2 model with an encoder and a decoder_step graph -- e.g. a user's own module exported
// by tools/export_torch.py -- and the version-1 "bahdanau_seq2seq", "luong_seq2seq"), run
// entirely on the GPU.
//
//   Seq2Seq model = Seq2Seq::load(ctx, "samples/dates/model");
//   auto src = model.encode_text("21st of November 2026");
//   DecodeResult r = model.greedy({src});
//   std::string out = model.decode_text(r.row(0));
//
// greedy() records the whole job -- source upload, the encoder graph, and max_len runs of the
// decoder_step graph (embedding of the previous token, attention, recurrent step, output
// projection) each followed by the argmax -- into ONE Sequence: one submission, no host round trip per token. The
// decision to stop at EOS is made on the GPU: the argmax kernel keeps a per-row "finished" flag
// (finished rows emit pad), and the steps are recorded inside a Sequence gate that a check after
// every step closes once all rows have finished, so the remaining steps' dispatches run no
// workgroups (each still costs the driver's empty-dispatch overhead). Rows that finish while
// others go on still compute until the whole batch is done (their results are discarded).
//
// Incremental decoding (games spread the work over frames): encode() once, start() a decoder
// state, then step() one token at a time -- or record_step() into the app's own Sequence,
// submit it, and read_step() once it is done. The steps are the same kernels as greedy(), so
// the results are identical.
//
// Inputs are checked on the host: every source non-empty, every id in [0, V_src); errors are
// Error(invalid_argument) naming the row, the position, the id and the vocabulary size.
// max_len is at most 4096 (Error(out_of_range)).
//
// Threads: a Seq2Seq records through op objects with scratch buffers; use one from one thread
// at a time (decodes recorded into different Sequences may be in flight together).
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "vkrnn/context.hpp"
#include "vkrnn/logits_processor.hpp"
#include "vkrnn/export.h"
#include "vkrnn/model.hpp"
#include "vkrnn/options.hpp"
#include "vkrnn/sequence.hpp"

namespace vkrnn {

struct StepResult;

struct DecodeOptions {
  std::size_t max_len = 0;        // decoder steps (EOS included); 0: the model's max_decode_length
  bool stop_at_eos = true;        // false: exactly max_len steps, every row keeps its own argmax
  bool return_logits = false;     // DecodeResult::logits
  bool return_attention = false;  // DecodeResult::attention
  // Tensors of the decoder_step graph to return per step, by name (DecodeResult::outputs).
  std::vector<std::string> outputs;
  // Logits processing, sampling and target prefixes, on the GPU between the output projection
  // and the choice of token (docs/runtime.md, "Decoding options"; CTranslate2's names and
  // rules). The defaults record nothing. Scores (and return_logits) are of the processed logits.
  double repetition_penalty = 1.0;        // > 0; 1: off
  std::size_t no_repeat_ngram_size = 0;   // 0: off
  std::size_t min_length = 0;             // tokens before EOS may be chosen (EOS excluded)
  bool disable_unk = false;               // never choose the model's unk token
  std::vector<std::int32_t> suppress_tokens;  // ids never chosen
  // Token sequences never generated (CTranslate2's suppress_sequences): the last token of each
  // is masked where the others end the row's generated tokens; one-token sequences always.
  std::vector<std::vector<std::int32_t>> suppress_sequences;
  std::size_t sampling_topk = 1;          // 1: greedy (argmax); 0: sample the whole vocabulary
  double sampling_topp = 1.0;             // nucleus, (0, 1]; used when sampling
  double sampling_temperature = 1.0;      // > 0; used when sampling
  std::uint64_t seed = 0;                 // Philox key: the same seed, the same tokens
  // Forced first tokens per row (one vector per source row, or none): row b emits
  // target_prefix[b] first, then decodes on. Longer than max_len: Error(out_of_range).
  std::vector<std::vector<std::int32_t>> target_prefix;
  // Streaming (greedy() and sampling; CTranslate2's `callback`): when set, greedy() submits the
  // decode in pieces of stream_steps steps, two in flight, and calls on_step on the calling
  // thread with each step's tokens, scores and finished flags (StepResult; its logits,
  // attention and outputs stay empty) as soon as the GPU has produced that step, while it
  // computes the next ones. Returning false ends the decode after that step (the DecodeResult
  // then holds the steps handed out); it also ends once every row has finished. The tokens
  // are those of the one-submission decode.
  std::function<bool(const StepResult&)> on_step;
  std::size_t stream_steps = 1;  // steps per submission while streaming (0: 1)
};

struct VKRNN_API DecodeResult {
  std::size_t batch = 0;
  std::size_t steps = 0;          // columns: <= max_len (stop_at_eos: the longest row's length)
  std::size_t steps_run = 0;      // decoder steps the GPU computed (stop_at_eos: up to the step
                                  // after which every row had finished; the rest ran empty)
  std::size_t source_length = 0;  // S: the longest source of the batch
  std::size_t vocab = 0;          // V_tgt
  std::vector<std::int32_t> tokens;   // [batch, steps]; pad after a row's EOS
  std::vector<std::int32_t> lengths;  // [batch]: tokens produced, EOS included
  std::vector<float> scores;          // [batch, steps]: log_softmax of each chosen token (0 after EOS)
  std::vector<float> logits;          // [batch, steps, vocab] with return_logits (0 after EOS)
  std::vector<float> attention;       // [batch, steps, source_length] with return_attention
  // DecodeOptions::outputs: each tensor at every step, [steps, its shape...] (the values a
  // finished row computes after its EOS are not meaningful).
  std::map<std::string, HostTensor> outputs;
  SequenceStats stats;                // of the decode's single Sequence

  // The first lengths[b] tokens of row b (EOS included when the row produced it).
  std::vector<std::int32_t> row(std::size_t b) const;
};

// One decoder step's results, per batch row.
struct StepResult {
  std::size_t step = 0;               // 0 for the first token after BOS
  std::vector<std::int32_t> tokens;   // [B]: the chosen token (pad for rows already finished)
  std::vector<float> scores;          // [B]: its log-probability (0 for finished rows)
  std::vector<std::uint8_t> finished; // [B]: 1 once the row has emitted EOS (stop_at_eos only)
  bool all_finished = false;
  std::vector<float> logits;          // [B, V_tgt] when the state returns logits
  std::vector<float> attention;       // [B, S] when the state returns attention
  std::map<std::string, HostTensor> outputs;  // DecodeOptions::outputs of this step, [1, shape...]
};

// What a whole decode cost on the GPU.
struct DecodeStats {
  SequenceStats sequence;      // of the decode's single Sequence
  std::size_t steps_run = 0;   // decoder steps computed before the GPU stopped the loop
};

struct BeamOptions {
  std::size_t beam_width = 0;  // K; 0: the model's beam.width (at most 63)
  double length_alpha = -1.0;  // < 0: the model's beam.length_alpha
  std::size_t max_len = 0;     // 0: the model's max_decode_length
  bool return_logits = false;     // Hypothesis::logits
  bool return_attention = false;  // Hypothesis::attention
  DecodeStats* stats = nullptr;   // when set, receives the decode's statistics
  bool return_token_scores = false;  // Hypothesis::token_scores (two copies per step)
  // Logits processing as DecodeOptions' (docs/runtime.md, "Decoding options"), per hypothesis:
  // its histories follow it to the row it continues in. Candidates are ranked by the
  // log-softmax of the processed logits.
  double repetition_penalty = 1.0;
  std::size_t no_repeat_ngram_size = 0;
  std::size_t min_length = 0;
  bool disable_unk = false;
  std::vector<std::int32_t> suppress_tokens;
  std::vector<std::vector<std::int32_t>> suppress_sequences;
  // A source row's search stops once max(1, round(K * patience)) hypotheses have finished (1:
  // K, the plain rule; Kasai et al. 2022, CTranslate2's patience); the K best are returned.
  // Finite and > 0.
  double patience = 1.0;
  // Coverage penalty beta (Wu et al. 2016), applied when the finished hypotheses are ranked:
  // norm_score += beta * sum_j log(min(c_j, 1)), c_j the attention weight the hypothesis put on
  // source position j summed over its steps (EOS's included; positions with c_j = 0 skipped).
  // Needs the model's attention output. 0: off.
  double coverage_penalty = 0.0;
  // Forced first tokens per source row (one vector per row, or none), as DecodeOptions': every
  // hypothesis of row b starts with target_prefix[b] and its score counts their
  // log-probabilities (CTranslate2's target_prefix); the beam opens after the prefix. Longer
  // than max_len: Error(out_of_range).
  std::vector<std::vector<std::int32_t>> target_prefix;
};

// One beam-search result (docs/model-format.md, "Beam search").
struct Hypothesis {
  std::vector<std::int32_t> tokens;  // generated ids, EOS included when finished (no BOS)
  float score = 0.0f;                // sum of the log-softmax of each chosen token (fp32)
  double norm_score = 0.0;           // score / len(tokens)^alpha (+ the coverage penalty)
  bool finished = false;             // ended with EOS (else it ran into max_len)
  std::vector<float> logits;         // [len, V_tgt] along the hypothesis, with return_logits
  std::vector<float> attention;      // [len, S] (S: the batch's longest source), with return_attention
  // [len]: the log-softmax of each token under its step's (processed) logits, with
  // return_token_scores; they sum to `score`.
  std::vector<float> token_scores;
};

class VKRNN_API Seq2Seq {
 public:
  // The encoder's output for one batch of sources, resident on the GPU.
  class VKRNN_API Encoded {
   public:
    Encoded() = default;
    std::size_t batch() const;
    std::size_t source_length() const;          // S
    const std::vector<std::int32_t>& lengths() const;
    // The encoder's results on the GPU (read them with Context::read once the encode is done).
    Tensor encoder_outputs() const;  // [B, S, M]
    Tensor keys() const;             // [B, S, A] for additive / concat scores, else empty
    Tensor initial_state() const;    // decoder h_0 [layers, B, H]
    Tensor initial_cell() const;     // Luong LSTM c_0 [layers, B, H]; else empty (zero)
    // (The encoder graph's outputs "memory", "keys", "initial_state", "initial_cell"; empty
    // when the graph has no such output. Seq2Seq::read_encoder reads any encoder tensor.)
    struct Impl;
    std::shared_ptr<Impl> impl;
  };
  // Decoder state (recurrent state, previous token, finished flags) of one Encoded batch.
  class VKRNN_API DecoderState {
   public:
    DecoderState() = default;
    std::size_t steps_taken() const;
    struct Impl;
    std::shared_ptr<Impl> impl;
  };

  // options go to every op; OpOptions::fp16_storage stores the dense layers' weights (output
  // projection, bridge / combine: most of a model's bytes) as float16 -- fp32 arithmetic, the
  // recurrent layers and attention stay fp32 -- and needs storageBuffer16BitAccess.
  // OpOptions::weight_storage (f32, f16 or i8) sets the dense and the recurrent layers' weight
  // matrices; automatic keeps a file's int8 matrices int8 (docs/model-format.md). The weights
  // are uploaded in one submission (UploadBatch) and waited for, unless the caller holds an
  // UploadBatch open around the load: then it returns before the GPU upload is done.
  static Seq2Seq load(Context& ctx, const std::string& model_dir, const OpOptions& options = {});
  Seq2Seq(Context& ctx, const ModelFile& model, const OpOptions& options = {});
  Seq2Seq(Seq2Seq&&) noexcept;
  Seq2Seq& operator=(Seq2Seq&&) noexcept;
  ~Seq2Seq();

  // From memory: model.json's text and the safetensors bytes (ModelFile::load_from_memory).
  static Seq2Seq load_from_memory(Context& ctx, std::string_view config_json, std::span<const std::byte> weights,
                                  const OpOptions& options = {});

  const ModelConfig& config() const;
  // Without vocabularies (a version-2 model used ids in, ids out) the tokenizers are empty and
  // encode_text / decode_text / translate throw Error(invalid_argument).
  const Tokenizer& source_tokenizer() const;
  const Tokenizer& target_tokenizer() const;
  // Source ids of a text (EOS appended when the model's tokenizer says src_append_eos).
  std::vector<std::int32_t> encode_text(std::string_view text) const;
  // Target text of ids (stops at EOS, skips special tokens).
  std::string decode_text(std::span<const std::int32_t> ids) const;

  // --- whole decodes ---------------------------------------------------------------------
  // Every decode checks its logits on the GPU: NaN or infinite logits (NaN weights in the output
  // layer, say) are Error(non_finite) naming the row and the first such step, never tokens chosen
  // from them. The attention ops are planned per (batch, source length); the plans of the 16
  // shapes used last stay cached (each Encoded keeps its own alive), so memory stays bounded
  // whatever batch shapes come in.
  DecodeResult greedy(const std::vector<std::vector<std::int32_t>>& sources,
                      const DecodeOptions& options = {}) const;
  // Beam search per source row (docs/model-format.md): up to K hypotheses per row, best first.
  // All rows' beams run together as one batch of B*K decoder rows, and the whole search is ONE
  // submission: per step, the decoder state is gathered from each hypothesis's parent row, the
  // step runs, TopK takes the K+1 best log-softmax candidates of every row, and BeamSearch
  // merges them per source (finished / alive lists, parents, next tokens) -- all on the GPU.
  // Once every source row is done the remaining steps run empty (Sequence gate). The host
  // rebuilds the hypotheses from the histories after the single wait.
  std::vector<std::vector<Hypothesis>> beam(const std::vector<std::vector<std::int32_t>>& sources,
                                            const BeamOptions& options = {}) const;
  // Text in, text out (greedy, stop at EOS). An empty text, or (by default, see TextOptions)
  // a character outside the source vocabulary, is Error(invalid_argument) naming the text's
  // index and the character's position: the model would otherwise guess.
  std::vector<std::string> translate(const std::vector<std::string>& texts, const TextOptions& options = {}) const;
  // With decoding options, in batches: when the texts exceed max_batch_size texts or
  // max_batch_tokens source tokens (a batch's tokens: its size x its longest source, the
  // padding included, unlike CTranslate2's batch_type = "tokens"; 0: no limit) they are sorted by
  // source length (longest first, stable) and split into batches within both limits, so that
  // rows of similar length share the padding (a text longer than max_batch_tokens is a batch of
  // its own); otherwise they are one batch in input order. Results come back in input order.
  // target_prefix, when given, is one prefix per text (in input order). Sampling draws by row
  // within a batch, so its tokens depend on the batching (fixed batching and seed: the same
  // tokens). Texts are read as above, with text_options.
  std::vector<std::string> translate(const std::vector<std::string>& texts, const DecodeOptions& options,
                                     std::size_t max_batch_size = 0, std::size_t max_batch_tokens = 0,
                                     const TextOptions& text_options = {}) const;

  // Runs small greedy / beam decodes (2 steps) of every batch size x source length in options,
  // so the first real decode of those shapes does not build pipelines (Context::prebuild is the
  // list-driven form). Blocking unless options.background.
  WarmUpTask warm_up(const WarmUpOptions& options = {}) const;

  // --- incremental decoding --------------------------------------------------------------
  Encoded encode(const std::vector<std::vector<std::int32_t>>& sources) const;  // blocking
  void record_encode(Sequence& seq, const Encoded& encoded) const;
  Encoded prepare(const std::vector<std::vector<std::int32_t>>& sources) const;  // no GPU work yet
  // Any tensor of the encoder graph, by name, once the encode has finished (blocking read).
  HostTensor read_encoder(const Encoded& encoded, const std::string& tensor) const;
  // A decoder state at BOS. options.max_len / stop_at_eos / return_* apply to its steps.
  DecoderState start(const Encoded& encoded, const DecodeOptions& options = {}) const;
  // One step: records it (and the downloads of its results) into seq. forced_inputs (B ids)
  // replaces the previous tokens as this step's input (teacher forcing).
  void record_step(Sequence& seq, DecoderState& state, std::span<const std::int32_t> forced_inputs = {}) const;
  // The results of the last step recorded into seq (after seq has finished); Error(non_finite)
  // when its logits were not finite.
  StepResult read_step(const Sequence& seq, const DecoderState& state) const;
  // Blocking: record_step + eval + read_step.
  StepResult step(DecoderState& state, std::span<const std::int32_t> forced_inputs = {}) const;

  // --- a whole decode in the caller's Sequence --------------------------------------------
  // greedy() without the wait, for an app that owns the submission (Sequence::submit, or
  // record_into its frame's command buffer): record_greedy records every step of the decode
  // (up to max_len; with stop_at_eos the GPU skips the steps after every row has finished, so
  // it takes the sequence's one gate region) and the results' downloads into seq, after
  // record_encode(seq, encoded) or once the encoder's work has finished; read_greedy returns
  // what greedy() would have, once seq is done. The same kernels and tokens as greedy(). Not
  // with on_step (streaming submits pieces of its own: Error(invalid_argument)).
  class VKRNN_API GreedyDecode {
   public:
    GreedyDecode() = default;
    std::size_t batch() const;
    std::size_t max_len() const;  // the steps recorded
    struct Impl;
    std::shared_ptr<Impl> impl;
  };
  GreedyDecode record_greedy(Sequence& seq, const Encoded& encoded, const DecodeOptions& options = {}) const;
  // Error(state) before seq has finished; Error(non_finite) as greedy()'s.
  DecodeResult read_greedy(const Sequence& seq, const GreedyDecode& decode) const;

  // beam() without the wait, in the same way: record_beam records the expansion of the encoder's
  // results to K rows per source, every step (inside the sequence's one gate region: the GPU
  // skips the steps after every source row is done) and the downloads; read_beam returns what
  // beam() would have, once seq is done, and writes options.stats when it was set (the pointer
  // is kept until then).
  class VKRNN_API BeamDecode {
   public:
    BeamDecode() = default;
    std::size_t batch() const;       // source rows
    std::size_t beam_width() const;  // K
    std::size_t source_length() const;  // S: the batch's longest source (Hypothesis::attention's rows)
    std::size_t max_len() const;     // the steps recorded
    struct Impl;
    std::shared_ptr<Impl> impl;
  };
  BeamDecode record_beam(Sequence& seq, const Encoded& encoded, const BeamOptions& options = {}) const;
  // Error(state) before seq has finished; Error(non_finite) as beam()'s.
  std::vector<std::vector<Hypothesis>> read_beam(const Sequence& seq, const BeamDecode& decode) const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace vkrnn
