/*
 * http.h - HTTP/1.1 for the reference server: a byte buffer, an
 * incremental request parser, and response framing.
 *
 * In:  the bytes a connection has received so far (any split across reads,
 *      any number of pipelined requests).
 * Out: one parsed request at a time (method, path, tenant header, body
 *      decoded from Content-Length or chunked framing) and the number of
 *      bytes it used; or "need more"; or the status code that rejects the
 *      input. Response heads, chunks and error bodies as bytes.
 * Assumes: nothing about how bytes arrived. The parser keeps no state
 *      between calls: it re-reads the buffer from the start of the current
 *      request each time, which is cheap because heads are bounded.
 */
#ifndef RS_HTTP_H
#define RS_HTTP_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

#define RS_HTTP_MAX_HEAD	16384	/* request line + headers */
#define RS_TENANT_MAX		128

struct rs_buf {
	char *p;
	size_t len, cap;
};

/* Room for extra more bytes and a NUL after them. */
int rs_buf_reserve(struct rs_buf *b, size_t extra);
int rs_buf_put(struct rs_buf *b, const void *data, size_t n);
int rs_buf_puts(struct rs_buf *b, const char *s);
int rs_buf_printf(struct rs_buf *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* A JSON string literal, quotes included; never emits invalid UTF-8. */
int rs_buf_json_str(struct rs_buf *b, const char *s, size_t n);
/* Drops the first n bytes. */
void rs_buf_consume(struct rs_buf *b, size_t n);
void rs_buf_free(struct rs_buf *b);

struct rs_http_req {
	char method[16];
	char path[256];
	int minor;		/* HTTP/1.minor */
	bool keep_alive;
	bool head_done;		/* set even when the body is still missing */
	bool expect_continue;
	bool has_tenant;
	char tenant[RS_TENANT_MAX];	/* X-Tenant-Id */
	char *body;		/* malloc'd, NUL-terminated; caller frees */
	size_t body_len;
};

/*
 * Parses the request at the start of buf[0..len).
 * Returns 1 with *req filled and *used set when a whole request is there;
 * 0 when more bytes are needed; or a negative HTTP status (-400 malformed,
 * -413 body over max_body, -431 head over RS_HTTP_MAX_HEAD, -501 unknown
 * transfer coding, -505 not HTTP/1.x). *req is cleared first in all cases.
 */
int rs_http_parse(const char *buf, size_t len, size_t max_body,
		  struct rs_http_req *req, size_t *used);
void rs_http_req_free(struct rs_http_req *req);

const char *rs_http_reason(int status);
/* A response head. content_length < 0: none. */
int rs_http_head(struct rs_buf *b, int status, const char *ctype,
		 long content_length, bool chunked, bool close);
/* data framed as one chunk of a chunked body (n > 0). */
int rs_http_chunk(struct rs_buf *b, const void *data, size_t n);
/* A whole response with an OpenAI-style JSON error body. */
int rs_http_error(struct rs_buf *b, int status, const char *msg, bool close);
/* A whole response with a JSON body. */
int rs_http_json(struct rs_buf *b, int status, const char *json, size_t n,
		 bool close);

#endif
