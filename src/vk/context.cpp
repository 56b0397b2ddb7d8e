#include <algorithm>
#include <cstring>

#include <fmt/format.h>

#include "vk/check.hpp"
#include "vk/context_impl.hpp"
#include "vk/device_limits.hpp"

namespace vkrnn {

namespace detail {

ContextImpl::~ContextImpl() {
  if (device != VK_NULL_HANDLE) fns.vkDeviceWaitIdle(device);
  kernels.clear();
  pipeline_cache.reset();
  allocator.reset();
  if (owns_device && device != VK_NULL_HANDLE) fns.vkDestroyDevice(device, nullptr);
}

void ContextImpl::submit(const VkSubmitInfo& info_, VkFence fence) {
  std::lock_guard lock(queue_mutex);
  vk::check(fns.vkQueueSubmit(queue, 1, &info_, fence), "vkQueueSubmit", name());
}

std::shared_ptr<KernelImpl> ContextImpl::kernel(const KernelSpec& spec) {
  const std::string key = fmt::format("{}|{}|{}|{}", spec.shader, spec.bindings,
                                      spec.push_constant_bytes, fmt::join(spec.constants, ","));
  std::lock_guard lock(kernels_mutex);
  if (auto it = kernels.find(key); it != kernels.end()) {
    return std::shared_ptr<KernelImpl>(shared_from_this(), it->second.get());
  }
  const auto code = vk::shader_code(spec.shader);
  const auto& limits = info();
  if (spec.push_constant_bytes > limits.max_push_constants || spec.push_constant_bytes % 4) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("kernel '{}': push constant block of {} bytes (must be a multiple of 4 "
                            "and <= maxPushConstantsSize {} on '{}')",
                            spec.shader, spec.push_constant_bytes, limits.max_push_constants, name()));
  }
  if (spec.bindings > limits.max_storage_buffers_per_stage) {
    throw Error(ErrorCode::out_of_range,
                fmt::format("kernel '{}' needs {} storage buffers; '{}' allows {} per stage",
                            spec.shader, spec.bindings, name(), limits.max_storage_buffers_per_stage));
  }
  if (spec.constants.size() >= 3) {
    const std::uint64_t invocations =
        std::uint64_t(spec.constants[0]) * spec.constants[1] * spec.constants[2];
    for (int i = 0; i < 3; ++i) {
      if (spec.constants[i] == 0 || spec.constants[i] > limits.max_workgroup_size[i] ||
          invocations > limits.max_workgroup_invocations) {
        throw Error(ErrorCode::out_of_range,
                    fmt::format("kernel '{}': workgroup size {}x{}x{} exceeds the limits of '{}' "
                                "(max {}x{}x{}, {} invocations)",
                                spec.shader, spec.constants[0], spec.constants[1], spec.constants[2],
                                name(), limits.max_workgroup_size[0], limits.max_workgroup_size[1],
                                limits.max_workgroup_size[2], limits.max_workgroup_invocations));
      }
    }
  }

  auto k = std::make_unique<KernelImpl>();
  k->ctx = this;
  k->spec = spec;

  std::vector<VkDescriptorSetLayoutBinding> bindings(spec.bindings);
  for (std::uint32_t i = 0; i < spec.bindings; ++i) {
    bindings[i] = {i, VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, 1, VK_SHADER_STAGE_COMPUTE_BIT, nullptr};
  }
  VkDescriptorSetLayoutCreateInfo dl{VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO};
  dl.bindingCount = spec.bindings;
  dl.pBindings = bindings.data();
  vk::check(fns.vkCreateDescriptorSetLayout(device, &dl, nullptr, &k->set_layout),
            "vkCreateDescriptorSetLayout", name());

  VkPushConstantRange push{VK_SHADER_STAGE_COMPUTE_BIT, 0, spec.push_constant_bytes};
  VkPipelineLayoutCreateInfo pl{VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO};
  pl.setLayoutCount = 1;
  pl.pSetLayouts = &k->set_layout;
  pl.pushConstantRangeCount = spec.push_constant_bytes ? 1 : 0;
  pl.pPushConstantRanges = &push;
  vk::check(fns.vkCreatePipelineLayout(device, &pl, nullptr, &k->layout), "vkCreatePipelineLayout",
            name());

  VkShaderModuleCreateInfo sm{VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO};
  sm.codeSize = code.size() * sizeof(std::uint32_t);
  sm.pCode = code.data();
  VkShaderModule module = VK_NULL_HANDLE;
  vk::check(fns.vkCreateShaderModule(device, &sm, nullptr, &module),
            fmt::format("vkCreateShaderModule ({})", spec.shader), name());

