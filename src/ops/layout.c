/* Layout kernels: operators that move elements without computing on them.
 *
 * Reshape, Flatten, Squeeze, Unsqueeze, Identity and inference-mode Dropout are views of their
 * input and cost nothing. The others reduce to three copy routines: a strided gather (Transpose,
 * Slice, Expand, Tile, DepthToSpace, SpaceToDepth) with a blocked path for transposed layouts,
 * row copies (Concat, Split, Trilu) and per-axis index maps (Pad). String elements are moved as
 * pointers and duplicated afterwards (kx_own_strings), so every routine serves every dtype. */
#include "ops/util.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef __AVX__
#include <immintrin.h>
#endif

/* A Tile views each input dim as two (repeat, dim), so plans may have twice the tensor rank. */
#define MAX_DIMS (2 * KILN_MAX_RANK)

/* ------------------------------------------------------------------ helpers */

/* "[2,3,4]" into buf. */
static const char *dims_str(int rank, const int64_t *dims, char *buf, size_t size) {
  size_t len = (size_t)snprintf(buf, size, "[");
  for (int d = 0; d < rank && len < size; d++)
    len += (size_t)snprintf(buf + len, size - len, d ? ",%lld" : "%lld", (long long)dims[d]);
  if (len < size) snprintf(buf + len, size - len, "]");
  return buf;
}

/* The axes of Squeeze and Unsqueeze: an attribute before opset 13, input 1 from then on.
 * *count is -1 when they are absent. */
static kiln_status node_axes(const kx_ctx *c, int64_t *axes, int *count) {
  *count = -1;
  if (c->node->opset < 13) {
    const int64_t *a;
    int64_t n = kx_attr_ints(c->node->proto, "axes", &a);
    if (n > MAX_DIMS) return kiln_error(KILN_INVALID_ARGUMENT, "axes has %lld values, at most %d allowed", (long long)n, MAX_DIMS);
    if (n >= 0) memcpy(axes, a, (size_t)n * sizeof *a);
    *count = (int)n;
    return NULL;
  }
  const kiln_tensor *t = kx_input(c, 1);
  return t ? kx_read_ints(t, "axes", axes, MAX_DIMS, count) : NULL;
}

/* Normalizes axes for a tensor of the given rank into a bit set; repeated axes are an error. */
static kiln_status axes_mask(const int64_t *axes, int count, int rank, unsigned *mask) {
  *mask = 0;
  for (int i = 0; i < count; i++) {
    int a;
    kiln_status s = kx_axis(axes[i], rank, 0, &a);
    if (s) return kiln_status_prefix(s, "axes[%d]: ", i);
    if (*mask & (1u << a)) return kiln_error(KILN_INVALID_ARGUMENT, "axis %lld appears more than once in axes", (long long)axes[i]);
    *mask |= 1u << a;
  }
  return NULL;
}

/* A per-node counter, for seeding random numbers when the model gives no seed: each run of
 * the node draws different numbers, yet a fresh model reproduces the same sequence. */
typedef struct run_counter {
  atomic_uint_fast64_t runs;
} run_counter;

static kiln_status counter_prepare(kx_node *n) {
  run_counter *rc = malloc(sizeof *rc);
  if (!rc) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  atomic_init(&rc->runs, 0);
  n->params = rc;
  return NULL;
}

/* ------------------------------------------------------------------ strided gather */

/* dst[i] = src + sum(i_d * stride_d) for every multi-index i over dims, dst contiguous.
 * Strides are in bytes and may be zero (broadcast) or negative (reversed slices). */
typedef struct gather_plan {
  const char *src;
  char *dst;
  size_t block; /* bytes moved as one unit: an element, or a run of source-contiguous elements */
  int rank;
  int64_t dims[MAX_DIMS];
  int64_t stride[MAX_DIMS];
} gather_plan;

/* Drops size-1 dims, merges dims the source walks as one, and folds a source-contiguous last
 * dim into the block, so every copy loop runs over as few and as long runs as possible. */
static void plan_simplify(gather_plan *p) {
  int r = 0;
  for (int d = 0; d < p->rank; d++) {
    if (p->dims[d] == 1) continue;
    if (r > 0 && p->stride[r - 1] == p->stride[d] * p->dims[d]) {
      p->dims[r - 1] *= p->dims[d];
      p->stride[r - 1] = p->stride[d];
      continue;
    }
    p->dims[r] = p->dims[d];
    p->stride[r] = p->stride[d];
    r++;
  }
  p->rank = r;
  if (r > 0 && p->stride[r - 1] == (int64_t)p->block) {
    p->block *= (size_t)p->dims[r - 1];
    p->rank--;
  }
}

/* Copies n blocks of `size` bytes, `stride` bytes apart in src, to contiguous dst. Called with
 * constant sizes, each memcpy compiles to a single move. */
static inline void copy_blocks(char *dst, const char *src, int64_t n, int64_t stride, size_t size) {
  for (int64_t k = 0; k < n; k++) memcpy(dst + k * (int64_t)size, src + k * stride, size);
}

static void copy_run(char *dst, const char *src, int64_t n, int64_t stride, size_t block) {
  if (stride == (int64_t)block) {
    memcpy(dst, src, (size_t)n * block);
    return;
  }
  switch (block) {
  case 1: copy_blocks(dst, src, n, stride, 1); break;
  case 2: copy_blocks(dst, src, n, stride, 2); break;
  case 4: copy_blocks(dst, src, n, stride, 4); break;
  case 8: copy_blocks(dst, src, n, stride, 8); break;
  case 16: copy_blocks(dst, src, n, stride, 16); break;
  default: copy_blocks(dst, src, n, stride, block);
  }
}

/* Items are destination blocks; each range walks its rows from the multi-index of `begin`. */
static void gather_range(void *arg, int64_t begin, int64_t end) {
  const gather_plan *p = arg;
  int r = p->rank;
  int64_t n = p->dims[r - 1], idx[MAX_DIMS], rest = begin / n, j = begin % n;
  for (int d = r - 2; d >= 0; d--) {
    idx[d] = rest % p->dims[d];
    rest /= p->dims[d];
  }
  for (int64_t i = begin; i < end;) {
    int64_t off = j * p->stride[r - 1];
    for (int d = 0; d < r - 1; d++) off += idx[d] * p->stride[d];
    int64_t run = n - j < end - i ? n - j : end - i;
    copy_run(p->dst + i * (int64_t)p->block, p->src + off, run, p->stride[r - 1], p->block);
    i += run;
    j = 0;
    for (int d = r - 2; d >= 0 && ++idx[d] == p->dims[d]; d--) idx[d] = 0;
  }
}

/* The transposed layout's work unit: a strip of STRIP destination rows, walked in tiles of BAND
 * columns. A tile reads BAND source rows (one per column) and writes STRIP short runs. */
#define STRIP 256
#define BAND 8

