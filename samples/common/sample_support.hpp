#pragma once
// Small helpers the command-line samples share (dates, sentiment). Only the public vkrnn API.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include <unistd.h>

#include "vkrnn/context.hpp"
#include "vkrnn/device.hpp"

namespace vkrnn::samples {

// Collects the validation layer's warnings and errors (VKRNN_VALIDATION=1 turns the layer on):
// the samples print them and exit non-zero, so a sample run in CI fails on any message.
class ValidationMessages {
 public:
  ValidationSink sink() {
    return [this](MessageSeverity severity, std::string_view message) {
      if (severity != MessageSeverity::warning && severity != MessageSeverity::error) return;
      std::lock_guard lock(mutex_);
      std::cerr << "validation: " << message << "\n";
      ++count_;
    };
  }
  std::size_t count() const {
    std::lock_guard lock(mutex_);
    return count_;
  }

 private:
  mutable std::mutex mutex_;
  std::size_t count_ = 0;
};

inline std::string describe_device(const DeviceInfo& d) {
  std::string s = d.name + " (" + to_string(d.type);
  if (!d.driver_name.empty()) s += ", " + d.driver_name;
  return s + ")";
}

class Stopwatch {
 public:
  double ms() const {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start_).count();
  }

 private:
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

inline bool stdout_is_tty() { return ::isatty(STDOUT_FILENO) == 1; }

// The code points of valid UTF-8 text, each as its own UTF-8 string (the tokenizer has already
// rejected invalid UTF-8 by the time this is called).
inline std::vector<std::string> utf8_characters(std::string_view text) {
  std::vector<std::string> out;
  for (std::size_t i = 0; i < text.size();) {
    const auto c = static_cast<unsigned char>(text[i]);
    const std::size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : 4;
    out.emplace_back(text.substr(i, n));
    i += n;
  }
  return out;
}

// "U+20AC" for a one-code-point UTF-8 string.
inline std::string code_point_name(std::string_view ch) {
  std::uint32_t cp = static_cast<unsigned char>(ch[0]);
  if (ch.size() == 2) cp = cp & 0x1F;
  if (ch.size() == 3) cp = cp & 0x0F;
  if (ch.size() == 4) cp = cp & 0x07;
  for (std::size_t i = 1; i < ch.size(); ++i) cp = (cp << 6) | (static_cast<unsigned char>(ch[i]) & 0x3F);
  char buf[16];
  std::snprintf(buf, sizeof buf, "U+%04X", cp);
  return buf;
}

// One line of text per input: the arguments, or stdin's non-empty lines when there are none.
inline std::vector<std::string> inputs_or_stdin(const std::vector<std::string>& args) {
  if (!args.empty()) return args;
  std::vector<std::string> lines;
  std::string line;
  while (std::getline(std::cin, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!line.empty()) lines.push_back(line);
  }
  return lines;
}

}  // namespace vkrnn::samples
