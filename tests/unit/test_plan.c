/*
 * plan.c's simulation of a continuous-batching replica, on cost models
 * whose answers can be worked out by hand: one client at a time, a full
 * batch, the batch limit, chunked prefill, write delays, open loops that
 * outrun the replica, and the same answer for the same seed.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <math.h>

#include "../../user/plan.h"

/* Every request: prompt 100, completion 10. Steps: 1 ms fixed, 10 us per
 * prompt token, 100 us per decode; no noise, no host time. */
static struct plan_req reqs[1] = { { 100, 10, 0 } };

static struct plan_mix mix(void)
{
	struct plan_mix m = { .reqs = reqs, .nreqs = 1 };

	m.model.fitted = true;
	m.model.coef[CM_FIXED] = 1e6;
	m.model.coef[CM_PREFILL] = 1e4;
	m.model.coef[CM_DECODE] = 1e5;
	return m;
}

static struct plan_result sim(const struct plan_mix *m, struct plan_load l)
{
	struct plan_result r;

	cr_assert_eq(plan_simulate(m, &l, &r), 0);
	return r;
}

Test(plan, one_client_waits_for_nothing)
{
	struct plan_mix m = mix();
	struct plan_result r = sim(&m, (struct plan_load){
		.concurrency = 1, .max_batch = 8, .requests = 200 });
	/* a request: a prefill step of 2 ms, 9 decode steps of 1.1 ms */
	double per_req_s = (2e6 + 9 * 1.1e6) / 1e9;

	cr_expect_float_eq(r.requests_per_s, 1 / per_req_s, 0.01 / per_req_s);
	cr_expect_float_eq(r.throughput_tok_s, 10 / per_req_s,
			   0.1 / per_req_s);
	cr_expect_float_eq(r.ttft_ms.p50, 2.0, 1e-6);
	cr_expect_float_eq(r.itl_ms.p99, 1.1, 1e-6);
	cr_expect_float_eq(r.mean_batch, 1.0, 1e-9);
	cr_expect_float_eq(r.busy_fraction, 1.0, 1e-9, "busy %.12f", r.busy_fraction);
}

Test(plan, the_batch_limit_caps_the_batch_and_queues_the_rest)
{
	struct plan_mix m = mix();
	struct plan_result four = sim(&m, (struct plan_load){
		.concurrency = 4, .max_batch = 4, .requests = 400 });
	struct plan_result many = sim(&m, (struct plan_load){
		.concurrency = 16, .max_batch = 4, .requests = 400 });

	cr_expect_leq(many.mean_batch, 4.0);
	cr_expect_float_eq(many.throughput_tok_s, four.throughput_tok_s,
			   0.02 * four.throughput_tok_s,
			   "beyond the limit more clients only wait");
	cr_expect_gt(many.ttft_ms.p50, 3 * four.ttft_ms.p50);
}

Test(plan, chunked_prefill_spreads_a_prompt_over_steps)
{
	struct plan_mix m = mix();
	struct plan_result r = sim(&m, (struct plan_load){
		.concurrency = 1, .max_batch = 8, .prefill_chunk = 25,
		.requests = 100 });

	/* four chunk steps of 1 + 0.25 ms before the first token */
	cr_expect_float_eq(r.ttft_ms.p50, 5.0, 1e-6);
}

Test(plan, tokens_reach_the_client_a_write_delay_later)
{
	static const double delay[1] = { 300000 };
	struct plan_mix m = mix();

	m.write_ns = delay;
	m.nwrite = 1;
	struct plan_result r = sim(&m, (struct plan_load){
		.concurrency = 1, .max_batch = 8, .requests = 100 });

	cr_expect_float_eq(r.ttft_ms.p50, 2.3, 1e-6);
	cr_expect_float_eq(r.itl_ms.p50, 1.1, 1e-6, "every token is as late");
}

Test(plan, an_open_loop_beyond_capacity_is_saturated)
{
	struct plan_mix m = mix();
	struct plan_result ok = sim(&m, (struct plan_load){
		.loop = PLAN_OPEN, .rate = 50, .max_batch = 8,
		.requests = 500 });
	struct plan_result over = sim(&m, (struct plan_load){
		.loop = PLAN_OPEN, .rate = 5000, .max_batch = 8,
		.requests = 500 });

	cr_expect(!ok.saturated);
	cr_expect_float_eq(ok.requests_per_s, 50, 5);
	cr_expect(over.saturated);
}

Test(plan, the_same_seed_gives_the_same_plan)
{
	struct plan_mix m = mix();
	struct plan_load l = { .loop = PLAN_OPEN, .rate = 200, .max_batch = 8,
			       .requests = 300, .seed = 9 };

	m.model.coef[CM_CONTEXT] = 100;
	m.noise_sd = 0.05;
	struct plan_result a = sim(&m, l), b = sim(&m, l);

	cr_expect_eq(a.throughput_tok_s, b.throughput_tok_s);
	cr_expect_eq(a.ttft_ms.p99, b.ttft_ms.p99);
}

Test(plan, no_model_or_no_mix_is_refused)
{
	struct plan_mix m = mix();
	struct plan_load l = { .concurrency = 1, .max_batch = 1 };
	struct plan_result r;

	m.model.fitted = false;
	cr_expect_eq(plan_simulate(&m, &l, &r), -EINVAL);
	m = mix();
	m.nreqs = 0;
	cr_expect_eq(plan_simulate(&m, &l, &r), -EINVAL);
}

/* Prompt 100, completion 10: a prefill step of 2 ms, then 9 of 1.1 ms. */
#define REQ_NS	(2e6 + 9 * 1.1e6)

