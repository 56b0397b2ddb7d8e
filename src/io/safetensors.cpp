#include "vkrnn/safetensors.hpp"

#include <algorithm>
#include <array>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <optional>
#include <limits>
#include <random>
#include <set>
#include <system_error>
#include <utility>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "io/untrusted.hpp"
#include "vkrnn/error.hpp"
#include "vkrnn/half.hpp"

namespace vkrnn {

using json = nlohmann::json;

namespace {

constexpr std::uint64_t kMaxHeaderBytes = safetensors_limits::max_header_bytes;
// The format nests three levels (header, entry, shape); anything much deeper is garbage, and
// bounding it keeps our DOM small for hostile inputs like "[[[[[[...".
constexpr std::size_t kMaxJsonDepth = 8;
// A tensor entry is about ten JSON values (object, dtype, shape and its dimensions, offsets):
// this bounds the header's DOM long before the tensor count is checked, so a hostile header of
// millions of tiny entries is refused early and cheaply.
constexpr std::size_t kMaxJsonValues = 16 * safetensors_limits::max_tensors;
constexpr const char* kMetadataKey = "__metadata__";

constexpr StDType kAllDTypes[] = {StDType::F64, StDType::F32, StDType::F16, StDType::BF16,
                                  StDType::I64, StDType::I32, StDType::I16, StDType::I8,
                                  StDType::U8,  StDType::BOOL};

// Names come from untrusted files: printable and capped in messages.
std::string quote_name(std::string_view s) { return io_detail::quote(s); }

std::string shape_string(const std::vector<std::size_t>& shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

using io_detail::json_kind;

// A short rendering of an untrusted JSON value for messages.
std::string json_excerpt(const json& j) {
  std::string s;
  try {
    s = j.dump(-1, ' ', false, json::error_handler_t::replace);
  } catch (const json::exception&) {
    return "<unprintable>";
  }
  if (s.size() > 80) s = s.substr(0, 77) + "...";
  return s;
}

bool parse_dtype(const std::string& s, StDType& out) {
  for (StDType d : kAllDTypes) {
    if (s == to_string(d)) {
      out = d;
      return true;
    }
  }
  return false;
}

std::string dtype_list() {
  std::string s;
  for (StDType d : kAllDTypes) {
    if (!s.empty()) s += ", ";
    s += to_string(d);
  }
  return s;
}

// a * b into out; false if it overflows.
bool checked_mul(std::size_t a, std::size_t b, std::size_t& out) {
  if (a != 0 && b > std::numeric_limits<std::size_t>::max() / a) return false;
  out = a * b;
  return true;
}

// Element count of a shape, false on overflow of count * element_bytes. A zero dimension makes
// the count zero, but the other dimensions must still multiply without overflow: callers
// downstream multiply dims in any order.
bool checked_bytes(const std::vector<std::size_t>& shape, std::size_t element_bytes,
                   std::size_t& count, std::size_t& bytes) {
  std::size_t nonzero = 1;
  bool has_zero = false;
  for (std::size_t d : shape) {
    if (d == 0) {
      has_zero = true;
      continue;
    }
    if (!checked_mul(nonzero, d, nonzero)) return false;
  }
  std::size_t nonzero_bytes;
  if (!checked_mul(nonzero, element_bytes, nonzero_bytes)) return false;
  count = has_zero ? 0 : nonzero;
  bytes = has_zero ? 0 : nonzero_bytes;
  return true;
}

template <class T>
T load_le(const std::byte* p) {
  using U = std::make_unsigned_t<T>;
  U v = 0;
  for (std::size_t i = 0; i < sizeof(T); ++i) v |= U(std::to_integer<std::uint8_t>(p[i])) << (8 * i);
  return static_cast<T>(v);
}

template <class T>
void store_le(std::byte* p, T value) {
  using U = std::make_unsigned_t<T>;
  const U v = static_cast<U>(value);
  for (std::size_t i = 0; i < sizeof(T); ++i) p[i] = std::byte((v >> (8 * i)) & 0xffu);
}

std::string io_message(const std::error_code& ec) { return ec.message(); }

}  // namespace

const char* to_string(StDType dtype) noexcept {
  switch (dtype) {
    case StDType::F64: return "F64";
    case StDType::F32: return "F32";
    case StDType::F16: return "F16";
    case StDType::BF16: return "BF16";
    case StDType::I64: return "I64";
    case StDType::I32: return "I32";
    case StDType::I16: return "I16";
    case StDType::I8: return "I8";
    case StDType::U8: return "U8";
    case StDType::BOOL: return "BOOL";
  }
  return "?";
}

std::size_t dtype_size(StDType dtype) noexcept {
  switch (dtype) {
    case StDType::F64:
    case StDType::I64: return 8;
    case StDType::F32:
    case StDType::I32: return 4;
    case StDType::F16:
    case StDType::BF16:
    case StDType::I16: return 2;
    case StDType::I8:
    case StDType::U8:
    case StDType::BOOL: return 1;
  }
  return 0;
}

struct SafetensorsFile::Data {
  std::string origin;
  std::vector<std::byte> bytes;             // parse(): the whole file, in memory
  std::optional<io_detail::InputFile> file;  // open(): tensors are read from it when asked for
  std::map<std::string, SafetensorsEntry> entries;
  std::map<std::string, std::string> metadata;

