/* The registry on disk: SHA-256 against NIST's vectors, labels.json parsing (each rule), label,
 * rollback and reject semantics, gc, push failures that leave nothing behind, and verification
 * catching each kind of damage. (File digests are compared with Python's hashlib by
 * tests/integration/test_registry.py.) */
#include "test.h"

#include "core/sha256.h"
#include "registry/registry_internal.h"

#include <dirent.h>
#include <ftw.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---------------------------------------------------------------- helpers */

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st, (void)flag, (void)ftw;
  return remove(path);
}

static void remove_tree(const char *dir) { CHECK(nftw(dir, remove_entry, 8, FTW_DEPTH | FTW_PHYS) == 0); }

static void write_bytes(const char *path, const void *data, size_t len) {
  FILE *f = fopen(path, "wb");
  CHECK(f != NULL);
  if (!f) return;
  CHECK(fwrite(data, 1, len, f) == len);
  CHECK(fclose(f) == 0);
}

static void write_text(const char *path, const char *text) { write_bytes(path, text, strlen(text)); }

/* Bytes that start like an ONNX ModelProto (ir_version = 8, then a producer name). */
static const char onnx_bytes[] = "\x08\x08\x12\x04kiln plus some weights";

static void make_dir(const char *fmt, const char *a, const char *b) {
  char path[1024];
  snprintf(path, sizeof path, fmt, a, b);
  CHECK(mkdir(path, 0755) == 0);
}

/* How many entries of dir start with prefix (temporaries left behind). */
static int count_prefixed(const char *dir, const char *prefix) {
  DIR *d = opendir(dir);
  if (!d) return 0;
  int n = 0;
  for (struct dirent *e; (e = readdir(d));) n += strncmp(e->d_name, prefix, strlen(prefix)) == 0;
  closedir(d);
  return n;
}

static int exists(const char *fmt, const char *dir, const char *name) {
  char path[1024];
  struct stat st;
  snprintf(path, sizeof path, fmt, dir, name);
  return lstat(path, &st) == 0;
}

/* ---------------------------------------------------------------- SHA-256 */

