/*
 * requests.c - the request tracker: connections' byte streams in, finished
 * inference requests out.
 *
 * In:  reqtrack_data() pieces per connection and direction (in order, with
 *      times and holes), reqtrack_lost(), reqtrack_close(), reqtrack_flush().
 * Out: opts.on_request(ctx, req) once per request (struct tt_request).
 *
 * Data: a hash table of connections by conn_id (chained, doubled when full).
 * Each connection holds an HTTP parser per direction and a FIFO of the
 * requests seen and not yet answered: responses answer requests in order,
 * which is what makes pipelining work. A request in the FIFO holds its
 * parsed fields, its token times and, only while it is read, its body
 * (request body up to BODY_MAX, parsed and dropped at its end; a non-streamed
 * response body the same). A streamed response (text/event-stream) goes
 * through an SSE parser and each event through api_parse_event; token
 * events append their time to a growing array.
 *
 * Times: arrival = the piece that held the request's first byte; first
 * token = the first token event (non-streamed: the response's first byte);
 * end = the piece that completed the response (the close for a client
 * gone). Token counts come from usage when the server gave it, else from
 * token events, else an estimate of 4 bytes of text per token.
 *
 * Assumes: one thread; conn_ids are unique while the collector runs.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api.h"
#include "http.h"
#include "requests.h"
#include "sse.h"
#include "tenant.h"

#define BODY_MAX	(1u << 20)	/* bytes of a body kept for JSON */
#define PENDING_MAX	64		/* requests awaiting responses */
#define BYTES_PER_TOKEN	4		/* for estimates */

struct rq {
	struct rq *next;
	struct tt_request r;
	enum api_kind api;
	bool req_done, resp_started, resp_done, no_body, sse;
	bool lost;		/* bytes missing: counts may be short */
	bool keep_body;		/* response body is JSON worth reading */
	bool body_cut;		/* body over BODY_MAX: not kept */
	bool holed;		/* body bytes missing from the capture */
	char *body;		/* request body, then response body */
	size_t blen, bcap;
	struct api_req areq;
	struct api_resp aresp;
	struct sse_parser sp;
	uint64_t *tok;
	uint32_t tcap;
	uint64_t resp_start_ns, last_out_ns;
	char hdr_tenant[64];
	bool has_hdr_tenant;
	char key_tenant[TT_NAME_MAX];
};

struct conn {
	struct conn *hnext;
	struct reqtrack *rt;
	struct tt_conn_meta meta;
	struct http_parser in, out;
	struct rq *head, *tail;
	unsigned npending;
	struct rq *in_cur;	/* request the IN parser is reading */
	struct rq *out_cur;	/* request whose response is being read */
	bool interim;		/* the response being read is a 1xx */
	bool is_http, non_http;
};

/* Prompt blocks seen, per process and model: a direct-mapped set of their
 * chained hashes (api.h), bounded: an entry overwrites whichever it maps
 * onto, so old prefixes are forgotten as a server's cache forgets them. */
#define SEEN_SLOTS	(1u << 20)

struct reqtrack {
	struct reqtrack_opts opts;
	struct conn **buckets;
	size_t nbuckets, nconns;
	struct reqtrack_stats st;
	uint64_t *seen;		/* [SEEN_SLOTS], 0 empty; made on first use */
	uint64_t *hashes;	/* [API_PREFIX_BLOCKS]: the request being read */
};

enum finish_why {
	FIN_RESPONSE,	/* the response ended */
	FIN_CLOSE,	/* the connection closed first */
	FIN_FLUSH,	/* the collector stops */
	FIN_LOST,	/* events lost: nothing more will be known */
};

/* ---- small helpers ------------------------------------------------------ */

static void copy_cstr(char *dst, size_t cap, const char *s)
{
	size_t n = strlen(s);

	if (n >= cap)
		n = cap - 1;
	memcpy(dst, s, n);
	dst[n] = '\0';
}

static void body_drop(struct rq *q)
{
	if (q->body)
		explicit_bzero(q->body, q->blen);
	free(q->body);
	q->body = NULL;
	q->blen = q->bcap = 0;
	q->body_cut = false;
}

