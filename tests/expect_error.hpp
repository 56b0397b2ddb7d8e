#pragma once
// expect_error(): the call must throw a vkrnn::Error with this code whose message names every
// fragment. Shared by the test executables (one copy of the try/catch instead of one per file).
#include <string>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <gtest/gtest.h>

#include "vkrnn/error.hpp"

namespace vkrnn::test {

template <class Fn>
void expect_error(Fn&& fn, ErrorCode code, const std::vector<std::string>& fragments) {
  try {
    fn();
    ADD_FAILURE() << "no error thrown; expected " << to_string(code) << " mentioning "
                  << fmt::format("'{}'", fmt::join(fragments, "', '"));
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    for (const auto& f : fragments) EXPECT_NE(std::string(e.what()).find(f), std::string::npos) << "'" << f << "' not in: " << e.what();
  }
}

}  // namespace vkrnn::test
