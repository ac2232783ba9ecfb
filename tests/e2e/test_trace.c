/*
 * test_trace.c - trace files end to end: `tokentrace run -o T.tt` of the
 * reference server under load, then `tokentrace report T.tt` gives the
 * numbers the run's own --summary gave; a run killed with SIGKILL leaves a
 * trace that still reports.
 *
 * In:  build/tokentrace, build/refserver, build/loadgen (run from the
 *      repository root).
 * Out: Criterion suite "trace".
 * Assumes: root for `tokentrace run` (skipped with the reason otherwise);
 *      loopback TCP, ports picked by the server. Every process a test
 *      starts is killed and reaped in fini; each test has its own folder.
 */
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cJSON.h>
#include <criterion/criterion.h>

#include "harness.h"

static void setup(void)
{
	e2e_setup("trace", 0);
}

static void teardown(void)
{
	e2e_teardown(SIGKILL, false);
}

/* `tokentrace report T --format json -o out`: its exit code. */
static int report_json(const char *trace, const char *out, const char *log)
{
	char t[128], o[128];
	char *argv[] = { "build/tokentrace", "report", t, "--format", "json",
			 "-o", o, NULL };

	snprintf(t, sizeof(t), "%s", e2e_tpath(trace));
	snprintf(o, sizeof(o), "%s", e2e_tpath(out));
	return e2e_exit_of(e2e_reap(e2e_spawn(argv, log, NULL), 60000));
}

static const cJSON *by_name(const cJSON *arr, const char *name)
{
	const cJSON *x;

	cJSON_ArrayForEach(x, arr)
		if (!strcmp(cJSON_GetObjectItem(x, "name")->valuestring, name))
			return x;
	return NULL;
}

static void same_devices(const cJSON *s, const cJSON *r)
{
	const cJSON *d;

	cr_expect_eq(e2e_num(s, "window_ns"), e2e_num(r, "window_ns"));
	cJSON_ArrayForEach(d, cJSON_GetObjectItem(s, "devices")) {
		const char *n = cJSON_GetObjectItem(d, "name")->valuestring;
		const cJSON *e = by_name(cJSON_GetObjectItem(r, "devices"), n);

		cr_assert_not_null(e, "device %s not in the trace's report", n);
		cr_expect_eq(e2e_num(d, "busy_ns"), e2e_num(e, "busy_ns"),
			     "%s busy", n);
		cr_expect_eq(e2e_num(d, "idle_ns"), e2e_num(e, "idle_ns"),
			     "%s idle", n);
	}
}

static void same_tenants(const cJSON *s, const cJSON *r)
{
	const cJSON *t;
	int n = 0;

	cJSON_ArrayForEach(t, cJSON_GetObjectItem(s, "tenants")) {
		const char *name = cJSON_GetObjectItem(t, "name")->valuestring;
		const cJSON *e = by_name(cJSON_GetObjectItem(r, "tenants"),
					 name);

		cr_assert_not_null(e, "tenant %s missing", name);
		cr_expect_eq(e2e_num(t, "requests"), e2e_num(e, "requests"));
		cr_expect_eq(e2e_num(t, "gpu_ns"), e2e_num(e, "gpu_ns"), "%s",
			     name);
		cr_expect_float_eq(e2e_num(t, "cost_usd"),
				   e2e_num(e, "cost_usd"),
				   1e-12, "%s cost", name);
		n++;
	}
	cr_expect_geq(n, 2, "tenants a and b");
}

/* Sum of request gpu_ns + unattributed_ns == busy of the attributed
 * device(s). */
static void conservation(const cJSON *r)
{
	const cJSON *q, *d;
	double sum = 0, busy = 0;

	cJSON_ArrayForEach(q, cJSON_GetObjectItem(r, "requests"))
		sum += e2e_num(q, "gpu_ns");
	cJSON_ArrayForEach(d, cJSON_GetObjectItem(r, "devices"))
		if (cJSON_IsTrue(cJSON_GetObjectItem(d, "attributed")))
			busy += e2e_num(d, "busy_ns");
	cr_expect_gt(busy, 0);
	cr_expect_eq(sum + e2e_num(r, "unattributed_ns"), busy,
		     "%.0f + %.0f != %.0f", sum, e2e_num(r, "unattributed_ns"),
		     busy);
}

