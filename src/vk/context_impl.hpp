#pragma once
// The private side of Context, Tensor and Kernel. Ops inside the library include this to reach
// the device; applications never see it.
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "vk/instance.hpp"
#include "vk/loader.hpp"
#include "vk/memory.hpp"
#include "vk/physical_device.hpp"
#include "vk/pipeline.hpp"
#include "vkrnn/context.hpp"

namespace vkrnn::detail {

struct TensorStorage;

struct ContextImpl : std::enable_shared_from_this<ContextImpl> {
  std::shared_ptr<vk::Instance> instance;
  vk::PhysicalDevice physical;
  VkDevice device = VK_NULL_HANDLE;
  bool owns_device = false;
  vk::DeviceFns fns{};
  VkQueue queue = VK_NULL_HANDLE;
  std::uint32_t queue_family = 0;
  EnabledFeatures features;
  ContextOptions options;

  std::unique_ptr<vk::Allocator> allocator;
  std::unique_ptr<vk::PipelineCache> pipeline_cache;

  std::mutex kernels_mutex;
  std::map<std::string, std::unique_ptr<KernelImpl>> kernels;

  // The buffers ops bind where a kernel's binding is unused (kernels::null_tensor, read-only
  // bindings; kernels::write_sink, writable ones): one of each per Context while something holds
  // it. Weak: a tensor keeps its Context alive.
  std::mutex null_binding_mutex;
  std::weak_ptr<TensorStorage> null_binding, write_sink;

  // vkQueueSubmit needs external synchronisation of the queue (the app must not submit to an
  // adopted queue concurrently from another thread: vkrnn serialises only its own submits).
  std::mutex queue_mutex;

  const DeviceInfo& info() const { return physical.info; }
  const std::string& name() const { return physical.info.name; }

  std::shared_ptr<KernelImpl> kernel(const KernelSpec& spec);
  void submit(const VkSubmitInfo& info, VkFence fence);

  ~ContextImpl();
};

struct TensorStorage {
  std::shared_ptr<ContextImpl> ctx;
  vk::Buffer buffer;
  DType dtype = DType::f32;
  Shape shape;
  std::size_t bytes = 0;
  std::string name;
  ~TensorStorage();
};

// A description of a tensor for error messages: "tensor 'keys' [2, 64, 256] f32".
std::string describe(const Tensor& t);

}  // namespace vkrnn::detail