static void body_add(struct rq *q, const char *p, size_t n)
{
	if (q->body_cut)
		return;
	if (q->blen + n > BODY_MAX) {
		q->body_cut = true;
		return;
	}
	if (q->blen + n > q->bcap) {
		size_t cap = q->bcap ? q->bcap : 1024;
		char *b;

		while (cap < q->blen + n)
			cap *= 2;
		b = realloc(q->body, cap);
		if (!b) {
			q->body_cut = true;
			return;
		}
		q->body = b;
		q->bcap = cap;
	}
	memcpy(q->body + q->blen, p, n);
	q->blen += n;
}

static void token_add(struct rq *q, uint64_t ts)
{
	uint32_t n = q->r.token_events++;

	if (n == 0)
		q->r.first_token_ns = ts;
	if (n >= TT_TOKEN_NS_MAX)
		return;
	if (n == q->tcap) {
		uint32_t cap = q->tcap ? q->tcap * 2 : 64;
		uint64_t *t = realloc(q->tok, cap * sizeof(*t));

		if (!t)
			return;
		q->tok = t;
		q->tcap = cap;
	}
	q->tok[n] = ts;
	q->r.token_ns_len = n + 1;
}

/* ---- connections ---------------------------------------------------------- */

static size_t bucket_of(const struct reqtrack *rt, uint64_t id)
{
	return (size_t)((id * 0x9E3779B97F4A7C15ull) >> 20) &
	       (rt->nbuckets - 1);
}

static struct conn *conn_find(struct reqtrack *rt, uint64_t id)
{
	struct conn *c = rt->buckets[bucket_of(rt, id)];

	while (c && c->meta.conn_id != id)
		c = c->hnext;
	return c;
}

static void table_grow(struct reqtrack *rt)
{
	size_t n = rt->nbuckets * 2;
	struct conn **b = calloc(n, sizeof(*b));
	struct conn **old = rt->buckets;
	size_t oldn = rt->nbuckets;

	if (!b)
		return;		/* keep the longer chains */
	rt->buckets = b;
	rt->nbuckets = n;
	for (size_t i = 0; i < oldn; i++) {
		struct conn *c = old[i], *next;

		for (; c; c = next) {
			size_t k = bucket_of(rt, c->meta.conn_id);

			next = c->hnext;
			c->hnext = b[k];
			b[k] = c;
		}
	}
	free(old);
}

static const struct http_cbs in_cbs, out_cbs;

static struct conn *conn_get(struct reqtrack *rt,
			     const struct tt_conn_meta *m)
{
	struct conn *c = conn_find(rt, m->conn_id);
	const char *hdr = NULL;
	size_t k;

	if (c)
		return c;
	c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->rt = rt;
	c->meta = *m;
	if (rt->opts.tenant_kind == TT_TENANT_HEADER)
		hdr = rt->opts.tenant_header;
	http_init(&c->in, HTTP_REQ, &in_cbs, c, hdr);
	http_init(&c->out, HTTP_RESP, &out_cbs, c, hdr);
	k = bucket_of(rt, m->conn_id);
	c->hnext = rt->buckets[k];
	rt->buckets[k] = c;
	rt->st.connections++;
	if (++rt->nconns > rt->nbuckets)
		table_grow(rt);
	return c;
}

static void conn_unlink(struct reqtrack *rt, struct conn *c)
{
	struct conn **pp = &rt->buckets[bucket_of(rt, c->meta.conn_id)];

	while (*pp && *pp != c)
		pp = &(*pp)->hnext;
	if (*pp)
		*pp = c->hnext;
	rt->nconns--;
}

/* ---- finishing a request -------------------------------------------------- */

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of sorted v[0..n). */
static double pct(const double *v, size_t n, double p)
{
	size_t k = (size_t)ceil(p * n);

	return v[k ? k - 1 : 0];
}

