/*
 * collect.c - the collector's store: everything one traced interval
 * produced, kept in memory and, when a trace writer is attached, appended
 * to a trace file as it arrives.
 *
 * In:  compute sources' callbacks (collect_sink), finished requests
 *      (collect_add_request), the window and losses; or a trace file
 *      (collect_load).
 * Out: struct report_input for report_build (collect_report_input), and
 *      the same arrays for exporters.
 * Assumes: one thread. Memory is bounded by spilling to the trace file
 *      (collect_set_spill, then collect_reload for the report) or by the
 *      limits of collect_set_limits (see collect.h); with neither, it
 *      grows with every interval and request kept (reading a trace).
 *
 * Devices are kept one per id (a later report of the same id replaces the
 * earlier); kernel names one per (pid, name id). Compute losses follow
 * the sources' conventions: the CPU source reports increments, a CUPTI
 * library its running totals per process, so the store keeps the latest
 * total per pid and sums them.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "collect.h"
#include "tracefile.h"
#include "tokentrace/sock.h"

#define COLLECT_TICK_NS	1000000000ull

/* Grow *arr (element size sz) to hold one more; false on OOM. */
static bool grow(void **arr, size_t *cap, size_t n, size_t sz)
{
	size_t ncap;
	void *p;

	if (n < *cap)
		return true;
	ncap = *cap ? *cap * 2 : 64;
	p = realloc(*arr, ncap * sz);
	if (!p)
		return false;
	*arr = p;
	*cap = ncap;
	return true;
}

static void note_err(struct collect *c, int err)
{
	if (err && !c->write_error)
		c->write_error = err;
}

void collect_init(struct collect *c)
{
	memset(c, 0, sizeof(*c));
	snprintf(c->compute, sizeof(c->compute), "auto");
}

void collect_free(struct collect *c)
{
	if (c->writer)
		tracefile_close(c->writer);
	for (size_t i = 0; i < c->nreqs; i++)
		free((void *)c->reqs[i].token_ns);
	for (size_t i = 0; i < c->nnames; i++)
		free(c->names[i].name);
	free(c->reqs);
	free(c->devs);
	free(c->ivs);
	free(c->names);
	free(c->pid_losses);
	free(c->price_store);
	free(c->price_default);
	free(c->name_store);
	free(c->hosts);
	memset(c, 0, sizeof(*c));
}

/* ---- what arrives -------------------------------------------------------- */

static void add_device(struct collect *c, const struct tt_device *d)
{
	size_t i;

	for (i = 0; i < c->ndevs && c->devs[i].id != d->id; i++)
		;
	if (i < c->ndevs) {
		if (!memcmp(&c->devs[i], d, sizeof(*d)))
			return;
	} else {
		if (!grow((void **)&c->devs, &c->capdevs, c->ndevs,
			  sizeof(*d)))
			return;
		c->ndevs++;
	}
	c->devs[i] = *d;
	if (c->writer)
		note_err(c, tracefile_put_device(c->writer, d));
}

/* Whether the next interval (or request) is kept in memory: not when it
 * went to a spilling writer, nor beyond the limit (then it is counted). */
static bool keep(struct collect *c, size_t n, size_t max, uint64_t *dropped)
{
	if (c->writer && c->spill)
		return false;
	if (max && n >= max) {
		(*dropped)++;
		return false;
	}
	return true;
}

static void add_interval(struct collect *c, const struct tt_interval *iv)
{
	c->ivs_seen++;
	if (c->writer)
		note_err(c, tracefile_put_interval(c->writer, iv));
	if (!keep(c, c->nivs, c->max_ivs, &c->ivs_dropped))
		return;
	if (!grow((void **)&c->ivs, &c->capivs, c->nivs, sizeof(*iv))) {
		c->ivs_dropped++;
		return;
	}
	c->ivs[c->nivs++] = *iv;
}

void collect_add_step(struct collect *c, uint32_t pid, uint32_t tid,
		      uint64_t start_ns, uint64_t end_ns,
		      const struct tt_sock_step *batch)
{
	struct tt_interval iv = {
		.start_ns = start_ns, .end_ns = end_ns,
		.device = TT_STEP_DEVICE, .pid = pid, .tid = tid,
		.kind = TT_IV_STEP, .bytes = batch ? batch->n_tokens : 0,
	};

	add_interval(c, &iv);
	for (uint32_t i = 0; batch && i < batch->nruns; i++) {
		const struct tt_sock_run *u = &batch->runs[i];

		iv.kind = TT_IV_SEQ;
		iv.stream = (uint32_t)u->seq;
		iv.correlation = (uint32_t)u->pos;
		iv.bytes = u->tokens;
		iv.name_id = u->out;
		add_interval(c, &iv);
	}
}

