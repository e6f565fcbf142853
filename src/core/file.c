/* Whole-file reads with a size limit, shared by every loader, and atomic whole-file writes. */
#include "kiln/core.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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

/* ---------------------------------------------------------------- atomic writes */

/* Distinguishes temporaries of threads of one process; the pid distinguishes processes. */
static atomic_uint temp_counter;

static kiln_status write_all(int fd, const char *tmp, const void *data, size_t len) {
  const char *p = data;
  while (len > 0) {
    ssize_t n = write(fd, p, len > ((size_t)1 << 30) ? ((size_t)1 << 30) : len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return kiln_error(KILN_IO, "%s: cannot write: %s", tmp, n < 0 ? strerror(errno) : "no progress");
    p += n;
    len -= (size_t)n;
  }
  return NULL;
}

static int is_dir(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

kiln_status kiln_dir_create(const char *dir) {
  char *p = strdup(dir);
  if (!p) return kiln_error(KILN_RESOURCE_EXHAUSTED, "%s: out of memory", dir);
  kiln_status e = NULL;
  for (char *s = p + 1; !e; s++) {
    char c = *s;
    if (c != '/' && c != '\0') continue;
    *s = '\0';
    int err = mkdir(p, 0777) != 0 ? errno : 0;
    /* mkdir may say EACCES or EROFS about a directory that exists: only a missing one counts */
    if (err && err != EEXIST && !is_dir(p)) e = kiln_error(KILN_IO, "cannot create the directory %s: %s", p, strerror(err));
    *s = c;
    if (!c) break;
  }
  free(p);
  if (!e && !is_dir(dir)) e = kiln_error(KILN_IO, "%s exists but is not a directory (or cannot be searched)", dir);
  return e;
}

/* Filesystems that cannot sync a directory say EINVAL; their renames are as durable as they get. */
kiln_status kiln_dir_sync(const char *dir) {
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return kiln_error(KILN_IO, "%s: cannot open the directory to sync it: %s", dir, strerror(errno));
  int failed = fsync(fd) != 0 && errno != EINVAL;
  int err = errno;
  close(fd);
  if (failed) return kiln_error(KILN_IO, "%s: cannot sync the directory: %s", dir, strerror(err));
  return NULL;
}

kiln_status kiln_file_write_atomic_parts(const char *path, const void *const *parts, const size_t *lens, int n) {
  if (!path || n < 0 || (n > 0 && (!parts || !lens)))
    return kiln_error(KILN_INVALID_ARGUMENT, "atomic write: a path and %d parts with their lengths expected", n);
  for (int i = 0; i < n; i++)
    if (lens[i] > 0 && !parts[i])
      return kiln_error(KILN_INVALID_ARGUMENT, "%s: part %d of %zu bytes has no data", path, i, lens[i]);
  const char *slash = strrchr(path, '/');
  const char *base = slash ? slash + 1 : path;
  size_t dir_len = slash ? (size_t)(slash - path) : 0;
  if (*base == '\0' || strcmp(base, ".") == 0 || strcmp(base, "..") == 0)
    return kiln_error(KILN_INVALID_ARGUMENT, "%s: not a file name", path);

  size_t cap = strlen(path) + 64;
  char *dir = malloc(dir_len + 2), *tmp = malloc(cap);
  if (!dir || !tmp) {
    free(dir);
    free(tmp);
    return kiln_error(KILN_RESOURCE_EXHAUSTED, "%s: out of memory", path);
  }
  if (slash) {
    memcpy(dir, path, dir_len);
    if (dir_len == 0) dir[dir_len++] = '/'; /* "/name" lives in "/" */
    dir[dir_len] = '\0';
  } else {
    strcpy(dir, ".");
  }

  /* O_EXCL under a fresh name rather than mkstemp: mkstemp's 0600 would make the file's mode
   * depend on whether it was written atomically. */
  int fd = -1;
  for (int attempt = 0; attempt < 100 && fd < 0; attempt++) {
    snprintf(tmp, cap, "%.*s.%s.tmp.%ld.%u", (int)(base - path), path, base, (long)getpid(),
             atomic_fetch_add(&temp_counter, 1));
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0 && errno != EEXIST) break;
  }
  if (fd < 0) {
    int err = errno;
    free(dir);
    kiln_status e = kiln_error(err == ENOENT ? KILN_NOT_FOUND : KILN_IO, "%s: cannot create a temporary file: %s",
                               tmp, strerror(err));
    free(tmp);
    return e;
  }
  kiln_status e = NULL;
  for (int i = 0; i < n && !e; i++) e = write_all(fd, tmp, parts[i], lens[i]);
  if (!e && fsync(fd) != 0) e = kiln_error(KILN_IO, "%s: cannot sync: %s", tmp, strerror(errno));
  if (close(fd) != 0 && !e) e = kiln_error(KILN_IO, "%s: cannot close: %s", tmp, strerror(errno));
  if (!e && rename(tmp, path) != 0) e = kiln_error(KILN_IO, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
  if (e) unlink(tmp);
  else e = kiln_dir_sync(dir);
  free(dir);
  free(tmp);
  return e;
}

kiln_status kiln_file_write_atomic(const char *path, const void *data, size_t len) {
  const void *parts[1] = {data};
  return kiln_file_write_atomic_parts(path, parts, &len, 1);
}
