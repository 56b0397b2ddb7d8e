#pragma once
// Buffers sub-allocated from large VkDeviceMemory blocks: maxMemoryAllocationCount can be as
// low as 4096, so one allocation per tensor is never an option.
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "vk/loader.hpp"
#include "vkrnn/context.hpp"

namespace vkrnn::vk {

enum class MemoryUsage {
  device,    // tensors: device-local (host-visible too on UMA unless staging is forced)
  upload,    // staging source: host-visible, coherent preferred
  readback,  // staging destination: host-visible, cached preferred
};

struct Block;

struct Allocation {
  Block* block = nullptr;
  VkDeviceSize offset = 0;
  VkDeviceSize size = 0;
};

struct Buffer {
  VkBuffer handle = VK_NULL_HANDLE;
  VkDeviceSize size = 0;        // requested bytes (>= 1 word even for empty tensors)
  Allocation allocation;
  MemoryUsage usage = MemoryUsage::device;
  std::byte* mapped = nullptr;  // non-null when the host may access it directly
  bool coherent = true;
};

class Allocator {
 public:
  Allocator(const DeviceFns& fns, VkDevice device, const DeviceInfo& info, bool force_staging,
            VkDeviceSize block_bytes);
  ~Allocator();
  Allocator(const Allocator&) = delete;
  Allocator& operator=(const Allocator&) = delete;

  // Throws Error(out_of_range) when `bytes` exceeds the device's allocation or heap size.
  Buffer create_buffer(VkDeviceSize bytes, MemoryUsage usage, const std::string& what);
  void destroy(Buffer& buffer) noexcept;

  // Host writes/reads of mapped memory; no-ops on coherent memory. Ranges are widened to
  // nonCoherentAtomSize as the spec requires.
  void flush(const Buffer& buffer, VkDeviceSize offset, VkDeviceSize bytes) const;
  void invalidate(const Buffer& buffer, VkDeviceSize offset, VkDeviceSize bytes) const;

  // True when device tensors are host-mapped (UMA without forced staging).
  bool device_tensors_mapped() const { return device_mapped_; }
  MemoryStats stats() const;

 private:
  std::uint32_t choose_type(std::uint32_t allowed, MemoryUsage usage) const;
  Allocation allocate(VkDeviceSize size, VkDeviceSize alignment, std::uint32_t type,
                      const std::string& what);
  void release(const Allocation& a) noexcept;
  VkMappedMemoryRange atom_range(const Buffer& buf, VkDeviceSize offset, VkDeviceSize bytes) const;
  void check_fits(VkDeviceSize bytes, std::uint32_t type, const std::string& what) const;

  const DeviceFns& fns_;
  VkDevice device_;
  const DeviceInfo& info_;
  bool force_staging_;
  bool device_mapped_ = false;
  VkDeviceSize block_bytes_;
  std::vector<std::unique_ptr<Block>> blocks_;
  mutable std::mutex mutex_;
  std::uint32_t live_buffers_ = 0;
  std::uint64_t live_buffer_bytes_ = 0;
};

}  // namespace vkrnn::vk
