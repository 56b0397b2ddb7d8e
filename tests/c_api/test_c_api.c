/* The C API (include/vkrnn/vkrnn.h) from C99: every entry point, with its error paths. Modes:
 *   test_c_api all <source dir>        everything, on the best device (lavapipe in CI)
 *   test_c_api no-loader <source dir>  VKRNN_VULKAN_LIBRARY points at nothing: vkrnn's own
 *                                      loader fails with VKRNN_ERROR_NO_LOADER, while a device
 *                                      the app made with its own loader is adopted through the
 *                                      app's vkGetInstanceProcAddr and decodes
 *   test_c_api no-driver               VK_DRIVER_FILES / VK_ICD_FILENAMES point at nothing
 * Exit status 0 when every check held; each failed check is printed. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vulkan/vulkan.h>

#include "vkrnn/vkrnn.h"

static int failures = 0;

#define CHECK(cond)                                                                 \
  do {                                                                              \
    if (!(cond)) {                                                                  \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);      \
      ++failures;                                                                   \
    }                                                                               \
  } while (0)

/* The call must return `want`, and on failure leave a message containing `fragment`. */
#define CHECK_STATUS(call, want, fragment) check_status((call), (want), (fragment), #call, __LINE__)

static void check_status(vkrnn_status got, vkrnn_status want, const char* fragment, const char* call, int line) {
  if (got != want) {
    fprintf(stderr, "%s:%d: %s returned %s (%s), expected %s\n", __FILE__, line, call, vkrnn_status_string(got),
            vkrnn_last_error(), vkrnn_status_string(want));
    ++failures;
    return;
  }
  if (want != VKRNN_OK && fragment && !strstr(vkrnn_last_error(), fragment)) {
    fprintf(stderr, "%s:%d: %s: message '%s' does not mention '%s'\n", __FILE__, line, call, vkrnn_last_error(),
            fragment);
    ++failures;
  }
}

static char* read_file(const char* path, size_t* size) {
  FILE* f = fopen(path, "rb");
  char* data = NULL;
  long n;
  if (!f) return NULL;
  if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0) {
    data = malloc((size_t)n + 1);
    if (data && fread(data, 1, (size_t)n, f) == (size_t)n) {
      data[n] = 0;
      *size = (size_t)n;
    } else {
      free(data);
      data = NULL;
    }
  }
  fclose(f);
  return data;
}

/* ---------------------------------------------------------------- an app's own device */

/* What a game does with the Vulkan loader it links: an instance, the first device with a compute
 * queue, that device and queue. */
typedef struct app_device {
  VkInstance instance;
  VkPhysicalDevice physical;
  VkDevice device;
  uint32_t family;
} app_device;

static int app_device_create(app_device* app) {
  VkApplicationInfo ai = {VK_STRUCTURE_TYPE_APPLICATION_INFO};
  VkInstanceCreateInfo ii = {VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO};
  VkPhysicalDevice physical[16];
  uint32_t n = 16, i, nf = 0;
  memset(app, 0, sizeof *app);
  ai.apiVersion = VK_API_VERSION_1_1;
  ii.pApplicationInfo = &ai;
  if (vkCreateInstance(&ii, NULL, &app->instance) != VK_SUCCESS) return 0;
  if (vkEnumeratePhysicalDevices(app->instance, &n, physical) < 0 || n == 0) return 0;
  app->physical = physical[0];
  {
    VkQueueFamilyProperties families[16];
    nf = 16;
    vkGetPhysicalDeviceQueueFamilyProperties(app->physical, &nf, families);
    for (i = 0; i < nf; ++i) {
      if (families[i].queueFlags & VK_QUEUE_COMPUTE_BIT) break;
    }
    if (i == nf) return 0;
    app->family = i;
  }
  {
    const float priority = 1.0f;
    VkDeviceQueueCreateInfo qi = {VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO};
    VkDeviceCreateInfo di = {VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO};
    qi.queueFamilyIndex = app->family;
    qi.queueCount = 1;
    qi.pQueuePriorities = &priority;
    di.queueCreateInfoCount = 1;
    di.pQueueCreateInfos = &qi;
    if (vkCreateDevice(app->physical, &di, NULL, &app->device) != VK_SUCCESS) return 0;
  }
  return 1;
}

static void app_device_destroy(app_device* app) {
  if (app->device) vkDestroyDevice(app->device, NULL);
  if (app->instance) vkDestroyInstance(app->instance, NULL);
}

static vkrnn_external_device external_of(const app_device* app) {
  vkrnn_external_device ext;
  memset(&ext, 0, sizeof ext);
  ext.instance = app->instance;
  ext.physical_device = app->physical;
  ext.device = app->device;
  ext.queue_family = app->family;
  ext.queue_index = 0;
  ext.api_version = VK_API_VERSION_1_1;
  ext.get_instance_proc_addr = vkGetInstanceProcAddr;
  return ext;
}

/* ---------------------------------------------------------------- checks */

static char dates_dir[4096], sentiment_dir[4096];

/* The dates model turns the sample's inputs into ISO dates. */
static void check_dates_decode(vkrnn_model* model) {
  const char* texts[] = {"Nov 21st, 2026", "21/11/26"};
  vkrnn_result* r = NULL;
  vkrnn_hypothesis h;
  CHECK_STATUS(vkrnn_greedy_text(model, texts, 2, NULL, &r), VKRNN_OK, NULL);
  CHECK(vkrnn_result_rows(r) == 2);
  CHECK_STATUS(vkrnn_result_get(r, 1, 0, &h), VKRNN_OK, NULL);
  CHECK(strcmp(h.text, "2026-11-21") == 0);
  CHECK(h.finished == 1);
  vkrnn_result_destroy(r);
}

static void check_versions_and_errors(void) {
  char expect[32];
  CHECK(vkrnn_version() == VKRNN_VERSION);
  snprintf(expect, sizeof expect, "%d.%d.%d", VKRNN_VERSION_MAJOR, VKRNN_VERSION_MINOR, VKRNN_VERSION_PATCH);
  CHECK(strcmp(vkrnn_version_string(), expect) == 0);
  CHECK(strcmp(vkrnn_status_string(VKRNN_OK), "ok") == 0);
  CHECK(strcmp(vkrnn_status_string(VKRNN_ERROR_FORMAT), "format") == 0);
  CHECK(strcmp(vkrnn_status_string(VKRNN_ERROR_BUFFER_TOO_SMALL), "buffer_too_small") == 0);
  CHECK(strcmp(vkrnn_status_string(VKRNN_ERROR_NON_FINITE), "non_finite") == 0);
  CHECK(strcmp(vkrnn_status_string((vkrnn_status)999), "unknown status") == 0);
  CHECK(strcmp(vkrnn_last_error(), "") == 0);  /* nothing has failed on this thread yet */
  /* Every destroy takes NULL. */
  vkrnn_context_destroy(NULL);
  vkrnn_model_destroy(NULL);
  vkrnn_result_destroy(NULL);
  vkrnn_encoded_destroy(NULL);
  vkrnn_decoder_destroy(NULL);
  vkrnn_context_options_init(NULL);
  vkrnn_decode_options_init(NULL);
}

/* The last error is per thread: another thread's failure leaves this thread's message alone. */
static void* fail_on_another_thread(void* arg) {
  vkrnn_context* ctx = NULL;
  (void)arg;
  if (vkrnn_model_load(ctx, "x", NULL, NULL) != VKRNN_ERROR_INVALID_ARGUMENT) return (void*)1;
  return strstr(vkrnn_last_error(), "context is NULL") ? NULL : (void*)2;
}

