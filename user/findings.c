/*
 * findings.c - what a trace says, in sentences with numbers.
 *
 * In:  struct findings_input (devices with steps and busy unions, requests,
 *      cost model, tenant totals, window, prices).
 * Out: struct findings_list; each finding has an id, a severity, a summary
 *      with its numbers, an evidence object and an action.
 * Assumes: one clock; busy unions sorted and disjoint (steps_union).
 *
 * Every finding is computed from the trace and stays silent below its
 * threshold. Idle time is split the way Holistic Trace Analysis splits
 * GPU idle time: gaps between kernels shorter than a launch's overhead are
 * kernel wait, longer gaps between steps (and on the CPU source every
 * idle gap) are the device waiting for the host, and long gaps in the
 * middle of a step are other. Device findings are per attributed device
 * and name it in their evidence. Server findings look at the GPUs of one
 * process together: the ranks of a tensor-parallel engine wait for each
 * other in every collective, so their communication time and the spread
 * of their busy times say what the split costs.
 *
 * What the findings are judged on is counted first, a time range at a
 * time (struct findings_tally): sums, a histogram of kernel lengths, and
 * the idle gaps at the range's two edges left open, so that a long
 * trace's ranges joined in time order say what its whole would.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "findings.h"
#include "quantile.h"
#include "sort.h"

/* An idle gap shorter than this between two kernels is launch overhead
 * (kernel wait), as in HTA. */
#define KERNEL_WAIT_MAX_NS	10000ull
/* Idle with demand is reported from this share of the wall time... */
#define IDLE_DEMAND_MIN_FRACTION	0.05
/* ...and idle without demand from this share. */
#define IDLE_NO_DEMAND_MIN_FRACTION	0.10
/* Shares of the wall at which idle findings become a warning, critical. */
#define IDLE_WARNING_FRACTION	0.25
#define IDLE_CRITICAL_FRACTION	0.50
/* Batch occupancy is low when the mean batch is under this share of the
 * largest batch... */
#define LOW_BATCH_MAX_SHARE	0.5
/* ...and the model predicts at least this much more throughput there. */
#define LOW_BATCH_MIN_HEADROOM	1.5
/* Launch-bound: median kernel shorter than this... */
#define LAUNCH_MEDIAN_KERNEL_NS	20000ull
/* ...with at least this many kernels... */
#define LAUNCH_MIN_KERNELS	100
/* ...and gaps shorter than this (within the work, not between steps)... */
#define LAUNCH_GAP_MAX_NS	50000ull
/* ...making up at least this share of busy + those gaps. */
#define LAUNCH_MIN_GAP_SHARE	0.20
/* Prefill interference: decode ITL in steps with prefill over ITL in
 * steps without, from this ratio... */
#define PREFILL_ITL_MIN_RATIO	1.5
/* ...with at least this many decode tokens on each side. */
#define PREFILL_MIN_SAMPLES	5
/* Tenant skew: GPU share over token share beyond this factor either way. */
#define TENANT_SKEW_RATIO	1.5
/* Copy overhead: copy time over busy time from this share. */
#define COPY_MIN_SHARE		0.10
#define COPY_WARNING_SHARE	0.30
/* Communication: collective kernels over a server's GPU busy time. */
#define COMM_MIN_SHARE		0.10
#define COMM_WARNING_SHARE	0.25
/* Imbalance: (busiest - least busy) / busiest of a server's GPUs. */
#define IMBALANCE_MIN_SPREAD	0.10
#define IMBALANCE_WARNING_SPREAD	0.25

const char *findings_severity_name(enum findings_severity s)
{
	switch (s) {
	case FINDINGS_WARNING:
		return "warning";
	case FINDINGS_CRITICAL:
		return "critical";
	default:
		return "info";
	}
}

/* A new finding at the end of the list, with an empty evidence object. */
static struct finding *add(struct findings_list *l, const char *id,
			   enum findings_severity sev)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 8;
		struct finding *p = realloc(l->items, cap * sizeof(*p));
		if (!p)
			return NULL;
		l->items = p;
		l->cap = cap;
	}
	struct finding *f = &l->items[l->n];
	memset(f, 0, sizeof(*f));
	snprintf(f->id, sizeof(f->id), "%s", id);
	f->severity = sev;
	f->evidence = cJSON_CreateObject();
	if (!f->evidence)
		return NULL;
	l->n++;
	return f;
}

static void say(char *buf, size_t len, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void say(char *buf, size_t len, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, len, fmt, ap);
	va_end(ap);
}

static void num(cJSON *o, const char *k, double v)
{
	cJSON_AddNumberToObject(o, k, v);
}

static enum findings_severity by_fraction(double f)
{
	if (f >= IDLE_CRITICAL_FRACTION)
		return FINDINGS_CRITICAL;
	return f >= IDLE_WARNING_FRACTION ? FINDINGS_WARNING : FINDINGS_INFO;
}

/* Union of the requests' [arrival, end] in the window: the demand. */
static int demand_spans(const struct findings_input *in,
			struct steps_span **out, size_t *nout)
{
	struct steps_span *s = malloc((in->nreqs ? in->nreqs : 1) * sizeof(*s));
	size_t n = 0, m = 0;

