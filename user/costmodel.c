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
#include <stdlib.h>
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
	o->x[CM_PREFILL_SQ] += costmodel_attention(tokens, context);
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

/* X'X and X'y of the scaled columns, summed once for every subset. */
struct gram {
	double xx[CM_NTERMS][CM_NTERMS], xy[CM_NTERMS];
};

static void gram_of(const struct costmodel_obs *obs, uint32_t n,
		    const double *scale, struct gram *g)
{
	memset(g, 0, sizeof(*g));
	for (uint32_t i = 0; i < n; i++) {
		double x[CM_NTERMS];

		for (int t = 0; t < CM_NTERMS; t++)
			x[t] = obs[i].x[t] / scale[t];
		for (int r = 0; r < CM_NTERMS; r++) {
			g->xy[r] += x[r] * obs[i].ns;
			for (int c = r; c < CM_NTERMS; c++)
				g->xx[r][c] += x[r] * x[c];
		}
	}
	for (int r = 0; r < CM_NTERMS; r++)
		for (int c = 0; c < r; c++)
			g->xx[r][c] = g->xx[c][r];
}

/*
 * Best non-negative fit using only terms in `allowed` (a bit mask).
 * coef is in scaled space. Returns the residual, or INFINITY if no subset
 * could be solved. The normal equations of every subset come from one
 * Gram matrix; the residual of a feasible one is summed over the
 * observations (exact, where y'y - 2c'X'y + c'X'Xc would cancel).
 */
