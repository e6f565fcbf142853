/* Sequence and optional kernels. A sequence is a kiln_value owning an array of owned tensors; an
 * optional holding something is represented by what it holds, an empty one by KILN_VALUE_NONE.
 * Values are immutable once produced, so every kernel that "modifies" a sequence builds a new one
 * (deep copies of the items) in its output slot with kx_output_value. */
#include "ops/util.h"

#include <stdlib.h>
#include <string.h>

static kiln_status require_seq(const kx_ctx *c, int i, const kiln_value **out) {
  const kiln_value *v = *out = kx_input_value(c, i);
  if (!v || v->kind != KILN_VALUE_SEQUENCE)
    return kiln_error(KILN_INVALID_ARGUMENT, "input %d must be a sequence, got %s", i, kx_value_kind_name(v));
  return NULL;
}

/* Reads a position input (a one-element int32/int64 tensor) and checks it against a sequence of
 * `count` items: valid positions are -count .. count-1, or .. count when `end_ok` (insertion). */
static kiln_status read_position(const kx_ctx *c, int i, size_t count, int end_ok, size_t *out) {
  const kiln_tensor *t = kx_input(c, i);
  if (!t) return kiln_error(KILN_INVALID_ARGUMENT, "input %d (position) must be a tensor, got %s", i, kx_value_kind_name(kx_input_value(c, i)));
  if ((t->dtype != KILN_INT64 && t->dtype != KILN_INT32) || kiln_tensor_numel(t) != 1)
    return kiln_error(KILN_INVALID_ARGUMENT, "position must be a scalar int32 or int64, got a %s tensor of %lld elements",
                      kiln_dtype_name(t->dtype), (long long)kiln_tensor_numel(t));
  int64_t pos = t->dtype == KILN_INT64 ? *(const int64_t *)t->data : *(const int32_t *)t->data;
  int64_t n = (int64_t)count, hi = end_ok ? n : n - 1;
  if (pos < -n || pos > hi)
    return kiln_error(KILN_INVALID_ARGUMENT, "position %lld is out of range [%lld, %lld] for a sequence of %lld items",
                      (long long)pos, (long long)-n, (long long)hi, (long long)n);
  *out = (size_t)(pos < 0 ? pos + n : pos);
  return NULL;
}

/* ---------------------------------------------------------------- SequenceEmpty / Construct */

static kiln_status sequence_empty_prepare(kx_node *n) {
  int64_t dtype = kx_attr_int(n->proto, "dtype", KILN_FLOAT);
  if (dtype <= 0 || dtype >= KILN_DTYPE_COUNT || kiln_dtype_size((kiln_dtype)dtype) == 0)
    return kiln_error(KILN_INVALID_ARGUMENT, "dtype %lld is not a tensor element type kiln supports", (long long)dtype);
  return NULL;
}

static kiln_status sequence_empty_run(kx_ctx *c) {
  kiln_value *y = kx_output_value(c, 0);
  if (!y) return NULL;
  y->kind = KILN_VALUE_SEQUENCE;
  y->elem_dtype = (kiln_dtype)kx_attr_int(c->node->proto, "dtype", KILN_FLOAT);
  return NULL;
}

static kiln_status sequence_construct_run(kx_ctx *c) {
  int n = c->node->n_in;
  if (n < 1) return kiln_error(KILN_INVALID_ARGUMENT, "SequenceConstruct needs at least one input");
  for (int i = 0; i < n; i++) {
    const kiln_tensor *t;
    kiln_status s = kx_require(c, i, &t);
    if (s) return s;
    if (t->dtype != kx_input(c, 0)->dtype)
      return kiln_error(KILN_INVALID_ARGUMENT, "input %d has dtype %s, input 0 has %s: a sequence holds one dtype", i,
                        kiln_dtype_name(t->dtype), kiln_dtype_name(kx_input(c, 0)->dtype));
  }
  kiln_value *y = kx_output_value(c, 0);
  if (!y) return NULL;
  y->kind = KILN_VALUE_SEQUENCE;
  y->elem_dtype = kx_input(c, 0)->dtype;
  for (int i = 0; i < n; i++) {
    kiln_status s = kiln_value_seq_append(y, (kiln_tensor *)kx_input(c, i), 0);
    if (s) return s;
  }
  return NULL;
}

/* ---------------------------------------------------------------- At / Insert / Erase / Length */

