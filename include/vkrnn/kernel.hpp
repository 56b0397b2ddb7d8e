#pragma once
// A Kernel is a compute pipeline made from an embedded shader plus its specialization
// constants. Contexts cache kernels by spec, so asking twice costs a map lookup.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "vkrnn/export.h"

namespace vkrnn {

struct KernelSpec {
  std::string shader;  // name in the embedded registry: shaders/<name>.comp
  // Specialization constants: constants[i] feeds constant_id = i, as raw 32-bit words
  // (use std::bit_cast for floats). By convention ids 0, 1, 2 are local_size_x/y/z.
  std::vector<std::uint32_t> constants;
  // Bindings at set 0, 0..n-1: storage buffers, except those the SPIR-V declares as uniform
  // texel buffers (usamplerBuffer), which take an R32G32B32A32_UINT view of their tensor.
  std::uint32_t bindings = 0;
  std::uint32_t push_constant_bytes = 0; // size of the push-constant block (<= 128)

  bool operator==(const KernelSpec&) const = default;
};

namespace detail {
struct KernelImpl;
}

class VKRNN_API Kernel {
 public:
  Kernel() = default;
  explicit Kernel(std::shared_ptr<detail::KernelImpl> impl) : impl_(std::move(impl)) {}
  const KernelSpec& spec() const;
  bool valid() const noexcept { return impl_ != nullptr; }
  detail::KernelImpl& impl() const;

 private:
  std::shared_ptr<detail::KernelImpl> impl_;
};

// Names of every embedded shader.
VKRNN_API std::vector<std::string> shader_names();

}  // namespace vkrnn
