/*
 * test_run.c - `tokentrace run` end to end: a command started under
 * tracing, its on-CPU time checked against the process's own accounting,
 * the JSON summary, exit codes and errors.
 *
 * In:  build/tokentrace, build/refserver, build/loadgen, python3 (run from
 *      the repository root).
 * Out: Criterion suite "run".
 * Assumes: root for everything that loads eBPF (skipped with the reason
 *      otherwise); loopback TCP; ports picked by the server. Every process
 *      a test starts is killed and reaped in the fixture's fini; each test
 *      works in its own temporary folder, removed at the end.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pwd.h>
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

#define MAX_PIDS	4

static pid_t pids[MAX_PIDS];
static char dir[64];

static void msleep(int ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

static void path(char *out, size_t n, const char *name)
{
	snprintf(out, n, "%s/%s", dir, name);
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

/* Start argv with stdout and stderr in dir/log; uid >= 0: as that user. */
static pid_t spawn(char *const argv[], const char *log, int uid)
{
	char lp[128];
	pid_t p;

	path(lp, sizeof(lp), log);
	p = fork();
	cr_assert_geq(p, 0, "fork failed");
	if (p == 0) {
		int fd = open(lp, O_WRONLY | O_CREAT | O_TRUNC, 0644);

		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
			close(fd);
		}
		if (uid >= 0 && (setgid(uid) || setuid(uid)))
			_exit(99);
		execv(argv[0], argv);
		_exit(98);
	}
	track(p, 1);
	return p;
}

static char *slurp(const char *name)
{
	char p[128];
	static char buf[1 << 16];
	FILE *f;
	size_t n;

	path(p, sizeof(p), name);
	f = fopen(p, "r");
	if (!f)
		return NULL;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	return buf;
}

static void setup(void)
{
	snprintf(dir, sizeof(dir), "/tmp/tt-run-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
}

static void teardown(void)
{
	char cmd[128];

	for (int i = 0; i < MAX_PIDS; i++) {
		if (pids[i]) {
			kill(pids[i], SIGKILL);
			waitpid(pids[i], NULL, 0);
			pids[i] = 0;
		}
	}
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd))
		fprintf(stderr, "could not remove %s\n", dir);
}

static void need_root(void)
{
	if (geteuid() != 0)
		cr_skip_test("needs root to load eBPF programs");
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

	cr_assert(cJSON_IsNumber(n), "summary field %s is not a number", k);
	return n->valuedouble;
}

/* Parse dir/name as JSON; check 0600, busy+idle == window per device. */
static cJSON *check_summary(const char *name)
{
	char p[128];
	struct stat st;
	cJSON *o, *d;
	char *text;

	path(p, sizeof(p), name);
	cr_assert_eq(stat(p, &st), 0, "no summary file %s", p);
	cr_expect_eq(st.st_mode & 0777, 0600, "summary mode %o, not 0600",
		     st.st_mode & 0777);
	text = slurp(name);
	o = cJSON_Parse(text);
	cr_assert_not_null(o, "summary is not valid JSON: %s", text);
	cr_assert_gt(num(o, "window_ns"), 0);
	cJSON_ArrayForEach(d, cJSON_GetObjectItem(o, "devices"))
		cr_expect_eq(num(d, "busy_ns") + num(d, "idle_ns"),
			     num(o, "window_ns"), "busy + idle != window");
	cr_expect(cJSON_IsArray(cJSON_GetObjectItem(o, "requests")));
	cr_expect(cJSON_IsObject(cJSON_GetObjectItem(o, "losses")));
	return o;
}

static const cJSON *cpu_device(const cJSON *o)
{
	const cJSON *d;

	cJSON_ArrayForEach(d, cJSON_GetObjectItem(o, "devices"))
		if (!strcmp(cJSON_GetObjectItem(d, "kind")->valuestring, "cpu"))
			return d;
	cr_assert_fail("no cpu device in the summary");
	return NULL;
}

static void expect_within(double got, double want, double frac,
			  const char *what)
{
	cr_expect(fabs(got - want) <= frac * want,
		  "%s: traced %.0f ns, process says %.0f ns (%.2f%% off)",
		  what, got, want, 100.0 * (got - want) / want);
}

TestSuite(run, .init = setup, .fini = teardown, .timeout = 90);

/* A python process burns CPU in threads; its parent (also traced) prints
 * its own and its child's rusage after the child is reaped. */
