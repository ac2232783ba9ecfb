/*
 * test_refserver.c - unit tests of the reference server, without sockets.
 *
 * In:  the refserver library (librefserver.a): HTTP parser, API parsing,
 *      SSE/JSON formatting, scheduler, truth log, model, engine.
 * Out: Criterion suites refserver_http, refserver_api, refserver_sse,
 *      refserver_sched, refserver_truth, refserver_model, refserver_engine.
 * Assumes: nothing outside the process; the engine is driven by hand
 *      (rs_engine_poll) and its truth log goes to a memory stream.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "../../tools/refserver/api.h"
#include "../../tools/refserver/engine.h"
#include "../../tools/refserver/http.h"
#include "../../tools/refserver/model.h"
#include "../../tools/refserver/sched.h"
#include "../../tools/refserver/truth.h"

#define MB (1u << 20)

static const char post_req[] =
	"POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
	"X-Tenant-Id: acme\r\nContent-Length: 30\r\n\r\n"
	"{\"prompt\":\"hi\",\"max_tokens\":3}";

/* ---- HTTP parser -------------------------------------------------------- */

Test(refserver_http, request_split_at_every_byte_needs_more_until_whole)
{
	size_t n = strlen(post_req), used;
	struct rs_http_req r;

	cr_assert_eq(n, strlen(post_req));
	for (size_t k = 0; k < n; k++) {
		int rc = rs_http_parse(post_req, k, MB, &r, &used);

		cr_assert_eq(rc, 0, "prefix of %zu bytes gave %d", k, rc);
		rs_http_req_free(&r);
	}
	cr_assert_eq(rs_http_parse(post_req, n, MB, &r, &used), 1);
	cr_assert_eq(used, n);
	cr_assert_str_eq(r.method, "POST");
	cr_assert_str_eq(r.path, "/v1/completions");
	cr_assert_str_eq(r.tenant, "acme");
	cr_assert(r.keep_alive);
	cr_assert_eq(r.body_len, 30);
	cr_assert_str_eq(r.body, "{\"prompt\":\"hi\",\"max_tokens\":3}");
	rs_http_req_free(&r);
}

Test(refserver_http, pipelined_requests_come_out_in_order)
{
	char buf[1024];
	size_t used, off = 0;
	struct rs_http_req r;
	int len = snprintf(buf, sizeof(buf), "%sGET /health HTTP/1.1\r\n"
			   "Connection: close\r\n\r\n%s", post_req, post_req);

	cr_assert_eq(rs_http_parse(buf, len, MB, &r, &used), 1);
	cr_assert_str_eq(r.method, "POST");
	rs_http_req_free(&r);
	off += used;
	cr_assert_eq(rs_http_parse(buf + off, len - off, MB, &r, &used), 1);
	cr_assert_str_eq(r.path, "/health");
	cr_assert_not(r.keep_alive);
	cr_assert_eq(r.body_len, 0);
	rs_http_req_free(&r);
	off += used;
	cr_assert_eq(rs_http_parse(buf + off, len - off, MB, &r, &used), 1);
	cr_assert_eq(off + used, (size_t)len);
	rs_http_req_free(&r);
}

Test(refserver_http, chunked_body_is_decoded_at_every_split)
{
	const char *req = "POST /v1/completions HTTP/1.1\r\n"
		"Transfer-Encoding: chunked\r\n\r\n"
		"5\r\n{\"pro\r\n19;ext=1\r\nmpt\":\"ab\",\"max_tokens\":2}\r\n"
		"0\r\n\r\nGET";
	size_t n = strlen(req) - 3, used;
	struct rs_http_req r;

	for (size_t k = 0; k < n; k++) {
		cr_assert_eq(rs_http_parse(req, k, MB, &r, &used), 0,
			     "prefix %zu", k);
		rs_http_req_free(&r);
	}
	cr_assert_eq(rs_http_parse(req, n + 3, MB, &r, &used), 1);
	cr_assert_eq(used, n);
	cr_assert_str_eq(r.body, "{\"prompt\":\"ab\",\"max_tokens\":2}");
	rs_http_req_free(&r);
}

Test(refserver_http, body_over_limit_is_413_before_it_arrives)
{
	const char *req = "POST /v1/completions HTTP/1.1\r\n"
		"Content-Length: 2000\r\n\r\n";
	const char *ch = "POST /v1/completions HTTP/1.1\r\n"
		"Transfer-Encoding: chunked\r\n\r\n800\r\n";
	struct rs_http_req r;
	size_t used;

	cr_assert_eq(rs_http_parse(req, strlen(req), 1000, &r, &used), -413);
	cr_assert_eq(rs_http_parse(ch, strlen(ch), 1000, &r, &used), -413);
}

