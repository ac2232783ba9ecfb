/*
 * test_top.c - the pure parts of `tokentrace top`: a frame built from a
 * report and a latency summary (rates between frames, shares, cost per
 * token), and a frame rendered into a buffer.
 *
 * In:  the hand-made GPU interval of views_fixture.h and its report;
 *      frames made by hand; a small trace file read with a progress hook
 *      (suite "trace_progress": what `report` shows on a terminal).
 * Out: Criterion suite "top".
 * Assumes: nothing of a terminal or a kernel.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "../../user/summary.h"
#include "../../user/top.h"
#include "../../user/tracefile.h"
#include "views_fixture.h"

static const struct report_group *tp_group(const struct report *r,
					   const char *name)
{
	for (size_t i = 0; i < r->ntenants; i++)
		if (!strcmp(r->tenants[i].name, name))
			return &r->tenants[i];
	return NULL;
}

Test(top, first_frame_rates_are_totals_over_the_interval)
{
	struct top_prev prev = { 0 };
	struct top_frame f = { 0 };
	struct vf v;

	vf_init(&v);
	cr_assert_gt(v.rep.ntenants, 0);
	cr_assert_eq(top_frame_build(&v.rep, NULL, &prev, 2.0, &f), 0);
	cr_assert_eq(f.ntenants, v.rep.ntenants);
	cr_assert_eq(f.nmodels, v.rep.nmodels);
	for (size_t i = 0; i < f.ntenants; i++) {
		const struct report_group *g = tp_group(&v.rep,
							f.tenants[i].name);

		cr_assert(g, "row %s is no tenant of the report",
			  f.tenants[i].name);
		cr_expect_float_eq(f.tenants[i].req_s, g->requests / 2.0,
				   1e-9);
		cr_expect_float_eq(f.tenants[i].prompt_tok_s,
				   g->prompt_tokens / 2.0, 1e-9);
		cr_expect_float_eq(f.tenants[i].completion_tok_s,
				   g->completion_tokens / 2.0, 1e-9);
	}
	top_frame_free(&f);
	top_prev_free(&prev);
	vf_free(&v);
}

Test(top, a_frame_with_no_new_request_shows_zero_rates)
{
	struct top_prev prev = { 0 };
	struct top_frame f = { 0 };
	struct vf v;

	vf_init(&v);
	cr_assert_eq(top_frame_build(&v.rep, NULL, &prev, 1.0, &f), 0);
	top_frame_free(&f);
	cr_assert_eq(top_frame_build(&v.rep, NULL, &prev, 1.0, &f), 0);
	for (size_t i = 0; i < f.ntenants; i++) {
		cr_expect_float_eq(f.tenants[i].req_s, 0.0, 1e-12);
		cr_expect_float_eq(f.tenants[i].completion_tok_s, 0.0, 1e-12);
	}
	for (size_t i = 0; i < f.nmodels; i++)
		cr_expect_float_eq(f.models[i].req_s, 0.0, 1e-12);
	top_frame_free(&f);
	top_prev_free(&prev);
	vf_free(&v);
}

static struct report_group tp_g(const char *name, uint64_t reqs,
				uint64_t prompt, uint64_t completion)
{
	struct report_group g = { .requests = reqs, .prompt_tokens = prompt,
				  .completion_tokens = completion };

	snprintf(g.name, sizeof(g.name), "%s", name);
	return g;
}

/* A sliding window: between two frames two requests of tenant a left the
 * window and one finished. Taken off the previous totals, the rate is
 * that one request; without, the totals fell and the rate would be 0. */
Test(top, requests_that_leave_the_window_do_not_hide_new_ones)
{
	struct report_group t1[] = { tp_g("a", 3, 300, 30) };
	struct report_group m1[] = { tp_g("m", 3, 300, 30) };
	struct report_group t2[] = { tp_g("a", 2, 250, 25) };
	struct report_group m2[] = { tp_g("m", 2, 250, 25) };
	struct report r = { .window_ns = 2000000000ull, .compute = "cpu",
			    .tenants = t1, .ntenants = 1, .models = m1,
			    .nmodels = 1 };
	struct tt_request gone = { .prompt_tokens = 100,
				   .completion_tokens = 10 };
	struct top_prev prev = { 0 };
	struct top_frame f = { 0 };

	snprintf(gone.tenant, sizeof(gone.tenant), "a");
	snprintf(gone.model, sizeof(gone.model), "m");
	cr_assert_eq(top_frame_build(&r, NULL, &prev, 1.0, &f), 0);
	cr_expect_float_eq(f.tenants[0].req_s, 3.0, 1e-12);
	top_frame_free(&f);
	top_prev_forget(&prev, &gone);
	top_prev_forget(&prev, &gone);
	r.tenants = t2;
	r.models = m2;
	cr_assert_eq(top_frame_build(&r, NULL, &prev, 0.5, &f), 0);
	cr_expect_float_eq(f.tenants[0].req_s, 2.0, 1e-12, "req/s %g",
			   f.tenants[0].req_s);
	cr_expect_float_eq(f.tenants[0].prompt_tok_s, 300.0, 1e-9);
	cr_expect_float_eq(f.tenants[0].completion_tok_s, 30.0, 1e-9);
	cr_expect_float_eq(f.models[0].req_s, 2.0, 1e-12);
	top_frame_free(&f);
	top_prev_free(&prev);
}

