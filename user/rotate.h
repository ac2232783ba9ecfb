/*
 * rotate.h - a trace file, or with --rotate a chain of them in a folder,
 * as `record` and `run` write it.
 *
 * In:  -o PATH and --rotate DURATION|SIZE; the collect the sources feed.
 * Out: PATH (one trace file), or PATH/trace-000000.tt, -000001.tt, ...:
 *      a new file every DURATION or when the current one reaches SIZE
 *      bytes (collect_rotate: each file reads alone; user/chain.h reads
 *      the folder as one trace).
 * Assumes: one thread; CLOCK_MONOTONIC ns.
 */
#ifndef TT_ROTATE_H
#define TT_ROTATE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "collect.h"

struct rotate {
	const char *path;		/* -o */
	uint64_t every_ns, bytes;	/* --rotate; both 0: one file */
	int zstd_level;
	uint32_t piece;			/* the next file's number */
	uint64_t piece_start_ns;
};

/* Help text of --rotate, for a usage message. */
#define ROTATE_HELP							\
"  --rotate D|SIZE    with -o DIR: a chain of trace files in the folder\n" \
"                     DIR (made 0700), a new one every D (90s, 15m, 1h)\n" \
"                     or SIZE bytes (500M, 2G); `tokentrace report DIR`\n" \
"                     reads the chain as one trace, --from/--to a part\n"

/* --rotate's argument: a duration ("90s", "15m", "1h"; at least 1 s) or
 * a size with K, M or G ("500M", "2G", "2GiB"; at least 64 KiB). 0, or
 * -1 with a message naming cmd. */
int rotate_parse(const char *cmd, const char *s, struct rotate *r);

/* After the options: r takes -o out_path; --rotate without -o DIR (none,
 * or JSON lines) is a usage error said for cmd. 0 or -1. */
int rotate_check(const char *cmd, struct rotate *r, const char *out_path,
		 bool jsonl, int zstd_level);

static inline bool rotate_on(const struct rotate *r)
{
	return r->every_ns || r->bytes;
}

/* The folder made (a folder that holds a chain is refused: two recordings
 * would read as one) or the file, created and attached to c with
 * spilling on. 0 or -1 (said on stderr). */
int rotate_open(struct rotate *r, struct collect *c, uint64_t now_ns);

/* A new file when the current one is old or big enough. */
void rotate_tick(struct rotate *r, struct collect *c, uint64_t now_ns);

/* After collect_close: what was written, read back for the report. */
int rotate_reload(const struct rotate *r, struct collect *c, FILE *log);

#endif
