// vkrnn-embed: how a game shares its own Vulkan device with vkrnn.
//
// The app (a stand-in for a game's renderer) creates its instance with the validation layer
// (synchronization validation on) and its own debug messenger, picks a device, creates a device
// and queue -- with timeline semaphores where the device has them -- and hands those handles to
// vkrnn with vkrnn::Context::adopt(). It decodes a date with the dates model one decoder step per
// frame, recorded INTO THE GAME'S OWN FRAME COMMAND BUFFER (Sequence::record_into), between the
// game's own commands, and submitted by the game once per frame:
//
//   frame_cb = [ game: fill its scene | vkrnn: decoder step | game: copy scene -> readback ]
//   vkQueueSubmit(frame_cb) --signals--> timeline "frames" = frame number
//
// vkrnn learns that its step finished from the timeline value (Sequence::done() polls it); the
// frame loop never blocks on vkrnn. Without timeline semaphores (a Vulkan 1.1 device) the same
// path runs with the frame fence and Sequence::mark_complete(). Then the whole decode
// (Seq2Seq::record_greedy), and a beam search (record_beam, the 3 best answers), each in one
// frame: every step recorded, the GPU skipping the steps after the end by itself.
//
// Startup shows the warm start: the model is loaded with its weights in one submission that
// the app does not wait for (UploadBatch: a loading screen polls the ticket), then warm_up()
// builds every pipeline the decodes will need, so the first decode runs at the speed of a
// warm one. The same first decode on a second, cold context (no warm-up) is timed for
// comparison. --startup-timings also compares model load times with batched and one-by-one
// weight uploads on the staging path (discrete GPUs).
//
// Then vkrnn goes away -- without waiting for the device: only for its own work -- and the app
// checks its device still works and destroys its own objects. At vkDestroyDevice the validation
// layer reports any object still alive, so a leak by vkrnn shows up as a message.
//
// Exit status: 0 all good; 1 an error; 3 the validation layer said something (or the layer
// is missing while VKRNN_VALIDATION=1 asks for it); 4 a wrong result.
//
// Only the public vkrnn API is used; the app calls Vulkan through the loader it links
// (Vulkan::Vulkan), as a game would.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <iomanip>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <vulkan/vulkan.h>

#include "vkrnn/seq2seq.hpp"
#include "vkrnn/vkrnn.hpp"

#ifndef VKRNN_DATES_MODEL_DIR
#define VKRNN_DATES_MODEL_DIR "samples/dates/model"
#endif

