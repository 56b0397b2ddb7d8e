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
// GPU's shapes on lavapipe, checked against the CPU references (tests/test_limits.cpp). The
// subgroup size cannot be changed: shaders run with the real one.
struct DeviceLimits {
  std::uint32_t max_shared_memory = 0;          // maxComputeSharedMemorySize, bytes; 0: as is
  std::uint32_t max_workgroup_invocations = 0;  // also caps maxComputeWorkGroupSize; 0: as is
  std::uint32_t max_storage_buffers_per_stage = 0;  // maxPerStageDescriptorStorageBuffers
  bool no_subgroup_operations = false;  // only the basic subgroup operations
  bool no_storage_16bit = false;        // no storageBuffer16BitAccess
  bool gpu = false;                     // plan as an integrated GPU, even on a CPU driver
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
  // else ~/.cache/vkrnn. disable_pipeline_cache skips the disk entirely.
  std::string cache_dir;
  bool disable_pipeline_cache = false;
  float queue_priority = 0.5f;  // below the maximum so a desktop never freezes
  std::uint64_t memory_block_bytes = 64ull << 20;
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
  struct Features {
    bool storage_buffer_16bit = false;  // VkPhysicalDevice16BitStorageFeatures
    bool shader_float16 = false;        // VkPhysicalDeviceShaderFloat16Int8Features
    bool subgroup_size_control = false; // VK_EXT_subgroup_size_control
  } features;
};

// The device features vkrnn has to work with on this context.
struct EnabledFeatures {
  bool storage_buffer_16bit = false;
  bool shader_float16 = false;
  bool subgroup_size_control = false;
};

struct MemoryStats {
  std::uint32_t device_memory_blocks = 0;  // vkAllocateMemory calls alive
  std::uint64_t device_memory_bytes = 0;
  std::uint32_t live_buffers = 0;
  std::uint64_t live_buffer_bytes = 0;
};

namespace detail {
struct ContextImpl;
}

class Context {
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

  void save_pipeline_cache() const;  // also done on destruction
  std::string pipeline_cache_path() const;  // "" when disabled
  bool pipeline_cache_loaded() const;       // a valid cache file for this device was found
  MemoryStats memory_stats() const;

  detail::ContextImpl& impl() const { return *impl_; }
  const std::shared_ptr<detail::ContextImpl>& impl_ptr() const { return impl_; }

 private:
  explicit Context(std::shared_ptr<detail::ContextImpl> impl);
  std::shared_ptr<detail::ContextImpl> impl_;
};

}  // namespace vkrnn
