/* Trainer checkpoints: the file layout against checkpoint.h's description (with an independent
 * bitwise CRC-32C), round trips, keeping the newest K, finding the newest valid one past damaged
 * ones, and writes that fail (read-only directory, a directory in the way, a full disk). */
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test.h"
#include "train/checkpoint.h"

/* ---------------------------------------------------------------- helpers */

/* CRC-32C from its definition (reflected polynomial 0x82F63B78), bit by bit. */
static uint32_t ref_crc32c(const uint8_t *p, size_t n) {
  uint32_t crc = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; i++) {
    crc ^= p[i];
    for (int b = 0; b < 8; b++) crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1)));
  }
  return ~crc;
}

static uint64_t le64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
  return v;
}
static void set_le32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void set_le64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
/* Recomputes the trailer, so that a test reaches the checks behind the checksum. */
static void reseal(uint8_t *b, size_t len) { set_le32(b + len - 4, ref_crc32c(b, len - 4)); }

static char *path_in(const char *dir, const char *name) {
  static char buf[4][256];
  static int next;
  char *p = buf[next++ % 4];
  CHECK(snprintf(p, sizeof buf[0], "%s/%s", dir, name) < (int)sizeof buf[0]);
  return p;
}

static char *ckpt_name(int64_t step) {
  static char buf[4][32];
  static int next;
  char *p = buf[next++ % 4];
  snprintf(p, sizeof buf[0], "ckpt-%010lld.kiln", (long long)step);
  return p;
}

/* The entries of dir (no "." or ".."), sorted, joined by spaces. */
static char *listing(const char *dir) {
  static char out[2048];
  char names[64][64];
  int n = 0;
  out[0] = '\0';
  DIR *d = opendir(dir);
  if (!d) return strcpy(out, "(none)");
  for (struct dirent *e; (e = readdir(d)) && n < 64;)
    if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) snprintf(names[n++], 64, "%.63s", e->d_name);
  closedir(d);
  qsort(names, (size_t)n, sizeof names[0], (int (*)(const void *, const void *))strcmp);
  for (int i = 0; i < n; i++) {
    size_t used = strlen(out);
    snprintf(out + used, sizeof out - used, "%s%s", i ? " " : "", names[i]);
  }
  return out;
}

static void remove_tree(const char *dir) {
  char cmd[512];
  snprintf(cmd, sizeof cmd, "chmod -R u+w '%s' 2>/dev/null; rm -rf '%s'", dir, dir);
  CHECK(system(cmd) == 0);
}

static char *make_temp_dir(void) {
  static char dirs[8][64];
  static int next;
  char *d = dirs[next++ % 8];
  strcpy(d, "/tmp/kiln_test_ckpt_XXXXXX");
  CHECK(mkdtemp(d) != NULL);
  return d;
}

/* Captures what kiln_log writes to stderr between begin and end. */
typedef struct capture {
  int saved, fd;
  char path[64];
  char text[8192];
} capture;

static void capture_begin(capture *c) {
  strcpy(c->path, "/tmp/kiln_test_ckpt_log_XXXXXX");
  c->fd = mkstemp(c->path);
  CHECK(c->fd >= 0);
  fflush(stderr);
  c->saved = dup(STDERR_FILENO);
  CHECK(dup2(c->fd, STDERR_FILENO) == STDERR_FILENO);
}

static void capture_end(capture *c) {
  fflush(stderr);
  dup2(c->saved, STDERR_FILENO);
  close(c->saved);
  ssize_t n = pread(c->fd, c->text, sizeof c->text - 1, 0);
  c->text[n > 0 ? n : 0] = '\0';
  close(c->fd);
  unlink(c->path);
}

/* A checkpoint with recognisable sections: "weights" (floats), "rng" and an empty one. */
static float weights[300];
static const uint8_t rng_state[13] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13};

static kiln_status write_step(const char *dir, int64_t step, int keep) {
  for (int i = 0; i < 300; i++) weights[i] = (float)i * 0.5f + (float)step;
  const kx_ckpt_section s[] = {
      {"weights", weights, sizeof weights},
      {"rng", rng_state, sizeof rng_state},
      {"empty", NULL, 0},
  };
  return kx_ckpt_write(dir, step, s, 3, keep);
}

/* ---------------------------------------------------------------- tests */

