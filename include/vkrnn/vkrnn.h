/* vkrnn's C API (C99): for C programs and for engines that bind C (C#, Rust, Godot, Unity ...).
 *
 *   vkrnn_context* ctx;  vkrnn_model* model;  vkrnn_result* r;  vkrnn_hypothesis h;
 *   if (vkrnn_context_create(NULL, &ctx) != VKRNN_OK) { puts(vkrnn_last_error()); return 1; }
 *   vkrnn_model_load(ctx, "share/vkrnn/models/dates", NULL, &model);
 *   const char* dates[] = {"Nov 21st, 2026"};
 *   vkrnn_greedy_text(model, dates, 1, NULL, &r);
 *   vkrnn_result_get(r, 0, 0, &h);                 -- h.text: "2026-11-21"
 *   vkrnn_result_destroy(r);  vkrnn_model_destroy(model);  vkrnn_context_destroy(ctx);
 *
 * Every call that can fail returns a vkrnn_status; no C++ exception crosses this interface. On
 * failure vkrnn_last_error() holds the message (what failed and where: the file, field or
 * tensor of a model, the row and position of a bad token, the Vulkan call), per thread.
 * Out-parameters are written only on success (and, with VKRNN_ERROR_BUFFER_TOO_SMALL, the count
 * and what fitted). A NULL handle where one is needed is
 * VKRNN_ERROR_INVALID_ARGUMENT; every destroy function accepts NULL.
 *
 * Lifetimes: a model keeps its context alive, results, encodings and decoders keep their model
 * alive, so handles may be destroyed in any order (a garbage collector's). With an adopted
 * device, destroy every vkrnn handle before the app destroys its VkDevice. Pointers a result,
 * a model or a decoder hands out stay valid until that handle is destroyed (a decoder's step
 * arrays: until its next step).
 *
 * Threads: any thread may call; one model (and its decoders) is used by one thread at a time.
 *
 * Arrays of sources are given as `batch` pointers to token ids and their lengths, or `batch`
 * NUL-terminated UTF-8 strings tokenized with the model's vocabulary. */
#ifndef VKRNN_H
#define VKRNN_H

#include <stddef.h>
#include <stdint.h>

#include <vulkan/vulkan.h>

#include "vkrnn/export.h"
#include "vkrnn/version.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- status and errors */

/* Values are fixed; new ones may be added. Every enum here ends in a *_MAX_ENUM of 0x7FFFFFFF
 * (as Vulkan's do): the type is 32 bits wide and any int32 value is one of it, so a value from a
 * newer header or a cast stays defined behaviour in C++ (vkrnn_status_string of it is "unknown
 * status"). */
typedef enum vkrnn_status {
  VKRNN_OK = 0,
  VKRNN_ERROR_VULKAN = 1,            /* a Vulkan call failed */
  VKRNN_ERROR_NO_LOADER = 2,         /* no Vulkan loader / instance on this system */
  VKRNN_ERROR_NO_DEVICE = 3,         /* no Vulkan device, or none matched the selection */
  VKRNN_ERROR_MISSING_FEATURE = 4,   /* the device (or an adopted VkDevice) lacks a feature */
  VKRNN_ERROR_OUT_OF_RANGE = 5,      /* a size or index beyond a limit */
  VKRNN_ERROR_INVALID_ARGUMENT = 6,  /* NULL handles, wrong shapes or lengths, bad token ids ... */
  VKRNN_ERROR_NOT_FOUND = 7,         /* a file, tensor or shader that does not exist */
  VKRNN_ERROR_FORMAT = 8,            /* a malformed model (model.json, safetensors) */
  VKRNN_ERROR_IO = 9,                /* the filesystem refused */
  VKRNN_ERROR_STATE = 10,            /* an object used in the wrong state */
  VKRNN_ERROR_OUT_OF_MEMORY = 11,    /* host memory ran out */
  VKRNN_ERROR_BUFFER_TOO_SMALL = 12, /* the caller's array is too short: *count says how long */
  VKRNN_ERROR_INTERNAL = 13,         /* anything else (a bug: please report the message) */
  VKRNN_ERROR_NON_FINITE = 14,       /* NaN or infinite logits (the message names the layer and step) */
  VKRNN_STATUS_MAX_ENUM = 0x7FFFFFFF
} vkrnn_status;

