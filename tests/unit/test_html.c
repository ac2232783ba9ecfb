/*
 * The HTML report: one self-contained page whose tags balance, with a
 * titled <svg> per chart, the numbers of the report in it, every string
 * from the trace escaped, and nothing fetched from the network.
 */
#include <criterion/criterion.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../user/html.h"
#include "views_fixture.h"

static int do_html(struct vf *v, FILE *f)
{
	return html_write_report(&v->rep, &v->c, f);
}

static char *page(struct vf *v)
{
	return vf_capture(do_html, v);
}

static bool is_void(const char *tag)
{
	static const char *const v[] = { "meta", "br", "hr", "img", "link",
					 "input", NULL };

	for (int i = 0; v[i]; i++)
		if (!strcmp(tag, v[i]))
			return true;
	return false;
}

/* 0 when every opened tag is closed in order, else the offset of the
 * first mismatch (+1). Skips <!...>, void and self-closed tags. */
static size_t unbalanced(const char *s)
{
	char stack[64][16];
	int depth = 0;

	for (const char *p = s; (p = strchr(p, '<')); p++) {
		const char *q = p + 1;
		bool close = *q == '/';
		char tag[16];
		size_t n = 0;
		const char *end = strchr(p, '>');

		if (!end || *q == '!')
			continue;
		q += close;
		while (isalnum((unsigned char)q[n]) && n < sizeof(tag) - 1)
			n++;
		memcpy(tag, q, n);
		tag[n] = '\0';
		if (!n || is_void(tag) || end[-1] == '/')
			continue;
		if (!close) {
			if (depth == 64)
				return (size_t)(p - s) + 1;
			snprintf(stack[depth++], sizeof(stack[0]), "%s", tag);
		} else if (!depth || strcmp(stack[--depth], tag)) {
			return (size_t)(p - s) + 1;
		}
	}
	return depth ? strlen(s) + 1 : 0;
}

Test(html, tags_balance_and_the_page_is_whole)
{
	struct vf v;
	char *s;
	size_t bad;

	vf_init(&v);
	s = page(&v);
	cr_assert_eq(strncmp(s, "<!DOCTYPE html>", 15), 0);
	bad = unbalanced(s);
	cr_assert_eq(bad, 0, "tags do not balance at offset %zu: %.60s",
		     bad - 1, s + (bad ? bad - 1 : 0));
	cr_assert_not_null(strstr(s, "</html>\n"));
	free(s);
	vf_free(&v);
}

Test(html, a_titled_svg_per_chart)
{
	static const char *const ids[] = { "chart-busy-0", "chart-busy-1",
		"chart-batch", "chart-tenant-cost", "chart-ttft", "chart-itl",
		NULL };
	struct vf v;
	char *s, want[96];

	vf_init(&v);
	s = page(&v);
	for (int i = 0; ids[i]; i++) {
		snprintf(want, sizeof(want), "<svg id=\"%s\"", ids[i]);
		cr_assert_not_null(strstr(s, want), "no chart %s", ids[i]);
		snprintf(want, sizeof(want), "<title id=\"%s-title\">", ids[i]);
		cr_assert_not_null(strstr(s, want), "chart %s has no title",
				   ids[i]);
	}
	cr_assert_not_null(strstr(s, "Device busy/idle over time: NVIDIA H100"));
	free(s);
	vf_free(&v);
}

