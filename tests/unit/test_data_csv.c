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
    /* the over-long line, quarantined in the first pass; the second pass's copy is not counted again */
    CHECK(atomic_load(&skip.quarantined) == 1);
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


/* ---------------------------------------------------------------- batches the source builds itself */

/* Whether two batches hold the same names, dtypes, shapes, values and provenance. */
static int same_batch(const kiln_record *a, const kiln_record *b) {
  if (a->count != b->count || a->index != b->index || a->offset != b->offset) return 0;
  if (!a->source != !b->source || (a->source && strcmp(a->source, b->source) != 0)) return 0;
  for (int i = 0; i < a->count; i++) {
    const kiln_tensor *x = &a->values[i], *y = &b->values[i];
    if (strcmp(a->names[i], b->names[i]) != 0 || x->dtype != y->dtype || x->rank != y->rank) return 0;
    for (int d = 0; d < x->rank; d++)
      if (x->dims[d] != y->dims[d]) return 0;
    int64_t n = kiln_tensor_numel(x);
    if (x->dtype == KILN_STRING) {
      for (int64_t k = 0; k < n; k++)
        if (strcmp(((char **)x->data)[k], ((char **)y->data)[k]) != 0) return 0;
    } else if (n && memcmp(x->data, y->data, kiln_tensor_nbytes(x)) != 0) {
      return 0;
    }
  }
  return 1;
}

typedef struct pass_result {
  kiln_record batches[64];
  int n;         /* batches kept (at most 64) */
  int64_t total; /* batches seen */
  char *error;   /* the first error's message, NULL when none */
  kiln_data_counts counts;
  kiln_dataset *d; /* kept open: the batches' names and source point into it */
} pass_result;

static void pass_free(pass_result *r) {
  for (int i = 0; i < r->n; i++) kiln_record_release(&r->batches[i]);
  kiln_dataset_free(r->d);
  free(r->error);

  memset(r, 0, sizeof *r);
}

/* Runs {source, stages: [before..., {batch}]} for `epochs` passes (a reset between them), keeping
 * the batches of all passes in order, and stopping at the first error. */
static void run_batches(const char *source, const char *before, const char *batch, const char *on_error,
                        const char *quarantine, int epochs, pass_result *out) {
  memset(out, 0, sizeof *out);
  char spec[8192];
  snprintf(spec, sizeof spec, "{\"source\": %s, \"stages\": [%s{\"batch\": %s}], \"on_error\": \"%s\", \"quarantine\": \"%s\", \"threads\": 2}",
           source, before, batch, on_error, quarantine);
  kiln_dataset *d = NULL;
  kiln_status st = kiln_dataset_open_spec(spec, strlen(spec), NULL, &d);
  for (int e = 0; e < epochs && !st; e++) {
    if (e) st = kiln_dataset_reset(d, e);
    for (int done = 0; !st && !done;) {
      kiln_record r;
      st = kiln_dataset_next(d, &r, &done);
      if (st || done) break;
      out->total++;
      if (out->n < 64) out->batches[out->n++] = r;
      else kiln_record_release(&r);
    }
  }
  if (st) {
    out->error = strdup(kiln_status_message(st));
    kiln_status_free(st);
  }
  if (d) out->counts = kiln_dataset_counts(d);
  out->d = d;
}

/* A file of at most 4 MiB, malloc'd. */
static char *read_all(const char *path, size_t *len) {
  void *text = NULL;
  *len = 0;
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  text = malloc(1 << 22);
  if (text) *len = fread(text, 1, 1 << 22, f);
  fclose(f);
  return text;
}

/* source -> batch (built by the source) against source -> skip 0 -> batch (the batch stage over
 * records one at a time: the same batches, errors, counts and quarantine, to the byte) and, in skip
 * mode, source -> map [] -> batch (records read ahead in chunks: the same batches). The map path's
 * quarantine and counts are not compared: once its read-ahead reaches the end of the file, the
 * first pass is over and the batch stage's refusals are no longer quarantined. */
