/* Optimizers with Keras' update rules and defaults (adam, adamw, sgd with momentum / nesterov)
 * and learning-rate schedules (Keras' ExponentialDecay, CosineDecay, PiecewiseConstantDecay). */
#include "train/train.h"

#include "data/data.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

static kiln_status parse_schedule(const cJSON *j, kx_schedule *s) {
  if (cJSON_IsNumber(j)) {
    s->kind = KX_SCHEDULE_CONSTANT;
    s->lr = j->valuedouble;
  } else if (cJSON_IsObject(j) && j->child && !j->child->next && cJSON_IsObject(j->child)) {
    const char *name = j->child->string, *where = "optimizer.learning_rate";
    const cJSON *c = j->child;
    kiln_status st;
    if (strcmp(name, "exponential_decay") == 0) {
      s->kind = KX_SCHEDULE_EXPONENTIAL;
      st = kx_spec_keys(c, where, (const char *const[]){"initial_learning_rate", "decay_steps", "decay_rate", "staircase", NULL});
      if (!st) st = kx_spec_double(c, where, "initial_learning_rate", 1, &s->lr);
      if (!st) st = kx_spec_double(c, where, "decay_steps", 1, &s->decay_steps);
      if (!st) st = kx_spec_double(c, where, "decay_rate", 1, &s->decay_rate);
      if (!st) st = kx_spec_bool(c, where, "staircase", &s->staircase);
    } else if (strcmp(name, "cosine_decay") == 0) {
      s->kind = KX_SCHEDULE_COSINE;
      st = kx_spec_keys(c, where, (const char *const[]){"initial_learning_rate", "decay_steps", "alpha", NULL});
      if (!st) st = kx_spec_double(c, where, "initial_learning_rate", 1, &s->lr);
      if (!st) st = kx_spec_double(c, where, "decay_steps", 1, &s->decay_steps);
      if (!st) st = kx_spec_double(c, where, "alpha", 0, &s->alpha);
    } else if (strcmp(name, "piecewise_constant_decay") == 0) {
      s->kind = KX_SCHEDULE_PIECEWISE;
      const cJSON *b = cJSON_GetObjectItemCaseSensitive(c, "boundaries"), *v = cJSON_GetObjectItemCaseSensitive(c, "values");
      st = kx_spec_keys(c, where, (const char *const[]){"boundaries", "values", NULL});
      int nb = cJSON_GetArraySize(b);
      if (!st && (!cJSON_IsArray(b) || !cJSON_IsArray(v) || nb < 1 || nb > KX_SCHEDULE_MAX_PIECES || cJSON_GetArraySize(v) != nb + 1))
        st = kiln_error(KILN_INVALID_ARGUMENT, "%s: piecewise_constant_decay needs 1 to %d 'boundaries' and one more 'values'", where,
                        KX_SCHEDULE_MAX_PIECES);
      for (int i = 0; !st && i <= nb; i++) {
        const cJSON *bi = cJSON_GetArrayItem(b, i), *vi = cJSON_GetArrayItem(v, i);
        if ((i < nb && !cJSON_IsNumber(bi)) || !cJSON_IsNumber(vi) || (i > 0 && i < nb && bi->valuedouble <= s->boundaries[i - 1]))
          st = kiln_error(KILN_INVALID_ARGUMENT, "%s: 'boundaries' must be increasing numbers and 'values' numbers", where);
        else {
          if (i < nb) s->boundaries[i] = bi->valuedouble;
          s->values[i] = vi->valuedouble;
        }
      }
      s->n_pieces = nb;
      s->lr = s->values[0];
    } else
      return kiln_error(KILN_INVALID_ARGUMENT, "%s: unknown schedule '%s' (known: exponential_decay, cosine_decay, piecewise_constant_decay)",
                        where, name);
    if (st) return st;
    if ((s->kind == KX_SCHEDULE_EXPONENTIAL || s->kind == KX_SCHEDULE_COSINE) && !(s->decay_steps > 0))
      return kiln_error(KILN_INVALID_ARGUMENT, "%s: 'decay_steps' must be positive", where);
  } else
    return kiln_error(KILN_INVALID_ARGUMENT, "optimizer.learning_rate: expected a number or {\"<schedule>\": {...}}");
  if (!(s->lr > 0) || !isfinite(s->lr))
    return kiln_error(KILN_INVALID_ARGUMENT, "optimizer.learning_rate: must be a positive number, got %g", s->lr);
  return NULL;
}

