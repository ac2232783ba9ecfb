/*
 * report.c - from requests and compute intervals to per-request,
 * per-tenant and per-model GPU time and cost, the step cost model and the
 * findings: the "what does a token cost?" stage.
 *
 * In:  struct report_input (requests with token times, devices, intervals,
 *      window, prices, compute source).
 * Out: struct report; report_json / report_write_json give DESIGN.md's
 *      `tokentrace report --format json` object, report_write_text a table.
 * Assumes: one clock; a device id names one device in devs and intervals.
 *
 * Per device, busy time is the union of its intervals in the window. The
 * devices of the compute source (GPUs with CUPTI, the CPU device with the
 * CPU source, whose busy time is the on-CPU union of the server's threads)
 * are cut into steps, a step cost model is fitted over those steps, and
 * each step's busy time is split among the requests it served. On the CPU
 * device a step's busy time is that of the compute threads only (see
 * compute_thread_ivs); the time of threads that only do I/O stays in the
 * device's busy time as unattributed. Per device
 * and over all of them, requests' time plus unattributed time equals busy
 * time to the nanosecond, or report_build fails and says which numbers
 * disagree. Cost: busy cost = ns used x price; loaded cost spreads the
 * whole window's price of a device over its requests in proportion to
 * their busy time there, so loaded costs add up to what the hardware cost.
 *
 * Several GPUs are attributed each on its own, so a request's GPU time is
 * the sum of what every GPU gave it. A GPU that one process ran takes
 * that process's requests only, where it answered any: the replicas of a
 * data-parallel deployment (one server per replica) are kept apart, and
 * summed per server. Under tensor parallelism only rank 0 copies the
 * sampled tokens back; a GPU of the same process with no such copy is cut
 * at rank 0's copies, and its own busy time in each step goes to that
 * step's batch. Collective communication on a GPU is the union of its
 * kernels whose names say so (NCCL's all-reduce and the like), when the
 * input has kernel names.
 */
#include <errno.h>
#include <stddef.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attribution.h"
#include "sort.h"
#include "report.h"

#define NS_PER_HOUR	3.6e12

/* A CPU thread computes if it has 1/this of the busiest thread's time. */
#define COMPUTE_THREAD_SHARE	4

static double price_of(const struct report_input *in, const char *name)
{
	for (size_t i = 0; i < in->nprices; i++)
		if (in->prices[i].device_name &&
		    !strcmp(in->prices[i].device_name, name))
			return in->prices[i].usd_per_hour;
	return in->default_usd_per_hour;
}

/*
 * A request with no usage block (a stream its client cut before the end,
 * a server that sends none) has no prompt token count, and its prefill
 * would weigh one token: its step's prompt time went to the others in it
 * (on the reference server with a fifth of the streams cut after their
 * first token, 29-35% of requests were within 10% of their share, the cut
 * ones at -90 to -99%). Its prompt's bytes are known: their tokens are
 * estimated at the bytes per token of the requests of the same model that
 * had a usage block (of all requests, where its model has none), and the
 * request is flagged prompt_estimated. Without any such request the
 * collector's own estimate (4 bytes a token) stands.
 */
struct per_model {
	const char *model;	/* NULL: every model */
	double tok, bytes;
};

static bool needs_estimate(const struct tt_request *q)
{
	return q->prompt_bytes && (q->prompt_tokens <= 0 ||
				   q->tokens_source == TT_TOKENS_ESTIMATE);
}

/* Prompt tokens and bytes of the requests with a usage block, per model
 * in m[1..], all of them in m[0]; *n models in all. */
static int usage_per_model(const struct report *r, struct per_model **m,
			   size_t *n)
{
	size_t cap = 4;

	*n = 1;
	*m = calloc(cap, sizeof(**m));
	if (!*m)
		return -ENOMEM;
	for (size_t i = 0; i < r->nreqs; i++) {
		const struct tt_request *q = &r->reqs[i].req;
		size_t k = 1;

		if (q->tokens_source != TT_TOKENS_USAGE ||
		    q->prompt_tokens <= 0 || !q->prompt_bytes)
			continue;
		while (k < *n && strcmp((*m)[k].model, q->model))
			k++;
		if (k == *n && *n == cap) {
			struct per_model *g = realloc(*m, 2 * cap * sizeof(**m));

			if (!g)
				return -ENOMEM;
			*m = g;
			cap *= 2;
		}
		if (k == *n)
			(*m)[(*n)++] = (struct per_model){ q->model, 0, 0 };
		for (size_t t = 0; t < 2; t++) {
			struct per_model *e = &(*m)[t ? k : 0];

			e->tok += (double)q->prompt_tokens;
			e->bytes += q->prompt_bytes;
		}
	}
	return 0;
}

/* Tokens a byte for model: its own requests', else all of them; 0. */
static double tokens_per_byte(const struct per_model *m, size_t n,
			      const char *model)
{
	for (size_t k = 1; k < n; k++)
		if (!strcmp(m[k].model, model))
			return m[k].tok / m[k].bytes;
	return m[0].bytes > 0 ? m[0].tok / m[0].bytes : 0;
}

static int estimate_prompts(struct report *r)
{
	struct per_model *m = NULL;
	size_t n = 0, need = 0;
	int err;

	for (size_t i = 0; i < r->nreqs; i++)
		need += needs_estimate(&r->reqs[i].req);
	if (!need)
		return 0;
	err = usage_per_model(r, &m, &n);
	for (size_t i = 0; !err && i < r->nreqs; i++) {
		struct tt_request *q = &r->reqs[i].req;
		double per;

		if (!needs_estimate(q))
			continue;
		per = tokens_per_byte(m, n, q->model);
		if (!(per > 0))
			continue;
		q->prompt_tokens = llround(q->prompt_bytes * per);
		if (q->prompt_tokens < 1)
			q->prompt_tokens = 1;
		q->flags |= TT_REQF_PROMPT_EST;
		r->prompts_estimated++;
	}
	free(m);
	return err;
}

/* *out: in with its requests as estimate_prompts left them. */
static int estimated_input(const struct report_input *in, struct report *r,
			   struct report_input *out)
{
	r->est_reqs = malloc(r->nreqs * sizeof(*r->est_reqs));
	if (!r->est_reqs)
		return -ENOMEM;
	for (size_t i = 0; i < r->nreqs; i++)
		r->est_reqs[i] = r->reqs[i].req;
	*out = *in;
	out->reqs = r->est_reqs;
	return 0;
}

/* Copy the requests and their token times into r. */
static int copy_requests(const struct report_input *in, struct report *r)
{
	size_t ntok = 0, k = 0;

	for (size_t i = 0; i < in->nreqs; i++)
		if (in->reqs[i].token_ns)
			ntok += in->reqs[i].token_ns_len;
	r->reqs = calloc(in->nreqs ? in->nreqs : 1, sizeof(*r->reqs));
	r->token_store = malloc((ntok ? ntok : 1) * sizeof(uint64_t));
	if (!r->reqs || !r->token_store)
		return -ENOMEM;
	r->nreqs = in->nreqs;
	for (size_t i = 0; i < in->nreqs; i++) {
		struct tt_request *q = &r->reqs[i].req;
		*q = in->reqs[i];
		r->reqs[i].interval = true;
		if (!in->reqs[i].token_ns) {
			q->token_ns_len = 0;
			continue;
		}
		memcpy(r->token_store + k, in->reqs[i].token_ns,
		       q->token_ns_len * sizeof(uint64_t));
		q->token_ns = r->token_store + k;
		k += q->token_ns_len;
	}
	return estimate_prompts(r);
}

/* A range's requests keep their busy ns per device of the trace. */
static int keep_dev_ns(const struct report_input *in, struct report *r)
{
	size_t nd = in->loaded_ndevs;

	if (!nd)
		return 0;
	r->dev_ns_store = calloc(r->nreqs ? r->nreqs * nd : 1,
				 sizeof(uint64_t));
	if (!r->dev_ns_store)
		return -ENOMEM;
	r->loaded_ndevs = nd;
	for (size_t i = 0; i < r->nreqs; i++)
		r->reqs[i].dev_ns = r->dev_ns_store + i * nd;
	return 0;
}

static const struct report_device *find_dev(const struct report *r,
					    uint32_t id)
{
	for (size_t i = 0; i < r->ndevs; i++)
		if (r->devs[i].dev.id == id)
			return &r->devs[i];
	return NULL;
}

/* Declared devices, then any device that only appears in intervals. */
static int collect_devices(const struct report_input *in, struct report *r)
{
	size_t cap = in->ndevs + 8;

	r->devs = calloc(cap, sizeof(*r->devs));
	if (!r->devs)
		return -ENOMEM;
	for (size_t i = 0; i < in->ndevs; i++)
		if (!find_dev(r, in->devs[i].id))
			r->devs[r->ndevs++].dev = in->devs[i];
	for (size_t i = 0; i < in->nivs; i++) {
		const struct tt_interval *iv = &in->ivs[i];
		if (iv->device == TT_STEP_DEVICE || find_dev(r, iv->device))
			continue;
		if (r->ndevs == cap) {
			struct report_device *p;
			p = realloc(r->devs, 2 * cap * sizeof(*p));
			if (!p)
				return -ENOMEM;
			memset(p + cap, 0, cap * sizeof(*p));
			r->devs = p;
			cap *= 2;
		}
		struct tt_device *d = &r->devs[r->ndevs++].dev;
		d->id = iv->device;
		d->kind = iv->kind == TT_IV_CPU ? TT_DEV_CPU : TT_DEV_GPU;
		snprintf(d->name, sizeof(d->name), "%s",
			 d->kind == TT_DEV_CPU ? "cpu" : "gpu");
		if (d->kind == TT_DEV_GPU)
			snprintf(d->name, sizeof(d->name), "dev%u", iv->device);
	}
	return 0;
}

/* The part of iv inside the window as [*a, *b); false if none. */
static bool clip(const struct report_input *in, const struct tt_interval *iv,
		 uint64_t *a, uint64_t *b)
{
	*a = iv->start_ns > in->start_ns ? iv->start_ns : in->start_ns;
	*b = iv->end_ns < in->end_ns ? iv->end_ns : in->end_ns;
	return *b > *a;
}

/* The one process whose intervals ran on device id in the window; 0 when
 * several did (a shared GPU, the CPU of several servers), or none. */
static uint32_t device_pid(const struct report_input *in, uint32_t id)
{
	uint32_t pid = 0;
	bool seen = false;
	uint64_t a, b;

	for (size_t i = 0; i < in->nivs; i++) {
		const struct tt_interval *iv = &in->ivs[i];

		if (iv->device != id || !clip(in, iv, &a, &b))
			continue;
		if (seen && iv->pid != pid)
			return 0;
		pid = iv->pid;
		seen = true;
	}
	return pid;
}

/* Busy time, price and process of each device. */
static int device_busy(const struct report_input *in, struct report *r)
{
	for (size_t i = 0; i < r->ndevs; i++) {
		struct report_device *d = &r->devs[i];
		struct steps_span *s;
		size_t n;
		int err = steps_union(in->ivs, in->nivs, d->dev.id,
				      in->start_ns, in->end_ns, &s, &n,
				      &d->busy_ns);
		free(s);
		if (err)
			return err;
		d->idle_ns = r->window_ns - d->busy_ns;
		d->usd_per_hour = price_of(in, d->dev.name);
		d->pid = device_pid(in, d->dev.id);
	}
	return 0;
}

/* ---- collective communication ------------------------------------------ */

/*
 * The kernels of collectives between GPUs (NCCL's, and the custom
 * all-reduce of vLLM or TensorRT-LLM) are known by their names alone:
 * CUPTI sees them as kernels like any other. A name is matched, without
 * case, against these words; a kernel is found by its (pid, name id) in
 * the sorted list of the names that match.
 */
static const char *const comm_words[] = {
	"allreduce", "all_reduce", "reducescatter", "reduce_scatter",
	"allgather", "all_gather", "nccl", "alltoall",
};

struct name_key {
	uint32_t pid, name_id;
};

static int cmp_key(const void *a, const void *b)
{
	const struct name_key *x = a, *y = b;

	if (x->pid != y->pid)
		return x->pid < y->pid ? -1 : 1;
	return x->name_id < y->name_id ? -1 : x->name_id > y->name_id;
}

static bool is_comm_name(const char *name)
{
	for (size_t i = 0; name && i < sizeof(comm_words) /
					   sizeof(comm_words[0]); i++)
		if (strcasestr(name, comm_words[i]))
			return true;
	return false;
}

/* The names of communication kernels, sorted; *out allocated here. */
static int comm_keys(const struct report_input *in, struct name_key **out,
		     size_t *nout)
{
	struct name_key *k = malloc((in->nnames ? in->nnames : 1) *
				    sizeof(*k));
	size_t n = 0;

	if (!k)
		return -ENOMEM;
	for (size_t i = 0; i < in->nnames; i++)
		if (in->names[i].name_id && is_comm_name(in->names[i].name))
			k[n++] = (struct name_key){ in->names[i].pid,
						    in->names[i].name_id };
	qsort(k, n, sizeof(*k), cmp_key);
	*out = k;
	*nout = n;
	return 0;
}

static bool is_comm_kernel(const struct tt_interval *iv,
			   const struct name_key *k, size_t nk)
{
	struct name_key key = { iv->pid, iv->name_id };

	return iv->kind == TT_IV_KERNEL && iv->name_id &&
	       bsearch(&key, k, nk, sizeof(*k), cmp_key);
}

/* d->comm_ns: the measure of the union of its communication kernels. */
static int comm_of(const struct report_input *in, const struct name_key *k,
		   size_t nk, struct report_device *d)
{
	struct steps_span *s = malloc((in->nivs ? in->nivs : 1) * sizeof(*s));
	size_t n = 0;
	uint64_t a, b;

	if (!s)
		return -ENOMEM;
	for (size_t i = 0; i < in->nivs; i++) {
		const struct tt_interval *iv = &in->ivs[i];

		if (iv->device == d->dev.id && is_comm_kernel(iv, k, nk) &&
		    clip(in, iv, &a, &b))
			s[n++] = (struct steps_span){ a, b };
	}
	n = steps_merge_spans(s, n);
	for (size_t i = 0; i < n; i++)
		d->comm_ns += s[i].end_ns - s[i].start_ns;
	free(s);
	return 0;
}

