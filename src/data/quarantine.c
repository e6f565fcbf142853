/* The context a dataset's stages share, and the quarantine where bad records go in skip mode. */
#include "data/data.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"

/* Raw records up to this size are kept in the quarantine file; longer ones by position only. */
#define RAW_LIMIT 4096

char *kx_data_path(const kx_data_ctx *ctx, const char *path) {
  if (path[0] == '/' || !ctx->base_dir || !ctx->base_dir[0]) return strdup(path);
  size_t n = strlen(ctx->base_dir) + strlen(path) + 2;
  char *p = malloc(n);
  if (p) snprintf(p, n, "%s/%s", ctx->base_dir, path);
  return p;
}

static kiln_status open_quarantine(kx_data_ctx *ctx) {
  if (ctx->quarantine) return NULL;
  ctx->quarantine = fopen(ctx->quarantine_path, "w");
  if (!ctx->quarantine)
    return kiln_error(KILN_IO, "cannot create the quarantine file %s: %s", ctx->quarantine_path, strerror(errno));
  return NULL;
}

static void put_position(kx_buf *b, const char *key, int64_t v) {
  if (v < 0) kx_buf_printf(b, ",\"%s\":null", key);
  else kx_buf_printf(b, ",\"%s\":%lld", key, (long long)v);
}

/* A quarantined record's identity; source pointers are stage-owned, so equal records have equal
 * pointers. */
struct kx_seen {
  const char *source;
  int64_t index, offset;
};

static size_t seen_slot(const kx_data_ctx *ctx, const char *source, int64_t index, int64_t offset) {
  uint64_t h = (uint64_t)(uintptr_t)source * 0x9E3779B97F4A7C15ull ^ (uint64_t)index * 0xBF58476D1CE4E5B9ull ^
               (uint64_t)offset * 0x94D049BB133111EBull;
  size_t mask = ctx->seen_capacity - 1, i = (size_t)(h ^ (h >> 29)) & mask;
  while (ctx->seen[i].source || ctx->seen[i].index || ctx->seen[i].offset) {
    const struct kx_seen *e = &ctx->seen[i];
    if (e->source == source && e->index == index && e->offset == offset) break;
    i = (i + 1) & mask;
  }
  return i;
}

/* Records (source, index, offset) as quarantined; 1 when it already was, -1 when out of memory.
 * Records without a position (index < 0) are never taken for one another. Call under ctx->lock. */
static int seen_before(kx_data_ctx *ctx, const char *source, int64_t index, int64_t offset) {
  if (index < 0) return 0;
  index++; /* an all-zero slot is empty */
  if (2 * (ctx->n_seen + 1) > ctx->seen_capacity) {
    size_t cap = ctx->seen_capacity ? ctx->seen_capacity * 2 : 64;
    struct kx_seen *old = ctx->seen, *grown = calloc(cap, sizeof *grown);
    if (!grown) return -1;
    size_t old_cap = ctx->seen_capacity;
    ctx->seen = grown;
    ctx->seen_capacity = cap;
    for (size_t k = 0; k < old_cap; k++)
      if (old[k].source || old[k].index || old[k].offset) ctx->seen[seen_slot(ctx, old[k].source, old[k].index, old[k].offset)] = old[k];
    free(old);
  }
  size_t i = seen_slot(ctx, source, index, offset);
  if (ctx->seen[i].source == source && ctx->seen[i].index == index && ctx->seen[i].offset == offset) return 1;
  ctx->seen[i] = (struct kx_seen){source, index, offset};
  ctx->n_seen++;
  return 0;
}

