/* manifest.json: its parser and checker (fuzzed), and the verification of a version folder against it. */
#include "registry/registry_internal.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

/* A listed file; the strings point into the parsed JSON. */
typedef struct manifest_file {
  const char *path, *sha256;
  uint64_t bytes;
} manifest_file;

typedef struct manifest {
  cJSON *root;
  manifest_file *files; /* sorted by path */
  int n_files;
} manifest;

static void manifest_free(manifest *m) {
  cJSON_Delete(m->root);
  free(m->files);
  memset(m, 0, sizeof *m);
}

/* A JSON integer in [0, KX_MAX_VERSION]. */
static int whole_number(const cJSON *v, int64_t *out) {
  if (!cJSON_IsNumber(v)) return 0;
  double d = v->valuedouble;
  if (!isfinite(d) || d < 0 || d > (double)KX_MAX_VERSION || floor(d) != d) return 0;
  *out = (int64_t)d;
  return 1;
}

static int is_hex64(const char *s) {
  size_t n = strlen(s);
  return n == 64 && strspn(s, "0123456789abcdef") == 64;
}

/* A path relative to the version folder, '/'-separated, with no empty, "." or ".." part and no
 * control character, short enough for any file system; manifest.json itself is not listed. */
static const char *path_problem(const char *p) {
  size_t n = strlen(p);
  if (n == 0) return "is empty";
  if (n > 1024) return "is longer than 1024 bytes";
  if (p[0] == '/') return "is absolute";
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)p[i] < 0x20 || p[i] == 0x7f) return "holds a control character";
  for (const char *part = p;;) {
    const char *slash = strchr(part, '/');
    size_t len = slash ? (size_t)(slash - part) : strlen(part);
    if (len == 0) return "has an empty part";
    if ((len == 1 && part[0] == '.') || (len == 2 && part[0] == '.' && part[1] == '.')) return "has a '.' or '..' part";
    if (!slash) break;
    part = slash + 1;
  }
  if (strcmp(p, "manifest.json") == 0) return "is the manifest itself";
  return NULL;
}

static int cmp_file(const void *a, const void *b) { return strcmp(((const manifest_file *)a)->path, ((const manifest_file *)b)->path); }

/* Each key of an object at most once, and only the known ones. */
static kiln_status check_keys(const cJSON *obj, const char *const *known, const char *name, const char *where) {
  for (const cJSON *a = obj->child; a; a = a->next) {
    int ok = 0;
    for (int i = 0; known[i] && !ok; i++) ok = strcmp(a->string, known[i]) == 0;
    if (!ok) return kiln_error(KILN_INVALID_ARGUMENT, "%s: unknown key '%s'%s", name, a->string, where);
    for (const cJSON *b = obj->child; b != a; b = b->next)
      if (strcmp(a->string, b->string) == 0) return kiln_error(KILN_INVALID_ARGUMENT, "%s: key '%s' appears twice%s", name, a->string, where);
  }
  return NULL;
}

/* An object whose values are all strings (libraries, meta). */
static kiln_status string_object(const cJSON *o, const char *name, const char *key) {
  if (!o) return NULL;
  if (!cJSON_IsObject(o)) return kiln_error(KILN_INVALID_ARGUMENT, "%s: '%s' must be an object", name, key);
  int n = 0;
  for (const cJSON *v = o->child; v; v = v->next, n++) {
    if (!cJSON_IsString(v)) return kiln_error(KILN_INVALID_ARGUMENT, "%s: %s.%s must be a string", name, key, v->string);
    if (n >= 1024) return kiln_error(KILN_INVALID_ARGUMENT, "%s: '%s' has more than 1024 keys", name, key);
    for (const cJSON *b = o->child; b != v; b = b->next)
      if (strcmp(v->string, b->string) == 0) return kiln_error(KILN_INVALID_ARGUMENT, "%s: %s.%s appears twice", name, key, v->string);
  }
  return NULL;
}