static void compute_itl(struct tt_request *r, const uint64_t *t, uint32_t n)
{
	double *g;

	r->itl_p50_ms = r->itl_p99_ms = r->itl_max_ms = -1;
	if (n < 2 || !(g = malloc((n - 1) * sizeof(*g))))
		return;
	for (uint32_t i = 1; i < n; i++)
		g[i - 1] = t[i] >= t[i - 1] ? (t[i] - t[i - 1]) / 1e6 : 0;
	qsort(g, n - 1, sizeof(*g), cmp_double);
	r->itl_p50_ms = pct(g, n - 1, 0.50);
	r->itl_p99_ms = pct(g, n - 1, 0.99);
	r->itl_max_ms = g[n - 2];
	free(g);
}

static void resolve_tenant(struct conn *c, struct rq *q)
{
	struct tenant_input in = {
		.header = q->has_hdr_tenant ? q->hdr_tenant : NULL,
		.user = q->areq.has_user ? q->areq.user : NULL,
		.conn = &c->meta,
	};

	if (c->rt->opts.tenant_kind == TT_TENANT_API_KEY)
		copy_cstr(q->r.tenant, sizeof(q->r.tenant),
			  q->key_tenant[0] ? q->key_tenant : "-");
	else
		tenant_resolve(&c->rt->opts, &in, q->r.tenant);
}

static uint64_t seen_key(uint64_t salt, uint64_t h)
{
	uint64_t k = (h ^ salt) * 0x9e3779b97f4a7c15ull;

	return (k ^ (k >> 31)) | 1;	/* never 0, the empty slot */
}

/*
 * How many bytes at the start of q's prompt an earlier prompt to the same
 * model in the same process began with (whole blocks), and remembers this
 * one's blocks. No text is kept: only 64-bit hashes, in memory.
 */
static uint32_t shared_prefix(struct reqtrack *rt, const struct conn *c,
			      const struct rq *q)
{
	const struct api_req *a = &q->areq;
	uint64_t salt = 0xcbf29ce484222325ull ^ (uint64_t)c->meta.pid << 32;
	uint32_t n = 0;

	if (!a->prefix_blocks)
		return 0;
	if (!rt->seen && !(rt->seen = calloc(SEEN_SLOTS, sizeof(uint64_t))))
		return 0;
	for (const char *m = a->model; *m; m++)
		salt = (salt ^ (unsigned char)*m) * 0x100000001b3ull;
	while (n < a->prefix_blocks) {
		uint64_t k = seen_key(salt, a->prefix_hash[n]);

		if (rt->seen[k & (SEEN_SLOTS - 1)] != k)
			break;
		n++;
	}
	for (uint32_t i = n; i < a->prefix_blocks; i++) {
		uint64_t k = seen_key(salt, a->prefix_hash[i]);

		rt->seen[k & (SEEN_SLOTS - 1)] = k;
	}
	return n * API_PREFIX_BLOCK;
}

/* The request's bytes are all seen (or never will be): read its body. */
static void request_done(struct conn *c, struct rq *q, bool cut)
{
	if (q->req_done)
		return;
	q->req_done = true;
	if (!c->rt->hashes)	/* without it, no prompt is hashed */
		c->rt->hashes = malloc(API_PREFIX_BLOCKS * sizeof(uint64_t));
	q->areq.prefix_hash = c->rt->hashes;
	if (q->blen || cut)
		api_parse_request(q->body, q->blen,
				  cut || q->body_cut || q->holed, &q->areq);
	body_drop(q);
	if (q->areq.bad_json)
		q->r.flags |= TT_REQF_BAD_JSON;
	copy_cstr(q->r.model, sizeof(q->r.model), q->areq.model);
	q->r.stream = q->areq.stream || api_path_streams(q->r.path);
	q->r.max_tokens = q->areq.max_tokens;
	q->r.prompt_bytes = q->areq.prompt_bytes > UINT32_MAX ? UINT32_MAX :
			    (uint32_t)q->areq.prompt_bytes;
	q->r.prefix_bytes = shared_prefix(c->rt, c, q);
	q->areq.prefix_hash = NULL;	/* the buffer is the next request's */
	q->areq.prefix_blocks = 0;
	if (c->in_cur == q)
		q->r.bytes_in = c->in.msg_bytes;
	resolve_tenant(c, q);
}

