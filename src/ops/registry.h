/* Lookup in the op table (src/ops/registry.c). */
#ifndef KX_REGISTRY_H
#define KX_REGISTRY_H

#include "ops/op.h"

/* The kernel serving `name` in `domain` ("" or "ai.onnx" for the default) at that opset version. */
const kx_op *kx_op_find(const char *domain, const char *name, int opset);

#endif
