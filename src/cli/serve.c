/* `kiln serve`: the model server, with TF Serving's flags (snake_case, as TF Serving spells them).
 * Loads the models, serves until SIGTERM/SIGINT (then drains), re-reads the config on SIGHUP. */
#include "cli/cli.h"
#include "kiln/serve.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static kiln_status read_config(const char *path, kiln_model_server_config *out) {
  void *text;
  size_t len;
  kiln_status s = kiln_file_read(path, 16 << 20, &text, &len);
  if (s) return s;
  s = kiln_model_server_config_parse(text, len, path, out);
  free(text);
  return s;
}

static kiln_status read_batching(const char *path, kiln_batching_config *out) {
  void *text;
  size_t len;
  kiln_status s = kiln_file_read(path, 1 << 20, &text, &len);
  if (s) return s;
  s = kiln_batching_config_parse(text, len, path, out);
  free(text);
  return s;
}

/* The single model named on the command line, as a one-model config. */
static kiln_status single_model(const char *name, const char *base_path, kiln_model_server_config *out) {
  memset(out, 0, sizeof *out);
  kiln_model_config *m = calloc(1, sizeof *m);
  if (!m) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  out->models = m;
  out->n_models = 1;
  m->name = strdup(name);
  m->base_path = strdup(base_path);
  m->platform = strdup("onnx");
  m->policy = KILN_POLICY_LATEST;
  m->latest_num_versions = 1;
  if (!m->name || !m->base_path || !m->platform) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  return NULL;
}

/* The admin token: the file's content without trailing whitespace. */
static kiln_status read_token(const char *path, char **out) {
  void *text;
  size_t len;
  kiln_status s = kiln_file_read(path, 4096, &text, &len);
  if (s) return kiln_status_prefix(s, "--admin_token_file: ");
  char *t = text;
  while (len > 0 && (t[len - 1] == '\n' || t[len - 1] == '\r' || t[len - 1] == ' ' || t[len - 1] == '\t')) len--;
  t[len] = '\0';
  if (len == 0 || strlen(t) != len) {
    free(t);
    return kiln_error(KILN_INVALID_ARGUMENT, "--admin_token_file %s: the token is empty or holds a NUL byte", path);
  }
  struct stat st;
  if (stat(path, &st) == 0 && (st.st_mode & 077))
    kiln_log(KILN_LOG_WARN, "--admin_token_file %s can be read by other users (chmod 600 it)", path);
  *out = t;
  return NULL;
}

static int parse_level(const char *name, kiln_log_level *out) {
  static const char *names[] = {"debug", "info", "warn", "error"};
  for (int i = 0; i < 4; i++)
    if (strcmp(name, names[i]) == 0) {
      *out = (kiln_log_level)i;
      return 0;
    }
  if (strcmp(name, "warning") == 0) {
    *out = KILN_LOG_WARN;
    return 0;
  }
  return -1;
}

/* Serves until SIGTERM or SIGINT; SIGHUP re-reads the config file. */
static int serve_until_signalled(kiln_server *server, const char *config_file, double drain_timeout) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  for (;;) {
    int sig;
    if (sigwait(&set, &sig) != 0) continue;
    if (sig == SIGHUP) {
      if (!config_file) {
        kiln_log(KILN_LOG_WARN, "SIGHUP: no --model_config_file to re-read");
        continue;
      }
      kiln_model_server_config cfg;
      kiln_status s = read_config(config_file, &cfg);
      if (!s) s = kiln_server_reload(server, &cfg);
      kiln_model_server_config_free(&cfg);
      if (s) kiln_log(KILN_LOG_ERROR, "SIGHUP: config not reloaded, the old one stays: %s", kiln_status_message(s));
      else kiln_log(KILN_LOG_INFO, "SIGHUP: reloaded %s", config_file);
      kiln_status_free(s);
      continue;
    }
    kiln_log(KILN_LOG_INFO, "%s: draining (up to %.1f s)", sig == SIGTERM ? "SIGTERM" : "SIGINT", drain_timeout);
    int64_t left = kiln_server_drain(server, drain_timeout);
    if (left) {
      kiln_log(KILN_LOG_WARN, "drain timeout: %lld requests still in flight; exiting", (long long)left);
      return EXIT_OK;
    }
    kiln_server_free(server);
    kiln_log(KILN_LOG_INFO, "drained; exiting");
    return EXIT_OK;
  }
}