static void check_fused(const char *source, const char *batch, const char *on_error, int epochs) {
  int skip = strcmp(on_error, "skip") == 0;
  char qf[160], qs[160], qm[160];
  snprintf(qf, sizeof qf, "%s", temp_path("qfused"));
  snprintf(qs, sizeof qs, "%s", temp_path("qskip"));
  snprintf(qm, sizeof qm, "%s", temp_path("qmap"));
  pass_result f, r, m;
  run_batches(source, "", batch, on_error, qf, epochs, &f);
  run_batches(source, "{\"skip\": 0}, ", batch, on_error, qs, epochs, &r);
  if (skip) run_batches(source, "{\"map\": {\"transforms\": []}}, ", batch, on_error, qm, epochs, &m);
  else m = (pass_result){.total = f.total};
  int ok = f.total == r.total && f.total == m.total && f.n == r.n;
  for (int i = 0; ok && i < f.n; i++) ok = same_batch(&f.batches[i], &r.batches[i]) && (!skip || same_batch(&f.batches[i], &m.batches[i]));
  ok = ok && !f.error == !r.error && (!f.error || strcmp(f.error, r.error) == 0) && !m.error;
  ok = ok && f.counts.read == r.counts.read && f.counts.quarantined == r.counts.quarantined;
  if (!ok) {
    for (int i = 0; i < f.n && i < r.n; i++)
      if (!same_batch(&f.batches[i], &r.batches[i])) {
        char *x = kiln_record_to_json(&f.batches[i]), *y = kiln_record_to_json(&r.batches[i]);
        fprintf(stderr, "batch %d: fused %.300s (index %lld)\n    records %.300s (index %lld)\n", i, x, (long long)f.batches[i].index, y, (long long)r.batches[i].index);
        free(x);
        free(y);
        break;
      }
    fprintf(stderr, "fused batches differ: source %s batch %s %s: batches %lld/%lld/%lld, errors '%s'/'%s'/'%s', read %lld/%lld/%lld, quarantined %lld/%lld\n",
            source, batch, on_error, (long long)f.total, (long long)r.total, (long long)m.total, f.error ? f.error : "",
            r.error ? r.error : "", m.error ? m.error : "", (long long)f.counts.read, (long long)r.counts.read,
            (long long)m.counts.read, (long long)f.counts.quarantined, (long long)r.counts.quarantined);
    test_failures++;
  }
  pass_free(&f);
  pass_free(&r);
  pass_free(&m);
  if (skip) { /* closed now */
    size_t lf, ls;
    char *tf = read_all(qf, &lf), *ts = read_all(qs, &ls);
    CHECK(tf && ts && lf == ls && memcmp(tf, ts, lf) == 0);
    free(tf);
    free(ts);
  }
  remove(qf);
  remove(qs);
  remove(qm);
}

/* A file of several parse chunks with every kind of row: missing values, bad rows, quoted strings,
 * blank lines, CRLF, a final row without a line end. */
static void write_mixed_csv(const char *path, int rows) {
  FILE *f = fopen(path, "w");
  if (!f) return;
  fprintf(f, "i,f,b,s,d,u\r\n");
  for (int k = 0; k < rows; k++) {
    if (k % 997 == 5) fprintf(f, "%d,1.5,true\r\n", k);               /* too few fields */
    else if (k % 1231 == 9) fprintf(f, "x%d,1.5,true,s,2,3\r\n", k);  /* not an int64 */
    else if (k % 1409 == 11) fprintf(f, "%d,1.5,true,s,2,300\r\n", k); /* not a uint8 */
    else if (k % 13 == 3) fprintf(f, "%d,,false,m%d,NA,7\r\n", k, k);  /* missing values */
    else if (k % 101 == 17) fprintf(f, "\r\n\n");                      /* blank lines */
    else if (k % 17 == 1) fprintf(f, "%d,%d.25e1,TRUE,\"q, \"\"%d\"\"\nline\",  %d.5 ,%d\n", k, k, k, k, k % 256);
    else fprintf(f, "%d,%d.5,false,t%d,-%d.125,%d\r\n", k, k, k, k, k % 256);
  }
  fprintf(f, "%d,0.5,true,last,1,2", rows);
  fclose(f);
}

static void test_csv_fused_batches_match_the_batch_stage(void) {
  char path[160], source[5000];
  snprintf(path, sizeof path, "%s", temp_path("mixed.csv"));
  write_mixed_csv(path, 20000); /* groups of small batches span 8192 rows: several groups */
  snprintf(source, sizeof source,
           "{\"format\":\"csv\",\"path\":\"%s\",\"columns\":{\"i\":\"int64\",\"f\":\"float\",\"b\":\"bool\",\"s\":\"string\",\"d\":\"double\",\"u\":\"uint8\"}}",
           path);
  static const char *const batches[] = {"1", "7", "64", "{\"batch_size\": 7, \"drop_remainder\": true}", "2048",
                                        "{\"batch_size\": 2500, \"drop_remainder\": true}", "5000", "100000"};
  for (size_t i = 0; i < sizeof batches / sizeof batches[0]; i++) check_fused(source, batches[i], "skip", 2);
  check_fused(source, "64", "fail", 1);
  check_fused(source, "{\"batch_size\": 3, \"drop_remainder\": true}", "fail", 1);
  remove(path);
  /* the committed fixtures: quoting and missing values; bad rows and an unterminated tail */
  snprintf(source, sizeof source, "{\"format\":\"csv\",\"path\":\"%s\"}", fixture("tab_quotes.csv"));
  for (int b = 1; b <= 9; b += 2) {
    char size[16];
    snprintf(size, sizeof size, "%d", b);
    check_fused(source, size, "skip", 2);
    check_fused(source, size, "fail", 1);
  }
  snprintf(source, sizeof source, "{\"format\":\"csv\",\"path\":\"%s\",\"max_line_bytes\":100,\"columns\":{\"x\":\"int64\"}}",
           fixture("tab_bad.csv"));
  check_fused(source, "4", "skip", 3);
  check_fused(source, "{\"batch_size\": 4, \"drop_remainder\": true}", "skip", 1);
  check_fused(source, "20", "skip", 1);
  check_fused(source, "3", "fail", 1);
  /* a bad row right after full batches belongs to the call after them (found by fuzz_csv) */
  FILE *f = fopen(path, "w");
  if (f) {
    fputs("x\n1\n2\n3\n4\n\"never closed", f);
    fclose(f);
  }
  snprintf(source, sizeof source, "{\"format\":\"csv\",\"path\":\"%s\"}", path);
  check_fused(source, "2", "fail", 1);
  check_fused(source, "4", "fail", 1);
  check_fused(source, "{\"batch_size\": 4, \"drop_remainder\": true}", "skip", 2);
  remove(path);
}