static void check_thread_local_errors(void) {
  pthread_t thread;
  void* ret = (void*)3;
  CHECK_STATUS(vkrnn_context_create(NULL, NULL), VKRNN_ERROR_INVALID_ARGUMENT, "vkrnn_context_create: context is NULL");
  CHECK(pthread_create(&thread, NULL, fail_on_another_thread, NULL) == 0);
  CHECK(pthread_join(thread, &ret) == 0);
  CHECK(ret == NULL);
  CHECK(strstr(vkrnn_last_error(), "vkrnn_context_create: context is NULL") != NULL);
}

static void check_devices(vkrnn_context* ctx) {
  vkrnn_device_info devices[8], first, mine;
  size_t count = 0, count2 = 0;
  CHECK_STATUS(vkrnn_list_devices(NULL, 0, &count), VKRNN_OK, NULL);
  CHECK(count >= 1);
  CHECK_STATUS(vkrnn_list_devices(devices, 8, &count2), VKRNN_OK, NULL);
  CHECK(count2 == count);
  CHECK(strlen(devices[0].name) > 0);
  CHECK(devices[0].api_version >= VK_API_VERSION_1_1);
  CHECK(devices[0].subgroup_size >= 1);
  if (count > 1) CHECK_STATUS(vkrnn_list_devices(&first, 1, &count2), VKRNN_ERROR_BUFFER_TOO_SMALL, "devices");
  CHECK_STATUS(vkrnn_list_devices(NULL, 1, &count2), VKRNN_ERROR_INVALID_ARGUMENT, "devices is NULL");
  CHECK_STATUS(vkrnn_list_devices(devices, 8, NULL), VKRNN_ERROR_INVALID_ARGUMENT, "count is NULL");
  CHECK_STATUS(vkrnn_context_get_device(ctx, &mine), VKRNN_OK, NULL);
  CHECK(strlen(mine.name) > 0);
  CHECK_STATUS(vkrnn_context_get_device(NULL, &mine), VKRNN_ERROR_INVALID_ARGUMENT, "context is NULL");
  CHECK_STATUS(vkrnn_context_get_device(ctx, NULL), VKRNN_ERROR_INVALID_ARGUMENT, "info is NULL");
}

static void check_contexts(void) {
  vkrnn_context_options o;
  vkrnn_context* ctx = NULL;
  vkrnn_context_options_init(&o);
  CHECK(o.device == NULL && o.validation == -1 && o.force_staging == 0 && o.disable_pipeline_cache == 0);
  o.device = "no-such-gpu";
  CHECK_STATUS(vkrnn_context_create(&o, &ctx), VKRNN_ERROR_NO_DEVICE, "no-such-gpu");
  CHECK(ctx == NULL);
  o.device = "0";
  o.force_staging = 1;
  o.disable_pipeline_cache = 1;
  CHECK_STATUS(vkrnn_context_create(&o, &ctx), VKRNN_OK, NULL);
  CHECK(ctx != NULL);
  vkrnn_context_destroy(ctx);
  CHECK_STATUS(vkrnn_context_adopt(NULL, NULL, &ctx), VKRNN_ERROR_INVALID_ARGUMENT, "device is NULL");
}

static void check_models(vkrnn_context* ctx, vkrnn_model** dates, vkrnn_model** sentiment) {
  vkrnn_model* m = NULL;
  vkrnn_model_info info;
  vkrnn_model_options mo = {0};
  char path[4200];
  size_t config_size = 0, weights_size = 0;
  char *config, *weights;

  CHECK_STATUS(vkrnn_model_load(ctx, dates_dir, &mo, dates), VKRNN_OK, NULL);
  CHECK_STATUS(vkrnn_model_load(ctx, sentiment_dir, NULL, sentiment), VKRNN_OK, NULL);
  CHECK_STATUS(vkrnn_model_load(ctx, "/nonexistent/model", NULL, &m), VKRNN_ERROR_IO, "/nonexistent/model/model.json");
  CHECK(m == NULL);
  CHECK_STATUS(vkrnn_model_load(NULL, dates_dir, NULL, &m), VKRNN_ERROR_INVALID_ARGUMENT, "context is NULL");
  CHECK_STATUS(vkrnn_model_load(ctx, NULL, NULL, &m), VKRNN_ERROR_INVALID_ARGUMENT, "model_dir is NULL");
  CHECK_STATUS(vkrnn_model_load(ctx, dates_dir, NULL, NULL), VKRNN_ERROR_INVALID_ARGUMENT, "model is NULL");
  /* int8 weight matrices (dense and recurrent) still decode the sample; a bad storage value is refused. */
  mo.weight_storage = VKRNN_WEIGHT_STORAGE_I8;
  CHECK_STATUS(vkrnn_model_load(ctx, dates_dir, &mo, &m), VKRNN_OK, NULL);
  if (m) check_dates_decode(m);
  vkrnn_model_destroy(m);
  m = NULL;
  mo.weight_storage = (vkrnn_weight_storage)7;
  CHECK_STATUS(vkrnn_model_load(ctx, dates_dir, &mo, &m), VKRNN_ERROR_INVALID_ARGUMENT,
               "options->weight_storage = 7 is not a vkrnn_weight_storage");
  CHECK(m == NULL);
  mo.weight_storage = VKRNN_WEIGHT_STORAGE_AUTOMATIC;

  /* From memory: the same model; a malformed config or weights file is a format error. */
  snprintf(path, sizeof path, "%s/model.json", dates_dir);
  config = read_file(path, &config_size);
  snprintf(path, sizeof path, "%s/model.safetensors", dates_dir);
  weights = read_file(path, &weights_size);
  CHECK(config && weights);
  if (config && weights) {
    CHECK_STATUS(vkrnn_model_load_memory(ctx, config, config_size, weights, weights_size, NULL, &m), VKRNN_OK, NULL);
    check_dates_decode(m);
    vkrnn_model_destroy(m);
    m = NULL;
    CHECK_STATUS(vkrnn_model_load_memory(ctx, config, config_size / 2, weights, weights_size, NULL, &m),
                 VKRNN_ERROR_FORMAT, "invalid JSON");
    CHECK_STATUS(vkrnn_model_load_memory(ctx, config, config_size, weights, weights_size - 3, NULL, &m),
                 VKRNN_ERROR_FORMAT, "model.safetensors");
    CHECK_STATUS(vkrnn_model_load_memory(ctx, config, config_size, NULL, 10, NULL, &m), VKRNN_ERROR_INVALID_ARGUMENT,
                 "weights is NULL");
    CHECK_STATUS(vkrnn_model_load_memory(ctx, NULL, 0, weights, weights_size, NULL, &m),
                 VKRNN_ERROR_INVALID_ARGUMENT, "config_json is NULL");
    CHECK(m == NULL);
  }
  free(config);
  free(weights);

  CHECK_STATUS(vkrnn_model_get_info(*dates, &info), VKRNN_OK, NULL);
  CHECK(info.kind == VKRNN_MODEL_SEQ2SEQ);
  CHECK(strcmp(info.architecture, "bahdanau_seq2seq") == 0);
  CHECK(info.source_vocab_size == 72 && info.target_vocab_size == 15 && info.num_classes == 0);
  CHECK(info.max_decode_length == 12 && info.beam_width == 3);
  CHECK(info.pad == 0 && info.bos == 1 && info.eos == 2 && info.unk == 3);
  CHECK_STATUS(vkrnn_model_get_info(*sentiment, &info), VKRNN_OK, NULL);
  CHECK(info.kind == VKRNN_MODEL_CLASSIFIER);
  CHECK(info.num_classes == 2 && info.target_vocab_size == 0 && info.eos == -1);
  CHECK_STATUS(vkrnn_model_get_info(NULL, &info), VKRNN_ERROR_INVALID_ARGUMENT, "model is NULL");
  CHECK_STATUS(vkrnn_model_get_info(*dates, NULL), VKRNN_ERROR_INVALID_ARGUMENT, "info is NULL");
  CHECK(strcmp(vkrnn_model_label(*sentiment, 1), "positive") == 0);
  CHECK(vkrnn_model_label(*sentiment, 2) == NULL);
  CHECK(vkrnn_model_label(*dates, 0) == NULL);
  CHECK(vkrnn_model_label(NULL, 0) == NULL);
}

