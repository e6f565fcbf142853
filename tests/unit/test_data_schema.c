/* Statistics against numpy's (tests/data/make_data_fixtures_schema.py), the schema's JSON round
 * trip and strict parsing, record checks, validation of a stream, and drift against the formulas. */
#include "test.h"

#include <cjson/cJSON.h>

#include "data/data.h"
#include "kiln/data.h"

static const char *const names[] = {"x", "n", "big", "s"};

static char *fixture_path(const char *name) {
  const char *dir = getenv("KILN_TEST_DATA");
  static char path[1024];
  snprintf(path, sizeof path, "%s/data/%s", dir ? dir : "tests/data", name);
  return path;
}

static cJSON *read_json(const char *name) {
  void *text;
  size_t len;
  kiln_status s = kiln_file_read(fixture_path(name), 0, &text, &len);
  if (s) {
    fprintf(stderr, "%s\n", kiln_status_message(s));
    kiln_status_free(s);
    return NULL;
  }
  cJSON *j = cJSON_ParseWithLength(text, len);
  free(text);
  return j;
}

static double num(const cJSON *obj, const char *key) {
  const cJSON *m = cJSON_GetObjectItemCaseSensitive(obj, key);
  return cJSON_IsNumber(m) ? m->valuedouble : NAN;
}

/* The fixture's columns. */
typedef struct columns {
  kiln_tensor x, present, n, big, shifted;
  cJSON *s;
  cJSON *expected;
} columns;

static int load_columns(columns *c) {
  memset(c, 0, sizeof *c);
  kiln_status s = kiln_npy_read(fixture_path("schema_x.npy"), &c->x);
  if (!s) s = kiln_npy_read(fixture_path("schema_x_present.npy"), &c->present);
  if (!s) s = kiln_npy_read(fixture_path("schema_n.npy"), &c->n);
  if (!s) s = kiln_npy_read(fixture_path("schema_big.npy"), &c->big);
  if (!s) s = kiln_npy_read(fixture_path("schema_shifted.npy"), &c->shifted);
  if (s) {
    fprintf(stderr, "fixtures: %s (run tests/data/make_data_fixtures_schema.py)\n", kiln_status_message(s));
    kiln_status_free(s);
    return -1;
  }
  c->s = read_json("schema_s.json");
  c->expected = read_json("schema_expected.json");
  return c->s && c->expected ? 0 : -1;
}

static void free_columns(columns *c) {
  kiln_tensor_release(&c->x);
  kiln_tensor_release(&c->present);
  kiln_tensor_release(&c->n);
  kiln_tensor_release(&c->big);
  kiln_tensor_release(&c->shifted);
  cJSON_Delete(c->s);
  cJSON_Delete(c->expected);
}

static void set_string(kiln_record *r, int i, const char *text) {
  kiln_tensor t;
  CHECK_OK(kiln_tensor_alloc(&t, KILN_STRING, 0, NULL));
  ((char **)t.data)[0] = strdup(text);
  kiln_record_set(r, i, &t);
}

/* Record i of the fixture: x (float, missing where present is 0), n (int64), big (double),
 * s (string, missing where the JSON holds null). */
static void make_record(const columns *c, int64_t i, kiln_record *r) {
  void *data;
  CHECK_OK(kiln_record_init(r, names, 4, 32, &data));
  char *p = data;
  if (((const uint8_t *)c->present.data)[i]) {
    kiln_tensor_set_shape(&r->values[0], KILN_FLOAT, 0, NULL);
    r->values[0].data = p;
    memcpy(p, (const float *)c->x.data + i, 4);
  }
  kiln_tensor_set_shape(&r->values[1], KILN_INT64, 0, NULL);
  r->values[1].data = p + 8;
  memcpy(p + 8, (const int64_t *)c->n.data + i, 8);
  kiln_tensor_set_shape(&r->values[2], KILN_DOUBLE, 0, NULL);
  r->values[2].data = p + 16;
  memcpy(p + 16, (const double *)c->big.data + i, 8);
  const cJSON *s = cJSON_GetArrayItem(c->s, (int)i);
  if (cJSON_IsString(s)) set_string(r, 3, s->valuestring);
  r->index = i;
}

static kiln_stats *fixture_stats(const columns *c) {
  kiln_stats *st;
  CHECK_OK(kiln_stats_create(NULL, &st));
  int64_t n = kiln_tensor_numel(&c->n);
  for (int pass = 0; pass < 2; pass++) {
    for (int64_t i = 0; i < n; i++) {
      kiln_record r;
      make_record(c, i, &r);
      CHECK_OK(pass ? kiln_stats_add_histogram(st, &r) : kiln_stats_add(st, &r));
      kiln_record_release(&r);
    }
    if (!pass) CHECK_OK(kiln_stats_end_pass(st));
  }
  return st;
}