static void add_name(struct collect *c, uint32_t pid, uint32_t id,
		     const char *name)
{
	struct collect_name *n = NULL;
	char *s = strdup(name ? name : "");

	if (!s)
		return;
	for (size_t i = 0; i < c->nnames; i++)
		if (c->names[i].pid == pid && c->names[i].name_id == id)
			n = &c->names[i];
	if (!n) {
		if (!grow((void **)&c->names, &c->capnames, c->nnames,
			  sizeof(*n))) {
			free(s);
			return;
		}
		n = &c->names[c->nnames++];
		n->pid = pid;
		n->name_id = id;
		n->name = NULL;
	}
	free(n->name);
	n->name = s;
	if (c->writer)
		note_err(c, tracefile_put_name(c->writer, pid, id, s));
}

/* What was lost while the current file was written: the running totals
 * less those at its start (a rotated chain's files sum to the whole). */
static struct report_losses file_losses(const struct collect *c)
{
	const struct report_losses *a = &c->losses, *b = &c->losses_base;

	return (struct report_losses){
		.cpu_events = a->cpu_events - b->cpu_events,
		.sock_events = a->sock_events - b->sock_events,
		.sock_bytes = a->sock_bytes - b->sock_bytes,
		.cupti_records = a->cupti_records - b->cupti_records,
	};
}

static int put_losses(struct collect *c, struct tracefile_writer *w)
{
	struct report_losses l = file_losses(c);

	return tracefile_put_losses(w, &l);
}

/* The start of the current file's window. */
static uint64_t file_start(const struct collect *c)
{
	return c->file_start_ns > c->start_ns ? c->file_start_ns : c->start_ns;
}

static void sum_pid_losses(struct collect *c)
{
	c->losses.cupti_records = 0;
	for (size_t i = 0; i < c->npid_losses; i++)
		c->losses.cupti_records += c->pid_losses[i].dropped;
}

static void add_losses(struct collect *c, uint32_t pid,
		       const struct tt_compute_losses *l)
{
	size_t i;

	c->losses.cpu_events += l->cpu_events_lost;
	if (l->cupti_dropped || l->lib_dropped) {
		for (i = 0; i < c->npid_losses &&
		     c->pid_losses[i].pid != pid; i++)
			;
		if (i == c->npid_losses) {
			if (!grow((void **)&c->pid_losses, &c->cappid_losses,
				  c->npid_losses, sizeof(*c->pid_losses)))
				return;
			c->pid_losses[c->npid_losses++].pid = pid;
		}
		c->pid_losses[i].dropped = l->cupti_dropped + l->lib_dropped;
		sum_pid_losses(c);
	}
	if (c->writer)
		note_err(c, put_losses(c, c->writer));
}

static void sink_device(void *ctx, const struct tt_device *d)
{
	add_device(ctx, d);
}

static void sink_interval(void *ctx, const struct tt_interval *iv)
{
	add_interval(ctx, iv);
}

static void sink_name(void *ctx, uint32_t pid, uint32_t id, const char *n)
{
	add_name(ctx, pid, id, n);
}

static void sink_losses(void *ctx, uint32_t pid,
			const struct tt_compute_losses *l)
{
	add_losses(ctx, pid, l);
}

void collect_sink(struct collect *c, struct tt_compute_sink *sink)
{
	*sink = (struct tt_compute_sink){ .device = sink_device,
		.interval = sink_interval, .name = sink_name,
		.losses = sink_losses, .ctx = c };
}

int collect_add_request(struct collect *c, const struct tt_request *q)
{
	struct tt_request *k, cut = *q;
	uint64_t *tok = NULL;
	uint32_t n = q->token_ns ? q->token_ns_len : 0;

	if (n > TT_TOKEN_NS_MAX)
		n = TT_TOKEN_NS_MAX;
	cut.token_ns_len = n;
	c->reqs_seen++;
	if (c->writer)
		note_err(c, tracefile_put_request(c->writer, &cut));
	if (!keep(c, c->nreqs, c->max_reqs, &c->reqs_dropped))
		return 0;
	if (!grow((void **)&c->reqs, &c->capreqs, c->nreqs, sizeof(*q)))
		goto oom;
	if (n) {
		tok = malloc(n * sizeof(*tok));
		if (!tok)
			goto oom;
		memcpy(tok, q->token_ns, n * sizeof(*tok));
	}
	k = &c->reqs[c->nreqs++];
	*k = cut;
	k->token_ns = tok;
	return 0;
oom:
	c->reqs_dropped++;
	return -ENOMEM;
}

