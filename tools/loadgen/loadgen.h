/*
 * loadgen.h - the load generator's pieces, shared by its files and tests.
 *
 * In:  command-line options (lg_opts_parse), bytes read from an
 *      OpenAI-compatible server (lg_resp_feed).
 * Out: one lg_result per request (written as a JSON line), and a summary
 *      (lg_summary) of throughput and latency percentiles.
 *
 * Pieces: option and range parsing (opts.c), a seeded random source with
 * Poisson arrivals and weighted tenants (rng.c), an incremental HTTP/1.1
 * response parser that understands SSE token streams (resp.c), TCP and TLS
 * connections (conn.c), and the worker threads that drive the load (run.c).
 * Every symbol carries the lg_ prefix; times are CLOCK_MONOTONIC ns.
 */
#ifndef LG_LOADGEN_H
#define LG_LOADGEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define LG_MAX_TENANTS	32
#define LG_NAME_MAX	64
#define LG_ID_MAX	128
#define LG_ERR_MAX	160

/* ---- options ------------------------------------------------------------ */

/* A length: lo == hi for a fixed number, else uniform over [lo, hi]. */
struct lg_range {
	long lo;
	long hi;
};

struct lg_tenant {
	char name[LG_NAME_MAX];
	double weight;
	long shared_prefix;	/* --shared-prefix: bytes every prompt of
				 * this tenant begins with */
};

struct lg_opts {
	/* target, from --url */
	bool tls;
	char host[256];
	char port[16];
	char path[512];
	bool path_given;

	bool chat;
	bool stream;
	bool insecure;
	bool allow_errors;
	bool quiet;		/* no summary on stdout */
	bool close_each;	/* --close: a new connection per request */
	double cancel_frac;	/* --cancel-frac: streams cut after 1st token */
	const char *shared_prefix;	/* --shared-prefix, resolved at the end */
	int turns;		/* --turns: requests per conversation (1) */

	int concurrency;	/* workers (closed loop) or in-flight cap (open) */
	double rate;		/* > 0: open loop, Poisson arrivals per second */
	long requests;		/* > 0: stop after this many */
	double duration_s;	/* > 0: stop issuing after this long */
	double timeout_s;	/* per request */

	struct lg_tenant tenants[LG_MAX_TENANTS];
	int n_tenants;
	struct lg_range prompt_len;
	struct lg_range max_tokens;
	char model[128];
	const char *api_key;
	const char *out_path;
	uint64_t seed;
};

/* Fills defaults, then parses argv. Returns 0 to run, 1 when --help was
 * printed, -1 with err filled on bad input. */
int lg_opts_parse(struct lg_opts *o, int argc, char **argv,
		  char *err, size_t errlen);
void lg_opts_defaults(struct lg_opts *o);
void lg_usage(FILE *f);
/* "N" or "LO-HI", non-negative, LO <= HI. Returns 0 or -1. */
int lg_parse_range(const char *s, struct lg_range *r);
/* "name:weight,name:weight,..." (weight defaults to 1). Returns 0 or -1. */
int lg_parse_tenants(const char *s, struct lg_opts *o, char *err,
		     size_t errlen);
/* --shared-prefix: "N" for every tenant, or "name:N,..." for each named
 * one (after --tenants is known). Returns 0 or -1. */
int lg_parse_shared_prefix(const char *s, struct lg_opts *o, char *err,
			   size_t errlen);
/* http(s)://host[:port][/path]. Returns 0 or -1. */
int lg_parse_url(const char *s, struct lg_opts *o, char *err, size_t errlen);

/* ---- random source -------------------------------------------------------- */

struct lg_rng {
	uint64_t s;
};

void lg_rng_seed(struct lg_rng *r, uint64_t seed, uint64_t stream);
uint64_t lg_rng_next(struct lg_rng *r);
double lg_rng_unit(struct lg_rng *r);		/* [0, 1) */
long lg_rng_range(struct lg_rng *r, const struct lg_range *range);
double lg_rng_exp(struct lg_rng *r, double rate);	/* seconds */
int lg_rng_tenant(struct lg_rng *r, const struct lg_tenant *t, int n);

/* ---- response parser -------------------------------------------------------- */

enum lg_body_mode {
	LG_BODY_NONE = 0,
	LG_BODY_LENGTH,
	LG_BODY_CHUNKED,
	LG_BODY_CLOSE,		/* read until the server closes */
};

struct lg_buf {
	char *p;
	size_t len;
	size_t cap;
};

/*
 * One HTTP response, fed in pieces as they are read. Results are the
 * public fields at the top; the rest is parser state.
 */
struct lg_resp {
	int status;		/* 0 until the status line is read */
	bool done;		/* the whole response has been read */
	bool keep_alive;	/* the connection may carry another request */
	bool sse;		/* text/event-stream body */
	bool saw_done;		/* "data: [DONE]" seen */
	long token_events;
	long prompt_tokens;	/* -1 until a usage block is seen */
	long completion_tokens;
	long cached_tokens;	/* usage.prompt_tokens_details; -1: none */
	char id[LG_ID_MAX];
	char error[LG_ERR_MAX];	/* protocol error or server error event */
	size_t bytes;		/* response bytes consumed */

