#include "plan.hpp"

#include <algorithm>
#include <bit>

#include <fmt/format.h>

#include "vkrnn/error.hpp"

namespace vkrnn::plan {

using ops::ceil_div;
using ops::round_up;

// --- the device ----------------------------------------------------------------------------

bool is_cpu(const DeviceInfo& dev) { return dev.type == DeviceType::cpu; }

bool texel_loads(const DeviceInfo& dev, std::uint64_t bytes) {
  return is_cpu(dev) && dev.uniform_texel_u32x4 && bytes >= 16 &&
         bytes <= std::uint64_t(dev.max_texel_buffer_elements) * 16;
}

bool use_subgroups(const DeviceInfo& dev, const OpOptions& options) {
  return dev.subgroup_arithmetic && dev.subgroup_in_compute && dev.subgroup_size > 0 &&
         !options.force_shared_memory_reduction;
}

std::uint32_t min_lanes(const DeviceInfo& dev) {
  return std::max<std::uint32_t>(1, dev.min_subgroup_size ? dev.min_subgroup_size : dev.subgroup_size);
}

std::uint32_t max_lanes(const DeviceInfo& dev) {
  return std::max<std::uint32_t>({1, dev.subgroup_size, dev.max_subgroup_size});
}

std::uint32_t max_workgroup(const DeviceInfo& dev) {
  return std::max<std::uint32_t>(1, std::min(dev.max_workgroup_invocations, dev.max_workgroup_size[0]));
}

std::uint32_t reduction_workgroup(const DeviceInfo& dev, const OpOptions& options,
                                  std::uint32_t gpu_default) {
  const std::uint32_t sg = std::max<std::uint32_t>(1, dev.subgroup_size);
  std::uint32_t wg = options.workgroup_size != 0 ? options.workgroup_size : is_cpu(dev) ? sg : gpu_default;
  wg = std::clamp<std::uint32_t>(wg, 1, max_workgroup(dev));
  return std::bit_floor(wg);  // the reduction trees assume a power of two
}

std::uint32_t attention_workgroup(const DeviceInfo& dev, const OpOptions& options) {
  const std::uint32_t sg = std::max<std::uint32_t>(1, dev.subgroup_size);
  return reduction_workgroup(dev, options, std::clamp<std::uint32_t>(sg, 64, 256));
}

std::uint32_t elementwise_workgroup(const DeviceInfo& dev, const OpOptions& options) {
  return std::clamp<std::uint32_t>(options.workgroup_size ? options.workgroup_size : 64, 1,
                                   max_workgroup(dev));
}

bool one_subgroup(const DeviceInfo& dev, std::uint32_t workgroup, bool subgroups) {
  return subgroups && dev.subgroup_size > 0 && workgroup <= min_lanes(dev);
}

bool host_mapped_tensors(const DeviceInfo& dev, bool force_staging) {
  return dev.unified_memory && !force_staging;
}

std::uint64_t reduction_loops(const DeviceInfo& dev, bool subgroups, std::uint64_t workgroup) {
  if (!subgroups) return std::bit_width(workgroup);
  return ceil_div(workgroup, min_lanes(dev));
}

std::uint32_t next_row_workgroup(const DeviceInfo& dev, std::uint32_t workgroup, bool subgroups) {
  const std::uint64_t wider = std::uint64_t(std::max(workgroup, 1u)) * 2;
  // Between the smallest and the largest subgroup a workgroup could be a partial subgroup (or
  // several): go to whole subgroups of the largest size.
  if (subgroups && wider > min_lanes(dev) && wider < max_lanes(dev)) return max_lanes(dev);
  return static_cast<std::uint32_t>(std::min<std::uint64_t>(wider, ~0u));
}

std::uint32_t widest_workgroup(const DeviceInfo& dev, std::uint32_t workgroup, bool subgroups) {
  std::uint32_t wg = std::max(workgroup, 1u);
  for (std::uint32_t next; (next = next_row_workgroup(dev, wg, subgroups)) <= max_workgroup(dev);) {
    wg = next;
  }
  return wg;
}

std::uint32_t workgroup_within_budget(const DeviceInfo& dev, std::uint32_t workgroup, bool subgroups,
                                      const std::function<std::uint64_t(std::uint64_t)>& loops) {
  for (std::uint32_t wg = std::max(workgroup, 1u); wg <= max_workgroup(dev);
       wg = next_row_workgroup(dev, wg, subgroups)) {
    if (loops(wg) <= kLoopBudget) return wg;
  }
  return 0;
}

void Needs::add(std::uint64_t shared, std::uint32_t buffers) {
  shared_bytes = std::max(shared_bytes, shared);
  storage_buffers = std::max(storage_buffers, buffers);
}

void require(const DeviceInfo& dev, const Needs& needs, const std::string& what) {
  if (needs.fp16_storage && !dev.storage_16bit) {
    throw Error(ErrorCode::missing_feature,
                fmt::format("{}: float16 storage needs storageBuffer16BitAccess, which '{}' does "
                            "not support",
                            what, dev.name));
  }
  if (needs.storage_buffers > dev.max_storage_buffers_per_stage) {
    throw Error(ErrorCode::out_of_range,
                fmt::format("{}: a kernel binds {} storage buffers; '{}' allows {} per shader "
                            "stage (maxPerStageDescriptorStorageBuffers)",
                            what, needs.storage_buffers, dev.name, dev.max_storage_buffers_per_stage));
  }
  if (needs.shared_bytes > dev.max_shared_memory) {
    throw Error(ErrorCode::out_of_range,
                fmt::format("{}: a kernel needs {} bytes of shared memory; '{}' has {} "
                            "(maxComputeSharedMemorySize)",
                            what, needs.shared_bytes, dev.name, dev.max_shared_memory));
  }
}

namespace {

// One invocation's share of n items strided over a workgroup of wg.
std::uint64_t share(std::uint64_t n, std::uint64_t wg) { return (n + wg - 1) / wg; }

template <class K>
void add_kernel(Needs& needs, const typename K::Constants& c, const kernels::Variant& v) {
  needs.add(shared_bytes<K>(c, v), K::storage_buffer_count);
  needs.fp16_storage = needs.fp16_storage || v.fp16;
}

}  // namespace

// --- decoder attention ------------------------------------------------------------------------

std::uint32_t source_chunk(const DeviceInfo& dev, const OpOptions& options, std::uint32_t S,
                           std::uint64_t per_chunk, std::uint32_t min_chunk,
                           std::uint32_t max_chunk, std::uint64_t target) {
  std::uint32_t chunk;
  if (options.tile != 0) {
    chunk = options.tile;
  } else {
    // Chunks long enough that the partials stay small and their combine is cheap.
    if (target == 0) target = is_cpu(dev) ? 16 : kMaxTargetChunks;
    const std::uint32_t want = static_cast<std::uint32_t>(std::clamp<std::uint64_t>(
        (target + per_chunk - 1) / per_chunk, 1, ceil_div(S, min_chunk)));
    chunk = ceil_div(S, want);
  }
  return std::clamp<std::uint32_t>(chunk, 1, std::min(S, max_chunk));
}

QueryProjection query_projection(const DeviceInfo& dev, const Dims& d, const OpOptions& options) {
  QueryProjection q;
  q.used = attention_detail::projects_query(d.config.score);
  q.gemv = is_cpu(dev);
  const bool sg = use_subgroups(dev, options);
  const std::uint32_t wg = attention_workgroup(dev, options);
  q.variant = {.subgroup = sg};
  q.constants = {.local_size_x = wg,
                 .VEC4 = d.Hq % 4 == 0 ? 1u : 0u,
                 .ONE_SUBGROUP = one_subgroup(dev, wg, sg)};
  return q;
}

namespace {

// The score of a position (shaders/include/attention_score.glsl): constants 3..7 of the scores
// and fused kernels.
struct Score {
  std::uint32_t mode = 0, key_vec4 = 0, per_subgroup = 0, positions = 1, key_loop = 1;
};
Score score(const Dims& d, const DeviceInfo& dev, bool subgroups, std::uint32_t workgroup) {
  Score c;
  c.mode = d.config.score == vkrnn::Score::additive ? 1 : 0;
  c.key_vec4 = (d.Hk % 4 == 0 && d.dk % 4 == 0) ? 1 : 0;
  switch (d.config.score_split) {
    case ScoreSplit::automatic: c.per_subgroup = subgroups && d.dk >= 32; break;
    case ScoreSplit::per_invocation: c.per_subgroup = 0; break;
    case ScoreSplit::per_subgroup: c.per_subgroup = subgroups; break;
  }
  // About 32 positions per workgroup step on CPU drivers (fewer, fatter workgroups), one per
  // invocation on GPUs.
  c.positions = is_cpu(dev) ? std::max<std::uint32_t>(1, 32 / workgroup) : 1;
  // The dims loop's bound, pessimistic for a subgroup per score: the smallest subgroup the
  // device may run with (the shader strides by the real gl_SubgroupSize, never smaller).
  const std::uint32_t key_units = c.key_vec4 ? d.dk / 4 : d.dk;
  const std::uint32_t lanes = std::clamp<std::uint32_t>(min_lanes(dev), 1, workgroup);
  c.key_loop = c.per_subgroup ? ceil_div(key_units, lanes) : key_units;
  return c;
}

void add_query(Needs& needs, const QueryProjection& q) {
  if (q.used && !q.gemv) add_kernel<kernels::AttentionQuery>(needs, q.constants, q.variant);
}

}  // namespace

AttentionScores attention_scores(const DeviceInfo& dev, const Dims& d, const OpOptions& options) {
  AttentionScores p;
  const bool sg = use_subgroups(dev, options);
  const std::uint32_t wg = attention_workgroup(dev, options);
  const Score sc = score(d, dev, sg, wg);
  p.variant = {.fp16 = options.fp16_storage, .subgroup = sg};
  p.constants = {.local_size_x = wg, .SCORE_MODE = sc.mode, .KVEC4 = sc.key_vec4,
                 .SG_CLUSTER = sc.per_subgroup, .R = sc.positions, .KU = sc.key_loop};
  p.block = wg * sc.positions;
  p.tiles = ceil_div(d.S, p.block);
  p.query = query_projection(dev, d, options);
  add_kernel<kernels::AttentionScores>(p.needs, p.constants, p.variant);
  add_query(p.needs, p.query);
  return p;
}

MaskedSoftmax masked_softmax(const DeviceInfo& dev, const Dims& d, const OpOptions& options) {
  MaskedSoftmax p;
  const bool sg = use_subgroups(dev, options);
  const std::uint32_t wg = attention_workgroup(dev, options);
  // Positions per invocation (kept in registers between the max, sum and normalise steps):
  // a row of up to 32 per invocation takes one dispatch; longer rows are tiled.
  constexpr std::uint32_t kMaxPerInvocation = 64;
  std::uint32_t E;
  if (options.tile != 0) {
    E = std::clamp<std::uint32_t>(ceil_div(options.tile, wg), 1, kMaxPerInvocation);
  } else if (d.S <= 32ull * wg) {
    E = ceil_div(d.S, wg);
  } else {
    E = is_cpu(dev) ? 16 : 8;
  }
  p.variant = {.fp16 = options.fp16_storage, .subgroup = sg};
  p.constants = {.local_size_x = wg, .E = E, .ONE_SUBGROUP = one_subgroup(dev, wg, sg)};
  p.tile = wg * E;
  p.tiles = ceil_div(d.S, p.tile);
  add_kernel<kernels::AttentionSoftmax>(p.needs, p.constants, p.variant);
  return p;
}

AttentionContext attention_context(const DeviceInfo& dev, const Dims& d, const OpOptions& options) {
  AttentionContext p;
  const bool cpu = is_cpu(dev);
  const std::uint32_t wg = attention_workgroup(dev, options);
  const bool vec4 = d.H % 4 == 0 && d.dv % 4 == 0;
  const std::uint32_t units = vec4 ? d.dv / 4 : d.dv;
  // Columns (vec4s) per invocation, in registers: one column tile covers dv when that takes at
  // most `cap` per invocation.
  const std::uint32_t cap = cpu ? 16 : 8;
  const std::uint32_t vpt = std::clamp<std::uint32_t>(ceil_div(units, wg), 1, cap);
  const std::uint32_t tile_units = wg * vpt;
  p.variant = {.fp16 = options.fp16_storage};
  p.constants = {.local_size_x = wg, .VPT = vpt, .VVEC4 = vec4 ? 1u : 0u};
  p.column_tile = tile_units * (vec4 ? 4 : 1);
  p.column_tiles = ceil_div(units, tile_units);
  // Loop budget: an invocation runs 1 + VPT iterations per position (pessimistically).
  const std::uint32_t max_chunk = std::max<std::uint32_t>(1, kLoopBudget / (1 + vpt));
  p.chunk = source_chunk(dev, options, d.S, std::uint64_t(d.rows) * p.column_tiles,
                         cpu ? 512 : 128, max_chunk);
  p.chunks = ceil_div(d.S, p.chunk);
  add_kernel<kernels::AttentionContext>(p.needs, p.constants, p.variant);
  return p;
}

FusedAttention fused_attention(const DeviceInfo& dev, const Dims& d, const OpOptions& options) {
  FusedAttention p;
  const bool cpu = is_cpu(dev);
  const bool sg = use_subgroups(dev, options);
  const std::uint32_t wg = attention_workgroup(dev, options);
  const Score sc = score(d, dev, sg, wg);
  const bool value_vec4 = d.H % 4 == 0 && d.dv % 4 == 0;
  const std::uint32_t R = sc.positions;
  const std::uint32_t P = wg * R;  // positions per workgroup step

  // Column tile: each invocation keeps VPT columns (vec4s) of the context in registers; one
  // tile covers dv when that needs at most `cap` per invocation, else balanced tiles (each
  // re-reads the keys of its split).
  const std::uint32_t value_units = value_vec4 ? d.dv / 4 : d.dv;
  const std::uint32_t cap = cpu ? 32 : 8;
  const std::uint32_t nht = ceil_div(value_units, std::uint64_t(wg) * cap);
  const std::uint32_t vpt = std::max<std::uint32_t>(1, ceil_div(value_units, std::uint64_t(nht) * wg));

  p.column_tile = wg * vpt * (value_vec4 ? 4 : 1);
  p.column_tiles = nht;
  p.variant = {.fp16 = options.fp16_storage, .subgroup = sg};
  const bool one = one_subgroup(dev, wg, sg);
  p.constants = {.local_size_x = wg, .SCORE_MODE = sc.mode, .KVEC4 = sc.key_vec4,
                 .SG_CLUSTER = sc.per_subgroup, .R = R, .KU = sc.key_loop, .VPT = vpt,
                 .VVEC4 = value_vec4 ? 1u : 0u, .ONE_SUBGROUP = one};
  // Keys and values as texels (fp32 vec4 loads of both, on CPU drivers: texel_loads).
  p.constants.TEXEL = !options.fp16_storage && sc.key_vec4 != 0 && value_vec4 &&
                      texel_loads(dev, std::uint64_t(d.B) * d.S * d.Hk * 4) &&
                      texel_loads(dev, std::uint64_t(d.B) * d.S * d.H * 4);

  // The query projection (general, additive) in the kernel: each workgroup projects its row's
  // q' = W_q q (+ b) into shared memory before scoring (workgroups of a split row each repeat
  // it), saving the projection's dispatch. It needs the shared array and its loop, at most half
  // the loop budget (the positions get the rest): ceil(Hk / WG) x (1 + Hq/4 or Hq) iterations
  // per invocation with an invocation per output, or, where QPL splits the query's vec4s over
  // a subgroup's lanes (CPU drivers: on lavapipe each output's lanes then read one run of
  // W_q's row instead of the query from shared memory, a per-lane loop there),
  // ceil(Hk / subgroups) x QPL.
  p.query = query_projection(dev, d, options);
  kernels::AttentionFused::Constants folded = p.constants;
  folded.QP = round_up(std::max<std::uint64_t>(d.Hk, d.Hq), 4);
  // (The fewest lanes a subgroup may have: the smallest subgroup, or a smaller workgroup.)
  if (cpu && sg && d.Hq % 4 == 0) {
    folded.QPL = ceil_div(d.Hq / 4, std::clamp<std::uint32_t>(min_lanes(dev), 1, wg));
  }
  const std::uint32_t subgroups = std::max<std::uint32_t>(1, wg / max_lanes(dev));  // the fewest
  const std::uint64_t q_loop =
      folded.QPL > 0 ? std::uint64_t(ceil_div(d.Hk, subgroups)) * folded.QPL + folded.QPL
                     : std::uint64_t(ceil_div(d.Hk, wg)) * (1 + (d.Hq % 4 == 0 ? d.Hq / 4 : d.Hq));
  bool fold = p.query.used && q_loop <= kLoopBudget / 2 &&
              shared_bytes<kernels::AttentionFused>(folded, p.variant) <= dev.max_shared_memory;

  // Loop iterations one invocation runs per block (pessimistic: no unrolling, the smallest
  // subgroup the device may pick), so a split can be kept under kLoopBudget.
  std::uint64_t per_block = std::uint64_t(sc.per_subgroup ? P : R) * (1 + sc.key_loop);
  per_block += 3 * R + std::uint64_t(P) * (1 + vpt);
  // The streamed loops (below) share the chunk: per step of their kCpuLoadStreams segments,
  // the rescale and, per segment, the score's and the context's loops (and the values' loads).
  const auto streams = [&](const kernels::AttentionFused::Constants& c) {
    return cpu && sg && one && sc.per_subgroup && c.TEXEL && nht == 1 && sc.key_loop <= 64 && vpt <= 64;
  };
  const auto streams_keys = [&](const kernels::AttentionFused::Constants& c) {
    return streams(c) && sc.mode == 0 && d.Hk == d.H && d.dk == d.dv && vpt == sc.key_loop;
  };
  const auto streams_values = [&](const kernels::AttentionFused::Constants& c) {  // fp32 (TEXEL)
    return streams(c) && std::uint64_t(d.B) * d.S * (d.Hk + d.H) * 4 >= kStreamValuesBytes;
  };
  const auto streamed_block = [&](std::uint64_t per_segment) {
    per_block = std::max<std::uint64_t>(per_block, ceil_div(P, kCpuLoadStreams) * (1 + vpt + kCpuLoadStreams * per_segment));
  };
  if (streams_keys(p.constants)) streamed_block(2 + sc.key_loop + vpt);
  if (streams_values(p.constants)) streamed_block(3 + sc.key_loop + 2 * vpt);
  auto split_source = [&](std::uint64_t target) {
    const std::uint64_t budget = kLoopBudget - (fold ? q_loop : 0);
    const std::uint32_t max_chunk =
        static_cast<std::uint32_t>(std::max<std::uint64_t>(1, budget / per_block) * P);
    // Splits of S: enough workgroups to fill the device, chunks long enough to amortise the
    // partials, within the loop budget.
    p.chunk = source_chunk(dev, options, d.S, std::uint64_t(d.rows) * nht, cpu ? 512 : 256, max_chunk, target);
    p.splits = ceil_div(d.S, p.chunk);
  };
  // A CPU driver with too few rows to keep its threads busy (B = 1 decoding): S is split into
  // two runs per thread only where the projection folds, as every split repeats it (lavapipe
  // hands each of its cpu_threads a fixed run of a dispatch's workgroups, so two apiece balance
  // no worse than more), and the fold may repeat a larger share (kFoldedRepeatShareCpu). Rows
  // enough to fill the threads keep the separate projection, whose GEMM reads W_q once for all
  // of them (W1.general B = 16 S = 4096 H = 256 folded: 3.78-3.82 ms against 3.41-3.44).
  const bool few_rows = cpu && dev.cpu_threads > 0 && std::uint64_t(d.rows) * nht < 2ull * dev.cpu_threads;
  split_source(fold && few_rows ? 2ull * dev.cpu_threads : 0);
  // Where a row has several workgroups, each repeats the projection (Hk x Hq multiply-adds):
  // folded only while that adds at most 1/kFoldedRepeatShare (1/kFoldedRepeatShareCpu, above) to
  // the workgroup's own keys and values. (On lavapipe a repeat as big as the workgroup's own
  // work made W1.additive at S = 4096 1.5x slower than the separate dispatch it saves.)
  const std::uint64_t own_work = std::uint64_t(p.chunk) * (d.dk + std::min(p.column_tile, d.dv));
  const std::uint64_t repeat_share = few_rows ? kFoldedRepeatShareCpu : kFoldedRepeatShare;
  if (fold && p.splits * p.column_tiles > 1 && std::uint64_t(d.Hk) * d.Hq * repeat_share > own_work) {
    fold = false;
    split_source(0);
  }
  if (fold) {
    p.constants = folded;
    p.query.used = false;
    // W_q through its texel view too where keys and values are read so (qwt; the scalar loads
    // of a Qs % 4 != 0 query leave it unread).
    p.constants.TEXEL = p.constants.TEXEL && texel_loads(dev, std::uint64_t(d.Hk) * d.Hq * 4);
  }
  p.block = P;
  // Split rows: the row's last workgroup merges the splits itself (no combine dispatch) while
  // the merge is short -- nsplit x ceil(dv / WG) context iterations per invocation, plus
  // ceil(S / WG) for the weights (counted always: whether they are wanted is known only when
  // recording) -- and fits the loop budget beside the workgroup's own split. A combine dispatch
  // costs ~30-50 us on lavapipe, so there the merge may be long; on GPUs a dispatch costs a few
  // us and one workgroup's serial merge must stay as short.
  if (p.splits > 1) {
    const std::uint64_t merge_loop = 2 * ceil_div(p.splits, wg) +
                                     std::uint64_t(p.splits) * ceil_div(d.dv, wg) + ceil_div(d.S, wg);
    const std::uint64_t own_loop =
        std::uint64_t(ceil_div(p.chunk, P)) * per_block + (fold ? q_loop : 0);
    kernels::AttentionFused::Constants merged = p.constants;
    merged.MERGE = std::max(64u, round_up(p.splits, 64));
    p.merge = merge_loop <= (cpu ? kMergeLoopCpu : kMergeLoopGpu) && own_loop + merge_loop <= kLoopBudget &&
              shared_bytes<kernels::AttentionFused>(merged, p.variant) <= dev.max_shared_memory;
    if (p.merge) p.constants = merged;
  }
  // Keys that are the values (Luong dot / general over encoder outputs): on CPU drivers a
  // position of each of kCpuLoadStreams segments of the split at a time (as many runs of loads
  // in flight per CPU thread), each lane's key vec4s serving its score and then its context
  // terms, fetched once (docs/kernels.md). Needs the lane's key units to be its value units:
  // one subgroup per workgroup, a subgroup per score, one column tile with VPT = KU, and the
  // query's units in registers (attention_score.glsl's QREG_MAX).
  if (streams_keys(p.constants)) {
    p.streamed = p.constants;
    p.streamed.STREAM = true;
    p.streamed.POS_STREAMS = kCpuLoadStreams;
    add_kernel<kernels::AttentionFused>(p.needs, p.streamed, p.variant);
  }
  // Keys and values apart (additive; dot-like over two tensors) streamed likewise, each lane
  // fetching its value units of each position after its score, where they are too many to stay
  // in a CPU's caches between dispatches (docs/kernels.md).
  if (streams_values(p.constants)) {
    p.constants.STREAM = true;
    p.constants.STREAM_VALUES = true;
    p.constants.POS_STREAMS = kCpuLoadStreams;
  }
  // The combine keeps one coefficient per split in shared memory; built for at least as many
  // splits as source_chunk() aims at, so few pipelines cover every S.
  const std::uint32_t max_split = std::max(kMaxTargetChunks, round_up(p.splits, 64));
  p.combine = {.local_size_x = wg, .MAX_SPLIT = max_split, .E = cpu ? 8u : 4u, .ONE_SUBGROUP = one};
  if (p.splits > 1 && !p.merge) add_kernel<kernels::AttentionFusedCombine>(p.needs, p.combine, p.variant);
  add_kernel<kernels::AttentionFused>(p.needs, p.constants, p.variant);
  add_query(p.needs, p.query);
  return p;
}

KeyProjection key_projection(const DeviceInfo& dev, const OpOptions& options) {
  KeyProjection p;
  // A T x T workgroup: 64 invocations on CPU drivers, 256 on GPUs, or the forced size; T and
  // RM shrink until the tiles fit in shared memory.
  std::uint32_t wg = options.workgroup_size != 0 ? options.workgroup_size : (is_cpu(dev) ? 64 : 256);
  wg = std::clamp<std::uint32_t>(wg, 1, std::max<std::uint32_t>(1, dev.max_workgroup_invocations));
  std::uint32_t T = 1;
  while ((2 * T) * (2 * T) <= wg && 2 * T <= dev.max_workgroup_size[0] &&
         2 * T <= dev.max_workgroup_size[1]) {
    T *= 2;
  }
  p.variant = {.fp16 = options.fp16_storage};
  p.constants = {.local_size_x = T, .local_size_y = T, .RM = 4};
  auto shared = [&] { return shared_bytes<kernels::AttentionKeys>(p.constants, p.variant); };
  while (shared() > dev.max_shared_memory && (p.constants.RM > 1 || p.constants.local_size_x > 1)) {
    if (p.constants.RM > 1) {
      p.constants.RM /= 2;
    } else {
      p.constants.local_size_x /= 2;
      p.constants.local_size_y /= 2;
    }
  }
  add_kernel<kernels::AttentionKeys>(p.needs, p.constants, p.variant);
  return p;
}

// --- dense layers --------------------------------------------------------------------------------

WeightStorage weight_storage(const OpOptions& options) {
  if (options.weight_storage != WeightStorage::automatic) return options.weight_storage;
  return options.fp16_storage ? WeightStorage::f16 : WeightStorage::f32;
}

Gemm gemm(const DeviceInfo& dev, const OpOptions& options) {
  Gemm g;
  const bool f16 = weight_storage(options) == WeightStorage::f16;
  const bool cpu = is_cpu(dev);
  g.subgroups = use_subgroups(dev, options);
  g.coop_lanes = g.subgroups ? max_lanes(dev) : 1u;
  const std::uint32_t max_x = max_workgroup(dev);
  // GEMV: lavapipe runs best with one subgroup per workgroup and many workgroups; GPUs want a
  // few subgroups per workgroup to fill a compute unit.
  std::uint32_t wg = options.workgroup_size ? options.workgroup_size
                     : cpu                  ? g.coop_lanes * (g.subgroups ? 1 : 8)
                                            : std::max<std::uint32_t>(g.coop_lanes, 128);
  wg = std::min(wg, max_x);
  // Whole coops: at least one, even where a forced size is smaller.
  g.gemv_workgroup = g.subgroups ? std::max(g.coop_lanes, wg / g.coop_lanes * g.coop_lanes)
                                 : std::max(1u, wg);
  if (g.gemv_workgroup > max_x) {
    throw Error(ErrorCode::missing_feature,
                fmt::format("Gemm: subgroup size {} exceeds the workgroup limit {} of '{}'",
                            g.coop_lanes, max_x, dev.name));
  }
  // Tiled GEMM: 16 x 16 invocations of 4 x 4 outputs where the device allows 256 invocations;
  // BK halves until the tiles fit in shared memory.
  const std::uint32_t wx = std::min<std::uint32_t>(16, dev.max_workgroup_size[0]);
  const std::uint32_t wy = std::max<std::uint32_t>(
      1, std::min<std::uint32_t>({16, dev.max_workgroup_size[1], dev.max_workgroup_invocations / wx}));
  g.tiled = {.local_size_x = wx, .local_size_y = wy, .TM = 4, .TN = 4,
             .BK = options.tile ? std::clamp<std::uint32_t>(options.tile, 1, 64) : 16u};
  const kernels::Variant tiled_variant{.fp16 = f16};
  while (g.tiled.BK > 1 &&
         shared_bytes<kernels::Gemm>(g.tiled, tiled_variant) > dev.max_shared_memory) {
    g.tiled.BK /= 2;
  }
  g.needs.fp16_storage = f16;
  g.needs.add(shared_bytes<kernels::Gemm>(g.tiled, tiled_variant), kernels::Gemm::binding_count);
  g.needs.add(0, kernels::Gemv::storage_buffer_count);
  return g;
}

GemmPath gemm_path(const DeviceInfo& dev, const Gemm& g, std::size_t m) {
  // CPU devices (lavapipe): buffer loads dominate, and big per-invocation register blocks make
  // the fewest loads per multiply-add, for any M.
  if (is_cpu(dev)) return GemmPath::gemv_invocation;
  // A few rows: every weight is read once and reused from registers; the tiled kernel would
  // leave most of its 64-row tile empty.
  if (m <= 8) return g.subgroups ? GemmPath::gemv : GemmPath::gemv_invocation;
  return GemmPath::tiled;
}

std::uint32_t shuffle_lanes(const DeviceInfo& dev, std::uint32_t workgroup) {
  constexpr std::uint32_t kShuffle = VK_SUBGROUP_FEATURE_BASIC_BIT | VK_SUBGROUP_FEATURE_SHUFFLE_BIT;
  const std::uint32_t lanes = dev.subgroup_size;
  const bool ok = is_cpu(dev) && dev.subgroup_in_compute && (dev.subgroup_operations & kShuffle) == kShuffle &&
                  lanes > 0 && dev.min_subgroup_size == lanes && dev.max_subgroup_size == lanes &&
                  workgroup % lanes == 0;
  return ok ? lanes : 0;
}

Gemv gemv(const DeviceInfo& dev, const Gemm& g, const OpOptions& options, std::size_t m,
          GemmPath path, bool aligned) {
  Gemv v;
  // GEMV blocks: TM rows of X share each loaded W vec4, TN rows of W each loaded X vec4.
  const bool per_invocation = path == GemmPath::gemv_invocation || !g.subgroups;
  // CPU devices: 16 x 8 blocks per invocation; measured on lavapipe at ~10.5 GFLOP/s per core
  // (CPU time) against ~6 for 4 x 4 blocks and ~12.5 for 16 x 16, which compiles 2.5x longer.
  // Row counts round up to a power of two so that few pipelines get compiled (a 16 x 8 block
  // costs lavapipe ~1.5 s of LLVM time).
  const bool big_blocks = per_invocation && is_cpu(dev);
  const std::uint32_t tm = std::min<std::uint32_t>(
      std::bit_ceil(static_cast<std::uint32_t>(std::min<std::size_t>(m, 16))), big_blocks ? 16 : 4);
  const std::uint32_t tn = options.tile ? std::clamp<std::uint32_t>(options.tile, 1, 32) : big_blocks ? 8 : 4;
  std::uint32_t wg = g.gemv_workgroup;
  if (per_invocation && g.subgroups && !options.workgroup_size) wg = is_cpu(dev) ? g.coop_lanes : 64;
  wg = std::min(wg, max_workgroup(dev));
  const std::uint32_t blocks = per_invocation ? wg : wg / g.coop_lanes;
  v.variant = {.subgroup = !per_invocation};
  v.constants = {.local_size_x = wg, .TM = tm, .TN = tn, .BLOCKS = blocks, .ALIGNED = aligned};
  // Several rows of X: the subgroup's lanes share X's loads (the _shuffle build, gemv_block.glsl).
  if (const std::uint32_t lanes = big_blocks && tm > 1 ? shuffle_lanes(dev, wg) : 0) {
    v.variant.shuffle = true;
    v.constants.X_LANES = lanes;
  }
  v.per_group = tn * blocks;
  return v;
}

std::uint32_t pack_rows(const DeviceInfo& dev, const Gemm& g, const OpOptions& options) {
  if (!is_cpu(dev) || !options.pack_weights) return 0;
  return gemv(dev, g, options, 1, GemmPath::gemv_invocation, true).per_group;
}

std::uint32_t gemv_k_streams(const DeviceInfo& dev, const kernels::Gemv::Constants& c) {
  // fp16 / int8 (WIDE) measured no faster so, and B = 16 (compute-bound) slower.
  return is_cpu(dev) && c.PACK_ROWS != 0 && c.TM == 1 && !c.WIDE ? kCpuLoadStreams : 1;
}

namespace {

// Columns of K one dispatch may take when an invocation runs `fixed` loop iterations plus
// `per_step` for every `step` columns: within kLoopBudget, a multiple of 64 (keeps vec4
// alignment and whole tiles) unless K fits whole.
std::uint64_t k_slice(std::uint64_t K, std::uint64_t step, std::uint64_t per_step, std::uint64_t fixed) {
  const std::uint64_t steps = (kLoopBudget - fixed) / per_step;
  if (steps * step >= K) return K;
  return std::max<std::uint64_t>(64, steps * step / 64 * 64);
}

}  // namespace

std::uint64_t gemm_k_slice(const kernels::Gemm::Constants& t, std::uint64_t K) {
  const std::uint64_t bm = t.local_size_y * t.TM, bn = t.local_size_x * t.TN;
  const std::uint64_t threads = std::uint64_t(t.local_size_x) * t.local_size_y;
  // Per BK columns: the two tile loads and the (unrolled, measured) product loop.
  const std::uint64_t per_tile = 2 + share(bm * t.BK, threads) + share(bn * t.BK, threads);
  return k_slice(K, t.BK, per_tile, 16);
}

std::uint64_t gemv_k_slice(const DeviceInfo& dev, const Gemm& g, const Gemv& v, std::uint64_t K) {
  // An invocation's blocks (BLOCKS / coops, the fewest coops the device may make) times its
  // lane's share of each dot product: 4 columns per lane (the smallest subgroup) per iteration,
  // counted twice for the (unrolled, measured) register-block loops.
  const bool per_invocation = !v.variant.subgroup;
  const std::uint64_t wg = v.constants.local_size_x;
  const std::uint64_t coops = per_invocation ? wg : std::max<std::uint64_t>(1, wg / g.coop_lanes);
  const std::uint64_t lanes = per_invocation ? 1 : min_lanes(dev);
  const std::uint64_t block_loops = share(v.constants.BLOCKS, coops);
  return k_slice(K, 4 * lanes, 2 * block_loops, 16 * block_loops);
}

// --- recurrent layers ----------------------------------------------------------------------------

namespace {

// Rows of n elements are whole 16-byte units: fp32 vec4s, or fp16 / int8 wide_rows. The
// recurrent layers pack only such matrices (their kernels read them 16 bytes at a time).
bool whole_units(bool f16, bool i8, std::uint64_t n) { return f16 || i8 ? wide_rows(f16, i8, n) : n % 4 == 0; }

// Batch rows per workgroup: a power of two (one pipeline per value; rows past B are clamped).
std::uint32_t pow2_block(std::uint64_t B, std::uint32_t max) {
  return std::min(max, std::bit_ceil(static_cast<std::uint32_t>(std::min<std::uint64_t>(B, max))));
}

// lavapipe (2 cores, measured with GRU, wall time per step): fused wins at H <= 64 for B 1 and
// 16 (e.g. 21 vs 57 us, B = 1, H = 64) and at H = 128 for B = 1 (85 vs 100 us); per-step wins
// at H = 128, B = 16 (300 vs 1400 us) and H >= 256 (210 vs 260 us at B = 1).
constexpr std::uint64_t kFusedWeightsCpu = 1u << 16;
constexpr std::uint64_t kFusedMacsCpu = 1u << 18;
// Once fp32 W_hh is read through a texel view and h from shared memory a vec4 at a time, and
// the fused workgroups occupy every driver thread: lavapipe (2 threads; interleaved, 2 rounds,
// GPU time) ran W3.b1's bidirectional GRU encoder (H = 256, 196,608 weights a direction)
// fused in 87.5 / 88.7 ms a decode against 92.4 / 93.2 per step; a unidirectional one (W2.gru
// B = 1 H = 256: one thread busy) stayed faster per step (8.0 / 8.1 against 8.7 / 10.1 ms).
// fp16 / int8 W_hh read 16 bytes at a time through the view (WIDE): the same encoder's
// recurrent kernels 9.4 / 9.2 -> 7.8 / 8.5 ms (fp16) and 7.2 / 7.4 -> 6.1 / 6.0 ms (int8).
constexpr std::uint64_t kFusedFillFactor = 4;
// The _shuffle build (one row per workgroup, h shared along K) halved rnn_seq's time at B = 1,
// so there the fused path takes the same sizes on one thread: lavapipe (interleaved, 2 rounds,
// W2 rows at B = 1, T = 64, one direction; wall ms, fused against per step) RNN H = 512 6.9 /
// 7.4 against 11.8 / 11.5, GRU H = 256 5.4 / 5.1 against 10.1 / 9.6, LSTM H = 256 7.3 / 7.3
// against 11.0 / 11.2 (fp16 and int8 alike); GRU H = 512 (786,432 weights) ties in wall time
// (15.8 / 16.4 against 17.2 / 16.3) and loses in GPU time, fp16 and int8 in both.
// GPUs: not measured here. Estimated from a ~5-10 us dispatch + barrier against one compute
// unit re-reading W_hh (<= 256 KiB) from cache each step.
constexpr std::uint64_t kFusedWeightsGpu = 1u << 16;
constexpr std::uint64_t kFusedMacsGpu = 1u << 20;

// rnn_step / rnn_proj: a coop's units (units / coops, rounded up) times a dot product of n
// features (n / 4 vec4s per lane) and its epilogue over the batch block, per invocation.
// Iterations of a dot product's loop over `steps` steps of K walked in `streams` segments
// (rnn_dots.glsl's K_STREAMS): an outer one per step of a segment and an inner one per segment;
// one stream: the plain loop.
std::uint64_t streamed_loops(std::uint64_t steps, std::uint64_t streams) {
  return streams > 1 ? share(steps, streams) * (1 + streams) : steps;
}

std::uint64_t step_loops(const DeviceInfo& dev, std::uint64_t units, std::uint64_t wg, bool subgroup,
                         std::uint64_t n, std::uint64_t upi, std::uint64_t bb, std::uint64_t k_streams = 1) {
  const std::uint64_t coops = subgroup ? std::max<std::uint64_t>(1, wg / max_lanes(dev)) : wg;
  const std::uint64_t lanes = subgroup ? min_lanes(dev) : 1;
  const std::uint64_t dots = streamed_loops(share(share(n, 4), lanes), k_streams);
  return share(units, coops * upi) * (2 + dots + upi * (1 + bb));
}

// Loop iterations one invocation of rnn_seq runs, from above: every loop whose trip count is
// not a compile-time constant, and the small constant ones of a step, which a `break` or
// `continue` may keep rolled (see the shader's loops). An over-count only costs a dispatch.
struct SeqLoops {
  std::uint64_t fixed;     // per dispatch: the lengths, loading h (and c), storing h
  std::uint64_t per_step;  // per step of the run: the recurrent product or the padding
};
SeqLoops seq_loops(const DeviceInfo& dev, const kernels::RnnSeq::Constants& c, const kernels::Variant& v,
                   std::uint64_t H, std::uint64_t HO) {
  const bool subgroup = v.subgroup;
  const std::uint64_t threads = c.local_size_x, bb = c.BB, upi = c.UPI, hop = c.HOP;
  // The fewest coops and lanes per coop the device may make.
  const std::uint64_t coops = subgroup ? std::max<std::uint64_t>(1, threads / max_lanes(dev)) : threads;
  const std::uint64_t lanes = subgroup ? min_lanes(dev) : 1;
  const std::uint64_t units = share(H, coops * upi);  // j0 loop
  // k4 loop; shared along K (shuffle, BB = 1): its groups too
  const std::uint64_t dots = share(hop / 4, lanes) + (v.shuffle && bb == 1 ? share(hop / 4, c.V_LANES) : 0);
  const std::uint64_t step = 1 + units * (1 + dots + upi * (1 + bb));
  const std::uint64_t padding = share(bb * HO, threads);
  return {bb + share(bb * hop, threads) + units * upi * (1 + bb) + padding + 4,
          std::max(step, padding) + 1};
}

}  // namespace

Rnn rnn(const DeviceInfo& dev, const RnnLayer& layer, const OpOptions& options, std::uint64_t B,
        const RnnForced& forced) {
  const bool cpu = is_cpu(dev);
  const bool subgroups = use_subgroups(dev, options);
  const std::uint32_t coop_lanes = subgroups ? max_lanes(dev) : 1u;
  const std::uint64_t H = layer.H, HO = layer.P ? layer.P : layer.H, G = gate_count(layer.cell);
  const std::uint32_t cell = static_cast<std::uint32_t>(layer.cell);  // CELL: the enum's order
  const std::uint32_t max_x = max_workgroup(dev);
  // int8 weights take the f32 builds with WEIGHT_I8 (32-bit words, no 16-bit storage needed).
  const WeightStorage storage = weight_storage(options);
  const bool f16 = storage == WeightStorage::f16, i8 = storage == WeightStorage::i8;
  Rnn r;

  // The per-step kernel: CPU devices take invocation_dot (buffer loads dominate; one invocation
  // owning several units and many batch rows makes the fewest loads per multiply-add).
  if (forced.step == RnnStepKernel::subgroup_dot && !subgroups) {
    throw Error(ErrorCode::missing_feature,
                fmt::format("Rnn: the subgroup step kernel needs subgroup arithmetic ('{}'{})", dev.name,
                            options.force_shared_memory_reduction ? ", force_shared_memory_reduction set" : ""));
  }
  r.step_kernel = forced.step != RnnStepKernel::automatic ? forced.step
                  : !cpu && subgroups                     ? RnnStepKernel::subgroup_dot
                                                          : RnnStepKernel::invocation_dot;
  const bool sub = r.step_kernel == RnnStepKernel::subgroup_dot;

  // Workgroup of the per-step kernels. lavapipe: one subgroup per workgroup, many workgroups.
  // GPUs: a few subgroups each; whole coops.
  std::uint32_t step_wg = options.workgroup_size ? options.workgroup_size
                          : cpu                  ? coop_lanes * (subgroups ? 1 : 8)
                                                 : std::max<std::uint32_t>(coop_lanes * 4, 64);
  step_wg = std::min(step_wg, max_x);
  if (subgroups) step_wg = std::max(coop_lanes, step_wg / coop_lanes * coop_lanes);
  step_wg = std::max(1u, step_wg);

  // W_hh and W_ih in blocks of the automatic per-step workgroup's units (CPU drivers:
  // invocation_dot, 2 units an invocation; rows of whole 16-byte units, as the kernels then read
  // them), so that each step of K reads one contiguous run per workgroup (gate_blocks.glsl).
  // Not on GPUs: their subgroup coops read along a row (not measured on one).
  const std::uint32_t invocation_wg = subgroups && !options.workgroup_size ? coop_lanes : step_wg;
  r.pack_block = cpu && options.pack_weights ? invocation_wg * 2 : 0;
  r.pack_units = whole_units(f16, i8, HO) ? r.pack_block : 0;

  // rnn_step: a coop per UPI units and BB rows. invocation_dot on lavapipe: 2 units x 16 rows
  // per invocation (LSTM: 8 W rows x 16 h rows); measured on GRU H = 256, B = 16: 2.3x less CPU
  // time per step than subgroup_dot; 4 units gain 5% more but take 2.5x longer to compile.
  auto& st = r.steps;
  st.variant = {.fp16 = f16, .subgroup = sub};
  std::uint32_t wg = step_wg, upi = 1, bb = 1, units = 1;
  if (sub) {
    wg = std::max(coop_lanes, wg / coop_lanes * coop_lanes);
    units = wg / coop_lanes;
    bb = pow2_block(B, 8);
  } else {
    if (subgroups && !options.workgroup_size) wg = cpu ? coop_lanes : 64;
    upi = cpu ? 2 : 1;
    bb = pow2_block(B, cpu ? 16 : 8);
    units = wg * upi;
  }
  st.constants = {.local_size_x = wg, .CELL = cell, .UNITS = units, .BB = bb,
                  .ALIGNED = HO % 4 == 0, .UPI = upi, .WEIGHT_I8 = i8, .WIDE = wide_rows(f16, i8, HO),
                  .PACK_UNITS = r.pack_units};
  // Several batch rows per invocation: the subgroup's lanes share h's and x's loads (the _shuffle
  // build, rnn_step.comp).
  if (const std::uint32_t lanes = !sub && bb > 1 ? shuffle_lanes(dev, wg) : 0) {
    st.variant.shuffle = true;
    st.constants.V_LANES = lanes;
  }
  // W_hh (fp32, or fp16 / int8 WIDE) and h as texels on CPU drivers (both directions' W_hh, at
  // fp32 size: an upper bound; h of both directions).
  st.constants.TEXEL = ((!f16 && !i8) || st.constants.WIDE) && HO % 4 == 0 &&
                       texel_loads(dev, 2 * G * H * HO * 4) && texel_loads(dev, 2 * B * HO * 4);
  // fp32 W_hh packed on a CPU driver, one batch row: K in segments walked in step, so that the
  // thread keeps several runs of loads in flight (as the GEMV's K_STREAMS, docs/kernels.md).
  st.constants.K_STREAMS = cpu && bb == 1 && r.pack_units != 0 && !f16 && !i8 ? kCpuLoadStreams : 1;
  st.loops = step_loops(dev, units, wg, sub, HO, upi, bb, st.constants.K_STREAMS);
  // rnn_proj (LSTM with proj_size): the subgroup build wherever subgroups exist.
  st.proj_variant = {.fp16 = f16, .subgroup = subgroups};
  const std::uint32_t proj_units = subgroups ? step_wg / coop_lanes : step_wg;
  st.proj = {.local_size_x = step_wg, .UNITS = proj_units, .BB = pow2_block(B, 8), .ALIGNED = H % 4 == 0,
             .WEIGHT_I8 = i8};
  st.proj_loops = step_loops(dev, proj_units, step_wg, subgroups, H, 1, st.proj.BB);
  add_kernel<kernels::RnnStep>(r.needs, st.constants, st.variant);
  if (layer.P) add_kernel<kernels::RnnProj>(r.needs, st.proj, st.proj_variant);

  // rnn_seq: the same per-device choices as the per-step kernel; BB halves until h (ping-pong,
  // HOP floats per row) fits in shared memory. Enough coops to give each a few units; lavapipe
  // runs a workgroup on one thread anyway.
  auto& f = r.fused;
  f.variant = {.fp16 = f16, .subgroup = sub};
  const std::uint32_t fupi = sub ? 1 : (cpu ? 2 : 1);
  std::uint32_t fwg = options.workgroup_size ? options.workgroup_size
                      : sub ? 256
                            : std::clamp<std::uint32_t>(std::bit_ceil(static_cast<std::uint32_t>(share(H, fupi))), 8, 256);
  fwg = std::min(fwg, max_x);
  if (sub) fwg = std::max(coop_lanes, fwg / coop_lanes * coop_lanes);
  f.constants = {.local_size_x = std::max(1u, fwg), .CELL = cell, .BB = pow2_block(B, cpu && !sub ? 16 : 8),
                 .HOP = static_cast<std::uint32_t>(share(HO, 4) * 4), .ALIGNED = HO % 4 == 0, .UPI = fupi,
                 .WEIGHT_I8 = i8, .PACK_UNITS = r.pack_units};
  // W_hh (fp32, or fp16 / int8 WIDE) as texels on CPU drivers (both directions', at fp32 size).
  f.constants.WIDE = wide_rows(f16, i8, HO);
  f.constants.TEXEL = ((!f16 && !i8 && HO % 4 == 0) || f.constants.WIDE) && texel_loads(dev, 2 * G * H * HO * 4);
  while (f.constants.BB > 0 && shared_bytes<kernels::RnnSeq>(f.constants, f.variant) > dev.max_shared_memory) {
    f.constants.BB /= 2;
  }
  // One batch row per workgroup: the subgroup's lanes share h's loads along K (the _shuffle
  // build, rnn_dots.glsl; each lane loads one vec4 of h in V_LANES and shuffles hand them round),
  // where a group of V_LANES vec4s holds whole 16-byte weight units (4 vec4s for int8). On
  // lavapipe h comes from shared memory, which it loads lane by lane.
  if (const std::uint32_t lanes = !sub && f.constants.BB == 1 ? shuffle_lanes(dev, f.constants.local_size_x) : 0;
      lanes % 4 == 0 && lanes > 0) {
    f.variant.shuffle = true;
    f.constants.V_LANES = lanes;
  }
  // Steps per dispatch: lavapipe silently ends every loop of an invocation once it has run
  // 65535 iterations in all, so a layer runs as ceil(T / run) dispatches that keep each
  // invocation within kLoopBudget on every device (on GPUs this bounds a dispatch's time).
  if (f.constants.BB > 0) {
    const SeqLoops c = seq_loops(dev, f.constants, f.variant, H, HO);
    f.run = c.fixed >= kLoopBudget ? 0 : (kLoopBudget - c.fixed) / c.per_step;
    if (forced.run) f.run = std::min(f.run, forced.run);
  }

  // The path: one workgroup per block of rows does the whole step's product in the fused path;
  // the per-step path spreads it over the device but pays a dispatch per step. Fused wins while
  // what one workgroup loads (W_hh, once per step) and multiplies (W_hh x its rows) per step
  // stays small next to a dispatch.
  const bool fused_ok = layer.P == 0 && f.run > 0;
  if (forced.path == RnnPath::fused && !fused_ok) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("Rnn: the fused path needs proj_size = 0, h ({} floats per row) in shared "
                            "memory ({} bytes on '{}') and one step within the loop budget",
                            HO, dev.max_shared_memory, dev.name));
  }
  if (forced.path != RnnPath::automatic) {
    r.path = forced.path;
  } else if (fused_ok) {
    const std::uint64_t weights = G * H * HO;
    const std::uint64_t macs = weights * std::min<std::uint64_t>(B, f.constants.BB);
    const bool small = cpu ? (weights <= kFusedWeightsCpu && macs <= kFusedMacsCpu)
                           : (weights <= kFusedWeightsGpu && macs <= kFusedMacsGpu);
    // CPU drivers, W_hh read as texels (fp32, or fp16 / int8 WIDE): where the fused path's
    // workgroups (directions x blocks of rows) occupy every thread of the driver, or each shares
    // h along K (the _shuffle build), it takes W_hh of up to kFusedFillFactor times that size,
    // one row's worth of multiply-adds (B = 1 measured).
    const std::uint64_t groups = layer.D * ceil_div(B, f.constants.BB);
    const std::uint64_t fill_limit = kFusedFillFactor * kFusedWeightsCpu;
    const bool fills = cpu && f.constants.TEXEL && weights <= fill_limit && macs <= fill_limit &&
                       ((dev.cpu_threads > 0 && groups >= dev.cpu_threads) || f.variant.shuffle);
    r.path = small || fills ? RnnPath::fused : RnnPath::per_step;
  }
  if (r.path == RnnPath::fused) add_kernel<kernels::RnnSeq>(r.needs, f.constants, f.variant);
  return r;
}

