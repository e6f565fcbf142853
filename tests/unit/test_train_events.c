/* The TensorBoard event writer: files read back with this test's own CRC-32C and protobuf-c's
 * unpack, directory and tag errors, and a write that fails. With a directory as argv[1] it
 * instead writes the known events there for tests/integration/test_train_events.py to check
 * with an independent reader. */
#include <ftw.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tensorflow/core/util/event.pb-c.h"
#include "test.h"
#include "train/events.h"

/* The known events: every tag at every step. test_train_events.py holds the same table. */
#define N_TAGS 5
#define N_STEPS 5
static const char *const known_tags[N_TAGS] = {"loss", "accuracy", "learning_rate", "samples_per_s", "val/\xcf\x84"};
static const int64_t known_steps[N_STEPS] = {0, 1, 2, 1099511627776, -1};
static float known_values[N_STEPS][N_TAGS] = {
    {2.5f, 0.0f, 1e-3f, 12345.678f, -7.25f},
    {1.25f, 0.5f, 1e-3f, 0.0f, 1e-45f},
    {0.75f, 0.875f, 5e-4f, 3.4028235e38f, -0.0f},
    {0.0f, 1.0f, 1e-4f, 1e6f, 100.0f},
    {0.0f, 0.0f, 0.0f, 0.0f, 0.0f}, /* NaN, inf, -inf set in main */
};

static kiln_status write_known(kx_events *w) {
  for (int s = 0; s < N_STEPS; s++) {
    kiln_status e = kx_events_scalars(w, known_steps[s], known_tags, known_values[s], N_TAGS);
    if (e) return e;
  }
  return NULL;
}

/* CRC-32C bit by bit from the definition (reflected, polynomial 0x82F63B78), and TFRecord's mask:
 * not the writer's table-driven kx_crc32c. */
static uint32_t masked_crc(const uint8_t *p, size_t n) {
  uint32_t crc = 0xffffffffu;
  for (size_t i = 0; i < n; i++) {
    crc ^= p[i];
    for (int b = 0; b < 8; b++) crc = crc & 1 ? (crc >> 1) ^ 0x82f63b78u : crc >> 1;
  }
  crc ^= 0xffffffffu;
  return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}

static uint64_t get_le(const uint8_t *p, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; i--) v = v << 8 | p[i];
  return v;
}

/* Reads path's records, checking both CRCs of each; returns how many events went into ev[]. */
static int read_events(const char *path, Tensorflow__Event **ev, int max) {
  void *data;
  size_t len;
  kiln_status e = kiln_file_read(path, 0, &data, &len);
  CHECK_OK(e);
  if (e) return 0;
  const uint8_t *p = data;
  size_t at = 0;
  int n = 0;
  while (at < len && n < max) {
    CHECK(len - at >= 12);
    if (len - at < 12) break;
    uint64_t size = get_le(p + at, 8);
    CHECK(get_le(p + at + 8, 4) == masked_crc(p + at, 8));
    CHECK(size <= len - at - 16);
    if (size > len - at - 16) break;
    CHECK(get_le(p + at + 12 + size, 4) == masked_crc(p + at + 12, (size_t)size));
    ev[n] = tensorflow__event__unpack(NULL, (size_t)size, p + at + 12);
    CHECK(ev[n] != NULL);
    if (!ev[n]) break;
    n++;
    at += 16 + (size_t)size;
  }
  CHECK(at == len);
  free(data);
  return n;
}

static void free_events(Tensorflow__Event **ev, int n) {
  for (int i = 0; i < n; i++) tensorflow__event__free_unpacked(ev[i], NULL);
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) { return remove(path); }

static void make_temp_dir(char *dir) {
  snprintf(dir, 64, "/tmp/kiln_events_XXXXXX");
  CHECK(mkdtemp(dir) != NULL);
}

static void remove_tree(const char *dir) { nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS); }

/* The file's name is TensorFlow's: events.out.tfevents.<seconds>.<hostname>.<pid>.<n>. */
static void check_name(const char *path, const char *dir, time_t t0, time_t t1) {
  char prefix[256], host[256] = "", *tail;
  snprintf(prefix, sizeof prefix, "%s/events.out.tfevents.", dir);
  CHECK(strncmp(path, prefix, strlen(prefix)) == 0);
  long long seconds = strtoll(path + strlen(prefix), &tail, 10);
  CHECK(seconds >= t0 && seconds <= t1 && *tail == '.');
  char *n_dot = strrchr(tail, '.'), *pid_dot = NULL;
  CHECK(n_dot && n_dot > tail);
  if (!n_dot || n_dot == tail) return;
  *n_dot = '\0';
  pid_dot = strrchr(tail, '.');
  CHECK(atol(pid_dot + 1) == (long)getpid());
  *n_dot = '.';
  gethostname(host, sizeof host - 1);
  CHECK(pid_dot - tail - 1 == (ptrdiff_t)strlen(host) && strncmp(tail + 1, host, strlen(host)) == 0);
}

