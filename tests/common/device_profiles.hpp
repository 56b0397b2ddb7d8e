#pragma once
// Devices described from their vendors' published limits (the values their Vulkan drivers
// report, as collected on vulkan.gpuinfo.org; where drivers or versions differ, the more
// constraining value). The planners (src/plan.hpp) are pure functions of a DeviceInfo, so
// tests/test_plan.cpp runs them on all of these without the hardware. What matters is the
// spread: subgroups of 4 to 128 lanes, fixed or varying (size control), shared memory of 16 to
// 64 KiB, workgroups of 128 to 1024 invocations, 4 to millions of storage buffers per stage,
// with and without subgroup arithmetic / shuffles and 16-bit storage, discrete and unified
// memory, CPU drivers.
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include <vulkan/vulkan.h>

#include "vkrnn/device.hpp"

namespace vkrnn::test {

constexpr std::uint32_t kSubgroupAll =
    VK_SUBGROUP_FEATURE_BASIC_BIT | VK_SUBGROUP_FEATURE_VOTE_BIT |
    VK_SUBGROUP_FEATURE_ARITHMETIC_BIT | VK_SUBGROUP_FEATURE_BALLOT_BIT |
    VK_SUBGROUP_FEATURE_SHUFFLE_BIT | VK_SUBGROUP_FEATURE_SHUFFLE_RELATIVE_BIT |
    VK_SUBGROUP_FEATURE_CLUSTERED_BIT | VK_SUBGROUP_FEATURE_QUAD_BIT;
constexpr std::uint32_t kSubgroupNoArithmetic =
    VK_SUBGROUP_FEATURE_BASIC_BIT | VK_SUBGROUP_FEATURE_VOTE_BIT | VK_SUBGROUP_FEATURE_BALLOT_BIT |
    VK_SUBGROUP_FEATURE_SHUFFLE_BIT | VK_SUBGROUP_FEATURE_SHUFFLE_RELATIVE_BIT |
    VK_SUBGROUP_FEATURE_QUAD_BIT;
constexpr std::uint32_t kSubgroupNoShuffle =
    VK_SUBGROUP_FEATURE_BASIC_BIT | VK_SUBGROUP_FEATURE_VOTE_BIT |
    VK_SUBGROUP_FEATURE_ARITHMETIC_BIT | VK_SUBGROUP_FEATURE_BALLOT_BIT;

struct ProfileSpec {
  const char* name;
  Vendor vendor;
  DeviceType type;
  std::uint32_t subgroup, min_subgroup, max_subgroup;
  std::uint32_t subgroup_ops;
  std::uint32_t shared_bytes;
  std::uint32_t invocations;
  std::array<std::uint32_t, 3> workgroup_size;
  std::uint32_t storage_buffers;  // maxPerStageDescriptorStorageBuffers
  bool storage_16bit;
  bool unified_memory;
};

inline DeviceInfo make_profile(const ProfileSpec& p) {
  DeviceInfo d;
  d.name = p.name;
  d.vendor = p.vendor;
  d.type = p.type;
  d.api_version = VK_API_VERSION_1_1;
  d.subgroup_size = p.subgroup;
  d.min_subgroup_size = p.min_subgroup;
  d.max_subgroup_size = p.max_subgroup;
  d.subgroup_in_compute = true;  // Vulkan 1.1 requires subgroups in compute shaders
  d.subgroup_operations = p.subgroup_ops;
  d.subgroup_arithmetic = (p.subgroup_ops & VK_SUBGROUP_FEATURE_ARITHMETIC_BIT) != 0;
  d.max_workgroup_size = p.workgroup_size;
  d.max_workgroup_invocations = p.invocations;
  d.max_workgroup_count = {65535, 65535, 65535};  // the Vulkan minimum
  d.max_shared_memory = p.shared_bytes;
  d.max_push_constants = 128;
  d.max_storage_buffer_range = 1u << 27;
  d.max_memory_allocation_size = 1u << 30;
  d.max_memory_allocation_count = 4096;
  d.non_coherent_atom_size = 64;
  d.min_storage_buffer_offset_alignment = 64;
  d.max_bound_descriptor_sets = 4;
  d.max_storage_buffers_per_stage = p.storage_buffers;
  d.uniform_texel_u32x4 = true;         // mandatory format support
  d.max_texel_buffer_elements = 65536;  // the Vulkan minimum
  d.storage_16bit = p.storage_16bit;
  d.unified_memory = p.unified_memory;
  return d;
}

// Vendor devices, and the Vulkan 1.1 minimum limits.
inline std::vector<DeviceInfo> vendor_profiles() {
  using enum Vendor;
  constexpr auto discrete = DeviceType::discrete, integrated = DeviceType::integrated;
  const ProfileSpec specs[] = {
      {"NVIDIA GeForce RTX 3080 (Ampere)", nvidia, discrete, 32, 32, 32, kSubgroupAll, 49152, 1024,
       {1024, 1024, 64}, 1048576, true, false},
      {"NVIDIA GeForce GTX 1050 (Pascal)", nvidia, discrete, 32, 32, 32, kSubgroupAll, 49152, 1024,
       {1024, 1024, 64}, 1048576, true, false},
      {"AMD Radeon RX 6800 (RDNA2, wave64 default)", amd, discrete, 64, 32, 64, kSubgroupAll, 65536,
       1024, {1024, 1024, 1024}, 8388606, true, false},
      {"AMD Radeon 780M (RDNA3, wave32)", amd, integrated, 32, 32, 64, kSubgroupAll, 65536, 1024,
       {1024, 1024, 1024}, 8388606, true, true},
      {"AMD Radeon RX 580 (GCN4)", amd, discrete, 64, 64, 64, kSubgroupAll, 32768, 1024,
       {1024, 1024, 1024}, 4294967295u, true, false},
      {"Intel UHD Graphics 630 (Gen9.5, SIMD32 reported)", intel, integrated, 32, 8, 32,
       kSubgroupAll, 65536, 1024, {1024, 1024, 1024}, 8192, true, true},
      {"Intel Iris Xe (Gen12, SIMD16)", intel, integrated, 16, 8, 32, kSubgroupAll, 65536, 1024,
       {1024, 1024, 1024}, 8192, true, true},
      {"Intel HD Graphics (Gen8, SIMD8)", intel, integrated, 8, 8, 32, kSubgroupAll, 65536, 896,
       {896, 896, 896}, 8192, true, true},
      {"Intel Arc A770 (Xe-HPG)", intel, discrete, 32, 8, 32, kSubgroupAll, 65536, 1024,
       {1024, 1024, 1024}, 8192, true, false},
      {"Qualcomm Adreno 650 (wave64)", qualcomm, integrated, 64, 64, 128, kSubgroupAll, 32768,
       1024, {1024, 1024, 64}, 24, true, true},
      {"Qualcomm Adreno 740 (wave128)", qualcomm, integrated, 128, 64, 128, kSubgroupAll, 32768,
       1024, {1024, 1024, 64}, 24, true, true},
      {"ARM Mali-G78 (Valhall)", arm, integrated, 16, 16, 16, kSubgroupAll, 32768, 512,
       {512, 512, 512}, 35, true, true},
      {"ARM Mali-G52 (Bifrost, no subgroup arithmetic)", arm, integrated, 8, 8, 8,
       kSubgroupNoArithmetic, 32768, 384, {384, 384, 384}, 35, false, true},
      {"ARM Mali-G71 (Bifrost, 4-wide)", arm, integrated, 4, 4, 4, VK_SUBGROUP_FEATURE_BASIC_BIT,
       32768, 384, {384, 384, 384}, 8, false, true},
      {"Apple M1 (MoltenVK)", apple, integrated, 32, 32, 32, kSubgroupAll,
       32768, 1024, {1024, 1024, 1024}, 31, true, true},
      {"PowerVR-like (no shuffles, 16 KiB)", imagination, integrated, 32, 32, 32,
       kSubgroupNoShuffle, 16384, 512, {512, 512, 64}, 8, true, true},
      {"Vulkan 1.1 minimum limits", other, DeviceType::other, 4, 4, 4,
       VK_SUBGROUP_FEATURE_BASIC_BIT, 16384, 128, {128, 128, 64}, 4, false, false},
      {"lavapipe, 128 bits (4 lanes)", mesa, DeviceType::cpu, 4, 4, 4, kSubgroupAll, 32768, 1024,
       {1024, 1024, 1024}, 1u << 20, true, true},
      {"lavapipe, 256 bits (8 lanes)", mesa, DeviceType::cpu, 8, 8, 8, kSubgroupAll, 32768, 1024,
       {1024, 1024, 1024}, 1u << 20, true, true},
      {"lavapipe, 512 bits (16 lanes)", mesa, DeviceType::cpu, 16, 16, 16, kSubgroupAll, 32768,
       1024, {1024, 1024, 1024}, 1u << 20, true, true},
  };
  std::vector<DeviceInfo> out;
  for (const auto& s : specs) {
    out.push_back(make_profile(s));
    if (s.type == DeviceType::cpu) {  // lavapipe's own texel limit, on 2 threads as in CI
      out.back().max_texel_buffer_elements = 1u << 27;
      out.back().cpu_threads = 2;
    }
  }
  return out;
}

}  // namespace vkrnn::test
