#include "timing.hpp"

#include <algorithm>
#include <chrono>

#include <fmt/format.h>

namespace vkrnn::bench {

namespace {
using Clock = std::chrono::steady_clock;
double us_since(Clock::time_point t0, Clock::time_point t1) {
  return std::chrono::duration<double, std::micro>(t1 - t0).count();
}
}  // namespace

Samples run_timed(Context& ctx, const Recorder& record, const TimingOptions& options) {
  SequenceOptions so;
  so.profile = options.profile;
  so.label = options.label;
  Sequence seq = ctx.sequence(so);
  Samples s;
  for (int i = 0; i < options.warmup + options.repetitions; ++i) {
    seq.reset();
    // Deltas, so the counts are right whether or not reset() clears the statistics.
    const SequenceStats before = seq.stats();
    const auto r0 = Clock::now();
    record(seq);
    const auto r1 = Clock::now();
    const std::uint32_t dispatches = seq.stats().dispatches - before.dispatches;
    const auto t0 = Clock::now();
    seq.submit();
    seq.wait();
    const auto t1 = Clock::now();
    if (i < options.warmup) continue;
    s.wall_us.push_back(us_since(t0, t1));
    s.record_us.push_back(us_since(r0, r1));
    s.dispatches = dispatches;
    s.submissions = seq.stats().submissions - before.submissions;
    if (options.profile) {
      const auto timings = seq.timings();
      if (timings.size() != dispatches) {
        throw Error(ErrorCode::state,
                    fmt::format("vkrnn-bench {}: {} dispatch timings for {} dispatches "
                                "(more than SequenceOptions::max_timed_dispatches?)",
                                options.label, timings.size(), dispatches));
      }
      double ns = 0.0;
      for (const auto& t : timings) ns += t.gpu_ns;
      s.gpu_us.push_back(ns / 1000.0);
    }
  }
  return s;
}

double median(std::vector<double> v) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

nlohmann::ordered_json summary(const std::vector<double>& v) {
  if (v.empty()) return nullptr;
  nlohmann::ordered_json j;
  j["median"] = median(v);
  j["min"] = *std::min_element(v.begin(), v.end());
  j["max"] = *std::max_element(v.begin(), v.end());
  return j;
}

}  // namespace vkrnn::bench