Test(run, on_cpu_time_of_burning_threads_matches_rusage)
{
	static const char burn[] =
		"import resource, subprocess, sys, threading, time\n"
		"if len(sys.argv) > 1:\n"
		"    def b(s):\n"
		"        t = time.time()\n"
		"        while time.time() - t < s: pass\n"
		"    th = [threading.Thread(target=b, args=(0.3,)) for _ in range(2)]\n"
		"    [t.start() for t in th]; b(0.2); [t.join() for t in th]\n"
		"    sys.exit(0)\n"
		"subprocess.run([sys.executable, sys.argv[0], 'child'])\n"
		"c = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
		"s = resource.getrusage(resource.RUSAGE_SELF)\n"
		"print(int((c.ru_utime + c.ru_stime + s.ru_utime + s.ru_stime) * 1e9))\n";
	char py[128], sum[128];
	char *argv[] = { "build/tokentrace", "run", "--compute", "cpu",
			 "--summary", sum, "--", "/usr/bin/python3", py, NULL };
	const cJSON *cpu;
	cJSON *o;
	FILE *f;
	double want;

	need_root();
	path(py, sizeof(py), "burn.py");
	path(sum, sizeof(sum), "summary.json");
	f = fopen(py, "w");
	cr_assert_not_null(f);
	fputs(burn, f);
	fclose(f);
	cr_assert_eq(exit_of(reap(spawn(argv, "out.log", -1), 30000)), 0,
		     "run failed: %s", slurp("out.log"));
	cr_assert_eq(sscanf(slurp("out.log"), "%lf", &want), 1,
		     "no rusage line: %s", slurp("out.log"));
	o = check_summary("summary.json");
	cpu = cpu_device(o);
	expect_within(num(cpu, "on_cpu_ns"), want, 0.05, "on-CPU time");
	cr_expect_leq(num(cpu, "busy_ns"), num(cpu, "on_cpu_ns"));
	cJSON_Delete(o);
}

/* The truth log's last line: {"type":"process","utime_ns","stime_ns"}. */
static double truth_cpu_ns(void)
{
	char p[128], line[4096];
	double ns = -1;
	FILE *f;

	path(p, sizeof(p), "truth.jsonl");
	f = fopen(p, "r");
	cr_assert_not_null(f, "no truth log");
	while (fgets(line, sizeof(line), f)) {
		cJSON *o = cJSON_Parse(line);
		cJSON *t = cJSON_GetObjectItem(o, "type");

		if (cJSON_IsString(t) && !strcmp(t->valuestring, "process"))
			ns = num(o, "utime_ns") + num(o, "stime_ns");
		cJSON_Delete(o);
	}
	fclose(f);
	cr_assert_gt(ns, 0, "no process line in the truth log");
	return ns;
}

static int wait_port(pid_t tt)
{
	char *s;
	int port = 0;

	for (int waited = 0; waited < 15000; waited += 20) {
		s = slurp("port");
		if (s && sscanf(s, "%d", &port) == 1 && port > 0)
			return port;
		cr_assert_eq(reap(tt, 0), -1, "run ended before the server "
			     "listened: %s", slurp("run.log"));
		msleep(20);
	}
	cr_assert_fail("refserver wrote no port file in 15 s: %s",
		       slurp("run.log"));
	return 0;
}

/*
 * The reference server (default model) under load: its on-CPU time as
 * traced agrees with its own getrusage at exit within 5 %. The trace also
 * sees the server's teardown after that getrusage (some 10-20 ms), so the
 * run must be long enough for that to stay small: a few tenths of a
 * second of CPU at least.
 */
