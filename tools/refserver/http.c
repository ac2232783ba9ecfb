/*
 * http.c - byte buffers, the HTTP/1.1 request parser, response framing.
 *
 * In:  received bytes; response pieces.
 * Out: struct rs_http_req, or a status code that rejects the input; bytes
 *      to write.
 * Assumes: requests are small (heads up to RS_HTTP_MAX_HEAD, bodies up to
 *      the caller's max_body), so parsing from the start of the request on
 *      each call costs little and needs no state across reads.
 */
#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http.h"

/* ---- buffers ------------------------------------------------------------ */

int rs_buf_reserve(struct rs_buf *b, size_t extra)
{
	size_t need = b->len + extra + 1, cap = b->cap ? b->cap : 256;
	char *p;

	if (need <= b->cap)
		return 0;
	while (cap < need)
		cap *= 2;
	p = realloc(b->p, cap);
	if (!p)
		return -ENOMEM;
	b->p = p;
	b->cap = cap;
	return 0;
}

int rs_buf_put(struct rs_buf *b, const void *data, size_t n)
{
	if (rs_buf_reserve(b, n))
		return -ENOMEM;
	memcpy(b->p + b->len, data, n);
	b->len += n;
	b->p[b->len] = '\0';
	return 0;
}

int rs_buf_puts(struct rs_buf *b, const char *s)
{
	return rs_buf_put(b, s, strlen(s));
}

int rs_buf_printf(struct rs_buf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0 || rs_buf_reserve(b, n))
		return -ENOMEM;
	va_start(ap, fmt);
	vsnprintf(b->p + b->len, n + 1, fmt, ap);
	va_end(ap);
	b->len += n;
	return 0;
}

int rs_buf_json_str(struct rs_buf *b, const char *s, size_t n)
{
	int rc = rs_buf_put(b, "\"", 1);

	for (size_t i = 0; i < n && !rc; i++) {
		unsigned char c = s[i];

		if (c == '"' || c == '\\')
			rc = rs_buf_printf(b, "\\%c", c);
		else if (c < 0x20 || c >= 0x7f)
			rc = rs_buf_printf(b, "\\u%04x", c);
		else
			rc = rs_buf_put(b, &s[i], 1);
	}
	return rc ? rc : rs_buf_put(b, "\"", 1);
}

void rs_buf_consume(struct rs_buf *b, size_t n)
{
	if (n >= b->len) {
		b->len = 0;
	} else {
		memmove(b->p, b->p + n, b->len - n);
		b->len -= n;
	}
	if (b->p)
		b->p[b->len] = '\0';
}

void rs_buf_free(struct rs_buf *b)
{
	free(b->p);
	memset(b, 0, sizeof(*b));
}

/* ---- request parser ----------------------------------------------------- */

/* Where the head ends (just past the blank line), or 0. */
static size_t head_end(const char *buf, size_t len)
{
	for (size_t i = 0; i + 3 < len; i++)
		if (buf[i] == '\r' && buf[i + 1] == '\n' &&
		    buf[i + 2] == '\r' && buf[i + 3] == '\n')
			return i + 4;
	return 0;
}

static bool is_tchar(unsigned char c)
{
	/* c != 0: strchr would match the string's own terminator. */
	return c && (isalnum(c) || strchr("!#$%&'*+-.^_`|~", c));
}

/* Rejects garbage early: the bytes so far must start like "TOKEN SP". */
static bool plausible_start(const char *buf, size_t len)
{
	size_t i = 0;

	while (i < len && i < 16 && is_tchar(buf[i]))
		i++;
	if (i == len)
		return true;
	return i > 0 && i < 16 && buf[i] == ' ';
}

static int parse_request_line(const char *l, size_t n, struct rs_http_req *r)
{
	const char *sp1 = memchr(l, ' ', n), *sp2;
	size_t mlen, plen;

	if (!sp1)
		return -400;
	sp2 = memchr(sp1 + 1, ' ', n - (sp1 + 1 - l));
	if (!sp2)
		return -400;
	mlen = sp1 - l;
	plen = sp2 - sp1 - 1;
	if (!mlen || mlen >= sizeof(r->method) || !plen ||
	    plen >= sizeof(r->path) || sp1[1] != '/')
		return -400;
	for (size_t i = 0; i < mlen; i++)
		if (!is_tchar(l[i]))
			return -400;
	for (size_t i = 0; i < plen; i++)
		if ((unsigned char)sp1[1 + i] <= ' ' ||
		    (unsigned char)sp1[1 + i] >= 0x7f)
			return -400;
	memcpy(r->method, l, mlen);
	memcpy(r->path, sp1 + 1, plen);
	n -= sp2 + 1 - l;
	l = sp2 + 1;
	if (n != 8 || memcmp(l, "HTTP/1.", 7))
		return (n >= 5 && !memcmp(l, "HTTP/", 5)) ? -505 : -400;
	if (l[7] != '0' && l[7] != '1')
		return -505;
	r->minor = l[7] - '0';
	r->keep_alive = r->minor == 1;
	return 0;
}

