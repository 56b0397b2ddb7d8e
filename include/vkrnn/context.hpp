#pragma once
// The Context owns (or adopts) a Vulkan device and queue, the memory allocator, the pipeline
// cache and every kernel. Everything else is made from it.
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <vulkan/vulkan.h>

#include "vkrnn/device.hpp"
#include "vkrnn/error.hpp"
#include "vkrnn/export.h"
#include "vkrnn/kernel.hpp"
#include "vkrnn/sequence.hpp"
#include "vkrnn/tensor.hpp"

namespace vkrnn {

enum class MessageSeverity { verbose, info, warning, error };
// Receives every validation-layer message (VK_EXT_debug_utils).
using ValidationSink = std::function<void(MessageSeverity, std::string_view message)>;

// Test-only: a smaller device than the one vkrnn runs on. Each field that is set lowers what
// Context::device() and features() report (nothing is raised), so every op plans -- and the
// runtime checks -- as on that smaller device, and the kernels it would get run here: a mobile
// GPU's shapes on lavapipe, checked against the CPU references (each op's LimitProfiles test). The
// subgroup size cannot be changed: shaders run with the real one.
struct DeviceLimits {
  std::uint32_t max_shared_memory = 0;          // maxComputeSharedMemorySize, bytes; 0: as is
  std::uint32_t max_workgroup_invocations = 0;  // also caps maxComputeWorkGroupSize; 0: as is
  std::uint32_t max_storage_buffers_per_stage = 0;  // maxPerStageDescriptorStorageBuffers
  std::uint32_t max_texel_buffer_elements = 0;      // maxTexelBufferElements
  bool no_subgroup_operations = false;  // only the basic subgroup operations
  bool no_storage_16bit = false;        // no storageBuffer16BitAccess
  bool gpu = false;                     // plan as an integrated GPU, even on a CPU driver
};

// A block of device memory from the app's allocator (ContextOptions::device_memory). vkrnn
// sub-allocates its buffers inside [offset, offset + allocation size).
struct DeviceMemoryBlock {
  VkDeviceMemory memory = VK_NULL_HANDLE;
  VkDeviceSize offset = 0;  // where the block starts inside `memory`
  // Host address of `offset` when the memory type is host-visible. Null: vkrnn maps the memory
  // itself, which is only valid when `memory` was allocated for this block alone.
  void* mapped = nullptr;
  void* user = nullptr;  // the app's own handle (e.g. a VmaAllocation), handed back to free()
};

// Device memory through the app's allocator (VMA or an engine's own) instead of
// vkAllocateMemory. vkrnn asks for few, large blocks (ContextOptions::memory_block_bytes, or one
// block for a tensor bigger than half of that) of the memory type it chose, and frees each one
// once nothing in it is used. Both functions are called with vkrnn's allocator lock held, from
// whichever thread creates or destroys a tensor.
struct DeviceMemoryHook {
  // Fill `block` and return VK_SUCCESS, or return an error VkResult (vkrnn throws
  // Error(vulkan) naming it). info.allocationSize and info.memoryTypeIndex are what vkrnn needs.
  std::function<VkResult(const VkMemoryAllocateInfo& info, DeviceMemoryBlock& block)> allocate;
  std::function<void(const DeviceMemoryBlock& block)> free;
};

struct ContextOptions {
  // "" -> the VKRNN_DEVICE environment variable, else the best device. An index or a
  // case-insensitive substring of the device name.
  std::string device;
  // unset -> VKRNN_VALIDATION=1 in the environment turns the Khronos layer on (with
  // synchronization validation).
  std::optional<bool> validation;
  ValidationSink validation_sink;  // default: print warnings and errors to stderr
  // Use device-local memory + staging copies even on unified-memory devices (tests use this
  // to cover the discrete-GPU path on lavapipe).
  bool force_staging = false;
  // Where the VkPipelineCache lives: "" -> VKRNN_CACHE_DIR, else $XDG_CACHE_HOME/vkrnn,
  // else %LOCALAPPDATA%\vkrnn (Windows), else ~/.cache/vkrnn. disable_pipeline_cache skips the
  // disk entirely.
  std::string cache_dir;
  bool disable_pipeline_cache = false;
  // An app-owned VkPipelineCache (an engine's, persisted by the engine): vkrnn creates every
  // pipeline through it and never loads, saves or destroys it (cache_dir is then unused). The
  // app must keep it alive, and not use it from another thread while vkrnn creates pipelines
  // unless it was created without VK_PIPELINE_CACHE_CREATE_EXTERNALLY_SYNCHRONIZED_BIT.
  VkPipelineCache pipeline_cache = VK_NULL_HANDLE;
  float queue_priority = 0.5f;  // below the maximum so a desktop never freezes
  std::uint64_t memory_block_bytes = 64ull << 20;
  // The most device memory (VkDeviceMemory bytes, staging included) vkrnn may hold; beyond it
  // tensor creation throws Error(out_of_range). 0: no limit of vkrnn's own (the heap size and,
  // where VK_EXT_memory_budget is enabled, the heap's budget still apply).
  std::uint64_t device_memory_limit = 0;
  // Device memory from the app's allocator (both functions set) instead of vkAllocateMemory.
  DeviceMemoryHook device_memory;
  // Host memory of every Vulkan object vkrnn creates (and of its own instance and device);
  // must outlive the Context. Null: the driver's allocator.
  const VkAllocationCallbacks* allocation_callbacks = nullptr;
  // Staging bytes one upload submission may hold while an UploadBatch is open; more is split
  // into several submissions (none waited for). 0: no batching -- every Context::write on the
  // staging path is its own submission, waited for (the behaviour before UploadBatch).
  std::uint64_t upload_batch_bytes = 256ull << 20;
  // VK_EXT_debug_utils object names and command-buffer labels (RenderDoc, Nsight, validation
  // messages show vkrnn's objects and work by name). unset -> on whenever the instance has the
  // extension (vkrnn's own instance enables it when the loader offers it; an adopted one when
  // ExternalDevice::features.debug_utils says the app enabled it).
  std::optional<bool> debug_labels;
  // Test-only: plan for a smaller device (DeviceLimits above).
  std::optional<DeviceLimits> limits;
};

// Handles an application already owns. vkrnn creates no instance or device for them and
// destroys nothing it did not create. The app declares what it enabled on the device.
struct ExternalDevice {
  VkInstance instance = VK_NULL_HANDLE;
  VkPhysicalDevice physical_device = VK_NULL_HANDLE;
  VkDevice device = VK_NULL_HANDLE;
  std::uint32_t queue_family = 0;
  std::uint32_t queue_index = 0;
  std::uint32_t api_version = VK_API_VERSION_1_1;  // the apiVersion the app's instance asked for
  // The app's own vkGetInstanceProcAddr (an engine that loads Vulkan itself, e.g. with volk):
  // vkrnn then reaches Vulkan only through it and loads no Vulkan loader. Null: vkrnn loads the
  // platform's loader (libvulkan.so.1, vulkan-1.dll, libvulkan.1.dylib / libMoltenVK.dylib).
  PFN_vkGetInstanceProcAddr get_instance_proc_addr = nullptr;
  struct Features {
    bool storage_buffer_16bit = false;  // VkPhysicalDevice16BitStorageFeatures
    bool shader_float16 = false;        // VkPhysicalDeviceShaderFloat16Int8Features
    bool subgroup_size_control = false; // VK_EXT_subgroup_size_control
    bool timeline_semaphore = false;    // timelineSemaphore (Vulkan 1.2 or VK_KHR_timeline_semaphore)
    bool memory_budget = false;         // VK_EXT_memory_budget enabled on the device
    bool debug_utils = false;           // VK_EXT_debug_utils enabled on the instance
  } features;
};

// The device features vkrnn has to work with on this context.
struct EnabledFeatures {
  bool storage_buffer_16bit = false;
  bool shader_float16 = false;
  bool subgroup_size_control = false;
  bool timeline_semaphore = false;  // SubmitSync values and TimelinePoint accepted
  bool memory_budget = false;       // MemoryStats::heaps carry budget and usage
  bool debug_labels = false;        // object names and command-buffer labels are emitted
};

// One memory heap as vkrnn sees it.
struct HeapMemory {
  std::uint32_t heap = 0;
  std::uint64_t size = 0;         // VkMemoryHeap::size
  std::uint64_t vkrnn_bytes = 0;  // device memory vkrnn holds in this heap
  // VK_EXT_memory_budget (0 without it): what the process may use of the heap, and what it
  // uses now (every API and the app's own allocations included).
  std::uint64_t budget = 0;
  std::uint64_t usage = 0;
};

// vkrnn's own device memory (Context::memory_stats()).
struct MemoryStats {
  std::uint32_t device_memory_blocks = 0;  // VkDeviceMemory blocks held (vkAllocateMemory or the hook)
  std::uint64_t device_memory_bytes = 0;   // their bytes: what vkrnn takes from the device
  std::uint64_t peak_device_memory_bytes = 0;
  std::uint32_t live_buffers = 0;          // VkBuffers alive (tensors and staging)
  std::uint64_t live_buffer_bytes = 0;
  std::uint64_t staging_bytes = 0;         // of live_buffer_bytes: host-visible staging buffers
  bool budget_known = false;               // heaps[].budget / usage are filled
  std::vector<HeapMemory> heaps;           // every heap of the device
};

// Pipeline creation on this context (Context::pipeline_stats()).
struct PipelineStats {
  std::uint32_t kernels = 0;     // pipelines created
  double create_ms = 0.0;        // host time inside vkCreateComputePipelines
  // Pipelines the driver found in the VkPipelineCache (VK_EXT_pipeline_creation_feedback /
  // Vulkan 1.3; stays 0 on drivers that do not say, and on lavapipe, whose cache is empty).
  std::uint32_t cache_hits = 0;
  std::uint32_t prebuilt = 0;    // kernels run once by Context::prebuild
};

// A KernelSpec as one line of text ("shader|bindings|push bytes|c0,c1,..."), and back: apps
// keep the list of Context::kernel_specs() from one run and prebuild it at the next start.
VKRNN_API std::string to_string(const KernelSpec& spec);
VKRNN_API KernelSpec parse_kernel_spec(std::string_view text);  // Error(format) naming the text

struct PrebuildOptions {
  bool background = false;  // build on a thread of its own; prebuild() returns at once
  bool save_cache = true;   // write the on-disk pipeline cache when done
};

// What a model's warm_up() (Seq2Seq, Classifier) runs before the first real job: one small job
// (a few decoder steps) per batch size x length x mode, so that every pipeline that job needs is
// created and compiled, its attention plan made and its scratch memory touched, and the
// pipeline cache written. A shape or mode left out is built at its first use, as without warm_up.
struct WarmUpOptions {
  std::vector<std::size_t> batch_sizes{1};  // B of the jobs to come
  std::vector<std::size_t> lengths{32};     // source (Seq2Seq) or input (Classifier) lengths, tokens
  bool greedy = true;                       // Seq2Seq::greedy and the incremental steps (same kernels)
  bool beam = true;                         // Seq2Seq::beam
  std::size_t beam_width = 0;               // 0: the model's
  // On a thread of its own; warm_up() returns at once. Do not use the model until the task is
  // done() (a model records from one thread at a time); the Context stays usable.
  bool background = false;
};

// Work that warms up pipelines: Context::prebuild, the models' warm_up(). Its destructor waits
// for background work to finish.
class VKRNN_API WarmUpTask {
 public:
  // Runs `work` now, or on a thread of its own with `background`.
  static WarmUpTask start(std::function<void()> work, bool background);
  WarmUpTask() = default;
  WarmUpTask(WarmUpTask&&) noexcept;
  WarmUpTask& operator=(WarmUpTask&&) noexcept;
  ~WarmUpTask();
  bool done() const;
  void wait();  // rethrows what the build threw
  struct State;

