#pragma once
// Shared by the libFuzzer targets (tests/fuzz/README.md): the contract every target checks is
// that the code under test returns or throws vkrnn::Error -- any other exception escapes
// LLVMFuzzerTestOneInput and libFuzzer reports it as a crash, as it does every ASan/UBSan
// finding, hang (-timeout) and allocation beyond -rss_limit_mb / -malloc_limit_mb.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstdio>

#include "vkrnn/error.hpp"

namespace vkrnn::fuzz {

// Runs `body`; vkrnn::Error is an accepted outcome for any input.
template <class F>
int run(F&& body) {
  try {
    body();
  } catch (const Error&) {
  }
  return 0;
}

// A broken invariant on an accepted input: a bug, reported as a crash.
[[noreturn]] inline void invariant_failed(const char* what) {
  std::fprintf(stderr, "vkrnn fuzz: invariant broken: %s\n", what);
  std::abort();
}

inline std::uint32_t load_u32(const std::uint8_t* p) {
  return std::uint32_t(p[0]) | std::uint32_t(p[1]) << 8 | std::uint32_t(p[2]) << 16 | std::uint32_t(p[3]) << 24;
}

}  // namespace vkrnn::fuzz
