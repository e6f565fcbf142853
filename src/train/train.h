/* The trainer's internals: layers with forward and backward side by side (llm.c's shape), the
 * network that owns one allocation for all parameters and one for all gradients (so an all-reduce
 * is one call), losses, optimizers and the random numbers they draw.
 *
 * Layout: a sample's activations are row-major with the batch outermost; images are NHWC
 * ([H, W, C] per sample, Keras' channels_last), so that a flatten after convolutions orders
 * features as Keras does and a convolution is one GEMM over (pixels x channels). */
#ifndef KILN_TRAIN_INTERNAL_H
#define KILN_TRAIN_INTERNAL_H

#include "kiln/core.h"

#include <stdint.h>

struct cJSON;

/* ---------------------------------------------------------------- random numbers */

/* splitmix64: tiny state (saved in checkpoints), good enough for init and dropout masks. */
typedef struct kx_rng {
  uint64_t state;
} kx_rng;

uint64_t kx_rng_next(kx_rng *r);
/* Uniform in [0, 1) with 24 random bits (exact in float). */
float kx_rng_uniform(kx_rng *r);

/* ---------------------------------------------------------------- activations */

typedef enum kx_actfn {
  KX_ACTFN_LINEAR = 0,
  KX_ACTFN_RELU,
  KX_ACTFN_SIGMOID,
  KX_ACTFN_TANH,
  KX_ACTFN_SOFTMAX,
} kx_actfn;

/* Reads a layer config's "activation" (Keras' names: "relu", "linear", ...; absent: linear unless
 * required); errors name `where` and the known activations. */
kiln_status kx_actfn_read(const struct cJSON *config, const char *where, int required, kx_actfn *out);
/* y = act(y) in place over rows of `width` (softmax works per row). */
void kx_actfn_forward(kx_actfn a, float *y, int64_t rows, int64_t width);
/* dz = dy * act'(z), written over dy, from the activation's output y (every supported
 * activation's derivative is a function of its output). */
void kx_actfn_backward(kx_actfn a, const float *y, float *dy, int64_t rows, int64_t width);
/* The same from y in 16-bit storage (bf16: bfloat16, else IEEE half). */
void kx_actfn_backward16(kx_actfn a, int bf16, const uint16_t *y, float *dy, int64_t rows, int64_t width);

/* ---------------------------------------------------------------- layers */

/* A sample's shape without the batch dimension: [features] or [H, W, C]. */
typedef struct kx_shape {
  int rank;
  int64_t d[3];
} kx_shape;

int64_t kx_shape_size(const kx_shape *s);
/* Reads obj's `key`, a list of 1 to 3 positive sizes (Keras' input_shape, target_shape); errors
 * name `where` and the key. */
kiln_status kx_shape_read(const struct cJSON *obj, const char *where, const char *key, kx_shape *out);

/* What a forward or backward pass runs with. */
typedef struct kx_pass {
  kiln_pool *pool;
  int threads;
  int64_t batch;  /* rows in this pass (the last batch of an epoch may be short) */
  int training;   /* dropout drops and batch norm uses batch statistics only when training */
  kx_rng *rng;    /* dropout masks */
  int recomputing; /* a forward pass again for --recompute: state (moving statistics) stays put */
  /* 16-bit storage, for layers with half_io: their input (forward and backward) and output
   * (backward) in place of x and y, which are then NULL */
  const uint16_t *x16, *y16;
  int bf16;        /* x16 and y16 hold bfloat16 (else IEEE half) */
  float *scratch; /* kx_net.scratch: shared by layers, one layer at a time */
} kx_pass;

typedef struct kx_layer kx_layer;

typedef struct kx_layer_ops {
  const char *name; /* Keras' snake_case class name: "dense", "conv2d", ... */
  int view;         /* output = input seen with another shape (flatten, reshape): no pass runs */
  int half_io;      /* reads 16-bit activations itself (kx_pass.x16, y16): no fp32 copies needed */
  /* Reads the layer's keys from its JSON config (an object; unknown keys are errors naming
   * `where`, e.g. "model.layers[2].dense"). */
  kiln_status (*configure)(kx_layer *l, const struct cJSON *config, const char *where);
  /* From l->in: sets l->out, the parameter and state counts, and the floats it saves per sample
   * (l->saved_per_sample) and needs as shared scratch per sample (l->scratch_per_sample). */
  kiln_status (*build)(kx_layer *l);
  /* Initial parameters (l->params) and state (l->state), Keras' defaults. */
  void (*init)(kx_layer *l, kx_rng *rng);
  /* y[batch, out] from x[batch, in]. */
  void (*forward)(const kx_pass *p, kx_layer *l, const float *x, float *y);
  /* Writes the parameter gradients into l->grads (every one of them: the buffer is not cleared
   * between steps) and dx[batch, in] unless dx is NULL (the first layer: no input gradient).
   * dy may be overwritten. */
  void (*backward)(const kx_pass *p, kx_layer *l, const float *x, const float *y, float *dy, float *dx);
} kx_layer_ops;

