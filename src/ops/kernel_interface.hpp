#pragma once
// Kernel interfaces declared once. Each shader gets one C++ declaration (src/ops/kernels/*.hpp)
// that every op using it goes through:
//
//   struct AttentionScoresKernel {
//     VKRNN_KERNEL(attention_scores, "attention_scores", .fp16 = true, .subgroup = true)
//     struct Push { std::uint32_t S, Hk; float scale; };
//     VKRNN_PUSH(S, Hk, scale)
//     struct Constants { VKRNN_LOCAL_SIZE; std::uint32_t SCORE_MODE = 0; bool ALIGNED = true; };
//     VKRNN_CONSTANTS(VKRNN_LOCAL_SIZE_IDS, (SCORE_MODE, 3), (ALIGNED, 6))
//     struct Bindings { Tensor keys, scores; };
//     VKRNN_BINDINGS((keys, read), (scores, write))
//   };
//
// VKRNN_KERNEL names the shader source (the reflect/<source>.hpp the build writes from its
// SPIR-V, cmake/spirv_reflect.cpp), the kernel's base name and its variant axes. The other
// macros static_assert the declaration against every variant's SPIR-V: push block size, each
// member's offset and type (by name); each specialization constant's id, name and type, and
// that the shader has no constant the list lacks; the binding count, each binding's name
// (one of the GLSL block or member names there) and that `read` bindings are readonly in the
// shader and the others are not. A drift between C++ and GLSL fails the build, naming the
// member. They also give the op what it needs at run time: words(Constants) (the
// specialization constants by id), args(Bindings) (each tensor with its declared access).
#include <algorithm>
#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "ops/kernel_reflection.hpp"
#include "vkrnn/context.hpp"
#include "vkrnn/sequence.hpp"
#include "vkrnn/tensor.hpp"

