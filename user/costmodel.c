/*
 * costmodel.c - non-negative least squares fit of the step cost model.
 *
 * In:  one observation per step (its term totals and measured ns).
 * Out: coefficients >= 0, the terms kept, R^2.
 *
 * The model has at most five terms, so the exact NNLS solution is found by
 * enumeration rather than iteration: the NNLS optimum is the unconstrained
 * least-squares solution on some subset of the terms whose coefficients
 * are all non-negative, so solving the normal equations on each of the
 * 2^k subsets and keeping the feasible one with the smallest residual gives
 * it exactly, with no tolerances to tune. Columns are scaled to unit
 * maximum first so that token counts and context sums (which differ by
 * orders of magnitude) do not make the normal equations ill-conditioned.
 */
#include <errno.h>
#include <math.h>
#include <string.h>

#include "costmodel.h"

#define CM_MIN_STEPS	8

static const char *const term_names[CM_NTERMS] = {
	[CM_FIXED] = "fixed",
	[CM_PREFILL] = "prefill_tokens",
	[CM_DECODE] = "decode_tokens",
	[CM_CONTEXT] = "decode_context",
	[CM_PREFILL_SQ] = "prefill_attention",
};

const char *costmodel_term_name(enum costmodel_term t)
{
	return t < CM_NTERMS ? term_names[t] : "?";
}

void costmodel_obs_init(struct costmodel_obs *o, double step_ns)
{
	memset(o, 0, sizeof(*o));
	o->x[CM_FIXED] = 1.0;
	o->ns = step_ns;
}

void costmodel_obs_prefill(struct costmodel_obs *o, uint32_t tokens,
			   uint32_t context)
{
	o->x[CM_PREFILL] += tokens;
	o->x[CM_PREFILL_SQ] += (double)tokens * ((double)tokens + context);
}

void costmodel_obs_decode(struct costmodel_obs *o, uint32_t context)
{
	o->x[CM_DECODE] += 1.0;
	o->x[CM_CONTEXT] += context;
}

/* Solve the k x k system a * x = b in place (Gaussian elimination with
 * partial pivoting). Returns -1 when singular. */
static int solve(double a[CM_NTERMS][CM_NTERMS], double *b, int k)
{
	for (int c = 0; c < k; c++) {
		int p = c;
		for (int r = c + 1; r < k; r++)
			if (fabs(a[r][c]) > fabs(a[p][c]))
				p = r;
		if (fabs(a[p][c]) < 1e-12)
			return -1;
		if (p != c) {
			for (int j = 0; j < k; j++) {
				double t = a[c][j];
				a[c][j] = a[p][j];
				a[p][j] = t;
			}
			double t = b[c];
			b[c] = b[p];
			b[p] = t;
		}
		for (int r = c + 1; r < k; r++) {
			double f = a[r][c] / a[c][c];
			for (int j = c; j < k; j++)
				a[r][j] -= f * a[c][j];
			b[r] -= f * b[c];
		}
	}
	for (int c = k - 1; c >= 0; c--) {
		for (int j = c + 1; j < k; j++)
			b[c] -= a[c][j] * b[j];
		b[c] /= a[c][c];
	}
	return 0;
}

/* Residual sum of squares of coefficients coef (scaled space). */
static double rss(const struct costmodel_obs *obs, uint32_t n,
		  const double *scale, const double *coef)
{
	double s = 0;
	for (uint32_t i = 0; i < n; i++) {
		double pred = 0;
		for (int t = 0; t < CM_NTERMS; t++)
			pred += coef[t] * obs[i].x[t] / scale[t];
		s += (obs[i].ns - pred) * (obs[i].ns - pred);
	}
	return s;
}

/*
 * Best non-negative fit using only terms in `allowed` (a bit mask).
 * coef is in scaled space. Returns the residual, or INFINITY if no subset
 * could be solved.
 */
