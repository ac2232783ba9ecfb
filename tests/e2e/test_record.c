/*
 * test_record.c - `tokentrace record` end to end: a live server traced from
 * outside, what the tracer printed compared with what the client saw and
 * with the server's own ground-truth log.
 *
 * In:  build/tokentrace, build/refserver, build/loadgen,
 *      tools/tls_asyncio_server.py (python3), curl(1), openssl(1); run from
 *      the repository root.
 * Out: Criterion suite "record".
 * Assumes: root (eBPF); each test that needs it skips with the reason
 *      otherwise. Ports are chosen by the servers (--port 0 --port-file).
 *      Every process a test starts is killed and reaped in the fixture's
 *      fini, whatever path the test took; each test works in its own
 *      temporary folder, removed at the end.
 */
#include <errno.h>
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

#define REC_MAX_PIDS	8
#define REC_MAX_LINES	1024

static pid_t rec_pids[REC_MAX_PIDS];
static char rec_dir[64];	/* this test's folder, "" before setup */
static int rec_port;
static pid_t rec_tracer;

/* ---- processes ----------------------------------------------------------- */

static void rec_msleep(int ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

static void rec_track(pid_t p, bool on)
{
	for (int i = 0; i < REC_MAX_PIDS; i++) {
		if (on && !rec_pids[i]) {
			rec_pids[i] = p;
			return;
		}
		if (!on && rec_pids[i] == p)
			rec_pids[i] = 0;
	}
}

/* Waits for p up to ms; its wait status, or -1 if it still runs. */
static int rec_reap(pid_t p, int ms)
{
	int st;

	for (int waited = 0;; waited += 10) {
		pid_t r = waitpid(p, &st, WNOHANG);

		if (r == p) {
			rec_track(p, false);
			return st;
		}
		if (r < 0 || waited >= ms)
			return -1;
		rec_msleep(10);
	}
}

/* sig, then SIGKILL after ms; the wait status. */
static int rec_stop(pid_t p, int sig, int ms)
{
	int st;

	if (p <= 0)
		return -1;
	kill(p, sig);
	st = rec_reap(p, ms);
	if (st == -1) {
		kill(p, SIGKILL);
		st = rec_reap(p, 3000);
	}
	return st;
}

static void rec_path(char *out, size_t n, const char *name)
{
	cr_assert(rec_dir[0], "the test folder was not made");
	snprintf(out, n, "%s/%s", rec_dir, name);
}

/* Starts argv with stdout and stderr in files of the test folder. */
static pid_t rec_spawn(char *const argv[], const char *out, const char *err)
{
	char o[128], e[128];
	pid_t p;

	rec_path(o, sizeof(o), out);
	rec_path(e, sizeof(e), err);
	p = fork();
	cr_assert(p >= 0, "fork failed: %s", strerror(errno));
	if (p == 0) {
		if (!freopen(o, "w", stdout) || !freopen(e, "w", stderr))
			_exit(126);
		execvp(argv[0], argv);
		fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	rec_track(p, true);
	return p;
}

/* Runs argv to its end (at most ms); its exit code, or -1. */
static int rec_run(char *const argv[], const char *out, const char *err,
		   int ms)
{
	pid_t p = rec_spawn(argv, out, err);
	int st = rec_reap(p, ms);

	if (st == -1) {
		rec_stop(p, SIGKILL, 3000);
		return -1;
	}
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static bool rec_file_has(const char *name, const char *text)
{
	char p[128], buf[8192];
	size_t n;
	FILE *f;

	rec_path(p, sizeof(p), name);
	f = fopen(p, "r");
	if (!f)
		return false;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = 0;
	fclose(f);
	return strstr(buf, text) != NULL;
}

static void rec_show(const char *name)
{
	char p[128], line[512];
	FILE *f;

	rec_path(p, sizeof(p), name);
	f = fopen(p, "r");
	if (!f)
		return;
	while (fgets(line, sizeof(line), f))
		cr_log_info("%s: %s", name, line);
	fclose(f);
}

/* Waits until name holds text; false after ms. */
static bool rec_wait_text(const char *name, const char *text, int ms)
{
	for (int waited = 0; waited < ms; waited += 20) {
		if (rec_file_has(name, text))
			return true;
		rec_msleep(20);
	}
	return false;
}

static void rec_setup(void)
{
	rec_dir[0] = 0;
	memset(rec_pids, 0, sizeof(rec_pids));
	rec_tracer = 0;
	rec_port = 0;
	snprintf(rec_dir, sizeof(rec_dir), "/tmp/tt-record-XXXXXX");
	cr_assert(mkdtemp(rec_dir), "mkdtemp: %s", strerror(errno));
}

static void rec_teardown(void)
{
	char cmd[128];

	for (int i = 0; i < REC_MAX_PIDS; i++)
		if (rec_pids[i])
			rec_stop(rec_pids[i], SIGTERM, 3000);
	if (strncmp(rec_dir, "/tmp/tt-record-", 15))
		return;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", rec_dir);
	if (system(cmd) != 0)
		cr_log_warn("could not remove %s", rec_dir);
}

TestSuite(record, .init = rec_setup, .fini = rec_teardown, .timeout = 120);

static void rec_need_root(void)
{
	if (geteuid() != 0)
		cr_skip_test("needs root to load eBPF programs");
}

/* ---- servers and the tracer ---------------------------------------------- */

/* Starts a server that writes its port to DIR/port; sets rec_port. */
static void rec_server(char *const argv[])
{
	char pf[128];
	FILE *f;

	rec_spawn(argv, "server.out", "server.err");
	rec_path(pf, sizeof(pf), "port");
	for (int waited = 0; waited < 10000 && !rec_port; waited += 20) {
		f = fopen(pf, "r");
		if (f) {
			if (fscanf(f, "%d", &rec_port) != 1)
				rec_port = 0;
			fclose(f);
		}
		if (!rec_port)
			rec_msleep(20);
	}
	if (!rec_port)
		rec_show("server.err");
	cr_assert(rec_port > 0, "the server wrote no port file in 10 s");
}

static void rec_refserver(const char *extra1, const char *extra2,
			  const char *extra3, const char *extra4)
{
	char pf[128], truth[128];
	char *argv[16] = { "build/refserver", "--port", "0", "--port-file",
			   pf, "--truth", truth };
	int n = 7;

	rec_path(pf, sizeof(pf), "port");
	rec_path(truth, sizeof(truth), "truth.jsonl");
	if (extra1)
		argv[n++] = (char *)extra1;
	if (extra2)
		argv[n++] = (char *)extra2;
	if (extra3)
		argv[n++] = (char *)extra3;
	if (extra4)
		argv[n++] = (char *)extra4;
	argv[n] = NULL;
	rec_server(argv);
}

/* Starts `tokentrace record --port P -o DIR/rec.jsonl` and waits until it
 * says it is tracing. */
static void rec_tracer_start(const char *extra1, const char *extra2)
{
	char port[16], out[128];
	char *argv[12] = { "build/tokentrace", "record", "--port", port, "-o",
			   out };
	int n = 6;

	snprintf(port, sizeof(port), "%d", rec_port);
	rec_path(out, sizeof(out), "rec.jsonl");
	if (extra1)
		argv[n++] = (char *)extra1;
	if (extra2)
		argv[n++] = (char *)extra2;
	argv[n] = NULL;
	rec_tracer = rec_spawn(argv, "rec.out", "rec.err");
	if (!rec_wait_text("rec.err", "tracing 1 process(es)", 15000)) {
		rec_show("rec.err");
		cr_assert_fail("tokentrace record did not start tracing in 15 s");
	}
}

/*
 * SIGINT to the tracer; it must drain and exit 0. Detaching two dozen
 * tracepoints and uprobes waits for RCU grace periods in the kernel
 * (seconds on a busy host), hence the long wait.
 */
static void rec_tracer_stop(void)
{
	int st;

	rec_msleep(300);
	st = rec_stop(rec_tracer, SIGINT, 20000);
	rec_show("rec.err");
	cr_assert(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0,
		  "tokentrace record did not exit 0 after SIGINT (status %d)",
		  st);
}

static int rec_loadgen(const char *scheme, const char *const *flags)
{
	char url[96], out[128];
	char *argv[32] = { "build/loadgen", "--url", url, "--out", out,
			   "--quiet" };
	int n = 6, rc;

	snprintf(url, sizeof(url), "%s://127.0.0.1:%d", scheme, rec_port);
	rec_path(out, sizeof(out), "client.jsonl");
	for (int i = 0; flags[i] && n < 31; i++)
		argv[n++] = (char *)flags[i];
	argv[n] = NULL;
	rc = rec_run(argv, "loadgen.out", "loadgen.err", 60000);
	if (rc != 0)
		rec_show("loadgen.err");
	return rc;
}

/* ---- logs ---------------------------------------------------------------- */

struct rec_lines {
	int n;
	cJSON *v[REC_MAX_LINES];
};

static void rec_load(const char *name, struct rec_lines *l)
{
	static char line[65536];
	char p[128];
	FILE *f;

	l->n = 0;
	rec_path(p, sizeof(p), name);
	f = fopen(p, "r");
	cr_assert(f, "cannot open %s: %s", p, strerror(errno));
	while (fgets(line, sizeof(line), f) && l->n < REC_MAX_LINES) {
		cJSON *j = cJSON_Parse(line);

		cr_assert(j, "%s: a line is not JSON", name);
		l->v[l->n++] = j;
	}
	fclose(f);
}

static void rec_free(struct rec_lines *l)
{
	for (int i = 0; i < l->n; i++)
		cJSON_Delete(l->v[i]);
	l->n = 0;
}

static const char *rec_str(const cJSON *j, const char *k)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, k);

	return cJSON_IsString(v) ? v->valuestring : "";
}

static double rec_num(const cJSON *j, const char *k)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, k);

	return cJSON_IsNumber(v) ? v->valuedouble : -1;
}

