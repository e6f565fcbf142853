/* The CSV source and writer against Python's csv module (tabular_expected.json), the quarantine
 * of bad rows, a multi-block file parsed in parallel, and the shared number parser. */
#include <unistd.h>

#include "core/number.h"
#include "tabular_helpers.h"

static kx_data_ctx ctx;

/* Whether value v is what the expected JSON item says (null: missing). */
static int value_is(const kiln_tensor *v, const cJSON *want) {
  if (cJSON_IsNull(want)) return v->dtype == KILN_UNDEFINED;
  switch (v->dtype) {
  /* as doubles: the JSON reader holds 2^53 + 1 as 2^53 (the exact value is checked on its own) */
  case KILN_INT64: return cJSON_IsNumber(want) && (double)*(int64_t *)v->data == want->valuedouble;
  case KILN_FLOAT: return cJSON_IsNumber(want) && *(float *)v->data == (float)want->valuedouble;
  case KILN_DOUBLE: return cJSON_IsNumber(want) && *(double *)v->data == want->valuedouble;
  case KILN_BOOL: return cJSON_IsBool(want) && *(uint8_t *)v->data == (cJSON_IsTrue(want) ? 1 : 0);
  case KILN_STRING: return cJSON_IsString(want) && strcmp(*(char **)v->data, want->valuestring) == 0;
  default: return 0;
  }
}

static void test_csv_quotes_and_types(void) {
  kx_stage *s;
  CHECK_OK(open_source(kx_csv_open, &ctx, "{\"format\":\"csv\",\"path\":\"%s\"}", fixture("tab_quotes.csv"), &s));
  if (!s) return;
  const cJSON *want = expected_at("csv_quotes", NULL);
  const cJSON *rows = cJSON_GetObjectItem(want, "rows"), *offsets = cJSON_GetObjectItem(want, "offsets");
  const cJSON *names = cJSON_GetObjectItem(want, "columns"), *dtypes = cJSON_GetObjectItem(want, "dtypes");
  kiln_record r;
  kiln_status err;
  int n = 0;
  for (; pull(s, &r, &err); n++) {
    const cJSON *row = cJSON_GetArrayItem(rows, n);
    CHECK(r.count == 4 && r.index == n && r.offset == (int64_t)cJSON_GetArrayItem(offsets, n)->valuedouble);
    for (int c = 0; c < r.count && c < 4; c++) {
      CHECK(strcmp(r.names[c], cJSON_GetArrayItem(names, c)->valuestring) == 0);
      const char *dt = cJSON_GetArrayItem(dtypes, c)->valuestring;
      const kiln_tensor *v = &r.values[c];
      CHECK(v->dtype == KILN_UNDEFINED || (v->rank == 0 && strcmp(kiln_dtype_name(v->dtype), dt) == 0) ||
            (v->dtype == KILN_STRING && strcmp(dt, "string") == 0));
      if (!value_is(v, cJSON_GetArrayItem(row, c))) {
        char *json = kiln_record_to_json(&r);
        fprintf(stderr, "row %d column %d differs: %s\n", n, c, json);
        free(json);
        test_failures++;
      }
    }
    kiln_record_release(&r);
  }
  CHECK_OK(err);
  CHECK(n == cJSON_GetArraySize(rows));
  /* the big integer stays exact: int64, not float */
  CHECK_OK(s->ops->reset(s, 1));
  for (int k = 0; k < 7 && pull(s, &r, &err); k++) {
    if (k == 6) CHECK(*(int64_t *)r.values[0].data == 9007199254740993LL);
    kiln_record_release(&r);
  }
  s->ops->free(s);
}

