#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <cstdint>
#include <limits>

#include <fmt/format.h>

#include "ops/common.hpp"
#include "ops/greedy.hpp"
#include "vk/sequence_access.hpp"
#include "ops/kernels/linear.hpp"
#include "plan.hpp"
#include "vkrnn/error.hpp"
#include "vkrnn/half.hpp"
#include "vkrnn/linear.hpp"

namespace vkrnn {
namespace {

constexpr const char* kOp = "Gemm";

using Push = kernels::GemmPush;

std::string describe(const Tensor& t) {
  return t.valid() ? fmt::format("{} {}", to_string(t.dtype()), to_string(t.shape()))
                   : std::string("an empty tensor");
}

std::uint32_t u32(std::uint64_t v, const char* what) {
  if (v > std::numeric_limits<std::uint32_t>::max()) {
    throw Error(ErrorCode::out_of_range,
                fmt::format("{}: {} = {} exceeds 32-bit indexing", kOp, what, v));
  }
  return static_cast<std::uint32_t>(v);
}

const char* expected_dtypes(std::initializer_list<DType> dtypes) {
  return dtypes.size() == 1 ? "f32" : "f32, f16 or i8";
}

// Checks that a view lies inside its tensor and has the expected dtype. An i8 view is read four
// elements (one 32-bit word) at a time: its rows start on words, the last one's word included.
void check_view(const MatrixView& v, const char* name, std::initializer_list<DType> dtypes) {
  if (!v.tensor.valid()) {
    throw Error(ErrorCode::invalid_argument, fmt::format("{}: argument '{}' is an empty tensor", kOp, name));
  }
  if (std::find(dtypes.begin(), dtypes.end(), v.tensor.dtype()) == dtypes.end()) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{}: argument '{}': expected {}, got {}", kOp, name, expected_dtypes(dtypes),
                            describe(v.tensor)));
  }
  if (v.rows == 0 || v.cols == 0) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{}: argument '{}' is an empty {} x {} matrix", kOp, name, v.rows, v.cols));
  }
  const std::size_t ld = v.ld ? v.ld : v.cols;
  if (ld < v.cols) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{}: argument '{}': row stride {} is shorter than a row ({})", kOp, name, ld, v.cols));
  }
  const bool words = v.tensor.dtype() == DType::i8;
  if (words && (ld % 4 != 0 || v.offset % 4 != 0)) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{}: argument '{}': i8 rows are read four elements at a time, so the row "
                            "stride ({}) and offset ({}) must be multiples of 4 (pad each row)",
                            kOp, name, ld, v.offset));
  }
  const std::uint64_t row = words ? ops::i8_row_stride(v.cols) : v.cols;
  const std::uint64_t end = std::uint64_t(v.offset) + std::uint64_t(v.rows - 1) * ld + row;
  if (end > v.tensor.size()) {
    throw Error(ErrorCode::out_of_range,
                fmt::format("{}: argument '{}': a {} x {} view at offset {} with row stride {} needs {} "
                            "elements, but the tensor ({}) has {}",
                            kOp, name, v.rows, v.cols, v.offset, ld, end, describe(v.tensor), v.tensor.size()));
  }
  u32(end, name);
}

}  // namespace

MatrixView MatrixView::of(const Tensor& t) {
  if (!t.valid()) throw Error(ErrorCode::invalid_argument, "MatrixView::of: an empty tensor");
  const auto& s = t.shape();
  const std::size_t cols = s.empty() ? 1 : s.back();
  const std::size_t rows = cols ? t.size() / cols : 0;
  return {t, rows, cols, 0, cols};
}

Gemm::Gemm(Context& ctx, const OpOptions& options)
    : ctx_(&ctx), options_(options), plan_(std::make_shared<plan::Gemm>(plan::gemm(ctx.device(), options))) {
  plan::require(ctx.device(), plan_->needs, kOp);
  null_ = kernels::null_tensor(ctx);
}

Gemm::Path Gemm::path_for(std::size_t m) const {
  if (forced_ != Path::automatic) return forced_;
  switch (plan::gemm_path(ctx_->device(), *plan_, m)) {
    case plan::GemmPath::gemv: return Path::gemv;
    case plan::GemmPath::gemv_invocation: return Path::gemv_invocation;
    case plan::GemmPath::tiled: return Path::tiled;
  }
  return Path::tiled;
}

