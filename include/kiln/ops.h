/* kiln ops: the table of operator kernels kiln implements. */
#ifndef KILN_OPS_H
#define KILN_OPS_H

#ifdef __cplusplus
extern "C" {
#endif

/* Calls fn once per kernel entry: domain ("" = ai.onnx), operator name, and the range of the
 * domain's opset versions it serves (until = 0: no upper bound). */
void kiln_ops_foreach(void (*fn)(void *arg, const char *domain, const char *op, int since, int until), void *arg);

/* Whether kiln has a kernel for op in domain at the given opset version. */
int kiln_ops_supported(const char *domain, const char *op, int opset);

#ifdef __cplusplus
}
#endif
#endif