namespace vkrnn::kernels {

// --- variants ----------------------------------------------------------------------------
// The one naming rule (cmake/shaders.cmake builds the same names from shaders/variants.cmake):
//   <base>[_shuffle][_f16][_nosubgroup][_inplace]
// compiled with USE_SHUFFLE=1, FP16_STORAGE=1, USE_SUBGROUP=0, IN_PLACE=1 respectively.
struct Variant {
  bool shuffle = false;   // subgroup shuffles share loads (self-attention)
  bool fp16 = false;      // float16 storage of the big tensors, fp32 arithmetic
  bool subgroup = true;   // false: the build without subgroup arithmetic
  bool in_place = false;  // the output is the first input
};
// The axes a kernel is built along (every combination exists).
struct Axes {
  bool shuffle = false, fp16 = false, subgroup = false, in_place = false;
};

constexpr std::string_view suffix_shuffle = "_shuffle", suffix_fp16 = "_f16",
                           suffix_nosubgroup = "_nosubgroup", suffix_in_place = "_inplace";

std::string variant_name(std::string_view base, const Variant& v);

// Whether `name` is `base` built as `v`, without building a string (usable at compile time).
constexpr bool is_variant(std::string_view name, std::string_view base, const Variant& v) {
  auto eat = [&name](std::string_view part) {
    if (!name.starts_with(part)) return false;
    name.remove_prefix(part.size());
    return true;
  };
  if (!eat(base)) return false;
  if (v.shuffle && !eat(suffix_shuffle)) return false;
  if (v.fp16 && !eat(suffix_fp16)) return false;
  if (!v.subgroup && !eat(suffix_nosubgroup)) return false;
  if (v.in_place && !eat(suffix_in_place)) return false;
  return name.empty();
}

// Every variant along `axes`, as a fixed array (at most 16).
struct Variants {
  std::array<Variant, 16> v{};
  std::size_t n = 0;
};
constexpr Variants variants_of(const Axes& a) {
  Variants out;
  for (int bits = 0; bits < 16; ++bits) {
    const Variant v{(bits & 1) != 0, (bits & 2) != 0, (bits & 4) == 0, (bits & 8) != 0};
    if ((v.shuffle && !a.shuffle) || (v.fp16 && !a.fp16) || (!v.subgroup && !a.subgroup) ||
        (v.in_place && !a.in_place)) {
      continue;
    }
    out.v[out.n++] = v;
  }
  return out;
}
constexpr bool allowed(const Axes& a, const Variant& v) {
  return (!v.shuffle || a.shuffle) && (!v.fp16 || a.fp16) && (v.subgroup || a.subgroup) &&
         (!v.in_place || a.in_place);
}

// The reflected kernels of one declaration: those of its source whose names are its variants.
struct Selection {
  std::array<const reflect::KernelInfo*, 16> k{};
  std::size_t n = 0;
  bool complete = true;  // every variant along the axes was built
  constexpr auto begin() const { return k.begin(); }
  constexpr auto end() const { return k.begin() + n; }
};
constexpr Selection select(std::span<const reflect::KernelInfo> family, std::string_view base,
                           const Axes& axes) {
  Selection s;
  const Variants vs = variants_of(axes);
  for (std::size_t i = 0; i < vs.n; ++i) {
    const reflect::KernelInfo* found = nullptr;
    for (const auto& k : family) {
      if (is_variant(k.name, base, vs.v[i])) found = &k;
    }
    if (found) {
      s.k[s.n++] = found;
    } else {
      s.complete = false;
    }
  }
  return s;
}

// --- compile-time checks -------------------------------------------------------------------
template <class T>
constexpr reflect::Scalar scalar_of() {
  using U = std::remove_cvref_t<T>;
  if constexpr (std::is_same_v<U, bool>) return reflect::Scalar::boolean;
  else if constexpr (std::is_same_v<U, std::uint32_t>) return reflect::Scalar::u32;
  else if constexpr (std::is_same_v<U, std::int32_t>) return reflect::Scalar::i32;
  else if constexpr (std::is_same_v<U, float>) return reflect::Scalar::f32;
  else if constexpr (std::is_same_v<U, std::array<std::uint32_t, 4>> ||
                     std::is_same_v<U, std::uint32_t[4]>) {
    return reflect::Scalar::u32x4;
  }
  else if constexpr (std::is_same_v<U, std::array<std::int32_t, 4>>) return reflect::Scalar::i32x4;
  else if constexpr (std::is_same_v<U, std::array<float, 4>>) return reflect::Scalar::f32x4;
  else return reflect::Scalar::other;
}

constexpr char lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

// C++ "out.off" names GLSL's "out_off"; binding names compare without case.
constexpr bool same_name(std::string_view cpp, std::string_view glsl, bool fold_case) {
  if (cpp.size() != glsl.size()) return false;
  for (std::size_t i = 0; i < cpp.size(); ++i) {
    char a = cpp[i] == '.' ? '_' : cpp[i], b = glsl[i];
    if (fold_case) a = lower(a), b = lower(b);
    if (a != b) return false;
  }
  return true;
}

constexpr bool push_size_ok(const Selection& s, std::size_t size, std::size_t fields) {
  for (const auto* k : s) {
    if (k->push_size != size || k->push.size() != fields) return false;
  }
  return true;
}
constexpr bool push_field_ok(const Selection& s, std::string_view name, std::size_t offset,
                             std::size_t bytes, reflect::Scalar type) {
  for (const auto* k : s) {
    bool found = false;
    for (const auto& m : k->push) {
      if (same_name(name, m.name, false)) {
        found = m.offset == offset && m.bytes == bytes && m.type == type;
      }
    }
    if (!found) return false;
  }
  return true;
}

template <std::size_t N>
constexpr bool constants_cover(const Selection& s, const std::array<std::uint32_t, N>& ids) {
  for (const auto* k : s) {
    for (const auto& c : k->constants) {
      if (std::find(ids.begin(), ids.end(), c.id) == ids.end()) return false;
    }
  }
  return true;
}
// The constant exists in at least one variant (the subgroup-only ONE_SUBGROUP is missing from
// the _nosubgroup builds), and wherever it exists it has this name (the workgroup size is
// unnamed in SPIR-V) and type.
constexpr bool constant_ok(const Selection& s, std::uint32_t id, std::string_view name,
                           reflect::Scalar type) {
  bool seen = false;
  for (const auto* k : s) {
    for (const auto& c : k->constants) {
      if (c.id != id) continue;
      if (c.type != type || (!c.name.empty() && !same_name(name, c.name, false))) return false;
      seen = true;
    }
  }
  return seen;
}

constexpr bool bindings_count_ok(const Selection& s, std::uint32_t count) {
  for (const auto* k : s) {
    if (k->bindings.size() != count) return false;
    for (std::uint32_t i = 0; i < count; ++i) {
      if (k->bindings[i].binding != i) return false;
    }
  }
  return true;
}
// Uniform texel buffers among the bindings: the same in every variant (else 33, which fails
// the static_assert of VKRNN_BINDINGS).
constexpr std::uint32_t texel_binding_count(const Selection& s) {
  std::uint32_t first = 33;
  for (const auto* k : s) {
    std::uint32_t n = 0;
    for (const auto& b : k->bindings) n += b.texel ? 1u : 0u;
    if (first != 33 && n != first) return 33;
    first = n;
  }
  return first;
}
constexpr bool has_word(std::string_view words, std::string_view name) {
  while (!words.empty()) {
    const std::size_t space = words.find(' ');
    const std::string_view w = words.substr(0, space);
    if (same_name(name, w, true)) return true;
    if (space == std::string_view::npos) break;
    words.remove_prefix(space + 1);
  }
  return false;
}
// The id of the specialization constant named `name`, the same in every variant (else
// no_constant, which fails a static_assert).
inline constexpr std::uint32_t no_constant = ~0u;
constexpr std::uint32_t constant_id_named(const Selection& s, std::string_view name) {
  std::uint32_t id = no_constant;
  for (const auto* k : s) {
    std::uint32_t here = no_constant;
    for (const auto& c : k->constants) {
      if (same_name(name, c.name, false)) here = c.id;
    }
    if (here == no_constant || (id != no_constant && here != id)) return no_constant;
    id = here;
  }
  return id;
}
// `texel` is a uniform texel buffer binding and `storage` a readonly storage binding, in every
// variant.
constexpr bool texel_view_ok(const Selection& s, std::string_view texel, std::string_view storage) {
  for (const auto* k : s) {
    bool t = false, st = false;
    for (const auto& b : k->bindings) {
      if (b.texel && has_word(b.names, texel)) t = true;
      if (!b.texel && b.read_only && has_word(b.names, storage)) st = true;
    }
    if (!t || !st) return false;
  }
  return true;
}
constexpr bool binding_ok(const Selection& s, std::uint32_t index, std::string_view name,
                          Access access) {
  for (const auto* k : s) {
    if (index >= k->bindings.size()) return false;
    const auto& b = k->bindings[index];
    if (!has_word(b.names, name) || b.read_only != (access == Access::read)) return false;
  }
  return true;
}

// --- run time ---------------------------------------------------------------------------
inline std::uint32_t word(std::uint32_t v) { return v; }
inline std::uint32_t word(std::int32_t v) { return static_cast<std::uint32_t>(v); }
inline std::uint32_t word(bool v) { return v ? 1u : 0u; }  // VkBool32
inline std::uint32_t word(float v) { return std::bit_cast<std::uint32_t>(v); }

// The Context's one null buffer (16 zero bytes) for the bindings an op leaves unused (the
// kernel's flags keep it from touching them). It lives as long as some op holds it (the Context
// keeps only a weak reference: a tensor keeps its Context alive).
Tensor null_tensor(Context& ctx);

// The buffer for unused *writable* bindings of the context `null` belongs to: the validation
// layer takes a shader to write every binding it can write, so these go to a buffer of their own
// that the recorder tracks as written -- the read-only null buffer is then never "written", and
// no read of it ever waits. Alive while some sequence holds it (a new one is made after that).
Tensor write_sink(const Tensor& null);

// A binding's tensor with its declared access; an empty tensor binds the null buffer (read-only
// bindings) or the write sink (the others).
inline Arg bind(const Tensor& t, Access access, const Tensor& null) {
  if (t.valid()) return {t, access};
  if (access == Access::read) return {null, Access::read};
  return {write_sink(null), Access::read_write};
}

// Throws Error(invalid_argument) when `variant` is not along `axes` (a bug in the op).
void check_variant(std::string_view base, const Axes& axes, const Variant& variant);

// Shared memory of kernel K built as `variant` with `constants`, from its SPIR-V.
template <class K>
std::uint64_t shared_bytes(const typename K::Constants& constants, const Variant& variant) {
  check_variant(K::name, K::axes, variant);
  const auto words = K::words(constants);
  for (const auto* k : K::reflected) {
    if (is_variant(k->name, K::name, variant)) return k->shared_bytes(words);
  }
  return 0;  // unreachable: the Selection holds every variant along the axes
}

// Throws Error(out_of_range) naming the limit when `kernel` binds more storage buffers or
// needs more shared memory than the context's device allows (the limits it reports, which a
// test-only ContextOptions::limits may have lowered).
void check_limits(const Context& ctx, const std::string& kernel, std::uint32_t storage_buffers,
                  std::uint64_t shared_bytes);

// The pipeline of kernel K built as `variant` with these constants (cached by the Context),
// after checking what it needs against the device's limits.
template <class K>
Kernel make(Context& ctx, const typename K::Constants& constants, const Variant& variant = {}) {
  const std::string name = variant_name(K::name, variant);
  check_limits(ctx, name, K::storage_buffer_count, shared_bytes<K>(constants, variant));
  return ctx.kernel({name, K::words(constants), K::binding_count, K::push_bytes});
}

// Records one dispatch of a kernel made by make<K>(); empty tensors in `bindings` bind `null`
// (an op that leaves no binding unused passes none). Where K declares VKRNN_TEXEL_VIEWS and the
// kernel was made with TEXEL set, each texel binding the op left empty views the tensor of
// the storage binding it shadows, so that no op repeats that wiring.
template <class K>
void dispatch(Sequence& seq, const Kernel& kernel, const typename K::Bindings& bindings,
              const typename K::Push& push, Groups groups, const Tensor& null = {}) {
  const auto record = [&](const typename K::Bindings& b) {
    const auto args = K::args(b, null);
    seq.dispatch(kernel, std::span<const Arg>(args),
                 std::as_bytes(std::span(&push, 1)).first(K::push_bytes), groups);
  };
  if constexpr (requires { K::texel_constant; }) {
    if (reflect::spec(kernel.spec().constants, K::texel_constant, 0) != 0) {
      typename K::Bindings with_views = bindings;
      K::alias_texel_views(with_views);
      return record(with_views);
    }
  }
  record(bindings);
}


}  // namespace vkrnn::kernels

