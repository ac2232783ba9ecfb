/*
 * Steps of a continuous-batching engine, cut from its device work (the
 * copy that closes each step) or from the bursts of token writes, checked
 * against a synthetic engine whose steps are known.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>

#include "../../user/steps.h"
#include "steps_synth.h"

static struct sy_engine *engine(const struct sy_cfg *c)
{
	struct sy_req r[SY_MAXR];
	struct sy_engine *g = calloc(1, sizeof(*g));

	cr_assert_not_null(g);
	sy_run(g, c, r, sy_three(r));
	return g;
}

static struct steps_input input_of(const struct sy_engine *g,
				   const struct sy_cfg *c,
				   enum steps_source src)
{
	return (struct steps_input){
		.reqs = g->reqs, .nreqs = g->nreqs, .ivs = g->ivs,
		.nivs = g->nivs, .device = c->cpu ? 0 : SY_GPU,
		.start_ns = g->start_ns, .end_ns = g->end_ns, .source = src,
	};
}

/* Every found step's entries equal the engine's, in request order. */
static void expect_entries(const struct sy_engine *g,
			   const struct steps_result *r)
{
	cr_assert_eq(r->nsteps, g->nsteps);
	for (uint32_t k = 0; k < r->nsteps; k++) {
		const struct steps_step *s = &r->steps[k];
		const struct sy_step *t = &g->steps[k];

		cr_assert_eq(s->n, t->n, "step %u: batch %u, engine %u", k,
			     s->n, t->n);
		for (uint32_t i = 0; i < s->n; i++) {
			const struct attr_entry *e = &r->entries[s->first + i];
			cr_expect_eq(e->request, t->e[i].request, "step %u", k);
			cr_expect_eq(e->phase, t->e[i].phase, "step %u", k);
			cr_expect_eq(e->tokens, t->e[i].tokens, "step %u", k);
			cr_expect_eq(e->context, t->e[i].context, "step %u", k);
		}
	}
}

Test(steps, copies_cut_exactly_the_steps_the_engine_made)
{
	struct sy_cfg c = sy_default();
	struct sy_engine *g = engine(&c);
	struct steps_input in = input_of(g, &c, STEPS_AUTO);
	struct steps_result r;

	cr_assert_eq(steps_find(&in, &r), 0);
	cr_expect_eq(r.source, STEPS_FROM_COPIES);
	cr_assert_eq(r.nsteps, g->nsteps, "found %u steps, made %u",
		     r.nsteps, g->nsteps);
	uint64_t sum = 0;
	for (uint32_t k = 0; k < r.nsteps; k++) {
		cr_expect_eq(r.steps[k].start_ns, g->steps[k].start_ns,
			     "step %u start", k);
		cr_expect_eq(r.steps[k].end_ns, g->steps[k].end_ns,
			     "step %u end", k);
		cr_expect_eq(r.steps[k].busy_ns, g->steps[k].busy_ns,
			     "step %u busy", k);
		cr_expect_eq(r.attr[k].busy_ns, r.steps[k].busy_ns);
		sum += r.steps[k].busy_ns;
	}
	cr_expect_eq(sum, g->busy_ns);
	cr_expect_eq(r.busy_ns, g->busy_ns);
	cr_expect_eq(r.bursts, g->nsteps, "token bursts cross-check");
	steps_free(&r);
	sy_free(g);
	free(g);
}

Test(steps, entries_are_prefill_then_decodes_at_growing_context)
{
	struct sy_cfg c = sy_default();
	struct sy_engine *g = engine(&c);
	struct steps_input in = input_of(g, &c, STEPS_AUTO);
	struct steps_result r;

	cr_assert_eq(steps_find(&in, &r), 0);
	expect_entries(g, &r);
	/* Request 1 (300 prompt tokens) prefilled in one step, at context 0. */
	uint32_t prefills = 0;
	for (uint32_t i = 0; i < r.nentries; i++)
		if (r.entries[i].request == 1 &&
		    r.entries[i].phase == ATTR_PREFILL) {
			prefills++;
			cr_expect_eq(r.entries[i].tokens, 300);
			cr_expect_eq(r.entries[i].context, 0);
			cr_expect_eq(r.entry_prev_ns[i], 0);
		}
	cr_expect_eq(prefills, 1);
	steps_free(&r);
	sy_free(g);
	free(g);
}

