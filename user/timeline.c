/*
 * timeline.c - busy and idle time per device: the union of its intervals.
 *
 * In:  struct tt_device and struct tt_interval (compute.h), in any order.
 * Out: per device busy_ns (measure of the union over the window), idle_ns
 *      (window - busy) and sum_ns (plain sum of lengths), timeline.h.
 * Assumes: one clock; single-threaded; intervals are half-open [start, end).
 *
 * Each device keeps a sorted array of disjoint spans. Adding an interval
 * binary-searches the first span that ends at or after its start
 * (O(log n)), swallows every span it overlaps or touches into one (O(k) for
 * k spans merged) and shifts the tail of the array (O(n - i) moves; O(1)
 * when intervals come nearly in time order, as they do from live sources,
 * since the insert point is then at the end). So n intervals in order cost
 * O(n log s) for s spans held, and out-of-order ones at most O(s) each.
 *
 * Memory is bounded by timeline_settle(): everything before a watermark is
 * folded into a running total and freed, so only the spans after the
 * watermark (the ones a late interval could still overlap) are kept. An
 * interval that arrives after its time was folded cannot be merged any
 * more; it is counted busy as it is, and reported as late so that a reader
 * knows by how much busy_ns may be overstated. busy_ns never exceeds the
 * window.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "timeline.h"

struct span {
	uint64_t s, e;		/* [s, e) */
};

struct tdev {
	struct timeline_dev_stats st;	/* id, kind, name, counters */
	struct span *v;			/* sorted, disjoint, not touching */
	size_t n, cap;
	uint64_t settled_ns;		/* busy folded by timeline_settle */
};

struct timeline {
	uint64_t start, end;
	uint64_t watermark;		/* settled up to here */
	struct tdev *devs;
	size_t ndev, cap;
};

struct timeline *timeline_new(uint64_t start_ns, uint64_t end_ns)
{
	struct timeline *tl = calloc(1, sizeof(*tl));

	if (!tl)
		return NULL;
	tl->start = start_ns;
	tl->end = end_ns < start_ns ? start_ns : end_ns;
	tl->watermark = start_ns;
	return tl;
}

void timeline_free(struct timeline *tl)
{
	if (!tl)
		return;
	for (size_t i = 0; i < tl->ndev; i++)
		free(tl->devs[i].v);
	free(tl->devs);
	free(tl);
}

void timeline_set_start(struct timeline *tl, uint64_t start_ns)
{
	tl->start = start_ns;
	tl->watermark = start_ns;
	if (tl->end < start_ns)
		tl->end = start_ns;
}

void timeline_set_end(struct timeline *tl, uint64_t end_ns)
{
	tl->end = end_ns < tl->start ? tl->start : end_ns;
}

uint64_t timeline_window_ns(const struct timeline *tl)
{
	return tl->end == UINT64_MAX ? 0 : tl->end - tl->start;
}

static struct tdev *find_dev(struct timeline *tl, uint32_t id)
{
	for (size_t i = 0; i < tl->ndev; i++)
		if (tl->devs[i].st.id == id)
			return &tl->devs[i];
	return NULL;
}

static struct tdev *new_dev(struct timeline *tl, uint32_t id,
			    enum tt_device_kind kind, const char *name)
{
	struct tdev *d;

	if (tl->ndev == tl->cap) {
		size_t cap = tl->cap ? tl->cap * 2 : 4;
		void *p = realloc(tl->devs, cap * sizeof(*tl->devs));

		if (!p)
			return NULL;
		tl->devs = p;
		tl->cap = cap;
	}
	d = &tl->devs[tl->ndev++];
	memset(d, 0, sizeof(*d));
	d->st.id = id;
	d->st.kind = kind;
	snprintf(d->st.name, sizeof(d->st.name), "%s", name);
	return d;
}

int timeline_add_device(struct timeline *tl, const struct tt_device *dev)
{
	struct tdev *d = find_dev(tl, dev->id);

	if (!d)
		d = new_dev(tl, dev->id, dev->kind, dev->name);
	if (!d)
		return -ENOMEM;
	d->st.kind = dev->kind;
	snprintf(d->st.name, sizeof(d->st.name), "%s", dev->name);
	return 0;
}

