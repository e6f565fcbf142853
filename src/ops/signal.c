/* Signal processing: DFT, STFT, the Hann / Hamming / Blackman windows and MelWeightMatrix (opset 17).
 *
 * Every transform runs in double precision on interleaved (re, im) buffers, whatever the tensor's
 * float type. A length that is a power of two uses an iterative radix-2 FFT; any other length uses
 * Bluestein's algorithm (the DFT rewritten as a convolution, done with a power-of-two FFT), so every
 * length costs O(n log n). The tables a length needs (twiddles, chirp, chirp filter) are built once
 * per run and shared by all lines; each worker owns one line buffer. */
#include "ops/util.h"

#include <math.h>
#include <string.h>

#define PI 3.14159265358979323846

/* ------------------------------------------------------------------ FFT */

typedef struct fft_plan {
  int64_t n;       /* transform length */
  int64_t m;       /* radix-2 length run: n itself, or Bluestein's padded convolution length */
  double *twiddle; /* m/2 roots e^(-2*pi*i*k/m) */
  double *chirp;   /* Bluestein only: n values e^(-pi*i*k^2/n) */
  double *filter;  /* Bluestein only: the FFT of the conjugated, mirrored chirp (m values) */
} fft_plan;

static int is_pow2(int64_t n) { return n > 0 && (n & (n - 1)) == 0; }

static int64_t fft_padded_length(int64_t n) {
  if (is_pow2(n)) return n;
  int64_t m = 1;
  while (m < 2 * n - 1) m <<= 1;
  return m;
}

/* Doubles the plan's tables take. */
static size_t fft_table_doubles(int64_t n) {
  int64_t m = fft_padded_length(n);
  return (size_t)(m + (m == n ? 0 : 2 * n + 2 * m));
}

/* In-place radix-2 FFT of m = 2^k complex values; tw holds the m/2 roots for length m. */
static void fft_pow2(double *x, int64_t m, const double *tw) {
  for (int64_t i = 1, j = 0; i < m; i++) { /* bit-reversal permutation */
    int64_t bit = m >> 1;
    for (; j & bit; bit >>= 1) j ^= bit;
    j ^= bit;
    if (i < j) {
      double re = x[2 * i], im = x[2 * i + 1];
      x[2 * i] = x[2 * j], x[2 * i + 1] = x[2 * j + 1];
      x[2 * j] = re, x[2 * j + 1] = im;
    }
  }
  for (int64_t len = 2; len <= m; len <<= 1) {
    int64_t half = len / 2, step = m / len;
    for (int64_t start = 0; start < m; start += len)
      for (int64_t k = 0; k < half; k++) {
        double wr = tw[2 * k * step], wi = tw[2 * k * step + 1];
        double *a = x + 2 * (start + k), *b = a + 2 * half;
        double tr = b[0] * wr - b[1] * wi, ti = b[0] * wi + b[1] * wr;
        b[0] = a[0] - tr, b[1] = a[1] - ti;
        a[0] += tr, a[1] += ti;
      }
  }
}

static void conjugate(double *x, int64_t count) {
  for (int64_t k = 0; k < count; k++) x[2 * k + 1] = -x[2 * k + 1];
}

/* Builds the plan's tables in `tables` (fft_table_doubles(n) doubles). */
static void fft_plan_init(fft_plan *p, int64_t n, double *tables) {
  p->n = n;
  p->m = fft_padded_length(n);
  p->twiddle = tables;
  for (int64_t k = 0; k < p->m / 2; k++) {
    double a = -2 * PI * (double)k / (double)p->m;
    p->twiddle[2 * k] = cos(a), p->twiddle[2 * k + 1] = sin(a);
  }
  p->chirp = p->filter = NULL;
  if (p->m == n) return;
  p->chirp = tables + p->m;
  p->filter = p->chirp + 2 * n;
  for (int64_t k = 0; k < n; k++) {
    /* k^2 mod 2n keeps the angle small, so large k lose no precision */
    double a = -PI * (double)((uint64_t)k * (uint64_t)k % (uint64_t)(2 * n)) / (double)n;
    p->chirp[2 * k] = cos(a), p->chirp[2 * k + 1] = sin(a);
  }
  memset(p->filter, 0, (size_t)p->m * 2 * sizeof(double));
  for (int64_t k = 0; k < n; k++) {
    double re = p->chirp[2 * k], im = -p->chirp[2 * k + 1];
    p->filter[2 * k] = re, p->filter[2 * k + 1] = im;
    if (k) p->filter[2 * (p->m - k)] = re, p->filter[2 * (p->m - k) + 1] = im;
  }
  fft_pow2(p->filter, p->m, p->twiddle);
}

