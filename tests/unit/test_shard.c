/*
 * A long trace reported a time range at a time (user/shard.c): reading
 * only a range's blocks, or every block, or several ranges at once gives
 * the same report byte for byte; against the whole trace in memory the
 * device time, its conservation, the requests and their tokens are the
 * same, and the attribution stays close.
 */
#include <cJSON.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../user/collect.h"
#include "../../user/commands.h"
#include "../../user/report.h"
#include "../../user/shard.h"
#include "../../user/tracefile.h"

struct out {
	char *buf;
	size_t len;
	FILE *f;
	size_t n;
};

static int put(void *ctx, const struct report_request *q)
{
	struct out *o = ctx;

	if (o->n++)
		fputc(',', o->f);
	return report_request_write_json(q, o->f);
}

/* The sharded report as text: its JSON shell, then its requests. */
static char *sharded(const char *path, uint64_t max, int jobs, bool all,
		     struct report *r, uint32_t *nshards)
{
	char *paths[] = { (char *)path };
	struct collect_prices p = { NULL, 0, -1, -1 };
	struct out o = { 0 };
	struct shard_cfg cfg = { .paths = paths, .npaths = 1, .prices = &p,
				 .max_events = max, .jobs = jobs,
				 .all_blocks = all, .log = stderr,
				 .request = put, .ctx = &o };
	struct shard_trace t;
	cJSON *js;
	char *shell, *s;
	size_t n;

	o.f = open_memstream(&o.buf, &o.len);
	cr_assert(o.f);
	cr_assert_eq(shard_report(&cfg, &t, r), 0, "%s: not sharded", path);
	fclose(o.f);
	*nshards = t.nshards;
	js = report_json_shell(r);
	shell = cJSON_PrintUnformatted(js);
	cJSON_Delete(js);
	n = strlen(shell) + o.len + 2;
	s = malloc(n);
	snprintf(s, n, "%s\n%s", shell, o.buf);
	free(shell);
	free(o.buf);
	shard_trace_free(&t);
	return s;
}

static void whole(const char *path, struct collect *c, struct report *r)
{
	struct collect_prices p = { NULL, 0, -1, -1 };
	struct report_input in;

	collect_init(c);
	cr_assert_eq(collect_load(c, path, stderr, NULL), 0);
	cr_assert_eq(collect_report_input(c, &p, &in), 0);
	cr_assert_eq(report_build(&in, r), 0);
}

static const struct report_group *group(const struct report *r,
					const char *name)
{
	for (size_t i = 0; i < r->ntenants; i++)
		if (!strcmp(r->tenants[i].name, name))
			return &r->tenants[i];
	return NULL;
}

/* What must hold between a sharded report and the whole. */
static void same_totals(const char *what, const struct report *s,
			const struct report *w, double tenant_tol)
{
	uint64_t sum = 0;

	for (size_t i = 0; i < w->nreqs; i++)
		sum += w->reqs[i].gpu_ns;
	cr_expect_eq(s->busy_ns, w->busy_ns, "%s: busy", what);
	cr_expect_eq(s->window_ns, w->window_ns, "%s: window", what);
	cr_expect_eq(s->streamed_gpu_ns + s->unattributed_ns, s->busy_ns,
		     "%s: conservation", what);
	cr_expect_eq(s->streamed_requests, w->nreqs, "%s: requests", what);
	cr_assert_eq(s->ndevs, w->ndevs, "%s: devices", what);
	for (size_t i = 0; i < w->ndevs; i++) {
		cr_expect_eq(s->devs[i].busy_ns, w->devs[i].busy_ns,
			     "%s: device %zu busy", what, i);
		cr_expect_eq(s->devs[i].idle_ns, w->devs[i].idle_ns,
			     "%s: device %zu idle", what, i);
	}
	cr_assert_eq(s->ntenants, w->ntenants, "%s: tenants", what);
	double wl = 0, sl = 0;
	for (size_t i = 0; i < w->ntenants; i++) {
		const struct report_group *a = &w->tenants[i];
		const struct report_group *b = group(s, a->name);

		cr_assert(b, "%s: tenant %s missing", what, a->name);
		cr_expect_eq(b->requests, a->requests, "%s", what);
		cr_expect_eq(b->prompt_tokens, a->prompt_tokens, "%s", what);
		cr_expect_eq(b->completion_tokens, a->completion_tokens, "%s",
			     what);
		double off = a->gpu_ns ? fabs((double)b->gpu_ns - a->gpu_ns) /
					 a->gpu_ns : 0;
		fprintf(stderr, "shard: %s: tenant %s: %llu ns in ranges, %llu "
			"whole (%.2f%% apart)\n", what, a->name,
			(unsigned long long)b->gpu_ns,
			(unsigned long long)a->gpu_ns, 100 * off);
		cr_expect_leq(off, tenant_tol, "%s: tenant %s %.2f%% off",
			      what, a->name, 100 * off);
		/* idle time shared over the whole trace, not range by
		 * range: as close as the busy time */
		off = fabs(b->cost_loaded_usd - a->cost_loaded_usd) /
		      a->cost_loaded_usd;
		fprintf(stderr, "shard: %s: tenant %s: $%.9f fully loaded in "
			"ranges, $%.9f whole (%.2f%% apart)\n", what, a->name,
			b->cost_loaded_usd, a->cost_loaded_usd, 100 * off);
		cr_expect_leq(off, tenant_tol, "%s: tenant %s loaded %.2f%% "
			      "off", what, a->name, 100 * off);
		wl += a->cost_loaded_usd;
		sl += b->cost_loaded_usd;
	}
	/* the window's whole cost, every dollar charged */
	cr_expect(fabs(sl - wl) <= 1e-9 * wl, "%s: loaded $%.12f in ranges, "
		  "$%.12f whole", what, sl, wl);
}