 private:
  std::shared_ptr<State> state_;
};

namespace detail {
struct ContextImpl;
}

class Context;

// Completion of batched uploads (UploadBatch::submit). Cheap to copy; does not keep the
// staging memory alive (vkrnn frees it once the GPU is done).
class VKRNN_API UploadTicket {
 public:
  UploadTicket() = default;  // done
  bool done() const;          // polls vkrnn's own fence(s); never blocks
  // Blocks until the uploads finished; false on timeout. Error(state) when an enclosing
  // UploadBatch still holds them (nothing was submitted yet).
  bool wait(std::uint64_t timeout_ns = UINT64_MAX) const;

 private:
  friend class UploadBatch;
  std::shared_ptr<detail::ContextImpl> ctx_;
  std::uint64_t chunk_ = 0;
};

// Batches uploads: while one is open, every Context::write on the staging path (discrete GPUs,
// force_staging) -- from any thread -- is recorded into one command buffer instead of being
// submitted and waited for on its own, and submit() sends them as one submission
// (ContextOptions::upload_batch_bytes bounds the staging one submission holds). Writes on
// unified memory stay plain memcpys. Work vkrnn submits or records later on this Context is
// always ordered after the uploads (they are flushed first), so a decode may be submitted
// before the ticket is done: it queues behind them on the GPU. Batches nest; only the
// outermost one submits. Seq2Seq / Classifier loading opens one, so a model's weights are one
// submission; open your own around the load to return before the GPU upload is done:
//
//   vkrnn::UploadBatch uploads(ctx);
//   auto model = vkrnn::Seq2Seq::load(ctx, dir);   // reads the files, records the uploads
//   vkrnn::UploadTicket ready = uploads.submit();  // one submission; returns at once
//   ... ready.done() polls, ready.wait() blocks
class VKRNN_API UploadBatch {
 public:
  explicit UploadBatch(Context& ctx);
  ~UploadBatch();  // submit() unless done already; never waits
  UploadBatch(const UploadBatch&) = delete;
  UploadBatch& operator=(const UploadBatch&) = delete;
  // Closes the batch. The outermost one submits what was recorded; an inner one's ticket is
  // done once the outermost has submitted and the GPU finished.
  UploadTicket submit();
  // submit(), then wait unless an enclosing batch holds the uploads (what model loading does).
  void finish();

