/*
 * resp.c - an incremental HTTP/1.1 response parser for inference APIs.
 *
 * In:  the bytes of one response, in pieces exactly as read() returned
 *      them (a piece may end anywhere: inside the status line, a header, a
 *      chunk-size line, an SSE event or a UTF-8 character).
 * Out: status, keep-alive, the response id, the usage block, the number of
 *      token events, and whether the response is complete.
 * Assumes: one response at a time per parser (no pipelining); a body is
 *      either text/event-stream (OpenAI-style "data: <json>" events ending
 *      with "data: [DONE]") or one JSON document.
 *
 * The parser is a small state machine: header bytes are gathered until the
 * blank line, then the body is framed by Content-Length, by chunks, or by
 * the connection's end. Framed body bytes go to one sink: the SSE sink
 * splits them into lines and events and hands each event's data to cJSON;
 * the JSON sink keeps the whole body and reads it at the end. A token event
 * is an event whose choices carry non-empty text (completions), delta
 * content (chat) or reasoning content; the role-only first chat chunk and
 * the usage-only last chunk carry none. Text is looked at, never kept.
 */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cJSON.h>

#include "loadgen.h"

/* A token count a long can hold; anything else is left unknown. */
static bool count_ok(const cJSON *v)
{
	return cJSON_IsNumber(v) && v->valuedouble >= 0 &&
	       v->valuedouble < 9e18;
}

#define HEAD_MAX	(64 * 1024)
#define LINE_MAX_SSE	(4 * 1024 * 1024)
#define BODY_MAX	(16 * 1024 * 1024)

enum {
	ST_HEAD = 0,
	ST_BODY_LENGTH,
	ST_CHUNK_SIZE,
	ST_CHUNK_DATA,
	ST_CHUNK_CRLF,
	ST_TRAILER,
	ST_BODY_CLOSE,
	ST_DONE,
	ST_ERROR,
};

/* ---- buffers ----------------------------------------------------------- */

static int buf_append(struct lg_buf *b, const char *p, size_t n, size_t max)
{
	if (b->len + n + 1 > max)
		return -1;
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 256;
		char *q;

		while (cap < b->len + n + 1)
			cap *= 2;
		q = realloc(b->p, cap);
		if (!q)
			return -1;
		b->p = q;
		b->cap = cap;
	}
	memcpy(b->p + b->len, p, n);
	b->len += n;
	b->p[b->len] = '\0';
	return 0;
}

static void buf_free(struct lg_buf *b)
{
	free(b->p);
	memset(b, 0, sizeof(*b));
}

static long fail(struct lg_resp *r, const char *what)
{
	if (!r->error[0])
		snprintf(r->error, sizeof(r->error), "%s (after %zu bytes)",
			 what, r->bytes);
	r->state = ST_ERROR;
	return -1;
}

/* ---- JSON: id, usage, error, token check -------------------------------- */

static bool nonempty_str(const cJSON *j)
{
	return cJSON_IsString(j) && j->valuestring && j->valuestring[0];
}

static bool choice_has_token(const cJSON *c)
{
	const cJSON *delta = cJSON_GetObjectItemCaseSensitive(c, "delta");
	const cJSON *msg = cJSON_GetObjectItemCaseSensitive(c, "message");
	const cJSON *calls;

	if (nonempty_str(cJSON_GetObjectItemCaseSensitive(c, "text")))
		return true;
	if (delta) {
		calls = cJSON_GetObjectItemCaseSensitive(delta, "tool_calls");
		if (nonempty_str(cJSON_GetObjectItemCaseSensitive(delta, "content")) ||
		    nonempty_str(cJSON_GetObjectItemCaseSensitive(delta,
							"reasoning_content")) ||
		    (cJSON_IsArray(calls) && cJSON_GetArraySize(calls) > 0))
			return true;
	}
	return msg && nonempty_str(cJSON_GetObjectItemCaseSensitive(msg,
								    "content"));
}

/* True when this document carries at least one generated token. */
static bool json_has_token(const cJSON *root)
{
	const cJSON *choices = cJSON_GetObjectItemCaseSensitive(root, "choices");
	const cJSON *c, *tok;

	cJSON_ArrayForEach(c, choices) {
		if (choice_has_token(c))
			return true;
	}
	/* TGI generate_stream and llama.cpp /completion events */
	tok = cJSON_GetObjectItemCaseSensitive(root, "token");
	if (tok && nonempty_str(cJSON_GetObjectItemCaseSensitive(tok, "text")))
		return true;
	return nonempty_str(cJSON_GetObjectItemCaseSensitive(root, "content")) ||
	       nonempty_str(cJSON_GetObjectItemCaseSensitive(root,
							   "generated_text"));
}