static void check_numeric(const kiln_stats *st, const char *name, const cJSON *want, double rel) {
  int i = kiln_stats_find(st, name);
  CHECK(i >= 0);
  if (i < 0) return;
  const kiln_feature_stats *f = &st->features[i];
  CHECK(f->numeric);
  CHECK(f->present == (int64_t)num(want, "present"));
  CHECK(f->missing == (int64_t)num(want, "missing"));
  CHECK(f->count == (int64_t)num(want, "count"));
  CHECK(f->nan == (int64_t)num(want, "nan"));
  CHECK(f->inf == (int64_t)num(want, "inf"));
  CHECK(f->min == num(want, "min"));
  CHECK(f->max == num(want, "max"));
  CHECK_NEAR(f->mean, num(want, "mean"), 1e-12 * fabs(num(want, "mean")));
  CHECK_NEAR(f->std, num(want, "std"), rel * num(want, "std"));
  const cJSON *edges = cJSON_GetObjectItemCaseSensitive(want, "edges");
  const cJSON *counts = cJSON_GetObjectItemCaseSensitive(want, "counts");
  CHECK(f->bins == cJSON_GetArraySize(counts));
  for (int k = 0; k < f->bins && k <= cJSON_GetArraySize(counts); k++) {
    CHECK(f->edges[k] == cJSON_GetArrayItem(edges, k)->valuedouble);
    if (f->counts[k] != (int64_t)cJSON_GetArrayItem(counts, k)->valuedouble) {
      fprintf(stderr, "%s: bin %d holds %lld, numpy %g\n", name, k, (long long)f->counts[k],
              cJSON_GetArrayItem(counts, k)->valuedouble);
      test_failures++;
    }
  }
  CHECK(f->outside == 0);
}

static void check_values(const kiln_feature_stats *f, const cJSON *want) {
  CHECK(f->categorical && !f->too_many);
  CHECK(f->distinct == cJSON_GetArraySize(want));
  int64_t last = INT64_MAX;
  for (int k = 0; k < f->distinct; k++) {
    const cJSON *w = cJSON_GetObjectItemCaseSensitive(want, f->values[k].value);
    CHECK(w && (int64_t)w->valuedouble == f->values[k].count);
    CHECK(f->values[k].count <= last); /* most frequent first */
    last = f->values[k].count;
  }
}

static void test_stats_match_numpy(void) {
  columns c;
  if (load_columns(&c)) {
    test_failures++;
    free_columns(&c);
    return;
  }
  kiln_stats *st = fixture_stats(&c);
  CHECK(st->num_records == (int64_t)num(c.expected, "records"));
  CHECK(st->count == 4);
  check_numeric(st, "x", cJSON_GetObjectItem(c.expected, "x"), 1e-9);
  check_numeric(st, "n", cJSON_GetObjectItem(c.expected, "n"), 1e-9);
  /* 1e9 + N(0, 1): a sum of squares would keep no digit of this std */
  check_numeric(st, "big", cJSON_GetObjectItem(c.expected, "big"), 1e-6);
  const kiln_feature_stats *x = &st->features[kiln_stats_find(st, "x")];
  CHECK(x->dtype == KILN_FLOAT && x->rank == 0 && !x->dtype_varied && !x->categorical);
  const kiln_feature_stats *n = &st->features[kiln_stats_find(st, "n")];
  CHECK(n->dtype == KILN_INT64);
  check_values(n, cJSON_GetObjectItem(cJSON_GetObjectItem(c.expected, "n"), "values"));
  const kiln_feature_stats *s = &st->features[kiln_stats_find(st, "s")];
  const cJSON *ws = cJSON_GetObjectItem(c.expected, "s");
  CHECK(s->dtype == KILN_STRING && !s->numeric);
  CHECK(s->present == (int64_t)num(ws, "present") && s->missing == (int64_t)num(ws, "missing"));
  check_values(s, cJSON_GetObjectItem(ws, "values"));

  /* the JSON form carries the same numbers */
  char *json = kiln_stats_to_json(st, 3);
  cJSON *j = cJSON_Parse(json);
  CHECK(j != NULL);
  const cJSON *f0 = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "features"), 0);
  CHECK(strcmp(cJSON_GetObjectItem(f0, "name")->valuestring, "x") == 0);
  CHECK(num(cJSON_GetObjectItem(f0, "numeric"), "mean") == x->mean);
  CHECK(num(f0, "missing_rate") == 0.02);
  const cJSON *f3 = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "features"), 3);
  CHECK(cJSON_GetArraySize(cJSON_GetObjectItem(cJSON_GetObjectItem(f3, "values"), "top")) == 3);
  CHECK(strcmp(cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(cJSON_GetObjectItem(f3, "values"), "top"), 0),
                                   "value")->valuestring, "red") == 0);
  cJSON_Delete(j);
  free(json);
  kiln_stats_free(st);
  free_columns(&c);
}