void Gemm::record(Sequence& seq, const MatrixView& x, const MatrixView& w, const Tensor& bias,
                  std::size_t bias_offset, const MatrixView& y) const {
  if (w.tensor.valid() && w.tensor.dtype() == DType::i8) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{}: argument 'w' ({}) is i8: record_i8 takes int8 weights with their scales",
                            kOp, describe(w.tensor)));
  }
  record_any(seq, x, w, false, 0, {}, bias, bias_offset, y);
}

void Gemm::record_i8(Sequence& seq, const MatrixView& x, const MatrixView& w, std::size_t scale_offset,
                     const Tensor& bias, std::size_t bias_offset, const MatrixView& y) const {
  if (w.tensor.valid() && w.tensor.dtype() != DType::i8) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{}: record_i8: argument 'w' is {}, expected i8", kOp, describe(w.tensor)));
  }
  record_any(seq, x, w, true, scale_offset, {}, bias, bias_offset, y);
}

void Gemm::record(Sequence& seq, const Tensor& x, const Tensor& w, const Tensor& bias,
                  const Tensor& y) const {
  if (!x.valid() || !w.valid() || !y.valid()) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{}: x, w and y must be tensors (got x {}, w {}, y {})", kOp, describe(x),
                            describe(w), describe(y)));
  }
  if (w.rank() != 2) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{}: argument 'w': expected [N, K], got {}", kOp, describe(w)));
  }
  const MatrixView xv = MatrixView::of(x);
  const MatrixView yv = MatrixView::of(y);
  if (xv.cols != w.dim(1)) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{}: argument 'x' {} has K = {} in its last dimension, but w {} has K = {}",
                            kOp, describe(x), xv.cols, describe(w), w.dim(1)));
  }
  if (yv.cols != w.dim(0) || yv.rows != xv.rows) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{}: argument 'y': expected {} rows of N = {} (x {}, w {}), got {}", kOp,
                            xv.rows, w.dim(0), describe(x), describe(w), describe(y)));
  }
  if (bias.valid() && (bias.dtype() != DType::f32 || bias.size() != w.dim(0))) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{}: argument 'bias': expected f32 with N = {} elements, got {}", kOp,
                            w.dim(0), describe(bias)));
  }
  record(seq, xv, MatrixView::of(w), bias, 0, yv);
}

namespace {

// What gemv_argmax.comp needs of the device, and the scratch words it takes for M rows over
// `row_groups` blocks of N: 4 words for the arrival count, then 4 per block and row for its
// partial (key, index, max, sum of exp). Gemm::greedy_scratch_words sizes the scratch and
// dispatch_greedy checks it, by the same rules.
bool gemv_argmax_fits(const DeviceInfo& dev) {
  return dev.max_storage_buffers_per_stage >= kernels::GemvArgmax::storage_buffer_count;
}
std::size_t gemv_argmax_words(std::size_t M, std::size_t row_groups) { return 4 + 4 * M * row_groups; }

}  // namespace

bool ops::PlannedGemv::joinable(const DeviceInfo& dev) const {
  return groups[2] == 1 && std::has_single_bit(v.constants.local_size_x) && v.constants.PACK_UNITS == 0 &&
         plan::gemv_k_slice(dev, gemm, v, 2 * std::uint64_t(push.K)) >= 2 * std::uint64_t(push.K);
}

