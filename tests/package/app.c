/* A C program using vkrnn through vkrnn.h: decodes one date with the dates sample's model.
 * Usage: app MODEL_DIR */
#include <stdio.h>
#include <string.h>

#include <vkrnn/vkrnn.h>

int main(int argc, char** argv) {
  vkrnn_context* ctx = NULL;
  vkrnn_model* model = NULL;
  vkrnn_result* result = NULL;
  vkrnn_hypothesis h;
  vkrnn_device_info device;
  const char* dates[] = {"Nov 21st, 2026"};
  int ok;
  if (argc != 2) {
    fprintf(stderr, "usage: %s MODEL_DIR\n", argv[0]);
    return 2;
  }
  if (vkrnn_context_create(NULL, &ctx) != VKRNN_OK || vkrnn_context_get_device(ctx, &device) != VKRNN_OK ||
      vkrnn_model_load(ctx, argv[1], NULL, &model) != VKRNN_OK ||
      vkrnn_greedy_text(model, dates, 1, NULL, &result) != VKRNN_OK || vkrnn_result_get(result, 0, 0, &h) != VKRNN_OK) {
    fprintf(stderr, "error: %s\n", vkrnn_last_error());
    return 1;
  }
  printf("vkrnn %s (C) on %s: '%s' -> '%s'\n", vkrnn_version_string(), device.name, dates[0], h.text);
  ok = strcmp(h.text, "2026-11-21") == 0 && vkrnn_version() == VKRNN_VERSION;
  vkrnn_result_destroy(result);
  vkrnn_model_destroy(model);
  vkrnn_context_destroy(ctx);
  return ok ? 0 : 1;
}
