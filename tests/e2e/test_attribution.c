/*
 * test_attribution.c - the attribution end to end: the reference server
 * (CPU compute) runs under `tokentrace run --compute cpu`, loadgen drives
 * it, and what tokentrace inferred from outside is checked against the
 * server's own truth log (--truth): per-request shares of compute,
 * per-tenant order and ratio, idle bubbles while requests wait, idle time
 * with no request in flight, and on every report exact conservation and a
 * trace file that reads back to the live summary.
 *
 * In:  build/tokentrace, build/refserver, build/loadgen (run from the
 *      repository root).
 * Out: Criterion suite "attribution".
 * Assumes: root (eBPF; skipped with the reason otherwise); loopback TCP;
 *      ports picked by the server. Every process a test starts is killed
 *      and reaped in the fixture's fini; each test works in its own
 *      temporary folder, removed at the end.
 *
 * The truth's per-request compute_ns is the wall time of the request's
 * forward passes. On a shared 2-core host the engine thread is often
 * preempted inside a pass, which inflates that wall time by whatever ran
 * meanwhile; on-CPU time (what tokentrace measures) does not see it. So
 * tokentrace and the server it runs are started at nice -10 (the tests run
 * as root): the engine is then preempted less, and the truth's wall time
 * is closer to its compute. The truth also logs each step's CPU time
 * (CLOCK_THREAD_CPUTIME_ID of the engine thread), which preemption does
 * not inflate; test 1 checks against both, and logs how far they differ.
 * Every comparison is with the truth log, never with tokentrace's own
 * numbers (except the read-back check, which is about the trace file).
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cJSON.h>
#include <criterion/criterion.h>
#include <criterion/logging.h>

#include "harness.h"

#define SERVER_NICE	-10
#define MAX_TRUTH_REQS	4096
#define MAX_TRUTH_STEPS	65536

/* What the truth log says. */
struct truth_req {
	char id[64], tenant[64];
	double arrival_ns, end_ns, compute_ns;
	double prompt_tokens, cached_tokens;
};

struct truth_step {
	double start_ns, end_ns;
};

/* A request's part of the engine's CPU time: each step's cpu_ns split by
 * its entries' ns (the entries' shares of the step's wall time). */
struct truth_cpu {
	char id[64];
	double cpu_ns;
	double prefill_ns;	/* its prefill entries' ns */
};

struct truth {
	struct truth_req req[MAX_TRUTH_REQS];
	struct truth_step step[MAX_TRUTH_STEPS];
	struct truth_cpu cpu[MAX_TRUTH_REQS];
	int nreq, nstep, ncpu;
	double step_cpu_ns;	/* engine thread's CPU time in its steps */
	double compute_ns;	/* sum of the requests' compute_ns */
};

static struct truth truth;

/* The step probe off in the next start_server (steps from the tokens). */
static bool no_step_probe;

static void setup(void)
{
	e2e_setup("attr", 0);
	memset(&truth, 0, sizeof(truth));
	/* TT_E2E_NO_STEP_PROBE=1: every test on steps cut from the tokens */
	no_step_probe = getenv("TT_E2E_NO_STEP_PROBE") != NULL;
}

/* TT_KEEP=1 keeps the folder of a failure. */
static void teardown(void)
{
	e2e_teardown(SIGKILL, true);
}

/* ---- the server under tracing ---------------------------------------- */

/* Start tokentrace run -- refserver [extra...]; returns the port. */
static int start_server(pid_t *tt, const char *const extra[])
{
	static char pf[128], tf[128], sum[128], trace[128];
	char *argv[34] = { "build/tokentrace", "run", "--compute", "cpu",
			   "--summary", sum, "-o", trace, "--",
			   "build/refserver", "--host", "127.0.0.1", "--port",
			   "0", "--port-file", pf, "--truth", tf, NULL };
	int n = 18;

	e2e_path(pf, sizeof(pf), "port");
	e2e_path(tf, sizeof(tf), "truth.jsonl");
	e2e_path(sum, sizeof(sum), "summary.json");
	e2e_path(trace, sizeof(trace), "trace.tt");
	if (no_step_probe) {
		memmove(argv + 9, argv + 8, 10 * sizeof(*argv));
		argv[8] = "--no-step-probe";
		n++;
	}
	for (int i = 0; extra && extra[i] && n < 33; i++, n++) {
		argv[n] = (char *)extra[i];
		argv[n + 1] = NULL;
	}
	*tt = e2e_spawn_ex(argv, "run.log", NULL, -1, -1, SERVER_NICE);
	return e2e_wait_port("port", *tt, 15000, "run.log", "run");
}

/* Start loadgen against port with the given options (NULL-terminated). */
static pid_t start_load(int port, const char *out, const char *log,
			const char *const opts[])
{
	static char url[8][96], op[8][128];
	static int slot;
	char *argv[40] = { "build/loadgen", "--url", NULL, "--stream",
			   "--quiet", "--out", NULL };
	int n = 7;

	slot = (slot + 1) % 8;
	snprintf(url[slot], sizeof(url[slot]),
		 "http://127.0.0.1:%d/v1/completions", port);
	e2e_path(op[slot], sizeof(op[slot]), out);
	argv[2] = url[slot];
	argv[6] = op[slot];
	for (int i = 0; opts[i] && n < 38; i++)
		argv[n++] = (char *)opts[i];
	argv[n] = NULL;
	return e2e_spawn(argv, log, NULL);
}

static void wait_load(pid_t p, const char *log)
{
	cr_assert_eq(e2e_exit_of(e2e_reap(p, 60000)), 0, "loadgen failed: %s",
		     e2e_tail(log, 1000));
}

/* SIGTERM (forwarded to the server, which exits cleanly). */
static void stop_server(pid_t tt)
{
	kill(tt, SIGTERM);
	cr_assert_eq(e2e_exit_of(e2e_reap(tt, 20000)), 0, "run: %s",
		     e2e_tail("run.log", 1000));
}

/* ---- the truth log ---------------------------------------------------- */

static struct truth_cpu *truth_cpu_of(const char *id)
{
	for (int i = 0; i < truth.ncpu; i++)
		if (!strcmp(truth.cpu[i].id, id))
			return &truth.cpu[i];
	cr_assert_lt(truth.ncpu, MAX_TRUTH_REQS, "too many requests");
	snprintf(truth.cpu[truth.ncpu].id, sizeof(truth.cpu[0].id), "%s", id);
	return &truth.cpu[truth.ncpu++];
}

