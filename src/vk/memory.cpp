#include "vk/memory.hpp"

#include <algorithm>
#include <bit>

#include <fmt/format.h>

#include "plan.hpp"
#include "vk/check.hpp"

namespace vkrnn::vk {

struct Block {
  VkDeviceMemory memory = VK_NULL_HANDLE;
  VkDeviceSize base = 0;  // where the block starts inside `memory` (the app's hook may sub-allocate)
  VkDeviceSize size = 0;
  std::uint32_t type = 0;
  std::byte* mapped = nullptr;  // host address of `base`
  bool mapped_by_us = false;    // vkrnn called vkMapMemory (and unmaps)
  bool coherent = true;
  bool dedicated = false;
  DeviceMemoryBlock hooked;     // from ContextOptions::device_memory (memory != null)
  // Free ranges, sorted by offset, never adjacent (merged on release).
  std::vector<std::pair<VkDeviceSize, VkDeviceSize>> free;  // (offset, size)
  VkDeviceSize used = 0;
};

namespace {
VkDeviceSize align_up(VkDeviceSize v, VkDeviceSize a) { return a ? (v + a - 1) / a * a : v; }
}  // namespace

Allocator::Allocator(const DeviceFns& fns, VkDevice device, const DeviceInfo& info,
                     const ContextOptions& options, BudgetQuery budget, MemoryNamer namer)
    : fns_(fns), device_(device), info_(info), force_staging_(options.force_staging),
      block_bytes_(options.memory_block_bytes), limit_(options.device_memory_limit),
      hook_(options.device_memory), host_alloc_(options.allocation_callbacks), budget_(std::move(budget)),
      namer_(std::move(namer)) {
  device_mapped_ = plan::host_mapped_tensors(info, force_staging_);
  if (static_cast<bool>(hook_.allocate) != static_cast<bool>(hook_.free)) {
    throw Error(ErrorCode::invalid_argument,
                "ContextOptions::device_memory needs both allocate and free (or neither)");
  }
}

Allocator::~Allocator() {
  for (auto& b : blocks_) free_block(*b);
}

void Allocator::free_block(Block& b) noexcept {
  if (b.mapped_by_us) fns_.vkUnmapMemory(device_, b.memory);
  if (b.hooked.memory != VK_NULL_HANDLE) {
    hook_.free(b.hooked);
  } else {
    fns_.vkFreeMemory(device_, b.memory, host_alloc_);
  }
  held_bytes_ -= b.size;
}

VkDeviceSize Allocator::new_block_size(VkDeviceSize size, VkDeviceSize usual, std::uint32_t type,
                                       const std::string& what) const {
  const std::uint32_t heap = info_.memory_types[type].heap;
  std::vector<HeapBudget> budgets;
  const bool known = budget_ && budget_(budgets) && heap < budgets.size();
  auto fits = [&](VkDeviceSize bytes) {
    if (limit_ && held_bytes_ + bytes > limit_) return false;
    return !known || budgets[heap].usage + bytes <= budgets[heap].budget;
  };
  if (fits(usual)) return usual;
  if (size < usual && fits(size)) return size;  // a block of its own, just big enough
  if (limit_ && held_bytes_ + size > limit_) {
    throw Error(ErrorCode::out_of_range,
                fmt::format("{} needs {} more bytes of device memory, beyond vkrnn's limit of {} bytes "
                            "(ContextOptions::device_memory_limit; {} bytes held)",
                            what, size, limit_, held_bytes_));
  }
  throw Error(ErrorCode::out_of_range,
              fmt::format("{} needs {} more bytes of heap {} of '{}', beyond its memory budget "
                          "(VK_EXT_memory_budget: {} of {} bytes in use by the process)",
                          what, size, heap, info_.name, budgets[heap].usage, budgets[heap].budget));
}

void Allocator::new_block(Block& b, VkDeviceSize size, std::uint32_t type, const std::string& what) {
  const auto& t = info_.memory_types[type];
  VkMemoryAllocateInfo ai{VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO};
  ai.allocationSize = size;
  ai.memoryTypeIndex = type;
  const std::string call = fmt::format("{} ({} bytes for {})",
                                       hook_.allocate ? "ContextOptions::device_memory.allocate" : "vkAllocateMemory",
                                       size, what);
  if (hook_.allocate) {
    check(hook_.allocate(ai, b.hooked), call, info_.name);
    if (b.hooked.memory == VK_NULL_HANDLE) {
      throw Error(ErrorCode::invalid_argument,
                  fmt::format("{} returned VK_SUCCESS but no VkDeviceMemory", call));
    }
    b.memory = b.hooked.memory;
    b.base = b.hooked.offset;
    b.mapped = static_cast<std::byte*>(b.hooked.mapped);
  } else {
    check(fns_.vkAllocateMemory(device_, &ai, host_alloc_, &b.memory), call, info_.name);
  }
  b.size = size;
  held_bytes_ += size;
  peak_bytes_ = std::max(peak_bytes_, held_bytes_);
  if (t.host_visible && !b.mapped) {
    void* p = nullptr;
    const VkResult r = fns_.vkMapMemory(device_, b.memory, b.base, VK_WHOLE_SIZE, 0, &p);
    if (r != VK_SUCCESS) free_block(b);
    check(r, "vkMapMemory", info_.name);
    b.mapped = static_cast<std::byte*>(p);
    b.mapped_by_us = true;
  }
  if (namer_ && !b.hooked.memory) namer_(b.memory, fmt::format("vkrnn memory block ({} bytes, type {})", size, type));
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
      // Alignment holds inside the VkDeviceMemory, where the block may not start at 0.
      const VkDeviceSize start = align_up(b->base + off, alignment) - b->base;
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
  const bool big = size > block_bytes_ / 2;
  check_fits(big ? size : block_bytes_, type, what);
  if (blocks_.size() >= info_.max_memory_allocation_count) {
    throw Error(ErrorCode::out_of_range,
                fmt::format("{}: '{}' allows only {} memory allocations", what, info_.name,
                            info_.max_memory_allocation_count));
  }
  // The block's own alignment padding (an app's hook may hand out any offset) is at most
  // alignment - 1 bytes.
  const VkDeviceSize need = size + (hook_.allocate ? alignment - 1 : 0);
  const VkDeviceSize block_size = new_block_size(need, big ? need : std::max(block_bytes_, need), type, what);
  auto b = std::make_unique<Block>();
  b->type = type;
  b->coherent = coherent;
  b->dedicated = block_size == need;
  new_block(*b, block_size, type, what);
  const VkDeviceSize start = align_up(b->base, alignment) - b->base;
  if (start > 0) b->free.emplace_back(0, start);
  if (!b->dedicated && block_size > start + size) b->free.emplace_back(start + size, block_size - start - size);
  b->used = size;
  Block* raw = b.get();
  blocks_.push_back(std::move(b));
  return {raw, start, size};
}

void Allocator::release(const Allocation& a) noexcept {
  Block* b = a.block;
  if (!b) return;
  b->used -= a.size;
  if (b->used == 0 && (b->dedicated || std::count_if(blocks_.begin(), blocks_.end(), [&](auto& x) {
                                          return x->type == b->type && !x->dedicated;
                                        }) > 1)) {
    // Empty blocks go back to the driver, except the last shared block of a type (reused soon).
    free_block(*b);
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

VkDeviceSize texel_view_buffer_size(VkDeviceSize bytes) {
  VkDeviceSize size = align_up(bytes, 16);
  if ((size >> 8 & 0xff) == 0) size += 256;  // bits 8-15 of the view's size: one variant bit
  if (std::has_single_bit(size)) size += 16;  // a power of two: another
  return size;
}

Buffer Allocator::create_buffer(VkDeviceSize bytes, MemoryUsage usage, const std::string& what) {
  Buffer buf;
  buf.usage = usage;
  buf.size = std::max<VkDeviceSize>(bytes, 4);  // Vulkan forbids empty buffers
  if (usage == MemoryUsage::device && info_.type == DeviceType::cpu) buf.size = texel_view_buffer_size(buf.size);
  VkBufferCreateInfo bi{VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO};
  bi.size = buf.size;
  switch (usage) {
    case MemoryUsage::device:
      // Uniform texel buffer too: kernels may read a tensor through a texel view (TensorStorage).
      bi.usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_UNIFORM_TEXEL_BUFFER_BIT |
                 VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT |
                 VK_BUFFER_USAGE_INDIRECT_BUFFER_BIT;
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
  check(fns_.vkCreateBuffer(device_, &bi, host_alloc_, &buf.handle),
        fmt::format("vkCreateBuffer ({} bytes for {})", buf.size, what), info_.name);
  VkMemoryRequirements req{};
  fns_.vkGetBufferMemoryRequirements(device_, buf.handle, &req);
  try {
    const std::uint32_t type = choose_type(req.memoryTypeBits, usage);
    buf.allocation = allocate(req.size, req.alignment, type, what);
    check(fns_.vkBindBufferMemory(device_, buf.handle, buf.allocation.block->memory,
                                  buf.allocation.block->base + buf.allocation.offset),
          "vkBindBufferMemory", info_.name);
  } catch (...) {
    if (buf.allocation.block) release(buf.allocation);
    fns_.vkDestroyBuffer(device_, buf.handle, host_alloc_);
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
  if (usage != MemoryUsage::device) staging_bytes_ += buf.size;
  return buf;
}

void Allocator::destroy(Buffer& buf) noexcept {
  if (buf.handle == VK_NULL_HANDLE) return;
  std::lock_guard lock(mutex_);
  fns_.vkDestroyBuffer(device_, buf.handle, host_alloc_);
  release(buf.allocation);
  --live_buffers_;
  live_buffer_bytes_ -= buf.size;
  if (buf.usage != MemoryUsage::device) staging_bytes_ -= buf.size;
  buf = Buffer{};
}

VkMappedMemoryRange Allocator::atom_range(const Buffer& buf, VkDeviceSize offset,
                                          VkDeviceSize bytes) const {
  const auto atom = info_.non_coherent_atom_size;
  const Block* b = buf.allocation.block;
  const VkDeviceSize at = b->base + buf.allocation.offset + offset;
  VkMappedMemoryRange r{VK_STRUCTURE_TYPE_MAPPED_MEMORY_RANGE};
  r.memory = b->memory;
  r.offset = at / atom * atom;
  const VkDeviceSize end = align_up(at + bytes, atom);
  // Past the block's end the memory may end too: "to the end of the allocation" is always valid.
  r.size = end > b->base + b->size ? VK_WHOLE_SIZE : end - r.offset;
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
  std::vector<HeapBudget> budgets;
  const bool known = budget_ && budget_(budgets);
  std::lock_guard lock(mutex_);
  MemoryStats s;
  s.device_memory_blocks = static_cast<std::uint32_t>(blocks_.size());
  s.device_memory_bytes = held_bytes_;
  s.peak_device_memory_bytes = peak_bytes_;
  s.live_buffers = live_buffers_;
  s.live_buffer_bytes = live_buffer_bytes_;
  s.staging_bytes = staging_bytes_;
  s.budget_known = known;
  for (std::uint32_t h = 0; h < info_.memory_heaps.size(); ++h) {
    HeapMemory m;
    m.heap = h;
    m.size = info_.memory_heaps[h].size;
    if (known && h < budgets.size()) {
      m.budget = budgets[h].budget;
      m.usage = budgets[h].usage;
    }
    for (const auto& b : blocks_) {
      if (info_.memory_types[b->type].heap == h) m.vkrnn_bytes += b->size;
    }
    s.heaps.push_back(m);
  }
  return s;
}

}  // namespace vkrnn::vk
