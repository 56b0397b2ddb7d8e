// The Vulkan runtime: devices, memory, pipelines, the recorder and its barriers, adoption of an
// app's handles, and the errors users see when something is wrong.
#include <algorithm>
#include <atomic>
#include <array>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <numeric>
#include <set>
#include <utility>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "common/app_device.hpp"
#include "common/saxpy.hpp"
#include "common/test_env.hpp"
#include "expect_error.hpp"
#include "vk/context_impl.hpp"
#include "vk/loader.hpp"
#include "vk/memory.hpp"

using namespace vkrnn;
using vkrnn::test::context;
using vkrnn::test::staging_context;

namespace {

using test::record_saxpy;
using test::saxpy;
using test::SaxpyPush;

// The shared check (tests/expect_error.hpp) in this file's argument order: the call last.
template <class F>
void expect_error(ErrorCode code, const std::string& needle, F&& f) {
  test::expect_error(f, code, {needle});
}

std::vector<std::uint32_t> pattern(std::size_t words, std::uint32_t seed) {
  std::vector<std::uint32_t> v(words);
  for (std::size_t i = 0; i < words; ++i) v[i] = static_cast<std::uint32_t>(i * 2654435761u) ^ seed;
  return v;
}

}  // namespace

// ---------------------------------------------------------------------------- devices

TEST(Devices, EnumerationReportsPlausibleLimits) {
  const auto devices = list_devices();
  ASSERT_FALSE(devices.empty());
  for (const auto& d : devices) {
    SCOPED_TRACE(d.name);
    EXPECT_FALSE(d.name.empty());
    EXPECT_GE(d.api_version, VK_API_VERSION_1_1);
    EXPECT_TRUE(std::has_single_bit(d.subgroup_size)) << d.subgroup_size;
    EXPECT_LE(d.min_subgroup_size, d.subgroup_size);
    EXPECT_GE(d.max_subgroup_size, d.subgroup_size);
    EXPECT_GE(d.max_workgroup_invocations, 128u);  // Vulkan's required minimum
    EXPECT_GE(d.max_shared_memory, 16384u);
    EXPECT_GE(d.max_storage_buffer_range, 1u << 27);
    EXPECT_GE(d.max_workgroup_count[0], 65535u);
    EXPECT_FALSE(d.memory_heaps.empty());
    EXPECT_FALSE(d.memory_types.empty());
    for (const auto& t : d.memory_types) EXPECT_LT(t.heap, d.memory_heaps.size());
    EXPECT_NE(d.compute_queue_family, UINT32_MAX);
    EXPECT_FALSE(d.driver_version_string.empty());
  }
}

TEST(Devices, VendorIdsAndTypeRanking) {
  EXPECT_EQ(vendor_from_id(0x1002), Vendor::amd);
  EXPECT_EQ(vendor_from_id(0x10DE), Vendor::nvidia);
  EXPECT_EQ(vendor_from_id(0x8086), Vendor::intel);
  EXPECT_EQ(vendor_from_id(0x13B5), Vendor::arm);
  EXPECT_EQ(vendor_from_id(0x5143), Vendor::qualcomm);
  EXPECT_EQ(vendor_from_id(0x106B), Vendor::apple);
  EXPECT_EQ(vendor_from_id(0x1010), Vendor::imagination);
  EXPECT_EQ(vendor_from_id(0x10005), Vendor::mesa);
  EXPECT_EQ(vendor_from_id(0x1234), Vendor::other);
  EXPECT_GT(device_type_rank(DeviceType::discrete), device_type_rank(DeviceType::integrated));
  EXPECT_GT(device_type_rank(DeviceType::integrated), device_type_rank(DeviceType::virtual_gpu));
  EXPECT_GT(device_type_rank(DeviceType::virtual_gpu), device_type_rank(DeviceType::cpu));
}

TEST(Devices, SelectionByRankIndexAndName) {
  // A synthetic list: selection is pure logic and must not depend on this machine's devices.
  std::vector<DeviceInfo> list(3);
  const char* names[] = {"llvmpipe (LLVM 15)", "Intel(R) UHD Graphics 620", "NVIDIA GeForce RTX 4090"};
  const DeviceType types[] = {DeviceType::cpu, DeviceType::integrated, DeviceType::discrete};
  for (std::uint32_t i = 0; i < 3; ++i) {
    list[i].index = i;
    list[i].name = names[i];
    list[i].type = types[i];
    list[i].api_version = VK_API_VERSION_1_3;
  }
  EXPECT_EQ(select_device(list, ""), 2u);
  EXPECT_EQ(select_device(list, "0"), 0u);
  EXPECT_EQ(select_device(list, "uhd"), 1u);
  EXPECT_EQ(select_device(list, "LLVMPIPE"), 0u);
  expect_error(ErrorCode::no_device, "index 7 does not exist", [&] { select_device(list, "7"); });
  expect_error(ErrorCode::no_device, "no device name contains 'radeon'", [&] { select_device(list, "radeon"); });
  list[2].api_version = VK_API_VERSION_1_0;  // too old: skipped by default, refused by name
  EXPECT_EQ(select_device(list, ""), 1u);
  expect_error(ErrorCode::no_device, "Vulkan 1.1", [&] { select_device(list, "RTX"); });
  expect_error(ErrorCode::no_device, "no Vulkan device", [&] { select_device({}, ""); });
}

TEST(Devices, EnvironmentSelectsDevice) {
  const auto devices = list_devices();
  ::setenv("VKRNN_DEVICE", devices.back().name.substr(0, 4).c_str(), 1);
  {
    auto o = test::validated_options();
    Context ctx(o);
    EXPECT_NE(ctx.device().name.find(devices.back().name.substr(0, 4)), std::string::npos);
  }
  ::setenv("VKRNN_DEVICE", "42", 1);
  expect_error(ErrorCode::no_device, "device index 42 does not exist", [] { Context ctx(test::validated_options()); });
  ::unsetenv("VKRNN_DEVICE");
}

