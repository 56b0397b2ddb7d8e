#pragma once
// Compute pipelines from embedded SPIR-V, cached per KernelSpec, with a VkPipelineCache kept on
// disk between runs (keyed by device UUID and driver version; corrupt files are ignored).
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "vk/loader.hpp"
#include "vkrnn/context.hpp"
#include "vkrnn/kernel.hpp"

namespace vkrnn::detail {

// Owned by its ContextImpl (pipelines live as long as the device: creating them is the slow
// part). Kernel handles alias the ContextImpl's ownership, so a handle keeps the device alive.
struct KernelImpl {
  ContextImpl* ctx = nullptr;
  KernelSpec spec;
  std::uint32_t texel_bindings = 0;  // bit i: binding i is a uniform texel buffer (from the SPIR-V)
  bool is_texel(std::uint32_t binding) const { return binding < 32 && (texel_bindings >> binding & 1u); }
  VkDescriptorSetLayout set_layout = VK_NULL_HANDLE;
  VkPipelineLayout layout = VK_NULL_HANDLE;
  VkPipeline pipeline = VK_NULL_HANDLE;
  ~KernelImpl();
};

}  // namespace vkrnn::detail

namespace vkrnn::vk {

class PipelineCache {
 public:
  // `dir` empty: no disk persistence. `external`: an app-owned cache, used as it is (never
  // loaded, saved or destroyed).
  PipelineCache(const DeviceFns& fns, VkDevice device, const DeviceInfo& info, std::string dir,
                const VkAllocationCallbacks* host_alloc = nullptr, VkPipelineCache external = VK_NULL_HANDLE);
  ~PipelineCache();
  PipelineCache(const PipelineCache&) = delete;
  PipelineCache& operator=(const PipelineCache&) = delete;

  VkPipelineCache handle() const { return cache_; }
  const std::string& path() const { return path_; }
  bool loaded_from_disk() const { return loaded_; }
  // Atomic write (temp file + rename) of this cache merged with what the file holds now (other
  // contexts and processes may have saved pipelines since); failures are ignored.
  void save() const;

 private:
  const DeviceFns& fns_;
  VkDevice device_;
  const DeviceInfo& info_;
  std::string path_;
  VkPipelineCache cache_ = VK_NULL_HANDLE;
  const VkAllocationCallbacks* host_alloc_ = nullptr;
  bool owned_ = true;
  bool loaded_ = false;
  mutable std::mutex save_mutex_;
};

// Where the pipeline cache lives by default: VKRNN_CACHE_DIR, $XDG_CACHE_HOME/vkrnn, ~/.cache/vkrnn.
std::string default_cache_dir();

// The embedded SPIR-V of a shader; throws Error(not_found) listing the known names.
std::span<const std::uint32_t> shader_code(const std::string& name);

// The descriptor-set-0 bindings of a SPIR-V module that are uniform texel buffers (sampled
// images of Dim Buffer), as a mask: bit i for binding i. Bindings past 31 are not supported.
std::uint32_t texel_bindings(std::span<const std::uint32_t> code);

}  // namespace vkrnn::vk