Test(plan, a_replay_of_spaced_requests_waits_for_nothing)
{
	struct plan_mix m = mix();
	struct plan_req a[3] = { { 100, 10, 5000000000ull },
				 { 100, 10, 5100000000ull },
				 { 100, 10, 5200000000ull } };
	struct plan_result r = sim(&m, (struct plan_load){
		.loop = PLAN_REPLAY, .arrivals = a, .narrivals = 3,
		.speed = 1, .max_batch = 8 });

	cr_expect_eq(r.completed, 3);
	cr_expect_float_eq(r.ttft_ms.p99, 2.0, 1e-6);
	/* 30 tokens from the first arrival (times from any origin) to the
	 * last token, 200 ms + a request later */
	cr_expect_float_eq(r.throughput_tok_s, 30 / ((200e6 + REQ_NS) / 1e9),
			   1e-6);
	cr_expect_float_eq(r.offered_rate, 10.0, 1e-9);
}

Test(plan, a_replay_of_a_burst_queues_in_arrival_order)
{
	struct plan_mix m = mix();
	struct plan_req a[3] = { { 100, 10, 7 }, { 100, 10, 7 },
				 { 100, 10, 7 } };
	struct plan_result r = sim(&m, (struct plan_load){
		.loop = PLAN_REPLAY, .arrivals = a, .narrivals = 3,
		.speed = 1, .max_batch = 1 });

	/* one at a time: first tokens at 2, 2 + 11.9 and 2 + 2 * 11.9 ms */
	cr_expect_float_eq(r.ttft_ms.p50, 2 + REQ_NS / 1e6, 1e-6);
	cr_expect_float_eq(r.ttft_ms.p99, 2 + 2 * REQ_NS / 1e6, 1e-6);
}

Test(plan, a_replay_at_twice_the_speed_halves_the_gaps)
{
	struct plan_mix m = mix();
	struct plan_req a[2] = { { 100, 10, 0 }, { 100, 10, 200000000ull } };
	struct plan_result r = sim(&m, (struct plan_load){
		.loop = PLAN_REPLAY, .arrivals = a, .narrivals = 2,
		.speed = 2, .max_batch = 8 });

	cr_expect_float_eq(r.throughput_tok_s, 20 / ((100e6 + REQ_NS) / 1e9),
			   1e-6);
}

Test(plan, a_replay_out_of_order_or_empty_is_refused)
{
	struct plan_mix m = mix();
	struct plan_req a[2] = { { 100, 10, 9 }, { 100, 10, 3 } };
	struct plan_result r;

	cr_expect_eq(plan_simulate(&m, &(struct plan_load){
		.loop = PLAN_REPLAY, .arrivals = a, .narrivals = 2,
		.speed = 1, .max_batch = 8 }, &r), -EINVAL);
	cr_expect_eq(plan_simulate(&m, &(struct plan_load){
		.loop = PLAN_REPLAY, .arrivals = a, .narrivals = 0,
		.speed = 1, .max_batch = 8 }, &r), -EINVAL);
	cr_expect_eq(plan_simulate(&m, &(struct plan_load){
		.loop = PLAN_REPLAY, .arrivals = a, .narrivals = 1,
		.speed = 0, .max_batch = 8 }, &r), -EINVAL);
}

Test(plan, the_hosts_jitter_is_drawn_into_every_step)
{
	struct plan_mix m = mix();
	static const double resid[1] = { 1e6 };	/* always 1 ms more */

	m.host_ns = 0.5e6;
	m.host_resid_ns = resid;
	m.nhost_resid = 1;
	struct plan_result r = sim(&m, (struct plan_load){
		.concurrency = 1, .max_batch = 8, .requests = 100 });

	/* the prefill step and 1.5 ms of host time */
	cr_expect_float_eq(r.ttft_ms.p50, 3.5, 1e-6);
	cr_expect_float_eq(r.itl_ms.p50, 2.6, 1e-6);
}

/* A token budget a step: the decodes' tokens first, the prompts share
 * the rest in order. */
Test(plan, a_token_budget_shares_a_step_between_decodes_and_prompts)
{
	struct plan_mix m = mix();
	struct plan_result one = sim(&m, (struct plan_load){
		.concurrency = 1, .max_batch = 8, .prefill_budget = 30,
		.requests = 100 });
	struct plan_result big = sim(&m, (struct plan_load){
		.concurrency = 1, .max_batch = 8, .prefill_budget = 1000,
		.requests = 100 });

	/* alone: 30 + 30 + 30 + 10 prompt tokens, four steps of 1 ms
	 * fixed and 1 ms of prefill in all to the first token */
	cr_expect_float_eq(one.ttft_ms.p50, 5.0, 1e-6, "%f", one.ttft_ms.p50);
	/* a budget above the prompt is no limit */
	cr_expect_float_eq(big.ttft_ms.p50, 2.0, 1e-6, "%f", big.ttft_ms.p50);

	/* four clients: a prompt shares its steps' budget with the others'
	 * decodes, so it takes more steps (each with its fixed cost) */
	struct plan_result four = sim(&m, (struct plan_load){
		.concurrency = 4, .max_batch = 4, .prefill_budget = 30,
		.requests = 400 });
	struct plan_result chunk = sim(&m, (struct plan_load){
		.concurrency = 4, .max_batch = 4, .prefill_chunk = 30,
		.requests = 400 });

	cr_expect_lt(four.throughput_tok_s, chunk.throughput_tok_s,
		     "budget %.1f, chunks of the budget %.1f tokens/s",
		     four.throughput_tok_s, chunk.throughput_tok_s);
}
