/* kiln_trainer: the training loop. Batches come from kiln data pipelines; each step runs
 * forward, the loss, backward, one all-reduce of the gradient buffer (with the step's row count,
 * loss and correct predictions riding in its tail) and the optimizer; epochs end with validation,
 * TensorBoard scalars and an atomic checkpoint. */
#include "train/trainer.h"

#include "data/data.h"
#include "kiln/net.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

/* ---------------------------------------------------------------- data */

/* The pipeline spec the trainer runs: the run file's, then this rank's shard, the batch and a
 * prefetch. `take`/`skip` (>= 0) cut the source first (validation_split). */
static kiln_status pipeline_text(const cJSON *spec, int64_t take, int64_t skip, const kx_world *w, int64_t batch, int prefetch,
                                 char **out) {
  *out = NULL;
  cJSON *copy = cJSON_Duplicate(spec, 1), *stages = copy ? cJSON_GetObjectItemCaseSensitive(copy, "stages") : NULL;
  if (copy && !stages) stages = cJSON_AddArrayToObject(copy, "stages");
  int ok = copy && cJSON_IsArray(stages);
  if (ok && (take >= 0 || skip >= 0)) {
    cJSON *cut = cJSON_CreateObject();
    ok = cut && cJSON_AddNumberToObject(cut, take >= 0 ? "take" : "skip", (double)(take >= 0 ? take : skip)) &&
         cJSON_InsertItemInArray(stages, 0, cut);
    if (!ok) cJSON_Delete(cut);
  }
  if (ok && w->size > 1) {
    cJSON *shard = cJSON_CreateObject(), *args = shard ? cJSON_AddObjectToObject(shard, "shard") : NULL;
    ok = args && cJSON_AddNumberToObject(args, "num_shards", w->size) && cJSON_AddNumberToObject(args, "index", w->rank) &&
         cJSON_AddItemToArray(stages, shard);
    if (!ok) cJSON_Delete(shard);
  }
  cJSON *b = ok ? cJSON_CreateObject() : NULL;
  ok = b && cJSON_AddNumberToObject(b, "batch", (double)batch) && cJSON_AddItemToArray(stages, b);
  if (!ok) cJSON_Delete(b);
  cJSON *p = ok && prefetch ? cJSON_CreateObject() : NULL;
  if (ok && prefetch) {
    ok = p && cJSON_AddNumberToObject(p, "prefetch", 2) && cJSON_AddItemToArray(stages, p);
    if (!ok) cJSON_Delete(p);
  }
  if (ok) *out = cJSON_PrintUnformatted(copy);
  cJSON_Delete(copy);
  return *out ? NULL : kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory building the pipeline");
}

static kiln_status open_pipeline(kiln_trainer *t, const cJSON *spec, const char *what, int64_t take, int64_t skip, int prefetch,
                                 kiln_dataset **out) {
  char *text;
  kiln_status s = pipeline_text(spec, take, skip, &t->world, t->rank_batch, prefetch, &text);
  if (s) return s;
  kiln_data_options o = {.pool = t->pool, .base_dir = t->run.base_dir[0] ? t->run.base_dir : NULL};
  s = kiln_dataset_open_spec(text, strlen(text), &o, out);
  free(text);
  return s ? kiln_status_prefix(s, "%s: ", what) : NULL;
}

/* Records in the training source, for validation_split: one pass over the source alone. */
static kiln_status count_source(kiln_trainer *t, int64_t *count) {
  cJSON *only = cJSON_CreateObject();
  const cJSON *src = cJSON_GetObjectItemCaseSensitive(t->run.data, "source");
  if (!only || !src || !cJSON_AddItemToObject(only, "source", cJSON_Duplicate(src, 1))) {
    cJSON_Delete(only);
    return kiln_error(KILN_INVALID_ARGUMENT, "data: missing 'source'");
  }
  char *text = cJSON_PrintUnformatted(only);
  cJSON_Delete(only);
  if (!text) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  kiln_data_options o = {.pool = t->pool, .base_dir = t->run.base_dir[0] ? t->run.base_dir : NULL};
  kiln_dataset *d = NULL;
  kiln_status s = kiln_dataset_open_spec(text, strlen(text), &o, &d);
  free(text);
  *count = 0;
  for (int done = 0; !s && !done;) {
    kiln_record r = {0};
    s = kiln_dataset_next(d, &r, &done);
    *count += !s && !done;
    kiln_record_release(&r);
  }
  kiln_dataset_free(d);
  return s ? kiln_status_prefix(s, "data: ") : NULL;
}