std::uint64_t fused_loops(const DeviceInfo& dev, const RnnFused& fused, const RnnLayer& layer,
                          std::uint64_t steps) {
  const SeqLoops c = seq_loops(dev, fused.constants, fused.variant, layer.H, layer.P ? layer.P : layer.H);
  return c.fixed + steps * c.per_step;
}

std::uint32_t input_pack_units(const Rnn& plan, WeightStorage storage, std::uint64_t in) {
  return whole_units(storage == WeightStorage::f16, storage == WeightStorage::i8, in) ? plan.pack_block : 0;
}

bool wide_rows(bool f16, bool i8, std::uint64_t n) {
  if (i8) return share(n, 4) % 4 == 0;
  return f16 && n % 8 == 0;
}

bool step_input_inline(const DeviceInfo& dev, const RnnSteps& steps, std::uint64_t in, bool x_wide) {
  const auto& c = steps.constants;
  const bool sub = steps.variant.subgroup;
  const bool f32 = !steps.variant.fp16 && !c.WEIGHT_I8;
  // invocation_dot: only with texel loads of 16 bytes (plan.hpp)
  if (!sub && !(c.TEXEL && (f32 || x_wide))) return false;
  const std::uint64_t coops = sub ? std::max<std::uint64_t>(1, c.local_size_x / max_lanes(dev)) : c.local_size_x;
  const std::uint64_t lanes = sub ? min_lanes(dev) : 1;
  // The x loop beside the recurrent one: per unit, the input's vec4s over the coop's lanes (in
  // K_STREAMS segments, as step_loops counts them).
  const std::uint64_t x_dots = streamed_loops(share(share(in, 4), lanes), c.K_STREAMS);
  const std::uint64_t loops = steps.loops + share(c.UNITS, coops * c.UPI) * (1 + x_dots);
  return loops <= kLoopBudget;
}

