/* `kiln data schema infer | validate | stats | diff`: TFDV's jobs on the command line; the work
 * is in the data layer's schema and statistics code, this file parses flags and prints. */
#include "cli/cli.h"
#include "kiln/data.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Writes text (and a newline when `newline`) to path, or to stdout for NULL or "-". */
static kiln_status write_text(const char *path, const char *text, int newline) {
  int to_stdout = !path || strcmp(path, "-") == 0;
  FILE *f = to_stdout ? stdout : fopen(path, "w");
  if (!f) return kiln_error(KILN_IO, "cannot create %s: %s", path, strerror(errno));
  size_t n = strlen(text);
  int bad = fwrite(text, 1, n, f) != n || (newline && fputc('\n', f) == EOF);
  bad |= to_stdout ? fflush(f) != 0 : fclose(f) != 0;
  return bad ? kiln_error(KILN_IO, "writing %s: %s", to_stdout ? "stdout" : path, strerror(errno)) : NULL;
}

static int bad_options(const char *command, long bins, long categories) {
  if (bins < 1 || bins > 100000) {
    fprintf(stderr, "%s: --bins must be in 1..100000, not %ld\n", command, bins);
    return EXIT_USAGE;
  }
  if (categories < 1 || categories > 1000000) {
    fprintf(stderr, "%s: --max-categories must be in 1..1000000, not %ld\n", command, categories);
    return EXIT_USAGE;
  }
  return -1;
}

/* ---------------------------------------------------------------- schema infer */

static int schema_infer(int argc, char **argv) {
  cli_data_source src = {0};
  const char *output = NULL;
  long bins = 10, categories = 1000;
  const cli_flag flags[] = {
      CLI_DATA_SOURCE_FLAGS(src),
      {"output", CLI_STRING, &output, "FILE", "write the schema here (default: stdout)"},
      {"o", CLI_STRING, &output, "FILE", "the same as --output"},
      {"bins", CLI_INT, &bins, "N", "histogram bins in the schema's stats (default 10)"},
      {"max-categories", CLI_INT, &categories, "N",
       "string features with at most N distinct values get a domain (default 1000)"},
      {0},
  };
  const cli_spec spec = {"kiln data schema infer", "[SOURCE] -o schema.json [flags]",
                         "Reads the dataset twice (statistics, then histograms) and writes its schema: each feature's\n"
                         "dtype, shape, missing rate, allowed range, domain and statistics. Edit the file to loosen a\n"
                         "constraint (max_missing_rate, min, max, allow_nan, domain); 'kiln data validate' checks data\n"
                         "against it.",
                         flags, 0, 1};
  cli_list pos;
  int rc = cli_parse(&spec, argc, argv, &pos);
  if (rc >= 0) return rc;
  if ((rc = bad_options(spec.command, bins, categories)) >= 0) {
    cli_list_free(&pos);
    return rc;
  }
  kiln_dataset *d;
  rc = cli_data_open(&src, pos.count ? pos.items[0] : NULL, &d);
  cli_list_free(&pos);
  if (rc >= 0) return rc;
  kiln_stats *stats = NULL;
  kiln_schema *schema = NULL;
  kiln_status s = kiln_stats_compute(d, &(kiln_stats_options){(int)bins, (int)categories}, &stats);
  if (!s) s = kiln_schema_from_stats(stats, &schema);
  char *json = schema ? kiln_schema_to_json(schema) : NULL;
  if (!s && !json) s = kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory writing the schema");
  if (!s) s = write_text(output, json, 0);
  if (!s && output && strcmp(output, "-") != 0)
    fprintf(stderr, "wrote the schema of %d features (%lld records) to %s\n", schema->count,
            (long long)schema->num_records, output);
  free(json);
  kiln_schema_free(schema);
  kiln_stats_free(stats);
  cli_data_summary(d);
  kiln_dataset_free(d);
  return s ? cli_fail(s) : EXIT_OK;
}

int cmd_data_schema(int argc, char **argv) {
  if (argc >= 2 && strcmp(argv[1], "infer") == 0) return schema_infer(argc - 1, argv + 1);
  FILE *f = argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) ? stdout : stderr;
  fprintf(f, "usage: kiln data schema infer [SOURCE] -o schema.json [flags]\n\n"
             "Infers a dataset's schema. Run 'kiln data schema infer --help' for its flags.\n");
  if (f == stdout) return EXIT_OK;
  if (argc >= 2) fprintf(stderr, "kiln data schema: unknown command '%s'\n", argv[1]);
  return EXIT_USAGE;
}

/* ---------------------------------------------------------------- validate */