Test(steps, token_bursts_cut_the_same_steps_on_the_cpu)
{
	struct sy_cfg c = sy_default();
	c.cpu = true;
	struct sy_engine *g = engine(&c);
	struct steps_input in = input_of(g, &c, STEPS_AUTO);
	struct steps_result r;

	cr_assert_eq(steps_find(&in, &r), 0);
	cr_expect_eq(r.source, STEPS_FROM_TOKENS, "no copies on a CPU");
	expect_entries(g, &r);
	for (uint32_t k = 0; k < r.nsteps; k++)
		cr_expect_eq(r.steps[k].end_ns, g->steps[k].end_ns +
			     SY_TOKEN_DELAY, "step %u ends at its burst's "
			     "first write", k);
	cr_expect_geq(r.burst_gap_ns, 200000);
	steps_free(&r);
	sy_free(g);
	free(g);
}

Test(steps, token_bursts_agree_with_copies_on_a_gpu)
{
	struct sy_cfg c = sy_default();
	struct sy_engine *g = engine(&c);
	struct steps_input in = input_of(g, &c, STEPS_FROM_TOKENS);
	struct steps_result r;

	cr_assert_eq(steps_find(&in, &r), 0);
	cr_expect_eq(r.source, STEPS_FROM_TOKENS);
	expect_entries(g, &r);
	steps_free(&r);
	sy_free(g);
	free(g);
}

Test(steps, back_to_back_copies_close_one_step)
{
	struct sy_cfg c = sy_default();
	struct sy_engine *g = engine(&c);
	size_t n = g->nivs;

	/* A second small copy (logprobs) right after each step's ids. */
	for (size_t i = 0; i < n; i++) {
		struct tt_interval iv = g->ivs[i];
		if (iv.kind != TT_IV_MEMCPY || iv.copy_kind != TT_COPY_DTOH)
			continue;
		iv.start_ns = iv.end_ns + 500;
		iv.end_ns = iv.start_ns + 1000;
		sy_iv(g, &c, iv.start_ns, iv.end_ns, TT_IV_MEMCPY,
		      TT_COPY_DTOH, 128);
	}
	struct steps_input in = input_of(g, &c, STEPS_AUTO);
	struct steps_result r;
	cr_assert_eq(steps_find(&in, &r), 0);
	expect_entries(g, &r);
	for (uint32_t k = 0; k < r.nsteps; k++)
		cr_expect_eq(r.steps[k].end_ns,
			     g->steps[k].end_ns + 500 + 1000);
	steps_free(&r);
	sy_free(g);
	free(g);
}

Test(steps, requests_beyond_the_batch_limit_are_counted_waiting)
{
	struct sy_cfg c = sy_default();
	c.max_batch = 1;
	struct sy_engine *g = engine(&c);
	struct steps_input in = input_of(g, &c, STEPS_AUTO);
	struct steps_result r;
	uint32_t waited = 0;

	cr_assert_eq(steps_find(&in, &r), 0);
	expect_entries(g, &r);
	for (uint32_t k = 0; k < r.nsteps; k++) {
		const struct steps_step *s = &r.steps[k];
		uint32_t flight = 0;
		/* In flight: arrived by the step's end, not gone before
		 * its start. */
		for (uint32_t i = 0; i < g->nreqs; i++)
			flight += g->reqs[i].arrival_ns <= s->end_ns &&
				  g->reqs[i].end_ns >= s->start_ns;
		cr_expect_eq(s->n, 1);
		cr_expect_eq(s->waiting, flight - s->n, "step %u", k);
		cr_expect_geq(s->waiting, g->steps[k].waiting,
			      "step %u: waiting %u, engine %u", k,
			      s->waiting, g->steps[k].waiting);
		waited += s->waiting;
	}
	cr_expect_gt(waited, 0, "the engine made requests wait");
	steps_free(&r);
	sy_free(g);
	free(g);
}

