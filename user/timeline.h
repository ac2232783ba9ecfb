/*
 * timeline.h - the device timeline: busy and idle time per device over a
 * window, from compute intervals in any order.
 *
 * In:  devices (struct tt_device) and intervals (struct tt_interval) from
 *      any compute source, out of order, overlapping across streams and
 *      threads; a window [start, end].
 * Out: per device, busy_ns = the measure of the union of its intervals
 *      clipped to the window (no nanosecond counted twice), idle_ns =
 *      window - busy, and sum_ns = the plain sum of interval lengths
 *      (for the CPU device: on-CPU time, which exceeds busy wall time when
 *      threads run in parallel).
 * Assumes: one clock for all (CLOCK_MONOTONIC ns); single-threaded use.
 */
#ifndef TT_TIMELINE_H
#define TT_TIMELINE_H

#include <stddef.h>
#include <stdint.h>

#include "compute.h"

struct timeline;

struct timeline_dev_stats {
	uint32_t id;
	enum tt_device_kind kind;
	char name[64];
	uint64_t busy_ns;	/* union of intervals, in the window */
	uint64_t idle_ns;	/* window - busy_ns */
	uint64_t sum_ns;	/* plain sum of interval lengths, in the window */
	uint64_t intervals;	/* intervals added */
	uint64_t late;		/* intervals that ended before the settled
				   watermark: their overlap could not be
				   checked (see timeline_settle) */
	uint64_t late_ns;	/* their length before the watermark */
};

/* A timeline for the window [start_ns, end_ns]; end_ns may be UINT64_MAX
 * (open) and set later with timeline_set_end. NULL on allocation failure. */
struct timeline *timeline_new(uint64_t start_ns, uint64_t end_ns);
void timeline_free(struct timeline *tl);

/* Move the window's start; for use before any interval is added. */
void timeline_set_start(struct timeline *tl, uint64_t start_ns);

/* Close the window. Intervals already summed past end_ns stay summed: set
 * the end before adding intervals that reach past it. */
void timeline_set_end(struct timeline *tl, uint64_t end_ns);

/* Declare a device (name, kind). Intervals of undeclared devices create
 * one named "dev<N>", kind from the interval kind. 0 or -ENOMEM. */
int timeline_add_device(struct timeline *tl, const struct tt_device *dev);

/* Add one interval [start_ns, end_ns). 0 or -ENOMEM; zero-length and
 * reversed intervals are counted and ignored. */
int timeline_add(struct timeline *tl, const struct tt_interval *iv);

/*
 * Fold everything that ends at or before upto_ns into running totals and
 * free it, bounding memory. An interval arriving later that ends at or
 * before upto_ns is "late": it is counted as busy as it is (it cannot be
 * merged with what was folded) and reported in late/late_ns.
 */
void timeline_settle(struct timeline *tl, uint64_t upto_ns);

/* Number of devices, and the stats of device i (0 <= i < count). */
size_t timeline_count(const struct timeline *tl);
int timeline_stats(const struct timeline *tl, size_t i,
		   struct timeline_dev_stats *out);

/* window_ns = end - start of the window (0 while it is open). */
uint64_t timeline_window_ns(const struct timeline *tl);

/* A tt_compute_sink that feeds this timeline (device and interval). */
void timeline_sink(struct timeline *tl, struct tt_compute_sink *sink);

#endif