static void truth_step_cpu(const cJSON *o)
{
	const cJSON *es = cJSON_GetObjectItem(o, "entries"), *e;
	double wall = 0, cpu = e2e_num(o, "cpu_ns");

	cJSON_ArrayForEach(e, es)
		wall += e2e_num(e, "ns");
	cJSON_ArrayForEach(e, es) {
		struct truth_cpu *c = truth_cpu_of(e2e_str(e, "id"));

		if (wall > 0)
			c->cpu_ns += cpu * e2e_num(e, "ns") / wall;
		if (!strcmp(e2e_str(e, "phase"), "prefill"))
			c->prefill_ns += e2e_num(e, "ns");
	}
}

static double truth_prefill_ns(const char *id)
{
	return truth_cpu_of(id)->prefill_ns;
}

static void truth_line(const cJSON *o)
{
	const char *type = e2e_str(o, "type");

	if (!strcmp(type, "step")) {
		truth_step_cpu(o);
		cr_assert_lt(truth.nstep, MAX_TRUTH_STEPS, "too many steps");
		truth.step_cpu_ns += e2e_num(o, "cpu_ns");
		truth.step[truth.nstep].start_ns = e2e_num(o, "start_ns");
		truth.step[truth.nstep++].end_ns = e2e_num(o, "end_ns");
	} else if (!strcmp(type, "request")) {
		struct truth_req *r = &truth.req[truth.nreq];

		cr_assert_lt(truth.nreq, MAX_TRUTH_REQS, "too many requests");
		snprintf(r->id, sizeof(r->id), "%s", e2e_str(o, "id"));
		snprintf(r->tenant, sizeof(r->tenant), "%s",
			 e2e_str(o, "tenant"));
		r->arrival_ns = e2e_num(o, "arrival_ns");
		r->end_ns = e2e_num(o, "end_ns");
		r->compute_ns = e2e_num(o, "compute_ns");
		r->prompt_tokens = e2e_num(o, "prompt_tokens");
		r->cached_tokens = e2e_num(o, "cached_tokens");
		truth.compute_ns += r->compute_ns;
		truth.nreq++;
	}
}

static void load_truth(void)
{
	char p[128];
	static char line[1 << 16];
	FILE *f;

	e2e_path(p, sizeof(p), "truth.jsonl");
	f = fopen(p, "r");
	cr_assert_not_null(f, "no truth log %s", p);
	while (fgets(line, sizeof(line), f)) {
		cJSON *o = cJSON_Parse(line);

		cr_assert_not_null(o, "truth line is not JSON: %.200s", line);
		truth_line(o);
		cJSON_Delete(o);
	}
	fclose(f);
	cr_assert_gt(truth.nreq, 0, "no request lines in the truth log");
	cr_assert_gt(truth.nstep, 1, "no step lines in the truth log");
}

static const struct truth_req *truth_req(const char *id)
{
	for (int i = 0; i < truth.nreq; i++)
		if (!strcmp(truth.req[i].id, id))
			return &truth.req[i];
	return NULL;
}

/* Union of the truth requests' [arrival, end]: when demand existed. */
static int flight_spans(double (*s)[2])
{
	int n = 0;

	for (int i = 0; i < truth.nreq; i++) {
		s[n][0] = truth.req[i].arrival_ns;
		s[n++][1] = truth.req[i].end_ns;
	}
	for (int i = 1; i < n; i++)	/* insertion sort by start */
		for (int j = i; j > 0 && s[j][0] < s[j - 1][0]; j--) {
			double a = s[j][0], b = s[j][1];

			s[j][0] = s[j - 1][0];
			s[j][1] = s[j - 1][1];
			s[j - 1][0] = a;
			s[j - 1][1] = b;
		}
	int m = 0;

	for (int i = 0; i < n; i++) {
		if (m && s[i][0] <= s[m - 1][1]) {
			if (s[i][1] > s[m - 1][1])
				s[m - 1][1] = s[i][1];
			continue;
		}
		s[m][0] = s[i][0];
		s[m++][1] = s[i][1];
	}
	return m;
}

static double overlap(double (*s)[2], int n, double a, double b)
{
	double sum = 0;

	for (int i = 0; i < n; i++) {
		double x = s[i][0] > a ? s[i][0] : a;
		double y = s[i][1] < b ? s[i][1] : b;

		if (y > x)
			sum += y - x;
	}
	return sum;
}

/* How far the truth's wall-time compute_ns is from the engine's CPU time
 * (preemption inside forward passes), for the log of a failure. */
static void log_truth_quality(void)
{
	cr_log_info("truth: requests' compute_ns %.1f ms, engine CPU in "
		    "steps %.1f ms (wall/CPU %.3f; above 1: the engine was "
		    "preempted inside forward passes and compute_ns counts "
		    "it)", truth.compute_ns / 1e6, truth.step_cpu_ns / 1e6,
		    truth.compute_ns / truth.step_cpu_ns);
}

/* Truth: time between consecutive steps while a request was in flight. */
static double truth_bubble_ns(void)
{
	static double s[MAX_TRUTH_REQS][2];
	int n = flight_spans(s);
	double sum = 0;

	for (int i = 0; i + 1 < truth.nstep; i++)
		sum += overlap(s, n, truth.step[i].end_ns,
			       truth.step[i + 1].start_ns);
	return sum;
}

/* Truth: time in [a, b] with no request in flight. */
static double truth_no_demand_ns(double a, double b)
{
	static double s[MAX_TRUTH_REQS][2];
	int n = flight_spans(s);

	return (b - a) - overlap(s, n, a, b);
}

/* ---- the report ------------------------------------------------------- */

static const cJSON *cpu_device(const cJSON *o)
{
	const cJSON *d;

	cJSON_ArrayForEach(d, cJSON_GetObjectItem(o, "devices"))
		if (!strcmp(e2e_str(d, "kind"), "cpu"))
			return d;
	cr_assert_fail("no cpu device in the report");
	return NULL;
}

static const cJSON *finding(const cJSON *o, const char *id)
{
	const cJSON *f;

	cJSON_ArrayForEach(f, cJSON_GetObjectItem(o, "findings"))
		if (!strcmp(e2e_str(f, "id"), id))
			return f;
	return NULL;
}

static const cJSON *by_name(const cJSON *arr, const char *key,
			    const char *name)
{
	const cJSON *x;

	cJSON_ArrayForEach(x, arr)
		if (!strcmp(e2e_str(x, key), name))
			return x;
	return NULL;
}

