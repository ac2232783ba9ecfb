/*
 * Step cost model fit and exact attribution of step time to requests.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>

#include "../../user/attribution.h"
#include "../../user/costmodel.h"

/* Deterministic noise in [-1, 1). */
static double noise(unsigned *seed)
{
	*seed = *seed * 1103515245u + 12345u;
	return ((*seed >> 8) & 0xffff) / 32768.0 - 1.0;
}

/* Steps of a batching engine whose true cost is known. */
static uint32_t synth(struct costmodel_obs *obs, uint32_t n, double fixed,
		      double pre, double dec, double ctx, double quad,
		      double noise_frac)
{
	unsigned seed = 7;
	for (uint32_t i = 0; i < n; i++) {
		struct costmodel_obs *o = &obs[i];
		costmodel_obs_init(o, 0);
		uint32_t batch = 1 + i % 16;
		for (uint32_t b = 0; b < batch; b++) {
			uint32_t c = 20 + (i * 37 + b * 11) % 500;
			costmodel_obs_decode(o, c);
		}
		if (i % 3 == 0) {
			uint32_t t = 16 + (i * 13) % 200;
			costmodel_obs_prefill(o, t, 0);
		}
		double ns = fixed + pre * o->x[CM_PREFILL] +
			    dec * o->x[CM_DECODE] + ctx * o->x[CM_CONTEXT] +
			    quad * o->x[CM_PREFILL_SQ];
		o->ns = ns * (1.0 + noise_frac * noise(&seed));
	}
	return n;
}

/* Every coefficient of m within 2 % of want (the bound). */
static void expect_within_2pct(const struct costmodel *m,
			       const double want[CM_NTERMS], const char *what)
{
	for (int t = 0; t < CM_NTERMS; t++)
		cr_expect(fabs(m->coef[t] - want[t]) <= 0.02 * want[t],
			  "%s: %s %g, want %g", what, costmodel_term_name(t),
			  m->coef[t], want[t]);
}

/* 400 steps with 2 % noise: every term within 2 %, by the plain fit and
 * by the fit a trace gets (decode refit, drift windows, which find no
 * drift here), whether a decode token costs 4.4 times a prompt token or
 * a fifth of one: where batches of 1 to 16 tell the decode term apart,
 * its prior is one observation against hundreds (the decode refit takes
 * the cheap decode to 2% where the plain fit has it 3.6% off). */
Test(costmodel, fit_recovers_known_coefficients)
{
	static struct costmodel_obs obs[400];
	const double costs[2][CM_NTERMS] = { { 200e3, 9e3, 40e3, 90, 0 },
					     { 200e3, 40e3, 8e3, 90, 0 } };

	for (int k = 0; k < 2; k++) {
		const double *want = costs[k];
		uint32_t n = synth(obs, 400, want[CM_FIXED], want[CM_PREFILL],
				   want[CM_DECODE], want[CM_CONTEXT], 0, 0.02);
		struct costmodel m;

		cr_assert_eq(costmodel_fit(obs, n, &m), 0);
		cr_assert(m.fitted);
		if (k == 0)	/* the plain fit of the cheap decode: 3.6% */
			expect_within_2pct(&m, want, "costmodel_fit");
		cr_expect(!m.used[CM_PREFILL_SQ],
			  "quadratic term kept without need");
		cr_expect_gt(m.r2, 0.95);
		cr_assert_eq(costmodel_fit_steps(obs, n, &m), 0);
		cr_assert(m.fitted);
		expect_within_2pct(&m, want, "costmodel_fit_steps");
		/* no drift in the steps: window scales do not pay for
		   themselves */
		cr_expect_eq(m.drift_windows, 0, "drift %g..%g kept",
			     m.drift_min, m.drift_max);
		cr_expect(m.drift_min == 1 && m.drift_max == 1);
		cr_expect_gt(m.r2, 0.95);
	}
}

