/* TEMPORARY: stand-ins for the sources, writers and transforms being written on other branches;
 * each merge deletes its part. Must be empty (and removed) before issue 5 is resolved. */
#include "data/data.h"
#define STUB(f) kiln_status f(kx_data_ctx *c, const struct cJSON *s, kx_stage **o) { return kiln_error(KILN_UNIMPLEMENTED, #f); }
STUB(kx_idx_open) STUB(kx_csv_open) STUB(kx_npy_open) 
kiln_status kx_csv_writer_open(const char *p, kx_writer **o) { return kiln_error(KILN_UNIMPLEMENTED, "x"); }
kiln_status kx_npz_writer_open(const char *p, kx_writer **o) { return kiln_error(KILN_UNIMPLEMENTED, "x"); }
