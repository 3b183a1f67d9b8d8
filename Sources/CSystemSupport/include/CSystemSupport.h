#ifndef SLUICE_CSYSTEMSUPPORT_H
#define SLUICE_CSYSTEMSUPPORT_H

/* What Swift cannot call directly: pthread_setname_np is a GNU extension that Glibc's module does not export. */

/// Names the calling thread (at most 15 bytes are kept), as `top -H`, `perf` and debuggers show it.
void sluice_set_thread_name(const char *name);

#endif