/* Every request the client saw is in the report with its tokens. */
static void client_requests_found(const cJSON *r)
{
	char *text = e2e_slurp("load.jsonl"), *line, *save = NULL;
	int n = 0;

	cr_assert_not_null(text, "no loadgen output");
	for (line = strtok_r(text, "\n", &save); line;
	     line = strtok_r(NULL, "\n", &save)) {
		cJSON *c = cJSON_Parse(line);
		const char *id = cJSON_GetObjectItem(c, "id")->valuestring;
		const cJSON *q, *hit = NULL;

		cJSON_ArrayForEach(q, cJSON_GetObjectItem(r, "requests")) {
			const cJSON *qi = cJSON_GetObjectItem(q, "id");

			if (cJSON_IsString(qi) && !strcmp(qi->valuestring, id))
				hit = q;
		}
		cr_expect_not_null(hit, "client request %s not in the report",
				   id);
		if (hit)
			cr_expect_eq(e2e_num(hit, "completion_tokens"),
				     e2e_num(c, "completion_tokens"), "%s", id);
		cJSON_Delete(c);
		n++;
	}
	cr_expect_eq(n, 60);
	free(text);
}

TestSuite(trace, .init = setup, .fini = teardown, .timeout = 120);

Test(trace, report_of_the_trace_equals_the_run_s_summary)
{
	char pf[128], tf[128], url[96], out[128], tt_path[128], sum[128];
	char *argv[] = { "build/tokentrace", "run", "--compute", "cpu", "-o",
			 tt_path, "--summary", sum, "--", "build/refserver",
			 "--port", "0", "--port-file", pf, "--truth", tf,
			 NULL };
	char *lg[] = { "build/loadgen", "--url", url, "--concurrency", "4",
		       "--requests", "60", "--stream", "--tenants", "a:1,b:1",
		       "--out", out, "--quiet", NULL };
	struct stat st;
	cJSON *s, *r;
	pid_t tt;

	e2e_need_tools();
	snprintf(pf, sizeof(pf), "%s", e2e_tpath("port"));
	snprintf(tf, sizeof(tf), "%s", e2e_tpath("truth.jsonl"));
	snprintf(out, sizeof(out), "%s", e2e_tpath("load.jsonl"));
	snprintf(tt_path, sizeof(tt_path), "%s", e2e_tpath("T.tt"));
	snprintf(sum, sizeof(sum), "%s", e2e_tpath("S.json"));
	tt = e2e_spawn(argv, "run.log", NULL);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/completions",
		 e2e_wait_port("port", tt, 15000, "run.log", "run"));
	cr_assert_eq(e2e_exit_of(e2e_reap(e2e_spawn(lg, "load.log", NULL),
					  60000)), 0,
		     "loadgen failed: %s", e2e_tail("load.log", 4095));
	kill(tt, SIGINT);
	cr_assert_eq(e2e_exit_of(e2e_reap(tt, 20000)), 0, "run: %s",
		     e2e_tail("run.log", 4095));
	cr_assert_eq(stat(e2e_tpath("T.tt"), &st), 0, "no trace file");
	cr_expect_eq(st.st_mode & 0777, 0600, "trace mode %o",
		     st.st_mode & 0777);
	cr_assert_eq(report_json("T.tt", "R.json", "report.log"), 0,
		     "report: %s", e2e_tail("report.log", 4095));
	s = e2e_load_json("S.json", NULL);
	r = e2e_load_json("R.json", NULL);
	same_devices(s, r);
	cr_expect_eq(cJSON_GetArraySize(cJSON_GetObjectItem(s, "requests")),
		     cJSON_GetArraySize(cJSON_GetObjectItem(r, "requests")));
	cr_expect_eq(e2e_num(s, "unattributed_ns"),
		     e2e_num(r, "unattributed_ns"));
	same_tenants(s, r);
	conservation(r);
	client_requests_found(r);
	cr_expect(cJSON_IsTrue(cJSON_GetObjectItem(cJSON_GetObjectItem(r,
		  "trace"), "window_closed")));
	cr_log_info("trace: %lld bytes for %d requests over %.2f s",
		    (long long)st.st_size,
		    cJSON_GetArraySize(cJSON_GetObjectItem(r, "requests")),
		    e2e_num(r, "window_ns") / 1e9);
	cJSON_Delete(s);
	cJSON_Delete(r);
}

/* The child of pid (tokentrace run's server), or 0. */
static pid_t child_of(pid_t pid)
{
	char p[64];
	int c = 0;
	FILE *f;

	snprintf(p, sizeof(p), "/proc/%d/task/%d/children", pid, pid);
	f = fopen(p, "r");
	if (!f)
		return 0;
	if (fscanf(f, "%d", &c) != 1)
		c = 0;
	fclose(f);
	return c;
}

