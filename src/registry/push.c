/* kiln_registry_push: a model (an .onnx file or a folder) copied into the next version folder with
 * its manifest, atomically: copied and fsynced into a hidden temporary folder, then renamed. */
#include "core/buf.h"
#include "core/sha256.h"
#include "core/utc.h"
#include "registry/registry_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <nettle/sha2.h>
#include <nettle/version.h>
#include <protobuf-c/protobuf-c.h>
#include <zlib.h>

#define CHUNK ((size_t)1 << 20)
#define MAX_META 256
#define MAX_META_KEY 128
#define MAX_META_VALUE 4096
#define MAX_LINEAGE_BYTES ((size_t)1 << 20)

/* A copied file: where it came from, where it sits in the version, and what the manifest says. */
typedef struct pushed_file {
  char *from, *path;
  uint64_t bytes;
  char sha256[65];
} pushed_file;

typedef struct push_job {
  const kiln_push_options *opt;
  const char *name; /* the model: model_dir's last part */
  pushed_file *files;
  int n_files;
  cJSON *lineage;
  char tmp[KX_PATH_MAX]; /* "" until created */
} push_job;

static void job_free(push_job *j) {
  for (int i = 0; i < j->n_files; i++) free(j->files[i].from), free(j->files[i].path);
  free(j->files);
  cJSON_Delete(j->lineage);
}

/* ---------------------------------------------------------------- checks before copying */

/* ONNX files are protobuf ModelProtos: the first field's tag must be one of ModelProto's
 * (ir_version, producer_*, domain, model_version, doc_string, graph, opset_import, metadata_props,
 * training_info, functions) with its wire type. Catches a wrong file (JSON, text, a checkpoint)
 * without parsing what may be gigabytes. */
static kiln_status check_onnx(const char *path) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return kiln_error(errno == ENOENT ? KILN_NOT_FOUND : KILN_IO, "%s: %s", path, strerror(errno));
  uint8_t head[10];
  ssize_t n;
  do n = read(fd, head, sizeof head);
  while (n < 0 && errno == EINTR);
  int err = errno;
  close(fd);
  if (n < 0) return kiln_error(KILN_IO, "%s: %s", path, strerror(err));
  if (n == 0) return kiln_error(KILN_INVALID_ARGUMENT, "%s: empty (an ONNX model was expected)", path);
  uint64_t tag = 0;
  int i = 0;
  for (; i < n && i < 5; i++) {
    tag |= (uint64_t)(head[i] & 0x7f) << (7 * i);
    if (!(head[i] & 0x80)) break;
  }
  static const struct {
    unsigned field, wire;
  } fields[] = {{1, 0}, {2, 2}, {3, 2}, {4, 2}, {5, 0}, {6, 2}, {7, 2}, {8, 2}, {14, 2}, {20, 2}, {25, 2}};
  int ok = 0;
  for (size_t k = 0; k < sizeof fields / sizeof fields[0] && i < n; k++) ok |= tag >> 3 == fields[k].field && (tag & 7) == fields[k].wire;
  if (!ok) return kiln_error(KILN_INVALID_ARGUMENT, "%s: does not start like an ONNX model (a protobuf ModelProto)", path);
  return NULL;
}

static kiln_status check_meta(const kiln_push_options *opt) {
  if (opt->n_meta < 0 || opt->n_meta > MAX_META) return kiln_error(KILN_INVALID_ARGUMENT, "at most %d meta entries", MAX_META);
  for (int i = 0; i < opt->n_meta; i++) {
    const char *k = opt->meta[i].key, *v = opt->meta[i].value;
    if (!k || !v) return kiln_error(KILN_INVALID_ARGUMENT, "meta entry %d has no key or no value", i);
    size_t kn = strlen(k), vn = strlen(v);
    if (kn == 0 || kn > MAX_META_KEY) return kiln_error(KILN_INVALID_ARGUMENT, "meta key '%s': 1 to %d characters expected", k, MAX_META_KEY);
    for (size_t c = 0; c < kn; c++)
      if (k[c] <= ' ' || k[c] > '~' || k[c] == '=')
        return kiln_error(KILN_INVALID_ARGUMENT, "meta key '%s': printable ASCII without spaces or '=' expected", k);
    if (vn > MAX_META_VALUE) return kiln_error(KILN_INVALID_ARGUMENT, "meta %s: the value is longer than %d bytes", k, MAX_META_VALUE);
    for (size_t c = 0; c < vn; c++)
      if ((unsigned char)v[c] < 0x20 || v[c] == 0x7f) return kiln_error(KILN_INVALID_ARGUMENT, "meta %s: the value holds a control character", k);
    if (!kx_is_utf8(v, vn)) return kiln_error(KILN_INVALID_ARGUMENT, "meta %s: the value is not UTF-8", k);
    for (int j = 0; j < i; j++)
      if (strcmp(opt->meta[j].key, k) == 0) return kiln_error(KILN_INVALID_ARGUMENT, "meta key '%s' given twice", k);
  }
  return NULL;
}

