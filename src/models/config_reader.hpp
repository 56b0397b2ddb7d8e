#pragma once
// Private: reading model.json fields with errors that name the file, the field and what was
// expected (model_file.cpp for version 1, graph_file.cpp for version 2).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "io/json_kind.hpp"
#include "vkrnn/error.hpp"
#include "vkrnn/model.hpp"

namespace vkrnn::model_detail {

using json = nlohmann::json;
using io_detail::json_kind;

// Far beyond any real model, small enough that products of three sizes fit in 64 bits.
inline constexpr std::uint64_t kMaxSize = model_limits::max_dimension;

// Whether `name` is one of `names` (C strings: option and field names).
template <class Names>
bool listed(const Names& names, std::string_view name) {
  return std::any_of(std::begin(names), std::end(names), [name](const char* n) { return name == n; });
}

// Untrusted strings in messages: control bytes escaped, length capped.
inline std::string quote(std::string_view s) {
  std::string out = "'";
  const std::size_t shown = std::min<std::size_t>(s.size(), 120);
  for (std::size_t i = 0; i < shown; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7f) out += fmt::format("\\x{:02x}", c);
    else out += static_cast<char>(c);
  }
  out += shown < s.size() ? fmt::format("...' ({} bytes)", s.size()) : "'";
  return out;
}

inline std::string value_str(const json& j) {
  if (j.is_number() || j.is_boolean() || j.is_null()) return j.dump();
  if (j.is_string()) return quote(j.get_ref<const std::string&>());
  return json_kind(j);
}

// Reads and checks model.json fields; every message starts with the file's path.
class Reader {
 public:
  explicit Reader(std::string path) : path_(std::move(path)) {}

  [[noreturn]] void fail(const std::string& message) const {
    throw Error(ErrorCode::format, fmt::format("{}: {}", path_, message));
  }

  const json& field(const json& obj, const std::string& name) const {
    auto it = obj.find(name);
    if (it == obj.end()) fail(fmt::format("missing field '{}'", name));
    return *it;
  }

  // An integer in [min, max]; max defaults to the largest dimension (model_limits).
  std::size_t size(const json& obj, const std::string& name, std::uint64_t min = 1, std::uint64_t max = kMaxSize) const {
    const json& v = field(obj, name);
    if (!v.is_number_unsigned() || v.get<std::uint64_t>() < min || v.get<std::uint64_t>() > max) {
      fail(fmt::format("field '{}': expected an integer in [{}, {}], got {}", name, min, max, value_str(v)));
    }
    return static_cast<std::size_t>(v.get<std::uint64_t>());
  }

  bool boolean(const json& obj, const std::string& name) const {
    const json& v = field(obj, name);
    if (!v.is_boolean()) fail(fmt::format("field '{}': expected true or false, got {}", name, value_str(v)));
    return v.get<bool>();
  }

  double number(const json& obj, const std::string& name) const {
    const json& v = field(obj, name);
    if (!v.is_number() || !std::isfinite(v.get<double>())) {
      fail(fmt::format("field '{}': expected a finite number, got {}", name, value_str(v)));
    }
    return v.get<double>();
  }

  const std::string& string(const json& obj, const std::string& name) const {
    const json& v = field(obj, name);
    if (!v.is_string()) fail(fmt::format("field '{}': expected a string, got {}", name, value_str(v)));
    return v.get_ref<const std::string&>();
  }

  template <class E>
  E choice(const json& obj, const std::string& name,
           std::initializer_list<std::pair<const char*, E>> options) const {
    const std::string& s = string(obj, name);
    std::vector<std::string> names;
    for (const auto& [text, value] : options) {
      if (s == text) return value;
      names.push_back(fmt::format("'{}'", text));
    }
    fail(fmt::format("field '{}': expected one of {}, got {}", name, fmt::join(names, ", "), quote(s)));
  }

  void expect_value(const json& obj, const std::string& name, bool want) const {
    if (boolean(obj, name) != want) {
      fail(fmt::format("field '{}': must be {} for this architecture", name, want ? "true" : "false"));
    }
  }
  void expect_value(const json& obj, const std::string& name, std::size_t want) const {
    if (size(obj, name) != want) {
      fail(fmt::format("field '{}': must be {} for this architecture, got {}", name, want,
                       field(obj, name).dump()));
    }
  }

  std::vector<std::string> vocab(const json& obj, const std::string& name, std::size_t expected) const {
    const json& v = field(obj, name);
    if (!v.is_array()) fail(fmt::format("field '{}': expected a list of strings, got {}", name, json_kind(v)));
    if (v.size() != expected) {
      fail(fmt::format("field '{}': {} entries, but the model's size is {}", name, v.size(), expected));
    }
    std::vector<std::string> out;
    out.reserve(v.size());
    std::set<std::string> seen;
    for (std::size_t i = 0; i < v.size(); ++i) {
      if (!v[i].is_string()) fail(fmt::format("field '{}': entry {} is {}, expected a string", name, i, json_kind(v[i])));
      const std::string& s = v[i].get_ref<const std::string&>();
      if (!seen.insert(s).second) fail(fmt::format("field '{}': entry {} ({}) is a duplicate", name, i, quote(s)));
      out.push_back(s);
    }
    return out;
  }

  std::vector<std::string> labels(const json& obj, std::size_t expected) const {
    const json& v = field(obj, "labels");
    if (!v.is_array() || v.size() != expected) {
      fail(fmt::format("field 'labels': expected a list of {} strings, got {}", expected,
                       v.is_array() ? fmt::format("{} entries", v.size()) : std::string(json_kind(v))));
    }
    std::vector<std::string> out;
    for (std::size_t i = 0; i < v.size(); ++i) {
      if (!v[i].is_string()) fail(fmt::format("field 'labels': entry {} is {}, expected a string", i, json_kind(v[i])));
      out.push_back(v[i].get<std::string>());
    }
    return out;
  }

  std::int32_t special(const json& sp, const char* name, std::size_t vocab) const {
    const json& v = field(sp, name);
    if (!v.is_number_unsigned() || v.get<std::uint64_t>() >= vocab) {
      fail(fmt::format("field 'special_tokens.{}': expected an id in [0, {}), got {}", name, vocab, value_str(v)));
    }
    return static_cast<std::int32_t>(v.get<std::uint64_t>());
  }

  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace vkrnn::model_detail