void require_step_budget(const Rnn& plan, const RnnLayer& layer) {
  const auto check = [](const char* kernel, std::uint64_t loops, std::uint64_t n) {
    if (loops > kLoopBudget) {
      throw Error(ErrorCode::out_of_range,
                  fmt::format("Rnn: {} would loop {} times per invocation for one step (dot products of "
                              "{} features), beyond the loop budget of {} that drivers such as lavapipe "
                              "enforce silently", kernel, loops, n, kLoopBudget));
    }
  };
  check("rnn_step", plan.steps.loops, layer.P ? layer.P : layer.H);
  if (layer.P) check("rnn_proj", plan.steps.proj_loops, layer.H);
}

// --- self-attention --------------------------------------------------------------------------

namespace {

// Solo path budgets (CPU drivers compile with LLVM at the first dispatch: these set that time).
// solo_registers keeps R * D q and o values per lane and unrolls R * BK * D multiply-adds per
// tile; measured on lavapipe (2 busy cores, D = 64): R=2, BK=4 compiles in ~1 s of CPU and runs
// at ~90% of the speed of R=4 (~2.7 s); D = 256 in registers takes ~4.4 s, hence the D limit.
constexpr std::uint64_t kRegisterMaxD = 128;
constexpr std::uint64_t kRegisterUnroll = 512;  // R * BK * D
// solo_memory unrolls GS * BK * R chunk products per step (GS = subgroup size with shuffles).
constexpr std::uint64_t kMemoryUnroll = 512;

std::uint32_t pow2_at_least(std::uint64_t x) {
  std::uint32_t p = 1;
  while (p < x) p *= 2;
  return p;
}

}  // namespace