	if (!s)
		return -ENOMEM;
	for (size_t i = 0; i < in->nreqs; i++) {
		uint64_t a = in->reqs[i].arrival_ns, b = in->reqs[i].end_ns;
		if (!b || b > in->end_ns)
			b = in->end_ns;
		if (a < in->start_ns)
			a = in->start_ns;
		if (b > a)
			s[n++] = (struct steps_span){ a, b };
	}
	m = steps_merge_spans(s, n);
	*out = s;
	*nout = m;
	return 0;
}

/* Does a step of r end inside [a, b]? */
static bool step_end_in(const struct steps_result *r, uint64_t a, uint64_t b)
{
	uint32_t lo = 0, hi = r->nsteps;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		if (r->steps[mid].end_ns < a)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < r->nsteps && r->steps[lo].end_ns <= b;
}

/* An idle gap, or the part of one a range holds: its length, the part of
 * it with a request in flight, whether a step ended in it. */
struct gap {
	uint64_t len, demand;
	bool step_end;
};

struct idle_split {
	uint64_t with_demand, without_demand;
	uint64_t host_wait, kernel_wait, other;
};

struct batch_stats {
	uint32_t steps, max_seen;
	uint64_t entries, decodes, context_sum, step_ns;
};

struct itl_sum {
	uint64_t ns[2];
	uint64_t n[2];		/* [0] steps without prefill, [1] with */
	uint32_t prefill_steps;
};

/* What one device did in the tally's time. */
struct dev_tally {
	uint32_t id;
	enum tt_device_kind kind;
	bool busy_seen;		/* head and tail are apart */
	struct gap head, tail;	/* before its first busy span and after its
				   last (no busy span: all of it in head) */
	struct idle_split idle;	/* the gaps between busy spans */
	uint64_t launch_gap_ns;	/* those under LAUNCH_GAP_MAX_NS */
	uint64_t busy_ns, comm_ns;
	uint64_t copy[3];	/* alone, not under a kernel: htod, dtoh,
				   other */
	struct quantile kernels;	/* their lengths */
	struct batch_stats batch;
	struct itl_sum itl;
	uint32_t pid;		/* with pids 1: the one process it ran */
	int pids;		/* 0, 1 or 2: several */
};

struct findings_tally {
	struct dev_tally *d;
	size_t n;
};

static struct gap gap_of(const struct findings_device *d,
			 const struct steps_span *dem, size_t nd, uint64_t a,
			 uint64_t b)
{
	return (struct gap){ b - a, steps_busy_in(dem, nd, a, b),
			     step_end_in(d->steps, a, b) };
}

static struct gap gap_join(struct gap x, struct gap y)
{
	return (struct gap){ x.len + y.len, x.demand + y.demand,
			     x.step_end || y.step_end };
}

/* Where the demand of one idle gap goes. edge: it touches the window's
 * ends. */
static void split_gap(const struct dev_tally *t, const struct gap *g,
		      bool edge, struct idle_split *s)
{
	s->with_demand += g->demand;
	s->without_demand += g->len - g->demand;
	if (!g->demand)
		return;
	if (t->kind == TT_DEV_CPU || edge)
		s->host_wait += g->demand;
	else if (g->len < KERNEL_WAIT_MAX_NS)
		s->kernel_wait += g->demand;
	else if (g->step_end)
		s->host_wait += g->demand;
	else
		s->other += g->demand;
}

/* A gap between two busy spans. */
static void inner_gap(struct dev_tally *t, const struct gap *g)
{
	if (g->len)
		split_gap(t, g, false, &t->idle);
	if (g->len < LAUNCH_GAP_MAX_NS)
		t->launch_gap_ns += g->len;
}

static void tally_gaps(const struct findings_input *in,
		       const struct findings_device *d,
		       const struct steps_span *dem, size_t nd,
		       struct dev_tally *t)
{
	const struct steps_span *b = d->steps->busy;
	size_t n = d->steps->nbusy;
	uint64_t at = in->start_ns;

	for (size_t i = 0; i < n; i++) {
		uint64_t s = b[i].start_ns > at ? b[i].start_ns : at;

		if (i == 0) {
			t->head = gap_of(d, dem, nd, at, s);
		} else {
			struct gap g = { 0 };

			if (s > at)
				g = gap_of(d, dem, nd, at, s);
			inner_gap(t, &g);
		}
		at = b[i].end_ns > at ? b[i].end_ns : at;
	}
	t->busy_seen = n > 0;
	if (in->end_ns < at)
		at = in->end_ns;
	if (n)
		t->tail = gap_of(d, dem, nd, at, in->end_ns);
	else
		t->head = gap_of(d, dem, nd, at, in->end_ns);
}

/* The idle time of the whole: the inner gaps and the two at the ends. */
static void idle_of(const struct dev_tally *t, struct idle_split *s)
{
	*s = t->idle;
	split_gap(t, &t->head, true, s);
	if (t->busy_seen)
		split_gap(t, &t->tail, true, s);
}

static const char *idle_action(const struct findings_device *d,
			       const struct idle_split *s)
{
	if (d->kind == TT_DEV_CPU)
		return "The server's threads were off the CPU while requests "
		       "waited: look for sleeps, I/O waits and lock "
		       "contention in the engine's loop.";
	if (s->kernel_wait >= s->host_wait && s->kernel_wait >= s->other)
		return "Kernel launch gaps dominate: capture the decode step "
		       "in CUDA graphs or fuse small kernels.";
	if (s->host_wait >= s->other)
		return "The device waits for the host between steps: profile "
		       "the engine's CPU side (scheduling, sampling, "
		       "detokenization, sleeps in its loop) and overlap it "
		       "with the next step.";
	return "The device stalls in the middle of steps: look for "
	       "synchronizations and host work inside the forward pass.";
}

