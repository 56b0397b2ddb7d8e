#pragma once
// Helpers every op uses: argument checks, grid folding, integer rounding.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "vkrnn/context.hpp"
#include "vkrnn/device.hpp"
#include "vkrnn/options.hpp"
#include "vkrnn/sequence.hpp"
#include "vkrnn/tensor.hpp"

namespace vkrnn {
struct MatrixView;
}

namespace vkrnn::ops {

std::uint32_t ceil_div(std::uint64_t a, std::uint64_t b);
std::uint32_t round_up(std::uint32_t a, std::uint32_t b);

// Spreads `total` workgroups over x and y, or x, y and z with dims = 3 (the shaders unfold
// gl_WorkGroupID); throws Error(out_of_range) naming `op` when even the whole grid cannot hold
// them.
Groups fold_groups(std::uint64_t total, const DeviceInfo& dev, const char* op, std::uint32_t dims = 2);

// Throws Error(invalid_argument): "<op>: argument '<arg>': expected [..] f32, got [..] f16".
void expect(const char* op, const char* arg, const Tensor& t, const Shape& shape, DType dtype);

// An f32 view that lies inside its tensor (rows and cols >= 1, row stride >= cols); returns
// its row stride. Error(invalid_argument) "<op>: argument '<arg>': ... does not fit in ...", or
// Error(out_of_range) beyond 32-bit indexing.
std::size_t expect_view(const char* op, const std::string& arg, const MatrixView& v);

// Whether two tensors are (views of) the same memory.
inline bool same_memory(const Tensor& a, const Tensor& b) {
  return a.valid() && b.valid() && a.storage_ptr() == b.storage_ptr();
}

// Whether two views of one tensor share an element (any row of one against any row of the other).
bool views_overlap(const MatrixView& a, const MatrixView& b);

// Throws Error(missing_feature) when fp16 storage is asked for but not enabled on the context.
void require_fp16(const Context& ctx, const OpOptions& options, const char* op);

// The row stride of int8 weights on the device: `cols` rounded up to whole 32-bit words.
inline std::size_t i8_row_stride(std::size_t cols) { return (cols + 3) / 4 * 4; }

// The first int8 row scale that is not finite and >= 0, or scales.size() when all are.
std::size_t first_bad_scale(std::span<const float> scales);

// Gemm::record_i8's weight layout: int8 q [rows, cols] with each row padded with zeros to `ld`
// columns (a multiple of 4: whole 32-bit words), then the rows' f32 scales (rows = scales.size()).
std::vector<std::int8_t> pack_i8(std::span<const std::int8_t> q, std::span<const float> scales, std::size_t cols,
                                 std::size_t ld);

// Linear's packed weight layout (plan::pack_rows, gemv_block.glsl's PACK_ROWS): a rows x cols
// row-major matrix as blocks of `block` rows (the last one may hold fewer: r rows), each block
// stored unit by unit (`unit` elements, 16 bytes): element (n, k), first = n / block * block, at
// (first * ld_units + k / unit * r + n - first) * unit + k % unit, ld_units = ceil(cols / unit).
// Columns are padded with zeros to whole units: rows * ld_units * unit elements.
template <class T>
std::vector<T> pack_row_blocks(std::span<const T> w, std::size_t rows, std::size_t cols, std::size_t block,
                               std::size_t unit) {
  const std::size_t ld_units = (cols + unit - 1) / unit;
  std::vector<T> out(rows * ld_units * unit, T{});
  for (std::size_t n = 0; n < rows; ++n) {
    const std::size_t first = n / block * block, r = std::min(block, rows - first);
    for (std::size_t k = 0; k < cols; ++k) {
      out[(first * ld_units + k / unit * r + n - first) * unit + k % unit] = w[n * cols + k];
    }
  }
  return out;
}

// The recurrent kernels' packed W_hh (plan::Rnn::pack_units, rnn_dots.glsl's w_walk): D
// directions of G gates x H rows of `cols` elements (PyTorch's [D][G*H][cols], cols a multiple
// of `unit`, the elements in 16 bytes) as, per direction, blocks of `block` hidden units (the
// last may hold fewer: n), each block's G * n rows gate by gate, stored unit by unit: row
// (d, g, j) at index (d * G * H + j0 * G) * units + u * G * n + g * n + j - j0 of 16-byte unit u,
// j0 = j / block * block, units = cols / unit. The same number of elements.
template <class T>
std::vector<T> pack_gate_blocks(std::span<const T> w, std::size_t D, std::size_t G, std::size_t H, std::size_t cols,
                                std::size_t unit, std::size_t block) {
  const std::size_t units = cols / unit;
  std::vector<T> out(w.size(), T{});
  for (std::size_t d = 0; d < D; ++d) {
    for (std::size_t g = 0; g < G; ++g) {
      for (std::size_t j = 0; j < H; ++j) {
        const std::size_t j0 = j / block * block, n = std::min(block, H - j0);
        const std::size_t first = (d * G * H + j0 * G) * units + g * n + j - j0;
        const T* row = &w[((d * G + g) * H + j) * cols];
        for (std::size_t u = 0; u < units; ++u) {
          std::copy(row + u * unit, row + (u + 1) * unit, &out[(first + u * G * n) * unit]);
        }
      }
    }
  }
  return out;
}

}  // namespace vkrnn::ops
