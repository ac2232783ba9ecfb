/*
 * steps.c - from a device timeline and token times to the steps of a
 * continuous-batching engine.
 *
 * In:  requests (token event times; all, or one server's), one device's
 *      intervals (and another's step-ending copies, for a rank of a
 *      tensor-parallel server), a window.
 * Out: struct steps_result: steps with their busy time and batch, and the
 *      entries (who prefilled, who decoded at what context) per step.
 * Assumes: the engine runs one step at a time over every running request
 *      and emits each request's token of a step right after the step.
 *
 * A step boundary is found two ways. On a GPU, a small device-to-host copy
 * (the sampled token ids) closes each step: a step spans from the end of
 * the previous such copy to the end of its own. Several small copies back
 * to back with no other work between them (ids, then logprobs) close one
 * step, so only the last of such a run counts. On the CPU, and as a
 * cross-check on a GPU, the token writes of all running requests come in
 * bursts after each step: sorting every token time and splitting where a
 * request writes its next token (it gets one per step), or where the gap
 * exceeds a threshold, gives the bursts, and step k runs from the first
 * write of burst k-1 to the first write of burst k. The first write, not
 * the last: a server that writes from another thread than the engine's
 * (the reference server, llama.cpp, vLLM's API process) writes a step's
 * tokens while the next step already runs, and on a loaded host the last
 * write of a burst can trail its step by more than a step (measured on
 * the reference server under tokentrace: first write within -0.4..+0.8 ms
 * of the step's end for 80 % of steps, last write -0.1..+1.3 ms, steps of
 * about 1 ms). The threshold comes from the data: eight times the median
 * gap between two tokens of the same request (about one step), never
 * under 200 us, so it only separates bursts across a stopped engine; a
 * smaller one split steps whose writes were spread out, and gave a step's
 * busy time to its neighbour.
 *
 * A tensor-parallel server has one engine over several GPUs: every rank
 * runs each step's kernels, but only rank 0 copies the sampled token ids
 * back, so the other ranks show no step-ending copy. Their steps are cut
 * at rank 0's copies (copy_device), and each rank's own busy time in a
 * step's window is what that step's batch shares. With several servers
 * on one host (data parallel, one process per replica), only the
 * requests of the server whose device it is take part (pid).
 *
 * What each request did: the step that produced its first token did its
 * prefill (all prompt tokens, context 0); a step that produced a later
 * token did one decode at context = prompt + tokens so far. An engine
 * configured to prefill in chunks (--prefill-chunk) spreads a long prompt
 * over several steps before the first token; from outside only the step
 * of the first token is visible, so the whole prefill lands there and the
 * earlier chunk steps look like steps the request did not take part in.
 * The same holds for a token event that carries several tokens. A
 * response that is not streamed shows no token times at all: such a
 * request is placed, as an estimate, in the completion_tokens steps that
 * ended before its response began (the first of them its prefill).
 */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "steps.h"

/* Smallest gap that separates two bursts of token writes: below it, writes
 * are one burst whatever the data says (socket writes of one step). */
#define BURST_GAP_MIN_NS	20000000ull
/* Burst gap = median same-request token gap * this: a gap that long
 * means the engine stopped (no request running), not that one step's
 * writes came late; the steps of a busy engine are told apart by the
 * requests that come back in the next burst (see find_bursts). */
#define BURST_GAP_FACTOR	8

/* Copies close steps only if there are at least 1/this as many of them as
 * token bursts; fewer, and the engine does not end its steps with a small
 * copy (or copies them inside a graph): the bursts cut the steps. */
#define COPY_MIN_BURST_SHARE	2

/* One token event in the window. */
struct tok {
	uint64_t ns;
	uint32_t req;
	uint32_t index;		/* the event's index in the request */
	int64_t step;		/* -1 if no step produced it */
};

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static int cmp_span(const void *a, const void *b)
{
	const struct steps_span *x = a, *y = b;
	if (x->start_ns != y->start_ns)
		return x->start_ns < y->start_ns ? -1 : 1;
	return x->end_ns < y->end_ns ? -1 : x->end_ns > y->end_ns;
}

size_t steps_merge_spans(struct steps_span *s, size_t n)
{
	size_t m = 0;

	qsort(s, n, sizeof(*s), cmp_span);
	for (size_t i = 0; i < n; i++) {
		if (m && s[i].start_ns <= s[m - 1].end_ns) {
			if (s[i].end_ns > s[m - 1].end_ns)
				s[m - 1].end_ns = s[i].end_ns;
			continue;
		}
		s[m++] = s[i];
	}
	return m;
}

static int cmp_tok_ns(const void *a, const void *b)
{
	const struct tok *x = a, *y = b;
	if (x->ns != y->ns)
		return x->ns < y->ns ? -1 : 1;
	if (x->req != y->req)
		return x->req < y->req ? -1 : 1;
	return x->index < y->index ? -1 : x->index > y->index;
}

