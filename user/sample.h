/*
 * sample.h - a bounded, evenly spread sample of a long trace, for what
 * needs the trace's statistics rather than all of it (`tokentrace plan`:
 * the step cost model, the host's time between steps, the request mix).
 *
 * In:  a trace file path, how much of it to keep.
 * Out: a struct collect holding every device, name and compute record of
 *      the trace, and the device intervals and requests of a few regions
 *      spread over its span (all of it when the trace is short); a second
 *      one with the requests that arrived in the regions' windows (the
 *      mix); what was kept.
 * Assumes: records are written in rough time order (the collector writes
 *      them as they finish), so the trace's span is its first blocks'
 *      earliest time to its last blocks' latest: the file's head and tail
 *      are read for it, not the file. A region is a window and a lead
 *      before it. It keeps the intervals that start in it and the requests
 *      that start and end in it, so that no token lies outside the device
 *      time kept; the steps at a region's edges miss the requests that ran
 *      across the edge, and only the steps at least the longest request's
 *      length inside a region (sample_clean) see their whole batch. The
 *      mix takes every request that arrived in a window, however long.
 */
#ifndef TT_SAMPLE_H
#define TT_SAMPLE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "collect.h"
#include "tracefile.h"

struct sample_opts {
	uint64_t all_below_ns;	/* a span up to this: everything kept */
	uint32_t windows;	/* else this many windows ... */
	uint64_t window_ns;	/* ... of this length, evenly spread */
	uint64_t lead_ns;	/* requests arriving this long before one */
};

/* The defaults: traces up to 4 minutes whole; else 8 windows of 15 s. */
void sample_opts_default(struct sample_opts *o);

#define SAMPLE_MAX_WINDOWS	64

struct sample_info {
	bool sampled;		/* false: the whole trace was loaded */
	uint32_t windows;
	uint64_t window_ns, lead_ns;
	uint64_t start_ns[SAMPLE_MAX_WINDOWS];	/* each window's */
	uint64_t span_ns;	/* of the trace */
	uint64_t own_requests;	/* arriving inside a window (not its lead) */
	uint64_t longest_ns;	/* the longest request kept in a region */
};

/*
 * Load path into c (collect_init first) as collect_load does, keeping
 * only a sample when its span exceeds o->all_below_ns; then mix (also
 * initialised) gets the requests that arrived in the windows. Unsampled,
 * c holds everything and mix nothing. 0 or a negative errno (the file or
 * its header cannot be read). hdr may be NULL.
 */
int sample_load(struct collect *c, struct collect *mix, const char *path,
		const struct sample_opts *o, FILE *log,
		struct tracefile_header *hdr, struct sample_info *info);

/* Whether a step in [start, end) sees its whole batch: all of the trace
 * unsampled, else a step at least longest_ns inside a region. */
bool sample_clean(const struct sample_info *info, uint64_t start_ns,
		  uint64_t end_ns);

#endif