Test(run, refserver_on_cpu_time_matches_its_truth_log)
{
	char pf[128], tf[128], sum[128], url[96], out[128];
	char *argv[] = { "build/tokentrace", "run", "--compute", "cpu",
			 "--summary", sum, "--", "build/refserver", "--host",
			 "127.0.0.1", "--port", "0", "--port-file", pf,
			 "--truth", tf, NULL };
	char *lg[] = { "build/loadgen", "--url", url, "--concurrency", "4",
		       "--requests", "60", "--stream", "--out", out, NULL };
	struct stat st;
	const cJSON *cpu;
	double want;
	pid_t tt;
	cJSON *o;

	need_root();
	if (stat("build/refserver", &st) || stat("build/loadgen", &st))
		cr_skip_test("build/refserver or build/loadgen not built");
	path(pf, sizeof(pf), "port");
	path(tf, sizeof(tf), "truth.jsonl");
	path(sum, sizeof(sum), "summary.json");
	path(out, sizeof(out), "load.jsonl");
	tt = spawn(argv, "run.log", -1);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/completions",
		 wait_port(tt));
	cr_assert_eq(exit_of(reap(spawn(lg, "load.log", -1), 60000)), 0,
		     "loadgen failed: %s", slurp("load.log"));
	kill(tt, SIGTERM);	/* forwarded: the server exits cleanly */
	cr_assert_eq(exit_of(reap(tt, 20000)), 0, "run: %s", slurp("run.log"));
	o = check_summary("summary.json");
	cpu = cpu_device(o);
	want = truth_cpu_ns();
	expect_within(num(cpu, "on_cpu_ns"), want, 0.05,
		      "refserver on-CPU time");
	cr_log_info("refserver: %.0f on-CPU ns traced, %.0f by its rusage, "
		    "%.0f intervals over %.2f s", num(cpu, "on_cpu_ns"), want,
		    num(cpu, "intervals"), num(o, "window_ns") / 1e9);
	cr_expect_eq(num(cJSON_GetObjectItem(o, "losses"), "events"), 0);
	cJSON_Delete(o);
}

Test(run, command_that_does_not_exist_fails_clearly)
{
	char *argv[] = { "build/tokentrace", "run", "--compute", "cpu", "--",
			 "/nonexistent/tt-no-such-cmd", NULL };
	char *log;

	need_root();
	cr_expect_eq(exit_of(reap(spawn(argv, "out.log", -1), 10000)), 127);
	log = slurp("out.log");
	cr_expect(strstr(log, "cannot run") && strstr(log, "tt-no-such-cmd"),
		  "no clear error: %s", log);
}

Test(run, exit_code_is_the_command_s)
{
	char *argv[] = { "build/tokentrace", "run", "--compute", "cpu", "--",
			 "/bin/sh", "-c", "exit 7", NULL };
	char *sig[] = { "build/tokentrace", "run", "--compute", "cpu", "--",
			"/bin/sh", "-c", "kill -KILL $$", NULL };

	need_root();
	cr_expect_eq(exit_of(reap(spawn(argv, "a.log", -1), 10000)), 7);
	cr_expect_eq(exit_of(reap(spawn(sig, "b.log", -1), 10000)), 128 + 9);
}

Test(run, sigterm_is_forwarded_and_the_run_ends)
{
	char *argv[] = { "build/tokentrace", "run", "--compute", "cpu", "--",
			 "/bin/sleep", "30", NULL };
	pid_t tt;

	need_root();
	tt = spawn(argv, "out.log", -1);
	msleep(500);
	kill(tt, SIGTERM);
	cr_expect_eq(exit_of(reap(tt, 8000)), 128 + SIGTERM,
		     "run: %s", slurp("out.log"));
}

Test(run, duration_stops_the_command)
{
	char sum[128];
	char *argv[] = { "build/tokentrace", "run", "--compute", "cpu",
			 "--duration", "0.5", "--summary", sum, "--",
			 "/bin/sleep", "30", NULL };
	cJSON *o;

	need_root();
	path(sum, sizeof(sum), "s.json");
	cr_expect_eq(exit_of(reap(spawn(argv, "out.log", -1), 10000)),
		     128 + SIGTERM);
	o = check_summary("s.json");
	cr_expect_lt(num(o, "window_ns"), 5e9);
	cJSON_Delete(o);
}

Test(run, without_root_exits_3_with_a_message)
{
	char *argv[] = { "build/tokentrace", "run", "--", "/bin/true", NULL };
	struct passwd *pw;
	char *log;

	if (geteuid() != 0)
		cr_skip_test("needs root to switch to the user nobody");
	pw = getpwnam("nobody");
	if (!pw)
		cr_skip_test("no user 'nobody' here");
	chmod(dir, 0777);
	cr_expect_eq(exit_of(reap(spawn(argv, "out.log", pw->pw_uid), 10000)),
		     3);
	log = slurp("out.log");
	cr_expect(log && strstr(log, "root"), "no message: %s", log);
}

Test(run, usage_errors_exit_2)
{
	char *none[] = { "build/tokentrace", "run", NULL };
	char *bad[] = { "build/tokentrace", "run", "--compute", "tpu", "--",
			"/bin/true", NULL };

	cr_expect_eq(exit_of(reap(spawn(none, "a.log", -1), 5000)), 2);
	cr_expect_eq(exit_of(reap(spawn(bad, "b.log", -1), 5000)), 2);
	cr_expect(strstr(slurp("b.log"), "tpu") != NULL);
}