static int find_idle(const struct findings_input *in,
		     const struct findings_device *d,
		     const struct dev_tally *t, struct findings_list *out)
{
	uint64_t wall = in->end_ns - in->start_ns;
	struct idle_split s;
	struct finding *f;

	if (!wall)
		return 0;
	idle_of(t, &s);
	double fw = (double)s.with_demand / wall;
	double fo = (double)s.without_demand / wall;
	if (fw >= IDLE_DEMAND_MIN_FRACTION) {
		f = add(out, "idle_with_demand", by_fraction(fw));
		if (!f)
			return -ENOMEM;
		say(f->summary, sizeof(f->summary),
		    "%s was idle %.1f%% of the wall time (%.1f ms) while "
		    "requests were in flight: host wait %.1f ms, kernel "
		    "wait %.1f ms, other %.1f ms.", d->name, 100 * fw,
		    s.with_demand / 1e6, s.host_wait / 1e6,
		    s.kernel_wait / 1e6, s.other / 1e6);
		cJSON_AddStringToObject(f->evidence, "device", d->name);
		num(f->evidence, "fraction_of_wall", fw);
		num(f->evidence, "idle_ns", (double)s.with_demand);
		num(f->evidence, "host_wait_ns", (double)s.host_wait);
		num(f->evidence, "kernel_wait_ns", (double)s.kernel_wait);
		num(f->evidence, "other_ns", (double)s.other);
		snprintf(f->action, sizeof(f->action), "%s",
			 idle_action(d, &s));
	}
	if (fo >= IDLE_NO_DEMAND_MIN_FRACTION) {
		double usd_h = fo * d->usd_per_hour;
		f = add(out, "idle_without_demand",
			fo >= IDLE_CRITICAL_FRACTION ? FINDINGS_WARNING
						     : FINDINGS_INFO);
		if (!f)
			return -ENOMEM;
		say(f->summary, sizeof(f->summary),
		    "%s was idle with no request in flight %.1f%% of the wall "
		    "time (%.1f ms), which costs $%.2f per hour.", d->name,
		    100 * fo, s.without_demand / 1e6, usd_h);
		cJSON_AddStringToObject(f->evidence, "device", d->name);
		num(f->evidence, "fraction_of_wall", fo);
		num(f->evidence, "idle_ns", (double)s.without_demand);
		num(f->evidence, "usd_per_hour", usd_h);
		snprintf(f->action, sizeof(f->action),
			 "Capacity exceeds demand: share the device with "
			 "other models or tenants, or scale down.");
	}
	return 0;
}

static void batch_stats(const struct steps_result *r, struct batch_stats *b)
{
	for (uint32_t k = 0; k < r->nsteps; k++) {
		const struct steps_step *s = &r->steps[k];
		if (!s->n)
			continue;
		b->steps++;
		b->entries += s->n;
		b->step_ns += s->end_ns - s->start_ns;
		if (s->n > b->max_seen)
			b->max_seen = s->n;
		for (uint32_t i = 0; i < s->n; i++) {
			const struct attr_entry *e = &r->entries[s->first + i];
			if (e->phase != ATTR_DECODE)
				continue;
			b->decodes++;
			b->context_sum += e->context;
		}
	}
}

static int find_low_batch(const struct findings_input *in,
			  const struct findings_device *d,
			  const struct dev_tally *t, struct findings_list *out)
{
	const struct costmodel *m = d->model;
	struct batch_stats b = t->batch;

	if (!m || !m->fitted || !b.steps || !b.step_ns)
		return 0;
	uint32_t max = in->max_batch ? in->max_batch : b.max_seen;
	double mean = (double)b.entries / b.steps;
	double ctx = b.decodes ? (double)b.context_sum / b.decodes : 0;
	double achieved = b.entries / (b.step_ns / 1e9);
	double step_ns = m->coef[CM_FIXED] +
			 max * costmodel_decode_ns(m, (uint32_t)ctx);
	double predicted = step_ns > 0 ? max / (step_ns / 1e9) : 0;
	if (mean >= LOW_BATCH_MAX_SHARE * max ||
	    predicted < LOW_BATCH_MIN_HEADROOM * achieved)
		return 0;
	struct finding *f = add(out, "low_batch_occupancy",
				predicted >= 3 * achieved ? FINDINGS_WARNING
							  : FINDINGS_INFO);
	if (!f)
		return -ENOMEM;
	say(f->summary, sizeof(f->summary),
	    "%s served %.0f tok/s at a mean batch of %.1f; the fitted step "
	    "model predicts about %.0f tok/s at batch %u (context %.0f).",
	    d->name, achieved, mean, predicted, max, ctx);
	cJSON_AddStringToObject(f->evidence, "device", d->name);
	num(f->evidence, "mean_batch", mean);
	num(f->evidence, "max_batch", max);
	num(f->evidence, "max_batch_seen", b.max_seen);
	num(f->evidence, "achieved_tok_s", achieved);
	num(f->evidence, "predicted_tok_s", predicted);
	num(f->evidence, "mean_context", ctx);
	snprintf(f->action, sizeof(f->action),
		 "Admit more concurrent requests (raise the client "
		 "concurrency or the engine's batch limits, check KV cache "
		 "headroom): each step costs little more with more requests "
		 "in it.");
	return 0;
}

