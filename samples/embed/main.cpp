// vkrnn-embed: how a game shares its own Vulkan device with vkrnn.
//
// The app (a stand-in for a game's renderer) creates its instance with the validation layer and
// its own debug messenger, picks a device, creates a device and queue, and each "frame" records
// and submits its own command buffers. It hands those handles to vkrnn with
// vkrnn::Context::adopt(), and decodes a date with the dates model one decoder step per frame,
// between its own submissions, chained by semaphores the app owns:
//
//   app frame work --frame_ready--> vkrnn step --inference_done--> app "present" work (+ fence)
//
// while the frame loop polls Sequence::done() instead of blocking. Then vkrnn goes away, the
// app checks its device still works and destroys its own objects. At vkDestroyDevice the
// validation layer reports any object still alive, so a leak by vkrnn shows up as a message.
//
// Exit status: 0 all good; 1 an error; 3 the validation layer said something (or the layer
// is missing while VKRNN_VALIDATION=1 asks for it); 4 a wrong result.
//
// Only the public vkrnn API is used; the app calls Vulkan through the loader it links
// (Vulkan::Vulkan), as a game would.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <iostream>
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

void submit(VkQueue queue, VkCommandBuffer cb, VkSemaphore wait, VkPipelineStageFlags wait_stage, VkSemaphore signal,
            VkFence fence) {
  VkSubmitInfo si{VK_STRUCTURE_TYPE_SUBMIT_INFO};
  si.waitSemaphoreCount = wait ? 1 : 0;
  si.pWaitSemaphores = &wait;
  si.pWaitDstStageMask = &wait_stage;
  si.commandBufferCount = 1;
  si.pCommandBuffers = &cb;
  si.signalSemaphoreCount = signal ? 1 : 0;
  si.pSignalSemaphores = &signal;
  check(vkQueueSubmit(queue, 1, &si, fence), "vkQueueSubmit");
}