static void test_reference_crc(void) { CHECK(ref_crc32c((const uint8_t *)"123456789", 9) == 0xE3069283u); }

/* The bytes on disk are what checkpoint.h describes, and read back section by section. */
static void test_layout_and_round_trip(void) {
  char *root = make_temp_dir();
  char dir[256];
  snprintf(dir, sizeof dir, "%s/runs/a/checkpoints", root); /* parents are created */
  char long_name[64];
  memset(long_name, 'n', 63);
  long_name[63] = '\0';
  float w[5] = {1.5f, -2.0f, 3.25f, 0.0f, 1e-30f};
  const kx_ckpt_section s[] = {
      {"rng", "abc", 3},
      {"weights", w, sizeof w},
      {"empty", NULL, 0},
      {long_name, "z", 1},
  };
  CHECK_OK(kx_ckpt_write(dir, 42, s, 4, 3));
  CHECK(strcmp(listing(dir), "ckpt-0000000042.kiln") == 0);

  void *raw = NULL;
  size_t len = 0;
  CHECK_OK(kiln_file_read(path_in(dir, "ckpt-0000000042.kiln"), 0, &raw, &len));
  if (len != 517) {
    CHECK(len == 517);
    free(raw);
    return;
  }
  const uint8_t *b = raw;
  /* header 32 + table 4 * 80 = 352; "rng" at 384 (3 bytes), "weights" at 448 (20), "empty" at
   * 512 (0), the long name at 512 (1), trailer at 513 */
  CHECK(memcmp(b, "KILNCKPT\x01\0\0\0\x04\0\0\0", 16) == 0);
  CHECK(le64(b + 16) == 517 && le64(b + 24) == 42);
  static const uint64_t want_offset[] = {384, 448, 512, 512}, want_len[] = {3, 20, 0, 1};
  for (int i = 0; i < 4; i++) {
    const uint8_t *e = b + 32 + 80 * i;
    CHECK(strcmp((const char *)e, s[i].name) == 0);
    CHECK(le64(e + 64) == want_offset[i] && le64(e + 72) == want_len[i]);
    for (size_t k = strlen(s[i].name); k < 64; k++) CHECK(e[k] == 0);
  }
  CHECK(memcmp(b + 384, "abc", 3) == 0 && memcmp(b + 448, w, 20) == 0 && b[512] == 'z');
  for (size_t k = 387; k < 448; k++) CHECK(b[k] == 0);
  uint32_t crc = (uint32_t)b[513] | (uint32_t)b[514] << 8 | (uint32_t)b[515] << 16 | (uint32_t)b[516] << 24;
  CHECK(crc == ref_crc32c(b, 513));
  free(raw);

  kx_ckpt *c = NULL;
  CHECK_OK(kx_ckpt_latest(dir, &c));
  CHECK(c != NULL);
  if (c) {
    CHECK(kx_ckpt_step(c) == 42);
    CHECK(strcmp(kx_ckpt_path(c), path_in(dir, "ckpt-0000000042.kiln")) == 0);
    CHECK(kx_ckpt_count(c) == 4 && strcmp(kx_ckpt_name(c, 1), "weights") == 0 && kx_ckpt_name(c, 4) == NULL);
    size_t n = 99;
    const float *got = kx_ckpt_get(c, "weights", &n);
    CHECK(got && n == sizeof w && ((uintptr_t)got % 64) == 0 && memcmp(got, w, sizeof w) == 0);
    const char *r = kx_ckpt_get(c, "rng", &n);
    CHECK(r && n == 3 && memcmp(r, "abc", 3) == 0 && ((uintptr_t)r % 64) == 0);
    CHECK(kx_ckpt_get(c, "empty", &n) != NULL && n == 0);
    CHECK(kx_ckpt_get(c, long_name, &n) != NULL && n == 1);
    n = 99;
    CHECK(kx_ckpt_get(c, "missing", &n) == NULL && n == 0);
    CHECK(kx_ckpt_get(c, "weight", NULL) == NULL);
    kx_ckpt_free(c);
  }

  /* no sections at all is a valid checkpoint too */
  CHECK_OK(kx_ckpt_write(dir, 43, NULL, 0, 0));
  CHECK_OK(kx_ckpt_read(path_in(dir, "ckpt-0000000043.kiln"), &c));
  if (c) CHECK(kx_ckpt_count(c) == 0 && kx_ckpt_step(c) == 43);
  kx_ckpt_free(c);
  remove_tree(root);
}