static void fill_tokens(struct rq *q)
{
	struct tt_request *r = &q->r;
	uint64_t text = q->aresp.text_bytes;

	if (q->aresp.has_usage) {
		r->tokens_source = TT_TOKENS_USAGE;
		r->prompt_tokens = q->aresp.prompt_tokens;
		r->completion_tokens = q->aresp.completion_tokens;
		if (q->aresp.cached_tokens >= 0 &&
		    (r->prompt_tokens < 0 ||
		     q->aresp.cached_tokens <= r->prompt_tokens)) {
			r->cached_tokens = q->aresp.cached_tokens;
			r->cached_source = TT_CACHED_WIRE;
		}
		return;
	}
	if (q->sse && (r->token_events || q->resp_done)) {
		r->tokens_source = TT_TOKENS_EVENTS;
		r->completion_tokens = r->token_events;
		r->flags |= TT_REQF_NO_USAGE;
		return;
	}
	if (q->api == API_OTHER || !q->resp_started || r->http_status >= 400)
		return;
	r->tokens_source = TT_TOKENS_ESTIMATE;
	r->flags |= TT_REQF_NO_USAGE;
	if (!text && q->aresp.bad_json)
		text = r->bytes_out;
	r->completion_tokens = (text + BYTES_PER_TOKEN - 1) / BYTES_PER_TOKEN;
	if (q->areq.prompt_bytes)
		r->prompt_tokens = (q->areq.prompt_bytes + BYTES_PER_TOKEN - 1) /
				   BYTES_PER_TOKEN;
}

static enum tt_req_end end_reason(const struct rq *q, enum finish_why why)
{
	int st = q->r.http_status;

	if (q->lost || (q->r.flags & TT_REQF_LOST) || why == FIN_LOST)
		return TT_END_DATA_LOST;
	if (st >= 500)
		return TT_END_SERVER_ERROR;
	if (st >= 400)
		return TT_END_CLIENT_ERROR;
	if (q->aresp.error)
		return TT_END_SERVER_ERROR;
	if (why == FIN_CLOSE)
		return TT_END_CLIENT_GONE;
	if (why == FIN_FLUSH)
		return TT_END_OPEN;
	return TT_END_COMPLETE;
}

static void response_done(struct conn *c, struct rq *q)
{
	if (q->body) {
		bool cut = q->body_cut;

		api_parse_body(q->api, q->body, q->blen, &q->aresp);
		if (cut)	/* cut short, not malformed */
			q->aresp.bad_json = false;
		body_drop(q);
	}
	if (q->sse)
		sse_free(&q->sp);
	if (c->out_cur == q)
		q->r.bytes_out = c->out.msg_bytes;
}

static void fifo_remove(struct conn *c, struct rq *q)
{
	struct rq **pp = &c->head, *prev = NULL;

	while (*pp && *pp != q) {
		prev = *pp;
		pp = &(*pp)->next;
	}
	if (!*pp)
		return;
	*pp = q->next;
	if (c->tail == q)
		c->tail = prev;
	c->npending--;
	if (c->in_cur == q)
		c->in_cur = NULL;
	if (c->out_cur == q)
		c->out_cur = NULL;
}

static void finish(struct conn *c, struct rq *q, enum finish_why why,
		   uint64_t ts)
{
	struct tt_request *r = &q->r;
	struct reqtrack *rt = c->rt;

	request_done(c, q, true);
	response_done(c, q);
	if (why == FIN_RESPONSE)
		r->end_ns = ts;
	else if (why == FIN_FLUSH)
		r->end_ns = q->resp_started ? q->last_out_ns : 0;
	else
		r->end_ns = ts;
	if (!q->sse && q->resp_started && r->http_status < 400)
		r->first_token_ns = q->resp_start_ns;
	if (q->aresp.bad_json)
		r->flags |= TT_REQF_BAD_JSON;
	if (why != FIN_RESPONSE && q->resp_started)
		r->flags |= TT_REQF_ABORTED;
	copy_cstr(r->id, sizeof(r->id), q->aresp.id);
	fill_tokens(q);
	r->end = end_reason(q, why);
	r->ttft_ms = r->first_token_ns >= r->arrival_ns && r->first_token_ns
			     ? (r->first_token_ns - r->arrival_ns) / 1e6 : -1;
	compute_itl(r, q->tok, r->token_ns_len);
	r->token_ns = q->tok;
	fifo_remove(c, q);
	rt->st.requests++;
	if (rt->opts.on_request)
		rt->opts.on_request(rt->opts.ctx, r);
	free(q->tok);
	free(q);
}

