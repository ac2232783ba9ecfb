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

#define MAX_PIDS	6

static pid_t pids[MAX_PIDS];
static char dir[64];

static void msleep(int ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

static const char *tp(const char *name)
{
	static char p[8][128];
	static int k;

	k = (k + 1) % 8;
	snprintf(p[k], sizeof(p[k]), "%s/%s", dir, name);
	return p[k];
}

static void track(pid_t p, int on)
{
	for (int i = 0; i < MAX_PIDS; i++) {
		if (on && !pids[i]) {
			pids[i] = p;
			return;
		}
		if (!on && pids[i] == p)
			pids[i] = 0;
	}
}

/* Wait for p up to ms; its wait status, or -1 if it still runs. */
static int reap(pid_t p, int ms)
{
	int st;

	for (int waited = 0;; waited += 10) {
		pid_t r = waitpid(p, &st, WNOHANG);

		if (r == p) {
			track(p, 0);
			return st;
		}
		if (r < 0 || waited >= ms)
			return -1;
		msleep(10);
	}
}

/* Start argv with stdout and stderr in dir/log. */
static pid_t spawn(char *const argv[], const char *log)
{
	const char *lp = tp(log);
	pid_t p = fork();

	cr_assert_geq(p, 0, "fork failed");
	if (p == 0) {
		int fd = open(lp, O_WRONLY | O_CREAT | O_TRUNC, 0644);

		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
			close(fd);
		}
		execv(argv[0], argv);
		_exit(98);
	}
	track(p, 1);
	return p;
}

static char *slurp(const char *name)
{
	FILE *f = fopen(tp(name), "r");
	char *buf;
	long n;

	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	rewind(f);
	buf = malloc(n + 1);
	n = (long)fread(buf, 1, n, f);
	fclose(f);
	buf[n] = 0;
	return buf;
}

static char *log_of(const char *name)
{
	static char buf[4096];
	char *s = slurp(name);

	snprintf(buf, sizeof(buf), "%s", s ? s : "(no log)");
	free(s);
	return buf;
}

static void setup(void)
{
	snprintf(dir, sizeof(dir), "/tmp/tt-trace-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
}

static void teardown(void)
{
	char cmd[128];

	for (int i = 0; i < MAX_PIDS; i++) {
		if (pids[i]) {
			kill(pids[i], SIGKILL);
			if (waitpid(pids[i], NULL, 0) < 0)	/* not ours */
				msleep(50);
			pids[i] = 0;
		}
	}
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd))
		fprintf(stderr, "could not remove %s\n", dir);
}

static void need_tools(void)
{
	struct stat st;

	if (geteuid() != 0)
		cr_skip_test("tokentrace run needs root to load eBPF programs");
	if (stat("build/refserver", &st) || stat("build/loadgen", &st) ||
	    stat("build/tokentrace", &st))
		cr_skip_test("build/tokentrace, refserver or loadgen not built");
}

static int exit_of(int st)
{
	cr_assert_neq(st, -1, "process did not exit in time");
	if (WIFSIGNALED(st))
		return 128 + WTERMSIG(st);
	return WEXITSTATUS(st);
}

static double num(const cJSON *o, const char *k)
{
	const cJSON *n = cJSON_GetObjectItem(o, k);

	cr_assert(cJSON_IsNumber(n), "field %s is not a number", k);
	return n->valuedouble;
}

static int wait_port(pid_t tt)
{
	int port = 0;

	for (int waited = 0; waited < 15000; waited += 20) {
		char *s = slurp("port");

		if (s && sscanf(s, "%d", &port) == 1 && port > 0) {
			free(s);
			return port;
		}
		free(s);
		cr_assert_eq(reap(tt, 0), -1, "run ended before the server "
			     "listened: %s", log_of("run.log"));
		msleep(20);
	}
	cr_assert_fail("refserver wrote no port file in 15 s: %s",
		       log_of("run.log"));
	return 0;
}

static cJSON *parse_file(const char *name)
{
	char *s = slurp(name);
	cJSON *o = s ? cJSON_Parse(s) : NULL;

	cr_assert_not_null(o, "%s is not JSON: %.200s", name, s ? s : "");
	free(s);
	return o;
}

