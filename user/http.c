/*
 * http.c - incremental HTTP/1.1 parsing of one direction of a connection.
 *
 * In:  pieces of a byte stream (any split: a head cut at any byte, several
 *      messages in one piece), each with its time and a count of bytes that
 *      followed it uncaptured (a hole).
 * Out: the callbacks of struct http_cbs, in stream order.
 *
 * The idea: a small state machine walks the bytes once. Only the head is
 * copied (into a buffer bounded by HTTP_HEAD_MAX, wiped after parsing since
 * it may hold credentials); body bytes are handed on in place. Framing is
 * by Content-Length, chunked coding (sizes split anywhere, extensions and
 * trailers skipped) or, for responses, the connection's close.
 *
 * A hole inside a body is stepped over by length accounting, and so is a
 * hole that ends a chunk exactly with its CRLF (one chunk per write, cut by
 * the capture cap: the usual case). A hole in a head or in other chunk
 * framing loses sync: the parser reports it and waits for
 * a later piece that begins like a message (a syscall boundary), which is
 * the only place a new message can be recognised safely. A stream whose
 * first bytes are not HTTP is marked non-HTTP and ignored from then on.
 *
 * Assumes: pieces arrive in stream order.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http.h"

#define CHUNK_DIGITS_MAX 15

void http_init(struct http_parser *p, enum http_kind kind,
	       const struct http_cbs *cb, void *ctx, const char *tenant_header)
{
	memset(p, 0, sizeof(*p));
	p->kind = kind;
	p->cb = cb;
	p->ctx = ctx;
	p->tenant_header = tenant_header && *tenant_header ? tenant_header
							     : "X-Tenant-Id";
}

static void wipe_head(struct http_parser *p)
{
	if (p->hbuf && p->hlen)
		explicit_bzero(p->hbuf, p->hlen);
	p->hlen = 0;
	p->nl = 0;
}

void http_free(struct http_parser *p)
{
	wipe_head(p);
	free(p->hbuf);
	p->hbuf = NULL;
	p->hcap = 0;
}

static void msg_end(struct http_parser *p, uint64_t ts)
{
	p->in_msg = false;
	p->messages++;
	p->state = p->switched ? HTTP_S_DEAD : HTTP_S_START;
	if (p->cb->on_end)
		p->cb->on_end(p->ctx, ts);
}

static void go_lost(struct http_parser *p, uint64_t ts)
{
	bool in = p->in_msg;

	p->in_msg = false;
	wipe_head(p);
	p->state = HTTP_S_RESYNC;
	if (p->cb->on_lost)
		p->cb->on_lost(p->ctx, in, ts);
}

/* A malformed head: on the first message the stream is not HTTP at all. */
static void bad_head(struct http_parser *p, uint64_t ts)
{
	if (p->messages == 0) {
		p->non_http = true;
		p->in_msg = false;
		wipe_head(p);
		p->state = HTTP_S_DEAD;
		return;
	}
	go_lost(p, ts);
}

/* Does the piece begin the way a message of this kind begins? */
static bool starts_message(const struct http_parser *p, const char *d,
			   size_t n)
{
	size_t i = 0;

	if (p->kind == HTTP_RESP)
		return n >= 9 && !memcmp(d, "HTTP/1.", 7) && d[8] == ' ';
	while (i < n && i < 16 && isupper((unsigned char)d[i]))
		i++;
	return i > 0 && i + 1 < n && d[i] == ' ' &&
	       (d[i + 1] == '/' || d[i + 1] == '*');
}

/* The first bytes of a head, checked as they come, so garbage stops early. */
static bool prefix_ok(const struct http_parser *p)
{
	const char *d = p->hbuf;
	size_t n = p->hlen, i = 0;

	if (p->kind == HTTP_RESP) {
		size_t m = n < 7 ? n : 7;

		return !memcmp(d, "HTTP/1.", m);
	}
	while (i < n && isupper((unsigned char)d[i]))
		i++;
	if (i > 16 || (i == 0 && n > 0))
		return false;
	if (i == n)
		return true;
	if (d[i] != ' ')
		return false;
	return i + 1 == n || d[i + 1] == '/' || d[i + 1] == '*' ||
	       d[i + 1] == 'h';
}

static int head_append(struct http_parser *p, const char *d, size_t n)
{
	if (p->hlen + n > HTTP_HEAD_MAX)
		return -1;
	if (p->hlen + n > p->hcap) {
		size_t cap = p->hcap ? p->hcap : 1024;
		char *b;

		while (cap < p->hlen + n)
			cap *= 2;
		if (cap > HTTP_HEAD_MAX)
			cap = HTTP_HEAD_MAX;
		b = realloc(p->hbuf, cap);
		if (!b)
			return -1;
		p->hbuf = b;
		p->hcap = cap;
	}
	memcpy(p->hbuf + p->hlen, d, n);
	p->hlen += n;
	return 0;
}

