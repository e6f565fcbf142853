/* Internal to the data layer: the stage interface every source and pipeline stage implements,
 * the context they share (error policy, quarantine, counters, threads), the helpers that read
 * spec objects, and the entry points of the sources, writers and transforms (one file each). */
#ifndef KILN_DATA_DATA_H
#define KILN_DATA_DATA_H

#include <pthread.h>
#include <stdatomic.h>

#include "kiln/data.h"

struct cJSON;

/* Features that share one record's data area (kiln_record_init) each start on a 64-byte
 * boundary: n rounded up to it. */
#define KX_DATA_ALIGN 64
static inline size_t kx_align64(size_t n) { return (n + KX_DATA_ALIGN - 1) / KX_DATA_ALIGN * KX_DATA_ALIGN; }

/* ---------------------------------------------------------------- context */

/* Shared by every stage of one dataset; lives as long as the dataset. */
typedef struct kx_data_ctx {
  kiln_on_error on_error;
  char *quarantine_path; /* skip mode only */
  FILE *quarantine;      /* created (emptied) when the context is set up */
  pthread_mutex_t lock;  /* guards the quarantine file */
  atomic_llong read;     /* records read from sources, good and bad */
  atomic_llong quarantined;
  /* Set when the source first reaches its end: later passes read the same records again, and
   * the counts stay those of one pass. */
  atomic_int first_pass_done;
  int64_t read_in_first_pass;
  /* The bad records quarantined so far (source, index, offset), so that a later pass drops its
   * copies of them without a second line or count; guarded by `lock`. */
  struct kx_seen *seen;
  size_t n_seen, seen_capacity;
  kiln_pool *pool; /* runs parallel maps and parsers */
  int own_pool;    /* whether kx_data_ctx_free frees it */
  int threads;     /* the pool's size */
  char *base_dir;  /* relative paths resolve against it; NULL: the working directory */
} kx_data_ctx;

/* Sets up a context: `pool` is borrowed, or NULL to make one of `threads` threads (<= 0: the
 * default count); in skip mode the quarantine file (NULL: "quarantine.jsonl") is created empty.
 * kx_data_ctx_free closes the quarantine and frees what the context owns. */
kiln_status kx_data_ctx_init(kx_data_ctx *ctx, kiln_on_error on_error, const char *quarantine_path,
                             kiln_pool *pool, int threads, const char *base_dir);
void kx_data_ctx_free(kx_data_ctx *ctx);

/* Reports a bad record. Fail mode: returns `why` prefixed with where the record is
 * ("x.csv: record 17 (byte 2048): ..."). Skip mode: appends one JSON line {"source", "index",
 * "offset", "reason", "raw"} to the quarantine file ("raw" only when raw_len <= 4096: a string
 * when it is UTF-8 text, else {"b64": ...}), counts it, frees `why` and returns NULL: the caller
 * drops the record and goes on. A quarantine that cannot be written is an I/O error either way.
 * index/offset < 0 are written as null. Thread-safe. */
kiln_status kx_bad_record(kx_data_ctx *ctx, const char *source, int64_t index, int64_t offset,
                          const void *raw, size_t raw_len, kiln_status why);
/* The same for a record that was read but failed later (a transform, a batch): its JSON (when
 * short) is the raw text. The record is not released. */
kiln_status kx_bad_parsed_record(kx_data_ctx *ctx, const kiln_record *r, kiln_status why);

/* A path from a spec, resolved against ctx->base_dir when relative; malloc'd (NULL: no memory). */
char *kx_data_path(const kx_data_ctx *ctx, const char *path);

/* ---------------------------------------------------------------- stages */

typedef struct kx_stage kx_stage;

typedef struct kx_stage_ops {
  const char *name; /* "csv", "shuffle", ... */
  /* Moves the next record into *out (owned by the caller) or sets *done = 1 at the end.
   * Bad records are reported with kx_bad_record: in skip mode they never reach the caller. */
  kiln_status (*next)(kx_stage *s, kiln_record *out, int *done);
  /* Starts pass `epoch` (0-based) from the first record again. */
  kiln_status (*reset)(kx_stage *s, int64_t epoch);
  /* Frees the stage (not its upstream). */
  void (*free)(kx_stage *s);
  /* Optional (NULL when absent): builds directly the record a batch stage of `size` records
   * (drop_remainder as its option) would stack from the next records of this stage, with the
   * same bad records reported in the same order and counted the same, and *done = 1 where it
   * would end. *ended = 1 when the stage reached its end during this call, batch or not. */
  kiln_status (*next_batch)(kx_stage *s, int64_t size, int drop_remainder, kiln_record *out, int *done, int *ended);
} kx_stage_ops;

/* Every stage embeds this first. */
struct kx_stage {
  const kx_stage_ops *ops;
  kx_stage *up; /* upstream; NULL for a source */
  kx_data_ctx *ctx;
};

/* ---------------------------------------------------------------- pipeline stages */

