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
 * Assumes: one clock, CLOCK_MONOTONIC ns.
 *
 * Memory is bounded two ways. With a writer attached and spilling on
 * (collect_set_spill), requests and intervals go to the trace file as they
 * arrive and are not kept; after collect_close, collect_reload reads the
 * file back for the report, so the report of a recording is the report of
 * its trace by construction. Without spilling, at most max_reqs requests
 * and max_ivs intervals are kept (0: no limit); what comes beyond is
 * counted (reqs_dropped, ivs_dropped) and shown in the report's losses.
 */
#ifndef TT_COLLECT_H
#define TT_COLLECT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
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
	char hooks[24];			/* socket hooks in use, "" unknown */
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
	/* added: losses a compute source reported, latest total per pid */
	struct collect_pid_loss { uint32_t pid; uint64_t dropped; } *pid_losses;
	size_t npid_losses, cappid_losses;
	bool window_closed;		/* the end is final */
	uint64_t last_tick_ns;		/* last window record written */
	/* read back from a trace file: what the reader had to skip */
	uint64_t trace_blocks_ok, trace_blocks_skipped;
	uint64_t trace_bytes_skipped, trace_records_skipped;
	bool trace_cut;			/* it ends inside a block */
	/* bounds (see the top of this file) */
	size_t max_reqs, max_ivs;	/* kept at most; 0: no limit */
	uint64_t reqs_dropped, ivs_dropped;	/* over the limits: not kept */
	uint64_t reqs_seen, ivs_seen;	/* every one that arrived */
	bool spill;			/* with a writer: write, do not keep */
	struct report_price *price_store;	/* collect_report_input's */
	bool *price_default;		/* per price_store entry */
	size_t nprice_store;
	struct report_name *name_store;	/* collect_report_input's, pointing
					   at names */
	/* a rotated chain: losses at the current file's start, and when it
	   started (0: the window's start) */
	struct report_losses losses_base;
	uint64_t file_start_ns;
	/* several hosts read as one (user/chain.h): their names, in the
	   order of devs[].host; 0 or 1 of them: one host */
	char (*hosts)[64];
	size_t nhosts;
};

/* The traces of several hosts read as one: host k's pids are shown plus
 * k times this (pids are below 2^22 on Linux), so servers stay apart. */
#define COLLECT_HOST_PID_STRIDE	REPORT_HOST_PID_STRIDE

/* Limits record and run apply without a trace file (flags change them). */
#define COLLECT_MAX_REQS_DEFAULT	1000000u
#define COLLECT_MAX_IVS_DEFAULT		10000000u

/* Prices per device-hour: named ones first, then a default by kind. */
#define COLLECT_GPU_USD_PER_HOUR	2.00
#define COLLECT_CPU_USD_PER_HOUR	0.10

struct collect_prices {
	const struct report_price *list;	/* matched on device name */
	size_t n;
	double gpu_default, cpu_default;	/* < 0: the defines above */
};

void collect_init(struct collect *c);
/* Frees everything; closes an attached writer (see collect_close). */
void collect_free(struct collect *c);

/* A sink that stores devices, intervals, names and losses (and writes
 * them when a writer is attached). */
void collect_sink(struct collect *c, struct tt_compute_sink *sink);

/* Keep a finished request; token_ns is copied. 0 or -ENOMEM. */
int collect_add_request(struct collect *c, const struct tt_request *q);
/* A step window of pid's engine (the step probe): a TT_IV_STEP interval,
 * and with its batch (NULL: none) a TT_IV_SEQ interval per run. */
struct tt_sock_step;
void collect_add_step(struct collect *c, uint32_t pid, uint32_t tid,
		      uint64_t start_ns, uint64_t end_ns,
		      const struct tt_sock_step *batch);

/* The compute source and the engine's batch limit. */
void collect_set_compute(struct collect *c, const char *source,
			 uint32_t max_batch);
/* The kinds of socket hook in use ("libc", "syscalls", ...). */
void collect_set_hooks(struct collect *c, const char *hooks);
/* The window start (end open), as when tracing starts. */
void collect_set_start(struct collect *c, uint64_t start_ns);
/* Socket tracer losses (running totals). */
void collect_set_sock_losses(struct collect *c, uint64_t events,
			     uint64_t bytes);

/*
 * From now on every record goes to w as well; what is already kept is
 * written first. c owns w. 0 or the writer's error.
 */
int collect_attach_writer(struct collect *c, struct tracefile_writer *w);

/*
 * Keep at most max_reqs requests and max_ivs intervals in memory (0: no
 * limit); later ones are counted in reqs_dropped and ivs_dropped.
 */
void collect_set_limits(struct collect *c, size_t max_reqs, size_t max_ivs);

/*
 * on: while a writer is attached, requests and intervals are written and
 * not kept (what is kept now is written and freed at attach). Devices,
 * names, losses and the window are small and always kept. Read the trace
 * back with collect_reload after collect_close for the report.
 */
void collect_set_spill(struct collect *c, bool on);

/*
 * After collect_close: replace what c keeps by the trace file at path (the
 * one the writer wrote), read with no limits. Host facts, the drop counts
 * and the limits stay. 0 or a negative errno (said on log, NULL: stderr).
 */
int collect_reload(struct collect *c, const char *path, FILE *log);
/* The same with another reader of path (a rotated chain's folder). */
int collect_reload_with(struct collect *c, const char *path, FILE *log,
			int (*load)(struct collect *n, const char *path,
				    FILE *log));