static void copy_str(char *dst, size_t cap, const char *s, size_t n)
{
	if (n >= cap)
		n = cap - 1;
	memcpy(dst, s, n);
	dst[n] = '\0';
}

static bool token_eq(const char *s, size_t n, const char *name)
{
	return strlen(name) == n && !strncasecmp(s, name, n);
}

static bool has_word(const char *v, size_t n, const char *word)
{
	size_t w = strlen(word);

	for (size_t i = 0; i + w <= n; i++)
		if (!strncasecmp(v + i, word, w))
			return true;
	return false;
}

static int parse_start_line(struct http_head *h, const char *l, size_t n)
{
	const char *sp, *end = l + n, *t;

	if (h->kind == HTTP_RESP) {
		if (n < 12 || memcmp(l, "HTTP/1.", 7) || l[8] != ' ' ||
		    !isdigit((unsigned char)l[9]) ||
		    !isdigit((unsigned char)l[10]) ||
		    !isdigit((unsigned char)l[11]))
			return -1;
		h->version_minor = l[7] - '0';
		h->status = (l[9] - '0') * 100 + (l[10] - '0') * 10 +
			    (l[11] - '0');
		return 0;
	}
	sp = memchr(l, ' ', n);
	if (!sp || sp == l || sp - l >= (long)sizeof(h->method))
		return -1;
	copy_str(h->method, sizeof(h->method), l, sp - l);
	t = sp + 1;
	sp = memchr(t, ' ', end - t);
	if (!sp || end - sp < 9 || memcmp(sp + 1, "HTTP/1.", 7))
		return -1;
	h->version_minor = sp[8] - '0';
	for (const char *q = t; q < sp; q++)
		if (*q == '?' || *q == '#') {
			sp = q;
			break;
		}
	copy_str(h->path, sizeof(h->path), t, sp - t);
	return 0;
}

static int parse_length(const char *v, size_t n, int64_t *out)
{
	int64_t x = 0;

	if (n == 0 || n > 18)
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (!isdigit((unsigned char)v[i]))
			return -1;
		x = x * 10 + (v[i] - '0');
	}
	if (*out >= 0 && *out != x)
		return -1;	/* two different lengths: request smuggling */
	*out = x;
	return 0;
}

static int parse_header(const struct http_parser *p, struct http_head *h,
			const char *l, size_t n)
{
	const char *colon = memchr(l, ':', n), *v;
	size_t nn, vn;

	if (!colon || colon == l)
		return -1;
	nn = colon - l;
	while (nn && (l[nn - 1] == ' ' || l[nn - 1] == '\t'))
		nn--;
	v = colon + 1;
	vn = n - (v - l);
	while (vn && (*v == ' ' || *v == '\t'))
		v++, vn--;
	while (vn && (v[vn - 1] == ' ' || v[vn - 1] == '\t'))
		vn--;
	if (token_eq(l, nn, "Content-Length"))
		return parse_length(v, vn, &h->content_length);
	if (token_eq(l, nn, "Transfer-Encoding"))
		h->chunked = has_word(v, vn, "chunked");
	else if (token_eq(l, nn, "Connection"))
		h->conn_close = has_word(v, vn, "close");
	else if (token_eq(l, nn, "Content-Type"))
		copy_str(h->content_type, sizeof(h->content_type), v, vn);
	else if (token_eq(l, nn, "Authorization"))
		copy_str(h->auth, sizeof(h->auth), v, vn);
	if (token_eq(l, nn, p->tenant_header)) {
		copy_str(h->tenant, sizeof(h->tenant), v, vn);
		h->has_tenant = true;
	}
	return 0;
}

/* Parse the complete head in p->hbuf into h. */
static int parse_head(const struct http_parser *p, struct http_head *h)
{
	const char *d = p->hbuf, *end = p->hbuf + p->hlen;
	int line = 0;

	while (d < end) {
		const char *nl = memchr(d, '\n', end - d);
		size_t n = (nl ? nl : end) - d;

		if (n && d[n - 1] == '\r')
			n--;
		if (line == 0) {
			if (parse_start_line(h, d, n) < 0)
				return -1;
		} else if (n == 0) {
			break;
		} else if (*d != ' ' && *d != '\t') {	/* else obs-fold */
			if (line > HTTP_HEADERS_MAX || parse_header(p, h, d, n) < 0)
				return -1;
		}
		line++;
		d = nl ? nl + 1 : end;
	}
	return 0;
}

