#pragma once
// Timing one recorded repetition: warm-up, then timed repetitions, each re-recorded into the
// same Sequence (reset), submitted and waited for. Wall time is steady_clock around
// submit() + wait(); GPU time is the sum of the per-dispatch timestamps of that repetition.
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "workload.hpp"

namespace vkrnn::bench {

// One kernel's share of a repetition (profiled rows): its dispatches and their summed
// timestamps, per timed repetition.
struct KernelSamples {
  std::string kernel;  // the pipeline's name, as DispatchTiming has it ("gemv_f16_nosubgroup")
  std::uint32_t dispatches = 0;
  std::vector<double> gpu_us;
};

struct Samples {
  std::vector<double> wall_us;    // submit + wait
  std::vector<double> gpu_us;     // empty unless profiled
  std::vector<KernelSamples> kernels;  // profiled: in the order of their first dispatch
  std::vector<double> record_us;  // host time recording the repetition
  // The process's CPU time over each repetition's submit + wait, all threads (a CPU driver's
  // workers are threads of this process): over wall_us, how many threads kept busy.
  std::vector<double> host_cpu_us;
  std::vector<double> first_token_us;  // rows with a Runner: SelfRun::first_token_us
  std::uint32_t dispatches = 0;   // per repetition
  std::uint32_t submissions = 0;  // per repetition
  int warmup = 0;                 // warm-up repetitions actually run
};

struct TimingOptions {
  int warmup = 3;
  int repetitions = 20;
  bool profile = false;  // timestamps around every dispatch (needs DeviceInfo::timestamps)
  std::string label;
  // > 0: a time budget for the row. Warm-up stops early once it has used a tenth of it, and
  // the repetitions are cut (to no fewer than min_repetitions) when the first timed one says
  // the rest would not fit. The row's "repetitions" records what was run.
  double max_seconds = 0.0;
  int min_repetitions = 3;
};

Samples run_timed(Context& ctx, const Recorder& record, const TimingOptions& options);
// The same warm-up, budget and repetitions for a row that submits its own work: wall time is
// steady_clock around run(); no GPU time (its pieces are not profiled).
Samples run_self_timed(const Runner& run, const TimingOptions& options);

double median(std::vector<double> v);
// {"median", "min", "max"}, or null for no samples.
nlohmann::ordered_json summary(const std::vector<double>& v);

}  // namespace vkrnn::bench