// --- declaration macros (see the top of this file) -----------------------------------------
// VKRNN_FOR_EACH_I(M, a, b, ...) expands to M(0, a) M(1, b) ... (up to 32 arguments).
#define VKRNN_PP_CAT_(a, b) a##b
#define VKRNN_PP_CAT(a, b) VKRNN_PP_CAT_(a, b)
#define VKRNN_PP_COUNT_(_1, _2, _3, _4, _5, _6, _7, _8, _9, _10, _11, _12, _13, _14, _15, _16, _17, _18, _19, _20, _21, _22, _23, _24, _25, _26, _27, _28, _29, _30, _31, _32, n, ...) n
#define VKRNN_PP_COUNT(...) VKRNN_PP_COUNT_(__VA_ARGS__, 32, 31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1)
#define VKRNN_FOR_EACH_I(M, ...) VKRNN_PP_CAT(VKRNN_FE_, VKRNN_PP_COUNT(__VA_ARGS__))(M, 0, __VA_ARGS__)
#define VKRNN_FE_1(M, i, a) M(i, a)
#define VKRNN_FE_2(M, i, a, ...) M(i, a) VKRNN_FE_1(M, (i + 1), __VA_ARGS__)
#define VKRNN_FE_3(M, i, a, ...) M(i, a) VKRNN_FE_2(M, (i + 1), __VA_ARGS__)
#define VKRNN_FE_4(M, i, a, ...) M(i, a) VKRNN_FE_3(M, (i + 1), __VA_ARGS__)
#define VKRNN_FE_5(M, i, a, ...) M(i, a) VKRNN_FE_4(M, (i + 1), __VA_ARGS__)
#define VKRNN_FE_6(M, i, a, ...) M(i, a) VKRNN_FE_5(M, (i + 1), __VA_ARGS__)
#define VKRNN_FE_7(M, i, a, ...) M(i, a) VKRNN_FE_6(M, (i + 1), __VA_ARGS__)
#define VKRNN_FE_8(M, i, a, ...) M(i, a) VKRNN_FE_7(M, (i + 1), __VA_ARGS__)
#define VKRNN_FE_9(M, i, a, ...) M(i, a) VKRNN_FE_8(M, (i + 1), __VA_ARGS__)
#define VKRNN_FE_10(M, i, a, ...) M(i, a) VKRNN_FE_9(M, (i + 1), __VA_ARGS__)
#define VKRNN_FE_11(M, i, a, ...) M(i, a) VKRNN_FE_10(M, (i + 1), __VA_ARGS__)
#define VKRNN_FE_12(M, i, a, ...) M(i, a) VKRNN_FE_11(M, (i + 1), __VA_ARGS__)
#define VKRNN_FE_13(M, i, a, ...) M(i, a) VKRNN_FE_12(M, (i + 1), __VA_ARGS__)
#define VKRNN_FE_14(M, i, a, ...) M(i, a) VKRNN_FE_13(M, (i + 1), __VA_ARGS__)
#define VKRNN_FE_15(M, i, a, ...) M(i, a) VKRNN_FE_14(M, (i + 1), __VA_ARGS__)
#define VKRNN_FE_16(M, i, a, ...) M(i, a) VKRNN_FE_15(M, (i + 1), __VA_ARGS__)
#define VKRNN_FE_17(M, i, a, ...) M(i, a) VKRNN_FE_16(M, (i + 1), __VA_ARGS__)
#define VKRNN_FE_18(M, i, a, ...) M(i, a) VKRNN_FE_17(M, (i + 1), __VA_ARGS__)
#define VKRNN_FE_19(M, i, a, ...) M(i, a) VKRNN_FE_18(M, (i + 1), __VA_ARGS__)
#define VKRNN_FE_20(M, i, a, ...) M(i, a) VKRNN_FE_19(M, (i + 1), __VA_ARGS__)
#define VKRNN_FE_21(M, i, a, ...) M(i, a) VKRNN_FE_20(M, (i + 1), __VA_ARGS__)
#define VKRNN_FE_22(M, i, a, ...) M(i, a) VKRNN_FE_21(M, (i + 1), __VA_ARGS__)
#define VKRNN_FE_23(M, i, a, ...) M(i, a) VKRNN_FE_22(M, (i + 1), __VA_ARGS__)
#define VKRNN_FE_24(M, i, a, ...) M(i, a) VKRNN_FE_23(M, (i + 1), __VA_ARGS__)
#define VKRNN_FE_25(M, i, a, ...) M(i, a) VKRNN_FE_24(M, (i + 1), __VA_ARGS__)
#define VKRNN_FE_26(M, i, a, ...) M(i, a) VKRNN_FE_25(M, (i + 1), __VA_ARGS__)
#define VKRNN_FE_27(M, i, a, ...) M(i, a) VKRNN_FE_26(M, (i + 1), __VA_ARGS__)
#define VKRNN_FE_28(M, i, a, ...) M(i, a) VKRNN_FE_27(M, (i + 1), __VA_ARGS__)
#define VKRNN_FE_29(M, i, a, ...) M(i, a) VKRNN_FE_28(M, (i + 1), __VA_ARGS__)
#define VKRNN_FE_30(M, i, a, ...) M(i, a) VKRNN_FE_29(M, (i + 1), __VA_ARGS__)
#define VKRNN_FE_31(M, i, a, ...) M(i, a) VKRNN_FE_30(M, (i + 1), __VA_ARGS__)
#define VKRNN_FE_32(M, i, a, ...) M(i, a) VKRNN_FE_31(M, (i + 1), __VA_ARGS__)
#define VKRNN_PP_EXPAND(...) __VA_ARGS__
#define VKRNN_PP_APPLY(M, args) M args

