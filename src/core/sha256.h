/* SHA-256 (nettle) in the lower-case hex form that manifests and lineage records store (internal
 * to kiln: the registry hashes files, the trainer hashes its run file and schema). */
#ifndef KILN_CORE_SHA256_H
#define KILN_CORE_SHA256_H

#include <stddef.h>
#include <stdint.h>

/* 64 hex digits and a NUL. */
#define KX_SHA256_HEX 65

/* The digest of data[0..len). */
void kx_sha256_hex(const void *data, size_t len, char hex[KX_SHA256_HEX]);
/* A finished 32-byte digest (nettle's sha256_digest) as hex. */
void kx_sha256_to_hex(const uint8_t digest[32], char hex[KX_SHA256_HEX]);

#endif
