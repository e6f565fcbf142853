/* The model manager: which versions of which models are served. It scans every model's base path
 * (at start, on each poll, after a config reload), follows the repository's labels, loads, checks
 * against their manifests, validates and warms up the versions the policy wants, swaps them in
 * atomically, and retires the ones it no longer wants once their in-flight requests are done —
 * never leaving a model that had a healthy version without one. It routes the canary's share of
 * traffic and acts on the canary's verdict (rollout.c): rejection or promotion. */
#include "serve/serve.h"
#include "kiln/registry.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

typedef struct model_entry {
  kiln_model_config cfg;
  kx_version **versions; /* ascending by number: LOADING, AVAILABLE and failed (END) records */
  int n_versions, cap;
  char *scan_error; /* why the base path could not be read, NULL when it could */
  kiln_labels repo;    /* the repository's labels.json (empty when there is none) */
  char *labels_error;  /* why labels.json could not be read (the last good labels stay) */
  int64_t labels_mtime_ns; /* of labels.json when last read (-1: none) */
  /* Canaries this process rejected but could not record in labels.json (a read-only repository):
   * kept out of service until labels.json changes. */
  int64_t unrecorded[64];
  int n_unrecorded;
  int64_t last_stable; /* the stable version last served, kept while a new stable loads; -1 */
} model_entry;

/* A failed version keeps the file identity it failed with, so that it is retried only when the
 * file changes. */
typedef struct version_record {
  kx_version v;
  int64_t file_size;
  int64_t file_mtime_ns;
  int rejection_recorded; /* a failed canary's rejection is in labels.json */
} version_record;

struct kx_manager {
  kx_manager_options opt;
  kiln_server_options server;
  kiln_batching_config batching;
  pthread_rwlock_t lock; /* models, their version lists and states */
  model_entry **models;
  int n_models;
  pthread_mutex_t poll_lock; /* one scan at a time; guards `retired` */
  kx_version **retired;      /* unloading, freed when their last reference goes */
  int n_retired, cap_retired;
  pthread_mutex_t wake_lock;
  pthread_cond_t wake;
  int stop, poll_now, retry_failed;
  double poll_seconds;
  pthread_t poller;
  int polling;
  kiln_metric *versions_loaded, *loads, *load_failures, *queue_seconds, *inference_seconds, *batch_size;
  kiln_metric *rollbacks, *promotions;
  kiln_canary_options canary;
};

static const char *state_names[] = {"START", "LOADING", "AVAILABLE", "UNLOADING", "END"};

const char *kx_state_name(kx_state s) { return state_names[s]; }

void kx_version_release(kx_version *v) { atomic_fetch_sub(&v->refs, 1); }

/* ---------------------------------------------------------------- config copies */

static char *dup_or_empty(const char *s) { return strdup(s ? s : ""); }

static void config_free(kiln_model_config *c) {
  free(c->name);
  free(c->base_path);
  free(c->platform);
  free(c->versions);
  for (int i = 0; i < c->n_labels; i++) free(c->labels[i].label);
  free(c->labels);
  memset(c, 0, sizeof *c);
}

static kiln_status config_copy(kiln_model_config *dst, const kiln_model_config *src) {
  memset(dst, 0, sizeof *dst);
  *dst = *src;
  dst->name = dup_or_empty(src->name);
  dst->base_path = dup_or_empty(src->base_path);
  dst->platform = dup_or_empty(src->platform);
  dst->versions = src->n_versions ? malloc((size_t)src->n_versions * sizeof *dst->versions) : NULL;
  dst->labels = src->n_labels ? calloc((size_t)src->n_labels, sizeof *dst->labels) : NULL;
  int ok = dst->name && dst->base_path && dst->platform && (dst->versions || !src->n_versions) &&
           (dst->labels || !src->n_labels);
  if (dst->versions) memcpy(dst->versions, src->versions, (size_t)src->n_versions * sizeof *dst->versions);
  for (int i = 0; ok && i < src->n_labels; i++) {
    dst->labels[i].version = src->labels[i].version;
    ok = (dst->labels[i].label = strdup(src->labels[i].label)) != NULL;
  }
  if (!ok) {
    dst->n_labels = dst->labels ? src->n_labels : 0;
    config_free(dst);
    return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory copying the model config");
  }
  return NULL;
}

/* ---------------------------------------------------------------- lookups (lock held) */

static model_entry *find_model(kx_manager *mg, const char *name) {
  for (int i = 0; i < mg->n_models; i++)
    if (strcmp(mg->models[i]->cfg.name, name) == 0) return mg->models[i];
  return NULL;
}

static kx_version *find_version(model_entry *e, int64_t number) {
  for (int i = 0; i < e->n_versions; i++)
    if (e->versions[i]->number == number) return e->versions[i];
  return NULL;
}

/* The repository's labels (what `kiln registry label` and the admin API change) come before the
 * config file's version_labels. */
static int64_t label_version(const model_entry *e, const char *label) {
  int64_t v = kiln_labels_get(&e->repo, label);
  if (v >= 0) return v;
  for (int i = 0; i < e->cfg.n_labels; i++)
    if (strcmp(e->cfg.labels[i].label, label) == 0) return e->cfg.labels[i].version;
  return -1;
}

static int usable(const kx_version *v) { return v && v->state == KX_AVAILABLE && !atomic_load(&v->rejected); }

/* Where requests that name no version go (never `not`): stable; while a newly labelled stable
 * loads, the stable served before; without labels, the newest version that is not the canary. */
static kx_version *default_version(model_entry *e, const kx_version *not) {
  int64_t stable = label_version(e, "stable");
  kx_version *v = stable >= 0 ? find_version(e, stable) : NULL;
  if (usable(v) && v != not) return v;
  v = e->last_stable >= 0 ? find_version(e, e->last_stable) : NULL;
  if (usable(v) && v != not) return v;
  kx_version *canary = NULL;
  for (int i = e->n_versions - 1; i >= 0; i--) {
    kx_version *x = e->versions[i];
    if (!usable(x) || x == not) continue;
    if (!atomic_load(&x->canary)) return x;
    if (!canary) canary = x;
  }
  return canary;
}

static kx_version *canary_version(model_entry *e) {
  for (int i = 0; i < e->n_versions; i++)
    if (atomic_load(&e->versions[i]->canary) && usable(e->versions[i])) return e->versions[i];
  return NULL;
}