static const cJSON *rec_find(const struct rec_lines *l, const char *id,
			     const char *type)
{
	for (int i = 0; i < l->n; i++)
		if (!strcmp(rec_str(l->v[i], "id"), id) &&
		    (!type || !strcmp(rec_str(l->v[i], "type"), type)))
			return l->v[i];
	return NULL;
}

/* A traced request with nothing incomplete about it. */
static bool rec_clean(const cJSON *r)
{
	const cJSON *flags = cJSON_GetObjectItemCaseSensitive(r, "flags");

	return !strcmp(rec_str(r, "end"), "complete") &&
	       (!flags || cJSON_GetArraySize(flags) == 0);
}

static bool rec_flagged_lost(const cJSON *r)
{
	const cJSON *flags = cJSON_GetObjectItemCaseSensitive(r, "flags");
	const cJSON *f;

	if (!strcmp(rec_str(r, "end"), "data_lost"))
		return true;
	cJSON_ArrayForEach(f, flags)
		if (cJSON_IsString(f) && !strcmp(f->valuestring, "lost"))
			return true;
	return false;
}

/* The traced request of a client request agrees with the client, and its
 * model with the one the server says it served. */
static void rec_match_client(const cJSON *c, const cJSON *r, const char *model)
{
	const char *id = rec_str(c, "id");

	cr_expect_eq(rec_num(r, "completion_tokens"),
		     rec_num(c, "completion_tokens"),
		     "%s: completion tokens traced %.0f, client %.0f", id,
		     rec_num(r, "completion_tokens"),
		     rec_num(c, "completion_tokens"));
	cr_expect_str_eq(rec_str(r, "tenant"), rec_str(c, "tenant"),
			 "%s: tenant", id);
	cr_expect_str_eq(rec_str(r, "model"), model, "%s: model", id);
	cr_expect_eq(rec_num(r, "status"), rec_num(c, "status"),
		     "%s: status", id);
}

