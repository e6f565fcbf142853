/* Listening sockets shared by kiln's servers (see listen.h): one place that knows getaddrinfo,
 * bind, listen, accept4 and how peers are named in logs and requests. */
#include "net/listen.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define LISTEN_BACKLOG 1024

void kx_format_address(char *out, size_t size, const char *host, int port) {
  if (strchr(host, ':')) snprintf(out, size, "[%s]:%d", host, port);
  else snprintf(out, size, "%s:%d", host, port);
}

void kx_describe_peer(const struct sockaddr_storage *a, socklen_t len, char *out, size_t size) {
  char host[INET6_ADDRSTRLEN + 2], port[8];
  out[0] = '\0';
  if (getnameinfo((const struct sockaddr *)a, len, host, sizeof host, port, sizeof port, NI_NUMERICHOST | NI_NUMERICSERV) != 0)
    return;
  snprintf(out, size, a->ss_family == AF_INET6 ? "[%s]:%s" : "%s:%s", host, port);
}

static int bind_one(const struct addrinfo *ai) {
  int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
  if (fd < 0) return -1;
  int one = 1;
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 || bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 ||
      listen(fd, LISTEN_BACKLOG) != 0) {
    int err = errno;
    close(fd);
    errno = err;
    return -1;
  }
  return fd;
}

kiln_status kx_open_listener(const char *host, int port_number, int *fd_out, int *port_out) {
  char addr[300], port[16];
  *fd_out = -1;
  kx_format_address(addr, sizeof addr, host, port_number);
  snprintf(port, sizeof port, "%d", port_number);
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
  struct addrinfo *res = NULL;
  int rc = getaddrinfo(host, port, &hints, &res);
  if (rc != 0) return kiln_error(KILN_INVALID_ARGUMENT, "%s: %s", addr, gai_strerror(rc));
  int err = EADDRNOTAVAIL, fd = -1;
  for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
    fd = bind_one(ai);
    if (fd < 0) err = errno;
  }
  freeaddrinfo(res);
  if (fd < 0) return kiln_error(KILN_UNAVAILABLE, "%s: %s", addr, strerror(err));
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0) {
    kiln_status st = kiln_error(KILN_UNAVAILABLE, "%s: getsockname: %s", addr, strerror(errno));
    close(fd);
    return st;
  }
  *port_out = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                             : ((struct sockaddr_in *)&ss)->sin_port);
  *fd_out = fd;
  return NULL;
}

int kx_accept(int listen_fd, char *peer, size_t peer_size, const char *what) {
  struct sockaddr_storage addr;
  socklen_t addr_len = sizeof addr;
  int fd = accept4(listen_fd, (struct sockaddr *)&addr, &addr_len, SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (fd < 0) return -1;
  int one = 1;
  if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0)
    kiln_log(KILN_LOG_DEBUG, "%s: TCP_NODELAY: %s", what, strerror(errno));
  kx_describe_peer(&addr, addr_len, peer, peer_size);
  return fd;
}