struct head_info {
	long long content_length;	/* -1: none */
	bool chunked;
};

static bool value_has_token(const char *v, size_t n, const char *tok)
{
	size_t tl = strlen(tok);

	for (size_t i = 0; i + tl <= n; i++)
		if (!strncasecmp(v + i, tok, tl) &&
		    (i == 0 || v[i - 1] == ' ' || v[i - 1] == ',') &&
		    (i + tl == n || v[i + tl] == ' ' || v[i + tl] == ','))
			return true;
	return false;
}

static int parse_content_length(const char *v, size_t n, struct head_info *h)
{
	long long cl = 0;

	if (!n || n > 15)
		return -400;
	for (size_t i = 0; i < n; i++) {
		if (!isdigit((unsigned char)v[i]))
			return -400;
		cl = cl * 10 + (v[i] - '0');
	}
	if (h->content_length >= 0 && h->content_length != cl)
		return -400;
	h->content_length = cl;
	return 0;
}

static int parse_header(const char *l, size_t n, struct rs_http_req *r,
			struct head_info *h)
{
	const char *colon = memchr(l, ':', n), *v;
	size_t nlen, vlen;

	if (!colon || colon == l)
		return -400;
	nlen = colon - l;
	for (size_t i = 0; i < nlen; i++)
		if (!is_tchar(l[i]))
			return -400;
	v = colon + 1;
	vlen = n - nlen - 1;
	while (vlen && (*v == ' ' || *v == '\t'))
		v++, vlen--;
	while (vlen && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
		vlen--;
#define IS(name) (nlen == strlen(name) && !strncasecmp(l, name, nlen))
	if (IS("content-length"))
		return parse_content_length(v, vlen, h);
	if (IS("transfer-encoding")) {
		if (!value_has_token(v, vlen, "chunked"))
			return -501;
		h->chunked = true;
	} else if (IS("connection")) {
		if (value_has_token(v, vlen, "close"))
			r->keep_alive = false;
		else if (value_has_token(v, vlen, "keep-alive"))
			r->keep_alive = true;
	} else if (IS("expect")) {
		r->expect_continue = value_has_token(v, vlen, "100-continue");
	} else if (IS("x-tenant-id") && vlen) {
		if (vlen >= sizeof(r->tenant))
			vlen = sizeof(r->tenant) - 1;
		memcpy(r->tenant, v, vlen);
		r->tenant[vlen] = '\0';
		r->has_tenant = true;
	}
#undef IS
	return 0;
}

static int parse_head(const char *buf, size_t hlen, struct rs_http_req *r,
		      struct head_info *h)
{
	const char *p = buf, *end = buf + hlen - 2;	/* before last CRLF */
	int rc;

	while (p < end) {
		const char *eol = memchr(p, '\r', end - p);

		if (!eol || eol[1] != '\n')
			return -400;
		if (p == buf)
			rc = parse_request_line(p, eol - p, r);
		else
			rc = parse_header(p, eol - p, r, h);
		if (rc)
			return rc;
		p = eol + 2;
	}
	if (h->chunked && h->content_length >= 0)
		return -400;
	return 0;
}

static int take_body(struct rs_http_req *r, const char *data, size_t n)
{
	r->body = malloc(n + 1);
	if (!r->body)
		return -500;
	memcpy(r->body, data, n);
	r->body[n] = '\0';
	r->body_len = n;
	return 1;
}

/* Hex chunk size line at p; returns bytes of the line or 0 / -1. */
static long chunk_size_line(const char *p, size_t n, size_t *size)
{
	const char *eol = NULL;
	size_t v = 0, i = 0;

	for (size_t j = 0; j + 1 < n; j++)
		if (p[j] == '\r' && p[j + 1] == '\n') {
			eol = p + j;
			break;
		}
	if (!eol)
		return n > 1024 ? -1 : 0;
	for (; p + i < eol && isxdigit((unsigned char)p[i]); i++) {
		if (v > (SIZE_MAX >> 8))
			return -1;
		v = v * 16 + (isdigit((unsigned char)p[i]) ? p[i] - '0' :
			      (tolower((unsigned char)p[i]) - 'a' + 10));
	}
	if (!i || (p + i < eol && p[i] != ';' && p[i] != ' '))
		return -1;
	*size = v;
	return eol + 2 - p;
}

/* Decodes a chunked body starting at buf[off]; 1, 0 or negative status. */
static int chunked_body(const char *buf, size_t len, size_t off,
			size_t max_body, struct rs_http_req *r, size_t *used)
{
	struct rs_buf body = { 0 };
	size_t pos = off;
	int rc = 0;

	for (;;) {
		size_t size;
		long ll = chunk_size_line(buf + pos, len - pos, &size);

		if (ll <= 0) {
			rc = ll ? -400 : 0;
			break;
		}
		if (size > max_body || body.len + size > max_body) {
			rc = -413;
			break;
		}
		pos += ll;
		if (size == 0) {
			/* Trailers, then a blank line. */
			size_t t = head_end(buf + pos - 2, len - pos + 2);

			if (!t) {
				rc = len - pos > RS_HTTP_MAX_HEAD ? -431 : 0;
				break;
			}
			*used = pos - 2 + t;
			rc = take_body(r, body.p ? body.p : "", body.len);
			break;
		}
		if (len - pos < size + 2)
			break;
		if (buf[pos + size] != '\r' || buf[pos + size + 1] != '\n') {
			rc = -400;
			break;
		}
		if (rs_buf_put(&body, buf + pos, size)) {
			rc = -500;
			break;
		}
		pos += size + 2;
	}
	rs_buf_free(&body);
	return rc;
}

int rs_http_parse(const char *buf, size_t len, size_t max_body,
		  struct rs_http_req *req, size_t *used)
{
	struct head_info h = { .content_length = -1 };
	size_t hlen;
	int rc;

