// vkrnn-bench: runs the standard workloads (/work/shared/workloads.md) on every Vulkan device
// present (or those chosen with --device), with the device's own ceilings measured in the same
// run, prints a table and writes JSON in the schema of bench/schema.json (see bench/SCHEMA.md).
#include <sys/utsname.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "ceilings.hpp"
#include "timing.hpp"
#include "workload.hpp"
#include "vkrnn/version.hpp"

namespace vkrnn::bench {
namespace {

using json = nlohmann::ordered_json;

std::string iso_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S+00:00", &tm);
  return buf;
}

std::string cpu_model() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("model name", 0) == 0) {
      const auto colon = line.find(':');
      if (colon != std::string::npos) return line.substr(line.find_first_not_of(" \t", colon + 1));
    }
  }
  return "unknown";
}

json host_info() {
  utsname u{};
  std::string os = "unknown";
  if (uname(&u) == 0) os = std::string(u.sysname) + " " + u.release;
  json host = {{"os", os}, {"cpu", cpu_model()},
               {"cores", std::max(1u, std::thread::hardware_concurrency())}};
  double load[3];
  if (getloadavg(load, 3) == 3) {
    host["load_avg"] = {std::round(load[0] * 100) / 100, std::round(load[1] * 100) / 100,
                        std::round(load[2] * 100) / 100};
  }
  return host;
}

// The schema's own names, independent of how vkrnn::to_string spells them.
const char* type_name(DeviceType t) {
  switch (t) {
    case DeviceType::discrete: return "discrete";
    case DeviceType::integrated: return "integrated";
    case DeviceType::virtual_gpu: return "virtual_gpu";
    case DeviceType::cpu: return "cpu";
    default: return "other";
  }
}

std::string api_string(std::uint32_t v) {
  return fmt::format("{}.{}.{}", VK_API_VERSION_MAJOR(v), VK_API_VERSION_MINOR(v), VK_API_VERSION_PATCH(v));
}

json device_json(const DeviceInfo& d, bool validation) {
  json j;
  j["index"] = d.index;
  j["name"] = d.name;
  j["vendor"] = to_string(d.vendor);
  j["vendor_id"] = d.vendor_id;
  j["device_type"] = type_name(d.type);
  j["driver_name"] = d.driver_name;
  j["driver_version"] = d.driver_version_string.empty() ? std::to_string(d.driver_version)
                                                        : d.driver_version_string;
  j["driver_info"] = d.driver_info;
  j["api_version"] = api_string(d.api_version);
  j["subgroup_size"] = d.subgroup_size;
  j["timestamps"] = d.timestamps;
  j["validation"] = validation;
  j["ceilings"] = nullptr;
  j["rows"] = json::array();
  j["skipped"] = json::array();
  return j;
}

json nullable_rate(double work, double per, double scale) {
  if (work <= 0.0 || per <= 0.0) return nullptr;
  return work / per * scale;
}

// copy_fraction and gpu_copy_fraction of a row against the ceilings' copy_shader_gbps, and,
// where the row has copy_shader_gbps_near, the _near fractions against that; read_fraction and
// gpu_read_fraction against read_shader_gbps (rows with bytes, where it was measured).
void set_copy_fractions(json& r, const json& ceilings) {
  auto ceiling = [&](const char* key) {
    return ceilings.is_object() && ceilings.contains(key) && ceilings[key].is_number() ? ceilings[key].get<double>() : 0.0;
  };
  const double copy = ceiling("copy_shader_gbps"), read = ceiling("read_shader_gbps");
  auto fraction = [&](const char* rate, double basis) {
    return r.contains(rate) && r[rate].is_number() && basis > 0.0 ? json(r[rate].get<double>() / basis) : json(nullptr);
  };
  r["copy_fraction"] = fraction("gbps", copy);
  if (r.contains("gpu_gbps")) r["gpu_copy_fraction"] = fraction("gpu_gbps", copy);
  if (r.contains("bytes") && read > 0.0) {
    r["read_fraction"] = fraction("gbps", read);
    if (r.contains("gpu_gbps")) r["gpu_read_fraction"] = fraction("gpu_gbps", read);
  }
  if (r.contains("copy_shader_gbps_near")) {
    const double near = r["copy_shader_gbps_near"].get<double>();
    r["copy_fraction_near"] = fraction("gbps", near);
    if (r.contains("gpu_gbps")) r["gpu_copy_fraction_near"] = fraction("gpu_gbps", near);
  }
}

