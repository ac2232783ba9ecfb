/*
 * server.c - the network thread of the reference server.
 *
 * In:  connections on --host:--port (plain or TLS), token events from the
 *      engine, SIGINT/SIGTERM.
 * Out: HTTP/1.1 responses; rs_msg to the engine: SUBMIT (a parsed
 *      inference request, with its arrival time), DONE (response fully
 *      written: first-token and end times), CANCEL (client gone: its
 *      request leaves the batch at the next step), LOG (rejected request).
 * Assumes: one thread runs all of this; connections are indexed by fd and
 *      carry a generation number, so a token event for a connection that
 *      closed (and whose fd was reused) is recognised and dropped.
 *
 * A connection serves one request at a time; pipelined bytes wait in its
 * input buffer until the response before them is complete, so responses
 * go out in order. Timing contract (checked against an outside observer
 * of the syscalls): arrival = clock read right after the read() that
 * returned the request's first byte; first token = clock read right
 * before the write() that carries the first token's event (non-stream:
 * the response); end = clock read right after the write() that finished
 * the response. Each event is its own write() when the socket keeps up.
 *
 * Streams without --chunked are close-delimited (Connection: close, no
 * Content-Length); with --chunked each SSE event is one HTTP chunk and the
 * connection stays open.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "server.h"

#define READ_CHUNK	65536
#define MAX_MARKS	32

/* Read times of the bytes in a connection's input buffer. */
struct read_mark {
	uint64_t end;		/* stream offset just past the read's bytes */
	uint64_t ns;
};

struct conn {
	int fd;
	uint32_t gen;
	SSL *ssl;
	uint32_t events;	/* current epoll mask */
	struct rs_buf in;
	uint64_t in_base;	/* stream offset of in.p[0] */
	struct read_mark mark[MAX_MARKS];
	int nmarks;
	struct rs_buf out;	/* bytes the socket did not take yet */
	bool failed;		/* a read or write failed: close it */
	bool close_after;	/* close once the response is written */
	bool sent_continue;
	bool ssl_wants_write;
	bool read_paused;	/* input buffer full while a response runs */

	/* the response in progress */
	struct rs_req *req;	/* set while the engine may use it */
	uint64_t seq;
	struct rs_resp resp;
	char id[RS_ID_MAX];
	char model[RS_NAME_MAX];
	bool stream, include_usage, chunked;
	int prompt_tokens;
	int cached_tokens;	/* from the engine's token events */
	int *tokens;		/* non-stream: the tokens so far */
	int ntokens;
	bool first_pending;	/* first token's bytes wait in out */
	bool resp_complete;	/* every byte queued; DONE when flushed */
	uint64_t first_token_ns, last_write_ns;
};

struct server {
	const struct rs_server_cfg *cfg;
	struct rs_engine *eng;
	int ep, lfd, sfd;
	SSL_CTX *tls;
	struct conn **conn;	/* by fd */
	int nconn;
	uint32_t next_gen;
	uint64_t next_seq;
	struct rs_buf scratch;
	struct rs_sse_units units;
};

/* ---- setup -------------------------------------------------------------- */

int rs_server_block_signals(void)
{
	sigset_t set;

	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	return -pthread_sigmask(SIG_BLOCK, &set, NULL);
}

static int listen_on(const char *host, int port, int *bound)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC,
				  .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_PASSIVE | AI_NUMERICSERV };
	struct addrinfo *ai, *a;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char ps[16];
	int fd = -1, one = 1, rc;

	snprintf(ps, sizeof(ps), "%d", port);
	rc = getaddrinfo(host, ps, &hints, &ai);
	if (rc) {
		fprintf(stderr, "refserver: --host %s: %s\n", host,
			gai_strerror(rc));
		return -EINVAL;
	}
	for (a = ai; a; a = a->ai_next) {
		fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK |
			    SOCK_CLOEXEC, 0);
		if (fd < 0)
			continue;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (!bind(fd, a->ai_addr, a->ai_addrlen) && !listen(fd, 1024))
			break;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(ai);
	if (fd < 0) {
		rc = -errno;
		fprintf(stderr, "refserver: cannot listen on %s:%d: %s (is the "
			"port in use? try --port 0)\n", host, port,
			strerror(errno));
		return rc;
	}
	getsockname(fd, (struct sockaddr *)&ss, &sl);
	*bound = ntohs(ss.ss_family == AF_INET6 ?
		       ((struct sockaddr_in6 *)&ss)->sin6_port :
		       ((struct sockaddr_in *)&ss)->sin_port);
	return fd;
}

