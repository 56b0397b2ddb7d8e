// The command recorder. Barrier placement is a property of the recorder, not of the ops: every
// binding declares read/write access, and a pipeline barrier is recorded exactly when an access
// conflicts with an earlier unsynchronised one (RAW, WAW, WAR). lavapipe executes dispatches in
// order and its validation misses compute->compute hazards, so this logic is tested directly.
//
// Recording does the expensive part once (validation of arguments, descriptor sets, staging
// copies of uploaded data, hazard analysis) and keeps the Vulkan commands as a list, which is
// emitted into vkrnn's own command buffer at the first submit() or into an app's command buffer
// by record_into() -- as often as the app likes, without recording again.
#include <algorithm>
#include <cstring>
#include <functional>
#include <unordered_map>

#include <fmt/format.h>

#include "vk/check.hpp"
#include "vk/context_impl.hpp"
#include "vk/sequence_access.hpp"
#include "vkrnn/sequence.hpp"

namespace vkrnn::detail {

namespace {
constexpr VkPipelineStageFlags kCompute = VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT;
constexpr VkPipelineStageFlags kTransfer = VK_PIPELINE_STAGE_TRANSFER_BIT;
constexpr VkPipelineStageFlags kIndirect = VK_PIPELINE_STAGE_DRAW_INDIRECT_BIT;
constexpr std::uint32_t kSetsPerPool = 256;

struct GatePush {  // shaders/sequence_gate.comp
  std::uint32_t flag_count, table_words;
};

using Command = std::function<void(VkCommandBuffer)>;
}  // namespace

struct SequenceImpl {
  std::shared_ptr<ContextImpl> ctx;
  SequenceOptions options;
  VkCommandPool pool = VK_NULL_HANDLE;
  VkCommandBuffer cb = VK_NULL_HANDLE;  // vkrnn's own, filled at the first submit()
  VkFence fence = VK_NULL_HANDLE;
  VkQueryPool queries = VK_NULL_HANDLE;
  std::vector<VkDescriptorPool> descriptor_pools;
  std::uint32_t sets_in_last_pool = kSetsPerPool;

  // Recording: empty -> recording -> ended (by submit() or record_into()).
  enum class State { empty, recording, ended } state = State::empty;
  // The latest execution: vkrnn's own submission (fence), or the app's submission of a command
  // buffer it recorded into (a timeline point, or mark_complete()).
  enum class Run { none, own, external } run = Run::none;
  bool completed = true;     // the latest execution finished (observed)
  bool own_cb_ready = false; // the commands were emitted into `cb`
  TimelinePoint external_point;
  std::vector<Command> commands;
  std::uint32_t open_labels = 0;

  // Per-buffer hazard state since the last barrier.
  struct Track {
    VkPipelineStageFlags write_stage = 0;
    VkAccessFlags write_access = 0;
    VkPipelineStageFlags read_stages = 0;
  };
  std::unordered_map<VkBuffer, Track> tracks;
  std::vector<std::shared_ptr<TensorStorage>> keep_alive;
  std::vector<vk::Buffer> uploads;
  std::unordered_map<const TensorStorage*, vk::Buffer> readbacks;  // staging path
  std::unordered_map<const TensorStorage*, bool> downloaded;
  std::vector<std::string> timed_kernels;
  SequenceStats stats;

  // The gate (Sequence::begin_gate): a table of workgroup counts, one (x, y, z) slot per
  // distinct grid recorded inside the region, copied from host-visible staging at the start of
  // every execution (the staging is written when the recording ends, when every grid is known).
  enum class Gate { none, open, ended } gate = Gate::none;
  Tensor gate_table;
  Kernel gate_check;  // shaders/sequence_gate.comp
  vk::Buffer gate_template;
  std::vector<Groups> gate_grids;

  const vk::DeviceFns& fns() const { return ctx->fns; }
  VkDevice device() const { return ctx->device; }
  bool labels_on() const { return ctx->features.debug_labels; }