Test(top, share_and_cost_per_token_follow_the_attribution)
{
	struct top_prev prev = { 0 };
	struct top_frame f = { 0 };
	double shares = 0;
	struct vf v;

	vf_init(&v);
	cr_assert_gt(v.rep.busy_ns, 0);
	cr_assert_eq(top_frame_build(&v.rep, NULL, &prev, 1.0, &f), 0);
	cr_expect_str_eq(f.share_label, "GPU");
	for (size_t i = 0; i < f.ntenants; i++) {
		const struct report_group *g = tp_group(&v.rep,
							f.tenants[i].name);
		double tokens = g->prompt_tokens + g->completion_tokens;

		cr_expect_float_eq(f.tenants[i].share,
				   (double)g->gpu_ns / v.rep.busy_ns, 1e-12);
		cr_expect_float_eq(f.tenants[i].usd_per_1m,
				   g->cost_usd / tokens * 1e6, 1e-12);
		shares += f.tenants[i].share;
	}
	cr_expect_float_eq(shares, (double)(v.rep.busy_ns -
			   v.rep.unattributed_ns) / v.rep.busy_ns, 1e-9,
			   "tenant shares do not add up to the attributed "
			   "part of busy time");
	top_frame_free(&f);
	top_prev_free(&prev);
	vf_free(&v);
}

Test(top, latencies_come_from_the_summary)
{
	struct top_prev prev = { 0 };
	struct top_frame f = { 0 };
	struct summary *s = summary_new();
	struct summary_row sr;
	struct vf v;

	vf_init(&v);
	cr_assert_not_null(s);
	for (size_t i = 0; i < v.c.nreqs; i++)
		summary_add(s, &v.c.reqs[i]);
	cr_assert_eq(top_frame_build(&v.rep, s, &prev, 1.0, &f), 0);
	cr_assert_eq(summary_get(s, "model", f.models[0].name, &sr), 0);
	cr_expect_float_eq(f.models[0].ttft_p50_ms, sr.ttft_p50_ms, 1e-12);
	cr_expect_float_eq(f.models[0].ttft_p99_ms, sr.ttft_p99_ms, 1e-12);
	cr_expect_float_eq(f.models[0].itl_p50_ms, sr.itl_p50_ms, 1e-12);
	cr_expect_gt(f.models[0].ttft_p50_ms, 0);
	top_frame_free(&f);
	top_prev_free(&prev);
	summary_free(s);
	vf_free(&v);
}

/* ---- rendering ----------------------------------------------------------- */

static struct top_row tp_tenants[2] = {
	{ .name = "alpha", .req_s = 12.5, .prompt_tok_s = 800,
	  .completion_tok_s = 100, .ttft_p50_ms = 9.6, .ttft_p99_ms = 21.2,
	  .itl_p50_ms = 0.24, .share = 0.625, .usd_per_1m = 0.0023 },
	{ .name = "beta", .req_s = 0, .prompt_tok_s = 0,
	  .completion_tok_s = 0, .ttft_p50_ms = -1, .ttft_p99_ms = -1,
	  .itl_p50_ms = -1, .share = -1, .usd_per_1m = -1 },
};

static void tp_frame(struct top_frame *f)
{
	memset(f, 0, sizeof(*f));
	snprintf(f->target, sizeof(f->target), "port 8000");
	snprintf(f->share_label, sizeof(f->share_label), "CPU");
	f->window_s = 12.0;
	f->interval_s = 1.0;
	f->ndevs = 1;
	snprintf(f->devs[0].name, sizeof(f->devs[0].name), "cpu");
	f->devs[0].busy_pct = 57.4;
	f->events_lost = 3;
	f->bytes_lost = 4096;
	f->tenants = tp_tenants;
	f->ntenants = 2;
	f->models = tp_tenants;
	f->nmodels = 1;
}

/* The line of text that starts with prefix (a copy in out). */
static bool tp_line(const char *text, const char *prefix, char *out,
		    size_t cap)
{
	size_t n = strlen(prefix);

	for (const char *p = text; p; p = strchr(p, '\n')) {
		if (*p == '\n')
			p++;
		if (!strncmp(p, prefix, n)) {
			const char *e = strchr(p, '\n');
			size_t len = e ? (size_t)(e - p) : strlen(p);

			snprintf(out, cap, "%.*s", (int)(len < cap ? len :
				 cap - 1), p);
			return true;
		}
	}
	return false;
}