namespace {

std::size_t g_validation_messages = 0;

VKAPI_ATTR VkBool32 VKAPI_CALL on_validation_message(VkDebugUtilsMessageSeverityFlagBitsEXT severity,
                                                     VkDebugUtilsMessageTypeFlagsEXT,
                                                     const VkDebugUtilsMessengerCallbackDataEXT* data, void*) {
  if (severity & (VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT | VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT)) {
    ++g_validation_messages;
    std::cerr << "app validation: " << data->pMessage << "\n";
  }
  return VK_FALSE;
}

void check(VkResult r, const char* what) {
  if (r != VK_SUCCESS) throw std::runtime_error(std::string(what) + " failed: VkResult " + std::to_string(r));
}

bool has_validation_layer() {
  std::uint32_t n = 0;
  vkEnumerateInstanceLayerProperties(&n, nullptr);
  std::vector<VkLayerProperties> layers(n);
  vkEnumerateInstanceLayerProperties(&n, layers.data());
  for (const auto& l : layers) {
    if (std::strcmp(l.layerName, "VK_LAYER_KHRONOS_validation") == 0) return true;
  }
  return false;
}

// A buffer of the app's own, with its own memory.
struct AppBuffer {
  VkBuffer buffer = VK_NULL_HANDLE;
  VkDeviceMemory memory = VK_NULL_HANDLE;
  void* mapped = nullptr;
};

AppBuffer create_buffer(VkPhysicalDevice phys, VkDevice device, VkDeviceSize size, VkBufferUsageFlags usage,
                        VkMemoryPropertyFlags wanted) {
  AppBuffer b;
  VkBufferCreateInfo bi{VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO};
  bi.size = size;
  bi.usage = usage;
  bi.sharingMode = VK_SHARING_MODE_EXCLUSIVE;
  check(vkCreateBuffer(device, &bi, nullptr, &b.buffer), "vkCreateBuffer");
  VkMemoryRequirements req;
  vkGetBufferMemoryRequirements(device, b.buffer, &req);
  VkPhysicalDeviceMemoryProperties props;
  vkGetPhysicalDeviceMemoryProperties(phys, &props);
  std::uint32_t type = UINT32_MAX;
  for (std::uint32_t i = 0; i < props.memoryTypeCount && type == UINT32_MAX; ++i) {
    if ((req.memoryTypeBits & (1u << i)) && (props.memoryTypes[i].propertyFlags & wanted) == wanted) type = i;
  }
  if (type == UINT32_MAX) throw std::runtime_error("no memory type for the app's buffer");
  VkMemoryAllocateInfo ai{VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO};
  ai.allocationSize = req.size;
  ai.memoryTypeIndex = type;
  check(vkAllocateMemory(device, &ai, nullptr, &b.memory), "vkAllocateMemory");
  check(vkBindBufferMemory(device, b.buffer, b.memory, 0), "vkBindBufferMemory");
  if (wanted & VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT) check(vkMapMemory(device, b.memory, 0, size, 0, &b.mapped), "vkMapMemory");
  return b;
}

void destroy_buffer(VkDevice device, AppBuffer& b) {
  vkDestroyBuffer(device, b.buffer, nullptr);
  vkFreeMemory(device, b.memory, nullptr);  // unmaps too
  b = {};
}

void begin(VkCommandBuffer cb) {
  check(vkResetCommandBuffer(cb, 0), "vkResetCommandBuffer");
  VkCommandBufferBeginInfo bi{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
  bi.flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT;
  check(vkBeginCommandBuffer(cb, &bi), "vkBeginCommandBuffer");
}

// One submission of the game's: `cb`, then (timeline) `signal` reaches `value`, and/or `fence`.
void submit(VkQueue queue, VkCommandBuffer cb, VkSemaphore signal, std::uint64_t value, VkFence fence) {
  VkTimelineSemaphoreSubmitInfo ti{VK_STRUCTURE_TYPE_TIMELINE_SEMAPHORE_SUBMIT_INFO};
  ti.signalSemaphoreValueCount = 1;
  ti.pSignalSemaphoreValues = &value;
  VkSubmitInfo si{VK_STRUCTURE_TYPE_SUBMIT_INFO};
  si.pNext = signal ? &ti : nullptr;
  si.commandBufferCount = 1;
  si.pCommandBuffers = &cb;
  si.signalSemaphoreCount = signal ? 1 : 0;
  si.pSignalSemaphores = &signal;
  check(vkQueueSubmit(queue, 1, &si, fence), "vkQueueSubmit");
}

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

template <class F>
double time_ms(F&& f) {
  const auto t0 = std::chrono::steady_clock::now();
  f();
  return ms_since(t0);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Model load times on the staging path (what discrete GPUs use), alternating batched loads (one
// submission for all weights) and one-by-one uploads (a submission and a wait per weight, as
// before UploadBatch): median of `rounds` each, in the same run.
void compare_load_times(const vkrnn::ExternalDevice& ext, const std::string& model_dir, int rounds) {
  vkrnn::Context batched = vkrnn::Context::adopt(ext, {.force_staging = true});
  vkrnn::Context one_by_one = vkrnn::Context::adopt(ext, {.force_staging = true, .upload_batch_bytes = 0});
  vkrnn::Seq2Seq::load(batched, model_dir);  // pipelines and files warm for both
  vkrnn::Seq2Seq::load(one_by_one, model_dir);
  std::vector<double> a, b;
  for (int r = 0; r < rounds; ++r) {
    a.push_back(time_ms([&] { vkrnn::Seq2Seq::load(batched, model_dir); }));
    b.push_back(time_ms([&] { vkrnn::Seq2Seq::load(one_by_one, model_dir); }));
  }
  std::cout << std::fixed << std::setprecision(1) << "load (staging path, median of " << rounds
            << "): batched uploads " << median(a) << " ms, one by one " << median(b) << " ms ("
            << std::setprecision(2) << median(b) / median(a) << "x)\n";
}

// Context::prebuild with the kernel specs of an earlier context, against creating the same
// pipelines without running them: the first decode after each, on fresh contexts.
void compare_prebuild(const vkrnn::ExternalDevice& ext, const std::string& model_dir, const std::string& date) {
  std::vector<vkrnn::KernelSpec> specs;
  {
    vkrnn::Context first = vkrnn::Context::adopt(ext);
    vkrnn::Seq2Seq::load(first, model_dir).translate({date});
    specs = first.kernel_specs();
  }
  auto first_decode = [&](const std::function<void(vkrnn::Context&)>& before, double& before_ms) {
    vkrnn::Context ctx = vkrnn::Context::adopt(ext);
    const auto model = vkrnn::Seq2Seq::load(ctx, model_dir);
    before_ms = time_ms([&] { before(ctx); });
    return time_ms([&] { model.translate({date}); });
  };
  double create_ms = 0, prebuild_ms = 0;
  const double after_create = first_decode([&](vkrnn::Context& c) { for (const auto& s : specs) c.kernel(s); }, create_ms);
  const double after_prebuild = first_decode([&](vkrnn::Context& c) { c.prebuild(specs).wait(); }, prebuild_ms);
  std::cout << std::fixed << std::setprecision(1) << "prebuild of " << specs.size()
            << " kernel specs: first decode after creating the pipelines only " << after_create << " ms (creating: "
            << create_ms << " ms); after Context::prebuild " << after_prebuild << " ms (prebuild: " << prebuild_ms
            << " ms)\n";
}

int run(int argc, char** argv) {
  std::string model_dir = VKRNN_DATES_MODEL_DIR;
  std::string date = "Saturday 21 November 2026", expected = "2026-11-21";
  bool startup_timings = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--model" && i + 1 < argc) {
      model_dir = argv[++i];
    } else if (a == "--date" && i + 2 < argc) {
      date = argv[++i];
      expected = argv[++i];
    } else if (a == "--startup-timings") {
      startup_timings = true;
    } else {
      std::cout << "usage: vkrnn-embed [--model DIR] [--date TEXT EXPECTED] [--startup-timings]\n"
                   "Shares the app's own Vulkan device and queue with vkrnn (see the source).\n";
      return a == "-h" || a == "--help" ? 0 : 2;
    }
  }

  // ---- the app's instance, with validation (synchronization validation too) --------------
  const char* env = std::getenv("VKRNN_VALIDATION");
  const bool validation_required = env && std::string(env) == "1";
  const bool validation = has_validation_layer();
  if (!validation && validation_required) {
    std::cerr << "vkrnn-embed: VKRNN_VALIDATION=1 but VK_LAYER_KHRONOS_validation is not installed "
                 "(Debian: vulkan-validationlayers)\n";
    return 3;
  }
  std::uint32_t loader_version = VK_API_VERSION_1_1;
  vkEnumerateInstanceVersion(&loader_version);
  VkApplicationInfo app{VK_STRUCTURE_TYPE_APPLICATION_INFO};
  app.pApplicationName = "vkrnn-embed";
  app.apiVersion = loader_version >= VK_API_VERSION_1_2 ? VK_API_VERSION_1_2 : VK_API_VERSION_1_1;
  const char* layer = "VK_LAYER_KHRONOS_validation";
  const char* extension = VK_EXT_DEBUG_UTILS_EXTENSION_NAME;
  VkDebugUtilsMessengerCreateInfoEXT dbg{VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT};
  dbg.messageSeverity = VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT | VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT;
  dbg.messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT | VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT |
                    VK_DEBUG_UTILS_MESSAGE_TYPE_PERFORMANCE_BIT_EXT;
  dbg.pfnUserCallback = on_validation_message;
  const VkValidationFeatureEnableEXT sync_validation = VK_VALIDATION_FEATURE_ENABLE_SYNCHRONIZATION_VALIDATION_EXT;
  VkValidationFeaturesEXT features{VK_STRUCTURE_TYPE_VALIDATION_FEATURES_EXT};
  features.pNext = &dbg;  // also catches messages from vkCreateInstance / vkDestroyInstance
  features.enabledValidationFeatureCount = 1;
  features.pEnabledValidationFeatures = &sync_validation;
  VkInstanceCreateInfo ici{VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO};
  ici.pNext = validation ? static_cast<const void*>(&features) : nullptr;
  ici.pApplicationInfo = &app;
  ici.enabledLayerCount = validation ? 1 : 0;
  ici.ppEnabledLayerNames = &layer;
  ici.enabledExtensionCount = validation ? 1 : 0;
  ici.ppEnabledExtensionNames = &extension;
  VkInstance instance = VK_NULL_HANDLE;
  check(vkCreateInstance(&ici, nullptr, &instance), "vkCreateInstance");
  VkDebugUtilsMessengerEXT messenger = VK_NULL_HANDLE;
  if (validation) {
    auto create = reinterpret_cast<PFN_vkCreateDebugUtilsMessengerEXT>(
        vkGetInstanceProcAddr(instance, "vkCreateDebugUtilsMessengerEXT"));
    check(create(instance, &dbg, nullptr, &messenger), "vkCreateDebugUtilsMessengerEXT");
  }

  // ---- the app's device: a discrete GPU if there is one, one queue that can compute --------
  std::uint32_t n = 0;
  vkEnumeratePhysicalDevices(instance, &n, nullptr);
  if (n == 0) throw std::runtime_error("no Vulkan device (install mesa-vulkan-drivers for lavapipe)");
  std::vector<VkPhysicalDevice> physicals(n);
  vkEnumeratePhysicalDevices(instance, &n, physicals.data());
  VkPhysicalDevice phys = physicals[0];
  for (auto p : physicals) {
    VkPhysicalDeviceProperties props;
    vkGetPhysicalDeviceProperties(p, &props);
    if (props.deviceType == VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU) {
      phys = p;
      break;
    }
  }
  VkPhysicalDeviceProperties props;
  vkGetPhysicalDeviceProperties(phys, &props);
  std::uint32_t nf = 0;
  vkGetPhysicalDeviceQueueFamilyProperties(phys, &nf, nullptr);
  std::vector<VkQueueFamilyProperties> families(nf);
  vkGetPhysicalDeviceQueueFamilyProperties(phys, &nf, families.data());
  std::uint32_t family = UINT32_MAX;
  for (std::uint32_t i = 0; i < nf && family == UINT32_MAX; ++i) {
    if (families[i].queueFlags & VK_QUEUE_COMPUTE_BIT) family = i;
  }
  if (family == UINT32_MAX) throw std::runtime_error(std::string(props.deviceName) + " has no compute queue");
  // The app enables 16-bit storage and timeline semaphores when the device has them, and tells
  // vkrnn so.
  const bool vulkan12 = app.apiVersion >= VK_API_VERSION_1_2 && props.apiVersion >= VK_API_VERSION_1_2;
  VkPhysicalDeviceTimelineSemaphoreFeatures timeline_support{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_TIMELINE_SEMAPHORE_FEATURES};
  VkPhysicalDevice16BitStorageFeatures storage16{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_16BIT_STORAGE_FEATURES};
  storage16.pNext = vulkan12 ? &timeline_support : nullptr;
  VkPhysicalDeviceFeatures2 supported{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2};
  supported.pNext = &storage16;
  vkGetPhysicalDeviceFeatures2(phys, &supported);
  VkPhysicalDeviceTimelineSemaphoreFeatures enable_timeline{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_TIMELINE_SEMAPHORE_FEATURES};
  enable_timeline.timelineSemaphore = timeline_support.timelineSemaphore;
  VkPhysicalDevice16BitStorageFeatures enable16{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_16BIT_STORAGE_FEATURES};
  enable16.storageBuffer16BitAccess = storage16.storageBuffer16BitAccess;
  enable16.pNext = vulkan12 ? &enable_timeline : nullptr;
  const bool timeline = vulkan12 && enable_timeline.timelineSemaphore == VK_TRUE;
  const float priority = 1.0f;
  VkDeviceQueueCreateInfo qci{VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO};
  qci.queueFamilyIndex = family;
  qci.queueCount = 1;
  qci.pQueuePriorities = &priority;
  VkDeviceCreateInfo dci{VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO};
  dci.pNext = &enable16;
  dci.queueCreateInfoCount = 1;
  dci.pQueueCreateInfos = &qci;
  VkDevice device = VK_NULL_HANDLE;
  check(vkCreateDevice(phys, &dci, nullptr, &device), "vkCreateDevice");
  VkQueue queue = VK_NULL_HANDLE;
  vkGetDeviceQueue(device, family, 0, &queue);
  std::cout << "app: own instance, device and queue on " << props.deviceName << "; validation layer "
            << (validation ? "on (with synchronization validation)" : "not installed: off") << "; "
            << (timeline ? "timeline semaphores" : "no timeline semaphores (binary + fence)") << "\n";

  // ---- the app's own GPU objects ------------------------------------------------------------
  constexpr VkDeviceSize kBytes = 1 << 16;
  AppBuffer scene = create_buffer(phys, device, kBytes, VK_BUFFER_USAGE_TRANSFER_DST_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT,
                                  VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT);
  AppBuffer readback = create_buffer(phys, device, kBytes, VK_BUFFER_USAGE_TRANSFER_DST_BIT,
                                     VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT);
  VkCommandPoolCreateInfo pci{VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO};
  pci.flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT;
  pci.queueFamilyIndex = family;
  VkCommandPool pool = VK_NULL_HANDLE;
  check(vkCreateCommandPool(device, &pci, nullptr, &pool), "vkCreateCommandPool");
  VkCommandBuffer frame_cb = VK_NULL_HANDLE;
  VkCommandBufferAllocateInfo cai{VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO};
  cai.commandPool = pool;
  cai.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
  cai.commandBufferCount = 1;
  check(vkAllocateCommandBuffers(device, &cai, &frame_cb), "vkAllocateCommandBuffers");
  // The frame counter: a timeline semaphore the frame's submission signals with its number.
  VkSemaphoreTypeCreateInfo sti{VK_STRUCTURE_TYPE_SEMAPHORE_TYPE_CREATE_INFO};
  sti.semaphoreType = VK_SEMAPHORE_TYPE_TIMELINE;
  VkSemaphoreCreateInfo sci{VK_STRUCTURE_TYPE_SEMAPHORE_CREATE_INFO};
  sci.pNext = &sti;
  VkSemaphore frames = VK_NULL_HANDLE;
  if (timeline) check(vkCreateSemaphore(device, &sci, nullptr, &frames), "vkCreateSemaphore");
  VkFenceCreateInfo fci{VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
  VkFence frame_fence = VK_NULL_HANDLE;
  check(vkCreateFence(device, &fci, nullptr, &frame_fence), "vkCreateFence");

  // The app's frame work around vkrnn's: fill its scene buffer with the frame number, and after
  // vkrnn's step copy the scene where the host can read it ("present"). The app's own barrier
  // orders its own commands: vkrnn's barriers cover vkrnn's work only.
  auto record_scene = [&](VkCommandBuffer cb, std::uint32_t frame) { vkCmdFillBuffer(cb, scene.buffer, 0, kBytes, frame); };
  auto record_present = [&](VkCommandBuffer cb) {
    VkMemoryBarrier filled{VK_STRUCTURE_TYPE_MEMORY_BARRIER};
    filled.srcAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT;
    filled.dstAccessMask = VK_ACCESS_TRANSFER_READ_BIT;
    vkCmdPipelineBarrier(cb, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_PIPELINE_STAGE_TRANSFER_BIT, 0, 1, &filled, 0, nullptr,
                         0, nullptr);
    const VkBufferCopy region{0, 0, kBytes};
    vkCmdCopyBuffer(cb, scene.buffer, readback.buffer, 1, &region);
    VkMemoryBarrier to_host{VK_STRUCTURE_TYPE_MEMORY_BARRIER};
    to_host.srcAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT;
    to_host.dstAccessMask = VK_ACCESS_HOST_READ_BIT;
    vkCmdPipelineBarrier(cb, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_PIPELINE_STAGE_HOST_BIT, 0, 1, &to_host, 0, nullptr,
                         0, nullptr);
  };
  auto scene_is = [&](std::uint32_t value) {
    const auto* words = static_cast<const std::uint32_t*>(readback.mapped);
    for (VkDeviceSize i = 0; i < kBytes / 4; ++i) {
      if (words[i] != value) return false;
    }
    return true;
  };

  int status = 0;
  {
    // ---- vkrnn on the app's handles -------------------------------------------------------
    vkrnn::ExternalDevice ext;
    ext.instance = instance;
    ext.physical_device = phys;
    ext.device = device;
    ext.queue_family = family;
    ext.queue_index = 0;
    ext.api_version = app.apiVersion;
    ext.features.storage_buffer_16bit = enable16.storageBuffer16BitAccess == VK_TRUE;
    ext.features.timeline_semaphore = timeline;
    ext.features.debug_utils = validation;  // names and labels in captures and messages
    if (startup_timings) {
      compare_load_times(ext, model_dir, 7);
      compare_prebuild(ext, model_dir, date);
    }

    // The same first decode on a cold context: pipelines are built inside it.
    double cold_ms = 0;
    {
      vkrnn::Context cold = vkrnn::Context::adopt(ext);
      const auto model = vkrnn::Seq2Seq::load(cold, model_dir);
      cold_ms = time_ms([&] { model.greedy({model.encode_text(date)}); });
    }

    vkrnn::Context ctx = vkrnn::Context::adopt(ext);
    // Loading screen: the weights go up in one submission the app does not wait for.
    const auto t_load = std::chrono::steady_clock::now();
    vkrnn::UploadBatch uploads(ctx);
    const auto model = vkrnn::Seq2Seq::load(ctx, model_dir);
    const vkrnn::UploadTicket weights = uploads.submit();
    const double load_ms = ms_since(t_load);
    std::size_t loading_frames = 0;
    while (!weights.done()) {
      ++loading_frames;  // a game draws its loading screen here
      std::this_thread::yield();
    }
    const auto source = model.encode_text(date);
    const double warm_up_ms =
        time_ms([&] { model.warm_up({.batch_sizes = {1}, .lengths = {source.size()}}).wait(); });
    const double first_ms = time_ms([&] { model.greedy({source}); });
    const double first_beam_ms = time_ms([&] { model.beam({source}); });
    std::vector<double> warm, warm_beam;
    for (int i = 0; i < 3; ++i) {
      warm.push_back(time_ms([&] { model.greedy({source}); }));
      warm_beam.push_back(time_ms([&] { model.beam({source}); }));
    }
    std::cout << std::fixed << std::setprecision(1) << "startup: model load " << load_ms << " ms (weights: "
              << (ctx.device().unified_memory ? "written into host-mapped device memory, nothing to submit"
                                              : "one submission, not waited for")
              << "; done after " << loading_frames << " loading-screen polls); warm_up() " << warm_up_ms
              << " ms (greedy + beam, B = 1, S = " << source.size() << ")\n";
    std::cout << "first decode: cold context " << cold_ms << " ms; after warm_up() " << first_ms << " ms = "
              << std::setprecision(2) << first_ms / median(warm) << "x a warm decode (" << std::setprecision(1)
              << median(warm) << " ms); first beam search after warm_up() " << first_beam_ms << " ms = "
              << std::setprecision(2) << first_beam_ms / median(warm_beam) << "x a warm one ("
              << std::setprecision(1) << median(warm_beam) << " ms)\n";

    // A frame with vkrnn's recorded work inside the game's frame command buffer, submitted, then
    // the game keeps rendering while it runs: it only asks whether it is done.
    std::uint32_t frame = 0;
    std::size_t polls = 0;
    bool scene_ok = true;
    auto run_frame = [&](vkrnn::Sequence& work) {
      ++frame;
      begin(frame_cb);
      record_scene(frame_cb, frame);
      work.record_into(frame_cb, timeline ? vkrnn::TimelinePoint{frames, frame} : vkrnn::TimelinePoint{});
      record_present(frame_cb);
      check(vkEndCommandBuffer(frame_cb), "vkEndCommandBuffer");
      submit(queue, frame_cb, frames, frame, timeline ? VK_NULL_HANDLE : frame_fence);
      if (timeline) {
        while (!work.done()) {
          ++polls;
          std::this_thread::yield();
        }
      } else {
        while (vkGetFenceStatus(device, frame_fence) == VK_NOT_READY) {
          ++polls;
          std::this_thread::yield();
        }
        work.mark_complete();  // the frame fence said so: vkrnn cannot poll the app's fence
      }
    };
    // After vkrnn's results are read: the host's own wait on the frame (already reached), what
    // makes the app's readback visible.
    auto end_frame = [&] {
      if (timeline) {
        VkSemaphoreWaitInfo wi{VK_STRUCTURE_TYPE_SEMAPHORE_WAIT_INFO};
        const std::uint64_t value = frame;
        wi.semaphoreCount = 1;
        wi.pSemaphores = &frames;
        wi.pValues = &value;
        check(vkWaitSemaphores(device, &wi, UINT64_MAX), "vkWaitSemaphores");
      } else {
        check(vkWaitForFences(device, 1, &frame_fence, VK_TRUE, UINT64_MAX), "vkWaitForFences");
        check(vkResetFences(device, 1, &frame_fence), "vkResetFences");
      }
      scene_ok = scene_ok && scene_is(frame);
    };

    // One decoder step per frame, recorded into the game's frame command buffer: the encoder in
    // frame 1, then one step each frame, between the game's own commands.
    const auto encoded = model.prepare({source});
    auto state = model.start(encoded);
    auto seq = ctx.sequence({.label = "vkrnn-embed frame"});
    std::vector<std::int32_t> tokens;
    bool finished = false;
    while (!finished && state.steps_taken() < model.config().max_decode_length) {
      seq.reset();  // the previous frame's step finished (polled)
      if (frame == 0) model.record_encode(seq, encoded);
      model.record_step(seq, state);
      run_frame(seq);
      const vkrnn::StepResult step = model.read_step(seq, state);
      tokens.push_back(step.tokens[0]);
      finished = step.all_finished;
      end_frame();
    }
    const std::uint32_t step_frames = frame;
    const std::size_t step_polls = polls;

    // Or the whole decode in one frame (record_greedy): every step recorded, the GPU skips those
    // after the EOS by itself.
    const auto encoded_whole = model.prepare({source});
    auto whole = ctx.sequence({.label = "vkrnn-embed whole decode"});
    model.record_encode(whole, encoded_whole);
    const auto decode = model.record_greedy(whole, encoded_whole);
    polls = 0;
    run_frame(whole);
    const vkrnn::DecodeResult whole_result = model.read_greedy(whole, decode);
    end_frame();
    const std::size_t whole_polls = polls;

    // Or the K best answers in one frame (record_beam): the whole beam search recorded the same
    // way; the GPU stops once the search is done.
    const auto encoded_beam = model.prepare({source});
    auto beam = ctx.sequence({.label = "vkrnn-embed beam search"});
    model.record_encode(beam, encoded_beam);
    vkrnn::DecodeStats beam_stats;
    const auto search = model.record_beam(beam, encoded_beam, {.beam_width = 3, .stats = &beam_stats});
    polls = 0;
    run_frame(beam);
    const auto hypotheses = model.read_beam(beam, search).at(0);
    end_frame();
    std::ostringstream beam_text;  // best first, with their log-probabilities
    for (const auto& h : hypotheses) {
      beam_text << (&h == &hypotheses.front() ? "" : ", ") << model.decode_text(h.tokens) << " (" << std::fixed
                << std::setprecision(2) << h.score << ")";
    }
    const std::string whole_text = model.decode_text(whole_result.row(0));
    const std::string text = model.decode_text(tokens);
    const std::string reference = model.translate({date})[0];
    std::cout << "vkrnn: adopted the app's device (owns_device = " << (ctx.owns_device() ? "true" : "false")
              << "); \"" << date << "\" -> " << text << " over " << step_frames
              << " frames, one decoder step per frame recorded into the game's frame command buffer ("
              << (timeline ? "timeline semaphore" : "frame fence") << "), done() polled " << step_polls << " times\n";
    std::cout << "vkrnn: the whole decode in one frame (record_greedy, " << whole_result.steps_run << " of "
              << model.config().max_decode_length << " recorded steps run): \"" << date << "\" -> " << whole_text
              << ", polled " << whole_polls << " times\n";
    std::cout << "vkrnn: a beam search in one frame (record_beam, K = 3, " << beam_stats.steps_run << " of "
              << model.config().max_decode_length << " recorded steps run): \"" << date << "\" -> " << beam_text.str()
              << ", polled " << polls << " times\n";
    const vkrnn::MemoryStats mem = ctx.memory_stats();
    std::cout << "vkrnn device memory: " << mem.device_memory_bytes / 1024 << " KiB in " << mem.device_memory_blocks
              << " block(s), " << mem.live_buffers << " buffers"
              << (mem.budget_known ? "" : " (no VK_EXT_memory_budget on this device)") << "\n";
    std::cout << "check: Seq2Seq::translate gives " << reference << ", expected " << expected
              << "; the app's own work was correct in every frame: " << (scene_ok ? "yes" : "NO") << "\n";
    const bool beam_ok = !hypotheses.empty() && model.decode_text(hypotheses[0].tokens) == expected;
    if (text != reference || text != expected || whole_text != expected || !beam_ok || !scene_ok) status = 4;
  }  // vkrnn's objects go here: the sequence, the model, the contexts -- never the app's

  // ---- the app carries on, then tears down what it created -------------------------------
  begin(frame_cb);
  record_scene(frame_cb, 0xC0FFEE);
  record_present(frame_cb);
  check(vkEndCommandBuffer(frame_cb), "vkEndCommandBuffer");
  submit(queue, frame_cb, VK_NULL_HANDLE, 0, frame_fence);
  check(vkWaitForFences(device, 1, &frame_fence, VK_TRUE, UINT64_MAX), "vkWaitForFences");
  const bool device_ok = scene_is(0xC0FFEE);
  std::cout << "app: after vkrnn was destroyed its device still works: " << (device_ok ? "yes" : "NO") << "\n";
  if (!device_ok) status = 4;
  vkDestroyFence(device, frame_fence, nullptr);
  if (frames) vkDestroySemaphore(device, frames, nullptr);
  vkDestroyCommandPool(device, pool, nullptr);
  destroy_buffer(device, scene);
  destroy_buffer(device, readback);
  vkDestroyDevice(device, nullptr);  // the layer reports every child object still alive here
  if (messenger) {
    auto destroy = reinterpret_cast<PFN_vkDestroyDebugUtilsMessengerEXT>(
        vkGetInstanceProcAddr(instance, "vkDestroyDebugUtilsMessengerEXT"));
    destroy(instance, messenger, nullptr);
  }
  vkDestroyInstance(instance, nullptr);
  std::cout << "validation messages: " << g_validation_messages << "\n";
  if (g_validation_messages != 0) return 3;
  return status;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const vkrnn::Error& e) {
    std::cerr << "vkrnn-embed: error (" << vkrnn::to_string(e.code()) << "): " << e.what() << "\n";
  } catch (const std::exception& e) {
    std::cerr << "vkrnn-embed: error: " << e.what() << "\n";
  }
  return 1;
}
