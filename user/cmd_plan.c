/*
 * cmd_plan.c - `tokentrace plan`: from a recorded trace to what another
 * load would give, and how many GPUs a token forecast needs.
 *
 * In:  trace files (the first one's step cost model; every one's requests
 *      as the mix), a load (--concurrency, --rate, --load, or
 *      --tokens-per-day), what-if knobs (--max-batch, --prefill-chunk,
 *      --devices), limits (--slo), prices.
 * Out: text or JSON: the prediction at the load, a curve of loads up to
 *      saturation, and with limits or a forecast the throughput within
 *      them and the devices needed, with the assumptions the plan made.
 * Assumes: the trace was recorded on one kind of replica (a server and
 *      its GPUs, or the CPU); the replica's busiest attributed device
 *      stands for its steps (under tensor parallelism every rank runs the
 *      same steps).
 *
 * The model of a replica is plan.c's. What it takes from the trace: the
 * cost model the report fitted, the steps' spread around it, the host's
 * time between steps, the largest batch the engine ran (unless
 * --max-batch), and the requests' prompt and completion lengths.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "collect.h"
#include "commands.h"
#include "html.h"
#include "plan.h"
#include "prices.h"
#include "report.h"
#include "sample.h"
#include "tracefile.h"

#define PLAN_MIN_STEPS		50	/* fewer: too short to plan from */
#define PLAN_MIN_REQUESTS	20
#define PLAN_CURVE_MAX		24
#define PLAN_SAFE_LOAD		0.85	/* of saturation, without limits */
#define PLAN_RUNS		20	/* runs of the prediction, for its spread */

struct slo {
	double ttft_p50, ttft_p90, ttft_p99, itl_p50, itl_p90, itl_p99;
};

struct plan_args {
	const char **traces;
	int ntraces;
	uint32_t concurrency;
	double rate, load, tokens_per_day;
	uint32_t max_batch, prefill_chunk, prefill_budget, devices, requests;
	const char *arrivals;	/* --arrivals FILE */
	bool replay;		/* --replay: the traces' own requests */
	bool whole;		/* --whole: no sampling of long traces */
	double speed;
	struct slo slo;
	bool has_slo;
	bool json, html;
	uint64_t seed;
	struct prices prices;
	const char *out;
};

/* What the trace says about its replica. */
struct replica {
	struct plan_mix mix;
	struct plan_req *reqs;
	double *write_ns;
	uint32_t max_batch_seen;
	uint32_t budget_seen;	/* the engine's token budget a step, read
				   from its batches (0: none seen) */
	uint32_t gpus;		/* devices a replica uses */
	double usd_per_hour;	/* of those devices together */
	char device[64];
	uint32_t steps;
	const char *model_source;
	double *host_resid;
	struct plan_req *arrivals;	/* --arrivals or --replay, sorted */
	size_t narrivals;
	struct sample_info sample;	/* of the first trace */
};

static void usage(FILE *f)
{
	fprintf(f,
"usage: tokentrace plan TRACE... [--concurrency N | --rate R | --load X |\n"
"                       --tokens-per-day T | --arrivals FILE | --replay]\n"
"                       [--speed X] [--whole] [--slo LIMITS] [--max-batch N]\n"
"                       [--prefill-chunk N] [--prefill-budget N]\n"
"                       [--devices N] [--price ...]\n"
"                       [--format text|json|html] [--seed S]\n"
"                       [--requests N]\n"
"                       [-o OUT]\n"
"\n"
"Predicts what a load would give on the server a trace was recorded on:\n"
"a discrete-event simulation of continuous batching (FIFO admission up to\n"
"the batch limit, one step at a time) whose step times come from the\n"
"trace's fitted step cost model, with its measured noise and host time\n"
"between steps, fed with requests drawn from the trace's own mix.\n"
"\n"
"  --concurrency N   closed loop: N clients, each sending its next request\n"
"                    when one is answered\n"
"  --rate R          open loop: Poisson arrivals, R requests/s\n"
"  --load X          open loop at X times the trace's own request rate\n"
"  --arrivals FILE   replay these requests at their own times: JSON lines\n"
"                    with arrival_ns (or sent_ns, as loadgen --out\n"
"                    writes), prompt_tokens and completion_tokens; every\n"
"                    request counts, from the first arrival to the last\n"
"                    token\n"
"  --replay          replay the traces' own requests at their own times\n"
"  --speed X         a replay X times faster (default 1)\n"
"  --whole           read all of a long trace (by default a trace longer\n"
"                    than 4 minutes is sampled: 8 windows of 15 s spread\n"
"                    over it, which is what the plan's statistics need)\n"
"  --tokens-per-day T  the completion tokens a day must serve: replicas and\n"
"                    devices needed (within --slo, else at %.0f%% of a\n"
"                    replica's saturation), and their cost per token\n"
"  --slo LIMITS      ttft_p99=MS,itl_p99=MS,... (p50, p90, p99 of ttft and\n"
"                    itl): the most tokens/s a device serves within them\n"
"  --max-batch N     the engine's batch limit (default: the largest batch\n"
"                    in the trace)\n"
"  --prefill-chunk N prefill prompts in chunks of N tokens, one a step\n"
"  --prefill-budget N at most N tokens a step, decodes first, then the\n"
"                    prompts in order (llama.cpp's -b, vLLM's\n"
"                    max_num_batched_tokens); default: the budget the\n"
"                    trace's batches showed (llama_decode's), if any\n"
"  --devices N       spread the load over N devices (replicas of the\n"
"                    trace's size)\n"
"  --price X | NAME=USD,...  USD per device-hour (default: the trace's)\n"
"  --format F        text (default), json, or html (the latency and\n"
"                    throughput against load, with the limits, today's\n"
"                    load and the prediction; one self-contained page)\n"
"  --requests N      requests simulated per point (default 2000); the\n"
"                    prediction is the median of %d runs of them, with\n"
"                    the range a run of that length falls in\n"
"  --seed S          the simulation's seed (default 1)\n"
"  -o OUT            write to OUT (mode 0600) instead of stdout\n"
"\n"
"Without a load: the trace's own concurrency (closed loop). A trace with\n"
"fewer than %d steps or %d requests, or no fitted cost model, is too short\n"
"to plan from; plan says so and exits 1.\n",
		100 * PLAN_SAFE_LOAD, PLAN_RUNS, PLAN_MIN_STEPS,
		PLAN_MIN_REQUESTS);
}

/* ---- arguments ----------------------------------------------------------- */

static int parse_slo(struct slo *s, const char *arg)
{
	char buf[256], *save = NULL;

	snprintf(buf, sizeof(buf), "%s", arg);
	for (char *kv = strtok_r(buf, ",", &save); kv;
	     kv = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(kv, '='), *end;
		double v;

		if (!eq)
			return -EINVAL;
		*eq = 0;
		v = strtod(eq + 1, &end);
		if (*end || !(v > 0))
			return -EINVAL;
		if (!strcmp(kv, "ttft_p50")) s->ttft_p50 = v;
		else if (!strcmp(kv, "ttft_p90")) s->ttft_p90 = v;
		else if (!strcmp(kv, "ttft_p99")) s->ttft_p99 = v;
		else if (!strcmp(kv, "itl_p50")) s->itl_p50 = v;
		else if (!strcmp(kv, "itl_p90")) s->itl_p90 = v;
		else if (!strcmp(kv, "itl_p99")) s->itl_p99 = v;
		else
			return -EINVAL;
	}
	return 0;
}

