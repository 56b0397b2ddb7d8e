#pragma once
// Tuning as pure functions of the device. Each planner takes a DeviceInfo (what vkrnn knows of
// a device: read from a real one, or written from a vendor's published limits), the op's
// config and its OpOptions, and returns its kernels as they will be built -- variant and
// specialization constants (workgroup sizes, tiles, subgroup or shared-memory reductions) --
// plus the op's dispatch shape and what it needs of the device. No Vulkan, no live device:
// tests/test_plan.cpp runs every planner over vendor profiles and checks each plan against the
// profile's limits; the ops build exactly what these return.
//
// Every choice between devices lives here, not in the op constructors. The shared memory a
// kernel needs comes from its SPIR-V (the build's reflection of the shader's shared arrays),
// never from a copy of the formula.
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

#include "ops/attention_common.hpp"
#include "ops/kernels/attention.hpp"
#include "ops/kernels/decode.hpp"
#include "ops/kernels/elementwise.hpp"
#include "ops/kernels/linear.hpp"
#include "ops/kernels/rnn.hpp"
#include "ops/kernels/self_attention.hpp"
#include "vkrnn/device.hpp"
#include "vkrnn/options.hpp"
#include "vkrnn/rnn.hpp"
#include "vkrnn/self_attention.hpp"