/* The loss counter of the tracer's summary line. */
static long rec_lost_events(void)
{
	char p[128], line[1024];
	long lost = -1;
	FILE *f;

	rec_path(p, sizeof(p), "rec.err");
	f = fopen(p, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		char *s = strstr(line, "lost events ");

		if (s)
			lost = strtol(s + 12, NULL, 10);
	}
	fclose(f);
	return lost;
}

/*
 * Every client request is in the trace and agrees with the client; with a
 * truth log, TTFT agrees with the server's own within 2 ms; no loss.
 */
static void rec_check_all(int want)
{
	struct rec_lines client, traced, tlog;

	rec_load("client.jsonl", &client);
	rec_load("rec.jsonl", &traced);
	rec_load("truth.jsonl", &tlog);
	cr_assert_eq(client.n, want, "the client wrote %d lines, not %d",
		     client.n, want);
	for (int i = 0; i < client.n; i++) {
		const cJSON *c = client.v[i], *r, *t;
		const char *id = rec_str(c, "id");
		double ttft;

		r = rec_find(&traced, id, NULL);
		cr_assert(r, "client request %s is not in the trace", id);
		t = rec_find(&tlog, id, "request");
		cr_assert(t, "%s is not in the truth log", id);
		rec_match_client(c, r, rec_str(t, "model"));
		cr_expect(rec_clean(r), "%s: marked incomplete", id);
		ttft = (rec_num(t, "first_token_ns") -
			rec_num(t, "arrival_ns")) / 1e6;
		cr_expect(fabs(rec_num(r, "ttft_ms") - ttft) <= 2.0,
			  "%s: TTFT traced %.3f ms, server %.3f ms (arrival "
			  "%+.3f ms, first token %+.3f ms off)", id,
			  rec_num(r, "ttft_ms"), ttft,
			  (rec_num(r, "arrival_ns") -
			   rec_num(t, "arrival_ns")) / 1e6,
			  (rec_num(r, "first_token_ns") -
			   rec_num(t, "first_token_ns")) / 1e6);
	}
	cr_expect_eq(rec_lost_events(), 0, "events were lost at this load");
	rec_free(&client);
	rec_free(&traced);
	rec_free(&tlog);
}