// gemv_argmax.comp for Gemm::record_any's planned GEMV.
bool ops::GreedyTail::record(Context& ctx, Sequence& seq, const PlannedGemv& gemv) const {
  const plan::Gemv& v = gemv.v;
  const kernels::GemmPush& push = gemv.push;
  const Groups& g = gemv.groups;
  const auto& dev = ctx.device();
  const kernels::Argmax::Push& a = greedy.push;
  // A GEMV it can join (PlannedGemv::joinable), and the last workgroup's merge and bookkeeping
  // within the loop budget beside the products. Any block of
  // rows plan::gemv makes, lavapipe's 16-row blocks included: W3.b16 fused took the time of the
  // two dispatches within the noise (2-core Xeon VM, toggled in one build, 3 interleaved rounds,
  // GPU ms a decode: fp32 199-204 against 198-207, fp16 242-254 against 243-251, int8 217-221
  // against 216-223; W3 at B = 8 likewise) with one dispatch a step fewer. (A 4-row limit stood
  // here, from comparisons that ran one library twice: bench/SCHEMA.md, "Comparing two builds".)
  const std::uint32_t wg = v.constants.local_size_x;
  // With the gate check: M flags read by every invocation and the table's share to zero.
  const std::uint64_t merge_loops =
      std::uint64_t(push.M) * plan::argmax_loops(dev, v.variant.subgroup, wg, {.V = g[0], .passes = 1, .S = greedy.S, .emb = greedy.emb}) +
      (greedy.gate.valid() ? push.M + ops::ceil_div(detail::SequenceAccess::gate_words(), wg) : 0);
  const std::size_t words = gemv_argmax_words(push.M, g[0]);
  if ((a.flags & (ARGMAX_LOGITS | ARGMAX_CHOSEN | ARGMAX_VALUE)) != 0 || !scratch.valid() ||
      scratch.dtype() != DType::u32 || scratch.size() < words || !gemv.joinable(dev) || !gemv_argmax_fits(dev) ||
      merge_loops > plan::kLoopBudget / 2 || a.B != push.M || a.V != push.N) {
    return false;
  }
  kernels::GemvArgmax::Constants c{.local_size_x = wg, .TM = v.constants.TM, .TN = v.constants.TN,
                                   .BLOCKS = v.constants.BLOCKS, .ALIGNED = v.constants.ALIGNED,
                                   .WEIGHT_I8 = v.constants.WEIGHT_I8, .WIDE = v.constants.WIDE,
                                   .TEXEL = v.constants.TEXEL, .PACK_ROWS = v.constants.PACK_ROWS,
                                   .X_LANES = v.constants.X_LANES, .K_STREAMS = v.constants.K_STREAMS};
  const kernels::GemvArgmax::Push p{push.M, push.N, push.K, push.x_off, push.ldx, push.w_off, push.ldw,
                                    push.b_off, push.y_off, push.ldy, push.flags, push.s_off,
                                    a.S, a.ld, a.col, a.eos, a.pad, a.flags, a.emb_dim, a.table_offset,
                                    a.table_ld, a.emb_offset, a.emb_ld, a.mark,
                                    greedy.gate.valid() ? detail::SequenceAccess::gate_words() : 0u};
  const kernels::Argmax::Bindings& b = greedy.bindings;
  const kernels::Gemv::Bindings& gemm = gemv.bindings;
  kernels::dispatch<kernels::GemvArgmax>(
      seq, kernels::make<kernels::GemvArgmax>(ctx, c, v.variant),
      {.xs = gemm.xs, .ws = gemm.ws, .bias = gemm.bias, .ys = gemm.ys, .index_out = b.index_out,
       .tok_hist = b.tok_hist, .score_hist = b.score_hist, .finished = b.finished, .weights = b.weights,
       .attn_hist = b.attn_hist, .table = b.table, .emb_out = b.emb_out, .nonfinite = b.nonfinite,
       .scratch = scratch, .wt = gemm.wt, .xt = gemm.xt, .gate = greedy.gate},
      p, g, gemv.null);
  return true;
}

namespace {

}  // namespace

