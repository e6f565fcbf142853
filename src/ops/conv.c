/* Convolutions: Conv and ConvTranspose over 1 to 6 spatial dims, with groups, strides,
 * dilations, explicit or automatic padding and an optional bias.
 *
 * Float Conv picks one of three lowerings:
 *   - depthwise 2-D (one input channel per group): a direct kernel over each channel's plane;
 *   - 3x3 stride 1 with enough output: Winograd F(2x2, 3x3), 16 GEMMs on transformed tiles;
 *   - everything else: one GEMM per (images, group) unit, Y_g[Mg, out] = W_g[Mg, Cg*k] . col,
 *     where col, the im2col unfolding, is packed straight into kx_gemm's panels (1x1 stride-1
 *     unpadded convolutions read the image itself).
 * ConvTranspose runs the GEMM the other way, col[Mg*k, in] = W_g^T . X_g, and scatters col into
 * the output (col2im). Weights are used as given: no transformed copy outlives a run.
 *
 * float16 and bfloat16 are widened to float in scratch memory and narrowed at the end; doubles
 * take the GEMM lowering with an im2col buffer and kx_dgemm. */
#include "ops/gemm.h"
#include "ops/util.h"

#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SPATIAL (KILN_MAX_RANK - 2)

enum { PAD_NOTSET, PAD_SAME_UPPER, PAD_SAME_LOWER, PAD_VALID };

/* Attributes, parsed once at load. Lists are empty (n_* = 0) when absent. */
typedef struct conv_params {
  int transpose;
  int auto_pad;
  int64_t group;
  int n_kernel, n_strides, n_dilations, n_pads, n_out_pad, n_out_shape;
  int64_t kernel[MAX_SPATIAL], strides[MAX_SPATIAL], dilations[MAX_SPATIAL];
  int64_t pads[2 * MAX_SPATIAL], out_pad[MAX_SPATIAL], out_shape[MAX_SPATIAL + 2];
} conv_params;

/* The shape of one convolution, resolved against its inputs. For ConvTranspose, `in` and
 * `out` keep their data-flow meaning (in = X's spatial dims, out = Y's). */
typedef struct conv_geom {
  int nd;
  int64_t N, C, M, G, Cg, Mg;
  int64_t in[MAX_SPATIAL], out[MAX_SPATIAL], k[MAX_SPATIAL], s[MAX_SPATIAL], d[MAX_SPATIAL];
  int64_t pb[MAX_SPATIAL]; /* padding before; the padding after only shapes `out` */
  int64_t in_size, out_size, k_size;
} conv_geom;

static kiln_status read_list(const kx_node *n, const char *name, int max, int64_t *dst, int *count) {
  const int64_t *v;
  int64_t len = kx_attr_ints(n->proto, name, &v);
  *count = 0;
  if (len < 0) return NULL;
  if (len > max) return kiln_error(KILN_INVALID_ARGUMENT, "attribute %s has %lld values, at most %d allowed", name, (long long)len, max);
  if (len) memcpy(dst, v, (size_t)len * sizeof *dst);
  *count = (int)len;
  return NULL;
}

static kiln_status conv_prepare_common(kx_node *n, int transpose) {
  conv_params *p = calloc(1, sizeof *p);
  if (!p) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  p->transpose = transpose;
  char pad[32];
  kx_attr_string(n->proto, "auto_pad", "NOTSET", pad, sizeof pad);
  kiln_status st = NULL;
  if (strcmp(pad, "NOTSET") == 0 || pad[0] == '\0') p->auto_pad = PAD_NOTSET;
  else if (strcmp(pad, "SAME_UPPER") == 0) p->auto_pad = PAD_SAME_UPPER;
  else if (strcmp(pad, "SAME_LOWER") == 0) p->auto_pad = PAD_SAME_LOWER;
  else if (strcmp(pad, "VALID") == 0) p->auto_pad = PAD_VALID;
  else st = kiln_error(KILN_INVALID_ARGUMENT, "unknown auto_pad '%s'", pad);
  p->group = kx_attr_int(n->proto, "group", 1);
  if (!st && p->group < 1) st = kiln_error(KILN_INVALID_ARGUMENT, "group must be >= 1, got %lld", (long long)p->group);
  if (!st) st = read_list(n, "kernel_shape", MAX_SPATIAL, p->kernel, &p->n_kernel);
  if (!st) st = read_list(n, "strides", MAX_SPATIAL, p->strides, &p->n_strides);
  if (!st) st = read_list(n, "dilations", MAX_SPATIAL, p->dilations, &p->n_dilations);
  if (!st) st = read_list(n, "pads", 2 * MAX_SPATIAL, p->pads, &p->n_pads);
  if (!st && transpose) st = read_list(n, "output_padding", MAX_SPATIAL, p->out_pad, &p->n_out_pad);
  if (!st && transpose) st = read_list(n, "output_shape", MAX_SPATIAL + 2, p->out_shape, &p->n_out_shape);
  for (int i = 0; !st && i < p->n_strides; i++)
    if (p->strides[i] < 1) st = kiln_error(KILN_INVALID_ARGUMENT, "strides must be >= 1, got %lld", (long long)p->strides[i]);
  for (int i = 0; !st && i < p->n_dilations; i++)
    if (p->dilations[i] < 1) st = kiln_error(KILN_INVALID_ARGUMENT, "dilations must be >= 1, got %lld", (long long)p->dilations[i]);
  for (int i = 0; !st && i < p->n_pads; i++)
    if (p->pads[i] < 0) st = kiln_error(KILN_INVALID_ARGUMENT, "pads must be >= 0, got %lld", (long long)p->pads[i]);
  for (int i = 0; !st && i < p->n_out_pad; i++)
    if (p->out_pad[i] < 0) st = kiln_error(KILN_INVALID_ARGUMENT, "output_padding must be >= 0, got %lld", (long long)p->out_pad[i]);
  if (st) {
    free(p);
    return st;
  }
  n->params = p;
  return NULL;
}

static kiln_status conv_prepare(kx_node *n) { return conv_prepare_common(n, 0); }
static kiln_status conv_transpose_prepare(kx_node *n) { return conv_prepare_common(n, 1); }

/* Checks X, W and B against each other and the attributes and fills g (all but the output and
 * padding, which differ between Conv and ConvTranspose). */