static kiln_status parse_lineage(push_job *j) {
  const char *text = j->opt->lineage_json;
  if (!text) return NULL;
  size_t len = strlen(text);
  if (len > MAX_LINEAGE_BYTES) return kiln_error(KILN_INVALID_ARGUMENT, "lineage: %zu bytes, more than %zu", len, MAX_LINEAGE_BYTES);
  const char *end = NULL;
  j->lineage = cJSON_ParseWithOpts(text, &end, 1);
  if (!j->lineage) return kiln_error(KILN_INVALID_ARGUMENT, "lineage: not valid JSON");
  if (!cJSON_IsObject(j->lineage)) return kiln_error(KILN_INVALID_ARGUMENT, "lineage: a JSON object expected");
  return NULL;
}

static kiln_status add_file(push_job *j, const char *from, const char *path) {
  pushed_file *f = realloc(j->files, (size_t)(j->n_files + 1) * sizeof *f);
  if (!f) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  j->files = f;
  f += j->n_files;
  memset(f, 0, sizeof *f);
  f->from = strdup(from), f->path = strdup(path);
  j->n_files++;
  return f->from && f->path ? NULL : kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
}

/* The files to copy: the .onnx file as model.onnx, or a folder's regular files (a manifest.json
 * in it is left behind: the version gets its own). */
static kiln_status list_source(push_job *j) {
  const char *src = j->opt->source;
  struct stat st;
  if (stat(src, &st) != 0)
    return kiln_error(errno == ENOENT ? KILN_NOT_FOUND : KILN_IO, "%s: %s", src, errno == ENOENT ? "no such file or folder" : strerror(errno));
  if (S_ISREG(st.st_mode)) {
    kiln_status s = check_onnx(src);
    return s ? s : add_file(j, src, "model.onnx");
  }
  if (!S_ISDIR(st.st_mode)) return kiln_error(KILN_INVALID_ARGUMENT, "%s: an .onnx file or a folder holding model.onnx expected", src);
  kx_file_list list;
  kiln_status s = kx_walk(src, KX_MAX_VERSION_FILES + 1, &list);
  if (s) return kiln_status_prefix(s, "push: ");
  int has_model = 0, n = 0;
  for (int i = 0; !s && i < list.count; i++) {
    if (strcmp(list.paths[i], "manifest.json") == 0) continue;
    has_model |= strcmp(list.paths[i], "model.onnx") == 0;
    if (++n > KX_MAX_VERSION_FILES) s = kiln_error(KILN_RESOURCE_EXHAUSTED, "%s: more than %d files (the most a version may hold)", src, KX_MAX_VERSION_FILES);
    char from[KX_PATH_MAX];
    if (!s) s = kx_path(from, sizeof from, "%s/%s", src, list.paths[i]);
    if (!s) s = add_file(j, from, list.paths[i]);
  }
  kx_file_list_free(&list);
  if (!s && !has_model) s = kiln_error(KILN_INVALID_ARGUMENT, "%s: no model.onnx in the folder", src);
  char model[KX_PATH_MAX];
  if (!s && !(s = kx_path(model, sizeof model, "%s/model.onnx", src))) s = check_onnx(model);
  return s;
}

/* ---------------------------------------------------------------- copying */

static kiln_status write_all(int fd, const char *path, const uint8_t *p, size_t len) {
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return kiln_error(KILN_IO, "%s: cannot write: %s", path, n < 0 ? strerror(errno) : "no progress");
    p += n, len -= (size_t)n;
  }
  return NULL;
}

/* Copies f->from to dst, hashing what it writes, and fsyncs it. */
static kiln_status copy_file(pushed_file *f, const char *dst, int follow, uint8_t *buf) {
  int in = open(f->from, O_RDONLY | O_CLOEXEC | (follow ? 0 : O_NOFOLLOW));
  if (in < 0) return kiln_error(KILN_IO, "%s: %s", f->from, strerror(errno));
  int out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
  if (out < 0) {
    kiln_status s = kiln_error(KILN_IO, "cannot create %s: %s", dst, strerror(errno));
    close(in);
    return s;
  }
  struct sha256_ctx ctx;
  sha256_init(&ctx);
  kiln_status s = NULL;
  uint64_t total = 0;
  while (!s) {
    ssize_t n = read(in, buf, CHUNK);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) s = kiln_error(KILN_IO, "%s: read failed: %s", f->from, strerror(errno));
    if (n <= 0) break;
    sha256_update(&ctx, (size_t)n, buf);
    total += (uint64_t)n;
    s = write_all(out, dst, buf, (size_t)n);
  }
  if (!s && fsync(out) != 0) s = kiln_error(KILN_IO, "%s: fsync failed: %s", dst, strerror(errno));
  if (close(out) != 0 && !s) s = kiln_error(KILN_IO, "%s: close failed: %s", dst, strerror(errno));
  close(in);
  if (s) return s;
  uint8_t digest[SHA256_DIGEST_SIZE];
  sha256_digest(&ctx, sizeof digest, digest);
  kx_sha256_to_hex(digest, f->sha256);
  f->bytes = total;
  return NULL;
}

