/*
 * The request tracker fed realistic traffic (vLLM/uvicorn chunked SSE, TGI,
 * llama.cpp, pipelined keep-alive), whole and split at every byte.
 */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../user/requests.h"
#include "../../user/tenant.h"

#define MAXP 64
#define MAXR 8

struct piece {
	enum tt_dir dir;
	uint64_t ts;
	char *data;
	size_t len, missing;
};

struct traffic {
	struct piece p[MAXP];
	int n;
	uint64_t close_ts;	/* 0: no close */
};

struct got {
	int n;
	struct tt_request r[MAXR];
	uint64_t tok[MAXR][64];
	char json[MAXR][2048];
};

static struct tt_conn_meta conn = {
	.pid = 4242, .conn_id = 7, .family = AF_INET,
	.local_port = 8000, .remote_port = 51000,
	.local_addr = { 127, 0, 0, 1 }, .remote_addr = { 10, 1, 2, 3 },
};

static void put(struct traffic *t, enum tt_dir d, uint64_t ts,
		const char *s, size_t len, size_t missing)
{
	struct piece *p = &t->p[t->n++];

	cr_assert(t->n <= MAXP);
	p->dir = d;
	p->ts = ts;
	p->data = malloc(len + 1);
	memcpy(p->data, s, len);
	p->len = len;
	p->missing = missing;
}

static void add(struct traffic *t, enum tt_dir d, uint64_t ts,
		const char *fmt, ...)
{
	char buf[8192];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	put(t, d, ts, buf, n, 0);
}

/* An HTTP chunk around some SSE text, as uvicorn writes it. */
static void chunk(struct traffic *t, uint64_t ts, const char *sse)
{
	add(t, TT_DIR_OUT, ts, "%zx\r\n%s\r\n", strlen(sse), sse);
}

static void traffic_free(struct traffic *t)
{
	for (int i = 0; i < t->n; i++)
		free(t->p[i].data);
	t->n = 0;
}

static void on_req(void *ctx, const struct tt_request *r)
{
	struct got *g = ctx;
	FILE *f;

	cr_assert(g->n < MAXR);
	g->r[g->n] = *r;
	for (uint32_t i = 0; i < r->token_ns_len && i < 64; i++)
		g->tok[g->n][i] = r->token_ns[i];
	g->r[g->n].token_ns = NULL;
	f = fmemopen(g->json[g->n], sizeof(g->json[0]), "w");
	tt_request_write_json(r, f);
	fclose(f);
	g->n++;
}

/* Feed the traffic; piece `split` (if >= 0) is cut at byte `at`; step > 0
 * cuts every piece into pieces of `step` bytes. */
static struct reqtrack_stats run(const struct traffic *t,
				 struct reqtrack_opts *o, struct got *g,
				 int split, size_t at, size_t step)
{
	struct reqtrack *rt;
	struct reqtrack_stats st;

	memset(g, 0, sizeof(*g));
	o->on_request = on_req;
	o->ctx = g;
	rt = reqtrack_new(o);
	cr_assert_not_null(rt);
	for (int i = 0; i < t->n; i++) {
		const struct piece *p = &t->p[i];
		size_t off = 0;

		if (i == split && at > 0 && at < p->len) {
			reqtrack_data(rt, &conn, p->dir, p->ts, p->data, at, 0);
			off = at;
		}
		while (step && p->len - off > step) {
			reqtrack_data(rt, &conn, p->dir, p->ts, p->data + off,
				      step, 0);
			off += step;
		}
		reqtrack_data(rt, &conn, p->dir, p->ts, p->data + off,
			      p->len - off, p->missing);
	}
	if (t->close_ts)
		reqtrack_close(rt, conn.conn_id, t->close_ts);
	reqtrack_flush(rt, 999999999);
	reqtrack_get_stats(rt, &st);
	reqtrack_free(rt);
	return st;
}

static const char *chat_req_body =
	"{\"model\":\"meta-llama/Llama-3.1-8B-Instruct\",\"messages\":"
	"[{\"role\":\"user\",\"content\":\"Say hello\"}],\"stream\":true,"
	"\"stream_options\":{\"include_usage\":true},\"max_tokens\":16}";

#define EV_HEAD "data: {\"id\":\"chatcmpl-9f2\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"meta-llama/Llama-3.1-8B-Instruct\",\"choices\":[{\"index\":0,"
#define EV_ROLE EV_HEAD "\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n"
#define EV_TOK(s) EV_HEAD "\"delta\":{\"content\":\"" s "\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n"
#define EV_STOP EV_HEAD "\"delta\":{\"content\":\"\"},\"logprobs\":null,\"finish_reason\":\"stop\",\"stop_reason\":null}]}\n\n"
#define EV_USAGE "data: {\"id\":\"chatcmpl-9f2\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"meta-llama/Llama-3.1-8B-Instruct\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"total_tokens\":16,\"completion_tokens\":4}}\n\n"
#define EV_DONE "data: [DONE]\n\n"

static void chat_request(struct traffic *t, uint64_t ts, const char *extra)
{
	add(t, TT_DIR_IN, ts,
	    "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost:8000\r\n"
	    "User-Agent: OpenAI/Python 1.40.0\r\nContent-Type: application/json\r\n"
	    "%sContent-Length: %zu\r\n\r\n%s",
	    extra, strlen(chat_req_body), chat_req_body);
}

static const char *sse_head =
	"HTTP/1.1 200 OK\r\ndate: Fri, 27 Nov 2026 03:30:00 GMT\r\n"
	"server: uvicorn\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
	"transfer-encoding: chunked\r\n\r\n";

/* A vLLM streamed chat: role chunk, 4 token events (one chunk holds two,
 * one event is split over two chunks), usage, [DONE]. */