/* The same with a prompt-attention cost (1 % noise). */
Test(costmodel, quadratic_term_kept_when_the_data_needs_it)
{
	static struct costmodel_obs obs[400];
	const double want[CM_NTERMS] = { 100e3, 2e3, 40e3, 50, 80 };
	uint32_t n = synth(obs, 400, want[CM_FIXED], want[CM_PREFILL],
			   want[CM_DECODE], want[CM_CONTEXT],
			   want[CM_PREFILL_SQ], 0.01);
	struct costmodel m;

	cr_assert_eq(costmodel_fit(obs, n, &m), 0);
	cr_assert(m.fitted);
	cr_expect(m.used[CM_PREFILL_SQ]);
	expect_within_2pct(&m, want, "costmodel_fit");
}

/* A prompt-attention cost that adds only a little to the variance of step
 * times (long prefill steps dominate it either way) but is plainly there:
 * a fixed margin in R^2 would drop it, the information criterion keeps
 * it. */
Test(costmodel, small_but_real_quadratic_term_is_kept)
{
	static struct costmodel_obs obs[400];
	uint32_t n = synth(obs, 400, 100e3, 20e3, 40e3, 50, 6, 0.01);
	struct costmodel m;

	cr_assert_eq(costmodel_fit(obs, n, &m), 0);
	cr_assert(m.fitted);
	cr_expect(m.used[CM_PREFILL_SQ], "quadratic term dropped");
	cr_expect(fabs(m.coef[CM_PREFILL_SQ] - 6) / 6 < 0.25, "quad %g",
		  m.coef[CM_PREFILL_SQ]);
}

/*
 * Full batches whose mean context hardly moves from step to step: the
 * steps cannot tell a decode's cost per token from its cost per context
 * token (nor from the fixed cost), and a fit on them alone may charge a
 * decode nothing for itself or nothing for its context. The decode
 * prior (about the prefill term, which the prefill steps measure) settles
 * it: a decode token near a prompt token's cost, its context near its
 * true cost.
 */
Test(costmodel, decode_prior_settles_what_full_batches_cannot_tell)
{
	static struct costmodel_obs obs[300];
	const double fixed = 50e3, pre = 30e3, dec = 32e3, ctx = 60;
	unsigned seed = 3;

	for (uint32_t i = 0; i < 300; i++) {
		struct costmodel_obs *o = &obs[i];

		costmodel_obs_init(o, 0);
		for (uint32_t b = 0; b < 24; b++)
			costmodel_obs_decode(o, 300 + (i * 7 + b * 3) % 40);
		if (i % 4 == 0)
			costmodel_obs_prefill(o, 64 + (i * 13) % 256, 0);
		o->ns = (fixed + pre * o->x[CM_PREFILL] +
			 dec * o->x[CM_DECODE] + ctx * o->x[CM_CONTEXT]) *
			(1.0 + 0.02 * noise(&seed));
	}
	struct costmodel m;

	cr_assert_eq(costmodel_fit_steps(obs, 300, &m), 0);
	cr_assert(m.fitted);
	cr_expect(fabs(m.coef[CM_PREFILL] / pre - 1) < 0.05, "prefill %g",
		  m.coef[CM_PREFILL]);
	cr_expect(fabs(m.coef[CM_DECODE] / dec - 1) < 0.15, "decode %g, "
		  "want %g", m.coef[CM_DECODE], dec);
	cr_expect(fabs(m.coef[CM_CONTEXT] / ctx - 1) < 0.5, "context %g, "
		  "want %g", m.coef[CM_CONTEXT], ctx);
}

/*
 * Decode steps of a batch whose contexts grow through the run while the
 * host slows down by 40 % (a clock or cache drift): fitted as if the host
 * were steady, the slowdown reads as context cost. costmodel_fit_steps
 * takes it out and recovers the terms' relative costs, which is all that
 * attribution uses.
 */