/* Only the newest K stay; the one just written stays even below newer ones; other files are left
 * alone and stale temporaries of checkpoints go. */
static void test_keep(void) {
  char *dir = make_temp_dir();
  CHECK_OK(kiln_file_write_atomic(path_in(dir, "notes.txt"), "x", 1));
  CHECK_OK(kiln_file_write_atomic(path_in(dir, "ckpt-12.kiln"), "x", 1));
  CHECK_OK(kiln_file_write_atomic(path_in(dir, "ckpt-0000000001.kiln.bak"), "x", 1));
  CHECK_OK(kiln_file_write_atomic(path_in(dir, ".ckpt-0000000007.kiln.tmp.123.0"), "x", 1));
  for (int step = 1; step <= 5; step++) CHECK_OK(write_step(dir, step, 3));
  CHECK(strcmp(listing(dir), "ckpt-0000000001.kiln.bak ckpt-0000000003.kiln ckpt-0000000004.kiln "
                             "ckpt-0000000005.kiln ckpt-12.kiln notes.txt") == 0);
  CHECK_OK(write_step(dir, 2, 3));
  CHECK(strcmp(listing(dir), "ckpt-0000000001.kiln.bak ckpt-0000000002.kiln ckpt-0000000004.kiln "
                             "ckpt-0000000005.kiln ckpt-12.kiln notes.txt") == 0);
  CHECK_OK(write_step(dir, 6, 1));
  CHECK(strcmp(listing(dir), "ckpt-0000000001.kiln.bak ckpt-0000000006.kiln ckpt-12.kiln notes.txt") == 0);
  for (int step = 7; step <= 9; step++) CHECK_OK(write_step(dir, step, 0));
  CHECK(strstr(listing(dir), "ckpt-0000000006.kiln ckpt-0000000007.kiln ckpt-0000000008.kiln ckpt-0000000009.kiln"));
  /* rewriting a step replaces it */
  CHECK_OK(write_step(dir, 9, 0));
  kx_ckpt *c = NULL;
  CHECK_OK(kx_ckpt_latest(dir, &c));
  CHECK(c && kx_ckpt_step(c) == 9);
  size_t n;
  const float *w = c ? kx_ckpt_get(c, "weights", &n) : NULL;
  CHECK(w && n == sizeof weights && w[2] == 10.0f);
  kx_ckpt_free(c);
  remove_tree(dir);
}

/* Damaged newer checkpoints are each warned about by name and reason; the newest valid one wins. */
static void test_latest_skips_damaged(void) {
  char *dir = make_temp_dir();
  for (int step = 1; step <= 4; step++) CHECK_OK(write_step(dir, step, 0));
  /* 4: cut short, as by a crash of a writer that did not rename */
  CHECK(truncate(path_in(dir, ckpt_name(4)), 700) == 0);
  /* 3: one flipped bit in the weights */
  int fd = open(path_in(dir, ckpt_name(3)), O_RDWR);
  CHECK(fd >= 0);
  uint8_t byte;
  CHECK(pread(fd, &byte, 1, 1000) == 1);
  byte ^= 0x10;
  CHECK(pwrite(fd, &byte, 1, 1000) == 1);
  /* 2: not a checkpoint at all */
  close(fd);
  fd = open(path_in(dir, ckpt_name(2)), O_RDWR);
  CHECK(fd >= 0 && pwrite(fd, "KILNCKPX", 8, 0) == 8);
  close(fd);
  /* 6: a valid checkpoint under another step's name; 5: a directory */
  CHECK(link(path_in(dir, ckpt_name(1)), path_in(dir, ckpt_name(6))) == 0);
  CHECK(mkdir(path_in(dir, ckpt_name(5)), 0755) == 0);

  capture cap;
  kx_ckpt *c = NULL;
  capture_begin(&cap);
  kiln_status s = kx_ckpt_latest(dir, &c);
  capture_end(&cap);
  CHECK_OK(s);
  CHECK(c && kx_ckpt_step(c) == 1);
  size_t n;
  const float *w = c ? kx_ckpt_get(c, "weights", &n) : NULL;
  CHECK(w && n == sizeof weights && w[299] == 149.5f + 1.0f);
  kx_ckpt_free(c);
  const char *want[] = {
      "ckpt-0000000006.kiln: the header says step 1, the name step 6",
      "ckpt-0000000005.kiln: not a regular file",
      "ckpt-0000000004.kiln: truncated: the header says 1604 bytes, the file has 700",
      "ckpt-0000000003.kiln: checksum mismatch",
      "ckpt-0000000002.kiln: not a kiln checkpoint: no KILNCKPT magic",
  };
  const char *at = cap.text;
  for (int i = 0; i < 5; i++) { /* newest first, one warning each */
    const char *hit = strstr(at, want[i]);
    if (!hit) fprintf(stderr, "missing warning '%s' in:\n%s\n", want[i], cap.text);
    CHECK(hit != NULL);
    if (hit) at = hit;
  }
  int warnings = 0;
  for (const char *p = cap.text; (p = strstr(p, "skipping an invalid checkpoint")); p++) warnings++;
  CHECK(warnings == 5);
  CHECK(strstr(cap.text, "ckpt-0000000001") == NULL);

  /* when none is valid: an error, not a silent fresh start */
  CHECK(unlink(path_in(dir, ckpt_name(1))) == 0);
  capture_begin(&cap);
  s = kx_ckpt_latest(dir, &c);
  capture_end(&cap);
  CHECK_ERROR(s, KILN_INVALID_ARGUMENT, "none of its 5 checkpoints is valid");
  CHECK(c == NULL);
  remove_tree(dir);
}