  SequenceImpl(std::shared_ptr<ContextImpl> c, SequenceOptions o)
      : ctx(std::move(c)), options(std::move(o)) {
    VkCommandPoolCreateInfo pi{VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO};
    pi.flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT;
    pi.queueFamilyIndex = ctx->queue_family;
    vk::check(fns().vkCreateCommandPool(device(), &pi, ctx->host_alloc(), &pool), "vkCreateCommandPool",
              ctx->name());
    VkCommandBufferAllocateInfo ai{VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO};
    ai.commandPool = pool;
    ai.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
    ai.commandBufferCount = 1;
    vk::check(fns().vkAllocateCommandBuffers(device(), &ai, &cb), "vkAllocateCommandBuffers",
              ctx->name());
    VkFenceCreateInfo fi{VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    vk::check(fns().vkCreateFence(device(), &fi, ctx->host_alloc(), &fence), "vkCreateFence", ctx->name());
    if (options.profile && ctx->info().timestamps && options.max_timed_dispatches > 0) {
      VkQueryPoolCreateInfo qi{VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO};
      qi.queryType = VK_QUERY_TYPE_TIMESTAMP;
      qi.queryCount = 2 * options.max_timed_dispatches;
      vk::check(fns().vkCreateQueryPool(device(), &qi, ctx->host_alloc(), &queries), "vkCreateQueryPool",
                ctx->name());
    }
    if (labels_on()) {
      const std::string name = "vkrnn " + label();
      ctx->name_object(VK_OBJECT_TYPE_COMMAND_BUFFER, cb, name);
      ctx->name_object(VK_OBJECT_TYPE_FENCE, fence, name);
    }
  }

  ~SequenceImpl() {
    // Never free memory under the GPU: wait for vkrnn's own submission, or for the timeline
    // point the app named for its submission of this work (nothing else of the app's).
    if (run == Run::own && !completed) {
      fns().vkWaitForFences(device(), 1, &fence, VK_TRUE, UINT64_MAX);
    } else if (run == Run::external && !completed && external_point.semaphore != VK_NULL_HANDLE) {
      wait_timeline(UINT64_MAX);
    }
    release_resources();
    for (auto p : descriptor_pools) fns().vkDestroyDescriptorPool(device(), p, ctx->host_alloc());
    if (queries) fns().vkDestroyQueryPool(device(), queries, ctx->host_alloc());
    fns().vkDestroyFence(device(), fence, ctx->host_alloc());
    fns().vkDestroyCommandPool(device(), pool, ctx->host_alloc());
  }

  void release_resources() {
    for (auto& b : uploads) ctx->allocator->destroy(b);
    for (auto& [k, b] : readbacks) ctx->allocator->destroy(b);
    uploads.clear();
    readbacks.clear();
    downloaded.clear();
    keep_alive.clear();
  }

  std::string label() const {
    return options.label.empty() ? std::string("sequence") : "sequence '" + options.label + "'";
  }

  bool in_flight() { return run != Run::none && !poll(); }

  void require_recordable() {
    if (state == State::ended && in_flight()) {
      throw Error(ErrorCode::state,
                  fmt::format("{}: cannot record while the submitted work is in flight "
                              "(wait() or reset() first)", label()));
    }
    if (state == State::ended) {
      throw Error(ErrorCode::state,
                  fmt::format("{}: already submitted; call reset() to record new work", label()));
    }
    if (state == State::empty) begin();
  }

  void begin() {
    state = State::recording;
    if (queries) {
      const std::uint32_t n = 2 * options.max_timed_dispatches;
      commands.push_back([this, n](VkCommandBuffer c) { fns().vkCmdResetQueryPool(c, queries, 0, n); });
    }
    // Entry barrier: work submitted earlier (other sequences, Context::write staging copies,
    // the previous execution of this very recording, the gate table's indirect reads) may
    // still be using buffers this sequence touches; submission order alone is no memory
    // dependency. One barrier per execution covers all of it, and makes results visible to
    // host reads after the fence.
    commands.push_back([this](VkCommandBuffer c) {
      VkMemoryBarrier mb{VK_STRUCTURE_TYPE_MEMORY_BARRIER};
      mb.srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT;
      mb.dstAccessMask = VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT |
                         VK_ACCESS_TRANSFER_READ_BIT | VK_ACCESS_TRANSFER_WRITE_BIT |
                         VK_ACCESS_INDIRECT_COMMAND_READ_BIT | VK_ACCESS_HOST_READ_BIT;
      fns().vkCmdPipelineBarrier(c, kCompute | kTransfer | kIndirect,
                                 kCompute | kTransfer | kIndirect | VK_PIPELINE_STAGE_HOST_BIT, 0, 1, &mb, 0,
                                 nullptr, 0, nullptr);
    });
  }

  // --- debug labels ------------------------------------------------------------------
  void cmd_label_begin(VkCommandBuffer c, const std::string& name) const {
    VkDebugUtilsLabelEXT l{VK_STRUCTURE_TYPE_DEBUG_UTILS_LABEL_EXT};
    l.pLabelName = name.c_str();
    ctx->instance->fns().vkCmdBeginDebugUtilsLabelEXT(c, &l);
  }
  void cmd_label_end(VkCommandBuffer c) const { ctx->instance->fns().vkCmdEndDebugUtilsLabelEXT(c); }

  void begin_label(std::string name) {
    if (!labels_on()) return;
    require_recordable();
    commands.push_back([this, name = std::move(name)](VkCommandBuffer c) { cmd_label_begin(c, name); });
    ++open_labels;
    ++stats.debug_labels;
  }
  void end_label() {
    if (!labels_on() || open_labels == 0 || state != State::recording) return;
    commands.push_back([this](VkCommandBuffer c) { cmd_label_end(c); });
    --open_labels;
  }

  // --- ending the recording and emitting it --------------------------------------------
  void finish_recording() {
    if (state == State::empty) begin();  // an empty execution still signals
    if (state != State::recording) return;
    while (open_labels > 0) end_label();
    write_gate_template();
    if (labels_on()) ++stats.debug_labels;  // the region around the whole sequence
    state = State::ended;
  }

  // Exit barrier (app command buffers only): vkrnn's writes before whatever the app records
  // next; vkrnn's own next submission has its entry barrier instead.
  void emit(VkCommandBuffer target, bool app_buffer) {
    const std::string region = "vkrnn " + label();
    if (labels_on()) cmd_label_begin(target, region);
    for (const auto& c : commands) c(target);
    if (app_buffer) {
      VkMemoryBarrier mb{VK_STRUCTURE_TYPE_MEMORY_BARRIER};
      mb.srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT;
      mb.dstAccessMask = VK_ACCESS_MEMORY_READ_BIT | VK_ACCESS_MEMORY_WRITE_BIT;
      fns().vkCmdPipelineBarrier(target, kCompute | kTransfer, VK_PIPELINE_STAGE_ALL_COMMANDS_BIT, 0, 1, &mb, 0,
                                 nullptr, 0, nullptr);
    }
    if (labels_on()) cmd_label_end(target);
  }

  void prepare_own_command_buffer() {
    if (own_cb_ready) return;
    VkCommandBufferBeginInfo bi{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
    vk::check(fns().vkBeginCommandBuffer(cb, &bi), "vkBeginCommandBuffer", ctx->name());
    emit(cb, false);
    vk::check(fns().vkEndCommandBuffer(cb), "vkEndCommandBuffer", ctx->name());
    own_cb_ready = true;
  }

  // --- completion --------------------------------------------------------------------
  bool poll() {
    if (run == Run::none || completed) return true;
    if (run == Run::own) {
      const VkResult r = fns().vkGetFenceStatus(device(), fence);
      if (r == VK_SUCCESS) {
        completed = true;
      } else if (r != VK_NOT_READY) {
        vk::check(r, "vkGetFenceStatus", ctx->name());
      }
      return completed;
    }
    if (external_point.semaphore == VK_NULL_HANDLE) return false;  // until mark_complete()
    std::uint64_t value = 0;
    vk::check(fns().vkGetSemaphoreCounterValue(device(), external_point.semaphore, &value),
              "vkGetSemaphoreCounterValue", ctx->name());
    completed = value >= external_point.value;
    return completed;
  }

  bool wait_timeline(std::uint64_t timeout_ns) {
    VkSemaphoreWaitInfo wi{VK_STRUCTURE_TYPE_SEMAPHORE_WAIT_INFO};
    wi.semaphoreCount = 1;
    wi.pSemaphores = &external_point.semaphore;
    wi.pValues = &external_point.value;
    const VkResult r = fns().vkWaitSemaphores(device(), &wi, timeout_ns);
    if (r == VK_TIMEOUT) return false;
    vk::check(r, "vkWaitSemaphores", ctx->name());
    completed = true;
    return true;
  }

  bool wait(std::uint64_t timeout_ns) {
    if (run == Run::none) {
      if (state == State::empty) return true;
      throw Error(ErrorCode::state, fmt::format("{}: wait() before submit()", label()));
    }
    if (completed) return true;
    if (run == Run::own) {
      const VkResult r = fns().vkWaitForFences(device(), 1, &fence, VK_TRUE, timeout_ns);
      if (r == VK_TIMEOUT) return false;
      vk::check(r, "vkWaitForFences", ctx->name());
      completed = true;
      return true;
    }
    if (external_point.semaphore == VK_NULL_HANDLE) {
      throw Error(ErrorCode::state,
                  fmt::format("{}: its work was recorded into an app command buffer without a timeline "
                              "point, so vkrnn cannot wait for it: call mark_complete() once the app's "
                              "submission finished",
                              label()));
    }
    return wait_timeline(timeout_ns);
  }

  void require_timeline(const char* what) const {
    if (!ctx->features.timeline_semaphore || !fns().vkWaitSemaphores || !fns().vkGetSemaphoreCounterValue) {
      throw Error(ErrorCode::missing_feature,
                  fmt::format("{}: {} needs timeline semaphores, which are not enabled on '{}' (Vulkan 1.2 "
                              "or VK_KHR_timeline_semaphore with the timelineSemaphore feature; an adopted "
                              "device declares it in ExternalDevice::features.timeline_semaphore)",
                              label(), what, ctx->name()));
    }
  }

  struct Use {
    VkBuffer buffer;
    bool read;
    bool write;
    VkPipelineStageFlags stage;
    VkAccessFlags read_access;
    VkAccessFlags write_access;
  };

  // Records one barrier if any use conflicts with unsynchronised earlier work, then notes the
  // uses. The barrier covers every pending stage (a global memory barrier is what GPUs execute
  // anyway), so all tracked state is synchronised afterwards.
  void hazard_barrier(std::span<const Use> uses) {
    bool hazard = false;
    for (const auto& u : uses) {
      auto it = tracks.find(u.buffer);
      if (it == tracks.end()) continue;
      const Track& t = it->second;
      if (u.read && t.write_stage) hazard = true;                       // RAW
      if (u.write && (t.write_stage || t.read_stages)) hazard = true;   // WAW, WAR
    }
    if (hazard) {
      VkPipelineStageFlags src = 0;
      VkAccessFlags src_access = 0;
      for (const auto& [buf, t] : tracks) {
        src |= t.write_stage | t.read_stages;
        src_access |= t.write_access;
      }
      VkPipelineStageFlags dst = 0;
      VkAccessFlags dst_access = 0;
      for (const auto& u : uses) {
        dst |= u.stage;
        if (u.read) dst_access |= u.read_access;
        if (u.write) dst_access |= u.write_access;
      }
      // Later commands may sit in other stages than these uses: widen dst to every stage the
      // recorder uses so clearing all tracks below stays sound.
      dst |= kCompute | kTransfer | kIndirect;
      dst_access |= VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT |
                    VK_ACCESS_TRANSFER_READ_BIT | VK_ACCESS_TRANSFER_WRITE_BIT |
                    VK_ACCESS_INDIRECT_COMMAND_READ_BIT;
      commands.push_back([this, src, dst, src_access, dst_access](VkCommandBuffer c) {
        VkMemoryBarrier mb{VK_STRUCTURE_TYPE_MEMORY_BARRIER};
        mb.srcAccessMask = src_access;
        mb.dstAccessMask = dst_access;
        fns().vkCmdPipelineBarrier(c, src, dst, 0, 1, &mb, 0, nullptr, 0, nullptr);
      });
      ++stats.barriers;
      tracks.clear();
    }
    for (const auto& u : uses) {
      Track& t = tracks[u.buffer];
      if (u.write) {
        t.write_stage = u.stage;
        t.write_access = u.write_access;
        t.read_stages = 0;
      }
      if (u.read) t.read_stages |= u.stage;
    }
  }

  void copy_command(VkBuffer from, VkBuffer to, VkDeviceSize bytes) {
    commands.push_back([this, from, to, bytes](VkCommandBuffer c) {
      const VkBufferCopy region{0, 0, bytes};
      fns().vkCmdCopyBuffer(c, from, to, 1, &region);
    });
    ++stats.copies;
  }

  void keep(const Tensor& t) { keep_alive.push_back(t.storage_ptr()); }

  void check_tensor(const Tensor& t, const char* what) const {
    if (!t.valid()) throw Error(ErrorCode::invalid_argument, fmt::format("{}: {} is an empty tensor", label(), what));
    if (t.storage().ctx != ctx) {
      throw Error(ErrorCode::invalid_argument,
                  fmt::format("{}: {} {} belongs to another vkrnn::Context", label(), what, describe(t)));
    }
  }

  VkDescriptorSet allocate_set(VkDescriptorSetLayout layout, std::uint32_t bindings) {
    if (sets_in_last_pool >= kSetsPerPool) {
      const VkDescriptorPoolSize sizes[] = {{VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, kSetsPerPool * 8},
                                            {VK_DESCRIPTOR_TYPE_UNIFORM_TEXEL_BUFFER, kSetsPerPool}};
      VkDescriptorPoolCreateInfo pi{VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO};
      pi.maxSets = kSetsPerPool;
      pi.poolSizeCount = 2;
      pi.pPoolSizes = sizes;
      VkDescriptorPool p = VK_NULL_HANDLE;
      vk::check(fns().vkCreateDescriptorPool(device(), &pi, ctx->host_alloc(), &p), "vkCreateDescriptorPool",
                ctx->name());
      descriptor_pools.push_back(p);
      sets_in_last_pool = 0;
    }
    VkDescriptorSetAllocateInfo ai{VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO};
    ai.descriptorPool = descriptor_pools.back();
    ai.descriptorSetCount = 1;
    ai.pSetLayouts = &layout;
    VkDescriptorSet set = VK_NULL_HANDLE;
    VkResult r = fns().vkAllocateDescriptorSets(device(), &ai, &set);
    if (r == VK_ERROR_OUT_OF_POOL_MEMORY || r == VK_ERROR_FRAGMENTED_POOL) {
      sets_in_last_pool = kSetsPerPool;  // kernels with > 8 bindings can drain a pool early
      return allocate_set(layout, bindings);
    }
    vk::check(r, "vkAllocateDescriptorSets", ctx->name());
    ++sets_in_last_pool;
    return set;
  }

  void record_dispatch(const Kernel& kernel, std::span<const Arg> args,
                       std::span<const std::byte> push, const Groups* groups,
                       const Tensor* indirect, std::size_t indirect_offset, bool gateable = true) {
    const KernelImpl& k = kernel.impl();
    const auto& spec = k.spec;
    if (k.ctx != ctx.get()) {
      throw Error(ErrorCode::invalid_argument,
                  fmt::format("{}: kernel '{}' belongs to another vkrnn::Context", label(), spec.shader));
    }
    if (args.size() != spec.bindings) {
      throw Error(ErrorCode::invalid_argument,
                  fmt::format("{}: kernel '{}' takes {} buffers, {} given", label(), spec.shader,
                              spec.bindings, args.size()));
    }
    if (push.size() != spec.push_constant_bytes) {
      throw Error(ErrorCode::invalid_argument,
                  fmt::format("{}: kernel '{}' takes {} bytes of push constants, {} given", label(),
                              spec.shader, spec.push_constant_bytes, push.size()));
    }
    const auto& info = ctx->info();
    if (groups) {
      for (int i = 0; i < 3; ++i) {
        if ((*groups)[i] > info.max_workgroup_count[i]) {
          throw Error(ErrorCode::out_of_range,
                      fmt::format("{}: kernel '{}' dispatch of {}x{}x{} workgroups exceeds "
                                  "maxComputeWorkGroupCount {}x{}x{} on '{}'",
                                  label(), spec.shader, (*groups)[0], (*groups)[1], (*groups)[2],
                                  info.max_workgroup_count[0], info.max_workgroup_count[1],
                                  info.max_workgroup_count[2], ctx->name()));
        }
      }
    }
    std::vector<Use> uses;
    std::vector<VkDescriptorBufferInfo> buffer_infos(args.size());
    std::vector<VkBufferView> views(args.size(), VK_NULL_HANDLE);
    for (std::size_t i = 0; i < args.size(); ++i) {
      const Tensor& t = args[i].tensor;
      check_tensor(t, fmt::format("binding {} of kernel '{}'", i, spec.shader).c_str());
      if (k.is_texel(static_cast<std::uint32_t>(i))) {
        if (args[i].access != Access::read) {
          throw Error(ErrorCode::invalid_argument,
                      fmt::format("{}: binding {} of kernel '{}' is a uniform texel buffer: read only", label(), i,
                                  spec.shader));
        }
        views[i] = t.storage().texel_view_handle();
        if (t.bytes() / 16 > t.storage().texel_count) {  // a partial last texel is not in the view
          throw Error(ErrorCode::out_of_range,
                      fmt::format("{}: {} ({} bytes) bound to kernel '{}' as a texel buffer exceeds "
                                  "maxTexelBufferElements ({} texels of 16 bytes) of '{}'",
                                  label(), describe(t), t.bytes(), spec.shader, info.max_texel_buffer_elements,
                                  ctx->name()));
        }
      } else if (t.bytes() > info.max_storage_buffer_range) {
        throw Error(ErrorCode::out_of_range,
                    fmt::format("{}: {} ({} bytes) bound to kernel '{}' exceeds maxStorageBufferRange "
                                "({} bytes) of '{}': split the tensor",
                                label(), describe(t), t.bytes(), spec.shader,
                                info.max_storage_buffer_range, ctx->name()));
      }
      const auto& buf = t.storage().buffer;
      buffer_infos[i] = {buf.handle, 0, VK_WHOLE_SIZE};
      const Access a = args[i].access;
      uses.push_back({buf.handle, a != Access::write, a != Access::read, kCompute,
                      VK_ACCESS_SHADER_READ_BIT, VK_ACCESS_SHADER_WRITE_BIT});
      keep(t);
    }
    if (indirect) {
      check_tensor(*indirect, "indirect buffer");
      if (indirect_offset % 4 || indirect_offset + 12 > indirect->bytes()) {
        throw Error(ErrorCode::out_of_range,
                    fmt::format("{}: indirect dispatch reads 12 bytes at offset {} of {} ({} bytes)",
                                label(), indirect_offset, describe(*indirect), indirect->bytes()));
      }
      uses.push_back({indirect->storage().buffer.handle, true, false, kIndirect,
                      VK_ACCESS_INDIRECT_COMMAND_READ_BIT, 0});
      keep(*indirect);
    }
    if (groups && ((*groups)[0] == 0 || (*groups)[1] == 0 || (*groups)[2] == 0)) return;  // no work
    require_recordable();
    const bool gated = groups && gate == Gate::open && gateable;
    if (gated) {
      indirect_offset = 12 * gate_slot(*groups);
      indirect = &gate_table;
      groups = nullptr;
      uses.push_back({gate_table.storage().buffer.handle, true, false, kIndirect,
                      VK_ACCESS_INDIRECT_COMMAND_READ_BIT, 0});
    }
    hazard_barrier(uses);

    VkDescriptorSet set = allocate_set(k.set_layout, spec.bindings);
    std::vector<VkWriteDescriptorSet> writes(args.size());
    for (std::uint32_t i = 0; i < args.size(); ++i) {
      writes[i] = {VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET};
      writes[i].dstSet = set;
      writes[i].dstBinding = i;
      writes[i].descriptorCount = 1;
      if (views[i] != VK_NULL_HANDLE) {
        writes[i].descriptorType = VK_DESCRIPTOR_TYPE_UNIFORM_TEXEL_BUFFER;
        writes[i].pTexelBufferView = &views[i];
      } else {
        writes[i].descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
        writes[i].pBufferInfo = &buffer_infos[i];
      }
    }
    fns().vkUpdateDescriptorSets(device(), static_cast<std::uint32_t>(writes.size()), writes.data(), 0, nullptr);

    const bool timed = queries && timed_kernels.size() < options.max_timed_dispatches;
    const auto q = static_cast<std::uint32_t>(2 * timed_kernels.size());
    if (timed) timed_kernels.push_back(spec.shader);
    const bool labelled = labels_on();
    if (labelled) ++stats.debug_labels;
    const Groups direct = groups ? *groups : Groups{0, 0, 0};
    const VkBuffer indirect_buffer = groups ? VK_NULL_HANDLE : indirect->storage().buffer.handle;
    commands.push_back([this, &k, set, timed, q, labelled, direct, indirect_buffer, indirect_offset,
                        bytes = std::vector<std::byte>(push.begin(), push.end())](VkCommandBuffer c) {
      if (labelled) cmd_label_begin(c, k.spec.shader);
      fns().vkCmdBindPipeline(c, VK_PIPELINE_BIND_POINT_COMPUTE, k.pipeline);
      fns().vkCmdBindDescriptorSets(c, VK_PIPELINE_BIND_POINT_COMPUTE, k.layout, 0, 1, &set, 0, nullptr);
      if (!bytes.empty()) {
        fns().vkCmdPushConstants(c, k.layout, VK_SHADER_STAGE_COMPUTE_BIT, 0,
                                 static_cast<std::uint32_t>(bytes.size()), bytes.data());
      }
      // Both stamps at BOTTOM_OF_PIPE: the first waits for earlier work, so each interval is
      // this dispatch alone.
      if (timed) fns().vkCmdWriteTimestamp(c, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, queries, q);
      if (indirect_buffer == VK_NULL_HANDLE) {
        fns().vkCmdDispatch(c, direct[0], direct[1], direct[2]);
      } else {
        fns().vkCmdDispatchIndirect(c, indirect_buffer, indirect_offset);
      }
      if (timed) fns().vkCmdWriteTimestamp(c, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, queries, q + 1);
      if (labelled) cmd_label_end(c);
    });
    ++stats.dispatches;
    if (gated) ++stats.gated_dispatches;
  }

  std::size_t gate_slot(const Groups& g) {
    const auto it = std::find(gate_grids.begin(), gate_grids.end(), g);
    if (it != gate_grids.end()) return static_cast<std::size_t>(it - gate_grids.begin());
    if (gate_grids.size() == Sequence::max_gate_grids) {
      throw Error(ErrorCode::out_of_range,
                  fmt::format("{}: more than {} distinct workgroup grids inside one gate region",
                              label(), Sequence::max_gate_grids));
    }
    gate_grids.push_back(g);
    return gate_grids.size() - 1;
  }

  void begin_gate() {
    if (gate != Gate::none) {
      throw Error(ErrorCode::state, fmt::format("{}: begin_gate(): one gate region per recording "
                                                "(this one already has one)", label()));
    }
    require_recordable();
    const std::size_t bytes = 12 * Sequence::max_gate_grids + 4;  // + the open-checks counter
    auto st = std::make_shared<TensorStorage>();
    st->ctx = ctx;
    st->dtype = DType::u32;
    st->shape = {3 * Sequence::max_gate_grids + 1};
    st->bytes = bytes;
    st->name = "gate table of " + label();
    st->buffer = ctx->allocator->create_buffer(bytes, vk::MemoryUsage::device, st->name);
    ctx->name_object(VK_OBJECT_TYPE_BUFFER, st->buffer.handle, st->name);
    gate_table = Tensor(std::move(st));
    gate_template = ctx->allocator->create_buffer(bytes, vk::MemoryUsage::upload, "gate counts of " + label());
    uploads.push_back(gate_template);
    gate_check = Kernel(ctx->kernel({"sequence_gate", {64, 1, 1}, 2, sizeof(GatePush)}));
    const Use use{gate_table.storage().buffer.handle, false, true, kTransfer, 0, VK_ACCESS_TRANSFER_WRITE_BIT};
    hazard_barrier({&use, 1});
    copy_command(gate_template.handle, gate_table.storage().buffer.handle, bytes);
    keep(gate_table);
    gate = Gate::open;
  }

  void close_gate_when_all(const Tensor& flags) {
    if (gate != Gate::open) {
      throw Error(ErrorCode::state,
                  fmt::format("{}: close_gate_when_all() outside begin_gate() .. end_gate()", label()));
    }
    check_tensor(flags, "gate flags");
    if (flags.dtype() != DType::u32 && flags.dtype() != DType::i32) {
      throw Error(ErrorCode::invalid_argument,
                  fmt::format("{}: gate flags {} must be u32 or i32", label(), describe(flags)));
    }
    const GatePush push{static_cast<std::uint32_t>(flags.bytes() / 4),
                        static_cast<std::uint32_t>(3 * Sequence::max_gate_grids)};
    const Arg args[] = {{flags, Access::read}, {gate_table, Access::read_write}};
    const Groups one{1, 1, 1};
    // The check itself always runs: it is what closes the gate.
    record_dispatch(gate_check, args, std::as_bytes(std::span<const GatePush>(&push, 1)), &one, nullptr, 0,
                    /*gateable=*/false);
  }

  // When the recording ends: the table's initial contents are the grids recorded inside the
  // region. Every execution (submit, record_into, replays) copies them in first.
  void write_gate_template() {
    if (gate == Gate::none) return;
    std::vector<std::uint32_t> words(3 * Sequence::max_gate_grids + 1, 0);
    for (std::size_t i = 0; i < gate_grids.size(); ++i) {
      for (int j = 0; j < 3; ++j) words[3 * i + j] = gate_grids[i][j];
    }
    std::memcpy(gate_template.mapped, words.data(), 4 * words.size());
    ctx->allocator->flush(gate_template, 0, 4 * words.size());
  }
};

}  // namespace vkrnn::detail

namespace vkrnn {

using detail::SequenceImpl;

Sequence::Sequence(std::shared_ptr<detail::ContextImpl> ctx, const SequenceOptions& options)
    : impl_(std::make_unique<SequenceImpl>(std::move(ctx), options)) {}
Sequence::Sequence(Sequence&&) noexcept = default;
Sequence& Sequence::operator=(Sequence&&) noexcept = default;
Sequence::~Sequence() = default;

Sequence& Sequence::dispatch(const Kernel& kernel, std::span<const Arg> args,
                             std::span<const std::byte> push, Groups groups) {
  impl_->record_dispatch(kernel, args, push, &groups, nullptr, 0);
  return *this;
}

Sequence& Sequence::dispatch_indirect(const Kernel& kernel, std::span<const Arg> args,
                                      std::span<const std::byte> push, const Tensor& indirect,
                                      std::size_t offset) {
  impl_->record_dispatch(kernel, args, push, nullptr, &indirect, offset);
  return *this;
}

Sequence& Sequence::begin_gate() {
  impl_->begin_gate();
  return *this;
}

Sequence& Sequence::close_gate_when_all(const Tensor& flags) {
  impl_->close_gate_when_all(flags);
  return *this;
}

Sequence& Sequence::end_gate() {
  auto& s = *impl_;
  if (s.gate != SequenceImpl::Gate::open) {
    throw Error(ErrorCode::state, fmt::format("{}: end_gate() without begin_gate()", s.label()));
  }
  s.gate = SequenceImpl::Gate::ended;
  download(s.gate_table);  // for open_gate_checks()
  return *this;
}

std::uint32_t Sequence::open_gate_checks() const {
  auto& s = *impl_;
  if (s.gate != SequenceImpl::Gate::ended) {
    throw Error(ErrorCode::state, fmt::format("{}: open_gate_checks() needs a begin_gate() .. end_gate() region", s.label()));
  }
  return read<std::uint32_t>(s.gate_table).back();
}

bool Sequence::gate_open() const { return impl_->gate == SequenceImpl::Gate::open; }
bool Sequence::has_gate() const { return impl_->gate != SequenceImpl::Gate::none; }

Tensor detail::SequenceAccess::gate_table(Sequence& seq) {
  auto& s = *seq.impl_;
  if (s.gate != SequenceImpl::Gate::open) {
    throw Error(ErrorCode::state, fmt::format("{}: the gate table outside begin_gate() .. end_gate()", s.label()));
  }
  return s.gate_table;
}

std::uint32_t detail::SequenceAccess::gate_words() { return static_cast<std::uint32_t>(3 * Sequence::max_gate_grids); }

Sequence& Sequence::begin_label(std::string name) {
  impl_->begin_label(std::move(name));
  return *this;
}

Sequence& Sequence::end_label() {
  impl_->end_label();
  return *this;
}

Sequence& Sequence::upload(const Tensor& dst, std::span<const std::byte> data) {
  auto& s = *impl_;
  s.check_tensor(dst, "upload destination");
  if (data.size() != dst.bytes()) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{}: upload of {} bytes into {} ({} bytes)", s.label(), data.size(),
                            detail::describe(dst), dst.bytes()));
  }
  if (data.empty()) return *this;
  s.require_recordable();
  vk::Buffer staging = s.ctx->allocator->create_buffer(data.size(), vk::MemoryUsage::upload,
                                                       "upload staging for " + detail::describe(dst));
  s.uploads.push_back(staging);
  std::memcpy(staging.mapped, data.data(), data.size());
  s.ctx->allocator->flush(staging, 0, data.size());
  const auto& buf = dst.storage().buffer;
  const SequenceImpl::Use use{buf.handle, false, true, detail::kTransfer, 0, VK_ACCESS_TRANSFER_WRITE_BIT};
  s.hazard_barrier({&use, 1});
  s.copy_command(staging.handle, buf.handle, data.size());
  s.keep(dst);
  return *this;
}

