/*
 * chain.h - several trace files read as one trace: the chain a rotating
 * `record` writes, a folder of trace files, the traces of several hosts.
 *
 * In:  paths of trace files and folders (a folder: every trace file in
 *      it, by name; other files are skipped and counted), an optional
 *      time range.
 * Out: one struct collect over all of them (user/collect.h), the first
 *      file's header, and a list of the files in the order read.
 * Assumes: each file's header says its host (hostname), its boot (boot
 *      id) and one moment on both its clocks (wall and monotonic).
 *
 * Files are read in the order of their start (header wall clock). The
 * files of one boot share its monotonic clock and are read as they are;
 * another boot's times are moved onto the first file's clock by the
 * difference of the wall clocks at the two headers (so a host's reboot,
 * or another host, lands where it happened in wall time, to the accuracy
 * of the hosts' clocks). Files of another hostname are another host: its
 * devices stay its own, its pids are shown plus COLLECT_HOST_PID_STRIDE
 * times its index, and the report gains the host as a dimension.
 */
#ifndef TT_CHAIN_H
#define TT_CHAIN_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "collect.h"
#include "tracefile.h"

/* A time of --from / --to: seconds into the trace, or a UTC wall time. */
struct chain_time {
	bool set, wall;
	uint64_t ns;		/* offset from the trace's start, or wall ns */
};

struct chain_file {
	char *path;
	struct tracefile_header hdr;
	uint32_t host;		/* index into the hosts */
	int64_t shift_ns;	/* added to its times */
};

struct chain {
	struct chain_file *files;
	size_t nfiles;
	char (*hosts)[64];
	size_t nhosts;
	size_t skipped;		/* files in folders that are not traces */
};

/*
 * "90", "90s", "15m", "2h", "1.5h": that long after the trace's start;
 * "2026-12-03T10:00:00" or "2026-12-03 10:00:00" (UTC, optional Z): that
 * moment. 0 or -EINVAL.
 */
int chain_parse_time(const char *s, struct chain_time *t);

/*
 * The files args name (nargs of them), their headers read, sorted and
 * grouped into hosts. 0, or a negative errno with a message on log
 * (NULL: stderr) naming the path: a file that is not a trace, a folder
 * with none, a path that cannot be read.
 */
int chain_open(struct chain *ch, char *const *args, int nargs, FILE *log);

void chain_free(struct chain *ch);

/*
 * Read every file of ch into c (collect_init'ed), keeping what overlaps
 * [from, to) (unset: the trace's edges); the window becomes that range
 * where it is narrower. *first: the first file's header. 0, or the first
 * file's error (said on log), or -EINVAL with a message when the range is
 * empty.
 */
int chain_load(const struct chain *ch, struct collect *c,
	       const struct chain_time *from, const struct chain_time *to,
	       struct tracefile_header *first, FILE *log);

/*
 * What report, diff and export read: paths[0..n) (files, folders) as one
 * trace with an optional range; a single file without a range is read
 * by collect_load as it always was. *nfiles: how many files were read
 * (may be NULL). 0 or an error said on log.
 */
/*
 * chain_load on the first file's monotonic clock ([from_ns, to_ns), 0:
 * open), each file read as tmpl says (NULL: plainly), with each(ctx,
 * file, part) called first to set what is the file's own (a negative
 * errno stops, a positive return skips the file).
 */
int chain_load_with(const struct chain *ch, struct collect *c,
		    uint64_t from_ns, uint64_t to_ns,
		    struct tracefile_header *first, FILE *log,
		    const struct collect_part *tmpl,
		    int (*each)(void *ctx, size_t file, struct collect_part *p),
		    void *ctx);

/* A --from/--to time on the first file's monotonic clock; 0: not set. */
uint64_t chain_mono_of(const struct chain *ch, const struct chain_time *t);

int chain_read(struct collect *c, char *const *paths, int n,
	       const struct chain_time *from, const struct chain_time *to,
	       struct tracefile_header *hdr, FILE *log, size_t *nfiles);

#endif
