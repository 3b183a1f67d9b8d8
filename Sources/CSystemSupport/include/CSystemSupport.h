#ifndef SLUICE_CSYSTEMSUPPORT_H
#define SLUICE_CSYSTEMSUPPORT_H

/*
 * Small pieces of C the Swift modules need from the system.
 *
 * The embedded broker (librdkafka's mock cluster) accepts its client connections with accept() and
 * leaves Nagle's algorithm on; a real Kafka broker sets TCP_NODELAY. This target interposes accept()
 * and accept4() for the whole process and, while enabled (the default), sets TCP_NODELAY on every
 * accepted TCP socket. Client sockets (connect()) are not touched.
 */

/// Turns TCP_NODELAY on accepted sockets on (non-zero, the default) or off (stock mock behaviour).
void sluice_broker_sockets_set_nodelay(int enabled);

/// Whether accepted sockets get TCP_NODELAY (non-zero) or not.
int sluice_broker_sockets_nodelay(void);

/// Names the calling thread (at most 15 bytes are kept), as `top -H`, `perf` and debuggers show it.
void sluice_set_thread_name(const char *name);

/// Installs handlers for SIGTERM, SIGINT and SIGHUP that queue the signal for
/// sluice_termination_signals_wait() instead of ending the process. Idempotent; returns 0 or an errno value.
int sluice_termination_signals_install(void);

/// Blocks until a termination signal arrives (after sluice_termination_signals_install()) and returns its number,
/// or -1 if the signal pipe fails. Each signal is returned once, to one waiter.
int sluice_termination_signals_wait(void);

#endif
