/*
 * test_tracefs.c - a freshly booted host, where tracefs is not mounted:
 * `run`, `record` and `top` mount it before they attach any tracepoint,
 * say so once, and trace; where it cannot be mounted they say why and what
 * to do, and exit 4.
 *
 * In:  build/tokentrace, build/refserver, build/loadgen.
 * Out: Criterion suite "tracefs".
 * Assumes: root. Each test moves its own process (Criterion runs every
 *      test in a process of its own) into a private mount namespace and
 *      unmounts tracefs there (and debugfs's tracing folder), so the host's
 *      mounts are never touched and the test does not depend on what an
 *      earlier run left mounted: the processes the test starts inherit that
 *      namespace, as on a host that booted without tracefs.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/capability.h>

#include <cJSON.h>
#include <criterion/criterion.h>
#include <criterion/logging.h>

#include "harness.h"

#define TRACEFS		"/sys/kernel/tracing"
#define DEBUG_TRACING	"/sys/kernel/debug/tracing"
#define MOUNTED_MSG	"tracefs was not mounted: mounted it at " TRACEFS

static void setup(void)
{
	e2e_setup("tracefs", 0);
}

static void teardown(void)
{
	e2e_teardown(SIGKILL, false);
}

TestSuite(tracefs, .init = setup, .fini = teardown, .timeout = 120);

/* Unmounts path until nothing is mounted there (mounts can be stacked). */
static void unmount_all(const char *path)
{
	for (int i = 0; i < 16; i++)
		if (umount2(path, MNT_DETACH) != 0)
			return;
}

/*
 * This process (and what it starts) into a private mount namespace with
 * no tracefs anywhere libbpf looks; skips without root or unshare.
 */
static void enter_host_without_tracefs(void)
{
	e2e_need_tools();
	if (unshare(CLONE_NEWNS) != 0)
		e2e_skip("unshare(CLONE_NEWNS): %s", strerror(errno));
	/* /sys, not /: inside a chroot / need not be a mount point */
	cr_assert_eq(mount(NULL, "/sys", NULL, MS_REC | MS_PRIVATE, NULL), 0,
		     "making /sys private: %s", strerror(errno));
	unmount_all(TRACEFS);
	unmount_all(DEBUG_TRACING);
	/* debugfs too: its tracing folder would automount tracefs */
	unmount_all("/sys/kernel/debug");
	cr_assert_neq(access(TRACEFS "/events", F_OK), 0,
		      "tracefs is still mounted at " TRACEFS);
	cr_assert_neq(access(DEBUG_TRACING "/events", F_OK), 0,
		      "tracefs is still reachable at " DEBUG_TRACING);
}

/* How many times text occurs in the file. */
static int count_in(const char *name, const char *text)
{
	char *s = e2e_slurp(name), *p;
	int n = 0;

	for (p = s; p && (p = strstr(p, text)); p += strlen(text))
		n++;
	free(s);
	return n;
}

/* The tracer's log said once that it mounted tracefs, and nothing failed. */
static void expect_mounted_once(const char *log)
{
	cr_expect_eq(count_in(log, MOUNTED_MSG), 1,
		     "'%s' is not said exactly once: %s", MOUNTED_MSG,
		     e2e_tail(log, 4096));
	cr_expect_eq(count_in(log, "failed:") + count_in(log, "libbpf:"), 0,
		     "something failed: %s", e2e_tail(log, 4096));
	cr_expect_eq(access(TRACEFS "/events/sched", F_OK), 0,
		     "tracefs is not mounted at " TRACEFS " after the run");
}

/* Every request the client made is in the tracer's JSON lines. */
static void expect_all_traced(const char *client_file, const char *traced_file,
			      int want)
{
	cJSON *c[64], *t[64];
	int nc = e2e_read_jsonl(client_file, c, 64);
	int nt = e2e_read_jsonl(traced_file, t, 64);

	cr_expect_eq(nc, want, "the client wrote %d lines, not %d", nc, want);
	for (int i = 0; i < nc; i++) {
		const char *id = e2e_str_or(c[i], "id");
		bool found = false;

		for (int j = 0; j < nt && !found; j++)
			found = !strcmp(e2e_str_or(t[j], "id"), id) &&
				e2e_num_or(t[j], "completion_tokens", -1) ==
				e2e_num_or(c[i], "completion_tokens", -2);
		cr_expect(found, "client request %s is not traced (or its "
			  "completion tokens differ)", id);
	}
	for (int i = 0; i < nc; i++)
		cJSON_Delete(c[i]);
	for (int j = 0; j < nt; j++)
		cJSON_Delete(t[j]);
}

static void run_load(int port, int requests)
{
	char url[96], n[16];
	const char *flags[] = { "--concurrency", "2", "--requests", n,
				"--stream", "--max-tokens", "8", NULL };

	snprintf(url, sizeof(url), "http://127.0.0.1:%d", port);
	snprintf(n, sizeof(n), "%d", requests);
	cr_assert_eq(e2e_finish(e2e_loadgen(url, "client.jsonl", NULL, flags,
					    "load.log", NULL), 60000), 0,
		     "loadgen failed: %s", e2e_tail("load.log", 4096));
}

