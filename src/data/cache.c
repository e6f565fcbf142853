/* The cache stage: the first complete pass stores every record (in memory, or in a file when a
 * filename is given) and later passes read them back instead of running the stages upstream
 * again. A pass abandoned halfway stores nothing: the next pass runs upstream once more. The file
 * belongs to this dataset: it is rewritten by each run and removed when the dataset is freed. */
#include "data/data.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct cache_stage {
  kx_stage base;
  char *filename; /* NULL: memory */
  int complete;   /* a full pass is stored */
  int filling;    /* the current pass stores what it hands out */
  /* memory */
  kiln_record *records;
  int64_t count, capacity;
  int64_t cursor;
  /* file: names and sources are pointers owned upstream, stored as indices into these tables */
  FILE *file;
  const char *const **names;
  const char **sources;
  int n_names, n_sources;
} cache_stage;

/* ---------------------------------------------------------------- file format
 * per record: i32 names id, i32 source id (-1: none), i32 feature count, i64 index, i64 offset; per
 * feature: i32 dtype (0: missing), i32 rank, i64 dims[rank], then the data (strings: u64 length and
 * the bytes of each element). Native byte order: the file never leaves the process. */

static int put(FILE *f, const void *p, size_t n) { return fwrite(p, 1, n, f) == n ? 0 : -1; }
static int get(FILE *f, void *p, size_t n) { return fread(p, 1, n, f) == n ? 0 : -1; }

/* Index of p in the table, appending it when new; -1 when the table is full. */
static int intern(const void ***table, int *n, const void *p) {
  for (int i = 0; i < *n; i++)
    if ((*table)[i] == p) return i;
  const void **t = realloc(*table, (size_t)(*n + 1) * sizeof *t);
  if (!t) return -1;
  t[*n] = p;
  *table = t;
  return (*n)++;
}

static kiln_status write_record(cache_stage *c, const kiln_record *r) {
  int32_t head[3];
  head[0] = intern((const void ***)&c->names, &c->n_names, r->names);
  head[1] = r->source ? intern((const void ***)&c->sources, &c->n_sources, r->source) : -1;
  head[2] = r->count;
  int64_t pos[2] = {r->index, r->offset};
  int err = head[0] < 0 || (r->source && head[1] < 0) || put(c->file, head, sizeof head) || put(c->file, pos, sizeof pos);
  for (int i = 0; i < r->count && !err; i++) {
    const kiln_tensor *t = &r->values[i];
    int32_t kind[2] = {(int32_t)t->dtype, t->rank};
    err = put(c->file, kind, sizeof kind);
    if (err || t->dtype == KILN_UNDEFINED) continue;
    err = put(c->file, t->dims, (size_t)t->rank * sizeof t->dims[0]);
    if (t->dtype == KILN_STRING) {
      int64_t n = kiln_tensor_numel(t);
      for (int64_t k = 0; k < n && !err; k++) {
        const char *v = ((char *const *)t->data)[k];
        uint64_t len = v ? strlen(v) : 0;
        err = put(c->file, &len, sizeof len) || put(c->file, v ? v : "", len);
      }
    } else if (!err && kiln_tensor_nbytes(t)) {
      err = put(c->file, t->data, kiln_tensor_nbytes(t));
    }
  }
  return err ? kiln_error(KILN_IO, "cache file %s: write failed: %s", c->filename, strerror(errno)) : NULL;
}

static kiln_status read_record(cache_stage *c, kiln_record *out, int *done) {
  int32_t head[3];
  int64_t pos[2];
  if (get(c->file, head, sizeof head)) {
    if (feof(c->file)) {
      *done = 1;
      return NULL;
    }
    return kiln_error(KILN_IO, "cache file %s: read failed: %s", c->filename, strerror(errno));
  }
  kiln_status s = NULL;
  if (head[0] < 0 || head[0] >= c->n_names || head[1] < -1 || head[1] >= c->n_sources || head[2] < 0 || get(c->file, pos, sizeof pos))
    return kiln_error(KILN_IO, "cache file %s is corrupt", c->filename);
  s = kiln_record_init(out, c->names[head[0]], head[2], 0, NULL);
  if (s) return s;
  out->source = head[1] >= 0 ? c->sources[head[1]] : NULL;
  out->index = pos[0];
  out->offset = pos[1];
  for (int i = 0; i < head[2] && !s; i++) {
    int32_t kind[2];
    int64_t dims[KILN_MAX_RANK];
    if (get(c->file, kind, sizeof kind)) s = kiln_error(KILN_IO, "cache file %s is truncated", c->filename);
    if (s || kind[0] == KILN_UNDEFINED) continue;
    if (kind[1] < 0 || kind[1] > KILN_MAX_RANK || get(c->file, dims, (size_t)kind[1] * sizeof dims[0])) {
      s = kiln_error(KILN_IO, "cache file %s is corrupt", c->filename);
      break;
    }
    kiln_tensor *t = &out->values[i];
    s = kiln_tensor_alloc(t, (kiln_dtype)kind[0], kind[1], dims);
    if (s) break;
    if (t->dtype == KILN_STRING) {
      int64_t n = kiln_tensor_numel(t);
      for (int64_t k = 0; k < n && !s; k++) {
        uint64_t len;
        char *v = NULL;
        if (get(c->file, &len, sizeof len) || len > ((uint64_t)1 << 32) || !(v = malloc(len + 1)) || get(c->file, v, len)) {
          free(v);
          s = kiln_error(KILN_IO, "cache file %s is corrupt", c->filename);
          break;
        }
        v[len] = '\0';
        ((char **)t->data)[k] = v;
      }
    } else if (kiln_tensor_nbytes(t) && get(c->file, t->data, kiln_tensor_nbytes(t))) {
      s = kiln_error(KILN_IO, "cache file %s is truncated", c->filename);
    }
  }
  if (s) kiln_record_release(out);
  else *done = 0;
  return s;
}

