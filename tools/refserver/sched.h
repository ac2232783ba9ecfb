/*
 * sched.h - continuous batching, on plain structs (no model, no sockets).
 *
 * In:  requests (struct rs_sched_item: prompt length, max_tokens) submitted
 *      in arrival order; cancellations.
 * Out: for each step, a plan: which running requests prefill how many
 *      prompt tokens at what context, which decode one token; after the
 *      step is run, the plan is committed and finished requests leave.
 * Assumes: one thread (the engine) calls everything here.
 *
 * Like vLLM: a FIFO waiting queue; a running batch of at most max_batch;
 * each step admits waiting requests while the batch has room, gives every
 * running request still in prefill up to prefill_chunk prompt tokens (0 =
 * the whole rest of its prompt) and every request past prefill one decode
 * token. A request's first token is sampled at the end of its last prefill
 * chunk; it then needs max_tokens - 1 decode steps. No stop token: a
 * request that is not cancelled produces exactly max_tokens tokens.
 */
#ifndef RS_SCHED_H
#define RS_SCHED_H

#include <stdbool.h>

enum rs_item_state {
	RS_ITEM_NEW = 0,
	RS_ITEM_WAITING,
	RS_ITEM_RUNNING,
	RS_ITEM_DONE,		/* left the scheduler: finished or cancelled */
};

struct rs_sched_item {
	int prompt_tokens;	/* >= 1 */
	int max_tokens;		/* >= 1 */
	int cached;		/* prompt tokens already in its KV cache when
				 * submitted (a prefix cache); < prompt_tokens */
	int prefilled;		/* prompt tokens processed so far */
	int generated;		/* tokens sampled so far */
	bool cancelled;
	enum rs_item_state state;
	struct rs_sched_item *next;	/* waiting queue link */
	void *owner;		/* the engine's request */
};

enum rs_phase { RS_PHASE_PREFILL = 0, RS_PHASE_DECODE = 1 };

struct rs_plan_entry {
	struct rs_sched_item *item;
	enum rs_phase phase;
	int pos;		/* position of the first token processed */
	int tokens;		/* tokens processed: n (prefill) or 1 */
	int context;		/* positions attended by the last token */
	bool samples;		/* a token is sampled at its end */
};

struct rs_sched {
	int max_batch;
	int prefill_chunk;	/* 0 = whole prompt in one step */
	struct rs_sched_item *wait_head, *wait_tail;
	int waiting;
	struct rs_sched_item **running;	/* [max_batch] */
	int nrunning;
};

struct rs_plan {
	struct rs_plan_entry *entry;	/* [max_batch] */
	int n;
	struct rs_sched_item **dropped;	/* cancelled, removed: [max_batch] */
	int ndropped;
	struct rs_sched_item **finished;	/* after commit: [max_batch] */
	int nfinished;
};

int rs_sched_init(struct rs_sched *s, int max_batch, int prefill_chunk);
void rs_sched_fini(struct rs_sched *s);
int rs_plan_init(struct rs_plan *p, int max_batch);
void rs_plan_fini(struct rs_plan *p);

/* Appends to the waiting queue (item counters are reset). */
void rs_sched_submit(struct rs_sched *s, struct rs_sched_item *it);
/* True when anything waits or runs. */
bool rs_sched_busy(const struct rs_sched *s);

/*
 * Removes a cancelled waiting request at once (returns true: it is DONE
 * and the caller owns it again). A running one is only flagged; the next
 * rs_sched_plan() drops it and lists it in plan->dropped.
 */
bool rs_sched_cancel(struct rs_sched *s, struct rs_sched_item *it);

/* Builds the next step's plan: drop cancelled, admit, prefill, decode. */
void rs_sched_plan(struct rs_sched *s, struct rs_plan *p);
/*
 * Records that the plan ran: advances counters; requests that reached
 * max_tokens leave the batch and are listed in plan->finished.
 */
void rs_sched_commit(struct rs_sched *s, struct rs_plan *p);

#endif
