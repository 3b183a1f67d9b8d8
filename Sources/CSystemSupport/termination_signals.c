#define _GNU_SOURCE
#include "CSystemSupport.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <unistd.h>

/* Self-pipe: the handler (async-signal-safe) writes the signal number; a waiting thread reads it. */
static int signal_pipe[2] = {-1, -1};
static atomic_int installed = 0;

static void on_termination_signal(int signal_number) {
    int saved_errno = errno;
    unsigned char byte = (unsigned char)signal_number;
    ssize_t ignored = write(signal_pipe[1], &byte, 1);
    (void)ignored;
    errno = saved_errno;
}

int sluice_termination_signals_install(void) {
    int expected = 0;
    if (!atomic_compare_exchange_strong(&installed, &expected, 1)) return 0;
    if (pipe2(signal_pipe, O_CLOEXEC) != 0) {
        atomic_store(&installed, 0);
        return errno;
    }
    struct sigaction action = {0};
    action.sa_handler = on_termination_signal;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESTART;
    const int signals[] = {SIGTERM, SIGINT, SIGHUP};
    for (unsigned i = 0; i < sizeof(signals) / sizeof(signals[0]); i++) {
        if (sigaction(signals[i], &action, NULL) != 0) return errno;
    }
    return 0;
}

int sluice_termination_signals_wait(void) {
    for (;;) {
        unsigned char byte;
        ssize_t n = read(signal_pipe[0], &byte, 1);
        if (n == 1) return byte;
        if (n < 0 && errno == EINTR) continue;
        return -1;
    }
}
