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

kiln_status kx_shape_read(const cJSON *obj, const char *where, const char *key, kx_shape *out) {
  const cJSON *list = cJSON_GetObjectItemCaseSensitive(obj, key);
  int n = cJSON_GetArraySize(list);
  int ok = cJSON_IsArray(list) && n >= 1 && n <= 3;
  for (int i = 0; ok && i < n; i++) {
    const cJSON *d = cJSON_GetArrayItem(list, i);
    ok = cJSON_IsNumber(d) && d->valuedouble >= 1 && d->valuedouble <= (1 << 30) && d->valuedouble == (int64_t)d->valuedouble;
    if (ok) out->d[i] = (int64_t)d->valuedouble;
  }
  if (!ok) return kiln_error(KILN_INVALID_ARGUMENT, "%s: '%s' must be a list of 1 to 3 positive sizes", where, key);
  out->rank = n;
  return NULL;
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
  /* every layer's config may also say "recompute": true (--recompute then recomputes it) */
  cJSON *config = cJSON_IsObject(item) && cJSON_IsObject(item->child) ? cJSON_Duplicate(item->child, 1) : cJSON_CreateObject();
  if (!config) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  cJSON *mark = cJSON_DetachItemFromObjectCaseSensitive(config, "recompute");
  kiln_status s = mark && !cJSON_IsBool(mark) ? kiln_error(KILN_INVALID_ARGUMENT, "%s: 'recompute' must be true or false", where) : NULL;
  l->recompute_mark = cJSON_IsTrue(mark);
  cJSON_Delete(mark);
  if (!s) s = l->ops->configure(l, config, where);
  cJSON_Delete(config);
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
  kx_shape shape = n->in_shape;
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
  n->widest = widest;
  kiln_status s = alloc_floats(n->n_params, &n->params);
  if (!s) s = alloc_floats(n->n_params + KX_GRAD_TAIL, &n->grads);
  if (!s) s = alloc_floats(n->n_state, &n->state);
  if (!s) s = alloc_floats(widest * n->max_batch, &n->dbuf[0]);
  if (!s) s = alloc_floats(widest * n->max_batch, &n->dbuf[1]);
  if (!s) s = alloc_floats(scratch * n->max_batch, &n->scratch);
  n->weights = n->params;
  int64_t p = 0, st = 0;
  for (int i = 0; !s && i < n->n_layers; i++) {
    kx_layer *l = &n->layers[i];
    l->grads = n->grads ? n->grads + p : NULL;
    l->state = n->state ? n->state + st : NULL;
    p += l->n_params;
    st += l->n_state;
    s = alloc_floats(l->saved_per_sample * n->max_batch, &l->saved);
  }
  return s;
}

/* ---------------------------------------------------------------- activation storage */

static int64_t act_size(const kx_net *n, int k) { return k == 0 ? kx_shape_size(&n->in_shape) : kx_shape_size(&n->layers[k - 1].out); }

/* Whether activation k has its own buffer (not a view of the one before it). */
static int act_owner(const kx_net *n, int k) { return k == 0 || !n->layers[k - 1].ops->view; }

/* Whether activation k is kept for the backward pass (a view's is its input's). */
static int stored(const kx_net *n, int k) {
  while (k > 0 && n->layers[k - 1].ops->view) k--;
  return k == 0 || !n->layers[k - 1].recompute;
}

/* Whether layer i reads and writes its 16-bit activations itself: both kept, neither recomputed. */
static int native_half(const kx_net *n, int i) {
  return n->precision != KX_FP32 && n->layers[i].ops->half_io && stored(n, i) && stored(n, i + 1);
}

static void free_activations(kx_net *n) {
  for (int k = 0; n->acts && k <= n->n_layers; k++)
    if (act_owner(n, k)) free(n->acts[k]);
  free(n->acts);
  n->acts = NULL;
  free(n->work[0]);
  free(n->work[1]);
  n->work[0] = n->work[1] = NULL;
  if (n->weights != n->params) free(n->weights);
  n->weights = n->params;
}