static void finish_all(struct conn *c, enum finish_why why, uint64_t ts)
{
	while (c->head)
		finish(c, c->head, why, ts);
}

/* ---- request side callbacks ----------------------------------------------- */

static struct rq *rq_new(struct conn *c, uint64_t start_ns)
{
	struct rq *q = calloc(1, sizeof(*q));

	if (!q)
		return NULL;
	q->r.pid = c->meta.pid;
	q->r.conn_id = c->meta.conn_id;
	q->r.arrival_ns = start_ns;
	q->r.max_tokens = -1;
	q->r.prompt_tokens = q->r.completion_tokens = -1;
	q->r.ttft_ms = -1;
	copy_cstr(q->r.api, sizeof(q->r.api), "other");
	api_req_init(&q->areq);
	api_resp_init(&q->aresp);
	if (c->tail)
		c->tail->next = q;
	else
		c->head = q;
	c->tail = q;
	c->npending++;
	return q;
}

static void too_many_pending(struct conn *c, uint64_t ts)
{
	/* a client pipelining this deep is not worth following */
	finish_all(c, FIN_LOST, ts);
	c->in.state = HTTP_S_DEAD;
	c->out.state = HTTP_S_DEAD;
}

static int in_head(void *ctx, struct http_head *h, uint64_t ts)
{
	struct conn *c = ctx;
	struct rq *q;

	c->is_http = true;
	if (c->npending >= PENDING_MAX) {
		too_many_pending(c, ts);
		return 0;
	}
	q = rq_new(c, h->start_ts);
	if (!q)
		return 0;
	c->in_cur = q;
	copy_cstr(q->r.path, sizeof(q->r.path), h->path);
	q->api = api_from_path(h->method, h->path);
	copy_cstr(q->r.api, sizeof(q->r.api), api_name(q->api));
	q->no_body = !strcmp(h->method, "HEAD");
	if (h->has_tenant) {
		copy_cstr(q->hdr_tenant, sizeof(q->hdr_tenant), h->tenant);
		q->has_hdr_tenant = true;
	}
	if (c->rt->opts.tenant_kind == TT_TENANT_API_KEY && h->auth[0] &&
	    tenant_hash_api_key(c->rt->opts.hash_key, h->auth, q->key_tenant,
				sizeof(q->key_tenant)) < 0)
		q->key_tenant[0] = '\0';
	explicit_bzero(h->auth, sizeof(h->auth));
	return 0;
}

static void in_body(void *ctx, const char *p, size_t n, uint64_t ts)
{
	struct conn *c = ctx;

	(void)ts;
	if (c->in_cur && c->in_cur->api != API_OTHER)
		body_add(c->in_cur, p, n);
}

static void in_hole(void *ctx, uint64_t n, uint64_t ts)
{
	struct conn *c = ctx;

	(void)n;
	(void)ts;
	if (c->in_cur) {
		c->in_cur->r.flags |= TT_REQF_REQ_TRUNCATED;
		c->in_cur->holed = true;
	}
}

static void in_end(void *ctx, uint64_t ts)
{
	struct conn *c = ctx;

	(void)ts;
	if (c->in_cur)
		request_done(c, c->in_cur, false);
	c->in_cur = NULL;
}

static void in_lost(void *ctx, bool in_msg, uint64_t ts)
{
	struct conn *c = ctx;
	struct rq *q = c->in_cur;

	(void)ts;
	c->rt->st.sync_lost++;
	if (!in_msg)
		return;
	if (!q && c->npending < PENDING_MAX) {
		/* the head itself is lost: keep a place for its response */
		q = rq_new(c, c->in.start_ts);
		if (!q)
			return;
		c->in_cur = q;
	}
	if (!q)
		return;
	q->r.flags |= TT_REQF_REQ_TRUNCATED;
	q->lost = true;
	request_done(c, q, true);
	c->in_cur = NULL;
}

