#include "io/untrusted.hpp"

#ifdef _WIN32
#include <cstdio>
#include <filesystem>
#else
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#endif

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "vkrnn/error.hpp"

namespace vkrnn::io_detail {

using json = nlohmann::json;

std::string quote(std::string_view s, std::size_t max_bytes) {
  std::size_t shown = std::min(s.size(), max_bytes);
  // Cut at a UTF-8 character boundary (never before a continuation byte 10xxxxxx).
  while (shown < s.size() && shown > 0 && (static_cast<unsigned char>(s[shown]) & 0xc0u) == 0x80u) --shown;
  std::string out = "'";
  for (std::size_t i = 0; i < shown; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7f) {
      out += fmt::format("\\x{:02x}", c);
    } else if (c == '\'' || c == '\\') {
      out += '\\';
      out += char(c);
    } else {
      out += char(c);
    }
  }
  if (shown < s.size()) out += fmt::format("...' ({} bytes)", s.size());
  else out += "'";
  return out;
}

namespace {

// "byte 12 (line 1, column 13)" for a 0-based byte offset into text.
std::string where_in(std::string_view text, std::size_t offset) {
  offset = std::min(offset, text.size());
  const std::string_view before = text.substr(0, offset);
  const std::size_t line = 1 + static_cast<std::size_t>(std::count(before.begin(), before.end(), '\n'));
  const std::size_t last_nl = before.rfind('\n');
  const std::size_t column = last_nl == std::string_view::npos ? offset + 1 : offset - last_nl;
  return fmt::format("byte {} (line {}, column {})", offset, line, column);
}

// nlohmann's message without its "[json.exception.parse_error.101] parse error at line 1,
// column 2: " prefix (the caller says where), capped: a token can be megabytes long.
std::string parser_message(const char* what) {
  std::string_view m(what);
  if (!m.empty() && m.front() == '[') {
    if (auto close = m.find("] "); close != std::string_view::npos) m.remove_prefix(close + 2);
  }
  if (m.starts_with("parse error")) {
    if (auto colon = m.find(": "); colon != std::string_view::npos) m.remove_prefix(colon + 2);
  }
  if (m.size() > 200) return std::string(m.substr(0, 200)) + "...";
  return std::string(m);
}

// Builds the DOM itself so that it can reject what nlohmann would silently accept: duplicate
// keys (nlohmann keeps the last one), absurd nesting and documents of absurd size (a hostile
// file must be refused before its DOM takes gigabytes).
class StrictDomBuilder : public nlohmann::json_sax<json> {
 public:
  StrictDomBuilder(json& root, std::string_view text, const JsonLimits& limits)
      : root_(root), text_(text), limits_(limits) {}

  const std::string& error() const { return error_; }

  bool null() override { return value(nullptr); }
  bool boolean(bool v) override { return value(v); }
  bool number_integer(number_integer_t v) override { return value(v); }
  bool number_unsigned(number_unsigned_t v) override { return value(v); }
  bool number_float(number_float_t v, const string_t&) override { return value(v); }
  bool string(string_t& v) override { return value(std::move(v)); }
  bool binary(binary_t&) override { return fail("binary values are not JSON"); }

  bool start_object(std::size_t) override { return open(json::object()); }
  bool start_array(std::size_t) override { return open(json::array()); }
  bool end_object() override { return close(); }
  bool end_array() override { return close(); }

  bool key(string_t& k) override {
    json& object = *stack_.back().node;
    if (object.contains(k)) {
      if (stack_.size() == 1) return fail(fmt::format("duplicate {} {}", limits_.top_key, quote(k)));
      return fail(fmt::format("duplicate key {}{}", quote(k), where()));
    }
    stack_.back().key = k;
    slot_ = &object[k];
    return true;
  }

  bool parse_error(std::size_t position, const std::string&, const nlohmann::detail::exception& e) override {
    // position counts the bytes read, the offending one included.
    return fail(fmt::format("invalid JSON at {}: {}", where_in(text_, position ? position - 1 : 0),
                            parser_message(e.what())));
  }

 private:
  struct Level {
    json* node;
    std::string key;  // the key being filled (objects)
  };

  // " in entry 'w'" / " in field 'tensors.encoder'": the keys of the enclosing objects.
  std::string where() const {
    std::string path;
    for (std::size_t i = 0; i + 1 < stack_.size(); ++i) {
      if (stack_[i].node->is_array()) {
        path += fmt::format("[{}]", stack_[i].node->size() - 1);
      } else {
        if (!path.empty()) path += '.';
        path += stack_[i].key;
      }
    }
    return path.empty() ? std::string() : fmt::format(" in {} {}", limits_.entry, quote(path));
  }