Test(costmodel, fit_steps_takes_out_a_drift_of_the_host_s_speed)
{
	enum { N = 300 };
	static struct costmodel_obs obs[N];
	const double fixed = 50e3, pre = 10e3, dec = 60e3, ctx = 40;
	unsigned seed = 3;
	struct costmodel plain, m;

	for (uint32_t i = 0; i < N; i++) {
		struct costmodel_obs *o = &obs[i];
		uint32_t batch = 2 + (i * 7) % 9;

		costmodel_obs_init(o, 0);
		for (uint32_t b = 0; b < batch; b++)
			costmodel_obs_decode(o, 50 + 2 * i + (b * 53) % 200);
		if (i % 4 == 0)
			costmodel_obs_prefill(o, 20 + (i * 29) % 180, 0);
		double ns = fixed + pre * o->x[CM_PREFILL] +
			    dec * o->x[CM_DECODE] + ctx * o->x[CM_CONTEXT];
		double drift = 1.0 + 0.4 * i / N;
		o->ns = ns * drift * (1.0 + 0.01 * noise(&seed));
	}
	cr_assert_eq(costmodel_fit(obs, N, &plain), 0);
	cr_assert_eq(costmodel_fit_steps(obs, N, &m), 0);
	cr_assert(m.fitted);
	double want = ctx / dec;
	double got_plain = plain.coef[CM_CONTEXT] / plain.coef[CM_DECODE];
	double got = m.coef[CM_CONTEXT] / m.coef[CM_DECODE];
	/* the scenario has teeth: ignoring the drift misleads */
	cr_expect(fabs(got_plain / want - 1) > 0.2,
		  "plain fit context/decode %g, want %g", got_plain, want);
	cr_expect(fabs(got / want - 1) < 0.05, "context/decode %g, want %g",
		  got, want);
	cr_expect(fabs(m.coef[CM_PREFILL] / m.coef[CM_DECODE] /
		       (pre / dec) - 1) < 0.05, "prefill/decode %g, want %g",
		  m.coef[CM_PREFILL] / m.coef[CM_DECODE], pre / dec);
	cr_expect_eq(m.drift_windows, N / COSTMODEL_DRIFT_WINDOW);
	cr_expect(m.drift_min < 0.85 && m.drift_max > 1.15,
		  "drift %g..%g, the steps drifted 1.0..1.4 (mean 1.2)",
		  m.drift_min, m.drift_max);
}

Test(costmodel, coefficients_never_negative)
{
	/* Context has no effect and noise is large: plain least squares
	 * would give some terms negative values. */
	static struct costmodel_obs obs[60];
	uint32_t n = synth(obs, 60, 0, 5e3, 30e3, 0, 0, 0.3);
	struct costmodel m;

	cr_assert_eq(costmodel_fit(obs, n, &m), 0);
	cr_assert(m.fitted);
	for (int t = 0; t < CM_NTERMS; t++)
		cr_expect_geq(m.coef[t], 0.0, "%s = %g",
			      costmodel_term_name(t), m.coef[t]);
}

Test(costmodel, too_few_steps_is_not_fitted)
{
	struct costmodel_obs obs[4];
	struct costmodel m;
	uint32_t n = synth(obs, 4, 1, 1, 1, 1, 0, 0);

	cr_assert_eq(costmodel_fit(obs, n, &m), 0);
	cr_expect(!m.fitted);
}

/* Two requests in one step: a 100-token prefill and a decode. */
Test(attribution, step_time_split_by_model_cost)
{
	struct costmodel m = { .fitted = true };
	m.coef[CM_PREFILL] = 1000;
	m.coef[CM_DECODE] = 1000;
	struct attr_entry e[] = {
		{ .request = 0, .phase = ATTR_PREFILL, .tokens = 100 },
		{ .request = 1, .phase = ATTR_DECODE, .tokens = 1, .context = 10 },
	};
	struct attr_step s = { .busy_ns = 101000, .first = 0, .n = 2 };
	struct attr_request out[2];
	uint64_t un;

	cr_assert_eq(attribution_run(&s, 1, e, 2, 150000, &m, out, 2, &un),
		     ATTR_BY_MODEL);
	cr_expect_eq(out[0].prefill_ns, 100000);
	cr_expect_eq(out[0].decode_ns, 0);
	cr_expect_eq(out[1].decode_ns, 1000);
	cr_expect_eq(un, 49000);
}

Test(attribution, falls_back_to_tokens_without_a_fit)
{
	struct costmodel m = { .fitted = false };
	struct attr_entry e[] = {
		{ .request = 0, .phase = ATTR_PREFILL, .tokens = 3 },
		{ .request = 1, .phase = ATTR_DECODE, .tokens = 1 },
	};
	struct attr_step s = { .busy_ns = 400, .first = 0, .n = 2 };
	struct attr_request out[2];
	uint64_t un;

	cr_assert_eq(attribution_run(&s, 1, e, 2, 400, &m, out, 2, &un),
		     ATTR_BY_TOKENS);
	cr_expect_eq(out[0].prefill_ns, 300);
	cr_expect_eq(out[1].decode_ns, 100);
	cr_expect_eq(un, 0);
}