Sequence& Sequence::copy(const Tensor& src, const Tensor& dst) {
  auto& s = *impl_;
  s.check_tensor(src, "copy source");
  s.check_tensor(dst, "copy destination");
  if (src.bytes() != dst.bytes()) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{}: copy from {} ({} bytes) to {} ({} bytes): sizes differ", s.label(),
                            detail::describe(src), src.bytes(), detail::describe(dst), dst.bytes()));
  }
  if (src.bytes() == 0) return *this;
  if (src.storage_ptr() == dst.storage_ptr()) return *this;
  s.require_recordable();
  const SequenceImpl::Use uses[] = {
      {src.storage().buffer.handle, true, false, detail::kTransfer, VK_ACCESS_TRANSFER_READ_BIT, 0},
      {dst.storage().buffer.handle, false, true, detail::kTransfer, 0, VK_ACCESS_TRANSFER_WRITE_BIT}};
  s.hazard_barrier(uses);
  s.copy_command(src.storage().buffer.handle, dst.storage().buffer.handle, src.bytes());
  s.keep(src);
  s.keep(dst);
  return *this;
}

Sequence& Sequence::fill(const Tensor& dst, std::uint32_t word) {
  auto& s = *impl_;
  s.check_tensor(dst, "fill destination");
  if (dst.bytes() == 0) return *this;
  if (dst.bytes() % 4) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{}: fill of {}: size must be a multiple of 4 bytes", s.label(), detail::describe(dst)));
  }
  s.require_recordable();
  const VkBuffer buf = dst.storage().buffer.handle;
  const VkDeviceSize bytes = dst.bytes();
  const SequenceImpl::Use use{buf, false, true, detail::kTransfer, 0, VK_ACCESS_TRANSFER_WRITE_BIT};
  s.hazard_barrier({&use, 1});
  s.commands.push_back([&s, buf, bytes, word](VkCommandBuffer c) { s.fns().vkCmdFillBuffer(c, buf, 0, bytes, word); });
  s.keep(dst);
  ++s.stats.copies;
  return *this;
}

