/* TF Serving's ModelServerConfig message (HandleReloadConfigRequest's) as kiln's model list: written
 * out in the config file's text format and read back by its parser, so that both ways in are held
 * to the same rules (duplicate names, versions, labels, limits). */
#include "serve/codec_grpc.h"

#include "kiln/serve.h"

/* A protobuf string as a text-format literal: quoted, with C escapes for what is not printable. */
static void put_quoted(kx_buf *b, const char *s) {
  kx_buf_putc(b, '"');
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (*p == '"' || *p == '\\') kx_buf_printf(b, "\\%c", *p);
    else if (*p < 0x20 || *p >= 0x7f) kx_buf_printf(b, "\\%03o", *p);
    else kx_buf_putc(b, (char)*p);
  }
  kx_buf_putc(b, '"');
}

/* One ModelConfig in text format, on a line of its own (model_type, deprecated, is ignored as by TF
 * Serving). */
static void put_model(kx_buf *b, const Tensorflow__Serving__ModelConfig *mc) {
  kx_buf_puts(b, "  config { name: ");
  put_quoted(b, mc->name ? mc->name : "");
  kx_buf_puts(b, " base_path: ");
  put_quoted(b, mc->base_path ? mc->base_path : "");
  if (mc->model_platform && mc->model_platform[0]) {
    kx_buf_puts(b, " model_platform: ");
    put_quoted(b, mc->model_platform);
  }
  const Tensorflow__Serving__FileSystemStoragePathSourceConfig__ServableVersionPolicy *p = mc->model_version_policy;
  int choice = p ? (int)p->policy_choice_case : 0;
  if (choice == TENSORFLOW__SERVING__FILE_SYSTEM_STORAGE_PATH_SOURCE_CONFIG__SERVABLE_VERSION_POLICY__POLICY_CHOICE_LATEST) {
    kx_buf_puts(b, " model_version_policy { latest { ");
    if (p->latest->num_versions > 0) kx_buf_printf(b, "num_versions: %u ", (unsigned)p->latest->num_versions);
    kx_buf_puts(b, "} }");
  } else if (choice == TENSORFLOW__SERVING__FILE_SYSTEM_STORAGE_PATH_SOURCE_CONFIG__SERVABLE_VERSION_POLICY__POLICY_CHOICE_ALL) {
    kx_buf_puts(b, " model_version_policy { all {} }");
  } else if (choice == TENSORFLOW__SERVING__FILE_SYSTEM_STORAGE_PATH_SOURCE_CONFIG__SERVABLE_VERSION_POLICY__POLICY_CHOICE_SPECIFIC) {
    kx_buf_puts(b, " model_version_policy { specific {");
    for (size_t i = 0; i < p->specific->n_versions; i++) kx_buf_printf(b, " versions: %lld", (long long)p->specific->versions[i]);
    kx_buf_puts(b, " } }");
  }
  for (size_t i = 0; i < mc->n_version_labels; i++) {
    kx_buf_puts(b, " version_labels { key: ");
    put_quoted(b, mc->version_labels[i]->key ? mc->version_labels[i]->key : "");
    kx_buf_printf(b, " value: %lld }", (long long)mc->version_labels[i]->value);
  }
  kx_buf_puts(b, " }\n");
}

kiln_status kx_grpc_decode_server_config(const Tensorflow__Serving__ModelServerConfig *sc, kiln_model_server_config *cfg) {
  int choice = sc ? (int)sc->config_case : 0;
  if (choice != TENSORFLOW__SERVING__MODEL_SERVER_CONFIG__CONFIG_MODEL_CONFIG_LIST)
    return kiln_error(choice == TENSORFLOW__SERVING__MODEL_SERVER_CONFIG__CONFIG_CUSTOM_MODEL_CONFIG ? KILN_UNIMPLEMENTED : KILN_INVALID_ARGUMENT,
                      "ReloadConfigRequest: config.model_config_list is required (custom_model_config is not supported)");
  kx_buf text = {0};
  kx_buf_puts(&text, "model_config_list {\n");
  for (size_t i = 0; i < sc->model_config_list->n_config; i++) put_model(&text, sc->model_config_list->config[i]);
  kx_buf_puts(&text, "}\n");
  kiln_status e = text.data && !text.failed ? kiln_model_server_config_parse(text.data, text.len, "ReloadConfigRequest.config", cfg)
                                         : kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  kx_buf_free(&text);
  return e;
}

