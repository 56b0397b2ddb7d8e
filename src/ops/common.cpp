#include "ops/common.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include <fmt/format.h>

#include "vkrnn/error.hpp"
#include "vkrnn/linear.hpp"

namespace vkrnn::ops {

std::uint32_t ceil_div(std::uint64_t a, std::uint64_t b) {
  return static_cast<std::uint32_t>((a + b - 1) / b);
}

std::uint32_t round_up(std::uint32_t a, std::uint32_t b) { return ceil_div(a, b) * b; }

Groups fold_groups(std::uint64_t total, const DeviceInfo& dev, const char* op, std::uint32_t dims) {
  std::uint64_t rest = std::max<std::uint64_t>(total, 1);
  std::uint32_t count[3] = {1, 1, 1};
  for (std::uint32_t i = 0; i < std::min(dims, 3u); ++i) {
    count[i] = static_cast<std::uint32_t>(std::min<std::uint64_t>(rest, std::max(1u, dev.max_workgroup_count[i])));
    rest = (rest + count[i] - 1) / count[i];
  }
  if (rest > 1) {
    throw Error(ErrorCode::out_of_range,
                fmt::format("{}: {} workgroups exceed maxComputeWorkGroupCount {} x {}{} of '{}'", op, total,
                            dev.max_workgroup_count[0], dev.max_workgroup_count[1],
                            dims >= 3 ? fmt::format(" x {}", dev.max_workgroup_count[2]) : std::string(), dev.name));
  }
  return {count[0], count[1], count[2]};
}

void expect(const char* op, const char* arg, const Tensor& t, const Shape& shape, DType dtype) {
  if (!t.valid()) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{}: argument '{}': expected {} {}, got an empty tensor", op, arg,
                            to_string(shape), to_string(dtype)));
  }
  if (t.shape() != shape || t.dtype() != dtype) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{}: argument '{}': expected {} {}, got {} {}{}", op, arg,
                            to_string(shape), to_string(dtype), to_string(t.shape()),
                            to_string(t.dtype()),
                            t.name().empty() ? std::string() : fmt::format(" ('{}')", t.name())));
  }
}

bool views_overlap(const MatrixView& a, const MatrixView& b) {
  const std::size_t a_ld = a.ld ? a.ld : a.cols, b_ld = b.ld ? b.ld : b.cols;
  for (std::size_t i = 0; i < a.rows; ++i) {
    const std::size_t a0 = a.offset + i * a_ld;
    for (std::size_t j = 0; j < b.rows; ++j) {
      const std::size_t b0 = b.offset + j * b_ld;
      if (a0 < b0 + b.cols && b0 < a0 + a.cols) return true;
    }
  }
  return false;
}

std::size_t expect_view(const char* op, const std::string& arg, const MatrixView& v) {
  const Tensor& t = v.tensor;
  const std::string what = t.valid() ? fmt::format("{} {}{}", to_string(t.dtype()), to_string(t.shape()),
                                                   t.name().empty() ? std::string() : fmt::format(" ('{}')", t.name()))
                                     : std::string("an empty tensor");
  if (!t.valid() || t.dtype() != DType::f32) {
    throw Error(ErrorCode::invalid_argument, fmt::format("{}: argument '{}': expected an f32 tensor, got {}", op, arg, what));
  }
  const std::size_t ld = v.ld ? v.ld : v.cols;
  if (v.rows == 0 || v.cols == 0 || ld < v.cols || v.offset + (v.rows - 1) * ld + v.cols > t.size()) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{}: argument '{}': a {} x {} view at offset {} with row stride {} does not fit in {}", op, arg,
                            v.rows, v.cols, v.offset, ld, what));
  }
  if (t.size() > std::numeric_limits<std::uint32_t>::max()) {
    throw Error(ErrorCode::out_of_range, fmt::format("{}: argument '{}' exceeds 32-bit indexing", op, arg));
  }
  return ld;
}

void require_fp16(const Context& ctx, const OpOptions& options, const char* op) {
  if (options.fp16_storage && !ctx.features().storage_buffer_16bit) {
    throw Error(ErrorCode::missing_feature,
                fmt::format("{}: OpOptions::fp16_storage needs storageBuffer16BitAccess "
                            "(VK_KHR_16bit_storage), which is not enabled on '{}'",
                            op, ctx.device().name));
  }
}

std::size_t first_bad_scale(std::span<const float> scales) {
  const auto bad = std::find_if(scales.begin(), scales.end(), [](float s) { return !std::isfinite(s) || s < 0.0f; });
  return static_cast<std::size_t>(bad - scales.begin());
}

std::vector<std::int8_t> pack_i8(std::span<const std::int8_t> q, std::span<const float> scales, std::size_t cols,
                                 std::size_t ld) {
  const std::size_t rows = scales.size();
  std::vector<std::int8_t> out(rows * ld + 4 * rows, 0);
  for (std::size_t r = 0; r < rows; ++r) {
    std::copy_n(q.begin() + static_cast<std::ptrdiff_t>(r * cols), cols, out.begin() + static_cast<std::ptrdiff_t>(r * ld));
  }
  std::memcpy(out.data() + rows * ld, scales.data(), 4 * rows);
  return out;
}

}  // namespace vkrnn::ops