/* Tokens ordered by step, then request, then index. */
static int cmp_tok_step(const void *a, const void *b)
{
	const struct tok *x = a, *y = b;
	if (x->step != y->step)
		return x->step < y->step ? -1 : 1;
	if (x->req != y->req)
		return x->req < y->req ? -1 : 1;
	return x->index < y->index ? -1 : x->index > y->index;
}

const char *steps_source_name(enum steps_source s)
{
	switch (s) {
	case STEPS_FROM_COPIES:
		return "copies";
	case STEPS_FROM_TOKENS:
		return "tokens";
	default:
		return "auto";
	}
}

int steps_union(const struct tt_interval *ivs, size_t nivs, uint32_t device,
		uint64_t start_ns, uint64_t end_ns, struct steps_span **out,
		size_t *nout, uint64_t *busy_ns)
{
	struct steps_span *s = malloc((nivs ? nivs : 1) * sizeof(*s));
	size_t n = 0, m = 0;
	uint64_t busy = 0;

	*out = NULL;
	*nout = 0;
	*busy_ns = 0;
	if (!s)
		return -ENOMEM;
	for (size_t i = 0; i < nivs; i++) {
		const struct tt_interval *iv = &ivs[i];
		uint64_t a = iv->start_ns > start_ns ? iv->start_ns : start_ns;
		uint64_t b = iv->end_ns < end_ns ? iv->end_ns : end_ns;
		if (iv->device != device || b <= a)
			continue;
		s[n].start_ns = a;
		s[n++].end_ns = b;
	}
	m = steps_merge_spans(s, n);
	for (size_t i = 0; i < m; i++)
		busy += s[i].end_ns - s[i].start_ns;
	*out = s;
	*nout = m;
	*busy_ns = busy;
	return 0;
}