// The copy shader beside the rows that have a byte count: measured just before and just after
// each (one measurement serves as the after of a row and the before of the next), the larger
// of the two is the row's copy_shader_gbps_near. A few repetitions of one configuration (the
// ceiling's), ~70 ms on lavapipe.
class NearCopy {
 public:
  explicit NearCopy(CopyProbe* probe) : probe_(probe) {}
  void before_row(bool has_bytes) {
    if (!probe_ || !has_bytes) {
      last_ = 0.0;  // time passes: the next row measures its own before
      return;
    }
    if (last_ <= 0.0) last_ = measure();
  }
  // After a row with bytes: its copy_shader_gbps_near, and the fractions against it.
  void after_row(json& r, const json& ceilings) {
    if (!probe_ || last_ <= 0.0) return;
    const double before = last_;
    last_ = measure();
    r["copy_shader_gbps_near"] = std::max(before, last_);
    set_copy_fractions(r, ceilings);
  }
  void skip() { last_ = 0.0; }

 private:
  double measure() { return probe_->gbps(1, 5); }
  CopyProbe* probe_;
  double last_ = 0.0;
};

// The copy and read shaders measured again after the rows: the machine's speed can drift over
// a run (lavapipe on a shared 2-core machine: 9.2 and 15.0 GB/s in two runs a day apart), so
// the fractions use the larger of the two measurements, the stricter ceiling. Both are kept.
void remeasure_ceilings(Context& ctx, json& d, const CeilingOptions& options) {
  json& c = d["ceilings"];
  auto again = [&](const char* what, const std::string& key, const CopyCeiling& second) {
    const double first = c[key + "_gbps"].get<double>();
    c[key + "_gbps_runs"] = {first, second.gbps};
    if (second.gbps > first) {
      c[key + "_gbps"] = second.gbps;
      c[key + "_config"] = second.config;
    }
    fmt::print("   {} shader again after the rows: {:.2f} GB/s (before the rows: {:.2f}); the JSON's "
               "fractions use {:.2f}\n", what, second.gbps, first, c[key + "_gbps"].get<double>());
  };
  again("copy", "copy_shader", measure_copy_shader(ctx, options));
  if (c.contains("read_shader_gbps")) again("read", "read_shader", measure_read_shader(ctx, options));
  for (json& r : d["rows"]) set_copy_fractions(r, c);
}

json row_json(const Workload& w, const Samples& s, const json& ceilings) {
  const double wall = median(s.wall_us);  // every derived rate is from the wall median
  json r;
  r["id"] = w.id;
  r["name"] = w.name();
  r["params"] = w.params;
  r["precision"] = w.precision;
  r["repetitions"] = s.wall_us.size();
  r["warmup"] = s.warmup;
  r["gpu_us"] = summary(s.gpu_us);
  r["wall_us"] = summary(s.wall_us);
  r["record_us"] = summary(s.record_us);
  r["host_cpu_us"] = summary(s.host_cpu_us);
  // Host CPU time over wall time: on a CPU driver, how many of its threads the row kept busy
  // (~1 where one worker ran all of it); on a GPU, near 0 while the host waits.
  r["host_threads"] = s.host_cpu_us.empty() || wall <= 0.0 ? json(nullptr) : json(median(s.host_cpu_us) / wall);
  const double bytes = w.work.bytes_read + w.work.bytes_written;
  r["gbps"] = nullable_rate(bytes, wall, 1e-3);
  r["gflops"] = nullable_rate(w.work.flops, wall, 1e-3);
  r["tokens_per_s"] = nullable_rate(w.work.tokens, wall, 1e6);
  r["us_per_step"] = w.work.steps > 0 ? json(wall / w.work.steps) : json(nullptr);
  if (!s.first_token_us.empty()) r["first_token_us"] = summary(s.first_token_us);
  if (w.work.weight_bytes_per_token > 0) r["weight_bytes_per_token"] = w.work.weight_bytes_per_token;
  if (bytes > 0.0) {
    r["bytes"] = bytes;
    // The kernels alone (summed dispatch timestamps), as the copy ceiling is timed where the
    // device has timestamps.
    if (!s.gpu_us.empty()) r["gpu_gbps"] = nullable_rate(bytes, median(s.gpu_us), 1e-3);
  }
  set_copy_fractions(r, ceilings);
  r["dispatches"] = s.dispatches;
  r["submissions"] = s.submissions;
  if (!s.kernels.empty()) {
    // Where the GPU time goes, the slowest kernel first (medians over the repetitions).
    std::vector<json> kernels;
    for (const KernelSamples& k : s.kernels) {
      kernels.push_back({{"kernel", k.kernel}, {"dispatches", k.dispatches}, {"gpu_us", median(k.gpu_us)}});
    }
    std::stable_sort(kernels.begin(), kernels.end(),
                     [](const json& a, const json& b) { return a["gpu_us"].get<double>() > b["gpu_us"].get<double>(); });
    r["kernels"] = kernels;
  }
  r["backend"] = {{"name", "vkrnn " + std::string(vkrnn::version())}, {"blas", nullptr}, {"threads", nullptr}};
  return r;
}

