/*
 * test_faults.c - tokentrace when things go wrong around it: the traced
 * server killed mid-stream, the collector killed while the server serves,
 * a new process taking the traced port, SIGINT and SIGTERM to the
 * collector, and the commands run without privilege.
 *
 * In:  build/tokentrace, build/refserver, build/loadgen; run from the
 *      repository root.
 * Out: Criterion suite "faults".
 * Assumes: root for eBPF (and to switch to the user nobody); each test
 *      skips with the reason otherwise. Every process a test starts is
 *      killed and reaped in the fixture's fini; each test works in its own
 *      temporary folder, removed at the end.
 *
 * A full ring buffer (losses counted, requests marked, no wrong numbers)
 * is pinned by record/stalled_collector_loses_events_counts_them_and_
 * marks_requests in test_record.c; a CUPTI library with no collector
 * listening by the transport tests in tests/cupti/test_transport.c.
 */
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
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

/* The folder is 0755: the tests that run as nobody read and write there. */
static void flt_setup(void)
{
	e2e_setup("faults", 0755);
}

static void flt_teardown(void)
{
	e2e_teardown(SIGKILL, false);
}

TestSuite(faults, .init = flt_setup, .fini = flt_teardown, .timeout = 120);

/* ---- servers, tracer, load ----------------------------------------------- */

/*
 * Starts build/refserver --chunked (streams end with a terminal chunk, so
 * a cut stream is told from a whole one) on port (0: a free one) with one
 * extra flag pair; returns its pid, sets *bound.
 */
static pid_t flt_refserver(int port, const char *f1, const char *v1,
			   int *bound)
{
	char pf[128], ps[16], name[32];
	char *argv[12] = { "build/refserver", "--port", ps, "--port-file", pf,
			   "--chunked", "--max-batch", "16" };
	int n = 8;
	pid_t p;

	snprintf(ps, sizeof(ps), "%d", port);
	snprintf(name, sizeof(name), "port.%d", port);
	e2e_path(pf, sizeof(pf), name);
	unlink(pf);
	if (f1) {
		argv[n++] = (char *)f1;
		argv[n++] = (char *)v1;
	}
	argv[n] = NULL;
	p = e2e_spawn(argv, "server.out", "server.err");
	*bound = e2e_wait_port(name, 0, 10000, "server.err", "refserver");
	return p;
}

/* `tokentrace record --port P -o DIR/trace.tt`, once it traces. */
static pid_t flt_record(int port)
{
	char ps[16], out[128];
	char *argv[] = { "build/tokentrace", "record", "--port", ps, "-o",
			 out, NULL };
	pid_t p;

	snprintf(ps, sizeof(ps), "%d", port);
	e2e_path(out, sizeof(out), "trace.tt");
	p = e2e_spawn(argv, "rec.out", "rec.err");
	if (!e2e_wait_text("rec.err", "tracing 1 process(es)", 20000)) {
		e2e_show("rec.err");
		cr_assert_fail("tokentrace record did not start in 20 s");
	}
	return p;
}

/* sig to the tracer; it must flush and exit 0 (detaching the probes waits
 * for RCU grace periods: seconds on a busy host). */
static void flt_record_stop(pid_t p, int sig)
{
	int st;

	e2e_msleep(300);
	st = e2e_stop(p, sig, 30000);
	if (e2e_code(st) != 0)
		e2e_show("rec.err");
	cr_assert_eq(e2e_code(st), 0, "tokentrace record did not exit 0 "
		     "after signal %d (status %d)", sig, st);
}

/* loadgen argv for port with tenant, n requests, concurrency c, tokens,
 * into DIR/out; extra flags appended. */
