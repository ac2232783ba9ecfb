/*
 * The exports: Chrome trace-event JSON (tracks per device and stream, per
 * request, steps, counters, exact microsecond times), OTLP/JSON (GenAI
 * attributes, deterministic ids, Unix times) and JSON lines, on the
 * synthetic engine of views_fixture.h.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "../../user/export.h"
#include "views_fixture.h"

#define OFFSET_NS 1700000000000000000ll

static int do_perfetto(struct vf *v, FILE *f)
{
	return export_perfetto(&v->rep, &v->c, f);
}

static int do_otlp(struct vf *v, FILE *f)
{
	return export_otlp(&v->rep, &v->c, OFFSET_NS, f);
}

static int do_jsonl(struct vf *v, FILE *f)
{
	return export_jsonl(&v->rep, f);
}

static cJSON *perfetto_events(struct vf *v, cJSON **root)
{
	char *s = vf_capture(do_perfetto, v);
	cJSON *ev;

	*root = cJSON_Parse(s);
	free(s);
	cr_assert_not_null(*root, "the Perfetto export is not valid JSON");
	ev = cJSON_GetObjectItem(*root, "traceEvents");
	cr_assert(cJSON_IsArray(ev));
	return ev;
}

static const char *str_of(const cJSON *o, const char *k)
{
	const cJSON *x = cJSON_GetObjectItem(o, k);

	return cJSON_IsString(x) ? x->valuestring : "";
}

static int count(const cJSON *ev, const char *ph, const char *cat,
		 const char *name)
{
	const cJSON *e;
	int n = 0;

	cJSON_ArrayForEach(e, ev)
		if (!strcmp(str_of(e, "ph"), ph) &&
		    (!cat || !strcmp(str_of(e, "cat"), cat)) &&
		    (!name || !strcmp(str_of(e, "name"), name)))
			n++;
	return n;
}

/* Whether a metadata event names process pid (tid < 0) or a thread. */
static bool has_meta(const cJSON *ev, const char *what, int pid,
		     const char *name)
{
	const cJSON *e;

	cJSON_ArrayForEach(e, ev) {
		const cJSON *a = cJSON_GetObjectItem(e, "args");

		if (!strcmp(str_of(e, "ph"), "M") &&
		    !strcmp(str_of(e, "name"), what) &&
		    cJSON_GetObjectItem(e, "pid")->valueint == pid &&
		    !strcmp(str_of(a, "name"), name))
			return true;
	}
	return false;
}

Test(export, perfetto_has_a_track_per_device_stream_and_request)
{
	struct vf v;
	cJSON *root, *ev;
	int kernels = 0, copies = 0, tokens = 0;

	vf_init(&v);
	ev = perfetto_events(&v, &root);
	for (size_t i = 0; i < v.c.nivs; i++) {
		kernels += v.c.ivs[i].kind == TT_IV_KERNEL;
		copies += v.c.ivs[i].kind == TT_IV_MEMCPY;
	}
	for (size_t i = 0; i < v.c.nreqs; i++)
		tokens += v.c.reqs[i].token_ns_len;
	cr_assert(has_meta(ev, "process_name", 2, "gpu 1: NVIDIA H100"));
	cr_assert(has_meta(ev, "thread_name", 2, "stream 7"));
	cr_assert(has_meta(ev, "process_name", EXPORT_PID_REQUESTS,
			   "requests"));
	cr_assert(has_meta(ev, "process_name", EXPORT_PID_STEPS, "steps"));
	cr_assert(has_meta(ev, "thread_name", EXPORT_PID_REQUESTS,
			   "acme req-0"));
	cr_assert_eq(count(ev, "X", "kernel", VF_KERNEL), kernels,
		     "every kernel, named from the collect's name table");
	cr_assert_eq(count(ev, "X", "memcpy", NULL), copies);
	cr_assert_eq(count(ev, "X", "request", NULL), 3);
	cr_assert_eq(count(ev, "X", "phase", "prefill"), 3);
	cr_assert_eq(count(ev, "X", "phase", "decode"), 3);
	cr_assert_eq(count(ev, "i", NULL, "token"), tokens);
	cr_assert_eq(count(ev, "X", "step", NULL),
		     (int)v.rep.devs[1].steps.nsteps);
	cr_assert_gt(count(ev, "C", NULL, "batch size"), 0);
	cr_assert_gt(count(ev, "C", NULL, "busy fraction"), 0);
	cJSON_Delete(root);
	vf_free(&v);
}

