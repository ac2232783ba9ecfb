/*
 * run.c - the workers that drive the load, the out file and the summary.
 *
 * In:  parsed options (lg_opts).
 * Out: one JSON line per request in --out, and an lg_summary (counts,
 *      throughput, TTFT and inter-token latency percentiles).
 * Assumes: a small client on a small machine: one thread per connection,
 *      blocking I/O with poll() deadlines, nothing else running.
 *
 * Closed loop (--concurrency N): N workers, each sending its next request
 * as soon as the last one ended, on one keep-alive connection that it
 * reopens when the server closes it. Open loop (--rate R): arrival times
 * come from one seeded Poisson process; a worker claims the next arrival
 * and sleeps until it, so up to --concurrency requests are in flight and a
 * late worker sends at once (sent_ns shows when it really went out).
 * Everything random about request i (tenant, lengths, prompt bytes) comes
 * from the seed and i alone, so a run is repeatable.
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cJSON.h>

#include "loadgen.h"

#define READ_BUF	(16 * 1024)

struct dvec {
	double *v;
	size_t n;
	size_t cap;
};

struct shared {
	const struct lg_opts *o;
	struct lg_tls *tls;
	FILE *out;
	pthread_mutex_t mu;
	long next;		/* index of the next request to claim */
	int64_t start_ns;
	int64_t stop_ns;	/* --duration: no new request after this */
	struct lg_rng arrivals;
	double arrival_s;	/* open loop: next arrival after start */
};

struct worker {
	struct shared *sh;
	pthread_t th;
	struct lg_conn conn;
	struct lg_resp resp;
	char *rbuf;
	struct dvec ttft_ms;
	struct dvec itl_ms;
	long ok;
	long failed;
	long cancelled;
	long completion_tokens;
	int64_t last_end_ns;
};