/* The device's kernels, intervals and copies in the window: their
 * lengths (a kernel in the range it starts in), its process and its
 * copies' time outside kernels. 0 or -ENOMEM. */
static int tally_intervals(const struct findings_input *in,
			   const struct findings_device *d, struct dev_tally *t)
{
	struct steps_span *k = malloc((d->nivs ? d->nivs : 1) * sizeof(*k));
	size_t nk = 0;
	int err = 0;

	if (!k)
		return -ENOMEM;
	for (size_t i = 0; i < d->nivs; i++) {
		const struct tt_interval *iv = &d->ivs[i];
		uint64_t a = iv->start_ns > in->start_ns ? iv->start_ns
							 : in->start_ns;
		uint64_t b = iv->end_ns < in->end_ns ? iv->end_ns : in->end_ns;

		if (iv->device != d->id)
			continue;
		if (b > a && (t->pids == 0 || (t->pids == 1 &&
					       iv->pid != t->pid))) {
			t->pids++;
			t->pid = iv->pid;
		}
		if (iv->kind != TT_IV_KERNEL)
			continue;
		if (b > a)
			k[nk++] = (struct steps_span){ a, b };
		if (iv->end_ns <= iv->start_ns || iv->end_ns < in->start_ns ||
		    iv->start_ns > in->end_ns ||
		    (in->cut_before && iv->start_ns < in->start_ns) ||
		    (in->cut_after && iv->start_ns >= in->end_ns))
			continue;
		if (!err)
			err = quantile_add(&t->kernels,
					   iv->end_ns - iv->start_ns);
	}
	nk = steps_merge_spans(k, nk);
	for (size_t i = 0; i < d->nivs; i++) {
		const struct tt_interval *iv = &d->ivs[i];
		if (iv->device != d->id || iv->kind != TT_IV_MEMCPY)
			continue;
		uint64_t a = iv->start_ns > in->start_ns ? iv->start_ns
							 : in->start_ns;
		uint64_t b = iv->end_ns < in->end_ns ? iv->end_ns : in->end_ns;
		if (b <= a)
			continue;
		/* a copy under a kernel costs no busy time */
		uint64_t hidden = steps_busy_in(k, nk, a, b);

		t->copy[iv->copy_kind == TT_COPY_HTOD ? 0 :
			iv->copy_kind == TT_COPY_DTOH ? 1 : 2] += b - a - hidden;
	}
	free(k);
	return err;
}

static int find_launch_bound(const struct findings_device *d,
			     const struct dev_tally *t,
			     struct findings_list *out)
{
	uint64_t gaps = t->launch_gap_ns, count = t->kernels.n;
	double median;

	if (d->kind != TT_DEV_GPU || count < LAUNCH_MIN_KERNELS)
		return 0;
	median = quantile_rank(&t->kernels, count / 2);
	if (median >= LAUNCH_MEDIAN_KERNEL_NS)
		return 0;
	double share = (double)gaps / (t->busy_ns + gaps);
	if (share < LAUNCH_MIN_GAP_SHARE)
		return 0;
	struct finding *f = add(out, "launch_bound",
				share >= 0.5 ? FINDINGS_WARNING
					     : FINDINGS_INFO);
	if (!f)
		return -ENOMEM;
	say(f->summary, sizeof(f->summary),
	    "%s ran %llu kernels with a median of %.1f us; gaps between "
	    "them took %.1f%% of the time the work was running.", d->name,
	    (unsigned long long)count, median / 1e3, 100 * share);
	cJSON_AddStringToObject(f->evidence, "device", d->name);
	num(f->evidence, "kernels", (double)count);
	num(f->evidence, "median_kernel_us", median / 1e3);
	num(f->evidence, "gap_ns", (double)gaps);
	num(f->evidence, "gap_share", share);
	snprintf(f->action, sizeof(f->action),
		 "The work is launch-bound: use CUDA graphs for the decode "
		 "step (or a larger batch per launch) and fuse small kernels.");
	return 0;
}

static void itl_by_prefill(const struct steps_result *r, struct itl_sum *s)
{
	for (uint32_t k = 0; k < r->nsteps; k++) {
		const struct steps_step *st = &r->steps[k];
		int p = st->prefill_tokens > 0;
		s->prefill_steps += p;
		for (uint32_t i = st->first; i < st->first + st->n; i++) {
			if (r->entries[i].phase != ATTR_DECODE ||
			    !r->entry_prev_ns[i] ||
			    r->entry_token_ns[i] < r->entry_prev_ns[i])
				continue;
			s->ns[p] += r->entry_token_ns[i] - r->entry_prev_ns[i];
			s->n[p]++;
		}
	}
}

static int find_prefill_interference(const struct findings_device *d,
				     const struct dev_tally *t,
				     struct findings_list *out)
{
	struct itl_sum s = t->itl;

