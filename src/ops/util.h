/* Helpers every op family uses: axes, broadcasting, reading small integer tensors, dtype checks,
 * float16/bfloat16 widening, copies of string elements and of values, and counter-based random
 * numbers. */
#ifndef KX_OPS_UTIL_H
#define KX_OPS_UTIL_H

#include "ops/op.h"

#define KX_BIT(dtype) (1u << (dtype))
#define KX_FLOATS (KX_BIT(KILN_FLOAT) | KX_BIT(KILN_DOUBLE) | KX_BIT(KILN_FLOAT16) | KX_BIT(KILN_BFLOAT16))
#define KX_SIGNED_INTS (KX_BIT(KILN_INT8) | KX_BIT(KILN_INT16) | KX_BIT(KILN_INT32) | KX_BIT(KILN_INT64))
#define KX_UNSIGNED_INTS (KX_BIT(KILN_UINT8) | KX_BIT(KILN_UINT16) | KX_BIT(KILN_UINT32) | KX_BIT(KILN_UINT64))
#define KX_INTS (KX_SIGNED_INTS | KX_UNSIGNED_INTS)
#define KX_NUMERIC (KX_FLOATS | KX_INTS)
#define KX_ALL_TYPES (KX_NUMERIC | KX_BIT(KILN_BOOL) | KX_BIT(KILN_STRING))

/* Input i must be present; returns an error naming it otherwise. */
kiln_status kx_require(const kx_ctx *c, int i, const kiln_tensor **out);
/* Input i (if present) must have one of the dtypes in mask. */
kiln_status kx_check_dtype(const kiln_tensor *t, int i, unsigned mask);
/* Normalizes axis (negative counts from the end) for a tensor of the given rank; `inclusive`
 * allows axis == rank (Unsqueeze-style insertion points). */
kiln_status kx_axis(int64_t axis, int rank, int inclusive, int *out);
/* Numpy-style broadcast of n shapes. */
kiln_status kx_broadcast(int n, const kiln_tensor *const *ts, int *rank, int64_t *dims);
/* Element strides of t when broadcast to (rank, dims): 0 along broadcast dimensions. */
void kx_broadcast_strides(const kiln_tensor *t, int rank, const int64_t *dims, int64_t *strides);
/* Reads a scalar or 1-D int32/int64 tensor into out (at most max values); *count receives the
 * number of values. `what` names the input in errors. */
kiln_status kx_read_ints(const kiln_tensor *t, const char *what, int64_t *out, int max, int *count);
/* Reads a one-element tensor of any numeric type as double / int64. */
kiln_status kx_read_scalar(const kiln_tensor *t, const char *what, double *out);
/* Writes a double into element i of a numeric tensor (saturating nothing: C conversion rules,
 * float16/bfloat16 rounded to nearest even, bool = value != 0). */
void kx_set_f64(kiln_tensor *t, int64_t i, double v);
/* Widens n elements of a float16 / bfloat16 / float / double buffer to float, and narrows back. */
void kx_to_float(kiln_dtype t, const void *src, float *dst, int64_t n);
void kx_from_float(kiln_dtype t, const float *src, void *dst, int64_t n);
/* Applies a fused activation to elements [begin, end) of t (any numeric dtype). */
void kx_activation_apply(const kx_activation *a, kiln_tensor *t, int64_t begin, int64_t end);
/* The float32 case, for kernels applying it to blocks as they finish them. */
static inline void kx_activation_f32(const kx_activation *a, float *y, int64_t n) {
  switch (a->kind) {
  case KX_ACT_NONE: break;
  case KX_ACT_RELU:
    for (int64_t i = 0; i < n; i++) y[i] = y[i] > 0 ? y[i] : 0;
    break;
  case KX_ACT_CLIP:
    for (int64_t i = 0; i < n; i++) y[i] = y[i] < a->lo ? a->lo : y[i] > a->hi ? a->hi : y[i];
    break;
  case KX_ACT_LEAKY_RELU:
    for (int64_t i = 0; i < n; i++) y[i] = y[i] >= 0 ? y[i] : y[i] * a->alpha;
    break;
  }
}
/* Applies c->node->post_bias and c->node->post to all of output tensor y, over the pool: for
 * kernels whose fast paths do not fuse them into their own loops. */
kiln_status kx_post_apply(const kx_ctx *c, kiln_tensor *y);

/* kx_scratch for n floats (float16/bfloat16 widened to float32, say); NULL with *s set to an
 * out-of-memory error when there is no memory. */
float *kx_scratch_floats(kx_ctx *c, int64_t n, kiln_status *s);

/* to[i] = a copy of from[i] for n string elements, NULL read as "". to may be from: after a kernel
 * copied string pointers of its input into its output, this gives each element its own copy. On
 * failure to[i..n) are cleared, so that a tensor never frees strings it does not own. */
kiln_status kx_copy_strings(char **to, char *const *from, int64_t n);
/* Gives each element of a string tensor its own copy (kx_copy_strings in place), for kernels that
 * copied string pointers into t; nothing for other dtypes. */
kiln_status kx_own_strings(kiln_tensor *t);
/* Copies n elements of dtype from `from` to `to`, strings through kx_copy_strings. */
kiln_status kx_copy_elements(void *to, const void *from, kiln_dtype dtype, int64_t n);
/* Output i as a copy of tensor t. */
kiln_status kx_output_copy(kx_ctx *c, int i, const kiln_tensor *t);
/* dst (released first) becomes a deep copy of a tensor, sequence or empty optional. */
kiln_status kx_value_copy(kiln_value *dst, const kiln_value *src);
/* What v is, for messages: "a tensor", "a sequence", "an empty optional" or "nothing (absent)". */
const char *kx_value_kind_name(const kiln_value *v);

/* splitmix64's output function: a strong 64-bit mix (of seeds, counters, hash keys). */
static inline uint64_t kx_mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

/* Uniform in [0, 1) at position i of the random stream `key`: splitmix64 evaluated at i, so every
 * element is independent of how the work is split. */
static inline double kx_uniform_at(uint64_t key, uint64_t i) {
  return (double)(kx_mix64(key + (i + 1) * 0x9e3779b97f4a7c15ULL) >> 11) * 0x1.0p-53;
}

/* Row-major element strides (in elements) of a shape. */
void kx_strides(int rank, const int64_t *dims, int64_t *strides);
/* Product of dims[from..to). */
int64_t kx_prod(const int64_t *dims, int from, int to);

#endif