Test(steps, overlapping_streams_are_counted_once)
{
	struct sy_cfg c = sy_default();
	struct sy_engine *g = engine(&c);
	uint64_t busy = g->busy_ns;
	const struct sy_step *s = &g->steps[2];

	/* A kernel on another stream inside step 2's existing work. */
	sy_iv(g, &c, s->end_ns - SY_COPY_NS - 2000000,
	      s->end_ns - SY_COPY_NS - 1000000, TT_IV_KERNEL, 0, 0);
	struct steps_input in = input_of(g, &c, STEPS_AUTO);
	struct steps_result r;
	cr_assert_eq(steps_find(&in, &r), 0);
	cr_expect_eq(r.busy_ns, busy);
	cr_expect_eq(r.steps[2].busy_ns, s->busy_ns);
	steps_free(&r);
	sy_free(g);
	free(g);
}

Test(steps, union_merges_and_clips_to_the_window)
{
	struct tt_interval iv[] = {
		{ .start_ns = 50, .end_ns = 150, .device = 1 },
		{ .start_ns = 100, .end_ns = 200, .device = 1 },
		{ .start_ns = 300, .end_ns = 400, .device = 1 },
		{ .start_ns = 120, .end_ns = 900, .device = 2 },
		{ .start_ns = 390, .end_ns = 1000, .device = 1 },
	};
	struct steps_span *s;
	size_t n;
	uint64_t busy;

	cr_assert_eq(steps_union(iv, 5, 1, 100, 500, &s, &n, &busy), 0);
	cr_assert_eq(n, 2);
	cr_expect_eq(s[0].start_ns, 100);
	cr_expect_eq(s[0].end_ns, 200);
	cr_expect_eq(s[1].start_ns, 300);
	cr_expect_eq(s[1].end_ns, 500);
	cr_expect_eq(busy, 300);
	cr_expect_eq(steps_busy_in(s, n, 150, 350), 100);
	free(s);
}

Test(steps, no_tokens_and_no_copies_give_no_steps)
{
	struct tt_interval iv = { .start_ns = 10, .end_ns = 20, .device = 1 };
	struct steps_input in = { .ivs = &iv, .nivs = 1, .device = 1,
				  .start_ns = 0, .end_ns = 100 };
	struct steps_result r;

	cr_assert_eq(steps_find(&in, &r), 0);
	cr_expect_eq(r.nsteps, 0);
	cr_expect_eq(r.nentries, 0);
	cr_expect_eq(r.busy_ns, 10);
	steps_free(&r);
}

Test(steps, reversed_window_is_refused)
{
	struct steps_input in = { .start_ns = 100, .end_ns = 10 };
	struct steps_result r;

	cr_expect_eq(steps_find(&in, &r), -EINVAL);
	steps_free(&r);
}

Test(steps, unstreamed_response_is_placed_in_the_steps_before_it)
{
	struct sy_cfg c = sy_default();
	struct sy_engine *g = engine(&c);
	struct tt_request *q = &g->reqs[1];

	/* Not streamed: one response after the last step, no token times. */
	q->stream = false;
	q->first_token_ns = q->token_ns[q->token_ns_len - 1];
	q->token_ns = NULL;
	q->token_ns_len = 0;
	q->token_events = 0;
	struct steps_input in = input_of(g, &c, STEPS_AUTO);
	struct steps_result r;
	cr_assert_eq(steps_find(&in, &r), 0);
	cr_expect_eq(r.estimated, 1);
	expect_entries(g, &r);
	steps_free(&r);
	sy_free(g);
	free(g);
}

Test(steps, too_few_copies_for_the_bursts_fall_back_to_tokens)
{
	struct sy_cfg c = sy_default();
	struct sy_engine *g = engine(&c);
	size_t kept = 0, m = 0;

	/* Only the first two steps end with a small copy. */
	for (size_t i = 0; i < g->nivs; i++) {
		if (g->ivs[i].kind == TT_IV_MEMCPY && kept++ >= 2)
			continue;
		g->ivs[m++] = g->ivs[i];
	}
	g->nivs = m;
	struct steps_input in = input_of(g, &c, STEPS_AUTO);
	struct steps_result r;
	cr_assert_eq(steps_find(&in, &r), 0);
	cr_expect_eq(r.source, STEPS_FROM_TOKENS);
	expect_entries(g, &r);
	steps_free(&r);
	sy_free(g);
	free(g);
}