bool Gemm::record_any(Sequence& seq, const MatrixView& x, const MatrixView& w, bool i8,
                      std::size_t scale_offset, const Packing& packing, const Tensor& bias, std::size_t bias_offset,
                      const MatrixView& y, const ops::GemvTail* tail) const {
  check_view(x, "x", {DType::f32});
  check_view(w, "w", {DType::f32, DType::f16, DType::i8});
  check_view(y, "y", {DType::f32});
  if (x.cols != w.cols) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{}: x is {} x {} but w is {} x {}: K differs", kOp, x.rows, x.cols, w.rows, w.cols));
  }
  if (y.rows != x.rows || y.cols != w.rows) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{}: y is {} x {}, expected {} x {} (x {} x {}, w {} x {})", kOp, y.rows,
                            y.cols, x.rows, w.rows, x.rows, x.cols, w.rows, w.cols));
  }
  if (bias.valid()) {
    if (bias.dtype() != DType::f32 || bias_offset + w.rows > bias.size()) {
      throw Error(ErrorCode::invalid_argument,
                  fmt::format("{}: argument 'bias': needs f32 elements [{}, {}), got {}", kOp,
                              bias_offset, bias_offset + w.rows, describe(bias)));
    }
  }
  if (i8 && (scale_offset % 4 != 0 || std::uint64_t(scale_offset) + 4 * std::uint64_t(w.rows) > w.tensor.size())) {
    throw Error(ErrorCode::out_of_range,
                fmt::format("{}: the {} f32 scales of i8 weights ({}) at element {}: need a multiple of 4 "
                            "and elements [{}, {}) of the tensor", kOp, w.rows, describe(w.tensor),
                            scale_offset, scale_offset, std::uint64_t(scale_offset) + 4 * std::uint64_t(w.rows)));
  }
  const auto& ys = y.tensor.storage_ptr();
  if (ys == x.tensor.storage_ptr() || ys == w.tensor.storage_ptr() ||
      (bias.valid() && ys == bias.storage_ptr())) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{}: y ({}) shares memory with an input: other workgroups would read "
                            "what this one writes", kOp, describe(y.tensor)));
  }
  const bool f16 = w.tensor.dtype() == DType::f16;
  if (f16 && !ctx_->features().storage_buffer_16bit) {
    throw Error(ErrorCode::missing_feature,
                fmt::format("{}: f16 weights need storageBuffer16BitAccess, which '{}' lacks (or "
                            "the adopted VkDevice did not enable)", kOp, ctx_->device().name));
  }

  const std::size_t ldx = x.ld ? x.ld : x.cols;
  const std::size_t ldw = w.ld ? w.ld : w.cols;
  const std::size_t ldy = y.ld ? y.ld : y.cols;
  const Push push{u32(x.rows, "M"),   u32(w.rows, "N"),   u32(x.cols, "K"),
                  u32(x.offset, "x offset"), u32(ldx, "x row stride"),
                  u32(w.offset, "w offset"), u32(ldw, "w row stride"),
                  u32(bias_offset, "bias offset"),
                  u32(y.offset, "y offset"), u32(ldy, "y row stride"),
                  bias.valid() ? GEMM_BIAS : 0u,
                  u32(scale_offset, "scale offset")};
  const auto& dev = ctx_->device();
  const std::size_t M = x.rows, N = w.rows;

  auto fold_rows = [&](std::uint64_t tiles, std::uint64_t x_groups, const char* kernel) -> Groups {
    const std::uint64_t gy = std::min<std::uint64_t>(tiles, dev.max_workgroup_count[1]);
    const std::uint64_t gz = (tiles + gy - 1) / gy;
    if (x_groups > dev.max_workgroup_count[0] || gz > dev.max_workgroup_count[2]) {
      throw Error(ErrorCode::out_of_range,
                  fmt::format("{}: {} x {} output needs {} x {} workgroups of kernel '{}', beyond "
                              "the device grid", kOp, M, N, x_groups, tiles, kernel));
    }
    return {static_cast<std::uint32_t>(x_groups), static_cast<std::uint32_t>(gy),
            static_cast<std::uint32_t>(gz)};
  };

  // K in slices that keep every invocation within the loop budget (plan::gemm_k_slice): the
  // first writes y (with the bias), the others add to it, the last applies the activation. One
  // slice unless K runs to tens of thousands.
  const std::uint32_t epilogue = !activation_                          ? 0u
                                 : *activation_ == ActivationFn::tanh    ? GEMM_TANH
                                 : *activation_ == ActivationFn::sigmoid ? GEMM_SIGMOID
                                                                         : GEMM_RELU;
  auto dispatch_slices = [&](std::uint64_t slice, auto&& record) {
    for (std::uint64_t k0 = 0; k0 < push.K; k0 += slice) {
      Push part = push;
      part.K = static_cast<std::uint32_t>(std::min<std::uint64_t>(slice, push.K - k0));
      part.x_off = push.x_off + static_cast<std::uint32_t>(k0);
      part.w_off = push.w_off + static_cast<std::uint32_t>(k0);
      part.flags = (k0 == 0 ? push.flags : GEMM_ACCUMULATE) | (k0 + slice >= push.K ? epilogue : 0u);
      record(part);
    }
  };

  const Path path = path_for(M);
  const std::uint32_t pack_rows = packing.rows;
  const bool packed = pack_rows || packing.gate_units;
  if (pack_rows && path != Path::gemv_invocation) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{}: the weights ({}) are packed in blocks of {} rows for the per-invocation GEMV, "
                            "which path '{}' cannot read: build the layer with OpOptions::pack_weights = false "
                            "to pin another path", kOp, describe(w.tensor), pack_rows, path == Path::tiled ? "tiled" : "gemv"));
  }
  // A recurrent layer's gate blocks: the GEMV kernels read them (CPU drivers always take those).
  if (packing.gate_units && path == Path::tiled) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{}: the weights ({}) are packed in gate blocks of {} units, which the tiled GEMM "
                            "cannot read: build the layer with OpOptions::pack_weights = false to pin that path",
                            kOp, describe(w.tensor), packing.gate_units));
  }
  if (tail && (path == Path::tiled || activation_)) return false;
  const kernels::GemmBindings bindings{.xs = x.tensor, .ws = w.tensor, .bias = bias, .ys = y.tensor};
  if (path == Path::tiled) {
    const kernels::Variant variant{.fp16 = f16};
    kernels::Gemm::Constants t = plan_->tiled;
    t.WEIGHT_I8 = i8;
    const Kernel k = kernels::make<kernels::Gemm>(*ctx_, t, variant);
    const std::uint64_t bm = t.local_size_y * t.TM, bn = t.local_size_x * t.TN;
    const Groups g = fold_rows((M + bm - 1) / bm, (N + bn - 1) / bn, "gemm");
    dispatch_slices(plan::gemm_k_slice(t, push.K), [&](const Push& part) {
      kernels::dispatch<kernels::Gemm>(seq, k, bindings, part, g, null_);
    });
    return true;
  }
  // i8 rows are whole words always (check_view), their padding read as part of the last word.
  // (Packed weights are whole 16-byte units always: only x decides.)
  const bool aligned = push.K % 4 == 0 && push.ldx % 4 == 0 && push.x_off % 4 == 0 &&
                       (packed || (push.ldw % 4 == 0 && push.w_off % 4 == 0));
  plan::Gemv v = plan::gemv(dev, *plan_, options_, M,
                            path == Path::gemv ? plan::GemmPath::gemv : plan::GemmPath::gemv_invocation,
                            aligned);
  v.variant.fp16 = f16;
  v.constants.WEIGHT_I8 = i8;
  // 16-byte loads of W where every row starts on 16 bytes (K slices move w_off by multiples of
  // 64). They read W a vec4 of K at a time, past K up to the vec4's end: int8's padding to the
  // word is 0 by contract, fp16 rows may hold anything there (0 * inf is NaN), hence K % 4.
  const std::uint32_t per_16_bytes = i8 ? 16 : 8;
  v.constants.WIDE = (i8 || (f16 && (push.K % 4 == 0 || packed))) && push.ldw % per_16_bytes == 0 &&
                     push.w_off % per_16_bytes == 0;
  // Gate blocks are Linear's blocks of gates x gate_units rows in the order block, gate, unit:
  // the GEMV walks them as stored and stores each row's product at its own row.
  v.constants.PACK_ROWS = packing.gate_units ? u32(N / packing.gate_h * packing.gate_units, "rows a gate block") : pack_rows;
  v.constants.PACK_UNITS = packing.gate_units;
  v.constants.PACK_H = packing.gate_units ? packing.gate_h : 1;
  // Linear packs from the same plan and options, from element 0 (w_off is the K slice's column).
  if (pack_rows && (v.per_group != pack_rows || push.w_off != 0)) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{}: weights packed in blocks of {} rows from element {}, but the GEMV takes {} rows "
                            "per workgroup from element 0", kOp, pack_rows, push.w_off, v.per_group));
  }
  v.constants.K_STREAMS = plan::gemv_k_streams(dev, v.constants);
  // W's 16-byte loads (WIDE, or f32 vec4s) and, where aligned, x's vec4s through texel views,
  // where the plan says so.
  v.constants.TEXEL = (v.constants.WIDE || (!f16 && !i8 && (aligned || packed))) &&
                      plan::texel_loads(dev, w.tensor.bytes()) &&
                      (!aligned || plan::texel_loads(dev, x.tensor.bytes()));
  // With TEXEL, kernels::dispatch binds wt / xt to W / x; unaligned x is read from xs, so xt
  // gets the null buffer instead (x's size was not checked against the texel limit).
  const kernels::Gemv::Bindings gemv_bindings{.xs = x.tensor, .ws = w.tensor, .bias = bias, .ys = y.tensor,
                                              .xt = aligned ? Tensor{} : null_};
  const Groups g = fold_rows((M + v.constants.TM - 1) / v.constants.TM, (N + v.per_group - 1) / v.per_group, "gemv");
  if (tail) return tail->record(*ctx_, seq, {*plan_, v, push, g, gemv_bindings, null_});
  const Kernel k = kernels::make<kernels::Gemv>(*ctx_, v.constants, v.variant);
  dispatch_slices(plan::gemv_k_slice(dev, *plan_, v, push.K), [&](const Push& part) {
    kernels::dispatch<kernels::Gemv>(seq, k, gemv_bindings, part, g, null_);
  });
  return true;
}