static void test_latest_empty_or_missing(void) {
  char *dir = make_temp_dir();
  kx_ckpt *c = (kx_ckpt *)1;
  CHECK_OK(kx_ckpt_latest(dir, &c));
  CHECK(c == NULL);
  CHECK_OK(kiln_file_write_atomic(path_in(dir, "README"), "x", 1));
  c = (kx_ckpt *)1;
  CHECK_OK(kx_ckpt_latest(dir, &c));
  CHECK(c == NULL);
  c = (kx_ckpt *)1;
  CHECK_OK(kx_ckpt_latest(path_in(dir, "nothing/here"), &c));
  CHECK(c == NULL);
  CHECK_ERROR(kx_ckpt_latest(path_in(dir, "README"), &c), KILN_IO, "README: Not a directory");
  CHECK_ERROR(kx_ckpt_read(path_in(dir, "nope.kiln"), &c), KILN_NOT_FOUND, "nope.kiln");
  remove_tree(dir);
}

/* Writes that fail leave the directory's checkpoints as they were and no temporary behind. */
static void test_failed_writes(void) {
  char *dir = make_temp_dir();
  for (int step = 1; step <= 2; step++) CHECK_OK(write_step(dir, step, 2));
  char before[2048];
  snprintf(before, sizeof before, "%s", listing(dir));

  if (geteuid() != 0) {
    CHECK(chmod(dir, 0500) == 0);
    CHECK_ERROR(write_step(dir, 3, 2), KILN_IO, "Permission denied");
    CHECK(chmod(dir, 0700) == 0);
  } else { /* root ignores permissions: make the directory's path a regular file instead */
    char file_dir[300];
    snprintf(file_dir, sizeof file_dir, "%s/file", dir);
    CHECK_OK(kiln_file_write_atomic(file_dir, "x", 1));
    CHECK_ERROR(write_step(file_dir, 3, 2), KILN_IO, "/file exists but is not a directory");
    CHECK_ERROR(write_step(path_in(dir, "file/sub"), 3, 2), KILN_IO, "Not a directory");
    CHECK(unlink(file_dir) == 0);
  }
  CHECK(strcmp(listing(dir), before) == 0);

  /* a directory where the new file should go: the rename fails after the data is written */
  CHECK(mkdir(path_in(dir, ckpt_name(3)), 0755) == 0);
  CHECK_ERROR(write_step(dir, 3, 2), KILN_IO, "cannot rename");
  CHECK(rmdir(path_in(dir, ckpt_name(3))) == 0);
  CHECK(strcmp(listing(dir), before) == 0);

  /* a disk that fills up mid-file (RLIMIT_FSIZE: EFBIG on the write that crosses it) */
  struct rlimit old, small;
  CHECK(getrlimit(RLIMIT_FSIZE, &old) == 0);
  void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN);
  small = old;
  small.rlim_cur = 1000;
  CHECK(setrlimit(RLIMIT_FSIZE, &small) == 0);
  kiln_status s = write_step(dir, 3, 2);
  CHECK(setrlimit(RLIMIT_FSIZE, &old) == 0);
  signal(SIGXFSZ, old_handler);
  CHECK_ERROR(s, KILN_IO, "File too large");
  CHECK(strcmp(listing(dir), before) == 0);

  kx_ckpt *c = NULL;
  CHECK_OK(kx_ckpt_latest(dir, &c));
  CHECK(c && kx_ckpt_step(c) == 2);
  kx_ckpt_free(c);
  remove_tree(dir);
}