static void check_text(vkrnn_model* dates, vkrnn_model* sentiment) {
  int32_t ids[64];
  size_t n = 0, len = 0;
  char text[64];
  const int32_t bad[] = {999};
  CHECK_STATUS(vkrnn_model_encode_text(dates, "21/11/26", NULL, 0, &n), VKRNN_OK, NULL);
  CHECK(n == 9);  /* 8 characters + EOS */
  CHECK_STATUS(vkrnn_model_encode_text(dates, "21/11/26", ids, 64, &n), VKRNN_OK, NULL);
  CHECK(n == 9 && ids[8] == 2);
  CHECK_STATUS(vkrnn_model_encode_text(dates, "21/11/26", ids, 4, &n), VKRNN_ERROR_BUFFER_TOO_SMALL, "ids");
  CHECK(n == 9);
  CHECK_STATUS(vkrnn_model_encode_text(sentiment, "a great film", ids, 64, &n), VKRNN_OK, NULL);
  CHECK(n == 3);
  CHECK_STATUS(vkrnn_model_encode_text(dates, "\xff", ids, 64, &n), VKRNN_ERROR_INVALID_ARGUMENT, "UTF-8");
  CHECK_STATUS(vkrnn_model_encode_text(dates, NULL, ids, 64, &n), VKRNN_ERROR_INVALID_ARGUMENT, "text is NULL");
  CHECK_STATUS(vkrnn_model_encode_text(NULL, "x", ids, 64, &n), VKRNN_ERROR_INVALID_ARGUMENT, "model is NULL");

  /* The target vocabulary's ids of "2026-11-21" come back as that text. */
  {
    vkrnn_result* r = NULL;
    vkrnn_hypothesis h;
    const char* texts[] = {"Nov 21st, 2026"};
    CHECK_STATUS(vkrnn_greedy_text(dates, texts, 1, NULL, &r), VKRNN_OK, NULL);
    CHECK_STATUS(vkrnn_result_get(r, 0, 0, &h), VKRNN_OK, NULL);
    CHECK_STATUS(vkrnn_model_decode_text(dates, h.tokens, h.length, NULL, 0, &len), VKRNN_OK, NULL);
    CHECK(len == 10);
    CHECK_STATUS(vkrnn_model_decode_text(dates, h.tokens, h.length, text, sizeof text, &len), VKRNN_OK, NULL);
    CHECK(strcmp(text, "2026-11-21") == 0);
    CHECK_STATUS(vkrnn_model_decode_text(dates, h.tokens, h.length, text, 5, &len), VKRNN_ERROR_BUFFER_TOO_SMALL,
                 "11 bytes");
    CHECK(len == 10 && strcmp(text, "2026") == 0);
    vkrnn_result_destroy(r);
  }
  CHECK_STATUS(vkrnn_model_decode_text(dates, bad, 1, text, sizeof text, &len), VKRNN_ERROR_INVALID_ARGUMENT, "999");
  CHECK_STATUS(vkrnn_model_decode_text(sentiment, bad, 1, text, sizeof text, &len), VKRNN_ERROR_INVALID_ARGUMENT,
               "not a seq2seq model");
  CHECK_STATUS(vkrnn_model_decode_text(dates, NULL, 1, text, sizeof text, &len), VKRNN_ERROR_INVALID_ARGUMENT,
               "ids is NULL");
}

static void check_greedy_and_beam(vkrnn_model* dates, vkrnn_model* sentiment) {
  int32_t a[64], b[64];
  size_t na = 0, nb = 0, i, t, s;
  const int32_t* sources[2];
  size_t lengths[2];
  const int32_t bad_ids[] = {5, 999};
  const int32_t* bad_sources[] = {bad_ids};
  const size_t bad_lengths[] = {2};
  vkrnn_decode_options o;
  vkrnn_result *greedy = NULL, *beam = NULL;
  vkrnn_hypothesis h, h0, prev;

  vkrnn_model_encode_text(dates, "Saturday 21 November 2026", a, 64, &na);
  vkrnn_model_encode_text(dates, "2026.11.21", b, 64, &nb);
  sources[0] = a;
  sources[1] = b;
  lengths[0] = na;
  lengths[1] = nb;
  vkrnn_decode_options_init(&o);
  CHECK(o.max_len == 0 && o.beam_width == 0 && o.length_alpha < 0 && o.return_attention == 0);
  o.return_attention = 1;
  CHECK_STATUS(vkrnn_greedy(dates, sources, lengths, 2, &o, &greedy), VKRNN_OK, NULL);
  CHECK(vkrnn_result_rows(greedy) == 2);
  CHECK(vkrnn_result_hypotheses(greedy, 0) == 1);
  CHECK(vkrnn_result_hypotheses(greedy, 2) == 0);
  for (i = 0; i < 2; ++i) {
    CHECK_STATUS(vkrnn_result_get(greedy, i, 0, &h), VKRNN_OK, NULL);
    CHECK(strcmp(h.text, "2026-11-21") == 0);
    CHECK(h.length == 11 && h.tokens[10] == 2 && h.finished == 1);
    CHECK(h.score <= 0.0f && h.score > -1.0f && h.norm_score == h.score);
    CHECK(h.source_length == na);  /* the longer source */
    CHECK(h.attention != NULL);
    if (h.attention) {
      /* Each step's weights are a distribution over the row's own source positions. */
      for (t = 0; t < h.length; ++t) {
        double sum = 0.0;
        for (s = 0; s < h.source_length; ++s) sum += h.attention[t * h.source_length + s];
        CHECK(fabs(sum - 1.0) < 1e-4);
        for (s = lengths[i]; s < h.source_length; ++s) CHECK(h.attention[t * h.source_length + s] == 0.0f);
      }
    }
  }
  CHECK_STATUS(vkrnn_result_get(greedy, 0, 1, &h), VKRNN_ERROR_OUT_OF_RANGE, "row 0 has 1");
  CHECK_STATUS(vkrnn_result_get(greedy, 5, 0, &h), VKRNN_ERROR_OUT_OF_RANGE, "2 row(s)");
  CHECK_STATUS(vkrnn_result_get(NULL, 0, 0, &h), VKRNN_ERROR_INVALID_ARGUMENT, "result is NULL");
  CHECK_STATUS(vkrnn_result_get(greedy, 0, 0, NULL), VKRNN_ERROR_INVALID_ARGUMENT, "hypothesis is NULL");
  {
    vkrnn_classification c;
    CHECK_STATUS(vkrnn_result_classification(greedy, 0, &c), VKRNN_ERROR_INVALID_ARGUMENT, "no classifications");
  }

  /* Beam search: best first, the best equal to greedy's answer, at most the model's width 3. */
  o.return_attention = 0;
  CHECK_STATUS(vkrnn_beam(dates, sources, lengths, 2, &o, &beam), VKRNN_OK, NULL);
  CHECK(vkrnn_result_rows(beam) == 2);
  for (i = 0; i < 2; ++i) {
    size_t k, nk = vkrnn_result_hypotheses(beam, i);
    CHECK(nk >= 1 && nk <= 3);
    CHECK_STATUS(vkrnn_result_get(beam, i, 0, &h0), VKRNN_OK, NULL);
    CHECK(strcmp(h0.text, "2026-11-21") == 0 && h0.finished == 1 && h0.attention == NULL);
    prev = h0;
    for (k = 1; k < nk; ++k) {
      CHECK_STATUS(vkrnn_result_get(beam, i, k, &h), VKRNN_OK, NULL);
      CHECK(h.norm_score <= prev.norm_score);
      prev = h;
    }
  }
  vkrnn_result_destroy(beam);
  beam = NULL;
  {
    const char* texts[] = {"Nov 21st, 2026"};
    o.beam_width = 2;
    o.return_attention = 1;
    CHECK_STATUS(vkrnn_beam_text(dates, texts, 1, &o, &beam), VKRNN_OK, NULL);
    CHECK(vkrnn_result_hypotheses(beam, 0) <= 2);
    CHECK_STATUS(vkrnn_result_get(beam, 0, 0, &h), VKRNN_OK, NULL);
    CHECK(strcmp(h.text, "2026-11-21") == 0 && h.attention != NULL);
    vkrnn_result_destroy(beam);
    beam = NULL;
    CHECK_STATUS(vkrnn_beam_text(sentiment, texts, 1, NULL, &beam), VKRNN_ERROR_INVALID_ARGUMENT, "classifier");
    CHECK_STATUS(vkrnn_greedy_text(sentiment, texts, 1, NULL, &beam), VKRNN_ERROR_INVALID_ARGUMENT, "classifier");
    CHECK_STATUS(vkrnn_greedy_text(dates, texts, 1, NULL, NULL), VKRNN_ERROR_INVALID_ARGUMENT, "result is NULL");
    o.max_len = 100000;
    CHECK_STATUS(vkrnn_greedy_text(dates, texts, 1, &o, &beam), VKRNN_ERROR_OUT_OF_RANGE, "max_len");
    CHECK(beam == NULL);
  }
  /* Bad sources: named by row and position. */
  CHECK_STATUS(vkrnn_greedy(dates, bad_sources, bad_lengths, 1, NULL, &beam), VKRNN_ERROR_INVALID_ARGUMENT, "999");
  CHECK_STATUS(vkrnn_beam(dates, bad_sources, bad_lengths, 1, NULL, &beam), VKRNN_ERROR_INVALID_ARGUMENT, "999");
  CHECK_STATUS(vkrnn_greedy(dates, NULL, lengths, 1, NULL, &beam), VKRNN_ERROR_INVALID_ARGUMENT, "sources is NULL");
  CHECK_STATUS(vkrnn_greedy(dates, sources, NULL, 1, NULL, &beam), VKRNN_ERROR_INVALID_ARGUMENT, "lengths is NULL");
  CHECK_STATUS(vkrnn_greedy(dates, sources, lengths, 0, NULL, &beam), VKRNN_ERROR_INVALID_ARGUMENT, "batch is 0");
  CHECK_STATUS(vkrnn_greedy(NULL, sources, lengths, 1, NULL, &beam), VKRNN_ERROR_INVALID_ARGUMENT, "model is NULL");
  {
    const char* texts[] = {"ok", NULL};
    CHECK_STATUS(vkrnn_greedy_text(dates, texts, 2, NULL, &beam), VKRNN_ERROR_INVALID_ARGUMENT, "texts[1] is NULL");
    CHECK_STATUS(vkrnn_beam_text(dates, NULL, 1, NULL, &beam), VKRNN_ERROR_INVALID_ARGUMENT, "texts is NULL");
  }
  CHECK(beam == NULL);
  vkrnn_result_destroy(greedy);
}

