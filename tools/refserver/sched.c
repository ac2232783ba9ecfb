/*
 * sched.c - continuous batching: the waiting queue, the running batch, and
 * the plan of each step. See sched.h for the policy.
 *
 * In:  rs_sched_submit / rs_sched_cancel calls; rs_sched_plan and
 *      rs_sched_commit around each step the engine runs.
 * Out: struct rs_plan per step.
 * Assumes: items outlive their time in the scheduler; one thread.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "sched.h"

int rs_sched_init(struct rs_sched *s, int max_batch, int prefill_chunk)
{
	memset(s, 0, sizeof(*s));
	if (max_batch < 1 || prefill_chunk < 0)
		return -EINVAL;
	s->max_batch = max_batch;
	s->prefill_chunk = prefill_chunk;
	s->running = calloc(max_batch, sizeof(*s->running));
	return s->running ? 0 : -ENOMEM;
}

void rs_sched_fini(struct rs_sched *s)
{
	free(s->running);
	s->running = NULL;
}

int rs_plan_init(struct rs_plan *p, int max_batch)
{
	memset(p, 0, sizeof(*p));
	p->entry = calloc(max_batch, sizeof(*p->entry));
	p->dropped = calloc(max_batch, sizeof(*p->dropped));
	p->finished = calloc(max_batch, sizeof(*p->finished));
	if (p->entry && p->dropped && p->finished)
		return 0;
	rs_plan_fini(p);
	return -ENOMEM;
}

void rs_plan_fini(struct rs_plan *p)
{
	free(p->entry);
	free(p->dropped);
	free(p->finished);
	memset(p, 0, sizeof(*p));
}

void rs_sched_submit(struct rs_sched *s, struct rs_sched_item *it)
{
	it->prefilled = it->cached;
	it->generated = 0;
	it->cancelled = false;
	it->state = RS_ITEM_WAITING;
	it->next = NULL;
	if (s->wait_tail)
		s->wait_tail->next = it;
	else
		s->wait_head = it;
	s->wait_tail = it;
	s->waiting++;
}

bool rs_sched_busy(const struct rs_sched *s)
{
	return s->waiting > 0 || s->nrunning > 0;
}

static void unlink_waiting(struct rs_sched *s, struct rs_sched_item *it)
{
	struct rs_sched_item **pp = &s->wait_head, *prev = NULL;

	while (*pp && *pp != it) {
		prev = *pp;
		pp = &(*pp)->next;
	}
	if (!*pp)
		return;
	*pp = it->next;
	if (s->wait_tail == it)
		s->wait_tail = prev;
	it->next = NULL;
	s->waiting--;
}

bool rs_sched_cancel(struct rs_sched *s, struct rs_sched_item *it)
{
	it->cancelled = true;
	if (it->state != RS_ITEM_WAITING)
		return it->state == RS_ITEM_DONE;
	unlink_waiting(s, it);
	it->state = RS_ITEM_DONE;
	return true;
}

/* Removes running[i] keeping the order of the rest. */
static void remove_running(struct rs_sched *s, int i)
{
	memmove(&s->running[i], &s->running[i + 1],
		(s->nrunning - i - 1) * sizeof(*s->running));
	s->nrunning--;
}

static void drop_cancelled(struct rs_sched *s, struct rs_plan *p)
{
	for (int i = 0; i < s->nrunning;) {
		struct rs_sched_item *it = s->running[i];

		if (!it->cancelled) {
			i++;
			continue;
		}
		it->state = RS_ITEM_DONE;
		p->dropped[p->ndropped++] = it;
		remove_running(s, i);
	}
}

static void admit(struct rs_sched *s)
{
	while (s->wait_head && s->nrunning < s->max_batch) {
		struct rs_sched_item *it = s->wait_head;

		s->wait_head = it->next;
		if (!s->wait_head)
			s->wait_tail = NULL;
		it->next = NULL;
		s->waiting--;
		it->state = RS_ITEM_RUNNING;
		s->running[s->nrunning++] = it;
	}
}

static void plan_item(struct rs_sched *s, struct rs_sched_item *it,
		      struct rs_plan_entry *e)
{
	int rest = it->prompt_tokens - it->prefilled;

	e->item = it;
	if (rest > 0) {
		int n = rest;

		if (s->prefill_chunk > 0 && n > s->prefill_chunk)
			n = s->prefill_chunk;
		e->phase = RS_PHASE_PREFILL;
		e->pos = it->prefilled;
		e->tokens = n;
		e->context = it->prefilled + n;
		e->samples = n == rest;
		return;
	}
	/* The input is the last sampled token, at the next free position. */
	e->phase = RS_PHASE_DECODE;
	e->pos = it->prompt_tokens + it->generated - 1;
	e->tokens = 1;
	e->context = e->pos + 1;
	e->samples = true;
}

void rs_sched_plan(struct rs_sched *s, struct rs_plan *p)
{
	p->n = 0;
	p->ndropped = 0;
	p->nfinished = 0;
	drop_cancelled(s, p);
	admit(s);
	for (int i = 0; i < s->nrunning; i++)
		plan_item(s, s->running[i], &p->entry[p->n++]);
}

void rs_sched_commit(struct rs_sched *s, struct rs_plan *p)
{
	for (int i = 0; i < p->n; i++) {
		struct rs_plan_entry *e = &p->entry[i];

		if (e->phase == RS_PHASE_PREFILL)
			e->item->prefilled += e->tokens;
		if (e->samples)
			e->item->generated++;
	}
	for (int i = 0; i < s->nrunning;) {
		struct rs_sched_item *it = s->running[i];

		if (it->generated < it->max_tokens) {
			i++;
			continue;
		}
		it->state = RS_ITEM_DONE;
		p->finished[p->nfinished++] = it;
		remove_running(s, i);
	}
}
