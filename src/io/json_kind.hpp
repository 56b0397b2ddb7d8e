#pragma once
// Private: what a JSON value is, in words, for the error messages of the readers of untrusted
// JSON (safetensors headers, model.json).
#include <nlohmann/json.hpp>

namespace vkrnn::io_detail {

inline const char* json_kind(const nlohmann::json& j) {
  using value_t = nlohmann::json::value_t;
  switch (j.type()) {
    case value_t::null: return "null";
    case value_t::object: return "an object";
    case value_t::array: return "a list";
    case value_t::string: return "a string";
    case value_t::boolean: return "a boolean";
    case value_t::number_integer: return "a negative integer";
    case value_t::number_unsigned: return "an integer";
    case value_t::number_float: return "a non-integer number";
    case value_t::binary: return "binary";
    case value_t::discarded: return "discarded";
  }
  return "unknown";
}

}  // namespace vkrnn::io_detail
