/* kiln serve: the model server — TF Serving's configuration formats, the model manager, dynamic
 * batching and the REST front ends (TF Serving REST and KServe V2), on kiln net. */
#ifndef KILN_SERVE_H
#define KILN_SERVE_H

#include "kiln/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- configuration files */

typedef enum kiln_version_policy {
  KILN_POLICY_LATEST = 0, /* the newest latest_num_versions versions (TF Serving's default, 1) */
  KILN_POLICY_ALL = 1,
  KILN_POLICY_SPECIFIC = 2,
} kiln_version_policy;

typedef struct kiln_version_label {
  char *label;
  int64_t version;
} kiln_version_label;

typedef struct kiln_model_config {
  char *name;
  char *base_path;
  char *platform; /* model_platform; "" when absent */
  kiln_version_policy policy;
  int64_t latest_num_versions; /* KILN_POLICY_LATEST; 1 when not given */
  int64_t *versions;           /* KILN_POLICY_SPECIFIC */
  int n_versions;
  kiln_version_label *labels;
  int n_labels;
} kiln_model_config;

typedef struct kiln_model_server_config {
  kiln_model_config *models;
  int n_models;
} kiln_model_server_config;

/* Parses TF Serving's ModelServerConfig in protobuf text format:
 *   model_config_list { config { name: "m" base_path: "/models/m" model_platform: "onnx"
 *     model_version_policy { specific { versions: 1 versions: 2 } }
 *     version_labels { key: "stable" value: 1 } } }
 * Text format as protobuf writes it: # comments, ':' optional before a message, {} or <>, optional
 * ',' or ';' after a field, '...' or "..." strings with C escapes (adjacent ones joined), decimal or
 * 0x integers, and lists for repeated fields (versions: [1, 2]). `name` only appears in errors,
 * which give line and column ("models.config:3:7: unknown field 'nme' in ModelConfig"); fields TF
 * Serving has but kiln does not implement (logging_config, model_type, custom_model_config_list)
 * are errors too. Rejects a config without models, duplicate model names, a model without name or
 * base_path, negative or repeated versions, an empty specific policy, latest.num_versions < 1,
 * duplicate labels, labels without a value or with a negative one, and more than 32 nested
 * messages or 2^18 fields and values (RESOURCE_EXHAUSTED). On error *out is left zeroed. */
kiln_status kiln_model_server_config_parse(const char *text, size_t len, const char *name,
                                           kiln_model_server_config *out);
/* Frees everything and zeroes the struct; safe on a zeroed struct and on NULL. */
void kiln_model_server_config_free(kiln_model_server_config *c);

typedef struct kiln_batching_config {
  int64_t max_batch_size;       /* default 32 */
  int64_t batch_timeout_micros; /* default 1000 */
  int64_t max_enqueued_batches; /* default 16 */
  int64_t num_batch_threads;    /* default 0: the CPU count */
  int64_t *allowed_batch_sizes; /* increasing, the last equal to max_batch_size; NULL: any */
  int n_allowed_batch_sizes;
} kiln_batching_config;

/* Fills the defaults above. */
void kiln_batching_config_default(kiln_batching_config *c);
/* Parses TF Serving's BatchingParameters text format, starting from the defaults (an empty file
 * gives them). Accepts both the wrapper form TF Serving documents (max_batch_size { value: 128 })
 * and the plain form (max_batch_size: 128). pad_variable_length_inputs and thread_pool_name are
 * accepted and ignored with a warning; any other field kiln does not use is an error. Checks
 * 1 <= max_batch_size <= 2^20, 0 <= batch_timeout_micros <= an hour, 1 <= max_enqueued_batches <=
 * 2^20, 0 <= num_batch_threads <= 4096, and allowed_batch_sizes positive, strictly increasing and
 * ending with max_batch_size (TF Serving's rule). On error *out is left zeroed. */
kiln_status kiln_batching_config_parse(const char *text, size_t len, const char *name, kiln_batching_config *out);
/* Frees the allowed sizes and zeroes the struct; safe on a zeroed struct and on NULL. */
void kiln_batching_config_free(kiln_batching_config *c);

/* ---------------------------------------------------------------- the server */

typedef struct kiln_server kiln_server;

