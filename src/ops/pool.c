/* Pooling: MaxPool, AveragePool, LpPool, their Global* forms, MaxUnpool and MaxRoiPool.
 *
 * Windowed pooling works on a 3-D geometry (1-D and 2-D inputs get leading unit dimensions):
 * shapes, strides, dilations and pads are resolved once per run, and every window is checked to
 * hold at least one input element. float32 (and float16, bfloat16, int8, uint8, widened to float)
 * runs a row kernel: each item is one output row, and max and average pooling take AVX2 paths for
 * the common windows. 2x2 stride 2 without padding reads its two input rows directly: the vertical
 * max (or sum) of 16 columns, then that of their even and odd columns, split by shuffles, gives
 * eight outputs. Other windows of column stride 1 or 2 (3x3/2 with padding, 3x3/1) combine the
 * window's input rows into a row buffer padded with the identity, from which every tap of eight
 * outputs is a register load (stride 2: even and odd columns again). The remaining windows take
 * one contiguous or strided pass per kernel tap over the interior columns (windows that do not
 * touch the padding along W). double, and MaxPool's Indices output, use a per-element path that
 * reads and writes elements as double. */
#include "ops/util.h"
#include "ops/vmath.h"

#include <immintrin.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_SPATIAL = 3 };

typedef enum pool_kind { P_MAX, P_AVG, P_LP } pool_kind;
typedef enum auto_pad { PAD_NOTSET, PAD_SAME_UPPER, PAD_SAME_LOWER, PAD_VALID } auto_pad;

typedef struct pool_params {
  pool_kind kind;
  int spatial; /* spatial dimensions: the length of kernel_shape */
  int64_t kernel[MAX_SPATIAL], strides[MAX_SPATIAL], dilations[MAX_SPATIAL], pads[2 * MAX_SPATIAL];
  auto_pad pad_mode;
  int ceil_mode, count_include_pad, storage_order;
  float p; /* LpPool's norm */
} pool_params;

/* ---------------------------------------------------------------- attributes */

/* Kernel sizes, strides, dilations and pads above this are rejected, which keeps every window
 * computation ((k - 1) * d, o * s + pads) far from int64 overflow. */
#define MAX_WINDOW_ATTR INT64_C(2147483647)

/* An ints attribute of `count` values in [min, MAX_WINDOW_ATTR]; `def` for each when absent or empty. */
static kiln_status read_ints_attr(const kx_node *n, const char *name, int64_t count, int64_t min, int64_t def,
                                  int64_t *out) {
  const int64_t *v;
  int64_t len = kx_attr_ints(n->proto, name, &v);
  if (len <= 0) {
    for (int64_t i = 0; i < count; i++) out[i] = def;
    return NULL;
  }
  if (len != count)
    return kiln_error(KILN_INVALID_ARGUMENT, "%s has %lld values, expected %lld", name, (long long)len,
                      (long long)count);
  for (int64_t i = 0; i < count; i++) {
    if (v[i] < min || v[i] > MAX_WINDOW_ATTR)
      return kiln_error(KILN_INVALID_ARGUMENT, "%s[%lld] is %lld, outside [%lld, %lld]", name, (long long)i,
                        (long long)v[i], (long long)min, (long long)MAX_WINDOW_ATTR);
    out[i] = v[i];
  }
  return NULL;
}

static kiln_status parse_pool_params(kx_node *n, pool_kind kind) {
  pool_params *p = calloc(1, sizeof *p);
  if (!p) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  n->params = p;
  p->kind = kind;
  const int64_t *kernel;
  int64_t spatial = kx_attr_ints(n->proto, "kernel_shape", &kernel);
  if (spatial < 1) return kiln_error(KILN_INVALID_ARGUMENT, "kernel_shape is required");
  if (spatial > MAX_SPATIAL)
    return kiln_error(KILN_UNIMPLEMENTED, "pooling over %lld spatial dimensions (at most %d are supported)",
                      (long long)spatial, MAX_SPATIAL);
  p->spatial = (int)spatial;
  kiln_status s;
  if ((s = read_ints_attr(n, "kernel_shape", spatial, 1, 1, p->kernel)) ||
      (s = read_ints_attr(n, "strides", spatial, 1, 1, p->strides)) ||
      (s = read_ints_attr(n, "dilations", spatial, 1, 1, p->dilations)))
    return s;
  const int64_t *pads;
  int64_t n_pads = kx_attr_ints(n->proto, "pads", &pads);
  if (n_pads > 0 && n_pads != 2 * spatial)
    return kiln_error(KILN_INVALID_ARGUMENT,
                      "pads has %lld values, expected %lld (a begin and an end for each of the %lld spatial axes)",
                      (long long)n_pads, (long long)(2 * spatial), (long long)spatial);
  if ((s = read_ints_attr(n, "pads", 2 * spatial, 0, 0, p->pads))) return s;
  char mode[32];
  kx_attr_string(n->proto, "auto_pad", "NOTSET", mode, sizeof mode);
  static const char *const modes[] = {"NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"};
  int mode_index = -1;
  for (int i = 0; i < 4; i++)
    if (strcmp(mode, modes[i]) == 0) mode_index = i;
  if (mode_index < 0)
    return kiln_error(KILN_INVALID_ARGUMENT, "auto_pad '%s' is not NOTSET, SAME_UPPER, SAME_LOWER or VALID", mode);
  p->pad_mode = (auto_pad)mode_index;
  p->ceil_mode = kx_attr_int(n->proto, "ceil_mode", 0) != 0;
  p->count_include_pad = kx_attr_int(n->proto, "count_include_pad", 0) != 0;
  int64_t order = kx_attr_int(n->proto, "storage_order", 0);
  if (order != 0 && order != 1)
    return kiln_error(KILN_INVALID_ARGUMENT, "storage_order must be 0 or 1, got %lld", (long long)order);
  p->storage_order = (int)order;
  /* LpPool's p: a float in opset 1, an int after */
  p->p = n->opset < 2 ? kx_attr_float(n->proto, "p", 2.0f) : (float)kx_attr_int(n->proto, "p", 2);
  if (kind == P_LP && !(p->p > 0)) return kiln_error(KILN_INVALID_ARGUMENT, "p must be positive, got %g", p->p);
  return NULL;
}

static kiln_status max_pool_prepare(kx_node *n) { return parse_pool_params(n, P_MAX); }
static kiln_status avg_pool_prepare(kx_node *n) { return parse_pool_params(n, P_AVG); }
static kiln_status lp_pool_prepare(kx_node *n) { return parse_pool_params(n, P_LP); }

