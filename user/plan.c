/*
 * plan.c - a discrete-event simulation of one continuous-batching replica.
 *
 * The engine tokentrace watches runs one step at a time over every
 * running request; so does this one. Requests wait in arrival order and
 * are admitted while fewer than max_batch run. A step prefills what each
 * new request still has to (all of it, or a chunk), and decodes one token
 * for each of the others; its time is what the trace's step cost model
 * predicts for that work, times a noise factor (lognormal with the spread
 * the trace's steps showed around the model, mean one), plus the host's
 * time between steps as the trace measured it (a step window's length
 * less its busy time: a line in the step's batch, as the server's writes
 * and the next step's set-up grow with it, plus a jitter drawn from the
 * trace's own quiet steps). A request's first token comes at the end
 * of the step that finished its prefill, each later one at the end of the
 * next step, and reaches the client a write delay later (one of the
 * trace's, at random: the server's writer trails its engine); it leaves
 * with its last token, and in a closed loop its client sends the next
 * request the trace's turnaround after reading that token, when the
 * engine is most likely in the middle of a step.
 *
 * The figures are taken between the first tenth of the completions and
 * the last, so that neither the empty start nor the draining end counts:
 * tokens/s of the tokens written in that window, TTFT of the requests
 * that finished in it, inter-token gaps of its tokens. A replay (given
 * requests at given times, such as a log of production traffic) counts
 * every request, from the first arrival to the last token seen.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "plan.h"

struct sreq {
	const struct plan_req *mix;
	double arrival_ns;
	double first_ns;	/* its first token, as the client saw it */
	double last_ns;		/* its last token, as the client saw it */
	uint32_t prefilled, generated, chunk;
};

struct sim {
	const struct plan_mix *mix;
	const struct plan_load *load;
	struct sreq *req;
	size_t nreq, cap;
	uint32_t *wait;		/* indexes, in arrival order */
	size_t wh, wt;
	uint32_t *run;
	uint32_t nrun;
	uint64_t rng;
	double t;
	uint32_t done;
	/* the measuring window: from the warm-up's last completion */
	uint32_t warm, until;
	double t0, t1;
	double busy_ns, batch_sum, steps;
	double tokens;
	double *ttft, *itl;
	size_t nttft, nitl, capitl;
};

static uint64_t next_u64(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545f4914f6cdd1dull;
}

static double unit(uint64_t *s)
{
	return ((next_u64(s) >> 11) + 0.5) / 9007199254740992.0;
}

static double normal(uint64_t *s)
{
	return sqrt(-2 * log(unit(s))) * cos(2 * M_PI * unit(s));
}

/* A new request q (NULL: one drawn from the mix), arriving at t; its
 * index. The queue stays in arrival order (clients' requests come back
 * out of order by their write delays, never by much: inserted from the
 * tail). */
static uint32_t add_req(struct sim *m, double t, const struct plan_req *q)
{
	struct sreq *r = &m->req[m->nreq];
	size_t i = m->wt++;

	r->mix = q ? q : &m->mix->reqs[next_u64(&m->rng) % m->mix->nreqs];
	r->arrival_ns = t;
	while (i > m->wh && m->req[m->wait[i - 1]].arrival_ns > t) {
		m->wait[i] = m->wait[i - 1];
		i--;
	}
	m->wait[i] = (uint32_t)m->nreq;
	return (uint32_t)m->nreq++;
}

/* When a token written at the end of a step at t reaches the client. */
static double seen_at(struct sim *m, double t)
{
	if (!m->mix->nwrite)
		return t;
	return t + m->mix->write_ns[next_u64(&m->rng) % m->mix->nwrite];
}

static bool in_window(const struct sim *m)
{
	return m->done >= m->warm && m->done < m->until;
}

static int push_itl(struct sim *m, double ms)
{
	if (m->nitl == m->capitl) {
		size_t cap = m->capitl ? 2 * m->capitl : 4096;
		double *p = realloc(m->itl, cap * sizeof(*p));

		if (!p)
			return -ENOMEM;
		m->itl = p;
		m->capitl = cap;
	}
	m->itl[m->nitl++] = ms;
	return 0;
}