/* Forward DFT of the n values at the start of x, in place; x holds room for m complex values. */
static void fft_run(const fft_plan *p, double *x) {
  if (!p->chirp) {
    fft_pow2(x, p->m, p->twiddle);
    return;
  }
  /* Bluestein: X_k = c_k * sum_j (x_j c_j) conj(c_(k-j)), a circular convolution of length m */
  const double *c = p->chirp, *f = p->filter;
  for (int64_t k = 0; k < p->n; k++) {
    double re = x[2 * k] * c[2 * k] - x[2 * k + 1] * c[2 * k + 1];
    double im = x[2 * k] * c[2 * k + 1] + x[2 * k + 1] * c[2 * k];
    x[2 * k] = re, x[2 * k + 1] = im;
  }
  memset(x + 2 * p->n, 0, (size_t)(p->m - p->n) * 2 * sizeof(double));
  fft_pow2(x, p->m, p->twiddle);
  for (int64_t k = 0; k < p->m; k++) { /* multiply by the filter, conjugated for the inverse below */
    double re = x[2 * k] * f[2 * k] - x[2 * k + 1] * f[2 * k + 1];
    double im = x[2 * k] * f[2 * k + 1] + x[2 * k + 1] * f[2 * k];
    x[2 * k] = re, x[2 * k + 1] = -im;
  }
  fft_pow2(x, p->m, p->twiddle); /* inverse FFT = conj(FFT(conj(.))) / m */
  double scale = 1.0 / (double)p->m;
  for (int64_t k = 0; k < p->n; k++) {
    double re = x[2 * k] * scale, im = -x[2 * k + 1] * scale;
    x[2 * k] = re * c[2 * k] - im * c[2 * k + 1];
    x[2 * k + 1] = re * c[2 * k + 1] + im * c[2 * k];
  }
}

/* ------------------------------------------------------------------ lines of a tensor */

static inline double load_float(kiln_dtype t, const void *p, int64_t i) {
  switch (t) {
  case KILN_FLOAT: return ((const float *)p)[i];
  case KILN_DOUBLE: return ((const double *)p)[i];
  case KILN_FLOAT16: return kiln_half_to_float(((const uint16_t *)p)[i]);
  default: return kiln_bfloat16_to_float(((const uint16_t *)p)[i]);
  }
}

static inline void store_float(kiln_dtype t, void *p, int64_t i, double v) {
  switch (t) {
  case KILN_FLOAT: ((float *)p)[i] = (float)v; break;
  case KILN_DOUBLE: ((double *)p)[i] = v; break;
  case KILN_FLOAT16: ((uint16_t *)p)[i] = kiln_float_to_half((float)v); break;
  default: ((uint16_t *)p)[i] = kiln_float_to_bfloat16((float)v); break;
  }
}

/* One transform per line. Line l is (o, i) = (l / inner, l % inner); its samples start at scalar
 * element o * x_outer + i * x_inner of x and lie x_step scalars apart, each `comps` values (1: real,
 * 2: complex). The first out_len bins go to y the same way (always complex). DFT and STFT differ
 * only in these numbers. */
typedef struct line_job {
  fft_plan plan;
  int inverse;
  kiln_dtype dtype;
  const void *x;
  int comps;
  int64_t count; /* samples read per line; the rest of the n are zeros */
  int64_t x_outer, x_inner, x_step;
  const double *window; /* count values, or NULL */
  void *y;
  int64_t out_len, y_outer, y_inner, y_step;
  int64_t inner, lines;
  int64_t chunks;  /* lines are split into this many chunks, one work buffer each */
  double *work;    /* chunks * 2m doubles */
} line_job;

