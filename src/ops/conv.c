/* Convolutions: Conv and ConvTranspose over 1 to 6 spatial dims, with groups, strides,
 * dilations, explicit or automatic padding and an optional bias.
 *
 * Float Conv picks one of four lowerings:
 *   - 2-D with few input channels (a network's first layer): a direct kernel computing several
 *     output channels per input load, from zero-bordered copies of the planes;
 *   - depthwise 2-D (one input channel per group): a direct kernel over each channel's plane;
 *   - 3x3 stride 1 with enough output: Winograd F(2x2, 3x3), 16 GEMMs on transformed tiles, with
 *     the weights transformed at load when they are a constant;
 *   - everything else: one GEMM per (images, group) unit, Y_g[Mg, out] = W_g[Mg, Cg*k] . col,
 *     where col, the im2col unfolding, is packed straight into kx_gemm's panels (1x1 stride-1
 *     unpadded convolutions read the image itself).
 * Each applies the fused activation (n->post) while storing. ConvTranspose runs the GEMM the other
 * way, col[Mg*k, in] = W_g^T . X_g, and scatters col into the output (col2im).
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
  float *wino_u; /* Winograd's transformed weights, when W is a constant that takes that lowering */
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

/* Elements 0, 2, ..., 14 (or 1, 3, ..., 15) of the 16 floats lo, hi. */
static inline __m256 even_lanes(__m256 lo, __m256 hi) {
  __m256 t = _mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(2, 0, 2, 0));
  return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(t), _MM_SHUFFLE(3, 1, 2, 0)));
}
static inline __m256 odd_lanes(__m256 lo, __m256 hi) {
  __m256 t = _mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(3, 1, 3, 1));
  return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(t), _MM_SHUFFLE(3, 1, 2, 0)));
}
/* The same of the 16 floats at p. */
static inline __m256 even16(const float *p) { return even_lanes(_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)); }
static inline __m256 odd16(const float *p) { return odd_lanes(_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)); }

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
  const kx_activation *act; /* float Conv only: applied in the GEMM's store */
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
                .row_bias = r->b ? (const float *)r->b + grp * g->Mg : NULL, .act = r->act};
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

/* ------------------------------------------------------------------ padded, phase-split planes */

/* The direct and depthwise kernels read their input from a zero-bordered copy of each plane, so
 * that every output column reads inside it and rows run eight columns at a time with no border
 * cases. For a stride s along W the copy's columns are also split by phase: row r of phase f
 * holds padded columns f, f + s, f + 2s, ..., so the taps of a strided convolution read
 * contiguous vectors too (output column ow under kernel column kw is padded column
 * ow*s + kw*d, element ow + kw*d / s of phase kw*d % s). A plane is PH rows of s phase rows of
 * PWs floats. The borders are zeroed once per buffer: later planes only overwrite the inside. */
typedef struct padded {
  int64_t s, PH, PWs, plane; /* plane = PH * s * PWs */
} padded;

/* Sizes the planes so that vectors of 8 over every output column stay inside. */
static padded padded_geometry(const conv_geom *g) {
  padded p;
  int64_t OWv = (g->out[1] + 7) / 8 * 8, sw = g->s[1];
  p.s = sw;
  p.PWs = OWv + (g->k[1] - 1) * g->d[1] / sw; /* the last vector of the farthest tap */
  int64_t cols = (g->pb[1] + g->in[1] + sw - 1) / sw; /* every input column lands inside */
  if (sw == 2) cols += 8; /* and the zeros a stride-2 fill writes past the row's end, see padded_fill_row */
  if (cols > p.PWs) p.PWs = cols;
  int64_t rows = (g->out[0] - 1) * g->s[0] + (g->k[0] - 1) * g->d[0] + 1;
  p.PH = g->pb[0] + g->in[0] > rows ? g->pb[0] + g->in[0] : rows;
  p.plane = p.PH * sw * p.PWs;
  return p;
}

/* Offsets in a padded plane (from the output row's first padded row) of the taps (c, kh, kw) of
 * one output element, c over `channels` consecutive planes, in the order of W's elements. */
static void padded_taps(const conv_geom *g, const padded *p, int64_t channels, int64_t *taps) {
  int64_t t = 0;
  for (int64_t c = 0; c < channels; c++)
    for (int64_t kh = 0; kh < g->k[0]; kh++)
      for (int64_t kw = 0; kw < g->k[1]; kw++) {
        int64_t col = kw * g->d[1];
        taps[t++] = c * p->plane + (kh * g->d[0] * p->s + col % p->s) * p->PWs + col / p->s;
      }
}

