// The C API (include/vkrnn/vkrnn.h), written over the C++ front doors (Context, Seq2Seq,
// Classifier, ModelFile). Every entry point catches everything: no exception crosses into C.
#include "vkrnn/vkrnn.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <exception>
#include <memory>
#include <new>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "vkrnn/classifier.hpp"
#include "vkrnn/context.hpp"
#include "vkrnn/error.hpp"
#include "vkrnn/model.hpp"
#include "vkrnn/seq2seq.hpp"
#include "vkrnn/version.hpp"

namespace {

using vkrnn::Error;
using vkrnn::ErrorCode;

// A model keeps its context alive; encodings and decoders keep their model alive.
struct Model {
  std::shared_ptr<vkrnn::Context> ctx;  // first, so it is destroyed last
  std::optional<vkrnn::Seq2Seq> seq2seq;
  std::optional<vkrnn::Classifier> classifier;
};

struct Hypothesis {
  std::vector<std::int32_t> tokens;
  std::string text;
  float score = 0.0f;
  double norm_score = 0.0;
  bool finished = false;
  std::vector<float> attention;  // [len, S]
};

struct Classification {
  std::int32_t predicted = 0;
  std::string label;
  std::vector<float> probs, logits, pooling;
};

thread_local std::string last_error;

vkrnn_status status_of(ErrorCode code) {
  switch (code) {
    case ErrorCode::vulkan: return VKRNN_ERROR_VULKAN;
    case ErrorCode::no_loader: return VKRNN_ERROR_NO_LOADER;
    case ErrorCode::no_device: return VKRNN_ERROR_NO_DEVICE;
    case ErrorCode::missing_feature: return VKRNN_ERROR_MISSING_FEATURE;
    case ErrorCode::out_of_range: return VKRNN_ERROR_OUT_OF_RANGE;
    case ErrorCode::invalid_argument: return VKRNN_ERROR_INVALID_ARGUMENT;
    case ErrorCode::not_found: return VKRNN_ERROR_NOT_FOUND;
    case ErrorCode::format: return VKRNN_ERROR_FORMAT;
    case ErrorCode::io: return VKRNN_ERROR_IO;
    case ErrorCode::state: return VKRNN_ERROR_STATE;
    case ErrorCode::non_finite: return VKRNN_ERROR_NON_FINITE;
  }
  return VKRNN_ERROR_INTERNAL;
}

// Thrown inside an entry point when the caller's array is too short (the count is already out).
struct BufferTooSmall {
  std::string message;
};

vkrnn_status fail(vkrnn_status status, const char* fn, const char* message) noexcept {
  try {
    last_error = fmt::format("{}: {}", fn, message);
  } catch (...) {
    last_error.clear();  // out of memory for the message itself
  }
  return status;
}

// Runs an entry point's body: VKRNN_OK, or the status and message of what it threw.
template <class Body>
vkrnn_status guard(const char* fn, Body&& body) noexcept {
  try {
    body();
    return VKRNN_OK;
  } catch (const Error& e) {
    return fail(status_of(e.code()), fn, e.what());
  } catch (const BufferTooSmall& e) {
    return fail(VKRNN_ERROR_BUFFER_TOO_SMALL, fn, e.message.c_str());
  } catch (const std::bad_alloc&) {
    return fail(VKRNN_ERROR_OUT_OF_MEMORY, fn, "out of host memory");
  } catch (const std::exception& e) {
    return fail(VKRNN_ERROR_INTERNAL, fn, e.what());
  } catch (...) {
    return fail(VKRNN_ERROR_INTERNAL, fn, "unknown exception");
  }
}

void check_not_null(const void* p, const char* what) {
  if (!p) throw Error(ErrorCode::invalid_argument, fmt::format("{} is NULL", what));
}

template <class T>
T& need(T* p, const char* what) {
  check_not_null(p, what);
  return *p;
}

// Says how many of `n` items there are and copies up to `capacity` of them; BufferTooSmall when
// short, unless out is NULL with capacity 0 (the caller asks for the count).
template <class T>
void copy_out(const T* items, std::size_t n, T* out, std::size_t capacity, std::size_t* count,
              const char* what) {
  need(count, "count");
  *count = n;
  if (!out && capacity == 0) return;
  check_not_null(out, what);
  std::copy_n(items, std::min(n, capacity), out);
  if (capacity < n) throw BufferTooSmall{fmt::format("{} {} for room for {}", n, what, capacity)};
}

// `batch` rows of ids from pointers and lengths (`what` names them in errors).
std::vector<std::vector<std::int32_t>> sources_of(const std::int32_t* const* sources, const std::size_t* lengths,
                                                  std::size_t batch, const char* what = "sources",
                                                  const char* what_lengths = "lengths") {
  if (batch == 0) throw Error(ErrorCode::invalid_argument, "batch is 0");
  need(sources, what);
  need(lengths, what_lengths);
  std::vector<std::vector<std::int32_t>> out(batch);
  for (std::size_t b = 0; b < batch; ++b) {
    if (lengths[b] > 0 && !sources[b]) throw Error(ErrorCode::invalid_argument, fmt::format("{}[{}] is NULL", what, b));
    if (lengths[b] > 0) out[b].assign(sources[b], sources[b] + lengths[b]);
  }
  return out;
}

// Texts tokenized by `encode` (the model's source tokenizer).
template <class Encode>
std::vector<std::vector<std::int32_t>> texts_of(const char* const* texts, std::size_t batch, Encode&& encode) {
  if (batch == 0) throw Error(ErrorCode::invalid_argument, "batch is 0");
  need(texts, "texts");
  std::vector<std::vector<std::int32_t>> out;
  for (std::size_t b = 0; b < batch; ++b) {
    if (!texts[b]) throw Error(ErrorCode::invalid_argument, fmt::format("texts[{}] is NULL", b));
    out.push_back(encode(texts[b]));
  }
  return out;
}

void fill_device_info(const vkrnn::DeviceInfo& d, vkrnn_device_info& out) {
  std::memset(&out, 0, sizeof out);
  out.index = d.index;
  std::snprintf(out.name, sizeof out.name, "%s", d.name.c_str());
  std::snprintf(out.driver_name, sizeof out.driver_name, "%s", d.driver_name.c_str());
  out.vendor_id = d.vendor_id;
  out.device_id = d.device_id;
  switch (d.type) {
    case vkrnn::DeviceType::discrete: out.type = VKRNN_DEVICE_DISCRETE; break;
    case vkrnn::DeviceType::integrated: out.type = VKRNN_DEVICE_INTEGRATED; break;
    case vkrnn::DeviceType::virtual_gpu: out.type = VKRNN_DEVICE_VIRTUAL; break;
    case vkrnn::DeviceType::cpu: out.type = VKRNN_DEVICE_CPU; break;
    case vkrnn::DeviceType::other: out.type = VKRNN_DEVICE_OTHER; break;
  }
  out.api_version = d.api_version;
  out.subgroup_size = d.subgroup_size;
  out.storage_16bit = d.storage_16bit;
  out.unified_memory = d.unified_memory;
  for (const auto& h : d.memory_heaps)
    if (h.device_local) out.device_local_bytes += h.size;
}

vkrnn::ContextOptions context_options(const vkrnn_context_options* o) {
  vkrnn::ContextOptions opts;
  if (!o) return opts;
  if (o->device) opts.device = o->device;
  if (o->validation >= 0) opts.validation = o->validation != 0;
  opts.force_staging = o->force_staging != 0;
  if (o->cache_dir) opts.cache_dir = o->cache_dir;
  opts.disable_pipeline_cache = o->disable_pipeline_cache != 0;
  return opts;
}

// The logits rules greedy and beam share.
template <class Options>
void rules_of(const vkrnn_decode_options& o, Options& d) {
  d.repetition_penalty = o.repetition_penalty;
  d.no_repeat_ngram_size = o.no_repeat_ngram_size;
  d.min_length = o.min_length;
  d.disable_unk = o.disable_unk != 0;
  if (o.suppress_tokens_count > 0) {
    need(o.suppress_tokens, "suppress_tokens");
    d.suppress_tokens.assign(o.suppress_tokens, o.suppress_tokens + o.suppress_tokens_count);
  }
  if (o.suppress_sequences_count > 0) {
    d.suppress_sequences = sources_of(o.suppress_sequences, o.suppress_sequence_lengths, o.suppress_sequences_count,
                                      "suppress_sequences", "suppress_sequence_lengths");
  }
}

// batch: the source rows (target_prefix has one entry per row).
vkrnn::DecodeOptions decode_options(const vkrnn_decode_options* o, std::size_t batch) {
  vkrnn::DecodeOptions d;
  if (o) {
    d.max_len = o->max_len;
    d.return_attention = o->return_attention != 0;
    rules_of(*o, d);
    d.sampling_topk = o->sampling_topk;
    d.sampling_topp = o->sampling_topp;
    d.sampling_temperature = o->sampling_temperature;
    d.seed = o->seed;
    if (o->target_prefix) {
      d.target_prefix = sources_of(o->target_prefix, o->target_prefix_lengths, batch, "target_prefix", "target_prefix_lengths");
    }
  }
  return d;
}

// What beam search does not take.
void check_beam_options(const vkrnn_decode_options& o) {
  const char* what = o.sampling_topk != 1 ? "sampling (sampling_topk != 1)"
                     : o.on_step          ? "on_step (streaming)"
                                          : nullptr;
  if (what) throw Error(ErrorCode::invalid_argument, fmt::format("beam search does not take {}", what));
}

}  // namespace