/* Index of the first span with e >= s (n if none). */
static size_t first_reaching(const struct tdev *d, uint64_t s)
{
	size_t lo = 0, hi = d->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (d->v[mid].e < s)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static int insert_span(struct tdev *d, uint64_t s, uint64_t e)
{
	size_t i = first_reaching(d, s), j = i;

	while (j < d->n && d->v[j].s <= e) {
		if (d->v[j].s < s)
			s = d->v[j].s;
		if (d->v[j].e > e)
			e = d->v[j].e;
		j++;
	}
	if (j > i) {		/* replace v[i..j) by one span */
		d->v[i] = (struct span){ s, e };
		memmove(&d->v[i + 1], &d->v[j], (d->n - j) * sizeof(d->v[0]));
		d->n -= j - i - 1;
		return 0;
	}
	if (d->n == d->cap) {
		size_t cap = d->cap ? d->cap * 2 : 64;
		void *p = realloc(d->v, cap * sizeof(d->v[0]));

		if (!p)
			return -ENOMEM;
		d->v = p;
		d->cap = cap;
	}
	memmove(&d->v[i + 1], &d->v[i], (d->n - i) * sizeof(d->v[0]));
	d->v[i] = (struct span){ s, e };
	d->n++;
	return 0;
}

int timeline_add(struct timeline *tl, const struct tt_interval *iv)
{
	struct tdev *d = find_dev(tl, iv->device);
	uint64_t s = iv->start_ns, e = iv->end_ns;

	if (!d)
		d = new_dev(tl, iv->device,
			    iv->kind == TT_IV_CPU ? TT_DEV_CPU : TT_DEV_GPU,
			    iv->kind == TT_IV_CPU ? "cpu" : "gpu");
	if (!d)
		return -ENOMEM;
	d->st.intervals++;
	if (s < tl->start)
		s = tl->start;
	if (e > tl->end)
		e = tl->end;
	if (e <= s)
		return 0;
	d->st.sum_ns += e - s;
	if (s < tl->watermark) {	/* late: its time was folded */
		uint64_t cut = e < tl->watermark ? e : tl->watermark;

		d->st.late++;
		d->st.late_ns += cut - s;
		d->settled_ns += cut - s;
		s = cut;
		if (e <= s)
			return 0;
	}
	return insert_span(d, s, e);
}

static void settle_dev(struct tdev *d, uint64_t upto)
{
	size_t k = 0;

	while (k < d->n && d->v[k].e <= upto) {
		d->settled_ns += d->v[k].e - d->v[k].s;
		k++;
	}
	if (k < d->n && d->v[k].s < upto) {	/* straddles: split */
		d->settled_ns += upto - d->v[k].s;
		d->v[k].s = upto;
	}
	memmove(&d->v[0], &d->v[k], (d->n - k) * sizeof(d->v[0]));
	d->n -= k;
}

void timeline_settle(struct timeline *tl, uint64_t upto_ns)
{
	if (upto_ns > tl->end)
		upto_ns = tl->end;
	if (upto_ns <= tl->watermark)
		return;
	for (size_t i = 0; i < tl->ndev; i++)
		settle_dev(&tl->devs[i], upto_ns);
	tl->watermark = upto_ns;
}

size_t timeline_count(const struct timeline *tl)
{
	return tl->ndev;
}

int timeline_stats(const struct timeline *tl, size_t i,
		   struct timeline_dev_stats *out)
{
	const struct tdev *d;
	uint64_t busy, window = timeline_window_ns(tl);

	if (i >= tl->ndev)
		return -ENOENT;
	d = &tl->devs[i];
	*out = d->st;
	busy = d->settled_ns;
	for (size_t k = 0; k < d->n; k++) {
		uint64_t e = d->v[k].e < tl->end ? d->v[k].e : tl->end;

		if (e > d->v[k].s)
			busy += e - d->v[k].s;
	}
	if (window && busy > window)
		busy = window;
	out->busy_ns = busy;
	out->idle_ns = window > busy ? window - busy : 0;
	return 0;
}

static void sink_device(void *ctx, const struct tt_device *dev)
{
	timeline_add_device(ctx, dev);
}

static void sink_interval(void *ctx, const struct tt_interval *iv)
{
	timeline_add(ctx, iv);
}

void timeline_sink(struct timeline *tl, struct tt_compute_sink *sink)
{
	memset(sink, 0, sizeof(*sink));
	sink->device = sink_device;
	sink->interval = sink_interval;
	sink->ctx = tl;
}