/* The CPU device of a summary was busy. */
static void expect_cpu_busy(const char *name)
{
	cJSON *o = e2e_load_json(name, NULL), *d;
	bool cpu = false;

	cJSON_ArrayForEach(d, cJSON_GetObjectItem(o, "devices"))
		if (!strcmp(e2e_str_or(d, "kind"), "cpu")) {
			cpu = true;
			cr_expect_gt(e2e_num(d, "busy_ns"), 0,
				     "the CPU source saw no on-CPU time");
		}
	cr_expect(cpu, "no cpu device in %s", name);
	cJSON_Delete(o);
}

Test(tracefs, run_mounts_it_says_so_once_and_traces)
{
	char pf[128], tf[128], sum[128], out[128];
	char *argv[] = { "build/tokentrace", "run", "--compute", "cpu",
			 "--summary", sum, "-o", out, "--", "build/refserver",
			 "--port", "0", "--port-file", pf, "--truth", tf,
			 NULL };
	pid_t tt;

	enter_host_without_tracefs();
	e2e_path(pf, sizeof(pf), "port");
	e2e_path(tf, sizeof(tf), "truth.jsonl");
	e2e_path(sum, sizeof(sum), "summary.json");
	e2e_path(out, sizeof(out), "run.jsonl");
	tt = e2e_spawn(argv, "run.out", "run.err");
	run_load(e2e_wait_port("port", tt, 15000, "run.err", "run"), 6);
	kill(tt, SIGTERM);	/* forwarded: the server exits cleanly */
	cr_assert_eq(e2e_exit_of(e2e_reap(tt, 20000)), 0, "run: %s",
		     e2e_tail("run.err", 4096));
	expect_mounted_once("run.err");
	expect_all_traced("client.jsonl", "run.jsonl", 6);
	expect_cpu_busy("summary.json");
}

Test(tracefs, record_mounts_it_says_so_once_and_traces)
{
	char port[16], sum[128], out[128];
	char *argv[] = { "build/tokentrace", "record", "--port", port,
			 "--compute", "cpu", "--summary", sum, "-o", out,
			 NULL };
	int p;
	pid_t tt;

	enter_host_without_tracefs();
	e2e_refserver(NULL, &p);
	snprintf(port, sizeof(port), "%d", p);
	e2e_path(sum, sizeof(sum), "summary.json");
	e2e_path(out, sizeof(out), "rec.jsonl");
	tt = e2e_spawn(argv, "rec.out", "rec.err");
	if (!e2e_wait_text("rec.err", "tracing 1 process(es)", 15000))
		cr_assert_fail("record did not start tracing: %s",
			       e2e_tail("rec.err", 4096));
	run_load(p, 6);
	cr_assert_eq(e2e_exit_of(e2e_stop(tt, SIGINT, 20000)), 0,
		     "record: %s", e2e_tail("rec.err", 4096));
	expect_mounted_once("rec.err");
	expect_all_traced("client.jsonl", "rec.jsonl", 6);
	expect_cpu_busy("summary.json");
}

Test(tracefs, top_mounts_it_says_so_once_and_draws)
{
	char port[16];
	char *argv[] = { "build/tokentrace", "top", "--port", port,
			 "--compute", "cpu", "--duration", "1", NULL };
	int p;

	enter_host_without_tracefs();
	e2e_refserver(NULL, &p);
	snprintf(port, sizeof(port), "%d", p);
	cr_assert_eq(e2e_run(argv, "top.out", "top.err", 30000), 0,
		     "top: %s", e2e_tail("top.err", 4096));
	expect_mounted_once("top.err");
	cr_expect(e2e_file_has("top.out", "busy"), "top drew no frame: %s",
		  e2e_tail("top.out", 4096));
}

/*
 * Without CAP_SYS_ADMIN (dropped from the bounding set, so root's exec
 * does not regain it; CAP_BPF and CAP_PERFMON stay) tracefs cannot be
 * mounted: the command says so, says how to mount it by hand, and exits 4
 * (a missing kernel feature) before libbpf fails on a tracepoint.
 */
Test(tracefs, unmountable_tracefs_is_a_clear_error)
{
	char err[128];
	pid_t p;
	int st;

	enter_host_without_tracefs();
	e2e_path(err, sizeof(err), "run.err");
	p = fork();
	cr_assert(p >= 0);
	if (p == 0) {
		if (!freopen(err, "w", stderr) ||
		    prctl(PR_CAPBSET_DROP, CAP_SYS_ADMIN, 0, 0, 0))
			_exit(126);
		execl("build/tokentrace", "build/tokentrace", "run",
		      "--compute", "cpu", "--", "/bin/true", (char *)NULL);
		_exit(127);
	}
	e2e_track(p, true);
	st = e2e_reap(p, 20000);
	cr_assert_eq(e2e_exit_of(st), 4, "exit %d: %s", e2e_exit_of(st),
		     e2e_tail("run.err", 4096));
	cr_expect(e2e_file_has("run.err", "mount -t tracefs nodev " TRACEFS),
		  "no advice to mount it: %s", e2e_tail("run.err", 4096));
	cr_expect(!e2e_file_has("run.err", "libbpf:"),
		  "libbpf tried a tracepoint anyway: %s",
		  e2e_tail("run.err", 4096));
	cr_expect_neq(access(TRACEFS "/events", F_OK), 0);
}