Test(shard, reading_only_a_range_s_blocks_or_several_at_once_changes_nothing)
{
	const char *path = "tests/data/gpu-sim-tp2.tt";
	struct report a, b, c, w;
	struct collect wc;
	uint32_t na, nb, nc;
	char *sa = sharded(path, 8000, 1, false, &a, &na);
	char *sb = sharded(path, 8000, 1, true, &b, &nb);
	char *sc = sharded(path, 8000, 3, false, &c, &nc);

	cr_expect_geq(na, 3, "only %u ranges", na);
	cr_expect_eq(na, nb);
	cr_expect_eq(na, nc);
	cr_expect_str_eq(sa, sb, "its blocks alone against every block");
	cr_expect_str_eq(sa, sc, "one range at a time against three");
	whole(path, &wc, &w);
	same_totals("gpu-sim-tp2", &a, &w, 0.05);
	free(sa);
	free(sb);
	free(sc);
	report_free(&a);
	report_free(&b);
	report_free(&c);
	report_free(&w);
	collect_free(&wc);
}

/* What a finding is about: its device, server or tenant. */
static void subject(const struct finding *f, char *buf, size_t len)
{
	cJSON *d = cJSON_GetObjectItem(f->evidence, "device");
	cJSON *p = cJSON_GetObjectItem(f->evidence, "pid");

	snprintf(buf, len, "%s/%s/%.0f", f->id,
		 cJSON_IsString(d) ? d->valuestring : "",
		 cJSON_IsNumber(p) ? p->valuedouble : 0);
}

/* Findings judged on the steps and the model (which a range cuts and fits
 * on its own) come close; the rest (idle time and its split, kernels,
 * copies, communication, load, prompts) are sums over the window, the
 * same to the nanosecond. */
static bool on_steps(const char *id)
{
	return !strcmp(id, "prefill_interference") ||
	       !strcmp(id, "low_batch_occupancy") ||
	       !strcmp(id, "tenant_skew");
}

/* Every finding of the whole, once, in the sharded report, and no other. */
static void same_findings(const char *what, const struct report *s,
			  const struct report *w)
{
	cr_expect_eq(s->findings.n, w->findings.n, "%s: %zu findings, %zu "
		     "whole", what, s->findings.n, w->findings.n);
	for (size_t i = 0; i < w->findings.n; i++) {
		const struct finding *a = &w->findings.items[i], *b = NULL;
		char ka[256], kb[256];
		cJSON *x;

		subject(a, ka, sizeof(ka));
		for (size_t j = 0; j < s->findings.n; j++) {
			subject(&s->findings.items[j], kb, sizeof(kb));
			if (!strcmp(ka, kb)) {
				cr_expect_null(b, "%s: %s twice", what, ka);
				b = &s->findings.items[j];
			}
		}
		cr_expect(b, "%s: %s not found by ranges", what, ka);
		if (!b)
			continue;
		cr_expect_eq(b->severity, a->severity, "%s: %s", what, ka);
		if (!on_steps(a->id))
			cr_expect_str_eq(b->summary, a->summary, "%s", what);
		cJSON_ArrayForEach(x, a->evidence) {
			cJSON *y = cJSON_GetObjectItem(b->evidence, x->string);
			double tol;

			if (!cJSON_IsNumber(x))
				continue;
			cr_assert(cJSON_IsNumber(y), "%s: %s: no %s", what, ka,
				  x->string);
			tol = on_steps(a->id) ? 0.02 * fabs(x->valuedouble) : 0;
			cr_expect_leq(fabs(y->valuedouble - x->valuedouble), tol,
				      "%s: %s: %s %.9g by ranges, %.9g whole",
				      what, ka, x->string, y->valuedouble,
				      x->valuedouble);
		}
	}
}

/* A clean engine, as tools/bench/gentrace writes, but with 7 ms steps
 * that the ranges' edges (tenths of a second) cut anywhere: 4 kernels and the copy of
 * the sampled ids a step, one token to each of 8 requests in flight. */