// ContextOptions::limits (test-only) lowers what the context reports, never raises it, and the
// runtime then enforces the lower limits: a workgroup beyond them is refused at kernel creation.
TEST(Devices, LimitsLowerWhatTheContextReports) {
  const DeviceInfo& real = context().device();
  for (test::Limits limits : test::kAllLimits) {
    SCOPED_TRACE(test::to_string(limits));
    Context& ctx = test::limited_context(limits);
    const DeviceInfo& dev = ctx.device();
    const DeviceLimits want = test::device_limits(limits);
    EXPECT_EQ(dev.name, real.name);
    EXPECT_EQ(dev.subgroup_size, real.subgroup_size);  // what shaders really run with
    EXPECT_NE(dev.type, DeviceType::cpu);              // planned as a GPU
    auto lowered = [](std::uint32_t got, std::uint32_t real_value, std::uint32_t limit) {
      return got == (limit ? std::min(real_value, limit) : real_value);
    };
    EXPECT_TRUE(lowered(dev.max_shared_memory, real.max_shared_memory, want.max_shared_memory));
    EXPECT_TRUE(lowered(dev.max_workgroup_invocations, real.max_workgroup_invocations,
                        want.max_workgroup_invocations));
    EXPECT_TRUE(lowered(dev.max_storage_buffers_per_stage, real.max_storage_buffers_per_stage,
                        want.max_storage_buffers_per_stage));
    for (int i = 0; i < 3; ++i) EXPECT_LE(dev.max_workgroup_size[i], dev.max_workgroup_invocations);
    EXPECT_EQ(dev.subgroup_arithmetic, real.subgroup_arithmetic && !want.no_subgroup_operations);
    EXPECT_EQ(ctx.features().storage_buffer_16bit,
              context().features().storage_buffer_16bit && !want.no_storage_16bit);
    EXPECT_EQ(dev.storage_16bit, ctx.features().storage_buffer_16bit);
    if (want.max_workgroup_invocations) {
      expect_error(ErrorCode::out_of_range, "exceeds the limits",
                   [&] { saxpy(ctx, want.max_workgroup_invocations * 2); });
      EXPECT_NO_THROW(saxpy(ctx, want.max_workgroup_invocations));
    }
  }
}

TEST(Devices, NoDriverSaysWhatToInstall) {
  // Point the loader at a driver manifest that does not exist: what a machine without any
  // Vulkan driver looks like.
  const char* old_icd = std::getenv("VK_ICD_FILENAMES");
  const std::string saved = old_icd ? old_icd : "";
  ::setenv("VK_ICD_FILENAMES", "/nonexistent/vkrnn_no_driver.json", 1);
  ::setenv("VK_DRIVER_FILES", "/nonexistent/vkrnn_no_driver.json", 1);
  try {
    list_devices();
    ADD_FAILURE() << "list_devices() succeeded without a driver";
  } catch (const Error& e) {
    EXPECT_TRUE(e.code() == ErrorCode::no_device || e.code() == ErrorCode::vulkan) << e.what();
    EXPECT_NE(std::string(e.what()).find("mesa-vulkan-drivers"), std::string::npos) << e.what();
  }
  ::unsetenv("VK_DRIVER_FILES");
  if (old_icd) ::setenv("VK_ICD_FILENAMES", saved.c_str(), 1); else ::unsetenv("VK_ICD_FILENAMES");
}

TEST(DevicesDeathTest, NoLoaderSaysWhatToInstall) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");  // a fresh process: the loader is loaded once
  EXPECT_EXIT(
      {
        ::setenv("VKRNN_VULKAN_LIBRARY", "/nonexistent/libvulkan.so.1", 1);
        try {
          list_devices();
        } catch (const Error& e) {
          const std::string m = e.what();
          std::_Exit(e.code() == ErrorCode::no_loader && m.find("libvulkan1") != std::string::npos &&
                             m.find("mesa-vulkan-drivers") != std::string::npos
                         ? 0
                         : 3);
        }
        std::_Exit(4);
      },
      ::testing::ExitedWithCode(0), "");
}

// ---------------------------------------------------------------------------- memory

class RoundTrip : public ::testing::TestWithParam<std::size_t> {};

TEST_P(RoundTrip, EveryMemoryPath) {
  const std::size_t bytes = GetParam();
  for (Context* ctx : {&context(), &staging_context()}) {
    SCOPED_TRACE(ctx->impl().allocator->device_tensors_mapped() ? "mapped (UMA)" : "staging");
    const auto data = pattern(bytes / 4, static_cast<std::uint32_t>(bytes));
    auto t = ctx->tensor({bytes / 4}, DType::u32, "roundtrip");
    ctx->write(t, data);
    EXPECT_EQ(ctx->read<std::uint32_t>(t), data) << "Context::write/read";

    const auto data2 = pattern(bytes / 4, 77);
    auto t2 = ctx->tensor({bytes / 4}, DType::u32, "roundtrip2");
    auto seq = ctx->sequence();
    seq.upload(t2, data2).copy(t2, t).download(t);
    seq.eval();
    EXPECT_EQ(seq.read<std::uint32_t>(t), data2) << "Sequence upload/copy/download";
  }
}
INSTANTIATE_TEST_SUITE_P(Sizes, RoundTrip,
                         ::testing::Values(4, 12, 1000, 4100, 65540, 1u << 20, (64u << 20) + 12),
                         [](const auto& info) { return std::to_string(info.param) + "B"; });

TEST(Memory, RoundTrip256MiBOnBothPaths) {
  const std::size_t words = (256u << 20) / 4;
  for (Context* ctx : {&context(), &staging_context()}) {
    const auto data = pattern(words, 0xabcdef);
    auto t = ctx->tensor({words}, DType::u32, "big");
    ctx->write(t, data);
    const auto back = ctx->read<std::uint32_t>(t);
    EXPECT_TRUE(back == data);
  }
}

TEST(Memory, StagingContextReallyUsesStaging) {
  auto t = staging_context().tensor({16});
  EXPECT_EQ(t.storage().buffer.mapped, nullptr);
  if (context().device().unified_memory) {
    auto u = context().tensor({16});
    EXPECT_NE(u.storage().buffer.mapped, nullptr);
  }
}

TEST(Memory, TensorsAreSubAllocatedFromFewBlocks) {
  auto& ctx = context();
  const auto before = ctx.memory_stats();
  {
    std::vector<Tensor> many;
    for (int i = 0; i < 2000; ++i) many.push_back(ctx.tensor({std::size_t(1 + i % 97)}));
    const auto during = ctx.memory_stats();
    EXPECT_EQ(during.live_buffers, before.live_buffers + 2000);
    EXPECT_LE(during.device_memory_blocks, before.device_memory_blocks + 1);
  }
  const auto after = ctx.memory_stats();
  EXPECT_EQ(after.live_buffers, before.live_buffers);
  EXPECT_EQ(after.live_buffer_bytes, before.live_buffer_bytes);
}

