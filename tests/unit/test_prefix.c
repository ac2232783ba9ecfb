/*
 * test_prefix.c - unit tests of the reference server's prefix cache
 * (tools/refserver/prefix.c) and of the engine using it.
 *
 * In:  the refserver library; a small model (dim 32).
 * Out: Criterion suites refserver_prefix, refserver_prefix_engine.
 * Assumes: nothing outside the process; the engine is driven by hand and
 *      its truth log goes to a memory stream.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "../../tools/refserver/api.h"
#include "../../tools/refserver/engine.h"
#include "../../tools/refserver/model.h"
#include "../../tools/refserver/prefix.h"

static struct rs_model *small_model(void)
{
	struct rs_model_cfg c;
	struct rs_model *m;
	char err[128];

	rs_model_cfg_default(&c);
	c.dim = 32;
	c.ffn = 64;
	m = rs_model_new(&c, err, sizeof(err));
	cr_assert_not_null(m, "%s", err);
	return m;
}

/* Runs prompt[from, n) through kv; the last token's logits into out. */
static void prefill(const struct rs_model *m, struct rs_kv *kv,
		    const unsigned char *prompt, int from, int n, float *out)
{
	for (int i = from; i < n; i++)
		rs_model_forward(m, kv, prompt[i], i, i == n - 1 ? out : NULL);
}

static void fill(unsigned char *p, int n, unsigned seed)
{
	for (int i = 0; i < n; i++) {
		seed = seed * 1103515245u + 12345u;
		p[i] = (unsigned char)(seed >> 16);
	}
}

Test(refserver_prefix, a_cached_prefix_gives_the_same_logits_bit_for_bit)
{
	struct rs_model *m = small_model();
	struct rs_prefix *p = rs_prefix_new(m, 64);
	unsigned char a[100], b[100];
	float full[RS_VOCAB], fast[RS_VOCAB];
	struct rs_kv *k1 = rs_kv_new(m, 128), *k2 = rs_kv_new(m, 128);
	struct rs_kv *k3 = rs_kv_new(m, 128);
	int got;

	cr_assert(p && k1 && k2 && k3);
	fill(a, sizeof(a), 7);
	memcpy(b, a, 70);	/* b shares a's first 70 tokens */
	fill(b + 70, 30, 9);
	prefill(m, k1, a, 0, 100, full);
	rs_prefix_insert(p, a, 100, k1);
	/* a again: 6 whole blocks (96 tokens), at least one left to run */
	got = rs_prefix_match(p, a, 100, k2);
	cr_assert_eq(got, 96);
	prefill(m, k2, a, got, 100, fast);
	cr_assert_eq(memcmp(full, fast, sizeof(full)), 0,
		     "logits after a cached prefix differ from a full prefill");
	/* b: the 4 blocks wholly inside the shared 70 tokens */
	prefill(m, k1, b, 0, 100, full);	/* k1 reused from position 0 */
	got = rs_prefix_match(p, b, 100, k3);
	cr_assert_eq(got, 64);
	prefill(m, k3, b, got, 100, fast);
	cr_assert_eq(memcmp(full, fast, sizeof(full)), 0);
	cr_assert_eq(p->hit_tokens, 96 + 64);
	rs_kv_free(k1);
	rs_kv_free(k2);
	rs_kv_free(k3);
	rs_prefix_free(p);
	rs_model_free(m);
}