  std::vector<VkSpecializationMapEntry> entries(spec.constants.size());
  for (std::uint32_t i = 0; i < entries.size(); ++i) {
    entries[i] = {i, i * 4u, 4u};
  }
  VkSpecializationInfo si{};
  si.mapEntryCount = static_cast<std::uint32_t>(entries.size());
  si.pMapEntries = entries.data();
  si.dataSize = spec.constants.size() * 4;
  si.pData = spec.constants.data();

  VkComputePipelineCreateInfo ci{VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO};
  ci.stage = {VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO};
  ci.stage.stage = VK_SHADER_STAGE_COMPUTE_BIT;
  ci.stage.module = module;
  ci.stage.pName = "main";
  ci.stage.pSpecializationInfo = entries.empty() ? nullptr : &si;
  ci.layout = k->layout;
  const VkResult r = fns.vkCreateComputePipelines(device, pipeline_cache->handle(), 1, &ci,
                                                  nullptr, &k->pipeline);
  fns.vkDestroyShaderModule(device, module, nullptr);
  vk::check(r, fmt::format("vkCreateComputePipelines ({})", spec.shader), name());
  KernelImpl* raw = k.get();
  kernels[key] = std::move(k);
  return std::shared_ptr<KernelImpl>(shared_from_this(), raw);
}

TensorStorage::~TensorStorage() { ctx->allocator->destroy(buffer); }

std::string describe(const Tensor& t) {
  if (!t.valid()) return "an empty tensor";
  return fmt::format("tensor{} {} {}", t.name().empty() ? "" : " '" + t.name() + "'",
                     to_string(t.shape()), to_string(t.dtype()));
}

}  // namespace detail

namespace {

std::string cache_dir_for(const ContextOptions& o) {
  if (o.disable_pipeline_cache) return {};
  return o.cache_dir.empty() ? vk::default_cache_dir() : o.cache_dir;
}

void finish_setup(detail::ContextImpl& c) {
  if (c.options.limits) vk::apply_limits(*c.options.limits, c.physical.info, c.features);
  c.allocator = std::make_unique<vk::Allocator>(c.fns, c.device, c.info(), c.options.force_staging,
                                                c.options.memory_block_bytes);
  c.pipeline_cache =
      std::make_unique<vk::PipelineCache>(c.fns, c.device, c.info(), cache_dir_for(c.options));
}

}  // namespace

Context::Context(std::shared_ptr<detail::ContextImpl> impl) : impl_(std::move(impl)) {}

Context::Context(const ContextOptions& options) {
  auto c = std::make_shared<detail::ContextImpl>();
  c->options = options;
  const bool validation = options.validation.value_or(vk::validation_requested_by_env());
  c->instance = vk::Instance::create(validation, options.validation_sink);
  auto devices = vk::enumerate_physical_devices(*c->instance);
  std::vector<DeviceInfo> infos;
  for (const auto& d : devices) infos.push_back(d.info);
  std::string selector = options.device;
  if (selector.empty()) {
    if (const char* env = std::getenv("VKRNN_DEVICE"); env && *env) selector = env;
  }
  c->physical = devices[select_device(infos, selector)];
  const auto& s = c->physical.support;
  const auto& info = c->physical.info;
  c->queue_family = info.compute_queue_family;

  const float priority = std::clamp(options.queue_priority, 0.0f, 1.0f);
  VkDeviceQueueCreateInfo qi{VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO};
  qi.queueFamilyIndex = c->queue_family;
  qi.queueCount = 1;
  qi.pQueuePriorities = &priority;

  // Enable what helps and is there; ops check EnabledFeatures before using it.
  const std::uint32_t api = std::min(info.api_version, c->instance->api_version());
  std::vector<const char*> extensions;
  VkPhysicalDeviceFeatures2 features{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2};
  VkPhysicalDevice16BitStorageFeatures storage16{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_16BIT_STORAGE_FEATURES};
  VkPhysicalDeviceShaderFloat16Int8Features float16{
      VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_FLOAT16_INT8_FEATURES};
  VkPhysicalDeviceSubgroupSizeControlFeatures size_control{
      VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_SIZE_CONTROL_FEATURES};
  features.pNext = &storage16;
  void** tail = &storage16.pNext;
  storage16.storageBuffer16BitAccess = s.storage_buffer_16bit;
  if (s.shader_float16) {
    float16.shaderFloat16 = VK_TRUE;
    *tail = &float16;
    tail = &float16.pNext;
    if (api < VK_API_VERSION_1_2) extensions.push_back(VK_KHR_SHADER_FLOAT16_INT8_EXTENSION_NAME);
  }
  if (s.subgroup_size_control) {
    size_control.subgroupSizeControl = VK_TRUE;
    size_control.computeFullSubgroups = s.compute_full_subgroups;
    *tail = &size_control;
    tail = &size_control.pNext;
    if (api < VK_API_VERSION_1_3) extensions.push_back(VK_EXT_SUBGROUP_SIZE_CONTROL_EXTENSION_NAME);
  }
  if (s.portability_subset) extensions.push_back("VK_KHR_portability_subset");

  VkDeviceCreateInfo di{VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO};
  di.pNext = &features;
  di.queueCreateInfoCount = 1;
  di.pQueueCreateInfos = &qi;
  di.enabledExtensionCount = static_cast<std::uint32_t>(extensions.size());
  di.ppEnabledExtensionNames = extensions.data();
  vk::check(c->instance->fns().vkCreateDevice(c->physical.handle, &di, nullptr, &c->device),
            "vkCreateDevice", info.name);
  c->owns_device = true;
  c->fns = vk::load_device_fns(c->instance->fns(), c->device);
  c->fns.vkGetDeviceQueue(c->device, c->queue_family, 0, &c->queue);
  c->features = {s.storage_buffer_16bit, s.shader_float16, s.subgroup_size_control};
  finish_setup(*c);
  impl_ = std::move(c);
}