  bool fail(std::string message) {
    if (error_.empty()) error_ = std::move(message);
    return false;
  }

  bool count() {
    if (++values_ > limits_.max_values) {
      return fail(fmt::format("more than {} JSON values (the limit for this file; see SECURITY.md)", limits_.max_values));
    }
    return true;
  }

  template <class V>
  json* place(V&& v) {
    if (stack_.empty()) {
      root_ = std::forward<V>(v);
      return &root_;
    }
    json& parent = *stack_.back().node;
    if (parent.is_array()) {
      parent.emplace_back(std::forward<V>(v));
      return &parent.back();
    }
    *slot_ = std::forward<V>(v);
    return slot_;
  }

  template <class V>
  bool value(V&& v) {
    if (!count()) return false;
    place(std::forward<V>(v));
    return true;
  }

  bool open(json&& container) {
    if (!count()) return false;
    if (stack_.size() >= limits_.max_depth) {
      return fail(fmt::format("JSON nested deeper than {} levels{}", limits_.max_depth, where()));
    }
    stack_.push_back({place(std::move(container)), {}});
    return true;
  }

  bool close() {
    stack_.pop_back();
    return true;
  }

  json& root_;
  std::string_view text_;
  const JsonLimits& limits_;
  std::vector<Level> stack_;
  json* slot_ = nullptr;
  std::size_t values_ = 0;
  std::string error_;
};

}  // namespace

std::string parse_untrusted_json(std::string_view text, const JsonLimits& limits, json& out) {
  try {
    // JSON never contains a raw NUL (not even inside strings); refusing it early also means
    // nothing can hide behind one from a reader that stops there.
    if (const auto nul = text.find('\0'); nul != std::string_view::npos) {
      return fmt::format("invalid JSON: NUL byte at {}", where_in(text, nul));
    }
    out = json();
    StrictDomBuilder builder(out, text, limits);
    const bool ok = json::sax_parse(text.begin(), text.end(), &builder);
    if (ok) return {};
    out = json();
    return builder.error().empty() ? std::string("invalid JSON") : builder.error();
  } catch (const json::exception& e) {
    // sax_parse reports through parse_error(); this is the safety net for anything else
    // nlohmann may throw (type_error, invalid_iterator, out_of_range, other_error).
    out = json();
    return fmt::format("invalid JSON: {}", parser_message(e.what()));
  } catch (const std::bad_alloc&) {
    out = json();
    return fmt::format("out of host memory parsing {} bytes of JSON", text.size());
  }
}

// ---------------------------------------------------------------------------------------------

InputFile::InputFile(std::shared_ptr<const Fd> fd) : fd_(std::move(fd)) {}

#ifdef _WIN32
struct InputFile::Fd {
  std::FILE* file = nullptr;
  std::string path;
  std::uint64_t size = 0;
  ~Fd() {
    if (file) std::fclose(file);
  }
};

namespace {

// Windows has no pread: seek, then read (an InputFile is not shared between threads).
long long read_at_offset(const InputFile::Fd& fd, void* out, std::size_t n, std::uint64_t offset) {
  if (_fseeki64(fd.file, static_cast<long long>(offset), SEEK_SET) != 0) return -1;
  const std::size_t got = std::fread(out, 1, n, fd.file);
  if (got == 0 && std::ferror(fd.file)) return -1;
  return static_cast<long long>(got);
}

}  // namespace

InputFile InputFile::open(const std::string& path, std::string_view what) {
  auto fd = std::make_shared<Fd>();
  fd->path = path;
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  if (ec || !std::filesystem::exists(status)) {
    throw Error(ErrorCode::io, fmt::format("{}: cannot open the {}: no such file", path, what));
  }
  if (!std::filesystem::is_regular_file(status)) {
    throw Error(ErrorCode::io, fmt::format("{}: cannot open the {}: it is not a regular file (only regular files are read)", path, what));
  }
  fd->file = std::fopen(path.c_str(), "rb");
  if (!fd->file) throw Error(ErrorCode::io, fmt::format("{}: cannot open the {}: {}", path, what, std::strerror(errno)));
  fd->size = std::filesystem::file_size(path, ec);
  if (ec) throw Error(ErrorCode::io, fmt::format("{}: cannot stat the {}: {}", path, what, ec.message()));
  return InputFile(std::move(fd));
}