int cmd_serve(int argc, char **argv) {
  const char *model_name = NULL, *base_path = NULL, *config_file = NULL, *batching_file = NULL, *host = NULL;
  const char *log_level = NULL;
  long port = 8500, rest_port = 8501, rest_threads = 0, timeout_ms = 30000, intra = 0, inter = 0;
  long max_body = 64 << 20, max_header = 64 << 10, max_connections = 10000, warmup_runs = 3;
  long grpc_threads = 0, grpc_max_message = 0, grpc_streams = 1000;
  double poll = 1, idle_timeout = 60, read_timeout = 30, drain_timeout = 30;
  int enable_batching = 0, access_log = 0, require_manifest = 0;
  long canary_percent = 10, canary_min = 100, canary_promote = 0;
  double canary_error_rate = 0.01, canary_latency_ratio = 2;
  const char *token_file = NULL, *audit_log = NULL;
  const char *otlp_endpoint = NULL;
  double trace_ratio = -1; /* -1: not given (1 with --otlp_endpoint) */
  long otlp_queue = 4096;
  const char *device = NULL;
  const cli_flag flags[] = {
      {"model_name", CLI_STRING, &model_name, "NAME", "name of the one model to serve (with --model_base_path)"},
      {"model_base_path", CLI_STRING, &base_path, "DIR", "its repository: DIR/<version>/model.onnx"},
      {"model_config_file", CLI_STRING, &config_file, "FILE", "models to serve, TF Serving's ModelServerConfig text format (re-read on SIGHUP)"},
      {"rest_api_port", CLI_INT, &rest_port, "PORT", "HTTP port of the REST APIs (TF Serving and KServe V2); 0: any free port (default 8501)"},
      {"port", CLI_INT, &port, "PORT", "gRPC port of TF Serving's PredictionService/ModelService and KServe V2's GRPCInferenceService; 0: any free port (default 8500)"},
      {"grpc_max_threads", CLI_INT, &grpc_threads, "N", "gRPC I/O threads (default: the CPU count)"},
      {"grpc_max_message_bytes", CLI_INT, &grpc_max_message, "N", "largest gRPC request message accepted (default: --max_body_bytes; beyond: RESOURCE_EXHAUSTED)"},
      {"grpc_max_concurrent_streams", CLI_INT, &grpc_streams, "N", "calls open at once on one gRPC connection (default 1000)"},
      {"host", CLI_STRING, &host, "ADDR", "address to listen on (default 0.0.0.0; ::1 or :: for IPv6)"},
      {"file_system_poll_wait_seconds", CLI_DOUBLE, &poll, "S", "how often base paths are scanned for new versions; 0: never (default 1)"},
      {"enable_batching", CLI_BOOL, &enable_batching, NULL, "merge concurrent requests into batches (models with a free first dimension)"},
      {"batching_parameters_file", CLI_STRING, &batching_file, "FILE", "TF Serving's BatchingParameters text format"},
      {"rest_api_num_threads", CLI_INT, &rest_threads, "N", "HTTP I/O threads (default: the CPU count)"},
      {"rest_api_timeout_in_ms", CLI_INT, &timeout_ms, "MS", "deadline of an inference request, queueing included (default 30000)"},
      {"tensorflow_inter_op_parallelism", CLI_INT, &inter, "N", "inference threads per model version (default: the CPU count)"},
      {"tensorflow_intra_op_parallelism", CLI_INT, &intra, "N", "threads one model run uses (default 1)"},
      {"max_body_bytes", CLI_INT, &max_body, "N", "largest request body accepted (default 64 MiB; beyond: 413)"},
      {"max_header_bytes", CLI_INT, &max_header, "N", "largest request head accepted (default 64 KiB; beyond: 431)"},
      {"max_connections", CLI_INT, &max_connections, "N", "open connections at most (default 10000; beyond: 503)"},
      {"idle_timeout_seconds", CLI_DOUBLE, &idle_timeout, "S", "closes keep-alive connections idle this long (default 60)"},
      {"read_timeout_seconds", CLI_DOUBLE, &read_timeout, "S", "a client must send a whole request within this (default 30; beyond: 408)"},
      {"drain_timeout_seconds", CLI_DOUBLE, &drain_timeout, "S", "on SIGTERM/SIGINT, how long in-flight requests may take (default 30)"},
      {"warmup_runs", CLI_INT, &warmup_runs, "N", "runs per warm-up input before a version is served (default 3)"},
      {"log_level", CLI_STRING, &log_level, "LEVEL", "debug, info, warn or error (default info)"},
      {"access_log", CLI_BOOL, &access_log, NULL, "log one JSON line per request"},
      {"require_manifest", CLI_BOOL, &require_manifest, NULL, "refuse versions without manifest.json (with one, the files are always checked)"},
      {"canary_percent", CLI_INT, &canary_percent, "P", "share of requests sent to a model's `canary` version, sticky per X-Request-Id (default 10)"},
      {"canary_min_requests", CLI_INT, &canary_min, "N", "canary requests before its health is judged (default 100)"},
      {"canary_max_error_rate", CLI_DOUBLE, &canary_error_rate, "R", "failure rate (errors, NaN/Inf) the canary may have above stable's (default 0.01)"},
      {"canary_max_latency_ratio", CLI_DOUBLE, &canary_latency_ratio, "X", "canary p99 latency allowed, as a multiple of stable's, plus 1 ms (default 2)"},
      {"canary_promote_requests", CLI_INT, &canary_promote, "N", "label a canary stable once it answered N requests healthily; 0: an operator promotes (default)"},
      {"admin_token_file", CLI_STRING, &token_file, "FILE", "enables POST /v1/admin/...: the bearer token clients must send"},
      {"admin_audit_log", CLI_STRING, &audit_log, "FILE", "append the admin API's audit entries (JSON lines) to FILE (default: the log)"},
      {"otlp_endpoint", CLI_STRING, &otlp_endpoint, "URL", "export trace spans as OTLP/HTTP JSON to URL (a base URL gets /v1/traces), e.g. http://jaeger:4318"},
      {"trace_sampling_ratio", CLI_DOUBLE, &trace_ratio, "R", "share of new traces recorded, 0-1; a traceparent's sampled flag decides for its trace (default 1)"},
      {"otlp_max_queue_spans", CLI_INT, &otlp_queue, "N", "spans waiting for export at most; beyond, spans are dropped and counted (default 4096)"},
      CLI_DEVICE_FLAG(device),
      {0},
  };
  const cli_spec spec = {
      "kiln serve", "--model_name=NAME --model_base_path=DIR | --model_config_file=FILE [flags]",
      "Serves ONNX models over TF Serving's REST API (/v1/models/...) and KServe V2 (/v2/...) on\n"
      "--rest_api_port, the same two APIs over gRPC on --port, with Prometheus metrics at /metrics.\n"
      "Versions are folders DIR/<n>/model.onnx, checked against their manifest.json, loaded, warmed up\n"
      "(DIR/<n>/warmup/*.npy when present) and swapped in as they appear; DIR/labels.json (kiln registry label)\n"
      "names the stable and canary versions, and a canary that errs, returns NaN/Inf or is slow is rolled\n"
      "back automatically (README: Safe rollout).",
      flags, 0, 0};
  cli_list args;
  int rc = cli_parse(&spec, argc, argv, &args);
  if (rc >= 0) return rc;
  cli_list_free(&args);
  if ((rc = cli_device_require("kiln serve", device)) >= 0) return rc;
  kiln_log_level level;
  if (log_level && parse_level(log_level, &level) != 0) {
    fprintf(stderr, "kiln serve: --log_level '%s' is not one of debug, info, warn, error\n", log_level);
    return EXIT_USAGE;
  }
  if (log_level) kiln_log_set_level(level);
  if (!config_file == !(model_name && base_path) || (config_file && (model_name || base_path))) {
    fprintf(stderr, "kiln serve: give either --model_name and --model_base_path, or --model_config_file\n"
                    "(run 'kiln serve --help' for usage)\n");
    return EXIT_USAGE;
  }
  if (rest_port < 0 || rest_port > 65535 || port < 0 || port > 65535 || grpc_threads < 0 || grpc_max_message < 0 ||
      grpc_streams < 1 || grpc_streams > 1000000 || timeout_ms <= 0 || max_body <= 0 || max_header <= 0 || max_connections <= 0 ||
      idle_timeout <= 0 || read_timeout <= 0 || drain_timeout < 0 || poll < 0) {
    fprintf(stderr, "kiln serve: ports must be 0-65535, limits and timeouts positive\n");
    return EXIT_USAGE;
  }
  if (canary_percent < 0 || canary_percent > 100 || canary_min < 0 || canary_promote < 0 || canary_error_rate < 0 ||
      canary_error_rate > 1 || canary_latency_ratio < 0) {
    fprintf(stderr, "kiln serve: --canary_percent must be 0-100, the other --canary_ flags non-negative (error rate at most 1)\n");
    return EXIT_USAGE;
  }
  if (audit_log && !token_file) {
    fprintf(stderr, "kiln serve: --admin_audit_log needs --admin_token_file (without a token the admin API is disabled)\n");
    return EXIT_USAGE;
  }
  if (trace_ratio != -1 && !(trace_ratio >= 0 && trace_ratio <= 1)) {
    fprintf(stderr, "kiln serve: --trace_sampling_ratio must be between 0 and 1, got %g\n", trace_ratio);
    return EXIT_USAGE;
  }
  if (otlp_queue < 1 || otlp_queue > (1 << 20)) {
    fprintf(stderr, "kiln serve: --otlp_max_queue_spans must be 1-1048576, got %ld\n", otlp_queue);
    return EXIT_USAGE;
  }
  if (!otlp_endpoint && trace_ratio != -1) kiln_log(KILN_LOG_WARN, "--trace_sampling_ratio given without --otlp_endpoint: no spans are exported");
  if (batching_file && !enable_batching) kiln_log(KILN_LOG_WARN, "--batching_parameters_file given without --enable_batching: batching stays off");

  kiln_model_server_config cfg;
  kiln_batching_config batching;
  kiln_batching_config_default(&batching);
  char *token = NULL;
  kiln_status s = config_file ? read_config(config_file, &cfg) : single_model(model_name, base_path, &cfg);
  if (!s && batching_file) s = read_batching(batching_file, &batching);
  if (!s && token_file) s = read_token(token_file, &token);
  if (s) {
    kiln_model_server_config_free(&cfg);
    kiln_batching_config_free(&batching);
    return cli_fail(s);
  }
  /* every thread started from here on leaves these signals to sigwait */
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set, NULL);
  signal(SIGPIPE, SIG_IGN);
  kiln_server_options opt = {
      .models = &cfg,
      .host = host,
      .rest_port = (int)rest_port,
      .grpc_port = (int)port,
      .grpc_threads = (int)grpc_threads,
      .grpc_max_message_bytes = (size_t)grpc_max_message,
      .grpc_max_concurrent_streams = (int)grpc_streams,
      .enable_batching = enable_batching,
      .batching = &batching,
      .poll_wait_seconds = poll,
      .rest_threads = (int)rest_threads,
      .timeout_ms = (int)timeout_ms,
      .max_body_bytes = (size_t)max_body,
      .max_header_bytes = (size_t)max_header,
      .max_connections = (int)max_connections,
      .idle_timeout_ms = (int)(idle_timeout * 1000),
      .read_timeout_ms = (int)(read_timeout * 1000),
      .inter_op_threads = (int)inter,
      .intra_op_threads = (int)intra,
      .warmup_runs = (int)warmup_runs,
      .access_log = access_log,
      .require_manifest = require_manifest,
      .canary = {.percent = (int)canary_percent,
                 .min_requests = canary_min,
                 .max_error_rate = canary_error_rate,
                 .max_latency_ratio = canary_latency_ratio,
                 .promote_requests = canary_promote},
      .admin_token = token,
      .admin_audit_log = audit_log,
      .otlp_endpoint = otlp_endpoint,
      .trace_sampling_ratio = trace_ratio == -1 ? 1 : trace_ratio,
      .otlp_max_queue_spans = (int)otlp_queue,
  };
  kiln_server *server;
  s = kiln_server_start(&opt, &server);
  if (token) memset(token, 0, strlen(token));
  free(token);
  kiln_model_server_config_free(&cfg);
  kiln_batching_config_free(&batching);
  if (s) return cli_fail(s);
  return serve_until_signalled(server, config_file, drain_timeout);
}
