/* `kiln bench MODEL`: latency percentiles and throughput on synthetic inputs. */
#include "cli/cli.h"
#include "core/quantile.h"
#include "kiln/graph.h"

#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

/* --shape NAME=d0,d1,... overrides for unknown dimensions. */
static kiln_status parse_shapes(const kiln_model *m, const cli_list *specs, int64_t *dims /* [inputs][KILN_MAX_RANK] */) {
  for (int k = 0; k < specs->count; k++) {
    const char *spec = specs->items[k], *eq = strchr(spec, '=');
    if (!eq) return kiln_error(KILN_INVALID_ARGUMENT, "--shape %s: expected NAME=d0,d1,...", spec);
    char name[512];
    snprintf(name, sizeof name, "%.*s", (int)(eq - spec), spec);
    int idx = kiln_model_input_index(m, name);
    if (idx < 0) return kiln_error(KILN_INVALID_ARGUMENT, "--shape: the model has no input named '%s'", name);
    const kiln_value_info *info = kiln_model_input(m, idx);
    int d = 0;
    for (const char *p = eq + 1; *p; d++) {
      char *end;
      long long v = strtoll(p, &end, 10);
      if (end == p || v < 0 || d >= KILN_MAX_RANK || (*end && *end != ','))
        return kiln_error(KILN_INVALID_ARGUMENT, "--shape %s: dimensions must be non-negative integers separated by commas", spec);
      dims[idx * KILN_MAX_RANK + d] = v;
      p = *end ? end + 1 : end;
    }
    if (info->rank >= 0 && d != info->rank)
      return kiln_error(KILN_INVALID_ARGUMENT, "--shape %s: input '%s' has rank %d", spec, name, info->rank);
  }
  return NULL;
}

static int by_time(const void *a, const void *b) {
  double x = ((const kiln_node_profile *)a)->total_us, y = ((const kiln_node_profile *)b)->total_us;
  return x < y ? 1 : x > y ? -1 : 0;
}

/* Per operator type, then the 15 slowest nodes; times per run (warm-up included in the mean). */
static void print_profile(const kiln_session *session) {
  int n = kiln_session_profile(session, NULL, 0);
  kiln_node_profile *nodes = calloc((size_t)n + 1, sizeof *nodes), *ops = calloc((size_t)n + 1, sizeof *ops);
  if (!nodes || !ops) {
    free(nodes);
    free(ops);
    return;
  }
  kiln_session_profile(session, nodes, n);
  int n_ops = 0;
  double total = 0;
  for (int i = 0; i < n; i++) {
    int k = 0;
    while (k < n_ops && strcmp(ops[k].op, nodes[i].op) != 0) k++;
    if (k == n_ops) ops[n_ops++] = (kiln_node_profile){.op = nodes[i].op};
    ops[k].calls++;
    ops[k].total_us += nodes[i].total_us;
    total += nodes[i].total_us;
  }
  qsort(ops, (size_t)n_ops, sizeof *ops, by_time);
  qsort(nodes, (size_t)n, sizeof *nodes, by_time);
  int64_t runs = n ? nodes[0].calls : 1;
  fprintf(stderr, "\nper operator (mean per run, %lld runs):\n", (long long)runs);
  for (int i = 0; i < n_ops; i++)
    fprintf(stderr, "  %-24s %4lld nodes %10.1f us %5.1f %%\n", ops[i].op, (long long)ops[i].calls,
            ops[i].total_us / (double)runs, 100 * ops[i].total_us / (total > 0 ? total : 1));
  fprintf(stderr, "slowest nodes:\n");
  for (int i = 0; i < n && i < 15; i++)
    fprintf(stderr, "  node %-5d %-20s %-30s %10.1f us\n", nodes[i].index, nodes[i].op, nodes[i].name,
            nodes[i].total_us / (double)(nodes[i].calls ? nodes[i].calls : 1));
  free(nodes);
  free(ops);
}

