/*
 * test_loadgen.c - unit tests of the load generator.
 *
 * In:  canned HTTP responses (fed split at every byte boundary), option
 *      strings, the seeded random source, and a fake OpenAI-style server
 *      on a loopback port started inside the test.
 * Out: Criterion suites loadgen_resp, loadgen_opts, loadgen_rng and
 *      loadgen_run.
 * Assumes: loopback TCP works; no root, no network beyond 127.0.0.1.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cJSON.h>
#include <criterion/criterion.h>

#include "../../tools/loadgen/loadgen.h"

/* ---- canned responses --------------------------------------------------- */

/* Completions stream, chunked; chunk boundaries fall inside events. */
static const char chunked_sse[] =
	"HTTP/1.1 200 OK\r\n"
	"Content-Type: text/event-stream\r\n"
	"Transfer-Encoding: chunked\r\n"
	"\r\n"
	"1b\r\n"
	"data: {\"id\":\"cmpl-7\",\"choic\r\n"
	"38\r\n"
	"es\":[{\"index\":0,\"text\":\"ab\"}]}\n\ndata: {\"id\":\"cmpl-7\",\"ch\r\n"
	"5c\r\n"
	"oices\":[{\"index\":0,\"text\":\"c\"}]}\n\n"
	"data: {\"id\":\"cmpl-7\",\"choices\":[{\"index\":0,\"text\":\"d\"}]}\n\n\r\n"
	"56\r\n"
	"data: {\"id\":\"cmpl-7\",\"choices\":[],\"usage\":{\"prompt_tokens\":7,"
	"\"completion_tokens\":3}}\n\n\r\n"
	"e\r\n"
	"data: [DONE]\n\n\r\n"
	"0\r\n"
	"\r\n";

/* Chat stream read to close, CRLF line ends, role-only first chunk. */
static const char close_chat[] =
	"HTTP/1.1 200 OK\r\n"
	"content-type: text/event-stream; charset=utf-8\r\n"
	"Connection: close\r\n"
	"\r\n"
	"data: {\"id\":\"chat-1\",\"choices\":[{\"delta\":{\"role\":\"assistant\","
	"\"content\":\"\"}}]}\r\n\r\n"
	": keep-alive comment\r\n\r\n"
	"data: {\"id\":\"chat-1\",\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\r\n\r\n"
	"data: {\"id\":\"chat-1\",\"choices\":[{\"delta\":{\"content\":\"y\"},"
	"\"finish_reason\":\"length\"}]}\r\n\r\n"
	"data: {\"id\":\"chat-1\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,"
	"\"completion_tokens\":2,\"total_tokens\":7}}\r\n\r\n"
	"data: [DONE]\r\n\r\n";

static const char json_body[] =
	"HTTP/1.1 200 OK\r\n"
	"Content-Type: application/json\r\n"
	"Content-Length: 105\r\n"
	"\r\n"
	"{\"id\":\"cmpl-9\",\"choices\":[{\"text\":\"hello\"}],\"usage\":"
	"{\"prompt_tokens\":12,\"completion_tokens\":4}}          ";

static void check_chunked(const struct lg_resp *r)
{
	cr_assert_eq(r->status, 200);
	cr_assert(r->done);
	cr_assert(r->keep_alive);
	cr_assert(r->sse);
	cr_assert(r->saw_done);
	cr_assert_eq(r->token_events, 3);
	cr_assert_eq(r->prompt_tokens, 7);
	cr_assert_eq(r->completion_tokens, 3);
	cr_assert_str_eq(r->id, "cmpl-7");
	cr_assert_str_empty(r->error);
}

static void feed_split(struct lg_resp *r, const char *s, size_t len,
		       size_t cut)
{
	cr_assert_geq(lg_resp_feed(r, s, cut), 0, "cut %zu: %s", cut, r->error);
	cr_assert_geq(lg_resp_feed(r, s + cut, len - cut), 0, "cut %zu: %s",
		      cut, r->error);
}

Test(loadgen_resp, chunked_sse_split_at_every_byte)
{
	size_t len = strlen(chunked_sse);
	struct lg_resp r;

	cr_assert_eq(len, strlen(chunked_sse));
	lg_resp_init(&r);
	for (size_t cut = 0; cut <= len; cut++) {
		lg_resp_reset(&r);
		feed_split(&r, chunked_sse, len, cut);
		check_chunked(&r);
	}
	lg_resp_free(&r);
}