// FAMILY: the shader source (reflect/FAMILY.hpp); NAME: the base kernel name; then the axes as
// designated initializers of kernels::Axes.
#define VKRNN_KERNEL(FAMILY, NAME, ...)                                                        \
  static constexpr std::string_view name = NAME;                                              \
  static constexpr ::vkrnn::kernels::Axes axes{__VA_ARGS__};                                  \
  static constexpr ::vkrnn::kernels::Selection reflected =                                    \
      ::vkrnn::kernels::select(::vkrnn::reflect::FAMILY::kernels, name, axes);                \
  static_assert(reflected.complete && reflected.n > 0,                                        \
                NAME ": a variant along these axes was not built (shaders/variants.cmake)");

// The members of `struct Push`, in any order, every one of them.
#define VKRNN_PUSH_FIELD_(i, f)                                                                \
  static_assert(::vkrnn::kernels::push_field_ok(                                              \
                    reflected, #f, offsetof(Push, f), sizeof(std::declval<Push&>().f),        \
                    ::vkrnn::kernels::scalar_of<decltype(std::declval<Push&>().f)>()),        \
                "Push::" #f ": the shader's push block has no member of this name at this "   \
                "offset with this type");
#define VKRNN_PUSH(...)                                                                        \
  static constexpr std::uint32_t push_bytes = sizeof(Push);                                   \
  static_assert(std::is_trivially_copyable_v<Push> && std::is_standard_layout_v<Push>);       \
  static_assert(::vkrnn::kernels::push_size_ok(reflected, sizeof(Push),                       \
                                               VKRNN_PP_COUNT(__VA_ARGS__)),                  \
                "Push: its size or number of members differs from the shader's push block");  \
  VKRNN_FOR_EACH_I(VKRNN_PUSH_FIELD_, __VA_ARGS__)

