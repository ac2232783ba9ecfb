/*
 * tracefs.h - make sure tracefs is there before any tracepoint is attached.
 */
#ifndef TT_TRACEFS_H
#define TT_TRACEFS_H

/*
 * Returns 0 when the tracepoints of event group `group` ("syscalls",
 * "sched", "sock") can be attached: their ids are readable under
 * /sys/kernel/tracing/events (or debugfs's /sys/kernel/debug/tracing/events,
 * where libbpf looks first when it exists). Mounts tracefs at
 * /sys/kernel/tracing when it is missing, saying so on stderr once per
 * process. Returns -errno, with a message that says what to do, when it
 * cannot: -ENOENT (no tracefs in this kernel, or no such event group),
 * or the mount's own error (-EPERM without CAP_SYS_ADMIN). Every source
 * that attaches tracepoints calls it first; the mount is tried once and
 * its answer kept, so later calls print nothing new.
 */
int tracefs_ensure(const char *group);

#endif
