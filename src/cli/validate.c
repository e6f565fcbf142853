/* `kiln validate VERSION_DIR [...]`: the CI gate before a version is labelled canary or stable.
 * Thin: flags to kiln_gate_run's options, kiln eval's core as its accuracy function, the report
 * on stderr (one line per check) and as JSON in --report. */
#include "cli/cli.h"
#include "kiln/data.h"
#include "kiln/registry.h"

#include <stdio.h>
#include <stdlib.h>

#define MAX_LATENCY_RUNS 100000

/* What the accuracy function needs: the dataset, read again (reset) for each model. */
typedef struct eval_ctx {
  kiln_dataset *data;
  const char *label;
  kiln_pool *pool;
} eval_ctx;

static kiln_status accuracy(void *ctx, const char *version_dir, double *out, int64_t *records) {
  eval_ctx *e = ctx;
  cli_eval_result r;
  kiln_status s = kiln_dataset_reset(e->data, 0);
  if (!s) s = cli_eval_model(version_dir, e->data, e->label, e->pool, &r);
  if (s) return s;
  *out = r.accuracy;
  *records = r.records;
  return NULL;
}

/* Writes the JSON report to `path` (when given); an error with `error` in it. 0, or EXIT_USAGE
 * after printing why it could not be written. */
static int write_report(const char *path, const kiln_gate_report *r, const char *error) {
  if (!path) return 0;
  char *text = NULL;
  size_t len = 0;
  kiln_status s = kiln_gate_report_json(r, error, &text, &len);
  if (!s) s = kiln_file_write_atomic(path, text, len);
  free(text);
  if (!s) return 0;
  cli_fail(kiln_status_prefix(s, "--report %s: ", path));
  return EXIT_USAGE;
}

/* A usage or I/O error: printed, written into the report, exit 2. */
static int fail_usage(const char *report_path, const kiln_gate_report *r, kiln_status s) {
  fprintf(stderr, "kiln validate: %s\n", kiln_status_message(s));
  write_report(report_path, r, kiln_status_message(s));
  kiln_status_free(s);
  return EXIT_USAGE;
}

/* One line per check; after an error only the checks that ran (the others say "not run"). */
static void print_checks(const kiln_gate_report *r, int after_error) {
  static const char *const words[] = {"PASS", "FAIL", "SKIP"};
  for (int i = 0; i < kiln_gate_report_count(r); i++) {
    const char *name, *detail;
    kiln_check_status st;
    kiln_gate_report_check(r, i, &name, &st, &detail);
    if (!after_error || st != KILN_CHECK_SKIPPED) fprintf(stderr, "%s %s: %s\n", words[st], name, detail);
  }
}

