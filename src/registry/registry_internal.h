/* Helpers shared by the registry's files: SHA-256, the model lock, paths, folder walks and removal. */
#ifndef KILN_REGISTRY_INTERNAL_H
#define KILN_REGISTRY_INTERNAL_H

#include "kiln/registry.h"

#include <stdint.h>

/* At most this many files in a version (model.onnx, preprocess.json, warmup/...). */
#define KX_MAX_VERSION_FILES 4096
/* Sub-folders nest at most this deep in a pushed or verified version. */
#define KX_MAX_DEPTH 16
/* Versions, labels and rejections are exchanged as JSON numbers: above 2^53 a double no longer
 * holds every integer, so no version beyond it can be labelled or recorded. */
#define KX_MAX_VERSION ((int64_t)1 << 53)
/* manifest.json is read whole; 4096 entries take well under a MiB, meta and lineage the rest. */
#define KX_MAX_MANIFEST_BYTES ((size_t)16 << 20)
#define KX_MAX_LABELS_BYTES ((size_t)4 << 20)
#define KX_PATH_MAX 4096

/* ---------------------------------------------------------------- SHA-256 */

/* Streams a file through SHA-256 in 1 MiB reads (models are GBs): its digest and its size. A
 * symbolic link is refused (O_NOFOLLOW) rather than followed out of the version folder. */
kiln_status kx_sha256_file(const char *path, char hex[65], uint64_t *bytes);

/* ---------------------------------------------------------------- lock */

/* An exclusive flock on MODEL_DIR/.lock (created when missing; the folder must exist), held until
 * kx_model_unlock; *fd is the lock's descriptor. Serialises a model's read-modify-write across
 * processes: the CLI, `kiln train --export` and the server's rollbacks. */
kiln_status kx_model_lock(const char *model_dir, int *fd);
void kx_model_unlock(int fd);

/* ---------------------------------------------------------------- paths and folders */

/* snprintf into buf; INVALID_ARGUMENT naming the path when it does not fit. */
kiln_status kx_path(char *buf, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Whether MODEL_DIR/<version> is a folder. */
int kx_version_exists(const char *model_dir, int64_t version);

/* One regular file found by kx_walk: its path relative to the walked root ('/' separated). */
typedef struct kx_file_list {
  char **paths;
  int count, cap;
} kx_file_list;

/* Lists every regular file under root (recursively, at most KX_MAX_DEPTH deep), sorted by path.
 * Refuses symbolic links and other file types (naming them, relative to root) and more than
 * `max_files` files (RESOURCE_EXHAUSTED); errors name the path at fault. */
kiln_status kx_walk(const char *root, int max_files, kx_file_list *out);
void kx_file_list_free(kx_file_list *l);

/* rm -r of a folder without following symbolic links; the first failure is reported, but the
 * removal goes on with the rest. */
kiln_status kx_remove_tree(const char *path);

/* ---------------------------------------------------------------- labels */

/* labels.json text (formatted JSON, as documented in registry.h); *out is malloc'd. */
kiln_status kx_labels_format(const kiln_labels *l, char **out);
/* Replaces MODEL_DIR/labels.json atomically (call under the model's lock). */
kiln_status kx_labels_write(const char *model_dir, const kiln_labels *l);
/* Whether `name` is a label name: [A-Za-z0-9_.-]{1,64}. */
int kx_label_name_ok(const char *name);

#endif
