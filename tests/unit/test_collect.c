/*
 * test_collect.c - the collector's store (user/collect.c): what the sink
 * keeps, deep copies, prices, the report object run --summary writes, a
 * trace written live and loaded back giving the same report, and
 * `tokentrace diff` over two hand-built traces.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "../../user/collect.h"
#include "../../user/commands.h"
#include "../../user/tracefile.h"
#include "steps_synth.h"

static char dir[64];

static void setup(void)
{
	snprintf(dir, sizeof(dir), "/tmp/tt_collect.XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
}

static void teardown(void)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd))
		fprintf(stderr, "could not remove %s\n", dir);
}

static const char *tpath(const char *name)
{
	static char p[4][128];
	static int k;

	k = (k + 1) % 4;
	snprintf(p[k], sizeof(p[k]), "%s/%s", dir, name);
	return p[k];
}

static double num(const cJSON *o, const char *k)
{
	const cJSON *n = cJSON_GetObjectItem(o, k);

	cr_assert(cJSON_IsNumber(n), "field %s is not a number", k);
	return n->valuedouble;
}

TestSuite(collect, .init = setup, .fini = teardown, .timeout = 60);

Test(collect, sink_keeps_one_device_per_id_and_sums_losses_by_source)
{
	struct collect c;
	struct tt_compute_sink s;
	struct tt_device gpu = { .id = 1, .kind = TT_DEV_GPU };
	struct tt_interval iv = { .start_ns = 10, .end_ns = 20, .device = 1 };
	struct tt_compute_losses cpu = { .cpu_events_lost = 5 };
	struct tt_compute_losses p1 = { .cupti_dropped = 3, .lib_dropped = 1 };
	struct tt_compute_losses p1b = { .cupti_dropped = 7 };
	struct tt_compute_losses p2 = { .lib_dropped = 10 };

	collect_init(&c);
	collect_sink(&c, &s);
	snprintf(gpu.name, sizeof(gpu.name), "old name");
	s.device(s.ctx, &gpu);
	snprintf(gpu.name, sizeof(gpu.name), "NVIDIA H100");
	s.device(s.ctx, &gpu);
	s.interval(s.ctx, &iv);
	s.interval(s.ctx, &iv);
	s.name(s.ctx, 9, 4, "first");
	s.name(s.ctx, 9, 4, "gemm");
	s.losses(s.ctx, 0, &cpu);
	s.losses(s.ctx, 0, &cpu);	/* the CPU source: increments */
	s.losses(s.ctx, 100, &p1);
	s.losses(s.ctx, 100, &p1b);	/* a library: running totals */
	s.losses(s.ctx, 200, &p2);
	cr_expect_eq(c.ndevs, 1);
	cr_expect_str_eq(c.devs[0].name, "NVIDIA H100");
	cr_expect_eq(c.nivs, 2);
	cr_assert_eq(c.nnames, 1);
	cr_expect_str_eq(c.names[0].name, "gemm");
	cr_expect_eq(c.losses.cpu_events, 10);
	cr_expect_eq(c.losses.cupti_records, 7 + 10);
	collect_free(&c);
}

Test(collect, a_request_s_token_times_are_copied)
{
	struct collect c;
	uint64_t tok[3] = { 100, 200, 300 };
	struct tt_request q = { .token_ns = tok, .token_ns_len = 3,
				.token_events = 3 };

	collect_init(&c);
	cr_assert_eq(collect_add_request(&c, &q), 0);
	tok[1] = 999;
	cr_assert_eq(c.nreqs, 1);
	cr_expect_neq(c.reqs[0].token_ns, tok);
	cr_expect_eq(c.reqs[0].token_ns[1], 200);
	cr_expect_eq(c.reqs[0].token_ns_len, 3);
	collect_free(&c);
}

Test(collect, prices_default_by_kind_unless_named)
{
	struct collect c;
	struct tt_compute_sink s;
	struct tt_device cpu = { .id = 0, .kind = TT_DEV_CPU };
	struct tt_device a = { .id = 1, .kind = TT_DEV_GPU };
	struct tt_device b = { .id = 2, .kind = TT_DEV_GPU };
	struct report_price named = { "GPU B", 4.5 };
	struct collect_prices p = { &named, 1, -1, -1 };
	struct report_input in;

	snprintf(cpu.name, sizeof(cpu.name), "cpu");
	snprintf(a.name, sizeof(a.name), "GPU A");
	snprintf(b.name, sizeof(b.name), "GPU B");
	collect_init(&c);
	collect_sink(&c, &s);
	s.device(s.ctx, &cpu);
	s.device(s.ctx, &a);
	s.device(s.ctx, &b);
	cr_assert_eq(collect_report_input(&c, &p, &in), 0);
	cr_assert_eq(in.nprices, 3);
	cr_expect_float_eq(in.prices[0].usd_per_hour,
			   COLLECT_CPU_USD_PER_HOUR, 1e-12);
	cr_expect_float_eq(in.prices[1].usd_per_hour,
			   COLLECT_GPU_USD_PER_HOUR, 1e-12);
	cr_expect_float_eq(in.prices[2].usd_per_hour, 4.5, 1e-12);
	cr_expect(collect_price_is_default(&c, "GPU A"));
	cr_expect_not(collect_price_is_default(&c, "GPU B"));
	p.cpu_default = 0.5;
	cr_assert_eq(collect_report_input(&c, &p, &in), 0);
	cr_expect_float_eq(in.prices[0].usd_per_hour, 0.5, 1e-12);
	collect_free(&c);
}