/* The union against a bitmap of the same random intervals. */
Test(steps, union_of_random_intervals_matches_a_bitmap)
{
	enum { W = 4096, N = 2000 };
	static unsigned char bit[W];
	static struct tt_interval iv[N];
	struct steps_span *spans;
	size_t nspans;
	uint64_t busy, want = 0, sum = 0;

	srand(7);
	for (int i = 0; i < N; i++) {
		uint64_t s = rand() % W, len = rand() % 40;
		uint64_t e = s + len > W ? W : s + len;

		iv[i] = (struct tt_interval){ .start_ns = s, .end_ns = e,
					      .device = i % 5 ? 1 : 2 };
		if (iv[i].device != 1)
			continue;
		for (uint64_t t = s; t < e; t++)
			bit[t] = 1;
	}
	for (int t = 0; t < W; t++)
		want += bit[t];
	cr_assert_eq(steps_union(iv, N, 1, 0, W, &spans, &nspans, &busy), 0);
	cr_expect_eq(busy, want);
	for (size_t i = 0; i < nspans; i++) {
		sum += spans[i].end_ns - spans[i].start_ns;
		if (i)
			cr_expect_gt(spans[i].start_ns, spans[i - 1].end_ns,
				     "spans must be sorted and disjoint");
	}
	cr_expect_eq(sum, busy);
	free(spans);
}

/*
 * A server whose network thread writes the tokens while the engine already
 * runs the next step: a step's writes come 1.5 ms late, 80 us before the
 * next step's; another's are spread 200 us apart and end 50 us before the
 * next step's. No gap tells these steps apart; but each request gets one
 * token per step, so a request writing again starts the next step whatever
 * the gaps say; and a step ends at the first write of its burst, which
 * follows the step's end by the writer's lag, not at the last one.
 */
#define LW_REQS		3
#define LW_STEPS	12
#define LW_STEP_NS	1000000ull

static uint64_t lw_write(uint32_t k, uint32_t j, uint64_t end)
{
	static const uint64_t lag[3] = { 50000, 1500000, 600000 };
	static const uint64_t spread[3] = { 20000, 10000, 200000 };

	return end + lag[k % 3] + j * spread[k % 3];
}

/* The engine of the late writes from t0: its steps' CPU intervals, its
 * step function's windows (w, when not NULL) and its requests. */
static void lw_engine(uint64_t t0, uint64_t tok[LW_REQS][LW_STEPS],
		      struct tt_request *q, struct tt_interval *iv,
		      struct steps_span *w)
{
	for (uint32_t k = 0; k < LW_STEPS; k++) {
		uint64_t end = t0 + (k + 1) * LW_STEP_NS;
		iv[k] = (struct tt_interval){ .start_ns = end - LW_STEP_NS,
					      .end_ns = end - 10000,
					      .kind = TT_IV_CPU };
		if (w)
			w[k] = (struct steps_span){ end - LW_STEP_NS,
						    end - 10000 };
		for (uint32_t j = 0; j < LW_REQS; j++)
			tok[j][k] = lw_write(k, j, end);
	}
	for (uint32_t j = 0; j < LW_REQS; j++) {
		snprintf(q[j].id, sizeof(q[j].id), "lw-%u", j);
		q[j].arrival_ns = t0 - 1000;
		q[j].token_ns = tok[j];
		q[j].token_ns_len = LW_STEPS;
		q[j].first_token_ns = tok[j][0];
		q[j].end_ns = tok[j][LW_STEPS - 1] + 1000;
		q[j].prompt_tokens = 40;
		q[j].completion_tokens = LW_STEPS;
	}
}

Test(steps, late_and_spread_token_writes_still_cut_one_step_per_token)
{
	static uint64_t tok[LW_REQS][LW_STEPS];
	struct tt_request q[LW_REQS] = { 0 };
	struct tt_interval iv[LW_STEPS];
	uint64_t t0 = 1000000000ull;
	struct steps_result r;

	lw_engine(t0, tok, q, iv, NULL);
	struct steps_input in = {
		.reqs = q, .nreqs = LW_REQS, .ivs = iv, .nivs = LW_STEPS,
		.start_ns = t0 - 2000, .end_ns = t0 + 20 * LW_STEP_NS,
		.source = STEPS_FROM_TOKENS,
	};

	cr_assert_eq(steps_find(&in, &r), 0);
	cr_assert_eq(r.nsteps, LW_STEPS, "%u steps, the engine ran %u",
		     r.nsteps, LW_STEPS);
	for (uint32_t k = 0; k < LW_STEPS; k++) {
		const struct steps_step *s = &r.steps[k];
		cr_expect_eq(s->n, LW_REQS, "step %u serves %u", k, s->n);
		cr_expect_eq(s->end_ns, tok[0][k], "step %u ends at its "
			     "first write", k);
		for (uint32_t i = 0; i < s->n; i++)
			cr_expect_eq(r.entries[s->first + i].phase,
				     k ? ATTR_DECODE : ATTR_PREFILL,
				     "step %u entry %u", k, i);
	}
	steps_free(&r);
}