static int available_count(const model_entry *e) {
  int n = 0;
  for (int i = 0; i < e->n_versions; i++) n += e->versions[i]->state == KX_AVAILABLE;
  return n;
}

kiln_status kx_manager_acquire(kx_manager *mg, const char *model, int64_t version, const char *label,
                               const char *request_id, kx_version **out, int *canary) {
  *out = NULL;
  if (canary) *canary = 0;
  kiln_status s = NULL;
  pthread_rwlock_rdlock(&mg->lock);
  model_entry *e = find_model(mg, model);
  kx_version *v = NULL;
  if (!e) {
    s = kiln_error(KILN_NOT_FOUND, "Servable not found for request: model '%s' is not served", model);
  } else if (version >= 0 || label) {
    int64_t number = version;
    if (label && (number = label_version(e, label)) < 0)
      s = kiln_error(KILN_NOT_FOUND, "model '%s' has no version labelled '%s'", model, label);
    else if (!(v = find_version(e, number)))
      s = kiln_error(KILN_NOT_FOUND, "model '%s' has no version %lld", model, (long long)number);
    else if (v->state != KX_AVAILABLE)
      s = kiln_error(KILN_UNAVAILABLE, "model '%s' version %lld is %s%s%s", model, (long long)number,
                     kx_state_name(v->state), v->error ? ": " : "", v->error ? kiln_status_message(v->error) : "");
    else if (atomic_load(&v->rejected))
      s = kiln_error(KILN_UNAVAILABLE, "model '%s' version %lld was rejected as a canary", model, (long long)number);
  } else if (!(v = default_version(e, NULL))) {
    s = kiln_error(KILN_UNAVAILABLE, "model '%s' has no available version%s%s", model, e->scan_error ? ": " : "",
                   e->scan_error ? e->scan_error : "");
  } else if (request_id && mg->canary.percent > 0) {
    kx_version *c = canary_version(e);
    if (c && c != v && kx_canary_bucket(request_id) < mg->canary.percent) {
      v = c;
      if (canary) *canary = 1;
    }
  }
  if (!s) {
    atomic_fetch_add(&v->refs, 1);
    *out = v;
  }
  pthread_rwlock_unlock(&mg->lock);
  return s;
}

kx_version *kx_manager_acquire_fallback(kx_manager *mg, const kx_version *not) {
  pthread_rwlock_rdlock(&mg->lock);
  model_entry *e = find_model(mg, not->model_name);
  kx_version *v = e ? default_version(e, not) : NULL;
  if (v) atomic_fetch_add(&v->refs, 1);
  pthread_rwlock_unlock(&mg->lock);
  return v;
}

static void wake_poller(kx_manager *mg, int retry_failed) {
  pthread_mutex_lock(&mg->wake_lock);
  mg->poll_now = 1;
  mg->retry_failed |= retry_failed;
  pthread_cond_broadcast(&mg->wake);
  pthread_mutex_unlock(&mg->wake_lock);
}

void kx_manager_poll_now(kx_manager *mg) { wake_poller(mg, 1); }

static void log_version(kiln_log_level level, const kx_version *v, const char *fmt, const char *detail);

/* Stops a canary's traffic at once (the first thread to see the breach does it) and leaves the
 * repository change and the unload to the poller. */
static void reject_canary(kx_manager *mg, kx_version *v, const char *kind, const char *reason) {
  int expected = 0;
  if (!atomic_compare_exchange_strong(&v->rejected, &expected, 2)) return;
  snprintf(v->reject_reason, sizeof v->reject_reason, "%s", reason);
  atomic_store(&v->rejected, 1);
  const char *labels[2] = {v->model_name, kind};
  kiln_metric_add(mg->rollbacks, labels, 1);
  log_version(KILN_LOG_ERROR, v, "canary rolled back, all traffic to stable: %s", reason);
  wake_poller(mg, 0);
}

void kx_manager_observe(kx_manager *mg, kx_version *v, int failed, int nonfinite, double seconds) {
  kx_health_record(&v->health, failed, nonfinite, seconds);
  if (!atomic_load(&v->canary) || atomic_load(&v->rejected)) return; /* only a canary is judged */
  /* judging sorts two latency windows: after every failure, else every 8th request */
  if (!failed && !nonfinite && atomic_load(&v->health.requests) % 8 != 0) return;
  pthread_rwlock_rdlock(&mg->lock);
  model_entry *e = find_model(mg, v->model_name);
  kx_version *stable = e ? default_version(e, v) : NULL;
  const char *kind = NULL;
  char reason[200];
  int breach = stable && kx_canary_breach(&mg->canary, &v->health, &stable->health, &kind, reason, sizeof reason);
  int64_t promote = mg->canary.promote_requests;
  int healthy = stable && !breach && promote > 0 && atomic_load(&v->health.requests) >= promote &&
                atomic_load(&v->health.requests) >= kx_canary_defaults(&mg->canary).min_requests;
  pthread_rwlock_unlock(&mg->lock);
  if (breach) reject_canary(mg, v, kind, reason);
  int expected = 0;
  if (healthy && atomic_compare_exchange_strong(&v->promote, &expected, 1)) wake_poller(mg, 0);
}

kiln_status kx_manager_base_path(kx_manager *mg, const char *model, char *out, size_t size) {
  pthread_rwlock_rdlock(&mg->lock);
  model_entry *e = find_model(mg, model);
  kiln_status s = NULL;
  if (!e) s = kiln_error(KILN_NOT_FOUND, "model '%s' is not served", model);
  else if (snprintf(out, size, "%s", e->cfg.base_path) >= (int)size) s = kiln_error(KILN_INVALID_ARGUMENT, "base path too long");
  pthread_rwlock_unlock(&mg->lock);
  return s;
}