Test(trace, a_run_killed_with_sigkill_leaves_a_trace_that_reports)
{
	char pf[128], tf[128], url[96], out[128], tt_path[128];
	char *argv[] = { "build/tokentrace", "run", "--compute", "cpu", "-o",
			 tt_path, "--", "build/refserver", "--port", "0",
			 "--port-file", pf, "--truth", tf, NULL };
	char *lg[] = { "build/loadgen", "--url", url, "--concurrency", "2",
		       "--duration", "5", "--stream", "--out", out,
		       "--quiet", "--allow-errors", "--timeout", "3", NULL };
	pid_t tt, server, load;
	const cJSON *t;
	cJSON *r;

	e2e_need_tools();
	snprintf(pf, sizeof(pf), "%s", e2e_tpath("port"));
	snprintf(tf, sizeof(tf), "%s", e2e_tpath("truth.jsonl"));
	snprintf(out, sizeof(out), "%s", e2e_tpath("load.jsonl"));
	snprintf(tt_path, sizeof(tt_path), "%s", e2e_tpath("K.tt"));
	tt = e2e_spawn(argv, "run.log", NULL);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/completions",
		 e2e_wait_port("port", tt, 15000, "run.log", "run"));
	server = child_of(tt);
	cr_assert_gt(server, 0, "no server process under the run");
	/* it outlives a killed run: fini kills it */
	e2e_track(server, true);
	load = e2e_spawn(lg, "load.log", NULL);
	/* killed once the trace, read while it is written, has two whole
	 * blocks (a tick each second writes one) holding over a second of
	 * served requests and the server's CPU time: what the report of the
	 * killed run's trace must then still show (the first blocks can hold
	 * the start alone on a slow host) */
	for (int w = 0;; w += 200) {
		double ok = -1, win = 0, busy = 0;
		int nreq = 0;

		if (report_json("K.tt", "R0.json", "r0.log") == 0) {
			cJSON *r0 = e2e_load_json("R0.json", NULL);
			const cJSON *d;

			ok = e2e_num_or(cJSON_GetObjectItem(r0, "trace"),
					"blocks_ok", -1);
			win = e2e_num_or(r0, "window_ns", 0);
			nreq = cJSON_GetArraySize(cJSON_GetObjectItem(r0,
						  "requests"));
			cJSON_ArrayForEach(d, cJSON_GetObjectItem(r0,
								  "devices"))
				if (cJSON_IsTrue(cJSON_GetObjectItem(d,
						 "attributed")))
					busy += e2e_num_or(d, "busy_ns", 0);
			cJSON_Delete(r0);
		}
		if (ok >= 2 && win > 1e9 && nreq > 0 && busy > 0)
			break;
		cr_assert_lt(w, 30000, "the running trace never held two "
			     "blocks of a second of work (%g blocks, window "
			     "%.0f ns, %d requests, busy %.0f ns)", ok, win,
			     nreq, busy);
		e2e_msleep(200);
	}
	kill(tt, SIGKILL);
	e2e_reap(tt, 5000);
	kill(server, SIGKILL);
	kill(load, SIGKILL);
	e2e_reap(load, 5000);
	cr_assert_eq(report_json("K.tt", "R.json", "report.log"), 0,
		     "report of a killed run's trace: %s",
		     e2e_tail("report.log", 4095));
	r = e2e_load_json("R.json", NULL);
	t = cJSON_GetObjectItem(r, "trace");
	cr_expect_geq(e2e_num(t, "blocks_ok"), 2);
	cr_expect(cJSON_IsFalse(cJSON_GetObjectItem(t, "window_closed")),
		  "a killed run cannot have closed its window");
	cr_expect_leq(e2e_num(cJSON_GetObjectItem(cJSON_GetObjectItem(r,
		      "losses"),
		      "trace"), "blocks"), 1, "only the cut block is lost");
	cr_expect_gt(e2e_num(r, "window_ns"), 1e9);
	cr_expect_gt(cJSON_GetArraySize(cJSON_GetObjectItem(r, "requests")),
		     0, "requests finished before the kill are in the trace");
	conservation(r);
	cr_log_info("killed run: %.0f blocks read, report: %s",
		    e2e_num(t, "blocks_ok"), e2e_tail("report.log", 4095));
	cJSON_Delete(r);
}