// llvmpipe compiles a shader again for each (buffer size a power of two, view size with bits
// 8-15 all zero) bound to a texel binding: device buffers on CPU drivers are sized so that
// neither varies (vk::texel_view_buffer_size), which kept the texel-loading GEMVs at one compile
// per pipeline.
TEST(Memory, TexelViewBufferSizesKeepOneShaderVariant) {
  for (VkDeviceSize bytes = 1; bytes < 300000; bytes += bytes < 4096 ? 1 : 97) {
    for (VkDeviceSize b : {bytes, VkDeviceSize(1) << (bytes % 40), (VkDeviceSize(1) << (bytes % 40)) + 1}) {
      const VkDeviceSize s = vk::texel_view_buffer_size(b);
      ASSERT_GE(s, b);
      ASSERT_LT(s - b, 288u) << b;
      ASSERT_EQ(s % 16, 0u) << b;
      ASSERT_FALSE(std::has_single_bit(s)) << b;
      ASSERT_NE(s >> 8 & 0xff, 0u) << b;
    }
  }
  auto& ctx = context();
  if (ctx.device().type != DeviceType::cpu) GTEST_SKIP() << "CPU drivers only";
  for (std::size_t n : {1u, 4u, 64u, 1024u, 16384u, 1000000u}) {
    const Tensor t = ctx.tensor({n});
    EXPECT_EQ(t.storage().buffer.size, vk::texel_view_buffer_size(n * 4)) << n;
  }
}

TEST(Memory, FreedSpaceIsReused) {
  auto& ctx = context();
  const auto base = ctx.memory_stats().device_memory_blocks;
  for (int round = 0; round < 50; ++round) {
    std::vector<Tensor> ts;
    for (int i = 0; i < 40; ++i) ts.push_back(ctx.tensor({std::size_t(1000 + 37 * i)}));
  }
  EXPECT_LE(ctx.memory_stats().device_memory_blocks, base + 1);
}

TEST(Memory, EmptyTensorsWork) {
  auto& ctx = context();
  auto t = ctx.tensor({0, 5});
  EXPECT_EQ(t.bytes(), 0u);
  ctx.write(t, std::vector<float>{});
  EXPECT_TRUE(ctx.read<float>(t).empty());
}

TEST(Memory, ReshapeSharesStorage) {
  auto& ctx = context();
  auto t = ctx.tensor({2, 3}, std::vector<float>{1, 2, 3, 4, 5, 6});
  auto r = t.reshaped({3, 2});
  EXPECT_EQ(r.dim(0), 3u);
  EXPECT_EQ(ctx.read<float>(r), (std::vector<float>{1, 2, 3, 4, 5, 6}));
  expect_error(ErrorCode::invalid_argument, "cannot reshape", [&] { (void)t.reshaped({4}); });
}

// ---------------------------------------------------------------------------- dispatch

TEST(Dispatch, SaxpyCheckedElementByElement) {
  for (Context* ctx : {&context(), &staging_context()}) {
    const std::uint32_t n = 100003;
    const auto x = test::random_floats(n, 1);
    const auto y = test::random_floats(n, 2);
    auto tx = ctx->tensor({n}, x, "x");
    auto ty = ctx->tensor({n}, y, "y");
    auto seq = ctx->sequence();
    record_saxpy(seq, saxpy(*ctx, 128), tx, ty, 0.75f);
    seq.download(ty);
    seq.eval();
    const auto r = seq.read<float>(ty);
    for (std::uint32_t i = 0; i < n; ++i) {
      const double ref = 0.75 * double(x[i]) + double(y[i]);
      ASSERT_NEAR(r[i], ref, 1e-6 * (1.0 + std::abs(ref))) << "element " << i;
    }
  }
}

TEST(Dispatch, SpecializedWorkgroupSizes1To1024) {
  auto& ctx = context();
  const std::uint32_t n = 5003;  // prime: never a multiple of the workgroup
  std::vector<float> x(n), y(n);
  for (std::uint32_t i = 0; i < n; ++i) {
    x[i] = float(i % 17);
    y[i] = float(i % 5);
  }
  auto tx = ctx.tensor({n}, x);
  for (std::uint32_t wg : {1u, 2u, 3u, 7u, 8u, 13u, 32u, 64u, 100u, 128u, 255u, 256u, 512u, 1000u, 1024u}) {
    if (wg > ctx.device().max_workgroup_invocations || wg > ctx.device().max_workgroup_size[0]) continue;
    SCOPED_TRACE(wg);
    auto ty = ctx.tensor({n}, y);
    auto seq = ctx.sequence();
    record_saxpy(seq, saxpy(ctx, wg), tx, ty, 2.0f);
    seq.download(ty).eval();
    const auto r = seq.read<float>(ty);
    for (std::uint32_t i = 0; i < n; ++i) ASSERT_EQ(r[i], 2.0f * x[i] + y[i]) << "element " << i;
  }
  const auto too_big = ctx.device().max_workgroup_invocations + 1;
  expect_error(ErrorCode::out_of_range, "exceeds the limits", [&] { saxpy(ctx, too_big); });
}