static void write_engine(const char *path, int requests, int tokens)
{
	struct tt_hostinfo host = { .cpus = 1 };
	struct tracefile_writer *w;
	struct tt_device d = { .id = 1, .kind = TT_DEV_GPU, .pid = 100 };
	uint64_t t = 1000ull * 1000000000ull, *tok[8];
	long req[8], next = 0, done = 0;
	uint64_t arr[8];
	int ntok[8];

	snprintf(d.name, sizeof(d.name), "test GPU");
	snprintf(d.uuid, sizeof(d.uuid), "GPU-test");
	unlink(path);
	cr_assert_eq(tracefile_create(path, &host, 1, true, &w), 0);
	cr_assert_eq(tracefile_put_device(w, &d), 0);
	cr_assert_eq(tracefile_put_compute(w, "cupti", 8), 0);
	for (int i = 0; i < 8; i++) {
		req[i] = -1;
		tok[i] = calloc(tokens, sizeof(uint64_t));
	}
	while (done < requests) {
		struct tt_interval iv = { .device = 1, .pid = 100, .tid = 100,
					  .stream = 7, .kind = TT_IV_KERNEL };
		/* the steps grow with the batch's context */
		uint64_t k_ns = 1200000 + 3000 * (uint64_t)(next % 50);

		for (int k = 0; k < 4; k++) {
			iv.start_ns = t + k * k_ns;
			iv.end_ns = iv.start_ns + k_ns;
			iv.name_id = k + 1;
			cr_assert_eq(tracefile_put_interval(w, &iv), 0);
		}
		iv.start_ns = t + 4 * k_ns;
		iv.end_ns = iv.start_ns + 20000;
		iv.kind = TT_IV_MEMCPY;
		iv.copy_kind = TT_COPY_DTOH;
		iv.bytes = 8;
		iv.name_id = 0;
		cr_assert_eq(tracefile_put_interval(w, &iv), 0);
		for (int i = 0; i < 8; i++) {
			if (req[i] < 0 && next < requests) {
				req[i] = next++;
				arr[i] = t > 1000000 ? t - 1000000 : t;
				ntok[i] = 0;
			}
			if (req[i] < 0)
				continue;
			tok[i][ntok[i]++] = iv.end_ns + 50000;
			if (ntok[i] < tokens)
				continue;
			struct tt_request q = {
				.pid = 100, .conn_id = (uint64_t)req[i] + 1,
				.stream = true, .http_status = 200,
				.max_tokens = tokens, .arrival_ns = arr[i],
				.first_token_ns = tok[i][0],
				.end_ns = tok[i][tokens - 1] + 100000,
				.token_events = (uint32_t)tokens,
				.token_ns = tok[i],
				.token_ns_len = (uint32_t)tokens,
				.prompt_tokens = 64 + 16 * (req[i] % 5),
				.completion_tokens = tokens,
				.tokens_source = TT_TOKENS_USAGE,
			};
			q.ttft_ms = (q.first_token_ns - q.arrival_ns) / 1e6;
			snprintf(q.id, sizeof(q.id), "cmpl-%ld", req[i]);
			snprintf(q.tenant, sizeof(q.tenant), "tenant-%ld",
				 req[i] % 3);
			snprintf(q.model, sizeof(q.model), "m");
			cr_assert_eq(tracefile_put_request(w, &q), 0);
			req[i] = -1;
			done++;
		}
		t += 7000000;
	}
	cr_assert_eq(tracefile_put_window(w, 1000ull * 1000000000ull, t, true),
		     0);
	cr_assert_eq(tracefile_close(w), 0);
	for (int i = 0; i < 8; i++)
		free(tok[i]);
}

Test(shard, requests_that_span_ranges_get_their_parts_summed)
{
	char path[] = "/tmp/tt-shard-XXXXXX";
	int fd = mkstemp(path);
	struct report s, w;
	struct collect wc;
	uint32_t n;
	char *text;

	cr_assert_geq(fd, 0);
	close(fd);
	write_engine(path, 3000, 16);
	text = sharded(path, 20000, 2, false, &s, &n);
	whole(path, &wc, &w);
	unlink(path);
	cr_expect_geq(n, 4, "only %u ranges", n);
	same_totals("engine", &s, &w, 0.01);
	same_findings("engine", &s, &w);
	cr_expect(findings_get(&w.findings, "idle_with_demand"),
		  "the engine's gaps between steps are not found");

	/* every request, found again by its id in the sharded output */
	char *arr = malloc(strlen(text) + 3);
	sprintf(arr, "[%s]", strchr(text, '\n') + 1);
	cJSON *got = cJSON_Parse(arr);
	cr_assert(got, "the requests written are not JSON");
	cr_expect_eq((size_t)cJSON_GetArraySize(got), w.nreqs);
	size_t within = 0, seen = 0;
	cJSON *q;
	cJSON_ArrayForEach(q, got) {
		const char *id = cJSON_GetObjectItem(q, "id")->valuestring;
		double g = cJSON_GetObjectItem(q, "gpu_ns")->valuedouble;

		for (size_t i = 0; i < w.nreqs; i++) {
			if (strcmp(w.reqs[i].req.id, id))
				continue;
			seen++;
			within += fabs(g - (double)w.reqs[i].gpu_ns) <=
				  0.05 * (double)w.reqs[i].gpu_ns;
			break;
		}
	}
	fprintf(stderr, "shard: engine: %u ranges, %zu of %zu requests "
		"within 5%% of the whole trace's report\n", n, within, seen);
	cr_expect_eq(seen, w.nreqs);
	cr_expect_geq(within, 0.95 * seen, "%zu of %zu within 5%%", within,
		      seen);
	cJSON_Delete(got);
	free(arr);
	free(text);
	report_free(&s);
	report_free(&w);
	collect_free(&wc);
}