Context Context::adopt(const ExternalDevice& ext, const ContextOptions& options) {
  if (ext.physical_device == VK_NULL_HANDLE || ext.device == VK_NULL_HANDLE) {
    throw Error(ErrorCode::invalid_argument,
                "ExternalDevice needs instance, physical_device and device handles");
  }
  auto c = std::make_shared<detail::ContextImpl>();
  c->options = options;
  c->instance = vk::Instance::adopt(ext.instance, ext.api_version);
  // The device index is only used in listings: find it for completeness.
  std::uint32_t n = 0;
  c->instance->fns().vkEnumeratePhysicalDevices(ext.instance, &n, nullptr);
  std::vector<VkPhysicalDevice> handles(n);
  c->instance->fns().vkEnumeratePhysicalDevices(ext.instance, &n, handles.data());
  const auto pos = std::find(handles.begin(), handles.end(), ext.physical_device);
  if (pos == handles.end()) {
    throw Error(ErrorCode::invalid_argument,
                "ExternalDevice::physical_device does not belong to ExternalDevice::instance");
  }
  c->physical = vk::query_physical_device(*c->instance, ext.physical_device,
                                          static_cast<std::uint32_t>(pos - handles.begin()));
  const auto& info = c->physical.info;
  if (info.api_version < VK_API_VERSION_1_1) {
    throw Error(ErrorCode::missing_feature,
                fmt::format("'{}' supports only Vulkan {}.{}: vkrnn needs 1.1", info.name,
                            VK_API_VERSION_MAJOR(info.api_version), VK_API_VERSION_MINOR(info.api_version)));
  }
  std::uint32_t fn = 0;
  c->instance->fns().vkGetPhysicalDeviceQueueFamilyProperties(ext.physical_device, &fn, nullptr);
  std::vector<VkQueueFamilyProperties> families(fn);
  c->instance->fns().vkGetPhysicalDeviceQueueFamilyProperties(ext.physical_device, &fn, families.data());
  if (ext.queue_family >= fn || !(families[ext.queue_family].queueFlags & VK_QUEUE_COMPUTE_BIT)) {
    throw Error(ErrorCode::missing_feature,
                fmt::format("adopted queue family {} on '{}' does not support compute", ext.queue_family,
                            info.name));
  }
  if (ext.queue_index >= families[ext.queue_family].queueCount) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("adopted queue index {} is beyond family {}'s {} queue(s)", ext.queue_index,
                            ext.queue_family, families[ext.queue_family].queueCount));
  }
  const auto& s = c->physical.support;
  auto declared = [&](bool enabled, bool supported, const char* feature) {
    if (enabled && !supported) {
      throw Error(ErrorCode::missing_feature,
                  fmt::format("the app declares {} enabled, but '{}' does not support it", feature,
                              info.name));
    }
    return enabled;
  };
  c->features.storage_buffer_16bit =
      declared(ext.features.storage_buffer_16bit, s.storage_buffer_16bit, "storageBuffer16BitAccess");
  c->features.shader_float16 = declared(ext.features.shader_float16, s.shader_float16, "shaderFloat16");
  c->features.subgroup_size_control =
      declared(ext.features.subgroup_size_control, s.subgroup_size_control, "subgroupSizeControl");
  c->device = ext.device;
  c->owns_device = false;
  c->queue_family = ext.queue_family;
  c->physical.info.compute_queue_family = ext.queue_family;
  c->physical.info.timestamp_valid_bits = families[ext.queue_family].timestampValidBits;
  c->physical.info.timestamps =
      c->physical.info.timestamp_valid_bits > 0 && c->physical.info.timestamp_period_ns > 0.0f;
  c->fns = vk::load_device_fns(c->instance->fns(), c->device);
  c->fns.vkGetDeviceQueue(c->device, ext.queue_family, ext.queue_index, &c->queue);
  finish_setup(*c);
  return Context(std::move(c));
}

