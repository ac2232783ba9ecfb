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
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "findings.h"
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

struct idle_split {
	uint64_t with_demand, without_demand;
	uint64_t host_wait, kernel_wait, other;
};

/* Where one idle gap [a, b) goes. edge: it touches the window's ends. */
static void split_gap(const struct findings_device *d,
		      const struct steps_span *dem, size_t nd, uint64_t a,
		      uint64_t b, bool edge, struct idle_split *s)
{
	uint64_t w = steps_busy_in(dem, nd, a, b);

	s->with_demand += w;
	s->without_demand += (b - a) - w;
	if (!w)
		return;
	if (d->kind == TT_DEV_CPU || edge)
		s->host_wait += w;
	else if (b - a < KERNEL_WAIT_MAX_NS)
		s->kernel_wait += w;
	else if (step_end_in(d->steps, a, b))
		s->host_wait += w;
	else
		s->other += w;
}

static void idle_gaps(const struct findings_input *in,
		      const struct findings_device *d,
		      const struct steps_span *dem, size_t nd,
		      struct idle_split *s)
{
	const struct steps_span *b = d->steps->busy;
	size_t n = d->steps->nbusy;
	uint64_t t = in->start_ns;

	memset(s, 0, sizeof(*s));
	for (size_t i = 0; i < n; i++) {
		if (b[i].start_ns > t)
			split_gap(d, dem, nd, t, b[i].start_ns, i == 0, s);
		t = b[i].end_ns;
	}
	if (in->end_ns > t)
		split_gap(d, dem, nd, t, in->end_ns, true, s);
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
		     const struct steps_span *dem, size_t nd,
		     struct findings_list *out)
{
	uint64_t wall = in->end_ns - in->start_ns;
	struct idle_split s;
	struct finding *f;

	if (!wall)
		return 0;
	idle_gaps(in, d, dem, nd, &s);
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

struct batch_stats {
	uint32_t steps, max_seen;
	uint64_t entries, decodes, context_sum, step_ns;
};

static void batch_stats(const struct steps_result *r, struct batch_stats *b)
{
	memset(b, 0, sizeof(*b));
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
			  struct findings_list *out)
{
	const struct costmodel *m = d->model;
	struct batch_stats b;

	batch_stats(d->steps, &b);
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

/* Median kernel length and count of the device's kernels in the window. */
static int kernel_median(const struct findings_input *in,
			 const struct findings_device *d, uint64_t *median,
			 size_t *count)
{
	uint64_t *k = malloc((d->nivs ? d->nivs : 1) * sizeof(*k));
	size_t n = 0;

	if (!k)
		return -ENOMEM;
	for (size_t i = 0; i < d->nivs; i++) {
		const struct tt_interval *iv = &d->ivs[i];
		if (iv->device != d->id || iv->kind != TT_IV_KERNEL ||
		    iv->end_ns <= iv->start_ns || iv->end_ns < in->start_ns ||
		    iv->start_ns > in->end_ns)
			continue;
		k[n++] = iv->end_ns - iv->start_ns;
	}
	*median = n ? select_u64(k, n, n / 2) : 0;
	*count = n;
	free(k);
	return 0;
}

static int find_launch_bound(const struct findings_input *in,
			     const struct findings_device *d,
			     struct findings_list *out)
{
	const struct steps_span *b = d->steps->busy;
	uint64_t median, gaps = 0;
	size_t count;

	if (d->kind != TT_DEV_GPU)
		return 0;
	if (kernel_median(in, d, &median, &count))
		return -ENOMEM;
	if (count < LAUNCH_MIN_KERNELS || median >= LAUNCH_MEDIAN_KERNEL_NS)
		return 0;
	for (size_t i = 1; i < d->steps->nbusy; i++) {
		uint64_t g = b[i].start_ns - b[i - 1].end_ns;
		if (g < LAUNCH_GAP_MAX_NS)
			gaps += g;
	}
	double share = (double)gaps / (d->steps->busy_ns + gaps);
	if (share < LAUNCH_MIN_GAP_SHARE)
		return 0;
	struct finding *f = add(out, "launch_bound",
				share >= 0.5 ? FINDINGS_WARNING
					     : FINDINGS_INFO);
	if (!f)
		return -ENOMEM;
	say(f->summary, sizeof(f->summary),
	    "%s ran %zu kernels with a median of %.1f us; gaps between "
	    "them took %.1f%% of the time the work was running.", d->name,
	    count, median / 1e3, 100 * share);
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

struct itl_sum {
	double ns[2];
	uint64_t n[2];		/* [0] steps without prefill, [1] with */
	uint32_t prefill_steps;
};

static void itl_by_prefill(const struct steps_result *r, struct itl_sum *s)
{
	memset(s, 0, sizeof(*s));
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
				     struct findings_list *out)
{
	struct itl_sum s;

