/*
 * progress.c - a progress line on a terminal; see progress.h.
 */
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "progress.h"

#define PROGRESS_AFTER_NS	500000000ull
#define PROGRESS_EVERY_NS	200000000ull

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

/* The line wiped, where one is shown. */
static void wipe(struct progress *p)
{
	if (p->shown)
		fputs("\r\033[K", stderr);
	p->shown = false;
}

/* Whether a line is due at now (the work long enough, the last line old
 * enough); if so it is taken as shown, and the seconds since the part
 * began are in *s. */
static bool due(struct progress *p, uint64_t now, double *s)
{
	if (now - p->start_ns < PROGRESS_AFTER_NS ||
	    now - p->last_ns < PROGRESS_EVERY_NS)
		return false;
	p->last_ns = now;
	p->shown = true;
	*s = (now - p->part_start_ns) / 1e9;
	return true;
}

/* The rate and time left of done of total after s seconds; the line's
 * end. */
static void rate_and_left(double s, uint64_t events, uint64_t done,
			  uint64_t total)
{
	fprintf(stderr, ", %.2f M events/s", s > 0 ? events / s / 1e6 : 0);
	if (s > 0 && done && total > done)
		fprintf(stderr, ", %.0f s left",
			s * (double)(total - done) / (double)done);
}

void progress_read(void *ctx, const char *name, uint64_t done,
		   uint64_t total, uint64_t records)
{
	struct progress *p = ctx;
	uint64_t now = now_ns();
	double s;

	if (done >= total) {
		wipe(p);
		p->part_start_ns = 0;
		return;
	}
	if (!p->part_start_ns)
		p->part_start_ns = now;	/* a chain: each file's own rate */
	if (!due(p, now, &s))
		return;
	fprintf(stderr, "\r\033[Ktokentrace: reading %s: %3.0f%% (%.1f of "
		"%.1f MiB)", name, 100.0 * done / total, done / 1048576.0,
		total / 1048576.0);
	rate_and_left(s, records, done, total);
}

/* A long trace's ranges, as they are reported (user/shard.h). */
void progress_ranges(void *ctx, uint32_t done, uint32_t n,
		     uint64_t events_done, uint64_t events)
{
	struct progress *p = ctx;
	uint64_t now = now_ns();
	double s;

	if (!done)
		p->part_start_ns = now;
	if (done >= n) {
		wipe(p);
		return;
	}
	if (!done || !due(p, now, &s))
		return;
	fprintf(stderr, "\r\033[Ktokentrace: reporting time range %u of %u "
		"(%.1f of %.1f M events)", done, n, events_done / 1e6,
		events / 1e6);
	rate_and_left(s, events_done, events_done, events);
}

void progress_init(struct progress *p)
{
	*p = (struct progress){ .start_ns = now_ns() };
}

void progress_on_terminal(struct progress *p, struct shard_cfg *cfg)
{
	progress_init(p);
	if (!isatty(STDERR_FILENO))
		return;
	cfg->read_progress = progress_read;
	cfg->progress = progress_ranges;
	cfg->progress_ctx = p;
}
