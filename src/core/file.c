/* Whole-file reads with a size limit, shared by every loader. */
#include "kiln/core.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

kiln_status kiln_file_read(const char *path, size_t limit, void **out, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f)
    return kiln_error(errno == ENOENT ? KILN_NOT_FOUND : KILN_IO, "%s: %s", path, strerror(errno));
  struct stat st;
  if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
    fclose(f);
    return kiln_error(KILN_IO, "%s: not a regular file", path);
  }
  size_t size = (size_t)st.st_size;
  if (limit && size > limit) {
    fclose(f);
    return kiln_error(KILN_RESOURCE_EXHAUSTED, "%s: %zu bytes is more than the limit of %zu", path,
                      size, limit);
  }
  char *buf = malloc(size + 1);
  if (!buf) {
    fclose(f);
    return kiln_error(KILN_RESOURCE_EXHAUSTED, "%s: out of memory reading %zu bytes", path, size);
  }
  size_t got = fread(buf, 1, size, f);
  int err = ferror(f);
  fclose(f);
  if (err || got != size) {
    free(buf);
    return kiln_error(KILN_IO, "%s: read %zu of %zu bytes", path, got, size);
  }
  buf[size] = '\0';
  *out = buf;
  *len = size;
  return NULL;
}
