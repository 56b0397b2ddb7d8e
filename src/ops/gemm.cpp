#include <algorithm>
#include <bit>
#include <cstdint>
#include <limits>

#include <fmt/format.h>

#include "ops/attention_common.hpp"
#include "vkrnn/error.hpp"
#include "vkrnn/half.hpp"
#include "vkrnn/linear.hpp"

namespace vkrnn {
namespace {

constexpr const char* kOp = "Gemm";

struct Push {
  std::uint32_t M, N, K;
  std::uint32_t x_off, ldx;
  std::uint32_t w_off, ldw;
  std::uint32_t b_off;
  std::uint32_t y_off, ldy;
  std::uint32_t flags;  // kBias | kAccumulate
};
// Must match FLAG_BIAS / FLAG_ACCUMULATE of gemm.comp and gemv.comp.
constexpr std::uint32_t kBias = 1, kAccumulate = 2;

// Columns of K one dispatch may take when an invocation runs `fixed` loop iterations plus
// `per_step` for every `step` columns: within attention_detail::kLoopBudget (lavapipe silently
// ends loops past 65535 iterations per invocation), a multiple of 64 (keeps vec4 alignment and
// whole tiles) unless K fits whole.
std::uint64_t k_slice(std::uint64_t K, std::uint64_t step, std::uint64_t per_step, std::uint64_t fixed) {
  const std::uint64_t steps = (attention_detail::kLoopBudget - fixed) / per_step;
  if (steps * step >= K) return K;
  return std::max<std::uint64_t>(64, steps * step / 64 * 64);
}

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

std::uint32_t round_down(std::uint32_t v, std::uint32_t multiple) {
  return std::max(multiple, v / multiple * multiple);
}

// Checks that a view lies inside its tensor and has the expected dtype.
void check_view(const MatrixView& v, const char* name, std::initializer_list<DType> dtypes) {
  if (!v.tensor.valid()) {
    throw Error(ErrorCode::invalid_argument, fmt::format("{}: argument '{}' is an empty tensor", kOp, name));
  }
  if (std::find(dtypes.begin(), dtypes.end(), v.tensor.dtype()) == dtypes.end()) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("{}: argument '{}': expected {}, got {}", kOp, name,
                            dtypes.size() == 1 ? "f32" : "f32 or f16", describe(v.tensor)));
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
  const std::uint64_t end = std::uint64_t(v.offset) + std::uint64_t(v.rows - 1) * ld + v.cols;
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

Gemm::Gemm(Context& ctx, const OpOptions& options) : ctx_(&ctx), options_(options) {
  const auto& dev = ctx.device();
  const bool cpu = dev.type == DeviceType::cpu;
  subgroups_ = dev.subgroup_arithmetic && !options.force_shared_memory_reduction && dev.subgroup_size > 0;
  coop_lanes_ = subgroups_ ? std::max(dev.subgroup_size, dev.max_subgroup_size) : 1u;
  const std::uint32_t max_x = std::max<std::uint32_t>(
      1, std::min(dev.max_workgroup_invocations, dev.max_workgroup_size[0]));

  // GEMV: lavapipe runs best with one subgroup per workgroup and many workgroups; GPUs want a
  // few subgroups per workgroup to fill a compute unit.
  std::uint32_t wg = options.workgroup_size ? options.workgroup_size
                     : cpu                  ? coop_lanes_ * (subgroups_ ? 1 : 8)
                                            : std::max<std::uint32_t>(coop_lanes_, 128);
  wg = std::min(wg, max_x);
  gemv_workgroup_ = subgroups_ ? round_down(wg, coop_lanes_) : std::max(1u, wg);
  if (gemv_workgroup_ > max_x) {
    throw Error(ErrorCode::missing_feature,
                fmt::format("{}: subgroup size {} exceeds the workgroup limit {} of '{}'", kOp,
                            coop_lanes_, max_x, dev.name));
  }

  // Tiled GEMM: 16 x 16 invocations of 4 x 4 outputs where the device allows 256 invocations.
  tiled_wx_ = std::min<std::uint32_t>(16, dev.max_workgroup_size[0]);
  tiled_wy_ = std::max<std::uint32_t>(
      1, std::min<std::uint32_t>({16, dev.max_workgroup_size[1], dev.max_workgroup_invocations / tiled_wx_}));
  tiled_tm_ = 4;
  tiled_tn_ = 4;
  tiled_bk_ = options.tile ? std::clamp<std::uint32_t>(options.tile, 1, 64) : 16;
  auto shared_bytes = [&] {
    return std::uint64_t(tiled_bk_) * (tiled_wy_ * tiled_tm_ + 1 + tiled_wx_ * tiled_tn_ + 1) * 4;
  };
  while (tiled_bk_ > 1 && shared_bytes() > dev.max_shared_memory) tiled_bk_ /= 2;

  dummy_bias_ = ctx.tensor({4}, DType::f32, "Gemm dummy bias");
  ctx.write(dummy_bias_, std::vector<float>(4, 0.0f));
}

Kernel Gemm::kernel(const KernelSpec& spec) const {
  std::string key = spec.shader;
  for (auto c : spec.constants) {
    key += ',';
    key += std::to_string(c);
  }
  std::lock_guard lock(kernels_->mutex);
  auto it = kernels_->kernels.find(key);
  if (it == kernels_->kernels.end()) it = kernels_->kernels.emplace(key, ctx_->kernel(spec)).first;
  return it->second;
}

Gemm::Path Gemm::path_for(std::size_t m) const {
  if (forced_ != Path::automatic) return forced_;
  // CPU devices (lavapipe): buffer loads dominate, and big per-invocation register blocks make
  // the fewest loads per multiply-add, for any M.
  if (ctx_->device().type == DeviceType::cpu) return Path::gemv_invocation;
  // A few rows: every weight is read once and reused from registers; the tiled kernel would
  // leave most of its 64-row tile empty.
  if (m <= 8) return subgroups_ ? Path::gemv : Path::gemv_invocation;
  return Path::tiled;
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

void Gemm::record(Sequence& seq, const MatrixView& x, const MatrixView& w, const Tensor& bias,
                  std::size_t bias_offset, const MatrixView& y) const {
  check_view(x, "x", {DType::f32});
  check_view(w, "w", {DType::f32, DType::f16});
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
                  bias.valid() ? kBias : 0u};
  const Tensor& b = bias.valid() ? bias : dummy_bias_;
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

  // K in slices that keep every invocation within the loop budget: the first writes y (with the
  // bias), the others add to it. One slice unless K runs to tens of thousands.
  auto dispatch_slices = [&](const Kernel& k, const Groups& g, std::uint64_t slice) {
    for (std::uint64_t k0 = 0; k0 < push.K; k0 += slice) {
      Push part = push;
      part.K = static_cast<std::uint32_t>(std::min<std::uint64_t>(slice, push.K - k0));
      part.x_off = push.x_off + static_cast<std::uint32_t>(k0);
      part.w_off = push.w_off + static_cast<std::uint32_t>(k0);
      part.flags = k0 == 0 ? push.flags : kAccumulate;
      seq.dispatch(k, {in(x.tensor), in(w.tensor), in(b), k0 == 0 ? out(y.tensor) : inout(y.tensor)}, part, g);
    }
  };

  const Path path = path_for(M);
  if (path == Path::tiled) {
    const char* name = f16 ? "gemm_f16" : "gemm";
    const Kernel k = kernel({name, {tiled_wx_, tiled_wy_, 1, tiled_tm_, tiled_tn_, tiled_bk_}, 4, sizeof(Push)});
    const std::uint64_t bm = tiled_wy_ * tiled_tm_, bn = tiled_wx_ * tiled_tn_, threads = tiled_wx_ * tiled_wy_;
    const Groups g = fold_rows((M + bm - 1) / bm, (N + bn - 1) / bn, name);
    // Per BK columns: the two tile loads and the (unrolled, measured) product loop.
    const std::uint64_t per_tile = 2 + (bm * tiled_bk_ + threads - 1) / threads + (bn * tiled_bk_ + threads - 1) / threads;
    dispatch_slices(k, g, k_slice(push.K, tiled_bk_, per_tile, 16));
    return;
  }

  // GEMV blocks: TM rows of X share each loaded W vec4, TN rows of W each loaded X vec4.
  const bool per_invocation = path == Path::gemv_invocation || !subgroups_;
  // CPU devices: 16 x 8 blocks per invocation; measured on lavapipe at ~10.5 GFLOP/s per core
  // (CPU time) against ~6 for 4 x 4 blocks and ~12.5 for 16 x 16, which compiles 2.5x longer.
  // Row counts round up to a power of two so that few pipelines get compiled (a 16 x 8 block
  // costs lavapipe ~1.5 s of LLVM time).
  const bool big_blocks = per_invocation && dev.type == DeviceType::cpu;
  const std::uint32_t tm = std::min<std::uint32_t>(std::bit_ceil(static_cast<std::uint32_t>(std::min<std::size_t>(M, 16))),
                                                   big_blocks ? 16 : 4);
  const std::uint32_t tn = options_.tile ? std::clamp<std::uint32_t>(options_.tile, 1, 32) : big_blocks ? 8 : 4;
  std::uint32_t wg = gemv_workgroup_;
  if (per_invocation && subgroups_ && !options_.workgroup_size) wg = dev.type == DeviceType::cpu ? coop_lanes_ : 64;
  wg = std::min(wg, std::max<std::uint32_t>(1, std::min(dev.max_workgroup_invocations, dev.max_workgroup_size[0])));
  const std::uint32_t blocks = per_invocation ? wg : wg / coop_lanes_;
  const bool aligned = push.K % 4 == 0 && push.ldx % 4 == 0 && push.ldw % 4 == 0 &&
                       push.x_off % 4 == 0 && push.w_off % 4 == 0;
  const char* name = f16 ? (per_invocation ? "gemv_f16_nosubgroup" : "gemv_f16")
                         : (per_invocation ? "gemv_nosubgroup" : "gemv");
  const Kernel k = kernel({name, {wg, 1, 1, tm, tn, blocks, aligned ? 1u : 0u}, 4, sizeof(Push)});
  const std::uint64_t per_group = std::uint64_t(tn) * blocks;
  const Groups g = fold_rows((M + tm - 1) / tm, (N + per_group - 1) / per_group, name);
  // An invocation's blocks (blocks / coops, the fewest coops the device may make) times its lane's
  // share of each dot product: 4 columns per lane (the smallest subgroup) per iteration, counted
  // twice for the (unrolled, measured) register-block loops.
  const std::uint64_t smallest_sg = std::max(dev.min_subgroup_size ? dev.min_subgroup_size : dev.subgroup_size, 1u);
  const std::uint64_t coops = per_invocation ? wg : std::max<std::uint64_t>(1, wg / coop_lanes_);
  const std::uint64_t lanes = per_invocation ? 1 : smallest_sg;
  const std::uint64_t block_loops = (blocks + coops - 1) / coops;
  dispatch_slices(k, g, k_slice(push.K, 4 * lanes, 2 * block_loops, 16 * block_loops));
}

// ---------------------------------------------------------------------------------------------

Linear::Linear(Context& ctx, std::size_t in_features, std::size_t out_features, bool bias,
               const OpOptions& options)
    : ctx_(&ctx), in_(in_features), out_(out_features), has_bias_(bias), gemm_(ctx, options) {
  if (in_features == 0 || out_features == 0) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("Linear: in_features ({}) and out_features ({}) must be positive",
                            in_features, out_features));
  }
  if (options.fp16_storage && !ctx.features().storage_buffer_16bit) {
    throw Error(ErrorCode::missing_feature,
                fmt::format("Linear: fp16_storage needs storageBuffer16BitAccess, which '{}' lacks",
                            ctx.device().name));
  }
  weight_ = ctx.tensor({out_, in_}, options.fp16_storage ? DType::f16 : DType::f32, "Linear.weight");
  if (has_bias_) bias_ = ctx.tensor({out_}, DType::f32, "Linear.bias");
}