Test(refserver_http, huge_head_is_431)
{
	size_t n = RS_HTTP_MAX_HEAD + 100, used;
	char *buf = malloc(n);
	struct rs_http_req r;

	memset(buf, 'a', n);
	memcpy(buf, "GET /health HTTP/1.1\r\nX: ", 25);
	cr_assert_eq(rs_http_parse(buf, n, MB, &r, &used), -431);
	free(buf);
}

Test(refserver_http, garbage_and_bad_framing_are_400)
{
	const unsigned char bin[] = { 0x16, 0x03, 0x01, 0x02, 0x00, 0xff };
	const char *cases[] = {
		"GET /x\r\n\r\n",
		"GET nopath HTTP/1.1\r\n\r\n",
		"GET / HTTP/1.1\r\nno colon here\r\n\r\n",
		"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
		"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
		"POST / HTTP/1.1\r\nContent-Length: 3\r\n"
		"Transfer-Encoding: chunked\r\n\r\n",
		"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
	};
	struct rs_http_req r;
	size_t used;

	cr_assert_eq(rs_http_parse((const char *)bin, sizeof(bin), MB, &r,
				   &used), -400);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		cr_assert_eq(rs_http_parse(cases[i], strlen(cases[i]), MB, &r,
					   &used), -400, "case %zu", i);
	cr_assert_eq(rs_http_parse("GET / HTTP/2.0\r\n\r\n", 18, MB, &r,
				   &used), -505);
}

Test(refserver_http, http10_closes_unless_keep_alive_asked)
{
	struct rs_http_req r;
	size_t used;
	const char *a = "GET / HTTP/1.0\r\n\r\n";
	const char *b = "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n";

	cr_assert_eq(rs_http_parse(a, strlen(a), MB, &r, &used), 1);
	cr_assert_not(r.keep_alive);
	rs_http_req_free(&r);
	cr_assert_eq(rs_http_parse(b, strlen(b), MB, &r, &used), 1);
	cr_assert(r.keep_alive);
	rs_http_req_free(&r);
}

Test(refserver_http, error_response_has_length_and_json_body)
{
	struct rs_buf b = { 0 };
	char *body;
	cJSON *j;

	cr_assert_eq(rs_http_error(&b, 400, "bad \"x\"", false), 0);
	cr_assert(strstr(b.p, "HTTP/1.1 400 Bad Request\r\n"));
	body = strstr(b.p, "\r\n\r\n") + 4;
	cr_assert(strstr(b.p, "Content-Length: "));
	cr_assert_eq(strtol(strstr(b.p, "Content-Length: ") + 16, NULL, 10),
		     (long)strlen(body));
	j = cJSON_Parse(body);
	cr_assert_not_null(j);
	cr_assert_str_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "error"),
					     "type")->valuestring,
			 "invalid_request_error");
	cJSON_Delete(j);
	rs_buf_free(&b);
}

/* ---- API ---------------------------------------------------------------- */

static int parse_api(enum rs_api api, const char *body, struct rs_api_req *a)
{
	char err[256];

	return rs_api_parse(api, body, strlen(body), a, err, sizeof(err));
}

Test(refserver_api, bad_json_and_missing_fields_are_rejected)
{
	struct rs_api_req a;

	cr_assert_eq(parse_api(RS_API_COMPLETIONS, "{\"prompt\":", &a), -EINVAL);
	cr_assert_eq(parse_api(RS_API_COMPLETIONS, "[1,2]", &a), -EINVAL);
	cr_assert_eq(parse_api(RS_API_COMPLETIONS, "{}", &a), -EINVAL);
	cr_assert_eq(parse_api(RS_API_COMPLETIONS, "{\"prompt\":\"\"}", &a),
		     -EINVAL);
	cr_assert_eq(parse_api(RS_API_COMPLETIONS,
			       "{\"prompt\":\"a\",\"max_tokens\":0}", &a),
		     -EINVAL);
	cr_assert_eq(parse_api(RS_API_CHAT, "{\"prompt\":\"a\"}", &a), -EINVAL);
}

Test(refserver_api, completion_fields_are_read)
{
	struct rs_api_req a;

	cr_assert_eq(parse_api(RS_API_COMPLETIONS, "{\"prompt\":\"hello\","
			       "\"max_completion_tokens\":7,\"stream\":true,"
			       "\"stream_options\":{\"include_usage\":true},"
			       "\"model\":\"m1\",\"user\":\"bob\"}", &a), 0);
	cr_assert_eq(a.prompt_len, 5);
	cr_assert_eq(memcmp(a.prompt, "hello", 5), 0);
	cr_assert_eq(a.max_tokens, 7);
	cr_assert(a.stream && a.include_usage);
	cr_assert_str_eq(a.model, "m1");
	cr_assert_str_eq(a.user, "bob");
	rs_api_req_free(&a);
	cr_assert_eq(parse_api(RS_API_COMPLETIONS, "{\"prompt\":[104,105]}",
			       &a), 0);
	cr_assert_eq(a.prompt_len, 2);
	cr_assert_eq(a.max_tokens, -1);
	cr_assert_not(a.stream);
	rs_api_req_free(&a);
}

