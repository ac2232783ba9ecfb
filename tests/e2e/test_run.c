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

#include "../../user/collect.h"
#include "harness.h"
#include "llama/batch.h"

static void setup(void)
{
	e2e_setup("run", 0);
}

static void teardown(void)
{
	e2e_teardown(SIGKILL, false);
}

/* Parse dir/name as JSON; check 0600, busy+idle == window per device. */
static cJSON *check_summary(const char *name)
{
	char p[128];
	struct stat st;
	cJSON *o, *d;
	char *text;

	e2e_path(p, sizeof(p), name);
	cr_assert_eq(stat(p, &st), 0, "no summary file %s", p);
	cr_expect_eq(st.st_mode & 0777, 0600, "summary mode %o, not 0600",
		     st.st_mode & 0777);
	text = e2e_slurp(name);
	o = text ? cJSON_Parse(text) : NULL;
	cr_assert_not_null(o, "summary is not valid JSON: %s", text);
	free(text);
	cr_assert_gt(e2e_num(o, "window_ns"), 0);
	cJSON_ArrayForEach(d, cJSON_GetObjectItem(o, "devices"))
		cr_expect_eq(e2e_num(d, "busy_ns") + e2e_num(d, "idle_ns"),
			     e2e_num(o, "window_ns"), "busy + idle != window");
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

/* A python process burns a fixed amount of CPU in threads (by their own
 * CPU clocks, so a busy machine makes it slower, not shorter); its parent
 * (also traced) prints its own and its child's rusage after the child is
 * reaped, and exits at once, so nothing runs after the figure is taken. */
Test(run, on_cpu_time_of_burning_threads_matches_rusage)
{
	static const char burn[] =
		"import os, resource, subprocess, sys, threading, time\n"
		"if len(sys.argv) > 1:\n"
		"    def b(s):\n"
		"        t = time.thread_time()\n"
		"        while time.thread_time() - t < s: pass\n"
		"    th = [threading.Thread(target=b, args=(0.3,)) for _ in range(2)]\n"
		"    [t.start() for t in th]; b(0.2); [t.join() for t in th]\n"
		"    sys.exit(0)\n"
		"subprocess.run([sys.executable, sys.argv[0], 'child'])\n"
		"c = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
		"s = resource.getrusage(resource.RUSAGE_SELF)\n"
		"print(int((c.ru_utime + c.ru_stime + s.ru_utime + s.ru_stime) * 1e9), flush=True)\n"
		"os._exit(0)\n";
	char py[128], sum[128];
	char *argv[] = { "build/tokentrace", "run", "--compute", "cpu",
			 "--summary", sum, "--", "/usr/bin/python3", py, NULL };
	const cJSON *cpu;
	cJSON *o;
	FILE *f;
	double want;

	e2e_need_root();
	e2e_path(py, sizeof(py), "burn.py");
	e2e_path(sum, sizeof(sum), "summary.json");
	f = fopen(py, "w");
	cr_assert_not_null(f);
	fputs(burn, f);
	fclose(f);
	cr_assert_eq(e2e_exit_of(e2e_reap(e2e_spawn(argv, "out.log", NULL),
					  30000)), 0,
		     "run failed: %s", e2e_tail("out.log", 65535));
	cr_assert_eq(sscanf(e2e_tail("out.log", 65535), "%lf", &want), 1,
		     "no rusage line: %s", e2e_tail("out.log", 65535));
	o = check_summary("summary.json");
	cpu = cpu_device(o);
	expect_within(e2e_num(cpu, "on_cpu_ns"), want, 0.05, "on-CPU time");
	cr_expect_leq(e2e_num(cpu, "busy_ns"), e2e_num(cpu, "on_cpu_ns"));
	cJSON_Delete(o);
}

/* The truth log's last line: {"type":"process","utime_ns","stime_ns"}. */
static double truth_cpu_ns(void)
{
	char p[128], line[4096];
	double ns = -1;
	FILE *f;

	e2e_path(p, sizeof(p), "truth.jsonl");
	f = fopen(p, "r");
	cr_assert_not_null(f, "no truth log");
	while (fgets(line, sizeof(line), f)) {
		cJSON *o = cJSON_Parse(line);
		cJSON *t = cJSON_GetObjectItem(o, "type");

		if (cJSON_IsString(t) && !strcmp(t->valuestring, "process"))
			ns = e2e_num(o, "utime_ns") + e2e_num(o, "stime_ns");
		cJSON_Delete(o);
	}
	fclose(f);
	cr_assert_gt(ns, 0, "no process line in the truth log");
	return ns;
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

	e2e_need_root();
	if (stat("build/refserver", &st) || stat("build/loadgen", &st))
		e2e_skip("build/refserver or build/loadgen not built");
	e2e_path(pf, sizeof(pf), "port");
	e2e_path(tf, sizeof(tf), "truth.jsonl");
	e2e_path(sum, sizeof(sum), "summary.json");
	e2e_path(out, sizeof(out), "load.jsonl");
	tt = e2e_spawn(argv, "run.log", NULL);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1/completions",
		 e2e_wait_port("port", tt, 15000, "run.log", "run"));
	cr_assert_eq(e2e_exit_of(e2e_reap(e2e_spawn(lg, "load.log", NULL),
					  60000)), 0,
		     "loadgen failed: %s", e2e_tail("load.log", 65535));
	kill(tt, SIGTERM);	/* forwarded: the server exits cleanly */
	cr_assert_eq(e2e_exit_of(e2e_reap(tt, 20000)), 0, "run: %s",
		     e2e_tail("run.log", 65535));
	o = check_summary("summary.json");
	cpu = cpu_device(o);
	want = truth_cpu_ns();
	expect_within(e2e_num(cpu, "on_cpu_ns"), want, 0.05,
		      "refserver on-CPU time");
	cr_log_info("refserver: %.0f on-CPU ns traced, %.0f by its rusage, "
		    "%.0f intervals over %.2f s", e2e_num(cpu, "on_cpu_ns"),
		    want,
		    e2e_num(cpu, "intervals"), e2e_num(o, "window_ns") / 1e9);
	cr_expect_eq(e2e_num(cJSON_GetObjectItem(o, "losses"), "events"), 0);
	cJSON_Delete(o);
}