int run(int argc, char** argv) {
  std::string model_dir = VKRNN_DATES_MODEL_DIR;
  std::string date = "Saturday 21 November 2026", expected = "2026-11-21";
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--model" && i + 1 < argc) {
      model_dir = argv[++i];
    } else if (a == "--date" && i + 2 < argc) {
      date = argv[++i];
      expected = argv[++i];
    } else {
      std::cout << "usage: vkrnn-embed [--model DIR] [--date TEXT EXPECTED]\n"
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
  VkApplicationInfo app{VK_STRUCTURE_TYPE_APPLICATION_INFO};
  app.pApplicationName = "vkrnn-embed";
  app.apiVersion = VK_API_VERSION_1_1;
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
  // The app enables 16-bit storage when the device has it, and tells vkrnn so.
  VkPhysicalDevice16BitStorageFeatures storage16{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_16BIT_STORAGE_FEATURES};
  VkPhysicalDeviceFeatures2 supported{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2};
  supported.pNext = &storage16;
  vkGetPhysicalDeviceFeatures2(phys, &supported);
  VkPhysicalDevice16BitStorageFeatures enable16{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_16BIT_STORAGE_FEATURES};
  enable16.storageBuffer16BitAccess = storage16.storageBuffer16BitAccess;
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
            << (validation ? "on (with synchronization validation)" : "not installed: off") << "\n";

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
  VkCommandBuffer cbs[2];
  VkCommandBufferAllocateInfo cai{VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO};
  cai.commandPool = pool;
  cai.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
  cai.commandBufferCount = 2;
  check(vkAllocateCommandBuffers(device, &cai, cbs), "vkAllocateCommandBuffers");
  const VkCommandBuffer frame_cb = cbs[0], present_cb = cbs[1];
  VkSemaphoreCreateInfo sci{VK_STRUCTURE_TYPE_SEMAPHORE_CREATE_INFO};
  VkSemaphore frame_ready = VK_NULL_HANDLE, inference_done = VK_NULL_HANDLE;
  check(vkCreateSemaphore(device, &sci, nullptr, &frame_ready), "vkCreateSemaphore");
  check(vkCreateSemaphore(device, &sci, nullptr, &inference_done), "vkCreateSemaphore");
  VkFenceCreateInfo fci{VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
  VkFence frame_fence = VK_NULL_HANDLE;
  check(vkCreateFence(device, &fci, nullptr, &frame_fence), "vkCreateFence");

  // The app's frame work: fill its scene buffer with the frame number ...
  auto record_frame = [&](std::uint32_t frame) {
    begin(frame_cb);
    vkCmdFillBuffer(frame_cb, scene.buffer, 0, kBytes, frame);
    check(vkEndCommandBuffer(frame_cb), "vkEndCommandBuffer");
  };
  // ... and after inference, copy it where the host can read it ("present").
  auto record_present = [&]() {
    begin(present_cb);
    const VkBufferCopy region{0, 0, kBytes};
    vkCmdCopyBuffer(present_cb, scene.buffer, readback.buffer, 1, &region);
    VkMemoryBarrier to_host{VK_STRUCTURE_TYPE_MEMORY_BARRIER};
    to_host.srcAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT;
    to_host.dstAccessMask = VK_ACCESS_HOST_READ_BIT;
    vkCmdPipelineBarrier(present_cb, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_PIPELINE_STAGE_HOST_BIT, 0, 1, &to_host, 0,
                         nullptr, 0, nullptr);
    check(vkEndCommandBuffer(present_cb), "vkEndCommandBuffer");
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
    vkrnn::Context ctx = vkrnn::Context::adopt(ext);
    const auto model = vkrnn::Seq2Seq::load(ctx, model_dir);

    // One decoder step per frame: the encoder runs in frame 1's sequence, then each frame
    // records one step, submits it between the app's own work, and polls for it.
    const auto encoded = model.prepare({model.encode_text(date)});
    auto state = model.start(encoded);
    auto seq = ctx.sequence({.label = "vkrnn-embed frame"});
    std::vector<std::int32_t> tokens;
    std::uint32_t frame = 0;
    std::size_t polls = 0;
    bool finished = false, scene_ok = true;
    while (!finished && state.steps_taken() < model.config().max_decode_length) {
      ++frame;
      record_frame(frame);
      submit(queue, frame_cb, VK_NULL_HANDLE, 0, frame_ready, VK_NULL_HANDLE);

      seq.reset();
      if (frame == 1) model.record_encode(seq, encoded);
      model.record_step(seq, state);
      seq.submit({.wait = {frame_ready},
                  .wait_stages = {VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT},
                  .signal = {inference_done}});

      record_present();
      submit(queue, present_cb, inference_done, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_NULL_HANDLE, frame_fence);

      // A game keeps rendering while the step runs: it only asks whether it is done.
      while (!seq.done()) {
        ++polls;
        std::this_thread::yield();
      }
      const vkrnn::StepResult step = model.read_step(seq, state);
      tokens.push_back(step.tokens[0]);
      finished = step.all_finished;

      check(vkWaitForFences(device, 1, &frame_fence, VK_TRUE, UINT64_MAX), "vkWaitForFences");
      check(vkResetFences(device, 1, &frame_fence), "vkResetFences");
      scene_ok = scene_ok && scene_is(frame);
    }
    const std::string text = model.decode_text(tokens);
    const std::string reference = model.translate({date})[0];
    std::cout << "vkrnn: adopted the app's device (owns_device = " << (ctx.owns_device() ? "true" : "false")
              << "); \"" << date << "\" -> " << text << " over " << frame
              << " frames, one decoder step per frame, done() polled " << polls << " times\n";
    std::cout << "check: Seq2Seq::translate gives " << reference << ", expected " << expected
              << "; the app's own work was correct in every frame: " << (scene_ok ? "yes" : "NO") << "\n";
    if (text != reference || text != expected || !scene_ok) status = 4;
  }  // vkrnn's objects go here: the sequence, the model, the context -- never the app's

  // ---- the app carries on, then tears down what it created -------------------------------
  record_frame(0xC0FFEE);
  submit(queue, frame_cb, VK_NULL_HANDLE, 0, VK_NULL_HANDLE, VK_NULL_HANDLE);
  record_present();
  submit(queue, present_cb, VK_NULL_HANDLE, 0, VK_NULL_HANDLE, frame_fence);
  check(vkWaitForFences(device, 1, &frame_fence, VK_TRUE, UINT64_MAX), "vkWaitForFences");
  const bool device_ok = scene_is(0xC0FFEE);
  std::cout << "app: after vkrnn was destroyed its device still works: " << (device_ok ? "yes" : "NO") << "\n";
  if (!device_ok) status = 4;
  vkDestroyFence(device, frame_fence, nullptr);
  vkDestroySemaphore(device, frame_ready, nullptr);
  vkDestroySemaphore(device, inference_done, nullptr);
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