static pid_t flt_loadgen(int port, const char *tenant, int n, int c,
			 const char *tokens, const char *out,
			 const char *extra)
{
	static char url[64], ns[16], cs[16], ten[64], op[128], err[64];
	char *argv[24] = { "build/loadgen", "--url", url, "--requests", ns,
			   "--concurrency", cs, "--tenants", ten,
			   "--max-tokens", (char *)tokens, "--stream",
			   "--out", op, "--quiet" };
	int k = 15;

	snprintf(url, sizeof(url), "http://127.0.0.1:%d", port);
	snprintf(ns, sizeof(ns), "%d", n);
	snprintf(cs, sizeof(cs), "%d", c);
	snprintf(ten, sizeof(ten), "%s:1", tenant);
	snprintf(err, sizeof(err), "%s.err", out);
	e2e_path(op, sizeof(op), out);
	if (extra)
		argv[k++] = (char *)extra;
	argv[k] = NULL;
	return e2e_spawn(argv, "loadgen.out", err);
}

static int flt_loadgen_rc(pid_t p, const char *out)
{
	char err[64];
	int rc = e2e_code(e2e_reap(p, 60000));

	if (rc != 0) {
		snprintf(err, sizeof(err), "%s.err", out);
		e2e_show(err);
	}
	return rc;
}

/* `tokentrace report DIR/trace.tt --format json`, parsed. */
static cJSON *flt_report(void)
{
	char tr[128];
	char *argv[] = { "build/tokentrace", "report", tr, "--format", "json",
			 NULL };

	e2e_path(tr, sizeof(tr), "trace.tt");
	cr_assert_eq(e2e_run(argv, "report.json", "report.err", 60000), 0,
		     "tokentrace report of the trace failed");
	return e2e_load_json("report.json", NULL);
}

static bool flt_has_flag(const cJSON *r, const char *flag)
{
	const cJSON *f;

	cJSON_ArrayForEach(f, cJSON_GetObjectItem(r, "flags"))
		if (cJSON_IsString(f) && !strcmp(f->valuestring, flag))
			return true;
	return false;
}

/* Requests of tenant in the report; *whole those that ended complete with
 * want_tokens completion tokens (0: any). */
static int flt_count(const cJSON *rep, const char *tenant, int want_tokens,
		     int *whole)
{
	const cJSON *r;
	int n = 0;

	*whole = 0;
	cJSON_ArrayForEach(r, cJSON_GetObjectItem(rep, "requests")) {
		if (strcmp(e2e_str_or(r, "tenant"), tenant))
			continue;
		n++;
		if (!strcmp(e2e_str_or(r, "end"), "complete") &&
		    !flt_has_flag(r, "aborted") &&
		    (!want_tokens ||
		     e2e_num_or(r, "completion_tokens", -1) == want_tokens))
			(*whole)++;
	}
	return n;
}

/* ---- the server dies ----------------------------------------------------- */

Test(faults, server_killed_mid_stream_ends_only_its_open_requests)
{
	int port, whole, n;
	pid_t srv, rec, lg;
	const cJSON *r;
	cJSON *rep;

	e2e_need_root();
	/* 30 ms a step: 400-token streams are open for seconds */
	srv = flt_refserver(0, "--step-delay-ms", "30", &port);
	rec = flt_record(port);
	cr_assert_eq(flt_loadgen_rc(flt_loadgen(port, "before", 6, 3, "4",
						"before.jsonl", NULL),
				    "before.jsonl"), 0);
	lg = flt_loadgen(port, "cut", 4, 4, "400", "cut.jsonl",
			 "--allow-errors");
	e2e_msleep(1500);
	kill(srv, SIGKILL);
	e2e_reap(srv, 5000);
	flt_loadgen_rc(lg, "cut.jsonl");
	/* the sweep (each second) ends the dead server's connections */
	e2e_msleep(2500);
	cr_assert_eq(kill(rec, 0), 0, "record died with its target");
	flt_record_stop(rec, SIGINT);
	cr_expect(e2e_file_has("rec.err", "request(s) recorded"),
		  "no report printed at the end");
	rep = flt_report();
	n = flt_count(rep, "before", 4, &whole);
	cr_expect_eq(n, 6, "requests before the kill: %d of 6 traced", n);
	cr_expect_eq(whole, 6, "requests before the kill disturbed: %d of 6 "
		     "whole", whole);
	n = flt_count(rep, "cut", 0, &whole);
	cr_expect_eq(n, 4, "cut streams traced: %d of 4", n);
	cr_expect_eq(whole, 0, "%d cut stream(s) reported whole", whole);
	cJSON_ArrayForEach(r, cJSON_GetObjectItem(rep, "requests")) {
		if (strcmp(e2e_str_or(r, "tenant"), "cut"))
			continue;
		cr_log_info("cut stream: end %s, %g token events",
			    e2e_str_or(r, "end"),
			    e2e_num_or(r, "token_events", -1));
		/* ended by the sweep when the server died, not left open
		 * until the collector stopped */
		cr_expect_str_eq(e2e_str_or(r, "end"), "client_gone");
		cr_expect_gt(e2e_num_or(r, "token_events", -1), 0);
	}
	cJSON_Delete(rep);
}