kernels::SelfAttention::Constants self_attention_constants(const SelfAttentionPlan& p,
                                                           std::size_t head_dim) {
  return {.local_size_x = p.workgroup_size,
          .D = static_cast<std::uint32_t>(head_dim),
          .T = p.lanes_per_row,
          .BK = p.key_tile,
          .R = p.rows_per_lane,
          .SG = p.subgroup_size,
          .ACC_IN_REGISTERS = p.accumulate_in_registers};
}

kernels::Variant self_attention_variant(const SelfAttentionPlan& p, const OpOptions& options) {
  return {.shuffle = p.subgroup_shuffle, .fp16 = options.fp16_storage};
}

bool paired_query_blocks(const DeviceInfo& dev) { return is_cpu(dev); }

SelfAttentionPlan self_attention(const DeviceInfo& dev, std::size_t D, const OpOptions& opt,
                                 const SelfAttentionConfig& cfg) {
  const std::uint32_t sg = std::max<std::uint32_t>(1, dev.subgroup_size);
  const bool cpu = is_cpu(dev);

  // CPU drivers (lavapipe) run one subgroup per workgroup best; GPUs want 64+ lanes.
  std::uint32_t wg = opt.workgroup_size != 0 ? opt.workgroup_size : (cpu ? sg : std::max<std::uint32_t>(64, sg));
  wg = std::clamp<std::uint32_t>(wg, 1, max_workgroup(dev));

  // Lanes per query row. GPUs: enough that each lane keeps at most 16 output dims in registers.
  // CPU drivers: always one (the shared-memory path runs ~50x slower on lavapipe: every
  // shared-memory read inside a loop is a per-lane gather there).
  std::uint32_t T = cfg.lanes_per_row != 0 ? pow2_at_least(cfg.lanes_per_row)
                    : cpu                  ? 1
                                           : pow2_at_least((D + 15) / 16);
  T = std::min(T, wg);
  while (wg % T != 0) T /= 2;
  std::uint32_t BK = opt.tile != 0 ? opt.tile : (T == 1 ? 16 : 32);
  BK = std::max<std::uint32_t>(1, BK);
  // The solo path shares K/V loads across the subgroup with shuffles where it can.
  constexpr std::uint32_t kNeeded = VK_SUBGROUP_FEATURE_BASIC_BIT | VK_SUBGROUP_FEATURE_SHUFFLE_BIT;
  const bool shuffle = T == 1 && !opt.force_shared_memory_reduction && dev.subgroup_in_compute &&
                       (dev.subgroup_operations & kNeeded) == kNeeded && wg % sg == 0;
  // Each loaded K/V chunk feeds R rows of a lane: 2-4 rows run 2x faster than 1 on lavapipe.
  std::uint64_t R = 1;
  const bool registers = D <= kRegisterMaxD;
  if (T == 1 && registers) {
    R = cfg.rows_per_lane != 0 ? cfg.rows_per_lane : cpu ? (D <= 32 ? 4 : 2) : 1;
    R = std::clamp<std::uint64_t>(R, 1, std::max<std::uint64_t>(1, kRegisterUnroll / D));
    BK = static_cast<std::uint32_t>(
        std::clamp<std::uint64_t>(BK, 1, std::max<std::uint64_t>(1, kRegisterUnroll / (R * D))));
  } else if (T == 1) {
    const std::uint64_t gs = shuffle ? sg : 1;
    R = cfg.rows_per_lane != 0 ? cfg.rows_per_lane : (cpu ? 4 : 1);
    R = std::clamp<std::uint64_t>(R, 1, std::max<std::uint64_t>(1, kMemoryUnroll / gs));
    BK = static_cast<std::uint32_t>(
        std::clamp<std::uint64_t>(BK, 1, std::max<std::uint64_t>(1, kMemoryUnroll / (gs * R))));
  }

  SelfAttentionPlan plan;
  plan.workgroup_size = wg;
  plan.rows_per_lane = static_cast<std::uint32_t>(R);
  plan.accumulate_in_registers = T == 1 && registers;
  plan.subgroup_shuffle = shuffle;
  plan.subgroup_size = sg;
  auto fit = [&] {
    plan.lanes_per_row = T;
    plan.key_tile = BK;
    plan.query_rows = static_cast<std::uint32_t>(T == 1 ? wg * R : wg / T);
    return shared_bytes<kernels::SelfAttention>(self_attention_constants(plan, D),
                                                self_attention_variant(plan, opt));
  };
  while (fit() > dev.max_shared_memory) {
    if (BK > std::max<std::uint32_t>(T, 8)) {
      BK = std::max<std::uint32_t>(1, BK / 2);
    } else if (2 * T <= wg && wg % (2 * T) == 0) {
      T *= 2;
    } else if (BK > 1) {
      BK = std::max<std::uint32_t>(1, BK / 2);
    } else {
      throw Error(ErrorCode::out_of_range,
                  fmt::format("SelfAttention: head_dim {} needs {} bytes of shared memory even "
                              "with one query row and one key per tile; '{}' has {} "
                              "(maxComputeSharedMemorySize)",
                              D, fit(), dev.name, dev.max_shared_memory));
    }
  }
  plan.shared_bytes = static_cast<std::uint32_t>(fit());
  return plan;
}