int cmd_data_validate(int argc, char **argv) {
  cli_data_source src = {0};
  const char *schema_path = NULL, *report = NULL;
  const cli_flag flags[] = {
      CLI_DATA_SOURCE_FLAGS(src),
      {"schema", CLI_STRING, &schema_path, "FILE", "the schema to check against (required)"},
      {"report", CLI_STRING, &report, "FILE", "also write the anomalies as one JSON object"},
      {0},
  };
  const cli_spec spec = {"kiln data validate", "[SOURCE] --schema schema.json [--report report.json] [flags]",
                         "Checks every record against a schema and reports each anomaly (missing_feature,\n"
                         "unexpected_feature, wrong_type, shape_mismatch, out_of_range, new_category, nan) with its\n"
                         "count and up to 5 example records. Exit status 0 when the data conforms, 1 when it does\n"
                         "not, 2 on usage or I/O errors.",
                         flags, 0, 1};
  cli_list pos;
  int rc = cli_parse(&spec, argc, argv, &pos);
  if (rc >= 0) return rc;
  if (!schema_path) {
    cli_list_free(&pos);
    fprintf(stderr, "%s: --schema FILE is required\n", spec.command);
    return EXIT_USAGE;
  }
  kiln_schema *schema;
  kiln_status s = kiln_schema_read(schema_path, &schema);
  if (s) {
    cli_list_free(&pos);
    return cli_fail(s);
  }
  kiln_dataset *d;
  rc = cli_data_open(&src, pos.count ? pos.items[0] : NULL, &d);
  cli_list_free(&pos);
  if (rc >= 0) {
    kiln_schema_free(schema);
    return rc;
  }
  kiln_validation *v = NULL;
  s = kiln_validate(d, schema, &v);
  if (!s && report) {
    char *json = kiln_validation_to_json(v);
    s = json ? write_text(report, json, 1) : kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory writing the report");
    free(json);
  }
  if (!s) {
    for (int i = 0; i < v->count; i++) {
      const kiln_anomaly *a = &v->anomalies[i];
      printf("feature '%s': %s: %s; records", a->feature, kiln_anomaly_kind_name(a->kind), a->description);
      for (int k = 0; k < a->n_examples; k++) printf("%s%lld", k ? ", " : " ", (long long)a->examples[k]);
      printf("%s\n", a->count > a->n_examples ? ", ..." : "");
    }
    if (v->count) printf("%lld records: %d anomal%s\n", (long long)v->records, v->count, v->count == 1 ? "y" : "ies");
    else printf("%lld records: clean (no anomalies)\n", (long long)v->records);
    fflush(stdout);
  }
  rc = s ? -1 : v->count ? EXIT_CHECK_FAILED : EXIT_OK;
  kiln_validation_free(v);
  kiln_schema_free(schema);
  cli_data_summary(d);
  kiln_dataset_free(d);
  return s ? cli_fail(s) : rc;
}

/* ---------------------------------------------------------------- stats */

static void print_feature(const kiln_feature_stats *f, int64_t records, long top) {
  char shape[160] = "?";
  if (f->rank >= 0) {
    size_t n = (size_t)snprintf(shape, sizeof shape, "[");
    for (int d = 0; d < f->rank && n < sizeof shape; d++)
      n += (size_t)snprintf(shape + n, sizeof shape - n, "%s%lld", d ? "," : "", (long long)f->dims[d]);
    if (n < sizeof shape) snprintf(shape + n, sizeof shape - n, "]");
  }
  printf("%s: %s%s %s, present %lld, missing %lld (%.2f%%)\n", f->name, kiln_dtype_name(f->dtype),
         f->dtype_varied ? " (dtype varied)" : "", f->rank >= 0 ? shape : "shape varies", (long long)f->present,
         (long long)f->missing, records ? 100.0 * (double)f->missing / (double)records : 0.0);
  if (f->numeric) {
    printf("  count %lld, nan %lld, inf %lld", (long long)f->count, (long long)f->nan, (long long)f->inf);
    if (f->count) printf(", min %.6g, max %.6g, mean %.6g, std %.6g", f->min, f->max, f->mean, f->std);
    printf("\n");
    if (f->edges) {
      printf("  histogram [%.6g, %.6g]:", f->edges[0], f->edges[f->bins]);
      for (int k = 0; k < f->bins; k++) printf(" %lld", (long long)f->counts[k]);
      printf("\n");
    }
  }
  if (f->categorical) {
    if (f->too_many) {
      printf("  too many distinct values to count\n");
    } else {
      printf("  %d distinct:", f->distinct);
      int n = top < f->distinct ? (int)top : f->distinct;
      for (int k = 0; k < n; k++) printf("%s '%s' %lld", k ? "," : "", f->values[k].value, (long long)f->values[k].count);
      printf("%s\n", n < f->distinct ? ", ..." : "");
    }
  }
}

