/* float32 math that gcc vectorizes, shared by the op families: branch-free scalar functions that
 * loops over arrays inline (static inline here, so each caller's loop compiles to vector code),
 * and reductions of float arrays in KX_LANES independent accumulators. */
#ifndef KX_OPS_VMATH_H
#define KX_OPS_VMATH_H

#include <stdint.h>
#include <string.h>

/* Floats per AVX2 register. At -O2 gcc only vectorizes loops whose trip count is a known multiple
 * of the vector width, so inner loops run in blocks of KX_LANES with a scalar tail. */
enum { KX_LANES = 8 };

static inline float kx_float_from_bits(uint32_t b) {
  float f;
  memcpy(&f, &b, sizeof f);
  return f;
}

static inline uint32_t kx_float_bits(float f) {
  uint32_t b;
  memcpy(&b, &f, sizeof b);
  return b;
}

/* e^x with a relative error below 2e-7 (about 2 ulp) over the whole float range, subnormal
 * results included; +-inf and NaN behave as in libm (x is clamped to [-104, 88.8] first:
 * e^-104 rounds to 0, e^88.8 to inf). x = k ln2 + r with |r| <= ln2/2 (Cody-Waite: ln2 split in a
 * part exact in k * hi and a correction); e^r by a degree-6 minimax polynomial; 2^k applied as
 * two power-of-two factors so that neither leaves the normal range. Rounding x/ln2 to an integer
 * uses the 1.5 * 2^23 trick, which also leaves k in the low mantissa bits. */
static inline float kx_fast_expf(float x) {
  const float round_magic = 12582912.0f;
  float xc = x < -104.0f ? -104.0f : x;
  xc = xc > 88.8f ? 88.8f : xc;
  float t = xc * 1.44269504f + round_magic;
  float k = t - round_magic;
  float r = xc - k * 0.693359375f;
  r = r - k * -2.12194440e-4f;
  float p = 0.0013836834f;
  p = p * r + 0.008374822f;
  p = p * r + 0.041668225f;
  p = p * r + 0.1666642f;
  p = p * r + 0.4999999f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  int32_t ki = (int32_t)kx_float_bits(t) - (int32_t)kx_float_bits(round_magic), k1 = ki / 2;
  return p * kx_float_from_bits((uint32_t)(k1 + 127) << 23) * kx_float_from_bits((uint32_t)(ki - k1 + 127) << 23);
}

/* The sum of x[0..n), accumulated in KX_LANES float lanes, then the lanes and the tail in order. */
static inline float kx_sum_f32(const float *x, int64_t n) {
  float acc[KX_LANES] = {0};
  int64_t i = 0;
  for (; i + KX_LANES <= n; i += KX_LANES)
    for (int k = 0; k < KX_LANES; k++) acc[k] += x[i + k];
  float s = 0;
  for (int k = 0; k < KX_LANES; k++) s += acc[k];
  for (; i < n; i++) s += x[i];
  return s;
}

/* The largest of x[0..n), n >= 1. Comparisons with NaN are false: a NaN in x[1..n) is skipped, a
 * NaN in x[0] is the result. */
static inline float kx_max_f32(const float *x, int64_t n) {
  float acc[KX_LANES];
  for (int k = 0; k < KX_LANES; k++) acc[k] = x[0];
  int64_t i = 0;
  for (; i + KX_LANES <= n; i += KX_LANES)
    for (int k = 0; k < KX_LANES; k++) acc[k] = x[i + k] > acc[k] ? x[i + k] : acc[k];
  float m = acc[0];
  for (int k = 1; k < KX_LANES; k++) m = acc[k] > m ? acc[k] : m;
  for (; i < n; i++) m = x[i] > m ? x[i] : m;
  return m;
}

#endif
