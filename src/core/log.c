/* Structured logging: one JSON object per line on stderr, the format log shippers expect. */
#include "kiln/core.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The log sink's settings: the only mutable globals in kiln besides the op table. */
static int threshold = -1; /* -1: not yet read from the environment */
static int text_format;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *level_names[] = {"debug", "info", "warn", "error"};

static void read_environment(void) {
  const char *lvl = getenv("KILN_LOG_LEVEL");
  threshold = KILN_LOG_INFO;
  for (int i = 0; lvl && i < 4; i++)
    if (strcmp(lvl, level_names[i]) == 0) threshold = i;
  const char *fmt = getenv("KILN_LOG_FORMAT");
  text_format = fmt && strcmp(fmt, "text") == 0;
}

void kiln_log_set_level(kiln_log_level level) {
  pthread_mutex_lock(&log_lock);
  if (threshold < 0) read_environment();
  threshold = (int)level;
  pthread_mutex_unlock(&log_lock);
}

static void put_json_string(FILE *f, const char *s) {
  fputc('"', f);
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    switch (*p) {
    case '"': fputs("\\\"", f); break;
    case '\\': fputs("\\\\", f); break;
    case '\n': fputs("\\n", f); break;
    case '\r': fputs("\\r", f); break;
    case '\t': fputs("\\t", f); break;
    default:
      if (*p < 0x20) fprintf(f, "\\u%04x", *p);
      else fputc(*p, f);
    }
  }
  fputc('"', f);
}

void kiln_log(kiln_log_level level, const char *fmt, ...) {
  pthread_mutex_lock(&log_lock);
  if (threshold < 0) read_environment();
  if ((int)level < threshold) {
    pthread_mutex_unlock(&log_lock);
    return;
  }
  char msg[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (text_format) {
    fprintf(stderr, "%s: %s\n", level_names[level], msg);
  } else {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[32];
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    fprintf(stderr, "{\"ts\":\"%s.%03ldZ\",\"level\":\"%s\",\"msg\":", when, ts.tv_nsec / 1000000,
            level_names[level]);
    put_json_string(stderr, msg);
    fputs("}\n", stderr);
  }
  pthread_mutex_unlock(&log_lock);
}
