/*
 * test_llama.c - llama.cpp's own llama-server (a CPU build with its
 * libllama.so, built by tools/llama.sh) under `tokentrace run`, serving a
 * tiny random-weight model (tests/e2e/llama/tinygguf.c) to four streaming
 * clients, its steps cut by the step probe on llama_decode.
 *
 * Truth, independent of tokentrace: decodelog.so (LD_PRELOAD) logs the
 * start and end of every llama_decode call the server makes; loadgen logs
 * the usage the server sent with every request. Checked: the device's
 * steps come from the probe; every step window lies inside one
 * llama_decode call, no call holds two, and no call after the first step
 * is missed; each step's batch holds as many tokens as the call's;
 * every request is tied to its sequence; every request's prompt and
 * completion tokens are the server's own usage.
 *
 * In:  build/tokentrace, build/loadgen, build/tests/llama/{tinygguf,
 *      libdecodelog.so}, build/llama/src/build/bin/llama-server (`make
 *      test-llama` builds them all, then runs this suite alone).
 * Out: Criterion suite "llama"; the figures are logged.
 * Assumes: root (eBPF); loopback TCP.
 */
#include <arpa/inet.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cJSON.h>
#include <criterion/criterion.h>
#include <criterion/logging.h>

#include "../../user/collect.h"
#include "harness.h"

#define LL_SERVER	"build/llama/src/build/bin/llama-server"
#define LL_REQUESTS	60
#define LL_MAX_CALLS	200000

static void setup(void)
{
	e2e_setup("llama", 0);
}

static void teardown(void)
{
	e2e_teardown(SIGKILL, false);
}

TestSuite(llama, .init = setup, .fini = teardown, .timeout = 300);

/* A loopback port free now. */
static int free_port(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET,
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t n = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	cr_assert_geq(fd, 0);
	cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &n), 0);
	close(fd);
	return ntohs(a.sin_port);
}

