/* The trainer's checkpoints: what a run needs to continue bitwise where it stopped (parameters,
 * optimizer moments, the random generator, the data position and the epoch's running sums), in
 * the container of checkpoint.c, with a JSON "meta" section that also records the run-file hash
 * and the versions of kiln and the libraries it runs on. */
#include "train/checkpoint.h"
#include "train/trainer.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include <cjson/cJSON.h>
#include <protobuf-c/protobuf-c.h>

#define CHECKPOINT_FORMAT 1

static char *meta_json(const kiln_trainer *t, int64_t epoch, int end_of_epoch) {
  cJSON *m = cJSON_CreateObject(), *libs = cJSON_CreateObject();
  char rng[17], mpi[256];
  snprintf(rng, sizeof rng, "%016" PRIx64, t->rng.state);
  kx_world_library(mpi, sizeof mpi);
  int ok = m && libs && cJSON_AddNumberToObject(m, "format", CHECKPOINT_FORMAT) &&
           cJSON_AddStringToObject(m, "kiln_version", kiln_version()) && cJSON_AddStringToObject(m, "run_hash", t->run.hash) &&
           cJSON_AddNumberToObject(m, "batch_size", (double)t->run.batch_size) &&
           cJSON_AddNumberToObject(m, "seed", (double)t->run.seed) && cJSON_AddNumberToObject(m, "world_size", t->world.size) &&
           cJSON_AddNumberToObject(m, "n_params", (double)t->net->n_params) &&
           cJSON_AddNumberToObject(m, "epoch", (double)epoch) && cJSON_AddBoolToObject(m, "end_of_epoch", end_of_epoch) &&
           cJSON_AddNumberToObject(m, "epoch_step", (double)t->epoch_step) &&
           cJSON_AddNumberToObject(m, "epoch_rows", (double)t->epoch_rows) &&
           cJSON_AddNumberToObject(m, "epoch_loss", t->epoch_loss) && cJSON_AddNumberToObject(m, "epoch_correct", t->epoch_correct) &&
           cJSON_AddNumberToObject(m, "steps_per_epoch", (double)t->steps_per_epoch) &&
           cJSON_AddNumberToObject(m, "optimizer_step", (double)t->run.optim.step) && cJSON_AddStringToObject(m, "rng", rng) &&
           cJSON_AddNumberToObject(m, "precision", t->net->precision) && cJSON_AddNumberToObject(m, "loss_scale", t->loss_scale) &&
           cJSON_AddNumberToObject(m, "good_steps", (double)t->good_steps) &&
           cJSON_AddNumberToObject(m, "skipped_steps", (double)t->skipped_steps) &&
           cJSON_AddStringToObject(libs, "protobuf-c", protobuf_c_version()) && cJSON_AddStringToObject(libs, "cjson", cJSON_Version()) &&
           cJSON_AddStringToObject(libs, "zlib", zlibVersion()) && cJSON_AddStringToObject(libs, "mpi", mpi) &&
           cJSON_AddItemToObject(m, "libraries", libs);
  if (!ok && m && !cJSON_GetObjectItemCaseSensitive(m, "libraries")) cJSON_Delete(libs);
  char *text = ok ? cJSON_PrintUnformatted(m) : NULL;
  cJSON_Delete(m);
  return text;
}

kiln_status kx_trainer_checkpoint(kiln_trainer *t, int64_t epoch, int end_of_epoch) {
  if (t->world.rank != 0) return NULL;
  char *meta = meta_json(t, epoch, end_of_epoch);
  if (!meta) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory writing a checkpoint");
  size_t floats = (size_t)t->net->n_params * sizeof(float);
  kx_ckpt_section sections[] = {
      {"meta", meta, strlen(meta)},
      {"params", t->net->params, floats},
      {"state", t->net->state, (size_t)t->net->n_state * sizeof(float)},
      {"optimizer.m", t->run.optim.m, floats},
      {"optimizer.v", t->run.optim.v, t->run.optim.v ? floats : 0},
  };
  kiln_status s = kx_ckpt_write(t->checkpoint_dir, t->run.optim.step, sections, (int)(sizeof sections / sizeof sections[0]),
                                t->keep_checkpoints);
  free(meta);
  return s ? kiln_status_prefix(s, "checkpoint: ") : NULL;
}

static kiln_status restore_floats(const kx_ckpt *c, const char *name, float *dst, int64_t count) {
  size_t len = 0;
  const void *data = kx_ckpt_get(c, name, &len);
  if (count == 0) return NULL;
  if (!data || len != (size_t)count * sizeof(float))
    return kiln_error(KILN_INVALID_ARGUMENT, "checkpoint %s: section '%s' holds %zu bytes, the model needs %lld floats", kx_ckpt_path(c),
                      name, data ? len : 0, (long long)count);
  memcpy(dst, data, len);
  return NULL;
}

