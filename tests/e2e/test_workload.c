/*
 * test_workload.c - the reference workload end to end: build/refserver
 * driven by build/loadgen (and by raw sockets), checked against the
 * server's ground-truth log.
 *
 * In:  build/refserver and build/loadgen (run from the repository root),
 *      openssl(1) for a throwaway self-signed certificate.
 * Out: Criterion suite "workload".
 * Assumes: loopback TCP; ports are picked by the server (--port 0
 *      --port-file), never fixed. Every process a test starts is killed and
 *      reaped in the fixture's fini, whatever path the test took; each test
 *      works in its own temporary folder, removed at the end.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cJSON.h>
#include <criterion/criterion.h>

#define MAX_PIDS	8
#define MAX_REQS	512

/* ---- processes --------------------------------------------------------------- */

static pid_t pids[MAX_PIDS];
static char dir[64];
static int port;
static pid_t server_pid;

static void msleep(int ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

static void track(pid_t p)
{
	for (int i = 0; i < MAX_PIDS; i++) {
		if (!pids[i]) {
			pids[i] = p;
			return;
		}
	}
}

static void untrack(pid_t p)
{
	for (int i = 0; i < MAX_PIDS; i++)
		if (pids[i] == p)
			pids[i] = 0;
}

/* Waits for p up to ms; returns its wait status, or -1 if still running. */
static int reap(pid_t p, int ms)
{
	int st;

	for (int waited = 0;; waited += 10) {
		pid_t r = waitpid(p, &st, WNOHANG);

		if (r == p) {
			untrack(p);
			return st;
		}
		if (r < 0 || waited >= ms)
			return -1;
		msleep(10);
	}
}

static void kill_all(void)
{
	for (int i = 0; i < MAX_PIDS; i++) {
		if (!pids[i])
			continue;
		kill(pids[i], SIGKILL);
		waitpid(pids[i], NULL, 0);
		pids[i] = 0;
	}
}

static void path(char *out, size_t n, const char *name)
{
	snprintf(out, n, "%s/%s", dir, name);
}

/* fork + exec with stdout and stderr to dir/log; returns the pid. */
static pid_t spawn(char *const argv[], const char *log)
{
	char lp[128];
	pid_t p;

	path(lp, sizeof(lp), log);
	p = fork();
	cr_assert_geq(p, 0, "fork: %s", strerror(errno));
	if (p == 0) {
		int fd = open(lp, O_WRONLY | O_CREAT | O_TRUNC, 0644);

		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		execv(argv[0], argv);
		_exit(127);
	}
	track(p);
	return p;
}

static void setup(void)
{
	struct stat st;

	if (stat("build/refserver", &st) || stat("build/loadgen", &st))
		cr_assert_fail("build/refserver or build/loadgen missing: run "
			       "`make` and run this from the repository root");
	snprintf(dir, sizeof(dir), "/tmp/tt-workload-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
}

static void teardown(void)
{
	char cmd[128];

	kill_all();
	if (dir[0]) {
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
		if (system(cmd) != 0)
			fprintf(stderr, "could not remove %s\n", dir);
	}
}

TestSuite(workload, .init = setup, .fini = teardown, .timeout = 90);

/* ---- the server ------------------------------------------------------------------- */

static void show_log(const char *name)
{
	char lp[128], buf[2048];
	FILE *f;
	size_t n;

	path(lp, sizeof(lp), name);
	f = fopen(lp, "r");
	if (!f)
		return;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = '\0';
	fclose(f);
	fprintf(stderr, "--- %s ---\n%s\n", name, buf);
}

/* Starts build/refserver with a small model and extra flags (NULL-ended);
 * waits for its port file. */
static void server_start(const char *const *extra)
{
	char pf[128], tf[128];
	char *argv[40] = { "build/refserver", "--host", "127.0.0.1", "--port",
			   "0", "--port-file", pf, "--truth", tf, "--dim", "64",
			   "--layers", "2", "--ctx", "512" };
	int n = 15;
	FILE *f;

	path(pf, sizeof(pf), "port");
	path(tf, sizeof(tf), "truth.jsonl");
	for (; extra && *extra && n < 39; extra++)
		argv[n++] = (char *)*extra;
	argv[n] = NULL;
	server_pid = spawn(argv, "server.log");
	for (int waited = 0; waited < 10000; waited += 20) {
		f = fopen(pf, "r");
		if (f) {
			int ok = fscanf(f, "%d", &port) == 1 && port > 0;

			fclose(f);
			if (ok)
				return;
		}
		if (reap(server_pid, 0) != -1) {
			show_log("server.log");
			cr_assert_fail("refserver exited before listening");
		}
		msleep(20);
	}
	show_log("server.log");
	cr_assert_fail("refserver wrote no port file in 10 s");
}

/* SIGTERM, then the exit status (the truth log is complete after this). */
static int server_stop(void)
{
	int st;

	kill(server_pid, SIGTERM);
	st = reap(server_pid, 10000);
	cr_assert_neq(st, -1, "refserver did not exit within 10 s of SIGTERM");
	return st;
}

/* Runs build/loadgen against the server with these flags and checks its
 * exit code is want (logs shown when not). Its out file is dir/out.jsonl. */
static void loadgen(const char *scheme, const char *const *flags, int want,
		    const char *why)
{
	char url[96], out[128];
	char *argv[48] = { "build/loadgen", "--url", url, "--out", out,
			   "--timeout", "30" };
	int n = 7, st;
	pid_t p;

	snprintf(url, sizeof(url), "%s://127.0.0.1:%d", scheme,
		 port);
	path(out, sizeof(out), "out.jsonl");
	for (; *flags && n < 47; flags++)
		argv[n++] = (char *)*flags;
	argv[n] = NULL;
	p = spawn(argv, "loadgen.log");
	st = reap(p, 60000);
	if (st == -1) {
		kill(p, SIGKILL);
		reap(p, 5000);
		cr_assert_fail("loadgen ran more than 60 s");
	}
	st = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
	if (st != want) {
		show_log("loadgen.log");
		show_log("server.log");
		show_log("out.jsonl");
	}
	cr_assert_eq(st, want, "loadgen exit %d, want %d: %s", st, want, why);
}

/* ---- logs ---------------------------------------------------------------------- */

struct logs {
	cJSON *out[MAX_REQS];	/* loadgen lines */
	int n_out;
	cJSON *req[MAX_REQS];	/* truth request lines */
	int n_req;
	int steps;
	int batched_steps;	/* steps with more than one entry */
	cJSON *process;
	bool process_last;
};

static int read_lines(const char *name, cJSON **v, int max)
{
	char lp[128], *line = NULL;
	size_t cap = 0;
	int n = 0;
	FILE *f;

	path(lp, sizeof(lp), name);
	f = fopen(lp, "r");
	cr_assert_not_null(f, "cannot read %s", lp);
	while (getline(&line, &cap, f) > 0 && n < max) {
		v[n] = cJSON_Parse(line);
		cr_assert_not_null(v[n], "%s: not JSON: %.200s", name, line);
		n++;
	}
	free(line);
	fclose(f);
	return n;
}

static const char *str(const cJSON *j, const char *k)
{
	const char *s = cJSON_GetStringValue(cJSON_GetObjectItem(j, k));

	return s ? s : "";
}

static double num(const cJSON *j, const char *k)
{
	const cJSON *v = cJSON_GetObjectItem(j, k);

	cr_assert(cJSON_IsNumber(v), "field %s missing", k);
	return v->valuedouble;
}

static void logs_load(struct logs *l)
{
	static cJSON *truth[4096];
	int n;

	memset(l, 0, sizeof(*l));
	l->n_out = read_lines("out.jsonl", l->out, MAX_REQS);
	n = read_lines("truth.jsonl", truth, 4096);
	for (int i = 0; i < n; i++) {
		const char *type = str(truth[i], "type");

		l->process_last = false;
		if (!strcmp(type, "request") && l->n_req < MAX_REQS) {
			l->req[l->n_req++] = truth[i];
			continue;
		}
		if (!strcmp(type, "step")) {
			l->steps++;
			if (cJSON_GetArraySize(cJSON_GetObjectItem(truth[i],
							"entries")) > 1)
				l->batched_steps++;
		} else if (!strcmp(type, "process")) {
			l->process = truth[i];
			l->process_last = true;
			continue;
		}
		cJSON_Delete(truth[i]);
	}
}

static const cJSON *truth_req(const struct logs *l, const char *id)
{
	for (int i = 0; i < l->n_req; i++)
		if (!strcmp(str(l->req[i], "id"), id))
			return l->req[i];
	return NULL;
}

/* Every client line is a success that the truth log agrees with. */
static void check_agreement(const struct logs *l, int want, bool stream,
			    bool chat)
{
	cr_assert_eq(l->n_out, want, "loadgen wrote %d lines, want %d",
		     l->n_out, want);
	for (int i = 0; i < l->n_out; i++) {
		const cJSON *o = l->out[i], *t;
		const char *id = str(o, "id");

		cr_assert_eq(num(o, "status"), 200, "request %d failed: %s", i,
			     str(o, "error"));
		t = truth_req(l, id);
		cr_assert_not_null(t, "response id '%s' is not in the truth log",
				   id);
		cr_assert_str_eq(str(t, "tenant"), str(o, "tenant"));
		cr_assert_str_eq(str(t, "status"), "ok");
		cr_assert_eq(num(o, "completion_tokens"), num(o, "max_tokens"));
		cr_assert_eq(num(t, "completion_tokens"), num(o, "max_tokens"));
		cr_assert_eq(num(o, "prompt_tokens"), num(t, "prompt_tokens"));
		if (!chat)	/* a chat template may add bytes */
			cr_assert_eq(num(t, "prompt_tokens"),
				     num(o, "prompt_len"));
		if (stream)
			cr_assert_eq(num(o, "token_events"), num(o, "max_tokens"),
				     "one SSE event per token");
		/* causality on one clock: the client sent before the server read
		 * the request, and read the first token after the server
		 * stamped it (just before writing it), so its TTFT is longer */
		cr_assert_leq(num(o, "sent_ns"), num(t, "arrival_ns"));
		cr_assert_geq(num(o, "first_token_ns"), num(t, "first_token_ns"));
		cr_assert_geq(num(o, "first_token_ns") - num(o, "sent_ns"),
			      num(t, "first_token_ns") - num(t, "arrival_ns"),
			      "client TTFT below the server's");
		cr_assert_geq(num(o, "end_ns"), num(o, "first_token_ns"));
	}
}

/* ---- raw HTTP ------------------------------------------------------------------- */

static int connect_server(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET,
				 .sin_port = htons((uint16_t)port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	struct timeval tv = { .tv_sec = 10 };
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	cr_assert_geq(fd, 0);
	cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0,
		     "connect to refserver: %s", strerror(errno));
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return fd;
}

/* Sends raw bytes on a new connection; returns the response's status. */
static int raw_status(const char *req, size_t len)
{
	char buf[512];
	size_t got = 0;
	int fd = connect_server(), code = -1;

	cr_assert_eq(send(fd, req, len, MSG_NOSIGNAL), (ssize_t)len);
	while (got < sizeof(buf) - 1 && !memchr(buf, '\n', got)) {
		ssize_t n = read(fd, buf + got, sizeof(buf) - 1 - got);

		if (n <= 0)
			break;
		got += (size_t)n;
	}
	buf[got] = '\0';
	close(fd);
	if (sscanf(buf, "HTTP/1.%*d %d", &code) != 1)
		code = -1;
	return code;
}

static int raw_post(const char *path_, const char *body)
{
	char req[1024];
	int n = snprintf(req, sizeof(req), "POST %s HTTP/1.1\r\nHost: x\r\n"
			 "Content-Type: application/json\r\n"
			 "Content-Length: %zu\r\n\r\n%s", path_, strlen(body),
			 body);

	return raw_status(req, (size_t)n);
}

/* ---- tests ---------------------------------------------------------------------- */

Test(workload, streaming_three_tenants_agree_with_truth_and_batch)
{
	const char *srv[] = { "--max-batch", "16", NULL };
	const char *lg[] = { "--stream", "--concurrency", "8", "--requests",
			     "96", "--tenants", "alpha:1,beta:2,gamma:3",
			     "--prompt-len", "8-48", "--max-tokens", "4-16",
			     "--seed", "3", NULL };
	struct logs l;
	int tenants[3] = { 0 };

	server_start(srv);
	loadgen("http", lg, 0, "loadgen failed");
	server_stop();
	logs_load(&l);
	check_agreement(&l, 96, true, false);
	cr_assert_gt(l.batched_steps, 0, "no step served more than one "
		     "request in %d steps: no batching", l.steps);
	for (int i = 0; i < l.n_out; i++) {
		const char *t = str(l.out[i], "tenant");

		tenants[t[0] == 'a' ? 0 : t[0] == 'b' ? 1 : 2]++;
	}
	for (int i = 0; i < 3; i++)
		cr_assert_gt(tenants[i], 0, "every tenant drawn");
	cr_assert_gt(tenants[2], tenants[0], "weights 3 vs 1 show");
	cr_assert(l.process_last, "process line last after SIGTERM");
}

Test(workload, non_streaming_agrees_with_truth)
{
	const char *lg[] = { "--concurrency", "4", "--requests", "20",
			     "--tenants", "a:1,b:1", "--max-tokens", "3-9",
			     "--prompt-len", "4-20", NULL };
	struct logs l;

	server_start(NULL);
	loadgen("http", lg, 0, "loadgen failed");
	server_stop();
	logs_load(&l);
	check_agreement(&l, 20, false, false);
	for (int i = 0; i < l.n_out; i++)
		cr_assert_eq(cJSON_IsFalse(cJSON_GetObjectItem(l.out[i],
						"stream")), 1);
}

Test(workload, chunked_keep_alive_streaming_agrees_with_truth)
{
	const char *srv[] = { "--chunked", NULL };
	const char *lg[] = { "--stream", "--concurrency", "4", "--requests",
			     "24", "--max-tokens", "2-10", "--prompt-len",
			     "1-30", "--chat", NULL };
	struct logs l;

	server_start(srv);
	loadgen("http", lg, 0, "loadgen failed (chat, chunked)");
	server_stop();
	logs_load(&l);
	check_agreement(&l, 24, true, true);
}

static void make_cert(char *cert, char *key, size_t n)
{
	char cmd[512];

	snprintf(cert, n, "%s/cert.pem", dir);
	snprintf(key, n, "%s/key.pem", dir);
	snprintf(cmd, sizeof(cmd), "openssl req -x509 -newkey rsa:2048 -nodes "
		 "-subj /CN=localhost -days 1 -keyout '%s' -out '%s' "
		 ">/dev/null 2>&1", key, cert);
	if (system(cmd) != 0)
		cr_skip_test("openssl(1) could not make a self-signed "
			     "certificate: install openssl");
}

Test(workload, tls_streaming_agrees_with_truth)
{
	char cert[128], key[128];
	const char *srv[] = { "--tls-cert", cert, "--tls-key", key, NULL };
	const char *lg[] = { "--stream", "--insecure", "--concurrency", "4",
			     "--requests", "16", "--max-tokens", "2-8", NULL };
	const char *strict[] = { "--stream", "--requests", "1", NULL };
	struct logs l;

	make_cert(cert, key, sizeof(cert));
	server_start(srv);
	loadgen("https", lg, 0, "loadgen over TLS failed");
	loadgen("https", strict, 1, "a self-signed certificate "
		     "must fail verification without --insecure");
	loadgen("https", lg, 0, "server still serves TLS");
	server_stop();
	logs_load(&l);
	check_agreement(&l, 16, true, false);
}

Test(workload, malformed_requests_get_4xx_and_server_keeps_serving)
{
	static const char garbage[] = "\x16\x03\x01\x02\x00garbage\r\n\r\n";
	static const char huge[] = "POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
		"Content-Type: application/json\r\n"
		"Content-Length: 1000000000\r\n\r\n{";
	const char *lg[] = { "--stream", "--requests", "3", NULL };
	struct logs l;
	int code;

	server_start(NULL);
	code = raw_status(garbage, sizeof(garbage) - 1);
	cr_assert(code >= 400 && code < 500, "garbage: got %d", code);
	code = raw_post("/v1/completions", "{\"prompt\": \"abc\", max_tok");
	cr_assert_eq(code, 400, "bad JSON: got %d", code);
	code = raw_post("/v1/nothing-here", "{\"prompt\":\"abc\"}");
	cr_assert_eq(code, 404, "unknown path: got %d", code);
	code = raw_status(huge, sizeof(huge) - 1);
	cr_assert_eq(code, 413, "oversize body: got %d", code);
	loadgen("http", lg, 0, "server stopped serving after "
		     "malformed requests");
	server_stop();
	logs_load(&l);
	check_agreement(&l, 3, true, false);
}

/* Reads from fd until the first SSE data event; copies its id. */
static void read_first_event_id(int fd, char *id, size_t n)
{
	char buf[4096], *d, *p;
	size_t got = 0;

	for (;;) {
		ssize_t r = read(fd, buf + got, sizeof(buf) - 1 - got);

		cr_assert_gt(r, 0, "stream ended before its first event");
		got += (size_t)r;
		buf[got] = '\0';
		d = strstr(buf, "\"id\":\"");
		if (d && strchr(d + 6, '"'))
			break;
	}
	d += 6;
	p = strchr(d, '"');
	snprintf(id, n, "%.*s", (int)(p - d), d);
}

Test(workload, client_gone_mid_stream_is_cancelled_and_server_serves_on)
{
	const char *srv[] = { "--step-delay-ms", "20", NULL };
	const char *lg[] = { "--stream", "--requests", "2", "--max-tokens",
			     "4", NULL };
	static const char body[] = "{\"model\":\"m\",\"prompt\":\"hello\","
		"\"max_tokens\":200,\"stream\":true}";
	char req[512], id[128];
	const cJSON *t;
	struct logs l;
	int fd, n;

	server_start(srv);
	fd = connect_server();
	n = snprintf(req, sizeof(req), "POST /v1/completions HTTP/1.1\r\n"
		     "Host: x\r\nX-Tenant-Id: quitter\r\nContent-Type: "
		     "application/json\r\nContent-Length: %zu\r\n\r\n%s",
		     strlen(body), body);
	cr_assert_eq(send(fd, req, (size_t)n, MSG_NOSIGNAL), n);
	read_first_event_id(fd, id, sizeof(id));
	close(fd);
	loadgen("http", lg, 0, "server stopped serving after a "
		     "client left mid-stream");
	server_stop();
	logs_load(&l);
	t = truth_req(&l, id);
	cr_assert_not_null(t, "the abandoned request %s is in the truth log", id);
	cr_assert_str_eq(str(t, "status"), "cancelled");
	cr_assert_str_eq(str(t, "tenant"), "quitter");
	cr_assert_lt(num(t, "completion_tokens"), 200);
	check_agreement(&l, 2, true, false);
}

Test(workload, process_line_last_after_sigterm)
{
	const char *lg[] = { "--requests", "1", NULL };
	struct logs l;
	int st;

	server_start(NULL);
	loadgen("http", lg, 0, "one request");
	st = server_stop();
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0,
		  "refserver exits 0 on SIGTERM (status %#x)", st);
	logs_load(&l);
	cr_assert_not_null(l.process, "no process line after SIGTERM");
	cr_assert(l.process_last, "the process line is the last line");
	cr_assert_eq(num(l.process, "pid"), server_pid);
	cr_assert_gt(num(l.process, "utime_ns") + num(l.process, "stime_ns"), 0);
}