int cmd_bench(int argc, char **argv) {
  long batch = 1, threads = 0, iters = 100, warmup = -1;
  double max_seconds = 60;
  int json = 0, profile = 0;
  cli_list shapes = {0};
  const char *device = NULL;
  const cli_flag flags[] = {
      {"batch", CLI_INT, &batch, "N", "batch size: the value of each input's symbolic first dimension (default 1)"},
      {"threads", CLI_INT, &threads, "T", "threads (default $KILN_NUM_THREADS, else the CPU count)"},
      {"iters", CLI_INT, &iters, "K", "timed runs (default 100)"},
      {"warmup", CLI_INT, &warmup, "W", "untimed runs first (default K/10, between 2 and 10)"},
      {"max-seconds", CLI_DOUBLE, &max_seconds, "S", "stop timing after S seconds even if fewer than K runs were made (default 60)"},
      {"shape", CLI_LIST, &shapes, "NAME=D0,D1,..", "the full shape of an input with other symbolic dimensions"},
      {"json", CLI_BOOL, &json, NULL, "print exactly one JSON object on stdout"},
      {"profile", CLI_BOOL, &profile, NULL, "also print where the time goes, per operator and per node (stderr)"},
      CLI_DEVICE_FLAG(device),
      {0},
  };
  const cli_spec spec = {"kiln bench", "MODEL [--batch N] [--threads T] [--iters K] [--json]",
                         "Runs the model on synthetic inputs of its declared shape and prints latency percentiles\n"
                         "(p50/p90/p99) and throughput in samples per second (runs x batch / time).",
                         flags, 1, 1};
  cli_list args;
  int rc = cli_parse(&spec, argc, argv, &args);
  if (rc >= 0) {
    cli_list_free(&shapes);
    return rc;
  }
  const char *path = args.items[0];
  cli_list_free(&args);
  if (batch < 1 || iters < 1 || threads < 0 || max_seconds <= 0) {
    cli_list_free(&shapes);
    fprintf(stderr, "kiln bench: --batch and --iters must be at least 1, --threads non-negative\n");
    return EXIT_USAGE;
  }
  if ((rc = cli_device_require("kiln bench", device)) >= 0) {
    cli_list_free(&shapes);
    return rc;
  }
  if (warmup < 0) warmup = iters / 10 < 2 ? 2 : iters / 10 > 10 ? 10 : iters / 10;

  kiln_model *m = NULL;
  kiln_session *session = NULL;
  kiln_pool *pool = NULL;
  kiln_tensor *inputs = NULL;
  const kiln_tensor **in_ptrs = NULL, **outputs = NULL;
  int64_t *dims = NULL;
  double *lat = NULL;
  int n_in = 0;
  double t0 = now_us();
  kiln_status s = kiln_model_load(path, NULL, &m);
  double load_ms = (now_us() - t0) / 1e3;
  if (!s) {
    n_in = kiln_model_input_count(m);
    inputs = calloc((size_t)n_in + 1, sizeof *inputs);
    in_ptrs = calloc((size_t)n_in + 1, sizeof *in_ptrs);
    outputs = calloc((size_t)kiln_model_output_count(m) + 1, sizeof *outputs);
    dims = malloc(((size_t)n_in + 1) * KILN_MAX_RANK * sizeof *dims);
    lat = malloc((size_t)iters * sizeof *lat);
    if (!inputs || !in_ptrs || !outputs || !dims || !lat) s = kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  }
  if (!s) {
    for (int i = 0; i < (n_in + 1) * KILN_MAX_RANK; i++) dims[i] = -1;
    s = parse_shapes(m, &shapes, dims);
  }
  for (int i = 0; !s && i < n_in; i++) {
    s = kiln_tensor_synthetic(kiln_model_input(m, i), batch, dims + i * KILN_MAX_RANK, (uint64_t)i + 1, &inputs[i]);
    in_ptrs[i] = &inputs[i];
  }
  if (!s) s = kiln_pool_create(threads > 0 ? (int)threads : kiln_default_threads(), &pool);
  kiln_session_options so = {.pool = pool, .profile = profile};
  if (!s) s = kiln_session_create(m, &so, &session);
  double first_us = 0;
  for (long i = 0; !s && i < warmup; i++) {
    double a = now_us();
    s = kiln_session_run_tensors(session, in_ptrs, outputs);
    if (i == 0) first_us = now_us() - a;
  }
  long done = 0;
  double start = now_us();
  for (; !s && done < iters; done++) {
    double a = now_us();
    s = kiln_session_run_tensors(session, in_ptrs, outputs);
    lat[done] = now_us() - a;
    if (now_us() - start > max_seconds * 1e6) {
      done++;
      break;
    }
  }
  double total_us = now_us() - start;
  if (!s) {
    kx_sort_doubles(lat, (size_t)done);
    double p50 = kx_quantile_sorted(lat, (size_t)done, 0.50), p90 = kx_quantile_sorted(lat, (size_t)done, 0.90),
           p99 = kx_quantile_sorted(lat, (size_t)done, 0.99);
    double throughput = (double)batch * (double)done / (total_us / 1e6);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    if (json) {
      printf("{\"p50_us\":%.1f,\"p90_us\":%.1f,\"p99_us\":%.1f,\"throughput_per_s\":%.1f,\"batch\":%ld,\"threads\":%d,"
             "\"iters\":%ld,\"load_ms\":%.2f,\"first_run_us\":%.1f,\"peak_rss_kb\":%ld}\n",
             p50, p90, p99, throughput, batch, kiln_pool_threads(pool), done, load_ms, first_us, ru.ru_maxrss);
    } else {
      printf("model:       %s\nbatch:       %ld\nthreads:     %d\nruns:        %ld (after %ld warm-up)\n", path, batch,
             kiln_pool_threads(pool), done, warmup);
      printf("latency:     p50 %.1f us, p90 %.1f us, p99 %.1f us\nthroughput:  %.1f samples/s\n", p50, p90, p99, throughput);
      printf("load:        %.2f ms (first run %.1f us)\npeak RSS:    %.1f MB\n", load_ms, first_us, (double)ru.ru_maxrss / 1024);
    }
  }
  if (!s && profile) print_profile(session);
  for (int i = 0; inputs && i < n_in; i++) kiln_tensor_release(&inputs[i]);
  free(inputs);
  free(in_ptrs);
  free(outputs);
  free(dims);
  free(lat);
  kiln_session_free(session);
  kiln_pool_free(pool);
  kiln_model_free(m);
  cli_list_free(&shapes);
  return s ? cli_fail(s) : EXIT_OK;
}
