/* The per-model writer lock: an exclusive flock on REPO/NAME/.lock. */
#include "registry/registry_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

kiln_status kx_model_lock(const char *model_dir, int *fd) {
  char path[KX_PATH_MAX];
  kiln_status s = kx_path(path, sizeof path, "%s/.lock", model_dir);
  if (s) return s;
  int f = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (f < 0) return kiln_error(errno == ENOENT ? KILN_NOT_FOUND : KILN_IO, "cannot open the model's lock %s: %s", path, strerror(errno));
  while (flock(f, LOCK_EX) != 0) {
    if (errno == EINTR) continue;
    s = kiln_error(KILN_IO, "cannot lock %s: %s", path, strerror(errno));
    close(f);
    return s;
  }
  *fd = f;
  return NULL;
}

/* Closing the descriptor releases the flock. */
void kx_model_unlock(int fd) {
  if (fd >= 0) close(fd);
}