struct kx_layer {
  const kx_layer_ops *ops;
  int recompute_mark;                     /* the run file says "recompute": true */
  int recompute;                          /* its output is not kept but recomputed in backward */
  uint64_t rng_state;                     /* the generator before its last forward: a recompute draws the same */
  char name[64]; /* "dense_1": Keras' naming, used for ONNX initializers and checkpoints */
  kx_shape in, out;
  int64_t n_params, n_state;              /* floats */
  float *params, *grads, *state;          /* views into the network's buffers */
  int64_t saved_per_sample;               /* floats this layer keeps from forward to backward */
  int64_t scratch_per_sample;             /* floats of kx_net.scratch it uses per sample */
  float *saved;                           /* [max_batch * saved_per_sample], owned by the net */
  kx_actfn act;                           /* dense, conv2d, activation layers */
  int use_bias;
  int64_t units;                          /* dense */
  int64_t filters, kernel[2], strides[2]; /* conv2d; kernel/strides also pooling windows */
  int same;                               /* padding "same" (else "valid") */
  int64_t pad[2];                         /* top and left padding of "same" */
  float rate;                             /* dropout */
  float momentum, epsilon;                /* batch_normalization */
  int center, scale;                      /* batch_normalization: beta and gamma are trained */
  kx_shape target;                        /* reshape */
};

/* Reads `key` of a conv2d or pooling config, an int or a pair [rows, cols] (Keras' int-or-tuple),
 * into out[0..2) when present; each value must lie in [min, max]. */
kiln_status kx_spec_pair(const struct cJSON *config, const char *where, const char *key, int required, int64_t min,
                         int64_t max, int64_t out[2]);
/* Reads "padding": "valid" (the default) or "same", into l->same. */
kiln_status kx_spec_padding(kx_layer *l, const struct cJSON *config, const char *where);
/* Sets l->out's H and W and l->pad for a window of l->kernel moving by l->strides over the image
 * l->in ([H, W, C], or [H, W] read as [H, W, 1]) with padding l->same (TF's "same": the total
 * padding max((ceil(H / s) - 1) * s + k - H, 0), its smaller half on top and left). `what` names
 * the window in errors ("kernel", "pool"); *channels gets C. */
kiln_status kx_window_build(kx_layer *l, const char *what, int64_t *channels);

/* The layer kinds, by Keras name ("dense", "relu" ...); NULL when unknown. */
const kx_layer_ops *kx_layer_find(const char *name);

/* ---------------------------------------------------------------- the network */

/* Floats after the gradients in kx_net.grads, all-reduced with them: a step's rows, loss sum and
 * correct predictions (kept below 2^24 per step, so exact in float). */
#define KX_GRAD_TAIL 4

/* Storage of weights and activations: fp32, or 16-bit with fp32 master weights, kernels and
 * gradients (mixed precision). */
typedef enum kx_precision { KX_FP32 = 0, KX_BF16, KX_FP16 } kx_precision;

/* Parses "fp32", "bf16", "fp16"; -1 when unknown. */
int kx_precision_parse(const char *name);
/* n floats to 16-bit storage (bf16 or fp16) and back. */
void kx_precision_store(kx_precision p, uint16_t *dst, const float *src, int64_t n);
void kx_precision_load(kx_precision p, float *dst, const uint16_t *src, int64_t n);
/* Rounds n floats in place to the precision's nearest values (a no-op for fp32). */
void kx_precision_round(kx_precision p, float *x, int64_t n);