static const struct http_cbs in_cbs = {
	.on_head = in_head,
	.on_body = in_body,
	.on_hole = in_hole,
	.on_end = in_end,
	.on_lost = in_lost,
};

/* ---- response side callbacks ---------------------------------------------- */

static void on_event(void *ctx, const char *data, size_t len, uint64_t ts)
{
	struct rq *q = ctx;

	if (api_parse_event(data, len, &q->aresp))
		token_add(q, ts);
}

static bool json_type(const char *ct)
{
	return !ct[0] || strstr(ct, "json");
}

static int out_head(void *ctx, struct http_head *h, uint64_t ts)
{
	struct conn *c = ctx;
	struct rq *q = c->head;

	(void)ts;
	explicit_bzero(h->auth, sizeof(h->auth));
	if (h->status / 100 == 1) {
		c->interim = true;
		return 0;
	}
	/* A response that began before the oldest open request did answers
	 * one that was never seen (lost, or before the trace began). */
	if (q && h->start_ts < q->r.arrival_ns)
		q = NULL;
	c->out_cur = q;
	if (!q) {	/* a response to a request never seen */
		c->rt->st.orphan_responses++;
		return 0;
	}
	q->resp_started = true;
	q->resp_start_ns = h->start_ts;
	q->last_out_ns = ts;
	q->r.http_status = h->status;
	if (!strncasecmp(h->content_type, "text/event-stream", 17)) {
		q->sse = true;
		sse_init(&q->sp, on_event, q);
	} else {
		q->keep_body = json_type(h->content_type);
	}
	return q->no_body ? HTTP_NO_BODY : 0;
}

static void out_body(void *ctx, const char *p, size_t n, uint64_t ts)
{
	struct conn *c = ctx;
	struct rq *q = c->out_cur;

	if (!q || c->interim)
		return;
	q->last_out_ns = ts;
	if (q->sse)
		sse_feed(&q->sp, p, n, ts);
	else if (q->keep_body)
		body_add(q, p, n);
}

static void out_hole(void *ctx, uint64_t n, uint64_t ts)
{
	struct conn *c = ctx;
	struct rq *q = c->out_cur;

	(void)n;
	(void)ts;
	if (!q || c->interim)
		return;
	q->r.flags |= TT_REQF_RESP_TRUNCATED;
	q->lost = true;
	if (q->sse)
		sse_hole(&q->sp);
	else
		q->body_cut = true;
}

static void out_end(void *ctx, uint64_t ts)
{
	struct conn *c = ctx;
	struct rq *q = c->out_cur;

	if (c->interim) {
		c->interim = false;
		return;
	}
	if (!q)
		return;
	q->resp_done = true;
	q->last_out_ns = ts;
	finish(c, q, FIN_RESPONSE, ts);
	c->out_cur = NULL;
}

static void out_lost(void *ctx, bool in_msg, uint64_t ts)
{
	struct conn *c = ctx;
	struct rq *q = in_msg ? c->out_cur : c->head;

	c->rt->st.sync_lost++;
	c->interim = false;
	c->out_cur = NULL;
	if (!q)
		return;
	/* the response (or its start) is gone: nothing more will match it */
	q->r.flags |= TT_REQF_RESP_TRUNCATED;
	q->lost = true;
	finish(c, q, FIN_LOST, q->resp_started ? q->last_out_ns : ts);
}

static const struct http_cbs out_cbs = {
	.on_head = out_head,
	.on_body = out_body,
	.on_hole = out_hole,
	.on_end = out_end,
	.on_lost = out_lost,
};

/* ---- the interface ------------------------------------------------------- */

struct reqtrack *reqtrack_new(const struct reqtrack_opts *opts)
{
	struct reqtrack *rt = calloc(1, sizeof(*rt));

	if (!rt)
		return NULL;
	rt->opts = *opts;
	rt->nbuckets = 256;
	rt->buckets = calloc(rt->nbuckets, sizeof(*rt->buckets));
	if (!rt->buckets) {
		free(rt);
		return NULL;
	}
	return rt;
}

static void rq_free(struct rq *q)
{
	body_drop(q);
	if (q->sse)
		sse_free(&q->sp);
	free(q->tok);
	free(q);
}

