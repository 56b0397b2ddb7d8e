// vkrnn-info: every Vulkan device vkrnn can see, what it offers, and which one vkrnn picks.
//   vkrnn-info            readable table
//   vkrnn-info --json     the same as JSON
//   vkrnn-info --smoke    also run a checked dispatch on the selected device
#include <cmath>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "vkrnn/vkrnn.hpp"

namespace {

std::string api_string(std::uint32_t v) {
  return fmt::format("{}.{}.{}", VK_API_VERSION_MAJOR(v), VK_API_VERSION_MINOR(v), VK_API_VERSION_PATCH(v));
}

std::string bytes_string(std::uint64_t b) {
  if (b >= (1ull << 30)) return fmt::format("{:.1f} GiB", double(b) / double(1ull << 30));
  if (b >= (1ull << 20)) return fmt::format("{:.1f} MiB", double(b) / double(1ull << 20));
  if (b >= (1ull << 10)) return fmt::format("{:.1f} KiB", double(b) / double(1ull << 10));
  return fmt::format("{} B", b);
}

nlohmann::json to_json(const vkrnn::DeviceInfo& d) {
  nlohmann::json j;
  j["index"] = d.index;
  j["name"] = d.name;
  j["vendor"] = vkrnn::to_string(d.vendor);
  j["vendor_id"] = fmt::format("0x{:04X}", d.vendor_id);
  j["device_id"] = fmt::format("0x{:04X}", d.device_id);
  j["type"] = vkrnn::to_string(d.type);
  j["driver_name"] = d.driver_name;
  j["driver_info"] = d.driver_info;
  j["driver_version"] = d.driver_version_string;
  j["api_version"] = api_string(d.api_version);
  j["subgroup"] = {{"size", d.subgroup_size},
                   {"min_size", d.min_subgroup_size},
                   {"max_size", d.max_subgroup_size},
                   {"in_compute", d.subgroup_in_compute},
                   {"operations", d.subgroup_operation_names}};
  j["compute"] = {{"max_workgroup_size", d.max_workgroup_size},
                  {"max_workgroup_invocations", d.max_workgroup_invocations},
                  {"max_workgroup_count", d.max_workgroup_count},
                  {"max_shared_memory", d.max_shared_memory},
                  {"max_push_constants", d.max_push_constants},
                  {"max_storage_buffer_range", d.max_storage_buffer_range},
                  {"max_memory_allocation_size", d.max_memory_allocation_size},
                  {"max_memory_allocation_count", d.max_memory_allocation_count}};
  j["float16"] = {{"storage_buffer_16bit", d.storage_16bit}, {"shader_float16", d.shader_float16}};
  nlohmann::json heaps = nlohmann::json::array();
  for (const auto& h : d.memory_heaps) heaps.push_back({{"size", h.size}, {"device_local", h.device_local}});
  nlohmann::json types = nlohmann::json::array();
  for (const auto& t : d.memory_types) {
    types.push_back({{"heap", t.heap},
                     {"device_local", t.device_local},
                     {"host_visible", t.host_visible},
                     {"host_coherent", t.host_coherent},
                     {"host_cached", t.host_cached}});
  }
  j["memory"] = {{"heaps", heaps}, {"types", types}, {"unified", d.unified_memory}};
  j["timestamps"] = {{"supported", d.timestamps},
                     {"period_ns", d.timestamp_period_ns},
                     {"valid_bits", d.timestamp_valid_bits}};
  j["queue"] = {{"compute_family", d.compute_queue_family}, {"compute_only", d.has_compute_only_queue}};
  return j;
}

void print_table(const std::vector<vkrnn::DeviceInfo>& devices, std::uint32_t selected) {
  for (const auto& d : devices) {
    fmt::print("[{}] {}{}\n", d.index, d.name, d.index == selected ? "   <- selected" : "");
    auto row = [](const char* k, const std::string& v) { fmt::print("    {:<28} {}\n", k, v); };
    row("vendor", fmt::format("{} (0x{:04X}), device 0x{:04X}", vkrnn::to_string(d.vendor), d.vendor_id, d.device_id));
    row("type", vkrnn::to_string(d.type));
    row("driver", fmt::format("{} {} ({})", d.driver_name, d.driver_version_string, d.driver_info));
    row("Vulkan API", api_string(d.api_version));
    row("subgroup size", d.min_subgroup_size == d.max_subgroup_size
                             ? fmt::format("{}", d.subgroup_size)
                             : fmt::format("{} (range {}..{})", d.subgroup_size, d.min_subgroup_size, d.max_subgroup_size));
    row("subgroup operations", fmt::format("{}{}", fmt::join(d.subgroup_operation_names, " "),
                                           d.subgroup_in_compute ? "" : " (not in compute)"));
    row("max workgroup size", fmt::format("{} x {} x {}, {} invocations", d.max_workgroup_size[0],
                                          d.max_workgroup_size[1], d.max_workgroup_size[2], d.max_workgroup_invocations));
    row("max workgroup count", fmt::format("{} x {} x {}", d.max_workgroup_count[0], d.max_workgroup_count[1], d.max_workgroup_count[2]));
    row("shared memory", bytes_string(d.max_shared_memory));
    row("max storage buffer range", bytes_string(d.max_storage_buffer_range));
    row("max allocation", fmt::format("{} ({} allocations)", bytes_string(d.max_memory_allocation_size), d.max_memory_allocation_count));
    row("16-bit storage / fp16 math", fmt::format("{} / {}", d.storage_16bit ? "yes" : "no", d.shader_float16 ? "yes" : "no"));
    for (std::size_t h = 0; h < d.memory_heaps.size(); ++h) {
      std::string types;
      for (std::size_t t = 0; t < d.memory_types.size(); ++t) {
        const auto& mt = d.memory_types[t];
        if (mt.heap != h) continue;
        std::string flags;
        if (mt.device_local) flags += "device-local ";
        if (mt.host_visible) flags += "host-visible ";
        if (mt.host_coherent) flags += "coherent ";
        if (mt.host_cached) flags += "cached ";
        if (!flags.empty()) flags.pop_back();
        types += fmt::format("{}[{}: {}]", types.empty() ? "" : " ", t, flags.empty() ? "-" : flags);
      }
      row(fmt::format("heap {}", h).c_str(),
          fmt::format("{}{} {}", bytes_string(d.memory_heaps[h].size),
                      d.memory_heaps[h].device_local ? " device-local" : "", types));
    }
    row("unified memory", d.unified_memory ? "yes (tensors are host-mapped)" : "no (staging copies)");
    row("timestamps", d.timestamps ? fmt::format("yes, {} ns/tick, {} valid bits", d.timestamp_period_ns, d.timestamp_valid_bits) : "no");
    row("compute queue", fmt::format("family {}{}", d.compute_queue_family, d.has_compute_only_queue ? " (compute-only, async)" : " (universal)"));
  }
}

// y = 2x + y on 100003 elements (not a multiple of any workgroup size), checked element by element.
int smoke(nlohmann::json* out) {
  vkrnn::Context ctx;
  const std::uint32_t n = 100003;
  std::vector<float> x(n), y(n);
  for (std::uint32_t i = 0; i < n; ++i) {
    x[i] = float(i % 1000) * 0.5f;
    y[i] = float(i % 7) - 3.0f;
  }
  auto tx = ctx.tensor({n}, x, "x");
  auto ty = ctx.tensor({n}, y, "y");
  const std::uint32_t wg = std::min<std::uint32_t>(256, ctx.device().max_workgroup_invocations);
  auto k = ctx.kernel({"saxpy", {wg, 1, 1}, 2, 8});
  struct {
    std::uint32_t n;
    float a;
  } push{n, 2.0f};
  auto seq = ctx.sequence({.profile = true, .label = "smoke"});
  seq.dispatch(k, {vkrnn::in(tx), vkrnn::inout(ty)}, push, {(n + wg - 1) / wg, 1, 1});
  seq.download(ty);
  seq.eval();
  const auto result = seq.read<float>(ty);
  std::size_t bad = 0;
  for (std::uint32_t i = 0; i < n; ++i) {
    if (result[i] != 2.0f * x[i] + y[i]) ++bad;
  }
  const auto t = seq.timings();
  const double gpu_us = t.empty() ? -1.0 : t[0].gpu_ns / 1000.0;
  if (out) {
    (*out)["smoke"] = {{"device", ctx.device().name}, {"elements", n}, {"mismatches", bad}, {"gpu_us", gpu_us}};
  } else {
    fmt::print("\nsmoke dispatch on '{}': y = 2x + y over {} elements: {} ({} mismatches{})\n",
               ctx.device().name, n, bad == 0 ? "OK" : "FAILED", bad,
               gpu_us >= 0 ? fmt::format(", {:.1f} us on the GPU", gpu_us) : "");
  }
  return bad == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  bool json = false, run_smoke = false;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--json")) json = true;
    else if (!std::strcmp(argv[i], "--smoke")) run_smoke = true;
    else if (!std::strcmp(argv[i], "--help") || !std::strcmp(argv[i], "-h")) {
      fmt::print("usage: vkrnn-info [--json] [--smoke]\n"
                 "  lists every Vulkan device; VKRNN_DEVICE=<index|name> changes the selection\n");
      return 0;
    } else {
      fmt::print(stderr, "vkrnn-info: unknown argument '{}' (try --help)\n", argv[i]);
      return 2;
    }
  }
  try {
    const auto devices = vkrnn::list_devices();
    const char* env = std::getenv("VKRNN_DEVICE");
    const auto selected = vkrnn::select_device(devices, env ? env : "");
    int rc = 0;
    if (json) {
      nlohmann::json j;
      j["devices"] = nlohmann::json::array();
      for (const auto& d : devices) j["devices"].push_back(to_json(d));
      j["selected"] = selected;
      if (run_smoke) rc = smoke(&j);
      std::cout << j.dump(2) << "\n";
    } else {
      print_table(devices, selected);
      if (run_smoke) rc = smoke(nullptr);
    }
    return rc;
  } catch (const vkrnn::Error& e) {
    fmt::print(stderr, "vkrnn-info: {}\n", e.what());
    return 1;
  }
}