static void vllm_stream(struct traffic *t, bool usage, bool done)
{
	char split_ev[1024];
	size_t h;

	chat_request(t, 1000, "");
	add(t, TT_DIR_OUT, 2000, "%s", sse_head);
	chunk(t, 2000, EV_ROLE);
	chunk(t, 5000, EV_TOK("Hel"));
	chunk(t, 7000, EV_TOK("lo") EV_TOK(","));	/* two in one chunk */
	snprintf(split_ev, sizeof(split_ev), "%s", EV_TOK(" world"));
	h = strlen(split_ev) / 2;
	add(t, TT_DIR_OUT, 8000, "%zx\r\n%.*s\r\n", h, (int)h, split_ev);
	chunk(t, 9000, split_ev + h);	/* event completes here */
	if (!done)
		return;
	chunk(t, 9500, EV_STOP);
	if (usage)
		chunk(t, 9600, EV_USAGE);
	chunk(t, 9700, EV_DONE);
	add(t, TT_DIR_OUT, 9800, "0\r\n\r\n");
}

Test(requests, vllm_chunked_sse_stream_gives_times_tokens_and_usage)
{
	struct traffic t = { 0 };
	struct reqtrack_opts o = { 0 };
	struct got g;
	const struct tt_request *r;

	vllm_stream(&t, true, true);
	run(&t, &o, &g, -1, 0, 0);
	cr_assert_eq(g.n, 1);
	r = &g.r[0];
	cr_assert_str_eq(r->api, "chat");
	cr_assert_str_eq(r->model, "meta-llama/Llama-3.1-8B-Instruct");
	cr_assert_str_eq(r->id, "chatcmpl-9f2");
	cr_assert(r->stream);
	cr_assert_eq(r->max_tokens, 16);
	cr_assert_eq(r->http_status, 200);
	cr_assert_eq(r->end, TT_END_COMPLETE);
	cr_assert_eq(r->arrival_ns, 1000);
	cr_assert_eq(r->first_token_ns, 5000, "role-only chunk is no token");
	cr_assert_eq(r->end_ns, 9800);
	cr_assert_eq(r->token_events, 4);
	cr_assert_eq(g.tok[0][1], 7000);
	cr_assert_eq(g.tok[0][2], 7000);
	cr_assert_eq(g.tok[0][3], 9000, "split event has the later time");
	cr_assert_eq(r->tokens_source, TT_TOKENS_USAGE);
	cr_assert_eq(r->prompt_tokens, 12);
	cr_assert_eq(r->completion_tokens, 4);
	cr_assert_float_eq(r->ttft_ms, 0.004, 1e-9);
	cr_assert_float_eq(r->itl_p50_ms, 0.002, 1e-9);
	cr_assert_float_eq(r->itl_max_ms, 0.002, 1e-9);
	cr_assert_eq(r->flags, 0);
	cr_assert_eq(r->pid, 4242);
	cr_assert_str_eq(r->tenant, "-");
	traffic_free(&t);
}

Test(requests, same_result_split_at_every_byte_and_in_one_byte_pieces)
{
	struct traffic t = { 0 };
	struct reqtrack_opts o = { 0 };
	struct got whole, g;

	vllm_stream(&t, true, true);
	chat_request(&t, 20000, "");	/* keep-alive: a second exchange */
	add(&t, TT_DIR_OUT, 21000,
	    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
	    "content-length: 38\r\n\r\n{\"id\":\"x\",\"usage\":{\"prompt_tokens\":3}}");
	run(&t, &o, &whole, -1, 0, 0);
	cr_assert_eq(whole.n, 2);
	for (int i = 0; i < t.n; i++)
		for (size_t at = 1; at < t.p[i].len; at++) {
			run(&t, &o, &g, i, at, 0);
			cr_assert_eq(g.n, 2, "piece %d cut at %zu", i, at);
			cr_assert_str_eq(g.json[0], whole.json[0],
					 "piece %d cut at %zu", i, at);
			cr_assert_str_eq(g.json[1], whole.json[1]);
			cr_assert_arr_eq(g.tok[0], whole.tok[0],
					 sizeof(g.tok[0]));
		}
	run(&t, &o, &g, -1, 0, 1);
	cr_assert_str_eq(g.json[0], whole.json[0]);
	cr_assert_str_eq(g.json[1], whole.json[1]);
	traffic_free(&t);
}

Test(requests, no_usage_counts_token_events)
{
	struct traffic t = { 0 };
	struct reqtrack_opts o = { 0 };
	struct got g;

	vllm_stream(&t, false, true);
	run(&t, &o, &g, -1, 0, 0);
	cr_assert_eq(g.n, 1);
	cr_assert_eq(g.r[0].tokens_source, TT_TOKENS_EVENTS);
	cr_assert_eq(g.r[0].completion_tokens, 4);
	cr_assert_eq(g.r[0].prompt_tokens, -1);
	cr_assert(g.r[0].flags & TT_REQF_NO_USAGE);
	cr_assert_eq(g.r[0].end, TT_END_COMPLETE);
	traffic_free(&t);
}