static void json_take_meta(struct lg_resp *r, const cJSON *root)
{
	const cJSON *id = cJSON_GetObjectItemCaseSensitive(root, "id");
	const cJSON *usage = cJSON_GetObjectItemCaseSensitive(root, "usage");
	const cJSON *error = cJSON_GetObjectItemCaseSensitive(root, "error");
	const cJSON *v;

	if (!r->id[0] && nonempty_str(id))
		snprintf(r->id, sizeof(r->id), "%s", id->valuestring);
	if (cJSON_IsObject(usage)) {
		v = cJSON_GetObjectItemCaseSensitive(usage, "prompt_tokens");
		if (count_ok(v))
			r->prompt_tokens = (long)v->valuedouble;
		v = cJSON_GetObjectItemCaseSensitive(usage, "completion_tokens");
		if (count_ok(v))
			r->completion_tokens = (long)v->valuedouble;
		v = cJSON_GetObjectItemCaseSensitive(
			cJSON_GetObjectItemCaseSensitive(usage,
				"prompt_tokens_details"), "cached_tokens");
		if (count_ok(v))
			r->cached_tokens = (long)v->valuedouble;
	}
	if (error && !cJSON_IsNull(error) && !r->error[0]) {
		v = cJSON_GetObjectItemCaseSensitive(error, "message");
		snprintf(r->error, sizeof(r->error), "server error: %.120s",
			 nonempty_str(v) ? v->valuestring :
			 nonempty_str(error) ? error->valuestring : "(no message)");
	}
}

/* Reads one JSON document (an SSE event's data or a whole body); returns
 * 1 when it is a token event. Unreadable JSON is not a token. */
static int take_json(struct lg_resp *r, const char *text)
{
	cJSON *root = cJSON_Parse(text);
	int tok;

	if (!root)
		return 0;
	json_take_meta(r, root);
	tok = json_has_token(root) ? 1 : 0;
	cJSON_Delete(root);
	return tok;
}

/* ---- SSE sink ------------------------------------------------------------ */

static int sse_dispatch(struct lg_resp *r)
{
	int tok = 0;

	if (!r->data.len)
		return 0;
	if (strcmp(r->data.p, "[DONE]") == 0)
		r->saw_done = true;
	else
		tok = take_json(r, r->data.p);
	r->data.len = 0;
	return tok;
}

/* One complete line (without its '\n'); returns token events (0 or 1). */
static int sse_line(struct lg_resp *r, char *s, size_t n)
{
	const char *v;

	if (n && s[n - 1] == '\r')
		s[--n] = '\0';
	if (n == 0)
		return sse_dispatch(r);
	if (n < 5 || strncmp(s, "data:", 5) != 0)
		return 0;	/* event:, id:, retry:, ": comment" */
	v = s + 5;
	if (*v == ' ')
		v++;
	if (r->data.len && buf_append(&r->data, "\n", 1, LINE_MAX_SSE) < 0)
		return -1;
	if (buf_append(&r->data, v, strlen(v), LINE_MAX_SSE) < 0)
		return -1;
	return 0;
}

static long sse_feed(struct lg_resp *r, const char *p, size_t n)
{
	long toks = 0;

	while (n) {
		const char *nl = memchr(p, '\n', n);
		size_t take = nl ? (size_t)(nl - p) : n;
		int t;

		if (buf_append(&r->line, p, take, LINE_MAX_SSE) < 0)
			return fail(r, "SSE line longer than 4 MiB");
		p += take;
		n -= take;
		if (!nl)
			break;
		p++;
		n--;
		t = sse_line(r, r->line.p, r->line.len);
		r->line.len = 0;
		if (t < 0)
			return fail(r, "SSE event longer than 4 MiB");
		toks += t;
	}
	return toks;
}

/* Body bytes, already unframed. */
static long body_feed(struct lg_resp *r, const char *p, size_t n)
{
	if (r->sse)
		return sse_feed(r, p, n);
	if (buf_append(&r->data, p, n, BODY_MAX) < 0)
		return fail(r, "response body larger than 16 MiB");
	return 0;
}

