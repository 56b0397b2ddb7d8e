#include <fmt/format.h>

#include "vk/context_impl.hpp"
#include "vkrnn/tensor.hpp"

namespace vkrnn {

std::size_t dtype_size(DType dtype) noexcept {
  switch (dtype) {
    case DType::f32: return 4;
    case DType::f16: return 2;
    case DType::i32: return 4;
    case DType::u32: return 4;
    case DType::i8: return 1;
  }
  return 4;
}

const char* to_string(DType dtype) noexcept {
  switch (dtype) {
    case DType::f32: return "f32";
    case DType::f16: return "f16";
    case DType::i32: return "i32";
    case DType::u32: return "u32";
    case DType::i8: return "i8";
  }
  return "?";
}

std::size_t element_count(const Shape& shape) noexcept {
  std::size_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

std::string to_string(const Shape& shape) { return fmt::format("[{}]", fmt::join(shape, ", ")); }

Tensor::Tensor(std::shared_ptr<detail::TensorStorage> storage)
    : storage_(std::move(storage)), shape_(storage_ ? storage_->shape : Shape{}) {}

detail::TensorStorage& Tensor::storage() const {
  if (!storage_) throw Error(ErrorCode::state, "use of an empty vkrnn::Tensor");
  return *storage_;
}

const Shape& Tensor::shape() const {
  storage();
  return shape_;
}
std::size_t Tensor::dim(std::size_t axis) const {
  if (axis >= shape().size()) {
    throw Error(ErrorCode::out_of_range,
                fmt::format("{}: axis {} out of range", detail::describe(*this), axis));
  }
  return shape_[axis];
}
DType Tensor::dtype() const { return storage().dtype; }
std::size_t Tensor::size() const { return element_count(shape()); }
std::size_t Tensor::bytes() const { return size() * dtype_size(dtype()); }
const std::string& Tensor::name() const { return storage().name; }

Tensor Tensor::reshaped(const Shape& shape) const {
  if (element_count(shape) != size()) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("cannot reshape {} to {}: element counts differ",
                            detail::describe(*this), to_string(shape)));
  }
  Tensor t(storage_);
  t.shape_ = shape;
  return t;
}

}  // namespace vkrnn
