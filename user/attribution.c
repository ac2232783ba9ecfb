/*
 * attribution.c - exact integer split of each step's busy time.
 *
 * A step's time is shared in proportion to each entry's weight: under a
 * fitted model, its predicted variable cost plus an equal part of the
 * fixed per-step cost; without one, the tokens it processed. Shares are
 * rounded by the largest-remainder method: every entry gets the floor of
 * its exact share and the few nanoseconds left over (fewer than the number
 * of entries) go one each to the entries with the largest fractions, so a
 * step's shares always sum to its busy time exactly. Time outside any
 * step, and steps that served no request, are unattributed.
 */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "attribution.h"

struct share {
	uint32_t entry;
	double frac;
};

static int by_frac_desc(const void *a, const void *b)
{
	const struct share *x = a, *y = b;
	if (x->frac != y->frac)
		return x->frac < y->frac ? 1 : -1;
	return x->entry < y->entry ? -1 : x->entry > y->entry;
}

static void credit(struct attr_request *r, const struct attr_entry *e,
		   uint64_t ns)
{
	if (e->phase == ATTR_PREFILL)
		r->prefill_ns += ns;
	else
		r->decode_ns += ns;
}

/* Whether share x goes before y: the larger fraction, then the earlier
 * entry (a total order: entries differ). */
static bool ranks_before(const struct share *x, const struct share *y)
{
	return x->frac != y->frac ? x->frac > y->frac : x->entry < y->entry;
}

/* The k first of v[0..n) in that order moved to v[0..k), in any order
 * among themselves (quickselect: a step's few leftover nanoseconds need
 * the entries that get them, not a sort of all). */
static void first_k(struct share *v, uint32_t n, uint32_t k)
{
	uint32_t lo = 0, hi = n;	/* the k-th lies in [lo, hi) */

	while (hi - lo > 1) {
		struct share pivot = v[lo + (hi - lo) / 2], t;
		uint32_t a = lo, b = hi - 1;

		/* three-way: [lo, a) before the pivot, [b + 1, hi) after */
		for (uint32_t i = lo; i <= b;) {
			if (ranks_before(&v[i], &pivot)) {
				t = v[i]; v[i] = v[a]; v[a] = t;
				a++;
				i++;
			} else if (ranks_before(&pivot, &v[i])) {
				t = v[i]; v[i] = v[b]; v[b] = t;
				if (!b--)
					break;
			} else {
				i++;
			}
		}
		if (k < a)
			hi = a;
		else if (k > b + 1)
			lo = b + 1;
		else
			return;		/* the cut falls at the pivot */
	}
}

/* Split one step. shares has room for s->n entries. */
static void split_step(const struct attr_step *s,
		       const struct attr_entry *entries,
		       const struct costmodel *m, struct attr_request *out,
		       struct share *shares)
{
	const struct attr_entry *e = entries + s->first;
	double total = 0;

	/* the weights, kept in frac until their shares are known */
	for (uint32_t i = 0; i < s->n; i++) {
		shares[i].frac = attribution_weight(&e[i], m, s->n);
		total += shares[i].frac;
	}

	uint64_t given = 0;
	for (uint32_t i = 0; i < s->n; i++) {
		double w = shares[i].frac;
		double exact = total > 0 ? (double)s->busy_ns * w / total :
					   (double)s->busy_ns / s->n;
		uint64_t whole = (uint64_t)floor(exact);
		if (given + whole > s->busy_ns)	/* rounding at 2^53 */
			whole = s->busy_ns - given;
		given += whole;
		credit(&out[e[i].request], &e[i], whole);
		shares[i].entry = i;
		shares[i].frac = exact - floor(exact);
	}
	if (given == s->busy_ns)
		return;
	if (s->busy_ns - given < s->n)
		first_k(shares, s->n, (uint32_t)(s->busy_ns - given));
	else	/* more than one each: in order, round and round */
		qsort(shares, s->n, sizeof(*shares), by_frac_desc);
	for (uint32_t k = 0; given < s->busy_ns; k = (k + 1) % s->n) {
		credit(&out[e[shares[k].entry].request], &e[shares[k].entry],
		       1);
		given++;
	}
}

int attribution_run(const struct attr_step *steps, uint32_t nsteps,
		    const struct attr_entry *entries, uint32_t nentries,
		    uint64_t total_busy_ns, const struct costmodel *m,
		    struct attr_request *out, uint32_t nreq,
		    uint64_t *unattributed_ns)
{
	uint64_t in_steps = 0;
	uint32_t widest = 0;

	for (uint32_t i = 0; i < nsteps; i++) {
		const struct attr_step *s = &steps[i];
		if ((uint64_t)s->first + s->n > nentries)
			return -EINVAL;
		for (uint32_t j = 0; j < s->n; j++)
			if (entries[s->first + j].request >= nreq)
				return -EINVAL;
		if (s->n > widest)
			widest = s->n;
		in_steps += s->busy_ns;
	}
	if (in_steps > total_busy_ns)
		return -EINVAL;

	if (m && !m->fitted)
		m = NULL;
	memset(out, 0, sizeof(*out) * nreq);
	struct share *shares = calloc(widest ? widest : 1, sizeof(*shares));
	if (!shares)
		return -ENOMEM;

	uint64_t unattributed = total_busy_ns - in_steps;
	for (uint32_t i = 0; i < nsteps; i++) {
		if (steps[i].n == 0)
			unattributed += steps[i].busy_ns;
		else
			split_step(&steps[i], entries, m, out, shares);
	}
	free(shares);
	*unattributed_ns = unattributed;
	return m ? ATTR_BY_MODEL : ATTR_BY_TOKENS;
}