static kiln_status geom_common(const conv_params *p, const kiln_tensor *x, const kiln_tensor *w, const kiln_tensor *b,
                               conv_geom *g) {
  char dx[128], dw[128];
  memset(g, 0, sizeof *g);
  if (x->rank < 3)
    return kiln_error(KILN_INVALID_ARGUMENT, "X must have rank >= 3 (N, C, spatial...), got %s", kiln_tensor_describe(x, dx, sizeof dx));
  if (w->rank != x->rank)
    return kiln_error(KILN_INVALID_ARGUMENT, "W %s must have the rank of X %s", kiln_tensor_describe(w, dw, sizeof dw),
                      kiln_tensor_describe(x, dx, sizeof dx));
  g->nd = x->rank - 2;
  g->N = x->dims[0];
  g->C = x->dims[1];
  g->G = p->group;
  if (g->C % g->G != 0)
    return kiln_error(KILN_INVALID_ARGUMENT, "group %lld does not divide the %lld input channels of X %s", (long long)g->G,
                      (long long)g->C, kiln_tensor_describe(x, dx, sizeof dx));
  g->Cg = g->C / g->G;
  if (!p->transpose) {
    g->M = w->dims[0];
    g->Mg = g->M / g->G;
    if (w->dims[1] != g->Cg)
      return kiln_error(KILN_INVALID_ARGUMENT, "W %s expects %lld input channels per group, X %s has %lld (%lld channels, group %lld)",
                        kiln_tensor_describe(w, dw, sizeof dw), (long long)w->dims[1], kiln_tensor_describe(x, dx, sizeof dx),
                        (long long)g->Cg, (long long)g->C, (long long)g->G);
    if (g->M % g->G != 0)
      return kiln_error(KILN_INVALID_ARGUMENT, "group %lld does not divide the %lld output channels of W %s", (long long)g->G,
                        (long long)g->M, kiln_tensor_describe(w, dw, sizeof dw));
  } else {
    if (w->dims[0] != g->C)
      return kiln_error(KILN_INVALID_ARGUMENT, "W %s must have X's %lld input channels first, X is %s", kiln_tensor_describe(w, dw, sizeof dw),
                        (long long)g->C, kiln_tensor_describe(x, dx, sizeof dx));
    g->Mg = w->dims[1];
    g->M = g->Mg * g->G;
  }
  if (b) {
    if (b->rank != 1 || b->dims[0] != g->M)
      return kiln_error(KILN_INVALID_ARGUMENT, "bias B %s must be 1-D with the %lld output channels", kiln_tensor_describe(b, dx, sizeof dx),
                        (long long)g->M);
  }
  if (p->n_kernel && p->n_kernel != g->nd)
    return kiln_error(KILN_INVALID_ARGUMENT, "kernel_shape has %d values, X has %d spatial dims", p->n_kernel, g->nd);
  if ((p->n_strides && p->n_strides != g->nd) || (p->n_dilations && p->n_dilations != g->nd) ||
      (p->n_pads && p->n_pads != 2 * g->nd) || (p->n_out_pad && p->n_out_pad != g->nd))
    return kiln_error(KILN_INVALID_ARGUMENT, "strides, dilations, output_padding need %d values and pads %d, for the %d spatial dims of X",
                      g->nd, 2 * g->nd, g->nd);
  g->in_size = g->k_size = 1;
  for (int i = 0; i < g->nd; i++) {
    g->in[i] = x->dims[2 + i];
    g->k[i] = w->dims[2 + i];
    if (p->n_kernel && p->kernel[i] != g->k[i])
      return kiln_error(KILN_INVALID_ARGUMENT, "kernel_shape[%d] is %lld but W %s has %lld", i, (long long)p->kernel[i],
                        kiln_tensor_describe(w, dw, sizeof dw), (long long)g->k[i]);
    g->s[i] = p->n_strides ? p->strides[i] : 1;
    g->d[i] = p->n_dilations ? p->dilations[i] : 1;
    g->in_size *= g->in[i];
    g->k_size *= g->k[i];
  }
  return NULL;
}

/* Conv's output dims and leading padding. */
static kiln_status geom_conv(const conv_params *p, conv_geom *g) {
  g->out_size = 1;
  for (int i = 0; i < g->nd; i++) {
    int64_t dk = (g->k[i] - 1) * g->d[i] + 1, pb = 0, pe = 0;
    if (p->auto_pad == PAD_SAME_UPPER || p->auto_pad == PAD_SAME_LOWER) {
      g->out[i] = (g->in[i] + g->s[i] - 1) / g->s[i];
      int64_t total = (g->out[i] - 1) * g->s[i] + dk - g->in[i];
      if (total < 0) total = 0;
      pb = p->auto_pad == PAD_SAME_UPPER ? total / 2 : total - total / 2;
      pe = total - pb;
    } else if (p->auto_pad == PAD_NOTSET && p->n_pads) {
      pb = p->pads[i];
      pe = p->pads[g->nd + i];
    }
    if (p->auto_pad != PAD_SAME_UPPER && p->auto_pad != PAD_SAME_LOWER) {
      if (g->in[i] + pb + pe < dk)
        return kiln_error(KILN_INVALID_ARGUMENT, "spatial dim %d of X (%lld, padded by %lld+%lld) is smaller than the dilated kernel (%lld)", i,
                          (long long)g->in[i], (long long)pb, (long long)pe, (long long)dk);
      g->out[i] = (g->in[i] + pb + pe - dk) / g->s[i] + 1;
    }
    g->pb[i] = pb;
    g->out_size *= g->out[i];
  }
  return NULL;
}

/* ConvTranspose's output dims and leading padding (the part of the full output cut away). */
static kiln_status geom_transpose(const conv_params *p, conv_geom *g) {
  int shape_off = p->n_out_shape == g->nd + 2 ? 2 : 0;
  if (p->n_out_shape && p->n_out_shape != g->nd && !shape_off)
    return kiln_error(KILN_INVALID_ARGUMENT, "output_shape has %d values, X has %d spatial dims", p->n_out_shape, g->nd);
  g->out_size = 1;
  for (int i = 0; i < g->nd; i++) {
    int64_t dk = (g->k[i] - 1) * g->d[i] + 1, op = p->n_out_pad ? p->out_pad[i] : 0;
    int64_t full = g->s[i] * (g->in[i] - 1) + op + dk; /* the output before any cropping */
    int explicit_shape = p->n_out_shape > 0;
    if (explicit_shape || p->auto_pad == PAD_SAME_UPPER || p->auto_pad == PAD_SAME_LOWER) {
      g->out[i] = explicit_shape ? p->out_shape[shape_off + i] : g->in[i] * g->s[i];
      if (g->out[i] < 0) return kiln_error(KILN_INVALID_ARGUMENT, "output_shape[%d] is negative", i);
      /* a requested size beyond the full output just extends it (bias only there) */
      int64_t total = full - g->out[i] > 0 ? full - g->out[i] : 0;
      g->pb[i] = p->auto_pad == PAD_SAME_UPPER ? total / 2 : total - total / 2;
    } else {
      int64_t pb = p->auto_pad == PAD_NOTSET && p->n_pads ? p->pads[i] : 0;
      int64_t pe = p->auto_pad == PAD_NOTSET && p->n_pads ? p->pads[g->nd + i] : 0;
      if (full - pb - pe < 0)
        return kiln_error(KILN_INVALID_ARGUMENT, "pads %lld+%lld of spatial dim %d exceed the output size %lld", (long long)pb, (long long)pe,
                          i, (long long)full);
      g->out[i] = full - pb - pe;
      g->pb[i] = pb;
    }
    g->out_size *= g->out[i];
  }
  return NULL;
}

/* ------------------------------------------------------------------ im2col / col2im */

/* The range [lo, hi) of o in [0, n) for which 0 <= start + o*step < len. */
static void valid_range(int64_t start, int64_t step, int64_t len, int64_t n, int64_t *lo, int64_t *hi) {
  *lo = start >= 0 ? 0 : (-start + step - 1) / step;
  *hi = start >= len ? 0 : (len - start + step - 1) / step;
  if (*hi > n) *hi = n;
  if (*lo > *hi) *lo = *hi;
}

/* Float rows are copied eight at a time: the unfolding runs once per GEMM block row, so it must
 * cost a small fraction of the multiply-adds that follow. */
static inline void copy_f(float *dst, const float *src, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_loadu_ps(src + i));
  for (; i < n; i++) dst[i] = src[i];
}

static inline void zero_f(float *dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_setzero_ps());
  for (; i < n; i++) dst[i] = 0;
}

/* Elements 0, 2, ..., 14 (or 1, 3, ..., 15) of the 16 floats at p. */
static inline __m256 even16(const float *p) {
  __m256 t = _mm256_shuffle_ps(_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8), _MM_SHUFFLE(2, 0, 2, 0));
  return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(t), _MM_SHUFFLE(3, 1, 2, 0)));
}
static inline __m256 odd16(const float *p) {
  __m256 t = _mm256_shuffle_ps(_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8), _MM_SHUFFLE(3, 1, 3, 1));
  return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(t), _MM_SHUFFLE(3, 1, 2, 0)));
}

/* One row of an unfolding: dst[o] = src[start + o*step] where 0 <= start + o*step < len, else 0,
 * for o in [0, n). */
static void unfold_row_f(float *dst, const float *src, int64_t n, int64_t len, int64_t start, int64_t step) {
  int64_t lo, hi;
  valid_range(start, step, len, n, &lo, &hi);
  zero_f(dst, lo);
  if (step == 1) {
    copy_f(dst + lo, src + start + lo, hi - lo);
  } else {
    int64_t o = lo;
    if (step == 2) /* strided by two: deinterleave 16 at a time while they stay inside the row */
      for (; o + 8 <= hi && start + 2 * o + 16 <= len; o += 8) _mm256_storeu_ps(dst + o, even16(src + start + 2 * o));
    for (; o < hi; o++) dst[o] = src[start + o * step];
  }
  zero_f(dst + hi, n - hi);
}

