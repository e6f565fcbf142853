/* libFuzzer target: HandleReloadConfigRequest's model list. The input is a ReloadConfigRequest's
 * protobuf encoding, unpacked by protobuf-c; its ModelServerConfig goes through
 * kx_grpc_decode_server_config (text format written out, then the config file's parser). */
#include "kiln/serve.h"
#include "serve/codec_grpc.h"
#include "tensorflow_serving/apis/model_management.pb-c.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  Tensorflow__Serving__ReloadConfigRequest *m = tensorflow__serving__reload_config_request__unpack(NULL, size, data);
  if (!m) return 0;
  kiln_model_server_config cfg;
  kiln_status s = kx_grpc_decode_server_config(m->config, &cfg);
  if (!s) {
    if (cfg.n_models < 1) __builtin_trap(); /* a config that parses has models */
    kiln_model_server_config_free(&cfg);
  }
  kiln_status_free(s);
  tensorflow__serving__reload_config_request__free_unpacked(m, NULL);
  return 0;
}