static int num_arg(const char *name, const char *v, double *out)
{
	char *end;
	double x = strtod(v, &end);

	if (end == v || *end || !(x > 0) || !isfinite(x)) {
		fprintf(stderr, "tokentrace plan: --%s %s: expected a number "
			"above 0\n", name, v);
		return -EINVAL;
	}
	*out = x;
	return 0;
}

enum { P_CONC = 256, P_RATE, P_LOAD, P_TPD, P_SLO, P_BATCH, P_CHUNK, P_BUDGET,
       P_DEVICES, P_PRICE, P_FORMAT, P_SEED, P_REQUESTS, P_SPEED,
       P_ARRIVALS, P_REPLAY, P_WHOLE, P_HELP };

static int parse_args(int argc, char **argv, struct plan_args *a)
{
	static const struct option opts[] = {
		{ "concurrency", required_argument, NULL, P_CONC },
		{ "rate", required_argument, NULL, P_RATE },
		{ "load", required_argument, NULL, P_LOAD },
		{ "tokens-per-day", required_argument, NULL, P_TPD },
		{ "slo", required_argument, NULL, P_SLO },
		{ "max-batch", required_argument, NULL, P_BATCH },
		{ "prefill-chunk", required_argument, NULL, P_CHUNK },
		{ "prefill-budget", required_argument, NULL, P_BUDGET },
		{ "devices", required_argument, NULL, P_DEVICES },
		{ "price", required_argument, NULL, P_PRICE },
		{ "format", required_argument, NULL, P_FORMAT },
		{ "seed", required_argument, NULL, P_SEED },
		{ "requests", required_argument, NULL, P_REQUESTS },
		{ "speed", required_argument, NULL, P_SPEED },
		{ "arrivals", required_argument, NULL, P_ARRIVALS },
		{ "replay", no_argument, NULL, P_REPLAY },
		{ "whole", no_argument, NULL, P_WHOLE },
		{ "help", no_argument, NULL, P_HELP },
		{ 0 },
	};
	int c, loads = 0;
	double x;

	memset(a, 0, sizeof(*a));
	a->seed = 1;
	a->speed = 1;
	prices_init(&a->prices);
	optind = 1;
	while ((c = getopt_long(argc, argv, "o:", opts, NULL)) != -1) {
		switch (c) {
		case 'o': a->out = optarg; break;
		case P_HELP: usage(stdout); exit(0);
		case P_ARRIVALS: a->arrivals = optarg; loads++; break;
		case P_REPLAY: a->replay = true; loads++; break;
		case P_WHOLE: a->whole = true; break;
		case P_SLO:
			if (parse_slo(&a->slo, optarg)) {
				fprintf(stderr, "tokentrace plan: --slo %s: "
					"expected ttft_p99=MS,itl_p99=MS,... "
					"(p50, p90, p99)\n", optarg);
				return -EINVAL;
			}
			a->has_slo = true;
			break;
		case P_PRICE:
			if (prices_parse(&a->prices, optarg))
				return -EINVAL;
			break;
		case P_FORMAT:
			if (strcmp(optarg, "text") && strcmp(optarg, "json") &&
			    strcmp(optarg, "html")) {
				fprintf(stderr, "tokentrace plan: --format %s: "
					"expected text, json or html\n", optarg);
				return -EINVAL;
			}
			a->json = !strcmp(optarg, "json");
			a->html = !strcmp(optarg, "html");
			break;
		case '?':
			return -EINVAL;
		default:
			if (num_arg(opts[c - P_CONC].name, optarg, &x))
				return -EINVAL;
			switch (c) {
			case P_CONC: a->concurrency = (uint32_t)x; loads++; break;
			case P_RATE: a->rate = x; loads++; break;
			case P_LOAD: a->load = x; loads++; break;
			case P_TPD: a->tokens_per_day = x; loads++; break;
			case P_BATCH: a->max_batch = (uint32_t)x; break;
			case P_CHUNK: a->prefill_chunk = (uint32_t)x; break;
			case P_BUDGET: a->prefill_budget = (uint32_t)x; break;
			case P_DEVICES: a->devices = (uint32_t)x; break;
			case P_SEED: a->seed = (uint64_t)x; break;
			case P_REQUESTS: a->requests = (uint32_t)x; break;
			case P_SPEED: a->speed = x; break;
			}
		}
	}
	if (loads > 1) {
		fprintf(stderr, "tokentrace plan: one load at a time: "
			"--concurrency, --rate, --load, --tokens-per-day, "
			"--arrivals or --replay\n");
		return -EINVAL;
	}
	if (optind >= argc) {
		fprintf(stderr, "tokentrace plan: no trace file given\n");
		return -EINVAL;
	}
	a->traces = (const char **)argv + optind;
	a->ntraces = argc - optind;
	return 0;
}

/* ---- what the trace says -------------------------------------------------- */

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* How long after its step each token was written. */
#define PLAN_MAX_WRITES	(1u << 20)	/* write delays kept to draw from */

static int write_delays(const struct steps_result *s, struct replica *rp)
{
	size_t n = 0, every = s->nentries / PLAN_MAX_WRITES + 1;

	rp->write_ns = malloc((s->nentries / every + 2) *
			      sizeof(*rp->write_ns));
	if (!rp->write_ns)
		return -ENOMEM;
	for (uint32_t k = 0; k < s->nsteps; k++) {
		const struct steps_step *st = &s->steps[k];

		if (!sample_clean(&rp->sample, st->start_ns, st->end_ns))
			continue;
		for (uint32_t i = 0; i < st->n; i++) {
			uint64_t t = s->entry_token_ns[st->first + i];

			/* every one of a short trace; of a long one an
			 * even share */
			if (t >= st->end_ns && (st->first + i) % every == 0)
				rp->write_ns[n++] = (double)(t - st->end_ns);
		}
	}
	rp->mix.write_ns = rp->write_ns;
	rp->mix.nwrite = n;
	return 0;
}

struct conn_req {
	uint64_t conn, arrival, end;
};

static int cmp_conn_req(const void *a, const void *b)
{
	const struct conn_req *x = a, *y = b;

	if (x->conn != y->conn)
		return x->conn < y->conn ? -1 : 1;
	return x->arrival < y->arrival ? -1 : x->arrival > y->arrival;
}

/* A client's time from the end of one response to its next request on
 * the same connection (median of those under a second; 0 if none). */
static int turnaround(const struct report *r, struct replica *rp)
{
	struct conn_req *c = malloc((r->nreqs + 1) * sizeof(*c));
	double *g = malloc((r->nreqs + 1) * sizeof(*g));
	size_t n = 0;

	if (!c || !g) {
		free(c);
		free(g);
		return -ENOMEM;
	}
	for (size_t i = 0; i < r->nreqs; i++) {
		const struct tt_request *q = &r->reqs[i].req;

		c[i] = (struct conn_req){ (uint64_t)q->pid << 40 ^ q->conn_id,
					  q->arrival_ns, q->end_ns };
	}
	qsort(c, r->nreqs, sizeof(*c), cmp_conn_req);
	for (size_t i = 1; i < r->nreqs; i++)
		if (c[i].conn == c[i - 1].conn && c[i - 1].end &&
		    c[i].arrival >= c[i - 1].end &&
		    c[i].arrival - c[i - 1].end < 1000000000ull)
			g[n++] = (double)(c[i].arrival - c[i - 1].end);
	if (n) {
		qsort(g, n, sizeof(*g), cmp_double);
		rp->mix.turnaround_ns = g[n / 2];
	}
	free(c);
	free(g);
	return 0;
}