/* Requests still queued are freed unreported (reqtrack_free only). */
static void conn_free(struct reqtrack *rt, struct conn *c)
{
	while (c->head) {
		struct rq *q = c->head;

		c->head = q->next;
		rq_free(q);
	}
	conn_unlink(rt, c);
	http_free(&c->in);
	http_free(&c->out);
	free(c);
}

void reqtrack_free(struct reqtrack *rt)
{
	if (!rt)
		return;
	for (size_t i = 0; i < rt->nbuckets; i++)
		while (rt->buckets[i])
			conn_free(rt, rt->buckets[i]);
	free(rt->buckets);
	free(rt->seen);
	free(rt->hashes);
	free(rt);
}

static void mark_non_http(struct reqtrack *rt, struct conn *c)
{
	if (c->is_http || c->non_http)
		return;
	c->non_http = true;
	rt->st.non_http_connections++;
	http_free(&c->in);
	http_free(&c->out);
}

void reqtrack_data(struct reqtrack *rt, const struct tt_conn_meta *conn,
		   enum tt_dir dir, uint64_t ts_ns, const void *data,
		   size_t len, size_t missing)
{
	struct conn *c = conn_get(rt, conn);
	struct http_parser *p;
	bool was_http;

	if (dir == TT_DIR_IN)
		rt->st.bytes_in += len;
	else
		rt->st.bytes_out += len;
	rt->st.bytes_missing += missing;
	if (!c || c->non_http)
		return;
	was_http = c->is_http;
	p = dir == TT_DIR_IN ? &c->in : &c->out;
	if (http_feed(p, data, len, missing, ts_ns) < 0)
		mark_non_http(rt, c);
	if (!was_http && c->is_http)
		rt->st.http_connections++;
}

void reqtrack_lost(struct reqtrack *rt, const struct tt_conn_meta *conn,
		   uint64_t ts_ns)
{
	struct conn *c = conn_find(rt, conn->conn_id);

	if (!c || c->non_http)
		return;
	for (struct rq *q = c->head; q; q = q->next)
		q->r.flags |= TT_REQF_LOST;
	http_lost(&c->in, ts_ns);
	http_lost(&c->out, ts_ns);
	finish_all(c, FIN_LOST, ts_ns);
}

void reqtrack_close(struct reqtrack *rt, uint64_t conn_id, uint64_t ts_ns)
{
	struct conn *c = conn_find(rt, conn_id);

	if (!c)
		return;
	if (!c->non_http)
		http_close(&c->out, ts_ns);
	finish_all(c, FIN_CLOSE, ts_ns);
	conn_free(rt, c);
}

void reqtrack_flush(struct reqtrack *rt, uint64_t now_ns)
{
	(void)now_ns;
	for (size_t i = 0; i < rt->nbuckets; i++)
		while (rt->buckets[i]) {
			struct conn *c = rt->buckets[i];

			finish_all(c, FIN_FLUSH, now_ns);
			conn_free(rt, c);
		}
}

void reqtrack_get_stats(const struct reqtrack *rt, struct reqtrack_stats *st)
{
	*st = rt->st;
}

/* ---- names and the JSON line ---------------------------------------------- */

const char *tt_cached_source_name(enum tt_cached_source s)
{
	switch (s) {
	case TT_CACHED_WIRE:
		return "wire";
	case TT_CACHED_ESTIMATE:
		return "estimate";
	default:
		return "none";
	}
}

const char *tt_tokens_source_name(enum tt_tokens_source s)
{
	switch (s) {
	case TT_TOKENS_USAGE:
		return "usage";
	case TT_TOKENS_EVENTS:
		return "events";
	case TT_TOKENS_ESTIMATE:
		return "estimate";
	default:
		return "none";
	}
}

const char *tt_req_end_name(enum tt_req_end e)
{
	static const char *const names[] = {
		[TT_END_COMPLETE] = "complete",
		[TT_END_CLIENT_GONE] = "client_gone",
		[TT_END_SERVER_ERROR] = "server_error",
		[TT_END_CLIENT_ERROR] = "client_error",
		[TT_END_DATA_LOST] = "data_lost",
		[TT_END_OPEN] = "open",
	};

	return (unsigned)e < sizeof(names) / sizeof(names[0]) ? names[e]
							      : "unknown";
}