static void test_sha256_vectors(void) {
  /* FIPS 180-2 / NIST CSRC example vectors */
  char hex[KX_SHA256_HEX];
  kx_sha256_hex("", 0, hex);
  CHECK(strcmp(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855") == 0);
  kx_sha256_hex("abc", 3, hex);
  CHECK(strcmp(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad") == 0);
  static const char two_blocks[] = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
  kx_sha256_hex(two_blocks, sizeof two_blocks - 1, hex);
  CHECK(strcmp(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1") == 0);

  char dir[] = "/tmp/kiln_reg_sha_XXXXXX", path[256];
  CHECK(mkdtemp(dir) != NULL);
  snprintf(path, sizeof path, "%s/million_a", dir);
  char *a = malloc(1000000);
  CHECK(a != NULL);
  if (!a) return;
  memset(a, 'a', 1000000);
  write_bytes(path, a, 1000000);
  free(a);
  uint64_t bytes = 0;
  CHECK_OK(kx_sha256_file(path, hex, &bytes));
  CHECK(bytes == 1000000);
  CHECK(strcmp(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0") == 0);

  /* past the 1 MiB read size: the streamed digest equals the one-shot digest of the same bytes */
  size_t n = (3u << 20) + 5;
  uint8_t *big = malloc(n);
  CHECK(big != NULL);
  if (!big) return;
  for (size_t i = 0; i < n; i++) big[i] = (uint8_t)(i * 131 + (i >> 11));
  snprintf(path, sizeof path, "%s/big", dir);
  write_bytes(path, big, n);
  char want[KX_SHA256_HEX];
  kx_sha256_hex(big, n, want);
  free(big);
  CHECK_OK(kx_sha256_file(path, hex, &bytes));
  CHECK(bytes == n && strcmp(hex, want) == 0);

  snprintf(path, sizeof path, "%s/none", dir);
  CHECK_ERROR(kx_sha256_file(path, hex, &bytes), KILN_NOT_FOUND, "none");
  remove_tree(dir);
}

/* ---------------------------------------------------------------- labels.json */

static void bad_labels(const char *text, const char *message) {
  kiln_labels l;
  CHECK_ERROR(kiln_labels_parse(text, strlen(text), "labels.json", &l), KILN_INVALID_ARGUMENT, message);
  CHECK(l.n_labels == 0 && l.labels == NULL && l.stable_history == NULL && l.rejected == NULL);
}

static void test_labels_parse(void) {
  static const char good[] = "{\"labels\":{\"stable\":3,\"canary\":4},\"stable_history\":[1,2],"
                             "\"rejected\":[{\"version\":5,\"reason\":\"canary error rate 0.31\",\"at\":\"2026-11-26T12:00:00Z\"}]}";
  kiln_labels l;
  CHECK_OK(kiln_labels_parse(good, strlen(good), "labels.json", &l));
  CHECK(l.n_labels == 2 && kiln_labels_get(&l, "stable") == 3 && kiln_labels_get(&l, "canary") == 4 && kiln_labels_get(&l, "x") == -1);
  CHECK(l.n_history == 2 && l.stable_history[0] == 1 && l.stable_history[1] == 2);
  const kiln_rejection *r = kiln_labels_rejection(&l, 5);
  CHECK(r && strcmp(r->reason, "canary error rate 0.31") == 0 && strcmp(r->at, "2026-11-26T12:00:00Z") == 0);
  CHECK(kiln_labels_rejection(&l, 4) == NULL);
  kiln_labels_free(&l);
  CHECK_OK(kiln_labels_parse("{}", 2, "labels.json", &l));
  CHECK(l.n_labels == 0 && l.n_history == 0 && l.n_rejected == 0);
  kiln_labels_free(&l);

  bad_labels("{", "labels.json: not valid JSON");
  bad_labels("[1]", "must be a JSON object");
  bad_labels("{\"label\":{}}", "unknown key 'label'");
  bad_labels("{\"labels\":{},\"labels\":{}}", "key 'labels' appears twice");
  bad_labels("{\"labels\":[1]}", "'labels' must be an object");
  bad_labels("{\"labels\":{\"bad name\":1}}", "label 'bad name' is not a label name");
  bad_labels("{\"labels\":{\"\":1}}", "label '' is not a label name");
  bad_labels("{\"labels\":{\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\":1}}", "is not a label name");
  bad_labels("{\"labels\":{\"stable\":-1}}", "label 'stable' must name a version");
  bad_labels("{\"labels\":{\"stable\":1.5}}", "label 'stable' must name a version");
  bad_labels("{\"labels\":{\"stable\":\"3\"}}", "label 'stable' must name a version");
  bad_labels("{\"labels\":{\"stable\":1,\"stable\":2}}", "label 'stable' appears twice");
  bad_labels("{\"stable_history\":{}}", "'stable_history' must be a list");
  bad_labels("{\"stable_history\":[1,-2]}", "stable_history[1] must be a version");
  bad_labels("{\"rejected\":{}}", "'rejected' must be a list");
  bad_labels("{\"rejected\":[3]}", "rejected[0] must be an object");
  bad_labels("{\"rejected\":[{\"version\":3,\"reason\":\"r\",\"at\":\"t\",\"who\":\"x\"}]}", "unknown key 'who' in rejected[0]");
  bad_labels("{\"rejected\":[{\"version\":3,\"at\":\"t\"}]}", "rejected[0].reason must be a string");
  bad_labels("{\"rejected\":[{\"version\":3,\"reason\":\"r\"}]}", "rejected[0].at must be a time");
  bad_labels("{\"rejected\":[{\"reason\":\"r\",\"at\":\"t\"}]}", "rejected[0].version must be a whole number");
  bad_labels("{\"rejected\":[{\"version\":3,\"reason\":\"r\",\"at\":\"t\"},{\"version\":3,\"reason\":\"s\",\"at\":\"t\"}]}",
             "version 3 is rejected twice");

  /* at most 1024 entries each */
  size_t cap = 32 * 2000;
  char *text = malloc(cap);
  CHECK(text != NULL);
  if (!text) return;
  size_t len = (size_t)snprintf(text, cap, "{\"labels\":{");
  for (int i = 0; i < 1025; i++) len += (size_t)snprintf(text + len, cap - len, "%s\"l%d\":%d", i ? "," : "", i, i);
  snprintf(text + len, cap - len, "}}");
  bad_labels(text, "'labels' has more than 1024 entries");
  len = (size_t)snprintf(text, cap, "{\"stable_history\":[");
  for (int i = 0; i < 1025; i++) len += (size_t)snprintf(text + len, cap - len, "%s%d", i ? "," : "", i);
  snprintf(text + len, cap - len, "]}");
  bad_labels(text, "'stable_history' has more than 1024 entries");
  free(text);
}

/* ---------------------------------------------------------------- label, rollback, reject */

/* A model folder with version folders 1..n (empty: labels only need them to exist). */
static void make_model(char *dir, int n) {
  CHECK(mkdtemp(dir) != NULL);
  for (int v = 1; v <= n; v++) {
    char name[16];
    snprintf(name, sizeof name, "%d", v);
    make_dir("%s/%s", dir, name);
  }
}

static void test_label_semantics(void) {
  char dir[] = "/tmp/kiln_reg_labels_XXXXXX";
  make_model(dir, 5);
  kiln_labels l;
  CHECK_OK(kiln_labels_read(dir, &l)); /* no labels.json yet: empty */
  CHECK(l.n_labels == 0);
  kiln_labels_free(&l);

  CHECK_OK(kiln_registry_label(dir, 1, "stable"));
  CHECK_OK(kiln_registry_label(dir, 2, "canary"));
  CHECK_OK(kiln_registry_label(dir, 2, "stable")); /* the canary is promoted */
  CHECK_OK(kiln_labels_read(dir, &l));
  CHECK(kiln_labels_get(&l, "stable") == 2 && kiln_labels_get(&l, "canary") == -1);
  CHECK(l.n_history == 1 && l.stable_history[0] == 1);
  kiln_labels_free(&l);
  CHECK_OK(kiln_registry_label(dir, 2, "stable")); /* the same again: no history entry */
  CHECK_OK(kiln_labels_read(dir, &l));
  CHECK(l.n_history == 1);
  kiln_labels_free(&l);

  CHECK_ERROR(kiln_registry_label(dir, 9, "stable"), KILN_NOT_FOUND, "no version 9");
  CHECK_ERROR(kiln_registry_label(dir, 1, "no way"), KILN_INVALID_ARGUMENT, "not a label name");

  /* reject: its labels go, the reason stays; labelling it again is the operator's override */
  CHECK_OK(kiln_registry_label(dir, 3, "canary"));
  CHECK_OK(kiln_registry_label(dir, 3, "blue"));
  CHECK_OK(kiln_registry_reject(dir, 3, "canary error rate 0.31 > stable 0.00 + 0.01"));
  CHECK_OK(kiln_labels_read(dir, &l));
  CHECK(kiln_labels_get(&l, "canary") == -1 && kiln_labels_get(&l, "blue") == -1 && kiln_labels_get(&l, "stable") == 2);
  const kiln_rejection *r = kiln_labels_rejection(&l, 3);
  CHECK(r && strstr(r->reason, "error rate 0.31") && strlen(r->at) == 20 && r->at[19] == 'Z');
  kiln_labels_free(&l);
  CHECK_OK(kiln_registry_label(dir, 3, "canary"));
  CHECK_OK(kiln_labels_read(dir, &l));
  CHECK(kiln_labels_rejection(&l, 3) == NULL && kiln_labels_get(&l, "canary") == 3);
  kiln_labels_free(&l);
  /* a verdict that arrives after the operator promoted the version does not demote it */
  CHECK_ERROR(kiln_registry_reject(dir, 2, "too late"), KILN_FAILED_PRECONDITION, "labelled stable");
  CHECK_OK(kiln_labels_read(dir, &l));
  CHECK(kiln_labels_get(&l, "stable") == 2 && kiln_labels_rejection(&l, 2) == NULL);
  kiln_labels_free(&l);

  /* rollback: stable 2 -> 1 */
  int64_t stable = -1;
  CHECK_OK(kiln_registry_rollback(dir, &stable));
  CHECK(stable == 1);
  CHECK_OK(kiln_labels_read(dir, &l));
  CHECK(kiln_labels_get(&l, "stable") == 1 && l.n_history == 0);
  kiln_labels_free(&l);
  CHECK_ERROR(kiln_registry_rollback(dir, &stable), KILN_FAILED_PRECONDITION, "no earlier stable version");

  /* stable 1, 2, 3, 4: history [1, 2, 3]; 3 rejected, 2's folder gone: rollback passes both */
  CHECK_OK(kiln_registry_label(dir, 2, "stable"));
  CHECK_OK(kiln_registry_label(dir, 3, "stable"));
  CHECK_OK(kiln_registry_label(dir, 4, "stable"));
  CHECK_OK(kiln_registry_reject(dir, 3, "NaN outputs at warm-up"));
  char two[600];
  snprintf(two, sizeof two, "%s/2", dir);
  CHECK(rmdir(two) == 0);
  CHECK_OK(kiln_registry_rollback(dir, &stable));
  CHECK(stable == 1);
  CHECK_OK(kiln_labels_read(dir, &l));
  CHECK(kiln_labels_get(&l, "stable") == 1 && l.n_history == 0 && kiln_labels_rejection(&l, 3) != NULL);
  kiln_labels_free(&l);
  CHECK(count_prefixed(dir, ".labels.json.tmp") == 0);

  /* a damaged labels.json is reported, not overwritten */
  char path[600];
  snprintf(path, sizeof path, "%s/labels.json", dir);
  write_text(path, "{\"labels\": {\"stable\": \"one\"}}");
  CHECK_ERROR(kiln_registry_label(dir, 4, "stable"), KILN_INVALID_ARGUMENT, "labels.json: label 'stable' must name a version");
  CHECK_ERROR(kiln_labels_read(dir, &l), KILN_INVALID_ARGUMENT, "labels.json");
  remove_tree(dir);
}

/* ---------------------------------------------------------------- gc */

static void test_gc_keeps_labelled(void) {
  char dir[] = "/tmp/kiln_reg_gc_XXXXXX";
  make_model(dir, 5);
  CHECK_OK(kiln_registry_label(dir, 1, "stable"));
  CHECK_OK(kiln_registry_label(dir, 2, "canary"));
  int64_t *removed = NULL, *vs = NULL;
  int n = 0;
  CHECK_OK(kiln_registry_gc(dir, 1, &removed, &n));
  CHECK(n == 2 && removed && removed[0] == 3 && removed[1] == 4);
  free(removed);
  CHECK_OK(kiln_registry_versions(dir, &vs, &n));
  CHECK(n == 3 && vs[0] == 1 && vs[1] == 2 && vs[2] == 5);
  free(vs);
  CHECK(count_prefixed(dir, ".gc-") == 0);
  CHECK_OK(kiln_registry_gc(dir, 5, &removed, &n));
  CHECK(n == 0 && removed == NULL);
  CHECK_ERROR(kiln_registry_gc(dir, -1, &removed, &n), KILN_INVALID_ARGUMENT, "keep");
  remove_tree(dir);
  CHECK_ERROR(kiln_registry_versions(dir, &vs, &n), KILN_NOT_FOUND, "no such model folder");
}

/* ---------------------------------------------------------------- push */

static void test_push_failures(void) {
  char root[] = "/tmp/kiln_reg_push_XXXXXX", model[600], src[600];
  CHECK(mkdtemp(root) != NULL);
  snprintf(model, sizeof model, "%s/repo/m", root);
  int64_t v = -1;

  snprintf(src, sizeof src, "%s/missing.onnx", root);
  kiln_push_options o = {.model_dir = model, .source = src};
  CHECK_ERROR(kiln_registry_push(&o, &v), KILN_NOT_FOUND, "missing.onnx");

  snprintf(src, sizeof src, "%s/empty.onnx", root);
  write_bytes(src, "", 0);
  CHECK_ERROR(kiln_registry_push(&o, &v), KILN_INVALID_ARGUMENT, "empty.onnx: empty");
  snprintf(src, sizeof src, "%s/run.json", root);
  write_text(src, "{\"not\": \"a model\"}");
  CHECK_ERROR(kiln_registry_push(&o, &v), KILN_INVALID_ARGUMENT, "does not start like an ONNX model");

  /* a folder with a symbolic link, one without model.onnx */
  snprintf(src, sizeof src, "%s/folder", root);
  CHECK(mkdir(src, 0755) == 0);
  make_dir("%s/%s", src, "warmup");
  char path[700];
  snprintf(path, sizeof path, "%s/schema.json", src);
  write_text(path, "{}");
  CHECK_ERROR(kiln_registry_push(&o, &v), KILN_INVALID_ARGUMENT, "no model.onnx");
  snprintf(path, sizeof path, "%s/model.onnx", src);
  write_bytes(path, onnx_bytes, sizeof onnx_bytes - 1);
  snprintf(path, sizeof path, "%s/warmup/link", src);
  CHECK(symlink("/etc/passwd", path) == 0);
  CHECK_ERROR(kiln_registry_push(&o, &v), KILN_INVALID_ARGUMENT, "warmup/link: a symbolic link");
  CHECK(unlink(path) == 0);
  snprintf(path, sizeof path, "%s/warmup/w.bin", src);
  write_text(path, "w");

  /* bad meta and lineage */
  kiln_registry_meta dup[] = {{"owner", "a"}, {"owner", "b"}}, ctl[] = {{"note", "line\nbreak"}}, eq[] = {{"a=b", "c"}};
  o.meta = dup, o.n_meta = 2;
  CHECK_ERROR(kiln_registry_push(&o, &v), KILN_INVALID_ARGUMENT, "meta key 'owner' given twice");
  o.meta = ctl, o.n_meta = 1;
  CHECK_ERROR(kiln_registry_push(&o, &v), KILN_INVALID_ARGUMENT, "control character");
  o.meta = eq;
  CHECK_ERROR(kiln_registry_push(&o, &v), KILN_INVALID_ARGUMENT, "meta key 'a=b'");
  o.meta = NULL, o.n_meta = 0;
  o.lineage_json = "[1, 2]";
  CHECK_ERROR(kiln_registry_push(&o, &v), KILN_INVALID_ARGUMENT, "lineage: a JSON object expected");
  o.lineage_json = "{\"a\": 1} trailing";
  CHECK_ERROR(kiln_registry_push(&o, &v), KILN_INVALID_ARGUMENT, "lineage: not valid JSON");
  o.lineage_json = NULL;
  char bad_name[700];
  snprintf(bad_name, sizeof bad_name, "%s/repo/bad name", root);
  kiln_push_options bad = {.model_dir = bad_name, .source = src};
  CHECK_ERROR(kiln_registry_push(&bad, &v), KILN_INVALID_ARGUMENT, "not a model name");

  /* nothing was published and no temporary is left */
  if (exists("%s/%s", model, "")) CHECK(count_prefixed(model, ".push-") == 0 && !exists("%s/%s", model, "1"));

  CHECK_OK(kiln_registry_push(&o, &v));
  CHECK(v == 1);
  CHECK_OK(kiln_registry_push(&o, &v));
  CHECK(v == 2);
  CHECK(count_prefixed(model, ".push-") == 0);
  CHECK(exists("%s/%s", model, "2/warmup") && exists("%s/%s", model, "2/schema.json") && exists("%s/%s", model, "2/manifest.json"));
  remove_tree(root);
}

/* ---------------------------------------------------------------- verify */

static void rewrite(const char *dir, const char *file, const void *data, size_t len) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", dir, file);
  write_bytes(path, data, len);
}

static void test_verify(void) {
  char root[] = "/tmp/kiln_reg_verify_XXXXXX", src[256], model[256], version[300];
  CHECK(mkdtemp(root) != NULL);
  snprintf(src, sizeof src, "%s/src", root);
  snprintf(model, sizeof model, "%s/m", root);
  CHECK(mkdir(src, 0755) == 0);
  make_dir("%s/%s", src, "warmup");
  rewrite(src, "model.onnx", onnx_bytes, sizeof onnx_bytes - 1);
  rewrite(src, "schema.json", "{\"features\": []}", 16);
  rewrite(src, "warmup/w.bin", "\0\1\2\3", 4);
  kiln_push_options o = {.model_dir = model, .source = src};
  int64_t v;
  CHECK_OK(kiln_registry_push(&o, &v));
  snprintf(version, sizeof version, "%s/%lld", model, (long long)v);
  CHECK_OK(kiln_manifest_verify(version));

  char changed[sizeof onnx_bytes];
  memcpy(changed, onnx_bytes, sizeof onnx_bytes);
  changed[10] ^= 1;
  rewrite(version, "model.onnx", changed, sizeof onnx_bytes - 1);
  CHECK_ERROR(kiln_manifest_verify(version), KILN_FAILED_PRECONDITION, "model.onnx: SHA-256 differs from the manifest");
  rewrite(version, "model.onnx", onnx_bytes, sizeof onnx_bytes - 2); /* truncated */
  CHECK_ERROR(kiln_manifest_verify(version), KILN_FAILED_PRECONDITION, "model.onnx: 25 bytes, the manifest says 26");
  rewrite(version, "model.onnx", onnx_bytes, sizeof onnx_bytes - 1);
  CHECK_OK(kiln_manifest_verify(version));

  char path[800];
  snprintf(path, sizeof path, "%s/warmup/w.bin", version);
  CHECK(unlink(path) == 0);
  CHECK_ERROR(kiln_manifest_verify(version), KILN_FAILED_PRECONDITION, "warmup/w.bin: missing");
  rewrite(version, "warmup/w.bin", "\0\1\2\3", 4);
  CHECK_OK(kiln_manifest_verify(version));

  rewrite(version, "warmup/extra.bin", "x", 1);
  CHECK_ERROR(kiln_manifest_verify(version), KILN_FAILED_PRECONDITION, "warmup/extra.bin: not listed in the manifest");
  snprintf(path, sizeof path, "%s/warmup/extra.bin", version);
  CHECK(unlink(path) == 0);
  CHECK(symlink("model.onnx", path) == 0);
  CHECK_ERROR(kiln_manifest_verify(version), KILN_FAILED_PRECONDITION, "a symbolic link");
  CHECK(unlink(path) == 0);
  CHECK_OK(kiln_manifest_verify(version));

  char *text;
  size_t len;
  CHECK_OK(kiln_manifest_read(version, &text, &len));
  CHECK_OK(kiln_manifest_check(text, len, "manifest.json"));
  rewrite(version, "manifest.json", text, len / 2); /* cut in half */
  free(text);
  CHECK_ERROR(kiln_manifest_verify(version), KILN_INVALID_ARGUMENT, "manifest.json: not valid JSON");
  snprintf(path, sizeof path, "%s/manifest.json", version);
  CHECK(unlink(path) == 0);
  CHECK_ERROR(kiln_manifest_verify(version), KILN_NOT_FOUND, "no manifest.json");
  remove_tree(root);
}

static void bad_manifest(const char *files, const char *message) {
  char text[2048];
  snprintf(text, sizeof text, "{\"format\":1,\"name\":\"m\",\"version\":1,\"created\":\"2026-11-26T12:00:00Z\",\"files\":%s}", files);
  CHECK_ERROR(kiln_manifest_check(text, strlen(text), "manifest.json"), KILN_INVALID_ARGUMENT, message);
}

static void test_manifest_check(void) {
  static const char sha[] = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
  char files[1024];
  snprintf(files, sizeof files, "[{\"path\":\"model.onnx\",\"bytes\":0,\"sha256\":\"%s\"}]", sha);
  char text[2048];
  snprintf(text, sizeof text, "{\"format\":1,\"name\":\"m\",\"version\":1,\"created\":\"t\",\"files\":%s,\"meta\":{\"a\":\"b\"},\"lineage\":{\"x\":[1]}}", files);
  CHECK_OK(kiln_manifest_check(text, strlen(text), "manifest.json"));
  static const char *const paths[][2] = {{"../x", "'.' or '..' part"}, {"/etc/passwd", "is absolute"}, {"a//b", "empty part"},
                                         {"", "is empty"}, {"a/./b", "'.' or '..' part"}, {"manifest.json", "the manifest itself"}};
  for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
    snprintf(files, sizeof files, "[{\"path\":\"%s\",\"bytes\":0,\"sha256\":\"%s\"}]", paths[i][0], sha);
    bad_manifest(files, paths[i][1]);
  }
  snprintf(files, sizeof files, "[{\"path\":\"a\",\"bytes\":0,\"sha256\":\"%s\"},{\"path\":\"a\",\"bytes\":0,\"sha256\":\"%s\"}]", sha, sha);
  bad_manifest(files, "file a is listed twice");
  snprintf(files, sizeof files, "[{\"path\":\"a\",\"bytes\":-1,\"sha256\":\"%s\"}]", sha);
  bad_manifest(files, "files[0].bytes must be a whole number");
  bad_manifest("[{\"path\":\"a\",\"bytes\":1,\"sha256\":\"E3B0\"}]", "files[0].sha256 must be 64 lower-case hex digits");
  snprintf(files, sizeof files, "[{\"path\":\"a\",\"bytes\":1,\"sha256\":\"%s\",\"mode\":420}]", sha);
  bad_manifest(files, "unknown key 'mode' in files[0]");
  bad_manifest("{}", "'files' must be a list");
  CHECK_ERROR(kiln_manifest_check("{\"format\":2}", 12, "manifest.json"), KILN_INVALID_ARGUMENT, "'format' must be 1");
  CHECK_ERROR(kiln_manifest_check("{\"format\":1,\"extra\":1}", 23, "manifest.json"), KILN_INVALID_ARGUMENT, "unknown key 'extra'");
  CHECK_ERROR(kiln_manifest_check("nope", 4, "manifest.json"), KILN_INVALID_ARGUMENT, "manifest.json: not valid JSON");
}

static void test_version_folder(void) {
  int64_t v = -1;
  CHECK(kiln_version_folder("12", &v) && v == 12);
  CHECK(!kiln_version_folder("", &v) && !kiln_version_folder("1a", &v) && !kiln_version_folder(".push-1-0", &v));
  CHECK(!kiln_version_folder("1234567890123456789", &v)); /* 19 digits */
  CHECK(kiln_registry_model_name_ok("mnist-v2.1_a") && !kiln_registry_model_name_ok("..") && !kiln_registry_model_name_ok("a/b") &&
        !kiln_registry_model_name_ok(""));
}

TEST_MAIN(TEST(test_sha256_vectors), TEST(test_labels_parse), TEST(test_label_semantics), TEST(test_gc_keeps_labelled),
          TEST(test_push_failures), TEST(test_verify), TEST(test_manifest_check), TEST(test_version_folder))