	if (s.n[0] < PREFILL_MIN_SAMPLES || s.n[1] < PREFILL_MIN_SAMPLES)
		return 0;
	double without = (double)s.ns[0] / s.n[0] / 1e6;
	double with = (double)s.ns[1] / s.n[1] / 1e6;
	double ratio = without > 0 ? with / without : 0;
	if (ratio < PREFILL_ITL_MIN_RATIO)
		return 0;
	struct finding *f = add(out, "prefill_interference",
				ratio >= 3 ? FINDINGS_WARNING
					   : FINDINGS_INFO);
	if (!f)
		return -ENOMEM;
	say(f->summary, sizeof(f->summary),
	    "On %s, decoding requests waited %.2f ms per token in steps "
	    "that carried a prefill and %.2f ms in steps that did not "
	    "(%.1fx).", d->name, with, without, ratio);
	cJSON_AddStringToObject(f->evidence, "device", d->name);
	num(f->evidence, "itl_with_prefill_ms", with);
	num(f->evidence, "itl_without_prefill_ms", without);
	num(f->evidence, "ratio", ratio);
	num(f->evidence, "steps_with_prefill", s.prefill_steps);
	num(f->evidence, "decode_tokens_with_prefill", (double)s.n[1]);
	num(f->evidence, "decode_tokens_without_prefill", (double)s.n[0]);
	snprintf(f->action, sizeof(f->action),
		 "Long prefills stall decoding: enable chunked prefill with "
		 "a token budget per step, or separate prefill and decode.");
	return 0;
}

/* Copy time the device spent on copies alone (not under a kernel). */
static int find_copy_overhead(const struct findings_device *d,
			      const struct dev_tally *t,
			      struct findings_list *out)
{
	const uint64_t *by = t->copy;
	uint64_t copy = by[0] + by[1] + by[2], busy = t->busy_ns;
	double share = busy ? (double)copy / busy : 0;
	if (share < COPY_MIN_SHARE)
		return 0;
	struct finding *f = add(out, "copy_overhead",
				share >= COPY_WARNING_SHARE ? FINDINGS_WARNING
							    : FINDINGS_INFO);
	if (!f)
		return -ENOMEM;
	say(f->summary, sizeof(f->summary),
	    "Copies took %.1f ms on %s, %.1f%% of its busy time "
	    "(host to device %.1f ms, device to host %.1f ms).", copy / 1e6,
	    d->name, 100 * share, by[0] / 1e6, by[1] / 1e6);
	cJSON_AddStringToObject(f->evidence, "device", d->name);
	num(f->evidence, "copy_ns", (double)copy);
	num(f->evidence, "busy_ns", (double)busy);
	num(f->evidence, "share", share);
	num(f->evidence, "htod_ns", (double)by[0]);
	num(f->evidence, "dtoh_ns", (double)by[1]);
	num(f->evidence, "other_ns", (double)by[2]);
	snprintf(f->action, sizeof(f->action),
		 "Keep data on the device between steps, use pinned memory "
		 "and async copies overlapped with compute.");
	return 0;
}

/* |log| of a ratio: how far from even. */
static double skew(double r)
{
	return r > 0 ? fabs(log(r)) : INFINITY;
}

static int find_tenant_skew(const struct findings_input *in,
			    struct findings_list *out)
{
	uint64_t gpu = 0, tok = 0;
	size_t worst = SIZE_MAX;
	double wr = 1;

	for (size_t i = 0; i < in->ntenants; i++) {
		gpu += in->tenants[i].gpu_ns;
		tok += in->tenants[i].tokens;
	}
	if (in->ntenants < 2 || !gpu || !tok)
		return 0;
	cJSON *list = cJSON_CreateArray();
	if (!list)
		return -ENOMEM;
	for (size_t i = 0; i < in->ntenants; i++) {
		const struct findings_tenant *t = &in->tenants[i];
		double gs = (double)t->gpu_ns / gpu, ts = (double)t->tokens / tok;
		double r = ts > 0 ? gs / ts : INFINITY;
		if (r <= TENANT_SKEW_RATIO && r >= 1 / TENANT_SKEW_RATIO)
			continue;
		cJSON *o = cJSON_CreateObject();
		cJSON_AddItemToArray(list, o);
		cJSON_AddStringToObject(o, "name", t->name);
		num(o, "gpu_share", gs);
		num(o, "token_share", ts);
		num(o, "ratio", isfinite(r) ? r : -1);
		if (worst == SIZE_MAX || skew(r) > skew(wr)) {
			worst = i;
			wr = r;
		}
	}
	if (worst == SIZE_MAX) {
		cJSON_Delete(list);
		return 0;
	}
	const struct findings_tenant *t = &in->tenants[worst];
	struct finding *f = add(out, "tenant_skew",
				skew(wr) > log(3) ? FINDINGS_WARNING
						  : FINDINGS_INFO);
	if (!f) {
		cJSON_Delete(list);
		return -ENOMEM;
	}
	double gs = (double)t->gpu_ns / gpu, ts = (double)t->tokens / tok;
	say(f->summary, sizeof(f->summary),
	    "Tenant %s used %.1f%% of the GPU time for %.1f%% of the "
	    "tokens (%.2fx its token share).", t->name, 100 * gs, 100 * ts,
	    ts > 0 ? gs / ts : 0);
	cJSON_AddStringToObject(f->evidence, "tenant", t->name);
	num(f->evidence, "gpu_share", gs);
	num(f->evidence, "token_share", ts);
	num(f->evidence, "ratio", ts > 0 ? gs / ts : -1);
	cJSON_AddItemToObject(f->evidence, "tenants", list);
	snprintf(f->action, sizeof(f->action),
		 "Bill by GPU time (or by prompt and completion tokens "
		 "priced apart) rather than by total tokens, or set "
		 "per-tenant limits on prompt and completion length.");
	return 0;
}