/* Allocates the activations as n->precision and the layers' recompute marks say, and counts the
 * bytes they hold for the backward pass. */
static kiln_status alloc_activations(kx_net *n) {
  size_t elem = n->precision == KX_FP32 ? sizeof(float) : sizeof(uint16_t);
  if (!(n->acts = calloc((size_t)n->n_layers + 1, sizeof *n->acts))) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  n->activation_bytes = 0;
  for (int i = 0; i < n->n_layers; i++) n->activation_bytes += (size_t)(n->layers[i].saved_per_sample * n->max_batch) * sizeof(float);
  kiln_status s = NULL;
  for (int k = 0; !s && k <= n->n_layers; k++) {
    if (!act_owner(n, k)) {
      n->acts[k] = n->acts[k - 1];
      continue;
    }
    if (k > 0 && n->layers[k - 1].recompute) continue; /* recomputed in backward */
    size_t bytes = (size_t)(act_size(n, k) * n->max_batch) * elem;
    if (!(n->acts[k] = aligned_alloc(64, (bytes + 63) & ~(size_t)63))) s = kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
    n->activation_bytes += bytes;
  }
  /* fp32 copies of a layer's input and output: in 16-bit storage, of the layers that cannot read
   * it themselves; and of recomputed activations */
  int64_t work = 0;
  for (int i = 0; i < n->n_layers; i++) {
    if (n->layers[i].ops->view) continue;
    int64_t size = 0;
    if (n->precision != KX_FP32 && !native_half(n, i)) size = act_size(n, i) > act_size(n, i + 1) ? act_size(n, i) : act_size(n, i + 1);
    if (n->layers[i].recompute && act_size(n, i + 1) > size) size = act_size(n, i + 1);
    work = size > work ? size : work;
  }
  if (!s && work) {
    s = alloc_floats(work * n->max_batch, &n->work[0]);
    if (!s) s = alloc_floats(work * n->max_batch, &n->work[1]);
    n->activation_bytes += 2 * (size_t)(work * n->max_batch) * sizeof(float);
  }
  /* the caller writes a batch straight into fp32 activation 0, or into a gradient buffer (unused
   * until backward) from which forward stores it in 16 bits */
  n->input = n->precision == KX_FP32 ? n->acts[0] : n->dbuf[0];
  /* the layers compute with the master weights in fp32, else with their 16-bit rounding */
  if (!s && n->precision != KX_FP32 && n->n_params) s = alloc_floats(n->n_params, &n->weights);
  int64_t p = 0;
  for (int i = 0; !s && i < n->n_layers; p += n->layers[i].n_params, i++) n->layers[i].params = n->weights ? n->weights + p : NULL;
  if (!s) kx_net_sync_weights(n);
  return s;
}

kiln_status kx_net_configure(kx_net *n, kx_precision precision, int recompute) {
  free_activations(n);
  int marked = 0;
  for (int i = 0; i < n->n_layers; i++) marked |= n->layers[i].recompute_mark;
  n->precision = precision;
  for (int i = 0; i < n->n_layers; i++) n->layers[i].recompute = recompute && (n->layers[i].recompute_mark || !marked);
  return alloc_activations(n);
}

