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
#include <math.h>
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

static int ag_port;

static void ag_setup(void)
{
	ag_port = 0;
	e2e_setup("agent", 0);
}

static void ag_teardown(void)
{
	e2e_teardown(SIGTERM, false);
}

TestSuite(agent, .init = ag_setup, .fini = ag_teardown, .timeout = 120);

/* ---- the reference server and its load ----------------------------------- */

static void ag_refserver(void)
{
	e2e_refserver(NULL, &ag_port);
}

/* loadgen with the given flags (NULL-terminated), client log client.jsonl. */
static pid_t ag_loadgen_start(const char *const *flags)
{
	static const char *const pre[] = { "--quiet", NULL };
	char url[96];

	snprintf(url, sizeof(url), "http://127.0.0.1:%d", ag_port);
	return e2e_loadgen(url, "client.jsonl", pre, flags, "loadgen.out",
			   "loadgen.err");
}

static int ag_loadgen(const char *const *flags)
{
	int st = e2e_reap(ag_loadgen_start(flags), 60000);

	if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st)) {
		e2e_show("loadgen.err");
		return -1;
	}
	return 0;
}

/* ---- record: trace, summary, metrics ------------------------------------- */

/* The port record serves metrics on, from its stderr line. */
static int ag_metrics_port(void)
{
	char *t = e2e_slurp("rec.err"), *s;
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
	cr_assert_eq(e2e_run(argv, "scrape.txt", "curl.err", 10000), 0,
		     "curl could not scrape %s", url);
	t = e2e_slurp("scrape.txt");
	cr_assert(t, "no scrape output");
	n = ag_requests_total(t);
	free(t);
	return n;
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
	e2e_path(trace, sizeof(trace), "t.tt");
	e2e_path(sum, sizeof(sum), "summary.json");
	p = e2e_spawn(argv, "rec.out", "rec.err");
	if (!e2e_wait_text("rec.err", "tracing 1 process(es)", 15000)) {
		e2e_show("rec.err");
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

	e2e_need_root();
	ag_refserver();
	rec = ag_record_start();
	mport = ag_metrics_port();
	cr_assert_gt(mport, 0, "record did not say where it serves metrics");
	cr_assert_eq(ag_loadgen(lg), 0, "loadgen failed");
	client = e2e_count_lines("client.jsonl");
	cr_assert_eq(client, 24, "the client logged %d requests", client);
	for (int i = 0; i < 50 && scraped != client; i++, e2e_msleep(100))
		scraped = ag_scrape_requests(mport);
	cr_expect_eq(scraped, client, "metrics count %ld requests, the client "
		     "%d", scraped, client);
	st = e2e_stop(rec, SIGINT, 20000);
	e2e_show("rec.err");
	cr_assert(st != -1 && WIFEXITED(st) && !WEXITSTATUS(st),
		  "record did not exit 0 after SIGINT (status %d)", st);
	cr_expect(e2e_wait_text("rec.err", "attribution:", 1), "record printed "
		  "no report at its end");
	e2e_path(trace, sizeof(trace), "t.tt");
	cr_assert_eq(e2e_run(rep, "report.json", "report.err", 30000), 0,
		     "tokentrace report failed on the trace");
	sum = e2e_load_json("summary.json", NULL);
	fromtrace = e2e_load_json("report.json", NULL);
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
		e2e_msleep(20);
		waited += 20;
	}
	if (buf)
		buf[len] = 0;
	return buf;
}

/*
 * Over top's frames: the largest window shown, and the requests counted
 * (req/s of row `name` times the frame's interval, summed). Each frame
 * starts with its header "tokentrace top - ... window W s, every I s".
 */
static double ag_top_count(const char *out, const char *name,
			   double *max_window)
{
	size_t n = strlen(name);
	double count = 0;

	*max_window = 0;
	for (const char *p = out; (p = strstr(p, "tokentrace top - ")); ) {
		const char *next = strstr(p + 1, "tokentrace top - ");
		const char *w = strstr(p, "window ");
		double win = 0, every = 0;

		if (w && (!next || w < next) &&
		    sscanf(w, "window %lf s, every %lf s", &win, &every) == 2) {
			if (win > *max_window)
				*max_window = win;
			for (const char *q = p; (q = strstr(q, name)) &&
			     (!next || q < next); q += n)
				if (q[-1] == '\n' && q[n] == ' ') {
					count += strtod(q + n, NULL) * every;
					break;
				}
		}
		p = next ? next : p + strlen(p);
	}
	return count;
}

