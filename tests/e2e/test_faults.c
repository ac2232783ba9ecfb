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
 * A full ring buffer under a burst (losses counted, requests marked, no
 * wrong numbers) is pinned by record/tiny_ring_buffer_reports_losses_and_
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

#define FLT_MAX_PIDS	8

static pid_t flt_pids[FLT_MAX_PIDS];
static char flt_dir[64];

/* ---- processes ----------------------------------------------------------- */

static void flt_msleep(int ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

static void flt_track(pid_t p, bool on)
{
	for (int i = 0; i < FLT_MAX_PIDS; i++) {
		if (on && !flt_pids[i]) {
			flt_pids[i] = p;
			return;
		}
		if (!on && flt_pids[i] == p)
			flt_pids[i] = 0;
	}
}

/* Waits for p up to ms; its wait status, or -1 if it still runs. */
static int flt_reap(pid_t p, int ms)
{
	int st;

	for (int waited = 0;; waited += 10) {
		pid_t r = waitpid(p, &st, WNOHANG);

		if (r == p) {
			flt_track(p, false);
			return st;
		}
		if (r < 0 || waited >= ms)
			return -1;
		flt_msleep(10);
	}
}

/* sig, then SIGKILL after ms; the wait status. */
static int flt_stop(pid_t p, int sig, int ms)
{
	int st;

	if (p <= 0)
		return -1;
	kill(p, sig);
	st = flt_reap(p, ms);
	if (st == -1) {
		kill(p, SIGKILL);
		st = flt_reap(p, 3000);
	}
	return st;
}

static void flt_path(char *out, size_t n, const char *name)
{
	cr_assert(flt_dir[0], "the test folder was not made");
	snprintf(out, n, "%s/%s", flt_dir, name);
}

/* Starts argv with stdout and stderr in files of the test folder; as the
 * user nobody when as_nobody. */
static pid_t flt_spawn_as(char *const argv[], const char *out,
			  const char *err, bool as_nobody)
{
	char o[128], e[128];
	pid_t p;

	flt_path(o, sizeof(o), out);
	flt_path(e, sizeof(e), err);
	p = fork();
	cr_assert(p >= 0, "fork failed: %s", strerror(errno));
	if (p == 0) {
		if (!freopen(o, "w", stdout) || !freopen(e, "w", stderr))
			_exit(126);
		if (as_nobody && (setgid(65534) || setuid(65534)))
			_exit(125);
		execvp(argv[0], argv);
		fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	flt_track(p, true);
	return p;
}

static pid_t flt_spawn(char *const argv[], const char *out, const char *err)
{
	return flt_spawn_as(argv, out, err, false);
}

/* The exit code of a wait status, or -1 when it did not exit. */
static int flt_code(int st)
{
	return st != -1 && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Runs argv to its end (at most ms); its exit code, or -1. */
static int flt_run_as(char *const argv[], const char *out, const char *err,
		      int ms, bool as_nobody)
{
	pid_t p = flt_spawn_as(argv, out, err, as_nobody);
	int st = flt_reap(p, ms);

	if (st == -1) {
		flt_stop(p, SIGKILL, 3000);
		return -1;
	}
	return flt_code(st);
}

static int flt_run(char *const argv[], const char *out, const char *err,
		   int ms)
{
	return flt_run_as(argv, out, err, ms, false);
}

static bool flt_file_has(const char *name, const char *text)
{
	char p[128], buf[16384];
	size_t n;
	FILE *f;

	flt_path(p, sizeof(p), name);
	f = fopen(p, "r");
	if (!f)
		return false;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = 0;
	fclose(f);
	return strstr(buf, text) != NULL;
}

static void flt_show(const char *name)
{
	char p[128], line[512];
	FILE *f;

	flt_path(p, sizeof(p), name);
	f = fopen(p, "r");
	if (!f)
		return;
	while (fgets(line, sizeof(line), f))
		cr_log_info("%s: %s", name, line);
	fclose(f);
}

static bool flt_wait_text(const char *name, const char *text, int ms)
{
	for (int waited = 0; waited < ms; waited += 20) {
		if (flt_file_has(name, text))
			return true;
		flt_msleep(20);
	}
	return false;
}

static void flt_setup(void)
{
	memset(flt_pids, 0, sizeof(flt_pids));
	snprintf(flt_dir, sizeof(flt_dir), "/tmp/tt-faults-XXXXXX");
	cr_assert(mkdtemp(flt_dir), "mkdtemp: %s", strerror(errno));
	chmod(flt_dir, 0755);
}

static void flt_teardown(void)
{
	char cmd[128];

	for (int i = 0; i < FLT_MAX_PIDS; i++)
		if (flt_pids[i])
			flt_stop(flt_pids[i], SIGKILL, 3000);
	if (strncmp(flt_dir, "/tmp/tt-faults-", 15))
		return;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", flt_dir);
	if (system(cmd) != 0)
		cr_log_warn("could not remove %s", flt_dir);
}

TestSuite(faults, .init = flt_setup, .fini = flt_teardown, .timeout = 120);

static void flt_need_root(void)
{
	if (geteuid() != 0)
		cr_skip_test("needs root to load eBPF programs");
}

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
	FILE *f;

	snprintf(ps, sizeof(ps), "%d", port);
	snprintf(name, sizeof(name), "port.%d", port);
	flt_path(pf, sizeof(pf), name);
	unlink(pf);
	if (f1) {
		argv[n++] = (char *)f1;
		argv[n++] = (char *)v1;
	}
	argv[n] = NULL;
	p = flt_spawn(argv, "server.out", "server.err");
	*bound = 0;
	for (int waited = 0; waited < 10000 && !*bound; waited += 20) {
		f = fopen(pf, "r");
		if (f) {
			if (fscanf(f, "%d", bound) != 1)
				*bound = 0;
			fclose(f);
		}
		if (!*bound)
			flt_msleep(20);
	}
	if (!*bound)
		flt_show("server.err");
	cr_assert(*bound > 0, "refserver wrote no port file in 10 s");
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
	flt_path(out, sizeof(out), "trace.tt");
	p = flt_spawn(argv, "rec.out", "rec.err");
	if (!flt_wait_text("rec.err", "tracing 1 process(es)", 20000)) {
		flt_show("rec.err");
		cr_assert_fail("tokentrace record did not start in 20 s");
	}
	return p;
}

/* sig to the tracer; it must flush and exit 0 (detaching the probes waits
 * for RCU grace periods: seconds on a busy host). */
static void flt_record_stop(pid_t p, int sig)
{
	int st;

	flt_msleep(300);
	st = flt_stop(p, sig, 30000);
	if (flt_code(st) != 0)
		flt_show("rec.err");
	cr_assert_eq(flt_code(st), 0, "tokentrace record did not exit 0 "
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
	flt_path(op, sizeof(op), out);
	if (extra)
		argv[k++] = (char *)extra;
	argv[k] = NULL;
	return flt_spawn(argv, "loadgen.out", err);
}

static int flt_loadgen_rc(pid_t p, const char *out)
{
	char err[64];
	int rc = flt_code(flt_reap(p, 60000));

	if (rc != 0) {
		snprintf(err, sizeof(err), "%s.err", out);
		flt_show(err);
	}
	return rc;
}

/* `tokentrace report DIR/trace.tt --format json`, parsed. */
static cJSON *flt_report(void)
{
	char tr[128], p[128];
	char *argv[] = { "build/tokentrace", "report", tr, "--format", "json",
			 NULL };
	cJSON *o;
	char *buf;
	long len;
	FILE *f;

	flt_path(tr, sizeof(tr), "trace.tt");
	cr_assert_eq(flt_run(argv, "report.json", "report.err", 60000), 0,
		     "tokentrace report of the trace failed");
	flt_path(p, sizeof(p), "report.json");
	f = fopen(p, "r");
	cr_assert(f);
	fseek(f, 0, SEEK_END);
	len = ftell(f);
	rewind(f);
	buf = malloc(len + 1);
	cr_assert(buf && fread(buf, 1, len, f) == (size_t)len);
	buf[len] = 0;
	fclose(f);
	o = cJSON_Parse(buf);
	free(buf);
	cr_assert(o, "the report is not JSON");
	return o;
}

static const char *flt_str(const cJSON *o, const char *k)
{
	const cJSON *v = cJSON_GetObjectItem(o, k);

	return cJSON_IsString(v) ? v->valuestring : "";
}

static double flt_num(const cJSON *o, const char *k)
{
	const cJSON *v = cJSON_GetObjectItem(o, k);

	return cJSON_IsNumber(v) ? v->valuedouble : -1;
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
		if (strcmp(flt_str(r, "tenant"), tenant))
			continue;
		n++;
		if (!strcmp(flt_str(r, "end"), "complete") &&
		    !flt_has_flag(r, "aborted") &&
		    (!want_tokens ||
		     flt_num(r, "completion_tokens") == want_tokens))
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

	flt_need_root();
	/* 30 ms a step: 400-token streams are open for seconds */
	srv = flt_refserver(0, "--step-delay-ms", "30", &port);
	rec = flt_record(port);
	cr_assert_eq(flt_loadgen_rc(flt_loadgen(port, "before", 6, 3, "4",
						"before.jsonl", NULL),
				    "before.jsonl"), 0);
	lg = flt_loadgen(port, "cut", 4, 4, "400", "cut.jsonl",
			 "--allow-errors");
	flt_msleep(1500);
	kill(srv, SIGKILL);
	flt_reap(srv, 5000);
	flt_loadgen_rc(lg, "cut.jsonl");
	/* the sweep (each second) ends the dead server's connections */
	flt_msleep(2500);
	cr_assert_eq(kill(rec, 0), 0, "record died with its target");
	flt_record_stop(rec, SIGINT);
	cr_expect(flt_file_has("rec.err", "request(s) recorded"),
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
		if (strcmp(flt_str(r, "tenant"), "cut"))
			continue;
		cr_log_info("cut stream: end %s, %g token events",
			    flt_str(r, "end"), flt_num(r, "token_events"));
		/* ended by the sweep when the server died, not left open
		 * until the collector stopped */
		cr_expect_str_eq(flt_str(r, "end"), "client_gone");
		cr_expect_gt(flt_num(r, "token_events"), 0);
	}
	cJSON_Delete(rep);
}

/* ---- the collector dies -------------------------------------------------- */

Test(faults, collector_killed_leaves_the_server_serving)
{
	int port;
	pid_t srv, rec, lg;

	flt_need_root();
	srv = flt_refserver(0, NULL, NULL, &port);
	rec = flt_record(port);
	lg = flt_loadgen(port, "during", 40, 4, "16", "during.jsonl", NULL);
	flt_msleep(400);
	kill(rec, SIGKILL);
	flt_reap(rec, 5000);
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

	flt_need_root();
	first = flt_refserver(0, NULL, NULL, &port);
	rec = flt_record(port);
	cr_assert_eq(flt_loadgen_rc(flt_loadgen(port, "first", 5, 1, "4",
						"first.jsonl", NULL),
				    "first.jsonl"), 0);
	cr_assert_eq(flt_code(flt_stop(first, SIGTERM, 5000)), 0);
	second = flt_refserver(port, NULL, NULL, &again);
	cr_assert_eq(again, port);
	/* the port is looked at every two seconds */
	flt_msleep(3500);
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
		if (!strcmp(flt_str(r, "tenant"), "second"))
			cr_expect_eq(flt_num(r, "pid"), second,
				     "a second-server request from pid %g",
				     flt_num(r, "pid"));
	cJSON_Delete(rep);
}

/* ---- signals ------------------------------------------------------------- */

static void flt_signal_flushes(int sig)
{
	int port, whole, n;
	pid_t rec;
	cJSON *rep;

	flt_need_root();
	flt_refserver(0, NULL, NULL, &port);
	rec = flt_record(port);
	cr_assert_eq(flt_loadgen_rc(flt_loadgen(port, "sig", 7, 2, "6",
						"sig.jsonl", NULL),
				    "sig.jsonl"), 0);
	/* no --duration, no tick awaited: the signal alone ends the run */
	flt_record_stop(rec, sig);
	cr_expect(flt_file_has("rec.err", "7 request(s) recorded"),
		  "the end-of-run counts are missing");
	cr_expect(flt_file_has("rec.err", "trace in"),
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
	FILE *f;

	flt_need_root();
	flt_path(tr, sizeof(tr), "trace.tt");
	flt_path(pf, sizeof(pf), "run.port");
	run = flt_spawn(argv, "run.out", "run.err");
	for (int waited = 0; waited < 20000 && !port; waited += 50) {
		f = fopen(pf, "r");
		if (f) {
			if (fscanf(f, "%d", &port) != 1)
				port = 0;
			fclose(f);
		}
		if (!port)
			flt_msleep(50);
	}
	if (!port)
		flt_show("run.err");
	cr_assert(port > 0, "the server under run wrote no port in 20 s");
	cr_assert_eq(flt_loadgen_rc(flt_loadgen(port, "run", 5, 1, "4",
						"run.jsonl", NULL),
				    "run.jsonl"), 0);
	flt_msleep(300);
	st = flt_stop(run, SIGINT, 30000);
	if (!WIFEXITED(st))
		flt_show("run.err");
	cr_assert(st != -1 && WIFEXITED(st), "run did not exit after SIGINT");
	cr_expect(flt_file_has("run.err", "trace in"), "no trace said");
	rep = flt_report();
	n = flt_count(rep, "run", 4, &whole);
	cr_expect_eq(whole, 5, "%d of 5 requests whole (%d seen)", whole, n);
	cJSON_Delete(rep);
}

/* ---- privileges ---------------------------------------------------------- */

static void flt_need_root_to_drop(void)
{
	if (geteuid() != 0)
		cr_skip_test("needs root to switch to the user nobody");
}

Test(faults, top_without_privilege_exits_3_with_one_message)
{
	char *argv[] = { "build/tokentrace", "top", "--pid", "1",
			 "--duration", "1", NULL };
	int rc;

	flt_need_root_to_drop();
	rc = flt_run_as(argv, "top.out", "top.err", 20000, true);
	if (rc != 3)
		flt_show("top.err");
	cr_expect_eq(rc, 3, "top as nobody exited %d", rc);
	cr_expect(flt_file_has("top.err", "root"),
		  "the message does not say root is needed");
}

Test(faults, record_and_run_without_privilege_say_why)
{
	char *rec[] = { "build/tokentrace", "record", "--pid", "1",
			"--duration", "1", NULL };
	char *run[] = { "build/tokentrace", "run", "--", "true", NULL };

	flt_need_root_to_drop();
	cr_expect_eq(flt_run_as(rec, "rec.out", "rec.err", 20000, true), 3);
	cr_expect(flt_file_has("rec.err", "root"), "record: no reason given");
	cr_expect_eq(flt_run_as(run, "run.out", "run.err", 20000, true), 3);
	cr_expect(flt_file_has("run.err", "root"), "run: no reason given");
}

Test(faults, report_of_a_trace_needs_no_privilege)
{
	char tr[128], copy[128], cmd[512];
	char *argv[] = { "build/tokentrace", "report", copy, "--format",
			 "json", NULL };
	int port, rc;
	pid_t rec;
	cJSON *o;

	flt_need_root();
	flt_refserver(0, NULL, NULL, &port);
	rec = flt_record(port);
	cr_assert_eq(flt_loadgen_rc(flt_loadgen(port, "anyone", 3, 1, "4",
						"anyone.jsonl", NULL),
				    "anyone.jsonl"), 0);
	flt_record_stop(rec, SIGINT);
	flt_path(tr, sizeof(tr), "trace.tt");
	flt_path(copy, sizeof(copy), "shared.tt");
	snprintf(cmd, sizeof(cmd), "cp '%s' '%s' && chmod 0644 '%s'", tr, copy,
		 copy);
	cr_assert_eq(system(cmd), 0);
	rc = flt_run_as(argv, "nobody.json", "nobody.err", 30000, true);
	if (rc)
		flt_show("nobody.err");
	cr_assert_eq(rc, 0, "report as nobody exited %d", rc);
	flt_path(cmd, sizeof(cmd), "nobody.json");
	{
		FILE *f = fopen(cmd, "r");
		static char buf[1 << 20];
		size_t n;

		cr_assert(f);
		n = fread(buf, 1, sizeof(buf) - 1, f);
		buf[n] = 0;
		fclose(f);
		o = cJSON_Parse(buf);
	}
	cr_assert(o, "the report as nobody is not JSON");
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

	flt_need_root();
	flt_refserver(0, NULL, NULL, &port);
	snprintf(ps, sizeof(ps), "%d", port);
	flt_path(out, sizeof(out), "rec.jsonl");
	flt_path(sum, sizeof(sum), "summary.json");
	rec = flt_spawn(argv, "rec.out", "rec.err");
	if (!flt_wait_text("rec.err", "tracing 1 process(es)", 20000)) {
		flt_show("rec.err");
		cr_assert_fail("tokentrace record did not start in 20 s");
	}
	cr_assert_eq(flt_loadgen_rc(flt_loadgen(port, "many", 12, 2, "4",
						"many.jsonl", NULL),
				    "many.jsonl"), 0);
	flt_record_stop(rec, SIGINT);
	cr_expect(flt_file_has("rec.err", "memory limit: 7 request(s)"),
		  "the requests not kept were not said");
	f = fopen(sum, "r");
	cr_assert(f, "no summary");
	n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = 0;
	fclose(f);
	o = cJSON_Parse(buf);
	cr_assert(o, "the summary is not JSON");
	cr_expect_eq(flt_count(o, "many", 4, &whole), 5,
		     "the report kept other than 5 requests");
	los = cJSON_GetObjectItem(o, "losses");
	cr_expect_eq(flt_num(los, "requests_not_kept"), 7);
	cr_expect_eq(flt_num(los, "intervals_not_kept"), 0);
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