static void test_write_arguments(void) {
  char *dir = make_temp_dir();
  char long_name[65];
  memset(long_name, 'n', 64);
  long_name[64] = '\0';
  kx_ckpt_section s[2] = {{"a", "x", 1}, {"a", "y", 1}};
  CHECK_ERROR(kx_ckpt_write(dir, 1, s, 2, 0), KILN_INVALID_ARGUMENT, "sections 0 and 1 are both named 'a'");
  s[1].name = long_name;
  CHECK_ERROR(kx_ckpt_write(dir, 1, s, 2, 0), KILN_INVALID_ARGUMENT, "section 1: a name of 1..63 bytes expected, got 64");
  s[1].name = "";
  CHECK_ERROR(kx_ckpt_write(dir, 1, s, 2, 0), KILN_INVALID_ARGUMENT, "got 0");
  s[1] = (kx_ckpt_section){"b", NULL, 4};
  CHECK_ERROR(kx_ckpt_write(dir, 1, s, 2, 0), KILN_INVALID_ARGUMENT, "'b': 4 bytes without data");
  CHECK_ERROR(kx_ckpt_write(dir, -1, s, 1, 0), KILN_INVALID_ARGUMENT, "step -1");
  CHECK_ERROR(kx_ckpt_write(dir, KX_CKPT_MAX_STEP + 1, s, 1, 0), KILN_INVALID_ARGUMENT, "step 10000000000");
  CHECK_ERROR(kx_ckpt_write(dir, 1, s, 1025, 0), KILN_INVALID_ARGUMENT, "1025 sections");
  CHECK(strcmp(listing(dir), "") == 0);
  CHECK_OK(kx_ckpt_write(dir, KX_CKPT_MAX_STEP, s, 1, 0));
  CHECK(strcmp(listing(dir), "ckpt-9999999999.kiln") == 0);
  remove_tree(dir);
}