/* ---- the collector dies -------------------------------------------------- */

/* Requests the server's truth log has done. */
static int flt_truth_requests(void)
{
	char *t = e2e_slurp("truth.jsonl");
	int n = 0;

	for (char *p = t; p && (p = strstr(p, "\"type\":\"request\"")); p++)
		n++;
	free(t);
	return n;
}

Test(faults, collector_killed_leaves_the_server_serving)
{
	static const char *const slow[] = { "--max-batch", "16",
					    "--step-delay-ms", "20", NULL };
	int port, done;
	pid_t srv, rec, lg;

	e2e_need_root();
	/* 20 ms a step: the 40 requests take about 3 s, so the kill, made
	 * once the server's truth log has the first of them done, lands
	 * while the rest are served */
	srv = e2e_refserver(slow, &port);
	rec = flt_record(port);
	lg = flt_loadgen(port, "during", 40, 4, "16", "during.jsonl", NULL);
	cr_assert(e2e_wait_text("truth.jsonl", "\"type\":\"request\"",
				30000), "no request finished");
	kill(rec, SIGKILL);
	done = flt_truth_requests();
	e2e_reap(rec, 30000);	/* its probes go in their own time */
	cr_assert_lt(done, 40, "the load was over (%d requests) before the "
		     "collector was killed", done);
	cr_expect_eq(flt_loadgen_rc(lg, "during.jsonl"), 0,
		     "requests failed while the collector was killed");
	cr_expect_eq(flt_loadgen_rc(flt_loadgen(port, "after", 20, 4, "8",
						"after.jsonl", NULL),
				    "after.jsonl"), 0,
		     "the server does not serve after the collector died");
	cr_expect_eq(kill(srv, 0), 0, "the server died with the collector");
}

/* ---- a new process on the port ------------------------------------------- */

Test(faults, a_new_server_on_the_port_is_followed)
{
	int port, again, whole, n;
	pid_t first, second, rec;
	const cJSON *r;
	cJSON *rep;

	e2e_need_root();
	first = flt_refserver(0, NULL, NULL, &port);
	rec = flt_record(port);
	cr_assert_eq(flt_loadgen_rc(flt_loadgen(port, "first", 5, 1, "4",
						"first.jsonl", NULL),
				    "first.jsonl"), 0);
	cr_assert_eq(e2e_code(e2e_stop(first, SIGTERM, 5000)), 0);
	second = flt_refserver(port, NULL, NULL, &again);
	cr_assert_eq(again, port);
	/* the port is looked at every two seconds; the tracer says when it
	 * has the new server's hooks in place */
	cr_assert(e2e_wait_text("rec.err", "now tracing pid", 15000),
		  "the new server was not picked up: %s",
		  e2e_tail("rec.err", 4096));
	cr_assert_eq(flt_loadgen_rc(flt_loadgen(port, "second", 5, 1, "4",
						"second.jsonl", NULL),
				    "second.jsonl"), 0);
	flt_record_stop(rec, SIGINT);
	rep = flt_report();
	n = flt_count(rep, "first", 4, &whole);
	cr_expect_eq(whole, 5, "first server: %d of 5 whole (%d seen)", whole,
		     n);
	n = flt_count(rep, "second", 4, &whole);
	cr_expect_eq(whole, 5, "second server: %d of 5 whole (%d seen)",
		     whole, n);
	cJSON_ArrayForEach(r, cJSON_GetObjectItem(rep, "requests"))
		if (!strcmp(e2e_str_or(r, "tenant"), "second"))
			cr_expect_eq(e2e_num_or(r, "pid", -1), second,
				     "a second-server request from pid %g",
				     e2e_num_or(r, "pid", -1));
	cJSON_Delete(rep);
}