namespace {

// Rows of the projection per scratch partial group: plan::gemv's block of N (aligned or not).
plan::Gemv greedy_plan(const DeviceInfo& dev, const plan::Gemm& p, const OpOptions& o, Gemm::Path path, std::size_t M) {
  return plan::gemv(dev, p, o, M, path == Gemm::Path::gemv ? plan::GemmPath::gemv : plan::GemmPath::gemv_invocation, true);
}

}  // namespace

std::size_t Gemm::tail_row_groups(std::size_t M, std::size_t N) const {
  const Path path = path_for(M);
  if (path == Path::tiled) return 0;
  const plan::Gemv v = greedy_plan(ctx_->device(), *plan_, options_, path, M);
  return (N + v.per_group - 1) / v.per_group;
}

std::size_t Gemm::greedy_scratch_words(std::size_t M, std::size_t N) const {
  const std::size_t groups = tail_row_groups(M, N);
  return groups && gemv_argmax_fits(ctx_->device()) ? gemv_argmax_words(M, groups) : 0;
}


// ---------------------------------------------------------------------------------------------

const char* to_string(WeightStorage storage) noexcept {
  switch (storage) {
    case WeightStorage::automatic: return "automatic";
    case WeightStorage::f32: return "f32";
    case WeightStorage::f16: return "f16";
    case WeightStorage::i8: return "i8";
  }
  return "?";
}

