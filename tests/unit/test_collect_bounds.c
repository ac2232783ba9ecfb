/*
 * test_collect_bounds.c - the collector's store keeps its memory bounded
 * (user/collect.c): spilling to a trace file keeps nothing and the report
 * read back equals the report of the file; without a file the limits keep
 * at most N requests and intervals and count the rest in the losses.
 *
 * In:  requests and intervals made here, a trace file in a temporary
 *      folder.
 * Out: Criterion suite "collect_bounds".
 * Assumes: nothing privileged.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "../../user/collect.h"
#include "../../user/tracefile.h"

static char cb_dir[64];

static void cb_setup(void)
{
	snprintf(cb_dir, sizeof(cb_dir), "/tmp/tt_bounds.XXXXXX");
	cr_assert_not_null(mkdtemp(cb_dir));
}

static void cb_teardown(void)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", cb_dir);
	if (system(cmd))
		fprintf(stderr, "could not remove %s\n", cb_dir);
}

TestSuite(collect_bounds, .init = cb_setup, .fini = cb_teardown,
	  .timeout = 60);

#define CB_MS	1000000ull
#define CB_T0	(1000 * CB_MS)

/* Request i: arrives at i ms, 4 tokens 1 ms apart after 2 ms. */
static void cb_request(struct tt_request *q, uint64_t *tok, unsigned i)
{
	memset(q, 0, sizeof(*q));
	q->pid = 7;
	q->http_status = 200;
	q->stream = true;
	q->max_tokens = -1;
	q->arrival_ns = CB_T0 + i * CB_MS;
	for (int k = 0; k < 4; k++)
		tok[k] = q->arrival_ns + (2 + k) * CB_MS;
	q->token_ns = tok;
	q->token_ns_len = 4;
	q->token_events = 4;
	q->first_token_ns = tok[0];
	q->end_ns = tok[3] + CB_MS;
	q->prompt_tokens = 10;
	q->completion_tokens = 4;
	q->tokens_source = TT_TOKENS_USAGE;
	snprintf(q->id, sizeof(q->id), "req-%u", i);
	snprintf(q->tenant, sizeof(q->tenant), "t%u", i % 3);
	snprintf(q->model, sizeof(q->model), "tiny");
	snprintf(q->api, sizeof(q->api), "completions");
}

/* n requests and n CPU intervals (one per request, 1 ms each) into c. */
static void cb_feed(struct collect *c, unsigned n)
{
	struct tt_device cpu = { .id = 0, .kind = TT_DEV_CPU };
	struct tt_compute_sink s;
	struct tt_request q;
	uint64_t tok[4];

	snprintf(cpu.name, sizeof(cpu.name), "cpu");
	collect_sink(c, &s);
	s.device(s.ctx, &cpu);
	for (unsigned i = 0; i < n; i++) {
		struct tt_interval iv = { .start_ns = CB_T0 + i * CB_MS,
			.end_ns = CB_T0 + i * CB_MS + CB_MS / 2,
			.device = 0, .pid = 7, .tid = 7, .kind = TT_IV_CPU };

		s.interval(s.ctx, &iv);
		cb_request(&q, tok, i);
		cr_assert_eq(collect_add_request(c, &q), 0);
	}
}

static char *cb_report(struct collect *c)
{
	struct report_input in;
	struct report r;
	cJSON *o;
	char *s;

	cr_assert_eq(collect_report_input(c, NULL, &in), 0);
	cr_assert_eq(report_build(&in, &r), 0);
	o = collect_report_json(c, &r);
	cr_assert_not_null(o);
	s = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	report_free(&r);
	return s;
}

static double cb_loss(const char *report_json, const char *key)
{
	cJSON *o = cJSON_Parse(report_json);
	const cJSON *n = cJSON_GetObjectItem(cJSON_GetObjectItem(o, "losses"),
					     key);
	double v;

	cr_assert(cJSON_IsNumber(n), "losses.%s missing", key);
	v = n->valuedouble;
	cJSON_Delete(o);
	return v;
}

Test(collect_bounds, spilling_keeps_nothing_and_the_reload_equals_the_file)
{
	struct tracefile_writer *w;
	struct collect live, file;
	char path[128], *a, *b;
	const unsigned n = 5000;

	snprintf(path, sizeof(path), "%s/spill.tt", cb_dir);
	collect_init(&live);
	collect_set_compute(&live, "cpu", 0);
	collect_set_start(&live, CB_T0);
	/* a few kept before the writer: written at attach, then freed */
	cb_feed(&live, 10);
	cr_assert_eq(live.nreqs, 10);
	cr_assert_eq(tracefile_create(path, &live.host, 1, false, &w), 0);
	collect_set_spill(&live, true);
	cr_assert_eq(collect_attach_writer(&live, w), 0);
	cr_expect_eq(live.nreqs, 0, "requests kept after attach: %zu",
		     live.nreqs);
	cr_expect_eq(live.nivs, 0);
	cb_feed(&live, n);
	cr_expect_eq(live.nreqs, 0, "spilled requests were kept");
	cr_expect_eq(live.nivs, 0, "spilled intervals were kept");
	cr_expect_null(live.reqs);
	cr_expect_null(live.ivs);
	cr_expect_eq(live.reqs_seen, n + 10);
	cr_assert_eq(collect_close(&live, CB_T0 + (n + 100) * CB_MS), 0);
	cr_assert_eq(collect_reload(&live, path, NULL), 0);
	cr_expect_eq(live.nreqs, n + 10);
	cr_expect_eq(live.nivs, n + 10);
	cr_expect(live.window_closed);
	collect_init(&file);
	cr_assert_eq(collect_load(&file, path, NULL, NULL), 0);
	a = cb_report(&live);
	b = cb_report(&file);
	cr_expect_str_eq(a, b);
	cr_expect_eq(cb_loss(a, "requests_not_kept"), 0);
	free(a);
	free(b);
	collect_free(&live);
	collect_free(&file);
}

