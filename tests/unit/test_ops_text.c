/* StringNormalizer (UTF-8 case mapping, stopwords, the all-dropped case, malformed UTF-8) and
 * TfIdfVectorizer (string pools, IDF / TFIDF weights, skips, batches, threads) against naive
 * references. */
#include "op_harness.h"

/* Runs a one-input model; *out stays valid until the session is freed. */
static kiln_status run1(kiln_model *m, kiln_session **s, const kiln_tensor *x, const kiln_tensor **out, kiln_pool *pool) {
  kiln_session_options opt = {.pool = pool};
  kiln_status st = kiln_session_create(m, &opt, s);
  return st ? st : kiln_session_run_tensors(*s, (const kiln_tensor *[]){x}, out);
}

static kiln_model *normalizer(const char *action, int sensitive, int n_stop, const char *const *stop) {
  tb_model *b = tb_new(10);
  tb_input(b, "x", KILN_STRING, -1, NULL);
  tb_output(b, "y", KILN_STRING);
  tb_node *n = tb_add_node(b, "StringNormalizer", "x", "y");
  tb_attr_string(n, "case_change_action", action);
  tb_attr_int(n, "is_case_sensitive", sensitive);
  if (n_stop) tb_attr_strings(n, "stopwords", n_stop, stop);
  return oh_load(b);
}

static int strings_are(const kiln_tensor *t, int n, const char *const *want) {
  if (t->dtype != KILN_STRING || kiln_tensor_numel(t) != n) return 0;
  for (int i = 0; i < n; i++)
    if (strcmp(((char *const *)t->data)[i], want[i]) != 0) return 0;
  return 1;
}

static void test_normalizer(void) {
  const char *stop[] = {"straße", "ÉTÉ"};
  const char *words[] = {"Straße", "été", "Çava", "ÉTÉ", "naïve"};
  struct {
    const char *action;
    int sensitive;
    int n;
    const char *want[5];
  } cases[] = {
      {"UPPER", 0, 2, {"ÇAVA", "NAÏVE"}},
      {"LOWER", 1, 4, {"straße", "été", "çava", "naïve"}},
      {"NONE", 1, 4, {"Straße", "été", "Çava", "naïve"}},
  };
  for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
    kiln_model *m = normalizer(cases[k].action, cases[k].sensitive, 2, stop);
    if (!m) return;
    kiln_session *s = NULL;
    kiln_tensor x = oh_view(KILN_STRING, 2, (int64_t[]){1, 5}, words);
    const kiln_tensor *y;
    CHECK_OK(run1(m, &s, &x, &y, NULL));
    if (s) CHECK(y->rank == 2 && y->dims[0] == 1 && strings_are(y, cases[k].n, cases[k].want));
    kiln_session_free(s);
    kiln_model_free(m);
  }
}

static void test_normalizer_edges(void) {
  const char *stop[] = {"monday"};
  kiln_model *m = normalizer("UPPER", 0, 1, stop);
  if (!m) return;
  kiln_session *s = NULL;
  const char *all[] = {"MONDAY", "Monday"};
  kiln_tensor x = oh_view(KILN_STRING, 1, (int64_t[]){2}, all);
  const kiln_tensor *y;
  CHECK_OK(run1(m, &s, &x, &y, NULL)); /* everything dropped: one empty string */
  if (s) CHECK(y->rank == 1 && y->dims[0] == 1 && strings_are(y, 1, (const char *[]){""}));
  const char *bad[] = {"ok", "\xc3("};
  x = oh_view(KILN_STRING, 1, (int64_t[]){2}, bad);
  if (s) CHECK_ERROR(kiln_session_run_tensors(s, (const kiln_tensor *[]){&x}, &y), KILN_INVALID_ARGUMENT, "string 1 is not valid UTF-8");
  x = oh_view(KILN_STRING, 2, (int64_t[]){2, 1}, all);
  if (s) CHECK_ERROR(kiln_session_run_tensors(s, (const kiln_tensor *[]){&x}, &y), KILN_INVALID_ARGUMENT,
                     "input must be a string tensor of shape [C] or [1, C], got string[2,1]");
  x = oh_view(KILN_STRING, 1, (int64_t[]){0}, all);
  if (s) CHECK_OK(kiln_session_run_tensors(s, (const kiln_tensor *[]){&x}, &y));
  if (s) CHECK(strings_are(y, 1, (const char *[]){""}));
  kiln_session_free(s);
  kiln_model_free(m);

  tb_model *b = tb_new(10);
  tb_input(b, "x", KILN_STRING, -1, NULL);
  tb_output(b, "y", KILN_STRING);
  tb_attr_string(tb_add_node(b, "StringNormalizer", "x", "y"), "case_change_action", "TITLE");
  CHECK_ERROR(tb_load(b, &m), KILN_INVALID_ARGUMENT, "case_change_action must be NONE, LOWER or UPPER, got 'TITLE'");
  tb_free(b);
}