Test(export, perfetto_request_slice_carries_tenant_tokens_and_cost)
{
	struct vf v;
	cJSON *root, *ev, *e;
	int seen = 0;

	vf_init(&v);
	ev = perfetto_events(&v, &root);
	cJSON_ArrayForEach(e, ev) {
		const cJSON *a = cJSON_GetObjectItem(e, "args");
		const struct report_request *q;

		if (strcmp(str_of(e, "cat"), "request"))
			continue;
		q = &v.rep.reqs[cJSON_GetObjectItem(e, "tid")->valueint - 1];
		cr_assert_str_eq(str_of(a, "tenant"), q->req.tenant);
		cr_assert_str_eq(str_of(a, "model"), q->req.model);
		cr_assert_eq(cJSON_GetObjectItem(a, "completion_tokens")
			     ->valuedouble, (double)q->req.completion_tokens);
		cr_assert_eq(cJSON_GetObjectItem(a, "gpu_ns")->valuedouble,
			     (double)q->gpu_ns);
		cr_assert_gt(q->gpu_ns, 0);
		cr_assert_float_eq(cJSON_GetObjectItem(a, "cost_usd")
				   ->valuedouble, q->cost_usd, 1e-12);
		seen++;
	}
	cr_assert_eq(seen, 3);
	cJSON_Delete(root);
	vf_free(&v);
}

Test(export, perfetto_times_are_microseconds_with_nanosecond_digits)
{
	struct vf v;
	char *s;
	const struct tt_interval *iv;
	char want[96];

	vf_init(&v);
	/* The first kernel, moved to 1234567 ns after the window start
	 * and lasting 1001 ns. */
	for (iv = v.c.ivs; iv->kind != TT_IV_KERNEL; iv++)
		;
	v.g->ivs[iv - v.c.ivs].start_ns = v.c.start_ns + 1234567;
	v.g->ivs[iv - v.c.ivs].end_ns = v.c.start_ns + 1234567 + 1001;
	s = vf_capture(do_perfetto, &v);
	snprintf(want, sizeof(want), "\"ts\":1234.567,\"dur\":1.001");
	cr_assert_not_null(strstr(s, want), "expected %s in the export",
			   want);
	free(s);
	vf_free(&v);
}

Test(export, perfetto_busy_fraction_is_between_zero_and_one)
{
	struct vf v;
	cJSON *root, *ev, *e;
	double sum = 0;
	int n = 0;

	vf_init(&v);
	ev = perfetto_events(&v, &root);
	cJSON_ArrayForEach(e, ev) {
		double b;

		if (strcmp(str_of(e, "name"), "busy fraction") ||
		    cJSON_GetObjectItem(e, "pid")->valueint != 2)
			continue;
		b = cJSON_GetObjectItem(cJSON_GetObjectItem(e, "args"),
					"busy")->valuedouble;
		cr_assert(b >= 0 && b <= 1, "busy fraction %g", b);
		sum += b;
		n++;
	}
	cr_assert_gt(n, 0);
	/* The mean of equal buckets is the device's busy share. */
	cr_assert_float_eq(sum / n, (double)v.rep.devs[1].busy_ns /
			   v.rep.window_ns, 0.01);
	cJSON_Delete(root);
	vf_free(&v);
}