/* Formerly the run summary's checks: a run with nothing attributed still
 * has its window, devices (the CPU with its on-CPU time) and losses. */
Test(collect, report_of_an_idle_run_has_window_devices_and_losses)
{
	struct collect c;
	struct tt_compute_sink s;
	struct tt_device cpu = { .id = 0, .kind = TT_DEV_CPU };
	struct tt_device gpu = { .id = 1, .kind = TT_DEV_GPU };
	/* two threads at once, one slice past the window's end */
	struct tt_interval a = { .start_ns = 1100, .end_ns = 1500,
				 .kind = TT_IV_CPU };
	struct tt_interval b = { .start_ns = 1200, .end_ns = 1400,
				 .kind = TT_IV_CPU, .tid = 2 };
	struct tt_interval late = { .start_ns = 1900, .end_ns = 2500,
				    .kind = TT_IV_CPU };
	struct tt_compute_losses l = { .cpu_events_lost = 3 };
	struct report_input in;
	struct report r;
	cJSON *o, *d;

	snprintf(cpu.name, sizeof(cpu.name), "cpu");
	snprintf(gpu.name, sizeof(gpu.name), "GPU A");
	collect_init(&c);
	collect_set_compute(&c, "cpu", 0);
	collect_set_start(&c, 1000);
	collect_sink(&c, &s);
	s.device(s.ctx, &cpu);
	s.device(s.ctx, &gpu);
	s.interval(s.ctx, &a);
	s.interval(s.ctx, &b);
	s.interval(s.ctx, &late);
	s.losses(s.ctx, 0, &l);
	cr_assert_eq(collect_close(&c, 2000), 0);
	cr_assert_eq(collect_report_input(&c, NULL, &in), 0);
	cr_assert_eq(report_build(&in, &r), 0);
	o = collect_report_json(&c, &r);
	cr_assert_not_null(o);
	cr_expect_eq(num(o, "window_ns"), 1000);
	cr_expect_eq(cJSON_GetArraySize(cJSON_GetObjectItem(o, "requests")),
		     0);
	cr_expect(cJSON_IsArray(cJSON_GetObjectItem(o, "tenants")));
	cr_expect(cJSON_IsArray(cJSON_GetObjectItem(o, "models")));
	cr_expect_eq(num(cJSON_GetObjectItem(o, "losses"), "events"), 3);
	cr_assert_eq(cJSON_GetArraySize(cJSON_GetObjectItem(o, "devices")), 2);
	cJSON_ArrayForEach(d, cJSON_GetObjectItem(o, "devices")) {
		const char *kind = cJSON_GetObjectItem(d, "kind")->valuestring;

		cr_expect_eq(num(d, "busy_ns") + num(d, "idle_ns"), 1000);
		if (!strcmp(kind, "cpu")) {
			cr_expect_eq(num(d, "busy_ns"), 400 + 100);
			cr_expect_eq(num(d, "on_cpu_ns"), 400 + 200 + 100);
		} else {
			cr_expect_null(cJSON_GetObjectItem(d, "on_cpu_ns"));
		}
	}
	cJSON_Delete(o);
	report_free(&r);
	collect_free(&c);
}

/* The synthetic engine's devices, intervals and requests into c. */
static void feed(struct collect *c, const struct sy_engine *g)
{
	struct tt_compute_sink s;

	collect_sink(c, &s);
	for (int i = 0; i < 2; i++)
		s.device(s.ctx, &g->devs[i]);
	s.name(s.ctx, 1, 1, "kernel");
	for (size_t i = 0; i < g->nivs; i++)
		s.interval(s.ctx, &g->ivs[i]);
	for (uint32_t i = 0; i < g->nreqs; i++)
		cr_assert_eq(collect_add_request(c, &g->reqs[i]), 0);
}

static char *report_text(struct collect *c)
{
	struct report_input in;
	struct report r;
	cJSON *o;
	char *s;

	cr_assert_eq(collect_report_input(c, NULL, &in), 0);
	cr_assert_eq(report_build(&in, &r), 0);
	o = collect_report_json(c, &r);
	s = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	report_free(&r);
	return s;
}

