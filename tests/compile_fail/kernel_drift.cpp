// Built only by the ctest entries kernel_interface_drift_* (tests/CMakeLists.txt): each
// VKRNN_DRIFT_* below is a declaration of shaders/attention_scores.comp (or gemv.comp's texel
// views) that drifts from the shader in one way, and must stop the build with the static_assert
// naming the member. Without a VKRNN_DRIFT_* it is the true declaration and compiles (the
// control).
#include <cstdint>

#include "ops/kernel_interface.hpp"
#include "ops/kernels/linear.hpp"
#include "reflect/attention_scores.hpp"

namespace vkrnn::kernels {

struct AttentionScoresDrift {
  VKRNN_KERNEL(attention_scores, "attention_scores", .fp16 = true, .subgroup = true)
#if defined(VKRNN_DRIFT_PUSH_TYPE)
  // `scale` is a float in the shader.
  struct Push {
    std::uint32_t S, Hk, dk, Qs, heads, rows, nblocks;
    std::uint32_t scale;
  };
#elif defined(VKRNN_DRIFT_PUSH_ORDER)
  // dk and Hk swapped: same size, same types, other offsets.
  struct Push {
    std::uint32_t S, dk, Hk, Qs, heads, rows, nblocks;
    float scale;
  };
#else
  struct Push {
    std::uint32_t S, Hk, dk, Qs, heads, rows, nblocks;
    float scale;
  };
#endif
  VKRNN_PUSH(S, Hk, dk, Qs, heads, rows, nblocks, scale)
  struct Constants {
    VKRNN_LOCAL_SIZE;
    std::uint32_t SCORE_MODE = 0, KVEC4 = 0, SG_CLUSTER = 0, R = 1, KU = 1;
  };
#if defined(VKRNN_DRIFT_CONSTANT_ID)
  VKRNN_CONSTANTS(VKRNN_LOCAL_SIZE_IDS, (SCORE_MODE, 3), (KVEC4, 5), (SG_CLUSTER, 4), (R, 6), (KU, 7))
#else
  VKRNN_CONSTANTS(VKRNN_LOCAL_SIZE_IDS, (SCORE_MODE, 3), (KVEC4, 4), (SG_CLUSTER, 5), (R, 6), (KU, 7))
#endif
  struct Bindings {
    Tensor keys, qry, vparam, lengths, scores;
  };
#if defined(VKRNN_DRIFT_BINDING_ACCESS)
  VKRNN_BINDINGS((keys, read), (qry, read), (vparam, read), (lengths, read), (scores, read))
#else
  VKRNN_BINDINGS((keys, read), (qry, read), (vparam, read), (lengths, read), (scores, write))
#endif
};

// gemv.comp's texel views: wt and xt shadow ws and xs. VKRNN_DRIFT_TEXEL_VIEW names ws, a storage
// buffer, as a texel view.
struct GemvTexelDrift {
  VKRNN_KERNEL(gemv, "gemv", .fp16 = true, .subgroup = true)
  using Bindings = Gemv::Bindings;
#if defined(VKRNN_DRIFT_TEXEL_VIEW)
  VKRNN_TEXEL_VIEWS((ws, xs))
#else
  VKRNN_TEXEL_VIEWS((wt, ws), (xt, xs))
#endif
};

}  // namespace vkrnn::kernels

// Something to compile into the object file.
std::uint32_t vkrnn_kernel_drift_push_bytes() { return vkrnn::kernels::AttentionScoresDrift::push_bytes; }
