/* Text kernels: StringNormalizer and TfIdfVectorizer. */
#include "ops/util.h"

#include <locale.h>
#include <stdlib.h>
#include <string.h>
#include <wctype.h>

/* ---------------------------------------------------------------- UTF-8 */

/* Decodes the code point at s[*i] and advances *i; returns 0 on malformed input (bad lead or
 * continuation bytes, overlong forms, surrogates, values past U+10FFFF). */
static int utf8_next(const unsigned char *s, size_t *i, uint32_t *cp) {
  uint32_t c = s[*i];
  int extra = c < 0x80 ? 0 : (c & 0xe0) == 0xc0 ? 1 : (c & 0xf0) == 0xe0 ? 2 : (c & 0xf8) == 0xf0 ? 3 : -1;
  static const uint32_t min[4] = {0, 0x80, 0x800, 0x10000};
  if (extra < 0) return 0;
  c &= 0x7f >> extra;
  for (int k = 1; k <= extra; k++) {
    if ((s[*i + k] & 0xc0) != 0x80) return 0; /* also stops at the terminating NUL */
    c = c << 6 | (s[*i + k] & 0x3f);
  }
  if (c < min[extra] || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff)) return 0;
  *i += (size_t)extra + 1;
  *cp = c;
  return 1;
}

static size_t utf8_put(uint32_t c, char *out) {
  unsigned char *o = (unsigned char *)out;
  if (c < 0x80) {
    o[0] = (unsigned char)c;
    return 1;
  }
  if (c < 0x800) {
    o[0] = (unsigned char)(0xc0 | c >> 6);
    o[1] = (unsigned char)(0x80 | (c & 0x3f));
    return 2;
  }
  if (c < 0x10000) {
    o[0] = (unsigned char)(0xe0 | c >> 12);
    o[1] = (unsigned char)(0x80 | (c >> 6 & 0x3f));
    o[2] = (unsigned char)(0x80 | (c & 0x3f));
    return 3;
  }
  o[0] = (unsigned char)(0xf0 | c >> 18);
  o[1] = (unsigned char)(0x80 | (c >> 12 & 0x3f));
  o[2] = (unsigned char)(0x80 | (c >> 6 & 0x3f));
  o[3] = (unsigned char)(0x80 | (c & 0x3f));
  return 4;
}

/* ---------------------------------------------------------------- StringNormalizer */

typedef enum { CASE_NONE, CASE_LOWER, CASE_UPPER } case_action;

typedef struct normalizer {
  case_action action;
  int case_sensitive;
  locale_t loc; /* C.UTF-8: Unicode simple case mapping, whatever the `locale` attribute names */
  size_t n_stop;
  char **stop; /* sorted; lower-cased when not case-sensitive */
} normalizer;

static void normalizer_release(void *params) {
  normalizer *p = params;
  for (size_t i = 0; i < p->n_stop; i++) free(p->stop[i]);
  free(p->stop);
  if (p->loc) freelocale(p->loc);
  free(p);
}

/* A malloc'd copy of the UTF-8 string s with every code point mapped by towlower / towupper
 * (action CASE_NONE copies); NULL with *bad set when s is not valid UTF-8. */
