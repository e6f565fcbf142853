/* Datasets: building the chain of stages from its JSON description, and the public API over it. */
#include "data/data.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

/* A spec comes from users: bound it like any other outside input. */
#define MAX_SPEC_BYTES (1 << 20)
#define MAX_STAGES 64

struct kiln_dataset {
  kx_data_ctx ctx;
  cJSON *spec; /* kept: stages may point into it */
  kx_stage *stages[MAX_STAGES + 3]; /* the source, its guard, an image source's decode map, then the spec's */
  int n_stages;
};

static const struct {
  const char *name;
  kiln_status (*open)(kx_data_ctx *, const cJSON *, kx_stage **);
} sources[] = {
    {"idx", kx_idx_open},   {"csv", kx_csv_open},           {"npy", kx_npy_open},       {"npz", kx_npy_open},
    {"tfrecord", kx_tfrecord_open}, {"images", kx_images_open}, {"range", kx_range_open},
};

static const struct {
  const char *name;
  kx_stage_open_fn open;
} stages[] = {
    {"map", kx_map_open},         {"filter", kx_filter_open}, {"shuffle", kx_shuffle_open}, {"batch", kx_batch_open},
    {"cache", kx_cache_open},     {"prefetch", kx_prefetch_open}, {"repeat", kx_repeat_open},
    {"shard", kx_shard_open},     {"take", kx_take_open},     {"skip", kx_skip_open},
};

/* The guard follows the source and notes when its first pass ends (kx_data_ctx.first_pass_done). */
static void note_end(kx_stage *s) {
  if (atomic_load(&s->ctx->first_pass_done)) return;
  s->ctx->read_in_first_pass = atomic_load(&s->ctx->read);
  atomic_store(&s->ctx->first_pass_done, 1);
}

static kiln_status guard_next(kx_stage *s, kiln_record *out, int *done) {
  kiln_status st = s->up->ops->next(s->up, out, done);
  if (!st && *done) note_end(s);
  return st;
}

static kiln_status guard_next_batch(kx_stage *s, int64_t size, int drop_remainder, kiln_record *out, int *done,
                                    int *ended) {
  kiln_status st = s->up->ops->next_batch(s->up, size, drop_remainder, out, done, ended);
  if (!st && (*ended || *done)) note_end(s);
  return st;
}

static kiln_status guard_reset(kx_stage *s, int64_t epoch) { return s->up->ops->reset(s->up, epoch); }
static void guard_free(kx_stage *s) { free(s); }
static const kx_stage_ops guard_ops = {"source", guard_next, guard_reset, guard_free, NULL};
/* For a source that builds batches itself. */
static const kx_stage_ops guard_batch_ops = {"source", guard_next, guard_reset, guard_free, guard_next_batch};

static int ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), k = strlen(suffix);
  return n >= k && strcasecmp(s + n - k, suffix) == 0;
}

/* The format a path's name implies, NULL when it implies none. */
static const char *format_of(const char *path) {
  struct stat st;
  if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) return "images";
  if (ends_with(path, ".csv")) return "csv";
  if (ends_with(path, ".npy")) return "npy";
  if (ends_with(path, ".npz")) return "npz";
  if (ends_with(path, ".tfrecord") || ends_with(path, ".tfrecords") || ends_with(path, ".tfrec")) return "tfrecord";
  if (strstr(path, "-ubyte")) return "idx";
  return NULL;
}

static kiln_status push(kiln_dataset *d, kx_stage *s) {
  if (d->n_stages == MAX_STAGES + 3) {
    s->ops->free(s);
    return kiln_error(KILN_INVALID_ARGUMENT, "a pipeline has at most %d stages", MAX_STAGES);
  }
  d->stages[d->n_stages++] = s;
  return NULL;
}

