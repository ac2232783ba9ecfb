/*
 * The HTML report: one self-contained page whose tags balance, with a
 * titled <svg> per chart, the numbers of the report in it, every string
 * from the trace escaped, and nothing fetched from the network.
 */
#include <criterion/criterion.h>
#include <ctype.h>
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
