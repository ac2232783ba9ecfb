/*
 * quantile.h - percentiles of a stream too long to keep: a histogram of
 * integer nanoseconds with buckets a 2048th of their value wide.
 *
 * In:  values (ns, as uint64), one at a time, in any order.
 * Out: the nearest-rank percentile, to within 0.05% of the value that
 *      keeping every value would give (values under 2048 ns exactly).
 * Assumes: nothing about the order or the range of the values.
 *
 * A value under 2^11 ns has a bucket of its own. Above, a value v with
 * its highest bit at e (2^e <= v < 2^(e+1)) falls in one of 2048 buckets
 * of width 2^(e-11) that cut [2^e, 2^(e+1)): the bucket's width is at
 * most v/2048. Each bucket keeps its count and the exact sum of its
 * values, and the percentile is read as the mean of the bucket it falls
 * in: inside the bucket, so within its width, and exact where the
 * bucket's values are all one (a clock's tick, a fixed pacing). 54
 * octaves of 2048 buckets (2.6 MiB, its pages touched only where values
 * fall) hold any uint64, so memory is fixed however many values come: a
 * day of token gaps costs what one does.
 */
#ifndef TT_QUANTILE_H
#define TT_QUANTILE_H

#include <stddef.h>
#include <stdint.h>

#define QUANTILE_SUB_BITS	11
#define QUANTILE_SUB		(1u << QUANTILE_SUB_BITS)
#define QUANTILE_BUCKETS	(QUANTILE_SUB * (64 - QUANTILE_SUB_BITS + 1))

struct quantile {
	uint64_t n;
	uint64_t *count;	/* QUANTILE_BUCKETS, allocated on first add */
	unsigned __int128 *sum;	/* of each bucket's values */
	int oom;		/* a count could not be kept */
};

/* 0, or -ENOMEM (the value is not counted; q->oom says so after). */
int quantile_add(struct quantile *q, uint64_t v_ns);

/* The nearest-rank p-th percentile (0 < p <= 100) in ns, as a double
 * (the mean of its bucket); -1 with no values. */
double quantile_pct(const struct quantile *q, double p);

/* The k-th smallest value (from 0), as a double (its bucket's mean); -1
 * when there are no more than k. */
double quantile_rank(const struct quantile *q, uint64_t k);

/* Adds from's values to into's (a histogram of two streams); 0, or
 * -ENOMEM (into->oom says so). */
int quantile_merge(struct quantile *into, const struct quantile *from);

/* Counts of the values in nbins equal bins of [0, hi] into cnt (zeroed
 * first; a value at or past hi in the last): each bucket's values in the
 * bin of their mean, so a value within a 2048th of a bin's edge may be
 * counted across it. */
void quantile_bins(const struct quantile *q, double hi, double *cnt,
		   size_t nbins);

void quantile_free(struct quantile *q);

#endif