Test(run, command_that_does_not_exist_fails_clearly)
{
	char *argv[] = { "build/tokentrace", "run", "--compute", "cpu", "--",
			 "/nonexistent/tt-no-such-cmd", NULL };
	const char *log;

	e2e_need_root();
	cr_expect_eq(e2e_exit_of(e2e_reap(e2e_spawn(argv, "out.log", NULL),
					  30000)), 127);
	log = e2e_tail("out.log", 65535);
	cr_expect(strstr(log, "cannot run") && strstr(log, "tt-no-such-cmd"),
		  "no clear error: %s", log);
}

Test(run, exit_code_is_the_command_s)
{
	char *argv[] = { "build/tokentrace", "run", "--compute", "cpu", "--",
			 "/bin/sh", "-c", "exit 7", NULL };
	char *sig[] = { "build/tokentrace", "run", "--compute", "cpu", "--",
			"/bin/sh", "-c", "kill -KILL $$", NULL };

	e2e_need_root();
	cr_expect_eq(e2e_exit_of(e2e_reap(e2e_spawn(argv, "a.log", NULL),
					  30000)), 7);
	cr_expect_eq(e2e_exit_of(e2e_reap(e2e_spawn(sig, "b.log", NULL),
					  30000)), 128 + 9);
}

/*
 * llama.cpp's shape: llama_decode in a libllama.so that the dynamic loader
 * maps after the exec (llama-server), or that the engine loads later
 * itself. The program waits until a uprobe is on llama_decode, then calls
 * it 25 times: the step probe must be found in the library's mapping and
 * count every call (without looking at the mappings again, the late one
 * is never probed and the program gives up after 30 s), and read each
 * call's llama_batch: its tokens, and its two runs (a prefill chunk and
 * a decode, tests/e2e/llama/batch.h), exactly.
 */