/* First span that ends after t. */
static size_t span_after(const struct steps_span *spans, size_t n, uint64_t t)
{
	size_t lo = 0, hi = n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (spans[mid].end_ns <= t)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

uint64_t steps_busy_in(const struct steps_span *spans, size_t n,
		       uint64_t start_ns, uint64_t end_ns)
{
	uint64_t busy = 0;

	for (size_t i = span_after(spans, n, start_ns);
	     i < n && spans[i].start_ns < end_ns; i++) {
		uint64_t a = spans[i].start_ns > start_ns ? spans[i].start_ns
							   : start_ns;
		uint64_t b = spans[i].end_ns < end_ns ? spans[i].end_ns : end_ns;
		if (b > a)
			busy += b - a;
	}
	return busy;
}

/* Number of sorted values <= t. */
static size_t count_le(const uint64_t *v, size_t n, uint64_t t)
{
	size_t lo = 0, hi = n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (v[mid] <= t)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* Whether request i was served by the device's server. */
static bool takes_part(const struct steps_input *in, uint32_t i)
{
	return !in->pid || in->reqs[i].pid == in->pid;
}

/* Every token event of every request taking part, inside the window. */
static int collect_tokens(const struct steps_input *in, struct tok **out,
			  size_t *nout)
{
	size_t n = 0, k = 0;
	struct tok *t;

	for (uint32_t i = 0; i < in->nreqs; i++)
		if (in->reqs[i].token_ns && takes_part(in, i))
			n += in->reqs[i].token_ns_len;
	t = malloc((n ? n : 1) * sizeof(*t));
	if (!t)
		return -ENOMEM;
	for (uint32_t i = 0; i < in->nreqs; i++) {
		const struct tt_request *r = &in->reqs[i];
		if (!takes_part(in, i))
			continue;
		for (uint32_t j = 0; r->token_ns && j < r->token_ns_len; j++) {
			uint64_t ns = r->token_ns[j];
			if (ns < in->start_ns || ns > in->end_ns)
				continue;
			t[k++] = (struct tok){ .ns = ns, .req = i, .index = j,
					       .step = -1 };
		}
	}
	qsort(t, k, sizeof(*t), cmp_tok_ns);
	*out = t;
	*nout = k;
	return 0;
}

/* The gap that separates bursts, from same-request token gaps. */
static uint64_t burst_gap(const struct steps_input *in)
{
	size_t n = 0, k = 0;
	uint64_t *g, gap = BURST_GAP_MIN_NS;

	for (uint32_t i = 0; i < in->nreqs; i++)
		if (in->reqs[i].token_ns && in->reqs[i].token_ns_len > 1 &&
		    takes_part(in, i))
			n += in->reqs[i].token_ns_len - 1;
	g = malloc((n ? n : 1) * sizeof(*g));
	if (!g)
		return gap;
	for (uint32_t i = 0; i < in->nreqs; i++) {
		const struct tt_request *r = &in->reqs[i];
		if (!takes_part(in, i))
			continue;
		for (uint32_t j = 1; r->token_ns && j < r->token_ns_len; j++)
			if (r->token_ns[j] > r->token_ns[j - 1] &&
			    r->token_ns[j - 1] >= in->start_ns &&
			    r->token_ns[j] <= in->end_ns)
				g[k++] = r->token_ns[j] - r->token_ns[j - 1];
	}
	if (k) {
		qsort(g, k, sizeof(*g), cmp_u64);
		if (g[k / 2] * BURST_GAP_FACTOR > gap)
			gap = g[k / 2] * BURST_GAP_FACTOR;
	}
	free(g);
	return gap;
}

/*
 * Split sorted tokens into bursts; bounds[b] = time of the first token of
 * burst b. Marks each token with its burst in ->step when mark is set.
 * A burst ends at a gap wider than `gap`, and also where a request that
 * already has a token in it writes another: a step gives a request at
 * most one token, and the writes of one step can be spread out as much as
 * the gaps between steps (a server thread that writes them late, then
 * several steps' worth back to back). The first write of a burst follows
 * the end of its step closely; the last one can trail it by a step or
 * more. last[] has room for nreqs.
 */
static uint32_t find_bursts(struct tok *t, size_t n, uint64_t gap,
			    uint32_t *last, uint32_t nreqs, uint64_t *bounds,
			    bool mark, bool *at_gap)
{
	uint32_t b = 0;

	for (uint32_t i = 0; i < nreqs; i++)
		last[i] = UINT32_MAX;
	if (at_gap && n)
		at_gap[0] = false;
	for (size_t i = 0; i < n; i++) {
		bool open = !i;

		if (i && (t[i].ns - t[i - 1].ns > gap || last[t[i].req] == b)) {
			b++;
			open = true;
			if (at_gap)
				at_gap[b] = true;
		}
		/* a burst that shares no request with the one before may be
		 * the rest of it */
		if (at_gap && b && last[t[i].req] == b - 1)
			at_gap[b] = false;
		last[t[i].req] = b;
		if (mark)
			t[i].step = b;
		if (bounds && open)
			bounds[b] = t[i].ns;
	}
	return n ? b + 1 : 0;
}

static bool is_step_copy(const struct tt_interval *iv, uint64_t max_bytes)
{
	return iv->kind == TT_IV_MEMCPY && iv->copy_kind == TT_COPY_DTOH &&
	       iv->bytes <= max_bytes;
}

/*
 * Ends of step-ending copies in the window, sorted, with runs of copies
 * that have no other work between them reduced to their last; from the
 * device itself or from the one named by copy_device (the runs are that
 * device's too). *bounds is allocated here.
 */
static int copy_bounds(const struct steps_input *in, uint64_t **bounds,
		       uint32_t *nb)
{
	uint64_t max = in->max_copy_bytes ? in->max_copy_bytes
					  : STEPS_MAX_COPY_BYTES;
	uint32_t dev = in->copy_device ? in->copy_device : in->device;
	struct steps_span *c = malloc((in->nivs ? in->nivs : 1) * sizeof(*c));
	uint64_t *other = malloc((in->nivs ? in->nivs : 1) * sizeof(*other));
	uint64_t *b = malloc((in->nivs ? in->nivs : 1) * sizeof(*b));
	size_t nc = 0, no = 0;
	uint32_t k = 0;

	if (!c || !other || !b) {
		free(c);
		free(other);
		free(b);
		return -ENOMEM;
	}
	for (size_t i = 0; i < in->nivs; i++) {
		const struct tt_interval *iv = &in->ivs[i];
		if (iv->device != dev)
			continue;
		if (is_step_copy(iv, max) && iv->end_ns >= in->start_ns &&
		    iv->end_ns <= in->end_ns)
			c[nc++] = (struct steps_span){ iv->start_ns, iv->end_ns };
		else if (!is_step_copy(iv, max))
			other[no++] = iv->start_ns;
	}
	qsort(c, nc, sizeof(*c), cmp_span);
	qsort(other, no, sizeof(*other), cmp_u64);
	for (size_t i = 0; i < nc; i++) {
		/* Other work started between this copy and the next? */
		if (i + 1 < nc &&
		    count_le(other, no, c[i + 1].start_ns) ==
			    count_le(other, no, c[i].end_ns))
			continue;
		if (k && c[i].end_ns == b[k - 1])
			continue;
		b[k++] = c[i].end_ns;
	}
	free(c);
	free(other);
	*bounds = b;
	*nb = k;
	return 0;
}

/* Mark each token with the step whose closing copy precedes it. */
/*
 * Which copy-cut step each token came from. A token is written after its
 * step's copy of the sampled ids ended, so it belongs to a step whose copy
 * ends at or before it; but a server writes a step's tokens late when its
 * writing thread is busy or behind (vLLM's output processing overlaps the
 * next step by design, and a loaded host delays any thread), often past
 * the end of the next copy, and the engine is not waiting for it. So
 * tokens are taken a burst at a time (a step's writes, find_bursts), the
 * bursts keep their order, and each is placed at the last step whose copy
 * ended before its first write or up to two steps earlier (never before
 * the arrival of a request it prefilled), two bursts sharing a step only
 * when they share no request. Of those placements the one kept is the
 * one under which the steps' busy times are best told by the work placed
 * in them (a dynamic programme over the bursts, least squares under a
 * line fitted on the latest placement): prefill is what makes one step
 * cost far more than its neighbours, so a prefill placed a step late
 * shows. Measured on the simulated 8-GPU server on this 2-core host,
 * token writes trailed their step's copy by 0.5 to 3.8 ms with steps of
 * 1.5 ms; the latest placement alone gave 48 % of requests a share within
 * 5 % of the truth, this one 95 to 100 %.
 */
#define COPY_BURST_GAP_MIN_NS	50000ull
#define ALIGN_LAG_MAX		3	/* places tried per burst */
#define ALIGN_MIN_STEPS		8	/* fewer: keep the latest placement */

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

struct burst {
	uint64_t first_ns;	/* its first write */
	uint64_t arrival_ns;	/* latest arrival of a request it prefilled */
	uint64_t prefill;	/* prompt tokens of its first tokens */
	uint32_t decodes;
	bool at_gap;		/* it began at a pause, not at a request's
				   second write: it may be the rest of the
				   burst before it (a writer paused mid-step) */
	int64_t late;		/* its step */
};

static void bursts_late(struct burst *u, uint32_t nu, const uint64_t *b,
			uint32_t nb)
{
	int64_t next = nb;

	for (uint32_t j = nu; j-- > 0;) {
		int64_t hi = (int64_t)count_le(b, nb, u[j].first_ns) - 1;
		int64_t most = j + 1 < nu && u[j + 1].at_gap && next < nb ?
			       next : next - 1;

		u[j].late = hi < most ? hi : most;
		if (u[j].late >= 0)
			next = u[j].late;
	}
}

/* A step's busy time from the work of its bursts: fixed + per prompt
 * token prefilled + per decode. */
struct work_line {
	double fixed, per_prefill, per_decode;
};

static double sq(double x)
{
	return x * x;
}

/* Solves the 3x3 system m x = v in place (Gauss-Jordan with pivoting);
 * false when it is singular. */
static bool solve3(double m[3][3], double v[3])
{
	for (int c = 0; c < 3; c++) {
		int p = c;

		for (int r = c + 1; r < 3; r++)
			if (fabs(m[r][c]) > fabs(m[p][c]))
				p = r;
		if (fabs(m[p][c]) < 1e-12 * (fabs(m[0][0]) + 1))
			return false;
		for (int k = 0; k < 3; k++) {
			double x = m[c][k];

			m[c][k] = m[p][k];
			m[p][k] = x;
		}
		double x = v[c];

		v[c] = v[p];
		v[p] = x;
		for (int r = 0; r < 3; r++) {
			if (r == c)
				continue;
			double f = m[r][c] / m[c][c];

			for (int k = 0; k < 3; k++)
				m[r][k] -= f * m[c][k];
			v[r] -= f * v[c];
		}
	}
	for (int c = 0; c < 3; c++)
		v[c] /= m[c][c];
	return true;
}

/* Least squares of the steps' busy time on their work when every burst is
 * as late as it can be; false with too few steps to tell. */
static bool work_model(const struct burst *u, uint32_t nu, const double *busy,
		       uint32_t nb, double *pd, struct work_line *w)
{
	double m[3][3] = { { 0 } }, v[3] = { 0 };
	uint32_t used = 0;

	memset(pd, 0, 2 * (size_t)nb * sizeof(*pd));
	for (uint32_t j = 0; j < nu; j++) {
		if (u[j].late < 0)
			continue;
		pd[2 * u[j].late] += (double)u[j].prefill;
		pd[2 * u[j].late + 1] += u[j].decodes;
	}
	for (uint32_t k = 0; k < nb; k++) {
		double x[3] = { 1, pd[2 * k], pd[2 * k + 1] };

		if (x[1] == 0 && x[2] == 0)
			continue;
		used++;
		for (int r = 0; r < 3; r++) {
			for (int c = 0; c < 3; c++)
				m[r][c] += x[r] * x[c];
			v[r] += x[r] * busy[k];
		}
	}
	if (used < ALIGN_MIN_STEPS || !solve3(m, v))
		return false;
	*w = (struct work_line){ v[0], v[1], v[2] };
	return true;
}

/* One way to place a burst: at step k, with the cost of the steps before
 * k, and the work of the bursts that share step k so far. */
struct place {
	int64_t k;
	double cost, prefill, decodes;
	int32_t from;		/* the place of the burst before, -1: none */
};

static double step_err(const struct work_line *w, const double *busy,
		       int64_t k, double prefill, double decodes)
{
	return sq(busy[k] - (w->fixed + w->per_prefill * prefill +
			     w->per_decode * decodes));
}

/* The best way to reach place q of burst uj from the places of the burst
 * before it (from[0..nfrom), numbered from base). */
static void align_from(const struct place *from, int nfrom, int32_t base,
		       const struct burst *uj, const struct work_line *w,
		       const double *busy, const double *empty,
		       struct place *q)
{
	q->cost = INFINITY;
	q->from = -1;
	for (int c = 0; c < nfrom; c++) {
		const struct place *p = &from[c];
		double cost;

		if (p->k == q->k && uj->at_gap) {
			if (p->cost < q->cost) {
				q->cost = p->cost;
				q->prefill = p->prefill + (double)uj->prefill;
				q->decodes = p->decodes + uj->decodes;
				q->from = base + c;
			}
			continue;
		}
		if (p->k >= q->k)
			continue;
		cost = p->cost + step_err(w, busy, p->k, p->prefill, p->decodes) +
		       empty[q->k] - empty[p->k + 1];
		if (cost < q->cost) {
			q->cost = cost;
			q->prefill = (double)uj->prefill;
			q->decodes = uj->decodes;
			q->from = base + c;
		}
	}
}

/*
 * Each burst at its latest step or up to ALIGN_LAG_MAX - 1 steps before
 * it (not before an arrival it prefilled), in order, two sharing a step
 * only across a pause: the placement under which the steps' busy times
 * are best told by their work (least squares under a line fitted to the
 * latest placement; a step without writes is told by the fixed cost).
 * Sets u[].late to it; leaves the latest placement when nothing fits.
 */
static int bursts_align(struct burst *u, uint32_t nu, const uint64_t *b,
			uint32_t nb, const double *busy)
{
	struct place *pl = calloc((size_t)nu * ALIGN_LAG_MAX + 1, sizeof(*pl));
	double *pd = malloc((3 * (size_t)nb + 1) * sizeof(*pd));
	int32_t *np = calloc(nu ? nu : 1, sizeof(*np));
	double *empty = pd ? pd + 2 * (size_t)nb : NULL;
	struct work_line w;
	int32_t prev = -1, best = -1;
	double best_cost = INFINITY;

	if (!pl || !pd || !np) {
		free(pl);
		free(pd);
		free(np);
		return -ENOMEM;
	}
	if (!work_model(u, nu, busy, nb, pd, &w))
		goto out;
	empty[0] = 0;
	for (uint32_t k = 0; k < nb; k++)
		empty[k + 1] = empty[k] + sq(busy[k] - w.fixed);
	for (uint32_t j = 0; j < nu; j++) {
		int64_t hi = (int64_t)count_le(b, nb, u[j].first_ns) - 1;
		int64_t lo = (int64_t)count_le(b, nb, u[j].arrival_ns);
		struct place *q = pl + (size_t)j * ALIGN_LAG_MAX;

		for (int64_t k = hi; k >= 0 && k >= lo &&
		     hi - k < ALIGN_LAG_MAX; k--) {
			struct place *x = &q[np[j]];

			x->k = k;
			if (prev < 0) {
				x->cost = empty[k];
				x->prefill = (double)u[j].prefill;
				x->decodes = u[j].decodes;
				x->from = -1;
			} else {
				align_from(pl + (size_t)prev * ALIGN_LAG_MAX,
					   np[prev], prev * ALIGN_LAG_MAX,
					   &u[j], &w, busy, empty, x);
			}
			/* of two equal placements, the later one */
			x->cost += 1e-9 * (double)(hi - k) * (empty[nb] + 1);
			if (isfinite(x->cost))
				np[j]++;
		}
		if (np[j])
			prev = (int32_t)j;
	}
	if (prev < 0)
		goto out;
	for (int c = 0; c < np[prev]; c++) {
		const struct place *p = &pl[(size_t)prev * ALIGN_LAG_MAX + c];
		double cost = p->cost + step_err(&w, busy, p->k, p->prefill,
						 p->decodes) +
			      empty[nb] - empty[p->k + 1];

		if (cost < best_cost) {
			best_cost = cost;
			best = prev * ALIGN_LAG_MAX + c;
		}
	}
	for (uint32_t j = 0; j < nu; j++)
		u[j].late = -1;
	for (int32_t i = best; i >= 0; i = pl[i].from)
		u[i / ALIGN_LAG_MAX].late = pl[i].k;
out:
	free(pl);
	free(pd);
	free(np);
	return 0;
}

/*
 * With copies, the writes of two steps are told apart by time as well: a
 * pause of half a typical step (copy to copy) between two writes is not
 * one step's writes being spread out, whichever requests they are for
 * (one request finishing and the next one's first token, with a batch of
 * one). Never under COPY_BURST_GAP_MIN_NS, nor over the token gap.
 */
static uint64_t copy_burst_gap(uint64_t gap, const uint64_t *b, uint32_t nb,
			       double *scratch)
{
	uint32_t k = 0;

	for (uint32_t i = 1; i < nb; i++)
		scratch[k++] = (double)(b[i] - b[i - 1]);
	if (!k)
		return gap;
	qsort(scratch, k, sizeof(*scratch), cmp_double);
	uint64_t half = (uint64_t)(scratch[k / 2] / 2);

	if (half < COPY_BURST_GAP_MIN_NS)
		half = COPY_BURST_GAP_MIN_NS;
	return half < gap ? half : gap;
}

/* Fills u from the tokens, marked with their burst in ->step. */
static void burst_facts(const struct steps_input *in, const struct tok *t,
			size_t n, struct burst *u)
{
	for (size_t i = 0; i < n; i++) {
		struct burst *x = &u[t[i].step];
		const struct tt_request *q = &in->reqs[t[i].req];

		if (!x->first_ns)
			x->first_ns = t[i].ns;
		if (t[i].index) {
			x->decodes++;
			continue;
		}
		x->prefill += q->prompt_tokens > 0 ? (uint64_t)q->prompt_tokens
						   : 1;
		if (q->arrival_ns > x->arrival_ns)
			x->arrival_ns = q->arrival_ns;
	}
}

static int tokens_after_copies(const struct steps_input *in,
			       const struct steps_result *r, struct tok *t,
			       size_t n, const uint64_t *b, uint32_t nb,
			       uint32_t *last)
{
	double *busy = malloc((nb ? nb : 1) * 2 * sizeof(*busy));
	uint32_t nu;
	struct burst *u;
	bool *at_gap;

	if (!busy)
		return -ENOMEM;
	at_gap = calloc(n ? n : 1, sizeof(*at_gap));
	if (!at_gap) {
		free(busy);
		return -ENOMEM;
	}
	nu = find_bursts(t, n, copy_burst_gap(r->burst_gap_ns, b, nb, busy),
			 last, in->nreqs, NULL, true, at_gap);
	u = calloc(nu ? nu : 1, sizeof(*u));
	if (!u) {
		free(busy);
		free(at_gap);
		return -ENOMEM;
	}
	for (uint32_t j = 0; j < nu; j++)
		u[j].at_gap = at_gap[j];
	free(at_gap);
	burst_facts(in, t, n, u);
	bursts_late(u, nu, b, nb);
	for (uint32_t k = 0; k < nb; k++)
		busy[k] = (double)steps_busy_in(r->busy, r->nbusy,
						k ? b[k - 1] : in->start_ns,
						b[k]);
	int err = bursts_align(u, nu, b, nb, busy);

	for (size_t i = 0; !err && i < n; i++)
		t[i].step = u[t[i].step].late;
	free(u);
	free(busy);
	return err;
}

/* A request whose tokens were not seen one by one (a response that is
 * not streamed) but whose length is known. */
static bool unseen_tokens(const struct tt_request *r)
{
	return (!r->token_ns || !r->token_ns_len) && r->completion_tokens > 0 &&
	       (r->first_token_ns || r->end_ns);
}

/*
 * Place requests with no token times: the response went out after the
 * request's last step, so it took part in the `completion_tokens` steps
 * that ended before its response started (and after it arrived), the
 * first of them its prefill. An estimate, counted in r->estimated.
 * t has room for n + the tokens added; returns the new count.
 */
static size_t place_unseen(const struct steps_input *in, const uint64_t *b,
			   uint32_t nb, struct tok *t, size_t n,
			   struct steps_result *r)
{
	for (uint32_t i = 0; i < in->nreqs; i++) {
		const struct tt_request *q = &in->reqs[i];
		if (!unseen_tokens(q) || !takes_part(in, i))
			continue;
		uint64_t resp = q->first_token_ns ? q->first_token_ns
						  : q->end_ns;
		size_t last = count_le(b, nb, resp);
		size_t first = count_le(b, nb, q->arrival_ns);
		if (last <= first)
			continue;
		if (last - first > (uint64_t)q->completion_tokens)
			first = last - q->completion_tokens;
		for (size_t k = first; k < last; k++)
			t[n++] = (struct tok){ .ns = b[k], .req = i,
					       .index = (uint32_t)(k - first),
					       .step = (int64_t)k };
		r->estimated++;
	}
	return n;
}

/* Room for place_unseen's tokens: at most one per step per request. */
static size_t unseen_room(const struct steps_input *in, uint32_t nb)
{
	size_t room = 0;

	for (uint32_t i = 0; i < in->nreqs; i++)
		if (unseen_tokens(&in->reqs[i]) && takes_part(in, i))
			room += (uint64_t)in->reqs[i].completion_tokens < nb ?
				(size_t)in->reqs[i].completion_tokens : nb;
	return room;
}

/*
 * What a request's token event says it did. A prompt served in part from
 * a prefix cache prefills only the rest, attending over the cached part.
 */
static struct attr_entry entry_of(const struct tt_request *r,
				  const struct tok *t)
{
	uint32_t prompt = r->prompt_tokens > 0 ? (uint32_t)r->prompt_tokens : 0;
	uint32_t cached = r->cached_source != TT_CACHED_NONE &&
			  r->cached_tokens > 0 &&
			  (uint64_t)r->cached_tokens < prompt ?
			  (uint32_t)r->cached_tokens : 0;
	struct attr_entry e = { .request = t->req };

	if (t->index == 0) {
		e.phase = ATTR_PREFILL;
		e.tokens = prompt ? prompt - cached : 1;
		e.context = cached;
	} else {
		e.phase = ATTR_DECODE;
		e.tokens = 1;
		e.context = prompt + t->index;
	}
	return e;
}

/* Entries from tokens sorted by step: one per request and step. */
static int build_entries(const struct steps_input *in, struct tok *t,
			 size_t n, struct steps_result *r)
{
	size_t cap = n ? n : 1;

	r->entries = malloc(cap * sizeof(*r->entries));
	r->entry_token_ns = malloc(cap * sizeof(uint64_t));
	r->entry_prev_ns = malloc(cap * sizeof(uint64_t));
	if (!r->entries || !r->entry_token_ns || !r->entry_prev_ns)
		return -ENOMEM;
	qsort(t, n, sizeof(*t), cmp_tok_step);
	for (size_t i = 0; i < n; i++) {
		if (t[i].step < 0)
			continue;
		if (i && t[i - 1].step == t[i].step && t[i - 1].req == t[i].req)
			continue;
		const struct tt_request *q = &in->reqs[t[i].req];
		struct steps_step *s = &r->steps[t[i].step];
		uint32_t e = r->nentries++;
		r->entries[e] = entry_of(q, &t[i]);
		r->entry_token_ns[e] = t[i].ns;
		r->entry_prev_ns[e] = t[i].index && q->token_ns &&
				      t[i].index <= q->token_ns_len ?
				      q->token_ns[t[i].index - 1] : 0;
		if (s->n == 0)
			s->first = e;
		s->n++;
		if (r->entries[e].phase == ATTR_PREFILL)
			s->prefill_tokens += r->entries[e].tokens;
		else
			s->decode_tokens++;
	}
	return 0;
}

/* Step 0 starts when the first request it served arrived. */
static uint64_t first_step_start(const struct steps_input *in,
				 const struct steps_result *r)
{
	const struct steps_step *s = &r->steps[0];
	uint64_t start = s->end_ns;

	if (s->n == 0)
		return in->start_ns;
	for (uint32_t i = 0; i < s->n; i++) {
		uint64_t a = in->reqs[r->entries[s->first + i].request].arrival_ns;
		if (a < start)
			start = a;
	}
	return start > in->start_ns ? start : in->start_ns;
}

/* Requests taking part in flight in each step that got no token in it. */
static int count_waiting(const struct steps_input *in, struct steps_result *r)
{
	size_t n = 0;
	uint64_t *arr = malloc((in->nreqs ? in->nreqs : 1) * sizeof(*arr));
	uint64_t *end = malloc((in->nreqs ? in->nreqs : 1) * sizeof(*end));

	if (!arr || !end) {
		free(arr);
		free(end);
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < in->nreqs; i++) {
		if (!takes_part(in, i))
			continue;
		arr[n] = in->reqs[i].arrival_ns;
		end[n++] = in->reqs[i].end_ns ? in->reqs[i].end_ns
					      : UINT64_MAX;
	}
	qsort(arr, n, sizeof(*arr), cmp_u64);
	qsort(end, n, sizeof(*end), cmp_u64);
	for (uint32_t k = 0; k < r->nsteps; k++) {
		struct steps_step *s = &r->steps[k];
		size_t arrived = count_le(arr, n, s->end_ns);
		size_t gone = s->start_ns ? count_le(end, n, s->start_ns - 1)
					  : 0;
		size_t flight = arrived > gone ? arrived - gone : 0;
		s->waiting = flight > s->n ? (uint32_t)(flight - s->n) : 0;
	}
	free(arr);
	free(end);
	return 0;
}

/* Windows, busy time and the attribution view of each step. */
static int finish_steps(const struct steps_input *in, struct steps_result *r)
{
	r->attr = malloc((r->nsteps ? r->nsteps : 1) * sizeof(*r->attr));
	if (!r->attr)
		return -ENOMEM;
	if (r->nsteps)
		r->steps[0].start_ns = first_step_start(in, r);
	for (uint32_t k = 0; k < r->nsteps; k++) {
		struct steps_step *s = &r->steps[k];
		if (k)
			s->start_ns = r->steps[k - 1].end_ns;
		s->busy_ns = steps_busy_in(r->busy, r->nbusy, s->start_ns,
					   s->end_ns);
		r->attr[k] = (struct attr_step){ .busy_ns = s->busy_ns,
						 .first = s->first, .n = s->n };
	}
	return count_waiting(in, r);
}

/* Boundaries (step end times) by the chosen source; marks tokens. */
static int cut(const struct steps_input *in, struct steps_result *r,
	       struct tok *t, size_t nt, uint64_t **bounds, uint32_t *nb)
{
	uint32_t *last = malloc((in->nreqs ? in->nreqs : 1) * sizeof(*last));
	int err = 0;

	if (!last)
		return -ENOMEM;
	r->burst_gap_ns = burst_gap(in);
	r->bursts = find_bursts(t, nt, r->burst_gap_ns, last, in->nreqs, NULL,
				false, NULL);
	if (in->source != STEPS_FROM_TOKENS) {
		err = copy_bounds(in, bounds, nb);
		if (err)
			goto out;
		r->copies = *nb;
		if (in->source == STEPS_FROM_COPIES ||
		    (*nb >= 2 && *nb * COPY_MIN_BURST_SHARE >= r->bursts)) {
			r->source = STEPS_FROM_COPIES;
			err = tokens_after_copies(in, r, t, nt, *bounds, *nb,
						  last);
			goto out;
		}
		free(*bounds);
	}
	r->source = STEPS_FROM_TOKENS;
	*bounds = malloc((r->bursts ? r->bursts : 1) * sizeof(uint64_t));
	if (!*bounds) {
		err = -ENOMEM;
		goto out;
	}
	*nb = find_bursts(t, nt, r->burst_gap_ns, last, in->nreqs, *bounds,
			  true, NULL);
out:
	free(last);
	return err;
}

int steps_find(const struct steps_input *in, struct steps_result *r)
{
	struct tok *t = NULL;
	uint64_t *bounds = NULL;
	uint32_t nb = 0;
	size_t nt = 0;
	int err;

	memset(r, 0, sizeof(*r));
	if (in->end_ns < in->start_ns || (in->nreqs && !in->reqs) ||
	    (in->nivs && !in->ivs))
		return -EINVAL;
	err = steps_union(in->ivs, in->nivs, in->device, in->start_ns,
			  in->end_ns, &r->busy, &r->nbusy, &r->busy_ns);
	if (!err)
		err = collect_tokens(in, &t, &nt);
	if (!err)
		err = cut(in, r, t, nt, &bounds, &nb);
	if (err)
		goto out;
	r->steps = calloc(nb ? nb : 1, sizeof(*r->steps));
	if (!r->steps) {
		err = -ENOMEM;
		goto out;
	}
	r->nsteps = nb;
	for (uint32_t k = 0; k < nb; k++)
		r->steps[k].end_ns = bounds[k];
	size_t room = unseen_room(in, nb);
	if (room) {
		struct tok *p = realloc(t, (nt + room) * sizeof(*t));
		if (!p) {
			err = -ENOMEM;
			goto out;
		}
		t = p;
		nt = place_unseen(in, bounds, nb, t, nt, r);
	}
	err = build_entries(in, t, nt, r);
	if (!err)
		err = finish_steps(in, r);
out:
	free(t);
	free(bounds);
	return err;
}

void steps_free(struct steps_result *r)
{
	free(r->steps);
	free(r->attr);
	free(r->entries);
	free(r->entry_token_ns);
	free(r->entry_prev_ns);
	free(r->busy);
	memset(r, 0, sizeof(*r));
}

void steps_obs_add(const struct steps_result *s, uint32_t k,
		   struct costmodel_obs *o)
{
	const struct steps_step *st = &s->steps[k];

	for (uint32_t i = st->first; i < st->first + st->n; i++) {
		const struct attr_entry *e = &s->entries[i];

		if (e->phase == ATTR_PREFILL)
			costmodel_obs_prefill(o, e->tokens, e->context);
		else
			costmodel_obs_decode(o, e->context);
	}
}