/* What the streaming callback saw. */
typedef struct stream_log {
  size_t steps, stop_after;
  int32_t tokens[64];  /* row 0's token per step */
  int in_order;
} stream_log;

static int log_step(const vkrnn_step* step, void* user_data) {
  stream_log* log = (stream_log*)user_data;
  if (step->step != log->steps || step->batch != 1) log->in_order = 0;
  if (log->steps < 64) log->tokens[log->steps] = step->tokens[0];
  ++log->steps;
  return log->steps < log->stop_after;
}

static int contains(const int32_t* tokens, size_t n, const int32_t* seq, size_t m) {
  size_t i;
  for (i = 0; i + m <= n; ++i)
    if (memcmp(tokens + i, seq, m * sizeof(int32_t)) == 0) return 1;
  return 0;
}

/* The decoding options of vkrnn_decode_options: defaults, logits rules, suppressed tokens and
 * sequences, sampling, target prefixes, streaming, beam's patience and coverage penalty, and
 * what each entry point refuses. */
static void check_decode_options(vkrnn_model* dates) {
  const char* texts[] = {"Nov 21st, 2026"};
  vkrnn_decode_options o;
  vkrnn_result *plain = NULL, *r = NULL, *r2 = NULL;
  vkrnn_hypothesis p, h, h2;
  size_t i, k;

  vkrnn_decode_options_init(&o);
  CHECK(o.repetition_penalty == 1.0 && o.no_repeat_ngram_size == 0 && o.min_length == 0 && o.disable_unk == 0);
  CHECK(o.suppress_tokens == NULL && o.suppress_tokens_count == 0 && o.suppress_sequences == NULL &&
        o.suppress_sequence_lengths == NULL && o.suppress_sequences_count == 0);
  CHECK(o.sampling_topk == 1 && o.sampling_topp == 1.0 && o.sampling_temperature == 1.0 && o.seed == 0);
  CHECK(o.target_prefix == NULL && o.target_prefix_lengths == NULL && o.on_step == NULL && o.on_step_user_data == NULL);
  CHECK(o.stream_steps == 1 && o.patience == 1.0 && o.coverage_penalty == 0.0);
  CHECK_STATUS(vkrnn_greedy_text(dates, texts, 1, &o, &plain), VKRNN_OK, NULL);
  CHECK_STATUS(vkrnn_result_get(plain, 0, 0, &p), VKRNN_OK, NULL);
  CHECK(strcmp(p.text, "2026-11-21") == 0 && p.length == 11);
  if (p.length != 11) return;

  /* Suppressed: the '-' token, and the sequence of the first two tokens ("20"). */
  {
    const int32_t dash = p.tokens[4];
    const int32_t* seqs[1];
    size_t seq_lengths[1] = {2};
    seqs[0] = p.tokens;
    o.suppress_tokens = &dash;
    o.suppress_tokens_count = 1;
    o.suppress_sequences = seqs;
    o.suppress_sequence_lengths = seq_lengths;
    o.suppress_sequences_count = 1;
    CHECK_STATUS(vkrnn_greedy_text(dates, texts, 1, &o, &r), VKRNN_OK, NULL);
    CHECK_STATUS(vkrnn_result_get(r, 0, 0, &h), VKRNN_OK, NULL);
    for (i = 0; i < h.length; ++i) CHECK(h.tokens[i] != dash);
    CHECK(!contains(h.tokens, h.length, p.tokens, 2));
    vkrnn_result_destroy(r);
    r = NULL;
    /* The same per hypothesis in beam search. */
    CHECK_STATUS(vkrnn_beam_text(dates, texts, 1, &o, &r), VKRNN_OK, NULL);
    for (k = 0; k < vkrnn_result_hypotheses(r, 0); ++k) {
      CHECK_STATUS(vkrnn_result_get(r, 0, k, &h), VKRNN_OK, NULL);
      for (i = 0; i < h.length; ++i) CHECK(h.tokens[i] != dash);
      CHECK(!contains(h.tokens, h.length, p.tokens, 2));
    }
    vkrnn_result_destroy(r);
    r = NULL;
    o.suppress_tokens = NULL;
    CHECK_STATUS(vkrnn_greedy_text(dates, texts, 1, &o, &r), VKRNN_ERROR_INVALID_ARGUMENT, "suppress_tokens is NULL");
    o.suppress_tokens_count = 0;
    o.suppress_sequences_count = 0;
  }
  /* min_length: no EOS among the first 14 tokens; penalty, n-grams and disable_unk run. */
  o.min_length = 14;
  o.repetition_penalty = 1.2;
  o.no_repeat_ngram_size = 4;
  o.disable_unk = 1;
  CHECK_STATUS(vkrnn_greedy_text(dates, texts, 1, &o, &r), VKRNN_OK, NULL);
  CHECK_STATUS(vkrnn_result_get(r, 0, 0, &h), VKRNN_OK, NULL);
  for (i = 0; i < h.length && i < 14; ++i) CHECK(h.tokens[i] != 2);
  vkrnn_result_destroy(r);
  r = NULL;
  o.repetition_penalty = 0.0;
  CHECK_STATUS(vkrnn_greedy_text(dates, texts, 1, &o, &r), VKRNN_ERROR_INVALID_ARGUMENT, "repetition_penalty");
  vkrnn_decode_options_init(&o);

  /* Sampling: the same seed, the same tokens. */
  o.sampling_topk = 0;
  o.sampling_temperature = 1.5;
  o.seed = 7;
  CHECK_STATUS(vkrnn_greedy_text(dates, texts, 1, &o, &r), VKRNN_OK, NULL);
  CHECK_STATUS(vkrnn_greedy_text(dates, texts, 1, &o, &r2), VKRNN_OK, NULL);
  CHECK_STATUS(vkrnn_result_get(r, 0, 0, &h), VKRNN_OK, NULL);
  CHECK_STATUS(vkrnn_result_get(r2, 0, 0, &h2), VKRNN_OK, NULL);
  CHECK(h.length == h2.length && memcmp(h.tokens, h2.tokens, h.length * sizeof(int32_t)) == 0);
  vkrnn_result_destroy(r2);
  r2 = NULL;
  vkrnn_result_destroy(r);
  r = NULL;
  CHECK_STATUS(vkrnn_beam_text(dates, texts, 1, &o, &r), VKRNN_ERROR_INVALID_ARGUMENT, "sampling");
  vkrnn_decode_options_init(&o);

  /* A target prefix: the row starts with the forced token. */
  {
    const int32_t one = p.tokens[5];  /* '1' */
    const int32_t* prefix[1];
    size_t prefix_lengths[1] = {1};
    prefix[0] = &one;
    o.target_prefix = prefix;
    o.target_prefix_lengths = prefix_lengths;
    CHECK_STATUS(vkrnn_greedy_text(dates, texts, 1, &o, &r), VKRNN_OK, NULL);
    CHECK_STATUS(vkrnn_result_get(r, 0, 0, &h), VKRNN_OK, NULL);
    CHECK(h.length >= 1 && h.tokens[0] == one);
    vkrnn_result_destroy(r);
    r = NULL;
    /* Beam search: every hypothesis starts with it. */
    o.beam_width = 3;
    CHECK_STATUS(vkrnn_beam_text(dates, texts, 1, &o, &r), VKRNN_OK, NULL);
    CHECK(vkrnn_result_hypotheses(r, 0) == 3);
    for (i = 0; i < vkrnn_result_hypotheses(r, 0); ++i) {
      CHECK_STATUS(vkrnn_result_get(r, 0, i, &h), VKRNN_OK, NULL);
      CHECK(h.length >= 1 && h.tokens[0] == one);
    }
    vkrnn_result_destroy(r);
    r = NULL;
    o.max_len = 1;
    prefix_lengths[0] = 2;
    {
      const int32_t two[2] = {one, one};
      prefix[0] = two;
      CHECK_STATUS(vkrnn_beam_text(dates, texts, 1, &o, &r), VKRNN_ERROR_OUT_OF_RANGE, "longer than max_len = 1");
      prefix[0] = &one;
    }
    o.max_len = 0;
    o.beam_width = 0;
    prefix_lengths[0] = 1;
    o.target_prefix_lengths = NULL;
    CHECK_STATUS(vkrnn_greedy_text(dates, texts, 1, &o, &r), VKRNN_ERROR_INVALID_ARGUMENT, "target_prefix_lengths is NULL");
    vkrnn_decode_options_init(&o);
  }

  /* Streaming: every step in order with greedy's tokens; 0 from the callback ends the decode. */
  {
    stream_log log;
    vkrnn_encoded* enc = NULL;
    vkrnn_decoder* dec = NULL;
    memset(&log, 0, sizeof log);
    log.stop_after = 1000;
    log.in_order = 1;
    o.on_step = log_step;
    o.on_step_user_data = &log;
    o.stream_steps = 2;
    CHECK_STATUS(vkrnn_greedy_text(dates, texts, 1, &o, &r), VKRNN_OK, NULL);
    CHECK(log.steps == p.length && log.in_order);
    CHECK(memcmp(log.tokens, p.tokens, p.length * sizeof(int32_t)) == 0);
    vkrnn_result_destroy(r);
    r = NULL;
    memset(&log, 0, sizeof log);
    log.stop_after = 3;
    log.in_order = 1;
    CHECK_STATUS(vkrnn_greedy_text(dates, texts, 1, &o, &r), VKRNN_OK, NULL);
    CHECK_STATUS(vkrnn_result_get(r, 0, 0, &h), VKRNN_OK, NULL);
    CHECK(log.steps == 3 && h.length == 3 && h.finished == 0 && memcmp(h.tokens, p.tokens, 3 * sizeof(int32_t)) == 0);
    vkrnn_result_destroy(r);
    r = NULL;
    CHECK_STATUS(vkrnn_beam_text(dates, texts, 1, &o, &r), VKRNN_ERROR_INVALID_ARGUMENT, "on_step");
    {
      size_t n = 0;
      int32_t ids[64];
      const int32_t* src[1];
      vkrnn_model_encode_text(dates, texts[0], ids, 64, &n);
      src[0] = ids;
      CHECK_STATUS(vkrnn_encode(dates, src, &n, 1, &enc), VKRNN_OK, NULL);
      CHECK_STATUS(vkrnn_decoder_start(enc, &o, &dec), VKRNN_ERROR_INVALID_ARGUMENT, "on_step");
      CHECK(dec == NULL);
      vkrnn_encoded_destroy(enc);
    }
    vkrnn_decode_options_init(&o);
  }

  /* Beam: patience and the coverage penalty, hypotheses best first. */
  o.patience = 2.0;
  o.coverage_penalty = 0.3;
  CHECK_STATUS(vkrnn_beam_text(dates, texts, 1, &o, &r), VKRNN_OK, NULL);
  CHECK(vkrnn_result_hypotheses(r, 0) >= 1 && vkrnn_result_hypotheses(r, 0) <= 3);
  CHECK_STATUS(vkrnn_result_get(r, 0, 0, &h), VKRNN_OK, NULL);
  CHECK(strcmp(h.text, "2026-11-21") == 0);
  for (k = 1; k < vkrnn_result_hypotheses(r, 0); ++k) {
    CHECK_STATUS(vkrnn_result_get(r, 0, k, &h2), VKRNN_OK, NULL);
    CHECK(h2.norm_score <= h.norm_score);
    h = h2;
  }
  vkrnn_result_destroy(r);
  r = NULL;
  o.patience = 0.0;
  CHECK_STATUS(vkrnn_beam_text(dates, texts, 1, &o, &r), VKRNN_ERROR_INVALID_ARGUMENT, "patience");
  CHECK(r == NULL);
  vkrnn_result_destroy(plain);
}