std::uint32_t self_attention_weights_workgroup(const DeviceInfo& dev) {
  return std::min<std::uint32_t>(is_cpu(dev) ? std::max<std::uint32_t>(1, dev.subgroup_size) : 64,
                                 max_workgroup(dev));
}

// --- decoding ----------------------------------------------------------------------------------

namespace {
// A row reduction with `gpu_width` lanes per row on GPUs (reduction_workgroup).
Reduction row_reduction(const DeviceInfo& dev, const OpOptions& options, std::uint32_t gpu_width) {
  Reduction r;
  const bool sg = use_subgroups(dev, options);
  r.workgroup = reduction_workgroup(dev, options, gpu_width);
  r.variant = {.subgroup = sg};
  r.one_subgroup = one_subgroup(dev, r.workgroup, sg);
  return r;
}
}  // namespace

Reduction argmax(const DeviceInfo& dev, const OpOptions& options) {
  // One subgroup per row on CPU drivers; GPUs: 256 lanes share a row (vocabularies are long).
  return row_reduction(dev, options, 256);
}

Reduction topk(const DeviceInfo& dev, const OpOptions& options) {
  // Each invocation holds k entries in registers: fewer, wider lists on GPUs.
  return row_reduction(dev, options, 128);
}

Reduction logits_processor(const DeviceInfo& dev, const OpOptions& options) {
  // Reductions over the vocabulary, as argmax: one subgroup per row on CPU drivers, 256 lanes
  // on GPUs.
  return argmax(dev, options);
}

