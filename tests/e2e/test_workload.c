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

#include "harness.h"

#define MAX_REQS	512

/* ---- processes --------------------------------------------------------------- */

static int port;
static pid_t server_pid;

static void setup(void)
{
	struct stat st;

	if (stat("build/refserver", &st) || stat("build/loadgen", &st))
		cr_assert_fail("build/refserver or build/loadgen missing: run "
			       "`make` and run this from the repository root");
	e2e_setup("workload", 0);
}

static void teardown(void)
{
	e2e_teardown(SIGKILL, false);
}

TestSuite(workload, .init = setup, .fini = teardown, .timeout = 90);

/* ---- the server ------------------------------------------------------------------- */

/* Starts build/refserver with a small model and extra flags (NULL-ended);
 * waits for its port file. */
static void server_start(const char *const *extra)
{
	char pf[128], tf[128];
	char *argv[40] = { "build/refserver", "--host", "127.0.0.1", "--port",
			   "0", "--port-file", pf, "--truth", tf, "--dim", "64",
			   "--layers", "2", "--ctx", "512" };
	int n = 15;

	e2e_path(pf, sizeof(pf), "port");
	e2e_path(tf, sizeof(tf), "truth.jsonl");
	for (; extra && *extra && n < 39; extra++)
		argv[n++] = (char *)*extra;
	argv[n] = NULL;
	server_pid = e2e_spawn(argv, "server.log", NULL);
	port = e2e_wait_port("port", server_pid, 10000, "server.log",
			     "refserver");
}

/* SIGTERM, then the exit status (the truth log is complete after this). */
static int server_stop(void)
{
	int st;

	kill(server_pid, SIGTERM);
	st = e2e_reap(server_pid, 10000);
	cr_assert_neq(st, -1, "refserver did not exit within 10 s of SIGTERM");
	return st;
}

/* Runs build/loadgen against the server with these flags and checks its
 * exit code is want (logs shown when not). Its out file is dir/out.jsonl. */
static void loadgen(const char *scheme, const char *const *flags, int want,
		    const char *why)
{
	static const char *const pre[] = { "--timeout", "30", NULL };
	char url[96];
	int st;
	pid_t p;

	snprintf(url, sizeof(url), "%s://127.0.0.1:%d", scheme,
		 port);
	p = e2e_loadgen(url, "out.jsonl", pre, flags, "loadgen.log", NULL);
	st = e2e_reap(p, 60000);
	if (st == -1) {
		e2e_stop(p, SIGKILL, 5000);
		cr_assert_fail("loadgen ran more than 60 s");
	}
	st = e2e_exit_of(st);
	if (st != want) {
		e2e_show("loadgen.log");
		e2e_show("server.log");
		e2e_show("out.jsonl");
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

static void logs_load(struct logs *l)
{
	static cJSON *truth[4096];
	int n;

	memset(l, 0, sizeof(*l));
	l->n_out = e2e_read_jsonl("out.jsonl", l->out, MAX_REQS);
	n = e2e_read_jsonl("truth.jsonl", truth, 4096);
	for (int i = 0; i < n; i++) {
		const char *type = e2e_str_or(truth[i], "type");

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
		if (!strcmp(e2e_str_or(l->req[i], "id"), id))
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
		const char *id = e2e_str_or(o, "id");

		cr_assert_eq(e2e_num(o, "status"), 200, "request %d failed: %s",
			     i, e2e_str_or(o, "error"));
		t = truth_req(l, id);
		cr_assert_not_null(t, "response id '%s' is not in the truth log",
				   id);
		cr_assert_str_eq(e2e_str_or(t, "tenant"),
				 e2e_str_or(o, "tenant"));
		cr_assert_str_eq(e2e_str_or(t, "status"), "ok");
		cr_assert_eq(e2e_num(o, "completion_tokens"),
			     e2e_num(o, "max_tokens"));
		cr_assert_eq(e2e_num(t, "completion_tokens"),
			     e2e_num(o, "max_tokens"));
		cr_assert_eq(e2e_num(o, "prompt_tokens"),
			     e2e_num(t, "prompt_tokens"));
		if (!chat)	/* a chat template may add bytes */
			cr_assert_eq(e2e_num(t, "prompt_tokens"),
				     e2e_num(o, "prompt_len"));
		if (stream)
			cr_assert_eq(e2e_num(o, "token_events"),
				     e2e_num(o, "max_tokens"),
				     "one SSE event per token");
		/* causality on one clock: the client sent before the server read
		 * the request, and read the first token after the server
		 * stamped it (just before writing it), so its TTFT is longer */
		cr_assert_leq(e2e_num(o, "sent_ns"), e2e_num(t, "arrival_ns"));
		cr_assert_geq(e2e_num(o, "first_token_ns"),
			      e2e_num(t, "first_token_ns"));
		cr_assert_geq(e2e_num(o, "first_token_ns") -
			      e2e_num(o, "sent_ns"),
			      e2e_num(t, "first_token_ns") -
			      e2e_num(t, "arrival_ns"),
			      "client TTFT below the server's");
		cr_assert_geq(e2e_num(o, "end_ns"),
			      e2e_num(o, "first_token_ns"));
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
		const char *t = e2e_str_or(l.out[i], "tenant");

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

Test(workload, tls_streaming_agrees_with_truth)
{
	char cert[128], key[128];
	const char *srv[] = { "--tls-cert", cert, "--tls-key", key, NULL };
	const char *lg[] = { "--stream", "--insecure", "--concurrency", "4",
			     "--requests", "16", "--max-tokens", "2-8", NULL };
	const char *strict[] = { "--stream", "--requests", "1", NULL };
	struct logs l;

	if (!e2e_make_cert(cert, key, sizeof(cert)))
		e2e_skip("openssl(1) could not make a self-signed "
			 "certificate: install openssl");
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
	cr_assert_str_eq(e2e_str_or(t, "status"), "cancelled");
	cr_assert_str_eq(e2e_str_or(t, "tenant"), "quitter");
	cr_assert_lt(e2e_num(t, "completion_tokens"), 200);
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
	cr_assert_eq(e2e_num(l.process, "pid"), server_pid);
	cr_assert_gt(e2e_num(l.process, "utime_ns") +
		     e2e_num(l.process, "stime_ns"), 0);
}