/* Each stage takes its upstream and its arguments from the spec (an object, or for the stages
 * with one main argument a bare number: {"batch": 32}); `where` names it in errors
 * ("stages[2].batch"). On error the upstream is left to the caller. */
typedef kiln_status (*kx_stage_open_fn)(kx_data_ctx *ctx, kx_stage *up, const struct cJSON *args,
                                        const char *where, kx_stage **out);
kiln_status kx_map_open(kx_data_ctx *ctx, kx_stage *up, const struct cJSON *args, const char *where, kx_stage **out);
kiln_status kx_filter_open(kx_data_ctx *ctx, kx_stage *up, const struct cJSON *args, const char *where, kx_stage **out);
kiln_status kx_shuffle_open(kx_data_ctx *ctx, kx_stage *up, const struct cJSON *args, const char *where, kx_stage **out);
kiln_status kx_batch_open(kx_data_ctx *ctx, kx_stage *up, const struct cJSON *args, const char *where, kx_stage **out);
kiln_status kx_cache_open(kx_data_ctx *ctx, kx_stage *up, const struct cJSON *args, const char *where, kx_stage **out);
kiln_status kx_prefetch_open(kx_data_ctx *ctx, kx_stage *up, const struct cJSON *args, const char *where, kx_stage **out);
kiln_status kx_repeat_open(kx_data_ctx *ctx, kx_stage *up, const struct cJSON *args, const char *where, kx_stage **out);
kiln_status kx_shard_open(kx_data_ctx *ctx, kx_stage *up, const struct cJSON *args, const char *where, kx_stage **out);
kiln_status kx_take_open(kx_data_ctx *ctx, kx_stage *up, const struct cJSON *args, const char *where, kx_stage **out);
kiln_status kx_skip_open(kx_data_ctx *ctx, kx_stage *up, const struct cJSON *args, const char *where, kx_stage **out);

/* For stages whose argument may be a bare number: that number as an object {key: n}, else args
 * itself. The returned object is either args or *tmp (which the caller deletes with cJSON_Delete). */
const struct cJSON *kx_spec_shorthand(const struct cJSON *args, const char *key, struct cJSON **tmp);

/* ---------------------------------------------------------------- spec objects */

/* Reading the JSON description. `where` names the object in errors ("source", "stages[2].batch").
 * Absent optional members leave *out unchanged; required ones missing are an error. */
kiln_status kx_spec_keys(const struct cJSON *obj, const char *where, const char *const *allowed);
kiln_status kx_spec_string(const struct cJSON *obj, const char *where, const char *key, int required,
                           const char **out);
kiln_status kx_spec_int(const struct cJSON *obj, const char *where, const char *key, int required,
                        int64_t min, int64_t max, int64_t *out);
kiln_status kx_spec_double(const struct cJSON *obj, const char *where, const char *key, int required,
                           double *out);
kiln_status kx_spec_bool(const struct cJSON *obj, const char *where, const char *key, int *out);
/* A list of numbers (or one number, read as a list of one) into out[0..*n), at most max. */
kiln_status kx_spec_doubles(const struct cJSON *obj, const char *where, const char *key, int required,
                            double *out, int max, int *n);

/* ---------------------------------------------------------------- sources (one file each) */

/* Each takes the source object of the spec ({"format": ..., "path": ..., options}), checks its
 * keys, opens the file and returns a stage with up = NULL. Records carry source = the path. */
kiln_status kx_idx_open(kx_data_ctx *ctx, const struct cJSON *spec, kx_stage **out);
kiln_status kx_csv_open(kx_data_ctx *ctx, const struct cJSON *spec, kx_stage **out);
kiln_status kx_npy_open(kx_data_ctx *ctx, const struct cJSON *spec, kx_stage **out); /* .npy and .npz */
kiln_status kx_tfrecord_open(kx_data_ctx *ctx, const struct cJSON *spec, kx_stage **out);
kiln_status kx_images_open(kx_data_ctx *ctx, const struct cJSON *spec, kx_stage **out);
/* For an image-folder source: the channels its images decode to (0: their own), or -1 when it
 * was asked not to decode. */
int kx_images_decode_channels(const kx_stage *s);
/* tf.data's Dataset.range: records {"x": int64} for x = start, start+step, ... < stop. */
kiln_status kx_range_open(kx_data_ctx *ctx, const struct cJSON *spec, kx_stage **out);

/* ---------------------------------------------------------------- TFRecord and image folders
 * (tfrecord.c, images.c) */

/* CRC-32C (Castagnoli), as in iSCSI and TFRecord framing: crc32c("123456789") = 0xE3069283. */
uint32_t kx_crc32c(const void *data, size_t len);
/* TFRecord's masked CRC of data: rotate the CRC-32C right by 15 bits, add 0xa282ead8. */
uint32_t kx_tfrecord_masked_crc(const void *data, size_t len);
/* Decodes one serialized tf.train.Example into *out as the TFRecord source `s` (from
 * kx_tfrecord_open) would: its `features` description, or its interned name sets. An Example
 * that does not parse or does not match the description is KILN_INVALID_ARGUMENT (a bad record);
 * other codes are not the record's fault (memory, too many distinct name sets). */