  // `out.size()` bytes of the file at `offset` (inside the data buffer: the header checked it).
  void read(std::size_t offset, std::span<std::byte> out) const {
    if (file) file->read_at(offset, out);
    else if (!out.empty()) std::memcpy(out.data(), bytes.data() + offset, out.size());
  }
};

SafetensorsFile::SafetensorsFile(std::shared_ptr<const Data> data) : data_(std::move(data)) {}

namespace {

std::string header_length_error(std::uint64_t header_len, std::uint64_t file_size) {
  if (file_size < 8) return fmt::format("file is {} bytes, shorter than the 8-byte header length", file_size);
  if (header_len > kMaxHeaderBytes) {
    return fmt::format("header length {} exceeds the {} byte limit (file is {} bytes)", header_len, kMaxHeaderBytes,
                       file_size);
  }
  if (header_len > file_size - 8) {
    return fmt::format("header length {} exceeds the {} bytes after the length field", header_len, file_size - 8);
  }
  return {};
}

}  // namespace

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  // Only the length and the header are read now (with hard limits, whatever stat says); the
  // tensors are read when asked for, so a file of any size costs its header's memory.
  io_detail::InputFile file = io_detail::InputFile::open(path, "safetensors file");
  const std::uint64_t file_size = file.size();
  auto fail = [&](const std::string& what) {
    return Error(ErrorCode::format, fmt::format("safetensors '{}': {}", path, what));
  };
  std::array<std::byte, 8> length{};
  if (file_size >= 8) file.read_at(0, length);
  const auto header_len = load_le<std::uint64_t>(length.data());
  if (std::string e = header_length_error(header_len, file_size); !e.empty()) throw fail(e);
  std::string header;
  io_detail::allocating("a safetensors header", header_len, [&] { header.resize(std::size_t(header_len)); });
  file.read_at(8, std::as_writable_bytes(std::span<char>(header)));
  auto data = std::make_shared<Data>();
  data->origin = path;
  data->file.emplace(std::move(file));
  return io_detail::only_vkrnn_errors(path, [&] { return from_header(std::move(data), header, file_size); });
}

SafetensorsFile SafetensorsFile::parse(std::vector<std::byte> bytes, std::string origin) {
  auto data = std::make_shared<Data>();
  data->origin = std::move(origin);
  data->bytes = std::move(bytes);
  const std::size_t file_size = data->bytes.size();
  const auto header_len = file_size >= 8 ? load_le<std::uint64_t>(data->bytes.data()) : 0;
  if (std::string e = header_length_error(header_len, file_size); !e.empty()) {
    throw Error(ErrorCode::format, fmt::format("safetensors '{}': {}", data->origin, e));
  }
  const std::string_view header(reinterpret_cast<const char*>(data->bytes.data() + 8), std::size_t(header_len));
  const std::string origin_copy = data->origin;
  return io_detail::only_vkrnn_errors(origin_copy, [&] { return from_header(std::move(data), header, file_size); });
}

SafetensorsFile SafetensorsFile::from_header(std::shared_ptr<Data> data, std::string_view header,
                                             std::uint64_t file_size_u64) {
  const std::string& org = data->origin;
  auto fail = [&](const std::string& what) -> Error {
    return Error(ErrorCode::format, fmt::format("safetensors '{}': {}", org, what));
  };
  auto fail_tensor = [&](const std::string& name, const std::string& what) -> Error {
    return Error(ErrorCode::format,
                 fmt::format("safetensors '{}': tensor {}: {}", org, quote_name(name), what));
  };
  if (file_size_u64 > std::numeric_limits<std::size_t>::max()) throw fail("file too large for this machine");
  const std::size_t file_size = std::size_t(file_size_u64);
  const std::size_t data_start = 8 + header.size();
  const std::size_t data_size = file_size - data_start;

  json root;
  {
    const io_detail::JsonLimits limits{.max_depth = kMaxJsonDepth, .max_values = kMaxJsonValues,
                                       .top_key = "tensor name", .entry = "entry"};
    if (std::string e = io_detail::parse_untrusted_json(header, limits, root); !e.empty()) {
      throw fail(fmt::format("header: {}", e));
    }
  }
  if (root.is_object() && root.size() - root.count(kMetadataKey) > safetensors_limits::max_tensors) {
    throw fail(fmt::format("{} tensors, more than the {} this reader accepts (see SECURITY.md)",
                           root.size() - root.count(kMetadataKey), safetensors_limits::max_tensors));
  }
  if (!root.is_object()) {
    throw fail(fmt::format("header must be a JSON object, found {}", json_kind(root)));
  }

  struct Span {
    std::size_t begin, end;
    const std::string* name;
  };
  std::vector<Span> spans;
  for (auto& [name, value] : root.items()) {
    if (name == kMetadataKey) {
      if (!value.is_object()) {
        throw fail(fmt::format("\"{}\" must be an object of strings, found {}", kMetadataKey,
                               json_kind(value)));
      }
      for (auto& [key, v] : value.items()) {
        if (!v.is_string()) {
          throw fail(fmt::format("\"{}\" value for key {} must be a string, found {} {}",
                                 kMetadataKey, quote_name(key), json_kind(v), json_excerpt(v)));
        }
        data->metadata.emplace(key, v.get<std::string>());
      }
      continue;
    }
    if (name.empty()) throw fail_tensor(name, "empty tensor name");
    if (!value.is_object()) {
      throw fail_tensor(name, fmt::format("entry must be an object with dtype, shape and "
                                          "data_offsets, found {}",
                                          json_kind(value)));
    }
    for (auto& [key, v] : value.items()) {
      (void)v;
      if (key != "dtype" && key != "shape" && key != "data_offsets") {
        throw fail_tensor(name, fmt::format("unexpected key {} (expected only dtype, shape, "
                                            "data_offsets)",
                                            quote_name(key)));
      }
    }
    for (const char* key : {"dtype", "shape", "data_offsets"}) {
      if (!value.contains(key)) throw fail_tensor(name, fmt::format("missing key \"{}\"", key));
    }

    SafetensorsEntry e;
    e.name = name;
    const json& dtype = value.at("dtype");
    if (!dtype.is_string()) {
      throw fail_tensor(name, fmt::format("dtype must be a string, found {}", json_kind(dtype)));
    }
    if (!parse_dtype(dtype.get_ref<const std::string&>(), e.dtype)) {
      throw fail_tensor(name, fmt::format("unknown dtype {} (supported: {})",
                                          quote_name(dtype.get_ref<const std::string&>()),
                                          dtype_list()));
    }

    const json& shape = value.at("shape");
    if (!shape.is_array()) {
      throw fail_tensor(name, fmt::format("shape must be a list of non-negative integers, "
                                          "found {} {}",
                                          json_kind(shape), json_excerpt(shape)));
    }
    for (std::size_t i = 0; i < shape.size(); ++i) {
      const json& d = shape[i];
      if (!d.is_number_unsigned() ||
          d.get<std::uint64_t>() > std::numeric_limits<std::size_t>::max()) {
        throw fail_tensor(name, fmt::format("shape must be a list of non-negative integers, "
                                            "dimension {} is {} {}",
                                            i, json_kind(d), json_excerpt(d)));
      }
      e.shape.push_back(std::size_t(d.get<std::uint64_t>()));
    }
    std::size_t count = 0;
    if (!checked_bytes(e.shape, dtype_size(e.dtype), count, e.bytes)) {
      throw fail_tensor(name, fmt::format("shape {} of {} overflows the byte count",
                                          shape_string(e.shape), to_string(e.dtype)));
    }

    const json& offsets = value.at("data_offsets");
    if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
        !offsets[1].is_number_unsigned()) {
      throw fail_tensor(name, fmt::format("data_offsets must be two non-negative integers "
                                          "[begin, end], found {}",
                                          json_excerpt(offsets)));
    }
    const std::uint64_t begin = offsets[0].get<std::uint64_t>();
    const std::uint64_t end = offsets[1].get<std::uint64_t>();
    if (begin > end) {
      throw fail_tensor(name, fmt::format("data_offsets [{}, {}] has begin > end", begin, end));
    }
    if (end - begin != e.bytes) {
      throw fail_tensor(name, fmt::format("data_offsets [{}, {}] span {} bytes, but shape {} of "
                                          "{} needs {} bytes",
                                          begin, end, end - begin, shape_string(e.shape),
                                          to_string(e.dtype), e.bytes));
    }
    if (end > data_size) {
      throw fail_tensor(name, fmt::format("data_offsets [{}, {}] extend beyond the {}-byte data "
                                          "buffer",
                                          begin, end, data_size));
    }
    e.offset = data_start + std::size_t(begin);
    auto [it, inserted] = data->entries.emplace(name, std::move(e));
    (void)inserted;  // the strict parser already rejected duplicate names
    spans.push_back({std::size_t(begin), std::size_t(end), &it->first});
  }