Test(refserver_prefix, a_block_matches_only_after_its_whole_prefix)
{
	struct rs_model *m = small_model();
	struct rs_prefix *p = rs_prefix_new(m, 64);
	struct rs_kv *kv = rs_kv_new(m, 128);
	unsigned char a[64], b[64];

	fill(a, sizeof(a), 3);
	memcpy(b, a, sizeof(b));
	b[0] ^= 1;		/* only the first token differs */
	prefill(m, kv, a, 0, 64, NULL);
	rs_prefix_insert(p, a, 64, kv);
	cr_assert_eq(rs_prefix_match(p, b, 64, kv), 0,
		     "blocks 2-4 are the same bytes, but after another "
		     "first block: they must not match");
	/* a prompt of exactly one block keeps its last token to compute */
	cr_assert_eq(rs_prefix_match(p, a, 16, kv), 0);
	cr_assert_eq(rs_prefix_match(p, a, 17, kv), 16);
	cr_assert_eq(rs_prefix_match(p, a, 64, kv), 48);
	rs_kv_free(kv);
	rs_prefix_free(p);
	rs_model_free(m);
}

Test(refserver_prefix, the_least_recently_used_block_is_evicted)
{
	struct rs_model *m = small_model();
	struct rs_prefix *p = rs_prefix_new(m, 4);
	struct rs_kv *kv = rs_kv_new(m, 64);
	unsigned char a[33], b[33], c[33];

	fill(a, sizeof(a), 1);
	fill(b, sizeof(b), 2);
	fill(c, sizeof(c), 3);
	prefill(m, kv, a, 0, 32, NULL);
	rs_prefix_insert(p, a, 32, kv);		/* a0 a1 */
	prefill(m, kv, b, 0, 32, NULL);
	rs_prefix_insert(p, b, 32, kv);		/* a0 a1 b0 b1: full */
	prefill(m, kv, a, 0, 32, NULL);
	cr_assert_eq(rs_prefix_match(p, a, 33, kv), 32);	/* a is newer */
	prefill(m, kv, c, 0, 32, NULL);
	rs_prefix_insert(p, c, 32, kv);		/* evicts b0, b1 */
	cr_assert_eq(p->evicted, 2);
	cr_assert_eq(rs_prefix_match(p, b, 33, kv), 0, "b was the least "
		     "recently used and should have gone");
	cr_assert_eq(rs_prefix_match(p, a, 33, kv), 32);
	cr_assert_eq(rs_prefix_match(p, c, 33, kv), 32);
	rs_kv_free(kv);
	rs_prefix_free(p);
	rs_model_free(m);
}

/* ---- the engine with a prefix cache ------------------------------------- */

struct pfx_eng {
	struct rs_engine e;
	char *log;
	size_t loglen;
};

static struct rs_req *pfx_submit(struct pfx_eng *f, int seq,
				 unsigned char *prompt, int n)
{
	struct rs_api_req a = { .max_tokens = 2, .prompt = prompt,
				.prompt_len = n };
	struct rs_msg msg = { .type = RS_MSG_SUBMIT };
	char id[32];

	snprintf(id, sizeof(id), "cmpl-p-%d", seq);
	msg.req = rs_req_new(&a, id, "acme", "ref-tiny");
	msg.req->seq = seq;
	cr_assert_eq(rs_engine_post(&f->e, &msg), 0);
	return msg.req;
}

/* Runs the engine until r's stream ends; returns its events' cached count. */
static int pfx_finish(struct pfx_eng *f, struct rs_req *r)
{
	int cached = -1;
	bool done = false;

	for (int guard = 0; guard < 100 && !done; guard++) {
		struct rs_tok_ev *ev;
		size_t n;

		rs_engine_poll(&f->e);
		n = rs_engine_take_events(&f->e, &ev);
		for (size_t k = 0; k < n; k++) {
			cached = ev[k].cached_tokens;
			if (ev[k].last) {
				struct rs_msg d = { RS_MSG_DONE, r, 20, 30 };

				rs_engine_post(&f->e, &d);
				done = true;
			}
		}
		free(ev);
	}
	rs_engine_poll(&f->e);	/* the DONE message: the request is logged */
	cr_assert(done, "the request did not finish");
	return cached;
}

