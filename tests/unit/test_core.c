/* Core layer: statuses, float16/bfloat16 conversion, tensors, .npy I/O, the thread pool, the
 * allclose comparison and atomic file writes. */
#include <immintrin.h>
#include <pthread.h>
#include <stdatomic.h>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test.h"

static void test_status(void) {
  kiln_status s = kiln_error(KILN_NOT_FOUND, "file '%s' missing", "x.onnx");
  CHECK(kiln_status_code(s) == KILN_NOT_FOUND);
  s = kiln_status_prefix(s, "model %d: ", 3);
  CHECK(strcmp(kiln_status_message(s), "model 3: file 'x.onnx' missing") == 0);
  kiln_status_free(s);
  CHECK(kiln_status_code(NULL) == KILN_OK);
  CHECK(strcmp(kiln_status_message(NULL), "ok") == 0);
  CHECK(strcmp(kiln_code_name(KILN_UNIMPLEMENTED), "UNIMPLEMENTED") == 0);
}

/* Every float16 value against the CPU's own F16C conversion, and float -> float16 rounding on a
 * sweep of float bit patterns (incl. subnormals, ties, overflow, NaN). */
static void test_half_against_f16c(void) {
  int bad = 0;
  for (uint32_t h = 0; h < 65536; h++) {
    float mine = kiln_half_to_float((uint16_t)h);
    float hw = _cvtsh_ss((unsigned short)h);
    if (memcmp(&mine, &hw, 4) != 0 && !(isnan(mine) && isnan(hw))) bad++;
  }
  CHECK(bad == 0);
  bad = 0;
  for (uint64_t bits = 0; bits < 0x100000000ull; bits += 4099) {
    uint32_t b = (uint32_t)bits;
    float f;
    memcpy(&f, &b, 4);
    uint16_t mine = kiln_float_to_half(f);
    uint16_t hw = (uint16_t)_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT);
    if (isnan(f) ? (mine & 0x7c00) != 0x7c00 || !(mine & 0x3ff) : mine != hw) bad++;
  }
  CHECK(bad == 0);
}

static void test_bfloat16(void) {
  CHECK(kiln_float_to_bfloat16(1.0f) == 0x3f80);
  CHECK(kiln_bfloat16_to_float(0x3f80) == 1.0f);
  /* 1 + 2^-8 is halfway between two bfloat16 values: ties go to even (1.0) */
  CHECK(kiln_float_to_bfloat16(1.00390625f) == 0x3f80);
  CHECK(kiln_float_to_bfloat16(1.01171875f) == 0x3f82); /* 1 + 3*2^-8: tie, rounds up to even */
  CHECK(isnan(kiln_bfloat16_to_float(kiln_float_to_bfloat16(NAN))));
}

static void test_dtype_names(void) {
  CHECK(kiln_dtype_from_name("float32") == KILN_FLOAT);
  CHECK(kiln_dtype_from_name("<f8") == KILN_DOUBLE);
  CHECK(kiln_dtype_from_name("|b1") == KILN_BOOL);
  CHECK(kiln_dtype_from_name("int64") == KILN_INT64);
  CHECK(kiln_dtype_from_name("nonsense") == KILN_UNDEFINED);
  CHECK(kiln_dtype_size(KILN_BFLOAT16) == 2);
  CHECK(strcmp(kiln_dtype_name(KILN_FLOAT16), "float16") == 0);
}