std::string fmt_opt(const json& v, const char* spec_unit) {
  if (!v.is_number()) return "";
  return fmt::format(fmt::runtime(spec_unit), v.get<double>());
}

void print_header(const json& d) {
  fmt::print("\n== {} [{}] — {} {}, driver {} {} ({}), Vulkan {}, subgroup {}, timestamps {}\n",
             d["name"].get<std::string>(), d["index"].get<int>(), d["vendor"].get<std::string>(),
             d["device_type"].get<std::string>(), d["driver_name"].get<std::string>(),
             d["driver_version"].get<std::string>(), d["driver_info"].get<std::string>(),
             d["api_version"].get<std::string>(),
             d["subgroup_size"].get<int>(), d["timestamps"].get<bool>() ? "yes" : "no");
}

void print_ceilings(const json& c) {
  const auto& cfg = c["copy_shader_config"];
  const auto& rcfg = c["read_shader_config"];
  fmt::print("   ceilings: copy shader {:.2f} GB/s (wg {} x {} vec4, {} reads, {} time) | read shader {:.2f} "
             "GB/s (wg {} x {} vec4, {} reads) | vkCmdCopyBuffer {:.2f} GB/s | empty dispatch {:.1f} us | empty "
             "submit+wait {:.1f} us\n",
             c["copy_shader_gbps"].get<double>(), cfg["workgroup_size"].get<int>(),
             cfg["vec4_per_invocation"].get<int>(), cfg["reads"].get<std::string>(), cfg["basis"].get<std::string>(),
             c["read_shader_gbps"].get<double>(), rcfg["workgroup_size"].get<int>(),
             rcfg["vec4_per_invocation"].get<int>(), rcfg["reads"].get<std::string>(),
             c["copy_buffer_gbps"].get<double>(), c["empty_dispatch_us"].get<double>(),
             c["empty_submit_us"].get<double>());
}

void print_table_header() {
  fmt::print("   {:<40} {:>11} {:>23} {:>11} {:>11} {:>10} {:>13} {:>6} {:>6} {:>6} {:>6} {:>5} {:>4}\n", "row",
             "wall med us", "[min .. max]", "gpu med us", "GB/s", "GFLOP/s", "other", "copy%",
             "gpu%", "near%", "read%", "disp", "thr");
}

void print_row(const json& r) {
  const auto& wall = r["wall_us"];
  std::string other = fmt_opt(r["tokens_per_s"], "{:.0f} tok/s");
  if (other.empty()) other = fmt_opt(r["us_per_step"], "{:.1f} us/step");
  auto percent = [&](const char* key) {
    return r.contains(key) && r[key].is_number() ? fmt::format("{:.0f}%", r[key].get<double>() * 100.0)
                                                 : std::string();
  };
  // near%: against the copy shader measured beside the row, on the copy's time basis.
  const std::string near = r.contains("gpu_copy_fraction_near") ? percent("gpu_copy_fraction_near")
                                                                 : percent("copy_fraction_near");
  // read%: against the read shader, on the same basis as gpu% (GPU time where there is one).
  const std::string read = r.contains("gpu_read_fraction") ? percent("gpu_read_fraction") : percent("read_fraction");
  // thr: host CPU time over wall time (host_threads).
  fmt::print("   {:<40} {:>11.1f} {:>23} {:>11} {:>11} {:>10} {:>13} {:>6} {:>6} {:>6} {:>6} {:>5} {:>4}\n",
             r["name"].get<std::string>(), wall["median"].get<double>(),
             fmt::format("[{:.1f} .. {:.1f}]", wall["min"].get<double>(), wall["max"].get<double>()),
             r["gpu_us"].is_null() ? "-" : fmt::format("{:.1f}", r["gpu_us"]["median"].get<double>()),
             fmt_opt(r["gbps"], "{:.2f}"), fmt_opt(r["gflops"], "{:.2f}"), other,
             percent("copy_fraction"), percent("gpu_copy_fraction"), near, read, r["dispatches"].get<int>(),
             fmt_opt(r["host_threads"], "{:.1f}"));
  if (r.contains("first_token_us")) {
    const auto& first = r["first_token_us"];
    fmt::print("      first token {:.1f} us [{:.1f} .. {:.1f}], {} submissions\n", first["median"].get<double>(),
               first["min"].get<double>(), first["max"].get<double>(), r["submissions"].get<int>());
  }
}

