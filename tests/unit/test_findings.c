/*
 * Findings: each one appears when a synthetic engine is made to show it,
 * with the numbers it was made with, and stays silent when it is not.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../../user/findings.h"
#include "../../user/report.h"
#include "steps_synth.h"

#define PRICE	4.0

struct run {
	struct sy_engine *g;
	struct report rep;
};

/* Run the engine and build its report over [first arrival, end + tail]. */
static void run(struct run *x, const struct sy_cfg *c, const struct sy_req *r,
		uint32_t n, uint64_t tail_ns, uint32_t max_batch)
{
	static const struct report_price p[] = { { "NVIDIA H100", PRICE } };

	x->g = calloc(1, sizeof(*x->g));
	cr_assert_not_null(x->g);
	sy_run(x->g, c, r, n);
	struct report_input in = {
		.start_ns = x->g->start_ns, .end_ns = x->g->end_ns + tail_ns,
		.reqs = x->g->reqs, .nreqs = x->g->nreqs,
		.devs = x->g->devs, .ndevs = 2, .ivs = x->g->ivs,
		.nivs = x->g->nivs, .prices = p, .nprices = 1,
		.default_usd_per_hour = PRICE, .max_batch = max_batch,
	};
	cr_assert_eq(report_build(&in, &x->rep), 0);
}

static void run_three(struct run *x, const struct sy_cfg *c,
		      uint64_t tail_ns, uint32_t max_batch)
{
	struct sy_req r[SY_MAXR];
	run(x, c, r, sy_three(r), tail_ns, max_batch);
}

static void done(struct run *x)
{
	report_free(&x->rep);
	sy_free(x->g);
	free(x->g);
}

static const struct finding *get(const struct run *x, const char *id)
{
	return findings_get(&x->rep.findings, id);
}

static double ev(const struct finding *f, const char *k)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(f->evidence, k);
	cr_assert(cJSON_IsNumber(v), "%s: evidence %s missing", f->id, k);
	return v->valuedouble;
}

/* Requests of the same shape, two tenants, in pairs arriving together. */
static uint32_t pairs(struct sy_req *r)
{
	for (uint32_t i = 0; i < 4; i++)
		r[i] = (struct sy_req){ SY_T0 + (i / 2) * 30000000ull, 100, 20,
					i % 2 ? "bolt" : "acme", "tiny" };
	return 4;
}

/* Eight requests arriving one every 15 ms. */
static uint32_t staggered(struct sy_req *r)
{
	for (uint32_t i = 0; i < 8; i++)
		r[i] = (struct sy_req){ SY_T0 + i * 15000000ull, 300, 25,
					"acme", "tiny" };
	return 8;
}

Test(findings, idle_with_demand_when_the_host_keeps_the_gpu_waiting)
{
	struct sy_cfg c = sy_default();
	c.host_gap_ns = 4000000;
	struct run x;
	run_three(&x, &c, 0, 0);

	const struct finding *f = get(&x, "idle_with_demand");
	cr_assert_not_null(f);
	/* Every step is followed by a 4 ms gap while requests wait. */
	double want = 0;
	for (uint32_t k = 0; k + 1 < x.g->nsteps; k++)
		want += x.g->steps[k + 1].end_ns - x.g->steps[k].end_ns -
			x.g->steps[k + 1].busy_ns;
	/* and after the last step until the last response ends. */
	want += x.g->end_ns - x.g->steps[x.g->nsteps - 1].end_ns;
	cr_expect_float_eq(ev(f, "host_wait_ns"), want, 1);
	cr_expect_eq(ev(f, "kernel_wait_ns"), 0);
	cr_expect_eq(ev(f, "other_ns"), 0);
	cr_expect_float_eq(ev(f, "fraction_of_wall"),
			   want / x.rep.window_ns, 1e-9);
	cr_expect_neq(f->severity, FINDINGS_INFO, "a third of the wall");
	cr_expect_not_null(strstr(f->summary, "%"));
	done(&x);
}

Test(findings, no_idle_with_demand_when_steps_follow_each_other)
{
	struct sy_cfg c = sy_default();
	c.host_gap_ns = 30000;
	struct run x;
	run_three(&x, &c, 0, 0);

	cr_expect_null(get(&x, "idle_with_demand"));
	done(&x);
}

