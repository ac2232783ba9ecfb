/*
 * slot_engine.h - a small continuous-batching engine for the trace-file
 * tests (chain, sample): a fixed batch of slots, each holding a request of
 * 4 to 16 tokens that gets one token a step, refilled when it ends.
 *
 * In:  the step's start time, its length, the next request number.
 * Out: the finished requests, as struct tt_request (token_ns pointing into
 *      the slot), to a callback.
 * Assumes: static inline, so that each test file takes what it uses.
 */
#ifndef TT_SLOT_ENGINE_H
#define TT_SLOT_ENGINE_H

#include <stdint.h>

#include "../../user/requests.h"

#define SLOT_MS		1000000ull

struct slot {
	long req;			/* -1: empty */
	uint64_t arrival, tok[16];
	uint32_t n, want;
};

static inline void slots_init(struct slot *s, int n)
{
	for (int i = 0; i < n; i++)
		s[i].req = -1;
}

/* Slot s's finished request, of process pid; its id, model and tenant are
 * the caller's to name. */
static inline struct tt_request slot_request(const struct slot *s,
					     uint32_t pid)
{
	return (struct tt_request){ .pid = pid,
		.conn_id = (uint64_t)s->req + 1,
		.stream = true, .http_status = 200, .max_tokens = s->want,
		.arrival_ns = s->arrival, .first_token_ns = s->tok[0],
		.end_ns = s->tok[s->n - 1] + 100000, .token_events = s->n,
		.token_ns = s->tok, .token_ns_len = s->n,
		.prompt_tokens = 64 + s->req % 5 * 32,
		.completion_tokens = s->n, .tokens_source = TT_TOKENS_USAGE,
		.end = TT_END_COMPLETE };
}

/* The step of length step at t: empty slots take the next requests
 * (arrived a millisecond before), each slot gets a token 5 ms before the
 * step ends, and done(ctx, slot) is called for each request that ends. */
static inline void slots_step(struct slot *s, int n, uint64_t t,
			      uint64_t step, long *next,
			      void (*done)(void *, const struct slot *),
			      void *ctx)
{
	for (int i = 0; i < n; i++) {
		if (s[i].req < 0) {
			s[i].req = (*next)++;
			s[i].arrival = t - SLOT_MS;
			s[i].n = 0;
			s[i].want = 4 + (uint32_t)(s[i].req * 7 % 13);
		}
		s[i].tok[s[i].n++] = t + step - 5 * SLOT_MS + 100000;
		if (s[i].n == s[i].want) {
			done(ctx, &s[i]);
			s[i].req = -1;
		}
	}
}

#endif