static int device_comm(const struct report_input *in, struct report *r)
{
	struct name_key *k = NULL;
	size_t nk = 0;
	int err = comm_keys(in, &k, &nk);

	for (size_t i = 0; !err && nk && i < r->ndevs; i++)
		if (r->devs[i].dev.kind == TT_DEV_GPU)
			err = comm_of(in, k, nk, &r->devs[i]);
	free(k);
	return err;
}

/* Which devices' time goes to requests: the compute source's. */
static void pick_attributed(const struct report_input *in, struct report *r)
{
	const char *c = in->compute ? in->compute : "auto";
	bool want_gpu = !strcmp(c, "cupti");

	if (strcmp(c, "cpu") && strcmp(c, "cupti")) {
		for (size_t i = 0; i < r->ndevs; i++)
			if (r->devs[i].dev.kind == TT_DEV_GPU &&
			    r->devs[i].busy_ns)
				want_gpu = true;
	}
	for (size_t i = 0; i < r->ndevs; i++) {
		struct report_device *d = &r->devs[i];
		d->attributed = (d->dev.kind == TT_DEV_GPU) == want_gpu;
		if (d->attributed)
			r->busy_ns += d->busy_ns;
	}
	snprintf(r->compute, sizeof(r->compute), "%s",
		 want_gpu ? "cupti" : "cpu");
	snprintf(r->hooks, sizeof(r->hooks), "%s", in->hooks ? in->hooks : "");
}

/*
 * Steps cut from the token writes are fitted in pairs of consecutive
 * steps rather than one by one. Their boundaries are inferred, and an
 * error in one moves busy time from a step to its neighbour and back; the
 * sum of two neighbours is blind to the boundary between them, so half of
 * that noise drops out of the fit, which is what lets it tell per-token
 * cost from per-context-token cost. Steps whose windows are seen (the
 * engine's step function, the device's step-ending copies) have no such
 * noise, and pairs would only blur them: a long prefill's step summed
 * with a decode step beside it (on open-loop arrivals to the reference
 * server, pairs fitted 0.10 ms a prompt token and 0.61 us an attention
 * unit where its log said 0.17 and 0.36, and 85% of requests were within
 * 10% of their share against 100% one by one). Attribution always splits
 * each single step's measured time.
 */
uint32_t report_steps_per_obs(const struct steps_result *s)
{
	return s->source == STEPS_FROM_TOKENS ? 2 : 1;
}

/* The model on the steps k with !skip[k] (every step: skip NULL) into *m;
 * each step's terms from pre[k] where given (step_terms), else summed
 * over its entries: the same numbers, as the terms are whole or half
 * token counts, exact in a double. */
static int fit_model_on(struct report_device *d, const bool *skip,
			const struct costmodel_obs *pre, struct costmodel *m)
{
	const struct steps_result *s = &d->steps;
	struct costmodel_obs *obs;
	int err;

	obs = malloc((s->nsteps ? s->nsteps : 1) * sizeof(*obs));
	if (!obs)
		return -ENOMEM;
	uint32_t n = 0, in = 0, per = report_steps_per_obs(s);
	for (uint32_t k = 0; k < s->nsteps; k++) {
		const struct steps_step *st = &s->steps[k];
		if (!st->n || (skip && skip[k]))
			continue;
		if (in == 0)
			costmodel_obs_init(&obs[n], 0);
		else
			obs[n].x[CM_FIXED] += 1;	/* one fixed cost a step */
		obs[n].ns += (double)st->busy_ns;
		if (pre)
			for (int t = 0; t < CM_NTERMS; t++)
				obs[n].x[t] += pre[k].x[t];
		else
			steps_obs_add(s, k, &obs[n]);
		if (++in == per) {
			in = 0;
			n++;
		}
	}
	if (in)
		n++;
	err = costmodel_fit_steps(obs, n, m);
	m->steps = s->nsteps;	/* steps, not pairs, for the reader */
	free(obs);
	return err;
}

static int fit_model(struct report_device *d)
{
	return fit_model_on(d, NULL, NULL, &d->model);
}

/*
 * A request with c cached of its P prompt tokens: its prefill cost splits
 * into attending over the c (the model's attention term for them) and the
 * rest; prefilling the c as well would have cost the model's prefill of
 * c tokens from nothing (what a full prefill costs more than the cached
 * one, term by term).
 */
static void credit_cache(const struct report_device *d,
			 struct report_request *q, double prompt_usd,
			 double per_ns)
{
	const struct tt_request *t = &q->req;
	uint32_t p, c;
	double all, over, saved;

	if (t->cached_source == TT_CACHED_NONE || t->cached_tokens <= 0 ||
	    t->prompt_tokens <= t->cached_tokens || prompt_usd <= 0)
		return;
	p = (uint32_t)t->prompt_tokens;
	c = (uint32_t)t->cached_tokens;
	all = costmodel_prefill_ns(&d->model, p - c, c);
	over = d->model.coef[CM_PREFILL_SQ] * (double)(p - c) * c;
	if (all > 0)
		q->cached_cost_usd += prompt_usd * over / all;
	saved = costmodel_prefill_ns(&d->model, c, 0);
	q->cache_saved_ns += (uint64_t)saved;
	q->cache_saved_usd += saved * per_ns;
}

/* Give each request its time and cost on device d. */
/*
 * A 90% interval on what each request got of a device, from two sources
 * of error. A step's time is split by the model's expected costs; what
 * the model does not explain of it, the residual r (measured minus
 * predicted, once the host's drift over a window of INTERVAL_WINDOW
 * steps is taken out), could belong to any of its entries: taken as one
 * lump that goes to an entry with the chance of its share f, it would
 * add r^2 f (1 - f) to the entry's variance (as would noise in each
 * entry's own cost, for entries alike), steps independent. Part of a
 * residual is the step's as a whole (noise shared by its entries in
 * proportion), which moves no share: INTERVAL_LUMP weighs the lump, 1/2
 * as calibrated on the reference server's truth (alone the lump held
 * 69-92% of the truths in 90% intervals, the jackknife alone 56-84%,
 * both at full weight 90-100%). And the
 * model's coefficients are themselves estimates: a jackknife over
 * INTERVAL_BLOCKS runs of neighbouring steps (each refit without one
 * run, the same steps split again) adds (G - 1) / G times the sum of
 * squares of the request's time under each refit against the full
 * model's (not past INTERVAL_JK_STEPS steps, where the coefficients are
 * held so tight that it stays far under the floor below: on 200,000
 * generated steps every interval was at the floor with it, and it cost a
 * third of the report's time). Its refits choose their terms again, so
 * that where the data hardly tell whether an optional term is there, the
 * split under either answer is in the interval. And how a step's context
 * cost belongs to its decodes is in part a convention: a long context
 * also slows the other decodes of its batch (caches, memory bandwidth),
 * which step totals cannot tell from its own cost while batches stay
 * full. On the reference server's truth the other decodes' contexts made
 * 0-24% of a decode's context cost (0 on mixes of alike requests, the
 * most with two tenants of unlike lengths), so up to INTERVAL_SHARED of
 * it is taken as possibly the batch's: the split with every decode's
 * context cost at its step's other decodes' mean context moves each
 * request by some amount, and INTERVAL_SHARED times that is one more
 * standard deviation (nothing where a step's decodes share one context).
 * The interval is gpu_ns -+ INTERVAL_Z
 * standard deviations,
 * and never narrower than -+ INTERVAL_FLOOR: how a step's copies, its
 * overlapping streams and its fixed cost belong to its entries is a
 * convention no residual shows (on the simulator, whose truth is exact,
 * the splits are off by 0.1-0.2% where the rest gives 0.2% widths). A group's variance is the sum of its requests',
 * which is never less than the lump model gives it (the entries of one
 * step are correlated the other way), so its interval is on the wide
 * side. Calibrated against the reference server's and the simulator's
 * truth in the end-to-end tests (tests/e2e/test_attribution.c,
 * test_gpusim.c).
 */
#define INTERVAL_WINDOW	10
#define INTERVAL_LUMP	0.5
#define INTERVAL_BLOCKS	10
#define INTERVAL_MIN_STEPS	(4 * INTERVAL_BLOCKS)
#define INTERVAL_JK_STEPS	20000
#define INTERVAL_Z	1.6449		/* two-sided 90% of a normal */
#define INTERVAL_FLOOR	0.01
#define INTERVAL_SHARED	0.25

/* Each step's terms summed over its entries (x[CM_FIXED] 0), or NULL. */
static struct costmodel_obs *step_terms(const struct steps_result *s)
{
	struct costmodel_obs *o = calloc(s->nsteps ? s->nsteps : 1,
					 sizeof(*o));

	for (uint32_t k = 0; o && k < s->nsteps; k++)
		steps_obs_add(s, k, &o[k]);
	return o;
}

/* The most entries a step of s has (at least 1). */
static uint32_t widest_step(const struct steps_result *s)
{
	uint32_t w = 1;

	for (uint32_t k = 0; k < s->nsteps; k++)
		w = s->attr[k].n > w ? s->attr[k].n : w;
	return w;
}

/* The weights of step st's entries under m into w; their sum. */
static double step_weights(const struct steps_result *s,
			   const struct attr_step *st,
			   const struct costmodel *m, double *w)
{
	const struct attr_entry *e = s->entries + st->first;
	double total = 0;

	for (uint32_t i = 0; i < st->n; i++) {
		w[i] = attribution_weight(&e[i], m, st->n);
		total += w[i];
	}
	return total;
}

/* Each request's time on d with its steps split by model m, into x; w
 * has room for the widest step. */
static void split_by(const struct report_device *d, const struct costmodel *m,
		     double *x, size_t nreqs, double *w)
{
	const struct steps_result *s = &d->steps;

	memset(x, 0, nreqs * sizeof(*x));
	for (uint32_t k = 0; k < s->nsteps; k++) {
		const struct attr_step *st = &s->attr[k];
		const struct attr_entry *e = s->entries + st->first;
		double total = step_weights(s, st, m, w);

		for (uint32_t i = 0; total > 0 && i < st->n; i++)
			x[e[i].request] += (double)st->busy_ns * w[i] / total;
	}
}

/*
 * The context convention's part of each request's variance on d
 * (INTERVAL_SHARED). Taking a decode's context cost at its step's other
 * decodes' mean context instead of its own leaves the step's total weight
 * as it was (the means sum to the contexts' sum), so each decode's share
 * moves by its step's time times c (mean - own) over that total; one
 * pass sums the moves.
 */
static int shared_context_variance(struct report *r, struct report_device *d)
{
	const struct steps_result *s = &d->steps;
	double c = d->model.coef[CM_CONTEXT];
	double *move, *w;

	if (!(c > 0))
		return 0;
	move = calloc(r->nreqs ? r->nreqs : 1, sizeof(*move));
	w = malloc(widest_step(s) * sizeof(*w));
	if (!move || !w) {
		free(move);
		free(w);
		return -ENOMEM;
	}
	for (uint32_t k = 0; k < s->nsteps; k++) {
		const struct attr_step *st = &s->attr[k];
		const struct attr_entry *e = s->entries + st->first;
		double total = step_weights(s, st, &d->model, w), ctx = 0;
		uint32_t dec = 0;

		for (uint32_t i = 0; i < st->n; i++)
			if (e[i].phase == ATTR_DECODE) {
				ctx += e[i].context;
				dec++;
			}
		for (uint32_t i = 0; dec > 1 && total > 0 && i < st->n; i++)
			if (e[i].phase == ATTR_DECODE)
				move[e[i].request] += (double)st->busy_ns * c *
					((ctx - e[i].context) / (dec - 1) -
					 e[i].context) / total;
	}
	for (size_t i = 0; i < r->nreqs; i++)
		r->reqs[i].gpu_var += INTERVAL_SHARED * INTERVAL_SHARED *
				      move[i] * move[i];
	free(move);
	free(w);
	return 0;
}

/* The jackknife's part of each request's variance on d; pre: each step's
 * terms (step_terms). */
static int jackknife_variance(struct report *r, struct report_device *d,
			      const struct costmodel_obs *pre)
{
	const struct steps_result *s = &d->steps;
	size_t n = r->nreqs ? r->nreqs : 1;
	double *full = malloc(n * sizeof(*full));
	double *x = malloc(n * sizeof(*x));
	double *acc = calloc(n, sizeof(*acc));
	double *w = malloc(widest_step(s) * sizeof(*w));
	bool *skip = calloc(s->nsteps, sizeof(*skip));
	int err = -ENOMEM, g = 0;

	if (!full || !x || !acc || !skip || !w)
		goto out;
	err = 0;
	split_by(d, &d->model, full, r->nreqs, w);
	for (uint32_t b = 0; b < INTERVAL_BLOCKS; b++) {
		uint32_t lo = (uint32_t)((uint64_t)s->nsteps * b /
					 INTERVAL_BLOCKS);
		uint32_t hi = (uint32_t)((uint64_t)s->nsteps * (b + 1) /
					 INTERVAL_BLOCKS);
		struct costmodel m;

		for (uint32_t k = lo; k < hi; k++)
			skip[k] = true;
		err = fit_model_on(d, skip, pre, &m);
		for (uint32_t k = lo; k < hi; k++)
			skip[k] = false;
		if (err == -ENOMEM)
			goto out;
		err = 0;
		if (!m.fitted)
			continue;
		split_by(d, &m, x, r->nreqs, w);
		for (size_t i = 0; i < r->nreqs; i++)
			acc[i] += (x[i] - full[i]) * (x[i] - full[i]);
		g++;
	}
	for (size_t i = 0; g > 1 && i < r->nreqs; i++)
		r->reqs[i].gpu_var += acc[i] * (g - 1) / g;
out:
	free(full);
	free(x);
	free(acc);
	free(w);
	free(skip);
	return err;
}

