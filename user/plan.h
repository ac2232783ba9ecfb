/*
 * plan.h - capacity planning from a trace: a discrete-event simulation of
 * continuous batching whose step times come from the trace's fitted step
 * cost model, fed with the trace's own request mix.
 *
 * In:  struct plan_mix (the requests' prompt and completion lengths and
 *      arrival times, the step cost model, its noise and the host's time
 *      between steps), struct plan_load (closed loop of N clients, or
 *      open loop at a rate), the engine's knobs (max batch, prefill chunk).
 * Out: struct plan_result: throughput, TTFT and inter-token percentiles,
 *      busy fraction, mean batch.
 * Assumes: one replica runs one step at a time over every running request
 *      (FIFO admission up to max batch; a prefill whole, or in chunks of
 *      prefill_chunk tokens, one chunk a step, and at most prefill_budget
 *      tokens a step with its decodes); a step's time is the model's
 *      prediction times a noise factor drawn from the measured spread,
 *      plus the measured host time between steps; a token reaches the
 *      client a write delay after its step (drawn from the trace's), and
 *      a closed-loop client sends its next request the trace's turnaround
 *      after its last token. Deterministic for a seed.
 */
#ifndef TT_PLAN_H
#define TT_PLAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "costmodel.h"

struct plan_req {
	uint32_t prompt, completion;	/* tokens */
	uint64_t arrival_ns;		/* in the trace */
};

struct plan_mix {
	const struct plan_req *reqs;
	size_t nreqs;
	struct costmodel model;		/* step busy ns from its work */
	double noise_sd;		/* of log(measured / predicted) */
	double host_ns;			/* step window - busy: at batch 0 */
	double host_ns_per_req;		/* ... and per request in the step */
	double host_ns_per_admit;	/* ... and per request the step takes
					   in (its prompt tokenized, its slot
					   set up before the step) */
	const double *host_resid_ns;	/* the host's jitter around that line:
					   each step's drawn from these */
	size_t nhost_resid;
	double trace_rate;		/* requests/s over the trace */
	/* what the client sees later than the engine: each token's write
	 * after its step ended (drawn from these), and a client's time from
	 * its last token to its next request on the connection (median) */
	const double *write_ns;
	size_t nwrite;
	double turnaround_ns;
};

enum plan_loop {
	PLAN_CLOSED = 0,	/* clients: a new request as one finishes */
	PLAN_OPEN,		/* Poisson arrivals */
	PLAN_REPLAY,		/* these requests at their own times */
};

struct plan_load {
	enum plan_loop loop;
	uint32_t concurrency;	/* closed loop */
	double rate;		/* open loop, requests/s */
	/* replay: requests in arrival order, each arriving at its
	 * arrival_ns (from any origin) divided by speed; every one counts */
	const struct plan_req *arrivals;
	size_t narrivals;
	double speed;
	uint32_t max_batch;
	uint32_t prefill_chunk;	/* 0: whole prompts */
	uint32_t prefill_budget;	/* tokens a step takes in all (the
					   decodes first, then prompts in
					   order, as llama.cpp's n_batch or
					   vLLM's max_num_batched_tokens);
					   0: no limit */
	uint32_t requests;	/* completions to simulate (after warm-up;
				 * a replay simulates its own) */
	uint64_t seed;
};

struct plan_pct {
	double p50, p90, p99;
};

struct plan_result {
	double throughput_tok_s;	/* completion tokens/s */
	double requests_per_s;
	struct plan_pct ttft_ms, itl_ms;
	double busy_fraction;		/* device busy / wall */
	double mean_batch;
	double offered_rate;		/* open loop: arrivals/s */
	uint32_t completed;
	bool saturated;			/* open loop: the queue kept growing */
};

/* Simulate; 0, -EINVAL (no requests, no model) or -ENOMEM. */
int plan_simulate(const struct plan_mix *mix, const struct plan_load *load,
		  struct plan_result *out);

#endif