void kx_net_sync_weights(kx_net *n) {
  if (n->weights == n->params) return;
  memcpy(n->weights, n->params, (size_t)n->n_params * sizeof(float));
  kx_precision_round(n->precision, n->weights, n->n_params);
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
  n->in_shape = *input;
  n->max_batch = max_batch;
  kiln_status s = build(n, layers);
  if (!s) s = alloc_activations(n);
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
  free_activations(n);
  for (int i = 0; i < n->n_layers; i++) free(n->layers[i].saved);
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

/* ---------------------------------------------------------------- forward and backward */

/* The work buffer that is not `busy` (which may be neither). */
static float *other_work(kx_net *n, const float *busy) { return busy == n->work[0] ? n->work[1] : n->work[0]; }

/* Runs layer i forward from x into a buffer of its own: its stored fp32 activation, else a work
 * buffer other than x's. With 16-bit storage the output is stored and rounded as stored; a layer
 * that reads 16 bits itself takes its input from storage and writes into a gradient buffer, free
 * during forward. */
static float *forward_layer(kx_net *n, const kx_pass *p, int i, const float *x, int again) {
  kx_layer *l = &n->layers[i];
  int store = n->acts[i + 1] && !again, native = native_half(n, i) && !again;
  float *y = n->precision == KX_FP32 && n->acts[i + 1] ? n->acts[i + 1]
             : native                                  ? n->dbuf[x == n->dbuf[0]]
                                                       : other_work(n, x);
  kx_pass q = *p;
  if (native) {
    q.x16 = n->acts[i];
    q.bf16 = n->precision == KX_BF16;
    x = NULL;
  }
  kx_rng replay = {l->rng_state};
  if (again) { /* the same dropout mask, no second update of moving statistics */
    q.rng = &replay;
    q.recomputing = 1;
  } else if (p->rng)
    l->rng_state = p->rng->state;
  l->ops->forward(&q, l, x, y);
  int64_t count = p->batch * kx_shape_size(&l->out);
  if (n->precision != KX_FP32 && store) kx_precision_store(n->precision, n->acts[i + 1], y, count);
  if (n->precision != KX_FP32) kx_precision_round(n->precision, y, count);
  return y;
}

float *kx_net_forward(kx_net *n, const kx_pass *p) {
  float *x = n->input;
  if (n->precision != KX_FP32) {
    int64_t count = p->batch * kx_shape_size(&n->in_shape);
    kx_precision_store(n->precision, n->acts[0], x, count);
    kx_precision_round(n->precision, x, count);
  }
  for (int i = 0; i < n->n_layers; i++)
    if (!n->layers[i].ops->view) x = forward_layer(n, p, i, x, 0);
  return n->output = x;
}

/* Activation k as fp32 for the backward pass: in place when stored as fp32, widened into a work
 * buffer when stored in 16 bits, recomputed from the nearest stored one before it otherwise. */
static const float *activation(kx_net *n, const kx_pass *p, int k, const float *busy) {
  int s = k;
  while (!n->acts[s]) s--;
  const float *x = n->acts[s];
  if (n->precision != KX_FP32) {
    float *w = other_work(n, busy);
    kx_precision_load(n->precision, w, n->acts[s], p->batch * act_size(n, s));
    x = w;
  }
  for (int i = s; i < k; i++)
    if (!n->layers[i].ops->view) x = forward_layer(n, p, i, x, 1);
  return x;
}

void kx_net_backward(kx_net *n, const kx_pass *p, float *dy) {
  int first = 0;
  while (first < n->n_layers - 1 && n->layers[first].ops->view) first++;
  for (int i = n->n_layers - 1, flip = 0; i >= first; i--) {
    kx_layer *l = &n->layers[i];
    if (l->ops->view) continue; /* the gradient passes through unchanged */
    float *dx = i > first ? n->dbuf[flip ^= 1] : NULL;
    if (native_half(n, i)) {
      kx_pass q = *p;
      q.x16 = n->acts[i];
      q.y16 = n->acts[i + 1];
      q.bf16 = n->precision == KX_BF16;
      l->ops->backward(&q, l, NULL, NULL, dy, dx);
      dy = dx;
      continue;
    }
    const float *x = activation(n, p, i, NULL), *y;
    if (n->acts[i + 1]) y = activation(n, p, i + 1, x);
    else y = forward_layer(n, p, i, x, 1);
    l->ops->backward(p, l, x, y, dy, dx);
    dy = dx;
  }
}