/* sum(requests gpu_ns) + unattributed_ns == busy of the CPU device. */
static void expect_conserved(const cJSON *o, const char *what)
{
	const cJSON *r;
	double sum = 0;

	cJSON_ArrayForEach(r, cJSON_GetObjectItem(o, "requests"))
		sum += e2e_num(r, "gpu_ns");
	cr_expect_eq(sum + e2e_num(o, "unattributed_ns"),
		     e2e_num(cpu_device(o), "busy_ns"),
		     "%s: requests %.0f + unattributed %.0f != busy %.0f ns",
		     what, sum, e2e_num(o, "unattributed_ns"),
		     e2e_num(cpu_device(o), "busy_ns"));
}

static void expect_same_number(const cJSON *a, const cJSON *b, const char *k,
			       const char *what)
{
	cr_expect_eq(e2e_num(a, k), e2e_num(b, k),
		     "%s %s: live %.0f, read back %.0f", what, k,
		     e2e_num(a, k), e2e_num(b, k));
}

/* The report read back from the trace equals the live summary. */
static void expect_read_back_equal(const cJSON *live)
{
	static char trace[128], out[128];
	char *argv[] = { "build/tokentrace", "report", trace, "--format",
			 "json", "-o", out, NULL };
	const cJSON *r, *t, *f;
	cJSON *back;

	e2e_path(trace, sizeof(trace), "trace.tt");
	e2e_path(out, sizeof(out), "report.json");
	cr_assert_eq(e2e_exit_of(e2e_reap(e2e_spawn(argv, "report.log",
							NULL), 30000)), 0,
		     "tokentrace report failed: %s",
		     e2e_tail("report.log", 1000));
	back = e2e_load_json("report.json", "run.log");
	expect_conserved(back, "read back");
	expect_same_number(live, back, "window_ns", "report");
	expect_same_number(live, back, "unattributed_ns", "report");
	expect_same_number(cpu_device(live), cpu_device(back), "busy_ns",
			   "cpu");
	cr_expect_eq(cJSON_GetArraySize(cJSON_GetObjectItem(live,
							    "requests")),
		     cJSON_GetArraySize(cJSON_GetObjectItem(back,
							    "requests")),
		     "request counts differ");
	cJSON_ArrayForEach(r, cJSON_GetObjectItem(live, "requests")) {
		const cJSON *q = by_name(cJSON_GetObjectItem(back, "requests"),
					 "id", e2e_str(r, "id"));

		cr_expect_not_null(q, "request %s not read back",
				   e2e_str(r, "id"));
		if (q)
			expect_same_number(r, q, "gpu_ns", e2e_str(r, "id"));
	}
	cJSON_ArrayForEach(t, cJSON_GetObjectItem(live, "tenants")) {
		const cJSON *q = by_name(cJSON_GetObjectItem(back, "tenants"),
					 "name", e2e_str(t, "name"));

		cr_expect_not_null(q, "tenant %s not read back",
				   e2e_str(t, "name"));
		if (q)
			expect_same_number(t, q, "gpu_ns", e2e_str(t, "name"));
	}
	cJSON_ArrayForEach(f, cJSON_GetObjectItem(live, "findings"))
		cr_expect_not_null(finding(back, e2e_str(f, "id")),
				   "finding %s not read back",
				   e2e_str(f, "id"));
	cJSON_Delete(back);
}

/* Stop, then load the summary and truth; conservation and read-back. */
static cJSON *finish(pid_t tt)
{
	cJSON *o;

	stop_server(tt);
	load_truth();
	o = e2e_load_json("summary.json", "run.log");
	expect_conserved(o, "live summary");
	expect_read_back_equal(o);
	cr_expect_eq(e2e_num(cJSON_GetObjectItem(o, "losses"), "events"), 0,
		     "events were lost; the comparison is not fair");
	return o;
}

TestSuite(attribution, .init = setup, .fini = teardown, .timeout = 120);

/* ---- 1. per-request shares ------------------------------------------- */

struct share {
	const char *id;
	double got, want;	/* shares of the matched totals */
	double gpu_ns, compute_ns;
};

static int by_error_desc_fwd(const void *a, const void *b)
{
	const struct share *x = a, *y = b;
	double ex = fabs(x->got / x->want - 1), ey = fabs(y->got / y->want - 1);

	return ex < ey ? 1 : ex > ey ? -1 : 0;
}

/* How many of sh[0..n) have got within 10 % of want (and, in *ok15,
 * within 15 %); logs the worst 5 (sorts sh). */
static int within_10pct(struct share *sh, int n, const char *truth_name,
			int *ok15)
{
	double sum_got = 0, sum_want = 0;
	int ok = 0;

	*ok15 = 0;

	for (int i = 0; i < n; i++) {
		sum_got += sh[i].gpu_ns;
		sum_want += sh[i].compute_ns;
	}
	for (int i = 0; i < n; i++) {
		sh[i].got = sh[i].gpu_ns / sum_got;
		sh[i].want = sh[i].compute_ns / sum_want;
		ok += fabs(sh[i].got / sh[i].want - 1) <= 0.10;
		*ok15 += fabs(sh[i].got / sh[i].want - 1) <= 0.15;
	}
	qsort(sh, n, sizeof(*sh), by_error_desc_fwd);
	for (int i = 0; i < 5 && i < n; i++)
		cr_log_info("%s, worst %d: %s attributed %.2f ms (share "
			    "%.4f), server %.2f ms (share %.4f): %+.1f%%",
			    truth_name, i + 1, sh[i].id, sh[i].gpu_ns / 1e6,
			    sh[i].got, sh[i].compute_ns / 1e6, sh[i].want,
			    100 * (sh[i].got / sh[i].want - 1));
	cr_log_info("%s: %d of %d requests within 10%%, %d within 15%%",
		    truth_name, ok, n, *ok15);
	return ok;
}


/* Enough requests (and so steps) for the fit to be stable from run to run:
 * the property is about the attribution, not about one lucky fit. */
#define SHARE_REQS	160
#define SHARE_REQS_S	"160"

