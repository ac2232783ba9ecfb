/*
 * The incremental HTTP/1.1 parser: framing, splits at every byte, holes,
 * limits, and streams that are not HTTP.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../user/http.h"

/* What the callbacks saw, as text: comparable between runs. */
struct rec {
	char log[8192];
	size_t len;
	bool head_reply;	/* Content-Length 100 answers a HEAD request */
};

static void logf_(struct rec *r, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void logf_(struct rec *r, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	r->len += vsnprintf(r->log + r->len, sizeof(r->log) - r->len, fmt, ap);
	va_end(ap);
	cr_assert_lt(r->len, sizeof(r->log));
}

static int rec_head(void *ctx, struct http_head *h, uint64_t ts)
{
	struct rec *r = ctx;

	logf_(r, "[head %s %s %d cl=%lld ch=%d close=%d ct=%s ten=%s auth=%s t0=%llu t=%llu]",
	      h->method, h->path, h->status, (long long)h->content_length,
	      h->chunked, h->conn_close, h->content_type,
	      h->has_tenant ? h->tenant : "-", h->auth,
	      (unsigned long long)h->start_ts, (unsigned long long)ts);
	return r->head_reply && h->content_length == 100 ? HTTP_NO_BODY : 0;
}

static void rec_body(void *ctx, const char *p, size_t n, uint64_t ts)
{
	struct rec *r = ctx;

	(void)ts;
	logf_(r, "%.*s", (int)n, p);	/* joined: any split logs the same */
}

static void rec_hole(void *ctx, uint64_t n, uint64_t ts)
{
	(void)ts;
	logf_(ctx, "[hole %llu]", (unsigned long long)n);
}

static void rec_end(void *ctx, uint64_t ts)
{
	logf_(ctx, "[end t=%llu]", (unsigned long long)ts);
}

static void rec_lost(void *ctx, bool in_msg, uint64_t ts)
{
	(void)ts;
	logf_(ctx, "[lost %d]", in_msg);
}

static const struct http_cbs cbs = {
	.on_head = rec_head, .on_body = rec_body, .on_hole = rec_hole,
	.on_end = rec_end, .on_lost = rec_lost,
};

/* Feed s in pieces: cut at `at` (0: none), or every `step` bytes. */
static void feed(struct rec *r, enum http_kind k, const char *s, size_t len,
		 size_t at, size_t step, int no_body)
{
	struct http_parser p;
	size_t off = 0;

	memset(r, 0, sizeof(*r));
	r->head_reply = no_body;
	http_init(&p, k, &cbs, r, NULL);
	if (at) {
		http_feed(&p, s, at, 0, 5);
		off = at;
	}
	while (step && off < len) {
		size_t n = len - off < step ? len - off : step;

		http_feed(&p, s + off, n, 0, 5);
		off += n;
	}
	if (off < len)
		http_feed(&p, s + off, len - off, 0, 5);
	http_close(&p, 9);
	http_free(&p);
}

static void same_at_every_split(enum http_kind k, const char *s,
				const char *want_sub, int no_body)
{
	struct rec whole, part;
	size_t len = strlen(s);

	feed(&whole, k, s, len, 0, 0, no_body);
	cr_assert_not_null(strstr(whole.log, want_sub), "%s", whole.log);
	for (size_t at = 1; at < len; at++) {
		feed(&part, k, s, len, at, 0, no_body);
		cr_assert_str_eq(part.log, whole.log, "cut at %zu", at);
	}
	feed(&part, k, s, len, 0, 1, no_body);
	cr_assert_str_eq(part.log, whole.log, "one-byte pieces");
}

static const char *pipelined_requests =
	"POST /v1/completions?api-version=2 HTTP/1.1\r\n"
	"Host: localhost:8000\r\nContent-Type: application/json\r\n"
	"X-Tenant-Id: acme\r\nAuthorization: Bearer sk-123\r\n"
	"Cookie: secret=1\r\nContent-Length: 11\r\n\r\n{\"a\":\"b c\"}"
	"\r\n"	/* a stray CRLF between messages is allowed */
	"POST /generate HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
	"4;ext=1\r\n{\"x\"\r\n"
	"A\r\n:\"0123456\"\r\n"
	"1\r\n}\r\n"
	"0\r\nX-Trailer: yes\r\n\r\n"
	"GET /health HTTP/1.1\r\nHost: x\r\n\r\n";

Test(http, requests_same_when_split_at_every_byte)
{
	same_at_every_split(HTTP_REQ, pipelined_requests,
			    "[head POST /v1/completions 0 cl=11 ch=0 close=0 "
			    "ct=application/json ten=acme auth=Bearer sk-123 t0=5 t=5]"
			    "{\"a\":\"b c\"}[end t=5]"
			    "[head POST /generate 0 cl=-1 ch=1 close=0 ct= ten=- auth= t0=5 t=5]"
			    "{\"x\":\"0123456\"}[end t=5]"
			    "[head GET /health", 0);
}

Test(http, other_headers_are_not_kept)
{
	struct rec r;

	feed(&r, HTTP_REQ, pipelined_requests, strlen(pipelined_requests), 0,
	     0, 0);
	cr_assert_null(strstr(r.log, "secret"));
	cr_assert_null(strstr(r.log, "api-version"));
}

static const char *responses =
	"HTTP/1.1 100 Continue\r\n\r\n"
	"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
	"transfer-encoding: chunked\r\n\r\n"
	"f\r\ndata: {\"a\":1}\n\n\r\n"
	"1d\r\ndata: {\"a\":2}\n\ndata: [DONE]\n\n\r\n"
	"0\r\n\r\n"
	"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"	/* HEAD answer */
	"HTTP/1.1 204 No Content\r\n\r\n"
	"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n"
	"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
	"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{\"until\":\"close\"}";

Test(http, responses_same_when_split_at_every_byte)
{
	same_at_every_split(HTTP_RESP, responses,
			    "[head   200 cl=-1 ch=1 close=0 ct=text/event-stream ten=- auth= t0=5 t=5]"
			    "data: {\"a\":1}\n\ndata: {\"a\":2}\n\ndata: [DONE]\n\n[end t=5]", 1);
}

Test(http, head_1xx_204_304_have_no_body_and_close_ends_the_last)
{
	struct rec r;
	const char *want =
		"[head   100 cl=-1 ch=0 close=0 ct= ten=- auth= t0=5 t=5][end t=5]";
	const char *tail =
		"[head   200 cl=2 ch=0 close=0 ct= ten=- auth= t0=5 t=5]{}[end t=5]"
		"[head   200 cl=-1 ch=0 close=0 ct=application/json ten=- auth= t0=5 t=5]"
		"{\"until\":\"close\"}[end t=9]";

	/* not told that the third response answers HEAD: its 100 bytes of
	 * "body" swallow the responses after it */
	feed(&r, HTTP_RESP, responses, strlen(responses), 0, 0, 0);
	cr_assert_eq(strncmp(r.log, want, strlen(want)), 0, "%s", r.log);
	cr_assert_null(strstr(r.log, tail));

	/* told (on_head returns HTTP_NO_BODY for it): all parse */
	feed(&r, HTTP_RESP, responses, strlen(responses), 0, 0, 1);
	cr_assert_not_null(strstr(r.log, tail), "%s", r.log);
	cr_assert_not_null(strstr(r.log, "[head   204 cl=-1 ch=0 close=0 ct= ten=- auth= t0=5 t=5][end t=5]"));
	cr_assert_not_null(strstr(r.log, "[head   304 cl=5 ch=0 close=0 ct= ten=- auth= t0=5 t=5][end t=5]"));
}

Test(http, binary_garbage_is_not_http_and_stays_ignored)
{
	struct rec r = { 0 };
	struct http_parser p;
	unsigned char tls[] = { 0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01,
				0xfc, 0x03, 0x03 };
	const char *ok = "GET / HTTP/1.1\r\n\r\n";

	http_init(&p, HTTP_REQ, &cbs, &r, NULL);
	cr_assert_eq(http_feed(&p, (const char *)tls, sizeof(tls), 0, 1), -1);
	cr_assert(p.non_http);
	cr_assert_eq(http_feed(&p, ok, strlen(ok), 0, 2), -1);
	cr_assert_eq(r.len, 0, "no callbacks: %s", r.log);
	http_free(&p);

	/* another protocol in text: SSH banner, Redis, lowercase verbs */
	const char *others[] = { "SSH-2.0-OpenSSH_9.2\r\n", "*1\r\n$4\r\nPING\r\n",
				 "get / HTTP/1.1\r\n\r\n", "HELLO world\r\n", "POST\t/ x" };
	for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++) {
		http_init(&p, HTTP_REQ, &cbs, &r, NULL);
		cr_assert_eq(http_feed(&p, others[i], strlen(others[i]), 0, 1),
			     -1, "%s", others[i]);
		http_free(&p);
	}
	/* a response stream that is not HTTP */
	http_init(&p, HTTP_RESP, &cbs, &r, NULL);
	cr_assert_eq(http_feed(&p, "HTTX/1.1 200", 12, 0, 1), -1);
	http_free(&p);
}