static int share_variance(struct report *r, struct report_device *d)
{
	const struct steps_result *s = &d->steps;
	struct costmodel_obs *pre;
	double *pred, *wt;
	int err = 0;

	if (d->basis != ATTR_BY_MODEL || !d->model.fitted || !s->nsteps)
		return 0;
	pred = malloc(s->nsteps * sizeof(*pred));
	wt = malloc(widest_step(s) * sizeof(*wt));
	pre = step_terms(s);
	if (!pred || !wt || !pre) {
		err = -ENOMEM;
		goto out;
	}
	for (uint32_t k = 0; k < s->nsteps; k++) {
		struct costmodel_obs o = pre[k];

		o.x[CM_FIXED] = 1.0;
		o.ns = (double)s->attr[k].busy_ns;
		pred[k] = s->attr[k].n ? costmodel_predict(&d->model, &o) : 0;
	}
	for (uint32_t w = 0; w < s->nsteps; w += INTERVAL_WINDOW) {
		uint32_t end = w + INTERVAL_WINDOW < s->nsteps ?
			       w + INTERVAL_WINDOW : s->nsteps;
		double busy = 0, want = 0, scale;

		for (uint32_t k = w; k < end; k++)
			if (s->attr[k].n) {
				busy += (double)s->attr[k].busy_ns;
				want += pred[k];
			}
		scale = want > 0 ? busy / want : 1;
		for (uint32_t k = w; k < end; k++) {
			const struct attr_step *st = &s->attr[k];
			const struct attr_entry *e = s->entries + st->first;
			double res = (double)st->busy_ns - scale * pred[k];
			double total = step_weights(s, st, &d->model, wt);

			for (uint32_t i = 0; total > 0 && i < st->n; i++) {
				double f = wt[i] / total;

				r->reqs[e[i].request].gpu_var +=
					INTERVAL_LUMP * res * res * f * (1 - f);
			}
		}
	}
	if (s->nsteps >= INTERVAL_MIN_STEPS && s->nsteps <= INTERVAL_JK_STEPS)
		err = jackknife_variance(r, d, pre);
	if (!err)
		err = shared_context_variance(r, d);
out:
	free(pred);
	free(wt);
	free(pre);
	return err;
}

/* lo, hi of v -+ INTERVAL_Z sd, at least -+ INTERVAL_FLOOR of v, in
 * [0, ...). */
static void interval_of(uint64_t v, double var, uint64_t *lo, uint64_t *hi)
{
	double h = INTERVAL_Z * sqrt(var > 0 ? var : 0);

	if (h < INTERVAL_FLOOR * (double)v)
		h = INTERVAL_FLOOR * (double)v;

	*lo = h >= (double)v ? 0 : (uint64_t)llround((double)v - h);
	*hi = (uint64_t)llround((double)v + h);
}

static void credit_device(struct report *r, struct report_device *d,
			  const struct attr_request *a)
{
	double per_ns = d->usd_per_hour / NS_PER_HOUR;
	size_t di = (size_t)(d - r->devs);
	uint64_t sum = 0;

	for (size_t i = 0; i < r->nreqs; i++)
		sum += a[i].prefill_ns + a[i].decode_ns;
	d->attributed_ns = sum;
	for (size_t i = 0; i < r->nreqs; i++) {
		struct report_request *q = &r->reqs[i];
		uint64_t ns = a[i].prefill_ns + a[i].decode_ns;
		q->prefill_ns += a[i].prefill_ns;
		q->decode_ns += a[i].decode_ns;
		q->gpu_ns += ns;
		if (ns && d->basis != ATTR_BY_MODEL)
			q->interval = false;	/* split by tokens */
		q->cost_usd += ns * per_ns;
		q->prompt_cost_usd += a[i].prefill_ns * per_ns;
		q->completion_cost_usd += a[i].decode_ns * per_ns;
		credit_cache(d, q, a[i].prefill_ns * per_ns, per_ns);
		if (di < r->loaded_ndevs)
			r->dev_ns_store[i * r->loaded_ndevs + di] += ns;
		else if (sum)
			q->cost_loaded_usd += (double)ns / sum *
					      r->window_ns * per_ns;
	}
}

/* On-CPU time of one thread of the CPU device. */
struct thread_ns {
	uint32_t tid;
	uint64_t ns;
};

/* Add ns to tid's entry in t (n entries, room for one more); the new n. */
static size_t thread_add(struct thread_ns *t, size_t n, uint32_t tid,
			 uint64_t ns)
{
	for (size_t i = 0; i < n; i++)
		if (t[i].tid == tid) {
			t[i].ns += ns;
			return n;
		}
	t[n].tid = tid;
	t[n].ns = ns;
	return n + 1;
}

static bool thread_kept(const struct thread_ns *t, size_t n, uint32_t tid,
			uint64_t min_ns)
{
	for (size_t i = 0; i < n; i++)
		if (t[i].tid == tid)
			return t[i].ns >= min_ns;
	return false;
}

/*
 * The intervals of the CPU device's compute threads: those with at least
 * 1/COMPUTE_THREAD_SHARE of the busiest thread's on-CPU time in the
 * window (the engine, or a pool of equal workers), not the threads that
 * only accept connections and write tokens. Their time is the server's
 * too, but not its forward passes: cut into steps it lands in whichever
 * step its writes fall, mostly the short decode steps, and makes decode
 * look dearer than it is. It stays in the device's busy time and, being
 * outside the steps, is unattributed. *out is allocated (caller frees).
 */
static int compute_thread_ivs(const struct report_input *in, uint32_t dev,
			      struct tt_interval **out, size_t *nout)
{
	struct thread_ns *t = malloc((in->nivs ? in->nivs : 1) * sizeof(*t));
	struct tt_interval *v = malloc((in->nivs ? in->nivs : 1) *
				       sizeof(*v));
	uint64_t most = 0;
	size_t nt = 0, n = 0;

	if (!t || !v) {
		free(t);
		free(v);
		return -ENOMEM;
	}
	for (size_t i = 0; i < in->nivs; i++) {
		const struct tt_interval *iv = &in->ivs[i];
		uint64_t a = iv->start_ns > in->start_ns ? iv->start_ns
							 : in->start_ns;
		uint64_t b = iv->end_ns < in->end_ns ? iv->end_ns : in->end_ns;
		if (iv->device == dev && b > a)
			nt = thread_add(t, nt, iv->tid, b - a);
	}
	for (size_t i = 0; i < nt; i++)
		if (t[i].ns > most)
			most = t[i].ns;
	for (size_t i = 0; i < in->nivs; i++)
		if (in->ivs[i].device == dev &&
		    thread_kept(t, nt, in->ivs[i].tid,
				most / COMPUTE_THREAD_SHARE))
			v[n++] = in->ivs[i];
	free(t);
	*out = v;
	*nout = n;
	return 0;
}

/* Steps of device d, over the requests of d->req_pid (0: all), cut at
 * the copies of d->steps_dev (0: its own): on the CPU from its compute
 * threads' time, with the busy spans (for the findings) of all its
 * threads. */
/* d's steps as si says, into *out. */
static int cut_steps(const struct report_input *in,
		     const struct report_device *d, struct steps_input *si,
		     struct steps_result *out)
{
	struct tt_interval *v = NULL;
	int err;

	if (d->dev.kind != TT_DEV_CPU)
		return steps_find(si, out);
	err = compute_thread_ivs(in, d->dev.id, &v, &si->nivs);
	if (err)
		return err;
	si->ivs = v;
	err = steps_find(si, out);
	free(v);
	si->ivs = in->ivs;
	si->nivs = in->nivs;
	if (err)
		return err;
	free(out->busy);
	return steps_union(in->ivs, in->nivs, d->dev.id, in->start_ns,
			   in->end_ns, &out->busy, &out->nbusy,
			   &out->busy_ns);
}

/* Squared error of the model fitted on d's steps, over every busy step
 * (one that no request took part in is unexplained). */
static int fit_sse(struct report_device *d, double *sse)
{
	struct costmodel m;
	int err = fit_model_on(d, NULL, NULL, &m);

	*sse = 0;
	if (err)
		return err;
	for (uint32_t k = 0; k < d->steps.nsteps; k++) {
		const struct steps_step *st = &d->steps.steps[k];
		double e = (double)st->busy_ns;

		if (st->n && m.fitted) {
			struct costmodel_obs o;

			costmodel_obs_init(&o, e);
			steps_obs_add(&d->steps, k, &o);
			e = o.ns - costmodel_predict(&m, &o);
		}
		*sse += e * e;
	}
	return 0;
}

/*
 * Chunked prefill is kept only where it explains the steps' time: the
 * steps cut both ways, the cost model fitted on each, and the chunks
 * placed only when their fit leaves less than CHUNK_SSE_GAIN of the
 * squared error of the steps as the wire shows them (a mix whose long
 * prompts wait longer for another reason fits worse with chunks that
 * were never there).
 */
#define CHUNK_SSE_GAIN	0.8

/* Room for one more of *n elements of size sz in *v (capacity *cap).
 * 0 or -ENOMEM (*v kept). */
static int grow_one(void **v, size_t *cap, size_t n, size_t sz)
{
	void *g;

	if (n < *cap)
		return 0;
	g = realloc(*v, (*cap ? 2 * *cap : 256) * sz);
	if (!g)
		return -ENOMEM;
	*v = g;
	*cap = *cap ? 2 * *cap : 256;
	return 0;
}

/*
 * What the step probe saw of pid (0: of any), in one pass over the
 * intervals: its windows in *w, and the runs of the batches it read
 * (llama_decode's) in *q, each sorted by the end of its call (NULL when
 * there are none). 0 or -ENOMEM (nothing kept).
 */
static int probe_of(const struct report_input *in, uint32_t pid,
		    struct steps_span **w, size_t *nw,
		    struct steps_seq **q, size_t *nq)
{
	size_t capw = 0, capq = 0;
	int err = 0;

	*w = NULL;
	*q = NULL;
	*nw = *nq = 0;
	for (size_t i = 0; !err && i < in->nivs; i++) {
		const struct tt_interval *iv = &in->ivs[i];

		if (pid && iv->pid != pid)
			continue;
		if (iv->kind == TT_IV_STEP &&
		    !(err = grow_one((void **)w, &capw, *nw, sizeof(**w))))
			(*w)[(*nw)++] = (struct steps_span){ iv->start_ns,
							     iv->end_ns };
		if (iv->kind == TT_IV_SEQ &&
		    !(err = grow_one((void **)q, &capq, *nq, sizeof(**q))))
			(*q)[(*nq)++] = (struct steps_seq){
				.end_ns = iv->end_ns, .seq = (int32_t)iv->stream,
				.pos = (int32_t)iv->correlation,
				.tokens = (uint32_t)iv->bytes,
				.out = iv->name_id,
			};
	}
	if (!err && *nw)
		err = sort_by_u64(*w, *nw, sizeof(**w),
				  offsetof(struct steps_span, end_ns));
	if (!err && *nq)
		err = sort_by_u64(*q, *nq, sizeof(**q),
				  offsetof(struct steps_seq, end_ns));
	if (err) {
		free(*w);
		free(*q);
		*w = NULL;
		*q = NULL;
		*nw = *nq = 0;
	}
	return err;
}

static int find_steps_with(const struct report_input *in,
			   struct report_device *d, struct steps_input *si_in)
{
	struct steps_input si = *si_in;
	struct steps_result plain;
	double sse_chunked, sse_plain;
	int err;

	if (in->nhosts > 1) {	/* a device serves its own host alone */
		si.pid_lo = d->dev.host * REPORT_HOST_PID_STRIDE;
		si.pid_hi = si.pid_lo + REPORT_HOST_PID_STRIDE;
	}
	err = cut_steps(in, d, &si, &d->steps);
	if (err || !d->steps.chunk_tokens)
		return err;
	si.no_chunks = true;
	err = cut_steps(in, d, &si, &plain);
	if (err) {
		steps_free(&plain);
		return err;
	}
	struct steps_result chunked = d->steps;

	err = fit_sse(d, &sse_chunked);
	if (!err) {
		d->steps = plain;
		err = fit_sse(d, &sse_plain);
		d->steps = chunked;
	}
	if (!err && sse_chunked < CHUNK_SSE_GAIN * sse_plain) {
		steps_free(&plain);	/* the chunks explain the steps */
		return 0;
	}
	d->steps = plain;
	steps_free(&chunked);
	return err;
}

static int find_steps(const struct report_input *in, struct report_device *d)
{
	struct steps_input si = {
		.reqs = in->reqs, .nreqs = (uint32_t)in->nreqs,
		.ivs = in->ivs, .nivs = in->nivs, .device = d->dev.id,
		.start_ns = in->start_ns, .end_ns = in->end_ns,
		.source = d->dev.kind == TT_DEV_CPU ? STEPS_FROM_TOKENS :
			  d->steps_dev ? STEPS_FROM_COPIES : STEPS_AUTO,
		.pid = d->req_pid, .copy_device = d->steps_dev,
	};
	struct steps_span *probe;
	struct steps_seq *seqs;
	int err;

	err = probe_of(in, d->req_pid, &probe, &si.nprobe, &seqs, &si.nseqs);
	if (err)
		return err;
	si.probe = probe;
	si.seqs = seqs;
	if (d->dev.kind == TT_DEV_CPU && si.nprobe >= 2)
		si.source = STEPS_FROM_PROBE;
	/* a batch says where every prompt's chunks went */
	if (si.nseqs)
		si.no_chunks = true;
	err = find_steps_with(in, d, &si);
	free(probe);
	free(seqs);
	return err;
}

/* ---- cached prompt tokens the server did not send --------------------- */

/*
 * A server with a prefix cache that does not say what it served from it
 * (vLLM unless asked, SGLang, TGI) still shows it twice: in the prompts
 * (a request that begins as an earlier one did: prefix_bytes, from hashes
 * of the text, never the text) and in what its prefill cost (less than
 * its length says). The first says which requests could have hit and how
 * far, c = P * prefix_bytes / prompt_bytes of their P prompt tokens; the
 * second whether each did. A hit computes P - c tokens attending over the
 * c cached, a miss all P: the two differ by c tokens of prefill, far more
 * than a step's noise once c is a block or more. So:
 *   1. a cost model fitted on the steps without candidates (it has seen
 *      what a prefill of known length costs, and neither reading) says
 *      whether the candidates' steps read better as all hits or as all
 *      misses; misses: nothing is inferred;
 *   2. from all hits, each step's candidates are chosen together under
 *      the model refitted with the choices, a choice changing only when
 *      it brings its step closer to the model by several times the
 *      steps' noise (an eviction, or a request that came before its
 *      prefix was computed), for a few rounds;
 *   3. the hits stand only when they explain the steps better than no
 *      cache at all by more than a parameter is worth (the Bayesian
 *      information criterion).
 * So a server without a cache, or whose prompts share nothing, is left
 * alone; and nothing is inferred when too few prefills lie outside the
 * candidates' steps to tell what a prefill costs (every prompt begins
 * with the same system prompt, say: then a cache and none read alike
 * from the cost alone).
 */
