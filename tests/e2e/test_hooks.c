/*
 * test_hooks.c - the socket hooks, end to end: with libc hooks a process
 * that is not traced never enters a tokentrace program (the kernel's own
 * run counts of the tracer's programs say so), while with the syscall
 * tracepoints it enters one on every write; a pre-forking server's
 * children are followed and their requests traced.
 *
 * In:  build/tokentrace, build/refserver, build/loadgen, dd(1), python3.
 * Out: Criterion suite "hooks".
 * Assumes: root (eBPF). Run counts are read with BPF_ENABLE_STATS, which
 *      lasts while this test holds its fd and changes nothing after it;
 *      the programs counted are the tracer's own (their ids from its
 *      /proc/PID/fdinfo), so other tracers on the host do not count.
 */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <cJSON.h>
#include <criterion/criterion.h>
#include <criterion/logging.h>

#include "harness.h"

static void setup(void)
{
	e2e_setup("hooks", 0);
}

static void teardown(void)
{
	e2e_teardown(SIGTERM, false);
}

TestSuite(hooks, .init = setup, .fini = teardown, .timeout = 120);

/* The sum of run_cnt of the programs called name that process pid holds. */
static unsigned long long run_count(pid_t pid, const char *name)
{
	char dir[64], path[320], line[128];
	unsigned long long sum = 0;
	struct dirent *de;
	DIR *d;

	snprintf(dir, sizeof(dir), "/proc/%d/fdinfo", (int)pid);
	d = opendir(dir);
	cr_assert_not_null(d, "%s: %s", dir, strerror(errno));
	while ((de = readdir(d))) {
		FILE *f;
		unsigned id = 0;

		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		f = fopen(path, "r");
		if (!f)
			continue;
		while (fgets(line, sizeof(line), f))
			if (sscanf(line, "prog_id: %u", &id) == 1)
				break;
		fclose(f);
		if (id) {
			struct bpf_prog_info info = { 0 };
			__u32 len = sizeof(info);
			int fd = bpf_prog_get_fd_by_id(id);

			if (fd < 0)
				continue;
			if (!bpf_obj_get_info_by_fd(fd, &info, &len) &&
			    !strcmp(info.name, name))
				sum += info.run_cnt;
			close(fd);
		}
	}
	closedir(d);
	return sum;
}

static const char *rec_err = "rec.err";

/* `tokentrace record --pid target --hooks hooks` (and extra, may be
 * NULL), its stderr in the file rec_err; waits until it traces. */
static pid_t start_tracer(pid_t target, const char *hooks, const char *extra)
{
	char pid[16];
	char *argv[] = { "build/tokentrace", "record", "--pid", pid, "--hooks",
			 (char *)hooks, "-o", (char *)e2e_tpath("rec.jsonl"),
			 (char *)extra, NULL };
	pid_t t;

	snprintf(pid, sizeof(pid), "%d", (int)target);
	t = e2e_spawn(argv, "rec.out", rec_err);
	if (!e2e_wait_text(rec_err, "tracing 1 process(es)", 20000))
		cr_assert_fail("record did not start: %s",
			       e2e_tail(rec_err, 4096));
	return t;
}

static void stop_tracer(pid_t t)
{
	cr_assert_eq(e2e_exit_of(e2e_stop(t, SIGINT, 30000)), 0,
		     "record: %s", e2e_tail(rec_err, 4096));
}

#define DD_BLOCKS	20000

/* An untraced dd: DD_BLOCKS reads and DD_BLOCKS writes. */
static void run_dd(void)
{
	char count[32];
	char *argv[] = { "dd", "if=/dev/zero", "of=/dev/null", "bs=64", count,
			 NULL };

	snprintf(count, sizeof(count), "count=%d", DD_BLOCKS);
	cr_assert_eq(e2e_run(argv, "dd.out", NULL, 30000), 0, "dd failed");
}

/*
 * The traced refserver idles; an untraced dd reads and writes. With libc
 * hooks no tokentrace program runs for dd's calls (the server's own calls,
 * a handful at idle, are all they count), and the syscall tracepoint
 * programs are not even attached; with the syscall tracepoints every one
 * of dd's writes enters enter_write. The check would fail if the libc
 * probes were system-wide or the tracepoints were attached.
 */