/* Lanes [0, n) of a vector (all of them for n >= 8), for the last, partial vector of a row. */
static inline __m256i lanes_below(int64_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n < 8 ? (int)n : 8), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* Rows are written whole vectors at a time, letting the last vector of a row spill past its end
 * into memory that is written later in the same pass (the next row), which spares partial
 * vectors in the hot loops; `exact` rows (the last of a plane or of a thread's range) end with a
 * short scalar loop instead. */
static inline void copy_tail(float *dst, __m256 v, int64_t n) {
  float t[8];
  _mm256_storeu_ps(t, v);
  for (int64_t i = 0; i < n; i++) dst[i] = t[i];
}

/* Copies input row src (IW floats) into padded row `row`, at padded column pl. Past the row's
 * end a non-exact copy writes zeros: with stride 1 into the zero border and the next row,
 * filled after this one; with stride 2 into each phase row's eight floats of slack. */
static void padded_fill_row(const float *src, int64_t IW, int64_t pl, int64_t s, int64_t PWs, float *row, int exact) {
  if (s == 1) {
    int64_t i = 0;
    for (; i + 8 <= IW; i += 8) _mm256_storeu_ps(row + pl + i, _mm256_loadu_ps(src + i));
    if (i == IW) return;
    if (exact) memcpy(row + pl + i, src + i, (size_t)(IW - i) * sizeof *src);
    else _mm256_storeu_ps(row + pl + i, _mm256_maskload_ps(src + i, lanes_below(IW - i)));
    return;
  }
  int64_t done = 0;
  if (s == 2) { /* sixteen at a time: the even columns go to one phase, the odd ones to the other */
    float *even = row + pl % 2 * PWs + pl / 2, *odd = row + (pl + 1) % 2 * PWs + (pl + 1) / 2;
    for (; done + 16 <= IW; done += 16) {
      _mm256_storeu_ps(even + done / 2, even16(src + done));
      _mm256_storeu_ps(odd + done / 2, odd16(src + done));
    }
    if (done < IW && !exact) {
      __m256 lo = _mm256_maskload_ps(src + done, lanes_below(IW - done));
      __m256 hi = _mm256_maskload_ps(src + done + 8, lanes_below(IW - done - 8));
      _mm256_storeu_ps(even + done / 2, even_lanes(lo, hi));
      _mm256_storeu_ps(odd + done / 2, odd_lanes(lo, hi));
      done = IW;
    }
  }
  for (int64_t f = 0; f < s && done < IW; f++) { /* what is left, phase by phase: columns iw with (pl + iw) % s == f */
    int64_t iw = done + ((f - pl - done) % s + s) % s;
    float *dst = row + f * PWs + (pl + iw) / s;
    for (; iw < IW; iw += s) *dst++ = src[iw];
  }
}

/* Copies input rows [r0, r1) of plane x into the padded plane P, in order; the last one exactly,
 * since the next row may belong to another thread. */
static void padded_fill_rows(const conv_geom *g, const padded *p, const float *x, int64_t r0, int64_t r1, float *P) {
  for (int64_t ih = r0; ih < r1; ih++)
    padded_fill_row(x + ih * g->in[1], g->in[1], g->pb[1], p->s, p->PWs, P + (g->pb[0] + ih) * p->s * p->PWs, ih + 1 == r1);
}

/* Whether rows of OW outputs may spill their last vector into the next row: only when the spill
 * stays inside it (rows of 1 to 3 outputs always end exactly). */
static int spill_fits(int64_t OW) { return (OW + 7) / 8 * 8 - OW <= OW; }

/* Stores v (the activation applied) at p: all eight lanes, or only n when the row must end
 * exactly. */
static inline void store_out(float *p, __m256 v, int64_t n, int exact, const kx_activation *act) {
  if (act) v = kx_act_m256(act, v);
  if (n >= 8 || !exact) _mm256_storeu_ps(p, v);
  else copy_tail(p, v, n);
}

/* ------------------------------------------------------------------ depthwise */

/* 2-D depthwise (every group has one input channel, and Mg output channels): there is no
 * reduction over channels, so a GEMM would run one row at a time. Each input plane is copied
 * once into a padded plane (a few KB, in L1/L2) and its Mg output planes are computed from it,
 * row by row, eight columns at a time; 3x3 kernels keep their nine weights in registers. */
#define DW_MAX_TAPS 64 /* larger kernels take the GEMM lowering */

typedef struct dw_job {
  const conv_geom *g;
  const float *x, *w, *b;
  float *y;
  const kx_activation *act;
  padded pp;
  int64_t taps[DW_MAX_TAPS];
  float *pad;       /* per worker: one padded plane */
  int workers;
} dw_job;

/* One output row from padded row r; taps as padded_taps for one channel. The row's last vector
 * may spill into the next row unless it is `exact` (see store_out). */
static void dw_row_3x3(const float *r, const int64_t *taps, const float *w, float bias, const kx_activation *act,
                       float *yr, int64_t OW, int exact) {
  __m256 w0 = _mm256_set1_ps(w[0]), w1 = _mm256_set1_ps(w[1]), w2 = _mm256_set1_ps(w[2]);
  __m256 w3 = _mm256_set1_ps(w[3]), w4 = _mm256_set1_ps(w[4]), w5 = _mm256_set1_ps(w[5]);
  __m256 w6 = _mm256_set1_ps(w[6]), w7 = _mm256_set1_ps(w[7]), w8 = _mm256_set1_ps(w[8]), b = _mm256_set1_ps(bias);
  const float *p0 = r + taps[0], *p1 = r + taps[1], *p2 = r + taps[2], *p3 = r + taps[3], *p4 = r + taps[4];
  const float *p5 = r + taps[5], *p6 = r + taps[6], *p7 = r + taps[7], *p8 = r + taps[8];
  for (int64_t ow = 0; ow < OW; ow += 8) { /* one sum per kernel row: short dependency chains */
    __m256 a0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(p0 + ow), b);
    __m256 a1 = _mm256_mul_ps(w3, _mm256_loadu_ps(p3 + ow));
    __m256 a2 = _mm256_mul_ps(w6, _mm256_loadu_ps(p6 + ow));
    a0 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(p1 + ow), a0);
    a1 = _mm256_fmadd_ps(w4, _mm256_loadu_ps(p4 + ow), a1);
    a2 = _mm256_fmadd_ps(w7, _mm256_loadu_ps(p7 + ow), a2);
    a0 = _mm256_fmadd_ps(w2, _mm256_loadu_ps(p2 + ow), a0);
    a1 = _mm256_fmadd_ps(w5, _mm256_loadu_ps(p5 + ow), a1);
    a2 = _mm256_fmadd_ps(w8, _mm256_loadu_ps(p8 + ow), a2);
    store_out(yr + ow, _mm256_add_ps(_mm256_add_ps(a0, a1), a2), OW - ow, exact, act);
  }
}

/* Two output rows of a 3x3 stride-1 kernel at once: they share two of their four input rows, so
 * each vector costs six loads instead of nine (the single-row loop is bound by its loads). r is
 * the first row's first padded row, rs the step between padded rows. */
