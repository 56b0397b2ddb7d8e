#pragma once
// The private side of Context, Tensor and Kernel. Ops inside the library include this to reach
// the device; applications never see it.
#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <unordered_set>
#include <vector>

#include "vk/instance.hpp"
#include "vk/loader.hpp"
#include "vk/memory.hpp"
#include "vk/physical_device.hpp"
#include "vk/pipeline.hpp"
#include "vkrnn/context.hpp"

namespace vkrnn::detail {

struct TensorStorage;

// One submission of batched uploads (UploadBatch): staging copies into tensors.
struct UploadChunk {
  std::uint64_t id = 0;
  VkCommandPool pool = VK_NULL_HANDLE;
  VkCommandBuffer cb = VK_NULL_HANDLE;
  VkFence fence = VK_NULL_HANDLE;
  std::vector<vk::Buffer> staging;
  std::unordered_set<VkBuffer> written;       // destinations since the last barrier (WAW)
  std::unordered_set<VkBuffer> destinations;  // every destination
  VkDeviceSize bytes = 0;
  std::uint32_t copies = 0;
};

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
  PipelineStats pipeline_stats;  // under kernels_mutex
  bool creation_feedback = false;  // VkPipelineCreationFeedbackCreateInfo may be chained

  // The buffers ops bind where a kernel's binding is unused (kernels::null_tensor, read-only
  // bindings; kernels::write_sink, writable ones): one of each per Context while something holds
  // it. Weak: a tensor keeps its Context alive.
  std::mutex null_binding_mutex;
  std::weak_ptr<TensorStorage> null_binding, write_sink;

  // vkQueueSubmit needs external synchronisation of the queue (the app must not submit to an
  // adopted queue concurrently from another thread: vkrnn serialises only its own submits).
  std::mutex queue_mutex;
  std::atomic<std::uint64_t> queue_submits{0};  // vkQueueSubmit calls vkrnn made (tests count them)

  // Batched uploads (UploadBatch). Lock order: upload_mutex before queue_mutex.
  std::mutex upload_mutex;
  std::uint32_t upload_depth = 0;                 // open UploadBatch scopes
  std::unique_ptr<UploadChunk> upload_recording;  // not yet submitted
  std::vector<std::unique_ptr<UploadChunk>> uploads_in_flight;
  std::atomic<std::uint32_t> uploads_in_flight_count{0};
  std::uint64_t next_upload_chunk = 1;
  std::uint64_t uploads_retired_through = 0;      // every chunk with id <= this is done

  const DeviceInfo& info() const { return physical.info; }
  const std::string& name() const { return physical.info.name; }
  const VkAllocationCallbacks* host_alloc() const { return options.allocation_callbacks; }

  std::shared_ptr<KernelImpl> kernel(const KernelSpec& spec);
  // vkQueueSubmit on vkrnn's queue, after any batched uploads still recording.
  void submit(const VkSubmitInfo& info, VkFence fence);

  // VK_EXT_debug_utils object name (no-op when debug labels are off).
  void name_object(VkObjectType type, std::uint64_t handle, const std::string& name) const;
  template <class Handle>
  void name_object(VkObjectType type, Handle handle, const std::string& name) const {
    name_object(type, reinterpret_cast<std::uint64_t>(handle), name);
  }

  // Uploads (Context::write on the staging path). Returns false when no batch is open (the
  // caller then submits and waits on its own).
  bool batch_upload(const TensorStorage& dst, std::span<const std::byte> data);
  void begin_upload_batch();
  std::uint64_t end_upload_batch();  // the last chunk's id (0: nothing recorded)
  // Submits the recording chunk (if any); caller holds upload_mutex.
  void flush_uploads_locked();
  void flush_uploads();
  // Frees the staging of finished chunks; with `wait`, waits for all in flight first.
  void retire_uploads(bool wait);
  bool upload_done(std::uint64_t chunk);
  bool wait_upload(std::uint64_t chunk, std::uint64_t timeout_ns);
  // A tensor's buffer is about to go: uploads into it (recording or in flight) finish first.
  void release_upload_destination(VkBuffer buffer);

  ~ContextImpl();
};

struct TensorStorage {
  std::shared_ptr<ContextImpl> ctx;
  vk::Buffer buffer;
  DType dtype = DType::f32;
  Shape shape;
  std::size_t bytes = 0;
  std::string name;
  // A VK_FORMAT_R32G32B32A32_UINT view of the whole buffer (capped at maxTexelBufferElements),
  // made on first use as a uniform texel buffer.
  std::mutex view_mutex;
  VkBufferView texel_view = VK_NULL_HANDLE;
  std::uint64_t texel_count = 0;  // texels the view holds
  VkBufferView texel_view_handle();
  ~TensorStorage();
};

// A description of a tensor for error messages: "tensor 'keys' [2, 64, 256] f32".
std::string describe(const Tensor& t);

// A new device tensor (what Context::tensor makes), named for debug tools.
Tensor make_tensor(const std::shared_ptr<ContextImpl>& c, const Shape& shape, DType dtype, std::string name);

}  // namespace vkrnn::detail