static void test_csv_delimiter_bom_no_header(void) {
  kx_stage *s;
  CHECK_OK(open_source(kx_csv_open, &ctx, "{\"format\":\"csv\",\"path\":\"%s\",\"delimiter\":\";\",\"header\":false}",
                       fixture("tab_semicolon.csv"), &s));
  if (!s) return;
  const cJSON *rows = expected_at("csv_semicolon", "rows", NULL);
  kiln_record r;
  kiln_status err;
  int n = 0;
  for (; pull(s, &r, &err); n++) {
    CHECK(r.count == 3 && strcmp(r.names[0], "c0") == 0 && strcmp(r.names[2], "c2") == 0);
    CHECK(r.values[0].dtype == KILN_STRING && r.values[1].dtype == KILN_INT64 && r.values[2].dtype == KILN_FLOAT);
    for (int c = 0; c < 3; c++) CHECK(value_is(&r.values[c], cJSON_GetArrayItem(cJSON_GetArrayItem(rows, n), c)));
    if (n == 0) CHECK(r.offset == 3); /* after the BOM */
    kiln_record_release(&r);
  }
  CHECK_OK(err);
  CHECK(n == 3);
  s->ops->free(s);

  /* columns override inference; na_values replace the defaults */
  CHECK_OK(open_source(kx_csv_open, &ctx,
                       "{\"format\":\"csv\",\"path\":\"%s\",\"columns\":{\"id\":\"double\",\"flag\":\"string\"},"
                       "\"na_values\":[\"NA\"]}",
                       fixture("tab_quotes.csv"), &s));
  if (!s) return;
  for (n = 0; pull(s, &r, &err); n++) {
    CHECK(r.values[0].dtype == KILN_DOUBLE);
    if (n == 0) CHECK(r.values[3].dtype == KILN_STRING && strcmp(*(char **)r.values[3].data, "true") == 0);
    if (n == 4) CHECK(r.values[1].dtype == KILN_STRING && **(char **)r.values[1].data == '\0'); /* "" is text now */
    /* "NaN" is text now, and so "" made the score column a string column */
    if (n == 5) CHECK(r.values[1].dtype == KILN_UNDEFINED && r.values[2].dtype == KILN_STRING && strcmp(*(char **)r.values[2].data, "NaN") == 0);
    kiln_record_release(&r);
  }
  CHECK_OK(err);
  s->ops->free(s);
}

static void test_csv_spec_errors(void) {
  kx_stage *s;
  const char *path = fixture("tab_quotes.csv");
  CHECK_ERROR(open_source(kx_csv_open, &ctx, "{\"format\":\"csv\",\"path\":\"%s\",\"delimiter\":\"ab\"}", path, &s),
              KILN_INVALID_ARGUMENT, "source.delimiter: expected one character");
  CHECK_ERROR(open_source(kx_csv_open, &ctx, "{\"format\":\"csv\",\"path\":\"%s\",\"columns\":{\"nope\":\"float\"}}", path, &s),
              KILN_INVALID_ARGUMENT, "source.columns.nope: ");
  CHECK_ERROR(open_source(kx_csv_open, &ctx, "{\"format\":\"csv\",\"path\":\"%s\",\"columns\":{\"id\":\"complex\"}}", path, &s),
              KILN_INVALID_ARGUMENT, "'complex' is not a CSV column type");
  CHECK_ERROR(open_source(kx_csv_open, &ctx, "{\"format\":\"csv\",\"path\":\"%s\",\"quote\":1}", path, &s),
              KILN_INVALID_ARGUMENT, "unknown key 'quote'");
  CHECK_ERROR(open_source(kx_csv_open, &ctx, "{\"format\":\"csv\",\"path\":\"%s\"}", "/nonexistent/x.csv", &s),
              KILN_NOT_FOUND, "/nonexistent/x.csv");
  /* a value that does not parse as the column's given type is a bad record naming column, value, type */
  CHECK_OK(open_source(kx_csv_open, &ctx, "{\"format\":\"csv\",\"path\":\"%s\",\"columns\":{\"name\":\"int32\"}}", path, &s));
  if (s) {
    kiln_record r;
    kiln_status err;
    CHECK(!pull(s, &r, &err));
    CHECK_ERROR(err, KILN_INVALID_ARGUMENT, "record 0 (byte 20): column 'name': 'plain' is not a valid int32");
    s->ops->free(s);
  }
}

static char *temp_path(const char *tag) {
  static char path[128];
  snprintf(path, sizeof path, "/tmp/kiln_test_csv_%s_%d", tag, (int)getpid());
  return path;
}