kiln_status kx_tfrecord_parse(kx_stage *s, const void *example, size_t len, kiln_record *out);
/* The channels the pipeline's decode stage should give an image folder source's "image"
 * feature: -1 when its spec says "decode": false (or `s` is not an image folder source), else
 * the spec's "channels" (0: the image's own). */
int kx_images_decode_channels(const kx_stage *s);

/* ---------------------------------------------------------------- tabular sources (idx.c, csv.c, npy.c) */

/* The labels file that goes with an IDX images file: the path with "-images-idx3-ubyte" replaced
 * by "-labels-idx1-ubyte", malloc'd, when the path has that part and the file exists; else NULL. */
char *kx_idx_labels_for(const char *images_path);

/* ---------------------------------------------------------------- writers (one file each) */

typedef struct kx_writer kx_writer;
struct kx_writer {
  kiln_status (*write)(kx_writer *w, const kiln_record *r);
  /* Completes the file (flush, trailer, rename into place). */
  kiln_status (*finish)(kx_writer *w);
  /* Frees the writer; an unfinished file is removed. */
  void (*free)(kx_writer *w);
};
kiln_status kx_csv_writer_open(const char *path, kx_writer **out);
kiln_status kx_npz_writer_open(const char *path, kx_writer **out);
kiln_status kx_tfrecord_writer_open(const char *path, kx_writer **out);

/* ---------------------------------------------------------------- transforms (transform.c) */

/* A list of per-record transforms, as in a map stage's "transforms" (decode, resize, crop,
 * scale, normalize, one_hot, cast, select, ...). Immutable once parsed; apply is thread-safe. */
typedef struct kx_transforms kx_transforms;
kiln_status kx_transforms_parse(kx_data_ctx *ctx, const struct cJSON *list, const char *where,
                                kx_transforms **out);
/* Applies every transform in order to r in place. An error means r is a bad record. */
kiln_status kx_transforms_apply(const kx_transforms *t, kiln_record *r);
void kx_transforms_free(kx_transforms *t);

/* A filter stage's predicate. */
typedef struct kx_predicate kx_predicate;
kiln_status kx_predicate_parse(const struct cJSON *obj, const char *where, kx_predicate **out);
/* *keep = 1 when r passes; an error (a missing feature) means r is a bad record. */
kiln_status kx_predicate_eval(const kx_predicate *p, const kiln_record *r, int *keep);
void kx_predicate_free(kx_predicate *p);

/* Decodes a JPEG or PNG (detected from its first bytes) into a uint8 [height, width, channels]
 * tensor; channels 0 keeps the image's own (1 or 3; PNG alpha is kept as 4), 1 or 3 converts.
 * Images above 2^28 pixels are refused. */
kiln_status kx_image_decode(const uint8_t *bytes, size_t len, int channels, kiln_tensor *out);

/* ---------------------------------------------------------------- transforms: internal helpers */

/* Resizes a contiguous [H, W, C] or [H, W] tensor of any numeric dtype to [height, width(, C)] as
 * TF2's tf.image.resize without antialias does (half-pixel centres): bilinear gives float32,
 * nearest (torch's "nearest-exact") keeps the dtype. Errors describe the tensor (resize.c). */
kiln_status kx_resize_image(const kiln_tensor *in, int64_t height, int64_t width, int nearest, kiln_tensor *out);

/* ---------------------------------------------------------------- schema and statistics (stats.c, drift.c) */

/* Whether values of dtype `have` fit a feature declared `want`: the same dtype, a bool or an
 * integer where an integer or a float is declared, a float where a wider float is declared. */
int kx_dtype_fits(kiln_dtype want, kiln_dtype have);
/* bool, the integers and the floats (not strings, not complex numbers). */
int kx_dtype_is_numeric(kiln_dtype t);
/* Jensen-Shannon divergence, base 2 (in [0, 1]), between two histograms of n counts, each
 * normalized to sum 1. Two empty histograms are 0 apart, an empty and a non-empty one 1. */
double kx_js_divergence(const int64_t *p, const int64_t *q, int n);
/* L-infinity distance between two value-frequency lists (normalized by their totals): the largest
 * difference of one value's frequency; a value only one list has counts with frequency 0 on the
 * other side. Empty lists as for kx_js_divergence. */
double kx_linf_distance(const kiln_value_count *p, int np, const kiln_value_count *q, int nq);
/* Gives a numeric feature `bins` equal-width edges over [lo, hi] (one bin when lo == hi) and
 * zeroed counts. */
kiln_status kx_stats_default_edges(kiln_feature_stats *f, double lo, double hi, int bins);
struct kx_buf;
/* Appends a shape as a JSON array, or null for rank < 0. */
void kx_stats_put_shape(struct kx_buf *b, int rank, const int64_t *dims);

#endif