Test(refserver_api, chat_prompt_is_the_concatenated_contents)
{
	struct rs_api_req a;

	cr_assert_eq(parse_api(RS_API_CHAT, "{\"messages\":["
			       "{\"role\":\"system\",\"content\":\"ab\"},"
			       "{\"role\":\"user\",\"content\":[{\"type\":"
			       "\"text\",\"text\":\"cd\"}]}]}", &a), 0);
	cr_assert_eq(a.prompt_len, 4);
	cr_assert_eq(memcmp(a.prompt, "abcd", 4), 0);
	rs_api_req_free(&a);
}

/* ---- SSE and JSON framing ----------------------------------------------- */

static cJSON *event_json(const char *ev, size_t n)
{
	cr_assert(n > 8 && !strncmp(ev, "data: ", 6));
	cr_assert(!strncmp(ev + n - 2, "\n\n", 2));
	return cJSON_ParseWithLength(ev + 6, n - 8);
}

Test(refserver_sse, every_token_makes_a_valid_json_event)
{
	struct rs_resp r = { RS_API_COMPLETIONS, "cmpl-1-1", "m\"x", 5 };
	struct rs_buf j = { 0 }, ev = { 0 };

	for (int t = 0; t < RS_VOCAB; t++) {
		cJSON *o, *c;

		j.len = ev.len = 0;
		cr_assert_eq(rs_fmt_chunk(&j, &r, t, NULL), 0);
		cr_assert_eq(rs_fmt_event(&ev, j.p, j.len), 0);
		o = event_json(ev.p, ev.len);
		cr_assert_not_null(o, "token %d: %s", t, ev.p);
		c = cJSON_GetArrayItem(cJSON_GetObjectItem(o, "choices"), 0);
		cr_assert_eq(strlen(cJSON_GetObjectItem(c, "text")->valuestring),
			     1);
		cr_assert_str_eq(cJSON_GetObjectItem(o, "object")->valuestring,
				 "text_completion");
		cr_assert_str_eq(cJSON_GetObjectItem(o, "model")->valuestring,
				 "m\"x");
		cJSON_Delete(o);
	}
	rs_buf_free(&j);
	rs_buf_free(&ev);
}

Test(refserver_sse, chat_role_chunk_then_token_then_usage)
{
	struct rs_resp r = { RS_API_CHAT, "chatcmpl-1-2", "ref-tiny", 5 };
	struct rs_buf j = { 0 };
	cJSON *o, *c, *d;

	cr_assert_eq(rs_fmt_role_chunk(&j, &r), 0);
	o = cJSON_Parse(j.p);
	c = cJSON_GetArrayItem(cJSON_GetObjectItem(o, "choices"), 0);
	d = cJSON_GetObjectItem(c, "delta");
	cr_assert_str_eq(cJSON_GetObjectItem(d, "role")->valuestring,
			 "assistant");
	cr_assert_str_eq(cJSON_GetObjectItem(d, "content")->valuestring, "");
	cr_assert_str_eq(cJSON_GetObjectItem(o, "object")->valuestring,
			 "chat.completion.chunk");
	cJSON_Delete(o);
	j.len = 0;
	cr_assert_eq(rs_fmt_chunk(&j, &r, 65, "length"), 0);
	o = cJSON_Parse(j.p);
	c = cJSON_GetArrayItem(cJSON_GetObjectItem(o, "choices"), 0);
	cr_assert_str_eq(cJSON_GetObjectItem(c, "finish_reason")->valuestring,
			 "length");
	cr_assert_eq(strlen(cJSON_GetObjectItem(cJSON_GetObjectItem(c,
			"delta"), "content")->valuestring), 1);
	cJSON_Delete(o);
	j.len = 0;
	cr_assert_eq(rs_fmt_usage_chunk(&j, &r, 10, 4, -1), 0);
	o = cJSON_Parse(j.p);
	cr_assert_eq(cJSON_GetArraySize(cJSON_GetObjectItem(o, "choices")), 0);
	cr_assert_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(o, "usage"),
					 "total_tokens")->valueint, 14);
	cJSON_Delete(o);
	rs_buf_free(&j);
}

