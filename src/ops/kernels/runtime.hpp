#pragma once
// The kernels of the runtime, the tools and the tests rather than of an op: the Sequence's gate
// check (shaders/sequence_gate.comp), the smoke test (saxpy.comp), vkrnn-bench's ceilings
// (bench_copy.comp, bench_read.comp, bench_empty.comp) and the subgroup probe (subgroup_probe.comp). Declared and
// checked like the ops' kernels; their callers (src/vk/sequence.cpp, tools/, bench/, tests/)
// build them from a KernelSpec.
#include <cstdint>

#include "ops/kernel_interface.hpp"
#include "reflect/bench_copy.hpp"
#include "reflect/bench_empty.hpp"
#include "reflect/bench_read.hpp"
#include "reflect/saxpy.hpp"
#include "reflect/sequence_gate.hpp"
#include "reflect/subgroup_probe.hpp"

namespace vkrnn::kernels {

struct SequenceGate {
  VKRNN_KERNEL(sequence_gate, "sequence_gate")
  struct Push {
    std::uint32_t flag_count, table_words;
  };
  VKRNN_PUSH(flag_count, table_words)
  using Constants = Workgroup;
  VKRNN_CONSTANTS(VKRNN_LOCAL_SIZE_IDS)
  struct Bindings {
    Tensor flags, table;
  };
  VKRNN_BINDINGS((flags, read), (table, read_write))
};

struct Saxpy {
  VKRNN_KERNEL(saxpy, "saxpy")
  struct Push {
    std::uint32_t n;
    float a;
  };
  VKRNN_PUSH(n, a)
  using Constants = Workgroup;
  VKRNN_CONSTANTS(VKRNN_LOCAL_SIZE_IDS)
  struct Bindings {
    Tensor x, y;
  };
  VKRNN_BINDINGS((x, read), (y, read_write))
};

struct BenchCopy {
  VKRNN_KERNEL(bench_copy, "bench_copy")
  struct Push {
    std::uint32_t n;
  };
  VKRNN_PUSH(n)
  struct Constants {
    VKRNN_LOCAL_SIZE;
    std::uint32_t PER_INVOCATION = 1;
    bool TEXEL = false;  // src read through srct, a texel view of it
  };
  VKRNN_CONSTANTS(VKRNN_LOCAL_SIZE_IDS, (PER_INVOCATION, 3), (TEXEL, 4))
  struct Bindings {
    Tensor src, dst, srct;
  };
  VKRNN_BINDINGS((src, read), (dst, write), (srct, read))
};

// bench_copy's interface, its destination taking one vec4 sum per invocation.
struct BenchRead {
  VKRNN_KERNEL(bench_read, "bench_read")
  using Push = BenchCopy::Push;
  VKRNN_PUSH(n)
  using Constants = BenchCopy::Constants;
  VKRNN_CONSTANTS(VKRNN_LOCAL_SIZE_IDS, (PER_INVOCATION, 3), (TEXEL, 4))
  using Bindings = BenchCopy::Bindings;
  VKRNN_BINDINGS((src, read), (dst, write), (srct, read))
};

struct BenchEmpty {
  VKRNN_KERNEL(bench_empty, "bench_empty")
  VKRNN_NO_PUSH
  using Constants = Workgroup;
  VKRNN_CONSTANTS(VKRNN_LOCAL_SIZE_IDS)
  struct Bindings {
    Tensor unused;
  };
  VKRNN_BINDINGS((unused, read))
};

struct SubgroupProbe {
  VKRNN_KERNEL(subgroup_probe, "subgroup_probe")
  VKRNN_NO_PUSH
  struct Constants {
    std::uint32_t local_size_x = 1;
    std::uint32_t MODE = 0;
  };
  VKRNN_CONSTANTS((local_size_x, 0), (MODE, 1))
  struct Bindings {
    Tensor seen;
  };
  VKRNN_BINDINGS((seen, write))
};

}  // namespace vkrnn::kernels