static double number(const cJSON *m, const char *key) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(m, key);
  return cJSON_IsNumber(v) ? v->valuedouble : -1;
}

/* The meta section must describe this run: same run file, batch, seed and model size. */
static kiln_status check_meta(const kiln_trainer *t, const kx_ckpt *c, const cJSON *m) {
  const cJSON *hash = cJSON_GetObjectItemCaseSensitive(m, "run_hash"), *rng = cJSON_GetObjectItemCaseSensitive(m, "rng");
  const char *path = kx_ckpt_path(c);
  if (number(m, "format") != CHECKPOINT_FORMAT || !cJSON_IsString(hash) || !cJSON_IsString(rng))
    return kiln_error(KILN_INVALID_ARGUMENT, "checkpoint %s: its meta section is not one kiln %s reads", path, kiln_version());
  if (strcmp(hash->valuestring, t->run.hash) != 0)
    return kiln_error(KILN_FAILED_PRECONDITION, "checkpoint %s was written by another run file (hash %s, this one's is %s)", path,
                      hash->valuestring, t->run.hash);
  if (number(m, "precision") != t->net->precision)
    return kiln_error(KILN_FAILED_PRECONDITION, "checkpoint %s was written at another --precision", path);
  if (number(m, "batch_size") != (double)t->run.batch_size || number(m, "seed") != (double)t->run.seed ||
      number(m, "n_params") != (double)t->net->n_params)
    return kiln_error(KILN_FAILED_PRECONDITION, "checkpoint %s was written with batch size %g and seed %g for %g parameters; this run has "
                      "%lld, %lld and %lld", path, number(m, "batch_size"), number(m, "seed"), number(m, "n_params"),
                      (long long)t->run.batch_size, (long long)t->run.seed, (long long)t->net->n_params);
  return NULL;
}

static kiln_status restore(kiln_trainer *t, const kx_ckpt *c) {
  size_t len = 0;
  const char *text = kx_ckpt_get(c, "meta", &len);
  cJSON *m = text ? cJSON_ParseWithLength(text, len) : NULL;
  if (!m) return kiln_error(KILN_INVALID_ARGUMENT, "checkpoint %s: no readable meta section", kx_ckpt_path(c));
  kiln_status s = check_meta(t, c, m);
  if (!s) s = restore_floats(c, "params", t->net->params, t->net->n_params);
  if (!s) s = restore_floats(c, "state", t->net->state, t->net->n_state);
  if (!s) s = restore_floats(c, "optimizer.m", t->run.optim.m, t->net->n_params);
  if (!s && t->run.optim.v) s = restore_floats(c, "optimizer.v", t->run.optim.v, t->net->n_params);
  if (!s) {
    t->epoch = (int64_t)number(m, "epoch");
    t->resumed_mid_epoch = !cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(m, "end_of_epoch"));
    t->epoch_step = (int64_t)number(m, "epoch_step");
    t->epoch_rows = (int64_t)number(m, "epoch_rows");
    t->epoch_loss = number(m, "epoch_loss");
    t->epoch_correct = number(m, "epoch_correct");
    t->steps_per_epoch = (int64_t)number(m, "steps_per_epoch");
    t->run.optim.step = (int64_t)number(m, "optimizer_step");
    t->loss_scale = number(m, "loss_scale");
    t->good_steps = (int64_t)number(m, "good_steps");
    t->skipped_steps = (int64_t)number(m, "skipped_steps");
    t->rng.state = strtoull(cJSON_GetObjectItemCaseSensitive(m, "rng")->valuestring, NULL, 16);
    if (t->epoch < 0 || t->epoch_step < 0 || t->run.optim.step < 0 || !(t->loss_scale >= 1))
      s = kiln_error(KILN_INVALID_ARGUMENT, "checkpoint %s: negative epoch or step in its meta section", kx_ckpt_path(c));
  }
  cJSON_Delete(m);
  return s;
}

kiln_status kx_trainer_resume(kiln_trainer *t) {
  kx_ckpt *c = NULL;
  kiln_status s = kx_ckpt_latest(t->checkpoint_dir, &c);
  if (s) return s;
  if (!c) {
    if (t->world.rank == 0) kiln_log(KILN_LOG_INFO, "--resume: no checkpoint in %s yet; starting a new run", t->checkpoint_dir);
    return NULL;
  }
  s = restore(t, c);
  if (!s && t->world.rank == 0)
    kiln_log(KILN_LOG_INFO, "resuming from %s: epoch %lld, step %lld", kx_ckpt_path(c), (long long)t->epoch + 1,
             (long long)t->run.optim.step);
  kx_ckpt_free(c);
  return s;
}
