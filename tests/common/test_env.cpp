#include "common/test_env.hpp"

#include "ops/beam_step.hpp"

#include <cstdlib>
#include <iterator>
#include <iostream>
#include <memory>
#include <mutex>
#include <utility>
#include <algorithm>

#include <fmt/format.h>

namespace vkrnn::test {
namespace {

std::mutex g_mutex;
std::vector<std::string> g_messages;
std::size_t g_total = 0;

void sink(MessageSeverity severity, std::string_view message) {
  if (severity != MessageSeverity::warning && severity != MessageSeverity::error) return;
  std::lock_guard lock(g_mutex);
  g_messages.emplace_back(message);
  ++g_total;
}

std::vector<std::string> g_failed_tests;
std::unique_ptr<Context> g_context;
std::unique_ptr<Context> g_staging;
std::unique_ptr<Context> g_limited[std::size(kAllLimits)];

// Fails the running test if validation spoke during it.
class ValidationListener : public ::testing::EmptyTestEventListener {
  void OnTestStart(const ::testing::TestInfo&) override { take_validation_messages(); }
  void OnTestEnd(const ::testing::TestInfo& info) override {
    auto messages = take_validation_messages();
    if (messages.empty()) return;
    // Recorded after the body ends: gtest counts it as an ad-hoc failure, and main() also
    // fails the process by name so it can never pass silently.
    g_failed_tests.push_back(std::string(info.test_suite_name()) + "." + info.name());
    for (const auto& m : messages) {
      ADD_FAILURE() << "validation message during " << info.test_suite_name() << "."
                    << info.name() << ": " << m;
    }
  }
};

}  // namespace

bool validation_disabled() {
  return std::getenv("VKRNN_VALIDATION") != nullptr && std::string(std::getenv("VKRNN_VALIDATION")) == "0";
}

ContextOptions validated_options() {
  ContextOptions o;
  o.validation = !validation_disabled();
  o.validation_sink = sink;
  return o;
}

ContextOptions options_collecting_errors(std::vector<std::string>& errors) {
  ContextOptions o;
  o.validation = true;
  o.validation_sink = [&errors](MessageSeverity s, std::string_view m) {
    if (s == MessageSeverity::error) errors.emplace_back(m);
  };
  o.disable_pipeline_cache = true;
  return o;
}

Context& context() {
  if (!g_context) g_context = std::make_unique<Context>(validated_options());
  return *g_context;
}

bool greedy_takes_projection(Context& ctx, std::size_t B) {
  const Linear probe(ctx, 4, 8);
  return Argmax(ctx).fused_scratch_words(probe, B) > 0;
}

bool beam_takes_projection(Context& ctx, std::size_t B, std::size_t K) {
  const Linear probe(ctx, 4, 8);
  const BeamSearch search(ctx, B, K, 2 * K, 4, 1, 0);
  const auto step = BeamStep::make(ctx, search, 8, {}, {}, &probe);
  return step && step->takes_projection();
}

Context& staging_context() {
  if (!g_staging) {
    auto o = validated_options();
    o.force_staging = true;
    g_staging = std::make_unique<Context>(o);
  }
  return *g_staging;
}

const char* to_string(Limits limits) {
  switch (limits) {
    case Limits::gpu: return "gpu";
    case Limits::mobile: return "mobile";
    case Limits::minimum: return "minimum";
  }
  return "?";
}

DeviceLimits device_limits(Limits limits) {
  DeviceLimits l;
  l.gpu = true;
  if (limits == Limits::gpu) return l;
  l.max_shared_memory = 16384;
  l.max_workgroup_invocations = 128;
  l.no_subgroup_operations = true;
  l.no_storage_16bit = true;
  l.max_storage_buffers_per_stage = limits == Limits::minimum ? 4 : 16;
  return l;
}

Context& limited_context(Limits limits) {
  auto& c = g_limited[static_cast<std::size_t>(limits)];
  if (!c) {
    auto o = validated_options();
    o.limits = device_limits(limits);
    c = std::make_unique<Context>(o);
  }
  return *c;
}

std::vector<std::string> take_validation_messages() {
  std::lock_guard lock(g_mutex);
  return std::exchange(g_messages, {});
}

std::size_t validation_message_count() {
  std::lock_guard lock(g_mutex);
  return g_total;
}

std::vector<float> random_floats(std::size_t n, std::uint32_t seed, float lo, float hi) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

::testing::AssertionResult all_close(const std::vector<float>& actual,
                                     const std::vector<double>& expected, double rel_tol,
                                     double abs_tol) {
  if (actual.size() != expected.size()) {
    return ::testing::AssertionFailure()
           << "size " << actual.size() << " != expected " << expected.size();
  }
  std::size_t bad = 0;
  std::string report;
  double worst = 0.0;
  for (std::size_t i = 0; i < actual.size(); ++i) {
    const double a = actual[i], e = expected[i];
    const double err = std::abs(a - e);
    const bool ok = std::isfinite(a) && err <= abs_tol + rel_tol * std::abs(e);
    if (!ok) {
      if (bad < 8) report += fmt::format("\n  [{}] got {:.9g} expected {:.9g} (err {:.3g})", i, a, e, err);
      ++bad;
    }
    if (std::isfinite(err)) worst = std::max(worst, err);
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << bad << " of " << actual.size() << " elements out of tolerance (rel " << rel_tol
         << ", abs " << abs_tol << "), worst abs err " << worst << report;
}

std::string source_path(const std::string& relative) {
  const char* root = std::getenv("VKRNN_SOURCE_DIR");
  return std::string(root ? root : ".") + "/" + relative;
}

std::string binary_path(const std::string& relative) {
  const char* root = std::getenv("VKRNN_BINARY_DIR");
  return std::string(root ? root : ".") + "/" + relative;
}

}  // namespace vkrnn::test

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  ::testing::UnitTest::GetInstance()->listeners().Append(new vkrnn::test::ValidationListener);
  int rc = RUN_ALL_TESTS();
  // Contexts go before static destruction so their validation messages are still counted.
  for (auto& c : vkrnn::test::g_limited) c.reset();
  vkrnn::test::g_staging.reset();
  vkrnn::test::g_context.reset();
  for (const auto& name : vkrnn::test::g_failed_tests) {
    std::cerr << "FAILED (validation messages): " << name << "\n";
    rc = 1;
  }
  if (!vkrnn::test::take_validation_messages().empty()) {
    std::cerr << "validation messages during teardown\n";
    rc = 1;
  }
  return rc;
}