static void unfold_row_d(double *dst, const double *src, int64_t n, int64_t len, int64_t start, int64_t step) {
  int64_t lo, hi;
  valid_range(start, step, len, n, &lo, &hi);
  for (int64_t o = 0; o < n; o++) dst[o] = o >= lo && o < hi ? src[start + o * step] : 0;
}

/* Double Conv's im2col into a col buffer (float Conv packs straight into GEMM panels instead).
 * The last spatial dim of a row is one unfold_row_d; the outer ones walk an odometer. Row r of
 * col is (channel c, kernel offset kk): col[r, out] = x[c, out*s - pb + kk*d] (0 outside). */
typedef struct im2col_job {
  const conv_geom *g;
  const double *x; /* the group's first channel */
  double *col;
} im2col_job;

static void im2col_range(void *arg, int64_t begin, int64_t end) {
  const im2col_job *j = arg;
  const conv_geom *g = j->g;
  int nd = g->nd, last = nd - 1;
  int64_t row_len = g->out[last], rows_per = g->out_size / row_len;
  for (int64_t r = begin; r < end; r++) {
    int64_t c = r / g->k_size, kk = r % g->k_size, koff[MAX_SPATIAL];
    for (int i = nd - 1; i >= 0; i--) {
      koff[i] = kk % g->k[i] * g->d[i] - g->pb[i];
      kk /= g->k[i];
    }
    const double *xc = j->x + c * g->in_size;
    double *dst = j->col + r * g->out_size;
    int64_t o[MAX_SPATIAL] = {0};
    for (int64_t q = 0; q < rows_per; q++, dst += row_len) {
      int64_t off = 0, inside = 1;
      for (int i = 0; i < last; i++) {
        int64_t pos = o[i] * g->s[i] + koff[i];
        inside &= pos >= 0 && pos < g->in[i];
        off = off * g->in[i] + pos;
      }
      if (inside) unfold_row_d(dst, xc + off * g->in[last], row_len, g->in[last], koff[last], g->s[last]);
      else memset(dst, 0, (size_t)row_len * sizeof *dst);
      for (int i = last - 1; i >= 0 && ++o[i] == g->out[i]; i--) o[i] = 0;
    }
  }
}

/* Adds col[(m, kk), in] into y[m, in*s - pb + kk*d] where that lands inside y. Rows for the
 * same output channel touch the same y plane, so a range is a range of output channels. */
typedef struct col2im_job {
  const conv_geom *g;
  const void *col;
  void *y; /* the group's first output channel */
  size_t es;
} col2im_job;

static void col2im_range(void *arg, int64_t begin, int64_t end) {
  const col2im_job *j = arg;
  const conv_geom *g = j->g;
  int nd = g->nd, last = nd - 1;
  int64_t row_len = g->in[last], rows_per = g->in_size / row_len;
  for (int64_t m = begin; m < end; m++)
    for (int64_t kk0 = 0; kk0 < g->k_size; kk0++) {
      int64_t kk = kk0, koff[MAX_SPATIAL];
      for (int i = nd - 1; i >= 0; i--) {
        koff[i] = kk % g->k[i] * g->d[i] - g->pb[i];
        kk /= g->k[i];
      }
      const char *src = (const char *)j->col + (size_t)((m * g->k_size + kk0) * g->in_size) * j->es;
      char *ym = (char *)j->y + (size_t)(m * g->out_size) * j->es;
      int64_t lo, hi, o[MAX_SPATIAL] = {0};
      valid_range(koff[last], g->s[last], g->out[last], row_len, &lo, &hi);
      for (int64_t q = 0; q < rows_per; q++, src += (size_t)row_len * j->es) {
        int64_t off = 0, inside = 1;
        for (int i = 0; i < last; i++) {
          int64_t pos = o[i] * g->s[i] + koff[i];
          inside &= pos >= 0 && pos < g->out[i];
          off = off * g->out[i] + pos;
        }
        if (inside) {
          int64_t base = off * g->out[last] + koff[last], step = g->s[last];
          if (j->es == sizeof(float))
            for (int64_t i = lo; i < hi; i++) ((float *)ym)[base + i * step] += ((const float *)src)[i];
          else
            for (int64_t i = lo; i < hi; i++) ((double *)ym)[base + i * step] += ((const double *)src)[i];
        }
        for (int i = last - 1; i >= 0 && ++o[i] == g->in[i]; i--) o[i] = 0;
      }
    }
}

/* ------------------------------------------------------------------ im2col packing for kx_gemm */

/* B of a float Conv's GEMM is the unfolded image, col[(c, kk), out]; kx_gemm asks for it panel
 * block by panel block, so the unfolding is written straight into the packed layout and no full
 * col buffer ever exists. Each row of a block is first unfolded into `row` (in L1), then copied
 * into its panels. Small images are batched: the columns of several images sit side by side, so
 * that a 7x7 output does not leave a quarter of every 16-column panel empty. */
typedef struct im2col_src {
  const conv_geom *g;
  const float *x;     /* the first image's group: Cg channels */
  int64_t img_stride; /* elements from one image to the next */
  int pointwise;      /* 1x1, stride 1, unpadded: the image is its own unfolding */
} im2col_src;

/* row[0..nc) = col[(c, kk), j0..j0+nc) for a 1-D or 2-D convolution (1-D as height 1). */
static void unfold_2d(const conv_geom *g, const float *xc, int64_t kk, int64_t j0, int64_t nc, float *row) {
  int two = g->nd == 2;
  int64_t KW = g->k[two], IW = g->in[two], OW = g->out[two], IH = two ? g->in[0] : 1;
  int64_t sh = two ? g->s[0] : 1, sw = g->s[two];
  int64_t hoff = two ? kk / KW * g->d[0] - g->pb[0] : 0, woff = kk % KW * g->d[two] - g->pb[two];
  int64_t oh = j0 / OW, ow = j0 % OW;
  for (int64_t t = 0; t < nc; ow = 0, oh++) {
    int64_t len = OW - ow < nc - t ? OW - ow : nc - t, ih = oh * sh + hoff;
    if (ih < 0 || ih >= IH) zero_f(row + t, len);
    else unfold_row_f(row + t, xc + ih * IW, len, IW, ow * sw + woff, sw);
    t += len;
  }
}

/* The same for any number of spatial dims: whole rows of the last dim, an odometer above. */
static void unfold_nd(const conv_geom *g, const float *xc, int64_t kk, int64_t j0, int64_t nc, float *row) {
  int nd = g->nd, last = nd - 1;
  int64_t koff[MAX_SPATIAL], o[MAX_SPATIAL];
  for (int i = nd - 1; i >= 0; i--) {
    koff[i] = kk % g->k[i] * g->d[i] - g->pb[i];
    kk /= g->k[i];
  }
  for (int i = nd - 1; i >= 0; i--) {
    o[i] = j0 % g->out[i];
    j0 /= g->out[i];
  }
  for (int64_t t = 0; t < nc;) {
    int64_t len = g->out[last] - o[last] < nc - t ? g->out[last] - o[last] : nc - t, off = 0, inside = 1;
    for (int i = 0; i < last; i++) {
      int64_t pos = o[i] * g->s[i] + koff[i];
      inside &= pos >= 0 && pos < g->in[i];
      off = off * g->in[i] + pos;
    }
    if (inside) unfold_row_f(row + t, xc + off * g->in[last], len, g->in[last], o[last] * g->s[last] + koff[last], g->s[last]);
    else zero_f(row + t, len);
    t += len;
    o[last] = 0;
    for (int i = last - 1; i >= 0 && ++o[i] == g->out[i]; i--) o[i] = 0;
  }
}