/* Canary rollout: while a model's repository labels a version `canary` (labels.json, see
 * kiln/registry.h), that share of the requests that name no version or label goes to it, the rest
 * to `stable`. Every served version's health is watched; when the canary's is worse than stable's
 * beyond these thresholds, the server routes everything back to stable, marks the canary rejected
 * in the repository (it is never loaded again), logs and counts it in kiln_rollbacks_total. A
 * canary request that fails or returns NaN/Inf is answered by stable instead, so clients see no
 * failure. A canary that fails to load or warm up is rejected the same way. */
typedef struct kiln_canary_options {
  int percent;              /* 0..100; the split is sticky per X-Request-Id */
  int64_t min_requests;     /* canary requests before its health is judged; <= 0: 100 */
  double max_error_rate;    /* the canary's failure rate (errors and NaN/Inf outputs) may exceed
                             * stable's by this much; <= 0: 0.01 */
  double max_latency_ratio; /* the canary's p99 latency may be this times stable's (plus 1 ms,
                             * against timer noise on idle models); it is too slow when its median
                             * is over the same bound too; <= 0: 2 */
  int64_t promote_requests; /* a canary still healthy after this many requests is labelled stable;
                             * 0: never (an operator promotes it) */
} kiln_canary_options;

typedef struct kiln_server_options {
  const kiln_model_server_config *models; /* copied */
  const char *host;                       /* NULL: 0.0.0.0 */
  int rest_port;                          /* 0: any free port */
  int grpc_port;                          /* 0: any free port; < 0: no gRPC */
  int grpc_threads;                       /* gRPC I/O threads; <= 0: the CPU count */
  size_t grpc_max_message_bytes;          /* one gRPC request message; 0: max_body_bytes */
  int grpc_max_concurrent_streams;        /* calls open on one gRPC connection; <= 0: 1000 */
  int enable_batching;
  const kiln_batching_config *batching; /* NULL: defaults */
  double poll_wait_seconds;             /* <= 0: no polling after start-up */
  int rest_threads;                     /* I/O threads; <= 0: the CPU count */
  int timeout_ms;                       /* per-request deadline; <= 0: 30000 */
  size_t max_body_bytes, max_header_bytes;
  int max_connections, idle_timeout_ms;
  int read_timeout_ms; /* a client sends a whole request within this; <= 0: 30000 */
  int inter_op_threads; /* inference workers per model version; <= 0: the CPU count */
  int intra_op_threads; /* kernel threads one run uses; <= 0: 1 */
  int warmup_runs;      /* per warm-up input; <= 0: 3 */
  int access_log;       /* one JSON line per request on stderr */
  int require_manifest; /* refuse versions without manifest.json (a version with one is always checked) */
  kiln_canary_options canary;
  const char *admin_token;     /* bearer token of /v1/admin/...; NULL: the admin API is disabled */
  const char *admin_audit_log; /* file the admin API appends its JSON lines to; NULL: the log */
  const char *otlp_endpoint;   /* OTLP/HTTP collector spans are exported to (kiln_otlp_url); NULL: no tracing */
  double trace_sampling_ratio; /* share of new traces (no valid traceparent) that are recorded, 0..1 */
  int otlp_max_queue_spans;    /* spans waiting for export; <= 0: 4096 */
} kiln_server_options;

/* Loads every model's versions (each loaded, validated and warmed up before it is served),
 * starts the REST server and the file-system poller. Fails when the port cannot be bound;
 * models that fail to load are reported in their status and logged, not fatal. */
kiln_status kiln_server_start(const kiln_server_options *opt, kiln_server **out);
int kiln_server_port(const kiln_server *s);
/* The gRPC port bound; -1 when gRPC is off. */
int kiln_server_grpc_port(const kiln_server *s);
/* Replaces the model list (SIGHUP): new models load, removed ones unload after their in-flight
 * requests, changed policies and labels apply at once. */
kiln_status kiln_server_reload(kiln_server *s, const kiln_model_server_config *models);
/* Readiness false, stop accepting, wait up to timeout_s for in-flight requests to be answered and
 * connections to close (kiln_http_server_stop_accepting); returns the number of requests still in
 * flight when it gave up (0 after a clean drain). */
int64_t kiln_server_drain(kiln_server *s, double timeout_s);
void kiln_server_free(kiln_server *s);

#ifdef __cplusplus
}
#endif
#endif
