/* Structured logging: one JSON object per line on stderr, the format log shippers expect. */
#include "kiln/core.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/utc.h"

/* The log sink's settings: the only mutable globals in kiln besides the op table. */
static int threshold = -1; /* -1: not yet read from the environment */
static int text_format;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *level_names[] = {"debug", "info", "warn", "error"};

int kiln_log_level_from_name(const char *name, kiln_log_level *out) {
  if (!name) return -1;
  for (int i = 0; i < 4; i++) {
    if (strcmp(name, level_names[i]) == 0) {
      *out = (kiln_log_level)i;
      return 0;
    }
  }
  if (strcmp(name, "warning") == 0) {
    *out = KILN_LOG_WARN;
    return 0;
  }
  return -1;
}

/* Caller holds log_lock. */
static void read_environment(void) {
  kiln_log_level level = KILN_LOG_INFO;
  kiln_log_level_from_name(getenv("KILN_LOG_LEVEL"), &level); /* unknown names keep info */
  threshold = (int)level;
  const char *fmt = getenv("KILN_LOG_FORMAT");
  text_format = fmt && strcmp(fmt, "text") == 0;
}

void kiln_log_set_level(kiln_log_level level) {
  pthread_mutex_lock(&log_lock);
  if (threshold < 0) read_environment();
  threshold = (int)level;
  pthread_mutex_unlock(&log_lock);
}

int kiln_log_enabled(kiln_log_level level) {
  pthread_mutex_lock(&log_lock);
  if (threshold < 0) read_environment();
  int enabled = (int)level >= threshold;
  pthread_mutex_unlock(&log_lock);
  return enabled;
}

/* logfmt quotes a value that would otherwise not read back as one token. */
static int needs_quotes(const char *s) {
  if (!*s) return 1;
  for (const unsigned char *p = (const unsigned char *)s; *p; p++)
    if (*p <= ' ' || *p == '"' || *p == '=' || *p == 0x7f) return 1;
  return 0;
}

/* Builds the whole line, so that it reaches stderr in one write and lines of concurrent threads
 * (or processes sharing the stream) never interleave. */
static void build_line(kx_buf *b, int text, kiln_log_level level, const char *msg,
                       const kiln_log_field *fields, int n_fields) {
  if (text) {
    kx_buf_printf(b, "%s: %s", level_names[level], msg);
  } else {
    char when[KX_UTC_SIZE];
    kx_utc_now(1, when);
    kx_buf_printf(b, "{\"ts\":\"%s\",\"level\":\"%s\",\"msg\":", when, level_names[level]);
    kx_buf_json_string(b, msg);
  }
  for (int i = 0; fields && i < n_fields; i++) {
    if (!fields[i].key || !fields[i].value) continue;
    if (text) {
      kx_buf_printf(b, " %s=", fields[i].key);
      if (needs_quotes(fields[i].value)) kx_buf_json_string(b, fields[i].value);
      else kx_buf_puts(b, fields[i].value);
    } else {
      kx_buf_putc(b, ',');
      kx_buf_json_string(b, fields[i].key);
      kx_buf_putc(b, ':');
      kx_buf_json_string(b, fields[i].value);
    }
  }
  kx_buf_puts(b, text ? "\n" : "}\n");
}

static void log_line(kiln_log_level level, const kiln_log_field *fields, int n_fields, const char *fmt,
                     va_list ap) {
  if ((unsigned)level > KILN_LOG_ERROR) level = KILN_LOG_ERROR;
  if (!kiln_log_enabled(level)) return;
  char msg[2048];
  vsnprintf(msg, sizeof msg, fmt, ap);
  pthread_mutex_lock(&log_lock);
  kx_buf line = {0};
  build_line(&line, text_format, level, msg, fields, n_fields);
  if (line.failed) fputs("{\"level\":\"error\",\"msg\":\"log: out of memory\"}\n", stderr);
  else fwrite(line.data, 1, line.len, stderr);
  fflush(stderr);
  pthread_mutex_unlock(&log_lock);
  kx_buf_free(&line);
}

void kiln_log(kiln_log_level level, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  log_line(level, NULL, 0, fmt, ap);
  va_end(ap);
}

void kiln_log_fields(kiln_log_level level, const kiln_log_field *fields, int n_fields, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  log_line(level, fields, n_fields, fmt, ap);
  va_end(ap);
}