Test(http, head_over_64k_is_not_http)
{
	struct rec r = { 0 };
	struct http_parser p;
	char line[1024];
	int rc = 0;

	http_init(&p, HTTP_REQ, &cbs, &r, NULL);
	http_feed(&p, "GET / HTTP/1.1\r\n", 16, 0, 1);
	memset(line, 'a', sizeof(line));
	memcpy(line, "X-Pad: ", 7);
	line[1022] = '\r';
	line[1023] = '\n';
	for (int i = 0; i < 70 && rc == 0; i++)
		rc = http_feed(&p, line, sizeof(line), 0, 1);
	cr_assert_eq(rc, -1);
	cr_assert_leq(p.hcap, HTTP_HEAD_MAX);
	http_free(&p);
}

Test(http, too_many_headers_is_not_http)
{
	struct rec r = { 0 };
	struct http_parser p;
	char buf[8192];
	size_t n = 0;

	n += sprintf(buf, "GET / HTTP/1.1\r\n");
	for (int i = 0; i < HTTP_HEADERS_MAX + 5; i++)
		n += sprintf(buf + n, "X-%d: 1\r\n", i);
	n += sprintf(buf + n, "\r\n");
	http_init(&p, HTTP_REQ, &cbs, &r, NULL);
	cr_assert_eq(http_feed(&p, buf, n, 0, 1), -1);
	http_free(&p);
}