#ifdef __AVX__
/* Eight rows of eight 4-byte elements (source rows `ss` bytes apart) become eight destination rows
 * (`ds` bytes apart) in registers: one load and one store per row instead of one per element.
 * The shuffles move bits, so this serves every 4-byte dtype. */
static inline void transpose8x8(char *d, int64_t ds, const char *s, int64_t ss) {
  /* written out: gcc keeps arrays of registers in memory */
  __m256 r0 = _mm256_loadu_ps((const float *)s), r1 = _mm256_loadu_ps((const float *)(s + ss));
  __m256 r2 = _mm256_loadu_ps((const float *)(s + 2 * ss)), r3 = _mm256_loadu_ps((const float *)(s + 3 * ss));
  __m256 r4 = _mm256_loadu_ps((const float *)(s + 4 * ss)), r5 = _mm256_loadu_ps((const float *)(s + 5 * ss));
  __m256 r6 = _mm256_loadu_ps((const float *)(s + 6 * ss)), r7 = _mm256_loadu_ps((const float *)(s + 7 * ss));
  /* pairs of rows interleaved: t0 = r0[0] r1[0] r0[1] r1[1] | r0[4] r1[4] r0[5] r1[5] */
  __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
  __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
  __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
  __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
  /* quads: u0 = column 0 of rows 0-3 | column 4 of rows 0-3, and so on */
  __m256 u0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
  __m256 u1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
  __m256 u2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
  __m256 u3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
  __m256 u4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
  __m256 u5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
  __m256 u6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
  __m256 u7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
  /* destination row c: the low halves (columns 0-3) or high halves (4-7) of rows 0-3 and 4-7 */
  _mm256_storeu_ps((float *)d, _mm256_permute2f128_ps(u0, u4, 0x20));
  _mm256_storeu_ps((float *)(d + ds), _mm256_permute2f128_ps(u1, u5, 0x20));
  _mm256_storeu_ps((float *)(d + 2 * ds), _mm256_permute2f128_ps(u2, u6, 0x20));
  _mm256_storeu_ps((float *)(d + 3 * ds), _mm256_permute2f128_ps(u3, u7, 0x20));
  _mm256_storeu_ps((float *)(d + 4 * ds), _mm256_permute2f128_ps(u0, u4, 0x31));
  _mm256_storeu_ps((float *)(d + 5 * ds), _mm256_permute2f128_ps(u1, u5, 0x31));
  _mm256_storeu_ps((float *)(d + 6 * ds), _mm256_permute2f128_ps(u2, u6, 0x31));
  _mm256_storeu_ps((float *)(d + 7 * ds), _mm256_permute2f128_ps(u3, u7, 0x31));
}
#endif

/* The transposed layout: destination dims (..., rows, cols) where a row step is one block in
 * the source and a column step is `rows` blocks. Walking either side in order would touch a new
 * cache line per element on the other. Each tile instead reads BAND source rows in order, few
 * enough that their lines share the cache even when the source rows lie a power of two apart (the
 * same cache set), while its writes go to STRIP destination rows that stay in L2 for the next
 * tile. Items are (batch, strip of STRIP rows). */
static void transpose_range(void *arg, int64_t begin, int64_t end) {
  const gather_plan *p = arg;
  int r = p->rank;
  int64_t rows = p->dims[r - 2], cols = p->dims[r - 1], strips = (rows + STRIP - 1) / STRIP;
  int64_t b = (int64_t)p->block, col_stride = p->stride[r - 1];
  for (int64_t item = begin; item < end; item++) {
    int64_t batch = item / strips, i0 = item % strips * STRIP, i1 = i0 + STRIP < rows ? i0 + STRIP : rows;
    int64_t off = 0, rest = batch;
    for (int d = r - 3; d >= 0; d--) {
      off += rest % p->dims[d] * p->stride[d];
      rest /= p->dims[d];
    }
    const char *src = p->src + off;
    char *dst = p->dst + batch * rows * cols * b;
    for (int64_t j0 = 0; j0 < cols; j0 += BAND) {
      int64_t n = cols - j0 < BAND ? cols - j0 : BAND, i = i0;
#ifdef __AVX__
      for (; b == 4 && n == BAND && i + 8 <= i1; i += 8)
        transpose8x8(dst + (i * cols + j0) * 4, cols * 4, src + i * 4 + j0 * col_stride, col_stride);
#endif
      for (; i < i1; i++) copy_run(dst + (i * cols + j0) * b, src + i * b + j0 * col_stride, n, col_stride, p->block);
    }
  }
}

/* Runs a plan (dims and strides filled in, block = element size) over the pool. */
static void gather_run(const kx_ctx *c, gather_plan *p) {
  for (int d = 0; d < p->rank; d++)
    if (p->dims[d] == 0) return;
  plan_simplify(p);
  if (p->rank == 0) { /* one contiguous copy: split it by bytes */
    p->rank = 1;
    p->dims[0] = (int64_t)p->block;
    p->stride[0] = 1;
    p->block = 1;
  }
  int r = p->rank;
  double cost = 0.5 + (double)p->block / 8;
  if (r >= 2 && p->stride[r - 2] == (int64_t)p->block && p->stride[r - 1] == p->dims[r - 2] * (int64_t)p->block) {
    int64_t strips = (p->dims[r - 2] + STRIP - 1) / STRIP, rows = p->dims[r - 2] < STRIP ? p->dims[r - 2] : STRIP;
    double strip_cost = cost * (double)rows * (double)p->dims[r - 1];
    kx_parallel(c, kx_prod(p->dims, 0, r - 2) * strips, strip_cost, transpose_range, p);
    return;
  }
  kx_parallel(c, kx_prod(p->dims, 0, r), cost, gather_range, p);
}

/* Output 0 (x's dtype, the given shape) filled by a plan whose caller set src, rank, dims and
 * strides. `dims` may be p->dims: the output takes its shape before the plan is simplified. */
static kiln_status plan_output(kx_ctx *c, const kiln_tensor *x, int rank, const int64_t *dims, gather_plan *p) {
  kiln_tensor *y;
  kiln_status s = kx_output(c, 0, x->dtype, rank, dims, &y);
  if (s) return s;
  p->dst = y->data;
  p->block = kiln_dtype_size(x->dtype);
  gather_run(c, p);
  return kx_own_strings(y);
}

/* ------------------------------------------------------------------ row copies */

/* rows x `row` bytes between two row-strided buffers (Concat's inputs, Split's outputs). */
typedef struct rows_job {
  char *dst;
  const char *src;
  int64_t dst_stride, src_stride;
  size_t row;
} rows_job;

static void rows_range(void *arg, int64_t begin, int64_t end) {
  const rows_job *j = arg;
  for (int64_t i = begin; i < end; i++) memcpy(j->dst + i * j->dst_stride, j->src + i * j->src_stride, j->row);
}