static void dvec_push(struct dvec *d, double x)
{
	if (d->n == d->cap) {
		size_t cap = d->cap ? d->cap * 2 : 256;
		double *v = realloc(d->v, cap * sizeof(*v));

		if (!v)
			return;	/* a lost sample, not a failed run */
		d->v = v;
		d->cap = cap;
	}
	d->v[d->n++] = x;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

double lg_percentile(double *v, size_t n, double pct)
{
	size_t rank;

	if (!n)
		return 0;
	qsort(v, n, sizeof(*v), cmp_double);
	rank = (size_t)ceil(pct / 100.0 * (double)n);
	if (rank < 1)
		rank = 1;
	if (rank > n)
		rank = n;
	return v[rank - 1];
}

/* ---- the request ---------------------------------------------------------- */

static char *make_body(const struct lg_opts *o, const char *tenant,
		       const char *prompt, long max_tokens)
{
	cJSON *root = cJSON_CreateObject(), *msgs, *msg, *so;
	char *s;

	cJSON_AddStringToObject(root, "model", o->model);
	if (o->chat) {
		msgs = cJSON_AddArrayToObject(root, "messages");
		msg = cJSON_CreateObject();
		cJSON_AddStringToObject(msg, "role", "user");
		cJSON_AddStringToObject(msg, "content", prompt);
		cJSON_AddItemToArray(msgs, msg);
	} else {
		cJSON_AddStringToObject(root, "prompt", prompt);
	}
	cJSON_AddNumberToObject(root, "max_tokens", (double)max_tokens);
	cJSON_AddBoolToObject(root, "stream", o->stream);
	if (o->stream) {
		so = cJSON_AddObjectToObject(root, "stream_options");
		cJSON_AddBoolToObject(so, "include_usage", 1);
	}
	cJSON_AddStringToObject(root, "user", tenant);
	s = cJSON_PrintUnformatted(root);
	cJSON_Delete(root);
	return s;
}

/* n printable ASCII bytes from rng at p. */
static void random_text(char *p, long n, struct lg_rng *rng)
{
	for (long i = 0; i < n; i++)
		p[i] = (char)(0x20 + lg_rng_next(rng) % 95);
}

/* Request idx's own draws: tenant, lengths, cancel; rng is left where its
 * prompt bytes begin. */
static void draw(const struct lg_opts *o, long idx, struct lg_rng *rng,
		 struct lg_shape *s)
{
	lg_rng_seed(rng, o->seed, (uint64_t)idx + 1);
	s->tenant = lg_rng_tenant(rng, o->tenants, o->n_tenants);
	s->prompt_len = lg_rng_range(rng, &o->prompt_len);
	s->max_tokens = lg_rng_range(rng, &o->max_tokens);
	/* drawn last, and only when asked: other runs stay as they were */
	s->cancel = o->stream && o->cancel_frac > 0 &&
		    lg_rng_unit(rng) < o->cancel_frac;
}

char *lg_shape_request(const struct lg_opts *o, long idx, struct lg_shape *s)
{
	int turns = o->turns > 1 ? o->turns : 1, turn = (int)(idx % turns);
	long first = idx - turn, total, at = 0, pre;
	struct lg_shape t;
	struct lg_rng rng;
	char *p;

	draw(o, first, &rng, s);	/* a conversation keeps its tenant */
	s->conversation = turns > 1 ? first / turns : -1;
	s->turn = turn;
	pre = o->tenants[s->tenant].shared_prefix;
	total = pre;
	for (int i = 0; i <= turn; i++) {
		draw(o, first + i, &rng, &t);
		total += t.prompt_len + (i < turn ? t.max_tokens : 0);
	}
	p = malloc((size_t)total + 1);
	if (!p)
		return NULL;
	/* the tenant's prefix: the same bytes in each of its prompts */
	lg_rng_seed(&rng, o->seed ^ 0x5eed5eed5eedull,
		    (uint64_t)s->tenant + 1);
	random_text(p, pre, &rng);
	at = pre;
	/* earlier turns, each with a stand-in for its answer, then this one */
	for (int i = 0; i <= turn; i++) {
		draw(o, first + i, &rng, &t);
		random_text(p + at, t.prompt_len, &rng);
		at += t.prompt_len;
		if (i < turn) {
			random_text(p + at, t.max_tokens, &rng);
			at += t.max_tokens;
		}
	}
	p[total] = '\0';
	s->prompt_len = total;
	s->max_tokens = t.max_tokens;
	s->cancel = turns == 1 && t.cancel;
	return p;
}

char *lg_build_request(const struct lg_opts *o, const char *tenant,
		       const char *prompt, long max_tokens, size_t *len)
{
	char *body, *req = NULL;
	char auth[600] = "";
	bool v6 = strchr(o->host, ':') != NULL;
	size_t cap;
	int n;

	body = make_body(o, tenant, prompt, max_tokens);
	if (!body)
		return NULL;
	if (o->api_key)
		snprintf(auth, sizeof(auth), "Authorization: Bearer %.500s\r\n",
			 o->api_key);
	cap = strlen(body) + strlen(auth) + 1024;
	req = malloc(cap);
	if (req) {
		n = snprintf(req, cap, "POST %s HTTP/1.1\r\n"
			     "Host: %s%s%s:%s\r\n"
			     "User-Agent: tokentrace-loadgen\r\n"
			     "Content-Type: application/json\r\n"
			     "Accept: %s\r\n"
			     "X-Tenant-Id: %s\r\n%s"
			     "Content-Length: %zu\r\n\r\n%s",
			     o->path, v6 ? "[" : "", o->host, v6 ? "]" : "",
			     o->port, o->stream ? "text/event-stream" :
			     "application/json", tenant, auth, strlen(body), body);
		*len = (size_t)n;
	}
	free(body);
	return req;
}

/* ---- the out file ------------------------------------------------------------ */

static void put_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\')
			fprintf(f, "\\%c", c);
		else if (c < 0x20)
			fprintf(f, "\\u%04x", c);
		else
			fputc(c, f);
	}
	fputc('"', f);
}

void lg_result_write(FILE *f, const struct lg_result *r)
{
	fputs("{\"id\":", f);
	put_str(f, r->id);
	fputs(",\"tenant\":", f);
	put_str(f, r->tenant ? r->tenant : "");
	fprintf(f, ",\"status\":%d", r->status);
	if (r->cancelled)
		fputs(",\"cancelled\":true", f);
	if (r->error[0]) {
		fputs(",\"error\":", f);
		put_str(f, r->error);
	}
	fprintf(f, ",\"sent_ns\":%lld,\"first_token_ns\":%lld,\"end_ns\":%lld,"
		"\"token_events\":%ld,\"prompt_tokens\":%ld,"
		"\"completion_tokens\":%ld,\"stream\":%s,\"max_tokens\":%ld,"
		"\"prompt_len\":%ld", (long long)r->sent_ns,
		(long long)r->first_token_ns, (long long)r->end_ns,
		r->token_events, r->prompt_tokens, r->completion_tokens,
		r->stream ? "true" : "false", r->max_tokens, r->prompt_len);
	if (r->conversation >= 0)
		fprintf(f, ",\"conversation\":%ld,\"turn\":%d",
			r->conversation, r->turn);
	if (r->cached_tokens >= 0)
		fprintf(f, ",\"cached_tokens\":%ld", r->cached_tokens);
	fputs("}\n", f);
}