Test(hooks, an_untraced_process_enters_no_program_with_libc_hooks)
{
	const char *lg[] = { "--requests", "4", "--stream", "--max-tokens",
			     "8", NULL };
	unsigned long long w0, w1, e0, e1;
	char url[96];
	int stats, port;
	pid_t srv, t;

	e2e_need_tools();
	stats = bpf_enable_stats(BPF_STATS_RUN_TIME);
	if (stats < 0)
		e2e_skip("BPF_ENABLE_STATS: %s", strerror(errno));
	srv = e2e_refserver(NULL, &port);

	t = start_tracer(srv, "libc", NULL);
	cr_expect(e2e_file_has("rec.err", "with libc hooks"),
		  "%s", e2e_tail("rec.err", 4096));
	w0 = run_count(t, "libc_out_buf") + run_count(t, "libc_in_buf");
	e0 = run_count(t, "enter_write");
	run_dd();
	w1 = run_count(t, "libc_out_buf") + run_count(t, "libc_in_buf");
	e1 = run_count(t, "enter_write");
	cr_log_info("libc hooks: %llu libc program runs, %llu enter_write "
		    "runs during %d untraced reads and writes", w1 - w0,
		    e1 - e0, 2 * DD_BLOCKS);
	cr_expect_lt(w1 - w0, 1000, "the libc programs ran %llu times for "
		     "an untraced dd", w1 - w0);
	cr_expect_eq(e1 - e0, 0, "a syscall tracepoint is attached");
	/* the traced server's own writes do run them */
	snprintf(url, sizeof(url), "http://127.0.0.1:%d", port);
	cr_assert_eq(e2e_finish(e2e_loadgen(url, "client.jsonl", NULL, lg,
					    "lg.out", NULL), 60000), 0);
	w0 = run_count(t, "libc_out_buf");
	cr_expect_geq(w0, 4 * 8, "the server's %d token writes ran the libc "
		      "program %llu times", 4 * 8, w0);
	stop_tracer(t);

	rec_err = "rec2.err";
	t = start_tracer(srv, "syscalls", NULL);
	cr_expect(e2e_file_has(rec_err, "with syscalls hooks"));
	e0 = run_count(t, "enter_write");
	run_dd();
	e1 = run_count(t, "enter_write");
	cr_log_info("syscall hooks: %llu enter_write runs", e1 - e0);
	cr_expect_geq(e1 - e0, DD_BLOCKS, "enter_write ran %llu times for "
		      "%d writes of an untraced dd", e1 - e0, DD_BLOCKS);
	stop_tracer(t);
	close(stats);
}

/* A pre-forking server: the parent listens, then, once told (a file
 * appears), forks two workers that accept on its socket and answer
 * /v1/completions with a usage block. */
static const char prefork_py[] =
"import json, os, socket, sys, time\n"
"s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
"s.bind(('127.0.0.1', 0)); s.listen(64)\n"
"open(sys.argv[1] + '.tmp', 'w').write(str(s.getsockname()[1]))\n"
"os.rename(sys.argv[1] + '.tmp', sys.argv[1])\n"
"while not os.path.exists(sys.argv[2]): time.sleep(0.01)\n"
"def serve():\n"
"    while True:\n"
"        c, _ = s.accept(); f = c.makefile('rb')\n"
"        n = 0\n"
"        while True:\n"
"            l = f.readline()\n"
"            if l.lower().startswith(b'content-length:'): n = int(l.split(b':')[1])\n"
"            if l in (b'\\r\\n', b''): break\n"
"        f.read(n)\n"
"        b = json.dumps({'id': 'w%d-%d' % (os.getpid(), time.monotonic_ns()),\n"
"            'object': 'text_completion', 'model': 'prefork',\n"
"            'choices': [{'index': 0, 'text': 'abc', 'finish_reason': 'length'}],\n"
"            'usage': {'prompt_tokens': 5, 'completion_tokens': 3, 'total_tokens': 8}}).encode()\n"
"        c.sendall(b'HTTP/1.1 200 OK\\r\\nContent-Type: application/json\\r\\n'\n"
"            b'Connection: close\\r\\nContent-Length: %d\\r\\n\\r\\n' % len(b) + b)\n"
"        f.close(); c.close()\n"
"kids = []\n"
"for _ in range(2):\n"
"    p = os.fork()\n"
"    if p == 0: serve()\n"
"    kids.append(p)\n"
"for p in kids: os.waitpid(p, 0)\n";