/* A consumer that switches between records and batches mid-pass goes on from the row it took last. */
static void test_csv_switching_records_and_batches(void) {
  char path[160];
  snprintf(path, sizeof path, "%s", temp_path("switch.csv"));
  FILE *f = fopen(path, "w");
  CHECK(f != NULL);
  if (!f) return;
  fprintf(f, "i,s\n");
  for (int k = 0; k < 10; k++) fprintf(f, "%d,s%d\n%s", k, k, k == 4 ? "\n" : "");
  fclose(f);
  kx_stage *s, *t;
  CHECK_OK(open_source(kx_csv_open, &ctx, "{\"format\":\"csv\",\"path\":\"%s\"}", path, &s));
  CHECK_OK(open_source(kx_csv_open, &ctx, "{\"format\":\"csv\",\"path\":\"%s\"}", path, &t));
  if (s && t) {
    kiln_record a, b;
    int done = 0, ended = 0;
    /* s: a record, a batch of 3 rows, then records; t: records all along */
    CHECK_OK(s->ops->next(s, &a, &done));
    CHECK(!done && a.index == 0);
    kiln_record_release(&a);
    CHECK_OK(s->ops->next_batch(s, 3, 0, &a, &done, &ended));
    CHECK(!done && !ended && a.count == 2 && a.index == 1 && a.values[0].rank == 1 && a.values[0].dims[0] == 3);
    if (!done && a.count == 2) {
      CHECK(((int64_t *)a.values[0].data)[2] == 3 && strcmp(((char **)a.values[1].data)[2], "s3") == 0);
      kiln_record_release(&a);
    }
    for (int k = 0; k < 4; k++) {
      CHECK_OK(t->ops->next(t, &b, &done));
      kiln_record_release(&b);
    }
    for (int k = 4;; k++) {
      int d1 = 0, d2 = 0;
      kiln_status e1 = s->ops->next(s, &a, &d1), e2 = t->ops->next(t, &b, &d2);
      CHECK(!e1 && !e2 && d1 == d2);
      kiln_status_free(e1);
      kiln_status_free(e2);
      if (e1 || e2 || d1 || d2) {
        CHECK(k == 10);
        break;
      }
      CHECK(a.index == k && same_batch(&a, &b));
      kiln_record_release(&a);
      kiln_record_release(&b);
    }
    /* at the end, a batch call ends too; after a reset it starts from row 0 */
    CHECK_OK(s->ops->next_batch(s, 4, 0, &a, &done, &ended));
    CHECK(done);
    CHECK_OK(s->ops->reset(s, 1));
    CHECK_OK(s->ops->next_batch(s, 4, 1, &a, &done, &ended));
    CHECK(!done && a.index == 0 && a.count == 2 && a.values[0].dims[0] == 4);
    kiln_record_release(&a);
    CHECK_OK(s->ops->next_batch(s, 4, 1, &a, &done, &ended));
    CHECK(!done && a.index == 4);
    kiln_record_release(&a);
    CHECK_OK(s->ops->next_batch(s, 4, 1, &a, &done, &ended));
    CHECK(done && ended);
  }
  if (s) s->ops->free(s);
  if (t) t->ops->free(t);
  remove(path);
}

TEST_MAIN(TEST(setup), TEST(test_csv_quotes_and_types), TEST(test_csv_delimiter_bom_no_header), TEST(test_csv_spec_errors),
          TEST(test_csv_quarantine), TEST(test_csv_many_blocks), TEST(test_csv_writer_round_trip), TEST(test_number_parser),
          TEST(test_csv_fused_batches_match_the_batch_stage), TEST(test_csv_switching_records_and_batches), TEST(teardown))