/*
 * Prompts prefilled 128 tokens a step: four long ones arrive at once, so
 * the first steps hold nothing but first chunks and no token follows
 * them; the others come while steps run (some in the host's gap between
 * steps, which the next step takes). 384 and 640 tokens admitted at once
 * wait exactly P / 128 steps, which gives the chunk size.
 */
static uint32_t chunked_mix(struct sy_req *r)
{
	static const uint32_t prompt[12] = { 384, 640, 500, 300, 40, 60,
					     700, 90, 35, 450, 80, 55 };
	static const uint64_t at_ms[12] = { 0, 0, 0, 0, 9, 17, 30, 31, 52,
					    70, 71, 95 };

	for (uint32_t i = 0; i < 12; i++)
		r[i] = (struct sy_req){ SY_T0 + at_ms[i] * 1000000 + 1000 * (i > 3) * i,
					prompt[i], 6 + i % 5,
					prompt[i] > 200 ? "long" : "short",
					"tiny" };
	return 12;
}

static struct sy_engine *chunked_engine(struct sy_cfg *c, bool cpu)
{
	struct sy_req r[SY_MAXR];
	struct sy_engine *g = calloc(1, sizeof(*g));

	cr_assert_not_null(g);
	*c = sy_default();
	c->chunk = 128;
	c->h2d_ns = 30000;
	c->cpu = cpu;
	sy_run(g, c, r, chunked_mix(r));
	cr_assert_eq(g->steps[0].last_token_ns, 0, "a step of chunks alone");
	return g;
}

Test(steps, chunked_prefill_found_and_placed_in_the_steps_before_it)
{
	struct sy_cfg c;
	struct sy_engine *g = chunked_engine(&c, false);
	struct steps_input in = input_of(g, &c, STEPS_AUTO);
	struct steps_result r;

	cr_assert_eq(steps_find(&in, &r), 0);
	cr_expect_eq(r.source, STEPS_FROM_COPIES);
	cr_expect_eq(r.chunk_tokens, 128, "chunks of %u", r.chunk_tokens);
	expect_entries(g, &r);
	steps_free(&r);
	/* told not to, it places each prompt whole with its first token */
	in.no_chunks = true;
	cr_assert_eq(steps_find(&in, &r), 0);
	cr_expect_eq(r.chunk_tokens, 0);
	for (uint32_t i = 0; i < r.nentries; i++)
		if (r.entries[i].phase == ATTR_PREFILL)
			cr_expect_eq(r.entries[i].tokens,
				     g->reqs[r.entries[i].request].prompt_tokens);
	steps_free(&r);
	sy_free(g);
	free(g);
}

/*
 * The same engine on the CPU with its steps cut from the token writes:
 * the first steps, of chunks alone, are not seen (no token follows them)
 * and their time falls in the first step that writes. By the end of
 * every step cut, each request has prefilled as many prompt tokens as
 * the engine had: the unseen chunks are in its first placed step, not
 * piled on its last.
 */
