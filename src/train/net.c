/* The network: layers built in order from a run file's model, one allocation for every
 * parameter and one for every gradient, activations kept per layer for the backward pass. */
#include "train/train.h"

#include "data/data.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

extern const kx_layer_ops kx_layer_dense, kx_layer_flatten, kx_layer_reshape, kx_layer_dropout, kx_layer_activation,
    kx_layer_relu, kx_layer_sigmoid, kx_layer_tanh, kx_layer_softmax, kx_layer_conv2d, kx_layer_max_pooling2d,
    kx_layer_average_pooling2d, kx_layer_global_average_pooling2d, kx_layer_batch_normalization;

static const kx_layer_ops *const layer_kinds[] = {
    &kx_layer_dense, &kx_layer_flatten, &kx_layer_reshape, &kx_layer_dropout, &kx_layer_activation,
    &kx_layer_relu, &kx_layer_sigmoid, &kx_layer_tanh, &kx_layer_softmax, &kx_layer_conv2d, &kx_layer_max_pooling2d,
    &kx_layer_average_pooling2d, &kx_layer_global_average_pooling2d, &kx_layer_batch_normalization,
};
#define N_KINDS ((int)(sizeof layer_kinds / sizeof layer_kinds[0]))

/* Largest per-sample size of any activation: 64 Mi floats. */
#define MAX_SAMPLE_FLOATS ((int64_t)1 << 26)
#define MAX_LAYERS 256

int64_t kx_shape_size(const kx_shape *s) {
  int64_t n = 1;
  for (int i = 0; i < s->rank; i++) n *= s->d[i];
  return n;
}

const kx_layer_ops *kx_layer_find(const char *name) {
  for (int i = 0; i < N_KINDS; i++)
    if (strcmp(layer_kinds[i]->name, name) == 0) return layer_kinds[i];
  return NULL;
}

static void known_layers(char *buf, size_t size) {
  size_t used = 0;
  buf[0] = 0;
  for (int i = 0; i < N_KINDS && used < size; i++)
    used += (size_t)snprintf(buf + used, size - used, "%s%s", i ? ", " : "", layer_kinds[i]->name);
}

/* Layer i of the model: {"dense": {...}} or a bare name ("flatten"). Names it as Keras does:
 * the first dense is "dense", the next "dense_1". */
static kiln_status configure_layer(kx_net *n, int i, const cJSON *item) {
  kx_layer *l = &n->layers[i];
  char where[96];
  const char *kind = cJSON_IsString(item) ? item->valuestring
                     : cJSON_IsObject(item) && item->child && !item->child->next ? item->child->string
                                                                                 : NULL;
  if (!kind)
    return kiln_error(KILN_INVALID_ARGUMENT, "model.layers[%d]: expected {\"<layer>\": {config}} or a layer name", i);
  l->ops = kx_layer_find(kind);
  if (!l->ops) {
    char known[512];
    known_layers(known, sizeof known);
    return kiln_error(KILN_INVALID_ARGUMENT, "model.layers[%d]: unknown layer '%s' (known: %s)", i, kind, known);
  }
  int same_kind = 0;
  for (int j = 0; j < i; j++) same_kind += n->layers[j].ops == l->ops;
  if (same_kind) snprintf(l->name, sizeof l->name, "%s_%d", kind, same_kind);
  else snprintf(l->name, sizeof l->name, "%s", kind);
  snprintf(where, sizeof where, "model.layers[%d].%s", i, kind);
  cJSON *empty = cJSON_CreateObject();
  const cJSON *config = cJSON_IsObject(item) && !cJSON_IsNull(item->child) ? item->child : empty;
  kiln_status s = empty ? l->ops->configure(l, config, where) : kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  cJSON_Delete(empty);
  return s;
}

static kiln_status alloc_floats(int64_t count, float **out) {
  *out = NULL;
  if (count <= 0) return NULL;
  *out = aligned_alloc(64, ((size_t)count * sizeof(float) + 63) & ~(size_t)63);
  if (!*out) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory allocating %lld floats", (long long)count);
  memset(*out, 0, (size_t)count * sizeof(float));
  return NULL;
}

static kiln_status check_shape(const kx_layer *l, int i) {
  int64_t size = kx_shape_size(&l->out);
  for (int d = 0; d < l->out.rank; d++)
    if (l->out.d[d] < 1)
      return kiln_error(KILN_INVALID_ARGUMENT, "model.layers[%d] (%s): its output would be empty (input too small for the layer)", i, l->name);
  if (size > MAX_SAMPLE_FLOATS)
    return kiln_error(KILN_RESOURCE_EXHAUSTED, "model.layers[%d] (%s): %lld values per sample is over kiln's limit of %lld", i,
                      l->name, (long long)size, (long long)MAX_SAMPLE_FLOATS);
  return NULL;
}