// Every op plans with the subgroup size the device reports (dims-loop bounds, single-subgroup
// workgroups without barriers, lanes per row); a shader binary that runs with another size
// gives wrong numbers somewhere far away. This names it: what shaders see (shaders/
// subgroup_probe.comp), for several workgroup sizes, against DeviceInfo.
TEST(Dispatch, ShadersSeeTheReportedSubgroupSize) {
  auto& ctx = context();
  const DeviceInfo& dev = ctx.device();
  // The ops depend on the subgroup size only where they use subgroup arithmetic.
  if (!dev.subgroup_arithmetic) GTEST_SKIP() << "no subgroup arithmetic in compute shaders";
  ASSERT_GT(dev.subgroup_size, 0u);
  const std::uint32_t lo = dev.min_subgroup_size ? dev.min_subgroup_size : dev.subgroup_size;
  const std::uint32_t hi = std::max(dev.max_subgroup_size, dev.subgroup_size);
  const std::uint32_t max_wg = std::min(dev.max_workgroup_invocations, dev.max_workgroup_size[0]);
  auto probe = [&](std::uint32_t wg, std::uint32_t mode) {
    auto seen = ctx.tensor({wg, 4}, DType::u32, "seen");
    auto seq = ctx.sequence();
    seq.dispatch(ctx.kernel({"subgroup_probe", {wg, mode}, 1, 0}), {out(seen)},
                 std::span<const std::byte>(), {1, 1, 1});
    seq.download(seen).eval();
    return seq.read<std::uint32_t>(seen);
  };
  // Only the shapes the ops use: a workgroup within one subgroup, or whole subgroups (every
  // plan's workgroup is a power of two, as every subgroup size is). With a partial last
  // subgroup lavapipe (Mesa 22.3) reports floor(workgroup / size) in gl_NumSubgroups.
  for (std::uint32_t wg : {1u, 3u, dev.subgroup_size, 2 * dev.subgroup_size, 64u, 256u}) {
    if (wg > max_wg) continue;
    SCOPED_TRACE(fmt::format("workgroup {}", wg));
    const auto r = probe(wg, 0);
    const std::uint32_t size = r[0];
    ASSERT_TRUE(size >= lo && size <= hi)
        << "gl_SubgroupSize is " << size << "; '" << dev.name << "' reports " << lo << ".." << hi;
    if (lo == hi) {
      ASSERT_EQ(size, dev.subgroup_size);
    }
    std::set<std::pair<std::uint32_t, std::uint32_t>> ids;
    for (std::uint32_t i = 0; i < wg; ++i) {
      ASSERT_EQ(r[4 * i], size) << "invocation " << i;
      ASSERT_EQ(r[4 * i + 1], (wg + size - 1) / size) << "gl_NumSubgroups, invocation " << i;
      ASSERT_LT(r[4 * i + 2], r[4 * i + 1]) << "gl_SubgroupID, invocation " << i;
      ASSERT_LT(r[4 * i + 3], size) << "gl_SubgroupInvocationID, invocation " << i;
      ASSERT_TRUE(ids.emplace(r[4 * i + 2], r[4 * i + 3]).second) << "invocation " << i;
    }
    // Lanes counted by subgroupAdd, in a binary whose code does not name the size.
    const auto lanes = probe(wg, 1);
    for (std::uint32_t i = 0; i < wg; ++i) {
      ASSERT_TRUE(lanes[4 * i] == std::min(wg, size) || (lo != hi && lanes[4 * i] <= hi))
          << "a subgroup of " << lanes[4 * i] << " active lanes in a workgroup of " << wg
          << " on '" << dev.name << "' (subgroup size " << size
          << "): the binary was built for another subgroup size (a stale shader cache?)";
    }
  }
}

TEST(Dispatch, ByteSpansArePushedAsData) {
  auto& ctx = context();
  auto tx = ctx.tensor({8}, std::vector<float>(8, 1.0f));
  auto ty = ctx.tensor({8}, std::vector<float>(8, 0.0f));
  const std::array<SaxpyPush, 1> push{{{8, 6.0f}}};
  auto seq = ctx.sequence();
  // A span of bytes is the data, never the span object itself (whose size happens to be 16).
  seq.dispatch(saxpy(ctx, 8), {in(tx), inout(ty)}, std::as_bytes(std::span(push)), {1, 1, 1});
  seq.download(ty).eval();
  EXPECT_EQ(seq.read<float>(ty)[7], 6.0f);
}

TEST(Dispatch, KernelsAreCachedBySpec) {
  auto& ctx = context();
  auto a = saxpy(ctx, 64);
  auto b = saxpy(ctx, 64);
  auto c = saxpy(ctx, 32);
  EXPECT_EQ(&a.impl(), &b.impl());
  EXPECT_NE(&a.impl(), &c.impl());
}

TEST(Dispatch, FoldedGridAndZeroGroups) {
  auto& ctx = context();
  const std::uint32_t n = 70000;
  std::vector<float> x(n, 1.0f), y(n, 0.0f);
  auto tx = ctx.tensor({n}, x);
  auto ty = ctx.tensor({n}, y);
  auto k = saxpy(ctx, 8);
  auto seq = ctx.sequence();
  // 70000 / 8 = 8750 groups laid out as 1000 x 9: the shader folds y into the index.
  seq.dispatch(k, {in(tx), inout(ty)}, SaxpyPush{n, 3.0f}, {1000, 9, 1});
  seq.dispatch(k, {in(tx), inout(ty)}, SaxpyPush{n, 100.0f}, {0, 1, 1});  // no work
  seq.download(ty).eval();
  EXPECT_EQ(seq.stats().dispatches, 1u);
  const auto r = seq.read<float>(ty);
  EXPECT_TRUE(std::all_of(r.begin(), r.end(), [](float v) { return v == 3.0f; }));
}

TEST(Dispatch, IndirectDispatch) {
  auto& ctx = context();
  const std::uint32_t n = 1000;
  auto tx = ctx.tensor({n}, std::vector<float>(n, 1.0f));
  auto ty = ctx.tensor({n}, std::vector<float>(n, 0.0f));
  auto groups = ctx.tensor({3}, DType::u32);
  auto k = saxpy(ctx, 64);
  auto seq = ctx.sequence();
  seq.upload(groups, std::vector<std::uint32_t>{(n + 63) / 64, 1, 1});
  const Arg args[] = {in(tx), inout(ty)};
  const SaxpyPush push{n, 5.0f};
  seq.dispatch_indirect(k, args, std::as_bytes(std::span(&push, 1)), groups);
  seq.download(ty).eval();
  const auto r = seq.read<float>(ty);
  EXPECT_TRUE(std::all_of(r.begin(), r.end(), [](float v) { return v == 5.0f; }));
}

// ---------------------------------------------------------------------------- barriers

// The recorder's barrier placement, tested directly: lavapipe runs dispatches in order and its
// validation misses compute->compute hazards, so results alone cannot prove it.
TEST(Barriers, ExactlyWhereHazardsAre) {
  auto& ctx = context();
  auto k = saxpy(ctx, 64);
  auto a = ctx.tensor({256}), b = ctx.tensor({256}), c = ctx.tensor({256}), d = ctx.tensor({256});
  auto count = [&](auto&& record) {
    auto seq = ctx.sequence();
    record(seq);
    seq.eval();
    return seq.stats().barriers;
  };
  const SaxpyPush p{256, 1.0f};
  // The barriers between two dispatches with these bindings.
  auto count_pair = [&](std::initializer_list<Arg> first, std::initializer_list<Arg> second) {
    return count([&](Sequence& s) {
      s.dispatch(k, first, p, {4, 1, 1});
      s.dispatch(k, second, p, {4, 1, 1});
    });
  };
  EXPECT_EQ(count_pair({in(a), inout(b)}, {in(c), inout(d)}), 0u);  // independent writes
  EXPECT_EQ(count_pair({in(a), inout(b)}, {in(a), inout(c)}), 0u);  // read after read
  EXPECT_EQ(count_pair({in(a), inout(b)}, {in(b), inout(c)}), 1u);  // read after write
  EXPECT_EQ(count_pair({in(a), inout(b)}, {in(c), inout(a)}), 1u);  // write after read
  EXPECT_EQ(count_pair({in(a), out(b)}, {in(c), out(b)}), 1u);      // write after write
  // Transfer -> compute and compute -> transfer.
  EXPECT_EQ(count([&](Sequence& s) {
              s.upload(a, std::vector<float>(256, 1.0f));
              s.dispatch(k, {in(a), inout(b)}, p, {4, 1, 1});
              s.copy(b, c);
            }), 2u);
  // One barrier resolves all pending hazards: a chain of three then an independent pair.
  EXPECT_EQ(count([&](Sequence& s) {
              s.dispatch(k, {in(a), inout(b)}, p, {4, 1, 1});
              s.dispatch(k, {in(c), inout(d)}, p, {4, 1, 1});
              s.dispatch(k, {in(b), inout(c)}, p, {4, 1, 1});  // RAW on b (and WAR on c)
              s.dispatch(k, {in(d), inout(a)}, p, {4, 1, 1});  // d was synced by that barrier
            }), 1u);
}