/*
 * A server takes a new request in between two steps (llama-server
 * tokenizes its prompt and sets up its slot: some 1 ms on this host
 * against 0.14 ms between two decode steps): per request a step took in,
 * the median of its gap above the line, over the steps that took some in
 * while others ran on (after an idle spell the gap is the wait for work).
 */
static int host_admit(const double *gap, const double *bat, const double *adm,
		      uint32_t n, struct replica *rp)
{
	double *v = malloc((n + 1) * sizeof(*v));
	uint32_t k = 0;

	if (!v)
		return -ENOMEM;
	for (uint32_t i = 0; i < n; i++)
		if (adm[i] > 0 && bat[i] > adm[i])
			v[k++] = (gap[i] - rp->mix.host_ns -
				  rp->mix.host_ns_per_req * bat[i]) / adm[i];
	if (k) {
		qsort(v, k, sizeof(*v), cmp_double);
		rp->mix.host_ns_per_admit = fmax(v[k / 2], 0);
	}
	free(v);
	return 0;
}

/*
 * The host's time between steps against the step's batch: a line through
 * the median gap of each batch size (a median, as a step after an idle
 * spell has a long window), weighted by how many steps had that size; a
 * flat median when the trace saw one batch size only. Around the line,
 * the host's own jitter: each quiet step's gap less its batch size's
 * median (a quiet step prefills nothing and runs the batch the step
 * before it ran, so that nothing but the host came between them).
 */
static int host_line(const double *gap, const double *bat, const bool *quiet,
		     const double *adm, uint32_t n, struct replica *rp)
{
	double sw = 0, sx = 0, sy = 0, sxx = 0, sxy = 0;
	double *g = malloc((n + 1) * sizeof(*g));

	rp->host_resid = malloc((n + 1) * sizeof(*rp->host_resid));
	if (!g || !rp->host_resid) {
		free(g);
		return -ENOMEM;
	}
	for (uint32_t b = 1; b <= rp->max_batch_seen; b++) {
		uint32_t k = 0;

		for (uint32_t i = 0; i < n; i++)
			if (bat[i] == b)
				g[k++] = gap[i];
		if (!k)
			continue;
		qsort(g, k, sizeof(*g), cmp_double);
		double y = g[k / 2], w = k;

		for (uint32_t i = 0; i < n; i++)
			if (bat[i] == b && quiet[i])
				rp->host_resid[rp->mix.nhost_resid++] =
					gap[i] - y;

		sw += w;
		sx += w * b;
		sy += w * y;
		sxx += w * b * b;
		sxy += w * b * y;
	}
	free(g);
	if (!(sw > 0))
		return 0;
	double var = sxx - sx * sx / sw;

	rp->mix.host_ns_per_req = var > 0 ? fmax((sxy - sx * sy / sw) / var, 0)
					  : 0;
	rp->mix.host_ns = fmax(sy / sw - rp->mix.host_ns_per_req * sx / sw, 0);
	rp->mix.host_resid_ns = rp->host_resid;
	return host_admit(gap, bat, adm, n, rp);
}

/* The model's spread, the host's time between steps, the largest batch. */
static int step_facts(const struct report_device *d, struct replica *rp)
{
	const struct steps_result *s = &d->steps;
	double *lr = malloc((s->nsteps + 1) * sizeof(*lr));
	double *gap = malloc((s->nsteps + 1) * sizeof(*gap));
	double *bat = malloc((s->nsteps + 1) * sizeof(*bat));
	bool *quiet = malloc((s->nsteps + 1) * sizeof(*quiet));
	double *adm = malloc((s->nsteps + 1) * sizeof(*adm));
	uint32_t nq = 0;
	double sum = 0, sq = 0;
	uint32_t n = 0;

	for (uint32_t i = 0; i < s->nentries; i++)
		if (s->entries[i].request >= nq)
			nq = s->entries[i].request + 1;
	bool *seen = calloc(nq + 1, sizeof(*seen));	/* prefill begun */

	if (!lr || !gap || !bat || !quiet || !adm || !seen) {
		free(lr);
		free(gap);
		free(bat);
		free(quiet);
		free(adm);
		free(seen);
		return -ENOMEM;
	}
	for (uint32_t k = 0; k < s->nsteps; k++) {
		const struct steps_step *st = &s->steps[k];
		struct costmodel_obs o;
		double pred, taken = 0;

		for (uint32_t i = st->first; i < st->first + st->n; i++) {
			const struct attr_entry *e = &s->entries[i];

			if (e->phase == ATTR_PREFILL && !seen[e->request]) {
				seen[e->request] = true;
				taken++;
			}
		}
		if (!st->n || !st->busy_ns ||
		    !sample_clean(&rp->sample, st->start_ns, st->end_ns))
			continue;
		costmodel_obs_init(&o, (double)st->busy_ns);
		steps_obs_add(s, k, &o);
		pred = costmodel_predict(&d->model, &o);
		if (pred <= 0)
			continue;
		lr[n] = log((double)st->busy_ns / pred);
		sum += lr[n];
		sq += lr[n] * lr[n];
		bat[n] = st->n;
		adm[n] = taken;
		quiet[n] = k && !st->prefill_tokens && s->steps[k - 1].n == st->n &&
			   sample_clean(&rp->sample, s->steps[k - 1].start_ns,
					st->end_ns);
		/* from the step before's end: a step cut by the probe starts
		 * at its call, and the host's time between calls (sampling,
		 * writing tokens, taking requests in) is what this measures */
		gap[n++] = (double)(st->end_ns - (k ? s->steps[k - 1].end_ns :
						  st->start_ns)) -
			   (double)st->busy_ns;
		if (st->n > rp->max_batch_seen)
			rp->max_batch_seen = st->n;
	}
	rp->budget_seen = s->batch_budget;
	if (n > 1) {
		double mean = sum / n;

		rp->mix.noise_sd = sqrt(fmax(sq / n - mean * mean, 0));
		if (host_line(gap, bat, quiet, adm, n, rp))
			n = 0;	/* out of memory: said below */
	}
	free(lr);
	free(gap);
	free(bat);
	free(quiet);
	free(adm);
	free(seen);
	return n ? write_delays(s, rp) : -ENOMEM;
}

/*
 * A sample's cost model: the report's fit (steps_obs_add,
 * report_steps_per_obs, costmodel_fit_steps) over the steps that saw
 * their whole batch only (sample_clean): a step at a region's edge misses
 * requests that ran across it, and would be fitted as if its batch did
 * all its work.
 */
