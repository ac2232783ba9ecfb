/*
 * tracefs.c - tracefs for the syscall tracepoints.
 *
 * In:  nothing.
 * Out: tracefs mounted at /sys/kernel/tracing, or an error that says why
 *      it could not be.
 * Assumes: libbpf reads tracepoint ids from /sys/kernel/tracing/events or
 *      /sys/kernel/debug/tracing/events; some systems do not mount tracefs
 *      at boot. Mounting needs CAP_SYS_ADMIN.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tracefs.h"

#define TRACEFS_DIR "/sys/kernel/tracing"

static int have_events(const char *dir)
{
	char path[128];

	snprintf(path, sizeof(path), "%s/events/syscalls", dir);
	return access(path, R_OK) == 0;
}

int tracefs_ensure(void)
{
	if (have_events(TRACEFS_DIR) ||
	    have_events("/sys/kernel/debug/tracing"))
		return 0;
	if (access(TRACEFS_DIR, F_OK) != 0) {
		fprintf(stderr, "tokentrace: %s does not exist: this kernel "
			"has no tracefs (CONFIG_FTRACE); syscall tracepoints "
			"are needed\n", TRACEFS_DIR);
		return -ENOENT;
	}
	if (mount("tracefs", TRACEFS_DIR, "tracefs", 0, NULL) != 0) {
		int err = errno;

		fprintf(stderr, "tokentrace: tracefs is not mounted and "
			"mounting it at %s failed: %s; mount it by hand "
			"(mount -t tracefs tracefs %s) and retry\n",
			TRACEFS_DIR, strerror(err), TRACEFS_DIR);
		return -err;
	}
	fprintf(stderr, "tokentrace: tracefs was not mounted: mounted it at "
		"%s\n", TRACEFS_DIR);
	if (!have_events(TRACEFS_DIR)) {
		fprintf(stderr, "tokentrace: %s/events/syscalls is missing: "
			"the kernel lacks syscall tracepoints "
			"(CONFIG_FTRACE_SYSCALLS)\n", TRACEFS_DIR);
		return -ENOENT;
	}
	return 0;
}