static int find_device(const struct findings_input *in,
		       const struct findings_device *d,
		       const struct dev_tally *t, struct findings_list *out)
{
	int err = find_idle(in, d, t, out);
	if (!err)
		err = find_low_batch(in, d, t, out);
	if (!err)
		err = find_launch_bound(d, t, out);
	if (!err)
		err = find_prefill_interference(d, t, out);
	if (!err)
		err = find_copy_overhead(d, t, out);
	return err;
}

/* The devices judged, with their tallies (t[i] NULL: none). */
struct judged {
	const struct findings_input *in;
	const struct dev_tally **t;
};

/* The one process device i ran, or 0. */
static uint32_t pid_of(const struct judged *j, size_t i)
{
	return j->t[i] && j->t[i]->pids == 1 ? j->t[i]->pid : 0;
}

/* Whether device i is a GPU of server pid. */
static bool on_server(const struct judged *j, size_t i, uint32_t pid)
{
	return j->in->devs[i].kind == TT_DEV_GPU && pid && pid_of(j, i) == pid;
}

/* Whether device i is the first GPU of a server (one process). */
static bool first_of_server(const struct judged *j, size_t i)
{
	if (!on_server(j, i, pid_of(j, i)))
		return false;
	for (size_t k = 0; k < i; k++)
		if (on_server(j, k, pid_of(j, i)))
			return false;
	return true;
}

/* A {name, id, ...} object for each GPU of server pid, in a new array key
 * of ev; with comm, its communication time too. */
static void server_devices(const struct judged *j, uint32_t pid, bool comm,
			   cJSON *ev)
{
	cJSON *a = cJSON_AddArrayToObject(ev, "devices");

	for (size_t i = 0; a && i < j->in->ndevs; i++) {
		const struct findings_device *d = &j->in->devs[i];
		cJSON *o;

		if (!on_server(j, i, pid) || !(o = cJSON_CreateObject()))
			continue;
		cJSON_AddItemToArray(a, o);
		cJSON_AddStringToObject(o, "name", d->name);
		num(o, "id", d->id);
		if (comm)
			num(o, "comm_ns", (double)j->t[i]->comm_ns);
		num(o, "busy_ns", (double)j->t[i]->busy_ns);
	}
}

static int find_comm_share(const struct judged *j, uint32_t pid,
			   struct findings_list *out)
{
	uint64_t comm = 0, busy = 0;
	size_t n = 0;

	for (size_t i = 0; i < j->in->ndevs; i++)
		if (on_server(j, i, pid)) {
			comm += j->t[i]->comm_ns;
			busy += j->t[i]->busy_ns;
			n++;
		}
	double share = busy ? (double)comm / busy : 0;
	if (share < COMM_MIN_SHARE)
		return 0;
	struct finding *f = add(out, "communication_share",
				share >= COMM_WARNING_SHARE ? FINDINGS_WARNING
							    : FINDINGS_INFO);
	if (!f)
		return -ENOMEM;
	say(f->summary, sizeof(f->summary),
	    "Collective communication (all-reduce, all-gather and the like) "
	    "took %.1f%% of the busy time of the %zu GPU%s of server pid %u "
	    "(%.1f of %.1f ms).", 100 * share, n, n == 1 ? "" : "s", pid,
	    comm / 1e6, busy / 1e6);
	num(f->evidence, "pid", pid);
	num(f->evidence, "comm_ns", (double)comm);
	num(f->evidence, "busy_ns", (double)busy);
	num(f->evidence, "share", share);
	server_devices(j, pid, true, f->evidence);
	snprintf(f->action, sizeof(f->action),
		 "The GPUs spend much of their time exchanging activations: "
		 "use fewer tensor-parallel ranks (and more replicas) if the "
		 "model fits, a faster interconnect (NVLink rather than "
		 "PCIe), or an engine that overlaps communication with "
		 "compute.");
	return 0;
}

static int find_imbalance(const struct judged *j, uint32_t pid,
			  struct findings_list *out)
{
	size_t hi = SIZE_MAX, lo = SIZE_MAX, n = 0;

	for (size_t i = 0; i < j->in->ndevs; i++) {
		if (!on_server(j, i, pid))
			continue;
		n++;
		if (hi == SIZE_MAX || j->t[i]->busy_ns > j->t[hi]->busy_ns)
			hi = i;
		if (lo == SIZE_MAX || j->t[i]->busy_ns < j->t[lo]->busy_ns)
			lo = i;
	}
	if (n < 2 || !j->t[hi]->busy_ns)
		return 0;
	uint64_t most = j->t[hi]->busy_ns, least = j->t[lo]->busy_ns;
	double spread = (double)(most - least) / most;
	if (spread < IMBALANCE_MIN_SPREAD)
		return 0;
	struct finding *f = add(out, "device_imbalance",
				spread >= IMBALANCE_WARNING_SPREAD ?
				FINDINGS_WARNING : FINDINGS_INFO);
	if (!f)
		return -ENOMEM;
	say(f->summary, sizeof(f->summary),
	    "The GPUs of server pid %u are unevenly loaded: %s was busy "
	    "%.1f ms, %s %.1f ms, %.1f%% less.", pid, j->in->devs[hi].name,
	    most / 1e6, j->in->devs[lo].name, least / 1e6, 100 * spread);
	num(f->evidence, "pid", pid);
	num(f->evidence, "spread", spread);
	num(f->evidence, "busiest_id", j->in->devs[hi].id);
	num(f->evidence, "busiest_ns", (double)most);
	num(f->evidence, "least_busy_id", j->in->devs[lo].id);
	num(f->evidence, "least_busy_ns", (double)least);
	server_devices(j, pid, false, f->evidence);
	snprintf(f->action, sizeof(f->action),
		 "The others wait for the busiest GPU at every collective: "
		 "rebalance the shards (pipeline stages of equal cost, "
		 "experts spread by load) and check what else runs on it.");
	return 0;
}