static void dw_rows2_3x3s1(const float *r, int64_t rs, const float *w, float bias, const kx_activation *act, float *yr,
                           int64_t OW, int exact) {
  __m256 w0 = _mm256_set1_ps(w[0]), w1 = _mm256_set1_ps(w[1]), w2 = _mm256_set1_ps(w[2]);
  __m256 w3 = _mm256_set1_ps(w[3]), w4 = _mm256_set1_ps(w[4]), w5 = _mm256_set1_ps(w[5]);
  __m256 w6 = _mm256_set1_ps(w[6]), w7 = _mm256_set1_ps(w[7]), w8 = _mm256_set1_ps(w[8]), b = _mm256_set1_ps(bias);
  const float *r0 = r, *r1 = r + rs, *r2 = r1 + rs, *r3 = r2 + rs;
  /* right to left: the first row's spill into the second is overwritten when ow reaches 0 */
  for (int64_t ow = (OW - 1) / 8 * 8; ow >= 0; ow -= 8) {
    __m256 x0 = _mm256_loadu_ps(r1 + ow), x1 = _mm256_loadu_ps(r1 + ow + 1), x2 = _mm256_loadu_ps(r1 + ow + 2);
    __m256 a = _mm256_fmadd_ps(w3, x0, b), c = _mm256_fmadd_ps(w0, x0, b); /* a: row 0, c: row 1 */
    a = _mm256_fmadd_ps(w4, x1, a), c = _mm256_fmadd_ps(w1, x1, c);
    a = _mm256_fmadd_ps(w5, x2, a), c = _mm256_fmadd_ps(w2, x2, c);
    x0 = _mm256_loadu_ps(r2 + ow), x1 = _mm256_loadu_ps(r2 + ow + 1), x2 = _mm256_loadu_ps(r2 + ow + 2);
    a = _mm256_fmadd_ps(w6, x0, a), c = _mm256_fmadd_ps(w3, x0, c);
    a = _mm256_fmadd_ps(w7, x1, a), c = _mm256_fmadd_ps(w4, x1, c);
    a = _mm256_fmadd_ps(w8, x2, a), c = _mm256_fmadd_ps(w5, x2, c);
    a = _mm256_fmadd_ps(w0, _mm256_loadu_ps(r0 + ow), a);
    a = _mm256_fmadd_ps(w1, _mm256_loadu_ps(r0 + ow + 1), a);
    a = _mm256_fmadd_ps(w2, _mm256_loadu_ps(r0 + ow + 2), a);
    c = _mm256_fmadd_ps(w6, _mm256_loadu_ps(r3 + ow), c);
    c = _mm256_fmadd_ps(w7, _mm256_loadu_ps(r3 + ow + 1), c);
    c = _mm256_fmadd_ps(w8, _mm256_loadu_ps(r3 + ow + 2), c);
    store_out(yr + ow, a, OW - ow, 0, act);
    store_out(yr + OW + ow, c, OW - ow, exact, act);
  }
}

/* Any other kernel size, stride or dilation. */
static void dw_row_any(const float *r, const int64_t *taps, int64_t T, const float *w, float bias, const kx_activation *act,
                       float *yr, int64_t OW, int exact) {
  for (int64_t ow = 0; ow < OW; ow += 8) {
    __m256 acc = _mm256_set1_ps(bias);
    for (int64_t t = 0; t < T; t++) acc = _mm256_fmadd_ps(_mm256_broadcast_ss(w + t), _mm256_loadu_ps(r + taps[t] + ow), acc);
    store_out(yr + ow, acc, OW - ow, exact, act);
  }
}

/* Output plane m of image n from the padded plane P of its input channel. */
static void dw_plane(const dw_job *j, const float *P, int64_t n, int64_t m) {
  const conv_geom *g = j->g;
  int64_t OW = g->out[1], row_step = g->s[0] * j->pp.s * j->pp.PWs;
  const float *w = j->w + m * g->k_size;
  float bias = j->b ? j->b[m] : 0.0f, *y = j->y + (n * g->M + m) * g->out_size;
  int k3 = g->k_size == 9 && g->k[0] == 3, pairs = k3 && j->pp.s == 1 && g->s[0] == 1 && g->d[0] == 1 && g->d[1] == 1;
  for (int64_t oh = 0; oh < g->out[0]; oh++) {
    int last = oh + 1 == g->out[0] || !spill_fits(OW);
    if (pairs && !last) {
      dw_rows2_3x3s1(P + oh * row_step, row_step, w, bias, j->act, y + oh * OW, OW, oh + 2 == g->out[0] || !spill_fits(OW));
      oh++;
    } else if (k3) {
      dw_row_3x3(P + oh * row_step, j->taps, w, bias, j->act, y + oh * OW, OW, last);
    } else {
      dw_row_any(P + oh * row_step, j->taps, g->k_size, w, bias, j->act, y + oh * OW, OW, last);
    }
  }
}

/* Worker wk takes an equal share of the N * C input planes, each with its Mg output planes. */
static void dw_range(void *arg, int64_t begin, int64_t end) {
  const dw_job *j = arg;
  const conv_geom *g = j->g;
  int64_t planes = g->N * g->C;
  for (int64_t wk = begin; wk < end; wk++) {
    float *P = j->pad + wk * j->pp.plane;
    for (int64_t q = planes * wk / j->workers; q < planes * (wk + 1) / j->workers; q++) {
      int64_t n = q / g->C, cin = q % g->C;
      padded_fill_rows(g, &j->pp, j->x + q * g->in_size, 0, g->in[0], P);
      for (int64_t m = cin * g->Mg; m < (cin + 1) * g->Mg; m++) dw_plane(j, P, n, m);
    }
  }
}

static int depthwise_fits(const conv_geom *g) { return g->nd == 2 && g->Cg == 1 && g->G > 1 && g->k_size <= DW_MAX_TAPS; }