Test(http, hole_in_body_is_stepped_over_and_next_message_parsed)
{
	struct rec r = { 0 };
	struct http_parser p;
	const char *a = "POST /v1/completions HTTP/1.1\r\nContent-Length: 1000\r\n\r\n{\"model\":";
	const char *b = "\"m\"}";
	const char *c = "GET /next HTTP/1.1\r\n\r\n";

	http_init(&p, HTTP_REQ, &cbs, &r, NULL);
	http_feed(&p, a, strlen(a), 1000 - 9 - 4, 1);
	http_feed(&p, b, strlen(b), 0, 2);
	cr_assert_eq(p.msg_bytes, strlen(a) + 1000 - 9);
	http_feed(&p, c, strlen(c), 0, 3);
	cr_assert_str_eq(r.log,
			 "[head POST /v1/completions 0 cl=1000 ch=0 close=0 ct= ten=- auth= t0=1 t=1]"
			 "{\"model\":[hole 987]\"m\"}[end t=2]"
			 "[head GET /next 0 cl=-1 ch=0 close=0 ct= ten=- auth= t0=3 t=3][end t=3]");
	http_free(&p);
}

Test(http, hole_covering_a_whole_chunk_write_keeps_framing)
{
	struct rec r = { 0 };
	struct http_parser p;
	const char *h = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
	const char *c1 = "20\r\n0123456789";	/* 32-byte chunk, 10 captured */
	const char *c2 = "3\r\nabc\r\n0\r\n\r\n";

	http_init(&p, HTTP_RESP, &cbs, &r, NULL);
	http_feed(&p, h, strlen(h), 0, 1);
	http_feed(&p, c1, strlen(c1), 22 + 2, 2);
	http_feed(&p, c2, strlen(c2), 0, 3);
	cr_assert_str_eq(r.log,
			 "[head   200 cl=-1 ch=1 close=0 ct= ten=- auth= t0=1 t=1]"
			 "0123456789[hole 22]abc[end t=3]");
	http_free(&p);
}