static void rec_make_cert(char *cert, char *key, size_t n)
{
	char *argv[] = { "openssl", "req", "-x509", "-newkey", "rsa:2048",
			 "-nodes", "-days", "1", "-subj", "/CN=localhost",
			 "-keyout", key, "-out", cert, NULL };

	rec_path(cert, n, "cert.pem");
	rec_path(key, n, "key.pem");
	cr_assert_eq(rec_run(argv, "openssl.out", "openssl.err", 30000), 0,
		     "openssl could not make a certificate");
}

/* ---- tests --------------------------------------------------------------- */

Test(record, streaming_three_tenants_match_client_and_truth)
{
	const char *lg[] = { "--concurrency", "8", "--requests", "120",
			     "--tenants", "alpha:1,beta:2,gamma:1", "--stream",
			     "--max-tokens", "4-12", "--prompt-len", "16-64",
			     NULL };

	rec_need_root();
	rec_refserver(NULL, NULL, NULL, NULL);
	rec_tracer_start(NULL, NULL);
	cr_assert_eq(rec_loadgen("http", lg), 0, "loadgen failed");
	rec_tracer_stop();
	rec_check_all(120);
}

Test(record, non_streaming_requests_match_client)
{
	const char *lg[] = { "--concurrency", "4", "--requests", "40",
			     "--tenants", "alpha:1,beta:1", "--max-tokens",
			     "3-8", NULL };

	rec_need_root();
	rec_refserver(NULL, NULL, NULL, NULL);
	rec_tracer_start(NULL, NULL);
	cr_assert_eq(rec_loadgen("http", lg), 0, "loadgen failed");
	rec_tracer_stop();
	rec_check_all(40);
}

Test(record, chunked_streams_match_client)
{
	const char *lg[] = { "--concurrency", "4", "--requests", "40",
			     "--tenants", "alpha:1,beta:1", "--stream",
			     "--chat", "--max-tokens", "4-10", NULL };

	rec_need_root();
	rec_refserver("--chunked", NULL, NULL, NULL);
	rec_tracer_start(NULL, NULL);
	cr_assert_eq(rec_loadgen("http", lg), 0, "loadgen failed");
	rec_tracer_stop();
	rec_check_all(40);
}

Test(record, tls_streams_are_seen_in_cleartext)
{
	const char *lg[] = { "--concurrency", "4", "--requests", "40",
			     "--tenants", "alpha:1,beta:1", "--stream",
			     "--insecure", "--max-tokens", "4-10", NULL };
	char cert[128], key[128];

	rec_need_root();
	rec_make_cert(cert, key, sizeof(cert));
	rec_refserver("--tls-cert", cert, "--tls-key", key);
	rec_tracer_start(NULL, NULL);
	cr_assert_eq(rec_loadgen("https", lg), 0, "loadgen failed");
	rec_tracer_stop();
	cr_assert(rec_file_has("rec.err", "tls "), "no TLS byte count");
	cr_expect(!rec_file_has("rec.err", "(tls 0,"),
		  "no cleartext came from the libssl probes");
	rec_check_all(40);
}

struct rec_seen {
	char id[96], model[96];	/* as the client saw them */
};

/* Copies the string value of "key": from the first line that has it. */
static void rec_json_field(const char *line, const char *key, char *out)
{
	char pat[32];
	const char *s;

	snprintf(pat, sizeof(pat), "\"%s\":", key);
	s = strstr(line, pat);
	if (!out[0] && s && sscanf(s + strlen(pat), " \"%95[^\"]\"", out) != 1)
		out[0] = 0;
}