void collect_set_limits(struct collect *c, size_t max_reqs, size_t max_ivs)
{
	c->max_reqs = max_reqs;
	c->max_ivs = max_ivs;
}

void collect_set_compute(struct collect *c, const char *source,
			 uint32_t max_batch)
{
	snprintf(c->compute, sizeof(c->compute), "%s",
		 source ? source : "auto");
	c->max_batch = max_batch;
	if (c->writer)
		note_err(c, tracefile_put_compute(c->writer, c->compute,
						  max_batch));
}

void collect_set_hooks(struct collect *c, const char *hooks)
{
	if (!strcmp(c->hooks, hooks))
		return;
	snprintf(c->hooks, sizeof(c->hooks), "%s", hooks);
	if (c->writer)
		note_err(c, tracefile_put_hooks(c->writer, c->hooks));
}

void collect_set_start(struct collect *c, uint64_t start_ns)
{
	c->start_ns = start_ns;
	c->end_ns = start_ns;
	c->last_tick_ns = start_ns;
	if (c->writer)
		note_err(c, tracefile_put_window(c->writer, start_ns, start_ns,
						 false));
}

void collect_set_sock_losses(struct collect *c, uint64_t events,
			     uint64_t bytes)
{
	c->losses.sock_events = events;
	c->losses.sock_bytes = bytes;
}

/* ---- the trace file ------------------------------------------------------ */

/* Everything kept so far, to a writer just attached. */
static int write_all_kept(struct collect *c, struct tracefile_writer *w)
{
	int err = tracefile_put_compute(w, c->compute, c->max_batch);

	if (!err && c->hooks[0])
		err = tracefile_put_hooks(w, c->hooks);

	if (!err && c->start_ns)
		err = tracefile_put_window(w, file_start(c), c->end_ns,
					   c->window_closed);
	for (size_t i = 0; !err && i < c->ndevs; i++)
		err = tracefile_put_device(w, &c->devs[i]);
	for (size_t i = 0; !err && i < c->nnames; i++)
		err = tracefile_put_name(w, c->names[i].pid,
					 c->names[i].name_id,
					 c->names[i].name);
	for (size_t i = 0; !err && i < c->nivs; i++)
		err = tracefile_put_interval(w, &c->ivs[i]);
	for (size_t i = 0; !err && i < c->nreqs; i++)
		err = tracefile_put_request(w, &c->reqs[i]);
	if (!err)
		err = put_losses(c, w);
	return err;
}

/* Free the requests and intervals kept (they are in the trace file). */
static void drop_kept(struct collect *c)
{
	for (size_t i = 0; i < c->nreqs; i++)
		free((void *)c->reqs[i].token_ns);
	free(c->reqs);
	free(c->ivs);
	c->reqs = NULL;
	c->ivs = NULL;
	c->nreqs = c->capreqs = c->nivs = c->capivs = 0;
}

size_t collect_forget_before(struct collect *c, uint64_t t,
			     void (*gone)(void *ctx,
					  const struct tt_request *q),
			     void *ctx)
{
	size_t k = 0, n = 0;

	for (size_t i = 0; i < c->nreqs; i++) {
		if (c->reqs[i].end_ns >= t) {
			c->reqs[k++] = c->reqs[i];
			continue;
		}
		if (gone)
			gone(ctx, &c->reqs[i]);
		free((void *)c->reqs[i].token_ns);
		n++;
	}
	c->nreqs = k;
	k = 0;
	for (size_t i = 0; i < c->nivs; i++)
		if (c->ivs[i].end_ns > t)
			c->ivs[k++] = c->ivs[i];
	c->nivs = k;
	if (c->start_ns < t)
		c->start_ns = t;
	return n;
}

int collect_attach_writer(struct collect *c, struct tracefile_writer *w)
{
	if (c->writer)
		tracefile_close(c->writer);
	c->writer = w;
	if (!w)
		return 0;
	note_err(c, write_all_kept(c, w));
	if (c->spill)
		drop_kept(c);
	return c->write_error;
}

void collect_set_spill(struct collect *c, bool on)
{
	c->spill = on;
	if (on && c->writer)
		drop_kept(c);
}

static int load_one(struct collect *n, const char *path, FILE *log)
{
	return collect_load(n, path, log, NULL);
}