/* ---------------------------------------------------------------- geometry */

/* Dimension i of the 3-D geometry: D, H, W. Inputs with fewer spatial axes get unit ones in front. */
typedef struct pool_geom {
  pool_kind kind;
  int count_include_pad;
  float p;
  int64_t planes; /* N * C */
  int64_t in[3], out[3], k[3], s[3], d[3], pad[3], pad_end[3];
} pool_geom;

/* A window along one dimension: its first position (possibly in the padding) and the range of
 * kernel taps [lo, hi) that land inside the input. */
typedef struct window {
  int64_t start, lo, hi;
} window;

static int64_t ceil_div(int64_t a, int64_t b) { return a >= 0 ? (a + b - 1) / b : -(-a / b); }

static window window_at(const pool_geom *g, int dim, int64_t o) {
  window w;
  int64_t d = g->d[dim];
  w.start = o * g->s[dim] - g->pad[dim];
  w.lo = w.start >= 0 ? 0 : d == 1 ? -w.start : ceil_div(-w.start, d);
  w.hi = d == 1 ? g->in[dim] - w.start : ceil_div(g->in[dim] - w.start, d);
  if (w.hi > g->k[dim]) w.hi = g->k[dim];
  if (w.hi < w.lo) w.hi = w.lo;
  return w;
}

/* Elements AveragePool divides by along one dimension: the taps inside the input, or with
 * count_include_pad the taps inside the padded input. */
static int64_t window_count(const pool_geom *g, int dim, const window *w) {
  if (!g->count_include_pad) return w->hi - w->lo;
  int64_t end = w->start + g->k[dim], limit = g->in[dim] + g->pad_end[dim];
  return (end < limit ? end : limit) - w->start;
}

/* Resolves output sizes and pads for an input of the node's rank; fills the output dims. */
static kiln_status pool_geometry(const pool_params *p, const kiln_tensor *x, pool_geom *g, int64_t *out_dims) {
  if (x->rank != 2 + p->spatial)
    return kiln_error(KILN_INVALID_ARGUMENT,
                      "input has rank %d, expected %d ([N, C] and the %d spatial axes of kernel_shape)", x->rank,
                      2 + p->spatial, p->spatial);
  memset(g, 0, sizeof *g);
  g->kind = p->kind;
  g->count_include_pad = p->count_include_pad;
  g->p = p->p;
  g->planes = x->dims[0] * x->dims[1];
  out_dims[0] = x->dims[0];
  out_dims[1] = x->dims[1];
  int off = MAX_SPATIAL - p->spatial;
  for (int i = 0; i < MAX_SPATIAL; i++) g->in[i] = g->out[i] = g->k[i] = g->s[i] = g->d[i] = 1;
  for (int i = 0; i < p->spatial; i++) {
    int64_t in = x->dims[2 + i], k = p->kernel[i], s = p->strides[i], d = p->dilations[i];
    int64_t extent = (k - 1) * d + 1, pb = 0, pe = 0, out;
    switch (p->pad_mode) {
    case PAD_SAME_UPPER:
    case PAD_SAME_LOWER: {
      out = ceil_div(in, s);
      int64_t total = (out - 1) * s + extent - in;
      if (total < 0) total = 0;
      pb = p->pad_mode == PAD_SAME_UPPER ? total / 2 : total - total / 2;
      pe = total - pb;
      break;
    }
    default:
      if (p->pad_mode == PAD_NOTSET) {
        pb = p->pads[i];
        pe = p->pads[p->spatial + i];
      }
      if (in + pb + pe < extent)
        return kiln_error(
            KILN_INVALID_ARGUMENT,
            "kernel extent %lld is larger than spatial axis %d of the padded input (%lld + pads %lld, %lld)",
            (long long)extent, i, (long long)in, (long long)pb, (long long)pe);
      out = (p->ceil_mode ? ceil_div(in + pb + pe - extent, s) : (in + pb + pe - extent) / s) + 1;
      /* ceil_mode: a last window that would start in the end padding is dropped */
      if (p->ceil_mode && (out - 1) * s >= in + pb) out--;
    }
    int j = off + i;
    g->in[j] = in;
    g->out[j] = out;
    g->k[j] = k;
    g->s[j] = s;
    g->d[j] = d;
    g->pad[j] = pb;
    g->pad_end[j] = pe;
    out_dims[2 + i] = out;
    for (int64_t o = 0; o < out; o++) {
      window w = window_at(g, j, o);
      if (w.lo == w.hi)
        return kiln_error(
            KILN_INVALID_ARGUMENT,
            "pooling window %lld along spatial axis %d lies entirely in the padding (pads %lld, %lld; kernel %lld)",
            (long long)o, i, (long long)pb, (long long)pe, (long long)k);
    }
  }
  return NULL;
}

/* ---------------------------------------------------------------- float32 row kernel */

/* Input columns one pass of the row kernel combines (8 KB on the stack, and as much again for the
 * even/odd split of stride 2). Windows wider than this take the per-element path. */
enum { SPAN = 2048 };

/* How float rows are pooled: 2x2/2 windows from the input rows (pool_2x2_rows); column strides 1
 * and 2 through padded row buffers (pool_rows_padded); anything else one pass per tap. */
typedef enum row_path { PATH_TAPS, PATH_PADDED, PATH_2X2 } row_path;

typedef struct pool_job {
  pool_geom g;
  int64_t w_lo, w_hi; /* output columns whose windows lie inside the input along W */
  int64_t chunk;      /* output columns per pass, so that their input columns fit in SPAN */
  row_path path;
  int64_t padded; /* PATH_PADDED: the row buffers' length in floats */
  const float *x;
  float *y;
  /* per-element path */
  const kiln_tensor *xt;
  kiln_tensor *yt, *indices;
  int storage_order;
} pool_job;

/* v (op)= x over n columns: combines the input rows of the window along D and H. */
static void combine_rows(pool_kind kind, float p, float *restrict v, const float *restrict x, int64_t n) {
  int64_t i = 0;
  switch (kind) {
  case P_MAX:
    for (; i + KX_LANES <= n; i += KX_LANES)
      for (int k = 0; k < KX_LANES; k++) v[i + k] = x[i + k] > v[i + k] ? x[i + k] : v[i + k];
    for (; i < n; i++) v[i] = x[i] > v[i] ? x[i] : v[i];
    break;
  case P_AVG:
    for (; i + KX_LANES <= n; i += KX_LANES)
      for (int k = 0; k < KX_LANES; k++) v[i + k] += x[i + k];
    for (; i < n; i++) v[i] += x[i];
    break;
  case P_LP:
    for (; i < n; i++) v[i] += powf(fabsf(x[i]), p);
    break;
  }
}