/* Features that come and go, change dtype or shape, repeat, or have too many values. */
static void test_stats_varying_records(void) {
  static const char *const ab[] = {"a", "b"}, *const ba[] = {"b", "a"}, *const aa[] = {"a", "a"};
  kiln_stats_options o = {.bins = 4, .max_categories = 3};
  kiln_stats *st;
  CHECK_OK(kiln_stats_create(&o, &st));
  const char *const *order[] = {ab, ba, aa, ab, ab};
  for (int i = 0; i < 5; i++) {
    kiln_record r;
    void *data;
    CHECK_OK(kiln_record_init(&r, order[i], 2, 64, &data));
    int64_t dims[1] = {i < 3 ? 1 : 2};
    int ia = kiln_record_find(&r, "a"), ib = kiln_record_find(&r, "b");
    /* "a": int64 in the first records, a float in the last (its dtype widens) */
    if (i < 4) {
      kiln_tensor_set_shape(&r.values[ia], KILN_INT64, 1, dims);
      r.values[ia].data = data;
      for (int k = 0; k < dims[0]; k++) ((int64_t *)data)[k] = 10 * i + k;
    } else {
      kiln_tensor_set_shape(&r.values[ia], KILN_FLOAT, 1, dims);
      r.values[ia].data = data;
      ((float *)data)[0] = 0.5f;
      ((float *)data)[1] = 1.5f;
    }
    if (ib >= 0) set_string(&r, ib, i == 0 ? "p" : i == 1 ? "q" : i == 3 ? "r" : "s");
    CHECK_OK(kiln_stats_add(st, &r));
    kiln_record_release(&r);
  }
  CHECK_ERROR(kiln_stats_set_edges(st, "a", (const double[]){0, 1}, 2), KILN_FAILED_PRECONDITION, "before the first pass ended");
  CHECK_ERROR(kiln_stats_add_histogram(st, &(kiln_record){0}), KILN_FAILED_PRECONDITION, "before the first pass ended");
  CHECK_OK(kiln_stats_end_pass(st));
  CHECK(st->count == 2);
  const kiln_feature_stats *a = &st->features[0], *b = &st->features[1];
  CHECK(strcmp(a->name, "a") == 0 && strcmp(b->name, "b") == 0);
  CHECK(a->dtype_varied && a->dtype == KILN_FLOAT);
  CHECK(a->rank == -1); /* [1] then [2] */
  CHECK(a->present == 5 && a->missing == 0);
  /* i=0: 0; i=1 (order b, a): 10; i=2 (a twice: the first counts): 20; i=3: 30, 31; i=4: 0.5, 1.5 */
  CHECK(a->count == 7);
  CHECK_NEAR(a->mean, (0 + 10 + 20 + 30 + 31 + 0.5 + 1.5) / 7.0, 1e-12);
  CHECK(a->min == 0 && a->max == 31);
  CHECK(a->too_many); /* 0, 10, 20, 30: a fourth distinct value past the limit of 3 */
  CHECK(b->present == 4 && b->missing == 1);
  CHECK(b->too_many && b->distinct == 0); /* p q r s */
  CHECK(a->bins == 4 && a->edges[0] == 0 && a->edges[4] == 31);
  CHECK_ERROR(kiln_stats_set_edges(st, "b", (const double[]){0, 1}, 2), KILN_INVALID_ARGUMENT, "not numeric");
  CHECK_ERROR(kiln_stats_set_edges(st, "zz", (const double[]){0, 1}, 2), KILN_NOT_FOUND, "no feature 'zz'");
  CHECK_ERROR(kiln_stats_set_edges(st, "a", (const double[]){1, 0}, 2), KILN_INVALID_ARGUMENT, "ascending");
  CHECK_OK(kiln_stats_set_edges(st, "a", (const double[]){0, 10, 20}, 3));
  kiln_record r;
  CHECK_ERROR(kiln_stats_add(st, &(kiln_record){0}), KILN_FAILED_PRECONDITION, "after the first pass");
  void *data;
  CHECK_OK(kiln_record_init(&r, ab, 1, 16, &data));
  int64_t two[1] = {2};
  kiln_tensor_set_shape(&r.values[0], KILN_INT64, 1, two);
  r.values[0].data = data;
  ((int64_t *)data)[0] = 10;
  ((int64_t *)data)[1] = 25;
  CHECK_OK(kiln_stats_add_histogram(st, &r));
  kiln_record_release(&r);
  CHECK(a->counts[0] == 0 && a->counts[1] == 1 && a->outside == 1);
  kiln_stats_free(st);
}

static kiln_schema *fixture_schema(void) {
  columns c;
  kiln_schema *schema = NULL;
  if (load_columns(&c) == 0) {
    kiln_stats *st = fixture_stats(&c);
    CHECK_OK(kiln_schema_from_stats(st, &schema));
    kiln_stats_free(st);
  } else {
    test_failures++;
  }
  free_columns(&c);
  return schema;
}