Test(steps, chunked_prefill_cut_from_tokens_holds_the_unseen_chunks)
{
	static const uint32_t prompt[SY_MAXR] = { 384, 640, 500, 300, 256, 60,
						  512, 90, 384, 700, 640, 80,
						  450, 768, 35, 300 };
	struct sy_cfg c = sy_default();
	struct sy_req q[SY_MAXR];
	struct sy_engine *g = calloc(1, sizeof(*g));

	cr_assert_not_null(g);
	for (uint32_t i = 0; i < SY_MAXR; i++)
		q[i] = (struct sy_req){ SY_T0 + (i > 3) * (9 + 11 * i) *
					1000000ull, prompt[i], 6 + i % 5, "t",
					"tiny" };
	c.chunk = 128;
	c.cpu = true;
	sy_run(g, &c, q, SY_MAXR);
	cr_assert_eq(g->steps[0].last_token_ns, 0, "a step of chunks alone");
	struct steps_input in = input_of(g, &c, STEPS_FROM_TOKENS);
	struct steps_result r;
	uint64_t got[SY_MAXR] = { 0 }, want[SY_MAXR] = { 0 };
	uint32_t e = 0;

	cr_assert_eq(steps_find(&in, &r), 0);
	cr_expect_eq(r.source, STEPS_FROM_TOKENS);
	cr_expect_eq(r.chunk_tokens, 128, "chunks of %u", r.chunk_tokens);
	cr_expect_lt(r.nsteps, g->nsteps, "the steps of chunks alone seen");
	for (uint32_t k = 0; k < r.nsteps; k++) {
		const struct steps_step *s = &r.steps[k];

		for (uint32_t i = s->first; i < s->first + s->n; i++)
			if (r.entries[i].phase == ATTR_PREFILL)
				got[r.entries[i].request] +=
					r.entries[i].tokens;
		for (; e < g->nsteps && g->steps[e].end_ns <= s->end_ns; e++)
			for (uint32_t i = 0; i < g->steps[e].n; i++)
				if (g->steps[e].e[i].phase == ATTR_PREFILL)
					want[g->steps[e].e[i].request] +=
						g->steps[e].e[i].tokens;
		for (uint32_t j = 0; j < g->nreqs; j++)
			cr_expect_eq(got[j], want[j], "step %u (to %llu ns): "
				     "request %u prefilled %llu tokens, the "
				     "engine %llu", k,
				     (unsigned long long)s->end_ns, j,
				     (unsigned long long)got[j],
				     (unsigned long long)want[j]);
	}
	steps_free(&r);
	sy_free(g);
	free(g);
}

/* The step probe's windows: each step function call [start, end), the
 * engine's own steps; tokens written after it returned. */
static struct steps_span *probe_of(const struct sy_engine *g)
{
	struct steps_span *w = calloc(g->nsteps ? g->nsteps : 1, sizeof(*w));

	cr_assert_not_null(w);
	for (uint32_t k = 0; k < g->nsteps; k++)
		w[k] = (struct steps_span){ g->steps[k].start_ns,
					    g->steps[k].end_ns };
	return w;
}

/* The steps of engine g (run as c) cut with its step function's windows
 * (*w) at hand, as src asks. */
static void probe_cut(const struct sy_engine *g, const struct sy_cfg *c,
		      enum steps_source src, struct steps_span **w,
		      struct steps_result *r)
{
	struct steps_input in = input_of(g, c, src);

	*w = probe_of(g);
	in.probe = *w;
	in.nprobe = g->nsteps;
	cr_assert_eq(steps_find(&in, r), 0);
}

/* probe_cut on c's engine of three requests. */
static struct sy_engine *probe_run(const struct sy_cfg *c,
				   enum steps_source src,
				   struct steps_span **w,
				   struct steps_result *r)
{
	struct sy_engine *g = engine(c);

	probe_cut(g, c, src, w, r);
	return g;
}

static void probe_done(struct sy_engine *g, struct steps_span *w,
		       struct steps_result *r)
{
	steps_free(r);
	free(w);
	sy_free(g);
	free(g);
}

/* On the CPU the probe's windows show the steps of chunks alone too. */
Test(steps, chunked_prefill_placed_in_the_probe_s_steps_on_the_cpu)
{
	struct sy_cfg c;
	struct sy_engine *g = chunked_engine(&c, true);
	struct steps_span *w;
	struct steps_result r;

	probe_cut(g, &c, STEPS_FROM_PROBE, &w, &r);
	cr_expect_eq(r.source, STEPS_FROM_PROBE);
	cr_expect_eq(r.chunk_tokens, 128, "chunks of %u", r.chunk_tokens);
	expect_entries(g, &r);
	probe_done(g, w, &r);
}

Test(steps, probe_windows_cut_the_engine_s_steps_on_the_cpu)
{
	struct sy_cfg c = sy_default();
	struct steps_span *w;
	struct steps_result r;

	c.cpu = true;
	struct sy_engine *g = probe_run(&c, STEPS_FROM_PROBE, &w, &r);
	cr_expect_eq(r.source, STEPS_FROM_PROBE);
	expect_entries(g, &r);
	uint64_t sum = 0;
	for (uint32_t k = 0; k < r.nsteps; k++) {
		cr_expect_eq(r.steps[k].end_ns, g->steps[k].end_ns,
			     "step %u ends where its call returned", k);
		sum += r.steps[k].busy_ns;
	}
	cr_expect_eq(sum, r.busy_ns, "every busy ns in some step");
	probe_done(g, w, &r);
}