static void pack_im2col(const void *arg, int64_t k0, int64_t kc, int64_t j0, int64_t nc, float *dst) {
  const im2col_src *s = arg;
  const conv_geom *g = s->g;
  float row[KX_GEMM_NC];
  int64_t full = nc / KX_GEMM_NR, rem = nc % KX_GEMM_NR;
  for (int64_t k = 0; k < kc; k++) {
    int64_t c = (k0 + k) / g->k_size, kk = (k0 + k) % g->k_size;
    for (int64_t t = 0; t < nc;) { /* one image's columns at a time */
      int64_t img = (j0 + t) / g->out_size, at = (j0 + t) % g->out_size;
      int64_t len = g->out_size - at < nc - t ? g->out_size - at : nc - t;
      const float *xc = s->x + img * s->img_stride + c * g->in_size;
      if (s->pointwise) copy_f(row + t, xc + at, len);
      else if (g->nd <= 2) unfold_2d(g, xc, kk, at, len, row + t);
      else unfold_nd(g, xc, kk, at, len, row + t);
      t += len;
    }
    float *d = dst + k * KX_GEMM_NR;
    for (int64_t p = 0; p < full; p++, d += kc * KX_GEMM_NR) copy_f(d, row + p * KX_GEMM_NR, KX_GEMM_NR);
    if (rem) {
      copy_f(d, row + full * KX_GEMM_NR, rem);
      zero_f(d + rem, KX_GEMM_NR - rem);
    }
  }
}

/* ------------------------------------------------------------------ the GEMM lowering */

/* Everything one Conv or ConvTranspose run needs. x, w, b and y are float (float16 and bfloat16
 * widened) or double. The work is split into units of `imgs` images and one group. */
typedef struct conv_run {
  const conv_geom *g;
  int transpose, dbl, pointwise;
  const void *x, *w, *b;
  void *y;
  int64_t imgs, units;
  char *ws;          /* per worker: a col buffer (col_bytes), then GEMM workspace (gemm_bytes) */
  size_t col_bytes, gemm_bytes;
  int workers;       /* > 1: units are split across workers, each single-threaded */
} conv_run;

/* Fills y (all N * M planes) with the bias, or zeros. */
static void fill_bias(const conv_run *r) {
  const conv_geom *g = r->g;
  for (int64_t n = 0; n < g->N; n++)
    for (int64_t m = 0; m < g->M; m++) {
      int64_t at = (n * g->M + m) * g->out_size;
      if (r->dbl) {
        double v = r->b ? ((const double *)r->b)[m] : 0, *y = (double *)r->y + at;
        for (int64_t i = 0; i < g->out_size; i++) y[i] = v;
      } else {
        float v = r->b ? ((const float *)r->b)[m] : 0, *y = (float *)r->y + at;
        for (int64_t i = 0; i < g->out_size; i++) y[i] = v;
      }
    }
}

/* Float Conv of images [n, n+nb) and one group: Y_g = W_g . col + bias, with the bias added in
 * the GEMM's store. Several images compute into `tmp` side by side and are copied out after. */
static void conv_unit_float(const conv_run *r, const kx_ctx *c, int64_t n, int64_t nb, int64_t grp, float *tmp, void *gemm_ws) {
  const conv_geom *g = r->g;
  const float *x = (const float *)r->x + (n * g->C + grp * g->Cg) * g->in_size;
  float *y = (float *)r->y + (n * g->M + grp * g->Mg) * g->out_size;
  int64_t K = g->Cg * g->k_size, cols = nb * g->out_size;
  im2col_src src = {g, x, g->C * g->in_size, r->pointwise};
  kx_gemm gm = {.M = g->Mg, .N = cols, .K = K, .A = (const float *)r->w + grp * g->Mg * K, .lda = K,
                .B = x, .ldb = g->in_size, .alpha = 1, .beta = 0, .C = nb > 1 ? tmp : y, .ldc = cols,
                .row_bias = r->b ? (const float *)r->b + grp * g->Mg : NULL};
  if (!r->pointwise || nb > 1) {
    gm.pack_b = pack_im2col;
    gm.pack_b_arg = &src;
  }
  kx_gemm_run(c, &gm, gemm_ws);
  for (int64_t i = 0; i < nb && nb > 1; i++)
    for (int64_t m = 0; m < g->Mg; m++) copy_f(y + (i * g->M + m) * g->out_size, tmp + m * cols + i * g->out_size, g->out_size);
}

/* Double Conv of one image and group: im2col into col (unless pointwise), kx_dgemm onto the bias. */
static void conv_unit_double(const conv_run *r, const kx_ctx *c, int64_t n, int64_t grp, void *col) {
  const conv_geom *g = r->g;
  const double *x = (const double *)r->x + (n * g->C + grp * g->Cg) * g->in_size;
  int64_t K = g->Cg * g->k_size;
  const double *B = x;
  if (!r->pointwise) {
    im2col_job j = {g, x, col};
    if (c) kx_parallel(c, K, (double)g->out_size, im2col_range, &j);
    else im2col_range(&j, 0, K);
    B = col;
  }
  kx_dgemm(0, 0, g->Mg, g->out_size, K, 1, (const double *)r->w + grp * g->Mg * K, K, B, g->out_size, 1,
           (double *)r->y + (n * g->M + grp * g->Mg) * g->out_size, g->out_size);
}

/* ConvTranspose of one image and group: col = W_g^T . X_g, scattered onto the bias (col2im). */
static void transpose_unit(const conv_run *r, const kx_ctx *c, int64_t n, int64_t grp, void *col, void *gemm_ws) {
  const conv_geom *g = r->g;
  size_t es = r->dbl ? sizeof(double) : sizeof(float);
  int64_t rows = g->Mg * g->k_size, xo = (n * g->C + grp * g->Cg) * g->in_size, wo = grp * g->Cg * rows;
  if (r->dbl) {
    kx_dgemm(1, 0, rows, g->in_size, g->Cg, 1, (const double *)r->w + wo, rows, (const double *)r->x + xo, g->in_size, 0,
             col, g->in_size);
  } else {
    kx_gemm gm = {.M = rows, .N = g->in_size, .K = g->Cg, .A = (const float *)r->w + wo, .lda = rows, .trans_a = 1,
                  .B = (const float *)r->x + xo, .ldb = g->in_size, .alpha = 1, .beta = 0, .C = col, .ldc = g->in_size};
    kx_gemm_run(c, &gm, gemm_ws);
  }
  col2im_job j = {g, col, (char *)r->y + (size_t)((n * g->M + grp * g->Mg) * g->out_size) * es, es};
  if (c) kx_parallel(c, g->Mg, (double)(g->k_size * g->in_size), col2im_range, &j);
  else col2im_range(&j, 0, g->Mg);
}

/* Runs unit u with worker slot w's buffers; c as for kx_gemm_run. */
static void run_unit(const conv_run *r, const kx_ctx *c, int64_t u, int64_t w) {
  char *col = r->ws + (size_t)w * (r->col_bytes + r->gemm_bytes), *gemm_ws = col + r->col_bytes;
  int64_t n = u / r->g->G * r->imgs, grp = u % r->g->G, nb = r->g->N - n < r->imgs ? r->g->N - n : r->imgs;
  if (r->transpose) transpose_unit(r, c, n, grp, col, gemm_ws);
  else if (r->dbl) conv_unit_double(r, c, n, grp, col);
  else conv_unit_float(r, c, n, nb, grp, (float *)col, gemm_ws);
}

/* Worker w of r->workers takes an equal share of the units. */
static void workers_range(void *arg, int64_t begin, int64_t end) {
  const conv_run *r = arg;
  for (int64_t w = begin; w < end; w++)
    for (int64_t u = r->units * w / r->workers; u < r->units * (w + 1) / r->workers; u++) run_unit(r, NULL, u, w);
}

/* Images per unit for a float Conv: enough that a unit's GEMM has about this many columns. */
#define CONV_COLUMNS 512

/* Chooses the units and sizes the per-worker buffers: with a unit per thread or more, each
 * worker runs whole units on its own; otherwise units run in turn and each splits across the
 * pool. */
