/* SHA-256 of memory through nettle, and the hex form of a digest. */
#include "core/sha256.h"

#include <nettle/sha2.h>

void kx_sha256_to_hex(const uint8_t digest[32], char hex[KX_SHA256_HEX]) {
  static const char digits[] = "0123456789abcdef";
  for (int i = 0; i < 32; i++) {
    hex[2 * i] = digits[digest[i] >> 4];
    hex[2 * i + 1] = digits[digest[i] & 15];
  }
  hex[64] = '\0';
}

void kx_sha256_hex(const void *data, size_t len, char hex[KX_SHA256_HEX]) {
  struct sha256_ctx ctx;
  uint8_t digest[SHA256_DIGEST_SIZE];
  sha256_init(&ctx);
  sha256_update(&ctx, len, data);
  sha256_digest(&ctx, sizeof digest, digest);
  kx_sha256_to_hex(digest, hex);
}
