// libFuzzer target: a whole model (model.json of format version 1 or 2, the graph format, +
// safetensors) through ModelFile::load_from_memory -- the config, the graphs and their checks,
// the weights -- then the tokenizers the model classes would build from it
// (tests/fuzz/README.md).
// Input: u32 little-endian n | n bytes of model.json | the safetensors file.
// Seeds: the shipped models (samples/*/model), the parity fixtures of every architecture and the
// graph fixtures (users' own modules).
#include <algorithm>
#include <span>
#include <string_view>
#include <vector>

#include "fuzz_common.hpp"
#include "vkrnn/model.hpp"

namespace {

void exercise_tokenizer(const std::vector<std::string>& vocab, const vkrnn::ModelConfig& c) {
  using namespace vkrnn;
  if (vocab.empty()) return;  // a version-2 model without one takes token ids only: no tokenizer
  const Tokenizer tok(vocab, c.tokenizer, c.special);
  // Every vocabulary entry (and all of them joined) encodes to ids inside the vocabulary and
  // decodes without error.
  std::string joined;
  for (std::size_t i = 0; i < std::min<std::size_t>(vocab.size(), 64); ++i) joined += vocab[i] + " ";
  for (const std::string& text : {joined, vocab.back()}) {
    try {
      for (auto policy : {UnknownTokens::map_to_unk, UnknownTokens::error}) {
        const auto ids = tok.encode(text, c.special.eos >= 0, policy);
        for (auto id : ids)
          if (id < 0 || static_cast<std::size_t>(id) >= vocab.size()) fuzz::invariant_failed("encode id outside the vocabulary");
        (void)tok.decode(ids);
      }
    } catch (const Error& e) {
      if (e.code() != ErrorCode::invalid_argument) fuzz::invariant_failed(e.what());
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace vkrnn;
  if (size < 4) return 0;
  const std::size_t n = std::min<std::size_t>(fuzz::load_u32(data), size - 4);
  const std::string_view config(reinterpret_cast<const char*>(data + 4), n);
  return fuzz::run([&] {
    const std::span<const std::byte> weights(reinterpret_cast<const std::byte*>(data + 4 + n), size - 4 - n);
    const ModelFile m = ModelFile::load_from_memory(config, weights, "fuzz-model");
    const ModelConfig& c = m.config();
    for (const auto& role : m.roles()) {
      std::size_t count = 1;
      for (auto d : m.shape(role)) count *= d;
      if (m.tensor(role).size() != count) fuzz::invariant_failed("a role's data disagrees with its shape");
    }
    if (c.task == ModelTask::seq2seq) {
      exercise_tokenizer(c.src_vocab, c);
      exercise_tokenizer(c.tgt_vocab, c);
    } else {
      exercise_tokenizer(c.vocab, c);
    }
  });
}