static void transform_line(const line_job *j, int64_t l, double *buf) {
  int64_t o = l / j->inner, i = l % j->inner, n = j->plan.n;
  const int64_t x0 = o * j->x_outer + i * j->x_inner;
  for (int64_t k = 0; k < j->count; k++) {
    int64_t at = x0 + k * j->x_step;
    double w = j->window ? j->window[k] : 1.0;
    buf[2 * k] = load_float(j->dtype, j->x, at) * w;
    buf[2 * k + 1] = j->comps == 2 ? load_float(j->dtype, j->x, at + 1) * w : 0.0;
  }
  memset(buf + 2 * j->count, 0, (size_t)(n - j->count) * 2 * sizeof(double));
  /* the inverse DFT is conj(DFT(conj(x))) / n */
  if (j->inverse) conjugate(buf, n);
  fft_run(&j->plan, buf);
  double scale = j->inverse ? 1.0 / (double)n : 1.0, sign = j->inverse ? -1.0 : 1.0;
  const int64_t y0 = o * j->y_outer + i * j->y_inner;
  for (int64_t k = 0; k < j->out_len; k++) {
    store_float(j->dtype, j->y, y0 + k * j->y_step, buf[2 * k] * scale);
    store_float(j->dtype, j->y, y0 + k * j->y_step + 1, sign * buf[2 * k + 1] * scale);
  }
}

static void transform_chunks(void *arg, int64_t begin, int64_t end) {
  const line_job *j = arg;
  for (int64_t chunk = begin; chunk < end; chunk++) {
    double *buf = j->work + chunk * 2 * j->plan.m;
    for (int64_t l = chunk * j->lines / j->chunks; l < (chunk + 1) * j->lines / j->chunks; l++)
      transform_line(j, l, buf);
  }
}

/* Takes the node's scratch for the plan's tables, one line buffer per chunk and `extra` doubles
 * for the caller (returned in *extra_out), and builds the plan. */
static kiln_status plan_lines(kx_ctx *c, line_job *j, int64_t n, size_t extra, double **extra_out) {
  j->chunks = j->lines < c->threads ? j->lines : c->threads;
  if (j->chunks < 1) j->chunks = 1;
  int64_t m = fft_padded_length(n);
  size_t doubles = fft_table_doubles(n) + (size_t)j->chunks * 2 * (size_t)m + extra;
  double *mem = kx_scratch(c, doubles * sizeof(double));
  if (!mem) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory for a %lld-point transform", (long long)n);
  fft_plan_init(&j->plan, n, mem);
  j->work = mem + fft_table_doubles(n);
  if (extra_out) *extra_out = j->work + (size_t)j->chunks * 2 * (size_t)m;
  return NULL;
}

static void run_transform(kx_ctx *c, line_job *j) {
  double log_m = log2((double)j->plan.m) + 1;
  double per_chunk = (double)j->lines / (double)j->chunks * (double)j->plan.m * log_m * 10;
  kx_parallel(c, j->chunks, per_chunk, transform_chunks, j);
}

/* Reads a scalar (or one-element) int32/int64 input. */
static kiln_status read_length(const kiln_tensor *t, const char *what, int64_t *out) {
  int64_t v[1] = {0};
  int count = 0;
  *out = 0;
  kiln_status s = kx_read_ints(t, what, v, 1, &count);
  if (s) return s;
  if (count != 1) return kiln_error(KILN_INVALID_ARGUMENT, "%s must hold one value, it holds none", what);
  *out = v[0];
  return NULL;
}

/* ------------------------------------------------------------------ DFT */

