/* RFC 3339 UTC timestamps (internal to kiln): log lines, audit lines, manifests and labels all
 * write time this one way. */
#ifndef KILN_CORE_UTC_H
#define KILN_CORE_UTC_H

#include <time.h>

#define KX_UTC_SIZE 40

/* "2026-11-26T12:00:00Z", or "2026-11-26T12:00:00.123Z" with millis; a time that cannot be
 * broken down gives the obvious placeholder 1970-01-01T00:00:00Z. */
void kx_utc_format(const struct timespec *ts, int millis, char out[KX_UTC_SIZE]);
/* The current time (CLOCK_REALTIME), formatted so. */
void kx_utc_now(int millis, char out[KX_UTC_SIZE]);

#endif