TEST(Barriers, LongDependentChainIsExact) {
  for (Context* ctx : {&context(), &staging_context()}) {
    const std::uint32_t n = 4099;
    std::vector<float> x(n), y(n);
    for (std::uint32_t i = 0; i < n; ++i) {
      x[i] = float(i % 3);
      y[i] = float(i % 11);
    }
    auto tx = ctx->tensor({n}, x), ty = ctx->tensor({n}, y), tz = ctx->tensor({n});
    auto k = saxpy(*ctx, 32);
    auto seq = ctx->sequence();
    seq.fill(tz, 0);
    for (int i = 0; i < 50; ++i) {
      record_saxpy(seq, k, tx, ty, 1.0f);  // y += x
      record_saxpy(seq, k, ty, tz, 1.0f);  // z += y
    }
    seq.download(tz).eval();
    // Every dispatch but the first depends on the one before (99); the download adds a
    // compute->host barrier, and on the staging path first a compute->transfer one.
    const bool mapped = tz.storage().buffer.mapped != nullptr;
    EXPECT_EQ(seq.stats().barriers, 99u + (mapped ? 1u : 2u));
    const auto z = seq.read<float>(tz);
    for (std::uint32_t i = 0; i < n; ++i) {
      // z = sum_{j=1..50} (y0 + j x) = 50 y0 + 1275 x (exact in fp32 for these integers)
      ASSERT_EQ(z[i], 50.0f * y[i] + 1275.0f * x[i]) << i;
    }
  }
}

// ---------------------------------------------------------------------------- sequences

TEST(Sequence, AsynchronousSubmitPollAndReuse) {
  auto& ctx = context();
  const std::uint32_t n = 1 << 16;
  auto tx = ctx.tensor({n}, std::vector<float>(n, 1.0f));
  auto ty = ctx.tensor({n}, std::vector<float>(n, 0.0f));
  auto k = saxpy(ctx, 64);
  auto seq = ctx.sequence({.label = "async"});
  for (int i = 0; i < 20; ++i) record_saxpy(seq, k, tx, ty, 1.0f);
  seq.download(ty);
  seq.submit();
  // A frame loop would do other work here; poll until done without blocking.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!seq.done() && std::chrono::steady_clock::now() < deadline) {
  }
  ASSERT_TRUE(seq.done());
  EXPECT_TRUE(seq.wait(0));
  EXPECT_EQ(seq.read<float>(ty)[n - 1], 20.0f);
  // Submitting the same recording again replays it.
  seq.submit();
  seq.wait();
  EXPECT_EQ(seq.read<float>(ty)[0], 40.0f);
  EXPECT_EQ(seq.stats().submissions, 2u);
  // reset() allows a new recording.
  seq.reset();
  record_saxpy(seq, k, tx, ty, -40.0f);
  seq.download(ty).eval();
  EXPECT_EQ(seq.read<float>(ty)[7], 0.0f);
}

// ---------------------------------------------------------------------------- gate

// y += x per step, a gated loop of `steps` steps whose flags become all set (a fill recorded in
// the stream: GPU-side, in order) after step `close_after`; the check runs after every step.
std::vector<float> gated_loop(Sequence& seq, Context& ctx, int steps, int close_after, std::size_t flag_words) {
  const std::uint32_t n = 777;  // not a multiple of the workgroup
  auto tx = ctx.tensor({n}, std::vector<float>(n, 1.0f));
  auto ty = ctx.tensor({n}, DType::f32);
  auto flags = ctx.tensor({flag_words}, DType::u32);
  auto k64 = saxpy(ctx, 64);
  auto k32 = saxpy(ctx, 32);
  seq.fill(ty, 0).fill(flags, 0);
  EXPECT_FALSE(seq.has_gate());
  seq.begin_gate();
  EXPECT_TRUE(seq.gate_open());
  EXPECT_TRUE(seq.has_gate());
  for (int i = 0; i < steps; ++i) {
    // Two grids (13 and 25 workgroups): two table slots, each must keep its own counts.
    record_saxpy(seq, i % 2 ? k64 : k32, tx, ty, 1.0f);
    if (i == close_after) seq.fill(flags, 1);
    seq.close_gate_when_all(flags);
  }
  seq.end_gate();
  EXPECT_FALSE(seq.gate_open());
  EXPECT_TRUE(seq.has_gate());  // ended, still this recording's one region
  seq.download(ty);
  seq.eval();
  return seq.read<float>(ty);
}

TEST(Gate, OpenGateRunsEveryDispatch) {
  auto& ctx = context();
  auto seq = ctx.sequence({.label = "gate open"});
  const auto y = gated_loop(seq, ctx, 9, 100, 5);
  EXPECT_TRUE(std::all_of(y.begin(), y.end(), [](float v) { return v == 9.0f; })) << y[0];
  EXPECT_EQ(seq.stats().gated_dispatches, 9u);
  EXPECT_EQ(seq.stats().dispatches, 18u);  // 9 gated + 9 checks
  EXPECT_EQ(seq.open_gate_checks(), 9u);
  EXPECT_EQ(seq.stats().submissions, 1u);
}