Test(refserver_sse, chunked_framing_wraps_one_event_per_chunk)
{
	struct rs_buf b = { 0 };
	const char *ev = "data: [DONE]\n\n";

	cr_assert_eq(rs_http_chunk(&b, ev, strlen(ev)), 0);
	cr_assert_str_eq(b.p, "e\r\ndata: [DONE]\n\n\r\n");
	rs_buf_free(&b);
	cr_assert_eq(rs_http_head(&b, 200, "text/event-stream", -1, true,
				  false), 0);
	cr_assert(strstr(b.p, "Transfer-Encoding: chunked\r\n"));
	cr_assert_null(strstr(b.p, "Content-Length"));
	rs_buf_free(&b);
	cr_assert_eq(rs_http_head(&b, 200, "text/event-stream", -1, false,
				  true), 0);
	cr_assert(strstr(b.p, "Connection: close\r\n"));
	cr_assert_null(strstr(b.p, "Transfer-Encoding"));
	cr_assert_null(strstr(b.p, "Content-Length"));
	rs_buf_free(&b);
}

/* A whole stream of n tokens, as the bytes a client would read. */
static void build_stream(struct rs_buf *wire, enum rs_api api, int n,
			 bool chunked, bool usage)
{
	struct rs_resp r = { api, "id-1", "ref-tiny", 5 };
	struct rs_sse_units u = { 0 };

	for (int i = 1; i <= n; i++) {
		struct rs_stream_tok t = { .token = i * 37, .index = i,
					   .last = i == n, .include_usage = usage,
					   .prompt_tokens = 11,
					   .chunked = chunked };

		cr_assert_eq(rs_fmt_stream_token(&u, &r, &t), 0);
		for (int k = 0; k < u.n; k++)
			rs_buf_put(wire, u.unit[k].p, u.unit[k].len);
	}
	rs_sse_units_free(&u);
}

/* Splits a (de-chunked) body into events; each is checked as it goes. */
static int check_events(const char *body, size_t len, enum rs_api api, int n,
			bool usage)
{
	int events = 0, tokens = 0, finishes = 0;
	bool done = false, saw_usage = false;
	const char *p = body, *end = body + len;

	while (p < end) {
		const char *e = strstr(p, "\n\n");
		cJSON *o, *ch;

		cr_assert_not_null(e);
		cr_assert_not(done, "nothing after [DONE]");
		cr_assert_eq(strncmp(p, "data: ", 6), 0);
		if (!strncmp(p + 6, "[DONE]\n\n", 8)) {
			done = true;
			p = e + 2;
			continue;
		}
		o = cJSON_ParseWithLength(p + 6, e - p - 6);
		cr_assert_not_null(o);
		ch = cJSON_GetObjectItem(o, "choices");
		if (cJSON_GetArraySize(ch) == 0) {
			cJSON *u = cJSON_GetObjectItem(o, "usage");

			cr_assert_eq(tokens, n, "usage after the last token");
			cr_assert_eq(cJSON_GetObjectItem(u, "completion_tokens")
				     ->valueint, n);
			saw_usage = true;
		} else {
			cJSON *c0 = cJSON_GetArrayItem(ch, 0);
			cJSON *d = cJSON_GetObjectItem(c0, "delta");

			if (api == RS_API_CHAT && events == 0) {
				cr_assert_not_null(cJSON_GetObjectItem(d,
								       "role"));
			} else {
				tokens++;
				if (cJSON_IsString(cJSON_GetObjectItem(c0,
						"finish_reason"))) {
					finishes++;
					cr_assert_eq(tokens, n);
				}
			}
		}
		cJSON_Delete(o);
		events++;
		p = e + 2;
	}
	cr_assert(done);
	cr_assert_eq(tokens, n);
	cr_assert_eq(finishes, 1);
	cr_assert_eq(saw_usage, usage);
	return events;
}

Test(refserver_sse, close_delimited_stream_is_plain_events_ending_in_done)
{
	for (int api = 0; api < 2; api++) {
		struct rs_buf w = { 0 };

		build_stream(&w, api, 5, false, api == 1);
		cr_assert_eq(check_events(w.p, w.len, api, 5, api == 1),
			     5 + (api == 1) * 2);
		rs_buf_free(&w);
	}
}

Test(refserver_sse, chunked_stream_has_one_event_per_chunk_and_ends)
{
	struct rs_buf w = { 0 }, body = { 0 };
	const char *p;
	int chunks = 0;

	build_stream(&w, RS_API_CHAT, 4, true, true);
	for (p = w.p;;) {
		char *after;
		long size = strtol(p, &after, 16);

		cr_assert_eq(strncmp(after, "\r\n", 2), 0);
		p = after + 2;
		if (size == 0) {
			cr_assert_str_eq(p, "\r\n", "body ends after 0 chunk");
			break;
		}
		cr_assert_eq(strncmp(p, "data: ", 6), 0, "chunk starts an event");
		cr_assert_eq(strncmp(p + size - 2, "\n\n\r\n", 4), 0,
			     "chunk ends its event");
		rs_buf_put(&body, p, size);
		p += size + 2;
		chunks++;
	}
	/* role + 4 tokens + usage + [DONE] */
	cr_assert_eq(chunks, 7);
	cr_assert_eq(check_events(body.p, body.len, RS_API_CHAT, 4, true), 6);
	rs_buf_free(&w);
	rs_buf_free(&body);
}

