/* The public model and session API: loading (file or memory), the declared signature, the facts
 * `kiln info` prints, and runs with their input checks. */
#include "graph/graph.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* protobuf's own limit for one message; larger models keep their weights in external data */
#define MAX_MODEL_BYTES ((size_t)2 << 30)

struct kiln_model {
  char *name;
  char *base_dir;
  Onnx__ModelProto *proto;
  kx_mapping *mappings;
  kx_graph *graph;
  const char **opset_domains;
  int64_t *opset_versions;
  int n_opsets;
  char **unsupported;
  int n_unsupported;
  int64_t parameters, parameter_bytes;
};

struct kiln_session {
  const kiln_model *model;
  kx_frame *frame;
  const kiln_value **inputs;   /* inputs in graph order, after defaults */
  const kiln_value **outputs;
  kiln_value *tensor_inputs;   /* for kiln_session_run_tensors */
};

void kiln_model_free(kiln_model *m) {
  if (!m) return;
  kx_graph_free(m->graph);
  kx_mappings_free(m->mappings);
  kx_onnx_free_model(m->proto);
  for (int i = 0; i < m->n_unsupported; i++) free(m->unsupported[i]);
  free(m->unsupported);
  free(m->opset_domains);
  free(m->opset_versions);
  free(m->name);
  free(m->base_dir);
  free(m);
}

static kiln_status load(const void *buf, size_t len, const char *name, const char *base_dir, int allow_unsupported,
                        kiln_model **out) {
  kiln_model *m = calloc(1, sizeof *m);
  if (!m) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  m->name = strdup(name);
  m->base_dir = base_dir ? strdup(base_dir) : NULL;
  kiln_status s = NULL;
  if (!m->name || (base_dir && !m->base_dir)) {
    s = kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
    goto fail;
  }
  if ((s = kx_onnx_decode_model(buf, len, name, &m->proto))) goto fail;
  const Onnx__ModelProto *mp = m->proto;

  m->n_opsets = (int)mp->n_opset_import;
  m->opset_domains = calloc((size_t)m->n_opsets + 1, sizeof *m->opset_domains);
  m->opset_versions = calloc((size_t)m->n_opsets + 1, sizeof *m->opset_versions);
  if (!m->opset_domains || !m->opset_versions) {
    s = kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
    goto fail;
  }
  for (int i = 0; i < m->n_opsets; i++) {
    m->opset_domains[i] = mp->opset_import[i]->domain ? mp->opset_import[i]->domain : "";
    m->opset_versions[i] = mp->opset_import[i]->has_version ? mp->opset_import[i]->version : 1;
  }
  if (m->n_opsets == 0 && (!mp->has_ir_version || mp->ir_version >= 3)) {
    s = kiln_error(KILN_INVALID_ARGUMENT, "%s: the model imports no opset", name);
    goto fail;
  }

  kx_compile_env env = {
      .model_name = name,
      .n_opsets = m->n_opsets,
      .opset_domains = m->opset_domains,
      .opset_versions = m->opset_versions,
      .source = {.base_dir = m->base_dir, .mappings = &m->mappings, .view_raw = 1},
      .allow_unsupported = allow_unsupported,
  };
  s = kx_graph_compile(mp->graph, &env, NULL, NULL, &m->graph);
  m->unsupported = env.unsupported;
  m->n_unsupported = env.n_unsupported;
  if (s) {
    s = kiln_status_prefix(s, "%s: ", name);
    goto fail;
  }
  for (size_t i = 0; i < mp->graph->n_initializer; i++) {
    const Onnx__TensorProto *t = mp->graph->initializer[i];
    int64_t n = 1;
    for (size_t d = 0; d < t->n_dims; d++) n *= t->dims[d];
    m->parameters += n;
    m->parameter_bytes += n * (int64_t)kiln_dtype_size((kiln_dtype)t->data_type);
  }
  *out = m;
  return NULL;
fail:
  kiln_model_free(m);
  return s;
}

kiln_status kiln_model_load_buffer(const void *buf, size_t len, const kiln_load_options *opt, kiln_model **out) {
  kiln_load_options none = {0};
  if (!opt) opt = &none;
  if (len > MAX_MODEL_BYTES)
    return kiln_error(KILN_RESOURCE_EXHAUSTED, "%s: %zu bytes is above the 2 GiB limit of a protobuf message (keep weights in external data)",
                      opt->name ? opt->name : "<memory>", len);
  return load(buf, len, opt->name ? opt->name : "<memory>", opt->base_dir, opt->allow_unsupported, out);
}