int collect_reload_with(struct collect *c, const char *path, FILE *log,
			int (*load)(struct collect *n, const char *path,
				    FILE *log))
{
	struct collect n;
	int err;

	collect_init(&n);
	err = load(&n, path, log);
	if (err) {
		fprintf(log ? log : stderr, "tokentrace: cannot read the trace "
			"%s back for the report: %s (tokentrace report %s "
			"may still read what it holds)\n", path,
			strerror(-err), path);
		collect_free(&n);
		return err;
	}
	n.host = c->host;
	n.max_reqs = c->max_reqs;
	n.max_ivs = c->max_ivs;
	n.reqs_dropped = c->reqs_dropped;
	n.ivs_dropped = c->ivs_dropped;
	n.reqs_seen = c->reqs_seen;
	n.ivs_seen = c->ivs_seen;
	n.write_error = c->write_error;
	collect_free(c);
	*c = n;
	return 0;
}

int collect_reload(struct collect *c, const char *path, FILE *log)
{
	return collect_reload_with(c, path, log, load_one);
}

int collect_tick(struct collect *c, uint64_t now_ns)
{
	if (!c->writer || now_ns - c->last_tick_ns < COLLECT_TICK_NS)
		return c->write_error;
	c->last_tick_ns = now_ns;
	if (!c->window_closed && now_ns > c->end_ns)
		c->end_ns = now_ns;
	note_err(c, tracefile_put_window(c->writer, file_start(c), c->end_ns,
					 false));
	note_err(c, put_losses(c, c->writer));
	note_err(c, tracefile_flush(c->writer));
	return c->write_error;
}

int collect_close(struct collect *c, uint64_t end_ns)
{
	c->end_ns = end_ns;
	c->window_closed = true;
	if (!c->writer)
		return c->write_error;
	note_err(c, tracefile_put_window(c->writer, file_start(c), end_ns,
					 true));
	note_err(c, put_losses(c, c->writer));
	note_err(c, tracefile_close(c->writer));
	c->writer = NULL;
	return c->write_error;
}

int collect_rotate(struct collect *c, struct tracefile_writer *w,
		   uint64_t now_ns)
{
	if (c->writer) {
		if (now_ns > c->end_ns)
			c->end_ns = now_ns;
		note_err(c, tracefile_put_window(c->writer, file_start(c),
						 now_ns, true));
		note_err(c, put_losses(c, c->writer));
		note_err(c, tracefile_close(c->writer));
		c->writer = NULL;
	}
	c->losses_base = c->losses;
	c->file_start_ns = now_ns;
	c->last_tick_ns = now_ns;
	return collect_attach_writer(c, w);
}

/* ---- the report's input -------------------------------------------------- */

static double price_for(const struct collect_prices *p,
			const struct tt_device *d, bool *dflt)
{
	for (size_t i = 0; p && i < p->n; i++)
		if (p->list[i].device_name &&
		    !strcmp(p->list[i].device_name, d->name)) {
			*dflt = false;
			return p->list[i].usd_per_hour;
		}
	*dflt = true;
	if (d->kind == TT_DEV_CPU)
		return p && p->cpu_default >= 0 ? p->cpu_default :
		       COLLECT_CPU_USD_PER_HOUR;
	return p && p->gpu_default >= 0 ? p->gpu_default :
	       COLLECT_GPU_USD_PER_HOUR;
}

/* The kernel names as the report reads them, in c->name_store. */
static int report_names(struct collect *c)
{
	free(c->name_store);
	c->name_store = malloc((c->nnames ? c->nnames : 1) *
			       sizeof(*c->name_store));
	if (!c->name_store)
		return -ENOMEM;
	for (size_t i = 0; i < c->nnames; i++)
		c->name_store[i] = (struct report_name){
			.pid = c->names[i].pid,
			.name_id = c->names[i].name_id,
			.name = c->names[i].name,
		};
	return 0;
}

int collect_report_input(struct collect *c, const struct collect_prices *p,
			 struct report_input *in)
{
	size_t n = c->ndevs + 1;

	free(c->price_store);
	free(c->price_default);
	c->price_store = calloc(n, sizeof(*c->price_store));
	c->price_default = calloc(n, sizeof(*c->price_default));
	c->nprice_store = 0;
	if (!c->price_store || !c->price_default || report_names(c))
		return -ENOMEM;
	for (size_t i = 0; i < c->ndevs; i++) {
		struct report_price *rp = &c->price_store[c->nprice_store];

		rp->device_name = c->devs[i].name;
		rp->usd_per_hour = price_for(p, &c->devs[i],
				&c->price_default[c->nprice_store]);
		c->nprice_store++;
	}
	memset(in, 0, sizeof(*in));
	in->start_ns = c->start_ns;
	in->end_ns = c->end_ns > c->start_ns ? c->end_ns : c->start_ns;
	in->reqs = c->reqs;
	in->nreqs = c->nreqs;
	in->devs = c->devs;
	in->ndevs = c->ndevs;
	in->ivs = c->ivs;
	in->nivs = c->nivs;
	in->names = c->name_store;
	in->nnames = c->nnames;
	in->prices = c->price_store;
	in->nprices = c->nprice_store;
	in->default_usd_per_hour = p && p->gpu_default >= 0 ? p->gpu_default :
				   COLLECT_GPU_USD_PER_HOUR;
	in->compute = c->compute;
	in->hooks = c->hooks;
	in->max_batch = c->max_batch;
	in->losses = c->losses;
	in->hosts = (const char (*)[64])c->hosts;
	in->nhosts = c->nhosts;
	return 0;
}