static const cJSON *attr(const cJSON *span, const char *key)
{
	const cJSON *a;

	cJSON_ArrayForEach(a, cJSON_GetObjectItem(span, "attributes"))
		if (!strcmp(str_of(a, "key"), key))
			return cJSON_GetObjectItem(a, "value");
	return NULL;
}

static cJSON *otlp_spans(struct vf *v, cJSON **root)
{
	char *s = vf_capture(do_otlp, v);
	cJSON *rs;

	*root = cJSON_Parse(s);
	free(s);
	cr_assert_not_null(*root, "the OTLP export is not valid JSON");
	rs = cJSON_GetArrayItem(cJSON_GetObjectItem(*root, "resourceSpans"),
				0);
	rs = cJSON_GetArrayItem(cJSON_GetObjectItem(rs, "scopeSpans"), 0);
	return cJSON_GetObjectItem(rs, "spans");
}

Test(export, otlp_span_per_request_with_genai_attributes)
{
	struct vf v;
	cJSON *root, *spans;
	char want[32];

	vf_init(&v);
	spans = otlp_spans(&v, &root);
	cr_assert_eq(cJSON_GetArraySize(spans), 3);
	for (int i = 0; i < 3; i++) {
		const cJSON *sp = cJSON_GetArrayItem(spans, i);
		const struct report_request *q = &v.rep.reqs[i];

		cr_assert_eq(strlen(str_of(sp, "traceId")), 32);
		cr_assert_eq(strlen(str_of(sp, "spanId")), 16);
		cr_assert_str_eq(str_of(attr(sp, "gen_ai.operation.name"),
					"stringValue"), "text_completion");
		cr_assert_str_eq(str_of(attr(sp, "gen_ai.request.model"),
					"stringValue"), q->req.model);
		cr_assert_str_eq(str_of(attr(sp, "gen_ai.response.id"),
					"stringValue"), q->req.id);
		snprintf(want, sizeof(want), "%lld",
			 (long long)q->req.prompt_tokens);
		cr_assert_str_eq(str_of(attr(sp, "gen_ai.usage.input_tokens"),
					"intValue"), want);
		snprintf(want, sizeof(want), "%lld",
			 (long long)q->req.completion_tokens);
		cr_assert_str_eq(str_of(attr(sp, "gen_ai.usage.output_tokens"),
					"intValue"), want);
		cr_assert_not_null(attr(sp, "gen_ai.request.max_tokens"));
		cr_assert_float_eq(cJSON_GetObjectItem(attr(sp,
			"gen_ai.server.time_to_first_token"), "doubleValue")
			->valuedouble, q->req.ttft_ms / 1e3, 1e-9);
		cr_assert_str_eq(str_of(attr(sp, "tokentrace.tenant"),
					"stringValue"), q->req.tenant);
		snprintf(want, sizeof(want), "%llu",
			 (unsigned long long)q->gpu_ns);
		cr_assert_str_eq(str_of(attr(sp, "tokentrace.gpu_ns"),
					"intValue"), want);
		cr_assert_not_null(attr(sp, "tokentrace.cost_usd"));
	}
	cJSON_Delete(root);
	vf_free(&v);
}

Test(export, otlp_times_are_unix_nanoseconds_as_strings)
{
	struct vf v;
	cJSON *root, *spans;
	const cJSON *sp, *evt;
	char want[32];

	vf_init(&v);
	spans = otlp_spans(&v, &root);
	sp = cJSON_GetArrayItem(spans, 1);
	snprintf(want, sizeof(want), "%lld", (long long)(OFFSET_NS +
		 (long long)v.rep.reqs[1].req.arrival_ns));
	cr_assert_str_eq(str_of(sp, "startTimeUnixNano"), want);
	snprintf(want, sizeof(want), "%lld", (long long)(OFFSET_NS +
		 (long long)v.rep.reqs[1].req.end_ns));
	cr_assert_str_eq(str_of(sp, "endTimeUnixNano"), want);
	evt = cJSON_GetArrayItem(cJSON_GetObjectItem(sp, "events"), 0);
	snprintf(want, sizeof(want), "%lld", (long long)(OFFSET_NS +
		 (long long)v.rep.reqs[1].req.first_token_ns));
	cr_assert_str_eq(str_of(evt, "timeUnixNano"), want);
	cJSON_Delete(root);
	vf_free(&v);
}