  // The specification demands that the tensors tile the data buffer exactly.
  std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) {
    return std::tie(a.begin, a.end, *a.name) < std::tie(b.begin, b.end, *b.name);
  });
  std::size_t covered = 0;
  const std::string* previous = nullptr;
  for (const Span& s : spans) {
    if (s.begin < covered) {
      throw fail_tensor(*s.name, fmt::format("data_offsets [{}, {}] overlap tensor {} which ends "
                                             "at {}",
                                             s.begin, s.end, quote_name(*previous), covered));
    }
    if (s.begin > covered) {
      throw fail_tensor(*s.name, fmt::format("data_offsets [{}, {}] leave a gap of {} unused bytes "
                                             "at {} (tensors must tile the data buffer)",
                                             s.begin, s.end, s.begin - covered, covered));
    }
    covered = s.end;
    previous = s.name;
  }
  if (covered != data_size) {
    throw fail(fmt::format("{} trailing bytes after the last tensor (data buffer is {} bytes, "
                           "tensors cover {})",
                           data_size - covered, data_size, covered));
  }
  return SafetensorsFile(std::move(data));
}

const std::string& SafetensorsFile::origin() const { return data_->origin; }

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> out;
  out.reserve(data_->entries.size());
  for (const auto& [name, e] : data_->entries) out.push_back(name);
  return out;
}