/* The body ended; returns token events found at the end (JSON bodies). */
static long body_end(struct lg_resp *r)
{
	r->state = ST_DONE;
	r->done = true;
	if (r->sse || !r->data.len)
		return 0;
	return take_json(r, r->data.p);
}

/* ---- head ------------------------------------------------------------------ */

static char *trim(char *s)
{
	char *e;

	while (*s == ' ' || *s == '\t')
		s++;
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r'))
		*--e = '\0';
	return s;
}

static int header_line(struct lg_resp *r, char *line, bool *chunked,
		       long long *clen)
{
	char *colon = strchr(line, ':');
	char *name, *val;

	if (!colon)
		return -1;
	*colon = '\0';
	name = trim(line);
	val = trim(colon + 1);
	if (!strcasecmp(name, "content-length")) {
		char *end;

		errno = 0;
		*clen = strtoll(val, &end, 10);
		if (errno || end == val || *clen < 0)
			return -1;
	} else if (!strcasecmp(name, "transfer-encoding")) {
		if (strcasestr(val, "chunked"))
			*chunked = true;
	} else if (!strcasecmp(name, "connection")) {
		if (strcasestr(val, "close"))
			r->conn_close = true;
		if (strcasestr(val, "keep-alive"))
			r->conn_keep = true;
	} else if (!strcasecmp(name, "content-type")) {
		if (strcasestr(val, "text/event-stream"))
			r->sse = true;
	}
	return 0;
}

static int status_line(struct lg_resp *r, const char *line)
{
	char *end;
	long code;

	if (strncmp(line, "HTTP/1.", 7) != 0 || !line[7] || line[8] != ' ')
		return -1;
	r->http10 = line[7] == '0';
	code = strtol(line + 9, &end, 10);
	if (code < 100 || code > 999 || end != line + 12)
		return -1;
	r->status = (int)code;
	return 0;
}

static void choose_body_mode(struct lg_resp *r, bool chunked, long long clen)
{
	if (r->status == 204 || r->status == 304)
		r->mode = LG_BODY_NONE;
	else if (chunked)
		r->mode = LG_BODY_CHUNKED;
	else if (clen >= 0)
		r->mode = clen ? LG_BODY_LENGTH : LG_BODY_NONE;
	else
		r->mode = LG_BODY_CLOSE;
	r->remaining = clen > 0 ? (uint64_t)clen : 0;
	r->keep_alive = !r->conn_close && (!r->http10 || r->conn_keep) &&
			r->mode != LG_BODY_CLOSE;
	switch (r->mode) {
	case LG_BODY_NONE:
		r->state = ST_DONE;
		r->done = true;
		break;
	case LG_BODY_LENGTH:
		r->state = ST_BODY_LENGTH;
		break;
	case LG_BODY_CHUNKED:
		r->state = ST_CHUNK_SIZE;
		break;
	case LG_BODY_CLOSE:
		r->state = ST_BODY_CLOSE;
		break;
	}
}

/* The head (status line and headers, NUL-terminated) is complete. */
static long head_done(struct lg_resp *r)
{
	char *save = NULL, *line;
	bool chunked = false;
	long long clen = -1;

	line = strtok_r(r->head.p, "\n", &save);
	if (!line || status_line(r, line) < 0)
		return fail(r, "response does not start with an HTTP/1.x status line");
	while ((line = strtok_r(NULL, "\n", &save))) {
		if (!*trim(line))
			break;
		if (header_line(r, line, &chunked, &clen) < 0)
			return fail(r, "malformed response header");
	}
	r->head.len = 0;
	if (r->status >= 100 && r->status < 200 && r->status != 101) {
		/* interim response: the real one follows */
		r->status = 0;
		r->sse = r->conn_close = r->conn_keep = false;
		return 0;
	}
	choose_body_mode(r, chunked, clen);
	return 0;
}

/* Gathers head bytes; returns bytes used, or -1. */
static long head_feed(struct lg_resp *r, const char *p, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		size_t l;

		if (buf_append(&r->head, p + i, 1, HEAD_MAX) < 0)
			return fail(r, "response head larger than 64 KiB");
		l = r->head.len;
		if (p[i] == '\n' && ((l >= 2 && r->head.p[l - 2] == '\n') ||
				     (l >= 3 && r->head.p[l - 2] == '\r' &&
				      r->head.p[l - 3] == '\n'))) {
			if (head_done(r) < 0)
				return -1;
			return (long)(i + 1);
		}
	}
	return (long)n;
}

/* ---- chunk framing ------------------------------------------------------- */