/* The source, from {"format": ..., "path": ...} or a bare path (its format from its name). */
static kiln_status open_source(kiln_dataset *d, cJSON *src) {
  if (cJSON_IsString(src)) {
    const char *format = format_of(src->valuestring);
    if (!format)
      return kiln_error(KILN_INVALID_ARGUMENT,
                        "source: cannot tell the format of '%s' from its name; give {\"format\": ..., \"path\": ...}",
                        src->valuestring);
    cJSON *obj = cJSON_CreateObject();
    if (!obj || !cJSON_AddStringToObject(obj, "format", format) || !cJSON_AddStringToObject(obj, "path", src->valuestring)) {
      cJSON_Delete(obj);
      return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
    }
    cJSON_ReplaceItemInObjectCaseSensitive(d->spec, "source", obj);
    src = obj;
  }
  if (!cJSON_IsObject(src)) return kiln_error(KILN_INVALID_ARGUMENT, "source: expected a path or an object");
  const char *format = NULL, *path = NULL;
  kiln_status s = kx_spec_string(src, "source", "path", 0, &path);
  if (!s) s = kx_spec_string(src, "source", "format", 0, &format);
  if (s) return s;
  if (!format && path) format = format_of(path);
  if (!format) return kiln_error(KILN_INVALID_ARGUMENT, "source: missing key 'format' (idx, csv, npy, npz, tfrecord, images, range)");
  for (size_t i = 0; i < sizeof sources / sizeof sources[0]; i++) {
    if (strcmp(sources[i].name, format) != 0) continue;
    kx_stage *st, *guard;
    s = sources[i].open(&d->ctx, src, &st);
    if (!s) s = push(d, st);
    if (s) return s;
    /* an image folder yields encoded files; they are decoded in parallel right after it */
    int channels = strcmp(format, "images") == 0 ? kx_images_decode_channels(st) : -1;
    if (!(guard = calloc(1, sizeof *guard))) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
    *guard = (kx_stage){st->ops->next_batch ? &guard_batch_ops : &guard_ops, st, &d->ctx};
    if ((s = push(d, guard))) return s;
    st = guard;
    if (channels < 0) return NULL;
    char decode[160];
    snprintf(decode, sizeof decode, "{\"transforms\": [{\"decode\": {\"feature\": \"image\", \"channels\": %d}}]}", channels);
    cJSON *args = cJSON_Parse(decode);
    if (!args) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
    s = kx_map_open(&d->ctx, st, args, "source.decode", &st);
    cJSON_Delete(args);
    return s ? s : push(d, st);
  }
  return kiln_error(KILN_INVALID_ARGUMENT, "source.format: unknown format '%s' (idx, csv, npy, npz, tfrecord, images, range)",
                    format);
}

static kiln_status open_stages(kiln_dataset *d, const cJSON *list) {
  if (!list) return NULL;
  if (!cJSON_IsArray(list)) return kiln_error(KILN_INVALID_ARGUMENT, "stages: expected a list");
  int i = 0;
  for (const cJSON *item = list->child; item; item = item->next, i++) {
    char where[64];
    snprintf(where, sizeof where, "stages[%d]", i);
    if (!cJSON_IsObject(item) || !item->child || item->child->next)
      return kiln_error(KILN_INVALID_ARGUMENT, "%s: expected an object with one key, the stage's name", where);
    const cJSON *args = item->child;
    snprintf(where, sizeof where, "stages[%d].%s", i, args->string);
    size_t k = 0;
    while (k < sizeof stages / sizeof stages[0] && strcmp(stages[k].name, args->string) != 0) k++;
    if (k == sizeof stages / sizeof stages[0])
      return kiln_error(KILN_INVALID_ARGUMENT,
                        "%s: unknown stage (map, filter, shuffle, batch, cache, prefetch, repeat, shard, take, skip)",
                        where);
    kx_stage *st;
    kiln_status s = stages[k].open(&d->ctx, d->stages[d->n_stages - 1], args, where, &st);
    if (!s) s = push(d, st);
    if (s) return s;
  }
  return NULL;
}

/* Reads on_error, quarantine and threads from the spec unless the options override them. */
static kiln_status open_context(kiln_dataset *d, const kiln_data_options *o) {
  static const char *const keys[] = {"source", "stages", "on_error", "quarantine", "threads", NULL};
  const char *on_error = "fail", *quarantine = NULL;
  int64_t threads = 0;
  kiln_status s = kx_spec_keys(d->spec, "pipeline", keys);
  if (!s) s = kx_spec_string(d->spec, "pipeline", "on_error", 0, &on_error);
  if (!s) s = kx_spec_string(d->spec, "pipeline", "quarantine", 0, &quarantine);
  if (!s) s = kx_spec_int(d->spec, "pipeline", "threads", 0, 0, 1024, &threads);
  if (s) return s;
  kiln_on_error mode;
  if (strcmp(on_error, "fail") == 0) mode = KILN_ON_ERROR_FAIL;
  else if (strcmp(on_error, "skip") == 0) mode = KILN_ON_ERROR_SKIP;
  else return kiln_error(KILN_INVALID_ARGUMENT, "pipeline.on_error: '%s' is neither \"fail\" nor \"skip\"", on_error);
  if (o && o->on_error_set) mode = o->on_error;
  if (o && o->quarantine_path) quarantine = o->quarantine_path;
  if (o && o->threads > 0) threads = o->threads;
  return kx_data_ctx_init(&d->ctx, mode, quarantine, o ? o->pool : NULL, (int)threads, o ? o->base_dir : NULL);
}

