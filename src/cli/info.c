/* `kiln info MODEL`: the signature, opsets, operator histogram and parameter count. */
#include "cli/cli.h"
#include "kiln/graph.h"

#include <stdlib.h>
#include <string.h>

static void put_type(FILE *f, const kiln_value_info *v) {
  fprintf(f, "%s%s%s", v->optional ? "optional " : "", v->kind == KILN_VALUE_SEQUENCE ? "sequence of " : "",
          v->dtype ? kiln_dtype_name(v->dtype) : "?");
  if (v->rank < 0) {
    fprintf(f, "[unknown shape]");
    return;
  }
  fputc('[', f);
  for (int d = 0; d < v->rank; d++) {
    if (d) fputc(',', f);
    if (v->dims[d] >= 0) fprintf(f, "%lld", (long long)v->dims[d]);
    else fprintf(f, "%s", v->dim_names[d] ? v->dim_names[d] : "?");
  }
  fputc(']', f);
}

static void put_json_string(FILE *f, const char *s) {
  fputc('"', f);
  for (; *s; s++) {
    if (*s == '"' || *s == '\\') fprintf(f, "\\%c", *s);
    else if ((unsigned char)*s < 0x20) fprintf(f, "\\u%04x", *s);
    else fputc(*s, f);
  }
  fputc('"', f);
}

static void put_json_io(FILE *f, const kiln_value_info *v) {
  fprintf(f, "{\"name\":");
  put_json_string(f, v->name);
  fprintf(f, ",\"kind\":\"%s\",\"optional\":%s,\"dtype\":\"%s\",\"shape\":", v->kind == KILN_VALUE_SEQUENCE ? "sequence" : "tensor",
          v->optional ? "true" : "false", v->dtype ? kiln_dtype_name(v->dtype) : "unknown");
  if (v->rank < 0) {
    fprintf(f, "null}");
    return;
  }
  fputc('[', f);
  for (int d = 0; d < v->rank; d++) {
    if (d) fputc(',', f);
    if (v->dims[d] >= 0) fprintf(f, "%lld", (long long)v->dims[d]);
    else if (v->dim_names[d]) put_json_string(f, v->dim_names[d]);
    else fprintf(f, "null");
  }
  fprintf(f, "]}");
}

typedef struct op_count {
  const char *op;
  int count;
} op_count;

static int by_count(const void *a, const void *b) {
  const op_count *x = a, *y = b;
  return x->count != y->count ? y->count - x->count : strcmp(x->op, y->op);
}

int cmd_info(int argc, char **argv) {
  int json = 0;
  const cli_flag flags[] = {{"json", CLI_BOOL, &json, NULL, "print one JSON object instead of text"}, {0}};
  const cli_spec spec = {"kiln info", "MODEL [--json]",
                         "Shows a model's inputs and outputs (names, dtypes, shapes), the opsets it imports, how often\n"
                         "each operator occurs, its parameter count, and the operators kiln does not implement.",
                         flags, 1, 1};
  cli_list args;
  int rc = cli_parse(&spec, argc, argv, &args);
  if (rc >= 0) return rc;
  kiln_load_options opt = {.allow_unsupported = 1};
  kiln_model *m;
  kiln_status s = kiln_model_load(args.items[0], &opt, &m);
  cli_list_free(&args);
  if (s) return cli_fail(s);

  kiln_model_summary sum;
  kiln_model_summarize(m, &sum);
  op_count *ops = calloc((size_t)sum.n_nodes + 1, sizeof *ops);
  int n_ops = 0;
  for (int i = 0; ops && i < sum.n_nodes; i++) {
    const char *op = kiln_model_node_op(m, i);
    int k = 0;
    while (k < n_ops && strcmp(ops[k].op, op) != 0) k++;
    if (k == n_ops) ops[n_ops++].op = op;
    ops[k].count++;
  }
  if (ops) qsort(ops, (size_t)n_ops, sizeof *ops, by_count);

  if (json) {
    printf("{\"ir_version\":%lld,\"producer\":", (long long)sum.ir_version);
    put_json_string(stdout, sum.producer);
    printf(",\"opsets\":{");
    for (int i = 0; i < sum.n_opsets; i++) {
      if (i) putchar(',');
      put_json_string(stdout, sum.opset_domains[i][0] ? sum.opset_domains[i] : "ai.onnx");
      printf(":%lld", (long long)sum.opset_versions[i]);
    }
    printf("},\"inputs\":[");
    for (int i = 0; i < kiln_model_input_count(m); i++) {
      if (i) putchar(',');
      put_json_io(stdout, kiln_model_input(m, i));
    }
    printf("],\"outputs\":[");
    for (int i = 0; i < kiln_model_output_count(m); i++) {
      if (i) putchar(',');
      put_json_io(stdout, kiln_model_output(m, i));
    }
    printf("],\"nodes\":%d,\"operators\":{", sum.n_nodes);
    for (int i = 0; i < n_ops; i++) {
      if (i) putchar(',');
      put_json_string(stdout, ops[i].op);
      printf(":%d", ops[i].count);
    }
    printf("},\"parameters\":%lld,\"parameter_bytes\":%lld,\"unsupported\":[", (long long)sum.parameters,
           (long long)sum.parameter_bytes);
    for (int i = 0; i < kiln_model_unsupported_count(m); i++) {
      if (i) putchar(',');
      put_json_string(stdout, kiln_model_unsupported(m, i));
    }
    printf("]}\n");
  } else {
    printf("model:      %s\nir_version: %lld\nproducer:   %s %s\nopsets:    ", argv[argc - 1], (long long)sum.ir_version,
           sum.producer[0] ? sum.producer : "(none)", sum.producer_version);
    for (int i = 0; i < sum.n_opsets; i++)
      printf(" %s %lld", sum.opset_domains[i][0] ? sum.opset_domains[i] : "ai.onnx", (long long)sum.opset_versions[i]);
    printf("\ninputs:\n");
    for (int i = 0; i < kiln_model_input_count(m); i++) {
      printf("  %-24s ", kiln_model_input(m, i)->name);
      put_type(stdout, kiln_model_input(m, i));
      putchar('\n');
    }
    printf("outputs:\n");
    for (int i = 0; i < kiln_model_output_count(m); i++) {
      printf("  %-24s ", kiln_model_output(m, i)->name);
      put_type(stdout, kiln_model_output(m, i));
      putchar('\n');
    }
    printf("parameters: %lld (%.2f MB)\nnodes:      %d\noperators:\n", (long long)sum.parameters,
           (double)sum.parameter_bytes / 1e6, sum.n_nodes);
    for (int i = 0; i < n_ops; i++) printf("  %-24s %d\n", ops[i].op, ops[i].count);
    int nu = kiln_model_unsupported_count(m);
    printf("unsupported: %s\n", nu ? "" : "none");
    for (int i = 0; i < nu; i++) printf("  %s\n", kiln_model_unsupported(m, i));
  }
  free(ops);
  kiln_model_free(m);
  return EXIT_OK;
}
