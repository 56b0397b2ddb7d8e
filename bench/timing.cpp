#include "timing.hpp"

#include <algorithm>
#include <chrono>
#include <ctime>

#include <fmt/format.h>

namespace vkrnn::bench {

namespace {
using Clock = std::chrono::steady_clock;
double us_since(Clock::time_point t0, Clock::time_point t1) {
  return std::chrono::duration<double, std::micro>(t1 - t0).count();
}
// CPU time of every thread of the process so far, us; -1 where the clock cannot be read (the
// row's host_cpu_us is then null, not 0).
double process_cpu_us() {
  timespec ts{};
  if (clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts) != 0) return -1.0;
  return double(ts.tv_sec) * 1e6 + double(ts.tv_nsec) * 1e-3;
}

// The warm-up and repetition counts under TimingOptions::max_seconds, for both ways of timing
// a row: warm-up stops once it has used a tenth of the budget, and the first timed repetition
// says how many fit.
class Budget {
 public:
  explicit Budget(const TimingOptions& o)
      : o_(o), warmup_(o.warmup), repetitions_(o.repetitions), started_(Clock::now()) {}
  bool more(int i) const { return i < warmup_ + repetitions_; }
  // Repetition i ended at `end`, `took_us` after it began (recording included): true when it
  // was a warm-up, whose figures are dropped.
  bool warming_up(int i, Clock::time_point end, double took_us) {
    if (i < warmup_) {
      if (o_.max_seconds > 0.0 && us_since(started_, end) > o_.max_seconds * 1e5) {
        warmup_ = i + 1;  // enough: the pipelines are compiled and the memory touched
      }
      return true;
    }
    if (i == warmup_ && o_.max_seconds > 0.0) {
      const double fit = o_.max_seconds * 1e6 / std::max(took_us, 1.0);
      if (fit < repetitions_) repetitions_ = std::min(repetitions_, std::max(o_.min_repetitions, int(fit)));
    }
    return false;
  }
  int warmups() const { return warmup_; }

 private:
  const TimingOptions& o_;
  int warmup_, repetitions_;
  Clock::time_point started_;
};
}  // namespace

Samples run_timed(Context& ctx, const Recorder& record, const TimingOptions& options) {
  SequenceOptions so;
  so.profile = options.profile;
  so.label = options.label;
  Sequence seq = ctx.sequence(so);
  Samples s;
  Budget budget(options);
  for (int i = 0; budget.more(i); ++i) {
    seq.reset();
    // Deltas, so the counts are right whether or not reset() clears the statistics.
    const SequenceStats before = seq.stats();
    const auto r0 = Clock::now();
    record(seq);
    const auto r1 = Clock::now();
    const std::uint32_t dispatches = seq.stats().dispatches - before.dispatches;
    const double c0 = process_cpu_us();
    const auto t0 = Clock::now();
    seq.submit();
    seq.wait();
    const auto t1 = Clock::now();
    const double c1 = process_cpu_us();
    if (budget.warming_up(i, t1, us_since(r0, t1))) continue;
    s.wall_us.push_back(us_since(t0, t1));
    s.record_us.push_back(us_since(r0, r1));
    if (c0 >= 0.0 && c1 >= 0.0) s.host_cpu_us.push_back(c1 - c0);
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
      // Per kernel: a repetition records the same dispatches every time, so each kernel's
      // dispatch count is fixed and its times line up with gpu_us, one per repetition.
      const std::size_t rep = s.gpu_us.size() - 1;
      for (auto& k : s.kernels) k.gpu_us.push_back(0.0);
      for (const auto& t : timings) {
        auto k = std::find_if(s.kernels.begin(), s.kernels.end(), [&](const KernelSamples& e) { return e.kernel == t.kernel; });
        if (k == s.kernels.end()) {
          if (rep != 0) {
            throw Error(ErrorCode::state, fmt::format("vkrnn-bench {}: kernel {} first ran in repetition {}: the "
                                                      "repetitions recorded different dispatches", options.label, t.kernel, rep));
          }
          k = s.kernels.insert(s.kernels.end(), KernelSamples{t.kernel, 0, {0.0}});
        }
        if (rep == 0) ++k->dispatches;
        k->gpu_us.back() += t.gpu_ns / 1000.0;
      }
    }
  }
  s.warmup = budget.warmups();
  return s;
}

Samples run_self_timed(const Runner& run, const TimingOptions& options) {
  Samples s;
  Budget budget(options);
  for (int i = 0; budget.more(i); ++i) {
    const double c0 = process_cpu_us();
    const auto t0 = Clock::now();
    const SelfRun r = run();
    const auto t1 = Clock::now();
    const double c1 = process_cpu_us();
    if (budget.warming_up(i, t1, us_since(t0, t1))) continue;
    s.wall_us.push_back(us_since(t0, t1));
    if (c0 >= 0.0 && c1 >= 0.0) s.host_cpu_us.push_back(c1 - c0);
    s.first_token_us.push_back(r.first_token_us);
    s.dispatches = r.stats.dispatches;
    s.submissions = r.stats.submissions;
  }
  s.warmup = budget.warmups();
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