static kiln_status build(kx_net *n, const cJSON *layers) {
  kx_shape shape = n->input;
  int64_t widest = kx_shape_size(&shape), scratch = 0;
  for (int i = 0; i < n->n_layers; i++) {
    kx_layer *l = &n->layers[i];
    kiln_status s = configure_layer(n, i, cJSON_GetArrayItem(layers, i));
    if (s) return s;
    l->in = shape;
    if ((s = l->ops->build(l))) return kiln_status_prefix(s, "model.layers[%d] (%s): ", i, l->name);
    if ((s = check_shape(l, i))) return s;
    shape = l->out;
    widest = kx_shape_size(&shape) > widest ? kx_shape_size(&shape) : widest;
    scratch = l->scratch_per_sample > scratch ? l->scratch_per_sample : scratch;
    n->n_params += l->n_params;
    n->n_state += l->n_state;
  }
  kiln_status s = alloc_floats(n->n_params, &n->params);
  if (!s) s = alloc_floats(n->n_params + KX_GRAD_TAIL, &n->grads);
  if (!s) s = alloc_floats(n->n_state, &n->state);
  if (!s) s = alloc_floats(widest * n->max_batch, &n->dbuf[0]);
  if (!s) s = alloc_floats(widest * n->max_batch, &n->dbuf[1]);
  if (!s) s = alloc_floats(scratch * n->max_batch, &n->scratch);
  if (!s && !(n->acts = calloc((size_t)n->n_layers + 1, sizeof *n->acts))) s = kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  if (!s) s = alloc_floats(kx_shape_size(&n->input) * n->max_batch, &n->acts[0]);
  int64_t p = 0, st = 0;
  for (int i = 0; !s && i < n->n_layers; i++) {
    kx_layer *l = &n->layers[i];
    l->params = n->params ? n->params + p : NULL;
    l->grads = n->grads ? n->grads + p : NULL;
    l->state = n->state ? n->state + st : NULL;
    p += l->n_params;
    st += l->n_state;
    s = alloc_floats(kx_shape_size(&l->out) * n->max_batch, &n->acts[i + 1]);
    if (!s) s = alloc_floats(l->saved_per_sample * n->max_batch, &l->saved);
  }
  return s;
}

kiln_status kx_net_create(const cJSON *model, const kx_shape *input, int64_t max_batch, kx_rng *rng, kx_net **out) {
  *out = NULL;
  const cJSON *layers = cJSON_GetObjectItemCaseSensitive(model, "layers");
  int count = cJSON_GetArraySize(layers);
  if (!cJSON_IsArray(layers) || count < 1)
    return kiln_error(KILN_INVALID_ARGUMENT, "model: 'layers' must be a non-empty list");
  if (count > MAX_LAYERS) return kiln_error(KILN_INVALID_ARGUMENT, "model: %d layers is over kiln's limit of %d", count, MAX_LAYERS);
  if (max_batch < 1 || kx_shape_size(input) < 1) return kiln_error(KILN_INVALID_ARGUMENT, "model: empty input or batch");
  kx_net *n = calloc(1, sizeof *n);
  if (!n || !(n->layers = calloc((size_t)count, sizeof *n->layers))) {
    free(n);
    return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  }
  n->n_layers = count;
  n->input = *input;
  n->max_batch = max_batch;
  kiln_status s = build(n, layers);
  if (s) {
    kx_net_free(n);
    return s;
  }
  for (int i = 0; i < n->n_layers; i++)
    if (n->layers[i].ops->init) n->layers[i].ops->init(&n->layers[i], rng);
  *out = n;
  return NULL;
}

void kx_net_free(kx_net *n) {
  if (!n) return;
  for (int i = 0; i < n->n_layers; i++) free(n->layers[i].saved);
  for (int i = 0; n->acts && i <= n->n_layers; i++) free(n->acts[i]);
  free(n->acts);
  free(n->params);
  free(n->grads);
  free(n->state);
  free(n->dbuf[0]);
  free(n->dbuf[1]);
  free(n->scratch);
  free(n->layers);
  free(n);
}

int64_t kx_net_output_size(const kx_net *n) { return kx_shape_size(&n->layers[n->n_layers - 1].out); }

float *kx_net_forward(kx_net *n, const kx_pass *p) {
  for (int i = 0; i < n->n_layers; i++) n->layers[i].ops->forward(p, &n->layers[i], n->acts[i], n->acts[i + 1]);
  return n->acts[n->n_layers];
}

void kx_net_backward(kx_net *n, const kx_pass *p, float *dy) {
  if (n->n_params) memset(n->grads, 0, (size_t)n->n_params * sizeof(float));
  for (int i = n->n_layers - 1; i >= 0; i--) {
    float *dx = i > 0 ? n->dbuf[i % 2] : NULL;
    n->layers[i].ops->backward(p, &n->layers[i], n->acts[i], n->acts[i + 1], dy, dx);
    dy = dx;
  }
}
