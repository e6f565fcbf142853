/* kiln train: Keras-style models trained on kiln data pipelines, on one core or data-parallel
 * across MPI processes, with atomic checkpoints, exact resume and TensorBoard logs.
 *
 * A run file (JSON) says what to train, in Keras' vocabulary:
 *   {"model": {"input_shape": [28, 28], "layers": [{"flatten": {}}, {"dense": {"units": 128, "activation": "relu"}},
 *                                                  {"dense": {"units": 10}}]},
 *    "optimizer": {"adam": {"learning_rate": 0.001}},
 *    "loss": {"sparse_categorical_crossentropy": {"from_logits": true}}, "metrics": ["accuracy"],
 *    "epochs": 10, "batch_size": 32, "seed": 1,
 *    "data": {<a pipeline spec, kiln/data.h: source and stages, without batch>},
 *    "validation_data": {<a pipeline spec>} | "validation_split": 0.1,
 *    "features": "image", "label": "label"}
 * README "Training" documents every key. */
#ifndef KILN_TRAIN_H
#define KILN_TRAIN_H

#include "kiln/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Where a run stands, passed to the progress callback after every step and at each epoch's end. */
typedef struct kiln_train_progress {
  int64_t epoch, epochs;       /* 0-based epoch, and how many the run has */
  int64_t step, steps;         /* step within the epoch (1-based, after it ran); steps per epoch, -1 while unknown */
  int64_t global_step;         /* optimizer updates since the run began */
  double loss, accuracy;       /* running means over the epoch so far (accuracy NaN without the metric) */
  double step_loss;            /* the mean loss of the step that just ran, over every rank's rows */
  int64_t step_samples;        /* that step's rows over every rank */
  double samples_per_s;        /* over the epoch so far, all ranks */
  double elapsed_s;            /* since the epoch began */
  double learning_rate;
  int end_of_epoch;            /* set once per epoch, after validation */
  double val_loss, val_accuracy; /* at the end of an epoch: NaN when the run has no validation data */
  /* The mean utilization (0..1) of the GPUs NVML sees, read at the steps that are logged (every
   * log_every steps and each epoch's end); NaN at other steps and without NVML or a GPU. */
  double gpu_utilization;
} kiln_train_progress;

typedef void (*kiln_train_progress_fn)(void *arg, const kiln_train_progress *p);

typedef struct kiln_train_options {
  const char *run_file;       /* NULL: the built-in seed run (Fashion-MNIST, Dense(128, relu) -> Dense(10), Adam) */
  int64_t epochs;             /* > 0 overrides the run file (likewise below) */
  int64_t batch_size;         /* the global batch: N ranks take batch/N each */
  int threads;                /* per process; <= 0: the CPU count (or $KILN_NUM_THREADS) */
  int64_t seed;
  int seed_set;               /* seed overrides the run file's */
  double learning_rate;       /* the schedule's initial learning rate */
  const char *precision;      /* "fp32" (default), "bf16" or "fp16" */
  int recompute;              /* gradient checkpointing of the layers the run file marks */
  const char *checkpoint_dir; /* NULL: ./checkpoints */
  int64_t checkpoint_every;   /* also every N steps (0: at each epoch's end only) */
  int keep_checkpoints;       /* the newest K kept (<= 0: 3) */
  int resume;                 /* continue from the newest valid checkpoint in checkpoint_dir */
  const char *logdir;         /* TensorBoard events; NULL: ./runs; "" for none */
  int64_t log_every;          /* TensorBoard scalars every N steps (> 0 overrides the run file's log_every) */
  kiln_train_progress_fn progress;
  void *progress_arg;
} kiln_train_options;

typedef struct kiln_train_result {
  int64_t epochs, steps, samples;  /* this process's run (after a resume: the whole run's epochs) */
  double train_loss, train_accuracy; /* the last epoch's means */
  double test_loss, test_accuracy;   /* on the validation data after the last epoch; NaN without */
  double samples_per_s;              /* training samples per second over the run, all ranks */
  double wall_s;
  size_t activation_bytes;           /* held for the backward pass at batch_size (its peak) */
  int64_t skipped_steps;             /* fp16: steps skipped because gradients overflowed */
} kiln_train_result;

typedef struct kiln_trainer kiln_trainer;

/* Reads the run file, opens its data, builds the model (or restores it from the newest valid
 * checkpoint when options->resume), and joins the MPI job when launched by mpirun (every rank must
 * run the same kiln version and run file). Errors name the run-file key at fault. */
kiln_status kiln_trainer_create(const kiln_train_options *options, kiln_trainer **out);
/* Trains the remaining epochs, checkpointing and logging as configured. */
kiln_status kiln_trainer_fit(kiln_trainer *t, kiln_train_result *result);
/* Writes the model as ONNX (weights as initializers) with the data's schema and preprocessing
 * (schema.json, preprocess.json) into `dir`, which must exist: a model repository's version folder. */
kiln_status kiln_trainer_export(kiln_trainer *t, const char *dir);
/* Where an exported model came from, as SHA-256 digests in lower-case hex: the run file's bytes
 * as read (the built-in run's JSON text without one), and the text of the schema.json the last
 * kiln_trainer_export wrote (the dataset's schema as serving checks it; "" before an export). */
typedef struct kiln_train_lineage {
  char run_file_sha256[65];
  char dataset_schema_sha256[65];
} kiln_train_lineage;
void kiln_trainer_lineage(const kiln_trainer *t, kiln_train_lineage *out);
/* MPI rank of this process (0 without MPI): only rank 0 writes files and logs. A rank whose
 * trainer returned an error does not finalize MPI when freed, so that mpirun stops the job instead
 * of leaving the other ranks waiting for it. */
int kiln_trainer_rank(const kiln_trainer *t);
/* Steps between TensorBoard scalars (and log lines): the option, else the run file's, else 100. */
int64_t kiln_trainer_log_every(const kiln_trainer *t);
void kiln_trainer_free(kiln_trainer *t);

#ifdef __cplusplus
}
#endif

#endif