void kx_schedule_set_lr(kx_schedule *s, double lr) {
  for (int i = 0; s->kind == KX_SCHEDULE_PIECEWISE && i <= s->n_pieces; i++) s->values[i] *= lr / s->lr;
  s->lr = lr;
}

double kx_schedule_lr(const kx_schedule *s, int64_t step) {
  double t = (double)step;
  switch (s->kind) {
  case KX_SCHEDULE_CONSTANT: return s->lr;
  case KX_SCHEDULE_EXPONENTIAL: {
    double e = t / s->decay_steps;
    return s->lr * pow(s->decay_rate, s->staircase ? floor(e) : e);
  }
  case KX_SCHEDULE_COSINE: {
    double done = t < s->decay_steps ? t / s->decay_steps : 1;
    return s->lr * ((1 - s->alpha) * 0.5 * (1 + cos(M_PI * done)) + s->alpha);
  }
  case KX_SCHEDULE_PIECEWISE: {
    int i = 0;
    while (i < s->n_pieces && t > s->boundaries[i]) i++;
    return s->values[i];
  }
  }
  return s->lr;
}

kiln_status kx_optim_parse(const cJSON *j, kx_optim *o) {
  const char *name = cJSON_IsString(j) ? j->valuestring : cJSON_IsObject(j) && j->child && !j->child->next ? j->child->string : NULL;
  const cJSON *c = cJSON_IsObject(j) ? j->child : NULL;
  memset(o, 0, sizeof *o);
  if (!name) return kiln_error(KILN_INVALID_ARGUMENT, "optimizer: expected a name or {\"adam\": {...}}");
  kiln_status s = NULL;
  o->beta_1 = 0.9;
  o->beta_2 = 0.999;
  o->epsilon = 1e-7;
  o->schedule.kind = KX_SCHEDULE_CONSTANT;
  o->schedule.lr = 0.001;
  if (strcmp(name, "adam") == 0 || strcmp(name, "adamw") == 0) {
    o->kind = name[4] ? KX_OPTIM_ADAMW : KX_OPTIM_ADAM;
    o->weight_decay = o->kind == KX_OPTIM_ADAMW ? 0.004 : 0;
    if (c) {
      s = kx_spec_keys(c, "optimizer", o->kind == KX_OPTIM_ADAMW
                                           ? (const char *const[]){"learning_rate", "beta_1", "beta_2", "epsilon", "weight_decay", NULL}
                                           : (const char *const[]){"learning_rate", "beta_1", "beta_2", "epsilon", NULL});
      if (!s) s = kx_spec_double(c, "optimizer", "beta_1", 0, &o->beta_1);
      if (!s) s = kx_spec_double(c, "optimizer", "beta_2", 0, &o->beta_2);
      if (!s) s = kx_spec_double(c, "optimizer", "epsilon", 0, &o->epsilon);
      if (!s) s = kx_spec_double(c, "optimizer", "weight_decay", 0, &o->weight_decay);
    }
    if (!s && !(o->beta_1 >= 0 && o->beta_1 < 1 && o->beta_2 >= 0 && o->beta_2 < 1 && o->epsilon > 0 && o->weight_decay >= 0))
      s = kiln_error(KILN_INVALID_ARGUMENT, "optimizer: beta_1 and beta_2 must be in [0, 1), epsilon positive, weight_decay not negative");
  } else if (strcmp(name, "sgd") == 0) {
    o->kind = KX_OPTIM_SGD;
    o->schedule.lr = 0.01;
    if (c) {
      s = kx_spec_keys(c, "optimizer", (const char *const[]){"learning_rate", "momentum", "nesterov", NULL});
      if (!s) s = kx_spec_double(c, "optimizer", "momentum", 0, &o->momentum);
      if (!s) s = kx_spec_bool(c, "optimizer", "nesterov", &o->nesterov);
    }
    if (!s && !(o->momentum >= 0 && o->momentum < 1))
      s = kiln_error(KILN_INVALID_ARGUMENT, "optimizer: momentum must be in [0, 1), got %g", o->momentum);
  } else
    return kiln_error(KILN_INVALID_ARGUMENT, "optimizer: unknown optimizer '%s' (known: adam, adamw, sgd)", name);
  const cJSON *lr = c ? cJSON_GetObjectItemCaseSensitive(c, "learning_rate") : NULL;
  if (!s && lr) s = parse_schedule(lr, &o->schedule);
  return s;
}

