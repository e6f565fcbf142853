/* Element types: sizes, names and the float16 / bfloat16 conversions every kernel shares. */
#include "kiln/core.h"

#include <math.h>
#include <string.h>

static const struct {
  const char *name;
  size_t size;
} dtypes[KILN_DTYPE_COUNT] = {
    [KILN_UNDEFINED] = {"undefined", 0}, [KILN_FLOAT] = {"float", 4},
    [KILN_UINT8] = {"uint8", 1},         [KILN_INT8] = {"int8", 1},
    [KILN_UINT16] = {"uint16", 2},       [KILN_INT16] = {"int16", 2},
    [KILN_INT32] = {"int32", 4},         [KILN_INT64] = {"int64", 8},
    [KILN_STRING] = {"string", sizeof(char *)}, [KILN_BOOL] = {"bool", 1},
    [KILN_FLOAT16] = {"float16", 2},     [KILN_DOUBLE] = {"double", 8},
    [KILN_UINT32] = {"uint32", 4},       [KILN_UINT64] = {"uint64", 8},
    [KILN_COMPLEX64] = {"complex64", 8}, [KILN_COMPLEX128] = {"complex128", 16},
    [KILN_BFLOAT16] = {"bfloat16", 2},
};

size_t kiln_dtype_size(kiln_dtype t) {
  return (unsigned)t < KILN_DTYPE_COUNT ? dtypes[t].size : 0;
}

const char *kiln_dtype_name(kiln_dtype t) {
  return (unsigned)t < KILN_DTYPE_COUNT ? dtypes[t].name : "undefined";
}

kiln_dtype kiln_dtype_from_name(const char *name) {
  static const struct {
    const char *alias;
    kiln_dtype t;
  } aliases[] = {{"float32", KILN_FLOAT}, {"float64", KILN_DOUBLE}, {"half", KILN_FLOAT16},
                 {"f4", KILN_FLOAT},      {"f8", KILN_DOUBLE},      {"f2", KILN_FLOAT16},
                 {"i1", KILN_INT8},       {"i2", KILN_INT16},       {"i4", KILN_INT32},
                 {"i8", KILN_INT64},      {"u1", KILN_UINT8},       {"u2", KILN_UINT16},
                 {"u4", KILN_UINT32},     {"u8", KILN_UINT64},      {"b1", KILN_BOOL}};
  if (!name) return KILN_UNDEFINED;
  if (name[0] == '<' || name[0] == '|' || name[0] == '=') name++;
  for (int t = 1; t < KILN_DTYPE_COUNT; t++)
    if (strcmp(name, dtypes[t].name) == 0) return (kiln_dtype)t;
  for (size_t i = 0; i < sizeof aliases / sizeof aliases[0]; i++)
    if (strcmp(name, aliases[i].alias) == 0) return aliases[i].t;
  return KILN_UNDEFINED;
}

int kiln_dtype_is_float(kiln_dtype t) {
  return t == KILN_FLOAT || t == KILN_DOUBLE || t == KILN_FLOAT16 || t == KILN_BFLOAT16;
}

float kiln_half_to_float(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ff;
  uint32_t bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  } else if (mant == 0) {
    bits = sign;
  } else { /* subnormal: value = mant * 2^-24 */
    float f = (float)mant * 5.9604644775390625e-8f;
    return sign ? -f : f;
  }
  float f;
  memcpy(&f, &bits, sizeof f);
  return f;
}

uint16_t kiln_float_to_half(float f) {
  uint32_t bits;
  memcpy(&bits, &f, sizeof bits);
  uint16_t sign = (uint16_t)((bits >> 16) & 0x8000);
  uint32_t abs = bits & 0x7fffffffu;
  if (abs >= 0x7f800000u) /* inf or nan */
    return (uint16_t)(sign | 0x7c00 | (abs > 0x7f800000u ? 0x200 : 0));
  if (abs >= 0x47800000u) return (uint16_t)(sign | 0x7c00); /* >= 2^16: inf */
  if (abs < 0x38800000u) { /* below 2^-14: subnormal half, rounding through a float add */
    float a;
    memcpy(&a, &abs, sizeof a);
    a += 0.5f; /* 2^-1: the half subnormal quantum lands in the low mantissa bits */
    uint32_t r;
    memcpy(&r, &a, sizeof r);
    return (uint16_t)(sign | (r - 0x3f000000u));
  }
  uint32_t mant_odd = (abs >> 13) & 1;
  abs += 0xc8000fffu + mant_odd; /* rebias exponent (-112 << 23) and round to nearest even */
  return (uint16_t)(sign | (abs >> 13));
}

float kiln_bfloat16_to_float(uint16_t b) {
  uint32_t bits = (uint32_t)b << 16;
  float f;
  memcpy(&f, &bits, sizeof f);
  return f;
}

uint16_t kiln_float_to_bfloat16(float f) {
  uint32_t bits;
  memcpy(&bits, &f, sizeof bits);
  if (isnan(f)) return (uint16_t)((bits >> 16) | 0x40);
  bits += 0x7fff + ((bits >> 16) & 1);
  return (uint16_t)(bits >> 16);
}
