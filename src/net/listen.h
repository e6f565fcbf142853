/* Listening sockets shared by kiln's servers (HTTP/1.1 in http.c, gRPC in grpc.c): binding an
 * address, accepting a connection and naming its peer. */
#ifndef KILN_NET_LISTEN_H
#define KILN_NET_LISTEN_H

#include <stddef.h>
#include <sys/socket.h>

#include "kiln/core.h"

/* "host:port", or "[v6]:port" when host is an IPv6 address. */
void kx_format_address(char *out, size_t size, const char *host, int port);

/* "127.0.0.1:5000" or "[::1]:5000" ("" when the address cannot be formatted). */
void kx_describe_peer(const struct sockaddr_storage *a, socklen_t len, char *out, size_t size);

/* Binds host:port (the first address getaddrinfo gives that binds) and listens, non-blocking and
 * close-on-exec. *fd_out is the socket, *port_out the port bound (port 0: any free one). Errors
 * name the address ("127.0.0.1:8501: Address already in use"); nothing is left open on error. */
kiln_status kx_open_listener(const char *host, int port, int *fd_out, int *port_out);

/* Accepts one connection (non-blocking, close-on-exec, TCP_NODELAY) and writes its peer's address
 * into peer[0..peer_size). Returns the socket, or -1 with errno set as accept4 left it. `what`
 * prefixes log lines ("http", "grpc"). */
int kx_accept(int listen_fd, char *peer, size_t peer_size, const char *what);

#endif
