#pragma once
// Buffers sub-allocated from large VkDeviceMemory blocks: maxMemoryAllocationCount can be as
// low as 4096, so one allocation per tensor is never an option.
#include <cstdint>
#include <functional>
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
  VkDeviceSize offset = 0;  // from the start of the block (which may sit inside the VkDeviceMemory)
  VkDeviceSize size = 0;
};

// VK_EXT_memory_budget per heap: what the process may use and uses now.
struct HeapBudget {
  std::uint64_t budget = 0;
  std::uint64_t usage = 0;
};
// Fills one entry per heap; false when the device cannot say (no VK_EXT_memory_budget).
using BudgetQuery = std::function<bool(std::vector<HeapBudget>&)>;
// Names a new VkDeviceMemory for debug tools.
using MemoryNamer = std::function<void(VkDeviceMemory, const std::string&)>;

struct Buffer {
  VkBuffer handle = VK_NULL_HANDLE;
  VkDeviceSize size = 0;        // requested bytes (>= 1 word even for empty tensors)
  Allocation allocation;
  MemoryUsage usage = MemoryUsage::device;
  std::byte* mapped = nullptr;  // non-null when the host may access it directly
  bool coherent = true;
};

// The size of a device buffer on CPU drivers, where kernels may read it through a texel view
// (plan::texel_loads): a multiple of 16 bytes, not a power of two, and with bits 8-15 not all 0.
// llvmpipe builds a new variant of a shader, a full LLVM compile at first dispatch, for each
// (the buffer's size is a power of two, the view's size has bits 8-15 all 0) it sees bound to a
// texel binding. Without this every pipeline compiled up to four times, by tensor size: cold
// Linear tests 2.6x slower. Less than 288 bytes more per buffer.
VkDeviceSize texel_view_buffer_size(VkDeviceSize bytes);

class Allocator {
 public:
  // options: force_staging, memory_block_bytes, device_memory_limit, device_memory (the app's
  // allocator hook) and allocation_callbacks.
  Allocator(const DeviceFns& fns, VkDevice device, const DeviceInfo& info, const ContextOptions& options,
            BudgetQuery budget, MemoryNamer namer);
  ~Allocator();
  Allocator(const Allocator&) = delete;
  Allocator& operator=(const Allocator&) = delete;

  // Throws Error(out_of_range) when `bytes` exceeds the device's allocation or heap size, the
  // heap's budget (VK_EXT_memory_budget) or ContextOptions::device_memory_limit.
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
  // The size of a new block for a request of `size` bytes: the usual block, or the request
  // alone when the usual block would break the limit or the heap's budget (then Error).
  VkDeviceSize new_block_size(VkDeviceSize size, VkDeviceSize usual, std::uint32_t type,
                              const std::string& what) const;
  void new_block(Block& b, VkDeviceSize size, std::uint32_t type, const std::string& what);
  void free_block(Block& b) noexcept;

  const DeviceFns& fns_;
  VkDevice device_;
  const DeviceInfo& info_;
  bool force_staging_;
  bool device_mapped_ = false;
  VkDeviceSize block_bytes_;
  std::uint64_t limit_;
  DeviceMemoryHook hook_;
  const VkAllocationCallbacks* host_alloc_;
  BudgetQuery budget_;
  MemoryNamer namer_;
  std::vector<std::unique_ptr<Block>> blocks_;
  mutable std::mutex mutex_;
  std::uint32_t live_buffers_ = 0;
  std::uint64_t live_buffer_bytes_ = 0;
  std::uint64_t staging_bytes_ = 0;
  std::uint64_t held_bytes_ = 0;
  std::uint64_t peak_bytes_ = 0;
};

}  // namespace vkrnn::vk
