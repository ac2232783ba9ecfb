/*
 * The Prometheus exposition: counters by tenant, model and status, tokens
 * by kind, cumulative histograms, device busy/idle from a running union,
 * capped label cardinality, escaped label values, the buffer contract of
 * metrics_render, address parsing, and one scrape over a real socket.
 */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../../user/metrics.h"

static char *render(struct metrics *m)
{
	size_t n = metrics_render(m, NULL, 0);
	char *b = malloc(n + 1);

	cr_assert_not_null(b);
	cr_assert_eq(metrics_render(m, b, n + 1), n);
	cr_assert_eq(strlen(b), n);
	return b;
}

static void has_line(const char *text, const char *line)
{
	char want[512];

	snprintf(want, sizeof(want), "\n%s\n", line);
	cr_assert_not_null(strstr(text, want), "no line '%s' in:\n%s", line,
			   text);
}

/* A streamed request: arrival at t, tokens every gap_ns from t + ttft. */
static struct tt_request req(const char *tenant, const char *model,
			     uint64_t t, uint64_t ttft, uint64_t gap_ns,
			     uint64_t *tok, uint32_t ntok)
{
	struct tt_request q = { .prompt_tokens = 10, .completion_tokens = ntok,
				.arrival_ns = t, .end = TT_END_COMPLETE };

	snprintf(q.tenant, sizeof(q.tenant), "%s", tenant);
	snprintf(q.model, sizeof(q.model), "%s", model);
	for (uint32_t i = 0; i < ntok; i++)
		tok[i] = t + ttft + i * gap_ns;
	q.first_token_ns = ntok ? tok[0] : 0;
	q.token_ns = tok;
	q.token_ns_len = q.token_events = ntok;
	q.end_ns = ntok ? tok[ntok - 1] : t;
	return q;
}

Test(metrics, requests_and_tokens_by_tenant_model_and_status)
{
	struct metrics *m = metrics_new();
	uint64_t tok[8];
	struct tt_request q;
	char *s;

	q = req("acme", "tiny", 1000, 30000000, 20000000, tok, 4);
	metrics_request(m, &q);
	metrics_request(m, &q);
	q.end = TT_END_CLIENT_GONE;
	q.completion_tokens = -1;	/* no usage: counted from events */
	metrics_request(m, &q);
	s = render(m);
	has_line(s, "tokentrace_requests_total{tenant=\"acme\",model=\"tiny\","
		 "status=\"complete\"} 2");
	has_line(s, "tokentrace_requests_total{tenant=\"acme\",model=\"tiny\","
		 "status=\"client_gone\"} 1");
	has_line(s, "tokentrace_tokens_total{tenant=\"acme\",model=\"tiny\","
		 "kind=\"prompt\"} 30");
	has_line(s, "tokentrace_tokens_total{tenant=\"acme\",model=\"tiny\","
		 "kind=\"completion\"} 12");
	has_line(s, "# TYPE tokentrace_requests_total counter");
	cr_assert_not_null(strstr(s, "# HELP tokentrace_requests_total "));
	free(s);
	metrics_free(m);
}

Test(metrics, histograms_are_cumulative_with_sum_and_count)
{
	struct metrics *m = metrics_new();
	uint64_t tok[4];
	struct tt_request q = req("acme", "tiny", 0, 30000000, 20000000, tok,
				  4);
	char *s;

	metrics_request(m, &q);
	s = render(m);
	has_line(s, "# TYPE tokentrace_ttft_seconds histogram");
	has_line(s, "tokentrace_ttft_seconds_bucket{tenant=\"acme\","
		 "model=\"tiny\",le=\"0.025\"} 0");
	has_line(s, "tokentrace_ttft_seconds_bucket{tenant=\"acme\","
		 "model=\"tiny\",le=\"0.05\"} 1");
	has_line(s, "tokentrace_ttft_seconds_bucket{tenant=\"acme\","
		 "model=\"tiny\",le=\"+Inf\"} 1");
	has_line(s, "tokentrace_ttft_seconds_sum{tenant=\"acme\","
		 "model=\"tiny\"} 0.030000000");
	/* three gaps of 20 ms */
	has_line(s, "tokentrace_itl_seconds_bucket{tenant=\"acme\","
		 "model=\"tiny\",le=\"0.01\"} 0");
	has_line(s, "tokentrace_itl_seconds_bucket{tenant=\"acme\","
		 "model=\"tiny\",le=\"0.025\"} 3");
	has_line(s, "tokentrace_itl_seconds_count{tenant=\"acme\","
		 "model=\"tiny\"} 3");
	free(s);
	metrics_free(m);
}

Test(metrics, device_busy_is_the_union_and_gaps_are_idle)
{
	struct metrics *m = metrics_new();
	struct tt_device d = { .id = 1, .kind = TT_DEV_GPU, .name = "H100" };
	struct tt_interval iv[] = {
		{ .start_ns = 100000000, .end_ns = 110000000, .device = 1 },
		{ .start_ns = 105000000, .end_ns = 120000000, .device = 1 },
		{ .start_ns = 107000000, .end_ns = 108000000, .device = 1 },
		{ .start_ns = 130000000, .end_ns = 140000000, .device = 1 },
	};
	char *s;

	metrics_device(m, &d);
	for (int i = 0; i < 4; i++)
		metrics_interval(m, &iv[i]);
	s = render(m);
	has_line(s, "tokentrace_device_busy_seconds_total{device=\"gpu1\"} "
		 "0.030000000");
	has_line(s, "tokentrace_device_idle_seconds_total{device=\"gpu1\"} "
		 "0.010000000");
	has_line(s, "tokentrace_device_info{device=\"gpu1\",name=\"H100\"} 1");
	free(s);
	metrics_free(m);
}