#define CACHE_MIN_CANDIDATES	8	/* fewer: nothing to infer from */
#define CACHE_ROUNDS		4
#define CACHE_MARGIN		4.0	/* times the steps' noise */

struct cache_guess {
	uint32_t *entry;	/* prefill entries that could have hit */
	uint32_t *step;		/* the step of each */
	uint32_t *prompt;	/* their prompt tokens */
	uint32_t *reach;	/* tokens an earlier prompt began with */
	bool *hit;
	uint32_t n;
};

static void cache_set(struct report_device *d, const struct cache_guess *g,
		      uint32_t i, bool hit)
{
	struct attr_entry *e = &d->steps.entries[g->entry[i]];

	e->context = hit ? g->reach[i] : 0;
	e->tokens = g->prompt[i] - e->context;
}

/* The step's measured busy time less what the model predicts for it. */
static double step_residual(const struct report_device *d, uint32_t k)
{
	struct costmodel_obs o;

	costmodel_obs_init(&o, (double)d->steps.steps[k].busy_ns);
	steps_obs_add(&d->steps, k, &o);
	return o.ns - costmodel_predict(&d->model, &o);
}

static double steps_sse(const struct report_device *d)
{
	double sse = 0;

	for (uint32_t k = 0; k < d->steps.nsteps; k++)
		if (d->steps.steps[k].n) {
			double e = step_residual(d, k);

			sse += e * e;
		}
	return sse;
}

/* Sets the candidates [a, a + k) of one step to the bits of mask. */
static void cache_set_group(struct report_device *d, struct cache_guess *g,
			    uint32_t a, uint32_t k, unsigned mask)
{
	for (uint32_t i = 0; i < k; i++) {
		g->hit[a + i] = mask >> i & 1;
		cache_set(d, g, a + i, g->hit[a + i]);
	}
}

/*
 * One pass of choices under the model as fitted; how many changed. The
 * candidates of one step are chosen together (every combination, up to
 * CACHE_JOINT of them; one at a time beyond), since they share its time,
 * and a choice changes only when that brings the step closer to the model
 * by more than margin.
 */
#define CACHE_JOINT	8

static uint32_t cache_choose(struct report_device *d, struct cache_guess *g,
			     double margin)
{
	uint32_t changed = 0;

	for (uint32_t a = 0, k; a < g->n; a += k) {
		unsigned was = 0, best = 0;
		double least = HUGE_VAL, stay = HUGE_VAL;

		for (k = 1; a + k < g->n && g->step[a + k] == g->step[a];)
			k++;
		if (k > CACHE_JOINT)
			k = CACHE_JOINT;
		for (uint32_t i = 0; i < k; i++)
			was |= (unsigned)g->hit[a + i] << i;
		for (unsigned m = 0; m < 1u << k; m++) {
			double e;

			cache_set_group(d, g, a, k, m);
			e = fabs(step_residual(d, g->step[a]));
			if (m == was)
				stay = e;
			if (e < least) {
				least = e;
				best = m;
			}
		}
		if (!(least < stay - margin))
			best = was;
		cache_set_group(d, g, a, k, best);
		changed += best != was;
	}
	return changed;
}

/*
 * Which reading of the candidates a model that has seen neither prefers:
 * fitted on the steps that hold no candidate (what a prefill of known
 * length costs), the candidates' steps' squared error with every one a
 * hit against with every one a miss. A model fitted with them bends to
 * either reading (its prefill cost drops to meet cheap hits read as
 * misses; its attention cost rises to meet dear misses read as hits), so
 * the question is put to one that was not. *prefer_hits false and
 * -ENODATA when those steps hold too few prefills to fit on.
 */
#define CACHE_MIN_REFERENCE	8

static int cache_reference(struct report_device *d, struct cache_guess *g,
			   bool *prefer_hits)
{
	const struct steps_result *s = &d->steps;
	bool *skip = calloc(s->nsteps ? s->nsteps : 1, sizeof(*skip));
	struct costmodel fitted = d->model;
	double sse[2] = { 0, 0 };
	uint32_t prefills = 0;
	int err;

	*prefer_hits = false;
	if (!skip)
		return -ENOMEM;
	for (uint32_t i = 0; i < g->n; i++)
		skip[g->step[i]] = true;
	for (uint32_t k = 0; k < s->nsteps; k++)
		for (uint32_t i = s->steps[k].first;
		     !skip[k] && i < s->steps[k].first + s->steps[k].n; i++)
			prefills += s->entries[i].phase == ATTR_PREFILL;
	err = prefills < CACHE_MIN_REFERENCE ? -ENODATA :
		fit_model_on(d, skip, NULL, &d->model);
	if (!err && !d->model.fitted)
		err = -ENODATA;
	for (int hit = 0; !err && hit < 2; hit++) {
		for (uint32_t i = 0; i < g->n; i++)
			cache_set(d, g, i, hit);
		for (uint32_t k = 0; k < s->nsteps; k++)
			if (skip[k]) {
				double e = step_residual(d, k);

				sse[hit] += e * e;
			}
	}
	for (uint32_t i = 0; i < g->n; i++)
		cache_set(d, g, i, false);
	*prefer_hits = !err && sse[1] < sse[0];
	d->model = fitted;
	free(skip);
	return err;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* A step's noise under the model: 1.4826 times the median absolute
 * residual of the steps that hold no candidate (a robust sigma). */
static double steps_noise(const struct report_device *d,
			  const struct cache_guess *g)
{
	const struct steps_result *s = &d->steps;
	double *v = malloc((s->nsteps ? s->nsteps : 1) * sizeof(*v)), sigma;
	uint32_t n = 0, c = 0;

	if (!v)
		return HUGE_VAL;	/* then nothing changes */
	for (uint32_t k = 0; k < s->nsteps; k++) {
		while (c < g->n && g->step[c] < k)
			c++;
		if (s->steps[k].n && !(c < g->n && g->step[c] == k))
			v[n++] = fabs(step_residual(d, k));
	}
	qsort(v, n, sizeof(*v), cmp_double);
	sigma = n ? 1.4826 * v[n / 2] : HUGE_VAL;
	free(v);
	return sigma;
}

static int cache_guess_alloc(struct cache_guess *g, uint32_t n)
{
	size_t k = n ? n : 1;

	g->entry = malloc(k * sizeof(*g->entry));
	g->step = malloc(k * sizeof(*g->step));
	g->prompt = malloc(k * sizeof(*g->prompt));
	g->reach = malloc(k * sizeof(*g->reach));
	g->hit = malloc(k * sizeof(*g->hit));
	return g->entry && g->step && g->prompt && g->reach && g->hit ? 0
								      : -ENOMEM;
}

static void cache_guess_free(struct cache_guess *g)
{
	free(g->entry);
	free(g->step);
	free(g->prompt);
	free(g->reach);
	free(g->hit);
}

/* The prefill entries that could have hit: whose prompt began as an
 * earlier one did, by at least one token. */
static void cache_candidates(const struct report *r,
			     const struct report_device *d,
			     struct cache_guess *g)
{
	const struct steps_result *s = &d->steps;

	for (uint32_t k = 0; k < s->nsteps; k++)
		for (uint32_t i = s->steps[k].first;
		     i < s->steps[k].first + s->steps[k].n; i++) {
			const struct attr_entry *e = &s->entries[i];
			const struct tt_request *q =
				&r->reqs[e->request].req;
			uint32_t p = e->tokens + e->context;
			double c;

			if (e->phase != ATTR_PREFILL || e->chunk ||
			    !q->prefix_bytes || !q->prompt_bytes || p < 2)
				continue;
			c = (double)p * q->prefix_bytes / q->prompt_bytes;
			if (c < 1)
				continue;
			g->entry[g->n] = i;
			g->step[g->n] = k;
			g->prompt[g->n] = p;
			g->reach[g->n] = c > p - 1 ? p - 1 : (uint32_t)c;
			g->hit[g->n++] = true;
		}
}

static int infer_cached(struct report *r, struct report_device *d)
{
	const struct steps_result *s = &d->steps;
	struct cache_guess g = { 0 };
	double sse0, sse1;
	uint32_t steps = 0, hits = 0;
	bool prefer_hits;
	int err;

	for (uint32_t i = 0; i < s->nentries; i++)
		if (r->reqs[s->entries[i].request].req.cached_source ==
		    TT_CACHED_WIRE)
			return 0;	/* the server says: nothing to infer */
	err = cache_guess_alloc(&g, s->nentries);
	if (err)
		goto out;
	cache_candidates(r, d, &g);
	for (uint32_t k = 0; k < s->nsteps; k++)
		steps += s->steps[k].n > 0;
	if (g.n < CACHE_MIN_CANDIDATES || steps < 4 * CM_NTERMS)
		goto out;
	sse0 = steps_sse(d);	/* the model as fitted: no cache */
	err = cache_reference(d, &g, &prefer_hits);
	if (err == -ENODATA)
		err = 0;	/* nothing to judge the candidates by */
	if (err || !prefer_hits)
		goto out;
	for (uint32_t i = 0; i < g.n; i++) {
		g.hit[i] = true;
		cache_set(d, &g, i, true);
	}
	for (int round = 0; round < CACHE_ROUNDS; round++) {
		if ((err = fit_model(d)))
			goto out;
		if (!cache_choose(d, &g, CACHE_MARGIN * steps_noise(d, &g)))
			break;
	}
	if ((err = fit_model(d)))
		goto out;
	sse1 = steps_sse(d);
	for (uint32_t i = 0; i < g.n; i++)
		hits += g.hit[i];
	if (!hits || sse1 <= 0 ||
	    steps * log(sse0 / sse1) <= log((double)steps)) {
		/* no better than no cache, for its price: as it was */
		for (uint32_t i = 0; i < g.n; i++)
			cache_set(d, &g, i, false);
		err = fit_model(d);
		goto out;
	}
	d->cache_hits = hits;
	d->cache_candidates = g.n;
	for (uint32_t i = 0; i < s->nentries; i++) {
		const struct attr_entry *e = &s->entries[i];
		struct tt_request *q = &r->reqs[e->request].req;

		if (e->phase != ATTR_PREFILL || e->chunk)
			continue;
		q->cached_tokens = e->context;
		q->cached_source = TT_CACHED_ESTIMATE;
	}
out:
	cache_guess_free(&g);
	return err;
}

/* Fit d's model on its steps, then split their time among requests. */
static int attribute_device(struct report *r, struct report_device *d,
			    struct attr_request *a)
{
	int err = fit_model(d);

	if (!err)
		err = infer_cached(r, d);
	if (err)
		return err;
	d->basis = attribution_run(d->steps.attr, d->steps.nsteps,
				   d->steps.entries, d->steps.nentries,
				   d->busy_ns, &d->model, a,
				   (uint32_t)r->nreqs, &d->unattributed_ns);
	if (d->basis < 0) {
		fprintf(stderr, "tokentrace: report: attribution on %s "
			"refused its steps (%u steps, %u entries, busy %llu "
			"ns): %s\n", d->dev.name, d->steps.nsteps,
			d->steps.nentries, (unsigned long long)d->busy_ns,
			strerror(-d->basis));
		return d->basis;
	}
	r->unattributed_ns += d->unattributed_ns;
	credit_device(r, d, a);
	err = share_variance(r, d);
	if (err)
		return err;
	if (d->attributed_ns + d->unattributed_ns != d->busy_ns) {
		fprintf(stderr, "tokentrace: report: conservation broken on "
			"%s: requests %llu + unattributed %llu != busy %llu "
			"ns\n", d->dev.name,
			(unsigned long long)d->attributed_ns,
			(unsigned long long)d->unattributed_ns,
			(unsigned long long)d->busy_ns);
		return -EPROTO;
	}
	return 0;
}

/* Whether d is an attributed GPU of server pid. */
static bool gpu_of(const struct report_device *d, uint32_t pid)
{
	return d->attributed && d->dev.kind == TT_DEV_GPU && d->pid == pid;
}

/*
 * The requests device d takes: those of the one process that ran it, if
 * that process answered any, so that the replicas of a data-parallel
 * deployment stay apart (0 where several processes ran it). Otherwise
 * all of them: an engine that runs in another process than the one that
 * answers HTTP (vLLM's engine core, the workers of its other ranks), or
 * requests without pids. A replica that answered none in the window
 * takes every request too, and so gives its time to other replicas'.
 */
static uint32_t requests_of(const struct report *r,
			    const struct report_device *d)
{
	for (size_t i = 0; d->pid && i < r->nreqs; i++)
		if (r->reqs[i].req.pid == d->pid)
			return d->pid;
	return 0;
}

/* Rank 0 of server pid: its lowest-id attributed GPU whose steps its own
 * copies cut; NULL if none. */
static const struct report_device *rank0_of(const struct report *r,
					    uint32_t pid)
{
	const struct report_device *best = NULL;

	for (size_t i = 0; i < r->ndevs; i++) {
		const struct report_device *d = &r->devs[i];

		if (gpu_of(d, pid) && !d->steps_dev &&
		    d->steps.source == STEPS_FROM_COPIES &&
		    (!best || d->dev.id < best->dev.id))
			best = d;
	}
	return best;
}

/*
 * Under tensor parallelism only rank 0 copies the sampled tokens back: a
 * GPU of a server with no step-ending copy of its own is cut again at its
 * rank 0's, so each of its steps is the same forward pass, and what it
 * did in that window is shared by the same batch.
 */
static int align_ranks(const struct report_input *in, struct report *r)
{
	for (size_t i = 0; i < r->ndevs; i++) {
		struct report_device *d = &r->devs[i];
		const struct report_device *l;

		if (!d->pid || !gpu_of(d, d->pid) || d->steps.copies)
			continue;
		l = rank0_of(r, d->pid);
		if (!l)
			continue;
		d->steps_dev = l->dev.id;
		steps_free(&d->steps);
		int err = find_steps(in, d);
		if (err)
			return err;
	}
	return 0;
}

static int attribute(const struct report_input *in, struct report *r)
{
	struct attr_request *a;
	int err = 0;

	for (size_t i = 0; !err && i < r->ndevs; i++) {
		struct report_device *d = &r->devs[i];

		if (!d->attributed)
			continue;
		d->req_pid = requests_of(r, d);
		err = find_steps(in, d);
	}
	if (!err)
		err = align_ranks(in, r);
	if (err)
		return err;
	a = calloc(r->nreqs ? r->nreqs : 1, sizeof(*a));
	if (!a)
		return -ENOMEM;
	for (size_t i = 0; !err && i < r->ndevs; i++)
		if (r->devs[i].attributed)
			err = attribute_device(r, &r->devs[i], a);
	for (size_t i = 0; !err && i < r->nreqs; i++)
		interval_of(r->reqs[i].gpu_ns, r->reqs[i].gpu_var,
			    &r->reqs[i].gpu_ns_lo, &r->reqs[i].gpu_ns_hi);
	free(a);
	return err;
}

/* The server of pid, or NULL. */
static struct report_server *find_server(struct report *r, uint32_t pid)
{
	for (size_t i = 0; i < r->nservers; i++)
		if (r->servers[i].pid == pid)
			return &r->servers[i];
	return NULL;
}

/* A server per process that ran attributed GPUs, with their sums and
 * the requests it answered. */
static int build_servers(struct report *r)
{
	for (size_t i = 0; i < r->ndevs; i++) {
		const struct report_device *d = &r->devs[i];
		struct report_server *s;

		if (!d->pid || !gpu_of(d, d->pid))
			continue;
		s = find_server(r, d->pid);
		if (!s) {
			s = realloc(r->servers, (r->nservers + 1) * sizeof(*s));
			if (!s)
				return -ENOMEM;
			r->servers = s;
			s = &s[r->nservers++];
			*s = (struct report_server){ .pid = d->pid };
		}
		s->gpu_ns += d->attributed_ns;
		s->busy_ns += d->busy_ns;
		s->unattributed_ns += d->unattributed_ns;
		s->comm_ns += d->comm_ns;
	}
	for (size_t i = 0; i < r->nreqs; i++) {
		struct report_server *s = find_server(r, r->reqs[i].req.pid);

		if (s)
			s->requests++;
	}
	return 0;
}

/* sum(requests gpu_ns) + unattributed_ns == busy_ns, over all devices. */
static int check_conservation(const struct report *r)
{
	uint64_t sum = 0;

	for (size_t i = 0; i < r->nreqs; i++)
		sum += r->reqs[i].gpu_ns;
	if (sum + r->unattributed_ns == r->busy_ns)
		return 0;
	fprintf(stderr, "tokentrace: report: conservation broken: requests "
		"%llu + unattributed %llu != busy %llu ns (off by %lld); "
		"the report is not trustworthy, please report this trace\n",
		(unsigned long long)sum,
		(unsigned long long)r->unattributed_ns,
		(unsigned long long)r->busy_ns,
		(long long)(sum + r->unattributed_ns - r->busy_ns));
	return -EPROTO;
}

static struct report_group *group_of(struct report_group **g, size_t *n,
				     const char *name)
{
	for (size_t i = 0; i < *n; i++)
		if (!strcmp((*g)[i].name, name))
			return &(*g)[i];
	struct report_group *p = realloc(*g, (*n + 1) * sizeof(*p));
	if (!p)
		return NULL;
	*g = p;
	p = &p[(*n)++];
	memset(p, 0, sizeof(*p));
	snprintf(p->name, sizeof(p->name), "%s", name);
	return p;
}

static void group_add(struct report_group *g, const struct report_request *q)
{
	g->requests++;
	if (q->req.prompt_tokens > 0)
		g->prompt_tokens += q->req.prompt_tokens;
	if (q->req.completion_tokens > 0)
		g->completion_tokens += q->req.completion_tokens;
	g->gpu_ns += q->gpu_ns;
	g->gpu_var += q->gpu_var;
	g->interval = (g->requests == 1 || g->interval) && q->interval;
	g->prefill_ns += q->prefill_ns;
	g->decode_ns += q->decode_ns;
	g->cost_usd += q->cost_usd;
	g->cost_loaded_usd += q->cost_loaded_usd;
	g->prompt_cost_usd += q->prompt_cost_usd;
	g->completion_cost_usd += q->completion_cost_usd;
	if (q->req.cached_source != TT_CACHED_NONE && q->req.prompt_tokens > 0) {
		g->cache_known = true;
		g->cache_estimated |= q->req.cached_source == TT_CACHED_ESTIMATE;
		g->cached_prompt_tokens += q->req.cached_tokens;
		g->cache_known_prompt_tokens += q->req.prompt_tokens;
		g->cached_cost_usd += q->cached_cost_usd;
		g->cache_saved_ns += q->cache_saved_ns;
		g->cache_saved_usd += q->cache_saved_usd;
	}
}

/* v / tokens, or -1 where there were no such tokens. */
static double per_token(double v, uint64_t tokens)
{
	return tokens ? v / tokens : -1;
}

/*
 * Per-token figures. The loaded cost of a group's prompt (completion)
 * tokens is their busy cost times the group's loaded/busy ratio: idle
 * time is shared in proportion to busy time, so it scales both alike.
 */
static void group_finish(struct report_group *g, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		interval_of(g[i].gpu_ns, g[i].gpu_var, &g[i].gpu_ns_lo,
			    &g[i].gpu_ns_hi);
		double k = g[i].cost_usd > 0 ?
				   g[i].cost_loaded_usd / g[i].cost_usd : 0;

		g[i].usd_per_1m_prompt = per_token(g[i].prompt_cost_usd * 1e6,
						   g[i].prompt_tokens);
		g[i].usd_per_1m_completion = per_token(
			g[i].completion_cost_usd * 1e6, g[i].completion_tokens);
		g[i].loaded_usd_per_1m_prompt = per_token(
			g[i].prompt_cost_usd * k * 1e6, g[i].prompt_tokens);
		g[i].loaded_usd_per_1m_completion = per_token(
			g[i].completion_cost_usd * k * 1e6,
			g[i].completion_tokens);
		g[i].ms_per_prompt_token = per_token(g[i].prefill_ns / 1e6,
						     g[i].prompt_tokens);
		g[i].usd_per_1m_cached_prompt = per_token(
			g[i].cached_cost_usd * 1e6, g[i].cached_prompt_tokens);
		g[i].usd_per_1m_uncached_prompt = per_token(
			(g[i].prompt_cost_usd - g[i].cached_cost_usd) * 1e6,
			g[i].prompt_tokens - g[i].cached_prompt_tokens);
		g[i].ms_per_completion_token = per_token(
			g[i].decode_ns / 1e6, g[i].completion_tokens);
	}
}

