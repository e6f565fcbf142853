/* The trainer's state, shared by the training loop (trainer.c), its checkpoints (resume.c) and the
 * ONNX export (export.c). */
#ifndef KILN_TRAIN_TRAINER_H
#define KILN_TRAIN_TRAINER_H

#include "kiln/data.h"
#include "kiln/obs.h"
#include "kiln/train.h"
#include "train/events.h"
#include "train/train.h"

struct kiln_trainer {
  kiln_train_options options;
  kx_run run;
  kx_world world;
  kiln_pool *pool;
  int threads;
  int64_t rank_batch;        /* this rank's rows per step: batch_size / world size */
  kiln_dataset *train, *valid;
  kx_net *net;
  kx_rng rng;                /* initialization, then dropout masks */
  float *targets;            /* [rank_batch, target width] */
  float *dy;                 /* [rank_batch, output width] */
  int64_t epoch;             /* the next epoch to run */
  int64_t steps_per_epoch;   /* -1 until the first epoch ends */
  /* the running epoch, saved in checkpoints so that a resumed epoch reports the same means */
  int64_t epoch_step, epoch_rows, epoch_rows_resumed;
  double epoch_loss, epoch_correct, epoch_start;
  double step_loss;          /* the last step's mean loss */
  int64_t step_samples;      /* the last step's rows, all ranks */
  double loss_scale;         /* fp16: the loss's multiplier (1 otherwise) */
  int64_t good_steps;        /* fp16: finite steps since the scale last changed */
  int64_t skipped_steps;     /* fp16: steps whose gradients overflowed */
  int resumed_mid_epoch;     /* a checkpoint taken inside the epoch: skip its batches first */
  char checkpoint_dir[4096];
  int64_t checkpoint_every;
  int keep_checkpoints;
  kx_events *events;
  kiln_gpus *gpus;           /* rank 0 with NVML: the gpu_utilization it logs (NULL: no GPU) */
  int failed;                /* an error was returned: kiln_trainer_free does not finalize MPI */
  char schema_sha256[65];    /* SHA-256 of the schema.json the last export wrote ("" before one) */
};

/* Loss and accuracy of the model over a dataset (all ranks: each evaluates its shard). */
kiln_status kx_trainer_evaluate(kiln_trainer *t, kiln_dataset *d, double *loss, double *accuracy);
/* Writes a checkpoint (rank 0; collective otherwise a no-op) at the current step: `epoch` is the
 * epoch to resume in, end_of_epoch whether that epoch starts from its beginning. */
kiln_status kx_trainer_checkpoint(kiln_trainer *t, int64_t epoch, int end_of_epoch);
/* Restores the newest valid checkpoint of the checkpoint directory, if there is one (every rank
 * reads the same file). */
kiln_status kx_trainer_resume(kiln_trainer *t);

#endif