static double nnls_enum(const struct costmodel_obs *obs, uint32_t n,
			const double *scale, unsigned allowed, double *best,
			unsigned *best_mask)
{
	double best_rss = INFINITY;
	struct gram g;

	gram_of(obs, n, scale, &g);
	for (unsigned mask = 1; mask < (1u << CM_NTERMS); mask++) {
		if (mask & ~allowed)
			continue;
		int idx[CM_NTERMS], k = 0;
		for (int t = 0; t < CM_NTERMS; t++)
			if (mask & (1u << t))
				idx[k++] = t;
		double a[CM_NTERMS][CM_NTERMS], b[CM_NTERMS];
		for (int r = 0; r < k; r++) {
			b[r] = g.xy[idx[r]];
			for (int c = 0; c < k; c++)
				a[r][c] = g.xx[idx[r]][idx[c]];
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

/*
 * Bayesian information criterion of a least-squares fit with the terms in
 * mask (up to a constant): n ln(RSS/n) + k ln(n). The quadratic term stays
 * when it lowers it, that is when the residual falls by more than a factor
 * n^(1/n) per extra term: a test that tightens with the number of steps
 * instead of a fixed gain in R^2, which on a trace dominated by a few long
 * prefill steps is near 1 either way (a fixed R^2 margin of 0.005 dropped
 * a prompt-attention cost that was plainly there, and left per-request
 * attribution on the reference server 2.5 times further off).
 */
static double bic(double rss_, uint32_t n, unsigned mask)
{
	return n * log(fmax(rss_, 1e-300) / n) +
	       __builtin_popcount(mask) * log((double)n);
}

int costmodel_fit(const struct costmodel_obs *obs, uint32_t n,
		  struct costmodel *m)
{
	memset(m, 0, sizeof(*m));
	m->steps = n;
	m->drift_min = m->drift_max = 1.0;
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

	/* The optional term must earn its place: of the fits with and
	 * without it, the one of least BIC (the one without on a tie). */
	const unsigned opt = 1u << CM_PREFILL_SQ;
	const unsigned core = (1u << CM_NTERMS) - 1 - opt;
	double best[CM_NTERMS], best_rss = INFINITY, best_bic = INFINITY;
	unsigned best_mask = 0;

	for (unsigned s = 0; s <= opt; s++) {
		double c[CM_NTERMS], r;
		unsigned mask = 0;

		if (s & ~opt)
			continue;
		r = nnls_enum(obs, n, scale, core | s, c, &mask);
		if (!isfinite(r) || (mask & opt) != s ||
		    !(bic(r, n, mask) < best_bic))
			continue;
		best_bic = bic(r, n, mask);
		best_rss = r;
		best_mask = mask;
		memcpy(best, c, sizeof(best));
	}
	if (!isfinite(best_rss))
		return 0;
	for (int t = 0; t < CM_NTERMS; t++) {
		m->coef[t] = best[t] / scale[t];
		m->used[t] = (best_mask >> t) & 1;
	}
	m->r2 = tss > 0 ? 1.0 - best_rss / tss : 1.0;
	m->fitted = true;
	return 0;
}

double costmodel_predict(const struct costmodel *m,
			 const struct costmodel_obs *o)
{
	double ns = 0;

	for (int t = 0; t < CM_NTERMS; t++)
		ns += m->coef[t] * o->x[t];
	return ns;
}

/* Residual sum of squares of the scaled model (f NULL: unscaled). */
static double scaled_rss(const struct costmodel *m,
			 const struct costmodel_obs *obs, uint32_t n,
			 const double *f)
{
	double s = 0;

	for (uint32_t i = 0; i < n; i++) {
		double e = obs[i].ns - (f ? f[i] : 1.0) *
				       costmodel_predict(m, &obs[i]);
		s += e * e;
	}
	return s;
}

/*
 * A decode token passes through the same weights as a prompt token: what
 * sets the two apart is attention (the context and attention terms) and
 * sampling. Where the steps hardly tell a decode's cost per token from
 * its cost per context token (batches full and much the same from step to
 * step, or few steps without a prefill), the fit alone swings between the
 * two: a decode charged nothing for its context, or nothing for itself,
 * and short contexts charged for long ones. So the decode term has a
 * prior: normal about the fitted prefill term, its standard deviation
 * DECODE_PRIOR of it, taken in as one observation more, weighted by the
 * fit's residual noise (the maximum a posteriori fit). Steps that do tell
 * the two apart outweigh one observation; steps that cannot are settled
 * by it; a wider prior (0.3 against 0.1) gives up a little on full
 * batches to let steps that tell show a decode several times a prompt
 * token's cost. Measured on the reference server's CPU backend (64
 * recorded runs of the eight mixes of the end-to-end matrix and ten of
 * five others, against its per-request log), with the steps' own windows
 * fitted one by one (report_steps_per_obs) and without the term for
 * decodes beside a prefill that the model had (fitted at 0.2-0.65 ms a
 * decode where the log said 0-0.05): requests within 10% of their share
 * went from 96.6% to 97.8% of all on the matrix and from 95.2% to 97.7%
 * on the other mixes; the worst run from 80.8% to 88.3%.
 */
#define DECODE_PRIOR	0.3

/* costmodel_fit of n observations with the decode prior about center (ns
 * a decode token; < 0: the fit's own prefill term) into m; aug has room
 * for n + 1. No prior where nothing decodes or nothing is left to weigh
 * it by. */
static int fit_decode_prior(const struct costmodel_obs *obs, uint32_t n,
			    double center, struct costmodel_obs *aug,
			    struct costmodel *m)
{
	int err = costmodel_fit(obs, n, m);
	uint32_t k = 0;
	bool decodes = false;

	if (err || !m->fitted)
		return err;
	if (center < 0)
		center = m->coef[CM_PREFILL];
	if (!(center > 0))
		return 0;
	for (uint32_t i = 0; i < n; i++)
		decodes = decodes || obs[i].x[CM_DECODE] > 0;
	for (int t = 0; t < CM_NTERMS; t++)
		k += m->used[t];
	if (!decodes || n <= k)
		return 0;
	double sd = sqrt(scaled_rss(m, obs, n, NULL) / (n - k));
	double w = sd / (DECODE_PRIOR * center);

	if (!(w > 0) || !isfinite(w))
		return 0;	/* an exact fit: nothing to weigh it by */
	memcpy(aug, obs, n * sizeof(*aug));
	memset(&aug[n], 0, sizeof(aug[n]));
	aug[n].x[CM_DECODE] = w;
	aug[n].ns = w * center;
	return costmodel_fit(aug, n + 1, m);
}

/*
 * Decode cost is measured best where nothing else happens. Fitted over
 * every step, the per-decode-token and per-context-token terms also absorb
 * whatever the prefill terms miss in steps that carry a long prefill, and
 * the two are nearly collinear in decode steps (the batch is much the same
 * from step to step), so that leakage can swing the split between them.
 * When there are enough observations without prefill, the fixed, decode
 * and context terms are fitted again on those alone (with the decode
 * prior, below); the prefill terms stay as the whole fit found them. tmp
 * and aug have room for n + 1 observations.
 */
static int refit_decode(struct costmodel *m, const struct costmodel_obs *obs,
			uint32_t n, struct costmodel_obs *tmp,
			struct costmodel_obs *aug)
{
	static const enum costmodel_term dec[] = { CM_FIXED, CM_DECODE,
						   CM_CONTEXT };
	struct costmodel d;
	uint32_t k = 0;
	int err;

	for (uint32_t i = 0; i < n; i++)
		if (obs[i].x[CM_PREFILL] == 0)
			tmp[k++] = obs[i];
	err = fit_decode_prior(tmp, k, m->coef[CM_PREFILL], aug, &d);
	if (err || !d.fitted)
		return err;
	for (size_t i = 0; i < sizeof(dec) / sizeof(dec[0]); i++) {
		m->coef[dec[i]] = d.coef[dec[i]];
		m->used[dec[i]] = d.used[dec[i]];
	}
	return 0;
}

static int fit_refit(const struct costmodel_obs *obs, uint32_t n,
		     struct costmodel *m, struct costmodel_obs *tmp,
		     struct costmodel_obs *aug)
{
	int err = fit_decode_prior(obs, n, -1, aug, m);

	if (!err && m->fitted)
		err = refit_decode(m, obs, n, tmp, aug);
	return err;
}

/* Bounds of a window's scale: a window this far off is not drift. */
#define DRIFT_MIN	0.25
#define DRIFT_MAX	4.0
/* Rounds of scale, then fit: until no scale moves by more than
 * DRIFT_SETTLED, at most DRIFT_ROUNDS (a drift that runs along with the
 * growth of some term takes tens of rounds to settle). */
#define DRIFT_ROUNDS	100
#define DRIFT_SETTLED	1e-4

/*
 * Per window of COSTMODEL_DRIFT_WINDOW observations, the ratio of measured
 * to predicted time, normalised so that the scales average 1 over the
 * predicted time of the run (the coefficients keep the run's mean level).
 * A last window shorter than a whole one joins the one before it: a few
 * steps at the end (the last requests draining) are too few to scale.
 * Returns the number of windows.
 */
static uint32_t drift_scales(const struct costmodel *m,
			     const struct costmodel_obs *obs, uint32_t n,
			     double *f)
{
	uint32_t w = 0;
	double fp = 0, p = 0;

	for (uint32_t i = 0; i < n; w++) {
		uint32_t end = i + COSTMODEL_DRIFT_WINDOW;
		double y = 0, pred = 0, r = 1.0;

		if (end + COSTMODEL_DRIFT_WINDOW > n)
			end = n;
		for (uint32_t j = i; j < end; j++) {
			y += obs[j].ns;
			pred += costmodel_predict(m, &obs[j]);
		}
		if (pred > 0 && y > 0)
			r = fmin(DRIFT_MAX, fmax(DRIFT_MIN, y / pred));
		for (uint32_t j = i; j < end; j++)
			f[j] = r;
		fp += r * pred;
		p += pred;
		i = end;
	}
	if (fp > 0 && p > 0)
		for (uint32_t i = 0; i < n; i++)
			f[i] *= p / fp;
	return w;
}

/* R^2 of the scaled model on the observations as measured. */
static double scaled_r2(const struct costmodel *m,
			const struct costmodel_obs *obs, uint32_t n,
			const double *f)
{
	double mean = 0, tss = 0;

	for (uint32_t i = 0; i < n; i++)
		mean += obs[i].ns / n;
	for (uint32_t i = 0; i < n; i++)
		tss += (obs[i].ns - mean) * (obs[i].ns - mean);
	return tss > 0 ? 1.0 - scaled_rss(m, obs, n, f) / tss : 1.0;
}

static unsigned used_mask(const struct costmodel *m)
{
	unsigned mask = 0;

	for (int t = 0; t < CM_NTERMS; t++)
		mask |= (unsigned)m->used[t] << t;
	return mask;
}

/*
 * Why a scale per window: the host's speed drifts over a run (clock
 * frequency, caches and memory bandwidth shared with other work), and
 * every step in a slow stretch costs more than the model says. Left in,
 * that drift is read as a cost of whatever grew during the stretch (the
 * context of a long decode, say). Attribution only uses the model to
 * split each step's own measured time, where a common scale cancels, so
 * what the fit needs is the relative cost of the terms; the scale of each
 * window is fitted with them, by alternating the two fits (scales for
 * the model, model for the scaled steps) until the scales settle. As
 * parameters, the scales must lower the information criterion against
 * the plain fit or are dropped. Measured on the reference server's CPU
 * backend under tokentrace (41 recorded runs, against the server's own
 * per-request accounting): with the information criterion for the
 * quadratic term, requests attributed more than 10 % off their share went
 * from 1.5 % of all to 0.8 % with the drift taken out, and the worst run
 * from 11 % to 5 % (2.4 % and 15 % before either change).
 */
int costmodel_fit_steps(const struct costmodel_obs *obs, uint32_t n,
			struct costmodel *m)
{
	struct costmodel_obs *tmp, *aug, *scaled;
	struct costmodel plain;
	double *f, *prev;
	int err;

	if (n && !obs)
		return -EINVAL;
	tmp = malloc((n + 1) * sizeof(*tmp));
	aug = malloc((n + 1) * sizeof(*aug));
	scaled = malloc((n ? n : 1) * sizeof(*scaled));
	f = malloc((n ? n : 1) * sizeof(*f));
	prev = malloc((n ? n : 1) * sizeof(*prev));
	if (!tmp || !aug || !scaled || !f || !prev) {
		err = -ENOMEM;
		goto out;
	}
	err = fit_refit(obs, n, m, tmp, aug);
	if (err || !m->fitted || n < 3 * COSTMODEL_DRIFT_WINDOW)
		goto out;
	plain = *m;
	for (uint32_t i = 0; i < n; i++)
		prev[i] = 1.0;
	for (int round = 0; round < DRIFT_ROUNDS; round++) {
		struct costmodel next;
		double moved = 0;

		drift_scales(m, obs, n, f);
		for (uint32_t i = 0; i < n; i++) {
			moved = fmax(moved, fabs(f[i] - prev[i]));
			prev[i] = f[i];
		}
		if (moved < DRIFT_SETTLED)
			break;
		for (uint32_t i = 0; i < n; i++) {
			scaled[i] = obs[i];
			scaled[i].ns = obs[i].ns / f[i];
		}
		err = fit_refit(scaled, n, &next, tmp, aug);
		if (err || !next.fitted)
			break;
		*m = next;
	}
	if (err)
		goto out;
	m->drift_windows = drift_scales(m, obs, n, f);
	/* The scales are parameters too (one per window but the mean): they
	 * stay only if they pay for themselves, as the quadratic term must. */
	if (bic(scaled_rss(m, obs, n, f), n, used_mask(m)) +
		    (m->drift_windows - 1) * log((double)n) >=
	    bic(scaled_rss(&plain, obs, n, NULL), n, used_mask(&plain))) {
		*m = plain;
		goto out;
	}
	m->drift_min = m->drift_max = f[0];
	for (uint32_t i = 1; i < n; i++) {
		m->drift_min = fmin(m->drift_min, f[i]);
		m->drift_max = fmax(m->drift_max, f[i]);
	}
	m->r2 = scaled_r2(m, obs, n, f);
	m->steps = n;
out:
	free(tmp);
	free(aug);
	free(scaled);
	free(f);
	free(prev);
	return err;
}