/* ---------------------------------------------------------------- TfIdfVectorizer */

typedef struct tfidf_spec {
  int min_n, max_n, skip;
  const char *mode;
  int n_pool;
  const char *const *pool;
  int n_counts;
  const int64_t *counts, *indexes;
  int n_grams;
  const float *weights;
} tfidf_spec;

static kiln_model *tfidf_model(const tfidf_spec *sp) {
  tb_model *b = tb_new(9);
  tb_input(b, "x", KILN_STRING, -1, NULL);
  tb_output(b, "y", KILN_FLOAT);
  tb_node *n = tb_add_node(b, "TfIdfVectorizer", "x", "y");
  tb_attr_int(n, "min_gram_length", sp->min_n);
  tb_attr_int(n, "max_gram_length", sp->max_n);
  tb_attr_int(n, "max_skip_count", sp->skip);
  tb_attr_string(n, "mode", sp->mode);
  tb_attr_strings(n, "pool_strings", sp->n_pool, sp->pool);
  tb_attr_ints(n, "ngram_counts", sp->n_counts, sp->counts);
  tb_attr_ints(n, "ngram_indexes", sp->n_grams, sp->indexes);
  if (sp->weights) tb_attr_floats(n, "weights", sp->n_grams, sp->weights);
  return oh_load(b);
}

/* The naive reference: every (skip, start, length) window compared with every pool n-gram,
 * unigrams only for the first skip, then the weighting. */
static void tfidf_reference(const tfidf_spec *sp, const char *const *row, int len, int columns, float *out) {
  for (int k = 0; k < columns; k++) out[k] = 0;
  for (int skip = 1; skip <= sp->skip + 1; skip++)
    for (int start = 0; start < len; start++)
      for (int n = sp->min_n; n <= sp->max_n; n++) {
        if (n == 1 && skip > 1) continue;
        if (start + (n - 1) * skip >= len) continue;
        for (int g = 0, at = sp->counts[n - 1]; n - 1 < sp->n_counts && at < (n < sp->n_counts ? sp->counts[n] : sp->n_pool); g++, at += n) {
          int match = 1;
          for (int t = 0; t < n && match; t++) match = strcmp(row[start + t * skip], sp->pool[at + t]) == 0;
          int j = 0; /* this n-gram's position among all pool n-grams */
          for (int m = 1; m < n; m++) j += ((m < sp->n_counts ? sp->counts[m] : sp->n_pool) - sp->counts[m - 1]) / m;
          if (match) out[sp->indexes[j + g]] += 1;
        }
      }
  for (int j = 0; j < sp->n_grams; j++) {
    float w = sp->weights ? sp->weights[j] : 1;
    float *y = &out[sp->indexes[j]];
    if (!strcmp(sp->mode, "IDF")) *y = *y > 0 ? w : 0;
    else if (!strcmp(sp->mode, "TFIDF")) *y *= w;
  }
}