static const char *const flag_names[] = {
	"req_truncated", "resp_truncated", "lost", "no_usage", "bad_json",
	"aborted", "prompt_estimated",
};

/* A JSON string, or null when empty. */
static void put_str(FILE *f, const char *key, const char *s)
{
	fprintf(f, "\"%s\":", key);
	if (!s || !*s) {
		fputs("null,", f);
		return;
	}
	fputc('"', f);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			fprintf(f, "\\%c", *p);
		else if (*p < 0x20 || *p == 0x7f)
			fprintf(f, "\\u%04x", *p);
		else
			fputc(*p, f);
	}
	fputs("\",", f);
}

static void put_u64(FILE *f, const char *key, uint64_t v, bool known)
{
	if (known)
		fprintf(f, "\"%s\":%llu,", key, (unsigned long long)v);
	else
		fprintf(f, "\"%s\":null,", key);
}

static void put_i64(FILE *f, const char *key, int64_t v)
{
	if (v >= 0)
		fprintf(f, "\"%s\":%lld,", key, (long long)v);
	else
		fprintf(f, "\"%s\":null,", key);
}

static void put_ms(FILE *f, const char *key, double v)
{
	if (v >= 0)
		fprintf(f, "\"%s\":%.3f,", key, v);
	else
		fprintf(f, "\"%s\":null,", key);
}

int tt_request_write_json_open(const struct tt_request *r, FILE *out)
{
	bool first = true;

	fputc('{', out);
	put_str(out, "id", r->id);
	put_u64(out, "pid", r->pid, true);
	put_u64(out, "conn_id", r->conn_id, true);
	put_str(out, "tenant", r->tenant);
	put_str(out, "model", r->model);
	put_str(out, "api", r->api);
	put_str(out, "path", r->path);
	fprintf(out, "\"stream\":%s,", r->stream ? "true" : "false");
	put_u64(out, "status", r->http_status, r->http_status > 0);
	put_str(out, "end", tt_req_end_name(r->end));
	put_u64(out, "arrival_ns", r->arrival_ns, true);
	put_u64(out, "first_token_ns", r->first_token_ns, r->first_token_ns);
	put_u64(out, "end_ns", r->end_ns, r->end_ns);
	put_ms(out, "ttft_ms", r->ttft_ms);
	put_ms(out, "itl_p50_ms", r->itl_p50_ms);
	put_ms(out, "itl_p99_ms", r->itl_p99_ms);
	put_ms(out, "itl_max_ms", r->itl_max_ms);
	put_u64(out, "token_events", r->token_events, true);
	put_i64(out, "prompt_tokens", r->prompt_tokens);
	put_i64(out, "completion_tokens", r->completion_tokens);
	put_str(out, "tokens_source", r->tokens_source == TT_TOKENS_NONE
		? NULL : tt_tokens_source_name(r->tokens_source));
	if (r->prefix_bytes)
		put_u64(out, "shared_prefix_bytes", r->prefix_bytes, true);
	if (r->cached_source != TT_CACHED_NONE) {
		put_i64(out, "cached_tokens", r->cached_tokens);
		put_str(out, "cached_tokens_source",
			tt_cached_source_name(r->cached_source));
	}
	put_i64(out, "max_tokens", r->max_tokens);
	put_u64(out, "bytes_in", r->bytes_in, true);
	put_u64(out, "bytes_out", r->bytes_out, true);
	fputs("\"flags\":[", out);
	for (unsigned i = 0; i < sizeof(flag_names) / sizeof(flag_names[0]);
	     i++) {
		if (!(r->flags & (1u << i)))
			continue;
		fprintf(out, "%s\"%s\"", first ? "" : ",", flag_names[i]);
		first = false;
	}
	fputc(']', out);
	return ferror(out) ? -1 : 0;
}

int tt_request_write_json(const struct tt_request *r, FILE *out)
{
	tt_request_write_json_open(r, out);
	fputs("}\n", out);
	return ferror(out) ? -1 : 0;
}
