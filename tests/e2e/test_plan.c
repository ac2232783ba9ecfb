/*
 * test_plan.c - `tokentrace plan` against reality: the reference server on
 * two simulated GPUs is recorded under `tokentrace run --compute cupti` at
 * a light load (4 clients); plan predicts heavier loads from that trace
 * alone; then the server runs those loads for real, untraced, and what
 * the client saw (loadgen) is compared with the prediction: closed loops
 * at 3 and 4 times the recorded concurrency, open loops at 50% and 85% of
 * the predicted capacity, the saturation throughput, and a what-if (a
 * smaller batch limit and chunked prefill, given to plan and to the
 * server); the open loops also replayed (the plan given the very requests
 * the client sent, at their times). Goals: throughput and TTFT/ITL p50
 * within 10%, p99 within 20%, saturation within 10%; logged against every
 * run, and the test fails at twice them. The open loop at 85% runs for
 * 6000 requests (100 s): near capacity the TTFT tail is a few excursions
 * of the queue, and the p99 of a 10 s run there swings 3x from one run
 * to the next (the plan's range for such a run: 62-194 ms around 111),
 * so no figure of a short run can be held to 20%.
 *
 * In:  build/tokentrace, build/refserver (with the CUPTI headers),
 *      build/loadgen; run from the repository root.
 * Out: Criterion suite "plan"; every comparison is logged.
 * Assumes: root (eBPF for the recording). The client's figures are taken
 *      over the middle 80% of each run (neither the clients' first
 *      requests, all at once, nor the drain), as plan takes its own; a
 *      replay's over all of it, as plan counts a replay.
 */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include <cJSON.h>
#include <criterion/criterion.h>
#include <criterion/logging.h>

#include "harness.h"

#define PL_MAX_REQS	8192
#define PL_MIX		"--prompt-len", "16-600", "--max-tokens", "8-96"

static void setup(void)
{
	e2e_setup("plan", 0);
}

static void teardown(void)
{
	e2e_teardown(SIGKILL, true);
}

TestSuite(plan, .init = setup, .fini = teardown, .timeout = 480);

/* What a client saw over the middle of a run. */
struct seen {
	double tok_s, ttft_p50, ttft_p99, itl_p50, itl_p99;
	double rate;		/* requests/s it sent */
	int n;			/* requests in the window */
};

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double pct(const double *v, int n, double p)
{
	int i = (int)ceil(p / 100 * n);

	return n ? v[i ? i - 1 : 0] : 0;
}

/* The client's figures from loadgen's --out (its middle 80%, or all of
 * it as a replay counts) and its summary (inter-token percentiles). */
static struct seen client_saw_ex(const char *out, const char *log, bool all)
{
	static cJSON *v[PL_MAX_REQS];
	static double ttft[PL_MAX_REQS];
	int n = e2e_read_jsonl(out, v, PL_MAX_REQS), m = 0;
	double t0 = INFINITY, t1 = 0, tok = 0;
	struct seen s = { 0 };
	const char *sum = e2e_slurp(log), *p;

	cr_assert_gt(n, 0, "no requests in %s", out);
	for (int i = 0; i < n; i++) {
		t0 = fmin(t0, e2e_num(v[i], "sent_ns"));
		t1 = fmax(t1, e2e_num(v[i], "end_ns"));
	}
	double a = t0 + 0.1 * (t1 - t0), b = t1 - 0.1 * (t1 - t0);

	if (all) {
		a = t0;
		b = t1;
	}

	for (int i = 0; i < n; i++) {
		double sent = e2e_num(v[i], "sent_ns");

		if (sent >= a && sent <= b)
			ttft[m++] = (e2e_num(v[i], "first_token_ns") - sent) /
				    1e6;
		if (e2e_num(v[i], "end_ns") >= a && e2e_num(v[i], "end_ns") <= b)
			tok += e2e_num(v[i], "completion_tokens");
		cJSON_Delete(v[i]);
	}
	qsort(ttft, m, sizeof(*ttft), cmp_double);
	s.n = m;
	s.rate = m / ((b - a) / 1e9);
	s.tok_s = tok / ((b - a) / 1e9);
	s.ttft_p50 = pct(ttft, m, 50);
	s.ttft_p99 = pct(ttft, m, 99);
	cr_assert_not_null(sum);
	p = strstr(sum, "itl: p50 ");
	cr_assert(p && sscanf(p, "itl: p50 %lf ms, p99 %lf ms", &s.itl_p50,
			      &s.itl_p99) == 2, "no itl in %s", log);
	free((void *)sum);
	return s;
}

static struct seen client_saw(const char *out, const char *log)
{
	return client_saw_ex(out, log, false);
}

