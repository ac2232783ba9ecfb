/*
 * attribution.h - gives every nanosecond of a step's measured busy time to
 * exactly one of the requests it served, by their expected costs.
 *
 * In:  steps (busy ns each) with their entries (which request, prefill of
 *      n tokens or decode, at what context), the fitted cost model (or
 *      none), and the device's total busy time.
 * Out: per request, prefill and decode ns; the rest as unattributed, with
 *      sum(requests) + unattributed == total busy, exactly, in integers.
 */
#ifndef TT_ATTRIBUTION_H
#define TT_ATTRIBUTION_H

#include <stdint.h>

#include "costmodel.h"

enum attr_phase {
	ATTR_PREFILL = 0,
	ATTR_DECODE = 1,
};

struct attr_entry {
	uint32_t request;	/* index into the caller's request table */
	uint8_t phase;		/* enum attr_phase */
	uint8_t chunk;		/* a prefill in chunks: this is one of them */
	uint32_t tokens;	/* prefill: prompt tokens; decode: 1 */
	uint32_t context;	/* tokens already in the request's context */
};

struct attr_step {
	uint64_t busy_ns;	/* measured device busy time in the step */
	uint32_t first;		/* first entry */
	uint32_t n;		/* number of entries */
};

struct attr_request {
	uint64_t prefill_ns;
	uint64_t decode_ns;
};

enum attr_basis {
	ATTR_BY_MODEL = 0,	/* shares by the fitted cost model */
	ATTR_BY_TOKENS = 1,	/* too few steps to fit: by tokens processed */
};

/*
 * Fill out[0..nreq) (zeroed first) and *unattributed_ns. total_busy_ns
 * must be at least the sum of the steps' busy_ns. m may be NULL or not
 * fitted: shares then follow tokens processed. Returns the basis used, or
 * -EINVAL on inconsistent input (an entry naming a request >= nreq, an
 * entry range out of bounds, steps busier than the total).
 */
/* An entry's weight in its step of n entries: under a fitted model its
 * expected variable cost plus 1/n of the fixed cost; without one (m NULL
 * or not fitted), the tokens it processed. */
static inline double attribution_weight(const struct attr_entry *e,
					const struct costmodel *m,
					uint32_t n_in_step)
{
	if (!m || !m->fitted)
		return e->phase == ATTR_PREFILL ? e->tokens : 1.0;
	double var = e->phase == ATTR_PREFILL ?
		costmodel_prefill_ns(m, e->tokens, e->context) :
		costmodel_decode_ns(m, e->context);
	return var + m->coef[CM_FIXED] / n_in_step;
}

int attribution_run(const struct attr_step *steps, uint32_t nsteps,
		    const struct attr_entry *entries, uint32_t nentries,
		    uint64_t total_busy_ns, const struct costmodel *m,
		    struct attr_request *out, uint32_t nreq,
		    uint64_t *unattributed_ns);

#endif
