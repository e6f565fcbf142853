/* The registry's file-system helpers: bounded paths, walks of version folders, rm -r, timestamps. */
#include "registry/registry_internal.h"

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

kiln_status kx_path(char *buf, size_t size, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, size, fmt, ap);
  va_end(ap);
  if (n >= 0 && (size_t)n < size) return NULL;
  if (size) buf[0] = '\0';
  return kiln_error(KILN_INVALID_ARGUMENT, "a path under the model repository is longer than %zu bytes", size - 1);
}

int kx_version_exists(const char *model_dir, int64_t version) {
  char path[KX_PATH_MAX];
  struct stat st;
  return !kx_path(path, sizeof path, "%s/%lld", model_dir, (long long)version) && stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* ---------------------------------------------------------------- walks */

static kiln_status list_add(kx_file_list *l, const char *path, int max_files) {
  if (l->count >= max_files) return kiln_error(KILN_RESOURCE_EXHAUSTED, "more than %d files (the most a version may hold)", max_files);
  if (l->count == l->cap) {
    int cap = l->cap ? 2 * l->cap : 16;
    char **p = realloc(l->paths, (size_t)cap * sizeof *p);
    if (!p) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory listing files");
    l->paths = p, l->cap = cap;
  }
  if (!(l->paths[l->count] = strdup(path))) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory listing files");
  l->count++;
  return NULL;
}

/* Files under root/rel (rel "" for root itself). */
static kiln_status walk(const char *root, const char *rel, int depth, int max_files, kx_file_list *out) {
  char dir[KX_PATH_MAX];
  kiln_status s = rel[0] ? kx_path(dir, sizeof dir, "%s/%s", root, rel) : kx_path(dir, sizeof dir, "%s", root);
  if (s) return s;
  if (depth > KX_MAX_DEPTH) return kiln_error(KILN_INVALID_ARGUMENT, "%s: folders nest more than %d deep", dir, KX_MAX_DEPTH);
  DIR *d = opendir(dir);
  if (!d) return kiln_error(errno == ENOENT ? KILN_NOT_FOUND : KILN_IO, "%s: %s", dir, strerror(errno));
  for (struct dirent *e; !s;) {
    errno = 0;
    if (!(e = readdir(d))) {
      if (errno) s = kiln_error(KILN_IO, "%s: cannot list: %s", dir, strerror(errno));
      break;
    }
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    char child[KX_PATH_MAX], full[KX_PATH_MAX];
    struct stat st;
    if ((s = rel[0] ? kx_path(child, sizeof child, "%s/%s", rel, e->d_name) : kx_path(child, sizeof child, "%s", e->d_name)) ||
        (s = kx_path(full, sizeof full, "%s/%s", root, child)))
      break;
    if (lstat(full, &st) != 0) s = kiln_error(KILN_IO, "%s: %s", full, strerror(errno));
    else if (S_ISREG(st.st_mode)) s = list_add(out, child, max_files);
    else if (S_ISDIR(st.st_mode)) s = walk(root, child, depth + 1, max_files, out);
    else if (S_ISLNK(st.st_mode)) s = kiln_error(KILN_INVALID_ARGUMENT, "%s: a symbolic link (a version holds regular files only)", full);
    else s = kiln_error(KILN_INVALID_ARGUMENT, "%s: not a regular file or folder", full);
  }
  closedir(d);
  return s;
}

static int cmp_path(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

kiln_status kx_walk(const char *root, int max_files, kx_file_list *out) {
  memset(out, 0, sizeof *out);
  kiln_status s = walk(root, "", 0, max_files, out);
  if (s) {
    kx_file_list_free(out);
    return s;
  }
  if (out->count > 1) qsort(out->paths, (size_t)out->count, sizeof *out->paths, cmp_path);
  return NULL;
}

void kx_file_list_free(kx_file_list *l) {
  for (int i = 0; i < l->count; i++) free(l->paths[i]);
  free(l->paths);
  memset(l, 0, sizeof *l);
}

/* ---------------------------------------------------------------- removal */

static kiln_status remove_tree(const char *path, int depth) {
  struct stat st;
  if (lstat(path, &st) != 0) return errno == ENOENT ? NULL : kiln_error(KILN_IO, "cannot remove %s: %s", path, strerror(errno));
  if (!S_ISDIR(st.st_mode))
    return unlink(path) == 0 || errno == ENOENT ? NULL : kiln_error(KILN_IO, "cannot remove %s: %s", path, strerror(errno));
  /* deeper than anything kiln writes: someone else's tree, left alone rather than recursed into */
  if (depth > 4 * KX_MAX_DEPTH) return kiln_error(KILN_IO, "cannot remove %s: folders nest too deep", path);
  kiln_status first = NULL;
  DIR *d = opendir(path);
  if (!d) return kiln_error(KILN_IO, "cannot remove %s: %s", path, strerror(errno));
  for (struct dirent *e; (e = readdir(d));) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    char child[KX_PATH_MAX];
    kiln_status s = kx_path(child, sizeof child, "%s/%s", path, e->d_name);
    if (!s) s = remove_tree(child, depth + 1);
    if (s && !first) first = s;
    else kiln_status_free(s);
  }
  closedir(d);
  if (rmdir(path) != 0 && errno != ENOENT && !first) first = kiln_error(KILN_IO, "cannot remove %s: %s", path, strerror(errno));
  return first;
}

kiln_status kx_remove_tree(const char *path) { return remove_tree(path, 0); }