Sequence& Sequence::download(const Tensor& src) {
  auto& s = *impl_;
  s.check_tensor(src, "download source");
  s.require_recordable();
  const auto* key = &src.storage();
  const auto& buf = src.storage().buffer;
  VkPipelineStageFlags host_src = 0;
  VkAccessFlags host_src_access = 0;
  if (buf.mapped) {
    // Unified memory: the host reads the tensor itself once its writers are done.
    if (auto it = s.tracks.find(buf.handle); it != s.tracks.end() && it->second.write_stage) {
      host_src = it->second.write_stage;
      host_src_access = it->second.write_access;
    }
  } else {
    auto [it, fresh] = s.readbacks.try_emplace(key);
    if (fresh) {
      it->second = s.ctx->allocator->create_buffer(src.bytes(), vk::MemoryUsage::readback,
                                                   "readback staging for " + detail::describe(src));
    }
    const SequenceImpl::Use uses[] = {
        {buf.handle, true, false, detail::kTransfer, VK_ACCESS_TRANSFER_READ_BIT, 0},
        {it->second.handle, false, true, detail::kTransfer, 0, VK_ACCESS_TRANSFER_WRITE_BIT}};
    s.hazard_barrier(uses);
    if (src.bytes()) s.copy_command(buf.handle, it->second.handle, src.bytes());
    host_src = detail::kTransfer;
    host_src_access = VK_ACCESS_TRANSFER_WRITE_BIT;
  }
  if (host_src) {
    s.commands.push_back([&s, host_src, host_src_access](VkCommandBuffer c) {
      VkMemoryBarrier mb{VK_STRUCTURE_TYPE_MEMORY_BARRIER};
      mb.srcAccessMask = host_src_access;
      mb.dstAccessMask = VK_ACCESS_HOST_READ_BIT;
      s.fns().vkCmdPipelineBarrier(c, host_src, VK_PIPELINE_STAGE_HOST_BIT, 0, 1, &mb, 0, nullptr, 0, nullptr);
    });
    ++s.stats.barriers;
  }
  s.downloaded[key] = true;
  s.keep(src);
  return *this;
}

