/* `kiln run MODEL --input NAME=FILE ...`: one run, outputs written as DIR/<output>.npy. */
#include "cli/cli.h"
#include "kiln/graph.h"
#include "kiln/onnx.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), k = strlen(suffix);
  return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* An output name made safe as a file name. */
static void file_name(const char *name, char *out, size_t size) {
  size_t i = 0;
  for (; name[i] && i + 1 < size; i++) {
    char c = name[i];
    out[i] = (c == '/' || c == '\\' || (unsigned char)c < 0x20) ? '_' : c;
  }
  out[i] = '\0';
  if (i == 0 || strcmp(out, ".") == 0 || strcmp(out, "..") == 0) snprintf(out, size, "output");
}

static kiln_status read_input(const kiln_value_info *info, const char *path, kiln_value *out) {
  memset(out, 0, sizeof *out);
  if (ends_with(path, ".pb")) {
    kiln_proto_kind kind = info->optional ? KILN_PROTO_OPTIONAL
                           : info->kind == KILN_VALUE_SEQUENCE ? KILN_PROTO_SEQUENCE : KILN_PROTO_TENSOR;
    return kiln_proto_value_read(path, kind, out);
  }
  out->kind = KILN_VALUE_TENSOR;
  return kiln_npy_read(path, &out->tensor);
}

static kiln_status write_outputs(const kiln_model *m, const kiln_value **outputs, const char *dir) {
  char path[4096], name[256], desc[128];
  for (int i = 0; i < kiln_model_output_count(m); i++) {
    const kiln_value *v = outputs[i];
    file_name(kiln_model_output(m, i)->name, name, sizeof name);
    if (v->kind == KILN_VALUE_NONE) {
      fprintf(stderr, "output '%s' is an empty optional: nothing written\n", kiln_model_output(m, i)->name);
      continue;
    }
    size_t n = v->kind == KILN_VALUE_SEQUENCE ? v->count : 1;
    for (size_t k = 0; k < n; k++) {
      const kiln_tensor *t = v->kind == KILN_VALUE_SEQUENCE ? &v->items[k] : &v->tensor;
      if (v->kind == KILN_VALUE_SEQUENCE) cli_path(path, sizeof path, "%s/%s_%zu.npy", dir, name, k);
      else cli_path(path, sizeof path, "%s/%s.npy", dir, name);
      kiln_status s = kiln_npy_write(path, t);
      if (s) return s;
      fprintf(stderr, "wrote %s %s\n", path, kiln_tensor_describe(t, desc, sizeof desc));
    }
  }
  return NULL;
}

int cmd_run(int argc, char **argv) {
  cli_list input_flags = {0};
  const char *out_dir = ".";
  long threads = 0;
  const char *device = NULL;
  const cli_flag flags[] = {
      {"input", CLI_LIST, &input_flags, "NAME=FILE", "an input as .npy, or .pb (ONNX TensorProto); repeat per input"},
      {"output", CLI_STRING, &out_dir, "DIR", "folder for the outputs (default: the current folder)"},
      {"threads", CLI_INT, &threads, "N", "threads (default $KILN_NUM_THREADS, else the CPU count)"},
      CLI_DEVICE_FLAG(device),
      {0},
  };
  const cli_spec spec = {"kiln run", "MODEL --input NAME=FILE... [--output DIR] [--threads N]",
                         "Runs the model once and writes every graph output to DIR/<output>.npy (a sequence output\n"
                         "as DIR/<output>_<i>.npy). A model with one input also takes --input FILE.",
                         flags, 1, 1};
  cli_list args;
  int rc = cli_parse(&spec, argc, argv, &args);
  if (rc >= 0) {
    cli_list_free(&input_flags);
    return rc;
  }
  const char *model_path = args.items[0];
  cli_list_free(&args);
  if ((rc = cli_device_require("kiln run", device)) >= 0) {
    cli_list_free(&input_flags);
    return rc;
  }
  kiln_model *m = NULL;
  kiln_session *session = NULL;
  kiln_pool *pool = NULL;
  int n_in = 0;
  kiln_value *inputs = NULL;
  const kiln_value **in_ptrs = NULL, **outputs = NULL;
  kiln_status s = kiln_model_load(model_path, NULL, &m);
  if (!s) {
    n_in = kiln_model_input_count(m);
    inputs = calloc((size_t)n_in + 1, sizeof *inputs);
    in_ptrs = calloc((size_t)n_in + 1, sizeof *in_ptrs);
    outputs = calloc((size_t)kiln_model_output_count(m) + 1, sizeof *outputs);
    if (!inputs || !in_ptrs || !outputs) s = kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  }
  for (int k = 0; !s && k < input_flags.count; k++) {
    const char *spec_arg = input_flags.items[k], *eq = strchr(spec_arg, '=');
    char name[512];
    const char *path = spec_arg;
    int idx;
    if (eq) {
      snprintf(name, sizeof name, "%.*s", (int)(eq - spec_arg), spec_arg);
      path = eq + 1;
      idx = kiln_model_input_index(m, name);
      if (idx < 0) {
        char known[1024] = "";
        for (int i = 0; i < n_in; i++)
          snprintf(known + strlen(known), sizeof known - strlen(known), "%s'%s'", i ? ", " : "", kiln_model_input(m, i)->name);
        s = kiln_error(KILN_INVALID_ARGUMENT, "the model has no input named '%s' (its inputs: %s)", name, known);
        break;
      }
    } else if (n_in == 1) {
      idx = 0;
    } else {
      s = kiln_error(KILN_INVALID_ARGUMENT, "--input %s: name the input (NAME=FILE); the model has %d inputs", spec_arg, n_in);
      break;
    }
    if (in_ptrs[idx]) {
      s = kiln_error(KILN_INVALID_ARGUMENT, "input '%s' is given twice", kiln_model_input(m, idx)->name);
      break;
    }
    if ((s = read_input(kiln_model_input(m, idx), path, &inputs[idx]))) break;
    in_ptrs[idx] = &inputs[idx];
  }
  struct stat st;
  if (!s && (stat(out_dir, &st) != 0 || !S_ISDIR(st.st_mode)))
    s = kiln_error(KILN_NOT_FOUND, "output folder '%s' does not exist", out_dir);
  if (!s) s = kiln_pool_create(threads > 0 ? (int)threads : kiln_default_threads(), &pool);
  kiln_session_options so = {.pool = pool};
  if (!s) s = kiln_session_create(m, &so, &session);
  if (!s) s = kiln_session_run(session, in_ptrs, outputs);
  if (!s) s = write_outputs(m, outputs, out_dir);
  for (int i = 0; inputs && i < n_in; i++) kiln_value_release(&inputs[i]);
  free(inputs);
  free(in_ptrs);
  free(outputs);
  kiln_session_free(session);
  kiln_pool_free(pool);
  kiln_model_free(m);
  cli_list_free(&input_flags);
  return s ? cli_fail(s) : EXIT_OK;
}
