/*
 * requests.h - the request model, and the tracker that builds it.
 *
 * In:  a connection's two byte streams as the server saw them, in order,
 *      with the time each piece crossed the socket (reqtrack_data), and the
 *      connection's end (reqtrack_close).
 * Out: one struct tt_request per inference request, handed to a callback
 *      when the request is finished (response complete, connection closed,
 *      or the collector flushing at exit).
 *
 * The tracker owns the HTTP/1.1 parser state of each connection, the SSE
 * parser of each streamed response and the API recognition (OpenAI, TGI,
 * llama.cpp). It never stores prompt or completion text.
 */
#ifndef TT_REQUESTS_H
#define TT_REQUESTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define TT_ID_MAX	96
#define TT_NAME_MAX	64
#define TT_TOKEN_NS_MAX	(1u << 20)	/* token times kept per request */

/* Direction of bytes, seen from the traced server. */
enum tt_dir {
	TT_DIR_IN = 0,		/* the server read them: requests */
	TT_DIR_OUT = 1,		/* the server wrote them: responses */
};

enum tt_tokens_source {
	TT_TOKENS_NONE = 0,	/* nothing known */
	TT_TOKENS_USAGE,	/* the server's own usage block */
	TT_TOKENS_EVENTS,	/* token events counted on the wire */
	TT_TOKENS_ESTIMATE,	/* estimated from bytes */
};

/* Where a request's cached prompt tokens come from. */
enum tt_cached_source {
	TT_CACHED_NONE = 0,	/* nothing known: cached_tokens means nothing */
	TT_CACHED_WIRE,		/* the server said (usage details, llama.cpp) */
	TT_CACHED_ESTIMATE,	/* inferred from what the prefill cost */
};

/* How a request ended. */
enum tt_req_end {
	TT_END_COMPLETE = 0,	/* whole response seen */
	TT_END_CLIENT_GONE,	/* connection closed before the response ended */
	TT_END_SERVER_ERROR,	/* 5xx, or an error event mid-stream */
	TT_END_CLIENT_ERROR,	/* 4xx */
	TT_END_DATA_LOST,	/* bytes were lost: counts may be short */
	TT_END_OPEN,		/* still running when the collector stopped */
};

/* flags: anything incomplete about a request */
#define TT_REQF_REQ_TRUNCATED	(1u << 0) /* request bytes beyond the capture cap */
#define TT_REQF_RESP_TRUNCATED	(1u << 1) /* response bytes beyond the capture cap */
#define TT_REQF_LOST		(1u << 2) /* events lost (ring buffer full) */
#define TT_REQF_NO_USAGE	(1u << 3) /* no usage block: counts from events */
#define TT_REQF_BAD_JSON	(1u << 4) /* request or response JSON unreadable */
#define TT_REQF_ABORTED		(1u << 5) /* stream cut before its end */
#define TT_REQF_PROMPT_EST	(1u << 6) /* prompt tokens estimated from its
					     bytes by the report */

/* Connection identity and addresses, filled by the connection layer. */
struct tt_conn_meta {
	uint32_t pid;
	uint64_t conn_id;	/* unique per connection for the collector's life */
	uint16_t family;	/* AF_INET or AF_INET6; 0 if unknown */
	uint16_t local_port;
	uint16_t remote_port;
	uint8_t local_addr[16];
	uint8_t remote_addr[16];
};