struct vkrnn_context {
  std::shared_ptr<vkrnn::Context> ctx;
};
struct vkrnn_model {
  std::shared_ptr<Model> model;
};
struct vkrnn_result {
  std::vector<std::vector<Hypothesis>> rows;  // decodes
  std::vector<Classification> classes;        // classification
  bool classification = false;
  std::size_t source_length = 0;  // decodes: S
  std::size_t num_classes = 0, steps = 0;
};
struct vkrnn_encoded {
  std::shared_ptr<Model> model;
  vkrnn::Seq2Seq::Encoded encoded;
};
struct vkrnn_decoder {
  std::shared_ptr<Model> model;
  vkrnn::Seq2Seq::DecoderState state;
  std::size_t batch = 0, source_length = 0;
  vkrnn::StepResult last;
};
struct vkrnn_job {
  std::shared_ptr<Model> model;
  vkrnn::Sequence seq;  // submitted; its destructor waits for the GPU
  vkrnn::Seq2Seq::GreedyDecode greedy;  // one of the three
  vkrnn::Seq2Seq::BeamDecode beam;
  vkrnn::Classifier::Classification classification;
  bool taken = false;   // the result was handed out
};

namespace {

const vkrnn::Seq2Seq& seq2seq_of(const vkrnn_model* model) {
  const Model& m = *need(model, "model").model;
  if (!m.seq2seq) throw Error(ErrorCode::invalid_argument, "the model is a classifier, not a seq2seq model");
  return *m.seq2seq;
}

const vkrnn::Classifier& classifier_of(const vkrnn_model* model) {
  const Model& m = *need(model, "model").model;
  if (!m.classifier) throw Error(ErrorCode::invalid_argument, "the model is a seq2seq model, not a classifier");
  return *m.classifier;
}

vkrnn_model* make_model(vkrnn_context* context, const vkrnn::ModelFile& file, const vkrnn_model_options* options) {
  auto m = std::make_shared<Model>();
  m->ctx = need(context, "context").ctx;
  vkrnn::OpOptions op;
  if (options) {
    op.fp16_storage = options->fp16_storage != 0;
    switch (options->weight_storage) {
      case VKRNN_WEIGHT_STORAGE_AUTOMATIC: op.weight_storage = vkrnn::WeightStorage::automatic; break;
      case VKRNN_WEIGHT_STORAGE_F32: op.weight_storage = vkrnn::WeightStorage::f32; break;
      case VKRNN_WEIGHT_STORAGE_F16: op.weight_storage = vkrnn::WeightStorage::f16; break;
      case VKRNN_WEIGHT_STORAGE_I8: op.weight_storage = vkrnn::WeightStorage::i8; break;
      default:
        throw Error(ErrorCode::invalid_argument,
                    fmt::format("options->weight_storage = {} is not a vkrnn_weight_storage (0 .. 3)",
                                static_cast<int>(options->weight_storage)));
    }
  }
  switch (file.config().task) {
    case vkrnn::ModelTask::seq2seq: m->seq2seq.emplace(*m->ctx, file, op); break;
    case vkrnn::ModelTask::classifier: m->classifier.emplace(*m->ctx, file, op); break;
  }
  return new vkrnn_model{std::move(m)};
}

bool ends_with_eos(const std::vector<std::int32_t>& tokens, const vkrnn::Seq2Seq& model) {
  return !tokens.empty() && tokens.back() == model.config().special.eos;
}

// A greedy decode's rows as hypotheses.
vkrnn_result* result_of(const vkrnn::Seq2Seq& model, const vkrnn::DecodeResult& r) {
  auto out = std::make_unique<vkrnn_result>();
  out->source_length = r.source_length;
  const std::size_t S = r.source_length;
  for (std::size_t b = 0; b < r.batch; ++b) {
    Hypothesis h;
    h.tokens = r.row(b);
    h.text = model.decode_text(h.tokens);
    for (std::size_t t = 0; t < h.tokens.size(); ++t) h.score += r.scores[b * r.steps + t];
    h.norm_score = h.score;
    h.finished = ends_with_eos(h.tokens, model);
    if (!r.attention.empty()) {
      const auto first = r.attention.begin() + static_cast<std::ptrdiff_t>(b * r.steps * S);
      h.attention.assign(first, first + static_cast<std::ptrdiff_t>(h.tokens.size() * S));
    }
    out->rows.push_back({std::move(h)});
  }
  return out.release();
}

vkrnn_result* greedy_result(const vkrnn::Seq2Seq& model, const std::vector<std::vector<std::int32_t>>& sources,
                            const vkrnn_decode_options* options) {
  vkrnn::DecodeOptions d = decode_options(options, sources.size());
  if (options && options->on_step) {
    // The C callback sees each StepResult as a vkrnn_step (no attention while streaming).
    d.stream_steps = options->stream_steps;
    d.on_step = [callback = options->on_step, user = options->on_step_user_data](const vkrnn::StepResult& r) {
      const vkrnn_step step{r.step, r.tokens.size(), r.tokens.data(), r.scores.data(), r.finished.data(),
                            r.all_finished ? 1 : 0, nullptr, 0};
      return callback(&step, user) != 0;
    };
  }
  return result_of(model, model.greedy(sources, d));
}

vkrnn::BeamOptions beam_options(const std::vector<std::vector<std::int32_t>>& sources, const vkrnn_decode_options* options) {
  vkrnn::BeamOptions bo;
  if (options) {
    check_beam_options(*options);
    bo.beam_width = options->beam_width;
    bo.length_alpha = options->length_alpha;
    bo.max_len = options->max_len;
    bo.return_attention = options->return_attention != 0;
    rules_of(*options, bo);
    bo.patience = options->patience;
    bo.coverage_penalty = options->coverage_penalty;
    if (options->target_prefix) {
      bo.target_prefix = sources_of(options->target_prefix, options->target_prefix_lengths, sources.size(), "target_prefix",
                                    "target_prefix_lengths");
    }
  }
  return bo;
}

std::size_t longest(const std::vector<std::vector<std::int32_t>>& sources) {
  std::size_t S = 0;
  for (const auto& s : sources) S = std::max(S, s.size());
  return S;
}

// A beam search's hypotheses; S: the batch's longest source.
vkrnn_result* result_of(const vkrnn::Seq2Seq& model, std::size_t S, const std::vector<std::vector<vkrnn::Hypothesis>>& beams) {
  auto out = std::make_unique<vkrnn_result>();
  out->source_length = S;
  for (const auto& row : beams) {
    std::vector<Hypothesis> hyps;
    for (const auto& b : row) {
      hyps.push_back({b.tokens, model.decode_text(b.tokens), b.score, b.norm_score, b.finished, b.attention});
    }
    out->rows.push_back(std::move(hyps));
  }
  return out.release();
}

vkrnn_result* beam_result(const vkrnn::Seq2Seq& model, const std::vector<std::vector<std::int32_t>>& sources,
                          const vkrnn_decode_options* options) {
  return result_of(model, longest(sources), model.beam(sources, beam_options(sources, options)));
}

using Sources = std::vector<std::vector<std::int32_t>>;
using Decode = vkrnn_result* (*)(const vkrnn::Seq2Seq&, const Sources&, const vkrnn_decode_options*);

// A greedy decode or beam search submitted, not waited for (vkrnn_greedy_submit,
// vkrnn_beam_submit): the encoder and the decode in one sequence, as the blocking calls submit.
template <bool Beam>
vkrnn_job* submit_decode(const vkrnn_model* model, const Sources& sources, const vkrnn_decode_options* options) {
  if (options && options->on_step) {
    throw Error(ErrorCode::invalid_argument, "on_step (streaming) is for vkrnn_greedy: a submitted job is polled instead");
  }
  const Model& m = *model->model;
  auto job = std::make_unique<vkrnn_job>(
      vkrnn_job{model->model, m.ctx->sequence({.label = Beam ? "vkrnn_beam_submit" : "vkrnn_greedy_submit"}), {}, {}, {}, false});
  const auto encoded = m.seq2seq->prepare(sources);
  m.seq2seq->record_encode(job->seq, encoded);
  if constexpr (Beam) {
    job->beam = m.seq2seq->record_beam(job->seq, encoded, beam_options(sources, options));
  } else {
    job->greedy = m.seq2seq->record_greedy(job->seq, encoded, decode_options(options, sources.size()));
  }
  job->seq.submit();
  return job.release();
}

// The decode entry points: ids or texts in, `decode` (greedy_result, beam_result or
// submit_decode) run; Out: vkrnn_result or vkrnn_job.
template <class Out, class F>
vkrnn_status decode_ids(const char* fn, F decode, const vkrnn_model* model, const std::int32_t* const* sources,
                        const std::size_t* lengths, std::size_t batch, const vkrnn_decode_options* options, Out** out) {
  return guard(fn, [&] {
    seq2seq_of(model);
    need(out, std::is_same_v<Out, vkrnn_job> ? "job" : "result");
    *out = decode(model, sources_of(sources, lengths, batch), options);
  });
}

template <class Out, class F>
vkrnn_status decode_texts(const char* fn, F decode, const vkrnn_model* model, const char* const* texts,
                          std::size_t batch, const vkrnn_decode_options* options, Out** out) {
  return guard(fn, [&] {
    const auto& s = seq2seq_of(model);
    need(out, std::is_same_v<Out, vkrnn_job> ? "job" : "result");
    *out = decode(model, texts_of(texts, batch, [&](const char* t) { return s.encode_text(t); }), options);
  });
}

// A whole decode that blocks (greedy_result, beam_result) as a `decode` above.
template <Decode decode>
vkrnn_result* blocking(const vkrnn_model* model, const Sources& sources, const vkrnn_decode_options* options) {
  return decode(*model->model->seq2seq, sources, options);
}

// A classification's rows.
vkrnn_result* result_of(const vkrnn::Classifier& model, const vkrnn::ClassifyResult& r) {
  auto out = std::make_unique<vkrnn_result>();
  out->classification = true;
  out->num_classes = r.classes;
  out->steps = r.steps;
  const auto C = static_cast<std::ptrdiff_t>(r.classes), T = static_cast<std::ptrdiff_t>(r.steps);
  for (std::size_t b = 0; b < r.batch; ++b) {
    const auto i = static_cast<std::ptrdiff_t>(b);
    Classification c;
    c.predicted = r.predicted[b];
    c.label = model.label(c.predicted);
    c.probs.assign(r.probs.begin() + i * C, r.probs.begin() + (i + 1) * C);
    c.logits.assign(r.logits.begin() + i * C, r.logits.begin() + (i + 1) * C);
    if (!r.pooling.empty()) c.pooling.assign(r.pooling.begin() + i * T, r.pooling.begin() + (i + 1) * T);
    out->classes.push_back(std::move(c));
  }
  return out.release();
}

vkrnn_result* classify_result(const vkrnn::Classifier& model, const std::vector<std::vector<std::int32_t>>& inputs,
                              int return_pooling) {
  return result_of(model, model.classify(inputs, {.return_pooling = return_pooling != 0}));
}

// A classification submitted, not waited for (vkrnn_classify_submit).
vkrnn_job* submit_classify(const vkrnn_model* model, const Sources& inputs, int return_pooling) {
  const Model& m = *model->model;
  auto job = std::make_unique<vkrnn_job>(
      vkrnn_job{model->model, m.ctx->sequence({.label = "vkrnn_classify_submit"}), {}, {}, {}, false});
  job->classification = m.classifier->record_classify(job->seq, inputs, {.return_pooling = return_pooling != 0});
  job->seq.submit();
  return job.release();
}

}  // namespace