static kiln_status parse_files(manifest *m, const cJSON *files, const char *name) {
  if (!cJSON_IsArray(files)) return kiln_error(KILN_INVALID_ARGUMENT, "%s: 'files' must be a list of {\"path\", \"bytes\", \"sha256\"}", name);
  int n = cJSON_GetArraySize(files);
  if (n > KX_MAX_VERSION_FILES) return kiln_error(KILN_INVALID_ARGUMENT, "%s: %d files, more than the %d a version may hold", name, n, KX_MAX_VERSION_FILES);
  if (n > 0 && !(m->files = calloc((size_t)n, sizeof *m->files))) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory reading %s", name);
  static const char *const keys[] = {"path", "bytes", "sha256", NULL};
  int i = 0;
  for (const cJSON *f = files->child; f; f = f->next, i++) {
    char where[48];
    snprintf(where, sizeof where, " in files[%d]", i);
    if (!cJSON_IsObject(f)) return kiln_error(KILN_INVALID_ARGUMENT, "%s: files[%d] must be an object", name, i);
    kiln_status s = check_keys(f, keys, name, where);
    if (s) return s;
    const cJSON *path = cJSON_GetObjectItemCaseSensitive(f, "path"), *bytes = cJSON_GetObjectItemCaseSensitive(f, "bytes"),
                *sha = cJSON_GetObjectItemCaseSensitive(f, "sha256");
    int64_t size;
    if (!cJSON_IsString(path)) return kiln_error(KILN_INVALID_ARGUMENT, "%s: files[%d].path must be a string", name, i);
    const char *problem = path_problem(path->valuestring);
    if (problem) return kiln_error(KILN_INVALID_ARGUMENT, "%s: files[%d].path %s (a path relative to the version folder)", name, i, problem);
    if (!whole_number(bytes, &size))
      return kiln_error(KILN_INVALID_ARGUMENT, "%s: files[%d].bytes must be a whole number of bytes (0 to 2^53)", name, i);
    if (!cJSON_IsString(sha) || !is_hex64(sha->valuestring))
      return kiln_error(KILN_INVALID_ARGUMENT, "%s: files[%d].sha256 must be 64 lower-case hex digits", name, i);
    m->files[i] = (manifest_file){path->valuestring, sha->valuestring, (uint64_t)size};
  }
  m->n_files = n;
  if (n > 1) qsort(m->files, (size_t)n, sizeof *m->files, cmp_file);
  for (int k = 1; k < n; k++)
    if (strcmp(m->files[k - 1].path, m->files[k].path) == 0)
      return kiln_error(KILN_INVALID_ARGUMENT, "%s: file %s is listed twice", name, m->files[k].path);
  return NULL;
}

static kiln_status parse(const char *text, size_t len, const char *name, manifest *m) {
  memset(m, 0, sizeof *m);
  if (len > KX_MAX_MANIFEST_BYTES)
    return kiln_error(KILN_INVALID_ARGUMENT, "%s: %zu bytes, more than a manifest may have (%zu)", name, len, KX_MAX_MANIFEST_BYTES);
  m->root = cJSON_ParseWithLength(text, len);
  if (!m->root) return kiln_error(KILN_INVALID_ARGUMENT, "%s: not valid JSON", name);
  const cJSON *r = m->root;
  if (!cJSON_IsObject(r)) return kiln_error(KILN_INVALID_ARGUMENT, "%s: must be a JSON object", name);
  static const char *const keys[] = {"format", "name", "version", "created", "kiln_version", "libraries", "files", "meta", "lineage", NULL};
  kiln_status s = check_keys(r, keys, name, "");
  if (s) return s;
  const cJSON *format = cJSON_GetObjectItemCaseSensitive(r, "format"), *model = cJSON_GetObjectItemCaseSensitive(r, "name"),
              *version = cJSON_GetObjectItemCaseSensitive(r, "version"), *created = cJSON_GetObjectItemCaseSensitive(r, "created"),
              *kv = cJSON_GetObjectItemCaseSensitive(r, "kiln_version"), *lineage = cJSON_GetObjectItemCaseSensitive(r, "lineage");
  int64_t v;
  if (!cJSON_IsNumber(format) || format->valuedouble != 1)
    return kiln_error(KILN_INVALID_ARGUMENT, "%s: 'format' must be 1 (the manifest format this kiln reads)", name);
  if (!cJSON_IsString(model) || !kiln_registry_model_name_ok(model->valuestring))
    return kiln_error(KILN_INVALID_ARGUMENT, "%s: 'name' must be a model name ([A-Za-z0-9_.-], 1 to 128 characters)", name);
  if (!whole_number(version, &v)) return kiln_error(KILN_INVALID_ARGUMENT, "%s: 'version' must be a whole number (0 to 2^53)", name);
  if (!cJSON_IsString(created) || strlen(created->valuestring) > 64)
    return kiln_error(KILN_INVALID_ARGUMENT, "%s: 'created' must be a time (RFC 3339 UTC)", name);
  if (kv && !cJSON_IsString(kv)) return kiln_error(KILN_INVALID_ARGUMENT, "%s: 'kiln_version' must be a string", name);
  if (lineage && !cJSON_IsObject(lineage)) return kiln_error(KILN_INVALID_ARGUMENT, "%s: 'lineage' must be an object", name);
  if ((s = string_object(cJSON_GetObjectItemCaseSensitive(r, "libraries"), name, "libraries")) ||
      (s = string_object(cJSON_GetObjectItemCaseSensitive(r, "meta"), name, "meta")))
    return s;
  const cJSON *files = cJSON_GetObjectItemCaseSensitive(r, "files");
  if (!files) return kiln_error(KILN_INVALID_ARGUMENT, "%s: missing 'files'", name);
  return parse_files(m, files, name);
}