/* The work of one step, and its time. */
static double step_ns(struct sim *m)
{
	struct costmodel_obs o;
	uint32_t chunk = m->load->prefill_chunk;
	uint32_t left = m->load->prefill_budget, decodes = 0;

	costmodel_obs_init(&o, 0);
	/* a budget: the decodes' tokens first, and the prompts at least one
	 * token (so that they are never starved) */
	for (uint32_t i = 0; left && i < m->nrun; i++) {
		const struct sreq *r = &m->req[m->run[i]];

		decodes += r->prefilled >= (r->mix->prompt ? r->mix->prompt : 1);
	}
	if (left)
		left = left > decodes ? left - decodes : 1;
	for (uint32_t i = 0; i < m->nrun; i++) {
		struct sreq *r = &m->req[m->run[i]];
		uint32_t prompt = r->mix->prompt ? r->mix->prompt : 1;

		if (r->prefilled < prompt) {
			r->chunk = prompt - r->prefilled;
			if (chunk && r->chunk > chunk)
				r->chunk = chunk;
			if (m->load->prefill_budget) {
				if (r->chunk > left)
					r->chunk = left;
				left -= r->chunk;
			}
			if (r->chunk)
				costmodel_obs_prefill(&o, r->chunk,
						      r->prefilled);
		} else {
			r->chunk = 0;
			costmodel_obs_decode(&o, prompt + r->generated);
		}
	}
	double sd = m->mix->noise_sd;
	double f = exp(sd * normal(&m->rng) - sd * sd / 2);

	return costmodel_predict(&m->mix->model, &o) * f;
}

/* A request leaves: counted, and in a closed loop its client sends the
 * next one now. */
static void leave(struct sim *m, const struct sreq *r)
{
	if (in_window(m))
		m->ttft[m->nttft++] = (r->first_ns - r->arrival_ns) / 1e6;
	m->done++;
	if (m->done == m->warm)
		m->t0 = m->t;
	if (m->load->loop == PLAN_REPLAY)
		m->t1 = fmax(m->t1, r->last_ns);
	else if (m->done == m->until)
		m->t1 = m->t;
	if (m->load->loop == PLAN_CLOSED && m->nreq < m->cap)
		add_req(m, r->last_ns + m->mix->turnaround_ns, NULL);
}

/* After a step ending at t: tokens out, requests done leave. */
static int finish_step(struct sim *m)
{
	uint32_t keep = 0, n = m->nrun;

	for (uint32_t i = 0; i < n; i++) {
		struct sreq *r = &m->req[m->run[i]];
		uint32_t prompt = r->mix->prompt ? r->mix->prompt : 1;
		uint32_t want = r->mix->completion ? r->mix->completion : 1;

		if (r->prefilled < prompt) {	/* waiting for budget: chunk 0 */
			r->prefilled += r->chunk;
			if (r->prefilled < prompt) {
				m->run[keep++] = m->run[i];
				continue;
			}
			r->generated = 1;
			r->first_ns = seen_at(m, m->t);
			r->last_ns = r->first_ns;
		} else {
			double seen = seen_at(m, m->t);

			/* a client reads its tokens in order */
			if (seen < r->last_ns)
				seen = r->last_ns;
			if (in_window(m) &&
			    push_itl(m, (seen - r->last_ns) / 1e6))
				return -ENOMEM;
			r->generated++;
			r->last_ns = seen;
		}
		if (in_window(m))
			m->tokens++;
		if (r->generated < want)
			m->run[keep++] = m->run[i];
		else
			leave(m, r);
	}
	m->nrun = keep;
	return 0;
}

/* Takes in what has arrived, up to the batch limit; how many. */
static uint32_t admit(struct sim *m)
{
	uint32_t n = 0;

	while (m->nrun < m->load->max_batch && m->wh < m->wt &&
	       m->req[m->wait[m->wh]].arrival_ns <= m->t) {
		m->run[m->nrun++] = m->wait[m->wh++];
		n++;
	}
	return n;
}

