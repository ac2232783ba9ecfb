/*
 * harness.c - the shared end-to-end test harness (see harness.h): the
 * per-test folder, spawning and reaping child processes, files, the
 * reference server's port file, loadgen and cJSON field helpers.
 *
 * In:  calls from the e2e suites, inside a Criterion test or fixture.
 * Out: child processes (tracked, ended by e2e_teardown), files in the
 *      test's folder, Criterion failures and skips.
 * Assumes: one test per process (Criterion's default), so the folder and
 *      the pid table are plain globals; run from the repository root.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <criterion/logging.h>

#include "harness.h"

char e2e_dir[64];
static pid_t e2e_pids[E2E_MAX_PIDS];

/* ---- folder and fixture -------------------------------------------------- */

void e2e_setup(const char *name, mode_t mode)
{
	memset(e2e_pids, 0, sizeof(e2e_pids));
	snprintf(e2e_dir, sizeof(e2e_dir), "/tmp/tt-%s-XXXXXX", name);
	cr_assert(mkdtemp(e2e_dir), "mkdtemp %s: %s", e2e_dir,
		  strerror(errno));
	if (mode && chmod(e2e_dir, mode))
		cr_log_warn("chmod %s: %s", e2e_dir, strerror(errno));
}

static void e2e_end_all(int sig)
{
	for (int i = 0; i < E2E_MAX_PIDS; i++) {
		pid_t p = e2e_pids[i];

		if (!p)
			continue;
		if (e2e_stop(p, sig, 3000) == -1) {
			/* not our child, or it would not die: give it a
			 * moment and forget it */
			e2e_msleep(50);
		}
		e2e_pids[i] = 0;
	}
}

void e2e_teardown(int sig, bool keep_ok)
{
	char cmd[128];

	e2e_end_all(sig);
	if (strncmp(e2e_dir, "/tmp/tt-", 8))
		return;
	/* TT_KEEP keeps the files of a failure */
	if (keep_ok && getenv("TT_KEEP")) {
		fprintf(stderr, "kept %s\n", e2e_dir);
		return;
	}
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", e2e_dir);
	if (system(cmd) != 0)
		cr_log_warn("could not remove %s", e2e_dir);
}

void e2e_path(char *out, size_t n, const char *name)
{
	if (name[0] == '/') {
		snprintf(out, n, "%s", name);
		return;
	}
	cr_assert(e2e_dir[0], "the test folder was not made (no e2e_setup)");
	snprintf(out, n, "%s/%s", e2e_dir, name);
}

const char *e2e_tpath(const char *name)
{
	static char p[8][128];
	static int k;

	k = (k + 1) % 8;
	e2e_path(p[k], sizeof(p[k]), name);
	return p[k];
}

const char *e2e_bin_for_anyone(const char *name)
{
	static char to[128];
	char from[128], cmd[512];
	struct stat st;

	snprintf(from, sizeof(from), "build/%s", name);
	e2e_path(to, sizeof(to), name);
	snprintf(cmd, sizeof(cmd), "cp '%s' '%s' && chmod 0755 '%s'", from, to,
		 to);
	cr_assert_eq(system(cmd), 0, "cannot copy %s into %s", from, e2e_dir);
	if (stat(e2e_dir, &st) == 0 && (st.st_mode & 0711) != 0711)
		chmod(e2e_dir, (st.st_mode & 07777) | 0711);
	return to;
}

/* ---- processes ----------------------------------------------------------- */

