#pragma once
// What the build reads back from each kernel's SPIR-V (cmake/spirv_reflect.cpp writes one
// header per shader source, reflect/<source>.hpp, with a KernelInfo per compiled variant).
// src/ops/kernel_interface.hpp checks the ops' C++ declarations against it at compile time.
#include <cstdint>
#include <span>
#include <string_view>

namespace vkrnn::reflect {

enum class Scalar : std::uint8_t { none, boolean, u32, i32, f32, u32x4, i32x4, f32x4, other };

struct PushMember {
  std::string_view name;
  std::uint32_t offset, bytes;
  Scalar type;
};

// One binding of descriptor set 0: the names of every block aliased there (block and member
// names, space-separated) and whether every alias is readonly; or a uniform texel buffer
// (`texel`: its variable's name, read only).
struct BindingInfo {
  std::uint32_t binding;
  std::string_view names;
  bool read_only;
  bool texel;
};

// `name` is empty for the workgroup size (local_size_*_id).
struct SpecInfo {
  std::uint32_t id;
  std::string_view name;
  Scalar type;
};

struct KernelInfo {
  std::string_view name;
  std::uint32_t push_size;
  std::span<const PushMember> push;
  std::span<const BindingInfo> bindings;
  std::span<const SpecInfo> constants;
  // Shared memory of the pipeline specialized with `c` (words by constant_id, as KernelSpec
  // holds them), from the SPIR-V's own array sizes.
  std::uint64_t (*shared_bytes)(std::span<const std::uint32_t> c);
};

// Specialization constant `id` of `c`, or its default where `c` has no entry for it.
constexpr std::uint32_t spec(std::span<const std::uint32_t> c, std::uint32_t id,
                             std::uint32_t fallback) {
  return id < c.size() ? c[id] : fallback;
}

}  // namespace vkrnn::reflect