// A kernel without push constants.
#define VKRNN_NO_PUSH                                                                          \
  struct Push {};                                                                             \
  static constexpr std::uint32_t push_bytes = 0;                                              \
  static_assert(::vkrnn::kernels::push_size_ok(reflected, 0, 0),                              \
                "Push: the shader has a push block");

// The workgroup size, specialization constants 0, 1 and 2 (layout(local_size_x_id = 0, ...)):
// members of `struct Constants`, and their entries in VKRNN_CONSTANTS.
#define VKRNN_LOCAL_SIZE std::uint32_t local_size_x = 1, local_size_y = 1, local_size_z = 1
#define VKRNN_LOCAL_SIZE_IDS (local_size_x, 0), (local_size_y, 1), (local_size_z, 2)

// (member of `struct Constants`, constant_id) pairs: every specialization constant.
#define VKRNN_CONST_ID_(i, e) VKRNN_PP_APPLY(VKRNN_CONST_ID2_, (i, VKRNN_PP_EXPAND e))
#define VKRNN_CONST_ID2_(i, m, id) id,
#define VKRNN_CONST_CHECK_(i, e) VKRNN_PP_APPLY(VKRNN_CONST_CHECK2_, (i, VKRNN_PP_EXPAND e))
#define VKRNN_CONST_CHECK2_(i, m, id)                                                          \
  static_assert(::vkrnn::kernels::constant_ok(                                                \
                    reflected, id, #m,                                                        \
                    ::vkrnn::kernels::scalar_of<decltype(std::declval<Constants&>().m)>()),   \
                "Constants::" #m ": the shader has no specialization constant of this id, "   \
                "name and type");