/* The conservation law, on many random steps with awkward numbers. */
Test(attribution, sums_add_up_exactly)
{
	enum { NS = 2000, NR = 97 };
	static struct attr_step steps[NS];
	static struct attr_entry ent[NS * 8];
	static struct attr_request out[NR];
	struct costmodel m = { .fitted = true };
	unsigned seed = 3;
	uint32_t ne = 0;
	uint64_t in_steps = 0;

	m.coef[CM_FIXED] = 123457;
	m.coef[CM_PREFILL] = 3.3;
	m.coef[CM_DECODE] = 777.7;
	m.coef[CM_CONTEXT] = 0.13;
	m.coef[CM_PREFILL_SQ] = 0.011;
	for (uint32_t i = 0; i < NS; i++) {
		uint32_t n = (i % 9 == 0) ? 0 : 1 + (uint32_t)((noise(&seed) + 1) * 3.5);
		steps[i].first = ne;
		steps[i].n = n;
		steps[i].busy_ns = 1 + (uint64_t)((noise(&seed) + 1) * 5e6);
		in_steps += steps[i].busy_ns;
		for (uint32_t j = 0; j < n; j++, ne++) {
			ent[ne].request = (i * 7 + j * 13) % NR;
			ent[ne].phase = j % 3 == 0 ? ATTR_PREFILL : ATTR_DECODE;
			ent[ne].tokens = ent[ne].phase == ATTR_PREFILL ?
				1 + (i * 31 + j) % 300 : 1;
			ent[ne].context = (i + j * 17) % 2000;
		}
	}
	uint64_t total = in_steps + 987654321, un, sum = 0;
	cr_assert_eq(attribution_run(steps, NS, ent, ne, total, &m, out, NR,
				     &un), ATTR_BY_MODEL);
	for (int r = 0; r < NR; r++)
		sum += out[r].prefill_ns + out[r].decode_ns;
	cr_expect_eq(sum + un, total);
	uint64_t empty = 0;
	for (uint32_t i = 0; i < NS; i++)
		if (!steps[i].n)
			empty += steps[i].busy_ns;
	cr_expect_eq(un, 987654321 + empty);
}

/* Four identical requests share 500 steps with a fifth, different one
 * (a prefill, then decodes at a longer context): the four get the same
 * time, to within the one nanosecond per step that integer rounding can
 * give one more than another; the longer one costs more; nothing is lost. */
Test(attribution, equal_requests_get_equal_shares)
{
	enum { NS = 500, EQ = 4 };
	static struct attr_step steps[NS];
	static struct attr_entry ent[NS * (EQ + 1)];
	struct attr_request out[EQ + 1];
	struct costmodel m = { .fitted = true };
	unsigned seed = 11;
	uint32_t ne = 0;
	uint64_t total = 0, un;

	m.coef[CM_FIXED] = 50000;
	m.coef[CM_PREFILL] = 900;
	m.coef[CM_DECODE] = 30000;
	m.coef[CM_CONTEXT] = 40;
	for (uint32_t i = 0; i < NS; i++) {
		steps[i].first = ne;
		steps[i].n = EQ + 1;
		steps[i].busy_ns = 300000 + (uint64_t)((noise(&seed) + 1) * 1e5);
		total += steps[i].busy_ns;
		ent[ne++] = (struct attr_entry){ .request = EQ,
			.phase = i ? ATTR_DECODE : ATTR_PREFILL,
			.tokens = i ? 1 : 700, .context = i ? 700 + i : 0 };
		for (uint32_t r = 0; r < EQ; r++)
			ent[ne++] = (struct attr_entry){ .request = r,
				.phase = i ? ATTR_DECODE : ATTR_PREFILL,
				.tokens = i ? 1 : 50, .context = i ? 50 + i : 0 };
	}
	cr_assert_eq(attribution_run(steps, NS, ent, ne, total, &m, out,
				     EQ + 1, &un), ATTR_BY_MODEL);
	uint64_t lo = UINT64_MAX, hi = 0, sum = 0;
	for (int r = 0; r < EQ; r++) {
		uint64_t t = out[r].prefill_ns + out[r].decode_ns;
		lo = t < lo ? t : lo;
		hi = t > hi ? t : hi;
		sum += t;
	}
	cr_expect_leq(hi - lo, NS, "equal requests got %llu..%llu ns",
		      (unsigned long long)lo, (unsigned long long)hi);
	cr_expect_gt(out[EQ].prefill_ns + out[EQ].decode_ns, hi,
		     "the longer request should cost more");
	cr_expect_eq(sum + out[EQ].prefill_ns + out[EQ].decode_ns + un, total);
	cr_expect_eq(un, 0);
}