static void copy_rows(const kx_ctx *c, rows_job *j, int64_t rows) {
  if (rows == 0 || j->row == 0) return;
  if (rows == 1 || ((int64_t)j->row == j->dst_stride && (int64_t)j->row == j->src_stride)) {
    gather_plan p = {.src = j->src, .dst = j->dst, .block = j->row * (size_t)rows};
    gather_run(c, &p); /* one contiguous block, split over the pool by bytes */
    return;
  }
  kx_parallel(c, rows, 0.5 + (double)j->row / 8, rows_range, j);
}

/* ------------------------------------------------------------------ views */

/* Reshape: output 0 views the input with the shape given by input 1 (opset 5+) or the `shape`
 * attribute (before). 0 copies the input's dim (unless allowzero), -1 is inferred. */
static kiln_status reshape_run(kx_ctx *c) {
  const kiln_tensor *x, *shape_t;
  kiln_status s;
  int64_t shape[KILN_MAX_RANK], dims[KILN_MAX_RANK];
  int rank;
  if ((s = kx_require(c, 0, &x))) return s;
  if (c->node->opset >= 5) {
    if ((s = kx_require(c, 1, &shape_t)) || (s = kx_read_ints(shape_t, "shape", shape, KILN_MAX_RANK, &rank))) return s;
  } else {
    const int64_t *a;
    int64_t n = kx_attr_ints(c->node->proto, "shape", &a);
    if (n < 0 || n > KILN_MAX_RANK) return kiln_error(KILN_INVALID_ARGUMENT, "shape attribute is missing or has more than %d values", KILN_MAX_RANK);
    memcpy(shape, a, (size_t)n * sizeof *a);
    rank = (int)n;
  }
  int allowzero = c->node->opset >= 14 && kx_attr_int(c->node->proto, "allowzero", 0) != 0;
  int infer = -1;
  int64_t known = 1, n = kiln_tensor_numel(x);
  for (int d = 0; d < rank; d++) {
    int64_t v = shape[d];
    if (v == 0 && !allowzero) {
      if (d >= x->rank)
        return kiln_error(KILN_INVALID_ARGUMENT, "shape[%d] is 0 (copy the input's dim) but the input has rank %d", d, x->rank);
      v = x->dims[d];
    } else if (v == -1) {
      if (infer >= 0) return kiln_error(KILN_INVALID_ARGUMENT, "shape has more than one -1 (at %d and %d)", infer, d);
      infer = d;
      continue;
    } else if (v < 0) {
      return kiln_error(KILN_INVALID_ARGUMENT, "shape[%d] is %lld; dims must be >= -1", d, (long long)v);
    }
    if (v > 0 && known > ((int64_t)1 << 48) / v)
      return kiln_error(KILN_INVALID_ARGUMENT, "shape %s has too many elements", dims_str(rank, shape, (char[200]){0}, 200));
    dims[d] = v;
    known *= v;
  }
  char a[200], b[200];
  if (infer >= 0) {
    if (known == 0 || n % known != 0)
      return kiln_error(KILN_INVALID_ARGUMENT, "cannot reshape %s (%lld elements) into %s: the -1 dim cannot be inferred",
                        dims_str(x->rank, x->dims, a, sizeof a), (long long)n, dims_str(rank, shape, b, sizeof b));
    dims[infer] = n / known;
  } else if (known != n) {
    return kiln_error(KILN_INVALID_ARGUMENT, "cannot reshape %s (%lld elements) into %s (%lld elements)",
                      dims_str(x->rank, x->dims, a, sizeof a), (long long)n, dims_str(rank, dims, b, sizeof b), (long long)known);
  }
  kiln_tensor *y;
  return kx_output_view(c, 0, rank, dims, &y);
}

/* Flatten: a 2-D view, dims before `axis` in the first, the rest in the second. */
static kiln_status flatten_run(kx_ctx *c) {
  const kiln_tensor *x;
  kiln_status s;
  if ((s = kx_require(c, 0, &x))) return s;
  int64_t axis = kx_attr_int(c->node->proto, "axis", 1);
  int64_t lowest = c->node->opset >= 11 ? -x->rank : 0;
  if (axis < lowest || axis > x->rank)
    return kiln_error(KILN_INVALID_ARGUMENT, "axis %lld is out of range [%lld, %d] for rank %d", (long long)axis, (long long)lowest, x->rank, x->rank);
  if (axis < 0) axis += x->rank;
  int64_t dims[2] = {kx_prod(x->dims, 0, (int)axis), kx_prod(x->dims, (int)axis, x->rank)};
  kiln_tensor *y;
  return kx_output_view(c, 0, 2, dims, &y);
}

/* Squeeze: removes the listed size-1 dims, or every size-1 dim when no axes are given. */
static kiln_status squeeze_run(kx_ctx *c) {
  const kiln_tensor *x;
  kiln_status s;
  int64_t axes[MAX_DIMS], dims[KILN_MAX_RANK];
  int count;
  unsigned mask = 0;
  if ((s = kx_require(c, 0, &x)) || (s = node_axes(c, axes, &count))) return s;
  if (count >= 0 && (s = axes_mask(axes, count, x->rank, &mask))) return s;
  int rank = 0;
  for (int d = 0; d < x->rank; d++) {
    int listed = count >= 0 ? (mask >> d) & 1 : x->dims[d] == 1;
    if (listed && x->dims[d] != 1)
      return kiln_error(KILN_INVALID_ARGUMENT, "cannot squeeze axis %d of size %lld", d, (long long)x->dims[d]);
    if (!listed) dims[rank++] = x->dims[d];
  }
  kiln_tensor *y;
  return kx_output_view(c, 0, rank, dims, &y);
}

/* Unsqueeze: inserts size-1 dims at the listed positions of the output. */
static kiln_status unsqueeze_run(kx_ctx *c) {
  const kiln_tensor *x;
  kiln_status s;
  int64_t axes[MAX_DIMS], dims[KILN_MAX_RANK];
  int count;
  unsigned mask;
  if ((s = kx_require(c, 0, &x)) || (s = node_axes(c, axes, &count))) return s;
  if (count < 0) return kiln_error(KILN_INVALID_ARGUMENT, "axes are required");
  int rank = x->rank + count;
  if (rank > KILN_MAX_RANK)
    return kiln_error(KILN_UNIMPLEMENTED, "output rank %d is above kiln's limit of %d", rank, KILN_MAX_RANK);
  if ((s = axes_mask(axes, count, rank, &mask))) return s;
  for (int d = 0, k = 0; d < rank; d++) dims[d] = (mask >> d) & 1 ? 1 : x->dims[k++];
  kiln_tensor *y;
  return kx_output_view(c, 0, rank, dims, &y);
}

/* Identity: a view for tensors; sequences and empty optionals are copied as values. */
static kiln_status identity_run(kx_ctx *c) {
  const kiln_value *v = kx_input_value(c, 0);
  if (!v) return kiln_error(KILN_INVALID_ARGUMENT, "input 0 is missing");
  kiln_tensor *y;
  if (v->kind == KILN_VALUE_TENSOR) return kx_output_view(c, 0, v->tensor.rank, v->tensor.dims, &y);
  kiln_value *out = kx_output_value(c, 0);
  if (!out) return NULL;
  out->kind = v->kind;
  out->elem_dtype = v->elem_dtype;
  for (size_t i = 0; v->kind == KILN_VALUE_SEQUENCE && i < v->count; i++) {
    kiln_status s = kiln_value_seq_append(out, &v->items[i], 0);
    if (s) return s;
  }
  return NULL;
}