struct tt_request {
	uint32_t pid;
	uint64_t conn_id;
	char id[TT_ID_MAX];		/* response id, "" if none */
	char model[TT_NAME_MAX];
	char tenant[TT_NAME_MAX];
	char api[24];			/* "completions", "chat", "embeddings",
					   "tgi", "llamacpp", "other" */
	char path[64];
	bool stream;
	int http_status;		/* 0 if no response seen */
	int64_t max_tokens;		/* -1 if not given */
	uint64_t arrival_ns;		/* first request byte read by the server */
	uint64_t first_token_ns;	/* 0 if none */
	uint64_t end_ns;		/* last response byte written */
	uint32_t token_events;
	const uint64_t *token_ns;	/* times of the token events; valid only
					   during the callback */
	uint32_t token_ns_len;		/* entries in token_ns: token_events,
					   or fewer past TT_TOKEN_NS_MAX */
	int64_t prompt_tokens;		/* -1 if unknown */
	int64_t completion_tokens;	/* -1 if unknown */
	enum tt_tokens_source tokens_source;
	int64_t cached_tokens;		/* of prompt_tokens, served from a
					   prefix cache; see cached_source */
	uint32_t prompt_bytes;		/* of prompt text (never kept) */
	uint32_t prefix_bytes;		/* how many of them an earlier prompt
					   to the model began with (blocks
					   of 16 bytes; the first 64 KiB) */
	enum tt_cached_source cached_source;
	enum tt_req_end end;
	uint32_t flags;
	double ttft_ms;			/* -1 if no token */
	double itl_p50_ms, itl_p99_ms, itl_max_ms;	/* -1 if < 2 tokens */
	uint64_t bytes_in, bytes_out;
};

/* Where the tenant of a request comes from. */
enum tt_tenant_kind {
	TT_TENANT_DEFAULT = 0,	/* header X-Tenant-Id, then JSON user */
	TT_TENANT_HEADER,	/* a named header */
	TT_TENANT_USER,		/* the JSON "user" field */
	TT_TENANT_API_KEY,	/* Authorization: Bearer, as a keyed hash */
	TT_TENANT_CLIENT_ADDR,	/* the client's address */
};

typedef void (*tt_request_cb)(void *ctx, const struct tt_request *req);

struct reqtrack_opts {
	enum tt_tenant_kind tenant_kind;
	char tenant_header[64];		/* for TT_TENANT_HEADER */
	uint8_t hash_key[32];		/* for TT_TENANT_API_KEY */
	tt_request_cb on_request;
	void *ctx;
};

struct reqtrack_stats {
	uint64_t connections, http_connections, non_http_connections;
	uint64_t requests, bytes_in, bytes_out, bytes_missing;
	uint64_t sync_lost;		/* times a stream lost HTTP framing */
	uint64_t orphan_responses;	/* responses to no request seen */
};

struct reqtrack;

struct reqtrack *reqtrack_new(const struct reqtrack_opts *opts);
void reqtrack_free(struct reqtrack *rt);

/*
 * len bytes captured at ts_ns on the connection in direction dir, followed
 * by `missing` bytes the syscall moved beyond the capture cap (a hole in
 * the stream that the parser must step over and mark).
 */
void reqtrack_data(struct reqtrack *rt, const struct tt_conn_meta *conn,
		   enum tt_dir dir, uint64_t ts_ns, const void *data,
		   size_t len, size_t missing);

/* Events of this connection were lost: what is in flight is incomplete. */
void reqtrack_lost(struct reqtrack *rt, const struct tt_conn_meta *conn,
		   uint64_t ts_ns);

/* The connection closed: finish what is in flight and free it. */
void reqtrack_close(struct reqtrack *rt, uint64_t conn_id, uint64_t ts_ns);

/* Finish every open request (TT_END_OPEN) and free all connections. */
void reqtrack_flush(struct reqtrack *rt, uint64_t now_ns);

void reqtrack_get_stats(const struct reqtrack *rt, struct reqtrack_stats *st);

/* One request as a JSON line (DESIGN.md's request record), with '\n'. */
int tt_request_write_json(const struct tt_request *req, FILE *out);
/* The same object without its closing brace (and no newline), for a
 * caller that appends fields. */
int tt_request_write_json_open(const struct tt_request *req, FILE *out);

const char *tt_tokens_source_name(enum tt_tokens_source s);
const char *tt_cached_source_name(enum tt_cached_source s);
const char *tt_req_end_name(enum tt_req_end e);

#endif