Test(attribution, each_request_s_share_follows_the_server_s_own_compute)
{
	static const char *const opts[] = {
		"--concurrency", "6", "--requests", SHARE_REQS_S, "--tenants",
		"a:1,b:1", "--prompt-len", "16-256", "--max-tokens", "4-48",
		NULL };
	/* A wider model: steps long against the few hundred microseconds
	 * by which the server's token writes trail the end of a step. */
	static const char *const model[] = { "--dim", "256", NULL };
	static struct share sh[MAX_TRUTH_REQS], cpu[MAX_TRUTH_REQS];
	const cJSON *r;
	int n = 0, ok, ok_cpu, ok15, ok15_cpu;
	pid_t tt;
	cJSON *o;

	e2e_need_tools();
	int port = start_server(&tt, model);
	wait_load(start_load(port, "load.jsonl", "load.log", opts),
		  "load.log");
	o = finish(tt);
	cJSON_ArrayForEach(r, cJSON_GetObjectItem(o, "requests")) {
		const struct truth_req *t = truth_req(e2e_str(r, "id"));

		if (!t || n == MAX_TRUTH_REQS)
			continue;
		sh[n] = (struct share){ .id = e2e_str(r, "id"),
					.gpu_ns = e2e_num(r, "gpu_ns"),
					.compute_ns = t->compute_ns };
		cpu[n] = sh[n];
		cpu[n++].compute_ns = truth_cpu_of(t->id)->cpu_ns;
	}
	cr_assert_eq(n, SHARE_REQS, "%d of %d requests matched the truth log "
		     "by id", n, SHARE_REQS);
	log_truth_quality();
	ok = within_10pct(sh, n, "compute_ns", &ok15);
	ok_cpu = within_10pct(cpu, n, "steps' cpu_ns", &ok15_cpu);
	/*
	 * The goal: 90 % of requests within 10 % of their share of the
	 * server's own accounting, against both of its figures: the wall time
	 * of each request's forward passes (compute_ns) and each step's CPU
	 * time split by those (cpu_ns). On a quiet host, over 35 recorded
	 * runs, 0.8 % of requests were more than 10 % off and the worst run
	 * had 5 % so (154 to 159 of 160 in later runs); a split by tokens
	 * alone has 12-20 % p90 errors on the same traces. Once, in a whole
	 * `make test` on a 2-core host busy with other work, 143 of 160: the
	 * server's own timings swing with the host. The goal is logged on
	 * every run; what fails the test is below 85 %.
	 */
	cr_log_info("goal: 90%% within 10%%: compute_ns %s (%d of %d), "
		    "cpu_ns %s (%d of %d)",
		    ok >= (int)ceil(0.9 * n) ? "met" : "missed", ok, n,
		    ok_cpu >= (int)ceil(0.9 * n) ? "met" : "missed", ok_cpu, n);
	cr_expect_geq(ok, (int)ceil(0.85 * n), "only %d of %d requests have a "
		      "share within 10%% of their share of the server's "
		      "compute_ns (goal 90%%, floor 85%%); worst %s: %+.1f%%",
		      ok, n, sh[0].id, 100 * (sh[0].got / sh[0].want - 1));
	cr_expect_geq(ok_cpu, (int)ceil(0.85 * n), "only %d of %d requests "
		      "have a share within 10%% of their share of the engine's "
		      "CPU time in steps (goal 90%%, floor 85%%); worst %s: "
		      "%+.1f%%", ok_cpu, n, cpu[0].id,
		      100 * (cpu[0].got / cpu[0].want - 1));
	cJSON_Delete(o);
}

/* ---- 2. tenants -------------------------------------------------------- */

Test(attribution, prompt_heavy_and_decode_heavy_tenants_in_truth_s_ratio)
{
	static const char *const prompty[] = {
		"--concurrency", "3", "--requests", "24", "--tenants",
		"prompty:1", "--prompt-len", "192-256", "--max-tokens", "2-4",
		"--seed", "1", NULL };
	static const char *const chatty[] = {
		"--concurrency", "3", "--requests", "24", "--tenants",
		"chatty:1", "--prompt-len", "8-16", "--max-tokens", "48-64",
		"--seed", "2", NULL };
	double want_p = 0, want_c = 0, cpu_p = 0, cpu_c = 0, got_p, got_c;
	const cJSON *ts, *p, *c;
	pid_t tt, l1, l2;
	cJSON *o;

	e2e_need_tools();
	int port = start_server(&tt, NULL);
	l1 = start_load(port, "prompty.jsonl", "prompty.log", prompty);
	l2 = start_load(port, "chatty.jsonl", "chatty.log", chatty);
	wait_load(l1, "prompty.log");
	wait_load(l2, "chatty.log");
	o = finish(tt);
	for (int i = 0; i < truth.nreq; i++) {
		double cpu = truth_cpu_of(truth.req[i].id)->cpu_ns;

		if (!strcmp(truth.req[i].tenant, "prompty")) {
			want_p += truth.req[i].compute_ns;
			cpu_p += cpu;
		} else if (!strcmp(truth.req[i].tenant, "chatty")) {
			want_c += truth.req[i].compute_ns;
			cpu_c += cpu;
		}
	}
	ts = cJSON_GetObjectItem(o, "tenants");
	p = by_name(ts, "name", "prompty");
	c = by_name(ts, "name", "chatty");
	cr_assert(p && c, "the report lacks a tenant");
	got_p = e2e_num(p, "gpu_ns");
	got_c = e2e_num(c, "gpu_ns");
	log_truth_quality();
	cr_log_info("prompty: %.1f ms attributed, %.1f ms by the server "
		    "(%.1f ms CPU); chatty: %.1f ms attributed, %.1f ms by the "
		    "server (%.1f ms CPU)", got_p / 1e6, want_p / 1e6,
		    cpu_p / 1e6, got_c / 1e6, want_c / 1e6, cpu_c / 1e6);
	cr_assert_gt(want_c, 0);
	cr_expect_eq(got_p > got_c, want_p > want_c, "tenant order differs "
		     "from the server's");
	/* compute_ns leaves out the engine's own time in each step
	 * (scheduling, sampling), which the CPU time charges and someone
	 * must pay: the decode-heavy tenant, in many more steps, pays more
	 * of it (its CPU time is 8-12% above its compute_ns on this host).
	 * The CPU time is the goal (15%); compute_ns a looser floor. */
	cr_log_info("prompty/chatty: %.3f attributed, %.3f by the server's "
		    "compute_ns (%+.1f%%), %.3f by its CPU time (%+.1f%%)",
		    got_p / got_c, want_p / want_c,
		    100 * ((got_p / got_c) / (want_p / want_c) - 1),
		    cpu_p / cpu_c, 100 * ((got_p / got_c) / (cpu_p / cpu_c) - 1));
	cr_expect_leq(fabs((got_p / got_c) / (want_p / want_c) - 1), 0.25,
		      "prompty/chatty: %.3f attributed, %.3f by the server's "
		      "compute_ns", got_p / got_c, want_p / want_c);
	cr_assert_gt(cpu_c, 0);
	cr_expect_leq(fabs((got_p / got_c) / (cpu_p / cpu_c) - 1), 0.15,
		      "prompty/chatty: %.3f attributed, %.3f by the engine's "
		      "CPU time in steps", got_p / got_c, cpu_p / cpu_c);
	cJSON_Delete(o);
}

/* ---- 3. prefix caching ---------------------------------------------- */