static int write_port_file(const char *path, int port)
{
	char tmp[4096];
	FILE *f;

	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	f = fopen(tmp, "w");
	if (!f || fprintf(f, "%d\n", port) < 0 || fclose(f) ||
	    rename(tmp, path)) {
		fprintf(stderr, "refserver: --port-file %s: %s\n", path,
			strerror(errno));
		return -errno;
	}
	return 0;
}

static SSL_CTX *tls_setup(const char *cert, const char *key)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

	if (!ctx)
		goto fail;
	if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
		fprintf(stderr, "refserver: --tls-cert %s: cannot load it "
			"(PEM certificate expected)\n", cert);
		goto fail;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(ctx) != 1) {
		fprintf(stderr, "refserver: --tls-key %s: cannot load it or "
			"it does not match --tls-cert %s\n", key, cert);
		goto fail;
	}
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
			 SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	return ctx;
fail:
	ERR_print_errors_fp(stderr);
	SSL_CTX_free(ctx);
	return NULL;
}

/* ---- connections -------------------------------------------------------- */

static void conn_update_events(struct server *s, struct conn *c)
{
	uint32_t ev = EPOLLRDHUP;
	struct epoll_event e = { 0 };

	if (!c->read_paused)
		ev |= EPOLLIN;

	if (c->out.len || c->ssl_wants_write)
		ev |= EPOLLOUT;
	if (ev == c->events)
		return;
	e.events = ev;
	e.data.fd = c->fd;
	if (!epoll_ctl(s->ep, EPOLL_CTL_MOD, c->fd, &e))
		c->events = ev;
}

static void post(struct server *s, enum rs_msg_type t, struct rs_req *r,
		 uint64_t first_ns, uint64_t end_ns)
{
	struct rs_msg m = { .type = t, .req = r, .first_token_ns = first_ns,
			    .end_ns = end_ns };

	if (rs_engine_post(s->eng, &m))
		fprintf(stderr, "refserver: out of memory queueing a message "
			"for %s\n", r->id);
}

static void conn_close(struct server *s, struct conn *c)
{
	if (c->req)
		post(s, RS_MSG_CANCEL, c->req, c->first_token_ns, rs_now_ns());
	epoll_ctl(s->ep, EPOLL_CTL_DEL, c->fd, NULL);
	if (c->ssl) {
		if (!c->failed)
			SSL_shutdown(c->ssl);
		SSL_free(c->ssl);
	}
	close(c->fd);
	s->conn[c->fd] = NULL;
	rs_buf_free(&c->in);
	rs_buf_free(&c->out);
	free(c->tokens);
	free(c);
}

static int conn_table_fit(struct server *s, int fd)
{
	int n = s->nconn ? s->nconn : 256;
	struct conn **p;

	if (fd < s->nconn)
		return 0;
	while (n <= fd)
		n *= 2;
	p = realloc(s->conn, n * sizeof(*p));
	if (!p)
		return -ENOMEM;
	memset(p + s->nconn, 0, (n - s->nconn) * sizeof(*p));
	s->conn = p;
	s->nconn = n;
	return 0;
}

static struct conn *conn_new(struct server *s, int fd)
{
	struct conn *c = calloc(1, sizeof(*c));
	struct epoll_event e = { .events = EPOLLIN | EPOLLRDHUP,
				 .data.fd = fd };

	if (!c || conn_table_fit(s, fd))
		goto fail;
	c->fd = fd;
	c->gen = ++s->next_gen;
	c->events = e.events;
	if (s->tls) {
		c->ssl = SSL_new(s->tls);
		if (!c->ssl || SSL_set_fd(c->ssl, fd) != 1)
			goto fail;
		SSL_set_accept_state(c->ssl);
	}
	if (epoll_ctl(s->ep, EPOLL_CTL_ADD, fd, &e))
		goto fail;
	s->conn[fd] = c;
	return c;
fail:
	if (c)
		SSL_free(c->ssl);
	free(c);
	close(fd);
	return NULL;
}