static void test_schema_infer_and_round_trip(void) {
  kiln_schema *s = fixture_schema();
  if (!s) return;
  CHECK(s->num_records == 1000 && s->count == 4);
  const kiln_schema_feature *x = &s->features[kiln_schema_find(s, "x")];
  CHECK(x->dtype == KILN_FLOAT && x->rank == 0);
  CHECK(x->missing_rate == 0.02 && x->max_missing_rate == 0.02);
  CHECK(x->allow_nan); /* the data held a NaN */
  CHECK(x->has_stats && x->mean == x->mean && x->bins == 10);
  const kiln_schema_feature *n = &s->features[kiln_schema_find(s, "n")];
  CHECK(n->min == 0 && n->max == 19 && n->max_missing_rate == 0 && n->domain_count == -1);
  const kiln_schema_feature *big = &s->features[kiln_schema_find(s, "big")];
  CHECK(!big->allow_nan);
  const kiln_schema_feature *str = &s->features[kiln_schema_find(s, "s")];
  CHECK(str->missing_rate == 0.143 && str->max_missing_rate == 0.15); /* rounded up to a whole percent */
  CHECK(str->domain_count == 5 && strcmp(str->domain[0], "blue") == 0 && strcmp(str->domain[4], "red") == 0);
  CHECK(!str->has_stats && isnan(str->min));

  char *json = kiln_schema_to_json(s);
  kiln_schema *back;
  CHECK_OK(kiln_schema_parse(json, strlen(json), &back));
  char *again = kiln_schema_to_json(back);
  CHECK(strcmp(json, again) == 0);
  /* the pinned layout the normalize transform reads */
  cJSON *j = cJSON_Parse(json);
  const cJSON *fx = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "features"), 0);
  CHECK(num(j, "kiln_schema") == 1 && num(j, "num_records") == 1000);
  CHECK(num(cJSON_GetObjectItem(fx, "stats"), "mean") == x->mean);
  CHECK(num(cJSON_GetObjectItem(fx, "stats"), "std") == x->std);
  CHECK(cJSON_GetArraySize(cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(fx, "stats"), "histogram"), "edges")) == 11);
  cJSON_Delete(j);
  free(json);
  free(again);
  kiln_schema_free(back);
  kiln_schema_free(s);
}

static kiln_status parse(const char *json) {
  kiln_schema *s;
  kiln_status e = kiln_schema_parse(json, strlen(json), &s);
  if (!e) kiln_schema_free(s);
  return e;
}