Test(collect, a_trace_written_live_reports_the_same_as_the_live_store)
{
	struct sy_cfg cfg = sy_default();
	struct sy_req rq[SY_MAXR];
	struct sy_engine *g = calloc(1, sizeof(*g));
	struct tracefile_writer *w;
	struct collect live, back;
	struct tracefile_header hdr;
	char *a, *b;

	sy_run(g, &cfg, rq, sy_three(rq));
	collect_init(&live);
	snprintf(live.host.governor, sizeof(live.host.governor), "schedutil");
	collect_set_compute(&live, "cupti", 8);
	collect_set_start(&live, g->start_ns);
	cr_assert_eq(tracefile_create(tpath("live.tt"), &live.host, 3, false,
				      &w), 0);
	/* attached after the records: those are written at attach */
	feed(&live, g);
	cr_assert_eq(collect_attach_writer(&live, w), 0);
	cr_assert_eq(collect_tick(&live, g->end_ns), 0);
	cr_assert_eq(collect_close(&live, g->end_ns + 100000000ull), 0);
	collect_init(&back);
	cr_assert_eq(collect_load(&back, tpath("live.tt"), NULL, &hdr), 0);
	cr_expect_str_eq(back.host.governor, "schedutil");
	cr_expect_str_eq(back.compute, "cupti");
	cr_expect_eq(back.max_batch, 8);
	cr_expect(back.window_closed);
	cr_expect_eq(back.nreqs, live.nreqs);
	cr_expect_eq(back.nivs, live.nivs);
	cr_expect_eq(back.nnames, 1);
	a = report_text(&live);
	b = report_text(&back);
	cr_expect_str_eq(a, b);
	free(a);
	free(b);
	collect_free(&live);
	collect_free(&back);
	sy_free(g);
	free(g);
}

/* A trace of one request served by the CPU device in a 1 s window: the
 * request arrives at 0.1 s, the CPU is busy for busy_ms (before the first
 * token), its first token comes after ttft_ms, then one every 2 ms. */
static void one_request_trace(const char *path, const char *governor,
			      double ttft_ms, uint64_t busy_ms)
{
	const uint64_t ms = 1000000ull, t0 = 5000 * ms;
	struct tt_device cpu = { .id = 0, .kind = TT_DEV_CPU };
	struct tt_interval iv = { .start_ns = t0 + 100 * ms,
				  .end_ns = t0 + (100 + busy_ms) * ms,
				  .kind = TT_IV_CPU };
	uint64_t tok[4];
	struct tt_request q = { .pid = 1, .http_status = 200,
		.arrival_ns = t0 + 100 * ms, .token_ns = tok,
		.token_ns_len = 4, .token_events = 4, .prompt_tokens = 10,
		.completion_tokens = 4, .stream = true, .ttft_ms = ttft_ms,
		.tokens_source = TT_TOKENS_USAGE, .max_tokens = -1 };
	struct tracefile_writer *w;
	struct tt_compute_sink s;
	struct collect c;

	for (int i = 0; i < 4; i++)
		tok[i] = q.arrival_ns + (uint64_t)(ttft_ms * ms) + i * 2 * ms;
	q.first_token_ns = tok[0];
	q.end_ns = tok[3] + ms;
	snprintf(q.tenant, sizeof(q.tenant), "acme");
	snprintf(q.model, sizeof(q.model), "tiny");
	snprintf(q.api, sizeof(q.api), "completions");
	snprintf(cpu.name, sizeof(cpu.name), "cpu");
	collect_init(&c);
	snprintf(c.host.kernel, sizeof(c.host.kernel), "6.18.0");
	snprintf(c.host.governor, sizeof(c.host.governor), "%s", governor);
	collect_set_compute(&c, "cpu", 0);
	collect_set_start(&c, t0);
	cr_assert_eq(tracefile_create(path, &c.host, 1, false, &w), 0);
	cr_assert_eq(collect_attach_writer(&c, w), 0);
	collect_sink(&c, &s);
	s.device(s.ctx, &cpu);
	s.interval(s.ctx, &iv);
	cr_assert_eq(collect_add_request(&c, &q), 0);
	cr_assert_eq(collect_close(&c, t0 + 1000 * ms), 0);
	collect_free(&c);
}

static const cJSON *metric(const cJSON *o, const char *name)
{
	const cJSON *m;

	cJSON_ArrayForEach(m, cJSON_GetObjectItem(o, "metrics"))
		if (!strcmp(cJSON_GetObjectItem(m, "name")->valuestring, name))
			return m;
	cr_assert_fail("no metric %s in the diff", name);
	return NULL;
}

static cJSON *read_json(const char *path)
{
	FILE *f = fopen(path, "r");
	char buf[65536];
	size_t n;

	cr_assert_not_null(f, "no %s", path);
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	return cJSON_Parse(buf);
}