/* A recorded trace of two GPUs, cut in ranges anywhere: its findings are
 * the whole trace's, each once. */
Test(shard, findings_by_ranges_are_the_whole_trace_s)
{
	const char *path = "tests/data/gpu-sim-tp2.tt";
	struct report s, w;
	struct collect wc;
	uint32_t n;
	char *text;

	text = sharded(path, 2000, 2, false, &s, &n);
	whole(path, &wc, &w);
	cr_expect_geq(n, 4, "only %u ranges", n);
	cr_expect_geq(w.findings.n, 4, "the trace has %zu findings",
		      w.findings.n);
	same_findings("gpu-sim-tp2", &s, &w);
	free(text);
	report_free(&s);
	report_free(&w);
	collect_free(&wc);
}

/* The end of a long recording: the text says it went by ranges, the
 * summary is one JSON report with every request and the whole trace's
 * device time; TOKENTRACE_SHARD_EVENTS=0 hands it back to be read whole. */
/* A request's loaded cost, which covers its busy cost. */
static double loaded_of(const cJSON *q)
{
	double busy = cJSON_GetObjectItem(q, "cost_usd")->valuedouble;
	double v = cJSON_GetObjectItem(q, "cost_loaded_usd")->valuedouble;

	cr_expect_geq(v, busy, "%s: loaded $%.9g under busy $%.9g",
		      cJSON_GetObjectItem(q, "id")->valuestring, v, busy);
	return v;
}

Test(shard, the_end_of_a_long_recording_is_reported_by_ranges)
{
	char path[] = "/tmp/tt-shard-XXXXXX", sum[] = "/tmp/tt-sum-XXXXXX";
	int fd = mkstemp(path), sfd = mkstemp(sum);
	char *text = NULL, *js;
	size_t tlen = 0, jlen = 0;
	FILE *tf = open_memstream(&text, &tlen), *jf;
	struct report w;
	struct collect wc;
	struct stat st;
	cJSON *o;

	cr_assert_geq(fd, 0);
	cr_assert_geq(sfd, 0);
	close(fd);
	close(sfd);
	write_engine(path, 1500, 16);
	setenv("TOKENTRACE_SHARD_EVENTS", "0", 1);
	cr_expect_eq(shard_end_of_run(path, sum, tf, "record"), 1,
		     "0 must mean: read it whole");
	setenv("TOKENTRACE_SHARD_EVENTS", "20000", 1);
	cr_assert_eq(shard_end_of_run(path, sum, tf, "record"), 0);
	unsetenv("TOKENTRACE_SHARD_EVENTS");
	fclose(tf);
	cr_expect(strstr(text, "time ranges"), "the text does not say so");
	cr_expect(strstr(text, "busy"), "no report in the text");
	cr_assert_eq(stat(sum, &st), 0);
	cr_expect_eq(st.st_mode & 0777, 0600, "summary mode %o",
		     st.st_mode & 0777);

	jf = fopen(sum, "r");
	cr_assert(jf);
	js = malloc(st.st_size + 1);
	jlen = fread(js, 1, st.st_size, jf);
	js[jlen] = 0;
	fclose(jf);
	o = cJSON_Parse(js);
	cr_assert(o, "the summary is not JSON");
	whole(path, &wc, &w);
	cr_expect_eq((size_t)cJSON_GetArraySize(
			     cJSON_GetObjectItem(o, "requests")), w.nreqs);
	cr_expect_eq((uint64_t)cJSON_GetObjectItem(o, "busy_ns")->valuedouble,
		     w.busy_ns);
	cr_expect_geq(cJSON_GetObjectItem(o, "shards")->valuedouble, 2, "%s",
		      text);
	fprintf(stderr, "shard: end of a recording: %.0f ranges\n",
		cJSON_GetObjectItem(o, "shards")->valuedouble);
	uint64_t given = (uint64_t)cJSON_GetObjectItem(o, "unattributed_ns")
				 ->valuedouble;
	cJSON *q;
	double wload = 0, sload = 0;
	cJSON_ArrayForEach(q, cJSON_GetObjectItem(o, "requests")) {
		given += (uint64_t)cJSON_GetObjectItem(q, "gpu_ns")->valuedouble;
		sload += loaded_of(q);
	}
	cr_expect_eq(given, w.busy_ns, "conservation in the summary");
	for (size_t i = 0; i < w.nreqs; i++)
		wload += w.reqs[i].cost_loaded_usd;
	cr_expect(fabs(sload - wload) <= 1e-6 * wload, "the summary's loaded "
		  "cost $%.9f, the whole trace's $%.9f", sload, wload);
	unlink(path);
	unlink(sum);
	cJSON_Delete(o);
	free(js);
	free(text);
	report_free(&w);
	collect_free(&wc);
}