Test(http, hole_in_chunk_framing_loses_sync_until_a_message_start)
{
	struct rec r = { 0 };
	struct http_parser p;
	const char *h = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab";
	const char *mid = "7\r\nxyzxyzx\r\n";
	const char *next = "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nZ";

	http_init(&p, HTTP_RESP, &cbs, &r, NULL);
	http_feed(&p, h, strlen(h), 40, 1);	/* hole runs past the chunk */
	http_feed(&p, mid, strlen(mid), 0, 2);
	http_feed(&p, next, strlen(next), 0, 3);
	cr_assert_str_eq(r.log,
			 "[head   200 cl=-1 ch=1 close=0 ct= ten=- auth= t0=1 t=1]"
			 "ab[hole 3][lost 1]"
			 "[head   200 cl=1 ch=0 close=0 ct= ten=- auth= t0=3 t=3]Z[end t=3]");
	cr_assert(!p.non_http);
	http_free(&p);
}

Test(http, hole_in_head_loses_the_message)
{
	struct rec r = { 0 };
	struct http_parser p;
	const char *a = "POST /v1/chat/completions HTTP/1.1\r\nHost: a";
	const char *body = "{\"messages\":[]}";
	const char *c = "GET /v1/models HTTP/1.1\r\n\r\n";

	http_init(&p, HTTP_REQ, &cbs, &r, NULL);
	http_feed(&p, a, strlen(a), 300, 1);
	http_feed(&p, body, strlen(body), 0, 2);
	http_feed(&p, c, strlen(c), 0, 3);
	cr_assert_str_eq(r.log,
			 "[lost 1][head GET /v1/models 0 cl=-1 ch=0 close=0 ct= ten=- auth= t0=3 t=3][end t=3]");
	http_free(&p);
}

Test(http, chunk_size_garbage_loses_sync)
{
	struct rec r = { 0 };
	struct http_parser p;
	const char *s = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";

	http_init(&p, HTTP_RESP, &cbs, &r, NULL);
	http_feed(&p, s, strlen(s), 0, 1);
	cr_assert_eq(p.state, HTTP_S_RESYNC);
	cr_assert_not_null(strstr(r.log, "[lost 1]"));
	http_free(&p);
}

Test(http, conflicting_content_lengths_rejected)
{
	struct rec r = { 0 };
	struct http_parser p;
	const char *s = "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n";

	http_init(&p, HTTP_REQ, &cbs, &r, NULL);
	cr_assert_eq(http_feed(&p, s, strlen(s), 0, 1), -1);
	http_free(&p);
}

Test(http, named_tenant_header_and_101_switch)
{
	struct rec r = { 0 };
	struct http_parser p;
	const char *s = "GET /ws HTTP/1.1\r\nopenai-organization: org-1\r\nX-Tenant-Id: no\r\n\r\n";
	const char *sw = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x05hello";

	http_init(&p, HTTP_REQ, &cbs, &r, "OpenAI-Organization");
	http_feed(&p, s, strlen(s), 0, 1);
	cr_assert_not_null(strstr(r.log, "ten=org-1"), "%s", r.log);
	http_free(&p);
	memset(&r, 0, sizeof(r));
	http_init(&p, HTTP_RESP, &cbs, &r, NULL);
	cr_assert_eq(http_feed(&p, sw, strlen(sw), 0, 1), 0);
	cr_assert_eq(p.state, HTTP_S_DEAD);
	cr_assert(!p.non_http);
	cr_assert_str_eq(r.log, "[head   101 cl=-1 ch=0 close=0 ct= ten=- auth= t0=1 t=1][end t=1]");
	http_free(&p);
}
