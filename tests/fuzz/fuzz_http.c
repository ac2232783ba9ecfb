/*
 * fuzz_http.c - libFuzzer target for user/http.c, the collector's
 * incremental HTTP/1.1 parser (requests and responses).
 *
 * In:  byte 0: flags (bit 0 responses, bit 1 on_head answers HTTP_NO_BODY,
 *      bit 2 http_close at the end, bit 3 tenant header "X-Org");
 *      byte 1: count of piece descriptors (mod 32), then 3 bytes each:
 *      piece length, hole (>= 0xc0: a hole of b - 0xc0 bytes; 0xff: of
 *      70000), op (bit 0: http_lost after the piece; the rest: time step);
 *      the rest is the stream. A hole skips as many stream bytes (they were
 *      not captured); what the descriptors leave is one last piece.
 * Out: a crash on a memory error, an unterminated head field, body bytes
 *      beyond the input, or (when no descriptor has a hole or a loss) any
 *      difference between the callbacks of the stream fed whole and fed in
 *      pieces, up to the first loss of sync.
 * Assumes: nothing; every piece is an exact-size heap copy.
 */
#include <stdbool.h>
#include <stdint.h>

#include "../../user/http.h"
#include "fuzz.h"

struct fuzz_ctx {
	struct fuzz_log log;
	bool no_body;
	uint64_t body, holes, limit, sum;
};

static int fuzz_on_head(void *ctx, struct http_head *h, uint64_t ts)
{
	struct fuzz_ctx *c = ctx;
	char rec[512];
	int n;

	(void)ts;
	fuzz_check_str(h->method);
	fuzz_check_str(h->path);
	fuzz_check_str(h->content_type);
	fuzz_check_str(h->tenant);
	fuzz_check_str(h->auth);
	n = snprintf(rec, sizeof(rec), "%s|%s|%d|%d|%lld|%d|%d|%s|%d|%s",
		     h->method, h->path, h->status, h->version_minor,
		     (long long)h->content_length, h->chunked, h->conn_close,
		     h->content_type, h->has_tenant, h->tenant);
	fuzz_log_put(&c->log, 'H', 0, rec, n > 0 ? (size_t)n : 0);
	return c->no_body && h->kind == HTTP_RESP ? HTTP_NO_BODY : 0;
}

static void fuzz_on_body(void *ctx, const char *p, size_t n, uint64_t ts)
{
	struct fuzz_ctx *c = ctx;
	(void)ts;
	fuzz_check(n > 0, "empty body callback");
	for (size_t i = 0; i < n; i++)	/* every byte must be readable */
		c->sum += (unsigned char)p[i];
	c->body += n;
	fuzz_check(c->body <= c->limit, "%llu body bytes from %llu input",
		   (unsigned long long)c->body, (unsigned long long)c->limit);
	fuzz_log_put(&c->log, 'B', 1, p, n);
}

static void fuzz_on_hole(void *ctx, uint64_t n, uint64_t ts)
{
	struct fuzz_ctx *c = ctx;

	(void)ts;
	c->holes += n;
	fuzz_log_put(&c->log, 'O', 0, &n, sizeof(n));
}

static void fuzz_on_end(void *ctx, uint64_t ts)
{
	struct fuzz_ctx *c = ctx;

	(void)ts;
	fuzz_log_put(&c->log, 'E', 0, "", 0);
}

static void fuzz_on_lost(void *ctx, bool in_msg, uint64_t ts)
{
	struct fuzz_ctx *c = ctx;

	(void)ts;
	fuzz_log_put(&c->log, 'L', 0, &in_msg, sizeof(in_msg));
	c->log.frozen = 1;	/* resync depends on piece starts */
}

static const struct http_cbs fuzz_cbs = {
	.on_head = fuzz_on_head,
	.on_body = fuzz_on_body,
	.on_hole = fuzz_on_hole,
	.on_end = fuzz_on_end,
	.on_lost = fuzz_on_lost,
};

struct fuzz_piece {
	uint8_t len, hole, op;
};

static uint64_t fuzz_hole_len(uint8_t b)
{
	if (b < 0xc0)
		return 0;
	return b == 0xff ? 70000 : b - 0xc0;
}

static void fuzz_feed(struct http_parser *p, const uint8_t *d, size_t n,
		      uint64_t missing, uint64_t ts)
{
	char *b = fuzz_dup(d, n);

	http_feed(p, b, n, missing, ts);
	free(b);
}

static void fuzz_run(uint8_t flags, const struct fuzz_piece *pc, int npc,
		     struct fuzz_in in, struct fuzz_ctx *c)
{
	struct http_parser p;
	uint64_t ts = 1000;

	c->no_body = flags & 2;
	c->limit = in.n;
	http_init(&p, flags & 1 ? HTTP_RESP : HTTP_REQ, &fuzz_cbs, c,
		  flags & 8 ? "X-Org" : NULL);
	for (int i = 0; i < npc; i++) {
		uint64_t hole = fuzz_hole_len(pc[i].hole);
		size_t got, skipped;
		const uint8_t *d = fuzz_take(&in, pc[i].len, &got);

		ts += 1 + (pc[i].op >> 1);
		fuzz_feed(&p, d, got, hole, ts);
		fuzz_take(&in, hole, &skipped);
		if (pc[i].op & 1)
			http_lost(&p, ts);
	}
	if (in.n)
		fuzz_feed(&p, in.p, in.n, 0, ts + 1);
	if (flags & 4)
		http_close(&p, ts + 2);
	http_free(&p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_in in = { data, size };
	struct fuzz_piece pc[32];
	struct fuzz_ctx whole = { 0 }, split = { 0 };
	uint8_t flags = fuzz_u8(&in);
	int npc = fuzz_u8(&in) % 32;
	bool plain = true;

	for (int i = 0; i < npc; i++) {
		pc[i].len = fuzz_u8(&in);
		pc[i].hole = fuzz_u8(&in);
		pc[i].op = fuzz_u8(&in);
		if (fuzz_hole_len(pc[i].hole) || (pc[i].op & 1))
			plain = false;
	}
	fuzz_run(flags, pc, npc, in, &split);
	if (plain) {
		fuzz_run(flags, NULL, 0, in, &whole);
		fuzz_log_same(&whole.log, &split.log, "http");
	}
	fuzz_log_free(&whole.log);
	fuzz_log_free(&split.log);
	return 0;
}
