/*
 * shard.h - the report of a trace too long to hold: read twice, reported
 * a time range (a shard) at a time, in memory bounded by one shard.
 *
 * In:  trace files read as one (user/chain.h), a --from/--to range,
 *      prices, the most events a shard holds, how many shards are built
 *      at once.
 * Out: one report merged from the shards' (report_merge), each request
 *      handed to a callback once every shard it spans is done; the trace
 *      as read (header, losses, window) in a collect without requests or
 *      intervals.
 * Assumes: the trace's blocks are written in about time order (as
 *      record writes them), so that a shard's records lie in few blocks.
 *
 * The first reading keeps no request or interval: it notes each block's
 * time span and the events of each second, and the devices, names,
 * window and losses. The window is then cut into shards of at most
 * SHARD_EVENTS_DEFAULT events (whole tenths of a second), and each shard is read
 * from only the blocks that overlap it, as `report --from --to` would
 * read it, and reported with the same code: its own steps and cost
 * model. A request that spans a shard's edge has its device time inside
 * each shard; its parts are summed. Idle time is shared once, over the
 * whole trace: each request's busy ns per device are kept and priced
 * fully loaded when the last shard is done (report_finish_merged).
 */
#ifndef TT_SHARD_H
#define TT_SHARD_H

#include <stdint.h>
#include <stdio.h>

#include "chain.h"
#include "collect.h"
#include "report.h"

#define SHARD_EVENTS_DEFAULT	1500000ull

struct shard_cfg {
	char *const *paths;
	int npaths;
	const struct chain_time *from, *to;
	const struct collect_prices *prices;
	uint64_t max_events;	/* per shard; 0: SHARD_EVENTS_DEFAULT */
	int jobs;		/* shards built at once (threads) */
	bool all_blocks;	/* read every block for each shard (the check
				   that reading only its blocks loses
				   nothing) */
	FILE *log;
	/* the requests are written out: their fully loaded cost, known
	 * only once every shard is read, as marks (shard_trace.marks; the
	 * request's cost_loaded_usd holds the part already shared) */
	bool marks;
	/* or each shard shares its own idle time among its own requests,
	 * for writers that stream each request as it is done (exports) */
	bool loaded_by_range;
	/* each request, done, with its token times (good for the call
	 * only): 0 or a negative errno (stops). Its fully loaded cost is
	 * not known yet: report_request_write_json writes its mark
	 * (cfg.marks), or it takes its range's (cfg.loaded_by_range) */
	int (*request)(void *ctx, const struct report_request *q);
	/* once the trace's window is known, before any shard: the merged
	 * report's window. NULL: none */
	int (*begin)(void *ctx, uint64_t start_ns, uint64_t end_ns);
	/* each shard, in order, after its requests: its report and the
	 * collect it was built from (both freed after the call); from: the
	 * shard's start (its first shard's: the --from), an interval that
	 * began before it was handed with an earlier shard. NULL: none */
	int (*part)(void *ctx, uint32_t index, uint64_t from,
		    const struct report *rep, const struct collect *c);
	void *ctx;
	/* progress, on the caller's thread (NULL: none): the first
	 * reading's through tracefile's hook, then after each shard is
	 * merged (and once before the first) shards and events done of
	 * all; progress_ctx for both */
	tracefile_progress_fn read_progress;
	void (*progress)(void *ctx, uint32_t done, uint32_t nshards,
			 uint64_t events_done, uint64_t events);
	void *progress_ctx;
};

struct shard_trace {
	struct collect c;		/* no requests or intervals */
	struct tracefile_header hdr;
	size_t nfiles;
	uint32_t nshards;
	uint64_t events;		/* requests, token times, intervals */
	uint64_t *on_cpu_ns, *intervals;	/* per device of c */
	/* cfg.marks: what the requests' marks stand for, to copy what was
	   written with report_copy_marked */
	struct report_marks marks;
};

/*
 * 0 with *out the merged report (report_free it) and *t the trace
 * (shard_trace_free), 1 when the trace fits in one shard (nothing is
 * kept: report it whole), or a negative errno (said on cfg->log). Traces
 * of several hosts are cut on the first host's clock, as chain_load
 * aligns them, and keep their host groups.
 */
int shard_report(const struct shard_cfg *cfg, struct shard_trace *t,
		 struct report *out);

void shard_trace_free(struct shard_trace *t);

/* Whether the trace files (and folders' files) come to fewer bytes than
 * a shard's events: too small to shard, without reading them. */
bool shard_small(char *const *paths, int n, uint64_t max_events);

/*
 * The end-of-run report of a recording written to path (a trace file or
 * a chain's folder), by shards: the text on text, the JSON report to
 * summary (NULL: none), cmd naming the command in messages; shards of
 * TOKENTRACE_SHARD_EVENTS events where that is set (0: never). 0, 1 when
 * it fits in one shard (read it back whole), or a negative errno.
 */
int shard_end_of_run(const char *path, const char *summary, FILE *text,
		     const char *cmd);

/* --jobs N (1 to 64) and --shard-events N (0: never, kept as
 * UINT64_MAX): 0, or -1 with the error said on stderr. */
int shard_parse_jobs(const char *arg, int *jobs);
int shard_parse_events(const char *arg, uint64_t *max_events);

#endif