Test(loadgen_resp, chunked_sse_one_byte_at_a_time)
{
	size_t len = strlen(chunked_sse);
	struct lg_resp r;
	long toks = 0;

	lg_resp_init(&r);
	for (size_t i = 0; i < len; i++)
		toks += lg_resp_feed(&r, chunked_sse + i, 1);
	cr_assert_eq(toks, 3);
	check_chunked(&r);
	lg_resp_free(&r);
}

Test(loadgen_resp, chat_role_and_usage_chunks_are_not_tokens)
{
	size_t len = strlen(close_chat);
	struct lg_resp r;

	lg_resp_init(&r);
	for (size_t cut = 0; cut <= len; cut++) {
		lg_resp_reset(&r);
		feed_split(&r, close_chat, len, cut);
		cr_assert_not(r.done, "a read-to-close body ends at EOF only");
		cr_assert_eq(lg_resp_eof(&r), 0);
		cr_assert(r.done);
		cr_assert_not(r.keep_alive);
		cr_assert_eq(r.token_events, 2, "cut %zu", cut);
		cr_assert_eq(r.prompt_tokens, 5);
		cr_assert_eq(r.completion_tokens, 2);
		cr_assert_str_eq(r.id, "chat-1");
	}
	lg_resp_free(&r);
}

Test(loadgen_resp, content_length_json_body_usage)
{
	size_t len = strlen(json_body);
	struct lg_resp r;

	lg_resp_init(&r);
	for (size_t cut = 0; cut <= len; cut++) {
		lg_resp_reset(&r);
		feed_split(&r, json_body, len, cut);
		cr_assert(r.done);
		cr_assert(r.keep_alive);
		cr_assert_not(r.sse);
		cr_assert_eq(r.token_events, 1);
		cr_assert_eq(r.prompt_tokens, 12);
		cr_assert_eq(r.completion_tokens, 4);
		cr_assert_str_eq(r.id, "cmpl-9");
	}
	lg_resp_free(&r);
}

Test(loadgen_resp, stream_without_usage_leaves_counts_unknown)
{
	static const char s[] =
		"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
		"Content-Length: 48\r\n\r\n"
		"data: {\"choices\":[{\"text\":\"a\"}]}\n\ndata: [DONE]\n\n";
	struct lg_resp r;

	lg_resp_init(&r);
	cr_assert_eq(lg_resp_feed(&r, s, strlen(s)), 1);
	cr_assert(r.done);
	cr_assert_eq(r.prompt_tokens, -1);
	cr_assert_eq(r.completion_tokens, -1);
	lg_resp_free(&r);
}

Test(loadgen_resp, error_status_and_error_event)
{
	static const char e4[] =
		"HTTP/1.1 400 Bad Request\r\nContent-Length: 38\r\n\r\n"
		"{\"error\":{\"message\":\"bad max_tokens\"}}";
	static const char ev[] =
		"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
		"Connection: close\r\n\r\n"
		"data: {\"error\":{\"message\":\"engine died\"}}\n\n";
	struct lg_resp r;

	lg_resp_init(&r);
	cr_assert_geq(lg_resp_feed(&r, e4, strlen(e4)), 0);
	cr_assert_eq(r.status, 400);
	cr_assert(r.done);
	cr_assert(strstr(r.error, "bad max_tokens"));
	lg_resp_reset(&r);
	cr_assert_geq(lg_resp_feed(&r, ev, strlen(ev)), 0);
	cr_assert_eq(lg_resp_eof(&r), 0);
	cr_assert(strstr(r.error, "engine died"));
	lg_resp_free(&r);
}

