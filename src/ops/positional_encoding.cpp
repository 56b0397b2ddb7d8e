#include "vkrnn/positional_encoding.hpp"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <vector>

#include <fmt/format.h>

#include "ops/common.hpp"
#include "ops/kernels/elementwise.hpp"
#include "plan.hpp"
#include "vkrnn/error.hpp"

namespace vkrnn {
namespace {

constexpr const char* kOp = "PositionalEncoding";

using K = kernels::PositionalEncoding;
using KInPlace = kernels::PositionalEncodingInPlace;

}  // namespace

PositionalEncoding::PositionalEncoding(Context& ctx, std::size_t d_model, const OpOptions& options)
    : ctx_(&ctx), d_model_(d_model) {
  if (d_model == 0) {
    throw Error(ErrorCode::invalid_argument, fmt::format("{}: d_model must be >= 1, got 0", kOp));
  }
  workgroup_size_ = plan::elementwise_workgroup(ctx.device(), options);

  // w_i / 2pi < 1/6 turns per position, as round(2^64 * w_i / 2pi), computed in long double
  // (64-bit mantissa on x86; double elsewhere is still good to ~2^-40 turns per position).
  const std::size_t pairs = (d_model + 1) / 2;
  std::vector<std::uint32_t> words(2 * pairs);
  for (std::size_t i = 0; i < pairs; ++i) {
    const long double w = std::exp(-static_cast<long double>(2 * i) *
                                   std::log(static_cast<long double>(10000)) /
                                   static_cast<long double>(d_model));
    const long double turns = w / (2 * std::numbers::pi_v<long double>);
    const auto fixed = static_cast<std::uint64_t>(std::llround(std::ldexp(turns, 64)));
    words[2 * i] = static_cast<std::uint32_t>(fixed);
    words[2 * i + 1] = static_cast<std::uint32_t>(fixed >> 32);
  }
  turns_ = ctx.tensor({2 * pairs}, DType::u32, "positional_encoding.turns");
  ctx.write(turns_, words);

  kernel_ = kernels::make<K>(ctx, {.local_size_x = workgroup_size_});
  kernel_inplace_ = kernels::make<KInPlace>(ctx, {.local_size_x = workgroup_size_});
}

void PositionalEncoding::record(Sequence& seq, const Tensor& x, const Tensor& out,
                                std::uint32_t position_offset) const {
  auto check = [&](const Tensor& t, const char* name) {
    const Shape& s = t.valid() ? t.shape() : Shape{};
    const bool ok = t.valid() && t.dtype() == DType::f32 && (s.size() == 2 || s.size() == 3) &&
                    s.back() == d_model_ && element_count(s) > 0;
    if (!ok) {
      throw Error(ErrorCode::invalid_argument,
                  fmt::format("{}: argument '{}': expected f32 [batch, S, {}] or [S, {}], got {}",
                              kOp, name, d_model_, d_model_,
                              t.valid() ? fmt::format("{} {}", to_string(t.dtype()), to_string(s))
                                        : std::string("an empty tensor")));
    }
  };
  check(x, "x");
  check(out, "out");
  if (out.shape() != x.shape()) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{}: argument 'out': expected the shape of x {}, got {}", kOp,
                            to_string(x.shape()), to_string(out.shape())));
  }
  const std::size_t S = x.dim(x.rank() - 2);
  const std::uint64_t rows = x.size() / d_model_;
  const std::uint64_t pairs = (d_model_ + 1) / 2;
  if (rows * pairs >= (std::uint64_t(1) << 32) ||
      std::uint64_t(S) - 1 + position_offset >= (std::uint64_t(1) << 32)) {
    throw Error(ErrorCode::out_of_range,
                fmt::format("{}: {} rows x {} column pairs from position {} exceed 32-bit indexing",
                            kOp, rows, pairs, position_offset));
  }
  const K::Push push{static_cast<std::uint32_t>(rows), static_cast<std::uint32_t>(S),
                     static_cast<std::uint32_t>(d_model_), static_cast<std::uint32_t>(pairs),
                     position_offset};
  const Groups grid = ops::fold_groups(ops::ceil_div(rows * pairs, workgroup_size_), ctx_->device(), kOp);
  if (x.storage_ptr() == out.storage_ptr()) {
    kernels::dispatch<KInPlace>(seq, kernel_inplace_, {.xs = out, .turns = turns_}, push, grid);
  } else {
    kernels::dispatch<K>(seq, kernel_, {.xs = x, .turns = turns_, .outs = out}, push, grid);
  }
}

}  // namespace vkrnn