namespace vkrnn::plan {

// --- the device ---------------------------------------------------------------------------
// CPU drivers (lavapipe) run one-subgroup workgroups, fat register blocks and few, long chunks
// fastest; GPUs want 64+ invocations, many workgroups and light registers.
bool is_cpu(const DeviceInfo& dev);
// Whether kernels read a tensor of `bytes` through a uniform texel buffer (16-byte texelFetch)
// instead of storage-buffer loads. CPU drivers only: lavapipe turns each storage load into a
// loop over the SIMD lanes with a bounds test per element, while texel fetches become vector
// gathers (a read-only probe: 22-33 GB/s against 5.1-7.0 for uvec4 storage loads, same run).
// Not measured on a GPU, so GPUs keep storage buffers.
bool texel_loads(const DeviceInfo& dev, std::uint64_t bytes);
// Reductions use subgroup arithmetic (else shared-memory trees, or one invocation per dot).
bool use_subgroups(const DeviceInfo& dev, const OpOptions& options);
// The subgroup sizes a shader may run with: a workgroup of at most min_lanes invocations is one
// subgroup; a coop of max_lanes invocations holds whole subgroups of any size.
std::uint32_t min_lanes(const DeviceInfo& dev);
std::uint32_t max_lanes(const DeviceInfo& dev);
// The largest 1-D workgroup: min(maxComputeWorkGroupInvocations, maxComputeWorkGroupSize[0]).
std::uint32_t max_workgroup(const DeviceInfo& dev);
// Workgroup of a reduction kernel: forced (options.workgroup_size, rounded down to a power of
// two) or one subgroup on CPU drivers and `gpu_default` on GPUs; within the limits. A power of
// two, so one subgroup or whole subgroups (every subgroup size is a power of two).
std::uint32_t reduction_workgroup(const DeviceInfo& dev, const OpOptions& options,
                                  std::uint32_t gpu_default);
// The decoder-attention ops' choice: the subgroup size clamped to [64, 256] on GPUs.
std::uint32_t attention_workgroup(const DeviceInfo& dev, const OpOptions& options);
// Elementwise kernels (no reduction tree): 64 unless forced, within the limits.
std::uint32_t elementwise_workgroup(const DeviceInfo& dev, const OpOptions& options);
// ONE_SUBGROUP (shaders/include/reduce.glsl): the subgroup build runs workgroups no larger than
// the smallest subgroup the device may use, so its barriers can go.
bool one_subgroup(const DeviceInfo& dev, std::uint32_t workgroup, bool subgroups);
// Tensors host-mapped (unified memory: no staging copies) or device-local with staging.
bool host_mapped_tensors(const DeviceInfo& dev, bool force_staging);

// lavapipe (Mesa's gallivm, 22.x) silently ends every loop of a shader invocation once that
// invocation has run ~65535 loop iterations in total (LP_MAX_TGSI_LOOP_ITERATIONS): results are
// then just wrong. Plans keep an invocation's loop iterations (estimated pessimistically) under
// this budget, on every device.
constexpr std::uint32_t kLoopBudget = 32768;
// Loop iterations per invocation of one workgroup-wide reduction (reduce.glsl,
// float_order.glsl) in a 1-D workgroup of `workgroup` invocations: the subgroup variant walks
// the subgroups' partial results (as many as the smallest subgroups make), the tree variant
// halves log2(workgroup) times.
std::uint64_t reduction_loops(const DeviceInfo& dev, bool subgroups, std::uint64_t workgroup);
// Rows of data-dependent length (one workgroup per row, its invocations striding over it) widen
// the planned workgroup: the next candidate after `workgroup` is twice as wide, or for a subgroup
// build that would then be a partial subgroup on some size the device may run, whole subgroups
// of the largest size. A reduction keeps its planned shape times a power of two, so the widest
// candidate may be below max_workgroup(dev) (a Mali's 384 invocations give 256).
std::uint32_t next_row_workgroup(const DeviceInfo& dev, std::uint32_t workgroup, bool subgroups);
std::uint32_t widest_workgroup(const DeviceInfo& dev, std::uint32_t workgroup, bool subgroups);
// The narrowest candidate from `workgroup` on for which loops(width) stays within kLoopBudget;
// 0 when none does.
std::uint32_t workgroup_within_budget(const DeviceInfo& dev, std::uint32_t workgroup, bool subgroups,
                                      const std::function<std::uint64_t(std::uint64_t)>& loops);

// What an op's kernels ask of the device beyond their workgroup sizes.
struct Needs {
  std::uint64_t shared_bytes = 0;     // the most any of its kernels uses
  std::uint32_t storage_buffers = 0;  // per shader stage, the most any of its kernels binds
  bool fp16_storage = false;          // storageBuffer16BitAccess
  void add(std::uint64_t shared, std::uint32_t buffers);
};
// Throws Error naming the first limit of `dev` that `needs` exceeds: out_of_range for
// maxComputeSharedMemorySize and maxPerStageDescriptorStorageBuffers, missing_feature for
// storageBuffer16BitAccess. `what` names the op.
void require(const DeviceInfo& dev, const Needs& needs, const std::string& what);

// Shared memory of kernel K built as `variant` with `constants`, from its SPIR-V.
using kernels::shared_bytes;

// --- decoder attention ---------------------------------------------------------------------
using attention_detail::Dims;

// Source positions per workgroup (the S chunk) of the context and fused ops: options.tile when
// forced, else enough chunks that the device is filled (`target` workgroups, by default 16 on
// CPU drivers and 256 on GPUs, `per_chunk` workgroups per chunk) but no chunk is shorter than
// `min_chunk`; then clamped to [1, min(S, max_chunk)] (max_chunk keeps an invocation within
// kLoopBudget).
constexpr std::uint32_t kMaxTargetChunks = 256;
std::uint32_t source_chunk(const DeviceInfo& dev, const OpOptions& options, std::uint32_t S,
                           std::uint64_t per_chunk, std::uint32_t min_chunk,
                           std::uint32_t max_chunk, std::uint64_t target = 0);

// W q (+ b) of the general and additive scores. `used` is false for dot and scaled_dot.
// gemv: through the dense layers' GEMV (ops Gemm) instead of attention_query.comp, on CPU
// drivers: there attention_query's workgroup per output costs more than its loads (W1.general
// B = 1, H = 512: 250-270 us for 1 MB of W_q on lavapipe), while the GEMV reads W_q through texel
// views.
struct QueryProjection {
  bool used = false;
  bool gemv = false;
  kernels::Variant variant;
  kernels::AttentionQuery::Constants constants;
};
QueryProjection query_projection(const DeviceInfo& dev, const Dims& d, const OpOptions& options);

struct AttentionScores {
  kernels::Variant variant;
  kernels::AttentionScores::Constants constants;
  std::uint32_t block = 1;  // positions per workgroup
  std::uint32_t tiles = 1;  // workgroups per row
  QueryProjection query;
  Needs needs;
};
AttentionScores attention_scores(const DeviceInfo& dev, const Dims& d, const OpOptions& options);

struct MaskedSoftmax {
  kernels::Variant variant;
  kernels::AttentionSoftmax::Constants constants;
  std::uint32_t tile = 1;   // positions per workgroup
  std::uint32_t tiles = 1;  // tiles per row: one dispatch, else two
  Needs needs;
};
MaskedSoftmax masked_softmax(const DeviceInfo& dev, const Dims& d, const OpOptions& options);

struct AttentionContext {
  kernels::Variant variant;
  kernels::AttentionContext::Constants constants;
  std::uint32_t column_tile = 1;   // value columns per workgroup
  std::uint32_t column_tiles = 1;
  std::uint32_t chunk = 1;         // source positions per workgroup
  std::uint32_t chunks = 1;        // chunks per row: one dispatch, else two
  Needs needs;
};
AttentionContext attention_context(const DeviceInfo& dev, const Dims& d, const OpOptions& options);

// Split rows project the query in the fused kernel (each workgroup repeating it) only while
// the repeat is at most 1/kFoldedRepeatShare of a workgroup's own multiply-adds (GPUs), or
// 1/kFoldedRepeatShareCpu on CPU drivers with too few rows to fill their threads, where the
// dispatch it saves costs more (lavapipe on the 2-vCPU Xeon VM, W1.general B = 1 S = 4096
// H = 256 in 4 splits, a repeat of 1/8: 313-355 us of GPU time against 370-376 with the
// projection's dispatch, wall 430-501 against 572-582 us).
constexpr std::uint64_t kFoldedRepeatShare = 16;
constexpr std::uint64_t kFoldedRepeatShareCpu = 8;

// Split rows are merged in the fused kernel while the merge loop (iterations per invocation of
// the row's last workgroup) is at most this, else by a combine dispatch.
constexpr std::uint64_t kMergeLoopCpu = 2048;
constexpr std::uint64_t kMergeLoopGpu = 64;

struct FusedAttention {
  kernels::Variant variant;
  kernels::AttentionFused::Constants constants;
  kernels::AttentionFusedCombine::Constants combine;  // used when splits > 1 and !merge
  std::uint32_t block = 1;         // positions per workgroup step (workgroup * R)
  std::uint32_t column_tile = 1, column_tiles = 1;
  std::uint32_t chunk = 1;         // source positions per split
  std::uint32_t splits = 1;        // 1: direct; else merged in the kernel or by a combine dispatch
  bool merge = false;              // splits > 1 merged by the fused kernel (constants.MERGE > 0)
  // Where the keys and the values may be one tensor read once, a position of each of
  // POS_STREAMS segments at a time (CPU drivers, a subgroup per score, one subgroup per
  // workgroup and column tile): the constants with STREAM, for records whose keys are their
  // values; STREAM false elsewhere.
  kernels::AttentionFused::Constants streamed;
  // The query projection (general, additive): in the kernel (constants.QP > 0) when one
  // workgroup owns each row, else its own dispatch.
  QueryProjection query;
  Needs needs;
};
FusedAttention fused_attention(const DeviceInfo& dev, const Dims& d, const OpOptions& options);

struct KeyProjection {
  kernels::Variant variant;
  kernels::AttentionKeys::Constants constants;  // a T x T workgroup, RM rows per invocation
  Needs needs;
};
KeyProjection key_projection(const DeviceInfo& dev, const OpOptions& options);

// --- dense layers ----------------------------------------------------------------------------
enum class GemmPath { gemv, gemv_invocation, tiled };
// The storage a dense or recurrent layer built with `options` gives its weight matrices
// (automatic resolved: f16 with fp16_storage, else f32).
WeightStorage weight_storage(const OpOptions& options);
struct Gemm {
  bool subgroups = false;
  std::uint32_t coop_lanes = 1;     // lanes per dot product: the largest subgroup, or 1
  std::uint32_t gemv_workgroup = 1;
  kernels::Gemm::Constants tiled;   // for Variant{.fp16 = weights are f16}
  Needs needs;                      // fp16_storage: whether options ask for f16 weights
};
Gemm gemm(const DeviceInfo& dev, const OpOptions& options);
GemmPath gemm_path(const DeviceInfo& dev, const Gemm& g, std::size_t m);
// A GEMV dispatch of M rows on `path` (gemv or gemv_invocation), K aligned or not.
struct Gemv {
  kernels::Variant variant;  // fp16: set by the caller from the weights' dtype
  kernels::Gemv::Constants constants;
  std::uint32_t per_group = 1;  // W rows per workgroup: TN * BLOCKS
};
Gemv gemv(const DeviceInfo& dev, const Gemm& g, const OpOptions& options, std::size_t m,
          GemmPath path, bool aligned);
// Lanes that share vector loads through subgroup shuffles in the per-invocation GEMV and
// recurrent step (their _shuffle builds), or 0: on CPU drivers a load costs as much when every
// lane reads one address as when each reads its own, a shuffle next to nothing
// (docs/kernels.md). Needs shuffles in compute, a subgroup size that never varies and a
// workgroup of whole subgroups.
std::uint32_t shuffle_lanes(const DeviceInfo& dev, std::uint32_t workgroup);
// Columns of K one dispatch takes (K whole, or slices of a multiple of 64, the first writing y
// and the others adding to it: GEMM_ACCUMULATE), so that each invocation of the tiled kernel /
// of GEMV plan `v` stays within kLoopBudget.
std::uint64_t gemm_k_slice(const kernels::Gemm::Constants& tiled, std::uint64_t K);
std::uint64_t gemv_k_slice(const DeviceInfo& dev, const Gemm& g, const Gemv& v, std::uint64_t K);
// Rows per block of Linear's packed weight layout (gemv_block.glsl's PACK_ROWS: blocks of the
// per-invocation GEMV's rows per workgroup, stored 16-byte unit by unit), or 0 for row-major:
// on CPU drivers, whose GEMV is the per-invocation one for every M (gemm_path), unless
// options.pack_weights is off. GPUs keep row-major weights: their lanes split K (not measured).
std::uint32_t pack_rows(const DeviceInfo& dev, const Gemm& g, const OpOptions& options);
// Segments of K a per-invocation GEMV lane walks in step (gemv_block.glsl's K_STREAMS), 1 for
// the plain walk: on CPU drivers, where W is packed (a segment is one run of memory) and one
// row of X (B = 1) leaves the loads, not the products, the bound, kCpuLoadStreams fp32 streams
// of misses in flight per thread instead of one (docs/kernels.md). rnn_step's K_STREAMS likewise.
constexpr std::uint32_t kCpuLoadStreams = 4;
// Keys and values apart are streamed (plan::fused_attention) from this many bytes of them on:
// lavapipe on a 2-core Xeon VM, W1.additive B = 16 S = 4096 (128 / 256 MiB) 1.6x / 1.25x faster,
// B = 16 S = 512 H = 512 (32 MiB) and smaller, read from the caches, 3-10% slower.
constexpr std::uint64_t kStreamValuesBytes = 64ull << 20;
std::uint32_t gemv_k_streams(const DeviceInfo& dev, const kernels::Gemv::Constants& c);

// --- recurrent layers ------------------------------------------------------------------------
// The layers of an Rnn as the planner sees them (every layer alike: only the input width
// differs, which the GEMM before each layer takes).
struct RnnLayer {
  CellType cell = CellType::gru;
  std::uint64_t H = 1;  // hidden units
  std::uint64_t P = 0;  // proj_size (LSTM), 0 without
  std::uint64_t D = 1;  // directions
};
// What tests and benchmarks pin (Rnn::set_path, set_step_kernel, set_steps_per_dispatch).
struct RnnForced {
  RnnPath path = RnnPath::automatic;
  RnnStepKernel step = RnnStepKernel::automatic;
  std::uint64_t run = 0;  // fewer steps per fused dispatch than the budget allows (0: automatic)
};
// The per-step path: rnn_step per timestep (and rnn_proj with a projection); each kernel's loop
// iterations per invocation and step, which Rnn checks against kLoopBudget before recording
// (require_step_budget).
struct RnnSteps {
  kernels::Variant variant;  // subgroup: the subgroup_dot kernel
  kernels::RnnStep::Constants constants;
  kernels::Variant proj_variant;
  kernels::RnnProj::Constants proj;  // used when P > 0
  std::uint64_t loops = 0, proj_loops = 0;
};
// The fused path: rnn_seq runs `run` steps per dispatch with h in shared memory (BB = 0: h does
// not fit; run = 0: not even one step fits the loop budget).
struct RnnFused {
  kernels::Variant variant;
  kernels::RnnSeq::Constants constants;
  std::uint64_t run = 0;
};
struct Rnn {
  RnnStepKernel step_kernel = RnnStepKernel::invocation_dot;  // what the per-step path uses
  RnnPath path = RnnPath::per_step;                           // per_step or fused
  RnnSteps steps;
  RnnFused fused;
  Needs needs;  // the per-step kernels' (the fused path is taken only where it fits)
  // W_hh stored in blocks of this many hidden units (ops::pack_gate_blocks; both kernels' constant
  // PACK_UNITS), 0: row-major. The same for every B and every forced kernel: the layout is fixed
  // when the weights load.
  std::uint32_t pack_units = 0;
  // The same blocks for any matrix of the layer whose rows are whole 16-byte units (W_hh:
  // pack_units; W_ih: input_pack_units), 0 where nothing packs (GPUs, pack_weights = false).
  std::uint32_t pack_block = 0;
};
// W_ih's blocks for `in` input features (rnn_step's X_PACK_UNITS, the input GEMM's PACK_UNITS):
// plan.pack_block where its rows are whole 16-byte units in `storage`, else 0 (row-major).
std::uint32_t input_pack_units(const Rnn& plan, WeightStorage storage, std::uint64_t in);
// The plan for batches of B rows. Throws Error(missing_feature) for a forced subgroup_dot
// without subgroup arithmetic and Error(invalid_argument) for a forced fused path that cannot
// run (a projection, h too large for shared memory, or not one step within the loop budget).
Rnn rnn(const DeviceInfo& dev, const RnnLayer& layer, const OpOptions& options, std::uint64_t B,
        const RnnForced& forced = {});
// Throws Error(out_of_range) naming the kernel when one step of the per-step path would loop
// beyond kLoopBudget per invocation ("Rnn: rnn_proj would loop ...").
void require_step_budget(const Rnn& plan, const RnnLayer& layer);
// Whether rnn_step computes W_ih x itself for `in` input features (RNN_X_INLINE, Rnn::step),
// saving the input GEMM's dispatch, within kLoopBudget: with the subgroup_dot kernel (a coop's
// lanes split each row, so W_ih streams as in the GEMV), and with invocation_dot (CPU drivers)
// where it reads through texel views (TEXEL: fp32, or fp16 / int8 W_ih with x_wide rows). On
// lavapipe, K.gru (GRU 768 -> 256), GPU time, interleaved: B = 1 1.4x and B = 16 1.2x faster
// than the GEMM and the step (fp32). fp16 and int8 W_ih read a vec4 per load were slower than
// the GEMM there (W3.b1 fp16 272 vs 352 tok/s), so they inline only with 16-byte loads.
bool step_input_inline(const DeviceInfo& dev, const RnnSteps& steps, std::uint64_t in, bool x_wide);
// Whether an fp16 (f16) or int8 (i8) weight matrix with rows of n elements is whole 16-byte
// units a row, which rnn_step's WIDE / X_WIDE loads need: fp16 n % 8 == 0; int8 (rows padded
// to words) ceil(n / 4) % 4 == 0. Never for fp32 (its vec4s are 16 bytes already).
bool wide_rows(bool f16, bool i8, std::uint64_t n);
// Loop iterations one invocation of rnn_seq runs for `steps` steps (from above).
std::uint64_t fused_loops(const DeviceInfo& dev, const RnnFused& fused, const RnnLayer& layer,
                          std::uint64_t steps);

// --- self-attention ------------------------------------------------------------------------
// The order self_attention.comp hands its query blocks out in. Under a causal mask block i
// has i + 1 tiles of keys. GPUs take the longest first (their workgroups start as others
// finish, so the short ones fill in at the end). CPU drivers take them longest and shortest in
// turn, so that any run of consecutive workgroups holds its share of the keys: lavapipe hands
// each of its threads a fixed run of a dispatch's workgroups, and longest first gave the first
// half three quarters of the keys (W4 causal S = 4096 on the 2-vCPU Xeon VM: 41.1-42.2 ms of GPU
// time in turn, 60.2-61.3 longest first; non-causal unchanged).
bool paired_query_blocks(const DeviceInfo& dev);
SelfAttentionPlan self_attention(const DeviceInfo& dev, std::size_t head_dim,
                                 const OpOptions& options, const SelfAttentionConfig& config);
kernels::SelfAttention::Constants self_attention_constants(const SelfAttentionPlan& p,
                                                           std::size_t head_dim);
kernels::Variant self_attention_variant(const SelfAttentionPlan& p, const OpOptions& options);
std::uint32_t self_attention_weights_workgroup(const DeviceInfo& dev);

// --- decoding ---------------------------------------------------------------------------------
struct Reduction {
  kernels::Variant variant;
  std::uint32_t workgroup = 1;
  bool one_subgroup = false;
};
Reduction argmax(const DeviceInfo& dev, const OpOptions& options);
Reduction topk(const DeviceInfo& dev, const OpOptions& options);
Reduction logits_processor(const DeviceInfo& dev, const OpOptions& options);
std::uint32_t beam_search_workgroup(const DeviceInfo& dev, const OpOptions& options);
std::uint32_t embedding_workgroup(const DeviceInfo& dev, const OpOptions& options);

// Rows of data-dependent length (one workgroup per row, its invocations striding over it): the
// op's planned workgroup, widened (next_row_workgroup) until one invocation's loop iterations
// stay within kLoopBudget, one_subgroup re-planned for the width. A subgroup build that fits at
// no width gives way to the shared-memory tree (its reductions take log2(width) iterations, not
// width / lanes). Error(out_of_range) naming the op and "loop budget" when nothing fits.
struct ArgmaxRow {
  std::uint64_t V = 1;       // entries per row
  std::uint64_t passes = 1;  // passes over the row: the max, the log-softmax sum, the logits copy
  std::uint64_t S = 0;       // attention weights copied per row
  std::uint64_t emb = 0;     // embedding floats copied per row
};
Reduction argmax_row(const DeviceInfo& dev, const Reduction& base, const ArgmaxRow& row);
// Rows of V logits under the processor's rules: `suppressed` ids, an n-gram scan of up to
// `capacity` starts, sampling's bisections; `sequences` suppressed sequences of up to
// `sequence_length` tokens.
struct LogitsRow {
  std::uint64_t V = 1, suppressed = 0, capacity = 0, ngram = 0, sequences = 0, sequence_length = 0;
  bool sample = false;
};
// Loop iterations one invocation of a `wg`-wide workgroup runs on such a row (estimated from
// above: every loop whose trip count the row sets, and the reductions' loops).
std::uint64_t argmax_loops(const DeviceInfo& dev, bool subgroups, std::uint64_t wg, const ArgmaxRow& row);
std::uint64_t topk_loops(const DeviceInfo& dev, bool subgroups, std::uint64_t wg, std::uint64_t N,
                         std::uint64_t k);
std::uint64_t logits_processor_loops(const DeviceInfo& dev, bool subgroups, std::uint64_t wg,
                                     const LogitsRow& row);
std::uint64_t embedding_loops(std::uint64_t wg, std::uint64_t cols);
std::uint64_t self_attention_weights_loops(const DeviceInfo& dev, std::uint64_t wg, std::uint64_t S,
                                           std::uint64_t head_dim);
// Rows of N entries, the best k kept (in lists of bit_ceil(k)).
Reduction topk_row(const DeviceInfo& dev, const Reduction& base, std::uint64_t N, std::uint64_t k);
Reduction logits_processor_row(const DeviceInfo& dev, const Reduction& base, const LogitsRow& row);
// Rows of `cols` floats copied.
std::uint32_t embedding_row(const DeviceInfo& dev, std::uint32_t workgroup, std::uint64_t cols);
// Rows of S keys scored twice (head_dim + 1 iterations each), with two tree reductions.
std::uint32_t self_attention_weights_row(const DeviceInfo& dev, std::uint32_t workgroup,
                                         std::uint64_t S, std::uint64_t head_dim);

}  // namespace vkrnn::plan