static void check_classify(vkrnn_model* dates, vkrnn_model* sentiment) {
  const char* texts[] = {"the plot was dull but the acting was great", "i did not like the movie"};
  vkrnn_result* r = NULL;
  vkrnn_classification c;
  int32_t ids[64];
  size_t n = 0, k;
  const int32_t* inputs[1];
  size_t lengths[1];
  double sum = 0.0;

  CHECK_STATUS(vkrnn_classify_text(sentiment, texts, 2, 1, &r), VKRNN_OK, NULL);
  CHECK(vkrnn_result_rows(r) == 2);
  CHECK(vkrnn_result_hypotheses(r, 0) == 0);
  CHECK_STATUS(vkrnn_result_classification(r, 0, &c), VKRNN_OK, NULL);
  CHECK(c.predicted == 1 && strcmp(c.label, "positive") == 0);
  CHECK(c.classes == 2 && c.probs[1] > 0.9f && fabs(c.probs[0] + c.probs[1] - 1.0) < 1e-5);
  CHECK(c.logits[1] > c.logits[0]);
  CHECK(c.steps == 9 && c.pooling != NULL);
  if (c.pooling) {
    for (k = 0; k < c.steps; ++k) sum += c.pooling[k];
    CHECK(fabs(sum - 1.0) < 1e-4);
  }
  CHECK_STATUS(vkrnn_result_classification(r, 1, &c), VKRNN_OK, NULL);
  CHECK(strcmp(c.label, "negative") == 0);
  if (c.pooling) CHECK(c.pooling[c.steps - 1] == 0.0f);  /* 5 words of 9 steps */
  CHECK_STATUS(vkrnn_result_classification(r, 2, &c), VKRNN_ERROR_OUT_OF_RANGE, "2 row(s)");
  CHECK_STATUS(vkrnn_result_classification(NULL, 0, &c), VKRNN_ERROR_INVALID_ARGUMENT, "result is NULL");
  {
    vkrnn_hypothesis h;
    CHECK_STATUS(vkrnn_result_get(r, 0, 0, &h), VKRNN_ERROR_INVALID_ARGUMENT, "no hypotheses");
  }
  vkrnn_result_destroy(r);

  /* Ids in, no pooling asked for. */
  vkrnn_model_encode_text(sentiment, "a great film", ids, 64, &n);
  inputs[0] = ids;
  lengths[0] = n;
  r = NULL;
  CHECK_STATUS(vkrnn_classify(sentiment, inputs, lengths, 1, 0, &r), VKRNN_OK, NULL);
  CHECK_STATUS(vkrnn_result_classification(r, 0, &c), VKRNN_OK, NULL);
  CHECK(c.pooling == NULL && c.steps == 3);
  vkrnn_result_destroy(r);
  r = NULL;
  CHECK_STATUS(vkrnn_classify(dates, inputs, lengths, 1, 0, &r), VKRNN_ERROR_INVALID_ARGUMENT, "not a classifier");
  CHECK_STATUS(vkrnn_classify_text(NULL, texts, 1, 0, &r), VKRNN_ERROR_INVALID_ARGUMENT, "model is NULL");
  lengths[0] = 0;
  CHECK_STATUS(vkrnn_classify(sentiment, inputs, lengths, 1, 0, &r), VKRNN_ERROR_INVALID_ARGUMENT, "empty");
  CHECK(r == NULL);
}