static int find_servers(const struct judged *j, struct findings_list *out)
{
	int err = 0;

	for (size_t i = 0; !err && i < j->in->ndevs; i++) {
		if (!first_of_server(j, i))
			continue;
		err = find_comm_share(j, pid_of(j, i), out);
		if (!err)
			err = find_imbalance(j, pid_of(j, i), out);
	}
	return err;
}

/*
 * Prompts that begin as earlier ones did, for a good part of their
 * tokens, but whose server shows little reuse of them: no cache seen at
 * all, or a cache that misses (too small a pool, or requests routed away
 * from the replica that holds their prefix).
 */
#define REUSE_MIN_REPEATED	0.20	/* of all prompt tokens */
#define REUSE_MIN_TOKENS	1000
#define REUSE_LOW		0.50	/* cached / repeated below this */

void findings_prompts_add(struct findings_prompts *p,
			  const struct tt_request *q)
{
	double reach;

	if (q->prompt_tokens <= 0)
		return;
	p->prompt_tokens += q->prompt_tokens;
	if (q->prefix_bytes && q->prompt_bytes) {
		reach = (double)q->prompt_tokens * q->prefix_bytes /
			q->prompt_bytes;
		p->repeated_tokens += reach < q->prompt_tokens - 1 ?
			(uint64_t)reach : (uint64_t)q->prompt_tokens - 1;
	}
	if (q->cached_source != TT_CACHED_NONE) {
		p->cache_known = true;
		p->cache_estimated |= q->cached_source == TT_CACHED_ESTIMATE;
		p->cached_tokens += q->cached_tokens;
	}
}

static int find_prefix_reuse(const struct findings_input *in,
			     struct findings_list *out)
{
	double rep = in->prompts.prompt_tokens ?
		(double)in->prompts.repeated_tokens / in->prompts.prompt_tokens : 0;
	double reuse = in->prompts.repeated_tokens ?
		(double)in->prompts.cached_tokens / in->prompts.repeated_tokens : 0;
	struct finding *f;

	if (rep < REUSE_MIN_REPEATED ||
	    in->prompts.repeated_tokens < REUSE_MIN_TOKENS ||
	    (in->prompts.cache_known && reuse >= REUSE_LOW))
		return 0;
	f = add(out, "prefix_reuse_low", rep >= 0.5 ? FINDINGS_WARNING
						    : FINDINGS_INFO);
	if (!f)
		return -ENOMEM;
	if (!in->prompts.cache_known)
		say(f->summary, sizeof(f->summary),
		    "%.1f%% of the prompt tokens repeat the beginning of an "
		    "earlier prompt to the same model, but the server shows "
		    "no prefix cache: it reports no cached tokens, and their "
		    "prefill cost shows none.", 100 * rep);
	else
		say(f->summary, sizeof(f->summary),
		    "%.1f%% of the prompt tokens repeat the beginning of an "
		    "earlier prompt, but only %.1f%% of those came from the "
		    "prefix cache (%s).", 100 * rep, 100 * reuse,
		    in->prompts.cache_estimated ? "estimated from prefill cost"
					: "as the server reports");
	num(f->evidence, "prompt_tokens", (double)in->prompts.prompt_tokens);
	num(f->evidence, "repeated_prompt_tokens",
	    (double)in->prompts.repeated_tokens);
	num(f->evidence, "repeated_fraction", rep);
	if (in->prompts.cache_known) {
		num(f->evidence, "cached_prompt_tokens",
		    (double)in->prompts.cached_tokens);
		num(f->evidence, "reuse_of_repeated", reuse);
	}
	snprintf(f->action, sizeof(f->action), "%s", in->prompts.cache_known ?
		 "Give the prefix cache more memory (its pool evicts what "
		 "repeats), or route requests that share a prefix to the "
		 "replica that holds it." :
		 "Turn on prefix caching (vLLM: --enable-prefix-caching; "
		 "SGLang's radix cache; llama.cpp: cache_prompt), or have "
		 "the server report usage.prompt_tokens_details.cached_tokens "
		 "if it caches already.");
	return 0;
}

/* ---- the tally ------------------------------------------------------------ */

struct findings_tally *findings_tally_of(const struct findings_input *in)
{
	struct findings_tally *t = calloc(1, sizeof(*t));
	struct steps_span *dem = NULL;
	size_t nd;