Test(refserver_sse, non_stream_body_has_text_and_usage)
{
	struct rs_resp r = { RS_API_CHAT, "chatcmpl-1-3", "ref-tiny", 5 };
	int toks[3] = { 0, 34, 255 };
	struct rs_buf b = { 0 };
	cJSON *o, *m, *u;

	cr_assert_eq(rs_fmt_body(&b, &r, toks, 3, 9, -1, "length"), 0);
	o = cJSON_Parse(b.p);
	cr_assert_not_null(o);
	m = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(o,
			"choices"), 0), "message");
	cr_assert_eq(strlen(cJSON_GetObjectItem(m, "content")->valuestring), 3);
	u = cJSON_GetObjectItem(o, "usage");
	cr_assert_eq(cJSON_GetObjectItem(u, "prompt_tokens")->valueint, 9);
	cr_assert_eq(cJSON_GetObjectItem(u, "completion_tokens")->valueint, 3);
	cJSON_Delete(o);
	rs_buf_free(&b);
}

/* ---- scheduler ---------------------------------------------------------- */

struct sim {
	struct rs_sched s;
	struct rs_plan p;
};

static void sim_init(struct sim *x, int max_batch, int chunk)
{
	cr_assert_eq(rs_sched_init(&x->s, max_batch, chunk), 0);
	cr_assert_eq(rs_plan_init(&x->p, max_batch), 0);
}

static void sim_fini(struct sim *x)
{
	rs_plan_fini(&x->p);
	rs_sched_fini(&x->s);
}

Test(refserver_sched, batch_stays_within_max_and_every_request_gets_max_tokens)
{
	enum { N = 60 };
	struct rs_sched_item it[N];
	struct sim x;
	unsigned seed = 7;
	int submitted = 0, finished = 0, steps = 0;

	memset(it, 0, sizeof(it));
	sim_init(&x, 5, 3);
	while (finished < N) {
		for (int k = rand_r(&seed) % 4; k > 0 && submitted < N; k--) {
			it[submitted].prompt_tokens = 1 + rand_r(&seed) % 9;
			it[submitted].max_tokens = 1 + rand_r(&seed) % 6;
			rs_sched_submit(&x.s, &it[submitted++]);
		}
		rs_sched_plan(&x.s, &x.p);
		cr_assert_leq(x.p.n, 5);
		cr_assert_leq(x.s.nrunning, 5);
		rs_sched_commit(&x.s, &x.p);
		for (int i = 0; i < x.p.nfinished; i++) {
			struct rs_sched_item *f = x.p.finished[i];

			cr_assert_eq(f->generated, f->max_tokens);
			cr_assert_eq(f->prefilled, f->prompt_tokens);
			cr_assert_eq(f->state, RS_ITEM_DONE);
		}
		finished += x.p.nfinished;
		cr_assert_lt(++steps, 10000);
	}
	cr_assert_not(rs_sched_busy(&x.s));
	sim_fini(&x);
}

Test(refserver_sched, admission_is_fifo)
{
	struct rs_sched_item it[6];
	struct sim x;

	memset(it, 0, sizeof(it));
	sim_init(&x, 2, 0);
	for (int i = 0; i < 6; i++) {
		it[i].prompt_tokens = 1;
		it[i].max_tokens = 1 + (i % 2) * 2;	/* 1 or 3 */
		rs_sched_submit(&x.s, &it[i]);
	}
	/* Each request joins only after every earlier one has joined. */
	for (int step = 0, next = 0; rs_sched_busy(&x.s); step++) {
		rs_sched_plan(&x.s, &x.p);
		for (int i = 0; i < x.p.n; i++) {
			int idx = (int)(x.p.entry[i].item - it);

			if (x.p.entry[i].phase == RS_PHASE_PREFILL) {
				cr_assert_eq(idx, next, "step %d admitted %d, "
					     "expected %d", step, idx, next);
				next++;
			}
		}
		rs_sched_commit(&x.s, &x.p);
	}
	sim_fini(&x);
}