static double nnls_enum(const struct costmodel_obs *obs, uint32_t n,
			const double *scale, unsigned allowed, double *best,
			unsigned *best_mask)
{
	double best_rss = INFINITY;

	for (unsigned mask = 1; mask < (1u << CM_NTERMS); mask++) {
		if (mask & ~allowed)
			continue;
		int idx[CM_NTERMS], k = 0;
		for (int t = 0; t < CM_NTERMS; t++)
			if (mask & (1u << t))
				idx[k++] = t;
		double a[CM_NTERMS][CM_NTERMS] = { { 0 } }, b[CM_NTERMS] = { 0 };
		for (uint32_t i = 0; i < n; i++)
			for (int r = 0; r < k; r++) {
				double xr = obs[i].x[idx[r]] / scale[idx[r]];
				b[r] += xr * obs[i].ns;
				for (int c = 0; c < k; c++)
					a[r][c] += xr * obs[i].x[idx[c]] /
						   scale[idx[c]];
			}
		if (solve(a, b, k))
			continue;
		double coef[CM_NTERMS] = { 0 };
		bool feasible = true;
		for (int r = 0; r < k; r++) {
			if (b[r] < 0)
				feasible = false;
			coef[idx[r]] = b[r];
		}
		if (!feasible)
			continue;
		double s = rss(obs, n, scale, coef);
		if (s < best_rss) {
			best_rss = s;
			memcpy(best, coef, sizeof(coef));
			*best_mask = mask;
		}
	}
	return best_rss;
}

static double adjusted_r2(double r2, uint32_t n, unsigned mask)
{
	int k = __builtin_popcount(mask);
	if (n <= (uint32_t)k + 1)
		return r2;
	return 1.0 - (1.0 - r2) * (n - 1) / (double)(n - k - 1);
}

int costmodel_fit(const struct costmodel_obs *obs, uint32_t n,
		  struct costmodel *m)
{
	memset(m, 0, sizeof(*m));
	m->steps = n;
	if (n && !obs)
		return -EINVAL;
	if (n < CM_MIN_STEPS)
		return 0;

	double scale[CM_NTERMS], mean = 0, tss = 0;
	for (int t = 0; t < CM_NTERMS; t++) {
		scale[t] = 0;
		for (uint32_t i = 0; i < n; i++)
			if (fabs(obs[i].x[t]) > scale[t])
				scale[t] = fabs(obs[i].x[t]);
		if (scale[t] == 0)
			scale[t] = 1;
	}
	for (uint32_t i = 0; i < n; i++)
		mean += obs[i].ns / n;
	for (uint32_t i = 0; i < n; i++)
		tss += (obs[i].ns - mean) * (obs[i].ns - mean);

	unsigned base = (1u << CM_NTERMS) - 1 - (1u << CM_PREFILL_SQ);
	double c4[CM_NTERMS], c5[CM_NTERMS];
	unsigned m4 = 0, m5 = 0;
	double r4 = nnls_enum(obs, n, scale, base, c4, &m4);
	double r5 = nnls_enum(obs, n, scale, (1u << CM_NTERMS) - 1, c5, &m5);
	if (!isfinite(r4) && !isfinite(r5))
		return 0;

	double q4 = tss > 0 ? 1.0 - r4 / tss : 1.0;
	double q5 = tss > 0 ? 1.0 - r5 / tss : 1.0;
	/* The quadratic term must earn its place. */
	bool quad = isfinite(r5) && (m5 & (1u << CM_PREFILL_SQ)) &&
		    (!isfinite(r4) ||
		     adjusted_r2(q5, n, m5) > adjusted_r2(q4, n, m4) + 0.005);
	const double *c = quad ? c5 : c4;
	unsigned mask = quad ? m5 : m4;

	for (int t = 0; t < CM_NTERMS; t++) {
		m->coef[t] = c[t] / scale[t];
		m->used[t] = (mask >> t) & 1;
	}
	m->r2 = quad ? q5 : q4;
	m->fitted = true;
	return 0;
}

double costmodel_prefill_ns(const struct costmodel *m, uint32_t tokens,
			    uint32_t context)
{
	return m->coef[CM_PREFILL] * tokens +
	       m->coef[CM_PREFILL_SQ] * (double)tokens *
		       ((double)tokens + context);
}

double costmodel_decode_ns(const struct costmodel *m, uint32_t context)
{
	return m->coef[CM_DECODE] + m->coef[CM_CONTEXT] * context;
}
