/*
 * The attribution report: conservation, sums per tenant and model, busy
 * and loaded cost, per-token prices, the fitted step model and the JSON
 * schema, on a synthetic engine whose work is known.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "../../user/report.h"
#include "steps_synth.h"

#define PRICE_H100	4.0
#define PRICE_DEFAULT	1.5
#define TAIL_NS		200000000ull	/* window beyond the last request */

static const struct report_price prices[] = {
	{ "NVIDIA H100", PRICE_H100 },
};

static struct sy_engine *run_engine(const struct sy_cfg *c,
				    const struct sy_req *r, uint32_t n)
{
	struct sy_engine *g = calloc(1, sizeof(*g));

	cr_assert_not_null(g);
	sy_run(g, c, r, n);
	return g;
}

static struct report_input input_of(const struct sy_engine *g,
				    const char *compute)
{
	return (struct report_input){
		.start_ns = g->start_ns, .end_ns = g->end_ns + TAIL_NS,
		.reqs = g->reqs, .nreqs = g->nreqs,
		.devs = g->devs, .ndevs = 2, .ivs = g->ivs, .nivs = g->nivs,
		.prices = prices, .nprices = 1,
		.default_usd_per_hour = PRICE_DEFAULT, .compute = compute,
	};
}

/* Build the report of the default engine over three requests. */
static struct sy_engine *three(struct report *rep, const struct sy_cfg *c,
			       const char *compute)
{
	struct sy_req r[SY_MAXR];
	struct sy_engine *g = run_engine(c, r, sy_three(r));
	struct report_input in = input_of(g, compute);

	cr_assert_eq(report_build(&in, rep), 0);
	return g;
}

static void done(struct sy_engine *g, struct report *rep)
{
	report_free(rep);
	sy_free(g);
	free(g);
}

Test(report, conservation_is_exact_to_the_nanosecond)
{
	struct sy_cfg c = sy_default();
	struct report rep;
	struct sy_engine *g = three(&rep, &c, NULL);
	uint64_t sum = 0;

	cr_expect_str_eq(rep.compute, "cupti");
	for (size_t i = 0; i < rep.nreqs; i++) {
		sum += rep.reqs[i].gpu_ns;
		cr_expect_eq(rep.reqs[i].gpu_ns, rep.reqs[i].prefill_ns +
						 rep.reqs[i].decode_ns);
		cr_expect_gt(rep.reqs[i].prefill_ns, 0);
		cr_expect_gt(rep.reqs[i].decode_ns, 0);
	}
	cr_expect_eq(rep.busy_ns, g->busy_ns);
	cr_expect_eq(sum + rep.unattributed_ns, rep.busy_ns);
	/* Every step served someone: nothing is left unattributed. */
	cr_expect_eq(rep.unattributed_ns, 0);
	done(g, &rep);
}

Test(report, work_before_any_request_is_unattributed)
{
	struct sy_cfg c = sy_default();
	struct sy_req r[SY_MAXR];
	struct sy_engine *g = run_engine(&c, r, sy_three(r));
	struct report rep;

	/* Warm-up kernel 5 ms before the first request. */
	sy_iv(g, &c, g->start_ns - 6000000, g->start_ns - 1000000,
	      TT_IV_KERNEL, 0, 0);
	struct report_input in = input_of(g, NULL);
	in.start_ns -= 10000000;
	cr_assert_eq(report_build(&in, &rep), 0);
	cr_expect_eq(rep.unattributed_ns, 5000000);
	uint64_t sum = 0;
	for (size_t i = 0; i < rep.nreqs; i++)
		sum += rep.reqs[i].gpu_ns;
	cr_expect_eq(sum + rep.unattributed_ns, g->busy_ns);
	done(g, &rep);
}