Linear::Linear(Context& ctx, std::size_t in_features, std::size_t out_features, bool bias,
               const OpOptions& options)
    : ctx_(&ctx), in_(in_features), out_(out_features), has_bias_(bias),
      storage_(plan::weight_storage(options)), gemm_(ctx, options) {
  if (in_features == 0 || out_features == 0) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("Linear: in_features ({}) and out_features ({}) must be positive",
                            in_features, out_features));
  }
  if (storage_ == WeightStorage::f16 && !ctx.features().storage_buffer_16bit) {
    throw Error(ErrorCode::missing_feature,
                fmt::format("Linear: fp16 weight storage needs storageBuffer16BitAccess, which '{}' lacks",
                            ctx.device().name));
  }
  pack_rows_ = plan::pack_rows(ctx.device(), *gemm_.plan_, options);
  if (pack_rows_) {
    // Blocks of pack_rows_ rows, 16-byte unit by unit (Linear::weight(), ops::pack_row_blocks).
    ld_ = (in_ + unit() - 1) / unit() * unit();
    const std::size_t elements = out_ * ld_;
    if (storage_ == WeightStorage::i8) {
      scale_offset_ = elements;
      weight_ = ctx.tensor({scale_offset_ + 4 * out_}, DType::i8, "Linear.weight (packed int8 rows, f32 scales)");
    } else {
      weight_ = ctx.tensor({elements}, storage_ == WeightStorage::f16 ? DType::f16 : DType::f32,
                           "Linear.weight (packed rows)");
    }
  } else if (storage_ == WeightStorage::i8) {
    // Rows padded to whole 32-bit words, then the f32 scales (Gemm::record_i8's layout).
    ld_ = padded_in();
    scale_offset_ = out_ * padded_in();
    weight_ = ctx.tensor({scale_offset_ + 4 * out_}, DType::i8, "Linear.weight (int8 rows, f32 scales)");
  } else {
    ld_ = in_;
    weight_ = ctx.tensor({out_, in_}, storage_ == WeightStorage::f16 ? DType::f16 : DType::f32, "Linear.weight");
  }
  if (has_bias_) bias_ = ctx.tensor({out_}, DType::f32, "Linear.bias");
}