Test(refserver_sched, chunked_prefill_splits_the_prompt_then_decodes)
{
	struct rs_sched_item it = { .prompt_tokens = 10, .max_tokens = 3 };
	int want_tokens[] = { 4, 4, 2, 1, 1 };
	int want_ctx[] = { 4, 8, 10, 11, 12 };
	int want_pos[] = { 0, 4, 8, 10, 11 };
	enum rs_phase want_phase[] = { RS_PHASE_PREFILL, RS_PHASE_PREFILL,
				       RS_PHASE_PREFILL, RS_PHASE_DECODE,
				       RS_PHASE_DECODE };
	bool want_sample[] = { false, false, true, true, true };
	struct sim x;

	sim_init(&x, 4, 4);
	rs_sched_submit(&x.s, &it);
	for (int s = 0; s < 5; s++) {
		rs_sched_plan(&x.s, &x.p);
		cr_assert_eq(x.p.n, 1);
		cr_assert_eq(x.p.entry[0].tokens, want_tokens[s], "step %d", s);
		cr_assert_eq(x.p.entry[0].context, want_ctx[s], "step %d", s);
		cr_assert_eq(x.p.entry[0].pos, want_pos[s], "step %d", s);
		cr_assert_eq(x.p.entry[0].phase, want_phase[s], "step %d", s);
		cr_assert_eq(x.p.entry[0].samples, want_sample[s], "step %d", s);
		rs_sched_commit(&x.s, &x.p);
	}
	cr_assert_eq(x.p.nfinished, 1);
	cr_assert_eq(it.generated, 3);
	cr_assert_not(rs_sched_busy(&x.s));
	sim_fini(&x);
}

Test(refserver_sched, whole_prompt_prefill_when_chunk_is_zero)
{
	struct rs_sched_item it = { .prompt_tokens = 700, .max_tokens = 1 };
	struct sim x;

	sim_init(&x, 1, 0);
	rs_sched_submit(&x.s, &it);
	rs_sched_plan(&x.s, &x.p);
	cr_assert_eq(x.p.entry[0].tokens, 700);
	cr_assert(x.p.entry[0].samples);
	rs_sched_commit(&x.s, &x.p);
	cr_assert_eq(x.p.nfinished, 1, "max_tokens 1: done after prefill");
	sim_fini(&x);
}

Test(refserver_sched, cancelled_requests_leave_waiting_at_once_running_next_step)
{
	struct rs_sched_item a = { .prompt_tokens = 2, .max_tokens = 50 };
	struct rs_sched_item b = { .prompt_tokens = 2, .max_tokens = 50 };
	struct sim x;

	sim_init(&x, 1, 0);
	rs_sched_submit(&x.s, &a);
	rs_sched_submit(&x.s, &b);
	rs_sched_plan(&x.s, &x.p);
	rs_sched_commit(&x.s, &x.p);
	cr_assert(rs_sched_cancel(&x.s, &b), "waiting: removed at once");
	cr_assert_eq(x.s.waiting, 0);
	cr_assert_not(rs_sched_cancel(&x.s, &a), "running: flagged only");
	rs_sched_plan(&x.s, &x.p);
	cr_assert_eq(x.p.n, 0);
	cr_assert_eq(x.p.ndropped, 1);
	cr_assert_eq(x.p.dropped[0], &a);
	cr_assert_eq(a.generated, 1);
	cr_assert_not(rs_sched_busy(&x.s));
	sim_fini(&x);
}

/* ---- truth log ---------------------------------------------------------- */

Test(refserver_truth, step_line_is_json_with_every_field)
{
	struct rs_truth_entry e[2] = {
		{ "cmpl-1-1", RS_PHASE_PREFILL, 64, 64, 5000, .cached = 32 },
		{ "cmpl-1-2", RS_PHASE_DECODE, 1, 80, 700 },
	};
	struct rs_truth_step s = { 3, 100, 6000, 5500, 0, e, 2 };
	struct rs_buf b = { 0 };
	cJSON *o, *en;

	cr_assert_eq(rs_truth_fmt_step(&b, &s), 0);
	cr_assert_eq(b.p[b.len - 1], '\n');
	cr_assert_null(memchr(b.p, '\n', b.len - 1), "one line");
	o = cJSON_Parse(b.p);
	cr_assert_not_null(o);
	cr_assert_str_eq(cJSON_GetObjectItem(o, "type")->valuestring, "step");
	cr_assert_eq(cJSON_GetObjectItem(o, "step")->valueint, 3);
	cr_assert_eq(cJSON_GetObjectItem(o, "start_ns")->valuedouble, 100);
	cr_assert_eq(cJSON_GetObjectItem(o, "end_ns")->valuedouble, 6000);
	cr_assert_eq(cJSON_GetObjectItem(o, "cpu_ns")->valuedouble, 5500);
	cr_assert_not_null(cJSON_GetObjectItem(o, "gpu_ns"));
	en = cJSON_GetObjectItem(o, "entries");
	cr_assert_eq(cJSON_GetArraySize(en), 2);
	cr_assert_str_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(en, 0),
					     "phase")->valuestring, "prefill");
	cr_assert_str_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(en, 1),
					     "phase")->valuestring, "decode");
	cr_assert_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(en, 1),
					 "context")->valueint, 80);
	cr_assert_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(en, 0),
					 "ns")->valueint, 5000);
	cr_assert_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(en, 0),
					 "cached")->valueint, 32);
	cr_assert_null(cJSON_GetObjectItem(cJSON_GetArrayItem(en, 1),
					   "cached"), "decode has no cached");
	cJSON_Delete(o);
	rs_buf_free(&b);
}