Test(report, tenant_and_model_sums_equal_their_requests)
{
	struct sy_cfg c = sy_default();
	struct report rep;
	struct sy_engine *g = three(&rep, &c, NULL);

	cr_assert_eq(rep.ntenants, 2);
	cr_assert_eq(rep.nmodels, 2);
	for (size_t t = 0; t < rep.ntenants; t++) {
		const struct report_group *grp = &rep.tenants[t];
		uint64_t gpu = 0, reqs = 0, p = 0, cpl = 0;
		double cost = 0, loaded = 0;
		for (size_t i = 0; i < rep.nreqs; i++) {
			const struct report_request *q = &rep.reqs[i];
			if (strcmp(q->req.tenant, grp->name))
				continue;
			reqs++;
			gpu += q->gpu_ns;
			p += q->req.prompt_tokens;
			cpl += q->req.completion_tokens;
			cost += q->cost_usd;
			loaded += q->cost_loaded_usd;
		}
		cr_expect_eq(grp->requests, reqs, "tenant %s", grp->name);
		cr_expect_eq(grp->gpu_ns, gpu, "tenant %s", grp->name);
		cr_expect_eq(grp->prompt_tokens, p);
		cr_expect_eq(grp->completion_tokens, cpl);
		cr_expect_float_eq(grp->cost_usd, cost, 1e-12);
		cr_expect_float_eq(grp->cost_loaded_usd, loaded, 1e-12);
	}
	const struct report_group *acme = &rep.tenants[0];
	cr_expect_str_eq(acme->name, "acme");
	cr_expect_eq(acme->requests, 2);
	cr_expect_eq(acme->prompt_tokens, 150);
	cr_expect_eq(acme->completion_tokens, 50);
	uint64_t models = rep.models[0].gpu_ns + rep.models[1].gpu_ns;
	cr_expect_eq(models + rep.unattributed_ns, rep.busy_ns);
	done(g, &rep);
}

Test(report, loaded_cost_over_tenants_is_price_times_window)
{
	struct sy_cfg c = sy_default();
	struct report rep;
	struct sy_engine *g = three(&rep, &c, NULL);
	double loaded = 0, busy = 0;

	for (size_t t = 0; t < rep.ntenants; t++) {
		loaded += rep.tenants[t].cost_loaded_usd;
		busy += rep.tenants[t].cost_usd;
	}
	double whole = PRICE_H100 * rep.window_ns / 3.6e12;
	cr_expect(fabs(loaded - whole) < 1e-9 * whole, "loaded %.12f, "
		  "price x window %.12f", loaded, whole);
	cr_expect(fabs(busy - PRICE_H100 * rep.busy_ns / 3.6e12) < 1e-12);
	cr_expect_lt(busy, loaded, "idle time costs something");
	done(g, &rep);
}

Test(report, usd_per_million_tokens_by_hand)
{
	struct sy_cfg c = sy_default();
	struct report rep;
	struct sy_engine *g = three(&rep, &c, NULL);

	for (size_t t = 0; t < rep.ntenants; t++) {
		const struct report_group *grp = &rep.tenants[t];
		uint64_t pre = 0, dec = 0, p = 0, cpl = 0;
		double busy = 0, loaded = 0;
		for (size_t i = 0; i < rep.nreqs; i++) {
			const struct report_request *q = &rep.reqs[i];
			if (strcmp(q->req.tenant, grp->name))
				continue;
			pre += q->prefill_ns;
			dec += q->decode_ns;
			p += q->req.prompt_tokens;
			cpl += q->req.completion_tokens;
			busy += q->cost_usd;
			loaded += q->cost_loaded_usd;
		}
		/* $ per ns x ns of prefill / prompt tokens x 1e6 */
		double want_p = PRICE_H100 / 3.6e12 * pre / p * 1e6;
		double want_c = PRICE_H100 / 3.6e12 * dec / cpl * 1e6;
		cr_expect(fabs(grp->usd_per_1m_prompt - want_p) < 1e-9 * want_p,
			  "%s prompt %.9f want %.9f", grp->name,
			  grp->usd_per_1m_prompt, want_p);
		cr_expect(fabs(grp->usd_per_1m_completion - want_c) <
				  1e-9 * want_c, "%s completion", grp->name);
		/* idle shared in: the tenant's loaded/busy ratio on both */
		cr_expect_gt(loaded, busy);
		cr_expect(fabs(grp->loaded_usd_per_1m_prompt -
			       want_p * loaded / busy) < 1e-9 * want_p,
			  "%s loaded prompt %.9f", grp->name,
			  grp->loaded_usd_per_1m_prompt);
		cr_expect(fabs(grp->loaded_usd_per_1m_completion -
			       want_c * loaded / busy) < 1e-9 * want_c,
			  "%s loaded completion", grp->name);
		/* device ms per token: prefill per prompt token, decode per
		 * completion token */
		cr_expect(fabs(grp->ms_per_prompt_token - pre / 1e6 / p) <
				  1e-9, "%s ms/prompt token %g", grp->name,
			  grp->ms_per_prompt_token);
		cr_expect(fabs(grp->ms_per_completion_token -
			       dec / 1e6 / cpl) < 1e-9,
			  "%s ms/completion token", grp->name);
	}
	done(g, &rep);
}

