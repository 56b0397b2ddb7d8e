#pragma once
// Private: the pieces every reader of untrusted files (model.json, safetensors, a future graph
// format) shares, so that each keeps the same guarantees (SECURITY.md):
//  - InputFile opens only regular files (never a FIFO, device, socket or directory, which could
//    block forever or never end), reads with hard byte limits whatever stat says, and reads at
//    offsets on demand (weights are streamed, never read or mapped whole);
//  - parse_untrusted_json() turns every failure of the JSON parser (syntax, numbers beyond a
//    double, invalid UTF-8, allocation) into a message naming the byte, line and column, and
//    rejects duplicate keys, deep nesting and oversized documents;
//  - quote() makes an untrusted string printable for an error message.
// Every failure here is a vkrnn::Error; no other exception type leaves these functions.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "io/json_kind.hpp"

namespace vkrnn::io_detail {

// 'text' with control bytes escaped (\xNN), quotes and backslashes escaped, cut at a UTF-8
// boundary after max_bytes with the full length noted: "'abc...' (600 bytes)".
std::string quote(std::string_view text, std::size_t max_bytes = 160);

struct JsonLimits {
  std::size_t max_depth = 16;          // containers nested deeper are rejected
  std::size_t max_values = 1u << 20;   // values of any kind; rejected as soon as one more is seen
  const char* top_key = "key";         // what a top-level key is, for messages ("tensor name")
  const char* entry = "object";        // what a top-level value is, for messages ("entry")
};

// Parses `text` into `out` strictly. Returns "" on success, else what was wrong and where:
// "invalid JSON at byte 12 (line 1, column 13): ..." for syntax errors, numbers that do not fit
// a double (e.g. -1e400), invalid UTF-8 and NUL bytes; the key and its enclosing object for
// duplicate keys; the limit for nesting or size. Never throws (allocation failure included).
std::string parse_untrusted_json(std::string_view text, const JsonLimits& limits, nlohmann::json& out);

// A regular file opened for reading; the descriptor closes with the last copy.
class InputFile {
 public:
  struct Fd;  // the open file (defined per platform in untrusted.cpp)
  // Error(io) naming the path and the reason when it is missing, unreadable, or not a regular
  // file (a FIFO is opened without blocking, then refused). `what` says what the file is for
  // the message ("model config", "safetensors").
  static InputFile open(const std::string& path, std::string_view what);

  const std::string& path() const;
  std::uint64_t size() const;  // st_size when opened

  // Reads out.size() bytes at `offset`. Error(io) naming the path if the file ends sooner (it
  // shrank after open) or the read fails.
  void read_at(std::uint64_t offset, std::span<std::byte> out) const;
  // The whole file as text, refusing (Error(format), naming `what` and the limit) one longer
  // than max_bytes, whatever its size said when opened: reads at most max_bytes + 1 bytes.
  std::string read_all(std::size_t max_bytes, std::string_view what) const;

 private:
  std::shared_ptr<const Fd> fd_;
  explicit InputFile(std::shared_ptr<const Fd> fd);
};

// Runs `make` and turns std::bad_alloc (and std::length_error from an impossible size) into
// Error(out_of_range) naming `what` and the bytes requested: allocation failure on sizes taken
// from a file is an error of that file, not a crash of the host.
template <class F>
auto allocating(std::string_view what, std::uint64_t bytes, F&& make) -> decltype(make());
[[noreturn]] void throw_allocation_failure(std::string_view what, std::uint64_t bytes);

// Runs a whole load and lets nothing but vkrnn::Error out: allocation failure becomes
// Error(out_of_range) and any other exception (a bug: every failure of input should already be
// an Error) Error(format), each naming `origin`. A host that catches vkrnn::Error survives any
// file.
template <class F>
auto only_vkrnn_errors(std::string_view origin, F&& load) -> decltype(load());
[[noreturn]] void rethrow_as_vkrnn_error(std::string_view origin);

template <class F>
auto only_vkrnn_errors(std::string_view origin, F&& load) -> decltype(load()) {
  try {
    return load();
  } catch (...) {
    rethrow_as_vkrnn_error(origin);
  }
}

template <class F>
auto allocating(std::string_view what, std::uint64_t bytes, F&& make) -> decltype(make()) {
  try {
    return make();
  } catch (const std::bad_alloc&) {
    throw_allocation_failure(what, bytes);
  } catch (const std::length_error&) {
    throw_allocation_failure(what, bytes);
  }
}

}  // namespace vkrnn::io_detail