static char *change_case(const char *s, case_action action, locale_t loc, int *bad) {
  size_t len = strlen(s), i = 0, o = 0;
  char *out = malloc(4 * len + 1); /* a mapped code point never needs more than 4 bytes */
  *bad = 0;
  if (!out) return NULL;
  while (i < len) {
    uint32_t c;
    if (!utf8_next((const unsigned char *)s, &i, &c)) {
      free(out);
      *bad = 1;
      return NULL;
    }
    if (action == CASE_LOWER) c = (uint32_t)towlower_l((wint_t)c, loc);
    else if (action == CASE_UPPER) c = (uint32_t)towupper_l((wint_t)c, loc);
    o += utf8_put(c, out + o);
  }
  out[o] = '\0';
  return out;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static kiln_status normalizer_prepare(kx_node *n) {
  char action[16];
  kx_attr_string(n->proto, "case_change_action", "NONE", action, sizeof action);
  normalizer *p = calloc(1, sizeof *p);
  if (!p) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  n->params = p;
  if (strcmp(action, "NONE") == 0) p->action = CASE_NONE;
  else if (strcmp(action, "LOWER") == 0) p->action = CASE_LOWER;
  else if (strcmp(action, "UPPER") == 0) p->action = CASE_UPPER;
  else return kiln_error(KILN_INVALID_ARGUMENT, "case_change_action must be NONE, LOWER or UPPER, got '%s'", action);
  p->case_sensitive = kx_attr_int(n->proto, "is_case_sensitive", 0) != 0;
  if (!(p->loc = newlocale(LC_CTYPE_MASK, "C.UTF-8", (locale_t)0)))
    return kiln_error(KILN_UNIMPLEMENTED, "StringNormalizer needs the C.UTF-8 locale, which this system lacks");
  const ProtobufCBinaryData *words;
  int64_t count = kx_attr_strings(n->proto, "stopwords", &words);
  if (count <= 0) return NULL;
  if (!(p->stop = calloc((size_t)count, sizeof *p->stop))) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  for (int64_t i = 0; i < count; i++) {
    char *word = strndup((const char *)words[i].data, words[i].len);
    int bad = 0;
    if (word && !p->case_sensitive) {
      char *folded = change_case(word, CASE_LOWER, p->loc, &bad);
      free(word);
      word = folded;
    }
    if (bad) return kiln_error(KILN_INVALID_ARGUMENT, "stopword %lld is not valid UTF-8", (long long)i);
    if (!word) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
    p->stop[p->n_stop++] = word;
  }
  qsort(p->stop, p->n_stop, sizeof *p->stop, cmp_str);
  return NULL;
}

/* Whether s is a stopword (compared lower-cased when not case-sensitive). */
static kiln_status is_stopword(const normalizer *p, const char *s, int64_t i, int *out) {
  *out = 0;
  if (!p->n_stop) return NULL;
  char *key = (char *)s;
  int bad = 0;
  if (!p->case_sensitive && !(key = change_case(s, CASE_LOWER, p->loc, &bad)))
    return bad ? kiln_error(KILN_INVALID_ARGUMENT, "string %lld is not valid UTF-8", (long long)i)
               : kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  *out = bsearch(&key, p->stop, p->n_stop, sizeof *p->stop, cmp_str) != NULL;
  if (key != s) free(key);
  return NULL;
}

static kiln_status normalizer_run(kx_ctx *c) {
  const normalizer *p = c->node->params;
  const kiln_tensor *x;
  kiln_status s;
  if ((s = kx_require(c, 0, &x))) return s;
  char desc[96];
  if (x->dtype != KILN_STRING || (x->rank != 1 && (x->rank != 2 || x->dims[0] != 1)))
    return kiln_error(KILN_INVALID_ARGUMENT, "input must be a string tensor of shape [C] or [1, C], got %s", kiln_tensor_describe(x, desc, sizeof desc));
  int64_t n = kiln_tensor_numel(x), kept = 0;
  char *const *in = x->data;
  unsigned char *keep = kx_scratch(c, (size_t)n + 1);
  if (!keep) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  for (int64_t i = 0; i < n; i++) {
    int stop;
    if ((s = is_stopword(p, in[i] ? in[i] : "", i, &stop))) return s;
    keep[i] = !stop;
    kept += keep[i];
  }
  /* when every string is dropped the output still holds one, empty */
  int64_t dims[2] = {1, kept ? kept : 1};
  kiln_tensor *y;
  if ((s = kx_output(c, 0, KILN_STRING, x->rank, dims + 2 - x->rank, &y))) return s;
  char **out = y->data;
  if (!kept) return (out[0] = strdup("")) ? NULL : kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  for (int64_t i = 0, o = 0; i < n; i++) {
    if (!keep[i]) continue;
    int bad;
    if (!(out[o++] = change_case(in[i] ? in[i] : "", p->action, p->loc, &bad)))
      return bad ? kiln_error(KILN_INVALID_ARGUMENT, "string %lld is not valid UTF-8", (long long)i)
                 : kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  }
  return NULL;
}

/* ---------------------------------------------------------------- TfIdfVectorizer */

/* The pool's n-grams form a trie over token ids: a node is a prefix, its children the prefixes
 * one token longer, and a node that ends a pool n-gram names the output column it counts into.
 * Tokens and trie edges live in open-addressing hash tables built at load. */
typedef struct tok_slot {
  uint64_t hash; /* the int64 token itself, or the string's hash */
  const char *str; /* string pools: the token (owned by the vectorizer) */
  int32_t id;      /* -1: empty slot */
} tok_slot;

typedef struct edge_slot {
  uint64_t key; /* parent node << 32 | token id */
  int32_t child; /* -1: empty slot */
} edge_slot;

typedef enum { WEIGHT_TF, WEIGHT_IDF, WEIGHT_TFIDF } weighting;

typedef struct vectorizer {
  weighting mode;
  int min_n, max_n, max_skip;
  int strings; /* pool_strings rather than pool_int64s */
  int64_t columns;
  float *col_weight; /* [columns] */
  tok_slot *toks;
  size_t tok_cap;
  int32_t n_toks;
  char **tok_strs; /* [n_toks] for string pools */
  edge_slot *edges;
  size_t edge_cap;
  int32_t n_nodes;
  int64_t *node_col; /* [n_nodes]: the output column of the n-gram ending here, or -1 */
} vectorizer;

static void vectorizer_release(void *params) {
  vectorizer *v = params;
  if (v->tok_strs)
    for (int32_t i = 0; i < v->n_toks; i++) free(v->tok_strs[i]);
  free(v->tok_strs);
  free(v->toks);
  free(v->edges);
  free(v->node_col);
  free(v->col_weight);
  free(v);
}

static uint64_t hash_bytes(const char *s, size_t len) {
  uint64_t h = 1469598103934665603ull; /* FNV-1a */
  for (size_t i = 0; i < len; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
  return h;
}

/* The hash tables below start probing at kx_mix64 of the key, which spreads int keys (token
 * values, node-token pairs) over the table. */

/* The id of a token (-1 when not in the pool): an int64 value, or a string of len bytes. */
static int32_t tok_find(const vectorizer *v, int64_t value, const char *str, size_t len) {
  uint64_t h = str ? hash_bytes(str, len) : (uint64_t)value;
  for (size_t i = kx_mix64(h) & (v->tok_cap - 1);; i = (i + 1) & (v->tok_cap - 1)) {
    const tok_slot *t = &v->toks[i];
    if (t->id < 0) return -1;
    if (t->hash == h && (!str || (strlen(t->str) == len && memcmp(t->str, str, len) == 0))) return t->id;
  }
}

static kiln_status tok_add(vectorizer *v, int64_t value, const char *str, size_t len, int32_t *id) {
  if ((*id = tok_find(v, value, str, len)) >= 0) return NULL;
  uint64_t h = str ? hash_bytes(str, len) : (uint64_t)value;
  size_t i = kx_mix64(h) & (v->tok_cap - 1);
  while (v->toks[i].id >= 0) i = (i + 1) & (v->tok_cap - 1);
  v->toks[i].hash = h;
  v->toks[i].id = *id = v->n_toks++;
  if (str) {
    if (!(v->tok_strs[*id] = strndup(str, len))) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
    v->toks[i].str = v->tok_strs[*id];
  }
  return NULL;
}

static int32_t edge_find(const vectorizer *v, int32_t node, int32_t tok) {
  uint64_t key = (uint64_t)node << 32 | (uint32_t)tok;
  for (size_t i = kx_mix64(key) & (v->edge_cap - 1);; i = (i + 1) & (v->edge_cap - 1)) {
    if (v->edges[i].child < 0) return -1;
    if (v->edges[i].key == key) return v->edges[i].child;
  }
}

/* The child of node along tok, created when missing. */
static int32_t edge_walk(vectorizer *v, int32_t node, int32_t tok) {
  int32_t child = edge_find(v, node, tok);
  if (child >= 0) return child;
  uint64_t key = (uint64_t)node << 32 | (uint32_t)tok;
  size_t i = kx_mix64(key) & (v->edge_cap - 1);
  while (v->edges[i].child >= 0) i = (i + 1) & (v->edge_cap - 1);
  v->edges[i].key = key;
  v->edges[i].child = v->n_nodes;
  v->node_col[v->n_nodes] = -1;
  return v->n_nodes++;
}

static size_t table_cap(size_t n) {
  size_t cap = 16;
  while (cap < 2 * n) cap *= 2;
  return cap;
}

/* Checks the pool layout: ngram_counts[k] is where the (k+1)-grams start in the pool, and the
 * n-grams, in pool order, number as many as ngram_indexes. */
static kiln_status check_pool(int64_t pool_len, const int64_t *counts, int64_t n_counts, int64_t n_indexes) {
  int64_t grams = 0;
  for (int64_t k = 0; k < n_counts; k++) {
    int64_t begin = counts[k], end = k + 1 < n_counts ? counts[k + 1] : pool_len;
    if (begin < 0 || begin > end || end > pool_len)
      return kiln_error(KILN_INVALID_ARGUMENT, "ngram_counts[%lld] = %lld does not start a segment inside the pool of %lld", (long long)k,
                        (long long)begin, (long long)pool_len);
    if ((end - begin) % (k + 1))
      return kiln_error(KILN_INVALID_ARGUMENT, "the %lld-gram segment of the pool has %lld tokens, not a multiple of %lld",
                        (long long)k + 1, (long long)(end - begin), (long long)k + 1);
    grams += (end - begin) / (k + 1);
  }
  if (grams != n_indexes)
    return kiln_error(KILN_INVALID_ARGUMENT, "the pool holds %lld n-grams but ngram_indexes has %lld values", (long long)grams, (long long)n_indexes);
  return NULL;
}

static kiln_status vectorizer_attrs(const kx_node *n, vectorizer *v) {
  char mode[16];
  kx_attr_string(n->proto, "mode", "", mode, sizeof mode);
  if (strcmp(mode, "TF") == 0) v->mode = WEIGHT_TF;
  else if (strcmp(mode, "IDF") == 0) v->mode = WEIGHT_IDF;
  else if (strcmp(mode, "TFIDF") == 0) v->mode = WEIGHT_TFIDF;
  else return kiln_error(KILN_INVALID_ARGUMENT, "mode must be TF, IDF or TFIDF, got '%s'", mode);
  int64_t min_n = kx_attr_int(n->proto, "min_gram_length", 0), max_n = kx_attr_int(n->proto, "max_gram_length", 0);
  int64_t skip = kx_attr_int(n->proto, "max_skip_count", 0);
  if (min_n < 1 || max_n < min_n || max_n > 1 << 20)
    return kiln_error(KILN_INVALID_ARGUMENT, "min_gram_length (%lld) and max_gram_length (%lld) must satisfy 1 <= min <= max",
                      (long long)min_n, (long long)max_n);
  if (skip < 0 || skip > 1 << 20) return kiln_error(KILN_INVALID_ARGUMENT, "max_skip_count must be 0 or more, got %lld", (long long)skip);
  v->min_n = (int)min_n;
  v->max_n = (int)max_n;
  v->max_skip = (int)skip;
  return NULL;
}

static kiln_status vectorizer_prepare(kx_node *n) {
  vectorizer *v = calloc(1, sizeof *v);
  if (!v) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  n->params = v;
  kiln_status s = vectorizer_attrs(n, v);
  if (s) return s;
  const int64_t *ints, *counts, *indexes;
  const ProtobufCBinaryData *strs;
  const float *weights;
  int64_t n_ints = kx_attr_ints(n->proto, "pool_int64s", &ints), n_strs = kx_attr_strings(n->proto, "pool_strings", &strs);
  int64_t n_counts = kx_attr_ints(n->proto, "ngram_counts", &counts), n_indexes = kx_attr_ints(n->proto, "ngram_indexes", &indexes);
  int64_t n_weights = kx_attr_floats(n->proto, "weights", &weights);
  if ((n_ints >= 0) == (n_strs >= 0)) return kiln_error(KILN_INVALID_ARGUMENT, "exactly one of pool_int64s and pool_strings must be given");
  v->strings = n_strs >= 0;
  int64_t pool_len = v->strings ? n_strs : n_ints;
  if (n_counts < 0) n_counts = 0;
  if (n_indexes < 0) n_indexes = 0;
  if ((s = check_pool(pool_len, counts, n_counts, n_indexes))) return s;
  if (n_weights >= 0 && n_weights != n_indexes)
    return kiln_error(KILN_INVALID_ARGUMENT, "weights has %lld values, ngram_indexes %lld", (long long)n_weights, (long long)n_indexes);
  for (int64_t j = 0; j < n_indexes; j++) {
    if (indexes[j] < 0 || indexes[j] >= 1 << 30)
      return kiln_error(KILN_INVALID_ARGUMENT, "ngram_indexes[%lld] = %lld is not a valid output column", (long long)j, (long long)indexes[j]);
    if (indexes[j] + 1 > v->columns) v->columns = indexes[j] + 1;
  }

  v->tok_cap = table_cap((size_t)pool_len);
  v->edge_cap = table_cap((size_t)pool_len);
  v->toks = malloc(v->tok_cap * sizeof *v->toks);
  v->edges = malloc(v->edge_cap * sizeof *v->edges);
  v->node_col = malloc(((size_t)pool_len + 1) * sizeof *v->node_col);
  v->col_weight = calloc((size_t)v->columns + 1, sizeof *v->col_weight);
  v->tok_strs = v->strings ? calloc((size_t)pool_len + 1, sizeof *v->tok_strs) : NULL;
  if (!v->toks || !v->edges || !v->node_col || !v->col_weight || (v->strings && !v->tok_strs))
    return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  for (size_t i = 0; i < v->tok_cap; i++) v->toks[i].id = -1;
  for (size_t i = 0; i < v->edge_cap; i++) v->edges[i].child = -1;
  v->n_nodes = 1; /* the root: the empty prefix */
  v->node_col[0] = -1;
  for (int64_t k = 0, j = 0; k < n_counts; k++) { /* the (k+1)-grams */
    int64_t end = k + 1 < n_counts ? counts[k + 1] : pool_len;
    for (int64_t at = counts[k]; at < end; j++) {
      int32_t node = 0;
      for (int64_t t = 0; t <= k; t++, at++) {
        int32_t tok;
        if ((s = tok_add(v, v->strings ? 0 : ints[at], v->strings ? (const char *)strs[at].data : NULL, v->strings ? strs[at].len : 0, &tok)))
          return s;
        node = edge_walk(v, node, tok);
      }
      v->node_col[node] = indexes[j];
      v->col_weight[indexes[j]] = n_weights >= 0 ? weights[j] : 1;
    }
  }
  return NULL;
}

typedef struct count_job {
  const vectorizer *v;
  const int32_t *ids; /* [rows, len] token ids, -1 outside the pool */
  int64_t len;
  float *y; /* [rows, columns] */
} count_job;

/* Counts the pool n-grams of each row as onnxruntime does: for every skip distance, every start
 * position and every length; unigrams, unaffected by the skip, only for the first distance. */
static void count_rows(void *arg, int64_t begin, int64_t end) {
  const count_job *j = arg;
  const vectorizer *v = j->v;
  for (int64_t r = begin; r < end; r++) {
    const int32_t *ids = j->ids + r * j->len;
    float *y = j->y + r * v->columns;
    memset(y, 0, (size_t)v->columns * sizeof *y);
    int first_n = v->min_n;
    for (int64_t skip = 1; skip <= v->max_skip + 1; skip++) {
      for (int64_t start = 0; start + skip * (first_n - 1) < j->len; start++) {
        int32_t node = 0;
        for (int64_t n = 1, at = start; n <= v->max_n && at < j->len; n++, at += skip) {
          if (ids[at] < 0 || (node = edge_find(v, node, ids[at])) < 0) break;
          if (n >= first_n && v->node_col[node] >= 0) y[v->node_col[node]] += 1;
        }
      }
      if (first_n == 1 && ++first_n > v->max_n) break;
    }
    for (int64_t k = 0; k < v->columns; k++) {
      if (v->mode == WEIGHT_IDF) y[k] = y[k] > 0 ? v->col_weight[k] : 0;
      else if (v->mode == WEIGHT_TFIDF) y[k] *= v->col_weight[k];
    }
  }
}

static kiln_status vectorizer_run(kx_ctx *c) {
  const vectorizer *v = c->node->params;
  const kiln_tensor *x;
  kiln_status s;
  if ((s = kx_require(c, 0, &x))) return s;
  int ints = x->dtype == KILN_INT64 || x->dtype == KILN_INT32;
  if (v->strings ? x->dtype != KILN_STRING : !ints)
    return kiln_error(KILN_INVALID_ARGUMENT, "input has dtype %s but the pool holds %s", kiln_dtype_name(x->dtype), v->strings ? "strings" : "integers");
  if (x->rank != 1 && x->rank != 2) return kiln_error(KILN_INVALID_ARGUMENT, "input must be [C] or [N, C], got rank %d", x->rank);
  int64_t rows = x->rank == 2 ? x->dims[0] : 1, len = x->dims[x->rank - 1], n = rows * len;
  int64_t dims[2] = {rows, v->columns};
  kiln_tensor *y;
  if ((s = kx_output(c, 0, KILN_FLOAT, x->rank, dims + 2 - x->rank, &y))) return s;
  int32_t *ids = kx_scratch(c, (size_t)(n + 1) * sizeof *ids);
  if (!ids) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  for (int64_t i = 0; i < n; i++) {
    if (v->strings) {
      const char *str = ((char *const *)x->data)[i];
      ids[i] = tok_find(v, 0, str ? str : "", str ? strlen(str) : 0);
    } else {
      ids[i] = tok_find(v, x->dtype == KILN_INT64 ? ((const int64_t *)x->data)[i] : ((const int32_t *)x->data)[i], NULL, 0);
    }
  }
  count_job job = {v, ids, len, y->data};
  kx_parallel(c, rows, (double)len * (v->max_skip + 1) * v->max_n + (double)v->columns, count_rows, &job);
  return NULL;
}

const kx_op kx_ops_text[] = {
    {"", "StringNormalizer", 10, 0, normalizer_prepare, normalizer_run, normalizer_release, 0},
    {"", "TfIdfVectorizer", 9, 0, vectorizer_prepare, vectorizer_run, vectorizer_release, 0},
    {0},
};