/* Many requests over many steps: enough to fit the step cost model. */
static uint32_t many(struct sy_req *r)
{
	for (uint32_t i = 0; i < 12; i++)
		r[i] = (struct sy_req){ SY_T0 + i * 17000000ull,
					40 + (i * 37) % 400, 10 + (i * 7) % 30,
					i % 3 ? "acme" : "bolt", "tiny" };
	return 12;
}

Test(report, step_model_recovers_the_engines_costs)
{
	struct sy_cfg c = sy_default();
	struct sy_req r[SY_MAXR];
	struct sy_engine *g = run_engine(&c, r, many(r));
	struct report_input in = input_of(g, NULL);
	struct report rep;

	cr_assert_eq(report_build(&in, &rep), 0);
	cr_assert_neq(rep.model_dev, SIZE_MAX);
	const struct report_device *d = &rep.devs[rep.model_dev];
	cr_assert(d->model.fitted);
	cr_expect_eq(d->basis, ATTR_BY_MODEL);
	cr_expect_gt(d->model.r2, 0.999);
	cr_expect(fabs(d->model.coef[CM_PREFILL] - c.prefill_ns) <
			  0.02 * c.prefill_ns, "prefill %g",
		  d->model.coef[CM_PREFILL]);
	cr_expect(fabs(d->model.coef[CM_DECODE] + d->model.coef[CM_FIXED] -
		       c.decode_ns - c.fixed_ns - SY_COPY_NS) <
			  0.05 * (c.decode_ns + c.fixed_ns),
		  "fixed %g + decode %g", d->model.coef[CM_FIXED],
		  d->model.coef[CM_DECODE]);
	done(g, &rep);
}

/*
 * A stream its client cut before the usage block: no prompt token count.
 * Its prompt's bytes give them, at the bytes per token of the requests
 * that had a usage block (2 here), and its prefill is charged to it, not
 * to the others of its step.
 */
Test(report, a_prompt_without_usage_is_estimated_from_its_bytes)
{
	struct sy_cfg c = sy_default();
	struct sy_req r[SY_MAXR];
	uint32_t n = many(r);
	struct sy_engine *g = run_engine(&c, r, n);
	struct report rep;
	int64_t prompt = g->reqs[3].prompt_tokens;

	for (uint32_t i = 0; i < n; i++)
		g->reqs[i].prompt_bytes =
			2 * (uint32_t)g->reqs[i].prompt_tokens;
	g->reqs[3].prompt_tokens = -1;
	g->reqs[3].tokens_source = TT_TOKENS_EVENTS;
	g->reqs[3].flags |= TT_REQF_NO_USAGE;
	struct report_input in = input_of(g, NULL);

	cr_assert_eq(report_build(&in, &rep), 0);
	cr_expect_eq(rep.prompts_estimated, 1);
	cr_expect_eq(rep.reqs[3].req.prompt_tokens, prompt);
	cr_expect(rep.reqs[3].req.flags & TT_REQF_PROMPT_EST);
	cr_expect(!(rep.reqs[2].req.flags & TT_REQF_PROMPT_EST));
	for (uint32_t i = 0; i < n; i++)
		cr_expect_lt(fabs(rep.reqs[i].gpu_ns / g->truth_ns[i] - 1),
			     0.01, "request %u: %llu ns, truth %.0f", i,
			     (unsigned long long)rep.reqs[i].gpu_ns,
			     g->truth_ns[i]);
	done(g, &rep);
}