/* Dropout's mask: all elements kept. */
static kiln_status dropout_mask_all(kx_ctx *c, const kiln_tensor *x, kiln_dtype dtype) {
  kiln_tensor *mask;
  kiln_status s = kx_output(c, 1, dtype, x->rank, x->dims, &mask);
  if (s) return s;
  int64_t n = kiln_tensor_numel(x);
  if (dtype == KILN_BOOL) memset(mask->data, 1, (size_t)n);
  else
    for (int64_t i = 0; i < n; i++) kx_set_f64(mask, i, 1);
  return NULL;
}

/* Training-mode Dropout: y = x * mask / (1 - ratio), mask drawn with kiln's own generator
 * (ONNX's reference draws from numpy, which no other runtime reproduces). Training is off the
 * inference path, so elements go through doubles. The output cannot view the input here; the
 * executor gives it its own buffer. */
static kiln_status dropout_train(kx_ctx *c, const kiln_tensor *x, double ratio, kiln_dtype mask_dtype) {
  run_counter *rc = c->node->params;
  uint64_t key = kx_attr_has(c->node->proto, "seed") ? kx_mix64((uint64_t)kx_attr_int(c->node->proto, "seed", 0))
                                                     : kx_mix64(((uint64_t)c->node->index << 32) ^ atomic_fetch_add(&rc->runs, 1));
  kiln_tensor *y, *mask;
  kiln_status s;
  if ((s = kx_output(c, 0, x->dtype, x->rank, x->dims, &y)) || (s = kx_output(c, 1, mask_dtype, x->rank, x->dims, &mask))) return s;
  double scale = ratio < 1 ? 1 / (1 - ratio) : 0;
  int64_t n = kiln_tensor_numel(x);
  for (int64_t i = 0; i < n; i++) {
    int keep = kx_uniform_at(key, (uint64_t)i) >= ratio;
    kx_set_f64(y, i, keep ? kiln_tensor_get_f64(x, i) * scale : 0);
    kx_set_f64(mask, i, keep);
  }
  return NULL;
}

/* Dropout: in inference mode (always before opset 12; from 12 unless training_mode is true) the
 * input as a view and an all-true mask. Opsets 1-6 had an is_test flag, default off; ONNX's own
 * version converter maps those nodes onto opset 7's inference-only Dropout, and so does kiln. */
static kiln_status dropout_run(kx_ctx *c) {
  const kiln_tensor *x;
  kiln_status s;
  if ((s = kx_require(c, 0, &x)) || (s = kx_check_dtype(x, 0, KX_FLOATS))) return s;
  int opset = c->node->opset, training = 0;
  kiln_dtype mask_dtype = opset >= 10 ? KILN_BOOL : x->dtype;
  double ratio = kx_attr_float(c->node->proto, "ratio", 0.5f);
  if (opset >= 12) {
    const kiln_tensor *r = kx_input(c, 1), *t = kx_input(c, 2);
    double mode = 0;
    if (r && (s = kx_read_scalar(r, "ratio", &ratio))) return s;
    if (t && (s = kx_read_scalar(t, "training_mode", &mode))) return s;
    training = mode != 0;
  }
  if (!(ratio >= 0 && ratio < 1)) return kiln_error(KILN_INVALID_ARGUMENT, "ratio %g is outside [0, 1)", ratio);
  if (training && ratio > 0) return dropout_train(c, x, ratio, mask_dtype);
  kiln_tensor *y;
  if ((s = kx_output_view(c, 0, x->rank, x->dims, &y))) return s;
  return kx_has_output(c, 1) ? dropout_mask_all(c, x, mask_dtype) : NULL;
}

/* ------------------------------------------------------------------ shape queries */

/* Shape: the input's dims as int64, from `start` to `end` (opset 15), clamped like Python. */
static kiln_status shape_run(kx_ctx *c) {
  const kiln_tensor *x;
  kiln_status s;
  if ((s = kx_require(c, 0, &x))) return s;
  int64_t start = 0, end = x->rank;
  if (c->node->opset >= 15) {
    start = kx_attr_int(c->node->proto, "start", 0);
    end = kx_attr_int(c->node->proto, "end", x->rank);
  }
  if (start < 0) start += x->rank;
  if (end < 0) end += x->rank;
  start = start < 0 ? 0 : start > x->rank ? x->rank : start;
  end = end < start ? start : end > x->rank ? x->rank : end;
  int64_t n = end - start;
  kiln_tensor *y;
  if ((s = kx_output(c, 0, KILN_INT64, 1, &n, &y))) return s;
  if (n) memcpy(y->data, x->dims + start, (size_t)n * sizeof(int64_t));
  return NULL;
}

static kiln_status size_run(kx_ctx *c) {
  const kiln_tensor *x;
  kiln_tensor *y;
  kiln_status s;
  if ((s = kx_require(c, 0, &x)) || (s = kx_output(c, 0, KILN_INT64, 0, NULL, &y))) return s;
  *(int64_t *)y->data = kiln_tensor_numel(x);
  return NULL;
}

/* ------------------------------------------------------------------ Transpose */

static kiln_status transpose_run(kx_ctx *c) {
  const kiln_tensor *x;
  kiln_status s;
  if ((s = kx_require(c, 0, &x))) return s;
  int rank = x->rank;
  int64_t perm[KILN_MAX_RANK];
  const int64_t *attr;
  int64_t n = kx_attr_ints(c->node->proto, "perm", &attr);
  if (n >= 0 && n != rank) return kiln_error(KILN_INVALID_ARGUMENT, "perm has %lld values for an input of rank %d", (long long)n, rank);
  gather_plan p = {.src = x->data, .rank = rank};
  unsigned seen = 0;
  for (int d = 0; d < rank; d++) {
    perm[d] = n >= 0 ? attr[d] : rank - 1 - d;
    if (perm[d] < 0 || perm[d] >= rank || (seen >> perm[d]) & 1)
      return kiln_error(KILN_INVALID_ARGUMENT, "perm %s is not a permutation of 0..%d", dims_str(rank, perm, (char[200]){0}, 200), rank - 1);
    seen |= 1u << perm[d];
    p.dims[d] = x->dims[perm[d]];
    p.stride[d] = x->strides[perm[d]];
  }
  return plan_output(c, x, rank, p.dims, &p);
}

/* ------------------------------------------------------------------ Expand, Tile */