Test(html, shows_the_reports_numbers)
{
	struct vf v;
	char *s, want[128];
	const struct report_group *acme = NULL;

	vf_init(&v);
	s = page(&v);
	snprintf(want, sizeof(want), "Window %.3f s, 3 requests",
		 v.rep.window_ns / 1e9);
	cr_assert_not_null(strstr(s, want), "no '%s'", want);
	for (size_t i = 0; i < v.rep.ntenants; i++)
		if (!strcmp(v.rep.tenants[i].name, "acme"))
			acme = &v.rep.tenants[i];
	cr_assert_not_null(acme);
	snprintf(want, sizeof(want), "<td>%.6f</td>", acme->cost_loaded_usd);
	cr_assert_not_null(strstr(s, want), "no acme loaded cost %s", want);
	snprintf(want, sizeof(want), "<td>%.3f</td>",
		 v.rep.devs[1].busy_ns / 1e9);
	cr_assert_not_null(strstr(s, want), "no GPU busy seconds %s", want);
	snprintf(want, sizeof(want), "%u steps on NVIDIA H100",
		 v.rep.devs[1].steps.nsteps);
	cr_assert_not_null(strstr(s, want), "no '%s'", want);
	cr_assert_not_null(strstr(s, "3 requests with a first token"));
	cr_assert_not_null(strstr(s, "id=\"cost-model\""));
	free(s);
	vf_free(&v);
}

Test(html, strings_from_the_trace_are_escaped)
{
	struct vf v;
	char *s;

	vf_engine(&v);
	snprintf(v.g->reqs[0].tenant, sizeof(v.g->reqs[0].tenant),
		 "<script>x&'\"</script>");
	vf_report(&v);
	s = page(&v);
	cr_assert_null(strstr(s, "<script>x"), "a tenant name got through "
		       "unescaped");
	cr_assert_not_null(strstr(s, "&lt;script&gt;x&amp;&#39;&quot;"
				  "&lt;/script&gt;"));
	cr_assert_eq(unbalanced(s), 0);
	free(s);
	vf_free(&v);
}

Test(html, nothing_is_fetched_from_the_network)
{
	struct vf v;
	char *s, *p;

	vf_init(&v);
	s = page(&v);
	cr_assert_null(strstr(s, "src="));
	cr_assert_null(strstr(s, "href="));
	cr_assert_null(strstr(s, "@import"));
	cr_assert_null(strstr(s, "url("));
	for (p = s; (p = strstr(p, "http")); p++)
		cr_assert(!strncmp(p, "http://www.w3.org/2000/svg", 26),
			  "a network address in the page: %.40s", p);
	free(s);
	vf_free(&v);
}

Test(html, a_report_without_requests_still_has_every_chart)
{
	struct report r = { 0 };
	struct report_input in = { .start_ns = 1000, .end_ns = 2000000 };
	char *buf = NULL;
	size_t len = 0;
	FILE *m = open_memstream(&buf, &len);

	cr_assert_eq(report_build(&in, &r), 0);
	cr_assert_eq(html_write_report(&r, NULL, m), 0);
	fclose(m);
	cr_assert_not_null(strstr(buf, "id=\"chart-batch\""));
	cr_assert_not_null(strstr(buf, "id=\"chart-ttft\""));
	cr_assert_not_null(strstr(buf, "No steps: no device was attributed."));
	cr_assert_eq(unbalanced(buf), 0);
	free(buf);
	report_free(&r);
}

/* ---- the plan's page ------------------------------------------------------ */

/* A plan's JSON as cmd_plan writes it: three curve points (the last
 * saturated), a limit, today's load, and a device name to escape. */