void Sequence::submit(const SubmitSync& sync) {
  auto& s = *impl_;
  if (s.in_flight()) {
    throw Error(ErrorCode::state, fmt::format("{}: submitted again while still in flight", s.label()));
  }
  if (sync.wait.size() != sync.wait_stages.size()) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{}: {} wait semaphores but {} wait stages", s.label(), sync.wait.size(),
                            sync.wait_stages.size()));
  }
  const bool timeline = !sync.wait_values.empty() || !sync.signal_values.empty();
  if ((!sync.wait_values.empty() && sync.wait_values.size() != sync.wait.size()) ||
      (!sync.signal_values.empty() && sync.signal_values.size() != sync.signal.size())) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{}: {} wait values for {} wait semaphores and {} signal values for {} signal "
                            "semaphores (give one value per semaphore, or none when all are binary)",
                            s.label(), sync.wait_values.size(), sync.wait.size(), sync.signal_values.size(),
                            sync.signal.size()));
  }
  if (timeline) s.require_timeline("SubmitSync with semaphore values");
  s.finish_recording();
  s.prepare_own_command_buffer();
  vk::check(s.fns().vkResetFences(s.device(), 1, &s.fence), "vkResetFences", s.ctx->name());
  VkTimelineSemaphoreSubmitInfo ti{VK_STRUCTURE_TYPE_TIMELINE_SEMAPHORE_SUBMIT_INFO};
  ti.waitSemaphoreValueCount = static_cast<std::uint32_t>(sync.wait_values.size());
  ti.pWaitSemaphoreValues = sync.wait_values.data();
  ti.signalSemaphoreValueCount = static_cast<std::uint32_t>(sync.signal_values.size());
  ti.pSignalSemaphoreValues = sync.signal_values.data();
  VkSubmitInfo si{VK_STRUCTURE_TYPE_SUBMIT_INFO};
  si.pNext = timeline ? &ti : nullptr;
  si.waitSemaphoreCount = static_cast<std::uint32_t>(sync.wait.size());
  si.pWaitSemaphores = sync.wait.data();
  si.pWaitDstStageMask = sync.wait_stages.data();
  si.commandBufferCount = 1;
  si.pCommandBuffers = &s.cb;
  si.signalSemaphoreCount = static_cast<std::uint32_t>(sync.signal.size());
  si.pSignalSemaphores = sync.signal.data();
  s.ctx->submit(si, s.fence);
  s.run = SequenceImpl::Run::own;
  s.completed = false;
  ++s.stats.submissions;
}