static kiln_status open_data(kiln_trainer *t) {
  kiln_status s = NULL;
  int64_t take = -1, skip = -1;
  if (t->run.validation_split > 0) {
    int64_t n = 0;
    if ((s = count_source(t, &n))) return s;
    take = n - (int64_t)floor((double)n * t->run.validation_split);
    skip = take;
    if (take < 1 || take == n)
      return kiln_error(KILN_INVALID_ARGUMENT, "validation_split %g of %lld records leaves no training or no validation data",
                        t->run.validation_split, (long long)n);
  }
  if ((s = open_pipeline(t, t->run.data, "data", take, -1, 1, &t->train))) return s;
  if (t->run.validation) s = open_pipeline(t, t->run.validation, "validation_data", -1, -1, 0, &t->valid);
  else if (skip >= 0) s = open_pipeline(t, t->run.data, "data (validation split)", -1, skip, 0, &t->valid);
  return s;
}

/* Feature `name` of a batch, checked: a numeric tensor whose rows hold `width` values each. */
static kiln_status batch_feature(const kiln_record *r, const char *name, const char *role, int64_t width, const kiln_tensor **out) {
  int i = kiln_record_find(r, name);
  if (i < 0) return kiln_error(KILN_INVALID_ARGUMENT, "the data has no feature '%s' (the %s; set \"%s\" in the run file)", name, role,
                               strcmp(role, "label") == 0 ? "label" : "features");
  const kiln_tensor *v = &r->values[i];
  if (v->dtype == KILN_UNDEFINED || v->dtype == KILN_STRING || v->rank < 1)
    return kiln_error(KILN_INVALID_ARGUMENT, "feature '%s' (the %s) must be numeric with a batch dimension", name, role);
  int64_t rows = v->dims[0], n = kiln_tensor_numel(v);
  if (width >= 0 && n != rows * width) {
    char d[128];
    return kiln_error(KILN_INVALID_ARGUMENT, "feature '%s' (the %s) is %s per batch: %lld values per row, the model takes %lld", name,
                      role, kiln_tensor_describe(v, d, sizeof d), (long long)(rows ? n / rows : 0), (long long)width);
  }
  *out = v;
  return NULL;
}

/* Copies a tensor's values into floats (the model's input or targets). */
static void to_floats(const kiln_tensor *v, float *dst) {
  int64_t n = kiln_tensor_numel(v);
  if (v->dtype == KILN_FLOAT) memcpy(dst, v->data, (size_t)n * sizeof *dst);
  else if (v->dtype == KILN_UINT8)
    for (int64_t i = 0; i < n; i++) dst[i] = ((const uint8_t *)v->data)[i];
  else
    for (int64_t i = 0; i < n; i++) dst[i] = (float)kiln_tensor_get_f64(v, i);
}

/* Loads a batch into the network's input and the target buffer; *rows = 0 at the end of data. */
static kiln_status load_batch(kiln_trainer *t, kiln_dataset *d, int64_t *rows) {
  kiln_record r = {0};
  int done = 0;
  *rows = 0;
  kiln_status s = kiln_dataset_next(d, &r, &done);
  if (s || done) return s;
  const kiln_tensor *x, *y;
  int64_t width = kx_net_output_size(t->net);
  s = batch_feature(&r, t->run.features, "model's input", kx_shape_size(&t->net->in_shape), &x);
  if (!s) s = batch_feature(&r, t->run.label, "label", kx_loss_target_width(&t->run.loss, width), &y);
  if (!s && x->dims[0] != y->dims[0])
    s = kiln_error(KILN_INVALID_ARGUMENT, "a batch has %lld rows of '%s' but %lld of '%s'", (long long)x->dims[0], t->run.features,
                   (long long)y->dims[0], t->run.label);
  if (!s && x->dims[0] > t->rank_batch) s = kiln_error(KILN_INTERNAL, "a batch of %lld rows is over %lld", (long long)x->dims[0],
                                                      (long long)t->rank_batch);
  if (!s) {
    to_floats(x, t->net->input);
    to_floats(y, t->targets);
    *rows = x->dims[0];
  }
  kiln_record_release(&r);
  return s;
}

