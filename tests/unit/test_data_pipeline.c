/* The pipeline stages on the range source: order and determinism of shuffle, batch shapes,
 * repeat/take/skip/shard counts, caches that replay without re-reading, prefetch that changes
 * nothing but timing, and spec errors that name the key. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kiln/data.h"
#include "test.h"

#define MAX_OUT 4096

/* Pulls every element of a pipeline (after a reset to `epoch`; -1: no reset) into xs: the values of feature "x" in order,
 * batches flattened. Returns the count, or -1 on error (reported). */
static int collect_from(kiln_dataset *d, int64_t epoch, int64_t *xs, int *elements) {
  if (epoch >= 0) {
    kiln_status s = kiln_dataset_reset(d, epoch);
    if (s) {
      fprintf(stderr, "reset: %s\n", kiln_status_message(s));
      kiln_status_free(s);
      return -1;
    }
  }
  int n = 0;
  if (elements) *elements = 0;
  for (;;) {
    kiln_record r;
    int done;
    kiln_status s = kiln_dataset_next(d, &r, &done);
    if (s) {
      fprintf(stderr, "next: %s\n", kiln_status_message(s));
      kiln_status_free(s);
      return -1;
    }
    if (done) return n;
    if (elements) (*elements)++;
    int i = kiln_record_find(&r, "x");
    int64_t k = kiln_tensor_numel(&r.values[i]);
    for (int64_t j = 0; j < k && n < MAX_OUT; j++) xs[n++] = ((int64_t *)r.values[i].data)[j];
    kiln_record_release(&r);
  }
}

static kiln_dataset *open_spec(const char *json, int threads) {
  kiln_data_options o = {0};
  o.threads = threads;
  kiln_dataset *d = NULL;
  kiln_status s = kiln_dataset_open_spec(json, strlen(json), &o, &d);
  if (s) {
    fprintf(stderr, "open: %s\n", kiln_status_message(s));
    kiln_status_free(s);
    test_failures++;
  }
  return d;
}

static int collect(const char *json, int threads, int64_t *xs, int *elements) {
  kiln_dataset *d = open_spec(json, threads);
  if (!d) return -1;
  int n = collect_from(d, -1, xs, elements);
  kiln_dataset_free(d);
  return n;
}

static void test_range_and_take_skip(void) {
  int64_t xs[MAX_OUT];
  CHECK(collect("{\"source\": {\"format\": \"range\", \"stop\": 10}}", 1, xs, NULL) == 10);
  CHECK(xs[0] == 0 && xs[9] == 9);
  CHECK(collect("{\"source\": {\"format\": \"range\", \"stop\": 10}, \"stages\": [{\"skip\": 3}, {\"take\": {\"count\": 4}}]}",
                1, xs, NULL) == 4);
  CHECK(xs[0] == 3 && xs[3] == 6);
  CHECK(collect("{\"source\": {\"format\": \"range\", \"stop\": 10}, \"stages\": [{\"skip\": -1}]}", 1, xs, NULL) == 0);
  CHECK(collect("{\"source\": {\"format\": \"range\", \"stop\": 10}, \"stages\": [{\"take\": 0}]}", 1, xs, NULL) == 0);
}

static int is_permutation(const int64_t *xs, int n) {
  char seen[MAX_OUT] = {0};
  for (int i = 0; i < n; i++) {
    if (xs[i] < 0 || xs[i] >= n || seen[xs[i]]) return 0;
    seen[xs[i]] = 1;
  }
  return 1;
}