/*
 * A sliding window (`top`): forget the requests that ended before t and
 * the intervals that ended at or before it, and start the window at t if
 * it started earlier. gone (may be NULL) sees each request just before it
 * is freed. Returns the number of requests forgotten.
 */
size_t collect_forget_before(struct collect *c, uint64_t t,
			     void (*gone)(void *ctx,
					  const struct tt_request *q),
			     void *ctx);

/*
 * Rotation: end the current trace file at now_ns (its window closed, its
 * losses those since it began) and go on in w, which gets the devices
 * and names first, so that each file of the chain reads alone. c owns w.
 * 0 or the first write error.
 */
int collect_rotate(struct collect *c, struct tracefile_writer *w,
		   uint64_t now_ns);

/* Once a second (now: monotonic ns): the window so far and the losses
 * go to the writer, and its buffer becomes a block. 0 or the error. */
int collect_tick(struct collect *c, uint64_t now_ns);

/* End the window at end_ns; write the final window and losses and close
 * the writer. 0 or the first write error. */
int collect_close(struct collect *c, uint64_t end_ns);

/*
 * The report's input over what c holds, kernel names included, with
 * prices (NULL: the defaults). Pointers refer into c (valid until it
 * changes). 0 or -ENOMEM.
 */
int collect_report_input(struct collect *c, const struct collect_prices *p,
			 struct report_input *in);

/* Whether device dev got a default price in the last report input. */
bool collect_price_is_default(const struct collect *c, const char *dev);

/* Plain sum of device's interval lengths in the window (for the CPU
 * device: the on-CPU time of the traced threads, parallel ones summed). */
uint64_t collect_on_cpu_ns(const struct collect *c, uint32_t device);

/* report_json(r) with on_cpu_ns added to CPU devices and the count of
 * intervals to every device, and the requests and intervals not kept
 * (memory limits) to losses: the object that run --summary and report
 * --format json write. NULL on OOM. */
cJSON *collect_report_json(const struct collect *c, const struct report *r);
/* The same over report_json_shell, for report_print_json(o, r, f). */
cJSON *collect_report_json_shell(const struct collect *c,
				 const struct report *r);
/* The same for a streamed report (user/shard.h): c holds no intervals;
 * on_cpu_ns and intervals are per device of c, as the shards counted. */
cJSON *collect_report_json_shell_counted(const struct collect *c,
					 const struct report *r,
					 const uint64_t *on_cpu_ns,
					 const uint64_t *intervals);

/* That object written to path, created or truncated with mode 0600. 0, or
 * a negative errno with a message naming cmd and the file. */
int collect_write_report_json(const struct collect *c,
			      const struct report *r, const char *path,
			      const char *cmd);

/* A --max-requests / --max-intervals value: a positive count. 0, or -1
 * with a message naming cmd and flag. */
int collect_parse_limit(const char *cmd, const char *flag, const char *s,
			size_t *v);

/*
 * Load a trace file into c (collect_init first). Problems with blocks go
 * to log (NULL: stderr) and into the trace_ counts. 0, or a negative
 * errno when the file or its header cannot be read. header may be NULL.
 */
struct tracefile_header;
int collect_load(struct collect *c, const char *path, FILE *log,
		 struct tracefile_header *header);

/* The counts of a read of a trace file (blocks and records skipped, a
 * cut end) added to c's trace_ counts. */
struct tracefile_stats;
void collect_count_read(struct collect *c, const struct tracefile_stats *st);

/* How one file of several is read into a collect (user/chain.c). */
struct collect_part {
	int64_t shift_ns;	/* added to every time: the file's clock on the
				   first file's */
	uint32_t host;		/* its host: an index of c->hosts */
	uint64_t from_ns, to_ns;	/* after the shift: only requests and
					   intervals that overlap [from, to)
					   are kept; to_ns 0: no end */
	/* a streamed report's two readings (user/shard.c); all zero for
	   a plain read: */
	bool meta_only;		/* requests and intervals are not kept */
	bool records_only;	/* only requests and intervals are read */
	const uint64_t *offsets;	/* only these blocks (tracefile.h) */
	size_t noffsets;
	/* each request and interval that overlaps [from, to), shifted:
	   the offset of its block, its span, and a request's token times */
	void (*seen)(void *ctx, uint64_t block, uint64_t start, uint64_t end,
		     const uint64_t *tok, uint32_t ntok);
	void *seen_ctx;
	/* the file's device ids in c: given (map_in) or handed back at the
	   end (*map_out, malloc'd) */
	const struct collect_idmap *map_in;
	size_t nmap_in;
	struct collect_idmap **map_out;
	size_t *nmap_out;
};

struct collect_idmap {
	uint32_t from, to;
};

/*
 * Add the trace file at path to what c holds, as p says: times shifted,
 * pids moved by p->host * COLLECT_HOST_PID_STRIDE, devices matched to
 * those c has of the same host (by UUID; the CPU device by its kind) or
 * given fresh ids, losses summed, the window widened to cover the file's.
 * The read's counts (blocks skipped, ...) are added. 0 or as
 * collect_load.
 */
int collect_load_part(struct collect *c, const char *path, FILE *log,
		      struct tracefile_header *header,
		      const struct collect_part *p);

#endif