Test(steps, auto_takes_the_probe_where_no_copies_cut)
{
	struct sy_cfg c = sy_default();
	struct steps_span *w;
	struct steps_result r;

	c.cpu = true;
	struct sy_engine *g = probe_run(&c, STEPS_AUTO, &w, &r);
	cr_expect_eq(r.source, STEPS_FROM_PROBE);
	cr_expect_eq(r.nsteps, g->nsteps);
	probe_done(g, w, &r);
	/* on a GPU the copies still cut, the probe beside them */
	c = sy_default();
	g = probe_run(&c, STEPS_AUTO, &w, &r);
	cr_expect_eq(r.source, STEPS_FROM_COPIES);
	probe_done(g, w, &r);
}

/* Tokens written late (the writer stalled past the next call's return)
 * still land in the step whose call produced them. */
Test(steps, probe_steps_place_late_writes_in_their_own_step)
{
	static uint64_t tok[LW_REQS][LW_STEPS];
	struct tt_request q[LW_REQS] = { 0 };
	struct tt_interval iv[LW_STEPS];
	struct steps_span w[LW_STEPS];
	uint64_t t0 = 1000000000ull;
	struct steps_result r;

	lw_engine(t0, tok, q, iv, w);
	struct steps_input in = {
		.reqs = q, .nreqs = LW_REQS, .ivs = iv, .nivs = LW_STEPS,
		.start_ns = t0 - 2000, .end_ns = t0 + 20 * LW_STEP_NS,
		.source = STEPS_FROM_PROBE, .probe = w, .nprobe = LW_STEPS,
	};

	cr_assert_eq(steps_find(&in, &r), 0);
	cr_assert_eq(r.nsteps, LW_STEPS);
	for (uint32_t k = 0; k < LW_STEPS; k++) {
		const struct steps_step *s = &r.steps[k];
		cr_expect_eq(s->end_ns, w[k].end_ns, "step %u", k);
		cr_expect_eq(s->n, LW_REQS, "step %u serves %u", k, s->n);
		for (uint32_t i = 0; i < s->n; i++)
			cr_expect_eq(r.entries[s->first + i].phase,
				     k ? ATTR_DECODE : ATTR_PREFILL,
				     "step %u entry %u", k, i);
	}
	steps_free(&r);
}

/*
 * The runs of every step's batch as the step probe reads llama_decode's:
 * each request on its own sequence (10 + its index), in the reverse of
 * the engine's order, and in the first step a warm-up sequence (99) that
 * is no request's.
 */
static struct steps_seq *batches_of(const struct sy_engine *g, size_t *n)
{
	struct steps_seq *v = calloc(g->nsteps * (SY_MAXR + 1), sizeof(*v));
	size_t k = 0;

	cr_assert_not_null(v);
	for (uint32_t s = 0; s < g->nsteps; s++) {
		const struct sy_step *t = &g->steps[s];

		if (!s)
			v[k++] = (struct steps_seq){ t->end_ns, 99, 0, 3, 1 };
		for (uint32_t i = t->n; i-- > 0;) {
			const struct attr_entry *e = &t->e[i];
			uint32_t p = g->reqs[e->request].prompt_tokens;
			bool dec = e->phase == ATTR_DECODE;

			v[k++] = (struct steps_seq){
				t->end_ns, 10 + (int32_t)e->request,
				(int32_t)(dec ? e->context - 1 : e->context),
				e->tokens, dec || e->context + e->tokens >= p };
		}
	}
	*n = k;
	return v;
}

/* Every step's entries are the engine's from its step `from` on, in any
 * order. */
