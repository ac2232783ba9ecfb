/*
 * steps.h - cuts a device's timeline into the steps (forward passes) of a
 * continuous-batching engine, from the work itself, and says what each
 * request did in each step.
 *
 * In:  requests with their token event times (all, or one server's), one
 *      device's compute intervals, a window [start, end].
 * Out: steps (window, busy ns inside it, batch), and per step the entries
 *      in attribution.h's format (prefill of the prompt, or one decode at
 *      context c), ready for costmodel_fit and attribution_run.
 * Assumes: one clock (CLOCK_MONOTONIC ns) for tokens and intervals; an
 *      engine that runs one step at a time and writes the tokens of a step
 *      to all its streams right after the step ends.
 */
#ifndef TT_STEPS_H
#define TT_STEPS_H

#include <stddef.h>
#include <stdint.h>

#include "attribution.h"
#include "compute.h"
#include "requests.h"

/* Where step boundaries come from. */
enum steps_source {
	STEPS_AUTO = 0,		/* copies when the device has them, else the
				   probe's windows, else tokens */
	STEPS_FROM_COPIES,	/* small device-to-host copies closing each step */
	STEPS_FROM_TOKENS,	/* bursts of token writes after each step */
	STEPS_FROM_PROBE,	/* the engine's step function, seen by a
				   uprobe (TT_IV_STEP windows) */
};

/* A stretch of busy time: one piece of the union of a device's intervals. */
struct steps_span {
	uint64_t start_ns;
	uint64_t end_ns;
};

/* One sequence's run of tokens in a step whose batch the step probe read
 * (llama_decode, TT_IV_SEQ): end_ns is the call's return, its window's
 * end. */
struct steps_seq {
	uint64_t end_ns;
	int32_t seq, pos;		/* sequence id, its first position */
	uint32_t tokens, out;		/* tokens, and of them outputs */
};

struct steps_step {
	uint64_t start_ns, end_ns;	/* the step's window */
	uint64_t busy_ns;		/* device busy time inside the window */
	uint32_t first, n;		/* entries; n is the batch size */
	uint32_t prefill_tokens;	/* prompt tokens prefilled in it */
	uint32_t decode_tokens;		/* tokens decoded in it */
	uint32_t waiting;		/* in flight, but no token in this step */
};

struct steps_input {
	const struct tt_request *reqs;	/* token_ns must be valid */
	uint32_t nreqs;
	const struct tt_interval *ivs;	/* any devices, any order */
	size_t nivs;
	uint32_t device;		/* the device whose steps are cut */
	uint64_t start_ns, end_ns;	/* window */
	enum steps_source source;
	uint64_t max_copy_bytes;	/* step-ending copy size; 0: default */
	uint32_t pid;			/* only requests of this server take
					   part; 0: all */
	uint32_t copy_device;		/* whose step-ending copies cut the
					   steps (a tensor-parallel server's
					   rank 0); 0: the device itself */
	bool no_chunks;			/* never infer chunked prefill */
	const struct steps_span *probe;	/* the server's step windows (its
					   step function's calls), sorted by
					   end; with STEPS_FROM_PROBE or
					   AUTO, where no copies cut */
	size_t nprobe;
	const struct steps_seq *seqs;	/* the probed calls' batches, sorted
					   by end: with them, each step's
					   entries are its batch's runs (a
					   call with none keeps the entries
					   of the token writes) */
	size_t nseqs;
	uint32_t pid_lo, pid_hi;	/* with pid 0 and pid_hi set: only
					   requests with pids in [lo, hi) (a
					   host's, of several) */
};

struct steps_result {
	enum steps_source source;	/* what was used */
	struct steps_step *steps;
	uint32_t nsteps;
	struct attr_step *attr;		/* the same steps for attribution_run */
	struct attr_entry *entries;
	uint64_t *entry_token_ns;	/* per entry: its token's time */
	uint64_t *entry_prev_ns;	/* per entry: the request's previous
					   token's time, 0 for a prefill */
	uint32_t nentries;
	uint32_t estimated;		/* requests with no token times (not
					   streamed) placed in the steps
					   before their response */
	uint32_t bursts;		/* token bursts seen (a cross-check of
					   copy-cut steps) */
	uint32_t copies;		/* step-ending copies seen (runs of
					   them counted once); 0 also when
					   STEPS_FROM_TOKENS was asked for */
	uint64_t burst_gap_ns;		/* the gap that separates bursts */
	uint32_t batch_steps;		/* steps whose entries are their
					   batch's (steps_input.seqs) */
	uint32_t batch_requests;	/* requests tied to a sequence */
	uint32_t batch_budget;		/* the most tokens a batch held while
					   a prompt waited for the next (part
					   of it prefilled, the rest left):
					   the engine's token budget; 0: no
					   prompt waited */
	uint32_t chunk_tokens;		/* prompts seen prefilled in chunks
					   of this many tokens, placed in the
					   steps before their first token; 0:
					   not chunked */
	struct steps_span *busy;	/* union of the device's intervals in
					   the window, sorted */
	size_t nbusy;
	uint64_t busy_ns;		/* measure of that union */
};

/* Default largest step-ending copy: sampled token ids of a big batch. */
#define STEPS_MAX_COPY_BYTES	8192

/* Sort s[0..n) and merge overlapping or touching spans in place; returns
 * how many remain. */
size_t steps_merge_spans(struct steps_span *s, size_t n);

/*
 * Union of the intervals of `device` clipped to [start_ns, end_ns], as
 * sorted disjoint spans in *out (caller frees) and their measure in
 * *busy_ns. 0 or -ENOMEM.
 */
int steps_union(const struct tt_interval *ivs, size_t nivs, uint32_t device,
		uint64_t start_ns, uint64_t end_ns, struct steps_span **out,
		size_t *nout, uint64_t *busy_ns);

/* Busy time of the spans inside [start_ns, end_ns]. */
uint64_t steps_busy_in(const struct steps_span *spans, size_t n,
		       uint64_t start_ns, uint64_t end_ns);

/*
 * Cut the steps. 0, -EINVAL (window reversed, NULL arrays with a count),
 * or -ENOMEM. Free the result with steps_free, even after an error.
 */
int steps_find(const struct steps_input *in, struct steps_result *out);

void steps_free(struct steps_result *r);

const char *steps_source_name(enum steps_source s);

/* What step k's entries did, added to o (its fixed cost and time not). */
void steps_obs_add(const struct steps_result *s, uint32_t k,
		   struct costmodel_obs *o);

#endif