static int refit(const struct report_device *d, struct replica *rp)
{
	const struct steps_result *s = &d->steps;
	struct costmodel_obs *obs = malloc((s->nsteps + 1) * sizeof(*obs));
	uint32_t n = 0, in = 0, steps = 0, per = report_steps_per_obs(s);
	int err;

	if (!obs)
		return -ENOMEM;
	for (uint32_t k = 0; k < s->nsteps; k++) {
		const struct steps_step *st = &s->steps[k];

		if (!st->n || !sample_clean(&rp->sample, st->start_ns,
					    st->end_ns))
			continue;
		if (in == 0)
			costmodel_obs_init(&obs[n], 0);
		else
			obs[n].x[CM_FIXED] += 1;
		obs[n].ns += (double)st->busy_ns;
		steps_obs_add(s, k, &obs[n]);
		steps++;
		if (++in == per) {
			in = 0;
			n++;
		}
	}
	if (in)
		n++;
	err = n ? costmodel_fit_steps(obs, n, &rp->mix.model) : -EINVAL;
	free(obs);
	rp->steps = steps;
	if (err == -EINVAL)
		fprintf(stderr, "tokentrace plan: the sample's windows of %.0f "
			"s hold no step clear of requests longer than them "
			"(the longest: %.1f s): plan with --whole\n",
			rp->sample.window_ns / 1e9,
			rp->sample.longest_ns / 1e9);
	return err;
}

/* The attributed device with the most steps: the replica's steps. */
static const struct report_device *main_device(const struct report *r)
{
	const struct report_device *best = NULL;

	for (size_t i = 0; i < r->ndevs; i++) {
		const struct report_device *d = &r->devs[i];

		if (d->attributed && d->model.fitted &&
		    (!best || d->steps.nsteps > best->steps.nsteps))
			best = d;
	}
	return best;
}

/* The complete requests of a report (or of a sample's mix, from its
 * collect: mix non-NULL) into the mix. */
static int add_mix(struct replica *rp, const struct report *r,
		   const struct collect *mix, size_t *cap)
{
	size_t n = mix ? mix->nreqs : r->nreqs;

	for (size_t i = 0; i < n; i++) {
		const struct tt_request *q = mix ? &mix->reqs[i]
						 : &r->reqs[i].req;

		if (q->prompt_tokens <= 0 || q->completion_tokens <= 0 ||
		    q->end != TT_END_COMPLETE)
			continue;
		if (rp->mix.nreqs == *cap) {
			size_t nc = *cap ? 2 * *cap : 256;
			struct plan_req *p = realloc(rp->reqs, nc * sizeof(*p));

			if (!p)
				return -ENOMEM;
			rp->reqs = p;
			*cap = nc;
		}
		rp->reqs[rp->mix.nreqs++] = (struct plan_req){
			(uint32_t)q->prompt_tokens,
			(uint32_t)q->completion_tokens, q->arrival_ns };
	}
	rp->mix.reqs = rp->reqs;
	return 0;
}

static int load_one(const char *path, const struct plan_args *a,
		    struct replica *rp, size_t *cap, bool first)
{
	struct collect c, mixc;
	struct tracefile_header h = { 0 };
	struct collect_prices p = prices_for_report(&a->prices);
	struct report_input in;
	struct report r = { 0 };
	struct sample_opts so;
	struct sample_info si;
	int err;

	sample_opts_default(&so);
	if (a->whole || a->replay)
		so.all_below_ns = UINT64_MAX;
	collect_init(&c);
	collect_init(&mixc);
	err = sample_load(&c, &mixc, path, &so, stderr, &h, &si);
	if (!err)
		err = collect_report_input(&c, &p, &in);
	if (!err)
		err = report_build(&in, &r);
	if (err) {
		fprintf(stderr, "tokentrace plan: %s: cannot read or report: "
			"%s\n", path, strerror(-err));
		collect_free(&c);
		collect_free(&mixc);
		return err;
	}
	err = add_mix(rp, &r, si.sampled ? &mixc : NULL, cap);
	if (!err && first) {
		const struct report_device *d = main_device(&r);

		if (!d) {
			fprintf(stderr, "tokentrace plan: %s: no fitted step "
				"cost model (too few steps, or no device time "
				"attributed): too short to plan from\n", path);
			err = -EINVAL;
		} else {
			rp->sample = si;
			rp->mix.model = d->model;
			rp->steps = d->steps.nsteps;
			if (si.sampled)
				err = refit(d, rp);
			snprintf(rp->device, sizeof(rp->device), "%s",
				 d->dev.name);
			for (size_t i = 0; i < r.ndevs; i++)
				if (r.devs[i].attributed) {
					rp->gpus++;
					rp->usd_per_hour += r.devs[i].usd_per_hour;
				}
			if (si.sampled)
				rp->mix.trace_rate = (double)si.own_requests /
					(si.windows * (si.window_ns / 1e9));
			else
				rp->mix.trace_rate = r.window_ns ?
					(double)r.nreqs / (r.window_ns / 1e9) :
					0;
			if (!err)
				err = step_facts(d, rp);
			if (!err)
				err = turnaround(&r, rp);
		}
	}
	report_free(&r);
	collect_free(&c);
	collect_free(&mixc);
	return err;
}

static int cmp_arrival(const void *a, const void *b)
{
	const struct plan_req *x = a, *y = b;

	return x->arrival_ns < y->arrival_ns ? -1 :
	       x->arrival_ns > y->arrival_ns;
}

/* A number field >= 0 of a JSON line, or -1. */
static double field(const cJSON *o, const char *k)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);

	return cJSON_IsNumber(v) && v->valuedouble >= 0 &&
	       v->valuedouble < 1.8e19 ? v->valuedouble : -1;
}

/* --arrivals FILE: its requests, sorted; lines that are not a request
 * (not JSON, no arrival, no tokens out) are counted and said. */
static int read_arrivals(const char *path, struct replica *rp)
{
	FILE *f = fopen(path, "re");
	char *line = NULL;
	size_t len = 0, cap = 0, lineno = 0, bad = 0;
	ssize_t got;
	int err = 0;

	if (!f) {
		err = -errno;
		fprintf(stderr, "tokentrace plan: --arrivals %s: %s\n", path,
			strerror(errno));
		return err;
	}
	while ((got = getline(&line, &len, f)) > 0) {
		cJSON *o = cJSON_ParseWithLength(line, (size_t)got);
		double at = -1, pr = -1, co = -1;

		lineno++;
		if (cJSON_IsObject(o)) {
			at = field(o, "arrival_ns");
			if (at < 0)
				at = field(o, "sent_ns");
			pr = field(o, "prompt_tokens");
			co = field(o, "completion_tokens");
		}
		cJSON_Delete(o);
		if (at < 0 || pr < 0 || co < 1 || pr > UINT32_MAX ||
		    co > UINT32_MAX) {
			if (got > 1 || line[0] != '\n')
				bad++;
			continue;
		}
		if (rp->narrivals == cap) {
			size_t nc = cap ? 2 * cap : 1024;
			struct plan_req *p = realloc(rp->arrivals,
						     nc * sizeof(*p));

			if (!p) {
				err = -ENOMEM;
				break;
			}
			rp->arrivals = p;
			cap = nc;
		}
		rp->arrivals[rp->narrivals++] = (struct plan_req){
			(uint32_t)pr, (uint32_t)co, (uint64_t)at };
	}
	if (!err && ferror(f))
		err = -EIO;
	free(line);
	fclose(f);
	if (err) {
		fprintf(stderr, "tokentrace plan: --arrivals %s: %s\n", path,
			strerror(-err));
		return err;
	}
	if (bad)
		fprintf(stderr, "tokentrace plan: --arrivals %s: %zu of %zu "
			"lines skipped (not a JSON object with arrival_ns or "
			"sent_ns, prompt_tokens and completion_tokens >= 1)\n",
			path, bad, lineno);
	if (!rp->narrivals) {
		fprintf(stderr, "tokentrace plan: --arrivals %s: no requests "
			"to replay\n", path);
		return -EINVAL;
	}
	qsort(rp->arrivals, rp->narrivals, sizeof(*rp->arrivals),
	      cmp_arrival);
	return 0;
}