const char *report_tenant_of(const struct tt_request *q)
{
	return q->tenant[0] ? q->tenant : "-";
}

const char *report_model_of(const struct tt_request *q)
{
	return q->model[0] ? q->model : "-";
}

static int build_groups(const struct report_input *in, struct report *r)
{
	/* several hosts: one group each, in their order, even with none of
	   their requests */
	for (size_t k = 0; in->nhosts > 1 && k < in->nhosts; k++)
		if (!group_of(&r->hosts, &r->nhosts, in->hosts[k]))
			return -ENOMEM;
	for (size_t i = 0; i < r->nreqs; i++) {
		const struct report_request *q = &r->reqs[i];
		const char *t = report_tenant_of(&q->req);
		const char *m = report_model_of(&q->req);
		struct report_group *g = group_of(&r->tenants, &r->ntenants, t);
		if (!g)
			return -ENOMEM;
		group_add(g, q);
		g = group_of(&r->models, &r->nmodels, m);
		if (!g)
			return -ENOMEM;
		group_add(g, q);
		size_t h = REPORT_HOST_OF_PID(q->req.pid);

		if (h < r->nhosts)
			group_add(&r->hosts[h], q);
	}
	group_finish(r->tenants, r->ntenants);
	group_finish(r->models, r->nmodels);
	group_finish(r->hosts, r->nhosts);
	return 0;
}

/* A device's name in the findings, with its id where another device has
 * the same name (the GPUs of a host are mostly of one model). */
static void device_label(const struct report *r,
			 const struct report_device *d, char *buf, size_t len)
{
	for (size_t i = 0; i < r->ndevs; i++)
		if (&r->devs[i] != d &&
		    !strcmp(r->devs[i].dev.name, d->dev.name)) {
			snprintf(buf, len, "%s (device %u)", d->dev.name,
				 d->dev.id);
			return;
		}
	snprintf(buf, len, "%s", d->dev.name);
}

#define LABEL_MAX	(sizeof(((struct tt_device *)0)->name) + 24)

/* What r's findings are judged on: its attributed devices (their
 * intervals ivs), tenants and prompts over its window. */
struct judge_in {
	struct findings_device *fd;
	struct findings_tenant *ft;
	char (*label)[LABEL_MAX];
	struct findings_input fi;
};

static int judge_in_of(struct report *r, const struct tt_interval *ivs,
		       size_t nivs, struct judge_in *j)
{
	size_t n = 0;

	j->fd = calloc(r->ndevs + 1, sizeof(*j->fd));
	j->ft = calloc(r->ntenants + 1, sizeof(*j->ft));
	j->label = calloc(r->ndevs + 1, sizeof(*j->label));
	if (!j->fd || !j->ft || !j->label)
		return -ENOMEM;
	for (size_t i = 0; i < r->ndevs; i++) {
		struct report_device *d = &r->devs[i];
		if (!d->attributed)
			continue;
		device_label(r, d, j->label[n], sizeof(j->label[n]));
		j->fd[n] = (struct findings_device){
			.name = j->label[n], .kind = d->dev.kind,
			.ivs = ivs, .nivs = nivs, .id = d->dev.id,
			.steps = &d->steps, .model = &d->model,
			.usd_per_hour = d->usd_per_hour,
			.comm_ns = d->comm_ns,
		};
		n++;
	}
	for (size_t i = 0; i < r->ntenants; i++)
		j->ft[i] = (struct findings_tenant){
			.name = r->tenants[i].name,
			.gpu_ns = r->tenants[i].gpu_ns,
			.tokens = r->tenants[i].prompt_tokens +
				  r->tenants[i].completion_tokens,
		};
	j->fi = (struct findings_input){
		.start_ns = r->start_ns, .end_ns = r->end_ns,
		.devs = j->fd, .ndevs = n,
		.tenants = j->ft, .ntenants = r->ntenants,
		.max_batch = r->max_batch, .prompts = r->prompts,
	};
	return 0;
}

static void judge_in_free(struct judge_in *j)
{
	free(j->fd);
	free(j->ft);
	free(j->label);
}

/* The window's tally into r->tally, and the findings judged on it; a
 * time range of a longer trace is only counted (its findings are judged
 * on the whole, report_finish_merged). */
static int run_findings(const struct report_input *in, struct report *r)
{
	bool range = in->cut_before || in->cut_after;
	struct judge_in j;
	int err;

	r->max_batch = in->max_batch;
	for (size_t i = 0; !range && i < r->nreqs; i++)
		findings_prompts_add(&r->prompts, &r->reqs[i].req);
	err = judge_in_of(r, in->ivs, in->nivs, &j);
	if (!err) {
		j.fi.reqs = in->reqs;
		j.fi.nreqs = in->nreqs;
		j.fi.cut_before = in->cut_before;
		j.fi.cut_after = in->cut_after;
		r->tally = findings_tally_of(&j.fi);
		err = !r->tally ? -ENOMEM : range ? 0 :
		      findings_judge(r->tally, &j.fi, &r->findings);
	}
	judge_in_free(&j);
	return err;
}

static void pick_model_dev(struct report *r)
{
	r->model_dev = SIZE_MAX;
	for (size_t i = 0; i < r->ndevs; i++)
		if (r->devs[i].attributed &&
		    (r->model_dev == SIZE_MAX ||
		     r->devs[i].busy_ns > r->devs[r->model_dev].busy_ns))
			r->model_dev = i;
}

static bool bad_input(const struct report_input *in)
{
	return in->end_ns < in->start_ns || (in->nreqs && !in->reqs) ||
	       (in->ndevs && !in->devs) || (in->nivs && !in->ivs) ||
	       (in->nprices && !in->prices) || (in->nnames && !in->names);
}

int report_build(const struct report_input *given, struct report *r)
{
	const struct report_input *in = given;
	struct report_input est;
	int err;

	memset(r, 0, sizeof(*r));
	r->model_dev = SIZE_MAX;
	if (bad_input(in)) {
		fprintf(stderr, "tokentrace: report: bad input (window %llu.."
			"%llu, or an array missing for a count)\n",
			(unsigned long long)in->start_ns,
			(unsigned long long)in->end_ns);
		return -EINVAL;
	}
	r->start_ns = in->start_ns;
	r->end_ns = in->end_ns;
	r->window_ns = in->end_ns - in->start_ns;
	r->losses = in->losses;
	err = copy_requests(in, r);
	if (!err && r->prompts_estimated) {
		err = estimated_input(given, r, &est);
		in = &est;
	}
	if (!err)
		err = keep_dev_ns(in, r);
	if (!err)
		err = collect_devices(in, r);
	if (!err)
		err = device_busy(in, r);
	if (!err)
		err = device_comm(in, r);
	if (err)
		return err;
	pick_attributed(in, r);
	err = attribute(in, r);
	if (!err)
		err = check_conservation(r);
	if (!err)
		err = build_groups(in, r);
	if (!err)
		err = build_servers(r);
	if (!err)
		err = run_findings(in, r);
	pick_model_dev(r);
	return err;
}