	itl_by_prefill(d->steps, &s);
	if (s.n[0] < PREFILL_MIN_SAMPLES || s.n[1] < PREFILL_MIN_SAMPLES)
		return 0;
	double without = s.ns[0] / s.n[0] / 1e6, with = s.ns[1] / s.n[1] / 1e6;
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

/* The union of device d's kernels in the window, sorted (caller frees). */
static int kernel_union(const struct findings_input *in,
			const struct findings_device *d,
			struct steps_span **out, size_t *nout)
{
	struct steps_span *s = malloc((d->nivs ? d->nivs : 1) * sizeof(*s));
	size_t n = 0;

	if (!s)
		return -ENOMEM;
	for (size_t i = 0; i < d->nivs; i++) {
		const struct tt_interval *iv = &d->ivs[i];
		uint64_t a = iv->start_ns > in->start_ns ? iv->start_ns
							 : in->start_ns;
		uint64_t b = iv->end_ns < in->end_ns ? iv->end_ns : in->end_ns;

		if (iv->device == d->id && iv->kind == TT_IV_KERNEL && b > a)
			s[n++] = (struct steps_span){ a, b };
	}
	*out = s;
	*nout = steps_merge_spans(s, n);
	return 0;
}

/* Copy time the device spent on copies alone (not under a kernel). */
static int find_copy_overhead(const struct findings_input *in,
			      const struct findings_device *d,
			      struct findings_list *out)
{
	uint64_t by[3] = { 0 };	/* htod, dtoh, other */
	struct steps_span *k;
	size_t nk;

	if (kernel_union(in, d, &k, &nk))
		return -ENOMEM;
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

		by[iv->copy_kind == TT_COPY_HTOD ? 0 :
		   iv->copy_kind == TT_COPY_DTOH ? 1 : 2] += b - a - hidden;
	}
	free(k);
	uint64_t copy = by[0] + by[1] + by[2], busy = d->steps->busy_ns;
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
		       const struct steps_span *dem, size_t nd,
		       struct findings_list *out)
{
	int err = find_idle(in, d, dem, nd, out);
	if (!err)
		err = find_low_batch(in, d, out);
	if (!err)
		err = find_launch_bound(in, d, out);
	if (!err)
		err = find_prefill_interference(d, out);
	if (!err)
		err = find_copy_overhead(in, d, out);
	return err;
}

/* Whether d is a GPU of server pid. */
static bool on_server(const struct findings_device *d, uint32_t pid)
{
	return d->kind == TT_DEV_GPU && d->pid == pid;
}

/* Whether devs[i] is the first GPU of a server (one process, pid not 0). */
static bool first_of_server(const struct findings_input *in, size_t i)
{
	if (!in->devs[i].pid || !on_server(&in->devs[i], in->devs[i].pid))
		return false;
	for (size_t j = 0; j < i; j++)
		if (on_server(&in->devs[j], in->devs[i].pid))
			return false;
	return true;
}

/* A {name, id, ...} object for each GPU of server pid, in a new array key
 * of ev; with comm, its communication time too. */
static void server_devices(const struct findings_input *in, uint32_t pid,
			   bool comm, cJSON *ev)
{
	cJSON *a = cJSON_AddArrayToObject(ev, "devices");

	for (size_t i = 0; a && i < in->ndevs; i++) {
		const struct findings_device *d = &in->devs[i];
		cJSON *o;

		if (!on_server(d, pid) || !(o = cJSON_CreateObject()))
			continue;
		cJSON_AddItemToArray(a, o);
		cJSON_AddStringToObject(o, "name", d->name);
		num(o, "id", d->id);
		if (comm)
			num(o, "comm_ns", (double)d->comm_ns);
		num(o, "busy_ns", (double)d->steps->busy_ns);
	}
}

static int find_comm_share(const struct findings_input *in, uint32_t pid,
			   struct findings_list *out)
{
	uint64_t comm = 0, busy = 0;
	size_t n = 0;