static int load_replica(const struct plan_args *a, struct replica *rp)
{
	size_t cap = 0;

	memset(rp, 0, sizeof(*rp));
	rp->model_source = "the first trace's fitted step cost model";
	for (int i = 0; i < a->ntraces; i++) {
		int err = load_one(a->traces[i], a, rp, &cap, i == 0);

		if (err)
			return err;
	}
	if (rp->steps < PLAN_MIN_STEPS || rp->mix.nreqs < PLAN_MIN_REQUESTS) {
		fprintf(stderr, "tokentrace plan: the trace holds %u steps and "
			"%zu complete requests: too short to plan from (at "
			"least %d and %d)\n", rp->steps, rp->mix.nreqs,
			PLAN_MIN_STEPS, PLAN_MIN_REQUESTS);
		return -EINVAL;
	}
	if (a->arrivals)
		return read_arrivals(a->arrivals, rp);
	if (a->replay) {
		rp->arrivals = malloc(rp->mix.nreqs * sizeof(*rp->arrivals));
		if (!rp->arrivals)
			return -ENOMEM;
		memcpy(rp->arrivals, rp->reqs,
		       rp->mix.nreqs * sizeof(*rp->arrivals));
		rp->narrivals = rp->mix.nreqs;
		qsort(rp->arrivals, rp->narrivals, sizeof(*rp->arrivals),
		      cmp_arrival);
	}
	return 0;
}

/* ---- the plan -------------------------------------------------------------- */

static bool within(const struct slo *s, const struct plan_result *r)
{
	return (!s->ttft_p50 || r->ttft_ms.p50 <= s->ttft_p50) &&
	       (!s->ttft_p90 || r->ttft_ms.p90 <= s->ttft_p90) &&
	       (!s->ttft_p99 || r->ttft_ms.p99 <= s->ttft_p99) &&
	       (!s->itl_p50 || r->itl_ms.p50 <= s->itl_p50) &&
	       (!s->itl_p90 || r->itl_ms.p90 <= s->itl_p90) &&
	       (!s->itl_p99 || r->itl_ms.p99 <= s->itl_p99) &&
	       !r->saturated;
}

struct point {
	double load;		/* concurrency, or requests/s */
	struct plan_result r;
};

struct plan_out {
	struct plan_load load;	/* of the prediction, per replica */
	struct plan_result pred;	/* the median of PLAN_RUNS runs */
	struct plan_result lo, hi;	/* their 5th and 95th percentiles */
	uint32_t replicas;
	struct point curve[PLAN_CURVE_MAX];
	int ncurve;
	double saturation_tok_s;	/* per replica */
	double saturation_rps;
	double max_within_slo;		/* per replica, -1: none */
	double crossed[6];		/* load where each limit is crossed */
	double need_tok_s;
	uint32_t devices_needed;
	double mean_completion;
	double prompt_share;		/* of busy time, from the model */
	struct plan_req *share;		/* a replay: one replica's requests */
};

static int simulate(const struct replica *rp, const struct plan_load *l,
		    struct plan_result *r)
{
	int err = plan_simulate(&rp->mix, l, r);

	if (err)
		fprintf(stderr, "tokentrace plan: simulation failed: %s\n",
			strerror(-err));
	return err;
}

/* Open-loop curve up to saturation: fractions of the capacity. */
static int curve(const struct replica *rp, const struct plan_load *base,
		 struct plan_out *o)
{
	static const double frac[] = { 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7,
				       0.8, 0.85, 0.9, 0.95, 1.0 };
	struct plan_load sat = *base;
	struct plan_result r;
	int err;

	sat.loop = PLAN_CLOSED;
	sat.concurrency = 4 * base->max_batch;
	err = simulate(rp, &sat, &r);
	if (err)
		return err;
	o->saturation_tok_s = r.throughput_tok_s;
	o->saturation_rps = r.requests_per_s;
	double cap_rps = r.requests_per_s;

	o->ncurve = 0;
	for (size_t i = 0; i < sizeof(frac) / sizeof(frac[0]); i++) {
		struct plan_load l = *base;
		struct point *p = &o->curve[o->ncurve];

		l.loop = PLAN_OPEN;
		l.rate = frac[i] * cap_rps;
		err = simulate(rp, &l, &p->r);
		if (err)
			return err;
		p->load = l.rate;
		o->ncurve++;
	}
	return 0;
}

static void slo_scan(const struct plan_args *a, struct plan_out *o)
{
	const double *lim = &a->slo.ttft_p50;

	o->max_within_slo = -1;
	for (int k = 0; k < 6; k++)
		o->crossed[k] = -1;
	for (int i = 0; i < o->ncurve; i++) {
		const struct plan_result *r = &o->curve[i].r;
		const double got[6] = { r->ttft_ms.p50, r->ttft_ms.p90,
					r->ttft_ms.p99, r->itl_ms.p50,
					r->itl_ms.p90, r->itl_ms.p99 };

		if (within(&a->slo, r) && r->throughput_tok_s > o->max_within_slo)
			o->max_within_slo = r->throughput_tok_s;
		for (int k = 0; k < 6; k++)
			if (lim[k] && got[k] > lim[k] && o->crossed[k] < 0)
				o->crossed[k] = o->curve[i].load;
	}
}

/* The load to predict, per replica (a replay's requests are dealt to the
 * replicas in turn). */
static int the_load(const struct plan_args *a, const struct replica *rp,
		    struct plan_out *o)
{
	struct plan_load *l = &o->load;
	uint32_t per = rp->gpus ? rp->gpus : 1;

	o->replicas = a->devices ? (a->devices + per - 1) / per : 1;
	if (rp->narrivals) {
		size_t n = 0;

		o->share = malloc(rp->narrivals * sizeof(*o->share));
		if (!o->share)
			return -ENOMEM;
		for (size_t i = 0; i < rp->narrivals; i += o->replicas)
			o->share[n++] = rp->arrivals[i];
		l->loop = PLAN_REPLAY;
		l->arrivals = o->share;
		l->narrivals = n;
		l->speed = a->speed;
	} else if (a->rate || a->load) {
		l->loop = PLAN_OPEN;
		l->rate = (a->rate ? a->rate : a->load * rp->mix.trace_rate) /
			  o->replicas;
	} else if (!a->tokens_per_day) {
		l->loop = PLAN_CLOSED;
		l->concurrency = a->concurrency ? a->concurrency
						: rp->max_batch_seen;
		l->concurrency = (l->concurrency + o->replicas - 1) /
				 o->replicas;
	}
	return 0;
}

/* --tokens-per-day: replicas at the capacity per replica. */
static int forecast(const struct plan_args *a, const struct replica *rp,
		    struct plan_out *o)
{
	double cap = a->has_slo ? o->max_within_slo
				: PLAN_SAFE_LOAD * o->saturation_tok_s;
	uint32_t per = rp->gpus ? rp->gpus : 1;

	o->need_tok_s = a->tokens_per_day / 86400;
	if (!(cap > 0)) {
		fprintf(stderr, "tokentrace plan: no load meets the limits "
			"given (--slo): no number of devices serves the "
			"forecast within them\n");
		return -ERANGE;
	}
	o->replicas = (uint32_t)ceil(o->need_tok_s / cap);
	if (!o->replicas)
		o->replicas = 1;
	o->devices_needed = o->replicas * per;
	o->load.loop = PLAN_OPEN;
	o->load.rate = o->need_tok_s / o->replicas / o->mean_completion;
	return 0;
}

