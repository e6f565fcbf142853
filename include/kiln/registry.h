/* kiln registry: the model repository on disk — the server's own layout (TF Serving's
 * base_path/<version>/), so there is no second copy of the models — with a manifest in every
 * version folder, one labels file per model, and the validation gate CI runs before a version is
 * labelled stable.
 *
 *   REPO/NAME/labels.json              labels, earlier stable versions, rejected versions
 *   REPO/NAME/<version>/model.onnx
 *   REPO/NAME/<version>/manifest.json  size and SHA-256 of every other file, lineage, versions
 *   REPO/NAME/<version>/...            preprocess.json, schema.json, warmup/ (optional)
 *
 * Every change is atomic: a version is written into a temporary folder beside the others, fsynced
 * and renamed; labels.json is replaced with kiln_file_write_atomic. Writers of one model (the CLI,
 * the server's rollbacks) take an exclusive flock on REPO/NAME/.lock around read-modify-write. */
#ifndef KILN_REGISTRY_H
#define KILN_REGISTRY_H

#include "kiln/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- manifests */

typedef struct kiln_registry_meta {
  const char *key, *value;
} kiln_registry_meta;

typedef struct kiln_push_options {
  const char *model_dir; /* REPO/NAME; created (with its parents) when missing */
  /* An .onnx file (stored as model.onnx), or a folder holding model.onnx whose regular files and
   * sub-folders (preprocess.json, schema.json, warmup/) are copied with it. */
  const char *source;
  const kiln_registry_meta *meta; /* the manifest's "meta" object (--meta key=value) */
  int n_meta;
  const char *lineage_json; /* a JSON object stored as the manifest's "lineage"; NULL: none */
} kiln_push_options;

/* Whether a folder name under a model's base path is a version (digits only, at most 18 of them,
 * as TF Serving's numbered versions); its number in *version when it is. The server and the
 * registry share this one rule. */
int kiln_version_folder(const char *name, int64_t *version);

/* Whether `name` can name a model: [A-Za-z0-9_.-]{1,128}, not "." or "..". */
int kiln_registry_model_name_ok(const char *name);

/* Creates the next version folder (one above the highest present, 1 for the first) with manifest.json:
 *   {"format":1,"name":NAME,"version":V,"created":"2026-11-26T12:00:00Z",
 *    "kiln_version":..., "libraries":{"protobuf-c":...,"cjson":...,"zlib":...,"nettle":...},
 *    "files":[{"path":"model.onnx","bytes":N,"sha256":"<64 hex>"}, ...],
 *    "meta":{...}, "lineage":{...}}
 * Refuses a source that is not a loadable-looking ONNX file (empty, missing, not starting like a
 * ModelProto), a folder holding symbolic links or special files, more than 4096 files, meta keys
 * that repeat or are not printable ASCII, and lineage that is not a JSON object. The files are
 * copied (each hashed as written and fsynced) into REPO/NAME/.push-PID-N, which is fsynced and
 * renamed to the version under the model's lock; on failure it is removed. The version number
 * is in *version. */
kiln_status kiln_registry_push(const kiln_push_options *opt, int64_t *version);

/* Checks a version folder against its manifest: every listed file present with its size and
 * SHA-256, and no other file (manifest.json aside). KILN_NOT_FOUND when the folder has no
 * manifest; otherwise an error naming the first file that differs, e.g. "model.onnx: SHA-256
 * differs from the manifest (tampered with or half-copied)". Codes: FAILED_PRECONDITION for files
 * that differ (changed, truncated, missing, extra, a symbolic link), INVALID_ARGUMENT for a
 * manifest.json that does not parse (the message names manifest.json), IO when a file cannot be
 * read. Files are hashed in 1 MiB reads, so this costs one pass over the version's bytes. */
kiln_status kiln_manifest_verify(const char *version_dir);

/* The manifest's text (for `kiln registry show`); *out is malloc'd. */
kiln_status kiln_manifest_read(const char *version_dir, char **out, size_t *len);