void report_free(struct report *r)
{
	free(r->est_reqs);
	for (size_t i = 0; i < r->ndevs; i++)
		steps_free(&r->devs[i].steps);
	free(r->devs);
	free(r->reqs);
	free(r->token_store);
	for (size_t i = 0; i < r->ntenants; i++)
		free(r->tenants[i].loaded_ns);
	for (size_t i = 0; i < r->nmodels; i++)
		free(r->models[i].loaded_ns);
	for (size_t i = 0; i < r->nhosts; i++)
		free(r->hosts[i].loaded_ns);
	free(r->tenants);
	free(r->models);
	free(r->hosts);
	free(r->dev_ns_store);
	free(r->loaded_usd_per_ns);
	free(r->servers);
	findings_tally_free(r->tally);
	findings_free(&r->findings);
	memset(r, 0, sizeof(*r));
}

/* ---- a report of several shards (user/shard.c) ------------------------- */

void report_request_finish(struct report_request *q)
{
	interval_of(q->gpu_ns, q->gpu_var, &q->gpu_ns_lo, &q->gpu_ns_hi);
}

void report_request_merge(struct report_request *into,
			  const struct report_request *q)
{
	into->gpu_ns += q->gpu_ns;
	into->prefill_ns += q->prefill_ns;
	into->decode_ns += q->decode_ns;
	into->gpu_var += q->gpu_var;
	into->interval = into->interval && q->interval;
	into->cost_usd += q->cost_usd;
	into->cost_loaded_usd += q->cost_loaded_usd;
	into->prompt_cost_usd += q->prompt_cost_usd;
	into->completion_cost_usd += q->completion_cost_usd;
	into->cached_cost_usd += q->cached_cost_usd;
	into->cache_saved_ns += q->cache_saved_ns;
	into->cache_saved_usd += q->cache_saved_usd;
}

static struct report_device *dev_by_id(struct report *r, uint32_t id)
{
	for (size_t i = 0; i < r->ndevs; i++)
		if (r->devs[i].dev.id == id)
			return &r->devs[i];
	return NULL;
}

static void steps_merge(struct steps_result *a, const struct steps_result *b)
{
	if (!a->nsteps && b->nsteps)
		a->source = b->source;
	a->nsteps += b->nsteps;
	a->estimated += b->estimated;
	a->bursts += b->bursts;
	a->copies += b->copies;
	a->batch_steps += b->batch_steps;
	a->batch_requests += b->batch_requests;
	if (b->batch_budget > a->batch_budget)
		a->batch_budget = b->batch_budget;
	if (b->chunk_tokens > a->chunk_tokens)
		a->chunk_tokens = b->chunk_tokens;
	if (!a->burst_gap_ns)
		a->burst_gap_ns = b->burst_gap_ns;
	a->busy_ns += b->busy_ns;
}

/* A device of the shard into the same device of acc. */
static void device_merge(struct report_device *a,
			 const struct report_device *b)
{
	a->busy_ns += b->busy_ns;
	a->idle_ns += b->idle_ns;
	a->attributed |= b->attributed;
	a->cache_candidates += b->cache_candidates;
	a->cache_hits += b->cache_hits;
	a->attributed_ns += b->attributed_ns;
	a->unattributed_ns += b->unattributed_ns;
	a->comm_ns += b->comm_ns;
	if (a->pid != b->pid && b->busy_ns)
		a->pid = a->busy_ns == b->busy_ns ? b->pid : 0;
	/* the model shown: the one of the shard where it was busiest */
	if (b->model.fitted && (!a->model.fitted || b->busy_ns > a->shard_busy)) {
		a->model = b->model;
		a->basis = b->basis;
		a->shard_busy = b->busy_ns;
	}
	steps_merge(&a->steps, &b->steps);
}

int report_merge_init(struct report *acc, const char (*hosts)[64],
		      size_t nhosts, size_t loaded_ndevs)
{
	acc->loaded_ndevs = loaded_ndevs;
	/* several hosts: one group each, in their order, as report_build */
	for (size_t k = 0; nhosts > 1 && k < nhosts; k++)
		if (!group_of(&acc->hosts, &acc->nhosts, hosts[k]))
			return -ENOMEM;
	return 0;
}

int report_merge(struct report *acc, struct report *part)
{
	if (!acc->shards) {
		/* the first: its devices, in their order, set the shape */
		struct report_device *d = malloc((part->ndevs ? part->ndevs : 1)
						 * sizeof(*d));

		if (!d)
			return -ENOMEM;
		memcpy(d, part->devs, part->ndevs * sizeof(*d));
		for (size_t i = 0; i < part->ndevs; i++) {
			memset(&d[i].steps, 0, sizeof(d[i].steps));
			steps_merge(&d[i].steps, &part->devs[i].steps);
			d[i].shard_busy = d[i].busy_ns;
		}
		acc->devs = d;
		acc->ndevs = part->ndevs;
		acc->start_ns = part->start_ns;
		snprintf(acc->compute, sizeof(acc->compute), "%s",
			 part->compute);
		snprintf(acc->hooks, sizeof(acc->hooks), "%s", part->hooks);
		acc->losses = part->losses;
		acc->max_batch = part->max_batch;

	} else {
		for (size_t i = 0; i < part->ndevs; i++) {
			struct report_device *a = dev_by_id(acc,
						      part->devs[i].dev.id);

			if (a)
				device_merge(a, &part->devs[i]);
		}
	}
	acc->shards++;
	if (part->end_ns > acc->end_ns)
		acc->end_ns = part->end_ns;
	acc->window_ns = acc->end_ns - acc->start_ns;
	acc->busy_ns += part->busy_ns;
	acc->unattributed_ns += part->unattributed_ns;
	for (size_t i = 0; i < part->nservers; i++) {
		const struct report_server *b = &part->servers[i];
		struct report_server *a = find_server(acc, b->pid);

		if (!a) {
			a = realloc(acc->servers,
				    (acc->nservers + 1) * sizeof(*a));
			if (!a)
				return -ENOMEM;
			acc->servers = a;
			a = &a[acc->nservers++];
			*a = (struct report_server){ .pid = b->pid };
		}
		a->gpu_ns += b->gpu_ns;
		a->busy_ns += b->busy_ns;
		a->unattributed_ns += b->unattributed_ns;
		a->comm_ns += b->comm_ns;
	}
	struct findings_tally *t = part->tally;
	int err = 0;

	part->tally = NULL;
	if (!acc->tally)
		acc->tally = t;
	else if (t)
		err = findings_tally_join(acc->tally, t);
	pick_model_dev(acc);
	return err;
}

/* A merged group's busy ns per device, as group_add adds the rest. */
static int group_add_dev_ns(const struct report *r, struct report_group *g,
			    const struct report_request *q)
{
	if (!r->loaded_ndevs || !q->dev_ns)
		return 0;
	if (!g->loaded_ns &&
	    !(g->loaded_ns = calloc(r->loaded_ndevs, sizeof(uint64_t))))
		return -ENOMEM;
	for (size_t d = 0; d < r->loaded_ndevs; d++)
		g->loaded_ns[d] += q->dev_ns[d];
	return 0;
}

int report_add_request(struct report *r, const struct report_request *q)
{
	struct report_group *g;
	struct report_server *s;

	g = group_of(&r->tenants, &r->ntenants, report_tenant_of(&q->req));
	if (!g || group_add_dev_ns(r, g, q))
		return -ENOMEM;
	group_add(g, q);
	g = group_of(&r->models, &r->nmodels, report_model_of(&q->req));
	if (!g || group_add_dev_ns(r, g, q))
		return -ENOMEM;
	group_add(g, q);
	if (REPORT_HOST_OF_PID(q->req.pid) < r->nhosts) {
		g = &r->hosts[REPORT_HOST_OF_PID(q->req.pid)];
		if (group_add_dev_ns(r, g, q))
			return -ENOMEM;
		group_add(g, q);
	}
	s = find_server(r, q->req.pid);
	if (s)
		s->requests++;
	findings_prompts_add(&r->prompts, &q->req);
	r->streamed_requests++;
	r->streamed_gpu_ns += q->gpu_ns;
	return 0;
}

/* The groups' busy ns per device at their loaded prices. */
static void price_loaded(const struct report *r, struct report_group *g,
			 size_t n)
{
	for (size_t i = 0; i < n; i++)
		for (size_t d = 0; g[i].loaded_ns && d < r->loaded_ndevs; d++)
			g[i].cost_loaded_usd += (double)g[i].loaded_ns[d] *
						r->loaded_usd_per_ns[d];
}

/*
 * The whole trace's idle time shared: a busy ns on device d costs, fully
 * loaded, its price times the window over d's attributed time (the
 * in-memory report's share, credit_device, with every range's busy ns
 * and the whole window), and the groups take theirs.
 */
static int share_loaded(struct report *r)
{
	size_t nd = r->loaded_ndevs;

	if (!nd)
		return 0;
	r->loaded_usd_per_ns = calloc(nd, sizeof(double));
	if (!r->loaded_usd_per_ns)
		return -ENOMEM;
	for (size_t d = 0; d < nd && d < r->ndevs; d++) {
		const struct report_device *v = &r->devs[d];

		if (v->attributed && v->attributed_ns)
			r->loaded_usd_per_ns[d] = v->usd_per_hour /
						  NS_PER_HOUR *
						  (double)r->window_ns /
						  (double)v->attributed_ns;
	}
	price_loaded(r, r->tenants, r->ntenants);
	price_loaded(r, r->models, r->nmodels);
	price_loaded(r, r->hosts, r->nhosts);
	return 0;
}

int report_finish_merged(struct report *r)
{
	struct judge_in j;
	int err = share_loaded(r);

	if (err)
		return err;
	group_finish(r->tenants, r->ntenants);
	group_finish(r->models, r->nmodels);
	group_finish(r->hosts, r->nhosts);
	findings_free(&r->findings);
	if (r->tally) {
		err = judge_in_of(r, NULL, 0, &j);
		if (!err)
			err = findings_judge(r->tally, &j.fi, &r->findings);
		judge_in_free(&j);
	}
	if (err)
		return err;
	if (r->streamed_gpu_ns + r->unattributed_ns == r->busy_ns)
		return 0;
	fprintf(stderr, "tokentrace: report: conservation broken over the "
		"shards: requests %llu + unattributed %llu != busy %llu ns\n",
		(unsigned long long)r->streamed_gpu_ns,
		(unsigned long long)r->unattributed_ns,
		(unsigned long long)r->busy_ns);
	return -EPROTO;
}

/* ---- JSON ---------------------------------------------------------------- */

static void num(cJSON *o, const char *k, double v)
{
	cJSON_AddNumberToObject(o, k, v);
}

/* A number, or null when negative (unknown). */
static void num_or_null(cJSON *o, const char *k, double v)
{
	if (v < 0 || !isfinite(v))
		cJSON_AddNullToObject(o, k);
	else
		cJSON_AddNumberToObject(o, k, v);
}

static const char *basis_name(int basis)
{
	return basis == ATTR_BY_MODEL ? "model" : "tokens";
}

static cJSON *device_json(const struct report *r,
			  const struct report_device *d)
{
	cJSON *o = cJSON_CreateObject();
	char uuid[sizeof(d->dev.uuid) + 1];

	if (!o)
		return NULL;
	cJSON_AddStringToObject(o, "name", d->dev.name);
	cJSON_AddStringToObject(o, "kind",
				d->dev.kind == TT_DEV_CPU ? "cpu" : "gpu");
	num(o, "id", d->dev.id);
	snprintf(uuid, sizeof(uuid), "%.*s", (int)sizeof(d->dev.uuid),
		 d->dev.uuid);
	if (uuid[0])
		cJSON_AddStringToObject(o, "uuid", uuid);
	num(o, "pid", d->pid);
	num(o, "busy_ns", (double)d->busy_ns);
	num(o, "idle_ns", (double)d->idle_ns);
	if (d->dev.kind == TT_DEV_CPU)
		cJSON_AddStringToObject(o, "busy_source",
			"on-CPU union of the traced process's threads");
	if (d->dev.kind == TT_DEV_GPU) {
		num(o, "comm_ns", (double)d->comm_ns);
		num(o, "comm_share", d->busy_ns ?
		    (double)d->comm_ns / d->busy_ns : 0);
	}
	num(o, "usd_per_hour", d->usd_per_hour);
	cJSON_AddBoolToObject(o, "attributed", d->attributed);
	if (!d->attributed)
		return o;
	num(o, "attributed_ns", (double)d->attributed_ns);
	num(o, "unattributed_ns", (double)d->unattributed_ns);
	num(o, "steps", d->steps.nsteps);
	cJSON_AddStringToObject(o, "steps_from",
				steps_source_name(d->steps.source));
	cJSON_AddStringToObject(o, "steps_source",
				steps_source_name(d->steps.source));
	/* prompts inferred prefilled in chunks of this many tokens; 0: not */
	num(o, "prefill_chunk_tokens", d->steps.chunk_tokens);
	/* steps whose work was read from the engine's batch, and the
	 * requests tied to its sequences */
	num(o, "batch_steps", d->steps.batch_steps);
	num(o, "batch_requests", d->steps.batch_requests);
	/* the engine's token budget a step, as the batches showed it */
	num(o, "batch_token_budget", d->steps.batch_budget);
	if (d->steps_dev) {
		const struct report_device *l = find_dev(r, d->steps_dev);

		cJSON_AddStringToObject(o, "steps_from_device",
					l ? l->dev.name : "");
		num(o, "steps_from_device_id", d->steps_dev);
	}
	num(o, "token_bursts", d->steps.bursts);
	num(o, "requests_placed_by_estimate", d->steps.estimated);
	if (d->cache_candidates) {
		cJSON *c = cJSON_AddObjectToObject(o, "prefix_cache");

		cJSON_AddStringToObject(c, "source", "estimate");
		num(c, "prefills_that_began_as_an_earlier_prompt",
		    d->cache_candidates);
		num(c, "inferred_hits", d->cache_hits);
	}
	return o;
}

