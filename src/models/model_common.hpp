#pragma once
// Private helpers the model classes (Classifier, Seq2Seq) share when building their ops.
#include <algorithm>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "io/untrusted.hpp"
#include "vkrnn/model.hpp"

#include "vkrnn/context.hpp"
#include "vkrnn/options.hpp"
#include "vkrnn/tensor.hpp"

namespace vkrnn::model_detail {

// fp16 storage is offered for the dense layers' weights (most of a model's bytes); the
// recurrent layers, attention and small ops keep fp32.
inline OpOptions fp32(OpOptions o) {
  o.fp16_storage = false;
  return o;
}

// An f32 tensor holding `data` (a model weight), named for error messages.
inline Tensor tensor_of(Context& ctx, const Shape& shape, std::span<const float> data, const std::string& name) {
  const Tensor t = ctx.tensor(shape, DType::f32, name);
  ctx.write(t, data);
  return t;
}

// A token id of the vocabulary that is none of the special tokens (warm_up's dummy input).
inline std::int32_t plain_token(const SpecialTokens& sp, std::size_t vocab) {
  std::int32_t id = 0;
  while (id == sp.pad || id == sp.bos || id == sp.eos || id == sp.unk) ++id;
  return std::min<std::int32_t>(id, static_cast<std::int32_t>(vocab) - 1);
}

// A model's Impl (Seq2Seq, Classifier), however the model came (directory, memory, ModelFile):
// every weight upload in one submission (UploadBatch, waited for unless the caller holds one
// open), and host memory running out while building is Error(out_of_range), not std::bad_alloc.
template <class Impl>
std::unique_ptr<Impl> build_model(Context& ctx, const ModelFile& model, const OpOptions& options) {
  const ModelConfig& c = model.config();
  return io_detail::only_vkrnn_errors(c.directory.empty() ? c.config_path : c.directory, [&] {
    UploadBatch uploads(ctx);
    auto impl = std::make_unique<Impl>(ctx, model, options);
    uploads.finish();
    return impl;
  });
}

}  // namespace vkrnn::model_detail