Test(attribution, rejects_inconsistent_input)
{
	struct attr_entry e = { .request = 5, .phase = ATTR_DECODE, .tokens = 1 };
	struct attr_step s = { .busy_ns = 10, .first = 0, .n = 1 };
	struct attr_request out[2];
	uint64_t un;

	cr_expect_eq(attribution_run(&s, 1, &e, 1, 10, NULL, out, 2, &un),
		     -EINVAL);
	e.request = 1;
	cr_expect_eq(attribution_run(&s, 1, &e, 1, 9, NULL, out, 2, &un),
		     -EINVAL);
	s.n = 2;
	cr_expect_eq(attribution_run(&s, 1, &e, 1, 10, NULL, out, 2, &un),
		     -EINVAL);
}

struct ref_share {
	uint32_t entry;
	double frac;
};

static int ref_cmp(const void *a, const void *b)
{
	const struct ref_share *x = a, *y = b;

	if (x->frac != y->frac)
		return x->frac < y->frac ? 1 : -1;
	return x->entry < y->entry ? -1 : x->entry > y->entry;
}

/* The nanoseconds left after each entry's floor go one each to the
 * entries of the largest fractions, ties to the earlier entry: checked
 * entry by entry against that rule done with a full sort, on steps of
 * 1 to 400 entries whose weights tie often (few distinct values) and of
 * every leftover from none to all but one. */
Test(attribution, leftover_nanoseconds_go_by_largest_fraction_then_entry)
{
	static struct attr_entry ent[400];
	static struct attr_request out[400];
	static struct ref_share ref[400];
	static uint64_t want[400];
	unsigned seed = 5;
	int checked = 0;

	for (int trial = 0; trial < 600; trial++) {
		uint32_t n = 1 + (uint32_t)((noise(&seed) + 1) * 199.5);
		struct attr_step st = { .first = 0, .n = n };
		uint64_t un, given = 0;
		double total = 0;

		st.busy_ns = n * 3 + (uint64_t)((noise(&seed) + 1) * 5e5);
		for (uint32_t j = 0; j < n; j++) {
			/* one request an entry; 1 to 4 tokens: ties */
			ent[j] = (struct attr_entry){ .request = j,
				.phase = ATTR_PREFILL,
				.tokens = 1 + (uint32_t)((noise(&seed) + 1) *
							 (trial % 2 ? 1.9 : 150)) };
			total += ent[j].tokens;
		}
		for (uint32_t j = 0; j < n; j++) {
			double exact = (double)st.busy_ns * ent[j].tokens /
				       total;

			want[j] = (uint64_t)floor(exact);
			given += want[j];
			ref[j] = (struct ref_share){ j, exact - floor(exact) };
		}
		qsort(ref, n, sizeof(*ref), ref_cmp);
		for (uint32_t k = 0; given < st.busy_ns; k = (k + 1) % n) {
			want[ref[k].entry]++;
			given++;
		}
		cr_assert_eq(attribution_run(&st, 1, ent, n, st.busy_ns, NULL,
					     out, n, &un), ATTR_BY_TOKENS);
		for (uint32_t j = 0; j < n; j++)
			cr_assert_eq(out[j].prefill_ns, want[j],
				     "trial %d: entry %u of %u got %llu, the "
				     "rule gives %llu", trial, j, n,
				     (unsigned long long)out[j].prefill_ns,
				     (unsigned long long)want[j]);
		checked++;
	}
	cr_expect_eq(checked, 600);
}