bool collect_price_is_default(const struct collect *c, const char *dev)
{
	for (size_t i = 0; i < c->nprice_store; i++)
		if (!strcmp(c->price_store[i].device_name, dev))
			return c->price_default[i];
	return true;
}

/* ---- loading a trace ----------------------------------------------------- */

struct load {
	struct collect *c;
	bool have_window;
};

static void ld_request(void *ctx, const struct tt_request *q)
{
	struct load *l = ctx;

	collect_add_request(l->c, q);
}

static void ld_device(void *ctx, const struct tt_device *d)
{
	add_device(((struct load *)ctx)->c, d);
}

static void ld_interval(void *ctx, const struct tt_interval *iv)
{
	add_interval(((struct load *)ctx)->c, iv);
}

static void ld_name(void *ctx, uint32_t pid, uint32_t id, const char *n)
{
	add_name(((struct load *)ctx)->c, pid, id, n);
}

static void ld_losses(void *ctx, const struct report_losses *los)
{
	((struct load *)ctx)->c->losses = *los;
}

static void ld_window(void *ctx, uint64_t s, uint64_t e, bool closed)
{
	struct load *l = ctx;

	if (l->c->window_closed && !closed)
		return;
	l->have_window = true;
	l->c->start_ns = s;
	l->c->end_ns = e;
	l->c->window_closed = closed;
}

static void ld_hooks(void *ctx, const char *hooks)
{
	struct load *l = ctx;

	snprintf(l->c->hooks, sizeof(l->c->hooks), "%s", hooks);
}

static void ld_compute(void *ctx, const char *src, uint32_t max_batch)
{
	struct load *l = ctx;

	snprintf(l->c->compute, sizeof(l->c->compute), "%s", src);
	l->c->max_batch = max_batch;
}

/* No window record survived: span what the records cover. */
static void window_from_data(struct collect *c)
{
	uint64_t lo = UINT64_MAX, hi = 0;

	for (size_t i = 0; i < c->nivs; i++) {
		lo = c->ivs[i].start_ns < lo ? c->ivs[i].start_ns : lo;
		hi = c->ivs[i].end_ns > hi ? c->ivs[i].end_ns : hi;
	}
	for (size_t i = 0; i < c->nreqs; i++) {
		lo = c->reqs[i].arrival_ns < lo ? c->reqs[i].arrival_ns : lo;
		hi = c->reqs[i].end_ns > hi ? c->reqs[i].end_ns : hi;
	}
	c->start_ns = lo == UINT64_MAX ? 0 : lo;
	c->end_ns = hi > c->start_ns ? hi : c->start_ns;
}

int collect_load(struct collect *c, const char *path, FILE *log,
		 struct tracefile_header *header)
{
	struct load l = { c, false };
	struct tracefile_handlers h = {
		.request = ld_request, .device = ld_device,
		.interval = ld_interval, .name = ld_name,
		.losses = ld_losses, .window = ld_window,
		.compute = ld_compute, .hooks = ld_hooks, .ctx = &l,
		.log = log ? log : stderr,
	};
	struct tracefile_header hdr;
	struct tracefile_stats st;
	int err;

	err = tracefile_read(path, &h, &hdr, &st);
	if (err)
		return err;
	c->host = hdr.host;
	if (header)
		*header = hdr;
	if (!l.have_window)
		window_from_data(c);
	collect_count_read(c, &st);
	return 0;
}

void collect_count_read(struct collect *c, const struct tracefile_stats *st)
{
	c->trace_blocks_ok += st->blocks_ok;
	c->trace_blocks_skipped += st->blocks_skipped;
	c->trace_bytes_skipped += st->bytes_skipped;
	c->trace_records_skipped += st->records_skipped;
	c->trace_cut |= st->cut;
}

/* ---- one file of several ------------------------------------------------- */

struct part {
	struct collect *c;
	const struct collect_part *p;
	uint32_t pid_add;
	struct collect_idmap *map;		/* the file's device ids */
	size_t nmap, capmap;
	bool have_window, closed;
	uint64_t start_ns, end_ns;		/* the file's window, shifted */
	struct report_losses base;		/* c's losses before the file */
	uint64_t lo, hi;			/* what the records span */
	uint64_t *tok;				/* shifted token times */
	bool oom;
	uint64_t block;				/* offset of the block read */
};