void Sequence::record_into(VkCommandBuffer cb, const TimelinePoint& done_when) {
  auto& s = *impl_;
  if (cb == VK_NULL_HANDLE) {
    throw Error(ErrorCode::invalid_argument, fmt::format("{}: record_into() needs a command buffer", s.label()));
  }
  if (s.run == SequenceImpl::Run::own && s.in_flight()) {
    throw Error(ErrorCode::state,
                fmt::format("{}: record_into() while vkrnn's own submission of it is in flight (wait() first)",
                            s.label()));
  }
  if (done_when.semaphore != VK_NULL_HANDLE) s.require_timeline("record_into() with a TimelinePoint");
  s.finish_recording();
  s.ctx->flush_uploads();  // batched uploads go first, on vkrnn's queue
  s.emit(cb, /*app_buffer=*/true);
  s.run = SequenceImpl::Run::external;
  s.completed = false;
  s.external_point = done_when;
  ++s.stats.recordings;
}

void Sequence::resubmitted(const TimelinePoint& done_when) {
  auto& s = *impl_;
  if (s.stats.recordings == 0) {
    throw Error(ErrorCode::state, fmt::format("{}: resubmitted() without a record_into() first", s.label()));
  }
  if (done_when.semaphore != VK_NULL_HANDLE) s.require_timeline("resubmitted() with a TimelinePoint");
  s.run = SequenceImpl::Run::external;
  s.completed = false;
  s.external_point = done_when;
}