#else
struct InputFile::Fd {
  int fd = -1;
  std::string path;
  std::uint64_t size = 0;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

namespace {

std::string file_kind(mode_t mode) {
  if (S_ISDIR(mode)) return std::strerror(EISDIR);
  if (S_ISFIFO(mode)) return "it is a FIFO";
  if (S_ISCHR(mode)) return "it is a character device";
  if (S_ISBLK(mode)) return "it is a block device";
  if (S_ISSOCK(mode)) return "it is a socket";
  return "it is not a regular file";
}

// pread(): the bytes read, 0 at the end, -1 with errno on failure.
long long read_at_offset(const InputFile::Fd& fd, void* out, std::size_t n, std::uint64_t offset) {
  return ::pread(fd.fd, out, n, static_cast<off_t>(offset));
}

}  // namespace

InputFile InputFile::open(const std::string& path, std::string_view what) {
  auto fd = std::make_shared<Fd>();
  fd->path = path;
  // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer, forever.
  fd->fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
  if (fd->fd < 0) {
    throw Error(ErrorCode::io, fmt::format("{}: cannot open the {}: {}", path, what, std::strerror(errno)));
  }
  struct stat st {};
  if (::fstat(fd->fd, &st) != 0) {
    throw Error(ErrorCode::io, fmt::format("{}: cannot stat the {}: {}", path, what, std::strerror(errno)));
  }
  if (!S_ISREG(st.st_mode)) {
    throw Error(ErrorCode::io, fmt::format("{}: cannot open the {}: {} (only regular files are read)", path, what,
                                           file_kind(st.st_mode)));
  }
  // Regular files ignore O_NONBLOCK; clear it anyway so reads are plain blocking reads.
  if (const int flags = ::fcntl(fd->fd, F_GETFL); flags >= 0) ::fcntl(fd->fd, F_SETFL, flags & ~O_NONBLOCK);
  fd->size = static_cast<std::uint64_t>(st.st_size);
  return InputFile(std::move(fd));
}

#endif

const std::string& InputFile::path() const { return fd_->path; }
std::uint64_t InputFile::size() const { return fd_->size; }

void InputFile::read_at(std::uint64_t offset, std::span<std::byte> out) const {
  std::size_t done = 0;
  while (done < out.size()) {
    const std::size_t chunk = std::min<std::size_t>(out.size() - done, std::size_t(1) << 30);
    const long long got = read_at_offset(*fd_, out.data() + done, chunk, offset + done);
    if (got < 0) {
      if (errno == EINTR) continue;
      throw Error(ErrorCode::io, fmt::format("{}: read of {} bytes at offset {} failed: {}", fd_->path, out.size(),
                                             offset, std::strerror(errno)));
    }
    if (got == 0) {
      throw Error(ErrorCode::io, fmt::format("{}: the file ends at byte {}, but {} bytes at offset {} were expected "
                                             "(it was {} bytes when opened: did it change?)",
                                             fd_->path, offset + done, out.size(), offset, fd_->size));
    }
    done += static_cast<std::size_t>(got);
  }
}

std::string InputFile::read_all(std::size_t max_bytes, std::string_view what) const {
  std::string text;
  const std::size_t hint = static_cast<std::size_t>(std::min<std::uint64_t>(fd_->size, max_bytes)) + 1;
  allocating(what, hint, [&] { text.resize(hint); });
  std::size_t used = 0;
  for (;;) {
    if (used == text.size()) {
      if (used > max_bytes) break;
      const std::size_t grow = std::min(text.size() * 2, max_bytes + 1);
      allocating(what, grow, [&] { text.resize(grow); });
    }
    const long long got = read_at_offset(*fd_, text.data() + used, text.size() - used, used);
    if (got < 0) {
      if (errno == EINTR) continue;
      throw Error(ErrorCode::io, fmt::format("{}: read failed: {}", fd_->path, std::strerror(errno)));
    }
    if (got == 0) break;
    used += static_cast<std::size_t>(got);
  }
  if (used > max_bytes) {
    throw Error(ErrorCode::format, fmt::format("{}: more than {} bytes, the limit for a {} (see SECURITY.md)",
                                               fd_->path, max_bytes, what));
  }
  text.resize(used);
  return text;
}

void rethrow_as_vkrnn_error(std::string_view origin) {
  try {
    throw;
  } catch (const Error&) {
    throw;
  } catch (const std::bad_alloc&) {
    throw Error(ErrorCode::out_of_range, fmt::format("{}: out of host memory", origin));
  } catch (const std::length_error& e) {
    throw Error(ErrorCode::out_of_range, fmt::format("{}: out of host memory ({})", origin, e.what()));
  } catch (const std::exception& e) {
    throw Error(ErrorCode::format, fmt::format("{}: unexpected failure: {}", origin, e.what()));
  } catch (...) {
    throw Error(ErrorCode::format, fmt::format("{}: unexpected failure", origin));
  }
}

void throw_allocation_failure(std::string_view what, std::uint64_t bytes) {
  throw Error(ErrorCode::out_of_range, fmt::format("out of host memory: cannot allocate {} bytes for {}", bytes, what));
}

}  // namespace vkrnn::io_detail