/* A file's bytes, NUL-terminated. */
static char *slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	char *buf;
	long n;

	cr_assert(f, "no %s", path);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	rewind(f);
	buf = malloc(n + 1);
	cr_assert(buf);
	buf[fread(buf, 1, n, f)] = 0;
	fclose(f);
	return buf;
}

/* What a command writes to -o, its last argument (argv[argc - 1], NULL
 * here: a temporary file), which it must write with success. */
static char *output_of(int (*cmd)(int, char **), int argc, char **argv)
{
	char out[] = "/tmp/tt-out-XXXXXX";
	int fd = mkstemp(out);
	char *buf;

	cr_assert_geq(fd, 0);
	close(fd);
	argv[argc - 1] = out;
	cr_assert_eq(cmd(argc, argv), 0, "%s failed", argv[0]);
	buf = slurp(out);
	unlink(out);
	argv[argc - 1] = NULL;
	return buf;
}

/* diff's JSON for two traces, read whole (max "0") or by ranges. */
static cJSON *diff_of(const char *a, const char *b, const char *max,
		      const char *jobs)
{
	char *argv[] = { "diff", (char *)a, (char *)b, "--format", "json",
			 "--shard-events", (char *)max, "--jobs", (char *)jobs,
			 "-o", NULL, NULL };
	char *buf = output_of(cmd_diff, 11, argv);
	cJSON *o;

	o = cJSON_Parse(buf);
	cr_assert(o, "diff's output is not JSON");
	free(buf);
	return o;
}

static double side(const cJSON *o, const char *name, const char *s)
{
	const cJSON *m;

	cJSON_ArrayForEach(m, cJSON_GetObjectItem(o, "metrics"))
		if (!strcmp(cJSON_GetObjectItem(m, "name")->valuestring, name)) {
			const cJSON *v = cJSON_GetObjectItem(m, s);

			return cJSON_IsNumber(v) ? v->valuedouble : NAN;
		}
	cr_assert_fail("no metric %s in the diff", name);
	return NAN;
}

/* diff of two long traces: each read by ranges says so, and its rates,
 * idle fractions and latency percentiles are those of the traces read
 * whole (the percentiles to within the histogram's 0.05%); two ranges at
 * once change nothing. */
Test(shard, diff_of_long_traces_reads_them_by_ranges)
{
	char a[] = "/tmp/tt-da-XXXXXX", b[] = "/tmp/tt-db-XXXXXX";
	int fa = mkstemp(a), fb = mkstemp(b);
	static const char *same[] = {
		"requests_per_s", "completion_tokens_per_s",
		"idle_fraction device=test GPU",
	};
	static const char *lat[] = {
		"ttft_p50_ms", "ttft_p99_ms", "itl_p50_ms", "itl_p99_ms",
	};
	cJSON *w, *s, *s2;
	char *t1, *t2;

	cr_assert_geq(fa, 0);
	cr_assert_geq(fb, 0);
	close(fa);
	close(fb);
	write_engine(a, 2000, 16);
	write_engine(b, 1500, 24);
	w = diff_of(a, b, "0", "1");
	s = diff_of(a, b, "20000", "1");
	s2 = diff_of(a, b, "20000", "2");
	unlink(a);
	unlink(b);
	cr_expect_eq(cJSON_GetObjectItem(w, "a_time_ranges")->valuedouble, 1);
	cr_expect_geq(cJSON_GetObjectItem(s, "a_time_ranges")->valuedouble, 3);
	cr_expect_geq(cJSON_GetObjectItem(s, "b_time_ranges")->valuedouble, 3);
	for (int k = 0; k < 2; k++) {
		const char *sd = k ? "b" : "a";

		for (size_t i = 0; i < sizeof(same) / sizeof(same[0]); i++)
			cr_expect_float_eq(side(s, same[i], sd),
					   side(w, same[i], sd), 1e-9,
					   "%s %s: %g against %g", sd, same[i],
					   side(s, same[i], sd),
					   side(w, same[i], sd));
		for (size_t i = 0; i < sizeof(lat) / sizeof(lat[0]); i++) {
			double x = side(w, lat[i], sd), g = side(s, lat[i], sd);

			cr_expect(fabs(g - x) <= 0.0005 * x,
				  "%s %s: %g against %g", sd, lat[i], g, x);
		}
	}
	t1 = cJSON_PrintUnformatted(s);
	t2 = cJSON_PrintUnformatted(s2);
	cr_expect_str_eq(t1, t2, "--jobs 2 changed the diff");
	free(t1);
	free(t2);
	cJSON_Delete(w);
	cJSON_Delete(s);
	cJSON_Delete(s2);
}

/* The three formats of `export` for a trace, whole (max "0") or by
 * ranges, in dir as NAME.json, NAME.otlp, NAME.jsonl. */