 private:
  std::shared_ptr<detail::ContextImpl> ctx_;
  bool open_ = true;
};

class VKRNN_API Context {
 public:
  explicit Context(const ContextOptions& options = {});
  static Context adopt(const ExternalDevice& external, const ContextOptions& options = {});

  Context(Context&&) noexcept = default;
  Context& operator=(Context&&) noexcept = default;
  ~Context();

  const DeviceInfo& device() const;
  const EnabledFeatures& features() const;
  bool owns_device() const;  // false for adopted handles
  VkDevice vk_device() const;
  VkQueue vk_queue() const;

  Tensor tensor(const Shape& shape, DType dtype = DType::f32, std::string name = {});
  Tensor tensor(const Shape& shape, std::span<const float> data, std::string name = {});

  // Blocking convenience copies for loading weights and tests. On unified memory they are a
  // memcpy; otherwise a staging copy submitted and waited for. The tensor must not be in use
  // by work still in flight.
  void write(const Tensor& dst, std::span<const std::byte> data);
  template <class T>
  void write(const Tensor& dst, std::span<const T> data) {
    write(dst, std::as_bytes(data));
  }
  template <class T>
  void write(const Tensor& dst, const std::vector<T>& data) {
    write(dst, std::as_bytes(std::span<const T>(data)));
  }
  void read(const Tensor& src, std::span<std::byte> data) const;
  template <class T>
  std::vector<T> read(const Tensor& src) const {
    std::vector<T> v(src.bytes() / sizeof(T));
    read(src, std::as_writable_bytes(std::span<T>(v)));
    return v;
  }