/* "ok", "vulkan", "no_loader", ... (never NULL). */
VKRNN_API const char* vkrnn_status_string(vkrnn_status status);
/* The message of the last call that failed on this thread, "" when none has. Valid until the
 * thread's next failing call. */
VKRNN_API const char* vkrnn_last_error(void);

/* The library's version: "MAJOR.MINOR.PATCH" and MAJOR * 10000 + MINOR * 100 + PATCH (compare
 * with VKRNN_VERSION, the headers'). */
VKRNN_API const char* vkrnn_version_string(void);
VKRNN_API int vkrnn_version(void);

/* ---------------------------------------------------------------- devices and contexts */

typedef enum vkrnn_device_type {
  VKRNN_DEVICE_DISCRETE = 0,
  VKRNN_DEVICE_INTEGRATED = 1,
  VKRNN_DEVICE_VIRTUAL = 2,
  VKRNN_DEVICE_CPU = 3,
  VKRNN_DEVICE_OTHER = 4,
  VKRNN_DEVICE_TYPE_MAX_ENUM = 0x7FFFFFFF
} vkrnn_device_type;

typedef struct vkrnn_device_info {
  uint32_t index;             /* position in vkEnumeratePhysicalDevices */
  char name[256];             /* NUL-terminated */
  char driver_name[256];
  uint32_t vendor_id, device_id;
  vkrnn_device_type type;
  uint32_t api_version;       /* VK_MAKE_API_VERSION */
  uint32_t subgroup_size;
  int storage_16bit;          /* storageBuffer16BitAccess: fp16 weight storage possible */
  int unified_memory;         /* every device-local heap is host-visible */
  uint64_t device_local_bytes;
} vkrnn_device_info;

/* Lists every Vulkan device. devices may be NULL with capacity 0 to ask for the count; when
 * capacity < *count the first `capacity` are written and VKRNN_ERROR_BUFFER_TOO_SMALL returned.
 * No loader or no driver: VKRNN_ERROR_NO_LOADER / VKRNN_ERROR_NO_DEVICE with advice. */
VKRNN_API vkrnn_status vkrnn_list_devices(vkrnn_device_info* devices, size_t capacity, size_t* count);

typedef struct vkrnn_context vkrnn_context;

typedef struct vkrnn_context_options {
  const char* device;          /* NULL or "": VKRNN_DEVICE, else the best; an index or a name part */
  int validation;              /* -1: VKRNN_VALIDATION decides; 0 off; 1 on (Khronos layer) */
  int force_staging;           /* device-local memory + staging copies even on unified memory */
  const char* cache_dir;       /* NULL or "": VKRNN_CACHE_DIR, else the user's cache directory */
  int disable_pipeline_cache;  /* no pipeline cache on disk */
} vkrnn_context_options;

/* The defaults: device NULL, validation -1, the rest 0. */
VKRNN_API void vkrnn_context_options_init(vkrnn_context_options* options);

/* vkrnn's own instance, device and queue. options NULL: the defaults. */
VKRNN_API vkrnn_status vkrnn_context_create(const vkrnn_context_options* options, vkrnn_context** context);

/* Handles an application already owns (a game's device): vkrnn creates no instance or device
 * and destroys nothing it did not create. Its work goes on the app's queue (vkrnn serialises
 * only its own submissions: the app must not submit to that queue from another thread at the
 * same time). */
typedef struct vkrnn_external_device {
  VkInstance instance;
  VkPhysicalDevice physical_device;
  VkDevice device;
  uint32_t queue_family;
  uint32_t queue_index;
  uint32_t api_version;  /* the apiVersion the app's instance asked for (>= VK_API_VERSION_1_1) */
  /* What the app enabled on its device. */
  int storage_buffer_16bit;
  int shader_float16;
  int subgroup_size_control;
  /* The app's vkGetInstanceProcAddr (e.g. volk's): then vkrnn loads no Vulkan loader of its
   * own. NULL: vkrnn loads the platform's loader. */
  PFN_vkGetInstanceProcAddr get_instance_proc_addr;
} vkrnn_external_device;