static void begin_body(struct http_parser *p, const struct http_head *h,
		       int flags, uint64_t ts)
{
	bool resp = p->kind == HTTP_RESP;

	if (resp && h->status / 100 == 1) {
		p->switched = h->status == 101;
		msg_end(p, ts);
	} else if (resp && ((flags & HTTP_NO_BODY) || h->status == 204 ||
			    h->status == 304)) {
		msg_end(p, ts);
	} else if (h->chunked) {
		p->state = HTTP_S_CHUNK_SIZE;
		p->chunk_size = 0;
		p->chunk_digits = 0;
		p->chunk_ext = false;
		p->line_len = 0;
	} else if (h->content_length > 0) {
		p->state = HTTP_S_BODY_LEN;
		p->remaining = h->content_length;
	} else if (h->content_length == 0 || !resp) {
		msg_end(p, ts);
	} else {
		p->state = HTTP_S_BODY_EOF;
	}
}

static void head_done(struct http_parser *p, uint64_t ts)
{
	struct http_head h;
	int flags = 0;

	memset(&h, 0, sizeof(h));
	h.kind = p->kind;
	h.content_length = -1;
	h.start_ts = p->start_ts;
	if (parse_head(p, &h) < 0) {
		explicit_bzero(&h, sizeof(h));
		bad_head(p, ts);
		return;
	}
	wipe_head(p);
	if (p->cb->on_head)
		flags = p->cb->on_head(p->ctx, &h, ts);
	if (p->state == HTTP_S_HEAD)	/* unless the callback stopped us */
		begin_body(p, &h, flags, ts);
	explicit_bzero(h.auth, sizeof(h.auth));
}

static bool bad_byte(unsigned char c)
{
	return (c < 0x20 && c != '\r' && c != '\n' && c != '\t') || c == 0x7f;
}

static size_t step_head(struct http_parser *p, const char *d, size_t n,
			uint64_t ts)
{
	size_t i, before = p->hlen;
	bool done = false;

	for (i = 0; i < n; i++) {
		unsigned char c = d[i];

		if (bad_byte(c)) {
			bad_head(p, ts);
			return n;
		}
		if (c == '\n') {
			if (++p->nl == 2) {
				i++;
				done = true;
				break;
			}
		} else if (c != '\r') {
			p->nl = 0;
		}
	}
	p->msg_bytes += i;
	if (head_append(p, d, i) < 0 || (before < 32 && !prefix_ok(p))) {
		bad_head(p, ts);
		return n;
	}
	if (done)
		head_done(p, ts);
	return i;
}

static size_t step_start(struct http_parser *p, const char *d, size_t n,
			 uint64_t ts)
{
	size_t i = 0;

	while (i < n && (d[i] == '\r' || d[i] == '\n'))
		i++;
	if (i < n) {
		p->state = HTTP_S_HEAD;
		p->in_msg = true;
		p->msg_bytes = 0;
		p->start_ts = ts;
		p->hlen = 0;
		p->nl = 0;
	}
	return i;
}

static size_t step_data(struct http_parser *p, const char *d, size_t n,
			uint64_t ts)
{
	size_t k = n < p->remaining ? n : p->remaining;

	p->msg_bytes += k;
	p->remaining -= k;
	if (p->cb->on_body && k)
		p->cb->on_body(p->ctx, d, k, ts);
	if (p->remaining == 0) {
		if (p->state == HTTP_S_BODY_LEN)
			msg_end(p, ts);
		else
			p->state = HTTP_S_CHUNK_END;
	}
	return k;
}

static int hexval(unsigned char c)
{
	if (isdigit(c))
		return c - '0';
	c = tolower(c);
	return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static size_t step_chunk_size(struct http_parser *p, const char *d,
			      size_t n, uint64_t ts)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = d[i];
		int v = hexval(c);

		p->msg_bytes++;
		if (++p->line_len > HTTP_LINE_MAX) {
			go_lost(p, ts);
			return n;
		}
		if (c == '\n') {
			if (!p->chunk_digits) {
				go_lost(p, ts);
				return n;
			}
			p->line_len = 0;
			p->remaining = p->chunk_size;
			p->state = p->chunk_size ? HTTP_S_CHUNK_DATA
						 : HTTP_S_TRAILER;
			return i + 1;
		}
		if (p->chunk_ext)
			continue;
		if (v >= 0 && p->chunk_digits < CHUNK_DIGITS_MAX) {
			p->chunk_size = p->chunk_size * 16 + v;
			p->chunk_digits++;
		} else if (c == ';' || c == '\r' || c == ' ' || c == '\t') {
			p->chunk_ext = true;
		} else {
			go_lost(p, ts);
			return n;
		}
	}
	return n;
}

