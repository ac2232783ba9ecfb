/*
 * steps_synth.h - a synthetic continuous-batching engine for the steps,
 * report and findings tests.
 *
 * In:  requests (arrival, prompt and completion length, tenant) and a true
 *      step cost (fixed + per prefill token + per decode token + per token
 *      of context), host gaps, kernels per step, copies.
 * Out: what tokentrace would see from outside: request records with token
 *      times, compute intervals (kernels, a small device-to-host copy
 *      closing each step; or on-CPU slices for a CPU engine), and the
 *      truth: every step's window, busy time and entries.
 * Assumes: requests given in arrival order; everything fits the fixed
 *      bounds below. Static inline so that each test file takes what it
 *      uses.
 */
#ifndef TT_STEPS_SYNTH_H
#define TT_STEPS_SYNTH_H

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "../../user/attribution.h"
#include "../../user/compute.h"
#include "../../user/requests.h"

#define SY_MAXR		16
#define SY_MAXT		512
#define SY_MAXS		2048
#define SY_GPU		1		/* device id of the GPU */
#define SY_COPY_NS	4000ull		/* the step-ending copy */
#define SY_TOKEN_DELAY	20000ull	/* copy end to first token write */
#define SY_T0		1000000000ull

struct sy_req {
	uint64_t arrival_ns;
	uint32_t prompt, completion;
	const char *tenant;
	const char *model;
};

struct sy_cfg {
	double fixed_ns, prefill_ns, decode_ns, context_ns;
	uint64_t host_gap_ns;		/* copy end to next step start */
	uint32_t max_batch;		/* 0: no limit */
	uint32_t kernels;		/* per step, at least 1 */
	uint64_t kernel_gap_ns;		/* between the kernels of a step */
	uint64_t h2d_ns;		/* a copy to the device at step start */
	uint64_t spread_ns;		/* between token writes of a burst */
	uint32_t chunk;			/* prompt tokens prefilled per request
					   a step; 0: a prompt in one step */
	double noise;			/* each entry's cost times 1 + noise *
					   u, u uniform in [-1, 1) */
	bool cpu;			/* on-CPU slices on device 0 */
};

struct sy_step {
	uint64_t start_ns, end_ns, busy_ns, last_token_ns;
	uint32_t n, waiting;
	struct attr_entry e[SY_MAXR];
};

struct sy_engine {
	struct tt_request reqs[SY_MAXR];
	uint32_t nreqs;
	uint64_t tok[SY_MAXR][SY_MAXT];
	struct tt_interval *ivs;
	size_t nivs, cap;
	struct tt_device devs[2];
	struct sy_step steps[SY_MAXS];
	uint32_t nsteps;
	uint64_t busy_ns;		/* sum of intervals (none overlap) */
	double truth_ns[SY_MAXR];	/* each step's busy time split by its
					   entries' true (noisy) costs, each
					   with 1/n of the fixed cost */
	uint64_t start_ns, end_ns;	/* first arrival, last response end */
};

static inline struct sy_cfg sy_default(void)
{
	return (struct sy_cfg){
		.fixed_ns = 6e6, .prefill_ns = 20e3, .decode_ns = 300e3,
		.context_ns = 1e3, .host_gap_ns = 500000, .kernels = 1,
		.spread_ns = 3000,
	};
}

static inline void sy_iv(struct sy_engine *g, const struct sy_cfg *c,
			 uint64_t a, uint64_t b, uint8_t kind, uint8_t copy,
			 uint64_t bytes)
{
	if (g->nivs == g->cap) {
		g->cap = g->cap ? 2 * g->cap : 1024;
		g->ivs = realloc(g->ivs, g->cap * sizeof(*g->ivs));
	}
	g->ivs[g->nivs++] = (struct tt_interval){
		.start_ns = a, .end_ns = b,
		.device = c->cpu ? 0 : SY_GPU, .pid = 42, .tid = 42,
		.kind = c->cpu ? TT_IV_CPU : kind, .copy_kind = copy,
		.bytes = bytes, .stream = 7,
	};
	g->busy_ns += b - a;
}

/* Lay one step's work out from s; returns where its closing copy ends. */
static inline uint64_t sy_work(struct sy_engine *g, const struct sy_cfg *c,
			       uint64_t s, uint64_t busy)
{
	uint32_t k = c->kernels ? c->kernels : 1;
	uint64_t t = s;

	if (c->h2d_ns && !c->cpu) {
		sy_iv(g, c, t, t + c->h2d_ns, TT_IV_MEMCPY, TT_COPY_HTOD,
		      1 << 20);
		t += c->h2d_ns;
	}
	for (uint32_t i = 0; i < k; i++) {
		uint64_t len = busy / k + (i == k - 1 ? busy % k : 0);
		if (i)
			t += c->kernel_gap_ns;
		sy_iv(g, c, t, t + len, TT_IV_KERNEL, 0, 0);
		t += len;
	}
	if (!c->cpu) {
		sy_iv(g, c, t, t + SY_COPY_NS, TT_IV_MEMCPY, TT_COPY_DTOH, 64);
		t += SY_COPY_NS;
	}
	return t;
}

