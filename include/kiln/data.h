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
 * index/offset -1. When data_bytes > 0, *data points to that many bytes (64-byte aligned, not
 * zeroed: the caller fills what its values view) allocated together with the record, for the
 * values to view (owner NULL); one allocation for a whole record keeps sources fast. */
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

/* Counts so far: records read from the sources (good and bad), and records quarantined. Both
 * count one pass: later passes (epochs, a second statistics pass) read the same records, and
 * their bad records, already quarantined once, are dropped without a second quarantine line. */
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

/* ---------------------------------------------------------------- schema and statistics */

/* TFDV's jobs on kiln datasets: per-feature statistics, a schema inferred from them (a JSON file
 * users edit to loosen), validation of data against a schema, and drift between two datasets.
 * Statistics stream: memory grows with the number of features (and the distinct values tracked
 * per feature), never with the number of records. Histograms need a second pass over the data
 * (kiln_dataset_reset), since their edges come from the first pass's min and max. */

typedef struct kiln_stats_options {
  int bins;           /* histogram bins; <= 0: 10 */
  int max_categories; /* distinct values counted exactly per feature; <= 0: 1000 */
} kiln_stats_options;

/* How often one value occurs. Integer and bool values are written in decimal. */
typedef struct kiln_value_count {
  const char *value;
  int64_t count;
} kiln_value_count;

/* One feature's statistics. Numeric fields cover every element of every present value whose
 * dtype is numeric (bool as 0/1); min, max, mean and std (population, ddof = 0, as numpy's std)
 * are over the finite elements only, NaN and infinities are counted apart. Value counts are kept
 * for string, bool and integer features while they have at most max_categories distinct values
 * (and their text stays under 1 MiB); past that `too_many` is set and counting stops. */
typedef struct kiln_feature_stats {
  const char *name;
  kiln_dtype dtype;  /* the widest dtype seen (an int64 column with one float value: float) */
  int dtype_varied;  /* records disagreed on the dtype */
  int rank;          /* -1 when records disagreed on the shape (or none held the feature) */
  int64_t dims[KILN_MAX_RANK];
  int64_t present;   /* records holding the feature */
  int64_t missing;   /* records without it (absent, or a missing value) */
  int numeric;       /* the numeric fields below are meaningful */
  int64_t count;     /* finite elements */
  int64_t nan, inf;
  double min, max, mean, std; /* NaN when count == 0 */
  int bins;                   /* histogram over [edges[i], edges[i+1]), the last bin closed */
  double *edges;              /* bins + 1 ascending edges; NULL until the first pass ends */
  int64_t *counts;            /* filled by the second pass */
  int64_t outside;            /* second-pass finite elements outside the edges */
  int categorical;            /* value counts were kept */
  int too_many;               /* more distinct values than the limit: counting stopped */
  int distinct;               /* entries in values (0 when too_many) */
  kiln_value_count *values;   /* most frequent first, ties by value; set when the pass ends */
} kiln_feature_stats;

typedef struct kiln_stats {
  int64_t num_records;
  int count;                    /* features, in order of first appearance */
  kiln_feature_stats *features;
  struct kx_stats_state *state; /* the accumulators */
} kiln_stats;

/* The statistics engine, for callers that drive the passes themselves: create; add every record
 * (first pass); end_pass (std, value lists, default equal-width edges over [min, max]);
 * optionally set_edges; then add_histogram every record again (second pass). `options` may be
 * NULL. */
kiln_status kiln_stats_create(const kiln_stats_options *options, kiln_stats **out);
kiln_status kiln_stats_add(kiln_stats *s, const kiln_record *r);
kiln_status kiln_stats_end_pass(kiln_stats *s);
/* After end_pass: replaces a numeric feature's histogram edges (2 <= n_edges <= 100001, finite,
 * non-decreasing) and zeroes its counts; errors name a feature that is unknown or not numeric. */
kiln_status kiln_stats_set_edges(kiln_stats *s, const char *feature, const double *edges, int n_edges);
kiln_status kiln_stats_add_histogram(kiln_stats *s, const kiln_record *r);
/* Index of a feature's statistics, or -1. */
int kiln_stats_find(const kiln_stats *s, const char *feature);
/* Both passes over a dataset (reset to epoch 0 between them); the dataset ends exhausted. */
kiln_status kiln_stats_compute(kiln_dataset *d, const kiln_stats_options *options, kiln_stats **out);
/* {"num_records": N, "features": [{"name", "dtype", "dtype_varied", "shape", "present", "missing",
 * "missing_rate", "numeric": {"count", "nan", "inf", "min", "max", "mean", "std",
 * "histogram": {"edges", "counts"}}, "values": {"distinct", "too_many", "top": [{"value",
 * "count"}...]}}]} on one line; `top` lists at most `max_values` values (< 0: all). Non-finite
 * numbers are null. malloc'd; NULL when memory runs out. */