static void accept_all(struct server *s)
{
	int one = 1;

	for (;;) {
		int fd = accept4(s->lfd, NULL, NULL,
				 SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0) {
			if (errno != EAGAIN && errno != EINTR &&
			    errno != ECONNABORTED)
				fprintf(stderr, "refserver: accept: %s\n",
					strerror(errno));
			if (errno != EINTR && errno != ECONNABORTED)
				return;
			continue;
		}
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		conn_new(s, fd);
	}
}

/* ---- socket I/O (plain or TLS) ------------------------------------------ */

/* Bytes read, 0 at end of stream, -EAGAIN, or another -errno. */
static ssize_t io_read(struct conn *c, void *buf, size_t n)
{
	ssize_t r;
	int err;

	if (!c->ssl) {
		r = read(c->fd, buf, n);
		return r >= 0 ? r : -errno;
	}
	ERR_clear_error();
	c->ssl_wants_write = false;
	r = SSL_read(c->ssl, buf, (int)n);
	if (r > 0)
		return r;
	err = SSL_get_error(c->ssl, (int)r);
	if (err == SSL_ERROR_WANT_READ)
		return -EAGAIN;
	if (err == SSL_ERROR_WANT_WRITE) {
		c->ssl_wants_write = true;
		return -EAGAIN;
	}
	return err == SSL_ERROR_ZERO_RETURN ? 0 : -EIO;
}

static ssize_t io_write(struct conn *c, const void *buf, size_t n)
{
	ssize_t r;
	int err;

	if (!c->ssl) {
		r = write(c->fd, buf, n);
		return r >= 0 ? r : -errno;
	}
	ERR_clear_error();
	r = SSL_write(c->ssl, buf, (int)n);
	if (r > 0)
		return r;
	err = SSL_get_error(c->ssl, (int)r);
	return (err == SSL_ERROR_WANT_WRITE || err == SSL_ERROR_WANT_READ) ?
		-EAGAIN : -EIO;
}

/* Writes what the socket takes; 0 or -1 (c->failed set). */
static int write_some(struct conn *c, const char *p, size_t n, size_t *done)
{
	*done = 0;
	while (*done < n) {
		ssize_t w = io_write(c, p + *done, n - *done);

		if (w == -EINTR)
			continue;
		if (w == -EAGAIN)
			return 0;
		if (w < 0) {
			c->failed = true;
			return -1;
		}
		c->last_write_ns = rs_now_ns();
		*done += w;
	}
	return 0;
}

/*
 * Sends one unit (an event, a head, a body) with its own write() when
 * nothing is queued before it; what the socket does not take is queued.
 */
static void conn_send(struct server *s, struct conn *c, const char *p,
		      size_t n, bool first_token)
{
	size_t done = 0;

	if (c->failed)
		return;
	if (!c->out.len) {
		if (first_token)
			c->first_token_ns = rs_now_ns();
		if (write_some(c, p, n, &done))
			return;
	} else if (first_token) {
		c->first_pending = true;
	}
	if (done < n && rs_buf_put(&c->out, p + done, n - done))
		c->failed = true;
	conn_update_events(s, c);
}

static void conn_flush(struct server *s, struct conn *c)
{
	size_t done;

	if (!c->out.len)
		return;
	if (c->first_pending) {
		c->first_token_ns = rs_now_ns();
		c->first_pending = false;
	}
	if (write_some(c, c->out.p, c->out.len, &done))
		return;
	rs_buf_consume(&c->out, done);
	conn_update_events(s, c);
}

/* ---- responses ---------------------------------------------------------- */

static void send_buf(struct server *s, struct conn *c, struct rs_buf *b,
		     bool first_token)
{
	conn_send(s, c, b->p, b->len, first_token);
	b->len = 0;
}

static void send_error(struct server *s, struct conn *c, int status,
		       const char *msg, bool close)
{
	struct rs_buf *b = &s->scratch;

	b->len = 0;
	if (close)
		c->close_after = true;
	if (rs_http_error(b, status, msg, close))
		c->failed = true;
	else
		send_buf(s, c, b, false);
}

