/*
 * sample.c on traces written here: an engine of one GPU that runs a full
 * batch of 4 every 50 ms (each step two kernels and the sampled ids'
 * copy), requests of 4 to 16 tokens, for 10 minutes (sampled) or 100 s
 * (loaded whole). What a sample keeps must be what its regions hold, its
 * mix every request that arrived in a window, and the steps it calls
 * clean must see their whole batch.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/stat.h>

#include "../../user/collect.h"
#include "../../user/report.h"
#include "../../user/sample.h"
#include "../../user/tracefile.h"
#include "slot_engine.h"

#define MS		1000000ull
#define T0		(5000ull * 1000 * MS)
#define STEP		(50 * MS)
#define BATCH		4

static long total;	/* requests written */

static void put_request(void *ctx, const struct slot *s)
{
	struct tracefile_writer *w = ctx;
	struct tt_request q = slot_request(s, 7);

	snprintf(q.id, sizeof(q.id), "r%ld", s->req);
	snprintf(q.model, sizeof(q.model), "m");
	snprintf(q.tenant, sizeof(q.tenant), "t");
	cr_assert_eq(tracefile_put_request(w, &q), 0);
	total++;
}

static void put_step(struct tracefile_writer *w, uint64_t t)
{
	struct tt_interval iv = { .device = 1, .pid = 7, .tid = 7,
				  .stream = 1, .kind = TT_IV_KERNEL,
				  .name_id = 1 };

	for (int k = 0; k < 2; k++) {
		iv.start_ns = t + k * 20 * MS;
		iv.end_ns = iv.start_ns + 20 * MS;
		cr_assert_eq(tracefile_put_interval(w, &iv), 0);
	}
	iv.start_ns = t + 40 * MS;
	iv.end_ns = iv.start_ns + 20000;
	iv.kind = TT_IV_MEMCPY;
	iv.copy_kind = TT_COPY_DTOH;
	iv.bytes = 8;
	iv.name_id = 0;
	cr_assert_eq(tracefile_put_interval(w, &iv), 0);
}

/* A trace of secs seconds at path. */
static void write_trace(const char *path, uint64_t secs)
{
	struct tt_hostinfo host = { .cpus = 1 };
	struct tt_device gpu = { .id = 1, .kind = TT_DEV_GPU, .pid = 7 };
	struct tracefile_writer *w;
	struct slot s[BATCH];
	long next = 0;

	total = 0;
	snprintf(gpu.name, sizeof(gpu.name), "test GPU");
	/* stored uncompressed: megabytes, many probes long */
	cr_assert_eq(tracefile_create(path, &host, 0, true, &w), 0);
	cr_assert_eq(tracefile_put_compute(w, "cupti", BATCH), 0);
	cr_assert_eq(tracefile_put_device(w, &gpu), 0);
	cr_assert_eq(tracefile_put_name(w, 7, 1, "gemm"), 0);
	slots_init(s, BATCH);
	for (uint64_t t = T0; t < T0 + secs * 1000 * MS; t += STEP) {
		put_step(w, t);
		slots_step(s, BATCH, t, STEP, &next, put_request, w);
	}
	cr_assert_eq(tracefile_close(w), 0);
}

static char path[64];

static void setup(void)
{
	snprintf(path, sizeof(path), "/tmp/tt-sample-%d.tt", getpid());
}

static void teardown(void)
{
	unlink(path);
}

TestSuite(sample, .init = setup, .fini = teardown);

static bool in_region(const struct sample_info *in, uint64_t t)
{
	for (uint32_t k = 0; k < in->windows; k++)
		if (t + in->lead_ns >= in->start_ns[k] &&
		    t < in->start_ns[k] + in->window_ns)
			return true;
	return false;
}

static bool in_window(const struct sample_info *in, uint64_t t)
{
	for (uint32_t k = 0; k < in->windows; k++)
		if (t >= in->start_ns[k] && t < in->start_ns[k] + in->window_ns)
			return true;
	return false;
}