TEST(Gate, ClosedGateSkipsTheRestOnTheGpu) {
  auto& ctx = context();
  for (int close_after : {0, 1, 4, 8}) {
    for (std::size_t words : {std::size_t{1}, std::size_t{64}, std::size_t{1001}}) {
      auto seq = ctx.sequence({.label = "gate closes"});
      const auto y = gated_loop(seq, ctx, 9, close_after, words);
      const float expected = static_cast<float>(close_after + 1);
      EXPECT_TRUE(std::all_of(y.begin(), y.end(), [&](float v) { return v == expected; }))
          << "close after " << close_after << ", " << words << " flags: y = " << y[0];
      EXPECT_EQ(seq.stats().gated_dispatches, 9u);
      EXPECT_EQ(seq.open_gate_checks(), static_cast<std::uint32_t>(close_after));
    }
  }
}

TEST(Gate, PartlySetFlagsKeepItOpen) {
  auto& ctx = context();
  // One flag of 200 left zero: the check must see it whichever invocation reads it.
  const std::uint32_t n = 100;
  for (std::size_t zero_at : {std::size_t{0}, std::size_t{63}, std::size_t{64}, std::size_t{199}}) {
    auto tx = ctx.tensor({n}, std::vector<float>(n, 1.0f));
    auto ty = ctx.tensor({n}, std::vector<float>(n, 0.0f));
    std::vector<std::uint32_t> f(200, 7);
    f[zero_at] = 0;
    auto flags = ctx.tensor({200}, DType::u32);
    auto seq = ctx.sequence();
    seq.upload(flags, f).begin_gate();
    for (int i = 0; i < 3; ++i) {
      record_saxpy(seq, saxpy(ctx), tx, ty, 1.0f);
      seq.close_gate_when_all(flags);
    }
    seq.end_gate().download(ty).eval();
    EXPECT_EQ(seq.read<float>(ty)[n - 1], 3.0f) << "zero flag at " << zero_at;
    EXPECT_EQ(seq.open_gate_checks(), 3u);
  }
}

TEST(Gate, ReplayReopensAndUngatedWorkAlwaysRuns) {
  auto& ctx = context();
  const std::uint32_t n = 64;
  auto tx = ctx.tensor({n}, std::vector<float>(n, 1.0f));
  auto ty = ctx.tensor({n}, DType::f32);
  auto tz = ctx.tensor({n}, DType::f32);
  auto flags = ctx.tensor({2}, DType::u32);
  auto k = saxpy(ctx);
  auto seq = ctx.sequence();
  seq.fill(ty, 0).fill(tz, 0).fill(flags, 1);
  record_saxpy(seq, k, tx, tz, 1.0f);  // before the gate: runs
  seq.begin_gate();
  record_saxpy(seq, k, tx, ty, 1.0f);  // runs: the check comes after it
  seq.close_gate_when_all(flags);
  record_saxpy(seq, k, tx, ty, 1.0f);  // skipped
  seq.end_gate();
  record_saxpy(seq, k, tx, tz, 1.0f);  // after the gate: runs although it is closed
  seq.download(ty).download(tz).eval();
  EXPECT_EQ(seq.read<float>(ty)[5], 1.0f);
  EXPECT_EQ(seq.read<float>(tz)[5], 2.0f);
  // A replay starts with the table refilled: the first gated dispatch runs again.
  seq.submit();
  seq.wait();
  EXPECT_EQ(seq.read<float>(ty)[5], 1.0f);  // ty was filled with 0 again at the start
  EXPECT_EQ(seq.read<float>(tz)[5], 2.0f);
  EXPECT_EQ(seq.open_gate_checks(), 0u);  // the counter restarts too
  EXPECT_EQ(seq.stats().submissions, 2u);
  // reset() allows a new gate region.
  seq.reset();
  seq.fill(flags, 0).begin_gate();
  record_saxpy(seq, k, tx, ty, 1.0f);
  seq.close_gate_when_all(flags);
  seq.end_gate().download(ty).eval();
  EXPECT_EQ(seq.read<float>(ty)[0], 2.0f);
}

TEST(Gate, Misuse) {
  auto& ctx = context();
  auto seq = ctx.sequence({.label = "gate misuse"});
  auto flags = ctx.tensor({4}, DType::u32);
  auto floats = ctx.tensor({4}, DType::f32);
  expect_error(ErrorCode::state, "outside begin_gate", [&] { seq.close_gate_when_all(flags); });
  expect_error(ErrorCode::state, "without begin_gate", [&] { seq.end_gate(); });
  expect_error(ErrorCode::state, "needs a begin_gate", [&] { seq.open_gate_checks(); });
  seq.begin_gate();
  expect_error(ErrorCode::state, "one gate region", [&] { seq.begin_gate(); });
  expect_error(ErrorCode::invalid_argument, "must be u32 or i32", [&] { seq.close_gate_when_all(floats); });
  // Distinct grids beyond the table: a clear error, not a silent overflow.
  auto tx = ctx.tensor({1}, std::vector<float>{1.0f});
  auto ty = ctx.tensor({1}, std::vector<float>{0.0f});
  auto k = saxpy(ctx, 1);
  const SaxpyPush push{1, 1.0f};
  const Arg args[] = {in(tx), inout(ty)};
  for (std::uint32_t g = 1; g <= Sequence::max_gate_grids; ++g) {
    seq.dispatch(k, args, std::as_bytes(std::span(&push, 1)), {1, g, 1});
  }
  expect_error(ErrorCode::out_of_range, "distinct workgroup grids", [&] {
    seq.dispatch(k, args, std::as_bytes(std::span(&push, 1)), {2, 1, 1});
  });
  seq.end_gate();
  EXPECT_EQ(seq.stats().gated_dispatches, Sequence::max_gate_grids);
  seq.download(ty).eval();
  EXPECT_EQ(seq.read<float>(ty)[0], static_cast<float>(Sequence::max_gate_grids));
}

TEST(Sequence, KeepsTensorsAliveUntilDone) {
  auto& ctx = context();
  auto seq = ctx.sequence();
  Tensor result;
  {
    auto tx = ctx.tensor({1000}, std::vector<float>(1000, 2.0f));
    result = ctx.tensor({1000}, std::vector<float>(1000, 1.0f));
    record_saxpy(seq, saxpy(ctx), tx, result, 3.0f);
  }  // tx's handle is gone; the sequence still holds it
  seq.download(result).eval();
  EXPECT_EQ(seq.read<float>(result)[999], 7.0f);
}