VKRNN_API vkrnn_status vkrnn_context_adopt(const vkrnn_external_device* device,
                                           const vkrnn_context_options* options, vkrnn_context** context);
/* Releases the app's reference: the context lives on while models made from it do. */
VKRNN_API void vkrnn_context_destroy(vkrnn_context* context);
VKRNN_API vkrnn_status vkrnn_context_get_device(const vkrnn_context* context, vkrnn_device_info* info);

/* ---------------------------------------------------------------- models */

typedef struct vkrnn_model vkrnn_model;

typedef enum vkrnn_model_kind {
  VKRNN_MODEL_SEQ2SEQ = 0,     /* bahdanau_seq2seq, luong_seq2seq: greedy, beam, encode/start/step */
  VKRNN_MODEL_CLASSIFIER = 1,  /* rnn_attention_classifier, self_attention_rnn: classify */
  VKRNN_MODEL_KIND_MAX_ENUM = 0x7FFFFFFF
} vkrnn_model_kind;

/* How the weight matrices of dense and recurrent layers are stored (OpOptions::weight_storage);
 * arithmetic is fp32 in every case. */
typedef enum vkrnn_weight_storage {
  VKRNN_WEIGHT_STORAGE_AUTOMATIC = 0, /* as the file stores them (I8 stays int8), else f32 (dense:
                                         f16 with fp16_storage) */
  VKRNN_WEIGHT_STORAGE_F32 = 1,
  VKRNN_WEIGHT_STORAGE_F16 = 2,       /* needs storage_16bit */
  VKRNN_WEIGHT_STORAGE_I8 = 3,        /* int8, one f32 scale per row: any device */
  VKRNN_WEIGHT_STORAGE_MAX_ENUM = 0x7FFFFFFF
} vkrnn_weight_storage;

/* ABI: fields are only ever appended (zero-initialise the struct: zero is every default). */
typedef struct vkrnn_model_options {
  int fp16_storage;  /* dense layers' weights stored as float16 (needs storage_16bit) */
  vkrnn_weight_storage weight_storage; /* dense and recurrent weight matrices; wins over fp16_storage */
} vkrnn_model_options;

/* A model directory (model.json + its safetensors file, docs/model-format.md). options may be
 * NULL. What model.json describes decides the kind: a seq2seq model or a classifier. */
VKRNN_API vkrnn_status vkrnn_model_load(vkrnn_context* context, const char* model_dir,
                                        const vkrnn_model_options* options, vkrnn_model** model);
/* The same from memory: model.json's text (config_size bytes, no NUL needed) and the
 * safetensors file's bytes (copied). */
VKRNN_API vkrnn_status vkrnn_model_load_memory(vkrnn_context* context, const char* config_json,
                                               size_t config_size, const void* weights, size_t weights_size,
                                               const vkrnn_model_options* options, vkrnn_model** model);
VKRNN_API void vkrnn_model_destroy(vkrnn_model* model);

typedef struct vkrnn_model_info {
  vkrnn_model_kind kind;
  const char* architecture;   /* "bahdanau_seq2seq", ..., or "graph" (model format version 2) */
  size_t source_vocab_size;   /* seq2seq: source; classifier: its vocabulary */
  size_t target_vocab_size;   /* seq2seq only (0 for a classifier) */
  size_t num_classes;         /* classifier only (0 for seq2seq) */
  size_t max_decode_length;   /* seq2seq: the default decode length */
  size_t beam_width;          /* seq2seq: the default beam width */
  int32_t pad, bos, eos, unk; /* special token ids, -1 where the model has none */
} vkrnn_model_info;

VKRNN_API vkrnn_status vkrnn_model_get_info(const vkrnn_model* model, vkrnn_model_info* info);
/* A classifier's label of class `index` (NULL for a bad index or a seq2seq model). */
VKRNN_API const char* vkrnn_model_label(const vkrnn_model* model, size_t index);

