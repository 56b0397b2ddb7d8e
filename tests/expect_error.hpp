#pragma once
// expect_error(): the call must throw a vkrnn::Error with this code whose message names every
// fragment. Shared by the model tests (test_models_*.cpp).
#include <initializer_list>
#include <string>

#include <gtest/gtest.h>

#include "vkrnn/error.hpp"

namespace vkrnn::test {

template <class Fn>
void expect_error(Fn&& fn, ErrorCode code, std::initializer_list<std::string> fragments) {
  try {
    fn();
    ADD_FAILURE() << "no error thrown";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    for (const auto& f : fragments) EXPECT_NE(std::string(e.what()).find(f), std::string::npos) << "'" << f << "' not in: " << e.what();
  }
}

}  // namespace vkrnn::test
