/* Internal seams of the gRPC server (src/net/grpc.c) for tests and the fuzz target. */
#ifndef KILN_NET_GRPC_INTERNAL_H
#define KILN_NET_GRPC_INTERNAL_H

#include "kiln/net.h"

/* Serves an already-connected stream socket (a socketpair end, say) as if it had been accepted:
 * the server takes ownership of fd (made non-blocking here) and closes it when the connection
 * ends. It counts against max_connections like an accepted one. The loop takes the socket over
 * asynchronously: free the server only after the connection has shown up in the stats. */
kiln_status kx_grpc_serve_fd(kiln_grpc_server *s, int fd);

#endif