/* y[i] (op)= v[i * s] over n columns: one kernel tap for a run of interior windows. Unit strides
 * vectorize; gcc does not vectorize other strided loads, but a pass per tap still beats walking
 * each window (whose short tap loop mispredicts its exit at every output). */
static void combine_tap(pool_kind kind, float *restrict y, const float *restrict v, int64_t s, int64_t n) {
  int64_t i = 0;
  if (kind == P_MAX && s == 1) {
    for (; i + KX_LANES <= n; i += KX_LANES)
      for (int k = 0; k < KX_LANES; k++) y[i + k] = v[i + k] > y[i + k] ? v[i + k] : y[i + k];
  } else if (s == 1) {
    for (; i + KX_LANES <= n; i += KX_LANES)
      for (int k = 0; k < KX_LANES; k++) y[i + k] += v[i + k];
  }
  if (kind == P_MAX)
    for (; i < n; i++) y[i] = v[i * s] > y[i] ? v[i * s] : y[i];
  else
    for (; i < n; i++) y[i] += v[i * s];
}

/* even[i] = v[2i], odd[i] = v[2i + 1] for the n elements of v: stride-2 windows then read
 * contiguous memory. gcc vectorizes this loop, which loads both elements of each pair. */
static void split_even_odd(float *restrict even, float *restrict odd, const float *restrict v, int64_t n) {
  int64_t i = 0, pairs = n / 2;
  for (; i + KX_LANES <= pairs; i += KX_LANES)
    for (int k = 0; k < KX_LANES; k++) {
      even[i + k] = v[2 * (i + k)];
      odd[i + k] = v[2 * (i + k) + 1];
    }
  for (; i < pairs; i++) {
    even[i] = v[2 * i];
    odd[i] = v[2 * i + 1];
  }
  if (n % 2) even[pairs] = v[n - 1];
}

/* Output columns [from, to) whose windows are clipped by the input's edges along W, walked tap
 * by tap from the row-combined input columns v (v[0] is input column `first`). */
static void combine_edges(const pool_job *j, const float *v, int64_t first, float *y, int64_t from, int64_t to) {
  const pool_geom *g = &j->g;
  for (int64_t o = from; o < to; o++) {
    window w = window_at(g, 2, o);
    const float *vw = v + (w.start - first);
    float acc = vw[w.lo * g->d[2]];
    for (int64_t t = w.lo + 1; t < w.hi; t++) {
      float e = vw[t * g->d[2]];
      acc = g->kind == P_MAX ? (e > acc ? e : acc) : acc + e;
    }
    y[o] = acc;
  }
}

/* Output columns [o0, o1) of one output row. */
static void pool_columns(const pool_job *j, const float *plane, const window *wd, const window *wh, float *y,
                         int64_t o0, int64_t o1) {
  const pool_geom *g = &j->g;
  float v[SPAN];
  int64_t s = g->s[2], d = g->d[2];
  int64_t first = o0 * s - g->pad[2], last = (o1 - 1) * s - g->pad[2] + (g->k[2] - 1) * d + 1;
  first = first < 0 ? 0 : first;
  last = last > g->in[2] ? g->in[2] : last;
  /* v: the window's input rows (along D and H) combined; the first one copied */
  for (int64_t td = wd->lo; td < wd->hi; td++)
    for (int64_t th = wh->lo; th < wh->hi; th++) {
      const float *row = plane + ((wd->start + td * g->d[0]) * g->in[1] + wh->start + th * g->d[1]) * g->in[2] + first;
      if (td > wd->lo || th > wh->lo)
        combine_rows(g->kind, g->p, v, row, last - first);
      else if (g->kind == P_LP)
        for (int64_t i = 0; i < last - first; i++) v[i] = powf(fabsf(row[i]), g->p);
      else
        memcpy(v, row, (size_t)(last - first) * sizeof *v);
    }
  /* the interior: one pass per tap */
  int64_t in0 = j->w_lo > o0 ? j->w_lo : o0, in1 = j->w_hi < o1 ? j->w_hi : o1;
  if (in1 <= in0) {
    combine_edges(j, v, first, y, o0, o1);
    return;
  }
  combine_edges(j, v, first, y, o0, in0);
  int64_t n = in1 - in0, at = in0 * s - g->pad[2] - first; /* tap t of output in0 + i: v[at + i*s + t*d] */
  float even[SPAN / 2 + 1], odd[SPAN / 2];
  for (int64_t t = 0; t < g->k[2]; t++) {
    const float *src = v + at + t * d;
    int64_t step = s;
    if (s == 2) {
      if (t == 0) split_even_odd(even, odd, v + at, last - first - at);
      src = (t * d) % 2 ? odd + (t * d - 1) / 2 : even + t * d / 2;
      step = 1;
    }
    if (t > 0)
      combine_tap(g->kind, y + in0, src, step, n);
    else if (step == 1)
      memcpy(y + in0, src, (size_t)n * sizeof *y);
    else
      for (int64_t i = 0; i < n; i++) y[in0 + i] = src[i * step];
  }
  combine_edges(j, v, first, y, in1, o1);
}

static void scale_row(float *y, float f, int64_t n) {
  int64_t i = 0;
  for (; i + KX_LANES <= n; i += KX_LANES)
    for (int k = 0; k < KX_LANES; k++) y[i + k] *= f;
  for (; i < n; i++) y[i] *= f;
}

/* AveragePool's division for output columns [from, to), whose windows the edges clip. */
static void divide_edges(const pool_geom *g, float *y, int64_t rows, int64_t from, int64_t to) {
  for (int64_t o = from; o < to; o++) {
    window w = window_at(g, 2, o);
    y[o] /= (float)(rows * window_count(g, 2, &w));
  }
}

/* ---------------------------------------------------------------- AVX2 rows for column strides 1 and 2 */

/* The padded row buffer: the window's input rows combined, behind pad[2] identity elements and
 * followed by enough of them that every block of KX_LANES outputs loads whole registers for every tap.
 * Returns its length in floats, or 0 when this path does not serve the geometry (LpPool, dilated
 * or wider-strided columns, rows too long). */