static void export_of(const char *trace, const char *dir, const char *name,
		      const char *max, const char *jobs)
{
	char pf[256], ot[256], jl[256];
	char *argv[] = { "export", (char *)trace, "--perfetto", pf, "--otlp",
			 ot, "--jsonl", jl, "--shard-events", (char *)max,
			 "--jobs", (char *)jobs, NULL };

	snprintf(pf, sizeof(pf), "%s/%s.json", dir, name);
	snprintf(ot, sizeof(ot), "%s/%s.otlp", dir, name);
	snprintf(jl, sizeof(jl), "%s/%s.jsonl", dir, name);
	cr_assert_eq(cmd_export(12, argv), 0);
}

static char *file_of(const char *dir, const char *name, const char *ext)
{
	char p[256];

	snprintf(p, sizeof(p), "%s/%s.%s", dir, name, ext);
	return slurp(p);
}

/* JSON lines as one array. */
static cJSON *lines_of(char *text)
{
	size_t n = strlen(text);
	char *arr = malloc(2 * n + 3), *o = arr;
	cJSON *js;

	*o++ = '[';
	for (char *l = strtok(text, "\n"); l; l = strtok(NULL, "\n"))
		o += sprintf(o, "%s%s", o == arr + 1 ? "" : ",", l);
	*o++ = ']';
	*o = 0;
	js = cJSON_Parse(arr);
	free(arr);
	return js;
}

/* The kernels and copies of a Perfetto export, each (pid, tid, ts, dur)
 * as text, sorted. */
static int ev_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static char **slices_of(const cJSON *pf, size_t *n)
{
	const cJSON *e;
	char **v = NULL;
	size_t cap = 0;

	*n = 0;
	cJSON_ArrayForEach(e, cJSON_GetObjectItem(pf, "traceEvents")) {
		const cJSON *cat = cJSON_GetObjectItem(e, "cat");
		char buf[128];

		if (!cJSON_IsString(cat) || (strcmp(cat->valuestring, "kernel") &&
					     strcmp(cat->valuestring, "memcpy")))
			continue;
		snprintf(buf, sizeof(buf), "%.0f %.0f %.3f %.3f",
			 cJSON_GetObjectItem(e, "pid")->valuedouble,
			 cJSON_GetObjectItem(e, "tid")->valuedouble,
			 cJSON_GetObjectItem(e, "ts")->valuedouble,
			 cJSON_GetObjectItem(e, "dur")->valuedouble);
		if (*n == cap) {
			cap = cap ? 2 * cap : 1024;
			v = realloc(v, cap * sizeof(*v));
			cr_assert(v);
		}
		v[(*n)++] = strdup(buf);
	}
	qsort(v, *n, sizeof(*v), ev_cmp);
	return v;
}

static const cJSON *by_id(const cJSON *arr, const char *id)
{
	const cJSON *q;

	cJSON_ArrayForEach(q, arr)
		if (!strcmp(cJSON_GetObjectItem(q, "id")->valuestring, id))
			return q;
	return NULL;
}

/* export of a long trace by ranges: every kernel and copy once in the
 * Perfetto file, every request once in each format with its tokens, the
 * device time given out the same in sum; two ranges at once change no
 * byte. */