Test(refserver_truth, request_line_escapes_names_and_keeps_big_times)
{
	struct rs_truth_request r = {
		.id = "cmpl-a-1", .tenant = "t\"\\\n\xff", .model = "ref-tiny",
		.arrival_ns = 1234567890123456789ull, .first_token_ns = 2,
		.end_ns = 3, .prompt_tokens = 4, .completion_tokens = 5,
		.compute_ns = 6, .status = "cancelled",
	};
	struct rs_buf b = { 0 };
	const char *fields[] = { "arrival_ns", "first_token_ns", "end_ns",
				 "prompt_tokens", "completion_tokens",
				 "compute_ns" };
	cJSON *o;

	cr_assert_eq(rs_truth_fmt_request(&b, &r), 0);
	cr_assert(strstr(b.p, "\"arrival_ns\":1234567890123456789"));
	o = cJSON_Parse(b.p);
	cr_assert_not_null(o);
	cr_assert_str_eq(cJSON_GetObjectItem(o, "type")->valuestring,
			 "request");
	cr_assert_str_eq(cJSON_GetObjectItem(o, "status")->valuestring,
			 "cancelled");
	cr_assert_str_eq(cJSON_GetObjectItem(o, "id")->valuestring, "cmpl-a-1");
	for (size_t i = 0; i < 6; i++)
		cr_assert(cJSON_IsNumber(cJSON_GetObjectItem(o, fields[i])),
			  "%s", fields[i]);
	cJSON_Delete(o);
	rs_buf_free(&b);
	cr_assert_eq(rs_truth_fmt_process(&b, 42, 7, 8), 0);
	o = cJSON_Parse(b.p);
	cr_assert_eq(cJSON_GetObjectItem(o, "pid")->valueint, 42);
	cr_assert_eq(cJSON_GetObjectItem(o, "stime_ns")->valueint, 8);
	cJSON_Delete(o);
	rs_buf_free(&b);
}

/* ---- model -------------------------------------------------------------- */

static void run_prompt(uint64_t seed, float *logits)
{
	struct rs_model_cfg c;
	struct rs_model *m;
	struct rs_kv *kv;
	char err[128];
	const char *p = "determinism";

	rs_model_cfg_default(&c);
	c.dim = 32;
	c.ffn = 64;
	c.seed = seed;
	m = rs_model_new(&c, err, sizeof(err));
	cr_assert_not_null(m, "%s", err);
	kv = rs_kv_new(m, 16);
	for (int i = 0; p[i]; i++)
		rs_model_forward(m, kv, (unsigned char)p[i], i,
				 p[i + 1] ? NULL : logits);
	rs_kv_free(kv);
	rs_model_free(m);
}

Test(refserver_model, same_seed_same_logits_other_seed_different)
{
	float a[RS_VOCAB], b[RS_VOCAB], c[RS_VOCAB];
	uint64_t r1 = 5, r2 = 5;

	run_prompt(1, a);
	run_prompt(1, b);
	run_prompt(2, c);
	cr_assert_eq(memcmp(a, b, sizeof(a)), 0);
	cr_assert_neq(memcmp(a, c, sizeof(a)), 0);
	for (int i = 0; i < 20; i++)
		cr_assert_eq(rs_sample(a, 1.0f, &r1), rs_sample(a, 1.0f, &r2));
}

Test(refserver_model, argmax_sampling_picks_the_largest_logit)
{
	float l[RS_VOCAB] = { 0 };
	uint64_t rng = 1;

	l[200] = 3;
	l[7] = 2;
	cr_assert_eq(rs_sample(l, 0, &rng), 200);
}

Test(refserver_model, bad_sizes_are_refused_with_a_message)
{
	struct rs_model_cfg c;
	char err[128] = "";

	rs_model_cfg_default(&c);
	c.heads = 5;
	cr_assert_null(rs_model_new(&c, err, sizeof(err)));
	cr_assert(strstr(err, "--heads 5"));
}

/* ---- engine, driven by hand --------------------------------------------- */

struct eng_fix {
	struct rs_engine e;
	char *log;
	size_t loglen;
};

static void eng_start(struct eng_fix *f, int max_batch, int chunk)
{
	struct rs_engine_cfg cfg = { .max_batch = max_batch,
				     .prefill_chunk = chunk };
	char err[256];

	rs_model_cfg_default(&cfg.model);
	cfg.model.dim = 32;
	cfg.model.ffn = 64;
	cfg.truth = open_memstream(&f->log, &f->loglen);
	cr_assert_eq(rs_engine_init(&f->e, &cfg, err, sizeof(err)), 0, "%s",
		     err);
}

