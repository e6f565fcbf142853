/* RFC 3339 UTC timestamps. */
#include "core/utc.h"

#include <stdio.h>

void kx_utc_format(const struct timespec *ts, int millis, char out[KX_UTC_SIZE]) {
  struct tm tm;
  if (!gmtime_r(&ts->tv_sec, &tm)) {
    snprintf(out, KX_UTC_SIZE, millis ? "1970-01-01T00:00:00.000Z" : "1970-01-01T00:00:00Z");
    return;
  }
  char when[24];
  strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
  if (millis) snprintf(out, KX_UTC_SIZE, "%s.%03dZ", when, (int)(ts->tv_nsec / 1000000 % 1000));
  else snprintf(out, KX_UTC_SIZE, "%sZ", when);
}

void kx_utc_now(int millis, char out[KX_UTC_SIZE]) {
  struct timespec ts = {0, 0};
  clock_gettime(CLOCK_REALTIME, &ts);
  kx_utc_format(&ts, millis, out);
}
