/*
 * rng.c - the load generator's seeded random source.
 *
 * In:  a seed (--seed) and a stream number (the request index, or a fixed
 *      number for the arrival process).
 * Out: uniform numbers, lengths drawn from a range, exponential gaps for
 *      Poisson arrivals, tenants drawn by weight.
 * Assumes: nothing shared: each stream has its own state, so a request's
 *      tenant, lengths and prompt depend only on the seed and its index,
 *      whatever thread sends it.
 *
 * splitmix64: tiny, fast, and good enough to shape a workload.
 */
#include <math.h>

#include "loadgen.h"

void lg_rng_seed(struct lg_rng *r, uint64_t seed, uint64_t stream)
{
	r->s = seed ^ (stream * 0xd1342543de82ef95ULL + 0x2545f4914f6cdd1dULL);
	lg_rng_next(r);
}

uint64_t lg_rng_next(struct lg_rng *r)
{
	uint64_t z = (r->s += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

double lg_rng_unit(struct lg_rng *r)
{
	return (double)(lg_rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
}

long lg_rng_range(struct lg_rng *r, const struct lg_range *range)
{
	uint64_t span;

	if (range->hi <= range->lo)
		return range->lo;
	span = (uint64_t)(range->hi - range->lo) + 1;
	return range->lo + (long)(lg_rng_next(r) % span);
}

/* Gap to the next arrival of a Poisson process with this rate (per s). */
double lg_rng_exp(struct lg_rng *r, double rate)
{
	double u = lg_rng_unit(r);

	return -log1p(-u) / rate;
}

int lg_rng_tenant(struct lg_rng *r, const struct lg_tenant *t, int n)
{
	double sum = 0, x;
	int i;

	for (i = 0; i < n; i++)
		sum += t[i].weight;
	if (n <= 1 || sum <= 0)
		return 0;
	x = lg_rng_unit(r) * sum;
	for (i = 0; i < n - 1; i++) {
		if (x < t[i].weight)
			return i;
		x -= t[i].weight;
	}
	return n - 1;
}
