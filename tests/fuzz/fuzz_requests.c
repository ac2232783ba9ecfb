/*
 * fuzz_requests.c - libFuzzer target for the whole request tracker,
 * user/requests.c (with http.c, sse.c, api.c and tenant.c under it): two
 * connections' request and response streams interleaved, with holes,
 * losses and closes.
 *
 * In:  byte 0: tenant kind (mod 5), bit 7: the tenant header is "X-Org";
 *      byte 1: count of ops (mod 64), then 4 bytes each: kind, length,
 *      hole, time step. kind bit 0: direction (0 in, 1 out); bit 1: the
 *      second connection; bits 2-4: 0-4 data, 5 lost, 6 close, 7 flush;
 *      bit 5: length * 16. A hole byte >= 0xe0 means a hole of
 *      (b - 0xe0) * 7 bytes (0xff: 1 MiB) that skips as many stream bytes.
 *      Then a 2-byte length of the request stream, the request stream,
 *      and the response stream (the rest). Both connections read the same
 *      two streams from their own offsets. After the ops, what is left of
 *      each stream is fed to the first connection, which is then closed.
 *      When no op has a hole or a loss, the input runs twice: the second
 *      time each data piece is cut in two (at hole byte / 256 of it, same
 *      time), and where neither run lost HTTP sync (resync waits for a
 *      piece that starts a message, so it depends on the pieces), every
 *      field of every request must come out the same.
 * Out: a crash on a memory error or leak, an unterminated field, token
 *      times out of order or outside the request's life, counts that
 *      contradict each other, a request JSON line that is not JSON, or a
 *      request that changes when its bytes are split differently.
 * Assumes: times only grow, as they do from the kernel's clock.
 */
#include <stdbool.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "../../user/requests.h"
#include "fuzz.h"

struct fuzz_stream {
	const uint8_t *p;
	size_t n;
};

struct fuzz_conn {
	struct tt_conn_meta meta;
	struct fuzz_stream s[2];	/* by enum tt_dir */
};

struct fuzz_run {
	struct fuzz_conn conns[2];
	struct fuzz_log log;	/* every request, every field */
	bool split;		/* cut each data piece in two */
	uint64_t ts;
	uint64_t sync_lost;	/* after a loss, resync depends on pieces */
};

static char fuzz_json[1 << 16];

static void fuzz_check_json(const struct tt_request *r)
{
	FILE *f = fmemopen(fuzz_json, sizeof(fuzz_json), "w");
	cJSON *j;
	long n;

	fuzz_check(f != NULL, "fmemopen");
	fuzz_check(tt_request_write_json(r, f) >= 0, "write_json failed");
	n = ftell(f);
	fclose(f);
	fuzz_check(n > 0 && n < (long)sizeof(fuzz_json), "json %ld bytes", n);
	fuzz_check(fuzz_json[n - 1] == '\n', "json line without newline");
	j = cJSON_ParseWithLength(fuzz_json, n);
	fuzz_check(j != NULL, "request line is not JSON: %.*s", (int)n,
		   fuzz_json);
	cJSON_Delete(j);
}

/* Every field, token times included, pointers left out. */
static void fuzz_log_request(struct fuzz_log *l, const struct tt_request *r)
{
	struct tt_request c = *r;

	c.token_ns = NULL;
	fuzz_log_put(l, 'R', 0, &c, sizeof(c));
	fuzz_log_put(l, 'T', 0, r->token_ns,
		     r->token_ns_len * sizeof(*r->token_ns));
}

static void fuzz_on_request(void *ctx, const struct tt_request *r)
{
	struct fuzz_run *run = ctx;

	fuzz_log_request(&run->log, r);
	fuzz_check_str(r->id);
	fuzz_check_str(r->model);
	fuzz_check_str(r->tenant);
	fuzz_check_str(r->api);
	fuzz_check_str(r->path);
	fuzz_check(r->token_ns_len <= r->token_events &&
		   r->token_ns_len <= TT_TOKEN_NS_MAX,
		   "%u token times for %u events", r->token_ns_len,
		   r->token_events);
	fuzz_check(!r->token_ns_len || r->token_ns, "token times missing");
	for (uint32_t i = 0; i < r->token_ns_len; i++) {
		fuzz_check(r->token_ns[i] >= r->arrival_ns,
			   "token %u before arrival", i);
		fuzz_check(!i || r->token_ns[i] >= r->token_ns[i - 1],
			   "token %u out of order", i);
	}
	fuzz_check(!r->first_token_ns || r->first_token_ns >= r->arrival_ns,
		   "first token %llu before arrival %llu",
		   (unsigned long long)r->first_token_ns,
		   (unsigned long long)r->arrival_ns);
	/* a request flushed with no response seen has no end (0) */
	fuzz_check(r->end_ns >= r->arrival_ns ||
		   (r->http_status == 0 && r->end_ns == 0),
		   "end %llu before arrival %llu (%s, status %d)",
		   (unsigned long long)r->end_ns,
		   (unsigned long long)r->arrival_ns, tt_req_end_name(r->end),
		   r->http_status);
	fuzz_check(r->prompt_tokens >= -1 && r->completion_tokens >= -1,
		   "negative counts");
	fuzz_check(r->ttft_ms >= 0 || r->ttft_ms == -1, "ttft %f", r->ttft_ms);
	fuzz_check_json(r);
}

static void fuzz_piece(struct reqtrack *rt, struct fuzz_conn *c,
		       enum tt_dir d, const uint8_t *p, size_t n, size_t hole,
		       uint64_t ts)
{
	char *b = fuzz_dup(p, n);

	reqtrack_data(rt, &c->meta, d, ts, b, n, hole);
	free(b);
}