void Linear::load(std::span<const float> weight, const Shape& weight_shape, std::span<const float> bias) {
  if (weight_shape != Shape{out_, in_}) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("Linear({} -> {})::load: weight has shape {}, expected [out_features, in_features] = "
                            "[{}, {}]{}",
                            in_, out_, to_string(weight_shape), out_, in_,
                            weight_shape == Shape{in_, out_} ? " (it is transposed)" : ""));
  }
  if (weight.size() != in_ * out_) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("Linear::load: weight has {} elements, expected [{}, {}] = {}",
                            weight.size(), out_, in_, in_ * out_));
  }
  if (has_bias_ && bias.size() != out_) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("Linear::load: bias has {} elements, expected [{}]", bias.size(), out_));
  }
  if (!has_bias_ && !bias.empty()) {
    throw Error(ErrorCode::invalid_argument,
                fmt::format("Linear::load: the layer was built without bias but {} bias values were given",
                            bias.size()));
  }
  if (weight_.dtype() == DType::f16) {
    std::vector<std::uint16_t> h(weight.size());
    std::transform(weight.begin(), weight.end(), h.begin(), float_to_half);
    ctx_->write(weight_, h);
  } else {
    ctx_->write(weight_, weight);
  }
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
  gemm_.record(seq, x, MatrixView::of(weight_), bias_, 0, y);
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
