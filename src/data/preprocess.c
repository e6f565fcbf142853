/* Serving-side preprocessing: the schema and transforms saved beside a model, applied by the
 * server to each row of a raw request so that serving sees exactly what training saw (the
 * seed's "model input alignment"). */
#include "data/data.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define PREPROCESS_FILE "preprocess.json"

struct kiln_preprocess {
  kx_data_ctx ctx; /* base_dir = the version folder; fail mode */
  kiln_schema *schema;
  const char **names; /* the schema's feature names: a raw record's names */
  kx_transforms *transforms;
};

void kiln_preprocess_free(kiln_preprocess *p) {
  if (!p) return;
  kx_transforms_free(p->transforms);
  kiln_schema_free(p->schema);
  free(p->names);
  kx_data_ctx_free(&p->ctx);
  free(p);
}

static kiln_status parse(kiln_preprocess *p, const char *dir, const cJSON *root) {
  static const char *const keys[] = {"schema", "transforms", NULL};
  const char *schema = NULL;
  kiln_status s = kx_spec_keys(root, PREPROCESS_FILE, keys);
  if (!s) s = kx_spec_string(root, PREPROCESS_FILE, "schema", 1, &schema);
  if (s) return s;
  char *path = kx_data_path(&p->ctx, schema);
  if (!path) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  s = kiln_schema_read(path, &p->schema);
  free(path);
  if (s) return s;
  p->names = calloc((size_t)p->schema->count + 1, sizeof *p->names);
  if (!p->names) return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  for (int i = 0; i < p->schema->count; i++) {
    const kiln_schema_feature *f = &p->schema->features[i];
    if (f->rank < 0 || f->rank + 1 > KILN_MAX_RANK)
      return kiln_error(KILN_INVALID_ARGUMENT, "%s: feature '%s' needs a fixed shape in the schema to be served", dir,
                        f->name);
    p->names[i] = f->name;
  }
  const cJSON *list = cJSON_GetObjectItemCaseSensitive(root, "transforms");
  if (!list) return NULL;
  if (!cJSON_IsArray(list)) return kiln_error(KILN_INVALID_ARGUMENT, "%s.transforms: expected a list", PREPROCESS_FILE);
  return kx_transforms_parse(&p->ctx, list, PREPROCESS_FILE ".transforms", &p->transforms);
}

kiln_status kiln_preprocess_load(const char *dir, kiln_preprocess **out) {
  *out = NULL;
  char path[4096];
  if (snprintf(path, sizeof path, "%s/%s", dir, PREPROCESS_FILE) >= (int)sizeof path)
    return kiln_error(KILN_INVALID_ARGUMENT, "%s: path too long", dir);
  void *text;
  size_t len;
  kiln_status s = kiln_file_read(path, 1 << 20, &text, &len);
  if (s && kiln_status_code(s) == KILN_NOT_FOUND) {
    kiln_status_free(s);
    return NULL;
  }
  if (s) return s;
  cJSON *root = cJSON_ParseWithLength(text, len);
  free(text);
  if (!root) return kiln_error(KILN_INVALID_ARGUMENT, "%s: invalid JSON", path);
  kiln_preprocess *p = calloc(1, sizeof *p);
  if (!p) s = kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
  if (!s) s = kx_data_ctx_init(&p->ctx, KILN_ON_ERROR_FAIL, NULL, NULL, 1, dir);
  if (!s) s = parse(p, dir, root);
  cJSON_Delete(root);
  if (s) {
    kiln_preprocess_free(p);
    return kiln_status_prefix(s, "%s: ", path);
  }
  *out = p;
  return NULL;
}

const kiln_schema *kiln_preprocess_schema(const kiln_preprocess *p) { return p->schema; }