Test(collect, diff_shows_the_deltas_and_the_changed_host_facts)
{
	char *argv[] = { "diff", NULL, NULL, "--format", "json", "-o", NULL,
			 NULL };
	const cJSON *m, *h;
	cJSON *o;

	one_request_trace(tpath("a.tt"), "performance", 10, 5);
	one_request_trace(tpath("b.tt"), "powersave", 30, 10);
	argv[1] = (char *)tpath("a.tt");
	argv[2] = (char *)tpath("b.tt");
	argv[6] = (char *)tpath("d.json");
	cr_assert_eq(cmd_diff(7, argv), 0);
	o = read_json(tpath("d.json"));
	cr_assert_not_null(o, "diff output is not JSON");
	h = cJSON_GetObjectItem(o, "host_changes");
	cr_assert_eq(cJSON_GetArraySize(h), 1, "only the governor changed");
	h = cJSON_GetArrayItem(h, 0);
	cr_expect_str_eq(cJSON_GetObjectItem(h, "fact")->valuestring,
			 "governor");
	cr_expect_str_eq(cJSON_GetObjectItem(h, "a")->valuestring,
			 "performance");
	cr_expect_str_eq(cJSON_GetObjectItem(h, "b")->valuestring,
			 "powersave");
	m = metric(o, "ttft_p50_ms");
	cr_expect_float_eq(num(m, "a"), 10, 1e-9);
	cr_expect_float_eq(num(m, "b"), 30, 1e-9);
	cr_expect_float_eq(num(m, "change"), 20, 1e-9);
	cr_expect_float_eq(num(m, "change_pct"), 200, 1e-9);
	m = metric(o, "idle_fraction device=cpu");
	cr_expect_float_eq(num(m, "a"), 0.995, 1e-9);
	cr_expect_float_eq(num(m, "b"), 0.99, 1e-9);
	cr_expect_float_eq(num(m, "change_pct"), -100 * 0.005 / 0.995, 1e-6);
	m = metric(o, "itl_p99_ms");
	cr_expect_float_eq(num(m, "a"), 2, 1e-9);
	cr_expect_float_eq(num(m, "change"), 0, 1e-9);
	m = metric(o, "requests_per_s");
	cr_expect_float_eq(num(m, "a"), 1, 1e-9);
	m = metric(o, "completion_tokens_per_s");
	cr_expect_float_eq(num(m, "b"), 4, 1e-9);
	/* twice the CPU time at the same price for the same tokens */
	m = metric(o, "usd_per_1m_completion");
	cr_log_info("prompt %g -> %g, completion %g -> %g",
		    num(metric(o, "usd_per_1m_prompt"), "a"),
		    num(metric(o, "usd_per_1m_prompt"), "b"), num(m, "a"),
		    num(m, "b"));
	double pa = num(metric(o, "usd_per_1m_prompt"), "a");
	double pb = num(metric(o, "usd_per_1m_prompt"), "b");
	cr_expect_float_eq((pb * 10 + num(m, "b") * 4) /
			   (pa * 10 + num(m, "a") * 4), 2.0, 1e-6);
	cJSON_Delete(o);
}

Test(collect, report_command_writes_json_with_trace_facts_and_defaults)
{
	char *argv[] = { "report", NULL, "--format", "json", "-o", NULL, NULL };
	const cJSON *p, *t;
	struct stat sb;
	cJSON *o;

	one_request_trace(tpath("r.tt"), "performance", 10, 250);
	argv[1] = (char *)tpath("r.tt");
	argv[5] = (char *)tpath("r.json");
	cr_assert_eq(cmd_report(6, argv), 0);
	cr_assert_eq(stat(tpath("r.json"), &sb), 0);
	cr_expect_eq(sb.st_mode & 0777, 0600);
	o = read_json(tpath("r.json"));
	cr_assert_not_null(o);
	cr_expect_eq(num(o, "window_ns"), 1e9);
	cr_expect_eq(cJSON_GetArraySize(cJSON_GetObjectItem(o, "requests")),
		     1);
	t = cJSON_GetObjectItem(o, "trace");
	cr_expect_eq(num(t, "blocks_ok"), 1);
	cr_expect(cJSON_IsTrue(cJSON_GetObjectItem(t, "window_closed")));
	cr_expect_str_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(o, "host"),
			 "governor")->valuestring, "performance");
	p = cJSON_GetArrayItem(cJSON_GetObjectItem(o, "prices"), 0);
	cr_expect_float_eq(num(p, "usd_per_hour"), COLLECT_CPU_USD_PER_HOUR,
			   1e-12);
	cr_expect(cJSON_IsTrue(cJSON_GetObjectItem(p, "default")));
	cJSON_Delete(o);
}
