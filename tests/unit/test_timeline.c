/*
 * test_timeline.c - the device timeline (user/timeline.c) with hand-made
 * intervals: overlaps, nesting, touching, out of order, window clipping,
 * zero length, settling.
 */
#include <criterion/criterion.h>
#include <stdlib.h>

#include "../../user/timeline.h"

static void add(struct timeline *tl, uint32_t dev, uint64_t s, uint64_t e)
{
	struct tt_interval iv = { .start_ns = s, .end_ns = e, .device = dev,
				  .kind = dev ? TT_IV_KERNEL : TT_IV_CPU };

	cr_assert_eq(timeline_add(tl, &iv), 0);
}

static struct timeline_dev_stats stats(struct timeline *tl, size_t i)
{
	struct timeline_dev_stats st;

	cr_assert_eq(timeline_stats(tl, i, &st), 0);
	return st;
}

Test(timeline, overlapping_intervals_counted_once)
{
	struct timeline *tl = timeline_new(0, 1000);

	add(tl, 1, 100, 300);
	add(tl, 1, 200, 400);
	struct timeline_dev_stats st = stats(tl, 0);
	cr_expect_eq(st.busy_ns, 300);
	cr_expect_eq(st.sum_ns, 400);
	cr_expect_eq(st.idle_ns, 700);
	timeline_free(tl);
}

Test(timeline, nested_interval_adds_nothing)
{
	struct timeline *tl = timeline_new(0, 1000);

	add(tl, 1, 100, 500);
	add(tl, 1, 200, 300);
	cr_expect_eq(stats(tl, 0).busy_ns, 400);
	cr_expect_eq(stats(tl, 0).sum_ns, 500);
	timeline_free(tl);
}

Test(timeline, touching_intervals_merge_without_gap_or_double_count)
{
	struct timeline *tl = timeline_new(0, 1000);

	add(tl, 1, 100, 200);
	add(tl, 1, 300, 400);
	add(tl, 1, 200, 300);
	cr_expect_eq(stats(tl, 0).busy_ns, 300);
	timeline_free(tl);
}

Test(timeline, out_of_order_arrival_gives_same_union)
{
	static const uint64_t iv[][2] = {
		{ 900, 950 }, { 10, 20 }, { 500, 600 }, { 15, 30 },
		{ 550, 700 }, { 0, 5 }, { 940, 1000 }, { 25, 26 },
	};
	struct timeline *tl = timeline_new(0, 1000);

	for (size_t i = 0; i < sizeof(iv) / sizeof(iv[0]); i++)
		add(tl, 1, iv[i][0], iv[i][1]);
	/* union: [0,5) [10,30) [500,700) [900,1000) */
	cr_expect_eq(stats(tl, 0).busy_ns, 5 + 20 + 200 + 100);
	cr_expect_eq(stats(tl, 0).busy_ns + stats(tl, 0).idle_ns, 1000);
	timeline_free(tl);
}

Test(timeline, one_interval_spanning_many_merges_them_all)
{
	struct timeline *tl = timeline_new(0, 1000);

	for (uint64_t s = 100; s < 600; s += 100)
		add(tl, 1, s, s + 10);
	add(tl, 1, 50, 650);
	cr_expect_eq(stats(tl, 0).busy_ns, 600);
	timeline_free(tl);
}

Test(timeline, window_clips_both_ends)
{
	struct timeline *tl = timeline_new(100, 200);

	add(tl, 1, 50, 120);	/* 20 inside */
	add(tl, 1, 180, 250);	/* 20 inside */
	add(tl, 1, 10, 90);	/* outside */
	add(tl, 1, 210, 300);	/* outside */
	struct timeline_dev_stats st = stats(tl, 0);
	cr_expect_eq(st.busy_ns, 40);
	cr_expect_eq(st.sum_ns, 40);
	cr_expect_eq(st.idle_ns, 60);
	cr_expect_eq(timeline_window_ns(tl), 100);
	timeline_free(tl);
}