int cmd_data_stats(int argc, char **argv) {
  cli_data_source src = {0};
  int json = 0;
  long bins = 10, categories = 1000, top = 10;
  const cli_flag flags[] = {
      CLI_DATA_SOURCE_FLAGS(src),
      {"json", CLI_BOOL, &json, NULL, "print one JSON object instead of text"},
      {"bins", CLI_INT, &bins, "N", "histogram bins (default 10)"},
      {"max-categories", CLI_INT, &categories, "N", "distinct values counted per feature (default 1000)"},
      {"top", CLI_INT, &top, "N", "most frequent values shown per feature (default 10; -1 in JSON: all)"},
      {0},
  };
  const cli_spec spec = {"kiln data stats", "[SOURCE] [--json] [--bins N] [flags]",
                         "Per-feature statistics in two passes over the data: dtype, shape, present and missing\n"
                         "counts; for numbers min, max, mean, std (over finite values), NaN and infinity counts and a\n"
                         "histogram; for strings and integers with few distinct values, their counts.",
                         flags, 0, 1};
  cli_list pos;
  int rc = cli_parse(&spec, argc, argv, &pos);
  if (rc >= 0) return rc;
  if ((rc = bad_options(spec.command, bins, categories)) >= 0 || (top < -1 && (rc = EXIT_USAGE) >= 0)) {
    if (top < -1) fprintf(stderr, "%s: --top must be -1 or more\n", spec.command);
    cli_list_free(&pos);
    return rc;
  }
  kiln_dataset *d;
  rc = cli_data_open(&src, pos.count ? pos.items[0] : NULL, &d);
  cli_list_free(&pos);
  if (rc >= 0) return rc;
  kiln_stats *stats = NULL;
  kiln_status s = kiln_stats_compute(d, &(kiln_stats_options){(int)bins, (int)categories}, &stats);
  if (!s && json) {
    char *text = kiln_stats_to_json(stats, top > INT32_MAX ? -1 : (int)top);
    if (!text) s = kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory writing statistics");
    else printf("%s\n", text);
    free(text);
  } else if (!s) {
    printf("%lld records, %d features\n", (long long)stats->num_records, stats->count);
    for (int i = 0; i < stats->count; i++) print_feature(&stats->features[i], stats->num_records, top < 0 ? INT32_MAX : top);
  }
  fflush(stdout);
  kiln_stats_free(stats);
  cli_data_summary(d);
  kiln_dataset_free(d);
  return s ? cli_fail(s) : EXIT_OK;
}

/* ---------------------------------------------------------------- diff */

int cmd_data_diff(int argc, char **argv) {
  cli_data_source src = {0};
  int json = 0;
  double threshold = 0.1;
  long bins = 10;
  const cli_flag flags[] = {
      CLI_DATA_SOURCE_FLAGS(src),
      {"threshold", CLI_DOUBLE, &threshold, "X", "a feature drifted when its distance exceeds X (default 0.1)"},
      {"json", CLI_BOOL, &json, NULL, "print one JSON object instead of text"},
      {"bins", CLI_INT, &bins, "N", "histogram bins for numeric features (default 10)"},
      {0},
  };
  const cli_spec spec = {"kiln data diff", "A B [--threshold X] [--json] [flags]",
                         "Drift between two datasets, per feature: the Jensen-Shannon divergence (base 2) of numeric\n"
                         "features' histograms over common edges, the L-infinity distance of string and bool\n"
                         "features' value frequencies; a feature only one side has counts 1. With --pipeline, A and\n"
                         "B each replace the pipeline's source. Exit status 1 when any feature drifted past the\n"
                         "threshold, 0 otherwise, 2 on errors.",
                         flags, 2, 2};
  cli_list pos;
  int rc = cli_parse(&spec, argc, argv, &pos);
  if (rc >= 0) return rc;
  if (!(threshold >= 0) || (rc = bad_options(spec.command, bins, 1000)) >= 0) {
    if (!(threshold >= 0)) fprintf(stderr, "%s: --threshold must be a number >= 0\n", spec.command);
    cli_list_free(&pos);
    return EXIT_USAGE;
  }
  kiln_dataset *a = NULL, *b = NULL;
  rc = cli_data_open(&src, pos.items[0], &a);
  if (rc < 0) {
    rc = cli_data_open(&src, pos.items[1], &b);
    if (rc >= 0) kiln_dataset_free(a);
  }
  const char *name_a = pos.items[0], *name_b = pos.items[1];
  if (rc >= 0) {
    cli_list_free(&pos);
    return rc;
  }
  kiln_drift *drift = NULL;
  kiln_status s = kiln_drift_compare(a, b, &(kiln_stats_options){.bins = (int)bins}, &drift);
  int drifted = 0;
  if (!s) {
    for (int i = 0; i < drift->count; i++) drifted += drift->features[i].distance > threshold;
    if (json) {
      char *text = kiln_drift_to_json(drift, threshold);
      if (!text) s = kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory writing the drift report");
      else printf("%s\n", text);
      free(text);
    } else {
      for (int i = 0; i < drift->count; i++) {
        const kiln_drift_feature *f = &drift->features[i];
        printf("%s: %s ", f->name, f->method);
        if (isnan(f->distance)) printf("n/a");
        else printf("%.6f", f->distance);
        if (f->distance > threshold) printf(" DRIFT");
        if (f->note) printf(" (%s)", f->note);
        printf("\n");
      }
      printf("%d of %d features drifted past %g between %s and %s\n", drifted, drift->count, threshold, name_a, name_b);
    }
    fflush(stdout);
  }
  cli_list_free(&pos);
  kiln_drift_free(drift);
  kiln_dataset_free(a);
  kiln_dataset_free(b);
  return s ? cli_fail(s) : drifted ? EXIT_CHECK_FAILED : EXIT_OK;
}
