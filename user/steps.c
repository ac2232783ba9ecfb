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
#include <stddef.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "sort.h"
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

/* A tok that is one chunk of a prefill (placed by place_chunks): its
 * index is this | the chunk's number. */
#define TOK_CHUNK	0x80000000u

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

	/* by start alone: the union does not depend on the order of spans
	 * that start together */
	if (sort_by_u64(s, n, sizeof(*s), offsetof(struct steps_span,
						       start_ns)))
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
	case STEPS_FROM_PROBE:
		return "probe";
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
	uint32_t pid = in->reqs[i].pid;

	if (in->pid)
		return pid == in->pid;
	return !in->pid_hi || (pid >= in->pid_lo && pid < in->pid_hi);
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
	/* t is in (request, index) order: stable by time is (ns, req, index) */
	if (sort_by_u64(t, k, sizeof(*t), offsetof(struct tok, ns)))
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
		uint64_t median = select_u64(g, k, k / 2);

		if (median * BURST_GAP_FACTOR > gap)
			gap = median * BURST_GAP_FACTOR;
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
			    bool mark)
{
	uint32_t b = 0;

	for (uint32_t i = 0; i < nreqs; i++)
		last[i] = UINT32_MAX;
	for (size_t i = 0; i < n; i++) {
		bool open = !i;

		if (i && (t[i].ns - t[i - 1].ns > gap || last[t[i].req] == b)) {
			b++;
			open = true;
		}
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
	/* (start, end): stable by end, then by start */
	if (sort_by_u64(c, nc, sizeof(*c), offsetof(struct steps_span,
						    end_ns)) ||
	    sort_by_u64(c, nc, sizeof(*c), offsetof(struct steps_span,
						    start_ns)))
		qsort(c, nc, sizeof(*c), cmp_span);
	if (sort_u64(other, no))
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

/*
 * Ends of the step probe's windows inside the window, in order: the
 * engine hands a step's tokens to its streams after its step function
 * returned, so they cut as copies of the sampled ids do.
 */
static int probe_bounds(const struct steps_input *in, uint64_t **bounds,
			uint32_t *nb)
{
	uint64_t *b = malloc((in->nprobe ? in->nprobe : 1) * sizeof(*b));
	uint32_t k = 0;

	if (!b)
		return -ENOMEM;
	for (size_t i = 0; i < in->nprobe; i++) {
		uint64_t e = in->probe[i].end_ns;

		if (e < in->start_ns || e > in->end_ns || (k && e <= b[k - 1]))
			continue;
		b[k++] = e;
	}
	*bounds = b;
	*nb = k;
	return 0;
}

/*
 * Which copy-cut step each token came from. A token is written after its
 * step's copy of the sampled ids ended, so it belongs to a step whose copy
 * ends at or before it; but a server writes a step's tokens late when its
 * writing thread is busy or behind (vLLM's output processing overlaps the
 * next step by design, a server with a thread per stream stalls one
 * stream at a time, and a loaded host delays any thread), often past the
 * end of the next copy, and the engine is not waiting for it.
 *
 * First each request alone (chain_bursts): it gets one token a step while
 * it runs, so a write on time places every late one before it. Then the
 * tokens of one latest step, a burst, move together by up to two steps
 * (never before the arrival of a request they prefilled, in order): the
 * placement kept is the one under which the steps' busy times are best
 * told by the work placed in them (a dynamic programme over the bursts,
 * least squares under a line fitted on the placement before, refitted
 * until nothing moves): prefill is what makes one step cost far more
 * than its neighbours, so a prefill placed a step late shows. Last each
 * prefill on its own (refine_prefills). Measured on the simulated
 * 2-GPU server on this 2-core host with a thread of the host stalled for
 * 0-10 ms every 0-20 ms: requests within 5 % of their true share went
 * from 76 of 100 (bursts cut by time, one line) to 98.
 */
#define ALIGN_LAG_MAX		3	/* places tried per burst */
#define ALIGN_MIN_STEPS		8	/* fewer: keep the latest placement */
#define ALIGN_ROUNDS		4	/* fits of the line, at most */

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* What a step does: prompt tokens prefilled, the sum of their squares
 * (attention over the prompt), decodes. */
struct work {
	double pre, sq, dec;
};

/* When the work of the step (from, to] began: its step function's call
 * where the probe cut it, else its first busy time (to when it has
 * none). */
static uint64_t work_start(const struct steps_input *in,
			   const struct steps_result *r, uint64_t from,
			   uint64_t to)
{
	size_t i;

	if (r->source == STEPS_FROM_PROBE && to) {
		i = span_after(in->probe, in->nprobe, to - 1);
		if (i < in->nprobe && in->probe[i].end_ns == to)
			return in->probe[i].start_ns > from ?
			       in->probe[i].start_ns : from;
	}
	i = span_after(r->busy, r->nbusy, from);
	if (i == r->nbusy || r->busy[i].start_ns >= to)
		return to;
	return r->busy[i].start_ns > from ? r->busy[i].start_ns : from;
}

/* The first step a request arriving at `ns` can take part in: the one in
 * progress then if its work had not begun, else the next. */
static int64_t admit_step(const struct steps_input *in,
			  const struct steps_result *r, const uint64_t *b,
			  uint32_t nb, uint64_t ns)
{
	size_t j = count_le(b, nb, ns);

	if (j < nb && work_start(in, r, j ? b[j - 1] : in->start_ns, b[j]) <
		 ns)
		j++;
	return (int64_t)j;
}

struct burst {
	uint64_t arrival_ns;	/* latest arrival of a request it prefilled */
	int64_t earliest;	/* the first step that request can be in */
	struct work w;
	int64_t latest;		/* its latest step (chain_bursts) */
	int64_t late;		/* its step */
};

/* A step's busy time from its work: fixed + per prompt token prefilled +
 * per squared prompt token + per decode. */
struct work_line {
	double c[4];
};

static double sq(double x)
{
	return x * x;
}

static void work_add(struct work *x, const struct work *y, double sign)
{
	x->pre += sign * y->pre;
	x->sq += sign * y->sq;
	x->dec += sign * y->dec;
}

static double step_err(const struct work_line *w, const double *busy,
		       int64_t k, const struct work *x)
{
	return sq(busy[k] - (w->c[0] + w->c[1] * x->pre + w->c[2] * x->sq +
			     w->c[3] * x->dec));
}

/* Solves the n x n system m x = v in place (Gauss-Jordan with pivoting,
 * columns of like scale); false when it is singular. */
static bool solve(int n, double m[4][4], double v[4])
{
	for (int c = 0; c < n; c++) {
		int p = c;

		for (int r = c + 1; r < n; r++)
			if (fabs(m[r][c]) > fabs(m[p][c]))
				p = r;
		if (fabs(m[p][c]) < 1e-9 * (fabs(m[0][0]) + 1e-300))
			return false;
		for (int k = 0; k < n; k++) {
			double x = m[c][k];

			m[c][k] = m[p][k];
			m[p][k] = x;
		}
		double x = v[c];

		v[c] = v[p];
		v[p] = x;
		for (int r = 0; r < n; r++) {
			if (r == c)
				continue;
			double f = m[r][c] / m[c][c];

			for (int k = 0; k < n; k++)
				m[r][k] -= f * m[c][k];
			v[r] -= f * v[c];
		}
	}
	for (int c = 0; c < n; c++)
		v[c] /= m[c][c];
	return true;
}

/* Least squares of the steps' busy time on their work (pd, per step;
 * steps with none are left out), with the squared prompt term when the
 * prompts' lengths tell it from the linear one; false with too few steps
 * to tell. */
static bool fit_line(const struct work *pd, const double *busy, uint32_t nb,
		     struct work_line *w)
{
	double scale[4] = { 1, 0, 0, 0 }, m[4][4], v[4];
	uint32_t used = 0;

	for (uint32_t k = 0; k < nb; k++) {
		if (!pd[k].pre && !pd[k].dec)
			continue;
		used++;
		scale[1] = fmax(scale[1], pd[k].pre);
		scale[2] = fmax(scale[2], pd[k].sq);
		scale[3] = fmax(scale[3], pd[k].dec);
	}
	if (used < ALIGN_MIN_STEPS)
		return false;
	/* all four terms; without the squared one; without prefill */
	static const int terms[3][4] = { { 0, 1, 2, 3 }, { 0, 1, 3, -1 },
					 { 0, 3, -1, -1 } };

	for (int f = 0; f < 3; f++) {
		int n = 0;

		while (n < 4 && terms[f][n] >= 0 && scale[terms[f][n]] > 0)
			n++;
		if (n < 4 && terms[f][n] >= 0)
			continue;	/* a term with no data */
		memset(m, 0, sizeof(m));
		memset(v, 0, sizeof(v));
		for (uint32_t k = 0; k < nb; k++) {
			double all[4] = { 1, pd[k].pre, pd[k].sq, pd[k].dec },
			       x[4];

			if (!pd[k].pre && !pd[k].dec)
				continue;
			for (int r = 0; r < n; r++)
				x[r] = all[terms[f][r]] / scale[terms[f][r]];
			for (int r = 0; r < n; r++) {
				for (int c = 0; c < n; c++)
					m[r][c] += x[r] * x[c];
				v[r] += x[r] * busy[k];
			}
		}
		if (!solve(n, m, v))
			continue;
		memset(w, 0, sizeof(*w));
		for (int r = 0; r < n; r++)
			w->c[terms[f][r]] = v[r] / scale[terms[f][r]];
		return true;
	}
	return false;
}

/* The line under the bursts' present placement (u[].late). */
static bool work_model(const struct burst *u, uint32_t nu, const double *busy,
		       uint32_t nb, struct work *pd, struct work_line *w)
{
	memset(pd, 0, (size_t)nb * sizeof(*pd));
	for (uint32_t j = 0; j < nu; j++)
		if (u[j].late >= 0)
			work_add(&pd[u[j].late], &u[j].w, 1);
	return fit_line(pd, busy, nb, w);
}

/* One way to place a burst: at step k, with the cost of the steps before
 * k, and the work of the bursts that share step k so far. */
struct place {
	int64_t k;
	double cost;
	struct work w;
	int64_t from;		/* the place of the burst before, -1: none */
	uint32_t burst;
};

/* The best way to reach place q of burst uj from the places of the burst
 * before it (from[0..nfrom), numbered from base); sharing a step costs
 * `share`. */
static void align_from(const struct place *from, int64_t nfrom, int64_t base,
		       const struct burst *uj, const struct work_line *w,
		       const double *busy, const double *empty, double share,
		       struct place *q)
{
	q->cost = INFINITY;
	q->from = -1;
	for (int64_t c = 0; c < nfrom; c++) {
		const struct place *p = &from[c];
		double cost;

		if (p->k > q->k)
			continue;
		if (p->k == q->k)
			cost = p->cost + share;
		else
			cost = p->cost + step_err(w, busy, p->k, &p->w) +
			       empty[q->k] - empty[p->k + 1];
		if (cost < q->cost) {
			q->cost = cost;
			q->w = uj->w;
			if (p->k == q->k)
				work_add(&q->w, &p->w, 1);
			q->from = base + c;
		}
	}
}

/* The steps burst j may be placed at: [*lo, its latest], latest first;
 * not before the first step a request it prefilled could take part in. */
static int64_t align_window(const struct burst *uj, int64_t *lo)
{
	int64_t hi = uj->latest;
	int64_t low = hi - (ALIGN_LAG_MAX - 1);

	if (low < uj->earliest)
		low = uj->earliest;
	if (low > hi)
		low = hi;		/* written before it arrived: hi alone */
	*lo = low < 0 ? 0 : low;
	return hi;
}

/*
 * Each burst at its latest step or up to ALIGN_LAG_MAX - 1 steps before
 * it, never before an arrival it prefilled, in order, two sharing a step
 * only when there is no other way (at a cost above any placement's). The
 * placement under which the steps' busy times are best told by their
 * work (least squares under a line fitted to the present placement; a
 * step without writes is told by the fixed cost). Sets u[].late to it;
 * leaves u[].late when nothing fits. 1 when a burst moved, 0 when none
 * did, or -ENOMEM.
 */
static int bursts_align(struct burst *u, uint32_t nu, uint32_t nb,
			const double *busy)
{
	int64_t *off = malloc(((size_t)nu + 1) * sizeof(*off));
	struct work *pd = malloc(((size_t)nb + 1) * sizeof(*pd));
	double *empty = malloc(((size_t)nb + 1) * sizeof(*empty));
	struct place *pl = NULL;
	struct work_line w;
	int64_t prev = -1, best = -1, moved = 0;
	double best_cost = INFINITY, share;
	int err = -ENOMEM;

	if (!off || !pd || !empty)
		goto out;
	err = 0;
	if (!work_model(u, nu, busy, nb, pd, &w))
		goto out;
	off[0] = 0;
	for (uint32_t j = 0; j < nu; j++) {
		int64_t lo, hi = align_window(&u[j], &lo);

		off[j + 1] = off[j] + (hi >= 0 ? hi - lo + 1 : 0);
	}
	pl = malloc(((size_t)off[nu] + 1) * sizeof(*pl));
	if (!pl) {
		err = -ENOMEM;
		goto out;
	}
	empty[0] = 0;
	for (uint32_t k = 0; k < nb; k++)
		empty[k + 1] = empty[k] + sq(busy[k] - w.c[0]);
	share = empty[nb] + 1;
	for (uint32_t j = 0; j < nu; j++) {
		int64_t lo, hi = align_window(&u[j], &lo), n = 0;
		struct place *q = pl + off[j];

		for (int64_t k = hi; k >= 0 && k >= lo; k--) {
			struct place *x = &q[n];

			x->k = k;
			x->burst = j;
			if (prev < 0) {
				x->cost = empty[k];
				x->w = u[j].w;
				x->from = -1;
			} else {
				align_from(pl + off[prev], off[prev + 1] -
					   off[prev], off[prev], &u[j], &w,
					   busy, empty, share, x);
			}
			/* of two equal placements, the later one */
			x->cost += 1e-9 * (double)(hi - k) * (empty[nb] + 1);
			if (isfinite(x->cost))
				n++;
		}
		off[j + 1] = off[j] + n;	/* the places that can be had */
		if (n)
			prev = j;
	}
	if (prev < 0)
		goto out;
	for (int64_t c = off[prev]; c < off[prev + 1]; c++) {
		const struct place *p = &pl[c];
		double cost = p->cost + step_err(&w, busy, p->k, &p->w) +
			      empty[nb] - empty[p->k + 1];

		if (cost < best_cost) {
			best_cost = cost;
			best = c;
		}
	}
	for (int64_t i = best, j = nu; i >= 0; i = pl[i].from) {
		while (--j > pl[i].burst)
			moved += u[j].late != -1, u[j].late = -1;
		moved += u[j].late != pl[i].k;
		u[j].late = pl[i].k;
		if (pl[i].from < 0)
			while (j-- > 0)
				moved += u[j].late != -1, u[j].late = -1;
	}
	err = moved > 0;
out:
	free(pl);
	free(pd);
	free(empty);
	free(off);
	return err;
}

/* The work of token t: its prompt's prefill, or one decode. */
static struct work tok_work(const struct steps_input *in, const struct tok *t)
{
	const struct tt_request *q = &in->reqs[t->req];
	double p = q->prompt_tokens > 0 ? (double)q->prompt_tokens : 1;

	if (t->index)
		return (struct work){ 0, 0, 1 };
	return (struct work){ p, p * p, 0 };
}

/*
 * The latest step each token can have come from. Token i of a request is
 * written after the copy of its step, so its step is at most hi_i, the
 * last step whose copy ended before the write; and a running request gets
 * one token a step, or fewer (an event that carries several, a pause),
 * never more, so step_i - i does not decrease along the request. The
 * latest steps that keep both are step_i = i + min over k >= i of
 * (hi_k - k): one write on time pulls every earlier late one of its
 * request back to its step, whatever thread wrote them and whenever.
 * Tokens are then grouped by that step, one burst per step that has
 * any (t[].step: the burst; -1 before the first copy); rank[k] is step
 * k's burst (UINT32_MAX: none). Returns how many.
 */
static uint32_t chain_bursts(const struct steps_input *in, struct tok *t,
			     size_t n, const uint64_t *b, uint32_t nb,
			     size_t *order, int64_t *d, uint32_t *rank,
			     uint32_t *at)
{
	size_t kb = 0;
	uint32_t nu = 0;

	/* order: t's indexes by request, each request's in time order */
	memset(at, 0, ((size_t)in->nreqs + 1) * sizeof(*at));
	for (size_t i = 0; i < n; i++)
		at[t[i].req + 1]++;
	for (uint32_t q = 0; q < in->nreqs; q++)
		at[q + 1] += at[q];
	for (size_t i = 0; i < n; i++) {
		while (kb < nb && b[kb] <= t[i].ns)
			kb++;
		d[i] = (int64_t)kb - 1 - (int64_t)t[i].index;
		order[at[t[i].req]++] = i;
	}
	/* at[q] is now the end of request q's run: walk each backwards */
	for (uint32_t q = 0, beg = 0; q < in->nreqs; beg = at[q++]) {
		int64_t low = INT64_MAX;

		for (uint32_t j = at[q]; j-- > beg;) {
			size_t i = order[j];

			if (d[i] < low)
				low = d[i];
			t[i].step = low + (int64_t)t[i].index;
		}
	}
	for (uint32_t k = 0; k < nb; k++)
		rank[k] = 0;
	for (size_t i = 0; i < n; i++)
		if (t[i].step >= 0 && t[i].step < nb)
			rank[t[i].step] = 1;
		else
			t[i].step = -1;
	for (uint32_t k = 0; k < nb; k++)
		rank[k] = rank[k] ? nu++ : UINT32_MAX;
	for (size_t i = 0; i < n; i++)
		if (t[i].step >= 0)
			t[i].step = rank[t[i].step];
	return nu;
}

/*
 * A burst moves as one, so a request whose every write came late (a short
 * one, its thread stalled) keeps its prefill in a step after the one that
 * did it, which the others' writes place right. Each prefill is then
 * tried up to ALIGN_LAG_MAX - 1 steps earlier on its own (not before its
 * arrival), and moved where the line fitted on the placement tells the
 * two steps' time better by more than the square of its cost: a prefill
 * of cost c moved from a step without it to the one with it takes 2 c^2
 * off the squared error, one moved off its right step adds about that.
 */
static int refine_prefills(const struct steps_input *in,
			   const struct steps_result *r, struct tok *t,
			   size_t n, const uint64_t *b, uint32_t nb,
			   const double *busy, const uint32_t *chunks)
{
	struct work *pd = calloc((size_t)nb + 1, sizeof(*pd));
	struct work_line w;

	if (!pd)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		struct work x = tok_work(in, &t[i]);

		if (t[i].step >= 0)
			work_add(&pd[t[i].step], &x, 1);
	}
	if (!fit_line(pd, busy, nb, &w))
		goto out;
	for (size_t i = 0; i < n; i++) {
		const struct tt_request *q = &in->reqs[t[i].req];
		struct work x = tok_work(in, &t[i]), here, there;
		int64_t s = t[i].step, best = s;
		int64_t low = admit_step(in, r, b, nb, q->arrival_ns);

		if (t[i].index || s < 0 || (chunks && chunks[t[i].req] > 1))
			continue;
		if (low < s - (ALIGN_LAG_MAX - 1))
			low = s - (ALIGN_LAG_MAX - 1);
		here = pd[s];
		work_add(&here, &x, -1);
		double gain = sq(w.c[1] * x.pre + w.c[2] * x.sq),
		       off = step_err(&w, busy, s, &pd[s]) -
			     step_err(&w, busy, s, &here);

		for (int64_t k = s - 1; k >= low && k >= 0; k--) {
			there = pd[k];
			work_add(&there, &x, 1);
			double g = off + step_err(&w, busy, k, &pd[k]) -
				   step_err(&w, busy, k, &there);

			if (g > gain) {
				gain = g;
				best = k;
			}
		}
		if (best == s)
			continue;
		work_add(&pd[s], &x, -1);
		work_add(&pd[best], &x, 1);
		t[i].step = best;
	}
out:
	free(pd);
	return 0;
}

struct chunking {
	uint32_t tokens;	/* C; 0: not chunked */
	uint32_t *n;		/* per request: chunks placed (0, 1: none) */
};

static int find_chunking(const struct steps_input *in,
			 const struct steps_result *r, const struct tok *t,
			 size_t nt, const uint64_t *b, uint32_t nb,
			 struct chunking *ch);

static int tokens_after_copies(const struct steps_input *in,
			       const struct steps_result *r, struct tok *t,
			       size_t n, const uint64_t *b, uint32_t nb)
{
	double *busy = malloc((nb ? nb : 1) * sizeof(*busy));
	size_t *order = malloc((n ? n : 1) * sizeof(*order));
	int64_t *d = malloc((n ? n : 1) * sizeof(*d));
	uint32_t *rank = malloc((nb ? nb : 1) * sizeof(*rank));
	uint32_t *at = malloc(((size_t)in->nreqs + 1) * sizeof(*at));
	struct burst *u = NULL;
	struct chunking ch = { 0 };
	uint32_t nu = 0;
	int err = -ENOMEM;

	if (!busy || !order || !d || !rank || !at)
		goto out;
	nu = chain_bursts(in, t, n, b, nb, order, d, rank, at);
	u = calloc(nu ? nu : 1, sizeof(*u));
	if (!u)
		goto out;
	for (uint32_t k = 0; k < nb; k++)
		if (rank[k] != UINT32_MAX)
			u[rank[k]].latest = u[rank[k]].late = k;
	for (size_t i = 0; i < n; i++) {
		const struct tt_request *q = &in->reqs[t[i].req];
		struct work wk = tok_work(in, &t[i]);
		struct burst *x;

		if (t[i].step < 0)
			continue;
		x = &u[t[i].step];
		work_add(&x->w, &wk, 1);
		if (!t[i].index && q->arrival_ns > x->arrival_ns)
			x->arrival_ns = q->arrival_ns;
	}
	for (uint32_t j = 0; j < nu; j++)
		u[j].earliest = u[j].arrival_ns ?
			admit_step(in, r, b, nb, u[j].arrival_ns) : 0;
	for (uint32_t k = 0; k < nb; k++)
		busy[k] = (double)steps_busy_in(r->busy, r->nbusy,
						k ? b[k - 1] : in->start_ns,
						b[k]);
	/* An engine that prefills in chunks has steps of first chunks
	 * alone, with no write after them, which the line would fill with
	 * the bursts after them: its writes stay in the steps they fell in
	 * (the chunks, placed later, explain the steps before). */
	if (!in->no_chunks) {
		for (size_t i = 0; i < n; i++)
			if (t[i].step >= 0)
				t[i].step = u[t[i].step].latest;
		err = find_chunking(in, r, t, n, b, nb, &ch);
		if (err || ch.tokens)
			goto refine;
		for (size_t i = 0; i < n; i++)
			if (t[i].step >= 0)
				t[i].step = rank[t[i].step];
	}
	/* the line is fitted again on each placement until none moves: a
	 * stalled writer puts prefills in cheap steps, which flattens the
	 * first line */
	err = 1;
	for (int round = 0; err == 1 && round < ALIGN_ROUNDS; round++)
		err = bursts_align(u, nu, nb, busy);
	if (err > 0)
		err = 0;
	for (size_t i = 0; !err && i < n; i++)
		if (t[i].step >= 0)
			t[i].step = u[t[i].step].late;
refine:
	/* a prompt prefilled in chunks ends in its first token's step: the
	 * chunks before explain the steps it would move to */
	if (!err)
		err = refine_prefills(in, r, t, n, b, nb, busy, ch.n);
out:
	free(ch.n);
	free(u);
	free(busy);
	free(order);
	free(d);
	free(rank);
	free(at);
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
 * Chunked prefill. An engine that prefills a long prompt a chunk a step
 * writes its first token only after the last chunk: the wire shows the
 * request in one step, though it took part in several. It is told by the
 * wait from a request's arrival to its first token (in steps): without
 * chunks that wait does not depend on the prompt's length (a request
 * queues behind others whatever its length), with chunks of C tokens it
 * is at least ceil(P / C). When the longer half of the prompts waits at
 * least CHUNK_MIN_EXTRA_STEPS steps more on average than the shorter
 * half and most of the longer half wait two steps or more, the prompts
 * are taken as chunked. The wait counts a step whose work had not begun
 * at arrival, so it is seldom less than the chunks: C >= P / wait, with
 * near equality for the requests admitted at once, whose P / wait pile
 * up just under C. C is the top of that pile: the largest P / wait with
 * CHUNK_PILE of all (at least 3) within CHUNK_PILE_SPAN below it. The
 * largest P / wait alone is not C: a wait one step short (a first token
 * seen a step early, steps the wire cannot see) gives one well above,
 * and on the reference server's chunks of 64 cut from tokens a handful
 * of such requests made it 159. Engines set their chunk budgets in round
 * numbers, so C is taken to the nearest multiple of 16 within
 * CHUNK_PILE_SPAN of it (the top of the pile is a little under C where
 * few requests were admitted at once: 253 for 256, 29 for 32 is left).
 * Each such request is placed in the ceil(P / C) steps that end with its
 * first token (no more than it waited): C tokens in each but the last,
 * which has the rest. Anything less is not chunking: nothing is placed,
 * and the steps are what they were. The report keeps the chunks only
 * where the cost model fitted on them explains the steps' time better
 * (user/report.c, find_steps).
 *
 * Steps cut from the token writes cannot see a step of first chunks
 * alone (no token follows it: the first steps of a run, or after an idle
 * spell, when every running request is prefilling); its time falls in
 * the next step that writes. A request whose chunks outnumber the steps
 * it was seen waiting is placed from the step in progress at its arrival
 * too, and the chunks no step shows are taken in its first placed step
 * (entry_of), where their time went: on the reference server's chunks of
 * 64 cut from tokens, the first requests of a run were charged -40% to
 * +300% of their share before.
 */
#define CHUNK_MIN_EXTRA_STEPS	1.0
#define CHUNK_MIN_LONG_WAITING	0.5
#define CHUNK_MIN_REQUESTS	8
#define CHUNK_PILE		0.1
#define CHUNK_PILE_SPAN		0.05
#define CHUNK_ROUND		16

struct chunk_req {
	uint32_t req, prompt, wait, k;
};

static int cmp_prompt(const void *a, const void *b)
{
	const struct chunk_req *x = a, *y = b;

	if (x->prompt != y->prompt)
		return x->prompt < y->prompt ? -1 : 1;
	return x->req < y->req ? -1 : x->req > y->req;
}

/* The prompt tokens a request prefills (its cached ones not). */
static uint32_t prefill_tokens(const struct tt_request *q)
{
	uint32_t p = q->prompt_tokens > 0 ? (uint32_t)q->prompt_tokens : 0;

	if (q->cached_source != TT_CACHED_NONE && q->cached_tokens > 0 &&
	    (uint64_t)q->cached_tokens < p)
		p -= (uint32_t)q->cached_tokens;
	return p;
}

/* The chunk size from the requests' P / wait, sorted (see above); 0 for
 * none. */
static uint32_t pile_top(const double *ratio, size_t k)
{
	size_t need = (size_t)(CHUNK_PILE * k), lo = k;

	if (need < 3)
		need = 3;
	for (size_t i = k; i-- > 0;) {
		double floor_i = (1 - CHUNK_PILE_SPAN) * ratio[i];

		while (lo > 0 && ratio[lo - 1] >= floor_i)
			lo--;
		if (i + 1 - lo < need)
			continue;
		double r = round(ratio[i] / CHUNK_ROUND) * CHUNK_ROUND;

		if (r > 0 && fabs(r - ratio[i]) <= CHUNK_PILE_SPAN * ratio[i])
			return (uint32_t)r;
		return (uint32_t)ceil(ratio[i]);
	}
	return 0;
}

/* Decide on chunking from the tokens t (marked with their steps, bounds
 * b); ch->n is allocated when it is chunked. 0 or -ENOMEM. */
static int find_chunking(const struct steps_input *in,
			 const struct steps_result *r, const struct tok *t,
			 size_t nt, const uint64_t *b, uint32_t nb,
			 struct chunking *ch)
{
	struct chunk_req *c = malloc((in->nreqs ? in->nreqs : 1) * sizeof(*c));
	double *ratio = NULL;
	size_t n = 0;
	int err = 0;

	memset(ch, 0, sizeof(*ch));
	if (!c)
		return -ENOMEM;
	for (size_t i = 0; i < nt; i++) {
		const struct tt_request *q = &in->reqs[t[i].req];
		uint32_t p = prefill_tokens(q);
		int64_t a;
		uint64_t w;

		if (t[i].index || t[i].step < 0 || !p)
			continue;
		/* steps after the one in progress at arrival, to the first
		 * token's: 1 when admitted at once, without chunks; a step
		 * whose work had not begun at arrival may hold it */
		a = admit_step(in, r, b, nb, q->arrival_ns);
		w = t[i].step >= a ? (uint64_t)(t[i].step - a) + 1 : 1;
		c[n++] = (struct chunk_req){ t[i].req, p, (uint32_t)w,
					     (uint32_t)t[i].step };
	}
	if (n < CHUNK_MIN_REQUESTS)
		goto out;
	qsort(c, n, sizeof(*c), cmp_prompt);
	double shorter = 0, longer = 0, waiting = 0;
	size_t half = n / 2;

	for (size_t i = 0; i < half; i++)
		shorter += c[i].wait;
	for (size_t i = n - half; i < n; i++) {
		longer += c[i].wait;
		waiting += c[i].wait >= 2;
	}
	if (longer / half - shorter / half < CHUNK_MIN_EXTRA_STEPS ||
	    waiting / half < CHUNK_MIN_LONG_WAITING)
		goto out;
	ratio = malloc(n * sizeof(*ratio));
	if (!ratio) {
		err = -ENOMEM;
		goto out;
	}
	size_t k = 0;

	for (size_t i = 0; i < n; i++)
		if (c[i].wait >= 2)
			ratio[k++] = (double)c[i].prompt / c[i].wait;
	qsort(ratio, k, sizeof(*ratio), cmp_double);
	ch->tokens = pile_top(ratio, k);
	if (!ch->tokens)
		goto out;
	ch->n = calloc(in->nreqs, sizeof(*ch->n));
	if (!ch->n) {
		err = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		uint32_t want = (c[i].prompt + ch->tokens - 1) / ch->tokens;
		uint32_t wait = c[i].wait;

		/* unseen steps of chunks alone: from the one at arrival */
		if (r->source == STEPS_FROM_TOKENS && want > wait &&
		    c[i].k >= wait)
			wait++;
		ch->n[c[i].req] = want < wait ? want : wait;
	}
out:
	free(ratio);
	free(c);
	return err;
}

/* Room for place_chunks: the chunks before each request's last. */
static size_t chunk_room(const struct steps_input *in,
			 const struct chunking *ch)
{
	size_t room = 0;

	for (uint32_t i = 0; ch->n && i < in->nreqs; i++)
		room += ch->n[i] > 1 ? ch->n[i] - 1 : 0;
	return room;
}

/* The chunks before each request's first token, in the steps before its
 * own; t has room for them. Returns the new count. */
static size_t place_chunks(const struct steps_input *in, const uint64_t *b,
			   struct tok *t, size_t n, const struct chunking *ch)
{
	size_t end = n;

	for (size_t i = 0; ch->n && i < end; i++) {
		uint32_t m = ch->n[t[i].req];

		if (t[i].index || t[i].step < 0 || m < 2)
			continue;
		for (uint32_t j = 0; j + 1 < m; j++) {
			int64_t step = t[i].step - (int64_t)(m - 1 - j);

			if (step < 0)
				continue;
			t[n++] = (struct tok){ .ns = b[step], .req = t[i].req,
					       .index = TOK_CHUNK | j,
					       .step = step };
		}
	}
	(void)in;
	return n;
}

/*
 * What a request's token event says it did. A prompt served in part from
 * a prefix cache prefills only the rest, attending over the cached part.
 */
static struct attr_entry entry_of(const struct tt_request *r,
				  const struct tok *t, const struct chunking *ch)
{
	uint32_t prompt = r->prompt_tokens > 0 ? (uint32_t)r->prompt_tokens : 0;
	uint32_t cached = r->cached_source != TT_CACHED_NONE &&
			  r->cached_tokens > 0 &&
			  (uint64_t)r->cached_tokens < prompt ?
			  (uint32_t)r->cached_tokens : 0;
	struct attr_entry e = { .request = t->req };
	uint32_t n = ch && ch->n ? ch->n[t->req] : 0, unseen = 0;

	if (n > 1) {	/* chunks in no step seen: in the first placed */
		uint32_t want = (prompt - cached + ch->tokens - 1) /
				ch->tokens;

		unseen = want > n ? want - n : 0;
	}
	if (t->index & TOK_CHUNK) {
		/* chunk j of n: chunk_tokens each but the last, the first
		   with the unseen ones */
		uint32_t j = t->index & ~TOK_CHUNK;

		e.phase = ATTR_PREFILL;
		e.chunk = 1;
		e.tokens = (j ? 1 : 1 + unseen) * ch->tokens;
		e.context = cached + (j ? j + unseen : 0) * ch->tokens;
	} else if (t->index == 0 && n > 1) {
		/* the last chunk, with the first token */
		e.phase = ATTR_PREFILL;
		e.chunk = 1;
		e.tokens = prompt - cached - (n - 1 + unseen) * ch->tokens;
		e.context = cached + (n - 1 + unseen) * ch->tokens;
	} else if (t->index == 0) {
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

/* Within a step: by request, then index. */
static void sort_group(struct tok *t, size_t n)
{
	if (n > 64) {
		qsort(t, n, sizeof(*t), cmp_tok_step);
		return;
	}
	for (size_t i = 1; i < n; i++) {
		struct tok x = t[i];
		size_t j = i;

		for (; j > 0 && cmp_tok_step(&t[j - 1], &x) > 0; j--)
			t[j] = t[j - 1];
		t[j] = x;
	}
}

/* t[0..n) in (step, req, index) order, as cmp_tok_step orders them: one
 * radix sort on (step + 1) * (most req + 1) + req kept in the step field
 * (tokens of no step keep key 0 and their order, first), then each
 * (step, req) run put in index order (a request's tokens come in time
 * order, so its runs are in index order already but for equal or
 * backward clocks). */
static void sort_by_step(struct tok *t, size_t n)
{
	int64_t top = -1;
	uint64_t reqs = 1;
	int err;

	for (size_t i = 0; i < n; i++) {
		top = t[i].step > top ? t[i].step : top;
		reqs = t[i].req >= reqs ? (uint64_t)t[i].req + 1 : reqs;
	}
	if ((uint64_t)top + 2 > (uint64_t)INT64_MAX / reqs) {
		/* no room to pack: by step, then each step's few by request */
		for (size_t i = 0; i < n; i++)
			t[i].step++;
		err = sort_by_u64(t, n, sizeof(*t), offsetof(struct tok, step));
		for (size_t i = 0; i < n; i++)
			t[i].step--;
		if (err) {
			qsort(t, n, sizeof(*t), cmp_tok_step);
			return;
		}
		for (size_t i = 0, j; i < n; i = j) {
			for (j = i + 1; j < n && t[j].step == t[i].step; j++)
				;
			if (t[i].step >= 0)
				sort_group(t + i, j - i);
		}
		return;
	}
	for (size_t i = 0; i < n; i++)
		t[i].step = t[i].step < 0 ? 0 :
			    (t[i].step + 1) * (int64_t)reqs + t[i].req;
	err = sort_by_u64(t, n, sizeof(*t), offsetof(struct tok, step));
	for (size_t i = 0; i < n; i++)
		t[i].step = t[i].step / (int64_t)reqs - 1;
	if (err) {
		qsort(t, n, sizeof(*t), cmp_tok_step);
		return;
	}
	for (size_t i = 1; i < n; i++) {
		struct tok x = t[i];
		size_t j = i;

		if (x.step < 0)
			continue;
		for (; j > 0 && t[j - 1].step == x.step &&
		       t[j - 1].req == x.req && t[j - 1].index > x.index; j--)
			t[j] = t[j - 1];
		t[j] = x;
	}
}

/* Entries from tokens sorted by step: one per request and step. */
static int build_entries(const struct steps_input *in, struct tok *t,
			 size_t n, struct steps_result *r,
			 const struct chunking *ch)
{
	size_t cap = n ? n : 1;

	r->entries = malloc(cap * sizeof(*r->entries));
	r->entry_token_ns = malloc(cap * sizeof(uint64_t));
	r->entry_prev_ns = malloc(cap * sizeof(uint64_t));
	if (!r->entries || !r->entry_token_ns || !r->entry_prev_ns)
		return -ENOMEM;
	sort_by_step(t, n);
	for (size_t i = 0; i < n; i++) {
		if (t[i].step < 0)
			continue;
		if (i && t[i - 1].step == t[i].step && t[i - 1].req == t[i].req)
			continue;
		const struct tt_request *q = &in->reqs[t[i].req];
		struct steps_step *s = &r->steps[t[i].step];
		uint32_t e = r->nentries++;
		r->entries[e] = entry_of(q, &t[i], ch);
		r->entry_token_ns[e] = t[i].ns;
		r->entry_prev_ns[e] = t[i].index && !(t[i].index & TOK_CHUNK) &&
				      q->token_ns &&
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
	if (sort_u64(arr, n))
		qsort(arr, n, sizeof(*arr), cmp_u64);
	if (sort_u64(end, n))
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
		/* the probe shows where the step function ran: the
		 * engine's time between its calls (handing tokens out,
		 * taking requests in) is no forward pass, and stays
		 * unattributed */
		if (r->source == STEPS_FROM_PROBE)
			s->start_ns = work_start(in, r, s->start_ns, s->end_ns);
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
				false);
	if (in->source != STEPS_FROM_TOKENS &&
	    in->source != STEPS_FROM_PROBE) {
		err = copy_bounds(in, bounds, nb);
		if (err)
			goto out;
		r->copies = *nb;
		if (in->source == STEPS_FROM_COPIES ||
		    (*nb >= 2 && *nb * COPY_MIN_BURST_SHARE >= r->bursts)) {
			r->source = STEPS_FROM_COPIES;
			err = tokens_after_copies(in, r, t, nt, *bounds, *nb);
			goto out;
		}
		free(*bounds);
	}
	if (in->source == STEPS_FROM_PROBE ||
	    (in->source == STEPS_AUTO && in->nprobe >= 2)) {
		err = probe_bounds(in, bounds, nb);
		if (err)
			goto out;
		r->source = STEPS_FROM_PROBE;
		err = tokens_after_copies(in, r, t, nt, *bounds, *nb);
		goto out;
	}
	r->source = STEPS_FROM_TOKENS;
	*bounds = malloc((r->bursts ? r->bursts : 1) * sizeof(uint64_t));
	if (!*bounds) {
		err = -ENOMEM;
		goto out;
	}
	*nb = find_bursts(t, nt, r->burst_gap_ns, last, in->nreqs, *bounds,
			  true);
out:
	free(last);
	return err;
}

/*
 * The batches the step probe read (llama_decode's, in->seqs) make each
 * step's entries exact: a sequence's run of tokens up to its first output
 * is a prefill chunk of that many tokens at context pos, an output run
 * after it one decode (or a few, speculated) at context pos + its tokens
 * (the tokens fed in count, as in entry_of). A sequence's session (one
 * request on one llama-server slot) begins where its positions do not
 * follow on from its last run, or with a prefill after outputs. The
 * session is the request whose first token was written first after the
 * session's first output, within two steps, among those that had arrived
 * when the session began: first among the requests with the session's
 * prompt length, then among the rest. Steps without a batch, and requests
 * tied to no session, keep the entries of their token writes; a session
 * tied to no request (a warm-up, a client not seen) leaves its share of
 * its steps unattributed. A sequence first seen decoding (the probe came
 * on mid-request) is the request then in flight whose tokens so far put
 * its decode at that position.
 */
#define BATCH_SCAN	64	/* candidates looked at per session */
#define BATCH_NONE	UINT32_MAX

struct sess {
	uint32_t first_step, out_step;	/* out_step: its first output */
	uint32_t prompt;		/* positions up to that output */
	uint32_t prefill_runs;
	uint32_t req;
	int32_t pos;			/* of its first run */
	bool joined;			/* first seen decoding: its request
					   was in flight before the probe */
};

struct seq_state {
	int32_t seq;
	int64_t next_pos;
	bool had_out;
	uint32_t sess;
};

struct batch_work {
	uint32_t *run_sess, *run_step;	/* per in->seqs entry */
	struct sess *sess;
	uint32_t nsess;
	struct seq_state *st;
	uint32_t nst, capst;
	uint32_t *cand;			/* requests by first token */
	uint32_t ncand;
	bool *tied;			/* per request */
};

static uint64_t first_token_of(const struct steps_input *in, uint32_t q)
{
	return in->reqs[q].token_ns[0];
}

static int cmp_cand(const void *a, const void *b, void *ctx)
{
	const struct steps_input *in = ctx;
	uint64_t x = first_token_of(in, *(const uint32_t *)a);
	uint64_t y = first_token_of(in, *(const uint32_t *)b);

	return x < y ? -1 : x > y;
}

static struct seq_state *seq_state_of(struct batch_work *w, int32_t seq)
{
	for (uint32_t i = 0; i < w->nst; i++)
		if (w->st[i].seq == seq)
			return &w->st[i];
	if (w->nst == w->capst) {
		uint32_t cap = w->capst ? 2 * w->capst : 64;
		struct seq_state *p = realloc(w->st, cap * sizeof(*p));

		if (!p)
			return NULL;
		w->st = p;
		w->capst = cap;
	}
	w->st[w->nst] = (struct seq_state){ .seq = seq, .next_pos = -1,
					   .sess = BATCH_NONE };
	return &w->st[w->nst++];
}

/* Each run's step and session. 0 or -ENOMEM. */
static int batch_sessions(const struct steps_input *in,
			  const struct steps_result *r, struct batch_work *w)
{
	size_t j = 0;

	for (uint32_t k = 0; k < r->nsteps; k++) {
		uint64_t e = r->steps[k].end_ns;

		for (; j < in->nseqs && in->seqs[j].end_ns < e; j++)
			w->run_step[j] = BATCH_NONE;
		for (; j < in->nseqs && in->seqs[j].end_ns == e; j++) {
			const struct steps_seq *u = &in->seqs[j];
			struct seq_state *q = seq_state_of(w, u->seq);

			if (!q)
				return -ENOMEM;
			w->run_step[j] = k;
			if (q->sess == BATCH_NONE || u->pos < 0 ||
			    u->pos != q->next_pos ||
			    (q->had_out && u->out < u->tokens)) {
				w->sess[w->nsess] = (struct sess){
					.first_step = k, .out_step = BATCH_NONE,
					.req = BATCH_NONE, .pos = u->pos,
					/* a sequence not seen before, decoding */
					.joined = q->sess == BATCH_NONE &&
						  u->pos > 0 && u->out &&
						  u->out == u->tokens };
				q->sess = w->nsess++;
				q->had_out = false;
			}
			struct sess *z = &w->sess[q->sess];

			w->run_sess[j] = q->sess;
			q->next_pos = u->pos < 0 ? -1 : (int64_t)u->pos + u->tokens;
			if (z->out_step == BATCH_NONE) {
				z->prefill_runs++;
				if (u->out) {
					z->out_step = k;
					z->prompt = u->pos < 0 ? 0 :
						    (uint32_t)u->pos + u->tokens;
				}
			}
			q->had_out |= u->out > 0;
		}
	}
	for (; j < in->nseqs; j++)
		w->run_step[j] = BATCH_NONE;
	return 0;
}

/* Session z's request: the first untied one whose first token followed
 * z's first output within two steps, arrived when z began, and (exact)
 * with z's prompt length. */
static void tie_one(const struct steps_input *in, const struct steps_result *r,
		    struct batch_work *w, struct sess *z, bool exact)
{
	uint64_t t = r->steps[z->out_step].end_ns;
	uint64_t began = r->steps[z->first_step].end_ns;
	uint64_t limit = z->out_step + 2 < r->nsteps ?
			 r->steps[z->out_step + 2].end_ns : UINT64_MAX;
	uint32_t lo = 0, hi = w->ncand, seen = 0;

	if (z->req != BATCH_NONE)
		return;
	while (lo < hi) {
		uint32_t m = lo + (hi - lo) / 2;

		if (first_token_of(in, w->cand[m]) < t)
			lo = m + 1;
		else
			hi = m;
	}
	for (uint32_t c = lo; c < w->ncand && seen < BATCH_SCAN; c++) {
		uint32_t q = w->cand[c];

		if (first_token_of(in, q) > limit)
			break;
		if (w->tied[q] || in->reqs[q].arrival_ns > began)
			continue;
		seen++;
		if (!exact || in->reqs[q].prompt_tokens == (int64_t)z->prompt) {
			z->req = q;
			w->tied[q] = true;
			return;
		}
	}
}

/*
 * A session first seen decoding (its request began before the probe was
 * on, or before the trace): the request in flight then whose tokens so
 * far say it decodes at that position, prompt + tokens written - 1.
 */
static bool tie_joined(const struct steps_input *in,
		       const struct steps_result *r, struct batch_work *w,
		       struct sess *z)
{
	uint64_t t = r->steps[z->first_step].end_ns;

	for (uint32_t i = 0; i < w->ncand; i++) {
		const struct tt_request *q = &in->reqs[w->cand[i]];
		uint32_t k = 0;

		if (q->token_ns[0] >= t)
			break;		/* by first token: none further */
		if (w->tied[w->cand[i]] || q->prompt_tokens <= 0 ||
		    q->token_ns[q->token_ns_len - 1] < t)
			continue;
		k = (uint32_t)count_le(q->token_ns, q->token_ns_len, t - 1);
		if (k < q->token_ns_len &&
		    (int64_t)z->pos == q->prompt_tokens + (int64_t)k - 1) {
			z->req = w->cand[i];
			w->tied[w->cand[i]] = true;
			return true;
		}
	}
	return false;
}

/* Ties sessions to requests (see above). 0 or -ENOMEM. */
static int batch_tie(const struct steps_input *in,
		     const struct steps_result *r, struct batch_work *w)
{
	uint64_t *order = malloc((w->nsess ? w->nsess : 1) * sizeof(*order));
	uint32_t n = 0;

	if (!order)
		return -ENOMEM;
	for (uint32_t i = 0; i < in->nreqs; i++)
		if (takes_part(in, i) && in->reqs[i].token_ns &&
		    in->reqs[i].token_ns_len)
			w->cand[w->ncand++] = i;
	qsort_r(w->cand, w->ncand, sizeof(*w->cand), cmp_cand, (void *)in);
	/* sessions by their first output, then as they began */
	for (uint32_t i = 0; i < w->nsess; i++)
		if (w->sess[i].out_step != BATCH_NONE)
			order[n++] = (uint64_t)w->sess[i].out_step << 32 | i;
	if (sort_u64(order, n))
		qsort(order, n, sizeof(*order), cmp_u64);
	for (uint32_t i = 0; i < w->nsess; i++)
		if (w->sess[i].joined && !tie_joined(in, r, w, &w->sess[i]))
			w->sess[i].joined = false;	/* a prompt of one token */
	for (int exact = 1; exact >= 0; exact--)
		for (uint32_t o = 0; o < n; o++)
			tie_one(in, r, w, &w->sess[(uint32_t)order[o]], exact);
	free(order);
	return 0;
}

static struct attr_entry batch_entry(const struct steps_seq *u,
				     const struct sess *z, uint32_t k)
{
	struct attr_entry e = {
		.request = z->req, .tokens = u->tokens,
		.context = u->pos > 0 ? (uint32_t)u->pos : 0,
	};

	if (!z->joined && (z->out_step == BATCH_NONE || k <= z->out_step)) {
		e.phase = ATTR_PREFILL;
		e.chunk = z->prefill_runs > 1;
	} else {
		/* as entry_of counts it: the token fed in is context */
		e.phase = ATTR_DECODE;
		e.context += u->tokens;
	}
	return e;
}

/* The entries again, from the batches where there are some. */
static int batch_entries(const struct steps_input *in, struct steps_result *r,
			 const struct batch_work *w)
{
	size_t cap = r->nentries + in->nseqs + 1, j = 0;
	struct attr_entry *e = malloc(cap * sizeof(*e));
	uint64_t *tok = malloc(cap * sizeof(*tok));
	uint64_t *prev = malloc(cap * sizeof(*prev));
	uint32_t n = 0;

	if (!e || !tok || !prev) {
		free(e);
		free(tok);
		free(prev);
		return -ENOMEM;
	}
	for (uint32_t k = 0; k < r->nsteps; k++) {
		struct steps_step *s = &r->steps[k];
		uint32_t first = n, of = s->first, on = s->n;
		bool batch = false;

		for (; j < in->nseqs && (w->run_step[j] == BATCH_NONE ||
					 w->run_step[j] < k); j++)
			;
		uint32_t held = 0;
		bool waited = false;

		for (; j < in->nseqs && w->run_step[j] == k; j++) {
			const struct sess *z = &w->sess[w->run_sess[j]];

			batch = true;
			held += in->seqs[j].tokens;
			/* a prompt's chunk that did not reach its output */
			waited |= !in->seqs[j].out && in->seqs[j].tokens > 0;
			if (z->req == BATCH_NONE)
				continue;
			e[n] = batch_entry(&in->seqs[j], z, k);
			tok[n] = prev[n] = 0;
			for (uint32_t i = of; i < of + on; i++)
				if (r->entries[i].request == z->req) {
					tok[n] = r->entry_token_ns[i];
					prev[n] = r->entry_prev_ns[i];
				}
			n++;
		}
		for (uint32_t i = of; i < of + on; i++) {
			if (batch && w->tied[r->entries[i].request])
				continue;
			e[n] = r->entries[i];
			tok[n] = r->entry_token_ns[i];
			prev[n++] = r->entry_prev_ns[i];
		}
		r->batch_steps += batch;
		if (waited && held > r->batch_budget)
			r->batch_budget = held;
		s->first = first;
		s->n = n - first;
		s->prefill_tokens = s->decode_tokens = 0;
		for (uint32_t i = first; i < n; i++) {
			if (e[i].phase == ATTR_PREFILL)
				s->prefill_tokens += e[i].tokens;
			else
				s->decode_tokens += e[i].tokens;
		}
	}
	free(r->entries);
	free(r->entry_token_ns);
	free(r->entry_prev_ns);
	r->entries = e;
	r->entry_token_ns = tok;
	r->entry_prev_ns = prev;
	r->nentries = n;
	return 0;
}

static int apply_batches(const struct steps_input *in, struct steps_result *r)
{
	struct batch_work w = { 0 };
	size_t ns = in->nseqs;
	int err = -ENOMEM;

	w.run_sess = malloc(ns * sizeof(*w.run_sess));
	w.run_step = malloc(ns * sizeof(*w.run_step));
	w.sess = malloc(ns * sizeof(*w.sess));
	w.cand = malloc((in->nreqs ? in->nreqs : 1) * sizeof(*w.cand));
	w.tied = calloc(in->nreqs ? in->nreqs : 1, sizeof(*w.tied));
	if (w.run_sess && w.run_step && w.sess && w.cand && w.tied)
		err = batch_sessions(in, r, &w);
	if (!err)
		err = batch_tie(in, r, &w);
	if (!err)
		err = batch_entries(in, r, &w);
	for (uint32_t i = 0; !err && i < w.nsess; i++)
		r->batch_requests += w.sess[i].req != BATCH_NONE;
	free(w.run_sess);
	free(w.run_step);
	free(w.sess);
	free(w.st);
	free(w.cand);
	free(w.tied);
	return err;
}

/* Room for n tokens in *t. 0 or -ENOMEM (*t kept). */
static int grow_toks(struct tok **t, size_t n)
{
	struct tok *p = realloc(*t, n * sizeof(*p));

	if (!p)
		return -ENOMEM;
	*t = p;
	return 0;
}

int steps_find(const struct steps_input *in, struct steps_result *r)
{
	struct chunking ch = { 0 };
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
		err = grow_toks(&t, nt + room);
		if (err)
			goto out;
		nt = place_unseen(in, bounds, nb, t, nt, r);
	}
	err = in->no_chunks ? 0 : find_chunking(in, r, t, nt, bounds, nb, &ch);
	room = err ? 0 : chunk_room(in, &ch);
	if (room) {
		err = grow_toks(&t, nt + room);
		if (err)
			goto out;
		nt = place_chunks(in, bounds, t, nt, &ch);
		r->chunk_tokens = ch.tokens;
	}
	if (!err)
		err = build_entries(in, t, nt, r, &ch);
	if (!err && r->source == STEPS_FROM_PROBE && in->nseqs)
		err = apply_batches(in, r);
	if (!err)
		err = finish_steps(in, r);
out:
	free(ch.n);
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