/* ---- signals ------------------------------------------------------------- */

static void flt_signal_flushes(int sig)
{
	int port, whole, n;
	pid_t rec;
	cJSON *rep;

	e2e_need_root();
	flt_refserver(0, NULL, NULL, &port);
	rec = flt_record(port);
	cr_assert_eq(flt_loadgen_rc(flt_loadgen(port, "sig", 7, 2, "6",
						"sig.jsonl", NULL),
				    "sig.jsonl"), 0);
	/* no --duration, no tick awaited: the signal alone ends the run */
	flt_record_stop(rec, sig);
	cr_expect(e2e_file_has("rec.err", "7 request(s) recorded"),
		  "the end-of-run counts are missing");
	cr_expect(e2e_file_has("rec.err", "trace in"),
		  "the trace was not said to be complete");
	rep = flt_report();
	n = flt_count(rep, "sig", 6, &whole);
	cr_expect_eq(whole, 7, "%d of 7 requests whole in the trace (%d seen)",
		     whole, n);
	cJSON_Delete(rep);
}

Test(faults, sigint_flushes_the_trace_and_prints_the_report)
{
	flt_signal_flushes(SIGINT);
}

Test(faults, sigterm_flushes_the_trace_and_prints_the_report)
{
	flt_signal_flushes(SIGTERM);
}

Test(faults, run_stopped_by_sigint_flushes_its_trace)
{
	char tr[128], pf[128];
	char *argv[] = { "build/tokentrace", "run", "--compute", "cpu", "-o",
			 tr, "--", "build/refserver", "--port", "0",
			 "--port-file", pf, NULL };
	int port = 0, whole, n, st;
	pid_t run;
	cJSON *rep;

	e2e_need_root();
	e2e_path(tr, sizeof(tr), "trace.tt");
	e2e_path(pf, sizeof(pf), "run.port");
	run = e2e_spawn(argv, "run.out", "run.err");
	port = e2e_wait_port("run.port", 0, 20000, "run.err", "run");
	cr_assert_eq(flt_loadgen_rc(flt_loadgen(port, "run", 5, 1, "4",
						"run.jsonl", NULL),
				    "run.jsonl"), 0);
	e2e_msleep(300);
	st = e2e_stop(run, SIGINT, 30000);
	if (!WIFEXITED(st))
		e2e_show("run.err");
	cr_assert(st != -1 && WIFEXITED(st), "run did not exit after SIGINT");
	cr_expect(e2e_file_has("run.err", "trace in"), "no trace said");
	rep = flt_report();
	n = flt_count(rep, "run", 4, &whole);
	cr_expect_eq(whole, 5, "%d of 5 requests whole (%d seen)", whole, n);
	cJSON_Delete(rep);
}

/* ---- privileges ---------------------------------------------------------- */

static void flt_need_root_to_drop(void)
{
	if (geteuid() != 0)
		e2e_skip("needs root to switch to the user nobody");
}

Test(faults, top_without_privilege_exits_3_with_one_message)
{
	char *argv[] = { "build/tokentrace", "top", "--pid", "1",
			 "--duration", "1", NULL };
	int rc;

	flt_need_root_to_drop();
	argv[0] = (char *)e2e_bin_for_anyone("tokentrace");
	rc = e2e_run_ex(argv, "top.out", "top.err", 20000, 65534);
	if (rc != 3)
		e2e_show("top.err");
	cr_expect_eq(rc, 3, "top as nobody exited %d", rc);
	cr_expect(e2e_file_has("top.err", "root"),
		  "the message does not say root is needed");
}

