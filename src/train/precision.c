/* Mixed precision: activations and weights stored in 16 bits (bfloat16 or IEEE half), widened to
 * fp32 for the kernels, with fp32 master weights and gradients. Conversions round to nearest even,
 * as the hardware formats do. */
#include "train/train.h"

#include <string.h>

#ifdef __F16C__
#include <immintrin.h>
#endif

int kx_precision_parse(const char *name) {
  if (!name || strcmp(name, "fp32") == 0) return KX_FP32;
  if (strcmp(name, "bf16") == 0) return KX_BF16;
  if (strcmp(name, "fp16") == 0) return KX_FP16;
  return -1;
}

static inline uint16_t to_bf16(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* NaN stays NaN */
  u += 0x7fffu + ((u >> 16) & 1);
  return (uint16_t)(u >> 16);
}

static inline float from_bf16(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

void kx_precision_store(kx_precision p, uint16_t *dst, const float *src, int64_t n) {
  int64_t i = 0;
  if (p == KX_BF16) {
    for (; i < n; i++) dst[i] = to_bf16(src[i]);
    return;
  }
#ifdef __F16C__
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128((__m128i *)(dst + i), _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
#endif
  for (; i < n; i++) dst[i] = kiln_float_to_half(src[i]);
}

void kx_precision_load(kx_precision p, float *dst, const uint16_t *src, int64_t n) {
  int64_t i = 0;
  if (p == KX_BF16) {
    for (; i < n; i++) dst[i] = from_bf16(src[i]);
    return;
  }
#ifdef __F16C__
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
#endif
  for (; i < n; i++) dst[i] = kiln_half_to_float(src[i]);
}

void kx_precision_round(kx_precision p, float *x, int64_t n) {
  if (p == KX_FP32) return;
  uint16_t block[256];
  for (int64_t i = 0; i < n; i += 256) {
    int64_t m = n - i < 256 ? n - i : 256;
    kx_precision_store(p, block, x + i, m);
    kx_precision_load(p, x + i, block, m);
  }
}