static kiln_status sequence_at_run(kx_ctx *c) {
  const kiln_value *seq;
  size_t pos;
  kiln_status s;
  if ((s = require_seq(c, 0, &seq)) || (s = read_position(c, 1, seq->count, 0, &pos))) return s;
  return kx_output_copy(c, 0, &seq->items[pos]);
}

static kiln_status sequence_insert_run(kx_ctx *c) {
  const kiln_value *seq;
  const kiln_tensor *t;
  kiln_status s;
  if ((s = require_seq(c, 0, &seq)) || (s = kx_require(c, 1, &t))) return s;
  /* an empty sequence takes any dtype: SequenceEmpty's default (float) is often not the one meant */
  if (seq->count && t->dtype != seq->elem_dtype)
    return kiln_error(KILN_INVALID_ARGUMENT, "cannot insert a %s tensor into a sequence of %s", kiln_dtype_name(t->dtype),
                      kiln_dtype_name(seq->elem_dtype));
  size_t pos = seq->count;
  if (kx_input_value(c, 2) && (s = read_position(c, 2, seq->count, 1, &pos))) return s;
  kiln_value *y = kx_output_value(c, 0);
  if (!y) return NULL;
  y->kind = KILN_VALUE_SEQUENCE;
  y->elem_dtype = t->dtype;
  for (size_t i = 0; i <= seq->count; i++) {
    if (i == pos && (s = kiln_value_seq_append(y, (kiln_tensor *)t, 0))) return s;
    if (i < seq->count && (s = kiln_value_seq_append(y, &seq->items[i], 0))) return s;
  }
  return NULL;
}

static kiln_status sequence_erase_run(kx_ctx *c) {
  const kiln_value *seq;
  kiln_status s;
  if ((s = require_seq(c, 0, &seq))) return s;
  if (seq->count == 0) return kiln_error(KILN_INVALID_ARGUMENT, "cannot erase from an empty sequence");
  size_t pos = seq->count - 1;
  if (kx_input_value(c, 1) && (s = read_position(c, 1, seq->count, 0, &pos))) return s;
  kiln_value *y = kx_output_value(c, 0);
  if (!y) return NULL;
  y->kind = KILN_VALUE_SEQUENCE;
  y->elem_dtype = seq->elem_dtype;
  for (size_t i = 0; i < seq->count; i++)
    if (i != pos && (s = kiln_value_seq_append(y, &seq->items[i], 0))) return s;
  return NULL;
}

static kiln_status sequence_length_run(kx_ctx *c) {
  const kiln_value *seq;
  kiln_tensor *y;
  kiln_status s;
  if ((s = require_seq(c, 0, &seq)) || (s = kx_output(c, 0, KILN_INT64, 0, NULL, &y))) return s;
  *(int64_t *)y->data = (int64_t)seq->count;
  return NULL;
}

/* ---------------------------------------------------------------- SplitToSequence */

/* Copies the slab [begin, begin + len) along `axis` of t (viewed as outer x dim x inner) into out. */
static kiln_status copy_slab(const kiln_tensor *t, int axis, int64_t begin, int64_t len, kiln_tensor *out) {
  int64_t outer = kx_prod(t->dims, 0, axis), dim = t->dims[axis], inner = kx_prod(t->dims, axis + 1, t->rank);
  size_t es = kiln_dtype_size(t->dtype);
  for (int64_t o = 0; o < outer; o++) {
    const char *from = (const char *)t->data + (size_t)((o * dim + begin) * inner) * es;
    kiln_status s = kx_copy_elements((char *)out->data + (size_t)(o * len * inner) * es, from, t->dtype, len * inner);
    if (s) return s;
  }
  return NULL;
}

/* The chunk lengths along the split axis of length dim: one per split value, or pieces of a
 * scalar split's size (the last one shorter), or pieces of 1 without a split input. */
