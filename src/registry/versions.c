/* A model's version folders: what counts as one, listing them, and garbage collection. */
#include "registry/registry_internal.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* More version folders than any repository keeps; a bound on what a listing allocates. */
#define MAX_VERSIONS (1 << 20)

int kiln_version_folder(const char *name, int64_t *version) {
  size_t len = strlen(name);
  if (len == 0 || len > 18 || strspn(name, "0123456789") != len) return 0;
  *version = strtoll(name, NULL, 10);
  return 1;
}

static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

kiln_status kiln_registry_versions(const char *model_dir, int64_t **out, int *n) {
  *out = NULL;
  *n = 0;
  DIR *d = opendir(model_dir);
  if (!d)
    return kiln_error(errno == ENOENT ? KILN_NOT_FOUND : KILN_IO, "%s: %s", model_dir, errno == ENOENT ? "no such model folder" : strerror(errno));
  int64_t *vs = NULL;
  int count = 0, cap = 0;
  kiln_status s = NULL;
  for (struct dirent *e; !s && (e = readdir(d));) {
    int64_t v;
    char path[KX_PATH_MAX];
    struct stat st;
    if (!kiln_version_folder(e->d_name, &v) || kx_path(path, sizeof path, "%s/%s", model_dir, e->d_name) || stat(path, &st) != 0 ||
        !S_ISDIR(st.st_mode))
      continue;
    if (count == MAX_VERSIONS) s = kiln_error(KILN_RESOURCE_EXHAUSTED, "%s: more than %d versions", model_dir, MAX_VERSIONS);
    else if (count == cap) {
      cap = cap ? 2 * cap : 16;
      int64_t *p = realloc(vs, (size_t)cap * sizeof *p);
      if (!p) s = kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory listing %s", model_dir);
      else vs = p;
    }
    if (!s) vs[count++] = v;
  }
  closedir(d);
  if (s) {
    free(vs);
    return s;
  }
  if (count > 1) qsort(vs, (size_t)count, sizeof *vs, cmp_i64);
  *out = vs;
  *n = count;
  return NULL;
}

static int labelled(const kiln_labels *l, int64_t v) {
  for (int i = 0; i < l->n_labels; i++)
    if (l->labels[i].version == v) return 1;
  return 0;
}

/* Takes a version out of sight first (a rename to a hidden name is atomic), then deletes it: a
 * crash half-way leaves a hidden folder, never half a version under its number. */
static kiln_status remove_version(const char *model_dir, int64_t v) {
  char from[KX_PATH_MAX], to[KX_PATH_MAX];
  kiln_status s = kx_path(from, sizeof from, "%s/%lld", model_dir, (long long)v);
  if (!s) s = kx_path(to, sizeof to, "%s/.gc-%lld-%ld", model_dir, (long long)v, (long)getpid());
  if (s) return s;
  if (rename(from, to) != 0) return kiln_error(KILN_IO, "cannot move %s out of the way: %s", from, strerror(errno));
  s = kiln_dir_sync(model_dir);
  kiln_status r = kx_remove_tree(to);
  if (s) kiln_status_free(r);
  return s ? s : r;
}

kiln_status kiln_registry_gc(const char *model_dir, int keep, int64_t **removed, int *n_removed) {
  *removed = NULL;
  *n_removed = 0;
  if (keep < 0) return kiln_error(KILN_INVALID_ARGUMENT, "gc: keep must be 0 or more, not %d", keep);
  int64_t *vs = NULL;
  int n = 0, lock = -1;
  kiln_labels labels = {0};
  kiln_status s = kiln_registry_versions(model_dir, &vs, &n); /* also: the model folder exists */
  free(vs);
  vs = NULL;
  if (!s) s = kx_model_lock(model_dir, &lock);
  if (!s) s = kiln_registry_versions(model_dir, &vs, &n); /* again, now that no push can add one */
  if (!s) s = kiln_labels_read(model_dir, &labels);
  int64_t *out = NULL;
  if (!s && n > keep && !(out = malloc((size_t)(n - keep) * sizeof *out))) s = kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  for (int i = 0; !s && i < n - keep; i++) {
    if (labelled(&labels, vs[i])) continue;
    s = remove_version(model_dir, vs[i]);
    if (!s || !kx_version_exists(model_dir, vs[i])) out[(*n_removed)++] = vs[i]; /* gone from sight even if not all deleted */
  }
  kx_model_unlock(lock);
  kiln_labels_free(&labels);
  free(vs);
  if (*n_removed == 0) free(out);
  else *removed = out;
  return s;
}