static cJSON *plan_fixture(void)
{
	static const char *const j =
		"{\"predicted\":{\"throughput_tok_s\":2000,\"requests_per_s\":"
		"40,\"ttft_ms\":{\"p50\":7.5,\"p90\":12,\"p99\":18.5},"
		"\"itl_ms\":{\"p50\":2.25,\"p90\":4,\"p99\":9},\"busy_fraction\":"
		"0.8,\"mean_batch\":5.5},\"replicas\":1,"
		"\"saturation_tok_s_per_replica\":3750,"
		"\"curve\":[{\"offered_requests_per_s\":20,\"throughput_tok_s\":"
		"1000,\"ttft_ms\":{\"p50\":6,\"p90\":8,\"p99\":11},\"itl_ms\":"
		"{\"p50\":2,\"p90\":3,\"p99\":7},\"busy_fraction\":0.5,"
		"\"mean_batch\":2,\"saturated\":false},"
		"{\"offered_requests_per_s\":60,\"throughput_tok_s\":3000,"
		"\"ttft_ms\":{\"p50\":10,\"p90\":40,\"p99\":120},\"itl_ms\":"
		"{\"p50\":3,\"p90\":5,\"p99\":10},\"busy_fraction\":0.9,"
		"\"mean_batch\":9,\"saturated\":false},"
		"{\"offered_requests_per_s\":80,\"throughput_tok_s\":3700,"
		"\"ttft_ms\":{\"p50\":900,\"p90\":2000,\"p99\":4000},\"itl_ms\":"
		"{\"p50\":3.5,\"p90\":6,\"p99\":12},\"busy_fraction\":1,"
		"\"mean_batch\":16,\"saturated\":true}],"
		"\"slo\":{\"ttft_p99\":{\"limit_ms\":100}},"
		"\"usd_per_1m_prompt\":0.037,\"usd_per_1m_completion\":0.31,"
		"\"assumptions\":{\"device\":\"<script>x</script>\","
		"\"trace_requests_per_s\":30,\"max_batch\":16}}";
	cJSON *o = cJSON_Parse(j);

	cr_assert_not_null(o);
	return o;
}

static char *plan_page(const cJSON *plan)
{
	static char *buf;	/* static: the stream writes it at fclose */
	static size_t len;
	FILE *m = open_memstream(&buf, &len);

	cr_assert_not_null(m);
	cr_assert_eq(html_write_plan(plan, m), 0);
	cr_assert_eq(fclose(m), 0);
	return buf;
}

Test(html, a_plan_draws_latency_and_throughput_against_load)
{
	cJSON *o = plan_fixture();
	char *s = plan_page(o);
	const char *p;

	cr_expect_eq(unbalanced(s), 0, "tags do not balance at %zu",
		     unbalanced(s));
	cr_expect(strstr(s, "<svg id=\"chart-plan-latency\""));
	cr_expect(strstr(s, "<svg id=\"chart-plan-throughput\""));
	/* the latency chart's scale: 1.5 x the limit (150 ms) is above 1.2
	 * x the 120 ms of the last point under 85% of the top load; x from
	 * 56 to 708 for 0 to 80 requests/s, y from 192 down to 12 for 0 to
	 * 150 ms: the saturated point's 4000 ms is clipped at the top */
	p = strstr(s, "class=\"ln ttft99\" points=\"");
	cr_assert_not_null(p);
	cr_expect_eq(strncmp(p + 26, "219.0,178.8 545.0,48.0 708.0,12.0 \"",
			     35), 0, "ttft99 line: %.40s", p + 26);
	/* the limit, dashed, at 100 of 150 ms */
	cr_expect(strstr(s, "<line class=\"slo\" x1=\"56\" y1=\"72.0\""));
	/* today's load (30 of 80 requests/s) and the prediction's point */
	cr_expect(strstr(s, "<line class=\"today\" x1=\"300.5\""));
	cr_expect(strstr(s, "<circle class=\"pt\" cx=\"382.0\" "
			 "cy=\"169.8\""));
	cr_expect(strstr(s, "saturated"));
	cr_expect(strstr(s, "&lt;script&gt;x&lt;/script&gt;"));
	cr_expect_null(strstr(s, "<script>x"), "a string left unescaped");
	for (p = s; (p = strstr(p, "http")); p++)
		cr_expect(!strncmp(p, "http://www.w3.org/2000/svg", 26),
			  "a network address in the page: %.40s", p);
	free(s);
	cJSON_Delete(o);
}

Test(html, a_plan_without_a_curve_is_refused)
{
	cJSON *o = cJSON_Parse("{\"predicted\":{}}");
	FILE *m = fopen("/dev/null", "w");

	cr_assert_not_null(m);
	cr_expect_eq(html_write_plan(o, m), -EINVAL);
	fclose(m);
	cJSON_Delete(o);
}