/* GET path on port; whether the answer was 200. */
static bool http_ok(int port, const char *path)
{
	struct sockaddr_in a = { .sin_family = AF_INET,
				 .sin_port = htons((uint16_t)port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	char req[128], buf[64] = { 0 };
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	bool ok = false;

	if (fd < 0)
		return false;
	snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
		 "Connection: close\r\n\r\n", path);
	if (!connect(fd, (struct sockaddr *)&a, sizeof(a)) &&
	    write(fd, req, strlen(req)) == (ssize_t)strlen(req) &&
	    read(fd, buf, sizeof(buf) - 1) > 12)
		ok = !strncmp(buf + 9, "200", 3);
	close(fd);
	return ok;
}

struct call {
	uint64_t start, end;
	int tokens;		/* its batch's */
	int steps;		/* probe steps inside it */
};

static int cmp_call(const void *a, const void *b)
{
	const struct call *x = a, *y = b;

	return x->start < y->start ? -1 : x->start > y->start;
}

/* The call that holds [s, e], or NULL. */
static struct call *holder(struct call *c, int n, uint64_t s, uint64_t e)
{
	int lo = 0, hi = n;

	while (lo < hi) {		/* first call starting after s */
		int m = (lo + hi) / 2;

		if (c[m].start <= s)
			lo = m + 1;
		else
			hi = m;
	}
	return lo && c[lo - 1].end >= e ? &c[lo - 1] : NULL;
}

Test(llama, llama_server_steps_from_llama_decode_and_its_usage)
{
	static struct call calls[LL_MAX_CALLS];
	static cJSON *client[LL_REQUESTS + 8];
	char model[128], rec[128], sum[128], dlog[128], env_log[160],
	     preload[PATH_MAX + 64], port_s[16], url[64], cwd[PATH_MAX];
	char *gen[] = { "build/tests/llama/tinygguf", model, NULL };
	char *argv[] = { "build/tokentrace", "run", "--compute", "cpu",
			 "-o", rec, "--summary", sum, "--", "env", env_log,
			 preload, LL_SERVER, "-m", model, "--host",
			 "127.0.0.1", "--port", port_s, "-np", "4", "-c",
			 "8192", "-t", "1", "--ignore-eos", "-l", "0-inf",
			 "-l", "1-inf", NULL };
	const char *const flags[] = { "--stream", "--concurrency", "4",
				      "--requests", "60", "--prompt-len",
				      "16-400", "--max-tokens", "8-64",
				      "--seed", "3", NULL };
	int port = free_port(), ncalls = 0, n;

	e2e_need_tools();
	cr_assert(access(LL_SERVER, X_OK) == 0, "no %s: `make test-llama` "
		  "builds it (tools/llama.sh)", LL_SERVER);
	cr_assert_not_null(getcwd(cwd, sizeof(cwd)));
	e2e_path(model, sizeof(model), "tiny.gguf");
	e2e_path(rec, sizeof(rec), "rec.tt");
	e2e_path(sum, sizeof(sum), "s.json");
	e2e_path(dlog, sizeof(dlog), "decode.log");
	snprintf(env_log, sizeof(env_log), "TT_DECODE_LOG=%s", dlog);
	snprintf(preload, sizeof(preload),
		 "LD_PRELOAD=%s/build/tests/llama/libdecodelog.so", cwd);
	snprintf(port_s, sizeof(port_s), "%d", port);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d", port);
	cr_assert_eq(e2e_run(gen, "gen.log", NULL, 30000), 0, "%s",
		     e2e_tail("gen.log", 500));

	pid_t tt = e2e_spawn(argv, "run.log", NULL);
	int waited = 0;

	while (!http_ok(port, "/health")) {
		cr_assert_lt(waited += 100, 60000, "llama-server did not come "
			     "up: %s", e2e_tail("run.log", 2000));
		e2e_msleep(100);
	}
	/* the probe is put on libllama.so as the server starts; one request
	 * and a second's sweep before the load make sure it is there */
	const char *const one[] = { "--stream", "--requests", "1",
				    "--max-tokens", "4", NULL };
	cr_assert_eq(e2e_finish(e2e_loadgen(url, "warm.jsonl", NULL, one,
					    "warm.log", NULL), 30000), 0,
		     "%s", e2e_tail("warm.log", 800));
	e2e_msleep(1200);
	cr_assert_eq(e2e_finish(e2e_loadgen(url, "client.jsonl", NULL, flags,
					    "load.log", NULL), 120000), 0,
		     "%s", e2e_tail("load.log", 800));
	cr_assert_eq(e2e_exit_of(e2e_stop(tt, SIGTERM, 30000)), 0, "%s",
		     e2e_tail("run.log", 2000));

	/* the server's usage against what tokentrace rebuilt, by id */
	cJSON *s = e2e_load_json("s.json", "run.log"), *d, *q;
	const cJSON *cpu = NULL;
	int matched = 0;

	cJSON_ArrayForEach(d, cJSON_GetObjectItem(s, "devices"))
		if (!strcmp(e2e_str(d, "name"), "cpu"))
			cpu = d;
	cr_assert_not_null(cpu, "no cpu device in the summary");
	cr_expect_str_eq(e2e_str(cpu, "steps_source"), "probe");
	n = e2e_read_jsonl("client.jsonl", client, LL_REQUESTS + 8);
	cr_assert_eq(n, LL_REQUESTS, "%d requests in client.jsonl", n);
	for (int i = 0; i < n; i++) {
		const char *id = e2e_str(client[i], "id");

		cr_expect_eq(e2e_num(client[i], "status"), 200);
		cJSON_ArrayForEach(q, cJSON_GetObjectItem(s, "requests")) {
			if (strcmp(e2e_str_or(q, "id"), id))
				continue;
			matched++;
			cr_expect_eq(e2e_num(q, "prompt_tokens"),
				     e2e_num(client[i], "prompt_tokens"),
				     "%s: prompt tokens", id);
			cr_expect_eq(e2e_num(q, "completion_tokens"),
				     e2e_num(client[i], "completion_tokens"),
				     "%s: completion tokens", id);
			cr_expect_str_eq(e2e_str(q, "tokens_source"), "usage",
					 "%s", id);
		}
		cJSON_Delete(client[i]);
	}
	cr_expect_eq(matched, n, "%d of %d requests found by id", matched, n);

	/* every probe step inside one llama_decode call */
	FILE *f = fopen(dlog, "r");
	unsigned long long a, b;
	int tok, ret;

	cr_assert_not_null(f, "no %s", dlog);
	while (ncalls < LL_MAX_CALLS &&
	       fscanf(f, "%llu %llu %d %d", &a, &b, &tok, &ret) == 4)
		calls[ncalls++] = (struct call){ a, b, tok, 0 };
	fclose(f);
	qsort(calls, ncalls, sizeof(calls[0]), cmp_call);

	struct collect c;
	uint64_t first = UINT64_MAX;
	int steps = 0, inside = 0, batch_ok = 0;

	collect_init(&c);
	cr_assert_eq(collect_load(&c, rec, stderr, NULL), 0);
	for (size_t i = 0; i < c.nivs; i++) {
		const struct tt_interval *iv = &c.ivs[i];
		struct call *h;

		if (iv->kind != TT_IV_STEP)
			continue;
		steps++;
		first = iv->start_ns < first ? iv->start_ns : first;
		h = holder(calls, ncalls, iv->start_ns, iv->end_ns);
		if (h) {
			inside++;
			h->steps++;
			batch_ok += iv->bytes == (uint64_t)h->tokens;
		}
	}
	collect_free(&c);
	int twice = 0, missed = 0;

	for (int i = 0; i < ncalls; i++) {
		twice += calls[i].steps > 1;
		missed += calls[i].start > first && !calls[i].steps;
	}
	cr_log_info("llama-server: %d llama_decode calls, %d probe steps, %d "
		    "inside one call, %d calls with two, %d missed after the "
		    "first step, %d with the call's batch size; %d requests, "
		    "tokens from usage; %.0f steps' work from their batch, %.0f "
		    "requests tied to a sequence", ncalls, steps, inside, twice,
		    missed, batch_ok, matched, e2e_num(cpu, "batch_steps"),
		    e2e_num(cpu, "batch_requests"));
	cr_expect_gt(steps, LL_REQUESTS, "%d steps", steps);
	cr_expect_eq(inside, steps, "%d of %d steps inside a call", inside,
		     steps);
	cr_expect_eq(twice, 0);
	cr_expect_eq(missed, 0);
	cr_expect_eq(e2e_num(cpu, "steps"), steps, "the report's steps");
	cr_expect_eq(batch_ok, steps, "%d of %d steps with the call's batch "
		     "size", batch_ok, steps);
	cr_expect_eq(e2e_num(cpu, "batch_steps"), steps);
	/* every request of the load tied to its sequence (the warm-up's too
	 * when the probe was on before it) */
	cr_expect(e2e_num(cpu, "batch_requests") >= LL_REQUESTS &&
		  e2e_num(cpu, "batch_requests") <= LL_REQUESTS + 1,
		  "%.0f requests tied", e2e_num(cpu, "batch_requests"));
	cJSON_Delete(s);
}