void Linear::check_shape(const Shape& shape, const char* what, const char* method) const {
  if (shape != Shape{out_, in_}) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("Linear({} -> {})::{}: {} has shape {}, expected [out_features, in_features] = "
                            "[{}, {}]{}",
                            in_, out_, method, what, to_string(shape), out_, in_,
                            shape == Shape{in_, out_} ? " (it is transposed)" : ""));
  }
}

void Linear::check_bias(std::span<const float> bias) const {
  if (has_bias_ && bias.size() != out_) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("Linear::load: bias has {} elements, expected [{}]", bias.size(), out_));
  }
  if (!has_bias_ && !bias.empty()) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("Linear::load: the layer was built without bias but {} bias values were given",
                            bias.size()));
  }
}

QuantizedRows quantize_rows(std::span<const float> w, std::size_t rows, std::size_t cols) {
  if (w.size() != rows * cols) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("quantize_rows: {} values for a [{}, {}] matrix", w.size(), rows, cols));
  }
  QuantizedRows out{std::vector<std::int8_t>(rows * cols, 0), std::vector<float>(rows)};
  for (std::size_t n = 0; n < rows; ++n) {
    const std::span<const float> row = w.subspan(n * cols, cols);
    float max_abs = 0.0f;
    for (std::size_t k = 0; k < cols; ++k) {
      if (!std::isfinite(row[k])) {
        throw Error(ErrorCode::invalid_argument,
                    fmt::format("quantize_rows: weight[{}][{}] is {}: int8 quantization needs finite weights", n, k, row[k]));
      }
      max_abs = std::max(max_abs, std::fabs(row[k]));
    }
    const float scale = max_abs / 127.0f;
    out.scales[n] = scale;
    if (scale == 0.0f) continue;
    for (std::size_t k = 0; k < cols; ++k) {
      // Half to even (the default rounding mode), as numpy's rint in tools/export_torch.py.
      out.q[n * cols + k] = static_cast<std::int8_t>(std::clamp(std::nearbyint(row[k] / scale), -127.0f, 127.0f));
    }
  }
  return out;
}

std::vector<float> dequantize_rows(std::span<const std::int8_t> q, std::span<const float> scales, std::size_t cols) {
  if (q.size() != scales.size() * cols) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("dequantize_rows: {} int8 values for {} rows of {}", q.size(), scales.size(), cols));
  }
  std::vector<float> w(q.size());
  for (std::size_t i = 0; i < w.size(); ++i) w[i] = float(q[i]) * scales[i / cols];
  return w;
}

std::vector<std::int8_t> Linear::stored_i8(std::span<const std::int8_t> q, std::span<const float> scales) const {
  if (!pack_rows_) return ops::pack_i8(q, scales, in_, padded_in());
  std::vector<std::int8_t> out = ops::pack_row_blocks(q, out_, in_, pack_rows_, unit());
  out.resize(scale_offset_ + 4 * out_);
  std::memcpy(out.data() + scale_offset_, scales.data(), 4 * out_);
  return out;
}