/* The request record (requests.c's JSON line) with attribution added. */
int report_request_write_json(const struct report_request *q, FILE *f)
{
	tt_request_write_json_open(&q->req, f);
	if (q->req.cached_source != TT_CACHED_NONE)
		fprintf(f, ",\"cache_saved_gpu_ns\":%" PRIu64,
			q->cache_saved_ns);
	if (q->interval)
		fprintf(f, ",\"gpu_ns_lo\":%" PRIu64 ",\"gpu_ns_hi\":%" PRIu64,
			q->gpu_ns_lo, q->gpu_ns_hi);
	else
		fputs(",\"gpu_ns_lo\":null,\"gpu_ns_hi\":null", f);
	fprintf(f, ",\"gpu_ns\":%" PRIu64 ",\"prefill_gpu_ns\":%" PRIu64
		",\"decode_gpu_ns\":%" PRIu64 ",\"cost_usd\":%.9g,"
		"\"cost_loaded_usd\":", q->gpu_ns, q->prefill_ns,
		q->decode_ns, q->cost_usd);
	report_put_loaded(f, q);
	fputc('}', f);
	return ferror(f) ? -EIO : 0;
}

/* The request's object as a cJSON tree (report_json's, for callers that
 * want the whole report as one; printing streams them instead). */
static cJSON *request_json(const struct report_request *q)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *m = open_memstream(&buf, &len);
	cJSON *o = NULL;

	if (!m)
		return NULL;
	int err = report_request_write_json(q, m);
	if (fclose(m) == 0 && !err)
		o = cJSON_Parse(buf);
	free(buf);
	return o;
}

static cJSON *group_json(const struct report_group *g)
{
	cJSON *o = cJSON_CreateObject();

	if (!o)
		return NULL;
	cJSON_AddStringToObject(o, "name", g->name);
	num(o, "requests", (double)g->requests);
	num(o, "prompt_tokens", (double)g->prompt_tokens);
	num(o, "completion_tokens", (double)g->completion_tokens);
	num(o, "gpu_ns", (double)g->gpu_ns);
	num_or_null(o, "gpu_ns_lo", g->interval ? (double)g->gpu_ns_lo : -1);
	num_or_null(o, "gpu_ns_hi", g->interval ? (double)g->gpu_ns_hi : -1);
	num(o, "prefill_gpu_ns", (double)g->prefill_ns);
	num(o, "decode_gpu_ns", (double)g->decode_ns);
	num(o, "cost_usd", g->cost_usd);
	num(o, "cost_loaded_usd", g->cost_loaded_usd);
	num_or_null(o, "usd_per_1m_prompt", g->usd_per_1m_prompt);
	num_or_null(o, "usd_per_1m_completion", g->usd_per_1m_completion);
	num_or_null(o, "loaded_usd_per_1m_prompt",
		    g->loaded_usd_per_1m_prompt);
	num_or_null(o, "loaded_usd_per_1m_completion",
		    g->loaded_usd_per_1m_completion);
	num_or_null(o, "gpu_ms_per_prompt_token", g->ms_per_prompt_token);
	num_or_null(o, "gpu_ms_per_completion_token",
		    g->ms_per_completion_token);
	if (g->cache_known) {
		cJSON *c = cJSON_AddObjectToObject(o, "prefix_cache");

		cJSON_AddStringToObject(c, "cached_tokens_source",
					g->cache_estimated ? "estimate"
							   : "wire");
		num(c, "cached_prompt_tokens", (double)g->cached_prompt_tokens);
		num(c, "computed_prompt_tokens",
		    (double)(g->prompt_tokens - g->cached_prompt_tokens));
		num(c, "hit_rate", g->cache_known_prompt_tokens ?
		    (double)g->cached_prompt_tokens /
		    g->cache_known_prompt_tokens : 0);
		num(c, "saved_gpu_ns", (double)g->cache_saved_ns);
		num(c, "saved_usd", g->cache_saved_usd);
		num_or_null(c, "usd_per_1m_cached_prompt",
			    g->usd_per_1m_cached_prompt);
		num_or_null(c, "usd_per_1m_uncached_prompt",
			    g->usd_per_1m_uncached_prompt);
	}
	return o;
}

static cJSON *cost_model_json(const struct report *r)
{
	cJSON *o = cJSON_CreateObject(), *terms;
	static const char *const keys[CM_NTERMS] = {
		[CM_FIXED] = "fixed_ms",
		[CM_PREFILL] = "ms_per_prefill_token",
		[CM_DECODE] = "ms_per_decode_token",
		[CM_CONTEXT] = "ms_per_context_token",
		[CM_PREFILL_SQ] = "ms_per_prefill_attention_unit",
	};

	if (!o)
		return NULL;
	const struct report_device *d =
		r->model_dev == SIZE_MAX ? NULL : &r->devs[r->model_dev];
	const struct costmodel *m = d ? &d->model : NULL;
	bool fit = m && m->fitted;
	cJSON_AddStringToObject(o, "device", d ? d->dev.name : "");
	for (int t = 0; t < CM_NTERMS; t++)
		num_or_null(o, keys[t], fit ? m->coef[t] / 1e6 : -1);
	terms = cJSON_AddArrayToObject(o, "terms");
	for (int t = 0; fit && t < CM_NTERMS; t++)
		if (m->used[t])
			cJSON_AddItemToArray(terms, cJSON_CreateString(
				costmodel_term_name(t)));
	num_or_null(o, "r2", fit ? m->r2 : -1);
	num(o, "steps", d ? d->steps.nsteps : 0);
	/* step cost against the run's mean, per window (1, 1, 0: none) */
	num_or_null(o, "drift_min", fit ? m->drift_min : -1);
	num_or_null(o, "drift_max", fit ? m->drift_max : -1);
	num(o, "drift_windows", fit ? m->drift_windows : 0);
	cJSON_AddStringToObject(o, "basis", d ? basis_name(d->basis)
					       : "none");
	return o;
}

static cJSON *finding_json(const struct finding *f)
{
	cJSON *o = cJSON_CreateObject();

	if (!o)
		return NULL;
	cJSON_AddStringToObject(o, "id", f->id);
	cJSON_AddStringToObject(o, "severity",
				findings_severity_name(f->severity));
	cJSON_AddStringToObject(o, "summary", f->summary);
	cJSON_AddItemToObject(o, "evidence",
			      f->evidence ? cJSON_Duplicate(f->evidence, 1)
					  : cJSON_CreateObject());
	cJSON_AddStringToObject(o, "action", f->action);
	return o;
}

static cJSON *loss_json(uint64_t events, uint64_t bytes)
{
	cJSON *o = cJSON_CreateObject();

	num(o, "events", (double)events);
	num(o, "bytes", (double)bytes);
	return o;
}

static void add_losses(cJSON *root, const struct report_losses *l)
{
	cJSON *o = cJSON_AddObjectToObject(root, "losses");

	if (!o)
		return;
	num(o, "events", (double)(l->cpu_events + l->sock_events +
				  l->cupti_records));
	num(o, "bytes", (double)l->sock_bytes);
	cJSON_AddItemToObject(o, "cpu", loss_json(l->cpu_events, 0));
	cJSON_AddItemToObject(o, "sockets",
			      loss_json(l->sock_events, l->sock_bytes));
	cJSON_AddItemToObject(o, "cupti", loss_json(l->cupti_records, 0));
}

/* Add items made by mk(i) to a new array key of root. */
static void add_array(cJSON *root, const char *key, size_t n,
		      cJSON *(*mk)(const void *, size_t), const void *base)
{
	cJSON *a = cJSON_AddArrayToObject(root, key);

	for (size_t i = 0; a && i < n; i++)
		cJSON_AddItemToArray(a, mk(base, i));
}

/* b: the report (a device names its rank 0 by the report's devices). */
/* The name of device d's host, NULL with one host. */
static const char *host_name(const struct report *r,
			     const struct report_device *d)
{
	return d->dev.host < r->nhosts ? r->hosts[d->dev.host].name : NULL;
}

static cJSON *mk_dev(const void *b, size_t i)
{
	const struct report *r = b;
	cJSON *o = device_json(r, &r->devs[i]);

	if (o && host_name(r, &r->devs[i]))
		cJSON_AddStringToObject(o, "host", host_name(r, &r->devs[i]));
	return o;
}

/* A server's object; b: the report. */
static cJSON *mk_server(const void *b, size_t i)
{
	const struct report *r = b;
	const struct report_server *s = &r->servers[i];
	cJSON *o = cJSON_CreateObject(), *names, *ids;

	if (!o)
		return NULL;
	num(o, "pid", s->pid);
	if (r->nhosts && REPORT_HOST_OF_PID(s->pid) < r->nhosts)
		cJSON_AddStringToObject(o, "host",
			r->hosts[REPORT_HOST_OF_PID(s->pid)].name);
	names = cJSON_AddArrayToObject(o, "devices");
	ids = cJSON_AddArrayToObject(o, "device_ids");
	for (size_t k = 0; names && ids && k < r->ndevs; k++) {
		const struct report_device *d = &r->devs[k];

		if (!gpu_of(d, s->pid))
			continue;
		cJSON_AddItemToArray(names, cJSON_CreateString(d->dev.name));
		cJSON_AddItemToArray(ids, cJSON_CreateNumber(d->dev.id));
	}
	num(o, "requests", (double)s->requests);
	num(o, "gpu_ns", (double)s->gpu_ns);
	num(o, "busy_ns", (double)s->busy_ns);
	num(o, "unattributed_ns", (double)s->unattributed_ns);
	num(o, "comm_ns", (double)s->comm_ns);
	return o;
}

static cJSON *mk_req(const void *b, size_t i)
{
	return request_json(&((const struct report_request *)b)[i]);
}

static cJSON *mk_group(const void *b, size_t i)
{
	return group_json(&((const struct report_group *)b)[i]);
}

static cJSON *mk_finding(const void *b, size_t i)
{
	return finding_json(&((const struct finding *)b)[i]);
}

/* with_requests false: "requests" is an empty array (report_print_json
 * streams them in its place). */
static cJSON *report_json_ex(const struct report *r, bool with_requests)
{
	cJSON *root = cJSON_CreateObject();

	if (!root)
		return NULL;
	num(root, "window_ns", (double)r->window_ns);
	num(root, "window_start_ns", (double)r->start_ns);
	num(root, "window_end_ns", (double)r->end_ns);
	cJSON_AddStringToObject(root, "compute", r->compute);
	if (r->hooks[0])
		cJSON_AddStringToObject(root, "hooks", r->hooks);
	if (r->shards > 1)
		num(root, "shards", r->shards);
	add_array(root, "devices", r->ndevs, mk_dev, r);
	add_array(root, "servers", r->nservers, mk_server, r);
	num(root, "busy_ns", (double)r->busy_ns);
	num(root, "unattributed_ns", (double)r->unattributed_ns);
	add_array(root, "requests", with_requests ? r->nreqs : 0, mk_req,
		  r->reqs);
	add_array(root, "tenants", r->ntenants, mk_group, r->tenants);
	add_array(root, "models", r->nmodels, mk_group, r->models);
	if (r->nhosts)
		add_array(root, "hosts", r->nhosts, mk_group, r->hosts);
	cJSON_AddItemToObject(root, "cost_model", cost_model_json(r));
	add_array(root, "findings", r->findings.n, mk_finding,
		  r->findings.items);
	add_losses(root, &r->losses);
	return root;
}

cJSON *report_json(const struct report *r)
{
	return report_json_ex(r, true);
}

cJSON *report_json_shell(const struct report *r)
{
	return report_json_ex(r, false);
}

/*
 * Where the shell's empty requests array is, in its unformatted text:
 * after "unattributed_ns", before "tenants" (report_json_ex's order). A
 * name inside a string cannot hold this text: its quotes are escaped.
 */
#define REQUESTS_SLOT	",\"requests\":[],\"tenants\":"

/*
 * A whole report object built with cJSON costs about 25 us a request
 * (every number and string a node, printed and checked again), most of
 * the time of a JSON report of a long trace; the requests are instead
 * written straight into the slot of the shell's empty array.
 */
int report_print_json(cJSON *o, const struct report *r, FILE *f)
{
	char *s = o ? cJSON_PrintUnformatted(o) : NULL;
	char *slot = s && r ? strstr(s, REQUESTS_SLOT) : NULL;
	int err = 0;

	cJSON_Delete(o);
	if (!s)
		return -ENOMEM;
	if (!slot) {
		err = fputs(s, f) < 0 ? -EIO : 0;
	} else {
		size_t head = (size_t)(slot - s) + strlen(",\"requests\":[");

		if (fwrite(s, 1, head, f) != head)
			err = -EIO;
		for (size_t i = 0; !err && i < r->nreqs; i++) {
			if (i)
				fputc(',', f);
			err = report_request_write_json(&r->reqs[i], f);
		}
		if (!err && fputs(s + head, f) < 0)
			err = -EIO;
	}
	if (!err && fputc('\n', f) < 0)
		err = -EIO;
	free(s);
	return err;
}

/* ---- loaded costs written before the whole trace is read ---------------- */

int report_mark_loaded(struct report_marks *m, struct report_request *q)
{
	double local = q->cost_loaded_usd;

	if (m->ndevs && !q->dev_ns)
		return -EINVAL;
	if (fwrite(&local, sizeof(local), 1, m->side) != 1 ||
	    fwrite(q->dev_ns, sizeof(uint64_t), m->ndevs, m->side) !=
	    m->ndevs)
		return -EIO;
	q->loaded_mark = ++m->n;
	return 0;
}

void report_put_loaded(FILE *f, const struct report_request *q)
{
	if (q->loaded_mark)
		fprintf(f, "%c%" PRIu64 "%c", REPORT_LOADED_MARK,
			q->loaded_mark, REPORT_LOADED_MARK);
	else
		fprintf(f, "%.9g", q->cost_loaded_usd);
}

/* The loaded cost of mark k (1..m->n), its record read from the side
 * file: the part already shared plus each device's busy ns at its
 * loaded price. */
static int marked_cost(const struct report_marks *m, uint64_t k,
		       uint64_t *at, double *usd)
{
	size_t rec = (1 + m->ndevs) * sizeof(uint64_t);
	double v;
	uint64_t ns;

	if (k < 1 || k > m->n)
		return -EPROTO;
	if (*at != k - 1 &&
	    fseeko(m->side, (off_t)((k - 1) * rec), SEEK_SET))
		return -EIO;
	*at = k;
	if (fread(&v, sizeof(v), 1, m->side) != 1)
		return -EIO;
	for (size_t d = 0; d < m->ndevs; d++) {
		if (fread(&ns, sizeof(ns), 1, m->side) != 1)
			return -EIO;
		v += (double)ns * m->usd_per_ns[d];
	}
	*usd = v;
	return 0;
}