static int64_t padded_row_len(const pool_geom *g) {
  if (g->kind == P_LP || g->d[2] != 1 || (g->s[2] != 1 && g->s[2] != 2)) return 0;
  int64_t blocks = (g->out[2] + KX_LANES - 1) / KX_LANES;
  /* the last block's last load ends before (blocks - 1) * KX_LANES * s + k - 1 + 2 * KX_LANES */
  int64_t reach = (blocks - 1) * KX_LANES * g->s[2] + g->k[2] + 2 * KX_LANES, row = g->pad[2] + g->in[2];
  int64_t len = reach > row ? reach : row;
  return len <= SPAN ? len : 0;
}

/* acc (op)= v. Max keeps acc where v is NaN, as the per-tap loops do. */
static inline __m256 combine8(pool_kind kind, __m256 acc, __m256 v) {
  return kind == P_MAX ? _mm256_max_ps(v, acc) : _mm256_add_ps(acc, v);
}

/* Input rows combined in one pass (more take further passes that start from the result). */
enum { ROWS_PER_PASS = 8 };

/* dst = op over the n rows of w floats (dst may be rows[0]). */
static void combine_into(pool_kind kind, float *dst, const float *const *rows, int n, int64_t w) {
  int64_t i = 0;
  for (; i + KX_LANES <= w; i += KX_LANES) {
    __m256 v = _mm256_loadu_ps(rows[0] + i);
    for (int r = 1; r < n; r++) v = combine8(kind, v, _mm256_loadu_ps(rows[r] + i));
    _mm256_storeu_ps(dst + i, v);
  }
  for (; i < w; i++) {
    float v = rows[0][i];
    for (int r = 1; r < n; r++) v = kind == P_MAX ? (rows[r][i] > v ? rows[r][i] : v) : v + rows[r][i];
    dst[i] = v;
  }
}

/* buf = the input rows of the window along D and H combined, at offset pad[2]; the rest holds the
 * identity (-inf for max, 0 for sums), which no window consists of alone. */
static void fill_padded_row(const pool_job *j, const float *plane, const window *wd, const window *wh, float *buf) {
  const pool_geom *g = &j->g;
  float identity = g->kind == P_MAX ? -INFINITY : 0.0f;
  int64_t at = g->pad[2], w = g->in[2];
  for (int64_t i = 0; i < at; i++) buf[i] = identity;
  const float *rows[ROWS_PER_PASS];
  int n = 0;
  for (int64_t td = wd->lo; td < wd->hi; td++)
    for (int64_t th = wh->lo; th < wh->hi; th++) {
      if (n == ROWS_PER_PASS) {
        combine_into(g->kind, buf + at, rows, n, w);
        rows[0] = buf + at;
        n = 1;
      }
      rows[n++] = plane + ((wd->start + td * g->d[0]) * g->in[1] + wh->start + th * g->d[1]) * w;
    }
  combine_into(g->kind, buf + at, rows, n, w);
  for (int64_t i = at + w; i < j->padded; i++) buf[i] = identity;
}

/* The even and odd columns of the 16 floats at p. shuffle_ps works within 128-bit lanes, so both
 * come out in the lane order 0 1 4 5 2 3 6 7; max and add do not mind, and fix_order restores the
 * order once per block. */
static inline void split_pairs(const float *p, __m256 *even, __m256 *odd) {
  __m256 lo = _mm256_loadu_ps(p), hi = _mm256_loadu_ps(p + KX_LANES);
  *even = _mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(2, 0, 2, 0));
  *odd = _mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(3, 1, 3, 1));
}

static inline __m256 fix_order(__m256 v) {
  return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(v), _MM_SHUFFLE(3, 1, 2, 0)));
}

/* y[i] = op over taps t < k of buf[i * s + t] for the n outputs of a row, s being 1 or 2, eight
 * outputs per block; the last block writes only its outputs. */
static void pool_padded_row(const pool_geom *g, const float *buf, float *y, int64_t n) {
  int64_t k = g->k[2];
  pool_kind kind = g->kind;
  for (int64_t i = 0; i < n; i += KX_LANES) {
    __m256 acc, even, odd;
    if (g->s[2] == 1) {
      acc = _mm256_loadu_ps(buf + i);
      for (int64_t t = 1; t < k; t++) acc = combine8(kind, acc, _mm256_loadu_ps(buf + i + t));
    } else {
      const float *b = buf + 2 * i; /* taps t and t + 1 are the even and odd columns at b + t */
      split_pairs(b, &acc, &odd);
      if (k > 1) acc = combine8(kind, acc, odd);
      for (int64_t t = 2; t < k; t += 2) {
        split_pairs(b + t, &even, &odd);
        acc = combine8(kind, acc, even);
        if (t + 1 < k) acc = combine8(kind, acc, odd);
      }
      acc = fix_order(acc);
    }
    if (n - i >= KX_LANES) {
      _mm256_storeu_ps(y + i, acc);
    } else { /* through the stack: masked stores are slow on AMD */
      float tail[KX_LANES];
      _mm256_storeu_ps(tail, acc);
      for (int64_t l = 0; l < n - i; l++) y[i + l] = tail[l];
    }
  }
}

/* ---------------------------------------------------------------- 2x2/2 windows */

/* Whether the geometry is the 2x2 stride-2 window without padding on a 2-D input, every window
 * whole (VGG-style downsampling): output row oh reads input rows 2 oh and 2 oh + 1 directly. */
static int is_2x2_s2(const pool_geom *g) {
  return g->kind != P_LP && g->in[0] == 1 && g->out[0] == 1 && g->k[1] == 2 && g->k[2] == 2 && g->s[1] == 2 &&
         g->s[2] == 2 && g->d[1] == 1 && g->d[2] == 1 && g->pad[1] == 0 && g->pad[2] == 0 &&
         2 * g->out[1] <= g->in[1] && 2 * g->out[2] <= g->in[2];
}

/* The first `count` (1 to 16) of 16 floats at p as two registers, zeros after them; nothing past
 * them is read. */
static inline void load_up_to_16(const float *p, int64_t count, __m256 *lo, __m256 *hi) {
  __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  *lo = _mm256_maskload_ps(p, _mm256_cmpgt_epi32(_mm256_set1_epi32((int)count), lane));
  *hi = count > KX_LANES ? _mm256_maskload_ps(p + KX_LANES, _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(count - KX_LANES)), lane))
                      : _mm256_setzero_ps();
}