/* The input shape: the run file's input_shape, else the first batch's. */
static kiln_status input_shape(kiln_trainer *t, kx_shape *shape) {
  if (cJSON_GetObjectItemCaseSensitive(t->run.model, "input_shape")) return kx_shape_read(t->run.model, "model", "input_shape", shape);
  kiln_record r = {0};
  int done = 0;
  kiln_status s = kiln_dataset_next(t->train, &r, &done);
  int i = s || done ? -1 : kiln_record_find(&r, t->run.features);
  if (!s && done) s = kiln_error(KILN_INVALID_ARGUMENT, "data: the training data is empty");
  else if (!s && i < 0) s = kiln_error(KILN_INVALID_ARGUMENT, "the data has no feature '%s' (set \"features\" in the run file)", t->run.features);
  else if (!s && (r.values[i].rank < 2 || r.values[i].rank > 4))
    s = kiln_error(KILN_INVALID_ARGUMENT, "feature '%s' must have 1 to 3 dimensions per sample (give model.input_shape)", t->run.features);
  if (!s) {
    shape->rank = r.values[i].rank - 1;
    for (int k = 0; k < shape->rank; k++) shape->d[k] = r.values[i].dims[k + 1];
  }
  kiln_record_release(&r);
  return s ? s : kiln_dataset_reset(t->train, 0);
}

/* ---------------------------------------------------------------- steps */

static kx_pass pass(kiln_trainer *t, int64_t rows, int training) {
  return (kx_pass){.pool = t->pool, .threads = t->threads, .batch = rows, .training = training, .rng = &t->rng,
                   .scratch = t->net->scratch};
}

/* fp16's dynamic loss scaling (as tf.keras' LossScaleOptimizer): gradients that overflowed skip
 * the step and halve the scale; 2000 good steps in a row double it. Returns whether the gradients
 * are finite. */
#define LOSS_SCALE_GROWTH_STEPS 2000
#define LOSS_SCALE_MAX 16777216.0

static int update_loss_scale(kiln_trainer *t) {
  const float *g = t->net->grads;
  float check = 0;
  for (int64_t i = 0; i < t->net->n_params; i++) check += g[i] * 0; /* NaN when any gradient is Inf or NaN */
  if (check != 0 || isnan(check)) {
    t->loss_scale = t->loss_scale > 1 ? t->loss_scale / 2 : 1;
    t->good_steps = 0;
    return 0;
  }
  if (++t->good_steps >= LOSS_SCALE_GROWTH_STEPS && t->loss_scale < LOSS_SCALE_MAX) {
    t->loss_scale *= 2;
    t->good_steps = 0;
  }
  return 1;
}

/* One optimizer step on whatever each rank loaded; *total_rows = 0 when every rank's data ended. */
static kiln_status train_step(kiln_trainer *t, int64_t rows, int64_t *total_rows) {
  kx_net *n = t->net;
  float *tail = n->grads + n->n_params;
  int64_t width = kx_net_output_size(n);
  kiln_status s = NULL;
  if (rows > 0) {
    kx_pass p = pass(t, rows, 1);
    float *y = kx_net_forward(n, &p);
    double loss = 0;
    int64_t correct = 0;
    /* dL/dy of the summed loss (times the fp16 loss scale): the mean is taken after the
     * all-reduce, over every rank's rows */
    if ((s = kx_loss_compute(&t->run.loss, y, t->targets, rows, width, 1.0 / t->loss_scale, t->dy, &loss, &correct))) return s;
    kx_net_backward(n, &p, t->dy);
    tail[0] = (float)rows;
    tail[1] = (float)loss;
    tail[2] = (float)correct;
  } else
    memset(n->grads, 0, (size_t)(n->n_params + KX_GRAD_TAIL) * sizeof(float));
  kx_world_sum_floats(&t->world, n->grads, n->n_params + KX_GRAD_TAIL);
  *total_rows = (int64_t)tail[0];
  if (*total_rows == 0) return NULL;
  if (t->net->precision == KX_FP16 && !update_loss_scale(t)) t->skipped_steps++;
  else {
    kx_optim_step(&t->run.optim, t->pool, t->threads, n->params, n->grads, (float)(1.0 / (tail[0] * t->loss_scale)));
    kx_net_sync_weights(n);
  }
  t->step_loss = tail[1] / tail[0];
  t->step_samples = *total_rows;
  t->epoch_rows += *total_rows;
  t->epoch_loss += tail[1];
  t->epoch_correct += tail[2];
  return NULL;
}