std::size_t SafetensorsFile::size() const { return data_->entries.size(); }

bool SafetensorsFile::contains(const std::string& name) const {
  return data_->entries.count(name) != 0;
}

const SafetensorsEntry& SafetensorsFile::entry(const std::string& name) const {
  auto it = data_->entries.find(name);
  if (it != data_->entries.end()) return it->second;
  // Show names near where the missing one would sort (likely the same module), then the count.
  constexpr std::size_t kShown = 8;
  std::vector<std::string> shown;
  auto start = data_->entries.lower_bound(name);
  for (std::size_t back = 0; back < kShown / 2 && start != data_->entries.begin(); ++back) --start;
  for (auto i = start; i != data_->entries.end() && shown.size() < kShown; ++i) {
    shown.push_back(quote_name(i->first));
  }
  std::string available =
      shown.empty() ? std::string("the file has no tensors")
                    : fmt::format("it has {} tensors, e.g. {}{}", data_->entries.size(),
                                  fmt::join(shown, ", "),
                                  data_->entries.size() > shown.size() ? ", ..." : "");
  throw Error(ErrorCode::not_found, fmt::format("safetensors '{}': no tensor {}; {}",
                                                data_->origin, quote_name(name), available));
}

namespace {

// Reads tensor `e` in chunks and calls convert(bytes, first_element, elements) for each: a file
// is streamed through a 1 MiB buffer, memory is passed as it is.
template <class Read, class Convert>
void for_each_chunk(const SafetensorsEntry& e, const std::byte* memory, Read&& read, Convert&& convert) {
  const std::size_t esize = dtype_size(e.dtype);
  const std::size_t n = e.bytes / esize;
  if (memory) {
    convert(memory + e.offset, std::size_t(0), n);
    return;
  }
  const std::size_t per_chunk = std::max<std::size_t>(1, (std::size_t(1) << 20) / esize);
  std::vector<std::byte> buffer(std::min(n, per_chunk) * esize);
  for (std::size_t first = 0; first < n; first += per_chunk) {
    const std::size_t count = std::min(per_chunk, n - first);
    const std::span<std::byte> chunk(buffer.data(), count * esize);
    read(e.offset + first * esize, chunk);
    convert(chunk.data(), first, count);
  }
}

// The output of a read, allocated as an Error rather than a crash when it cannot be.
template <class T>
std::vector<T> output_for(const std::string& origin, const SafetensorsEntry& e, std::size_t count) {
  const std::uint64_t bytes = std::uint64_t(count) * sizeof(T);
  if (bytes > safetensors_limits::max_read_bytes) {
    throw Error(ErrorCode::out_of_range,
                fmt::format("safetensors '{}': tensor {} {} of {} would read into {} bytes, more than the {} byte "
                            "limit of one read (see SECURITY.md)",
                            origin, quote_name(e.name), shape_string(e.shape), to_string(e.dtype), bytes,
                            safetensors_limits::max_read_bytes));
  }
  return io_detail::allocating(fmt::format("tensor {}", quote_name(e.name)), bytes,
                               [&] { return std::vector<T>(count); });
}

}  // namespace

