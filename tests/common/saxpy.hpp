#pragma once
// The saxpy kernel (shaders/saxpy.comp: y += a * x) as the runtime tests record it.
#include <cstdint>

#include "vkrnn/context.hpp"
#include "vkrnn/sequence.hpp"

namespace vkrnn::test {

struct SaxpyPush {
  std::uint32_t n;
  float a;
};

inline Kernel saxpy(Context& ctx, std::uint32_t wg = 64) { return ctx.kernel({"saxpy", {wg, 1, 1}, 2, 8}); }

inline void record_saxpy(Sequence& seq, const Kernel& k, const Tensor& x, const Tensor& y, float a) {
  const auto n = static_cast<std::uint32_t>(x.size());
  const auto wg = k.spec().constants[0];
  seq.dispatch(k, {in(x), inout(y)}, SaxpyPush{n, a}, {(n + wg - 1) / wg, 1, 1});
}

}  // namespace vkrnn::test