kiln_status kiln_model_load(const char *path, const kiln_load_options *opt, kiln_model **out) {
  kiln_load_options none = {0};
  if (!opt) opt = &none;
  const char *name = opt->name ? opt->name : path;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return kiln_error(errno == ENOENT ? KILN_NOT_FOUND : KILN_IO, "%s: %s", name, strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return kiln_error(KILN_IO, "%s: not a regular file", name);
  }
  size_t len = (size_t)st.st_size;
  if (len > MAX_MODEL_BYTES) {
    close(fd);
    return kiln_error(KILN_RESOURCE_EXHAUSTED, "%s: %zu bytes is above the 2 GiB limit of a protobuf message (keep weights in external data)", name, len);
  }
  /* The decoder copies what it keeps, so the mapping only lives for the duration of the load. */
  void *map = len ? mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0) : NULL;
  close(fd);
  if (map == MAP_FAILED) return kiln_error(KILN_IO, "%s: cannot map the file: %s", name, strerror(errno));
  char *dir = strdup(path);
  if (!dir) {
    if (map) munmap(map, len);
    return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  }
  char *slash = strrchr(dir, '/');
  if (slash) *slash = '\0';
  else strcpy(dir, ".");
  if (slash == dir) strcpy(dir, "/");
  kiln_status s = load(map ? map : "", len, name, dir, opt->allow_unsupported, out);
  free(dir);
  if (map) munmap(map, len);
  return s;
}

int kiln_model_input_count(const kiln_model *m) { return m->graph->n_inputs; }
const kiln_value_info *kiln_model_input(const kiln_model *m, int i) {
  return i >= 0 && i < m->graph->n_inputs ? &m->graph->input_info[i] : NULL;
}
int kiln_model_output_count(const kiln_model *m) { return m->graph->n_outputs; }
const kiln_value_info *kiln_model_output(const kiln_model *m, int i) {
  return i >= 0 && i < m->graph->n_outputs ? &m->graph->output_info[i] : NULL;
}

int kiln_model_input_index(const kiln_model *m, const char *name) {
  for (int i = 0; i < m->graph->n_inputs; i++)
    if (strcmp(m->graph->input_info[i].name, name) == 0) return i;
  return -1;
}

int kiln_model_output_index(const kiln_model *m, const char *name) {
  for (int i = 0; i < m->graph->n_outputs; i++)
    if (strcmp(m->graph->output_info[i].name, name) == 0) return i;
  return -1;
}

void kiln_model_summarize(const kiln_model *m, kiln_model_summary *out) {
  const Onnx__ModelProto *mp = m->proto;
  memset(out, 0, sizeof *out);
  out->ir_version = mp->has_ir_version ? mp->ir_version : 0;
  out->producer = mp->producer_name ? mp->producer_name : "";
  out->producer_version = mp->producer_version ? mp->producer_version : "";
  out->n_opsets = m->n_opsets;
  out->opset_domains = m->opset_domains;
  out->opset_versions = m->opset_versions;
  out->n_nodes = (int)mp->graph->n_node;
  out->parameters = m->parameters;
  out->parameter_bytes = m->parameter_bytes;
}

const char *kiln_model_node_op(const kiln_model *m, int i) {
  const Onnx__GraphProto *g = m->proto->graph;
  return i >= 0 && (size_t)i < g->n_node ? g->node[i]->op_type : NULL;
}

int kiln_model_unsupported_count(const kiln_model *m) { return m->n_unsupported; }
const char *kiln_model_unsupported(const kiln_model *m, int i) {
  return i >= 0 && i < m->n_unsupported ? m->unsupported[i] : NULL;
}

/* ---- sessions */

kiln_status kiln_session_create(const kiln_model *m, const kiln_session_options *opt, kiln_session **out) {
  if (m->n_unsupported)
    return kiln_error(KILN_UNIMPLEMENTED, "%s: cannot run: unsupported operator %s%s", m->name, m->unsupported[0],
                      m->n_unsupported > 1 ? " and others" : "");
  kiln_session_options none = {0};
  if (!opt) opt = &none;
  kiln_session *s = calloc(1, sizeof *s);
  if (!s) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  s->model = m;
  size_t ni = (size_t)m->graph->n_inputs + 1, no = (size_t)m->graph->n_outputs + 1;
  s->inputs = calloc(ni, sizeof *s->inputs);
  s->outputs = calloc(no, sizeof *s->outputs);
  s->tensor_inputs = calloc(ni, sizeof *s->tensor_inputs);
  kiln_status st = NULL;
  if (!s->inputs || !s->outputs || !s->tensor_inputs) st = kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  if (!st) st = kx_frame_create(m->graph, opt->pool, opt->threads, &s->frame);
  if (!st && opt->profile) st = kx_frame_profile(s->frame);
  if (st) {
    kiln_session_free(s);
    return st;
  }
  *out = s;
  return NULL;
}