Test(requests, non_streamed_without_usage_is_estimated_from_bytes)
{
	struct traffic t = { 0 };
	struct reqtrack_opts o = { 0 };
	struct got g;
	const char *req = "{\"model\":\"m\",\"prompt\":\"abcdefghijklmnop\",\"max_tokens\":5}";
	const char *body = "{\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"choices\":[{\"index\":0,\"text\":\"0123456789ab\",\"finish_reason\":\"length\"}]}";

	add(&t, TT_DIR_IN, 100, "POST /v1/completions HTTP/1.1\r\n"
	    "Content-Length: %zu\r\n\r\n%s", strlen(req), req);
	add(&t, TT_DIR_OUT, 300, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
	    "Content-Length: %zu\r\n\r\n%s", strlen(body), body);
	run(&t, &o, &g, -1, 0, 0);
	cr_assert_eq(g.n, 1);
	cr_assert_str_eq(g.r[0].api, "completions");
	cr_assert_eq(g.r[0].tokens_source, TT_TOKENS_ESTIMATE);
	cr_assert_eq(g.r[0].completion_tokens, 3);	/* 12 bytes / 4 */
	cr_assert_eq(g.r[0].prompt_tokens, 4);		/* 16 bytes / 4 */
	cr_assert_eq(g.r[0].first_token_ns, 300, "non-stream: first response byte");
	cr_assert_eq(g.r[0].token_events, 0);
	cr_assert_float_eq(g.r[0].ttft_ms, 0.0002, 1e-12);
	cr_assert_str_eq(g.r[0].id, "cmpl-1");
	cr_assert(!g.r[0].stream);
	cr_assert_eq(g.r[0].bytes_out, t.p[1].len);
	cr_assert_eq(g.r[0].bytes_in, t.p[0].len);
	traffic_free(&t);
}

Test(requests, pipelined_requests_in_one_piece_answered_in_order)
{
	struct traffic t = { 0 };
	struct reqtrack_opts o = { 0 };
	struct got g;
	const char *a = "{\"model\":\"alpha\",\"prompt\":\"x\"}";
	const char *b = "{\"model\":\"beta\",\"prompt\":\"y\"}";
	const char *ra = "{\"id\":\"A\",\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}";
	const char *rb = "{\"id\":\"B\",\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}";

	add(&t, TT_DIR_IN, 10,
	    "POST /v1/completions HTTP/1.1\r\nContent-Length: %zu\r\n\r\n%s"
	    "POST /v1/completions HTTP/1.1\r\nContent-Length: %zu\r\n\r\n%s",
	    strlen(a), a, strlen(b), b);
	add(&t, TT_DIR_OUT, 20, "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n%s"
	    "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n%s",
	    strlen(ra), ra, strlen(rb), rb);
	run(&t, &o, &g, -1, 0, 0);
	cr_assert_eq(g.n, 2);
	cr_assert_str_eq(g.r[0].model, "alpha");
	cr_assert_str_eq(g.r[0].id, "A");
	cr_assert_eq(g.r[0].completion_tokens, 2);
	cr_assert_str_eq(g.r[1].model, "beta");
	cr_assert_str_eq(g.r[1].id, "B");
	cr_assert_eq(g.r[1].completion_tokens, 4);
	cr_assert_eq(g.r[1].arrival_ns, 10);
	traffic_free(&t);
}

Test(requests, response_beyond_capture_cap_marked_truncated_and_counting_goes_on)
{
	struct traffic t = { 0 };
	struct reqtrack_opts o = { 0 };
	struct got g;
	char big[4096];
	size_t n;

	chat_request(&t, 1000, "");
	add(&t, TT_DIR_OUT, 2000, "%s", sse_head);
	/* one 4 KiB chunk of 10 events, of which only 300 bytes are captured */
	big[0] = '\0';
	for (int i = 0; i < 10; i++)
		strcat(big, EV_TOK("x"));
	n = strlen(big);
	{
		char tmp[8192];
		int k = snprintf(tmp, sizeof(tmp), "%zx\r\n%s\r\n", n, big);

		put(&t, TT_DIR_OUT, 3000, tmp, 300, k - 300);
	}
	chunk(&t, 4000, EV_TOK("y"));
	chunk(&t, 5000, EV_TOK("z"));
	chunk(&t, 6000, EV_DONE);
	add(&t, TT_DIR_OUT, 6000, "0\r\n\r\n");
	chat_request(&t, 7000, "");	/* the connection stays usable */
	add(&t, TT_DIR_OUT, 8000, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}");
	run(&t, &o, &g, -1, 0, 0);
	cr_assert_eq(g.n, 2);
	cr_assert(g.r[0].flags & TT_REQF_RESP_TRUNCATED);
	cr_assert_eq(g.r[0].end, TT_END_DATA_LOST);
	/* the one whole event in the captured 300 bytes, then y and z */
	cr_assert_eq(g.r[0].token_events, 3, "events after the hole count: %s",
		     g.json[0]);
	cr_assert_eq(g.tok[0][0], 3000);
	cr_assert_eq(g.tok[0][1], 4000);
	cr_assert_eq(g.tok[0][2], 5000);
	cr_assert_eq(g.r[0].end_ns, 6000);
	cr_assert_eq(g.r[0].bytes_out,
		     t.p[1].len + t.p[2].len + t.p[2].missing + t.p[3].len +
		     t.p[4].len + t.p[5].len + t.p[6].len);
	cr_assert_eq(g.r[1].end, TT_END_COMPLETE);
	cr_assert_eq(g.r[1].http_status, 200);
	traffic_free(&t);
}