	if (!t || in->end_ns < in->start_ns)
		goto fail;
	t->d = calloc(in->ndevs ? in->ndevs : 1, sizeof(*t->d));
	if (!t->d || demand_spans(in, &dem, &nd))
		goto fail;
	for (size_t i = 0; i < in->ndevs; i++) {
		const struct findings_device *d = &in->devs[i];
		struct dev_tally *x = &t->d[t->n++];

		x->id = d->id;
		x->kind = d->kind;
		x->busy_ns = d->steps->busy_ns;
		x->comm_ns = d->comm_ns;
		tally_gaps(in, d, dem, nd, x);
		batch_stats(d->steps, &x->batch);
		itl_by_prefill(d->steps, &x->itl);
		if (tally_intervals(in, d, x))
			goto fail;
	}
	free(dem);
	return t;
fail:
	free(dem);
	findings_tally_free(t);
	return NULL;
}

/* y, which follows x in time, into x. */
static int join_dev(struct dev_tally *x, const struct dev_tally *y)
{
	if (!x->busy_seen) {
		x->head = gap_join(x->head, y->head);
		x->tail = y->tail;
		x->busy_seen = y->busy_seen;
	} else if (!y->busy_seen) {
		x->tail = gap_join(x->tail, y->head);
	} else {
		struct gap g = gap_join(x->tail, y->head);

		inner_gap(x, &g);
		x->tail = y->tail;
	}
	x->idle.with_demand += y->idle.with_demand;
	x->idle.without_demand += y->idle.without_demand;
	x->idle.host_wait += y->idle.host_wait;
	x->idle.kernel_wait += y->idle.kernel_wait;
	x->idle.other += y->idle.other;
	x->launch_gap_ns += y->launch_gap_ns;
	x->busy_ns += y->busy_ns;
	x->comm_ns += y->comm_ns;
	for (int k = 0; k < 3; k++)
		x->copy[k] += y->copy[k];
	x->batch.steps += y->batch.steps;
	if (y->batch.max_seen > x->batch.max_seen)
		x->batch.max_seen = y->batch.max_seen;
	x->batch.entries += y->batch.entries;
	x->batch.decodes += y->batch.decodes;
	x->batch.context_sum += y->batch.context_sum;
	x->batch.step_ns += y->batch.step_ns;
	for (int k = 0; k < 2; k++) {
		x->itl.ns[k] += y->itl.ns[k];
		x->itl.n[k] += y->itl.n[k];
	}
	x->itl.prefill_steps += y->itl.prefill_steps;
	if (y->pids && (!x->pids || y->pids > 1 || y->pid != x->pid)) {
		x->pids = x->pids ? 2 : y->pids;
		x->pid = y->pid;
	}
	return quantile_merge(&x->kernels, &y->kernels);
}

static struct dev_tally *tally_dev(const struct findings_tally *t, uint32_t id)
{
	for (size_t i = 0; i < t->n; i++)
		if (t->d[i].id == id)
			return &t->d[i];
	return NULL;
}

int findings_tally_join(struct findings_tally *a, struct findings_tally *b)
{
	int err = 0;

	for (size_t i = 0; !err && i < b->n; i++) {
		struct dev_tally *x = tally_dev(a, b->d[i].id);

		if (x) {
			err = join_dev(x, &b->d[i]);
			continue;
		}
		/* a device first seen in b: its count so far is b's */
		x = realloc(a->d, (a->n + 1) * sizeof(*x));
		if (!x) {
			err = -ENOMEM;
			break;
		}
		a->d = x;
		a->d[a->n++] = b->d[i];
		memset(&b->d[i].kernels, 0, sizeof(b->d[i].kernels));
	}
	findings_tally_free(b);
	return err;
}

void findings_tally_free(struct findings_tally *t)
{
	if (!t)
		return;
	for (size_t i = 0; t->d && i < t->n; i++)
		quantile_free(&t->d[i].kernels);
	free(t->d);
	free(t);
}

int findings_judge(const struct findings_tally *t,
		   const struct findings_input *in, struct findings_list *out)
{
	struct judged j = { .in = in };
	int err = 0;

	memset(out, 0, sizeof(*out));
	if (in->end_ns < in->start_ns)
		return -EINVAL;
	j.t = calloc(in->ndevs ? in->ndevs : 1, sizeof(*j.t));
	if (!j.t)
		return -ENOMEM;
	for (size_t i = 0; i < in->ndevs; i++)
		j.t[i] = tally_dev(t, in->devs[i].id);
	for (size_t i = 0; !err && i < in->ndevs; i++)
		if (j.t[i])
			err = find_device(in, &in->devs[i], j.t[i], out);
	if (!err)
		err = find_servers(&j, out);
	free(j.t);
	if (!err)
		err = find_tenant_skew(in, out);
	if (!err)
		err = find_prefix_reuse(in, out);
	return err;
}

int findings_compute(const struct findings_input *in,
		     struct findings_list *out)
{
	struct findings_tally *t;
	int err;

	memset(out, 0, sizeof(*out));
	if (in->end_ns < in->start_ns)
		return -EINVAL;
	t = findings_tally_of(in);
	if (!t)
		return -ENOMEM;
	err = findings_judge(t, in, out);
	findings_tally_free(t);
	return err;
}

void findings_free(struct findings_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		cJSON_Delete(l->items[i].evidence);
	free(l->items);
	memset(l, 0, sizeof(*l));
}

const struct finding *findings_get(const struct findings_list *l,
				   const char *id)
{
	for (size_t i = 0; i < l->n; i++)
		if (!strcmp(l->items[i].id, id))
			return &l->items[i];
	return NULL;
}
