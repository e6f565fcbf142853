/* Type lists for the typed dispatch of the elementwise families (binary.c, elementwise.c,
 * activation.c): each kernel is one plain loop per C type, defined and tabulated by running a
 * list over a defining macro X.
 *
 *   #define DEF_NEG_SIGNED(op, D, S, T, W) UNARY_LOOP(op##_##S, T, T, (T)(0 - (W)x))
 *   SIGNED_TYPES(DEF_NEG_SIGNED, neg)        // defines neg_i8 .. neg_i64
 *   unary_fn fns[KILN_DTYPE_COUNT] = {SIGNED_TYPES(ENTRY, neg) REAL_ENTRIES(neg)};
 */
#ifndef KX_OPS_TYPELIST_H
#define KX_OPS_TYPELIST_H

/* X(op, dtype, suffix, C type, W) where W is the type integer arithmetic wraps in (unsigned, at
 * least 32 bits so that nothing is promoted to a signed int that could overflow; negating INT_MIN
 * is defined in it). */
#define SIGNED_TYPES(X, op)                 \
  X(op, KILN_INT8, i8, int8_t, uint32_t)    \
  X(op, KILN_INT16, i16, int16_t, uint32_t) \
  X(op, KILN_INT32, i32, int32_t, uint32_t) \
  X(op, KILN_INT64, i64, int64_t, uint64_t)
#define UNSIGNED_TYPES(X, op)                 \
  X(op, KILN_UINT8, u8, uint8_t, uint32_t)    \
  X(op, KILN_UINT16, u16, uint16_t, uint32_t) \
  X(op, KILN_UINT32, u32, uint32_t, uint32_t) \
  X(op, KILN_UINT64, u64, uint64_t, uint64_t)
#define REAL_TYPES(X, op)              \
  X(op, KILN_FLOAT, f32, float, float) \
  X(op, KILN_DOUBLE, f64, double, double)
#define NUMERIC_TYPES(X, op) SIGNED_TYPES(X, op) UNSIGNED_TYPES(X, op) REAL_TYPES(X, op)

/* A table entry: fns[dtype] = op_suffix. */
#define ENTRY(op, D, S, T, W) [D] = op##_##S,
/* The float and double entries of op_f32 / op_f64. */
#define REAL_ENTRIES(op) [KILN_FLOAT] = op##_f32, [KILN_DOUBLE] = op##_f64

#endif