/* Expand: broadcasts the input against the shape in input 1 (numpy rules, both ways). */
static kiln_status expand_run(kx_ctx *c) {
  const kiln_tensor *x, *shape_t;
  kiln_status s;
  int64_t shape[KILN_MAX_RANK];
  int n;
  if ((s = kx_require(c, 0, &x)) || (s = kx_require(c, 1, &shape_t)) ||
      (s = kx_read_ints(shape_t, "shape", shape, KILN_MAX_RANK, &n)))
    return s;
  int rank = n > x->rank ? n : x->rank;
  gather_plan p = {.src = x->data, .rank = rank};
  for (int d = 0; d < rank; d++) {
    int dx = d - (rank - x->rank), ds = d - (rank - n);
    int64_t a = dx >= 0 ? x->dims[dx] : 1, b = ds >= 0 ? shape[ds] : 1;
    if (b < 0) return kiln_error(KILN_INVALID_ARGUMENT, "shape[%d] is negative (%lld)", ds, (long long)b);
    if (a != b && a != 1 && b != 1) {
      char sa[200], sb[200];
      return kiln_error(KILN_INVALID_ARGUMENT, "input shape %s cannot be expanded to %s", dims_str(x->rank, x->dims, sa, sizeof sa),
                        dims_str(n, shape, sb, sizeof sb));
    }
    p.dims[d] = a == 1 ? b : a;
    p.stride[d] = a == 1 ? 0 : x->strides[dx];
  }
  return plan_output(c, x, rank, p.dims, &p);
}

/* Tile: output dim d is repeats[d] copies of input dim d, read as (repeat, dim) pairs whose
 * repeat index does not move the source. */
static kiln_status tile_run(kx_ctx *c) {
  const kiln_tensor *x, *rep_t;
  kiln_status s;
  int64_t reps[KILN_MAX_RANK], dims[KILN_MAX_RANK];
  int n;
  if ((s = kx_require(c, 0, &x)) || (s = kx_require(c, 1, &rep_t)) || (s = kx_read_ints(rep_t, "repeats", reps, KILN_MAX_RANK, &n)))
    return s;
  if (n != x->rank) return kiln_error(KILN_INVALID_ARGUMENT, "repeats has %d values for an input of rank %d", n, x->rank);
  gather_plan p = {.src = x->data, .rank = 2 * n};
  for (int d = 0; d < n; d++) {
    if (reps[d] < 0) return kiln_error(KILN_INVALID_ARGUMENT, "repeats[%d] is negative (%lld)", d, (long long)reps[d]);
    if (reps[d] > 0 && x->dims[d] > ((int64_t)1 << 48) / reps[d])
      return kiln_error(KILN_INVALID_ARGUMENT, "repeats[%d] = %lld makes dim %d too large", d, (long long)reps[d], d);
    dims[d] = x->dims[d] * reps[d];
    p.dims[2 * d] = reps[d];
    p.stride[2 * d] = 0;
    p.dims[2 * d + 1] = x->dims[d];
    p.stride[2 * d + 1] = x->strides[d];
  }
  return plan_output(c, x, n, dims, &p);
}

/* ------------------------------------------------------------------ Concat, Split */

static kiln_status concat_run(kx_ctx *c) {
  const kx_node *node = c->node;
  const kiln_tensor *first;
  kiln_status s;
  if ((s = kx_require(c, 0, &first))) return s;
  if (node->opset >= 4 && !kx_attr_has(node->proto, "axis")) return kiln_error(KILN_INVALID_ARGUMENT, "attribute 'axis' is required");
  int axis, rank = first->rank;
  if ((s = kx_axis(kx_attr_int(node->proto, "axis", 1), rank, 0, &axis))) return s;
  int64_t dims[KILN_MAX_RANK];
  memcpy(dims, first->dims, sizeof dims);
  dims[axis] = 0;
  for (int i = 0; i < node->n_in; i++) {
    const kiln_tensor *t;
    if ((s = kx_require(c, i, &t))) return s;
    int ok = t->dtype == first->dtype && t->rank == rank;
    for (int d = 0; ok && d < rank; d++) ok = d == axis || t->dims[d] == first->dims[d];
    if (!ok) {
      char a[96], b[96];
      return kiln_error(KILN_INVALID_ARGUMENT, "input %d is %s, which cannot be joined on axis %d with input 0's %s", i,
                        kiln_tensor_describe(t, a, sizeof a), axis, kiln_tensor_describe(first, b, sizeof b));
    }
    dims[axis] += t->dims[axis];
  }
  kiln_tensor *y;
  if ((s = kx_output(c, 0, first->dtype, rank, dims, &y))) return s;
  size_t inner = (size_t)kx_prod(dims, axis + 1, rank) * kiln_dtype_size(first->dtype);
  int64_t outer = kx_prod(dims, 0, axis), at = 0;
  for (int i = 0; i < node->n_in; i++) {
    const kiln_tensor *t = kx_input(c, i);
    rows_job j = {(char *)y->data + (size_t)at * inner, t->data, dims[axis] * (int64_t)inner,
                  t->dims[axis] * (int64_t)inner, (size_t)t->dims[axis] * inner};
    copy_rows(c, &j, outer);
    at += t->dims[axis];
  }
  return kx_own_strings(y);
}

/* Split: lengths from input 1 (opset 13+) or the `split` attribute, else equal parts. */
static kiln_status split_run(kx_ctx *c) {
  const kx_node *node = c->node;
  const kiln_tensor *x;
  kiln_status s;
  if ((s = kx_require(c, 0, &x))) return s;
  int axis, n_out = node->n_out;
  if ((s = kx_axis(kx_attr_int(node->proto, "axis", 0), x->rank, 0, &axis))) return s;
  int64_t dim = x->dims[axis], stack[16], *len = stack;
  if (n_out > 16 && !(len = kx_scratch(c, (size_t)n_out * sizeof *len))) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  int64_t count = -1; /* lengths given */
  const int64_t *given = NULL;
  if (node->opset >= 13) {
    const kiln_tensor *t = kx_input(c, 1);
    if (t && (t->dtype != KILN_INT64 || t->rank != 1)) return kiln_error(KILN_INVALID_ARGUMENT, "split must be a 1-D int64 tensor");
    if (t) {
      count = t->dims[0];
      given = t->data;
    }
  } else {
    count = kx_attr_ints(node->proto, "split", &given);
  }
  if (count >= 0 && count != n_out) return kiln_error(KILN_INVALID_ARGUMENT, "split has %lld lengths for %d outputs", (long long)count, n_out);
  if (count > 0) memcpy(len, given, (size_t)n_out * sizeof *len);
  if (count < 0) {
    if (dim % n_out) return kiln_error(KILN_INVALID_ARGUMENT, "axis %d of size %lld cannot be split into %d equal parts", axis, (long long)dim, n_out);
    for (int i = 0; i < n_out; i++) len[i] = dim / n_out;
  }
  int64_t total = 0;
  for (int i = 0; i < n_out; i++) {
    if (len[i] < 0 || len[i] > dim - total)
      return kiln_error(KILN_INVALID_ARGUMENT, "split lengths do not add up to axis %d's size %lld (split[%d] = %lld)", axis,
                        (long long)dim, i, (long long)len[i]);
    total += len[i];
  }
  if (total != dim) return kiln_error(KILN_INVALID_ARGUMENT, "split lengths add up to %lld, axis %d has size %lld", (long long)total, axis, (long long)dim);
  size_t inner = (size_t)kx_prod(x->dims, axis + 1, x->rank) * kiln_dtype_size(x->dtype);
  int64_t outer = kx_prod(x->dims, 0, axis), at = 0;
  for (int i = 0; i < n_out; i++) {
    int64_t dims[KILN_MAX_RANK];
    memcpy(dims, x->dims, sizeof dims);
    dims[axis] = len[i];
    kiln_tensor *y;
    if ((s = kx_output(c, i, x->dtype, x->rank, dims, &y))) return s;
    rows_job j = {y->data, (const char *)x->data + (size_t)at * inner, len[i] * (int64_t)inner, dim * (int64_t)inner,
                  (size_t)len[i] * inner};
    copy_rows(c, &j, outer);
    at += len[i];
    if ((s = kx_own_strings(y))) return s;
  }
  return NULL;
}