kiln_status kx_trainer_evaluate(kiln_trainer *t, kiln_dataset *d, double *loss, double *accuracy) {
  kiln_status s = kiln_dataset_reset(d, 0);
  double sums[3] = {0, 0, 0}; /* rows, loss, correct over every rank */
  int64_t width = kx_net_output_size(t->net);
  for (int64_t rows = 1; !s && rows > 0;) {
    if ((s = load_batch(t, d, &rows)) || rows == 0) break;
    kx_pass p = pass(t, rows, 0);
    float *y = kx_net_forward(t->net, &p);
    double l = 0;
    int64_t correct = 0;
    s = kx_loss_compute(&t->run.loss, y, t->targets, rows, width, 1.0, NULL, &l, &correct);
    sums[0] += (double)rows;
    sums[1] += l;
    sums[2] += (double)correct;
  }
  if (s) return s;
  kx_world_sum_doubles(&t->world, sums, 3);
  *loss = sums[0] > 0 ? sums[1] / sums[0] : NAN;
  *accuracy = sums[0] > 0 && t->run.accuracy ? sums[2] / sums[0] : NAN;
  return NULL;
}

/* ---------------------------------------------------------------- the public API */

static void report(kiln_trainer *t, kiln_train_progress *p) {
  if (t->options.progress && t->world.rank == 0) t->options.progress(t->options.progress_arg, p);
}

static kiln_train_progress progress_now(kiln_trainer *t, int64_t epoch) {
  double elapsed = kiln_now() - t->epoch_start;
  kiln_train_progress p = {.epoch = epoch, .epochs = t->run.epochs, .step = t->epoch_step, .steps = t->steps_per_epoch,
                           .global_step = t->run.optim.step,
                           .loss = t->epoch_rows ? t->epoch_loss / (double)t->epoch_rows : NAN,
                           .accuracy = t->epoch_rows && t->run.accuracy ? t->epoch_correct / (double)t->epoch_rows : NAN,
                           .samples_per_s = elapsed > 0 ? (double)(t->epoch_rows - t->epoch_rows_resumed) / elapsed : 0,
                           .elapsed_s = elapsed, .step_loss = t->step_loss,
                           .step_samples = t->step_samples,
                           .learning_rate = kx_schedule_lr(&t->run.optim.schedule, t->run.optim.step),
                           .val_loss = NAN, .val_accuracy = NAN, .gpu_utilization = NAN};
  return p;
}

/* The GPUs' mean utilization now, NaN without NVML. Read only at logged steps: each reading is a
 * few driver calls per device. */
static double gpu_utilization(kiln_trainer *t) {
  double mean;
  return t->gpus && kiln_gpus_mean_utilization(t->gpus, &mean) ? mean : NAN;
}

static void log_scalars(kiln_trainer *t, const kiln_train_progress *p, int with_validation) {
  if (!t->events) return;
  const char *tags[7];
  float values[7];
  int n = 0;
  tags[n] = "loss", values[n++] = (float)p->loss;
  if (t->run.accuracy) tags[n] = "accuracy", values[n++] = (float)p->accuracy;
  tags[n] = "learning_rate", values[n++] = (float)p->learning_rate;
  tags[n] = "samples_per_s", values[n++] = (float)p->samples_per_s;
  if (with_validation) {
    tags[n] = "val_loss", values[n++] = (float)p->val_loss;
    if (t->run.accuracy) tags[n] = "val_accuracy", values[n++] = (float)p->val_accuracy;
  }
  /* one scalar for all GPUs, the name the issue and the seed's example use; per device in /metrics */
  if (!isnan(p->gpu_utilization)) tags[n] = "gpu_utilization", values[n++] = (float)p->gpu_utilization;
  kiln_status s = kx_events_scalars(t->events, p->global_step, tags, values, n);
  if (!s) s = kx_events_flush(t->events);
  if (s) { /* TensorBoard is a view: losing it does not stop training */
    kiln_log(KILN_LOG_WARN, "TensorBoard events: %s; no more events are written", kiln_status_message(s));
    kiln_status_free(s);
    kx_events_close(t->events);
    t->events = NULL;
  }
}