static kiln_status dft_run(kx_ctx *c) {
  const kiln_tensor *x, *len_t = kx_input(c, 1);
  kiln_status s;
  if ((s = kx_require(c, 0, &x)) || (s = kx_check_dtype(x, 0, KX_FLOATS))) return s;
  const Onnx__NodeProto *p = c->node->proto;
  int64_t onesided = kx_attr_int(p, "onesided", 0), inverse = kx_attr_int(p, "inverse", 0);
  if ((onesided != 0 && onesided != 1) || (inverse != 0 && inverse != 1))
    return kiln_error(KILN_INVALID_ARGUMENT, "onesided and inverse must be 0 or 1, got %lld and %lld",
                      (long long)onesided, (long long)inverse);
  if (x->rank < 2 || (x->dims[x->rank - 1] != 1 && x->dims[x->rank - 1] != 2)) {
    char b[96];
    return kiln_error(KILN_INVALID_ARGUMENT, "input must be [batch, signal dims..., 1 or 2], got %s",
                      kiln_tensor_describe(x, b, sizeof b));
  }
  int axis;
  if ((s = kx_axis(kx_attr_int(p, "axis", 1), x->rank, 0, &axis))) return s;
  if (axis == x->rank - 1)
    return kiln_error(KILN_INVALID_ARGUMENT, "axis %d is the real/imaginary dimension, not a signal dimension", axis);
  int64_t in_len = x->dims[axis], n = in_len;
  if (len_t) {
    if ((s = read_length(len_t, "dft_length", &n))) return s;
    if (n < 1) return kiln_error(KILN_INVALID_ARGUMENT, "dft_length must be positive, got %lld", (long long)n);
  }
  int64_t dims[KILN_MAX_RANK];
  memcpy(dims, x->dims, sizeof dims);
  dims[axis] = onesided ? n / 2 + 1 : n;
  dims[x->rank - 1] = 2;
  kiln_tensor *y;
  if ((s = kx_output(c, 0, x->dtype, x->rank, dims, &y))) return s;
  int comps = (int)x->dims[x->rank - 1];
  int64_t inner = kx_prod(x->dims, axis + 1, x->rank - 1);
  line_job j = {
      .inverse = (int)inverse, .dtype = x->dtype, .x = x->data, .comps = comps,
      .count = in_len < n ? in_len : n,
      .x_outer = in_len * inner * comps, .x_inner = comps, .x_step = inner * comps,
      .y = y->data, .out_len = dims[axis], .y_outer = dims[axis] * inner * 2, .y_inner = 2, .y_step = inner * 2,
      .inner = inner, .lines = kx_prod(x->dims, 0, axis) * inner,
  };
  if (j.lines == 0 || in_len == 0) {
    /* nothing to transform, or an empty signal padded with zeros: all bins are zero */
    if (kiln_tensor_numel(y)) memset(y->data, 0, kiln_tensor_nbytes(y));
    return NULL;
  }
  if ((s = plan_lines(c, &j, n, 0, NULL))) return s;
  run_transform(c, &j);
  return NULL;
}

/* ------------------------------------------------------------------ STFT */