Test(top, plain_frame_has_every_row_and_column_value)
{
	char buf[4096], line[256];
	struct top_frame f;
	size_t n;

	tp_frame(&f);
	n = top_render(&f, false, buf, sizeof(buf));
	cr_assert_lt(n, sizeof(buf));
	cr_expect_eq(n, strlen(buf));
	cr_expect(!strchr(buf, '\033'), "escape codes in a plain frame");
	cr_expect(strstr(buf, "tokentrace top - port 8000 - window 12.0 s"));
	cr_expect(strstr(buf, "cpu busy 57.4%"));
	cr_expect(strstr(buf, "lost: 3 events, 4096 bytes"));
	cr_expect(strstr(buf, "CPU %"), "no share column for the CPU");
	cr_assert(tp_line(buf, "alpha", line, sizeof(line)));
	cr_expect(strstr(line, " 12.50 "), "req/s: %s", line);
	cr_expect(strstr(line, " 800.0 "), "prompt tok/s: %s", line);
	cr_expect(strstr(line, " 21.2 "), "ttft p99: %s", line);
	cr_expect(strstr(line, " 62.5%"), "share: %s", line);
	cr_expect(strstr(line, " 0.0023"), "$/1M: %s", line);
	cr_assert(tp_line(buf, "beta", line, sizeof(line)));
	cr_expect(strstr(line, " 0.00 "), "zero req/s: %s", line);
	cr_expect(strstr(line, " - "), "no dash for missing values: %s",
		  line);
	cr_expect(!strstr(line, "-1"), "a missing value printed as -1: %s",
		  line);
}

Test(top, terminal_frame_clears_and_homes_first)
{
	char buf[4096];
	struct top_frame f;

	tp_frame(&f);
	top_render(&f, true, buf, sizeof(buf));
	cr_expect(!strncmp(buf, "\033[H\033[2J", 7),
		  "a terminal frame does not start with home and clear");
	cr_expect(strstr(buf, "alpha"));
}

Test(top, small_buffer_gets_a_cut_string_and_the_length_needed)
{
	char big[4096], small[32];
	struct top_frame f;
	size_t need, got;

	tp_frame(&f);
	need = top_render(&f, false, big, sizeof(big));
	got = top_render(&f, false, small, sizeof(small));
	cr_expect_eq(got, need);
	cr_expect_eq(strlen(small), sizeof(small) - 1);
	cr_expect(!strncmp(small, big, sizeof(small) - 1));
	cr_expect_eq(top_render(&f, false, NULL, 0), need);
}

Test(top, empty_frame_says_no_request_yet)
{
	char buf[2048];
	struct top_frame f;

	tp_frame(&f);
	f.ntenants = f.nmodels = 0;
	f.ndevs = 0;
	top_render(&f, false, buf, sizeof(buf));
	cr_expect(strstr(buf, "no finished request yet"));
	cr_expect(strstr(buf, "none traced"));
}

/* ---- progress of reading a trace (what `report` shows on a terminal) ---- */

struct tp_progress {
	int calls;
	uint64_t last_done, total;
	bool backwards;
};

static void tp_on_progress(void *ctx, const char *name, uint64_t done,
			   uint64_t total, uint64_t records)
{
	struct tp_progress *p = ctx;

	(void)name;
	(void)records;
	if (done < p->last_done)
		p->backwards = true;
	p->calls++;
	p->last_done = done;
	p->total = total;
}

Test(trace_progress, reading_reports_each_block_and_ends_at_the_size)
{
	char path[] = "/tmp/tt-progress-XXXXXX";
	struct tracefile_handlers h = { 0 };
	struct tracefile_header hdr;
	struct tracefile_stats st;
	struct tracefile_writer *w;
	struct tp_progress p = { 0 };
	struct tt_hostinfo host = { 0 };
	struct stat sb;
	int fd = mkstemp(path);

	cr_assert_geq(fd, 0);
	close(fd);
	cr_assert_eq(tracefile_create(path, &host, 0, true, &w), 0);
	for (int i = 0; i < 3; i++) {
		cr_assert_eq(tracefile_put_window(w, 1000, 2000 + i, false), 0);
		cr_assert_eq(tracefile_flush(w), 0);
	}
	cr_assert_eq(tracefile_close(w), 0);
	cr_assert_eq(stat(path, &sb), 0);
	tracefile_set_progress(tp_on_progress, &p);
	cr_assert_eq(tracefile_read(path, &h, &hdr, &st), 0);
	tracefile_set_progress(NULL, NULL);
	unlink(path);
	cr_expect_eq(st.blocks_ok, 3);
	cr_expect_geq(p.calls, 4, "%d progress calls for 3 blocks", p.calls);
	cr_expect(!p.backwards, "progress went backwards");
	cr_expect_eq(p.total, (uint64_t)sb.st_size);
	cr_expect_eq(p.last_done, p.total, "the last call is not the end");
}