std::uint32_t beam_search_workgroup(const DeviceInfo& dev, const OpOptions& options) {
  // One invocation per source row: lavapipe likes one-subgroup workgroups, GPUs 64 lanes.
  return attention_workgroup(dev, options);
}

std::uint32_t embedding_workgroup(const DeviceInfo& dev, const OpOptions& options) {
  // A row is a copy of `dim` floats: one subgroup per row on CPU drivers, 64 lanes on GPUs.
  return reduction_workgroup(dev, options, 64);
}

namespace {

// Error(out_of_range) naming `what` ("Argmax: rows of V = ...") and the widest candidate.
[[noreturn]] void over_budget(const DeviceInfo& dev, std::uint32_t widest, const std::string& what) {
  throw Error(ErrorCode::out_of_range,
              fmt::format("{} need more loop iterations per invocation than the loop budget of {} "
                          "(which drivers such as lavapipe enforce silently) even with the widest "
                          "workgroup of '{}' ({} invocations)",
                          what, kLoopBudget, dev.name, widest));
}

// workgroup_within_budget(), or over_budget().
std::uint32_t row_workgroup(const DeviceInfo& dev, std::uint32_t workgroup, bool subgroups,
                            const std::function<std::uint64_t(std::uint64_t)>& loops,
                            const std::string& what) {
  const std::uint32_t wg = workgroup_within_budget(dev, workgroup, subgroups, loops);
  if (wg == 0) over_budget(dev, widest_workgroup(dev, workgroup, subgroups), what);
  return wg;
}

// A reduction kernel for a long row: the planned variant widened until it fits; where none of
// its widths does and it is the subgroup build, the shared-memory tree. The subgroup build walks
// every subgroup's partial result in each reduction (workgroup / lanes iterations), the tree
// halves log2(workgroup) times: with 4-lane subgroups a top-64 of 200,000 entries fits only with
// the tree (1024 invocations: ~14,500 iterations against ~46,000).
Reduction row_reduction(const DeviceInfo& dev, const Reduction& base,
                        const std::function<std::uint64_t(bool, std::uint64_t)>& loops,
                        const std::string& what) {
  const auto fit = [&](bool subgroups) {
    return workgroup_within_budget(dev, base.workgroup, subgroups,
                                   [&](std::uint64_t wg) { return loops(subgroups, wg); });
  };
  Reduction r = base;
  std::uint32_t wg = fit(r.variant.subgroup);
  if (wg == 0 && r.variant.subgroup) {
    r.variant.subgroup = false;
    wg = fit(false);
  }
  if (wg == 0) over_budget(dev, widest_workgroup(dev, base.workgroup, false), what);
  r.workgroup = wg;
  r.one_subgroup = one_subgroup(dev, wg, r.variant.subgroup);
  return r;
}

}  // namespace