/* Eight outputs from 16 columns of the two window rows: the vertical combine, then that of the
 * even and odd columns; averages are scaled by 1/4. */
static inline __m256 pool_2x2_block(pool_kind kind, __m256 a_lo, __m256 a_hi, __m256 b_lo, __m256 b_hi) {
  __m256 lo = combine8(kind, a_lo, b_lo), hi = combine8(kind, a_hi, b_hi);
  __m256 even = _mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(2, 0, 2, 0));
  __m256 odd = _mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(3, 1, 3, 1));
  __m256 v = fix_order(combine8(kind, even, odd));
  return kind == P_MAX ? v : _mm256_mul_ps(v, _mm256_set1_ps(0.25f));
}

/* Output rows [begin, end) of a 2x2/2 pool. */
static void pool_2x2_rows(const pool_job *j, int64_t begin, int64_t end) {
  const pool_geom *g = &j->g;
  int64_t w = g->in[2], n = g->out[2];
  int64_t plane = begin / g->out[1], oh = begin % g->out[1];
  for (int64_t item = begin; item < end; item++) {
    const float *a = j->x + (plane * g->in[1] + 2 * oh) * w, *b = a + w;
    float *y = j->y + item * n;
    int64_t i = 0;
    for (; i + KX_LANES <= n; i += KX_LANES)
      _mm256_storeu_ps(y + i, pool_2x2_block(g->kind, _mm256_loadu_ps(a + 2 * i), _mm256_loadu_ps(a + 2 * i + KX_LANES),
                                             _mm256_loadu_ps(b + 2 * i), _mm256_loadu_ps(b + 2 * i + KX_LANES)));
    if (i < n) { /* the last outputs: masked loads, and a store through the stack (masked stores are slow on AMD) */
      __m256 a_lo, a_hi, b_lo, b_hi;
      float tail[KX_LANES];
      load_up_to_16(a + 2 * i, 2 * (n - i), &a_lo, &a_hi);
      load_up_to_16(b + 2 * i, 2 * (n - i), &b_lo, &b_hi);
      _mm256_storeu_ps(tail, pool_2x2_block(g->kind, a_lo, a_hi, b_lo, b_hi));
      for (int64_t l = 0; l < n - i; l++) y[i + l] = tail[l];
    }
    if (++oh == g->out[1]) {
      oh = 0;
      plane++;
    }
  }
}

/* ---------------------------------------------------------------- float32 rows */

/* An output row (plane, od, oh), stepped through a range without a division per row. */
typedef struct row_cursor {
  int64_t plane, od, oh;
} row_cursor;

static row_cursor cursor_at(const pool_geom *g, int64_t item) {
  row_cursor r = {item / (g->out[1] * g->out[0]), item / g->out[1] % g->out[0], item % g->out[1]};
  return r;
}

static void cursor_next(const pool_geom *g, row_cursor *r) {
  if (++r->oh < g->out[1]) return;
  r->oh = 0;
  if (++r->od < g->out[0]) return;
  r->od = 0;
  r->plane++;
}

/* AveragePool's division and LpPool's root for a finished output row. */
static void finish_row(const pool_job *j, const window *wd, const window *wh, float *y) {
  const pool_geom *g = &j->g;
  if (g->kind == P_AVG) {
    int64_t rows = window_count(g, 0, wd) * window_count(g, 1, wh);
    float inv = 1.0f / (float)(rows * g->k[2]); /* interior windows hold the whole kernel */
    scale_row(y + j->w_lo, inv, j->w_hi - j->w_lo);
    divide_edges(g, y, rows, 0, j->w_lo);
    divide_edges(g, y, rows, j->w_hi, g->out[2]);
  } else if (g->kind == P_LP) {
    for (int64_t o = 0; o < g->out[2]; o++) y[o] = powf(y[o], 1.0f / g->p);
  }
}

/* The AVX2 path for column strides 1 and 2: each row's window rows combined into the buffer, then
 * pooled from it in registers. */
static void pool_rows_padded(const pool_job *j, int64_t begin, int64_t end) {
  const pool_geom *g = &j->g;
  int64_t in_plane = g->in[0] * g->in[1] * g->in[2], out_w = g->out[2];
  float buf[SPAN];
  row_cursor at = cursor_at(g, begin);
  for (int64_t item = begin; item < end; item++, cursor_next(g, &at)) {
    window wd = window_at(g, 0, at.od), wh = window_at(g, 1, at.oh);
    float *y = j->y + item * out_w;
    fill_padded_row(j, j->x + at.plane * in_plane, &wd, &wh, buf);
    pool_padded_row(g, buf, y, out_w);
    finish_row(j, &wd, &wh, y);
  }
}

/* Output rows [begin, end). */
static void pool_rows_f32(void *arg, int64_t begin, int64_t end) {
  const pool_job *j = arg;
  const pool_geom *g = &j->g;
  if (j->path == PATH_2X2) {
    pool_2x2_rows(j, begin, end);
    return;
  }
  if (j->path == PATH_PADDED) {
    pool_rows_padded(j, begin, end);
    return;
  }
  int64_t in_plane = g->in[0] * g->in[1] * g->in[2], out_w = g->out[2];
  row_cursor at = cursor_at(g, begin);
  for (int64_t item = begin; item < end; item++, cursor_next(g, &at)) {
    window wd = window_at(g, 0, at.od), wh = window_at(g, 1, at.oh);
    float *y = j->y + item * out_w;
    for (int64_t o0 = 0; o0 < out_w; o0 += j->chunk)
      pool_columns(j, j->x + at.plane * in_plane, &wd, &wh, y, o0, o0 + j->chunk < out_w ? o0 + j->chunk : out_w);
    finish_row(j, &wd, &wh, y);
  }
}

/* ---------------------------------------------------------------- per-element path */

/* Position of input element (id, ih, iw) within its plane, as MaxPool's Indices count it. */
static int64_t index_in_plane(const pool_geom *g, int storage_order, int64_t id, int64_t ih, int64_t iw) {
  if (storage_order == 0) return (id * g->in[1] + ih) * g->in[2] + iw;
  return (iw * g->in[1] + ih) * g->in[0] + id; /* column-major over the spatial axes */
}