static void pt_block(void *ctx, uint64_t off)
{
	((struct part *)ctx)->block = off;
}

static void pt_span(struct part *l, uint64_t s, uint64_t e)
{
	l->lo = s < l->lo ? s : l->lo;
	l->hi = e > l->hi ? e : l->hi;
}

static uint64_t pt_time(const struct part *l, uint64_t t)
{
	int64_t v = (int64_t)t + l->p->shift_ns;

	return t && v > 0 ? (uint64_t)v : 0;
}

static uint32_t pt_pid(const struct part *l, uint32_t pid)
{
	return pid ? pid + l->pid_add : 0;
}

static bool pt_overlaps(const struct part *l, uint64_t s, uint64_t e)
{
	return e >= l->p->from_ns && (!l->p->to_ns || s < l->p->to_ns);
}

static bool id_used(const struct collect *c, uint32_t id)
{
	for (size_t i = 0; i < c->ndevs; i++)
		if (c->devs[i].id == id)
			return true;
	return false;
}

/* id where c has no device of that id, else one above all of c's. */
static uint32_t free_id(const struct collect *c, uint32_t id)
{
	uint32_t top = 0;

	if (!id_used(c, id))
		return id;
	for (size_t i = 0; i < c->ndevs; i++)
		top = c->devs[i].id > top ? c->devs[i].id : top;
	return top + 1;
}

/* The id in c of the file's device d (host set): the same device of the
 * same host, else its own id where free, else a new one. */
static uint32_t pt_match(const struct part *l, const struct tt_device *d)
{
	const struct collect *c = l->c;

	for (size_t i = 0; i < c->ndevs; i++) {
		const struct tt_device *o = &c->devs[i];

		if (o->host != d->host || o->kind != d->kind)
			continue;
		if (d->kind == TT_DEV_CPU ? !d->uuid[0] && !o->uuid[0] :
		    d->uuid[0] && !strcmp(o->uuid, d->uuid))
			return o->id;
	}
	return free_id(c, d->id);
}

/* The file's device id in c; d: its record (NULL: an interval's id). */
static uint32_t pt_dev(struct part *l, uint32_t id, const struct tt_device *d)
{
	if (id == TT_STEP_DEVICE)	/* step windows: no device's */
		return id;
	for (size_t i = 0; i < l->nmap; i++)
		if (l->map[i].from == id)
			return l->map[i].to;
	if (!grow((void **)&l->map, &l->capmap, l->nmap, sizeof(*l->map))) {
		l->oom = true;
		return id;
	}
	l->map[l->nmap].from = id;
	/* an interval of a device with no record (yet): an id of its own */
	l->map[l->nmap].to = d ? pt_match(l, d) :
			     l->p->host ? free_id(l->c, UINT32_MAX) : id;
	return l->map[l->nmap++].to;
}

static void pt_device(void *ctx, const struct tt_device *d)
{
	struct part *l = ctx;
	struct tt_device u = *d;

	u.host = l->p->host;
	u.pid = pt_pid(l, d->pid);
	u.id = pt_dev(l, d->id, &u);
	add_device(l->c, &u);
}

static void pt_interval(void *ctx, const struct tt_interval *iv)
{
	struct part *l = ctx;
	struct tt_interval u = *iv;

	u.start_ns = pt_time(l, iv->start_ns);
	u.end_ns = pt_time(l, iv->end_ns);
	if (!pt_overlaps(l, u.start_ns, u.end_ns))
		return;
	u.pid = pt_pid(l, iv->pid);
	u.device = pt_dev(l, iv->device, NULL);
	pt_span(l, u.start_ns, u.end_ns);
	if (l->p->seen)
		l->p->seen(l->p->seen_ctx, l->block, u.start_ns, u.end_ns,
			   NULL, 0);
	if (!l->p->meta_only)
		add_interval(l->c, &u);
}

static void pt_request(void *ctx, const struct tt_request *q)
{
	struct part *l = ctx;
	struct tt_request u = *q;

	u.arrival_ns = pt_time(l, q->arrival_ns);
	u.first_token_ns = pt_time(l, q->first_token_ns);
	u.end_ns = pt_time(l, q->end_ns);
	if (!pt_overlaps(l, u.arrival_ns, u.end_ns > u.arrival_ns ? u.end_ns :
			 u.arrival_ns))
		return;
	u.pid = pt_pid(l, q->pid);
	for (uint32_t i = 0; i < q->token_ns_len; i++)
		l->tok[i] = pt_time(l, q->token_ns[i]);
	u.token_ns = l->tok;
	pt_span(l, u.arrival_ns, u.end_ns);
	if (l->p->seen)
		l->p->seen(l->p->seen_ctx, l->block, u.arrival_ns,
			   u.end_ns > u.arrival_ns ? u.end_ns : u.arrival_ns,
			   l->tok, q->token_ns_len);
	if (!l->p->meta_only && collect_add_request(l->c, &u))
		l->oom = true;
}