std::uint64_t argmax_loops(const DeviceInfo& dev, bool subgroups, std::uint64_t wg, const ArgmaxRow& row) {
  // Its share of each pass over the row, of the attention and embedding copies, and three
  // reductions.
  return share(row.V, wg) * row.passes + share(row.S, wg) + share(row.emb, wg) +
         3 * reduction_loops(dev, subgroups, wg) + 8;
}

std::uint64_t topk_loops(const DeviceInfo& dev, bool subgroups, std::uint64_t wg, std::uint64_t N,
                         std::uint64_t k) {
  // Per entry of its slice an insertion into its sorted list (<= K_MAX shifts), the
  // log-softmax pass, the list's setup and rescaling, and 2k + 2 reductions (the max, then two
  // per merge round).
  const std::uint64_t kmax = std::bit_ceil(k);
  return share(N, wg) * (kmax + 2) + 2 * kmax + (2 * k + 2) * reduction_loops(dev, subgroups, wg) + 8;
}

std::uint64_t logits_processor_loops(const DeviceInfo& dev, bool subgroups, std::uint64_t wg,
                                     const LogitsRow& row) {
  // The rules' pass over the row, the suppressed ids, the n-gram scan (capacity starts of n - 1
  // comparisons), the suppressed sequences (up to sequence_length comparisons each) and sampling's 2 x 32 bisections of the 32-bit keys (a pass and a reduction
  // each).
  constexpr std::uint64_t kBisections = 32;
  std::uint64_t n = share(row.V, wg) + share(row.suppressed, wg) +
                    share(row.capacity, wg) * std::max<std::uint64_t>(row.ngram, 1) +
                    share(row.sequences, wg) * row.sequence_length + 8;
  if (row.sample) n += (2 * kBisections + 4) * (share(row.V, wg) + reduction_loops(dev, subgroups, wg));
  return n;
}