/* Requests whose truth lies in their 90% interval; the mean relative
 * width into *width. */
static int held(const struct report *rep, const struct sy_engine *g,
		double *width)
{
	int in = 0;

	*width = 0;
	for (size_t i = 0; i < rep->nreqs; i++) {
		const struct report_request *q = &rep->reqs[i];

		cr_assert(q->interval, "request %zu has no interval", i);
		cr_expect_leq(q->gpu_ns_lo, q->gpu_ns);
		cr_expect_geq(q->gpu_ns_hi, q->gpu_ns);
		in += q->gpu_ns_lo <= g->truth_ns[i] &&
		      g->truth_ns[i] <= q->gpu_ns_hi;
		*width += (double)(q->gpu_ns_hi - q->gpu_ns_lo) / q->gpu_ns /
			  rep->nreqs;
	}
	return in;
}

Test(report, intervals_are_tight_on_exact_costs_and_hold_noisy_ones)
{
	struct sy_cfg c = sy_default();
	struct sy_req r[SY_MAXR];
	uint32_t n = many(r);
	struct sy_engine *g = run_engine(&c, r, n);
	struct report_input in = input_of(g, NULL);
	struct report rep;
	double exact, noisy;

	cr_assert_eq(report_build(&in, &rep), 0);
	/* costs the model has: every truth inside, and wider than the floor
	 * of -+1% only by how the context cost might belong to the batch */
	cr_expect_eq(held(&rep, g, &exact), (int)n);
	cr_expect(exact > 0.021 && exact < 0.1, "width %.4f on costs the "
		  "model has", exact);
	for (size_t i = 0; i < rep.nreqs; i++)
		cr_expect_lt(fabs(rep.reqs[i].gpu_ns / g->truth_ns[i] - 1), 0.01,
			     "request %zu: %llu ns, truth %.0f", i,
			     (unsigned long long)rep.reqs[i].gpu_ns,
			     g->truth_ns[i]);
	for (size_t i = 0; i < rep.ntenants; i++) {
		const struct report_group *t = &rep.tenants[i];

		cr_expect(t->interval);
		cr_expect_leq(t->gpu_ns_lo, t->gpu_ns);
		cr_expect_geq(t->gpu_ns_hi, t->gpu_ns);
	}
	done(g, &rep);
	/* each entry's cost off by up to 20%: wider, and holding the truth
	 * for most requests (12 of them: 9 is 75%) */
	c.noise = 0.2;
	g = run_engine(&c, r, n);
	in = input_of(g, NULL);
	cr_assert_eq(report_build(&in, &rep), 0);
	int got = held(&rep, g, &noisy);

	cr_log_info("noise 20%%: %d of %u truths inside, mean width %.1f%% "
		    "(exact costs: %.2f%%)", got, n, 100 * noisy, 100 * exact);
	cr_expect_geq(got, 9, "%d of %u truths in their 90%% interval", got,
		      n);
	cr_expect_gt(noisy, 3 * exact);
	cr_expect_lt(noisy, 0.5);
	done(g, &rep);
}

/* Requests alike, arriving together: every decode of a step has the
 * same context, so the context convention moves nothing, and on costs
 * the model has the interval is the floor of -+1%. */
Test(report, intervals_of_alike_requests_are_the_floor)
{
	struct sy_cfg c = sy_default();
	struct sy_req r[SY_MAXR];
	struct report rep;
	double width;

	for (uint32_t i = 0; i < 8; i++)
		r[i] = (struct sy_req){ SY_T0, 120, 24, i % 2 ? "acme" : "bolt",
					"tiny" };
	struct sy_engine *g = run_engine(&c, r, 8);
	struct report_input in = input_of(g, NULL);

	cr_assert_eq(report_build(&in, &rep), 0);
	cr_expect_eq(held(&rep, g, &width), 8);
	cr_expect(fabs(width - 0.02) < 1e-4, "width %.4f", width);
	done(g, &rep);
}

