#pragma once
// Private helpers the model classes (Classifier, Seq2Seq) share when building their ops.
#include <algorithm>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "io/untrusted.hpp"
#include "vkrnn/error.hpp"
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

// translate()'s batches of texts with these source lengths, as index lists: one batch in input
// order when it fits both limits (0: no limit); else sorted by length (longest first, ties in
// input order) and cut where a batch would exceed max_batch_size texts or max_batch_tokens
// tokens, a batch's tokens being its size x its longest source (the padded [B, S] the encoder
// runs; CTranslate2's batch_type = "tokens" sums the lengths instead). A text longer than
// max_batch_tokens is a batch of its own.
inline std::vector<std::vector<std::size_t>> text_batches(const std::vector<std::size_t>& lengths, std::size_t max_batch_size,
                                                          std::size_t max_batch_tokens) {
  const std::size_t n = lengths.size();
  if (n == 0) return {};
  const std::size_t longest = *std::max_element(lengths.begin(), lengths.end());
  std::vector<std::size_t> order(n);
  for (std::size_t i = 0; i < n; ++i) order[i] = i;
  const bool split = (max_batch_size > 0 && max_batch_size < n) || (max_batch_tokens > 0 && n * longest > max_batch_tokens);
  if (!split) return {order};
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return lengths[a] > lengths[b]; });
  std::vector<std::vector<std::size_t>> out;
  for (std::size_t first = 0; first < n;) {
    const std::size_t L = lengths[order[first]];  // the batch's longest: sorted, its first
    std::size_t count = 1;
    while (first + count < n && (max_batch_size == 0 || count < max_batch_size) &&
           (max_batch_tokens == 0 || (count + 1) * L <= max_batch_tokens)) {
      ++count;
    }
    out.emplace_back(order.begin() + static_cast<std::ptrdiff_t>(first), order.begin() + static_cast<std::ptrdiff_t>(first + count));
    first += count;
  }
  return out;
}

// read_greedy / read_beam / read_classify: `read(run)` for work this model recorded (the
// handle's impl holds a `run` whose `m` is the model's Impl), with the Sequence's state errors
// (read before it finished, or from another sequence) named by the call.
template <class Handle, class Read>
auto read_recorded(const void* model, const Handle& handle, const char* op, const char* call, const char* type, Read read) {
  if (!handle.impl) throw Error(ErrorCode::invalid_argument, fmt::format("{}::{}: an empty {}", op, call, type));
  if (static_cast<const void*>(&handle.impl->run.m) != model) {
    throw Error(ErrorCode::invalid_argument, fmt::format("{}::{}: the {} was recorded by another model", op, call, type));
  }
  try {
    return read(handle.impl->run);
  } catch (const Error& e) {
    if (e.code() != ErrorCode::state) throw;
    throw Error(ErrorCode::state, fmt::format("{}::{}: {}", op, call, e.what()));
  }
}

}  // namespace vkrnn::model_detail