std::uint64_t embedding_loops(std::uint64_t wg, std::uint64_t cols) { return share(cols, wg) + 2; }

std::uint64_t self_attention_weights_loops(const DeviceInfo& dev, std::uint64_t wg, std::uint64_t S,
                                           std::uint64_t head_dim) {
  // S / wg keys scored twice (head_dim + 1 iterations each), then two tree reductions.
  return 2 * share(S, wg) * (head_dim + 1) + 2 * reduction_loops(dev, false, wg) + 8;
}

Reduction argmax_row(const DeviceInfo& dev, const Reduction& base, const ArgmaxRow& row) {
  return row_reduction(
      dev, base, [&](bool subgroups, std::uint64_t wg) { return argmax_loops(dev, subgroups, wg, row); },
      fmt::format("Argmax: rows of V = {} (S = {}, embedding width {})", row.V, row.S, row.emb));
}

Reduction topk_row(const DeviceInfo& dev, const Reduction& base, std::uint64_t N, std::uint64_t k) {
  return row_reduction(
      dev, base, [&](bool subgroups, std::uint64_t wg) { return topk_loops(dev, subgroups, wg, N, k); },
      fmt::format("TopK: rows of N = {} with k = {}", N, k));
}

Reduction logits_processor_row(const DeviceInfo& dev, const Reduction& base, const LogitsRow& row) {
  return row_reduction(
      dev, base,
      [&](bool subgroups, std::uint64_t wg) { return logits_processor_loops(dev, subgroups, wg, row); },
      fmt::format("LogitsProcessor: rows of V = {} ({} steps, n-gram {})", row.V, row.capacity, row.ngram));
}

std::uint32_t embedding_row(const DeviceInfo& dev, std::uint32_t workgroup, std::uint64_t cols) {
  // The beam search gathers whole encoder outputs (S x M floats) per row.
  return row_workgroup(dev, workgroup, false, [&](std::uint64_t wg) { return embedding_loops(wg, cols); },
                       fmt::format("Embedding: rows of {} floats", cols));
}

std::uint32_t self_attention_weights_row(const DeviceInfo& dev, std::uint32_t workgroup,
                                         std::uint64_t S, std::uint64_t head_dim) {
  auto loops = [&](std::uint64_t wg) { return self_attention_weights_loops(dev, wg, S, head_dim); };
  return row_workgroup(dev, workgroup, false, loops,
                       fmt::format("SelfAttention: record_weights: rows of S = {} keys (head_dim {})",
                                   S, head_dim));
}

}  // namespace vkrnn::plan
