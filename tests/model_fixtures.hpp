#pragma once
// Model parity fixtures written by the PyTorch scripts (tools/make_model_fixtures.py,
// tools/make_graph_fixtures.py) into the build tree: their index, and helpers to read the
// expected tensors. Shared by test_models_torch.cpp and test_models_graph.cpp.
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/test_env.hpp"
#include "vkrnn/safetensors.hpp"

namespace vkrnn::test {

inline bool torch_required() {
  const char* v = std::getenv("VKRNN_REQUIRE_TORCH");
  return v && std::string(v) == "1";
}

struct FixtureCase {
  std::string name, kind, dir;  // kind: the index entry's `kind_key` (architecture or task)
};

// The cases of DIR/index.json (empty when there is none).
inline std::vector<FixtureCase> fixture_cases(const std::string& dir, const char* kind_key) {
  std::ifstream f(dir + "/index.json");
  if (!f) return {};
  const auto j = nlohmann::json::parse(f);
  std::vector<FixtureCase> out;
  for (const auto& c : j.at("cases")) {
    const std::string name = c.at("name").get<std::string>();
    out.push_back({name, c.at(kind_key).get<std::string>(), dir + "/" + name});
  }
  return out;
}

// Fails (CI) or skips the calling test when `var` (the cases) is empty.
#define VKRNN_REQUIRE_FIXTURES(var, dir, script)                                                         \
  if (var.empty()) {                                                                                     \
    if (::vkrnn::test::torch_required()) {                                                               \
      FAIL() << "no fixtures in " << (dir) << " and VKRNN_REQUIRE_TORCH=1: " << (script)                 \
             << " (a ctest fixture) must run with python3-torch installed";                              \
    }                                                                                                    \
    GTEST_SKIP() << "no fixtures in " << (dir) << " (python3-torch missing?)";                           \
  }

inline std::vector<double> as_double(const std::vector<float>& v) { return {v.begin(), v.end()}; }

inline std::vector<std::int32_t> ints(const SafetensorsFile& f, const std::string& name) {
  std::vector<std::int32_t> v;
  for (auto x : f.to_i64(name)) v.push_back(static_cast<std::int32_t>(x));
  return v;
}

// Row b, step t of a [B, T, X] array.
template <class V>
V slice(const V& a, std::size_t b, std::size_t t, std::size_t T, std::size_t X) {
  const auto first = a.begin() + static_cast<std::ptrdiff_t>((b * T + t) * X);
  return {first, first + static_cast<std::ptrdiff_t>(X)};
}

// Column t of a [B, T, X] array: [B, X].
template <class V>
V column(const V& a, std::size_t B, std::size_t t, std::size_t T, std::size_t X) {
  V out;
  for (std::size_t b = 0; b < B; ++b) {
    const auto row = slice(a, b, t, T, X);
    out.insert(out.end(), row.begin(), row.end());
  }
  return out;
}

// The rows of [B, S] ids, each cut to its length.
inline std::vector<std::vector<std::int32_t>> rows_of(const std::vector<std::int32_t>& ids, const std::vector<std::int32_t>& lengths) {
  const std::size_t B = lengths.size(), S = ids.size() / B;
  std::vector<std::vector<std::int32_t>> rows(B);
  for (std::size_t b = 0; b < B; ++b) {
    const auto first = ids.begin() + static_cast<std::ptrdiff_t>(b * S);
    rows[b].assign(first, first + lengths[b]);
  }
  return rows;
}

}  // namespace vkrnn::test