kiln_status kiln_manifest_check(const char *text, size_t len, const char *name) {
  manifest m;
  kiln_status s = parse(text, len, name, &m);
  manifest_free(&m);
  return s;
}

kiln_status kiln_manifest_read(const char *version_dir, char **out, size_t *len) {
  char path[KX_PATH_MAX];
  kiln_status s = kx_path(path, sizeof path, "%s/manifest.json", version_dir);
  void *text = NULL;
  if (!s) s = kiln_file_read(path, KX_MAX_MANIFEST_BYTES, &text, len);
  if (s) return s;
  *out = text;
  return NULL;
}

/* ---------------------------------------------------------------- verification */

static int listed(const manifest *m, const char *path) {
  manifest_file key = {.path = path};
  return m->n_files > 0 && bsearch(&key, m->files, (size_t)m->n_files, sizeof key, cmp_file) != NULL;
}

/* One listed file: present, its size, then (the costly part) its digest. */
static kiln_status verify_file(const char *version_dir, const manifest_file *f) {
  char path[KX_PATH_MAX], hex[65];
  kiln_status s = kx_path(path, sizeof path, "%s/%s", version_dir, f->path);
  if (s) return s;
  struct stat st;
  if (lstat(path, &st) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) return kiln_error(KILN_FAILED_PRECONDITION, "%s: missing (the manifest lists it)", f->path);
    return kiln_error(KILN_IO, "%s: %s", path, strerror(errno));
  }
  if (!S_ISREG(st.st_mode)) return kiln_error(KILN_FAILED_PRECONDITION, "%s: not a regular file (the manifest lists a file)", f->path);
  if ((uint64_t)st.st_size != f->bytes)
    return kiln_error(KILN_FAILED_PRECONDITION, "%s: %llu bytes, the manifest says %llu (truncated, grown or half-copied)", f->path,
                      (unsigned long long)st.st_size, (unsigned long long)f->bytes);
  uint64_t bytes;
  if ((s = kx_sha256_file(path, hex, &bytes))) return s;
  if (bytes != f->bytes)
    return kiln_error(KILN_FAILED_PRECONDITION, "%s: %llu bytes, the manifest says %llu (changed while being read)", f->path,
                      (unsigned long long)bytes, (unsigned long long)f->bytes);
  if (strcmp(hex, f->sha256) != 0)
    return kiln_error(KILN_FAILED_PRECONDITION, "%s: SHA-256 differs from the manifest (tampered with or half-copied)", f->path);
  return NULL;
}

kiln_status kiln_manifest_verify(const char *version_dir) {
  char *text;
  size_t len;
  kiln_status s = kiln_manifest_read(version_dir, &text, &len);
  if (s) {
    if (kiln_status_code(s) != KILN_NOT_FOUND) return s;
    kiln_status_free(s);
    return kiln_error(KILN_NOT_FOUND, "%s: no manifest.json (an unverified version)", version_dir);
  }
  manifest m;
  s = parse(text, len, "manifest.json", &m);
  free(text);
  kx_file_list present = {0};
  if (!s && (s = kx_walk(version_dir, KX_MAX_VERSION_FILES + 1, &present))) {
    /* a symbolic link or a special file inside a version is a mismatch, not an I/O failure */
    if (kiln_status_code(s) == KILN_INVALID_ARGUMENT || kiln_status_code(s) == KILN_RESOURCE_EXHAUSTED) {
      kiln_status mismatch = kiln_error(KILN_FAILED_PRECONDITION, "%s", kiln_status_message(s));
      kiln_status_free(s);
      s = mismatch;
    }
  }
  for (int i = 0; !s && i < present.count; i++)
    if (strcmp(present.paths[i], "manifest.json") != 0 && !listed(&m, present.paths[i]))
      s = kiln_error(KILN_FAILED_PRECONDITION, "%s: not listed in the manifest (a file added after the push)", present.paths[i]);
  for (int i = 0; !s && i < m.n_files; i++) s = verify_file(version_dir, &m.files[i]);
  kx_file_list_free(&present);
  manifest_free(&m);
  return s;
}
