#pragma once
// A step that shares the dispatch of the GEMV before it (Gemm::record_any): the decoder's output
// projection and the greedy step (gemv_argmax.comp) or the beam step (gemv_beam.comp). The GEMV
// comes planned; the tail records one kernel that computes it and then does its own work.
#include "ops/kernels/linear.hpp"
#include "plan.hpp"
#include "vkrnn/context.hpp"
#include "vkrnn/sequence.hpp"

namespace vkrnn::ops {

struct PlannedGemv {
  const plan::Gemm& gemm;                   // the Gemm's plan (K slices)
  const plan::Gemv& v;                      // the GEMV's constants and variant
  const kernels::GemmPush& push;            // its shape and views (one K slice)
  Groups groups;                            // its grid
  const kernels::Gemv::Bindings& bindings;  // x, W, bias, y and the texel views
  const Tensor& null;                       // the Context's buffer for unused bindings

  // What every tail needs of the GEMV: one K slice (with room in the loop budget beside the
  // products), the rows in one z layer, a power-of-two workgroup (reduce.glsl), W as an output
  // projection stores it (not a recurrent layer's gate blocks). gemm.cpp.
  bool joinable(const DeviceInfo& dev) const;
};

class GemvTail {
 public:
  virtual ~GemvTail() = default;
  // Records the GEMV and the tail in one dispatch; false (nothing recorded) where they cannot
  // share one.
  virtual bool record(Context& ctx, Sequence& seq, const PlannedGemv& gemv) const = 0;
};

}  // namespace vkrnn::ops