static kiln_status run_depthwise(kx_ctx *c, const conv_geom *g, const float *x, const float *w, const float *b,
                                 const kx_activation *act, float *y) {
  dw_job j = {.g = g, .x = x, .w = w, .b = b, .y = y, .act = act};
  j.pp = padded_geometry(g);
  padded_taps(g, &j.pp, 1, j.taps);
  int64_t planes = g->N * g->C;
  double work = (double)g->N * (double)g->M * (double)(g->out_size * g->k_size);
  j.workers = kx_gemm_threads(c); /* each worker pays for its wake-up with 1e5 multiply-adds */
  if (j.workers > planes) j.workers = (int)planes;
  if (work < 1e5 * j.workers) j.workers = work >= 2e5 ? (int)(work / 1e5) : 1;
  size_t bytes = (size_t)(j.workers * j.pp.plane) * sizeof(float);
  j.pad = kx_scratch(c, bytes);
  if (!j.pad) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory for %zu bytes of depthwise scratch", bytes);
  memset(j.pad, 0, bytes);
  if (j.workers > 1) kx_parallel(c, j.workers, 1e12, dw_range, &j);
  else dw_range(&j, 0, 1);
  return NULL;
}

/* ------------------------------------------------------------------ direct convolution */

/* Convolutions with few input channels (a network's first layer: 1 or 3 channels) have a short
 * reduction, K = C * KH * KW, which leaves the GEMM lowering paying more to unfold the image than
 * to multiply it. They run directly from padded planes instead: each output row is computed four
 * output channels by 24 columns at a time, every input vector loaded once for the four channels
 * and every weight broadcast once for the three vectors. Measured against im2col: better up to
 * K = 64 at any width, and up to 160 (ResNet's 7x7 stem, K = 147) on rows of 32 and more. */
#define DIRECT_MAX_TAPS 160
#define DIRECT_SHORT_TAPS 64
#define DIRECT_WIDE_ROWS 32
#define DIRECT_MB 4 /* output channels per register tile */
#define DIRECT_NV 3 /* vectors of 8 columns per register tile */

typedef struct direct_job {
  const conv_geom *g;
  const float *x, *w, *b;
  float *y;
  const kx_activation *act;
  padded pp;
  int64_t taps[DIRECT_MAX_TAPS];
  float *pad;  /* per worker, or for the pass: one image's C padded planes */
  int64_t n0;  /* the image being computed */
  int workers; /* > 1: each runs whole images */
} direct_job;

/* y[m][ow + 8v + lane] for the mb channels from w (rows of T taps) and nv vectors at r + ow. */
static inline __attribute__((always_inline)) void direct_tile(const direct_job *j, const float *r, const float *w,
                                                              const float *bias, float *y, int64_t ow, int64_t OW, int exact,
                                                              int mb, int nv) {
  int64_t T = j->g->Cg * j->g->k_size;
  __m256 acc[DIRECT_MB][DIRECT_NV]; /* the loops over m and v unroll, so these live in registers */
#pragma GCC unroll 4
  for (int m = 0; m < mb; m++)
#pragma GCC unroll 3
    for (int v = 0; v < nv; v++) acc[m][v] = _mm256_set1_ps(bias ? bias[m] : 0.0f);
  for (int64_t t = 0; t < T; t++) {
    const float *p = r + j->taps[t] + ow;
    __m256 in[DIRECT_NV];
#pragma GCC unroll 3
    for (int v = 0; v < nv; v++) in[v] = _mm256_loadu_ps(p + 8 * v);
#pragma GCC unroll 4
    for (int m = 0; m < mb; m++) {
      __m256 wv = _mm256_broadcast_ss(w + m * T + t);
#pragma GCC unroll 3
      for (int v = 0; v < nv; v++) acc[m][v] = _mm256_fmadd_ps(wv, in[v], acc[m][v]);
    }
  }
#pragma GCC unroll 4
  for (int m = 0; m < mb; m++)
#pragma GCC unroll 3
    for (int v = 0; v < nv; v++) store_out(y + m * j->g->out_size + ow + 8 * v, acc[m][v], OW - ow - 8 * v, exact, j->act);
}

/* Channels [m, m+mb) of output row oh; r is the row's first padded row, y its plane row. The
 * row's last vectors may spill into the next row unless it is `exact` (see store_out). */
static void direct_row(const direct_job *j, const float *r, int64_t m, int mb, float *y, int exact) {
  int64_t OW = j->g->out[1], T = j->g->Cg * j->g->k_size, ow = 0;
  const float *w = j->w + m * T, *bias = j->b ? j->b + m : NULL;
  if (mb == DIRECT_MB) {
    for (; ow + 8 * (DIRECT_NV - 1) < OW; ow += 8 * DIRECT_NV) direct_tile(j, r, w, bias, y, ow, OW, exact, DIRECT_MB, DIRECT_NV);
    if (ow + 8 < OW) {
      direct_tile(j, r, w, bias, y, ow, OW, exact, DIRECT_MB, 2);
      ow += 16;
    }
    if (ow < OW) direct_tile(j, r, w, bias, y, ow, OW, exact, DIRECT_MB, 1);
    return;
  }
  for (int q = 0; q < mb; q++) /* the last one to three channels */
    for (ow = 0; ow < OW; ow += 8)
      direct_tile(j, r, w + q * T, bias ? bias + q : NULL, y + q * j->g->out_size, ow, OW, exact, 1, 1);
}

/* Fills rows [begin, end) of image n0's padded planes (channel, input row). */
static void direct_fill_range(void *arg, int64_t begin, int64_t end) {
  const direct_job *j = arg;
  const conv_geom *g = j->g;
  int64_t IH = g->in[0];
  for (int64_t q = begin; q < end;) {
    int64_t plane = q / IH, r0 = q % IH, r1 = end - q < IH - r0 ? r0 + (end - q) : IH;
    padded_fill_rows(g, &j->pp, j->x + (j->n0 * g->C + plane) * g->in_size, r0, r1, j->pad + plane * j->pp.plane);
    q += r1 - r0;
  }
}