/* ---- one exchange ------------------------------------------------------------- */

/* Reads the response; records token times. Returns 0 when the response
 * ended, -1 on failure (res->error set). *stale is set when a reused
 * connection gave no byte at all: the server had closed it. */
static int read_response(struct worker *w, struct lg_result *res,
			 int64_t deadline, bool *stale)
{
	struct lg_resp *r = &w->resp;
	int64_t last_tok = 0;

	for (;;) {
		long n = lg_conn_read(&w->conn, w->rbuf, READ_BUF, deadline,
				      res->error, sizeof(res->error));
		int64_t t = lg_now_ns();
		long toks;

		if (n < 0 || (n == 0 && lg_resp_eof(r) < 0)) {
			*stale = r->bytes == 0 && w->conn.uses > 1 &&
				 !strstr(res->error, "timed out");
			if (n == 0)
				snprintf(res->error, sizeof(res->error), "%s",
					 r->error);
			return -1;
		}
		if (n == 0)
			return 0;
		toks = lg_resp_feed(r, w->rbuf, (size_t)n);
		if (toks < 0) {
			snprintf(res->error, sizeof(res->error), "%s", r->error);
			return -1;
		}
		if (toks > 0) {
			if (!res->first_token_ns)
				res->first_token_ns = t;
			else
				dvec_push(&w->itl_ms, (double)(t - last_tok) / 1e6);
			for (long k = 1; k < toks; k++)
				dvec_push(&w->itl_ms, 0);
			last_tok = t;
			if (res->cancel && !r->done) {
				res->cancelled = true;
				return 0;
			}
		}
		if (r->done)
			return 0;
	}
}

/* Sends the request and reads its response, once, on the worker's
 * connection (opened here when needed). */
static int exchange(struct worker *w, const char *req, size_t len,
		    struct lg_result *res, bool *stale)
{
	const struct lg_opts *o = w->sh->o;
	int64_t deadline;

	*stale = false;
	res->error[0] = '\0';
	res->first_token_ns = 0;
	lg_resp_reset(&w->resp);
	res->sent_ns = lg_now_ns();
	if (w->conn.fd < 0 && lg_conn_open(&w->conn, o, w->sh->tls,
					   res->error, sizeof(res->error)) < 0)
		return -1;
	w->conn.uses++;
	res->sent_ns = lg_now_ns();
	deadline = res->sent_ns + (int64_t)(o->timeout_s * 1e9);
	if (lg_conn_write_all(&w->conn, req, len, deadline, res->error,
			      sizeof(res->error)) < 0) {
		*stale = w->conn.uses > 1;
		return -1;
	}
	return read_response(w, res, deadline, stale);
}

static void finish_result(struct worker *w, struct lg_result *res, int rc)
{
	struct lg_resp *r = &w->resp;
	bool ok;

	res->end_ns = lg_now_ns();
	res->status = r->status;
	res->token_events = r->token_events;
	res->prompt_tokens = r->prompt_tokens;
	res->completion_tokens = r->completion_tokens;
	res->cached_tokens = r->cached_tokens;
	snprintf(res->id, sizeof(res->id), "%s", r->id);
	if (!rc && r->error[0])		/* an error event in a good stream */
		snprintf(res->error, sizeof(res->error), "%s", r->error);
	if (!rc && !res->error[0] && (r->status < 200 || r->status > 299))
		snprintf(res->error, sizeof(res->error), "HTTP status %d",
			 r->status);
	if (rc || !r->keep_alive || res->cancelled || w->sh->o->close_each)
		lg_conn_close(&w->conn);
	if (res->cancelled && !rc) {
		w->cancelled++;
		return;
	}
	ok = !res->error[0];
	if (!ok) {
		w->failed++;
		return;
	}
	w->ok++;
	w->completion_tokens += res->completion_tokens >= 0 ?
				res->completion_tokens : res->token_events;
	if (res->first_token_ns)
		dvec_push(&w->ttft_ms,
			  (double)(res->first_token_ns - res->sent_ns) / 1e6);
}