std::vector<std::byte> SafetensorsFile::raw(const std::string& name) const {
  const SafetensorsEntry& e = entry(name);
  auto out = output_for<std::byte>(data_->origin, e, e.bytes);
  data_->read(e.offset, out);
  return out;
}

std::vector<float> SafetensorsFile::to_f32(const std::string& name) const {
  const SafetensorsEntry& e = entry(name);
  if (e.dtype != StDType::F32 && e.dtype != StDType::F16 && e.dtype != StDType::BF16 && e.dtype != StDType::F64) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("safetensors '{}': tensor {} has dtype {}; to_f32 needs F32, F16, "
                            "BF16 or F64 (use to_i64 for integers)",
                            data_->origin, quote_name(name), to_string(e.dtype)));
  }
  auto out = output_for<float>(data_->origin, e, e.bytes / dtype_size(e.dtype));
  const std::byte* memory = data_->file ? nullptr : data_->bytes.data();
  auto read = [&](std::size_t offset, std::span<std::byte> chunk) { data_->read(offset, chunk); };
  for_each_chunk(e, memory, read, [&](const std::byte* p, std::size_t first, std::size_t n) {
    float* dst = out.data() + first;
    switch (e.dtype) {
      case StDType::F32:
        for (std::size_t i = 0; i < n; ++i) dst[i] = std::bit_cast<float>(load_le<std::uint32_t>(p + 4 * i));
        break;
      case StDType::F16:
        for (std::size_t i = 0; i < n; ++i) dst[i] = half_to_float(load_le<std::uint16_t>(p + 2 * i));
        break;
      case StDType::BF16:
        for (std::size_t i = 0; i < n; ++i) dst[i] = bf16_to_float(load_le<std::uint16_t>(p + 2 * i));
        break;
      default:  // F64
        for (std::size_t i = 0; i < n; ++i) {
          dst[i] = static_cast<float>(std::bit_cast<double>(load_le<std::uint64_t>(p + 8 * i)));
        }
    }
  });
  return out;
}

std::vector<float> SafetensorsFile::to_f32(const std::string& name,
                                           const std::vector<std::size_t>& expected_shape) const {
  const SafetensorsEntry& e = entry(name);
  if (e.shape != expected_shape) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("safetensors '{}': tensor {} has shape {}, expected {}", data_->origin,
                            quote_name(name), shape_string(e.shape), shape_string(expected_shape)));
  }
  return to_f32(name);
}

