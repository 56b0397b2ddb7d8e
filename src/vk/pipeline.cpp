#include "vk/pipeline.hpp"

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <span>
#include <vector>

#include <fmt/format.h>

#include "vk/check.hpp"
#include "vk/context_impl.hpp"

namespace vkrnn::shaders {
const std::map<std::string, std::span<const std::uint32_t>>& registry();
}

namespace vkrnn {

std::vector<std::string> shader_names() {
  std::vector<std::string> names;
  for (const auto& [name, code] : shaders::registry()) names.push_back(name);
  return names;
}

const KernelSpec& Kernel::spec() const { return impl().spec; }

detail::KernelImpl& Kernel::impl() const {
  if (!impl_) throw Error(ErrorCode::state, "use of an empty vkrnn::Kernel");
  return *impl_;
}

namespace detail {
KernelImpl::~KernelImpl() {
  const auto& d = ctx->fns;
  if (pipeline) d.vkDestroyPipeline(ctx->device, pipeline, ctx->host_alloc());
  if (layout) d.vkDestroyPipelineLayout(ctx->device, layout, ctx->host_alloc());
  if (set_layout) d.vkDestroyDescriptorSetLayout(ctx->device, set_layout, ctx->host_alloc());
}
}  // namespace detail

namespace vk {

std::span<const std::uint32_t> shader_code(const std::string& name) {
  const auto& reg = shaders::registry();
  const auto it = reg.find(name);
  if (it == reg.end()) {
    std::string known;
    for (const auto& [n, c] : reg) known += (known.empty() ? "" : ", ") + n;
    throw Error(ErrorCode::not_found,
                fmt::format("no embedded shader named '{}' (known: {})", name, known));
  }
  return it->second;
}

std::uint32_t texel_bindings(std::span<const std::uint32_t> code) {
  // OpTypeImage 25 (Dim operand 2: Buffer = 5), OpTypeSampledImage 27, OpTypePointer 32,
  // OpVariable 59 (storage class UniformConstant = 0), OpDecorate 71 (Binding = 33).
  std::map<std::uint32_t, std::uint32_t> image_dim, sampled_image, pointee, variable_type, binding;
  for (std::size_t i = 5; i < code.size();) {
    const std::uint32_t n = code[i] >> 16, op = code[i] & 0xffff;
    if (n == 0 || i + n > code.size()) break;  // the driver reports a malformed module
    const std::uint32_t* a = &code[i + 1];
    if (op == 25 && n >= 4) image_dim[a[0]] = a[2];
    if (op == 27 && n >= 3) sampled_image[a[0]] = a[1];
    if (op == 32 && n >= 4 && a[1] == 0) pointee[a[0]] = a[2];
    if (op == 59 && n >= 4 && a[2] == 0) variable_type[a[1]] = a[0];
    if (op == 71 && n >= 4 && a[1] == 33) binding[a[0]] = a[2];
    i += n;
  }
  std::uint32_t mask = 0;
  for (const auto& [var, type] : variable_type) {
    const auto p = pointee.find(type);
    if (p == pointee.end() || !binding.count(var) || binding[var] >= 32) continue;
    const auto s = sampled_image.find(p->second);
    if (s != sampled_image.end() && image_dim.count(s->second) && image_dim[s->second] == 5) mask |= 1u << binding[var];
  }
  return mask;
}

std::string default_cache_dir() {
  if (const char* d = std::getenv("VKRNN_CACHE_DIR"); d && *d) return d;
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) return std::string(x) + "/vkrnn";
#if defined(_WIN32)
  if (const char* l = std::getenv("LOCALAPPDATA"); l && *l) return std::string(l) + "\\vkrnn";
#endif
  if (const char* h = std::getenv("HOME"); h && *h) return std::string(h) + "/.cache/vkrnn";
  return {};
}

namespace {

// A cache blob is only handed to the driver when its header says it was made by this very
// device and driver: drivers are not required to survive foreign or damaged data.
bool header_matches(const std::vector<char>& data, const DeviceInfo& info) {
  if (data.size() < 32) return false;
  std::uint32_t header_size, version, vendor, device;
  std::memcpy(&header_size, data.data(), 4);
  std::memcpy(&version, data.data() + 4, 4);
  std::memcpy(&vendor, data.data() + 8, 4);
  std::memcpy(&device, data.data() + 12, 4);
  return header_size >= 32 && header_size <= data.size() &&
         version == VK_PIPELINE_CACHE_HEADER_VERSION_ONE && vendor == info.vendor_id &&
         device == info.device_id &&
         std::memcmp(data.data() + 16, info.pipeline_cache_uuid.data(), VK_UUID_SIZE) == 0;
}

std::vector<char> read_matching(const std::string& path, const DeviceInfo& info) {
  std::vector<char> data;
  std::ifstream in(path, std::ios::binary);
  if (in) data.assign(std::istreambuf_iterator<char>(in), {});
  if (!header_matches(data, info)) data.clear();
  return data;
}

}  // namespace

PipelineCache::PipelineCache(const DeviceFns& fns, VkDevice device, const DeviceInfo& info,
                             std::string dir, const VkAllocationCallbacks* host_alloc, VkPipelineCache external)
    : fns_(fns), device_(device), info_(info), host_alloc_(host_alloc) {
  if (external != VK_NULL_HANDLE) {
    cache_ = external;
    owned_ = false;
    return;
  }
  std::vector<char> data;
  if (!dir.empty()) {
    std::string uuid;
    for (auto b : info.pipeline_cache_uuid) uuid += fmt::format("{:02x}", b);
    path_ = fmt::format("{}/pipelines-{:04x}-{:04x}-{}-{}.bin", dir, info.vendor_id,
                        info.device_id, uuid, info.driver_version);
    data = read_matching(path_, info);
  }
  VkPipelineCacheCreateInfo ci{VK_STRUCTURE_TYPE_PIPELINE_CACHE_CREATE_INFO};
  ci.initialDataSize = data.size();
  ci.pInitialData = data.empty() ? nullptr : data.data();
  VkResult r = fns_.vkCreatePipelineCache(device_, &ci, host_alloc_, &cache_);
  if (r != VK_SUCCESS && !data.empty()) {
    // The driver rejected the blob: start empty rather than fail.
    ci.initialDataSize = 0;
    ci.pInitialData = nullptr;
    data.clear();
    r = fns_.vkCreatePipelineCache(device_, &ci, host_alloc_, &cache_);
  }
  check(r, "vkCreatePipelineCache", info.name);
  loaded_ = !data.empty();
}

PipelineCache::~PipelineCache() {
  if (!owned_) return;
  try {
    save();
  } catch (...) {
    // Persisting the cache is an optimisation: never let it throw from a destructor.
  }
  fns_.vkDestroyPipelineCache(device_, cache_, host_alloc_);
}

void PipelineCache::save() const {
  if (path_.empty() || !owned_) return;
  std::lock_guard lock(save_mutex_);
  // What another context or process saved since this one loaded is merged in, so the last
  // writer does not drop it. The merge goes into a temporary cache: merging into cache_ would
  // need it externally synchronised against pipeline creation on other threads.
  VkPipelineCache source = cache_, merged = VK_NULL_HANDLE;
  if (const auto disk = read_matching(path_, info_); !disk.empty()) {
    VkPipelineCacheCreateInfo ci{VK_STRUCTURE_TYPE_PIPELINE_CACHE_CREATE_INFO};
    ci.initialDataSize = disk.size();
    ci.pInitialData = disk.data();
    if (fns_.vkCreatePipelineCache(device_, &ci, host_alloc_, &merged) == VK_SUCCESS) {
      if (fns_.vkMergePipelineCaches(device_, merged, 1, &cache_) == VK_SUCCESS) source = merged;
    }
  }
  std::vector<char> data;
  std::size_t size = 0;
  VkResult r = fns_.vkGetPipelineCacheData(device_, source, &size, nullptr);
  if (r == VK_SUCCESS) {
    data.resize(size);
    r = fns_.vkGetPipelineCacheData(device_, source, &size, data.data());
    data.resize(size);
  }
  if (merged != VK_NULL_HANDLE) fns_.vkDestroyPipelineCache(device_, merged, host_alloc_);
  check(r, "vkGetPipelineCacheData", info_.name);
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(fs::path(path_).parent_path(), ec);
  const std::string tmp = fmt::format("{}.{}.tmp", path_, static_cast<const void*>(this));
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) return;  // read-only cache dir: run without persistence
    out.write(data.data(), static_cast<std::streamsize>(data.size()));
    if (!out) {
      fs::remove(tmp, ec);
      return;
    }
  }
  fs::rename(tmp, path_, ec);  // atomic: readers see the old or the new file, never half
  if (ec) fs::remove(tmp, ec);
}

}  // namespace vk
}  // namespace vkrnn