static void check_known(const char *path, double t0, double t1) {
  Tensorflow__Event *ev[64];
  int n = read_events(path, ev, 64);
  CHECK(n == 1 + N_STEPS * N_TAGS);
  if (n != 1 + N_STEPS * N_TAGS) {
    free_events(ev, n);
    return;
  }
  CHECK(ev[0]->what_case == TENSORFLOW__EVENT__WHAT_FILE_VERSION && strcmp(ev[0]->file_version, "brain.Event:2") == 0);
  CHECK(ev[0]->step == 0);
  for (int i = 0; i < n; i++) {
    CHECK(ev[i]->wall_time >= t0 && ev[i]->wall_time <= t1);
    if (i) CHECK(ev[i]->wall_time >= ev[i - 1]->wall_time);
  }
  for (int s = 0; s < N_STEPS; s++)
    for (int t = 0; t < N_TAGS; t++) {
      const Tensorflow__Event *e = ev[1 + s * N_TAGS + t];
      CHECK(e->step == known_steps[s] && e->what_case == TENSORFLOW__EVENT__WHAT_SUMMARY);
      if (e->what_case != TENSORFLOW__EVENT__WHAT_SUMMARY || e->summary->n_value != 1) {
        test_failures++;
        continue;
      }
      const Tensorflow__Summary__Value *v = e->summary->value[0];
      CHECK(strcmp(v->tag, known_tags[t]) == 0);
      CHECK(v->value_case == TENSORFLOW__SUMMARY__VALUE__VALUE_SIMPLE_VALUE);
      CHECK(memcmp(&v->simple_value, &known_values[s][t], sizeof(float)) == 0); /* bitwise: NaN, -0 */
    }
  free_events(ev, n);
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void test_round_trip(void) {
  char tmp[64], dir[128], with_slash[130];
  make_temp_dir(tmp);
  snprintf(dir, sizeof dir, "%s/runs/a/b", tmp);
  snprintf(with_slash, sizeof with_slash, "%s/", dir); /* parents are made; the slash is not doubled */
  time_t t0 = time(NULL);
  double w0 = now();
  kx_events *w = NULL;
  CHECK_OK(kx_events_open(with_slash, &w));
  if (!w) {
    remove_tree(tmp);
    return;
  }
  CHECK_OK(write_known(w));
  CHECK_OK(kx_events_scalars(w, 7, NULL, NULL, 0)); /* nothing to log is not an error */
  CHECK_OK(kx_events_flush(w));
  check_name(kx_events_path(w), dir, t0, time(NULL));
  check_known(kx_events_path(w), w0, now()); /* flushed: readable while open */
  char path[512];
  snprintf(path, sizeof path, "%s", kx_events_path(w));
  kx_events_close(w);
  check_known(path, w0, now());
  kx_events_close(NULL);
  remove_tree(tmp);
}

static void test_two_writers(void) {
  char tmp[64];
  make_temp_dir(tmp);
  kx_events *a = NULL, *b = NULL;
  CHECK_OK(kx_events_open(tmp, &a));
  CHECK_OK(kx_events_open(tmp, &b)); /* same second, same process: a file of its own */
  CHECK(a && b && strcmp(kx_events_path(a), kx_events_path(b)) != 0);
  kx_events_close(a);
  kx_events_close(b);
  remove_tree(tmp);
}

static void test_directory_errors(void) {
  char tmp[64], file[96], below[128];
  make_temp_dir(tmp);
  snprintf(file, sizeof file, "%s/plain", tmp);
  FILE *f = fopen(file, "w");
  CHECK(f && fclose(f) == 0);
  snprintf(below, sizeof below, "%s/sub/dir", file);
  kx_events *w = (kx_events *)1;
  CHECK_ERROR(kx_events_open(file, &w), KILN_IO, "exists but is not a directory");
  CHECK(w == NULL);
  CHECK_ERROR(kx_events_open(below, &w), KILN_IO, "cannot create");
  CHECK_ERROR(kx_events_open(below, &w), KILN_IO, "Not a directory");
  CHECK_ERROR(kx_events_open("", &w), KILN_INVALID_ARGUMENT, "log directory: expected a path of 1 to");
  remove_tree(tmp);
}

static void test_bad_tags(void) {
  char tmp[64], long_tag[1100];
  make_temp_dir(tmp);
  kx_events *w = NULL;
  CHECK_OK(kx_events_open(tmp, &w));
  if (!w) {
    remove_tree(tmp);
    return;
  }
  memset(long_tag, 'a', sizeof long_tag - 1);
  long_tag[sizeof long_tag - 1] = '\0';
  const char *null_tag[] = {"loss", NULL}, *empty[] = {"loss", ""}, *latin1[] = {"loss", "caf\xe9"};
  const char *longer[] = {"loss", long_tag};
  const float values[] = {1, 2};
  CHECK_ERROR(kx_events_scalars(w, 1, null_tag, values, 2), KILN_INVALID_ARGUMENT, "scalar 1: tag NULL");
  CHECK_ERROR(kx_events_scalars(w, 1, empty, values, 2), KILN_INVALID_ARGUMENT, "tag empty");
  CHECK_ERROR(kx_events_scalars(w, 1, latin1, values, 2), KILN_INVALID_ARGUMENT, "not UTF-8");
  CHECK_ERROR(kx_events_scalars(w, 1, longer, values, 2), KILN_INVALID_ARGUMENT, "too long");
  CHECK_ERROR(kx_events_scalars(w, 1, empty, values, -1), KILN_INVALID_ARGUMENT, "-1 tags");
  CHECK_ERROR(kx_events_scalars(w, 1, NULL, values, 1), KILN_INVALID_ARGUMENT, "tags NULL");
  CHECK_OK(kx_events_flush(w));
  Tensorflow__Event *ev[4];
  int n = read_events(kx_events_path(w), ev, 4);
  CHECK(n == 1); /* only the file_version event: no half-written step */
  free_events(ev, n);
  kx_events_close(w);
  remove_tree(tmp);
}

/* A file-size limit makes writes fail (EFBIG) as a full disk would. */
static void test_write_failure(void) {
  char tmp[64];
  make_temp_dir(tmp);
  kx_events *w = NULL;
  CHECK_OK(kx_events_open(tmp, &w));
  if (!w) {
    remove_tree(tmp);
    return;
  }
  struct rlimit old, small;
  CHECK(getrlimit(RLIMIT_FSIZE, &old) == 0);
  small = old;
  small.rlim_cur = 4096;
  void (*previous)(int) = signal(SIGXFSZ, SIG_IGN);
  CHECK(setrlimit(RLIMIT_FSIZE, &small) == 0);
  kiln_status e = NULL;
  const char *tag[] = {"loss"};
  const float value[] = {1};
  for (int step = 0; step < 10000 && !e; step++) {
    e = kx_events_scalars(w, step, tag, value, 1);
    if (!e && step % 100 == 99) e = kx_events_flush(w);
  }
  CHECK_ERROR(e, KILN_IO, "write failed");
  CHECK_ERROR(kx_events_scalars(w, 1, tag, value, 1), KILN_FAILED_PRECONDITION, "an earlier write failed");
  kiln_log_set_level(KILN_LOG_ERROR); /* the close's warning is expected */
  kx_events_close(w);
  kiln_log_set_level(KILN_LOG_INFO);
  CHECK(setrlimit(RLIMIT_FSIZE, &old) == 0);
  signal(SIGXFSZ, previous);
  remove_tree(tmp);
}

static const test_case tests[] = {TEST(test_round_trip), TEST(test_two_writers), TEST(test_directory_errors),
                                  TEST(test_bad_tags), TEST(test_write_failure)};

int main(int argc, char **argv) {
  known_values[4][0] = NAN;
  known_values[4][1] = INFINITY;
  known_values[4][2] = -INFINITY;
  if (argc > 1) { /* the integration test's file */
    kx_events *w = NULL;
    kiln_status e = kx_events_open(argv[1], &w);
    if (!e) e = write_known(w);
    if (!e) printf("%s\n", kx_events_path(w));
    kx_events_close(w);
    if (e) fprintf(stderr, "%s\n", kiln_status_message(e));
    kiln_status_free(e);
    return e ? 1 : 0;
  }
  for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++) {
    int before = test_failures;
    tests[i].fn();
    fprintf(stderr, "%s %s\n", test_failures == before ? "ok  " : "FAIL", tests[i].name);
  }
  return test_failures ? 1 : 0;
}
