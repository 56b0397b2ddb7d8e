#pragma once
// Shared test fixtures: one validation-enabled Context per test process, and a listener that
// fails any test during which the Khronos validation layer said anything (warning or error).
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "vkrnn/vkrnn.hpp"

namespace vkrnn::test {

// The process-wide context (validation on, synchronization validation on).
Context& context();
// A second context on the same device that uses the staging path (device-local memory + copies),
// to cover what discrete GPUs do on a unified-memory device.
Context& staging_context();

// Smaller devices than the one the tests run on (ContextOptions::limits), so that the kernels
// other devices get run here and are checked against the same references:
//   gpu      the device's own limits, planned as a GPU (64+ invocations, GPU paths)
//   mobile   16 KiB shared memory, 128 invocations, no subgroup operations (shared-memory
//            reductions), no 16-bit storage, 16 storage buffers per stage, planned as a GPU
//   minimum  Vulkan 1.1's minimums: as mobile with 4 storage buffers per stage (ops that bind
//            more refuse at construction, naming maxPerStageDescriptorStorageBuffers)
enum class Limits { gpu, mobile, minimum };
const char* to_string(Limits limits);
constexpr Limits kAllLimits[] = {Limits::gpu, Limits::mobile, Limits::minimum};
DeviceLimits device_limits(Limits limits);
// One validation-enabled context per profile, for the process.
Context& limited_context(Limits limits);

// Whether Argmax::record with a projection takes a B-row projection into the greedy step's
// dispatch on `ctx` (gemv_argmax.comp): Seq2Seq's greedy steps then record one dispatch fewer.
bool greedy_takes_projection(Context& ctx, std::size_t B);
// Whether BeamStep takes the output projection of B sources x K hypotheses into its dispatch
// on `ctx` (gemv_beam.comp): Seq2Seq's beam steps then record one dispatch fewer.
bool beam_takes_projection(Context& ctx, std::size_t B, std::size_t K);

// Validation messages seen since the last call (and clears them).
std::vector<std::string> take_validation_messages();
// Every message ever seen in this process (for the fixture's own test).
std::size_t validation_message_count();

// Options that make a Context report validation messages into the shared log.
ContextOptions validated_options();
// Options for a test that provokes a validation error on purpose: validation on, the pipeline
// cache off, and every error message appended to `errors` (not the shared log).
ContextOptions options_collecting_errors(std::vector<std::string>& errors);
// VKRNN_VALIDATION=0: the run has validation turned off.
bool validation_disabled();

// Deterministic random data.
std::vector<float> random_floats(std::size_t n, std::uint32_t seed, float lo = -1.0f, float hi = 1.0f);

// |a - b| <= abs_tol + rel_tol * |b|, reporting the first few mismatches.
::testing::AssertionResult all_close(const std::vector<float>& actual,
                                     const std::vector<double>& expected, double rel_tol,
                                     double abs_tol);

// Path of a file under the source tree (VKRNN_SOURCE_DIR) or build tree (VKRNN_BINARY_DIR).
std::string source_path(const std::string& relative);
std::string binary_path(const std::string& relative);

}  // namespace vkrnn::test