/* The server with flags, untraced or under tokentrace run -o rec.tt. */
static pid_t server(const char *const *flags, bool traced, int *port)
{
	static char pf[128], rec[128];
	char *argv[40] = { NULL };
	int n = 0;

	e2e_path(pf, sizeof(pf), "port");
	e2e_path(rec, sizeof(rec), "rec.tt");
	unlink(pf);
	if (traced) {
		const char *t[] = { "build/tokentrace", "run", "--compute",
				    "cupti", "-o", rec, "--" };
		for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
			argv[n++] = (char *)t[i];
	}
	const char *r[] = { "build/refserver", "--device", "sim", "--gpus",
			    "2", "--graphs", "--port", "0", "--port-file", pf };
	for (size_t i = 0; i < sizeof(r) / sizeof(r[0]); i++)
		argv[n++] = (char *)r[i];
	for (int i = 0; flags[i]; i++)
		argv[n++] = (char *)flags[i];
	pid_t p = e2e_spawn(argv, traced ? "rec.log" : "server.log", NULL);

	*port = e2e_wait_port("port", p, 20000, traced ? "rec.log" :
			      "server.log", "server");
	return p;
}

/* loadgen against port: closed loop of conc clients, or open at rate. */
static void load(int port, int conc, double rate, int requests,
		 const char *out, const char *log)
{
	char url[64], c[16], r[32], q[16], o[128];
	char *argv[32] = { "build/loadgen", "--url", url, "--stream", "--out",
			   o, PL_MIX, "--requests", q, "--seed", "7" };
	int n = 14;

	snprintf(url, sizeof(url), "http://127.0.0.1:%d", port);
	snprintf(q, sizeof(q), "%d", requests);
	e2e_path(o, sizeof(o), out);
	if (rate > 0) {
		snprintf(r, sizeof(r), "%.3f", rate);
		argv[n++] = "--rate";
		argv[n++] = r;
	} else {
		snprintf(c, sizeof(c), "%d", conc);
		argv[n++] = "--concurrency";
		argv[n++] = c;
	}
	argv[n] = NULL;
	/* an open loop takes requests / rate; a minute more for the drain
	 * and a slow host */
	cr_assert_eq(e2e_run(argv, log, NULL, rate > 0 ? (int)(1500 * requests /
				rate) + 60000 : 120000), 0, "loadgen: %s",
		     e2e_tail(log, 800));
}

static void stop(pid_t p, const char *log)
{
	cr_assert_eq(e2e_exit_of(e2e_stop(p, SIGTERM, 20000)), 0, "%s",
		     e2e_tail(log, 800));
}

/* Records the trace: 400 requests from 4 clients (the mix a plan draws
 * from: fewer, and its mean length is off the client's by a few %). */
static void record(const char *const *flags)
{
	int port;
	pid_t p = server(flags, true, &port);

	load(port, 4, 0, 400, "rec.jsonl", "rec-load.log");
	stop(p, "rec.log");
}

/* plan rec.tt with args; its JSON. */
static cJSON *plan(const char *const *args)
{
	static char rec[128], out[128];
	char *argv[32] = { "build/tokentrace", "plan", rec, "--format", "json",
			   "-o", out };
	int n = 7;

	e2e_path(rec, sizeof(rec), "rec.tt");
	e2e_path(out, sizeof(out), "plan.json");
	for (int i = 0; args[i]; i++)
		argv[n++] = (char *)args[i];
	argv[n] = NULL;
	cr_assert_eq(e2e_run(argv, "plan.log", NULL, 60000), 0, "plan: %s",
		     e2e_tail("plan.log", 800));
	return e2e_load_json("plan.json", "plan.log");
}

/* Logs a comparison; when assert, fails beyond tol. */
static void within_ex(const char *what, const char *k, double got,
		      double real, double tol, bool assert)
{
	double e = got / real - 1;

	/* the goal (tol) is logged; the test fails at twice it, as the
	 * client's own figures swing by 10-15 % between runs of the whole
	 * suite on this host (a plan off by that is not a plan) */
	cr_log_info("%s %s: plan %.2f, real %.2f (%+.1f%%, goal within "
		    "%.0f%%: %s)", what, k, got, real, 100 * e, 100 * tol,
		    fabs(e) <= tol ? "met" : "missed");
	if (assert)
		cr_expect(fabs(e) <= 2 * tol, "%s %s: plan %.2f, real %.2f "
			  "(%+.1f%%, goal within %.0f%%)", what, k, got, real,
			  100 * e, 100 * tol);
}

static void within(const char *what, const char *k, double got, double real,
		   double tol)
{
	within_ex(what, k, got, real, tol, true);
}