static void test_tensor_shapes(void) {
  kiln_tensor t;
  CHECK_OK(kiln_tensor_alloc(&t, KILN_FLOAT, 3, (int64_t[]){2, 3, 4}));
  CHECK(kiln_tensor_numel(&t) == 24);
  CHECK(t.strides[0] == 48 && t.strides[1] == 16 && t.strides[2] == 4);
  char buf[64];
  CHECK(strcmp(kiln_tensor_describe(&t, buf, sizeof buf), "float[2,3,4]") == 0);
  kiln_tensor_release(&t);
  CHECK_ERROR(kiln_tensor_alloc(&t, KILN_FLOAT, 2, (int64_t[]){-1, 3}), KILN_INVALID_ARGUMENT, "negative");
  CHECK_ERROR(kiln_tensor_alloc(&t, KILN_FLOAT, 3, (int64_t[]){1 << 30, 1 << 30, 1 << 30}), KILN_RESOURCE_EXHAUSTED, "too large");
  CHECK_ERROR(kiln_tensor_alloc(&t, KILN_FLOAT, 9, (int64_t[]){1, 1, 1, 1, 1, 1, 1, 1, 1}), KILN_UNIMPLEMENTED, "rank 9");
  /* zero-sized and scalar tensors */
  CHECK_OK(kiln_tensor_alloc(&t, KILN_FLOAT, 2, (int64_t[]){0, 5}));
  CHECK(kiln_tensor_numel(&t) == 0 && kiln_tensor_nbytes(&t) == 0);
  kiln_tensor_release(&t);
  CHECK_OK(kiln_tensor_alloc(&t, KILN_INT64, 0, NULL));
  CHECK(kiln_tensor_numel(&t) == 1);
  kiln_tensor_release(&t);
}

static void test_compare(void) {
  kiln_tensor a, b;
  CHECK_OK(kiln_tensor_alloc(&a, KILN_FLOAT, 1, (int64_t[]){4}));
  CHECK_OK(kiln_tensor_alloc(&b, KILN_FLOAT, 1, (int64_t[]){4}));
  float va[] = {1.0f, NAN, INFINITY, 100.0f}, vb[] = {1.0005f, NAN, INFINITY, 100.09f};
  memcpy(a.data, va, sizeof va);
  memcpy(b.data, vb, sizeof vb);
  CHECK_OK(kiln_tensor_compare(&a, &b, 1e-3, 1e-7));
  ((float *)a.data)[3] = 100.2f;
  CHECK_ERROR(kiln_tensor_compare(&a, &b, 1e-3, 1e-7), KILN_INVALID_ARGUMENT, "1 of 4 elements differ");
  ((float *)a.data)[2] = -INFINITY;
  CHECK_ERROR(kiln_tensor_compare(&a, &b, 1e-3, 1e-7), KILN_INVALID_ARGUMENT, "2 of 4 elements differ");
  kiln_tensor c;
  CHECK_OK(kiln_tensor_alloc(&c, KILN_FLOAT, 2, (int64_t[]){2, 2}));
  CHECK_ERROR(kiln_tensor_compare(&a, &c, 1e-3, 1e-7), KILN_INVALID_ARGUMENT, "got float[4], expected float[2,2]");
  kiln_tensor_release(&a);
  kiln_tensor_release(&b);
  kiln_tensor_release(&c);
}

static void test_npy_roundtrip(void) {
  char path[] = "/tmp/kiln_test_npy_XXXXXX";
  int fd = mkstemp(path);
  CHECK(fd >= 0);
  close(fd);
  kiln_tensor t, back;
  CHECK_OK(kiln_tensor_alloc(&t, KILN_INT16, 2, (int64_t[]){3, 5}));
  for (int i = 0; i < 15; i++) ((int16_t *)t.data)[i] = (int16_t)(i * 1000 - 7000);
  CHECK_OK(kiln_npy_write(path, &t));
  CHECK_OK(kiln_npy_read(path, &back));
  CHECK_OK(kiln_tensor_compare(&back, &t, 0, 0));
  kiln_tensor_release(&back);
  kiln_tensor_release(&t);

  CHECK_OK(kiln_tensor_alloc(&t, KILN_STRING, 1, (int64_t[]){2}));
  ((char **)t.data)[0] = strdup("h\xc3\xa9llo"); /* non-ASCII survives the UTF-32 encoding */
  ((char **)t.data)[1] = strdup("");
  CHECK_OK(kiln_npy_write(path, &t));
  CHECK_OK(kiln_npy_read(path, &back));
  CHECK_OK(kiln_tensor_compare(&back, &t, 0, 0));
  kiln_tensor_release(&back);
  kiln_tensor_release(&t);
  unlink(path);
}