TEST(Sequence, Timestamps) {
  auto& ctx = context();
  if (!ctx.device().timestamps) GTEST_SKIP() << "device has no compute timestamps";
  const std::uint32_t n = 1 << 20;
  auto tx = ctx.tensor({n}, std::vector<float>(n, 1.0f));
  auto ty = ctx.tensor({n}, std::vector<float>(n, 0.0f));
  auto k = saxpy(ctx, 64);
  auto seq = ctx.sequence({.profile = true});
  for (int i = 0; i < 3; ++i) record_saxpy(seq, k, tx, ty, 1.0f);
  const auto t0 = std::chrono::steady_clock::now();
  seq.eval();
  const double wall_ns = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count();
  const auto t = seq.timings();
  ASSERT_EQ(t.size(), 3u);
  double total = 0;
  for (const auto& d : t) {
    EXPECT_EQ(d.kernel, "saxpy");
    EXPECT_GT(d.gpu_ns, 0.0);  // end stamp after start stamp
    total += d.gpu_ns;
  }
  // The GPU cannot have spent longer than the host waited (10% slack for clock differences).
  EXPECT_LT(total, wall_ns * 1.1) << "gpu " << total << " ns vs wall " << wall_ns << " ns";
}

// ---------------------------------------------------------------------------- pipeline cache

TEST(PipelineCache, WrittenReusedAndCorruptFilesSurvived) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::path(test::binary_path("test-pipeline-cache"));
  fs::remove_all(dir);
  auto opts = test::validated_options();
  opts.cache_dir = dir.string();
  std::string path;
  {
    Context a(opts);
    saxpy(a, 64);
    path = a.pipeline_cache_path();
    EXPECT_FALSE(a.pipeline_cache_loaded());
  }  // saved on destruction
  ASSERT_TRUE(fs::exists(path)) << path;
  EXPECT_GE(fs::file_size(path), 32u);
  {
    Context b(opts);
    EXPECT_TRUE(b.pipeline_cache_loaded());
    EXPECT_EQ(b.pipeline_cache_path(), path);
  }
  for (const std::string& junk : {std::string("garbage"), std::string(4096, '\xff'), std::string(40, '\0')}) {
    { std::ofstream(path, std::ios::binary | std::ios::trunc) << junk; }
    Context c(opts);
    EXPECT_FALSE(c.pipeline_cache_loaded());
    // Still fully working.
    auto tx = c.tensor({10}, std::vector<float>(10, 1.0f));
    auto ty = c.tensor({10}, std::vector<float>(10, 1.0f));
    auto seq = c.sequence();
    record_saxpy(seq, saxpy(c, 16), tx, ty, 1.0f);
    seq.download(ty).eval();
    EXPECT_EQ(seq.read<float>(ty)[9], 2.0f);
  }
  // The last context rewrote a valid file.
  Context d(opts);
  EXPECT_TRUE(d.pipeline_cache_loaded());
  opts.disable_pipeline_cache = true;
  Context e(opts);
  EXPECT_EQ(e.pipeline_cache_path(), "");
}

// ---------------------------------------------------------------------------- adoption

// What a game does: it owns the instance, device and queue; vkrnn borrows them.
TEST(Adoption, AppOwnedHandlesAreUsedAndNeverDestroyed) {
  test::AppDevice app(/*validation=*/true);
  const ExternalDevice extdev = app.external();
  const VkDevice device = app.device();
  const auto nf = app.queue_family_count();
  {
    auto ctx = Context::adopt(extdev, {.disable_pipeline_cache = true});
    EXPECT_FALSE(ctx.owns_device());
    EXPECT_EQ(ctx.vk_device(), device);
    EXPECT_FALSE(ctx.features().storage_buffer_16bit);  // not declared by the app
    const std::uint32_t len = 3001;
    auto tx = ctx.tensor({len}, std::vector<float>(len, 2.0f));
    auto ty = ctx.tensor({len}, std::vector<float>(len, 1.0f));
    auto seq = ctx.sequence();
    record_saxpy(seq, saxpy(ctx, 64), tx, ty, 4.0f);
    seq.download(ty).eval();
    const auto r = seq.read<float>(ty);
    EXPECT_TRUE(std::all_of(r.begin(), r.end(), [](float v) { return v == 9.0f; }));

    // Misdeclared or unusable handles are refused with reasons.
    auto bad = extdev;
    bad.api_version = VK_API_VERSION_1_0;
    expect_error(ErrorCode::missing_feature, "apiVersion < 1.1", [&] { Context::adopt(bad); });
    bad = extdev;
    bad.queue_family = nf + 3;
    expect_error(ErrorCode::missing_feature, "does not support compute", [&] { Context::adopt(bad); });
    bad = extdev;
    bad.queue_index = 99;
    expect_error(ErrorCode::invalid_argument, "queue index 99", [&] { Context::adopt(bad); });
    bad = extdev;
    bad.device = VK_NULL_HANDLE;
    expect_error(ErrorCode::invalid_argument, "ExternalDevice needs", [&] { Context::adopt(bad); });
  }
  // The app's device still works after vkrnn is gone, and destroying it reports no leaked
  // child objects (the layer would say so through the app's messenger).
  EXPECT_EQ(app.fns().vkDeviceWaitIdle(device), VK_SUCCESS);
  app.destroy();
  EXPECT_TRUE(app.messages().empty()) << app.messages().front();
}

// An engine that loads Vulkan its own way (volk, its own loader) hands over its
// vkGetInstanceProcAddr: vkrnn resolves every instance and device function through it. (That it
// then needs no loader of its own at all is checked in a process without one: tests/c_api.)
std::atomic<int> app_gipa_calls{0};
VKAPI_ATTR PFN_vkVoidFunction VKAPI_CALL app_get_instance_proc_addr(VkInstance instance, const char* name) {
  ++app_gipa_calls;
  return vk::global_fns().vkGetInstanceProcAddr(instance, name);
}

TEST(Adoption, ThroughTheAppsGetInstanceProcAddr) {
  test::AppDevice app;
  ExternalDevice extdev = app.external();
  extdev.get_instance_proc_addr = app_get_instance_proc_addr;
  app_gipa_calls = 0;
  auto ctx = Context::adopt(extdev, {.disable_pipeline_cache = true});
  EXPECT_GT(app_gipa_calls.load(), 0);
  auto t = ctx.tensor({5}, std::vector<float>{1, 2, 3, 4, 5});
  EXPECT_EQ(ctx.read<float>(t), (std::vector<float>{1, 2, 3, 4, 5}));
}

// ---------------------------------------------------------------------------- misuse