Test(collect_bounds, limits_keep_at_most_n_and_the_report_counts_the_rest)
{
	struct collect c;
	char *s;

	collect_init(&c);
	collect_set_compute(&c, "cpu", 0);
	collect_set_start(&c, CB_T0);
	collect_set_limits(&c, 100, 40);
	cb_feed(&c, 250);
	cr_expect_eq(c.nreqs, 100);
	cr_expect_eq(c.nivs, 40);
	cr_expect_eq(c.reqs_dropped, 150);
	cr_expect_eq(c.ivs_dropped, 210);
	cr_expect_eq(c.reqs_seen, 250);
	cr_assert_eq(collect_close(&c, CB_T0 + 300 * CB_MS), 0);
	s = cb_report(&c);
	cr_expect_eq(cb_loss(s, "requests_not_kept"), 150);
	cr_expect_eq(cb_loss(s, "intervals_not_kept"), 210);
	free(s);
	collect_free(&c);
}

Test(collect_bounds, a_writer_without_spilling_keeps_what_it_writes)
{
	struct tracefile_writer *w;
	struct collect c, back;
	char path[128];

	snprintf(path, sizeof(path), "%s/keep.tt", cb_dir);
	collect_init(&c);
	collect_set_start(&c, CB_T0);
	cr_assert_eq(tracefile_create(path, &c.host, 0, false, &w), 0);
	cr_assert_eq(collect_attach_writer(&c, w), 0);
	cb_feed(&c, 20);
	cr_expect_eq(c.nreqs, 20);
	cr_assert_eq(collect_close(&c, CB_T0 + 100 * CB_MS), 0);
	collect_init(&back);
	cr_assert_eq(collect_load(&back, path, NULL, NULL), 0);
	cr_expect_eq(back.nreqs, 20);
	cr_expect_eq(back.reqs[19].token_ns_len, 4);
	cr_expect_eq(back.reqs[19].token_ns[3], c.reqs[19].token_ns[3]);
	collect_free(&back);
	collect_free(&c);
}

Test(collect_bounds, reload_of_a_missing_file_fails_and_keeps_the_store)
{
	struct collect c;
	FILE *devnull = fopen("/dev/null", "w");

	collect_init(&c);
	collect_set_start(&c, CB_T0);
	cb_feed(&c, 3);
	cr_expect_lt(collect_reload(&c, "/nonexistent/x.tt", devnull), 0);
	cr_expect_eq(c.nreqs, 3);
	fclose(devnull);
	collect_free(&c);
}

struct cb_gone {
	unsigned n;
	uint64_t latest_end;
};

static void cb_on_gone(void *ctx, const struct tt_request *q)
{
	struct cb_gone *g = ctx;

	g->n++;
	if (q->end_ns > g->latest_end)
		g->latest_end = q->end_ns;
}

/* top's sliding window: what ended before t goes (each request seen by
 * the callback first), the rest stays whole, the window starts at t, and
 * the room freed takes new requests under the same limit. */
Test(collect_bounds, forgetting_before_t_keeps_the_rest_and_frees_room)
{
	uint64_t t = CB_T0 + 50 * CB_MS;
	struct cb_gone g = { 0 };
	struct collect c;
	unsigned kept = 0;

	collect_init(&c);
	collect_set_compute(&c, "cpu", 0);
	collect_set_start(&c, CB_T0);
	collect_set_limits(&c, 100, 100);
	cb_feed(&c, 100);
	/* request i ends at i + 6 ms: those with i < 44 end before t */
	for (size_t i = 0; i < c.nreqs; i++)
		kept += c.reqs[i].end_ns >= t;
	cr_assert_eq(collect_forget_before(&c, t, cb_on_gone, &g), 100 - kept);
	cr_expect_eq(g.n, 100 - kept);
	cr_expect_eq(kept, 56);
	cr_expect_lt(g.latest_end, t);
	cr_expect_eq(c.nreqs, kept);
	cr_expect_eq(c.start_ns, t);
	for (size_t i = 0; i < c.nreqs; i++) {
		cr_expect_geq(c.reqs[i].end_ns, t);
		cr_expect_eq(c.reqs[i].token_ns_len, 4);
		cr_expect_eq(c.reqs[i].token_ns[3] + CB_MS, c.reqs[i].end_ns,
			     "token times of a kept request changed");
	}
	/* interval i is [i, i + 0.5) ms: those with i >= 50 stay */
	cr_expect_eq(c.nivs, 50);
	for (size_t i = 0; i < c.nivs; i++)
		cr_expect_gt(c.ivs[i].end_ns, t);
	/* the freed room takes new requests; none is dropped */
	cb_feed(&c, 44);
	cr_expect_eq(c.nreqs, 100);
	cr_expect_eq(c.reqs_dropped, 0);
	/* a start already past t stays */
	cr_expect_eq(collect_forget_before(&c, CB_T0, NULL, NULL), 0);
	cr_expect_eq(c.start_ns, t);
	collect_free(&c);
}