Test(report, cpu_source_attributes_on_cpu_time)
{
	struct sy_cfg c = sy_default();
	c.cpu = true;
	struct report rep;
	struct sy_engine *g = three(&rep, &c, "cpu");
	uint64_t sum = 0;

	cr_expect_str_eq(rep.compute, "cpu");
	const struct report_device *cpu = &rep.devs[0];
	cr_expect(cpu->attributed);
	cr_expect(!rep.devs[1].attributed);
	cr_expect_eq(cpu->steps.source, STEPS_FROM_TOKENS);
	cr_expect_eq(cpu->steps.nsteps, g->nsteps);
	cr_expect_eq(cpu->busy_ns, g->busy_ns);
	for (size_t i = 0; i < rep.nreqs; i++)
		sum += rep.reqs[i].gpu_ns;
	cr_expect_eq(sum + rep.unattributed_ns, cpu->busy_ns);
	/* With the CPU as source, its price is the default one. */
	cr_expect_float_eq(cpu->usd_per_hour, PRICE_DEFAULT, 1e-12);
	done(g, &rep);
}

Test(report, two_gpus_are_attributed_each)
{
	struct sy_cfg c = sy_default();
	struct sy_req r[SY_MAXR];
	struct sy_engine *g = run_engine(&c, r, sy_three(r));
	size_t n = g->nivs;
	struct tt_device devs[3] = { g->devs[0], g->devs[1], g->devs[1] };
	devs[2].id = 2;

	/* A second GPU of the same process doing the same work at half the
	 * length, no copies of its own: a tensor-parallel rank, whose steps
	 * are cut at the first GPU's copies. */
	for (size_t i = 0; i < n; i++) {
		struct tt_interval iv = g->ivs[i];
		if (iv.kind != TT_IV_KERNEL)
			continue;
		sy_iv(g, &c, iv.start_ns, iv.start_ns +
		      (iv.end_ns - iv.start_ns) / 2, TT_IV_KERNEL, 0, 0);
		g->ivs[g->nivs - 1].device = 2;
	}
	struct report_input in = input_of(g, NULL);
	in.devs = devs;
	in.ndevs = 3;
	struct report rep;
	cr_assert_eq(report_build(&in, &rep), 0);
	cr_expect(rep.devs[1].attributed && rep.devs[2].attributed);
	cr_expect_eq(rep.devs[2].steps.source, STEPS_FROM_COPIES);
	cr_expect_eq(rep.devs[2].steps_dev, SY_GPU);
	cr_expect_eq(rep.devs[2].steps.nsteps, rep.devs[1].steps.nsteps);
	cr_expect_eq(rep.busy_ns, g->busy_ns);
	uint64_t sum = 0;
	for (size_t i = 0; i < rep.nreqs; i++)
		sum += rep.reqs[i].gpu_ns;
	cr_expect_eq(sum + rep.unattributed_ns, rep.busy_ns);
	cr_expect_eq(rep.devs[1].attributed_ns + rep.devs[1].unattributed_ns,
		     rep.devs[1].busy_ns);
	cr_expect_eq(rep.devs[2].attributed_ns + rep.devs[2].unattributed_ns,
		     rep.devs[2].busy_ns);
	done(g, &rep);
}

static cJSON *need(const cJSON *o, const char *k)
{
	cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
	cr_expect_not_null(v, "field %s missing", k);
	return v;
}

static void need_all(const cJSON *o, const char *const *keys)
{
	for (; *keys; keys++)
		need(o, *keys);
}

static const char *const group_keys[] = {
	"name", "requests", "prompt_tokens", "completion_tokens", "gpu_ns",
	"cost_usd", "cost_loaded_usd", "usd_per_1m_prompt",
	"usd_per_1m_completion", "loaded_usd_per_1m_prompt",
	"loaded_usd_per_1m_completion", "gpu_ms_per_prompt_token",
	"gpu_ms_per_completion_token", NULL,
};

static const char *const request_keys[] = {
	"id", "pid", "tenant", "model", "api", "stream", "status",
	"arrival_ns", "first_token_ns", "end_ns", "ttft_ms", "itl_p50_ms",
	"itl_p99_ms", "token_events", "prompt_tokens", "completion_tokens",
	"tokens_source", "gpu_ns", "prefill_gpu_ns", "decode_gpu_ns",
	"cost_usd", "flags", NULL,
};