Test(shard, export_of_a_long_trace_goes_by_ranges)
{
	char trace[] = "/tmp/tt-ex-XXXXXX", dir[] = "/tmp/tt-exd-XXXXXX";
	int fd = mkstemp(trace);
	static const char *ext[] = { "json", "otlp", "jsonl" };
	char *wj, *sj, *wl, *sl, **ws, **ss;
	cJSON *wp, *sp, *wq, *sq, *so;
	size_t nw, ns, spans;
	double wsum = 0, ssum = 0, wload = 0, sload = 0;
	const cJSON *q;

	cr_assert_geq(fd, 0);
	close(fd);
	cr_assert(mkdtemp(dir));
	write_engine(trace, 2000, 16);
	export_of(trace, dir, "w", "0", "1");
	export_of(trace, dir, "s", "20000", "1");
	export_of(trace, dir, "s2", "20000", "2");
	unlink(trace);
	for (int i = 0; i < 3; i++) {
		char *a = file_of(dir, "s", ext[i]), *b = file_of(dir, "s2",
								  ext[i]);

		cr_expect_str_eq(a, b, "--jobs 2 changed the %s export",
				 ext[i]);
		free(a);
		free(b);
	}

	wj = file_of(dir, "w", "json");
	sj = file_of(dir, "s", "json");
	wp = cJSON_Parse(wj);
	sp = cJSON_Parse(sj);
	cr_assert(wp && sp, "a Perfetto export is not JSON");
	ws = slices_of(wp, &nw);
	ss = slices_of(sp, &ns);
	cr_expect_eq(ns, nw, "%zu kernels and copies by ranges, %zu whole",
		     ns, nw);
	for (size_t i = 0; i < ns && i < nw; i++)
		cr_expect_str_eq(ss[i], ws[i]);
	for (size_t i = 0; i < nw; i++)
		free(ws[i]);
	for (size_t i = 0; i < ns; i++)
		free(ss[i]);
	free(ws);
	free(ss);

	wl = file_of(dir, "w", "jsonl");
	sl = file_of(dir, "s", "jsonl");
	wq = lines_of(wl);
	sq = lines_of(sl);
	cr_assert(wq && sq, "a JSON lines export does not parse");
	cr_expect_eq(cJSON_GetArraySize(sq), 2000);
	cr_expect_eq(cJSON_GetArraySize(wq), 2000);
	cJSON_ArrayForEach(q, wq) {
		const char *id = cJSON_GetObjectItem(q, "id")->valuestring;
		const cJSON *o = by_id(sq, id);

		cr_assert(o, "%s is not in the export by ranges", id);
		cr_expect_eq(cJSON_GetObjectItem(o, "completion_tokens")
				     ->valuedouble,
			     cJSON_GetObjectItem(q, "completion_tokens")
				     ->valuedouble, "%s", id);
		wsum += cJSON_GetObjectItem(q, "gpu_ns")->valuedouble;
		ssum += cJSON_GetObjectItem(o, "gpu_ns")->valuedouble;
		wload += cJSON_GetObjectItem(q, "cost_loaded_usd")->valuedouble;
		sload += loaded_of(o);
	}
	cr_expect(fabs(ssum - wsum) <= 1e-3 * wsum,
		  "device time given %.0f by ranges, %.0f whole", ssum, wsum);
	/* streamed: each range's window cost shared among its requests,
	 * every dollar of the whole window charged */
	cr_expect(fabs(sload - wload) <= 1e-6 * wload,
		  "loaded cost $%.9f by ranges, $%.9f whole", sload, wload);
	double pload = 0;
	const cJSON *e;
	cJSON_ArrayForEach(e, cJSON_GetObjectItem(sp, "traceEvents")) {
		const cJSON *c = cJSON_GetObjectItem(e, "cat");

		if (cJSON_IsString(c) && !strcmp(c->valuestring, "request"))
			pload += cJSON_GetObjectItem(cJSON_GetObjectItem(
				e, "args"), "cost_loaded_usd")->valuedouble;
	}
	cr_expect(fabs(pload - sload) <= 1e-6 * sload,
		  "Perfetto's loaded cost $%.9f, JSON lines' $%.9f", pload,
		  sload);

	char *ot = file_of(dir, "s", "otlp");
	so = cJSON_Parse(ot);
	cr_assert(so, "the OTLP export by ranges is not JSON");
	spans = (size_t)cJSON_GetArraySize(cJSON_GetObjectItem(cJSON_GetArrayItem(
		cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(so,
		"resourceSpans"), 0), "scopeSpans"), 0), "spans"));
	cr_expect_eq(spans, 2000);
	fprintf(stderr, "shard: export: %zu kernels and copies, %zu spans, "
		"device time %.6f of the whole's\n", ns, spans, ssum / wsum);

	for (int i = 0; i < 3; i++)
		for (int k = 0; k < 3; k++) {
			char p[256];

			snprintf(p, sizeof(p), "%s/%s.%s", dir,
				 (const char *[]){ "w", "s", "s2" }[k], ext[i]);
			unlink(p);
		}
	rmdir(dir);
	cJSON_Delete(wp);
	cJSON_Delete(sp);
	cJSON_Delete(wq);
	cJSON_Delete(sq);
	cJSON_Delete(so);
	free(wj);
	free(sj);
	free(wl);
	free(sl);
	free(ot);
}

/* `report --format html` of the trace, read whole (max "0") or by
 * ranges. */
static char *html_of(const char *trace, const char *max)
{
	char *argv[] = { "report", (char *)trace, "--format", "html",
			 "--shard-events", (char *)max, "-o", NULL, NULL };

	return output_of(cmd_report, 8, argv);
}

/* The part of page from the chart called id to the end of its figure. */
static char *chart_of(const char *page, const char *id)
{
	char key[64];
	const char *a, *b;

	snprintf(key, sizeof(key), "id=\"%s\"", id);
	a = strstr(page, key);
	cr_assert(a, "no %s in the page", id);
	b = strstr(a, "</figure>");
	cr_assert(b, "%s is not closed", id);
	return strndup(a, (size_t)(b - a));
}

/* The HTML page of a long trace is drawn range by range: each device's
 * busy time over time and the TTFT and token-gap histograms are those of
 * the whole trace in memory, byte for byte; the batch chart counts the
 * same steps; the page counts every request. */
Test(shard, the_html_page_of_a_long_trace_goes_by_ranges)
{
	const char *path = "tests/data/gpu-sim-tp2.tt";
	char *w = html_of(path, "0"), *s = html_of(path, "2000");
	static const char *const same[] = { "chart-busy-0", "chart-busy-1",
					    "chart-ttft", "chart-itl" };

	for (size_t i = 0; i < sizeof(same) / sizeof(same[0]); i++) {
		char *a = chart_of(w, same[i]), *b = chart_of(s, same[i]);

		cr_expect_str_eq(b, a, "%s by ranges is not the whole's",
				 same[i]);
		free(a);
		free(b);
	}
	char *bw = chart_of(w, "chart-batch"), *bs = chart_of(s, "chart-batch");

	cr_assert(strstr(bw, "<figcaption>") && strstr(bs, "<figcaption>"));
	cr_expect_str_eq(strstr(bs, "<figcaption>"), strstr(bw, "<figcaption>"),
			 "the batch chart's steps differ: %s against %s",
			 strstr(bs, "<figcaption>"), strstr(bw, "<figcaption>"));
	free(bw);
	free(bs);
	cr_expect(strstr(s, " 40 requests,"), "the page lost requests");
	cr_expect(strstr(w, " 40 requests,"));
	free(w);
	free(s);
}