/* Output rows [begin, end) of image n0, all channels, in order: a row's spill lands in the next
 * one, so only the range's last row ends exactly. */
static void direct_rows_range(void *arg, int64_t begin, int64_t end) {
  const direct_job *j = arg;
  const conv_geom *g = j->g;
  int64_t row_step = g->s[0] * j->pp.s * j->pp.PWs;
  for (int64_t oh = begin; oh < end; oh++) {
    float *y = j->y + j->n0 * g->M * g->out_size + oh * g->out[1];
    for (int64_t m = 0; m < g->M; m += DIRECT_MB) {
      int mb = g->M - m < DIRECT_MB ? (int)(g->M - m) : DIRECT_MB;
      direct_row(j, j->pad + oh * row_step, m, mb, y + m * g->out_size, oh + 1 == end || !spill_fits(g->out[1]));
    }
  }
}

/* Worker wk of j->workers runs its share of the images whole, with its own padded planes. */
static void direct_images_range(void *arg, int64_t begin, int64_t end) {
  const direct_job *j = arg;
  const conv_geom *g = j->g;
  for (int64_t wk = begin; wk < end; wk++) {
    direct_job own = *j;
    own.pad = j->pad + wk * g->C * j->pp.plane;
    for (own.n0 = g->N * wk / j->workers; own.n0 < g->N * (wk + 1) / j->workers; own.n0++) {
      direct_fill_range(&own, 0, g->C * g->in[0]);
      direct_rows_range(&own, 0, g->out[0]);
    }
  }
}

/* Not for 1x1 kernels: there the image is its own unfolding and the GEMM needs no im2col. */
static int direct_fits(const conv_geom *g) {
  int64_t taps = g->C * g->k_size;
  return g->nd == 2 && g->G == 1 && g->k_size > 1 &&
         (taps <= DIRECT_SHORT_TAPS || (taps <= DIRECT_MAX_TAPS && g->out[1] >= DIRECT_WIDE_ROWS));
}

/* With an image for every thread, each thread runs whole images; otherwise images run in turn,
 * their planes padded and then their output rows computed, each step split across the threads
 * by rows, so that a single image keeps every thread busy. */
static kiln_status run_direct(kx_ctx *c, const conv_geom *g, const float *x, const float *w, const float *b,
                              const kx_activation *act, float *y) {
  direct_job j = {.g = g, .x = x, .w = w, .b = b, .y = y, .act = act};
  j.pp = padded_geometry(g);
  padded_taps(g, &j.pp, g->C, j.taps);
  int threads = kx_gemm_threads(c);
  j.workers = g->N >= threads ? threads : 1;
  size_t bytes = (size_t)(j.workers * g->C * j.pp.plane) * sizeof(float);
  j.pad = kx_scratch(c, bytes);
  if (!j.pad) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory for %zu bytes of convolution scratch", bytes);
  memset(j.pad, 0, bytes);
  if (g->N >= threads) {
    if (j.workers > 1) kx_parallel(c, j.workers, 1e12, direct_images_range, &j);
    else direct_images_range(&j, 0, 1);
    return NULL;
  }
  double row_work = (double)(g->M * g->out[1] * g->C * g->k_size);
  for (j.n0 = 0; j.n0 < g->N; j.n0++) {
    kx_parallel(c, g->C * g->in[0], (double)g->in[1], direct_fill_range, &j);
    kx_parallel(c, g->out[0], row_work, direct_rows_range, &j);
  }
  return NULL;
}

/* ------------------------------------------------------------------ Winograd F(2x2, 3x3) */

/* 3x3 stride-1 convolutions (most of ResNet's work) use Lavin's F(2x2, 3x3): each 2x2 output tile
 * is A^T [(G g G^T) . (B^T d B)] A for the 4x4 input patch d under it, so a tile costs 16
 * multiply-adds per channel pair instead of 36. Summed over input channels, the 16 elementwise
 * products are 16 GEMMs: M_xi[m, tile] = U_xi[m, c] . V_xi[c, tile]. The transforms use only 0,
 * +-1 and 1/2, so results stay as accurate as the direct sum.
 *
 * U, the transformed weights, is computed once at load when W is a constant (a copy 16/9 the size
 * of W) and on every run otherwise. The tiles run in blocks of consecutive tile rows (spanning
 * images when images are small): a block's V and M, 16 x (C + M) floats per tile, are sized to
 * stay in cache between the transforms and the GEMMs; where the weights are large a block is
 * wide enough that streaming U once per block costs less than V and M. Input tiles come eight at a time from a zero-bordered copy of the
 * block's input rows, their stride-2 columns deinterleaved by even16/odd16. Rows of V and M
 * carry eight floats of slack so that the last group of a tile row may load and store whole
 * vectors (a group that runs past its tile row writes into the next one, written after it). */
#define WINO_MIN_TILES 40             /* fewer tiles per run: im2col */
#define WINO_BLOCK_BYTES (4 << 20)    /* V and M of one block: measured best between 1 and 12 MB
                                         (smaller blocks pay more at their edges than they save) */
#define WINO_MIN_BLOCK_TILES 16       /* GEMMs narrower than this waste their 16-column panels */
#define WINO_PREFETCH 576             /* floats ahead that the weight transform fetches */
#define WINO_MAX_SEGMENTS 64          /* images one block may span */

static int winograd_shape(int64_t C, int64_t M, const int64_t *k, const int64_t *s, const int64_t *d) {
  return C >= 16 && M >= 16 && k[0] == 3 && k[1] == 3 && s[0] == 1 && s[1] == 1 && d[0] == 1 && d[1] == 1;
}