#define VKRNN_CONST_WORD_(i, e) VKRNN_PP_APPLY(VKRNN_CONST_WORD2_, (i, VKRNN_PP_EXPAND e))
#define VKRNN_CONST_WORD2_(i, m, id) w[id] = ::vkrnn::kernels::word(c.m);
#define VKRNN_CONSTANTS(...)                                                                   \
  static constexpr std::array<std::uint32_t, VKRNN_PP_COUNT(__VA_ARGS__)> constant_ids{      \
      VKRNN_FOR_EACH_I(VKRNN_CONST_ID_, __VA_ARGS__)};                                        \
  static_assert(::vkrnn::kernels::constants_cover(reflected, constant_ids),                   \
                "Constants: the shader has a specialization constant this list lacks");       \
  VKRNN_FOR_EACH_I(VKRNN_CONST_CHECK_, __VA_ARGS__)                                           \
  static std::vector<std::uint32_t> words(const Constants& c) {                               \
    std::vector<std::uint32_t> w(                                                             \
        *std::max_element(constant_ids.begin(), constant_ids.end()) + 1, 0u);                 \
    VKRNN_FOR_EACH_I(VKRNN_CONST_WORD_, __VA_ARGS__)                                          \
    return w;                                                                                 \
  }

// (member of `struct Bindings`, read | write | read_write) in binding order.
#define VKRNN_BINDING_CHECK_(i, e) VKRNN_PP_APPLY(VKRNN_BINDING_CHECK2_, (i, VKRNN_PP_EXPAND e))
#define VKRNN_BINDING_CHECK2_(i, m, access)                                                    \
  static_assert(::vkrnn::kernels::binding_ok(reflected, i, #m, ::vkrnn::Access::access),      \
                "Bindings::" #m ": the shader's buffer at this binding has another name, or "  \
                "is readonly where this is not (or the reverse)");
#define VKRNN_BINDING_ARG_(i, e) VKRNN_PP_APPLY(VKRNN_BINDING_ARG2_, (i, VKRNN_PP_EXPAND e))
#define VKRNN_BINDING_ARG2_(i, m, access) ::vkrnn::kernels::bind(b.m, ::vkrnn::Access::access, null),
#define VKRNN_BINDINGS(...)                                                                    \
  static constexpr std::uint32_t binding_count = VKRNN_PP_COUNT(__VA_ARGS__);                 \
  static_assert(::vkrnn::kernels::bindings_count_ok(reflected, binding_count),                \
                "Bindings: the shader has another number of bindings");                       \
  static constexpr std::uint32_t storage_buffer_count =                                       \
      binding_count - ::vkrnn::kernels::texel_binding_count(reflected);                       \
  static_assert(::vkrnn::kernels::texel_binding_count(reflected) <= binding_count,            \
                "Bindings: the variants differ in their uniform texel buffers");              \
  VKRNN_FOR_EACH_I(VKRNN_BINDING_CHECK_, __VA_ARGS__)                                         \
  static std::array<::vkrnn::Arg, binding_count> args(const Bindings& b,                      \
                                                      const ::vkrnn::Tensor& null) {          \
    return {VKRNN_FOR_EACH_I(VKRNN_BINDING_ARG_, __VA_ARGS__)};                              \
  }

// (texel binding, storage binding) pairs: the texel binding is a uniform texel buffer view of
// the storage binding's tensor when the kernel's TEXEL constant is set (kernels::dispatch binds
// it so; an op may still bind another tensor there itself).
#define VKRNN_TEXEL_CHECK_(i, e) VKRNN_PP_APPLY(VKRNN_TEXEL_CHECK2_, (i, VKRNN_PP_EXPAND e))
#define VKRNN_TEXEL_CHECK2_(i, t, s)                                                           \
  static_assert(::vkrnn::kernels::texel_view_ok(reflected, #t, #s),                           \
                "Bindings::" #t ": not a uniform texel buffer in the shader, or " #s          \
                " not a readonly storage buffer");
#define VKRNN_TEXEL_FILL_(i, e) VKRNN_PP_APPLY(VKRNN_TEXEL_FILL2_, (i, VKRNN_PP_EXPAND e))
#define VKRNN_TEXEL_FILL2_(i, t, s) \
  if (!b.t.valid()) b.t = b.s;
#define VKRNN_TEXEL_VIEWS(...)                                                                 \
  static constexpr std::uint32_t texel_constant =                                             \
      ::vkrnn::kernels::constant_id_named(reflected, "TEXEL");                                \
  static_assert(texel_constant != ::vkrnn::kernels::no_constant,                              \
                "VKRNN_TEXEL_VIEWS: the shader has no TEXEL specialization constant");        \
  VKRNN_FOR_EACH_I(VKRNN_TEXEL_CHECK_, __VA_ARGS__)                                           \
  static void alias_texel_views(Bindings& b) { VKRNN_FOR_EACH_I(VKRNN_TEXEL_FILL_, __VA_ARGS__) }

namespace vkrnn::kernels {
// The Constants of a kernel that specializes nothing but its workgroup size.
struct Workgroup {
  VKRNN_LOCAL_SIZE;
};
}  // namespace vkrnn::kernels