static void test_csv_quarantine(void) {
  char quarantine[128];
  snprintf(quarantine, sizeof quarantine, "%s", temp_path("quarantine"));
  kx_data_ctx skip;
  CHECK_OK(kx_data_ctx_init(&skip, KILN_ON_ERROR_SKIP, quarantine, NULL, 2, NULL));
  kx_stage *s;
  /* inference would make x a string column (it holds "twelve"): the spec says what it is */
  CHECK_OK(open_source(kx_csv_open, &skip,
                       "{\"format\":\"csv\",\"path\":\"%s\",\"max_line_bytes\":100,\"columns\":{\"x\":\"int64\"}}",
                       fixture("tab_bad.csv"), &s));
  const cJSON *good = expected_at("csv_bad", "good", NULL), *bad = expected_at("csv_bad", "bad", NULL);
  if (s) {
    kiln_record r;
    kiln_status err;
    int n = 0;
    for (; pull(s, &r, &err); n++) {
      const cJSON *want = cJSON_GetArrayItem(good, n);
      for (int c = 0; c < 3; c++) CHECK(value_is(&r.values[c], cJSON_GetArrayItem(want, c)));
      kiln_record_release(&r);
    }
    CHECK_OK(err);
    CHECK(n == cJSON_GetArraySize(good));
    CHECK(atomic_load(&skip.read) == n + cJSON_GetArraySize(bad));
    CHECK(atomic_load(&skip.quarantined) == cJSON_GetArraySize(bad));
    s->ops->free(s);
  }
  kx_data_ctx_free(&skip);
  CHECK(count_lines(quarantine) == cJSON_GetArraySize(bad));
  void *text;
  size_t len;
  CHECK_OK(kiln_file_read(quarantine, 0, &text, &len));
  if (text) {
    /* line k names bad row k: its index and its reason, in file order */
    char *line = text;
    for (int k = 0; k < cJSON_GetArraySize(bad); k++) {
      char *end = strchr(line, '\n');
      if (!end) break;
      *end = '\0';
      cJSON *q = cJSON_Parse(line);
      const cJSON *want = cJSON_GetArrayItem(bad, k);
      CHECK(q && cJSON_GetObjectItem(q, "index")->valueint == cJSON_GetArrayItem(want, 0)->valueint);
      CHECK(q && strstr(cJSON_GetObjectItem(q, "reason")->valuestring, cJSON_GetArrayItem(want, 1)->valuestring));
      if (q && k == 0) CHECK(strcmp(cJSON_GetObjectItem(q, "raw")->valuestring, "99,1.5") == 0);
      cJSON_Delete(q);
      line = end + 1;
    }
    free(text);
  }
  unlink(quarantine);

  /* fail mode: the first bad row stops the stream with an error naming it */
  CHECK_OK(open_source(kx_csv_open, &ctx, "{\"format\":\"csv\",\"path\":\"%s\"}", fixture("tab_bad.csv"), &s));
  if (s) {
    kiln_record r;
    kiln_status err;
    int n = 0;
    while (pull(s, &r, &err)) n++, kiln_record_release(&r);
    CHECK(n == 4);
    CHECK_ERROR(err, KILN_INVALID_ARGUMENT, "tab_bad.csv: record 4 (byte 48): expected 3 fields, found 2");
    s->ops->free(s);
  }
}

/* A file of several 4 MiB blocks: rows parsed in parallel come out in order with the right values;
 * a 5 MiB line is skipped without being buffered whole; quoted fields with newlines cross blocks. */