static const char *const model_keys[] = {
	"fixed_ms", "ms_per_prefill_token", "ms_per_decode_token",
	"ms_per_context_token", "ms_per_prefill_attention_unit",
	"terms",
	"r2", "steps", "drift_min", "drift_max", "drift_windows", "basis", NULL,
};

/* The streamed JSON (requests written into the shell's slot) is the same
 * object as the one built whole with cJSON. A tenant name with quotes
 * and the slot's own text must not fool the splice. */
Test(report, streamed_json_equals_the_whole_tree)
{
	struct sy_cfg c = sy_default();
	struct report rep;
	struct sy_engine *g = three(&rep, &c, NULL);
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	snprintf(rep.tenants[0].name, sizeof(rep.tenants[0].name),
		 ",\"requests\":[],\"tenants\":");
	snprintf(rep.reqs[0].req.tenant, sizeof(rep.reqs[0].req.tenant),
		 "a\"b");
	cr_assert_eq(report_write_json(&rep, f), 0);
	fclose(f);
	cJSON *streamed = cJSON_Parse(buf);
	cJSON *whole = report_json(&rep);
	cr_assert_not_null(streamed, "streamed JSON does not parse: %s", buf);
	cr_assert_not_null(whole);
	cr_expect_eq(cJSON_GetArraySize(cJSON_GetObjectItem(streamed,
							    "requests")),
		     (int)rep.nreqs);
	cr_expect(cJSON_Compare(streamed, whole, true),
		  "streamed and whole reports differ");
	cJSON_Delete(streamed);
	cJSON_Delete(whole);
	free(buf);
	done(g, &rep);
}

Test(report, json_parses_and_has_every_schema_field)
{
	struct sy_cfg c = sy_default();
	c.host_gap_ns = 4000000;	/* bubbles: a finding to check */
	struct report rep;
	struct sy_engine *g = three(&rep, &c, NULL);
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	const cJSON *x;

	cr_assert_eq(report_write_json(&rep, f), 0);
	fclose(f);
	cJSON *o = cJSON_Parse(buf);
	cr_assert_not_null(o, "report JSON does not parse");
	const char *const top[] = { "window_ns", "devices", "unattributed_ns",
		"requests", "tenants", "models", "cost_model", "findings",
		"losses", NULL };
	need_all(o, top);
	cr_expect_eq((uint64_t)need(o, "window_ns")->valuedouble,
		     rep.window_ns);
	cJSON_ArrayForEach(x, need(o, "devices")) {
		const char *const k[] = { "name", "kind", "busy_ns",
					  "idle_ns", NULL };
		need_all(x, k);
	}
	cr_expect_eq(cJSON_GetArraySize(need(o, "requests")), 3);
	cJSON_ArrayForEach(x, need(o, "requests"))
		need_all(x, request_keys);
	cJSON_ArrayForEach(x, need(o, "tenants"))
		need_all(x, group_keys);
	cJSON_ArrayForEach(x, need(o, "models"))
		need_all(x, group_keys);
	need_all(need(o, "cost_model"), model_keys);
	cr_expect_gt(cJSON_GetArraySize(need(o, "findings")), 0);
	cJSON_ArrayForEach(x, need(o, "findings")) {
		const char *const k[] = { "id", "severity", "summary",
					  "evidence", "action", NULL };
		need_all(x, k);
		cr_expect(cJSON_IsObject(need(x, "evidence")));
	}
	const char *const lk[] = { "events", "bytes", NULL };
	need_all(need(o, "losses"), lk);
	/* The JSON numbers are the report's numbers. */
	double sum = 0;
	cJSON_ArrayForEach(x, need(o, "requests"))
		sum += need(x, "gpu_ns")->valuedouble;
	cr_expect_eq((uint64_t)sum +
			     (uint64_t)need(o, "unattributed_ns")->valuedouble,
		     rep.busy_ns);
	cJSON_Delete(o);
	free(buf);
	done(g, &rep);
}