Test(findings, short_gaps_between_kernels_are_kernel_wait)
{
	struct sy_cfg c = sy_default();
	c.host_gap_ns = 30000;
	c.kernels = 500;
	c.kernel_gap_ns = 8000;
	struct run x;
	run_three(&x, &c, 0, 0);

	const struct finding *f = get(&x, "idle_with_demand");
	cr_assert_not_null(f);
	double want = (double)x.g->nsteps * 499 * 8000;
	cr_expect_float_eq(ev(f, "kernel_wait_ns"), want, 1);
	cr_expect_gt(ev(f, "kernel_wait_ns"), ev(f, "host_wait_ns"));
	cr_expect_not_null(strstr(f->action, "CUDA graphs"));
	done(&x);
}

Test(findings, idle_on_the_cpu_source_is_host_wait)
{
	struct sy_cfg c = sy_default();
	c.cpu = true;
	c.host_gap_ns = 4000000;
	struct run x;
	run_three(&x, &c, 0, 0);

	const struct finding *f = get(&x, "idle_with_demand");
	cr_assert_not_null(f);
	cr_expect_gt(ev(f, "host_wait_ns"), 0);
	cr_expect_eq(ev(f, "kernel_wait_ns"), 0);
	cr_expect_eq(ev(f, "other_ns"), 0);
	done(&x);
}

Test(findings, idle_without_demand_prices_the_empty_time)
{
	struct sy_cfg c = sy_default();
	struct run x;
	run_three(&x, &c, 500000000, 0);

	const struct finding *f = get(&x, "idle_without_demand");
	cr_assert_not_null(f);
	/* The 500 ms after the last response. */
	double idle = 500e6;
	double frac = idle / x.rep.window_ns;
	cr_expect_float_eq(ev(f, "fraction_of_wall"), frac, 1e-9);
	cr_expect_float_eq(ev(f, "usd_per_hour"), frac * PRICE, 1e-9);
	done(&x);
}

Test(findings, no_idle_without_demand_when_requests_fill_the_window)
{
	struct sy_cfg c = sy_default();
	struct run x;
	run_three(&x, &c, 0, 0);

	cr_expect_null(get(&x, "idle_without_demand"));
	done(&x);
}

Test(findings, low_batch_occupancy_against_the_configured_batch)
{
	struct sy_cfg c = sy_default();
	struct run x;
	run_three(&x, &c, 0, 16);

	const struct finding *f = get(&x, "low_batch_occupancy");
	cr_assert_not_null(f);
	cr_expect_eq(ev(f, "max_batch"), 16);
	cr_expect_eq(ev(f, "max_batch_seen"), 3);
	cr_expect_lt(ev(f, "mean_batch"), 3);
	/* Batch 16 at the engine's true costs, mean context as found. */
	double ctx = ev(f, "mean_context");
	double step = c.fixed_ns + SY_COPY_NS +
		      16 * (c.decode_ns + c.context_ns * ctx);
	cr_expect(fabs(ev(f, "predicted_tok_s") - 16 / (step / 1e9)) <
			  0.01 * 16 / (step / 1e9), "predicted %g",
		  ev(f, "predicted_tok_s"));
	cr_expect_gt(ev(f, "predicted_tok_s"), 1.5 * ev(f, "achieved_tok_s"));
	done(&x);
}

Test(findings, no_low_batch_occupancy_when_the_batch_is_full)
{
	struct sy_cfg c = sy_default();
	struct sy_req r[SY_MAXR];
	struct run x;

	for (uint32_t i = 0; i < 4; i++)
		r[i] = (struct sy_req){ SY_T0, 100, 20, "acme", "tiny" };
	run(&x, &c, r, 4, 0, 4);
	cr_expect_null(get(&x, "low_batch_occupancy"));
	done(&x);
}

Test(findings, launch_bound_with_many_short_kernels)
{
	struct sy_cfg c = sy_default();
	c.kernels = 500;
	c.kernel_gap_ns = 8000;
	struct run x;
	run_three(&x, &c, 0, 0);

	const struct finding *f = get(&x, "launch_bound");
	cr_assert_not_null(f);
	cr_expect_lt(ev(f, "median_kernel_us"), 20);
	cr_expect_eq(ev(f, "kernels"), x.g->nsteps * 500.0);
	cr_expect_float_eq(ev(f, "gap_ns"), x.g->nsteps * 499.0 * 8000, 1);
	cr_expect_gt(ev(f, "gap_share"), 0.2);
	done(&x);
}