/* encode / start / step gives greedy's tokens, one step at a time. */
static void check_incremental(vkrnn_model* dates, vkrnn_model* sentiment) {
  int32_t ids[64];
  size_t n = 0, step;
  const int32_t* sources[1];
  size_t lengths[1];
  vkrnn_encoded* enc = NULL;
  vkrnn_decoder* dec = NULL;
  vkrnn_result* r = NULL;
  vkrnn_hypothesis h;
  vkrnn_step st;
  vkrnn_decode_options o;

  vkrnn_model_encode_text(dates, "1st of March 1999", ids, 64, &n);
  sources[0] = ids;
  lengths[0] = n;
  CHECK_STATUS(vkrnn_greedy(dates, sources, lengths, 1, NULL, &r), VKRNN_OK, NULL);
  CHECK_STATUS(vkrnn_result_get(r, 0, 0, &h), VKRNN_OK, NULL);
  CHECK(strcmp(h.text, "1999-03-01") == 0);

  CHECK_STATUS(vkrnn_encode(dates, sources, lengths, 1, &enc), VKRNN_OK, NULL);
  vkrnn_decode_options_init(&o);
  o.return_attention = 1;
  CHECK_STATUS(vkrnn_decoder_start(enc, &o, &dec), VKRNN_OK, NULL);
  vkrnn_encoded_destroy(enc);  /* the decoder keeps what it needs */
  for (step = 0; step < h.length; ++step) {
    CHECK_STATUS(vkrnn_decoder_step(dec, NULL, &st), VKRNN_OK, NULL);
    CHECK(st.step == step && st.batch == 1);
    CHECK(st.tokens[0] == h.tokens[step]);
    CHECK(st.attention != NULL && st.source_length == n);
    CHECK(st.all_finished == (step + 1 == h.length));
    CHECK(st.finished[0] == (step + 1 == h.length));
  }
  vkrnn_decoder_destroy(dec);
  dec = NULL;

  /* A decoder runs out at max_len; forced inputs must be a whole batch's. */
  CHECK_STATUS(vkrnn_encode(dates, sources, lengths, 1, &enc), VKRNN_OK, NULL);
  o.max_len = 2;
  CHECK_STATUS(vkrnn_decoder_start(enc, &o, &dec), VKRNN_OK, NULL);
  {
    const int32_t forced[] = {5};
    CHECK_STATUS(vkrnn_decoder_step(dec, forced, &st), VKRNN_OK, NULL);
    CHECK_STATUS(vkrnn_decoder_step(dec, NULL, &st), VKRNN_OK, NULL);
    CHECK(st.step == 1);
    CHECK_STATUS(vkrnn_decoder_step(dec, NULL, &st), VKRNN_ERROR_OUT_OF_RANGE, "max_len = 2");
  }
  CHECK_STATUS(vkrnn_decoder_step(NULL, NULL, &st), VKRNN_ERROR_INVALID_ARGUMENT, "decoder is NULL");
  CHECK_STATUS(vkrnn_decoder_step(dec, NULL, NULL), VKRNN_ERROR_INVALID_ARGUMENT, "step is NULL");
  vkrnn_decoder_destroy(dec);
  dec = NULL;
  o.max_len = 100000;
  CHECK_STATUS(vkrnn_decoder_start(enc, &o, &dec), VKRNN_ERROR_OUT_OF_RANGE, "max_len");
  CHECK_STATUS(vkrnn_decoder_start(NULL, NULL, &dec), VKRNN_ERROR_INVALID_ARGUMENT, "encoded is NULL");
  CHECK_STATUS(vkrnn_decoder_start(enc, NULL, NULL), VKRNN_ERROR_INVALID_ARGUMENT, "decoder is NULL");
  CHECK(dec == NULL);
  vkrnn_encoded_destroy(enc);
  enc = NULL;
  CHECK_STATUS(vkrnn_encode(sentiment, sources, lengths, 1, &enc), VKRNN_ERROR_INVALID_ARGUMENT, "classifier");
  CHECK_STATUS(vkrnn_encode(dates, sources, lengths, 1, NULL), VKRNN_ERROR_INVALID_ARGUMENT, "encoded is NULL");
  CHECK(enc == NULL);
  vkrnn_result_destroy(r);
}