static kiln_status build(cJSON *spec, const kiln_data_options *options, kiln_dataset **out) {
  kiln_dataset *d = calloc(1, sizeof *d);
  if (!d) {
    cJSON_Delete(spec);
    return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  }
  d->spec = spec;
  kiln_status s = open_context(d, options);
  if (!s) s = open_source(d, cJSON_GetObjectItemCaseSensitive(spec, "source"));
  if (!s) s = open_stages(d, cJSON_GetObjectItemCaseSensitive(spec, "stages"));
  if (s) {
    kiln_dataset_free(d);
    return s;
  }
  *out = d;
  return NULL;
}

kiln_status kiln_dataset_open_spec(const char *json, size_t len, const kiln_data_options *options, kiln_dataset **out) {
  if (len > MAX_SPEC_BYTES)
    return kiln_error(KILN_RESOURCE_EXHAUSTED, "pipeline: %zu bytes is more than the limit of %d", len, MAX_SPEC_BYTES);
  cJSON *spec = cJSON_ParseWithLength(json, len);
  if (!spec) {
    const char *at = cJSON_GetErrorPtr();
    long off = at && at >= json && at <= json + len ? (long)(at - json) : -1;
    return kiln_error(KILN_INVALID_ARGUMENT, "pipeline: invalid JSON near byte %ld", off);
  }
  if (!cJSON_IsObject(spec)) {
    cJSON_Delete(spec);
    return kiln_error(KILN_INVALID_ARGUMENT, "pipeline: expected a JSON object");
  }
  if (!cJSON_GetObjectItemCaseSensitive(spec, "source")) {
    cJSON_Delete(spec);
    return kiln_error(KILN_INVALID_ARGUMENT, "pipeline: missing required key 'source'");
  }
  return build(spec, options, out);
}

kiln_status kiln_dataset_open_path(const char *path, const kiln_data_options *options, kiln_dataset **out) {
  cJSON *spec = cJSON_CreateObject();
  if (!spec || !cJSON_AddStringToObject(spec, "source", path)) {
    cJSON_Delete(spec);
    return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  }
  return build(spec, options, out);
}

void kiln_dataset_free(kiln_dataset *d) {
  if (!d) return;
  /* downstream first: a prefetch thread must stop before the stages it pulls from go */
  for (int i = d->n_stages - 1; i >= 0; i--) d->stages[i]->ops->free(d->stages[i]);
  kx_data_ctx_free(&d->ctx);
  cJSON_Delete(d->spec);
  free(d);
}

kiln_status kiln_dataset_next(kiln_dataset *d, kiln_record *out, int *done) {
  kx_stage *tail = d->stages[d->n_stages - 1];
  memset(out, 0, sizeof *out);
  *done = 0;
  return tail->ops->next(tail, out, done);
}

kiln_status kiln_dataset_reset(kiln_dataset *d, int64_t epoch) {
  kx_stage *tail = d->stages[d->n_stages - 1];
  return tail->ops->reset(tail, epoch);
}

kiln_data_counts kiln_dataset_counts(const kiln_dataset *d) {
  kiln_data_counts c = {atomic_load(&d->ctx.first_pass_done) ? d->ctx.read_in_first_pass : atomic_load(&d->ctx.read),
                        atomic_load(&d->ctx.quarantined)};
  return c;
}

const char *kiln_dataset_quarantine_path(const kiln_dataset *d) { return d->ctx.quarantine_path; }

kiln_status kiln_dataset_write(kiln_dataset *d, const char *path, const char *format, int64_t *written) {
  if (!format) format = format_of(path);
  kx_writer *w = NULL;
  kiln_status s;
  if (format && strcmp(format, "csv") == 0) s = kx_csv_writer_open(path, &w);
  else if (format && strcmp(format, "npz") == 0) s = kx_npz_writer_open(path, &w);
  else if (format && strcmp(format, "tfrecord") == 0) s = kx_tfrecord_writer_open(path, &w);
  else s = kiln_error(KILN_INVALID_ARGUMENT, "%s: cannot write format '%s' (csv, npz, tfrecord)", path, format ? format : "?");
  if (s) return s;
  int64_t n = 0;
  for (;;) {
    kiln_record r;
    int done;
    s = kiln_dataset_next(d, &r, &done);
    if (s || done) break;
    s = w->write(w, &r);
    kiln_record_release(&r);
    if (s) break;
    n++;
  }
  if (!s) s = w->finish(w);
  w->free(w);
  if (written) *written = n;
  return s;
}