static void test_shuffle_is_seeded_and_complete(void) {
  const char *spec = "{\"source\": {\"format\": \"range\", \"stop\": 1000}, \"stages\": [{\"shuffle\": {\"buffer_size\": "
                     "100, \"seed\": 7}}]}";
  int64_t a[MAX_OUT], b[MAX_OUT], c[MAX_OUT];
  CHECK(collect(spec, 1, a, NULL) == 1000);
  CHECK(collect(spec, 2, b, NULL) == 1000);
  CHECK(is_permutation(a, 1000));
  CHECK(memcmp(a, b, sizeof(int64_t) * 1000) == 0);
  int in_place = 0;
  for (int i = 0; i < 1000; i++) in_place += a[i] == i;
  CHECK(in_place < 50);
  /* a buffer of 100 moves a record at most ~100 places earlier */
  for (int i = 0; i < 1000; i++) CHECK(a[i] <= i + 100);
  /* another seed, another order */
  CHECK(collect("{\"source\": {\"format\": \"range\", \"stop\": 1000}, \"stages\": [{\"shuffle\": {\"buffer_size\": 100, "
                "\"seed\": 8}}]}",
                1, c, NULL) == 1000);
  CHECK(memcmp(a, c, sizeof(int64_t) * 1000) != 0);
  /* each epoch reshuffles; resetting to an epoch replays it exactly */
  kiln_dataset *d = open_spec(spec, 1);
  if (!d) return;
  CHECK(collect_from(d, 0, b, NULL) == 1000);
  CHECK(memcmp(a, b, sizeof(int64_t) * 1000) == 0);
  CHECK(collect_from(d, 1, b, NULL) == 1000);
  CHECK(is_permutation(b, 1000));
  CHECK(memcmp(a, b, sizeof(int64_t) * 1000) != 0);
  CHECK(collect_from(d, 1, c, NULL) == 1000);
  CHECK(memcmp(b, c, sizeof(int64_t) * 1000) == 0);
  CHECK(collect_from(d, 0, c, NULL) == 1000);
  CHECK(memcmp(a, c, sizeof(int64_t) * 1000) == 0);
  kiln_dataset_free(d);
  /* reshuffle_each_iteration false: every epoch the same order */
  d = open_spec("{\"source\": {\"format\": \"range\", \"stop\": 100}, \"stages\": [{\"shuffle\": {\"buffer_size\": 100, "
                "\"seed\": 1, \"reshuffle_each_iteration\": false}}]}",
                1);
  if (!d) return;
  CHECK(collect_from(d, 0, a, NULL) == 100);
  CHECK(collect_from(d, 3, b, NULL) == 100);
  CHECK(memcmp(a, b, sizeof(int64_t) * 100) == 0);
  kiln_dataset_free(d);
}

static void test_batch(void) {
  int64_t xs[MAX_OUT];
  int elements;
  CHECK(collect("{\"source\": {\"format\": \"range\", \"stop\": 10}, \"stages\": [{\"batch\": 4}]}", 1, xs, &elements) == 10);
  CHECK(elements == 3);
  CHECK(collect("{\"source\": {\"format\": \"range\", \"stop\": 10}, \"stages\": [{\"batch\": {\"batch_size\": 4, "
                "\"drop_remainder\": true}}]}",
                1, xs, &elements) == 8);
  CHECK(elements == 2);
  kiln_dataset *d = open_spec("{\"source\": {\"format\": \"range\", \"stop\": 10}, \"stages\": [{\"batch\": 3}, {\"batch\": 2}]}", 1);
  if (!d) return;
  kiln_record r;
  int done;
  CHECK_OK(kiln_dataset_next(d, &r, &done));
  CHECK(!done && r.values[0].rank == 2 && r.values[0].dims[0] == 2 && r.values[0].dims[1] == 3);
  CHECK(((int64_t *)r.values[0].data)[5] == 5);
  kiln_record_release(&r);
  /* the last batch of 1 cannot join a batch whose first element has 3: fail mode stops there */
  CHECK_ERROR(kiln_dataset_next(d, &r, &done), KILN_INVALID_ARGUMENT, "is int64[1] where the batch's first record has int64[3]");
  kiln_dataset_free(d);
}

static void test_repeat_and_shard(void) {
  int64_t xs[MAX_OUT];
  CHECK(collect("{\"source\": {\"format\": \"range\", \"stop\": 5}, \"stages\": [{\"repeat\": 3}]}", 1, xs, NULL) == 15);
  CHECK(collect("{\"source\": {\"format\": \"range\", \"stop\": 5}, \"stages\": [{\"repeat\": 0}]}", 1, xs, NULL) == 0);
  CHECK(xs[5] == 0 && xs[14] == 4);
  /* repeat forever, bounded by take */
  CHECK(collect("{\"source\": {\"format\": \"range\", \"stop\": 5}, \"stages\": [{\"repeat\": {}}, {\"take\": 12}]}", 1, xs,
                NULL) == 12);
  /* an empty pass ends an endless repeat instead of spinning */
  CHECK(collect("{\"source\": {\"format\": \"range\", \"stop\": 0}, \"stages\": [{\"repeat\": -1}]}", 1, xs, NULL) == 0);
  /* repeat reshuffles each pass */
  CHECK(collect("{\"source\": {\"format\": \"range\", \"stop\": 50}, \"stages\": [{\"shuffle\": {\"buffer_size\": 50, "
                "\"seed\": 2}}, {\"repeat\": 2}]}",
                1, xs, NULL) == 100);
  CHECK(is_permutation(xs, 50) && memcmp(xs, xs + 50, 50 * sizeof xs[0]) != 0);
  /* shards are disjoint and cover everything */
  char seen[100] = {0};
  int total = 0;
  for (int i = 0; i < 3; i++) {
    char spec[256];
    snprintf(spec, sizeof spec,
             "{\"source\": {\"format\": \"range\", \"stop\": 100}, \"stages\": [{\"shard\": {\"num_shards\": 3, \"index\": %d}}]}", i);
    int n = collect(spec, 1, xs, NULL);
    CHECK(n == (i == 0 ? 34 : 33));
    for (int k = 0; k < n; k++) {
      CHECK(xs[k] % 3 == i && !seen[xs[k]]);
      seen[xs[k]] = 1;
    }
    total += n;
  }
  CHECK(total == 100);
}