static void pt_name(void *ctx, uint32_t pid, uint32_t id, const char *n)
{
	struct part *l = ctx;

	add_name(l->c, pt_pid(l, pid), id, n);
}

static void pt_losses(void *ctx, const struct report_losses *r)
{
	struct part *l = ctx;
	struct report_losses *o = &l->c->losses;

	o->cpu_events = l->base.cpu_events + r->cpu_events;
	o->sock_events = l->base.sock_events + r->sock_events;
	o->sock_bytes = l->base.sock_bytes + r->sock_bytes;
	o->cupti_records = l->base.cupti_records + r->cupti_records;
}

static void pt_window(void *ctx, uint64_t s, uint64_t e, bool closed)
{
	struct part *l = ctx;

	if (l->closed && !closed)
		return;
	l->have_window = true;
	l->closed = closed;
	l->start_ns = pt_time(l, s);
	l->end_ns = pt_time(l, e);
}

static void pt_compute(void *ctx, const char *src, uint32_t max_batch)
{
	struct part *l = ctx;

	if (strcmp(src, "auto") || !l->c->compute[0])
		snprintf(l->c->compute, sizeof(l->c->compute), "%s", src);
	if (max_batch > l->c->max_batch)
		l->c->max_batch = max_batch;
}

static void pt_hooks(void *ctx, const char *hooks)
{
	ld_hooks(&(struct load){ ((struct part *)ctx)->c, false }, hooks);
}

int collect_load_part(struct collect *c, const char *path, FILE *log,
		      struct tracefile_header *header,
		      const struct collect_part *p)
{
	struct part l = { .c = c, .p = p, .base = c->losses, .lo = UINT64_MAX,
			  .pid_add = p->host * COLLECT_HOST_PID_STRIDE };
	struct tracefile_handlers h = {
		.request = pt_request, .device = pt_device,
		.interval = pt_interval, .name = pt_name,
		.losses = pt_losses, .window = pt_window,
		.compute = pt_compute, .hooks = pt_hooks, .ctx = &l,
		.log = log ? log : stderr, .block = pt_block,
		.offsets = p->offsets, .noffsets = p->noffsets,
	};
	struct tracefile_header hdr;
	struct tracefile_stats st;
	bool first = !c->start_ns && !c->end_ns;
	int err;

	if (p->records_only) {
		h.device = NULL;
		h.name = NULL;
		h.losses = NULL;
		h.window = NULL;
		h.compute = NULL;
		h.hooks = NULL;
	}
	if (p->nmap_in) {
		l.map = malloc(p->nmap_in * sizeof(*l.map));
		if (!l.map)
			return -ENOMEM;
		memcpy(l.map, p->map_in, p->nmap_in * sizeof(*l.map));
		l.nmap = l.capmap = p->nmap_in;
	}
	l.tok = malloc(TT_TOKEN_NS_MAX * sizeof(*l.tok));
	if (!l.tok) {
		free(l.map);
		return -ENOMEM;
	}
	err = tracefile_read(path, &h, &hdr, &st);
	free(l.tok);
	if (!err && p->map_out) {
		*p->map_out = l.map;
		*p->nmap_out = l.nmap;
		l.map = NULL;
	}
	free(l.map);
	if (err)
		return err;
	if (l.oom)
		return -ENOMEM;
	if (header)
		*header = hdr;
	if (!l.have_window && l.hi) {
		l.start_ns = l.lo;
		l.end_ns = l.hi;
	}
	if (l.have_window)
		c->window_closed = l.closed;	/* the latest file's */
	if (l.have_window || l.hi) {
		if (first || l.start_ns < c->start_ns)
			c->start_ns = l.start_ns;
		if (first || l.end_ns > c->end_ns)
			c->end_ns = l.end_ns;
	}
	collect_count_read(c, &st);
	return 0;
}

/* ---- the report object --------------------------------------------------- */

uint64_t collect_on_cpu_ns(const struct collect *c, uint32_t device)
{
	uint64_t sum = 0;

	for (size_t i = 0; i < c->nivs; i++) {
		const struct tt_interval *iv = &c->ivs[i];
		uint64_t s = iv->start_ns > c->start_ns ? iv->start_ns :
			     c->start_ns;
		uint64_t e = iv->end_ns < c->end_ns ? iv->end_ns : c->end_ns;

		if (iv->device == device && e > s)
			sum += e - s;
	}
	return sum;
}