/* Writes one quarantine line; `raw_json` (already JSON) wins over raw bytes. */
static kiln_status quarantine(kx_data_ctx *ctx, const char *source, int64_t index, int64_t offset, const void *raw,
                              size_t raw_len, const char *raw_json, kiln_status why) {
  if (ctx->on_error == KILN_ON_ERROR_FAIL) {
    if (index >= 0 && offset >= 0)
      return kiln_status_prefix(why, "%s: record %lld (byte %lld): ", source ? source : "?", (long long)index,
                                (long long)offset);
    if (index >= 0) return kiln_status_prefix(why, "%s: record %lld: ", source ? source : "?", (long long)index);
    return kiln_status_prefix(why, "%s: ", source ? source : "?");
  }
  kx_buf b = {0};
  kx_buf_puts(&b, "{\"source\":");
  if (source) kx_buf_json_string(&b, source);
  else kx_buf_puts(&b, "null");
  put_position(&b, "index", index);
  put_position(&b, "offset", offset);
  kx_buf_puts(&b, ",\"reason\":");
  kx_buf_json_string(&b, kiln_status_message(why));
  if (raw_json) {
    kx_buf_puts(&b, ",\"raw\":");
    kx_buf_puts(&b, raw_json);
  } else if (raw && raw_len <= RAW_LIMIT) {
    kx_buf_puts(&b, ",\"raw\":");
    if (kx_is_utf8(raw, raw_len) && !memchr(raw, 0, raw_len)) {
      char *text = strndup(raw, raw_len);
      if (text) kx_buf_json_string(&b, text);
      else b.failed = 1;
      free(text);
    } else {
      kx_buf_puts(&b, "{\"b64\":\"");
      kx_buf_base64(&b, raw, raw_len);
      kx_buf_puts(&b, "\"}");
    }
  }
  kx_buf_puts(&b, "}\n");
  kiln_status_free(why);
  if (b.failed) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory writing to the quarantine");
  pthread_mutex_lock(&ctx->lock);
  /* a later pass's copy of a record already quarantined: dropped, already accounted for */
  int seen = seen_before(ctx, source, index, offset);
  kiln_status s = seen < 0 ? kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory writing to the quarantine")
                  : seen  ? NULL
                          : open_quarantine(ctx);
  if (!s && !seen && (fwrite(b.data, 1, b.len, ctx->quarantine) != b.len || fflush(ctx->quarantine) != 0))
    s = kiln_error(KILN_IO, "cannot write to the quarantine file %s: %s", ctx->quarantine_path, strerror(errno));
  pthread_mutex_unlock(&ctx->lock);
  kx_buf_free(&b);
  if (!s && !seen) atomic_fetch_add(&ctx->quarantined, 1);
  return s;
}

kiln_status kx_bad_record(kx_data_ctx *ctx, const char *source, int64_t index, int64_t offset, const void *raw,
                          size_t raw_len, kiln_status why) {
  return quarantine(ctx, source, index, offset, raw, raw_len, NULL, why);
}

/* Whether a record's JSON surely exceeds RAW_LIMIT (every element takes at least two characters,
 * itself and a comma), so that it need not be built to find out. */
static int surely_too_long(const kiln_record *r) {
  size_t chars = 0;
  for (int i = 0; i < r->count && chars <= RAW_LIMIT; i++) {
    const kiln_tensor *t = &r->values[i];
    if (t->dtype == KILN_UNDEFINED) continue;
    int64_t n = kiln_tensor_numel(t);
    if (n > RAW_LIMIT) return 1;
    chars += 2 * (size_t)n;
    for (int64_t k = 0; t->dtype == KILN_STRING && k < n && chars <= RAW_LIMIT; k++) {
      const char *v = ((char *const *)t->data)[k];
      chars += v ? strlen(v) : 0;
    }
  }
  return chars > RAW_LIMIT;
}

kiln_status kx_bad_parsed_record(kx_data_ctx *ctx, const kiln_record *r, kiln_status why) {
  char *json = ctx->on_error == KILN_ON_ERROR_SKIP && !surely_too_long(r) ? kiln_record_to_json(r) : NULL;
  if (json && strlen(json) > RAW_LIMIT) {
    free(json);
    json = NULL;
  }
  kiln_status s = quarantine(ctx, r->source, r->index, r->offset, NULL, 0, json, why);
  free(json);
  return s;
}

kiln_status kx_data_ctx_init(kx_data_ctx *ctx, kiln_on_error on_error, const char *quarantine_path,
                             kiln_pool *pool, int threads, const char *base_dir) {
  memset(ctx, 0, sizeof *ctx);
  pthread_mutex_init(&ctx->lock, NULL);
  ctx->on_error = on_error;
  if (on_error == KILN_ON_ERROR_SKIP) {
    ctx->quarantine_path = strdup(quarantine_path ? quarantine_path : "quarantine.jsonl");
    if (!ctx->quarantine_path) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  }
  if (base_dir && !(ctx->base_dir = strdup(base_dir))) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  kiln_status s = ctx->quarantine_path ? open_quarantine(ctx) : NULL;
  if (s) return s;
  if (pool) {
    ctx->pool = pool;
  } else {
    s = kiln_pool_create(threads > 0 ? threads : kiln_default_threads(), &ctx->pool);
    if (s) return s;
    ctx->own_pool = 1;
    kiln_pool_set_spin(ctx->pool, 0); /* map chunks come far apart: spinning would starve the reader */
  }
  ctx->threads = kiln_pool_threads(ctx->pool);
  return NULL;
}

void kx_data_ctx_free(kx_data_ctx *ctx) {
  if (ctx->quarantine) fclose(ctx->quarantine);
  if (ctx->own_pool) kiln_pool_free(ctx->pool);
  free(ctx->seen);
  free(ctx->quarantine_path);
  free(ctx->base_dir);
  pthread_mutex_destroy(&ctx->lock);
  memset(ctx, 0, sizeof *ctx);
}