	memset(req, 0, sizeof(*req));
	*used = 0;
	if (!plausible_start(buf, len))
		return -400;
	hlen = head_end(buf, len < RS_HTTP_MAX_HEAD ? len : RS_HTTP_MAX_HEAD);
	if (!hlen)
		return len >= RS_HTTP_MAX_HEAD ? -431 : 0;
	rc = parse_head(buf, hlen, req, &h);
	if (rc)
		return rc;
	req->head_done = true;
	if (h.chunked)
		return chunked_body(buf, len, hlen, max_body, req, used);
	if (h.content_length < 0)
		h.content_length = 0;
	if ((unsigned long long)h.content_length > max_body)
		return -413;
	if (len - hlen < (size_t)h.content_length)
		return 0;
	*used = hlen + h.content_length;
	return take_body(req, buf + hlen, h.content_length);
}

void rs_http_req_free(struct rs_http_req *req)
{
	free(req->body);
	req->body = NULL;
	req->body_len = 0;
}

/* ---- responses ---------------------------------------------------------- */

const char *rs_http_reason(int status)
{
	switch (status) {
	case 100: return "Continue";
	case 200: return "OK";
	case 400: return "Bad Request";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 413: return "Payload Too Large";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 503: return "Service Unavailable";
	case 505: return "HTTP Version Not Supported";
	default: return "Error";
	}
}

int rs_http_head(struct rs_buf *b, int status, const char *ctype,
		 long content_length, bool chunked, bool close)
{
	int rc = rs_buf_printf(b, "HTTP/1.1 %d %s\r\nServer: refserver\r\n"
			       "Content-Type: %s\r\n", status,
			       rs_http_reason(status), ctype);

	if (!rc && content_length >= 0)
		rc = rs_buf_printf(b, "Content-Length: %ld\r\n", content_length);
	if (!rc && chunked)
		rc = rs_buf_puts(b, "Transfer-Encoding: chunked\r\n");
	if (!rc && !strcmp(ctype, "text/event-stream"))
		rc = rs_buf_puts(b, "Cache-Control: no-cache\r\n");
	if (!rc)
		rc = rs_buf_puts(b, close ? "Connection: close\r\n\r\n" :
				 "Connection: keep-alive\r\n\r\n");
	return rc;
}

int rs_http_chunk(struct rs_buf *b, const void *data, size_t n)
{
	int rc = rs_buf_printf(b, "%zx\r\n", n);

	if (!rc)
		rc = rs_buf_put(b, data, n);
	return rc ? rc : rs_buf_put(b, "\r\n", 2);
}

int rs_http_json(struct rs_buf *b, int status, const char *json, size_t n,
		 bool close)
{
	int rc = rs_http_head(b, status, "application/json", (long)n, false,
			      close);

	return rc ? rc : rs_buf_put(b, json, n);
}

int rs_http_error(struct rs_buf *b, int status, const char *msg, bool close)
{
	struct rs_buf body = { 0 };
	int rc = rs_buf_puts(&body, "{\"error\":{\"message\":");

	if (!rc)
		rc = rs_buf_json_str(&body, msg, strlen(msg));
	if (!rc)
		rc = rs_buf_printf(&body, ",\"type\":\"invalid_request_error\","
				   "\"code\":%d}}", status);
	if (!rc)
		rc = rs_http_json(b, status, body.p, body.len, close);
	rs_buf_free(&body);
	return rc;
}