static void test_npy_errors(void) {
  kiln_tensor t;
  static const char header[] = "\x93NUMPY\x01\x00\x76\x00{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
  char buf[257];
  memset(buf, ' ', sizeof buf - 1);
  buf[sizeof buf - 1] = '\0';
  memcpy(buf, header, sizeof header - 1);
  buf[10 + 0x76 - 1] = '\n';
  size_t full = 10 + 0x76 + 24;
  CHECK_OK(kiln_npy_parse(buf, full, "ok.npy", &t));
  kiln_tensor_release(&t);
  CHECK_ERROR(kiln_npy_parse(buf, full - 1, "short.npy", &t), KILN_INVALID_ARGUMENT, "short.npy: truncated data: shape needs 24 bytes, file has 23");
  CHECK_ERROR(kiln_npy_parse(buf, 40, "cut.npy", &t), KILN_INVALID_ARGUMENT, "cut.npy: not a valid .npy file: truncated header");
  CHECK_ERROR(kiln_npy_parse("hello world", 11, "x.npy", &t), KILN_INVALID_ARGUMENT, "missing the \\x93NUMPY magic");
  memcpy(memmem(buf, sizeof buf, "False", 5), "True ", 5);
  CHECK_ERROR(kiln_npy_parse(buf, full, "f.npy", &t), KILN_INVALID_ARGUMENT, "Fortran-order");
  CHECK_ERROR(kiln_npy_read("/nonexistent/x.npy", &t), KILN_NOT_FOUND, "/nonexistent/x.npy");
}

/* parallel_for covers every index exactly once, also with several callers at once. */
typedef struct cover {
  atomic_int *hits;
} cover;

static void mark(void *arg, int64_t begin, int64_t end) {
  cover *c = arg;
  for (int64_t i = begin; i < end; i++) atomic_fetch_add(&c->hits[i], 1);
}

typedef struct caller {
  kiln_pool *pool;
  int bad;
} caller;

static void *hammer(void *arg) {
  caller *c = arg;
  enum { N = 10007 };
  static _Thread_local atomic_int hits[N];
  for (int round = 0; round < 200; round++) {
    for (int i = 0; i < N; i++) atomic_store(&hits[i], 0);
    cover cv = {hits};
    kiln_parallel_for(c->pool, 0, N, 100, mark, &cv);
    for (int i = 0; i < N; i++)
      if (atomic_load(&hits[i]) != 1) c->bad++;
  }
  return NULL;
}

/* Every caller's job covers each index exactly once, with spinning or sleeping workers. */
static void hammer_pool(int spin) {
  kiln_pool *pool;
  CHECK_OK(kiln_pool_create(3, &pool));
  CHECK(kiln_pool_threads(pool) == 3);
  if (spin >= 0) kiln_pool_set_spin(pool, spin);
  caller callers[4];
  pthread_t threads[4];
  for (int i = 0; i < 4; i++) {
    callers[i] = (caller){pool, 0};
    pthread_create(&threads[i], NULL, hammer, &callers[i]);
  }
  for (int i = 0; i < 4; i++) {
    pthread_join(threads[i], NULL);
    CHECK(callers[i].bad == 0);
  }
  kiln_pool_free(pool);
}

static void test_pool(void) {
  hammer_pool(-1);
  hammer_pool(0);
  /* a NULL pool runs inline */
  atomic_int hits[5] = {0};
  cover cv = {hits};
  kiln_parallel_for(NULL, 0, 5, 1e9, mark, &cv);
  for (int i = 0; i < 5; i++) CHECK(atomic_load(&hits[i]) == 1);
}

static void test_default_threads(void) {
  setenv("KILN_NUM_THREADS", "3", 1);
  CHECK(kiln_default_threads() == 3);
  setenv("KILN_NUM_THREADS", "junk", 1);
  CHECK(kiln_default_threads() == kiln_cpu_count());
  unsetenv("KILN_NUM_THREADS");
}

