#include "vk/memory.hpp"

#include <algorithm>

#include <fmt/format.h>

#include "plan.hpp"
#include "vk/check.hpp"

namespace vkrnn::vk {

struct Block {
  VkDeviceMemory memory = VK_NULL_HANDLE;
  VkDeviceSize size = 0;
  std::uint32_t type = 0;
  std::byte* mapped = nullptr;
  bool coherent = true;
  bool dedicated = false;
  // Free ranges, sorted by offset, never adjacent (merged on release).
  std::vector<std::pair<VkDeviceSize, VkDeviceSize>> free;  // (offset, size)
  VkDeviceSize used = 0;
};

namespace {
VkDeviceSize align_up(VkDeviceSize v, VkDeviceSize a) { return a ? (v + a - 1) / a * a : v; }
}  // namespace

Allocator::Allocator(const DeviceFns& fns, VkDevice device, const DeviceInfo& info,
                     bool force_staging, VkDeviceSize block_bytes)
    : fns_(fns), device_(device), info_(info), force_staging_(force_staging),
      block_bytes_(block_bytes) {
  device_mapped_ = plan::host_mapped_tensors(info, force_staging);
}

Allocator::~Allocator() {
  for (auto& b : blocks_) {
    if (b->mapped) fns_.vkUnmapMemory(device_, b->memory);
    fns_.vkFreeMemory(device_, b->memory, nullptr);
  }
}

std::uint32_t Allocator::choose_type(std::uint32_t allowed, MemoryUsage usage) const {
  // Preference lists of (required, preferred) property sets, first match wins.
  struct Want {
    bool device_local, host_visible, coherent, cached;
  };
  std::vector<Want> wants;
  switch (usage) {
    case MemoryUsage::device:
      if (device_mapped_) {
        wants = {{true, true, true, false}, {true, true, false, false}};
      } else {
        wants = {{true, false, false, false}};
      }
      break;
    case MemoryUsage::upload:
      wants = {{false, true, true, false}, {false, true, false, false}};
      break;
    case MemoryUsage::readback:
      wants = {{false, true, true, true}, {false, true, false, true}, {false, true, false, false}};
      break;
  }
  for (const auto& w : wants) {
    for (std::uint32_t i = 0; i < info_.memory_types.size(); ++i) {
      if (!(allowed & (1u << i))) continue;
      const auto& t = info_.memory_types[i];
      if (w.device_local && !t.device_local) continue;
      if (w.host_visible && !t.host_visible) continue;
      if (w.coherent && !t.host_coherent) continue;
      if (w.cached && !t.host_cached) continue;
      return i;
    }
  }
  throw Error(ErrorCode::missing_feature,
              fmt::format("no suitable memory type for {} buffers on '{}'",
                          usage == MemoryUsage::device ? "device" : "staging", info_.name));
}

void Allocator::check_fits(VkDeviceSize bytes, std::uint32_t type, const std::string& what) const {
  const auto heap = info_.memory_heaps[info_.memory_types[type].heap].size;
  const auto max_alloc = info_.max_memory_allocation_size ? info_.max_memory_allocation_size : heap;
  if (bytes > max_alloc || bytes > heap) {
    throw Error(ErrorCode::out_of_range,
                fmt::format("{} needs {} bytes, more than '{}' can allocate at once "
                            "(maxMemoryAllocationSize {} bytes, heap {} bytes)",
                            what, bytes, info_.name, max_alloc, heap));
  }
}

Allocation Allocator::allocate(VkDeviceSize size, VkDeviceSize alignment, std::uint32_t type,
                               const std::string& what) {
  const auto& t = info_.memory_types[type];
  const bool coherent = !t.host_visible || t.host_coherent;
  if (t.host_visible && !coherent) {
    // Keep non-coherent sub-allocations atom-aligned so flushes never straddle a neighbour.
    alignment = std::max(alignment, info_.non_coherent_atom_size);
    size = align_up(size, info_.non_coherent_atom_size);
  }
  for (auto& b : blocks_) {
    if (b->type != type || b->dedicated) continue;
    for (std::size_t i = 0; i < b->free.size(); ++i) {
      auto [off, len] = b->free[i];
      const VkDeviceSize start = align_up(off, alignment);
      if (start + size > off + len) continue;
      // Split the free range into [off, start) and [start+size, off+len).
      std::vector<std::pair<VkDeviceSize, VkDeviceSize>> pieces;
      if (start > off) pieces.emplace_back(off, start - off);
      if (off + len > start + size) pieces.emplace_back(start + size, off + len - start - size);
      b->free.erase(b->free.begin() + static_cast<std::ptrdiff_t>(i));
      b->free.insert(b->free.begin() + static_cast<std::ptrdiff_t>(i), pieces.begin(), pieces.end());
      b->used += size;
      return {b.get(), start, size};
    }
  }
  // A new block: big requests get a block of their own, so they never strand a shared one.
  const bool dedicated = size > block_bytes_ / 2;
  const VkDeviceSize block_size = dedicated ? size : block_bytes_;
  check_fits(block_size, type, what);
  if (blocks_.size() >= info_.max_memory_allocation_count) {
    throw Error(ErrorCode::out_of_range,
                fmt::format("{}: '{}' allows only {} memory allocations", what, info_.name,
                            info_.max_memory_allocation_count));
  }
  auto b = std::make_unique<Block>();
  VkMemoryAllocateInfo ai{VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO};
  ai.allocationSize = block_size;
  ai.memoryTypeIndex = type;
  check(fns_.vkAllocateMemory(device_, &ai, nullptr, &b->memory),
        fmt::format("vkAllocateMemory ({} bytes for {})", block_size, what), info_.name);
  b->size = block_size;
  b->type = type;
  b->coherent = coherent;
  b->dedicated = dedicated;
  if (t.host_visible) {
    void* p = nullptr;
    const VkResult r = fns_.vkMapMemory(device_, b->memory, 0, VK_WHOLE_SIZE, 0, &p);
    if (r != VK_SUCCESS) fns_.vkFreeMemory(device_, b->memory, nullptr);
    check(r, "vkMapMemory", info_.name);
    b->mapped = static_cast<std::byte*>(p);
  }
  if (!dedicated && block_size > size) b->free.emplace_back(size, block_size - size);
  b->used = size;
  Block* raw = b.get();
  blocks_.push_back(std::move(b));
  return {raw, 0, size};
}

void Allocator::release(const Allocation& a) noexcept {
  Block* b = a.block;
  if (!b) return;
  b->used -= a.size;
  if (b->used == 0 && (b->dedicated || std::count_if(blocks_.begin(), blocks_.end(), [&](auto& x) {
                                          return x->type == b->type && !x->dedicated;
                                        }) > 1)) {
    // Empty blocks go back to the driver, except the last shared block of a type (reused soon).
    if (b->mapped) fns_.vkUnmapMemory(device_, b->memory);
    fns_.vkFreeMemory(device_, b->memory, nullptr);
    blocks_.erase(std::find_if(blocks_.begin(), blocks_.end(), [&](auto& x) { return x.get() == b; }));
    return;
  }
  if (b->dedicated) return;
  auto& f = b->free;
  auto it = std::lower_bound(f.begin(), f.end(), std::make_pair(a.offset, VkDeviceSize(0)));
  it = f.insert(it, {a.offset, a.size});
  // Merge with the next and the previous range.
  if (it + 1 != f.end() && it->first + it->second == (it + 1)->first) {
    it->second += (it + 1)->second;
    f.erase(it + 1);
  }
  if (it != f.begin() && (it - 1)->first + (it - 1)->second == it->first) {
    (it - 1)->second += it->second;
    f.erase(it);
  }
}

Buffer Allocator::create_buffer(VkDeviceSize bytes, MemoryUsage usage, const std::string& what) {
  Buffer buf;
  buf.usage = usage;
  buf.size = std::max<VkDeviceSize>(bytes, 4);  // Vulkan forbids empty buffers
  VkBufferCreateInfo bi{VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO};
  bi.size = buf.size;
  switch (usage) {
    case MemoryUsage::device:
      bi.usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT |
                 VK_BUFFER_USAGE_TRANSFER_DST_BIT | VK_BUFFER_USAGE_INDIRECT_BUFFER_BIT;
      break;
    case MemoryUsage::upload: bi.usage = VK_BUFFER_USAGE_TRANSFER_SRC_BIT; break;
    case MemoryUsage::readback: bi.usage = VK_BUFFER_USAGE_TRANSFER_DST_BIT; break;
  }
  bi.sharingMode = VK_SHARING_MODE_EXCLUSIVE;

  std::lock_guard lock(mutex_);
  // Check before creating: a huge VkBuffer can fail in driver-specific ways.
  {
    std::uint32_t any_type = 0;
    for (std::uint32_t i = 0; i < info_.memory_types.size(); ++i) any_type |= 1u << i;
    check_fits(buf.size, choose_type(any_type, usage), what);
  }
  check(fns_.vkCreateBuffer(device_, &bi, nullptr, &buf.handle),
        fmt::format("vkCreateBuffer ({} bytes for {})", buf.size, what), info_.name);
  VkMemoryRequirements req{};
  fns_.vkGetBufferMemoryRequirements(device_, buf.handle, &req);
  try {
    const std::uint32_t type = choose_type(req.memoryTypeBits, usage);
    buf.allocation = allocate(req.size, req.alignment, type, what);
    check(fns_.vkBindBufferMemory(device_, buf.handle, buf.allocation.block->memory,
                                  buf.allocation.offset),
          "vkBindBufferMemory", info_.name);
  } catch (...) {
    if (buf.allocation.block) release(buf.allocation);
    fns_.vkDestroyBuffer(device_, buf.handle, nullptr);
    throw;
  }
  Block* b = buf.allocation.block;
  buf.coherent = b->coherent;
  // Device tensors on a forced-staging context are never touched by the host, even though
  // the memory may be mappable: that is the point of forcing the staging path.
  const bool host_access = usage != MemoryUsage::device || device_mapped_;
  buf.mapped = (host_access && b->mapped) ? b->mapped + buf.allocation.offset : nullptr;
  ++live_buffers_;
  live_buffer_bytes_ += buf.size;
  return buf;
}

void Allocator::destroy(Buffer& buf) noexcept {
  if (buf.handle == VK_NULL_HANDLE) return;
  std::lock_guard lock(mutex_);
  fns_.vkDestroyBuffer(device_, buf.handle, nullptr);
  release(buf.allocation);
  --live_buffers_;
  live_buffer_bytes_ -= buf.size;
  buf = Buffer{};
}

VkMappedMemoryRange Allocator::atom_range(const Buffer& buf, VkDeviceSize offset,
                                          VkDeviceSize bytes) const {
  const auto atom = info_.non_coherent_atom_size;
  const Block* b = buf.allocation.block;
  VkMappedMemoryRange r{VK_STRUCTURE_TYPE_MAPPED_MEMORY_RANGE};
  r.memory = b->memory;
  r.offset = (buf.allocation.offset + offset) / atom * atom;
  r.size = std::min(align_up(buf.allocation.offset + offset + bytes, atom), b->size) - r.offset;
  return r;
}

void Allocator::flush(const Buffer& buf, VkDeviceSize offset, VkDeviceSize bytes) const {
  if (buf.coherent || !buf.allocation.block) return;
  const auto r = atom_range(buf, offset, bytes);
  check(fns_.vkFlushMappedMemoryRanges(device_, 1, &r), "vkFlushMappedMemoryRanges", info_.name);
}

void Allocator::invalidate(const Buffer& buf, VkDeviceSize offset, VkDeviceSize bytes) const {
  if (buf.coherent || !buf.allocation.block) return;
  const auto r = atom_range(buf, offset, bytes);
  check(fns_.vkInvalidateMappedMemoryRanges(device_, 1, &r), "vkInvalidateMappedMemoryRanges",
        info_.name);
}

MemoryStats Allocator::stats() const {
  std::lock_guard lock(mutex_);
  MemoryStats s;
  s.device_memory_blocks = static_cast<std::uint32_t>(blocks_.size());
  for (const auto& b : blocks_) s.device_memory_bytes += b->size;
  s.live_buffers = live_buffers_;
  s.live_buffer_bytes = live_buffer_bytes_;
  return s;
}

}  // namespace vkrnn::vk