void Sequence::mark_complete() {
  auto& s = *impl_;
  if (s.run != SequenceImpl::Run::external) {
    throw Error(ErrorCode::state,
                fmt::format("{}: mark_complete() is for work recorded into an app command buffer "
                            "(record_into()); vkrnn's own submissions complete by their fence",
                            s.label()));
  }
  s.completed = true;
}

bool Sequence::done() const { return impl_->poll(); }

bool Sequence::wait(std::uint64_t timeout_ns) { return impl_->wait(timeout_ns); }

void Sequence::reset() {
  auto& s = *impl_;
  if (s.run != SequenceImpl::Run::none && !s.completed) s.wait(UINT64_MAX);
  s.fns().vkResetCommandBuffer(s.cb, 0);
  s.commands.clear();
  for (auto p : s.descriptor_pools) s.fns().vkResetDescriptorPool(s.device(), p, 0);
  if (!s.descriptor_pools.empty()) {
    // Keep one pool; its sets were all returned.
    for (std::size_t i = 1; i < s.descriptor_pools.size(); ++i) {
      s.fns().vkDestroyDescriptorPool(s.device(), s.descriptor_pools[i], s.ctx->host_alloc());
    }
    s.descriptor_pools.resize(1);
    s.sets_in_last_pool = 0;
  }
  s.release_resources();
  s.tracks.clear();
  s.timed_kernels.clear();
  s.gate = SequenceImpl::Gate::none;
  s.gate_table = {};
  s.gate_grids.clear();
  s.stats = {};
  s.state = SequenceImpl::State::empty;
  s.run = SequenceImpl::Run::none;
  s.completed = true;
  s.own_cb_ready = false;
  s.external_point = {};
  s.open_labels = 0;
}