static double mean_completion(const struct replica *rp)
{
	double s = 0;

	for (size_t i = 0; i < rp->mix.nreqs; i++)
		s += rp->mix.reqs[i].completion;
	return rp->mix.nreqs ? s / rp->mix.nreqs : 1;
}

/* The prompt's share of a request's busy time under the model. */
static double prompt_share(const struct replica *rp)
{
	const struct costmodel *m = &rp->mix.model;
	double pre = 0, dec = 0;

	for (size_t i = 0; i < rp->mix.nreqs; i++) {
		const struct plan_req *q = &rp->mix.reqs[i];

		pre += costmodel_prefill_ns(m, q->prompt, 0);
		for (uint32_t k = 1; k < q->completion; k++)
			dec += costmodel_decode_ns(m, q->prompt + k);
	}
	return pre + dec > 0 ? pre / (pre + dec) : 0.5;
}

/* The figures of PLAN_RUNS runs of the load (seeds apart): each one's
 * median is the prediction, its 5th and 95th percentiles the range a run
 * of that many requests falls in nine times out of ten. A tail (TTFT p99
 * near saturation) swings widely from run to run: the range says how
 * far, for whoever checks a plan against a load test. */
static int predict(const struct replica *rp, struct plan_out *o)
{
	struct plan_result r[PLAN_RUNS];
	double v[PLAN_RUNS];
	int sat = 0;

	for (int k = 0; k < PLAN_RUNS; k++) {
		struct plan_load l = o->load;
		int err;

		l.seed = o->load.seed + 0x9e3779b9ull * (uint64_t)k;
		if ((err = simulate(rp, &l, &r[k])))
			return err;
		sat += r[k].saturated;
	}
	o->pred = r[0];
	o->lo = r[0];
	o->hi = r[0];
	/* every double of the result, by its offset */
	static const size_t field[] = {
		offsetof(struct plan_result, throughput_tok_s),
		offsetof(struct plan_result, requests_per_s),
		offsetof(struct plan_result, ttft_ms.p50),
		offsetof(struct plan_result, ttft_ms.p90),
		offsetof(struct plan_result, ttft_ms.p99),
		offsetof(struct plan_result, itl_ms.p50),
		offsetof(struct plan_result, itl_ms.p90),
		offsetof(struct plan_result, itl_ms.p99),
		offsetof(struct plan_result, busy_fraction),
		offsetof(struct plan_result, mean_batch),
		offsetof(struct plan_result, offered_rate),
	};
	for (size_t f = 0; f < sizeof(field) / sizeof(field[0]); f++) {
		for (int k = 0; k < PLAN_RUNS; k++)
			memcpy(&v[k], (char *)&r[k] + field[f], sizeof(v[k]));
		qsort(v, PLAN_RUNS, sizeof(v[0]), cmp_double);
		double med = (v[(PLAN_RUNS - 1) / 2] + v[PLAN_RUNS / 2]) / 2;

		memcpy((char *)&o->pred + field[f], &med, sizeof(med));
		memcpy((char *)&o->lo + field[f], &v[PLAN_RUNS / 20],
		       sizeof(double));
		memcpy((char *)&o->hi + field[f],
		       &v[PLAN_RUNS - 1 - PLAN_RUNS / 20], sizeof(double));
	}
	o->pred.saturated = 2 * sat > PLAN_RUNS;
	return 0;
}

static int make_plan(const struct plan_args *a, const struct replica *rp,
		     struct plan_out *o)
{
	struct plan_load base = {
		.max_batch = a->max_batch ? a->max_batch : rp->max_batch_seen,
		.prefill_chunk = a->prefill_chunk,
		.prefill_budget = a->prefill_budget ? a->prefill_budget :
				  a->prefill_chunk ? 0 : rp->budget_seen,
		.requests = a->requests ? a->requests : 2000,
		.seed = a->seed,
	};
	int err;

	memset(o, 0, sizeof(*o));
	if (!base.max_batch)
		base.max_batch = 1;
	o->mean_completion = mean_completion(rp);
	o->prompt_share = prompt_share(rp);
	o->load = base;
	err = curve(rp, &base, o);
	if (err)
		return err;
	slo_scan(a, o);
	if ((err = the_load(a, rp, o)))
		return err;
	if (a->tokens_per_day && (err = forecast(a, rp, o)))
		return err;
	return predict(rp, o);
}

/* ---- output ---------------------------------------------------------------- */

static cJSON *pct_json(const struct plan_pct *p)
{
	cJSON *o = cJSON_CreateObject();

	cJSON_AddNumberToObject(o, "p50", p->p50);
	cJSON_AddNumberToObject(o, "p90", p->p90);
	cJSON_AddNumberToObject(o, "p99", p->p99);
	return o;
}

static cJSON *result_json(const struct plan_result *r, double scale)
{
	cJSON *o = cJSON_CreateObject();

	cJSON_AddNumberToObject(o, "throughput_tok_s",
				r->throughput_tok_s * scale);
	cJSON_AddNumberToObject(o, "requests_per_s", r->requests_per_s * scale);
	cJSON_AddItemToObject(o, "ttft_ms", pct_json(&r->ttft_ms));
	cJSON_AddItemToObject(o, "itl_ms", pct_json(&r->itl_ms));
	cJSON_AddNumberToObject(o, "busy_fraction", r->busy_fraction);
	cJSON_AddNumberToObject(o, "mean_batch", r->mean_batch);
	cJSON_AddBoolToObject(o, "saturated", r->saturated);
	return o;
}

static cJSON *range_json(double lo, double hi)
{
	cJSON *a = cJSON_CreateArray();

	cJSON_AddItemToArray(a, cJSON_CreateNumber(lo));
	cJSON_AddItemToArray(a, cJSON_CreateNumber(hi));
	return a;
}

static cJSON *pct_range_json(const struct plan_pct *lo,
			     const struct plan_pct *hi)
{
	cJSON *o = cJSON_CreateObject();

	cJSON_AddItemToObject(o, "p50", range_json(lo->p50, hi->p50));
	cJSON_AddItemToObject(o, "p90", range_json(lo->p90, hi->p90));
	cJSON_AddItemToObject(o, "p99", range_json(lo->p99, hi->p99));
	return o;
}

/* The range of the prediction's runs, for a run of its length. */
static cJSON *spread_json(const struct plan_out *p, double scale)
{
	cJSON *o = cJSON_CreateObject();

	cJSON_AddNumberToObject(o, "runs", PLAN_RUNS);
	cJSON_AddNumberToObject(o, "requests_per_run", p->lo.completed);
	cJSON_AddStringToObject(o, "range", "5th to 95th percentile of the "
				"runs: where a run of that many requests falls "
				"nine times out of ten");
	cJSON_AddItemToObject(o, "throughput_tok_s",
			      range_json(p->lo.throughput_tok_s * scale,
					 p->hi.throughput_tok_s * scale));
	cJSON_AddItemToObject(o, "ttft_ms", pct_range_json(&p->lo.ttft_ms,
							   &p->hi.ttft_ms));
	cJSON_AddItemToObject(o, "itl_ms", pct_range_json(&p->lo.itl_ms,
							  &p->hi.itl_ms));
	return o;
}