std::vector<std::int64_t> SafetensorsFile::to_i64(const std::string& name) const {
  const SafetensorsEntry& e = entry(name);
  switch (e.dtype) {
    case StDType::I64: case StDType::I32: case StDType::I16: case StDType::I8: case StDType::U8: case StDType::BOOL:
      break;
    default:
      throw Error(ErrorCode::invalid_argument,
                  fmt::format("safetensors '{}': tensor {} has dtype {}; to_i64 needs an integer "
                              "or BOOL dtype (use to_f32 for floats)",
                              data_->origin, quote_name(name), to_string(e.dtype)));
  }
  auto out = output_for<std::int64_t>(data_->origin, e, e.bytes / dtype_size(e.dtype));
  const std::byte* memory = data_->file ? nullptr : data_->bytes.data();
  auto read = [&](std::size_t offset, std::span<std::byte> chunk) { data_->read(offset, chunk); };
  for_each_chunk(e, memory, read, [&](const std::byte* p, std::size_t first, std::size_t n) {
    std::int64_t* dst = out.data() + first;
    switch (e.dtype) {
      case StDType::I64:
        for (std::size_t i = 0; i < n; ++i) dst[i] = load_le<std::int64_t>(p + 8 * i);
        break;
      case StDType::I32:
        for (std::size_t i = 0; i < n; ++i) dst[i] = load_le<std::int32_t>(p + 4 * i);
        break;
      case StDType::I16:
        for (std::size_t i = 0; i < n; ++i) dst[i] = load_le<std::int16_t>(p + 2 * i);
        break;
      case StDType::I8:
        for (std::size_t i = 0; i < n; ++i) dst[i] = load_le<std::int8_t>(p + i);
        break;
      case StDType::U8:
        for (std::size_t i = 0; i < n; ++i) dst[i] = load_le<std::uint8_t>(p + i);
        break;
      default:  // BOOL
        for (std::size_t i = 0; i < n; ++i) {
          const auto b = std::to_integer<std::uint8_t>(p[i]);
          if (b > 1) {
            throw Error(ErrorCode::format,
                        fmt::format("safetensors '{}': tensor {}: BOOL element {} is byte {:#04x}, "
                                    "expected 0 or 1",
                                    data_->origin, quote_name(name), first + i, b));
          }
          dst[i] = b;
        }
    }
  });
  return out;
}

const std::map<std::string, std::string>& SafetensorsFile::metadata() const {
  return data_->metadata;
}

// ---------------------------------------------------------------------------------------------
// Writing

std::vector<std::byte> serialize_safetensors(const std::vector<SafetensorsTensorData>& tensors,
                                             const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  std::set<std::string_view> seen;
  std::size_t offset = 0;
  for (const SafetensorsTensorData& t : tensors) {
    auto bad = [&](const std::string& what) {
      return Error(ErrorCode::invalid_argument,
                   fmt::format("write_safetensors: tensor {}: {}", quote_name(t.name), what));
    };
    if (t.name.empty()) throw bad("empty tensor name");
    if (t.name == kMetadataKey) throw bad("the name is reserved for metadata");
    if (!seen.insert(t.name).second) throw bad("duplicate tensor name");
    if (dtype_size(t.dtype) == 0) throw bad("invalid dtype");
    std::size_t count = 0, bytes = 0;
    if (!checked_bytes(t.shape, dtype_size(t.dtype), count, bytes)) {
      throw bad(fmt::format("shape {} overflows the byte count", shape_string(t.shape)));
    }
    if (t.data.size() != bytes) {
      throw bad(fmt::format("has {} data bytes, but shape {} of {} needs {}", t.data.size(),
                            shape_string(t.shape), to_string(t.dtype), bytes));
    }
    header[t.name] = {{"dtype", to_string(t.dtype)},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;  // cannot overflow: the bytes exist in memory
  }
  if (!metadata.empty()) header[kMetadataKey] = metadata;

  std::string text;
  try {
    text = header.dump();
  } catch (const json::exception& e) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("write_safetensors: a tensor name or metadata string is not valid "
                            "UTF-8: {}",
                            e.what()));
  }
  // Pad with spaces (valid JSON whitespace) so the data buffer starts 8-byte aligned.
  text.append((8 - text.size() % 8) % 8, ' ');
  if (text.size() > kMaxHeaderBytes) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("write_safetensors: header would be {} bytes, above the {} byte limit "
                            "readers accept",
                            text.size(), kMaxHeaderBytes));
  }

  std::vector<std::byte> out(8 + text.size() + offset);
  store_le<std::uint64_t>(out.data(), text.size());
  std::memcpy(out.data() + 8, text.data(), text.size());
  std::byte* dst = out.data() + 8 + text.size();
  for (const SafetensorsTensorData& t : tensors) {
    if (!t.data.empty()) std::memcpy(dst, t.data.data(), t.data.size());
    dst += t.data.size();
  }
  return out;
}