static kiln_status run_epoch(kiln_trainer *t, int64_t epoch, kiln_train_result *result) {
  kiln_status s = NULL;
  if (!t->resumed_mid_epoch) {
    t->epoch_step = 0;
    t->epoch_rows = t->epoch_rows_resumed = 0;
    t->epoch_loss = t->epoch_correct = 0;
    s = kiln_dataset_reset(t->train, epoch);
    t->epoch_start = kiln_now();
  } else if (!(s = kiln_dataset_reset(t->train, epoch))) {
    /* the batches this epoch used before the checkpoint: read and dropped, so the rest come in the
     * same order as in an uninterrupted run */
    int64_t rows = 0;
    for (int64_t i = 0; !s && i < t->epoch_step; i++) s = load_batch(t, t->train, &rows);
    t->epoch_rows_resumed = t->epoch_rows;
    t->epoch_start = kiln_now();
  }
  t->resumed_mid_epoch = 0;
  while (!s) {
    int64_t rows, total;
    if ((s = load_batch(t, t->train, &rows)) || (s = train_step(t, rows, &total)) || total == 0) break;
    t->epoch_step++;
    result->steps++;
    result->samples += total;
    kiln_train_progress p = progress_now(t, epoch);
    int logged = t->run.optim.step % t->run.log_every == 0;
    if (logged) p.gpu_utilization = gpu_utilization(t);
    report(t, &p);
    if (logged && t->world.rank == 0) log_scalars(t, &p, 0);
    if (t->checkpoint_every > 0 && t->run.optim.step % t->checkpoint_every == 0) s = kx_trainer_checkpoint(t, epoch, 0);
  }
  if (s) return s;
  if (t->steps_per_epoch < 0) t->steps_per_epoch = t->epoch_step;
  kiln_train_progress p = progress_now(t, epoch);
  p.end_of_epoch = 1;
  if (t->valid && (s = kx_trainer_evaluate(t, t->valid, &p.val_loss, &p.val_accuracy))) return s;
  p.gpu_utilization = gpu_utilization(t);
  result->train_loss = p.loss;
  result->train_accuracy = p.accuracy;
  result->test_loss = p.val_loss;
  result->test_accuracy = p.val_accuracy;
  report(t, &p);
  if (t->world.rank == 0) log_scalars(t, &p, t->valid != NULL);
  return kx_trainer_checkpoint(t, epoch + 1, 1);
}

kiln_status kiln_trainer_fit(kiln_trainer *t, kiln_train_result *result) {
  memset(result, 0, sizeof *result);
  result->train_loss = result->train_accuracy = result->test_loss = result->test_accuracy = NAN;
  double start = kiln_now();
  kiln_status s = NULL;
  for (int64_t epoch = t->epoch; !s && epoch < t->run.epochs; epoch++) {
    s = run_epoch(t, epoch, result);
    t->epoch = epoch + 1;
  }
  result->epochs = t->run.epochs;
  result->activation_bytes = t->net->activation_bytes;
  result->skipped_steps = t->skipped_steps;
  result->wall_s = kiln_now() - start;
  result->samples_per_s = result->wall_s > 0 ? (double)result->samples / result->wall_s : 0;
  t->failed |= s != NULL;
  return s;
}