/* ------------------------------------------------------------------ Slice */

/* Clamps start/end as the ONNX spec says for a dim of size n (numpy's clamping, except that a start
 * before the first element with a negative step becomes 0, as in ONNX Runtime, where numpy takes
 * nothing) and returns the number of elements taken. */
static int64_t slice_extent(int64_t n, int64_t *start, int64_t end, int64_t step) {
  if (*start < 0) *start += n;
  if (end < 0) end += n;
  if (step > 0) {
    *start = *start < 0 ? 0 : *start > n ? n : *start;
    end = end < 0 ? 0 : end > n ? n : end;
    return end > *start ? 1 + (end - *start - 1) / step : 0;
  }
  if (n == 0) return 0;
  *start = *start < 0 ? 0 : *start > n - 1 ? n - 1 : *start;
  end = end < -1 ? -1 : end > n - 1 ? n - 1 : end;
  int64_t mag = step == INT64_MIN ? INT64_MAX : -step; /* any magnitude above n reads once */
  return *start > end ? 1 + (*start - end - 1) / mag : 0;
}

/* Slice: starts/ends/axes attributes before opset 10; inputs starts, ends, axes, steps from 10. */
static kiln_status slice_run(kx_ctx *c) {
  const kx_node *node = c->node;
  const kiln_tensor *x;
  kiln_status s;
  if ((s = kx_require(c, 0, &x))) return s;
  int rank = x->rank, n, n_ends, n_axes = -1, n_steps = -1;
  int64_t starts[KILN_MAX_RANK], ends[KILN_MAX_RANK], axes[KILN_MAX_RANK], steps[KILN_MAX_RANK];
  if (node->opset >= 10) {
    const kiln_tensor *t_starts, *t_ends, *t_axes = kx_input(c, 3), *t_steps = kx_input(c, 4);
    if ((s = kx_require(c, 1, &t_starts)) || (s = kx_require(c, 2, &t_ends)) ||
        (s = kx_read_ints(t_starts, "starts", starts, KILN_MAX_RANK, &n)) ||
        (s = kx_read_ints(t_ends, "ends", ends, KILN_MAX_RANK, &n_ends)) ||
        (t_axes && (s = kx_read_ints(t_axes, "axes", axes, KILN_MAX_RANK, &n_axes))) ||
        (t_steps && (s = kx_read_ints(t_steps, "steps", steps, KILN_MAX_RANK, &n_steps))))
      return s;
  } else {
    const int64_t *a_starts, *a_ends, *a_axes;
    int64_t k = kx_attr_ints(node->proto, "starts", &a_starts), k_ends = kx_attr_ints(node->proto, "ends", &a_ends);
    int64_t k_axes = kx_attr_ints(node->proto, "axes", &a_axes);
    if (k < 0 || k > rank || k_ends != k || k_axes > rank)
      return kiln_error(KILN_INVALID_ARGUMENT, "starts and ends must be given, of equal length, at most the rank %d", rank);
    n = n_ends = (int)k;
    n_axes = (int)k_axes;
    memcpy(starts, a_starts, (size_t)k * sizeof *starts);
    memcpy(ends, a_ends, (size_t)k * sizeof *ends);
    if (k_axes > 0) memcpy(axes, a_axes, (size_t)k_axes * sizeof *axes);
  }
  if (n_ends != n || (n_axes >= 0 && n_axes != n) || (n_steps >= 0 && n_steps != n))
    return kiln_error(KILN_INVALID_ARGUMENT, "starts, ends, axes and steps have different lengths (%d, %d, %d, %d)", n, n_ends, n_axes, n_steps);
  int64_t first[KILN_MAX_RANK] = {0}, step[KILN_MAX_RANK], dims[KILN_MAX_RANK];
  for (int d = 0; d < rank; d++) {
    step[d] = 1;
    dims[d] = x->dims[d];
  }
  unsigned seen = 0;
  for (int i = 0; i < n; i++) {
    int a;
    if ((s = kx_axis(n_axes >= 0 ? axes[i] : i, rank, 0, &a))) return kiln_status_prefix(s, "axes[%d]: ", i);
    if ((seen >> a) & 1) return kiln_error(KILN_INVALID_ARGUMENT, "axis %d is sliced more than once", a);
    seen |= 1u << a;
    step[a] = n_steps >= 0 ? steps[i] : 1;
    if (step[a] == 0) return kiln_error(KILN_INVALID_ARGUMENT, "steps[%d] is 0", i);
    first[a] = starts[i];
    dims[a] = slice_extent(x->dims[a], &first[a], ends[i], step[a]);
  }
  gather_plan p = {.src = x->data, .rank = rank};
  for (int d = 0; d < rank; d++) {
    p.dims[d] = dims[d];
    p.stride[d] = dims[d] > 1 ? step[d] * x->strides[d] : 0; /* a step past the end is never taken */
    if (dims[d] > 0) p.src += first[d] * x->strides[d];
  }
  return plan_output(c, x, rank, dims, &p);
}

/* ------------------------------------------------------------------ Pad */

enum { PAD_CONSTANT, PAD_REFLECT, PAD_EDGE };

static kiln_status pad_prepare(kx_node *n) {
  char mode[16];
  kx_attr_string(n->proto, "mode", "constant", mode, sizeof mode);
  int *m = malloc(sizeof *m);
  if (!m) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  *m = strcmp(mode, "constant") == 0 ? PAD_CONSTANT : strcmp(mode, "reflect") == 0 ? PAD_REFLECT : strcmp(mode, "edge") == 0 ? PAD_EDGE : -1;
  n->params = m;
  if (*m < 0) return kiln_error(KILN_INVALID_ARGUMENT, "mode '%s' is not one of constant, reflect, edge", mode);
  return NULL;
}

typedef struct pad_job {
  const kiln_tensor *x;
  kiln_tensor *y;
  const int64_t *const *map; /* per dim: output index -> input index, -1 for the constant */
  const char *value;         /* one element */
  int64_t lo, hi;            /* along the last dim, [lo, hi) copies input [lo - pad, hi - pad) */
} pad_job;

