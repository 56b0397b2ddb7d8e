// Text <-> token ids (docs/model-format.md, "Tokenisation"): the PyTorch side iterates Python
// str code points ("char") or str.split() ("word"), after str.lower() when asked.
#include <fmt/format.h>

#include "io/untrusted.hpp"
#include "vkrnn/error.hpp"
#include "vkrnn/model.hpp"

namespace vkrnn {
namespace {

// Decodes one UTF-8 code point at s[i], advancing i. Rejects overlong forms, surrogates and
// values beyond U+10FFFF, as Python's decoder does.
char32_t next_code_point(std::string_view s, std::size_t& i) {
  const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
  const std::size_t start = i;
  const unsigned char b0 = byte(i);
  auto invalid = [&]() -> char32_t {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("Tokenizer: text is not valid UTF-8 (byte 0x{:02x} at offset {})", byte(start), start));
  };
  if (b0 < 0x80) {
    ++i;
    return b0;
  }
  std::size_t n;
  char32_t cp, min;
  if ((b0 & 0xe0) == 0xc0) { n = 1; cp = b0 & 0x1f; min = 0x80; }
  else if ((b0 & 0xf0) == 0xe0) { n = 2; cp = b0 & 0x0f; min = 0x800; }
  else if ((b0 & 0xf8) == 0xf0) { n = 3; cp = b0 & 0x07; min = 0x10000; }
  else return invalid();
  for (std::size_t k = 1; k <= n; ++k) {
    if (i + k >= s.size() || (byte(i + k) & 0xc0) != 0x80) return invalid();
    cp = (cp << 6) | (byte(i + k) & 0x3f);
  }
  if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return invalid();
  i += n + 1;
  return cp;
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xc0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xe0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else {
    out += static_cast<char>(0xf0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  }
}

// Simple lowercase mappings of the commonest alphabets (Unicode's one-to-one mappings).
char32_t to_lower(char32_t c) {
  if (c >= 'A' && c <= 'Z') return c + 32;
  if (c < 0xc0) return c;
  if ((c >= 0xc0 && c <= 0xde && c != 0xd7)) return c + 32;                           // Latin-1
  if (c >= 0x100 && c <= 0x137 && c != 0x130) return c | 1;                          // Latin Ext-A
  if (c == 0x130) return 0x69;                                                         // İ -> i (+ U+0307 in Python)
  if (c >= 0x139 && c <= 0x148) return (c & 1) ? c + 1 : c;
  if (c >= 0x14a && c <= 0x177) return c | 1;
  if (c == 0x178) return 0xff;
  if (c >= 0x179 && c <= 0x17e) return (c & 1) ? c + 1 : c;
  if (c >= 0x391 && c <= 0x3ab && c != 0x3a2) return c + 32;                         // Greek
  if (c == 0x386) return 0x3ac;
  if (c >= 0x388 && c <= 0x38a) return c + 37;
  if (c == 0x38c) return 0x3cc;
  if (c == 0x38e || c == 0x38f) return c + 63;
  if (c >= 0x400 && c <= 0x40f) return c + 80;                                        // Cyrillic
  if (c >= 0x410 && c <= 0x42f) return c + 32;
  return c;
}

// Python's str.split() whitespace.
bool is_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f || c == 0x3000;
}

}  // namespace

Tokenizer::Tokenizer(std::vector<std::string> vocab, const TokenizerConfig& config, const SpecialTokens& special)
    : vocab_(std::move(vocab)), config_(config), special_(special) {
  for (std::size_t i = 0; i < vocab_.size(); ++i) index_.emplace(vocab_[i], static_cast<std::int32_t>(i));
}

std::int32_t Tokenizer::id(std::string_view token) const {
  auto it = index_.find(std::string(token));
  return it == index_.end() ? special_.unk : it->second;
}

std::vector<std::int32_t> Tokenizer::encode(std::string_view text, bool append_eos, UnknownTokens unknown) const {
  std::vector<std::int32_t> ids;
  std::string token;
  // Where the token being built starts: byte offset and 1-based character position.
  std::size_t token_byte = 0, token_char = 0, chars = 0;
  auto flush = [&](std::size_t end_byte) {
    if (token.empty()) return;
    auto it = index_.find(token);
    if (it != index_.end()) {
      ids.push_back(it->second);
    } else if (unknown == UnknownTokens::map_to_unk && special_.unk >= 0) {
      ids.push_back(special_.unk);
    } else {
      // Without an unk token (a version-2 model may have none) there is nothing to map it to:
      // an error under either policy, never the id -1.
      // Named as the text has it (before lowercasing), escaped.
      const std::string_view original = text.substr(token_byte, end_byte - token_byte);
      std::string what = fmt::format("word {}", io_detail::quote(original, 60));
      if (config_.type == TokenizerType::character) {
        std::size_t k = 0;
        const char32_t cp = next_code_point(original, k);
        what = fmt::format("character {} (U+{:04X})", io_detail::quote(original), static_cast<std::uint32_t>(cp));
      }
      throw Error(ErrorCode::invalid_argument,
                  fmt::format("Tokenizer: {} at position {} is not in the vocabulary ({} tokens; {})", what, token_char,
                              vocab_.size(),
                              special_.unk >= 0 ? "UnknownTokens::map_to_unk reads it as unk"
                                                : "the model has no unk token to read it as"));
    }
    token.clear();
  };
  for (std::size_t i = 0; i < text.size();) {
    const std::size_t at = i;
    char32_t cp = next_code_point(text, i);
    ++chars;
    if (config_.lowercase) cp = to_lower(cp);
    if (config_.type == TokenizerType::character) {
      token_byte = at;
      token_char = chars;
      append_utf8(token, cp);
      flush(i);
    } else if (is_space(cp)) {
      flush(at);
    } else {
      if (token.empty()) {
        token_byte = at;
        token_char = chars;
      }
      append_utf8(token, cp);
    }
  }
  flush(text.size());
  if (append_eos) {
    if (special_.eos < 0) throw Error(ErrorCode::invalid_argument, "Tokenizer: append_eos for a vocabulary without EOS");
    ids.push_back(special_.eos);
  }
  return ids;
}

std::string Tokenizer::decode(std::span<const std::int32_t> ids) const {
  std::string out;
  bool first = true;
  for (std::size_t i = 0; i < ids.size(); ++i) {
    const std::int32_t t = ids[i];
    if (t < 0 || static_cast<std::size_t>(t) >= vocab_.size()) {
      throw Error(ErrorCode::invalid_argument,
                  fmt::format("Tokenizer::decode: id {} at position {} is outside the vocabulary [0, {})", t, i,
                              vocab_.size()));
    }
    if (t == special_.eos) break;
    if (t == special_.pad || t == special_.bos || t == special_.unk) continue;
    if (config_.type == TokenizerType::word && !first) out += ' ';
    out += vocab_[static_cast<std::size_t>(t)];
    first = false;
  }
  return out;
}

}  // namespace vkrnn