static void llama_shape(char *prog, char *extra)
{
	char trace[128];
	char *argv[] = { "build/tokentrace", "run", "--compute", "cpu", "-o",
			 trace, "--", prog, "25", extra, NULL };
	struct tt_interval step[25];
	struct collect c;
	int n = 0;

	e2e_need_root();
	e2e_path(trace, sizeof(trace), "llama.tt");
	cr_assert_eq(e2e_exit_of(e2e_reap(e2e_spawn(argv, "llama.log", NULL),
					  60000)), 0, "%s",
		     e2e_tail("llama.log", 1000));
	cr_expect(e2e_file_has("llama.log", "step probe: 25 steps in 1 "
			       "process(es), 25 with their batch read"), "%s",
		  e2e_tail("llama.log", 1000));
	collect_init(&c);
	cr_assert_eq(collect_load(&c, trace, stderr, NULL), 0);
	for (size_t i = 0; i < c.nivs && n < 25; i++)
		if (c.ivs[i].kind == TT_IV_STEP)
			step[n++] = c.ivs[i];
	cr_assert_eq(n, 25, "%d steps in the trace", n);
	for (int i = 0; i < n; i++) {
		int chunk = STANDIN_CHUNK(i), runs = 0;

		cr_expect_eq(step[i].bytes, (uint64_t)chunk + 1, "call %d", i);
		for (size_t j = 0; j < c.nivs; j++) {
			const struct tt_interval *u = &c.ivs[j];
			bool pre;

			if (u->kind != TT_IV_SEQ || u->end_ns != step[i].end_ns)
				continue;
			pre = runs++ == 0;
			cr_expect_eq(u->stream, pre ? (uint32_t)STANDIN_SEQ(i) :
				     STANDIN_DECODE_SEQ, "call %d", i);
			cr_expect_eq(u->correlation, pre ? 100u * i : (uint32_t)i,
				     "call %d", i);
			cr_expect_eq(u->bytes, pre ? (uint64_t)chunk : 1,
				     "call %d", i);
			cr_expect_eq(u->name_id, 1, "call %d", i);
		}
		cr_expect_eq(runs, 2, "call %d: %d runs", i, runs);
	}
	collect_free(&c);
}

Test(run, step_probe_on_llama_decode_in_a_mapped_libllama)
{
	llama_shape("build/tests/llama/llama-engine", NULL);
}

Test(run, step_probe_on_a_libllama_loaded_after_the_start)
{
	llama_shape("build/tests/llama/llama-engine-dl", "--dlopen");
}

Test(run, sigterm_is_forwarded_and_the_run_ends)
{
	char sh[256];
	char *argv[] = { "build/tokentrace", "run", "--compute", "cpu", "--",
			 "/bin/sh", "-c", sh, NULL };
	pid_t tt;

	e2e_need_root();
	snprintf(sh, sizeof(sh), "echo started > '%s'; exec /bin/sleep 30",
		 e2e_tpath("started"));
	tt = e2e_spawn(argv, "out.log", NULL);
	/* The command runs once tokentrace is tracing and holds its signals:
	 * a SIGTERM now can only end the run by reaching the command. */
	cr_assert(e2e_wait_text("started", "started", 30000),
		  "the command did not start: %s", e2e_tail("out.log", 65535));
	kill(tt, SIGTERM);
	cr_expect_eq(e2e_exit_of(e2e_reap(tt, 20000)), 128 + SIGTERM,
		     "run: %s", e2e_tail("out.log", 65535));
}

Test(run, duration_stops_the_command)
{
	char sum[128];
	char *argv[] = { "build/tokentrace", "run", "--compute", "cpu",
			 "--duration", "0.5", "--summary", sum, "--",
			 "/bin/sleep", "30", NULL };
	cJSON *o;

	e2e_need_root();
	e2e_path(sum, sizeof(sum), "s.json");
	cr_expect_eq(e2e_exit_of(e2e_reap(e2e_spawn(argv, "out.log", NULL),
					  30000)),
		     128 + SIGTERM);
	o = check_summary("s.json");
	cr_expect_lt(e2e_num(o, "window_ns"), 5e9);
	cJSON_Delete(o);
}

Test(run, without_root_exits_3_with_a_message)
{
	char *argv[] = { "build/tokentrace", "run", "--", "/bin/true", NULL };
	struct passwd *pw;
	const char *log;
	pid_t tt;

	if (geteuid() != 0)
		e2e_skip("needs root to switch to the user nobody");
	pw = getpwnam("nobody");
	if (!pw)
		e2e_skip("no user 'nobody' here");
	chmod(e2e_dir, 0777);
	argv[0] = (char *)e2e_bin_for_anyone("tokentrace");
	tt = e2e_spawn_ex(argv, "out.log", NULL, -1, pw->pw_uid, 0);
	cr_expect_eq(e2e_exit_of(e2e_reap(tt, 30000)),
		     3);
	log = e2e_tail("out.log", 65535);
	cr_expect(log && strstr(log, "root"), "no message: %s", log);
}

Test(run, usage_errors_exit_2)
{
	char *none[] = { "build/tokentrace", "run", NULL };
	char *bad[] = { "build/tokentrace", "run", "--compute", "tpu", "--",
			"/bin/true", NULL };

	cr_expect_eq(e2e_exit_of(e2e_reap(e2e_spawn(none, "a.log", NULL),
					  30000)), 2);
	cr_expect_eq(e2e_exit_of(e2e_reap(e2e_spawn(bad, "b.log", NULL),
					  30000)), 2);
	cr_expect(strstr(e2e_tail("b.log", 65535), "tpu") != NULL);
}