/*
 * One tenant's prompts are 70% a prefix of its own that the server's
 * prefix cache holds after the first; the other's share nothing. Tenant
 * GPU time must follow what each really computed (within 5% of the truth
 * log's share); cached tokens are exact when the server sends them and
 * within 10% of the truth's when inferred, and next to none (under 5% of
 * the prompt tokens) are inferred when the server has no cache.
 */
enum prefix_case { PREFIX_SENT, PREFIX_INFERRED, PREFIX_NO_CACHE };

static void prefix_tenants(enum prefix_case how)
{
	/* the wider model, as for the per-request shares above */
	static const char *const wire[] = { "--dim", "256", "--prefix-cache",
					    "--report-cached-tokens", NULL };
	static const char *const quiet[] = { "--dim", "256", "--prefix-cache",
					     NULL };
	static const char *const none[] = { "--dim", "256", NULL };
	static const char *const *const server[] = { wire, quiet, none };
	static const char *const what[] = { "cached_tokens on the wire",
					    "inferred", "no cache" };
	static const char *const opts[] = {
		"--concurrency", "4", "--requests", "120", "--tenants",
		"shared:1,own:1", "--shared-prefix", "shared:320",
		"--prompt-len", "100-160", "--max-tokens", "6-16", NULL };
	double want[2] = { 0 }, got[2] = { 0 }, cached = 0, prompt = 0;
	double got_cached = 0;
	static const char *const name[2] = { "shared", "own" };
	static struct share sh[MAX_TRUTH_REQS];
	int exact = 0, n = 0, ok, ok15;
	const cJSON *r;
	pid_t tt;
	cJSON *o;

	e2e_need_tools();
	int port = start_server(&tt, server[how]);
	wait_load(start_load(port, "load.jsonl", "load.log", opts),
		  "load.log");
	o = finish(tt);
	for (int i = 0; i < truth.nreq; i++)
		for (int k = 0; k < 2; k++)
			if (!strcmp(truth.req[i].tenant, name[k]))
				want[k] += truth.req[i].compute_ns;
	cJSON_ArrayForEach(r, cJSON_GetObjectItem(o, "requests")) {
		const struct truth_req *t = truth_req(e2e_str(r, "id"));
		double c = e2e_num_or(r, "cached_tokens", -1);

		if (!t || n == MAX_TRUTH_REQS)
			continue;
		sh[n] = (struct share){ .id = e2e_str(r, "id"),
					.gpu_ns = e2e_num(r, "gpu_ns"),
					.compute_ns = t->compute_ns };
		n++;
		cached += t->cached_tokens;
		prompt += t->prompt_tokens;
		got_cached += c > 0 ? c : 0;
		exact += c == t->cached_tokens;
	}
	for (int k = 0; k < 2; k++) {
		const cJSON *g = by_name(cJSON_GetObjectItem(o, "tenants"),
					 "name", name[k]);

		cr_assert_not_null(g, "no tenant %s in the report", name[k]);
		got[k] = e2e_num(g, "gpu_ns");
	}
	log_truth_quality();
	cr_log_info("prefix cache (%s): %.0f%% of prompt tokens cached by "
		    "the truth, %.0f reported against %.0f; tenant shares "
		    "%.4f/%.4f attributed, %.4f/%.4f by the server",
		    what[how], 100 * cached / prompt, got_cached, cached,
		    got[0] / (got[0] + got[1]), got[1] / (got[0] + got[1]),
		    want[0] / (want[0] + want[1]), want[1] / (want[0] + want[1]));
	cr_assert_gt(n, 100, "only %d requests matched the truth log", n);
	/* per request as good as without caching: the share test's goal
	 * (logged) and floor (asserted) */
	ok = within_10pct(sh, n, "compute_ns", &ok15);
	cr_log_info("goal: 90%% within 10%%: %s (%d of %d)",
		    ok >= (int)ceil(0.9 * n) ? "met" : "missed", ok, n);
	cr_expect_geq(ok, (int)ceil(0.85 * n), "only %d of %d requests have a "
		      "share within 10%% of the server's (goal 90%%, floor "
		      "85%%)", ok, n);
	if (how == PREFIX_NO_CACHE) {
		cr_assert_eq(cached, 0, "a server without a cache cached");
		/* a step the tracer cut wrong can pass for a hit or two */
		cr_expect_leq(got_cached, 0.05 * prompt, "%.0f of %.0f prompt "
			      "tokens inferred cached on a server without a "
			      "prefix cache", got_cached, prompt);
	} else {
		cr_assert_gt(cached, 0.4 * prompt, "the control failed: the "
			     "cache held only %.0f of %.0f prompt tokens",
			     cached, prompt);
	}
	if (how == PREFIX_SENT)
		cr_expect_eq(exact, n, "cached_tokens exact on %d of %d "
			     "requests", exact, n);
	else if (how == PREFIX_INFERRED)
		cr_expect_leq(fabs(got_cached / cached - 1), 0.10,
			      "inferred %.0f cached tokens, the server had "
			      "%.0f", got_cached, cached);
	/* the prompts repeat: a finding says so where nothing reused them */
	if (how == PREFIX_NO_CACHE)
		cr_expect_not_null(finding(o, "prefix_reuse_low"), "no finding "
				   "on repeated prefixes that no cache reused");
	else
		cr_expect_null(finding(o, "prefix_reuse_low"), "a finding of "
			       "low reuse on a cache that served %.0f%%",
			       100 * cached / prompt);
	for (int k = 0; k < 2; k++) {
		double g = got[k] / (got[0] + got[1]);
		double w = want[k] / (want[0] + want[1]);

		cr_expect_leq(fabs(g / w - 1), 0.05, "tenant %s: %.4f of the "
			      "GPU time attributed, %.4f by the server's "
			      "compute_ns", name[k], g, w);
	}
	cJSON_Delete(o);
}

Test(attribution, shared_prefixes_priced_by_what_was_computed_when_sent)
{
	prefix_tenants(PREFIX_SENT);
}

/*
 * Conversations of four turns, each resending the ones before, to a
 * server whose cache keeps them and does not say so: the prefill the
 * later turns no longer do shows in their cost. Per turn, the attributed
 * prefill time follows the server's own (its prefill entries' time, within
 * 15%), and a turn-4 prompt token costs under three quarters of a turn-1
 * one (the server's own figures put it near half; from one turn to the
 * next its speed drifts too much to compare neighbours).
 */