/* Checks manifest text without touching files (the parser the verifier uses; fuzzed): format 1,
 * the keys above and no others, at most 4096 files with relative paths (no "..", ".", empty or
 * absolute part, no duplicate), sizes and 64-hex-digit digests; `name` starts the messages. */
kiln_status kiln_manifest_check(const char *text, size_t len, const char *name);

/* ---------------------------------------------------------------- labels */

typedef struct kiln_label {
  char *name; /* [A-Za-z0-9_.-]{1,64} */
  int64_t version;
} kiln_label;

typedef struct kiln_rejection {
  int64_t version;
  char *reason;
  char *at; /* RFC 3339 UTC */
} kiln_rejection;

/* labels.json:
 *   {"labels":{"stable":3,"canary":4},"stable_history":[1,2],
 *    "rejected":[{"version":5,"reason":"canary error rate 0.31 > stable 0.00 + 0.01","at":"..."}]} */
typedef struct kiln_labels {
  kiln_label *labels;
  int n_labels;
  int64_t *stable_history; /* earlier stable versions, oldest first */
  int n_history;
  kiln_rejection *rejected;
  int n_rejected;
} kiln_labels;

/* Parses labels.json text (fuzzed); `name` appears in errors. On error *out is left zeroed. */
kiln_status kiln_labels_parse(const char *text, size_t len, const char *name, kiln_labels *out);
/* REPO/NAME/labels.json; a missing file gives empty labels and no error. */
kiln_status kiln_labels_read(const char *model_dir, kiln_labels *out);
void kiln_labels_free(kiln_labels *l);
/* The version a label names, -1 when none. */
int64_t kiln_labels_get(const kiln_labels *l, const char *label);
/* The rejection of a version, NULL when it is not rejected. */
const kiln_rejection *kiln_labels_rejection(const kiln_labels *l, int64_t version);

/* Sets `label` to `version` (which must be a version folder). Labelling a version stable puts the
 * previous stable on stable_history and drops a `canary` label that named the same version (the
 * canary is promoted). Labelling a rejected version clears its rejection: an operator's explicit
 * decision. */
kiln_status kiln_registry_label(const char *model_dir, int64_t version, const char *label);
/* Moves stable back to the newest entry of stable_history that is still a version folder and not
 * rejected (dropping the entries it passes); FAILED_PRECONDITION when there is none. The new stable
 * version is in *stable. */
kiln_status kiln_registry_rollback(const char *model_dir, int64_t *stable);
/* Marks a version rejected with a reason and removes every label that names it (the server does
 * this when a canary fails; it never loads a rejected version again). FAILED_PRECONDITION when the
 * version is labelled stable: an operator promoted it after the server judged it, and the
 * operator's word stands. */
kiln_status kiln_registry_reject(const char *model_dir, int64_t version, const char *reason);

/* ---------------------------------------------------------------- versions */

/* The version folders of a model, ascending; *out is malloc'd (NULL when there are none).
 * NOT_FOUND when model_dir does not exist. */
kiln_status kiln_registry_versions(const char *model_dir, int64_t **out, int *n);
/* Deletes all but the newest `keep` versions, never a labelled one; what it removed is in
 * *removed (malloc'd, may be NULL) and *n_removed, also after an error (the caller frees it). Each
 * version is first renamed to a hidden REPO/NAME/.gc-V-PID, then deleted, so that no half-deleted
 * folder is ever seen under a version number. */
kiln_status kiln_registry_gc(const char *model_dir, int keep, int64_t **removed, int *n_removed);

/* ---------------------------------------------------------------- validation gate */

/* `kiln validate`: the checks CI runs on a version folder before it is labelled canary or stable.
 * Every check ends as pass, fail or skipped; the gate passes when none fails. A check that cannot
 * start because the gate's own inputs are missing or unreadable (the version folder, the golden
 * folder or its files, the baseline) is not a failure of the model: kiln_gate_run returns an error
 * for it (exit 2 in the CLI) and the report keeps the checks done so far. */

typedef enum kiln_check_status {
  KILN_CHECK_PASS = 0,
  KILN_CHECK_FAIL = 1,
  KILN_CHECK_SKIPPED = 2,
} kiln_check_status;