Test(report, text_names_tenants_cost_and_findings)
{
	struct sy_cfg c = sy_default();
	c.host_gap_ns = 4000000;
	struct report rep;
	struct sy_engine *g = three(&rep, &c, NULL);
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	cr_assert_eq(report_write_text(&rep, f), 0);
	fclose(f);
	cr_expect_not_null(strstr(buf, "acme"));
	cr_expect_not_null(strstr(buf, "bolt"));
	cr_expect_not_null(strstr(buf, "loaded"));
	cr_expect_not_null(strstr(buf, "idle_with_demand"));
	cr_expect_not_null(strstr(buf, "action:"));
	cr_expect_not_null(strstr(buf, "compute source cupti"));
	free(buf);
	done(g, &rep);
}

Test(report, too_few_steps_fall_back_to_tokens_and_say_so)
{
	struct sy_cfg c = sy_default();
	struct sy_req r[1] = { { SY_T0, 64, 3, "acme", "tiny" } };
	struct sy_engine *g = run_engine(&c, r, 1);
	struct report_input in = input_of(g, NULL);
	struct report rep;

	cr_assert_eq(report_build(&in, &rep), 0);
	cr_expect_eq(rep.devs[rep.model_dev].basis, ATTR_BY_TOKENS);
	cJSON *o = report_json(&rep);
	cJSON *m = cJSON_GetObjectItem(o, "cost_model");
	cr_expect_str_eq(cJSON_GetObjectItem(m, "basis")->valuestring,
			 "tokens");
	cr_expect(cJSON_IsNull(cJSON_GetObjectItem(m, "r2")));
	/* a split by tokens has no interval */
	cJSON *q = cJSON_GetArrayItem(cJSON_GetObjectItem(o, "requests"), 0);
	cJSON *t = cJSON_GetArrayItem(cJSON_GetObjectItem(o, "tenants"), 0);

	cr_expect(cJSON_IsNull(cJSON_GetObjectItem(q, "gpu_ns_lo")));
	cr_expect(cJSON_IsNull(cJSON_GetObjectItem(q, "gpu_ns_hi")));
	cr_expect(cJSON_IsNull(cJSON_GetObjectItem(t, "gpu_ns_lo")));
	cr_expect_eq(rep.reqs[0].gpu_ns + rep.unattributed_ns, g->busy_ns);
	cJSON_Delete(o);
	done(g, &rep);
}

Test(report, reversed_window_is_refused)
{
	struct report_input in = { .start_ns = 10, .end_ns = 5 };
	struct report rep;

	cr_expect_eq(report_build(&in, &rep), -EINVAL);
	report_free(&rep);
}

/*
 * On the CPU, a thread that only writes the tokens (the server's network
 * thread: 15 us per write, a few per cent of the engine's time) is not
 * part of the forward passes: with it or without it, every request gets
 * the same time, and its time is unattributed (it stays in busy time).
 */
Test(report, cpu_writer_thread_time_is_unattributed_not_charged_to_steps)
{
	struct sy_cfg c = sy_default();
	struct sy_req r[SY_MAXR];
	struct sy_engine *g;
	struct report one, two;
	uint64_t writer = 0, sum = 0;

	c.cpu = true;
	g = run_engine(&c, r, many(r));
	struct report_input in = input_of(g, "cpu");
	cr_assert_eq(report_build(&in, &one), 0);
	size_t n = g->nivs;
	for (uint32_t i = 0; i < g->nreqs; i++)
		for (uint32_t j = 0; j < g->reqs[i].token_ns_len; j++) {
			uint64_t w = g->tok[i][j];
			sy_iv(g, &c, w, w + 15000, TT_IV_CPU, 0, 0);
			g->ivs[g->nivs - 1].tid = 43;
			writer += 15000;
		}
	cr_assert_gt(g->nivs, n);
	in = input_of(g, "cpu");
	cr_assert_eq(report_build(&in, &two), 0);
	cr_assert_gt(two.devs[0].busy_ns, one.devs[0].busy_ns);
	cr_expect_leq(two.devs[0].busy_ns - one.devs[0].busy_ns, writer);
	for (size_t i = 0; i < two.nreqs; i++) {
		cr_expect_eq(two.reqs[i].gpu_ns, one.reqs[i].gpu_ns,
			     "request %zu: %llu ns with the writer thread, "
			     "%llu without", i,
			     (unsigned long long)two.reqs[i].gpu_ns,
			     (unsigned long long)one.reqs[i].gpu_ns);
		sum += two.reqs[i].gpu_ns;
	}
	cr_expect_eq(two.unattributed_ns - one.unattributed_ns,
		     two.devs[0].busy_ns - one.devs[0].busy_ns);
	cr_expect_eq(sum + two.unattributed_ns, two.devs[0].busy_ns);
	report_free(&one);
	report_free(&two);
	sy_free(g);
	free(g);
}