static int winograd_fits(const conv_geom *g) {
  return g->nd == 2 && g->G == 1 && winograd_shape(g->C, g->M, g->k, g->s, g->d) &&
         g->N * ((g->out[0] + 1) / 2) * ((g->out[1] + 1) / 2) >= WINO_MIN_TILES;
}

/* U_xi[m, c] = (G g G^T)[xi] for the 3x3 kernels g = w[m, c], m in [m0, m1), eight input channels
 * at a time; u is [16][M][C]. */
static void wino_weights(const float *w, int64_t M, int64_t C, int64_t m0, int64_t m1, float *u) {
  int64_t plane = M * C;
  const __m256 half = _mm256_set1_ps(0.5f);
  const __m256i nine = _mm256_setr_epi32(0, 9, 18, 27, 36, 45, 54, 63); /* one kernel per lane */
  for (int64_t m = m0; m < m1; m++)
    for (int64_t c = 0; c < C; c += 8) {
      int64_t n = C - c < 8 ? C - c : 8;
      const float *src = w + (m * C + c) * 9;
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
      float *dst = u + m * C + c;
      for (int i = 0; i < 4; i++) { /* and on its columns */
        __m256 sum = _mm256_add_ps(r[i][0], r[i][2]), v[4];
        v[0] = r[i][0];
        v[1] = _mm256_mul_ps(_mm256_add_ps(sum, r[i][1]), half);
        v[2] = _mm256_mul_ps(_mm256_sub_ps(sum, r[i][1]), half);
        v[3] = r[i][2];
        for (int q = 0; q < 4; q++) store_out(dst + (i * 4 + q) * plane, v[q], n, 1, NULL);
      }
    }
}

typedef struct wino_job {
  const conv_geom *g;
  const float *x, *b;
  float *y;
  const kx_activation *act;
  const float *u;        /* [16][M][C] */
  int64_t th, tw;        /* tiles per image: th rows of tw */
  int64_t rows, blocks;  /* tile rows per block (the last may have fewer), blocks */
  int64_t SH, PW;        /* a zero-bordered strip of a block's input rows */
  int64_t ld;            /* row stride of V and M: a block's tiles and 8 floats of slack */
  int64_t vstride, mstride; /* from V_xi to V_xi+1, and M_xi to M_xi+1 (see wino_plane_stride) */
  int slots;             /* threads: each has a strip and GEMM workspace */
  int own_blocks;        /* each slot runs whole blocks with its own V and M; else blocks run in
                            turn, every step split across the slots */
  char *slot_mem;        /* per slot: strip, GEMM workspace, V and M when own_blocks */
  size_t slot_bytes;
  float *vm;             /* the shared V and M when !own_blocks */
} wino_job;

/* One block's part of one image: tile rows [ty0, ty1) of image n, at column col0 of V and M. */
typedef struct wino_seg {
  int64_t n, ty0, ty1, col0;
} wino_seg;

/* The image segments of block k, in order; returns their count. */
static int64_t wino_segments(const wino_job *j, int64_t k, wino_seg *seg, int64_t max) {
  int64_t R = j->g->N * j->th, r = k * j->rows, r1 = r + j->rows < R ? r + j->rows : R, count = 0;
  while (r < r1 && count < max) {
    int64_t n = r / j->th, ty0 = r % j->th, ty1 = ty0 + (r1 - r) < j->th ? ty0 + (r1 - r) : j->th;
    seg[count++] = (wino_seg){n, ty0, ty1, (r - k * j->rows) * j->tw};
    r += ty1 - ty0;
  }
  return count;
}

static float *slot_strip(const wino_job *j, int64_t s) { return (float *)(j->slot_mem + (size_t)s * j->slot_bytes); }
static void *slot_gemm_ws(const wino_job *j, int64_t s) { return slot_strip(j, s) + j->SH * j->PW; }
static float *slot_vm(const wino_job *j, int64_t s) {
  return j->own_blocks ? (float *)((char *)slot_gemm_ws(j, s) + kx_gemm_workspace(1)) : j->vm;
}

/* V_xi[c, col0 + tile] = (B^T d B)[xi] for the tile rows of segment sg of channel c (v points at
 * row c of V_0): the input rows under them are copied into the strip P (whose borders stay zero)
 * and transformed eight tiles at a time. */
static void wino_input(const wino_job *j, const wino_seg *sg, int64_t c, float *P, float *v) {
  const conv_geom *g = j->g;
  const float *x = j->x + (sg->n * g->C + c) * g->in_size;
  int64_t rows = 2 * (sg->ty1 - sg->ty0) + 2, vstride = j->vstride;
  for (int64_t i = 0; i < rows; i++) { /* padded row 2*ty0 + i is input row 2*ty0 + i - pb */
    int64_t ih = 2 * sg->ty0 + i - g->pb[0];
    float *dst = P + i * j->PW + g->pb[1];
    if (ih >= 0 && ih < g->in[0]) copy_f(dst, x + ih * g->in[1], g->in[1]);
    else zero_f(dst, g->in[1]);
  }
  for (int64_t ty = 0; ty < sg->ty1 - sg->ty0; ty++)
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
      float *dst = v + sg->col0 + ty * j->tw + tx;
      for (int i = 0; i < 4; i++) { /* B on columns */
        _mm256_storeu_ps(dst + (i * 4 + 0) * vstride, _mm256_sub_ps(t[i][0], t[i][2]));
        _mm256_storeu_ps(dst + (i * 4 + 1) * vstride, _mm256_add_ps(t[i][1], t[i][2]));
        _mm256_storeu_ps(dst + (i * 4 + 2) * vstride, _mm256_sub_ps(t[i][2], t[i][1]));
        _mm256_storeu_ps(dst + (i * 4 + 3) * vstride, _mm256_sub_ps(t[i][1], t[i][3]));
      }
    }
}