/* USD per 1M prompt and completion tokens at the prediction: the
 * replicas' device-hours (loaded) or their busy part (busy), split by the
 * model's prompt share of the work. */
static void add_costs(cJSON *o, const struct replica *rp,
		      const struct plan_out *p)
{
	double tok_h = p->pred.throughput_tok_s * 3600;
	double prompt_tok_h = tok_h;
	double usd_h = rp->usd_per_hour;
	double per_c, per_p;

	if (!(tok_h > 0))
		return;
	/* prompt tokens per completion token in the mix */
	double pr = 0, co = 0;

	for (size_t i = 0; i < rp->mix.nreqs; i++) {
		pr += rp->mix.reqs[i].prompt;
		co += rp->mix.reqs[i].completion;
	}
	prompt_tok_h = co > 0 ? tok_h * pr / co : tok_h;
	per_p = usd_h * p->prompt_share / prompt_tok_h * 1e6;
	per_c = usd_h * (1 - p->prompt_share) / tok_h * 1e6;
	cJSON_AddNumberToObject(o, "usd_per_1m_prompt", per_p);
	cJSON_AddNumberToObject(o, "usd_per_1m_completion", per_c);
	cJSON_AddNumberToObject(o, "usd_per_1m_prompt_busy",
				per_p * p->pred.busy_fraction);
	cJSON_AddNumberToObject(o, "usd_per_1m_completion_busy",
				per_c * p->pred.busy_fraction);
}

static cJSON *assumptions_json(const struct replica *rp,
			       const struct plan_args *a,
			       const struct plan_out *p)
{
	cJSON *o = cJSON_CreateObject();

	cJSON_AddStringToObject(o, "scheduler", "continuous batching: FIFO "
				"admission up to max_batch, one step at a time "
				"over every running request");
	cJSON_AddStringToObject(o, "cost_model", rp->model_source);
	cJSON_AddStringToObject(o, "device", rp->device);
	cJSON_AddNumberToObject(o, "devices_per_replica", rp->gpus);
	cJSON_AddNumberToObject(o, "steps_fitted", rp->steps);
	cJSON_AddNumberToObject(o, "step_noise_sd", rp->mix.noise_sd);
	cJSON_AddNumberToObject(o, "host_ns_between_steps", rp->mix.host_ns);
	cJSON_AddNumberToObject(o, "host_ns_per_request_in_step",
				rp->mix.host_ns_per_req);
	cJSON_AddNumberToObject(o, "host_ns_per_request_taken_in",
				rp->mix.host_ns_per_admit);
	cJSON_AddNumberToObject(o, "host_jitter_samples",
				(double)rp->mix.nhost_resid);
	cJSON_AddNumberToObject(o, "token_writes_measured",
				(double)rp->mix.nwrite);
	cJSON_AddNumberToObject(o, "client_turnaround_ns",
				rp->mix.turnaround_ns);
	cJSON_AddNumberToObject(o, "max_batch", p->load.max_batch);
	cJSON_AddNumberToObject(o, "max_batch_in_trace", rp->max_batch_seen);
	cJSON_AddNumberToObject(o, "prefill_chunk", p->load.prefill_chunk);
	cJSON_AddNumberToObject(o, "prefill_budget", p->load.prefill_budget);
	cJSON_AddNumberToObject(o, "prefill_budget_in_trace", rp->budget_seen);
	cJSON_AddNumberToObject(o, "mix_requests", (double)rp->mix.nreqs);
	cJSON_AddNumberToObject(o, "mix_traces", a->ntraces);
	cJSON_AddNumberToObject(o, "trace_span_s", rp->sample.span_ns / 1e9);
	if (rp->sample.sampled) {
		cJSON_AddNumberToObject(o, "sample_windows",
					rp->sample.windows);
		cJSON_AddNumberToObject(o, "sample_window_s",
					rp->sample.window_ns / 1e9);
	} else {
		cJSON_AddStringToObject(o, "sample", "the whole trace");
	}
	cJSON_AddNumberToObject(o, "trace_requests_per_s", rp->mix.trace_rate);
	cJSON_AddNumberToObject(o, "usd_per_replica_hour", rp->usd_per_hour);
	cJSON_AddNumberToObject(o, "seed", (double)a->seed);
	return o;
}

static cJSON *plan_json(const struct replica *rp, const struct plan_args *a,
			const struct plan_out *p)
{
	static const char *lim[6] = { "ttft_p50", "ttft_p90", "ttft_p99",
				      "itl_p50", "itl_p90", "itl_p99" };
	cJSON *root = cJSON_CreateObject(), *c, *pred;

	pred = result_json(&p->pred, p->replicas);
	cJSON_AddItemToObject(root, "predicted", pred);
	cJSON_AddItemToObject(root, "spread", spread_json(p, p->replicas));
	c = cJSON_AddObjectToObject(root, "load");
	if (p->load.loop == PLAN_CLOSED) {
		cJSON_AddStringToObject(c, "loop", "closed");
		cJSON_AddNumberToObject(c, "concurrency_per_replica",
					p->load.concurrency);
	} else if (p->load.loop == PLAN_OPEN) {
		cJSON_AddStringToObject(c, "loop", "open");
		cJSON_AddNumberToObject(c, "requests_per_s_per_replica",
					p->load.rate);
	} else {
		cJSON_AddStringToObject(c, "loop", "replay");
		cJSON_AddStringToObject(c, "source", a->arrivals ? a->arrivals
							 : "the traces");
		cJSON_AddNumberToObject(c, "requests_per_replica",
					(double)p->load.narrivals);
		cJSON_AddNumberToObject(c, "requests_per_s_per_replica",
					p->pred.offered_rate);
		cJSON_AddNumberToObject(c, "speed", p->load.speed);
	}
	cJSON_AddNumberToObject(root, "replicas", p->replicas);
	cJSON_AddNumberToObject(root, "saturation_tok_s_per_replica",
				p->saturation_tok_s);
	cJSON_AddNumberToObject(root, "saturation_requests_per_s_per_replica",
				p->saturation_rps);
	c = cJSON_AddArrayToObject(root, "curve");
	for (int i = 0; i < p->ncurve; i++) {
		cJSON *x = result_json(&p->curve[i].r, 1);

		cJSON_AddNumberToObject(x, "offered_requests_per_s",
					p->curve[i].load);
		cJSON_AddItemToArray(c, x);
	}
	if (a->has_slo) {
		cJSON *s = cJSON_AddObjectToObject(root, "slo");
		const double *l = &a->slo.ttft_p50;

		if (p->max_within_slo >= 0)
			cJSON_AddNumberToObject(root, "max_tok_s_within_slo",
				p->max_within_slo / (rp->gpus ? rp->gpus : 1));
		else
			cJSON_AddNullToObject(root, "max_tok_s_within_slo");
		for (int k = 0; k < 6; k++) {
			if (!l[k])
				continue;
			cJSON *x = cJSON_AddObjectToObject(s, lim[k]);

			cJSON_AddNumberToObject(x, "limit_ms", l[k]);
			if (p->crossed[k] >= 0)
				cJSON_AddNumberToObject(x,
					"crossed_at_requests_per_s",
					p->crossed[k]);
			else
				cJSON_AddNullToObject(x,
					"crossed_at_requests_per_s");
		}
	}
	if (a->tokens_per_day) {
		cJSON_AddNumberToObject(root, "tokens_per_s_needed",
					p->need_tok_s);
		cJSON_AddNumberToObject(root, "devices_needed",
					p->devices_needed);
	}
	add_costs(root, rp, p);
	cJSON_AddItemToObject(root, "assumptions", assumptions_json(rp, a, p));
	return root;
}