static void plan_units(const kx_ctx *c, conv_run *r) {
  const conv_geom *g = r->g;
  int threads = kx_gemm_threads(c);
  r->pointwise = !r->transpose;
  for (int i = 0; i < g->nd && r->pointwise; i++)
    r->pointwise = g->k[i] == 1 && g->s[i] == 1 && g->pb[i] == 0 && g->out[i] == g->in[i];
  r->imgs = 1;
  if (!r->transpose && !r->dbl && g->out_size < CONV_COLUMNS) {
    r->imgs = CONV_COLUMNS / g->out_size;
    int64_t per_thread = (g->N + threads - 1) / threads; /* keep a unit for every thread */
    if (r->imgs > per_thread) r->imgs = per_thread;
  }
  r->units = (g->N + r->imgs - 1) / r->imgs * g->G;
  double unit_work = (double)g->Mg * (double)g->Cg * (double)g->k_size * (double)(r->transpose ? g->in_size : g->out_size);
  r->workers = threads > 1 && r->units >= threads && unit_work * (double)g->N * (double)g->G > 1e6 ? threads : 1;
  size_t es = r->dbl ? sizeof(double) : sizeof(float);
  r->col_bytes = 0;
  if (r->transpose) r->col_bytes = (size_t)(g->Mg * g->k_size * g->in_size) * es;
  else if (r->dbl && !r->pointwise) r->col_bytes = (size_t)(g->Cg * g->k_size * g->out_size) * es;
  else if (r->imgs > 1) r->col_bytes = (size_t)(g->Mg * r->imgs * g->out_size) * es;
  r->col_bytes = (r->col_bytes + 63) & ~(size_t)63;
  r->gemm_bytes = r->dbl ? 0 : kx_gemm_workspace(r->workers > 1 ? 1 : threads);
}

static size_t units_scratch(const conv_run *r) { return (size_t)r->workers * (r->col_bytes + r->gemm_bytes); }

static void run_units(kx_ctx *c, conv_run *r) {
  if (r->transpose || r->dbl) fill_bias(r); /* float Conv adds its bias in the GEMM's store */
  if (r->workers > 1) kx_parallel(c, r->workers, 1e12, workers_range, r);
  else
    for (int64_t u = 0; u < r->units; u++) run_unit(r, c, u, 0);
}

/* ------------------------------------------------------------------ depthwise */

/* 2-D depthwise: every group has one input channel (and Mg output channels), so there is no
 * reduction over channels and a GEMM would run one row at a time. Each input plane is first
 * copied into a zero-bordered plane (a few KB, in L1/L2) so that every output column reads only
 * inside it: the rows then run eight columns at a time with no border cases. 3x3 kernels with
 * stride 1 or 2 (MobileNet's) keep their nine weights in registers. */
typedef struct dw_job {
  const conv_geom *g;
  const float *x, *w, *b;
  float *y;
  float *pad;          /* per worker: a padded plane of PH x PW floats */
  int64_t PH, PW, OWv; /* OWv: output columns rounded up to 8 */
  int workers;
} dw_job;

static void dw_geometry(dw_job *j) {
  const conv_geom *g = j->g;
  int64_t OW = g->out[1], sw = g->s[1], reach_w = (g->k[1] - 1) * g->d[1];
  int k3 = g->k[0] == 3 && g->k[1] == 3 && g->d[0] == 1 && g->d[1] == 1;
  j->OWv = (OW + 7) / 8 * 8;
  /* one past the rightmost column a row loop reads: vector loops read whole groups of 8 */
  int64_t need = (OW - 1) * sw + reach_w + 1;
  if (sw == 1 && j->OWv + reach_w > need) need = j->OWv + reach_w;
  if (k3 && sw == 2 && 2 * j->OWv + 2 > need) need = 2 * j->OWv + 2;
  j->PW = g->pb[1] + g->in[1] > need ? g->pb[1] + g->in[1] : need;
  need = (g->out[0] - 1) * g->s[0] + (g->k[0] - 1) * g->d[0] + 1;
  j->PH = g->pb[0] + g->in[0] > need ? g->pb[0] + g->in[0] : need;
}

/* Copies one input plane into the padded plane P, whose borders are already zero (they are the
 * same for every plane). */
static void dw_pad(const dw_job *j, const float *x, float *P) {
  const conv_geom *g = j->g;
  float *dst = P + g->pb[0] * j->PW + g->pb[1];
  for (int64_t ih = 0; ih < g->in[0]; ih++) copy_f(dst + ih * j->PW, x + ih * g->in[1], g->in[1]);
}

/* Stores the first n lanes of v at p (all eight when n >= 8). */
static inline void store_n(float *p, __m256 v, int64_t n) {
  if (n >= 8) {
    _mm256_storeu_ps(p, v);
    return;
  }
  float t[8];
  _mm256_storeu_ps(t, v);
  for (int64_t i = 0; i < n; i++) p[i] = t[i];
}

/* One output row; r0 is the padded row of the first kernel row, rs the step between kernel rows. */
static void dw_row_3x3s1(const float *r0, int64_t rs, const float *w, float bias, float *yr, int64_t OW) {
  __m256 w0 = _mm256_set1_ps(w[0]), w1 = _mm256_set1_ps(w[1]), w2 = _mm256_set1_ps(w[2]);
  __m256 w3 = _mm256_set1_ps(w[3]), w4 = _mm256_set1_ps(w[4]), w5 = _mm256_set1_ps(w[5]);
  __m256 w6 = _mm256_set1_ps(w[6]), w7 = _mm256_set1_ps(w[7]), w8 = _mm256_set1_ps(w[8]), b = _mm256_set1_ps(bias);
  const float *r1 = r0 + rs, *r2 = r1 + rs;
  for (int64_t ow = 0; ow < OW; ow += 8) { /* one sum per kernel row: short dependency chains */
    __m256 a0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(r0 + ow), b);
    __m256 a1 = _mm256_mul_ps(w3, _mm256_loadu_ps(r1 + ow));
    __m256 a2 = _mm256_mul_ps(w6, _mm256_loadu_ps(r2 + ow));
    a0 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(r0 + ow + 1), a0);
    a1 = _mm256_fmadd_ps(w4, _mm256_loadu_ps(r1 + ow + 1), a1);
    a2 = _mm256_fmadd_ps(w7, _mm256_loadu_ps(r2 + ow + 1), a2);
    a0 = _mm256_fmadd_ps(w2, _mm256_loadu_ps(r0 + ow + 2), a0);
    a1 = _mm256_fmadd_ps(w5, _mm256_loadu_ps(r1 + ow + 2), a1);
    a2 = _mm256_fmadd_ps(w8, _mm256_loadu_ps(r2 + ow + 2), a2);
    store_n(yr + ow, _mm256_add_ps(_mm256_add_ps(a0, a1), a2), OW - ow);
  }
}

static void dw_row_3x3s2(const float *r0, int64_t rs, const float *w, float bias, float *yr, int64_t OW) {
  __m256 w0 = _mm256_set1_ps(w[0]), w1 = _mm256_set1_ps(w[1]), w2 = _mm256_set1_ps(w[2]);
  __m256 w3 = _mm256_set1_ps(w[3]), w4 = _mm256_set1_ps(w[4]), w5 = _mm256_set1_ps(w[5]);
  __m256 w6 = _mm256_set1_ps(w[6]), w7 = _mm256_set1_ps(w[7]), w8 = _mm256_set1_ps(w[8]), b = _mm256_set1_ps(bias);
  const float *r1 = r0 + rs, *r2 = r1 + rs;
  for (int64_t ow = 0; ow < OW; ow += 8) {
    int64_t c = 2 * ow;
    __m256 a0 = _mm256_fmadd_ps(w0, even16(r0 + c), b);
    __m256 a1 = _mm256_mul_ps(w3, even16(r1 + c));
    __m256 a2 = _mm256_mul_ps(w6, even16(r2 + c));
    a0 = _mm256_fmadd_ps(w1, odd16(r0 + c), a0);
    a1 = _mm256_fmadd_ps(w4, odd16(r1 + c), a1);
    a2 = _mm256_fmadd_ps(w7, odd16(r2 + c), a2);
    a0 = _mm256_fmadd_ps(w2, even16(r0 + c + 2), a0);
    a1 = _mm256_fmadd_ps(w5, even16(r1 + c + 2), a1);
    a2 = _mm256_fmadd_ps(w8, even16(r2 + c + 2), a2);
    store_n(yr + ow, _mm256_add_ps(_mm256_add_ps(a0, a1), a2), OW - ow);
  }
}