/* curl, one request per connection; id and model from its output. */
static void rec_curl(const char *scheme, const char *tenant, bool stream,
		     int max_tokens, struct rec_seen *seen)
{
	char url[96], hdr[64], body[256], out[128], line[4096];
	char *argv[] = { "curl", "-sS", "-k", "-N", "-H", hdr, "-H",
			 "Content-Type: application/json", "-d", body, url,
			 NULL };
	FILE *f;

	snprintf(url, sizeof(url), "%s://127.0.0.1:%d/v1/completions", scheme,
		 rec_port);
	snprintf(hdr, sizeof(hdr), "X-Tenant-Id: %s", tenant);
	snprintf(body, sizeof(body), "{\"model\":\"refmodel\",\"prompt\":"
		 "\"hello there\",\"max_tokens\":%d,\"stream\":%s,"
		 "\"stream_options\":{\"include_usage\":true}}", max_tokens,
		 stream ? "true" : "false");
	cr_assert_eq(rec_run(argv, "curl.out", "curl.err", 30000), 0,
		     "curl failed");
	rec_path(out, sizeof(out), "curl.out");
	f = fopen(out, "r");
	cr_assert(f);
	memset(seen, 0, sizeof(*seen));
	while (fgets(line, sizeof(line), f)) {
		rec_json_field(line, "id", seen->id);
		rec_json_field(line, "model", seen->model);
	}
	fclose(f);
	cr_assert(seen->id[0] && seen->model[0],
		  "no response id or model in curl's output");
}

static void rec_expect_traced(const struct rec_seen *seen, const char *tenant,
			      int completion)
{
	const char *id = seen->id;
	struct rec_lines traced;
	const cJSON *r;

	rec_load("rec.jsonl", &traced);
	r = rec_find(&traced, id, NULL);
	cr_assert(r, "request %s is not in the trace", id);
	cr_expect_str_eq(rec_str(r, "model"), seen->model, "%s: model", id);
	cr_expect_eq(rec_num(r, "completion_tokens"), completion,
		     "%s: completion tokens", id);
	cr_expect_str_eq(rec_str(r, "tenant"), tenant, "%s: tenant", id);
	cr_expect(rec_clean(r), "%s: marked incomplete", id);
	rec_free(&traced);
}

Test(record, curl_requests_are_recorded)
{
	struct rec_seen s1, s2;

	rec_need_root();
	rec_refserver(NULL, NULL, NULL, NULL);
	rec_tracer_start(NULL, NULL);
	rec_curl("http", "curly", true, 7, &s1);
	rec_curl("http", "plain", false, 5, &s2);
	rec_tracer_stop();
	rec_expect_traced(&s1, "curly", 7);
	rec_expect_traced(&s2, "plain", 5);
}

Test(record, bytes_beyond_capture_cap_are_counted_and_flagged)
{
	struct rec_lines traced;
	struct rec_seen seen;
	const cJSON *r, *f;
	bool truncated = false;

	rec_need_root();
	rec_refserver(NULL, NULL, NULL, NULL);
	rec_tracer_start("--capture-cap", "200");
	rec_curl("http", "capped", false, 5, &seen);
	rec_tracer_stop();
	cr_expect(!rec_file_has("rec.err", "beyond capture cap 0;"),
		  "no bytes were reported beyond a 200-byte cap");
	rec_load("rec.jsonl", &traced);
	r = rec_find(&traced, seen.id, NULL);
	if (!r && traced.n == 1)
		r = traced.v[0];	/* the id may lie beyond the cap */
	cr_assert(r, "the capped request is not in the trace");
	cJSON_ArrayForEach(f, cJSON_GetObjectItemCaseSensitive(r, "flags"))
		if (cJSON_IsString(f) && strstr(f->valuestring, "truncated"))
			truncated = true;
	cr_expect(truncated, "a request cut at 200 bytes is not flagged "
		  "truncated");
	rec_free(&traced);
}

