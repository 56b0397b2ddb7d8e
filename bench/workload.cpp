#include "workload.hpp"

#include <fnmatch.h>

#include <map>
#include <random>

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

}  // namespace vkrnn::bench