static size_t step_chunk_end(struct http_parser *p, const char *d, size_t n,
			     uint64_t ts)
{
	(void)n;
	p->msg_bytes++;
	if (d[0] == '\r')
		return 1;
	if (d[0] != '\n') {
		go_lost(p, ts);
		return n;
	}
	p->state = HTTP_S_CHUNK_SIZE;
	p->chunk_size = 0;
	p->chunk_digits = 0;
	p->chunk_ext = false;
	p->line_len = 0;
	return 1;
}

static size_t step_trailer(struct http_parser *p, const char *d, size_t n,
			   uint64_t ts)
{
	for (size_t i = 0; i < n; i++) {
		p->msg_bytes++;
		if (++p->remaining > HTTP_HEAD_MAX) {
			go_lost(p, ts);
			return n;
		}
		if (d[i] == '\n') {
			if (p->line_len == 0) {
				msg_end(p, ts);
				return i + 1;
			}
			p->line_len = 0;
		} else if (d[i] != '\r') {
			p->line_len++;
		}
	}
	return n;
}

static size_t step(struct http_parser *p, const char *d, size_t n,
		   uint64_t ts)
{
	switch (p->state) {
	case HTTP_S_START:
		return step_start(p, d, n, ts);
	case HTTP_S_HEAD:
		return step_head(p, d, n, ts);
	case HTTP_S_BODY_LEN:
	case HTTP_S_CHUNK_DATA:
		return step_data(p, d, n, ts);
	case HTTP_S_CHUNK_SIZE:
		return step_chunk_size(p, d, n, ts);
	case HTTP_S_CHUNK_END:
		return step_chunk_end(p, d, n, ts);
	case HTTP_S_TRAILER:
		return step_trailer(p, d, n, ts);
	case HTTP_S_BODY_EOF:
		p->msg_bytes += n;
		if (p->cb->on_body)
			p->cb->on_body(p->ctx, d, n, ts);
		return n;
	default:
		return n;
	}
}

static void hole_in_data(struct http_parser *p, uint64_t missing, uint64_t ts)
{
	uint64_t k = missing < p->remaining ? missing : p->remaining;

	p->msg_bytes += k;
	p->remaining -= k;
	if (p->cb->on_hole)
		p->cb->on_hole(p->ctx, k, ts);
	if (p->state == HTTP_S_CHUNK_DATA) {
		/* a write of one whole chunk cut by the cap: the hole also
		 * covers the CRLF after the data, and nothing more */
		if (missing - k <= 2 && p->remaining == 0) {
			p->msg_bytes += missing - k;
			p->state = missing - k == 2 ? HTTP_S_CHUNK_SIZE
						    : HTTP_S_CHUNK_END;
			p->chunk_size = 0;
			p->chunk_digits = 0;
			p->chunk_ext = false;
			p->line_len = 0;
		} else if (missing > k) {	/* chunk framing is gone */
			go_lost(p, ts);
		}
		return;
	}
	if (p->remaining == 0)
		msg_end(p, ts);
	if (missing > k)	/* the next message's start is gone */
		go_lost(p, ts);
}

static void feed_hole(struct http_parser *p, uint64_t missing, uint64_t ts)
{
	switch (p->state) {
	case HTTP_S_BODY_LEN:
	case HTTP_S_CHUNK_DATA:
		hole_in_data(p, missing, ts);
		break;
	case HTTP_S_BODY_EOF:
		p->msg_bytes += missing;
		if (p->cb->on_hole)
			p->cb->on_hole(p->ctx, missing, ts);
		break;
	case HTTP_S_RESYNC:
	case HTTP_S_DEAD:
		break;
	default:
		go_lost(p, ts);
		break;
	}
}

int http_feed(struct http_parser *p, const char *data, size_t len,
	      uint64_t missing, uint64_t ts)
{
	size_t off = 0;

	if (p->state == HTTP_S_RESYNC) {
		if (!starts_message(p, data, len))
			return 0;
		p->state = HTTP_S_START;
	}
	while (off < len && p->state != HTTP_S_DEAD &&
	       p->state != HTTP_S_RESYNC)
		off += step(p, data + off, len - off, ts);
	if (missing)
		feed_hole(p, missing, ts);
	return p->non_http ? -1 : 0;
}

void http_close(struct http_parser *p, uint64_t ts)
{
	if (p->state == HTTP_S_BODY_EOF)
		msg_end(p, ts);
}

void http_lost(struct http_parser *p, uint64_t ts)
{
	if (p->state == HTTP_S_DEAD || p->state == HTTP_S_RESYNC)
		return;
	go_lost(p, ts);
}