/* A device the app made with the loader it links, adopted through its vkGetInstanceProcAddr. */
/* Decodes that do not block: submitted, polled, their results equal vkrnn_greedy's. */
static void check_jobs(vkrnn_model* dates, vkrnn_model* sentiment) {
  const char* texts[] = {"Nov 21st, 2026", "3 May 1999"};
  vkrnn_decode_options o;
  vkrnn_result *want = NULL, *got = NULL;
  vkrnn_job *job = NULL, *second = NULL;
  vkrnn_hypothesis a, b;
  vkrnn_status st;
  int done = 0;
  size_t i, t;
  vkrnn_decode_options_init(&o);
  o.return_attention = 1;
  CHECK_STATUS(vkrnn_greedy_text(dates, texts, 2, &o, &want), VKRNN_OK, NULL);
  CHECK_STATUS(vkrnn_greedy_text_submit(dates, texts, 2, &o, &job), VKRNN_OK, NULL);
  CHECK_STATUS(vkrnn_greedy_text_submit(dates, texts, 1, NULL, &second), VKRNN_OK, NULL);
  /* Not done yet, or done: without wait, either the result or "still running". */
  CHECK_STATUS(vkrnn_job_done(job, &done), VKRNN_OK, NULL);
  st = vkrnn_job_result(job, 0, &got);
  CHECK(st == VKRNN_OK || (st == VKRNN_ERROR_STATE && !done && strstr(vkrnn_last_error(), "still running")));
  while (st != VKRNN_OK && !done) {  /* a game's frames would run here */
    CHECK_STATUS(vkrnn_job_done(job, &done), VKRNN_OK, NULL);
  }
  if (st != VKRNN_OK) CHECK_STATUS(vkrnn_job_result(job, 0, &got), VKRNN_OK, NULL);
  CHECK(vkrnn_result_rows(got) == 2);
  for (i = 0; i < 2 && got; ++i) {
    CHECK_STATUS(vkrnn_result_get(want, i, 0, &a), VKRNN_OK, NULL);
    CHECK_STATUS(vkrnn_result_get(got, i, 0, &b), VKRNN_OK, NULL);
    CHECK(a.length == b.length && strcmp(a.text, b.text) == 0 && a.score == b.score && a.finished == b.finished);
    CHECK(b.attention != NULL && a.source_length == b.source_length);
    for (t = 0; t < a.length && t < b.length; ++t) CHECK(a.tokens[t] == b.tokens[t]);
    if (a.attention && b.attention) CHECK(memcmp(a.attention, b.attention, a.length * a.source_length * sizeof(float)) == 0);
  }
  CHECK_STATUS(vkrnn_result_get(got, 1, 0, &b), VKRNN_OK, NULL);
  CHECK(strcmp(b.text, "1999-05-03") == 0);
  vkrnn_result_destroy(got);
  got = NULL;
  CHECK_STATUS(vkrnn_job_result(job, 1, &got), VKRNN_ERROR_STATE, "already taken");
  CHECK(got == NULL);
  vkrnn_job_destroy(job);
  /* wait = 1 blocks until the job is done. */
  CHECK_STATUS(vkrnn_job_result(second, 1, &got), VKRNN_OK, NULL);
  CHECK_STATUS(vkrnn_result_get(got, 0, 0, &b), VKRNN_OK, NULL);
  CHECK(strcmp(b.text, "2026-11-21") == 0);
  CHECK_STATUS(vkrnn_job_done(second, &done), VKRNN_OK, NULL);
  CHECK(done == 1);
  vkrnn_result_destroy(got);
  vkrnn_job_destroy(second);
  /* Destroyed while it may still run: it waits. */
  job = NULL;
  CHECK_STATUS(vkrnn_greedy_text_submit(dates, texts, 2, NULL, &job), VKRNN_OK, NULL);
  vkrnn_job_destroy(job);
  vkrnn_job_destroy(NULL);
  /* Errors. */
  job = NULL;
  {
    const int32_t bad_ids[] = {5, 999};
    const int32_t* bad_sources[] = {bad_ids};
    const size_t bad_lengths[] = {2};
    CHECK_STATUS(vkrnn_greedy_submit(dates, bad_sources, bad_lengths, 1, NULL, &job), VKRNN_ERROR_INVALID_ARGUMENT, "999");
  }
  CHECK_STATUS(vkrnn_greedy_text_submit(sentiment, texts, 1, NULL, &job), VKRNN_ERROR_INVALID_ARGUMENT, "classifier");
  CHECK_STATUS(vkrnn_greedy_text_submit(dates, texts, 1, NULL, NULL), VKRNN_ERROR_INVALID_ARGUMENT, "job is NULL");
  o.on_step = log_step;
  CHECK_STATUS(vkrnn_greedy_text_submit(dates, texts, 1, &o, &job), VKRNN_ERROR_INVALID_ARGUMENT, "on_step");
  o.on_step = NULL;
  o.max_len = 100000;
  CHECK_STATUS(vkrnn_greedy_text_submit(dates, texts, 1, &o, &job), VKRNN_ERROR_OUT_OF_RANGE, "max_len");
  CHECK(job == NULL);
  CHECK_STATUS(vkrnn_job_done(NULL, &done), VKRNN_ERROR_INVALID_ARGUMENT, "job is NULL");
  CHECK_STATUS(vkrnn_job_result(NULL, 1, &got), VKRNN_ERROR_INVALID_ARGUMENT, "job is NULL");
  vkrnn_result_destroy(want);
  want = NULL;

  /* A beam search as a job: vkrnn_beam's hypotheses, every one of every row, bit for bit. */
  vkrnn_decode_options_init(&o);
  o.beam_width = 3;
  o.return_attention = 1;
  CHECK_STATUS(vkrnn_beam_text(dates, texts, 2, &o, &want), VKRNN_OK, NULL);
  CHECK_STATUS(vkrnn_beam_text_submit(dates, texts, 2, &o, &job), VKRNN_OK, NULL);
  CHECK_STATUS(vkrnn_job_result(job, 1, &got), VKRNN_OK, NULL);
  CHECK(vkrnn_result_rows(got) == 2);
  for (i = 0; i < 2 && got && want; ++i) {
    size_t j, n = vkrnn_result_hypotheses(want, i);
    CHECK(n >= 1 && vkrnn_result_hypotheses(got, i) == n);
    for (j = 0; j < n; ++j) {
      CHECK_STATUS(vkrnn_result_get(want, i, j, &a), VKRNN_OK, NULL);
      CHECK_STATUS(vkrnn_result_get(got, i, j, &b), VKRNN_OK, NULL);
      CHECK(a.length == b.length && strcmp(a.text, b.text) == 0 && a.score == b.score && a.norm_score == b.norm_score &&
            a.finished == b.finished && a.source_length == b.source_length);
      if (a.attention && b.attention) CHECK(memcmp(a.attention, b.attention, a.length * a.source_length * sizeof(float)) == 0);
      CHECK(a.attention != NULL && b.attention != NULL);
    }
  }
  CHECK_STATUS(vkrnn_result_get(got, 0, 0, &b), VKRNN_OK, NULL);
  CHECK(strcmp(b.text, "2026-11-21") == 0);
  vkrnn_result_destroy(got);
  got = NULL;
  CHECK_STATUS(vkrnn_job_result(job, 1, &got), VKRNN_ERROR_STATE, "already taken");
  vkrnn_job_destroy(job);
  job = NULL;
  {
    const int32_t ids[] = {5, 6, 7};
    const int32_t* sources[] = {ids};
    const size_t lengths[] = {3};
    CHECK_STATUS(vkrnn_beam_submit(dates, sources, lengths, 1, &o, &job), VKRNN_OK, NULL);
    vkrnn_job_destroy(job);  /* while it may still run: it waits */
    job = NULL;
  }
  o.sampling_topk = 0;
  CHECK_STATUS(vkrnn_beam_text_submit(dates, texts, 1, &o, &job), VKRNN_ERROR_INVALID_ARGUMENT, "sampling");
  o.sampling_topk = 1;
  o.beam_width = 64;
  CHECK_STATUS(vkrnn_beam_text_submit(dates, texts, 1, &o, &job), VKRNN_ERROR_INVALID_ARGUMENT, "beam_width = 64");
  CHECK_STATUS(vkrnn_beam_text_submit(sentiment, texts, 1, NULL, &job), VKRNN_ERROR_INVALID_ARGUMENT, "classifier");
  CHECK(job == NULL);
  vkrnn_result_destroy(want);
  want = NULL;

  /* A classification as a job: vkrnn_classify's classes, probabilities and pooling weights. */
  {
    const char* reviews[] = {"a wonderful, moving film", "dull and far too long", "fine"};
    vkrnn_classification x, y;
    size_t c;
    CHECK_STATUS(vkrnn_classify_text(sentiment, reviews, 3, 1, &want), VKRNN_OK, NULL);
    CHECK_STATUS(vkrnn_classify_text_submit(sentiment, reviews, 3, 1, &job), VKRNN_OK, NULL);
    CHECK_STATUS(vkrnn_job_result(job, 1, &got), VKRNN_OK, NULL);
    CHECK(vkrnn_result_rows(got) == 3);
    for (i = 0; i < 3 && got && want; ++i) {
      CHECK_STATUS(vkrnn_result_classification(want, i, &x), VKRNN_OK, NULL);
      CHECK_STATUS(vkrnn_result_classification(got, i, &y), VKRNN_OK, NULL);
      CHECK(x.predicted == y.predicted && strcmp(x.label, y.label) == 0 && x.classes == y.classes && x.steps == y.steps);
      for (c = 0; c < x.classes; ++c) CHECK(x.probs[c] == y.probs[c] && x.logits[c] == y.logits[c]);
      CHECK(x.pooling != NULL && y.pooling != NULL);
      if (x.pooling && y.pooling) CHECK(memcmp(x.pooling, y.pooling, x.steps * sizeof(float)) == 0);
    }
    vkrnn_result_destroy(got);
    got = NULL;
    vkrnn_job_destroy(job);
    job = NULL;
    CHECK_STATUS(vkrnn_classify_text_submit(dates, reviews, 1, 0, &job), VKRNN_ERROR_INVALID_ARGUMENT, "not a classifier");
    CHECK_STATUS(vkrnn_classify_text_submit(sentiment, reviews, 1, 0, NULL), VKRNN_ERROR_INVALID_ARGUMENT, "job is NULL");
    {
      const int32_t bad_ids[] = {5, 1000000};
      const int32_t* bad_inputs[] = {bad_ids};
      const size_t bad_lengths[] = {2};
      CHECK_STATUS(vkrnn_classify_submit(sentiment, bad_inputs, bad_lengths, 1, 0, &job), VKRNN_ERROR_INVALID_ARGUMENT, "1000000");
    }
    CHECK(job == NULL);
    vkrnn_result_destroy(want);
  }
}