Test(timeline, zero_length_and_reversed_intervals_count_nothing)
{
	struct timeline *tl = timeline_new(0, 1000);

	add(tl, 1, 100, 100);
	add(tl, 1, 300, 200);
	struct timeline_dev_stats st = stats(tl, 0);
	cr_expect_eq(st.busy_ns, 0);
	cr_expect_eq(st.sum_ns, 0);
	cr_expect_eq(st.idle_ns, 1000);
	cr_expect_eq(st.intervals, 2);
	timeline_free(tl);
}

Test(timeline, parallel_cpu_threads_sum_exceeds_union)
{
	struct timeline *tl = timeline_new(0, 1000);
	struct tt_device cpu = { .id = 0, .kind = TT_DEV_CPU, .name = "cpu" };

	cr_assert_eq(timeline_add_device(tl, &cpu), 0);
	add(tl, 0, 0, 600);	/* thread A on cpu 0 */
	add(tl, 0, 100, 700);	/* thread B on cpu 1 */
	struct timeline_dev_stats st = stats(tl, 0);
	cr_expect_eq(st.busy_ns, 700);
	cr_expect_eq(st.sum_ns, 1200);
	cr_expect_eq(st.kind, TT_DEV_CPU);
	cr_expect_str_eq(st.name, "cpu");
	timeline_free(tl);
}

Test(timeline, devices_are_kept_apart)
{
	struct timeline *tl = timeline_new(0, 1000);

	add(tl, 1, 0, 100);
	add(tl, 2, 50, 300);
	cr_assert_eq(timeline_count(tl), 2);
	cr_expect_eq(stats(tl, 0).busy_ns, 100);
	cr_expect_eq(stats(tl, 1).busy_ns, 250);
	timeline_free(tl);
}

Test(timeline, settle_keeps_totals_exact)
{
	struct timeline *tl = timeline_new(0, 1000);

	add(tl, 1, 100, 200);
	add(tl, 1, 250, 400);
	timeline_settle(tl, 300);	/* splits [250,400) */
	add(tl, 1, 350, 500);		/* overlaps the kept part */
	add(tl, 1, 600, 700);
	struct timeline_dev_stats st = stats(tl, 0);
	cr_expect_eq(st.busy_ns, 100 + 250 + 100);
	cr_expect_eq(st.late, 0);
	timeline_free(tl);
}

Test(timeline, late_interval_is_counted_and_reported)
{
	struct timeline *tl = timeline_new(0, 1000);

	add(tl, 1, 100, 200);
	timeline_settle(tl, 500);
	add(tl, 1, 450, 550);	/* 50 late, 50 normal */
	struct timeline_dev_stats st = stats(tl, 0);
	cr_expect_eq(st.late, 1);
	cr_expect_eq(st.late_ns, 50);
	cr_expect_eq(st.busy_ns, 200);
	timeline_free(tl);
}

Test(timeline, busy_never_exceeds_window)
{
	struct timeline *tl = timeline_new(0, 100);

	add(tl, 1, 0, 100);
	timeline_settle(tl, 100);
	add(tl, 1, 0, 100);	/* all late: may double count, capped */
	struct timeline_dev_stats st = stats(tl, 0);
	cr_expect_eq(st.busy_ns, 100);
	cr_expect_eq(st.idle_ns, 0);
	timeline_free(tl);
}

Test(timeline, many_random_intervals_match_a_bitmap)
{
	enum { W = 4096 };
	static unsigned char bit[W];
	struct timeline *tl = timeline_new(0, W);
	uint64_t want = 0;

	srand(7);
	for (int i = 0; i < 2000; i++) {
		uint64_t s = rand() % W, len = rand() % 40;
		uint64_t e = s + len > W ? W : s + len;

		add(tl, 1, s, e);
		for (uint64_t t = s; t < e; t++)
			bit[t] = 1;
		if (i == 1000)
			timeline_settle(tl, 0);	/* no-op at the start */
	}
	for (int t = 0; t < W; t++)
		want += bit[t];
	cr_expect_eq(stats(tl, 0).busy_ns, want);
	timeline_free(tl);
}