Test(hooks, the_workers_of_a_preforking_server_are_followed)
{
	char py[128], portf[128], go[128];
	char *argv[] = { "/usr/bin/python3", py, portf, go, NULL };
	char url[96];
	const char *flags[] = { "--requests", "12", "--concurrency", "2",
				"--close", NULL };
	cJSON *lines[64];
	int port, n, from_workers = 0;
	pid_t srv, t;
	FILE *f;

	e2e_need_tools();
	e2e_path(py, sizeof(py), "prefork.py");
	e2e_path(portf, sizeof(portf), "port");
	e2e_path(go, sizeof(go), "go");
	f = fopen(py, "w");
	cr_assert_not_null(f);
	fputs(prefork_py, f);
	fclose(f);
	srv = e2e_spawn(argv, "srv.out", NULL);
	port = e2e_wait_port("port", srv, 15000, "srv.out", "prefork server");
	t = start_tracer(srv, "libc", "--verbose");
	f = fopen(go, "w");	/* fork now */
	cr_assert_not_null(f);
	fclose(f);
	for (int w = 0; w <= 20000; w += 20) {
		char *log = e2e_slurp("rec.err");
		int k = 0;

		for (char *p = log; p && (p = strstr(p, "following pid"));
		     p++)
			k++;
		free(log);
		if (k >= 2)
			break;
		cr_assert_lt(w, 20000, "the two workers were not followed: %s",
			     e2e_tail("rec.err", 4096));
		e2e_msleep(20);
	}
	snprintf(url, sizeof(url), "http://127.0.0.1:%d", port);
	cr_assert_eq(e2e_finish(e2e_loadgen(url, "client.jsonl", NULL, flags,
					    "lg.out", NULL), 60000), 0,
		     "loadgen: %s", e2e_tail("lg.out", 4096));
	stop_tracer(t);
	n = e2e_read_jsonl("rec.jsonl", lines, 64);
	for (int i = 0; i < n; i++) {
		from_workers += e2e_num_or(lines[i], "pid", -1) != srv &&
				e2e_num_or(lines[i], "completion_tokens", 0) == 3;
		cJSON_Delete(lines[i]);
	}
	cr_expect_eq(from_workers, 12, "%d of 12 requests traced in the "
		     "workers: %s", from_workers, e2e_tail("rec.err", 4096));
}

/*
 * A libc-hooked process that execs a statically linked program (whose
 * syscalls no libc uprobe can see) is moved to the syscall tracepoints:
 * the tracer says so, and its summary says both kinds were used.
 */
Test(hooks, exec_into_a_static_program_moves_to_the_syscall_tracepoints)
{
	static const char src[] = "#include <unistd.h>\n"
				  "int main(void) { sleep(3); return 0; }\n";
	static const char py[] =
		"import os, socket, sys, time\n"
		"open(sys.argv[3], 'w').close()\n"
		"while not os.path.exists(sys.argv[2]): time.sleep(0.01)\n"
		"os.execv(sys.argv[1], [sys.argv[1]])\n";
	char c[128], bin[128], script[128], go[128], sum[128], ready[128];
	char *cc[] = { "gcc", "-static", "-O1", "-o", bin, c, NULL };
	char *argv[] = { "/usr/bin/python3", script, bin, go, ready, NULL };
	char pid[16];
	char *rec[] = { "build/tokentrace", "record", "--pid", pid,
			"--verbose", "--summary", sum, NULL };
	pid_t p, t;
	cJSON *o;
	FILE *f;

	e2e_need_tools();
	e2e_path(c, sizeof(c), "sleeper.c");
	e2e_path(bin, sizeof(bin), "sleeper");
	e2e_path(script, sizeof(script), "exec.py");
	e2e_path(go, sizeof(go), "go");
	e2e_path(sum, sizeof(sum), "summary.json");
	e2e_path(ready, sizeof(ready), "ready");
	f = fopen(c, "w");
	cr_assert_not_null(f);
	fputs(src, f);
	fclose(f);
	f = fopen(script, "w");
	cr_assert_not_null(f);
	fputs(py, f);
	fclose(f);
	if (e2e_run(cc, "cc.out", NULL, 60000) != 0)
		e2e_skip("gcc -static could not build a static program "
			 "(no libc.a?): %s", e2e_tail("cc.out", 1024));
	p = e2e_spawn(argv, "py.out", NULL);
	for (int w = 0; access(ready, F_OK); w += 10) {
		cr_assert_lt(w, 15000, "python did not start: %s",
			     e2e_tail("py.out", 1024));
		e2e_msleep(10);
	}
	snprintf(pid, sizeof(pid), "%d", (int)p);
	t = e2e_spawn(rec, "rec.out", "rec.err");
	cr_assert(e2e_wait_text("rec.err", "tracing 1 process(es) with libc "
				"hooks", 20000), "%s",
		  e2e_tail("rec.err", 4096));
	f = fopen(go, "w");
	cr_assert_not_null(f);
	fclose(f);
	cr_expect(e2e_wait_text("rec.err", "exec'd: syscalls hooks now",
				10000), "the exec was not seen: %s",
		  e2e_tail("rec.err", 4096));
	cr_assert_eq(e2e_exit_of(e2e_stop(t, SIGINT, 30000)), 0);
	o = e2e_load_json("summary.json", "rec.err");
	cr_expect_str_eq(e2e_str_or(o, "hooks"), "libc+syscalls");
	cJSON_Delete(o);
}
