/*
 * Aggregation of finished requests per tenant and model: counts, tokens,
 * percentiles from the histograms, the table and the JSON object.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../../user/summary.h"

static struct tt_request mk(const char *tenant, const char *model,
			    double ttft_ms, int status, enum tt_req_end end)
{
	struct tt_request r;

	memset(&r, 0, sizeof(r));
	snprintf(r.tenant, sizeof(r.tenant), "%s", tenant);
	snprintf(r.model, sizeof(r.model), "%s", model);
	r.ttft_ms = ttft_ms;
	r.http_status = status;
	r.end = end;
	r.prompt_tokens = 10;
	r.completion_tokens = 5;
	r.bytes_in = 100;
	r.bytes_out = 1000;
	return r;
}

Test(summary, groups_count_requests_tokens_and_failures)
{
	struct summary *s = summary_new();
	struct summary_row row;
	struct tt_request r;

	r = mk("acme", "llama", 10, 200, TT_END_COMPLETE);
	summary_add(s, &r);
	r = mk("acme", "qwen", 20, 500, TT_END_SERVER_ERROR);
	summary_add(s, &r);
	r = mk("bob", "llama", -1, 200, TT_END_CLIENT_GONE);
	r.prompt_tokens = -1;	/* unknown: adds nothing */
	summary_add(s, &r);

	cr_assert_eq(summary_get(s, "all", NULL, &row), 0);
	cr_assert_eq(row.requests, 3);
	cr_assert_eq(row.ok, 1);
	cr_assert_eq(row.failed, 2);
	cr_assert_eq(row.prompt_tokens, 20);
	cr_assert_eq(row.completion_tokens, 15);
	cr_assert_eq(row.bytes_out, 3000);
	cr_assert_eq(summary_get(s, "tenant", "acme", &row), 0);
	cr_assert_eq(row.requests, 2);
	cr_assert_eq(row.failed, 1);
	cr_assert_eq(summary_get(s, "model", "llama", &row), 0);
	cr_assert_eq(row.requests, 2);
	cr_assert_float_eq(row.ttft_p50_ms, 10, 10 * 0.032);
	cr_assert_eq(summary_get(s, "tenant", "bob", &row), 0);
	cr_assert_eq(row.ttft_p50_ms, -1, "no sample");
	cr_assert_eq(summary_get(s, "tenant", "nobody", &row), -ENOENT);
	summary_free(s);
}

Test(summary, percentiles_within_histogram_error)
{
	struct summary *s = summary_new();
	struct summary_row row;
	uint64_t tok[1001];

	/* TTFT 1..1000 ms; one request with 1000 gaps of 1..1000 us */
	for (int i = 1; i <= 1000; i++) {
		struct tt_request r = mk("t", "m", i, 200, TT_END_COMPLETE);

		summary_add(s, &r);
	}
	tok[0] = 0;
	for (int i = 1; i <= 1000; i++)
		tok[i] = tok[i - 1] + (uint64_t)i * 1000;
	{
		struct tt_request r = mk("t", "m", -1, 200, TT_END_COMPLETE);

		r.token_ns = tok;
		r.token_ns_len = 1001;
		r.token_events = 1001;
		summary_add(s, &r);
	}
	cr_assert_eq(summary_get(s, "all", NULL, &row), 0);
	cr_assert_float_eq(row.ttft_p50_ms, 500, 500 * 0.032);
	cr_assert_float_eq(row.ttft_p99_ms, 990, 990 * 0.032);
	cr_assert_float_eq(row.itl_p50_ms, 0.5, 0.5 * 0.032);
	cr_assert_float_eq(row.itl_p99_ms, 0.99, 0.99 * 0.032);
	summary_free(s);
}

Test(summary, many_tenants_share_an_overflow_group)
{
	struct summary *s = summary_new();
	struct summary_row row;
	char name[32];

	for (int i = 0; i < SUMMARY_GROUPS_MAX + 10; i++) {
		struct tt_request r;

		snprintf(name, sizeof(name), "t%d", i);
		r = mk(name, "m", 1, 200, TT_END_COMPLETE);
		summary_add(s, &r);
	}
	cr_assert_eq(summary_get(s, "tenant", "(other)", &row), 0);
	cr_assert_eq(row.requests, 10);
	cr_assert_eq(summary_get(s, "all", NULL, &row), 0);
	cr_assert_eq(row.requests, SUMMARY_GROUPS_MAX + 10);
	summary_free(s);
}

Test(summary, table_and_json_show_the_same_groups)
{
	struct summary *s = summary_new();
	struct tt_request r = mk("acme", "llama", 12, 200, TT_END_COMPLETE);
	char buf[4096] = "";
	FILE *f = fmemopen(buf, sizeof(buf), "w");
	cJSON *j, *t, *all;
	char *txt;

	summary_add(s, &r);
	summary_print(s, f);
	fclose(f);
	cr_assert_not_null(strstr(buf, "tenant  acme"), "%s", buf);
	cr_assert_not_null(strstr(buf, "model   llama"), "%s", buf);
	cr_assert_not_null(strstr(buf, "requests"));
	j = summary_to_json(s);
	cr_assert_not_null(j);
	all = cJSON_GetObjectItem(j, "all");
	cr_assert_eq(cJSON_GetObjectItem(all, "requests")->valuedouble, 1);
	cr_assert_eq(cJSON_GetObjectItem(all, "ok")->valuedouble, 1);
	cr_assert(cJSON_IsNull(cJSON_GetObjectItem(all, "itl_p50_ms")));
	t = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "tenants"), 0);
	cr_assert_str_eq(cJSON_GetObjectItem(t, "name")->valuestring, "acme");
	cr_assert_eq(cJSON_GetObjectItem(t, "prompt_tokens")->valuedouble, 10);
	cr_assert_float_eq(cJSON_GetObjectItem(t, "ttft_p50_ms")->valuedouble,
			   12, 12 * 0.032);
	txt = cJSON_PrintUnformatted(j);
	cr_assert_not_null(strstr(txt, "\"models\":[{\"name\":\"llama\""), "%s", txt);
	cJSON_free(txt);
	cJSON_Delete(j);
	summary_free(s);
}