static kiln_status create(kiln_trainer *t, const kiln_train_options *o) {
  kiln_status s = kx_world_init(&t->world);
  if (!s) s = kx_run_load(o->run_file, &t->run);
  if (s) return s;
  kx_run *r = &t->run;
  if (o->epochs > 0) r->epochs = o->epochs;
  if (o->batch_size > 0) r->batch_size = o->batch_size;
  if (o->seed_set) r->seed = o->seed;
  if (o->log_every > 0) r->log_every = o->log_every;
  if (o->learning_rate > 0) kx_schedule_set_lr(&r->optim.schedule, o->learning_rate);
  if ((s = kx_run_seed_shuffles(r))) return s;
  if ((s = kx_world_check_same(&t->world, "kiln version", kiln_version())) || (s = kx_world_check_same(&t->world, "run file (hash)", r->hash)))
    return s;
  if (r->batch_size % t->world.size != 0)
    return kiln_error(KILN_INVALID_ARGUMENT, "batch size %lld does not split evenly over %d processes (it is the global batch)",
                      (long long)r->batch_size, t->world.size);
  t->rank_batch = r->batch_size / t->world.size;
  t->threads = o->threads > 0 ? o->threads : kiln_default_threads();
  t->checkpoint_every = o->checkpoint_every > 0 ? o->checkpoint_every : r->checkpoint_every;
  t->keep_checkpoints = o->keep_checkpoints > 0 ? o->keep_checkpoints : r->keep_checkpoints;
  t->steps_per_epoch = -1;
  if (snprintf(t->checkpoint_dir, sizeof t->checkpoint_dir, "%s", o->checkpoint_dir ? o->checkpoint_dir : "checkpoints") >=
      (int)sizeof t->checkpoint_dir)
    return kiln_error(KILN_INVALID_ARGUMENT, "checkpoint directory path too long");
  /* a checkpoint directory that cannot be made fails now, not after the first epoch */
  if (t->world.rank == 0 && (s = kiln_dir_create(t->checkpoint_dir))) return kiln_status_prefix(s, "checkpoint directory: ");
  if ((s = kiln_pool_create(t->threads, &t->pool))) return s;
  if ((s = open_data(t))) return s;
  kx_shape shape;
  if ((s = input_shape(t, &shape))) return s;
  t->rng.state = (uint64_t)r->seed;
  if ((s = kx_net_create(r->model, &shape, t->rank_batch, &t->rng, &t->net))) return s;
  int precision = kx_precision_parse(o->precision);
  if (precision < 0) return kiln_error(KILN_INVALID_ARGUMENT, "precision '%s': expected fp32, bf16 or fp16", o->precision);
  t->loss_scale = precision == KX_FP16 ? 32768 : 1;
  if ((precision != KX_FP32 || o->recompute) && (s = kx_net_configure(t->net, (kx_precision)precision, o->recompute)))
    return s;
  int64_t width = kx_net_output_size(t->net);
  t->targets = malloc((size_t)(t->rank_batch * kx_loss_target_width(&r->loss, width)) * sizeof(float));
  t->dy = malloc((size_t)(t->rank_batch * width) * sizeof(float));
  if (!t->targets || !t->dy) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  if ((s = kx_optim_init(&r->optim, t->net->n_params))) return s;
  if (o->resume && (s = kx_trainer_resume(t))) return s;
  kx_net_sync_weights(t->net);
  const char *logdir = o->logdir ? o->logdir : "runs";
  if (t->world.rank == 0 && logdir[0] && (s = kx_events_open(logdir, &t->events))) return kiln_status_prefix(s, "TensorBoard logdir: ");
  if (t->world.rank == 0 && (s = kiln_gpus_open(&t->gpus))) { /* no GPU is the common case, not an error */
    kiln_log(KILN_LOG_DEBUG, "train: no gpu_utilization: %s", kiln_status_message(s));
    kiln_status_free(s);
  }
  return NULL;
}

kiln_status kiln_trainer_create(const kiln_train_options *options, kiln_trainer **out) {
  *out = NULL;
  kiln_trainer *t = calloc(1, sizeof *t);
  if (!t) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  t->options = *options;
  kiln_status s = create(t, options);
  if (s) {
    t->failed = 1;
    kiln_trainer_free(t);
    return s;
  }
  *out = t;
  return NULL;
}

int kiln_trainer_rank(const kiln_trainer *t) { return t->world.rank; }

int64_t kiln_trainer_log_every(const kiln_trainer *t) { return t->run.log_every; }

void kiln_trainer_free(kiln_trainer *t) {
  if (!t) return;
  kx_events_close(t->events);
  kiln_gpus_close(t->gpus);
  kiln_dataset_free(t->train);
  kiln_dataset_free(t->valid);
  kx_net_free(t->net);
  free(t->targets);
  free(t->dy);
  kx_run_free(&t->run);
  kiln_pool_free(t->pool);
  /* A rank that failed leaves MPI without finalizing: mpirun then stops the other ranks, which
   * would otherwise wait for it in their next all-reduce. */
  if (!t->failed) kx_world_finalize(&t->world);
  free(t);
}