void kiln_session_free(kiln_session *s) {
  if (!s) return;
  kx_frame_free(s->frame);
  free(s->inputs);
  free(s->outputs);
  free(s->tensor_inputs);
  free(s);
}

static void describe_declared(const kiln_value_info *info, char *buf, size_t size) {
  size_t used = (size_t)snprintf(buf, size, "%s%s", info->kind == KILN_VALUE_SEQUENCE ? "sequence of " : "",
                                 info->dtype ? kiln_dtype_name(info->dtype) : "any");
  if (info->rank < 0 || used >= size) return;
  used += (size_t)snprintf(buf + used, size - used, "[");
  for (int d = 0; d < info->rank && used < size; d++) {
    if (info->dims[d] >= 0) used += (size_t)snprintf(buf + used, size - used, d ? ",%lld" : "%lld", (long long)info->dims[d]);
    else used += (size_t)snprintf(buf + used, size - used, d ? ",%s" : "%s", info->dim_names[d] ? info->dim_names[d] : "?");
  }
  if (used < size) snprintf(buf + used, size - used, "]");
}

static kiln_status check_input(const kiln_value_info *info, const kiln_value *v) {
  char want[160], got[160];
  if (!v || v->kind == KILN_VALUE_NONE) {
    if (info->optional) return NULL;
    return kiln_error(KILN_INVALID_ARGUMENT, "input '%s' is missing", info->name);
  }
  describe_declared(info, want, sizeof want);
  if (info->kind == KILN_VALUE_SEQUENCE) {
    if (v->kind != KILN_VALUE_SEQUENCE)
      return kiln_error(KILN_INVALID_ARGUMENT, "input '%s': expected %s, got a tensor", info->name, want);
    return NULL;
  }
  if (v->kind != KILN_VALUE_TENSOR)
    return kiln_error(KILN_INVALID_ARGUMENT, "input '%s': expected %s, got a sequence", info->name, want);
  const kiln_tensor *t = &v->tensor;
  kiln_tensor_describe(t, got, sizeof got);
  if (info->dtype != KILN_UNDEFINED && t->dtype != info->dtype)
    return kiln_error(KILN_INVALID_ARGUMENT, "input '%s': expected %s, got %s (wrong dtype)", info->name, want, got);
  if (info->rank >= 0 && t->rank != info->rank)
    return kiln_error(KILN_INVALID_ARGUMENT, "input '%s': expected %s, got %s (rank %d, expected %d)", info->name, want,
                      got, t->rank, info->rank);
  for (int d = 0; info->rank >= 0 && d < info->rank; d++)
    if (info->dims[d] >= 0 && t->dims[d] != info->dims[d])
      return kiln_error(KILN_INVALID_ARGUMENT, "input '%s': expected %s, got %s (dimension %d is %lld, expected %lld)",
                        info->name, want, got, d, (long long)t->dims[d], (long long)info->dims[d]);
  if (kiln_tensor_numel(t) > 0 && !t->data)
    return kiln_error(KILN_INVALID_ARGUMENT, "input '%s' has no data", info->name);
  return NULL;
}

kiln_status kiln_session_run(kiln_session *s, const kiln_value *const *inputs, const kiln_value **outputs) {
  const kx_graph *g = s->model->graph;
  for (int i = 0; i < g->n_inputs; i++) {
    kiln_status st = check_input(&g->input_info[i], inputs[i]);
    if (st) return st;
    s->inputs[i] = inputs[i] && inputs[i]->kind != KILN_VALUE_NONE ? inputs[i] : NULL;
  }
  kiln_status st = kx_frame_run(s->frame, s->inputs, NULL, s->outputs);
  if (st) return st;
  for (int i = 0; i < g->n_outputs; i++) outputs[i] = s->outputs[i];
  return NULL;
}