/* Source ids of a text (seq2seq: the source vocabulary, EOS appended when the model says so).
 * ids may be NULL with capacity 0 to ask for the count; VKRNN_ERROR_BUFFER_TOO_SMALL as above. */
VKRNN_API vkrnn_status vkrnn_model_encode_text(const vkrnn_model* model, const char* text, int32_t* ids,
                                               size_t capacity, size_t* count);
/* Target text of ids (seq2seq; stops at EOS, skips special tokens), NUL-terminated. text may be
 * NULL with capacity 0; *length is the text's length without the NUL, and capacity must be at
 * least *length + 1. */
VKRNN_API vkrnn_status vkrnn_model_decode_text(const vkrnn_model* model, const int32_t* ids, size_t count,
                                               char* text, size_t capacity, size_t* length);

/* ---------------------------------------------------------------- decoding (seq2seq) */

typedef struct vkrnn_step vkrnn_step;

/* Streaming callback (vkrnn_decode_options.on_step): called with each step of a greedy or
 * sampling decode as soon as the GPU produced it (tokens, scores, finished flags; attention
 * NULL), on the calling thread, while the GPU computes the next steps. Return non-zero to go
 * on, 0 to end the decode after this step. The step's arrays are valid during the call. */
typedef int (*vkrnn_step_callback)(const vkrnn_step* step, void* user_data);

/* Decoding options (docs/runtime.md, "Decoding options": CTranslate2's names and rules).
 * ABI: fields are only ever appended, never reordered or retyped. Always initialise the struct
 * with vkrnn_decode_options_init() and then set what you need: a program rebuilt against a
 * newer header then gets the new fields' defaults. The library reads the whole struct of its
 * own header, so a program must be built with the header of the library it runs with (before
 * 1.0 the soname changes with every minor version for this reason, docs/integration.md). */
typedef struct vkrnn_decode_options {
  size_t max_len;        /* decoder steps, EOS included; 0: the model's max_decode_length */
  size_t beam_width;     /* beam only; 0: the model's */
  double length_alpha;   /* beam only; < 0: the model's */
  int return_attention;  /* fill vkrnn_hypothesis.attention */
  /* --- logits processing: greedy, beam (per hypothesis) and the incremental decoder */
  double repetition_penalty;    /* > 0; 1: off */
  size_t no_repeat_ngram_size;  /* 0: off */
  size_t min_length;            /* tokens before EOS may be chosen */
  int disable_unk;              /* never the model's unk token */
  const int32_t* suppress_tokens;  /* ids never chosen (NULL when suppress_tokens_count is 0) */
  size_t suppress_tokens_count;
  /* token sequences never generated: suppress_sequences_count pointers to ids and their lengths */
  const int32_t* const* suppress_sequences;
  const size_t* suppress_sequence_lengths;
  size_t suppress_sequences_count;
  /* --- sampling: greedy and the incremental decoder only (beam: INVALID_ARGUMENT) */
  size_t sampling_topk;         /* 1: argmax (greedy); 0: the whole vocabulary; k: the k largest */
  double sampling_topp;         /* (0, 1]: the nucleus */
  double sampling_temperature;  /* > 0 */
  uint64_t seed;                /* Philox key: the same seed, the same tokens on every device */
  /* forced first tokens (greedy, beam, the incremental decoder): NULL, or one pointer and
   * length per source row (length 0: none) */
  const int32_t* const* target_prefix;
  const size_t* target_prefix_lengths;
  /* --- streaming: greedy only (vkrnn_greedy / vkrnn_greedy_text); NULL: one submission */
  vkrnn_step_callback on_step;
  void* on_step_user_data;
  size_t stream_steps;          /* steps per submission while streaming (0: 1) */
  /* --- beam only */
  double patience;              /* > 0: stop after max(1, round(K * patience)) finished hypotheses */
  double coverage_penalty;      /* Wu et al. 2016's beta, added when ranking; 0: off */
} vkrnn_decode_options;