/* Accuracy of the classifier in a version folder (the CLI's `kiln eval` core over --eval DATA):
 * *accuracy in [0, 1] over *records records. An error fails the accuracy check with its message. */
typedef kiln_status (*kiln_accuracy_fn)(void *ctx, const char *version_dir, double *accuracy, int64_t *records);

typedef struct kiln_gate_options {
  const char *version_dir; /* holds model.onnx, maybe preprocess.json and manifest.json */
  /* The version to compare with: its signature, accuracy and latency. NULL: the signature is
   * compared with the previous version (the highest-numbered sibling version folder below
   * version_dir's number), and there is no baseline check. */
  const char *baseline_dir;
  const char *golden_dir; /* NULL: no golden check */
  double rtol, atol;      /* golden tolerances (kiln_tensor_compare); the CLI's defaults are 1e-4, 1e-5 */
  kiln_accuracy_fn accuracy; /* NULL: no accuracy check */
  void *accuracy_ctx;
  double min_accuracy; /* the accuracy check fails below it; < 0: no minimum */
  /* Timed batch-1 runs on synthetic inputs after 20 warm-up runs, stopped after 10 s; 0: no
   * latency check (then max_latency_p99_ms must be <= 0). */
  int latency_runs;
  double max_latency_p99_ms; /* the latency check fails above it; <= 0: no budget */
  int threads;               /* threads one timed run uses; <= 1: the calling thread only */
  /* With a baseline: the candidate fails when its accuracy < baseline accuracy * (1 - r), or its
   * p99 latency > baseline p99 * (1 + r) + 0.05 ms (the constant absorbs timer noise on
   * sub-millisecond models). Both models are timed in the same loop, alternating run by run, so
   * machine noise hits both. */
  double max_regression;
} kiln_gate_options;

typedef struct kiln_gate_report kiln_gate_report;

/* Runs the checks in order: load (model.onnx and preprocess.json), manifest (when manifest.json
 * is present: kiln_manifest_verify), signature, golden, accuracy, latency, baseline; a failed load
 * skips the rest. Golden: golden_dir holds cases (sub-folders, in name order; or golden_dir itself
 * when it holds input_0.*), each with input_K.npy or input_K.pb per model input K (an optional
 * input may be left out) and output_K.npy / output_K.pb for the outputs it checks (at least one).
 * A signature change is breaking when an input or output is removed or renamed, its dtype, kind or
 * rank changes, a fixed dimension changes or a dynamic one becomes fixed, or a required input is
 * added; a fixed dimension made dynamic and a new output (or optional input) are noted only.
 * *report is set (free it with kiln_gate_report_free) also when an error is returned, unless
 * memory ran out first; checks the error kept from running say "not run". */
kiln_status kiln_gate_run(const kiln_gate_options *opt, kiln_gate_report **report);
void kiln_gate_report_free(kiln_gate_report *r);

/* Whether every check passed or was skipped. */
int kiln_gate_report_passed(const kiln_gate_report *r);
/* The checks, in order (all seven, those not run as skipped); name, status and a one-line detail
 * ("3 of 3 cases match") of check i (0 <= i < count), valid while the report lives. */
int kiln_gate_report_count(const kiln_gate_report *r);
void kiln_gate_report_check(const kiln_gate_report *r, int i, const char **name, kiln_check_status *status,
                                const char **detail);
/* "pass", "fail", "skipped". */
const char *kiln_check_status_name(kiln_check_status s);
/* The report as JSON (malloc'd, *out): {"version_dir":..., "passed":bool, "checks":[{"name":...,
 * "status":..., "detail":..., numbers and lists of the check}], "kiln_version":...}, plus "error"
 * (and "passed": false) when `error` is not NULL: the message of kiln_gate_run's error. r may be
 * NULL (an error before there was a report, e.g. a bad flag): "version_dir" is then null and
 * "checks" empty. */
kiln_status kiln_gate_report_json(const kiln_gate_report *r, const char *error, char **out, size_t *len);

#ifdef __cplusplus
}
#endif
#endif