static int run(struct sim *m)
{
	uint32_t taken = 0;

	while (m->done < m->until) {
		taken += admit(m);
		if (!m->nrun) {
			if (m->wh == m->wt)
				return -EINVAL;	/* nothing will come */
			m->t = m->req[m->wait[m->wh]].arrival_ns;
			continue;
		}
		double busy = step_ns(m);
		bool counted = in_window(m);

		double host = m->mix->host_ns + m->mix->host_ns_per_req * m->nrun +
			      m->mix->host_ns_per_admit * taken;

		taken = 0;

		if (m->mix->nhost_resid)
			host = fmax(host + m->mix->host_resid_ns[
				next_u64(&m->rng) % m->mix->nhost_resid], 0);
		m->t += busy + host;
		if (counted) {
			m->busy_ns += busy;
			m->batch_sum += m->nrun;
			m->steps++;
		}
		if (finish_step(m))
			return -ENOMEM;
	}
	return 0;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double pct(double *v, size_t n, double p)
{
	if (!n)
		return 0;
	size_t i = (size_t)ceil(p / 100 * n);

	return v[i ? i - 1 : 0];
}

static struct plan_pct pcts(double *v, size_t n)
{
	qsort(v, n, sizeof(*v), cmp_double);
	return (struct plan_pct){ pct(v, n, 50), pct(v, n, 90), pct(v, n, 99) };
}

static void results(struct sim *m, struct plan_result *out)
{
	double wall = m->t1 - m->t0;

	memset(out, 0, sizeof(*out));
	out->completed = m->until - m->warm;
	if (wall <= 0)
		return;
	out->throughput_tok_s = m->tokens / (wall / 1e9);
	out->requests_per_s = out->completed / (wall / 1e9);
	out->ttft_ms = pcts(m->ttft, m->nttft);
	out->itl_ms = pcts(m->itl, m->nitl);
	out->busy_fraction = m->busy_ns / wall;
	out->mean_batch = m->steps ? m->batch_sum / m->steps : 0;
	out->offered_rate = m->load->loop == PLAN_OPEN ? m->load->rate : 0;
	if (m->load->loop == PLAN_REPLAY && m->nreq > 1 &&
	    m->req[m->nreq - 1].arrival_ns > 0)
		out->offered_rate = (m->nreq - 1) /
				    (m->req[m->nreq - 1].arrival_ns / 1e9);
	/* arrivals faster than completions: the queue only grows, and at
	 * the end far more have come than a full batch and the window's
	 * sampling could hold */
	if (m->load->loop == PLAN_OPEN) {
		size_t came = 0;

		for (size_t i = 0; i < m->nreq; i++)
			came += m->req[i].arrival_ns <= m->t1;
		double backlog = (double)came - m->until;

		out->saturated = backlog > 2.0 * m->load->max_batch +
					   0.05 * m->until;
	}
}

int plan_simulate(const struct plan_mix *mix, const struct plan_load *load,
		  struct plan_result *out)
{
	struct sim m = { .mix = mix, .load = load };
	uint32_t n = load->requests ? load->requests : 2000;
	int err = -ENOMEM;

	if (!mix->nreqs || !mix->model.fitted || !load->max_batch ||
	    (load->loop == PLAN_CLOSED && !load->concurrency) ||
	    (load->loop == PLAN_OPEN && !(load->rate > 0)) ||
	    (load->loop == PLAN_REPLAY && (!load->narrivals ||
					   load->narrivals > UINT32_MAX / 2 ||
					   !(load->speed > 0))))
		return -EINVAL;
	if (load->loop == PLAN_REPLAY) {
		for (size_t i = 1; i < load->narrivals; i++)
			if (load->arrivals[i].arrival_ns <
			    load->arrivals[i - 1].arrival_ns)
				return -EINVAL;
		n = (uint32_t)load->narrivals;
	}
	m.warm = load->loop == PLAN_REPLAY ? 0 : n / 10;
	m.until = m.warm + n;
	/* every request the run can start: the clients' first ones and one
	 * per completion, or the open loop's arrivals */
	m.cap = (size_t)m.until + (load->loop == PLAN_CLOSED ?
				   load->concurrency :
				   load->loop == PLAN_OPEN ? n / 2 : 0) + 1;
	m.rng = load->seed * 0x9e3779b97f4a7c15ull + 1;
	m.req = calloc(m.cap, sizeof(*m.req));
	m.wait = calloc(m.cap, sizeof(*m.wait));
	m.run = calloc(load->max_batch, sizeof(*m.run));
	m.ttft = calloc(m.until, sizeof(*m.ttft));
	if (!m.req || !m.wait || !m.run || !m.ttft)
		goto out;
	if (load->loop == PLAN_CLOSED) {
		for (uint32_t i = 0; i < load->concurrency; i++)
			add_req(&m, 0, NULL);
	} else if (load->loop == PLAN_OPEN) {
		double t = 0;

		while (m.nreq < m.cap) {
			t += -log(unit(&m.rng)) / load->rate * 1e9;
			add_req(&m, t, NULL);
		}
	} else {
		const struct plan_req *a = load->arrivals;

		for (size_t i = 0; i < load->narrivals; i++)
			add_req(&m, (double)(a[i].arrival_ns - a[0].arrival_ns) /
					    load->speed, &a[i]);
	}
	err = run(&m);
	if (!err)
		results(&m, out);
out:
	free(m.req);
	free(m.wait);
	free(m.run);
	free(m.ttft);
	free(m.itl);
	return err;
}