/* `tokentrace report T --format json -o out`: its exit code. */
static int report_json(const char *trace, const char *out, const char *log)
{
	char t[128], o[128];
	char *argv[] = { "build/tokentrace", "report", t, "--format", "json",
			 "-o", o, NULL };

	snprintf(t, sizeof(t), "%s", tp(trace));
	snprintf(o, sizeof(o), "%s", tp(out));
	return exit_of(reap(spawn(argv, log), 60000));
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

	cr_expect_eq(num(s, "window_ns"), num(r, "window_ns"));
	cJSON_ArrayForEach(d, cJSON_GetObjectItem(s, "devices")) {
		const char *n = cJSON_GetObjectItem(d, "name")->valuestring;
		const cJSON *e = by_name(cJSON_GetObjectItem(r, "devices"), n);

		cr_assert_not_null(e, "device %s not in the trace's report", n);
		cr_expect_eq(num(d, "busy_ns"), num(e, "busy_ns"), "%s busy", n);
		cr_expect_eq(num(d, "idle_ns"), num(e, "idle_ns"), "%s idle", n);
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
		cr_expect_eq(num(t, "requests"), num(e, "requests"));
		cr_expect_eq(num(t, "gpu_ns"), num(e, "gpu_ns"), "%s", name);
		cr_expect_float_eq(num(t, "cost_usd"), num(e, "cost_usd"),
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
		sum += num(q, "gpu_ns");
	cJSON_ArrayForEach(d, cJSON_GetObjectItem(r, "devices"))
		if (cJSON_IsTrue(cJSON_GetObjectItem(d, "attributed")))
			busy += num(d, "busy_ns");
	cr_expect_gt(busy, 0);
	cr_expect_eq(sum + num(r, "unattributed_ns"), busy,
		     "%.0f + %.0f != %.0f", sum, num(r, "unattributed_ns"),
		     busy);
}

/* Every request the client saw is in the report with its tokens. */
static void client_requests_found(const cJSON *r)
{
	char *text = slurp("load.jsonl"), *line, *save = NULL;
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
			cr_expect_eq(num(hit, "completion_tokens"),
				     num(c, "completion_tokens"), "%s", id);
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

	need_tools();
	snprintf(pf, sizeof(pf), "%s", tp("port"));
	snprintf(tf, sizeof(tf), "%s", tp("truth.jsonl"));
	snprintf(out, sizeof(out), "%s", tp("load.jsonl"));
	snprintf(tt_path, sizeof(tt_path), "%s", tp("T.tt"));
	snprintf(sum, sizeof(sum), "%s", tp("S.json"));
	tt = spawn(argv, "run.log");
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/completions",
		 wait_port(tt));
	cr_assert_eq(exit_of(reap(spawn(lg, "load.log"), 60000)), 0,
		     "loadgen failed: %s", log_of("load.log"));
	kill(tt, SIGINT);
	cr_assert_eq(exit_of(reap(tt, 20000)), 0, "run: %s",
		     log_of("run.log"));
	cr_assert_eq(stat(tp("T.tt"), &st), 0, "no trace file");
	cr_expect_eq(st.st_mode & 0777, 0600, "trace mode %o",
		     st.st_mode & 0777);
	cr_assert_eq(report_json("T.tt", "R.json", "report.log"), 0,
		     "report: %s", log_of("report.log"));
	s = parse_file("S.json");
	r = parse_file("R.json");
	same_devices(s, r);
	cr_expect_eq(cJSON_GetArraySize(cJSON_GetObjectItem(s, "requests")),
		     cJSON_GetArraySize(cJSON_GetObjectItem(r, "requests")));
	cr_expect_eq(num(s, "unattributed_ns"), num(r, "unattributed_ns"));
	same_tenants(s, r);
	conservation(r);
	client_requests_found(r);
	cr_expect(cJSON_IsTrue(cJSON_GetObjectItem(cJSON_GetObjectItem(r,
		  "trace"), "window_closed")));
	cr_log_info("trace: %lld bytes for %d requests over %.2f s",
		    (long long)st.st_size,
		    cJSON_GetArraySize(cJSON_GetObjectItem(r, "requests")),
		    num(r, "window_ns") / 1e9);
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

	need_tools();
	snprintf(pf, sizeof(pf), "%s", tp("port"));
	snprintf(tf, sizeof(tf), "%s", tp("truth.jsonl"));
	snprintf(out, sizeof(out), "%s", tp("load.jsonl"));
	snprintf(tt_path, sizeof(tt_path), "%s", tp("K.tt"));
	tt = spawn(argv, "run.log");
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/completions",
		 wait_port(tt));
	server = child_of(tt);
	cr_assert_gt(server, 0, "no server process under the run");
	track(server, 1);	/* it outlives a killed run: fini kills it */
	load = spawn(lg, "load.log");
	msleep(2500);		/* two ticks: at least two blocks written */
	kill(tt, SIGKILL);
	reap(tt, 5000);
	kill(server, SIGKILL);
	kill(load, SIGKILL);
	reap(load, 5000);
	cr_assert_eq(report_json("K.tt", "R.json", "report.log"), 0,
		     "report of a killed run's trace: %s",
		     log_of("report.log"));
	r = parse_file("R.json");
	t = cJSON_GetObjectItem(r, "trace");
	cr_expect_geq(num(t, "blocks_ok"), 2);
	cr_expect(cJSON_IsFalse(cJSON_GetObjectItem(t, "window_closed")),
		  "a killed run cannot have closed its window");
	cr_expect_leq(num(cJSON_GetObjectItem(cJSON_GetObjectItem(r, "losses"),
		      "trace"), "blocks"), 1, "only the cut block is lost");
	cr_expect_gt(num(r, "window_ns"), 1e9);
	cr_expect_gt(cJSON_GetArraySize(cJSON_GetObjectItem(r, "requests")),
		     0, "requests finished before the kill are in the trace");
	conservation(r);
	cr_log_info("killed run: %.0f blocks read, report: %s",
		    num(t, "blocks_ok"), log_of("report.log"));
	cJSON_Delete(r);
}