/* Output rows of segment sg, channel m: A^T M A + bias, activated; mt points at row m of M_0. */
static void wino_output(const wino_job *j, const wino_seg *sg, int64_t m, const float *mt) {
  const conv_geom *g = j->g;
  int64_t OH = g->out[0], OW = g->out[1], mstride = j->mstride;
  float *y = j->y + (sg->n * g->M + m) * g->out_size;
  __m256 b = _mm256_set1_ps(j->b ? j->b[m] : 0.0f);
  for (int64_t ty = sg->ty0; ty < sg->ty1; ty++)
    for (int64_t tx = 0; tx < j->tw; tx += 8) {
      const float *src = mt + sg->col0 + (ty - sg->ty0) * j->tw + tx;
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
        if (j->act) {
          y0 = kx_act_m256(j->act, y0);
          y1 = kx_act_m256(j->act, y1);
        }
        __m256 lo = _mm256_unpacklo_ps(y0, y1), hi = _mm256_unpackhi_ps(y0, y1);
        float row[16];
        _mm256_storeu_ps(row, _mm256_permute2f128_ps(lo, hi, 0x20));
        _mm256_storeu_ps(row + 8, _mm256_permute2f128_ps(lo, hi, 0x31));
        copy_f(y + (2 * ty + i) * OW + ox, row, n);
      }
    }
}

/* Part p of `parts` of a step of block k: the input transform (0), the 16 GEMMs (1) or the output
 * transform (2), with slot s's strip, workspace and V and M (v, then m). */
static void wino_step(const wino_job *j, int64_t k, int step, int64_t p, int64_t parts, int64_t s) {
  const conv_geom *g = j->g;
  wino_seg seg[WINO_MAX_SEGMENTS];
  int64_t nseg = wino_segments(j, k, seg, WINO_MAX_SEGMENTS), tiles = 0;
  for (int64_t q = 0; q < nseg; q++) tiles += (seg[q].ty1 - seg[q].ty0) * j->tw;
  float *v = slot_vm(j, s), *mm = v + 16 * j->vstride;
  if (step == 1) {
    for (int64_t xi = 16 * p / parts; xi < 16 * (p + 1) / parts; xi++) {
      kx_gemm gm = {.M = g->M, .N = tiles, .K = g->C, .A = j->u + xi * g->M * g->C, .lda = g->C, .B = v + xi * j->vstride,
                    .ldb = j->ld, .alpha = 1, .beta = 0, .C = mm + xi * j->mstride, .ldc = j->ld};
      kx_gemm_run(NULL, &gm, slot_gemm_ws(j, s));
    }
    return;
  }
  /* parts take whole channels: a channel's segments run in order, since the last tile group of a
   * segment writes past it into the next one */
  int64_t channels = step == 0 ? g->C : g->M;
  for (int64_t ch = channels * p / parts; ch < channels * (p + 1) / parts; ch++)
    for (int64_t q = 0; q < nseg; q++) {
      if (step == 0) wino_input(j, &seg[q], ch, slot_strip(j, s), v + ch * j->ld);
      else wino_output(j, &seg[q], ch, mm + ch * j->ld);
    }
}

/* Slot s runs its share of the blocks, each whole, with its own V and M. */
static void wino_own_range(void *arg, int64_t begin, int64_t end) {
  const wino_job *j = arg;
  for (int64_t s = begin; s < end; s++)
    for (int64_t k = j->blocks * s / j->slots; k < j->blocks * (s + 1) / j->slots; k++)
      for (int step = 0; step < 3; step++) wino_step(j, k, step, 0, 1, s);
}

/* One step of a block split across the slots (blocks in turn, with the shared V and M). */
typedef struct wino_split {
  const wino_job *j;
  int64_t k;
  int step;
} wino_split;

static void wino_split_range(void *arg, int64_t begin, int64_t end) {
  const wino_split *sp = arg;
  for (int64_t p = begin; p < end; p++) wino_step(sp->j, sp->k, sp->step, p, sp->j->slots, p);
}

typedef struct wino_weights_job {
  const float *w;
  float *u;
  int64_t M, C;
} wino_weights_job;

static void wino_weights_range(void *arg, int64_t begin, int64_t end) {
  const wino_weights_job *ww = arg;
  wino_weights(ww->w, ww->M, ww->C, begin, end, ww->u);
}

/* The distance between the 16 matrices of V (or M) for matrices of n floats: the transforms
 * touch all 16 at once, and at a multiple of 4 KB apart (64 channels by 280 tiles and 8 of slack
 * are 72 KB) they would all fall in one set of the 8-way L1. Rounded up to 4 KB and one cache
 * line past it, they fall in 16 consecutive sets. */
static int64_t wino_plane_stride(int64_t n) { return (n + 1023) / 1024 * 1024 + 16; }

/* Tile rows per block: enough tiles that the GEMMs fill their panels and that U, streamed once per
 * block, costs at most half of what V and M do; more while V and M still fit WINO_BLOCK_BYTES. */
static int64_t wino_block_rows(const conv_geom *g, int64_t tw, int64_t R) {
  int64_t per_tile = 16 * (g->C + g->M) * (int64_t)sizeof(float);
  int64_t tiles = WINO_BLOCK_BYTES / per_tile, reuse = g->C * g->M / (2 * (g->C + g->M));
  if (tiles < reuse) tiles = reuse;
  if (tiles < WINO_MIN_BLOCK_TILES) tiles = WINO_MIN_BLOCK_TILES;
  int64_t rows = (tiles + tw - 1) / tw, th = (g->out[0] + 1) / 2;
  if (rows > (WINO_MAX_SEGMENTS - 1) * th) rows = (WINO_MAX_SEGMENTS - 1) * th;
  return rows < R ? rows : R;
}

