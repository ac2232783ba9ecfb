/*
 * http.h - an incremental HTTP/1.1 message parser, one per direction of a
 * connection.
 *
 * In:  the bytes of one direction in order, in pieces of any size, each with
 *      its time and the count of bytes that followed it but were not
 *      captured (a hole).
 * Out: callbacks: a message's head (the few headers tokentrace
 *      uses), decoded body bytes (chunked framing removed), body bytes that
 *      were not captured, message end, and "the stream broke here".
 *
 * Assumes: requests (kind HTTP_REQ) or responses (HTTP_RESP) only, never
 * both in one parser. The response parser cannot know that a response
 * answers HEAD: on_head says so by returning HTTP_NO_BODY.
 */
#ifndef TT_HTTP_H
#define TT_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HTTP_HEAD_MAX		(64 * 1024)	/* bigger head: not HTTP */
#define HTTP_HEADERS_MAX	128		/* more headers: not HTTP */
#define HTTP_LINE_MAX		1024		/* chunk size line */

enum http_kind {
	HTTP_REQ = 0,
	HTTP_RESP = 1,
};

enum http_state {
	HTTP_S_START = 0,	/* between messages */
	HTTP_S_HEAD,		/* inside the start line and headers */
	HTTP_S_BODY_LEN,	/* Content-Length body */
	HTTP_S_CHUNK_SIZE,	/* chunk size line (with extensions) */
	HTTP_S_CHUNK_DATA,
	HTTP_S_CHUNK_END,	/* the CRLF after chunk data */
	HTTP_S_TRAILER,		/* trailer lines after the last chunk */
	HTTP_S_BODY_EOF,	/* body ends when the connection closes */
	HTTP_S_RESYNC,		/* lost sync: wait for a piece that starts a message */
	HTTP_S_DEAD,		/* not HTTP (or switched protocol): ignore */
};

/* The parts of a message head that tokentrace keeps. */
struct http_head {
	enum http_kind kind;
	uint64_t start_ts;	/* time of the piece with the first byte */
	char method[16];
	char path[128];		/* without the query string */
	int status;
	int version_minor;
	int64_t content_length;	/* -1 if none */
	bool chunked;
	bool conn_close;
	char content_type[64];
	bool has_tenant;
	char tenant[64];	/* value of the tenant header */
	char auth[512];		/* Authorization; the receiver wipes it */
};

#define HTTP_NO_BODY	1	/* on_head: this response has no body */

struct http_cbs {
	int (*on_head)(void *ctx, struct http_head *h, uint64_t ts);
	void (*on_body)(void *ctx, const char *p, size_t n, uint64_t ts);
	void (*on_hole)(void *ctx, uint64_t n, uint64_t ts);
	void (*on_end)(void *ctx, uint64_t ts);
	/* sync lost; in_msg: a started message is broken */
	void (*on_lost)(void *ctx, bool in_msg, uint64_t ts);
};

struct http_parser {
	enum http_kind kind;
	enum http_state state;
	const struct http_cbs *cb;
	void *ctx;
	const char *tenant_header;
	char *hbuf;		/* head bytes until the blank line */
	size_t hlen, hcap;
	int nl;			/* newlines in a row while in the head */
	uint64_t remaining;	/* body or chunk bytes left */
	uint64_t chunk_size;
	int chunk_digits;
	bool chunk_ext;		/* past the hex digits of a size line */
	size_t line_len;	/* size or trailer line length */
	bool is_head_resp;	/* current response has no body */
	bool switched;		/* 101: next bytes are another protocol */
	bool in_msg;
	uint64_t start_ts;	/* time of the current message's first byte */
	bool non_http;		/* the first bytes were not HTTP */
	uint64_t messages;	/* messages ended */
	uint64_t msg_bytes;	/* bytes of the current message, holes too */
};

void http_init(struct http_parser *p, enum http_kind kind,
	       const struct http_cbs *cb, void *ctx,
	       const char *tenant_header);
void http_free(struct http_parser *p);

/* Returns 0, or -1 when the stream is not HTTP (from then on: ignored). */
int http_feed(struct http_parser *p, const char *data, size_t len,
	      uint64_t missing, uint64_t ts);

/* The connection closed: ends a close-delimited body. */
void http_close(struct http_parser *p, uint64_t ts);

/* Bytes of unknown count were lost: resynchronise at a message start. */
void http_lost(struct http_parser *p, uint64_t ts);

#endif