kiln_status kx_optim_init(kx_optim *o, int64_t n) {
  o->n = n;
  o->step = 0;
  size_t bytes = (size_t)(n > 0 ? n : 1) * sizeof(float);
  o->m = calloc(1, bytes);
  o->v = o->kind == KX_OPTIM_SGD ? NULL : calloc(1, bytes);
  if (!o->m || (o->kind != KX_OPTIM_SGD && !o->v)) {
    kx_optim_free(o);
    return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory for the optimizer's state");
  }
  return NULL;
}

void kx_optim_free(kx_optim *o) {
  free(o->m);
  free(o->v);
  o->m = o->v = NULL;
}

typedef struct update {
  kx_optim *o;
  float *p;
  const float *g;
  float lr, step_size, decay, b1, b2, eps, momentum;
  float scale; /* multiplies every gradient first (1 / rows of the step) */
} update;

static void adam_range(void *arg, int64_t begin, int64_t end) {
  const update *u = arg;
  float *restrict p = u->p + begin, *restrict m = u->o->m + begin, *restrict v = u->o->v + begin;
  const float *restrict g = u->g + begin;
  const float b1 = 1 - u->b1, b2 = 1 - u->b2, step = u->step_size, eps = u->eps, decay = u->decay, scale = u->scale;
  int64_t n = end - begin;
  if (decay != 0) /* adamw: decoupled weight decay, before the gradient step (Keras' order) */
    for (int64_t i = 0; i < n; i++) p[i] -= p[i] * decay;
  for (int64_t i = 0; i < n; i++) {
    float gi = g[i] * scale;
    m[i] += (gi - m[i]) * b1;
    v[i] += (gi * gi - v[i]) * b2;
    p[i] -= step * m[i] / (sqrtf(v[i]) + eps);
  }
}

static void sgd_range(void *arg, int64_t begin, int64_t end) {
  const update *u = arg;
  float *p = u->p, *m = u->o->m;
  const float *g = u->g;
  for (int64_t i = begin; i < end; i++) {
    float gi = g[i] * u->scale;
    if (u->momentum == 0) {
      p[i] -= u->lr * gi;
      continue;
    }
    m[i] = m[i] * u->momentum - gi * u->lr;
    p[i] += u->o->nesterov ? m[i] * u->momentum - gi * u->lr : m[i];
  }
}

void kx_optim_step(kx_optim *o, kiln_pool *pool, int threads, float *params, const float *grads, float scale) {
  double lr = kx_schedule_lr(&o->schedule, o->step), t = (double)(o->step + 1);
  update u = {.o = o, .p = params, .g = grads, .lr = (float)lr, .momentum = (float)o->momentum, .scale = scale};
  if (o->kind == KX_OPTIM_SGD) kiln_parallel_for(pool, threads, o->n, 4, sgd_range, &u);
  else {
    /* Keras: lr * sqrt(1 - beta_2^t) / (1 - beta_1^t), epsilon outside the square root */
    u.step_size = (float)(lr * sqrt(1 - pow(o->beta_2, t)) / (1 - pow(o->beta_1, t)));
    u.decay = (float)(lr * o->weight_decay);
    u.b1 = (float)o->beta_1;
    u.b2 = (float)o->beta_2;
    u.eps = (float)o->epsilon;
    kiln_parallel_for(pool, threads, o->n, 10, adam_range, &u);
  }
  o->step++;
}