/* Creates the folders above tmp/rel (fsynced later with the whole tree). */
static kiln_status make_parents(const char *tmp, const char *rel) {
  char path[KX_PATH_MAX];
  kiln_status s = kx_path(path, sizeof path, "%s/%s", tmp, rel);
  if (s) return s;
  for (char *p = path + strlen(tmp) + 1; (p = strchr(p, '/')); p++) {
    *p = '\0';
    if (mkdir(path, 0777) != 0 && errno != EEXIST) s = kiln_error(KILN_IO, "cannot create %s: %s", path, strerror(errno));
    *p = '/';
    if (s) return s;
  }
  return NULL;
}

/* Every folder of the copy, deepest first, so that each rename and creation is durable. */
static kiln_status sync_tree(const push_job *j) {
  for (int i = 0; i < j->n_files; i++) {
    char dir[KX_PATH_MAX];
    kiln_status s = kx_path(dir, sizeof dir, "%s/%s", j->tmp, j->files[i].path);
    for (char *slash; !s && (slash = strrchr(dir, '/')) && slash > dir + strlen(j->tmp);) {
      *slash = '\0';
      s = kiln_dir_sync(dir);
    }
    if (s) return s;
  }
  return kiln_dir_sync(j->tmp);
}

static kiln_status copy_all(push_job *j) {
  uint8_t *buf = malloc(CHUNK);
  if (!buf) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  kiln_status s = NULL;
  int single = j->n_files == 1 && strcmp(j->files[0].from, j->opt->source) == 0;
  for (int i = 0; !s && i < j->n_files; i++) {
    char dst[KX_PATH_MAX];
    if (!(s = make_parents(j->tmp, j->files[i].path)) && !(s = kx_path(dst, sizeof dst, "%s/%s", j->tmp, j->files[i].path)))
      s = copy_file(&j->files[i], dst, single, buf);
  }
  free(buf);
  return s;
}

/* ---------------------------------------------------------------- manifest and rename */

static char *manifest_text(const push_job *j, int64_t version) {
  char created[KX_UTC_SIZE], nettle[32];
  kx_utc_now(0, created);
  snprintf(nettle, sizeof nettle, "%d.%d", nettle_version_major(), nettle_version_minor());
  cJSON *m = cJSON_CreateObject(), *libs = NULL, *files = NULL, *meta = NULL;
  int ok = m && cJSON_AddNumberToObject(m, "format", 1) && cJSON_AddStringToObject(m, "name", j->name) &&
           cJSON_AddNumberToObject(m, "version", (double)version) && cJSON_AddStringToObject(m, "created", created) &&
           cJSON_AddStringToObject(m, "kiln_version", kiln_version()) && (libs = cJSON_AddObjectToObject(m, "libraries")) &&
           cJSON_AddStringToObject(libs, "protobuf-c", protobuf_c_version()) && cJSON_AddStringToObject(libs, "cjson", cJSON_Version()) &&
           cJSON_AddStringToObject(libs, "zlib", zlibVersion()) && cJSON_AddStringToObject(libs, "nettle", nettle) &&
           (files = cJSON_AddArrayToObject(m, "files"));
  for (int i = 0; ok && i < j->n_files; i++) {
    cJSON *f = cJSON_CreateObject();
    if (!f || !cJSON_AddItemToArray(files, f)) { /* not attached: ours to free */
      cJSON_Delete(f);
      ok = 0;
      break;
    }
    ok = cJSON_AddStringToObject(f, "path", j->files[i].path) && cJSON_AddNumberToObject(f, "bytes", (double)j->files[i].bytes) &&
         cJSON_AddStringToObject(f, "sha256", j->files[i].sha256);
  }
  ok = ok && (meta = cJSON_AddObjectToObject(m, "meta"));
  for (int i = 0; ok && i < j->opt->n_meta; i++) ok = cJSON_AddStringToObject(meta, j->opt->meta[i].key, j->opt->meta[i].value) != NULL;
  if (ok && j->lineage) {
    cJSON *copy = cJSON_Duplicate(j->lineage, 1);
    ok = copy && cJSON_AddItemToObject(m, "lineage", copy);
    if (copy && !ok) cJSON_Delete(copy);
  }
  char *text = ok ? cJSON_Print(m) : NULL;
  cJSON_Delete(m);
  return text;
}