/* Any kernel size and dilation, stride 1. */
static void dw_row_s1(const conv_geom *g, const float *r0, int64_t rs, const float *w, float bias, float *yr, int64_t OW) {
  int64_t KH = g->k[0], KW = g->k[1], dw = g->d[1];
  for (int64_t ow = 0; ow < OW; ow += 8) {
    __m256 acc = _mm256_set1_ps(bias);
    for (int64_t kh = 0; kh < KH; kh++)
      for (int64_t kw = 0; kw < KW; kw++)
        acc = _mm256_fmadd_ps(_mm256_broadcast_ss(w + kh * KW + kw), _mm256_loadu_ps(r0 + kh * rs + kw * dw + ow), acc);
    store_n(yr + ow, acc, OW - ow);
  }
}

/* Anything else, one column at a time. */
static void dw_row_any(const conv_geom *g, const float *r0, int64_t rs, const float *w, float bias, float *yr, int64_t OW) {
  int64_t KH = g->k[0], KW = g->k[1], dw = g->d[1], sw = g->s[1];
  for (int64_t ow = 0; ow < OW; ow++) {
    float acc = bias;
    for (int64_t kh = 0; kh < KH; kh++)
      for (int64_t kw = 0; kw < KW; kw++) acc += w[kh * KW + kw] * r0[kh * rs + ow * sw + kw * dw];
    yr[ow] = acc;
  }
}

static void dw_plane(const dw_job *j, const float *x, const float *w, float bias, float *y, float *P) {
  const conv_geom *g = j->g;
  int64_t OH = g->out[0], OW = g->out[1], rs = g->d[0] * j->PW;
  int k3 = g->k[0] == 3 && g->k[1] == 3 && g->d[0] == 1 && g->d[1] == 1;
  dw_pad(j, x, P);
  for (int64_t oh = 0; oh < OH; oh++) {
    const float *r0 = P + oh * g->s[0] * j->PW;
    float *yr = y + oh * OW;
    if (k3 && g->s[1] == 1) dw_row_3x3s1(r0, rs, w, bias, yr, OW);
    else if (k3 && g->s[1] == 2) dw_row_3x3s2(r0, rs, w, bias, yr, OW);
    else if (g->s[1] == 1) dw_row_s1(g, r0, rs, w, bias, yr, OW);
    else dw_row_any(g, r0, rs, w, bias, yr, OW);
  }
}

/* Worker wk takes an equal share of the N * M output planes. */
static void dw_range(void *arg, int64_t begin, int64_t end) {
  const dw_job *j = arg;
  const conv_geom *g = j->g;
  int64_t planes = g->N * g->M;
  for (int64_t wk = begin; wk < end; wk++) {
    float *P = j->pad + wk * j->PH * j->PW;
    for (int64_t p = planes * wk / j->workers; p < planes * (wk + 1) / j->workers; p++) {
      int64_t m = p % g->M, n = p / g->M, cin = m / g->Mg;
      dw_plane(j, j->x + (n * g->C + cin) * g->in_size, j->w + m * g->k_size, j->b ? j->b[m] : 0.0f,
               j->y + p * g->out_size, P);
    }
  }
}

static kiln_status run_depthwise(kx_ctx *c, const conv_geom *g, const float *x, const float *w, const float *b, float *y) {
  dw_job j = {.g = g, .x = x, .w = w, .b = b, .y = y};
  dw_geometry(&j);
  int64_t planes = g->N * g->M;
  double work = (double)planes * (double)(g->out_size * g->k_size);
  j.workers = kx_gemm_threads(c); /* each worker pays for its wake-up with 1e5 multiply-adds */
  if (j.workers > planes) j.workers = (int)planes;
  if (work < 1e5 * j.workers) j.workers = work >= 2e5 ? (int)(work / 1e5) : 1;
  size_t bytes = (size_t)(j.workers * j.PH * j.PW) * sizeof(float);
  j.pad = kx_scratch(c, bytes);
  if (!j.pad) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory for %zu bytes of depthwise scratch", bytes);
  memset(j.pad, 0, bytes);
  if (j.workers > 1) kx_parallel(c, j.workers, 1e12, dw_range, &j);
  else dw_range(&j, 0, 1);
  return NULL;
}

/* ------------------------------------------------------------------ Winograd F(2x2, 3x3) */

/* 3x3 stride-1 convolutions (most of ResNet's work) use Lavin's F(2x2, 3x3): each 2x2 output tile
 * is A^T [(G g G^T) . (B^T d B)] A for the 4x4 input patch d under it, so a tile costs 16
 * multiply-adds per channel pair instead of 36. Summed over input channels, the 16 elementwise
 * products are 16 GEMMs: M_xi[m, tile] = U_xi[m, c] . V_xi[c, tile]. The transforms use only 0,
 * +-1 and 1/2, so results stay as accurate as the direct sum.
 *
 * Weights are transformed on every run (no second copy of the model is kept), which is why runs
 * with few tiles stay with im2col. Input tiles come eight at a time from a zero-bordered copy of
 * each plane, their stride-2 columns deinterleaved by even16/odd16. Rows of V and M carry eight
 * floats of slack so that the last group of a row may load and store whole vectors (a group
 * that runs past its row writes into the next one, which is written after it). */
#define WINO_MIN_TILES 40          /* fewer tiles per run: im2col */
#define WINO_CHUNK_BYTES (8 << 20) /* V and M of one chunk of images */
#define WINO_PREFETCH 576          /* floats ahead that the weight transform fetches */

typedef struct wino_job {
  const conv_geom *g;
  const float *x, *b;
  float *y;
  float *u;              /* [16][M][C] */
  int64_t th, tw, tiles; /* tiles per image: th x tw */
  int64_t PH, PW;        /* a zero-bordered input plane */
  int64_t imgs, chunks;  /* images per chunk */
  int64_t ld;            /* row stride of V and M */
  int slots;             /* threads: each has a padded plane and GEMM workspace */
  int own_chunks;        /* each slot runs whole chunks with its own V and M; else chunks run in
                            turn, every step split across the slots */
  char *slot_mem;        /* per slot: padded plane, then GEMM workspace */
  size_t slot_bytes;
  float *vm;             /* V then M: one pair per slot when own_chunks, else one */
  int64_t vm_floats;
} wino_job;

static int winograd_fits(const conv_geom *g) {
  if (g->nd != 2 || g->G != 1 || g->k[0] != 3 || g->k[1] != 3 || g->C < 16 || g->M < 16) return 0;
  for (int i = 0; i < 2; i++)
    if (g->s[i] != 1 || g->d[i] != 1) return 0;
  return g->N * ((g->out[0] + 1) / 2) * ((g->out[1] + 1) / 2) >= WINO_MIN_TILES;
}

/* U_xi[m, c] = (G g G^T)[xi] for the 3x3 kernel g = W[m, c], eight input channels at a time. */
typedef struct wino_weights {
  const wino_job *j;
  const float *w;
} wino_weights;