/* ---- loaded costs as marks (report_mark_loaded, report_copy_marked) ---- */

/* n requests marked over two devices at $1 and $2 per busy ns, the k-th
 * with k ns on the first and 2k on the second and $0.5 already shared,
 * each written as "<pad>[MARK]" with pad bytes before, into a file; the
 * copy's numbers read back. */
static int marks_round_trip(int n, size_t pad, FILE *out, bool corrupt)
{
	static const double usd[2] = { 1, 2 };
	struct report_marks m = { .side = tmpfile(), .ndevs = 2 };
	FILE *in = tmpfile();
	char *fill = malloc(pad + 1);

	cr_assert(m.side && in && fill);
	memset(fill, 'x', pad);
	fill[pad] = 0;
	for (int k = 1; k <= n; k++) {
		uint64_t ns[2] = { (uint64_t)k, 2 * (uint64_t)k };
		struct report_request q = { .dev_ns = ns,
					    .cost_loaded_usd = 0.5 };

		cr_assert_eq(report_mark_loaded(&m, &q), 0);
		cr_assert_eq(q.loaded_mark, (uint64_t)k);
		fprintf(in, "%s[", fill);
		report_put_loaded(in, &q);
		fputs("]\n", in);
	}
	if (corrupt)
		fprintf(in, "[%c%d%c]\n", REPORT_LOADED_MARK, n + 1,
			REPORT_LOADED_MARK);
	m.usd_per_ns = usd;
	int err = report_copy_marked(&m, in, out);

	fclose(in);
	fclose(m.side);
	free(fill);
	return err;
}

Test(report, loaded_cost_marks_are_replaced_across_buffer_edges)
{
	/* pads that put marks across the copy's 64 KiB reads */
	static const size_t pads[] = { 0, 7, 4093, 65530 };

	for (size_t p = 0; p < sizeof(pads) / sizeof(pads[0]); p++) {
		FILE *out = tmpfile();
		char *line = NULL;
		size_t cap = 0;
		int k = 0;

		cr_assert_eq(marks_round_trip(40, pads[p], out, false), 0);
		rewind(out);
		while (getline(&line, &cap, out) > 0) {
			char *b = strrchr(line, '[');
			double v;

			k++;
			cr_assert(b && sscanf(b, "[%lf]", &v) == 1,
				  "pad %zu: line %d has no figure", pads[p], k);
			/* $0.5 + k ns * $1 + 2k ns * $2 */
			cr_expect_float_eq(v, 0.5 + 5.0 * k, 1e-9,
					   "pad %zu: line %d: %g", pads[p], k, v);
			cr_expect_eq(strlen(line), pads[p] + strlen(b),
				     "pad %zu: bytes lost", pads[p]);
		}
		cr_expect_eq(k, 40);
		free(line);
		fclose(out);
	}
}

Test(report, a_mark_that_was_never_given_is_an_error)
{
	FILE *out = tmpfile();

	cr_assert(out);
	cr_expect_eq(marks_round_trip(3, 0, out, true), -EPROTO);
	fclose(out);
	/* and a file with marks copied without them */
	FILE *in = tmpfile();
	out = tmpfile();
	fprintf(in, "{\"cost_loaded_usd\":%c1%c}", REPORT_LOADED_MARK,
		REPORT_LOADED_MARK);
	cr_expect_eq(report_copy_marked(NULL, in, out), -EPROTO);
	fclose(in);
	fclose(out);
}
