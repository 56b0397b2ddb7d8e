#pragma once
// Tensors: typed, shaped device buffers. A Tensor is a cheap, shared handle: copies refer to
// the same memory, which lives until the last handle (and any sequence using it) is gone.
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "vkrnn/export.h"

namespace vkrnn {

// i8: int8 dense-layer weights (Gemm/Linear, with per-row f32 scales): kernels read them four per
// 32-bit word, so an i8 weight's rows start at multiples of 4 elements.
enum class DType : std::uint8_t { f32, f16, i32, u32, i8 };
VKRNN_API std::size_t dtype_size(DType dtype) noexcept;
VKRNN_API const char* to_string(DType dtype) noexcept;

using Shape = std::vector<std::size_t>;
VKRNN_API std::size_t element_count(const Shape& shape) noexcept;
VKRNN_API std::string to_string(const Shape& shape);

namespace detail {
struct TensorStorage;
}

class VKRNN_API Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<detail::TensorStorage> storage);

  const Shape& shape() const;
  std::size_t dim(std::size_t axis) const;
  std::size_t rank() const { return shape().size(); }
  DType dtype() const;
  std::size_t size() const;        // elements
  std::size_t bytes() const;       // size() * dtype_size(dtype())
  const std::string& name() const; // for error messages; may be empty
  bool valid() const noexcept { return storage_ != nullptr; }

  // A new handle on the same memory with another shape of the same element count.
  Tensor reshaped(const Shape& shape) const;

  detail::TensorStorage& storage() const;
  const std::shared_ptr<detail::TensorStorage>& storage_ptr() const { return storage_; }

 private:
  std::shared_ptr<detail::TensorStorage> storage_;
  Shape shape_;
};

}  // namespace vkrnn