void Linear::store(std::span<const float> weight, std::span<const float> bias) {
  if (storage_ == WeightStorage::i8) {
    const QuantizedRows q = quantize_rows(weight, out_, in_);
    ctx_->write(weight_, stored_i8(q.q, q.scales));
  } else if (weight_.dtype() == DType::f16) {
    std::vector<std::uint16_t> h(weight.size());
    std::transform(weight.begin(), weight.end(), h.begin(), float_to_half);
    ctx_->write(weight_, pack_rows_ ? ops::pack_row_blocks<std::uint16_t>(h, out_, in_, pack_rows_, unit()) : h);
  } else if (pack_rows_) {
    ctx_->write(weight_, ops::pack_row_blocks(weight, out_, in_, pack_rows_, unit()));
  } else {
    ctx_->write(weight_, weight);
  }
  if (has_bias_) ctx_->write(bias_, bias);
  loaded_ = true;
}

void Linear::load(std::span<const float> weight, const Shape& weight_shape, std::span<const float> bias) {
  check_shape(weight_shape, "weight", "load");
  if (weight.size() != in_ * out_) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("Linear::load: weight has {} elements, expected [{}, {}] = {}",
                            weight.size(), out_, in_, in_ * out_));
  }
  check_bias(bias);
  store(weight, bias);
}

void Linear::load_quantized(std::span<const std::int8_t> q, const Shape& q_shape, std::span<const float> scales,
                            const Shape& scales_shape, std::span<const float> bias) {
  check_shape(q_shape, "int8 weight", "load_quantized");
  if (q.size() != in_ * out_) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("Linear::load_quantized: int8 weight has {} elements, expected [{}, {}] = {}",
                            q.size(), out_, in_, in_ * out_));
  }
  if (scales_shape != Shape{out_} || scales.size() != out_) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("Linear({} -> {})::load_quantized: scales have shape {} ({} values), expected "
                            "one per output row: [{}] (weight {})",
                            in_, out_, to_string(scales_shape), scales.size(), out_, to_string(q_shape)));
  }
  if (const std::size_t n = ops::first_bad_scale(scales); n < out_) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("Linear({} -> {})::load_quantized: scale[{}] is {}, expected finite and >= 0",
                            in_, out_, n, scales[n]));
  }
  check_bias(bias);
  if (storage_ != WeightStorage::i8) {
    store(dequantize_rows(q, scales, in_), bias);
    return;
  }
  ctx_->write(weight_, stored_i8(q, scales));
  if (has_bias_) ctx_->write(bias_, bias);
  loaded_ = true;
}

void Linear::record(Sequence& seq, const Tensor& x, const Tensor& y) const {
  if (!x.valid() || !y.valid()) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("Linear: x ({}) and y ({}) must be tensors", describe(x), describe(y)));
  }
  const MatrixView xv = MatrixView::of(x), yv = MatrixView::of(y);
  if (xv.cols != in_ || yv.cols != out_ || xv.rows != yv.rows) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("Linear({} -> {}): x {} and y {} must be [..., {}] and [..., {}] with the "
                            "same rows", in_, out_, describe(x), describe(y), in_, out_));
  }
  record(seq, xv, yv);
}

void Linear::record(Sequence& seq, const MatrixView& x, const MatrixView& y) const {
  if (!loaded_) {
    throw Error(ErrorCode::state, fmt::format("Linear({} -> {}): record() before load()", in_, out_));
  }
  record_any(seq, x, y, nullptr);
}

bool Linear::record_any(Sequence& seq, const MatrixView& x, const MatrixView& y, const ops::GemvTail* tail) const {
  return gemm_.record_any(seq, x, MatrixView{weight_, out_, in_, 0, ld_}, storage_ == WeightStorage::i8, scale_offset_,
                          Gemm::Packing{.rows = pack_rows_}, bias_, 0, y, tail);
}

std::vector<float> Linear::forward(std::span<const float> x, std::size_t rows) const {
  if (x.size() != rows * in_ || rows == 0) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("Linear::forward: {} values for {} rows of {}", x.size(), rows, in_));
  }
  Tensor xt = ctx_->tensor({rows, in_}, DType::f32, "Linear.forward x");
  Tensor yt = ctx_->tensor({rows, out_}, DType::f32, "Linear.forward y");
  Sequence seq = ctx_->sequence({.label = "Linear::forward"});
  seq.upload(xt, x);
  record(seq, xt, yt);
  seq.download(yt);
  seq.eval();
  return seq.read<float>(yt);
}

}  // namespace vkrnn