extern "C" {

const char* vkrnn_status_string(vkrnn_status status) {
  switch (status) {
    case VKRNN_OK: return "ok";
    case VKRNN_ERROR_VULKAN: return "vulkan";
    case VKRNN_ERROR_NO_LOADER: return "no_loader";
    case VKRNN_ERROR_NO_DEVICE: return "no_device";
    case VKRNN_ERROR_MISSING_FEATURE: return "missing_feature";
    case VKRNN_ERROR_OUT_OF_RANGE: return "out_of_range";
    case VKRNN_ERROR_INVALID_ARGUMENT: return "invalid_argument";
    case VKRNN_ERROR_NOT_FOUND: return "not_found";
    case VKRNN_ERROR_FORMAT: return "format";
    case VKRNN_ERROR_IO: return "io";
    case VKRNN_ERROR_STATE: return "state";
    case VKRNN_ERROR_OUT_OF_MEMORY: return "out_of_memory";
    case VKRNN_ERROR_BUFFER_TOO_SMALL: return "buffer_too_small";
    case VKRNN_ERROR_INTERNAL: return "internal";
    case VKRNN_ERROR_NON_FINITE: return "non_finite";
    case VKRNN_STATUS_MAX_ENUM: break;
  }
  return "unknown status";
}

const char* vkrnn_last_error(void) { return last_error.c_str(); }
const char* vkrnn_version_string(void) { return vkrnn::version(); }
int vkrnn_version(void) { return vkrnn::version_number(); }

vkrnn_status vkrnn_list_devices(vkrnn_device_info* devices, size_t capacity, size_t* count) {
  return guard(__func__, [&] {
    std::vector<vkrnn_device_info> infos;
    for (const auto& d : vkrnn::list_devices()) fill_device_info(d, infos.emplace_back());
    copy_out(infos.data(), infos.size(), devices, capacity, count, "devices");
  });
}

void vkrnn_context_options_init(vkrnn_context_options* options) {
  if (options) *options = {nullptr, -1, 0, nullptr, 0};
}

vkrnn_status vkrnn_context_create(const vkrnn_context_options* options, vkrnn_context** context) {
  return guard(__func__, [&] {
    need(context, "context");
    auto ctx = std::make_shared<vkrnn::Context>(context_options(options));
    *context = new vkrnn_context{std::move(ctx)};
  });
}

vkrnn_status vkrnn_context_adopt(const vkrnn_external_device* device, const vkrnn_context_options* options,
                                 vkrnn_context** context) {
  return guard(__func__, [&] {
    const vkrnn_external_device& d = need(device, "device");
    need(context, "context");
    vkrnn::ExternalDevice ext;
    ext.instance = d.instance;
    ext.physical_device = d.physical_device;
    ext.device = d.device;
    ext.queue_family = d.queue_family;
    ext.queue_index = d.queue_index;
    ext.api_version = d.api_version;
    ext.features.storage_buffer_16bit = d.storage_buffer_16bit != 0;
    ext.features.shader_float16 = d.shader_float16 != 0;
    ext.features.subgroup_size_control = d.subgroup_size_control != 0;
    ext.get_instance_proc_addr = d.get_instance_proc_addr;
    auto ctx = std::make_shared<vkrnn::Context>(vkrnn::Context::adopt(ext, context_options(options)));
    *context = new vkrnn_context{std::move(ctx)};
  });
}

void vkrnn_context_destroy(vkrnn_context* context) { delete context; }

vkrnn_status vkrnn_context_get_device(const vkrnn_context* context, vkrnn_device_info* info) {
  return guard(__func__, [&] {
    const auto& ctx = *need(context, "context").ctx;
    fill_device_info(ctx.device(), need(info, "info"));
  });
}

vkrnn_status vkrnn_model_load(vkrnn_context* context, const char* model_dir, const vkrnn_model_options* options,
                              vkrnn_model** model) {
  return guard(__func__, [&] {
    need(context, "context");
    need(model_dir, "model_dir");
    need(model, "model");
    *model = make_model(context, vkrnn::ModelFile::load(model_dir), options);
  });
}

vkrnn_status vkrnn_model_load_memory(vkrnn_context* context, const char* config_json, size_t config_size,
                                     const void* weights, size_t weights_size, const vkrnn_model_options* options,
                                     vkrnn_model** model) {
  return guard(__func__, [&] {
    need(context, "context");
    need(config_json, "config_json");
    if (weights_size > 0) check_not_null(weights, "weights");
    need(model, "model");
    const auto* w = static_cast<const std::byte*>(weights);
    *model = make_model(context, vkrnn::ModelFile::load_from_memory({config_json, config_size}, {w, weights_size}), options);
  });
}

void vkrnn_model_destroy(vkrnn_model* model) { delete model; }

vkrnn_status vkrnn_model_get_info(const vkrnn_model* model, vkrnn_model_info* info) {
  return guard(__func__, [&] {
    const Model& m = *need(model, "model").model;
    need(info, "info");
    const vkrnn::ModelConfig& c = m.seq2seq ? m.seq2seq->config() : m.classifier->config();
    vkrnn_model_info out{};
    out.kind = m.seq2seq ? VKRNN_MODEL_SEQ2SEQ : VKRNN_MODEL_CLASSIFIER;
    out.architecture = vkrnn::to_string(c.architecture);
    out.source_vocab_size = m.seq2seq ? c.src_vocab_size : c.vocab_size;
    out.target_vocab_size = c.tgt_vocab_size;
    out.num_classes = c.num_classes;
    out.max_decode_length = c.max_decode_length;
    out.beam_width = c.beam_width;
    out.pad = c.special.pad;
    out.bos = c.special.bos;
    out.eos = c.special.eos;
    out.unk = c.special.unk;
    *info = out;
  });
}

const char* vkrnn_model_label(const vkrnn_model* model, size_t index) {
  if (!model || !model->model->classifier) return nullptr;
  const auto& labels = model->model->classifier->config().labels;
  return index < labels.size() ? labels[index].c_str() : nullptr;
}

vkrnn_status vkrnn_model_encode_text(const vkrnn_model* model, const char* text, int32_t* ids, size_t capacity,
                                     size_t* count) {
  return guard(__func__, [&] {
    const Model& m = *need(model, "model").model;
    need(text, "text");
    const auto v = m.seq2seq ? m.seq2seq->encode_text(text) : m.classifier->encode_text(text);
    copy_out(v.data(), v.size(), ids, capacity, count, "ids");
  });
}

vkrnn_status vkrnn_model_decode_text(const vkrnn_model* model, const int32_t* ids, size_t count, char* text,
                                     size_t capacity, size_t* length) {
  return guard(__func__, [&] {
    const auto& s = seq2seq_of(model);
    if (count > 0) need(ids, "ids");
    need(length, "length");
    const std::string t = s.decode_text({ids, count});
    *length = t.size();
    if (!text && capacity == 0) return;
    check_not_null(text, "text");
    if (capacity < t.size() + 1) {
      if (capacity > 0) std::snprintf(text, capacity, "%s", t.c_str());
      throw BufferTooSmall{fmt::format("the text needs {} bytes with its NUL, the buffer has {}", t.size() + 1, capacity)};
    }
    std::memcpy(text, t.c_str(), t.size() + 1);
  });
}

void vkrnn_decode_options_init(vkrnn_decode_options* options) {
  if (!options) return;
  *options = vkrnn_decode_options{};
  options->length_alpha = -1.0;
  options->repetition_penalty = 1.0;
  options->sampling_topk = 1;
  options->sampling_topp = 1.0;
  options->sampling_temperature = 1.0;
  options->stream_steps = 1;
  options->patience = 1.0;
}

vkrnn_status vkrnn_greedy(const vkrnn_model* model, const int32_t* const* sources, const size_t* lengths, size_t batch,
                          const vkrnn_decode_options* options, vkrnn_result** result) {
  return decode_ids(__func__, blocking<greedy_result>, model, sources, lengths, batch, options, result);
}

vkrnn_status vkrnn_greedy_text(const vkrnn_model* model, const char* const* texts, size_t batch,
                               const vkrnn_decode_options* options, vkrnn_result** result) {
  return decode_texts(__func__, blocking<greedy_result>, model, texts, batch, options, result);
}

vkrnn_status vkrnn_beam(const vkrnn_model* model, const int32_t* const* sources, const size_t* lengths, size_t batch,
                        const vkrnn_decode_options* options, vkrnn_result** result) {
  return decode_ids(__func__, blocking<beam_result>, model, sources, lengths, batch, options, result);
}

vkrnn_status vkrnn_beam_text(const vkrnn_model* model, const char* const* texts, size_t batch,
                             const vkrnn_decode_options* options, vkrnn_result** result) {
  return decode_texts(__func__, blocking<beam_result>, model, texts, batch, options, result);
}

vkrnn_status vkrnn_greedy_submit(const vkrnn_model* model, const int32_t* const* sources, const size_t* lengths,
                                 size_t batch, const vkrnn_decode_options* options, vkrnn_job** job) {
  return decode_ids(__func__, submit_decode<false>, model, sources, lengths, batch, options, job);
}

vkrnn_status vkrnn_greedy_text_submit(const vkrnn_model* model, const char* const* texts, size_t batch,
                                      const vkrnn_decode_options* options, vkrnn_job** job) {
  return decode_texts(__func__, submit_decode<false>, model, texts, batch, options, job);
}

vkrnn_status vkrnn_beam_submit(const vkrnn_model* model, const int32_t* const* sources, const size_t* lengths,
                               size_t batch, const vkrnn_decode_options* options, vkrnn_job** job) {
  return decode_ids(__func__, submit_decode<true>, model, sources, lengths, batch, options, job);
}

vkrnn_status vkrnn_beam_text_submit(const vkrnn_model* model, const char* const* texts, size_t batch,
                                    const vkrnn_decode_options* options, vkrnn_job** job) {
  return decode_texts(__func__, submit_decode<true>, model, texts, batch, options, job);
}

vkrnn_status vkrnn_job_done(const vkrnn_job* job, int* done) {
  return guard(__func__, [&] {
    const vkrnn_job& j = need(job, "job");
    need(done, "done");
    *done = j.seq.done() ? 1 : 0;
  });
}

vkrnn_status vkrnn_job_result(vkrnn_job* job, int wait, vkrnn_result** result) {
  return guard(__func__, [&] {
    vkrnn_job& j = need(job, "job");
    need(result, "result");
    if (j.taken) throw Error(ErrorCode::state, "the job's result was already taken (one result per job)");
    if (!j.seq.done()) {
      if (!wait) throw Error(ErrorCode::state, "the job is still running on the GPU (poll vkrnn_job_done, or pass wait = 1)");
      j.seq.wait();
    }
    std::unique_ptr<vkrnn_result> out;
    if (j.classification.impl) {
      const vkrnn::Classifier& c = *j.model->classifier;
      out.reset(result_of(c, c.read_classify(j.seq, j.classification)));
    } else {
      const vkrnn::Seq2Seq& s = *j.model->seq2seq;
      out.reset(j.beam.impl ? result_of(s, j.beam.source_length(), s.read_beam(j.seq, j.beam))
                            : result_of(s, s.read_greedy(j.seq, j.greedy)));
    }
    j.taken = true;
    *result = out.release();
  });
}

void vkrnn_job_destroy(vkrnn_job* job) { delete job; }

size_t vkrnn_result_rows(const vkrnn_result* result) {
  if (!result) return 0;
  return result->classification ? result->classes.size() : result->rows.size();
}

size_t vkrnn_result_hypotheses(const vkrnn_result* result, size_t row) {
  if (!result || result->classification || row >= result->rows.size()) return 0;
  return result->rows[row].size();
}

vkrnn_status vkrnn_result_get(const vkrnn_result* result, size_t row, size_t index, vkrnn_hypothesis* hypothesis) {
  return guard(__func__, [&] {
    const vkrnn_result& r = need(result, "result");
    need(hypothesis, "hypothesis");
    if (r.classification) throw Error(ErrorCode::invalid_argument, "a classification has no hypotheses");
    if (row >= r.rows.size() || index >= r.rows[row].size()) {
      throw Error(ErrorCode::out_of_range,
                  fmt::format("hypothesis {} of row {}: the result has {} row(s){}", index, row, r.rows.size(),
                              row < r.rows.size() ? fmt::format(", row {} has {}", row, r.rows[row].size()) : ""));
    }
    const Hypothesis& h = r.rows[row][index];
    *hypothesis = {h.tokens.data(),  h.tokens.size(), h.text.c_str(),
                   h.score,          h.norm_score,    h.finished ? 1 : 0,
                   h.attention.empty() ? nullptr : h.attention.data(), r.source_length};
  });
}

vkrnn_status vkrnn_classify(const vkrnn_model* model, const int32_t* const* inputs, const size_t* lengths,
                            size_t batch, int return_pooling, vkrnn_result** result) {
  return guard(__func__, [&] {
    const auto& c = classifier_of(model);
    need(result, "result");
    *result = classify_result(c, sources_of(inputs, lengths, batch), return_pooling);
  });
}

vkrnn_status vkrnn_classify_text(const vkrnn_model* model, const char* const* texts, size_t batch, int return_pooling,
                                 vkrnn_result** result) {
  return guard(__func__, [&] {
    const auto& c = classifier_of(model);
    need(result, "result");
    *result = classify_result(c, texts_of(texts, batch, [&](const char* t) { return c.encode_text(t); }),
                              return_pooling);
  });
}

vkrnn_status vkrnn_classify_submit(const vkrnn_model* model, const int32_t* const* inputs, const size_t* lengths,
                                   size_t batch, int return_pooling, vkrnn_job** job) {
  return guard(__func__, [&] {
    classifier_of(model);
    need(job, "job");
    *job = submit_classify(model, sources_of(inputs, lengths, batch), return_pooling);
  });
}

vkrnn_status vkrnn_classify_text_submit(const vkrnn_model* model, const char* const* texts, size_t batch, int return_pooling,
                                        vkrnn_job** job) {
  return guard(__func__, [&] {
    const auto& c = classifier_of(model);
    need(job, "job");
    *job = submit_classify(model, texts_of(texts, batch, [&](const char* t) { return c.encode_text(t); }), return_pooling);
  });
}

vkrnn_status vkrnn_result_classification(const vkrnn_result* result, size_t row,
                                         vkrnn_classification* classification) {
  return guard(__func__, [&] {
    const vkrnn_result& r = need(result, "result");
    need(classification, "classification");
    if (!r.classification) throw Error(ErrorCode::invalid_argument, "a decode result has no classifications");
    if (row >= r.classes.size()) {
      throw Error(ErrorCode::out_of_range, fmt::format("row {}: the result has {} row(s)", row, r.classes.size()));
    }
    const Classification& c = r.classes[row];
    *classification = {c.predicted,    c.label.c_str(), c.probs.data(),
                       c.logits.data(), r.num_classes,   c.pooling.empty() ? nullptr : c.pooling.data(),
                       r.steps};
  });
}

void vkrnn_result_destroy(vkrnn_result* result) { delete result; }

vkrnn_status vkrnn_encode(const vkrnn_model* model, const int32_t* const* sources, const size_t* lengths,
                          size_t batch, vkrnn_encoded** encoded) {
  return guard(__func__, [&] {
    const auto& s = seq2seq_of(model);
    need(encoded, "encoded");
    auto e = s.encode(sources_of(sources, lengths, batch));
    *encoded = new vkrnn_encoded{model->model, std::move(e)};
  });
}

void vkrnn_encoded_destroy(vkrnn_encoded* encoded) { delete encoded; }

vkrnn_status vkrnn_decoder_start(const vkrnn_encoded* encoded, const vkrnn_decode_options* options,
                                 vkrnn_decoder** decoder) {
  return guard(__func__, [&] {
    const vkrnn_encoded& e = need(encoded, "encoded");
    need(decoder, "decoder");
    if (options && options->on_step) {
      throw Error(ErrorCode::invalid_argument, "on_step (streaming) is for vkrnn_greedy; the decoder steps on request");
    }
    auto state = e.model->seq2seq->start(e.encoded, decode_options(options, e.encoded.batch()));
    *decoder = new vkrnn_decoder{e.model, std::move(state), e.encoded.batch(), e.encoded.source_length(), {}};
  });
}

void vkrnn_decoder_destroy(vkrnn_decoder* decoder) { delete decoder; }

vkrnn_status vkrnn_decoder_step(vkrnn_decoder* decoder, const int32_t* forced_inputs, vkrnn_step* step) {
  return guard(__func__, [&] {
    vkrnn_decoder& d = need(decoder, "decoder");
    need(step, "step");
    std::span<const std::int32_t> forced;
    if (forced_inputs) forced = {forced_inputs, d.batch};
    d.last = d.model->seq2seq->step(d.state, forced);
    const vkrnn::StepResult& r = d.last;
    *step = {r.step,          r.tokens.size(), r.tokens.data(), r.scores.data(), r.finished.data(),
             r.all_finished ? 1 : 0, r.attention.empty() ? nullptr : r.attention.data(), d.source_length};
  });
}

}  // extern "C"
