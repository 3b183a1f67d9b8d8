#define _GNU_SOURCE
#include "CSystemSupport.h"

#include <dlfcn.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdatomic.h>
#include <sys/socket.h>

static atomic_int nodelay_enabled = 1;

void sluice_broker_sockets_set_nodelay(int enabled) { atomic_store(&nodelay_enabled, enabled ? 1 : 0); }

int sluice_broker_sockets_nodelay(void) { return atomic_load(&nodelay_enabled); }

static int configure_accepted(int fd) {
    if (fd >= 0 && atomic_load(&nodelay_enabled)) {
        int one = 1;
        /* Fails harmlessly (EOPNOTSUPP) on a non-TCP socket; the accepted socket is returned either way. */
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    return fd;
}

typedef int (*accept_fn)(int, struct sockaddr *, socklen_t *);
typedef int (*accept4_fn)(int, struct sockaddr *, socklen_t *, int);

int accept(int fd, struct sockaddr *addr, socklen_t *len) {
    static _Atomic(accept_fn) real_accept;
    accept_fn real = atomic_load(&real_accept);
    if (!real) {
        real = (accept_fn)dlsym(RTLD_NEXT, "accept");
        atomic_store(&real_accept, real);
    }
    return configure_accepted(real(fd, addr, len));
}

int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags) {
    static _Atomic(accept4_fn) real_accept4;
    accept4_fn real = atomic_load(&real_accept4);
    if (!real) {
        real = (accept4_fn)dlsym(RTLD_NEXT, "accept4");
        atomic_store(&real_accept4, real);
    }
    return configure_accepted(real(fd, addr, len, flags));
}
