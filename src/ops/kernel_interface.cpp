#include "ops/kernel_interface.hpp"

#include <mutex>

#include <fmt/format.h>

#include "vk/context_impl.hpp"
#include "vkrnn/error.hpp"

namespace vkrnn::kernels {

std::string variant_name(std::string_view base, const Variant& v) {
  std::string name(base);
  if (v.shuffle) name += suffix_shuffle;
  if (v.fp16) name += suffix_fp16;
  if (!v.subgroup) name += suffix_nosubgroup;
  if (v.in_place) name += suffix_in_place;
  return name;
}

void check_variant(std::string_view base, const Axes& axes, const Variant& variant) {
  if (!allowed(axes, variant)) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("kernel '{}' has no variant '{}' (see shaders/variants.cmake)", base,
                            variant_name(base, variant)));
  }
}

void check_limits(const Context& ctx, const std::string& kernel, std::uint32_t storage_buffers,
                  std::uint64_t shared_bytes) {
  const DeviceInfo& dev = ctx.device();
  if (storage_buffers > dev.max_storage_buffers_per_stage) {
    throw Error(ErrorCode::out_of_range,
                fmt::format("kernel '{}' binds {} storage buffers; '{}' allows {} per shader stage "
                            "(maxPerStageDescriptorStorageBuffers)",
                            kernel, storage_buffers, dev.name, dev.max_storage_buffers_per_stage));
  }
  if (shared_bytes > dev.max_shared_memory) {
    throw Error(ErrorCode::out_of_range,
                fmt::format("kernel '{}' needs {} bytes of shared memory; '{}' has {} "
                            "(maxComputeSharedMemorySize)",
                            kernel, shared_bytes, dev.name, dev.max_shared_memory));
  }
}

Tensor write_sink(const Tensor& null) {
  if (!null.valid()) {
    throw Error(ErrorCode::state, "a kernel binding left unused, but the op holds no null buffer");
  }
  detail::ContextImpl& c = *null.storage().ctx;
  std::lock_guard lock(c.null_binding_mutex);
  if (auto storage = c.write_sink.lock()) return Tensor(std::move(storage));
  auto s = std::make_shared<detail::TensorStorage>();
  s->ctx = c.shared_from_this();
  s->dtype = DType::u32;
  s->shape = {4};
  s->bytes = 16;
  s->name = "unused writable binding";
  s->buffer = c.allocator->create_buffer(s->bytes, vk::MemoryUsage::device,
                                         "tensor 'unused writable binding' [4] u32");
  c.write_sink = s;
  return Tensor(std::move(s));
}

Tensor null_tensor(Context& ctx) {
  detail::ContextImpl& c = ctx.impl();
  std::lock_guard lock(c.null_binding_mutex);
  if (auto storage = c.null_binding.lock()) return Tensor(std::move(storage));
  Tensor t = ctx.tensor({4}, DType::u32, "null binding");
  ctx.write(t, std::vector<std::uint32_t>(4, 0u));
  c.null_binding = t.storage_ptr();
  return t;
}

}  // namespace vkrnn::kernels