/* The defaults: max_len 0, beam_width 0, length_alpha -1.0, return_attention 0,
 * repetition_penalty 1.0, no_repeat_ngram_size 0, min_length 0, disable_unk 0, no suppressed
 * tokens or sequences, sampling_topk 1, sampling_topp 1.0, sampling_temperature 1.0, seed 0,
 * no target prefix, no callback, stream_steps 1, patience 1.0, coverage_penalty 0.0. */
VKRNN_API void vkrnn_decode_options_init(vkrnn_decode_options* options);

typedef struct vkrnn_result vkrnn_result;

/* Whole decodes, one GPU submission for the batch. options may be NULL. */
VKRNN_API vkrnn_status vkrnn_greedy(const vkrnn_model* model, const int32_t* const* sources, const size_t* lengths,
                                    size_t batch, const vkrnn_decode_options* options, vkrnn_result** result);
VKRNN_API vkrnn_status vkrnn_greedy_text(const vkrnn_model* model, const char* const* texts, size_t batch,
                                         const vkrnn_decode_options* options, vkrnn_result** result);
VKRNN_API vkrnn_status vkrnn_beam(const vkrnn_model* model, const int32_t* const* sources, const size_t* lengths,
                                  size_t batch, const vkrnn_decode_options* options, vkrnn_result** result);
VKRNN_API vkrnn_status vkrnn_beam_text(const vkrnn_model* model, const char* const* texts, size_t batch,
                                       const vkrnn_decode_options* options, vkrnn_result** result);

/* Decodes that do not block: _submit records the whole decode (the same single submission as
 * vkrnn_greedy's or vkrnn_beam's, so the same tokens), submits it to the context's queue and
 * returns; a game polls vkrnn_job_done between frames. options as vkrnn_greedy's (vkrnn_beam's),
 * except on_step (streaming): VKRNN_ERROR_INVALID_ARGUMENT. */
typedef struct vkrnn_job vkrnn_job;

VKRNN_API vkrnn_status vkrnn_greedy_submit(const vkrnn_model* model, const int32_t* const* sources, const size_t* lengths,
                                           size_t batch, const vkrnn_decode_options* options, vkrnn_job** job);
VKRNN_API vkrnn_status vkrnn_greedy_text_submit(const vkrnn_model* model, const char* const* texts, size_t batch,
                                                const vkrnn_decode_options* options, vkrnn_job** job);
VKRNN_API vkrnn_status vkrnn_beam_submit(const vkrnn_model* model, const int32_t* const* sources, const size_t* lengths,
                                         size_t batch, const vkrnn_decode_options* options, vkrnn_job** job);
VKRNN_API vkrnn_status vkrnn_beam_text_submit(const vkrnn_model* model, const char* const* texts, size_t batch,
                                              const vkrnn_decode_options* options, vkrnn_job** job);
/* *done = 1 once the GPU has finished the job, else 0; never blocks. */
VKRNN_API vkrnn_status vkrnn_job_done(const vkrnn_job* job, int* done);
/* The job's result (as vkrnn_greedy's, vkrnn_beam's or vkrnn_classify's), once: before the job is done VKRNN_ERROR_STATE, unless
 * wait is non-zero (then it blocks until the job is done); asked again, VKRNN_ERROR_STATE. */
VKRNN_API vkrnn_status vkrnn_job_result(vkrnn_job* job, int wait, vkrnn_result** result);
/* Waits for the job's GPU work if it is still running (its buffers are in use), then frees it. */
VKRNN_API void vkrnn_job_destroy(vkrnn_job* job);

/* One output sequence: greedy gives one per source row, beam up to beam_width, best first. */
typedef struct vkrnn_hypothesis {
  const int32_t* tokens;    /* generated ids, EOS included when finished */
  size_t length;
  const char* text;         /* the tokens as target text, NUL-terminated UTF-8 */
  float score;              /* sum of the tokens' log-probabilities */
  double norm_score;        /* beam: score / length^alpha (the ranking); greedy: score */
  int finished;             /* ended with EOS (else it ran into max_len) */
  const float* attention;   /* [length][source_length] with return_attention, else NULL */
  size_t source_length;     /* the batch's longest source */
} vkrnn_hypothesis;