static uint64_t arrival_of(struct conn *c)
{
	for (int i = 0; i < c->nmarks; i++)
		if (c->mark[i].end > c->in_base)
			return c->mark[i].ns;
	return rs_now_ns();
}

static void consume_input(struct conn *c, size_t used)
{
	int k = 0;

	rs_buf_consume(&c->in, used);
	c->in_base += used;
	while (k < c->nmarks && c->mark[k].end <= c->in_base)
		k++;
	memmove(c->mark, c->mark + k, (c->nmarks - k) * sizeof(c->mark[0]));
	c->nmarks -= k;
}

static void add_mark(struct conn *c, uint64_t ns)
{
	uint64_t end = c->in_base + c->in.len;

	if (c->nmarks == MAX_MARKS) {
		/* Keep the oldest times; extend the last mark. */
		c->mark[MAX_MARKS - 1].end = end;
		return;
	}
	c->mark[c->nmarks].end = end;
	c->mark[c->nmarks].ns = ns;
	c->nmarks++;
}

static void response_done(struct server *s, struct conn *c)
{
	uint64_t end_ns = c->last_write_ns;

	post(s, RS_MSG_DONE, c->req, c->first_token_ns, end_ns);
	c->req = NULL;
	c->resp_complete = false;
	free(c->tokens);
	c->tokens = NULL;
	c->ntokens = 0;
}

static void log_rejected(struct server *s, struct conn *c,
			 const struct rs_api_req *a, const char *id,
			 const char *tenant, uint64_t arrival_ns)
{
	struct rs_req *r = rs_req_new(NULL, id, tenant,
				      a && a->model[0] ? a->model :
				      s->cfg->model_name);

	if (!r)
		return;
	r->arrival_ns = arrival_ns;
	r->prompt_len = a ? a->prompt_len : 0;
	post(s, RS_MSG_LOG, r, 0, c->last_write_ns ? c->last_write_ns :
	     rs_now_ns());
}

static void make_id(struct server *s, enum rs_api api, char *id, size_t n)
{
	snprintf(id, n, "%s-%x-%llu", api == RS_API_CHAT ? "chatcmpl" : "cmpl",
		 (unsigned)getpid(), (unsigned long long)++s->next_seq);
}

static const char *pick_tenant(const struct rs_http_req *h,
			       const struct rs_api_req *a)
{
	if (h->has_tenant)
		return h->tenant;
	if (a && a->user[0])
		return a->user;
	return "default";
}

static int check_lengths(struct server *s, struct rs_api_req *a, char *err,
			 size_t errlen)
{
	int ctx = s->cfg->ctx;

	if (a->max_tokens < 0)
		a->max_tokens = s->cfg->default_max_tokens;
	if (a->max_tokens > ctx)
		a->max_tokens = ctx;
	if ((long)a->prompt_len + a->max_tokens > ctx) {
		snprintf(err, errlen, "this model's maximum context length is "
			 "%d tokens; the prompt has %d and max_tokens is %d: "
			 "shorten the prompt or lower max_tokens", ctx,
			 a->prompt_len, a->max_tokens);
		return -EINVAL;
	}
	return 0;
}

static void start_stream(struct server *s, struct conn *c,
			 const struct rs_http_req *h)
{
	struct rs_buf *b = &s->scratch;

	c->chunked = s->cfg->chunked && h->minor == 1;
	if (!c->chunked)
		c->close_after = true;
	b->len = 0;
	if (rs_http_head(b, 200, "text/event-stream", -1, c->chunked,
			 c->close_after))
		c->failed = true;
	else
		send_buf(s, c, b, false);
}