static void check_adopt(int expect_vkrnn_loader) {
  app_device app;
  vkrnn_context* ctx = NULL;
  vkrnn_model* model = NULL;
  vkrnn_external_device ext;
  vkrnn_device_info info;
  if (!app_device_create(&app)) {
    fprintf(stderr, "the app could not make its own Vulkan device\n");
    ++failures;
    app_device_destroy(&app);
    return;
  }
  ext = external_of(&app);
  CHECK_STATUS(vkrnn_context_adopt(&ext, NULL, &ctx), VKRNN_OK, NULL);
  CHECK_STATUS(vkrnn_context_get_device(ctx, &info), VKRNN_OK, NULL);
  CHECK_STATUS(vkrnn_model_load(ctx, dates_dir, NULL, &model), VKRNN_OK, NULL);
  if (model) check_dates_decode(model);
  /* Handles go in any order: the model keeps the context alive. */
  vkrnn_context_destroy(ctx);
  if (model) check_dates_decode(model);
  vkrnn_model_destroy(model);

  ext.queue_family = 1000;
  CHECK_STATUS(vkrnn_context_adopt(&ext, NULL, &ctx), VKRNN_ERROR_MISSING_FEATURE, "does not support compute");
  ext = external_of(&app);
  ext.device = VK_NULL_HANDLE;
  CHECK_STATUS(vkrnn_context_adopt(&ext, NULL, &ctx), VKRNN_ERROR_INVALID_ARGUMENT, "ExternalDevice needs");
  ext = external_of(&app);
  CHECK_STATUS(vkrnn_context_adopt(&ext, NULL, NULL), VKRNN_ERROR_INVALID_ARGUMENT, "context is NULL");
  if (!expect_vkrnn_loader) {
    /* Without the app's vkGetInstanceProcAddr vkrnn needs its own loader, which is absent. */
    ext.get_instance_proc_addr = NULL;
    CHECK_STATUS(vkrnn_context_adopt(&ext, NULL, &ctx), VKRNN_ERROR_NO_LOADER, "no Vulkan loader");
  }
  app_device_destroy(&app);
}

static int run_all(void) {
  vkrnn_context* ctx = NULL;
  vkrnn_model *dates = NULL, *sentiment = NULL;
  check_versions_and_errors();
  check_thread_local_errors();
  check_contexts();
  CHECK_STATUS(vkrnn_context_create(NULL, &ctx), VKRNN_OK, NULL);
  if (!ctx) return 1;
  check_devices(ctx);
  check_models(ctx, &dates, &sentiment);
  if (dates && sentiment) {
    check_dates_decode(dates);
    check_text(dates, sentiment);
    check_greedy_and_beam(dates, sentiment);
    check_decode_options(dates);
    check_classify(dates, sentiment);
    check_incremental(dates, sentiment);
    check_jobs(dates, sentiment);
  }
  vkrnn_model_destroy(dates);
  vkrnn_model_destroy(sentiment);
  vkrnn_context_destroy(ctx);
  check_adopt(1);
  return 0;
}

static int run_no_loader(void) {
  vkrnn_context* ctx = NULL;
  size_t count = 0;
  CHECK_STATUS(vkrnn_list_devices(NULL, 0, &count), VKRNN_ERROR_NO_LOADER, "no Vulkan loader");
  CHECK_STATUS(vkrnn_context_create(NULL, &ctx), VKRNN_ERROR_NO_LOADER, "libvulkan1");
  CHECK(ctx == NULL);
  check_adopt(0);
  return 0;
}

static int run_no_driver(void) {
  vkrnn_context* ctx = NULL;
  vkrnn_status s;
  size_t count = 0;
  s = vkrnn_list_devices(NULL, 0, &count);
  CHECK(s == VKRNN_ERROR_NO_DEVICE || s == VKRNN_ERROR_VULKAN);
  CHECK(strstr(vkrnn_last_error(), "mesa-vulkan-drivers") != NULL);
  s = vkrnn_context_create(NULL, &ctx);
  CHECK(s == VKRNN_ERROR_NO_DEVICE || s == VKRNN_ERROR_VULKAN);
  CHECK(ctx == NULL);
  return 0;
}

int main(int argc, char** argv) {
  const char* mode = argc > 1 ? argv[1] : "all";
  const char* source = argc > 2 ? argv[2] : ".";
  snprintf(dates_dir, sizeof dates_dir, "%s/samples/dates/model", source);
  snprintf(sentiment_dir, sizeof sentiment_dir, "%s/samples/sentiment/model", source);
  if (strcmp(mode, "all") == 0) {
    run_all();
  } else if (strcmp(mode, "no-loader") == 0) {
    run_no_loader();
  } else if (strcmp(mode, "no-driver") == 0) {
    run_no_driver();
  } else {
    fprintf(stderr, "usage: test_c_api all|no-loader|no-driver [SOURCE_DIR]\n");
    return 2;
  }
  printf("test_c_api %s: %d failed check(s)\n", mode, failures);
  return failures == 0 ? 0 : 1;
}