static kiln_status split_lengths(kx_ctx *c, int64_t dim, int64_t **lens, int64_t *count) {
  const kiln_tensor *split = kx_input(c, 1);
  *lens = NULL;
  *count = 0;
  if (!split) {
    if (kx_input_value(c, 1)) return kiln_error(KILN_INVALID_ARGUMENT, "split must be a tensor");
    *count = dim;
  } else if (split->dtype != KILN_INT64 && split->dtype != KILN_INT32) {
    return kiln_error(KILN_INVALID_ARGUMENT, "split must be int32 or int64, got %s", kiln_dtype_name(split->dtype));
  } else if (split->rank == 0) {
    int64_t size = split->dtype == KILN_INT64 ? *(const int64_t *)split->data : *(const int32_t *)split->data;
    if (size <= 0) return kiln_error(KILN_INVALID_ARGUMENT, "split size must be positive, got %lld", (long long)size);
    *count = (dim + size - 1) / size;
  } else if (split->rank == 1) {
    *count = split->dims[0];
  } else {
    return kiln_error(KILN_INVALID_ARGUMENT, "split must be a scalar or 1-D, got rank %d", split->rank);
  }
  *lens = kx_scratch(c, (size_t)(*count + 1) * sizeof **lens);
  if (!*lens) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  int64_t total = 0;
  for (int64_t i = 0; i < *count; i++) {
    int64_t len = 1;
    if (split && split->rank == 0) {
      int64_t size = split->dtype == KILN_INT64 ? *(const int64_t *)split->data : *(const int32_t *)split->data;
      len = dim - total < size ? dim - total : size;
    } else if (split) {
      len = split->dtype == KILN_INT64 ? ((const int64_t *)split->data)[i] : ((const int32_t *)split->data)[i];
      if (len < 0) return kiln_error(KILN_INVALID_ARGUMENT, "split value %lld is negative", (long long)len);
    }
    (*lens)[i] = len;
    total += len;
  }
  if (total != dim)
    return kiln_error(KILN_INVALID_ARGUMENT, "split values sum to %lld, the axis has length %lld", (long long)total, (long long)dim);
  return NULL;
}

static kiln_status split_to_sequence_run(kx_ctx *c) {
  const kiln_tensor *x;
  kiln_status s;
  int axis;
  if ((s = kx_require(c, 0, &x))) return s;
  if (x->rank == 0) return kiln_error(KILN_INVALID_ARGUMENT, "input 0 must have rank 1 or more, it is a scalar");
  if ((s = kx_axis(kx_attr_int(c->node->proto, "axis", 0), x->rank, 0, &axis))) return s;
  int64_t *lens, count;
  if ((s = split_lengths(c, x->dims[axis], &lens, &count))) return s;
  /* keepdims only applies without a split input */
  int keep = kx_input(c, 1) || kx_attr_int(c->node->proto, "keepdims", 1) != 0;
  kiln_value *y = kx_output_value(c, 0);
  if (!y) return NULL;
  y->kind = KILN_VALUE_SEQUENCE;
  y->elem_dtype = x->dtype;
  int64_t begin = 0, dims[KILN_MAX_RANK];
  for (int64_t i = 0; i < count; i++) {
    memcpy(dims, x->dims, sizeof dims);
    dims[axis] = lens[i];
    kiln_tensor piece;
    if ((s = kiln_tensor_alloc(&piece, x->dtype, x->rank, dims))) return s;
    if ((s = copy_slab(x, axis, begin, lens[i], &piece)) == NULL && !keep) { /* drop the unit axis */
      memmove(dims + axis, dims + axis + 1, (size_t)(x->rank - axis - 1) * sizeof *dims);
      s = kiln_tensor_set_shape(&piece, x->dtype, x->rank - 1, dims);
    }
    if (!s) s = kiln_value_seq_append(y, &piece, 1);
    kiln_tensor_release(&piece);
    if (s) return s;
    begin += lens[i];
  }
  return NULL;
}

/* ---------------------------------------------------------------- ConcatFromSequence */