Test(sample, a_long_trace_keeps_its_regions_and_the_mix_of_its_windows)
{
	struct collect c, mix;
	struct sample_opts o;
	struct sample_info in;
	long want = 0;

	write_trace(path, 600);
	struct stat sb;

	/* longer than its head and tail (1 MB each) and many probes long
	 * (64 KB), so that the span comes from its edges and the regions
	 * are sought */
	cr_assert_eq(stat(path, &sb), 0);
	cr_assert_gt(sb.st_size, 2 << 20, "%ld bytes", (long)sb.st_size);
	sample_opts_default(&o);
	collect_init(&c);
	collect_init(&mix);
	cr_assert_eq(sample_load(&c, &mix, path, &o, stderr, NULL, &in), 0);
	cr_assert(in.sampled);
	cr_expect_eq(in.windows, 8);
	/* the longest request: 16 tokens, 0.8 s; a lead of twice that, at
	 * least 1 s; windows of 4 leads, at least 10 s */
	cr_expect_eq(in.lead_ns, 2 * (16 * STEP - 4 * MS + 100000 + 100000),
		     "lead %lu", (unsigned long)in.lead_ns);
	cr_expect_eq(in.window_ns, 10000 * MS);
	/* evenly spread over the 600 s */
	for (uint32_t k = 1; k < in.windows; k++) {
		double gap = (double)(in.start_ns[k] - in.start_ns[k - 1]);

		cr_expect(gap > 73e9 && gap < 76e9, "gap %.0f", gap);
	}
	for (size_t i = 0; i < c.nivs; i++)
		cr_assert(in_region(&in, c.ivs[i].start_ns));
	for (size_t i = 0; i < c.nreqs; i++) {
		cr_assert(in_region(&in, c.reqs[i].arrival_ns));
		cr_assert(in_region(&in, c.reqs[i].end_ns));
	}
	/* the mix: every request arriving in a window, without its tokens */
	for (size_t i = 0; i < mix.nreqs; i++) {
		cr_assert(in_window(&in, mix.reqs[i].arrival_ns));
		cr_assert_eq(mix.reqs[i].token_ns_len, 0);
	}
	struct collect all;

	collect_init(&all);
	cr_assert_eq(collect_load(&all, path, stderr, NULL), 0);
	for (size_t i = 0; i < all.nreqs; i++)
		want += in_window(&in, all.reqs[i].arrival_ns);
	cr_expect_eq((long)mix.nreqs, want);
	cr_expect_eq((long)in.own_requests, want);
	/* only the regions' bytes were read, and none of theirs was missed */
	size_t ivs = 0;

	for (size_t i = 0; i < all.nivs; i++)
		ivs += in_region(&in, all.ivs[i].start_ns);
	cr_expect_eq(c.nivs, ivs);
	cr_expect_lt(c.nivs, all.nivs / 5, "a sample, not the trace");
	collect_free(&all);
	collect_free(&c);
	collect_free(&mix);
}

Test(sample, its_clean_steps_see_the_whole_batch)
{
	struct collect c, mix;
	struct collect_prices p = { .gpu_default = -1, .cpu_default = -1 };
	struct report_input ri;
	struct report r = { 0 };
	struct sample_opts o;
	struct sample_info in;
	uint32_t clean = 0, edge_short = 0;

	write_trace(path, 600);
	sample_opts_default(&o);
	collect_init(&c);
	collect_init(&mix);
	cr_assert_eq(sample_load(&c, &mix, path, &o, stderr, NULL, &in), 0);
	cr_assert_eq(collect_report_input(&c, &p, &ri), 0);
	cr_assert_eq(report_build(&ri, &r), 0);
	cr_assert_geq(r.ndevs, 1);
	const struct steps_result *s = &r.devs[0].steps;

	for (uint32_t k = 0; k < s->nsteps; k++) {
		const struct steps_step *st = &s->steps[k];

		if (sample_clean(&in, st->start_ns, st->end_ns)) {
			clean++;
			cr_expect_eq(st->n, BATCH, "a clean step of %u", st->n);
		} else {
			edge_short += st->n < BATCH;
		}
	}
	/* 8 windows of 10 s less 2 x 0.8 s at 20 steps/s, and more */
	cr_expect_gt(clean, 8 * 160);
	cr_expect_gt(edge_short, 0, "the edges do miss requests");
	report_free(&r);
	collect_free(&c);
	collect_free(&mix);
}

Test(sample, a_short_trace_is_loaded_whole)
{
	struct collect c, mix;
	struct sample_opts o;
	struct sample_info in;

	write_trace(path, 100);
	sample_opts_default(&o);
	collect_init(&c);
	collect_init(&mix);
	cr_assert_eq(sample_load(&c, &mix, path, &o, stderr, NULL, &in), 0);
	cr_expect(!in.sampled);
	cr_expect_eq((long)c.nreqs, total);
	cr_expect_eq(mix.nreqs, 0);
	cr_expect_eq(c.nivs, 100 * 20 * 3);
	cr_expect(sample_clean(&in, T0, T0 + STEP));
	collect_free(&c);
	collect_free(&mix);
}

Test(sample, a_missing_file_says_so)
{
	struct collect c, mix;
	struct sample_opts o;
	struct sample_info in;

	sample_opts_default(&o);
	collect_init(&c);
	collect_init(&mix);
	cr_expect_lt(sample_load(&c, &mix, "/nonexistent/x.tt", &o, NULL,
				 NULL, &in), 0);
	collect_free(&c);
	collect_free(&mix);
}