kiln_status kx_manager_status(kx_manager *mg, const char *model, int64_t version, const char *label,
                              kx_version_status **out, int *n) {
  *out = NULL;
  *n = 0;
  kiln_status s = NULL;
  pthread_rwlock_rdlock(&mg->lock);
  model_entry *e = find_model(mg, model);
  if (!e) {
    s = kiln_error(KILN_NOT_FOUND, "Could not find any versions of model %s", model);
  } else {
    int64_t number = version;
    if (label && (number = label_version(e, label)) < 0)
      s = kiln_error(KILN_NOT_FOUND, "model '%s' has no version labelled '%s'", model, label);
    kx_version *one = !s && number >= 0 ? find_version(e, number) : NULL;
    if (!s && number >= 0 && !one)
      s = kiln_error(KILN_NOT_FOUND, "Could not find version %lld of model %s", (long long)number, model);
    if (!s && number < 0 && e->n_versions == 0)
      s = kiln_error(KILN_NOT_FOUND, "Could not find any versions of model %s%s%s", model, e->scan_error ? ": " : "",
                     e->scan_error ? e->scan_error : "");
    if (!s && !(*out = calloc((size_t)e->n_versions + 1, sizeof **out)))
      s = kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
    for (int i = e->n_versions - 1; !s && i >= 0; i--) {
      const kx_version *v = e->versions[i];
      if (one && v != one) continue;
      kx_version_status *st = &(*out)[(*n)++];
      st->version = v->number;
      st->state = v->state;
      st->code = kiln_status_code(v->error);
      snprintf(st->message, sizeof st->message, "%s", v->error ? kiln_status_message(v->error) : "");
    }
  }
  pthread_rwlock_unlock(&mg->lock);
  return s;
}

kiln_status kx_manager_status_json(kx_manager *mg, const char *model, int64_t version, const char *label,
                                   kx_buf *out) {
  kx_version_status *st;
  int n;
  kiln_status s = kx_manager_status(mg, model, version, label, &st, &n);
  if (s) return s;
  kx_buf_puts(out, "{\"model_version_status\":[");
  for (int i = 0; i < n; i++) {
    kx_buf_printf(out, "%s{\"version\":\"%lld\",\"state\":\"%s\",\"status\":{\"error_code\":\"%s\",\"error_message\":",
                  i ? "," : "", (long long)st[i].version, kx_state_name(st[i].state), kiln_code_name(st[i].code));
    kx_buf_json_string(out, st[i].message);
    kx_buf_puts(out, "}}");
  }
  kx_buf_puts(out, "]}");
  free(st);
  return NULL;
}

int kx_manager_versions(kx_manager *mg, const char *model, int64_t *out, int max) {
  pthread_rwlock_rdlock(&mg->lock);
  model_entry *e = find_model(mg, model);
  int n = e ? 0 : -1;
  for (int i = 0; e && i < e->n_versions; i++)
    if (e->versions[i]->state == KX_AVAILABLE && n < max) out[n++] = e->versions[i]->number;
  pthread_rwlock_unlock(&mg->lock);
  return n;
}

int kx_manager_ready(kx_manager *mg) {
  pthread_rwlock_rdlock(&mg->lock);
  int ready = mg->n_models > 0;
  for (int i = 0; i < mg->n_models; i++) ready &= available_count(mg->models[i]) > 0;
  pthread_rwlock_unlock(&mg->lock);
  return ready;
}

/* ---------------------------------------------------------------- loading */

static void log_version(kiln_log_level level, const kx_version *v, const char *fmt, const char *detail) {
  kiln_log_field f[2] = {{"model", v->model_name}, {"version", v->version_text}};
  kiln_log_fields(level, f, 2, fmt, detail);
}