static void pool_elements(void *arg, int64_t begin, int64_t end) {
  const pool_job *j = arg;
  const pool_geom *g = &j->g;
  int64_t in_plane = g->in[0] * g->in[1] * g->in[2];
  for (int64_t o = begin; o < end; o++) {
    int64_t ow = o % g->out[2], oh = o / g->out[2] % g->out[1], od = o / (g->out[2] * g->out[1]) % g->out[0];
    int64_t plane = o / (g->out[2] * g->out[1] * g->out[0]);
    window wd = window_at(g, 0, od), wh = window_at(g, 1, oh), ww = window_at(g, 2, ow);
    double acc = g->kind == P_MAX ? -INFINITY : 0;
    int64_t best = -1;
    for (int64_t td = wd.lo; td < wd.hi; td++)
      for (int64_t th = wh.lo; th < wh.hi; th++)
        for (int64_t tw = ww.lo; tw < ww.hi; tw++) {
          int64_t id = wd.start + td * g->d[0], ih = wh.start + th * g->d[1], iw = ww.start + tw * g->d[2];
          double v = kiln_tensor_get_f64(j->xt, plane * in_plane + (id * g->in[1] + ih) * g->in[2] + iw);
          if (g->kind == P_AVG) {
            acc += v;
          } else if (g->kind == P_LP) {
            acc += pow(fabs(v), g->p);
          } else if (v > acc || best < 0) {
            acc = v;
            best = plane * in_plane + index_in_plane(g, j->storage_order, id, ih, iw);
          }
        }
    if (g->kind == P_AVG)
      acc /= (double)(window_count(g, 0, &wd) * window_count(g, 1, &wh) * window_count(g, 2, &ww));
    else if (g->kind == P_LP)
      acc = pow(acc, 1.0 / g->p);
    kx_set_f64(j->yt, o, acc);
    if (j->indices) ((int64_t *)j->indices->data)[o] = best;
  }
}

/* ---------------------------------------------------------------- running a pool */

/* float32 views of other element types for the row kernel. */
static void widen(const kiln_tensor *t, float *dst, int64_t n) {
  if (t->dtype == KILN_INT8)
    for (int64_t i = 0; i < n; i++) dst[i] = ((const int8_t *)t->data)[i];
  else if (t->dtype == KILN_UINT8)
    for (int64_t i = 0; i < n; i++) dst[i] = ((const uint8_t *)t->data)[i];
  else
    kx_to_float(t->dtype, t->data, dst, n);
}

/* Max-pooled int8/uint8 values are input values: the conversion back is exact. */
static void narrow(kiln_tensor *t, const float *src, int64_t n) {
  if (t->dtype == KILN_INT8)
    for (int64_t i = 0; i < n; i++) ((int8_t *)t->data)[i] = (int8_t)src[i];
  else if (t->dtype == KILN_UINT8)
    for (int64_t i = 0; i < n; i++) ((uint8_t *)t->data)[i] = (uint8_t)src[i];
  else
    kx_from_float(t->dtype, src, t->data, n);
}

static kiln_status run_pool(kx_ctx *c, const pool_geom *g, const kiln_tensor *x, kiln_tensor *y, kiln_tensor *indices,
                            int storage_order) {
  int64_t in_count = kiln_tensor_numel(x), out_count = kiln_tensor_numel(y);
  if (out_count == 0) return NULL;
  pool_job j = {.g = *g, .xt = x, .yt = y, .indices = indices, .storage_order = storage_order};
  int64_t taps = g->k[0] * g->k[1] * g->k[2];
  int64_t extent = (g->k[2] - 1) * g->d[2] + 1;
  if (x->dtype == KILN_DOUBLE || indices || extent > SPAN) {
    kx_parallel(c, out_count, (double)taps * 6, pool_elements, &j);
    return NULL;
  }
  j.chunk = (SPAN - extent) / g->s[2] + 1;
  j.padded = padded_row_len(g);
  j.path = is_2x2_s2(g) ? PATH_2X2 : j.padded ? PATH_PADDED : PATH_TAPS;
  /* interior columns: the window starts at or after 0 and its last tap is before in[2] */
  int64_t s = g->s[2], last_tap = (g->k[2] - 1) * g->d[2];
  j.w_lo = ceil_div(g->pad[2], s);
  j.w_hi = g->in[2] - 1 - last_tap + g->pad[2] < 0 ? 0 : (g->in[2] - 1 - last_tap + g->pad[2]) / s + 1;
  if (j.w_lo > g->out[2]) j.w_lo = g->out[2];
  if (j.w_hi > g->out[2]) j.w_hi = g->out[2];
  if (j.w_hi < j.w_lo) j.w_hi = j.w_lo;
  int64_t rows = out_count / g->out[2];
  double cost = (double)taps * (double)g->out[2] * (g->kind == P_LP ? 20 : 1);
  if (x->dtype == KILN_FLOAT) {
    j.x = x->data;
    j.y = y->data;
    kx_parallel(c, rows, cost, pool_rows_f32, &j);
    return NULL;
  }
  kiln_status st;
  float *buf = kx_scratch_floats(c, in_count + out_count, &st);
  if (!buf) return st;
  widen(x, buf, in_count);
  j.x = buf;
  j.y = buf + in_count;
  kx_parallel(c, rows, cost, pool_rows_f32, &j);
  narrow(y, buf + in_count, out_count);
  return NULL;
}

static kiln_status pool_run(kx_ctx *c) {
  const pool_params *p = c->node->params;
  const kiln_tensor *x;
  kiln_tensor *y, *indices = NULL;
  kiln_status s;
  unsigned types = KX_BIT(KILN_FLOAT) | KX_BIT(KILN_DOUBLE) | KX_BIT(KILN_FLOAT16) | KX_BIT(KILN_BFLOAT16);
  if (p->kind == P_MAX) types |= KX_BIT(KILN_INT8) | KX_BIT(KILN_UINT8);
  pool_geom g;
  int64_t dims[2 + MAX_SPATIAL];
  if ((s = kx_require(c, 0, &x)) || (s = kx_check_dtype(x, 0, types)) || (s = pool_geometry(p, x, &g, dims)) ||
      (s = kx_output(c, 0, x->dtype, x->rank, dims, &y)))
    return s;
  if (p->kind == P_MAX && kx_has_output(c, 1) && (s = kx_output(c, 1, KILN_INT64, x->rank, dims, &indices))) return s;
  return run_pool(c, &g, x, y, indices, p->storage_order);
}

/* ---------------------------------------------------------------- global pooling */

typedef struct global_job {
  pool_kind kind;
  float p;
  int64_t plane;
  const float *x;
  float *y;
} global_job;