void print_kernels(const json& r) {
  if (!r.contains("kernels")) return;
  const double total = r["gpu_us"]["median"].get<double>();
  for (const json& k : r["kernels"]) {
    const double us = k["gpu_us"].get<double>();
    fmt::print("      {:<36} {:>5} x {:>10.1f} us = {:>11.1f} us {:>5.1f}%\n", k["kernel"].get<std::string>(),
               k["dispatches"].get<int>(), us / k["dispatches"].get<int>(), us, total > 0.0 ? 100.0 * us / total : 0.0);
  }
}

struct ValidationLog {
  std::mutex mutex;
  std::vector<std::string> messages;
};

// Through a temporary file and a rename, so that a run killed while writing leaves the last
// complete file, not a truncated one.
bool write_json(const std::string& path, const json& doc) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp);
    f << doc.dump(1) << "\n";
    if (!f) return false;
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  return !ec;
}

int run(int argc, char** argv) {
  CLI::App app{"vkrnn-bench: the standard workloads (W1-W4) and the device ceilings on every "
               "Vulkan device, as a table and as JSON (bench/SCHEMA.md)"};
  std::vector<std::string> device_selectors, filters;
  bool list = false, list_devices_only = false, no_ceilings = false, ceilings_only = false,
       validation = false, kernels = false;
  int repetitions = 20, warmup = 3;
  double max_seconds = 0.0;
  std::string out_path;
  app.add_option("-d,--device", device_selectors,
                 "device index or case-insensitive name substring (repeatable; default: all)");
  app.add_flag("--list", list, "print the rows (after --filter) and exit");
  app.add_flag("--list-devices", list_devices_only, "print the Vulkan devices and exit");
  app.add_option("-f,--filter", filters,
                 "row name prefix or glob, or workload id (repeatable), e.g. W1.dot, W2, "
                 "'W1.*/B=16,*'");
  app.add_option("-r,--repetitions", repetitions, "timed repetitions per row (default 20)")
      ->check(CLI::Range(1, 1000000));
  app.add_option("-w,--warmup", warmup, "untimed repetitions before timing (default 3)")
      ->check(CLI::Range(0, 1000000));
  app.add_option("-o,--out", out_path, "write the JSON results to this file");
  app.add_option("--max-seconds", max_seconds,
                 "time budget per row: fewer repetitions (>= 3) for rows that would take longer "
                 "(default 0: no budget, always --repetitions)")
      ->check(CLI::NonNegativeNumber);
  app.add_flag("--no-ceilings", no_ceilings, "skip the ceiling measurements");
  app.add_flag("--ceilings-only", ceilings_only, "measure the ceilings, run no row");
  app.add_flag("--validation", validation,
               "enable the Khronos validation layer; any message makes the exit status 3");
  app.add_flag("--kernels", kernels,
               "print each row's GPU time per kernel under it (the JSON has it as \"kernels\" always)");
  CLI11_PARSE(app, argc, argv);

  if (ceilings_only && no_ceilings) {
    fmt::print(stderr, "vkrnn-bench: --ceilings-only and --no-ceilings leave nothing to do\n");
    return 2;
  }
  std::vector<Workload> rows;
  for (auto& w : ceilings_only ? std::vector<Workload>{} : registered_workloads()) {
    const std::string name = w.name();
    if (filters.empty() || std::any_of(filters.begin(), filters.end(), [&](const std::string& f) {
          return matches(w.id, name, f);
        })) {
      rows.push_back(std::move(w));
    }
  }
  if (list) {
    for (const auto& w : rows) fmt::print("{}\n", w.name());
    return 0;
  }
  if (!filters.empty() && rows.empty() && !ceilings_only) {
    fmt::print(stderr, "vkrnn-bench: no row matches the filter (see --list)\n");
    return 2;
  }

  const std::vector<DeviceInfo> devices = vkrnn::list_devices();
  if (list_devices_only) {
    for (const auto& d : devices) {
      fmt::print("{}: {} ({}, {}, driver {} {})\n", d.index, d.name, to_string(d.vendor),
                 type_name(d.type), d.driver_name, d.driver_version_string);
    }
    return 0;
  }
  std::vector<std::uint32_t> chosen;
  if (device_selectors.empty()) {
    for (const auto& d : devices) chosen.push_back(d.index);
  } else {
    for (const auto& sel : device_selectors) {
      const std::uint32_t i = select_device(devices, sel);
      if (std::find(chosen.begin(), chosen.end(), i) == chosen.end()) chosen.push_back(i);
    }
  }

  ValidationLog log;
  json doc;
  doc["schema_version"] = 1;
  doc["tool"] = "vkrnn-bench";
  doc["created"] = iso_now();
  doc["host"] = host_info();
  doc["devices"] = json::array();

  for (std::uint32_t index : chosen) {
    ContextOptions co;
    co.device = std::to_string(index);
    co.validation = validation;
    co.validation_sink = [&log](MessageSeverity severity, std::string_view message) {
      if (severity != MessageSeverity::warning && severity != MessageSeverity::error) return;
      std::lock_guard lock(log.mutex);
      log.messages.emplace_back(message);
    };
    Context ctx(co);
    const DeviceInfo& info = ctx.device();
    json d = device_json(info, validation);
    print_header(d);
    const CeilingOptions ceiling_options{std::min(warmup, 2), std::max(repetitions, 5)};
    std::optional<CopyProbe> probe;
    if (!no_ceilings) {
      d["ceilings"] = measure_ceilings(ctx, ceiling_options);
      print_ceilings(d["ceilings"]);
      if (!rows.empty()) probe.emplace(ctx, d["ceilings"]["copy_shader_config"]);
    }
    NearCopy near(probe ? &*probe : nullptr);
    if (!rows.empty()) print_table_header();
    for (const auto& w : rows) {
      const std::string name = w.name();
      try {
        near.before_row(w.work.bytes_read + w.work.bytes_written > 0);
        const Prepared prepared = w.setup(ctx);
        TimingOptions timing{warmup, repetitions, info.timestamps, name};
        timing.max_seconds = max_seconds;
        const Samples s = prepared.run ? run_self_timed(prepared.run, timing) : run_timed(ctx, prepared.record, timing);
        if (!prepared.run) check_output(name, ctx.read<float>(prepared.output));
        if (!s.gpu_us.empty() && median(s.gpu_us) > 1.2 * median(s.wall_us) + 50.0) {
          // Kernel time cannot exceed submit-to-wait time: the timestamps are not to be trusted.
          fmt::print(stderr, "vkrnn-bench: warning: {}: GPU time {:.1f} us > wall time {:.1f} us "
                     "(timestampPeriod {} ns)\n", name, median(s.gpu_us), median(s.wall_us),
                     info.timestamp_period_ns);
        }
        d["rows"].push_back(row_json(w, s, d["ceilings"]));
        near.after_row(d["rows"].back(), d["ceilings"]);
        print_row(d["rows"].back());
        if (kernels) print_kernels(d["rows"].back());
      } catch (const std::exception& e) {  // e.g. beyond this device's limits: say so, go on
        near.skip();
        d["skipped"].push_back({{"name", name}, {"reason", e.what()}});
        fmt::print("   {:<40} skipped: {}\n", name, e.what());
      }
      std::fflush(stdout);
      // After every row: a run stopped part-way (a time limit on a lent machine) still leaves
      // valid JSON of the rows it finished.
      if (!out_path.empty()) {
        json partial = doc;
        partial["devices"].push_back(d);
        (void)write_json(out_path, partial);
      }
    }
    if (!no_ceilings && !d["rows"].empty()) remeasure_ceilings(ctx, d, ceiling_options);
    doc["devices"].push_back(std::move(d));
  }

  if (!out_path.empty()) {
    if (!write_json(out_path, doc)) {
      fmt::print(stderr, "vkrnn-bench: cannot write {}\n", out_path);
      return 1;
    }
    fmt::print("\nwrote {}\n", out_path);
  }
  if (!log.messages.empty()) {
    for (const auto& m : log.messages) fmt::print(stderr, "validation: {}\n", m);
    fmt::print(stderr, "vkrnn-bench: {} validation message(s)\n", log.messages.size());
    return 3;
  }
  return 0;
}

}  // namespace
}  // namespace vkrnn::bench

int main(int argc, char** argv) {
  try {
    return vkrnn::bench::run(argc, argv);
  } catch (const vkrnn::Error& e) {
    fmt::print(stderr, "vkrnn-bench: {} error: {}\n", vkrnn::to_string(e.code()), e.what());
    return 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "vkrnn-bench: {}\n", e.what());
    return 1;
  }
}