	/* parser state */
	int state;
	enum lg_body_mode mode;
	bool http10;
	bool conn_close;
	bool conn_keep;
	uint64_t remaining;	/* body or chunk bytes left */
	struct lg_buf head;	/* header bytes, or a chunk-size line */
	struct lg_buf line;	/* SSE line being assembled */
	struct lg_buf data;	/* SSE event data, or a whole JSON body */
};

void lg_resp_init(struct lg_resp *r);
void lg_resp_reset(struct lg_resp *r);	/* for the next response */
void lg_resp_free(struct lg_resp *r);
/* Returns token events found in this piece (>= 0), or -1 on a protocol
 * error (r->error says what). Bytes after the end of the response are
 * ignored. */
long lg_resp_feed(struct lg_resp *r, const char *p, size_t n);
/* The server closed the connection. Completes a read-to-close body;
 * returns -1 (r->error set) when the response was cut short. */
int lg_resp_eof(struct lg_resp *r);

/* ---- connections -------------------------------------------------------------- */

struct lg_tls;			/* shared TLS context (opaque) */
struct lg_conn {
	int fd;
	void *ssl;		/* SSL *, NULL for plain TCP */
	long uses;		/* requests sent on this connection */
};

struct lg_tls *lg_tls_new(bool insecure, char *err, size_t errlen);
void lg_tls_free(struct lg_tls *t);
int lg_conn_open(struct lg_conn *c, const struct lg_opts *o,
		 struct lg_tls *tls, char *err, size_t errlen);
void lg_conn_close(struct lg_conn *c);
/* Both return bytes moved, 0 on EOF (read only), -1 on error with err set;
 * deadline_ns is a CLOCK_MONOTONIC time, 0 for none. */
long lg_conn_write_all(struct lg_conn *c, const char *p, size_t n,
		       int64_t deadline_ns, char *err, size_t errlen);
long lg_conn_read(struct lg_conn *c, char *p, size_t n, int64_t deadline_ns,
		  char *err, size_t errlen);

/* ---- running ------------------------------------------------------------------- */

struct lg_result {
	char id[LG_ID_MAX];
	const char *tenant;
	int status;
	char error[LG_ERR_MAX];
	int64_t sent_ns;
	int64_t first_token_ns;
	int64_t end_ns;
	long token_events;
	long prompt_tokens;
	long completion_tokens;
	long prompt_len;
	long max_tokens;
	long conversation;	/* --turns > 1: which one, and which turn */
	int turn;
	long cached_tokens;	/* usage.prompt_tokens_details; -1: none */
	bool stream;
	bool cancel;		/* to be cut after its first token */
	bool cancelled;		/* was cut by the client */
};

struct lg_summary {
	long ok;
	long failed;
	long cancelled;		/* --cancel-frac: cut by the client */
	double wall_s;
	double req_per_s;
	long completion_tokens;
	double tok_per_s;
	double ttft_p50_ms;
	double ttft_p99_ms;
	double itl_p50_ms;
	double itl_p99_ms;
};

int64_t lg_now_ns(void);
/* What request idx sends, from the seed and idx alone. */
struct lg_shape {
	int tenant;		/* index into o->tenants */
	long prompt_len;	/* bytes, shared prefix and history included */
	long max_tokens;
	bool cancel;
	long conversation;	/* -1 without --turns */
	int turn;		/* 0-based */
};

/*
 * Request idx's prompt (malloc'd, NUL-terminated printable ASCII) and its
 * shape: the tenant's --shared-prefix bytes, then with --turns K the
 * earlier turns of its conversation (request idx - idx % K onwards: each
 * turn's own bytes and a stand-in of max_tokens bytes for its answer),
 * then its own --prompt-len bytes. NULL when out of memory.
 */
char *lg_shape_request(const struct lg_opts *o, long idx, struct lg_shape *s);
/* Builds the HTTP request for one prompt; returns a malloc'd buffer. */
char *lg_build_request(const struct lg_opts *o, const char *tenant,
		       const char *prompt, long max_tokens, size_t *len);
/* Writes one result as a JSON line (no text of prompt or completion). */
void lg_result_write(FILE *f, const struct lg_result *res);
/* Percentile (0..100) of v[0..n), nearest rank; sorts v. 0 when n == 0. */
double lg_percentile(double *v, size_t n, double pct);
/* Runs the whole load. Returns 0 when it ran (failures are counted in s),
 * -1 with err set when it could not start. */
int lg_run(const struct lg_opts *o, struct lg_summary *s, char *err,
	   size_t errlen);
void lg_summary_print(FILE *f, const struct lg_opts *o,
		      const struct lg_summary *s);

#endif /* LG_LOADGEN_H */