typedef struct kx_net {
  kx_layer *layers;
  int n_layers;
  kx_shape in_shape;
  kx_precision precision;
  int64_t n_params, n_state;
  float *params;  /* every layer's parameters, one allocation: the fp32 master weights */
  float *weights; /* what the layers compute with: params itself in fp32, else params rounded to 16 bits */
  float *grads;   /* their gradients, same layout, then KX_GRAD_TAIL floats: one all-reduce per step */
  float *state;   /* non-trainable (batch norm's moving statistics) */
  int64_t max_batch;
  float *input;   /* [max_batch, input size]: the caller writes a batch here before forward */
  /* acts[k]: activation k (0 the input, k = i + 1 layer i's output), float in fp32 and uint16_t
   * otherwise; NULL for a recomputed layer's output. A view layer's output is its input's. */
  void **acts;
  float *work[2];  /* fp32 copies of one layer's input and output (16-bit storage, recomputation) */
  float *dbuf[2];  /* ping-pong gradient buffers of the widest activation */
  float *scratch;
  int64_t widest;  /* floats per sample of the widest activation */
  float *output;   /* the last forward's output, fp32 */
  size_t activation_bytes; /* kept for the backward pass: activations, masks, statistics, work copies */
} kx_net;

/* Builds the layers of a run file's "model" ({"layers": [{"dense": {...}}, "flatten", ...]}) on
 * samples of shape `input`, for batches of up to max_batch rows, and initializes the parameters
 * from `rng` (Keras' initializers). Errors name the layer ("model.layers[2].dense: ..."). */
kiln_status kx_net_create(const struct cJSON *model, const kx_shape *input, int64_t max_batch, kx_rng *rng,
                          kx_net **out);
/* Stores activations and weights in 16 bits, and/or (recompute) recomputes layers' outputs in
 * backward instead of keeping them: the layers the run file marks "recompute": true, or every
 * layer when it marks none. Reallocates the activation buffers: call before the first forward. */
kiln_status kx_net_configure(kx_net *n, kx_precision precision, int recompute);
/* After the optimizer changed params: the 16-bit weights follow (a no-op in fp32). */
void kx_net_sync_weights(kx_net *n);
void kx_net_free(kx_net *n);
/* Forward over p->batch rows of n->input; returns the output ([batch, output size], fp32). */
float *kx_net_forward(kx_net *n, const kx_pass *p);
/* Backward from dy (the loss gradient over the output, [batch, out]; overwritten): writes n->grads. */
void kx_net_backward(kx_net *n, const kx_pass *p, float *dy);
int64_t kx_net_output_size(const kx_net *n);

/* ---------------------------------------------------------------- losses and metrics */

typedef enum kx_loss_kind {
  KX_LOSS_SPARSE_CCE = 0, /* sparse_categorical_crossentropy: integer labels */
  KX_LOSS_CCE,            /* categorical_crossentropy: one-hot (or soft) targets of the output's width */
  KX_LOSS_MSE,            /* mean_squared_error */
} kx_loss_kind;

typedef struct kx_loss {
  kx_loss_kind kind;
  int from_logits; /* the crossentropies: the output is logits (softmax inside the loss) */
} kx_loss;

/* Parses "mse" or {"sparse_categorical_crossentropy": {"from_logits": true}} / {"name": ...}. */
kiln_status kx_loss_parse(const struct cJSON *j, kx_loss *out);
/* Target floats per sample: 1 for sparse labels, else the output width. */
int64_t kx_loss_target_width(const kx_loss *l, int64_t out_width);
/* Mean loss over `rows` rows of y[rows, width] against t; writes dL/dy (already divided by
 * `denominator`, the number of rows the mean runs over — the global batch under MPI) into dy
 * when dy is not NULL; adds the rows whose arg-max equals the label to *correct when not NULL.
 * Returns the sum of per-row losses (the caller divides). Labels outside [0, width) are errors. */
kiln_status kx_loss_compute(const kx_loss *l, const float *y, const float *t, int64_t rows, int64_t width,
                            double denominator, float *dy, double *loss_sum, int64_t *correct);

/* ---------------------------------------------------------------- optimizers */

typedef enum kx_optim_kind { KX_OPTIM_ADAM = 0, KX_OPTIM_ADAMW, KX_OPTIM_SGD } kx_optim_kind;

typedef enum kx_schedule_kind {
  KX_SCHEDULE_CONSTANT = 0,
  KX_SCHEDULE_EXPONENTIAL,   /* lr * decay_rate ^ (step / decay_steps), floored when staircase */
  KX_SCHEDULE_COSINE,        /* Keras' CosineDecay (alpha floor) over decay_steps */
  KX_SCHEDULE_PIECEWISE,     /* values[i] until boundaries[i] */
} kx_schedule_kind;

#define KX_SCHEDULE_MAX_PIECES 16