static int start_request(struct server *s, struct conn *c,
			 const struct rs_http_req *h, struct rs_api_req *a,
			 uint64_t arrival_ns)
{
	struct rs_req *r;

	make_id(s, a->api, c->id, sizeof(c->id));
	snprintf(c->model, sizeof(c->model), "%s",
		 a->model[0] ? a->model : s->cfg->model_name);
	r = rs_req_new(a, c->id, pick_tenant(h, a), c->model);
	if (!r || (!a->stream && !(c->tokens = calloc(a->max_tokens,
						       sizeof(int))))) {
		rs_req_free(r);
		return -ENOMEM;
	}
	r->arrival_ns = arrival_ns;
	r->rng = a->has_seed ? a->seed :
		s->eng->cfg.model.seed * 0x9e3779b97f4a7c15ULL + s->next_seq;
	r->fd = c->fd;
	r->gen = c->gen;
	r->seq = c->seq = s->next_seq;
	c->req = r;
	c->resp = (struct rs_resp){ .api = a->api, .id = c->id,
				    .model = c->model, .created = time(NULL) };
	c->stream = a->stream;
	c->include_usage = a->include_usage;
	c->prompt_tokens = a->prompt_len;
	c->first_token_ns = c->last_write_ns = 0;
	c->first_pending = false;
	if (!h->keep_alive)
		c->close_after = true;
	post(s, RS_MSG_SUBMIT, r, 0, 0);
	if (c->stream)
		start_stream(s, c, h);
	return 0;
}

static void handle_inference(struct server *s, struct conn *c,
			     const struct rs_http_req *h, enum rs_api api,
			     uint64_t arrival_ns)
{
	struct rs_api_req a;
	char err[256], id[RS_ID_MAX];
	int rc;

	rc = rs_api_parse(api, h->body, h->body_len, &a, err, sizeof(err));
	if (!rc)
		rc = check_lengths(s, &a, err, sizeof(err));
	if (!rc) {
		rc = start_request(s, c, h, &a, arrival_ns);
		if (rc)
			send_error(s, c, 503, "out of memory", true);
		rs_api_req_free(&a);
		return;
	}
	make_id(s, api, id, sizeof(id));
	send_error(s, c, 400, err, !h->keep_alive);
	log_rejected(s, c, rc == -EINVAL && a.prompt_len ? &a : NULL, id,
		     pick_tenant(h, NULL), arrival_ns);
	rs_api_req_free(&a);
}

static void send_json(struct server *s, struct conn *c, int status,
		      const char *json, size_t n, bool close)
{
	struct rs_buf *b = &s->scratch;

	b->len = 0;
	if (rs_http_json(b, status, json, n, close))
		c->failed = true;
	else
		send_buf(s, c, b, false);
}

static void handle_models(struct server *s, struct conn *c, bool close)
{
	struct rs_buf body = { 0 };

	if (rs_fmt_models(&body, s->cfg->model_name, time(NULL)))
		c->failed = true;
	else
		send_json(s, c, 200, body.p, body.len, close);
	rs_buf_free(&body);
}

static void route(struct server *s, struct conn *c,
		  const struct rs_http_req *h, uint64_t arrival_ns)
{
	size_t plen = strcspn(h->path, "?");
	bool get = !strcmp(h->method, "GET"), postm = !strcmp(h->method, "POST");
	bool close = !h->keep_alive;

#define PATH(p) (plen == strlen(p) && !strncmp(h->path, p, plen))
	if (close)
		c->close_after = true;
	if (PATH("/v1/completions") && postm)
		handle_inference(s, c, h, RS_API_COMPLETIONS, arrival_ns);
	else if (PATH("/v1/chat/completions") && postm)
		handle_inference(s, c, h, RS_API_CHAT, arrival_ns);
	else if (PATH("/health") && get)
		send_json(s, c, 200, "{}", 2, close);
	else if (PATH("/v1/models") && get)
		handle_models(s, c, close);
	else if (PATH("/v1/completions") || PATH("/v1/chat/completions") ||
		 PATH("/health") || PATH("/v1/models"))
		send_error(s, c, 405, "method not allowed for this path", close);
	else
		send_error(s, c, 404, "no such path: try /v1/completions, "
			   "/v1/chat/completions, /v1/models or /health",
			   close);
#undef PATH
}

static void reject_input(struct server *s, struct conn *c, int status)
{
	const char *msg = status == 413 ? "request body too large (see "
		"--max-body)" : status == 431 ? "request head too large" :
		status == 501 ? "unsupported transfer coding" :
		status == 505 ? "only HTTP/1.0 and HTTP/1.1 are served" :
		"malformed HTTP request";

	send_error(s, c, status, msg, true);
	c->in.len = 0;
}