static void expect_entries_as_set(const struct sy_engine *g, uint32_t from,
				  const struct steps_result *r)
{
	cr_assert_eq(r->nsteps, g->nsteps - from);
	for (uint32_t k = 0; k < r->nsteps; k++) {
		const struct steps_step *s = &r->steps[k];
		const struct sy_step *t = &g->steps[from + k];

		cr_assert_eq(s->n, t->n, "step %u: batch %u, engine %u",
			     from + k, s->n, t->n);
		for (uint32_t i = 0; i < t->n; i++) {
			const struct attr_entry *e = NULL;

			for (uint32_t j = 0; j < s->n; j++)
				if (r->entries[s->first + j].request ==
				    t->e[i].request)
					e = &r->entries[s->first + j];
			cr_assert_not_null(e, "step %u: no entry of request %u",
					   from + k, t->e[i].request);
			cr_expect_eq(e->phase, t->e[i].phase, "step %u", from + k);
			cr_expect_eq(e->tokens, t->e[i].tokens, "step %u", from + k);
			cr_expect_eq(e->context, t->e[i].context, "step %u", from + k);
		}
	}
}

/* With llama_decode's batches read, the steps' entries are the engine's
 * exactly, chunks and all, with chunk inference off (as the report runs
 * it then); a warm-up sequence ties to no request and takes none. */
Test(steps, batches_read_by_the_probe_give_every_step_s_work_exactly)
{
	struct sy_cfg c;
	struct sy_engine *g = chunked_engine(&c, true);
	struct steps_input in = input_of(g, &c, STEPS_FROM_PROBE);
	struct steps_span *w = probe_of(g);
	struct steps_result r;
	struct steps_seq *b;
	size_t nb;

	in.probe = w;
	in.nprobe = g->nsteps;
	in.no_chunks = true;
	/* without the batches, each prompt lands whole with its first token */
	cr_assert_eq(steps_find(&in, &r), 0);
	bool whole = false;

	for (uint32_t i = 0; i < r.nentries; i++)
		whole |= r.entries[i].phase == ATTR_PREFILL &&
			 r.entries[i].tokens > 128;
	cr_expect(whole, "a prompt over one chunk in one entry");
	steps_free(&r);

	b = batches_of(g, &nb);
	in.seqs = b;
	in.nseqs = nb;
	cr_assert_eq(steps_find(&in, &r), 0);
	cr_expect_eq(r.source, STEPS_FROM_PROBE);
	cr_expect_eq(r.batch_steps, g->nsteps);
	cr_expect_eq(r.batch_requests, g->nreqs, "%u of %u requests tied",
		     r.batch_requests, g->nreqs);
	expect_entries_as_set(g, 0, &r);
	for (uint32_t i = 0; i < r.nentries; i++)
		cr_expect_eq(r.entries[i].chunk,
			     r.entries[i].phase == ATTR_PREFILL &&
			     g->reqs[r.entries[i].request].prompt_tokens > 128,
			     "entry %u", i);
	steps_free(&r);
	free(b);
	free(w);
	sy_free(g);
	free(g);
}

/* The probe on from step `from` only: the requests then in flight show
 * first as sequences decoding, and are tied by their tokens so far. */
Test(steps, batches_of_requests_begun_before_the_probe_are_tied_too)
{
	struct sy_cfg c;
	struct sy_engine *g = chunked_engine(&c, true);
	struct steps_input in = input_of(g, &c, STEPS_FROM_PROBE);
	struct steps_span *w = probe_of(g);
	struct steps_result r;
	struct steps_seq *b;
	size_t nb, skip = 0;
	uint32_t from = 0, live = 0;

	/* the first step after the first request's prefill, with a decode */
	for (uint32_t k = 0; k < g->nsteps && !from; k++)
		for (uint32_t i = 0; i < g->steps[k].n; i++)
			if (g->steps[k].e[i].phase == ATTR_DECODE)
				from = k;
	cr_assert_gt(from, 0);
	b = batches_of(g, &nb);
	while (skip < nb && b[skip].end_ns < g->steps[from].end_ns)
		skip++;
	for (uint32_t q = 0; q < g->nreqs; q++)
		live += g->reqs[q].token_ns[g->reqs[q].token_ns_len - 1] >
			g->steps[from].end_ns;
	in.probe = w + from;
	in.nprobe = g->nsteps - from;
	in.seqs = b + skip;
	in.nseqs = nb - skip;
	in.no_chunks = true;
	cr_assert_eq(steps_find(&in, &r), 0);
	cr_expect_eq(r.batch_requests, live, "%u of %u requests in flight "
		     "tied", r.batch_requests, live);
	expect_entries_as_set(g, from, &r);
	steps_free(&r);
	free(b);
	free(w);
	sy_free(g);
	free(g);
}