/* Items are output rows (all dims but the last). */
static void pad_range(void *arg, int64_t begin, int64_t end) {
  const pad_job *j = arg;
  const kiln_tensor *x = j->x;
  int r = x->rank;
  size_t es = kiln_dtype_size(x->dtype);
  int64_t n = j->y->dims[r - 1], idx[KILN_MAX_RANK], rest = begin;
  const int64_t *last = j->map[r - 1];
  for (int d = r - 2; d >= 0; d--) {
    idx[d] = rest % j->y->dims[d];
    rest /= j->y->dims[d];
  }
  for (int64_t row = begin; row < end; row++) {
    char *dst = (char *)j->y->data + row * n * (int64_t)es;
    int64_t off = 0;
    int inside = 1;
    for (int d = 0; d < r - 1; d++) {
      int64_t m = j->map[d][idx[d]];
      inside &= m >= 0;
      off += m * x->strides[d];
    }
    const char *src = (const char *)x->data + off;
    for (int64_t o = 0; o < n; o++) {
      if (inside && o == j->lo && j->hi > j->lo) {
        memcpy(dst + o * (int64_t)es, src + last[o] * (int64_t)es, (size_t)(j->hi - j->lo) * es);
        o = j->hi - 1;
        continue;
      }
      const char *from = inside && last[o] >= 0 ? src + last[o] * (int64_t)es : j->value;
      memcpy(dst + o * (int64_t)es, from, es);
    }
    for (int d = r - 2; d >= 0 && ++idx[d] == j->y->dims[d]; d--) idx[d] = 0;
  }
}

/* Where output index o of a dim reads from: numpy's reflect repeats with period 2(n-1). */
static int64_t pad_source(int mode, int64_t i, int64_t n) {
  if (i >= 0 && i < n) return i;
  if (mode == PAD_CONSTANT) return -1;
  if (mode == PAD_EDGE || n == 1) return i < 0 ? 0 : n - 1;
  int64_t period = 2 * (n - 1), m = i % period;
  if (m < 0) m += period;
  return m < n ? m : period - m;
}

/* Pad: pads (begin for every dim, then end for every dim; negative crops) and the constant come
 * from attributes before opset 11 and from inputs 1 and 2 after. */
static kiln_status pad_run(kx_ctx *c) {
  const kx_node *node = c->node;
  const kiln_tensor *x;
  kiln_status s;
  if ((s = kx_require(c, 0, &x))) return s;
  int mode = *(const int *)node->params, r = x->rank, n;
  int64_t pads[2 * KILN_MAX_RANK], dims[KILN_MAX_RANK];
  union {
    char bytes[16];
    char *str;
  } value = {{0}};
  if (node->opset >= 11) {
    const kiln_tensor *pads_t, *value_t = kx_input(c, 2);
    if ((s = kx_require(c, 1, &pads_t)) || (s = kx_read_ints(pads_t, "pads", pads, 2 * KILN_MAX_RANK, &n))) return s;
    if (value_t && value_t->dtype != x->dtype)
      return kiln_error(KILN_INVALID_ARGUMENT, "constant_value is %s, data is %s", kiln_dtype_name(value_t->dtype), kiln_dtype_name(x->dtype));
    if (value_t && kiln_tensor_numel(value_t) != 1) return kiln_error(KILN_INVALID_ARGUMENT, "constant_value must hold one value");
    if (value_t) memcpy(value.bytes, value_t->data, kiln_dtype_size(x->dtype));
  } else {
    const int64_t *a;
    int64_t k = kx_attr_ints(node->proto, node->opset >= 2 ? "pads" : "paddings", &a);
    if (k < 0 || k > 2 * KILN_MAX_RANK) return kiln_error(KILN_INVALID_ARGUMENT, "pads attribute is missing or too long");
    n = (int)k;
    memcpy(pads, a, (size_t)k * sizeof *a);
    kiln_tensor v = {.dtype = x->dtype, .data = value.bytes};
    if (x->dtype != KILN_STRING) kx_set_f64(&v, 0, kx_attr_float(node->proto, "value", 0));
  }
  if (n != 2 * r) return kiln_error(KILN_INVALID_ARGUMENT, "pads has %d values, expected 2 * rank = %d", n, 2 * r);
  for (int d = 0; d < r; d++) {
    dims[d] = x->dims[d] + pads[d] + pads[d + r];
    if (pads[d] < -x->dims[d] || pads[d + r] < -x->dims[d] || dims[d] < 0 || dims[d] > ((int64_t)1 << 48))
      return kiln_error(KILN_INVALID_ARGUMENT, "pads %lld and %lld cannot apply to axis %d of size %lld", (long long)pads[d],
                        (long long)pads[d + r], d, (long long)x->dims[d]);
    if (mode != PAD_CONSTANT && x->dims[d] == 0 && dims[d] > 0)
      return kiln_error(KILN_INVALID_ARGUMENT, "axis %d is empty: there is nothing to pad it with in %s mode", d, mode == PAD_EDGE ? "edge" : "reflect");
  }
  kiln_tensor *y;
  if ((s = kx_output(c, 0, x->dtype, r, dims, &y))) return s;
  if (kiln_tensor_numel(y) == 0) return NULL;
  if (r == 0) {
    memcpy(y->data, x->data, kiln_dtype_size(x->dtype));
    return kx_own_strings(y);
  }
  int64_t *map[KILN_MAX_RANK], *buf;
  size_t total = 0;
  for (int d = 0; d < r; d++) total += (size_t)dims[d];
  if (!(buf = kx_scratch(c, total * sizeof *buf))) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  for (int d = 0; d < r; d++) {
    map[d] = buf;
    buf += dims[d];
    for (int64_t o = 0; o < dims[d]; o++) map[d][o] = pad_source(mode, o - pads[d], x->dims[d]);
  }
  int64_t lo = pads[r - 1] > 0 ? pads[r - 1] : 0, hi = x->dims[r - 1] + pads[r - 1];
  if (hi > dims[r - 1]) hi = dims[r - 1];
  pad_job j = {x, y, (const int64_t *const *)map, value.bytes, lo, hi};
  kx_parallel(c, kx_prod(dims, 0, r - 1), (double)dims[r - 1], pad_range, &j);
  return kx_own_strings(y);
}

/* ------------------------------------------------------------------ DepthToSpace, SpaceToDepth */

static kiln_status blocksize(const kx_ctx *c, const kiln_tensor *x, int64_t *b) {
  *b = kx_attr_int(c->node->proto, "blocksize", 0);
  if (*b <= 0 || *b > ((int64_t)1 << 24)) return kiln_error(KILN_INVALID_ARGUMENT, "blocksize %lld must be positive", (long long)*b);
  if (x->rank != 4) return kiln_error(KILN_INVALID_ARGUMENT, "input must be 4-D (N, C, H, W), got rank %d", x->rank);
  return NULL;
}