Test(loadgen_resp, cut_short_and_garbage_are_errors)
{
	static const char bad_chunk[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: "
					"chunked\r\n\r\nzz\r\n";
	size_t len = strlen(chunked_sse);
	struct lg_resp r;

	lg_resp_init(&r);
	/* every cut before the final chunk ends the response too early */
	for (size_t cut = 0; cut < len - 2; cut++) {
		lg_resp_reset(&r);
		cr_assert_geq(lg_resp_feed(&r, chunked_sse, cut), 0);
		cr_assert_not(r.done, "cut %zu", cut);
		cr_assert_eq(lg_resp_eof(&r), -1, "cut %zu", cut);
		cr_assert_str_not_empty(r.error);
	}
	lg_resp_reset(&r);
	cr_assert_eq(lg_resp_feed(&r, "SSH-2.0-OpenSSH\r\n\r\n", 19), -1);
	lg_resp_reset(&r);
	cr_assert_eq(lg_resp_feed(&r, bad_chunk, strlen(bad_chunk)), -1);
	lg_resp_free(&r);
}

Test(loadgen_resp, interim_100_continue_is_skipped)
{
	static const char s[] =
		"HTTP/1.1 100 Continue\r\n\r\n"
		"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}";
	struct lg_resp r;

	lg_resp_init(&r);
	cr_assert_geq(lg_resp_feed(&r, s, strlen(s)), 0);
	cr_assert_eq(r.status, 201);
	cr_assert(r.done);
	lg_resp_free(&r);
}

Test(loadgen_resp, http10_closes_unless_keep_alive)
{
	static const char a[] = "HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n";
	static const char b[] = "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n"
				"Content-Length: 0\r\n\r\n";
	struct lg_resp r;

	lg_resp_init(&r);
	lg_resp_feed(&r, a, strlen(a));
	cr_assert(r.done);
	cr_assert_not(r.keep_alive);
	lg_resp_reset(&r);
	lg_resp_feed(&r, b, strlen(b));
	cr_assert(r.keep_alive);
	lg_resp_free(&r);
}

/* ---- options -------------------------------------------------------------- */

Test(loadgen_opts, length_ranges)
{
	struct lg_range r;

	cr_assert_eq(lg_parse_range("128", &r), 0);
	cr_assert_eq(r.lo, 128);
	cr_assert_eq(r.hi, 128);
	cr_assert_eq(lg_parse_range("16-64", &r), 0);
	cr_assert_eq(r.lo, 16);
	cr_assert_eq(r.hi, 64);
	cr_assert_eq(lg_parse_range("0-0", &r), 0);
	cr_assert_eq(lg_parse_range("64-16", &r), -1);
	cr_assert_eq(lg_parse_range("-5", &r), -1);
	cr_assert_eq(lg_parse_range("5-", &r), -1);
	cr_assert_eq(lg_parse_range("abc", &r), -1);
	cr_assert_eq(lg_parse_range("", &r), -1);
	cr_assert_eq(lg_parse_range("3x", &r), -1);
}

Test(loadgen_opts, tenant_weights)
{
	struct lg_opts o;
	char err[256];

	lg_opts_defaults(&o);
	cr_assert_eq(lg_parse_tenants("alpha:1,beta:3,gamma", &o, err,
				      sizeof(err)), 0, "%s", err);
	cr_assert_eq(o.n_tenants, 3);
	cr_assert_str_eq(o.tenants[0].name, "alpha");
	cr_assert_float_eq(o.tenants[1].weight, 3.0, 1e-12);
	cr_assert_str_eq(o.tenants[2].name, "gamma");
	cr_assert_float_eq(o.tenants[2].weight, 1.0, 1e-12);
	cr_assert_eq(lg_parse_tenants("a:0", &o, err, sizeof(err)), -1);
	cr_assert_eq(lg_parse_tenants(":3", &o, err, sizeof(err)), -1);
	cr_assert_eq(lg_parse_tenants("a:x", &o, err, sizeof(err)), -1);
	cr_assert(strstr(err, "a:x"), "the message names the bad item: %s", err);
	cr_assert_eq(lg_parse_tenants("", &o, err, sizeof(err)), -1);
}

Test(loadgen_opts, url_and_defaults)
{
	char *argv[] = { "loadgen", "--url", "https://example.test:8443",
			 "--chat", "--stream", "--rate", "20",
			 "--max-tokens", "4-8", "--seed", "9", NULL };
	struct lg_opts o;
	char err[256] = "";

	cr_assert_eq(lg_opts_parse(&o, 11, argv, err, sizeof(err)), 0, "%s", err);
	cr_assert(o.tls);
	cr_assert_str_eq(o.host, "example.test");
	cr_assert_str_eq(o.port, "8443");
	cr_assert_str_eq(o.path, "/v1/chat/completions");
	cr_assert(o.stream);
	cr_assert_float_eq(o.rate, 20.0, 1e-12);
	cr_assert_eq(o.concurrency, 64);
	cr_assert_eq(o.requests, 100);
	cr_assert_eq(o.max_tokens.lo, 4);
	cr_assert_eq(o.max_tokens.hi, 8);
	cr_assert_eq(o.seed, 9);

	char *bad[] = { "loadgen", "--url", "http://h:1/x", "--requests", "5",
			"--duration", "2", NULL };
	cr_assert_eq(lg_opts_parse(&o, 7, bad, err, sizeof(err)), -1);
	char *nourl[] = { "loadgen", "--stream", NULL };
	cr_assert_eq(lg_opts_parse(&o, 2, nourl, err, sizeof(err)), -1);
	cr_assert(strstr(err, "--url"));
	cr_assert_eq(lg_parse_url("http://[::1]:9000/v1/completions", &o, err,
				  sizeof(err)), 0);
	cr_assert_str_eq(o.host, "::1");
	cr_assert_str_eq(o.port, "9000");
	cr_assert_str_eq(o.path, "/v1/completions");
}

/* ---- shared prefixes and conversations ------------------------------------- */

static void shape_opts(struct lg_opts *o, char **extra, int nextra)
{
	char *argv[16] = { "loadgen", "--url", "http://h:1", "--tenants",
			   "alpha:1,beta:1", "--prompt-len", "20-40",
			   "--max-tokens", "5-9" };
	char err[256] = "";
	int n = 9;

	for (int i = 0; i < nextra; i++)
		argv[n++] = extra[i];
	argv[n] = NULL;
	cr_assert_eq(lg_opts_parse(o, n, argv, err, sizeof(err)), 0, "%s",
		     err);
}

Test(loadgen_shape, a_tenants_prompts_begin_with_its_own_prefix)
{
	char *extra[] = { "--shared-prefix", "alpha:50" };
	char *first_alpha = NULL, *p;
	int alphas = 0, betas = 0;
	struct lg_shape s;
	struct lg_opts o;

	shape_opts(&o, extra, 2);
	cr_assert_eq(o.tenants[0].shared_prefix, 50);
	cr_assert_eq(o.tenants[1].shared_prefix, 0);
	for (long i = 0; i < 40; i++) {
		p = lg_shape_request(&o, i, &s);
		cr_assert_not_null(p);
		cr_assert_eq((long)strlen(p), s.prompt_len);
		if (s.tenant == 0) {
			cr_assert_geq(s.prompt_len, 50 + 20);
			cr_assert_leq(s.prompt_len, 50 + 40);
			if (!first_alpha)
				first_alpha = strdup(p);
			else
				cr_assert_eq(memcmp(p, first_alpha, 50), 0,
					     "request %ld: another prefix", i);
			alphas++;
		} else {
			cr_assert_leq(s.prompt_len, 40);
			betas++;
		}
		cr_assert_eq(s.conversation, -1);
		free(p);
	}
	cr_assert(alphas > 5 && betas > 5);
	free(first_alpha);

	char *bad[] = { "--shared-prefix", "gamma:5" };
	char *argv[] = { "loadgen", "--url", "http://h:1", bad[0], bad[1],
			 NULL };
	char err[256];
	cr_assert_eq(lg_opts_parse(&o, 5, argv, err, sizeof(err)), -1);
	cr_assert(strstr(err, "gamma"), "%s", err);
}

Test(loadgen_shape, each_turn_resends_the_one_before)
{
	char *extra[] = { "--turns", "4", "--shared-prefix", "10" };
	struct lg_shape s, prev = { 0 };
	char *p, *before = NULL;
	struct lg_opts o;

	shape_opts(&o, extra, 4);
	for (long i = 0; i < 12; i++) {
		p = lg_shape_request(&o, i, &s);
		cr_assert_not_null(p);
		cr_assert_eq(s.conversation, i / 4);
		cr_assert_eq(s.turn, i % 4);
		if (s.turn > 0) {
			cr_assert_eq(s.tenant, prev.tenant,
				     "a conversation changed tenant");
			cr_assert_gt(s.prompt_len, prev.prompt_len + 20);
			cr_assert_eq(memcmp(p, before, prev.prompt_len), 0,
				     "turn %d does not begin with turn %d",
				     s.turn, prev.turn);
		}
		free(before);
		before = p;
		prev = s;
	}
	free(before);
	/* the same request twice is the same bytes */
	char *a = lg_shape_request(&o, 6, &s), *b = lg_shape_request(&o, 6, &s);
	cr_assert_str_eq(a, b);
	free(a);
	free(b);
}

/* ---- random source --------------------------------------------------------- */

Test(loadgen_rng, poisson_gaps_have_mean_one_over_rate)
{
	struct lg_rng r;
	double sum = 0, sq = 0, mean, var;
	const int n = 200000;
	const double rate = 50;

	lg_rng_seed(&r, 42, 0);
	for (int i = 0; i < n; i++) {
		double g = lg_rng_exp(&r, rate);

		cr_assert_geq(g, 0);
		sum += g;
		sq += g * g;
	}
	mean = sum / n;
	var = sq / n - mean * mean;
	/* exponential: mean 1/rate, variance 1/rate^2; 1% is > 4 sigma */
	cr_assert_float_eq(mean, 1 / rate, 0.01 / rate, "mean %g", mean);
	cr_assert_float_eq(var, 1 / (rate * rate), 0.05 / (rate * rate));
}

Test(loadgen_rng, tenants_drawn_by_weight)
{
	struct lg_tenant t[3] = { { "a", 1 }, { "b", 3 }, { "c", 6 } };
	int count[3] = { 0 };
	const int n = 100000;
	struct lg_rng r;

	lg_rng_seed(&r, 7, 0);
	for (int i = 0; i < n; i++)
		count[lg_rng_tenant(&r, t, 3)]++;
	cr_assert_float_eq(count[0] / (double)n, 0.1, 0.01);
	cr_assert_float_eq(count[1] / (double)n, 0.3, 0.01);
	cr_assert_float_eq(count[2] / (double)n, 0.6, 0.01);
}

Test(loadgen_rng, ranges_uniform_inclusive_and_seeded)
{
	struct lg_range range = { 10, 13 };
	struct lg_rng a, b;
	int seen[4] = { 0 };

	lg_rng_seed(&a, 5, 17);
	lg_rng_seed(&b, 5, 17);
	for (int i = 0; i < 4000; i++) {
		long x = lg_rng_range(&a, &range);

		cr_assert(x >= 10 && x <= 13);
		seen[x - 10]++;
		cr_assert_eq(x, lg_rng_range(&b, &range), "same seed, same draws");
	}
	for (int i = 0; i < 4; i++)
		cr_assert_float_eq(seen[i] / 4000.0, 0.25, 0.04);
	lg_rng_seed(&b, 6, 17);
	lg_rng_seed(&a, 5, 17);
	cr_assert_neq(lg_rng_next(&a), lg_rng_next(&b));
}

/* ---- a whole run against a fake server on loopback ------------------------ */

/*
 * The fake server: a thread per connection; each request is read with its
 * Content-Length body, checked, and answered with max_tokens SSE token
 * events in HTTP chunks, then a usage event. Every third response on a
 * connection closes it, so the client must reconnect.
 */
struct fake {
	int lfd;
	int port;
	pthread_t acceptor;
	pthread_t conns[64];
	int n_conns;
	int bad_requests;
	pthread_mutex_t mu;
};

static int read_request(int fd, char *buf, size_t cap, char **body)
{
	size_t len = 0;
	char *end = NULL, *cl;
	long blen;

	while (!end) {
		ssize_t n = read(fd, buf + len, cap - len - 1);

		if (n <= 0)
			return -1;
		len += (size_t)n;
		buf[len] = '\0';
		end = strstr(buf, "\r\n\r\n");
	}
	cl = strcasestr(buf, "Content-Length:");
	blen = cl ? atol(cl + 15) : 0;
	while (len < (size_t)(end + 4 - buf) + (size_t)blen) {
		ssize_t n = read(fd, buf + len, cap - len - 1);

		if (n <= 0)
			return -1;
		len += (size_t)n;
		buf[len] = '\0';
	}
	*body = end + 4;
	return 0;
}

static void send_chunk(int fd, const char *s)
{
	char head[32];

	snprintf(head, sizeof(head), "%zx\r\n", strlen(s));
	cr_assert_gt(write(fd, head, strlen(head)), 0);
	cr_assert_gt(write(fd, s, strlen(s)), 0);
	cr_assert_eq(write(fd, "\r\n", 2), 2);
}

static bool check_request(const char *head, cJSON *j)
{
	const cJSON *user = cJSON_GetObjectItem(j, "user");
	const cJSON *so = cJSON_GetObjectItem(j, "stream_options");
	char want[96];

	if (!cJSON_IsString(user) || !cJSON_IsTrue(cJSON_GetObjectItem(j,
							"stream")) ||
	    !cJSON_IsTrue(cJSON_GetObjectItem(so, "include_usage")))
		return false;
	snprintf(want, sizeof(want), "X-Tenant-Id: %s\r\n", user->valuestring);
	return strstr(head, want) != NULL &&
	       strncmp(head, "POST /v1/completions HTTP/1.1\r\n", 31) == 0;
}

static void respond(struct fake *f, int fd, const char *head,
		    const char *body, bool last)
{
	cJSON *j = cJSON_Parse(body);
	const cJSON *prompt = cJSON_GetObjectItem(j, "prompt");
	int max = (int)cJSON_GetNumberValue(cJSON_GetObjectItem(j, "max_tokens"));
	char ev[256];
	static int next_id;

	if (!j || !check_request(head, j) || !cJSON_IsString(prompt)) {
		pthread_mutex_lock(&f->mu);
		f->bad_requests++;
		pthread_mutex_unlock(&f->mu);
	}
	dprintf(fd, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
		"Transfer-Encoding: chunked\r\n%s\r\n",
		last ? "Connection: close\r\n" : "");
	int id = __atomic_add_fetch(&next_id, 1, __ATOMIC_RELAXED);
	for (int i = 0; i < max; i++) {
		snprintf(ev, sizeof(ev), "data: {\"id\":\"fake-%d\",\"choices\":"
			 "[{\"text\":\"t\"}]}\n\n", id);
		send_chunk(fd, ev);
	}
	snprintf(ev, sizeof(ev), "data: {\"id\":\"fake-%d\",\"choices\":[],"
		 "\"usage\":{\"prompt_tokens\":%zu,\"completion_tokens\":%d}}"
		 "\n\ndata: [DONE]\n\n", id,
		 prompt && prompt->valuestring ? strlen(prompt->valuestring) : 0,
		 max);
	send_chunk(fd, ev);
	cr_assert_eq(write(fd, "0\r\n\r\n", 5), 5);
	cJSON_Delete(j);
}

struct fake_conn {
	struct fake *f;
	int fd;
};

static void *fake_conn_main(void *arg)
{
	struct fake_conn *c = arg;
	char *buf = malloc(1 << 16), *body;
	int served = 0;

	while (read_request(c->fd, buf, 1 << 16, &body) == 0) {
		bool last = ++served % 3 == 0;

		respond(c->f, c->fd, buf, body, last);
		if (last)
			break;
	}
	close(c->fd);
	free(buf);
	free(c);
	return NULL;
}

static void *fake_accept_main(void *arg)
{
	struct fake *f = arg;
	int fd;

	while ((fd = accept(f->lfd, NULL, NULL)) >= 0) {
		struct fake_conn *c = malloc(sizeof(*c));

		c->f = f;
		c->fd = fd;
		pthread_mutex_lock(&f->mu);
		if (f->n_conns < 64 && !pthread_create(&f->conns[f->n_conns],
						       NULL, fake_conn_main, c))
			f->n_conns++;
		else
			close(fd), free(c);
		pthread_mutex_unlock(&f->mu);
	}
	return NULL;
}

static void fake_start(struct fake *f)
{
	struct sockaddr_in a = { .sin_family = AF_INET,
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t al = sizeof(a);

	memset(f, 0, sizeof(*f));
	pthread_mutex_init(&f->mu, NULL);
	f->lfd = socket(AF_INET, SOCK_STREAM, 0);
	cr_assert_geq(f->lfd, 0);
	cr_assert_eq(bind(f->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
	cr_assert_eq(listen(f->lfd, 16), 0);
	getsockname(f->lfd, (struct sockaddr *)&a, &al);
	f->port = ntohs(a.sin_port);
	pthread_create(&f->acceptor, NULL, fake_accept_main, f);
}

static void fake_stop(struct fake *f)
{
	shutdown(f->lfd, SHUT_RDWR);
	pthread_join(f->acceptor, NULL);
	close(f->lfd);
	for (int i = 0; i < f->n_conns; i++)
		pthread_join(f->conns[i], NULL);
}

Test(loadgen_run, streams_against_fake_server_and_reconnects)
{
	struct fake f;
	struct lg_opts o;
	struct lg_summary s;
	char url[64], out[] = "/tmp/lg-test-XXXXXX", err[256] = "", line[1024];
	int tfd = mkstemp(out);
	long lines = 0, tokens = 0;
	FILE *fp;

	cr_assert_geq(tfd, 0);
	close(tfd);
	fake_start(&f);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d", f.port);
	char *argv[] = { "loadgen", "--url", url, "--stream", "--concurrency",
			 "2", "--requests", "10", "--prompt-len", "5-40",
			 "--max-tokens", "1-6", "--tenants", "a:1,b:2",
			 "--timeout", "10", "--quiet", "--out", out, NULL };
	cr_assert_eq(lg_opts_parse(&o, 19, argv, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(lg_run(&o, &s, err, sizeof(err)), 0, "%s", err);
	fake_stop(&f);

	cr_assert_eq(f.bad_requests, 0, "requests had the tenant, stream "
		     "options and path");
	cr_assert_eq(s.ok, 10);
	cr_assert_eq(s.failed, 0);
	cr_assert_geq(f.n_conns, 4, "every third response closed: reconnects");
	fp = fopen(out, "r");
	cr_assert_not_null(fp);
	while (fgets(line, sizeof(line), fp)) {
		cJSON *j = cJSON_Parse(line);
		double sent, first, end, toks, ptoks, plen, maxt;

		cr_assert_not_null(j, "out line is JSON: %s", line);
		cr_assert(strncmp(cJSON_GetStringValue(cJSON_GetObjectItem(j,
				  "id")), "fake-", 5) == 0);
		cr_assert_eq(cJSON_GetNumberValue(cJSON_GetObjectItem(j,
							"status")), 200);
		sent = cJSON_GetNumberValue(cJSON_GetObjectItem(j, "sent_ns"));
		first = cJSON_GetNumberValue(cJSON_GetObjectItem(j,
							"first_token_ns"));
		end = cJSON_GetNumberValue(cJSON_GetObjectItem(j, "end_ns"));
		toks = cJSON_GetNumberValue(cJSON_GetObjectItem(j,
							"token_events"));
		ptoks = cJSON_GetNumberValue(cJSON_GetObjectItem(j,
							"prompt_tokens"));
		plen = cJSON_GetNumberValue(cJSON_GetObjectItem(j, "prompt_len"));
		maxt = cJSON_GetNumberValue(cJSON_GetObjectItem(j, "max_tokens"));
		cr_assert(sent > 0 && first >= sent && end >= first);
		cr_assert_eq(toks, maxt);
		cr_assert_eq(cJSON_GetNumberValue(cJSON_GetObjectItem(j,
				"completion_tokens")), maxt);
		cr_assert_eq(ptoks, plen, "prompt bytes == prompt_len");
		cr_assert(plen >= 5 && plen <= 40);
		tokens += (long)toks;
		lines++;
		cJSON_Delete(j);
	}
	fclose(fp);
	unlink(out);
	cr_assert_eq(lines, 10);
	cr_assert_eq(s.completion_tokens, tokens);
}

Test(loadgen_run, connection_refused_is_a_failed_request_with_status_0)
{
	struct lg_opts o;
	struct lg_summary s;
	char err[256] = "", out[] = "/tmp/lg-test-XXXXXX", line[1024];
	int fd = socket(AF_INET, SOCK_STREAM, 0), tfd = mkstemp(out);
	struct sockaddr_in a = { .sin_family = AF_INET,
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t al = sizeof(a);
	char url[64];
	FILE *fp;

	/* a port that was bound and is now closed: nothing listens there */
	bind(fd, (struct sockaddr *)&a, sizeof(a));
	getsockname(fd, (struct sockaddr *)&a, &al);
	close(fd);
	close(tfd);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d", ntohs(a.sin_port));
	char *argv[] = { "loadgen", "--url", url, "--requests", "3", "--quiet",
			 "--out", out, NULL };
	cr_assert_eq(lg_opts_parse(&o, 8, argv, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(lg_run(&o, &s, err, sizeof(err)), 0);
	cr_assert_eq(s.failed, 3);
	cr_assert_eq(s.ok, 0);
	fp = fopen(out, "r");
	cr_assert(fgets(line, sizeof(line), fp));
	fclose(fp);
	unlink(out);
	cr_assert(strstr(line, "\"status\":0"), "%s", line);
	cr_assert(strstr(line, "\"error\":\"cannot connect"), "%s", line);
}