TEST(Misuse, DocumentedErrors) {
  auto& ctx = context();
  const auto& dev = ctx.device();
  expect_error(ErrorCode::out_of_range, "maxMemoryAllocationSize",
               [&] { ctx.tensor({std::size_t(1) << 46}, DType::f32, "huge"); });
  expect_error(ErrorCode::not_found, "no embedded shader named 'nope'", [&] { ctx.kernel({"nope", {64, 1, 1}, 1, 0}); });
  auto k = saxpy(ctx);
  auto a = ctx.tensor({64}), b = ctx.tensor({64});
  auto seq = ctx.sequence({.label = "misuse"});
  expect_error(ErrorCode::invalid_argument, "takes 2 buffers, 1 given",
               [&] { seq.dispatch(k, {in(a)}, SaxpyPush{64, 1.0f}, {1, 1, 1}); });
  expect_error(ErrorCode::invalid_argument, "takes 8 bytes of push constants, 4 given",
               [&] { seq.dispatch(k, {in(a), inout(b)}, std::uint32_t{64}, {1, 1, 1}); });
  expect_error(ErrorCode::out_of_range, "maxComputeWorkGroupCount", [&] {
    seq.dispatch(k, {in(a), inout(b)}, SaxpyPush{64, 1.0f}, {dev.max_workgroup_count[0] + 1u, 1, 1});
  });
  expect_error(ErrorCode::invalid_argument, "empty tensor",
               [&] { seq.dispatch(k, {in(a), inout(Tensor{})}, SaxpyPush{64, 1.0f}, {1, 1, 1}); });
  expect_error(ErrorCode::state, "not download()ed", [&] { seq.read<float>(a); });
  seq.download(a);
  expect_error(ErrorCode::state, "before the sequence finished", [&] { seq.read<float>(a); });
  seq.eval();
  expect_error(ErrorCode::state, "call reset()", [&] { seq.fill(a); });
  expect_error(ErrorCode::invalid_argument, "upload of 8 bytes",
               [&] { ctx.sequence().upload(a, std::vector<float>(2)); });
  expect_error(ErrorCode::invalid_argument, "sizes differ", [&] { ctx.sequence().copy(a, ctx.tensor({3})); });
  expect_error(ErrorCode::invalid_argument, "belongs to another vkrnn::Context",
               [&] { ctx.sequence().copy(a, staging_context().tensor({64})); });
  expect_error(ErrorCode::invalid_argument, "4 bytes given", [&] { ctx.write(a, std::vector<float>(1)); });
  expect_error(ErrorCode::invalid_argument, "3 values given for 4 elements",
               [&] { ctx.tensor({2, 2}, std::vector<float>(3)); });
}

TEST(Misuse, BindingBeyondMaxStorageBufferRange) {
  auto& ctx = context();
  const auto range = ctx.device().max_storage_buffer_range;
  if (range >= (std::uint64_t(1) << 31)) GTEST_SKIP() << "range too large to exceed cheaply";
  auto big = ctx.tensor({range / 4 + 1}, DType::f32, "too_big_to_bind");
  auto small = ctx.tensor({16});
  auto seq = ctx.sequence();
  expect_error(ErrorCode::out_of_range, "exceeds maxStorageBufferRange",
               [&] { seq.dispatch(saxpy(ctx), {in(big), inout(small)}, SaxpyPush{16, 1.0f}, {1, 1, 1}); });
}

// The harness itself: a real validation error reaches the sink (so a test would fail).
TEST(Validation, LayerMessagesReachTheSink) {
  if (test::validation_disabled()) GTEST_SKIP() << "validation disabled";
  std::vector<std::string> seen;
  Context ctx(test::options_collecting_errors(seen));
  VkBufferCreateInfo bi{VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO};
  bi.size = 0;  // invalid: VUID-VkBufferCreateInfo-size-00912
  bi.usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT;
  VkBuffer buf = VK_NULL_HANDLE;
  ctx.impl().fns.vkCreateBuffer(ctx.vk_device(), &bi, nullptr, &buf);
  if (buf) ctx.impl().fns.vkDestroyBuffer(ctx.vk_device(), buf, nullptr);
  ASSERT_FALSE(seen.empty());
  EXPECT_NE(seen.front().find("size"), std::string::npos) << seen.front();
}

// vkrnn-bench's read ceiling (shaders/bench_read.comp: PER vec4s summed per invocation, one sum
// written each) against a double-precision reference, over counts that leave invocations and
// whole workgroups partly or wholly past the end, one-lane workgroups and both read paths.
TEST(BenchShaders, ReadShaderSumsMatchTheReference) {
  struct ReadPush {
    std::uint32_t n;  // vec4s
  };
  Context& ctx = context();
  for (std::uint32_t n : {1u, 7u, 127u, 1000u, 4099u}) {
    std::vector<float> src(std::size_t(n) * 4);
    for (std::size_t i = 0; i < src.size(); ++i) src[i] = static_cast<float>((i * 7919) % 201) / 50.0f - 2.0f;
    const Tensor t = ctx.tensor({src.size()}, src, "bench_read.src");
    const Tensor dummy = ctx.tensor({4}, DType::f32, "bench_read.texel_dummy");
    for (std::uint32_t wg : {1u, 8u, 64u}) {
      for (std::uint32_t per : {1u, 16u, 64u}) {
        for (bool texel : {false, true}) {
          if (texel && !ctx.device().uniform_texel_u32x4) continue;
          SCOPED_TRACE(fmt::format("n {} workgroup {} per {} texel {}", n, wg, per, texel));
          const std::uint32_t groups = (n + wg * per - 1) / (wg * per);
          const Tensor sums = ctx.tensor({std::size_t(groups) * wg * 4}, DType::f32, "bench_read.sums");
          const Kernel k = ctx.kernel({"bench_read", {wg, 1, 1, per, texel ? 1u : 0u}, 3, sizeof(ReadPush)});
          ctx.sequence().dispatch(k, {in(t), out(sums), in(texel ? t : dummy)}, ReadPush{n}, {groups, 1, 1}).eval();
          const std::vector<float> got = ctx.read<float>(sums);
          for (std::size_t inv = 0; inv < std::size_t(groups) * wg; ++inv) {
            for (std::size_t c = 0; c < 4; ++c) {
              double want = 0.0, magnitude = 0.0;
              for (std::size_t j = 0; j < per; ++j) {
                const std::size_t i = inv / wg * wg * per + inv % wg + j * wg;
                if (i >= n) break;
                want += src[i * 4 + c];
                magnitude += std::abs(src[i * 4 + c]);
              }
              ASSERT_NEAR(got[inv * 4 + c], want, 1e-5 * magnitude + 1e-6) << "invocation " << inv << " component " << c;
            }
          }
        }
      }
    }
  }
}