Test(attribution, later_turns_of_a_conversation_cost_less_per_prompt_token)
{
	static const char *const server[] = { "--prefix-cache", NULL };
	static const char *const opts[] = {
		"--concurrency", "4", "--requests", "64", "--turns", "4",
		"--prompt-len", "90-120", "--max-tokens", "8-12", NULL };
	double got[4] = { 0 }, want[4] = { 0 }, tokens[4] = { 0 };
	double cached[4] = { 0 }, cached_want[4] = { 0 };
	cJSON *load[MAX_TRUTH_REQS], *o;
	const cJSON *r;
	int nload;
	pid_t tt;

	e2e_need_tools();
	int port = start_server(&tt, server);
	wait_load(start_load(port, "load.jsonl", "load.log", opts),
		  "load.log");
	o = finish(tt);
	nload = e2e_read_jsonl("load.jsonl", load, MAX_TRUTH_REQS);
	cJSON_ArrayForEach(r, cJSON_GetObjectItem(o, "requests")) {
		const char *id = e2e_str(r, "id");
		int turn = -1;

		for (int i = 0; i < nload && turn < 0; i++)
			if (!strcmp(e2e_str(load[i], "id"), id))
				turn = (int)e2e_num(load[i], "turn");
		if (turn < 0 || turn > 3)
			continue;
		got[turn] += e2e_num(r, "prefill_gpu_ns");
		want[turn] += truth_prefill_ns(id);
		tokens[turn] += e2e_num(r, "prompt_tokens");
		cached[turn] += fmax(e2e_num_or(r, "cached_tokens", 0), 0);
		if (truth_req(id))
			cached_want[turn] += truth_req(id)->cached_tokens;
	}
	for (int t = 0; t < 4; t++) {
		cr_log_info("turn %d: %.0f prompt tokens, %.0f inferred cached "
			    "(%.0f by the server), prefill %.1f ms attributed "
			    "(%.4f ms a token), %.1f ms by the server", t + 1,
			    tokens[t], cached[t], cached_want[t], got[t] / 1e6,
			    got[t] / 1e6 / tokens[t], want[t] / 1e6);
		cr_assert_gt(tokens[t], 0, "no request of turn %d", t + 1);
	}
	/* The cached counts are logged, not held to 10%: here three prefills
	 * in four are candidates, each saving less than in the tenant mix
	 * above, and the choice of hit or miss falls short on some runs
	 * (turn 2: 56% to 100% of the server's count over 7 runs). */
	cr_expect_eq(cached[0], 0, "first turns cached %.0f tokens", cached[0]);
	for (int t = 0; t < 4; t++)
		cr_expect_leq(fabs(got[t] / want[t] - 1), 0.15, "turn %d: "
			      "prefill %.1f ms attributed, %.1f ms by the "
			      "server", t + 1, got[t] / 1e6, want[t] / 1e6);
	cr_expect_lt(got[3] / tokens[3], 0.75 * got[0] / tokens[0],
		     "a turn-4 prompt token costs %.4f ms, a turn-1 one "
		     "%.4f ms", got[3] / tokens[3] / 1e6,
		     got[0] / tokens[0] / 1e6);
	for (int i = 0; i < nload; i++)
		cJSON_Delete(load[i]);
	cJSON_Delete(o);
}

/* ---- 4. bubbles ------------------------------------------------------ */

Test(attribution, step_delays_show_as_idle_with_demand_at_truth_s_fraction)
{
	static const char *const opts[] = {
		"--concurrency", "4", "--requests", "40", "--prompt-len",
		"16-64", "--max-tokens", "8-32", NULL };
	const cJSON *f;
	double want, got;
	pid_t tt;
	cJSON *o;

	e2e_need_tools();
	static const char *const delay[] = { "--step-delay-ms", "5", NULL };
	int port = start_server(&tt, delay);
	wait_load(start_load(port, "load.jsonl", "load.log", opts),
		  "load.log");
	o = finish(tt);
	want = truth_bubble_ns() / e2e_num(o, "window_ns");
	f = finding(o, "idle_with_demand");
	cr_assert_not_null(f, "no idle_with_demand finding; the truth has "
			   "bubbles for %.1f%% of the wall time", 100 * want);
	got = e2e_num(cJSON_GetObjectItem(f, "evidence"), "fraction_of_wall");
	cr_log_info("idle with demand: %.2f%% of the wall, truth %.2f%%",
		    100 * got, 100 * want);
	cr_expect_leq(fabs(got - want), 0.05, "idle_with_demand %.1f%% of "
		      "the wall, truth's bubbles %.1f%%", 100 * got,
		      100 * want);
	cJSON_Delete(o);
}

/* ---- 4. no demand ------------------------------------------------------ */

static const char *const burst_opts[] = {
	"--concurrency", "4", "--requests", "24", "--prompt-len", "16-64",
	"--max-tokens", "8-24", NULL };

/* Window start and end from the report, as absolute times. */
static void window_of(const cJSON *o, double *a, double *b)
{
	*a = e2e_num(o, "window_start_ns");
	*b = e2e_num(o, "window_end_ns");
}

Test(attribution, idle_gaps_in_the_load_give_idle_without_demand)
{
	const cJSON *f;
	double a, b, want, got;
	pid_t tt;
	cJSON *o;

	e2e_need_tools();
	int port = start_server(&tt, NULL);
	wait_load(start_load(port, "l1.jsonl", "l1.log", burst_opts),
		  "l1.log");
	e2e_msleep(2000);
	wait_load(start_load(port, "l2.jsonl", "l2.log", burst_opts),
		  "l2.log");
	o = finish(tt);
	window_of(o, &a, &b);
	want = truth_no_demand_ns(a, b) / (b - a);
	f = finding(o, "idle_without_demand");
	cr_assert_not_null(f, "no idle_without_demand finding; the truth "
			   "has no request in flight %.1f%% of the wall",
			   100 * want);
	got = e2e_num(cJSON_GetObjectItem(f, "evidence"), "fraction_of_wall");
	cr_log_info("idle without demand: %.2f%% of the wall, truth %.2f%%",
		    100 * got, 100 * want);
	cr_expect_leq(fabs(got - want), 0.05, "idle_without_demand %.1f%% "
		      "of the wall, truth %.1f%%", 100 * got, 100 * want);
	cJSON_Delete(o);
}