/* The plan's figures against the client's. */
static void compare(const char *what, const cJSON *pl, struct seen s)
{
	const cJSON *p = cJSON_GetObjectItem(pl, "predicted");
	const cJSON *t = cJSON_GetObjectItem(p, "ttft_ms");
	const cJSON *i = cJSON_GetObjectItem(p, "itl_ms");

	within(what, "tokens/s", e2e_num(p, "throughput_tok_s"), s.tok_s, 0.10);
	within(what, "TTFT p50", e2e_num(t, "p50"), s.ttft_p50, 0.10);
	within(what, "TTFT p99", e2e_num(t, "p99"), s.ttft_p99, 0.20);
	within(what, "ITL p50", e2e_num(i, "p50"), s.itl_p50, 0.10);
	within(what, "ITL p99", e2e_num(i, "p99"), s.itl_p99, 0.20);
}

/* Where the client's TTFT p99 fell in the plan's range for a run of
 * that length (logged). */
static void log_spread(const char *what, const cJSON *pl, struct seen s)
{
	const cJSON *sp = cJSON_GetObjectItem(pl, "spread");
	const cJSON *r = cJSON_GetObjectItem(cJSON_GetObjectItem(sp, "ttft_ms"),
					     "p99");

	cr_assert(cJSON_GetArraySize(r) == 2, "no spread in the plan");
	double lo = cJSON_GetArrayItem(r, 0)->valuedouble;
	double hi = cJSON_GetArrayItem(r, 1)->valuedouble;

	cr_log_info("%s TTFT p99: real %.2f, a run of %d requests falls in "
		    "%.2f-%.2f nine times in ten under the plan: %s", what,
		    s.ttft_p99, (int)e2e_num(sp, "requests_per_run"), lo, hi,
		    s.ttft_p99 >= lo && s.ttft_p99 <= hi ? "inside" :
		    "outside");
}

/* A real run of flags at a load. */
static struct seen real_run(const char *const *flags, int conc, double rate,
			    int requests)
{
	int port;
	pid_t p = server(flags, false, &port);

	load(port, conc, rate, requests, "real.jsonl", "real.log");
	stop(p, "server.log");
	return client_saw("real.jsonl", "real.log");
}

Test(plan, a_light_load_predicts_heavier_closed_and_open_loops)
{
	static const char *const flags[] = { "--max-batch", "16", NULL };
	static const char *const c12[] = { "--max-batch", "16",
					   "--concurrency", "12", NULL };
	static const char *const c16[] = { "--max-batch", "16",
					   "--concurrency", "16", NULL };
	cJSON *o;

	e2e_need_sim();
	record(flags);
	o = plan(c12);
	compare("closed loop, 12 clients (3x)", o, real_run(flags, 12, 0, 600));
	cJSON_Delete(o);
	o = plan(c16);
	compare("closed loop, 16 clients (4x)", o, real_run(flags, 16, 0, 600));
	double cap = e2e_num(o, "saturation_requests_per_s_per_replica");
	double sat = e2e_num(o, "saturation_tok_s_per_replica");

	cJSON_Delete(o);
	within("saturation", "tokens/s", sat,
	       real_run(flags, 64, 0, 1000).tok_s, 0.10);
	/*
	 * Open loop at 50 % and 85 % of capacity, two ways. The client's
	 * Poisson arrivals are off the rate asked by a few % (one sd is 5 %
	 * at 370 arrivals), so the plan is asked for the rate the client
	 * really sent, over as many requests. The run at 50 % is 10 s; the
	 * one at 85 % is 6000 requests, as its TTFT tail needs (see the top
	 * of this file; the plan's range for a run of that length, logged,
	 * is some -15 % to +35 % of its median). The replay is the second
	 * check: the plan is given the very requests the client sent, at
	 * their times (--arrivals), and must match every figure.
	 */
	for (int k = 0; k < 2; k++) {
		double f = k ? 0.85 : 0.5;
		char rate[32], what[96], reqs[16], arr[128];
		const char *const args[] = { "--max-batch", "16", "--rate",
					     rate, "--requests", reqs, NULL };
		const char *const replay[] = { "--max-batch", "16",
					       "--arrivals", arr, NULL };
		struct seen s = real_run(flags, 0, f * cap,
					 k ? 6000 : (int)(f * cap * 10));
		struct seen all = client_saw_ex("real.jsonl", "real.log",
						true);

		snprintf(rate, sizeof(rate), "%.3f", s.rate);
		snprintf(reqs, sizeof(reqs), "%d", s.n);
		e2e_path(arr, sizeof(arr), "real.jsonl");
		snprintf(what, sizeof(what), "open loop at %.0f%% of capacity "
			 "(%.1f requests/s sent)", 100 * f, s.rate);
		o = plan(args);
		compare(what, o, s);
		log_spread(what, o, s);
		cJSON_Delete(o);
		snprintf(what, sizeof(what), "replay of the open loop at "
			 "%.0f%% of capacity", 100 * f);
		o = plan(replay);
		compare(what, o, all);
		cJSON_Delete(o);
	}
}