static void do_request(struct worker *w, long idx)
{
	const struct lg_opts *o = w->sh->o;
	struct lg_result res = { .stream = o->stream };
	struct lg_shape s;
	size_t len = 0;
	char *req = NULL, *prompt;
	bool stale;
	int rc;

	prompt = lg_shape_request(o, idx, &s);
	res.tenant = o->tenants[s.tenant].name;
	res.prompt_len = s.prompt_len;
	res.max_tokens = s.max_tokens;
	res.cancel = s.cancel;
	res.conversation = s.conversation;
	res.turn = s.turn;
	if (prompt)
		req = lg_build_request(o, res.tenant, prompt, res.max_tokens,
				       &len);
	free(prompt);
	if (!req) {
		snprintf(res.error, sizeof(res.error), "out of memory building "
			 "request %ld", idx);
		rc = -1;
	} else {
		rc = exchange(w, req, len, &res, &stale);
		if (rc < 0 && stale) {	/* the server closed an idle connection */
			lg_conn_close(&w->conn);
			rc = exchange(w, req, len, &res, &stale);
		}
	}
	free(req);
	finish_result(w, &res, rc);
	w->last_end_ns = res.end_ns;
	if (w->sh->out) {
		pthread_mutex_lock(&w->sh->mu);
		lg_result_write(w->sh->out, &res);
		fflush(w->sh->out);
		pthread_mutex_unlock(&w->sh->mu);
	}
}

/* ---- scheduling ------------------------------------------------------------- */

/* Claims the next request (with --turns, the next conversation: *idx is
 * its first turn); returns false when the run is over. *when_ns is the
 * time to send it (0: at once). */
static bool claim(struct shared *sh, long *idx, int64_t *when_ns)
{
	const struct lg_opts *o = sh->o;
	bool ok = true;

	pthread_mutex_lock(&sh->mu);
	*when_ns = 0;
	if (o->requests && sh->next >= o->requests)
		ok = false;
	if (ok && o->rate > 0) {
		*when_ns = sh->start_ns + (int64_t)(sh->arrival_s * 1e9);
		if (sh->stop_ns && *when_ns >= sh->stop_ns)
			ok = false;
		else
			sh->arrival_s += lg_rng_exp(&sh->arrivals, o->rate);
	} else if (ok && sh->stop_ns && lg_now_ns() >= sh->stop_ns) {
		ok = false;
	}
	if (ok) {
		*idx = sh->next;
		sh->next += o->turns > 1 ? o->turns : 1;
	}
	pthread_mutex_unlock(&sh->mu);
	return ok;
}

static void sleep_until(int64_t when_ns)
{
	struct timespec ts = { .tv_sec = when_ns / 1000000000LL,
			       .tv_nsec = when_ns % 1000000000LL };

	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) ==
	       EINTR)
		;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	int64_t when;
	long idx;

	while (claim(w->sh, &idx, &when)) {
		if (when > lg_now_ns())
			sleep_until(when);
		/* a conversation's turns one after another, each sent when
		 * the answer to the one before has come */
		for (int t = 0; t < (w->sh->o->turns > 1 ? w->sh->o->turns : 1);
		     t++) {
			if (w->sh->o->requests && idx + t >= w->sh->o->requests)
				break;
			do_request(w, idx + t);
		}
	}
	lg_conn_close(&w->conn);
	return NULL;
}

/* ---- the run ------------------------------------------------------------------- */

static void merge(struct worker *ws, int n, struct lg_summary *s,
		  int64_t start_ns)
{
	struct dvec ttft = { 0 }, itl = { 0 };
	int64_t end = start_ns;
	int i;

	memset(s, 0, sizeof(*s));
	for (i = 0; i < n; i++) {
		struct worker *w = &ws[i];

		s->ok += w->ok;
		s->failed += w->failed;
		s->cancelled += w->cancelled;
		s->completion_tokens += w->completion_tokens;
		for (size_t k = 0; k < w->ttft_ms.n; k++)
			dvec_push(&ttft, w->ttft_ms.v[k]);
		for (size_t k = 0; k < w->itl_ms.n; k++)
			dvec_push(&itl, w->itl_ms.v[k]);
		if (w->last_end_ns > end)
			end = w->last_end_ns;
	}
	s->wall_s = (double)(end - start_ns) / 1e9;
	if (s->wall_s > 0) {
		s->req_per_s = (double)(s->ok + s->failed + s->cancelled) /
			       s->wall_s;
		s->tok_per_s = (double)s->completion_tokens / s->wall_s;
	}
	s->ttft_p50_ms = lg_percentile(ttft.v, ttft.n, 50);
	s->ttft_p99_ms = lg_percentile(ttft.v, ttft.n, 99);
	s->itl_p50_ms = lg_percentile(itl.v, itl.n, 50);
	s->itl_p99_ms = lg_percentile(itl.v, itl.n, 99);
	free(ttft.v);
	free(itl.v);
}

