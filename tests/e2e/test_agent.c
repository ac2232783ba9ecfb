/*
 * test_agent.c - tokentrace as a host agent, end to end: `record` keeping a
 * trace, a JSON summary and a metrics endpoint on a live reference server;
 * the live `top` view read from a pipe; `make install` into a DESTDIR.
 *
 * In:  build/tokentrace, build/refserver, build/loadgen, curl(1), make(1);
 *      run from the repository root.
 * Out: Criterion suite "agent".
 * Assumes: root for the tests that load eBPF programs (they skip with the
 *      reason otherwise). Servers pick their own port (--port 0
 *      --port-file). Every process a test starts is killed and reaped in
 *      the fixture's fini; each test works in its own temporary folder,
 *      removed at the end. Load is kept small (the cores are shared).
 */
#include <errno.h>
#include <fcntl.h>
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

#define AG_MAX_PIDS	8

static pid_t ag_pids[AG_MAX_PIDS];
static char ag_dir[64];
static int ag_port;

/* ---- processes ----------------------------------------------------------- */

static void ag_msleep(int ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

static void ag_track(pid_t p, bool on)
{
	for (int i = 0; i < AG_MAX_PIDS; i++) {
		if (on && !ag_pids[i]) {
			ag_pids[i] = p;
			return;
		}
		if (!on && ag_pids[i] == p)
			ag_pids[i] = 0;
	}
}

/* Waits for p up to ms; its wait status, or -1 if it still runs. */
static int ag_reap(pid_t p, int ms)
{
	int st;

	for (int waited = 0;; waited += 10) {
		pid_t r = waitpid(p, &st, WNOHANG);

		if (r == p) {
			ag_track(p, false);
			return st;
		}
		if (r < 0 || waited >= ms)
			return -1;
		ag_msleep(10);
	}
}

static int ag_stop(pid_t p, int sig, int ms)
{
	int st;

	if (p <= 0)
		return -1;
	kill(p, sig);
	st = ag_reap(p, ms);
	if (st == -1) {
		kill(p, SIGKILL);
		st = ag_reap(p, 3000);
	}
	return st;
}

static void ag_path(char *out, size_t n, const char *name)
{
	cr_assert(ag_dir[0], "the test folder was not made");
	snprintf(out, n, "%s/%s", ag_dir, name);
}

/* Starts argv; stdout to out_fd if >= 0, else to the file out; stderr to
 * the file err (both in the test folder). */
static pid_t ag_spawn_fd(char *const argv[], int out_fd, const char *out,
			 const char *err)
{
	char o[128], e[128];
	pid_t p;

	ag_path(o, sizeof(o), out ? out : "null.out");
	ag_path(e, sizeof(e), err);
	p = fork();
	cr_assert(p >= 0, "fork failed: %s", strerror(errno));
	if (p == 0) {
		if (out_fd >= 0 ? dup2(out_fd, 1) < 0 : !freopen(o, "w", stdout))
			_exit(126);
		if (!freopen(e, "w", stderr))
			_exit(126);
		execvp(argv[0], argv);
		fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	ag_track(p, true);
	return p;
}

static pid_t ag_spawn(char *const argv[], const char *out, const char *err)
{
	return ag_spawn_fd(argv, -1, out, err);
}

/* Runs argv to its end (at most ms); its exit code, or -1. */
static int ag_run(char *const argv[], const char *out, const char *err,
		  int ms)
{
	pid_t p = ag_spawn(argv, out, err);
	int st = ag_reap(p, ms);

	if (st == -1) {
		ag_stop(p, SIGKILL, 3000);
		return -1;
	}
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* The whole file (NUL-terminated, malloc'd), or NULL. */
static char *ag_slurp(const char *name)
{
	char p[128];
	char *buf;
	long n;
	FILE *f;

	ag_path(p, sizeof(p), name);
	f = fopen(p, "r");
	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	rewind(f);
	buf = malloc(n + 1);
	if (buf && fread(buf, 1, n, f) != (size_t)n)
		n = 0;
	if (buf)
		buf[n] = 0;
	fclose(f);
	return buf;
}

static void ag_show(const char *name)
{
	char *t = ag_slurp(name);

	if (t)
		cr_log_info("%s:\n%s", name, t);
	free(t);
}

/* Waits until file name holds text; false after ms. */
static bool ag_wait_text(const char *name, const char *text, int ms)
{
	for (int waited = 0; waited < ms; waited += 20) {
		char *t = ag_slurp(name);
		bool found = t && strstr(t, text);

		free(t);
		if (found)
			return true;
		ag_msleep(20);
	}
	return false;
}

static void ag_setup(void)
{
	memset(ag_pids, 0, sizeof(ag_pids));
	ag_port = 0;
	snprintf(ag_dir, sizeof(ag_dir), "/tmp/tt-agent-XXXXXX");
	cr_assert(mkdtemp(ag_dir), "mkdtemp: %s", strerror(errno));
}

static void ag_teardown(void)
{
	char cmd[128];

	for (int i = 0; i < AG_MAX_PIDS; i++)
		if (ag_pids[i])
			ag_stop(ag_pids[i], SIGTERM, 3000);
	if (strncmp(ag_dir, "/tmp/tt-agent-", 14))
		return;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", ag_dir);
	if (system(cmd) != 0)
		cr_log_warn("could not remove %s", ag_dir);
}

TestSuite(agent, .init = ag_setup, .fini = ag_teardown, .timeout = 120);

static void ag_need_root(void)
{
	if (geteuid() != 0)
		cr_skip_test("needs root to load eBPF programs");
}

/* ---- the reference server and its load ----------------------------------- */

static void ag_refserver(void)
{
	char pf[128], truth[128];
	char *argv[] = { "build/refserver", "--port", "0", "--port-file", pf,
			 "--truth", truth, NULL };
	char *t;

	ag_path(pf, sizeof(pf), "port");
	ag_path(truth, sizeof(truth), "truth.jsonl");
	ag_spawn(argv, "server.out", "server.err");
	for (int waited = 0; waited < 10000 && !ag_port; waited += 20) {
		t = ag_slurp("port");
		ag_port = t ? atoi(t) : 0;
		free(t);
		if (!ag_port)
			ag_msleep(20);
	}
	if (!ag_port)
		ag_show("server.err");
	cr_assert(ag_port > 0, "the server wrote no port file in 10 s");
}

/* loadgen with the given flags (NULL-terminated), client log client.jsonl. */
static pid_t ag_loadgen_start(const char *const *flags)
{
	char url[96], out[128];
	char *argv[32] = { "build/loadgen", "--url", url, "--out", out,
			   "--quiet" };
	int n = 6;

	snprintf(url, sizeof(url), "http://127.0.0.1:%d", ag_port);
	ag_path(out, sizeof(out), "client.jsonl");
	for (int i = 0; flags[i] && n < 31; i++)
		argv[n++] = (char *)flags[i];
	argv[n] = NULL;
	return ag_spawn(argv, "loadgen.out", "loadgen.err");
}

static int ag_loadgen(const char *const *flags)
{
	int st = ag_reap(ag_loadgen_start(flags), 60000);

	if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st)) {
		ag_show("loadgen.err");
		return -1;
	}
	return 0;
}

static int ag_count_lines(const char *name)
{
	char *t = ag_slurp(name);
	int n = 0;

	for (char *p = t; p && *p; p++)
		n += *p == '\n';
	free(t);
	return n;
}

/* ---- record: trace, summary, metrics ------------------------------------- */

/* The port record serves metrics on, from its stderr line. */
static int ag_metrics_port(void)
{
	char *t = ag_slurp("rec.err"), *s;
	int port = 0;

	s = t ? strstr(t, "metrics at http://127.0.0.1:") : NULL;
	if (s)
		port = atoi(s + strlen("metrics at http://127.0.0.1:"));
	free(t);
	return port;
}

/* Sum of the tokentrace_requests_total samples in a scrape. */
static long ag_requests_total(const char *scrape)
{
	const char *name = "tokentrace_requests_total{";
	long sum = 0;

	for (const char *p = strstr(scrape, name); p;
	     p = strstr(p + 1, name)) {
		const char *v = strchr(p, '}');

		if (v && (p == scrape || p[-1] == '\n'))
			sum += strtol(v + 1, NULL, 10);
	}
	return sum;
}

static long ag_scrape_requests(int port)
{
	char url[96];
	char *argv[] = { "curl", "-sf", url, NULL };
	char *t;
	long n;

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/metrics", port);
	cr_assert_eq(ag_run(argv, "scrape.txt", "curl.err", 10000), 0,
		     "curl could not scrape %s", url);
	t = ag_slurp("scrape.txt");
	cr_assert(t, "no scrape output");
	n = ag_requests_total(t);
	free(t);
	return n;
}

static cJSON *ag_load_json(const char *name)
{
	char *t = ag_slurp(name);
	cJSON *j = t ? cJSON_Parse(t) : NULL;

	free(t);
	cr_assert(j, "%s is not JSON", name);
	return j;
}

static bool ag_has_id(const cJSON *reqs, const char *id)
{
	const cJSON *r;

	cJSON_ArrayForEach(r, reqs) {
		const cJSON *v = cJSON_GetObjectItemCaseSensitive(r, "id");

		if (cJSON_IsString(v) && !strcmp(v->valuestring, id))
			return true;
	}
	return false;
}

/* Every request of a is in b, and they have as many. */
static void ag_same_requests(const cJSON *a, const cJSON *b)
{
	const cJSON *r;

	cr_assert_eq(cJSON_GetArraySize(a), cJSON_GetArraySize(b),
		     "the trace reports %d requests, the summary %d",
		     cJSON_GetArraySize(a), cJSON_GetArraySize(b));
	cJSON_ArrayForEach(r, a) {
		const cJSON *v = cJSON_GetObjectItemCaseSensitive(r, "id");

		cr_assert(cJSON_IsString(v), "a request without an id");
		cr_expect(ag_has_id(b, v->valuestring), "request %s is in "
			  "the trace's report, not in the summary",
			  v->valuestring);
	}
}

static pid_t ag_record_start(void)
{
	char port[16], trace[128], sum[128];
	char *argv[] = { "build/tokentrace", "record", "--port", port, "-o",
			 trace, "--summary", sum, "--metrics", "127.0.0.1:0",
			 "--compute", "cpu", NULL };
	pid_t p;

	snprintf(port, sizeof(port), "%d", ag_port);
	ag_path(trace, sizeof(trace), "t.tt");
	ag_path(sum, sizeof(sum), "summary.json");
	p = ag_spawn(argv, "rec.out", "rec.err");
	if (!ag_wait_text("rec.err", "tracing 1 process(es)", 15000)) {
		ag_show("rec.err");
		cr_assert_fail("tokentrace record did not start in 15 s");
	}
	return p;
}

Test(agent, record_trace_summary_and_metrics_agree_with_client)
{
	const char *lg[] = { "--concurrency", "4", "--requests", "24",
			     "--tenants", "red:1,blue:1", "--stream",
			     "--max-tokens", "4-8", "--prompt-len", "16-32",
			     NULL };
	char trace[128];
	char *rep[] = { "build/tokentrace", "report", trace, "--format",
			"json", NULL };
	cJSON *sum, *fromtrace;
	long scraped = -1;
	int st, client, mport;
	pid_t rec;

	ag_need_root();
	ag_refserver();
	rec = ag_record_start();
	mport = ag_metrics_port();
	cr_assert_gt(mport, 0, "record did not say where it serves metrics");
	cr_assert_eq(ag_loadgen(lg), 0, "loadgen failed");
	client = ag_count_lines("client.jsonl");
	cr_assert_eq(client, 24, "the client logged %d requests", client);
	for (int i = 0; i < 50 && scraped != client; i++, ag_msleep(100))
		scraped = ag_scrape_requests(mport);
	cr_expect_eq(scraped, client, "metrics count %ld requests, the client "
		     "%d", scraped, client);
	st = ag_stop(rec, SIGINT, 20000);
	ag_show("rec.err");
	cr_assert(st != -1 && WIFEXITED(st) && !WEXITSTATUS(st),
		  "record did not exit 0 after SIGINT (status %d)", st);
	cr_expect(ag_wait_text("rec.err", "attribution:", 1), "record printed "
		  "no report at its end");
	ag_path(trace, sizeof(trace), "t.tt");
	cr_assert_eq(ag_run(rep, "report.json", "report.err", 30000), 0,
		     "tokentrace report failed on the trace");
	sum = ag_load_json("summary.json");
	fromtrace = ag_load_json("report.json");
	cr_expect_eq(cJSON_GetArraySize(cJSON_GetObjectItem(sum, "requests")),
		     client, "the summary lacks requests the client made");
	ag_same_requests(cJSON_GetObjectItem(fromtrace, "requests"),
			 cJSON_GetObjectItem(sum, "requests"));
	cr_expect_gt(cJSON_GetArraySize(cJSON_GetObjectItem(sum, "devices")),
		     0, "--compute cpu gave no device");
	cJSON_Delete(sum);
	cJSON_Delete(fromtrace);
}

/* ---- top on a pipe ------------------------------------------------------- */

/* The highest req/s of the rows named name over all frames of out, or -1
 * if no row has that name. */
static double ag_top_req_s(const char *out, const char *name)
{
	size_t n = strlen(name);
	double best = -1;

	for (const char *p = out; (p = strstr(p, name)); p += n)
		if ((p == out || p[-1] == '\n') && p[n] == ' ') {
			double v = strtod(p + n, NULL);

			if (v > best)
				best = v;
		}
	return best;
}

static char *ag_read_all(int fd, int ms)
{
	size_t len = 0, cap = 1 << 16;
	char *buf = malloc(cap + 1);
	ssize_t r;

	fcntl(fd, F_SETFL, O_NONBLOCK);
	for (int waited = 0; buf && waited < ms; ) {
		r = read(fd, buf + len, cap - len);
		if (r == 0)
			break;
		if (r > 0) {
			len += r;
			if (len == cap)
				break;
			continue;
		}
		ag_msleep(20);
		waited += 20;
	}
	if (buf)
		buf[len] = 0;
	return buf;
}

Test(agent, top_on_a_pipe_prints_frames_with_each_tenant)
{
	const char *lg[] = { "--rate", "20", "--duration", "4", "--tenants",
			     "red:1,blue:1", "--stream", "--max-tokens", "4-8",
			     "--prompt-len", "16-32", NULL };
	char port[16];
	char *argv[] = { "build/tokentrace", "top", "--port", port,
			 "--compute", "cpu", "--duration", "6", NULL };
	int fds[2], st, frames = 0;
	pid_t top, lg_pid;
	char *out;

	ag_need_root();
	ag_refserver();
	snprintf(port, sizeof(port), "%d", ag_port);
	cr_assert(!pipe(fds));
	top = ag_spawn_fd(argv, fds[1], NULL, "top.err");
	close(fds[1]);
	if (!ag_wait_text("top.err", "tracing 1 process(es)", 15000)) {
		ag_show("top.err");
		cr_assert_fail("tokentrace top did not start in 15 s");
	}
	lg_pid = ag_loadgen_start(lg);
	out = ag_read_all(fds[0], 30000);
	close(fds[0]);
	st = ag_reap(top, 20000);
	ag_reap(lg_pid, 30000);
	cr_assert(out);
	cr_log_info("top printed:\n%s", out);
	cr_expect(st != -1 && WIFEXITED(st) && !WEXITSTATUS(st),
		  "top did not exit 0 at the end of --duration (status %d)",
		  st);
	for (const char *p = out; (p = strstr(p, "tokentrace top - ")); p++)
		frames++;
	cr_expect_geq(frames, 3, "top printed %d frames in 6 s", frames);
	cr_expect(!strstr(out, "\033["), "ANSI codes on a pipe");
	cr_expect_gt(ag_top_req_s(out, "red"), 0, "no req/s for tenant red");
	cr_expect_gt(ag_top_req_s(out, "blue"), 0, "no req/s for tenant blue");
	cr_expect_gt(ag_top_req_s(out, "ref-tiny"), 0,
		     "no req/s for the model");
	free(out);
}

/* ---- make install -------------------------------------------------------- */

static bool ag_exists(const char *root, const char *rel, mode_t want)
{
	char p[256];
	struct stat sb;

	snprintf(p, sizeof(p), "%s%s", root, rel);
	return !stat(p, &sb) && (sb.st_mode & want) == want;
}

/* As root, with the library built: the installed `run --compute cupti`
 * finds it in PREFIX/lib/tokentrace (nothing is next to the binary). */
static void ag_installed_run_finds_cupti(char *bin)
{
	char *argv[] = { bin, "run", "--compute", "cupti", "--duration", "5",
			 "--", "true", NULL };

	if (geteuid() != 0 ||
	    access("build/libtokentrace_cupti.so", F_OK) != 0) {
		cr_log_warn("installed run not checked: needs root and "
			    "build/libtokentrace_cupti.so");
		return;
	}
	cr_expect_eq(ag_run(argv, "run.out", "run.err", 30000), 0,
		     "the installed run --compute cupti failed");
	cr_expect(!ag_wait_text("run.err", "CUPTI library missing", 1),
		  "the installed run did not find the CUPTI library");
}

Test(agent, make_install_into_destdir_gives_a_working_agent)
{
	char dest[128], destarg[160], prefix[] = "PREFIX=/opt/tt";
	char bin[192], unit[160];
	char *inst[] = { "make", "-s", "install", destarg, prefix, NULL };
	char *uninst[] = { "make", "-s", "uninstall", destarg, prefix, NULL };
	char *help[] = { bin, "--help", NULL };
	char *rhelp[] = { bin, "record", "--help", NULL };
	char *text;

	ag_path(dest, sizeof(dest), "dest");
	snprintf(destarg, sizeof(destarg), "DESTDIR=%s", dest);
	cr_assert_eq(ag_run(inst, "make.out", "make.err", 110000), 0,
		     "make install failed");
	cr_expect(ag_exists(dest, "/opt/tt/bin/tokentrace", 0755));
	if (access("build/libtokentrace_cupti.so", F_OK) == 0)
		cr_expect(ag_exists(dest, "/opt/tt/lib/tokentrace/"
				    "libtokentrace_cupti.so", 0444));
	cr_expect(ag_exists(dest, "/etc/default/tokentrace", 0444));
	snprintf(unit, sizeof(unit), "dest/opt/tt/lib/systemd/system/"
		 "tokentrace.service");
	text = ag_slurp(unit);
	cr_assert(text, "no unit at $DESTDIR/opt/tt/lib/systemd/system");
	cr_expect(strstr(text, "exec /opt/tt/bin/tokentrace record"),
		  "the unit does not run the installed binary:\n%s", text);
	cr_expect(strstr(text, "--metrics 127.0.0.1:9464"));
	free(text);
	snprintf(bin, sizeof(bin), "%s/opt/tt/bin/tokentrace", dest);
	cr_expect_eq(ag_run(help, "help.out", "help.err", 10000), 0);
	cr_expect(ag_wait_text("help.out", "record", 1));
	cr_expect_eq(ag_run(rhelp, "rhelp.out", "rhelp.err", 10000), 0);
	cr_expect(ag_wait_text("rhelp.out", "--metrics", 1));
	ag_installed_run_finds_cupti(bin);
	cr_expect_eq(ag_run(uninst, "make.out", "make.err", 30000), 0);
	cr_expect(!ag_exists(dest, "/opt/tt/bin/tokentrace", 0));
	cr_expect(ag_exists(dest, "/etc/default/tokentrace", 0),
		  "uninstall removed the administrator's settings");
}