int kiln_session_profile(const kiln_session *s, kiln_node_profile *out, int max) {
  const double *us = kx_frame_node_us(s->frame);
  const int64_t *calls = kx_frame_node_calls(s->frame);
  const kx_graph *g = s->model->graph;
  if (!us) return 0;
  for (int i = 0; i < g->n_nodes && i < max; i++)
    out[i] = (kiln_node_profile){g->nodes[i].index, g->nodes[i].op_type, g->nodes[i].name, calls[i], us[i]};
  return g->n_nodes;
}

void kiln_session_stats_get(const kiln_session *s, kiln_session_stats *out) {
  memset(out, 0, sizeof *out);
  kx_frame_stats(s->frame, out);
}

kiln_status kiln_session_run_tensors(kiln_session *s, const kiln_tensor *const *inputs, const kiln_tensor **outputs) {
  const kx_graph *g = s->model->graph;
  for (int i = 0; i < g->n_inputs; i++) {
    if (!inputs[i]) {
      s->inputs[i] = NULL;
      continue;
    }
    s->tensor_inputs[i].kind = KILN_VALUE_TENSOR;
    s->tensor_inputs[i].tensor = *inputs[i];
    s->inputs[i] = &s->tensor_inputs[i];
  }
  const kiln_value **outs = s->outputs;
  kiln_status st = kiln_session_run(s, s->inputs, outs);
  if (st) return st;
  for (int i = 0; i < g->n_outputs; i++) {
    if (outs[i]->kind != KILN_VALUE_TENSOR)
      return kiln_error(KILN_INVALID_ARGUMENT, "output '%s' is not a tensor; use kiln_session_run", g->output_info[i].name);
    outputs[i] = &outs[i]->tensor;
  }
  return NULL;
}

kiln_status kiln_tensor_synthetic(const kiln_value_info *info, int64_t batch, const int64_t *dims, uint64_t seed,
                                  kiln_tensor *out) {
  if (info->kind != KILN_VALUE_TENSOR)
    return kiln_error(KILN_UNIMPLEMENTED, "input '%s' is a sequence; synthetic inputs are tensors only", info->name);
  kiln_dtype dtype = info->dtype ? info->dtype : KILN_FLOAT;
  int rank = info->rank < 0 ? 0 : info->rank;
  int64_t shape[KILN_MAX_RANK];
  for (int d = 0; d < rank; d++) {
    shape[d] = info->dims[d];
    if (dims && dims[d] >= 0) shape[d] = dims[d];
    else if (shape[d] < 0) shape[d] = d == 0 ? batch : 1;
  }
  kiln_status s = kiln_tensor_alloc(out, dtype, rank, shape);
  if (s) return kiln_status_prefix(s, "input '%s': ", info->name);
  uint64_t x = seed * 0x9e3779b97f4a7c15ull + 0x2545f4914f6cdd1dull;
  int64_t n = kiln_tensor_numel(out);
  for (int64_t i = 0; i < n; i++) {
    x ^= x << 13; /* xorshift64 */
    x ^= x >> 7;
    x ^= x << 17;
    double u = (double)(x >> 11) / 9007199254740992.0; /* [0, 1) */
    switch (dtype) {
    case KILN_STRING:
      if (!(((char **)out->data)[i] = strdup("kiln"))) {
        kiln_tensor_release(out);
        return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
      }
      break;
    case KILN_BOOL: ((uint8_t *)out->data)[i] = u < 0.5; break;
    case KILN_FLOAT: ((float *)out->data)[i] = (float)(2 * u - 1); break;
    case KILN_DOUBLE: ((double *)out->data)[i] = 2 * u - 1; break;
    case KILN_FLOAT16: ((uint16_t *)out->data)[i] = kiln_float_to_half((float)(2 * u - 1)); break;
    case KILN_BFLOAT16: ((uint16_t *)out->data)[i] = kiln_float_to_bfloat16((float)(2 * u - 1)); break;
    default: { /* integers: 0..99, valid as indices of embeddings and gathers */
      int64_t v = (int64_t)(u * 100);
      size_t es = kiln_dtype_size(dtype);
      if (es == 1) ((uint8_t *)out->data)[i] = (uint8_t)v;
      else if (es == 2) ((uint16_t *)out->data)[i] = (uint16_t)v;
      else if (es == 4) ((uint32_t *)out->data)[i] = (uint32_t)v;
      else ((uint64_t *)out->data)[i] = (uint64_t)v;
    }
    }
  }
  return NULL;
}