static void test_schema_parse_errors(void) {
  static const struct {
    const char *json, *error;
  } cases[] = {
      {"", "not valid JSON"},
      {"{\"kiln_schema\": 1, \"features\": []} x", "unexpected text after"},
      {"[]", "expected a JSON object"},
      {"{\"features\": []}", "\"kiln_schema\": 1"},
      {"{\"kiln_schema\": 2, \"features\": []}", "\"kiln_schema\": 1"},
      {"{\"kiln_schema\": 1}", "features: expected a list"},
      {"{\"kiln_schema\": 1, \"features\": [], \"extra\": 0}", "unknown key 'extra'"},
      {"{\"kiln_schema\": 1, \"kiln_schema\": 1, \"features\": []}", "key 'kiln_schema' appears twice"},
      {"{\"kiln_schema\": 1, \"num_records\": -1, \"features\": []}", "num_records"},
      {"{\"kiln_schema\": 1, \"features\": [1]}", "features[0]: expected a JSON object"},
      {"{\"kiln_schema\": 1, \"features\": [{\"dtype\": \"float\"}]}", "features[0].name: expected a non-empty string"},
      {"{\"kiln_schema\": 1, \"features\": [{\"name\": \"a\"}]}", "missing required key 'dtype'"},
      {"{\"kiln_schema\": 1, \"features\": [{\"name\": \"a\", \"dtype\": \"complex64\"}]}", "not a dtype a feature can have"},
      {"{\"kiln_schema\": 1, \"features\": [{\"name\": \"a\", \"dtype\": \"float\", \"shape\": [-1]}]}", "features[0].shape[0]"},
      {"{\"kiln_schema\": 1, \"features\": [{\"name\": \"a\", \"dtype\": \"float\", \"shape\": [1,1,1,1,1,1,1,1,1]}]}", "more than 8"},
      {"{\"kiln_schema\": 1, \"features\": [{\"name\": \"a\", \"dtype\": \"float\", \"min\": \"0\"}]}", "features[0].min: expected a number or null"},
      {"{\"kiln_schema\": 1, \"features\": [{\"name\": \"a\", \"dtype\": \"float\", \"min\": 2, \"max\": 1}]}", "min 2 is above max 1"},
      {"{\"kiln_schema\": 1, \"features\": [{\"name\": \"a\", \"dtype\": \"float\", \"max_missing_rate\": 1.5}]}", "max_missing_rate: expected a number in [0, 1]"},
      {"{\"kiln_schema\": 1, \"features\": [{\"name\": \"a\", \"dtype\": \"float\", \"domain\": [\"x\"]}]}", "only string features have a domain"},
      {"{\"kiln_schema\": 1, \"features\": [{\"name\": \"a\", \"dtype\": \"string\", \"domain\": [\"x\", \"x\"]}]}", "'x' is listed twice"},
      {"{\"kiln_schema\": 1, \"features\": [{\"name\": \"a\", \"dtype\": \"string\", \"domain\": [1]}]}", "domain[0]: expected a string"},
      {"{\"kiln_schema\": 1, \"features\": [{\"name\": \"a\", \"dtype\": \"string\", \"min\": 1}]}", "a string feature has no min"},
      {"{\"kiln_schema\": 1, \"features\": [{\"name\": \"a\", \"dtype\": \"int64\"}, {\"name\": \"a\", \"dtype\": \"int64\"}]}", "feature 'a' is listed twice"},
      {"{\"kiln_schema\": 1, \"features\": [{\"name\": \"a\", \"dtype\": \"float\", \"stats\": {\"mean\": 1, \"median\": 2}}]}", "features[0].stats: unknown key 'median'"},
      {"{\"kiln_schema\": 1, \"features\": [{\"name\": \"a\", \"dtype\": \"float\", \"stats\": {\"std\": -1}}]}", "is negative"},
      {"{\"kiln_schema\": 1, \"features\": [{\"name\": \"a\", \"dtype\": \"float\", \"stats\": {\"histogram\": {\"edges\": [0, 1], \"counts\": [1, 2]}}}]}", "2 counts for 2 edges"},
      {"{\"kiln_schema\": 1, \"features\": [{\"name\": \"a\", \"dtype\": \"float\", \"stats\": {\"histogram\": {\"edges\": [1, 0], \"counts\": [1]}}}]}", "edges[1]"},
      {"{\"kiln_schema\": 1, \"features\": [{\"name\": \"a\", \"dtype\": \"float\", \"stats\": {\"histogram\": {\"edges\": [0, 1], \"counts\": [0.5]}}}]}", "counts[0]: expected a count"},
      {"{\"kiln_schema\": 1, \"features\": [{\"name\": \"a\", \"dtype\": \"float\", \"allow_nan\": 1}]}", "allow_nan: expected true or false"},
      {"{\"kiln_schema\": 1, \"features\": [{\"name\": \"a\", \"dtype\": \"float\", \"min\": 1e999}]}", "expected a number or null"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    kiln_status e = parse(cases[i].json);
    if (!e || !strstr(kiln_status_message(e), cases[i].error)) {
      fprintf(stderr, "case %zu: got '%s', expected an error containing '%s'\n", i, e ? kiln_status_message(e) : "ok",
              cases[i].error);
      test_failures++;
    }
    kiln_status_free(e);
  }
  /* a minimal hand-written schema is fine: absent constraints are not checked */
  CHECK_OK(parse("{\"kiln_schema\": 1, \"features\": [{\"name\": \"a\", \"dtype\": null}]}"));
  CHECK_ERROR(kiln_schema_read("/nonexistent/schema.json", &(kiln_schema *){0}), KILN_NOT_FOUND, "/nonexistent/schema.json");
}

static const char *checked_schema =
    "{\"kiln_schema\": 1, \"num_records\": 10, \"features\": ["
    "{\"name\": \"age\", \"dtype\": \"int64\", \"shape\": [], \"max_missing_rate\": 0, \"min\": 0, \"max\": 99},"
    "{\"name\": \"score\", \"dtype\": \"float\", \"shape\": [2], \"max_missing_rate\": 0.5, \"allow_nan\": false},"
    "{\"name\": \"colour\", \"dtype\": \"string\", \"shape\": [], \"domain\": [\"red\", \"blue\"]}]}";

static const char *const rec_names[] = {"age", "score", "colour", "extra"};

/* A record of the checked schema's features; score has `score_len` elements, NaN when nan. */
static void make_checked(kiln_record *r, int count, int age_present, kiln_dtype age_dtype, int64_t age, int score_len,
                         int nan, const char *colour) {
  void *data;
  CHECK_OK(kiln_record_init(r, rec_names, count, 64, &data));
  if (age_present) {
    kiln_tensor_set_shape(&r->values[0], age_dtype, 0, NULL);
    r->values[0].data = data;
    if (age_dtype == KILN_INT64) *(int64_t *)data = age;
    else *(double *)data = (double)age;
  }
  if (score_len) {
    int64_t dims[1] = {score_len};
    kiln_tensor_set_shape(&r->values[1], KILN_FLOAT, 1, dims);
    r->values[1].data = (char *)data + 8;
    for (int k = 0; k < score_len; k++) ((float *)r->values[1].data)[k] = nan && k == 1 ? NAN : 0.5f;
  }
  if (colour) set_string(r, 2, colour);
  if (count > 3) {
    kiln_tensor_set_shape(&r->values[3], KILN_INT32, 0, NULL);
    r->values[3].data = (char *)data + 32;
  }
}

static void test_check_record(void) {
  kiln_schema *s;
  CHECK_OK(kiln_schema_parse(checked_schema, strlen(checked_schema), &s));
  if (!s) return;
  kiln_record r;
  make_checked(&r, 3, 1, KILN_INT64, 42, 2, 0, "red");
  CHECK_OK(kiln_schema_check_record(s, &r));
  kiln_record_release(&r);
  /* score may be missing (max_missing_rate 0.5), colour too (no constraint) */
  make_checked(&r, 3, 1, KILN_INT64, 42, 0, 0, NULL);
  CHECK_OK(kiln_schema_check_record(s, &r));
  kiln_record_release(&r);

  make_checked(&r, 4, 1, KILN_INT64, 150, 3, 1, "green");
  r.source = "x.csv";
  r.index = 7;
  kiln_status e = kiln_schema_check_record(s, &r);
  const char *m = kiln_status_message(e);
  CHECK(kiln_status_code(e) == KILN_INVALID_ARGUMENT);
  CHECK(strstr(m, "x.csv: record 7: 5 anomalies") != NULL);
  CHECK(strstr(m, "feature \"age\": out_of_range: 150 is outside [0, 99]") != NULL);
  CHECK(strstr(m, "feature \"score\": shape_mismatch: expected shape [2], found [3]") != NULL);
  CHECK(strstr(m, "feature \"score\": nan: NaN where the schema allows none") != NULL);
  CHECK(strstr(m, "feature \"colour\": new_category: 'green' is not in the domain (2 values)") != NULL);
  CHECK(strstr(m, "feature \"extra\": unexpected_feature: not in the schema") != NULL);
  kiln_status_free(e);
  kiln_record_release(&r);

  make_checked(&r, 3, 0, KILN_INT64, 0, 2, 0, "red");
  CHECK_ERROR(kiln_schema_check_record(s, &r), KILN_INVALID_ARGUMENT, "feature \"age\": missing_feature: a required feature has no value");
  kiln_record_release(&r);
  make_checked(&r, 3, 1, KILN_DOUBLE, 5, 2, 0, "red");
  CHECK_ERROR(kiln_schema_check_record(s, &r), KILN_INVALID_ARGUMENT, "feature \"age\": wrong_type: expected int64, found double");
  kiln_record_release(&r);
  kiln_record empty;
  CHECK_OK(kiln_record_init(&empty, rec_names, 0, 0, NULL));
  CHECK_ERROR(kiln_schema_check_record(s, &empty), KILN_INVALID_ARGUMENT, "1 anomaly: feature \"age\": missing_feature: a required feature is absent");
  kiln_record_release(&empty);
  kiln_schema_free(s);
}

static void test_validation(void) {
  kiln_schema *s;
  CHECK_OK(kiln_schema_parse(checked_schema, strlen(checked_schema), &s));
  if (!s) return;
  kiln_validation *v;
  CHECK_OK(kiln_validation_create(s, &v));
  /* 10 records: 3..5 have score missing (30 % <= 50 %), 2 and 6 are out of range, 4 has a new
   * colour, 8 and 9 an extra feature, 9 a NaN */
  for (int i = 0; i < 10; i++) {
    kiln_record r;
    make_checked(&r, i >= 8 ? 4 : 3, 1, KILN_INT64, i == 2 || i == 6 ? -1 : 30, i >= 3 && i <= 5 ? 0 : 2, i == 9,
                 i == 4 ? "green" : "blue");
    CHECK_OK(kiln_validation_add(v, &r));
    kiln_record_release(&r);
  }
  CHECK_OK(kiln_validation_finish(v));
  CHECK(v->records == 10 && v->count == 4);
  if (v->count == 4) {
    CHECK(strcmp(v->anomalies[0].feature, "age") == 0 && v->anomalies[0].kind == KILN_ANOMALY_OUT_OF_RANGE);
    CHECK(v->anomalies[0].count == 2 && v->anomalies[0].n_examples == 2 && v->anomalies[0].examples[1] == 6);
    CHECK(strstr(v->anomalies[0].description, "-1 is outside [0, 99] (first at record 2; 2 records)") != NULL);
    CHECK(v->anomalies[1].kind == KILN_ANOMALY_NAN && v->anomalies[1].examples[0] == 9);
    CHECK(v->anomalies[2].kind == KILN_ANOMALY_NEW_CATEGORY && v->anomalies[2].count == 1);
    CHECK(strcmp(v->anomalies[3].feature, "extra") == 0 && v->anomalies[3].kind == KILN_ANOMALY_UNEXPECTED_FEATURE);
    CHECK(v->anomalies[3].count == 2);
  }
  char *json = kiln_validation_to_json(v);
  cJSON *j = cJSON_Parse(json);
  CHECK(j && cJSON_IsFalse(cJSON_GetObjectItem(j, "clean")) && num(j, "records") == 10);
  CHECK(strcmp(cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "anomalies"), 2), "kind")->valuestring,
               "new_category") == 0);
  cJSON_Delete(j);
  free(json);
  kiln_validation_free(v);

  /* score missing in 6 of 10 records: above its 50 %; age never present */
  CHECK_OK(kiln_validation_create(s, &v));
  for (int i = 0; i < 10; i++) {
    kiln_record r;
    make_checked(&r, 3, 0, KILN_INT64, 0, i < 6 ? 0 : 2, 0, "red");
    CHECK_OK(kiln_validation_add(v, &r));
    kiln_record_release(&r);
  }
  CHECK_OK(kiln_validation_finish(v));
  CHECK(v->count == 2);
  if (v->count == 2) {
    CHECK(v->anomalies[0].kind == KILN_ANOMALY_MISSING_FEATURE && strstr(v->anomalies[0].description, "no value in any of the 10"));
    CHECK(v->anomalies[1].kind == KILN_ANOMALY_MISSING_FEATURE && v->anomalies[1].count == 6);
    CHECK(strstr(v->anomalies[1].description, "missing in 6 of 10 records (rate 0.6, max_missing_rate 0.5)") != NULL);
    CHECK(v->anomalies[1].n_examples == 5 && v->anomalies[1].examples[4] == 4);
  }
  kiln_validation_free(v);
  kiln_schema_free(s);
}

