// libFuzzer target: Tokenizer::encode / decode on arbitrary vocabularies and texts
// (tests/fuzz/README.md). Input: 1 flag byte (bit 0: word tokenizer, 1: lowercase,
// 2: append EOS, 3: UnknownTokens::error) | vocabulary entries separated by '\n' | "\n\n" |
// the text. The four special tokens come first, as in every exported model.
// Seeds: the shipped models' vocabularies with lines of their held-out sets.
#include <span>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "fuzz_common.hpp"
#include "vkrnn/model.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace vkrnn;
  if (size < 1) return 0;
  const std::uint8_t flags = data[0];
  const std::string_view rest(reinterpret_cast<const char*>(data + 1), size - 1);
  const auto split = rest.find("\n\n");
  const std::string_view vocab_text = rest.substr(0, split);
  const std::string_view text = split == std::string_view::npos ? std::string_view() : rest.substr(split + 2);

  // As ModelFile guarantees: distinct entries, special ids inside the vocabulary.
  std::vector<std::string> vocab = {"<pad>", "<s>", "</s>", "<unk>"};
  std::unordered_set<std::string> seen(vocab.begin(), vocab.end());
  for (std::size_t at = 0; at <= vocab_text.size() && !vocab_text.empty();) {
    const auto nl = vocab_text.find('\n', at);
    const std::string entry(vocab_text.substr(at, nl == std::string_view::npos ? std::string_view::npos : nl - at));
    if (seen.insert(entry).second) vocab.push_back(entry);
    if (nl == std::string_view::npos) break;
    at = nl + 1;
  }
  TokenizerConfig config;
  config.type = flags & 1 ? TokenizerType::word : TokenizerType::character;
  config.lowercase = flags & 2;
  const Tokenizer tok(vocab, config, SpecialTokens{0, 1, 2, 3});
  return fuzz::run([&] {
    const auto ids = tok.encode(text, flags & 4, flags & 8 ? UnknownTokens::error : UnknownTokens::map_to_unk);
    for (auto id : ids)
      if (id < 0 || static_cast<std::size_t>(id) >= vocab.size()) fuzz::invariant_failed("encode id outside the vocabulary");
    (void)tok.decode(ids);
    // Ids outside the vocabulary are refused, not read.
    const std::int32_t bad[] = {static_cast<std::int32_t>(vocab.size()), -1};
    for (auto id : bad) {
      try {
        (void)tok.decode(std::span<const std::int32_t>(&id, 1));
        fuzz::invariant_failed("decode accepted an id outside the vocabulary");
      } catch (const Error&) {
      }
    }
  });
}