void Sequence::read_bytes(const Tensor& src, std::span<std::byte> dst) const {
  auto& s = *impl_;
  s.check_tensor(src, "read source");
  const auto* key = &src.storage();
  if (!s.downloaded.count(key)) {
    throw Error(ErrorCode::state,
                fmt::format("{}: read of {} that was not download()ed in this sequence", s.label(),
                            detail::describe(src)));
  }
  if (s.run == SequenceImpl::Run::none || !s.poll()) {
    throw Error(ErrorCode::state,
                fmt::format("{}: read of {} before the sequence finished (submit() and wait() first)",
                            s.label(), detail::describe(src)));
  }
  if (dst.size() != src.bytes()) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{}: read of {} ({} bytes) into {} bytes", s.label(), detail::describe(src),
                            src.bytes(), dst.size()));
  }
  if (dst.empty()) return;
  const auto& buf = src.storage().buffer;
  const vk::Buffer& from = buf.mapped ? buf : s.readbacks.at(key);
  s.ctx->allocator->invalidate(from, 0, dst.size());
  std::memcpy(dst.data(), from.mapped, dst.size());
}

const SequenceStats& Sequence::stats() const { return impl_->stats; }

std::vector<DispatchTiming> Sequence::timings() const {
  auto& s = *impl_;
  std::vector<DispatchTiming> out;
  if (!s.queries || s.timed_kernels.empty()) return out;
  if (s.run == SequenceImpl::Run::none || !s.poll()) {
    throw Error(ErrorCode::state, fmt::format("{}: timings() before the sequence finished", s.label()));
  }
  const auto n = static_cast<std::uint32_t>(2 * s.timed_kernels.size());
  std::vector<std::uint64_t> stamps(n);
  vk::check(s.fns().vkGetQueryPoolResults(s.device(), s.queries, 0, n, n * sizeof(std::uint64_t),
                                          stamps.data(), sizeof(std::uint64_t),
                                          VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WAIT_BIT),
            "vkGetQueryPoolResults", s.ctx->name());
  const auto bits = s.ctx->info().timestamp_valid_bits;
  const std::uint64_t mask = bits >= 64 ? ~0ull : ((1ull << bits) - 1);
  const double period = s.ctx->info().timestamp_period_ns;
  for (std::size_t i = 0; i < s.timed_kernels.size(); ++i) {
    // Masked subtraction handles a counter that wrapped within its valid bits.
    const std::uint64_t ticks = (stamps[2 * i + 1] - stamps[2 * i]) & mask;
    out.push_back({s.timed_kernels[i], static_cast<double>(ticks) * period});
  }
  return out;
}

VkCommandBuffer Sequence::command_buffer() const { return impl_->cb; }

}  // namespace vkrnn