/* cut: where the split run cuts the piece, in 256ths of it */
static void fuzz_data(struct reqtrack *rt, struct fuzz_run *run,
		      struct fuzz_conn *c, enum tt_dir d, size_t len,
		      size_t hole, uint8_t cut)
{
	struct fuzz_stream *s = &c->s[d];
	size_t n = len < s->n ? len : s->n;
	size_t skip, at = run->split ? n * cut / 256 : 0;

	if (at)
		fuzz_piece(rt, c, d, s->p, at, 0, run->ts);
	fuzz_piece(rt, c, d, s->p + at, n - at, hole, run->ts);
	s->p += n;
	s->n -= n;
	skip = hole < s->n ? hole : s->n;
	s->p += skip;
	s->n -= skip;
}

static size_t fuzz_hole_len(uint8_t b)
{
	if (b < 0xe0)
		return 0;
	return b == 0xff ? 1u << 20 : (size_t)(b - 0xe0) * 7;
}

static void fuzz_op(struct reqtrack *rt, struct fuzz_run *run,
		    const uint8_t op[4])
{
	struct fuzz_conn *c = &run->conns[op[0] >> 1 & 1];
	enum tt_dir d = op[0] & 1 ? TT_DIR_OUT : TT_DIR_IN;
	size_t len = op[0] & 0x20 ? (size_t)op[1] * 16 : op[1];

	run->ts += op[3];
	switch (op[0] >> 2 & 7) {
	case 5:
		reqtrack_lost(rt, &c->meta, run->ts);
		break;
	case 6:
		reqtrack_close(rt, c->meta.conn_id, run->ts);
		c->meta.conn_id += 2;	/* later ops: a new connection */
		break;
	case 7:
		reqtrack_flush(rt, run->ts);
		break;
	default:
		fuzz_data(rt, run, c, d, len, fuzz_hole_len(op[2]), op[2]);
		break;
	}
}

static bool fuzz_op_plain(const uint8_t op[4])
{
	int kind = op[0] >> 2 & 7;

	return kind != 5 && (kind >= 5 || !fuzz_hole_len(op[2]));
}

static void fuzz_streams(struct fuzz_run *run, const uint8_t *req,
			 size_t reqlen, const uint8_t *resp, size_t resplen)
{
	for (int i = 0; i < 2; i++) {
		struct fuzz_conn *c = &run->conns[i];

		c->meta.pid = 4242;
		c->meta.conn_id = i + 1;
		c->meta.family = 2;	/* AF_INET */
		c->meta.local_port = 8000;
		c->meta.remote_port = 50000 + i;
		c->meta.remote_addr[0] = 10;
		c->s[TT_DIR_IN] = (struct fuzz_stream){ req, reqlen };
		c->s[TT_DIR_OUT] = (struct fuzz_stream){ resp, resplen };
	}
}

static void fuzz_run(struct fuzz_run *run, struct reqtrack_opts *o,
		     uint8_t (*ops)[4], int nops)
{
	struct fuzz_conn *c0 = &run->conns[0];
	struct reqtrack_stats st;
	struct reqtrack *rt;

	run->ts = 1000000;
	o->ctx = run;
	rt = reqtrack_new(o);
	fuzz_check(rt != NULL, "reqtrack_new failed");
	for (int i = 0; i < nops; i++)
		fuzz_op(rt, run, ops[i]);
	run->ts++;
	fuzz_data(rt, run, c0, TT_DIR_IN, c0->s[TT_DIR_IN].n, 0, 128);
	run->ts++;
	fuzz_data(rt, run, c0, TT_DIR_OUT, c0->s[TT_DIR_OUT].n, 0, 128);
	reqtrack_close(rt, c0->meta.conn_id, ++run->ts);
	reqtrack_flush(rt, ++run->ts);
	reqtrack_get_stats(rt, &st);
	run->sync_lost = st.sync_lost;
	reqtrack_free(rt);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_in in = { data, size };
	struct reqtrack_opts o = { 0 };
	struct fuzz_run whole = { 0 }, split = { .split = true };
	uint8_t flags = fuzz_u8(&in), ops[64][4];
	int nops = fuzz_u8(&in) % 64;
	size_t inlen, got;
	const uint8_t *req;
	bool plain = true;

	o.tenant_kind = (enum tt_tenant_kind)(flags % 5);
	if (flags & 0x80) {
		o.tenant_kind = TT_TENANT_HEADER;
		strcpy(o.tenant_header, "X-Org");
	}
	memset(o.hash_key, 0x5a, sizeof(o.hash_key));
	o.on_request = fuzz_on_request;
	for (int i = 0; i < nops; i++) {
		for (int k = 0; k < 4; k++)
			ops[i][k] = fuzz_u8(&in);
		plain = plain && fuzz_op_plain(ops[i]);
	}
	inlen = fuzz_u16(&in);
	req = fuzz_take(&in, inlen, &got);
	fuzz_streams(&whole, req, got, in.p, in.n);
	fuzz_run(&whole, &o, ops, nops);
	if (plain) {
		fuzz_streams(&split, req, got, in.p, in.n);
		fuzz_run(&split, &o, ops, nops);
		if (!whole.sync_lost && !split.sync_lost)
			fuzz_log_same(&whole.log, &split.log, "requests");
	}
	fuzz_log_free(&whole.log);
	fuzz_log_free(&split.log);
	return 0;
}
