/* The .npy header parser (internal to kiln): kiln_npy_parse reads whole files with it and the data
 * layer's NPY/NPZ source streams rows after it, so both accept exactly the same files. */
#ifndef KILN_CORE_NPY_H
#define KILN_CORE_NPY_H

#include "kiln/core.h"

/* The most bytes a .npy header (magic, lengths and dict) may take; longer ones are refused. */
#define KX_NPY_MAX_HEADER (12 + 65536)

/* What a .npy header says about the array after it. */
typedef struct kx_npy_header {
  kiln_dtype dtype; /* KILN_STRING for numpy's fixed-width 'U' (UTF-32) and 'S' (bytes) */
  int rank;
  int64_t dims[KILN_MAX_RANK];
  size_t item_bytes;  /* bytes of one element in the file */
  size_t str_width;   /* strings: characters per element */
  size_t str_unit;    /* strings: bytes per character (4 for 'U', 1 for 'S') */
  size_t data_offset; /* bytes from the start of the file to the data */
} kx_npy_header;

/* From the first bytes of a file (len >= 12, or the whole file when shorter), the total length
 * of magic + header in *total. Errors name `name` (bad magic, unsupported version, oversized). */
kiln_status kx_npy_header_length(const void *prefix, size_t len, const char *name, size_t *total);
/* Parses the header at buf (len bytes, at least the header's total length). Errors name `name`:
 * Fortran order, big-endian or unknown dtypes, a shape that is not a tuple of integers. */
kiln_status kx_npy_header_parse(const void *buf, size_t len, const char *name, kx_npy_header *h);
/* Decodes n fixed-width strings (h's width and unit) at data into malloc'd UTF-8 strings in
 * out[0..n). On failure nothing is left allocated. */
kiln_status kx_npy_decode_strings(const kx_npy_header *h, const unsigned char *data, int64_t n, char **out);

/* numpy's descr of a dtype ("<f4", "|u1", ...), NULL for dtypes .npy cannot hold. */
const char *kx_npy_descr(kiln_dtype t);

#endif
