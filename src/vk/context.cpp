#include <algorithm>
#include <atomic>
#include <bit>
#include <charconv>
#include <exception>
#include <chrono>
#include <cstring>
#include <thread>
#include <utility>

#include <fmt/format.h>

#include "vk/check.hpp"
#include "vk/context_impl.hpp"
#include "vk/device_limits.hpp"

namespace vkrnn {

namespace detail {

ContextImpl::~ContextImpl() {
  // vkrnn's own device may be idled; an adopted one never is (that would stall every queue of
  // the app): every submission of vkrnn's is waited for by whoever owns it (Sequence
  // destructors, UploadTicket / the uploads below), so only the uploads remain.
  if (owns_device && device != VK_NULL_HANDLE) fns.vkDeviceWaitIdle(device);
  if (device != VK_NULL_HANDLE) {
    retire_uploads(/*wait=*/true);
    if (upload_recording) {  // a batch nobody closed (cannot happen through UploadBatch)
      fns.vkDestroyCommandPool(device, upload_recording->pool, host_alloc());
      fns.vkDestroyFence(device, upload_recording->fence, host_alloc());
      for (auto& b : upload_recording->staging) allocator->destroy(b);
    }
  }
  kernels.clear();
  pipeline_cache.reset();
  allocator.reset();
  if (owns_device && device != VK_NULL_HANDLE) fns.vkDestroyDevice(device, host_alloc());
}

void ContextImpl::submit(const VkSubmitInfo& info_, VkFence fence) {
  flush_uploads();  // batched uploads first: this work may read what they write
  std::lock_guard lock(queue_mutex);
  vk::check(fns.vkQueueSubmit(queue, 1, &info_, fence), "vkQueueSubmit", name());
  ++queue_submits;
}

void ContextImpl::name_object(VkObjectType type, std::uint64_t handle, const std::string& n) const {
  if (!features.debug_labels || handle == 0) return;
  VkDebugUtilsObjectNameInfoEXT ni{VK_STRUCTURE_TYPE_DEBUG_UTILS_OBJECT_NAME_INFO_EXT};
  ni.objectType = type;
  ni.objectHandle = handle;
  ni.pObjectName = n.c_str();
  instance->fns().vkSetDebugUtilsObjectNameEXT(device, &ni);
}

// --- kernels ---------------------------------------------------------------------------

std::shared_ptr<KernelImpl> ContextImpl::kernel(const KernelSpec& spec) {
  const std::string key = to_string(spec);
  {
    std::lock_guard lock(kernels_mutex);
    if (auto it = kernels.find(key); it != kernels.end()) {
      return std::shared_ptr<KernelImpl>(shared_from_this(), it->second.get());
    }
  }
  const auto code = vk::shader_code(spec.shader);
  const auto& limits = info();
  if (spec.push_constant_bytes > limits.max_push_constants || spec.push_constant_bytes % 4) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("kernel '{}': push constant block of {} bytes (must be a multiple of 4 "
                            "and <= maxPushConstantsSize {} on '{}')",
                            spec.shader, spec.push_constant_bytes, limits.max_push_constants, name()));
  }
  const std::uint32_t texel_mask = vk::texel_bindings(code);
  const std::uint32_t storage_buffers = spec.bindings - std::popcount(texel_mask & (spec.bindings >= 32 ? ~0u : (1u << spec.bindings) - 1u));
  if (storage_buffers > limits.max_storage_buffers_per_stage) {
    throw Error(ErrorCode::out_of_range,
                fmt::format("kernel '{}' needs {} storage buffers; '{}' allows {} per stage",
                            spec.shader, storage_buffers, name(), limits.max_storage_buffers_per_stage));
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

  // Built outside the lock: compiling takes milliseconds to seconds, and a background
  // prebuild must not hold up the thread that records. Two threads asking for the same new
  // spec both build it; the first one stored wins.
  auto k = std::make_unique<KernelImpl>();
  k->ctx = this;
  k->spec = spec;

  k->texel_bindings = texel_mask;
  std::vector<VkDescriptorSetLayoutBinding> bindings(spec.bindings);
  for (std::uint32_t i = 0; i < spec.bindings; ++i) {
    const bool texel = k->is_texel(i);
    bindings[i] = {i, texel ? VK_DESCRIPTOR_TYPE_UNIFORM_TEXEL_BUFFER : VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, 1,
                   VK_SHADER_STAGE_COMPUTE_BIT, nullptr};
  }
  VkDescriptorSetLayoutCreateInfo dl{VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO};
  dl.bindingCount = spec.bindings;
  dl.pBindings = bindings.data();
  vk::check(fns.vkCreateDescriptorSetLayout(device, &dl, host_alloc(), &k->set_layout),
            "vkCreateDescriptorSetLayout", name());

  VkPushConstantRange push{VK_SHADER_STAGE_COMPUTE_BIT, 0, spec.push_constant_bytes};
  VkPipelineLayoutCreateInfo pl{VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO};
  pl.setLayoutCount = 1;
  pl.pSetLayouts = &k->set_layout;
  pl.pushConstantRangeCount = spec.push_constant_bytes ? 1 : 0;
  pl.pPushConstantRanges = &push;
  vk::check(fns.vkCreatePipelineLayout(device, &pl, host_alloc(), &k->layout), "vkCreatePipelineLayout",
            name());

  VkShaderModuleCreateInfo sm{VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO};
  sm.codeSize = code.size() * sizeof(std::uint32_t);
  sm.pCode = code.data();
  VkShaderModule module = VK_NULL_HANDLE;
  vk::check(fns.vkCreateShaderModule(device, &sm, host_alloc(), &module),
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

  VkPipelineCreationFeedback feedback{}, stage_feedback{};
  VkPipelineCreationFeedbackCreateInfo fi{VK_STRUCTURE_TYPE_PIPELINE_CREATION_FEEDBACK_CREATE_INFO};
  fi.pPipelineCreationFeedback = &feedback;
  fi.pipelineStageCreationFeedbackCount = 1;
  fi.pPipelineStageCreationFeedbacks = &stage_feedback;
  VkComputePipelineCreateInfo ci{VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO};
  ci.pNext = creation_feedback ? &fi : nullptr;
  ci.stage = {VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO};
  ci.stage.stage = VK_SHADER_STAGE_COMPUTE_BIT;
  ci.stage.module = module;
  ci.stage.pName = "main";
  ci.stage.pSpecializationInfo = entries.empty() ? nullptr : &si;
  ci.layout = k->layout;
  const auto t0 = std::chrono::steady_clock::now();
  const VkResult r = fns.vkCreateComputePipelines(device, pipeline_cache->handle(), 1, &ci,
                                                  host_alloc(), &k->pipeline);
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  fns.vkDestroyShaderModule(device, module, host_alloc());
  vk::check(r, fmt::format("vkCreateComputePipelines ({})", spec.shader), name());
  name_object(VK_OBJECT_TYPE_PIPELINE, k->pipeline, "vkrnn " + spec.shader);
  const bool hit = (feedback.flags & VK_PIPELINE_CREATION_FEEDBACK_VALID_BIT) &&
                   (feedback.flags & VK_PIPELINE_CREATION_FEEDBACK_APPLICATION_PIPELINE_CACHE_HIT_BIT);

  std::lock_guard lock(kernels_mutex);
  auto [it, fresh] = kernels.try_emplace(key, std::move(k));
  if (fresh) {
    ++pipeline_stats.kernels;
    pipeline_stats.create_ms += ms;
    if (hit) ++pipeline_stats.cache_hits;
  }
  return std::shared_ptr<KernelImpl>(shared_from_this(), it->second.get());
}

// --- batched uploads -------------------------------------------------------------------

void ContextImpl::begin_upload_batch() {
  std::lock_guard lock(upload_mutex);
  ++upload_depth;
}

std::uint64_t ContextImpl::end_upload_batch() {
  std::lock_guard lock(upload_mutex);
  if (upload_depth > 0) --upload_depth;
  const std::uint64_t last = next_upload_chunk - 1;  // the chunk recording now, or the last one
  if (upload_depth == 0) flush_uploads_locked();
  return last;
}

bool ContextImpl::batch_upload(const TensorStorage& dst, std::span<const std::byte> data) {
  std::lock_guard lock(upload_mutex);
  if (upload_depth == 0 || options.upload_batch_bytes == 0) return false;
  auto& chunk = upload_recording;
  if (chunk && chunk->copies > 0 && chunk->bytes + data.size() > options.upload_batch_bytes) {
    flush_uploads_locked();  // bounded staging: this batch continues in a new submission
  }
  if (!chunk) {
    chunk = std::make_unique<UploadChunk>();
    chunk->id = next_upload_chunk++;
    VkCommandPoolCreateInfo pi{VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO};
    pi.flags = VK_COMMAND_POOL_CREATE_TRANSIENT_BIT;
    pi.queueFamilyIndex = queue_family;
    vk::check(fns.vkCreateCommandPool(device, &pi, host_alloc(), &chunk->pool), "vkCreateCommandPool", name());
    VkFenceCreateInfo fi{VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    if (const VkResult r = fns.vkCreateFence(device, &fi, host_alloc(), &chunk->fence); r != VK_SUCCESS) {
      fns.vkDestroyCommandPool(device, chunk->pool, host_alloc());
      chunk.reset();
      vk::check(r, "vkCreateFence", name());
    }
    ++uploads_in_flight_count;  // counts chunks alive: recording or in flight
    VkCommandBufferAllocateInfo ai{VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO};
    ai.commandPool = chunk->pool;
    ai.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
    ai.commandBufferCount = 1;
    vk::check(fns.vkAllocateCommandBuffers(device, &ai, &chunk->cb), "vkAllocateCommandBuffers", name());
    VkCommandBufferBeginInfo bi{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
    bi.flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT;
    vk::check(fns.vkBeginCommandBuffer(chunk->cb, &bi), "vkBeginCommandBuffer", name());
    name_object(VK_OBJECT_TYPE_COMMAND_BUFFER, chunk->cb, fmt::format("vkrnn uploads #{}", chunk->id));
    // Earlier work of vkrnn's may still use the destinations (WAR, WAW).
    VkMemoryBarrier mb{VK_STRUCTURE_TYPE_MEMORY_BARRIER};
    mb.srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT;
    mb.dstAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT;
    fns.vkCmdPipelineBarrier(chunk->cb,
                             VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT |
                                 VK_PIPELINE_STAGE_DRAW_INDIRECT_BIT,
                             VK_PIPELINE_STAGE_TRANSFER_BIT, 0, 1, &mb, 0, nullptr, 0, nullptr);
  }
  vk::Buffer staging = allocator->create_buffer(data.size(), vk::MemoryUsage::upload,
                                                fmt::format("batched upload staging for tensor '{}'", dst.name));
  chunk->staging.push_back(staging);
  std::memcpy(staging.mapped, data.data(), data.size());
  allocator->flush(staging, 0, data.size());
  const VkBuffer to = dst.buffer.handle;
  if (chunk->written.count(to)) {  // the same tensor twice in one batch: WAW
    VkMemoryBarrier mb{VK_STRUCTURE_TYPE_MEMORY_BARRIER};
    mb.srcAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT;
    mb.dstAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT;
    fns.vkCmdPipelineBarrier(chunk->cb, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_PIPELINE_STAGE_TRANSFER_BIT, 0, 1, &mb, 0,
                             nullptr, 0, nullptr);
    chunk->written.clear();
  }
  const VkBufferCopy region{0, 0, data.size()};
  fns.vkCmdCopyBuffer(chunk->cb, staging.handle, to, 1, &region);
  chunk->written.insert(to);
  chunk->destinations.insert(to);
  chunk->bytes += data.size();
  ++chunk->copies;
  return true;
}

void ContextImpl::flush_uploads_locked() {
  auto& chunk = upload_recording;
  if (!chunk) return;
  vk::check(fns.vkEndCommandBuffer(chunk->cb), "vkEndCommandBuffer", name());
  VkSubmitInfo si{VK_STRUCTURE_TYPE_SUBMIT_INFO};
  si.commandBufferCount = 1;
  si.pCommandBuffers = &chunk->cb;
  {
    std::lock_guard lock(queue_mutex);
    vk::check(fns.vkQueueSubmit(queue, 1, &si, chunk->fence), "vkQueueSubmit (uploads)", name());
    ++queue_submits;
  }
  uploads_in_flight.push_back(std::move(chunk));
}

void ContextImpl::flush_uploads() {
  if (uploads_in_flight_count == 0) return;  // nothing recording (nor in flight)
  std::lock_guard lock(upload_mutex);
  flush_uploads_locked();
}

void ContextImpl::retire_uploads(bool wait) {
  std::lock_guard lock(upload_mutex);
  std::erase_if(uploads_in_flight, [&](std::unique_ptr<UploadChunk>& c) {
    const VkResult r = wait ? fns.vkWaitForFences(device, 1, &c->fence, VK_TRUE, UINT64_MAX)
                            : fns.vkGetFenceStatus(device, c->fence);
    if (r != VK_SUCCESS) return false;  // VK_NOT_READY, or a lost device: keep it
    for (auto& b : c->staging) allocator->destroy(b);
    fns.vkDestroyFence(device, c->fence, host_alloc());
    fns.vkDestroyCommandPool(device, c->pool, host_alloc());
    --uploads_in_flight_count;
    return true;
  });
}

bool ContextImpl::upload_done(std::uint64_t chunk) {
  retire_uploads(false);
  std::lock_guard lock(upload_mutex);
  if (upload_recording && upload_recording->id <= chunk) return false;
  return std::none_of(uploads_in_flight.begin(), uploads_in_flight.end(),
                      [&](const auto& c) { return c->id <= chunk; });
}

bool ContextImpl::wait_upload(std::uint64_t chunk, std::uint64_t timeout_ns) {
  {
    std::lock_guard lock(upload_mutex);
    if (upload_recording && upload_recording->id <= chunk) {
      throw Error(ErrorCode::state,
                  "UploadTicket::wait(): the uploads are still held by an open UploadBatch (nothing was "
                  "submitted yet): close the outermost batch first");
    }
    for (const auto& c : uploads_in_flight) {
      if (c->id > chunk) continue;
      const VkResult r = fns.vkWaitForFences(device, 1, &c->fence, VK_TRUE, timeout_ns);
      if (r == VK_TIMEOUT) return false;
      vk::check(r, "vkWaitForFences (uploads)", name());
    }
  }
  retire_uploads(false);
  return true;
}

void ContextImpl::release_upload_destination(VkBuffer buffer) {
  if (uploads_in_flight_count == 0) return;
  std::lock_guard lock(upload_mutex);
  // A copy into this buffer still recorded or in flight: let it finish before the buffer goes.
  if (upload_recording && upload_recording->destinations.count(buffer)) flush_uploads_locked();
  for (const auto& c : uploads_in_flight) {
    if (c->destinations.count(buffer)) fns.vkWaitForFences(device, 1, &c->fence, VK_TRUE, UINT64_MAX);
  }
}

VkBufferView TensorStorage::texel_view_handle() {
  std::lock_guard lock(view_mutex);
  if (texel_view != VK_NULL_HANDLE) return texel_view;
  const auto& info = ctx->info();
  const std::uint64_t texels = std::min<std::uint64_t>(buffer.size / 16, info.max_texel_buffer_elements);
  if (texels == 0 || !info.uniform_texel_u32x4) {
    throw Error(ErrorCode::missing_feature,
                fmt::format("tensor '{}' ({} bytes) cannot be read as a uniform texel buffer on '{}': {}", name,
                            buffer.size, info.name,
                            texels == 0 ? "it holds less than one 16-byte texel"
                                        : "R32G32B32A32_UINT has no uniform texel buffer support"));
  }
  VkBufferViewCreateInfo vi{VK_STRUCTURE_TYPE_BUFFER_VIEW_CREATE_INFO};
  vi.buffer = buffer.handle;
  vi.format = VK_FORMAT_R32G32B32A32_UINT;
  vi.offset = 0;
  vi.range = texels * 16;
  vk::check(ctx->fns.vkCreateBufferView(ctx->device, &vi, ctx->host_alloc(), &texel_view), "vkCreateBufferView",
            ctx->name());
  texel_count = texels;
  return texel_view;
}

TensorStorage::~TensorStorage() {
  if (texel_view != VK_NULL_HANDLE) ctx->fns.vkDestroyBufferView(ctx->device, texel_view, ctx->host_alloc());
  ctx->release_upload_destination(buffer.handle);
  ctx->allocator->destroy(buffer);
}

std::string describe(const Tensor& t) {
  if (!t.valid()) return "an empty tensor";
  return fmt::format("tensor{} {} {}", t.name().empty() ? "" : " '" + t.name() + "'",
                     to_string(t.shape()), to_string(t.dtype()));
}

Tensor make_tensor(const std::shared_ptr<ContextImpl>& c, const Shape& shape, DType dtype, std::string name) {
  std::size_t n = 1;
  for (auto d : shape) {
    if (d != 0 && n > SIZE_MAX / 16 / d) {
      throw Error(ErrorCode::out_of_range,
                  fmt::format("tensor {} {}: element count overflows", name, to_string(shape)));
    }
    n *= d;
  }
  auto s = std::make_shared<TensorStorage>();
  s->ctx = c;
  s->dtype = dtype;
  s->shape = shape;
  s->bytes = n * dtype_size(dtype);
  s->name = std::move(name);
  const std::string what =
      fmt::format("tensor{} {} {}", s->name.empty() ? "" : " '" + s->name + "'", to_string(shape),
                  to_string(dtype));
  s->buffer = c->allocator->create_buffer(s->bytes, vk::MemoryUsage::device, what);
  c->name_object(VK_OBJECT_TYPE_BUFFER, s->buffer.handle, "vkrnn " + what);
  return Tensor(std::move(s));
}

}  // namespace detail

// --- kernel specs as text ----------------------------------------------------------------

std::string to_string(const KernelSpec& spec) {
  return fmt::format("{}|{}|{}|{}", spec.shader, spec.bindings, spec.push_constant_bytes,
                     fmt::join(spec.constants, ","));
}

KernelSpec parse_kernel_spec(std::string_view text) {
  auto fail = [&](const char* why) {
    return Error(ErrorCode::format,
                 fmt::format("kernel spec '{}': {} (expected 'shader|bindings|push bytes|c0,c1,...')", text, why));
  };
  std::vector<std::string_view> parts;
  std::size_t at = 0;
  for (std::size_t bar; (bar = text.find('|', at)) != std::string_view::npos; at = bar + 1) {
    parts.push_back(text.substr(at, bar - at));
  }
  parts.push_back(text.substr(at));
  if (parts.size() != 4) throw fail("not four '|'-separated fields");
  auto number = [&](std::string_view v) {
    std::uint32_t x = 0;
    const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), x);
    if (v.empty() || ec != std::errc{} || end != v.data() + v.size()) throw fail("a field is not a u32");
    return x;
  };
  KernelSpec spec;
  if (parts[0].empty()) throw fail("no shader name");
  spec.shader = std::string(parts[0]);
  spec.bindings = number(parts[1]);
  spec.push_constant_bytes = number(parts[2]);
  for (std::size_t p = 0; !parts[3].empty();) {
    const std::size_t comma = parts[3].find(',', p);
    spec.constants.push_back(number(parts[3].substr(p, comma == std::string_view::npos ? comma : comma - p)));
    if (comma == std::string_view::npos) break;
    p = comma + 1;
  }
  return spec;
}

namespace {

std::string cache_dir_for(const ContextOptions& o) {
  if (o.disable_pipeline_cache) return {};
  return o.cache_dir.empty() ? vk::default_cache_dir() : o.cache_dir;
}

// Debug labels: on where asked for (or by default) and the instance has VK_EXT_debug_utils.
bool labels_for(const ContextOptions& o, bool instance_has_debug_utils, const vk::InstanceFns& f,
                const std::string& device) {
  const bool available = instance_has_debug_utils && f.vkSetDebugUtilsObjectNameEXT &&
                         f.vkCmdBeginDebugUtilsLabelEXT && f.vkCmdEndDebugUtilsLabelEXT;
  if (o.debug_labels.value_or(false) && !available) {
    throw Error(ErrorCode::missing_feature,
                fmt::format("ContextOptions::debug_labels asks for debug-utils labels, but the instance of '{}' "
                            "has no VK_EXT_debug_utils (an adopted instance declares it in "
                            "ExternalDevice::features.debug_utils)",
                            device));
  }
  return o.debug_labels.value_or(true) && available;
}

void finish_setup(const std::shared_ptr<detail::ContextImpl>& c) {
  if (c->options.limits) vk::apply_limits(*c->options.limits, c->physical.info, c->features);
  detail::ContextImpl* raw = c.get();
  auto budget = [raw](std::vector<vk::HeapBudget>& out) {
    if (!raw->features.memory_budget) return false;
    VkPhysicalDeviceMemoryBudgetPropertiesEXT b{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MEMORY_BUDGET_PROPERTIES_EXT};
    VkPhysicalDeviceMemoryProperties2 p{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MEMORY_PROPERTIES_2};
    p.pNext = &b;
    raw->instance->fns().vkGetPhysicalDeviceMemoryProperties2(raw->physical.handle, &p);
    out.resize(p.memoryProperties.memoryHeapCount);
    for (std::uint32_t h = 0; h < out.size(); ++h) out[h] = {b.heapBudget[h], b.heapUsage[h]};
    return true;
  };
  auto namer = [raw](VkDeviceMemory m, const std::string& n) {
    raw->name_object(VK_OBJECT_TYPE_DEVICE_MEMORY, m, n);
  };
  c->allocator = std::make_unique<vk::Allocator>(c->fns, c->device, c->info(), c->options, budget, namer);
  c->pipeline_cache = std::make_unique<vk::PipelineCache>(c->fns, c->device, c->info(), cache_dir_for(c->options),
                                                          c->host_alloc(), c->options.pipeline_cache);
}

}  // namespace

Context::Context(std::shared_ptr<detail::ContextImpl> impl) : impl_(std::move(impl)) {}

Context::Context(const ContextOptions& options) {
  auto c = std::make_shared<detail::ContextImpl>();
  c->options = options;
  const bool validation = options.validation.value_or(vk::validation_requested_by_env());
  c->instance = vk::Instance::create(validation, options.validation_sink, options.allocation_callbacks);
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
  VkPhysicalDeviceTimelineSemaphoreFeatures timeline{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_TIMELINE_SEMAPHORE_FEATURES};
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
  if (s.timeline_semaphore) {
    timeline.timelineSemaphore = VK_TRUE;
    *tail = &timeline;
    tail = &timeline.pNext;
    if (api < VK_API_VERSION_1_2) extensions.push_back(VK_KHR_TIMELINE_SEMAPHORE_EXTENSION_NAME);
  }
  if (s.ext_memory_budget) extensions.push_back(VK_EXT_MEMORY_BUDGET_EXTENSION_NAME);
  if (s.portability_subset) extensions.push_back("VK_KHR_portability_subset");

  VkDeviceCreateInfo di{VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO};
  di.pNext = &features;
  di.queueCreateInfoCount = 1;
  di.pQueueCreateInfos = &qi;
  di.enabledExtensionCount = static_cast<std::uint32_t>(extensions.size());
  di.ppEnabledExtensionNames = extensions.data();
  vk::check(c->instance->fns().vkCreateDevice(c->physical.handle, &di, c->host_alloc(), &c->device),
            "vkCreateDevice", info.name);
  c->owns_device = true;
  c->fns = vk::load_device_fns(c->instance->fns(), c->device);
  c->fns.vkGetDeviceQueue(c->device, c->queue_family, 0, &c->queue);
  c->features.storage_buffer_16bit = s.storage_buffer_16bit;
  c->features.shader_float16 = s.shader_float16;
  c->features.subgroup_size_control = s.subgroup_size_control;
  c->features.timeline_semaphore = s.timeline_semaphore && c->fns.vkWaitSemaphores;
  c->features.memory_budget = s.ext_memory_budget;
  c->features.debug_labels = labels_for(options, c->instance->debug_utils(), c->instance->fns(), info.name);
  c->creation_feedback = api >= VK_API_VERSION_1_3;
  finish_setup(c);
  impl_ = std::move(c);
}

Context Context::adopt(const ExternalDevice& ext, const ContextOptions& options) {
  if (ext.physical_device == VK_NULL_HANDLE || ext.device == VK_NULL_HANDLE) {
    throw Error(ErrorCode::invalid_argument,
                "ExternalDevice needs instance, physical_device and device handles");
  }
  auto c = std::make_shared<detail::ContextImpl>();
  c->options = options;
  c->instance = vk::Instance::adopt(ext.instance, ext.api_version, ext.get_instance_proc_addr);
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
  c->features.timeline_semaphore = declared(ext.features.timeline_semaphore, s.timeline_semaphore, "timelineSemaphore");
  c->features.memory_budget = declared(ext.features.memory_budget, s.ext_memory_budget, "VK_EXT_memory_budget");
  c->device = ext.device;
  c->owns_device = false;
  c->queue_family = ext.queue_family;
  c->physical.info.compute_queue_family = ext.queue_family;
  c->physical.info.timestamp_valid_bits = families[ext.queue_family].timestampValidBits;
  c->physical.info.timestamps =
      c->physical.info.timestamp_valid_bits > 0 && c->physical.info.timestamp_period_ns > 0.0f;
  c->fns = vk::load_device_fns(c->instance->fns(), c->device);
  if (c->features.timeline_semaphore && (!c->fns.vkWaitSemaphores || !c->fns.vkGetSemaphoreCounterValue)) {
    throw Error(ErrorCode::missing_feature,
                fmt::format("the app declares timelineSemaphore enabled, but the device of '{}' exposes no "
                            "vkWaitSemaphores (Vulkan 1.2, or enable VK_KHR_timeline_semaphore)",
                            info.name));
  }
  c->fns.vkGetDeviceQueue(c->device, ext.queue_family, ext.queue_index, &c->queue);
  c->features.debug_labels = labels_for(options, ext.features.debug_utils, c->instance->fns(), info.name);
  c->creation_feedback = std::min(ext.api_version, info.api_version) >= VK_API_VERSION_1_3;
  finish_setup(c);
  return Context(std::move(c));
}

Context::~Context() = default;

const DeviceInfo& Context::device() const { return impl_->info(); }
const EnabledFeatures& Context::features() const { return impl_->features; }
bool Context::owns_device() const { return impl_->owns_device; }
VkDevice Context::vk_device() const { return impl_->device; }
VkQueue Context::vk_queue() const { return impl_->queue; }

Tensor Context::tensor(const Shape& shape, DType dtype, std::string name) {
  return detail::make_tensor(impl_, shape, dtype, std::move(name));
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
  if (impl_->batch_upload(dst.storage(), data)) return;  // an UploadBatch is open
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

// --- warm start ----------------------------------------------------------------------------

struct WarmUpTask::State {
  std::thread thread;
  std::atomic<bool> finished{false};
  std::exception_ptr error;
};

WarmUpTask::WarmUpTask(WarmUpTask&&) noexcept = default;
WarmUpTask& WarmUpTask::operator=(WarmUpTask&& other) noexcept {
  if (this != &other) {
    if (state_ && state_->thread.joinable()) state_->thread.join();
    state_ = std::move(other.state_);
  }
  return *this;
}
WarmUpTask::~WarmUpTask() {
  if (state_ && state_->thread.joinable()) state_->thread.join();
}
bool WarmUpTask::done() const { return !state_ || state_->finished; }
void WarmUpTask::wait() {
  if (!state_) return;
  if (state_->thread.joinable()) state_->thread.join();
  if (auto e = std::exchange(state_->error, nullptr)) std::rethrow_exception(e);
}

namespace {

// Every kernel once, on an empty indirect dispatch: pipelines are created (where real drivers
// compile), and drivers that compile at first use (llvmpipe compiles a pipeline's variant when
// a dispatch binds it, even an empty one) compile too, without touching any data.
void prebuild_now(const std::shared_ptr<detail::ContextImpl>& c, const std::vector<KernelSpec>& specs,
                  bool save_cache) {
  if (specs.empty()) return;
  std::vector<Kernel> kernels;
  std::uint32_t max_push = 0;
  for (const auto& spec : specs) {
    kernels.emplace_back(c->kernel(spec));
    max_push = std::max(max_push, spec.push_constant_bytes);
  }
  const Tensor counts = detail::make_tensor(c, {3}, DType::u32, "Context::prebuild empty grid");
  const Tensor dummy = detail::make_tensor(c, {64}, DType::u32, "Context::prebuild unused binding");
  const std::vector<std::byte> push(max_push, std::byte{0});
  Sequence seq(c, {.label = "Context::prebuild"});
  seq.fill(counts, 0).fill(dummy, 0);
  for (const Kernel& k : kernels) {
    std::vector<Arg> args(k.spec().bindings, inout(dummy));
    for (std::uint32_t i = 0; i < args.size(); ++i) {
      if (k.impl().is_texel(i)) args[i] = in(dummy);  // texel views are read only
    }
    seq.dispatch_indirect(k, args, std::span(push).first(k.spec().push_constant_bytes), counts);
  }
  seq.eval();
  {
    std::lock_guard lock(c->kernels_mutex);
    c->pipeline_stats.prebuilt += static_cast<std::uint32_t>(kernels.size());
  }
  if (save_cache) c->pipeline_cache->save();
}

}  // namespace

WarmUpTask WarmUpTask::start(std::function<void()> work, bool background) {
  WarmUpTask task;
  task.state_ = std::make_shared<State>();
  auto run = [work = std::move(work), st = task.state_.get()] {
    try {
      work();
    } catch (...) {
      st->error = std::current_exception();
    }
    st->finished = true;
  };
  if (background) {
    task.state_->thread = std::thread(std::move(run));
  } else {
    run();
  }
  return task;
}

WarmUpTask Context::prebuild(std::vector<KernelSpec> specs, const PrebuildOptions& options) {
  return WarmUpTask::start([c = impl_, specs = std::move(specs), save = options.save_cache] { prebuild_now(c, specs, save); },
                           options.background);
}

std::vector<KernelSpec> Context::kernel_specs() const {
  std::lock_guard lock(impl_->kernels_mutex);
  std::vector<KernelSpec> out;
  for (const auto& [key, k] : impl_->kernels) out.push_back(k->spec);
  return out;
}

PipelineStats Context::pipeline_stats() const {
  std::lock_guard lock(impl_->kernels_mutex);
  return impl_->pipeline_stats;
}

void Context::save_pipeline_cache() const { impl_->pipeline_cache->save(); }
std::string Context::pipeline_cache_path() const { return impl_->pipeline_cache->path(); }
bool Context::pipeline_cache_loaded() const { return impl_->pipeline_cache->loaded_from_disk(); }
MemoryStats Context::memory_stats() const { return impl_->allocator->stats(); }

// --- uploads ----------------------------------------------------------------------------

UploadBatch::UploadBatch(Context& ctx) : ctx_(ctx.impl_ptr()) { ctx_->begin_upload_batch(); }

UploadBatch::~UploadBatch() {
  if (!open_) return;
  try {
    submit();
  } catch (...) {
    // A destructor must not throw; the uploads' own errors surface at the next submission.
  }
}

UploadTicket UploadBatch::submit() {
  if (!open_) throw Error(ErrorCode::state, "UploadBatch::submit(): already submitted");
  open_ = false;
  UploadTicket t;
  t.ctx_ = ctx_;
  t.chunk_ = ctx_->end_upload_batch();
  return t;
}

void UploadBatch::finish() {
  const UploadTicket t = submit();
  bool nested = false;
  {
    std::lock_guard lock(ctx_->upload_mutex);
    nested = ctx_->upload_depth > 0;
  }
  if (!nested) t.wait();
}

bool UploadTicket::done() const { return !ctx_ || ctx_->upload_done(chunk_); }

bool UploadTicket::wait(std::uint64_t timeout_ns) const { return !ctx_ || ctx_->wait_upload(chunk_, timeout_ns); }

}  // namespace vkrnn
