/* Structural equality of two cJSON trees, item by item in document order (cJSON_Compare looks
 * object members up by key, so it calls two equal documents with a repeated key different).
 * Shared by the JSON reader's unit test and its differential fuzz target. */
#ifndef KILN_TEST_JSON_TREE_H
#define KILN_TEST_JSON_TREE_H

#include <cjson/cJSON.h>
#include <string.h>

static int json_same_tree(const cJSON *a, const cJSON *b) {
  for (; a && b; a = a->next, b = b->next) {
    if ((a->type & 0xFF) != (b->type & 0xFF)) return 0;
    if ((a->string == NULL) != (b->string == NULL) || (a->string && strcmp(a->string, b->string) != 0)) return 0;
    if (cJSON_IsNumber(a) && memcmp(&a->valuedouble, &b->valuedouble, sizeof a->valuedouble) != 0) return 0;
    if (cJSON_IsString(a) && strcmp(a->valuestring, b->valuestring) != 0) return 0;
    if (!json_same_tree(a->child, b->child)) return 0;
  }
  return a == b; /* both lists ended */
}

#endif