  Kernel kernel(const KernelSpec& spec);
  Sequence sequence(const SequenceOptions& options = {});

  // --- warm start ------------------------------------------------------------------
  // Creates the pipelines of `specs` (those already built cost nothing) and runs each once on
  // an empty dispatch, so drivers that compile at first use (lavapipe's LLVM) compile now, not
  // inside the first real decode. One submission, waited for (vkrnn's own fence). Models offer
  // warm_up() for their decode modes; this is the list-driven form (kernel_specs() of a
  // representative run, saved with to_string()). With options.background the work runs on a
  // thread of its own (kernel creation is thread-safe; the Context must outlive the task).
  WarmUpTask prebuild(std::vector<KernelSpec> specs, const PrebuildOptions& options = {});
  std::vector<KernelSpec> kernel_specs() const;  // every kernel this context has created
  PipelineStats pipeline_stats() const;

  void save_pipeline_cache() const;  // also done on destruction and after prebuild
  std::string pipeline_cache_path() const;  // "" when disabled or app-owned
  bool pipeline_cache_loaded() const;       // a valid cache file for this device was found

  // vkrnn's device memory, and per heap its share, the heap size and (VK_EXT_memory_budget)
  // the process's budget and usage, queried now.
  MemoryStats memory_stats() const;

  detail::ContextImpl& impl() const { return *impl_; }
  const std::shared_ptr<detail::ContextImpl>& impl_ptr() const { return impl_; }

 private:
  explicit Context(std::shared_ptr<detail::ContextImpl> impl);
  std::shared_ptr<detail::ContextImpl> impl_;
};

}  // namespace vkrnn