static kiln_status concat_from_sequence_run(kx_ctx *c) {
  const kiln_value *seq;
  kiln_status s;
  if ((s = require_seq(c, 0, &seq))) return s;
  if (seq->count == 0) return kiln_error(KILN_INVALID_ARGUMENT, "cannot concatenate an empty sequence");
  int new_axis = kx_attr_int(c->node->proto, "new_axis", 0) != 0;
  const kiln_tensor *first = &seq->items[0];
  int axis;
  if ((s = kx_axis(kx_attr_int(c->node->proto, "axis", 0), first->rank, new_axis, &axis))) return s;
  if (!new_axis && first->rank == 0) return kiln_error(KILN_INVALID_ARGUMENT, "cannot concatenate scalars without new_axis");
  int64_t total = 0;
  for (size_t i = 0; i < seq->count; i++) {
    const kiln_tensor *t = &seq->items[i];
    int same = t->dtype == first->dtype && t->rank == first->rank;
    for (int d = 0; same && d < t->rank; d++) same = t->dims[d] == first->dims[d] || (!new_axis && d == axis);
    if (!same) {
      char a[96], b[96];
      return kiln_error(KILN_INVALID_ARGUMENT, "item %zu is %s, item 0 is %s: they cannot be %s", i, kiln_tensor_describe(t, a, sizeof a),
                        kiln_tensor_describe(first, b, sizeof b), new_axis ? "stacked" : "concatenated");
    }
    total += new_axis ? 1 : t->dims[axis];
  }
  /* stacking is concatenation along a unit axis inserted into every item */
  int rank = first->rank + new_axis;
  if (rank > KILN_MAX_RANK) return kiln_error(KILN_UNIMPLEMENTED, "stacking rank-%d items exceeds kiln's rank limit", first->rank);
  int64_t dims[KILN_MAX_RANK];
  for (int d = 0, k = 0; d < rank; d++) dims[d] = new_axis && d == axis ? 1 : first->dims[k++];
  int64_t outer = kx_prod(dims, 0, axis), inner = kx_prod(dims, axis + 1, rank);
  dims[axis] = total;
  kiln_tensor *y;
  if ((s = kx_output(c, 0, first->dtype, rank, dims, &y))) return s;
  size_t es = kiln_dtype_size(first->dtype);
  int64_t at = 0;
  for (size_t i = 0; i < seq->count; i++) {
    const kiln_tensor *t = &seq->items[i];
    int64_t len = new_axis ? 1 : t->dims[axis];
    for (int64_t o = 0; o < outer; o++) {
      const char *from = (const char *)t->data + (size_t)(o * len * inner) * es;
      char *to = (char *)y->data + (size_t)((o * total + at) * inner) * es;
      if ((s = kx_copy_elements(to, from, first->dtype, len * inner))) return s;
    }
    at += len;
  }
  return NULL;
}

/* ---------------------------------------------------------------- optionals */

static kiln_status optional_run(kx_ctx *c) {
  const kiln_value *x = kx_input_value(c, 0);
  kiln_value *y = kx_output_value(c, 0);
  if (!y) return NULL;
  if (!x) { /* no input: an empty optional of the `type` attribute */
    y->kind = KILN_VALUE_NONE;
    return NULL;
  }
  return kx_value_copy(y, x);
}

static kiln_status optional_get_element_run(kx_ctx *c) {
  const kiln_value *x = kx_input_value(c, 0);
  if (!x || x->kind == KILN_VALUE_NONE) return kiln_error(KILN_INVALID_ARGUMENT, "the optional input is empty");
  if (x->kind == KILN_VALUE_TENSOR) return kx_output_copy(c, 0, &x->tensor);
  kiln_value *y = kx_output_value(c, 0);
  return y ? kx_value_copy(y, x) : NULL;
}

static kiln_status optional_has_element_run(kx_ctx *c) {
  const kiln_value *x = kx_input_value(c, 0);
  kiln_tensor *y;
  kiln_status s = kx_output(c, 0, KILN_BOOL, 0, NULL, &y);
  if (s) return s;
  *(uint8_t *)y->data = x && x->kind != KILN_VALUE_NONE;
  return NULL;
}

const kx_op kx_ops_sequence[] = {
    {"", "SequenceEmpty", 11, 0, sequence_empty_prepare, sequence_empty_run, NULL, 0},
    {"", "SequenceConstruct", 11, 0, NULL, sequence_construct_run, NULL, 0},
    {"", "SequenceAt", 11, 0, NULL, sequence_at_run, NULL, 0},
    {"", "SequenceInsert", 11, 0, NULL, sequence_insert_run, NULL, 0},
    {"", "SequenceErase", 11, 0, NULL, sequence_erase_run, NULL, 0},
    {"", "SequenceLength", 11, 0, NULL, sequence_length_run, NULL, 0},
    {"", "SplitToSequence", 11, 0, NULL, split_to_sequence_run, NULL, 0},
    {"", "ConcatFromSequence", 11, 0, NULL, concat_from_sequence_run, NULL, 0},
    {"", "Optional", 15, 0, NULL, optional_run, NULL, 0},
    {"", "OptionalGetElement", 15, 0, NULL, optional_get_element_run, NULL, 0},
    {"", "OptionalHasElement", 15, 0, NULL, optional_has_element_run, NULL, 0},
    {0},
};
