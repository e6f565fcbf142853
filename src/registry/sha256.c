/* SHA-256 of files, streamed (nettle), in the hex form manifests store. */
#include "core/sha256.h"
#include "registry/registry_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nettle/sha2.h>

/* Large enough that a GB-sized model costs few system calls, small enough to keep off the stack. */
#define CHUNK ((size_t)1 << 20)

kiln_status kx_sha256_file(const char *path, char hex[65], uint64_t *bytes) {
  int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0)
    return kiln_error(errno == ENOENT ? KILN_NOT_FOUND : KILN_IO, "%s: %s", path,
                      errno == ELOOP ? "a symbolic link" : strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return kiln_error(KILN_IO, "%s: not a regular file", path);
  }
  uint8_t *buf = malloc(CHUNK);
  if (!buf) {
    close(fd);
    return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory hashing %s", path);
  }
  struct sha256_ctx ctx;
  sha256_init(&ctx);
  uint64_t total = 0;
  kiln_status s = NULL;
  for (;;) {
    ssize_t n = read(fd, buf, CHUNK);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      s = kiln_error(KILN_IO, "%s: read failed after %llu bytes: %s", path, (unsigned long long)total, strerror(errno));
      break;
    }
    if (n == 0) break;
    sha256_update(&ctx, (size_t)n, buf);
    total += (uint64_t)n;
  }
  free(buf);
  close(fd);
  if (s) return s;
  uint8_t digest[SHA256_DIGEST_SIZE];
  sha256_digest(&ctx, sizeof digest, digest);
  kx_sha256_to_hex(digest, hex);
  *bytes = total;
  return NULL;
}