static void wino_weights_range(void *arg, int64_t begin, int64_t end) {
  const wino_weights *ww = arg;
  int64_t C = ww->j->g->C, plane = ww->j->g->M * C;
  const __m256 half = _mm256_set1_ps(0.5f);
  const __m256i nine = _mm256_setr_epi32(0, 9, 18, 27, 36, 45, 54, 63); /* one kernel per lane */
  for (int64_t m = begin; m < end; m++)
    for (int64_t c = 0; c < C; c += 8) {
      int64_t n = C - c < 8 ? C - c : 8;
      const float *src = ww->w + (m * C + c) * 9;
      __m256 gk[9];
      if (n == 8) {
        for (int q = 0; q < 72; q += 16) /* the weights stream from memory: fetch ahead */
          _mm_prefetch((const char *)(src + WINO_PREFETCH + q), _MM_HINT_T0);
        for (int k = 0; k < 9; k++) gk[k] = _mm256_i32gather_ps(src + k, nine, 4);
      } else {
        float t[9][8] = {{0}};
        for (int64_t q = 0; q < n; q++)
          for (int k = 0; k < 9; k++) t[k][q] = src[q * 9 + k];
        for (int k = 0; k < 9; k++) gk[k] = _mm256_loadu_ps(t[k]);
      }
      __m256 r[4][3];
      for (int col = 0; col < 3; col++) { /* G on the kernel's rows */
        __m256 g0 = gk[col], g1 = gk[3 + col], g2 = gk[6 + col], sum = _mm256_add_ps(g0, g2);
        r[0][col] = g0;
        r[1][col] = _mm256_mul_ps(_mm256_add_ps(sum, g1), half);
        r[2][col] = _mm256_mul_ps(_mm256_sub_ps(sum, g1), half);
        r[3][col] = g2;
      }
      float *dst = ww->j->u + m * C + c;
      for (int i = 0; i < 4; i++) { /* and on its columns */
        __m256 sum = _mm256_add_ps(r[i][0], r[i][2]), v[4];
        v[0] = r[i][0];
        v[1] = _mm256_mul_ps(_mm256_add_ps(sum, r[i][1]), half);
        v[2] = _mm256_mul_ps(_mm256_sub_ps(sum, r[i][1]), half);
        v[3] = r[i][2];
        for (int q = 0; q < 4; q++) store_n(dst + (i * 4 + q) * plane, v[q], n);
      }
    }
}

/* V_xi[c, col0 + tile] = (B^T d B)[xi] for every tile of the padded plane P; v points at row c
 * of V_0. */
static void wino_input_plane(const wino_job *j, const float *P, float *v, int64_t col0) {
  int64_t vstride = j->g->C * j->ld;
  for (int64_t ty = 0; ty < j->th; ty++)
    for (int64_t tx = 0; tx < j->tw; tx += 8) {
      __m256 d[4][4], t[4][4];
      for (int i = 0; i < 4; i++) {
        const float *row = P + (2 * ty + i) * j->PW + 2 * tx;
        d[i][0] = even16(row);
        d[i][1] = odd16(row);
        d[i][2] = even16(row + 2);
        d[i][3] = odd16(row + 2);
      }
      for (int q = 0; q < 4; q++) { /* B^T on rows */
        t[0][q] = _mm256_sub_ps(d[0][q], d[2][q]);
        t[1][q] = _mm256_add_ps(d[1][q], d[2][q]);
        t[2][q] = _mm256_sub_ps(d[2][q], d[1][q]);
        t[3][q] = _mm256_sub_ps(d[1][q], d[3][q]);
      }
      float *dst = v + col0 + ty * j->tw + tx;
      for (int i = 0; i < 4; i++) { /* B on columns */
        _mm256_storeu_ps(dst + (i * 4 + 0) * vstride, _mm256_sub_ps(t[i][0], t[i][2]));
        _mm256_storeu_ps(dst + (i * 4 + 1) * vstride, _mm256_add_ps(t[i][1], t[i][2]));
        _mm256_storeu_ps(dst + (i * 4 + 2) * vstride, _mm256_sub_ps(t[i][2], t[i][1]));
        _mm256_storeu_ps(dst + (i * 4 + 3) * vstride, _mm256_sub_ps(t[i][1], t[i][3]));
      }
    }
}

/* Output plane y of channel m = A^T M A + bias; mt points at row m of M_0. */
static void wino_output_plane(const wino_job *j, const float *mt, int64_t col0, float bias, float *y) {
  int64_t OH = j->g->out[0], OW = j->g->out[1], mstride = j->g->M * j->ld;
  __m256 b = _mm256_set1_ps(bias);
  for (int64_t ty = 0; ty < j->th; ty++)
    for (int64_t tx = 0; tx < j->tw; tx += 8) {
      const float *src = mt + col0 + ty * j->tw + tx;
      __m256 s[2][4];
      for (int q = 0; q < 4; q++) { /* A^T on rows */
        __m256 m0 = _mm256_loadu_ps(src + q * mstride), m1 = _mm256_loadu_ps(src + (4 + q) * mstride);
        __m256 m2 = _mm256_loadu_ps(src + (8 + q) * mstride), m3 = _mm256_loadu_ps(src + (12 + q) * mstride);
        s[0][q] = _mm256_add_ps(_mm256_add_ps(m0, m1), m2);
        s[1][q] = _mm256_sub_ps(_mm256_sub_ps(m1, m2), m3);
      }
      int64_t ox = 2 * tx, n = OW - ox < 16 ? OW - ox : 16;
      for (int i = 0; i < 2 && 2 * ty + i < OH; i++) { /* A on columns; the tiles' pairs interleave */
        __m256 y0 = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(s[i][0], s[i][1]), s[i][2]), b);
        __m256 y1 = _mm256_add_ps(_mm256_sub_ps(_mm256_sub_ps(s[i][1], s[i][2]), s[i][3]), b);
        __m256 lo = _mm256_unpacklo_ps(y0, y1), hi = _mm256_unpackhi_ps(y0, y1);
        float row[16];
        _mm256_storeu_ps(row, _mm256_permute2f128_ps(lo, hi, 0x20));
        _mm256_storeu_ps(row + 8, _mm256_permute2f128_ps(lo, hi, 0x31));
        copy_f(y + (2 * ty + i) * OW + ox, row, n);
      }
    }
}

/* The three steps of one chunk (images [n0, n0+nb)), each over part p of `parts`. */
typedef struct wino_chunk {
  const wino_job *j;
  int64_t n0, nb;
  float *v, *m; /* this chunk's V and M */
} wino_chunk;

static float *slot_plane(const wino_job *j, int64_t s) { return (float *)(j->slot_mem + (size_t)s * j->slot_bytes); }
static void *slot_gemm_ws(const wino_job *j, int64_t s) { return slot_plane(j, s) + j->PH * j->PW; }

static void wino_inputs(const wino_chunk *ch, int64_t p, int64_t parts, int64_t slot) {
  const wino_job *j = ch->j;
  const conv_geom *g = j->g;
  float *P = slot_plane(j, slot);
  int64_t planes = ch->nb * g->C;
  for (int64_t q = planes * p / parts; q < planes * (p + 1) / parts; q++) {
    int64_t i = q / g->C, c = q % g->C;
    const float *x = j->x + ((ch->n0 + i) * g->C + c) * g->in_size;
    float *dst = P + g->pb[0] * j->PW + g->pb[1]; /* the borders stay zero */
    for (int64_t ih = 0; ih < g->in[0]; ih++) copy_f(dst + ih * j->PW, x + ih * g->in[1], g->in[1]);
    wino_input_plane(j, P, ch->v + c * j->ld, i * j->tiles);
  }
}

static void wino_gemms(const wino_chunk *ch, int64_t p, int64_t parts, int64_t slot) {
  const wino_job *j = ch->j;
  const conv_geom *g = j->g;
  for (int64_t xi = 16 * p / parts; xi < 16 * (p + 1) / parts; xi++) {
    kx_gemm gm = {.M = g->M, .N = ch->nb * j->tiles, .K = g->C, .A = j->u + xi * g->M * g->C, .lda = g->C,
                  .B = ch->v + xi * g->C * j->ld, .ldb = j->ld, .alpha = 1, .beta = 0, .C = ch->m + xi * g->M * j->ld, .ldc = j->ld};
    kx_gemm_run(NULL, &gm, slot_gemm_ws(j, slot));
  }
}

static void wino_outputs(const wino_chunk *ch, int64_t p, int64_t parts) {
  const wino_job *j = ch->j;
  const conv_geom *g = j->g;
  int64_t planes = ch->nb * g->M;
  for (int64_t q = planes * p / parts; q < planes * (p + 1) / parts; q++) {
    int64_t i = q / g->M, m = q % g->M;
    wino_output_plane(j, ch->m + m * j->ld, i * j->tiles, j->b ? j->b[m] : 0.0f, j->y + ((ch->n0 + i) * g->M + m) * g->out_size);
  }
}

/* A chunk's step split across the slots (chunks in turn). */
typedef struct wino_split {
  const wino_chunk *ch;
  int step;
} wino_split;

