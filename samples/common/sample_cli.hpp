#pragma once
// The command line, evaluation-file reading and exit statuses the dates and sentiment samples
// share. Exit status: 0 done, 1 error, 2 bad command line, 3 the validation layer reported
// something, 4 accuracy below --expect-accuracy.
#include <cstddef>
#include <functional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "vkrnn/context.hpp"
#include "vkrnn/options.hpp"

namespace vkrnn::samples {

// A bad command line: exit status 2 with a pointer to --help.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// Input the model cannot take (a bad date, a malformed evaluation line): exit status 1.
struct InputError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The options both samples take; a sample's own Args derives from this and adds its options.
struct CommonArgs {
  std::string model;
  std::string device;
  std::string eval;
  std::size_t limit = 0;
  std::size_t batch = 256;
  double expect_accuracy = -1.0;
  WeightStorage weights = WeightStorage::automatic;  // --weights: the model's weight matrices
  std::vector<std::string> inputs;  // the positional arguments
  bool help = false;
};

// "N" of "--batch N": a positive whole number, else a UsageError naming the option.
std::size_t parse_count(const std::string& option, const std::string& value);

// Called for an option the common parser does not know: returns false when the sample does not
// know it either; `value()` takes the option's value (a UsageError when there is none).
using ExtraOption = std::function<bool(const std::string& option, const std::function<std::string()>& value)>;

// Fills `args` from argv (its defaults, e.g. the model directory, set by the caller) and checks
// the combinations: --eval takes no positional `input_name` arguments; --limit and
// --expect-accuracy only apply to --eval. --weights takes fp32, fp16 or int8.
void parse_common_args(int argc, char** argv, CommonArgs& args, std::string_view input_name,
                       const ExtraOption& extra);

// Calls `line` for each non-empty "left<TAB>right" line of `path` (at most `limit` of them when
// it is not 0), with "path:number" for error messages; `format` (e.g. "input<TAB>expected") names
// the expected form in the errors for a malformed line or a file without any such line.
void for_each_tab_line(const std::string& path, std::size_t limit, std::string_view format,
                       const std::function<void(const std::string& where, const std::string& left,
                                                const std::string& right)>& line);

// The OpOptions a sample loads its model with (--weights).
OpOptions model_options(const CommonArgs& args);

// 4 (with a message on stderr) when `accuracy` is below `expected` (a negative `expected`:
// none given), else 0.
int accuracy_status(std::string_view program, double accuracy, double expected);

// Runs a sample's `body` with a validation sink and maps what it throws to the exit status and a
// message on stderr prefixed with `program`; any validation message makes the status 3.
int run_sample(std::string_view program, const std::function<int(const ValidationSink&)>& body);

}  // namespace vkrnn::samples