Test(faults, record_and_run_without_privilege_say_why)
{
	char *rec[] = { "build/tokentrace", "record", "--pid", "1",
			"--duration", "1", NULL };
	char *run[] = { "build/tokentrace", "run", "--", "true", NULL };

	flt_need_root_to_drop();
	rec[0] = run[0] = (char *)e2e_bin_for_anyone("tokentrace");
	cr_expect_eq(e2e_run_ex(rec, "rec.out", "rec.err", 20000, 65534), 3);
	cr_expect(e2e_file_has("rec.err", "root"), "record: no reason given");
	cr_expect_eq(e2e_run_ex(run, "run.out", "run.err", 20000, 65534), 3);
	cr_expect(e2e_file_has("run.err", "root"), "run: no reason given");
}

Test(faults, report_of_a_trace_needs_no_privilege)
{
	char tr[128], copy[128], cmd[512];
	char *argv[] = { "build/tokentrace", "report", copy, "--format",
			 "json", NULL };
	int port, rc;
	pid_t rec;
	cJSON *o;

	e2e_need_root();
	flt_refserver(0, NULL, NULL, &port);
	rec = flt_record(port);
	cr_assert_eq(flt_loadgen_rc(flt_loadgen(port, "anyone", 3, 1, "4",
						"anyone.jsonl", NULL),
				    "anyone.jsonl"), 0);
	flt_record_stop(rec, SIGINT);
	e2e_path(tr, sizeof(tr), "trace.tt");
	e2e_path(copy, sizeof(copy), "shared.tt");
	snprintf(cmd, sizeof(cmd), "cp '%s' '%s' && chmod 0644 '%s'", tr, copy,
		 copy);
	cr_assert_eq(system(cmd), 0);
	argv[0] = (char *)e2e_bin_for_anyone("tokentrace");
	rc = e2e_run_ex(argv, "nobody.json", "nobody.err", 30000, 65534);
	if (rc)
		e2e_show("nobody.err");
	cr_assert_eq(rc, 0, "report as nobody exited %d", rc);
	o = e2e_load_json("nobody.json", NULL);
	cr_expect_eq(cJSON_GetArraySize(cJSON_GetObjectItem(o, "requests")), 3);
	cJSON_Delete(o);
}

/* ---- memory limits ------------------------------------------------------- */

Test(faults, record_over_its_memory_limit_counts_what_it_did_not_keep)
{
	char ps[16], out[128], sum[128], buf[65536];
	char *argv[] = { "build/tokentrace", "record", "--port", ps, "-o", out,
			 "--summary", sum, "--max-requests", "5", NULL };
	const cJSON *los;
	int port, whole;
	cJSON *o;
	size_t n;
	pid_t rec;
	FILE *f;

	e2e_need_root();
	flt_refserver(0, NULL, NULL, &port);
	snprintf(ps, sizeof(ps), "%d", port);
	e2e_path(out, sizeof(out), "rec.jsonl");
	e2e_path(sum, sizeof(sum), "summary.json");
	rec = e2e_spawn(argv, "rec.out", "rec.err");
	if (!e2e_wait_text("rec.err", "tracing 1 process(es)", 20000)) {
		e2e_show("rec.err");
		cr_assert_fail("tokentrace record did not start in 20 s");
	}
	cr_assert_eq(flt_loadgen_rc(flt_loadgen(port, "many", 12, 2, "4",
						"many.jsonl", NULL),
				    "many.jsonl"), 0);
	flt_record_stop(rec, SIGINT);
	cr_expect(e2e_file_has("rec.err", "memory limit: 7 request(s)"),
		  "the requests not kept were not said");
	o = e2e_load_json("summary.json", NULL);
	cr_expect_eq(flt_count(o, "many", 4, &whole), 5,
		     "the report kept other than 5 requests");
	los = cJSON_GetObjectItem(o, "losses");
	cr_expect_eq(e2e_num_or(los, "requests_not_kept", -1), 7);
	cr_expect_eq(e2e_num_or(los, "intervals_not_kept", -1), 0);
	cJSON_Delete(o);
	/* the JSON lines still have every request: the limit is the store's */
	n = 0;
	f = fopen(out, "r");
	cr_assert(f);
	while (fgets(buf, sizeof(buf), f))
		n++;
	fclose(f);
	cr_expect_eq(n, 12, "%zu JSON lines of 12 requests", n);
}