static int compare_names(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The .npy files in a version's warmup folder: for a one-input model every file is one record; otherwise files
 * are named after the inputs and make one record (inputs without a file get synthetic values).
 * Returns the number of records read (0 when there is no warmup folder). */
#define MAX_WARMUP_FILES 64
static kiln_status read_warmup(const char *dir, const kx_signature *sig, kiln_tensor **records, int *n_records) {
  char path[4096];
  *n_records = 0;
  if (snprintf(path, sizeof path, "%s/warmup", dir) >= (int)sizeof path)
    return kiln_error(KILN_INVALID_ARGUMENT, "%s: path too long", dir);
  DIR *d = opendir(path);
  if (!d) return NULL;
  char *names[MAX_WARMUP_FILES];
  int n = 0;
  kiln_status s = NULL;
  for (struct dirent *de; (de = readdir(d)) != NULL;) {
    size_t len = strlen(de->d_name);
    if (len < 5 || strcmp(de->d_name + len - 4, ".npy") != 0) continue;
    if (n == MAX_WARMUP_FILES) {
      s = kiln_error(KILN_RESOURCE_EXHAUSTED, "%s: more than %d warm-up files", path, MAX_WARMUP_FILES);
      break;
    }
    if (!(names[n] = strdup(de->d_name))) {
      s = kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
      break;
    }
    n++;
  }
  closedir(d);
  qsort(names, (size_t)n, sizeof *names, compare_names);
  int per_file = sig->n_inputs == 1;
  int count = per_file ? n : (n ? 1 : 0);
  for (int r = 0; !s && r < count; r++) {
    kiln_tensor *rec = records[r];
    for (int i = 0; !s && i < sig->n_inputs; i++) {
      const char *file = NULL;
      if (per_file) file = names[r];
      for (int k = 0; !per_file && k < n; k++)
        if (strlen(names[k]) == strlen(sig->inputs[i].name) + 4 && strncmp(names[k], sig->inputs[i].name, strlen(sig->inputs[i].name)) == 0)
          file = names[k];
      if (file) {
        char fpath[4096 + 256];
        if (snprintf(fpath, sizeof fpath, "%s/%s", path, file) >= (int)sizeof fpath)
          s = kiln_error(KILN_INVALID_ARGUMENT, "%s: path too long", path);
        else
          s = kiln_npy_read(fpath, &rec[i]);
      } else {
        s = kiln_tensor_synthetic(&sig->inputs[i], 1, NULL, 1, &rec[i]);
      }
    }
    if (!s) *n_records = r + 1;
  }
  for (int k = 0; k < n; k++) free(names[k]);
  return s;
}

/* The warm-up records: the version's warmup files (or one synthetic batch-1 record), plus a
 * synthetic record at every batch size a merged batch can have, so that no request pays for a
 * plan. */
#define MAX_WARMUP_RECORDS (MAX_WARMUP_FILES + 16)
typedef struct warmup_set {
  kiln_tensor *records[MAX_WARMUP_RECORDS];
  const kiln_tensor *views[MAX_WARMUP_RECORDS];
  int n, n_inputs;
} warmup_set;

static void warmup_free(warmup_set *w) {
  for (int r = 0; r < MAX_WARMUP_RECORDS; r++) {
    for (int i = 0; w->records[r] && i < w->n_inputs; i++) kiln_tensor_release(&w->records[r][i]);
    free(w->records[r]);
  }
}

static kiln_status warmup_build(kx_manager *mg, const char *dir, const kx_version *v, int batching, warmup_set *w) {
  memset(w, 0, sizeof *w);
  w->n_inputs = v->sig.n_inputs;
  for (int r = 0; r < MAX_WARMUP_RECORDS; r++)
    if (!(w->records[r] = calloc((size_t)w->n_inputs + 1, sizeof(kiln_tensor))))
      return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  kiln_status s = read_warmup(dir, &v->sig, w->records, &w->n);
  if (s) return kiln_status_prefix(s, "warm-up inputs: ");
  int64_t sizes[17];
  int n_sizes = 0;
  if (w->n == 0) sizes[n_sizes++] = 1;
  if (batching) {
    const kiln_batching_config *c = &mg->batching;
    for (int i = 0; i < c->n_allowed_batch_sizes && n_sizes < 16; i++) sizes[n_sizes++] = c->allowed_batch_sizes[i];
    if (!c->n_allowed_batch_sizes) sizes[n_sizes++] = c->max_batch_size;
  }
  for (int k = 0; k < n_sizes && !s; k++, w->n++)
    for (int i = 0; i < w->n_inputs && !s; i++)
      s = kiln_tensor_synthetic(&v->sig.inputs[i], sizes[k], NULL, 1, &w->records[w->n][i]);
  for (int r = 0; r < w->n; r++) w->views[r] = w->records[r];
  return s;
}

static int is_batchable(const kx_signature *sig) {
  for (int i = 0; i < sig->n_inputs; i++)
    if (sig->inputs[i].kind != KILN_VALUE_TENSOR || sig->inputs[i].rank < 1 || sig->inputs[i].dims[0] >= 0) return 0;
  return sig->n_inputs > 0;
}

/* The version's folder and model file; "" for both when the path does not fit. */
static void model_file(const model_entry *e, int64_t number, char *dir, size_t dsize, char *file, size_t fsize) {
  if (snprintf(dir, dsize, "%s/%lld", e->cfg.base_path, (long long)number) >= (int)dsize ||
      snprintf(file, fsize, "%s/model.onnx", dir) >= (int)fsize)
    dir[0] = file[0] = '\0';
}

/* The request signature of a preprocessing version: the schema's features with a batch
 * dimension in front, and the model's outputs. */
static kiln_status request_signature(kx_version *v) {
  const kiln_schema *schema = kiln_preprocess_schema(v->pre);
  kx_signature *rs = &v->request_sig;
  rs->inputs = calloc((size_t)schema->count + 1, sizeof *rs->inputs);
  rs->outputs = calloc((size_t)v->sig.n_outputs + 1, sizeof *rs->outputs);
  if (!rs->inputs || !rs->outputs) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  rs->n_inputs = schema->count;
  for (int i = 0; i < schema->count; i++) {
    const kiln_schema_feature *f = &schema->features[i];
    kiln_value_info *in = &rs->inputs[i];
    in->name = f->name;
    in->kind = KILN_VALUE_TENSOR;
    in->dtype = f->dtype;
    in->rank = f->rank + 1;
    in->dims[0] = -1;
    memcpy(in->dims + 1, f->dims, (size_t)f->rank * sizeof f->dims[0]);
  }
  rs->n_outputs = v->sig.n_outputs;
  memcpy(rs->outputs, v->sig.outputs, (size_t)v->sig.n_outputs * sizeof *rs->outputs);
  return NULL;
}

/* Frees what loading a version built. */
static void version_unload(kx_version *v) {
  kx_batcher_free(v->batcher);
  v->batcher = NULL;
  kx_signature_free(&v->sig);
  kx_signature_free(&v->request_sig);
  kiln_preprocess_free(v->pre);
  v->pre = NULL;
  kiln_model_free(v->model);
  v->model = NULL;
}

/* A version with a manifest loads only when its files match it (no tampering, no half-copied
 * upload); one without loads unless the server requires manifests. */
static kiln_status check_manifest(const kx_manager *mg, const char *dir) {
  char path[4200];
  snprintf(path, sizeof path, "%s/manifest.json", dir);
  if (access(path, F_OK) != 0)
    return mg->server.require_manifest ? kiln_error(KILN_FAILED_PRECONDITION, "refused: %s has no manifest.json (--require_manifest)", dir)
                                       : NULL;
  kiln_status s = kiln_manifest_verify(dir);
  return s ? kiln_status_prefix(s, "refused: the files do not match manifest.json: ") : NULL;
}

/* Loads, validates and warms up a version; on failure the record keeps the error. */
static kiln_status load_version(kx_manager *mg, const model_entry *e, version_record *rec) {
  kx_version *v = &rec->v;
  char dir[4096], file[4200];
  model_file(e, v->number, dir, sizeof dir, file, sizeof file);
  kiln_status s = check_manifest(mg, dir);
  if (!s) s = kiln_model_load(file, NULL, &v->model);
  if (!s) s = kx_signature_from_model(v->model, &v->sig);
  if (!s) s = kiln_preprocess_load(dir, &v->pre);
  if (!s && v->pre) s = request_signature(v);
  if (s) return s;
  v->batchable = is_batchable(&v->sig);
  const kiln_server_options *so = &mg->server;
  int batching = so->enable_batching && v->batchable;
  warmup_set w;
  s = warmup_build(mg, dir, v, batching, &w);
  if (!s) {
    int workers = so->inter_op_threads > 0 ? so->inter_op_threads : kiln_cpu_count();
    if (batching && mg->batching.num_batch_threads > 0) workers = (int)mg->batching.num_batch_threads;
    kx_batcher_options bo = {
        .workers = workers,
        .intra_op_threads = so->intra_op_threads > 0 ? so->intra_op_threads : 1,
        .pool = mg->opt.pool,
        .batching = batching,
        .config = &mg->batching,
        .max_queue = batching ? (int)(mg->batching.max_enqueued_batches * mg->batching.max_batch_size) : 4096,
        .warmup = w.views,
        .n_warmup = w.n,
        .warmup_runs = so->warmup_runs > 0 ? so->warmup_runs : 3,
        .done = mg->opt.done,
        .done_ctx = mg->opt.done_ctx,
        .queue_seconds = mg->queue_seconds,
        .inference_seconds = mg->inference_seconds,
        .batch_size = mg->batch_size,
        .labels = {v->model_name, v->version_text},
    };
    s = kx_batcher_start(v->model, &bo, &v->batcher);
  }
  warmup_free(&w);
  return s;
}

/* What identifies a version's files: the model's and the manifest's sizes and modification times
 * (a failed version is retried when they change, e.g. after an upload completes). */
static void file_identity(const model_entry *e, int64_t number, int64_t *size, int64_t *mtime_ns) {
  char dir[4096], file[4200];
  model_file(e, number, dir, sizeof dir, file, sizeof file);
  *size = -1, *mtime_ns = -1;
  struct stat st;
  if (stat(file, &st) != 0) return;
  *size = (int64_t)st.st_size;
  *mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
  snprintf(file, sizeof file, "%s/manifest.json", dir);
  if (stat(file, &st) != 0) return;
  *size += (int64_t)st.st_size << 32;
  *mtime_ns ^= (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
}

/* Frees a version that no request can reach any more. */
static void version_destroy(kx_version *v) {
  version_unload(v);
  kx_health_destroy(&v->health);
  kiln_status_free(v->error);
  free(v->model_name);
  free(v);
}

static void metric_versions_loaded(kx_manager *mg, model_entry *e) {
  const char *labels[1] = {e->cfg.name};
  kiln_metric_set(mg->versions_loaded, labels, available_count(e));
}

static int insert_version(model_entry *e, kx_version *v) {
  if (e->n_versions == e->cap) {
    int cap = e->cap ? 2 * e->cap : 8;
    kx_version **vs = realloc(e->versions, (size_t)cap * sizeof *vs);
    if (!vs) return -1;
    e->versions = vs;
    e->cap = cap;
  }
  int i = e->n_versions;
  while (i > 0 && e->versions[i - 1]->number > v->number) {
    e->versions[i] = e->versions[i - 1];
    i--;
  }
  e->versions[i] = v;
  e->n_versions++;
  return 0;
}

static void remove_version(model_entry *e, kx_version *v) {
  for (int i = 0; i < e->n_versions; i++)
    if (e->versions[i] == v) {
      memmove(&e->versions[i], &e->versions[i + 1], (size_t)(e->n_versions - i - 1) * sizeof *e->versions);
      e->n_versions--;
      return;
    }
}

/* Loads version `number` of `e` (poll lock held, manager lock not). */
static void add_version(kx_manager *mg, model_entry *e, int64_t number) {
  version_record *rec = calloc(1, sizeof *rec);
  if (!rec || !(rec->v.model_name = strdup(e->cfg.name))) {
    free(rec);
    kiln_log(KILN_LOG_ERROR, "out of memory loading model '%s' version %lld", e->cfg.name, (long long)number);
    return;
  }
  kx_version *v = &rec->v;
  v->number = number;
  snprintf(v->version_text, sizeof v->version_text, "%lld", (long long)number);
  v->state = KX_LOADING;
  atomic_init(&v->refs, 0);
  atomic_init(&v->rejected, 0);
  atomic_init(&v->promote, 0);
  atomic_init(&v->canary, 0);
  kx_health_init(&v->health);
  file_identity(e, number, &rec->file_size, &rec->file_mtime_ns);
  pthread_rwlock_wrlock(&mg->lock);
  int fail = insert_version(e, v);
  pthread_rwlock_unlock(&mg->lock);
  if (fail) {
    version_destroy(v);
    return;
  }
  log_version(KILN_LOG_INFO, v, "loading version%s", "");
  double t0 = kiln_now();
  kiln_status s = load_version(mg, e, rec);
  const char *labels[1] = {e->cfg.name};
  kiln_metric_add(mg->loads, labels, 1);
  if (s) {
    kiln_metric_add(mg->load_failures, labels, 1);
    log_version(KILN_LOG_ERROR, v, "version failed to load: %s", kiln_status_message(s));
    version_unload(v);
  } else {
    char took[64];
    snprintf(took, sizeof took, "%.1f ms", (kiln_now() - t0) * 1e3);
    log_version(KILN_LOG_INFO, v, "version available (loaded and warmed up in %s)", took);
  }
  pthread_rwlock_wrlock(&mg->lock);
  v->error = s;
  v->state = s ? KX_END : KX_AVAILABLE;
  if (!s) atomic_fetch_add(&v->refs, 1); /* the manager's reference while it serves it */
  metric_versions_loaded(mg, e);
  pthread_rwlock_unlock(&mg->lock);
}

/* Unlinks a version (poll lock held) and queues it to be freed after its last request. */
static void retire_version(kx_manager *mg, model_entry *e, kx_version *v) {
  pthread_rwlock_wrlock(&mg->lock);
  int served = v->state == KX_AVAILABLE;
  v->state = served ? KX_UNLOADING : KX_END;
  remove_version(e, v);
  metric_versions_loaded(mg, e);
  pthread_rwlock_unlock(&mg->lock);
  if (served) {
    log_version(KILN_LOG_INFO, v, "unloading version%s", "");
    kx_version_release(v);
  }
  if (mg->n_retired == mg->cap_retired) {
    int cap = mg->cap_retired ? 2 * mg->cap_retired : 8;
    kx_version **r = realloc(mg->retired, (size_t)cap * sizeof *r);
    if (!r) { /* cannot track it: wait for it here instead */
      while (atomic_load(&v->refs) > 0) nanosleep(&(struct timespec){0, 1000000}, NULL);
      version_destroy(v);
      return;
    }
    mg->retired = r;
    mg->cap_retired = cap;
  }
  mg->retired[mg->n_retired++] = v;
}

/* Frees retired versions whose last request has finished (poll lock held). */
static void reap(kx_manager *mg) {
  for (int i = 0; i < mg->n_retired;) {
    kx_version *v = mg->retired[i];
    if (atomic_load(&v->refs) > 0) {
      i++;
      continue;
    }
    const char *labels[4] = {v->model_name, v->version_text, NULL, NULL};
    kiln_metric_remove(mg->queue_seconds, labels);
    kiln_metric_remove(mg->inference_seconds, labels);
    kiln_metric_remove(mg->batch_size, labels);
    for (int k = 0; k < mg->opt.n_version_metrics; k++) kiln_metric_remove(mg->opt.version_metrics[k], labels);
    version_destroy(v);
    mg->retired[i] = mg->retired[--mg->n_retired];
  }
}

/* ---------------------------------------------------------------- scanning */

static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

/* Version folders under the base path, ascending. */
#define MAX_VERSIONS 4096
static int list_versions(model_entry *e, int64_t *out, int max, char **error) {
  DIR *d = opendir(e->cfg.base_path);
  if (!d) {
    char msg[4200];
    if (snprintf(msg, sizeof msg, "base path '%s': %s", e->cfg.base_path, strerror(errno)) >= (int)sizeof msg)
      snprintf(msg, sizeof msg, "base path too long");
    *error = strdup(msg);
    return 0;
  }
  *error = NULL;
  int n = 0;
  for (struct dirent *de; (de = readdir(d)) != NULL && n < max;)
    if (kiln_version_folder(de->d_name, &out[n])) n++;
  closedir(d);
  qsort(out, (size_t)n, sizeof *out, cmp_i64);
  return n;
}

static int contains(const int64_t *xs, int n, int64_t x) {
  for (int i = 0; i < n; i++)
    if (xs[i] == x) return 1;
  return 0;
}

static int rejected(const model_entry *e, int64_t number) {
  const kx_version *v = find_version((model_entry *)e, number);
  return kiln_labels_rejection(&e->repo, number) != NULL || (v && atomic_load(&v->rejected)) ||
         contains(e->unrecorded, e->n_unrecorded, number);
}

/* The versions the policy wants among those on disk, plus every labelled version on disk; never a
 * rejected one (the latest versions are counted without them). */
static int wanted_versions(const model_entry *e, const int64_t *present, int n, int64_t *out) {
  int k = 0, newer = 0;
  int64_t latest = e->cfg.latest_num_versions > 0 ? e->cfg.latest_num_versions : 1;
  for (int i = n - 1; i >= 0; i--) {
    int64_t x = present[i];
    if (rejected(e, x)) continue;
    int want = 0;
    switch (e->cfg.policy) {
    case KILN_POLICY_LATEST: want = newer++ < latest; break;
    case KILN_POLICY_ALL: want = 1; break;
    case KILN_POLICY_SPECIFIC: want = contains(e->cfg.versions, e->cfg.n_versions, x); break;
    }
    for (int l = 0; l < e->cfg.n_labels; l++) want |= e->cfg.labels[l].version == x;
    for (int l = 0; l < e->repo.n_labels; l++) want |= e->repo.labels[l].version == x;
    if (want) out[k++] = x;
  }
  qsort(out, (size_t)k, sizeof *out, cmp_i64);
  return k;
}

static int64_t labels_mtime(const model_entry *e) {
  char path[4200];
  struct stat st;
  snprintf(path, sizeof path, "%s/labels.json", e->cfg.base_path);
  return stat(path, &st) == 0 ? (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec : -1;
}

/* Re-reads the repository's labels.json; on a read or parse error the last good labels stay. A
 * change of the file ends the rejections this process could not record in it: an operator has
 * spoken. */
static void read_labels(kx_manager *mg, model_entry *e) {
  int64_t mtime = labels_mtime(e);
  if (mtime != e->labels_mtime_ns) e->n_unrecorded = 0;
  e->labels_mtime_ns = mtime;
  kiln_labels labels;
  kiln_status s = kiln_labels_read(e->cfg.base_path, &labels);
  const char *msg = s ? kiln_status_message(s) : NULL;
  int changed = (msg == NULL) != (e->labels_error == NULL) || (msg && strcmp(msg, e->labels_error) != 0);
  if (changed && msg) {
    kiln_log_field f[1] = {{"model", e->cfg.name}};
    kiln_log_fields(KILN_LOG_ERROR, f, 1, "labels not updated, the last good ones stay: %s", msg);
  }
  pthread_rwlock_wrlock(&mg->lock);
  free(e->labels_error);
  e->labels_error = msg ? strdup(msg) : NULL;
  if (!s) {
    kiln_labels_free(&e->repo);
    e->repo = labels;
  }
  pthread_rwlock_unlock(&mg->lock);
  kiln_status_free(s);
}

/* Writes the canaries' verdicts into the repository: a rejection (the version is never loaded
 * again) or a promotion to stable. Returns whether it changed labels.json. */
static int record_verdicts(kx_manager *mg, model_entry *e) {
  int changed = 0;
  for (int i = 0; i < e->n_versions; i++) {
    kx_version *v = e->versions[i];
    version_record *rec = (version_record *)v;
    kiln_status s = NULL;
    if (atomic_load(&v->rejected) == 1 && !rec->rejection_recorded) {
      rec->rejection_recorded = 1;
      s = kiln_registry_reject(e->cfg.base_path, v->number, v->reject_reason);
      if (s && kiln_status_code(s) == KILN_FAILED_PRECONDITION) { /* promoted meanwhile: it is reloaded */
        log_version(KILN_LOG_WARN, v, "the canary's rejection is not recorded: %s", kiln_status_message(s));
        kiln_status_free(s);
        s = NULL;
      } else if (s) { /* keep it out of service from memory; the oldest such entry gives way */
        if (e->n_unrecorded == (int)(sizeof e->unrecorded / sizeof e->unrecorded[0]))
          memmove(e->unrecorded, e->unrecorded + 1, (size_t)--e->n_unrecorded * sizeof e->unrecorded[0]);
        e->unrecorded[e->n_unrecorded++] = v->number;
      }
      changed = 1;
    } else if (!atomic_load(&v->rejected) && atomic_load(&v->promote) == 1) {
      atomic_store(&v->promote, 2);
      s = kiln_registry_label(e->cfg.base_path, v->number, "stable");
      if (!s) {
        const char *labels[1] = {e->cfg.name};
        kiln_metric_add(mg->promotions, labels, 1);
        char count[24];
        snprintf(count, sizeof count, "%lld", (long long)atomic_load(&v->health.requests));
        log_version(KILN_LOG_INFO, v, "canary promoted to stable after %s healthy requests", count);
      }
      changed = 1;
    }
    if (s) log_version(KILN_LOG_ERROR, v, "cannot record the canary's verdict in labels.json (a rejected canary stays out of service in this process until labels.json changes): %s", kiln_status_message(s));
    kiln_status_free(s);
  }
  return changed;
}

/* A canary that failed to load or warm up, or whose warm-up outputs hold NaN/Inf where stable's do
 * not, is rejected without ever taking traffic. */
static void judge_loaded_canary(kx_manager *mg, model_entry *e) {
  int64_t number = label_version(e, "canary");
  kx_version *v = number >= 0 && number != label_version(e, "stable") ? find_version(e, number) : NULL;
  if (!v || atomic_load(&v->rejected)) return;
  char reason[240];
  if (v->state == KX_END && v->error) {
    snprintf(reason, sizeof reason, "failed to load or warm up: %s", kiln_status_message(v->error));
  } else if (v->state == KX_AVAILABLE && kx_batcher_warmup_nonfinite(v->batcher)) {
    pthread_rwlock_rdlock(&mg->lock);
    kx_version *stable = default_version(e, v);
    int stable_finite = stable && !kx_batcher_warmup_nonfinite(stable->batcher);
    pthread_rwlock_unlock(&mg->lock);
    if (!stable_finite) return;
    snprintf(reason, sizeof reason, "NaN/Inf outputs on the warm-up inputs (stable's are finite)");
  } else {
    return;
  }
  reject_canary(mg, v, "warmup", reason);
}

/* Which version is the canary and which stable was served last (manager lock taken here). */
static void update_roles(kx_manager *mg, model_entry *e) {
  pthread_rwlock_wrlock(&mg->lock);
  int64_t stable = label_version(e, "stable"), canary = label_version(e, "canary");
  for (int i = 0; i < e->n_versions; i++)
    atomic_store(&e->versions[i]->canary, e->versions[i]->number == canary && canary != stable);
  kx_version *v = stable >= 0 ? find_version(e, stable) : NULL;
  if (usable(v)) e->last_stable = stable;
  pthread_rwlock_unlock(&mg->lock);
}

static void scan_model(kx_manager *mg, model_entry *e, int retry_failed) {
  static int64_t present[MAX_VERSIONS], wanted[MAX_VERSIONS]; /* poll lock held */
  char *error = NULL;
  record_verdicts(mg, e);
  read_labels(mg, e);
  int n = list_versions(e, present, MAX_VERSIONS, &error);
  pthread_rwlock_wrlock(&mg->lock);
  int changed = (error == NULL) != (e->scan_error == NULL) || (error && strcmp(error, e->scan_error) != 0);
  free(e->scan_error);
  e->scan_error = error;
  pthread_rwlock_unlock(&mg->lock);
  if (changed && error) {
    kiln_log_field f[1] = {{"model", e->cfg.name}};
    kiln_log_fields(KILN_LOG_ERROR, f, 1, "cannot scan the model's versions: %s", error);
  }
  int k = wanted_versions(e, present, n, wanted);
  /* load what is wanted and missing, newest first; retry a failed version when its files changed
   * (or when an operator asks for a reload) */
  for (int i = k - 1; i >= 0; i--) {
    kx_version *v = find_version(e, wanted[i]);
    if (v && v->state == KX_END) {
      version_record *rec = (version_record *)v;
      int64_t size, mtime;
      file_identity(e, v->number, &size, &mtime);
      if (!retry_failed && size == rec->file_size && mtime == rec->file_mtime_ns) continue;
      retire_version(mg, e, v);
      v = NULL;
    }
    if (!v) add_version(mg, e, wanted[i]);
  }
  update_roles(mg, e);
  judge_loaded_canary(mg, e);
  if (record_verdicts(mg, e)) {
    read_labels(mg, e);
    k = wanted_versions(e, present, n, wanted);
    update_roles(mg, e);
  }
  /* retire what is no longer wanted, as long as an AVAILABLE wanted version remains, and the stable
   * served last until the newly labelled one is AVAILABLE */
  int healthy_wanted = 0;
  for (int i = 0; i < e->n_versions; i++)
    healthy_wanted += usable(e->versions[i]) && contains(wanted, k, e->versions[i]->number);
  kx_version *stable = find_version(e, label_version(e, "stable"));
  for (int i = e->n_versions - 1; i >= 0; i--) {
    kx_version *v = e->versions[i];
    if (contains(wanted, k, v->number) && !atomic_load(&v->rejected)) continue;
    if (usable(v) && (!healthy_wanted || (v->number == e->last_stable && !usable(stable)))) continue;
    retire_version(mg, e, v);
  }
}

/* Scans every model's base path once, loading and retiring versions per policy. */
static void poll_models(kx_manager *mg, int retry_failed) {
  pthread_mutex_lock(&mg->poll_lock);
  for (int i = 0; i < mg->n_models; i++) scan_model(mg, mg->models[i], retry_failed);
  reap(mg);
  pthread_mutex_unlock(&mg->poll_lock);
}

/* ---------------------------------------------------------------- configuration */

static void entry_free(model_entry *e) {
  config_free(&e->cfg);
  kiln_labels_free(&e->repo);
  free(e->labels_error);
  free(e->versions);
  free(e->scan_error);
  free(e);
}

/* Retires every version of a model and drops it (poll lock held). */
static void drop_model(kx_manager *mg, int index) {
  model_entry *e = mg->models[index];
  while (e->n_versions) retire_version(mg, e, e->versions[e->n_versions - 1]);
  pthread_rwlock_wrlock(&mg->lock);
  mg->models[index] = mg->models[--mg->n_models];
  pthread_rwlock_unlock(&mg->lock);
  const char *labels[1] = {e->cfg.name};
  kiln_metric_remove(mg->versions_loaded, labels);
  entry_free(e);
}

kiln_status kx_manager_configure(kx_manager *mg, const kiln_model_server_config *cfg) {
  pthread_mutex_lock(&mg->poll_lock);
  kiln_status s = NULL;
  /* a model that is gone, or whose base path changed, unloads (its versions are other files) */
  for (int i = mg->n_models - 1; i >= 0; i--) {
    int kept = 0;
    for (int k = 0; k < cfg->n_models; k++)
      kept |= strcmp(cfg->models[k].name, mg->models[i]->cfg.name) == 0 &&
              strcmp(cfg->models[k].base_path, mg->models[i]->cfg.base_path) == 0;
    if (!kept) drop_model(mg, i);
  }
  model_entry **models = realloc(mg->models, (size_t)(cfg->n_models + 1) * sizeof *models);
  if (!models) s = kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  else mg->models = models;
  for (int k = 0; !s && k < cfg->n_models; k++) {
    kiln_model_config copy;
    if ((s = config_copy(&copy, &cfg->models[k]))) break;
    pthread_rwlock_wrlock(&mg->lock);
    model_entry *e = find_model(mg, copy.name);
    if (e) {
      config_free(&e->cfg);
      e->cfg = copy;
    } else if ((e = calloc(1, sizeof *e))) {
      e->cfg = copy;
      e->last_stable = -1;
      e->labels_mtime_ns = -1;
      mg->models[mg->n_models++] = e;
    } else {
      config_free(&copy);
      s = kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
    }
    pthread_rwlock_unlock(&mg->lock);
  }
  for (int i = 0; !s && i < mg->n_models; i++) scan_model(mg, mg->models[i], 0);
  reap(mg);
  pthread_mutex_unlock(&mg->poll_lock);
  return s;
}

/* ---------------------------------------------------------------- life cycle */

static void *poll_main(void *arg) {
  kx_manager *mg = arg;
  double next_scan = kiln_now() + mg->poll_seconds;
  pthread_mutex_lock(&mg->wake_lock);
  while (!mg->stop) {
    /* retired versions are freed within 50 ms of their last request; scans run every poll */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 50 * 1000000;
    if (ts.tv_nsec >= 1000000000) ts.tv_sec++, ts.tv_nsec -= 1000000000;
    if (!mg->poll_now) pthread_cond_timedwait(&mg->wake, &mg->wake_lock, &ts);
    if (mg->stop) break;
    int scan = mg->poll_now || (mg->poll_seconds > 0 && kiln_now() >= next_scan), retry = mg->retry_failed;
    mg->poll_now = mg->retry_failed = 0;
    pthread_mutex_unlock(&mg->wake_lock);
    if (scan) {
      poll_models(mg, retry);
      next_scan = kiln_now() + mg->poll_seconds;
    } else {
      pthread_mutex_lock(&mg->poll_lock);
      reap(mg);
      pthread_mutex_unlock(&mg->poll_lock);
    }
    pthread_mutex_lock(&mg->wake_lock);
  }
  pthread_mutex_unlock(&mg->wake_lock);
  return NULL;
}

kiln_status kx_manager_start_polling(kx_manager *mg, double seconds) {
  mg->poll_seconds = seconds;
  if (pthread_create(&mg->poller, NULL, poll_main, mg) != 0)
    return kiln_error(KILN_RESOURCE_EXHAUSTED, "cannot start the file-system poller thread");
  mg->polling = 1;
  return NULL;
}

kiln_status kx_manager_create(const kx_manager_options *opt, kx_manager **out) {
  *out = NULL;
  kx_manager *mg = calloc(1, sizeof *mg);
  if (!mg) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  mg->opt = *opt;
  mg->server = *opt->server;
  kiln_batching_config_default(&mg->batching);
  if (opt->server->batching) {
    const kiln_batching_config *b = opt->server->batching;
    mg->batching = *b;
    mg->batching.allowed_batch_sizes = NULL;
    if (b->n_allowed_batch_sizes) {
      size_t bytes = (size_t)b->n_allowed_batch_sizes * sizeof *b->allowed_batch_sizes;
      if (!(mg->batching.allowed_batch_sizes = malloc(bytes))) {
        free(mg);
        return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
      }
      memcpy(mg->batching.allowed_batch_sizes, b->allowed_batch_sizes, bytes);
    }
  }
  /* Writers first: every request takes the lock to read, and with glibc's default (readers first)
   * a steady stream of requests could keep the poller from ever swapping in labels or versions. */
  pthread_rwlockattr_t attr;
  pthread_rwlockattr_init(&attr);
  pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
  pthread_rwlock_init(&mg->lock, &attr);
  pthread_rwlockattr_destroy(&attr);
  pthread_mutex_init(&mg->poll_lock, NULL);
  pthread_mutex_init(&mg->wake_lock, NULL);
  pthread_cond_init(&mg->wake, NULL);
  kiln_metrics *r = opt->metrics;
  const char *model[1] = {"model"}, *mv[2] = {"model", "version"};
  static const double batch_buckets[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024};
  mg->versions_loaded = kiln_metrics_gauge(r, "kiln_model_versions_available", "Versions of a model being served (AVAILABLE).", 1, model);
  mg->loads = kiln_metrics_counter(r, "kiln_model_loads_total", "Version loads attempted.", 1, model);
  mg->load_failures = kiln_metrics_counter(r, "kiln_model_load_failures_total", "Version loads or warm-ups that failed.", 1, model);
  mg->queue_seconds = kiln_metrics_histogram(r, "kiln_queue_duration_seconds", "Time requests waited in a version's queue.", 2, mv, kiln_latency_bucket_count, kiln_latency_buckets);
  mg->inference_seconds = kiln_metrics_histogram(r, "kiln_inference_duration_seconds", "Time of one model run (one batch).", 2, mv, kiln_latency_bucket_count, kiln_latency_buckets);
  const char *mr[2] = {"model", "reason"};
  mg->rollbacks = kiln_metrics_counter(r, "kiln_rollbacks_total", "Canaries rolled back (all traffic to stable), by reason: error_rate, nonfinite, latency, warmup.", 2, mr);
  mg->promotions = kiln_metrics_counter(r, "kiln_canary_promotions_total", "Canaries promoted to stable by the server.", 1, model);
  mg->canary = opt->server->canary;
  mg->batch_size = kiln_metrics_histogram(r, "kiln_batch_size", "Rows per model run, padding included.", 2, mv, (int)(sizeof batch_buckets / sizeof batch_buckets[0]), batch_buckets);
  *out = mg;
  return NULL;
}

void kx_manager_free(kx_manager *mg) {
  if (!mg) return;
  if (mg->polling) {
    pthread_mutex_lock(&mg->wake_lock);
    mg->stop = 1;
    pthread_cond_broadcast(&mg->wake);
    pthread_mutex_unlock(&mg->wake_lock);
    pthread_join(mg->poller, NULL);
  }
  pthread_mutex_lock(&mg->poll_lock);
  while (mg->n_models) drop_model(mg, mg->n_models - 1);
  while (mg->n_retired) {
    reap(mg);
    if (mg->n_retired) nanosleep(&(struct timespec){0, 1000000}, NULL);
  }
  pthread_mutex_unlock(&mg->poll_lock);
  free(mg->retired);
  free(mg->models);
  kiln_batching_config_free(&mg->batching);
  pthread_cond_destroy(&mg->wake);
  pthread_mutex_destroy(&mg->wake_lock);
  pthread_mutex_destroy(&mg->poll_lock);
  pthread_rwlock_destroy(&mg->lock);
  free(mg);
}