static void workers_free(struct worker *ws, int n)
{
	for (int i = 0; i < n; i++) {
		lg_resp_free(&ws[i].resp);
		free(ws[i].rbuf);
		free(ws[i].ttft_ms.v);
		free(ws[i].itl_ms.v);
	}
	free(ws);
}

static int start_workers(struct shared *sh, struct worker *ws, int n,
			 char *err, size_t errlen)
{
	int i, rc;

	for (i = 0; i < n; i++) {
		ws[i].sh = sh;
		ws[i].conn.fd = -1;
		lg_resp_init(&ws[i].resp);
		ws[i].rbuf = malloc(READ_BUF);
		if (!ws[i].rbuf) {
			snprintf(err, errlen, "out of memory for worker %d", i);
			break;
		}
		rc = pthread_create(&ws[i].th, NULL, worker_main, &ws[i]);
		if (rc) {
			snprintf(err, errlen, "cannot start worker %d of %d: %s "
				 "(try a smaller --concurrency)", i, n,
				 strerror(rc));
			break;
		}
	}
	return i;
}

static int open_out(struct shared *sh, const struct lg_opts *o, char *err,
		    size_t errlen)
{
	if (!o->out_path)
		return 0;
	sh->out = fopen(o->out_path, "w");
	if (!sh->out) {
		snprintf(err, errlen, "cannot write --out %s: %s", o->out_path,
			 strerror(errno));
		return -1;
	}
	return 0;
}

int lg_run(const struct lg_opts *o, struct lg_summary *s, char *err,
	   size_t errlen)
{
	struct shared sh = { .o = o };
	struct worker *ws;
	int n = o->concurrency, started, i;

	signal(SIGPIPE, SIG_IGN);	/* a closed socket is an error, not a kill */
	if (o->tls && !(sh.tls = lg_tls_new(o->insecure, err, errlen)))
		return -1;
	ws = calloc((size_t)n, sizeof(*ws));
	if (!ws || open_out(&sh, o, err, errlen) < 0) {
		if (!ws)
			snprintf(err, errlen, "out of memory for %d workers", n);
		free(ws);
		lg_tls_free(sh.tls);
		return -1;
	}
	pthread_mutex_init(&sh.mu, NULL);
	lg_rng_seed(&sh.arrivals, o->seed, 0);
	sh.start_ns = lg_now_ns();
	if (o->duration_s > 0)
		sh.stop_ns = sh.start_ns + (int64_t)(o->duration_s * 1e9);
	started = start_workers(&sh, ws, n, err, errlen);
	for (i = 0; i < started; i++)
		pthread_join(ws[i].th, NULL);
	merge(ws, started, s, sh.start_ns);
	workers_free(ws, n);
	if (sh.out)
		fclose(sh.out);
	lg_tls_free(sh.tls);
	pthread_mutex_destroy(&sh.mu);
	return started == n ? 0 : -1;
}

void lg_summary_print(FILE *f, const struct lg_opts *o,
		      const struct lg_summary *s)
{
	fprintf(f, "loadgen: %s://%s:%s%s %s, %s %g\n", o->tls ? "https" :
		"http", o->host, o->port, o->path, o->stream ? "stream" :
		"no stream", o->rate > 0 ? "rate" : "concurrency",
		o->rate > 0 ? o->rate : (double)o->concurrency);
	if (s->cancelled)
		fprintf(f, "requests: %ld ok, %ld failed, %ld cancelled by the "
			"client\n", s->ok, s->failed, s->cancelled);
	else
		fprintf(f, "requests: %ld ok, %ld failed\n", s->ok, s->failed);
	fprintf(f, "wall: %.3f s\n", s->wall_s);
	fprintf(f, "throughput: %.2f requests/s, %.1f completion tokens/s "
		"(%ld tokens)\n", s->req_per_s, s->tok_per_s,
		s->completion_tokens);
	fprintf(f, "ttft: p50 %.2f ms, p99 %.2f ms\n", s->ttft_p50_ms,
		s->ttft_p99_ms);
	fprintf(f, "itl: p50 %.2f ms, p99 %.2f ms\n", s->itl_p50_ms,
		s->itl_p99_ms);
}
