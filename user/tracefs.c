/*
 * tracefs.c - tracefs, before any tracepoint is attached.
 *
 * libbpf turns "sched/sched_switch" into a perf event by reading the
 * tracepoint's id from <tracefs>/events/sched/sched_switch/id. A freshly
 * booted host often has tracefs unmounted (systemd mounts it on demand, a
 * minimal host not at all), and then every tracepoint attach fails with a
 * bare ENOENT. So each source that attaches tracepoints (the socket tracer,
 * the CPU source) asks this file first, naming the event group it needs.
 *
 * In:  the event group a source needs.
 * Out: 0 and tracefs mounted at /sys/kernel/tracing, or -errno and one
 *      message that says why not and what to do.
 * Assumes: libbpf 1.x reads ids from /sys/kernel/debug/tracing when that
 *      path exists (debugfs mounted; its tracing folder automounts
 *      tracefs) and from /sys/kernel/tracing otherwise, so whichever
 *      holds events is the one it uses. Mounting needs CAP_SYS_ADMIN. The
 *      mount is left in place at exit, as other tracers leave it: other
 *      users of tracefs may have started to rely on it meanwhile.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tracefs.h"

#define TRACEFS_DIR	"/sys/kernel/tracing"
#define DEBUGFS_DIR	"/sys/kernel/debug/tracing"

/* The mount's answer, once: 1 not yet tried, 0 usable, else -errno. */
static int mounted = 1;
/* The folder that holds events/ once mounted is known. */
static const char *events_root;

static int have(const char *root, const char *group)
{
	char path[160];

	snprintf(path, sizeof(path), "%s/events%s%s", root, group ? "/" : "",
		 group ? group : "");
	return access(path, R_OK) == 0;
}

/* Finds or mounts tracefs; the first call's answer is kept. */
static int ensure_mounted(void)
{
	if (mounted != 1)
		return mounted;
	if (access(DEBUGFS_DIR, F_OK) == 0 && have(DEBUGFS_DIR, NULL)) {
		events_root = DEBUGFS_DIR;
		return mounted = 0;
	}
	if (have(TRACEFS_DIR, NULL)) {
		events_root = TRACEFS_DIR;
		return mounted = 0;
	}
	if (access(TRACEFS_DIR, F_OK) != 0) {
		fprintf(stderr, "tokentrace: %s does not exist: this kernel "
			"has no tracefs (CONFIG_TRACING), and tracepoints need "
			"it\n", TRACEFS_DIR);
		return mounted = -ENOENT;
	}
	if (mount("tracefs", TRACEFS_DIR, "tracefs", 0, NULL) != 0) {
		int err = errno;

		fprintf(stderr, "tokentrace: tracefs is not mounted and "
			"mounting it at %s failed: %s; mount it by hand "
			"(mount -t tracefs nodev %s) and retry\n",
			TRACEFS_DIR, strerror(err), TRACEFS_DIR);
		return mounted = -err;
	}
	fprintf(stderr, "tokentrace: tracefs was not mounted: mounted it at "
		"%s\n", TRACEFS_DIR);
	events_root = TRACEFS_DIR;
	return mounted = 0;
}

int tracefs_ensure(const char *group)
{
	int err = ensure_mounted();

	if (err)
		return err;
	if (group && !have(events_root, group)) {
		fprintf(stderr, "tokentrace: %s/events/%s is missing: the "
			"kernel lacks the %s tracepoints%s\n", events_root,
			group, group, !strcmp(group, "syscalls") ?
			" (CONFIG_FTRACE_SYSCALLS)" : "");
		return -ENOENT;
	}
	return 0;
}
