#pragma once
// vkrnn-bench's registration interface. Each workload family (bench/w1_attention.cpp, ...)
// registers the rows of /work/shared/workloads.md it implements; main.cpp times them on every
// selected device. A row's setup builds its tensors and ops once and returns a recorder that
// records ONE repetition into a Sequence; the harness submits and times it.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "vkrnn/vkrnn.hpp"

namespace vkrnn::bench {

// Row parameters in the order workloads.md lists them: they form the row name.
using Params = nlohmann::ordered_json;

// Work done by one repetition; 0 means "not a rate this row reports". The formulas for each
// family are in bench/SCHEMA.md and must match bench/torch_baseline.py's work().
struct Work {
  double bytes_read = 0;     // distinct bytes read (each tensor counted once) -> gbps
  double bytes_written = 0;  // bytes written (K rows; W1 counts reads only) -> gbps
  double flops = 0;       // -> gflops
  double tokens = 0;      // tokens produced -> tokens_per_s
  double steps = 0;       // timesteps / decode steps -> us_per_step
  double weight_bytes_per_token = 0;  // W3: weights a decoded token reads (0: not reported)
};

using Recorder = std::function<void(Sequence&)>;

// One repetition of a row that submits its own work (W3's streaming rows: Seq2Seq::greedy with
// DecodeOptions::on_step, which submits the decode in pieces): what the harness cannot see
// from outside. The runner checks its own results (it throws vkrnn::Error on a bad one).
struct SelfRun {
  double first_token_us = 0;  // from the call to the first token's arrival on the host
  SequenceStats stats;        // of the whole repetition, its submissions summed
};
using Runner = std::function<SelfRun()>;

// What a row's setup hands the harness: the recorder of one repetition and the tensor it
// produces, which the harness reads once after timing and requires to be finite and not all
// zero, so a broken op cannot pass as a fast one (the ops' own tests check the values). Or,
// for a row that submits its own work, the runner of one repetition (record and output empty).
struct Prepared {
  Recorder record;
  Tensor output;
  Runner run;
};

// The weight storages a row family runs in (W2, W3, K.gemv): fp32 rows keep their names,
// fp16 / int8 rows add params weight_bits = 16 / 8 and set the precision.
struct RowStorage {
  const char* precision;
  WeightStorage storage;
  std::size_t bits;
};
inline constexpr RowStorage kRowStorages[] = {
    {"fp32", WeightStorage::f32, 32}, {"fp16", WeightStorage::f16, 16}, {"int8", WeightStorage::i8, 8}};

struct Workload {
  std::string id;  // "W1.dot"
  Params params;   // {"B": 1, "S": 64, "H": 256}
  std::string precision = "fp32";
  Work work;
  // Builds tensors (fixed-seed random data) and ops on `ctx`, returns the recorder of one
  // repetition and its output. May throw vkrnn::Error (e.g. a shape beyond the device's
  // limits): the row is then listed under "skipped" with the message.
  std::function<Prepared(Context& ctx)> setup;

  std::string name() const;  // "W1.dot/B=1,S=64,H=256"
};

// "<id>/<k>=<v>,..." with bools as true/false (torch_baseline.py's row_name()).
std::string row_name(const std::string& id, const Params& params);

// A family contributes its rows through a static Registrar in its own file:
//   static const Registrar w1("W1", [] { return std::vector<Workload>{...}; });
using Family = std::function<std::vector<Workload>()>;
struct Registrar {
  Registrar(const char* family, Family rows);
};
std::vector<Workload> registered_workloads();  // every family's rows, sorted by family name

// True when `pattern` selects the row: a glob (*, ?) matching the id or the name, or a prefix
// of the name ending at a boundary ("W2", "W1.dot/B=1," but not "W3.b1" for W3.b16).
bool matches(const std::string& id, const std::string& name, const std::string& pattern);

// Deterministic data for inputs and weights (uniform in [lo, hi)).
std::vector<float> random_floats(std::size_t n, std::uint32_t seed, float lo = -1.0f, float hi = 1.0f);
// A tensor of that data.
Tensor random_tensor(Context& ctx, const Shape& shape, std::uint32_t seed, float scale = 1.0f,
                     const std::string& name = {});
// Throws Error(state) naming the row unless every value is finite and one is non-zero.
void check_output(const std::string& row, const std::vector<float>& values);

}  // namespace vkrnn::bench