static void text_result(FILE *f, const char *what, const struct plan_result *r,
			double scale)
{
	fprintf(f, "%s: %.0f completion tokens/s, %.2f requests/s; TTFT p50 "
		"%.1f p90 %.1f p99 %.1f ms; ITL p50 %.1f p90 %.1f p99 %.1f ms; "
		"busy %.0f%%, batch %.1f%s\n", what,
		r->throughput_tok_s * scale, r->requests_per_s * scale,
		r->ttft_ms.p50, r->ttft_ms.p90, r->ttft_ms.p99, r->itl_ms.p50,
		r->itl_ms.p90, r->itl_ms.p99, 100 * r->busy_fraction,
		r->mean_batch, r->saturated ? " (saturated: the queue grows)"
					    : "");
}

static void plan_text(FILE *f, const struct replica *rp,
		      const struct plan_args *a, const struct plan_out *p,
		      const cJSON *j)
{
	const cJSON *x;

	fprintf(f, "plan from %d trace%s: %zu requests in the mix, the step "
		"cost model of %s (%u steps, noise sd %.3f, %.0f us of host "
		"time between steps, %.0f us more per request taken in)\n",
		a->ntraces, a->ntraces > 1 ? "s" : "", rp->mix.nreqs,
		rp->device, rp->steps, rp->mix.noise_sd, rp->mix.host_ns / 1e3,
		rp->mix.host_ns_per_admit / 1e3);
	if (rp->sample.sampled)
		fprintf(f, "sampled: %u windows of %.0f s spread over the "
			"trace's %.0f s (--whole reads all of it)\n",
			rp->sample.windows, rp->sample.window_ns / 1e9,
			rp->sample.span_ns / 1e9);
	fprintf(f, "assumes: continuous batching, FIFO admission up to %u, "
		"one step at a time%s", p->load.max_batch,
		p->load.prefill_chunk ? ", prefill in chunks" :
		", whole prefills");
	if (p->load.prefill_budget)
		fprintf(f, ", at most %u tokens a step",
			p->load.prefill_budget);
	fprintf(f, "; %u device%s a replica\n\n", rp->gpus,
		rp->gpus == 1 ? "" : "s");
	if (p->load.loop == PLAN_CLOSED)
		fprintf(f, "load: closed loop, %u clients a replica, %u "
			"replica%s\n", p->load.concurrency, p->replicas,
			p->replicas == 1 ? "" : "s");
	else if (p->load.loop == PLAN_OPEN)
		fprintf(f, "load: open loop, %.2f requests/s a replica, %u "
			"replica%s\n", p->load.rate, p->replicas,
			p->replicas == 1 ? "" : "s");
	else
		fprintf(f, "load: a replay of %zu requests (%.2f/s) a replica "
			"at %gx speed, %u replica%s\n", p->load.narrivals,
			p->pred.offered_rate, p->load.speed, p->replicas,
			p->replicas == 1 ? "" : "s");
	text_result(f, "predicted", &p->pred, p->replicas);
	fprintf(f, "a run of %u requests falls, nine times in ten, within "
		"%.0f-%.0f tokens/s, TTFT p50 %.1f-%.1f p99 %.1f-%.1f ms, ITL "
		"p50 %.1f-%.1f p99 %.1f-%.1f ms (%d runs)\n", p->lo.completed,
		p->lo.throughput_tok_s * p->replicas,
		p->hi.throughput_tok_s * p->replicas, p->lo.ttft_ms.p50,
		p->hi.ttft_ms.p50, p->lo.ttft_ms.p99, p->hi.ttft_ms.p99,
		p->lo.itl_ms.p50, p->hi.itl_ms.p50, p->lo.itl_ms.p99,
		p->hi.itl_ms.p99, PLAN_RUNS);
	fprintf(f, "a replica saturates at %.0f completion tokens/s\n",
		p->saturation_tok_s);
	if (a->has_slo) {
		if (p->max_within_slo >= 0)
			fprintf(f, "within the limits: at most %.0f tokens/s "
				"a device\n",
				p->max_within_slo / (rp->gpus ? rp->gpus : 1));
		else
			fprintf(f, "no load on the curve meets the limits\n");
	}
	if (a->tokens_per_day)
		fprintf(f, "forecast %.0f tokens/day = %.0f tokens/s: %u "
			"devices (%u replicas)\n", a->tokens_per_day,
			p->need_tok_s, p->devices_needed, p->replicas);
	if ((x = cJSON_GetObjectItem(j, "usd_per_1m_completion")))
		fprintf(f, "cost at that load: %.4f USD per 1M prompt, %.4f "
			"per 1M completion tokens (loaded; busy: %.4f, %.4f)\n",
			cJSON_GetObjectItem(j, "usd_per_1m_prompt")->valuedouble,
			x->valuedouble,
			cJSON_GetObjectItem(j, "usd_per_1m_prompt_busy")
				->valuedouble,
			cJSON_GetObjectItem(j, "usd_per_1m_completion_busy")
				->valuedouble);
	fprintf(f, "\ncurve (open loop, a replica):\n");
	for (int i = 0; i < p->ncurve; i++) {
		char what[48];

		snprintf(what, sizeof(what), "  %7.2f req/s",
			 p->curve[i].load);
		text_result(f, what, &p->curve[i].r, 1);
	}
}

/* OUT created 0600, as every file tokentrace writes. */
static FILE *open_out(const char *path)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;

	if (fd >= 0 && !f)
		close(fd);
	return f;
}

int cmd_plan(int argc, char **argv)
{
	struct plan_args a;
	struct replica rp = { 0 };
	struct plan_out *p = NULL;
	FILE *f = stdout;
	cJSON *j = NULL;
	int rc = TT_EXIT_FAIL;

	if (parse_args(argc, argv, &a)) {
		fprintf(stderr, "tokentrace plan: see --help\n");
		prices_free(&a.prices);
		return TT_EXIT_USAGE;
	}
	p = calloc(1, sizeof(*p));
	if (!p || load_replica(&a, &rp) || make_plan(&a, &rp, p))
		goto out;
	j = plan_json(&rp, &a, p);
	if (a.out && !(f = open_out(a.out))) {
		fprintf(stderr, "tokentrace plan: -o %s: %s\n", a.out,
			strerror(errno));
		goto out;
	}
	if (a.json) {
		char *s = cJSON_Print(j);

		if (s)
			fprintf(f, "%s\n", s);
		free(s);
	} else if (a.html) {
		if (html_write_plan(j, f)) {
			fprintf(stderr, "tokentrace plan: the HTML page could "
				"not be written\n");
			goto out;
		}
	} else {
		plan_text(f, &rp, &a, p, j);
	}
	rc = f == stdout || !fclose(f) ? TT_EXIT_OK : TT_EXIT_FAIL;
	f = stdout;
out:
	if (f != stdout)
		fclose(f);
	cJSON_Delete(j);
	free(rp.reqs);
	free(rp.write_ns);
	free(rp.arrivals);
	free(rp.host_resid);
	if (p)
		free(p->share);
	free(p);
	prices_free(&a.prices);
	return rc;
}