/* Requests the client saw finish (lines of its log). */
static int ag_client_requests(void)
{
	char path[256];
	FILE *f;
	int n = 0, c;

	e2e_path(path, sizeof(path), "client.jsonl");
	f = fopen(path, "r");
	if (!f)
		return -1;
	while ((c = fgetc(f)) != EOF)
		n += c == '\n';
	fclose(f);
	return n;
}

/* A sliding window of 2 s: every frame covers at most 2 s, and the
 * requests counted by the rates still add up to what the client saw. */
Test(agent, top_on_a_pipe_prints_frames_with_each_tenant)
{
	const char *lg[] = { "--rate", "20", "--duration", "4", "--tenants",
			     "red:1,blue:1", "--stream", "--max-tokens", "4-8",
			     "--prompt-len", "16-32", NULL };
	char port[16];
	char *argv[] = { "build/tokentrace", "top", "--port", port,
			 "--compute", "cpu", "--duration", "6", "--window",
			 "2", NULL };
	int fds[2], st, frames = 0;
	pid_t top, lg_pid;
	char *out;

	e2e_need_root();
	ag_refserver();
	snprintf(port, sizeof(port), "%d", ag_port);
	cr_assert(!pipe(fds));
	top = e2e_spawn_ex(argv, NULL, "top.err", fds[1], -1, 0);
	close(fds[1]);
	if (!e2e_wait_text("top.err", "tracing 1 process(es)", 15000)) {
		e2e_show("top.err");
		cr_assert_fail("tokentrace top did not start in 15 s");
	}
	lg_pid = ag_loadgen_start(lg);
	out = ag_read_all(fds[0], 30000);
	close(fds[0]);
	st = e2e_reap(top, 20000);
	e2e_reap(lg_pid, 30000);
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
	double win, seen = ag_top_count(out, "ref-tiny", &win);
	int client = ag_client_requests();
	cr_log_info("top counted %.1f requests, the client saw %d; largest "
		    "window %.1f s", seen, client, win);
	cr_expect_leq(win, 2.05, "a frame covered %.1f s, --window is 2 s",
		      win);
	cr_expect_gt(client, 0, "the client log is empty");
	/* the interval is printed to 0.1 s: a few % off at most */
	cr_expect(fabs(seen - client) <= 0.1 * client + 1, "top's rates add "
		  "up to %.1f requests, the client saw %d", seen, client);
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
		/* info, not a warning: Criterion fails a run that warns */
		cr_log_info("skipped: the installed run --compute cupti "
			    "needs root and build/libtokentrace_cupti.so "
			    "(the CUDA toolkit)");
		return;
	}
	cr_expect_eq(e2e_run(argv, "run.out", "run.err", 30000), 0,
		     "the installed run --compute cupti failed");
	cr_expect(!e2e_wait_text("run.err", "CUPTI library missing", 1),
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

	e2e_path(dest, sizeof(dest), "dest");
	snprintf(destarg, sizeof(destarg), "DESTDIR=%s", dest);
	cr_assert_eq(e2e_run(inst, "make.out", "make.err", 110000), 0,
		     "make install failed");
	cr_expect(ag_exists(dest, "/opt/tt/bin/tokentrace", 0755));
	if (access("build/libtokentrace_cupti.so", F_OK) == 0)
		cr_expect(ag_exists(dest, "/opt/tt/lib/tokentrace/"
				    "libtokentrace_cupti.so", 0444));
	cr_expect(ag_exists(dest, "/etc/default/tokentrace", 0444));
	snprintf(unit, sizeof(unit), "dest/opt/tt/lib/systemd/system/"
		 "tokentrace.service");
	text = e2e_slurp(unit);
	cr_assert(text, "no unit at $DESTDIR/opt/tt/lib/systemd/system");
	cr_expect(strstr(text, "exec /opt/tt/bin/tokentrace record"),
		  "the unit does not run the installed binary:\n%s", text);
	cr_expect(strstr(text, "--metrics 127.0.0.1:9464"));
	free(text);
	snprintf(bin, sizeof(bin), "%s/opt/tt/bin/tokentrace", dest);
	cr_expect_eq(e2e_run(help, "help.out", "help.err", 10000), 0);
	cr_expect(e2e_wait_text("help.out", "record", 1));
	cr_expect_eq(e2e_run(rhelp, "rhelp.out", "rhelp.err", 10000), 0);
	cr_expect(e2e_wait_text("rhelp.out", "--metrics", 1));
	ag_installed_run_finds_cupti(bin);
	cr_expect_eq(e2e_run(uninst, "make.out", "make.err", 30000), 0);
	cr_expect(!ag_exists(dest, "/opt/tt/bin/tokentrace", 0));
	cr_expect(ag_exists(dest, "/etc/default/tokentrace", 0),
		  "uninstall removed the administrator's settings");
}