static uint64_t count_intervals(const struct collect *c, uint32_t device)
{
	uint64_t n = 0;

	for (size_t i = 0; i < c->nivs; i++)
		n += c->ivs[i].device == device;
	return n;
}

/* Per device of c, counted by the shards of a streamed report (NULL:
 * from c's own intervals). */
struct store_counts {
	const uint64_t *on_cpu_ns, *intervals;
};

static size_t dev_index(const struct collect *c, uint32_t id)
{
	for (size_t i = 0; i < c->ndevs; i++)
		if (c->devs[i].id == id)
			return i;
	return SIZE_MAX;
}

static uint64_t on_cpu_of(const struct collect *c, const struct store_counts *k,
			  uint32_t id)
{
	size_t i = k ? dev_index(c, id) : SIZE_MAX;

	if (!k)
		return collect_on_cpu_ns(c, id);
	return i == SIZE_MAX ? 0 : k->on_cpu_ns[i];
}

static uint64_t count_intervals(const struct collect *c, uint32_t device);

static uint64_t intervals_of(const struct collect *c,
			     const struct store_counts *k, uint32_t id)
{
	size_t i = k ? dev_index(c, id) : SIZE_MAX;

	if (!k)
		return count_intervals(c, id);
	return i == SIZE_MAX ? 0 : k->intervals[i];
}

/* What the store adds to a report object (see collect.h). */
static cJSON *add_store_fields(const struct collect *c,
			       const struct report *r, cJSON *root,
			       const struct store_counts *k)
{
	cJSON *d, *los;
	size_t i = 0;

	if (!root)
		return NULL;
	los = cJSON_GetObjectItem(root, "losses");
	if (los) {
		cJSON_AddNumberToObject(los, "requests_not_kept",
					(double)c->reqs_dropped);
		cJSON_AddNumberToObject(los, "intervals_not_kept",
					(double)c->ivs_dropped);
	}
	cJSON_ArrayForEach(d, cJSON_GetObjectItem(root, "devices")) {
		if (i >= r->ndevs)
			break;
		if (r->devs[i].dev.kind == TT_DEV_CPU)
			cJSON_AddNumberToObject(d, "on_cpu_ns", (double)
				on_cpu_of(c, k, r->devs[i].dev.id));
		cJSON_AddNumberToObject(d, "intervals", (double)
			intervals_of(c, k, r->devs[i].dev.id));
		i++;
	}
	return root;
}

cJSON *collect_report_json(const struct collect *c, const struct report *r)
{
	return add_store_fields(c, r, report_json(r), NULL);
}

cJSON *collect_report_json_shell(const struct collect *c,
				 const struct report *r)
{
	return add_store_fields(c, r, report_json_shell(r), NULL);
}

cJSON *collect_report_json_shell_counted(const struct collect *c,
					 const struct report *r,
					 const uint64_t *on_cpu_ns,
					 const uint64_t *intervals)
{
	struct store_counts k = { on_cpu_ns, intervals };

	return add_store_fields(c, r, report_json_shell(r), &k);
}

int collect_write_report_json(const struct collect *c,
			      const struct report *r, const char *path,
			      const char *cmd)
{
	cJSON *o = collect_report_json_shell(c, r);
	int fd = -1, err = 0;
	FILE *f = NULL;

	if (!o)
		err = -ENOMEM;
	else if ((fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
			    0600)) < 0 || fchmod(fd, 0600) ||
		 !(f = fdopen(fd, "w")))
		err = -errno;
	if (f) {
		err = report_print_json(o, r, f);	/* takes o */
		o = NULL;
		if (fclose(f) && !err)
			err = -errno;
	} else if (fd >= 0) {
		close(fd);
	}
	cJSON_Delete(o);
	if (err)
		fprintf(stderr, "tokentrace %s: cannot write the summary %s: "
			"%s (check the folder exists and is writable)\n",
			cmd, path, strerror(-err ? -err : EIO));
	return err;
}

int collect_parse_limit(const char *cmd, const char *flag, const char *s,
			size_t *v)
{
	char *end;
	unsigned long long n;

	errno = 0;
	n = strtoull(s, &end, 10);
	if (errno || *end || end == s || !n || *s == '-') {
		fprintf(stderr, "tokentrace %s: %s '%s' is not a positive "
			"count\n", cmd, flag, s);
		return -1;
	}
	*v = (size_t)n;
	return 0;
}