/* ---------------------------------------------------------------- stage */

static void drop_memory(cache_stage *c) {
  for (int64_t i = 0; i < c->count; i++) kiln_record_release(&c->records[i]);
  c->count = 0;
}

static kiln_status store(cache_stage *c, const kiln_record *r) {
  if (c->filename) return write_record(c, r);
  if (c->count == c->capacity) {
    int64_t cap = c->capacity ? c->capacity * 2 : 1024;
    kiln_record *grown = realloc(c->records, (size_t)cap * sizeof *grown);
    if (!grown) return kiln_error(KILN_RESOURCE_EXHAUSTED, "cache: out of memory after %lld records", (long long)c->count);
    c->records = grown;
    c->capacity = cap;
  }
  kiln_status s = kiln_record_copy(&c->records[c->count], r);
  if (!s) c->count++;
  return s;
}

static kiln_status cache_next(kx_stage *s, kiln_record *out, int *done) {
  cache_stage *c = (cache_stage *)s;
  if (c->complete) {
    if (c->filename) return read_record(c, out, done);
    if (c->cursor == c->count) {
      *done = 1;
      return NULL;
    }
    *done = 0;
    return kiln_record_copy(out, &c->records[c->cursor++]);
  }
  kiln_status st = s->up->ops->next(s->up, out, done);
  if (st || !c->filling) return st;
  if (*done) {
    c->complete = 1;
    if (c->filename && fflush(c->file) != 0)
      return kiln_error(KILN_IO, "cache file %s: write failed: %s", c->filename, strerror(errno));
    return NULL;
  }
  st = store(c, out);
  if (st) kiln_record_release(out);
  return st;
}

static kiln_status cache_reset(kx_stage *s, int64_t epoch) {
  cache_stage *c = (cache_stage *)s;
  if (c->complete) {
    c->cursor = 0;
    if (c->filename && fseek(c->file, 0, SEEK_SET) != 0)
      return kiln_error(KILN_IO, "cache file %s: %s", c->filename, strerror(errno));
    return NULL;
  }
  /* the pass in progress was abandoned: start storing afresh */
  drop_memory(c);
  if (c->filename && (fflush(c->file) != 0 || ftruncate(fileno(c->file), 0) != 0 || fseek(c->file, 0, SEEK_SET) != 0))
    return kiln_error(KILN_IO, "cache file %s: %s", c->filename, strerror(errno));
  c->filling = 1;
  return s->up->ops->reset(s->up, epoch);
}

static void cache_free(kx_stage *s) {
  cache_stage *c = (cache_stage *)s;
  drop_memory(c);
  free(c->records);
  if (c->file) {
    fclose(c->file);
    remove(c->filename);
  }
  free(c->filename);
  free(c->names);
  free(c->sources);
  free(c);
}

static const kx_stage_ops cache_ops = {"cache", cache_next, cache_reset, cache_free, NULL};

kiln_status kx_cache_open(kx_data_ctx *ctx, kx_stage *up, const cJSON *args, const char *where, kx_stage **out) {
  static const char *const keys[] = {"filename", NULL};
  const char *filename = "";
  kiln_status s = kx_spec_keys(args, where, keys);
  if (!s) s = kx_spec_string(args, where, "filename", 0, &filename);
  if (s) return s;
  cache_stage *c = calloc(1, sizeof *c);
  if (!c) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  c->base = (kx_stage){&cache_ops, up, ctx};
  c->filling = 1;
  if (filename[0]) {
    c->filename = kx_data_path(ctx, filename);
    if (!c->filename || !(c->file = fopen(c->filename, "w+b"))) {
      s = c->filename ? kiln_error(KILN_IO, "%s: cannot create the cache file %s: %s", where, c->filename, strerror(errno))
                      : kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
      free(c->filename);
      free(c);
      return s;
    }
  }
  *out = &c->base;
  return NULL;
}
