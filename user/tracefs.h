/*
 * tracefs.h - make sure tracefs is mounted, for the syscall tracepoints.
 */
#ifndef TT_TRACEFS_H
#define TT_TRACEFS_H

/*
 * Returns 0 when tracepoint ids can be read (tracefs at /sys/kernel/tracing
 * or debugfs at /sys/kernel/debug/tracing), mounting tracefs at
 * /sys/kernel/tracing when it is missing (and saying so on stderr).
 * Returns -errno, with a message on stderr, when it cannot.
 */
int tracefs_ensure(void);

#endif
