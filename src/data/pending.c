/* TEMPORARY: stand-ins for the sources, writers and transforms being written on other branches;
 * each merge deletes its part. Must be empty (and removed) before issue 5 is resolved. */
#include "data/data.h"
#define STUB(f) kiln_status f(kx_data_ctx *c, const struct cJSON *s, kx_stage **o) { return kiln_error(KILN_UNIMPLEMENTED, #f); }
STUB(kx_idx_open) STUB(kx_csv_open) STUB(kx_npy_open) 
kiln_status kx_csv_writer_open(const char *p, kx_writer **o) { return kiln_error(KILN_UNIMPLEMENTED, "x"); }
kiln_status kx_npz_writer_open(const char *p, kx_writer **o) { return kiln_error(KILN_UNIMPLEMENTED, "x"); }
kiln_status kx_transforms_parse(kx_data_ctx *c, const struct cJSON *l, const char *w, kx_transforms **o) { *o = NULL; return NULL; }
kiln_status kx_transforms_apply(const kx_transforms *t, kiln_record *r) { return NULL; }
void kx_transforms_free(kx_transforms *t) {}
kiln_status kx_predicate_parse(const struct cJSON *obj, const char *where, kx_predicate **out) { *out = NULL; return NULL; }
kiln_status kx_predicate_eval(const kx_predicate *p, const kiln_record *r, int *keep) { *keep = (*(int64_t*)r->values[0].data) % 2 == 0; return NULL; }
void kx_predicate_free(kx_predicate *p) {}
