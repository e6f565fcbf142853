/* kiln core: status codes, dtypes, tensors, values, the thread pool, logging and .npy I/O.
 * Everything else in kiln builds on these types; nothing here knows about ONNX or graphs. */
#ifndef KILN_CORE_H
#define KILN_CORE_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- status */

/* Error classes. They follow TF Serving's / gRPC's canonical codes so the server can map them
 * to HTTP statuses without a table of its own. */
typedef enum kiln_code {
  KILN_OK = 0,
  KILN_CANCELLED = 1,        /* the caller gave up on it (a gRPC client cancelled its call) */
  KILN_INVALID_ARGUMENT = 3, /* the caller's input is wrong (shape, dtype, malformed file) */
  KILN_DEADLINE_EXCEEDED = 4, /* a request's deadline passed before it was answered */
  KILN_NOT_FOUND = 5,        /* a named file, input or version does not exist */
  KILN_PERMISSION_DENIED = 7, /* the caller's credentials do not allow it (a wrong admin token) */
  KILN_RESOURCE_EXHAUSTED = 8, /* out of memory, or a configured limit was hit */
  KILN_FAILED_PRECONDITION = 9,
  KILN_OUT_OF_RANGE = 11,
  KILN_UNIMPLEMENTED = 12, /* an operator, dtype or feature kiln does not implement */
  KILN_INTERNAL = 13,
  KILN_UNAVAILABLE = 14,
  KILN_IO = 15, /* a read or write failed (canonical DATA_LOSS slot) */
  KILN_UNAUTHENTICATED = 16, /* the caller gave no credentials where they are needed */
} kiln_code;

/* A status is NULL on success, or an owned error object. Every fallible library function
 * returns one; the caller frees it with kiln_status_free (or hands it on). */
typedef struct kiln_error *kiln_status;

/* Creates an error with a printf-style message. Never returns NULL: if memory runs out, a static
 * "out of memory" status is returned (kiln_status_free ignores it). */