Test(record, asyncio_tls_server_memory_bio_is_decrypted)
{
	char cert[128], key[128], pf[128];
	struct rec_seen seen[4];
	char *argv[] = { "python3", "tools/tls_asyncio_server.py",
			 "--port-file", pf, "--cert", cert, "--key", key,
			 NULL };

	rec_need_root();
	if (access("/usr/bin/python3", X_OK) != 0)
		cr_skip_test("python3 is not installed");
	rec_make_cert(cert, key, sizeof(cert));
	rec_path(pf, sizeof(pf), "port");
	rec_server(argv);
	rec_tracer_start(NULL, NULL);
	for (int i = 0; i < 4; i++)
		rec_curl("https", i % 2 ? "odd" : "even", i != 3, 3 + i,
			 &seen[i]);
	rec_tracer_stop();
	for (int i = 0; i < 4; i++)
		rec_expect_traced(&seen[i], i % 2 ? "odd" : "even", 3 + i);
}

Test(record, tiny_ring_buffer_reports_losses_and_marks_requests)
{
	const char *lg[] = { "--concurrency", "32", "--requests", "64",
			     "--tenants", "alpha:1,beta:1", "--stream",
			     "--max-tokens", "16-24", "--prompt-len",
			     "300-500", NULL };
	struct rec_lines client, traced, tlog;
	int flagged = 0, clean = 0;

	rec_need_root();
	rec_refserver("--max-batch", "32", NULL, NULL);
	rec_tracer_start("--ringbuf-kb", "4");
	cr_assert_eq(rec_loadgen("http", lg), 0, "loadgen failed");
	rec_tracer_stop();
	cr_assert_gt(rec_lost_events(), 0,
		     "a 4 KiB ring buffer under a burst lost nothing");
	rec_load("client.jsonl", &client);
	rec_load("rec.jsonl", &traced);
	rec_load("truth.jsonl", &tlog);
	for (int i = 0; i < traced.n; i++) {
		const cJSON *r = traced.v[i], *c, *t;

		if (rec_flagged_lost(r)) {
			flagged++;
			continue;
		}
		if (!rec_clean(r))
			continue;
		c = rec_find(&client, rec_str(r, "id"), NULL);
		cr_assert(c, "traced request %s unknown to the client",
			  rec_str(r, "id"));
		t = rec_find(&tlog, rec_str(r, "id"), "request");
		cr_assert(t, "%s is not in the truth log", rec_str(r, "id"));
		clean++;
		rec_match_client(c, r, rec_str(t, "model"));
	}
	cr_log_info("traced %d, marked lost %d, clean %d", traced.n, flagged,
		    clean);
	cr_expect_gt(flagged, 0, "losses were reported but no request is "
		     "marked lost");
	rec_free(&client);
	rec_free(&traced);
	rec_free(&tlog);
}

/* ---- errors -------------------------------------------------------------- */

static int rec_record_rc(char *const argv[])
{
	return rec_run(argv, "rec.out", "rec.err", 20000);
}

Test(record, no_such_pid_exits_5)
{
	char *argv[] = { "build/tokentrace", "record", "--pid", "999999999",
			 "--duration", "1", NULL };

	rec_need_root();
	cr_expect_eq(rec_record_rc(argv), 5);
	cr_expect(rec_file_has("rec.err", "no such process"));
}

Test(record, nothing_listening_on_port_exits_5)
{
	char *argv[] = { "build/tokentrace", "record", "--port", "1",
			 "--duration", "1", NULL };

	rec_need_root();
	cr_expect_eq(rec_record_rc(argv), 5);
	cr_expect(rec_file_has("rec.err", "nothing listens on TCP port 1"));
}

Test(record, two_targets_is_a_usage_error)
{
	char *argv[] = { "build/tokentrace", "record", "--pid", "1", "--port",
			 "80", NULL };

	cr_expect_eq(rec_record_rc(argv), 2);
}

Test(record, unprivileged_user_exits_3)
{
	pid_t p;
	int st;

	if (geteuid() != 0)
		cr_skip_test("needs root to switch to an unprivileged user");
	p = fork();
	cr_assert(p >= 0);
	if (p == 0) {
		char *argv[] = { "build/tokentrace", "record", "--pid", "1",
				 "--duration", "1", NULL };

		if (!freopen("/dev/null", "w", stderr) ||
		    setgid(65534) || setuid(65534))
			_exit(100);
		execv(argv[0], argv);
		_exit(101);
	}
	rec_track(p, true);
	st = rec_reap(p, 20000);
	cr_assert(st != -1 && WIFEXITED(st));
	cr_expect_eq(WEXITSTATUS(st), 3, "exit %d", WEXITSTATUS(st));
}