Test(refserver_prefix_engine, a_repeated_prompt_prefills_only_its_tail)
{
	struct rs_engine_cfg cfg = { .max_batch = 4, .prefix_blocks = 32 };
	struct pfx_eng f = { 0 };
	unsigned char pr[50];
	char err[256], *line, *save;
	int prefill_tokens[2] = { 0 }, cached_logged[2] = { -1, -1 }, k = 0;
	int req_cached[2] = { -1, -1 }, nreq = 0;

	rs_model_cfg_default(&cfg.model);
	cfg.model.dim = 32;
	cfg.model.ffn = 64;
	cfg.truth = open_memstream(&f.log, &f.loglen);
	cr_assert_eq(rs_engine_init(&f.e, &cfg, err, sizeof(err)), 0, "%s",
		     err);
	fill(pr, sizeof(pr), 11);
	cr_assert_eq(pfx_finish(&f, pfx_submit(&f, 0, pr, 50)), 0);
	cr_assert_eq(pfx_finish(&f, pfx_submit(&f, 1, pr, 50)), 48);
	fflush(cfg.truth);
	for (line = strtok_r(f.log, "\n", &save); line;
	     line = strtok_r(NULL, "\n", &save)) {
		cJSON *o = cJSON_Parse(line), *e;

		cr_assert_not_null(o);
		if (!strcmp(cJSON_GetObjectItem(o, "type")->valuestring,
			    "request")) {
			req_cached[nreq++] = cJSON_GetObjectItem(o,
				"cached_tokens")->valueint;
		}
		cJSON_ArrayForEach(e, cJSON_GetObjectItem(o, "entries")) {
			if (strcmp(cJSON_GetObjectItem(e, "phase")->valuestring,
				   "prefill"))
				continue;
			cr_assert_lt(k, 2);
			prefill_tokens[k] = cJSON_GetObjectItem(e, "tokens")
				->valueint;
			cached_logged[k++] = cJSON_GetObjectItem(e, "cached")
				->valueint;
		}
		cJSON_Delete(o);
	}
	cr_assert_eq(k, 2);
	cr_expect_eq(prefill_tokens[0], 50);
	cr_expect_eq(cached_logged[0], 0);
	cr_expect_eq(prefill_tokens[1], 2, "the second prefill ran %d tokens",
		     prefill_tokens[1]);
	cr_expect_eq(cached_logged[1], 48);
	cr_assert_eq(nreq, 2);
	cr_expect_eq(req_cached[0], 0);
	cr_expect_eq(req_cached[1], 48);
	rs_engine_fini(&f.e);
	fclose(cfg.truth);
	free(f.log);
}

/* ---- the wire ------------------------------------------------------------ */

static int usage_cached(const char *json)
{
	cJSON *o = cJSON_Parse(json), *d;
	int n;

	cr_assert_not_null(o, "not JSON: %s", json);
	d = cJSON_GetObjectItem(cJSON_GetObjectItem(o, "usage"),
				"prompt_tokens_details");
	n = d ? cJSON_GetObjectItem(d, "cached_tokens")->valueint : -1;
	cJSON_Delete(o);
	return n;
}

Test(refserver_prefix, usage_reports_cached_tokens_only_when_asked)
{
	struct rs_resp r = { RS_API_COMPLETIONS, "cmpl-1-3", "ref-tiny", 5 };
	int toks[2] = { 65, 66 };
	struct rs_buf b = { 0 };

	cr_assert_eq(rs_fmt_body(&b, &r, toks, 2, 40, 32, "length"), 0);
	cr_expect_eq(usage_cached(b.p), 32);
	b.len = 0;
	cr_assert_eq(rs_fmt_body(&b, &r, toks, 2, 40, -1, "length"), 0);
	cr_expect_eq(usage_cached(b.p), -1);
	b.len = 0;
	cr_assert_eq(rs_fmt_usage_chunk(&b, &r, 40, 2, 16), 0);
	cr_expect_eq(usage_cached(b.p), 16);
	rs_buf_free(&b);
}