kiln_status kiln_error(kiln_code code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
kiln_status kiln_errorv(kiln_code code, const char *fmt, va_list ap);

/* Prepends context ("model.onnx: node 17 (Conv): ") to an error's message; returns the same
 * status (NULL stays NULL). */
kiln_status kiln_status_prefix(kiln_status s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

kiln_code kiln_status_code(kiln_status s);
/* The message; "ok" for NULL. Valid until the status is freed. */
const char *kiln_status_message(kiln_status s);
void kiln_status_free(kiln_status s);
/* Name of a code, e.g. "INVALID_ARGUMENT". */
const char *kiln_code_name(kiln_code code);

/* ---------------------------------------------------------------- dtypes */

/* Values are ONNX's TensorProto.DataType numbers, so they travel through files unchanged. */
typedef enum kiln_dtype {
  KILN_UNDEFINED = 0,
  KILN_FLOAT = 1,
  KILN_UINT8 = 2,
  KILN_INT8 = 3,
  KILN_UINT16 = 4,
  KILN_INT16 = 5,
  KILN_INT32 = 6,
  KILN_INT64 = 7,
  KILN_STRING = 8, /* elements are `char *`, NUL-terminated, owned by the tensor */
  KILN_BOOL = 9,   /* one byte, 0 or 1 */
  KILN_FLOAT16 = 10,
  KILN_DOUBLE = 11,
  KILN_UINT32 = 12,
  KILN_UINT64 = 13,
  KILN_COMPLEX64 = 14,
  KILN_COMPLEX128 = 15,
  KILN_BFLOAT16 = 16,
} kiln_dtype;

#define KILN_DTYPE_COUNT 17

/* Bytes per element; 0 for KILN_UNDEFINED and unknown values. */
size_t kiln_dtype_size(kiln_dtype t);
/* ONNX-style lower-case name ("float", "int64", "float16"); "undefined" for unknown values. */
const char *kiln_dtype_name(kiln_dtype t);
/* Parses a name as printed by kiln_dtype_name, or numpy's ("float32", "<f4"); KILN_UNDEFINED
 * when unknown. */
kiln_dtype kiln_dtype_from_name(const char *name);
int kiln_dtype_is_float(kiln_dtype t); /* float16, bfloat16, float, double */

float kiln_half_to_float(uint16_t h);
uint16_t kiln_float_to_half(float f); /* round to nearest even */
float kiln_bfloat16_to_float(uint16_t b);
uint16_t kiln_float_to_bfloat16(float f); /* round to nearest even */

/* ---------------------------------------------------------------- tensors */

#define KILN_MAX_RANK 8

/* A dense tensor. Dims are in ONNX order (dims[0] outermost); strides are in bytes beside them
 * (contiguous row-major unless a function says otherwise). `data` is NULL only for tensors with
 * zero elements. A tensor either owns its buffer (`owner` non-NULL, freed with it) or views
 * memory owned by someone else (an arena, a mapped file, the caller). */
typedef struct kiln_tensor {
  kiln_dtype dtype;
  int rank;
  int64_t dims[KILN_MAX_RANK];
  int64_t strides[KILN_MAX_RANK];
  void *data;
  void *owner; /* what kiln_tensor_release frees; NULL for views */
} kiln_tensor;

/* Number of elements (1 for rank 0). */
int64_t kiln_tensor_numel(const kiln_tensor *t);
size_t kiln_tensor_nbytes(const kiln_tensor *t);
/* Sets dtype, rank, dims and contiguous strides; data untouched. Fails on a bad rank, a
 * negative dim or an element count that overflows. */
kiln_status kiln_tensor_set_shape(kiln_tensor *t, kiln_dtype dtype, int rank, const int64_t *dims);
/* Allocates an owned, zero-filled tensor of the given shape. */
kiln_status kiln_tensor_alloc(kiln_tensor *t, kiln_dtype dtype, int rank, const int64_t *dims);
/* Deep copy into a new owned tensor (strings are duplicated). */
kiln_status kiln_tensor_copy(kiln_tensor *dst, const kiln_tensor *src);
/* Frees what the tensor owns (string elements included) and resets it to empty. */
void kiln_tensor_release(kiln_tensor *t);
/* "float32[1,3,224,224]"-style description into buf; returns buf. */
char *kiln_tensor_describe(const kiln_tensor *t, char *buf, size_t size);
/* Element i converted to double (strings: NaN). */
double kiln_tensor_get_f64(const kiln_tensor *t, int64_t i);

/* Compares `got` with the reference `want` as numpy.testing.assert_allclose does:
 * |got - want| <= atol + rtol * |want| elementwise, NaN equal to NaN, infinities equal when their
 * signs are. Integers, bools and strings must match exactly; dtypes and shapes must be equal.
 * Returns NULL when they match, else an error describing the mismatch (worst element, count). */
kiln_status kiln_tensor_compare(const kiln_tensor *got, const kiln_tensor *want, double rtol, double atol);
/* The flat index of the first element where got and want differ under kiln_tensor_compare's rule;
 * -1 when every element matches or when their dtypes or shapes differ (kiln_tensor_compare says so). */
int64_t kiln_tensor_first_mismatch(const kiln_tensor *got, const kiln_tensor *want, double rtol, double atol);

/* ---------------------------------------------------------------- values */

/* What flows along a graph edge: a tensor, a sequence of tensors, or an empty optional.
 * An optional that holds something is represented by what it holds. */
typedef enum kiln_value_kind {
  KILN_VALUE_TENSOR = 0,
  KILN_VALUE_SEQUENCE = 1,
  KILN_VALUE_NONE = 2,
} kiln_value_kind;

typedef struct kiln_value {
  kiln_value_kind kind;
  kiln_tensor tensor;    /* KILN_VALUE_TENSOR */
  kiln_dtype elem_dtype; /* KILN_VALUE_SEQUENCE: dtype of the items (may be UNDEFINED when empty) */
  kiln_tensor *items;    /* KILN_VALUE_SEQUENCE: owned array of owned tensors */
  size_t count;
  size_t capacity;
} kiln_value;

/* Frees everything the value owns and makes it an empty tensor. */
void kiln_value_release(kiln_value *v);
/* Appends a deep copy of `t` (or, when take is non-zero, takes ownership of t's buffer). */
kiln_status kiln_value_seq_append(kiln_value *seq, kiln_tensor *t, int take);
/* kiln_tensor_compare for values (sequences item by item). */
kiln_status kiln_value_compare(const kiln_value *got, const kiln_value *want, double rtol, double atol);

/* ---------------------------------------------------------------- thread pool */

/* One pool per process, shared by everything that runs kernels. parallel_for may be called
 * from several threads at once (e.g. concurrent model runs); the caller always works on its
 * own job too, so progress never depends on free workers. */
typedef struct kiln_pool kiln_pool;

/* threads <= 0 means the number of CPUs this process may run on. The pool starts threads-1
 * workers (the caller is the last one). */
kiln_status kiln_pool_create(int threads, kiln_pool **out);
void kiln_pool_free(kiln_pool *p);
int kiln_pool_threads(const kiln_pool *p);
/* How many pause instructions idle workers (and a caller waiting on its job) spin before they
 * sleep. The default keeps back-to-back kernels' wake-ups fast; a pool running sparse, coarse work
 * (a data pipeline's map stage, fed by a reading thread) sets 0 so that idle workers leave the
 * cores to the threads that feed them. */
void kiln_pool_set_spin(kiln_pool *p, int rounds);
/* CPUs available to this process (sched affinity). */
int kiln_cpu_count(void);
/* Threads from $KILN_NUM_THREADS, else the CPU count. */
int kiln_default_threads(void);

/* fn(arg, begin, end) is called on disjoint ranges covering [0, n). `cost` is a rough count of
 * scalar operations per item; small jobs run inline on the caller. `max_threads` caps the
 * split (<= 0: the pool's size). A NULL pool runs everything on the caller. */
typedef void (*kiln_range_fn)(void *arg, int64_t begin, int64_t end);
void kiln_parallel_for(kiln_pool *p, int max_threads, int64_t n, double cost, kiln_range_fn fn,
                       void *arg);

/* ---------------------------------------------------------------- logging */

typedef enum kiln_log_level {
  KILN_LOG_DEBUG = 0,
  KILN_LOG_INFO = 1,
  KILN_LOG_WARN = 2,
  KILN_LOG_ERROR = 3,
} kiln_log_level;

/* Structured logs: one JSON object per line on stderr ({"ts":..., "level":..., "msg":...}),
 * or plain "level: msg" lines when KILN_LOG_FORMAT=text. The threshold comes from
 * KILN_LOG_LEVEL (debug|info|warn|error, default info) unless set here. */
void kiln_log_set_level(kiln_log_level level);
void kiln_log(kiln_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* One extra field of a log line. */
typedef struct kiln_log_field {
  const char *key;
  const char *value;
} kiln_log_field;
/* kiln_log with extra string fields after "msg" (NULL values are left out), e.g. model,
 * version, request_id: {"ts":...,"level":"info","msg":"...","model":"mnist","version":"2"}.
 * The text format appends them as " key=value" (the value quoted when it holds a space, a quote,
 * an '=' or a control character). */
void kiln_log_fields(kiln_log_level level, const kiln_log_field *fields, int n_fields, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Whether a message at this level would be written (to skip building fields). */
int kiln_log_enabled(kiln_log_level level);
/* Parses a level name: "debug", "info", "warn" (or "warning"), "error". Returns 0 and sets *out
 * on success, -1 (leaving *out alone) for anything else. */
int kiln_log_level_from_name(const char *name, kiln_log_level *out);

/* ---------------------------------------------------------------- npy */

/* Reads a NumPy .npy file (format 1.0-3.0, little-endian, C order, the dtypes kiln knows) into
 * an owned tensor. Errors name the file and what is wrong (truncated data, Fortran order, ...). */
kiln_status kiln_npy_read(const char *path, kiln_tensor *out);
/* Same, from memory; `name` only appears in errors. */
kiln_status kiln_npy_parse(const void *buf, size_t len, const char *name, kiln_tensor *out);
/* Writes a tensor as .npy (format 1.0); strings are written as fixed-width unicode ('<U'). */
kiln_status kiln_npy_write(const char *path, const kiln_tensor *t);

/* ---------------------------------------------------------------- files */

/* Reads a whole file into a malloc'd buffer (NUL-terminated past *len). `limit` bounds the
 * size accepted (0 = no limit). */
kiln_status kiln_file_read(const char *path, size_t limit, void **out, size_t *len);

/* mkdir -p: the directory and its missing parents; an error names the part that could not be
 * made, or a path that exists but is no directory. */
kiln_status kiln_dir_create(const char *dir);
/* fsync of a directory: makes the renames and creations in it durable. */
kiln_status kiln_dir_sync(const char *dir);
/* Writes data to path atomically: a temporary file in the same directory, fsync, rename over path,
 * fsync of the directory. Readers see the old content or the new, never a mix, and a crash leaves
 * at most a temporary (".NAME.tmp.*") beside path. On any failure before the rename the temporary
 * is removed and path is untouched; if only the directory's fsync fails, the new content is in
 * place but the error is still returned (its durability is not known). The file's mode is 0666
 * less the umask. */
kiln_status kiln_file_write_atomic(const char *path, const void *data, size_t len);
/* The same for a writer that has its data in n pieces (parts[i] of lens[i] bytes, written in
 * order; a piece of length 0 may be NULL), so that it need not join them first. */
kiln_status kiln_file_write_atomic_parts(const char *path, const void *const *parts, const size_t *lens, int n);

/* kiln's version string. */
const char *kiln_version(void);

#ifdef __cplusplus
}
#endif
#endif
