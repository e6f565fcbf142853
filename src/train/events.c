/* TensorBoard event-file writer: tensorflow.Event records (packed by protobuf-c from kiln's copy
 * of TensorFlow's event.proto / summary.proto) in TFRecord framing, one file per training run. */
#include "train/events.h"

#include <errno.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/buf.h"
#include "data/data.h"
#include "tensorflow/core/util/event.pb-c.h"

#define FRAME_HEAD_BYTES 12 /* uint64 length + uint32 masked CRC of it; a uint32 data CRC follows */
#define MAX_TAG_BYTES 1024
#define MAX_NAME_TRIES 100 /* file names already taken before we give up (another process's n) */

struct kx_events {
  FILE *file;
  char *path;
  uint8_t *buf; /* one framed record */
  size_t cap;
  int failed; /* a write failed: the file may end mid-record, so nothing more is appended */
};

/* The <n> of file names: distinct for every file this process opens, even within one second. */
static atomic_uint files_opened;

static double wall_time(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void put_le(uint8_t *p, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* Frames and appends one packed Event. */
static kiln_status write_event(kx_events *w, const Tensorflow__Event *ev) {
  if (w->failed) return kiln_error(KILN_FAILED_PRECONDITION, "%s: an earlier write failed", w->path);
  size_t len = tensorflow__event__get_packed_size(ev), need = FRAME_HEAD_BYTES + len + 4;
  if (need > w->cap) {
    uint8_t *b = realloc(w->buf, need);
    if (!b) return kiln_error(KILN_RESOURCE_EXHAUSTED, "%s: out of memory for an event of %zu bytes", w->path, len);
    w->buf = b;
    w->cap = need;
  }
  uint8_t *body = w->buf + FRAME_HEAD_BYTES;
  size_t packed = tensorflow__event__pack(ev, body);
  if (packed != len)
    return kiln_error(KILN_INTERNAL, "%s: protobuf-c packed %zu bytes of an Event sized %zu", w->path, packed, len);
  put_le(w->buf, len, 8);
  put_le(w->buf + 8, kx_tfrecord_masked_crc(w->buf, 8), 4);
  put_le(body + len, kx_tfrecord_masked_crc(body, len), 4);
  if (fwrite(w->buf, 1, need, w->file) != need) {
    w->failed = 1;
    return kiln_error(KILN_IO, "%s: write failed: %s", w->path, strerror(errno));
  }
  return NULL;
}

kiln_status kx_events_open(const char *dir, kx_events **out) {
  *out = NULL;
  if (!dir || !*dir || strlen(dir) >= PATH_MAX)
    return kiln_error(KILN_INVALID_ARGUMENT, "log directory: expected a path of 1 to %d bytes", PATH_MAX - 1);
  kiln_status e = kiln_dir_create(dir);
  if (e) return e;
  char host[256];
  if (gethostname(host, sizeof host) != 0 || !host[0]) snprintf(host, sizeof host, "localhost");
  host[sizeof host - 1] = '\0';
  for (char *c = host; *c; c++)
    if (*c == '/') *c = '_';
  size_t dir_len = strlen(dir);
  while (dir_len > 1 && dir[dir_len - 1] == '/') dir_len--;
  kx_events *w = calloc(1, sizeof *w);
  if (!w) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  for (int tries = 0; !w->file; tries++) {
    kx_buf name = {0};
    kx_buf_printf(&name, "%.*s/events.out.tfevents.%lld.%s.%ld.%u", (int)dir_len, dir, (long long)time(NULL), host,
                  (long)getpid(), atomic_fetch_add(&files_opened, 1));
    free(w->path);
    w->path = kx_buf_take(&name, NULL);
    if (!w->path) {
      e = kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
      break;
    }
    w->file = fopen(w->path, "wbx"); /* x: never append to, or truncate, another writer's file */
    if (!w->file && (errno != EEXIST || tries + 1 == MAX_NAME_TRIES)) {
      e = kiln_error(KILN_IO, "%s: cannot create: %s", w->path, strerror(errno));
      break;
    }
  }
  if (!e) {
    Tensorflow__Event ev = TENSORFLOW__EVENT__INIT;
    ev.wall_time = wall_time();
    ev.what_case = TENSORFLOW__EVENT__WHAT_FILE_VERSION;
    ev.file_version = "brain.Event:2";
    e = write_event(w, &ev);
    if (!e) e = kx_events_flush(w); /* TensorBoard lists the run as soon as the file is readable */
  }
  if (e) {
    if (w->file) unlink(w->path);
    kx_events_close(w);
    return e;
  }
  *out = w;
  return NULL;
}

kiln_status kx_events_scalars(kx_events *w, int64_t step, const char *const *tags, const float *values, int n) {
  if (n < 0 || (n > 0 && (!tags || !values)))
    return kiln_error(KILN_INVALID_ARGUMENT, "%s: scalars: %d tags, tags %s, values %s", w->path, n,
                      tags ? "given" : "NULL", values ? "given" : "NULL");
  for (int i = 0; i < n; i++) { /* all checked first, so a bad tag writes none of the step's events */
    size_t len = tags[i] ? strlen(tags[i]) : 0;
    const char *bad = !tags[i] ? "NULL" : len == 0 ? "empty" : len > MAX_TAG_BYTES ? "too long"
                      : !kx_is_utf8(tags[i], len) ? "not UTF-8" : NULL;
    if (bad)
      return kiln_error(KILN_INVALID_ARGUMENT, "%s: scalar %d: tag %s: expected non-empty UTF-8 of at most %d bytes",
                        w->path, i, bad, MAX_TAG_BYTES);
  }
  Tensorflow__Summary__Value value = TENSORFLOW__SUMMARY__VALUE__INIT, *only[1] = {&value};
  Tensorflow__Summary summary = TENSORFLOW__SUMMARY__INIT;
  summary.n_value = 1;
  summary.value = only;
  Tensorflow__Event ev = TENSORFLOW__EVENT__INIT;
  ev.wall_time = wall_time();
  ev.step = step;
  ev.what_case = TENSORFLOW__EVENT__WHAT_SUMMARY;
  ev.summary = &summary;
  value.value_case = TENSORFLOW__SUMMARY__VALUE__VALUE_SIMPLE_VALUE;
  kiln_status e = NULL;
  for (int i = 0; i < n && !e; i++) {
    value.tag = (char *)tags[i];
    value.simple_value = values[i];
    e = write_event(w, &ev);
  }
  return e;
}

kiln_status kx_events_flush(kx_events *w) {
  if (fflush(w->file) != 0) {
    w->failed = 1;
    return kiln_error(KILN_IO, "%s: write failed: %s", w->path, strerror(errno));
  }
  return NULL;
}

const char *kx_events_path(const kx_events *w) { return w->path; }

void kx_events_close(kx_events *w) {
  if (!w) return;
  if (w->file && fclose(w->file) != 0) /* fclose flushes */
    kiln_log(KILN_LOG_WARN, "%s: closing the event file failed: %s", w->path, strerror(errno));
  free(w->buf);
  free(w->path);
  free(w);
}