Test(attribution, steady_load_gives_no_idle_without_demand)
{
	static const char *const opts[] = {
		"--concurrency", "4", "--duration", "5", "--prompt-len",
		"16-64", "--max-tokens", "8-24", NULL };
	const cJSON *f;
	double a, b, want;
	pid_t tt;
	cJSON *o;

	e2e_need_tools();
	int port = start_server(&tt, NULL);
	wait_load(start_load(port, "load.jsonl", "load.log", opts),
		  "load.log");
	o = finish(tt);
	window_of(o, &a, &b);
	want = truth_no_demand_ns(a, b) / (b - a);
	cr_log_info("steady: no request in flight %.2f%% of the wall (truth)",
		    100 * want);
	cr_assert_lt(want, 0.10, "the control is not steady: no request in "
		     "flight for %.1f%% of the wall by the truth log",
		     100 * want);
	f = finding(o, "idle_without_demand");
	cr_expect_null(f, "idle_without_demand on a steady load: %s",
		       f ? e2e_str(f, "summary") : "");
	cJSON_Delete(o);
}

Test(attribution, shared_prefixes_priced_by_what_was_computed_when_inferred)
{
	prefix_tenants(PREFIX_INFERRED);
}

/* The same prompts to a server without a cache: nothing is inferred. */
Test(attribution, shared_prefixes_without_a_cache_infer_nothing)
{
	prefix_tenants(PREFIX_NO_CACHE);
}

/* ---- 5. a matrix of mixes --------------------------------------------- */

/*
 * Mixes chosen for coverage, not tuned to pass: long prompts with short
 * completions against short with long, batches of 4 and 32, chunked
 * prefill, bubbles between steps, two tenants of unlike lengths at once.
 * Each is checked against the truth log and its figures are printed:
 * requests within 10% of their true share (the goal: 95% on every mix),
 * the p90 error, and each tenant's total against the truth. What fails a
 * mix is below its floor: conservation, every request matched, and half
 * of the requests within 10% (a split by tokens alone, or steps cut
 * wrong, is far below); what is between is logged as the goal missed.
 */
struct mix {
	const char *name;
	const char *server[8];		/* refserver flags */
	const char *load[2][20];	/* one or two loadgen runs */
	int chunk;			/* the server's prefill chunk, or 0 */
	double floor;			/* within 10%, at least; 0: 0.5 */
	bool tokens;			/* steps from the tokens: the step
					   probe off */
};