Test(findings, not_launch_bound_with_one_kernel_per_step)
{
	struct sy_cfg c = sy_default();
	struct run x;
	run_three(&x, &c, 0, 0);

	cr_expect_null(get(&x, "launch_bound"));
	done(&x);
}

Test(findings, prefill_interference_when_prefills_are_long)
{
	struct sy_cfg c = sy_default();
	struct sy_req r[SY_MAXR];
	c.prefill_ns = 100e3;		/* 300 tokens: 30 ms */
	struct run x;
	run(&x, &c, r, staggered(r), 0, 0);

	const struct finding *f = get(&x, "prefill_interference");
	cr_assert_not_null(f);
	cr_expect_gt(ev(f, "ratio"), 3);
	cr_expect_gt(ev(f, "itl_with_prefill_ms"), 30);
	cr_expect_lt(ev(f, "itl_without_prefill_ms"), 12);
	uint32_t with = 0;
	for (uint32_t k = 0; k < x.g->nsteps; k++)
		for (uint32_t i = 0; i < x.g->steps[k].n; i++)
			if (x.g->steps[k].e[i].phase == ATTR_PREFILL) {
				with++;
				break;
			}
	cr_expect_eq(ev(f, "steps_with_prefill"), with);
	done(&x);
}

Test(findings, no_prefill_interference_when_prefill_is_cheap)
{
	struct sy_cfg c = sy_default();
	struct sy_req r[SY_MAXR];
	c.prefill_ns = 0;
	struct run x;
	run(&x, &c, r, staggered(r), 0, 0);

	cr_expect_null(get(&x, "prefill_interference"));
	done(&x);
}

Test(findings, tenant_skew_when_gpu_share_and_token_share_differ)
{
	struct sy_cfg c = sy_default();
	struct run x;
	run_three(&x, &c, 0, 0);

	/* bolt: long prompt, short completion: cheap tokens. */
	const struct finding *f = get(&x, "tenant_skew");
	cr_assert_not_null(f);
	const cJSON *t = cJSON_GetObjectItem(f->evidence, "tenant");
	cr_assert(cJSON_IsString(t));
	const struct report_group *g = &x.rep.tenants[1];
	cr_assert_str_eq(g->name, "bolt");
	double gs = (double)g->gpu_ns / (x.rep.busy_ns - x.rep.unattributed_ns);
	double ts = (g->prompt_tokens + g->completion_tokens) / 515.0;
	cr_expect_float_eq(ev(f, "gpu_share"), gs, 1e-9);
	cr_expect_float_eq(ev(f, "token_share"), ts, 1e-9);
	cr_expect_lt(ev(f, "ratio"), 1 / 1.5);
	done(&x);
}

Test(findings, no_tenant_skew_when_tenants_send_the_same_requests)
{
	struct sy_cfg c = sy_default();
	struct sy_req r[SY_MAXR];
	struct run x;
	run(&x, &c, r, pairs(r), 0, 0);

	cr_expect_null(get(&x, "tenant_skew"));
	done(&x);
}

Test(findings, copy_overhead_when_copies_take_a_third_of_busy_time)
{
	struct sy_cfg c = sy_default();
	c.h2d_ns = 3000000;
	struct run x;
	run_three(&x, &c, 0, 0);

	const struct finding *f = get(&x, "copy_overhead");
	cr_assert_not_null(f);
	double copies = x.g->nsteps * (3000000.0 + SY_COPY_NS);
	cr_expect_float_eq(ev(f, "copy_ns"), copies, 1);
	cr_expect_float_eq(ev(f, "htod_ns"), x.g->nsteps * 3000000.0, 1);
	cr_expect_float_eq(ev(f, "share"), copies / x.rep.busy_ns, 1e-9);
	cr_expect_eq(f->severity, FINDINGS_WARNING);
	done(&x);
}

Test(findings, no_copy_overhead_with_only_the_small_token_copies)
{
	struct sy_cfg c = sy_default();
	struct run x;
	run_three(&x, &c, 0, 0);

	cr_expect_null(get(&x, "copy_overhead"));
	done(&x);
}