Test(requests, request_body_beyond_capture_cap_still_gives_model)
{
	struct traffic t = { 0 };
	struct reqtrack_opts o = { 0 };
	struct got g;
	char body[6000];
	char head[256];
	int hl, bl;

	/* messages first, model last: only the scan finds it */
	bl = snprintf(body, sizeof(body), "{\"messages\":[{\"role\":\"user\",\"content\":\"%04000d\"}],\"model\":\"big\",\"stream\":false}", 0);
	hl = snprintf(head, sizeof(head), "POST /v1/chat/completions HTTP/1.1\r\nContent-Length: %d\r\n\r\n", bl);
	put(&t, TT_DIR_IN, 10, head, hl, 0);
	put(&t, TT_DIR_IN, 10, body, 1000, bl - 1000 - 60);
	put(&t, TT_DIR_IN, 11, body + bl - 60, 60, 0);
	add(&t, TT_DIR_OUT, 20, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}");
	run(&t, &o, &g, -1, 0, 0);
	cr_assert_eq(g.n, 1);
	cr_assert(g.r[0].flags & TT_REQF_REQ_TRUNCATED);
	cr_assert(!(g.r[0].flags & TT_REQF_BAD_JSON));
	cr_assert_str_eq(g.r[0].model, "big");
	cr_assert_eq(g.r[0].bytes_in, (uint64_t)hl + bl);
	cr_assert_eq(g.r[0].http_status, 200);
	traffic_free(&t);
}