/* Names in dir other than "." and "..", joined by spaces (sorted by nothing: tests only count). */
static int count_entries(const char *dir, char *names, size_t size) {
  DIR *d = opendir(dir);
  if (!d) return -1;
  int n = 0;
  names[0] = '\0';
  for (struct dirent *e; (e = readdir(d));) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    n++;
    size_t used = strlen(names);
    snprintf(names + used, size - used, "%s ", e->d_name);
  }
  closedir(d);
  return n;
}

/* Atomic writes: the content arrives whole, replaces what was there, leaves no temporary beside
 * it, and a write that cannot happen leaves nothing behind. */
static void test_file_write_atomic(void) {
  char dir[] = "/tmp/kiln_test_atomic_XXXXXX";
  CHECK(mkdtemp(dir) != NULL);
  char path[128], names[512];
  snprintf(path, sizeof path, "%s/out.bin", dir);
  CHECK_OK(kiln_file_write_atomic(path, "first version", 13));
  void *got;
  size_t len;
  CHECK_OK(kiln_file_read(path, 0, &got, &len));
  CHECK(len == 13 && memcmp(got, "first version", 13) == 0);
  free(got);

  const void *parts[] = {"ab", NULL, "", "cdef"};
  const size_t lens[] = {2, 0, 0, 4};
  CHECK_OK(kiln_file_write_atomic_parts(path, parts, lens, 4));
  CHECK_OK(kiln_file_read(path, 0, &got, &len));
  CHECK(len == 6 && memcmp(got, "abcdef", 6) == 0);
  free(got);
  CHECK(count_entries(dir, names, sizeof names) == 1);
  CHECK(strcmp(names, "out.bin ") == 0);

  /* the mode follows the umask like any new file's, not mkstemp's 0600 */
  struct stat st;
  mode_t mask = umask(022);
  CHECK_OK(kiln_file_write_atomic(path, "", 0));
  umask(mask);
  CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0644 && st.st_size == 0);

  char missing[160];
  snprintf(missing, sizeof missing, "%s/no/such/dir/x.bin", dir);
  CHECK_ERROR(kiln_file_write_atomic(missing, "x", 1), KILN_NOT_FOUND, "/no/such/dir/.x.bin.tmp.");
  CHECK(count_entries(dir, names, sizeof names) == 1);

  /* renaming onto a directory fails after the data is written: the temporary goes away */
  char sub[160];
  snprintf(sub, sizeof sub, "%s/sub", dir);
  CHECK(mkdir(sub, 0755) == 0);
  CHECK_ERROR(kiln_file_write_atomic(sub, "x", 1), KILN_IO, "cannot rename");
  CHECK(count_entries(dir, names, sizeof names) == 2);
  CHECK(strstr(names, ".tmp.") == NULL);
  CHECK_OK(kiln_file_read(path, 0, &got, &len));
  CHECK(len == 0);
  free(got);

  CHECK_ERROR(kiln_file_write_atomic("/tmp/", "x", 1), KILN_INVALID_ARGUMENT, "not a file name");
  CHECK_ERROR(kiln_file_write_atomic_parts(path, parts, NULL, 1), KILN_INVALID_ARGUMENT, "lengths");
  const size_t bad_lens[] = {2, 3};
  CHECK_ERROR(kiln_file_write_atomic_parts(path, parts, bad_lens, 2), KILN_INVALID_ARGUMENT, "part 1 of 3 bytes has no data");
  rmdir(sub);
  unlink(path);
  CHECK(rmdir(dir) == 0);
}

TEST_MAIN(TEST(test_status), TEST(test_half_against_f16c), TEST(test_bfloat16), TEST(test_dtype_names),
          TEST(test_tensor_shapes), TEST(test_compare), TEST(test_npy_roundtrip), TEST(test_npy_errors),
          TEST(test_pool), TEST(test_default_threads), TEST(test_file_write_atomic))