static void test_drift_formulas(void) {
  cJSON *want = read_json("schema_expected.json");
  if (!want) {
    test_failures++;
    return;
  }
  const cJSON *c;
  cJSON_ArrayForEach(c, cJSON_GetObjectItem(want, "js_cases")) {
    int64_t p[8], q[8];
    int n = cJSON_GetArraySize(cJSON_GetObjectItem(c, "p"));
    for (int k = 0; k < n; k++) {
      p[k] = (int64_t)cJSON_GetArrayItem(cJSON_GetObjectItem(c, "p"), k)->valuedouble;
      q[k] = (int64_t)cJSON_GetArrayItem(cJSON_GetObjectItem(c, "q"), k)->valuedouble;
    }
    CHECK_NEAR(kx_js_divergence(p, q, n), num(c, "js"), 1e-12);
  }
  CHECK(kx_js_divergence((const int64_t[]){0, 0}, (const int64_t[]){0, 0}, 2) == 0);
  CHECK(kx_js_divergence((const int64_t[]){0, 0}, (const int64_t[]){1, 0}, 2) == 1);

  /* numeric drift over the fixture's common edges; categorical drift of s against another sample */
  columns cols;
  if (load_columns(&cols) == 0) {
    kiln_stats *a;
    CHECK_OK(kiln_stats_create(NULL, &a));
    kiln_stats *b;
    CHECK_OK(kiln_stats_create(NULL, &b));
    int64_t n = kiln_tensor_numel(&cols.n);
    for (int64_t i = 0; i < n; i++) {
      kiln_record r;
      make_record(&cols, i, &r);
      CHECK_OK(kiln_stats_add(a, &r));
      kiln_record_release(&r);
    }
    const cJSON *other = cJSON_GetObjectItem(cJSON_GetObjectItem(want, "linf"), "other");
    static const char *const bn[] = {"x", "s"};
    for (int64_t i = 0; i < n; i++) {
      kiln_record r;
      void *data;
      CHECK_OK(kiln_record_init(&r, bn, 2, 8, &data));
      kiln_tensor_set_shape(&r.values[0], KILN_FLOAT, 0, NULL);
      r.values[0].data = data;
      *(float *)data = ((const float *)cols.shifted.data)[i];
      if (i < cJSON_GetArraySize(other)) set_string(&r, 1, cJSON_GetArrayItem(other, (int)i)->valuestring);
      CHECK_OK(kiln_stats_add(b, &r));
      kiln_record_release(&r);
    }
    CHECK_OK(kiln_stats_end_pass(a));
    CHECK_OK(kiln_stats_end_pass(b));
    const cJSON *drift = cJSON_GetObjectItem(want, "drift");
    const cJSON *edges = cJSON_GetObjectItem(drift, "edges");
    double e[11];
    for (int k = 0; k < 11; k++) e[k] = cJSON_GetArrayItem(edges, k)->valuedouble;
    CHECK_OK(kiln_stats_set_edges(a, "x", e, 11));
    CHECK_OK(kiln_stats_set_edges(b, "x", e, 11));
    for (int64_t i = 0; i < n; i++) {
      kiln_record r;
      make_record(&cols, i, &r);
      CHECK_OK(kiln_stats_add_histogram(a, &r));
      kiln_record_release(&r);
      void *data;
      CHECK_OK(kiln_record_init(&r, bn, 1, 8, &data));
      kiln_tensor_set_shape(&r.values[0], KILN_FLOAT, 0, NULL);
      r.values[0].data = data;
      *(float *)data = ((const float *)cols.shifted.data)[i];
      CHECK_OK(kiln_stats_add_histogram(b, &r));
      kiln_record_release(&r);
    }
    for (int k = 0; k < 10; k++) {
      CHECK(a->features[0].counts[k] == (int64_t)cJSON_GetArrayItem(cJSON_GetObjectItem(drift, "a"), k)->valuedouble);
      CHECK(b->features[0].counts[k] == (int64_t)cJSON_GetArrayItem(cJSON_GetObjectItem(drift, "b"), k)->valuedouble);
    }
    /* n and big: edges differ between the sides (only A has them: presence) */
    kiln_drift *d;
    CHECK_OK(kiln_drift_from_stats(a, b, &d));
    CHECK(d->count == 4);
    if (d->count == 4) {
      CHECK(strcmp(d->features[0].method, "jensen_shannon") == 0);
      CHECK_NEAR(d->features[0].distance, num(drift, "js"), 1e-12);
      CHECK(strcmp(d->features[1].name, "n") == 0 && strcmp(d->features[1].method, "presence") == 0);
      CHECK(d->features[1].distance == 1);
      CHECK(strcmp(d->features[3].name, "s") == 0 && strcmp(d->features[3].method, "l_infinity") == 0);
      CHECK_NEAR(d->features[3].distance, num(cJSON_GetObjectItem(want, "linf"), "distance"), 1e-12);
    }
    char *json = kiln_drift_to_json(d, 0.1);
    cJSON *j = cJSON_Parse(json);
    CHECK(j && cJSON_IsTrue(cJSON_GetObjectItem(j, "drifted")));
    cJSON_Delete(j);
    free(json);
    kiln_drift_free(d);
  } else {
    test_failures++;
  }
  free_columns(&cols);
  cJSON_Delete(want);
}