void e2e_msleep(int ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

void e2e_track(pid_t p, bool on)
{
	for (int i = 0; i < E2E_MAX_PIDS; i++) {
		if (on && !e2e_pids[i]) {
			e2e_pids[i] = p;
			return;
		}
		if (!on && e2e_pids[i] == p)
			e2e_pids[i] = 0;
	}
	if (on)
		cr_log_warn("more than %d processes: pid %d is not tracked",
			    E2E_MAX_PIDS, (int)p);
}

int e2e_reap(pid_t p, int ms)
{
	int st;

	for (int waited = 0;; waited += 10) {
		pid_t r = waitpid(p, &st, WNOHANG);

		if (r == p) {
			e2e_track(p, false);
			return st;
		}
		if (r < 0 || waited >= ms)
			return -1;
		e2e_msleep(10);
	}
}

int e2e_stop(pid_t p, int sig, int ms)
{
	int st;

	if (p <= 0)
		return -1;
	kill(p, sig);
	st = e2e_reap(p, ms);
	if (st == -1) {
		kill(p, SIGKILL);
		st = e2e_reap(p, 3000);
	}
	return st;
}

/* In the child: stdout and stderr to their files; false when it failed. */
static bool e2e_redirect(const char *o, int out_fd, const char *e)
{
	if (out_fd >= 0 ? dup2(out_fd, 1) < 0 : !freopen(o, "w", stdout))
		return false;
	if (!e)
		return dup2(1, 2) >= 0;
	return freopen(e, "w", stderr) != NULL;
}

pid_t e2e_spawn_ex(char *const argv[], const char *out, const char *err,
		   int out_fd, int uid, int nice_inc)
{
	char o[128], e[128];
	pid_t p;

	e2e_path(o, sizeof(o), out ? out : "null.out");
	if (err)
		e2e_path(e, sizeof(e), err);
	p = fork();
	cr_assert(p >= 0, "fork for %s failed: %s", argv[0], strerror(errno));
	if (p == 0) {
		if (!e2e_redirect(o, out_fd, err ? e : NULL))
			_exit(126);
		if (uid >= 0 && (setgid(uid) || setuid(uid)))
			_exit(125);
		if (nice_inc)
			setpriority(PRIO_PROCESS, 0, nice_inc);
		execvp(argv[0], argv);
		fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	e2e_track(p, true);
	return p;
}

pid_t e2e_spawn(char *const argv[], const char *out, const char *err)
{
	return e2e_spawn_ex(argv, out, err, -1, -1, 0);
}

int e2e_code(int st)
{
	return st != -1 && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

int e2e_exit_of(int st)
{
	cr_assert_neq(st, -1, "process did not exit in time");
	if (WIFSIGNALED(st))
		return 128 + WTERMSIG(st);
	return WEXITSTATUS(st);
}

int e2e_finish(pid_t p, int ms)
{
	int st = e2e_reap(p, ms);

	if (st == -1) {
		e2e_stop(p, SIGKILL, 3000);
		return -1;
	}
	return e2e_code(st);
}

int e2e_run_ex(char *const argv[], const char *out, const char *err, int ms,
	       int uid)
{
	return e2e_finish(e2e_spawn_ex(argv, out, err, -1, uid, 0), ms);
}

int e2e_run(char *const argv[], const char *out, const char *err, int ms)
{
	return e2e_run_ex(argv, out, err, ms, -1);
}

/* ---- files --------------------------------------------------------------- */

/* Reads f to its end (it may still grow); NULL when out of memory. */
static char *e2e_read_all(FILE *f)
{
	char *buf = NULL;
	size_t n = 0, cap = 0;

	for (;;) {
		if (cap - n < 4096) {
			size_t ncap = cap ? 2 * cap : 65536;
			char *q = realloc(buf, ncap);

			if (!q)
				break;
			buf = q;
			cap = ncap;
		}
		size_t got = fread(buf + n, 1, cap - n - 1, f);

		n += got;
		if (!got)
			break;
	}
	if (buf)
		buf[n] = 0;
	return buf;
}

char *e2e_slurp(const char *name)
{
	char p[128];
	char *buf;
	FILE *f;

	e2e_path(p, sizeof(p), name);
	f = fopen(p, "r");
	if (!f)
		return NULL;
	buf = e2e_read_all(f);
	fclose(f);
	return buf;
}

const char *e2e_tail(const char *name, size_t max)
{
	static char out[65536];
	char *s = e2e_slurp(name);
	size_t n;

	if (!s)
		return "(no log)";
	if (max > sizeof(out) - 1)
		max = sizeof(out) - 1;
	n = strlen(s);
	snprintf(out, sizeof(out), "%s", n > max ? s + n - max : s);
	free(s);
	return out;
}

void e2e_show(const char *name)
{
	char p[128], line[512];
	FILE *f;

	e2e_path(p, sizeof(p), name);
	f = fopen(p, "r");
	if (!f)
		return;
	while (fgets(line, sizeof(line), f))
		cr_log_info("%s: %s", name, line);
	fclose(f);
}

bool e2e_file_has(const char *name, const char *text)
{
	char *t = e2e_slurp(name);
	bool found = t && strstr(t, text);

	free(t);
	return found;
}

bool e2e_wait_text(const char *name, const char *text, int ms)
{
	for (int waited = 0; waited < ms; waited += 20) {
		if (e2e_file_has(name, text))
			return true;
		e2e_msleep(20);
	}
	return false;
}

int e2e_count_lines(const char *name)
{
	char *t = e2e_slurp(name);
	int n = 0;

	for (char *p = t; p && *p; p++)
		n += *p == '\n';
	free(t);
	return n;
}

/* ---- skips --------------------------------------------------------------- */

void e2e_need_root(void)
{
	if (geteuid() != 0)
		e2e_skip("needs root to load eBPF programs");
}

void e2e_need_tools(void)
{
	struct stat st;

	e2e_need_root();
	if (stat("build/tokentrace", &st) || stat("build/refserver", &st) ||
	    stat("build/loadgen", &st))
		e2e_skip("build/tokentrace, build/refserver or "
			 "build/loadgen not built (make)");
}

/* ---- servers and load ---------------------------------------------------- */

static int e2e_read_port(const char *port_file)
{
	char *t = e2e_slurp(port_file);
	int port = 0;

	if (t && sscanf(t, "%d", &port) != 1)
		port = 0;
	free(t);
	return port > 0 ? port : 0;
}

int e2e_wait_port(const char *port_file, pid_t p, int ms, const char *log,
		  const char *what)
{
	int port;

	for (int waited = 0; waited < ms; waited += 20) {
		port = e2e_read_port(port_file);
		if (port)
			return port;
		if (p > 0 && e2e_reap(p, 0) != -1) {
			if (log)
				e2e_show(log);
			cr_assert_fail("%s ended before the server listened",
				       what);
		}
		e2e_msleep(20);
	}
	if (log)
		e2e_show(log);
	cr_assert_fail("%s: the server wrote no port file in %d s", what,
		       ms / 1000);
	return 0;
}

pid_t e2e_refserver(const char *const *extra, int *port)
{
	char pf[128], truth[128];
	char *argv[40] = { "build/refserver", "--port", "0", "--port-file",
			   pf, "--truth", truth };
	int n = 7;
	pid_t p;

	e2e_path(pf, sizeof(pf), "port");
	e2e_path(truth, sizeof(truth), "truth.jsonl");
	for (; extra && *extra && n < 39; extra++)
		argv[n++] = (char *)*extra;
	argv[n] = NULL;
	p = e2e_spawn(argv, "server.out", "server.err");
	*port = e2e_wait_port("port", 0, 10000, "server.err", "refserver");
	return p;
}

pid_t e2e_loadgen(const char *url, const char *out, const char *const *pre,
		  const char *const *flags, const char *log_out,
		  const char *log_err)
{
	char op[128];
	char *argv[64] = { "build/loadgen", "--url", (char *)url, "--out",
			   op };
	int n = 5;

	e2e_path(op, sizeof(op), out);
	for (; pre && *pre && n < 63; pre++)
		argv[n++] = (char *)*pre;
	for (; flags && *flags && n < 63; flags++)
		argv[n++] = (char *)*flags;
	argv[n] = NULL;
	return e2e_spawn(argv, log_out, log_err);
}

bool e2e_make_cert(char *cert, char *key, size_t n)
{
	char *argv[] = { "openssl", "req", "-x509", "-newkey", "rsa:2048",
			 "-nodes", "-days", "1", "-subj", "/CN=localhost",
			 "-keyout", key, "-out", cert, NULL };

	e2e_path(cert, n, "cert.pem");
	e2e_path(key, n, "key.pem");
	if (e2e_run(argv, "openssl.out", "openssl.err", 30000) == 0)
		return true;
	e2e_show("openssl.err");
	return false;
}

/* ---- JSON ---------------------------------------------------------------- */

cJSON *e2e_load_json(const char *name, const char *log)
{
	char *text = e2e_slurp(name);
	cJSON *o;

	cr_assert_not_null(text, "no %s: %s", name,
			   log ? e2e_tail(log, 1000) : "cannot read it");
	o = cJSON_Parse(text);
	cr_assert_not_null(o, "%s is not JSON: %.200s", name, text);
	free(text);
	return o;
}

static int read_jsonl(const char *name, cJSON **v, int max, bool growing)
{
	char lp[128], *line = NULL;
	size_t cap = 0;
	ssize_t len;
	int n = 0;
	FILE *f;

	e2e_path(lp, sizeof(lp), name);
	f = fopen(lp, "r");
	cr_assert_not_null(f, "cannot read %s: %s", lp, strerror(errno));
	while (n < max && (len = getline(&line, &cap, f)) > 0) {
		if (growing && line[len - 1] != '\n')
			break;	/* being written: not a line yet */
		v[n] = cJSON_Parse(line);
		cr_assert_not_null(v[n], "%s: not JSON: %.200s", name, line);
		n++;
	}
	free(line);
	fclose(f);
	return n;
}

int e2e_read_jsonl(const char *name, cJSON **v, int max)
{
	return read_jsonl(name, v, max, false);
}

int e2e_read_jsonl_growing(const char *name, cJSON **v, int max)
{
	return read_jsonl(name, v, max, true);
}

double e2e_num(const cJSON *o, const char *k)
{
	const cJSON *v = cJSON_GetObjectItem(o, k);

	cr_assert(cJSON_IsNumber(v), "field %s is not a number", k);
	return v->valuedouble;
}

const char *e2e_str(const cJSON *o, const char *k)
{
	const cJSON *v = cJSON_GetObjectItem(o, k);

	cr_assert(cJSON_IsString(v), "field %s is not a string", k);
	return v->valuestring;
}

double e2e_num_or(const cJSON *o, const char *k, double dflt)
{
	const cJSON *v = cJSON_GetObjectItem(o, k);

	return cJSON_IsNumber(v) ? v->valuedouble : dflt;
}

static int cmp_width(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

double e2e_intervals(const struct e2e_iv *v, int n, const char *name,
		     double floor)
{
	double got = 0, truth = 0, *w = calloc(n ? n : 1, sizeof(*w));
	int in = 0, k = 0;

	cr_assert_not_null(w);
	for (int i = 0; i < n; i++) {
		got += v[i].got;
		truth += v[i].truth;
	}
	for (int i = 0; i < n; i++) {
		double t = v[i].truth / truth;

		cr_expect_geq(v[i].lo, 0, "%s: request %d has no interval",
			      name, i);
		if (v[i].lo < 0 || got <= 0)
			continue;
		cr_expect(v[i].lo <= v[i].got && v[i].got <= v[i].hi, "%s: "
			  "request %d: %.0f ns outside its interval %.0f-%.0f",
			  name, i, v[i].got, v[i].lo, v[i].hi);
		in += v[i].lo / got <= t && t <= v[i].hi / got;
		if (v[i].got > 0)
			w[k++] = (v[i].hi - v[i].lo) / v[i].got;
	}
	qsort(w, k, sizeof(*w), cmp_width);
	double frac = n ? (double)in / n : 0, mid = k ? w[k / 2] : 0;

	cr_log_info("%s: 90%% intervals hold the truth for %d of %d (%.0f%%; "
		    "goal 85-95%%: %s), median width %.1f%% (goal under 20%%: "
		    "%s)", name, in, n, 100 * frac, frac >= 0.85 &&
		    frac <= 0.95 ? "met" : "missed", 100 * mid, mid < 0.2 ?
		    "met" : "missed");
	cr_expect_geq(frac, floor, "%s: 90%% intervals hold the truth for "
		      "only %d of %d", name, in, n);
	cr_expect_lt(mid, 1.0, "%s: median interval width %.1f%%", name,
		     100 * mid);
	free(w);
	return frac;
}

const char *e2e_str_or(const cJSON *o, const char *k)
{
	const cJSON *v = cJSON_GetObjectItem(o, k);

	return cJSON_IsString(v) ? v->valuestring : "";
}

void e2e_need_sim(void)
{
	/* --gpus 0 is refused; how says whether the simulator is built */
	char *argv[] = { "build/refserver", "--device", "sim", "--gpus", "0",
			 "--port", "0", NULL };

	e2e_need_tools();
	e2e_run(argv, "probe.log", NULL, 10000);
	if (e2e_file_has("probe.log", "built without"))
		e2e_skip("refserver was built without the CUDA toolkit's "
			 "CUPTI headers: no simulated devices");
	cr_assert(e2e_file_has("probe.log", "--gpus 0"), "refserver --device "
		  "sim --gpus 0: %s", e2e_tail("probe.log", 500));
}