	for (size_t i = 0; i < in->ndevs; i++)
		if (on_server(&in->devs[i], pid)) {
			comm += in->devs[i].comm_ns;
			busy += in->devs[i].steps->busy_ns;
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
	server_devices(in, pid, true, f->evidence);
	snprintf(f->action, sizeof(f->action),
		 "The GPUs spend much of their time exchanging activations: "
		 "use fewer tensor-parallel ranks (and more replicas) if the "
		 "model fits, a faster interconnect (NVLink rather than "
		 "PCIe), or an engine that overlaps communication with "
		 "compute.");
	return 0;
}

static int find_imbalance(const struct findings_input *in, uint32_t pid,
			  struct findings_list *out)
{
	const struct findings_device *hi = NULL, *lo = NULL;
	size_t n = 0;

	for (size_t i = 0; i < in->ndevs; i++) {
		const struct findings_device *d = &in->devs[i];

		if (!on_server(d, pid))
			continue;
		n++;
		if (!hi || d->steps->busy_ns > hi->steps->busy_ns)
			hi = d;
		if (!lo || d->steps->busy_ns < lo->steps->busy_ns)
			lo = d;
	}
	if (n < 2 || !hi->steps->busy_ns)
		return 0;
	uint64_t most = hi->steps->busy_ns, least = lo->steps->busy_ns;
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
	    "%.1f ms, %s %.1f ms, %.1f%% less.", pid, hi->name, most / 1e6,
	    lo->name, least / 1e6, 100 * spread);
	num(f->evidence, "pid", pid);
	num(f->evidence, "spread", spread);
	num(f->evidence, "busiest_id", hi->id);
	num(f->evidence, "busiest_ns", (double)most);
	num(f->evidence, "least_busy_id", lo->id);
	num(f->evidence, "least_busy_ns", (double)least);
	server_devices(in, pid, false, f->evidence);
	snprintf(f->action, sizeof(f->action),
		 "The others wait for the busiest GPU at every collective: "
		 "rebalance the shards (pipeline stages of equal cost, "
		 "experts spread by load) and check what else runs on it.");
	return 0;
}

static int find_servers(const struct findings_input *in,
			struct findings_list *out)
{
	int err = 0;

	for (size_t i = 0; !err && i < in->ndevs; i++) {
		if (!first_of_server(in, i))
			continue;
		err = find_comm_share(in, in->devs[i].pid, out);
		if (!err)
			err = find_imbalance(in, in->devs[i].pid, out);
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

static int find_prefix_reuse(const struct findings_input *in,
			     struct findings_list *out)
{
	double rep = in->prompt_tokens ?
		(double)in->repeated_tokens / in->prompt_tokens : 0;
	double reuse = in->repeated_tokens ?
		(double)in->cached_tokens / in->repeated_tokens : 0;
	struct finding *f;

	if (rep < REUSE_MIN_REPEATED ||
	    in->repeated_tokens < REUSE_MIN_TOKENS ||
	    (in->cache_known && reuse >= REUSE_LOW))
		return 0;
	f = add(out, "prefix_reuse_low", rep >= 0.5 ? FINDINGS_WARNING
						    : FINDINGS_INFO);
	if (!f)
		return -ENOMEM;
	if (!in->cache_known)
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
		    in->cache_estimated ? "estimated from prefill cost"
					: "as the server reports");
	num(f->evidence, "prompt_tokens", (double)in->prompt_tokens);
	num(f->evidence, "repeated_prompt_tokens",
	    (double)in->repeated_tokens);
	num(f->evidence, "repeated_fraction", rep);
	if (in->cache_known) {
		num(f->evidence, "cached_prompt_tokens",
		    (double)in->cached_tokens);
		num(f->evidence, "reuse_of_repeated", reuse);
	}
	snprintf(f->action, sizeof(f->action), "%s", in->cache_known ?
		 "Give the prefix cache more memory (its pool evicts what "
		 "repeats), or route requests that share a prefix to the "
		 "replica that holds it." :
		 "Turn on prefix caching (vLLM: --enable-prefix-caching; "
		 "SGLang's radix cache; llama.cpp: cache_prompt), or have "
		 "the server report usage.prompt_tokens_details.cached_tokens "
		 "if it caches already.");
	return 0;
}

int findings_compute(const struct findings_input *in,
		     struct findings_list *out)
{
	struct steps_span *dem;
	size_t nd;
	int err;

	memset(out, 0, sizeof(*out));
	if (in->end_ns < in->start_ns)
		return -EINVAL;
	err = demand_spans(in, &dem, &nd);
	if (err)
		return err;
	for (size_t i = 0; !err && i < in->ndevs; i++)
		err = find_device(in, &in->devs[i], dem, nd, out);
	free(dem);
	if (!err)
		err = find_servers(in, out);
	if (!err)
		err = find_tenant_skew(in, out);
	if (!err)
		err = find_prefix_reuse(in, out);
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
