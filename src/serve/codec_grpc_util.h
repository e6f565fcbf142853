/* What the two gRPC codec files (codec_grpc.c, codec_grpc_v2.c) share: a scratch allocator for the
 * message trees an encoder builds, packing, and the output selection both decoders fill in. Not for
 * other callers. */
#ifndef KILN_SERVE_CODEC_GRPC_UTIL_H
#define KILN_SERVE_CODEC_GRPC_UTIL_H

#include <protobuf-c/protobuf-c.h>

#include "serve/codec_grpc.h"

/* Every block an encoder allocates, freed together once the message is packed. */
typedef struct kx_scratch {
  void **ptrs;
  size_t n, cap;
  int failed; /* an allocation failed: packing reports RESOURCE_EXHAUSTED */
} kx_scratch;

/* Zeroed memory for count * size bytes owned by s; NULL (and s->failed) when out of memory. */
void *kx_scratch_calloc(kx_scratch *s, size_t count, size_t size);
void kx_scratch_free(kx_scratch *s);


/* Checks the outputs an encoder will write: sel's (NULL: all) exist, have data and a carried dtype. */
kiln_status kx_grpc_check_outputs(const kx_signature *sig, const kx_v2_request *sel,
                                  const kiln_tensor *const *outputs);

/* Allocates sel->outputs for n_requested names (0: selects every output now). */
kiln_status kx_grpc_select_all(const kx_signature *sig, size_t n_requested, kx_v2_request *sel);
/* Appends the output called `name` to sel; unknown or repeated names are INVALID_ARGUMENT. */
kiln_status kx_grpc_select_output(const kx_signature *sig, const char *name, kx_v2_request *sel);


#endif