/* The JSON report's requests and tenants, fully loaded. */
static void loaded_sums(const char *max, double *requests, double *tenants)
{
	char *argv[] = { "report", "tests/data/gpu-sim-tp2.tt", "--format",
			 "json", "--shard-events", (char *)max, "-o", NULL,
			 NULL };
	char *text = output_of(cmd_report, 8, argv);
	cJSON *o = cJSON_Parse(text), *q;

	cr_assert(o, "--shard-events %s: the report is not JSON", max);
	*requests = *tenants = 0;
	cJSON_ArrayForEach(q, cJSON_GetObjectItem(o, "requests"))
		*requests += loaded_of(q);
	cJSON_ArrayForEach(q, cJSON_GetObjectItem(o, "tenants"))
		*tenants += cJSON_GetObjectItem(q, "cost_loaded_usd")
				    ->valuedouble;
	cJSON_Delete(o);
	free(text);
}

Test(shard, a_long_trace_s_idle_time_is_shared_over_the_whole)
{
	double wr, wt, sr, st;

	loaded_sums("0", &wr, &wt);
	loaded_sums("2000", &sr, &st);
	fprintf(stderr, "shard: loaded cost: requests $%.9f, tenants $%.9f "
		"by ranges; $%.9f, $%.9f whole\n", sr, st, wr, wt);
	cr_expect(fabs(sr - wr) <= 1e-6 * wr, "requests");
	cr_expect(fabs(st - wt) <= 1e-6 * wt, "tenants");
	cr_expect(fabs(sr - st) <= 1e-6 * st, "requests against tenants");
}

static int fail_at_100(void *ctx, const struct report_request *q)
{
	size_t *n = ctx;

	(void)q;
	return ++*n == 100 ? -ENOSPC : 0;
}

/* A writer that fails stops the ranges being built ahead and frees them
 * (the ASan build checks for leaks), and its error comes back. */
Test(shard, an_error_while_ranges_are_built_ahead_stops_them_all)
{
	char *paths[] = { "tests/data/gpu-sim-tp2.tt" };
	struct collect_prices p = { NULL, 0, -1, -1 };
	size_t n = 0;
	struct shard_cfg cfg = { .paths = paths, .npaths = 1, .prices = &p,
				 .max_events = 2000, .jobs = 3, .log = stderr,
				 .request = fail_at_100, .ctx = &n };
	struct shard_trace t;
	struct report r;

	/* 40 requests: the 100th never comes; counted on from 60, it does */
	cr_assert_eq(shard_report(&cfg, &t, &r), 0);
	cr_expect_eq(n, 40);
	report_free(&r);
	shard_trace_free(&t);
	n = 60;
	cr_expect_eq(shard_report(&cfg, &t, &r), -ENOSPC);
	cr_expect_eq(n, 100, "requests handed on after the error");
}

struct seen_progress {
	uint32_t calls, last, n;
	uint64_t events_done, events;
	bool backwards;
};

static void note_progress(void *ctx, uint32_t done, uint32_t n,
			  uint64_t events_done, uint64_t events)
{
	struct seen_progress *p = ctx;

	p->backwards |= done < p->last || events_done < p->events_done ||
			(p->calls && done != p->last + 1);
	p->calls++;
	p->last = done;
	p->n = n;
	p->events_done = events_done;
	p->events = events;
}

/* Progress comes once before the first range and after each, in order,
 * with --jobs 2 too; its events add up to the first reading's count. */
Test(shard, progress_is_told_range_by_range)
{
	char *paths[] = { "tests/data/gpu-sim-tp2.tt" };
	struct collect_prices p = { NULL, 0, -1, -1 };
	struct seen_progress sp = { 0 };
	struct shard_cfg cfg = { .paths = paths, .npaths = 1, .prices = &p,
				 .max_events = 4000, .jobs = 2, .log = stderr,
				 .progress = note_progress,
				 .progress_ctx = &sp };
	struct shard_trace t;
	struct report r;

	cr_assert_eq(shard_report(&cfg, &t, &r), 0);
	cr_expect_geq(t.nshards, 3);
	cr_expect_eq(sp.calls, t.nshards + 1);
	cr_expect_eq(sp.last, t.nshards);
	cr_expect_eq(sp.n, t.nshards);
	cr_expect_not(sp.backwards, "progress went back or skipped a range");
	cr_expect_eq(sp.events, t.events);
	cr_expect_eq(sp.events_done, t.events, "%llu of %llu events told",
		     (unsigned long long)sp.events_done,
		     (unsigned long long)t.events);
	report_free(&r);
	shard_trace_free(&t);
}