int cmd_validate(int argc, char **argv) {
  cli_data_source src = {0};
  const char *golden = NULL, *eval = NULL, *baseline = NULL, *report = NULL, *label = "label";
  double rtol = 1e-4, atol = 1e-5, min_accuracy = -1, max_p99 = 0, max_regression = -1;
  long latency_runs = 200, batch = 256;
  const char *device = NULL;
  const cli_flag flags[] = {
      {"golden", CLI_STRING, &golden, "DIR", "golden cases: sub-folders of input_K / output_K .npy or .pb files"},
      {"rtol", CLI_DOUBLE, &rtol, "X", "golden relative tolerance (default 1e-4)"},
      {"atol", CLI_DOUBLE, &atol, "X", "golden absolute tolerance (default 1e-5)"},
      {"eval", CLI_STRING, &eval, "DATA", "labelled dataset for the accuracy check (as kiln eval reads it)"},
      {"min-accuracy", CLI_DOUBLE, &min_accuracy, "X", "fail when the accuracy on --eval is below X (0..1)"},
      {"label", CLI_STRING, &label, "NAME", "the feature holding each record's class (default label)"},
      {"batch-size", CLI_INT, &batch, "N", "records per model run in the evaluation (default 256)"},
      CLI_DATA_SOURCE_FLAGS(src),
      {"max-latency-p99-ms", CLI_DOUBLE, &max_p99, "Y", "fail when the batch-1 p99 latency is above Y ms"},
      {"latency-runs", CLI_INT, &latency_runs, "N", "timed batch-1 runs after 20 warm-up runs, at most 10 s (default 200; 0: none)"},
      {"baseline", CLI_STRING, &baseline, "DIR", "version folder to compare with (signature, accuracy, latency)"},
      {"max-regression", CLI_DOUBLE, &max_regression, "Z", "allowed regression against --baseline, a fraction (default 0.05)"},
      {"report", CLI_STRING, &report, "FILE", "write the JSON report there (atomically), pass or fail"},
      CLI_DEVICE_FLAG(device),
      {0},
  };
  const cli_spec spec = {
      "kiln validate", "VERSION_DIR [flags]",
      "The gate CI runs before labelling a version: loads VERSION_DIR/model.onnx (and preprocess.json), verifies\n"
      "manifest.json when present, compares the signature with the previous version's (or --baseline's), runs\n"
      "the --golden cases, measures accuracy on --eval DATA and batch-1 latency on synthetic inputs, and with\n"
      "--baseline requires accuracy >= baseline * (1 - Z) and p99 <= baseline p99 * (1 + Z) + 0.05 ms, both\n"
      "models timed in the same interleaved loop. --threads also sets the threads of a timed run (default 1).\n"
      "Exit 0: every check passed or was skipped; 1: a check failed; 2: a usage or I/O error.",
      flags, 1, 1};
  cli_list args;
  int rc = cli_parse(&spec, argc, argv, &args);
  if (rc >= 0) {
    if (rc == EXIT_USAGE) write_report(report, NULL, "bad command line (see kiln validate --help)");
    return rc;
  }
  const char *version_dir = args.items[0];
  cli_list_free(&args); /* version_dir points into argv */
  kiln_status device_error = cli_device_check(device);
  if (device_error) return fail_usage(report, NULL, device_error);
  if (batch < 1 || batch > 1 << 16)
    return fail_usage(report, NULL, kiln_error(KILN_INVALID_ARGUMENT, "--batch-size must be in 1..65536"));
  if (latency_runs < 0 || latency_runs > MAX_LATENCY_RUNS)
    return fail_usage(report, NULL, kiln_error(KILN_INVALID_ARGUMENT, "--latency-runs must be in 0..%d", MAX_LATENCY_RUNS));
  if (src.threads < 0 || src.threads > 1024)
    return fail_usage(report, NULL, kiln_error(KILN_INVALID_ARGUMENT, "--threads must be in 0..1024"));
  if (max_regression >= 0 && !baseline)
    return fail_usage(report, NULL, kiln_error(KILN_INVALID_ARGUMENT, "--max-regression needs --baseline"));
  if ((src.on_error || src.quarantine) && !eval && !src.pipeline)
    return fail_usage(report, NULL, kiln_error(KILN_INVALID_ARGUMENT, "--on-error and --quarantine need --eval"));

  eval_ctx e = {.label = label};
  kiln_status s = NULL;
  if (eval || src.pipeline) {
    src.batch = batch;
    s = kiln_pool_create((int)src.threads, &e.pool);
    if (!s) s = cli_data_open_status(&src, eval, &e.data);
    if (s) s = kiln_status_prefix(s, "--eval: ");
  }
  kiln_gate_options o = {
      .version_dir = version_dir,
      .baseline_dir = baseline,
      .golden_dir = golden,
      .rtol = rtol,
      .atol = atol,
      .accuracy = e.data ? accuracy : NULL,
      .accuracy_ctx = &e,
      .min_accuracy = min_accuracy,
      .latency_runs = (int)latency_runs,
      .max_latency_p99_ms = max_p99,
      .threads = (int)src.threads,
      .max_regression = max_regression >= 0 ? max_regression : 0.05,
  };
  kiln_gate_report *r = NULL;
  if (!s) s = kiln_gate_run(&o, &r);
  if (r) print_checks(r, s != NULL);
  if (e.data && !s) cli_data_summary(e.data);
  kiln_dataset_free(e.data);
  kiln_pool_free(e.pool);
  if (s) {
    rc = fail_usage(report, r, s);
  } else {
    int passed = kiln_gate_report_passed(r);
    fprintf(stderr, "%s: %s\n", version_dir, passed ? "validation passed" : "validation FAILED");
    rc = write_report(report, r, NULL);
    if (!rc) rc = passed ? EXIT_OK : EXIT_CHECK_FAILED;
  }
  kiln_gate_report_free(r);
  return rc;
}