static int cmp_dbl(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double tenant_err(const cJSON *o, const char *tenant)
{
	double got = 0, want = 0, got_all = 0, want_all = 0;
	const cJSON *r;

	cJSON_ArrayForEach(r, cJSON_GetObjectItem(o, "requests")) {
		const struct truth_req *t = truth_req(e2e_str(r, "id"));

		if (!t)
			continue;
		got_all += e2e_num(r, "gpu_ns");
		want_all += t->compute_ns;
		if (!strcmp(t->tenant, tenant)) {
			got += e2e_num(r, "gpu_ns");
			want += t->compute_ns;
		}
	}
	return want > 0 && got_all > 0 ?
	       (got / got_all) / (want / want_all) - 1 : 0;
}

/* The requests' 90% intervals against the truth. The goal is 85-95%
 * with a median width under 20%; on the development host, over ten runs
 * of the matrix, 73-100% a run and 82-96% pooled a mix (the two tenants
 * of unlike lengths lowest, 82% with steps cut from tokens: a long
 * context slows the other decodes of its batch in the server's log more
 * than the interval's share of a quarter of the context cost allows),
 * with median widths of 4-11%. What fails is a missing interval, one
 * that does not hold its own value, under 30% held, or a width of
 * 100%. */
static void check_intervals(const cJSON *o, const char *name)
{
	static struct e2e_iv v[MAX_TRUTH_REQS];
	const cJSON *r;
	int n = 0;

	cJSON_ArrayForEach(r, cJSON_GetObjectItem(o, "requests")) {
		const struct truth_req *t = truth_req(e2e_str(r, "id"));

		if (!t || n == MAX_TRUTH_REQS)
			continue;
		v[n++] = (struct e2e_iv){ e2e_num(r, "gpu_ns"),
					  e2e_num_or(r, "gpu_ns_lo", -1),
					  e2e_num_or(r, "gpu_ns_hi", -1),
					  t->compute_ns };
	}
	e2e_intervals(v, n, name, 0.3);
}

static void check_mix(const struct mix *m)
{
	static struct share sh[MAX_TRUTH_REQS];
	static double err[MAX_TRUTH_REQS];
	const cJSON *r;
	int n = 0, ok, ok15, want = 0;
	pid_t tt, l[2] = { 0, 0 };
	cJSON *o;

	e2e_need_tools();
	no_step_probe = no_step_probe || m->tokens;
	int port = start_server(&tt, m->server);
	for (int k = 0; k < 2 && m->load[k][0]; k++) {
		char out[32], log[32];

		snprintf(out, sizeof(out), "load%d.jsonl", k);
		snprintf(log, sizeof(log), "load%d.log", k);
		l[k] = start_load(port, out, log, m->load[k]);
		for (int i = 0; m->load[k][i]; i++)
			if (!strcmp(m->load[k][i], "--requests"))
				want += atoi(m->load[k][i + 1]);
	}
	for (int k = 0; k < 2 && l[k]; k++)
		wait_load(l[k], k ? "load1.log" : "load0.log");
	o = finish(tt);
	cJSON_ArrayForEach(r, cJSON_GetObjectItem(o, "requests")) {
		const struct truth_req *t = truth_req(e2e_str(r, "id"));

		if (!t || n == MAX_TRUTH_REQS)
			continue;
		sh[n++] = (struct share){ .id = e2e_str(r, "id"),
					  .gpu_ns = e2e_num(r, "gpu_ns"),
					  .compute_ns = t->compute_ns };
	}
	cr_assert_eq(n, want, "%s: %d of %d requests matched the truth log",
		     m->name, n, want);
	check_intervals(o, m->name);
	ok = within_10pct(sh, n, m->name, &ok15);
	for (int i = 0; i < n; i++)
		err[i] = fabs(sh[i].got / sh[i].want - 1);
	qsort(err, n, sizeof(*err), cmp_dbl);
	double ta = tenant_err(o, "a"), tb = tenant_err(o, "b");

	cr_log_info("mix %s: %d of %d within 10%% (%.0f%%; goal 95%%: %s), "
		    "%d within 15%%, p90 error %.1f%%; tenant a %+.1f%%, b "
		    "%+.1f%% of their true share (goal 3%%: %s)", m->name, ok,
		    n, 100.0 * ok / n, ok >= ceil(0.95 * n) ? "met" : "missed",
		    ok15, 100 * err[(int)(0.9 * (n - 1))], 100 * ta, 100 * tb,
		    fabs(ta) <= 0.03 && fabs(tb) <= 0.03 ? "met" : "missed");
	double floor = m->floor ? m->floor : 0.5;

	cr_expect_geq(ok, (int)ceil(floor * n), "%s: only %d of %d requests "
		      "within 10%% of their true share (floor %.0f%%)", m->name,
		      ok, n, 100 * floor);
	/* what the report inferred of chunked prefill */
	const cJSON *dev = cJSON_GetArrayItem(cJSON_GetObjectItem(o, "devices"),
					      0);
	double chunk = e2e_num(dev, "prefill_chunk_tokens");

	/* the steps: each of the engine's, from its step function, or cut
	   from the tokens */
	cr_expect_str_eq(e2e_str(dev, "steps_source"), no_step_probe ?
			 "tokens" : "probe", "%s: steps cut from the wrong source",
			 m->name);
	cr_log_info("mix %s: %.0f steps cut from the %s, the server ran %d",
		    m->name, e2e_num(dev, "steps"), e2e_str(dev,
		    "steps_source"), truth.nstep);
	if (!no_step_probe)
		cr_expect_eq((int)e2e_num(dev, "steps"), truth.nstep,
			     "%s: %.0f steps from the step probe, the server "
			     "ran %d", m->name, e2e_num(dev, "steps"),
			     truth.nstep);

	cr_log_info("mix %s: prompts inferred prefilled in chunks of %.0f "
		    "tokens (the server's: %d)", m->name, chunk, m->chunk);
	if (m->chunk)
		cr_expect(fabs(chunk / m->chunk - 1) <= 0.25, "%s: chunks of "
			  "%.0f tokens inferred, the server's are %d", m->name,
			  chunk, m->chunk);
	cJSON_Delete(o);
}

#define MIX_LOAD(conc, reqs, tenants, plen, mtok, seed)			\
	{ "--concurrency", conc, "--requests", reqs, "--tenants", tenants,	\
	  "--prompt-len", plen, "--max-tokens", mtok, "--seed", seed, NULL }

static const struct mix mixes[] = {
	{ "long prompts, short completions, batch 8",
	  { "--dim", "256", "--max-batch", "8", NULL },
	  { MIX_LOAD("8", "80", "a:1,b:1", "192-512", "2-8", "11") } },
	{ "short prompts, long completions, batch 32",
	  { "--dim", "256", "--max-batch", "32", NULL },
	  { MIX_LOAD("24", "96", "a:1,b:1", "8-32", "32-80", "12") } },
	{ "two tenants of unlike lengths, batch 12",
	  { "--dim", "256", "--max-batch", "12", NULL },
	  { MIX_LOAD("6", "60", "a:1", "128-384", "4-16", "13"),
	    MIX_LOAD("6", "60", "b:1", "16-48", "24-64", "14") } },
	{ "batch 4, mixed lengths",
	  { "--dim", "256", "--max-batch", "4", NULL },
	  { MIX_LOAD("6", "80", "a:1,b:1", "16-384", "4-48", "15") } },
	/* 15-18% within 10% (p90 error 125%) before chunks were inferred;
	 * 54-84% over six runs with them, 99-100% once the writes of a
	 * chunked engine were kept out of the burst aligner */
	{ "chunked prefill of 64, long prompts",
	  { "--dim", "256", "--max-batch", "16", "--prefill-chunk", "64",
	    NULL },
	  { MIX_LOAD("8", "80", "a:1,b:1", "128-512", "8-32", "16") }, 64 },
	{ "bubbles of 2 ms between steps",
	  { "--dim", "256", "--max-batch", "16", "--step-delay-ms", "2",
	    NULL },
	  { MIX_LOAD("8", "80", "a:1,b:1", "16-256", "4-48", "17") } },
	/* without the step probe: the steps cut from the token writes */
	{ "two tenants of unlike lengths, batch 12, steps from tokens",
	  { "--dim", "256", "--max-batch", "12", NULL },
	  { MIX_LOAD("6", "60", "a:1", "128-384", "4-16", "13"),
	    MIX_LOAD("6", "60", "b:1", "16-48", "24-64", "14") }, 0, 0,
	  true },
	/* batches always full of long contexts: step totals hardly tell a
	 * decode's cost per context token from its cost per token (within
	 * 10%: 89-100% over four runs on the development host, where the
	 * worst fit found no context cost and short contexts were charged
	 * 35-79% too much for their decodes; 91-100%, median 99%, over ten
	 * runs once the decode term had its prior about a prompt token's) */
	{ "full batches of 24, chunked prefill of 128, prompts 64-640",
	  { "--dim", "256", "--max-batch", "24", "--prefill-chunk", "128",
	    NULL },
	  { MIX_LOAD("16", "80", "a:1,b:1", "64-640", "8-64", "21") }, 128 },
	/* chunks seen from the wire alone: a run's first steps, of chunks
	 * alone, write nothing (24-31% within 10% over four runs on the
	 * development host when the chunk size was the largest prompt over
	 * wait, 159 for 64, and the unseen chunks were piled on each
	 * request's last) */
	{ "chunked prefill of 64, long prompts, steps from tokens",
	  { "--dim", "256", "--max-batch", "16", "--prefill-chunk", "64",
	    NULL },
	  { MIX_LOAD("8", "80", "a:1,b:1", "128-512", "8-32", "16") }, 64, 0,
	  true },
	/* streams cut by their clients after the first token: no usage block,
	 * so no prompt token count (29-35% within 10% over two runs on the
	 * development host, the cut ones at -90 to -99%, before their
	 * prompts were estimated from their bytes) */
	{ "a fifth of the streams cut after their first token",
	  { "--dim", "256", "--max-batch", "16", NULL },
	  { { "--concurrency", "8", "--requests", "80", "--tenants",
	      "a:1,b:1", "--prompt-len", "32-256", "--max-tokens", "20-60",
	      "--seed", "43", "--cancel-frac", "0.2", "--allow-errors",
	      NULL } } },
};

Test(attribution, mix_long_prompts_short_completions) { check_mix(&mixes[0]); }
Test(attribution, mix_short_prompts_long_completions) { check_mix(&mixes[1]); }
Test(attribution, mix_two_tenants_of_unlike_lengths) { check_mix(&mixes[2]); }
Test(attribution, mix_batch_4) { check_mix(&mixes[3]); }
Test(attribution, mix_chunked_prefill) { check_mix(&mixes[4]); }
Test(attribution, mix_bubbles_between_steps) { check_mix(&mixes[5]); }
Test(attribution, mix_steps_from_tokens) { check_mix(&mixes[6]); }
Test(attribution, mix_full_batches_of_long_contexts) { check_mix(&mixes[7]); }
Test(attribution, mix_chunked_prefill_from_tokens) { check_mix(&mixes[8]); }
Test(attribution, mix_streams_cut_by_their_clients) { check_mix(&mixes[9]); }