Test(metrics, gpu_seconds_by_phase_and_cost)
{
	struct metrics *m = metrics_new();
	struct tt_device d = { .id = 0, .kind = TT_DEV_CPU, .name = "cpu" };
	char *s;

	metrics_device(m, &d);
	metrics_attributed(m, 0, "acme", "tiny", 2000000, 5000000, 0.25);
	metrics_attributed(m, 0, "acme", "tiny", 1000000, 0, 0.5);
	s = render(m);
	has_line(s, "tokentrace_gpu_seconds_total{device=\"cpu0\","
		 "tenant=\"acme\",phase=\"prefill\"} 0.003000000");
	has_line(s, "tokentrace_gpu_seconds_total{device=\"cpu0\","
		 "tenant=\"acme\",phase=\"decode\"} 0.005000000");
	has_line(s, "tokentrace_cost_usd_total{tenant=\"acme\","
		 "model=\"tiny\"} 0.75");
	free(s);
	metrics_free(m);
}

Test(metrics, tenants_past_the_cap_count_as_other)
{
	struct metrics *m = metrics_new();
	uint64_t tok[1];
	char name[32], *s, *p;
	int series = 0;

	for (int i = 0; i < METRICS_MAX_TENANTS + 44; i++) {
		struct tt_request q;

		snprintf(name, sizeof(name), "t%d", i);
		q = req(name, "tiny", 0, 1000, 1000, tok, 1);
		metrics_request(m, &q);
	}
	s = render(m);
	for (p = s; (p = strstr(p, "\ntokentrace_requests_total{")); p++)
		series++;
	cr_assert_eq(series, METRICS_MAX_TENANTS);
	has_line(s, "tokentrace_requests_total{tenant=\"other\","
		 "model=\"tiny\",status=\"complete\"} 45");
	free(s);
	metrics_free(m);
}

Test(metrics, label_values_are_escaped)
{
	struct metrics *m = metrics_new();
	uint64_t tok[1];
	struct tt_request q = req("a\"b\\c\nd", "m", 0, 1000, 1000, tok, 1);
	char *s;

	metrics_request(m, &q);
	s = render(m);
	has_line(s, "tokentrace_requests_total{tenant=\"a\\\"b\\\\c\\nd\","
		 "model=\"m\",status=\"complete\"} 1");
	free(s);
	metrics_free(m);
}

Test(metrics, render_reports_the_length_a_short_buffer_needed)
{
	struct metrics *m = metrics_new();
	struct report_losses l = { .sock_events = 7 };
	char small[16];
	size_t n;
	char *s;

	metrics_losses(m, &l);
	n = metrics_render(m, small, sizeof(small));
	cr_assert_gt(n, sizeof(small));
	cr_assert_eq(strlen(small), sizeof(small) - 1);
	s = render(m);
	cr_assert_eq(strlen(s), n);
	cr_assert_eq(strncmp(s, small, sizeof(small) - 1), 0);
	has_line(s, "tokentrace_events_lost_total{source=\"sockets\"} 7");
	free(s);
	metrics_free(m);
}

Test(metrics, parse_addr_forms)
{
	char a[64];
	uint16_t port;

	cr_assert_eq(metrics_parse_addr("127.0.0.1:9400", a, sizeof(a),
					&port), 0);
	cr_assert_str_eq(a, "127.0.0.1");
	cr_assert_eq(port, 9400);
	cr_assert_eq(metrics_parse_addr(":0", a, sizeof(a), &port), 0);
	cr_assert_str_eq(a, "");
	cr_assert_eq(port, 0);
	cr_assert_eq(metrics_parse_addr("9100", a, sizeof(a), &port), 0);
	cr_assert_eq(port, 9100);
	cr_assert_eq(metrics_parse_addr("[::1]:80", a, sizeof(a), &port), 0);
	cr_assert_str_eq(a, "::1");
	cr_assert_eq(metrics_parse_addr("host:99999", a, sizeof(a), &port),
		     -EINVAL);
	cr_assert_eq(metrics_parse_addr("host:", a, sizeof(a), &port),
		     -EINVAL);
}

/* GET path from 127.0.0.1:port over a plain socket; the whole reply. */
static char *http_get(uint16_t port, const char *path)
{
	struct sockaddr_in sa = { .sin_family = AF_INET,
				  .sin_port = htons(port) };
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	static char buf[65536];
	size_t len = 0;
	ssize_t n;
	char req[128];

	inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
	cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\nHost: x\r\n\r\n", path);
	cr_assert_eq(write(fd, req, strlen(req)), (ssize_t)strlen(req));
	while ((n = read(fd, buf + len, sizeof(buf) - 1 - len)) > 0)
		len += (size_t)n;
	buf[len] = '\0';
	close(fd);
	return buf;
}

Test(metrics, serves_the_text_on_a_port_it_picked)
{
	struct metrics *m;
	uint16_t port = 0;
	uint64_t tok[2];
	struct tt_request q = req("acme", "tiny", 0, 1000, 1000, tok, 2);
	char *r;

	cr_assert_eq(metrics_start(NULL, 0, &port, &m), 0);
	cr_assert_neq(port, 0);
	metrics_request(m, &q);
	r = http_get(port, "/metrics");
	cr_assert_eq(strncmp(r, "HTTP/1.", 7), 0);
	cr_assert_not_null(strstr(r, " 200 "), "reply: %.80s", r);
	cr_assert_not_null(strstr(r, "text/plain; version=0.0.4"));
	cr_assert_not_null(strstr(r, "tokentrace_requests_total{tenant=\"acme\""));
	r = http_get(port, "/other");
	cr_assert_not_null(strstr(r, " 404 "));
	metrics_stop(m);
}