/* The passes over a real dataset: a range source, reset between the passes. */
static void test_dataset_passes(void) {
  const char *spec = "{\"source\": {\"format\": \"range\", \"stop\": 100}}";
  kiln_dataset *d;
  CHECK_OK(kiln_dataset_open_spec(spec, strlen(spec), NULL, &d));
  if (!d) return;
  kiln_stats *st;
  CHECK_OK(kiln_stats_compute(d, &(kiln_stats_options){.bins = 4}, &st));
  CHECK(st && st->num_records == 100 && st->count == 1);
  if (st) {
    const kiln_feature_stats *x = &st->features[0];
    CHECK(x->mean == 49.5 && x->min == 0 && x->max == 99);
    CHECK_NEAR(x->std, 28.86607004772212, 1e-12); /* numpy.arange(100).std() */
    CHECK(x->counts[0] == 25 && x->counts[3] == 25);
    kiln_stats_free(st);
  }
  CHECK_OK(kiln_dataset_reset(d, 0));
  kiln_schema *schema;
  CHECK_OK(kiln_schema_infer(d, &schema));
  kiln_dataset_free(d);
  if (!schema) return;
  const char *shifted = "{\"source\": {\"format\": \"range\", \"start\": 50, \"stop\": 150}}";
  CHECK_OK(kiln_dataset_open_spec(shifted, strlen(shifted), NULL, &d));
  kiln_validation *v;
  CHECK_OK(kiln_validate(d, schema, &v));
  CHECK(v && v->count == 1 && v->anomalies[0].kind == KILN_ANOMALY_OUT_OF_RANGE && v->anomalies[0].count == 50);
  CHECK(v && v->anomalies[0].examples[0] == 50); /* the range source's index of the record valued 100 */
  kiln_validation_free(v);
  CHECK_OK(kiln_dataset_reset(d, 0));
  kiln_dataset *same;
  CHECK_OK(kiln_dataset_open_spec(spec, strlen(spec), NULL, &same));
  kiln_drift *drift;
  CHECK_OK(kiln_drift_compare(same, d, NULL, &drift));
  /* half the mass of each side is where the other has none: close to 0.5 */
  CHECK(drift && drift->count == 1 && drift->features[0].distance > 0.4);
  kiln_drift_free(drift);
  CHECK_OK(kiln_dataset_reset(same, 0));
  CHECK_OK(kiln_dataset_reset(d, 0));
  kiln_dataset_free(d);
  CHECK_OK(kiln_dataset_open_spec(spec, strlen(spec), NULL, &d));
  CHECK_OK(kiln_drift_compare(same, d, NULL, &drift));
  CHECK(drift && drift->features[0].distance == 0);
  kiln_drift_free(drift);
  kiln_dataset_free(d);
  kiln_dataset_free(same);
  kiln_schema_free(schema);
}

TEST_MAIN(TEST(test_stats_match_numpy), TEST(test_stats_varying_records), TEST(test_schema_infer_and_round_trip),
          TEST(test_schema_parse_errors), TEST(test_check_record), TEST(test_validation), TEST(test_drift_formulas),
          TEST(test_dataset_passes))