/* Run the engine over the requests; g must be zeroed. */
static inline void sy_run(struct sy_engine *g, const struct sy_cfg *c,
			  const struct sy_req *r, uint32_t n)
{
	uint32_t produced[SY_MAXR] = { 0 }, prefilled[SY_MAXR] = { 0 },
		 done = 0;
	bool admitted[SY_MAXR] = { false }, finished[SY_MAXR] = { false };
	uint32_t seed = 12345;
	uint64_t t = r[0].arrival_ns, prev_end = r[0].arrival_ns;

	g->nreqs = n;
	g->devs[0] = (struct tt_device){ .id = 0, .kind = TT_DEV_CPU,
					 .name = "cpu" };
	g->devs[1] = (struct tt_device){ .id = SY_GPU, .kind = TT_DEV_GPU,
					 .name = "NVIDIA H100" };
	g->start_ns = r[0].arrival_ns;
	while (done < n) {
		uint32_t run[SY_MAXR], nr = 0, inflight = 0;
		for (uint32_t i = 0; i < n; i++) {
			if (finished[i] || r[i].arrival_ns > t)
				continue;
			inflight++;
			if (!admitted[i] && (!c->max_batch ||
					     nr < c->max_batch))
				admitted[i] = true;
			if (admitted[i])
				run[nr++] = i;
		}
		if (!nr) {
			for (uint32_t i = 0; i < n; i++)
				if (!finished[i] && r[i].arrival_ns > t) {
					t = r[i].arrival_ns;
					break;
				}
			continue;
		}
		struct sy_step *s = &g->steps[g->nsteps++];
		double cost = c->fixed_ns, ce[SY_MAXR];
		for (uint32_t j = 0; j < nr; j++) {
			uint32_t i = run[j];
			struct attr_entry *e = &s->e[j];
			e->request = i;
			if (!produced[i]) {
				uint32_t left = r[i].prompt - prefilled[i];

				e->phase = ATTR_PREFILL;
				e->tokens = c->chunk && left > c->chunk ?
					    c->chunk : left;
				e->context = prefilled[i];
				prefilled[i] += e->tokens;
				ce[j] = c->prefill_ns * e->tokens;
			} else {
				e->phase = ATTR_DECODE;
				e->tokens = 1;
				e->context = r[i].prompt + produced[i];
				ce[j] = c->decode_ns + c->context_ns * e->context;
			}
			cost += ce[j];
		}
		if (c->noise) {
			cost = 0;
			for (uint32_t j = 0; j < nr; j++) {
				seed = seed * 1103515245u + 12345u;
				ce[j] = (ce[j] + c->fixed_ns / nr) *
					(1 + c->noise * ((seed >> 8) /
					 8388608.0 - 1));
				cost += ce[j];
			}
		} else {
			for (uint32_t j = 0; j < nr; j++)
				ce[j] += c->fixed_ns / nr;
		}
		s->n = nr;
		s->waiting = inflight - nr;
		s->start_ns = prev_end;
		uint64_t before = g->busy_ns;
		uint64_t e_ns = sy_work(g, c, t, (uint64_t)llround(cost));
		s->end_ns = e_ns;
		s->busy_ns = g->busy_ns - before;
		for (uint32_t j = 0; j < nr; j++)
			g->truth_ns[run[j]] += (double)s->busy_ns * ce[j] / cost;
		for (uint32_t j = 0, nw = 0; j < nr; j++) {
			uint32_t i = run[j];
			uint64_t w = e_ns + SY_TOKEN_DELAY + nw * c->spread_ns;

			if (prefilled[i] < r[i].prompt)
				continue;	/* a chunk before the last */
			nw++;
			g->tok[i][produced[i]++] = w;
			s->last_token_ns = w;
			if (produced[i] == r[i].completion) {
				finished[i] = true;
				done++;
				g->reqs[i].end_ns = w + 10000;
			}
		}
		prev_end = c->cpu && s->last_token_ns ? s->last_token_ns : e_ns;
		t = e_ns + c->host_gap_ns;
		if (t <= s->last_token_ns)
			t = s->last_token_ns + 1000;
	}
	for (uint32_t i = 0; i < n; i++) {
		struct tt_request *q = &g->reqs[i];
		snprintf(q->id, sizeof(q->id), "req-%u", i);
		snprintf(q->tenant, sizeof(q->tenant), "%s",
			 r[i].tenant ? r[i].tenant : "acme");
		snprintf(q->model, sizeof(q->model), "%s",
			 r[i].model ? r[i].model : "tiny");
		snprintf(q->api, sizeof(q->api), "completions");
		q->stream = true;
		q->http_status = 200;
		q->max_tokens = r[i].completion;
		q->arrival_ns = r[i].arrival_ns;
		q->first_token_ns = g->tok[i][0];
		q->token_events = produced[i];
		q->token_ns = g->tok[i];
		q->token_ns_len = produced[i];
		q->prompt_tokens = r[i].prompt;
		q->completion_tokens = r[i].completion;
		q->tokens_source = TT_TOKENS_USAGE;
		q->ttft_ms = (g->tok[i][0] - r[i].arrival_ns) / 1e6;
		q->itl_p50_ms = q->itl_p99_ms = q->itl_max_ms = -1;
		if (q->end_ns > g->end_ns)
			g->end_ns = q->end_ns;
	}
}

static inline void sy_free(struct sy_engine *g)
{
	free(g->ivs);
	g->ivs = NULL;
}

/* Three requests a few steps apart, two tenants. */
static inline uint32_t sy_three(struct sy_req *r)
{
	r[0] = (struct sy_req){ SY_T0, 100, 20, "acme", "tiny" };
	r[1] = (struct sy_req){ SY_T0 + 25000000, 300, 15, "bolt", "tiny" };
	r[2] = (struct sy_req){ SY_T0 + 61000000, 50, 30, "acme", "big" };
	return 3;
}

#endif