/* Copies on a second stream that run while kernels do cost no busy time:
 * as long as the kernels take, nothing to say about them. */
Test(findings, no_copy_overhead_for_copies_hidden_under_kernels)
{
	static const struct report_price p[] = { { "NVIDIA H100", PRICE } };
	struct sy_cfg c = sy_default();
	struct sy_req r[SY_MAXR];
	struct sy_engine *g = calloc(1, sizeof(*g));
	struct report rep;
	uint64_t hidden = 0, busy;

	cr_assert_not_null(g);
	sy_run(g, &c, r, sy_three(r));
	busy = g->busy_ns;
	for (size_t i = 0, n = g->nivs; i < n; i++) {
		struct tt_interval k = g->ivs[i];
		uint64_t len = k.end_ns - k.start_ns;

		if (k.kind != TT_IV_KERNEL || len < 10)
			continue;
		sy_iv(g, &c, k.start_ns + len / 10, k.end_ns - len / 10,
		      TT_IV_MEMCPY, TT_COPY_DTOD, 8 << 20);
		g->ivs[g->nivs - 1].stream = 13;
		hidden += len - 2 * (len / 10);
	}
	cr_assert_gt(hidden, busy / 2, "the copies would be half the busy "
		     "time if counted");
	struct report_input in = {
		.start_ns = g->start_ns, .end_ns = g->end_ns,
		.reqs = g->reqs, .nreqs = g->nreqs, .devs = g->devs,
		.ndevs = 2, .ivs = g->ivs, .nivs = g->nivs, .prices = p,
		.nprices = 1, .default_usd_per_hour = PRICE,
	};
	cr_assert_eq(report_build(&in, &rep), 0);
	cr_expect_null(findings_get(&rep.findings, "copy_overhead"));
	report_free(&rep);
	sy_free(g);
	free(g);
}

Test(findings, nothing_to_say_about_an_empty_trace)
{
	struct findings_input in = { .start_ns = 0, .end_ns = 1000 };
	struct findings_list l;

	cr_assert_eq(findings_compute(&in, &l), 0);
	cr_expect_eq(l.n, 0);
	findings_free(&l);
}

/* ---- prefix reuse --------------------------------------------------------- */

static struct findings_list reuse_findings(uint64_t prompt, uint64_t repeated,
					   bool known, uint64_t cached)
{
	struct findings_input in = {
		.start_ns = 0, .end_ns = 1000000000,
		.prompts = { .prompt_tokens = prompt,
			     .repeated_tokens = repeated,
			     .cache_known = known, .cached_tokens = cached },
	};
	struct findings_list l;

	cr_assert_eq(findings_compute(&in, &l), 0);
	return l;
}

Test(findings, repeated_prefixes_with_no_cache_seen_are_named)
{
	struct findings_list l = reuse_findings(100000, 60000, false, 0);
	const struct finding *f = findings_get(&l, "prefix_reuse_low");

	cr_assert_not_null(f);
	cr_expect_eq(f->severity, FINDINGS_WARNING);
	cr_expect(strstr(f->summary, "60.0%"), "%s", f->summary);
	cr_expect_null(cJSON_GetObjectItem(f->evidence, "cached_prompt_tokens"));
	findings_free(&l);
}

Test(findings, a_cache_that_misses_what_repeats_is_named)
{
	struct findings_list l = reuse_findings(100000, 30000, true, 9000);
	const struct finding *f = findings_get(&l, "prefix_reuse_low");

	cr_assert_not_null(f);
	cr_expect_eq(f->severity, FINDINGS_INFO);
	cr_expect_float_eq(cJSON_GetObjectItem(f->evidence,
			   "reuse_of_repeated")->valuedouble, 0.3, 1e-9);
	findings_free(&l);
}

Test(findings, no_reuse_finding_when_the_cache_serves_or_little_repeats)
{
	struct findings_list a = reuse_findings(100000, 60000, true, 50000);
	struct findings_list b = reuse_findings(100000, 10000, false, 0);

	cr_expect_null(findings_get(&a, "prefix_reuse_low"));
	cr_expect_null(findings_get(&b, "prefix_reuse_low"));
	findings_free(&a);
	findings_free(&b);
}