typedef struct kx_schedule {
  kx_schedule_kind kind;
  double lr;
  double decay_steps, decay_rate, alpha;
  int staircase;
  int n_pieces;
  double boundaries[KX_SCHEDULE_MAX_PIECES], values[KX_SCHEDULE_MAX_PIECES + 1];
} kx_schedule;

typedef struct kx_optim {
  kx_optim_kind kind;
  kx_schedule schedule;
  double beta_1, beta_2, epsilon, weight_decay; /* adam / adamw */
  double momentum;                              /* sgd */
  int nesterov;
  int64_t n;        /* parameters */
  float *m, *v;     /* adam's moments, sgd's velocity (m); one allocation */
  int64_t step;     /* updates applied */
} kx_optim;

/* Parses "adam" or {"adam": {"learning_rate": ..., ...}} / {"name": "adam", ...}; Keras' defaults. */
kiln_status kx_optim_parse(const struct cJSON *j, kx_optim *out);
/* Allocates the state for n parameters (zeroed). */
kiln_status kx_optim_init(kx_optim *o, int64_t n);
void kx_optim_free(kx_optim *o);
/* Sets the schedule's initial learning rate (scaling a piecewise schedule's values). */
void kx_schedule_set_lr(kx_schedule *s, double lr);
/* The learning rate of update number `step` (0-based). */
double kx_schedule_lr(const kx_schedule *s, int64_t step);
/* One update of params from grads * scale (the gradients of a summed loss, scaled to its mean). */
void kx_optim_step(kx_optim *o, kiln_pool *pool, int threads, float *params, const float *grads, float scale);

/* ---------------------------------------------------------------- MPI */

/* The processes of a data-parallel run (a world of one without mpirun). */
typedef struct kx_world {
  int rank, size;
  int owns_mpi; /* this process called MPI_Init */
} kx_world;

/* Joins the MPI job when mpirun started this process; else rank 0 of 1. */
kiln_status kx_world_init(kx_world *w);
void kx_world_finalize(kx_world *w);
/* In-place sums across ranks (no-ops in a world of one). */
void kx_world_sum_floats(const kx_world *w, float *data, int64_t n);
void kx_world_sum_doubles(const kx_world *w, double *data, int n);
/* The MPI library's name and version ("Open MPI v4.1.4"); callable without MPI_Init. */
void kx_world_library(char *buf, size_t size);
/* Rank 0's bytes to every rank. */
void kx_world_broadcast(const kx_world *w, void *data, size_t bytes);
/* Fails on every rank unless all ranks pass the same value (up to 255 bytes) as rank 0; `what`
 * names it in the error ("kiln version", "run file"). Collective: every rank must call it. */
kiln_status kx_world_check_same(const kx_world *w, const char *what, const char *value);

/* ---------------------------------------------------------------- run files */

/* A run file, parsed and checked (include/kiln/train.h shows the format). */
typedef struct kx_run {
  struct cJSON *root;          /* owns the JSON members below */
  const struct cJSON *model;   /* {"input_shape"?, "layers": [...]} */
  struct cJSON *data;          /* the training pipeline spec (shuffles given the run's seed) */
  struct cJSON *validation;    /* the validation pipeline spec, NULL when none */
  double validation_split;     /* the last fraction of the training source, held out */
  kx_optim optim;
  kx_loss loss;
  int accuracy;                /* "metrics": ["accuracy"] */
  int64_t epochs, batch_size, seed;
  const char *features, *label; /* the model's input feature and the target feature */
  int64_t checkpoint_every, log_every;
  int keep_checkpoints;
  char base_dir[4096];         /* the run file's folder: relative data paths resolve against it */
  char hash[17];               /* FNV-1a 64 of the run file's canonical JSON, in hex: checkpoints and MPI
                                  ranks refuse a different run */
  char sha256[65];             /* SHA-256 of the run file's bytes (the built-in run's text): its lineage */
} kx_run;

/* Gives every shuffle stage without a seed the run's seed, so that a run replays exactly (call
 * after overriding r->seed). */
kiln_status kx_run_seed_shuffles(kx_run *r);
/* Reads and checks a run file (NULL: the built-in seed run). */
kiln_status kx_run_load(const char *path, kx_run *out);
/* The same from JSON text; base_dir resolves relative data paths (NULL: the working directory). */
kiln_status kx_run_parse(const char *json, size_t len, const char *base_dir, kx_run *out);
void kx_run_free(kx_run *r);

#endif