Context::~Context() = default;

const DeviceInfo& Context::device() const { return impl_->info(); }
const EnabledFeatures& Context::features() const { return impl_->features; }
bool Context::owns_device() const { return impl_->owns_device; }
VkDevice Context::vk_device() const { return impl_->device; }
VkQueue Context::vk_queue() const { return impl_->queue; }

Tensor Context::tensor(const Shape& shape, DType dtype, std::string name) {
  std::size_t n = 1;
  for (auto d : shape) {
    if (d != 0 && n > SIZE_MAX / 16 / d) {
      throw Error(ErrorCode::out_of_range,
                  fmt::format("tensor {} {}: element count overflows", name, to_string(shape)));
    }
    n *= d;
  }
  auto s = std::make_shared<detail::TensorStorage>();
  s->ctx = impl_;
  s->dtype = dtype;
  s->shape = shape;
  s->bytes = n * dtype_size(dtype);
  s->name = std::move(name);
  const std::string what =
      fmt::format("tensor{} {} {}", s->name.empty() ? "" : " '" + s->name + "'", to_string(shape),
                  to_string(dtype));
  s->buffer = impl_->allocator->create_buffer(s->bytes, vk::MemoryUsage::device, what);
  return Tensor(std::move(s));
}

Tensor Context::tensor(const Shape& shape, std::span<const float> data, std::string name) {
  if (element_count(shape) != data.size()) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("tensor{} {}: {} values given for {} elements",
                            name.empty() ? "" : " '" + name + "'", to_string(shape), data.size(),
                            element_count(shape)));
  }
  Tensor t = tensor(shape, DType::f32, std::move(name));
  write(t, std::as_bytes(data));
  return t;
}

namespace {
void check_same_context(const detail::ContextImpl& c, const Tensor& t, const char* what) {
  if (!t.valid()) throw Error(ErrorCode::invalid_argument, fmt::format("{}: empty tensor", what));
  if (t.storage().ctx.get() != &c) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{}: {} belongs to another vkrnn::Context", what, detail::describe(t)));
  }
}
}  // namespace

void Context::write(const Tensor& dst, std::span<const std::byte> data) {
  check_same_context(*impl_, dst, "Context::write");
  if (data.size() != dst.bytes()) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("Context::write: {} bytes given for {} ({} bytes)", data.size(),
                            detail::describe(dst), dst.bytes()));
  }
  if (data.empty()) return;
  const auto& buf = dst.storage().buffer;
  if (buf.mapped) {
    std::memcpy(buf.mapped, data.data(), data.size());
    impl_->allocator->flush(buf, 0, data.size());
    return;
  }
  auto seq = sequence({.label = "Context::write"});
  seq.upload(dst, data);
  seq.eval();
}

void Context::read(const Tensor& src, std::span<std::byte> data) const {
  check_same_context(*impl_, src, "Context::read");
  if (data.size() != src.bytes()) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("Context::read: buffer of {} bytes for {} ({} bytes)", data.size(),
                            detail::describe(src), src.bytes()));
  }
  if (data.empty()) return;
  // Always through a sequence: its barrier makes earlier GPU writes visible to the host even
  // on unified memory, where the read itself is then a plain memcpy.
  Sequence seq(impl_, {.label = "Context::read"});
  seq.download(src);
  seq.eval();
  seq.read_bytes(src, data);
}

Kernel Context::kernel(const KernelSpec& spec) { return Kernel(impl_->kernel(spec)); }

Sequence Context::sequence(const SequenceOptions& options) { return Sequence(impl_, options); }

void Context::save_pipeline_cache() const { impl_->pipeline_cache->save(); }
std::string Context::pipeline_cache_path() const { return impl_->pipeline_cache->path(); }
bool Context::pipeline_cache_loaded() const { return impl_->pipeline_cache->loaded_from_disk(); }
MemoryStats Context::memory_stats() const { return impl_->allocator->stats(); }

}  // namespace vkrnn
