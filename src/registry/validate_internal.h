/* The validation gate's pieces (validate*.c): the report being built and the checks that need more
 * than a few lines (signature, golden outputs, latency). Internal to src/registry. */
#ifndef KILN_REGISTRY_VALIDATE_INTERNAL_H
#define KILN_REGISTRY_VALIDATE_INTERNAL_H

#include "kiln/graph.h"
#include "kiln/registry.h"

#include <cjson/cJSON.h>

/* One check of the report. */
typedef struct kx_check {
  const char *name; /* a static string: "load", "signature", ... */
  kiln_check_status status;
  char *detail;
  cJSON *extra; /* an object: the check's numbers and lists, copied into its JSON entry */
} kx_check;

/* Sets a check's status and its one-line detail (printf-style). A detail that cannot be allocated
 * leaves the previous one (or NULL, printed as ""). */
void kx_check_set(kx_check *c, kiln_check_status status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* What comparing two signatures found: human-readable lines, e.g. "input 'x': dtype float -> int64". */
typedef struct kx_signature_diff {
  cJSON *breaking; /* array of strings */
  cJSON *notes;    /* array of strings: compatible changes */
} kx_signature_diff;

/* Compares the inputs and outputs of `cand` with those of `prev` by name (the rules are in
 * registry.h at kiln_gate_run). The arrays are created here; the caller deletes them. */
/* Whether path is a folder / a regular file (following links). */
int kx_is_dir(const char *path);
int kx_is_file(const char *path);

kiln_status kx_validate_signature(const kiln_model *prev, const kiln_model *cand, kx_signature_diff *out);

/* Runs every golden case of `dir` through `session` (a session of `m`) and sets `c`: pass when
 * every output matches within rtol/atol, fail with the first mismatch of each failing case (in
 * c->extra's "mismatches"). An error means the golden data could not be read (a missing folder or
 * file, a file that does not parse, no cases): the gate's input, not the model, is wrong. */
kiln_status kx_validate_golden(const kiln_model *m, kiln_session *session, const char *dir, double rtol, double atol,
                               kx_check *c);

/* Latencies of batch-1 runs, in milliseconds. */
typedef struct kx_latency {
  double p50_ms, p99_ms, mean_ms;
  int runs; /* timed runs (fewer than asked when the time bound cut them short) */
} kx_latency;

/* Times `n` models (1, or 2 with a baseline) on synthetic batch-1 inputs: 20 warm-up runs each,
 * then up to `runs` timed runs each, alternating between the models run by run (and which goes
 * first), stopped after 10 s. Percentiles are nearest-rank. `threads` <= 1 runs on the caller. An
 * error (a model with non-tensor inputs, a failing run) names the model's folder. */
kiln_status kx_validate_latency(const kiln_model *const *models, const char *const *names, int n, int runs, int threads,
                                kx_latency *out);

#endif
