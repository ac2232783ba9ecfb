/*
 * progress.h - a progress line on stderr for long reads, when stderr is a
 * terminal: once the work has taken PROGRESS_AFTER_NS (short work stays
 * quiet), then at most every PROGRESS_EVERY_NS, wiped at the end.
 *
 * In:  tracefile's reading hook (bytes done of a file's, records read)
 *      and a long trace's ranges as each is merged (user/shard.h).
 * Out: "reading NAME: 40% (...), 3.1 M events/s, 12 s left" or
 *      "reporting time range 9 of 23 (...), 6.8 M events/s, 3 s left".
 */
#ifndef TT_PROGRESS_H
#define TT_PROGRESS_H

#include <stdbool.h>
#include <stdint.h>

#include "shard.h"

struct progress {
	uint64_t start_ns, last_ns;
	uint64_t part_start_ns;		/* the file or the ranges began */
	bool shown;
};

void progress_init(struct progress *p);

/* A tracefile_progress_fn; ctx a struct progress. */
void progress_read(void *ctx, const char *name, uint64_t done,
		   uint64_t total, uint64_t records);

/* shard_cfg.progress; ctx a struct progress. */
void progress_ranges(void *ctx, uint32_t done, uint32_t n,
		     uint64_t events_done, uint64_t events);

/* p readied, and cfg's progress hooks set to it when stderr is a
 * terminal. */
void progress_on_terminal(struct progress *p, struct shard_cfg *cfg);

#endif