static void check_cache(const char *spec) {
  kiln_dataset *d = open_spec(spec, 2);
  if (!d) return;
  int64_t a[MAX_OUT], b[MAX_OUT];
  CHECK(collect_from(d, 0, a, NULL) == 200);
  CHECK(kiln_dataset_counts(d).read == 200);
  CHECK(collect_from(d, 1, b, NULL) == 200);
  /* the second pass came from the cache: the source was not read again, and the order after the
   * shuffle that follows the cache is new */
  CHECK(kiln_dataset_counts(d).read == 200);
  CHECK(is_permutation(b, 200) && memcmp(a, b, sizeof(int64_t) * 200) != 0);
  kiln_dataset_free(d);
}

static void test_cache_memory_and_file(void) {
  check_cache("{\"source\": {\"format\": \"range\", \"stop\": 200}, \"stages\": [{\"cache\": {}}, {\"shuffle\": {\"buffer_size\": 200, \"seed\": 4}}]}");
  char path[64], spec[512];
  snprintf(path, sizeof path, "/tmp/kiln_test_cache_%d", (int)getpid());
  snprintf(spec, sizeof spec,
           "{\"source\": {\"format\": \"range\", \"stop\": 200}, \"stages\": [{\"cache\": {\"filename\": \"%s\"}}, "
           "{\"shuffle\": {\"buffer_size\": 200, \"seed\": 4}}]}",
           path);
  check_cache(spec);
  CHECK(access(path, F_OK) != 0); /* removed with the dataset */
  /* a pass abandoned halfway caches nothing: the next pass reads the source again */
  kiln_dataset *d = open_spec("{\"source\": {\"format\": \"range\", \"stop\": 10}, \"stages\": [{\"cache\": {}}]}", 1);
  if (!d) return;
  kiln_record r;
  int done;
  CHECK_OK(kiln_dataset_next(d, &r, &done));
  kiln_record_release(&r);
  int64_t xs[MAX_OUT];
  CHECK(collect_from(d, 1, xs, NULL) == 10);
  CHECK(kiln_dataset_counts(d).read == 11);
  CHECK(collect_from(d, 2, xs, NULL) == 10);
  CHECK(kiln_dataset_counts(d).read == 11);
  kiln_dataset_free(d);
}

static void test_prefetch_keeps_the_sequence(void) {
  int64_t a[MAX_OUT], b[MAX_OUT];
  const char *plain = "{\"source\": {\"format\": \"range\", \"stop\": 3000}, \"stages\": [{\"shuffle\": {\"buffer_size\": 64, \"seed\": 9}}, {\"batch\": 7}]}";
  const char *pre = "{\"source\": {\"format\": \"range\", \"stop\": 3000}, \"stages\": [{\"shuffle\": {\"buffer_size\": 64, \"seed\": 9}}, {\"batch\": 7}, {\"prefetch\": 3}]}";
  CHECK(collect(plain, 1, a, NULL) == 3000);
  CHECK(collect(pre, 1, b, NULL) == 3000);
  CHECK(memcmp(a, b, sizeof(int64_t) * 3000) == 0);
  /* reset in the middle of a pass, and freeing with the producer running, are clean */
  kiln_dataset *d = open_spec(pre, 1);
  if (!d) return;
  kiln_record r;
  int done;
  CHECK_OK(kiln_dataset_next(d, &r, &done));
  kiln_record_release(&r);
  CHECK(collect_from(d, 0, b, NULL) == 3000);
  CHECK(memcmp(a, b, sizeof(int64_t) * 3000) == 0);
  CHECK_OK(kiln_dataset_next(d, &r, &done));
  CHECK_OK(kiln_dataset_reset(d, 0));
  CHECK_OK(kiln_dataset_next(d, &r, &done));
  kiln_record_release(&r);
  kiln_dataset_free(d);
}