/* Parses and serves buffered requests, one at a time, in order. */
static void process_input(struct server *s, struct conn *c)
{
	while (!c->req && !c->failed && !c->close_after && c->in.len) {
		struct rs_http_req h;
		size_t used;
		int rc = rs_http_parse(c->in.p, c->in.len, s->cfg->max_body,
				       &h, &used);

		if (rc == 0) {
			if (h.head_done && h.expect_continue &&
			    !c->sent_continue) {
				c->sent_continue = true;
				conn_send(s, c, "HTTP/1.1 100 Continue\r\n\r\n",
					  25, false);
			}
			return;
		}
		if (rc < 0) {
			reject_input(s, c, -rc);
			return;
		}
		uint64_t arrival_ns = arrival_of(c);

		consume_input(c, used);
		c->sent_continue = false;
		route(s, c, &h, arrival_ns);
		rs_http_req_free(&h);
	}
}

/* ---- token events ------------------------------------------------------- */

static void stream_token(struct server *s, struct conn *c,
			 const struct rs_tok_ev *ev)
{
	struct rs_stream_tok t = {
		.token = ev->token, .index = ev->index, .last = ev->last,
		.include_usage = c->include_usage,
		.prompt_tokens = c->prompt_tokens, .chunked = c->chunked,
		.report_cached = s->cfg->report_cached,
		.cached_tokens = ev->cached_tokens,
	};
	struct rs_sse_units *u = &s->units;

	if (rs_fmt_stream_token(u, &c->resp, &t)) {
		c->failed = true;
		return;
	}
	for (int i = 0; i < u->n; i++)
		conn_send(s, c, u->unit[i].p, u->unit[i].len,
			  ev->index == 1 && i == u->token_unit);
}

static void whole_response(struct server *s, struct conn *c)
{
	struct rs_buf body = { 0 }, *b = &s->scratch;

	b->len = 0;
	if (rs_fmt_body(&body, &c->resp, c->tokens, c->ntokens,
			c->prompt_tokens,
			s->cfg->report_cached ? c->cached_tokens : -1,
			"length") ||
	    rs_http_json(b, 200, body.p, body.len, c->close_after))
		c->failed = true;
	else
		send_buf(s, c, b, true);
	rs_buf_free(&body);
}

static void after_output(struct server *s, struct conn *c);

static void on_token(struct server *s, const struct rs_tok_ev *ev)
{
	struct conn *c = ev->fd >= 0 && ev->fd < s->nconn ? s->conn[ev->fd] :
		NULL;

	if (!c || c->gen != ev->gen || c->seq != ev->seq || !c->req ||
	    c->resp_complete)
		return;
	if (c->stream) {
		stream_token(s, c, ev);
	} else if (c->ntokens < c->req->max_tokens) {
		c->cached_tokens = ev->cached_tokens;
		c->tokens[c->ntokens++] = ev->token;
		if (ev->last)
			whole_response(s, c);
	}
	if (ev->last)
		c->resp_complete = true;
	after_output(s, c);
}