/* Appends one row's value to the stacked output, allocating it at row 0. */
static kiln_status stack_row(kiln_tensor *dst, const kiln_tensor *v, int64_t row, int64_t rows, const char *name) {
  if (row == 0) {
    int64_t dims[KILN_MAX_RANK];
    if (v->rank + 1 > KILN_MAX_RANK)
      return kiln_error(KILN_INVALID_ARGUMENT, "feature '%s' has rank %d; batched it exceeds %d", name, v->rank, KILN_MAX_RANK);
    dims[0] = rows;
    memcpy(dims + 1, v->dims, (size_t)v->rank * sizeof *dims);
    kiln_status s = kiln_tensor_alloc(dst, v->dtype, v->rank + 1, dims);
    if (s) return s;
  }
  int same = dst->dtype == v->dtype && dst->rank == v->rank + 1;
  for (int d = 0; same && d < v->rank; d++) same = dst->dims[d + 1] == v->dims[d];
  if (!same) {
    char got[96];
    return kiln_error(KILN_INVALID_ARGUMENT, "feature '%s' became %s, unlike row 0's", name,
                      kiln_tensor_describe(v, got, sizeof got));
  }
  int64_t n = kiln_tensor_numel(v);
  if (v->dtype == KILN_STRING) {
    for (int64_t k = 0; k < n; k++) {
      const char *e = ((char *const *)v->data)[k];
      if (!(((char **)dst->data)[row * n + k] = strdup(e ? e : "")))
        return kiln_error(KILN_RESOURCE_EXHAUSTED, "out of memory");
    }
  } else if (n) {
    size_t bytes = kiln_tensor_nbytes(v);
    memcpy((char *)dst->data + (size_t)row * bytes, v->data, bytes);
  }
  return NULL;
}

/* One row of the raw tensors as a record of views. */
static kiln_status row_record(const kiln_preprocess *p, const kiln_tensor *raw, int64_t row, kiln_record *r) {
  kiln_status s = kiln_record_init(r, p->names, p->schema->count, 0, NULL);
  for (int i = 0; !s && i < p->schema->count; i++) {
    kiln_tensor *v = &r->values[i];
    s = kiln_tensor_set_shape(v, raw[i].dtype, raw[i].rank - 1, raw[i].dims + 1);
    if (!s) v->data = (char *)raw[i].data + (size_t)row * kiln_tensor_nbytes(v);
  }
  r->index = row;
  return s;
}

kiln_status kiln_preprocess_apply(const kiln_preprocess *p, const kiln_tensor *raw, int n_out,
                                  const char *const *out_names, kiln_tensor *out) {
  for (int i = 0; i < p->schema->count; i++)
    if (raw[i].rank < 1 || raw[i].dims[0] != raw[0].dims[0])
      return kiln_error(KILN_INVALID_ARGUMENT, "raw feature '%s' needs the batch dimension of the others", p->names[i]);
  int64_t rows = p->schema->count ? raw[0].dims[0] : 0;
  if (rows == 0) return kiln_error(KILN_INVALID_ARGUMENT, "a request for a model with preprocessing needs at least one row");
  kiln_status s = NULL;
  for (int64_t row = 0; row < rows && !s; row++) {
    kiln_record r;
    s = row_record(p, raw, row, &r);
    if (!s) s = kiln_schema_check_record(p->schema, &r);
    if (!s && p->transforms) s = kx_transforms_apply(p->transforms, &r);
    for (int j = 0; !s && j < n_out; j++) {
      int k = kiln_record_find(&r, out_names[j]);
      if (k < 0 || r.values[k].dtype == KILN_UNDEFINED)
        s = kiln_error(KILN_INVALID_ARGUMENT, "the preprocessing yields no feature '%s' for the model's input of that name",
                       out_names[j]);
      else
        s = stack_row(&out[j], &r.values[k], row, rows, out_names[j]);
    }
    kiln_record_release(&r);
    if (s) s = kiln_status_prefix(s, "row %lld: ", (long long)row);
  }
  if (s)
    for (int j = 0; j < n_out; j++) kiln_tensor_release(&out[j]);
  return s;
}
