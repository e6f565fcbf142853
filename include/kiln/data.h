/* kiln data: streaming datasets in tf.data's vocabulary.
 *
 * A dataset is a chain of stages pulled from the end: a source (IDX, CSV, NPY/NPZ, TFRecord, an
 * image folder) yields records; map/filter/shuffle/batch/cache/prefetch/repeat/shard/take/skip
 * transform the stream. Memory is bounded by the stages' buffers, never by the dataset's size.
 *
 * A record is a set of named features, each a kiln_tensor (a scalar, a vector, an image...);
 * a batch is a record whose features have a leading batch dimension. A record that cannot be
 * read or transformed is a *bad record*: with on_error = fail the pipeline stops with an error
 * naming the file, the record and the reason; with on_error = skip it is written to the
 * quarantine file (JSON lines) and counted, and the stream goes on. Nothing is dropped silently.
 *
 * Pipelines are described in JSON, the same object as a run file's `data` section
 * (CLARIFICATIONS.md #5); README "Data pipelines" documents every source, stage and transform. */
#ifndef KILN_DATA_H
#define KILN_DATA_H

#include "kiln/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- records */

/* One element of a dataset. `names` point into storage owned by the stage that made the record
 * (valid while its dataset lives); `values[i]` is feature names[i]. A value with dtype
 * KILN_UNDEFINED is missing (an empty CSV field, a feature absent from one Example). Features of
 * raw bytes (a TFRecord bytes value that is not UTF-8 text, an encoded image) are uint8 vectors;
 * text is a KILN_STRING tensor. */
typedef struct kiln_record {
  int count;
  const char *const *names;
  kiln_tensor *values;
  const char *source; /* file the record came from (stage-owned), NULL when unknown */
  int64_t index;      /* its number in that file, 0-based; a batch carries its first record's */
  int64_t offset;     /* its byte offset in that file; -1 where the format has none */
  void *block;        /* what kiln_record_release frees besides the values' own buffers */
} kiln_record;

/* Makes an empty record of `count` features named `names` (not copied): values[] all missing,
 * index/offset -1. When data_bytes > 0, *data points to that many zeroed bytes (64-byte aligned)
 * allocated together with the record, for the values to view (owner NULL); one allocation for a
 * whole record keeps sources fast. */
kiln_status kiln_record_init(kiln_record *r, const char *const *names, int count, size_t data_bytes,
                             void **data);
/* Frees every owned value buffer and the block; leaves the record empty. */
void kiln_record_release(kiln_record *r);
/* Index of the feature called `name`, or -1. */
int kiln_record_find(const kiln_record *r, const char *name);
/* Replaces feature i's value by `t`, taking ownership of t's buffer (t is left empty). */
void kiln_record_set(kiln_record *r, int i, kiln_tensor *t);
/* Deep copy: every value owned by the copy; names and source shared with the original. */
kiln_status kiln_record_copy(kiln_record *dst, const kiln_record *src);
/* The record as one JSON object, without a newline: keys are the feature names in order,
 * tensors as (nested) arrays, numbers as numbers (NaN/Infinity as in TF Serving), missing values
 * as null, text as strings. Returns a malloc'd string, NULL when memory runs out. */
char *kiln_record_to_json(const kiln_record *r);

/* ---------------------------------------------------------------- datasets */

typedef enum kiln_on_error {
  KILN_ON_ERROR_FAIL = 0, /* the first bad record stops the pipeline with its error */
  KILN_ON_ERROR_SKIP = 1, /* bad records go to the quarantine file and are counted */
} kiln_on_error;

typedef struct kiln_data_options {
  kiln_on_error on_error;        /* overrides the spec's "on_error" when `on_error_set` */
  int on_error_set;
  const char *quarantine_path;   /* overrides the spec's "quarantine"; skip mode without one
                                    writes "quarantine.jsonl" in the working directory */
  kiln_pool *pool;               /* runs parallel maps and parsers (borrowed); NULL: the dataset
                                    makes its own of `threads` threads */
  int threads;                   /* <= 0: the spec's "threads", else the CPU count */
  const char *base_dir;          /* relative paths in the spec resolve against it (NULL: cwd) */
} kiln_data_options;

typedef struct kiln_dataset kiln_dataset;

/* Opens a pipeline from its JSON description:
 *   {"source": {"format": "csv", "path": "x.csv", ...} | "x.csv",
 *    "stages": [{"map": {...}}, {"shuffle": {"buffer_size": 1000, "seed": 1}}, ...],
 *    "on_error": "fail" | "skip", "quarantine": "bad.jsonl", "threads": N}
 * Errors name the offending key. `options` may be NULL. */
kiln_status kiln_dataset_open_spec(const char *json, size_t len, const kiln_data_options *options,
                                   kiln_dataset **out);
/* Opens one source file or folder with no stages; the format comes from the name (.csv, .npy,
 * .npz, .tfrecord/.tfrecords, *-idx?-ubyte[.gz], a folder of class folders of images). An IDX
 * images file is paired with its labels file (…-images-idx3-ubyte → …-labels-idx1-ubyte) when
 * that exists. */
kiln_status kiln_dataset_open_path(const char *path, const kiln_data_options *options, kiln_dataset **out);
void kiln_dataset_free(kiln_dataset *d);

/* Moves the next element into *out (the caller releases it). Sets *done = 1 (and leaves *out
 * empty) at the end of the stream. A bad record in fail mode, an I/O error or a broken spec
 * returns an error; the dataset is then unusable until reset. */
kiln_status kiln_dataset_next(kiln_dataset *d, kiln_record *out, int *done);
/* Restarts the stream for pass `epoch` (0-based): shuffles reseeded from (seed, epoch), caches
 * reused. Training resumes a run by resetting to its epoch and skipping the batches it used. */
kiln_status kiln_dataset_reset(kiln_dataset *d, int64_t epoch);

/* Counts so far: records read from the sources (good and bad), and records quarantined. */
typedef struct kiln_data_counts {
  int64_t read;
  int64_t quarantined;
} kiln_data_counts;
kiln_data_counts kiln_dataset_counts(const kiln_dataset *d);
/* The quarantine file in use, NULL when none (fail mode). */
const char *kiln_dataset_quarantine_path(const kiln_dataset *d);

/* Writes every remaining record to `path` in `format` ("csv", "npz", "tfrecord"; NULL: from the
 * extension). NPZ stacks each feature along a new first axis and so needs equal shapes. */
kiln_status kiln_dataset_write(kiln_dataset *d, const char *path, const char *format, int64_t *written);

#ifdef __cplusplus
}
#endif
#endif