Test(export, otlp_ids_are_deterministic_and_distinct)
{
	struct vf v;
	char *a, *b;
	cJSON *root, *spans;

	vf_init(&v);
	a = vf_capture(do_otlp, &v);
	b = vf_capture(do_otlp, &v);
	cr_assert_str_eq(a, b, "two exports of one trace differ");
	spans = otlp_spans(&v, &root);
	for (int i = 0; i < 3; i++)
		for (int j = i + 1; j < 3; j++)
			cr_assert_str_neq(
				str_of(cJSON_GetArrayItem(spans, i), "traceId"),
				str_of(cJSON_GetArrayItem(spans, j), "traceId"));
	cJSON_Delete(root);
	free(a);
	free(b);
	vf_free(&v);
}

Test(export, jsonl_one_request_per_line_with_attribution)
{
	struct vf v;
	char *s, *line, *save = NULL;
	int n = 0;

	vf_init(&v);
	s = vf_capture(do_jsonl, &v);
	for (line = strtok_r(s, "\n", &save); line;
	     line = strtok_r(NULL, "\n", &save), n++) {
		cJSON *o = cJSON_Parse(line);
		const struct report_request *q = &v.rep.reqs[n];

		cr_assert_not_null(o, "line %d is not JSON: %s", n, line);
		cr_assert_str_eq(str_of(o, "id"), q->req.id);
		cr_assert_str_eq(str_of(o, "tenant"), q->req.tenant);
		cr_assert_eq(cJSON_GetObjectItem(o, "gpu_ns")->valuedouble,
			     (double)q->gpu_ns);
		cr_assert_eq(cJSON_GetObjectItem(o, "prefill_gpu_ns")
			     ->valuedouble, (double)q->prefill_ns);
		cr_assert_not_null(cJSON_GetObjectItem(o, "cost_loaded_usd"));
		cr_assert_not_null(cJSON_GetObjectItem(o, "ttft_ms"));
		cJSON_Delete(o);
	}
	cr_assert_eq(n, 3);
	free(s);
	vf_free(&v);
}

Test(export, busy_buckets_use_the_union_of_overlapping_intervals)
{
	struct tt_interval iv[] = {
		{ .start_ns = 0, .end_ns = 50, .device = 3 },
		{ .start_ns = 10, .end_ns = 40, .device = 3, .stream = 2 },
		{ .start_ns = 100, .end_ns = 125, .device = 3 },
		{ .start_ns = 0, .end_ns = 200, .device = 4 },
	};
	double f[4];

	cr_assert_eq(export_busy_buckets(iv, 4, 3, 0, 200, f, 4), 0);
	cr_assert_float_eq(f[0], 1.0, 1e-9);
	cr_assert_float_eq(f[1], 0.0, 1e-9);
	cr_assert_float_eq(f[2], 0.5, 1e-9);
	cr_assert_float_eq(f[3], 0.0, 1e-9);
}

Test(export, json_strings_escape_controls_and_replace_bad_utf8)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *m = open_memstream(&buf, &len);
	cJSON *o;

	export_json_str(m, "a\"b\\c\n\x01 \xc3\xa9 \xff");
	fclose(m);
	o = cJSON_Parse(buf);
	cr_assert_not_null(o, "not a JSON string: %s", buf);
	cr_assert_str_eq(o->valuestring, "a\"b\\c\n\x01 \xc3\xa9 \xef\xbf\xbd");
	cJSON_Delete(o);
	free(buf);
}
