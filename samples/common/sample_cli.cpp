#include "common/sample_cli.hpp"

#include <cstdlib>
#include <exception>
#include <fstream>
#include <iostream>

#include <fmt/format.h>

#include "common/sample_support.hpp"
#include "vkrnn/error.hpp"

namespace vkrnn::samples {

std::size_t parse_count(const std::string& option, const std::string& value) {
  std::size_t used = 0;
  unsigned long long n = 0;
  try {
    n = std::stoull(value, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != value.size() || value.empty() || value[0] == '-' || n == 0) {
    throw UsageError(fmt::format("{} needs a positive whole number, got '{}'", option, value));
  }
  return static_cast<std::size_t>(n);
}

OpOptions model_options(const CommonArgs& args) {
  OpOptions o;
  o.weight_storage = args.weights;
  return o;
}

void parse_common_args(int argc, char** argv, CommonArgs& a, std::string_view input_name,
                       const ExtraOption& extra) {
  bool only_inputs = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const std::function<std::string()> value = [&]() -> std::string {
      if (i + 1 >= argc) throw UsageError(arg + " needs a value");
      return argv[++i];
    };
    if (only_inputs || arg.empty() || arg[0] != '-' || arg == "-") {
      a.inputs.push_back(arg);
    } else if (arg == "--") {
      only_inputs = true;
    } else if (arg == "-h" || arg == "--help") {
      a.help = true;
    } else if (arg == "--model") {
      a.model = value();
    } else if (arg == "--device") {
      a.device = value();
    } else if (arg == "--eval") {
      a.eval = value();
    } else if (arg == "--limit") {
      a.limit = parse_count(arg, value());
    } else if (arg == "--batch") {
      a.batch = parse_count(arg, value());
    } else if (arg == "--weights") {
      const std::string v = value();
      if (v == "fp32") {
        a.weights = WeightStorage::f32;
      } else if (v == "fp16") {
        a.weights = WeightStorage::f16;
      } else if (v == "int8") {
        a.weights = WeightStorage::i8;
      } else {
        throw UsageError("--weights takes fp32, fp16 or int8, got '" + v + "'");
      }
    } else if (arg == "--expect-accuracy") {
      const std::string v = value();
      char* end = nullptr;
      a.expect_accuracy = std::strtod(v.c_str(), &end);
      if (v.empty() || *end != '\0' || !(a.expect_accuracy >= 0.0 && a.expect_accuracy <= 100.0)) {
        throw UsageError("--expect-accuracy needs a percentage in [0, 100], got '" + v + "'");
      }
    } else if (!extra(arg, value)) {
      throw UsageError("unknown option '" + arg + "'");
    }
  }
  if (!a.eval.empty() && !a.inputs.empty()) {
    throw UsageError(fmt::format("--eval takes no {} arguments", input_name));
  }
  if (a.eval.empty() && (a.limit != 0 || a.expect_accuracy >= 0.0)) {
    throw UsageError("--limit and --expect-accuracy only apply to --eval");
  }
}

void for_each_tab_line(const std::string& path, std::size_t limit, std::string_view format,
                       const std::function<void(const std::string& where, const std::string& left,
                                                const std::string& right)>& line_fn) {
  std::ifstream in(path);
  if (!in) throw InputError(fmt::format("cannot open the evaluation file '{}'", path));
  std::size_t taken = 0;
  std::string line;
  for (std::size_t number = 1; std::getline(in, line); ++number) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    if (limit != 0 && taken == limit) break;
    const auto tab = line.find('\t');
    const std::string where = fmt::format("{}:{}", path, number);
    if (tab == std::string::npos || line.find('\t', tab + 1) != std::string::npos) {
      throw InputError(fmt::format("{}: expected \"{}\", got \"{}\"", where, format, line));
    }
    line_fn(where, line.substr(0, tab), line.substr(tab + 1));
    ++taken;
  }
  if (taken == 0) throw InputError(fmt::format("'{}' holds no \"{}\" lines", path, format));
}

int accuracy_status(std::string_view program, double accuracy, double expected) {
  if (expected >= 0.0 && accuracy < expected) {
    std::cerr << fmt::format("{}: accuracy {:.2f}% is below the expected {:.2f}%\n", program, accuracy, expected);
    return 4;
  }
  return 0;
}

int run_sample(std::string_view program, const std::function<int(const ValidationSink&)>& body) {
  ValidationMessages validation;
  int status = 0;
  try {
    status = body(validation.sink());
  } catch (const UsageError& e) {
    std::cerr << program << ": " << e.what() << "\n(" << program << " --help lists the options)\n";
    return 2;
  } catch (const vkrnn::Error& e) {
    std::cerr << program << ": error (" << vkrnn::to_string(e.code()) << "): " << e.what() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << program << ": error: " << e.what() << "\n";
    return 1;
  }
  if (validation.count() != 0) {
    std::cerr << program << ": the validation layer reported " << validation.count() << " message(s)\n";
    return 3;
  }
  return status;
}

}  // namespace vkrnn::samples