static kiln_status stft_run(kx_ctx *c) {
  const kiln_tensor *x, *step_t, *window = kx_input(c, 2), *len_t = kx_input(c, 3);
  kiln_status s;
  if ((s = kx_require(c, 0, &x)) || (s = kx_require(c, 1, &step_t)) || (s = kx_check_dtype(x, 0, KX_FLOATS)))
    return s;
  int64_t onesided = kx_attr_int(c->node->proto, "onesided", 1);
  if (onesided != 0 && onesided != 1)
    return kiln_error(KILN_INVALID_ARGUMENT, "onesided must be 0 or 1, got %lld", (long long)onesided);
  if (x->rank != 3 || (x->dims[2] != 1 && x->dims[2] != 2)) {
    char b[96];
    return kiln_error(KILN_INVALID_ARGUMENT, "signal must be [batch, length, 1 or 2], got %s",
                      kiln_tensor_describe(x, b, sizeof b));
  }
  int64_t step, n = -1;
  if ((s = read_length(step_t, "frame_step", &step))) return s;
  if (step < 1) return kiln_error(KILN_INVALID_ARGUMENT, "frame_step must be positive, got %lld", (long long)step);
  if (window) {
    if (window->dtype != x->dtype || window->rank != 1)
      return kiln_error(KILN_INVALID_ARGUMENT, "window must be a 1-D %s tensor, got %s of rank %d",
                        kiln_dtype_name(x->dtype), kiln_dtype_name(window->dtype), window->rank);
    n = window->dims[0];
  }
  if (len_t) {
    int64_t len;
    if ((s = read_length(len_t, "frame_length", &len))) return s;
    if (n >= 0 && len != n)
      return kiln_error(KILN_INVALID_ARGUMENT, "frame_length %lld differs from the window's length %lld",
                        (long long)len, (long long)n);
    n = len;
  }
  if (n < 0) return kiln_error(KILN_INVALID_ARGUMENT, "either window or frame_length must be given");
  if (n < 1 || n > x->dims[1])
    return kiln_error(KILN_INVALID_ARGUMENT, "frame length %lld must be between 1 and the signal length %lld",
                      (long long)n, (long long)x->dims[1]);
  int64_t frames = (x->dims[1] - n) / step + 1, out_len = onesided ? n / 2 + 1 : n;
  kiln_tensor *y;
  if ((s = kx_output(c, 0, x->dtype, 4, (int64_t[]){x->dims[0], frames, out_len, 2}, &y))) return s;
  int comps = (int)x->dims[2];
  line_job j = {
      .dtype = x->dtype, .x = x->data, .comps = comps, .count = n,
      .x_outer = x->dims[1] * comps, .x_inner = step * comps, .x_step = comps,
      .y = y->data, .out_len = out_len, .y_outer = frames * out_len * 2, .y_inner = out_len * 2, .y_step = 2,
      .inner = frames, .lines = x->dims[0] * frames,
  };
  if (j.lines == 0) return NULL;
  double *w = NULL;
  if ((s = plan_lines(c, &j, n, window ? (size_t)n : 0, &w))) return s;
  if (window) {
    for (int64_t k = 0; k < n; k++) w[k] = load_float(x->dtype, window->data, k);
    j.window = w;
  }
  run_transform(c, &j);
  return NULL;
}

/* ------------------------------------------------------------------ windows */

#define WINDOW_TYPES (KX_NUMERIC & ~KX_BIT(KILN_BOOL))

static kiln_status check_output_datatype(kx_node *n) {
  int64_t t = kx_attr_int(n->proto, "output_datatype", KILN_FLOAT);
  if (t <= 0 || t >= 32 || !(WINDOW_TYPES & KX_BIT(t)))
    return kiln_error(KILN_INVALID_ARGUMENT, "output_datatype %lld is not a numeric tensor type", (long long)t);
  return NULL;
}

/* The generalized cosine window a0 - a1 cos(2 pi k / N) + a2 cos(4 pi k / N), where N is size for
 * a periodic window and size - 1 for a symmetric one. */
static kiln_status cosine_window(kx_ctx *c, double a0, double a1, double a2) {
  const kiln_tensor *size_in;
  kiln_status s;
  if ((s = kx_require(c, 0, &size_in))) return s;
  int64_t size;
  if ((s = read_length(size_in, "size", &size))) return s;
  if (size < 0) return kiln_error(KILN_INVALID_ARGUMENT, "size must not be negative, got %lld", (long long)size);
  const Onnx__NodeProto *p = c->node->proto;
  int periodic = kx_attr_int(p, "periodic", 1) != 0;
  kiln_tensor *y;
  if ((s = kx_output(c, 0, (kiln_dtype)kx_attr_int(p, "output_datatype", KILN_FLOAT), 1, &size, &y))) return s;
  double span = (double)(periodic ? size : size - 1);
  for (int64_t k = 0; k < size; k++) {
    /* a symmetric window of one point has N = 0: its value is the limit at k = 0, which is 1
     * for every window here, as in numpy */
    double t = span > 0 ? 2 * PI * (double)k / span : 0;
    kx_set_f64(y, k, span > 0 ? a0 - a1 * cos(t) + a2 * cos(2 * t) : 1.0);
  }
  return NULL;
}

static kiln_status hann_run(kx_ctx *c) { return cosine_window(c, 0.5, 0.5, 0); }
static kiln_status hamming_run(kx_ctx *c) { return cosine_window(c, 25.0 / 46, 21.0 / 46, 0); }
static kiln_status blackman_run(kx_ctx *c) { return cosine_window(c, 0.42, 0.5, 0.08); }