/* Gathers one line into r->head; returns bytes used and sets *complete. */
static size_t line_feed(struct lg_resp *r, const char *p, size_t n,
			bool *complete, int *err)
{
	const char *nl = memchr(p, '\n', n);
	size_t take = nl ? (size_t)(nl - p) + 1 : n;

	*complete = nl != NULL;
	*err = buf_append(&r->head, p, take, 4096);
	return take;
}

static long chunk_size_line(struct lg_resp *r)
{
	char *end;
	unsigned long long sz;

	errno = 0;
	sz = strtoull(r->head.p, &end, 16);
	r->head.len = 0;
	if (errno || end == r->head.p ||
	    (*end && *end != ';' && *end != '\r' && *end != '\n' && *end != ' '))
		return fail(r, "malformed chunk-size line");
	r->remaining = sz;
	r->state = sz ? ST_CHUNK_DATA : ST_TRAILER;
	return 0;
}

/* ---- the state machine -------------------------------------------------- */

/* One step: consumes some of p; returns bytes used (>= 0) or -1. Token
 * events found are added to *toks. */
static long step(struct lg_resp *r, const char *p, size_t n, long *toks)
{
	size_t take;
	bool complete;
	int err;
	long t;

	switch (r->state) {
	case ST_HEAD:
		return head_feed(r, p, n);
	case ST_BODY_LENGTH:
	case ST_CHUNK_DATA:
		take = n < r->remaining ? n : (size_t)r->remaining;
		t = body_feed(r, p, take);
		if (t < 0)
			return -1;
		*toks += t;
		r->remaining -= take;
		if (!r->remaining) {
			if (r->state == ST_CHUNK_DATA)
				r->state = ST_CHUNK_CRLF;
			else
				*toks += body_end(r);
		}
		return (long)take;
	case ST_BODY_CLOSE:
		t = body_feed(r, p, n);
		if (t < 0)
			return -1;
		*toks += t;
		return (long)n;
	case ST_CHUNK_SIZE:
	case ST_CHUNK_CRLF:
	case ST_TRAILER:
		take = line_feed(r, p, n, &complete, &err);
		if (err < 0)
			return fail(r, "chunk framing line longer than 4 KiB");
		if (!complete)
			return (long)take;
		if (r->state == ST_CHUNK_SIZE) {
			if (chunk_size_line(r) < 0)
				return -1;
		} else if (r->state == ST_CHUNK_CRLF) {
			bool blank = !strcmp(r->head.p, "\r\n") ||
				     !strcmp(r->head.p, "\n");

			r->head.len = 0;
			if (!blank)
				return fail(r, "chunk data not followed by CRLF");
			r->state = ST_CHUNK_SIZE;
		} else {
			bool blank = !strcmp(r->head.p, "\r\n") ||
				     !strcmp(r->head.p, "\n");

			r->head.len = 0;
			if (blank)
				*toks += body_end(r);
		}
		return (long)take;
	default:
		return (long)n;	/* done: extra bytes are not ours */
	}
}

long lg_resp_feed(struct lg_resp *r, const char *p, size_t n)
{
	long toks = 0;

	if (r->state == ST_ERROR)
		return -1;
	while (n && r->state != ST_DONE) {
		long used = step(r, p, n, &toks);

		if (used < 0)
			return -1;
		r->bytes += (size_t)used;
		p += used;
		n -= (size_t)used;
	}
	r->token_events += toks;
	return toks;
}

int lg_resp_eof(struct lg_resp *r)
{
	if (r->state == ST_DONE)
		return 0;
	if (r->state == ST_BODY_CLOSE) {
		r->token_events += body_end(r);
		return 0;
	}
	if (r->state == ST_ERROR)
		return -1;
	return (int)fail(r, r->status ? "connection closed before the response ended"
			 : "connection closed before a response arrived");
}

void lg_resp_init(struct lg_resp *r)
{
	memset(r, 0, sizeof(*r));
	r->prompt_tokens = -1;
	r->completion_tokens = -1;
	r->cached_tokens = -1;
}

void lg_resp_reset(struct lg_resp *r)
{
	struct lg_buf head = r->head, line = r->line, data = r->data;

	lg_resp_init(r);
	head.len = line.len = data.len = 0;
	r->head = head;
	r->line = line;
	r->data = data;
}

void lg_resp_free(struct lg_resp *r)
{
	buf_free(&r->head);
	buf_free(&r->line);
	buf_free(&r->data);
	lg_resp_init(r);
}