static void test_csv_many_blocks(void) {
  char path[128];
  snprintf(path, sizeof path, "%s", temp_path("big"));
  FILE *f = fopen(path, "w");
  CHECK(f != NULL);
  if (!f) return;
  const int rows = 300000, long_at = 150000;
  fprintf(f, "i,half,text\r\n");
  for (int i = 0; i < rows; i++) {
    if (i == long_at) {
      fputs("1,2,\"", f);
      for (int k = 0; k < 5 << 20; k++) fputc(k % 1000 == 999 ? '\n' : 'y', f);
      fputs("\"\r\n", f);
      continue;
    }
    if (i % 1000 == 7) fprintf(f, "%d,%.1f,\"multi\nline, %d\"\r\n", i, i * 0.5, i);
    else fprintf(f, "%d,%.1f,t%d\r\n", i, i * 0.5, i);
  }
  fclose(f);
  char quarantine[128];
  snprintf(quarantine, sizeof quarantine, "%s", temp_path("bigq"));
  kx_data_ctx skip;
  CHECK_OK(kx_data_ctx_init(&skip, KILN_ON_ERROR_SKIP, quarantine, NULL, 2, NULL));
  kx_stage *s;
  CHECK_OK(open_source(kx_csv_open, &skip, "{\"format\":\"csv\",\"path\":\"%s\"}", path, &s));
  if (s) {
    for (int epoch = 0; epoch < 2; epoch++) {
      kiln_record r;
      kiln_status err;
      int n = 0, wrong = 0;
      char want[64];
      for (; pull(s, &r, &err); n++) {
        int i = n < long_at ? n : n + 1;
        if (i % 1000 == 7) snprintf(want, sizeof want, "multi\nline, %d", i);
        else snprintf(want, sizeof want, "t%d", i);
        if (r.index != i || r.values[0].dtype != KILN_INT64 || *(int64_t *)r.values[0].data != i ||
            r.values[1].dtype != KILN_FLOAT || *(float *)r.values[1].data != (float)(i * 0.5) ||
            r.values[2].dtype != KILN_STRING || strcmp(*(char **)r.values[2].data, want) != 0)
          wrong++;
        kiln_record_release(&r);
      }
      CHECK_OK(err);
      CHECK(n == rows - 1 && wrong == 0);
      CHECK_OK(s->ops->reset(s, epoch + 1));
    }
    CHECK(atomic_load(&skip.quarantined) == 2);
    s->ops->free(s);
  }
  kx_data_ctx_free(&skip);
  void *text;
  size_t len;
  CHECK_OK(kiln_file_read(quarantine, 0, &text, &len));
  CHECK(text && strstr(text, "\"index\":150000") && strstr(text, "longer than max_line_bytes (1048576)"));
  free(text);
  unlink(quarantine);
  unlink(path);
}

/* Writes every record of `s` with the CSV writer. */
static void write_all(kx_stage *s, const char *path) {
  kx_writer *w;
  CHECK_OK(kx_csv_writer_open(path, &w));
  if (!w) return;
  kiln_record r;
  kiln_status err;
  while (pull(s, &r, &err)) {
    CHECK_OK(w->write(w, &r));
    kiln_record_release(&r);
  }
  CHECK_OK(err);
  CHECK_OK(w->finish(w));
  w->free(w);
}