static void test_tfidf(void) {
  const char *pool[] = {"a", "b", "c", "a", "b", "b", "c", "c", "a"}; /* unigrams a b c; bigrams ab bc ca */
  const int64_t counts[] = {0, 3}, indexes[] = {5, 4, 3, 2, 1, 0};
  const float weights[] = {0.5f, 2, 3, 4, 5, 6};
  const char *tokens[] = {"a", "b", "c", "a", "x", "b", "c", "c", "a", "b", "a", "b"}; /* 3 rows of 4 */
  const char *modes[] = {"TF", "IDF", "TFIDF"};
  kiln_pool *threads;
  CHECK_OK(kiln_pool_create(2, &threads));
  for (int mode = 0; mode < 3; mode++)
    for (int skip = 0; skip < 3; skip++)
      for (int min_n = 1; min_n <= 2; min_n++) {
        tfidf_spec sp = {min_n, 2, skip, modes[mode], 9, pool, 2, counts, indexes, 6, mode ? weights : NULL};
        kiln_model *m = tfidf_model(&sp);
        if (!m) return;
        kiln_session *s = NULL;
        kiln_tensor x = oh_view(KILN_STRING, 2, (int64_t[]){3, 4}, tokens);
        const kiln_tensor *y;
        CHECK_OK(run1(m, &s, &x, &y, threads));
        if (s) {
          CHECK(y->rank == 2 && y->dims[0] == 3 && y->dims[1] == 6);
          for (int r = 0; r < 3; r++) {
            float want[6];
            tfidf_reference(&sp, tokens + 4 * r, 4, 6, want);
            for (int k = 0; k < 6; k++) CHECK_NEAR(((const float *)y->data)[r * 6 + k], want[k], 0);
          }
        }
        kiln_session_free(s);
        kiln_model_free(m);
      }
  kiln_pool_free(threads);
}

static void test_tfidf_errors(void) {
  const char *pool[] = {"a", "b", "c"};
  const int64_t counts[] = {0, 1}, indexes[] = {0, 1};
  tb_model *b = tb_new(9);
  tb_input(b, "x", KILN_UNDEFINED, -1, NULL); /* any dtype: the kernel checks it */
  tb_output(b, "y", KILN_FLOAT);
  tb_node *n = tb_add_node(b, "TfIdfVectorizer", "x", "y");
  tb_attr_int(n, "min_gram_length", 1);
  tb_attr_int(n, "max_gram_length", 2);
  tb_attr_string(n, "mode", "TF");
  tb_attr_strings(n, "pool_strings", 3, pool);
  tb_attr_ints(n, "ngram_counts", 2, counts); /* the bigram segment has 2 tokens: one bigram */
  tb_attr_ints(n, "ngram_indexes", 2, indexes);
  kiln_model *m = oh_load(b);
  if (!m) return;
  kiln_session *s = NULL;
  kiln_tensor x = oh_view(KILN_INT64, 1, (int64_t[]){2}, (int64_t[]){1, 2});
  const kiln_tensor *y;
  CHECK_ERROR(run1(m, &s, &x, &y, NULL), KILN_INVALID_ARGUMENT, "input has dtype int64 but the pool holds strings");
  kiln_session_free(s);
  kiln_model_free(m);

  b = tb_new(9);
  tb_input(b, "x", KILN_STRING, -1, NULL);
  tb_output(b, "y", KILN_FLOAT);
  n = tb_add_node(b, "TfIdfVectorizer", "x", "y");
  tb_attr_int(n, "min_gram_length", 1);
  tb_attr_int(n, "max_gram_length", 2);
  tb_attr_string(n, "mode", "TF");
  tb_attr_strings(n, "pool_strings", 2, pool);
  tb_attr_ints(n, "ngram_counts", 2, (int64_t[]){0, 1}); /* one token left for the bigrams */
  tb_attr_ints(n, "ngram_indexes", 2, indexes);
  CHECK_ERROR(tb_load(b, &m), KILN_INVALID_ARGUMENT, "the 2-gram segment of the pool has 1 tokens, not a multiple of 2");
  tb_free(b);
}

TEST_MAIN(TEST(test_normalizer), TEST(test_normalizer_edges), TEST(test_tfidf), TEST(test_tfidf_errors))