Test(requests, garbage_connection_is_counted_non_http_and_ignored)
{
	struct traffic t = { 0 };
	struct reqtrack_opts o = { 0 };
	struct got g;
	struct reqtrack_stats st;
	unsigned char tls[64] = { 0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00 };

	for (int i = 7; i < 64; i++)
		tls[i] = (unsigned char)(i * 37);
	put(&t, TT_DIR_IN, 1, (const char *)tls, sizeof(tls), 0);
	put(&t, TT_DIR_OUT, 2, (const char *)tls, sizeof(tls), 100);
	add(&t, TT_DIR_IN, 3, "POST /v1/completions HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
	t.close_ts = 10;
	st = run(&t, &o, &g, -1, 0, 0);
	cr_assert_eq(g.n, 0);
	cr_assert_eq(st.non_http_connections, 1);
	cr_assert_eq(st.http_connections, 0);
	cr_assert_eq(st.connections, 1);
	cr_assert_eq(st.bytes_in, 64 + t.p[2].len);
	cr_assert_eq(st.bytes_missing, 100);
	traffic_free(&t);
}

Test(requests, client_gone_mid_stream)
{
	struct traffic t = { 0 };
	struct reqtrack_opts o = { 0 };
	struct got g;

	vllm_stream(&t, true, false);
	t.close_ts = 9900;
	run(&t, &o, &g, -1, 0, 0);
	cr_assert_eq(g.n, 1);
	cr_assert_eq(g.r[0].end, TT_END_CLIENT_GONE);
	cr_assert(g.r[0].flags & TT_REQF_ABORTED);
	cr_assert_eq(g.r[0].token_events, 4);
	cr_assert_eq(g.r[0].end_ns, 9900);
	cr_assert_eq(g.r[0].tokens_source, TT_TOKENS_EVENTS);
	traffic_free(&t);
}

Test(requests, error_event_mid_stream_is_server_error)
{
	struct traffic t = { 0 };
	struct reqtrack_opts o = { 0 };
	struct got g;

	chat_request(&t, 1000, "");
	add(&t, TT_DIR_OUT, 2000, "%s", sse_head);
	chunk(&t, 3000, EV_TOK("a"));
	chunk(&t, 4000, "data: {\"error\":{\"object\":\"error\",\"message\":\"engine dead\",\"type\":\"InternalServerError\",\"code\":500}}\n\n");
	chunk(&t, 4100, "data: not json\n\n");
	chunk(&t, 4150, EV_DONE);
	add(&t, TT_DIR_OUT, 4200, "0\r\n\r\n");
	run(&t, &o, &g, -1, 0, 0);
	cr_assert_eq(g.n, 1);
	cr_assert_eq(g.r[0].end, TT_END_SERVER_ERROR);
	cr_assert(g.r[0].flags & TT_REQF_BAD_JSON);
	cr_assert_eq(g.r[0].token_events, 1);
	traffic_free(&t);
}

Test(requests, status_4xx_and_5xx_and_health_check)
{
	struct traffic t = { 0 };
	struct reqtrack_opts o = { 0 };
	struct got g;

	chat_request(&t, 1, "");
	add(&t, TT_DIR_OUT, 2, "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 20\r\n\r\n{\"error\":\"too long\"}");
	chat_request(&t, 3, "");
	add(&t, TT_DIR_OUT, 4, "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n");
	add(&t, TT_DIR_IN, 5, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
	add(&t, TT_DIR_OUT, 6, "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
	run(&t, &o, &g, -1, 0, 0);
	cr_assert_eq(g.n, 3);
	cr_assert_eq(g.r[0].end, TT_END_CLIENT_ERROR);
	cr_assert_eq(g.r[0].first_token_ns, 0);
	cr_assert_eq(g.r[1].end, TT_END_SERVER_ERROR);
	cr_assert_str_eq(g.r[2].api, "other");
	cr_assert_str_eq(g.r[2].path, "/health");
	cr_assert_eq(g.r[2].end, TT_END_COMPLETE);
	traffic_free(&t);
}

Test(requests, flush_reports_running_request_open_and_lost_marks_data_lost)
{
	struct traffic t = { 0 };
	struct reqtrack_opts o = { 0 };
	struct got g;
	struct reqtrack *rt;

	vllm_stream(&t, true, false);
	run(&t, &o, &g, -1, 0, 0);	/* no close: flushed */
	cr_assert_eq(g.n, 1);
	cr_assert_eq(g.r[0].end, TT_END_OPEN);
	cr_assert_eq(g.r[0].end_ns, 9000);

	memset(&g, 0, sizeof(g));
	o.on_request = on_req;
	o.ctx = &g;
	rt = reqtrack_new(&o);
	for (int i = 0; i < 4; i++)
		reqtrack_data(rt, &conn, t.p[i].dir, t.p[i].ts, t.p[i].data,
			      t.p[i].len, 0);
	reqtrack_lost(rt, &conn, 6000);
	cr_assert_eq(g.n, 1);
	{
		struct reqtrack_stats st;

		reqtrack_get_stats(rt, &st);
		cr_assert_eq(st.sync_lost, 2, "both directions");
	}
	cr_assert_eq(g.r[0].end, TT_END_DATA_LOST);
	cr_assert(g.r[0].flags & TT_REQF_LOST);
	/* the rest of the stream is not a message start: ignored */
	for (int i = 4; i < t.n; i++)
		reqtrack_data(rt, &conn, t.p[i].dir, t.p[i].ts, t.p[i].data,
			      t.p[i].len, 0);
	chat_request(&t, 20000, "");
	add(&t, TT_DIR_OUT, 21000, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
	for (int i = t.n - 2; i < t.n; i++)
		reqtrack_data(rt, &conn, t.p[i].dir, t.p[i].ts, t.p[i].data,
			      t.p[i].len, 0);
	cr_assert_eq(g.n, 2, "resynchronised at the next request");
	cr_assert_eq(g.r[1].end, TT_END_COMPLETE);
	cr_assert_eq(g.r[1].arrival_ns, 20000);
	reqtrack_free(rt);
	traffic_free(&t);
}

Test(requests, hole_in_request_head_marks_request_and_keeps_its_response)
{
	struct traffic t = { 0 };
	struct reqtrack_opts o = { 0 };
	struct got g;

	put(&t, TT_DIR_IN, 10, "POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\n", 45, 500);
	add(&t, TT_DIR_OUT, 20, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}");
	chat_request(&t, 30, "");
	add(&t, TT_DIR_OUT, 40, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}");
	run(&t, &o, &g, -1, 0, 0);
	cr_assert_eq(g.n, 2);
	cr_assert(g.r[0].flags & TT_REQF_REQ_TRUNCATED);
	cr_assert(!(g.r[0].flags & TT_REQF_LOST), "a hole is no ring loss");
	cr_assert_eq(g.r[0].end, TT_END_DATA_LOST);
	cr_assert_eq(g.r[0].arrival_ns, 10);
	cr_assert_eq(g.r[1].end, TT_END_COMPLETE);
	cr_assert_str_eq(g.r[1].api, "chat");
	traffic_free(&t);
}

Test(requests, close_delimited_response_ends_at_close)
{
	struct traffic t = { 0 };
	struct reqtrack_opts o = { 0 };
	struct got g;

	chat_request(&t, 1, "");
	add(&t, TT_DIR_OUT, 2, "HTTP/1.0 200 OK\r\ncontent-type: text/event-stream\r\n\r\n");
	add(&t, TT_DIR_OUT, 3, EV_TOK("a"));
	add(&t, TT_DIR_OUT, 4, EV_TOK("b") EV_DONE);
	t.close_ts = 5;
	run(&t, &o, &g, -1, 0, 0);
	cr_assert_eq(g.n, 1);
	cr_assert_eq(g.r[0].end, TT_END_COMPLETE);
	cr_assert_eq(g.r[0].token_events, 2);
	cr_assert_eq(g.r[0].end_ns, 5);
	traffic_free(&t);
}

Test(requests, tgi_and_llamacpp_streams)
{
	struct traffic t = { 0 };
	struct reqtrack_opts o = { 0 };
	struct got g;
	const char *tb = "{\"inputs\":\"Hi\",\"parameters\":{\"max_new_tokens\":3}}";
	const char *lb = "{\"prompt\":\"Hi\",\"n_predict\":7,\"stream\":true}";

	add(&t, TT_DIR_IN, 1, "POST /generate_stream HTTP/1.1\r\nContent-Length: %zu\r\n\r\n%s", strlen(tb), tb);
	add(&t, TT_DIR_OUT, 2, "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n");
	chunk(&t, 3, "data:{\"index\":1,\"token\":{\"id\":1,\"text\":\"\",\"logprob\":0,\"special\":true},\"generated_text\":null,\"details\":null}\n\n");
	chunk(&t, 4, "data:{\"index\":2,\"token\":{\"id\":2,\"text\":\"a\",\"logprob\":0,\"special\":false},\"generated_text\":null,\"details\":null}\n\n");
	chunk(&t, 5, "data:{\"index\":3,\"token\":{\"id\":3,\"text\":\"b\",\"logprob\":0,\"special\":false},\"generated_text\":\"ab\",\"details\":{\"finish_reason\":\"length\",\"generated_tokens\":3}}\n\n");
	add(&t, TT_DIR_OUT, 6, "0\r\n\r\n");
	add(&t, TT_DIR_IN, 10, "POST /completion HTTP/1.1\r\nContent-Length: %zu\r\n\r\n%s", strlen(lb), lb);
	add(&t, TT_DIR_OUT, 11, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n");
	chunk(&t, 12, "data: {\"content\":\"x\",\"stop\":false,\"id_slot\":0}\n\n");
	chunk(&t, 13, "data: {\"content\":\"y\",\"stop\":false,\"id_slot\":0}\n\n");
	chunk(&t, 14, "data: {\"content\":\"\",\"stop\":true,\"tokens_predicted\":2,\"tokens_evaluated\":5,\"timings\":{}}\n\n");
	add(&t, TT_DIR_OUT, 15, "0\r\n\r\n");
	run(&t, &o, &g, -1, 0, 0);
	cr_assert_eq(g.n, 2);
	cr_assert_str_eq(g.r[0].api, "tgi");
	cr_assert(g.r[0].stream);
	cr_assert_eq(g.r[0].max_tokens, 3);
	cr_assert_eq(g.r[0].token_events, 2, "special token is no token");
	cr_assert_eq(g.r[0].completion_tokens, 3);
	cr_assert_eq(g.r[0].tokens_source, TT_TOKENS_USAGE);
	cr_assert_str_eq(g.r[1].api, "llamacpp");
	cr_assert_eq(g.r[1].max_tokens, 7);
	cr_assert_eq(g.r[1].token_events, 2);
	cr_assert_eq(g.r[1].prompt_tokens, 5);
	cr_assert_eq(g.r[1].completion_tokens, 2);
	traffic_free(&t);
}

/* ---- tenants -------------------------------------------------------------- */

static void one_tenant(struct reqtrack_opts *o, const char *hdrs,
		       const char *body, struct got *g)
{
	struct traffic t = { 0 };

	add(&t, TT_DIR_IN, 1, "POST /v1/completions HTTP/1.1\r\n%s"
	    "Content-Length: %zu\r\n\r\n%s", hdrs, strlen(body), body);
	add(&t, TT_DIR_OUT, 2, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}");
	run(&t, o, g, -1, 0, 0);
	cr_assert_eq(g->n, 1);
	traffic_free(&t);
}

Test(requests, tenant_default_header_then_user_then_dash)
{
	struct reqtrack_opts o = { 0 };
	struct got g;

	one_tenant(&o, "X-Tenant-Id: acme\r\n", "{\"user\":\"bob\"}", &g);
	cr_assert_str_eq(g.r[0].tenant, "acme");
	one_tenant(&o, "", "{\"user\":\"bob\"}", &g);
	cr_assert_str_eq(g.r[0].tenant, "bob");
	one_tenant(&o, "", "{\"model\":\"m\"}", &g);
	cr_assert_str_eq(g.r[0].tenant, "-");
}

Test(requests, tenant_named_header_user_and_client_addr)
{
	struct reqtrack_opts o = { 0 };
	struct got g;

	cr_assert_eq(tenant_parse_spec("header:OpenAI-Organization", &o), 0);
	one_tenant(&o, "openai-organization: org-7\r\nX-Tenant-Id: no\r\n",
		   "{\"user\":\"bob\"}", &g);
	cr_assert_str_eq(g.r[0].tenant, "org-7");
	cr_assert_eq(tenant_parse_spec("user", &o), 0);
	one_tenant(&o, "X-Tenant-Id: no\r\n", "{\"user\":\"bob\"}", &g);
	cr_assert_str_eq(g.r[0].tenant, "bob");
	cr_assert_eq(tenant_parse_spec("client-addr", &o), 0);
	one_tenant(&o, "", "{}", &g);
	cr_assert_str_eq(g.r[0].tenant, "10.1.2.3");
	cr_assert_lt(tenant_parse_spec("header:", &o), 0);
	cr_assert_lt(tenant_parse_spec("cookie", &o), 0);
}

Test(requests, tenant_api_key_is_hashed_and_never_shown)
{
	struct reqtrack_opts o = { 0 };
	struct got g, g2;
	const char *key = "sk-proj-SECRETSECRET1234";
	char hdr[128], auth[128], want[TT_NAME_MAX];

	cr_assert_eq(tenant_parse_spec("api-key", &o), 0);
	memset(o.hash_key, 0x5a, sizeof(o.hash_key));
	snprintf(hdr, sizeof(hdr), "Authorization: Bearer %s\r\n", key);
	one_tenant(&o, hdr, "{\"user\":\"bob\"}", &g);
	cr_assert_eq(strncmp(g.r[0].tenant, "key:", 4), 0);
	cr_assert_eq(strlen(g.r[0].tenant), 20);
	cr_assert_null(strstr(g.json[0], "SECRET"));
	cr_assert_null(strstr(g.json[0], key));
	snprintf(auth, sizeof(auth), "Bearer %s", key);
	cr_assert_eq(tenant_hash_api_key(o.hash_key, auth, want,
					 sizeof(want)), 0);
	cr_assert_str_eq(g.r[0].tenant, want);
	/* another key gives another tenant; another host key too */
	one_tenant(&o, "Authorization: Bearer other\r\n", "{}", &g2);
	cr_assert_str_neq(g2.r[0].tenant, g.r[0].tenant);
	o.hash_key[0] ^= 1;
	one_tenant(&o, hdr, "{}", &g2);
	cr_assert_str_neq(g2.r[0].tenant, g.r[0].tenant);
}

Test(requests, hash_key_file_created_0600_and_reread)
{
	char dir[] = "/tmp/tt-key-XXXXXX", path[320], sub[256];
	uint8_t k1[32], k2[32], zero[32] = { 0 };
	struct stat st;

	cr_assert_not_null(mkdtemp(dir));
	snprintf(sub, sizeof(sub), "%s/state", dir);
	snprintf(path, sizeof(path), "%s/hash.key", sub);
	cr_assert_eq(tenant_load_hash_key(path, k1), 0);
	cr_assert_eq(stat(path, &st), 0);
	cr_assert_eq(st.st_mode & 0777, 0600);
	cr_assert_eq(st.st_size, 32);
	cr_assert_eq(stat(sub, &st), 0);
	cr_assert_eq(st.st_mode & 0777, 0700);
	cr_assert_neq(memcmp(k1, zero, 32), 0);
	cr_assert_eq(tenant_load_hash_key(path, k2), 0);
	cr_assert_arr_eq(k1, k2, 32);
	unlink(path);
	rmdir(sub);
	rmdir(dir);
}

/* ---- the JSON line -------------------------------------------------------- */

Test(requests, json_line_has_every_field_and_nulls_for_unknowns)
{
	struct traffic t = { 0 };
	struct reqtrack_opts o = { 0 };
	struct got g;
	cJSON *j, *f;
	static const char *const fields[] = {
		"id", "pid", "tenant", "model", "api", "stream", "status",
		"end", "arrival_ns", "first_token_ns", "end_ns", "ttft_ms",
		"itl_p50_ms", "itl_p99_ms", "itl_max_ms", "token_events",
		"prompt_tokens", "completion_tokens", "tokens_source",
		"bytes_in", "bytes_out", "flags",
	};

	vllm_stream(&t, true, true);
	add(&t, TT_DIR_IN, 30000, "GET /v1/models HTTP/1.1\r\n\r\n");
	t.close_ts = 30001;
	run(&t, &o, &g, -1, 0, 0);
	cr_assert_eq(g.n, 2);
	cr_assert_eq(g.json[0][strlen(g.json[0]) - 1], '\n');
	j = cJSON_Parse(g.json[0]);
	cr_assert_not_null(j, "%s", g.json[0]);
	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
		cr_assert_not_null(cJSON_GetObjectItem(j, fields[i]), "%s",
				   fields[i]);
	cr_assert_str_eq(cJSON_GetObjectItem(j, "id")->valuestring, "chatcmpl-9f2");
	cr_assert_eq(cJSON_GetObjectItem(j, "pid")->valuedouble, 4242);
	cr_assert_eq(cJSON_GetObjectItem(j, "status")->valuedouble, 200);
	cr_assert(cJSON_IsTrue(cJSON_GetObjectItem(j, "stream")));
	cr_assert_str_eq(cJSON_GetObjectItem(j, "end")->valuestring, "complete");
	cr_assert_str_eq(cJSON_GetObjectItem(j, "tokens_source")->valuestring, "usage");
	cr_assert_eq(cJSON_GetObjectItem(j, "first_token_ns")->valuedouble, 5000);
	cr_assert_float_eq(cJSON_GetObjectItem(j, "ttft_ms")->valuedouble, 0.004, 1e-9);
	cr_assert_eq(cJSON_GetObjectItem(j, "completion_tokens")->valuedouble, 4);
	f = cJSON_GetObjectItem(j, "flags");
	cr_assert(cJSON_IsArray(f));
	cr_assert_eq(cJSON_GetArraySize(f), 0);
	cJSON_Delete(j);

	/* GET /v1/models, client gone: no status, no model, no tokens */
	j = cJSON_Parse(g.json[1]);
	cr_assert_not_null(j, "%s", g.json[1]);
	cr_assert(cJSON_IsNull(cJSON_GetObjectItem(j, "status")));
	cr_assert(cJSON_IsNull(cJSON_GetObjectItem(j, "model")));
	cr_assert(cJSON_IsNull(cJSON_GetObjectItem(j, "id")));
	cr_assert(cJSON_IsNull(cJSON_GetObjectItem(j, "first_token_ns")));
	cr_assert(cJSON_IsNull(cJSON_GetObjectItem(j, "ttft_ms")));
	cr_assert(cJSON_IsNull(cJSON_GetObjectItem(j, "itl_p50_ms")));
	cr_assert(cJSON_IsNull(cJSON_GetObjectItem(j, "prompt_tokens")));
	cr_assert(cJSON_IsNull(cJSON_GetObjectItem(j, "tokens_source")));
	cr_assert_str_eq(cJSON_GetObjectItem(j, "api")->valuestring, "other");
	cr_assert_str_eq(cJSON_GetObjectItem(j, "end")->valuestring, "client_gone");
	cJSON_Delete(j);
	traffic_free(&t);
}

Test(requests, json_line_never_holds_prompt_or_completion_text)
{
	struct traffic t = { 0 };
	struct reqtrack_opts o = { 0 };
	struct got g;

	vllm_stream(&t, true, true);
	run(&t, &o, &g, -1, 0, 0);
	cr_assert_null(strstr(g.json[0], "Say hello"));
	cr_assert_null(strstr(g.json[0], "world"));
	cr_assert_null(strstr(g.json[0], "Hel"));
	traffic_free(&t);
}

Test(requests, head_request_and_100_continue_keep_responses_in_step)
{
	struct traffic t = { 0 };
	struct reqtrack_opts o = { 0 };
	struct got g;
	const char *b = "{\"model\":\"m\",\"prompt\":\"p\"}";

	add(&t, TT_DIR_IN, 1, "HEAD /v1/models HTTP/1.1\r\n\r\n");
	add(&t, TT_DIR_OUT, 2, "HTTP/1.1 200 OK\r\ncontent-length: 500\r\n\r\n");
	add(&t, TT_DIR_IN, 3, "POST /v1/completions HTTP/1.1\r\nExpect: 100-continue\r\n"
	    "Content-Length: %zu\r\n\r\n", strlen(b));
	add(&t, TT_DIR_OUT, 4, "HTTP/1.1 100 Continue\r\n\r\n");
	add(&t, TT_DIR_IN, 5, "%s", b);
	add(&t, TT_DIR_OUT, 6, "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
	    "content-length: 60\r\n\r\n{\"id\":\"c\",\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1}}");
	run(&t, &o, &g, -1, 0, 0);
	cr_assert_eq(g.n, 2);
	cr_assert_eq(g.r[0].end, TT_END_COMPLETE);
	cr_assert_eq(g.r[0].end_ns, 2);
	cr_assert_eq(g.r[1].http_status, 200, "not the 100");
	cr_assert_str_eq(g.r[1].model, "m");
	cr_assert_eq(g.r[1].arrival_ns, 3);
	cr_assert_eq(g.r[1].end_ns, 6);
	cr_assert_eq(g.r[1].tokens_source, TT_TOKENS_USAGE);
	traffic_free(&t);
}

static int sink_count;

static void sink(void *ctx, const struct tt_request *r)
{
	(void)ctx;
	cr_assert_leq(r->token_ns_len, r->token_events);
	cr_assert(r->end_ns == 0 || r->end_ns >= r->arrival_ns ||
		  r->end == TT_END_DATA_LOST);
	sink_count++;
}

Test(requests, mutated_traffic_and_random_holes_never_crash)
{
	struct traffic t = { 0 };
	struct reqtrack_opts o = { .on_request = sink };
	unsigned seed = 12345;

	vllm_stream(&t, true, true);
	for (int round = 0; round < 300; round++) {
		struct reqtrack *rt = reqtrack_new(&o);
		struct reqtrack_stats st;

		for (int i = 0; i < t.n; i++) {
			char buf[2048];
			size_t len = t.p[i].len, missing = 0;

			memcpy(buf, t.p[i].data, len);
			seed = seed * 1103515245u + 12345u;
			if ((seed >> 16) % 4 == 0)	/* flip a byte */
				buf[(seed >> 8) % len] ^= (char)(seed >> 24 | 1);
			seed = seed * 1103515245u + 12345u;
			if ((seed >> 16) % 5 == 0) {	/* cut it short */
				missing = (seed >> 8) % len;
				len -= missing;
			}
			if ((seed >> 20) % 17 == 0)
				reqtrack_lost(rt, &conn, t.p[i].ts);
			reqtrack_data(rt, &conn, t.p[i].dir, t.p[i].ts, buf,
				      len, missing);
		}
		if (round % 2)
			reqtrack_close(rt, conn.conn_id, 99999);
		reqtrack_flush(rt, 99999);
		reqtrack_get_stats(rt, &st);
		cr_assert_leq(st.requests, 4);
		reqtrack_free(rt);
	}
	cr_assert_gt(sink_count, 0);
	traffic_free(&t);
}

Test(requests, response_without_request_is_counted_orphan)
{
	struct traffic t = { 0 };
	struct reqtrack_opts o = { 0 };
	struct got g;
	struct reqtrack_stats st;

	add(&t, TT_DIR_OUT, 1, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}");
	add(&t, TT_DIR_IN, 2, "GET /health HTTP/1.1\r\n\r\n");
	add(&t, TT_DIR_OUT, 3, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
	st = run(&t, &o, &g, -1, 0, 0);
	cr_assert_eq(g.n, 1);
	cr_assert_eq(g.r[0].arrival_ns, 2);
	cr_assert_eq(g.r[0].end_ns, 3);
	cr_assert_eq(st.orphan_responses, 1);
	cr_assert_eq(st.http_connections, 1);
	traffic_free(&t);
}

/* ---- prompts that begin as earlier ones ----------------------------------- */

static void completion(struct traffic *t, uint64_t ts, const char *prompt,
		       const char *usage)
{
	char body[1024], resp[512];

	snprintf(body, sizeof(body), "{\"model\":\"m\",\"prompt\":\"%s\","
		 "\"max_tokens\":2}", prompt);
	add(t, TT_DIR_IN, ts, "POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
	    "Content-Length: %zu\r\n\r\n%s", strlen(body), body);
	snprintf(resp, sizeof(resp), "{\"id\":\"c\",\"choices\":[{\"text\":"
		 "\"ab\"}],\"usage\":{\"prompt_tokens\":%zu,"
		 "\"completion_tokens\":2%s}}", strlen(prompt), usage);
	add(t, TT_DIR_OUT, ts + 500, "HTTP/1.1 200 OK\r\nContent-Type: "
	    "application/json\r\nContent-Length: %zu\r\n\r\n%s",
	    strlen(resp), resp);
}

Test(requests, a_prompt_that_begins_as_an_earlier_one_says_how_far)
{
	static const char sys[] = "You are a terse assistant for billing "
				  "questions. Keep it short.";
	char p1[256], p2[256];
	struct traffic t = { 0 };
	struct reqtrack_opts o = { 0 };
	struct got g;

	snprintf(p1, sizeof(p1), "%s What is my balance?", sys);
	snprintf(p2, sizeof(p2), "%s Why was I charged twice?", sys);
	completion(&t, 1000, p1, "");
	completion(&t, 3000, p2, ",\"prompt_tokens_details\":"
		   "{\"cached_tokens\":48}");
	completion(&t, 5000, "Something else entirely, no shared start.", "");
	run(&t, &o, &g, -1, 0, 0);
	cr_assert_eq(g.n, 3);
	cr_expect_eq(g.r[0].prefix_bytes, 0, "the first is new");
	cr_expect_eq(g.r[0].prompt_bytes, strlen(p1));
	/* sys, a space and "Wh": 66 bytes in common, four whole 16-byte
	 * blocks */
	cr_expect_eq(strlen(sys), 63);
	cr_expect_eq(g.r[1].prefix_bytes, 64, "got %u", g.r[1].prefix_bytes);
	cr_expect_eq(g.r[2].prefix_bytes, 0);
	cr_expect_eq(g.r[0].cached_source, TT_CACHED_NONE);
	cr_expect_eq(g.r[1].cached_source, TT_CACHED_WIRE);
	cr_expect_eq(g.r[1].cached_tokens, 48);
	cr_expect(strstr(g.json[1], "\"cached_tokens\":48,"
			 "\"cached_tokens_source\":\"wire\""), "%s", g.json[1]);
	cr_expect(strstr(g.json[1], "\"shared_prefix_bytes\":64"), "%s",
		  g.json[1]);
	cr_expect_null(strstr(g.json[0], "cached_tokens"), "%s", g.json[0]);
	traffic_free(&t);
}