static struct rs_req *eng_submit(struct eng_fix *f, int n, int prompt,
				 int max_tokens)
{
	struct rs_api_req a = { .max_tokens = max_tokens };
	unsigned char buf[256];
	struct rs_msg m = { .type = RS_MSG_SUBMIT };
	char id[32];

	memset(buf, 'a', sizeof(buf));
	a.prompt = buf;
	a.prompt_len = prompt;
	snprintf(id, sizeof(id), "cmpl-t-%d", n);
	m.req = rs_req_new(&a, id, "acme", "ref-tiny");
	m.req->seq = n;
	m.req->arrival_ns = 10;
	cr_assert_eq(rs_engine_post(&f->e, &m), 0);
	return m.req;
}

Test(refserver_engine, requests_stream_exactly_max_tokens_and_are_logged)
{
	struct eng_fix f = { 0 };
	struct rs_req *r[3];
	int got[3] = { 0 }, last[3] = { 0 }, maxt[3] = { 4, 1, 6 };
	int requests = 0, steps = 0;
	char *line, *save;

	eng_start(&f, 2, 3);
	for (int i = 0; i < 3; i++)
		r[i] = eng_submit(&f, i, 5 + i, maxt[i]);
	for (int guard = 0; guard < 100; guard++) {
		struct rs_tok_ev *ev;
		size_t n;

		rs_engine_poll(&f.e);
		n = rs_engine_take_events(&f.e, &ev);
		for (size_t k = 0; k < n; k++) {
			cr_assert_eq(ev[k].index, ++got[ev[k].seq]);
			if (ev[k].last) {
				struct rs_msg d = { RS_MSG_DONE, r[ev[k].seq],
						    20, 30 };

				last[ev[k].seq]++;
				rs_engine_post(&f.e, &d);
			}
		}
		free(ev);
		if (!rs_engine_busy(&f.e) && last[0] && last[1] && last[2])
			break;
	}
	rs_engine_poll(&f.e);	/* take the DONE messages */
	for (int i = 0; i < 3; i++) {
		cr_assert_eq(got[i], maxt[i], "request %d", i);
		cr_assert_eq(last[i], 1);
	}
	fflush(f.e.cfg.truth);
	for (line = strtok_r(f.log, "\n", &save); line;
	     line = strtok_r(NULL, "\n", &save)) {
		cJSON *o = cJSON_Parse(line);
		const char *type;

		cr_assert_not_null(o, "not JSON: %s", line);
		type = cJSON_GetObjectItem(o, "type")->valuestring;
		if (!strcmp(type, "step")) {
			cr_assert_leq(cJSON_GetArraySize(cJSON_GetObjectItem(o,
					"entries")), 2);
			steps++;
		} else {
			cr_assert_str_eq(type, "request");
			cr_assert_str_eq(cJSON_GetObjectItem(o, "status")
					 ->valuestring, "ok");
			cr_assert_str_eq(cJSON_GetObjectItem(o, "tenant")
					 ->valuestring, "acme");
			cr_assert_gt(cJSON_GetObjectItem(o, "compute_ns")
				     ->valuedouble, 0);
			cr_assert_eq(cJSON_GetObjectItem(o, "end_ns")
				     ->valueint, 30);
			requests++;
		}
		cJSON_Delete(o);
	}
	cr_assert_eq(requests, 3);
	cr_assert_gt(steps, 5);
	FILE *t = f.e.cfg.truth;
	rs_engine_fini(&f.e);
	fclose(t);
	free(f.log);
}

Test(refserver_engine, cancelled_request_is_dropped_and_logged_cancelled)
{
	struct eng_fix f = { 0 };
	struct rs_req *r;
	struct rs_tok_ev *ev;
	struct rs_msg c = { .type = RS_MSG_CANCEL };
	size_t n;

	eng_start(&f, 4, 0);
	r = eng_submit(&f, 0, 8, 100);
	rs_engine_poll(&f.e);
	rs_engine_poll(&f.e);
	n = rs_engine_take_events(&f.e, &ev);
	free(ev);
	cr_assert_eq(n, 2);
	c.req = r;
	c.end_ns = 99;
	rs_engine_post(&f.e, &c);
	rs_engine_poll(&f.e);	/* takes the message, drops it, no step */
	cr_assert_not(rs_engine_busy(&f.e));
	n = rs_engine_take_events(&f.e, &ev);
	free(ev);
	cr_assert_eq(n, 0);
	fflush(f.e.cfg.truth);
	cr_assert(strstr(f.log, "\"status\":\"cancelled\""));
	cr_assert(strstr(f.log, "\"completion_tokens\":2"));
	FILE *t = f.e.cfg.truth;
	rs_engine_fini(&f.e);
	fclose(t);
	free(f.log);
}