char *kiln_stats_to_json(const kiln_stats *s, int max_values);
void kiln_stats_free(kiln_stats *s);

/* A schema: what each feature of good data looks like. Constraints that are absent (a NaN
 * min or max, max_missing_rate 1, no domain, allow_nan set) are not checked. */
typedef struct kiln_schema_feature {
  char *name;
  kiln_dtype dtype;             /* values of narrower dtypes fit (an int where float is asked) */
  int rank;                     /* -1: any shape */
  int64_t dims[KILN_MAX_RANK];
  double missing_rate;          /* observed when inferred (informative) */
  double max_missing_rate;      /* more missing records than this fraction is an anomaly */
  double min, max;              /* allowed range of numeric elements; NaN: unbounded */
  int allow_nan;                /* numeric features: whether NaN elements are allowed */
  int domain_count;             /* -1: no domain; else the allowed strings (sorted) */
  char **domain;
  /* "stats" (informative: normalize reads mean and std). has_stats 0: absent. */
  int has_stats;
  double mean, std, stats_min, stats_max; /* NaN where absent or null */
  int bins;                     /* 0: no histogram */
  double *edges;                /* bins + 1 */
  int64_t *counts;              /* bins */
} kiln_schema_feature;

typedef struct kiln_schema {
  int64_t num_records;
  int count;
  kiln_schema_feature *features;
  int *by_name; /* feature indices sorted by name, for lookups */
} kiln_schema;

/* Infers a schema from a dataset's statistics (both passes, default options): dtype, shape
 * (null when it varied), missing_rate and max_missing_rate (the observed rate rounded up to the
 * next multiple of 0.01, so a 0.3 % missing column allows 1 % and a complete one allows none),
 * min and max (= observed), allow_nan (whether NaN was seen), domain (string features with at most
 * max_categories distinct values), and stats. */
kiln_status kiln_schema_infer(kiln_dataset *d, kiln_schema **out);
kiln_status kiln_schema_from_stats(const kiln_stats *stats, kiln_schema **out);
/* Parses the schema JSON:
 *   {"kiln_schema": 1, "num_records": N, "features": [{"name": "...", "dtype": "float",
 *    "shape": [..] | null, "missing_rate": r, "max_missing_rate": r, "min": a, "max": b,
 *    "allow_nan": false, "domain": [...], "stats": {"mean": m, "std": s, "min": a, "max": b,
 *    "histogram": {"edges": [...], "counts": [...]}}}]}
 * Strictly: unknown or repeated keys, wrong types, min > max, rates outside [0, 1], a repeated
 * feature name or domain value, a domain on a non-string feature are errors naming the member
 * ("features[2].min: expected a number or null"). Only name and dtype are required. */
kiln_status kiln_schema_parse(const char *json, size_t len, kiln_schema **out);
/* kiln_schema_parse on a file (at most 256 MiB); errors begin with the path. */
kiln_status kiln_schema_read(const char *path, kiln_schema **out);
/* The schema as JSON (indented, ends with a newline), in the format kiln_schema_parse reads.
 * malloc'd; NULL when memory runs out. */
char *kiln_schema_to_json(const kiln_schema *s);
void kiln_schema_free(kiln_schema *s);
/* Index of a feature, or -1. */
int kiln_schema_find(const kiln_schema *s, const char *name);

/* What can be wrong with data, as TFDV names it. */
typedef enum kiln_anomaly_kind {
  KILN_ANOMALY_MISSING_FEATURE = 0, /* absent, or missing more often than max_missing_rate */
  KILN_ANOMALY_UNEXPECTED_FEATURE,  /* in the data, not in the schema */
  KILN_ANOMALY_WRONG_TYPE,          /* a dtype that does not fit the schema's */
  KILN_ANOMALY_SHAPE_MISMATCH,
  KILN_ANOMALY_OUT_OF_RANGE,        /* a numeric element outside [min, max] */
  KILN_ANOMALY_NEW_CATEGORY,        /* a string outside the domain */
  KILN_ANOMALY_NAN,                 /* NaN where the schema allows none */
} kiln_anomaly_kind;
#define KILN_ANOMALY_KINDS 7
/* "missing_feature", "unexpected_feature", "wrong_type", "shape_mismatch", "out_of_range",
 * "new_category", "nan". */
const char *kiln_anomaly_kind_name(kiln_anomaly_kind kind);

/* Checks one record (a raw request, say) against the schema: NULL when it conforms, else an
 * INVALID_ARGUMENT status naming every anomaly ("feature 'age': out_of_range: 150 is outside
 * [0, 99]; feature 'colour': unexpected_feature"). A missing value is an anomaly only where the
 * schema allows no missing values. Thread-safe; the schema is not modified. */