static void wino_split_range(void *arg, int64_t begin, int64_t end) {
  const wino_split *sp = arg;
  int parts = sp->ch->j->slots;
  for (int64_t p = begin; p < end; p++) {
    if (sp->step == 0) wino_inputs(sp->ch, p, parts, p);
    else if (sp->step == 1) wino_gemms(sp->ch, p, parts, p);
    else wino_outputs(sp->ch, p, parts);
  }
}

/* Slot s runs its share of the chunks from start to end with its own V and M. */
static void wino_own_range(void *arg, int64_t begin, int64_t end) {
  const wino_job *j = arg;
  for (int64_t s = begin; s < end; s++)
    for (int64_t k = j->chunks * s / j->slots; k < j->chunks * (s + 1) / j->slots; k++) {
      float *v = j->vm + s * j->vm_floats;
      wino_chunk ch = {j, k * j->imgs, j->g->N - k * j->imgs < j->imgs ? j->g->N - k * j->imgs : j->imgs, v,
                       v + 16 * j->g->C * j->ld};
      wino_inputs(&ch, 0, 1, s);
      wino_gemms(&ch, 0, 1, s);
      wino_outputs(&ch, 0, 1);
    }
}

static kiln_status run_winograd(kx_ctx *c, const conv_geom *g, const float *x, const float *w, const float *b, float *y) {
  wino_job j = {.g = g, .x = x, .b = b, .y = y};
  j.th = (g->out[0] + 1) / 2;
  j.tw = (g->out[1] + 1) / 2;
  j.tiles = j.th * j.tw;
  /* the padded plane covers every tile's 4x4 patch, and 16 + 2 columns past the last group */
  int64_t twv = (j.tw + 7) / 8 * 8;
  j.PH = g->pb[0] + g->in[0] > 2 * j.th + 2 ? g->pb[0] + g->in[0] : 2 * j.th + 2;
  j.PW = g->pb[1] + g->in[1] > 2 * twv + 2 ? g->pb[1] + g->in[1] : 2 * twv + 2;
  j.slots = kx_gemm_threads(c);
  int64_t cols = WINO_CHUNK_BYTES / (int64_t)(16 * sizeof(float) * (g->C + g->M)) - 8;
  j.imgs = cols / j.tiles < 1 ? 1 : cols / j.tiles;
  if (j.imgs > g->N) j.imgs = g->N;
  if (j.slots > 1 && j.imgs > (g->N + j.slots - 1) / j.slots) j.imgs = (g->N + j.slots - 1) / j.slots;
  j.chunks = (g->N + j.imgs - 1) / j.imgs;
  j.own_chunks = j.slots > 1 && j.chunks >= j.slots;
  j.ld = j.imgs * j.tiles + 8;
  j.vm_floats = 16 * (g->C + g->M) * j.ld;
  j.slot_bytes = ((size_t)(j.PH * j.PW) * sizeof(float) + kx_gemm_workspace(1) + 63) & ~(size_t)63;
  size_t u_bytes = (size_t)(16 * g->M * g->C) * sizeof(float), slots_bytes = (size_t)j.slots * j.slot_bytes;
  size_t vm_bytes = (size_t)((j.own_chunks ? j.slots : 1) * j.vm_floats) * sizeof(float);
  char *buf = kx_scratch(c, u_bytes + slots_bytes + vm_bytes);
  if (!buf) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory for %zu bytes of Winograd scratch", u_bytes + slots_bytes + vm_bytes);
  j.u = (float *)buf;
  j.slot_mem = buf + u_bytes;
  j.vm = (float *)(buf + u_bytes + slots_bytes);
  for (int s = 0; s < j.slots; s++) memset(slot_plane(&j, s), 0, (size_t)(j.PH * j.PW) * sizeof(float));
  wino_weights ww = {&j, w};
  kx_parallel(c, g->M, 40.0 * (double)g->C, wino_weights_range, &ww);
  if (j.own_chunks) {
    kx_parallel(c, j.slots, 1e12, wino_own_range, &j);
    return NULL;
  }
  for (int64_t k = 0; k < j.chunks; k++) {
    wino_chunk ch = {&j, k * j.imgs, g->N - k * j.imgs < j.imgs ? g->N - k * j.imgs : j.imgs, j.vm, j.vm + 16 * g->C * j.ld};
    for (int step = 0; step < 3; step++) {
      wino_split sp = {&ch, step};
      if (j.slots > 1) kx_parallel(c, j.slots, 1e12, wino_split_range, &sp);
      else wino_split_range(&sp, 0, 1);
    }
  }
  return NULL;
}

/* ------------------------------------------------------------------ run */

static kiln_status conv_run_any(kx_ctx *c) {
  const conv_params *p = c->node->params;
  const kiln_tensor *x, *w, *b = kx_input(c, 2);
  kiln_status st;
  if ((st = kx_require(c, 0, &x)) || (st = kx_require(c, 1, &w))) return st;
  if ((st = kx_check_dtype(x, 0, KX_FLOATS)) || (st = kx_check_dtype(w, 1, KX_FLOATS)) || (st = kx_check_dtype(b, 2, KX_FLOATS)))
    return st;
  if (w->dtype != x->dtype || (b && b->dtype != x->dtype))
    return kiln_error(KILN_INVALID_ARGUMENT, "X, W and B must share a dtype: X is %s, W %s%s%s", kiln_dtype_name(x->dtype),
                      kiln_dtype_name(w->dtype), b ? ", B " : "", b ? kiln_dtype_name(b->dtype) : "");
  conv_geom g;
  if ((st = geom_common(p, x, w, b, &g))) return st;
  if ((st = p->transpose ? geom_transpose(p, &g) : geom_conv(p, &g))) return st;
  int64_t dims[KILN_MAX_RANK] = {g.N, g.M};
  for (int i = 0; i < g.nd; i++) dims[2 + i] = g.out[i];
  kiln_tensor *y;
  if ((st = kx_output(c, 0, x->dtype, x->rank, dims, &y))) return st;
  if (kiln_tensor_numel(y) == 0) return NULL;

  int half = x->dtype == KILN_FLOAT16 || x->dtype == KILN_BFLOAT16;
  if (!p->transpose && x->dtype == KILN_FLOAT && g.nd == 2 && g.Cg == 1)
    return run_depthwise(c, &g, x->data, w->data, b ? b->data : NULL, y->data);
  if (!p->transpose && x->dtype == KILN_FLOAT && winograd_fits(&g))
    return run_winograd(c, &g, x->data, w->data, b ? b->data : NULL, y->data);
  conv_run r = {.g = &g, .transpose = p->transpose, .dbl = x->dtype == KILN_DOUBLE, .x = x->data, .w = w->data,
                .b = b ? b->data : NULL, .y = y->data};
  plan_units(c, &r);
  /* float16 / bfloat16: X, W, B and Y as floats after the units' buffers */
  int64_t nx = kiln_tensor_numel(x), nw = kiln_tensor_numel(w), nb = b ? kiln_tensor_numel(b) : 0, ny = kiln_tensor_numel(y);
  size_t unit_bytes = units_scratch(&r), wide_bytes = half ? (size_t)(nx + nw + nb + ny) * sizeof(float) : 0;
  char *buf = kx_scratch(c, unit_bytes + wide_bytes);
  if (!buf) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory for %zu bytes of convolution scratch", unit_bytes + wide_bytes);
  r.ws = buf;
  if (half) {
    float *wide = (float *)(buf + unit_bytes);
    kx_to_float(x->dtype, x->data, wide, nx);
    kx_to_float(w->dtype, w->data, wide + nx, nw);
    if (b) kx_to_float(b->dtype, b->data, wide + nx + nw, nb);
    r.x = wide;
    r.w = wide + nx;
    r.b = b ? wide + nx + nw : NULL;
    r.y = wide + nx + nw + nb;
  }
  run_units(c, &r);
  if (half) kx_from_float(y->dtype, r.y, y->data, ny);
  return NULL;
}

const kx_op kx_ops_conv[] = {
    {"", "Conv", 1, 0, conv_prepare, conv_run_any, NULL, 0, 1},
    {"", "ConvTranspose", 1, 0, conv_transpose_prepare, conv_run_any, NULL, 0, 1},
    {0},
};
