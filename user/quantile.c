/*
 * quantile.c - percentiles from a histogram of integer ns; see quantile.h.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>

#include "quantile.h"

static uint32_t bucket_of(uint64_t v)
{
	int e;

	if (v < QUANTILE_SUB)
		return (uint32_t)v;
	e = 63 - __builtin_clzll(v);
	/* the 11 bits below the highest pick the bucket in its octave */
	return QUANTILE_SUB * (uint32_t)(e - QUANTILE_SUB_BITS + 1) +
	       (uint32_t)((v >> (e - QUANTILE_SUB_BITS)) - QUANTILE_SUB);
}

/* The buckets, allocated at the first value: 0 or -ENOMEM (q->oom). */
static int buckets(struct quantile *q)
{
	if (q->count)
		return 0;
	q->count = calloc(QUANTILE_BUCKETS, sizeof(*q->count));
	q->sum = calloc(QUANTILE_BUCKETS, sizeof(*q->sum));
	if (q->count && q->sum)
		return 0;
	quantile_free(q);
	q->oom = 1;
	return -ENOMEM;
}

/* The mean of bucket b's values (it holds some), exact in 128 bits. */
static double mean_of(const struct quantile *q, uint32_t b)
{
	return (double)(q->sum[b] / q->count[b]) +
	       (double)(q->sum[b] % q->count[b]) / q->count[b];
}

int quantile_add(struct quantile *q, uint64_t v)
{
	uint32_t b = bucket_of(v);

	if (buckets(q))
		return -ENOMEM;
	q->count[b]++;
	q->sum[b] += v;
	q->n++;
	return 0;
}

double quantile_rank(const struct quantile *q, uint64_t k)
{
	uint64_t acc = 0;

	if (k >= q->n || !q->count)
		return -1;
	for (uint32_t b = 0; b < QUANTILE_BUCKETS; b++) {
		acc += q->count[b];
		if (acc > k)
			return mean_of(q, b);
	}
	return -1;
}

double quantile_pct(const struct quantile *q, double p)
{
	uint64_t k;

	if (!q->n)
		return -1;
	k = (uint64_t)ceil(p / 100.0 * (double)q->n);
	return quantile_rank(q, k ? k - 1 : 0);
}

int quantile_merge(struct quantile *into, const struct quantile *from)
{
	if (from->oom)
		into->oom = 1;
	if (!from->n)
		return 0;
	if (buckets(into))
		return -ENOMEM;
	for (uint32_t b = 0; b < QUANTILE_BUCKETS; b++)
		if (from->count[b]) {
			into->count[b] += from->count[b];
			into->sum[b] += from->sum[b];
		}
	into->n += from->n;
	return 0;
}

void quantile_bins(const struct quantile *q, double hi, double *cnt,
		   size_t nbins)
{
	for (size_t k = 0; k < nbins; k++)
		cnt[k] = 0;
	for (uint32_t b = 0; q->count && nbins && b < QUANTILE_BUCKETS; b++) {
		double k;

		if (!q->count[b])
			continue;
		k = hi > 0 ? floor(mean_of(q, b) / hi * (double)nbins) : 0;
		cnt[k < (double)nbins ? (size_t)k : nbins - 1] +=
			(double)q->count[b];
	}
}

void quantile_free(struct quantile *q)
{
	free(q->count);
	free(q->sum);
	q->count = NULL;
	q->sum = NULL;
	q->n = 0;
}
