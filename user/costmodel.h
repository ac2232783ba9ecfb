/*
 * costmodel.h - the step cost model: what one forward pass costs as a
 * function of what it did, fitted by non-negative least squares over the
 * steps of a trace.
 *
 *   step_ns ~= fixed + per_prefill * P + per_decode * D + per_context * C
 *              [+ per_prefill_sq * Q]
 *
 * P = prompt tokens processed in the step, D = decode tokens, C = sum of
 * the decoding requests' context lengths, Q = sum over prefill chunks of
 * n * (context + (n + 1) / 2) (each of a chunk's n tokens attends over
 * what precedes the chunk, cached or computed before, and over the
 * chunk's tokens up to itself). The quadratic term is kept only when it
 * improves the fit enough to pay for itself (it must lower the Bayesian
 * information criterion).
 *
 * costmodel_fit_steps is the fit a trace gets: a prior on the decode term
 * about the prefill term (a decode token passes through the same weights
 * as a prompt token), the decode terms refitted on the steps without
 * prefill, and a slow drift of the host's speed over the run (clock,
 * cache and memory contention) taken out by a scale per window of steps;
 * see costmodel.c.
 */
#ifndef TT_COSTMODEL_H
#define TT_COSTMODEL_H

#include <stdbool.h>
#include <stdint.h>

enum costmodel_term {
	CM_FIXED = 0,
	CM_PREFILL,
	CM_DECODE,
	CM_CONTEXT,
	CM_PREFILL_SQ,
	CM_NTERMS,
};

/* What one step did, summed over its entries. */
struct costmodel_obs {
	double x[CM_NTERMS];	/* x[CM_FIXED] is 1 */
	double ns;		/* measured step time */
};

struct costmodel {
	double coef[CM_NTERMS];	/* ns per unit of each term, >= 0 */
	bool used[CM_NTERMS];	/* terms the fit kept */
	double r2;
	uint32_t steps;		/* observations fitted */
	bool fitted;		/* false: too few steps, caller falls back */
	/* costmodel_fit_steps: the smallest and largest window scale (the
	 * host's speed over the run against its mean; both 1 when no drift
	 * was fitted) and the number of windows. */
	double drift_min, drift_max;
	uint32_t drift_windows;
};

/* Observation of a step from its totals. */
void costmodel_obs_init(struct costmodel_obs *o, double step_ns);
void costmodel_obs_prefill(struct costmodel_obs *o, uint32_t tokens,
			   uint32_t context);
void costmodel_obs_decode(struct costmodel_obs *o, uint32_t context);

/* Fit over n observations. Returns 0, or -EINVAL on bad input. */
int costmodel_fit(const struct costmodel_obs *obs, uint32_t n,
		  struct costmodel *m);

/*
 * Fit over n observations in time order (one per step or per group of
 * neighbouring steps): costmodel_fit with the decode prior, then the
 * fixed, decode and context terms refitted (with it) on the observations
 * without prefill, the whole repeated with each window of
 * COSTMODEL_DRIFT_WINDOW observations scaled by its own
 * measured/predicted ratio; the scales are kept only when they lower the
 * Bayesian information criterion (drift_windows 0 otherwise). r2 is that
 * of the model used on the observations as measured. Returns 0, -EINVAL
 * or -ENOMEM.
 */
#define COSTMODEL_DRIFT_WINDOW	10
int costmodel_fit_steps(const struct costmodel_obs *obs, uint32_t n,
			struct costmodel *m);

/* Predicted ns of an observation (every term). */
double costmodel_predict(const struct costmodel *m,
			 const struct costmodel_obs *o);

/* Attention of a prefill chunk: its token i (from 0) attends over the
 * context before the chunk and i + 1 of its own. */
static inline double costmodel_attention(uint32_t tokens, uint32_t context)
{
	return (double)tokens * ((double)context + (tokens + 1.0) / 2);
}

/* Predicted ns of one entry's variable work (the fixed term excluded);
 * inline, as attribution weighs every entry of every step with them. */
static inline double costmodel_prefill_ns(const struct costmodel *m,
					  uint32_t tokens, uint32_t context)
{
	return m->coef[CM_PREFILL] * tokens +
	       m->coef[CM_PREFILL_SQ] * costmodel_attention(tokens, context);
}

static inline double costmodel_decode_ns(const struct costmodel *m,
					 uint32_t context)
{
	return m->coef[CM_DECODE] + m->coef[CM_CONTEXT] * context;
}

const char *costmodel_term_name(enum costmodel_term t);

#endif
