#include "workload.hpp"

#include <fnmatch.h>

#include <cmath>
#include <map>
#include <random>

#include <fmt/format.h>

namespace vkrnn::bench {

namespace {
std::map<std::string, Family>& families() {
  static std::map<std::string, Family> table;  // function-local: safe from static init order
  return table;
}

bool boundary(char c) { return c == '.' || c == '/' || c == ',' || c == '='; }
}  // namespace

std::string row_name(const std::string& id, const Params& params) {
  std::string name = id + "/";
  bool first = true;
  for (const auto& [key, value] : params.items()) {
    if (!first) name += ",";
    first = false;
    name += key + "=" + value.dump();  // ints and true/false dump without quotes
  }
  return name;
}

std::string Workload::name() const { return row_name(id, params); }

Registrar::Registrar(const char* family, Family rows) { families()[family] = std::move(rows); }

std::vector<Workload> registered_workloads() {
  std::vector<Workload> all;
  for (const auto& [family, rows] : families()) {
    for (auto& w : rows()) all.push_back(std::move(w));
  }
  return all;
}

bool matches(const std::string& id, const std::string& name, const std::string& pattern) {
  if (fnmatch(pattern.c_str(), name.c_str(), 0) == 0) return true;
  if (fnmatch(pattern.c_str(), id.c_str(), 0) == 0) return true;
  if (pattern.empty() || name.compare(0, pattern.size(), pattern) != 0) return false;
  return name.size() == pattern.size() || boundary(pattern.back()) || boundary(name[pattern.size()]);
}

std::vector<float> random_floats(std::size_t n, std::uint32_t seed, float lo, float hi) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

Tensor random_tensor(Context& ctx, const Shape& shape, std::uint32_t seed, float scale,
                     const std::string& name) {
  return ctx.tensor(shape, random_floats(element_count(shape), seed, -scale, scale), name);
}

void check_output(const std::string& row, const std::vector<float>& values) {
  bool nonzero = false;
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (!std::isfinite(values[i])) {
      throw Error(ErrorCode::state, fmt::format("vkrnn-bench {}: output[{}] = {} is not finite",
                                                row, i, values[i]));
    }
    nonzero = nonzero || values[i] != 0.0f;
  }
  if (!nonzero) {
    throw Error(ErrorCode::state, fmt::format("vkrnn-bench {}: the output is all zeros", row));
  }
}

}  // namespace vkrnn::bench
