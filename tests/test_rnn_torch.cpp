// Parity with PyTorch itself: tools/make_rnn_fixtures.py (run by ctest as the fixture
// "rnn_torch_fixtures") saves torch.nn.RNN / LSTM / GRU modules' state_dicts, inputs, lengths,
// h0/c0 and outputs; here the state_dict loads unchanged into vkrnn::Rnn and the outputs must
// match.
//
// Tolerance: |got - want| <= 1e-5 + 1e-5 |want| against PyTorch run in float64 on the same
// float32 weights (PyTorch's exact answer), and <= 3e-5 + 3e-5 |want| against PyTorch's own
// float32 result (two independent float32 roundings). T = 512 cases get 1e-4 against float64.
//
// Missing fixtures: the test skips, unless VKRNN_REQUIRE_TORCH=1 (CI), where it fails.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "common/test_env.hpp"
#include "vkrnn/rnn.hpp"
#include "vkrnn/safetensors.hpp"

namespace vkrnn {
namespace {

using test::all_close;
using test::context;

const std::set<std::string> kDataTensors = {"input", "lengths", "h0", "c0", "output", "h_n", "c_n",
                                            "output_f32", "h_n_f32", "c_n_f32"};

bool torch_required() {
  const char* v = std::getenv("VKRNN_REQUIRE_TORCH");
  return v && std::string(v) == "1";
}

std::string fixture_dir() { return test::binary_path("fixtures/rnn"); }

// The fixture files, or empty after failing/skipping the calling test.
std::vector<std::string> fixture_files() {
  const std::string index = fixture_dir() + "/index.json";
  std::ifstream f(index);
  if (!f) return {};
  const auto j = nlohmann::json::parse(f);
  std::vector<std::string> files;
  for (const auto& name : j.at("files")) files.push_back(fixture_dir() + "/" + name.get<std::string>());
  return files;
}

CellType cell_of(const std::string& s) {
  if (s == "gru") return CellType::gru;
  if (s == "lstm") return CellType::lstm;
  if (s == "rnn_tanh") return CellType::rnn_tanh;
  if (s == "rnn_relu") return CellType::rnn_relu;
  throw Error(ErrorCode::format, "unknown cell '" + s + "' in a fixture");
}

std::size_t meta_size(const SafetensorsFile& f, const std::string& key) {
  return static_cast<std::size_t>(std::stoull(f.metadata().at(key)));
}

void check_fixture(const std::string& path, RnnPath path_choice) {
  const SafetensorsFile f = SafetensorsFile::open(path);
  RnnConfig c;
  c.cell = cell_of(f.metadata().at("cell"));
  c.input_size = meta_size(f, "input_size");
  c.hidden_size = meta_size(f, "hidden_size");
  c.num_layers = meta_size(f, "num_layers");
  c.bidirectional = meta_size(f, "bidirectional") != 0;
  c.bias = meta_size(f, "bias") != 0;
  c.proj_size = meta_size(f, "proj_size");
  const std::size_t B = meta_size(f, "batch"), T = meta_size(f, "steps");
  const std::size_t D = c.bidirectional ? 2 : 1, HO = c.proj_size ? c.proj_size : c.hidden_size;
  const bool lstm = c.cell == CellType::lstm;
  SCOPED_TRACE(fmt::format("{} ({} L={} bidir={} H={} I={} proj={} B={} T={} lengths={}) path {}",
                           std::filesystem::path(path).filename().string(), to_string(c.cell), c.num_layers,
                           c.bidirectional, c.hidden_size, c.input_size, c.proj_size, B, T,
                           f.metadata().at("lengths"), to_string(path_choice)));

  Rnn rnn(context(), c);
  if (path_choice == RnnPath::fused && c.proj_size) return;  // projections always run per step
  rnn.set_path(path_choice);
  // The state_dict as torch wrote it: every parameter the op expects, under torch's name and
  // shape, and no other weights in the file.
  std::set<std::string> weights;
  for (const auto& name : f.names())
    if (!kDataTensors.count(name)) weights.insert(name);
  std::set<std::string> expected;
  for (const auto& [name, shape] : rnn.parameter_shapes()) {
    expected.insert(name);
    rnn.set_parameter(name, f.to_f32(name, shape), shape);
  }
  EXPECT_EQ(weights, expected);

  const auto x = f.to_f32("input", {B, T, c.input_size});
  std::vector<std::int32_t> lengths;
  if (f.contains("lengths")) {
    for (auto v : f.to_i64("lengths")) lengths.push_back(static_cast<std::int32_t>(v));
  }
  const auto h0 = f.contains("h0") ? f.to_f32("h0", {c.num_layers * D, B, HO}) : std::vector<float>{};
  const auto c0 = f.contains("c0") ? f.to_f32("c0", {c.num_layers * D, B, c.hidden_size}) : std::vector<float>{};
  const auto got = rnn.forward(x, B, T, lengths, h0, c0);

  const double tol64 = T >= 512 ? 1e-4 : 1e-5, tol32 = T >= 512 ? 1e-4 : 3e-5;
  auto as_double = [](const std::vector<float>& v) { return std::vector<double>(v.begin(), v.end()); };
  EXPECT_TRUE(all_close(got.output, as_double(f.to_f32("output", {B, T, D * HO})), tol64, tol64)) << "output vs float64";
  EXPECT_TRUE(all_close(got.h_n, as_double(f.to_f32("h_n", {c.num_layers * D, B, HO})), tol64, tol64)) << "h_n vs float64";
  EXPECT_TRUE(all_close(got.output, as_double(f.to_f32("output_f32")), tol32, tol32)) << "output vs float32";
  EXPECT_TRUE(all_close(got.h_n, as_double(f.to_f32("h_n_f32")), tol32, tol32)) << "h_n vs float32";
  if (lstm) {
    EXPECT_TRUE(all_close(got.c_n, as_double(f.to_f32("c_n", {c.num_layers * D, B, c.hidden_size})), tol64, tol64))
        << "c_n vs float64";
    EXPECT_TRUE(all_close(got.c_n, as_double(f.to_f32("c_n_f32")), tol32, tol32)) << "c_n vs float32";
  }
}

TEST(RnnTorch, MatchesPyTorch) {
  const auto files = fixture_files();
  if (files.empty()) {
    if (torch_required()) {
      FAIL() << "no PyTorch fixtures in " << fixture_dir()
             << " and VKRNN_REQUIRE_TORCH=1: tools/make_rnn_fixtures.py (ctest fixture "
                "rnn_torch_fixtures) must run with python3-torch installed";
    }
    GTEST_SKIP() << "no PyTorch fixtures in " << fixture_dir() << " (python3-torch missing?)";
  }
  EXPECT_GE(files.size(), 10u);
  for (const auto& file : files) {
    for (RnnPath p : {RnnPath::automatic, RnnPath::per_step, RnnPath::fused}) check_fixture(file, p);
  }
}

}  // namespace
}  // namespace vkrnn
