/* The REST front ends' JSON reader (src/serve/json.c) against independent references: cJSON's own
 * parser for the trees (every document both accept must give the same tree) and glibc's strtod for
 * the numbers (bit for bit). */
#include <cjson/cJSON.h>
#include <stdint.h>

#include "json_tree.h"
#include "serve/codec.h"
#include "test.h"

/* Parses with both readers: ours must accept exactly when `valid`, and then give cJSON's tree. */
static void check_doc(const char *doc, int valid) {
  cJSON *ours = NULL;
  kiln_status s = kx_codec_parse_json(doc, strlen(doc), &ours);
  if (valid != (s == NULL)) {
    fprintf(stderr, "document %s: expected %s, got %s\n", doc, valid ? "accepted" : "rejected", kiln_status_message(s));
    test_failures++;
  }
  if (s) {
    CHECK(kiln_status_code(s) == KILN_INVALID_ARGUMENT);
    CHECK(strstr(kiln_status_message(s), "invalid JSON at byte") != NULL);
  }
  kiln_status_free(s);
  if (ours) {
    cJSON *theirs = cJSON_ParseWithLength(doc, strlen(doc));
    CHECK(theirs != NULL);
    if (theirs && !json_same_tree(ours, theirs)) {
      fprintf(stderr, "document %s: the trees differ\n", doc);
      test_failures++;
    }
    cJSON_Delete(theirs);
  }
  kx_codec_free_json(ours);
}

static void test_documents(void) {
  const char *valid[] = {
      "0", "-0", "1", "-12.5e-3", "1E+2", "true", "false", "null", "\"\"", "\"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\"",
      "\"\\u00e9\\u20ac\\ud83d\\ude00\"", "[]", "{}", " [ 1 , 2 ,3 ] ", "{\"a\": {\"b\": [true, null, \"x\"]}}",
      "{\"instances\": [[0.1, -0.2, 3e-5], [1, 2, 3]]}", "[[[[[[[[1]]]]]]]]", "{\"a\":1,\"a\":2}",
      "123456789012345678901234567890", "-1e-400", "0.000000000000000000000000000001",
      "{\"inputs\":[{\"name\":\"x\",\"shape\":[1,2],\"datatype\":\"FP32\",\"data\":[1.5,2]}]}\n",
  };
  for (size_t i = 0; i < sizeof valid / sizeof valid[0]; i++) check_doc(valid[i], 1);
  const char *invalid[] = {
      "", " ", "NaN", "[NaN]", "Infinity", "[-Infinity]", "01", "1.", ".5", "-", "1e", "1e+", "+1", "[1,]",
      "[1 2]", "{\"a\" 1}", "{\"a\":1,}", "{a:1}", "[\"\\x\"]", "\"\\u12\"", "\"\\ud800\"", "\"\\udc00\"",
      "\"a\nb\"", "\"unterminated", "[1]x", "1e400", "[-1e309]", "tru", "nul", "[", "{\"a\":", "\"\\u0000\"", "[1] [2]",
  };
  for (size_t i = 0; i < sizeof invalid / sizeof invalid[0]; i++) check_doc(invalid[i], 0);
  /* nesting is bounded */
  char deep[200];
  memset(deep, '[', 100);
  memset(deep + 100, ']', 99);
  deep[199] = '\0';
  check_doc(deep, 0);
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t next_random(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}

/* Numbers printed every way a client prints them read back exactly as strtod reads them. */
static void test_numbers_match_strtod(void) {
  char text[512];
  int mismatches = 0;
  for (int i = 0; i < 200000; i++) {
    uint64_t bits = next_random();
    double v;
    switch (i % 4) {
    case 0: memcpy(&v, &bits, sizeof v); break;                               /* any double */
    case 1: v = (double)(int64_t)(bits >> 11) / (double)(1 + (bits & 0xffff)); break;
    case 2: v = (double)(float)((double)(bits >> 40) * 1e-6 - 8.0); break;  /* float data */
    default: v = (double)(int64_t)bits; break;                                 /* integers */
    }
    if (v != v || v - v != 0) continue; /* JSON has no NaN or infinity */
    static const char *formats[] = {"%.17g", "%.9g", "%.6f", "%.3e"};
    snprintf(text, sizeof text, formats[(i / 4) % 4], v);
    cJSON *node = NULL;
    kiln_status s = kx_codec_parse_json(text, strlen(text), &node);
    double want = strtod(text, NULL);
    if (s || !cJSON_IsNumber(node) || memcmp(&node->valuedouble, &want, sizeof want) != 0) {
      if (mismatches++ < 5) fprintf(stderr, "number %s: got %.17g, strtod gives %.17g\n", text, node ? node->valuedouble : 0.0, want);
    }
    kiln_status_free(s);
    kx_codec_free_json(node);
  }
  CHECK(mismatches == 0);
}

int main(void) {
  test_documents();
  test_numbers_match_strtod();
  return test_failures ? 1 : 0;
}