VKRNN_API size_t vkrnn_result_rows(const vkrnn_result* result);                   /* 0 for NULL */
VKRNN_API size_t vkrnn_result_hypotheses(const vkrnn_result* result, size_t row);  /* 0 past the end */
VKRNN_API vkrnn_status vkrnn_result_get(const vkrnn_result* result, size_t row, size_t index,
                                        vkrnn_hypothesis* hypothesis);

/* ---------------------------------------------------------------- classification */

/* One GPU submission for the batch; return_pooling fills the pooling weights. */
VKRNN_API vkrnn_status vkrnn_classify(const vkrnn_model* model, const int32_t* const* inputs, const size_t* lengths,
                                      size_t batch, int return_pooling, vkrnn_result** result);
VKRNN_API vkrnn_status vkrnn_classify_text(const vkrnn_model* model, const char* const* texts, size_t batch,
                                           int return_pooling, vkrnn_result** result);
/* Without blocking, as vkrnn_greedy_submit: a job whose vkrnn_job_result is vkrnn_classify's. */
VKRNN_API vkrnn_status vkrnn_classify_submit(const vkrnn_model* model, const int32_t* const* inputs, const size_t* lengths,
                                             size_t batch, int return_pooling, vkrnn_job** job);
VKRNN_API vkrnn_status vkrnn_classify_text_submit(const vkrnn_model* model, const char* const* texts, size_t batch,
                                                  int return_pooling, vkrnn_job** job);

typedef struct vkrnn_classification {
  int32_t predicted;      /* the class (one-class sigmoid: 1 when p >= 0.5) */
  const char* label;      /* its label (one-class sigmoid below 0.5: "not <label>") */
  const float* probs;     /* [classes]: softmax, or sigmoid per class */
  const float* logits;    /* [classes] */
  size_t classes;
  const float* pooling;   /* [steps] attention-pooling weights with return_pooling, else NULL */
  size_t steps;           /* the batch's longest input */
} vkrnn_classification;

VKRNN_API vkrnn_status vkrnn_result_classification(const vkrnn_result* result, size_t row,
                                                   vkrnn_classification* classification);
VKRNN_API void vkrnn_result_destroy(vkrnn_result* result);

/* ---------------------------------------------------------------- incremental decoding */

/* Encode once, then step one token at a time (a game spreads the work over frames); the same
 * kernels as vkrnn_greedy, so the same tokens. Each call blocks until its GPU work is done. */
typedef struct vkrnn_encoded vkrnn_encoded;
typedef struct vkrnn_decoder vkrnn_decoder;

VKRNN_API vkrnn_status vkrnn_encode(const vkrnn_model* model, const int32_t* const* sources, const size_t* lengths,
                                    size_t batch, vkrnn_encoded** encoded);
VKRNN_API void vkrnn_encoded_destroy(vkrnn_encoded* encoded);
/* A decoder at BOS over an encoding (options: max_len, return_attention; NULL: defaults). */
VKRNN_API vkrnn_status vkrnn_decoder_start(const vkrnn_encoded* encoded, const vkrnn_decode_options* options,
                                           vkrnn_decoder** decoder);
VKRNN_API void vkrnn_decoder_destroy(vkrnn_decoder* decoder);

struct vkrnn_step {
  size_t step;              /* 0 for the first token after BOS */
  size_t batch;
  const int32_t* tokens;    /* [batch]: the chosen token (pad for rows already finished) */
  const float* scores;      /* [batch]: its log-probability (0 for finished rows) */
  const uint8_t* finished;  /* [batch]: 1 once the row has emitted EOS */
  int all_finished;
  const float* attention;   /* [batch][source_length] with return_attention, else NULL */
  size_t source_length;
};

/* One decoder step. forced_inputs: NULL, or `batch` ids replacing the previous tokens as this
 * step's input (teacher forcing). Past max_len: VKRNN_ERROR_OUT_OF_RANGE. */
VKRNN_API vkrnn_status vkrnn_decoder_step(vkrnn_decoder* decoder, const int32_t* forced_inputs, vkrnn_step* step);

#ifdef __cplusplus
}
#endif

#endif /* VKRNN_H */