static void global_planes_f32(void *arg, int64_t begin, int64_t end) {
  const global_job *j = arg;
  for (int64_t i = begin; i < end; i++) {
    const float *x = j->x + i * j->plane;
    if (j->kind == P_MAX) {
      j->y[i] = kx_max_f32(x, j->plane);
    } else if (j->kind == P_AVG) {
      j->y[i] = kx_sum_f32(x, j->plane) / (float)j->plane;
    } else {
      float s = 0;
      for (int64_t k = 0; k < j->plane; k++) s += powf(fabsf(x[k]), j->p);
      j->y[i] = powf(s, 1.0f / j->p);
    }
  }
}

/* Global pooling reduces each plane of the flattened spatial axes. */
static kiln_status global_run(kx_ctx *c, pool_kind kind) {
  const kiln_tensor *x;
  kiln_tensor *y;
  kiln_status s;
  if ((s = kx_require(c, 0, &x)) || (s = kx_check_dtype(x, 0, KX_FLOATS))) return s;
  if (x->rank < 2)
    return kiln_error(KILN_INVALID_ARGUMENT, "input must have rank >= 2 ([N, C, ...]), got rank %d", x->rank);
  int64_t plane = kx_prod(x->dims, 2, x->rank), planes = x->dims[0] * x->dims[1], dims[KILN_MAX_RANK];
  if (plane == 0) return kiln_error(KILN_INVALID_ARGUMENT, "input has no spatial elements to pool");
  for (int d = 0; d < x->rank; d++) dims[d] = d < 2 ? x->dims[d] : 1;
  float p = c->node->opset < 2 ? kx_attr_float(c->node->proto, "p", 2.0f) : (float)kx_attr_int(c->node->proto, "p", 2);
  if (kind == P_LP && !(p > 0)) return kiln_error(KILN_INVALID_ARGUMENT, "p must be positive, got %g", p);
  if ((s = kx_output(c, 0, x->dtype, x->rank, dims, &y))) return s;
  if (planes == 0) return NULL;
  if (x->dtype == KILN_DOUBLE) { /* a 1-D pool over the plane, on the per-element path */
    pool_geom g = {.kind = kind, .p = p, .planes = planes};
    for (int i = 0; i < MAX_SPATIAL; i++) g.in[i] = g.out[i] = g.k[i] = g.s[i] = g.d[i] = 1;
    g.in[2] = g.k[2] = plane;
    return run_pool(c, &g, x, y, NULL, 0);
  }
  global_job j = {kind, p, plane, x->data, y->data};
  float *buf = NULL;
  if (x->dtype != KILN_FLOAT) {
    if (!(buf = kx_scratch_floats(c, planes * plane + planes, &s))) return s;
    kx_to_float(x->dtype, x->data, buf, planes * plane);
    j.x = buf;
    j.y = buf + planes * plane;
  }
  kx_parallel(c, planes, (double)plane * (kind == P_LP ? 20 : 1), global_planes_f32, &j);
  if (buf) kx_from_float(y->dtype, j.y, y->data, planes);
  return NULL;
}

static kiln_status global_avg_run(kx_ctx *c) { return global_run(c, P_AVG); }
static kiln_status global_max_run(kx_ctx *c) { return global_run(c, P_MAX); }
static kiln_status global_lp_run(kx_ctx *c) { return global_run(c, P_LP); }

/* ---------------------------------------------------------------- MaxUnpool */

static kiln_status max_unpool_prepare(kx_node *n) { return parse_pool_params(n, P_MAX); }

/* Scatters X into zeros at I. The indices address the default output shape, ((in - 1) * stride +
 * kernel - pads); an output_shape input may enlarge it, the default-shaped result then sitting at
 * the start of every axis (as ONNX's reference does). */
static kiln_status max_unpool_run(kx_ctx *c) {
  const pool_params *p = c->node->params;
  const kiln_tensor *x, *ind, *shape = kx_input(c, 2);
  kiln_tensor *y;
  kiln_status s;
  if ((s = kx_require(c, 0, &x)) || (s = kx_require(c, 1, &ind)) || (s = kx_check_dtype(x, 0, KX_FLOATS))) return s;
  if (x->rank != 2 + p->spatial)
    return kiln_error(KILN_INVALID_ARGUMENT,
                      "X has rank %d, expected %d ([N, C] and the %d spatial axes of kernel_shape)", x->rank,
                      2 + p->spatial, p->spatial);
  if (ind->dtype != KILN_INT64)
    return kiln_error(KILN_INVALID_ARGUMENT, "I must be int64, got %s", kiln_dtype_name(ind->dtype));
  if (ind->rank != x->rank || memcmp(ind->dims, x->dims, (size_t)x->rank * sizeof *x->dims) != 0) {
    char a[96], b[96];
    return kiln_error(KILN_INVALID_ARGUMENT, "I %s must have X's shape %s", kiln_tensor_describe(ind, a, sizeof a),
                      kiln_tensor_describe(x, b, sizeof b));
  }
  int64_t inferred[KILN_MAX_RANK], dims[KILN_MAX_RANK];
  inferred[0] = x->dims[0];
  inferred[1] = x->dims[1];
  for (int i = 0; i < p->spatial; i++) {
    if (x->dims[2 + i] > INT64_MAX / 4 / p->strides[i]) /* attributes are bounded; this bounds the product */
      return kiln_error(KILN_INVALID_ARGUMENT, "X's spatial axis %d (%lld) times stride %lld is too large", i,
                        (long long)x->dims[2 + i], (long long)p->strides[i]);
    inferred[2 + i] = (x->dims[2 + i] - 1) * p->strides[i] + p->kernel[i] - p->pads[i] - p->pads[p->spatial + i];
    if (inferred[2 + i] < 0)
      return kiln_error(KILN_INVALID_ARGUMENT, "the output size along spatial axis %d would be negative (%lld)", i,
                        (long long)inferred[2 + i]);
  }
  memcpy(dims, inferred, sizeof dims);
  if (shape) {
    int count;
    if ((s = kx_read_ints(shape, "output_shape", dims, KILN_MAX_RANK, &count))) return s;
    if (count != x->rank)
      return kiln_error(KILN_INVALID_ARGUMENT, "output_shape has %d values, X has rank %d", count, x->rank);
    for (int d = 0; d < x->rank; d++)
      if (dims[d] < inferred[d])
        return kiln_error(KILN_INVALID_ARGUMENT, "output_shape[%d] is %lld, smaller than the unpooled size %lld", d,
                          (long long)dims[d], (long long)inferred[d]);
  }
  if ((s = kx_output(c, 0, x->dtype, x->rank, dims, &y))) return s;
  memset(y->data, 0, kiln_tensor_nbytes(y)); /* all-zero bits are 0.0 in every float type */
  int64_t n = kiln_tensor_numel(x), limit = kx_prod(inferred, 0, x->rank);
  const int64_t *idx = ind->data;
  size_t elem = kiln_dtype_size(x->dtype);
  for (int64_t i = 0; i < n; i++) {
    if (idx[i] < 0 || idx[i] >= limit)
      return kiln_error(KILN_INVALID_ARGUMENT, "I[%lld] is %lld, outside the unpooled tensor's %lld elements",
                        (long long)i, (long long)idx[i], (long long)limit);
    int64_t rest = idx[i], at = 0, scale = 1; /* coordinates in the inferred shape, placed in y */
    for (int d = x->rank - 1; d >= 0; d--) {
      at += rest % inferred[d] * scale;
      rest /= inferred[d];
      scale *= dims[d];
    }
    memcpy((char *)y->data + at * elem, (const char *)x->data + i * elem, elem);
  }
  return NULL;
}