/* Under the model's lock: the next number, the manifest, then the rename that publishes it. */
static kiln_status publish(push_job *j, int64_t *version) {
  int lock;
  kiln_status s = kx_model_lock(j->opt->model_dir, &lock);
  if (s) return s;
  int64_t *versions = NULL, v = 1;
  int n = 0;
  s = kiln_registry_versions(j->opt->model_dir, &versions, &n);
  if (!s && n > 0) v = versions[n - 1] + 1;
  free(versions);
  if (!s && v > KX_MAX_VERSION) s = kiln_error(KILN_OUT_OF_RANGE, "%s: version %lld is the highest a registry numbers", j->opt->model_dir, (long long)(v - 1));
  char path[KX_PATH_MAX], final[KX_PATH_MAX];
  char *text = s ? NULL : manifest_text(j, v);
  if (!s && !text) s = kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory writing the manifest");
  if (!s) s = kx_path(path, sizeof path, "%s/manifest.json", j->tmp);
  if (!s) s = kiln_file_write_atomic(path, text, strlen(text));
  free(text);
  if (!s) s = sync_tree(j);
  if (!s) s = kx_path(final, sizeof final, "%s/%lld", j->opt->model_dir, (long long)v);
  if (!s && rename(j->tmp, final) != 0) s = kiln_error(KILN_IO, "cannot rename %s to %s: %s", j->tmp, final, strerror(errno));
  if (!s) {
    j->tmp[0] = '\0'; /* published: no longer ours to remove */
    *version = v;
    s = kiln_dir_sync(j->opt->model_dir);
  }
  kx_model_unlock(lock);
  return s;
}

static kiln_status make_temp(push_job *j) {
  for (int n = 0; n < 1000; n++) {
    kiln_status s = kx_path(j->tmp, sizeof j->tmp, "%s/.push-%ld-%d", j->opt->model_dir, (long)getpid(), n);
    if (s) return s;
    if (mkdir(j->tmp, 0777) == 0) return NULL;
    if (errno != EEXIST) {
      s = kiln_error(KILN_IO, "cannot create %s: %s", j->tmp, strerror(errno));
      j->tmp[0] = '\0';
      return s;
    }
  }
  j->tmp[0] = '\0';
  return kiln_error(KILN_IO, "%s: no free temporary folder name (.push-%ld-*)", j->opt->model_dir, (long)getpid());
}

int kiln_registry_model_name_ok(const char *name) {
  size_t n = name ? strlen(name) : 0;
  return n >= 1 && n <= 128 && strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-") == n &&
         strcmp(name, ".") != 0 && strcmp(name, "..") != 0;
}

/* The model's name: model_dir's last part (trailing slashes aside). */
static kiln_status model_name(const char *dir, char *out, size_t size) {
  size_t end = strlen(dir);
  while (end > 1 && dir[end - 1] == '/') end--;
  size_t start = end;
  while (start > 0 && dir[start - 1] != '/') start--;
  if (end - start >= size) return kiln_error(KILN_INVALID_ARGUMENT, "%s: the model name is longer than 128 characters", dir);
  memcpy(out, dir + start, end - start);
  out[end - start] = '\0';
  if (!kiln_registry_model_name_ok(out))
    return kiln_error(KILN_INVALID_ARGUMENT, "%s: '%s' is not a model name ([A-Za-z0-9_.-], 1 to 128 characters, not . or ..)", dir, out);
  return NULL;
}

kiln_status kiln_registry_push(const kiln_push_options *opt, int64_t *version) {
  if (!opt || !opt->model_dir || !opt->source) return kiln_error(KILN_INVALID_ARGUMENT, "push: a model folder and a source are required");
  char name[130];
  push_job j = {.opt = opt, .name = name};
  kiln_status s = model_name(opt->model_dir, name, sizeof name);
  if (!s) s = check_meta(opt);
  if (!s) s = parse_lineage(&j);
  if (!s) s = list_source(&j);
  if (!s) s = kiln_dir_create(opt->model_dir);
  if (!s) s = make_temp(&j);
  if (!s) s = copy_all(&j);
  if (!s) s = publish(&j, version);
  if (j.tmp[0]) {
    kiln_status r = kx_remove_tree(j.tmp);
    if (r && !s) s = r;
    else kiln_status_free(r);
  }
  job_free(&j);
  return s;
}