static void drain_events(struct server *s)
{
	struct rs_tok_ev *ev;
	uint64_t v;
	size_t n;

	if (read(s->eng->efd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		fprintf(stderr, "refserver: eventfd read: %s\n",
			strerror(errno));
	n = rs_engine_take_events(s->eng, &ev);
	for (size_t i = 0; i < n; i++)
		on_token(s, &ev[i]);
	free(ev);
}

/* ---- the loop ----------------------------------------------------------- */

/* After bytes were queued or flushed: finish, close, or serve the next. */
static void after_output(struct server *s, struct conn *c)
{
	if (c->failed) {
		conn_close(s, c);
		return;
	}
	if (c->out.len || c->ssl_wants_write)
		return;
	if (c->req && c->resp_complete)
		response_done(s, c);
	if (c->req)
		return;
	if (c->close_after) {
		conn_close(s, c);
		return;
	}
	if (c->read_paused) {
		c->read_paused = false;
		conn_update_events(s, c);
	}
	process_input(s, c);
	if (c->failed || (!c->req && c->close_after && !c->out.len))
		conn_close(s, c);
}

/*
 * Reads what is there; false when the peer is gone or the read failed.
 * While a response runs, at most one full request more is buffered; then
 * reading pauses (EPOLLIN off) until the response is done.
 */
static bool conn_read(struct server *s, struct conn *c, uint32_t ev)
{
	size_t limit = s->cfg->max_body + RS_HTTP_MAX_HEAD + READ_CHUNK;

	while (c->in.len < limit) {
		ssize_t r;

		if (rs_buf_reserve(&c->in, READ_CHUNK))
			return false;
		r = io_read(c, c->in.p + c->in.len, READ_CHUNK);
		if (r == -EINTR)
			continue;
		if (r == -EAGAIN)
			return true;
		if (r <= 0)
			return false;
		c->in.len += r;
		c->in.p[c->in.len] = '\0';
		add_mark(c, rs_now_ns());
	}
	if (ev & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
		return false;
	c->read_paused = true;
	conn_update_events(s, c);
	return true;
}

static void on_conn_event(struct server *s, struct conn *c, uint32_t ev)
{
	if (ev & EPOLLOUT) {
		c->ssl_wants_write = false;
		conn_flush(s, c);
		if (c->failed) {
			conn_close(s, c);
			return;
		}
	}
	if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
		if (!conn_read(s, c, ev)) {
			c->failed = true;
			conn_close(s, c);
			return;
		}
	}
	after_output(s, c);
}

static bool on_signal(struct server *s)
{
	struct signalfd_siginfo si;

	if (read(s->sfd, &si, sizeof(si)) != sizeof(si))
		return false;
	fprintf(stderr, "refserver: signal %u, shutting down\n", si.ssi_signo);
	return true;
}

static void serve(struct server *s)
{
	struct epoll_event evs[128];

	for (;;) {
		int n = epoll_wait(s->ep, evs, 128, -1);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			fprintf(stderr, "refserver: epoll_wait: %s\n",
				strerror(errno));
			return;
		}
		for (int i = 0; i < n; i++) {
			int fd = evs[i].data.fd;

			if (fd == s->lfd)
				accept_all(s);
			else if (fd == s->sfd) {
				if (on_signal(s))
					return;
			} else if (fd == s->eng->efd)
				drain_events(s);
			else if (fd < s->nconn && s->conn[fd])
				on_conn_event(s, s->conn[fd], evs[i].events);
		}
	}
}

static int add_fd(int ep, int fd)
{
	struct epoll_event e = { .events = EPOLLIN, .data.fd = fd };

	return epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e);
}

static int server_open(struct server *s, const struct rs_server_cfg *cfg)
{
	sigset_t set;
	int port = 0;

	if (cfg->tls_cert && !(s->tls = tls_setup(cfg->tls_cert,
						  cfg->tls_key)))
		return -EINVAL;
	s->lfd = listen_on(cfg->host, cfg->port, &port);
	if (s->lfd < 0)
		return s->lfd;
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	s->sfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	s->ep = epoll_create1(EPOLL_CLOEXEC);
	if (s->sfd < 0 || s->ep < 0 || add_fd(s->ep, s->lfd) ||
	    add_fd(s->ep, s->sfd) || add_fd(s->ep, s->eng->efd)) {
		fprintf(stderr, "refserver: epoll/signalfd setup: %s\n",
			strerror(errno));
		return -errno;
	}
	if (cfg->port_file && write_port_file(cfg->port_file, port))
		return -EIO;
	fprintf(stderr, "refserver: listening on %s:%d%s\n", cfg->host, port,
		s->tls ? " (TLS)" : "");
	return 0;
}

static void server_close(struct server *s)
{
	for (int fd = 0; fd < s->nconn; fd++)
		if (s->conn[fd])
			conn_close(s, s->conn[fd]);
	free(s->conn);
	rs_buf_free(&s->scratch);
	rs_sse_units_free(&s->units);
	if (s->lfd >= 0)
		close(s->lfd);
	if (s->sfd >= 0)
		close(s->sfd);
	if (s->ep >= 0)
		close(s->ep);
	SSL_CTX_free(s->tls);
}

int rs_server_run(const struct rs_server_cfg *cfg, struct rs_engine *e)
{
	struct server s = { .cfg = cfg, .eng = e, .ep = -1, .lfd = -1,
			    .sfd = -1 };
	int rc = server_open(&s, cfg);

	if (!rc)
		serve(&s);
	server_close(&s);
	return rc;
}