static void test_csv_writer_round_trip(void) {
  const char *tmp = temp_path("out");
  char out[160];
  snprintf(out, sizeof out, "%s.csv", tmp);
  kx_stage *s, *back;
  CHECK_OK(open_source(kx_csv_open, &ctx, "{\"format\":\"csv\",\"path\":\"%s\"}", fixture("tab_quotes.csv"), &s));
  if (!s) return;
  write_all(s, out);
  CHECK_OK(s->ops->reset(s, 0));
  CHECK_OK(open_source(kx_csv_open, &ctx, "{\"format\":\"csv\",\"path\":\"%s\"}", out, &back));
  if (back) {
    kiln_record a, b;
    kiln_status err_a, err_b;
    int n = 0;
    while (pull(s, &a, &err_a) && pull(back, &b, &err_b)) {
      char *ja = kiln_record_to_json(&a), *jb = kiln_record_to_json(&b);
      if (strcmp(ja, jb) != 0) fprintf(stderr, "round trip differs:\n  %s\n  %s\n", ja, jb), test_failures++;
      free(ja), free(jb);
      kiln_record_release(&a), kiln_record_release(&b);
      n++;
    }
    CHECK(n == 7);
    back->ops->free(back);
  }
  s->ops->free(s);

  /* IDX -> CSV: the image flattened into image_0..image_11 columns, then the label */
  CHECK_OK(open_source(kx_idx_open, &ctx, "{\"format\":\"idx\",\"path\":\"%s\"}", fixture("tab_small-images-idx3-ubyte"), &s));
  if (!s) return;
  write_all(s, out);
  s->ops->free(s);
  void *text;
  size_t len;
  CHECK_OK(kiln_file_read(out, 0, &text, &len));
  if (text) {
    CHECK(strncmp(text, "image_0,image_1,", 16) == 0 && strstr(text, ",image_11,label\n"));
    CHECK(count_lines(out) == 6);
    free(text);
  }
  char tmp_name[192];
  snprintf(tmp_name, sizeof tmp_name, "%s.tmp", out);
  CHECK(access(tmp_name, F_OK) != 0); /* renamed into place */
  unlink(out);

  /* a record whose shape changes is refused, naming it */
  kx_writer *w;
  CHECK_OK(kx_csv_writer_open(out, &w));
  if (w) {
    static const char *const names[] = {"v"};
    kiln_record r;
    CHECK_OK(kiln_record_init(&r, names, 1, 0, NULL));
    int64_t two = 2, three = 3;
    CHECK_OK(kiln_tensor_alloc(&r.values[0], KILN_FLOAT, 1, &two));
    CHECK_OK(w->write(w, &r));
    kiln_tensor_release(&r.values[0]);
    CHECK_OK(kiln_tensor_alloc(&r.values[0], KILN_FLOAT, 1, &three));
    CHECK_ERROR(w->write(w, &r), KILN_INVALID_ARGUMENT, "record 1: feature 'v' has 3 values, the first record's had 2");
    kiln_record_release(&r);
    w->free(w); /* unfinished: nothing left behind */
    CHECK(access(out, F_OK) != 0 && access(tmp_name, F_OK) != 0);
  }
}

static void test_number_parser(void) {
  static const char *cases[] = {"0",        "-0",          "0.1",        "1e23",     "9007199254740993", "2.2250738585072011e-308",
                                "4.9e-324", "1.7976931348623157e308",     "123456789012345678901234567890", "0.000001234",
                                "3.14159",  "1e-400",      "+5",         ".5",       "5.",               "1E+2"};
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    const char *c = cases[i], *stop;
    double v = -1;
    CHECK(kx_parse_double(c, c + strlen(c), KX_NUMBER_LENIENT, &v, &stop) == NULL && stop == c + strlen(c));
    double ref = strtod(c, NULL);
    if (memcmp(&v, &ref, sizeof v) != 0) fprintf(stderr, "%s: %.17g, strtod %.17g\n", c, v, ref), test_failures++;
  }
  const char *stop;
  double v;
  CHECK(kx_parse_double("1e999", "1e999" + 5, 0, &v, &stop) != NULL);
  CHECK(kx_parse_double("+5", "+5" + 2, KX_NUMBER_JSON, &v, &stop) != NULL);
  CHECK(kx_parse_double("05", "05" + 2, KX_NUMBER_JSON, &v, &stop) != NULL);
  CHECK(kx_parse_double("-Inf", "-Inf" + 4, KX_NUMBER_SPECIAL, &v, &stop) == NULL && isinf(v) && v < 0);
  int64_t i;
  CHECK(kx_parse_int64("-9223372036854775808", "-9223372036854775808" + 20, &i) == 0 && i == INT64_MIN);
  CHECK(kx_parse_int64("9223372036854775808", "9223372036854775808" + 19, &i) == -2);
  CHECK(kx_parse_int64("12a", "12a" + 3, &i) == -1);
}

static void setup(void) { CHECK_OK(kx_data_ctx_init(&ctx, KILN_ON_ERROR_FAIL, NULL, NULL, 2, NULL)); }
static void teardown(void) {
  kx_data_ctx_free(&ctx);
  cJSON_Delete(expected_json());
}

TEST_MAIN(TEST(setup), TEST(test_csv_quotes_and_types), TEST(test_csv_delimiter_bom_no_header), TEST(test_csv_spec_errors),
          TEST(test_csv_quarantine), TEST(test_csv_many_blocks), TEST(test_csv_writer_round_trip), TEST(test_number_parser),
          TEST(teardown))