/* Malformed tables behind a valid checksum (resealed), and damage in front of it. */
static void test_parse_errors(void) {
  char *dir = make_temp_dir();
  const kx_ckpt_section s[] = {{"a", "0123456789", 10}, {"b", "xy", 2}};
  CHECK_OK(kx_ckpt_write(dir, 7, s, 2, 0));
  void *raw = NULL;
  size_t len = 0;
  CHECK_OK(kiln_file_read(path_in(dir, ckpt_name(7)), 0, &raw, &len));
  /* 32 + 160 = 192: "a" at 192, "b" at 256, trailer at 258 */
  if (len != 262) {
    CHECK(len == 262);
    free(raw);
    return;
  }
  uint8_t *good = raw, b[262];
  kx_ckpt *c = NULL;
  CHECK_OK(kx_ckpt_parse(good, len, "good", &c));
  kx_ckpt_free(c);

#define BAD(edit, code, text)                                         \
  do {                                                                \
    memcpy(b, good, len);                                             \
    edit;                                                             \
    reseal(b, len);                                                   \
    CHECK_ERROR(kx_ckpt_parse(b, len, "bad.kiln", &c), code, text);   \
    CHECK(c == NULL);                                                 \
  } while (0)
  BAD(set_le32(b + 8, 2), KILN_UNIMPLEMENTED, "bad.kiln: format version 2, this kiln reads version 1");
  BAD(set_le32(b + 12, 1025), KILN_INVALID_ARGUMENT, "1025 sections, at most 1024");
  BAD(set_le32(b + 12, 4), KILN_INVALID_ARGUMENT, "the table of 4 sections needs 352 bytes, the file has 258");
  BAD(set_le64(b + 24, (uint64_t)-5), KILN_INVALID_ARGUMENT, "step -5");
  BAD(b[32] = 0, KILN_INVALID_ARGUMENT, "section 0: the name must be 1..63 bytes");
  BAD(memset(b + 32, 'x', 64), KILN_INVALID_ARGUMENT, "section 0: the name must be 1..63 bytes and NUL-terminated");
  BAD(b[112] = 'a', KILN_INVALID_ARGUMENT, "sections 0 and 1 are both named 'a'");
  BAD(set_le64(b + 96, 200), KILN_INVALID_ARGUMENT, "section 0 ('a'): 10 bytes at offset 200, expected a 64-byte aligned");
  BAD(set_le64(b + 96, 128), KILN_INVALID_ARGUMENT, "offset 128"); /* inside the table */
  BAD(set_le64(b + 176, 192), KILN_INVALID_ARGUMENT, "section 1 ('b'): 2 bytes at offset 192"); /* overlaps a */
  BAD(set_le64(b + 184, 3), KILN_INVALID_ARGUMENT, "3 bytes at offset 256");             /* past the trailer */
  BAD(set_le64(b + 104, UINT64_MAX), KILN_INVALID_ARGUMENT, "bytes at offset 192");      /* no wrap-around */
  BAD(set_le64(b + 96, UINT64_MAX - 63), KILN_INVALID_ARGUMENT, "section 0 ('a')");
#undef BAD

  memcpy(b, good, len);
  b[200] ^= 1;
  CHECK_ERROR(kx_ckpt_parse(b, len, "flip", &c), KILN_INVALID_ARGUMENT, "flip: checksum mismatch");
  CHECK_ERROR(kx_ckpt_parse(good, len - 1, "cut", &c), KILN_INVALID_ARGUMENT, "cut: truncated: the header says 262 bytes, the file has 261");
  CHECK_ERROR(kx_ckpt_parse(good, 20, "tiny", &c), KILN_INVALID_ARGUMENT, "tiny: truncated: 20 bytes, a checkpoint has at least 36");
  CHECK_ERROR(kx_ckpt_parse(good, 0, "zero", &c), KILN_INVALID_ARGUMENT, "zero: truncated: 0 bytes");
  uint8_t longer[263];
  memcpy(longer, good, len);
  longer[262] = 0;
  CHECK_ERROR(kx_ckpt_parse(longer, 263, "long", &c), KILN_INVALID_ARGUMENT, "long: trailing bytes: the header says 262 bytes, the file has 263");
  free(raw);
  remove_tree(dir);
}

/* The fuzz corpus' "valid" seed was encoded by a few lines of Python from checkpoint.h's layout
 * (weights = float32 1..4, rng = 01 02 03, empty; step 3): kiln writes the same bytes. */
static void test_matches_independent_encoder(void) {
  const char *data = getenv("KILN_TEST_DATA");
  CHECK(data != NULL);
  if (!data) return;
  char seed[512];
  snprintf(seed, sizeof seed, "%s/../fuzz/corpus/checkpoint/valid", data);
  void *want = NULL;
  size_t want_len = 0;
  CHECK_OK(kiln_file_read(seed, 0, &want, &want_len));
  if (!want) return;
  char *dir = make_temp_dir();
  const float w[4] = {1, 2, 3, 4};
  const kx_ckpt_section s[] = {{"weights", w, sizeof w}, {"rng", "\x01\x02\x03", 3}, {"empty", NULL, 0}};
  CHECK_OK(kx_ckpt_write(dir, 3, s, 3, 0));
  void *got = NULL;
  size_t got_len = 0;
  CHECK_OK(kiln_file_read(path_in(dir, ckpt_name(3)), 0, &got, &got_len));
  CHECK(got && got_len == want_len && memcmp(got, want, want_len) == 0);
  kx_ckpt *c = NULL;
  CHECK_OK(kx_ckpt_parse(want, want_len, seed, &c));
  size_t n = 0;
  const float *p = c ? kx_ckpt_get(c, "weights", &n) : NULL;
  CHECK(p && n == 16 && p[3] == 4.0f);
  kx_ckpt_free(c);
  free(got);
  free(want);
  remove_tree(dir);
}

TEST_MAIN(TEST(test_reference_crc), TEST(test_layout_and_round_trip), TEST(test_keep), TEST(test_latest_skips_damaged),
          TEST(test_latest_empty_or_missing), TEST(test_failed_writes), TEST(test_write_arguments),
          TEST(test_parse_errors), TEST(test_matches_independent_encoder))
