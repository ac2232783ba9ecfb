/*
 * collect.h - everything one traced interval produced, in one place: the
 * finished requests (with their token times), the devices, the compute
 * intervals, kernel names, losses, the window and the host it ran on.
 *
 * In:  the sources' callbacks (a struct tt_compute_sink from collect_sink,
 *      requests through collect_add_request), or a trace file read back.
 * Out: a struct report_input for report_build, the same data for the
 *      exporters, and (when a writer is attached) every record appended to
 *      a trace file as it arrives.
 * Assumes: one clock, CLOCK_MONOTONIC ns. Memory grows with what is kept;
 *      the caller bounds the traced interval.
 */
#ifndef TT_COLLECT_H
#define TT_COLLECT_H

#include <stddef.h>
#include <stdint.h>

#include "compute.h"
#include "report.h"
#include "requests.h"

struct tracefile_writer;

/* Host facts a tuning session changes; kept in a trace's header. */
struct tt_hostinfo {
	char hostname[64];
	char kernel[128];		/* uname -r and -v */
	char cmdline[512];		/* /proc/cmdline */
	char cpu_model[128];
	uint32_t cpus;
	char governor[32];		/* cpufreq governor of cpu0, "" if none */
	uint32_t numa_nodes;
	char thp[32];			/* transparent hugepages: enabled mode */
	char gpu_model[128];		/* "" where there is no GPU */
	char gpu_driver[64];
	char gpu_clocks[64];
};

struct collect_name {
	uint32_t pid, name_id;
	char *name;
};

struct collect {
	uint64_t start_ns, end_ns;	/* window */
	char compute[16];		/* "cpu", "cupti", "auto" */
	uint32_t max_batch;		/* engine's batch limit if known, or 0 */
	struct tt_hostinfo host;
	struct tt_request *reqs;	/* token_ns owned, one array each */
	size_t nreqs, capreqs;
	struct tt_device *devs;
	size_t ndevs, capdevs;
	struct tt_interval *ivs;
	size_t nivs, capivs;
	struct collect_name *names;
	size_t nnames, capnames;
	struct report_losses losses;
	struct tracefile_writer *writer;	/* NULL: keep in memory only */
	int write_error;		/* first writer error, 0 if none */
};

#endif