void write_safetensors(const std::string& path, const std::vector<SafetensorsTensorData>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  const std::vector<std::byte> bytes = serialize_safetensors(tensors, metadata);

  // Write beside the target and rename, so readers never see a half-written file.
  std::random_device rd;
  const std::string tmp = fmt::format("{}.tmp-{:08x}", path, rd());
  auto io_error = [&](const char* what, const std::string& p, int err) {
    return Error(ErrorCode::io, fmt::format("write_safetensors: cannot {} '{}': {}", what, p,
                                            io_message(std::error_code(err, std::generic_category()))));
  };
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) throw io_error("create", tmp, errno);
  const std::size_t written = bytes.empty() ? 0 : std::fwrite(bytes.data(), 1, bytes.size(), f);
  const int write_err = errno;
  const bool write_ok = written == bytes.size() && std::fflush(f) == 0;
  const int flush_err = errno;
  const bool close_ok = std::fclose(f) == 0;
  const int close_err = errno;
  if (!write_ok || !close_ok) {
    std::remove(tmp.c_str());
    throw io_error("write", tmp, written != bytes.size() ? write_err : write_ok ? close_err : flush_err);
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::remove(tmp.c_str());
    throw Error(ErrorCode::io, fmt::format("write_safetensors: cannot rename '{}' to '{}': {}", tmp,
                                           path, ec.message()));
  }
}

// ---------------------------------------------------------------------------------------------
// Builders

namespace {

std::size_t checked_count(const std::string& name, const std::vector<std::size_t>& shape,
                          std::size_t values, StDType dtype) {
  std::size_t count = 0, bytes = 0;
  if (!checked_bytes(shape, dtype_size(dtype), count, bytes) || count != values) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("safetensors builder: tensor {}: {} values given for shape {}",
                            quote_name(name), values, shape_string(shape)));
  }
  return count;
}

template <class Bits, class T, class Convert>
SafetensorsTensorData build(std::string name, std::vector<std::size_t> shape, StDType dtype,
                            std::span<const T> values, Convert convert) {
  checked_count(name, shape, values.size(), dtype);
  SafetensorsTensorData t{std::move(name), dtype, std::move(shape), {}};
  t.data.resize(values.size() * sizeof(Bits));
  for (std::size_t i = 0; i < values.size(); ++i) {
    store_le<Bits>(t.data.data() + i * sizeof(Bits), convert(values[i]));
  }
  return t;
}

}  // namespace

SafetensorsTensorData f32_tensor(std::string name, std::vector<std::size_t> shape,
                                 std::span<const float> values) {
  return build<std::uint32_t>(std::move(name), std::move(shape), StDType::F32, values,
                              [](float v) { return std::bit_cast<std::uint32_t>(v); });
}

SafetensorsTensorData f16_tensor(std::string name, std::vector<std::size_t> shape,
                                 std::span<const float> values) {
  return build<std::uint16_t>(std::move(name), std::move(shape), StDType::F16, values,
                              [](float v) { return float_to_half(v); });
}

SafetensorsTensorData bf16_tensor(std::string name, std::vector<std::size_t> shape,
                                  std::span<const float> values) {
  return build<std::uint16_t>(std::move(name), std::move(shape), StDType::BF16, values,
                              [](float v) { return float_to_bf16(v); });
}

SafetensorsTensorData i64_tensor(std::string name, std::vector<std::size_t> shape,
                                 std::span<const std::int64_t> values) {
  return build<std::uint64_t>(std::move(name), std::move(shape), StDType::I64, values,
                              [](std::int64_t v) { return static_cast<std::uint64_t>(v); });
}

SafetensorsTensorData i32_tensor(std::string name, std::vector<std::size_t> shape,
                                 std::span<const std::int32_t> values) {
  return build<std::uint32_t>(std::move(name), std::move(shape), StDType::I32, values,
                              [](std::int32_t v) { return static_cast<std::uint32_t>(v); });
}

}  // namespace vkrnn