/* ------------------------------------------------------------------ MelWeightMatrix */

static double hz_to_mel(double hz) { return 2595 * log10(1 + hz / 700); }
static double mel_to_hz(double mel) { return 700 * (pow(10, mel / 2595) - 1); }

/* Triangular filters whose corners are num_mel_bins + 2 points evenly spaced on the mel scale,
 * each mapped to the spectrogram bin floor((dft_length + 1) * hz / sample_rate). This follows the
 * ONNX reference (and ONNX Runtime): the mel step divides the range by num_mel_bins + 2, so the
 * last corner stops short of upper_edge_hertz. Corners beyond the spectrogram are cut off. */
static kiln_status mel_run(kx_ctx *c) {
  const kiln_tensor *in[5];
  kiln_status s;
  for (int i = 0; i < 5; i++)
    if ((s = kx_require(c, i, &in[i]))) return s;
  int64_t bins, dft_length, rate;
  double lower, upper;
  if ((s = read_length(in[0], "num_mel_bins", &bins)) || (s = read_length(in[1], "dft_length", &dft_length)) ||
      (s = read_length(in[2], "sample_rate", &rate)) || (s = kx_read_scalar(in[3], "lower_edge_hertz", &lower)) ||
      (s = kx_read_scalar(in[4], "upper_edge_hertz", &upper)))
    return s;
  if (bins < 1 || dft_length < 1 || rate < 1)
    return kiln_error(KILN_INVALID_ARGUMENT, "num_mel_bins (%lld), dft_length (%lld) and sample_rate (%lld) must be positive",
                      (long long)bins, (long long)dft_length, (long long)rate);
  if (!(lower >= 0 && lower <= upper))
    return kiln_error(KILN_INVALID_ARGUMENT, "need 0 <= lower_edge_hertz <= upper_edge_hertz, got %g and %g", lower, upper);
  int64_t rows = dft_length / 2 + 1, corners = bins + 2;
  int64_t *corner = kx_scratch(c, (size_t)corners * sizeof *corner);
  if (!corner) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory for %lld mel bins", (long long)bins);
  kiln_tensor *y;
  if ((s = kx_output(c, 0, (kiln_dtype)kx_attr_int(c->node->proto, "output_datatype", KILN_FLOAT), 2,
                     (int64_t[]){rows, bins}, &y)))
    return s;
  memset(y->data, 0, kiln_tensor_nbytes(y));
  double low_mel = hz_to_mel(lower), step = (hz_to_mel(upper) - low_mel) / (double)corners;
  for (int64_t i = 0; i < corners; i++) {
    double bin = floor((double)(dft_length + 1) * mel_to_hz(low_mel + step * (double)i) / (double)rate);
    corner[i] = bin < 0x1p53 ? (int64_t)bin : (int64_t)0x1p53; /* far beyond any matrix, no overflow */
  }
  for (int64_t b = 0; b < bins; b++) {
    int64_t left = corner[b], center = corner[b + 1], right = corner[b + 2];
    /* rising edge up to the peak (1 at the center), then the falling edge */
    for (int64_t r = left; r <= center && r < rows; r++)
      kx_set_f64(y, r * bins + b, center == left ? 1.0 : (double)(r - left) / (double)(center - left));
    for (int64_t r = center; r < right && r < rows; r++)
      kx_set_f64(y, r * bins + b, (double)(right - r) / (double)(right - center));
  }
  return NULL;
}

const kx_op kx_ops_signal[] = {
    {"", "DFT", 17, 0, NULL, dft_run, NULL, 0},
    {"", "STFT", 17, 0, NULL, stft_run, NULL, 0},
    {"", "HannWindow", 17, 0, check_output_datatype, hann_run, NULL, 0},
    {"", "HammingWindow", 17, 0, check_output_datatype, hamming_run, NULL, 0},
    {"", "BlackmanWindow", 17, 0, check_output_datatype, blackman_run, NULL, 0},
    {"", "MelWeightMatrix", 17, 0, check_output_datatype, mel_run, NULL, 0},
    {0},
};