static kiln_status depth_to_space_prepare(kx_node *n) {
  char mode[8];
  kx_attr_string(n->proto, "mode", "DCR", mode, sizeof mode);
  if (strcmp(mode, "DCR") && strcmp(mode, "CRD")) return kiln_error(KILN_INVALID_ARGUMENT, "mode '%s' is not DCR or CRD", mode);
  return NULL;
}

/* DepthToSpace: (N, C, H, W) -> (N, C/b², H*b, W*b), reading channels as (b, b, C/b²) in DCR mode
 * and as (C/b², b, b) in CRD mode. The output is walked as (N, C', H, b, W, b). */
static kiln_status depth_to_space_run(kx_ctx *c) {
  const kiln_tensor *x;
  kiln_status s;
  int64_t b;
  if ((s = kx_require(c, 0, &x)) || (s = blocksize(c, x, &b))) return s;
  int64_t n = x->dims[0], ch = x->dims[1], h = x->dims[2], w = x->dims[3], e = (int64_t)kiln_dtype_size(x->dtype);
  if (ch % (b * b)) return kiln_error(KILN_INVALID_ARGUMENT, "channels %lld are not a multiple of blocksize² = %lld", (long long)ch, (long long)(b * b));
  char mode[8];
  int crd = strcmp(kx_attr_string(c->node->proto, "mode", "DCR", mode, sizeof mode), "CRD") == 0;
  int64_t cc = ch / (b * b), hw = h * w * e;
  gather_plan p = {.src = x->data, .rank = 6, .dims = {n, cc, h, b, w, b},
                   .stride = {x->strides[0], crd ? b * b * hw : hw, w * e, crd ? b * hw : b * cc * hw, e, crd ? hw : cc * hw}};
  return plan_output(c, x, 4, (int64_t[]){n, cc, h * b, w * b}, &p);
}

/* SpaceToDepth: (N, C, H, W) -> (N, C*b², H/b, W/b), the inverse of DepthToSpace in DCR mode. The
 * output is walked as (N, b, b, C, H/b, W/b). */
static kiln_status space_to_depth_run(kx_ctx *c) {
  const kiln_tensor *x;
  kiln_status s;
  int64_t b;
  if ((s = kx_require(c, 0, &x)) || (s = blocksize(c, x, &b))) return s;
  int64_t n = x->dims[0], ch = x->dims[1], h = x->dims[2], w = x->dims[3], e = (int64_t)kiln_dtype_size(x->dtype);
  if (h % b || w % b)
    return kiln_error(KILN_INVALID_ARGUMENT, "height %lld and width %lld must be multiples of blocksize %lld", (long long)h, (long long)w, (long long)b);
  gather_plan p = {.src = x->data, .rank = 6, .dims = {n, b, b, ch, h / b, w / b},
                   .stride = {x->strides[0], w * e, e, h * w * e, b * w * e, b * e}};
  return plan_output(c, x, 4, (int64_t[]){n, ch * b * b, h / b, w / b}, &p);
}

/* ------------------------------------------------------------------ Trilu */

typedef struct trilu_job {
  const char *src;
  char *dst;
  int64_t rows, cols, k;
  size_t es;
  int upper;
} trilu_job;

/* Items are matrix rows; each keeps columns j with j - i >= k (upper) or j - i <= k (lower). */
static void trilu_range(void *arg, int64_t begin, int64_t end) {
  const trilu_job *j = arg;
  for (int64_t r = begin; r < end; r++) {
    int64_t i = r % j->rows, edge = i + j->k + (j->upper ? 0 : 1); /* first column kept / dropped */
    edge = edge < 0 ? 0 : edge > j->cols ? j->cols : edge;
    size_t row = (size_t)j->cols * j->es, cut = (size_t)edge * j->es;
    const char *src = j->src + r * (int64_t)row;
    char *dst = j->dst + r * (int64_t)row;
    if (j->upper) {
      memset(dst, 0, cut);
      memcpy(dst + cut, src + cut, row - cut);
    } else {
      memcpy(dst, src, cut);
      memset(dst + cut, 0, row - cut);
    }
  }
}

static kiln_status trilu_run(kx_ctx *c) {
  const kiln_tensor *x, *k_t = kx_input(c, 1);
  kiln_status s;
  if ((s = kx_require(c, 0, &x))) return s;
  if (x->rank < 2) return kiln_error(KILN_INVALID_ARGUMENT, "input must have rank >= 2, got %d", x->rank);
  double k = 0;
  if (k_t && (s = kx_read_scalar(k_t, "k", &k))) return s;
  int64_t rows = x->dims[x->rank - 2], cols = x->dims[x->rank - 1];
  /* clamped to where it stops mattering, so that i + k cannot overflow */
  k = k < (double)-rows - 1 ? (double)-rows - 1 : k > (double)cols + 1 ? (double)cols + 1 : k;
  kiln_tensor *y;
  if ((s = kx_output(c, 0, x->dtype, x->rank, x->dims, &y))) return s;
  if (kiln_tensor_numel(y) == 0) return NULL;
  trilu_job j = {x->data, y->data, rows, cols, (int64_t)k, kiln_dtype_size(x->dtype), kx_attr_int(c->node->proto, "upper", 1) != 0};
  kx_parallel(c, kiln_tensor_numel(x) / cols, (double)cols, trilu_range, &j);
  return kx_own_strings(y);
}

const kx_op kx_ops_layout[] = {
    {"", "Reshape", 1, 0, NULL, reshape_run, NULL, 1},
    {"", "Flatten", 1, 0, NULL, flatten_run, NULL, 1},
    {"", "Squeeze", 1, 0, NULL, squeeze_run, NULL, 1},
    {"", "Unsqueeze", 1, 0, NULL, unsqueeze_run, NULL, 1},
    {"", "Identity", 1, 0, NULL, identity_run, NULL, 1},
    {"", "Dropout", 1, 0, counter_prepare, dropout_run, NULL, 1, .nondeterministic = 1},
    {"", "Shape", 1, 0, NULL, shape_run, NULL, 0},
    {"", "Size", 1, 0, NULL, size_run, NULL, 0},
    {"", "Transpose", 1, 0, NULL, transpose_run, NULL, 0},
    {"", "Expand", 8, 0, NULL, expand_run, NULL, 0},
    {"", "Tile", 6, 0, NULL, tile_run, NULL, 0},
    {"", "Concat", 1, 0, NULL, concat_run, NULL, 0},
    {"", "Split", 2, 0, NULL, split_run, NULL, 0},
    {"", "Slice", 1, 0, NULL, slice_run, NULL, 0},
    {"", "Pad", 1, 0, pad_prepare, pad_run, NULL, 0},
    {"", "DepthToSpace", 1, 0, depth_to_space_prepare, depth_to_space_run, NULL, 0},
    {"", "SpaceToDepth", 1, 0, NULL, space_to_depth_run, NULL, 0},
    {"", "Trilu", 14, 0, NULL, trilu_run, NULL, 0},
    {0},
};