/* u: the prepared U, or NULL to transform w here. */
static kiln_status run_winograd(kx_ctx *c, const conv_geom *g, const float *x, const float *w, const float *u,
                                const float *b, const kx_activation *act, float *y) {
  wino_job j = {.g = g, .x = x, .b = b, .y = y, .act = act, .u = u};
  j.th = (g->out[0] + 1) / 2;
  j.tw = (g->out[1] + 1) / 2;
  int64_t R = g->N * j.th;
  j.rows = wino_block_rows(g, j.tw, R);
  j.blocks = (R + j.rows - 1) / j.rows;
  j.slots = kx_gemm_threads(c);
  /* a block per slot at least while there are tile rows for it; equal blocks */
  if (j.slots > 1 && j.blocks < j.slots) j.blocks = R < j.slots ? R : j.slots;
  j.rows = (R + j.blocks - 1) / j.blocks;
  j.blocks = (R + j.rows - 1) / j.rows;
  j.own_blocks = j.slots > 1 && j.blocks >= j.slots;
  j.ld = j.rows * j.tw + 8;
  j.vstride = wino_plane_stride(g->C * j.ld);
  j.mstride = wino_plane_stride(g->M * j.ld);
  /* the strip covers a block's rows of 4x4 patches, and 16 + 2 columns past the last group */
  int64_t twv = (j.tw + 7) / 8 * 8, rows_in = 2 * (j.rows < j.th ? j.rows : j.th) + 2;
  j.SH = rows_in;
  j.PW = g->pb[1] + g->in[1] > 2 * twv + 2 ? g->pb[1] + g->in[1] : 2 * twv + 2;
  size_t vm_bytes = (size_t)(16 * (j.vstride + j.mstride)) * sizeof(float);
  j.slot_bytes = ((size_t)(j.SH * j.PW) * sizeof(float) + kx_gemm_workspace(1) + (j.own_blocks ? vm_bytes : 0) + 63) & ~(size_t)63;
  size_t u_bytes = u ? 0 : (size_t)(16 * g->M * g->C) * sizeof(float), slots_bytes = (size_t)j.slots * j.slot_bytes;
  size_t total = u_bytes + slots_bytes + (j.own_blocks ? 0 : vm_bytes);
  char *buf = kx_scratch(c, total);
  if (!buf) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory for %zu bytes of Winograd scratch", total);
  j.slot_mem = buf + u_bytes;
  j.vm = (float *)(buf + u_bytes + slots_bytes);
  for (int s = 0; s < j.slots; s++) memset(slot_strip(&j, s), 0, (size_t)(j.SH * j.PW) * sizeof(float));
  if (!u) { /* the weights are an input: transform them now */
    wino_weights_job ww = {w, (float *)buf, g->M, g->C};
    kx_parallel(c, g->M, 40.0 * (double)g->C, wino_weights_range, &ww);
    j.u = ww.u;
  }
  if (j.own_blocks) {
    kx_parallel(c, j.slots, 1e12, wino_own_range, &j);
    return NULL;
  }
  for (int64_t k = 0; k < j.blocks; k++)
    for (int step = 0; step < 3; step++) {
      wino_split sp = {&j, k, step};
      if (j.slots > 1) kx_parallel(c, j.slots, 1e12, wino_split_range, &sp);
      else wino_split_range(&sp, 0, 1);
    }
  return NULL;
}

/* ------------------------------------------------------------------ prepare and run */

/* Transforms a constant W for Winograd at load when the convolution's shape takes that lowering
 * (whatever the image size: runs too small for it fall back to im2col, at the price of an unused
 * copy). A W that is no float 4-D tensor is left for the run to reject. */
static kiln_status wino_prepare(kx_node *n, conv_params *p) {
  const kiln_tensor *w = n->n_in > 1 ? n->consts[1] : NULL;
  if (!w || w->dtype != KILN_FLOAT || w->rank != 4 || p->group != 1) return NULL;
  int64_t ones[2] = {1, 1}, M = w->dims[0], C = w->dims[1];
  if (p->n_strides && p->n_strides != 2) return NULL;
  if (p->n_dilations && p->n_dilations != 2) return NULL;
  if (!winograd_shape(C, M, w->dims + 2, p->n_strides ? p->strides : ones, p->n_dilations ? p->dilations : ones)) return NULL;
  p->wino_u = malloc((size_t)(16 * M * C) * sizeof(float));
  if (!p->wino_u) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory for %lld Winograd weights", (long long)(16 * M * C));
  wino_weights(w->data, M, C, 0, M, p->wino_u);
  return NULL;
}

static kiln_status conv_prepare(kx_node *n) {
  kiln_status st = conv_prepare_common(n, 0);
  if (!st) st = wino_prepare(n, n->params); /* on failure the executor releases params */
  return st;
}

static kiln_status conv_transpose_prepare(kx_node *n) { return conv_prepare_common(n, 1); }

static void conv_release(void *params) {
  conv_params *p = params;
  if (p) free(p->wino_u);
  free(p);
}


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
  /* float Conv applies the fused activation in every lowering */
  const kx_activation *act = !p->transpose && x->dtype == KILN_FLOAT ? kx_take_post(c) : NULL;
  const float *bf = b ? b->data : NULL;
  if (!p->transpose && x->dtype == KILN_FLOAT) {
    if (winograd_fits(&g)) return run_winograd(c, &g, x->data, w->data, p->wino_u, bf, act, y->data);
    if (direct_fits(&g)) return run_direct(c, &g, x->data, w->data, bf, act, y->data);
    if (depthwise_fits(&g)) return run_depthwise(c, &g, x->data, w->data, bf, act, y->data);
  }
  conv_run r = {.g = &g, .transpose = p->transpose, .dbl = x->dtype == KILN_DOUBLE, .x = x->data, .w = w->data,
                .b = b ? b->data : NULL, .y = y->data, .act = act};
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
    {"", "Conv", 1, 0, conv_prepare, conv_run_any, conv_release, 0, 1},
    {"", "ConvTranspose", 1, 0, conv_transpose_prepare, conv_run_any, conv_release, 0, 1},
    {0},
};
