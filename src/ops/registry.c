/* The op table: every family's kernels, looked up by (domain, name, opset version). */
#include "kiln/ops.h"
#include "ops/registry.h"

#include <string.h>

#define FAMILY(f) extern const kx_op kx_ops_##f[];
#include "ops/families.h"
#undef FAMILY

static const kx_op *const families[] = {
#define FAMILY(f) kx_ops_##f,
#include "ops/families.h"
#undef FAMILY
};

static int same_domain(const char *a, const char *b) {
  if (!a || strcmp(a, "ai.onnx") == 0) a = "";
  if (!b || strcmp(b, "ai.onnx") == 0) b = "";
  return strcmp(a, b) == 0;
}

const kx_op *kx_op_find(const char *domain, const char *name, int opset) {
  for (size_t f = 0; f < sizeof families / sizeof families[0]; f++)
    for (const kx_op *op = families[f]; op->name; op++)
      if (strcmp(op->name, name) == 0 && same_domain(op->domain, domain) && opset >= op->since &&
          (op->until == 0 || opset <= op->until))
        return op;
  return NULL;
}

void kiln_ops_foreach(void (*fn)(void *arg, const char *domain, const char *op, int since, int until), void *arg) {
  for (size_t f = 0; f < sizeof families / sizeof families[0]; f++)
    for (const kx_op *op = families[f]; op->name; op++) fn(arg, op->domain, op->name, op->since, op->until);
}

int kiln_ops_supported(const char *domain, const char *op, int opset) { return kx_op_find(domain, op, opset) != NULL; }