/* ---------------------------------------------------------------- MaxRoiPool */

/* Caffe's ROI max pooling: each ROI (batch, x1, y1, x2, y2), scaled and rounded to input cells, is
 * divided into pooled_shape bins whose maxima form the output; empty bins give 0. */
static kiln_status max_roi_pool_run(kx_ctx *c) {
  const kiln_tensor *x, *rois;
  kiln_tensor *y;
  kiln_status s;
  if ((s = kx_require(c, 0, &x)) || (s = kx_require(c, 1, &rois)) || (s = kx_check_dtype(x, 0, KX_FLOATS)) ||
      (s = kx_check_dtype(rois, 1, KX_FLOATS)))
    return s;
  if (x->rank != 4) return kiln_error(KILN_INVALID_ARGUMENT, "X must be [N, C, H, W], got rank %d", x->rank);
  if (rois->rank != 2 || rois->dims[1] != 5) {
    char a[96];
    return kiln_error(KILN_INVALID_ARGUMENT, "rois must be [num_rois, 5], got %s",
                      kiln_tensor_describe(rois, a, sizeof a));
  }
  const int64_t *pooled;
  if (kx_attr_ints(c->node->proto, "pooled_shape", &pooled) != 2 || pooled[0] < 1 || pooled[1] < 1)
    return kiln_error(KILN_INVALID_ARGUMENT, "pooled_shape must be two positive values");
  double scale = kx_attr_float(c->node->proto, "spatial_scale", 1.0f);
  int64_t n_rois = rois->dims[0], channels = x->dims[1], height = x->dims[2], width = x->dims[3];
  int64_t ph = pooled[0], pw = pooled[1], dims[4] = {n_rois, channels, ph, pw};
  if ((s = kx_output(c, 0, x->dtype, 4, dims, &y))) return s;
  for (int64_t r = 0; r < n_rois; r++) {
    double roi[5];
    for (int k = 0; k < 5; k++) roi[k] = kiln_tensor_get_f64(rois, r * 5 + k);
    if (!(roi[0] >= 0 && roi[0] < (double)x->dims[0]))
      return kiln_error(KILN_INVALID_ARGUMENT, "rois[%lld] has batch index %g, outside [0, %lld)", (long long)r, roi[0],
                        (long long)x->dims[0]);
    for (int k = 1; k < 5; k++)
      if (!(fabs(roi[k] * scale) < 1e15))
        return kiln_error(KILN_INVALID_ARGUMENT, "rois[%lld] has coordinate %g, not a finite position", (long long)r,
                          roi[k]);
    int64_t batch = (int64_t)roi[0];
    int64_t x1 = (int64_t)round(roi[1] * scale), y1 = (int64_t)round(roi[2] * scale);
    int64_t x2 = (int64_t)round(roi[3] * scale), y2 = (int64_t)round(roi[4] * scale);
    int64_t roi_h = y2 - y1 + 1 > 1 ? y2 - y1 + 1 : 1, roi_w = x2 - x1 + 1 > 1 ? x2 - x1 + 1 : 1;
    double bin_h = (double)roi_h / (double)ph, bin_w = (double)roi_w / (double)pw;
    for (int64_t ch = 0; ch < channels; ch++) {
      int64_t plane = (batch * channels + ch) * height * width, out = ((r * channels + ch) * ph) * pw;
      for (int64_t i = 0; i < ph; i++)
        for (int64_t k = 0; k < pw; k++) {
          int64_t h0 = (int64_t)floor((double)i * bin_h) + y1, h1 = (int64_t)ceil((double)(i + 1) * bin_h) + y1;
          int64_t w0 = (int64_t)floor((double)k * bin_w) + x1, w1 = (int64_t)ceil((double)(k + 1) * bin_w) + x1;
          h0 = h0 < 0 ? 0 : h0 > height ? height : h0;
          h1 = h1 < 0 ? 0 : h1 > height ? height : h1;
          w0 = w0 < 0 ? 0 : w0 > width ? width : w0;
          w1 = w1 < 0 ? 0 : w1 > width ? width : w1;
          double m = h1 > h0 && w1 > w0 ? -INFINITY : 0;
          for (int64_t h = h0; h < h1; h++)
            for (int64_t w = w0; w < w1; w++) {
              double v = kiln_tensor_get_f64(x, plane + h * width + w);
              m = v > m ? v : m;
            }
          kx_set_f64(y, out + i * pw + k, m);
        }
    }
  }
  return NULL;
}

const kx_op kx_ops_pool[] = {
    {"", "MaxPool", 1, 0, max_pool_prepare, pool_run, NULL, 0},
    {"", "AveragePool", 1, 0, avg_pool_prepare, pool_run, NULL, 0},
    {"", "LpPool", 1, 0, lp_pool_prepare, pool_run, NULL, 0},
    {"", "GlobalAveragePool", 1, 0, NULL, global_avg_run, NULL, 0},
    {"", "GlobalMaxPool", 1, 0, NULL, global_max_run, NULL, 0},
    {"", "GlobalLpPool", 1, 0, NULL, global_lp_run, NULL, 0},
    {"", "MaxUnpool", 9, 0, max_unpool_prepare, max_unpool_run, NULL, 0},
    {"", "MaxRoiPool", 1, 0, NULL, max_roi_pool_run, NULL, 0},
    {0},
};