kiln_status kiln_schema_check_record(const kiln_schema *s, const kiln_record *r);

/* One kind of anomaly of one feature, over a whole dataset. */
typedef struct kiln_anomaly {
  const char *feature;
  kiln_anomaly_kind kind;
  char *description; /* what was expected and what was found, with the first example */
  int64_t count;     /* records with the anomaly */
  int64_t examples[5]; /* their indices (the record's index in its file, else its position) */
  int n_examples;
} kiln_anomaly;

typedef struct kiln_validation {
  int64_t records;
  int count;
  kiln_anomaly *anomalies; /* by feature (schema order, then unexpected ones), then kind */
  struct kx_validation_state *state;
} kiln_validation;

/* Validation driven by the caller: create, add every record, finish (fills anomalies). The
 * schema must outlive the validation. */
kiln_status kiln_validation_create(const kiln_schema *schema, kiln_validation **out);
kiln_status kiln_validation_add(kiln_validation *v, const kiln_record *r);
kiln_status kiln_validation_finish(kiln_validation *v);
/* One pass over a dataset. */
kiln_status kiln_validate(kiln_dataset *d, const kiln_schema *schema, kiln_validation **out);
/* {"records": N, "anomalies": [{"feature", "kind", "description", "count", "examples"}],
 * "clean": bool} on one line; malloc'd, NULL when memory runs out. */
char *kiln_validation_to_json(const kiln_validation *v);
void kiln_validation_free(kiln_validation *v);

/* Drift of one feature between two datasets: string and bool features use the L-infinity
 * distance between their normalized value frequencies; numeric features the Jensen-Shannon
 * divergence (base 2, in [0, 1]) between histograms over common edges (the union of both
 * ranges). Integer features count as numeric: L-inf over many distinct integers misses a shift
 * that moves every value's frequency a little. */
typedef struct kiln_drift_feature {
  const char *name;
  const char *method; /* "jensen_shannon", "l_infinity", or "presence" (a feature only one side has:
                         distance 1) */
  double distance;    /* NaN when it could not be computed (see note) */
  const char *note;   /* NULL, or why the distance is NaN or 1 */
} kiln_drift_feature;

typedef struct kiln_drift {
  int count;
  kiln_drift_feature *features; /* A's features in order, then those only B has */
  kiln_stats *a, *b;            /* owned; their histograms share edges */
} kiln_drift;

/* Takes ownership of both statistics (which must have ended their first pass and, for numeric
 * features, counted histograms over equal edges) and compares them. */
kiln_status kiln_drift_from_stats(kiln_stats *a, kiln_stats *b, kiln_drift **out);
/* Two passes over each dataset: statistics, common edges, histograms, distances. */
kiln_status kiln_drift_compare(kiln_dataset *a, kiln_dataset *b, const kiln_stats_options *options,
                               kiln_drift **out);
/* {"threshold": t, "drifted": bool, "features": [{"name", "method", "distance", "drifted",
 * "note"}]} on one line; malloc'd, NULL when memory runs out. */
char *kiln_drift_to_json(const kiln_drift *d, double threshold);
void kiln_drift_free(kiln_drift *d);

/* ---------------------------------------------------------------- serving-side preprocessing */

/* What a model version's folder may hold beside model.onnx so that the server takes raw records
 * and treats them exactly as training did: preprocess.json =
 *   {"schema": "schema.json", "transforms": [...]}
 * The schema (a path relative to the folder; kiln data schema infer writes one) says which raw
 * features a request carries, with their dtypes and shapes, and what values they may hold; the
 * transforms are a map stage's (README: Data pipelines) and must yield a feature named after each
 * of the model's inputs. */
typedef struct kiln_preprocess kiln_preprocess;

/* Loads DIR/preprocess.json; *out stays NULL (and the result is OK) when there is none. A schema
 * feature without a fixed shape cannot be served and is an error. */
kiln_status kiln_preprocess_load(const char *dir, kiln_preprocess **out);
void kiln_preprocess_free(kiln_preprocess *p);
/* The raw features, in the order kiln_preprocess_apply takes them. */
const kiln_schema *kiln_preprocess_schema(const kiln_preprocess *p);
/* raw[i] holds schema feature i for every row of a request (dims[0] = rows, at least one). Each
 * row is checked against the schema and transformed; out[j] (owned, dims[0] = rows) stacks the
 * row results' feature out_names[j]. Errors name the row and what was wrong with it (an anomaly,
 * a transform that failed, a missing output feature); no output is left allocated then. */
kiln_status kiln_preprocess_apply(const kiln_preprocess *p, const kiln_tensor *raw, int n_out,
                                  const char *const *out_names, kiln_tensor *out);

#ifdef __cplusplus
}
#endif
#endif