int report_copy_marked(const struct report_marks *m, FILE *in, FILE *out)
{
	char buf[65536];
	uint64_t k = 0, at = UINT64_MAX;
	bool in_mark = false;
	size_t n;
	int err = 0;

	if (m && m->side && fflush(m->side))
		return -EIO;
	rewind(in);
	while (!err && (n = fread(buf, 1, sizeof(buf), in)) > 0) {
		size_t s = 0;

		while (!err && s < n) {
			if (in_mark) {
				char c = buf[s++];
				double usd;

				if (c >= '0' && c <= '9') {
					k = 10 * k + (uint64_t)(c - '0');
					continue;
				}
				in_mark = false;
				if (c != REPORT_LOADED_MARK || !m || !m->side)
					err = -EPROTO;
				else if (!(err = marked_cost(m, k, &at, &usd)) &&
					 fprintf(out, "%.9g", usd) < 0)
					err = -EIO;
				continue;
			}
			char *e = memchr(buf + s, REPORT_LOADED_MARK, n - s);
			size_t len = e ? (size_t)(e - (buf + s)) : n - s;

			if (fwrite(buf + s, 1, len, out) != len)
				err = -EIO;
			s += len;
			if (e) {
				s++;
				in_mark = true;
				k = 0;
			}
		}
	}
	if (!err && (ferror(in) || in_mark))
		err = ferror(in) ? -EIO : -EPROTO;
	return err;
}

int report_print_json_from(cJSON *o, FILE *requests,
			   const struct report_marks *m, FILE *f)
{
	char *s = o ? cJSON_PrintUnformatted(o) : NULL;
	char *slot = s ? strstr(s, REQUESTS_SLOT) : NULL;
	size_t head;
	int err = 0;

	cJSON_Delete(o);
	if (!s)
		return -ENOMEM;
	head = slot ? (size_t)(slot - s) + strlen(",\"requests\":[") :
		      strlen(s);
	if (fwrite(s, 1, head, f) != head)
		err = -EIO;
	if (slot && requests && !err)
		err = report_copy_marked(m, requests, f);
	if (!err && fputs(s + head, f) < 0)
		err = -EIO;
	if (!err && fputc('\n', f) < 0)
		err = -EIO;
	free(s);
	return err;
}

int report_write_json(const struct report *r, FILE *f)
{
	return report_print_json(report_json_shell(r), r, f);
}

/* ---- text ---------------------------------------------------------------- */

/* A device's id and process columns ("-": several processes, or none). */
static void text_id_pid(uint32_t id, uint32_t pid, FILE *f)
{
	fprintf(f, " %4u", id);
	if (pid)
		fprintf(f, " %8u", pid);
	else
		fprintf(f, " %8s", "-");
}

/* With several GPUs, each device's id, process and share of collective
 * communication are shown too. */
static void text_devices(const struct report *r, FILE *f)
{
	size_t gpus = 0;

	for (size_t i = 0; i < r->ndevs; i++)
		gpus += r->devs[i].dev.kind == TT_DEV_GPU;
	bool multi = gpus > 1;

	fprintf(f, "devices (window %.3f s, compute source %s%s)\n",
		r->window_ns / 1e9, r->compute,
		!strcmp(r->compute, "cpu") ?
			": busy = on-CPU union of the server's threads" :
			": busy = GPU kernels and copies");
	if (r->hooks[0])
		fprintf(f, "socket hooks: %s (%s)\n", r->hooks,
			!strcmp(r->hooks, "libc") ? "uprobes on the servers' "
			"libc, for their pids alone: other processes pay "
			"nothing" : strstr(r->hooks, "syscalls") ? "syscall "
			"tracepoints: every process on the host enters them" :
			"as recorded");
	fprintf(f, "  %-28s %-4s", "name", "kind");
	if (multi)
		fprintf(f, " %4s %8s", "id", "pid");
	fprintf(f, " %12s %12s %6s", "busy_ms", "idle_ms", "busy%");
	if (multi)
		fprintf(f, " %6s", "comm%");
	fprintf(f, " %8s  %s\n", "$/hour", "steps");
	for (size_t i = 0; i < r->ndevs; i++) {
		const struct report_device *d = &r->devs[i];
		bool gpu = d->dev.kind == TT_DEV_GPU;

		char label[160];

		snprintf(label, sizeof(label), "%s%s%s",
			 host_name(r, d) ? host_name(r, d) : "",
			 host_name(r, d) ? ":" : "", d->dev.name);
		fprintf(f, "  %-28.28s %-4s", label, gpu ? "gpu" : "cpu");
		if (multi)
			text_id_pid(d->dev.id, d->pid, f);
		fprintf(f, " %12.3f %12.3f %5.1f%%", d->busy_ns / 1e6,
			d->idle_ns / 1e6,
			r->window_ns ? 100.0 * d->busy_ns / r->window_ns : 0);
		if (multi && gpu)
			fprintf(f, " %5.1f%%", d->busy_ns ?
				100.0 * d->comm_ns / d->busy_ns : 0);
		else if (multi)
			fprintf(f, " %6s", "-");
		fprintf(f, " %8.2f  ", d->usd_per_hour);
		if (!d->attributed) {
			fprintf(f, "not attributed\n");
			continue;
		}
		fprintf(f, "%u from %s", d->steps.nsteps,
			steps_source_name(d->steps.source));
		if (d->steps_dev)
			fprintf(f, " of device %u", d->steps_dev);
		fprintf(f, " (%u token bursts, %u unstreamed requests placed "
			"by estimate", d->steps.bursts, d->steps.estimated);
		if (d->steps.chunk_tokens)
			fprintf(f, "; prompts prefilled in chunks of ~%u tokens, "
				"placed in the steps before their first token",
				d->steps.chunk_tokens);
		if (d->steps.batch_steps)
			fprintf(f, "; %u steps' work read from the engine's "
				"batch, %u requests tied to its sequences",
				d->steps.batch_steps, d->steps.batch_requests);
		fputs(")\n", f);
	}
}

/* The servers apart, when there are several (data parallel). */
static void text_servers(const struct report *r, FILE *f)
{
	if (r->nservers < 2)
		return;
	fprintf(f, "\nservers (each one's GPUs split among its own "
		"requests)\n  %8s %-16s %6s %12s %12s %12s %6s\n", "pid",
		"devices", "reqs", "gpu_ms", "unattr_ms", "busy_ms", "comm%");
	for (size_t i = 0; i < r->nservers; i++) {
		const struct report_server *s = &r->servers[i];
		char ids[64] = "";
		size_t n = 0;

		for (size_t k = 0; k < r->ndevs && n < sizeof(ids); k++)
			if (gpu_of(&r->devs[k], s->pid))
				n += (size_t)snprintf(ids + n, sizeof(ids) - n,
						      "%s%u", n ? "," : "",
						      r->devs[k].dev.id);
		fprintf(f, "  %8u %-16.16s %6llu %12.3f %12.3f %12.3f "
			"%5.1f%%\n", s->pid, ids,
			(unsigned long long)s->requests,
			s->gpu_ns / 1e6, s->unattributed_ns / 1e6,
			s->busy_ns / 1e6,
			s->busy_ns ? 100.0 * s->comm_ns / s->busy_ns : 0);
	}
}

static void text_model(const struct report *r, FILE *f)
{
	if (r->model_dev == SIZE_MAX) {
		fprintf(f, "\nno device attributed\n");
		return;
	}
	const struct report_device *d = &r->devs[r->model_dev];
	const struct costmodel *m = &d->model;
	fprintf(f, "\nstep cost model on %s: %u steps, ", d->dev.name,
		d->steps.nsteps);
	if (!m->fitted) {
		fprintf(f, "too few to fit: shares by tokens processed\n");
		return;
	}
	fprintf(f, "R^2 %.3f\n  fixed %.3f ms/step, %.4f ms/prompt token, "
		"%.4f ms/decode token, %.6f ms/context token",
		m->r2, m->coef[CM_FIXED] / 1e6, m->coef[CM_PREFILL] / 1e6,
		m->coef[CM_DECODE] / 1e6, m->coef[CM_CONTEXT] / 1e6);
	if (m->used[CM_PREFILL_SQ])
		fprintf(f, ", %.3g ms/prefill attention unit",
			m->coef[CM_PREFILL_SQ] / 1e6);
	fputc('\n', f);
	if (m->drift_windows)
		fprintf(f, "  host speed over the run: %.2f to %.2f of its mean "
			"(%u windows of steps, taken out of the fit)\n",
			1 / m->drift_max, 1 / m->drift_min, m->drift_windows);
}

/* A per-token figure of the given width and precision, or "-" where
 * there were no such tokens. */
static void text_per_tok(double v, int w, int prec, FILE *f)
{
	if (v < 0)
		fprintf(f, " %*s", w, "-");
	else
		fprintf(f, " %*.*f", w, prec, v);
}

static void text_groups(const char *title, const struct report_group *g,
			size_t n, FILE *f)
{
	fprintf(f, "\n%s\n  %-16s %6s %9s %9s %11s %7s %8s %8s %10s %10s "
		"%10s %10s\n", title, "name", "reqs", "prompt", "compl",
		"gpu_ms", "90%", "ms/prm", "ms/cmp", "busy_$", "loaded_$",
		"$/1M prm", "$/1M cmp");
	for (size_t i = 0; i < n; i++) {
		fprintf(f, "  %-16.16s %6llu %9llu %9llu %11.3f", g[i].name,
			(unsigned long long)g[i].requests,
			(unsigned long long)g[i].prompt_tokens,
			(unsigned long long)g[i].completion_tokens,
			g[i].gpu_ns / 1e6);
		if (g[i].interval && g[i].gpu_ns)
			fprintf(f, " +-%4.1f%%", 50.0 * (double)(g[i].gpu_ns_hi -
				g[i].gpu_ns_lo) / (double)g[i].gpu_ns);
		else
			fprintf(f, " %7s", "-");
		text_per_tok(g[i].ms_per_prompt_token, 8, 4, f);
		text_per_tok(g[i].ms_per_completion_token, 8, 4, f);
		fprintf(f, " %10.6f %10.6f", g[i].cost_usd,
			g[i].cost_loaded_usd);
		text_per_tok(g[i].usd_per_1m_prompt, 10, 4, f);
		text_per_tok(g[i].usd_per_1m_completion, 10, 4, f);
		fputc('\n', f);
	}
}

/* The prefix cache's part, where any group's cached tokens are known. */
static void text_cache(const char *title, const struct report_group *g,
		       size_t n, FILE *f)
{
	bool any = false;

	for (size_t i = 0; i < n; i++)
		any |= g[i].cache_known;
	if (!any)
		return;
	fprintf(f, "\n%s\n  %-16s %9s %9s %6s %11s %12s %12s %s\n", title,
		"name", "prompt", "cached", "hit%", "saved_ms",
		"$/1M cached", "$/1M uncach", "source");
	for (size_t i = 0; i < n; i++) {
		if (!g[i].cache_known)
			continue;
		fprintf(f, "  %-16.16s %9llu %9llu %6.1f %11.3f", g[i].name,
			(unsigned long long)g[i].prompt_tokens,
			(unsigned long long)g[i].cached_prompt_tokens,
			g[i].cache_known_prompt_tokens ?
			100.0 * g[i].cached_prompt_tokens /
			g[i].cache_known_prompt_tokens : 0,
			g[i].cache_saved_ns / 1e6);
		text_per_tok(g[i].usd_per_1m_cached_prompt, 12, 4, f);
		text_per_tok(g[i].usd_per_1m_uncached_prompt, 12, 4, f);
		fprintf(f, " %s\n", g[i].cache_estimated ? "estimate" : "wire");
	}
}

static void text_evidence(const cJSON *ev, FILE *f)
{
	const cJSON *c;

	fprintf(f, "    evidence:");
	cJSON_ArrayForEach(c, ev) {
		if (cJSON_IsNumber(c))
			fprintf(f, " %s=%.6g", c->string, c->valuedouble);
		else if (cJSON_IsString(c))
			fprintf(f, " %s=%s", c->string, c->valuestring);
	}
	fputc('\n', f);
}

static void text_findings(const struct report *r, FILE *f)
{
	fprintf(f, "\nfindings\n");
	if (!r->findings.n)
		fprintf(f, "  none above their thresholds\n");
	for (size_t i = 0; i < r->findings.n; i++) {
		const struct finding *x = &r->findings.items[i];
		fprintf(f, "  [%s] %s: %s\n",
			findings_severity_name(x->severity), x->id,
			x->summary);
		text_evidence(x->evidence, f);
		fprintf(f, "    action: %s\n", x->action);
	}
}

int report_write_text(const struct report *r, FILE *f)
{
	uint64_t sum = r->streamed_gpu_ns;

	for (size_t i = 0; i < r->nreqs; i++)
		sum += r->reqs[i].gpu_ns;
	text_devices(r, f);
	text_servers(r, f);
	text_model(r, f);
	fprintf(f, "\nattribution: requests %.3f ms + unattributed %.3f ms "
		"= busy %.3f ms (exact: %llu + %llu = %llu ns)\n", sum / 1e6,
		r->unattributed_ns / 1e6, r->busy_ns / 1e6,
		(unsigned long long)sum,
		(unsigned long long)r->unattributed_ns,
		(unsigned long long)r->busy_ns);
	text_groups("tenants (busy = device time used; loaded = busy + share "
		    "of idle)", r->tenants, r->ntenants, f);
	text_groups("models", r->models, r->nmodels, f);
	if (r->nhosts)
		text_groups("hosts (pids of the second and later hosts are "
			    "shown plus 4194304 times the host's place)",
			    r->hosts, r->nhosts, f);
	text_cache("prefix cache, by tenant (cached prompt tokens: the "
		   "server's count, or an estimate from prefill cost)",
		   r->tenants, r->ntenants, f);
	text_findings(r, f);
	fprintf(f, "\nlosses: %llu events, %llu bytes\n",
		(unsigned long long)(r->losses.cpu_events +
				     r->losses.sock_events +
				     r->losses.cupti_records),
		(unsigned long long)r->losses.sock_bytes);
	return ferror(f) ? -EIO : 0;
}