static kiln_status open_text(const char *json) {
  kiln_dataset *d = NULL;
  kiln_status s = kiln_dataset_open_spec(json, strlen(json), NULL, &d);
  kiln_dataset_free(d);
  return s;
}

static void test_spec_errors(void) {
  CHECK_ERROR(open_text("{\"source\": "), KILN_INVALID_ARGUMENT, "invalid JSON");
  CHECK_ERROR(open_text("[]"), KILN_INVALID_ARGUMENT, "expected a JSON object");
  CHECK_ERROR(open_text("{\"stages\": []}"), KILN_INVALID_ARGUMENT, "missing required key 'source'");
  CHECK_ERROR(open_text("{\"source\": \"data.xyz\"}"), KILN_INVALID_ARGUMENT, "cannot tell the format of 'data.xyz'");
  CHECK_ERROR(open_text("{\"source\": {\"format\": \"parquet\"}}"), KILN_INVALID_ARGUMENT, "unknown format 'parquet'");
  CHECK_ERROR(open_text("{\"source\": {\"format\": \"range\", \"stop\": 3}, \"extra\": 1}"), KILN_INVALID_ARGUMENT,
              "pipeline: unknown key 'extra'");
  CHECK_ERROR(open_text("{\"source\": {\"format\": \"range\", \"stop\": 3}, \"stages\": [{\"zip\": {}}]}"), KILN_INVALID_ARGUMENT,
              "stages[0].zip: unknown stage");
  CHECK_ERROR(open_text("{\"source\": {\"format\": \"range\", \"stop\": 3}, \"stages\": [{\"batch\": {\"size\": 3}}]}"),
              KILN_INVALID_ARGUMENT, "stages[0].batch: unknown key 'size'");
  CHECK_ERROR(open_text("{\"source\": {\"format\": \"range\", \"stop\": 3}, \"stages\": [{\"batch\": 0}]}"),
              KILN_INVALID_ARGUMENT, "stages[0].batch.batch_size: 0 is outside");
  CHECK_ERROR(open_text("{\"source\": {\"format\": \"range\", \"stop\": 3}, \"stages\": [{\"shuffle\": {\"seed\": 1}}]}"),
              KILN_INVALID_ARGUMENT, "missing required key 'buffer_size'");
  CHECK_ERROR(open_text("{\"source\": {\"format\": \"range\", \"stop\": 3}, \"stages\": [{\"shard\": {\"num_shards\": 2, \"index\": 2}}]}"),
              KILN_INVALID_ARGUMENT, "index 2 must be below num_shards 2");
  CHECK_ERROR(open_text("{\"source\": {\"format\": \"range\", \"stop\": 3}, \"stages\": [{\"batch\": 2, \"take\": 1}]}"),
              KILN_INVALID_ARGUMENT, "expected an object with one key");
  CHECK_ERROR(open_text("{\"source\": {\"format\": \"range\", \"stop\": 3}, \"on_error\": \"ignore\"}"), KILN_INVALID_ARGUMENT,
              "neither \"fail\" nor \"skip\"");
}

static void test_record_json(void) {
  static const char *const names[] = {"a", "b", "c", "d"};
  kiln_record r;
  CHECK_OK(kiln_record_init(&r, names, 4, 0, NULL));
  int64_t dims[2] = {2, 2};
  CHECK_OK(kiln_tensor_alloc(&r.values[0], KILN_FLOAT, 2, dims));
  float *f = r.values[0].data;
  f[0] = 1.5f, f[1] = -0.0f, f[2] = 1e30f, f[3] = 0.1f;
  CHECK_OK(kiln_tensor_alloc(&r.values[1], KILN_STRING, 0, NULL));
  ((char **)r.values[1].data)[0] = strdup("say \"hi\"");
  CHECK_OK(kiln_tensor_alloc(&r.values[3], KILN_STRING, 0, NULL));
  ((char **)r.values[3].data)[0] = strdup("\xff\xfe");
  char *json = kiln_record_to_json(&r);
  CHECK(json && strcmp(json, "{\"a\":[[1.5,-0],[1e+30,0.1]],\"b\":\"say \\\"hi\\\"\",\"c\":null,\"d\":{\"b64\":\"//4=\"}}") == 0);
  if (json) fprintf(stderr, "%s\n", json);
  free(json);
  kiln_record_release(&r);
}

TEST_MAIN(TEST(test_range_and_take_skip), TEST(test_shuffle_is_seeded_and_complete), TEST(test_batch),
          TEST(test_repeat_and_shard), TEST(test_cache_memory_and_file), TEST(test_prefetch_keeps_the_sequence),
          TEST(test_spec_errors), TEST(test_record_json))