Test(plan, what_if_a_smaller_batch_and_chunked_prefill)
{
	static const char *const rec[] = { "--max-batch", "16", NULL };
	static const char *const what_if[] = { "--max-batch", "8",
					       "--prefill-chunk", "128",
					       NULL };
	static const char *const args[] = { "--max-batch", "8",
					     "--prefill-chunk", "128",
					     "--concurrency", "12", NULL };
	cJSON *o;

	e2e_need_sim();
	record(rec);
	/* the real ITL tail under chunked prefill swung with the host
	 * (-15 to -28 % from the plan's over runs; +2 % since steps keep
	 * requests out of steps begun before they arrived): held to twice
	 * the goal like the rest */
	o = plan(args);
	compare("max batch 8, chunks of 128, 12 clients", o,
		real_run(what_if, 12, 0, 600));
	cJSON_Delete(o);
}

/* The HTML page of a plan, and a replay from a file with a line that is
 * not a request in it: said, counted, the rest replayed. */
Test(plan, the_html_page_and_a_replay_with_a_bad_line)
{
	static const char *const rec[] = { "--max-batch", "16", NULL };
	static char trace[128], page[128], arr[128];
	char *html[] = { "build/tokentrace", "plan", trace, "--slo",
			 "ttft_p99=100", "--format", "html", "-o", page, NULL };
	char *replay[] = { "build/tokentrace", "plan", trace, "--arrivals",
			   arr, "--format", "json", NULL };
	struct stat st;
	FILE *f;

	e2e_need_sim();
	record(rec);
	e2e_path(trace, sizeof(trace), "rec.tt");
	e2e_path(page, sizeof(page), "plan.html");
	e2e_path(arr, sizeof(arr), "arrivals.jsonl");
	cr_assert_eq(e2e_run(html, "html.log", NULL, 60000), 0, "%s",
		     e2e_tail("html.log", 500));
	cr_assert_eq(stat(page, &st), 0);
	cr_expect_eq(st.st_mode & 0777, 0600, "mode %o", st.st_mode & 0777);
	cr_expect(e2e_file_has("plan.html", "<svg id=\"chart-plan-latency\""));
	cr_expect(e2e_file_has("plan.html",
			       "<svg id=\"chart-plan-throughput\""));
	cr_expect(e2e_file_has("plan.html", "<line class=\"slo\""));
	cr_expect(e2e_file_has("plan.html", "<line class=\"today\""));

	/* the recorded run's own requests, as the client logged them, with
	 * a line of garbage in the middle */
	char *lines = e2e_slurp("rec.jsonl");
	size_t half;

	cr_assert_not_null(lines);
	half = strcspn(lines + strlen(lines) / 2, "\n") + strlen(lines) / 2 + 1;
	f = fopen(arr, "w");
	cr_assert_not_null(f);
	fwrite(lines, 1, half, f);
	fputs("\x01garbage, not a request\n", f);
	fputs(lines + half, f);
	fclose(f);
	cr_assert_eq(e2e_run(replay, "replay.json", "replay.log", 60000), 0,
		     "%s", e2e_tail("replay.log", 500));
	cr_expect(e2e_file_has("replay.log", "1 of 401 lines skipped"), "%s",
		  e2e_tail("replay.log", 500));
	cJSON *o = e2e_load_json("replay.json", "replay.log");
	const cJSON *l = cJSON_GetObjectItem(o, "load");

	cr_expect_str_eq(e2e_str(l, "loop"), "replay");
	cr_expect_eq(e2e_num(l, "requests_per_replica"), 400);
	/* the 4 clients' run again, replayed: as the client saw it */
	within("replay of the recorded run", "tokens/s",
	       e2e_num(cJSON_GetObjectItem(o, "predicted"), "throughput_tok_s"),
	       client_saw_ex("rec.jsonl", "rec-load.log", true).tok_s, 0.10);
	cJSON_Delete(o);
	free(lines);
}

Test(plan, a_trace_too_short_says_so)
{
	static const char *const flags[] = { "--max-batch", "16", NULL };
	static char recp[128];
	char *argv[] = { "build/tokentrace", "plan", recp, NULL };
	int port;
	pid_t p;

	e2e_need_sim();
	p = server(flags, true, &port);
	load(port, 1, 0, 3, "rec.jsonl", "rec-load.log");
	stop(p, "rec.log");
	e2e_path(recp, sizeof(recp), "rec.tt");
	cr_expect_eq(e2e_run(argv, "short.log", NULL, 30000), 1);
	cr_expect(e2e_file_has("short.log", "too short to plan from"), "%s",
		  e2e_tail("short.log", 500));
}
